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

With ``--proxy``, the second table: 8, 32 and 64 workers on one study, directly on PostgreSQL
and through ``capsearch proxy`` (Optuna's gRPC storage proxy), each run in a database of its
own on the server (created and dropped here), so that ``pg_stat_activity`` counts only the
run's connections: peak server connections (sampled every 50 ms), server CPU per trial (the
CPU time of the run's PostgreSQL backends, plus the proxy process's), exact budget, errors.
The ``proxy --cpu 0`` rows pin the proxy to CPU 0 and the workers to the other CPUs, as a proxy
on a host of its own would run; the machine's PostgreSQL still runs on every CPU, beside the
workers. The ``split`` rows put a PostgreSQL server of the bench's own
(:class:`search.testing.throwaway_postgres.ThrowawayPostgres`, ``fsync`` on) and the proxy on
CPU 0 and the workers on the others, as a database host and worker hosts would be: the
workers never run on the server side's CPU. Each row is the median run by trials/s of
``--repeat``; the runs go in rounds (every row once, then again), so that a slow spell of the
shared machine does not fall on one row only.

Example:
    $ python -m benchmarks.bench_storage --trials 400
    $ python benchmarks/bench_storage.py --workers 1 8 --no-postgres
    $ python -m benchmarks.bench_storage --proxy --workers 8 32 64 --trials 640
    $ python -m benchmarks.bench_storage --proxy --storages proxy --workers 8 64 --trials 640
    $ python -m benchmarks.bench_storage --proxy --storages split --workers 8 64 --repeat 5
