"""Lock conflicts: recognising them and retrying the storage call that met one.

SQLite's busy timeout makes most conflicts wait; :func:`with_retry` covers the rare ones that
SQLite reports without waiting, and the deadlocks and serialization failures of servers.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy.exc

__all__ = ["with_retry"]

_logger = logging.getLogger(__name__)

T = TypeVar("T")

_RETRY_MARKERS = ("database is locked", "deadlock", "could not serialize")


def _is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it wraps) is a lock conflict worth retrying."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (sqlalchemy.exc.OperationalError, sqlite3.OperationalError)):
            message = str(current).lower()
            if any(marker in message for marker in _RETRY_MARKERS):
                return True
        current = current.__cause__ or current.__context__
    return False


def with_retry(
    fn: Callable[[], T],
    *,
    attempts: int = 8,
    base_delay: float = 0.05,
    retry_on: Callable[[BaseException], bool] = _is_transient,
) -> T:
    """Call ``fn`` and retry it when the database reports a lock conflict.

    Retries on SQLAlchemy ``OperationalError`` (also when wrapped, e.g. in Optuna's
    ``StorageInternalError``) whose message contains ``database is locked``, ``deadlock`` or
    ``could not serialize``; waits ``base_delay * 2**k`` seconds, times a random factor in
    [0.5, 1.5), between attempts. Any other exception is raised at once.

    Args:
        fn: Function without arguments; wrap calls with ``lambda`` or ``functools.partial``.
        attempts: Number of calls in all, at least 1.
        base_delay: Delay in seconds before the first retry.
        retry_on: Which exceptions to retry instead of lock conflicts.

    Returns:
        What ``fn`` returns.

    Raises:
        ValueError: ``attempts`` is below 1.
        Exception: The last exception of ``fn`` once the attempts are used up, or any
            exception that is not a lock conflict.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts - 1 or not retry_on(exc):
                raise
            delay = base_delay * (2**attempt) * (0.5 + random.random())
            _logger.debug(
                "Storage busy (%s); retry %d/%d in %.2f s",
                type(exc).__name__,
                attempt + 1,
                attempts - 1,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
