"""Storage that opened but stopped taking writes: a full disk, a read-only file, an I/O error.

:func:`write_problem` reads a driver's exception (through SQLAlchemy's and Optuna's wrappers)
and says whether it is such a failure, with its cause and its fix; the trial loop turns it into
one :class:`~search.errors.StorageWriteError` line instead of a chain of tracebacks.
"""

from __future__ import annotations

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


# (what the driver says, in lower case; the fix)
_PATTERNS: tuple[tuple[str, str], ...] = (
    ("database or disk is full", "free space on the disk that holds the storage"),
    ("no space left on device", "free space on the disk that holds the storage"),
    ("could not extend file", "free space on the database server's disk"),
    ("disk quota exceeded", "free space or raise the disk quota"),
    ("attempt to write a readonly database", "make the storage file and its folder writable"),
    ("read-only file system", "remount the file system read-write or move the storage"),
    ("read-only transaction", "point --storage at a primary server that takes writes"),
    ("disk i/o error", "check the disk and that the storage file is still there and writable"),
)


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


def write_problem(exc: BaseException) -> WriteProblem | None:
    """The write failure ``exc`` reports (it or any exception it was raised from), or None.

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
    """
    for inner in _chain(exc):
        text = str(inner).lower()
        for needle, fix in _PATTERNS:
            if needle in text:
                return WriteProblem(needle.replace("i/o", "I/O"), fix)
    return None
