"""The model family searched: a stack of Dense layers, one width each, with L1 and L2 on kernels,
batch normalization after every k-th layer and dropout after each.

The output layer and the loss follow the task: one linear unit (or a sigmoid, for targets in
[0, 1]) and mean squared error (or MAE, Huber) for regression, one sigmoid unit and binary
cross-entropy for binary classification, a softmax and sparse categorical cross-entropy for
several classes. The optimizer may have a learning-rate schedule, decoupled weight decay and (SGD)
momentum.
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


_REGRESSION_LOSSES = {"mse": "mean_squared_error", "mae": "mean_absolute_error", "huber": "huber"}


def loss_name(task: Task) -> str:
    """The Keras loss a task is measured with: trials are compared in it (MSE for regression).

    A regression trial may train with another (its ``loss``, see :func:`training_loss`); its
    ``train_loss`` and ``val_loss`` are still this one, so trials with different losses compare.
    """
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


def training_loss(task: Task, params: Mapping[str, Any]) -> str:
    """The Keras loss a trial trains with: its ``loss`` parameter (regression), else the task's.

    Example:
        >>> training_loss("regression", {"loss": "mae"}), training_loss("binary", {})
        ('mean_absolute_error', 'binary_crossentropy')
    """
    name = params.get("loss", "mse")
    if task != "regression":
        if name != "mse":
            raise ValueError(
                f"loss = {name!r} is for regression; a {task} task trains with its "
                "cross-entropy. Remove loss from the space."
            )
        return loss_name(task)
    return _REGRESSION_LOSSES[name]


def output_layer(task: Task, params: Mapping[str, Any], n_classes: int) -> tuple[int, str | None]:
    """Units and activation of the output layer: ``output_activation`` applies to regression."""
    activation = params.get("output_activation", "linear")
    if task != "regression":
        if activation != "linear":
            raise ValueError(
                f"output_activation = {activation!r} is for regression; a {task} task ends in "
                "its own sigmoid or softmax. Remove output_activation from the space."
            )
        return (1, "sigmoid") if task == "binary" else (n_classes, "softmax")
    return 1, None if activation == "linear" else activation


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
    steps_per_epoch: int = 1,
    epochs: int = 1,
) -> keras.Model:
    """Build and compile a Dense-stack model from one trial's parameters.

    Args:
        params: ``layers``, ``units`` (or a list, or ``shape`` and ``units_<i>``, see
            :mod:`search.spec.family`), ``activation``, ``l1``, ``l2``, ``dropout``,
            ``batch_norm`` (``batch_norm_every``, ``batch_norm_position``),
            ``output_activation``, ``loss``, ``learning_rate``, ``schedule`` (``decay_rate``),
            ``optimizer``, ``weight_decay``, ``momentum`` and ``nesterov``; ``layers = 0`` gives a
            linear (or logistic) model.
        n_features: Width of the input.
        task: ``"regression"``, ``"binary"`` or ``"multiclass"``.
        n_classes: Number of classes of a multi-class task.
        sparse: Whether inputs arrive as ``tf.SparseTensor`` (multi-hot text).
        seed: Seeds weight initialisation and dropout, so a trial can be re-run exactly.
        steps_per_execution: Optimizer steps per compiled call (fewer Python round trips).
        build_optimizer: Create the optimizer's slots now, as ``model.fit`` needs (see below).
            :meth:`search.training.prepared.PreparedData.fit` creates them itself, and only when it
            trains through ``fit``: the shared graphs keep their own slots.
        steps_per_epoch: Optimizer steps per epoch: the exponential schedule decays per epoch.
        epochs: The epoch cap: the cosine schedule decays over ``epochs * steps_per_epoch`` steps.

    Returns:
        A compiled ``keras.Model``.
    """
    import keras

    from search.spec.family import batch_norm_after, layer_widths

    # Seeded initializers, not keras.utils.set_random_seed: TensorFlow's global seed clears the
    # cache of instantiated graphs, which search.training.shared_graphs keeps across trials (0.25 s
    # each).
    initial = keras.random.SeedGenerator(seed)
    dropout = float(params.get("dropout", 0.0))
    regularizer = kernel_regularizer(float(params.get("l1", 0.0)), float(params.get("l2", 0.0)))
    widths = layer_widths(params)
    norms = batch_norm_after(params)
    before = params.get("batch_norm_position", "after") == "before"
    activation = params.get("activation", "relu")

    from search.training.sparse_dense import SparseInputDense

    inputs = keras.Input(shape=(n_features,), sparse=sparse, name="features")
    x = inputs
    # The layer that takes the multi-hot input multiplies it with sparse kernels (same maths).
    first_dense = SparseInputDense if sparse else keras.layers.Dense
    for i, (width, norm) in enumerate(zip(widths, norms, strict=True)):
        dense = first_dense if i == 0 else keras.layers.Dense
        x = dense(
            width,
            activation=None if norm and before else activation,
            kernel_initializer=keras.initializers.GlorotUniform(seed=initial),
            kernel_regularizer=regularizer,
            name=f"hidden_{i + 1}",
        )(x)
        if norm:
            x = keras.layers.BatchNormalization(name=f"batch_norm_{i + 1}")(x)
            if before:
                x = keras.layers.Activation(activation, name=f"activation_{i + 1}")(x)
        if dropout > 0:
            x = keras.layers.Dropout(dropout, seed=seed + i, name=f"dropout_{i + 1}")(x)
    output = first_dense if not widths else keras.layers.Dense
    units, out_activation = output_layer(task, params, n_classes)
    outputs = output(
        units,
        activation=out_activation,
        kernel_initializer=keras.initializers.GlorotUniform(seed=initial),
        name="output",
    )(x)
    model = keras.Model(inputs, outputs, name="dense_stack")
    model.compile(
        optimizer=make_optimizer(
            params.get("optimizer", "adam"),
            learning_rate_schedule(params, steps_per_epoch=steps_per_epoch, epochs=epochs),
            weight_decay=float(params.get("weight_decay", 0.0)),
            momentum=float(params.get("momentum", 0.0)),
            nesterov=bool(params.get("nesterov", False)),
        ),
        loss=training_loss(task, params),
        metrics=_metrics(task),
        steps_per_execution=steps_per_execution,
        jit_compile=False,
    )
    if build_optimizer:
        build_optimizer_slots(model)
    return model


def kernel_regularizer(l1: float, l2: float) -> keras.regularizers.Regularizer | None:
    """Keras' ``L1``, ``L2`` or ``L1L2`` for the strengths given, ``None`` when both are 0."""
    import keras

    if l1 > 0 and l2 > 0:
        return keras.regularizers.L1L2(l1=l1, l2=l2)
    if l1 > 0:
        return keras.regularizers.L1(l1)
    if l2 > 0:
        return keras.regularizers.L2(l2)
    return None