"""

from __future__ import annotations

import argparse
import contextlib
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
PROXY_SECTION = "## Storage: 8 to 64 workers, PostgreSQL directly and through the gRPC proxy"
PROXY_COMMAND = "python -m benchmarks.bench_storage --proxy --workers 8 32 64 --trials 640"
COMMAND = "python -m benchmarks.bench_storage --trials 400 --out BENCHMARKS.md"
PG_URL = os.environ.get("CAPSEARCH_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")


def run_one(
    url: str,
    name: str,
    workers: int,
    trials: int,
    *extra: str,
    barrier: bool = True,
    cpus: str | None = None,
) -> dict[str, Any]:
    """One launch (on the CPUs ``cpus`` names, ``taskset`` style, if given); returns the
    parent's report plus the workers' statistics."""
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["CAPSEARCH_STORAGE"] = url
    pinned = ["taskset", "-c", cpus] if cpus else []
    argv = [*pinned, sys.executable, "-m", "search.testing.null_worker", "launch", name]
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


class ServerSampler:
    """Samples the connections and backend CPU of one database in a thread, every 50 ms."""

    def __init__(self, admin_url: str, database: str) -> None:
        import threading

        self.engine = _engine(admin_url, isolation_level="AUTOCOMMIT")
        self.database = database
        self.peak = 0
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ServerSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.engine.dispose()

    def _run(self) -> None:
        import psutil
        import sqlalchemy

        query = sqlalchemy.text("SELECT pid FROM pg_stat_activity WHERE datname = :d")
        with self.engine.connect() as connection:
            while not self._stop.wait(0.05):
                pids = [row[0] for row in connection.execute(query, {"d": self.database})]
                self.peak = max(self.peak, len(pids))
                for pid in pids:
                    try:
                        times = psutil.Process(pid).cpu_times()
                    except (psutil.Error, OSError):
                        continue
                    self.cpu[pid] = max(self.cpu.get(pid, 0.0), times.user + times.system)

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())


def _proxy_run(
    server_url: str, backend: str, workers: int, args: argparse.Namespace
) -> dict[str, Any]:
    """One run in a database of its own on the server at ``server_url``: the launch's report,
    peak connections, CPU times."""
    import psutil
    import sqlalchemy

    admin = _engine(server_url, isolation_level="AUTOCOMMIT")
    database = f"capsearch_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{database}"'))
    db_url = server_url.rsplit("/", 1)[0] + f"/{database}"
    proxy: subprocess.Popen[str] | None = None
    proxy_cpu = 0.0
    pinned = backend in ("pinned", "split")
    others = _other_cpus(0) if pinned else None
    try:
        url = db_url
        if backend != "postgresql":
            proxy, url = _start_proxy(db_url, cpu=0 if pinned else None)
        with ServerSampler(server_url, database) as sampler:
            try:
                run = run_one(
                    url, "bench", workers, args.trials, barrier=not args.no_barrier, cpus=others
                )
            except RuntimeError as exc:  # e.g. the server's max_connections reached
                run = {"failed": _why(str(exc))}
            if proxy is not None:
                times = psutil.Process(proxy.pid).cpu_times()
                proxy_cpu = times.user + times.system
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.communicate(timeout=60)
        with admin.connect() as connection:
            connection.execute(
                sqlalchemy.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            )
        admin.dispose()
    return {**run, "peak": sampler.peak, "server_cpu": sampler.cpu_seconds, "proxy_cpu": proxy_cpu}


def _other_cpus(cpu: int) -> str:
    """The CPUs this process may use but ``cpu``, ``taskset`` style (``"1,2,3"``)."""
    return ",".join(str(c) for c in sorted(os.sched_getaffinity(0)) if c != cpu)


_LABELS = {
    "postgresql": "postgresql",
    "proxy": "proxy",
    "pinned": "proxy --cpu 0",
    "split": "split",
}


def proxy_compare(args: argparse.Namespace) -> int:
    """The second table: direct PostgreSQL versus the proxy, 8 to 64 workers."""
    with contextlib.ExitStack() as stack:
        return _proxy_table(args, stack)


def _split_server(stack: contextlib.ExitStack) -> str | None:
    """Start the ``split`` rows' own PostgreSQL on CPU 0 (stopped when ``stack`` closes);
    its admin URL, or None (with the reason on stderr) when none can be started here."""
    from search.testing.throwaway_postgres import ThrowawayPostgres, missing_reason

    reason = missing_reason()
    if reason is not None:
        print(f"no split rows: {reason}", file=sys.stderr)
        return None
    server = ThrowawayPostgres(cpus="0", durable=True)
    stack.callback(server.cleanup)
    server.init()
    server.start()
    return server.url


def _proxy_table(args: argparse.Namespace, stack: contextlib.ExitStack) -> int:
    lines: list[str] = []

    def emit(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    storages = list(args.storages)
    if len(os.sched_getaffinity(0)) < 2:
        for kind in {"pinned", "split"} & set(storages):
            print(f"one CPU only: no {kind} rows", file=sys.stderr)
            storages.remove(kind)
    servers = {kind: PG_URL for kind in storages}
    if "split" in storages:
        own = _split_server(stack)
        if own is None:
            storages.remove("split")
        else:
            servers["split"] = own
    emit(
        f"{os.cpu_count()} cores (shared with the server and the proxy), null objective, "
        f"{args.trials} trials per run, workers, proxy and server on one host (loopback); "
        f"each row the median of {args.repeat} runs by trials/s (range in brackets)"
    )
    if "pinned" in storages:
        emit("`proxy --cpu 0`: the proxy on CPU 0, the workers on the others (`taskset`)")
    if "split" in storages:
        emit(
            "`split`: the proxy and a PostgreSQL server of the bench's own (`fsync` on) on CPU 0, "
            "the workers on the others, as a database host and worker hosts"
        )
    emit("")
    emit(
        "| storage | workers | trials/s | ms/trial/worker | peak server connections | "
        "server CPU ms/trial | finished (target) | other trials | errors |"
    )
    emit("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    results: dict[tuple[str, int], dict[str, Any]] = {}
    # Rounds of every row in turn, not each row's runs in a row: a slow spell of the shared
    # machine then slows one run of every row instead of every run of one.
    all_runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for _ in range(args.repeat):
        for backend in storages:
            for workers in args.workers:
                run = _proxy_run(servers[backend], backend, workers, args)
                all_runs.setdefault((backend, workers), []).append(run)
    for backend in storages:
        label = _LABELS[backend]
        for workers in args.workers:
            runs = all_runs[(backend, workers)]
            failed = [r for r in runs if "failed" in r]
            if failed:
                emit(
                    f"| {label} | {workers} | – | – | {max(r['peak'] for r in runs)} | – | "
                    f"failed: {failed[0]['failed']} | – | {len(failed)} |"
                )
                continue
            rates = sorted(1000 / ms_per_trial(r) for r in runs)
            run = sorted(runs, key=lambda r: 1000 / ms_per_trial(r))[len(runs) // 2]
            trials = int(run["trials"])
            errors = sum(int(r["lock_errors"]) + int(r["exit"] != 0) for r in runs)
            cpu_ms = 1000 * (run["server_cpu"] + run["proxy_cpu"]) / max(trials, 1)
            proxy_ms = 1000 * run["proxy_cpu"] / max(trials, 1)
            finished = sorted({int(r["finished"]) for r in runs})
            peak = max(r["peak"] for r in runs)
            exact = finished == [args.trials]
            results[(backend, workers)] = {**run, "errors": errors, "exact": exact, "peak": peak}
            spread = f" [{rates[0]:.1f}-{rates[-1]:.1f}]" if len(rates) > 1 else ""
            emit(
                f"| {label} | {workers} | {1000 / ms_per_trial(run):.1f}{spread} | "
                f"{run['ms_per_trial_worker']:.1f} | {peak} | {cpu_ms:.1f}"
                f"{f' ({proxy_ms:.1f} proxy)' if backend != 'postgresql' else ''} | "
                f"{'/'.join(map(str, finished))} ({args.trials}) | "
                f"{trials - int(run['finished'])} | {errors} |"
            )
    low, high = min(args.workers), max(args.workers)
    for backend in ("proxy", "pinned", "split"):
        via = results.get((backend, high))
        if via is None or (backend, low) not in results:
            continue
        rate = {w: 1000 / ms_per_trial(results[(backend, w)]) for w in (low, high)}
        emit(
            f"\nThrough `{_LABELS[backend]}` at {high} workers: exact budget in every run: "
            f"{'yes' if via['exact'] else 'no'}, peak {via['peak']} server connections (goal "
            f"<= 20: {'met' if via['peak'] <= 20 else 'not met'}), {via['errors']} errors; "
            f"median {rate[high]:.1f} trials/s at {high} against {rate[low]:.1f} at {low} "
            f"(goal >=: {'met' if rate[high] >= rate[low] else 'not met'})."
        )
    if args.out is not None:
        from benchmarks.bench_search import merge_section

        section = "\n".join(
            [PROXY_SECTION, "", f"`{PROXY_COMMAND}` on {time.strftime('%Y-%m-%d')}:", ""]
        )
        section += "\n" + "\n".join(lines) + "\n"
        old = args.out.read_text() if args.out.exists() else ""
        args.out.write_text(merge_section(old, section, PROXY_SECTION))
        print(f"wrote {args.out}")
    return 0


def _why(output: str) -> str:
    """The first telling line of a failed launch (e.g. PostgreSQL's "too many clients")."""
    for marker in ("too many clients", "remaining connection slots", "Error", "error"):
        for line in output.splitlines():
            if marker in line:
                return " ".join(line.split())[:120].replace("|", "/")
    return "launch failed"


def _start_proxy(db_url: str, cpu: int | None = None) -> tuple[subprocess.Popen[str], str]:
    """``capsearch proxy`` on a free port over ``db_url`` (on one CPU if ``cpu`` is given);
    returns it and its ``grpc://`` URL."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    argv = [sys.executable, "-m", "search", "proxy", "--storage", db_url, "--port", str(port)]
    if cpu is not None:
        argv += ["--cpu", str(cpu)]
    env = {k: v for k, v in os.environ.items() if k != "CAPSEARCH_STORAGE"}
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "storage proxy on" not in line:
        proc.kill()
        raise RuntimeError(f"capsearch proxy did not start: {line}")
    return proc, f"grpc://127.0.0.1:{port}"


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
        "--proxy",
        action="store_true",
        help="the second table: PostgreSQL directly and through capsearch proxy",
    )
    parser.add_argument(
        "--storages",
        nargs="+",
        choices=tuple(_LABELS),
        default=list(_LABELS),
        help=(
            "with --proxy: the rows to run (pinned: proxy --cpu 0, workers on the other CPUs; "
            "split: the proxy and a PostgreSQL server of the bench's own on CPU 0)"
        ),
    )
    parser.add_argument(
        "--no-barrier",
        action="store_true",
        help="let each worker start trials as soon as it is up (start-up shares the cores)",
    )
    args = parser.parse_args(argv)
    if args.proxy:
        return proxy_compare(args)

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
