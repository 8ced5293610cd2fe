"""Data sources a study file can name under ``[data]``, and the one way to load them.

Example:
    >>> from pathlib import Path
    >>> from search.data import DataContext, load_dataset
    >>> context = DataContext(data_dir=None, cache_dir=Path("storage/cache"), base_dir=Path("."))
    >>> dataset = load_dataset("noisy_sine", {"n_points": 200}, context)
    >>> dataset.task, dataset.x_train.shape, dataset.x_val.shape
    ('regression', (160, 1), (40, 1))

No module here imports TensorFlow; Keras is imported only to download a missing file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from search.data import files, imdb, memory, pima, synthetic
from search.data._dataset import DataContext, Dataset, DataSource, Features, Option, Task
from search.data._options import REQUIRED, validate_options
from search.data.context import DataOptions, data_context
from search.data.imdb import imdb_cache_path
from search.errors import OptionError

__all__ = [
    "DATA_SOURCES",
    "REQUIRED",
    "DataContext",
    "DataOptions",
    "DataSource",
    "Dataset",
    "Features",
    "Option",
    "OptionError",
    "Task",
    "data_context",
    "imdb_cache_path",
    "load_dataset",
    "validate_data_options",
]

DATA_SOURCES: dict[str, DataSource] = {
    source.name: source
    for source in (imdb.SOURCE, pima.SOURCE, *synthetic.SOURCES, files.SOURCE, memory.SOURCE)
}
"""Every data source by name: imdb, pima, overfit30, noisy_sine, square, collinear, file, arrays."""

# Checks that involve several options of one source, run after the per-option checks.
_CROSS_CHECKS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "square": synthetic.check_square,
    "file": files.check_file,
}


def validate_data_options(source: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Check the ``[data]`` options of a source and fill in the defaults.

    Args:
        source: A name in :data:`DATA_SOURCES`.
        options: Option values by name (a ``source`` key is ignored).

    Returns:
        Every option of the source, by name, converted to its declared type.

    Raises:
        OptionError: The source is unknown (``key == "source"``), or an option is unknown,
            missing, of the wrong type or out of range.

    Example:
        >>> validate_data_options("imdb", {"num_words": 5000})
        {'num_words': 5000, 'validation_size': 10000, 'seed': 0, 'path': ''}
    """
    data_source = DATA_SOURCES.get(source)
    if data_source is None:
        known = ", ".join(DATA_SOURCES)
        raise OptionError("source", f"unknown data source {source!r}; known: {known}")
    validated = validate_options(data_source, options)
    cross_check = _CROSS_CHECKS.get(source)
    if cross_check is not None:
        cross_check(validated)
    return validated


def load_dataset(source: str, options: Mapping[str, Any], context: DataContext) -> Dataset:
    """Validate the options, then load the data set.

    Args:
        source: A name in :data:`DATA_SOURCES`.
        options: Option values by name, as under ``[data]``.
        context: Where to look for files, where to cache, whether to download.

    Returns:
        The data set, ready for a model.

    Raises:
        OptionError: The source or an option is invalid.
        search.errors.DataError: The data cannot be found, read or parsed.
    """
    validated = validate_data_options(source, options)
    return DATA_SOURCES[source].load(validated, context)
