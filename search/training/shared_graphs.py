"""Training graphs traced once per worker and shared by every trial with the same layer structure.

``model.fit`` traces a new train step for every new model: on IMDB that is 0.5-1 s per trial,
as long as ten epochs of a small model. A trial of the searched family (a Dense stack, see
:func:`search.training.model.build_model`) differs from the next only in numbers: widths, dropout
rates,
L2 strengths and the learning rate. :class:`SharedGraphs` therefore traces its graphs with the
weights, optimizer slots and those numbers as *arguments* of unknown width, once per
:class:`GraphKey` (activations, loss, optimizer, sparse or dense input), and every later trial
of that structure runs them at once. What else would change the graph is chosen inside it at run
time: the sparse product (COO or CSR, by the first kernel's width) and whether an L2 penalty is
computed at all, so a search of the IMDB space traces six structures, not 24.

The mathematics is Keras': the model's own initial weights, its activations and loss functions,
the penalty ``l2 * sum(kernel ** 2)`` of ``keras.regularizers.L2`` and the update rules of
``keras.optimizers.RMSprop``, ``Adam`` and ``SGD`` (tested step for step against ``fit``).
One epoch, all its optimizer steps, is one compiled call; the weights are written back into the
Keras model after each epoch, so callbacks, predictions and saving see the trained model.
Dropout masks come from stateless random ops seeded by the trial's seed, the layer and the step
(the same seed gives the same run; the masks are not those ``fit`` would draw). Each training run
starts with fresh optimizer slots, as a new model's first ``fit`` does; the Keras optimizer's own
slots are left untouched.

Models outside that family (hypermodels, other layers or optimizer options, mixed precision)
train with ``model.fit``: :func:`shared_graph_plan` returns ``None`` for them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from search.training.model import count_hits, loss_name, summed_loss_and_hits
from search.training.sparse_dense import SparseInputDense, sparse_matmul
from search.training.update_rules import UPDATE_RULES, Step, slot_count

if TYPE_CHECKING:
    from search.data import Task
    from search.training.prepared import PreparedData

_Tensors = list[tf.Tensor]


@dataclass(frozen=True)
class GraphKey:
    """What a traced graph depends on; everything else about a trial is an argument."""

    activations: tuple[str, ...]  # one per Dense layer, the output layer last
    loss: str
    task: Task
    sparse: bool  # the first layer multiplies a tf.SparseTensor (COO or CSR product by width)
    optimizer: str  # "rmsprop", "adam" or "sgd"
    optimizer_constants: tuple[float, ...]  # rho/epsilon, beta_1/beta_2/epsilon: Python floats


@dataclass
class GraphPlan:
    """One model's trial in the shared graphs: its key and its numbers."""

    key: GraphKey
    kernels: list[keras.Variable]
    biases: list[keras.Variable]
    dropout_rates: list[float]  # after each Dense layer (0 after the output layer)
    l2: list[float]  # per kernel
    learning_rate: float

    @property
    def variables(self) -> list[keras.Variable]:
        return [v for pair in zip(self.kernels, self.biases, strict=True) for v in pair]


def shared_graph_plan(model: keras.Model, task: Task) -> GraphPlan | None:
    """How ``model`` trains in the shared graphs, or ``None`` if it must use ``model.fit``.

    ``model`` qualifies when it is a compiled chain of ``Dense`` layers (the first may be a
    :class:`~search.training.sparse_dense.SparseInputDense`), each hidden one optionally followed
    by a
    ``Dropout``, in float32, trained by plain RMSprop, Adam or SGD on the task's loss.
    """
    optimizer = model.optimizer
    if optimizer is None or model.dtype_policy.name != "float32" or model.loss != loss_name(task):
        return None
    optimizer_name, constants = _optimizer_constants(optimizer)
    if optimizer_name is None or len(model.inputs) != 1 or len(model.outputs) != 1:
        return None
    # With one input, one output and only one-input layers, the layers form a chain, in order.
    dense: list[keras.layers.Dense] = []
    rates: list[float] = []  # the dropout rate after each Dense layer
    for layer in model.layers:
        if type(layer) is keras.layers.InputLayer:
            continue
        if type(layer) in (keras.layers.Dense, SparseInputDense) and layer.use_bias:
            dense.append(layer)
            rates.append(0.0)
        elif type(layer) is keras.layers.Dropout and dense and not rates[-1]:
            if layer.noise_shape is not None:
                return None
            rates[-1] = float(layer.rate)
        else:
            return None
    if not dense or rates[-1]:  # dropout after the output layer
        return None
    l2 = [_l2_strength(layer) for layer in dense]
    if None in l2 or any(
        layer.activity_regularizer is not None or layer.bias_regularizer is not None
        for layer in dense
    ):
        return None
    sparse = bool(getattr(model.inputs[0], "sparse", False))
    if sparse and type(dense[0]) is not SparseInputDense:
        return None
    activations = tuple(keras.activations.serialize(layer.activation) for layer in dense)
    if not all(isinstance(name, str) for name in activations):
        return None  # a custom activation: no name to key the graph on
    key = GraphKey(
        activations=activations,
        loss=loss_name(task),
        task=task,
        sparse=sparse,
        optimizer=optimizer_name,
        optimizer_constants=constants,
    )
    return GraphPlan(
        key=key,
        kernels=[layer.kernel for layer in dense],
        biases=[layer.bias for layer in dense],
        dropout_rates=rates,
        l2=[float(value or 0.0) for value in l2],
        learning_rate=float(optimizer.learning_rate.numpy()),
    )


