"""The command line through real subprocesses: help, bad input, and stored studies left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from search.cli import build_parser
from tests.conftest import TINY_MEMORIZE, write_study

ROOT = Path(__file__).resolve().parent.parent


def capsearch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "search", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def snapshot(url: str) -> list[tuple[str, list[tuple[int, str, dict[str, object]]], dict]]:
    """Everything a user could have stored: studies, their trials and attributes."""
    storage = optuna.storages.RDBStorage(url)
    out = []
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = [(t.number, t.state.name, dict(t.params)) for t in study.trials]
        out.append((summary.study_name, trials, dict(study.user_attrs)))
    storage.engine.dispose()
    return out


@pytest.fixture
def stored(tmp_path: Path) -> str:
    """A storage holding a study named ``tiny`` with one finished trial."""
    url = f"sqlite:///{tmp_path / 'kept.db'}"
    study = optuna.create_study(study_name="tiny", storage=url)
    study.set_user_attr("objective", "memorize")
    study.add_trial(
        optuna.trial.create_trial(
            params={"units": 8},
            distributions={"units": optuna.distributions.IntDistribution(4, 32)},
            value=0.5,
        )
    )
    return url


def test_every_command_has_help() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"run", "list", "show", "validate"} <= set(commands)
    for name, sub in commands.items():
        assert sub.format_help().strip(), name
        assert sub.description or sub.format_usage(), name
    result = capsearch("--help")
    assert result.returncode == 0 and "run" in result.stdout


def test_unknown_study_lists_known_ones(stored: str) -> None:
    before = snapshot(stored)
    line = assert_one_line_error(capsearch("run", "nope", "--storage", stored), "unknown study")
    assert "imdb_generalize" in line and "pima_generalize" in line
    assert snapshot(stored) == before


def test_malformed_study_file_is_named(tmp_path: Path, stored: str) -> None:
    path = write_study(
        tmp_path,
        "tiny",
        TINY_MEMORIZE.replace("dropout = { choices = [0.0, 0.1] }", "dropout = 1.5"),
    )
    before = snapshot(stored)
    assert_one_line_error(
        capsearch("run", str(path), "--storage", stored), str(path), "space.dropout", "[0, 1)"
    )
    assert snapshot(stored) == before


def test_missing_data_says_where_it_looked(tmp_path: Path, stored: str) -> None:
    text = TINY_MEMORIZE.replace(
        'source = "overfit30"',
        'source = "file"\npath = "absent.csv"\nfeatures = ["a"]\ntarget = "b"',
    )
    path = write_study(tmp_path, "tiny", text)  # same name as the stored study
    before = snapshot(stored)
    assert_one_line_error(capsearch("run", str(path), "--storage", stored), "absent.csv")
    assert snapshot(stored) == before


def test_missing_imdb_names_the_places_and_the_fix(tmp_path: Path, stored: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"CAPSEARCH_DATA": str(empty), "KERAS_HOME": str(tmp_path / "keras")}
    before = snapshot(stored)
    line = assert_one_line_error(
        capsearch("run", "imdb_generalize", "--storage", stored, "--offline", env=env),
        str(empty),
    )
    assert "CAPSEARCH_DATA" in line or "--data-dir" in line
    assert snapshot(stored) == before


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("notaurl", "notaurl"),
        ("foo://somewhere/x", "foo"),
        ("sqlite:////nonexistent-folder/deeper/x.db", "/nonexistent-folder/deeper"),
    ],
)
def test_bad_storage_url_is_one_line(url: str, needle: str) -> None:
    assert_one_line_error(capsearch("run", "overfit30_memorize", "--storage", url), needle)


def test_storage_password_is_never_printed() -> None:
    url = "postgresql://user:s3cret-pw@127.0.0.1:1/nodb"
    result = capsearch("list", "--storage", url)
    assert result.returncode == 2
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert "***" in result.stderr


def test_list_and_show_read_a_stored_study(stored: str) -> None:
    listed = capsearch("list", "--storage", stored)
    assert listed.returncode == 0, listed.stderr
    assert any(line.startswith("tiny ") for line in listed.stdout.splitlines())
    assert "imdb_generalize" in listed.stdout  # shipped files are listed too
    shown = capsearch("show", "tiny", "--storage", stored)
    assert shown.returncode == 0, shown.stderr
    assert "units=8" in shown.stdout and "0.5" in shown.stdout
    missing = capsearch("show", "other", "--storage", stored)
    assert_one_line_error(missing, "no study 'other'", "tiny")


def test_validate_checks_every_shipped_study() -> None:
    result = capsearch("validate")
    assert result.returncode == 0, result.stderr
    assert "imdb_generalize: ok" in result.stdout
    assert "collinear_memorize: ok" in result.stdout


def test_bad_trials_value_is_rejected_by_argparse() -> None:
    result = capsearch("run", "overfit30_memorize", "--trials", "0")
    assert result.returncode == 2
    assert "positive integer" in result.stderr


@pytest.mark.slow
def test_a_python_search_is_exported_and_rerun_by_its_study_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``show NAME`` found a notebook's study but ``export``, ``rerun`` and ``verdict`` said
    "unknown study": they now take the study file the search wrote for it."""
    import numpy as np

    import search
    from search.cli import main

    url = f"sqlite:///{tmp_path / 'nb.db'}"
    x = np.linspace(-1, 1, 40).reshape(-1, 1)
    search.search(
        x,
        x.ravel() ** 2,
        objective="memorize",
        trials=2,
        epochs=3,
        study_name="from_python",
        storage=url,
        verbose=0,
        trial_plots=False,
    )
    capsys.readouterr()
    assert main(["export", "from_python", "--storage", url, "--out", str(tmp_path / "out")]) == 0
    assert "matches the stored value" in capsys.readouterr().out
    assert main(["rerun", "from_python", "1", "--storage", url]) == 0
    # A name that is neither a study file nor stored still says which studies are known.
    assert main(["export", "nowhere", "--storage", url]) == 2
    assert "unknown study" in capsys.readouterr().err


