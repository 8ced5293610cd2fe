"""Many workers, one study: real processes on real SQLite files and the PostgreSQL server.

Throughput and failure tests use ``python -m search.testing.null_worker`` (the shared worker loop
with
a plain-Python objective); one test runs ``capsearch workers`` on a tiny TensorFlow study.
Run with ``pytest -s tests/test_workers.py`` to see the kill -9 timeline.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from search._compat import optuna as optuna_compat
from search.distributed.devices import INTRA_OP_ENV, available_cpus
from search.distributed.liveness import GRACE_ENV, HEARTBEAT_ENV, liveness_settings, requeue_trial
from search.distributed.trial_attrs import fail_reason
from search.distributed.worker_storage import open_worker_storage
from search.engine.trial_loop import LoopResult, run_trials
from search.errors import FatalError
from search.storage.opening import open_storage
from search.storage.studies import delete_study_if_present
from search.storage.urls import STORAGE_ENV_VAR
from search.testing.null_worker import NullObjective, _create
from tests.conftest import TINY_MEMORIZE, write_study

ROOT = Path(__file__).resolve().parent.parent
BENCH = [sys.executable, "-m", "search.testing.null_worker"]
CLI = [sys.executable, "-m", "search"]
PG_SECRET_URL = "postgresql://postgres:s3cret-pw@127.0.0.1:5432/test"  # trust auth ignores it
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
FAST_LIVENESS = {HEARTBEAT_ENV: "1", GRACE_ENV: "3"}

optuna.logging.set_verbosity(optuna.logging.WARNING)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return {**env, STORAGE_ENV_VAR: url, **extra}


def _launch(
    url: str, name: str, n: int, trials: int, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, dict[str, Any]]:
    """Run ``workers_bench launch``; return its exit code, output and final report."""
    proc = subprocess.run(
        [*BENCH, "launch", name, "-n", str(n), "--trials", str(trials), *args],
        env=env or _env(url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = proc.stdout + proc.stderr
    reports = [line for line in output.splitlines() if line.startswith("BENCH ")]
    assert reports, output[-3000:]
    return proc.returncode, output, json.loads(reports[-1][len("BENCH ") :])


class Worker:
    """One worker process whose output lines are collected with their arrival time."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))

    def wait(self, timeout: float = 120) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def _bench_worker(name: str, worker: str, trials: int, *args: str) -> list[str]:
    return [*BENCH, "worker", name, "--worker-id", worker, "--trials", str(trials), *args]


def _trials(url: str, name: str) -> list[FrozenTrial]:
    storage = optuna.storages.RDBStorage(url)
    try:
        study_id = storage.get_study_id_from_name(name)
        return storage.get_all_trials(study_id)
    finally:
        storage.engine.dispose()


def _running_trial_of(url: str, name: str, worker: str, min_age: float) -> FrozenTrial | None:
    try:
        trials = _trials(url, name)
    except Exception:  # not created yet
        return None
    for trial in trials:
        if trial.state == TrialState.RUNNING and trial.user_attrs.get("worker") == worker:
            assert trial.datetime_start is not None
            age = (datetime.datetime.now() - trial.datetime_start).total_seconds()
            if age >= min_age:
                return trial
    return None


def _wait_for_running(url: str, name: str, worker: str, min_age: float = 0.5) -> FrozenTrial:
    deadline = time.monotonic() + 60
    while not Path(url.removeprefix("sqlite:///")).exists():  # leave its creation to the workers
        time.sleep(0.1)
    while time.monotonic() < deadline:
        trial = _running_trial_of(url, name, worker, min_age)
        if trial is not None:
            return trial
        time.sleep(0.1)
    raise AssertionError(f"{worker} never ran a trial")


def _states(trials: list[FrozenTrial]) -> Counter[str]:
    return Counter(t.state.name for t in trials)


# --------------------------------------------------------------------------------------------
# In-process: settings, reasons, re-queues, the budget
# --------------------------------------------------------------------------------------------


