"""What a new user tripped over: leaked passwords, bad input that slipped through, wrong output.

Each test reproduces one report: the command or call that showed it, and what it must do now.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from search.cli import main
from search.errors import FatalError, StorageError, StudyFileError
from search.spec import load_study
from search.storage.urls import default_storage_url, mask_text, mask_url, resolve_storage_url
from tests.conftest import ROOT, TINY_MEMORIZE, write_study
from tests.tiny_studies import TinyRun, tiny_run

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _cli(
    *args: str, cwd: Path = ROOT, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CAPSEARCH_STORAGE"}
    return subprocess.run(
        [sys.executable, "-m", "search", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        input=stdin,
        timeout=300,
    )


def _one_error(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert done.returncode == code, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("capsearch: error: "), done.stderr
    return lines[0]


# --- secrets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("postgresql://alice@wrong-host:1/x?password=QuerySecret9", "QuerySecret9"),
        ("postgresql://alice@wrong-host:1/x?sslmode=disable&password=Qs2", "Qs2"),
        ("postgresql://alice:p@ssW0rdX@wrong-host:1/x", "ssW0rdX"),
        ("host=wrong-host user=alice password=KwSecret1", "KwSecret1"),
        ("postgresql://alice:Pct%40Secret@wrong-host:1/x", "Secret"),
    ],
)
def test_no_form_of_a_password_is_printed(url: str, secret: str) -> None:
    line = _one_error(_cli("list", "--storage", url))
    assert secret not in line and "***" in line
    assert "o***en" not in line and "***ostgresql" not in line  # no letters masked at random


def test_a_raw_at_sign_in_a_password_is_refused_with_the_fix() -> None:
    line = _one_error(_cli("list", "--storage", "postgresql://alice:p@ssW0rdX@wrong-host:1/x"))
    assert "raw '@'" in line and "percent-encoded" in line and "%40" in line
    assert "postgresql://alice:***@wrong-host:1/x" in line


def test_mask_text_masks_the_whole_password_only() -> None:
    url = "postgresql://alice:p@ssW0rdX@wrong-host:1/x"
    text = mask_text("could not translate host ssW0rdX@wrong-host for p@ssW0rdX; port 1", url)
    assert "ssW0rdX" not in text and "port 1" in text
    assert mask_url("postgresql://u@h/db?password=s3cret&x=1") == (
        "postgresql://u@h/db?password=***&x=1"
    )


def test_validate_says_it_does_not_import_a_hypermodel() -> None:
    done = _cli("validate", str(ROOT / "spaces" / "examples" / "kt_pima.toml"))
    assert done.returncode == 0, done.stderr
    assert "validate did not import it" in done.stdout and "0 baselines" in done.stdout


# --- bad input that slipped through ------------------------------------------------------------


def _csv_study(folder: Path, data_extra: str) -> Path:
    rows = ["x1,x2,y"] + [f"{i},{i * 2 % 7},{i % 3}" for i in range(40)]
    (folder / "t.csv").write_text("\n".join(rows) + "\n")
    text = TINY_MEMORIZE.replace(
        '[data]\nsource = "overfit30"',
        f'[data]\nsource = "file"\npath = "t.csv"\ntarget = "y"\n{data_extra}',
    ).replace("batch_size = { choices = [7, 21] }", "batch_size = 8")
    text = text.replace("batch_size = 21\n", "batch_size = 8\n")
    return write_study(folder, "csvstudy", text)


def test_a_csv_target_among_its_features_is_refused(tmp_path: Path) -> None:
    path = _csv_study(tmp_path, 'features = ["x1", "y"]')
    with pytest.raises(StudyFileError, match="target 'y' is also a feature"):
        load_study(path)


def test_csv_features_left_out_take_every_column_but_the_target(tmp_path: Path) -> None:
    from search.data import data_context, load_dataset

    spec = load_study(_csv_study(tmp_path, ""))
    dataset = load_dataset("file", spec.data.options, data_context(tmp_path, None))
    assert dataset.n_features == 2


def test_an_unknown_activation_lists_the_allowed_ones(tmp_path: Path) -> None:
    text = TINY_MEMORIZE.replace("[space]\n", '[space]\nactivation = "swish2"\n')
    with pytest.raises(StudyFileError, match="use one of relu, tanh"):
        load_study(write_study(tmp_path, "act", text))


def test_a_model_too_large_for_memory_is_refused_at_load(tmp_path: Path) -> None:
    text = TINY_MEMORIZE.replace("units = { low = 4, high = 32, log = true }", "units = 1000000000")
    text = text.replace("units = 8\n", "units = 1000000000\n")
    path = write_study(tmp_path, "huge", text)
    with pytest.raises(StudyFileError, match=r"parameters\) needs at least .* but this host has"):
        load_study(path)
    db = tmp_path / "s.db"
    line = _one_error(_cli("run", str(path), "--storage", f"sqlite:///{db}"))
    assert "lower units.high" in line and not db.exists()


def test_rerun_tolerance_message_says_tolerance(tmp_path: Path) -> None:
    done = _cli("rerun", "overfit30_memorize", "0", "--tolerance", "-1")
    assert done.returncode == 2 and "positive relative tolerance" in done.stderr
    assert "seconds" not in done.stderr


def test_dashboard_port_out_of_range_or_in_use_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    optuna.create_study(study_name="s", storage=url)
    line = _one_error(_cli("dashboard", "--storage", url, "--port", "70000"))
    assert "port 70000 is out of range" in line
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _cli("dashboard", "--storage", url, "--port", str(port))
    line = _one_error(done)
    assert f"cannot serve the dashboard on 127.0.0.1:{port}" in line
    assert "optuna-dashboard on" not in done.stdout


def test_copy_of_a_missing_study_creates_no_destination(tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'a.db'}"
    optuna.create_study(study_name="there", storage=source)
    destination = tmp_path / "b.db"
    line = _one_error(
        _cli("copy", "absent", "--storage", source, "--to", f"sqlite:///{destination}")
    )
    assert "No study 'absent'" in line and not destination.exists()


def test_a_failed_run_search_leaves_no_study(tmp_path: Path) -> None:
    from search.runs import SearchOptions, run_search

    path = write_study(tmp_path, "gone", TINY_MEMORIZE)
    spec = load_study(path)
    path.unlink()  # the study file is missing by the time the run starts
    url = f"sqlite:///{tmp_path / 's.db'}"
    with pytest.raises(FatalError, match="cannot read the study file"):
        run_search(spec, SearchOptions(storage=url), echo=lambda line: None)
    assert optuna.get_all_study_summaries(url) == []


def test_the_default_storage_does_not_depend_on_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CAPSEARCH_STORAGE", raising=False)
    monkeypatch.chdir(ROOT)
    here = resolve_storage_url(None)
    monkeypatch.chdir(tmp_path)
    assert resolve_storage_url(None) == here == default_storage_url(ROOT)


# --- results and wording ------------------------------------------------------------------------


def test_a_loss_far_above_its_start_is_pruned_like_nan() -> None:
    from search.engine.objective import DIVERGED_FACTOR, diverged

    assert diverged(734.0, 0.69) and diverged(float("inf"), 0.69) and diverged(None, None)
    assert not diverged(0.69 * DIVERGED_FACTOR, 0.69) and not diverged(3.0, None)


@pytest.mark.slow
def test_a_loss_absurd_from_the_first_epoch_is_pruned_against_its_start(
    tmp_path: Path, shared_data: Path
) -> None:
    # Adam at a learning rate of 45 on the 21 points: the first epoch already ends at an MSE of
    # about 1e4 or more, which its first epoch cannot be judged against; the untrained model can.
    from search.runs import SearchOptions, run_search

    text = """