def learning_rate_schedule(
    params: Mapping[str, Any], *, steps_per_epoch: int, epochs: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate, or its ``keras.optimizers.schedules`` schedule (``schedule``).

    ``cosine`` decays to 0 over the trial's ``epochs * steps_per_epoch`` steps; ``exponential``
    multiplies the rate by ``decay_rate`` every epoch (smoothly, step by step).
    """
    import keras

    rate = float(params["learning_rate"])
    schedule = params.get("schedule", "constant")
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(rate, decay_steps=epochs * steps_per_epoch)
    if schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            rate, decay_steps=steps_per_epoch, decay_rate=float(params.get("decay_rate", 0.9))
        )
    return rate


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


def make_optimizer(
    name: str,
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule,
    *,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    nesterov: bool = False,
) -> keras.optimizers.Optimizer:
    """A Keras optimizer by its study-file name (``adam``, ``rmsprop``, ``sgd``...).

    ``weight_decay`` is Keras' decoupled decay (AdamW's kind, for every optimizer; AdamW keeps its
    own default 0.004 when none is given); ``momentum`` and ``nesterov`` apply to SGD.
    """
    import keras

    try:
        cls = getattr(keras.optimizers, _OPTIMIZERS[name])
    except KeyError:
        known = ", ".join(_OPTIMIZERS)
        raise ValueError(f"Unknown optimizer {name!r}; use one of {known}.") from None
    options: dict[str, Any] = {}
    if weight_decay > 0:
        options["weight_decay"] = weight_decay
    if name == "sgd":
        options |= {"momentum": momentum, "nesterov": nesterov}
    rate = learning_rate if not isinstance(learning_rate, (int, float)) else float(learning_rate)
    return cls(learning_rate=rate, **options)  # type: ignore[no-any-return]
