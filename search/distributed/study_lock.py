"""The study lock: one process at a time checks a study's trial budget and starts a trial.

The lock lives where the study does, so processes on other hosts wait for it too: an ``flock``
beside an SQLite file, an advisory lock on PostgreSQL, ``GET_LOCK`` on MySQL; in-memory
storages lock between the threads of one process. Through Optuna's gRPC proxy
(``grpc://``) the lock is a study of its own, ``capsearch-lock:<name>``, created to take it and
deleted to give it back: Optuna's unique study names make the creation atomic across every
worker of the proxy, and a lock whose holder died is broken after :data:`PROXY_LOCK_LEASE_S`.
The trial budget through the proxy is kept by the proxy itself (see
:mod:`search.distributed.proxy_server`); this lock only serializes study creation there.

A PostgreSQL server that restarts while a worker waits for the lock is waited for
(:func:`search.storage.retry.with_outage_retry`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import optuna
import sqlalchemy

from search.storage.proxy import LOCK_STUDY_PREFIX, ProxyStorage
from search.storage.retry import with_outage_retry

__all__ = ["PROXY_LOCK_LEASE_S", "study_lock"]

_logger = logging.getLogger(__name__)

PROXY_LOCK_LEASE_S = 60.0
"""A proxy lock study that stays the same for this long is a dead holder's, and is broken."""

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
    In-memory storages only lock between the threads of this process; through a proxy the lock
    is the study ``capsearch-lock:<name>`` (see the module's docstring).

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
        connection = with_outage_retry(
            lambda: _pg_advisory_lock(backend.engine, study_name), url=backend.url
        )
        try:
            yield connection
        except BaseException:
            with contextlib.suppress(Exception):  # a connection lost in an outage is closed
                connection.rollback()
            with contextlib.suppress(Exception):
                connection.close()
            raise
        try:
            connection.commit()  # releases the transaction's advisory lock
        finally:
            connection.close()
    elif dialect in ("mysql", "mariadb") and backend is not None:
        name = f"capsearch:{zlib.crc32(study_name.encode()):08x}"
        with backend.engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT GET_LOCK(:n, -1)"), {"n": name})
            try:
                yield None
            finally:
                connection.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:n)"), {"n": name})
    elif isinstance(storage, ProxyStorage):
        with _proxy_lock(storage, study_name):
            yield None
    else:
        lock = _PROCESS_LOCKS.setdefault(study_name, threading.Lock())
        with lock:
            yield None


def _pg_advisory_lock(engine: sqlalchemy.Engine, study_name: str) -> sqlalchemy.Connection:
    """A connection in a transaction that holds the study's advisory lock."""
    key = zlib.crc32(study_name.encode()) - 2**31  # signed int4
    connection = engine.connect()
    try:
        connection.execute(
            sqlalchemy.text("SELECT pg_advisory_xact_lock(:a, :b)"),
            {"a": _LOCK_CLASS_ID, "b": key},
        )
    except BaseException:
        with contextlib.suppress(Exception):
            connection.close()
        raise
    return connection


@contextlib.contextmanager
def _proxy_lock(storage: ProxyStorage, study_name: str) -> Iterator[None]:
    """Hold the study ``capsearch-lock:<name>`` of a proxy: created to lock, deleted to unlock.

    Waiters poll every 50–150 ms. One that sees the same lock study (same id) for longer than
    :data:`PROXY_LOCK_LEASE_S` deletes that study by id: a new holder's lock has another id,
    so only the dead holder's lock can be broken.
    """
    name = f"{LOCK_STUDY_PREFIX}{study_name}"
    seen: tuple[int, float] | None = None
    while True:
        try:
            lock_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], name)
            break
        except optuna.exceptions.DuplicatedStudyError:
            pass
        try:
            held = storage.get_study_id_from_name(name)
        except KeyError:
            continue  # given back meanwhile
        now = time.monotonic()
        if seen is None or seen[0] != held:
            seen = (held, now)
        elif now - seen[1] > PROXY_LOCK_LEASE_S:
            _logger.warning("breaking study lock %s held for more than %.0f s", name, now - seen[1])
            with contextlib.suppress(KeyError):
                storage.delete_study(held)
            seen = None
            continue
        time.sleep(0.05 + 0.1 * random.random())
    try:
        yield
    finally:
        try:
            storage.delete_study(lock_id)
        except KeyError:
            _logger.warning("study lock %s was broken while held (held too long)", name)


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
