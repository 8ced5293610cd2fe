"""Storage benchmark: trials per second and storage cost per trial, SQLite versus PostgreSQL.

Runs ``python -m search.testing.null_worker launch`` (the real worker loop and launcher with a null
objective: two parameters, one report, no computation) for 1, 2, 4 and 8 worker processes on a
fresh SQLite file and on the PostgreSQL server, and prints a Markdown table. With a null
objective every millisecond of a trial is storage and bookkeeping: reserving the trial under
the study lock, writing its parameters, report, heartbeat and result.

Columns: ``trials/s`` is the study's throughput (trials / time from the first trial's start to
the last one's end) and ``ms/trial (wall)`` its inverse, medians over ``--repeat`` runs (default
3; the range in brackets: a 2-core machine shared with the database server is noisy);
``ms/trial/worker`` is how long one worker spends per trial (its loop time
divided by its trials, lock waits included); ``finished`` must equal the target (no overshoot);
``lock errors`` counts ``database is locked`` in the output, ``retried`` the lock conflicts the
storage retried silently. A last row runs 8 SQLite workers without the reservation lock to show
the race it prevents. Workers start their trials together, once every one of them is up (a
start barrier), so the figures measure trials rather than 8 processes importing their modules on
shared cores; ``--no-barrier`` lets each start as soon as it can. Before each PostgreSQL run the
database is vacuumed (:func:`vacuum`), as autovacuum would do on a production server.

Example:
    $ python -m benchmarks.bench_storage --trials 400
    $ python benchmarks/bench_storage.py --workers 1 8 --no-postgres
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

SECTION = "## Storage: trials per second with N workers on one study"
COMMAND = "python -m benchmarks.bench_storage --trials 400 --out BENCHMARKS.md"
PG_URL = os.environ.get("CAPSEARCH_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


def run_one(
    url: str, name: str, workers: int, trials: int, *extra: str, barrier: bool = True
) -> dict[str, Any]:
    """One launch; returns the parent's report plus the workers' statistics."""
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["CAPSEARCH_STORAGE"] = url
    argv = [sys.executable, "-m", "search.testing.null_worker", "launch", name]
    argv += ["-n", str(workers), "--trials", str(trials), "--quiet", *extra]
    if barrier:
        argv.append("--barrier")
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    reports = [line for line in output.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or not reports:
        raise RuntimeError(f"launch failed ({proc.returncode}):\n{output[-3000:]}")
    report: dict[str, Any] = json.loads(reports[-1][len("BENCH ") :])
    stats = [
        json.loads(line.split("STATS ", 1)[1]) for line in output.splitlines() if "STATS " in line
    ]
    per_trial = [1000 * s["loop_seconds"] / s["started"] for s in stats if s["started"]]
    report["ms_per_trial_worker"] = sum(per_trial) / len(per_trial) if per_trial else float("nan")
    report["lock_errors"] = output.lower().count("database is locked")
    report["retried"] = sum(s["lock_conflicts"] for s in stats)
    return report


def _engine(url: str, **options: Any) -> Any:
    """A SQLAlchemy engine on ``url`` through psycopg 3, the driver the service uses."""
    import sqlalchemy

    return sqlalchemy.create_engine(
        url.replace("postgresql://", "postgresql+psycopg://", 1), **options
    )


def postgres_answers(url: str) -> bool:
    try:
        engine = _engine(url, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


def vacuum(url: str) -> None:
    """``VACUUM ANALYZE`` the database, as autovacuum would between runs.

    Each run deletes its study; with autovacuum off (as on this project's test servers) the
    dead rows pile up, and every later run's index scans wade through them: 8-worker figures
    drifted 30 % slower over one bench run.
    """
    import sqlalchemy

    engine = _engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("VACUUM ANALYZE"))
    finally:
        engine.dispose()


def ms_per_trial(run: dict[str, Any]) -> float:
    """Wall milliseconds per trial of the study (first trial's start to last one's end)."""
    return 1000 * float(run["span_s"]) / int(run["trials"])


def row(backend: str, workers: int, trials: int, runs: list[dict[str, Any]], note: str = "") -> str:
    """One table row: medians over ``runs`` (the range of ms/trial in brackets when repeated)."""
    ms = sorted(ms_per_trial(r) for r in runs)
    median_ms = statistics.median(ms)
    spread = f" ({ms[0]:.1f}–{ms[-1]:.1f})" if len(ms) > 1 else ""
    finished = "/".join(str(r["finished"]) for r in runs)
    if any(r["finished"] != trials for r in runs):
        finished += f" (target {trials})"
    others = sum(r["trials"] - r["finished"] for r in runs)
    per_worker = statistics.median(r["ms_per_trial_worker"] for r in runs)
    return (
        f"| {backend} | {workers} | {1000 / median_ms:.1f} | {median_ms:.1f}{spread} | "
        f"{per_worker:.1f} | {finished} | {others} | "
        f"{sum(r['lock_errors'] for r in runs)} | {sum(r['retried'] for r in runs)} | "
        f"{statistics.median(r['wall_s'] for r in runs):.1f} |{note}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the table into this BENCHMARKS.md")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per row; the table shows medians"
    )
    parser.add_argument("--no-race", action="store_true", help="skip the unlocked row")
    parser.add_argument(
        "--no-barrier",
        action="store_true",
        help="let each worker start trials as soon as it is up (start-up shares the cores)",
    )
    args = parser.parse_args(argv)

    import optuna
    import sqlalchemy

    from search.storage.studies import delete_study_if_present

    backends = ["sqlite"]
    if not args.no_postgres:
        if postgres_answers(PG_URL):
            backends.append("postgresql")
        else:
            print(f"PostgreSQL not answering at {PG_URL}; SQLite only", file=sys.stderr)
    table: list[str] = []

    def emit(line: str) -> None:
        print(line, flush=True)
        table.append(line)

    emit(
        f"{os.cpu_count()} cores, Python {platform.python_version()}, Optuna {optuna.__version__}, "
        f"SQLAlchemy {sqlalchemy.__version__}; null objective, {args.trials} trials per run, "
        f"median of {args.repeat} runs\n"
    )
    emit(
        "| storage | workers | trials/s | ms/trial (wall) | ms/trial/worker | finished | "
        "other trials | lock errors | retried | wall s |"
    )
    emit("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    barrier = not args.no_barrier
    most = max(args.workers)
    at_most: dict[str, float] = {}  # median ms per trial with the most workers, per storage
    errors, exact = 0, True
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            for workers in args.workers:
                runs = []
                for _ in range(args.repeat):
                    name = f"bench-{workers}-{uuid.uuid4().hex[:8]}"
                    if backend == "sqlite":
                        url = f"sqlite:///{Path(tmp) / f'{name}.db'}"
                        runs.append(run_one(url, name, workers, args.trials, barrier=barrier))
                        continue
                    vacuum(PG_URL)
                    try:
                        runs.append(run_one(PG_URL, name, workers, args.trials, barrier=barrier))
                    finally:
                        delete_study_if_present(PG_URL, name)
                emit(row(backend, workers, args.trials, runs))
                if workers == most:
                    at_most[backend] = statistics.median(ms_per_trial(r) for r in runs)
                errors += sum(r["lock_errors"] for r in runs)
                exact = exact and all(r["finished"] == args.trials for r in runs)
        if not args.no_race:
            runs = []
            for _ in range(args.repeat):
                name = f"race-{uuid.uuid4().hex[:8]}"
                url = f"sqlite:///{Path(tmp) / f'{name}.db'}"
                runs.append(run_one(url, name, 8, args.trials, "--unlocked", barrier=barrier))
            overshoot = max(r["finished"] for r in runs) - args.trials
            note = f" up to {overshoot} trials too many" if overshoot > 0 else " no overshoot"
            emit(row("sqlite, no lock", 8, args.trials, runs, note))
    if args.out is not None:
        from benchmarks.bench_search import merge_section

        section = "\n".join([SECTION, "", f"`{COMMAND}` on {time.strftime('%Y-%m-%d')}:", ""])
        section += "\n" + "\n".join(table) + "\n"
        goals = {"sqlite": 50.0, "postgresql": 20.0}
        verdicts = [
            f"{backend} {ms:.1f} ms (goal <= {goals[backend]:.0f}: "
            f"{'met' if ms <= goals[backend] else 'not met'})"
            for backend, ms in at_most.items()
        ]
        section += (
            f"\nAt {most} workers: {'; '.join(verdicts)}. Lock errors: {errors}; "
            f"every locked run finished exactly {args.trials} trials: {'yes' if exact else 'no'}.\n"
        )
        old = args.out.read_text() if args.out.exists() else ""
        args.out.write_text(merge_section(old, section, SECTION))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
