"""Lock conflicts and outages: recognising them and retrying the storage call that met one.

SQLite's busy timeout makes most conflicts wait; :func:`with_retry` covers the rare ones that
SQLite reports without waiting, and the deadlocks and serialization failures of servers.

A database server or storage proxy that stops answering mid-run (a restart, a failover) is an
*outage*: :func:`is_outage` recognises it (PostgreSQL's shutdown and connection errors, a
connection SQLAlchemy found dead, a gRPC proxy that is unavailable or reports its database
gone), and :func:`with_outage_retry` waits for the storage to come back, bounded by
``CAPSEARCH_STORAGE_WAIT`` (300 s), with one warning line per outage in the process and one
line when it is back. Only a storage that opened is waited for: a server that does not answer
when a command starts is bad input (one line, exit 2).
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy.exc

from search import settings
from search.errors import StorageUnavailable, first_line
from search.storage.urls import mask_text, mask_url

__all__ = [
    "DEFAULT_STORAGE_WAIT_S",
    "is_outage",
    "outage_wait_seconds",
    "with_outage_retry",
    "with_retry",
]

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


DEFAULT_STORAGE_WAIT_S = 300
"""Seconds a worker waits for an unreachable storage (``CAPSEARCH_STORAGE_WAIT`` sets it)."""

# SQLSTATEs of a server going away: admin/crash shutdown, cannot connect now, connection errors.
_OUTAGE_SQLSTATES = frozenset(
    {"57P01", "57P02", "57P03", "08000", "08001", "08003", "08004", "08006", "08007"}
)
_OUTAGE_MARKERS = (
    "the database system is shutting down",
    "the database system is starting up",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "terminating connection due to administrator command",
    "server closed the connection unexpectedly",
    "consuming input failed",
    "could not receive data from server",
    "connection refused",
    "connection reset by peer",
    "broken pipe",
    "the connection is closed",
    "the connection is lost",
    "connection is closed",
    "connection timeout expired",
    "ssl syscall error",
    "lost connection to mysql server",
    "mysql server has gone away",
    "can't connect to mysql server",
    "can't reconnect until invalid transaction is rolled back",
    "failed to connect to all addresses",
    "capsearch-proxy: database unreachable",  # a capsearch proxy whose database is away
    "socket closed",
)


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it was raised from or wraps (``orig``), each once."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    out: list[BaseException] = []
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        out.append(current)
        for linked in (getattr(current, "orig", None), current.__cause__, current.__context__):
            if isinstance(linked, BaseException):
                todo.append(linked)
    return out


def _grpc_outage(exc: BaseException) -> bool | None:
    """For a gRPC error: whether the proxy (or the database behind it) is away; else None."""
    code = getattr(exc, "code", None)
    details = getattr(exc, "details", None)
    from_grpc = any(c.__module__.split(".")[0] == "grpc" for c in type(exc).__mro__)
    if not (callable(code) and callable(details)) or not from_grpc:
        return None
    name = getattr(code(), "name", "")
    # CANCELLED: a proxy stopping cancels the calls it is answering (workers cancel none).
    if name in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"):
        return True
    text = str(details() or "").lower()
    return name in ("UNKNOWN", "INTERNAL") and any(m in text for m in _OUTAGE_MARKERS)


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it wraps) says the storage went away, not bad input.

    Recognised: PostgreSQL shutting down, starting up or refusing connections (SQLSTATE
    classes 08 and 57P), a connection SQLAlchemy found dead (``connection_invalidated``), the
    messages psycopg and MySQL drivers give for a lost connection, a gRPC proxy that is
    unavailable or stopped while answering (the call cancelled), and a proxy whose own database
    call failed that way.

    Example:
        >>> is_outage(RuntimeError("FATAL: the database system is shutting down"))
        False
        >>> import sqlalchemy.exc
        >>> is_outage(sqlalchemy.exc.OperationalError(
        ...     "SELECT 1", {}, Exception("server closed the connection unexpectedly")))
        True
        >>> is_outage(sqlalchemy.exc.OperationalError(
        ...     "SELECT 1", {}, Exception("password authentication failed for user \"u\"")))
        False
    """
    for current in _chain(exc):
        grpc_says = _grpc_outage(current)
        if grpc_says is not None:
            if grpc_says:
                return True
            continue
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return True
        if getattr(current, "sqlstate", None) in _OUTAGE_SQLSTATES:
            return True
        if isinstance(
            current,
            (
                sqlalchemy.exc.OperationalError,
                sqlalchemy.exc.InterfaceError,
                sqlalchemy.exc.PendingRollbackError,
                sqlalchemy.exc.DisconnectionError,
                ConnectionError,
            ),
        ) or type(current).__name__ in ("OperationalError", "InterfaceError"):
            text = str(current).lower()
            if any(marker in text for marker in _OUTAGE_MARKERS):
                return True
    return False


