"""A study's own ``[space]`` as a KerasTuner hypermodel, so ``capsearch kt`` runs any study.

:func:`declare_space` declares each key of the ``[space]`` with KerasTuner's ``hp`` calls, under
the names and ranges the Optuna study samples (:meth:`~search.spec.studyfile.StudySpec.suggest`):

* ``IntRange``: ``hp.Int(name, low, high, step=step)``, ``sampling="log"`` for ``log = true``;
* ``FloatRange``: ``hp.Float(name, low, high)``, ``sampling="log"`` for ``log = true``; with
  ``zero = true``, ``hp.Boolean("use_<name>")`` first and the ``hp.Float`` under
  ``hp.conditional_scope("use_<name>", [True])`` (the value is 0.0 when the flag is off), as
  Optuna samples ``use_<name>`` then the value;
* ``Choice``: ``hp.Choice(name, values)``; ``[false, true]`` is ``hp.Boolean(name)`` and a single
  value ``hp.Fixed``;
* ``Fixed``: ``hp.Fixed(name, value)``; a list of widths ``units = [32, 16]`` is
  ``hp.Fixed("units_<i>", width)`` per layer;
* ``shape = "free"``: ``units_1`` ... ``units_<max layers>`` from ``units``' range (``hp.Int`` or
  ``hp.Choice``), declared when the trial's shape is free (KerasTuner's idiom of declaring a
  layer's width where it is built), each under ``hp.conditional_scope("layers", depths >= i)``
  so a layer the trial does not have samples nothing;
* a sub-lever (``batch_norm_every`` and ``batch_norm_position``, ``decay_rate``, ``momentum``,
  ``nesterov``: :data:`~search.spec.family.CONDITIONS`): after its lever, under
  ``hp.conditional_scope(lever, values where it applies)`` (``use_<lever>`` for a ``zero`` range),
  nested in its lever's own scope; where it does not apply the model gets its default.

:class:`SpaceHyperModel` then builds the model with
:func:`~search.training.model.build_model`, the model ``capsearch run`` trains for the same
parameters, and its ``fit`` passes the trial's ``batch_size`` (and ``shuffle``, where the space
has it) to ``model.fit``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import keras
import keras_tuner

from search.errors import HypermodelError
from search.kerastuner.hyperparameters import fixed_hyperparameters
from search.spec.family import CONDITIONS, applies, inactive_defaults, sampling_order, width_key
from search.spec.space import Choice, Fixed, FloatRange, IntRange, Param
from search.spec.studyfile import HYPERPARAMETERS
from search.training.model import build_model
from search.training.prepared import steps_per_execution

if TYPE_CHECKING:
    from search.spec.studyfile import StudySpec
    from search.training.prepared import PreparedData

FIT_KEYS = ("batch_size", "shuffle")
"""Keys of the space that are ``model.fit`` arguments rather than parts of the model."""


def declare_space(space: Mapping[str, Param], hp: keras_tuner.HyperParameters) -> dict[str, Any]:
    """Declare a study's ``[space]`` on ``hp``; return the model parameters of ``hp``'s values.

    Keys are declared in the order Optuna samples them (a lever before its sub-levers); a
    sub-lever under ``hp.conditional_scope`` on its lever's values where it applies
    (:data:`~search.spec.family.CONDITIONS`), and at its default where it does not, as
    :meth:`~search.spec.studyfile.StudySpec.suggest` does. Declaring again (KerasTuner's ``fit``
    after ``build``) returns the same values.

    Args:
        space: A study's ``space`` (:attr:`~search.spec.studyfile.StudySpec.space`).
        hp: KerasTuner's hyperparameters of the trial.

    Returns:
        The parameters :func:`~search.training.model.build_model` takes (a ``zero`` range that
        is off is 0.0; ``units_<i>`` only for the layers of a ``free`` shape).

    Example:
        >>> hp = keras_tuner.HyperParameters()
        >>> declare_space({"layers": IntRange(1, 3), "l2": FloatRange(1e-5, 1e-2, True, True)}, hp)
        {'layers': 1, 'l2': 0.0}
        >>> [h.name for h in hp.space]
        ['layers', 'use_l2', 'l2']
    """
    params: dict[str, Any] = {}
    for name in sampling_order(space):
        param = space[name]
        if name == "units" and isinstance(param, Fixed) and isinstance(param.value, tuple):
            for i, width in enumerate(param.value):  # a list of widths: one fixed width a layer
                params[width_key(i + 1)] = hp.Fixed(width_key(i + 1), int(width))
            continue
        scopes = _scopes(space, name)
        if scopes is None:
            continue  # a sub-lever that never applies: its default, below
        with contextlib.ExitStack() as stack:
            for parent, values in scopes:
                stack.enter_context(hp.conditional_scope(parent, values))
            value = _declare(hp, name, param)
        if value is not None:  # None: an inactive scope
            params[name] = value
    units = space.get("units")
    if params.get("shape") == "free" and isinstance(units, (IntRange, Choice)):
        depths = _values_of(space["layers"])
        for i in range(1, max(depths, default=0) + 1):
            with hp.conditional_scope("layers", [d for d in depths if d >= i]):
                width = _declare(hp, width_key(i), units)
            if width is not None:  # None: the trial has fewer layers
                params[width_key(i)] = width
    return params | inactive_defaults(params, space)


def _scopes(space: Mapping[str, Param], name: str) -> list[tuple[str, list[Any]]] | None:
    """The conditional scopes, outermost first, a key is declared in; ``None``: never applies.

    A sub-lever's scope is on its lever: the lever's choices where it applies (or the lever's
    ``use_<lever>`` flag, for a ``zero`` range), inside the lever's own scopes.

    Example:
        >>> space = {"optimizer": Choice(("adam", "sgd")), "momentum": FloatRange(0.0, 0.9)}
        >>> _scopes(space, "momentum"), _scopes(space, "nesterov")
        ([('optimizer', ['sgd'])], [('optimizer', ['sgd'])])
        >>> _scopes({"optimizer": Fixed("adam")}, "momentum") is None
        True
    """
    condition = CONDITIONS.get(name)
    if condition is None:
        return []
    parent = condition.parent
    outer = _scopes(space, parent)
    if outer is None:
        return None
    param = space.get(parent)
    if param is None:  # the lever is not searched: its default decides
        return outer if applies(name, {}) else None
    if isinstance(param, FloatRange):
        # A range applies throughout or nowhere (momentum > 0 on [0, 0.9] is all but one
        # point); with `zero`, the flag chooses between the range and 0.
        in_range, at_zero = condition.applies(param.high), condition.applies(0.0)
        if param.zero and in_range != at_zero:
            return [*outer, (param.flag_name(parent), [in_range])]
        return outer if in_range else None
    values = _values_of(param)
    where = [v for v in values if condition.applies(v)]
    if not where:
        return None
    return outer if len(where) == len(values) else [*outer, (parent, where)]


def used_values(space: Mapping[str, Param], values: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters of ``values`` that a model of the space was built with.

    Leaves out what the trial did not use: values KerasTuner's oracle keeps for a scope that is
    off (the strength of a ``zero`` range whose flag is off, widths of a ``free`` shape in a
    ``constant`` trial) and its own ``tuner/`` bookkeeping.

    Example:
        >>> space = {"layers": IntRange(1, 3), "l2": FloatRange(1e-5, 1e-2, True, True)}
        >>> used_values(space, {"layers": 1, "use_l2": False, "l2": 1e-3, "tuner/epochs": 2})
        {'layers': 1, 'use_l2': False}
    """
    hp = fixed_hyperparameters(values)
    declare_space(space, hp)
    return {h.name: hp.values[h.name] for h in hp.space if hp.is_active(h)}


