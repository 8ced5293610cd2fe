"""What a caller sets for a run, split by the part that needs it.

:class:`SearchOptions` is what anyone starting a search sets (budget, storage, data, what to
report); :class:`WorkerOptions` is what a process running trials beside others needs on top
(its id, its sampler seed offset, heartbeats, stop signals, thread placement).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial

from search.data import DataOptions
from search.distributed.liveness import Liveness, liveness_settings
from search.engine.trial_loop import DEFAULT_MAX_FAILURES

if TYPE_CHECKING:
    from search.distributed.stop_signals import StopSignals

Callback = Callable[[optuna.Study, FrozenTrial], None]


@dataclass
class SearchOptions:
    """Settings of one search run (``None`` means: take the study file's).

    Attributes:
        trials: Finished trials the study should have in all.
        timeout: Stop starting trials after this many seconds.
        storage: Storage URL (``None``: ``$CAPSEARCH_STORAGE``, else ``storage/studies.db``).
        data_dir: Folder of local data copies (``None``: ``$CAPSEARCH_DATA``).
        offline: Never download data.
        evaluate_test: Score the best trial once on the test split at the end.
        summary: Print the end-of-search summary and rewrite the study note.
        trial_plots: Store a PNG artifact per finished trial, for the dashboard.
        extra_callbacks: ``callback(study, frozen_trial)`` after each trial.
        allow_narrowed: Resume a stored study whose space the study file only narrowed or
            gave more choices (see :mod:`search.engine.fingerprint`); any other difference
            stays an error.

    Example:
        >>> SearchOptions(trials=5).data
        DataOptions(data_dir=None, offline=False)
    """

    trials: int | None = None
    timeout: float | None = None
    storage: str | None = None
    data_dir: Path | None = None
    offline: bool = False
    evaluate_test: bool = True
    summary: bool = True
    trial_plots: bool = True
    extra_callbacks: list[Callback] = field(default_factory=list)
    allow_narrowed: bool = False

    @property
    def data(self) -> DataOptions:
        """The data settings alone, for the loaders."""
        return DataOptions(data_dir=self.data_dir, offline=self.offline)


@dataclass
class WorkerOptions:
    """Settings of a process that runs trials of a study beside others.

    Attributes:
        worker_id: Name in logs and on trials (``""``: a lone search).
        seed_offset: Added to the sampler's seed so workers do not propose twins.
        heartbeat_interval: ``None``: ``$CAPSEARCH_HEARTBEAT``, else 10 s.
        grace_period: ``None``: ``$CAPSEARCH_GRACE``, else 3 heartbeats.
        max_retry: ``None``: ``$CAPSEARCH_MAX_RETRY``, else 3.
        max_failures: Failed trials in a row after which the worker stops.
        signals: SIGINT/SIGTERM handling installed by the caller.
        configure_tensorflow: Apply :func:`search.distributed.devices.configure_tensorflow`
            (threads, GPU memory growth) before any model is built.
    """

    worker_id: str = ""
    seed_offset: int = 0
    heartbeat_interval: int | None = None
    grace_period: int | None = None
    max_retry: int | None = None
    max_failures: int = DEFAULT_MAX_FAILURES
    signals: StopSignals | None = None
    configure_tensorflow: bool = False

    def liveness(self) -> Liveness:
        """The heartbeat settings: these fields, else the environment, else the defaults."""
        return liveness_settings(self.heartbeat_interval, self.grace_period, self.max_retry)

    @property
    def prefix(self) -> str:
        """``"[w0] "`` in front of this worker's lines; empty for a lone search."""
        return f"[{self.worker_id}] " if self.worker_id else ""
