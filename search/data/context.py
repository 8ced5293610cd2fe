"""Where a study's data is looked for and cached: flags first, then environment variables.

Example:
    >>> from pathlib import Path
    >>> context = data_context(Path("spaces"), DataOptions(offline=True))
    >>> context.offline, context.base_dir
    (True, PosixPath('spaces'))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from search import settings
from search.data._dataset import DataContext

DATA_ENV = settings.DATA.name
CACHE_ENV = settings.CACHE.name
OFFLINE_ENV = settings.OFFLINE.name


@dataclass(frozen=True)
class DataOptions:
    """The data settings a command takes: ``--data-dir`` and ``--offline``.

    Args:
        data_dir: A folder of local copies (``None``: ``$CAPSEARCH_DATA``, else none).
        offline: Never download (also ``CAPSEARCH_OFFLINE=1``).
    """

    data_dir: Path | None = None
    offline: bool = False


def data_context(base_dir: Path, options: DataOptions | None = None) -> DataContext:
    """The loaders' context for a study file in ``base_dir`` (its relative paths start there)."""
    options = options or DataOptions()
    data_dir = options.data_dir or settings.data_dir()
    offline = options.offline or settings.offline()
    cache = settings.cache_dir()
    return DataContext(data_dir=data_dir, cache_dir=cache, base_dir=base_dir, offline=offline)