def test_liveness_settings_from_arguments_environment_and_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (HEARTBEAT_ENV, GRACE_ENV, "CAPSEARCH_MAX_RETRY"):
        monkeypatch.delenv(name, raising=False)
    assert liveness_settings() == liveness_settings(10, 30, 3)
    monkeypatch.setenv(HEARTBEAT_ENV, "1")
    monkeypatch.setenv(GRACE_ENV, "3")
    settings = liveness_settings()
    assert (settings.heartbeat_interval, settings.grace_period, settings.max_retry) == (1, 3, 3)
    monkeypatch.setenv(GRACE_ENV, "1")
    with pytest.raises(FatalError, match="longer than the heartbeat"):
        liveness_settings()
    monkeypatch.setenv(HEARTBEAT_ENV, "soon")
    with pytest.raises(FatalError, match="CAPSEARCH_HEARTBEAT='soon'"):
        liveness_settings()


def test_fail_reason_is_one_line() -> None:
    assert fail_reason(ValueError("bad value\nmore detail")) == "ValueError: bad value"
    assert fail_reason(RuntimeError()) == "RuntimeError"
    assert len(fail_reason(RuntimeError("x" * 5000))) == 500


def test_requeue_keeps_params_and_is_bounded(storage_url: str) -> None:
    study = optuna.create_study(study_name="rq", storage=open_storage(storage_url))
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    trial.set_user_attr("baseline", "small")
    trial.set_user_attr("fail_reason", "worker stopped by SIGTERM")
    failed = study.tell(trial, state=TrialState.FAIL)
    assert requeue_trial(study, failed, max_retry=2) == 1
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert len(waiting) == 1
    assert waiting[0].params == failed.params
    assert waiting[0].user_attrs == {"baseline": "small"}  # not the failure's reason
    assert waiting[0].system_attrs["failed_trial"] == failed.number
    # The retry fails too: one more retry, then none.
    retry = study.ask()
    assert retry.params == failed.params
    second = study.tell(retry, state=TrialState.FAIL)
    assert requeue_trial(study, second, max_retry=2) == 2
    third = study.tell(study.ask(), state=TrialState.FAIL)
    assert third.system_attrs["retry_history"] == [failed.number, second.number]
    assert requeue_trial(study, third, max_retry=2) is None


def test_loop_reaches_the_budget_exactly_and_resumes(storage_url: str) -> None:
    storage = open_worker_storage(storage_url, liveness_settings(1, 3, 3))
    study = optuna.create_study(study_name="loop", storage=storage)
    lines: list[str] = []
    first = run_trials(study, NullObjective(nan_on=frozenset({2})), target=5, echo=lines.append)
    assert (first.reason, first.started, first.finished) == ("budget", 5, 5)
    again = run_trials(study, NullObjective(), target=5, echo=lines.append)
    assert (again.reason, again.started) == ("budget", 0)
    more = run_trials(study, NullObjective(), target=7, worker="w9", echo=lines.append)
    assert more.started == 2
    trials = study.get_trials()
    assert _states(trials) == {"COMPLETE": 6, "PRUNED": 1}
    assert trials[2].user_attrs["pruned_reason"] == "objective value was nan"
    assert trials[-1].user_attrs["worker"] == "w9"


def test_loop_stops_when_every_trial_fails(storage_url: str) -> None:
    storage = open_worker_storage(storage_url, liveness_settings(1, 3, 3))
    study = optuna.create_study(study_name="doomed", storage=storage)
    lines: list[str] = []
    result: LoopResult = run_trials(
        study, NullObjective(fail_always=True), target=3, max_failures=4, echo=lines.append
    )
    assert result.reason == "failures" and result.failed == 4
    assert _states(study.get_trials()) == {"FAIL": 4}
    assert "4 trials in a row failed (last: RuntimeError: injected failure" in lines[-1]


