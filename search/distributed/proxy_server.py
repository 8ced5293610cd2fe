"""``capsearch proxy``: Optuna's gRPC storage proxy beside the database, keeping capsearch's rules.

:func:`serve_proxy` opens the database as a worker would (lock conflicts retried), wraps it in
Optuna's cached storage (``optuna.storages.get_storage``, as Optuna's docs advise for the
proxy) and serves it with Optuna's own server, :func:`optuna.storages.run_grpc_proxy_server`.
Calls that meet a database outage fail at once with an error the workers recognise (they wait
and call again, each with its own warning line); this log gets one line per outage. Three
storage calls
are read as capsearch's conventions (:mod:`search.storage.proxy`); everything else passes
through unchanged:

* the handshake name answers :data:`~search.storage.proxy.PROTOCOL`;
* a heartbeat attribute becomes Optuna's own heartbeat of the trial (database clock);
* a reservation (``create_new_trial`` with :data:`~search.storage.proxy.RESERVE_KEY`) runs the
  trial loop's critical section here, under the same study lock as direct workers (advisory
  lock on PostgreSQL): find the trial an earlier try of the same reservation made (its token,
  :data:`~search.storage.proxy.RESERVATION_KEY`), else count finished and RUNNING trials,
  refuse past the target, else take a WAITING trial or create a RUNNING one; then record the
  trial's first heartbeat, which spares the worker one request per trial.

A thread fails and re-queues the trials of dead workers (no heartbeat for the grace period the
workers asked for) of every study reserved through this proxy, every heartbeat interval.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
import warnings
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search import settings
from search._compat import optuna as optuna_compat
from search.console import Echo
from search.distributed.liveness import Liveness, _fail_stale_trials
from search.distributed.study_lock import study_lock
from search.distributed.worker_storage import open_worker_storage
from search.errors import StorageError, StorageUnavailable, UsageError
from search.storage.proxy import (
    BUDGET_TAKEN,
    HANDSHAKE_NAME,
    HEARTBEAT_KEY,
    PROTOCOL,
    RESERVATION_KEY,
    RESERVE_KEY,
)
from search.storage.retry import (
    DEFAULT_STORAGE_WAIT_S,
    OUTAGES,
    is_outage,
    outage_wait_seconds,
    with_retry,
)
from search.storage.urls import mask_url

__all__ = ["ProxyBackend", "pin_to_cpu", "serve_proxy"]

_logger = logging.getLogger(__name__)

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
_SERVER_THREADS = 8
# Connections kept open: one per server thread, and the study lock's beside a reservation's
# session (one reservation at a time). Fewer (the default 2, plus 2 opened and closed again
# at need) made the proxy open a new connection for 2 of 3 trials at 8 workers.
_POOL_SIZE = _SERVER_THREADS + 1
_OUTAGE_MARK = "capsearch-proxy: database unreachable"


@dataclass
class _Counts:
    """What the liveness check reports back (``_fail_stale_trials`` fills it)."""

    stale: int = 0
    requeued: int = 0


@dataclass
class _Watched:
    """A study reserved through this proxy, with the liveness its workers asked for."""

    name: str
    liveness: Liveness


class ProxyBackend:
    """The storage Optuna's proxy server serves: Optuna's cached RDB storage, three calls read.

    Args:
        rdb: The database (from :func:`open_worker_storage`).
        echo: Where the proxy's lines go (dead workers' trials failed, outages).
    """

    def __init__(self, rdb: optuna.storages.RDBStorage, echo: Echo = print) -> None:
        self.rdb = rdb
        self.echo = echo
        self.storage = optuna.storages.get_storage(rdb)  # Optuna's cache in front of it
        self._lock = threading.Lock()
        self._studies: dict[int, optuna.Study] = {}
        self._watched: dict[int, _Watched] = {}
        self.reservations = 0
        self.refusals = 0
        for name in ("create_new_trial", "set_trial_system_attr", "get_study_id_from_name"):
            setattr(self.storage, name, self._guard(getattr(self, f"_{name}")))
        for name in _passed_through(self.storage):
            setattr(self.storage, name, self._guard(getattr(self.storage, name)))

    def _guard(self, method: Callable[..., Any]) -> Callable[..., Any]:
        """A database outage: one line in this log, and an error the workers recognise."""

        @functools.wraps(method)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                value = method(*args, **kwargs)
            except Exception as exc:
                # StorageUnavailable: the study lock waited out its bound; still an outage
                # for the worker, which waits by its own bound.
                if not (is_outage(exc) or isinstance(exc, StorageUnavailable)):
                    raise
                OUTAGES.failed(exc, self.rdb.url)
                raise ConnectionError(f"{_OUTAGE_MARK}: {exc.__class__.__name__}") from None
            OUTAGES.succeeded(self.rdb.url)
            return value

        return guarded

    # The three calls read as conventions.
    def _get_study_id_from_name(self, study_name: str) -> int:
        if study_name == HANDSHAKE_NAME:
            return PROTOCOL
        return self._inner("get_study_id_from_name")(study_name)

    def _set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        if key == HEARTBEAT_KEY:
            self.rdb.record_heartbeat(trial_id)
            return
        self._inner("set_trial_system_attr")(trial_id, key, value)

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is None or RESERVE_KEY not in template_trial.system_attrs:
            return int(self._inner("create_new_trial")(study_id, template_trial))
        request = dict(template_trial.system_attrs[RESERVE_KEY])
        return self._reserve(study_id, dict(template_trial.user_attrs), request)

    def _inner(self, name: str) -> Callable[..., Any]:
        method: Callable[..., Any] = getattr(type(self.storage), name).__get__(self.storage)
        return method

    def _study(self, study_id: int) -> optuna.Study:
        study = self._studies.get(study_id)
        if study is None:
            name = self._inner("get_study_name_from_id")(study_id)
            study = optuna.load_study(study_name=name, storage=self.storage)
            self._studies[study_id] = study
        return study

    def _reserve(self, study_id: int, user_attrs: dict[str, Any], request: dict[str, Any]) -> int:
        """The trial loop's critical section, run here for a worker of the proxy."""
        target = int(request["target"])
        token = request.get("token")
        liveness = Liveness(
            int(request.get("heartbeat", 10)),
            int(request.get("grace", 30)),
            int(request.get("max_retry", 3)),
        )
        with self._lock:
            study = self._study(study_id)
            self._watched[study_id] = _Watched(study.study_name, liveness)
            with study_lock(self.rdb, study.study_name) as connection:
                trial_id = None
                if request.get("again"):  # a try sent again: its trial may be stored already
                    trial_id = self._earlier_try(study, connection, token, user_attrs)
                if trial_id is None:
                    finished, running, waiting = self._count(study, connection)
                    if finished + running >= target:
                        self.refusals += 1
                        raise KeyError(
                            f"{BUDGET_TAKEN}: {finished} finished + {running} running of {target}"
                        )
                    self.reservations += 1
                    marks = {RESERVATION_KEY: token} if token else None
                    trial_id = optuna_compat.reserve_trial(
                        study, user_attrs, waiting=waiting > 0, system_attrs=marks
                    )
        # The worker's first heartbeat, here: one request less per trial (the client skips it).
        self.rdb.record_heartbeat(trial_id)
        return int(trial_id)

    def _earlier_try(
        self, study: optuna.Study, connection: Any, token: Any, user_attrs: dict[str, Any]
    ) -> int | None:
        """The RUNNING trial an earlier try of this reservation made, or None.

        A try whose answer was lost (the proxy or its database went away after the trial was
        stored) is sent again with the same token; its trial is the one to run, not a second
        one. A re-queued copy of a failed trial keeps the token among its system attributes
        but not the worker's id (nor does a WAITING trial taken by a direct worker get a new
        token), so the worker's attributes must match too.
        """
        if not token:
            return None

        def find(on: Any) -> list[int]:
            return optuna_compat.running_trials_with_system_attr(on, study, RESERVATION_KEY, token)

        if connection is not None:
            found = find(connection)
        else:
            with self.rdb.engine.connect() as own:
                found = with_retry(lambda: find(own))
        for trial_id in found:
            trial = self.rdb.get_trial(trial_id)
            if all(trial.user_attrs.get(k) == v for k, v in user_attrs.items()):
                _logger.info("reservation %s sent again: trial %d", token, trial.number)
                return trial_id
        return None

    def _count(self, study: optuna.Study, connection: Any) -> tuple[int, int, int]:
        query = optuna_compat.state_counts_query(study)
        if connection is not None:
            states: Counter[TrialState] = Counter(dict(connection.execute(query).all()))
        else:
            with self.rdb.engine.connect() as own:
                states = with_retry(lambda: Counter(dict(own.execute(query).all())))
        return (
            sum(states[s] for s in _FINISHED),
            states[TrialState.RUNNING],
            states[TrialState.WAITING],
        )

    def check_liveness(self) -> None:
        """Fail and re-queue the dead workers' trials of every study reserved through here."""
        for study_id, watched in list(self._watched.items()):
            with self._lock:
                self.rdb.grace_period = watched.liveness.grace_period
                study = self._study(study_id)
                with study_lock(self.rdb, watched.name):
                    _fail_stale_trials(
                        study, self.rdb, watched.liveness, "[proxy] ", self.echo, _Counts()
                    )