objective = "memorize"
trials = 1

[data]
source = "overfit30"

[training]
epochs = 2
steps_per_epoch = 20
seed = 0

[space]
layers = 2
units = 16
l2 = 0.0
dropout = 0.0
batch_size = 7
learning_rate = 45.0
optimizer = "adam"
"""
    spec = load_study(write_study(tmp_path, "diverges", text))
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    run_search(spec, SearchOptions(storage=url, trial_plots=False), echo=lambda _: None)
    (trial,) = optuna.load_study(study_name="diverges", storage=url).trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert "before its first step" in trial.user_attrs["pruned_reason"]


@pytest.fixture(scope="module")
def memorize(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    return tiny_run("tiny_memorize", tmp_path_factory)


@pytest.fixture(scope="module")
def sine(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    return tiny_run("tiny_sine", tmp_path_factory)


@pytest.mark.slow
def test_copy_copies_the_plots_and_delete_removes_the_study(
    memorize: TinyRun, tmp_path: Path
) -> None:
    destination = f"sqlite:///{tmp_path / 'copy.db'}"
    done = _cli("copy", "tiny_memorize", "--from", memorize.storage_url, "--to", destination)
    assert done.returncode == 0, done.stderr
    assert "copy --from is deprecated; use --storage" in done.stderr
    assert "A new study created" not in done.stderr
    plots = sorted(p.name for p in memorize.artifacts.iterdir())
    assert plots and sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == plots
    assert f"{len(plots)} plots" in done.stdout
    refused = _cli("delete", "tiny_memorize", "--storage", destination, stdin="")
    assert "pass --yes" in _one_error(refused)
    kept = _cli("show", "tiny_memorize", "--storage", destination, "--json")
    assert json.loads(kept.stdout)["study"] == "tiny_memorize"
    done = _cli("delete", "tiny_memorize", "--storage", destination, "--yes")
    assert done.returncode == 0 and "deleted study tiny_memorize" in done.stdout, done.stderr
    assert not list((tmp_path / "artifacts").iterdir())  # its own folder: plots removed
    again = _cli("delete", "tiny_memorize", "--storage", destination, "--yes")
    assert "no study 'tiny_memorize'" in _one_error(again)


@pytest.mark.slow
def test_list_and_show_as_json(memorize: TinyRun) -> None:
    listed = json.loads(_cli("list", "--storage", memorize.storage_url, "--json").stdout)
    row = next(r for r in listed if r["study"] == "tiny_memorize")
    assert row["trials"] >= 3 and row["shipped"] is False
    shown = json.loads(
        _cli("show", "tiny_memorize", "--storage", memorize.storage_url, "--json").stdout
    )
    assert shown["trials"]["complete"] + shown["trials"]["pruned"] == 3
    assert shown["baselines"][0]["name"] == "small"


@pytest.mark.slow
def test_show_says_what_it_ranks_and_names_the_gap(sine: TinyRun, memorize: TinyRun) -> None:
    assert main(["show", "tiny_sine", "--storage", sine.storage_url]) == 0
    out = "\n".join(_cli("show", "tiny_sine", "--storage", sine.storage_url).stdout.splitlines())
    assert "complete" in out.splitlines()[0] and "pruned and failed trials are not ranked" in out
    assert "best versus 1 baseline:" in out and "1 baselines" not in out
    assert "run_gap" in out and "can be negative" in out  # generalize: running train loss
    text = _cli("show", "tiny_memorize", "--storage", memorize.storage_url).stdout
    assert "run_gap" not in text  # memorize: measured in inference mode


@pytest.mark.slow
def test_no_start_up_chatter_or_retracing_warning(tmp_path: Path) -> None:
    text = TINY_MEMORIZE.replace("trials = 4", "trials = 7").replace(
        '[pruner]\nname = "median"\nn_startup_trials = 2', '[pruner]\nname = "none"'
    )
    done = _cli(
        "run",
        str(write_study(tmp_path, "quiet", text)),
        "--storage",
        f"sqlite:///{tmp_path / 'q.db'}",
    )
    assert done.returncode == 0, done.stderr
    for chatter in ("absl::InitializeLog", "oneDNN", "cuda drivers", "cuInit", "retracing"):
        assert chatter not in done.stderr + done.stdout, chatter
    assert "A new study created" not in done.stderr


def test_no_study_note_says_versus_baselines_without_baselines(tmp_path: Path) -> None:
    from search.views.summary import comparison_title, plural

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="plain", storage=url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert comparison_title(study) == "best trial (the study has no baselines)"
    assert plural(1, "baseline") == "1 baseline"


def test_bench_keeps_the_sections_it_did_not_measure() -> None:
    from benchmarks.bench_training import keep_unmeasured

    previous = (ROOT / "BENCHMARKS.md").read_text()
    rendered = "# Benchmarks\n\nMeasured now.\n\n## P2 IMDB, seconds per epoch\n\nnew P2 table"
    merged = keep_unmeasured(rendered, previous, {"p2": {"x": 1}})
    assert "## P1 tiny data" in merged and "## P3 per-trial overhead" in merged
    assert "new P2 table" in merged and merged.count("## P2") == 1


def test_start_up_chatter_is_dropped_and_real_errors_kept(
    capfd: pytest.CaptureFixture[str],
) -> None:
    from search.training.quiet_start import native_startup_quieted

    with native_startup_quieted():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are x\n")
        os.write(2, b"E0000 cuda_platform.cc:52] failed call to cuInit: INTERNAL\n")
        os.write(2, b"a real problem\n")
    err = capfd.readouterr().err
    assert err == "a real problem\n"


def test_storage_errors_are_fatal_one_liners(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        from search.storage.studies import delete_study

        delete_study("x", f"sqlite:///{tmp_path / 'none.db'}")
    assert not (tmp_path / "none.db").exists()
    assert sqlite3.sqlite_version


def test_the_dashboard_does_not_log_each_request(tmp_path: Path) -> None:
    import time
    import urllib.request

    url = f"sqlite:///{tmp_path / 'd.db'}"
    optuna.create_study(study_name="s", storage=url)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "search", "dashboard", "--storage", url, "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies") as response:
                    assert response.status == 200
                break
            except OSError:
                time.sleep(0.2)
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=10)
    assert "optuna-dashboard on" in out
    assert "GET /api/studies" not in out and "HTTP/1.1" not in out
