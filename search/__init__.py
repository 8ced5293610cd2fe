"""capsearch: Optuna search over the capacity and regularization of Keras models.

The public API. Names are imported on first use (as Optuna does for its visualization
package), so ``import search`` and ``capsearch --help`` stay light: TensorFlow is imported only
when a search, a re-run or an export really starts.

Example:
    >>> import search
    >>> search.load_study("overfit30_memorize").objective
    'memorize'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from search.errors import (
    DataError,
    FatalError,
    InputError,
    SearchError,
    StorageError,
    StudyFileError,
    StudyMismatchError,
    StudyNotFoundError,
    TrialFailure,
)
from search.spec import StudySpec, known_studies, load_study

if TYPE_CHECKING:
    from search.api import SearchResult, search
    from search.engine.stored import model_params
    from search.runs import SearchOptions, SearchRun, WorkerOptions, run_search, run_workers

__version__ = "0.2.0"

_LAZY = {
    "search": "search.api",
    "SearchResult": "search.api",
    "SearchOptions": "search.runs",
    "SearchRun": "search.runs",
    "WorkerOptions": "search.runs",
    "run_search": "search.runs",
    "run_workers": "search.runs",
    "model_params": "search.engine.stored",
}

__all__ = [
    "DataError",
    "FatalError",
    "InputError",
    "SearchError",
    "SearchOptions",
    "SearchResult",
    "SearchRun",
    "StorageError",
    "StudyFileError",
    "StudyMismatchError",
    "StudyNotFoundError",
    "StudySpec",
    "TrialFailure",
    "WorkerOptions",
    "known_studies",
    "load_study",
    "model_params",
    "run_search",
    "run_workers",
    "search",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")
