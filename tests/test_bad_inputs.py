"""Many bad inputs, each one line on stderr, exit code 2, and the stored studies untouched.

Every case runs ``capsearch`` in this process against a storage that already holds a study; the
storage's content (every row, dumped) must be the same afterwards. ``python -m
tests.test_bad_inputs`` prints the count of cases that held.
"""

from __future__ import annotations

import hashlib
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from search.cli import main
from tests.conftest import TINY_MEMORIZE

GOOD = TINY_MEMORIZE
CSV = "x1,x2,y\n" + "".join(f"{i},{i % 5},{i % 3}\n" for i in range(30))

# (case id, study text or None, extra files, argv after the command word's substitutions)
# In argv, STUDY is the study file written for the case, DB the prepared storage URL.
_STUDY_CASES: list[tuple[str, str]] = [
    ("toml syntax", "objective = \n"),
    ("unknown top key", GOOD + "\ncolour = 'red'\n"),
    ("unknown objective", GOOD.replace('objective = "memorize"', 'objective = "win"')),
    ("trials zero", GOOD.replace("trials = 4", "trials = 0")),
    ("epochs missing", GOOD.replace("epochs = 6\n", "")),
    ("patience negative", GOOD.replace("seed = 0\n", "seed = 0\npatience = -1\n", 1)),
    (
        "range reversed",
        GOOD.replace("layers = { low = 1, high = 2 }", "layers = { low = 3, high = 1 }"),
    ),
    ("dropout too high", GOOD.replace("dropout = { choices = [0.0, 0.1] }", "dropout = 1.2")),
    ("units zero", GOOD.replace("units = { low = 4, high = 32, log = true }", "units = 0")),
    (
        "log from zero",
        GOOD.replace(
            "units = { low = 4, high = 32, log = true }",
            "units = { low = 0, high = 8, log = true }",
        ),
    ),
    (
        "units huge",
        GOOD.replace("units = { low = 4, high = 32, log = true }", "units = 1000000000").replace(
            "units = 8\n", "units = 1000000000\n"
        ),
    ),
    (
        "empty choices",
        GOOD.replace("batch_size = { choices = [7, 21] }", "batch_size = { choices = [] }"),
    ),
    (
        "duplicate choices",
        GOOD.replace("batch_size = { choices = [7, 21] }", "batch_size = { choices = [7, 7] }"),
    ),
    ("unknown activation", GOOD.replace("[space]\n", '[space]\nactivation = "swish2"\n')),
    ("unknown optimizer", GOOD.replace("[space]\n", '[space]\noptimizer = "lbfgs"\n')),
    ("unknown space key", GOOD.replace("[space]\n", "[space]\nwidth = 3\n")),
    ("baseline outside space", GOOD.replace("units = 8\n", "units = 999\n")),
    ("baseline missing param", GOOD.replace("units = 8\n", "")),
    ("baseline unnamed", GOOD.replace('name = "small"\n', "")),
    ("unknown data source", GOOD.replace('source = "overfit30"', 'source = "mnist9"')),
    ("unknown data option", GOOD.replace('source = "overfit30"', 'source = "overfit30"\nrows = 3')),
    ("unknown pruner", GOOD.replace('name = "median"', 'name = "coinflip"')),
    ("unknown sampler", GOOD + '\n[sampler]\nname = "grid9"\n'),
    (
        "csv missing",
        GOOD.replace('source = "overfit30"', 'source = "file"\npath = "nope.csv"\ntarget = "y"'),
    ),
    (
        "csv no target column",
        GOOD.replace('source = "overfit30"', 'source = "file"\npath = "t.csv"\ntarget = "z"'),
    ),
    (
        "csv target among features",
        GOOD.replace(
            'source = "overfit30"',
            'source = "file"\npath = "t.csv"\ntarget = "y"\nfeatures = ["x1", "y"]',
        ),
    ),
    (
        "csv bad task",
        GOOD.replace(
            'source = "overfit30"',
            'source = "file"\npath = "t.csv"\ntarget = "y"\ntask = "ranking"',
        ),
    ),
    (
        "csv validation fraction",
        GOOD.replace(
            'source = "overfit30"',
            'source = "file"\npath = "t.csv"\ntarget = "y"\nvalidation_fraction = 0.9',
        ),
    ),
]

