"""Many workers, one study: the trial loop every search process runs, and the worker launcher.

Every process that runs trials (``capsearch run``, ``worker``, the children of ``workers``, and
the plain-Python benchmark in :mod:`search.workers_bench`) goes through :func:`run_trials`, an
ask-and-tell loop with four jobs besides running the objective:

* **One trial budget for the whole study.** ``target`` is the number of finished (COMPLETE or
  PRUNED) trials the study should have, however many workers run and whenever they join. Before
  taking a trial the worker takes a per-study lock (:func:`study_lock`), counts finished and
  RUNNING trials and takes one only while ``finished + running < target``; the new trial is
  RUNNING before the lock is released. So the study never holds more than ``target`` finished
  trials and no trial is ever started only to be thrown away. See :func:`run_trials` for what
  exactly is guaranteed.
* **Dead workers.** Each running trial sends a heartbeat every ``heartbeat_interval`` seconds.
  A trial without heartbeat for ``grace_period`` seconds is marked FAIL (reason stored) by the
  next live worker and re-queued with the same parameters, at most ``max_retry`` times.
* **Clean stops.** SIGINT and SIGTERM interrupt the running trial, which is marked FAIL with the
  reason ``worker stopped by SIGTERM`` and re-queued; nothing is left RUNNING.
* **Failures.** An exception in a trial (``tf.errors.ResourceExhaustedError`` included) fails
  that trial with its reason stored (system and user attribute ``fail_reason``) and the worker
  goes on; after ``max_failures`` failures in a row it stops instead of looping forever. A
  non-finite objective value prunes the trial with ``pruned_reason``, like a NaN loss does.

Storage calls are retried on lock conflicts (:func:`open_worker_storage`), so SQLite files
shared by several processes on one host do not fail with ``database is locked``; SQLite commits
skip the fsync (WAL with ``synchronous=NORMAL``: crash-safe, about 10x cheaper per trial).

:func:`launch_workers` starts worker processes with the GPU and thread placement of
:func:`search.devices.plan_workers`, passes the storage URL through ``CAPSEARCH_STORAGE`` (never
on the command line), streams their output line by line, forwards SIGINT and SIGTERM, and waits.

Example:
    >>> liveness = liveness_settings()  # heartbeat 10 s, grace 30 s, 3 retries (or from env)
    >>> storage = open_worker_storage("sqlite:///storage/studies.db", liveness)
    >>> study = optuna.create_study(study_name="x", storage=storage, load_if_exists=True)
    >>> result = run_trials(study, lambda t: t.suggest_float("x", 0, 1), target=50, worker="w0")
    >>> result.reason
    'budget'
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import gc
import logging
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from search.errors import FatalError, SearchError
from search.runner import FINISHED
from search.storage import (
    STORAGE_ENV_VAR,
    _is_transient,
    mask_text,
    mask_url,
    open_storage,
    with_retry,
)

if TYPE_CHECKING:
    from search.runner import SearchOptions

__all__ = [
    "DEFAULT_GRACE_FACTOR",
    "DEFAULT_HEARTBEAT_S",
    "DEFAULT_MAX_FAILURES",
    "DEFAULT_MAX_RETRY",
    "GRACE_ENV",
    "HEARTBEAT_ENV",
    "MAX_RETRY_ENV",
    "Liveness",
    "LoopResult",
    "StopSignals",
    "TrialsKeepFailing",
    "WorkerStopped",
    "default_worker_id",
    "fail_reason",
    "launch_workers",
    "liveness_settings",
    "open_worker_storage",
    "requeue_trial",
    "run_trials",
    "run_workers",
    "seed_offset_for",
    "study_lock",
]

_logger = logging.getLogger(__name__)

HEARTBEAT_ENV = "CAPSEARCH_HEARTBEAT"
"""Environment variable: seconds between heartbeats of a running trial (default 10)."""

GRACE_ENV = "CAPSEARCH_GRACE"
"""Environment variable: seconds without heartbeat after which a trial is dead (default 3x)."""

MAX_RETRY_ENV = "CAPSEARCH_MAX_RETRY"
"""Environment variable: how often a trial of a dead or stopped worker is re-queued (default 3)."""

DEFAULT_HEARTBEAT_S = 10
DEFAULT_GRACE_FACTOR = 3
DEFAULT_MAX_RETRY = 3
DEFAULT_MAX_FAILURES = 10
"""Failed trials in a row after which a worker stops (the study cannot make progress)."""

ORPHAN_MARGIN_S = 60
"""A RUNNING trial that never sent a heartbeat counts as dead this long after its grace period
(its start time comes from the clock of the host that started it)."""

WORKER_ATTR = "worker"
"""Trial user attribute: the id of the worker that ran the trial."""

_REASON_ATTRS = ("fail_reason", "pruned_reason", WORKER_ATTR)
_LOCK_CLASS_ID = 0x63617073  # "caps": first key of PostgreSQL advisory locks
_MAX_REASON_CHARS = 500
Echo = Callable[[str], None]
Callback = Callable[[optuna.Study, FrozenTrial], None]


class WorkerStopped(KeyboardInterrupt):
    """SIGINT or SIGTERM asked the worker to stop; raised inside a trial to interrupt it.

    A :class:`KeyboardInterrupt` so that no ``except Exception`` in an objective swallows it.
    """

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"worker stopped by {signal_name}")
        self.signal_name = signal_name


class TrialsKeepFailing(SearchError):
    """A worker stopped because too many trials in a row failed."""


# --------------------------------------------------------------------------------------------
# Settings and storage
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Liveness:
    """How dead workers are detected and their trials retried.

    Attributes:
        heartbeat_interval: Seconds between heartbeats of a running trial.
        grace_period: Seconds without heartbeat after which a running trial is dead.
        max_retry: How often the trial of a dead or stopped worker is re-queued.
    """

    heartbeat_interval: int
    grace_period: int
    max_retry: int


def _env_int(name: str, lowest: int) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = lowest - 1
    if value < lowest:
        raise FatalError(f"{name}={raw!r} is not allowed; use an integer >= {lowest} or unset it")
    return value


def liveness_settings(
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = None,
) -> Liveness:
    """Resolve the heartbeat settings: arguments, else environment, else defaults.

    Defaults: heartbeat every 10 s (``CAPSEARCH_HEARTBEAT``), dead after 3 heartbeats missed
    (``CAPSEARCH_GRACE``), re-queued at most 3 times (``CAPSEARCH_MAX_RETRY``).

    Raises:
        FatalError: A value is not an integer, too small, or the grace period is not longer
            than the heartbeat interval (live trials would be failed).

    Example:
        >>> liveness_settings(1)
        Liveness(heartbeat_interval=1, grace_period=3, max_retry=3)
    """
    interval = heartbeat_interval or _env_int(HEARTBEAT_ENV, 1) or DEFAULT_HEARTBEAT_S
    grace = grace_period or _env_int(GRACE_ENV, 1) or DEFAULT_GRACE_FACTOR * interval
    retry = max_retry if max_retry is not None else _env_int(MAX_RETRY_ENV, 0)
    if grace <= interval:
        raise FatalError(
            f"grace period {grace} s must be longer than the heartbeat interval {interval} s; "
            f"set {GRACE_ENV} to at least {2 * interval}"
        )
    return Liveness(interval, grace, DEFAULT_MAX_RETRY if retry is None else retry)


# Every RDBStorage method below is one database transaction: a lock conflict rolls it back
# whole, so calling it again is safe (trial creation included).
_RETRIED_METHODS = (
    "create_new_trial",
    "set_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "set_study_user_attr",
    "set_study_system_attr",
    "record_heartbeat",
    "get_trial",
    "get_all_trials",
    "_get_trials",
    "_get_stale_trial_ids",
    "get_n_trials",
    "get_study_id_from_name",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
)


@dataclass
class RetryStats:
    """Lock conflicts a storage met and retried (SQLite ``database is locked`` and the like)."""

    conflicts: int = 0


def open_worker_storage(url: str, liveness: Liveness) -> optuna.storages.RDBStorage:
    """Open ``url`` with heartbeats and retry its calls on lock conflicts.

    Every write and read Optuna makes through the returned storage (ask, tell, attributes,
    intermediate values, heartbeats) goes through :func:`search.storage.with_retry`; the
    number of conflicts met is in ``storage.capsearch_retries.conflicts``.

    Example:
        >>> storage = open_worker_storage("sqlite:///storage/studies.db", liveness_settings())
    """
    storage = open_storage(
        url,
        heartbeat_interval=liveness.heartbeat_interval,
        grace_period=liveness.grace_period,
        failed_trial_max_retry=liveness.max_retry,
    )
    stats = RetryStats()

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def retried(*args: Any, **kwargs: Any) -> Any:
            def attempt() -> Any:
                try:
                    return method(*args, **kwargs)
                except Exception as exc:
                    if _is_transient(exc):
                        stats.conflicts += 1
                    raise

            return with_retry(attempt, attempts=10)

        return retried

    for name in _RETRIED_METHODS:
        setattr(storage, name, wrap(getattr(storage, name)))
    storage.capsearch_retries = stats  # type: ignore[attr-defined]
    database = storage.engine.url.database
    if storage.engine.dialect.name == "sqlite" and database and database != ":memory:":
        sqlalchemy.event.listen(storage.engine, "connect", _sqlite_synchronous_normal)
        storage.engine.dispose()  # connections opened so far get it too
    elif storage.engine.dialect.name == "postgresql" and _pg_async_commit_wanted():
        sqlalchemy.event.listen(storage.engine, "connect", _postgresql_asynchronous_commit)
        storage.engine.dispose()
    return storage


def _pg_async_commit_wanted() -> bool:
    """``CAPSEARCH_PG_SYNCHRONOUS_COMMIT=on`` keeps PostgreSQL's default (wait for the disk)."""
    return os.environ.get("CAPSEARCH_PG_SYNCHRONOUS_COMMIT", "off").strip().lower() != "on"


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


