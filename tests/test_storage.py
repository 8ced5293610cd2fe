"""Tests of search.storage against real SQLite files and the PostgreSQL server at 127.0.0.1."""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from search.errors import FatalError, StorageError
from search.storage import opening
from search.storage.opening import open_storage
from search.storage.retry import with_retry
from search.storage.studies import copy_study, delete_study_if_present, list_studies
from search.storage.urls import (
    STORAGE_ENV_VAR,
    default_storage_url,
    mask_text,
    mask_url,
    project_root,
    resolve_storage_url,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _dispose(storage: optuna.storages.RDBStorage) -> None:
    storage.remove_session()
    storage.engine.dispose()


# --------------------------------------------------------------------------------------------
# URLs and masking
# --------------------------------------------------------------------------------------------


def test_default_storage_url_is_absolute_sqlite(tmp_path: Path) -> None:
    assert default_storage_url(tmp_path) == f"sqlite:///{tmp_path}/storage/studies.db"


def test_resolve_storage_url_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORAGE_ENV_VAR, raising=False)
    assert resolve_storage_url(None) == default_storage_url(project_root())  # not the cwd
    monkeypatch.setenv(STORAGE_ENV_VAR, "sqlite:///env.db")
    assert resolve_storage_url(None) == "sqlite:///env.db"
    assert resolve_storage_url("sqlite:///flag.db") == "sqlite:///flag.db"
    assert resolve_storage_url("  ") == "sqlite:///env.db"


def test_mask_url_hides_password() -> None:
    assert mask_url("postgresql://user:s3cret@host/db") == "postgresql://user:***@host/db"
    assert mask_url("postgresql://user@host/db") == "postgresql://user@host/db"
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"
    # not parseable by SQLAlchemy: the pattern still hides it
    assert "s3cret" not in mask_url("weird scheme://user:s3cret@host db")


def test_mask_text_hides_password_inside_a_message() -> None:
    url = "postgresql://user:s3cret@host/db"
    message = f"could not connect to {url}: password 's3cret' rejected"
    masked = mask_text(message, url)
    assert "s3cret" not in masked
    assert "postgresql://user:***@host/db" in masked
    # URL-encoded passwords are removed in both spellings
    url = "postgresql://user:p%40ss%2Fw@host/db"
    masked = mask_text(f"bad password p@ss/w in {url} (p%40ss%2Fw)", url)
    assert "p@ss/w" not in masked and "p%40ss%2Fw" not in masked


def test_connection_error_does_not_leak_password() -> None:
    url = "postgresql://user:s3cret@127.0.0.1:1/db"  # nothing listens on port 1
    with pytest.raises(StorageError) as info:
        open_storage(url)
    message = str(info.value)
    assert "s3cret" not in message
    assert "postgresql://user:***@127.0.0.1:1/db" in message
    assert "\n" not in message


# --------------------------------------------------------------------------------------------
# Opening
# --------------------------------------------------------------------------------------------


def test_sqlite_is_in_wal_mode_after_open(tmp_path: Path) -> None:
    db = tmp_path / "studies.db"
    storage = open_storage(_sqlite_url(db))
    _dispose(storage)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_default_location_folder_is_created(tmp_path: Path) -> None:
    url = default_storage_url(tmp_path)
    _dispose(open_storage(url))
    assert (tmp_path / "storage" / "studies.db").is_file()


def test_missing_parent_folder_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "deeper"
    with pytest.raises(StorageError, match=str(missing)) as info:
        open_storage(_sqlite_url(missing / "x.db"))
    assert isinstance(info.value, FatalError)
    assert "--storage" in str(info.value)
    assert not missing.exists()


def test_create_false_on_missing_file_raises_and_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "absent.db"
    with pytest.raises(StorageError, match="no storage at .*run a search first"):
        open_storage(_sqlite_url(db), create=False)
    assert not db.exists()
    assert list(tmp_path.iterdir()) == []


