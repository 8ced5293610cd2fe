"""KerasTuner hypermodels on Optuna: a study's ``[hypermodel]`` replaces the Dense-stack space.

A study file may name a KerasTuner hypermodel instead of a ``[space]``::

    [hypermodel]
    module = "kt_hypermodel.py"     # relative to the study file, or "package.module"
    build = "PimaHyperModel"        # a build_model(hp) function or a keras_tuner.HyperModel class

Each Optuna trial hands the hypermodel an :class:`OptunaHyperParameters`: a real
``keras_tuner.HyperParameters`` (KerasTuner's own names, name scopes, conditions and checks) whose
values are sampled by Optuna instead of KerasTuner's oracle, so the hypermodel code is unchanged.
How each declaration becomes an Optuna distribution (:func:`mirror_of`):

* ``hp.Int`` / ``hp.Float``, linear: ``suggest_int`` / ``suggest_float`` on ``[min, max]`` with
  the same ``step`` (``max`` lowered to the last step, as KerasTuner's grid ends there);
* ``sampling="log"``: the same with ``log=True``;
* ``sampling="reverse_log"``: Optuna samples ``u`` log-uniformly on ``[min, max]`` and the value
  is ``min + max - u`` (KerasTuner's own formula: dense near ``max``); the trial's Optuna
  parameter is ``u``, the value the model got is in the trial's ``hp_values``;
* ``log``/``reverse_log`` with a (multiplicative) ``step``: a categorical over KerasTuner's grid;
* ``hp.Choice``: categorical over the values (KerasTuner's ``ordered`` is not modelled);
  ``hp.Boolean``: categorical ``[False, True]``; ``hp.Fixed``: not sampled, only recorded.

``hp.conditional_scope`` keeps KerasTuner's semantics: inside a scope whose condition is false,
a declaration is registered and returns ``None``, and Optuna samples nothing for it; TPE
(``group=True``) models the cases separately. A declaration KerasTuner rejects (a ``Choice``
mixing types, an unknown ``sampling``) or that Optuna cannot hold (one name declared with two
ranges) is a one-line :class:`~search.errors.HypermodelError` naming the hyperparameter.

Training: ``hypermodel.build(hp)`` then ``hypermodel.fit(hp, model, x, y, validation_data=...,
epochs=..., callbacks=[...])`` as KerasTuner calls it, so a ``fit`` override that searches the
batch size works. Our callbacks measure each epoch in inference mode
(:class:`~search.training.EpochEvaluator`, data loss without the L2 penalty), then prune; Keras'
own ``val_loss`` (with the penalty) is kept as the trial's ``keras_val_curve``. The hypermodel
must compile its model, take the data's features as its one input (sparse multi-hot data:
``keras.Input(shape=(10000,), sparse=True)``) and end in the task's output (one sigmoid unit for
binary data, one linear unit for regression, a softmax over the classes).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import keras
import keras_tuner
import optuna
from keras_tuner.engine import hyperparameters as kt_types
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from search.errors import HypermodelError
from search.objective import Objective, TrainingRun
from search.session import clear_session
from search.training import EpochEvaluator, History, PreparedData

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from search.data import Dataset
    from search.studyfile import StudySpec

PROBE_ROWS = 8


@dataclass(frozen=True)
class Mirror:
    """How one KerasTuner hyperparameter is sampled on Optuna.

    ``mirrored``: a ``reverse_log`` range, where Optuna samples ``u`` and the value is
    ``low + high - u``.

    Example:
        >>> m = Mirror("units", IntDistribution(4, 64, log=True), mirrored=True)
        >>> m.value(4), m.value(64), m.param(60)
        (64, 4, 8)
    """

    name: str
    distribution: BaseDistribution
    mirrored: bool = False

    def suggest(self, trial: optuna.Trial) -> Any:
        """Sample the value from ``trial`` (under the hyperparameter's own name)."""
        d = self.distribution
        if isinstance(d, IntDistribution):
            param: Any = trial.suggest_int(self.name, d.low, d.high, step=d.step, log=d.log)
        elif isinstance(d, FloatDistribution):
            param = trial.suggest_float(self.name, d.low, d.high, step=d.step, log=d.log)
        else:
            assert isinstance(d, CategoricalDistribution)
            param = trial.suggest_categorical(self.name, list(d.choices))
        return self.value(param)

    def value(self, param: Any) -> Any:
        """The hyperparameter value of an Optuna parameter value."""
        if not self.mirrored:
            return param
        d = self.distribution
        assert isinstance(d, (IntDistribution, FloatDistribution))
        if isinstance(d, IntDistribution):
            return d.low + d.high - int(param)
        return min(max(d.low + d.high - float(param), d.low), d.high)

    def param(self, value: Any) -> Any:
        """The Optuna parameter value that gives ``value`` (e.g. to enqueue a trial)."""
        return self.value(value)  # the mirror map is its own inverse

    def describe(self) -> str:
        """``Int[4, 64, step 4]``, ``Float[1e-05, 0.01, log]``, ``Choice[16, 32]``..."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return f"Choice{list(d.choices)}"
        assert isinstance(d, (IntDistribution, FloatDistribution))
        kind = "Int" if isinstance(d, IntDistribution) else "Float"
        extra = ", reverse_log" if self.mirrored else ", log" if d.log else ""
        step = f", step {d.step}" if d.step not in (None, 1) else ""
        return f"{kind}[{d.low}, {d.high}{step}{extra}]"


def mirror_of(hp: Any) -> Mirror | None:
    """The Optuna form of a registered KerasTuner hyperparameter; ``None`` for ``Fixed``.

    Raises:
        HypermodelError: A type or range Optuna cannot represent.

    Example:
        >>> mirror_of(kt_types.Int("units", 4, 62, step=4)).distribution
        IntDistribution(high=60, log=False, low=4, step=4)
    """
    try:
        return _mirror(hp)
    except ValueError as exc:
        raise HypermodelError(f"hyperparameter {hp.name!r}: {_one_line(exc)}") from None


def _mirror(hp: Any) -> Mirror | None:
    name = hp.name
    if isinstance(hp, kt_types.Fixed):
        return None
    if isinstance(hp, kt_types.Boolean):
        return Mirror(name, CategoricalDistribution([False, True]))
    if isinstance(hp, kt_types.Choice):
        return Mirror(name, CategoricalDistribution(list(hp.values)))
    if not isinstance(hp, (kt_types.Int, kt_types.Float)):
        raise HypermodelError(
            f"hyperparameter {name!r}: {type(hp).__name__} has no Optuna form; use hp.Int, "
            "hp.Float, hp.Choice, hp.Boolean or hp.Fixed."
        )
    integer = isinstance(hp, kt_types.Int)
    low, high, step, sampling = hp.min_value, hp.max_value, hp.step, hp.sampling
    if sampling not in ("linear", "log", "reverse_log"):
        raise HypermodelError(
            f"hyperparameter {name!r}: sampling {sampling!r} has no Optuna form; use linear, "
            "log or reverse_log."
        )
    if sampling == "linear":
        if integer:
            step = step or 1
            return Mirror(name, IntDistribution(low, low + (high - low) // step * step, step=step))
        if step is None:
            return Mirror(name, FloatDistribution(low, high))
        # Exact decimal steps: Optuna's own check is decimal; KerasTuner's float floor division
        # would drop the top of e.g. [0, 0.5] in steps of 0.1.
        count = (Decimal(str(high)) - Decimal(str(low))) // Decimal(str(step))
        top = float(Decimal(str(low)) + count * Decimal(str(step)))
        return Mirror(name, FloatDistribution(low, top, step=step))
    if step is not None:  # a multiplicative step: KerasTuner's finite grid, as a categorical
        return Mirror(name, CategoricalDistribution(_grid(low, high, step, sampling, integer)))
    distribution = (
        IntDistribution(low, high, log=True) if integer else FloatDistribution(low, high, log=True)
    )
    return Mirror(name, distribution, mirrored=sampling == "reverse_log")


def _grid(low: float, high: float, step: float, sampling: str, integer: bool) -> list[Any]:
    """KerasTuner's values of a log or reverse-log range with a multiplicative step."""
    count = int(math.log(high / low, step) + 1e-8) + 1
    values = [low * math.pow(step, i) for i in range(count)]
    if sampling == "reverse_log":
        values = [high + low - v for v in values]
    return [int(v) for v in values] if integer else values


class _MirroringHyperParameters(keras_tuner.HyperParameters):
    """KerasTuner's own bookkeeping (names, scopes, conditions); new values from :meth:`_pick`.

    ``mirrors`` holds the Optuna form of every declaration seen, active or not.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mirrors: dict[str, Mirror] = {}

    # KerasTuner checks every declaration when it is made; its errors become one-line errors
    # that name the hyperparameter.
    def Int(self, name: str, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 (KerasTuner's API)
        with _explained(name):
            return super().Int(name, *args, **kwargs)

    def Float(self, name: str, *args: Any, **kwargs: Any) -> Any:  # noqa: N802
        with _explained(name):
            return super().Float(name, *args, **kwargs)

    def Choice(self, name: str, *args: Any, **kwargs: Any) -> Any:  # noqa: N802
        with _explained(name):
            return super().Choice(name, *args, **kwargs)

    def Boolean(self, name: str, *args: Any, **kwargs: Any) -> Any:  # noqa: N802
        with _explained(name):
            return super().Boolean(name, *args, **kwargs)

    def Fixed(self, name: str, *args: Any, **kwargs: Any) -> Any:  # noqa: N802
        with _explained(name):
            return super().Fixed(name, *args, **kwargs)

    def _register(self, hyperparameter: Any, overwrite: bool = False) -> Any:
        name = hyperparameter.name
        known = name in self.values
        value = super()._register(hyperparameter, overwrite)  # None when inactive
        mirror = mirror_of(self._space[-1])
        previous = self.mirrors.get(name)
        if mirror is not None and previous is not None and previous != mirror:
            raise HypermodelError(
                f"hyperparameter {name!r} is declared with two ranges ({previous.describe()} "
                f"and {mirror.describe()}); Optuna keeps one per name: rename one of them."
            )
        if mirror is not None:
            self.mirrors[name] = mirror
        if value is None or mirror is None or (known and not overwrite):
            return value  # inactive (KerasTuner returns None), fixed, or already chosen
        self.values[name] = self._pick(mirror, self._space[-1])
        return self.values[name]

    def _pick(self, mirror: Mirror, hp: Any) -> Any:
        raise NotImplementedError


class OptunaHyperParameters(_MirroringHyperParameters):
    """A ``keras_tuner.HyperParameters`` whose values are sampled by an Optuna trial.

    Example:
        >>> def objective(trial):
        ...     hp = OptunaHyperParameters(trial)
        ...     model = MyHyperModel().build(hp)  # hp.Int(...) calls trial.suggest_int(...)
        ...     ...
    """

    def __init__(self, trial: optuna.Trial) -> None:
        super().__init__()
        self.trial = trial

    def _pick(self, mirror: Mirror, hp: Any) -> Any:
        with _explained(mirror.name):  # e.g. Optuna refusing a changed distribution
            return mirror.suggest(self.trial)


class _ProbeHyperParameters(_MirroringHyperParameters):
    """KerasTuner's defaults (as a plain ``HyperParameters()`` gives), collecting mirrors."""

    def _pick(self, mirror: Mirror, hp: Any) -> Any:
        return hp.default


def fixed_hyperparameters(values: Mapping[str, Any]) -> keras_tuner.HyperParameters:
    """A plain KerasTuner ``HyperParameters`` holding ``values``, as KerasTuner's oracle hands it.

    Example:
        >>> hp = fixed_hyperparameters({"units": 32})
        >>> hp.Int("units", 4, 64)
        32
    """
    hp = keras_tuner.HyperParameters()
    hp.values = dict(values)
    return hp


def trial_hp_values(trial: FrozenTrial) -> dict[str, Any]:
    """The hyperparameter values a stored trial's model was built with (``hp_values``).

    Example:
        >>> trial_hp_values(study.best_trial)["units"]  # doctest: +SKIP
        32
    """
    values = trial.user_attrs.get("hp_values")
    if values is None:
        raise HypermodelError(
            f"trial {trial.number} has no hp_values: it did not run through a hypermodel."
        )
    return dict(values)


def load_hypermodel(spec: StudySpec) -> keras_tuner.HyperModel:
    """Import the study's ``[hypermodel]`` and return it as a ``keras_tuner.HyperModel``.

    Raises:
        HypermodelError: The module cannot be imported, or ``build`` names nothing usable.

    Example:
        >>> hypermodel = load_hypermodel(load_study("spaces/examples/kt_pima.toml"))
        ... # doctest: +SKIP
    """
    config = spec.hypermodel
    assert config is not None
    label = str(config.path or config.module)
    target = hypermodel_target(spec)
    if isinstance(target, type) and issubclass(target, keras_tuner.HyperModel):
        try:
            target = target()
        except Exception as exc:
            raise HypermodelError(
                f"{label}: {config.build}() failed: {type(exc).__name__}: {_one_line(exc)}"
            ) from None
    if isinstance(target, keras_tuner.HyperModel):
        return target
    if callable(target) and not isinstance(target, type):
        return _BuildFunction(target)
    found = "nothing" if target is None else type(target).__name__
    raise HypermodelError(
        f"{label}: {config.build!r} is {found}; name a build_model(hp) function or a "
        "keras_tuner.HyperModel subclass in hypermodel.build."
    )


def hypermodel_target(spec: StudySpec) -> Any:
    """What the study's ``hypermodel.build`` names in its module (``None`` when nothing).

    Raises:
        HypermodelError: The study has no ``[hypermodel]``, or the module cannot be imported.

    Example:
        >>> hypermodel_target(load_study("spaces/examples/kt_pima.toml"))  # doctest: +SKIP
        <class 'capsearch_hypermodel_kt_hypermodel.PimaHyperModel'>
    """
    config = spec.hypermodel
    if config is None:
        raise HypermodelError(f"study {spec.name} has no [hypermodel] section.")
    try:
        module = _import(config.module, config.path)
    except Exception as exc:
        label = str(config.path or config.module)
        raise HypermodelError(
            f"cannot import hypermodel {label}: {type(exc).__name__}: {_one_line(exc)}"
        ) from None
    return getattr(module, config.build, None)


class _BuildFunction(keras_tuner.HyperModel):
    """A ``build_model(hp)`` function as a HyperModel (plain ``model.fit``)."""

    def __init__(self, build: Any) -> None:
        super().__init__(name=getattr(build, "__name__", None))
        self._function = build

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        return self._function(hp)


def _import(module: str, path: Any) -> Any:
    if path is None:
        return importlib.import_module(module)
    name = "capsearch_hypermodel_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(loaded)
    return loaded


def probe_space(
    hypermodel: keras_tuner.HyperModel, data: PreparedData, label: str = "hypermodel"
) -> dict[str, Mirror]:
    """Build the hypermodel once with KerasTuner's defaults and check it fits the data.

    Also runs its ``fit`` for one epoch on a few rows, so hyperparameters declared in a ``fit``
    override (a searched batch size) are checked too, and so is that ``fit`` passing our
    callbacks on to ``model.fit``.

    Returns:
        The Optuna form of every hyperparameter declared on the default path.

    Raises:
        HypermodelError: A declaration has no Optuna form, or the model does not fit the data.

    Example:
        >>> sorted(probe_space(load_hypermodel(spec), data))  # doctest: +SKIP
        ['batch_size', 'dropout', 'layers', 'learning_rate', 'units', 'use_l2']
    """
    hp = _ProbeHyperParameters()
    clear_session()
    model = _guarded(label, "build(hp)", lambda: hypermodel.build(hp))
    check_model(model, data.dataset, label)
    ds = data.dataset
    rows = min(PROBE_ROWS, ds.x_train.shape[0])
    x_val, y_val = ds.x_val, ds.y_val
    validation = (x_val[:rows], y_val[:rows]) if x_val is not None and y_val is not None else None
    seen = _Seen()
    _guarded(
        label,
        "fit(hp, model, ...)",
        lambda: hypermodel.fit(
            hp,
            model,
            ds.x_train[:rows],
            ds.y_train[:rows],
            validation_data=validation,
            epochs=1,
            callbacks=[seen],
            verbose=0,
        ),
    )
    if not seen.epochs:
        raise HypermodelError(
            f"{label}: fit(hp, model, *args, **kwargs) must pass its arguments on to "
            "model.fit (our per-epoch measurement and pruning are callbacks)."
        )
    clear_session()
    return hp.mirrors


def check_model(model: Any, dataset: Dataset, label: str = "hypermodel") -> None:
    """A compiled Keras model whose input and output fit the data and its task.

    Raises:
        HypermodelError: The model does not fit, with the fix.

    Example:
        >>> check_model(hypermodel.build(hp), data.dataset)  # doctest: +SKIP
    """
    if not isinstance(model, keras.Model):
        raise HypermodelError(f"{label}: build(hp) returned {type(model).__name__}, not a model.")
    if not getattr(model, "compiled", True) or model.optimizer is None:
        raise HypermodelError(
            f"{label}: build(hp) must return a compiled model (KerasTuner's convention)."
        )
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        return  # not built yet (a Sequential without Input): fit will tell
    if len(inputs) != 1 or len(outputs) != 1:
        raise HypermodelError(f"{label}: the model needs one input and one output.")
    width = inputs[0].shape[-1]
    if width is not None and width != dataset.n_features:
        raise HypermodelError(
            f"{label}: the model's input has {width} features, the data has "
            f"{dataset.n_features}; declare keras.Input(shape=({dataset.n_features},))."
        )
    if dataset.is_sparse and not getattr(inputs[0], "sparse", False):
        raise HypermodelError(
            f"{label}: the data is sparse (multi-hot); declare "
            f"keras.Input(shape=({dataset.n_features},), sparse=True)."
        )
    units = 1 if dataset.task in ("regression", "binary") else dataset.n_classes
    if outputs[0].shape[-1] != units:
        raise HypermodelError(
            f"{label}: a {dataset.task} task needs {units} output unit(s), the model has "
            f"{outputs[0].shape[-1]}."
        )


def train_hypermodel(
    spec: StudySpec,
    data: PreparedData,
    hypermodel: keras_tuner.HyperModel,
    hp: keras_tuner.HyperParameters,
    *,
    seed: int,
    epochs: int | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    history: History | None = None,
    keras_val_curve: list[float | None] | None = None,
) -> TrainingRun:
    """Build and train one model through the hypermodel, measured after every epoch.

    Args:
        spec: The study (epoch cap).
        data: The prepared data; training and validation arrays go to ``hypermodel.fit``.
        hypermodel: The study's hypermodel.
        hp: Values to build with: :class:`OptunaHyperParameters` in a trial, or
            :func:`fixed_hyperparameters` to re-train a stored trial.
        seed: Seeds weights, dropout and batch order (``keras.utils.set_random_seed``).
        epochs: Epoch cap; default the study's.
        callbacks: Run after the measurement has written ``train_loss``/``val_loss``.
        history: Filled epoch by epoch (kept when a pruner interrupts training).
        keras_val_curve: Filled with Keras' own ``val_loss`` per epoch (L2 penalty included).

    Returns:
        The run; ``params`` are the hyperparameter values, ``fit`` override's included.

    Example:
        >>> run = train_hypermodel(spec, data, hypermodel, fixed_hyperparameters(values),
        ...                        seed=3, epochs=12)  # doctest: +SKIP
    """
    keras.utils.set_random_seed(seed)
    model = hypermodel.build(hp)
    history = history if history is not None else History()
    evaluator = EpochEvaluator(data, model, history, None, measure_train=True)
    ds = data.dataset
    validation = (ds.x_val, ds.y_val) if ds.has_validation else None
    start = time.perf_counter()
    hypermodel.fit(
        hp,
        model,
        ds.x_train,
        ds.y_train,
        validation_data=validation,
        epochs=epochs or spec.training.epochs,
        callbacks=[_KeepKerasValLoss(keras_val_curve), evaluator, *callbacks],
        verbose=0,
    )
    wall = time.perf_counter() - start
    if not history.records:
        raise HypermodelError(
            "the hypermodel's fit() did not pass its callbacks on to model.fit; nothing measured."
        )
    return TrainingRun(dict(hp.values), seed, history, model.count_params(), wall, model)


class HypermodelObjective(Objective):
    """The Optuna objective of a ``[hypermodel]`` study; the flow is :class:`Objective`'s.

    The hypermodel is imported and probed at construction, so a bad one fails before the study
    is created. Trials record the same attributes as built-in ones, plus ``hp_values`` (the
    values the model was built with) and ``keras_val_curve``.

    Example:
        >>> study.optimize(HypermodelObjective(spec, data), n_trials=10)  # doctest: +SKIP
    """

    def __init__(
        self, spec: StudySpec, data: PreparedData, hypermodel: keras_tuner.HyperModel | None = None
    ) -> None:
        super().__init__(spec, data)
        label = str(spec.hypermodel.path or spec.hypermodel.module) if spec.hypermodel else ""
        self.hypermodel = hypermodel or load_hypermodel(spec)
        self.mirrors = probe_space(self.hypermodel, data, label or "hypermodel")

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        raise NotImplementedError("hypermodel trials sample while the hypermodel builds")

    def train(
        self,
        trial: optuna.Trial,
        *,
        seed: int,
        callbacks: list[keras.callbacks.Callback],
        history: History,
    ) -> TrainingRun:
        hp = OptunaHyperParameters(trial)
        keras_val: list[float | None] = []
        run = train_hypermodel(
            self.spec,
            self.data,
            self.hypermodel,
            hp,
            seed=seed,
            callbacks=[_RecordValues(trial, hp), *callbacks],
            history=history,
            keras_val_curve=keras_val,
        )
        trial.set_user_attr("hp_values", run.params)
        trial.set_user_attr("keras_val_curve", keras_val)
        return run


class _KeepKerasValLoss(keras.callbacks.Callback):
    """Keeps Keras' own ``val_loss`` before the measurement replaces it with the data loss."""

    def __init__(self, curve: list[float | None] | None) -> None:
        super().__init__()
        self._curve = curve

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get("val_loss")
        value = float(value) if value is not None and math.isfinite(float(value)) else None
        if logs is not None:
            logs["keras_val_loss"] = value
        if self._curve is not None:
            self._curve.append(value)


class _RecordValues(keras.callbacks.Callback):
    """Stores the trial's hyperparameter values when training starts (pruned trials keep them)."""

    def __init__(self, trial: optuna.Trial, hp: keras_tuner.HyperParameters) -> None:
        super().__init__()
        self._trial = trial
        self._hp = hp

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._trial.set_user_attr("hp_values", dict(self._hp.values))


class _Seen(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.epochs = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epochs += 1


@contextlib.contextmanager
def _explained(name: str) -> Iterator[None]:
    try:
        yield
    except (ValueError, TypeError) as exc:
        raise HypermodelError(f"hyperparameter {name!r}: {_one_line(exc)}") from None


def _guarded(label: str, what: str, call: Any) -> Any:
    try:
        return call()
    except HypermodelError:
        raise
    except Exception as exc:
        raise HypermodelError(
            f"{label}: {what} failed: {type(exc).__name__}: {_one_line(exc)}"
        ) from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."