# --------------------------------------------------------------------------------------------
# Throughput: 8 processes, 400 trials, exactly
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_eight_workers_on_one_sqlite_file_finish_exactly_400(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    code, output, report = _launch(url, "sqlite400", 8, 400, "--quiet")
    assert code == 0, output[-3000:]
    assert "database is locked" not in output
    assert report["finished"] == 400
    assert report["trials"] == 400 and report["states"] == {"COMPLETE": 400}  # no junk trials
    stats = [
        json.loads(line.split("STATS ", 1)[1]) for line in output.splitlines() if "STATS" in line
    ]
    assert len(stats) == 8 and sum(s["started"] for s in stats) == 400
    print(
        f"\nSQLite, 8 workers: {report}; lock conflicts retried: "
        f"{sum(s['lock_conflicts'] for s in stats)}"
    )


@pytest.mark.slow
@pytest.mark.postgres
def test_eight_workers_on_postgresql_finish_exactly_400(pg_url: str) -> None:
    name = _name("pg400")
    try:
        code, output, report = _launch(PG_SECRET_URL, name, 8, 400, "--quiet")
        assert code == 0, output[-3000:]
        assert report["finished"] == 400
        assert report["trials"] == 400 and report["states"] == {"COMPLETE": 400}
        assert "s3cret-pw" not in output  # masked in logs; never on a worker's command line
        assert "postgres:***@127.0.0.1" in output
        starts = [line for line in output.splitlines() if line.startswith("starting w")]
        assert len(starts) == 8 and all("postgresql" not in line for line in starts)
        print(f"\nPostgreSQL, 8 workers: {report}")
    finally:
        delete_study_if_present(pg_url, name)


@pytest.mark.postgres
@pytest.mark.parametrize(("setting", "expected"), [(None, "off"), ("on", "on")])
def test_worker_postgresql_sessions_commit_without_waiting_for_the_disk(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, setting: str | None, expected: str
) -> None:
    if setting is None:
        monkeypatch.delenv("CAPSEARCH_PG_SYNCHRONOUS_COMMIT", raising=False)
    else:
        monkeypatch.setenv("CAPSEARCH_PG_SYNCHRONOUS_COMMIT", setting)
    storage = open_worker_storage(pg_url, liveness_settings(1, 3, 3))
    try:
        with storage.engine.connect() as connection:
            shown = connection.execute(sqlalchemy.text("SHOW synchronous_commit")).scalar()
        assert shown == expected
    finally:
        storage.engine.dispose()


# --------------------------------------------------------------------------------------------
# Dead and stopped workers
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkilled_workers_trial_is_failed_requeued_and_finished(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    name, target = "killed", 8
    _create(name, url)
    env = _env(url, **FAST_LIVENESS)
    args = ("--sleep", "2", "--poll", "0.2")
    workers = {w: Worker(_bench_worker(name, w, target, *args), env) for w in ("w0", "w1", "w2")}
    victim = _wait_for_running(url, name, "w0", min_age=0.5)
    completed_before = {t.number for t in _trials(url, name) if t.state == TrialState.COMPLETE}
    workers["w0"].proc.send_signal(signal.SIGKILL)
    killed_at = datetime.datetime.now()
    assert workers["w0"].wait() == -signal.SIGKILL
    assert workers["w1"].wait() == 0 and workers["w2"].wait() == 0

    trials = _trials(url, name)
    by_number = {t.number: t for t in trials}
    dead = by_number[victim.number]
    assert dead.state == TrialState.FAIL
    assert "no heartbeat for more than 3 s" in dead.system_attrs["fail_reason"]
    assert dead.user_attrs["fail_reason"] == dead.system_attrs["fail_reason"]
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params
    assert retry.user_attrs["worker"] in ("w1", "w2")
    # The study ends with the requested number; nothing completed was lost or is left open.
    assert sum(t.state in FINISHED for t in trials) == target
    assert _states(trials) == {"COMPLETE": target, "FAIL": 1}
    assert completed_before <= {t.number for t in trials if t.state == TrialState.COMPLETE}

    # Timeline, in seconds after the kill.
    utc_offset = datetime.datetime.now() - datetime.datetime.utcnow()
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        beat = connection.execute(
            sqlalchemy.text("SELECT heartbeat FROM trial_heartbeats WHERE trial_id = :t"),
            {"t": dead._trial_id},
        ).scalar_one()
    engine.dispose()
    last_beat = datetime.datetime.fromisoformat(str(beat)) + utc_offset  # SQLite keeps UTC
    seen = [
        (at, w, line)
        for w, proc in workers.items()
        for at, line in proc.lines
        if f"trial {victim.number} of worker w0 FAIL" in line
    ]
    assert len(seen) == 1, [line for p in workers.values() for _, line in p.lines]

    def after(moment: datetime.datetime) -> str:
        return f"{(moment - killed_at).total_seconds():+6.2f} s"

    assert dead.datetime_complete and retry.datetime_start and retry.datetime_complete
    logged = datetime.datetime.fromtimestamp(seen[0][0])
    timeline = [
        f"trial {victim.number} (w0) started          {after(dead.datetime_start)}",
        f"last heartbeat of trial {victim.number}     {after(last_beat)} (SQLite: whole seconds)",
        "w0 killed (SIGKILL)               +0.00 s",
        f"trial {victim.number} marked FAIL (stale)   {after(dead.datetime_complete)} "
        "(heartbeat 1 s, grace 3 s)",
        f"{seen[0][1]} logged it, re-queued       {after(logged)}",
        f"re-queued trial {retry.number} started      {after(retry.datetime_start)} "
        f"({retry.user_attrs['worker']})",
        f"re-queued trial {retry.number} finished     {after(retry.datetime_complete)}",
    ]
    print("\nkill -9 timeline:\n  " + "\n  ".join(timeline))
    stale_after = (dead.datetime_complete - killed_at).total_seconds()
    assert 2.0 <= stale_after <= 10.0


@pytest.mark.slow
def test_sigterm_stops_a_worker_cleanly_and_a_restart_resumes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    name, target = "termed", 6
    _create(name, url)
    env = _env(url, **FAST_LIVENESS)
    args = ("--sleep", "2", "--poll", "0.2")
    w0 = Worker(_bench_worker(name, "w0", target, *args), env)
    w1 = Worker(_bench_worker(name, "w1", target, *args), env)
    victim = _wait_for_running(url, name, "w0", min_age=0.5)
    w0.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    assert w0.wait(timeout=30) == 0, w0.text
    assert time.monotonic() - sent < 3  # the trial was interrupted, not waited for
    assert "worker stopped by SIGTERM" in w0.text
    trials = _trials(url, name)
    stopped = next(t for t in trials if t.number == victim.number)
    assert stopped.state == TrialState.FAIL
    assert stopped.user_attrs["fail_reason"] == "worker stopped by SIGTERM"
    assert stopped.system_attrs["fail_reason"] == "worker stopped by SIGTERM"
    assert not [
        t for t in trials if t.state == TrialState.RUNNING and t.user_attrs["worker"] == "w0"
    ]
    # Restarted, w0 joins the same study again.
    again = Worker(_bench_worker(name, "w0", target, *args), env)
    assert again.wait() == 0 and w1.wait() == 0
    trials = _trials(url, name)
    assert sum(t.state in FINISHED for t in trials) == target
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == victim.number)
    assert retry.state == TrialState.COMPLETE and retry.params == stopped.params
    assert "budget reached" in again.text


@pytest.mark.slow
def test_workers_parent_forwards_sigterm_and_exits_0(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    argv = [*BENCH, "launch", "fwd", "-n", "2", "--trials", "20", "--sleep", "2"]
    parent = Worker(argv, _env(url, **FAST_LIVENESS))
    _wait_for_running(url, "fwd", "w0", min_age=0.3)
    _wait_for_running(url, "fwd", "w1", min_age=0.3)
    parent.proc.send_signal(signal.SIGTERM)  # to the parent only: it forwards to the workers
    assert parent.wait(timeout=30) == 0, parent.text
    assert "SIGTERM forwarded to the workers" in parent.text
    assert "[w0] trial" in parent.text and "worker stopped by SIGTERM" in parent.text
    trials = _trials(url, "fwd")
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    stopped = [t for t in trials if t.user_attrs.get("fail_reason") == "worker stopped by SIGTERM"]
    assert len(stopped) == 2
    assert len([t for t in trials if t.state == TrialState.WAITING]) == 2  # re-queued


def test_orphan_running_trial_without_heartbeat_does_not_hold_the_budget(
    storage_url: str,
) -> None:
    storage = open_worker_storage(storage_url, liveness_settings(1, 3, 3))
    study = optuna.create_study(study_name="orphan", storage=storage)
    long_ago = datetime.datetime.now() - datetime.timedelta(hours=1)
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.RUNNING,
            params={"x": 1.0},
            distributions={"x": optuna.distributions.FloatDistribution(-10, 10)},
        )
    )
    orphan = study.get_trials()[0]
    raw = optuna.storages.RDBStorage(storage_url)
    with raw.engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("UPDATE trials SET datetime_start = :t WHERE trial_id = :i"),
            {"t": long_ago, "i": orphan._trial_id},
        )
    raw.engine.dispose()
    lines: list[str] = []
    result = run_trials(study, NullObjective(), target=2, echo=lines.append, poll_interval=0.05)
    assert result.reason == "budget" and result.stale == 1
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    assert "no heartbeat" in trials[0].user_attrs["fail_reason"]
    assert sum(t.state in FINISHED for t in trials) == 2
    assert any("trial 0 of worker ? FAIL" in line for line in lines)