def test_create_false_on_existing_storage_opens_it(tmp_path: Path) -> None:
    url = _sqlite_url(tmp_path / "s.db")
    _dispose(open_storage(url))
    _dispose(open_storage(url, create=False))


@pytest.mark.parametrize("url", ["notaurl", "foo://x", "mysql+nodriver://u@h/db", "oracle://h"])
def test_malformed_or_unsupported_url_raises(url: str) -> None:
    with pytest.raises(StorageError, match="Cannot open storage") as info:
        open_storage(url)
    assert "\n" not in str(info.value)


def test_missing_driver_names_the_package() -> None:
    with pytest.raises(StorageError, match="pip install") as info:
        open_storage("postgresql+psycopg2://user:s3cret@host/db")
    assert "s3cret" not in str(info.value)


def test_not_a_database_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not sqlite" * 200)
    with pytest.raises(StorageError, match="not a usable SQLite database"):
        open_storage(_sqlite_url(junk))


def test_heartbeat_options_are_passed_through(tmp_path: Path) -> None:
    storage = open_storage(_sqlite_url(tmp_path / "h.db"), heartbeat_interval=5, grace_period=20)
    try:
        assert storage.get_heartbeat_interval() == 5
        assert storage.grace_period == 20
        # Stale trials are failed and re-queued by search.distributed.liveness alone.
        assert storage.get_heartbeat_stale_trial_callback() is None
    finally:
        _dispose(storage)
    with pytest.raises(StorageError, match="grace_period"):
        open_storage(_sqlite_url(tmp_path / "h.db"), heartbeat_interval=5, grace_period=0)


# --------------------------------------------------------------------------------------------
# Retrying
# --------------------------------------------------------------------------------------------


def _locked() -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError(
        "INSERT INTO trials ...", {}, sqlite3.OperationalError("database is locked")
    )


def test_with_retry_retries_database_is_locked() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) <= 2:
            raise _locked()
        return "done"

    assert with_retry(flaky, base_delay=0.001) == "done"
    assert len(calls) == 3


def test_with_retry_sees_through_optuna_wrapping() -> None:
    calls = []

    def flaky() -> int:
        calls.append(1)
        if len(calls) == 1:
            try:
                raise _locked()
            except sqlalchemy.exc.OperationalError as exc:
                raise optuna.exceptions.StorageInternalError("commit failed") from exc
        return 7

    assert with_retry(flaky, base_delay=0.001) == 7
    assert len(calls) == 2


def test_with_retry_gives_up_and_reraises() -> None:
    calls = []

    def always_locked() -> None:
        calls.append(1)
        raise _locked()

    with pytest.raises(sqlalchemy.exc.OperationalError, match="database is locked"):
        with_retry(always_locked, attempts=3, base_delay=0.001)
    assert len(calls) == 3


def test_with_retry_does_not_retry_other_errors() -> None:
    calls = []

    def broken() -> None:
        calls.append(1)
        raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("no such table: trials"))

    with pytest.raises(sqlalchemy.exc.OperationalError):
        with_retry(broken, base_delay=0.001)
    assert len(calls) == 1


# --------------------------------------------------------------------------------------------
# Copying and listing
# --------------------------------------------------------------------------------------------


def _make_rich_study(storage: optuna.storages.RDBStorage, name: str) -> optuna.Study:
    """A study with complete, pruned, failed and waiting trials and every kind of attribute."""
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
    study.set_user_attr("dataset", "iris")
    study.set_user_attr("nested", {"a": [1, 2.5, None], "b": "x"})
    study._storage.set_study_system_attr(study._study_id, "space_hash", "abc123")

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -10.0, 10.0)
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        units = trial.suggest_int("units", 8, 256, step=8)
        act = trial.suggest_categorical("act", ["relu", "tanh", None])
        trial.set_user_attr("epochs_run", trial.number + 1)
        trial.set_user_attr("note", f"trial {trial.number}")
        trial.storage.set_trial_system_attr(trial._trial_id, "worker", "w0")
        for step in range(3):
            trial.report(x**2 + step / 3 + lr, step)
        if trial.number == 1:
            trial.report(math.inf, 3)
        if trial.number == 2:
            raise optuna.TrialPruned()
        if trial.number == 3:
            raise ValueError("diverged")
        return x**2 + units / 1000 + (0.5 if act == "tanh" else 0.0)

    study.optimize(objective, n_trials=6, catch=(ValueError,))
    study.enqueue_trial({"x": 1.5, "lr": 0.01, "units": 64, "act": "relu"})
    return study


