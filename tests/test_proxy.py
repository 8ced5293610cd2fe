"""Optuna's gRPC storage proxy (``capsearch proxy``, ``--storage grpc://``) on a throw-away
PostgreSQL server: exact budget, a killed worker's trial re-run, the proxy restarted mid-study,
and bad proxy addresses refused in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from search._compat import optuna as optuna_compat
from search.testing.throwaway_postgres import ThrowawayPostgres, free_port, missing_reason

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))

LIVENESS = {"CAPSEARCH_HEARTBEAT": "1", "CAPSEARCH_GRACE": "4", "CAPSEARCH_MAX_RETRY": "3"}


@pytest.fixture(scope="module")
def postgres() -> Iterator[ThrowawayPostgres]:
    server = ThrowawayPostgres()
    server.init()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def _env(storage: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSEARCH_")}
    env.update(LIVENESS, CAPSEARCH_STORAGE=storage, PYTHONUNBUFFERED="1")
    return env


class Proxy:
    """``capsearch proxy`` in a subprocess on a port of its own."""

    def __init__(self, db_url: str, port: int | None = None) -> None:
        self.db_url = db_url
        self.port = port or free_port()
        self.url = f"grpc://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[str] | None = None
        self.logs: list[str] = []

    def start(self, *extra: str) -> None:
        argv = [sys.executable, "-m", "search", "proxy", "--storage", self.db_url, *extra]
        self.proc = subprocess.Popen(
            [*argv, "--port", str(self.port)],
            cwd=ROOT,
            env=_env(self.db_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert "storage proxy on grpc://127.0.0.1" in line, line

    def stop(self) -> str:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        self.logs.append(out)
        assert self.proc.returncode == 0, out
        return out


@pytest.fixture
def proxy(postgres: ThrowawayPostgres) -> Iterator[Proxy]:
    server = Proxy(postgres.url)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()


def _launch(storage: str, study: str, n: int, trials: int, sleep: float) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "search.testing.null_worker", "launch", study, "-n", str(n)]
    argv += ["--trials", str(trials), "--sleep", str(sleep), "--quiet"]
    return subprocess.Popen(
        argv,
        cwd=ROOT,
        env=_env(storage),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _report(output: str) -> dict[str, object]:
    lines = [line for line in output.splitlines() if line.startswith("BENCH ")]
    assert lines, output[-3000:]
    report: dict[str, object] = json.loads(lines[-1][len("BENCH ") :])
    return report


def _trials(db_url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(db_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()


def test_workers_through_the_proxy_finish_exactly_the_budget(proxy: Proxy) -> None:
    proc = _launch(proxy.url, "proxy_budget", n=3, trials=24, sleep=0.02)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:]
    assert _report(out)["states"] == {"COMPLETE": 24}
    trials = _trials(proxy.db_url, "proxy_budget")
    assert len(trials) == 24
    assert {t.user_attrs["worker"] for t in trials} <= {"w0", "w1", "w2"}
    assert (
        "proxy_budget"
        in subprocess.run(
            [sys.executable, "-m", "search", "list", "--storage", proxy.url],
            cwd=ROOT,
            env=_env(proxy.url),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert "stopped by SIGTERM (24 trials reserved" in proxy.stop()


def _cpus_of_every_thread(pid: int) -> set[str]:
    """Each thread's ``Cpus_allowed_list`` from /proc (e.g. ``{"1"}``)."""
    found = set()
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        for line in status.read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                found.add(line.split(":", 1)[1].strip())
    return found


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="--cpu is Linux only")
def test_a_proxy_pinned_to_one_cpu_keeps_every_thread_there(postgres: ThrowawayPostgres) -> None:
    cpu = max(os.sched_getaffinity(0))
    server = Proxy(postgres.url)
    server.start("--cpu", str(cpu))
    try:
        proc = _launch(server.url, "proxy_pinned", n=2, trials=8, sleep=0.0)
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out[-3000:]
        assert server.proc is not None
        assert _cpus_of_every_thread(server.proc.pid) == {str(cpu)}  # gRPC's threads too
        assert len(_trials(server.db_url, "proxy_pinned")) == 8
    finally:
        server.stop()


