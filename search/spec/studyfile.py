"""Study files: one TOML file per study in ``spaces/``, loaded into a validated :class:`StudySpec`.

A study file says what to search (``[space]``), on which data (``[data]``), for which objective
(``generalize`` or ``memorize``), how long (``trials``, ``timeout``, ``[training]``), how
(``[sampler]``, ``[pruner]``) and against what (``[[baselines]]``). Every value is checked at load;
an error names the file, the key and the problem.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from search import settings
from search.errors import OptionError, SpaceError, StudyFileError
from search.spec.space import (
    Choice,
    Fixed,
    FloatRange,
    IntRange,
    Kind,
    Param,
    optuna_params_for,
    param_from_config,
)

Objective = Literal["generalize", "memorize"]
Direction = Literal["minimize", "maximize"]
OBJECTIVES = ("generalize", "memorize")
SAMPLERS = ("tpe", "random")
PRUNERS = ("hyperband", "successive_halving", "median", "none")
OPTIMIZERS = ("adam", "rmsprop", "sgd", "adamw", "nadam", "adagrad")
ACTIVATIONS = (
    "relu",
    "tanh",
    "sigmoid",
    "elu",
    "selu",
    "gelu",
    "silu",
    "softplus",
    "linear",
)

# Hyperparameters of the Dense-stack model family: (value kind, check of one value).
HYPERPARAMETERS: dict[str, tuple[Kind, Callable[[Any], str | None]]] = {
    "layers": (
        "int",
        lambda v: None if v >= 0 else "layers must be >= 0 (0 = linear model)",
    ),
    "units": ("int", lambda v: None if v >= 1 else f"width must be >= 1, got {v}"),
    "activation": (
        "str",
        lambda v: None if v in ACTIVATIONS else f"unknown activation {v!r}",
    ),
    "l2": ("float", lambda v: None if v >= 0 else f"L2 strength must be >= 0, got {v}"),
    "dropout": (
        "float",
        lambda v: None if 0 <= v < 1 else f"dropout must be in [0, 1), got {v}",
    ),
    "batch_size": (
        "int",
        lambda v: None if v >= 1 else f"batch size must be >= 1, got {v}",
    ),
    "learning_rate": (
        "float",
        lambda v: None if v > 0 else f"learning rate must be > 0, got {v}",
    ),
    "optimizer": (
        "str",
        lambda v: None if v in OPTIMIZERS else f"unknown optimizer {v!r}",
    ),
}


def monitor_of(objective: str) -> str:
    """The loss an objective minimizes: the one rule, for study files and stored studies alike.

    Example:
        >>> monitor_of("generalize"), monitor_of("memorize")
        ('val_loss', 'train_loss')
    """
    return "train_loss" if objective == "memorize" else "val_loss"


REQUIRED_SPACE = ("layers", "units", "l2", "dropout", "batch_size", "learning_rate")
SPACES_DIR = settings.DEFAULT_SPACES_DIR


@dataclass(frozen=True)
class DataSpec:
    """``[data]``: the data source and its options (validated by the source)."""

    source: str
    options: dict[str, Any]


@dataclass(frozen=True)
class TrainingSpec:
    """``[training]``: the epoch cap and how an epoch is counted.

    ``steps_per_epoch`` makes an "epoch" a fixed number of optimizer steps (the data repeated),
    which is how tiny data sets train fast while pruning still sees one report per epoch.
    """

    epochs: int
    steps_per_epoch: int | None = None
    patience: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class SamplerSpec:
    name: str = "tpe"
    seed: int = 0
    n_startup_trials: int = 10


@dataclass(frozen=True)
class PrunerSpec:
    name: str = "hyperband"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Baseline:
    """A hand-made configuration, enqueued as one of the first trials and never pruned."""

    name: str
    params: dict[str, Any]


@dataclass(frozen=True)
class HypermodelSpec:
    """``[hypermodel]``: a KerasTuner hypermodel that replaces the built-in Dense-stack space.

    ``module`` is a ``.py`` file (relative to the study file; ``path`` is where it resolved) or an
    importable ``package.module``; ``build`` names a ``build_model(hp)`` function or a
    ``keras_tuner.HyperModel`` subclass in it. See :mod:`search.kerastuner.hypermodel`.
    """

    module: str
    build: str = "build_model"
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"module": self.module, "build": self.build}


@dataclass(frozen=True)
class StudySpec:
    """A validated study file (``space`` is empty when ``hypermodel`` defines the space)."""

    name: str
    path: Path
    description: str
    objective: Objective
    data: DataSpec
    space: dict[str, Param]
    training: TrainingSpec
    sampler: SamplerSpec
    pruner: PrunerSpec
    baselines: tuple[Baseline, ...]
    trials: int = 20
    timeout: float | None = None
    hypermodel: HypermodelSpec | None = None
    minimize_param_count: bool = False  # [multi_objective] param_count = true

    @property
    def direction(self) -> Direction:
        return "minimize"

    @property
    def monitor(self) -> str:
        """The loss a trial's value is made of: ``val_loss`` or ``train_loss`` (memorize)."""
        return monitor_of(self.objective)

    @property
    def multi_objective(self) -> bool:
        """Whether the study minimizes the parameter count as a second objective."""
        return self.minimize_param_count

    @property
    def directions(self) -> list[Direction]:
        """One ``"minimize"`` per objective: the loss, then (multi-objective) the size."""
        return ["minimize"] * len(self.metric_names)

    @property
    def metric_names(self) -> list[str]:
        """Names of the objectives, as the dashboard shows them."""
        loss = self.monitor
        return [loss, "param_count"] if self.minimize_param_count else [loss]

    def resolve_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Complete a (possibly partial) parameter set with the space's fixed values."""
        out = {k: p.value for k, p in self.space.items() if isinstance(p, Fixed)}
        out.update(params)
        return out

    def baseline_trial_params(self, baseline: Baseline) -> dict[str, Any]:
        """The Optuna parameters to enqueue so a trial reproduces ``baseline``."""
        out: dict[str, Any] = {}
        for key, param in self.space.items():
            out.update(optuna_params_for(param, key, baseline.params[key]))
        return out

    def to_dict(self) -> dict[str, Any]:
        """The study file as a plain dict (round-trips through :func:`spec_from_dict`)."""
        out: dict[str, Any] = {
            "description": self.description,
            "objective": self.objective,
            "trials": self.trials,
            "data": {"source": self.data.source, **self.data.options},
            "training": {k: v for k, v in vars(self.training).items() if v is not None},
            "space": {k: p.to_dict() for k, p in self.space.items()},
            "sampler": dict(vars(self.sampler)),
            "pruner": {"name": self.pruner.name, **self.pruner.options},
            "baselines": [{"name": b.name, **b.params} for b in self.baselines],
        }
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.hypermodel is not None:
            del out["space"], out["baselines"]
            out["hypermodel"] = self.hypermodel.to_dict()
        if self.minimize_param_count:
            out["multi_objective"] = {"param_count": True}
        return out


