"""The trial loop every search process runs: one trial budget for the whole study.

Every process that runs trials (``capsearch run``, ``worker``, the children of ``workers``, and
the plain-Python benchmark in :mod:`search.testing.null_worker`) goes through :func:`run_trials`, an
ask-and-tell loop. ``target`` is the number of finished (COMPLETE or PRUNED) trials the study
should have, however many workers run and whenever they join: a trial is started only under the
study lock and only while ``finished + running < target``. An exception in a trial fails that
trial with its reason stored and the worker goes on; after ``max_failures`` failures in a row
it stops. A non-finite objective value prunes the trial with ``pruned_reason``.

Under the lock the loop runs only the database half of ``study.ask()``
(:func:`search._compat.optuna.reserve_trial`: take a WAITING trial if the count says one
waits, else create the trial with the worker's id in the same transaction); building the
:class:`optuna.Trial` (a read and the sampler's set-up, :func:`search._compat.optuna.open_trial`)
and the first heartbeat come after the lock is released. A plain ``study.ask()`` under the lock
keeps the budget as exact but holds the lock about twice as long: it always reads the WAITING
trials, builds the trial, and the worker's id is one more write. Measured with the null-objective
worker (:mod:`search.testing.null_worker`; 4 workers on 2 shared cores, Optuna 5.0.0, medians of
4 runs of 300 trials with the random sampler, 3 runs of 200 with the study's TPE sampler; exactly
the target finished, nothing else, in every run):

===========================  =================  ===============
ms per trial                 split (this loop)  ``study.ask()``
===========================  =================  ===============
SQLite, lock held            6.6                14.9
SQLite, wall                 11.0               15.4 (+37 %)
PostgreSQL, lock held        16.6               23.1
PostgreSQL, wall             20.2               23.8 (+24 %)
SQLite + TPE, lock held      7.8                17.0
SQLite + TPE, wall           17.6               19.1
PostgreSQL + TPE, lock held  17.4               33.1
PostgreSQL + TPE, wall       32.7               34.3
===========================  =================  ===============

(wall: study span / trials; the percentages are medians of run-by-run ratios). With TPE the
sampling outside the lock fills the two cores, so the wall figures differ less; the lock time,
which bounds the throughput of any number of workers, still doubles.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import socket
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from search._compat import optuna as optuna_compat
from search.console import Echo
from search.distributed.liveness import (
    Liveness,
    _fail_stale_trials,
    _Heartbeat,
    liveness_settings,
    requeue_trial,
)
from search.distributed.proxied import heartbeat_storage, proxy_storage, reserve_through_proxy
from search.distributed.stop_signals import StopSignals
from search.distributed.study_lock import _no_lock, study_lock
from search.distributed.trial_attrs import WORKER_ATTR, _set_attrs, _stored_reason, fail_reason
from search.engine.study import FINISHED
from search.errors import StorageWriteError, TrialsKeepFailing, WorkerStopped
from search.storage.retry import is_outage, with_retry
from search.storage.urls import mask_text, mask_url
from search.storage.write_errors import WriteProblem, write_problem

__all__ = [
    "DEFAULT_MAX_FAILURES",
    "LoopResult",
    "TrialsKeepFailing",
    "default_worker_id",
    "run_trials",
    "seed_offset_for",
]

_logger = logging.getLogger(__name__)

DEFAULT_MAX_FAILURES = 10
"""Failed trials in a row after which a worker stops (the study cannot make progress)."""

Callback = Callable[[optuna.Study, FrozenTrial], None]


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
    """
    liveness = liveness or liveness_settings()
    signals = signals or StopSignals()
    prefix = f"[{worker}] " if worker else ""
    rdb = optuna_compat.rdb_storage(study)
    proxy = proxy_storage(study)  # grpc://: the proxy keeps the budget and records heartbeats
    beats = heartbeat_storage(study)
    stats = getattr(rdb or proxy, "capsearch_retries", None)
    conflicts_before = stats.conflicts if stats else 0
    result = LoopResult()
    start = time.monotonic()
    failures_in_row = 0
    waiting_since: float | None = None
    next_stale_check = 0.0
    current: int | None = None  # the trial id this worker runs, for a storage write failure
    try:
        # ``study.stop()`` in callbacks needs the optimize-loop flag; ask() warns without it.
        with optuna_compat.optimize_loop(study), signals.installed():
            while True:
                if signals.signal_name is not None:
                    result.reason, result.signal_name = "signal", signals.signal_name
                    break
                if optuna_compat.stop_requested(study):
                    result.reason = "stopped"
                    break
                if timeout is not None and time.monotonic() - start >= timeout:
                    result.reason = "timeout"
                    break
                lock = study_lock(rdb, study.study_name) if reserve_under_lock else _no_lock()
                trial_id = None
                try:
                    with lock as connection:
                        if time.monotonic() >= next_stale_check:
                            _fail_stale_trials(study, rdb, liveness, prefix, echo, result)
                            next_stale_check = time.monotonic() + liveness.heartbeat_interval
                        if proxy is not None:  # the proxy counts under the lock itself
                            attrs = {WORKER_ATTR: worker} if worker else {}
                            trial_id = reserve_through_proxy(study, proxy, attrs, target, liveness)
                            if trial_id is None:  # refused: its counts say why
                                finished, running = proxy.refused or _count(study, rdb)[:2]
                                if finished >= target:
                                    result.reason = "budget"
                                    break
                        else:
                            finished, running, waiting = _count(study, rdb, connection)
                            if finished >= target:
                                result.reason = "budget"
                                break
                            if finished + running < target:
                                trial_id = _reserve(study, waiting, worker)
                except Exception as exc:  # the lock's connection lost in a database outage
                    if not is_outage(exc) or rdb is None:
                        raise
                    if trial_id is None:
                        continue  # nothing reserved: take the lock again once it is back
                    trial_id = _recount_after_outage(study, rdb, trial_id, target, prefix, echo)
                    if trial_id is None:
                        continue
                if trial_id is None:
                    if waiting_since is None:
                        waiting_since = time.monotonic()
                        echo(
                            f"{prefix}budget taken: {finished} finished + {running} running of "
                            f"{target}; waiting for running trials to end"
                        )
                    signals.event.wait(poll_interval)
                    continue
                current = trial_id
                trial = _open_trial(study, trial_id, beats)
                waiting_since = None
                frozen = _run_one(
                    study, trial, objective, beats, liveness, signals, worker, echo, result
                )
                current = None
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
    except Exception as exc:
        problem = write_problem(exc, _sqlite_file(rdb))
        if problem is None:
            raise
        raise _write_failure(study, current, problem) from None
    finally:
        if rdb is not None:
            rdb.remove_session()
        result.loop_seconds = time.monotonic() - start
        result.lock_conflicts = (stats.conflicts if stats else 0) - conflicts_before
    return result


