"""Where a study's data is looked for and cached: flags first, then environment variables.

Example:
    >>> from pathlib import Path
    >>> context = data_context(Path("spaces"), DataOptions(offline=True))
    >>> context.offline, context.base_dir
    (True, PosixPath('spaces'))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from search.data._dataset import DataContext
from search.storage.urls import DEFAULT_STORAGE_DIR

DATA_ENV = "CAPSEARCH_DATA"
CACHE_ENV = "CAPSEARCH_CACHE"
OFFLINE_ENV = "CAPSEARCH_OFFLINE"


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
    env_dir = os.environ.get(DATA_ENV)
    data_dir = options.data_dir or (Path(env_dir) if env_dir else None)
    cache = Path(os.environ.get(CACHE_ENV, DEFAULT_STORAGE_DIR / "cache"))
    offline = options.offline or os.environ.get(OFFLINE_ENV, "") not in ("", "0")
    return DataContext(data_dir=data_dir, cache_dir=cache, base_dir=base_dir, offline=offline)
