"""The in-memory form every data source returns, and the declaration of a data source."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse

    Features = Union[np.ndarray, "scipy.sparse.csr_matrix"]
else:
    Features = Any

Task = Literal["regression", "binary", "multiclass"]


@dataclass
class Dataset:
    """Train, validation and (optionally) test arrays of one data set, ready for a model.

    ``x_*`` are float32 arrays of shape ``(n, n_features)`` or, for multi-hot text, float32
    ``scipy.sparse.csr_matrix``. ``y_*`` are float32 of shape ``(n, 1)`` for regression and binary
    tasks, int64 class indices of shape ``(n,)`` for multi-class ones.

    The test split, when present, is never used by the search: it scores the best trial once.
    """

    name: str
    task: Task
    x_train: Features
    y_train: np.ndarray
    x_val: Features | None = None
    y_val: np.ndarray | None = None
    x_test: Features | None = None
    y_test: np.ndarray | None = None
    n_classes: int = 2
    description: str = ""
    # Extra facts a trial may compare itself with, e.g. least-squares coefficients.
    reference: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def is_sparse(self) -> bool:
        return not isinstance(self.x_train, np.ndarray)

    @property
    def has_validation(self) -> bool:
        return self.x_val is not None and self.y_val is not None


@dataclass(frozen=True)
class DataContext:
    """Where loaders look for local files and where they cache prepared arrays.

    Args:
        data_dir: A folder given by ``--data-dir`` or ``CAPSEARCH_DATA``; ``None`` when unset.
        cache_dir: Folder for prepared arrays (``storage/cache`` by default).
        base_dir: Folder that relative paths in a study file are resolved against.
        offline: When true, loaders never try to download.
    """

    data_dir: Path | None
    cache_dir: Path
    base_dir: Path
    offline: bool = False


@dataclass(frozen=True)
class Option:
    """One option of a data source, as written under ``[data]`` in a study file.

    ``check`` returns a problem description (rule, value, fix) or ``None`` when the value is valid.
    """

    name: str
    kind: type | tuple[type, ...]
    default: Any
    help: str
    check: Callable[[Any], str | None] | None = None


@dataclass(frozen=True)
class DataSource:
    """A named data set a study file can ask for with ``[data] source = "<name>"``."""

    name: str
    summary: str
    options: tuple[Option, ...]
    load: Callable[[Mapping[str, Any], DataContext], Dataset]
