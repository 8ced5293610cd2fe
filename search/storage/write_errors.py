"""Storage that opened but stopped taking writes: a full disk, a read-only file, an I/O error.

:func:`write_problem` reads a driver's exception (through SQLAlchemy's and Optuna's wrappers)
and says whether it is such a failure, with its cause and its fix; the trial loop turns it into
one :class:`~search.errors.StorageWriteError` line instead of a chain of tracebacks. Given the
SQLite file, it also reads the operating system's refusal to open one of the files beside it
(the study lock ``<file>-capsearch.lock``, opened for every trial a worker takes).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["WriteProblem", "write_problem"]


@dataclass(frozen=True)
class WriteProblem:
    """Why a storage refused a write, and what fixes it.

    Attributes:
        cause: The driver's words, e.g. ``"database or disk is full"``.
        fix: What to do, e.g. ``"free space on the disk that holds the storage"``.
    """

    cause: str
    fix: str


# The fixes, each named once: the driver's words and the operating system's errno map to them.
_WRITABLE = "make the storage file, the files beside it and its folder writable"
_FREE_SPACE = "free space on the disk that holds the storage"
_QUOTA = "free space or raise the disk quota"
_READ_ONLY_FS = "remount the file system read-write or move the storage"
_CHECK_DISK = "check the disk and that the storage file is still there and writable"

# (what the driver says, in lower case; the fix)
_PATTERNS: tuple[tuple[str, str], ...] = (
    ("database or disk is full", _FREE_SPACE),
    ("no space left on device", _FREE_SPACE),
    ("could not extend file", "free space on the database server's disk"),
    ("disk quota exceeded", _QUOTA),
    ("attempt to write a readonly database", _WRITABLE),
    ("read-only file system", _READ_ONLY_FS),
    ("read-only transaction", "point --storage at a primary server that takes writes"),
    ("disk i/o error", _CHECK_DISK),
)

# errno of an OSError on a file of the storage -> the fix
_OS_FIXES: dict[int, str] = {
    errno.EACCES: _WRITABLE,
    errno.EPERM: _WRITABLE,
    errno.EROFS: _READ_ONLY_FS,
    errno.ENOSPC: _FREE_SPACE,
    errno.EDQUOT: _QUOTA,
    errno.EIO: _CHECK_DISK,
}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        for linked in (orig, current.__cause__, current.__context__):
            if isinstance(linked, BaseException):
                todo.append(linked)


def _storage_file_error(exc: BaseException, storage_file: str | None) -> WriteProblem | None:
    """``exc`` as a write problem when it is the OS refusing a file of ``storage_file``."""
    if storage_file is None or not isinstance(exc, OSError) or exc.errno not in _OS_FIXES:
        return None
    if not isinstance(exc.filename, (str, bytes, os.PathLike)):
        return None
    name = os.path.abspath(os.fsdecode(exc.filename))
    database = os.path.abspath(storage_file)
    # The database, its -wal, -shm, -journal and -capsearch.lock files, or its folder; not a
    # file of the objective's that happens to sit elsewhere.
    if not (name.startswith(database) or name == os.path.dirname(database)):
        return None
    reason = (exc.strerror or os.strerror(exc.errno)).lower()
    return WriteProblem(f"cannot write {name}: {reason}", _OS_FIXES[exc.errno])


def write_problem(exc: BaseException, storage_file: str | None = None) -> WriteProblem | None:
    """The write failure ``exc`` reports (it or any exception it was raised from), or None.

    Args:
        exc: What a storage call (or the objective, through its trial's writes) raised.
        storage_file: The SQLite file of the storage, if any: an :class:`OSError` on it or on
            a file beside it (``EACCES``, ``EROFS``, ``ENOSPC``, ``EIO``, ...) is a write failure
            too. Such errors on other files are not: they are the objective's own.

    Example:
        >>> import sqlite3
        >>> try:
        ...     try:
        ...         raise sqlite3.OperationalError("database or disk is full")
        ...     except sqlite3.Error as inner:
        ...         raise RuntimeError("commit failed") from inner
        ... except RuntimeError as outer:
        ...     write_problem(outer).fix
        'free space on the disk that holds the storage'
        >>> write_problem(ValueError("bad value")) is None
        True
        >>> denied = PermissionError(errno.EACCES, "Permission denied", "/data/s.db-capsearch.lock")
        >>> write_problem(denied, "/data/s.db").cause
        'cannot write /data/s.db-capsearch.lock: permission denied'
        >>> write_problem(denied, "/elsewhere/s.db") is None
        True
    """
    for inner in _chain(exc):
        on_file = _storage_file_error(inner, storage_file)
        if on_file is not None:
            return on_file
        text = str(inner).lower()
        for needle, fix in _PATTERNS:
            if needle in text:
                return WriteProblem(needle.replace("i/o", "I/O"), fix)
    return None