def test_a_cpu_the_proxy_may_not_use_is_one_line_and_exit_2(postgres: ThrowawayPostgres) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "search", "proxy", "--storage", postgres.url, "--cpu", "4096"],
        cwd=ROOT,
        env=_env(postgres.url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "--cpu 4096 is not a CPU this process may use" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_worker_killed_by_sigkill_has_its_trial_rerun(proxy: Proxy) -> None:
    def worker(worker_id: str) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "search.testing.null_worker", "worker", "proxy_kill"]
        argv += ["--worker-id", worker_id, "--trials", "6", "--sleep", "1.5", "--quiet"]
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            env=_env(proxy.url),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    optuna.create_study(
        study_name="proxy_kill",
        storage=proxy.db_url.replace("postgresql://", "postgresql+psycopg://"),
    )
    victim, survivor = worker("victim"), worker("survivor")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = [
            t
            for t in _trials(proxy.db_url, "proxy_kill")
            if t.state.name == "RUNNING"
            and t.user_attrs.get("worker") == "victim"
            and {"x", "k"} <= t.params.keys()  # sampled in full: the re-run repeats all of it
        ]
        if running:
            break
        time.sleep(0.2)
    assert running, "the victim never started a trial"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    out, _ = survivor.communicate(timeout=240)
    assert survivor.returncode == 0, out[-3000:]
    trials = _trials(proxy.db_url, "proxy_kill")
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 6 and "RUNNING" not in states, states
    lost = trials[running[0].number]
    assert lost.state.name == "FAIL"
    assert lost.user_attrs["fail_reason"].startswith("worker lost: no heartbeat")
    rerun = [t for t in trials if t.system_attrs.get("failed_trial") == lost.number]
    assert [t.state.name for t in rerun] == ["COMPLETE"]
    assert rerun[0].params == lost.params
    assert "of worker victim FAIL: worker lost" in proxy.stop()


def test_the_proxy_restarted_mid_study_is_waited_for(proxy: Proxy) -> None:
    proc = _launch(proxy.url, "proxy_restart", n=2, trials=30, sleep=0.2)
    while True:
        try:
            if len(_trials(proxy.db_url, "proxy_restart")) >= 6:
                break
        except KeyError:  # not created yet
            pass
        time.sleep(0.1)
    proxy.stop()
    down = time.time()
    time.sleep(8)
    proxy.start()
    up = time.time()
    out, _ = proc.communicate(timeout=240)
    done = time.time()
    assert proc.returncode == 0, out[-3000:]
    trials = _trials(proxy.db_url, "proxy_restart")
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == 30 and "RUNNING" not in states, states
    warnings = [line for line in out.splitlines() if "unreachable" in line]
    assert 1 <= len(warnings) <= 2, warnings  # one per worker that met the outage
    assert all(line.count("grpc://127.0.0.1") == 1 for line in warnings)
    back = [line for line in out.splitlines() if " back after " in line]
    print(
        f"TIMELINE proxy down {down:.1f} up {up:.1f} (+{up - down:.1f} s) study done "
        f"+{done - up:.1f} s after; {len(trials)} trials "
        f"{ {s: states.count(s) for s in set(states)} }; "
        f"warnings {warnings}; back {back}"
    )


