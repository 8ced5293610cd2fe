"""k-fold cross-validation (``[training] folds``) and the refit on training + validation rows."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import optuna
import pytest

from search.errors import StudyFileError
from search.runs import SearchOptions, run_search
from search.spec.studyfile import load_study
from tests.conftest import write_study
from tests.tiny_studies import TINY_PIMA_FOLDS

PIMA = TINY_PIMA_FOLDS


def test_folds_are_stratified_and_cover_every_row() -> None:
    from search.data import Dataset
    from search.training.prepared import fold_assignment, fold_datasets

    y = np.array([0] * 30 + [1] * 12, dtype=np.float32).reshape(-1, 1)
    fold = fold_assignment(y, 3, stratified=True)
    for i in range(3):  # each fold holds a third of each class
        assert sorted(np.bincount(y[fold == i, 0].astype(int))) == [4, 10]
    x = np.arange(42, dtype=np.float32).reshape(-1, 1)
    dataset = Dataset("d", "binary", x[:30], y[:30], x[30:36], y[30:36], x[36:], y[36:])
    folds = fold_datasets(dataset, 3)
    validated = np.concatenate([f.x_val for f in folds]).ravel()
    assert sorted(validated.tolist()) == list(range(36))  # train + validation rows, once each
    for f in folds:
        assert not set(f.x_val.ravel()) & set(f.x_train.ravel())
        assert f.x_test is dataset.x_test  # the test split is untouched


@pytest.mark.parametrize(
    ("line", "needle"),
    [("folds = 1", "training.folds"), ('refit = "all"', "training.refit")],
)
def test_bad_folds_and_refit_are_named(tmp_path: Path, line: str, needle: str) -> None:
    text = (
        PIMA.replace("folds = 3", line)
        if "folds" in line
        else PIMA.replace('refit = "train+validation"', line)
    )
    with pytest.raises(StudyFileError, match=needle):
        load_study(write_study(tmp_path, "bad", text))


@pytest.mark.slow
def test_a_trial_value_is_the_mean_over_folds(tmp_path: Path, shared_data: Path) -> None:
    spec = load_study(write_study(tmp_path, "folds", PIMA))
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = run_search(spec, SearchOptions(storage=url, trial_plots=False), echo=lambda _: None)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert trials
    for trial in trials:
        folds = trial.user_attrs["fold_values"]
        assert len(folds) == 3 and len(set(folds)) == 3
        assert trial.values[0] == pytest.approx(statistics.fmean(folds))
        assert sorted(trial.intermediate_values) == [0, 1, 2]  # the running mean, fold by fold
        assert "best_step" not in trial.user_attrs  # its steps are folds, not epochs
    test = study.user_attrs["test_evaluation"]
    assert test["refit"] == "train+validation"
    assert test["n_train"] == 614  # 768 rows less the 154 test rows: train + validation

    # rerun re-trains the fold its curve is from (before: one split against the fold mean,
    # "NOT reproduced" every time).
    from search.replay.rerun import rerun_stored

    lines: list[str] = []
    result = rerun_stored(spec, SearchOptions(storage=url), trials[0].number, echo=lines.append)
    assert result.reproduced and result.stored == trials[0].user_attrs["fold_values"][0]
    assert any("val_loss of fold 1" in line for line in lines)


@pytest.mark.parametrize(
    ("pruner", "needle"),
    [
        ('name = "wilcoxon"\np_threshold = 1.5', "pruner.p_threshold"),
        ('name = "wilcoxon"\nn_startup_trials = 1', "pruner.n_startup_trials"),
    ],
)
def test_bad_wilcoxon_options_are_named(tmp_path: Path, pruner: str, needle: str) -> None:
    text = PIMA.replace('name = "median"\nn_startup_trials = 1', pruner)
    with pytest.raises(StudyFileError, match=needle):
        load_study(write_study(tmp_path, "bad", text))


def test_wilcoxon_needs_folds(tmp_path: Path) -> None:
    text = PIMA.replace("folds = 3\n", "").replace(
        'name = "median"\nn_startup_trials = 1', 'name = "wilcoxon"'
    )
    with pytest.raises(StudyFileError, match=r"pruner\.name.*folds") as error:
        load_study(write_study(tmp_path, "no_folds", text))
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_wilcoxon_prunes_on_per_fold_values(tmp_path: Path, shared_data: Path) -> None:
    from search.engine.study import make_pruner

    text = PIMA.replace(
        'name = "median"\nn_startup_trials = 1', 'name = "wilcoxon"\nn_startup_steps = 1'
    ).replace("trials = 2", "trials = 3")
    spec = load_study(write_study(tmp_path, "wilcoxon", text))
    assert isinstance(make_pruner(spec), optuna.pruners.WilcoxonPruner)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    quiet = SearchOptions(storage=url, trial_plots=False, evaluate_test=False)
    study = run_search(spec, quiet, echo=lambda _: None)
    assert isinstance(study.pruner, optuna.pruners.WilcoxonPruner)
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert finished
    for trial in finished:  # each fold's own value at step = fold, not the running mean
        folds = trial.user_attrs["fold_values"]
        assert [trial.intermediate_values[i] for i in range(3)] == pytest.approx(folds)
    for trial in study.get_trials(states=(optuna.trial.TrialState.PRUNED,)):
        assert len(trial.intermediate_values) < 3  # never pruned after its last fold