def _l2_strength(layer: keras.layers.Dense) -> float | None:
    regularizer = layer.kernel_regularizer
    if regularizer is None:
        return 0.0
    if type(regularizer) is keras.regularizers.L2:
        return float(regularizer.l2)
    return None


def _optimizer_constants(optimizer: keras.optimizers.Optimizer) -> tuple[str | None, tuple]:
    """The optimizer's name here and its constants, or ``None`` for options not reproduced."""
    options = (
        optimizer.clipnorm,
        optimizer.clipvalue,
        optimizer.global_clipnorm,
        optimizer.weight_decay,
        optimizer.gradient_accumulation_steps,
    )
    if any(options) or optimizer.use_ema or optimizer.loss_scale_factor:
        return None, ()
    if not isinstance(optimizer.learning_rate, keras.Variable):
        return None, ()  # a schedule: the rate changes per step
    kind = type(optimizer)
    if kind is keras.optimizers.RMSprop and not optimizer.centered and not optimizer.momentum:
        return "rmsprop", (float(optimizer.rho), float(optimizer.epsilon))
    if kind is keras.optimizers.Adam and not optimizer.amsgrad:
        return "adam", (
            float(optimizer.beta_1),
            float(optimizer.beta_2),
            float(optimizer.epsilon),
        )
    if kind is keras.optimizers.SGD and not optimizer.momentum:
        return "sgd", ()
    return None, ()