_ARGV_CASES: list[tuple[str, list[str]]] = [
    ("unknown study name", ["run", "no_such_study", "--storage", "DB"]),
    ("study path missing", ["validate", "/nonexistent/x.toml"]),
    ("trials zero flag", ["run", "GOODSTUDY", "--trials", "0", "--storage", "DB"]),
    ("trials text", ["run", "GOODSTUDY", "--trials", "many", "--storage", "DB"]),
    ("timeout negative", ["run", "GOODSTUDY", "--timeout", "-5", "--storage", "DB"]),
    ("tolerance negative", ["rerun", "GOODSTUDY", "0", "--tolerance", "-1", "--storage", "DB"]),
    ("trial negative", ["rerun", "GOODSTUDY", "-1", "--storage", "DB"]),
    ("workers zero", ["workers", "GOODSTUDY", "-n", "0", "--storage", "DB"]),
    ("top zero", ["show", "kept", "--top", "0", "--storage", "DB"]),
    ("port out of range", ["dashboard", "--port", "70000", "--storage", "DB"]),
    ("port zero", ["dashboard", "--port", "0", "--storage", "DB"]),
    ("show missing study", ["show", "absent", "--storage", "DB"]),
    ("show json missing study", ["show", "absent", "--json", "--storage", "DB"]),
    ("report missing study", ["report", "absent", "--storage", "DB"]),
    ("delete missing study", ["delete", "absent", "--yes", "--storage", "DB"]),
    ("delete without answer", ["delete", "kept", "--storage", "DB"]),
    ("copy missing study", ["copy", "absent", "--storage", "DB", "--to", "sqlite:///TMP/new.db"]),
    ("copy onto itself", ["copy", "kept", "--storage", "DB", "--to", "DB"]),
    ("copy both flags", ["copy", "kept", "--storage", "DB", "--from", "DB", "--to", "DB"]),
    ("rerun missing trial", ["rerun", "GOODSTUDY", "99", "--storage", "DB"]),
    ("export missing study", ["export", "GOODSTUDY", "--storage", "sqlite:///TMP/empty.db"]),
    ("not a url", ["list", "--storage", "studies.db"]),
    ("unsupported scheme", ["list", "--storage", "oracle://u@h/db"]),
    ("unknown driver", ["list", "--storage", "postgresql+nodriver://u@h/db"]),
    ("sqlite file missing", ["show", "kept", "--storage", "sqlite:///TMP/missing.db"]),
    ("sqlite folder missing", ["run", "GOODSTUDY", "--storage", "sqlite:///TMP/no/such/dir/s.db"]),
    ("sqlite path is a folder", ["list", "--storage", "sqlite:///TMP"]),
    ("sqlite not a database", ["list", "--storage", "sqlite:///TMP/junk.db"]),
    ("server unreachable", ["list", "--storage", "postgresql://alice@127.0.0.1:1/x"]),
    ("query password", ["list", "--storage", "postgresql://alice@127.0.0.1:1/x?password=Qs9"]),
    ("raw at in password", ["list", "--storage", "postgresql://alice:p@ss@127.0.0.1:1/x"]),
    ("keyword password", ["list", "--storage", "host=h password=Kw9"]),
    ("unknown command", ["frobnicate"]),
    ("missing study argument", ["show"]),
]

_ENV_CASES: list[tuple[str, str, str]] = [
    ("heartbeat text", "CAPSEARCH_HEARTBEAT", "abc"),
    ("offline maybe", "CAPSEARCH_OFFLINE", "maybe"),
    ("max retry negative", "CAPSEARCH_MAX_RETRY", "-3"),
]

CASES = (
    [pytest.param("study", text, None, id=f"file: {name}") for name, text in _STUDY_CASES]
    + [pytest.param("argv", None, argv, id=f"cli: {name}") for name, argv in _ARGV_CASES]
    + [
        pytest.param("env", (var, value), None, id=f"env: {name}")
        for name, var, value in _ENV_CASES
    ]
)
SECRETS = ("Qs9", "Kw9", "ss@127")


def _digest(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()


@pytest.fixture
def prepared(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A storage holding the study ``kept`` (3 trials) and a valid study file beside it."""
    db = tmp_path / "kept.db"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="kept", storage=f"sqlite:///{db}")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    (tmp_path / "t.csv").write_text(CSV)
    (tmp_path / "junk.db").write_text("not a database")
    (tmp_path / "GOODSTUDY.toml").write_text(GOOD)
    optuna.create_study(study_name="e", storage=f"sqlite:///{tmp_path / 'empty.db'}")
    yield db, _digest(db)


@pytest.mark.parametrize(("kind", "text", "argv"), CASES)
def test_bad_input_is_one_line_exit_2_and_storage_untouched(
    kind: str,
    text: object,
    argv: list[str] | None,
    prepared: tuple[Path, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db, before = prepared
    url = f"sqlite:///{db}"
    study = tmp_path / "case.toml"
    if kind == "study":
        assert isinstance(text, str)
        study.write_text(text)
        args = ["run", str(study), "--storage", url]
    elif kind == "env":
        assert isinstance(text, tuple)
        monkeypatch.setenv(*text)
        args = ["run", str(tmp_path / "GOODSTUDY.toml"), "--storage", url]
    else:
        assert argv is not None
        args = [
            a.replace("DB", url)
            .replace("TMP", str(tmp_path))
            .replace("GOODSTUDY", str(tmp_path / "GOODSTUDY.toml"))
            for a in argv
        ]
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2, err
    assert len(errors) == 1 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err  # one line: no usage block, no warnings
    assert not any(secret in err for secret in SECRETS), err
    assert _digest(db) == before
    assert not (tmp_path / "new.db").exists()


if __name__ == "__main__":  # the count for a closing note
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
