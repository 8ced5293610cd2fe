"""Sub-levers sampled only where their lever applies, and the ``shuffle`` lever."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import keras
import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from search.data import Dataset
from search.engine.study import make_sampler
from search.errors import StudyFileError
from search.replay.export import keras_code
from search.runs import SearchOptions, run_search
from search.spec.family import CONDITIONS, DEFAULTS, applies
from search.spec.studyfile import StudySpec, load_study
from search.training.model import build_model
from search.training.prepared import PreparedData, prepare_data
from search.training.run import train_params
from tests.conftest import TINY_MEMORIZE, write_study

CHILDREN = ("batch_norm_every", "batch_norm_position", "decay_rate", "momentum", "nesterov")

LEVERS = """
# Children listed before their levers: the levers are still sampled first.
nesterov = { choices = [false, true] }
momentum = { low = 0.5, high = 0.9, zero = true }
batch_norm_every = { low = 1, high = 2 }
batch_norm_position = { choices = ["after", "before"] }
batch_norm = { choices = [false, true] }
decay_rate = { low = 0.5, high = 0.99 }
schedule = { choices = ["constant", "exponential"] }
optimizer = { choices = ["adam", "sgd"] }
"""

CONDITIONAL = (
    TINY_MEMORIZE.replace("dropout = { choices = [0.0, 0.1] }\n", f"dropout = 0.0\n{LEVERS}", 1)
    .replace("epochs = 6\n", "epochs = 2\n", 1)
    .replace("trials = 4\n", "trials = 3\n", 1)
    # The baseline: every lever off, so no child applies; batch 7 of 21 rows, unshuffled.
    .replace("batch_size = 21\n", 'batch_size = 7\nshuffle = false\noptimizer = "adam"\n', 1)
    + """
