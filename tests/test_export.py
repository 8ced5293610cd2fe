"""Taking the best home: export to .keras, plain Keras code, and re-running stored trials."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import optuna
import pytest
from optuna.trial import TrialState

from search.cli import main
from search.engine.study import open_study
from search.replay.export import export_stored, keras_code
from search.replay.rerun import DEFAULT_RTOL, rerun_stored
from search.runs import SearchOptions, run_search
from search.spec.studyfile import load_study
from search.storage.opening import open_storage
from search.storage.studies import load_stored_study
from search.training.final_model import evaluate_usable
from search.training.prepared import prepare_data
from tests.conftest import ROOT, write_study

pytestmark = pytest.mark.slow

BUILT_IN = """
description = "tiny Pima study for export tests"
objective = "generalize"
trials = 2

[data]
source = "pima"
validation_fraction = 0.2

[training]
epochs = 3
seed = 5

[space]
layers = { low = 1, high = 2 }
units = { low = 4, high = 16 }
l2 = { low = 1e-4, high = 1e-2, log = true, zero = true }
dropout = { low = 0.0, high = 0.3 }
batch_size = { choices = [32, 64] }
learning_rate = { low = 1e-3, high = 1e-2, log = true }
optimizer = { choices = ["adam", "rmsprop"] }

[pruner]
name = "none"

[[baselines]]
name = "regularized"
layers = 2
units = 12
l2 = 0.001
dropout = 0.2
batch_size = 32
learning_rate = 0.005
optimizer = "adam"
"""

HYPERMODEL = f"""
description = "the example hypermodel, one trial"
objective = "generalize"
trials = 1

[data]
source = "pima"

[hypermodel]
module = "{ROOT / "spaces" / "examples" / "kt_hypermodel.py"}"
build = "PimaHyperModel"

[training]
epochs = 3
seed = 2

[pruner]
name = "none"
"""

HYPERMODEL_TRIAL = {
    "layers": 2,
    "units": 16,
    "dropout": 0.1,
    "learning_rate": 0.005,
    "use_l2": True,
    "l2": 1e-3,
    "batch_size": 32,
}


def _searched(folder: Path, name: str, text: str, enqueue: dict[str, Any] | None = None) -> Any:
    if not (ROOT.parent / "shared" / "data").is_dir():
        pytest.skip("offline data not found")
    url = f"sqlite:///{folder / 'studies.db'}"
    spec = load_study(write_study(folder, name, text))
    if enqueue:
        study, _ = open_study(spec, open_storage(url))
        study.enqueue_trial(enqueue)
    quiet = SearchOptions(storage=url, evaluate_test=False, summary=False)
    run_search(spec, quiet, echo=lambda _: None)
    return spec, url


@pytest.fixture(scope="module")
def built_in(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A finished built-in study: the baseline (L2 and dropout) and one sampled trial."""
    return _searched(tmp_path_factory.mktemp("built_in"), "tiny_export", BUILT_IN)


