"""The launcher: ``capsearch workers`` starts worker processes on one study and waits for them.

:func:`launch_workers` starts worker processes with the GPU and thread placement of
:func:`search.devices.plan_workers`, passes the storage URL through ``CAPSEARCH_STORAGE`` (never
on the command line), streams their output line by line, forwards SIGINT and SIGTERM, and waits.
:func:`run_workers` checks the input and creates the study once before any worker starts.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from search.storage.urls import STORAGE_ENV_VAR, mask_text, mask_url, resolve_storage_url
from search.workers.liveness import liveness_settings
from search.workers.study_lock import study_lock
from search.workers.worker_storage import open_worker_storage

if TYPE_CHECKING:
    from search.runner import Echo, SearchOptions

__all__ = ["launch_workers", "run_workers"]


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
