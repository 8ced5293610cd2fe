"""Liveness: heartbeats of running trials, and the trials of dead workers failed and re-queued.

Each running trial sends a heartbeat every ``heartbeat_interval`` seconds (:class:`_Heartbeat`).
A trial without heartbeat for ``grace_period`` seconds is marked FAIL (reason stored) by the
next live worker and re-queued with the same parameters, at most ``max_retry`` times
(:func:`requeue_trial`). :func:`liveness_settings` resolves the three settings.
"""

from __future__ import annotations

import datetime
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from search import settings
from search._compat import optuna as optuna_compat
from search.distributed.trial_attrs import _REASON_ATTRS, WORKER_ATTR, fail_reason
from search.errors import FatalError
from search.storage.urls import mask_text

if TYPE_CHECKING:
    from search.console import Echo


class _StaleCounts(Protocol):
    """Where :func:`_fail_stale_trials` counts what it did (the trial loop's result)."""

    stale: int
    requeued: int


__all__ = [
    "DEFAULT_GRACE_FACTOR",
    "DEFAULT_HEARTBEAT_S",
    "DEFAULT_MAX_RETRY",
    "GRACE_ENV",
    "HEARTBEAT_ENV",
    "MAX_RETRY_ENV",
    "Liveness",
    "liveness_settings",
    "requeue_trial",
]

_logger = logging.getLogger(__name__)

HEARTBEAT_ENV = settings.HEARTBEAT.name
"""Environment variable: seconds between heartbeats of a running trial (default 10)."""

GRACE_ENV = settings.GRACE.name
"""Environment variable: seconds without heartbeat after which a trial is dead (default 3x)."""

MAX_RETRY_ENV = settings.MAX_RETRY.name
"""Environment variable: how often a trial of a dead or stopped worker is re-queued (default 3)."""

DEFAULT_HEARTBEAT_S = 10
DEFAULT_GRACE_FACTOR = 3
DEFAULT_MAX_RETRY = 3

ORPHAN_MARGIN_S = 60
"""A RUNNING trial that never sent a heartbeat counts as dead this long after its grace period
(its start time comes from the clock of the host that started it)."""


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
    interval = heartbeat_interval or settings.heartbeat_interval() or DEFAULT_HEARTBEAT_S
    grace = grace_period or settings.grace_period() or DEFAULT_GRACE_FACTOR * interval
    retry = max_retry if max_retry is not None else settings.max_retry()
    if grace <= interval:
        raise FatalError(
            f"grace period {grace} s must be longer than the heartbeat interval {interval} s; "
            f"set {GRACE_ENV} to at least {2 * interval}"
        )
    return Liveness(interval, grace, DEFAULT_MAX_RETRY if retry is None else retry)


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


def requeue_trial(
    study: optuna.Study, trial: FrozenTrial, max_retry: int, *, stopped: bool = False
) -> int | None:
    """Put a failed trial's parameters back in the queue, at most ``max_retry`` times in a row.

    Like Optuna's ``RetryHeartbeatStaleTrialCallback``: the new WAITING trial keeps params,
    distributions and user attributes (not the failure's reason or worker) and the system
    attributes ``failed_trial`` (the first failed trial) and ``retry_history``.

    ``stopped``: the trial was interrupted by a stop signal (Ctrl-C, SIGTERM), not a crash. It
    is re-queued whatever its retries and uses none (``stop_history`` records it), so an
    operator who stops a study four times loses no trial.

    Returns:
        The retry count of the new trial (1 for the first retry; for a stopped trial, the
        retries it had used), or None when ``max_retry`` retries were used up.
    """
    history = list(trial.system_attrs.get("retry_history", []))
    stops = list(trial.system_attrs.get("stop_history", []))
    if stopped:
        stops.append(trial.number)
    else:
        history.append(trial.number)
    if len(history) > max_retry:
        return None
    system_attrs = {k: v for k, v in trial.system_attrs.items() if k not in _REASON_ATTRS}
    system_attrs["failed_trial"] = trial.system_attrs.get("failed_trial", trial.number)
    system_attrs["retry_history"] = history
    if stops:
        system_attrs["stop_history"] = stops
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
    result: _StaleCounts,
) -> None:
    """Mark FAIL the RUNNING trials whose worker died and re-queue them (under the lock)."""
    if rdb is None or rdb.get_heartbeat_interval() is None:
        return
    stale = set(optuna_compat.stale_trial_ids(rdb, study)) | _orphans(study, rdb, liveness)
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
    old = {
        optuna_compat.trial_id(t)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if t.datetime_start is not None and t.datetime_start < cutoff
    }
    return old - optuna_compat.beating_trial_ids(rdb, old)
