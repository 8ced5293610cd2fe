"""An SQLite storage made read-only mid-run, for real: ``chmod -R a-w`` on its folder.

Root ignores file permissions, so the worker runs without the capabilities that let it
(``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``, ``CAP_FOWNER``, dropped with ``setpriv``): it
keeps uid 0, so it can still run the interpreter (under ``/root`` here, which user ``nobody``
cannot enter), and permission bits apply to it as to any file owner. The test itself keeps
them, to read the database while the worker writes it and to check it afterwards.

SQLite keeps its files open, and permissions are checked when a file is opened: the running
worker goes on writing through its open connections until it opens a file again, here the
study lock beside the database (``<file>-capsearch.lock``, opened for every trial it takes).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY_MEMORIZE, write_study

_DROP = "--bounding-set=-dac_override,-dac_read_search,-fowner"


def _no_override_prefix(folder: Path) -> list[str]:
    """``setpriv`` dropping the permission-override capabilities, or a skip where it cannot."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to drop the capabilities that bypass file permissions")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) not found")
    probe = folder / "probe"
    probe.write_text("")
    probe.chmod(0o444)
    done = subprocess.run(
        ["setpriv", _DROP, "--", "sh", "-c", f"echo x > {probe}"], capture_output=True, text=True
    )
    probe.unlink()
    if done.returncode == 0:
        pytest.skip("file permissions still bypassed after setpriv dropped the capabilities")
    if "Permission denied" not in done.stderr:
        pytest.skip(f"setpriv cannot drop capabilities here: {done.stderr.strip()}")
    return ["setpriv", _DROP, "--"]


def _read(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return conn.execute(sql).fetchall()


def _counts(path: Path) -> dict[str, int]:
    return {str(s): int(n) for s, n in _read(path, "SELECT state, COUNT(*) FROM trials GROUP BY 1")}


def _make_read_only(folder: Path) -> None:
    """``chmod -R a-w folder``: the database, its -wal, -shm and lock files, the folder."""
    for parent, _, files in os.walk(folder, topdown=False):
        for name in [*files, "."]:
            path = Path(parent, name)
            path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)


@pytest.mark.slow
def test_storage_made_read_only_mid_run_is_one_line(tmp_path: Path) -> None:
    """Three trials stored, one running, then the storage read-only: one line, exit 1."""
    folder = tmp_path / "storage"
    folder.mkdir()
    prefix = _no_override_prefix(tmp_path)
    study = write_study(tmp_path, "readonly", TINY_MEMORIZE.replace("trials = 4", "trials = 40"))
    db = folder / "s.db"
    argv = [sys.executable, "-m", "search", "run", str(study), "--storage", f"sqlite:///{db}"]
    proc = subprocess.Popen(
        prefix + argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    before: dict[str, int] = {}
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.Error):  # not created yet
            before = _counts(db)
        if before.get("COMPLETE", 0) >= 3 and before.get("RUNNING", 0) == 1:
            break
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail(f"never saw 3 trials stored and one running: {before}, {proc.communicate()}")
    running = _read(db, "SELECT number FROM trials WHERE state = 'RUNNING'")[0][0]
    _make_read_only(folder)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, (out[-2000:], err[-2000:])
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("capsearch: error: storage sqlite:///"), err[-2000:]
    assert "stopped taking writes (cannot write " in last and "permission denied" in last, last
    assert "make the storage file, the files beside it and its folder writable" in last, last
    assert last.endswith("stored trials are kept)") or "heartbeat check" in last, last
    assert _read(db, "PRAGMA integrity_check") == [("ok",)]
    after = _counts(db)
    assert after.get("COMPLETE", 0) >= before["COMPLETE"], (before, after)
    (state,) = _read(db, f"SELECT state FROM trials WHERE number = {running}")[0]
    assert state in ("COMPLETE", "FAIL") or "heartbeat check" in last, (state, last)
    assert "RUNNING" not in after or "heartbeat check" in last, (after, last)
    print(f"READONLY before chmod {before}, trial {running} running; after {after}; {last}")
