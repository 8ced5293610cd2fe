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
from typing import TYPE_CHECKING, Any, Literal

from search import settings
from search.errors import OptionError, SpaceError, StudyFileError
from search.spec.family import (
    BATCH_NORM_POSITIONS,
    CONDITIONS,
    DEFAULTS,
    LOSSES,
    OUTPUT_ACTIVATIONS,
    SCHEDULES,
    SHAPES,
    applies,
    inactive_defaults,
    sampling_order,
    width_key,
)
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

if TYPE_CHECKING:
    import optuna

Objective = Literal["generalize", "memorize"]
Direction = Literal["minimize", "maximize"]
OBJECTIVES = ("generalize", "memorize")
SAMPLERS = ("tpe", "random")
PRUNERS = ("hyperband", "successive_halving", "median", "wilcoxon", "none")
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
        lambda v: None if v in ACTIVATIONS else _unknown("activation", v, ACTIVATIONS),
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
        lambda v: None if v in OPTIMIZERS else _unknown("optimizer", v, OPTIMIZERS),
    ),
    "shape": ("str", lambda v: None if v in SHAPES else _unknown("shape", v, SHAPES)),
    "l1": ("float", lambda v: None if v >= 0 else f"L1 strength must be >= 0, got {v}"),
    "batch_norm": ("bool", lambda v: None),
    "batch_norm_every": (
        "int",
        lambda v: None if v >= 1 else f"batch_norm_every must be >= 1, got {v}",
    ),
    "batch_norm_position": (
        "str",
        lambda v: (
            None
            if v in BATCH_NORM_POSITIONS
            else _unknown("batch_norm_position", v, BATCH_NORM_POSITIONS)
        ),
    ),
    "output_activation": (
        "str",
        lambda v: (
            None
            if v in OUTPUT_ACTIVATIONS
            else _unknown("output_activation", v, OUTPUT_ACTIVATIONS)
        ),
    ),
    "loss": ("str", lambda v: None if v in LOSSES else _unknown("loss", v, LOSSES)),
    "schedule": ("str", lambda v: None if v in SCHEDULES else _unknown("schedule", v, SCHEDULES)),
    "decay_rate": (
        "float",
        lambda v: None if 0 < v <= 1 else f"decay_rate must be in (0, 1], got {v}",
    ),
    "weight_decay": (
        "float",
        lambda v: None if v >= 0 else f"weight_decay must be >= 0, got {v}",
    ),
    "momentum": (
        "float",
        lambda v: None if 0 <= v < 1 else f"momentum must be in [0, 1), got {v}",
    ),
    "nesterov": ("bool", lambda v: None),
    "shuffle": ("bool", lambda v: None),
}


def _unknown(key: str, value: Any, known: tuple[str, ...]) -> str:
    return f"unknown {key} {value!r}; use one of {', '.join(known)}"


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
    folds: int | None = None  # k-fold cross-validation of the training rows (docs/verdict.md)
    refit: str = "train"  # or "train+validation": the final model's rows (docs/verdict.md)


REFITS = ("train", "train+validation")