def _rdb(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    """The RDBStorage under a study (Optuna wraps it in a cache), or None for other storages."""
    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, optuna.storages.RDBStorage) else None


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

    Example:
        >>> with study_lock(storage, "mlp"):
        ...     study, created = open_study(spec, storage)
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


# --------------------------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------------------------


class StopSignals:
    """Turns SIGINT and SIGTERM into a clean stop of the worker loop.

    The first signal sets :attr:`signal_name` and :attr:`event`; if a trial is running it is
    interrupted at once by :class:`WorkerStopped`, otherwise the loop stops at its next check.
    Further signals are ignored, so a signal sent both by the terminal and by a ``workers``
    parent does not interrupt the clean-up.

    Example:
        >>> signals = StopSignals()
        >>> with signals.installed():
        ...     run_trials(study, objective, target=10, signals=signals)
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.event = threading.Event()
        self._in_trial = False
        self._previous: dict[int, Any] = {}

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignals]:
        """Install the handlers (main thread only; elsewhere a no-op) and restore them after."""
        if threading.current_thread() is not threading.main_thread() or self._previous:
            yield self
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is not None:
            return
        self.signal_name = signal.Signals(signum).name
        self.event.set()
        if self._in_trial:
            self._in_trial = False
            raise WorkerStopped(self.signal_name)

    @contextlib.contextmanager
    def trial_running(self) -> Iterator[None]:
        """While inside, a stop signal raises :class:`WorkerStopped` in the main thread."""
        if self.signal_name is not None:
            raise WorkerStopped(self.signal_name)
        self._in_trial = True
        try:
            yield
        finally:
            self._in_trial = False


# --------------------------------------------------------------------------------------------
# The trial loop
# --------------------------------------------------------------------------------------------


@dataclass
class LoopResult:
    """What one worker's loop did and why it stopped.

    Attributes:
        reason: ``budget`` (target reached), ``timeout``, ``signal`` (SIGINT/SIGTERM),
            ``stopped`` (``study.stop()`` in a callback) or ``failures`` (too many in a row).
        signal_name: The signal that stopped the worker, if any.
        started: Trials this worker started (re-queued ones included).
        finished: Of those, COMPLETE or PRUNED.
        failed: Of those, FAIL (exception, stop signal, or failed meanwhile as dead).
        requeued: Trials this worker re-queued (its own on a stop, dead workers' ones).
        stale: Trials of dead workers this worker marked FAIL.
        objective_seconds: Time spent inside the objective.
        loop_seconds: Time of the whole loop.
        lock_conflicts: Storage lock conflicts met and retried.
    """

    reason: str = ""
    signal_name: str | None = None
    started: int = 0
    finished: int = 0
    failed: int = 0
    requeued: int = 0
    stale: int = 0
    objective_seconds: float = 0.0
    loop_seconds: float = 0.0
    lock_conflicts: int = 0

    def describe(self) -> str:
        """``budget reached; this worker: 12 started, 11 finished, 1 failed``."""
        why = {
            "budget": "budget reached",
            "timeout": "time budget used",
            "signal": f"stopped by {self.signal_name}",
            "stopped": "stopped by a callback",
            "failures": "too many failed trials in a row",
        }.get(self.reason, self.reason)
        return (
            f"{why}; this worker: {self.started} started, {self.finished} finished, "
            f"{self.failed} failed"
        )


def fail_reason(exc: BaseException) -> str:
    """One line naming an exception, e.g. ``ResourceExhaustedError: OOM when allocating ...``.

    Example:
        >>> fail_reason(ValueError("bad\\nvalue"))
        'ValueError: bad'
    """
    text = str(exc).strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    reason = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return reason[:_MAX_REASON_CHARS]


def seed_offset_for(worker_id: str) -> int:
    """A sampler seed offset derived from the worker id: different workers, different seeds.

    Example:
        >>> seed_offset_for("w0") != seed_offset_for("w1")
        True
    """
    return zlib.crc32(worker_id.encode()) % 1_000_003


def default_worker_id() -> str:
    """``<host>-<pid>``: unique across the hosts of one study."""
    return f"{socket.gethostname().split('.')[0]}-{os.getpid()}"


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    *,
    target: int,
    timeout: float | None = None,
    worker: str = "",
    echo: Echo = print,
    callbacks: Sequence[Callback] = (),
    liveness: Liveness | None = None,
    max_failures: int = DEFAULT_MAX_FAILURES,
    poll_interval: float = 1.0,
    gc_after_trial: bool = True,
    signals: StopSignals | None = None,
    reserve_under_lock: bool = True,
) -> LoopResult:
    """Run trials of ``study`` until it has ``target`` finished trials (shared by all workers).

    The loop, per trial: take :func:`study_lock`; mark FAIL and re-queue the RUNNING trials
    whose worker died; count the study's finished (COMPLETE, PRUNED) and RUNNING trials; stop
    if ``finished >= target``; ask for a trial only if ``finished + running < target`` (else
    release the lock and wait ``poll_interval`` for running trials to end); record its first
    heartbeat; release the lock; run the objective with heartbeats; tell the result.

    Guarantee: if every process that starts trials of the study does so through this function
    (any capsearch command), ``finished + running <= target`` holds at every moment, because
    checking and starting happen in one critical section and finishing turns a RUNNING trial
    into at most one finished one. Hence the study never gets more than ``target`` finished
    trials, no trial is started beyond the budget, and nothing has to be thrown away. A trial
    that FAILs (exception, dead worker, stop signal) gives its slot back, so the workers go on
    until exactly ``target`` trials are finished, unless they all stop first (time budget,
    signal, ``max_failures`` failures in a row). A worker whose slot is the last one waits for
    the running trials instead of leaving: a dead worker's trial is then re-run by a live one.

    Not guaranteed: trials started outside capsearch (e.g. a plain ``study.optimize`` on the
    same study) bypass the lock and may overshoot; a trial marked FAIL as dead while its
    worker was in fact alive but silent for longer than the grace period loses its result
    (the late ``tell`` is refused, it is never counted twice).

    Args:
        study: The study, on storage from :func:`open_worker_storage` (any storage works; only
            RDB storages have heartbeats and cross-process locks).
        objective: Takes an :class:`optuna.Trial`, returns the value (or a tuple of values for
            a multi-objective study); may raise :class:`optuna.TrialPruned`. A value that is
            not finite prunes the trial (``pruned_reason``), one that is not a number fails it.
        target: Finished trials the study should have in all.
        timeout: Stop starting trials after this many seconds.
        worker: Worker id, prefixed to every line echoed and stored on each trial.
        echo: Where lines go.
        callbacks: ``callback(study, frozen_trial)`` after each trial, as in ``optimize``; one
            may call ``study.stop()``.
        liveness: Heartbeat settings; default :func:`liveness_settings`.
        max_failures: Stop after this many failed trials in a row.
        poll_interval: Seconds between budget checks while waiting for others' trials.
        gc_after_trial: Run the garbage collector after each trial.
        signals: Stop signals to honour (installed here when not yet installed).
        reserve_under_lock: False only to measure the race this lock prevents.

    Returns:
        What the loop did; ``reason`` says why it stopped.

    Example:
        >>> result = run_trials(study, objective, target=100, worker="w1")
        >>> result.describe()
        'budget reached; this worker: 26 started, 26 finished, 0 failed'
    """
    liveness = liveness or liveness_settings()
    signals = signals or StopSignals()
    prefix = f"[{worker}] " if worker else ""
    rdb = _rdb(study)
    stats = getattr(rdb, "capsearch_retries", None)
    conflicts_before = stats.conflicts if stats else 0
    result = LoopResult()
    start = time.monotonic()
    failures_in_row = 0
    waiting_since: float | None = None
    next_stale_check = 0.0
    # ``study.stop()`` in callbacks needs the optimize-loop flag; ask() warns without it.
    study._stop_flag = False
    study._thread_local.in_optimize_loop = True
    try:
        with signals.installed():
            while True:
                if signals.signal_name is not None:
                    result.reason, result.signal_name = "signal", signals.signal_name
                    break
                if study._stop_flag:
                    result.reason = "stopped"
                    break
                if timeout is not None and time.monotonic() - start >= timeout:
                    result.reason = "timeout"
                    break
                lock = study_lock(rdb, study.study_name) if reserve_under_lock else _no_lock()
                with lock as connection:
                    if time.monotonic() >= next_stale_check:
                        _fail_stale_trials(study, rdb, liveness, prefix, echo, result)
                        next_stale_check = time.monotonic() + liveness.heartbeat_interval
                    finished, running, waiting = _count(study, rdb, connection)
                    if finished >= target:
                        result.reason = "budget"
                        break
                    trial_id = None
                    if finished + running < target:
                        trial_id = _reserve(study, waiting)
                if trial_id is None:
                    if waiting_since is None:
                        waiting_since = time.monotonic()
                        echo(
                            f"{prefix}budget taken: {finished} finished + {running} running of "
                            f"{target}; waiting for running trials to end"
                        )
                    signals.event.wait(poll_interval)
                    continue
                trial = _open_trial(study, trial_id, rdb)
                waiting_since = None
                frozen = _run_one(
                    study, trial, objective, rdb, liveness, signals, worker, echo, result
                )
                if gc_after_trial:
                    gc.collect()
                if frozen is None:  # stopped by a signal: the trial was failed and re-queued
                    continue
                if frozen.state in FINISHED:
                    failures_in_row = 0
                elif frozen.state == TrialState.FAIL:
                    failures_in_row += 1
                for callback in callbacks:
                    callback(study, frozen)
                if failures_in_row >= max_failures:
                    result.reason = "failures"
                    echo(
                        f"{prefix}stopping: {failures_in_row} trials in a row failed "
                        f"(last: {_stored_reason(frozen)})"
                    )
                    break
    finally:
        study._thread_local.in_optimize_loop = False
        if rdb is not None:
            rdb.remove_session()
        result.loop_seconds = time.monotonic() - start
        result.lock_conflicts = (stats.conflicts if stats else 0) - conflicts_before
    return result


@contextlib.contextmanager
def _no_lock() -> Iterator[None]:
    yield None


def _count(
    study: optuna.Study,
    rdb: optuna.storages.RDBStorage | None,
    connection: sqlalchemy.Connection | None = None,
) -> tuple[int, int, int]:
    """The study's finished, RUNNING and WAITING trials, counted in the database.

    One ``GROUP BY`` query on Optuna's ``trials`` table instead of loading every trial; on
    ``connection`` (the lock's) when given.
    """
    if rdb is None:
        states = Counter(t.state for t in study.get_trials(deepcopy=False))
    else:
        from optuna.storages._rdb import models  # Optuna's schema

        column = models.TrialModel.state
        query = (
            sqlalchemy.select(column, sqlalchemy.func.count())
            .where(models.TrialModel.study_id == study._study_id)
            .group_by(column)
        )

        def read() -> Counter[TrialState]:
            if connection is not None:
                return Counter(dict(connection.execute(query).all()))
            with rdb.engine.connect() as own:
                return Counter(dict(own.execute(query).all()))

        states = with_retry(read)
    finished = sum(states[s] for s in FINISHED)
    return finished, states[TrialState.RUNNING], states[TrialState.WAITING]


def _reserve(study: optuna.Study, waiting: int) -> int:
    """Take the next trial: a WAITING one (re-queued or enqueued) if any, else a new one.

    This is the part of ``study.ask()`` that changes the database: when it returns, the
    trial is RUNNING and counts against the budget. Building the :class:`optuna.Trial`
    (reads and sampler set-up) is left to :func:`_open_trial`, outside the lock.
    """
    study._thread_local.cached_all_trials = None
    if waiting:
        trial_id = study._pop_waiting_trial_id()
        if trial_id is not None:
            return trial_id
    return study._storage.create_new_trial(study._study_id)


def _open_trial(
    study: optuna.Study, trial_id: int, rdb: optuna.storages.RDBStorage | None
) -> optuna.Trial:
    """The :class:`optuna.Trial` of a reserved trial, its first heartbeat recorded."""
    try:
        if rdb is not None:
            rdb.record_heartbeat(trial_id)
        return optuna.Trial(study, trial_id)
    except Exception:
        with contextlib.suppress(Exception):  # do not leave it RUNNING
            study._storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        raise


class _Heartbeat:
    """Records a trial's heartbeat every ``interval`` seconds in a thread; errors are logged."""

    def __init__(self, storage: Any, trial_id: int, interval: float) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        if self._storage is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception as exc:  # a missed beat; the grace period covers a few
                reason = mask_text(fail_reason(exc), self._storage.url)
                _logger.warning("heartbeat of trial id %s failed: %s", self._trial_id, reason)
        self._storage.remove_session()


def _run_one(
    study: optuna.Study,
    trial: optuna.Trial,
    objective: Callable[[optuna.Trial], Any],
    rdb: optuna.storages.RDBStorage | None,
    liveness: Liveness,
    signals: StopSignals,
    worker: str,
    echo: Echo,
    result: LoopResult,
) -> FrozenTrial | None:
    """Run one asked trial and tell its outcome; None when a stop signal interrupted it."""
    result.started += 1
    state: TrialState | None = None
    value: Any = None
    reason: str | None = None
    stopped: str | None = None
    timer = time.perf_counter()
    with _Heartbeat(rdb, trial._trial_id, liveness.heartbeat_interval):
        try:
            with signals.trial_running():
                if worker:
                    trial.set_user_attr(WORKER_ATTR, worker)
                value = objective(trial)
        except WorkerStopped as exc:
            stopped = exc.signal_name
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except Exception as exc:
            state, reason = TrialState.FAIL, fail_reason(exc)
    result.objective_seconds += time.perf_counter() - timer
    if stopped is not None:
        _stop_trial(study, trial, stopped, liveness, worker, echo, result)
        return None
    values: list[float] | None = None
    if state is None:
        values = _as_values(value)
        if values is None:
            state, reason = TrialState.FAIL, f"objective returned {value!r}, not a number"
        elif all(math.isfinite(v) for v in values):
            state = TrialState.COMPLETE
        else:  # a diverged model, like a NaN loss in training: pruned, with the reason
            state, values = TrialState.PRUNED, None
            _set_attrs(trial, {"pruned_reason": f"objective value was {value}"})
    if reason is not None:
        reason = mask_text(reason, rdb.url) if rdb is not None else reason
        _set_attrs(trial, {"fail_reason": reason}, system=True)
    frozen = study.tell(trial, values, state=state, skip_if_finished=True)
    if frozen.state != state:  # another worker declared it dead meanwhile
        prefix = f"[{worker}] " if worker else ""
        _logger.warning(
            "%strial %d was marked %s meanwhile (missed heartbeats?); its result is dropped",
            prefix,
            frozen.number,
            frozen.state.name,
        )
    if frozen.state in FINISHED:
        result.finished += 1
    else:
        result.failed += 1
    return frozen


def _as_values(value: Any) -> list[float] | None:
    """The objective's value(s) as floats (one per objective), or None if not numbers."""
    items = value if isinstance(value, (list, tuple)) else [value]
    try:
        return [float(v) for v in items]
    except (TypeError, ValueError):
        return None


def _set_attrs(trial: optuna.Trial, attrs: dict[str, Any], *, system: bool = False) -> None:
    """Set user (and system) attributes; a trial finished meanwhile is left as it is."""
    try:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
            if system:
                trial.storage.set_trial_system_attr(trial._trial_id, key, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


def _stored_reason(trial: FrozenTrial) -> str:
    return str(trial.system_attrs.get("fail_reason") or trial.user_attrs.get("fail_reason", "?"))


def _stop_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    signal_name: str,
    liveness: Liveness,
    worker: str,
    echo: Echo,
    result: LoopResult,
) -> None:
    """Fail the trial a stop signal interrupted, with its reason, and re-queue its parameters."""
    reason = f"worker stopped by {signal_name}"
    _set_attrs(trial, {"fail_reason": reason}, system=True)
    frozen = study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    result.failed += 1
    prefix = f"[{worker}] " if worker else ""
    retry = requeue_trial(study, frozen, liveness.max_retry)
    if retry is not None:
        result.requeued += 1
    note = f"re-queued (retry {retry}/{liveness.max_retry})" if retry else "retries used up"
    echo(f"{prefix}trial {frozen.number} FAIL: {reason}; {note}")


def requeue_trial(study: optuna.Study, trial: FrozenTrial, max_retry: int) -> int | None:
    """Put a failed trial's parameters back in the queue, at most ``max_retry`` times in a row.

    Like Optuna's ``RetryHeartbeatStaleTrialCallback``: the new WAITING trial keeps params,
    distributions and user attributes (not the failure's reason or worker) and the system
    attributes ``failed_trial`` (the first failed trial) and ``retry_history``.

    Returns:
        The retry count of the new trial (1 for the first retry), or None when
        ``max_retry`` retries were used up.

    Example:
        >>> requeue_trial(study, study.trials[7], max_retry=3)
        1
    """
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > max_retry:
        return None
    system_attrs = {k: v for k, v in trial.system_attrs.items() if k not in _REASON_ATTRS}
    system_attrs["failed_trial"] = trial.system_attrs.get("failed_trial", trial.number)
    system_attrs["retry_history"] = history
    user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in _REASON_ATTRS}
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=user_attrs,
            system_attrs=system_attrs,
        )
    )
    return len(history)


