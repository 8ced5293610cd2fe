"""``capsearch kt`` on a plain study: its ``[space]`` as a KerasTuner hypermodel.

The hypermodel declares the names and ranges Optuna samples, builds the model ``capsearch run``
builds (same layers, same initial weights), and a real ``capsearch kt`` run on Pima compares.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import keras_tuner
import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution

from search.cli import main
from search.data import Dataset
from search.kerastuner import SpaceHyperModel, declare_space, fixed_hyperparameters, mirror_of
from search.kerastuner.space_hypermodel import used_values
from search.spec.family import count_parameters
from search.spec.studyfile import StudySpec, load_study
from search.training.model import build_model
from search.training.prepared import PreparedData
from tests.conftest import ROOT, write_study

N_FEATURES = 8

LEVERS = """
description = "many levers of the Dense family"
objective = "generalize"
trials = 2

[data]
source = "pima"
validation_fraction = 0.2

[training]
epochs = 3

[space]
layers = { low = 1, high = 3 }
units = { low = 4, high = 64, log = true }
shape = { choices = ["constant", "funnel", "free"] }
l2 = { low = 1e-6, high = 1e-2, log = true, zero = true }
l1 = { low = 1e-7, high = 1e-3, log = true, zero = true }
dropout = { low = 0.0, high = 0.5 }
batch_norm = { choices = [false, true] }
batch_norm_every = { low = 1, high = 2 }
batch_norm_position = { choices = ["after", "before"] }
batch_size = { choices = [16, 64] }
learning_rate = { low = 1e-4, high = 1e-2, log = true }
optimizer = { choices = ["adam", "sgd"] }
momentum = { choices = [0, 0.9] }
nesterov = true
schedule = "cosine"
weight_decay = { low = 1e-5, high = 1e-1, log = true, zero = true }
shuffle = { choices = [true, false] }
"""

# Values that switch every conditional part on: three free widths, each zero flag on.
ALL_ON = {"shape": "free", "layers": 3, "use_l2": True, "use_l1": True, "use_weight_decay": True}


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> StudySpec:
    return load_study(write_study(tmp_path_factory.mktemp("levers"), "levers", LEVERS))


@pytest.fixture(scope="module")
def data() -> PreparedData:
    """Pima-shaped binary data (the model only needs its width, task and row count)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, N_FEATURES)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")
    return PreparedData(Dataset("pima-like", "binary", x[:48], y[:48], x[48:], y[48:]))