@pytest.mark.parametrize("command", [["list"], ["show", "some_study"]])
def test_a_proxy_address_where_nothing_answers_is_one_line_and_exit_2(
    command: list[str],
) -> None:
    url = f"grpc://127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "search", *command, "--storage", url],
        cwd=ROOT,
        env=_env(url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no storage proxy answers there" in lines[0], proc.stderr


def test_a_proxy_address_on_the_database_port_is_refused_and_nothing_changes(
    postgres: ThrowawayPostgres,
) -> None:
    url = f"grpc://127.0.0.1:{postgres.port}"  # the wrong port: PostgreSQL's, not the proxy's
    before = optuna.get_all_study_names(
        postgres.url.replace("postgresql://", "postgresql+psycopg://")
    )
    proc = subprocess.run(
        [sys.executable, "-m", "search.testing.null_worker", "launch", "never_made", "-n", "1"]
        + ["--trials", "2"],
        cwd=ROOT,
        env=_env(url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    cli = subprocess.run(
        [sys.executable, "-m", "search", "list", "--storage", url],
        cwd=ROOT,
        env=_env(url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 2
    lines = cli.stderr.strip().splitlines()
    assert len(lines) == 1 and f"grpc://127.0.0.1:{postgres.port}" in lines[0], cli.stderr
    after = optuna.get_all_study_names(
        postgres.url.replace("postgresql://", "postgresql+psycopg://")
    )
    assert after == before


def test_a_malformed_proxy_port_is_one_line_and_exit_2() -> None:
    url = "grpc://127.0.0.1:70000"
    proc = subprocess.run(
        [sys.executable, "-m", "search", "list", "--storage", url],
        cwd=ROOT,
        env=_env(url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "port '70000' is not a number in 1-65535" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def _reservation(target: int, token: str, worker: str) -> optuna.trial.FrozenTrial:
    """The template a worker sends to reserve a trial (as ``ProxyStorage.reserve_trial``)."""
    from search.storage.proxy import RESERVE_KEY

    template = optuna_compat.running_trial_template({"worker": worker})
    template.system_attrs[RESERVE_KEY] = {"target": target, "heartbeat": 1, "grace": 4}
    template.system_attrs[RESERVE_KEY]["token"] = token
    return template


def test_a_reservation_sent_again_gets_its_first_trial_and_its_heartbeat(
    postgres: ThrowawayPostgres,
) -> None:
    """The proxy stored a reservation but its answer was lost (the proxy or its database went
    away): the worker sends the same request again, and gets that trial, not a second one."""
    from search.distributed.liveness import liveness_settings
    from search.distributed.proxy_server import ProxyBackend
    from search.distributed.worker_storage import open_worker_storage
    from search.storage.proxy import RESERVE_KEY

    rdb = open_worker_storage(postgres.url, liveness_settings(1, 4), wait_outages=False)
    backend = ProxyBackend(rdb, echo=lambda line: None)
    try:
        study = optuna.create_study(study_name="proxy_resent", storage=backend.storage)
        study_id = optuna_compat.study_id(study)
        first = _reservation(3, "token-a", "w0")
        trial_id = backend.storage.create_new_trial(study_id, template_trial=first)
        first.system_attrs[RESERVE_KEY]["again"] = True  # what ProxyStorage marks on a resend
        assert backend.storage.create_new_trial(study_id, template_trial=first) == trial_id
        # Another worker's reservation with the same token is not that trial's.
        other = _reservation(3, "token-a", "w1")
        other.system_attrs[RESERVE_KEY]["again"] = True
        second = backend.storage.create_new_trial(study_id, template_trial=other)
        assert second != trial_id
        trials = study.get_trials(deepcopy=False)
        assert [t.state.name for t in trials] == ["RUNNING", "RUNNING"]
        assert [t.user_attrs["worker"] for t in trials] == ["w0", "w1"]
        # Each reserved trial has its first heartbeat: the worker does not send one.
        assert optuna_compat.beating_trial_ids(rdb, [trial_id, second]) == {trial_id, second}
        assert backend.reservations == 2
    finally:
        rdb.engine.dispose()


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_reservation_that_met_no_proxy_is_marked_as_sent_again() -> None:
    """The client marks a reservation it sent once, so that its resend looks for its trial."""
    from search.storage.proxy import RESERVE_KEY, ProxyStorage

    storage = ProxyStorage(f"grpc://127.0.0.1:{free_port()}")
    template = _reservation(3, "token-b", "w0")
    try:
        with pytest.raises(Exception, match="UNAVAILABLE|failed to connect"):
            storage.create_new_trial(1, template_trial=template)
    finally:
        storage.close()
    assert template.system_attrs[RESERVE_KEY]["again"] is True