def _fail_stale_trials(
    study: optuna.Study,
    rdb: optuna.storages.RDBStorage | None,
    liveness: Liveness,
    prefix: str,
    echo: Echo,
    result: LoopResult,
) -> None:
    """Mark FAIL the RUNNING trials whose worker died and re-queue them (under the lock)."""
    if rdb is None or rdb.get_heartbeat_interval() is None:
        return
    stale = set(rdb._get_stale_trial_ids(study._study_id)) | _orphans(study, rdb, liveness)
    for trial_id in sorted(stale):
        trial = rdb.get_trial(trial_id)
        if trial.state != TrialState.RUNNING:
            continue
        reason = f"worker lost: no heartbeat for more than {liveness.grace_period} s"
        try:
            rdb.set_trial_user_attr(trial_id, "fail_reason", reason)
            rdb.set_trial_system_attr(trial_id, "fail_reason", reason)
            if not rdb.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        result.stale += 1
        retry = requeue_trial(study, rdb.get_trial(trial_id), liveness.max_retry)
        if retry is not None:
            result.requeued += 1
        note = f"re-queued (retry {retry}/{liveness.max_retry})" if retry else "retries used up"
        worker = trial.user_attrs.get(WORKER_ATTR, "?")
        message = f"trial {trial.number} of worker {worker} FAIL: {reason}; {note}"
        echo(prefix + message)