[[baselines]]
name = "sgd_nesterov"
layers = 1
units = 8
l2 = 0.0
batch_size = 21
learning_rate = 0.005
optimizer = "sgd"
momentum = 0.9
nesterov = true
batch_norm = true
batch_norm_every = 2
"""
)


@pytest.fixture
def spec(tmp_path: Path) -> StudySpec:
    return load_study(write_study(tmp_path, "conditional", CONDITIONAL))


def _optuna_names(name: str) -> set[str]:
    """The Optuna parameters a lever of the test space samples (``momentum`` has a flag)."""
    return {name, "use_momentum"} if name == "momentum" else {name}


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_children_are_optuna_parameters_exactly_where_their_lever_applies(
    spec: StudySpec, sampler: str
) -> None:
    # the study's own TPE sampler (multivariate, group = true), or random draws
    chosen = make_sampler(spec) if sampler == "tpe" else optuna.samplers.RandomSampler(seed=3)
    study = optuna.create_study(sampler=chosen)
    suggested: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        suggested.append(spec.suggest(trial))
        return float(trial.number % 7)

    study.optimize(objective, n_trials=40)
    seen: dict[str, set[bool]] = {child: set() for child in CHILDREN}
    for trial, params in zip(study.trials, suggested, strict=True):
        for child in CHILDREN:
            active = applies(child, params)
            seen[child].add(active)
            if child == "momentum" and active:
                assert "use_momentum" in trial.params
                assert ("momentum" in trial.params) == (params["momentum"] > 0)
            else:
                assert bool(_optuna_names(child) & set(trial.params)) == active, (child, trial)
            if not active:
                assert params[child] == DEFAULTS[child], (child, params)
        # nesterov only with sgd and a momentum above 0
        if "nesterov" in trial.params:
            assert params["optimizer"] == "sgd" and params["momentum"] > 0
        # the stored trial gives back the dict its run trained
        assert spec.stored_params(trial.params, None) == params
    assert all(values == {True, False} for values in seen.values()), seen


def test_baselines_enqueue_only_the_children_that_apply(spec: StudySpec) -> None:
    plain = spec.baseline_named("small")
    sgd = spec.baseline_named("sgd_nesterov")
    assert plain is not None and sgd is not None
    enqueued = spec.baseline_trial_params(plain)
    assert not set(enqueued) & {*CHILDREN, "use_momentum"}
    assert enqueued["optimizer"] == "adam" and enqueued["batch_norm"] is False
    assert {k: plain.params[k] for k in CHILDREN} == {k: DEFAULTS[k] for k in CHILDREN}
    assert {
        k: v for k, v in spec.baseline_trial_params(sgd).items() if k in {*CHILDREN, "use_momentum"}
    } == {
        "use_momentum": True,
        "momentum": 0.9,
        "nesterov": True,
        "batch_norm_every": 2,
        "batch_norm_position": "after",
    }
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for baseline in spec.baselines:
        study.enqueue_trial(
            spec.baseline_trial_params(baseline), user_attrs={"baseline": baseline.name}
        )
    ran: dict[str, dict[str, Any]] = {}

    def objective(trial: optuna.Trial) -> float:
        ran[trial.user_attrs["baseline"]] = spec.suggest(trial)
        return 0.0

    study.optimize(objective, n_trials=2)
    for trial in study.trials:
        name = trial.user_attrs["baseline"]
        assert trial.params == spec.baseline_trial_params(spec.baseline_named(name))  # type: ignore[arg-type]
        assert spec.stored_params(trial.params, name) == ran[name]
    assert ran["sgd_nesterov"]["momentum"] == 0.9 and ran["small"]["momentum"] == 0.0


@pytest.mark.parametrize(
    ("old", "new", "key", "pattern"),
    [
        (
            "shuffle = false\n",
            "shuffle = false\nmomentum = 0.7\n",
            "baselines[0].momentum",
            r"momentum = 0\.7 has no effect unless optimizer = \"sgd\", and optimizer is 'adam'",
        ),
        (
            "shuffle = false\n",
            "shuffle = false\nbatch_norm_every = 2\n",
            "baselines[0].batch_norm_every",
            "unless batch_norm = true, and batch_norm is False",
        ),
        ("momentum = 0.9\n", "momentum = 0.0\n", "baselines[1].nesterov", "unless momentum > 0"),
    ],
)
def test_a_baseline_setting_a_child_that_cannot_apply_is_one_line(
    tmp_path: Path, old: str, new: str, key: str, pattern: str
) -> None:
    assert old in CONDITIONAL
    _assert_fails(write_study(tmp_path, "bad", CONDITIONAL.replace(old, new, 1)), key, pattern)


@pytest.mark.parametrize(
    ("old", "new", "key", "pattern"),
    [
        (
            "dropout = 0.0\n",
            "dropout = 0.0\nshuffle = 3\n",
            "space.shuffle",
            "expected true or false",
        ),
        ("shuffle = false\n", "shuffle = 3\n", "baselines[0].shuffle", "expected true or false"),
    ],
)
def test_a_bad_shuffle_is_one_line(
    tmp_path: Path, old: str, new: str, key: str, pattern: str
) -> None:
    _assert_fails(write_study(tmp_path, "bad", CONDITIONAL.replace(old, new, 1)), key, pattern)


def _assert_fails(path: Path, key: str, pattern: str) -> None:
    with pytest.raises(StudyFileError) as info:
        load_study(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert re.search(pattern, message), message
    assert "\n" not in message


def test_an_unshuffled_baseline_with_inactive_children_trains_and_replays(
    spec: StudySpec, storage_url: str
) -> None:
    study = run_search(
        spec,
        SearchOptions(storage=storage_url, trials=3, summary=False, trial_plots=False),
        echo=lambda _: None,
    )
    first = study.trials[0]
    assert first.user_attrs["baseline"] == "small" and first.state == TrialState.COMPLETE
    assert not set(first.params) & {*CHILDREN, "use_momentum", "shuffle"}
    params = spec.stored_params(first.params, "small")
    assert params["shuffle"] is False
    assert {k: params[k] for k in CHILDREN} == {k: DEFAULTS[k] for k in CHILDREN}
    assert all(k in params for k in CONDITIONS)
    # The trial trained on the rows in order: re-training so repeats it, a shuffle does not.
    data = prepare_data(spec)
    again = train_params(spec, data, params, seed=int(first.user_attrs["seed"]))
    shuffled = train_params(
        spec, data, params | {"shuffle": True}, seed=int(first.user_attrs["seed"])
    )
    curve = first.user_attrs["train_curve"]
    assert again.history.curve("train_loss") == pytest.approx(curve, rel=1e-5)
    assert shuffled.history.curve("train_loss") != pytest.approx(curve, rel=1e-5)
    code = keras_code(spec, first, data.dataset)
    assert "shuffle=False," in code and "rows in their stored order" in code
    second = study.trials[1]
    assert second.user_attrs["baseline"] == "sgd_nesterov"
    assert "shuffle=False" not in keras_code(spec, second, data.dataset)
    for trial in study.trials:
        if trial.state == TrialState.COMPLETE:
            stored = spec.stored_params(trial.params, trial.user_attrs.get("baseline"))
            for child in CHILDREN:
                assert bool(_optuna_names(child) & set(trial.params)) == applies(child, stored)


def _regression(n: int = 50, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + rng.normal(scale=0.1, size=(n, 1))).astype(
        "float32"
    )
    return Dataset("toy", "regression", x, y, x[:20], y[:20])


@pytest.mark.parametrize("shared", [True, False], ids=["shared-graphs", "tf-data"])
def test_unshuffled_training_is_keras_fit_shuffle_false_step_for_step(shared: bool) -> None:
    """The same weights and running logs as ``model.fit(x, y, shuffle=False)`` on the rows."""
    dataset = _regression()
    data = PreparedData(dataset, use_shared_graphs=shared)
    params = {
        "layers": 2,
        "units": 8,
        "activation": "relu",
        "l2": 1e-3,
        "dropout": 0.0,
        "learning_rate": 0.01,
        "optimizer": "sgd",
        "momentum": 0.9,
        "shuffle": False,
    }
    batch, epochs = 16, 3  # 50 rows: batches of 16, 16, 16 and 2 each pass
    steps = data.steps_per_epoch(batch)

    def model() -> keras.Model:
        return build_model(
            params, n_features=3, task="regression", seed=7, steps_per_epoch=steps, epochs=epochs
        )

    ours, keras_model = model(), model()
    running = keras.callbacks.History()
    history = data.fit(
        ours,
        batch_size=batch,
        epochs=epochs,
        seed=11,
        measure_train=False,
        callbacks=[running],
        shuffle=False,
    )
    logs = keras_model.fit(
        dataset.x_train, dataset.y_train, batch_size=batch, epochs=epochs, shuffle=False, verbose=0
    )
    for epoch in range(epochs):
        assert history.records[epoch].train_loss == pytest.approx(
            logs.history["data_loss"][epoch], rel=1e-4
        )
        assert running.history["loss"][epoch] == pytest.approx(
            logs.history["loss"][epoch], rel=1e-4
        )
    for a, b in zip(ours.get_weights(), keras_model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