def test_a_dead_workers_trial_is_requeued_once_by_the_liveness_check(storage_url: str) -> None:
    # One re-queue path: the worker storage has no Optuna retry callback, so only
    # search.distributed.liveness re-queues a stale trial (with its reason and max_retry).
    liveness = liveness_settings(1, 3, 3)
    storage = open_worker_storage(storage_url, liveness)
    assert storage.get_heartbeat_stale_trial_callback() is None
    study = optuna.create_study(study_name="dead", storage=storage)
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.RUNNING,
            params={"x": 1.0, "k": 2},
            distributions={
                "x": optuna.distributions.FloatDistribution(-10, 10),
                "k": optuna.distributions.IntDistribution(0, 5),
            },
            user_attrs={"worker": "w0"},
        )
    )
    dead_id = optuna_compat.trial_id(study.get_trials()[0])
    storage.record_heartbeat(dead_id)
    with storage.engine.begin() as connection:  # its worker died a minute ago (SQLite: UTC)
        connection.execute(
            sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = :t WHERE trial_id = :i"),
            {"t": datetime.datetime.utcnow() - datetime.timedelta(minutes=1), "i": dead_id},
        )
    lines: list[str] = []
    result = run_trials(
        study, NullObjective(), target=2, worker="w1", echo=lines.append, liveness=liveness
    )
    assert (result.reason, result.stale, result.requeued) == ("budget", 1, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # Optuna's own check (study.optimize runs it)
    trials = study.get_trials()
    assert _states(trials) == {"FAIL": 1, "COMPLETE": 2}
    assert "no heartbeat for more than 3 s" in trials[0].system_attrs["fail_reason"]
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert retry.params == {"x": 1.0, "k": 2} and retry.user_attrs["worker"] == "w1"
    (line,) = [line for line in lines if "trial 0 of worker w0 FAIL" in line]
    assert "re-queued (retry 1/3)" in line


def test_nan_and_exception_store_reasons_and_the_worker_goes_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    _create("faulty", url)
    worker = Worker(_bench_worker("faulty", "w0", 5, "--fail-on", "1", "--nan-on", "2"), _env(url))
    assert worker.wait() == 0, worker.text
    trials = _trials(url, "faulty")
    assert [t.state.name for t in trials] == [
        "COMPLETE",
        "FAIL",
        "PRUNED",
        "COMPLETE",
        "COMPLETE",
        "COMPLETE",
    ]
    failed, nan = trials[1], trials[2]
    assert failed.system_attrs["fail_reason"] == "RuntimeError: injected failure in trial 1"
    assert failed.user_attrs["fail_reason"] == failed.system_attrs["fail_reason"]
    assert nan.user_attrs["pruned_reason"] == "objective value was nan"


def test_worker_gives_up_when_trials_keep_failing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    _create("doomed", url)
    worker = Worker(_bench_worker("doomed", "w0", 3, "--fail-always"), _env(url))
    assert worker.wait() == 1
    assert "10 trials in a row failed" in worker.text
    assert _states(_trials(url, "doomed")) == {"FAIL": 10}


# --------------------------------------------------------------------------------------------
# The workers launcher and the CLI
# --------------------------------------------------------------------------------------------


def test_workers_pass_the_planned_environment_to_each_child(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    env = _env(url, CUDA_VISIBLE_DEVICES="0,1")
    code, output, report = _launch(url, "envs", 3, 6, "--report-env", env=env)
    assert code == 0, output
    seen = {
        line.split("]")[0][1:]: line.split("] env ")[1]
        for line in output.splitlines()
        if "] env CUDA_VISIBLE_DEVICES=" in line
    }
    threads = max(1, available_cpus() // 3)
    assert seen == {
        "w0": f"CUDA_VISIBLE_DEVICES=0 {INTRA_OP_ENV}={threads}",
        "w1": f"CUDA_VISIBLE_DEVICES=1 {INTRA_OP_ENV}={threads}",
        "w2": f"CUDA_VISIBLE_DEVICES=0 {INTRA_OP_ENV}={threads}",
    }
    assert "starting w1 on GPU 1" in output
    assert report["finished"] == 6


@pytest.mark.slow
@pytest.mark.postgres
def test_copy_command_sqlite_to_postgresql(tmp_path: Path, pg_url: str) -> None:
    source = f"sqlite:///{tmp_path / 'studies.db'}"
    name = _name("copied")
    _create(name, source)
    worker = Worker(_bench_worker(name, "w0", 6, "--fail-on", "1", "--nan-on", "2"), _env(source))
    assert worker.wait() == 0, worker.text
    try:
        proc = subprocess.run(
            [*CLI, "copy", name, "--from", source, "--to", PG_SECRET_URL],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert f"copied study {name}: 7 trials" in proc.stdout
        assert "s3cret-pw" not in proc.stdout + proc.stderr
        original, copied = _trials(source, name), _trials(pg_url, name)
        assert len(copied) == len(original) == 7
        for a, b in zip(original, copied, strict=True):
            assert (a.number, a.state, a.params, a.values) == (
                b.number,
                b.state,
                b.params,
                b.values,
            )
            assert a.distributions == b.distributions
            assert a.intermediate_values == b.intermediate_values
            assert a.user_attrs == b.user_attrs and a.system_attrs == b.system_attrs
            assert (a.datetime_start, a.datetime_complete) == (
                b.datetime_start,
                b.datetime_complete,
            )
        assert copied[1].user_attrs["fail_reason"].startswith("RuntimeError")
    finally:
        delete_study_if_present(pg_url, name)


def test_workers_command_rejects_bad_input_before_starting_any_worker(tmp_path: Path) -> None:
    study = write_study(tmp_path, "tiny", TINY_MEMORIZE)
    for args in (
        ["workers", str(tmp_path / "nope.toml"), "-n", "2"],
        ["workers", str(study), "-n", "2", "--storage", "nonsense://x"],
        ["workers", str(study), "-n", "2", "--storage", f"sqlite:///{tmp_path}/no/dir/x.db"],
    ):
        proc = subprocess.run([*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert proc.stderr.startswith("capsearch: error: ")
        assert len(proc.stderr.strip().splitlines()) == 1
        assert "starting w0" not in proc.stdout


@pytest.mark.slow
def test_workers_command_runs_a_tiny_tensorflow_study(tmp_path: Path) -> None:
    study = write_study(tmp_path, "tiny", TINY_MEMORIZE)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    proc = subprocess.run(
        [*CLI, "workers", str(study), "-n", "2", "--trials", "4", "--storage", url],
        cwd=ROOT,
        env=_env(os.environ.get(STORAGE_ENV_VAR, "")),
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    trials = _trials(url, "tiny")
    assert sum(t.state in FINISHED for t in trials) == 4
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert {t.user_attrs["worker"] for t in trials} <= {"w0", "w1"}
    assert trials[0].user_attrs["baseline"] == "small"
    assert sum("baseline" in t.user_attrs for t in trials) == 1  # enqueued once, by the parent
    trial_lines = [
        line
        for line in proc.stdout.splitlines()
        if re.search(r"trial +\d+ (COMPLETE|PRUNED)", line)
    ]
    assert trial_lines and all(line.startswith(("[w0] ", "[w1] ")) for line in trial_lines)
    assert "[w0] " in proc.stdout and "[w1] " in proc.stdout
    summaries = [line for line in proc.stdout.splitlines() if "study tiny: " in line]
    assert len(summaries) == 1 and summaries[0].startswith("study tiny: ")  # the parent's only
    assert re.search(r"^4 finished trials after", proc.stdout, re.MULTILINE)
    print(f"\ncapsearch workers -n 2 --trials 4 output:\n{proc.stdout}")


def test_a_trial_failed_by_another_worker_as_it_ends_is_dropped_not_a_crash(
    storage_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The other worker's heartbeat check fails trial 0 between tell's own state check and
    # its write (the sampler's after_trial runs exactly there): the write meets "trial
    # already finished", which used to escape tell and end the worker with a traceback.
    storage = open_worker_storage(storage_url, liveness_settings(1, 3, 3))
    other = optuna.storages.RDBStorage(storage_url)

    class FailedMeanwhile(optuna.samplers.RandomSampler):
        def after_trial(self, study: Any, trial: FrozenTrial, state: Any, values: Any) -> None:
            if trial.number == 0:
                other.set_trial_state_values(trial._trial_id, TrialState.FAIL)

    study = optuna.create_study(study_name="raced", storage=storage, sampler=FailedMeanwhile(0))
    with caplog.at_level("WARNING"):
        result = run_trials(study, NullObjective(), target=2, echo=lambda _: None)
    assert (result.finished, result.failed) == (2, 1)
    assert [t.state for t in study.get_trials()] == [
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    assert "trial 0 was marked FAIL meanwhile" in caplog.text


def test_a_trial_stopped_by_the_operator_is_requeued_without_using_a_retry(
    storage_url: str,
) -> None:
    """Ctrl-C four times on one trial: before, the fourth stop said "retries used up" and the
    parameters were gone (1 WAITING trial, then 0)."""
    study = optuna.create_study(study_name="stops", storage=open_storage(storage_url))
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    failed = study.tell(trial, state=TrialState.FAIL)
    for _ in range(4):
        assert requeue_trial(study, failed, max_retry=2, stopped=True) == 0
        again = study.ask()
        assert again.params == failed.params
        failed = study.tell(again, state=TrialState.FAIL)
    assert failed.system_attrs["retry_history"] == []
    assert len(failed.system_attrs["stop_history"]) == 4
    assert requeue_trial(study, failed, max_retry=2) == 1  # a crash still counts
