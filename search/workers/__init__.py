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

One concept per module:

* :mod:`search.workers.trial_loop`: :func:`run_trials` and the one trial budget.
* :mod:`search.workers.study_lock`: :func:`study_lock`, held while a trial is started.
* :mod:`search.workers.liveness`: heartbeats; dead workers' trials failed and re-queued.
* :mod:`search.workers.worker_storage`: :func:`open_worker_storage`, retried and cheap commits.
* :mod:`search.workers.stop_signals`: SIGINT and SIGTERM turned into a clean stop.
* :mod:`search.workers.trial_attrs`: the worker id and failure reasons stored on trials.
* :mod:`search.workers.launcher`: ``capsearch workers``, worker processes started and awaited.

This package re-exports the public API of its modules.

Example:
    >>> liveness = liveness_settings()  # heartbeat 10 s, grace 30 s, 3 retries (or from env)
    >>> storage = open_worker_storage("sqlite:///storage/studies.db", liveness)
    >>> study = optuna.create_study(study_name="x", storage=storage, load_if_exists=True)
    >>> result = run_trials(study, lambda t: t.suggest_float("x", 0, 1), target=50, worker="w0")
    >>> result.reason
    'budget'
"""

from search.workers.launcher import launch_workers, run_workers
from search.workers.liveness import (
    DEFAULT_GRACE_FACTOR,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_MAX_RETRY,
    GRACE_ENV,
    HEARTBEAT_ENV,
    MAX_RETRY_ENV,
    Liveness,
    liveness_settings,
    requeue_trial,
)
from search.workers.stop_signals import StopSignals, WorkerStopped
from search.workers.study_lock import study_lock
from search.workers.trial_attrs import fail_reason
from search.workers.trial_loop import (
    DEFAULT_MAX_FAILURES,
    LoopResult,
    TrialsKeepFailing,
    default_worker_id,
    run_trials,
    seed_offset_for,
)
from search.workers.worker_storage import open_worker_storage

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
