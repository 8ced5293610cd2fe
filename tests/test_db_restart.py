"""A PostgreSQL restart mid-study, on a throw-away server the test starts itself: workers wait
and reconnect (one warning line per outage each), the study ends with exactly its budget and
nothing RUNNING, directly on the database and behind ``capsearch proxy``."""

from __future__ import annotations

import time

import optuna
import pytest

from search.errors import StorageUnavailable
from search.storage.retry import is_outage, with_outage_retry
from search.testing.throwaway_postgres import ThrowawayPostgres, missing_reason
from tests.test_proxy import Proxy, _launch, _report, _trials

pytestmark = pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason()))


@pytest.fixture
def postgres() -> ThrowawayPostgres:
    server = ThrowawayPostgres()
    server.init()
    server.start()
    yield server
    server.cleanup()


def _wait_for_trials(url: str, study: str, count: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if len(_trials(url, study)) >= count:
                return
        except KeyError:  # not created yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"{study} never reached {count} trials")


def _restart(postgres: ThrowawayPostgres, seconds: float) -> tuple[float, float]:
    postgres.stop()
    down = time.time()
    time.sleep(seconds)
    postgres.start()
    return down, time.time()


def _check(out: str, url: str, study: str, target: int, workers: int) -> dict[str, int]:
    trials = _trials(url, study)
    states = [t.state.name for t in trials]
    assert states.count("COMPLETE") == target, states
    assert "RUNNING" not in states and "WAITING" not in states, states
    assert _report(out)["finished"] == target
    warnings = [line for line in out.splitlines() if "unreachable (" in line]
    assert 1 <= len(warnings) <= workers + 1, warnings  # one per process that met the outage
    assert "Traceback" not in out, out[-3000:]
    for trial in trials:  # the timeline of a re-run trial, for the record
        if trial.state.name == "FAIL" or "failed_trial" in trial.system_attrs:
            print(
                f"trial {trial.number} {trial.state.name} {trial.datetime_start:%H:%M:%S.%f}"
                f"-{trial.datetime_complete:%H:%M:%S.%f} worker {trial.user_attrs.get('worker')} "
                f"{trial.user_attrs.get('fail_reason', '')} "
                f"re-run of {trial.system_attrs.get('failed_trial', '-')}"
            )
    return {s: states.count(s) for s in set(states)}


def test_workers_on_postgresql_ride_out_a_10_s_restart(postgres: ThrowawayPostgres) -> None:
    proc = _launch(postgres.url, "restart_direct", n=2, trials=30, sleep=0.2)
    _wait_for_trials(postgres.url, "restart_direct", 6)
    down, up = _restart(postgres, 10)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    clock = "%H:%M:%S"
    print(f"TIMELINE direct: down {time.strftime(clock, time.localtime(down))}", end=" ")
    print(f"up {time.strftime(clock, time.localtime(up))}")
    counts = _check(out, postgres.url, "restart_direct", 30, 2)
    back = [line for line in out.splitlines() if " back after " in line]
    print(f"TIMELINE direct: down +0, up +{up - down:.1f} s; {counts}; back {back}")


def test_workers_behind_the_proxy_ride_out_a_database_restart(
    postgres: ThrowawayPostgres,
) -> None:
    proxy = Proxy(postgres.url)
    proxy.start()
    try:
        proc = _launch(proxy.url, "restart_behind_proxy", n=2, trials=30, sleep=0.2)
        _wait_for_trials(postgres.url, "restart_behind_proxy", 6)
        down, up = _restart(postgres, 10)
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]
        counts = _check(out, postgres.url, "restart_behind_proxy", 30, 2)
    finally:
        log = proxy.stop()
    assert sum("unreachable (" in line for line in log.splitlines()) == 1, log
    print(f"TIMELINE behind proxy: up +{up - down:.1f} s; {counts}; proxy log {log!r}")


def test_an_outage_longer_than_the_wait_is_one_line(postgres: ThrowawayPostgres) -> None:
    storage = optuna.storages.RDBStorage(
        postgres.url.replace("postgresql://", "postgresql+psycopg://")
    )
    postgres.stop()
    calls = 0

    def read() -> object:
        nonlocal calls
        calls += 1
        return storage.get_all_studies()

    try:
        with pytest.raises(StorageUnavailable, match=r"unreachable for more than 1 s \(") as info:
            with_outage_retry(read, url=postgres.url, wait_s=1)
        assert "\n" not in str(info.value) and calls >= 2
        assert is_outage(info.value.__context__ or RuntimeError()) or calls >= 2
    finally:
        storage.engine.dispose()
        postgres.start()


def test_a_call_cancelled_by_a_stopping_proxy_is_an_outage() -> None:
    """A proxy stopped mid-call answers CANCELLED: the worker waits for it like UNAVAILABLE
    (before, one such call ended the worker with a traceback, exit 1, one trial FAIL)."""
    import grpc

    class RpcError(grpc.RpcError):  # what grpc._channel raises: code() and details()
        def __init__(self, code: grpc.StatusCode) -> None:
            super().__init__(code.name)
            self._code = code

        def code(self) -> grpc.StatusCode:
            return self._code

        def details(self) -> str:
            return str(self._code.name)

    assert is_outage(RpcError(grpc.StatusCode.CANCELLED))
    assert is_outage(RpcError(grpc.StatusCode.UNAVAILABLE))
    assert not is_outage(RpcError(grpc.StatusCode.INVALID_ARGUMENT))
