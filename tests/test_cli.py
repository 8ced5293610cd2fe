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
