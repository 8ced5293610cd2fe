"""The model builder and the trainer: same mathematics as plain Keras, measured honestly."""

from __future__ import annotations

import gc
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import scipy.sparse
import tensorflow as tf

from search.data import Dataset
from search.training.model import build_model
from search.training.prepared import PreparedData, steps_per_execution
from search.training.session import clear_session, custom_gradient_count, long_lived_objects_frozen
from search.training.sparse_dense import (
    CSR_FROM_UNITS,
    SparseInputDense,
    plain_dense_copy,
    sparse_matmul,
)

PARAMS = {
    "layers": 2,
    "units": 16,
    "activation": "relu",
    "l2": 0.0,
    "dropout": 0.0,
    "learning_rate": 0.01,
    "optimizer": "adam",
}


def _regression(n: int = 21, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1)).astype("float32")
    y = rng.uniform(size=(n, 1)).astype("float32")
    return Dataset("toy", "regression", x, y, x[:5], y[:5])


def _multi_hot(n: int = 300, width: int = 200, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    dense = (rng.uniform(size=(n, width)) < 0.05).astype("float32")
    y = (dense[:, :10].sum(axis=1, keepdims=True) > 0).astype("float32")
    sparse = scipy.sparse.csr_matrix(dense)
    return Dataset("toy", "binary", sparse, y, sparse[:100], y[:100])


def test_books_original_model_has_the_books_parameter_count() -> None:
    model = build_model(
        PARAMS | {"optimizer": "rmsprop", "learning_rate": 1e-3},
        n_features=10000,
        task="binary",
        sparse=True,
    )
    assert model.count_params() == 10000 * 16 + 16 + 16 * 16 + 16 + 16 + 1


def test_l2_and_dropout_are_built_into_every_hidden_layer() -> None:
    model = build_model(PARAMS | {"l2": 1e-3, "dropout": 0.5}, n_features=3, task="regression")
    hidden = [layer for layer in model.layers if layer.name.startswith("hidden_")]
    dropout = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert len(hidden) == 2 and len(dropout) == 2
    assert all(layer.kernel_regularizer is not None for layer in hidden)
    assert all(layer.rate == 0.5 for layer in dropout)


def test_zero_layers_is_a_linear_model() -> None:
    model = build_model(PARAMS | {"layers": 0}, n_features=2, task="regression")
    assert model.count_params() == 3


def test_steps_per_execution_divides_the_epoch() -> None:
    assert steps_per_execution(200) == 100
    assert steps_per_execution(59) == 59
    assert steps_per_execution(101) == 1
    for steps in range(1, 300):
        assert steps % steps_per_execution(steps) == 0


def test_evaluation_is_in_inference_mode() -> None:
    dataset = _regression()
    data = PreparedData(dataset)
    model = build_model(PARAMS | {"dropout": 0.5}, n_features=1, task="regression", seed=3)
    history = data.fit(model, batch_size=21, epochs=2, steps_per_epoch=10)
    expected = float(
        np.mean((model(dataset.x_train, training=False).numpy() - dataset.y_train) ** 2)
    )
    assert history.records[-1].train_loss == pytest.approx(expected, rel=1e-5)
    with_dropout = float(
        np.mean((model(dataset.x_train, training=True).numpy() - dataset.y_train) ** 2)
    )
    assert with_dropout != pytest.approx(expected, rel=1e-3)


def test_evaluation_leaves_out_the_l2_penalty() -> None:
    dataset = _regression()
    data = PreparedData(dataset)
    model = build_model(PARAMS | {"l2": 1.0}, n_features=1, task="regression", seed=1)
    loss, _ = data.evaluate(model, "train")
    keras_logs = model.evaluate(dataset.x_train, dataset.y_train, verbose=0, return_dict=True)
    data_loss = float(np.mean((model.predict(dataset.x_train, verbose=0) - dataset.y_train) ** 2))
    assert loss == pytest.approx(data_loss, rel=1e-5)
    assert keras_logs["data_loss"] == pytest.approx(data_loss, rel=1e-5)
    assert keras_logs["loss"] > loss  # Keras adds the penalty; the study compares data loss


def test_tiny_data_path_matches_plain_full_batch_fit() -> None:
    dataset = _regression()
    fast = build_model(PARAMS, n_features=1, task="regression", seed=5, steps_per_execution=50)
    PreparedData(dataset).fit(fast, batch_size=21, epochs=2, steps_per_epoch=100)
    plain = build_model(PARAMS, n_features=1, task="regression", seed=5)
    plain.fit(dataset.x_train, dataset.y_train, batch_size=21, epochs=200, shuffle=False, verbose=0)
    for a, b in zip(fast.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_sparse_path_predicts_like_the_dense_path() -> None:
    dataset = _multi_hot()
    sparse_model = build_model(PARAMS, n_features=200, task="binary", sparse=True, seed=2)
    dense_model = build_model(PARAMS, n_features=200, task="binary", sparse=False, seed=2)
    dense_model.set_weights(sparse_model.get_weights())
    data = PreparedData(dataset)
    x_dense = dataset.x_train.toarray()
    start = 0
    for x_part, _ in data.eval_parts("train"):
        end = start + int(x_part.dense_shape[0])
        np.testing.assert_allclose(
            sparse_model(x_part, training=False).numpy(),
            dense_model(x_dense[start:end], training=False).numpy(),
            rtol=1e-5,
            atol=1e-6,
        )
        start = end
    assert start == dataset.x_train.shape[0]
    sparse_loss, sparse_acc = data.evaluate(sparse_model, "train")
    dense_data = PreparedData(
        Dataset("toy", "binary", x_dense, dataset.y_train, x_dense[:100], dataset.y_train[:100])
    )
    dense_loss, dense_acc = dense_data.evaluate(dense_model, "train")
    assert sparse_loss == pytest.approx(dense_loss, rel=1e-5)
    assert sparse_acc == dense_acc


def _live_graphs() -> int:
    from tensorflow.python.framework.func_graph import FuncGraph

    gc.collect()
    return sum(isinstance(o, FuncGraph) for o in gc.get_objects())


def test_finished_trials_leave_no_graph_behind() -> None:
    # Keras' optimizer registers a tf.custom_gradient per traced train step, and TensorFlow's
    # registry would keep that step's graph alive forever (6-8 MB per IMDB trial).
    data = PreparedData(_multi_hot(), use_shared_graphs=False)
    live = []
    for seed in range(3):
        clear_session()
        assert custom_gradient_count() == 0
        live.append(_live_graphs())
        model = build_model(PARAMS, n_features=200, task="binary", sparse=True, seed=seed)
        data.fit(model, batch_size=64, epochs=1)
        assert custom_gradient_count() > 0  # the registrations this guards against were made
        del model
    clear_session()
    assert _live_graphs() == live[0] == live[-1]


@pytest.mark.parametrize("build_optimizer", [True, False])
@pytest.mark.parametrize("sparse", [True, False])
def test_fit_traces_the_train_step_once(sparse: bool, build_optimizer: bool) -> None:
    # Variables created inside fit's first trace (optimizer slots, metrics compiled by name)
    # would make TensorFlow trace the whole train step a second time. Trials build models
    # without slots (the shared graphs keep their own): PreparedData.fit must add them.
    clear_session()
    dataset = _multi_hot() if sparse else _regression(n=200)
    data = PreparedData(dataset, use_shared_graphs=False)
    model = build_model(
        PARAMS,
        n_features=dataset.n_features,
        task=dataset.task,
        sparse=sparse,
        seed=0,
        build_optimizer=build_optimizer,
    )
    traces = []
    train_step = model.train_step

    def counted(batch: object) -> object:
        traces.append(batch)
        return train_step(batch)

    model.train_step = counted  # type: ignore[method-assign]
    data.fit(model, batch_size=32, epochs=2)
    assert len(traces) == 1


def test_clear_session_keeps_tensorflows_kernel_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    # Keras' clear_session empties the cache through Context.clear_kernel_cache; ours must not,
    # or the shared graphs are instantiated again at every trial.
    from tensorflow.python.eager import context

    calls: list[object] = []
    monkeypatch.setattr(context.Context, "clear_kernel_cache", lambda self: calls.append(self))
    clear_session()
    assert calls == []
    assert "clear_kernel_cache" not in vars(context.context())  # the method is back
    keras.backend.clear_session()
    assert len(calls) == 1  # Keras still clears it by that name: the guard is needed


def test_frozen_objects_stay_out_of_collections_until_the_block_ends() -> None:
    import weakref

    class Node:
        def __init__(self) -> None:
            self.me = self  # a reference cycle: only the collector frees it

    with long_lived_objects_frozen():
        assert gc.get_freeze_count() > 1000  # the interpreter's, TensorFlow's, Keras' objects
        made_inside = Node()
        ref = weakref.ref(made_inside)
        del made_inside
        gc.collect()
        assert ref() is None  # what trials create is still collected
    assert gc.get_freeze_count() == 0


def test_what_survives_a_trial_is_frozen_and_freed_at_the_next_full_walk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import weakref

    from search.training import session

    class Node:
        def __init__(self) -> None:
            self.me = self  # a reference cycle: only the collector frees it

    monkeypatch.setattr(session, "FULL_COLLECTION_EVERY", 3)
    with long_lived_objects_frozen():
        kept = Node()  # what a trial leaves for the next ones, e.g. a shared graph
        clear_session()  # 1st
        frozen = gc.get_freeze_count()
        garbage = Node()
        ref = weakref.ref(garbage)
        del garbage
        clear_session()  # 2nd: the collection frees it, it was not frozen
        assert ref() is None
        assert gc.get_freeze_count() >= frozen  # the survivors, kept among them, stay frozen
        died_frozen = weakref.ref(kept)
        del kept
        gc.collect()
        assert died_frozen() is not None  # frozen when it died: not walked...
        clear_session()  # 3rd: the full walk
        assert died_frozen() is None  # ...until the full walk
    assert gc.get_freeze_count() == 0


def test_freezing_first_frees_the_graphs_of_earlier_models() -> None:
    import weakref

    from tensorflow.python.framework.func_graph import FuncGraph

    data = PreparedData(_multi_hot(), use_shared_graphs=False)
    clear_session()
    before = {id(o) for o in gc.get_objects() if isinstance(o, FuncGraph)}
    model = build_model(PARAMS, n_features=200, task="binary", sparse=True, seed=0)
    data.fit(model, batch_size=64, epochs=1)
    del model
    graphs = [
        weakref.ref(o) for o in gc.get_objects() if isinstance(o, FuncGraph) and id(o) not in before
    ]
    assert graphs
    with long_lived_objects_frozen():
        clear_session()  # as every trial does
        assert all(ref() is None for ref in graphs)  # not frozen alive


@pytest.mark.parametrize("use_shared_graphs", [True, False])
def test_evaluation_in_parallel_parts_measures_the_whole_split(
    monkeypatch: pytest.MonkeyPatch, use_shared_graphs: bool
) -> None:
    monkeypatch.setattr("search.training.prepared._cores", lambda: 3)
    dataset = _multi_hot(n=2500, width=50, seed=4)
    data = PreparedData(dataset, use_shared_graphs=use_shared_graphs)
    parts = data.eval_parts("train")
    assert [int(x.dense_shape[0]) for x, _ in parts] == [1250, 1250]  # 2 parts of >= 1024 rows
    stacked = np.concatenate([tf.sparse.to_dense(x).numpy() for x, _ in parts])
    np.testing.assert_array_equal(stacked, dataset.x_train.toarray())

    model = build_model(PARAMS, n_features=50, task="binary", sparse=True, seed=6)
    history = data.fit(model, batch_size=500, epochs=1, measure_train=True)
    pred = model.predict(dataset.x_train.toarray(), verbose=0)
    losses = keras.losses.binary_crossentropy(dataset.y_train, pred).numpy()
    hits = ((pred > 0.5) == (dataset.y_train > 0.5)).mean()
    assert history.records[0].train_loss == pytest.approx(float(losses.mean()), rel=1e-5)
    assert history.records[0].train_accuracy == pytest.approx(float(hits), abs=1e-9)


def test_sparse_gather_keeps_rows_without_values() -> None:
    dataset = _multi_hot(n=20, width=30)
    empty = dataset.x_train.tolil()
    empty[[2, 5], :] = 0
    data = PreparedData(Dataset("toy", "binary", empty.tocsr(), dataset.y_train, None, None))
    x, _ = data.splits["train"].gather(tf.constant([5, 1, 2, 7], dtype=tf.int64))
    assert x.dense_shape.numpy().tolist() == [4, 30]
    np.testing.assert_array_equal(tf.sparse.to_dense(x).numpy(), empty.toarray()[[5, 1, 2, 7]])


def test_sparse_batches_gather_the_right_rows() -> None:
    dataset = _multi_hot(n=50, width=30)
    data = PreparedData(dataset)
    import tensorflow as tf

    rows = tf.constant([3, 0, 49], dtype=tf.int64)
    x, y = data.splits["train"].gather(rows)
    np.testing.assert_array_equal(
        tf.sparse.to_dense(x).numpy(), dataset.x_train.toarray()[[3, 0, 49]]
    )
    np.testing.assert_array_equal(y.numpy(), dataset.y_train[[3, 0, 49]])


def test_training_batches_cover_every_row_each_epoch() -> None:
    dataset = _regression(n=10)
    data = PreparedData(dataset)
    batches = iter(data.train_dataset(batch_size=4, seed=0))
    seen = np.concatenate([next(batches)[1].numpy().ravel() for _ in range(3)])
    assert sorted(seen) == sorted(dataset.y_train.ravel())


@pytest.mark.parametrize("units", [8, CSR_FROM_UNITS, 37, 300])
def test_sparse_first_layer_trains_like_dense_keras(units: int) -> None:
    """Narrow (COO product) and wide (CSR product) layers: same gradients, and the same weights
    after training as keras.layers.Dense on the densified input, for the same batches and seed."""
    dataset = _multi_hot(n=256, width=200)
    params = PARAMS | {"units": units, "optimizer": "rmsprop", "learning_rate": 1e-3}
    sparse_model = build_model(params, n_features=200, task="binary", sparse=True, seed=4)
    dense_model = build_model(params, n_features=200, task="binary", sparse=False, seed=4)
    assert isinstance(sparse_model.get_layer("hidden_1"), SparseInputDense)
    assert type(dense_model.get_layer("hidden_1")) is keras.layers.Dense
    dense_model.set_weights(sparse_model.get_weights())

    rows = tf.range(256, dtype=tf.int64)
    x_sparse, y = PreparedData(dataset).splits["train"].gather(rows)
    x_dense = tf.sparse.to_dense(x_sparse)
    loss = keras.losses.BinaryCrossentropy()
    grads = []
    for model, x in ((sparse_model, x_sparse), (dense_model, x_dense)):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        grads.append(tape.gradient(value, model.trainable_variables))
    for a, b in zip(*grads, strict=True):
        np.testing.assert_allclose(tf.convert_to_tensor(a), b, rtol=1e-4, atol=1e-6)

    for model, x in ((sparse_model, x_sparse), (dense_model, x_dense)):
        model.fit(x, y, batch_size=64, epochs=3, shuffle=False, verbose=0)
    for a, b in zip(sparse_model.get_weights(), dense_model.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("units", [5, 37, 40, 130])  # padded to a multiple of 8, or not
@pytest.mark.parametrize("csr", [True, None], ids=["csr", "chosen-by-width"])
def test_product_of_unknown_width_matches_the_dense_product(units: int, csr: bool | None) -> None:
    """The CSR product, or the one the kernel's width picks at run time (COO below 32 units)."""
    x_dense = tf.constant(_multi_hot(n=70, width=60).x_train.toarray())
    x_sparse = tf.sparse.from_dense(x_dense)
    kernel = tf.random.stateless_normal([60, units], seed=[1, units])
    upstream = tf.random.stateless_normal([70, units], seed=[2, units])

    @tf.function(input_signature=[tf.TensorSpec([60, None], tf.float32)])
    def product_and_gradient(weights: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(weights)
            outputs = sparse_matmul(x_sparse, weights, csr=csr)
            value = tf.reduce_sum(outputs * upstream)
        return outputs, tape.gradient(value, weights)

    outputs, gradient = product_and_gradient(kernel)
    assert outputs.shape == (70, units)
    np.testing.assert_allclose(outputs, x_dense @ kernel, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        gradient, tf.matmul(x_dense, upstream, transpose_a=True), rtol=1e-5, atol=1e-5
    )


def test_logistic_model_on_sparse_input_uses_the_sparse_layer() -> None:
    model = build_model(PARAMS | {"layers": 0}, n_features=200, task="binary", sparse=True)
    assert isinstance(model.get_layer("output"), SparseInputDense)


def test_plain_dense_copy_saves_a_model_keras_loads_alone(tmp_path: Path) -> None:
    dataset = _multi_hot()
    model = build_model(PARAMS | {"units": 300}, n_features=200, task="binary", sparse=True)
    plain = plain_dense_copy(model)
    assert not any(isinstance(layer, SparseInputDense) for layer in plain.layers)
    plain.save(tmp_path / "m.keras")
    text = zipfile.ZipFile(tmp_path / "m.keras").read("config.json").decode()
    assert "SparseInputDense" not in text and "capsearch" not in text
    loaded = keras.models.load_model(tmp_path / "m.keras")
    data = PreparedData(dataset)
    assert data.evaluate(loaded, "val") == pytest.approx(data.evaluate(model, "val"), rel=1e-5)
    dense_only = build_model(PARAMS, n_features=3, task="regression")
    assert plain_dense_copy(dense_only) is dense_only
