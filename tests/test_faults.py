"""Faults a run must survive: a storage that stops taking writes, and a resumed sampler.

Real SQLite files throughout: the full disk is SQLite's own size limit (``max_page_count``) or
a small tmpfs where this host lets the test mount one.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy

from search.distributed.liveness import liveness_settings
from search.distributed.worker_storage import open_worker_storage
from search.engine.study import open_study
from search.engine.trial_loop import run_trials
from search.errors import StorageWriteError
from search.spec import load_study
from search.storage.write_errors import write_problem
from tests.conftest import ROOT, TINY_MEMORIZE, write_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _states(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return dict(conn.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall())


def test_full_storage_is_one_error_and_the_running_trial_is_failed(tmp_path: Path) -> None:
    """SQLite's size limit reached mid-run: StorageWriteError, the trial FAIL, the rest kept."""
    path = tmp_path / "studies.db"
    storage = open_worker_storage(f"sqlite:///{path}", liveness_settings())
    study = optuna.create_study(study_name="full", storage=storage)
    limit: dict[str, int] = {}

    @sqlalchemy.event.listens_for(storage.engine, "connect")
    def _cap(dbapi_connection: Any, record: Any) -> None:
        if limit:
            dbapi_connection.execute(f"PRAGMA max_page_count = {limit['pages']}")

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        if trial.number == 3:  # from now on the file cannot grow: a full disk
            with sqlite3.connect(path) as conn:
                limit["pages"] = conn.execute("PRAGMA page_count").fetchone()[0]
            storage.engine.dispose()
            trial.set_user_attr("padding", "x" * 200_000)  # needs pages the file cannot get
        return x

    with pytest.raises(StorageWriteError) as caught:
        run_trials(study, objective, target=10, worker="w0", echo=lambda line: None)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("storage sqlite:///")  # the launcher puts "[w0] " in front
    assert "stopped taking writes (database or disk is full) during trial 3" in message
    assert "free space on the disk" in message
    assert message.endswith("trial 3 was marked failed")
    limit.clear()
    storage.engine.dispose()
    assert _states(path) == {"COMPLETE": 3, "FAIL": 1}


def test_write_problems_are_recognised_through_wrappers() -> None:
    for text, fix in [
        ("database or disk is full", "free space"),
        ("attempt to write a readonly database", "writable"),
        ("disk I/O error", "check the disk"),
        ('could not extend file "base/1/2": No space left on device', "free space"),
    ]:
        try:
            try:
                raise sqlite3.OperationalError(text)
            except sqlite3.Error as inner:
                raise optuna.exceptions.StorageInternalError("commit failed") from inner
        except optuna.exceptions.StorageInternalError as outer:
            problem = write_problem(outer)
        assert problem is not None and fix in problem.fix, text
    assert write_problem(sqlite3.OperationalError("no such table: trials")) is None


def test_refused_files_beside_the_storage_are_write_problems(tmp_path: Path) -> None:
    """The OS refusing the study lock beside the file is the storage's; elsewhere it is not."""
    database = tmp_path / "s.db"
    for number, fix in [(13, "writable"), (30, "remount"), (28, "free space"), (5, "check")]:
        refused = OSError(number, os.strerror(number), f"{database}-capsearch.lock")
        problem = write_problem(refused, str(database))
        assert problem is not None and fix in problem.fix, number
        assert problem.cause.startswith(f"cannot write {database}-capsearch.lock: "), problem
    denied = PermissionError(13, "Permission denied", f"{database}-capsearch.lock")
    assert write_problem(denied) is None  # no storage file given: the objective's own error
    elsewhere = PermissionError(13, "Permission denied", str(tmp_path / "model.keras"))
    assert write_problem(elsewhere, str(database)) is None


@pytest.fixture
def tmpfs(tmp_path: Path) -> Any:
    """A 2 MB tmpfs, where this host lets the test mount one (root in a container)."""
    folder = tmp_path / "small"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(folder)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.mark.slow
def test_full_disk_from_the_command_line(tmp_path: Path, tmpfs: Path) -> None:
    """``capsearch run`` on a disk that fills up: one line, exit 1, nothing left RUNNING."""
    study = write_study(tmp_path, "fills", TINY_MEMORIZE.replace("trials = 4", "trials = 40"))
    (tmpfs / "filler").write_bytes(b"\0" * 1_400_000)  # leaves room for a few trials only
    done = subprocess.run(
        [sys.executable, "-m", "search", "run", str(study), "--storage", f"sqlite:///{tmpfs}/s.db"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("capsearch: error:")]
    assert len(errors) == 1 and "database or disk is full" in errors[0], done.stderr[-2000:]
    (tmpfs / "filler").unlink()
    states = _states(tmpfs / "s.db")
    assert "RUNNING" not in states and states.get("FAIL", 0) >= 1


def _draws(spec_path: Path, url: str, trials: int) -> list[dict[str, Any]]:
    """Open (create or resume) the study and run ``trials`` more sampled-only trials."""
    spec = load_study(str(spec_path))
    storage = open_worker_storage(url, liveness_settings())
    study, _ = open_study(spec, storage)

    def objective(trial: optuna.Trial) -> float:
        params = {name: p.suggest(trial, name) for name, p in spec.space.items()}
        return float(params["learning_rate"])

    done = len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    run_trials(study, objective, target=done + trials, echo=lambda line: None)
    storage.engine.dispose()
    return [t.params for t in study.get_trials()]


def test_a_resumed_study_goes_on_with_new_draws(tmp_path: Path) -> None:
    text = TINY_MEMORIZE.replace("[[baselines]]", "[sampler]\nname = 'random'\n\n[[baselines]]")
    spec_path = write_study(tmp_path, f"resumed_{uuid.uuid4().hex[:6]}", text)
    first = tmp_path / "first.db"
    first_url = f"sqlite:///{first}"
    _draws(spec_path, first_url, 3)  # the baseline and two sampled trials
    shutil.copy(first, tmp_path / "second.db")
    resumed = _draws(spec_path, first_url, 2)
    again = _draws(spec_path, f"sqlite:///{tmp_path / 'second.db'}", 2)
    sampled_before = resumed[1:3]
    sampled_after = resumed[3:5]
    assert all(p not in sampled_before for p in sampled_after), resumed
    assert again == resumed  # the same stored study resumed twice draws the same
