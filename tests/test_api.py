"""``search.search`` on in-memory data: each input kind, resumption, workers, the best model."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

import search
from search.cli import main

TINY = {"layers": (1, 2), "units": (4, 16, "log"), "l2": 0.0, "batch_size": [16, 64]}


def _binary(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(5.0, 3.0, size=(n, 3))  # far from standardized: the model must standardize
    y = (x[:, 0] + 0.5 * x[:, 1] > 7.5).astype(np.int64)
    return x, y


def _stored(url: str) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(url)]


@pytest.mark.slow
def test_numpy_binary_best_model_takes_raw_inputs_and_1d_labels(tmp_path: Path) -> None:
    import keras

    url = f"sqlite:///{tmp_path / 's.db'}"
    x, y = _binary(160)
    result = search.search(
        x[:100],
        y[:100],
        validation_data=(x[100:130], y[100:130]),
        test_data=(x[130:], y[130:]),
        space=TINY | {"dropout": 0.0},
        baselines=[{"layers": 1, "units": 8}],
        trials=2,
        epochs=3,
        standardize=True,
        storage=url,
        verbose=0,
        trial_plots=False,
    )
    assert result.study.user_attrs["fingerprint"]["arrays"]["task"] == "binary"
    assert result.best_params["l2"] == 0.0 and "use_l2" not in result.best_params
    model = result.best_model
    assert model.get_layer("standardize") is not None
    loss, accuracy = model.evaluate(x[100:130], y[100:130], verbose=0)  # raw, 1-D labels
    assert loss == pytest.approx(result.best_trial.value, rel=1e-3)
    assert 0.0 <= accuracy <= 1.0
    assert result.test_scores is not None and result.test_scores["test_loss"] > 0
    saved = tmp_path / "best.keras"
    model.save(saved)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = keras.models.load_model(saved)
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    assert loaded.evaluate(x[100:130], y[100:130], verbose=0)[0] == pytest.approx(loss, rel=1e-5)
    loaded.fit(x[:100], y[:100], epochs=1, verbose=0)  # plain Keras fits it too
    assert "<table>" in result._repr_html_()
    assert list(result.summary().index)[0] == "best"


@pytest.mark.slow
def test_pandas_regression_keeps_column_names(tmp_path: Path) -> None:
    pandas = pytest.importorskip("pandas")
    url = f"sqlite:///{tmp_path / 's.db'}"
    rng = np.random.default_rng(1)
    frame = pandas.DataFrame({"width": rng.uniform(0, 1, 80), "height": rng.uniform(0, 1, 80)})
    target = pandas.Series(frame["width"] * 2 + frame["height"] + 0.5, name="area")
    result = search.search(
        frame,
        target,
        validation_split=0.25,
        space=TINY,
        trials=2,
        epochs=2,
        storage=url,
        verbose=0,
        trial_plots=False,
    )
    dataset = result._data().dataset
    assert dataset.task == "regression"
    assert dataset.reference["features"] == ["width", "height"]
    assert dataset.x_train.shape == (60, 2) and dataset.x_val.shape == (20, 2)
    assert result.best_model.predict(frame.to_numpy()[:5], verbose=0).shape == (5, 1)


@pytest.mark.slow
def test_sparse_csr_trains_on_the_sparse_path(tmp_path: Path) -> None:
    import scipy.sparse

    url = f"sqlite:///{tmp_path / 's.db'}"
    rng = np.random.default_rng(2)
    dense = (rng.uniform(size=(90, 40)) < 0.1).astype(np.float32)
    y = (dense[:, :5].sum(axis=1) > 0).astype(np.int64)
    x = scipy.sparse.csr_matrix(dense)
    result = search.search(
        x,
        y,
        objective="memorize",
        space=TINY,
        trials=2,
        epochs=2,
        storage=url,
        verbose=0,
        trial_plots=False,
    )
    assert result.study.user_attrs["fingerprint"]["arrays"]["x_train"]["sparse"] is True
    assert result._data().dataset.is_sparse
    model = result.best_model  # plain Dense layers: loads with Keras alone
    assert model.predict(dense[:4], verbose=0).shape == (4, 1)


@pytest.mark.slow
def test_the_same_call_resumes_and_other_data_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    x, y = _binary(60)
    common: dict[str, Any] = dict(
        objective="memorize", space=TINY, epochs=2, storage=url, verbose=0, trial_plots=False
    )
    search.search(x, y, trials=2, study_name="mine", **common)
    result = search.search(x, y, trials=3, study_name="mine", **common)
    assert len(result.study.trials) == 3
    with pytest.raises(search.StudyMismatchError, match="the data") as info:
        search.search(x * 2, y, trials=4, study_name="mine", **common)
    assert "study_name=" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(search.StudyMismatchError, match="space.units"):
        search.search(
            x, y, trials=4, study_name="mine", **(common | {"space": TINY | {"units": 8}})
        )
    # units fixed inside its old range only narrows the space: allowed when asked for.
    narrowed = common | {"space": TINY | {"units": 8}, "allow_narrowed": True}
    assert len(search.search(x, y, trials=4, study_name="mine", **narrowed).study.trials) == 4
    assert len(optuna.load_study(study_name="mine", storage=url).trials) == 4
    capsys.readouterr()
    assert main(["list", "--storage", url]) == 0
    assert "mine" in capsys.readouterr().out


@pytest.mark.slow
def test_two_workers_on_in_memory_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    x, y = _binary(60)
    result = search.search(
        x,
        y,
        objective="memorize",
        space=TINY,
        trials=4,
        epochs=2,
        storage=url,
        workers=2,
        verbose=0,
        trial_plots=False,
    )
    trials = result.study.trials
    assert sum(t.state.is_finished() for t in trials) >= 4
    assert len({t.user_attrs.get("worker") for t in trials}) == 2  # both workers ran trials
    arrays = list((tmp_path / "artifacts" / "arrays").iterdir())
    assert len(arrays) == 1  # written once, mapped by both workers
    assert result.best_model.count_params() > 0


@pytest.mark.slow
def test_a_build_model_function_as_the_space(tmp_path: Path) -> None:
    import keras

    def build_model(hp: Any) -> keras.Model:
        model = keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(hp.Int("units", 4, 16), activation="relu"),
                keras.layers.Dense(1, activation="sigmoid"),
            ]
        )
        model.compile(optimizer="adam", loss="binary_crossentropy")
        return model

    x, y = _binary(60)
    result = search.search(
        x,
        y,
        objective="memorize",
        space=build_model,
        trials=2,
        epochs=2,
        storage=f"sqlite:///{tmp_path / 's.db'}",
        verbose=0,
        trial_plots=False,
    )
    assert 4 <= result.best_params["units"] <= 16
    assert result.best_model.predict(x[:2], verbose=0).shape == (2, 1)


X, Y = _binary(30)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((X, Y[:-1]), {}, "30 rows but its y has 29"),
        ((np.where(X > 7, np.nan, X), Y), {}, "NaN or infinity in row"),
        ((np.where(X > 7, np.inf, X), Y), {}, "NaN or infinity in row"),
        ((X, np.arange(30) % 3), {"task": "binary"}, "exactly 2 label values"),
        ((np.zeros((0, 3)), np.zeros(0)), {}, "empty"),
        ((X, Y), {"space": {"neurons": (1, 8)}}, "space key 'neurons'"),
        ((X, np.arange(30) % 3), {}, "cannot tell the task"),
        ((X, Y), {"objective": "generalize"}, "validation_data"),
        ((X, Y), {"validation_data": (X[:, :2], Y)}, "2 features but x has 3"),
    ],
)
def test_bad_input_is_one_line_and_stores_nothing(
    tmp_path: Path, args: tuple[Any, Any], kwargs: dict[str, Any], message: str
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    options: dict[str, Any] = {"objective": "memorize", "storage": url, "verbose": 0} | kwargs
    with pytest.raises(search.InputError, match=message) as info:
        search.search(*args, **options)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "s.db").exists() or _stored(url) == []
    assert not (tmp_path / "artifacts").exists()
