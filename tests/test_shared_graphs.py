"""Graphs shared across trials: Keras' mathematics, traced once per layer structure."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import scipy.sparse

from search.data import Dataset
from search.training.model import build_model
from search.training.prepared import PreparedData
from search.training.session import clear_session
from search.training.shared_graphs import GraphKey, epoch_rows, shared_graph_plan
from search.training.sparse_dense import CSR_FROM_UNITS

PARAMS = {
    "layers": 2,
    "units": 8,
    "activation": "relu",
    "l2": 0.0,
    "dropout": 0.0,
    "learning_rate": 0.01,
    "optimizer": "adam",
}


def _binary_multi_hot(n: int = 96, width: int = 60, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    dense = (rng.uniform(size=(n, width)) < 0.1).astype("float32")
    y = (dense[:, :6].sum(axis=1, keepdims=True) > 0).astype("float32")
    sparse = scipy.sparse.csr_matrix(dense)
    return Dataset("toy", "binary", sparse, y, sparse[:40], y[:40])


def _regression(n: int = 50, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + rng.normal(scale=0.1, size=(n, 1))).astype(
        "float32"
    )
    return Dataset("toy", "regression", x, y, x[:20], y[:20])


def _multiclass(n: int = 60, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = np.argmax(x[:, :3], axis=1).astype("int64")
    return Dataset("toy", "multiclass", x, y, x[:20], y[:20], n_classes=3)


def _model(
    dataset: Dataset, params: dict[str, object], seed: int, steps: int = 1, epochs: int = 1
) -> keras.Model:
    return build_model(
        params,
        n_features=dataset.n_features,
        task=dataset.task,
        n_classes=dataset.n_classes,
        sparse=dataset.is_sparse,
        seed=seed,
        steps_per_epoch=steps,
        epochs=epochs,
    )


CASES = [
    pytest.param(
        _binary_multi_hot, {"optimizer": "rmsprop", "l2": 1e-3}, id="sparse-coo-rmsprop-l2"
    ),
    pytest.param(
        _binary_multi_hot, {"units": CSR_FROM_UNITS + 4, "optimizer": "adam"}, id="sparse-csr-adam"
    ),
    pytest.param(_regression, {"optimizer": "sgd", "l2": 1e-2, "layers": 1}, id="dense-sgd-l2"),
    pytest.param(_multiclass, {"optimizer": "adam", "layers": 3}, id="multiclass-adam"),
    pytest.param(_regression, {"optimizer": "rmsprop", "layers": 0}, id="linear-rmsprop"),
    pytest.param(_regression, {"layers": 3, "batch_norm": True}, id="batch-norm-after"),
    pytest.param(
        _multiclass,
        # SGD: a bias the normalization cancels has a gradient of 0 up to rounding, which
        # Adam's and RMSprop's normalized steps turn into full-size steps of either sign.
        {"layers": 4, "batch_norm": True, "batch_norm_every": 2, "optimizer": "sgd"},
        id="batch-norm-every-2nd",
    ),
    pytest.param(
        _binary_multi_hot,
        {
            "batch_norm": True,
            "batch_norm_position": "before",
            "activation": "tanh",
            "optimizer": "sgd",
            "momentum": 0.9,
        },
        id="sparse-batch-norm-before",
    ),
    pytest.param(
        _regression, {"layers": 3, "shape": "funnel", "units": 12, "l1": 1e-3}, id="funnel-l1"
    ),
    pytest.param(_regression, {"units": [7, 3], "l1": 1e-3, "l2": 1e-3}, id="widths-l1-l2"),
    pytest.param(
        _regression,
        {"loss": "mae", "output_activation": "sigmoid", "batch_norm": True},
        id="sigmoid-mae",
    ),
    pytest.param(_regression, {"loss": "huber", "schedule": "cosine"}, id="huber-cosine"),
    pytest.param(
        _binary_multi_hot,
        {"schedule": "exponential", "decay_rate": 0.5, "optimizer": "rmsprop"},
        id="exponential-rmsprop",
    ),
    pytest.param(_regression, {"optimizer": "adamw"}, id="adamw"),
    pytest.param(_regression, {"weight_decay": 1e-2, "optimizer": "adam"}, id="adam-decay"),
    pytest.param(
        _regression,
        {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 1e-2, "schedule": "cosine"},
        id="sgd-momentum-decay-cosine",
    ),
    pytest.param(
        _multiclass, {"optimizer": "sgd", "momentum": 0.5, "nesterov": True}, id="sgd-nesterov"
    ),
]


@pytest.mark.parametrize(("make", "changes"), CASES)
def test_shared_graphs_train_like_keras_fit(make: object, changes: dict[str, object]) -> None:
    """Step for step on the same batches: the same weights and running logs as ``model.fit``."""
    dataset = make()  # type: ignore[operator]
    _assert_trains_like_keras_fit(PreparedData(dataset), PARAMS | changes)


def test_one_graph_trains_narrow_and_wide_with_and_without_l2_like_keras_fit() -> None:
    """The COO or CSR product and the L2 penalty, chosen at run time inside one traced graph."""
    data = PreparedData(_binary_multi_hot())
    _assert_trains_like_keras_fit(data, PARAMS | {"units": 6})
    _assert_trains_like_keras_fit(data, PARAMS | {"units": CSR_FROM_UNITS + 3, "l2": 1e-2})
    _assert_trains_like_keras_fit(data, PARAMS | {"units": 4, "l2": 1e-3})
    assert len(data.shared_graphs) == 2  # one train-epoch graph, one evaluation graph


def _assert_trains_like_keras_fit(data: PreparedData, params: dict[str, object]) -> None:
    dataset = data.dataset
    batch, epochs = 16, 3
    steps = data.steps_per_epoch(batch)
    shared = _model(dataset, params, seed=7, steps=steps, epochs=epochs)
    keras_model = _model(dataset, params, seed=7, steps=steps, epochs=epochs)
    assert shared_graph_plan(shared, dataset.task) is not None
    running = keras.callbacks.History()  # the epoch logs, penalized "loss" included
    history = data.fit(
        shared, batch_size=batch, epochs=epochs, seed=11, measure_train=False, callbacks=[running]
    )

    train = data.splits["train"]
    for epoch in range(epochs):
        rows, starts, ends = epoch_rows(train.n, batch, steps, epoch * steps, seed=11)
        x, y = train.gather(rows[starts[0] : ends[-1]])
        logs = keras_model.fit(x, y, batch_size=batch, epochs=1, shuffle=False, verbose=0)
        record = history.records[epoch]
        assert record.train_loss == pytest.approx(logs.history["data_loss"][0], rel=1e-4)
        assert running.history["loss"][epoch] == pytest.approx(logs.history["loss"][0], rel=1e-4)
        if dataset.task != "regression":
            assert record.train_accuracy == pytest.approx(logs.history["accuracy"][0], abs=1e-6)
    for a, b in zip(shared.get_weights(), keras_model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    val_loss, _ = PreparedData(dataset, use_shared_graphs=False).evaluate(keras_model, "val")
    assert history.records[-1].val_loss == pytest.approx(val_loss, rel=1e-4)


def test_models_of_one_structure_share_one_trace() -> None:
    dataset = _binary_multi_hot()
    data = PreparedData(dataset)
    for seed, units in enumerate((5, 9, 13)):  # all narrow: one key
        clear_session()
        model = _model(dataset, PARAMS | {"units": units, "dropout": 0.1 * seed}, seed)
        data.fit(model, batch_size=32, epochs=2)
    graphs = data.shared_graphs
    assert len(graphs) == 2  # one train-epoch graph, one evaluation graph
    (key,) = graphs._train  # noqa: SLF001
    assert graphs.train_graph(key).experimental_get_tracing_count() == 1
    # A wide first layer (the CSR product) and an L2 penalty are chosen inside the same graphs.
    wide = _model(dataset, PARAMS | {"units": CSR_FROM_UNITS, "l2": 1e-3}, seed=0)
    data.fit(wide, batch_size=32, epochs=1)
    assert len(graphs) == 2
    assert graphs.train_graph(key).experimental_get_tracing_count() == 1


def test_trials_of_one_structure_add_no_graph() -> None:
    import gc

    from tensorflow.python.framework.func_graph import FuncGraph

    dataset = _binary_multi_hot()
    data = PreparedData(dataset)
    live = []
    for seed in range(3):
        clear_session()
        model = _model(dataset, PARAMS | {"units": CSR_FROM_UNITS + seed}, seed)
        data.fit(model, batch_size=32, epochs=1)
        del model
        clear_session()
        gc.collect()
        live.append(sum(isinstance(o, FuncGraph) for o in gc.get_objects()))
    assert live[0] == live[1] == live[2]


def test_dropout_is_seeded_and_changes_training() -> None:
    dataset = _regression()
    data = PreparedData(dataset)

    def weights(dropout: float, seed: int) -> list[np.ndarray]:
        model = _model(dataset, PARAMS | {"dropout": dropout}, seed=3)
        data.fit(model, batch_size=10, epochs=2, seed=seed)
        return model.get_weights()

    first, again = weights(0.5, seed=1), weights(0.5, seed=1)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    other_seed, no_dropout = weights(0.5, seed=2), weights(0.0, seed=1)
    assert not np.allclose(first[0], other_seed[0])
    assert not np.allclose(first[0], no_dropout[0])


def test_dropout_keeps_expected_share_of_units() -> None:
    import tensorflow as tf

    from search.training.shared_graphs import _dropout

    h = tf.ones([200, 50])
    dropped = _dropout(h, tf.constant(0.3), tf.constant([4, 2], tf.int64)).numpy()
    np.testing.assert_allclose(np.unique(dropped), [0.0, 1 / 0.7], rtol=1e-6)  # inverted
    assert (dropped == 0).mean() == pytest.approx(0.3, abs=0.02)
    np.testing.assert_array_equal(_dropout(h, tf.constant(0.0), tf.constant([4, 2])).numpy(), h)


def test_callbacks_see_the_trained_model_and_can_stop_training() -> None:
    dataset = _regression()
    data = PreparedData(dataset)
    model = _model(dataset, PARAMS, seed=0)
    seen: list[float] = []

    class WatchAndStop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            seen.append(float(self.model.get_weights()[0].sum()))
            self.model.stop_training = epoch == 2

    history = data.fit(model, batch_size=10, epochs=50, callbacks=[WatchAndStop()])
    assert len(history.records) == len(seen) == 3
    assert len(set(seen)) == 3  # the weights are written back after every epoch
    assert seen[-1] == pytest.approx(float(model.get_weights()[0].sum()))


@pytest.mark.parametrize(
    "optimizer",
    [
        pytest.param(lambda: keras.optimizers.Adam(amsgrad=True), id="amsgrad"),
        pytest.param(lambda: keras.optimizers.Adam(clipnorm=1.0), id="clipnorm"),
        pytest.param(lambda: keras.optimizers.RMSprop(momentum=0.9), id="rmsprop-momentum"),
        pytest.param(
            lambda: keras.optimizers.SGD(
                keras.optimizers.schedules.PiecewiseConstantDecay([10], [0.1, 0.01])
            ),
            id="piecewise-schedule",
        ),
        pytest.param(lambda: keras.optimizers.Nadam(), id="nadam"),
    ],
)
def test_other_optimizers_train_with_keras_fit(optimizer: object) -> None:
    dataset = _regression()
    model = _model(dataset, PARAMS, seed=0)
    model.compile(optimizer=optimizer(), loss="mean_squared_error")  # type: ignore[operator]
    assert shared_graph_plan(model, dataset.task) is None
    data = PreparedData(dataset)
    history = data.fit(model, batch_size=10, epochs=2)
    assert len(history.records) == 2
    assert len(data.shared_graphs) == 0


def test_other_layers_are_not_shared() -> None:
    inputs = keras.Input(shape=(3,))
    hidden = keras.layers.BatchNormalization(renorm=True)(keras.layers.Dense(4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile(optimizer="adam", loss="mean_squared_error")
    assert shared_graph_plan(model, "regression") is None
    plain = keras.Sequential([keras.Input(shape=(3,)), keras.layers.Dense(1)])
    plain.compile(optimizer="adam", loss="mean_absolute_percentage_error")
    assert shared_graph_plan(plain, "regression") is None
    chain = keras.Sequential(
        [keras.Input(shape=(3,)), keras.layers.Dense(4), keras.layers.Dense(1)]
    )
    chain.compile(optimizer="rmsprop", loss="mean_squared_error")
    plan = shared_graph_plan(chain, "regression")
    assert plan is not None and isinstance(plan.key, GraphKey)
    assert plan.dropout_rates == [0.0, 0.0] and plan.l2 == [0.0, 0.0]


def test_epoch_rows_cut_shuffled_passes_into_batches() -> None:
    rows, starts, ends = epoch_rows(10, 4, 3, 0, seed=0)  # one pass: batches of 4, 4, 2
    assert sorted(rows[starts[0] : ends[-1]].tolist()) == list(range(10))
    assert (ends - starts).tolist() == [4, 4, 2]
    rows, starts, ends = epoch_rows(10, 4, 4, 2, seed=0)  # steps 2-5 cross two passes
    assert (ends - starts).tolist() == [2, 4, 4, 2]
    second_pass = np.concatenate([rows[s:e] for s, e in zip(starts[1:], ends[1:], strict=True)])
    assert sorted(second_pass.tolist()) == list(range(10))
    again, _, _ = epoch_rows(10, 4, 3, 3, seed=0)
    np.testing.assert_array_equal(again[:10], rows[10:])  # a pass is the same from any epoch
    rows, starts, ends = epoch_rows(10, 32, 5, 0, seed=0)  # full batch: every row, in order
    assert (
        rows.tolist() == list(range(10))
        and starts.tolist() == [0] * 5
        and ends.tolist() == [10] * 5
    )


def test_the_graph_cache_keeps_the_structures_used_last() -> None:
    """Past its bound the cache drops the least recently used half; training is unchanged."""
    from search.training.shared_graphs import SharedGraphs

    dataset = _regression()
    data = PreparedData(dataset)
    data.shared_graphs = SharedGraphs(data, max_structures=2)
    first = None
    for layers in (1, 2, 3, 1):
        clear_session()
        model = _model(dataset, PARAMS | {"layers": layers}, seed=3)
        history = data.fit(model, batch_size=10, epochs=2, seed=1)
        assert len(data.shared_graphs) <= 4
        if layers == 1:
            loss = history.records[-1].train_loss
            first = loss if first is None else first
            assert loss == pytest.approx(first, rel=1e-6)  # traced again, same numbers
    assert data.shared_graphs.traced == 4  # depth 1 was dropped and traced again
