"""Many workers, one study: what lets processes on many hosts share one study safely.

The trial loop itself (:func:`search.engine.trial_loop.run_trials`: one trial budget for the
whole study, ask and tell under the study lock) sits one layer up; this package gives it:

* **The study lock** (:func:`study_lock`): budget checks, ``ask`` and study creation of one
  study are serialized across processes and hosts (``flock`` beside an SQLite file, an advisory
  lock on PostgreSQL, ``GET_LOCK`` on MySQL).
* **Liveness** (:mod:`search.distributed.liveness`): each running trial sends a heartbeat every
  ``heartbeat_interval`` seconds; a trial without one for ``grace_period`` seconds is marked FAIL
  (reason stored) by the next live worker and re-queued with the same parameters, at most
  ``max_retry`` times.
* **Clean stops** (:class:`StopSignals`): SIGINT and SIGTERM interrupt the running trial, which is
  marked FAIL with the reason ``worker stopped by SIGTERM`` and re-queued; nothing stays RUNNING.
* **Worker storage** (:func:`open_worker_storage`): storage calls retried on lock conflicts;
  SQLite commits skip the fsync (WAL with ``synchronous=NORMAL``: crash-safe, about 10x cheaper).
* **Processes and devices** (:func:`launch_workers`, :mod:`search.distributed.devices`): worker
  processes with one GPU each (or the CPU cores divided), the storage URL passed through
  ``CAPSEARCH_STORAGE`` (never on a command line), output streamed, stop signals forwarded.

This package re-exports the public API of its modules.

Example:
    >>> liveness = liveness_settings(heartbeat_interval=5)
    >>> liveness.grace_period
    15
"""

from search.distributed.launcher import launch_workers
from search.distributed.liveness import (
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
from search.distributed.stop_signals import StopSignals, WorkerStopped
from search.distributed.study_lock import study_lock
from search.distributed.trial_attrs import fail_reason
from search.distributed.worker_storage import open_worker_storage

__all__ = [
    "DEFAULT_GRACE_FACTOR",
    "DEFAULT_HEARTBEAT_S",
    "DEFAULT_MAX_RETRY",
    "GRACE_ENV",
    "HEARTBEAT_ENV",
    "MAX_RETRY_ENV",
    "Liveness",
    "StopSignals",
    "WorkerStopped",
    "fail_reason",
    "launch_workers",
    "liveness_settings",
    "open_worker_storage",
    "requeue_trial",
    "study_lock",
]