def test_output_read_by_a_pipe_that_closes_early_is_no_traceback() -> None:
    """``capsearch list | head -1``: before, ``BrokenPipeError`` with a traceback."""
    process = subprocess.Popen(
        [sys.executable, "-m", "search", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader leaves before the first line
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err


@pytest.mark.slow
def test_a_study_run_from_a_relative_path_is_exported_by_name_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``capsearch run reg.toml`` then ``capsearch export reg``: before, "unknown study"."""
    from search.cli import main

    text = TINY_MEMORIZE.replace("trials = 4", "trials = 1").replace("epochs = 6", "epochs = 2")
    (tmp_path / "mine").mkdir()
    write_study(tmp_path / "mine", "reg", text)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    monkeypatch.chdir(tmp_path / "mine")
    assert main(["run", "reg.toml", "--storage", url, "--no-verdict"]) == 0
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["export", "reg", "--storage", url, "--out", str(tmp_path / "out")]) == 0
    assert "matches the stored value" in capsys.readouterr().out
    (tmp_path / "mine" / "reg.toml").unlink()  # gone: the message says to pass its path
    assert main(["export", "reg", "--storage", url]) == 2
    assert "is not there any more; pass the path" in capsys.readouterr().err


def test_validate_says_it_did_not_load_the_data_and_data_loads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing data file passed ``validate`` ("ok") and failed only at ``run``."""
    from search.cli import main

    text = (
        'objective = "memorize"\ntrials = 1\n[data]\nsource = "file"\npath = "gone.csv"\n'
        'target = "y"\n[training]\nepochs = 1\n[space]\nlayers = 1\nunits = 4\nl2 = 0.0\n'
        "dropout = 0.0\nbatch_size = 8\nlearning_rate = 0.01\n"
    )
    path = write_study(tmp_path, "gone", text)
    assert main(["validate", str(path)]) == 0
    assert "not loaded: --data reads it" in capsys.readouterr().out
    assert main(["validate", str(path), "--data"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "data file not found" in line and str(tmp_path.resolve()) in line
    (tmp_path / "gone.csv").write_text("x,y\n" + "\n".join(f"{i},{i}" for i in range(20)))
    assert main(["validate", str(path), "--data"]) == 0
    assert "loaded: gone.csv" in capsys.readouterr().out
