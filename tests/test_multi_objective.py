"""``[multi_objective] param_count = true``: loss and model size, a Pareto front, no pruning."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.errors import StudyFileError
from search.spec.studyfile import load_study, spec_from_dict
from search.views.report import write_report
from search.views.show import show_study
from tests.conftest import write_study
from tests.tiny_studies import TINY_PARETO, TINY_SINE, TinyRun, tiny_run


def test_study_file_round_trips_with_two_objectives(tmp_path: Path) -> None:
    spec = load_study(write_study(tmp_path, "pareto", TINY_PARETO))
    assert spec.multi_objective and spec.directions == ["minimize", "minimize"]
    assert spec.metric_names == ["val_loss", "param_count"]
    assert spec.pruner.name == "none"  # Optuna cannot prune multi-objective trials
    assert spec_from_dict(spec.to_dict(), name=spec.name, path=spec.path) == spec
    single = load_study(write_study(tmp_path, "single", TINY_SINE))
    assert not single.multi_objective and single.directions == ["minimize"]
    assert "multi_objective" not in single.to_dict()


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("[multi_objective]\nparam_count = 1\n", "multi_objective.param_count"),
        ("[multi_objective]\nflops = true\n", "multi_objective.flops"),
    ],
)
def test_bad_multi_objective_tables_are_named(tmp_path: Path, extra: str, key: str) -> None:
    text = TINY_SINE.replace('[pruner]\nname = "none"\n', extra)
    with pytest.raises(StudyFileError, match=f": {key}: "):
        load_study(write_study(tmp_path, "bad", text))


def test_a_pruner_with_two_objectives_is_refused(tmp_path: Path) -> None:
    text = TINY_PARETO + '\n[pruner]\nname = "median"\n'
    with pytest.raises(StudyFileError, match="pruner.name: Optuna cannot prune"):
        load_study(write_study(tmp_path, "bad", text))


def test_the_shipped_pareto_study_is_imdb_generalize_with_size() -> None:
    pareto, single = load_study("imdb_pareto"), load_study("imdb_generalize")
    assert pareto.multi_objective and pareto.trials == 30
    assert (pareto.data, pareto.space, pareto.baselines) == (
        single.data,
        single.space,
        single.baselines,
    )


@pytest.fixture(scope="module")
def pareto(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    return tiny_run("tiny_pareto", tmp_path_factory)


@pytest.mark.slow
def test_two_objective_study_reports_its_pareto_front(pareto: TinyRun, tmp_path: Path) -> None:
    study = optuna.load_study(study_name=pareto.name, storage=pareto.storage_url)
    assert len(study.directions) == 2 and study.metric_names == ["val_loss", "param_count"]
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 3
    for trial in complete:
        assert trial.values[1] == trial.user_attrs["param_count"]
        assert trial.values[0] == pytest.approx(trial.user_attrs["val_loss_best"])
        assert not trial.intermediate_values  # no report(), no pruning
    text = "\n".join(pareto.lines)
    assert "param_count=" in text  # in each trial line
    assert "Pareto front (val_loss, param_count), smallest model first:" in text
    front = [t.number for t in sorted(study.best_trials, key=lambda t: t.values[1])]
    start = pareto.lines.index("Pareto front (val_loss, param_count), smallest model first:")
    listed = [int(line.split()[0]) for line in pareto.lines[start + 2 : start + 2 + len(front)]]
    assert listed == front
    assert "smallest model within 5 % of the best loss" in text
    assert "best versus 1 baseline " in text and "test (" not in text  # no test split here
    shown = show_study(pareto.name, pareto.storage_url)  # `capsearch show` on two objectives
    assert any(line.startswith("Pareto front") for line in shown)
    result = write_report(pareto.name, pareto.storage_url, tmp_path / "report", png="matplotlib")
    html = result.html.read_text(encoding="utf-8")
    assert "pareto" in result.keys and '<section id="pareto">' in html
    assert "Pareto front: val_loss against param_count" in html
    assert (result.folder / "pareto.png").is_file()
