"""A Python search space (tuples, lists, values) as a study file's ``[space]``, with defaults.

Each key of the model family (see ``docs/study-files.md``) takes:

* ``(low, high)``: a range, integer or float by the key's kind; ``(low, high, "log")`` on a log
  scale; for ``l2`` and ``l1``, ``(low, high, "log", "zero")`` also allows exactly 0;
* a list: the choices;
* a single value: fixed;
* a dict: the study-file form as it is (``{"low": 4, "high": 512, "log": True}``).

Keys left out take :func:`default_space`'s value for the objective.

Example:
    >>> space_table({"units": (4, 512, "log"), "dropout": (0.0, 0.5), "layers": 2})["units"]
    {'low': 4, 'high': 512, 'log': True}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from search.errors import InputError
from search.spec.family import inactive_defaults
from search.spec.studyfile import HYPERPARAMETERS

__all__ = ["baseline_table", "default_space", "space_table"]

_FLAGS = ("log", "zero")
_PREFERRED = {
    "l1": 0.0,
    "l2": 0.0,
    "dropout": 0.0,
    "learning_rate": 1e-3,
    "batch_size": 32,
    "activation": "relu",
    "optimizer": "adam",
}


def default_space(objective: str, n_train: int) -> dict[str, Any]:
    """The space a key left out takes: regularization off for ``memorize``.

    Batch sizes above the training rows become full-batch (``n_train``).

    Example:
        >>> default_space("memorize", 21)["batch_size"]
        {'choices': [16, 21]}
    """
    batches = sorted({min(b, n_train) for b in (16, 32, 64, 128, 256)})
    space: dict[str, Any] = {
        "layers": {"low": 1, "high": 3},
        "units": {"low": 4, "high": 512, "log": True},
        "l2": {"low": 1e-6, "high": 1e-2, "log": True, "zero": True},
        "dropout": {"low": 0.0, "high": 0.5},
        "batch_size": {"choices": batches},
        "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
    }
    if objective == "memorize":  # regularization only fights memorization
        space |= {"l2": 0.0, "dropout": 0.0}
    return space


def _entry(key: str, value: Any) -> Any:
    kind = HYPERPARAMETERS[key][0]
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple):
        numbers = [v for v in value if not isinstance(v, str)]
        flags = [v for v in value if isinstance(v, str)]
        if len(numbers) != 2 or any(f not in _FLAGS for f in flags):
            raise InputError(
                f"space[{key!r}]={value!r}: a range is (low, high), optionally with 'log' (and "
                "'zero' for l1/l2); give a list for choices."
            )
        low, high = numbers
        if kind == "float":
            low, high = float(low), float(high)
        out: dict[str, Any] = {"low": low, "high": high}
        out |= {flag: True for flag in flags}
        return out
    if isinstance(value, list):
        return {"choices": list(value)}
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def space_table(space: Mapping[str, Any]) -> dict[str, Any]:
    """The study-file form of a Python space.

    Raises:
        InputError: A key the model family does not have, or a malformed range.
    """
    unknown = sorted(set(space) - set(HYPERPARAMETERS))
    if unknown:
        raise InputError(
            f"space key {unknown[0]!r} is not a parameter of the model family; use one of "
            f"{', '.join(HYPERPARAMETERS)}, or pass a KerasTuner build_model(hp) as space=."
        )
    return {key: _entry(key, value) for key, value in space.items()}


def _default_value(key: str, entry: Any) -> Any:
    preferred = _PREFERRED.get(key)
    if isinstance(entry, Mapping) and "choices" in entry:
        choices = list(entry["choices"])
        return preferred if preferred in choices else choices[0]
    if isinstance(entry, Mapping):
        low, high = entry["low"], entry["high"]
        if preferred is not None and (
            low <= preferred <= high or (preferred == 0 and entry.get("zero"))
        ):
            return preferred
        return low
    return entry


def baseline_table(
    baseline: Mapping[str, Any], space: Mapping[str, Any], number: int
) -> dict[str, Any]:
    """A baseline dict completed with a value for every searched key it leaves out.

    Keys left out take a plain default where the space allows it (no L2, no dropout, rate
    1e-3, batch 32), else the range's low end or the first choice; a sub-lever left out that
    does not apply to the baseline (``momentum`` of an ``adam`` one) is left out, as the study
    file then gives it its default.

    Example:
        >>> baseline_table({"units": 16}, {"units": {"low": 4, "high": 64}, "l2": 0.0}, 0)
        {'name': 'baseline_0', 'units': 16}
        >>> space = space_table({"optimizer": ["adam", "sgd"], "momentum": (0.5, 0.9)})
        >>> baseline_table({}, space, 1)
        {'name': 'baseline_1', 'optimizer': 'adam'}
        >>> baseline_table({"optimizer": "sgd"}, space, 2)
        {'name': 'baseline_2', 'momentum': 0.5, 'optimizer': 'sgd'}
    """
    out: dict[str, Any] = {"name": str(baseline.get("name", f"baseline_{number}"))}
    unknown = sorted(set(baseline) - set(HYPERPARAMETERS) - {"name", "epochs"})
    if unknown:
        raise InputError(
            f"baselines[{number}] has the key {unknown[0]!r}, which the model family does not "
            f"have; use keys of the space ({', '.join(space)})."
        )
    filled: list[str] = []
    for key, entry in space.items():
        if key in baseline or (key == "shape" and isinstance(baseline.get("units"), list)):
            continue  # a list of widths takes no shape (the study file picks one)
        if isinstance(entry, Mapping):
            out[key] = _default_value(key, entry)
            filled.append(key)
    out |= {
        k: (list(v) if isinstance(v, Sequence) and not isinstance(v, str) else v)
        for k, v in baseline.items()
        if k != "name"
    }
    values = {k: v for k, v in space.items() if not isinstance(v, (Mapping, list, tuple))} | out
    for key in inactive_defaults(values, filled):
        del out[key]
    return out