def spaces_dir() -> Path:
    """The folder of study files: ``CAPSEARCH_SPACES`` or the ``spaces/`` beside the package."""
    return settings.spaces_dir()


def known_studies(folder: Path | None = None) -> list[str]:
    """Names of the study files in ``folder`` (default: :func:`spaces_dir`)."""
    folder = folder or spaces_dir()
    return sorted(p.stem for p in folder.glob("*.toml"))


def load_study(name_or_path: str | Path, folder: Path | None = None) -> StudySpec:
    """Load and validate a study by name (``spaces/<name>.toml``) or by file path.

    Raises:
        StudyFileError: The study is unknown, unreadable or invalid.
    """
    path = Path(name_or_path)
    if path.suffix != ".toml":
        folder = folder or spaces_dir()
        path = folder / f"{name_or_path}.toml"
        if not path.is_file():
            known = ", ".join(known_studies(folder)) or "(none)"
            raise StudyFileError(str(name_or_path), "", f"unknown study; known studies: {known}.")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StudyFileError(str(path), "", f"cannot read the file: {exc.strerror}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise StudyFileError(str(path), "", f"not valid TOML: {exc}.") from None
    return spec_from_dict(raw, name=path.stem, path=path)


def spec_from_dict(raw: Mapping[str, Any], *, name: str, path: Path) -> StudySpec:
    """Validate a parsed study file. See :func:`load_study`."""
    return _Validator(str(path)).study(raw, name=name, path=path)


class _Validator:
    """Turns raw TOML into a StudySpec, raising StudyFileError(file, key, problem)."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> StudyFileError:
        return StudyFileError(self.source, key, problem)

    def table(self, raw: Mapping[str, Any], key: str, *, required: bool = True) -> dict[str, Any]:
        value = raw.get(key)
        if value is None and not required:
            return {}
        if not isinstance(value, Mapping):
            problem = "missing table" if value is None else f"expected a table, got {value!r}"
            raise self.fail(key, f"{problem}; add a [{key}] section.")
        return dict(value)

    def typed(self, raw: Mapping[str, Any], key: str, kind: type, default: Any, path: str) -> Any:
        value = raw.get(key, default)
        if value is None:
            return None
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            raise self.fail(path, f"expected {kind.__name__}, got {value!r}.")
        return value

    def positive(self, raw: Mapping[str, Any], key: str, default: Any, path: str) -> int | None:
        value = self.typed(raw, key, int, default, path)
        if value is not None and value < 1:
            raise self.fail(path, f"must be a positive integer, got {value}.")
        return value

    def unknown(self, raw: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
        extra = sorted(set(raw) - allowed)
        if extra:
            where = f"{prefix}.{extra[0]}" if prefix else extra[0]
            raise self.fail(where, f"unknown key; allowed: {', '.join(sorted(allowed))}.")

    def study(self, raw: Mapping[str, Any], *, name: str, path: Path) -> StudySpec:
        top = {
            "description",
            "objective",
            "trials",
            "timeout",
            "data",
            "model",
            "training",
            "multi_objective",
        }
        self.unknown(raw, top | {"space", "sampler", "pruner", "baselines", "hypermodel"}, "")
        objective = raw.get("objective")
        if objective not in OBJECTIVES:
            raise self.fail(
                "objective",
                f"must be one of {', '.join(OBJECTIVES)}, got {objective!r}.",
            )
        training = self.training(self.table(raw, "training"))
        hypermodel = None
        if "hypermodel" in raw:
            hypermodel = self.hypermodel(self.table(raw, "hypermodel"), raw, training, path)
            space: dict[str, Param] = {}
        else:
            space = self.space(self.table(raw, "space"), self.table(raw, "model", required=False))
        timeout = self.typed(raw, "timeout", float, None, "timeout")
        if timeout is not None and timeout <= 0:
            raise self.fail("timeout", f"must be > 0 seconds, got {timeout}.")
        multi = self.multi_objective(self.table(raw, "multi_objective", required=False))
        pruner = self.pruner(self.table(raw, "pruner", required=False))
        if multi and pruner.name != "none":
            if "pruner" in raw:
                raise self.fail(
                    "pruner.name",
                    "Optuna cannot prune multi-objective trials ([multi_objective] "
                    'param_count = true); remove [pruner] or set name = "none".',
                )
            pruner = PrunerSpec(name="none")
        return StudySpec(
            name=name,
            path=path,
            description=self.typed(raw, "description", str, "", "description"),
            objective=objective,
            data=self.data(self.table(raw, "data")),
            space=space,
            training=training,
            sampler=self.sampler(self.table(raw, "sampler", required=False), training.seed),
            pruner=pruner,
            baselines=self.baselines(raw.get("baselines", []), space),
            trials=self.positive(raw, "trials", 20, "trials") or 20,
            timeout=timeout,
            hypermodel=hypermodel,
            minimize_param_count=multi,
        )

    def multi_objective(self, raw: dict[str, Any]) -> bool:
        """``[multi_objective]``: ``param_count = true`` adds the model size as an objective."""
        self.unknown(raw, {"param_count"}, "multi_objective")
        return bool(self.typed(raw, "param_count", bool, False, "multi_objective.param_count"))

    def hypermodel(
        self,
        table: dict[str, Any],
        raw: Mapping[str, Any],
        training: TrainingSpec,
        study_path: Path,
    ) -> HypermodelSpec:
        """``[hypermodel]``: checked without importing it (TensorFlow loads only at run time)."""
        self.unknown(table, {"module", "build"}, "hypermodel")
        for key, why in (
            ("space", "takes its search space from the hypermodel; remove [space]"),
            ("model", "builds its model in the hypermodel; remove [model]"),
            ("baselines", "cannot have [[baselines]] yet; enqueue trials with Optuna instead"),
        ):
            if key in raw:
                raise self.fail(key, f"a study with [hypermodel] {why}.")
        if training.steps_per_epoch is not None:
            raise self.fail(
                "training.steps_per_epoch",
                "not supported with [hypermodel]: the hypermodel's fit() decides the batches; "
                "remove it.",
            )
        module = table.get("module")
        if not isinstance(module, str) or not module.strip():
            raise self.fail(
                "hypermodel.module",
                'missing; name a file relative to the study file ("my_model.py") or an '
                'importable module ("package.module").',
            )
        build = self.typed(table, "build", str, "build_model", "hypermodel.build")
        if not build.isidentifier():
            raise self.fail("hypermodel.build", f"{build!r} is not a Python name.")
        if module.endswith(".py") or "/" in module or os.sep in module:
            file = (study_path.parent / module).resolve()
            if not file.is_file():
                raise self.fail(
                    "hypermodel.module",
                    f"no such file {file}; give a path relative to the study file.",
                )
            return HypermodelSpec(module=module, build=build, path=file)
        if not all(part.isidentifier() for part in module.split(".")):
            raise self.fail(
                "hypermodel.module",
                f"{module!r} is neither a .py file nor a dotted module name.",
            )
        return HypermodelSpec(module=module, build=build)

    def data(self, raw: dict[str, Any]) -> DataSpec:
        from search.data import validate_data_options

        source = raw.pop("source", None)
        if not isinstance(source, str):
            raise self.fail("data.source", 'missing; name a data source, e.g. source = "imdb".')
        try:
            options = validate_data_options(source, raw)
        except OptionError as exc:
            key = "data.source" if exc.key == "source" else f"data.{exc.key}"
            raise self.fail(key, exc.problem) from None
        return DataSpec(source=source, options=options)

    def training(self, raw: dict[str, Any]) -> TrainingSpec:
        self.unknown(raw, {"epochs", "steps_per_epoch", "patience", "seed"}, "training")
        epochs = self.positive(raw, "epochs", None, "training.epochs")
        if epochs is None:
            raise self.fail("training.epochs", "missing; set the epoch cap, e.g. epochs = 20.")
        return TrainingSpec(
            epochs=epochs,
            steps_per_epoch=self.positive(raw, "steps_per_epoch", None, "training.steps_per_epoch"),
            patience=self.positive(raw, "patience", None, "training.patience"),
            seed=self.typed(raw, "seed", int, 0, "training.seed"),
        )

    def space(self, raw: dict[str, Any], model: dict[str, Any]) -> dict[str, Param]:
        self.unknown(model, {"activation", "optimizer"}, "model")
        for key in REQUIRED_SPACE:
            if key not in raw:
                raise self.fail(f"space.{key}", "missing; give a range, choices or a fixed value.")
        self.unknown(raw, set(HYPERPARAMETERS), "space")
        merged: dict[str, Any] = {
            "activation": model.get("activation", "relu"),
            "optimizer": model.get("optimizer", "adam"),
        }
        merged.update(raw)
        space: dict[str, Param] = {}
        for key, value in merged.items():
            kind, check = HYPERPARAMETERS[key]
            where = f"space.{key}" if key in raw else f"model.{key}"
            try:
                param = param_from_config(value, kind=kind)
            except SpaceError as exc:
                raise self.fail(where, exc.problem) from None
            for bound in _bounds(param):
                problem = check(bound)
                if problem:
                    raise self.fail(where, f"{problem}.")
            space[key] = param
        return space

    def sampler(self, raw: dict[str, Any], seed: int) -> SamplerSpec:
        self.unknown(raw, {"name", "seed", "n_startup_trials"}, "sampler")
        name = raw.get("name", "tpe")
        if name not in SAMPLERS:
            raise self.fail(
                "sampler.name",
                f"unknown sampler {name!r}; use one of {', '.join(SAMPLERS)}.",
            )
        return SamplerSpec(
            name=name,
            seed=self.typed(raw, "seed", int, seed, "sampler.seed"),
            n_startup_trials=self.positive(raw, "n_startup_trials", 10, "sampler.n_startup_trials")
            or 10,
        )

    def pruner(self, raw: dict[str, Any]) -> PrunerSpec:
        name = raw.pop("name", "hyperband")
        if name not in PRUNERS:
            raise self.fail(
                "pruner.name",
                f"unknown pruner {name!r}; use one of {', '.join(PRUNERS)}.",
            )
        allowed = {
            "hyperband": {"min_resource", "reduction_factor"},
            "successive_halving": {
                "min_resource",
                "reduction_factor",
                "min_early_stopping_rate",
            },
            "median": {"n_startup_trials", "n_warmup_steps", "interval_steps"},
            "none": set(),
        }[name]
        self.unknown(raw, allowed, "pruner")
        for key in raw:
            self.positive(
                raw, key, None, f"pruner.{key}"
            ) if key != "min_early_stopping_rate" else (
                self.typed(raw, key, int, 0, f"pruner.{key}")
            )
        return PrunerSpec(name=name, options=raw)

    def baselines(self, raw: Any, space: dict[str, Param]) -> tuple[Baseline, ...]:
        if not isinstance(raw, list):
            raise self.fail("baselines", "expected a list of [[baselines]] tables.")
        out: list[Baseline] = []
        for i, item in enumerate(raw):
            where = f"baselines[{i}]"
            if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
                raise self.fail(where, "each baseline needs a `name` string.")
            params = {k: v for k, v in item.items() if k != "name"}
            self.unknown(params, set(HYPERPARAMETERS), where)
            for key, param in space.items():
                if key not in params:
                    if isinstance(param, Fixed):
                        params[key] = param.value
                        continue
                    raise self.fail(f"{where}.{key}", f"missing in baseline {item['name']!r}.")
                value = params[key]
                if isinstance(param, FloatRange) and isinstance(value, int):
                    value = params[key] = float(value)
                if not param.contains(value):
                    raise self.fail(
                        f"{where}.{key}",
                        f"value {value!r} is outside the search space {param.to_dict()!r}.",
                    )
            out.append(Baseline(name=item["name"], params=params))
        names = [b.name for b in out]
        if len(set(names)) != len(names):
            raise self.fail("baselines", f"baseline names must be unique, got {names}.")
        return tuple(out)


def _bounds(param: Param) -> list[Any]:
    if isinstance(param, (IntRange, FloatRange)):
        return [param.low, param.high]
    if isinstance(param, Choice):
        return list(param.choices)
    return [param.value]
