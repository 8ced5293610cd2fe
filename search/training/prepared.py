"""Training one model fast, and measuring it honestly after every epoch.

Data is turned into tensors once per worker (:class:`PreparedData`) and shared by every trial.
Batches are cut from a shuffled row index (or the rows in order, ``shuffle=False``) and
gathered in TensorFlow, so multi-hot text stays a ``tf.SparseTensor`` end to end and tiny data
sets repeat inside one compiled call. Models of the searched family train in graphs traced
once per worker and layer structure (:mod:`search.training.shared_graphs`); any other model
trains with ``model.fit`` on a ``tf.data`` pipeline that cuts the same kind of batches.

An *epoch* is one pass over the training rows, or, when the study sets ``steps_per_epoch``, that
many optimizer steps (the data repeated): 21 points trained full-batch for 20,000 steps become 200
epochs of 100 steps, each one a single compiled call and one report to the pruner.

After each epoch :class:`EpochEvaluator` computes the validation loss in inference mode (no
dropout, no L2 penalty). The training loss is measured the same way over the whole training set
when ``measure_train`` is set (memorize studies, whose objective it is); otherwise it is the
epoch's running data loss as Keras reports it (dropout on, averaged over the batches, no L2
penalty), which costs nothing extra.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from search.data import DataOptions, data_context, load_dataset
from search.training.model import build_optimizer_slots, summed_loss_and_hits
from search.training.shared_graphs import SharedGraphs, TrialRun, epoch_rows, shared_graph_plan

if TYPE_CHECKING:
    from search.data import Dataset, Features, Task
    from search.spec.studyfile import StudySpec

_EVAL_ROWS = 8192  # most rows in one evaluation part: bounds the activations' memory
_MIN_PART_ROWS = 1024  # fewer rows are not worth a part of their own
_MAX_STEPS_PER_EXECUTION = 100


@dataclass
class EpochRecord:
    """Inference-mode measurements after one epoch (``None`` where a split is absent)."""

    epoch: int
    train_loss: float
    val_loss: float | None
    train_accuracy: float | None = None
    val_accuracy: float | None = None
    train_seconds: float = 0.0  # the epoch's optimizer steps
    eval_seconds: float = 0.0  # the measurement after it


@dataclass
class History:
    """Per-epoch records of one training run.

    ``start_of`` names the loss (``train_loss`` or ``val_loss``) to measure once before the first
    step, in inference mode as the epochs measure it; ``start`` holds it: what "far above its
    start" compares with. None (the default) measures nothing extra.
    """

    records: list[EpochRecord] = field(default_factory=list)
    start_of: str | None = None
    start: dict[str, float] = field(default_factory=dict)

    def curve(self, name: str) -> list[float | None]:
        return [getattr(r, name) for r in self.records]


class _Split:
    """One split's rows as tensors, with a row-gather that keeps sparse inputs sparse."""

    def __init__(self, x: Features, y: np.ndarray) -> None:
        self.n = int(x.shape[0])
        self.sparse = not isinstance(x, np.ndarray)
        self.y = tf.constant(y)
        if not isinstance(x, np.ndarray):
            csr = x.tocsr()
            csr.sort_indices()
            self.n_features = int(csr.shape[1])
            splits = tf.constant(csr.indptr.astype(np.int64))
            self.cols = tf.RaggedTensor.from_row_splits(
                tf.constant(csr.indices.astype(np.int64)), splits, validate=False
            )
            self.vals = tf.RaggedTensor.from_row_splits(
                tf.constant(csr.data.astype(np.float32)), splits, validate=False
            )
        else:
            self.x = tf.constant(np.asarray(x, dtype=np.float32))

    def gather(self, rows: tf.Tensor) -> tuple[Any, tf.Tensor]:
        """The rows' features (sparse stays sparse, rows in order) and targets."""
        if not self.sparse:
            return tf.gather(self.x, rows), tf.gather(self.y, rows)
        cols = tf.gather(self.cols, rows)
        vals = tf.gather(self.vals, rows).flat_values
        # Each value's row in the batch, from the row splits in one kernel: through
        # RaggedTensor.value_rowids() these gathers took 38 ms of an IMDB epoch, now 25 ms.
        ragged_index = tf.raw_ops.RaggedTensorToSparse(
            rt_nested_splits=[cols.row_splits], rt_dense_values=cols.flat_values
        ).sparse_indices
        index = tf.stack([ragged_index[:, 0], cols.flat_values], axis=1)
        shape = tf.stack(
            [tf.shape(rows, out_type=tf.int64)[0], tf.constant(self.n_features, tf.int64)]
        )
        return tf.SparseTensor(index, vals, shape), tf.gather(self.y, rows)

    def batch_signature(self) -> tuple[tf.TypeSpec, tf.TypeSpec]:
        """Type specs of a batch of any size: one traced graph serves every batch."""
        y_spec = tf.TensorSpec([None, *self.y.shape[1:]], self.y.dtype)
        if self.sparse:
            return tf.SparseTensorSpec([None, self.n_features], tf.float32), y_spec
        return tf.TensorSpec([None, *self.x.shape[1:]], self.x.dtype), y_spec