def _declare(hp: keras_tuner.HyperParameters, name: str, param: Param) -> Any:
    """One key's ``hp`` call (its value, or None in an inactive scope)."""
    kind = HYPERPARAMETERS[name][0] if name in HYPERPARAMETERS else "int"  # units_<i>: ints
    if isinstance(param, IntRange):
        if param.log:  # KerasTuner's log step is a factor; IntRange has none with log
            return hp.Int(name, param.low, param.high, sampling="log")
        return hp.Int(name, param.low, param.high, step=param.step)
    if isinstance(param, FloatRange):
        sampling = "log" if param.log else "linear"
        if not param.zero:
            return hp.Float(name, param.low, param.high, sampling=sampling)
        flag = param.flag_name(name)
        hp.Boolean(flag)
        with hp.conditional_scope(flag, [True]):
            value = hp.Float(name, param.low, param.high, sampling=sampling)
        return 0.0 if value is None else value
    if isinstance(param, Choice):
        values = [_typed(kind, v) for v in param.choices]
        if all(isinstance(v, bool) for v in values) and len(values) == 2:
            return hp.Boolean(name)
        if len(values) == 1:  # KerasTuner's Choice needs two values to choose from
            return hp.Fixed(name, values[0])
        return hp.Choice(name, values)
    if isinstance(param.value, tuple):
        raise HypermodelError(
            f"space.{name}: a list {list(param.value)} is only allowed for units; give one value."
        )
    return hp.Fixed(name, _typed(kind, param.value))


