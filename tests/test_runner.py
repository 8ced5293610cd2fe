"""Real short searches: real Optuna on a temporary SQLite file, real TensorFlow training."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.engine.study import open_study
from search.runs import SearchOptions, run_search
from search.spec.studyfile import load_study
from search.storage.opening import open_storage
from tests.conftest import TINY_MEMORIZE, write_study

pytestmark = pytest.mark.slow

TRIAL_ATTRIBUTES = {
    "train_loss_final",
    "train_loss_best",
    "val_loss_final",
    "val_loss_best",
    "gap",
    "param_count",
    "epochs_run",
    "wall_seconds",
    "train_curve",
    "val_curve",
    "seed",
}

TINY_GENERALIZE = """
description = "tiny generalize study on the Pima data"
objective = "generalize"
trials = 3

[data]
source = "pima"
validation_fraction = 0.2
test_fraction = 0.2

[training]
epochs = 5
seed = 0

[space]
layers = { low = 1, high = 2 }
units = { low = 4, high = 16 }
l2 = { low = 1e-5, high = 1e-3, log = true, zero = true }
dropout = { low = 0.0, high = 0.5 }
batch_size = { choices = [32, 64] }
learning_rate = { low = 1e-3, high = 1e-2, log = true }

[pruner]
name = "none"

[[baselines]]
name = "plain"
layers = 2
units = 8
l2 = 0.0
dropout = 0.0
batch_size = 32
learning_rate = 0.003
"""


def test_memorize_run_records_every_attribute(tmp_path: Path, storage_url: str) -> None:
    spec = load_study(write_study(tmp_path, "tiny_memorize", TINY_MEMORIZE))
    lines: list[str] = []
    study = run_search(spec, SearchOptions(storage=storage_url), echo=lines.append)

    trials = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(trials) == spec.trials == 4
    first = study.trials[0]
    assert first.user_attrs["baseline"] == "small"
    assert first.params["units"] == 8 and first.params["use_l2"] is False
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        assert set(trial.user_attrs) >= TRIAL_ATTRIBUTES, set(trial.user_attrs)
        assert len(trial.user_attrs["train_curve"]) == trial.user_attrs["epochs_run"]
        assert trial.value == pytest.approx(trial.user_attrs["train_loss_best"])
        gap = trial.user_attrs["val_loss_final"] - trial.user_attrs["train_loss_final"]
        assert trial.user_attrs["gap"] == pytest.approx(gap)
        steps = trial.intermediate_values  # per-epoch reports reached Optuna, from step 0
        assert sorted(steps) == list(range(trial.user_attrs["epochs_run"]))
        # The dashboard's best step is the stored one, one below the epoch counted from 1.
        best_step = min(steps, key=steps.__getitem__)
        assert trial.user_attrs["best_step"] == best_step == trial.user_attrs["best_epoch"] - 1
        fit = trial.user_attrs["predictions"]  # one-input regression keeps its fit for plots
        assert len(fit["x_train"]) == len(fit["pred_train"]) == 21
        assert len(fit["x_val"]) == 9
    assert study.user_attrs["objective"] == "memorize"
    assert set(study.user_attrs["versions"]) >= {"tensorflow", "keras", "optuna", "numpy"}
    assert study.user_attrs["study_file"].endswith("tiny_memorize.toml")
    assert "overfit30" in study.user_attrs["study_file_text"]
    # One line per finished trial and the summary with the baseline table.
    assert sum(line.startswith("trial ") for line in lines) == 4
    assert any("baseline small" in line for line in lines)
    assert any(line.startswith("best trial") for line in lines)


def test_generalize_run_scores_the_best_trial_on_test_once(
    tmp_path: Path, storage_url: str, shared_data: Path
) -> None:
    spec = load_study(write_study(tmp_path, "tiny_pima", TINY_GENERALIZE))
    lines: list[str] = []
    study = run_search(spec, SearchOptions(storage=storage_url), echo=lines.append)
    best = study.best_trial
    assert best.value == pytest.approx(best.user_attrs["val_loss_best"])
    assert 0.5 <= best.user_attrs["val_accuracy_at_best"] <= 1.0
    test = study.user_attrs["test_evaluation"]
    assert test["trial"] == best.number
    assert test["n_test"] == 154
    assert 0.5 <= test["test_accuracy"] <= 1.0
    # Re-training with the stored seed reproduces the trial's best validation loss.
    assert test["val_loss_retrained"] == pytest.approx(best.value, rel=1e-3)
    assert any(line.startswith("test (154 held-out rows") for line in lines)
    # The floor beside the best: the majority class (65 % of Pima's rows are negative).
    floor = study.user_attrs["constant_prediction"]
    assert 0.6 < floor["val_accuracy"] < 0.7 and floor["val_loss"] > best.value
    line = "  a constant prediction (the majority class) scores validation loss"
    assert any(text.startswith(line) for text in lines)


def test_resumed_study_continues_its_trial_count(tmp_path: Path, storage_url: str) -> None:
    spec = load_study(write_study(tmp_path, "tiny_memorize", TINY_MEMORIZE))
    quiet = SearchOptions(storage=storage_url, trials=2)
    run_search(spec, quiet, echo=lambda _: None)
    lines: list[str] = []
    study = run_search(spec, SearchOptions(storage=storage_url, trials=3), echo=lines.append)
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert "2 finished trials, target 3" in lines[0] and "resumed" in lines[0]
    # The baseline was enqueued once, when the study was created.
    assert sum("baseline" in t.user_attrs for t in study.trials) == 1
    again: list[str] = []
    run_search(spec, SearchOptions(storage=storage_url, trials=3), echo=again.append)
    assert any("target reached" in line for line in again)
    assert len(optuna.load_study(study_name=spec.name, storage=storage_url).trials) == 3


def test_pruning_stops_a_clearly_worse_trial(tmp_path: Path, storage_url: str) -> None:
    text = (
        TINY_MEMORIZE.replace("trials = 4", "trials = 2")
        .replace(
            "learning_rate = { low = 1e-3, high = 1e-2, log = true }",
            "learning_rate = { low = 1e-7, high = 1e-2, log = true }",
        )
        .replace('name = "median"\nn_startup_trials = 2', 'name = "median"\nn_startup_trials = 1')
    )
    text = text[: text.index("[[baselines]]")]
    spec = load_study(write_study(tmp_path, "prune_me", text))
    study, _ = open_study(spec, open_storage(storage_url))
    good = {
        "layers": 2,
        "units": 32,
        "use_l2": False,
        "dropout": 0.0,
        "batch_size": 21,
        "learning_rate": 1e-2,
    }
    study.enqueue_trial(good)
    study.enqueue_trial(good | {"learning_rate": 1e-7})  # cannot learn in 120 steps
    study = run_search(spec, SearchOptions(storage=storage_url), echo=lambda _: None)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.PRUNED]
    pruned = study.trials[1]
    assert pruned.user_attrs["epochs_run"] < 6
    assert pruned.user_attrs["train_curve"]  # a pruned trial keeps its curve