class PreparedData:
    """A :class:`~search.data.Dataset` converted to tensors once, for every trial of a worker.

    Args:
        dataset: The study's data.
        use_shared_graphs: Train models of the searched family in the worker's shared graphs
            (:mod:`search.training.shared_graphs`); when false, every model trains with
            ``model.fit``.
    """

    def __init__(self, dataset: Dataset, *, use_shared_graphs: bool = True) -> None:
        self.dataset = dataset
        self.use_shared_graphs = use_shared_graphs
        self.splits: dict[str, _Split] = {}
        for name in ("train", "val", "test"):
            x, y = getattr(dataset, f"x_{name}"), getattr(dataset, f"y_{name}")
            if x is not None and y is not None and x.shape[0] > 0:
                self.splits[name] = _Split(x, y)
        self._eval_cache: dict[str, tuple[tuple[Any, Any], ...]] = {}
        self.shared_graphs = SharedGraphs(self)

    @property
    def n_train(self) -> int:
        return self.splits["train"].n

    def steps_per_epoch(self, batch_size: int, steps_per_epoch: int | None = None) -> int:
        """Optimizer steps in one epoch: the study's setting, else one pass over the rows."""
        return steps_per_epoch or math.ceil(self.n_train / batch_size)

    def train_dataset(self, batch_size: int, seed: int, *, shuffle: bool = True) -> tf.data.Dataset:
        """Endless training batches; full-batch data is one cached tensor repeated.

        Each pass over the rows is a fresh shuffle, or (``shuffle=False``) the rows in their
        stored order, cut into batches the same way (the last one short).
        """
        train = self.splits["train"]
        if batch_size >= train.n:
            whole = train.gather(tf.range(train.n, dtype=tf.int64))
            return tf.data.Dataset.from_tensors(whole).repeat()
        rows = tf.data.Dataset.range(train.n)
        if shuffle:
            rows = rows.shuffle(train.n, seed=seed, reshuffle_each_iteration=True)
        batches = rows.batch(batch_size).map(train.gather)
        return batches.repeat().prefetch(tf.data.AUTOTUNE)

    def eval_parts(self, split: str) -> tuple[tuple[Any, Any], ...]:
        """The split cut into evaluation parts of equal size, built once and kept.

        One part per core where the split has rows enough (a part has at most
        ``_EVAL_ROWS`` rows): one compiled call evaluates them all, and TensorFlow's inter-op
        threads run them in parallel, as the narrow sparse product alone is single-threaded (the
        IMDB validation pass took 7.0 ms in two sequential calls, 3.6 ms in one with halves).
        """
        if split not in self._eval_cache:
            data = self.splits[split]
            count = max(math.ceil(data.n / _EVAL_ROWS), min(_cores(), data.n // _MIN_PART_ROWS), 1)
            bounds = np.linspace(0, data.n, count + 1).astype(np.int64)
            self._eval_cache[split] = tuple(
                data.gather(tf.range(start, end, dtype=tf.int64))
                for start, end in zip(bounds[:-1], bounds[1:], strict=True)
            )
        return self._eval_cache[split]

    def fit(
        self,
        model: keras.Model,
        *,
        batch_size: int,
        epochs: int,
        steps_per_epoch: int | None = None,
        seed: int = 0,
        callbacks: Sequence[keras.callbacks.Callback] = (),
        on_epoch: Callable[[EpochRecord], None] | None = None,
        history: History | None = None,
        measure_train: bool = True,
        shuffle: bool = True,
    ) -> History:
        """Train ``model`` and evaluate it after every epoch.

        Args:
            model: A compiled model (see :func:`search.training.model.build_model`).
            batch_size: Rows per optimizer step; ``>= n_train`` trains full-batch.
            epochs: Epoch cap.
            steps_per_epoch: Optimizer steps per epoch; default one pass over the rows.
            seed: Seeds the batch order.
            callbacks: Extra Keras callbacks, run after the evaluation has written
                ``train_loss``/``val_loss`` (inference mode) into the epoch logs.
            on_epoch: Called with each epoch's record, before ``callbacks``.
            measure_train: Measure the training loss over the whole training set in inference
                mode after every epoch; when false, record Keras' running training data loss.
            history: Filled epoch by epoch (so a caller keeps the records of a run that a
                callback interrupts, e.g. a pruned trial); a new one by default.
            shuffle: Each epoch's batches from a fresh shuffle of the rows (Keras
                ``fit(shuffle=True)``); when false, from the rows in their stored order.

        Returns:
            The per-epoch records (shorter than ``epochs`` when a callback stopped training).
        """
        steps = self.steps_per_epoch(batch_size, steps_per_epoch)
        history = history if history is not None else History()
        plan = shared_graph_plan(model, self.dataset.task) if self.use_shared_graphs else None
        if plan is None:
            build_optimizer_slots(model)
            evaluator = EpochEvaluator(self, model, history, on_epoch, measure_train=measure_train)
            model.fit(
                self.train_dataset(batch_size, seed, shuffle=shuffle),
                epochs=epochs,
                steps_per_epoch=steps,
                callbacks=[evaluator, *callbacks],
                shuffle=False,
                verbose=0,
            )
            return history
        run = self.shared_graphs.start(plan, seed=seed)
        evaluator = EpochEvaluator(
            self, model, history, on_epoch, measure_train=measure_train, parts_stats=run.parts_stats
        )
        self._fit_shared(
            run, model, batch_size, epochs, steps, seed, [evaluator, *callbacks], shuffle=shuffle
        )
        return history

    def _fit_shared(
        self,
        run: TrialRun,
        model: keras.Model,
        batch_size: int,
        epochs: int,
        steps: int,
        seed: int,
        callbacks: list[keras.callbacks.Callback],
        *,
        shuffle: bool = True,
    ) -> None:
        """``model.fit``'s epoch loop and callback calls around the shared graphs' epochs."""
        callback_list = keras.callbacks.CallbackList(
            callbacks, model=model, epochs=epochs, steps=steps, verbose=0
        )
        model.stop_training = False
        callback_list.on_train_begin()
        for epoch in range(epochs):
            callback_list.on_epoch_begin(epoch)
            rows = epoch_rows(self.n_train, batch_size, steps, epoch * steps, seed, shuffle=shuffle)
            callback_list.on_epoch_end(epoch, run.train_epoch(*rows))
            if model.stop_training:
                break
        callback_list.on_train_end()

    def evaluate(self, model: keras.Model, split: str) -> tuple[float, float | None]:
        """Mean loss (no regularization penalty) and accuracy of ``model`` on a split."""
        return EpochEvaluator(self, model, History(), None).measure(split)


def steps_per_execution(steps_per_epoch: int, cap: int = _MAX_STEPS_PER_EXECUTION) -> int:
    """The largest divisor of ``steps_per_epoch`` up to ``cap``.

    Keras runs ``steps_per_execution`` steps per compiled call and overshoots an epoch that is not
    a multiple of it, so epochs stay exact only with a divisor.

    Example:
        >>> steps_per_execution(200), steps_per_execution(30), steps_per_execution(59)
        (100, 30, 59)
    """
    return max(d for d in range(1, min(cap, steps_per_epoch) + 1) if steps_per_epoch % d == 0)


PartsStats = Callable[[Sequence[tuple[Any, Any]]], tuple[tf.Tensor, tf.Tensor]]
"""Summed loss and hits over evaluation parts, ``(x, y)`` each, in one compiled call."""


def _cores() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class EpochEvaluator(keras.callbacks.Callback):
    """Keras callback: inference-mode loss on train and validation after each epoch.

    Writes ``train_loss``, ``val_loss`` (and accuracies) into the epoch ``logs`` so later callbacks,
    such as Optuna's pruning callback, read the same numbers the study stores.
    """

    def __init__(
        self,
        data: PreparedData,
        model: keras.Model,
        history: History,
        on_epoch: Callable[[EpochRecord], None] | None,
        *,
        measure_train: bool = True,
        parts_stats: PartsStats | None = None,
    ) -> None:
        super().__init__()
        self._measure_train = measure_train
        self._epoch_start = time.perf_counter()
        self._data = data
        self._history = history
        self._on_epoch = on_epoch
        task = data.dataset.task
        self._classify = task != "regression"
        self._parts_stats = parts_stats or _model_parts_stats(model, data, task)

    def measure(self, split: str) -> tuple[float, float | None]:
        n = self._data.splits[split].n
        loss_sum, hits = self._parts_stats(self._data.eval_parts(split))
        return float(loss_sum) / n, (float(hits) / n if self._classify else None)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        # The untrained model's loss, where asked (one pass over one split): a diverged run is
        # judged against it, since its first epoch may already be absurd.
        wanted = self._history.start_of
        split = {"train_loss": "train", "val_loss": "val"}.get(wanted or "")
        if split not in self._data.splits or self._history.records or self._history.start:
            return
        self._history.start[str(wanted)] = self.measure(split)[0]

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        eval_start = time.perf_counter()
        train_seconds = eval_start - self._epoch_start
        logs = logs if logs is not None else {}
        if self._measure_train:
            train_loss, train_acc = self.measure("train")
        else:
            train_loss, train_acc = float(logs["data_loss"]), logs.get("accuracy")
        val_loss = val_acc = None
        if "val" in self._data.splits:
            val_loss, val_acc = self.measure("val")
        train_acc = float(train_acc) if train_acc is not None else None
        eval_seconds = time.perf_counter() - eval_start
        record = EpochRecord(
            epoch, train_loss, val_loss, train_acc, val_acc, train_seconds, eval_seconds
        )
        self._history.records.append(record)
        logs.update({"train_loss": train_loss, "val_loss": val_loss})
        if train_acc is not None:
            logs.update({"train_accuracy": float(train_acc), "val_accuracy": val_acc})
        if self._on_epoch is not None:
            self._on_epoch(record)


def output_probabilities(model: keras.Model, task: Task) -> Callable[[Any], Any] | None:
    """The activation that turns ``model``'s outputs into probabilities, where it emits logits.

    A model compiled with a cross-entropy ``from_logits=True`` (a KerasTuner habit: a plain
    ``Dense`` output) is scored, as every trial is, by the task's loss on probabilities: its
    outputs pass through a sigmoid (binary) or softmax (multiclass) first.

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> model.compile(loss=keras.losses.BinaryCrossentropy(from_logits=True))
        >>> output_probabilities(model, "binary").__name__
        'sigmoid'
        >>> model.compile(loss="binary_crossentropy")
        >>> output_probabilities(model, "binary") is None
        True
    """
    loss = getattr(model, "loss", None)
    get_config = getattr(loss, "get_config", None)
    if task == "regression" or get_config is None:
        return None
    try:
        logits = bool(get_config().get("from_logits"))
    except Exception:  # a user's own Loss whose config cannot be read: taken as probabilities
        return None
    if not logits:
        return None
    return keras.activations.sigmoid if task == "binary" else keras.activations.softmax


def _model_parts_stats(model: keras.Model, data: PreparedData, task: Task) -> PartsStats:
    batch = data.splits["train"].batch_signature()
    compiled: dict[int, Any] = {}
    to_probabilities = output_probabilities(model, task)

    def predict(x: Any) -> Any:
        out = model(x, training=False)
        return out if to_probabilities is None else to_probabilities(out)

    def stats(parts: tuple[tuple[Any, Any], ...]) -> tuple[tf.Tensor, tf.Tensor]:
        return summed_loss_and_hits(task, parts, predict)  # type: ignore[no-any-return]

    def parts_stats(parts: Sequence[tuple[Any, Any]]) -> tuple[tf.Tensor, tf.Tensor]:
        # Traced once per model and number of parts, for parts of any size.
        if len(parts) not in compiled:
            signature = [tuple([batch] * len(parts))]
            compiled[len(parts)] = tf.function(stats, input_signature=signature)
        return compiled[len(parts)](tuple(parts))  # type: ignore[no-any-return]

    return parts_stats


def prepare_data(spec: StudySpec, options: DataOptions | None = None) -> PreparedData:
    """Load a study's data set (from cache when possible) and turn it into tensors once."""
    context = data_context(spec.path.parent, options)
    return PreparedData(load_dataset(spec.data.source, spec.data.options, context))


def train_and_validation(dataset: Dataset) -> Dataset:
    """The dataset with its validation rows moved into the training split (``refit``).

    The test split is kept; the result has no validation split.
    """
    import dataclasses

    if dataset.x_val is None or dataset.y_val is None:
        return dataset
    if dataset.is_sparse:
        import scipy.sparse

        x = scipy.sparse.vstack([dataset.x_train, dataset.x_val]).tocsr()
    else:
        x = np.concatenate([dataset.x_train, dataset.x_val])
    y = np.concatenate([dataset.y_train, dataset.y_val])
    return dataclasses.replace(dataset, x_train=x, y_train=y, x_val=None, y_val=None)


def fold_assignment(y: np.ndarray, folds: int, *, stratified: bool, seed: int = 0) -> np.ndarray:
    """Each row's fold: a seeded shuffle, then rows dealt out in turn (per class if stratified).

    Example:
        >>> fold_assignment(np.array([0, 0, 0, 1, 1, 1]), 3, stratified=True).tolist()
        [1, 2, 0, 2, 1, 0]
    """
    rng = np.random.default_rng(seed)
    out = np.empty(len(y), dtype=np.int64)
    labels = np.asarray(y).reshape(len(y), -1)[:, 0] if stratified else np.zeros(len(y))
    start = 0
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        out[rows] = (np.arange(len(rows)) + start) % folds
        start += len(rows)
    return out


def fold_datasets(dataset: Dataset, folds: int, *, seed: int = 0) -> list[Dataset]:
    """k-fold cross-validation of the training and validation rows together.

    Fold ``i`` validates on the rows dealt to fold ``i`` and trains on the others; the test
    split is kept untouched. Classification tasks are stratified (each fold keeps the class
    shares).
    """
    import dataclasses

    pool = train_and_validation(dataset)
    fold = fold_assignment(pool.y_train, folds, stratified=pool.task != "regression", seed=seed)
    out = []
    for i in range(folds):
        train, val = np.flatnonzero(fold != i), np.flatnonzero(fold == i)
        out.append(
            dataclasses.replace(
                pool,
                x_train=pool.x_train[train],
                y_train=pool.y_train[train],
                x_val=pool.x_train[val],
                y_val=pool.y_train[val],
            )
        )
    return out
