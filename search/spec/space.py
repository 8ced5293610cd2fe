"""Search-space parameters: typed, validated at load, and sampled through an Optuna trial.

A study file's ``[space]`` table maps each model hyperparameter to one of:

* an integer range  ``units = { low = 4, high = 512, log = true }``
* a float range     ``l2 = { low = 1e-6, high = 1e-2, log = true, zero = true }``
* a choice          ``batch_size = { choices = [64, 128, 512] }``
* a fixed value     ``layers = 2``

``zero = true`` lets a log-scale range also take the value 0 (no penalty at all): Optuna samples a
boolean ``use_<name>`` first and the log-scale value only when it is true, so TPE keeps a proper
log-scale model of the non-zero values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Union, cast

from search.errors import SpaceError

if TYPE_CHECKING:
    import optuna

Scalar = Union[int, float, str, bool]


@dataclass(frozen=True)
class IntRange:
    """Integers in ``[low, high]``, optionally on a log scale or with a step.

    Example:
        >>> IntRange(low=1, high=4).to_dict()
        {'low': 1, 'high': 4}
    """

    low: int
    high: int
    log: bool = False
    step: int = 1

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise SpaceError(f"range reversed: low={self.low} > high={self.high}; swap them.")
        if self.log and self.low < 1:
            raise SpaceError(f"log scale needs low >= 1, got low={self.low}.")
        if self.step < 1:
            raise SpaceError(f"step must be a positive integer, got step={self.step}.")
        if self.log and self.step != 1:
            raise SpaceError("log scale and step cannot be combined; drop one of them.")

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log, step=self.step)

    def contains(self, value: Any) -> bool:
        return _is_int(value) and self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step != 1:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class FloatRange:
    """Floats in ``[low, high]``, optionally log scale; ``zero=True`` also allows exactly 0.

    Example:
        >>> FloatRange(low=1e-5, high=1e-2, log=True, zero=True).to_dict()
        {'low': 1e-05, 'high': 0.01, 'log': True, 'zero': True}
    """

    low: float
    high: float
    log: bool = False
    zero: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise SpaceError(f"low and high must be finite numbers, got {self.low}, {self.high}.")
        if self.low > self.high:
            raise SpaceError(f"range reversed: low={self.low} > high={self.high}; swap them.")
        if self.log and self.low <= 0:
            raise SpaceError(
                f"log scale needs low > 0, got low={self.low}; "
                "use a small positive low and `zero = true` to also allow 0."
            )

    def flag_name(self, name: str) -> str:
        return f"use_{name}"

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        if self.zero and not trial.suggest_categorical(self.flag_name(name), [True, False]):
            return 0.0
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def contains(self, value: Any) -> bool:
        if not _is_number(value):
            return False
        return (self.zero and value == 0) or self.low <= value <= self.high

    def optuna_params(self, name: str, value: float) -> dict[str, Any]:
        """The Optuna parameters that reproduce ``value`` (for enqueuing a baseline)."""
        if not self.zero:
            return {name: value}
        if value == 0:
            return {self.flag_name(name): False}
        return {self.flag_name(name): True, name: value}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.zero:
            out["zero"] = True
        return out


@dataclass(frozen=True)
class Choice:
    """One of a list of values.

    Example:
        >>> Choice(choices=(64, 512)).to_dict()
        {'choices': [64, 512]}
    """

    choices: tuple[Scalar, ...]

    def __post_init__(self) -> None:
        if not self.choices:
            raise SpaceError("choices is empty; list at least one value.")
        if len(set(self.choices)) != len(self.choices):
            raise SpaceError(f"choices has duplicates: {list(self.choices)}.")

    def suggest(self, trial: optuna.Trial, name: str) -> Scalar:
        # Optuna types the result as any categorical value (None included); it is one of
        # ``self.choices``, which are all scalars.
        return cast(Scalar, trial.suggest_categorical(name, list(self.choices)))

    def contains(self, value: Any) -> bool:
        return value in self.choices

    def to_dict(self) -> dict[str, Any]:
        return {"choices": list(self.choices)}


@dataclass(frozen=True)
class Fixed:
    """A value that is not searched (it is still recorded on every trial).

    ``units`` may be fixed to a tuple of widths, one per hidden layer.
    """

    value: Scalar | tuple[int, ...]

    def suggest(self, trial: optuna.Trial, name: str) -> Scalar | tuple[int, ...]:
        return self.value

    def contains(self, value: Any) -> bool:
        if isinstance(self.value, tuple) and isinstance(value, (list, tuple)):
            return tuple(value) == self.value
        return bool(value == self.value)

    def to_dict(self) -> Scalar | list[int]:
        return list(self.value) if isinstance(self.value, tuple) else self.value


Param = Union[IntRange, FloatRange, Choice, Fixed]


def optuna_params_for(param: Param, name: str, value: Any) -> dict[str, Any]:
    """The Optuna trial parameters that make ``param.suggest`` return ``value``."""
    if isinstance(param, Fixed):
        return {}
    if isinstance(param, FloatRange):
        return param.optuna_params(name, float(value))
    return {name: value}


Kind = Literal["int", "float", "str", "bool"]
_KIND_CHECKS = {
    "int": lambda v: _is_int(v),
    "float": lambda v: _is_number(v),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
}
_KIND_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


def param_from_config(raw: Any, *, kind: Kind) -> Param:
    """Build a parameter from its study-file form.

    Args:
        raw: A table with ``low``/``high`` (and ``log``, ``step``, ``zero``) or ``choices``, or a
            scalar for a fixed value.
        kind: The hyperparameter's value type; ``"str"`` ones take only choices or a fixed value.

    Raises:
        SpaceError: The definition is invalid.

    Example:
        >>> param_from_config({"low": 1, "high": 3}, kind="int")
        IntRange(low=1, high=3, log=False, step=1)
    """
    is_kind = _KIND_CHECKS[kind]
    if isinstance(raw, (bool, int, float, str)):
        if not is_kind(raw):
            raise SpaceError(f"expected {_KIND_NAMES[kind]}, got {raw!r}.")
        return Fixed(float(raw) if kind == "float" else raw)
    if not isinstance(raw, Mapping):
        raise SpaceError(
            f"expected a value, a {{low, high}} table or a {{choices}} table, got {raw!r}."
        )
    if "choices" in raw:
        _reject_unknown(raw, {"choices"})
        choices = raw["choices"]
        if not isinstance(choices, list):
            raise SpaceError(f"choices must be a list, got {choices!r}.")
        if not all(is_kind(c) for c in choices):
            raise SpaceError(f"every choice must be {_KIND_NAMES[kind]}, got {choices!r}.")
        return Choice(tuple(choices))
    if "low" not in raw or "high" not in raw:
        raise SpaceError("a range needs both `low` and `high` (or give `choices`).")
    if kind in ("str", "bool"):
        raise SpaceError(f"{kind} values take `choices` or a fixed value, not a range.")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(f"log must be true or false, got {log!r}.")
    if kind == "int":
        _reject_unknown(raw, {"low", "high", "log", "step"})
        low, high, step = raw["low"], raw["high"], raw.get("step", 1)
        for key, value in (("low", low), ("high", high), ("step", step)):
            if not _is_int(value):
                raise SpaceError(f"{key} must be an integer, got {value!r}.")
        return IntRange(low=low, high=high, log=log, step=step)
    _reject_unknown(raw, {"low", "high", "log", "zero"})
    low, high, zero = raw["low"], raw["high"], raw.get("zero", False)
    for key, value in (("low", low), ("high", high)):
        if not _is_number(value):
            raise SpaceError(f"{key} must be a number, got {value!r}.")
    if not isinstance(zero, bool):
        raise SpaceError(f"zero must be true or false, got {zero!r}.")
    return FloatRange(low=float(low), high=float(high), log=log, zero=zero)


def _reject_unknown(raw: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise SpaceError(f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}.")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
