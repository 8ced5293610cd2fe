"""The widened model family: per-layer widths, batch normalization, L1, regression outputs and
losses, schedules, weight decay and momentum; their study-file keys and the seeds' exact models."""

from __future__ import annotations

import re
from pathlib import Path

import keras
import optuna
import pytest
from optuna.trial import TrialState

from search.errors import StudyFileError
from search.runs import SearchOptions, run_search
from search.spec.family import count_parameters, layer_widths
from search.spec.studyfile import load_study
from search.training.model import build_model
from tests.conftest import TINY_MEMORIZE, write_study


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    assert old in TINY_MEMORIZE, old
    return write_study(tmp_path, "broken", TINY_MEMORIZE.replace(old, new, 1))


SPACE_LINE = "dropout = { choices = [0.0, 0.1] }"


@pytest.mark.parametrize(
    ("line", "key", "pattern"),
    [
        ('shape = "pyramid"', "space.shape", "unknown shape 'pyramid'; use one of constant"),
        ('batch_norm = "yes"', "space.batch_norm", "expected true or false"),
        ("batch_norm = { low = 0, high = 1 }", "space.batch_norm", "take `choices`"),
        ("batch_norm_every = 0", "space.batch_norm_every", "must be >= 1"),
        ('batch_norm_position = "middle"', "space.batch_norm_position", "after, before"),
        ('output_activation = "relu"', "space.output_activation", "linear, sigmoid"),
        ('loss = "hinge"', "space.loss", "mse, mae, huber"),
        ('schedule = "step"', "space.schedule", "constant, cosine, exponential"),
        ("decay_rate = { low = 0.0, high = 0.9 }", "space.decay_rate", r"\(0, 1\]"),
        ("weight_decay = -1.0", "space.weight_decay", ">= 0"),
        ("momentum = 1.0", "space.momentum", r"\[0, 1\)"),
        ("nesterov = 1", "space.nesterov", "expected true or false"),
        ("l1 = { low = -1.0, high = 1.0 }", "space.l1", "L1 strength must be >= 0"),
    ],
)
def test_each_new_key_is_validated(tmp_path: Path, line: str, key: str, pattern: str) -> None:
    path = _broken(tmp_path, SPACE_LINE, f"{SPACE_LINE}\n{line}")
    _assert_fails(path, key, pattern)


@pytest.mark.parametrize(
    ("old", "new", "key", "pattern"),
    [
        (
            "units = { low = 4, high = 32, log = true }",
            "units = [8, 4]",
            "space.layers",
            "layers must be fixed to 2",
        ),
        (
            "units = { low = 4, high = 32, log = true }",
            'units = [8]\nshape = "funnel"',
            "space.layers",
            "layers must be fixed to 1",
        ),
        (
            "units = { low = 4, high = 32, log = true }",
            'units = 8\nshape = "free"',
            "space.units",
            "give units as a range",
        ),
        ("units = 8\n", "units = [8, 4]\n", "baselines[0].layers", "layers must be 2"),
        (
            "units = 8\n",
            "units = [64]\n",
            "baselines[0].units",
            "width 64 is outside the search space",
        ),
        ("units = 8\n", "units = 8\nepochs = 0\n", "baselines[0].epochs", "positive integer"),
        ("units = 8\n", 'units = 8\nloss = "hinge"\n', "baselines[0].loss", "unknown loss"),
    ],
)
def test_widths_and_baseline_rules_are_named(
    tmp_path: Path, old: str, new: str, key: str, pattern: str
) -> None:
    _assert_fails(_broken(tmp_path, old, new), key, pattern)


