"""The searched model family's structure rules: per-layer widths and where batch normalization goes.

Pure Python, shared by the study-file validation, the model builder, ``export --code`` and the
parameter counts, so that all of them agree on which layer is how wide.

Widths (``shape``):

* ``"constant"`` (default): every hidden layer has ``units`` units;
* ``"funnel"``: widths shrink linearly from ``units`` at the first hidden layer to
  ``units / layers`` at the last (LCBench's MLP space shrinks them towards the output the same way);
* ``"free"``: one width per layer, the parameters ``units_1`` ... ``units_<layers>``, each sampled
  from the ``units`` range and only for the layers the trial has (KerasTuner users write
  ``hp.Int(f"units_{i}")``).

A baseline, or ``units`` fixed in ``[space]``, may also give the list itself: ``units = [32, 16]``.

Batch normalization (``batch_norm``, ``batch_norm_every``, ``batch_norm_position``): a
``BatchNormalization`` layer after every ``batch_norm_every``-th hidden layer, after its
activation by default (``"after"``: ``Dense(activation=...)`` then ``BatchNormalization()``, as
seed 000's answer writes it), or between the Dense product and the activation (``"before"``, as
in the original paper).

Sub-levers (:data:`CONDITIONS`): ``batch_norm_every`` and ``batch_norm_position`` apply only with
``batch_norm = true``, ``decay_rate`` only with ``schedule = "exponential"``, ``momentum`` only
with ``optimizer = "sgd"`` (the only optimizer given one) and ``nesterov`` only where ``momentum``
applies and is above 0. A study samples a sub-lever only when it applies, after its lever, as
Optuna's define-by-run spaces do; where it does not apply the trial's parameters carry its
:data:`DEFAULTS` value, which is no Optuna parameter.

Order of the rows (``shuffle``): each epoch's batches are cut from a fresh shuffle of the
training rows (default, Keras ``fit(shuffle=True)``) or from the rows in their stored order
(``shuffle = false``, ``fit(shuffle=False)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SHAPES = ("constant", "funnel", "free")
BATCH_NORM_POSITIONS = ("after", "before")
OUTPUT_ACTIVATIONS = ("linear", "sigmoid")
LOSSES = ("mse", "mae", "huber")
SCHEDULES = ("constant", "cosine", "exponential")

DEFAULTS: dict[str, Any] = {
    "shape": "constant",
    "l1": 0.0,
    "batch_norm": False,
    "batch_norm_every": 1,
    "batch_norm_position": "after",
    "output_activation": "linear",
    "loss": "mse",
    "schedule": "constant",
    "decay_rate": 0.9,
    "weight_decay": 0.0,
    "momentum": 0.0,
    "nesterov": False,
    "shuffle": True,
}
"""The value each lever has when a space or a baseline leaves it out (the model as before)."""


@dataclass(frozen=True)
class Condition:
    """When a sub-lever applies: ``applies`` of its lever's value (``parent``), said as ``when``."""

    parent: str
    applies: Callable[[Any], bool]
    when: str


CONDITIONS: dict[str, Condition] = {
    "batch_norm_every": Condition("batch_norm", bool, "batch_norm = true"),
    "batch_norm_position": Condition("batch_norm", bool, "batch_norm = true"),
    "decay_rate": Condition("schedule", lambda v: v == "exponential", 'schedule = "exponential"'),
    "momentum": Condition("optimizer", lambda v: v == "sgd", 'optimizer = "sgd"'),
    "nesterov": Condition("momentum", lambda v: float(v) > 0, "momentum > 0"),
}
"""Sub-lever -> the lever it depends on and the values of that lever where it applies.

A sub-lever whose lever is itself a sub-lever (``nesterov`` -> ``momentum`` -> ``optimizer``)
applies only where its lever does too. Every sub-lever has a :data:`DEFAULTS` value.
"""

_PARENT_DEFAULTS: dict[str, Any] = {"optimizer": "adam"}  # make_optimizer's default


def applies(name: str, params: Mapping[str, Any]) -> bool:
    """Whether lever ``name`` has an effect on the model of ``params`` (any non-sub-lever does).

    A lever left out of ``params`` counts as its default.

    Example:
        >>> applies("momentum", {"optimizer": "sgd"}), applies("momentum", {"optimizer": "adam"})
        (True, False)
        >>> applies("nesterov", {"optimizer": "sgd", "momentum": 0.0})
        False
        >>> applies("units", {})
        True
    """
    condition = CONDITIONS.get(name)
    if condition is None:
        return True
    parent = condition.parent
    value = params.get(parent, DEFAULTS.get(parent, _PARENT_DEFAULTS.get(parent)))
    return applies(parent, params) and condition.applies(value)