def _typed(kind: str, value: Any) -> Any:
    """A study value in its key's type: KerasTuner refuses a ``Choice`` mixing 0 and 0.5."""
    return float(value) if kind == "float" else value


def _values_of(param: Param) -> list[Any]:
    """Every value a key with no float range can take (``layers``, a lever with choices)."""
    if isinstance(param, IntRange):
        return list(range(param.low, param.high + 1, param.step))
    if isinstance(param, Choice):
        return list(param.choices)
    assert isinstance(param, Fixed)
    return [param.value]


class SpaceHyperModel(keras_tuner.HyperModel):
    """The Dense-stack model family of a study's ``[space]`` as a ``keras_tuner.HyperModel``.

    Args:
        spec: A study with a ``[space]`` (no ``[hypermodel]``).
        data: Its prepared data: the input width, task and sparseness of the model, and the
            training rows an epoch's optimizer steps are counted in (the schedules decay by it).
        epochs: Epochs of the longest trial (the cosine schedule's horizon); default the study's.

    Raises:
        HypermodelError: The study has ``training.steps_per_epoch``, which KerasTuner's
            ``model.fit`` on the arrays (one pass an epoch) cannot follow.

    Example:
        >>> import numpy as np
        >>> from search.data import Dataset
        >>> from search.spec.studyfile import load_study
        >>> from search.training.prepared import PreparedData
        >>> x, y = np.ones((32, 8), "float32"), np.ones((32, 1), "float32")
        >>> data = PreparedData(Dataset("pima-like", "binary", x, y, x, y))
        >>> hypermodel = SpaceHyperModel(load_study("pima_generalize"), data)
        >>> model = hypermodel.build(fixed_hyperparameters({"layers": 2, "units": 16}))
        >>> [layer.name for layer in model.layers]
        ['features', 'hidden_1', 'hidden_2', 'output']
    """

    def __init__(self, spec: StudySpec, data: PreparedData, *, epochs: int | None = None) -> None:
        super().__init__(name=spec.name)
        if spec.training.steps_per_epoch is not None:
            raise HypermodelError(
                f"study {spec.name}: training.steps_per_epoch = {spec.training.steps_per_epoch} "
                "is not supported by capsearch kt (KerasTuner's fit makes an epoch one pass over "
                "the rows); remove it from a copy of the study to compare."
            )
        self.space = dict(spec.space)
        self.data = data
        self.epochs = epochs or spec.training.epochs
        self.seed = spec.training.seed

    def model_params(self, hp: keras_tuner.HyperParameters) -> dict[str, Any]:
        """The parameters of ``hp``'s values (declaring the space on ``hp`` if it is new)."""
        return declare_space(self.space, hp)

    def used_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The hyperparameters a model of ``values`` was built with (see :func:`used_values`)."""
        return used_values(self.space, values)

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """The compiled model ``capsearch run`` trains for the trial's parameters."""
        params = self.model_params(hp)
        dataset = self.data.dataset
        steps = self.data.steps_per_epoch(int(params["batch_size"]))
        return build_model(
            params,
            n_features=dataset.n_features,
            task=dataset.task,
            n_classes=dataset.n_classes,
            sparse=dataset.is_sparse,
            seed=self.seed,
            steps_per_execution=steps_per_execution(steps),
            steps_per_epoch=steps,
            epochs=self.epochs,
        )

    def fit(
        self, hp: keras_tuner.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any
    ) -> Any:
        """``model.fit`` with the trial's batch size (and shuffling); the tuner's arguments pass."""
        params = self.model_params(hp)
        if "shuffle" in params:
            kwargs["shuffle"] = bool(params["shuffle"])
        return model.fit(*args, batch_size=int(params["batch_size"]), **kwargs)
