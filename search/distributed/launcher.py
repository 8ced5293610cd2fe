"""The launcher: ``capsearch workers`` starts worker processes on one study and waits for them.

:func:`launch_workers` starts worker processes with the GPU and thread placement of
:func:`search.distributed.devices.plan_workers`, passes the storage URL through
``CAPSEARCH_STORAGE`` (never
on the command line), streams their output line by line, forwards SIGINT and SIGTERM, and waits.
:func:`search.runs.run_workers` checks the input and creates the study once before any worker
starts, then calls it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from search.storage.urls import STORAGE_ENV_VAR, mask_text

if TYPE_CHECKING:
    from search.console import Echo

__all__ = ["launch_workers"]


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
    :func:`search.distributed.devices.plan_workers` (one GPU each round-robin with memory growth,
    or the
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
    """
    from search.distributed.devices import available_cpus, detect_gpus, plan_workers

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