def inactive_defaults(params: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The default of each sub-lever among ``names`` that does not apply to ``params``.

    Example:
        >>> inactive_defaults({"optimizer": "adam", "momentum": 0.9}, ["momentum", "nesterov"])
        {'momentum': 0.0, 'nesterov': False}
    """
    return {n: DEFAULTS[n] for n in names if n in CONDITIONS and not applies(n, params)}


def sampling_order(names: Iterable[str]) -> list[str]:
    """``names`` in their order, except that a lever comes before its sub-levers.

    Example:
        >>> sampling_order(["nesterov", "momentum", "layers", "optimizer"])
        ['optimizer', 'momentum', 'nesterov', 'layers']
    """
    given = list(names)
    out: list[str] = []

    def place(name: str) -> None:
        if name in out:
            return
        condition = CONDITIONS.get(name)
        if condition is not None and condition.parent in given:
            place(condition.parent)
        out.append(name)

    for name in given:
        place(name)
    return out


def width_key(layer: int) -> str:
    """The parameter holding the width of hidden layer ``layer`` (1-based) of a ``free`` shape.

    Example:
        >>> width_key(2)
        'units_2'
    """
    return f"units_{layer}"


def funnel_widths(units: int, layers: int) -> list[int]:
    """Widths shrinking linearly from ``units`` to ``units / layers``, at least 1 each.

    Example:
        >>> funnel_widths(64, 4), funnel_widths(50, 1)
        ([64, 48, 32, 16], [50])
    """
    return [max(1, round(units * (layers - i) / layers)) for i in range(layers)]


def layer_widths(params: Mapping[str, Any]) -> list[int]:
    """The width of each hidden layer of a trial's parameters.

    ``units_<i>`` parameters (a ``free`` shape, or a baseline's list) win over ``units``; a list
    ``units`` is taken as it is.

    Example:
        >>> layer_widths({"layers": 2, "units": [32, 16]})
        [32, 16]
        >>> layer_widths({"layers": 3, "units": 60, "shape": "funnel"})
        [60, 40, 20]
        >>> layer_widths({"layers": 2, "units": 8, "shape": "free", "units_1": 5, "units_2": 3})
        [5, 3]
    """
    layers = int(params["layers"])
    units = params.get("units", 1)
    if all(width_key(i + 1) in params for i in range(layers)) and layers:
        return [int(params[width_key(i + 1)]) for i in range(layers)]
    if isinstance(units, Sequence) and not isinstance(units, str):
        widths = [int(u) for u in units]
        if len(widths) != layers:
            raise ValueError(
                f"units lists {len(widths)} widths for layers={layers}; give one width per layer."
            )
        return widths
    shape = params.get("shape", "constant")
    if shape == "funnel":
        return funnel_widths(int(units), layers)
    if shape == "free":
        missing = [width_key(i + 1) for i in range(layers) if width_key(i + 1) not in params]
        raise ValueError(f"shape = 'free' needs {missing[0]}; sample it or give units as a list.")
    return [int(units)] * layers


def batch_norm_after(params: Mapping[str, Any]) -> list[bool]:
    """For each hidden layer, whether a ``BatchNormalization`` layer follows it.

    Example:
        >>> batch_norm_after({"layers": 6, "batch_norm": True, "batch_norm_every": 5})
        [False, False, False, False, True, False]
    """
    layers = int(params["layers"])
    if not params.get("batch_norm", False):
        return [False] * layers
    every = int(params.get("batch_norm_every", 1))
    return [(i + 1) % every == 0 for i in range(layers)]


def count_parameters(params: Mapping[str, Any], *, n_features: int, n_outputs: int = 1) -> int:
    """Weights of the model ``params`` builds (batch normalization's four per unit included).

    Example:
        >>> count_parameters({"layers": 2, "units": [32, 16]}, n_features=1)
        609
        >>> count_parameters({"layers": 1, "units": 10, "batch_norm": True}, n_features=1)
        71
    """
    widths = layer_widths(params)
    total, fan_in = 0, n_features
    for width, norm in zip(widths, batch_norm_after(params), strict=True):
        total += fan_in * width + width + (4 * width if norm else 0)
        fan_in = width
    return total + fan_in * n_outputs + n_outputs


def describe_widths(params: Mapping[str, Any]) -> str:
    """``"3 x 20"`` for equal widths, else ``"32-16"``.

    Example:
        >>> describe_widths({"layers": 3, "units": 20})
        '3 x 20'
        >>> describe_widths({"layers": 2, "units": [32, 16]})
        '32-16'
    """
    widths = layer_widths(params)
    if not widths:
        return "no hidden layer"
    if len(set(widths)) == 1:
        return f"{len(widths)} x {widths[0]}"
    return "-".join(str(w) for w in widths)
