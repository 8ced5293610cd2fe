"""A regression target in large units: the verdict names it, ``standardize_target`` fixes it.

The data: house prices in dollars (mean ~2e5, std ~9e4) from three features. Networks start with
outputs near 0, so without the option no trial gets near the target; with it every loss is in
units of the target's spread and the exported model still predicts dollars.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import optuna
import pytest

from search.cli import main
from search.runs import SearchOptions, run_search
from search.spec.studyfile import load_study
from tests.conftest import write_study

STUDY = """
description = "house prices in dollars"
objective = "generalize"
trials = 4

[data]
source = "file"
path = "house.csv"
target = "price"
task = "regression"
test_fraction = 0.2
{extra}

[training]
epochs = 25
seed = 0

[space]
layers = 2
units = {{ low = 16, high = 32 }}
l2 = 0.0
dropout = 0.0
batch_size = 32
learning_rate = {{ low = 3e-3, high = 1e-2, log = true }}

[pruner]
name = "none"

[verdict]
seeds = 2
top_k = 1
fractions = [1.0]
"""


def write_house(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 3))
    y = 2e5 + 5e4 * (x[:, 0] - x[:, 1] ** 2) + 1e3 * rng.normal(size=500)
    np.savetxt(folder / "house.csv", np.c_[x, y], delimiter=",", header="a,b,c,price", comments="")
    return x, y


def house_study(folder: Path, name: str, *, standardized: bool) -> tuple[Path, str]:
    write_house(folder)
    extra = "standardize_target = true" if standardized else ""
    path = write_study(folder, name, STUDY.format(extra=extra))
    url = f"sqlite:///{folder / 'studies.db'}"
    run_search(load_study(path), SearchOptions(storage=url, trial_plots=False), echo=lambda _: None)
    return path, url


@pytest.mark.slow
def test_the_verdict_says_no_trial_fits_and_names_a_target_in_large_units(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from search.verdict import give_verdict
    from search.verdict.sentences import sentences

    path, url = house_study(tmp_path, "house_raw", standardized=False)
    verdict = give_verdict(load_study(path), SearchOptions(storage=url), echo=lambda _: None)
    fit = verdict["family_fit"]
    assert not fit["fits"] and fit["large_target"]
    assert fit["share"] == pytest.approx(
        verdict["family_best_train_loss"] / verdict["constant_predictor"]["train_loss"]
    )
    assert fit["target"]["mean"] > 1e5 and fit["target"]["std"] > 5e4
    said = "\n".join(sentences(verdict))
    assert "No trial fits the training set much better than a constant" in said
    assert "set [data] standardize_target = true" in said

    # Turned on in the stored study's file, it is another study: refused, nothing stored.
    edited = write_study(tmp_path, "house_raw", STUDY.format(extra="standardize_target = true"))
    before = len(optuna.load_study(study_name="house_raw", storage=url).trials)
    assert main(["run", str(edited), "--storage", url]) == 2
    assert "data.standardize_target false -> true" in capsys.readouterr().err
    assert len(optuna.load_study(study_name="house_raw", storage=url).trials) == before


@pytest.mark.slow
def test_a_standardized_target_fits_and_its_exported_model_predicts_raw_values(
    tmp_path: Path,
) -> None:
    from search.verdict import give_verdict

    path, url = house_study(tmp_path, "house", standardized=True)
    study = optuna.load_study(study_name="house", storage=url)
    assert study.best_value < 0.2  # in units of the target's variance: the spread is learned
    verdict = give_verdict(load_study(path), SearchOptions(storage=url), echo=lambda _: None)
    assert verdict["family_fit"]["fits"] and not verdict["family_fit"]["large_target"]

    out = tmp_path / "export"
    assert main(["export", str(path), "--storage", url, "--out", str(out)]) == 0
    (record_path,) = out.glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["verification"]["relative_difference"] < 1e-4  # scored as the search scored
    model = keras.models.load_model(next(out.glob("*.keras")))
    assert model.layers[-1].name == "unstandardize_target"
    # The model takes raw features and predicts dollars: its error in dollars, divided by the
    # training std squared, is the standardized loss the search stored.
    x, y = write_house(tmp_path)
    pred = model.predict(x.astype(np.float32), verbose=0).ravel()
    assert abs(pred.mean() - y.mean()) < 0.2 * y.std()
    assert np.mean((pred - y) ** 2) / y.var() < 0.3


def test_standardize_target_is_refused_for_class_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_house(tmp_path)
    text = STUDY.format(extra="standardize_target = true").replace(
        'task = "regression"', 'task = "binary"'
    )
    path = write_study(tmp_path, "house_binary", text)
    assert main(["validate", str(path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "standardize_target = true is for regression" in line and 'task = "regression"' in line


def test_the_python_api_refuses_it_for_labels_before_storing_anything(tmp_path: Path) -> None:
    import search

    url = f"sqlite:///{tmp_path / 'api.db'}"
    x = np.random.default_rng(0).normal(size=(60, 2))
    with pytest.raises(search.InputError, match="standardize_target=True is for regression"):
        search.search(
            x, (x[:, 0] > 0).astype(int), validation_split=0.2, standardize_target=True, storage=url
        )
    assert not (tmp_path / "api.db").exists() or not optuna.get_all_study_summaries(url)