class SharedGraphs:
    """Per-worker cache of compiled train-epoch and evaluation graphs, keyed by :class:`GraphKey`.

    Args:
        data: The worker's prepared data; its tensors are captured by the graphs.
    """

    def __init__(self, data: PreparedData) -> None:
        self._data = data
        self._train: dict[GraphKey, Any] = {}
        self._eval: dict[tuple[GraphKey, int], Any] = {}

    def __len__(self) -> int:
        return len(self._train) + len(self._eval)

    def start(self, plan: GraphPlan, *, seed: int) -> TrialRun:
        """The state of one trial about to train: the model's weights and fresh slots."""
        return TrialRun(self, plan, seed)

    def train_graph(self, key: GraphKey) -> Any:
        if key not in self._train:
            self._train[key] = self._trace_train(key)
        return self._train[key]

    def eval_graph(self, key: GraphKey, parts: int) -> Any:
        """The evaluation graph of ``key``'s layer structure for ``parts`` evaluation parts."""
        eval_key = (_forward_key(key), parts)
        if eval_key not in self._eval:
            self._eval[eval_key] = self._trace_eval(*eval_key)
        return self._eval[eval_key]

    def _trace_train(self, key: GraphKey) -> Any:
        train = self._data.splits["train"]
        n_layers = len(key.activations)
        weights_spec = _weights_spec(key, train, n_layers)
        slots_spec = [weights_spec] * slot_count(key.optimizer)
        row_spec = tf.TensorSpec([None], tf.int64)
        scalar = tf.TensorSpec([], tf.float32)
        forward = _forward(key)
        per_sample = keras.losses.get(key.loss)
        update = UPDATE_RULES[key.optimizer]

        # No AutoGraph: these graphs write their control flow out (tf.while_loop, tf.cond), and
        # converting them took 0.5-1 s of each structure's first trace on IMDB.
        @tf.function(
            autograph=False,
            input_signature=[
                weights_spec,
                slots_spec,
                tf.TensorSpec([], tf.int64),  # optimizer steps so far
                scalar,  # learning rate
                tf.TensorSpec([n_layers], tf.float32),  # dropout rate after each layer
                tf.TensorSpec([n_layers], tf.float32),  # L2 strength of each kernel
                row_spec,  # the epoch's row stream
                row_spec,  # where each step's batch starts in it
                row_spec,  # and ends
                tf.TensorSpec([], tf.int64),  # seed
            ],
        )
        def train_epoch(
            weights: _Tensors,
            slots: list[_Tensors],
            iterations: tf.Tensor,
            learning_rate: tf.Tensor,
            rates: tf.Tensor,
            l2: tf.Tensor,
            rows: tf.Tensor,
            starts: tf.Tensor,
            ends: tf.Tensor,
            seed: tf.Tensor,
        ) -> tuple[Any, ...]:
            def step(
                i: tf.Tensor, weights: _Tensors, slots: list[_Tensors], sums: _Tensors
            ) -> tuple[Any, ...]:
                x, y = train.gather(rows[starts[i] : ends[i]])
                step_seed = tf.stack([seed, iterations + tf.cast(i, tf.int64)])
                with tf.GradientTape() as tape:
                    tape.watch(weights)
                    pred = forward(weights, x, rates, step_seed)
                    losses = per_sample(y, pred)
                    data_loss = tf.reduce_mean(losses)
                grads = tape.gradient(data_loss, weights)
                loss, grads = tf.cond(
                    penalized,
                    lambda: _with_l2_penalty(data_loss, grads, weights, l2),
                    lambda: (data_loss, grads),
                )
                number = tf.cast(iterations + tf.cast(i, tf.int64) + 1, tf.float32)
                step_info = Step(learning_rate, number, key.optimizer_constants)
                weights, slots = update(weights, grads, slots, step_info)
                count = tf.cast(tf.shape(losses)[0], tf.float64)
                batch = [
                    tf.cast(loss, tf.float64) * count,
                    tf.reduce_sum(tf.cast(losses, tf.float64)),
                    count_hits(key.task, y, pred),
                    count,
                ]
                return i + 1, weights, slots, [a + b for a, b in zip(sums, batch, strict=True)]

            # Chosen at run time, so models with and without L2 share the graph; the penalty's
            # reductions are skipped when no kernel has one.
            penalized = tf.reduce_any(l2 > 0)
            zero = tf.constant(0.0, tf.float64)
            n_steps = tf.shape(starts)[0]
            _, weights, slots, sums = tf.while_loop(
                lambda i, *_: i < n_steps,
                step,
                (tf.constant(0), weights, slots, [zero, zero, zero, zero]),
            )
            return weights, slots, sums

        return train_epoch

    def _trace_eval(self, key: GraphKey, parts: int) -> Any:
        train = self._data.splits["train"]
        forward = _forward(key)
        parts_spec = tuple([train.batch_signature()] * parts)

        @tf.function(
            autograph=False,  # as in _trace_train
            input_signature=[_weights_spec(key, train, len(key.activations)), parts_spec],
        )
        def parts_stats(
            weights: _Tensors, parts: tuple[tuple[Any, tf.Tensor], ...]
        ) -> tuple[tf.Tensor, tf.Tensor]:
            return summed_loss_and_hits(key.task, parts, lambda x: forward(weights, x, None, None))

        return parts_stats


class TrialRun:
    """One trial's weights and optimizer state between the compiled epochs."""

    def __init__(self, graphs: SharedGraphs, plan: GraphPlan, seed: int) -> None:
        self._graphs = graphs
        self._plan = plan
        self._seed = tf.constant(seed, tf.int64)
        self.weights: _Tensors = [tf.convert_to_tensor(v.value) for v in plan.variables]
        self._slots = [
            [tf.zeros_like(w) for w in self.weights] for _ in range(slot_count(plan.key.optimizer))
        ]
        self._iterations = tf.constant(0, tf.int64)
        self._learning_rate = tf.constant(plan.learning_rate, tf.float32)
        self._rates = tf.constant(plan.dropout_rates, tf.float32)
        self._l2 = tf.constant(plan.l2, tf.float32)

    def train_epoch(
        self, rows: np.ndarray, starts: np.ndarray, ends: np.ndarray
    ) -> dict[str, float]:
        """Run one epoch's optimizer steps; returns Keras' running epoch logs."""
        graph = self._graphs.train_graph(self._plan.key)
        self.weights, self._slots, sums = graph(
            self.weights,
            self._slots,
            self._iterations,
            self._learning_rate,
            self._rates,
            self._l2,
            tf.constant(rows, tf.int64),
            tf.constant(starts, tf.int64),
            tf.constant(ends, tf.int64),
            self._seed,
        )
        self._iterations += len(starts)
        for variable, value in zip(self._plan.variables, self.weights, strict=True):
            variable.assign(value)
        loss, data_loss, hits, count = (float(s) for s in sums)
        logs = {"loss": loss / count, "data_loss": data_loss / count}
        if self._plan.key.task != "regression":
            logs["accuracy"] = hits / count
        return logs

    def parts_stats(self, parts: Sequence[tuple[Any, Any]]) -> tuple[tf.Tensor, tf.Tensor]:
        """Summed loss and hits over evaluation parts under the current weights (inference)."""
        graph = self._graphs.eval_graph(self._plan.key, len(parts))
        return graph(self.weights, tuple(parts))  # type: ignore[no-any-return]


