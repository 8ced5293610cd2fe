"""The resume guard: a stored study resumed with other data, space or objective is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest

from search._compat import optuna as optuna_compat
from search.cli import main
from search.data import Dataset
from search.engine.fingerprint import data_fingerprint, differences
from tests.conftest import TINY_MEMORIZE, write_study

ONE_TRIAL = TINY_MEMORIZE.replace("trials = 4", "trials = 1").replace("epochs = 6", "epochs = 2")


def _trials(url: str, name: str) -> int:
    return len(optuna.load_study(study_name=name, storage=url).trials)


def test_narrowing_rules() -> None:
    old = {
        "objective": "memorize",
        "data": {"source": "overfit30"},
        "space": {
            "units": {"low": 8, "high": 256, "log": True},
            "dropout": {"choices": [0.0, 0.1]},
            "l2": {"low": 1e-6, "high": 1e-3, "log": True, "zero": True},
        },
    }

    def diff(**space: object) -> list[tuple[str, bool]]:
        new = {**old, "space": {**old["space"], **space}}  # type: ignore[dict-item]
        return [(d.key, d.narrowing) for d in differences(old, new)]

    assert diff() == []
    assert diff(units={"low": 16, "high": 64, "log": True}) == [("space.units", True)]
    assert diff(units={"low": 8, "high": 256}) == [("space.units", False)]  # log dropped
    assert diff(units={"low": 4, "high": 64, "log": True}) == [("space.units", False)]  # wider
    assert diff(units=32) == [("space.units", True)]  # fixed inside the range
    assert diff(dropout=0.1) == [("space.dropout", True)]
    assert diff(dropout={"choices": [0.0, 0.1, 0.2]}) == [("space.dropout", False)]
    assert diff(l2={"low": 1e-6, "high": 1e-3, "log": True}) == [("space.l2", True)]
    assert diff(l2=0.0) == [("space.l2", True)]
    other = {**old, "objective": "generalize", "data": {"source": "square"}}
    assert [d.key for d in differences(old, other)] == ["objective", "data.source"]


def test_data_fingerprint_sees_values_and_shapes() -> None:
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    y = np.zeros((3, 1), np.float32)
    base = data_fingerprint(Dataset("d", "regression", x, y))
    assert data_fingerprint(Dataset("d", "regression", x.copy(), y)) == base
    changed = x.copy()
    changed[0, 0] = 100.0
    assert data_fingerprint(Dataset("d", "regression", changed, y))["sha256"] != base["sha256"]
    # A difference in the last bits (another host's rounding) still matches.
    nudged = np.nextafter(x, np.float32(np.inf))
    assert data_fingerprint(Dataset("d", "regression", nudged, y))["sha256"] == base["sha256"]


@pytest.mark.slow
def test_an_edited_study_file_is_refused_at_resume(
    tmp_path: Path, storage_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_study(tmp_path, "edited", ONE_TRIAL)
    assert main(["run", str(path), "--storage", storage_url]) == 0
    study = optuna.load_study(study_name="edited", storage=storage_url)
    assert study.user_attrs["fingerprint"]["arrays"]["x_train"]["shape"] == [21, 1]
    capsys.readouterr()

    # units log = true -> a plain range: Optuna could not resume it; one line, nothing stored.
    path.write_text(
        ONE_TRIAL.replace(
            "units = { low = 4, high = 32, log = true }", "units = { low = 4, high = 32 }"
        ),
        encoding="utf-8",
    )
    assert main(["run", str(path), "--storage", storage_url, "--trials", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "space.units" in err and "another name" in err and "accepts only narrowed" in err
    assert _trials(storage_url, "edited") == 1

    # Another data source: refused too, --allow-narrowed or not.
    path.write_text(ONE_TRIAL.replace('source = "overfit30"', 'source = "square"'), "utf-8")
    assert main(["run", str(path), "--storage", storage_url, "--allow-narrowed"]) == 2
    assert "data.source" in capsys.readouterr().err
    assert _trials(storage_url, "edited") == 1

    # A narrower range: refused without the flag, resumed with it (the stored space is updated).
    narrow = ONE_TRIAL.replace("low = 4, high = 32, log = true", "low = 4, high = 8, log = true")
    path.write_text(narrow, encoding="utf-8")
    assert main(["run", str(path), "--storage", storage_url, "--trials", "2"]) == 2
    assert "--allow-narrowed" in capsys.readouterr().err
    assert _trials(storage_url, "edited") == 1
    code = main(["run", str(path), "--storage", storage_url, "--trials", "2", "--allow-narrowed"])
    assert code == 0
    study = optuna.load_study(study_name="edited", storage=storage_url)
    assert len(study.trials) == 2
    assert study.user_attrs["spec"]["space"]["units"] == {"low": 4, "high": 8, "log": True}
    assert "high = 8" in study.user_attrs["study_file_text"]
    assert list(study.user_attrs["space_changes"][0]) == ["space.units"]
    assert 4 <= study.trials[1].params["units"] <= 8
    # Now the narrow file is the stored one: it resumes without the flag.
    assert main(["run", str(path), "--storage", storage_url, "--trials", "2"]) == 0


def test_added_choices_rules() -> None:
    old = {"space": {"batch_size": {"choices": [7, 21]}, "activation": {"choices": ["relu"]}}}

    def diff(**space: object) -> list[tuple[str, bool, bool]]:
        new = {"space": {**old["space"], **space}}
        return [(d.key, d.narrowing, d.adds_choices) for d in differences(old, new)]

    assert diff(batch_size={"choices": [7, 14, 21]}) == [("space.batch_size", False, True)]
    assert diff(batch_size={"choices": [21, 7, 42]}) == [("space.batch_size", False, True)]
    assert diff(batch_size={"choices": [7, 14]}) == [("space.batch_size", False, False)]  # 21 gone
    assert diff(batch_size={"choices": [7.0, 21.0, 42.0]})[0][2] is False  # other types
    assert diff(batch_size={"low": 7, "high": 21}) == [("space.batch_size", False, False)]
    assert diff(activation={"choices": ["relu", "tanh"]}) == [("space.activation", False, True)]


def _batch_sizes(url: str) -> list[tuple[int, tuple[int, ...]]]:
    study = optuna.load_study(study_name="widened", storage=url)
    return [
        (t.params["batch_size"], t.distributions["batch_size"].choices)
        for t in study.trials
        if "batch_size" in t.params
    ]


@pytest.mark.slow
def test_an_added_choice_resumes_with_the_flag_and_keeps_every_stored_value(
    tmp_path: Path,
    storage_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    two = ONE_TRIAL.replace("[pruner]", '[sampler]\nname = "random"\n\n[pruner]')
    path = write_study(tmp_path, "widened", two)
    assert main(["run", str(path), "--storage", storage_url, "--trials", "3"]) == 0
    before = _batch_sizes(storage_url)
    assert {choices for _, choices in before} == {(7, 21)} and before
    capsys.readouterr()

    # Before the fix: Optuna's "CategoricalDistribution does not support dynamic value space"
    # failed every new trial; now one line without the flag, nothing stored changed.
    wider = two.replace(
        "batch_size = { choices = [7, 21] }", "batch_size = { choices = [7, 14, 21] }"
    )
    path.write_text(wider, encoding="utf-8")
    assert main(["run", str(path), "--storage", storage_url, "--trials", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "space.batch_size" in err and "--allow-narrowed" in err
    assert _batch_sizes(storage_url) == before

    # A trial still running with the old list: refused, nothing rewritten.
    stray = optuna.load_study(study_name="widened", storage=storage_url).ask()
    code = main(["run", str(path), "--storage", storage_url, "--trials", "5", "--allow-narrowed"])
    assert code == 2
    assert "1 trial(s) are running" in capsys.readouterr().err
    assert _batch_sizes(storage_url) == before
    stray.study.tell(stray, state=optuna.trial.TrialState.FAIL)

    # A crash while the new space is stored (here in its last write, the study's attributes)
    # leaves the old space whole: the lists and the fingerprint are the old ones, and the old
    # file resumes and runs its trials. Before: the lists were rewritten in a transaction of
    # their own, and the old file's trials then failed on Optuna's refusal of the old list.
    def killed(*args: object) -> None:
        raise RuntimeError("killed while the new space was stored")

    with monkeypatch.context() as patch:
        patch.setattr(optuna_compat, "_set_study_user_attr", killed)
        with pytest.raises(RuntimeError, match="killed"):
            main(["run", str(path), "--storage", storage_url, "--trials", "5", "--allow-narrowed"])
    assert _batch_sizes(storage_url) == before
    path.write_text(two, encoding="utf-8")
    assert main(["run", str(path), "--storage", storage_url, "--trials", "4"]) == 0
    before = _batch_sizes(storage_url)
    assert len(before) == 4 and {choices for _, choices in before} == {(7, 21)}
    path.write_text(wider, encoding="utf-8")
    capsys.readouterr()

    # With the flag: every stored trial takes the longer list, its value kept; trials go on.
    code = main(["run", str(path), "--storage", storage_url, "--trials", "6", "--allow-narrowed"])
    assert code == 0, capsys.readouterr().err
    study = optuna.load_study(study_name="widened", storage=storage_url)
    after = _batch_sizes(storage_url)
    assert [value for value, _ in after[: len(before)]] == [value for value, _ in before]
    assert {choices for _, choices in after} == {(7, 14, 21)}
    assert sum(t.state.name == "COMPLETE" or t.state.name == "PRUNED" for t in study.trials) == 6
    assert list(study.user_attrs["space_changes"][-1]) == ["space.batch_size"]
    assert "[7, 14, 21]" in study.user_attrs["study_file_text"]

    # Dropping a choice stays refused, with the flag too.
    path.write_text(wider.replace("[7, 14, 21]", "[14, 21]"), encoding="utf-8")
    code = main(["run", str(path), "--storage", storage_url, "--trials", "7", "--allow-narrowed"])
    assert code == 2
    assert "accepts only narrowed ranges, fixed values and added choices" in capsys.readouterr().err


HYPERMODEL_STUDY = """
description = "a hypermodel whose code is edited between runs"
objective = "memorize"
trials = 4