@pytest.fixture(scope="module")
def hypermodel(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A finished hypermodel study with one trial: conditional L2 on, batch size from fit()."""
    folder = tmp_path_factory.mktemp("hypermodel")
    return _searched(folder, "kt_export", HYPERMODEL, enqueue=HYPERMODEL_TRIAL)


def _check_export(spec: Any, url: str, out: Path, trial: int | None = None) -> dict[str, Any]:
    """Export, then check the file, its JSON, its score and the printed code; return the JSON."""
    lines: list[str] = []
    options = SearchOptions(storage=url)
    result = export_stored(
        spec, options, trial_number=trial, out_dir=out, code=True, echo=lines.append
    )
    assert result.verified, lines
    study = load_stored_study(spec.name, url).study
    stored = study.trials[result.trial] if trial is not None else study.best_trial
    # The file loads in plain Keras and scores, as the search measures, what the trial stored.
    # It takes raw inputs (a Normalization layer holds the training statistics).
    model = keras.models.load_model(result.model_path)
    data = prepare_data(spec, options.data)
    loss, _ = evaluate_usable(model, data, "val")
    assert loss == pytest.approx(stored.user_attrs["val_loss_best"], rel=DEFAULT_RTOL)
    record = json.loads(result.json_path.read_text(encoding="utf-8"))
    assert record["trial"] == stored.number and record["seed"] == stored.user_attrs["seed"]
    assert record["epochs"] == stored.user_attrs["best_epoch"]
    assert record["verification"]["verified"] is True
    assert record["metrics"]["val_loss_best"] == stored.user_attrs["val_loss_best"]
    # The printed code is valid Python that builds a model of the same size.
    code = lines[-1]
    namespace: dict[str, Any] = {}
    exec(compile(code, "trial.py", "exec"), namespace)
    assert namespace["build_model"]().count_params() == model.count_params()
    assert "def train(" in code
    return record


def test_export_of_the_best_built_in_trial(built_in: Any, tmp_path: Path) -> None:
    spec, url = built_in
    record = _check_export(spec, url, tmp_path)
    assert set(record["model_params"]) >= {"layers", "units", "l2", "dropout", "optimizer"}


def test_plain_keras_code_has_every_setting(built_in: Any) -> None:
    spec, url = built_in
    study = load_stored_study(spec.name, url).study
    baseline = study.trials[0]  # layers 2, units 12, L2 0.001, dropout 0.2, batch 32, adam 0.005
    code = keras_code(spec, baseline, prepare_data(spec).dataset)
    for needle in (
        "keras.Input(shape=(8,))",
        'keras.layers.Dense(12, activation="relu", kernel_regularizer=',
        "keras.regularizers.L2(0.001))",
        "keras.layers.Dropout(0.2, seed=5)",
        'keras.layers.Dense(1, activation="sigmoid")',
        "keras.optimizers.Adam(learning_rate=0.005)",
        'loss="binary_crossentropy"',
        "batch_size=32",
        f"epochs={baseline.user_attrs['best_epoch']}",
        "keras.utils.set_random_seed(5)",
    ):
        assert needle in code, needle
    assert code.count("keras.layers.Dense(12") == 2


def test_rerun_reproduces_a_stored_trial(built_in: Any, capsys: pytest.CaptureFixture[str]) -> None:
    spec, url = built_in
    assert main(["rerun", str(spec.path), "1", "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "reproduced" in out and "NOT" not in out


def test_rerun_of_a_trial_that_does_not_reproduce_exits_1(
    built_in: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, url = built_in
    study = load_stored_study(spec.name, url).study
    real = study.trials[0]
    first = real.user_attrs["val_curve"][0] * 0.9  # as if another library had stored it
    forged = optuna.trial.create_trial(
        params=real.params,
        distributions=real.distributions,
        value=first,
        user_attrs={**real.user_attrs, "val_curve": [first], "epochs_run": 1, "best_epoch": 1},
    )
    study.add_trial(forged)
    number = len(study.trials) - 1
    assert main(["rerun", str(spec.path), str(number), "--storage", url]) == 1
    assert "NOT reproduced" in capsys.readouterr().out


def test_export_and_rerun_of_a_hypermodel_trial(hypermodel: Any, tmp_path: Path) -> None:
    spec, url = hypermodel
    study = load_stored_study(spec.name, url).study
    assert study.best_trial.state == TrialState.COMPLETE
    record = _check_export(spec, url, tmp_path, trial=0)
    assert record["model_params"] == HYPERMODEL_TRIAL  # rebuilt through the hypermodel
    assert record["hypermodel"]["build"] == "PimaHyperModel"
    lines: list[str] = []
    result = rerun_stored(spec, SearchOptions(storage=url), 0, echo=lines.append)
    assert result.reproduced and result.curve_max_rel_diff <= DEFAULT_RTOL, lines


def test_export_errors_are_one_line(built_in: Any, capsys: pytest.CaptureFixture[str]) -> None:
    spec, url = built_in
    assert main(["export", str(spec.path), "--trial", "99", "--storage", url]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no trial 99" in err and "\n" not in err


WIDENED = (
    BUILT_IN.replace(
        'optimizer = { choices = ["adam", "rmsprop"] }',
        'optimizer = { choices = ["adam", "sgd"] }\n'
        'shape = { choices = ["funnel", "free"] }\n'
        "l1 = { low = 1e-5, high = 1e-3, log = true, zero = true }\n"
        "batch_norm = { choices = [true, false] }\n"
        'schedule = { choices = ["cosine", "exponential"] }\n'
        "weight_decay = { low = 1e-4, high = 1e-2, log = true, zero = true }\n"
        "momentum = 0.9",
    )
    .replace("units = 12\n", "units = [12, 6]\nl1 = 0.0001\nbatch_norm = true\n", 1)
    .replace(
        'optimizer = "adam"\n', 'optimizer = "sgd"\nschedule = "cosine"\nweight_decay = 0.001\n'
    )
)


@pytest.fixture(scope="module")
def widened(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A finished study of the widened family: widths per layer, BN, L1, schedules, decay."""
    return _searched(tmp_path_factory.mktemp("widened"), "tiny_widened", WIDENED)


def test_export_rerun_and_code_of_the_widened_family(
    widened: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, url = widened
    _check_export(spec, url, tmp_path / "out", trial=0)
    study = load_stored_study(spec.name, url).study
    code = keras_code(spec, study.trials[0], prepare_data(spec).dataset)
    for needle in (
        'keras.layers.Dense(12, activation="relu", kernel_regularizer=',
        "keras.regularizers.L1L2(l1=0.0001, l2=0.001)",
        "keras.layers.Dense(6, activation=",
        "keras.layers.BatchNormalization()",
        "keras.optimizers.SGD(learning_rate=keras.optimizers.schedules.CosineDecay(0.005,",
        "weight_decay=0.001, momentum=0.9)",
    ):
        assert needle in code, needle
    for number in (0, 1):
        assert main(["rerun", str(spec.path), str(number), "--storage", url]) == 0
    assert "NOT" not in capsys.readouterr().out


@pytest.mark.slow
def test_a_cosine_trial_retrained_for_fewer_epochs_decays_as_it_did_in_the_search(
    tmp_path: Path, shared_data: Path
) -> None:
    """Re-trained for its best epochs (the test score, export, the best model), a trial's
    cosine decay spans its epoch cap as in the search. Before, it spanned the shorter run: a
    trial of val_loss 0.054 re-trained to 0.31, and exports said "DIFFERS" (13 % to 94 %)."""
    from search.engine.retrain import retrain_trial
    from search.engine.stored import model_params

    text = (
        BUILT_IN.replace("epochs = 3", "epochs = 8")
        .replace(
            'optimizer = { choices = ["adam", "rmsprop"] }',
            'optimizer = "adam"\nschedule = "cosine"',
        )
        .replace("trials = 2", "trials = 1")
    )
    spec = load_study(write_study(tmp_path, "cosine", text))
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    run_search(spec, SearchOptions(storage=url, trial_plots=False), echo=lambda _: None)
    (trial,) = optuna.load_study(study_name="cosine", storage=url).get_trials()
    assert model_params(spec, trial)["schedule"] == "cosine"
    assert trial.user_attrs["epochs_run"] == 8
    data = prepare_data(spec)
    run = retrain_trial(spec, data, trial, epochs=3)  # three of its eight epochs
    third = trial.user_attrs["val_curve"][2]
    assert run.history.records[-1].val_loss == pytest.approx(third, rel=1e-4)


@pytest.mark.slow
def test_the_export_record_says_which_output_is_which_label(tmp_path: Path) -> None:
    """Text labels are encoded in sorted order; the record keeps that order (before: lost)."""
    rows = "\n".join(f"{i % 5},{(i * 7) % 3},{['dog', 'cat'][i % 2]}" for i in range(60))
    (tmp_path / "pets.csv").write_text(f"a,b,kind\n{rows}\n", encoding="utf-8")
    text = (
        'objective = "generalize"\ntrials = 1\n[data]\nsource = "file"\npath = "pets.csv"\n'
        'target = "kind"\ntask = "binary"\n[training]\nepochs = 1\n[space]\nlayers = 1\n'
        "units = 4\nl2 = 0.0\ndropout = 0.0\nbatch_size = 8\nlearning_rate = 0.01\n"
        '[pruner]\nname = "none"\n'
    )
    path = write_study(tmp_path, "pets", text)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    run_search(load_study(path), SearchOptions(storage=url, trial_plots=False), echo=lambda _: None)
    out = tmp_path / "out"
    assert main(["export", str(path), "--storage", url, "--out", str(out)]) == 0
    (record_path,) = out.glob("*.json")
    assert json.loads(record_path.read_text())["classes"] == ["cat", "dog"]