def pin_to_cpu(cpu: int) -> None:
    """Keep this process (its threads, and those it starts from now on) on one CPU.

    Raises:
        UsageError: Not Linux, or ``cpu`` is not among the CPUs this process may use.
    """
    if not hasattr(os, "sched_setaffinity"):
        raise UsageError(
            "--cpu needs Linux (os.sched_setaffinity); start the proxy without it, or pin it "
            "with the system's own tool"
        )
    allowed = sorted(os.sched_getaffinity(0))
    if cpu not in allowed:
        raise UsageError(
            f"--cpu {cpu} is not a CPU this process may use ({_ranges(allowed)}); pass one of them"
        )
    tasks = Path("/proc/self/task")  # threads started before this call (imports) too
    for thread_id in [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [0]:
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(thread_id, {cpu})


def _ranges(cpus: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2, 5``."""
    parts: list[str] = []
    for cpu in cpus:
        if parts and cpu == int(parts[-1].split("-")[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{cpu}"
        else:
            parts.append(str(cpu))
    return ", ".join(parts)


def _meanwhile() -> str:
    """What the proxy does while its database is away (its warning line says it)."""
    wait, here = settings.STORAGE_WAIT.name, outage_wait_seconds()
    return (
        f"calls fail at once until it is back and the workers wait by their own {wait} "
        f"({DEFAULT_STORAGE_WAIT_S} s by default); a reservation waits here up to {here} s "
        f"({wait} of the proxy)"
    )


def _passed_through(storage: optuna.storages.BaseStorage) -> list[str]:
    """The storage's public calls that the server makes, besides the three read here."""
    read_here = {"create_new_trial", "set_trial_system_attr", "get_study_id_from_name"}
    names = [
        name
        for name in dir(optuna.storages.BaseStorage)
        if not name.startswith("_") and callable(getattr(optuna.storages.BaseStorage, name))
    ]
    return [n for n in names if n not in read_here and hasattr(storage, n)]


class _QuietOutages(logging.Filter):
    """Keep gRPC's traceback of a call that failed in a database outage out of the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and _OUTAGE_MARK in str(exc))


def serve_proxy(
    url: str,
    *,
    host: str = "127.0.0.1",
    port: int = 13000,
    liveness: Liveness,
    echo: Echo = print,
    stop: threading.Event | None = None,
    cpu: int | None = None,
) -> int:
    """Serve the storage at ``url`` through Optuna's gRPC proxy until SIGINT or SIGTERM.

    Args:
        url: The database (``postgresql://...``; SQLite works for one host).
        host: Address to listen on; 127.0.0.1 by default (the proxy has no TLS and no
            authentication: see ``docs/many-workers.md``).
        port: TCP port, 1-65535.
        liveness: How often the dead workers' trials are looked for.
        echo: Where the proxy's lines go.
        stop: Set to stop (tests); SIGINT and SIGTERM set it too.
        cpu: Run on this one CPU (Linux). The proxy's threads share one interpreter lock, so
            it never uses more than one core; kept on one, the lock does not change hands
            across cores, and a trial costs it about half the CPU time (``BENCHMARKS.md``).

    Returns:
        0 after a clean stop.

    Raises:
        UsageError: ``port`` out of range, the address cannot be bound, or ``cpu`` is not one
            this process may run on.
        StorageError: The database cannot be opened (or ``url`` is itself a proxy).
    """
    if not 1 <= port <= 65535:
        raise UsageError(
            f"port {port} is out of range: a TCP port is 1 to 65535; pass --port in range"
        )
    if url.strip().lower().startswith("grpc://"):
        raise StorageError(
            f"Cannot serve '{mask_url(url)}': a proxy serves a database, not another proxy; "
            "pass --storage postgresql://..."
        )
    if cpu is not None:
        pin_to_cpu(cpu)  # first: every thread started from here on inherits it
    rdb = open_worker_storage(url, liveness, wait_outages=False, pool_size=_POOL_SIZE)
    assert isinstance(rdb, optuna.storages.RDBStorage)
    backend = ProxyBackend(rdb, echo)
    OUTAGES.meanwhile = _meanwhile
    logging.getLogger("grpc._server").addFilter(_QuietOutages())
    stop = stop or threading.Event()
    previous: dict[int, Any] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        raise _Stopped(signal.Signals(signum).name)

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)

    def check_liveness() -> None:
        while not stop.wait(liveness.heartbeat_interval):
            try:
                backend.check_liveness()
            except Exception as exc:  # an outage: the next round tries again
                if not is_outage(exc):
                    _logger.warning("liveness check failed: %s", exc)

    threading.Thread(target=check_liveness, name="liveness", daemon=True).start()
    echo(
        f"storage proxy on grpc://{host}:{port} for {mask_url(url)} "
        f"(Optuna {optuna.__version__}, no TLS, no authentication); Ctrl-C to stop"
    )
    why = "stopped"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.run_grpc_proxy_server(
                backend.storage,
                host=host,
                port=port,
                thread_pool=ThreadPoolExecutor(max_workers=_SERVER_THREADS),
            )
    except RuntimeError as exc:  # grpc: "Failed to bind to address"
        raise UsageError(
            f"cannot listen on {host}:{port} ({exc}); pass another --port or stop what uses it"
        ) from None
    except _Stopped as exc:
        why = f"stopped by {exc}"
    finally:
        stop.set()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        with contextlib.suppress(Exception):
            rdb.remove_session()
            rdb.engine.dispose()
    echo(
        f"storage proxy on grpc://{host}:{port} {why} ({backend.reservations} trials reserved, "
        f"{backend.refusals} refused past the budget)"
    )
    return 0


class _Stopped(Exception):
    """SIGINT or SIGTERM: leave Optuna's server loop."""