@dataclass(frozen=True)
class VerdictSpec:
    """``[verdict]``: the re-trainings behind ``capsearch verdict`` (see docs/verdict.md)."""

    seeds: int = 5
    top_k: int = 5
    fractions: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0)
    fraction_seeds: int = 1
    memorize_threshold: float | None = None
    baselines: str = "all"  # "all": every baseline re-trained with the seeds; "best": the best one

    def to_dict(self) -> dict[str, Any]:
        out = dict(vars(self)) | {"fractions": list(self.fractions)}
        return {k: v for k, v in out.items() if v is not None}


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
    epochs: int | None = None  # its own epoch cap, else the study's


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
    verdict: VerdictSpec | None = None  # [verdict]: re-trainings after the search

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
        """The Optuna parameters to enqueue so a trial reproduces ``baseline``.

        A list of widths is enqueued as ``units_<i>`` (and its first width as ``units``). A
        sub-lever that does not apply to the baseline (``momentum`` of an ``adam`` one) is not
        enqueued: its trial never samples it.
        """
        out: dict[str, Any] = {}
        for key, param in self.space.items():
            if not applies(key, baseline.params):
                continue
            value = baseline.params[key]
            if key == "units" and isinstance(value, list):
                out.update({width_key(i + 1): int(w) for i, w in enumerate(value)})
                value = value[0]
                if isinstance(param, Fixed):
                    continue
            out.update(optuna_params_for(param, key, value))
        return out

    def baseline_named(self, name: str | None) -> Baseline | None:
        """The baseline called ``name`` (``None`` for a trial that is no baseline)."""
        return next((b for b in self.baselines if b.name == name), None)

    def baseline_epochs(self, name: str | None) -> int | None:
        """The epoch cap of the baseline called ``name``; None: the study's ``epochs``."""
        baseline = self.baseline_named(name)
        return baseline.epochs if baseline is not None else None

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample a trial's model parameters; a baseline's trial gets exactly its values.

        A ``free`` shape, or a baseline with a list of widths, samples ``units_1`` ...
        ``units_<layers>`` from the ``units`` range, after the layer count. A sub-lever
        (:data:`~search.spec.family.CONDITIONS`) is sampled after its lever and only where it
        applies; elsewhere it takes its default and is no Optuna parameter of the trial.
        """
        sampled: dict[str, Any] = {}
        for name in sampling_order(self.space):
            if applies(name, sampled):  # its lever, if searched, is sampled by now
                sampled[name] = self.space[name].suggest(trial, name)
        params = {name: sampled[name] for name in self.space if name in sampled}
        baseline = self.baseline_named(trial.user_attrs.get("baseline"))
        units = self.space["units"]
        listed = baseline is not None and isinstance(baseline.params.get("units"), list)
        if (params.get("shape") == "free" or listed) and isinstance(units, (IntRange, Choice)):
            for i in range(int(str(params["layers"]))):
                params[width_key(i + 1)] = units.suggest(trial, width_key(i + 1))
        if baseline is not None:
            params.update(baseline.params)
        return self._with_inactive_defaults(params)

    def _with_inactive_defaults(self, params: dict[str, Any]) -> dict[str, Any]:
        """Every sub-lever of the space (or set) that does not apply, at its default."""
        params.update(inactive_defaults(params, [*self.space, *params]))
        return params

    def stored_params(
        self, trial_params: Mapping[str, Any], baseline: str | None
    ) -> dict[str, Any]:
        """A stored trial's model parameters: its Optuna ones, fixed values, its baseline's.

        The same dict :meth:`suggest` gave the trial: a sub-lever that does not apply (absent
        from ``trial_params``, or stored before sub-levers were conditional) at its default.
        """
        out: dict[str, Any] = {}
        for name, param in self.space.items():
            if name in trial_params:
                out[name] = trial_params[name]
            elif isinstance(param, FloatRange) and param.zero:
                out[name] = 0.0
        layers = out.get("layers", trial_params.get("layers"))
        if layers is not None:
            for i in range(int(layers)):
                if width_key(i + 1) in trial_params:
                    out[width_key(i + 1)] = trial_params[width_key(i + 1)]
        out = self.resolve_params(out)
        chosen = self.baseline_named(baseline)
        if chosen is not None:
            out.update(chosen.params)
        return self._with_inactive_defaults(out)

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
            "baselines": [
                {"name": b.name, **b.params, **({"epochs": b.epochs} if b.epochs else {})}
                for b in self.baselines
            ],
        }
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.hypermodel is not None:
            del out["space"], out["baselines"]
            out["hypermodel"] = self.hypermodel.to_dict()
        if self.minimize_param_count:
            out["multi_objective"] = {"param_count": True}
        if self.verdict is not None:
            out["verdict"] = self.verdict.to_dict()
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
    name = path.stem
    if name.strip(".") == "" or name.startswith("-") or name != name.strip():
        # The name becomes folder names (reports, exports, plots) and a command argument.
        raise StudyFileError(
            str(path),
            "",
            f"the study name {name!r} (the file's name) would be a path or an option; rename "
            "the file to a name with a letter or digit first, such as my_study.toml.",
        )
    return spec_from_dict(raw, name=name, path=path)


def spec_from_dict(raw: Mapping[str, Any], *, name: str, path: Path) -> StudySpec:
    """Validate a parsed study file. See :func:`load_study`."""
    from search.spec.memory import check_model_fits

    spec = _Validator(str(path)).study(raw, name=name, path=path)
    # Inputs before the data is loaded: a text source's vocabulary, else one (a lower bound).
    check_model_fits(spec, n_features=int(spec.data.options.get("num_words") or 1))
    return spec


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
        self.unknown(
            raw, top | {"space", "sampler", "pruner", "baselines", "hypermodel", "verdict"}, ""
        )
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
        if pruner.name == "wilcoxon" and not training.folds:
            raise self.fail(
                "pruner.name",
                '"wilcoxon" compares per-fold scores; set [training] folds = k (k >= 2) or '
                "use another pruner.",
            )
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
            verdict=self.verdict(raw.get("verdict")),
        )

    def verdict(self, raw: Any) -> VerdictSpec | None:
        """``[verdict]``: seeds, top_k, fractions, fraction_seeds, memorize_threshold, baselines."""
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise self.fail("verdict", f"expected a table, got {raw!r}; add a [verdict] section.")
        raw = dict(raw)
        allowed = {
            "seeds",
            "top_k",
            "fractions",
            "fraction_seeds",
            "memorize_threshold",
            "baselines",
        }
        self.unknown(raw, allowed, "verdict")
        seeds = self.positive(raw, "seeds", 5, "verdict.seeds") or 5
        if seeds < 2:
            raise self.fail("verdict.seeds", f"must be >= 2 to measure the noise, got {seeds}.")
        fractions = raw.get("fractions", [0.125, 0.25, 0.5, 1.0])
        if (
            not isinstance(fractions, list)
            or not fractions
            or not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in fractions)
            or not all(0 < f <= 1 for f in fractions)
        ):
            raise self.fail(
                "verdict.fractions",
                f"expected a list of fractions in (0, 1], got {fractions!r}; e.g. [0.25, 0.5, 1].",
            )
        threshold = self.typed(raw, "memorize_threshold", float, None, "verdict.memorize_threshold")
        if threshold is not None and threshold <= 0:
            raise self.fail("verdict.memorize_threshold", f"must be > 0, got {threshold}.")
        baselines = raw.get("baselines", "all")
        if baselines not in ("all", "best"):
            raise self.fail(
                "verdict.baselines",
                f'got {baselines!r}; write "all" (every baseline re-trained with the seeds) '
                'or "best" (only the best one).',
            )
        return VerdictSpec(
            seeds=seeds,
            top_k=self.positive(raw, "top_k", 5, "verdict.top_k") or 5,
            fractions=tuple(sorted({float(f) for f in fractions})),
            fraction_seeds=self.positive(raw, "fraction_seeds", 1, "verdict.fraction_seeds") or 1,
            memorize_threshold=threshold,
            baselines=baselines,
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
        allowed = {"epochs", "steps_per_epoch", "patience", "seed", "folds", "refit"}
        self.unknown(raw, allowed, "training")
        epochs = self.positive(raw, "epochs", None, "training.epochs")
        if epochs is None:
            raise self.fail("training.epochs", "missing; set the epoch cap, e.g. epochs = 20.")
        folds = self.positive(raw, "folds", None, "training.folds")
        if folds is not None and folds < 2:
            raise self.fail("training.folds", f"must be >= 2 (or absent), got {folds}.")
        refit = self.typed(raw, "refit", str, "train", "training.refit")
        if refit not in REFITS:
            raise self.fail("training.refit", f"must be one of {', '.join(REFITS)}, got {refit!r}.")
        return TrainingSpec(
            epochs=epochs,
            steps_per_epoch=self.positive(raw, "steps_per_epoch", None, "training.steps_per_epoch"),
            patience=self.positive(raw, "patience", None, "training.patience"),
            seed=self.typed(raw, "seed", int, 0, "training.seed"),
            folds=folds,
            refit=refit,
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
            if key == "units" and isinstance(value, list):
                param: Param = self.width_list(value, where)
            else:
                try:
                    param = param_from_config(value, kind=kind)
                except SpaceError as exc:
                    raise self.fail(where, exc.problem) from None
            for bound in _bounds(param):
                problem = check(bound)
                if problem:
                    raise self.fail(where, f"{problem}.")
            space[key] = param
        self.space_rules(space)
        return space

    def width_list(self, value: list[Any], where: str) -> Fixed:
        """``units = [32, 16]``: one width per hidden layer."""
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise self.fail(where, f"a list of widths must hold integers, got {value!r}.")
        return Fixed(tuple(value))

    def space_rules(self, space: dict[str, Param]) -> None:
        """Rules between keys: a width list fixes the depth; ``free`` widths need a range."""
        units, layers = space["units"], space["layers"]
        shape = space.get("shape", Fixed("constant"))
        if isinstance(units, Fixed) and isinstance(units.value, tuple):
            count = len(units.value)
            if not (isinstance(layers, Fixed) and layers.value == count):
                raise self.fail(
                    "space.layers",
                    f"units lists {count} widths, so layers must be fixed to {count}, got "
                    f"{layers.to_dict()!r}; set layers = {count} or give units as a range.",
                )
            if shape.to_dict() != "constant":
                raise self.fail(
                    "space.shape",
                    f"shape {shape.to_dict()!r} has no effect on a list of widths; remove it.",
                )
        if "free" in _bounds(shape) and not isinstance(units, (IntRange, Choice)):
            raise self.fail(
                "space.units",
                "shape = 'free' samples one width per layer from units; give units as a range "
                f"or choices, got {units.to_dict()!r}.",
            )

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
            "wilcoxon": {"p_threshold", "n_startup_steps"},
            "none": set(),
        }[name]
        self.unknown(raw, allowed, "pruner")
        if name == "wilcoxon":  # per-fold scores: [training] folds is checked in study()
            p = self.typed(raw, "p_threshold", float, 0.1, "pruner.p_threshold")
            if not 0 < p < 1:
                raise self.fail("pruner.p_threshold", f"must be in (0, 1), got {p}.")
            raw["p_threshold"] = p
            steps = self.typed(raw, "n_startup_steps", int, 2, "pruner.n_startup_steps")
            if steps < 0:
                raise self.fail("pruner.n_startup_steps", f"must be >= 0, got {steps}.")
            return PrunerSpec(name=name, options=raw)
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
            self.unknown(params, {*HYPERPARAMETERS, "epochs"}, where)
            for key, value in params.items():
                if key in HYPERPARAMETERS and key not in space and key != "units":
                    self.baseline_extra(f"{where}.{key}", key, value)
            for key, param in space.items():
                if key not in params:
                    if isinstance(param, Fixed):
                        params[key] = param.value
                        continue
                    if key == "shape" and isinstance(params.get("units"), list):
                        # A list of widths takes no shape: enqueue one the space has.
                        params[key] = "free" if param.contains("free") else _bounds(param)[0]
                    elif key in DEFAULTS:  # a lever the baseline does not use
                        params[key] = DEFAULTS[key]
                    else:
                        raise self.fail(f"{where}.{key}", f"missing in baseline {item['name']!r}.")
            inactive = self.baseline_inactive(where, item, params)
            for key, param in space.items():
                if key in inactive:  # a sub-lever that does not apply: at its default
                    continue
                value = params[key]
                if isinstance(param, FloatRange) and isinstance(value, int):
                    value = params[key] = float(value)
                if key == "units" and isinstance(value, list):
                    self.baseline_widths(where, params, param)
                    continue
                if not param.contains(value):
                    raise self.fail(
                        f"{where}.{key}",
                        f"value {value!r} is outside the search space {param.to_dict()!r}.",
                    )
            epochs = params.pop("epochs", None)
            if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
                raise self.fail(f"{where}.epochs", f"must be a positive integer, got {epochs!r}.")
            self.unknown(params, set(HYPERPARAMETERS), where)
            out.append(Baseline(name=item["name"], params=params, epochs=epochs))
        names = [b.name for b in out]
        if len(set(names)) != len(names):
            raise self.fail("baselines", f"baseline names must be unique, got {names}.")
        return tuple(out)

    def baseline_inactive(
        self, where: str, item: Mapping[str, Any], params: dict[str, Any]
    ) -> set[str]:
        """Set each sub-lever that does not apply to the baseline to its default; return them.

        A baseline that gives such a sub-lever another value is an error: its trial could not
        train it (``momentum = 0.9`` with ``optimizer = "adam"``).
        """
        inactive = inactive_defaults(params, [*params, *CONDITIONS])
        for key, default in inactive.items():
            if key in item and item[key] != default:
                parent = CONDITIONS[key].parent
                raise self.fail(
                    f"{where}.{key}",
                    f"{key} = {item[key]!r} has no effect unless {CONDITIONS[key].when}, and "
                    f"{parent} is {params.get(parent, DEFAULTS.get(parent))!r}; remove {key} "
                    "or change the lever.",
                )
            if key in params:
                params[key] = default
        return set(inactive)

    def baseline_widths(self, where: str, params: dict[str, Any], param: Param) -> None:
        """A baseline's ``units = [32, 16]``: one width per layer, each in the space's range."""
        widths = params["units"]
        self.width_list(widths, f"{where}.units")
        if params.get("layers") != len(widths):
            raise self.fail(
                f"{where}.layers",
                f"units lists {len(widths)} widths, so layers must be {len(widths)}, got "
                f"{params.get('layers')!r}.",
            )
        if isinstance(param, Fixed):
            if not param.contains(widths):
                raise self.fail(
                    f"{where}.units",
                    f"value {widths!r} differs from the fixed {param.to_dict()!r}.",
                )
            return
        for width in widths:
            if not param.contains(width):
                raise self.fail(
                    f"{where}.units",
                    f"width {width!r} is outside the search space {param.to_dict()!r}.",
                )

    def baseline_extra(self, where: str, key: str, value: Any) -> None:
        """A baseline's value of a key the space does not search: checked like a fixed value."""
        kind, check = HYPERPARAMETERS[key]
        try:
            param = param_from_config(value, kind=kind)
        except SpaceError as exc:
            raise self.fail(where, exc.problem) from None
        if not isinstance(param, Fixed):
            raise self.fail(where, f"a baseline takes one value, got {value!r}.")
        problem = check(param.value)
        if problem:
            raise self.fail(where, f"{problem}.")


def _bounds(param: Param) -> list[Any]:
    if isinstance(param, (IntRange, FloatRange)):
        return [param.low, param.high]
    if isinstance(param, Choice):
        return list(param.choices)
    if isinstance(param.value, tuple):
        return list(param.value)
    return [param.value]
