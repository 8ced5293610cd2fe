"""The regularizers an ablation can switch off: one row per lever of the model family.

A new lever (L1, batch normalization, weight decay) is one more :class:`Regularizer` in
:data:`REGULARIZERS`: the parameter that holds it and the value that turns it off. The verdict
ablates each one the best trial uses (its value differs from ``off``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Regularizer:
    """A lever of the model family that regularizes, and how to turn it off.

    Attributes:
        name: What the verdict calls it.
        param: The model parameter that holds it.
        off: The value of ``param`` that disables it.
    """

    name: str
    param: str
    off: Any

    def used_by(self, params: Mapping[str, Any]) -> bool:
        """Whether a configuration uses this regularizer.

        Example:
            >>> Regularizer("L2", "l2", 0.0).used_by({"l2": 1e-4}), L2.used_by({"l2": 0.0})
            (True, False)
        """
        value = params.get(self.param, self.off)
        return bool(value) and value != self.off

    def switched_off(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The configuration with this regularizer off, everything else kept."""
        return {**params, self.param: self.off}


L2 = Regularizer("L2", "l2", 0.0)
DROPOUT = Regularizer("dropout", "dropout", 0.0)

REGULARIZERS: tuple[Regularizer, ...] = (
    L2,
    DROPOUT,
    Regularizer("L1", "l1", 0.0),
    Regularizer("batch normalization", "batch_norm", False),
    Regularizer("weight decay", "weight_decay", 0.0),
)
"""Every lever the ablation knows; those a configuration lacks are skipped."""


def used_regularizers(params: Mapping[str, Any]) -> list[Regularizer]:
    """The regularizers ``params`` uses, in table order.

    Example:
        >>> [r.name for r in used_regularizers({"l2": 1e-3, "dropout": 0.0, "units": 8})]
        ['L2']
    """
    return [r for r in REGULARIZERS if r.used_by(params)]
