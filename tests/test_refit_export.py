"""``refit = "train+validation"`` in ``capsearch export``: the exported model learns from both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import pytest

from search.cli import main
from search.replay.export import export_stored
from search.runs import SearchOptions, run_search
from search.spec.studyfile import load_study
from search.storage.studies import load_stored_study
from search.training.final_model import evaluate_usable
from search.training.prepared import prepare_data
from tests.conftest import write_study
from tests.tiny_studies import TINY_PIMA

PIMA = TINY_PIMA


def _searched(folder: Path, name: str, text: str) -> tuple[Any, str]:
    folder.mkdir(parents=True, exist_ok=True)
    spec = load_study(write_study(folder, name, text))
    url = f"sqlite:///{folder / 'studies.db'}"
    run_search(spec, SearchOptions(storage=url, trial_plots=False), echo=lambda _: None)
    return spec, url


@pytest.mark.slow
def test_export_refits_on_training_and_validation_rows(tmp_path: Path, shared_data: Path) -> None:
    spec, url = _searched(tmp_path / "refit", "refit_export", PIMA)
    study = load_stored_study(spec.name, url).study
    best = study.best_trial
    stored_test = study.user_attrs["test_evaluation"]
    assert stored_test["refit"] == "train+validation" and stored_test["trial"] == best.number
    lines: list[str] = []
    result = export_stored(spec, SearchOptions(storage=url), out_dir=tmp_path, echo=lines.append)
    assert result.refit == "train+validation" and result.n_train == 614  # 460 train + 154 val
    assert 'training + validation rows (614), refit = "train+validation"' in lines[0]
    # The validation rows were learned from: the check is the stored test evaluation.
    assert result.split == "test" and result.verified, lines
    assert result.stored == pytest.approx(stored_test["test_loss"])
    assert "matches the stored test evaluation" in lines[-1]
    record = json.loads(result.json_path.read_text(encoding="utf-8"))
    assert record["refit"] == "train+validation" and record["n_train"] == 614
    assert record["verification"]["split"] == "test"
    # The written file really is the refit model: its test loss is the stored test score,
    # and its validation loss is not the trial's (it trained on those rows).
    model = keras.models.load_model(result.model_path)
    data = prepare_data(spec, SearchOptions(storage=url).data)
    test_loss, _ = evaluate_usable(model, data, "test")
    assert test_loss == pytest.approx(stored_test["test_loss"], rel=1e-4)
    val_loss, _ = evaluate_usable(model, data, "val")
    assert val_loss != pytest.approx(best.user_attrs["val_loss_best"], rel=1e-3)


@pytest.mark.slow
def test_export_default_stays_on_training_rows(tmp_path: Path, shared_data: Path) -> None:
    text = PIMA.replace('refit = "train+validation"\n', "")
    spec, url = _searched(tmp_path / "plain", "plain_export", text)
    lines: list[str] = []
    result = export_stored(spec, SearchOptions(storage=url), out_dir=tmp_path, echo=lines.append)
    assert result.refit == "train" and result.n_train == 460
    assert lines[0].endswith("on training rows (460)")
    assert result.split == "val" and result.verified, lines  # the trial's own stored value
    assert "matches the stored value" in lines[-1]
    record = json.loads(result.json_path.read_text(encoding="utf-8"))
    assert record["refit"] == "train" and record["n_train"] == 460


@pytest.mark.slow
def test_refit_export_without_a_stored_test_score_has_nothing_to_compare(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "no_test"
    folder.mkdir()
    spec = load_study(write_study(folder, "refit_no_test", PIMA))
    url = f"sqlite:///{folder / 'studies.db'}"
    quiet = SearchOptions(storage=url, trial_plots=False, evaluate_test=False)
    run_search(spec, quiet, echo=lambda _: None)
    out = tmp_path / "out"
    assert main(["export", str(spec.path), "--storage", url, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'training + validation rows (614), refit = "train+validation"' in printed
    assert "no stored test evaluation of this trial with these rows to compare with" in printed
