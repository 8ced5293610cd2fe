"""On-disk cache of prepared arrays: keys from inputs, atomic writes, tolerant reads."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def file_identity(path: Path) -> dict[str, Any]:
    """Describe a file or folder well enough to notice that it changed.

    A file is its resolved path, size and modification time; a folder is its resolved path and,
    for each folder inside it down to two levels, the number of entries and modification time.
    """
    resolved = path.resolve()
    if resolved.is_file():
        stat = resolved.stat()
        return {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    folders: dict[str, list[int]] = {}
    for folder in [resolved, *resolved.glob("*/"), *resolved.glob("*/*/")]:
        if folder.is_dir():
            with os.scandir(folder) as entries:
                count = sum(1 for _ in entries)
            key = str(folder.relative_to(resolved))
            folders[key] = [count, folder.stat().st_mtime_ns]
    return {"path": str(resolved), "folders": folders}


def cache_key(parts: Mapping[str, Any]) -> str:
    """Return a short, stable hash of JSON-serializable ``parts``."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def save_npz_atomic(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` as an uncompressed ``.npz`` so a reader never sees half a file.

    The arrays go to a temporary file in the same folder, which then replaces ``path`` in one
    ``os.replace``; a process killed midway leaves at most a stray ``.tmp`` file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            np.savez(handle, **arrays)  # type: ignore[arg-type]  # keys are array names
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(name, 0o644)  # mkstemp makes the file private; a cache may be shared.
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def load_npz(path: Path) -> dict[str, np.ndarray] | None:
    """Read every array of an ``.npz`` file, or return ``None`` if it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None
