"""The storage a worker opens: heartbeats on, lock conflicts and outages retried, cheaper commits.

:func:`open_worker_storage` wraps every storage call Optuna makes in
:func:`search.storage.retry.with_retry`, so SQLite files shared by several processes on one
host do not fail with ``database is locked``, and in
:func:`search.storage.retry.with_outage_retry`, so a database (or proxy) restart mid-run is
waited out, bounded, with one warning line, instead of killing the worker. A ``grpc://`` URL
opens Optuna's gRPC proxy client (:class:`search.storage.proxy.ProxyStorage`), wrapped alike.
SQLite commits skip the fsync (WAL with ``synchronous=NORMAL``: crash-safe, about 10x cheaper
per trial) and PostgreSQL sessions do not wait for the WAL flush (``synchronous_commit=off``;
``CAPSEARCH_PG_SYNCHRONOUS_COMMIT=on`` keeps the server's default).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy
from optuna.exceptions import UpdateFinishedTrialError

from search import settings
from search._compat import optuna as optuna_compat
from search.distributed.liveness import Liveness
from search.storage.opening import OpenedStorage, open_storage
from search.storage.proxy import ProxyStorage
from search.storage.retry import _is_transient, with_outage_retry, with_retry

__all__ = ["PROXY_CALLS", "RetryStats", "open_worker_storage"]

PROXY_CALLS = (
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_id_from_study_id_trial_number",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial",
    "get_all_trials",
)
"""The public storage calls of Optuna's gRPC proxy client: each is one request to the proxy."""


@dataclass
class RetryStats:
    """Lock conflicts a storage met and retried (SQLite ``database is locked`` and the like)."""

    conflicts: int = 0


def open_worker_storage(
    url: str, liveness: Liveness, *, wait_outages: bool = True, pool_size: int | None = None
) -> OpenedStorage:
    """Open ``url`` with heartbeats and retry its calls on lock conflicts and outages.

    Every write and read Optuna makes through the returned storage (ask, tell, attributes,
    intermediate values, heartbeats) goes through :func:`search.storage.with_retry`; the
    number of conflicts met is in ``storage.capsearch_retries.conflicts``. A storage that
    stops answering is waited for (:func:`search.storage.retry.with_outage_retry`). A trial's
    end that finds the trial already finished (its own write applied before an outage, or
    another worker that failed it as dead) returns instead of raising. ``wait_outages=False``
    (the proxy's own database) raises outages at once; ``pool_size`` is passed to
    :func:`~search.storage.opening.open_storage`.
    """
    storage = open_storage(
        url,
        heartbeat_interval=liveness.heartbeat_interval,
        grace_period=liveness.grace_period,
        pool_size=pool_size,
    )
    stats = RetryStats()

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def retried(*args: Any, **kwargs: Any) -> Any:
            def attempt() -> Any:
                try:
                    return method(*args, **kwargs)
                except UpdateFinishedTrialError:
                    if method.__name__ != "set_trial_state_values":
                        raise
                    return _ended_as_asked(storage, args, kwargs)
                except Exception as exc:
                    if _is_transient(exc):
                        stats.conflicts += 1
                    raise

            if not wait_outages:
                return with_retry(attempt, attempts=10)
            return with_outage_retry(lambda: with_retry(attempt, attempts=10), url=url)

        return retried

    setattr(storage, "capsearch_retries", stats)  # noqa: B010  (read by the trial loop)
    if isinstance(storage, ProxyStorage):
        for name in PROXY_CALLS:  # each one request: safe to send again
            setattr(storage, name, wrap(getattr(storage, name)))
        return storage
    # Each of these methods is one transaction: a conflict rolls it back whole, so it is safe
    # to call again (trial creation included).
    optuna_compat.wrap_storage_methods(storage, wrap)
    database = storage.engine.url.database
    if storage.engine.dialect.name == "sqlite" and database and database != ":memory:":
        sqlalchemy.event.listen(storage.engine, "connect", _sqlite_synchronous_normal)
        storage.engine.dispose()  # connections opened so far get it too
    elif storage.engine.dialect.name == "postgresql" and _pg_async_commit_wanted():
        sqlalchemy.event.listen(storage.engine, "connect", _postgresql_asynchronous_commit)
        storage.engine.dispose()
    return storage


def _ended_as_asked(
    storage: optuna.storages.BaseStorage, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> bool:
    """A trial's end that met "trial already finished": whether it ended as asked.

    Either this very write was applied before the connection broke and is being made again
    after an outage (the stored state is the one asked for: success), or another worker
    declared the trial dead and failed it meanwhile, between ``tell``'s own check and its
    write. Neither is an error: the stored end stands, ``tell`` returns the stored trial, and
    the trial loop says when it is not this worker's result.
    """
    trial_id = kwargs.get("trial_id", args[0] if args else None)
    state = kwargs.get("state", args[1] if len(args) > 1 else None)
    return trial_id is not None and storage.get_trial(trial_id).state == state


def _pg_async_commit_wanted() -> bool:
    """``CAPSEARCH_PG_SYNCHRONOUS_COMMIT=on`` keeps PostgreSQL's default (wait for the disk)."""
    return settings.pg_synchronous_commit() != "on"


def _sqlite_synchronous_normal(dbapi_connection: Any, record: Any) -> None:
    """WAL with ``synchronous=NORMAL``: a commit no longer waits for the disk (fsync).

    Safe against corruption and against any process crash (``kill -9`` included); only a power
    loss or OS crash may undo the last commits, whose trials are then run again. Per trial
    this saves about ten fsyncs (2.5 ms each on this project's CI disk).
    """
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def _postgresql_asynchronous_commit(dbapi_connection: Any, record: Any) -> None:
    """``synchronous_commit=off`` for this worker's sessions: a commit no longer waits for the
    server's WAL flush.

    The PostgreSQL counterpart of :func:`_sqlite_synchronous_normal`: never corrupts, survives
    any worker or client crash; only a crash of the database server may undo the commits of
    its last ~0.6 s (3 x ``wal_writer_delay``), whose trials are then failed by the heartbeat
    check and run again. The study lock's critical section ends with a commit, so this cuts
    the time each trial holds it.
    """
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET synchronous_commit = off")
    dbapi_connection.commit()
