"""Checking the options a study file gives a data source: names, types, ranges and defaults."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from search.data._dataset import DataSource, Option
from search.errors import OptionError

Check = Callable[[Any], "str | None"]


class _Required:
    """Marks an option that has no default and must be given."""

    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()
"""Default of an option the study file must set."""


def int_range(low: int, high: int | None = None) -> Check:
    """Return a check that accepts integers in ``[low, high]`` (no upper bound when ``None``).

    Example:
        >>> int_range(100, 100000)(50)
        'must be between 100 and 100000, got 50; choose a value in that range'
    """

    def check(value: int) -> str | None:
        if value < low or (high is not None and value > high):
            rule = f"between {low} and {high}" if high is not None else f"at least {low}"
            return f"must be {rule}, got {value}; choose a value in that range"
        return None

    return check


def float_range(
    low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = False
) -> Check:
    """Return a check that accepts numbers in an interval, e.g. ``(0, 0.5]``.

    Args:
        low: The lower bound.
        high: The upper bound, or ``None`` for none.
        low_open: Whether ``low`` itself is excluded.
        high_open: Whether ``high`` itself is excluded.
    """

    def check(value: float) -> str | None:
        below = value <= low if low_open else value < low
        above = high is not None and (value >= high if high_open else value > high)
        if below or above:
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            interval = f"{left}{low}, {high}{right}" if high is not None else f"{left}{low}, inf)"
            return f"must be in {interval}, got {value}; choose a value in that interval"
        return None

    return check


def one_of(*choices: str) -> Check:
    """Return a check that accepts only the given strings."""

    def check(value: str) -> str | None:
        if value not in choices:
            return f"must be one of {', '.join(choices)}, got {value!r}"
        return None

    return check


def _main_kind(option: Option) -> type:
    return option.kind[0] if isinstance(option.kind, tuple) else option.kind


def coerce(option: Option, value: Any) -> Any:
    """Convert ``value`` to the option's kind, or raise :class:`OptionError`.

    Integers accept ``5000``, ``5000.0`` and ``"5000"``; floats accept integers and numeric strings
    (not ``nan`` or ``inf``); booleans accept ``true``/``false`` and the strings ``"true"`` and
    ``"false"``; string lists accept one string as a list of one.

    Args:
        option: The option's declaration.
        value: The value from the study file or the command line.

    Returns:
        The value as the option's kind.
    """
    kind = _main_kind(option)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise OptionError(option.name, f"expected true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise OptionError(option.name, f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise OptionError(option.name, f"expected an integer, got {value!r}")
    if kind is float:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
        if number is None or not math.isfinite(number):
            raise OptionError(option.name, f"expected a finite number, got {value!r}")
        return number
    if kind is str:
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, str):
            return value
        raise OptionError(option.name, f"expected a string, got {value!r}")
    if kind is list:
        if isinstance(value, str):
            return [value]
        if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
            return list(value)
        raise OptionError(option.name, f"expected a list of strings, got {value!r}")
    raise TypeError(f"option {option.name!r} has an unsupported kind {kind!r}")


def validate_options(data_source: DataSource, options: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``options`` against a source's declarations and fill in the defaults.

    A ``source`` key, as a whole ``[data]`` table carries, is ignored.

    Args:
        data_source: The source whose options these are.
        options: Option values by name.

    Returns:
        Every option of the source, by name, as its declared kind.

    Raises:
        OptionError: An option is unknown, required and missing, of the wrong type or out of range.
    """
    declared = {option.name: option for option in data_source.options}
    for name in options:
        if name != "source" and name not in declared:
            known = ", ".join(declared) or "none"
            raise OptionError(
                name, f"unknown option {name!r} for source {data_source.name!r}; known: {known}"
            )
    result: dict[str, Any] = {}
    for name, option in declared.items():
        if name not in options:
            if option.default is REQUIRED:
                raise OptionError(
                    name, f"missing; source {data_source.name!r} requires it ({option.help})"
                )
            default = option.default
            result[name] = list(default) if isinstance(default, list) else default
            continue
        value = coerce(option, options[name])
        if option.check is not None:
            problem = option.check(value)
            if problem is not None:
                raise OptionError(name, problem)
        result[name] = value
    return result
