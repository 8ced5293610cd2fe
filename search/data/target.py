"""The scale of a regression target, as the models train on it.

A network starts with outputs near 0 and moves them by about its learning rate per step, so a
target in large units (prices in dollars) is out of reach of every trial; ``standardize_target``
(``[data]`` of the ``file`` source, ``search.search(..., standardize_target=True)``) is the fix.
"""

from __future__ import annotations

import numpy as np

from search.data._dataset import Dataset

LARGE_TARGET = 10.0
"""A regression target whose mean or standard deviation is above this in magnitude is in large
units."""


def target_scale(dataset: Dataset) -> dict[str, float] | None:
    """A regression target's mean and standard deviation on the training rows (else ``None``).

    Example:
        >>> import numpy as np
        >>> ds = Dataset("d", "regression", np.zeros((2, 1)), np.array([[100.0], [300.0]]))
        >>> target_scale(ds)
        {'mean': 200.0, 'std': 100.0}
    """
    if dataset.task != "regression":
        return None
    y = np.asarray(dataset.y_train, dtype=np.float64)
    return {"mean": float(y.mean()), "std": float(y.std())}


def is_large(scale: dict[str, float] | None) -> bool:
    """Whether a :func:`target_scale` is in large units (``LARGE_TARGET``).

    Example:
        >>> is_large({"mean": 2e5, "std": 9e4}), is_large({"mean": 0.0, "std": 1.0}), is_large(None)
        (True, False, False)
    """
    return scale is not None and max(abs(scale["mean"]), scale["std"]) > LARGE_TARGET


def rescaling_option(source: str) -> str | None:
    """The ``[data]`` option of ``source`` that rescales its target, if it has one.

    Example:
        >>> rescaling_option("file"), rescaling_option("square"), rescaling_option("imdb")
        ('standardize_target', 'scale_target', None)
    """
    from search.data import DATA_SOURCES

    known = DATA_SOURCES.get(source)
    names = {option.name for option in known.options} if known is not None else set()
    return next((n for n in ("standardize_target", "scale_target") if n in names), None)


def large_target_warning(dataset: Dataset, source: str) -> str | None:
    """One line for the start of a search whose regression target is in large units.

    Only where the source can rescale it, and only while it is not rescaled.
    """
    scale, option = target_scale(dataset), rescaling_option(source)
    if not is_large(scale) or option is None or "target_mean" in dataset.reference:
        return None
    assert scale is not None
    python = " (standardize_target=True from Python)" if source == "arrays" else ""
    return (
        f"warning: the target is in large units (mean {scale['mean']:.3g}, std "
        f"{scale['std']:.3g}) and networks start with outputs near 0: set [data] {option} = "
        f"true{python} unless its scale is the question"
    )