def epoch_rows(
    n: int, batch_size: int, steps: int, first_step: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of ``steps`` batches from step ``first_step`` of a stream of shuffled passes.

    Each pass over the ``n`` rows is a fresh permutation (seeded by ``seed`` and the pass)
    cut into ``ceil(n / batch_size)`` batches, the last one short, as ``tf.data``'s
    ``shuffle(...).batch(...).repeat()`` does. A batch of ``n`` or more rows is the whole set,
    in order. Returns the rows and each batch's start and end in them.

    Example:
        >>> rows, starts, ends = epoch_rows(5, 2, 3, 0, seed=0)
        >>> sorted(rows.tolist()), starts.tolist(), ends.tolist()
        ([0, 1, 2, 3, 4], [0, 2, 4], [2, 4, 5])
    """
    if batch_size >= n:
        return np.arange(n), np.zeros(steps, np.int64), np.full(steps, n, np.int64)
    per_pass = math.ceil(n / batch_size)
    first_pass, last_pass = first_step // per_pass, (first_step + steps - 1) // per_pass
    passes = [
        np.random.default_rng([seed, p]).permutation(n) for p in range(first_pass, last_pass + 1)
    ]
    rows = np.concatenate(passes)
    offset = first_pass * per_pass
    index = np.arange(first_step, first_step + steps) - offset
    pass_of, batch_of = index // per_pass, index % per_pass
    starts = pass_of * n + batch_of * batch_size
    ends = pass_of * n + np.minimum((batch_of + 1) * batch_size, n)
    return rows, starts.astype(np.int64), ends.astype(np.int64)


# -- graph pieces ----------------------------------------------------------------------------


def _forward_key(key: GraphKey) -> GraphKey:
    """The part of a key the inference pass depends on."""
    return dataclasses.replace(key, optimizer="", optimizer_constants=())


def _weights_spec(key: GraphKey, train: Any, n_layers: int) -> list[tf.TensorSpec]:
    first_rows = train.n_features if train.sparse else int(train.x.shape[1])
    specs: list[tf.TensorSpec] = []
    for layer in range(n_layers):
        specs.append(tf.TensorSpec([first_rows if layer == 0 else None, None], tf.float32))
        specs.append(tf.TensorSpec([None], tf.float32))
    return specs


def _forward(key: GraphKey) -> Callable[..., tf.Tensor]:
    activations = [keras.activations.get(name) for name in key.activations]

    def forward(
        weights: Sequence[tf.Tensor], x: Any, rates: tf.Tensor | None, seed: tf.Tensor | None
    ) -> tf.Tensor:
        h = x
        for layer, activation in enumerate(activations):
            kernel, bias = weights[2 * layer], weights[2 * layer + 1]
            # A sparse input's product (COO or CSR) is picked by the kernel's width at run time.
            h = sparse_matmul(h, kernel) if layer == 0 and key.sparse else tf.matmul(h, kernel)
            h = activation(tf.nn.bias_add(h, bias))
            if rates is not None and seed is not None:  # training: dropout after the layer
                h = _dropout(h, rates[layer], tf.random.experimental.stateless_fold_in(seed, layer))
        return h

    return forward


def _with_l2_penalty(
    data_loss: tf.Tensor, grads: _Tensors, weights: _Tensors, l2: tf.Tensor
) -> tuple[tf.Tensor, _Tensors]:
    # Keras' L2 penalty, l2 * sum(w^2), and its gradient, 2 * l2 * w, written out: through the
    # tape they added 24 ms to a 70 ms IMDB epoch, now 3-6 ms.
    grads = list(grads)
    penalty = []
    for k in range(len(grads) // 2):
        kernel = weights[2 * k]
        penalty.append(2.0 * l2[k] * tf.nn.l2_loss(kernel))
        grads[2 * k] = grads[2 * k] + (2.0 * l2[k]) * kernel
    return data_loss + tf.add_n(penalty), grads


def _dropout(h: tf.Tensor, rate: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    # Keras' Dropout (inverted: kept units scaled by 1 / (1 - rate)); skipped when rate is 0.
    return tf.cond(
        rate > 0,
        lambda: tf.nn.experimental.stateless_dropout(h, rate=rate, seed=seed),
        lambda: h,
    )
