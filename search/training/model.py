"""The model family searched: a stack of Dense layers with L2 on kernels and dropout after each.

The output layer and the loss follow the task: one linear unit and mean squared error for
regression, one sigmoid unit and binary cross-entropy for binary classification, a softmax and
sparse categorical cross-entropy for several classes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

    from search.data import Task

_OPTIMIZERS = {
    "adam": "Adam",
    "rmsprop": "RMSprop",
    "sgd": "SGD",
    "adamw": "AdamW",
    "nadam": "Nadam",
    "adagrad": "Adagrad",
}


def loss_name(task: Task) -> str:
    """The Keras loss a task trains with."""
    return {
        "regression": "mean_squared_error",
        "binary": "binary_crossentropy",
        "multiclass": "sparse_categorical_crossentropy",
    }[task]


def count_hits(task: Task, y: Any, pred: Any) -> Any:
    """How many predictions in a batch are right, as a float64 tensor (0 for regression).

    Binary predictions are right when ``pred > 0.5`` matches the label, as in
    ``keras.metrics.BinaryAccuracy``; multi-class ones when the arg-max is the label.
    """
    import tensorflow as tf

    if task == "binary":
        hit = tf.equal(tf.cast(pred > 0.5, y.dtype), y)
    elif task == "multiclass":
        hit = tf.equal(tf.argmax(pred, axis=-1), tf.cast(y, tf.int64))
    else:
        return tf.constant(0.0, tf.float64)
    return tf.reduce_sum(tf.cast(hit, tf.float64))


def summed_loss_and_hits(
    task: Task, parts: Sequence[tuple[Any, Any]], predict: Callable[[Any], Any]
) -> tuple[Any, Any]:
    """Summed per-sample loss (float64, no penalty) and hits of ``predict`` over ``(x, y)`` parts.

    Inside a ``tf.function`` the parts do not depend on each other, so TensorFlow runs them on
    parallel threads.
    """
    import keras
    import tensorflow as tf

    per_sample = keras.losses.get(loss_name(task))
    loss_sums, hit_counts = [], []
    for x, y in parts:
        pred = predict(x)
        loss_sums.append(tf.reduce_sum(tf.cast(per_sample(y, pred), tf.float64)))
        hit_counts.append(count_hits(task, y, pred))
    return tf.add_n(loss_sums), tf.add_n(hit_counts)


def build_model(
    params: Mapping[str, Any],
    *,
    n_features: int,
    task: Task,
    n_classes: int = 2,
    sparse: bool = False,
    seed: int = 0,
    steps_per_execution: int = 1,
    build_optimizer: bool = True,
) -> keras.Model:
    """Build and compile a Dense-stack model from one trial's parameters.

    Args:
        params: ``layers``, ``units``, ``activation``, ``l2``, ``dropout``, ``learning_rate`` and
            ``optimizer``; ``layers = 0`` gives a linear (or logistic) model.
        n_features: Width of the input.
        task: ``"regression"``, ``"binary"`` or ``"multiclass"``.
        n_classes: Number of classes of a multi-class task.
        sparse: Whether inputs arrive as ``tf.SparseTensor`` (multi-hot text).
        seed: Seeds weight initialisation and dropout, so a trial can be re-run exactly.
        steps_per_execution: Optimizer steps per compiled call (fewer Python round trips).
        build_optimizer: Create the optimizer's slots now, as ``model.fit`` needs (see below).
            :meth:`search.training.prepared.PreparedData.fit` creates them itself, and only when it
            trains through ``fit``: the shared graphs keep their own slots.

    Returns:
        A compiled ``keras.Model``.
    """
    import keras

    # Seeded initializers, not keras.utils.set_random_seed: TensorFlow's global seed clears the
    # cache of instantiated graphs, which search.training.shared_graphs keeps across trials (0.25 s
    # each).
    initial = keras.random.SeedGenerator(seed)
    l2 = float(params.get("l2", 0.0))
    dropout = float(params.get("dropout", 0.0))
    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None

    from search.training.sparse_dense import SparseInputDense

    inputs = keras.Input(shape=(n_features,), sparse=sparse, name="features")
    x = inputs
    # The layer that takes the multi-hot input multiplies it with sparse kernels (same maths).
    first_dense = SparseInputDense if sparse else keras.layers.Dense
    for i in range(int(params["layers"])):
        dense = first_dense if i == 0 else keras.layers.Dense
        x = dense(
            int(params["units"]),
            activation=params.get("activation", "relu"),
            kernel_initializer=keras.initializers.GlorotUniform(seed=initial),
            kernel_regularizer=regularizer,
            name=f"hidden_{i + 1}",
        )(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, seed=seed + i, name=f"dropout_{i + 1}")(x)
    output = first_dense if int(params["layers"]) == 0 else keras.layers.Dense
    units, activation = {
        "regression": (1, None),
        "binary": (1, "sigmoid"),
        "multiclass": (n_classes, "softmax"),
    }[task]
    outputs = output(
        units,
        activation=activation,
        kernel_initializer=keras.initializers.GlorotUniform(seed=initial),
        name="output",
    )(x)
    model = keras.Model(inputs, outputs, name="dense_stack")
    model.compile(
        optimizer=make_optimizer(params.get("optimizer", "adam"), params["learning_rate"]),
        loss=loss_name(task),
        metrics=_metrics(task),
        steps_per_execution=steps_per_execution,
        jit_compile=False,
    )
    if build_optimizer:
        build_optimizer_slots(model)
    return model


def build_optimizer_slots(model: keras.Model) -> None:
    """Create the optimizer's slots of a compiled model before its first ``fit``.

    Variables created by fit's first trace (these slots, metrics compiled by name) make
    TensorFlow trace the whole train step a second time (tensorflow/tensorflow#48851): a third
    of a small IMDB trial's wall time.
    """
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def _metrics(task: Task) -> list[Any]:
    """``data_loss``: the loss without the L2 penalty, averaged over an epoch's batches.

    Metric objects, not names: a name is resolved, and its variables created, inside fit's
    first trace, which then runs twice (see :func:`build_model`).
    """
    import keras

    data_loss = keras.metrics.MeanMetricWrapper(keras.losses.get(loss_name(task)), name="data_loss")
    if task == "binary":
        return [data_loss, keras.metrics.BinaryAccuracy(name="accuracy")]
    if task == "multiclass":
        return [data_loss, keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    return [data_loss]


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """A Keras optimizer by its study-file name (``adam``, ``rmsprop``, ``sgd``...)."""
    import keras

    try:
        cls = getattr(keras.optimizers, _OPTIMIZERS[name])
    except KeyError:
        known = ", ".join(_OPTIMIZERS)
        raise ValueError(f"Unknown optimizer {name!r}; use one of {known}.") from None
    return cls(learning_rate=float(learning_rate))