def _orphans(study: optuna.Study, rdb: optuna.storages.RDBStorage, liveness: Liveness) -> set[int]:
    """RUNNING trials that never sent a heartbeat and started long ago (a process without
    heartbeats died): Optuna's own check skips them, but they would hold budget forever."""
    cutoff = datetime.datetime.now() - datetime.timedelta(
        seconds=liveness.grace_period + ORPHAN_MARGIN_S
    )
    old = [
        t._trial_id
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.datetime_start is not None and t.datetime_start < cutoff
    ]
    if not old:
        return set()
    query = sqlalchemy.text(
        "SELECT trial_id FROM trial_heartbeats WHERE trial_id IN :ids"
    ).bindparams(sqlalchemy.bindparam("ids", expanding=True))
    with rdb.engine.connect() as connection:
        beating = {row[0] for row in connection.execute(query, {"ids": old})}
    return set(old) - beating


# --------------------------------------------------------------------------------------------
# Launching worker processes
# --------------------------------------------------------------------------------------------


def launch_workers(
    n: int,
    argv_for: Callable[[str], list[str]],
    url: str,
    echo: Echo = print,
    *,
    env: dict[str, str] | None = None,
) -> int:
    """Start ``n`` worker processes, stream their output, forward stop signals, and wait.

    Worker ``i`` is named ``w<i>`` and gets the environment planned by
    :func:`search.devices.plan_workers` (one GPU each round-robin with memory growth, or the
    CPU cores divided between workers) and the storage URL in ``CAPSEARCH_STORAGE``, so no
    password appears on a command line. Each output line is shown with the worker's id in
    front (added where the worker did not print it) and any password masked. SIGINT and
    SIGTERM received here are sent on to every worker still running.

    Args:
        n: Number of workers.
        argv_for: Command line of the worker with the given id.
        url: Storage URL, handed to the workers through the environment.
        echo: Where lines go.
        env: Base environment (default: this process's).

    Returns:
        0 if every worker exited with 0, else 1.

    Example:
        >>> launch_workers(2, lambda wid: [sys.executable, "-m", "search", "worker", "x",
        ...                                "--worker-id", wid], "sqlite:///storage/studies.db")
        0
    """
    from search.devices import available_cpus, detect_gpus, plan_workers

    base = dict(os.environ if env is None else env)
    placements = plan_workers(n, detect_gpus(), available_cpus())
    output_lock = threading.Lock()
    procs: list[tuple[str, subprocess.Popen[str]]] = []

    def emit(worker: str, line: str) -> None:
        line = mask_text(line.rstrip("\r\n"), url)
        if not line.startswith(f"[{worker}]"):
            line = f"[{worker}] {line}"
        with output_lock:
            echo(line)

    def pump(worker: str, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            emit(worker, line)

    forwarded: list[str] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        forwarded.append(name)
        for _, proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, forward)
    pumps = []
    try:
        for placement in placements:
            worker = f"w{placement.worker_id}"
            child_env = {
                **base,
                **placement.env,
                STORAGE_ENV_VAR: url,
                "PYTHONUNBUFFERED": "1",
            }
            argv = argv_for(worker)
            where = f"GPU {placement.gpu}" if placement.gpu is not None else "CPU"
            shown = mask_text(shlex.join(argv), url)
            echo(f"starting {worker} on {where} ({placement.intra_op_threads} threads): {shown}")
            proc = subprocess.Popen(
                argv,
                env=child_env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
                errors="replace",
            )
            procs.append((worker, proc))
            thread = threading.Thread(target=pump, args=(worker, proc), daemon=True)
            thread.start()
            pumps.append(thread)
        codes = {worker: proc.wait() for worker, proc in procs}
    finally:
        for _, proc in procs:  # only reached early when starting a worker failed
            if proc.poll() is None:
                proc.terminate()
                proc.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for thread in pumps:
        thread.join(timeout=5)
    bad = {w: c for w, c in codes.items() if c != 0}
    if forwarded:
        echo(f"{', '.join(sorted(set(forwarded)))} forwarded to the workers")
    for worker, code in bad.items():
        what = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        echo(f"{worker} {what}")
    return 0 if not bad else 1