def _assert_same_study(a: optuna.Study, b: optuna.Study) -> None:
    assert a.directions == b.directions
    assert a.user_attrs == b.user_attrs
    # Study.system_attrs is gone in Optuna 5; read them from the storage.
    system_a = a._storage.get_study_system_attrs(a._study_id)
    assert system_a == b._storage.get_study_system_attrs(b._study_id)
    assert system_a["space_hash"] == "abc123"
    trials_a, trials_b = a.get_trials(), b.get_trials()
    assert len(trials_a) == len(trials_b)
    for ta, tb in zip(trials_a, trials_b, strict=True):
        assert ta.number == tb.number
        assert ta.state == tb.state
        assert ta.params == tb.params
        assert ta.distributions == tb.distributions
        assert ta.values == tb.values
        assert ta.intermediate_values == tb.intermediate_values
        assert ta.user_attrs == tb.user_attrs
        assert ta.system_attrs == tb.system_attrs
        assert ta.datetime_start == tb.datetime_start
        assert ta.datetime_complete == tb.datetime_complete


def _unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _load(url: str, name: str) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    storage = open_storage(url, create=False)
    return optuna.load_study(study_name=name, storage=storage), storage


def _backend_pid(storage: optuna.storages.RDBStorage) -> int:
    with storage.engine.connect() as connection:
        return int(connection.execute(sqlalchemy.text("SELECT pg_backend_pid()")).scalar_one())


def _terminate_backend(pid: int) -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test") as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


@contextlib.contextmanager
def _pg_study(pg_url: str, prefix: str) -> Iterator[tuple[str, optuna.storages.RDBStorage]]:
    """A new study on the PostgreSQL server and its storage, both gone afterwards."""
    name = _unique_name(prefix)
    storage = open_storage(pg_url)
    try:
        optuna.create_study(study_name=name, storage=storage)
        yield name, storage
    finally:
        _dispose(storage)
        delete_study_if_present(pg_url, name)