def _assert_fails(path: Path, key: str, pattern: str) -> None:
    with pytest.raises(StudyFileError) as info:
        load_study(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert re.search(pattern, message), message
    assert "\n" not in message


def _layers(model: keras.Model) -> list[tuple[str, int | None, str | None]]:
    """(layer type, units, activation) of each layer after the input."""
    out = []
    for layer in model.layers[1:]:
        activation = getattr(layer, "activation", None)
        name = keras.activations.serialize(activation) if activation is not None else None
        out.append((type(layer).__name__, getattr(layer, "units", None), name))
    return out


def _baseline_model(study: str, name: str) -> tuple[keras.Model, dict[str, object]]:
    spec = load_study(study)
    baseline = spec.baseline_named(name)
    assert baseline is not None
    params = spec.resolve_params(baseline.params)
    return build_model(params, n_features=1 if "overfit" in study else 8, task=_task(study)), params


def _task(study: str) -> str:
    return "binary" if study.startswith("pima") else "regression"


def test_overfit30_question_is_dense_32_16_at_batch_1() -> None:
    model, params = _baseline_model("overfit30_memorize", "question")
    assert _layers(model) == [("Dense", 32, "relu"), ("Dense", 16, "relu"), ("Dense", 1, "linear")]
    assert params["batch_size"] == 1 and model.loss == "mean_squared_error"
    assert params["shuffle"] is False  # the question's rows went in their stored order
    assert load_study("overfit30_memorize").baseline_named("question").epochs == 53  # type: ignore[union-attr]


def test_overfit30_answer_is_30_x_50_with_batch_norm_every_fifth() -> None:
    model, params = _baseline_model("overfit30_memorize", "answer_30x50_bn")
    expected: list[tuple[str, int | None, str | None]] = []
    for i in range(30):
        expected.append(("Dense", 50, "relu"))
        if (i + 1) % 5 == 0:
            expected.append(("BatchNormalization", None, None))
    expected.append(("Dense", 1, "sigmoid"))
    assert _layers(model) == expected
    assert model.loss == "mean_absolute_error" and params["batch_size"] == 21
    assert type(model.optimizer) is keras.optimizers.Adam
    assert float(model.optimizer.learning_rate) == pytest.approx(5e-4)
    assert model.count_params() == count_parameters(params, n_features=1)


@pytest.mark.parametrize("name", ["post_plain", "post_l2_dropout"])
def test_pima_baselines_are_the_posts_20_20_10(name: str) -> None:
    model, params = _baseline_model("pima_generalize", name)
    dense = [layer for layer in model.layers if type(layer) is keras.layers.Dense]
    assert [layer.units for layer in dense] == [20, 20, 10, 1]
    dropouts = [layer.rate for layer in model.layers if type(layer) is keras.layers.Dropout]
    if name == "post_l2_dropout":
        assert dropouts == [0.5, 0.5, 0.5]
        assert all(float(layer.kernel_regularizer.l2) == pytest.approx(1e-3) for layer in dense[:3])
    else:
        assert dropouts == [] and all(layer.kernel_regularizer is None for layer in dense)


def test_noisy_sine_has_the_answers_10_epoch_run() -> None:
    spec = load_study("noisy_sine_generalize")
    short = spec.baseline_named("answer_2x50_10_epochs")
    assert short is not None and short.epochs == 10
    assert layer_widths(short.params) == [50, 50] and short.params["batch_size"] == 64


def test_batch_norm_before_the_activation_and_funnel_widths() -> None:
    params = {
        "layers": 3,
        "units": 30,
        "shape": "funnel",
        "batch_norm": True,
        "batch_norm_position": "before",
        "activation": "tanh",
        "learning_rate": 1e-3,
    }
    model = build_model(params, n_features=2, task="regression")
    assert [t for t, _, _ in _layers(model)] == [
        *["Dense", "BatchNormalization", "Activation"] * 3,
        "Dense",
    ]
    assert [u for _, u, _ in _layers(model) if u] == [30, 20, 10, 1]
    assert model.count_params() == count_parameters(params, n_features=2)


def test_classification_rejects_regression_outputs() -> None:
    with pytest.raises(ValueError, match="output_activation = 'sigmoid' is for regression"):
        build_model(
            {"layers": 1, "units": 4, "learning_rate": 1e-3, "output_activation": "sigmoid"},
            n_features=3,
            task="binary",
        )


FREE = (
    TINY_MEMORIZE.replace(
        "units = { low = 4, high = 32, log = true }",
        'units = { low = 4, high = 32, log = true }\nshape = { choices = ["constant", "free"] }',
    )
    .replace("units = 8\n", "units = [8, 5]\n", 1)
    .replace("layers = 1\n", "layers = 2\n", 1)
)


def test_free_widths_are_sampled_per_layer_and_replayed(tmp_path: Path, storage_url: str) -> None:
    spec = load_study(write_study(tmp_path, "free", FREE))
    study = run_search(
        spec,
        SearchOptions(storage=storage_url, trials=4, summary=False, trial_plots=False),
        echo=lambda _: None,
    )
    trials = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    first = study.trials[0]
    assert first.params["units_1"] == 8 and first.params["units_2"] == 5
    assert spec.stored_params(first.params, "small")["units"] == [8, 5]
    for trial in trials:
        params = spec.stored_params(trial.params, trial.user_attrs.get("baseline"))
        widths = layer_widths(params)
        assert len(widths) == params["layers"]
        if params.get("shape") == "free":
            assert set(trial.params) >= {f"units_{i + 1}" for i in range(params["layers"])}
        assert trial.user_attrs["param_count"] == count_parameters(params, n_features=1)
    # A free shape never samples a width for a layer the trial does not have.
    for trial in trials:
        extra = [k for k in trial.params if k.startswith("units_")]
        assert len(extra) in (0, trial.params["layers"])
    assert isinstance(study, optuna.Study)