def _optuna_trial(spec: StudySpec, values: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """An Optuna trial of the study taking ``values`` (the rest sampled): its model parameters
    as ``capsearch run`` trains them, and the trial."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    study.enqueue_trial(values)
    trial = study.ask()
    return spec.suggest(trial), trial


def _same(distribution: Any, mirror: Any) -> bool:
    # Optuna's zero flags are [True, False], KerasTuner's Boolean [False, True]: the same choice.
    if isinstance(distribution, CategoricalDistribution):
        return isinstance(mirror, CategoricalDistribution) and set(distribution.choices) == set(
            mirror.choices
        )
    return bool(distribution == mirror)


SGD_ON = {"optimizer": "sgd", "momentum": 0.9, "batch_norm": True}
SPACE_CASES = {
    "all_on": ALL_ON | SGD_ON,
    "free_2_sgd_no_momentum": {"shape": "free", "layers": 2, "optimizer": "sgd", "momentum": 0},
    "constant_adam": {"shape": "constant", "layers": 1, "optimizer": "adam", "batch_norm": False},
}


@pytest.mark.parametrize("values", SPACE_CASES.values(), ids=SPACE_CASES.keys())
def test_the_hp_space_is_the_study_space(spec: StudySpec, values: dict[str, Any]) -> None:
    params, trial = _optuna_trial(spec, values)
    hp = fixed_hyperparameters(trial.params)  # KerasTuner's oracle chose what Optuna did
    assert declare_space(spec.space, hp) == params  # the same model parameters
    active = {h.name: h for h in hp.space if hp.is_active(h)}
    searched = {n: h for n, h in active.items() if mirror_of(h) is not None}
    assert set(searched) == set(trial.distributions)  # the same names, the same conditions
    for name, distribution in trial.distributions.items():
        assert _same(distribution, mirror_of(searched[name]).distribution), name  # type: ignore[union-attr]
    fixed = {n: hp.values[n] for n in set(active) - set(searched)}
    assert fixed == {"activation": "relu", "schedule": "cosine"} | (
        {"nesterov": True} if params["momentum"] else {}  # nesterov applies with momentum only
    )


def test_ranges_log_scales_and_scopes(spec: StudySpec) -> None:
    hp = keras_tuner.HyperParameters()
    declare_space(spec.space, hp)
    declared = {h.name: h for h in hp.space}
    units, lr, momentum = declared["units"], declared["learning_rate"], declared["momentum"]
    assert (units.min_value, units.max_value, units.sampling) == (4, 64, "log")
    assert (lr.min_value, lr.max_value, lr.sampling) == (1e-4, 1e-2, "log")
    dropout = declared["dropout"]
    assert (dropout.min_value, dropout.max_value, dropout.sampling) == (0.0, 0.5, "linear")
    assert list(momentum.values) == [0.0, 0.9]  # the TOML's 0 as a float: one type per Choice
    assert type(declared["batch_norm"]).__name__ == "Boolean"
    assert type(declared["use_l2"]).__name__ == "Boolean"

    def parents(name: str) -> list[tuple[str, list[Any]]]:
        return [(c.name, list(c.values)) for c in declared[name].conditions]

    assert parents("l2") == [("use_l2", [True])]
    assert parents("momentum") == [("optimizer", ["sgd"])]
    assert parents("nesterov") == [("optimizer", ["sgd"]), ("momentum", [0.9])]
    assert parents("batch_norm_every") == [("batch_norm", [True])]
    assert "decay_rate" not in declared  # not in the space, and the schedule is fixed: cosine


def test_free_widths_are_declared_under_the_layer_count(spec: StudySpec) -> None:
    hp = fixed_hyperparameters({"shape": "free", "layers": 2, "units_1": 8, "units_2": 5})
    params = declare_space(spec.space, hp)
    assert (params["units_1"], params["units_2"]) == (8, 5) and "units_3" not in params
    third = next(h for h in hp.space if h.name == "units_3")
    assert not hp.is_active(third)  # registered (the oracle knows it), sampled only at 3 layers
    # A constant trial builds with no width of its own, whatever the oracle kept.
    values = {"shape": "constant", "layers": 2, "units": 16, "units_1": 8, "use_l2": False}
    assert used_values(spec.space, values).keys() >= {"shape", "units", "use_l2"}
    assert not used_values(spec.space, values).keys() & {"units_1", "l2"}


CASES = [
    ALL_ON
    | {"units_1": 40, "units_2": 9, "units_3": 5, "l2": 1e-3, "l1": 1e-5, "weight_decay": 1e-2}
    | {"batch_norm": True, "batch_norm_every": 2, "batch_norm_position": "before"}
    | {"dropout": 0.3, "optimizer": "sgd", "momentum": 0.9},
    {"layers": 3, "units": 60, "shape": "funnel", "dropout": 0.0, "batch_norm": True},
    {"layers": 1, "units": 4, "use_l2": False, "use_l1": False, "optimizer": "adam"},
]


def _layers(model: Any) -> list[tuple[Any, ...]]:
    def regularizer(layer: Any) -> Any:
        found = getattr(layer, "kernel_regularizer", None)
        return found and (type(found).__name__, found.get_config())

    return [
        (
            type(layer).__name__,
            layer.name,
            getattr(layer, "units", None),
            getattr(layer, "rate", None),
            getattr(getattr(layer, "activation", None), "__name__", None),
            regularizer(layer),
        )
        for layer in model.layers
    ]


@pytest.mark.parametrize("values", CASES, ids=["free_bn_before_sgd", "funnel_bn", "plain"])
def test_build_is_the_services_model(
    spec: StudySpec, data: PreparedData, values: dict[str, Any]
) -> None:
    params, trial = _optuna_trial(spec, values)
    hypermodel = SpaceHyperModel(spec, data)
    model = hypermodel.build(fixed_hyperparameters(trial.params))  # the same names in KerasTuner
    steps = data.steps_per_epoch(int(params["batch_size"]))
    reference = build_model(
        params,
        n_features=N_FEATURES,
        task="binary",
        seed=spec.training.seed,
        steps_per_epoch=steps,
        epochs=spec.training.epochs,
    )
    assert _layers(model) == _layers(reference)
    assert model.count_params() == reference.count_params()
    assert model.count_params() == count_parameters(params, n_features=N_FEATURES)
    for ours, theirs in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)  # the same seeded initial weights

    def optimizer(m: Any) -> dict[str, Any]:
        return {k: v for k, v in m.optimizer.get_config().items() if k != "name"}  # sgd, sgd_1

    assert optimizer(model) == optimizer(reference)
    assert model.loss == reference.loss


def test_fit_passes_the_trials_batch_size_and_shuffling(
    spec: StudySpec, data: PreparedData
) -> None:
    class Recorder:
        def fit(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return {"args": args, **kwargs}

    hp = fixed_hyperparameters({"batch_size": 64, "shuffle": False})
    got = SpaceHyperModel(spec, data).fit(hp, Recorder(), "x", "y", epochs=3)  # type: ignore[arg-type]
    assert got == {"args": ("x", "y"), "batch_size": 64, "shuffle": False, "epochs": 3}


def test_steps_per_epoch_is_refused_in_one_line(spec: StudySpec, data: PreparedData) -> None:
    from dataclasses import replace

    from search.errors import HypermodelError

    stepped = replace(spec, training=replace(spec.training, steps_per_epoch=10))
    with pytest.raises(HypermodelError, match=r"steps_per_epoch = 10 is not supported"):
        SpaceHyperModel(stepped, data)


def _tiny_pima(folder: Path) -> Path:
    """spaces/pima_generalize.toml with 2 epochs, 2 trials and no verdict re-trainings."""
    text = (ROOT / "spaces" / "pima_generalize.toml").read_text(encoding="utf-8")
    text = re.sub(r"(?m)^epochs = \d+", "epochs = 2", text)
    text = re.sub(r"(?m)^trials = \d+", "trials = 2", text)
    text = text.split("[verdict]")[0].rsplit("#", 1)[0]  # drop the table and its comment
    return write_study(folder, "pima_tiny", text)


@pytest.mark.slow
def test_capsearch_kt_searches_a_plain_study_and_compares(
    tmp_path: Path,
    shared_data: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)  # KerasTuner's files go to ./storage/keras_tuner/<study>
    study = _tiny_pima(tmp_path)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    assert main(["run", str(study), "--storage", url]) == 0
    capsys.readouterr()
    caplog.clear()
    args = ["kt", str(study), "--trials", "2", "--max-epochs", "2", "--storage", url]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "keras-tuner hyperband on pima_tiny (pima)" in out
    assert re.search(r"^2 trials in [\d.]+ s", out, re.M), out
    cells = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()]
    rows = {row[0]: row[1:] for row in cells}
    ours, theirs = (float(v) for v in rows["val data loss (inference, no L2)"])
    assert 0.2 < ours < 1.0 and 0.2 < theirs < 1.5  # binary cross-entropy of Pima models
    assert rows["finished trials"] == ["2 (0 pruned)", "2"]
    for name in ("layers", "use_l2", "dropout", "batch_size", "learning_rate"):
        assert len(rows[name]) == 2 and "-" not in rows[name], name  # both engines searched it
    assert rows["optimizer"] == ["adam", "adam"]  # fixed: Optuna stores none, KerasTuner Fixed
    # A new model each trial retraces fit's functions by design; TensorFlow's warning is held.
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
    assert "mean over 5 folds" in out
    result = tmp_path / "storage" / "keras_tuner" / "pima_tiny" / "hyperband"
    assert (result / "capsearch_result.json").is_file()


def test_bayesian_without_scikit_learn_is_one_line(
    spec: StudySpec, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # scikit-learn is a dependency; an environment installed without it gets one line.
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a)
    )
    assert main(["kt", str(spec.path), "--tuner", "bayesian", "--trials", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'keras-tuner[bayesian]'" in err[0], err