@pytest.mark.postgres
def test_idle_server_connection_is_pinged_and_replaced(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pooled connection the server closed while it sat idle is replaced before use."""
    monkeypatch.setattr(opening, "PING_AFTER_IDLE_S", 0.5)
    with _pg_study(pg_url, "idle-ping") as (name, storage):
        pings: list[object] = []
        real_ping = storage.engine.dialect.do_ping

        def counted_ping(dbapi_connection: object) -> bool:
            pings.append(dbapi_connection)
            return bool(real_ping(dbapi_connection))

        monkeypatch.setattr(storage.engine.dialect, "do_ping", counted_ping)
        first = _backend_pid(storage)
        assert _backend_pid(storage) == first  # the pool hands back the last one used
        assert pings == []  # used a moment ago: no round trip spent on a ping
        _terminate_backend(first)
        time.sleep(0.7)
        study = optuna.load_study(study_name=name, storage=storage)
        study.enqueue_trial({"x": 1.0})
        assert len(pings) >= 1
        assert _backend_pid(storage) != first


@pytest.mark.postgres
def test_without_the_idle_ping_a_closed_connection_fails(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control for the test above: a connection closed a moment ago is not pinged."""
    monkeypatch.setattr(opening, "PING_AFTER_IDLE_S", 3600.0)
    with _pg_study(pg_url, "no-ping") as (name, storage):
        _terminate_backend(_backend_pid(storage))
        time.sleep(0.2)
        with pytest.raises(
            (sqlalchemy.exc.OperationalError, optuna.exceptions.StorageInternalError)
        ):
            optuna.load_study(study_name=name, storage=storage)
        # The pool dropped the dead connection: the next call works on a fresh one.
        assert optuna.load_study(study_name=name, storage=storage).study_name == name


@pytest.mark.postgres
def test_copy_study_sqlite_to_postgresql(tmp_path: Path, pg_url: str) -> None:
    name = _unique_name("copy-to-pg")
    src_url = _sqlite_url(tmp_path / "src.db")
    src_storage = open_storage(src_url)
    try:
        _make_rich_study(src_storage, name)
    finally:
        _dispose(src_storage)
    try:
        assert copy_study(name, src_url, pg_url) == 7
        src, s1 = _load(src_url, name)
        dst, s2 = _load(pg_url, name)
        try:
            _assert_same_study(src, dst)
            states = [t.state for t in dst.get_trials()]
            assert states.count(TrialState.PRUNED) == 1
            assert states.count(TrialState.FAIL) == 1
            assert states.count(TrialState.WAITING) == 1
            assert dst.trials[1].intermediate_values[3] == math.inf
        finally:
            _dispose(s1)
            _dispose(s2)
        with pytest.raises(StorageError, match="already exists in .*delete it or choose"):
            copy_study(name, src_url, pg_url)
    finally:
        delete_study_if_present(pg_url, name)


@pytest.mark.postgres
def test_copy_study_postgresql_to_sqlite(tmp_path: Path, pg_url: str) -> None:
    name = _unique_name("copy-from-pg")
    dst_url = _sqlite_url(tmp_path / "dst.db")
    pg_storage = open_storage(pg_url)
    try:
        _make_rich_study(pg_storage, name)
        assert copy_study(name, pg_url, dst_url) == 7
        src = optuna.load_study(study_name=name, storage=pg_storage)
        dst, s2 = _load(dst_url, name)
        try:
            _assert_same_study(src, dst)
        finally:
            _dispose(s2)
    finally:
        _dispose(pg_storage)
        delete_study_if_present(pg_url, name)


def test_copy_study_errors(tmp_path: Path) -> None:
    src_url = _sqlite_url(tmp_path / "a.db")
    dst_url = _sqlite_url(tmp_path / "b.db")
    storage = open_storage(src_url)
    try:
        study = _make_rich_study(storage, "s")
        with pytest.raises(StorageError, match="No study 'other'"):
            copy_study("other", src_url, dst_url)
        with pytest.raises(StorageError, match="no storage at"):
            copy_study("s", _sqlite_url(tmp_path / "absent.db"), dst_url)
        study.ask()  # runs the enqueued WAITING trial: it stays RUNNING
        with pytest.raises(StorageError, match="1 RUNNING trial"):
            copy_study("s", src_url, dst_url)
        assert list_studies(dst_url) == []
        assert copy_study("s", src_url, dst_url, allow_running=True) == 7
        (row,) = list_studies(dst_url)
        assert (row.n_trials, row.n_running) == (7, 1)
        with pytest.raises(StorageError, match="already exists"):
            copy_study("s", src_url, dst_url)
    finally:
        _dispose(storage)


def test_list_studies(tmp_path: Path) -> None:
    url = _sqlite_url(tmp_path / "l.db")
    storage = open_storage(url)
    try:
        _make_rich_study(storage, "b-rich")
        maxi = optuna.create_study(study_name="a-max", storage=storage, direction="maximize")
        maxi.add_trial(optuna.trial.create_trial(value=3.0))
        maxi.add_trial(optuna.trial.create_trial(value=5.0))
        optuna.create_study(study_name="c-multi", storage=storage, directions=["minimize"] * 2)
    finally:
        _dispose(storage)
    rows = list_studies(url)
    assert [r.name for r in rows] == ["a-max", "b-rich", "c-multi"]
    a, b, c = rows
    assert (a.n_trials, a.n_complete, a.best_value, a.directions) == (2, 2, 5.0, ("maximize",))
    assert (b.n_trials, b.n_complete, b.n_pruned, b.n_failed, b.n_running) == (7, 4, 1, 1, 0)
    assert b.best_value is not None and b.best_value >= 0
    assert c.best_value is None and c.directions == ("minimize", "minimize")
    with pytest.raises(StorageError, match="no storage at"):
        list_studies(_sqlite_url(tmp_path / "none.db"))


# --------------------------------------------------------------------------------------------
# Several processes on one SQLite file
# --------------------------------------------------------------------------------------------


def _square(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -10.0, 10.0)
    return x**2


def _run_worker(args: tuple[str, str, int]) -> int:
    url, name, n_trials = args
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url)
    try:
        study = with_retry(lambda: optuna.load_study(study_name=name, storage=storage))
        study.optimize(_square, n_trials=n_trials)
        return n_trials
    finally:
        _dispose(storage)