def run_workers(study_ref: str, n: int, options: SearchOptions, echo: Echo = print) -> int:
    """``capsearch workers``: create the study once, run ``n`` worker processes, summarize.

    Everything that can be wrong with the input is checked here before any worker starts:
    the study file, the storage URL (opened, study created or resumed, baselines enqueued
    once), the data (loaded, without building tensors) and a ``[hypermodel]`` (imported).
    The workers share one trial budget (:func:`run_trials`); only this process evaluates the
    best trial on the test split and prints the summary.

    Returns:
        0 if every worker exited with 0, else 1.

    Example:
        >>> run_workers("overfit30_memorize", 4, SearchOptions(trials=40))
        0
    """
    from search.data import load_dataset
    from search.notes import update_study_note
    from search.runner import (
        count_finished,
        data_context,
        evaluate_best_on_test,
        open_study,
        prepare_data,
    )
    from search.storage import resolve_storage_url
    from search.studyfile import load_study
    from search.summary import print_summary

    spec = load_study(study_ref)
    url = resolve_storage_url(options.storage)
    liveness = liveness_settings(
        options.heartbeat_interval, options.grace_period, options.max_retry
    )
    storage = open_worker_storage(url, liveness)
    dataset = load_dataset(spec.data.source, spec.data.options, data_context(spec, options))
    del dataset  # checked; the workers load their own copy
    if spec.hypermodel is not None:  # importable, names a hypermodel
        from search.hypermodel import load_hypermodel

        load_hypermodel(spec)
    with study_lock(storage, spec.name):
        study, created = open_study(spec, storage, options.seed_offset)
    target = options.trials or spec.trials
    done = count_finished(study)
    verb = "created" if created else "resumed"
    echo(
        f"study {spec.name} {verb} in {mask_url(url)}: {done} finished trials, target "
        f"{target}; {n} workers (heartbeat {liveness.heartbeat_interval} s, grace "
        f"{liveness.grace_period} s, {liveness.max_retry} retries)"
    )
    code = 0
    if done < target:

        def argv_for(worker: str) -> list[str]:
            argv = [sys.executable, "-m", "search", "worker", str(spec.path)]
            argv += ["--worker-id", worker, "--trials", str(target), "--no-summary"]
            if options.timeout is not None:
                argv += ["--timeout", str(options.timeout)]
            if options.data_dir is not None:
                argv += ["--data-dir", str(options.data_dir)]
            if options.offline:
                argv.append("--offline")
            return argv

        timer = time.perf_counter()
        code = launch_workers(n, argv_for, url, echo)
        elapsed = time.perf_counter() - timer
        echo(f"{count_finished(study)} finished trials after {elapsed:.1f} s")
    else:
        echo("target reached; pass a larger --trials (TRIALS=) to continue the search")
    if options.evaluate_test and spec.objective == "generalize":
        evaluate_best_on_test(spec, prepare_data(spec, options), study, echo)
    if options.summary:
        print_summary(study, spec, echo)
        update_study_note(study, spec, echo)
    return code
