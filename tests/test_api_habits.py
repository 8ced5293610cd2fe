"""``search.search`` against habits from Keras and Optuna notebooks.

Validation frames with their columns in another order, pruner objects, a negative timeout, a
call that ends with no completed trial, and Optuna's logging level after the call.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

import search
from search.api.result import SearchResult
from search.data.memory import check_arrays
from search.views.summary import GAP_NOTE, comparison_table

TINY = {"layers": 1, "units": (4, 8), "l2": 0.0, "dropout": 0.0, "batch_size": [16]}


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'x.db'}"


def _stored(url: str) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(url)]


def _frames(n: int = 40) -> tuple[Any, Any]:
    pandas = pytest.importorskip("pandas")
    rng = np.random.default_rng(3)
    columns = list("abcd")
    frame = pandas.DataFrame(rng.normal(size=(n, 4)) * [1, 10, 100, 1000], columns=columns)
    target = pandas.Series(frame["a"] + frame["b"] / 10, name="t")
    return frame, target


# 1. DataFrames are matched by column name.


def test_a_validation_frame_in_another_column_order_is_put_in_x_order() -> None:
    frame, target = _frames()
    data = check_arrays(
        {
            "train": (frame[:30], target[:30]),
            "val": (frame[30:][list("dcba")], target[30:]),
            "test": (frame[30:][list("badc")], target[30:]),
        }
    )
    expected = frame[30:].to_numpy(dtype=np.float32)
    np.testing.assert_array_equal(data.splits["val"][0], expected)
    np.testing.assert_array_equal(data.splits["test"][0], expected)
    assert data.features == list("abcd")


def test_a_search_with_a_permuted_validation_frame_stores_x_order(tmp_path: Path) -> None:
    frame, target = _frames()
    url = _url(tmp_path)
    result = search.search(
        frame[:30],
        target[:30],
        validation_data=(frame[30:][list("dcba")], target[30:]),
        space=TINY,
        trials=1,
        epochs=np.int64(1),  # NumPy integers (from a grid) go into the study file as ints
        seed=np.int64(0),
        storage=url,
        verbose=0,
        trial_plots=False,
    )
    assert result.best_trial.state == optuna.trial.TrialState.COMPLETE
    (folder,) = (tmp_path / "artifacts" / "arrays").iterdir()
    stored = np.load(folder / "x_val.npy")
    np.testing.assert_array_equal(stored, frame[30:].to_numpy(dtype=np.float32))
    assert json.loads((folder / "meta.json").read_text())["features"] == list("abcd")


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (list("abce"), r"lacks x's columns \['d'\] and has columns \['e'\] that x lacks"),
        (list("abc"), r"lacks x's columns \['d'\]"),
    ],
)
def test_a_validation_frame_with_other_column_names_is_refused(
    tmp_path: Path, columns: list[str], message: str
) -> None:
    frame, target = _frames()
    other = frame[30:].copy()
    other.columns = list("abce")
    url = _url(tmp_path)
    with pytest.raises(search.InputError, match=message) as info:
        search.search(
            frame[:30],
            target[:30],
            validation_data=(other[columns], target[30:]),
            storage=url,
            verbose=0,
        )
    assert "\n" not in str(info.value) and "same column names" in str(info.value)
    assert not (tmp_path / "x.db").exists() or _stored(url) == []
    assert not (tmp_path / "artifacts").exists()


# 2. rows() gives the losses at the best epoch, as the printed table does.


def _trial(attrs: dict[str, Any], value: float) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(value=value, params={}, distributions={}, user_attrs=attrs)


def test_rows_give_the_losses_at_the_best_epoch_and_the_running_note() -> None:
    study = optuna.create_study()
    best = {
        "best_epoch": 2,
        "epochs_run": 4,
        "train_curve": [0.9, 0.5, 0.3, 0.1],  # the minimum (0.1) is not at the best epoch
        "val_curve": [0.8, 0.4, 0.6, 0.7],
        "train_loss_best": 0.1,
        "val_loss_best": 0.4,
        "gap_at_best": -0.1,
        "train_loss_kind": "running",
        "param_count": 33,
    }
    study.add_trial(_trial(best, 0.4))
    curveless = {"best_epoch": 1, "train_loss_best": 0.7, "val_loss_best": 0.9, "baseline": "b"}
    study.add_trial(_trial(curveless | {"train_loss_kind": "inference"}, 0.9))
    result = SearchResult(study=study, spec=search.load_study("overfit30_memorize"), _data=None)

    rows = result.rows()
    assert [r["row"] for r in rows] == ["best", "baseline b"]
    assert rows[0]["train_loss"] == 0.5 and rows[0]["val_loss"] == 0.4
    assert rows[0]["gap"] == -0.1 and rows[0]["train_loss_kind"] == "running"
    assert rows[1]["train_loss"] == 0.7 and rows[1]["train_loss_kind"] == "inference"
    printed = comparison_table(study)[1].split()  # "best  0  0.4  0.5  0.4  -0.1 ..."
    assert printed[3] == "0.5" and printed[4] == "0.4"
    assert comparison_table(study)[0].split()[2] == "run_train_loss"
    frame = result.summary()
    assert frame.loc["best", "train_loss"] == 0.5
    assert frame.loc["best", "train_loss_kind"] == "running"
    page = result._repr_html_()
    assert "<th>run_train_loss</th>" in page and GAP_NOTE in page.replace("&#x27;", "'")


# 3. Arguments that must be plain values: an object is a one-line InputError.


X = np.random.default_rng(0).normal(size=(30, 3))
Y = (X[:, 0] > 0).astype(np.int64)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pruner": optuna.pruners.MedianPruner()}, r"pruner=MedianPruner\(\.\.\.\) is not taken"),
        ({"pruner": "medain"}, "pruner='medain' is unknown; use one of hyperband"),
        ({"study_name": optuna.create_study(study_name="mine")}, "study_name='mine'"),
        ({"storage": optuna.storages.InMemoryStorage()}, "not a storage URL"),
        ({"epochs": 2.5}, "epochs=2.5 must be a whole number"),
        ({"timeout": -1}, "timeout=-1 must be a positive number of seconds"),
        ({"timeout": 0}, "timeout=0 must be a positive number"),
        ({"timeout": "600"}, "timeout='600' must be a positive number"),
        ({"timeout": float("nan")}, "timeout=nan must be a positive number"),
        ({"timeout": True}, "timeout=True must be a positive number"),
    ],
)
def test_objects_and_bad_timeouts_are_one_line_and_store_nothing(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    url = _url(tmp_path)
    options: dict[str, Any] = {"objective": "memorize", "storage": url, "verbose": 0} | kwargs
    with pytest.raises(search.InputError, match=message) as info:
        search.search(X, Y, **options)
    assert "\n" not in str(info.value)
    if "pruner" in kwargs and not isinstance(kwargs["pruner"], str):
        assert "hyperband, successive_halving, median" in str(info.value)
        assert "[pruner] table" in str(info.value)
    assert not (tmp_path / "x.db").exists() or _stored(url) == []
    assert not (tmp_path / "artifacts").exists()


# 4. A call with no completed trial returns; its best_* say how to go on.

OPTIONS: dict[str, Any] = {
    "objective": "memorize",
    "space": TINY,
    "trials": 1,
    "epochs": 1,
    "verbose": 0,
    "trial_plots": False,
}


def test_a_call_with_no_completed_trial_returns_and_resumes(tmp_path: Path) -> None:
    url = _url(tmp_path)
    result = search.search(X, Y, timeout=1e-9, storage=url, **OPTIONS)  # no trial starts
    with pytest.raises(search.FatalError, match="no completed trial yet") as info:
        result.best_params  # noqa: B018
    assert "\n" not in str(info.value) and "call again with more trials=" in str(info.value)
    with pytest.raises(search.FatalError, match="no completed trial yet"):
        result.best_model  # noqa: B018
    assert result.rows() == [] and len(result.summary()) == 0
    assert "train_loss_kind" in result.summary().columns
    assert "no completed trial yet" in result._repr_html_()

    again = search.search(X, Y, storage=url, **OPTIONS)  # the same call resumes and completes
    assert again.best_params["layers"] == 1 and len(again.summary()) == 1


# 5. Optuna's logging level is the caller's again after the call, returned or raised.


def test_the_caller_keeps_optuna_logging(tmp_path: Path) -> None:
    url = _url(tmp_path)
    before = optuna.logging.get_verbosity()
    try:
        optuna.logging.set_verbosity(optuna.logging.INFO)
        search.search(X, Y, timeout=1e-9, storage=url, **OPTIONS)
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
        optuna.logging.set_verbosity(optuna.logging.DEBUG)
        with pytest.raises(search.StudyMismatchError):  # raised inside the run: other data
            search.search(X[:20], Y[:20], timeout=1e-9, storage=url, **OPTIONS)
        assert optuna.logging.get_verbosity() == optuna.logging.DEBUG
    finally:
        optuna.logging.set_verbosity(before)


@pytest.mark.slow
def test_trials_that_keep_failing_say_why_even_when_silent(tmp_path: Path) -> None:
    """At ``verbose=0`` nothing printed the failures "above" the error that pointed at them."""
    import keras

    from search.errors import TrialsKeepFailing

    def build_model(hp: Any) -> keras.Model:
        units = hp.Int("units", 4, 4000)
        if units != 4:  # the default path (4) builds; every sampled trial fails
            raise RuntimeError(f"no room for {units} units")
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        return model

    x = np.random.default_rng(0).normal(size=(40, 2))
    with pytest.raises(TrialsKeepFailing, match="the last one: RuntimeError: no room for"):
        search.search(
            x,
            x[:, 0],
            objective="memorize",
            space=build_model,
            trials=20,
            epochs=1,
            storage=f"sqlite:///{tmp_path / 'fail.db'}",
            verbose=0,
            trial_plots=False,
        )


def test_one_hot_labels_are_refused_with_the_argmax_that_fixes_them() -> None:
    """KerasTuner users pass ``to_categorical`` labels; the error names the way out."""
    x = np.zeros((6, 2))
    with pytest.raises(search.InputError, match=r"one-hot rows: pass y\.argmax\(axis=1\)"):
        search.search(x, np.eye(3)[[0, 1, 2, 0, 1, 2]], objective="memorize")
    with pytest.raises(search.InputError) as info:
        search.search(x, np.ones((6, 2)), objective="memorize")
    assert "one-hot" not in str(info.value)