def _sqlite_file(rdb: optuna.storages.RDBStorage | None) -> str | None:
    """The SQLite file of ``rdb``, whose lock and journal files the loop opens too; else None.

    Example:
        >>> _sqlite_file(None) is None
        True
    """
    if rdb is None or rdb.engine.dialect.name != "sqlite":
        return None
    database = rdb.engine.url.database
    return None if not database or database == ":memory:" else database


def _write_failure(
    study: optuna.Study, trial_id: int | None, problem: WriteProblem
) -> StorageWriteError:
    """The one-line error of a storage that stopped taking writes; the running trial failed.

    The trial this worker was running is marked FAIL (with the cause as its reason) where the
    storage still takes that write; else it stays RUNNING until a worker's heartbeat check
    finds it stale, fails it and re-queues its parameters, and the message says so.
    """
    storage = optuna_compat.study_storage(study)
    rdb = optuna_compat.rdb_storage(study)
    where = mask_url(rdb.url) if rdb is not None else "the storage"
    # No worker id in front: the launcher puts it before each line of a worker's output.
    what = f"storage {where} stopped taking writes ({problem.cause})"
    fix = f"{problem.fix}, then run again to resume (stored trials are kept)"
    if trial_id is None:
        return StorageWriteError(f"{what}; {fix}")
    number: int | str = "?"
    stored_state: TrialState | None = None
    with contextlib.suppress(Exception):
        stored = storage.get_trial(trial_id)
        number, stored_state = stored.number, stored.state
    if stored_state == TrialState.FAIL:  # the loop stored the failure before stopping
        return StorageWriteError(
            f"{what} during trial {number}; {fix}; trial {number} was marked failed"
        )
    with contextlib.suppress(Exception):
        storage.set_trial_system_attr(trial_id, "fail_reason", f"storage: {problem.cause}")
    try:
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    except Exception:
        outcome = (
            f"trial {number} stays RUNNING until the next worker's heartbeat check fails and "
            "re-queues it"
        )
    else:
        outcome = f"trial {number} was marked failed"
    return StorageWriteError(f"{what} during trial {number}; {fix}; {outcome}")


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
        query = optuna_compat.state_counts_query(study)

        def read() -> Counter[TrialState]:
            if connection is not None:
                return Counter(dict(connection.execute(query).all()))
            with rdb.engine.connect() as own:
                return Counter(dict(own.execute(query).all()))

        states = with_retry(read)
    finished = sum(states[s] for s in FINISHED)
    return finished, states[TrialState.RUNNING], states[TrialState.WAITING]