[data]
source = "overfit30"

[hypermodel]
module = "edited_hypermodel.py"
build = "build_model"

[training]
epochs = 2
seed = 0

[sampler]
name = "random"

[pruner]
name = "none"
"""

HYPERMODEL = """
import keras


def build_model(hp):
    model = keras.Sequential([keras.Input((1,))])
    for i in range(hp.Int("layers", 1, 3)):  # the widths past the first: off the default path
        model.add(keras.layers.Dense(hp.Choice(f"units_{i}", [4, 8]), activation="tanh"))
    model.add(keras.layers.Dense(1))
    model.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-3, 1e-2)), loss="mse")
    return model
"""


@pytest.mark.slow
def test_an_edited_hypermodel_is_refused_at_resume_down_every_stored_path(
    tmp_path: Path, storage_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = tmp_path / "edited_hypermodel.py"
    code.write_text(HYPERMODEL, encoding="utf-8")
    path = write_study(tmp_path, "edited_hm", HYPERMODEL_STUDY)
    assert main(["run", str(path), "--storage", storage_url]) == 0
    study = optuna.load_study(study_name="edited_hm", storage=storage_url)
    assert any("units_1" in t.params for t in study.trials)  # a stored path off the default
    stored = [(t.number, t.state, t.params) for t in study.trials]
    capsys.readouterr()

    # The code adds a width. Before: "study resumed", then every trial FAIL on Optuna's
    # "CategoricalDistribution does not support dynamic value space" (10 in a row, exit 1).
    code.write_text(HYPERMODEL.replace("[4, 8]", "[4, 8, 16]"), encoding="utf-8")
    assert main(["run", str(path), "--storage", storage_url, "--trials", "6"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "hypermodel.units_0" in err and "hypermodel.units_1" in err  # units_1: a replayed path
    assert '{"choices": [4, 8]} -> {"choices": [4, 8, 16]}' in err and "--allow-narrowed" in err
    study = optuna.load_study(study_name="edited_hm", storage=storage_url)
    assert [(t.number, t.state, t.params) for t in study.trials] == stored

    # Added choices resume with the flag, every stored value kept; no trial fails.
    code_ = main(["run", str(path), "--storage", storage_url, "--trials", "6", "--allow-narrowed"])
    assert code_ == 0, capsys.readouterr().err
    study = optuna.load_study(study_name="edited_hm", storage=storage_url)
    assert [t.params for t in study.trials[: len(stored)]] == [p for _, _, p in stored]
    assert [t.state.name for t in study.trials].count("COMPLETE") == 6
    widths = {t.distributions[n].choices for t in study.trials for n in t.params if "units" in n}
    assert widths == {(4, 8, 16)}
    assert set(study.user_attrs["space_changes"][-1]) >= {"hypermodel.units_0"}

    # A changed scale or a dropped choice: refused, with the flag too.
    code.write_text(HYPERMODEL.replace('"lr", 1e-3, 1e-2', '"lr", 1e-3, 1e-2, sampling="log"'))
    assert (
        main(["run", str(path), "--storage", storage_url, "--trials", "7", "--allow-narrowed"]) == 2
    )
    err = capsys.readouterr().err
    assert "hypermodel.lr" in err and "accepts only narrowed ranges" in err
    code.write_text(HYPERMODEL.replace("[4, 8]", "[8, 16]"), encoding="utf-8")
    assert (
        main(["run", str(path), "--storage", storage_url, "--trials", "7", "--allow-narrowed"]) == 2
    )
    assert "hypermodel.units_0" in capsys.readouterr().err
    # A widened range is refused as a widened [space] range is (before: resumed silently); a
    # renamed hyperparameter too (before: resumed, the old name's trials ranked with the new
    # model's); a narrowed range resumes with the flag.
    added = HYPERMODEL.replace("[4, 8]", "[4, 8, 16]")
    for edit, needle in (
        (added.replace("1e-3, 1e-2", "1e-3, 2e-2"), '"high": 0.02'),
        (added.replace('"lr"', '"learning_rate"'), 'hypermodel.lr {"high": 0.01'),
    ):
        code.write_text(edit, encoding="utf-8")
        for flag in ([], ["--allow-narrowed"]):
            assert main(["run", str(path), "--storage", storage_url, "--trials", "7", *flag]) == 2
            err = capsys.readouterr().err
            assert len(err.strip().splitlines()) == 1 and needle in err, err
    code.write_text(added.replace("1e-3, 1e-2", "2e-3, 5e-3"), encoding="utf-8")
    assert main(["run", str(path), "--storage", storage_url, "--trials", "7"]) == 2
    assert "hypermodel.lr" in capsys.readouterr().err
    flag = ["--allow-narrowed"]
    assert main(["run", str(path), "--storage", storage_url, "--trials", "7", *flag]) == 0
    study = optuna.load_study(study_name="edited_hm", storage=storage_url)
    assert [t.params for t in study.trials[: len(stored)]] == [p for _, _, p in stored]
    assert 2e-3 <= study.trials[-1].params["lr"] <= 5e-3


@pytest.mark.parametrize("foreign", ["trials", "direction"])
def test_a_study_of_the_same_name_made_elsewhere_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], foreign: str
) -> None:
    """An Optuna user's own study under the name is neither counted nor taken over."""
    path = write_study(tmp_path, "tiny_memorize", ONE_TRIAL)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    own = optuna.create_study(
        study_name="tiny_memorize",
        storage=url,
        direction="minimize" if foreign == "trials" else "maximize",
    )
    if foreign == "trials":
        own.optimize(lambda t: t.suggest_float("q", 0.0, 1.0), n_trials=2)
    assert main(["run", str(path), "--storage", url]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    needle = "that no capsearch search made" if foreign == "trials" else "direction(s) maximize"
    assert needle in line and "another study name" in line
    after = optuna.load_study(study_name="tiny_memorize", storage=url)
    assert len(after.trials) == (2 if foreign == "trials" else 0) and after.user_attrs == {}
