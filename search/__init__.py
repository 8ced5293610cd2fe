"""capsearch: Optuna search over the capacity and regularization of Keras models.

The public API; TensorFlow is imported only when a model is built, so this import stays light.

Example:
    >>> from search import SearchOptions, load_study, run_search
    >>> study = run_search(load_study("overfit30_memorize"), SearchOptions(trials=5))
    ... # doctest: +SKIP
"""

from search.errors import (
    DataError,
    FatalError,
    SearchError,
    StorageError,
    StudyFileError,
    TrialFailure,
)
from search.runner import SearchOptions, model_params, run_search
from search.studyfile import StudySpec, known_studies, load_study

__all__ = [
    "DataError",
    "FatalError",
    "SearchError",
    "SearchOptions",
    "StorageError",
    "StudyFileError",
    "StudySpec",
    "TrialFailure",
    "known_studies",
    "load_study",
    "model_params",
    "run_search",
]
