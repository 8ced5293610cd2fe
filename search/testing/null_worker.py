"""The worker loop with a plain-Python objective: for tests and storage benchmarks.

The same code as ``capsearch workers`` / ``capsearch worker``
(:func:`search.distributed.launch_workers`
and :func:`search.distributed.run_trials`), with a null objective instead of Keras training, so that
hundreds of trials from many processes take seconds. Storage comes from ``--storage`` or
``CAPSEARCH_STORAGE``; heartbeats from ``CAPSEARCH_HEARTBEAT`` / ``CAPSEARCH_GRACE``.

Example:
    $ export CAPSEARCH_STORAGE=sqlite:////tmp/b.db
    $ python -m search.testing.null_worker launch b -n 8 --trials 400 --quiet
    ...
    BENCH {"finished": 400, "trials": 400, "states": {"COMPLETE": 400}, ...}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import optuna

from search import settings
from search.distributed.devices import INTRA_OP_ENV
from search.distributed.launcher import launch_workers
from search.distributed.liveness import liveness_settings
from search.distributed.stop_signals import StopSignals
from search.distributed.study_lock import study_lock
from search.distributed.worker_storage import open_worker_storage
from search.engine.study import FINISHED
from search.engine.trial_loop import run_trials, seed_offset_for
from search.storage.urls import mask_url, resolve_storage_url

STATS_TAG = "STATS"
BENCH_TAG = "BENCH"


@dataclass
class NullObjective:
    """Two parameters, one intermediate report, an optional sleep, failures on request."""

    sleep: float = 0.0
    fail_on: frozenset[int] = field(default_factory=frozenset)
    nan_on: frozenset[int] = field(default_factory=frozenset)
    fail_always: bool = False

    def __call__(self, trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -10.0, 10.0)
        k = trial.suggest_int("k", 0, 5)
        if self.sleep:
            time.sleep(self.sleep)
        if self.fail_always or trial.number in self.fail_on:
            raise RuntimeError(f"injected failure in trial {trial.number}")
        if trial.number in self.nan_on:
            return float("nan")
        value = (x - 2.0) ** 2 + k
        trial.report(value, step=0)
        return value


def _numbers(text: str) -> frozenset[int]:
    return frozenset(int(part) for part in text.split(",") if part.strip())


def _create(name: str, url: str) -> optuna.Study:
    storage = open_worker_storage(url, liveness_settings())
    with study_lock(storage, name):
        return optuna.create_study(
            study_name=name, storage=storage, direction="minimize", load_if_exists=True
        )


def cmd_launch(args: argparse.Namespace) -> int:
    url = resolve_storage_url(args.storage)
    study = _create(args.study, url)
    print(f"study {args.study} in {mask_url(url)}: {args.n} workers, target {args.trials}")

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="capsearch-barrier-") as barrier:
        barrier_args = ["--barrier-dir", barrier, "--barrier-count", str(args.n)]

        def argv_for(worker: str) -> list[str]:
            argv = [sys.executable, "-m", "search.testing.null_worker", "worker", args.study]
            argv += ["--worker-id", worker, *_objective_args(args)]
            return argv + barrier_args if args.barrier else argv

        code = launch_workers(args.n, argv_for, url, lambda line: print(line, flush=True))
    wall = time.perf_counter() - start
    trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    report = {
        "finished": sum(t.state in FINISHED for t in trials),
        "trials": len(trials),
        "states": dict(Counter(t.state.name for t in trials)),
        "wall_s": round(wall, 3),
        "span_s": round(span, 3),
        "exit": code,
    }
    print(f"{BENCH_TAG} {json.dumps(report)}", flush=True)
    return code


def _objective_args(args: argparse.Namespace) -> list[str]:
    out = ["--trials", str(args.trials), "--sleep", str(args.sleep), "--poll", str(args.poll)]
    for flag, value in (("--fail-on", args.fail_on), ("--nan-on", args.nan_on)):
        if value:
            out += [flag, value]
    for flag, on in (
        ("--fail-always", args.fail_always),
        ("--report-env", args.report_env),
        ("--unlocked", args.unlocked),
        ("--quiet", args.quiet),
    ):
        if on:
            out.append(flag)
    if args.timeout is not None:
        out += ["--timeout", str(args.timeout)]
    return out


def _wait_at_barrier(folder: str, worker: str, count: int) -> None:
    """Mark this worker ready in ``folder`` and wait until ``count`` workers are.

    With the barrier, trials start once every worker has imported its modules and opened its
    storage, so the figures measure trials, not processes starting on shared cores.
    """
    Path(folder, worker).touch()
    deadline = time.monotonic() + 120
    while len(os.listdir(folder)) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def cmd_worker(args: argparse.Namespace) -> int:
    worker = args.worker_id
    signals = StopSignals()
    with signals.installed():
        if args.report_env:
            cuda = os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")
            intra = settings.intra_op_threads()
            threads = "<unset>" if intra is None else intra
            print(
                f"[{worker}] env CUDA_VISIBLE_DEVICES={cuda} {INTRA_OP_ENV}={threads}", flush=True
            )
        url = resolve_storage_url(args.storage)
        liveness = liveness_settings()
        storage = open_worker_storage(url, liveness)
        study = optuna.load_study(
            study_name=args.study,
            storage=storage,
            sampler=optuna.samplers.RandomSampler(seed=seed_offset_for(worker)),
        )
        if args.barrier_dir:
            _wait_at_barrier(args.barrier_dir, worker, args.barrier_count)

        def echo(line: str) -> None:
            print(line, flush=True)

        def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            if not args.quiet:
                echo(f"[{worker}] trial {trial.number} {trial.state.name} {trial.value}")

        objective = NullObjective(
            sleep=args.sleep,
            fail_on=_numbers(args.fail_on or ""),
            nan_on=_numbers(args.nan_on or ""),
            fail_always=args.fail_always,
        )
        result = run_trials(
            study,
            objective,
            target=args.trials,
            timeout=args.timeout,
            worker=worker,
            echo=echo,
            callbacks=[report],
            liveness=liveness,
            poll_interval=args.poll,
            gc_after_trial=False,
            signals=signals,
            reserve_under_lock=not args.unlocked,
        )
    echo(f"[{worker}] {result.describe()}")
    echo(f"[{worker}] {STATS_TAG} {json.dumps(asdict(result))}")
    return 1 if result.reason == "failures" else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m search.testing.null_worker", description=__doc__
    )
    sub = parser.add_subparsers(dest="command", required=True)
    launch = sub.add_parser("launch", help="create the study and run N worker processes")
    launch.add_argument("-n", type=int, default=2)
    launch.add_argument(
        "--barrier", action="store_true", help="start trials once every worker is ready"
    )
    worker = sub.add_parser("worker", help="one worker process")
    worker.add_argument("--worker-id", default=f"w{os.getpid()}")
    worker.add_argument("--barrier-dir", help=argparse.SUPPRESS)
    worker.add_argument("--barrier-count", type=int, default=0, help=argparse.SUPPRESS)
    for p in (launch, worker):
        p.add_argument("study")
        p.add_argument("--storage")
        p.add_argument("--trials", type=int, required=True)
        p.add_argument("--timeout", type=float)
        p.add_argument("--sleep", type=float, default=0.0, help="seconds per trial")
        p.add_argument(
            "--poll",
            type=float,
            default=1.0,  # run_trials' default, as capsearch workers poll
            help="seconds between budget checks while waiting for others' trials",
        )
        p.add_argument("--fail-on", help="trial numbers that raise, e.g. 3,5")
        p.add_argument("--nan-on", help="trial numbers that return NaN")
        p.add_argument("--fail-always", action="store_true")
        p.add_argument("--report-env", action="store_true")
        p.add_argument("--unlocked", action="store_true", help="no reservation lock (racy)")
        p.add_argument("--quiet", action="store_true", help="no line per trial")
    launch.set_defaults(func=cmd_launch)
    worker.set_defaults(func=cmd_worker)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
