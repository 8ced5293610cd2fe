"""The study lock: one process at a time checks a study's trial budget and starts a trial.

The lock lives where the study does, so processes on other hosts wait for it too: an ``flock``
beside an SQLite file, an advisory lock on PostgreSQL, ``GET_LOCK`` on MySQL; in-memory
storages lock between the threads of one process.
"""

from __future__ import annotations

import contextlib
import os
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import optuna
import sqlalchemy

__all__ = ["study_lock"]

_LOCK_CLASS_ID = 0x63617073  # "caps": first key of PostgreSQL advisory locks
_PROCESS_LOCKS: dict[str, threading.Lock] = {}


@contextlib.contextmanager
def study_lock(
    storage: optuna.storages.BaseStorage | None, study_name: str
) -> Iterator[sqlalchemy.Connection | None]:
    """Hold the lock that serializes budget checks, ``ask`` and study creation of one study.

    All processes using the same database wait for each other: an exclusive ``flock`` on
    ``<file>-capsearch.lock`` beside an SQLite file (one host), a transaction-scoped advisory
    lock on PostgreSQL (``pg_advisory_xact_lock``), ``GET_LOCK`` on MySQL. A process that dies
    while holding it releases it (the kernel drops the flock, the server ends the session).
    In-memory storages only lock between the threads of this process.

    Yields:
        The connection that holds a server lock (reads on it see every commit), else None.
    """
    backend = storage if isinstance(storage, optuna.storages.RDBStorage) else None
    dialect = backend.engine.dialect.name if backend is not None else ""
    database = backend.engine.url.database if backend is not None else None
    if dialect == "sqlite" and database and database != ":memory:" and _has_flock():
        import fcntl

        path = f"{Path(database).expanduser().absolute()}-capsearch.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield None
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    elif dialect == "postgresql" and backend is not None:
        key = zlib.crc32(study_name.encode()) - 2**31  # signed int4
        with backend.engine.begin() as connection:
            connection.execute(
                sqlalchemy.text("SELECT pg_advisory_xact_lock(:a, :b)"),
                {"a": _LOCK_CLASS_ID, "b": key},
            )
            yield connection
    elif dialect in ("mysql", "mariadb") and backend is not None:
        name = f"capsearch:{zlib.crc32(study_name.encode()):08x}"
        with backend.engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT GET_LOCK(:n, -1)"), {"n": name})
            try:
                yield None
            finally:
                connection.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:n)"), {"n": name})
    else:
        lock = _PROCESS_LOCKS.setdefault(study_name, threading.Lock())
        with lock:
            yield None


def _has_flock() -> bool:
    try:
        import fcntl  # noqa: F401  (POSIX only)
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def _no_lock() -> Iterator[None]:
    """Lock nothing: stands in for :func:`study_lock` only to measure the race it prevents."""
    yield None