def test_four_processes_share_one_sqlite_file(tmp_path: Path) -> None:
    url = _sqlite_url(tmp_path / "shared.db")
    storage = open_storage(url)
    optuna.create_study(study_name="shared", storage=storage)
    _dispose(storage)

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        done = pool.map_async(_run_worker, [(url, "shared", 25)] * 4).get(timeout=120)
    assert done == [25] * 4

    storage = open_storage(url, create=False)
    try:
        trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    finally:
        _dispose(storage)
    assert len(trials) == 100
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(100))


def _open_at(args: tuple[str, float]) -> str:
    url, start = args
    time.sleep(max(0.0, start - time.time()))  # every process opens at the same moment
    try:
        _dispose(open_storage(url))
        return "ok"
    except StorageError as exc:
        return str(exc)


def _open_together(url: str, n: int) -> list[str]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(n) as pool:  # the start leaves time for every process to import Optuna
        return pool.map_async(_open_at, [(url, time.time() + 8.0)] * n).get(timeout=120)


def _schema_rows(url: str) -> tuple[int, int]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            stamps = connection.execute(sqlalchemy.text("SELECT count(*) FROM alembic_version"))
            versions = connection.execute(sqlalchemy.text("SELECT count(*) FROM version_info"))
            return int(stamps.scalar_one()), int(versions.scalar_one())
    finally:
        engine.dispose()


def test_workers_opening_a_new_sqlite_file_together_all_open_it(tmp_path: Path) -> None:
    # Each creates Optuna's schema; all but the first used to fail with "table ... exists".
    url = _sqlite_url(tmp_path / "new.db")
    assert _open_together(url, 4) == ["ok"] * 4
    assert _schema_rows(url) == (1, 1)


@pytest.mark.postgres
def test_workers_opening_a_new_postgresql_database_together_all_open_it(pg_url: str) -> None:
    import psycopg

    name = _unique_name("capsearch_new_db").lower()
    admin = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        # All but the first used to fail: duplicate key in pg_type_typname_nsp_index.
        assert _open_together(url, 4) == ["ok"] * 4
        assert _schema_rows(url) == (1, 1)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_opening_waits_for_another_process_writing_a_new_file_in_rollback_mode(
    tmp_path: Path,
) -> None:
    # Switching to WAL fails at once, not after the busy timeout, while another connection
    # holds a write lock: a worker opening the file another is creating used to fail.
    path = tmp_path / "new.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE t (x)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO t VALUES (1)")
    release = threading.Timer(0.5, lambda: writer.execute("COMMIT"))
    release.start()
    try:
        _dispose(open_storage(_sqlite_url(path)))
    finally:
        release.join()
        writer.close()
    with contextlib.closing(sqlite3.connect(path)) as check:
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