def outage_wait_seconds() -> int:
    """How long a worker waits for its storage to come back: ``CAPSEARCH_STORAGE_WAIT`` or 300."""
    return settings.storage_wait() or DEFAULT_STORAGE_WAIT_S


def _waiting_up_to() -> str:
    return f"waiting up to {outage_wait_seconds()} s for it to come back"


class _OutageLog:
    """One warning line when this process first meets an outage, one when the storage is back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.since: float | None = None
        self.outages = 0
        self.meanwhile: Callable[[], str] = _waiting_up_to
        """What the process does while the storage is away, for the warning line; a process
        that does not wait (``capsearch proxy``) says what it does instead."""

    def failed(self, exc: BaseException, url: str) -> float:
        """Note a failed call; returns when the outage began (``time.monotonic``)."""
        with self._lock:
            if self.since is None:
                self.since = time.monotonic()
                self.outages += 1
                _logger.warning(
                    "storage %s unreachable (%s); %s",
                    mask_url(url) if url else "",
                    mask_text(_reason(exc), url),
                    self.meanwhile(),
                )
            return self.since

    def succeeded(self, url: str) -> None:
        if self.since is None:  # the common case, without taking the lock
            return
        with self._lock:
            if self.since is not None:
                _logger.warning(
                    "storage %s back after %.1f s",
                    mask_url(url) if url else "",
                    time.monotonic() - self.since,
                )
                self.since = None


OUTAGES = _OutageLog()
"""This process's outage state (one warning per outage, whichever thread meets it first)."""


def _reason(exc: BaseException) -> str:
    """The innermost driver message of ``exc``, on one line."""
    for current in reversed(_chain(exc)):
        details = getattr(current, "details", None)
        text = str(details() if callable(details) else current)
        line = first_line(Exception(text))
        if line:
            return line[:200]
    return type(exc).__name__


def with_outage_retry(
    fn: Callable[[], T],
    *,
    url: str = "",
    wait_s: float | None = None,
) -> T:
    """Call ``fn``; while the storage is unreachable (:func:`is_outage`), wait and call again.

    Waits 0.2 s, doubling up to 2 s, between calls, for at most ``wait_s`` seconds since the
    outage began (default :func:`outage_wait_seconds`). The first failure of an outage logs
    one warning line (the URL's password masked), its end one more.

    Args:
        fn: The storage call, without arguments.
        url: The storage's URL, shown masked in the warning lines.
        wait_s: The bound; default ``CAPSEARCH_STORAGE_WAIT`` or 300 s.

    Returns:
        What ``fn`` returns.

    Raises:
        StorageUnavailable: The storage stayed unreachable for longer than the bound.
        Exception: Whatever ``fn`` raises that is not an outage.
    """
    bound = outage_wait_seconds() if wait_s is None else wait_s
    delay = 0.2
    while True:
        try:
            value = fn()
        except Exception as exc:
            if not is_outage(exc):
                raise
            since = OUTAGES.failed(exc, url)
            if time.monotonic() - since >= bound:
                raise StorageUnavailable(
                    f"storage {mask_url(url) if url else '(storage)'} unreachable for more "
                    f"than {bound:.0f} s ({mask_text(_reason(exc), url)}); start the database "
                    "or proxy again and rerun the same command to resume (a trial left RUNNING "
                    "is failed by the next worker's heartbeat check and re-queued), or raise "
                    f"{settings.STORAGE_WAIT.name}"
                ) from None
            time.sleep(delay * (0.75 + 0.5 * random.random()))
            delay = min(2.0, delay * 2)
            continue
        OUTAGES.succeeded(url)
        return value