def _reserve(study: optuna.Study, waiting: int, worker: str) -> int:
    """Take the next trial: a WAITING one (re-queued or enqueued) if any, else a new one.

    This is the part of ``study.ask()`` that changes the database: when it returns, the
    trial is RUNNING, counts against the budget and carries the worker's id. Building the
    :class:`optuna.Trial` (reads and sampler set-up) is left to :func:`_open_trial`, outside
    the lock (the module's docstring has the figures).
    """
    user_attrs = {WORKER_ATTR: worker} if worker else {}
    return optuna_compat.reserve_trial(study, user_attrs, waiting=waiting > 0)


def _recount_after_outage(
    study: optuna.Study,
    rdb: optuna.storages.RDBStorage,
    trial_id: int,
    target: int,
    prefix: str,
    echo: Echo,
) -> int | None:
    """Count again under a new lock after the lock's connection died with a reserved trial.

    The server ended the lock's session in the outage, so another worker may have counted
    before this reservation was stored. If the study is now past its budget, this trial gives
    its slot back (FAIL, reason stored) and None is returned; else it is run.
    """
    with study_lock(rdb, study.study_name) as connection:
        finished, running, _ = _count(study, rdb, connection)
        if finished + running <= target:
            return trial_id
        reason = "budget re-counted after a storage outage: slot given back"
        storage = optuna_compat.study_storage(study)
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        storage.set_trial_system_attr(trial_id, "fail_reason", reason)
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    echo(f"{prefix}trial id {trial_id} FAIL: {reason}")
    return None


def _open_trial(study: optuna.Study, trial_id: int, rdb: Any) -> optuna.Trial:
    """The :class:`optuna.Trial` of a reserved trial, its first heartbeat recorded."""
    try:
        if rdb is not None:
            rdb.record_heartbeat(trial_id)
        return optuna_compat.open_trial(study, trial_id)
    except Exception:
        with contextlib.suppress(Exception):  # do not leave it RUNNING
            optuna_compat.study_storage(study).set_trial_state_values(
                trial_id, state=TrialState.FAIL
            )
        raise


def _run_one(
    study: optuna.Study,
    trial: optuna.Trial,
    objective: Callable[[optuna.Trial], Any],
    rdb: Any,
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
    refused: Exception | None = None
    timer = time.perf_counter()
    with _Heartbeat(rdb, optuna_compat.trial_id(trial), liveness.heartbeat_interval):
        try:
            with signals.trial_running():
                value = objective(trial)
        except WorkerStopped as exc:
            stopped = exc.signal_name
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except Exception as exc:
            state, reason = TrialState.FAIL, fail_reason(exc)
            if write_problem(exc) is not None:  # the storage refused the trial's own writes
                refused = exc
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
    if refused is not None:  # failed and stored; the worker stops (see run_trials)
        result.failed += 1
        raise refused
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
    requeue_trial(study, frozen, liveness.max_retry, stopped=True)  # a stop uses no retry
    result.requeued += 1
    echo(f"{prefix}trial {frozen.number} FAIL: {reason}; re-queued")
