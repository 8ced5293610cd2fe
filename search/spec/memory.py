"""Will the largest model of a space fit in memory? Checked when a study loads, not per trial.

A space whose widest, deepest model needs more memory than the host has would otherwise fail
every trial after allocating for a long time (``units = 10**9``: more than 8 GB per trial). The
estimate is a lower bound on what training needs: parameter count x 4 bytes (float32) x (the
weights, their gradients and the optimizer's slots: 2 for Adam, AdamW and Nadam, 1 for
RMSprop, SGD with momentum and Adagrad). A study file is checked with one input feature (or the
vocabulary of a text source), the prepared data again with its real feature count.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.errors import StudyFileError
from search.spec.space import Choice, Fixed, FloatRange, IntRange

if TYPE_CHECKING:
    from search.spec.studyfile import StudySpec

__all__ = [
    "BYTES_PER_PARAMETER",
    "OPTIMIZER_SLOTS",
    "check_model_fits",
    "host_memory_bytes",
    "largest_param_count",
    "training_bytes",
]

BYTES_PER_PARAMETER = 4
"""float32 weights."""

OPTIMIZER_SLOTS = {"adam": 2, "adamw": 2, "nadam": 2, "rmsprop": 1, "sgd": 1, "adagrad": 1}
"""Per-parameter state each optimizer keeps (Adam: two moments; RMSprop: one average)."""

_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)


def _largest(param: Any, default: int) -> int:
    """The largest whole value ``param`` can take (``default`` when it is not numeric)."""
    if param is None:
        return default
    if isinstance(param, (IntRange, FloatRange)):
        return int(param.high)
    if isinstance(param, Choice):
        numbers = [int(c) for c in param.choices if isinstance(c, (int, float))]
        return max(numbers, default=default)
    if isinstance(param, Fixed):
        value = param.value
        if isinstance(value, tuple):
            return max(value, default=default)
        return int(value) if isinstance(value, (int, float)) else default
    return default


def largest_param_count(spec: StudySpec, n_features: int = 1, n_outputs: int = 1) -> int:
    """Parameters of the space's widest, deepest Dense stack on ``n_features`` inputs.

    Example:
        >>> from types import SimpleNamespace
        >>> space = {"layers": IntRange(1, 3), "units": IntRange(4, 100)}
        >>> largest_param_count(SimpleNamespace(space=space), n_features=10)
        21401
    """
    layers = _largest(spec.space.get("layers"), 1)
    units = _largest(spec.space.get("units"), 1)
    if layers <= 0:
        return n_features * n_outputs + n_outputs
    first = n_features * units + units
    hidden = (layers - 1) * (units * units + units)
    return first + hidden + units * n_outputs + n_outputs


def _slots(spec: StudySpec) -> int:
    param = spec.space.get("optimizer")
    if isinstance(param, Choice):
        names = [str(c) for c in param.choices]
    elif isinstance(param, Fixed):
        names = [str(param.value)]
    else:
        names = ["adam"]
    return max(OPTIMIZER_SLOTS.get(name, 2) for name in names)


def training_bytes(spec: StudySpec, n_features: int = 1, n_outputs: int = 1) -> int:
    """Lower bound of the memory the largest model needs to train (see the module)."""
    count = largest_param_count(spec, n_features, n_outputs)
    return count * BYTES_PER_PARAMETER * (2 + _slots(spec))


def host_memory_bytes() -> int | None:
    """This host's memory, or the container's limit when lower; None if it cannot be read.

    Example:
        >>> (host_memory_bytes() or 1) > 0
        True
    """
    found: list[int] = []
    with contextlib.suppress(ValueError, OSError, AttributeError):
        found.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            found.append(int(text))
    return min(found) if found else None


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PB"


def check_model_fits(
    spec: StudySpec, n_features: int = 1, n_outputs: int = 1, memory: int | None = None
) -> None:
    """Refuse a space whose largest model cannot be trained in this host's memory.

    Args:
        spec: The study (a hypermodel study has no space here and always passes).
        n_features: Inputs of the model (1 when the data is not loaded yet: a lower bound).
        n_outputs: Outputs of the model.
        memory: Bytes available (default :func:`host_memory_bytes`).

    Raises:
        StudyFileError: The estimate exceeds ``memory``; the message names the model's size.
    """
    if spec.hypermodel is not None or "units" not in spec.space:
        return
    memory = host_memory_bytes() if memory is None else memory
    if memory is None:
        return
    needed = training_bytes(spec, n_features, n_outputs)
    if needed <= memory:
        return
    count = largest_param_count(spec, n_features, n_outputs)
    layers = _largest(spec.space.get("layers"), 1)
    units = _largest(spec.space.get("units"), 1)
    raise StudyFileError(
        str(spec.path),
        "space.units",
        f"the largest model ({layers} x {units} units on {n_features} inputs: {count:,} "
        f"parameters) needs at least {_size(needed)} to train (weights, gradients and optimizer "
        f"state in float32) but this host has {_size(memory)}; lower units.high or layers.high",
    )
