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
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from search.training.model import count_hits, loss_name, summed_loss_and_hits
from search.training.session import request_release
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
    loss: str  # the loss trained on (the compared one, loss_name(task), is measured)
    task: Task
    sparse: bool  # the first layer multiplies a tf.SparseTensor (COO or CSR product by width)
    optimizer: str  # "rmsprop", "adam", "sgd" or "sgd_momentum"
    optimizer_constants: tuple[float, ...]  # rho/epsilon, beta_1/beta_2/epsilon: Python floats
    norms: tuple[str, ...] = ()  # per Dense layer: "", or batch normalization "after"/"before"
    norm_constants: tuple[float, ...] = ()  # BatchNormalization's momentum and epsilon
    schedule: str = "constant"  # or "cosine", "exponential": computed from the step


@dataclass
class GraphPlan:
    """One model's trial in the shared graphs: its key and its numbers."""

    key: GraphKey
    kernels: list[keras.Variable]
    biases: list[keras.Variable]
    dropout_rates: list[float]  # after each Dense layer (0 after the output layer)
    l2: list[float]  # per kernel
    learning_rate: float
    l1: list[float] = dataclasses.field(default_factory=list)  # per kernel
    norm_layers: list[keras.layers.BatchNormalization | None] = dataclasses.field(
        default_factory=list
    )  # per Dense layer
    # weight decay, SGD momentum, the schedule's decay steps and rate
    options: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)

    @property
    def variables(self) -> list[keras.Variable]:
        """The trainable weights in the graphs' order: kernel, bias (gamma, beta) per layer."""
        out: list[keras.Variable] = []
        norms = self.norm_layers or [None] * len(self.kernels)
        for kernel, bias, norm in zip(self.kernels, self.biases, norms, strict=True):
            out += [kernel, bias]
            if norm is not None:
                out += [norm.gamma, norm.beta]
        return out

    @property
    def statistics(self) -> list[keras.Variable]:
        """Batch normalization's moving mean and variance, per normalized layer."""
        return [
            v for n in self.norm_layers if n is not None for v in (n.moving_mean, n.moving_variance)
        ]


def shared_graph_plan(model: keras.Model, task: Task) -> GraphPlan | None:
    """How ``model`` trains in the shared graphs, or ``None`` if it must use ``model.fit``.

    ``model`` qualifies when it is a compiled chain of ``Dense`` layers (the first may be a
    :class:`~search.training.sparse_dense.SparseInputDense`), each hidden one optionally followed
    by a plain ``BatchNormalization`` (with an ``Activation`` after it when the Dense layer has
    none) and a ``Dropout``, in float32, with L1/L2 kernel penalties, trained by plain RMSprop,
    Adam or SGD (momentum, Nesterov), with or without weight decay and a cosine or exponential
    schedule, on MSE, MAE, Huber or the task's cross-entropy.
    """
    optimizer = model.optimizer
    if optimizer is None or model.dtype_policy.name != "float32":
        return None
    if model.loss not in _TRAINED_LOSSES.get(task, ()):
        return None
    optimizer_name, constants = _optimizer_constants(optimizer)
    schedule = _schedule(optimizer)
    if optimizer_name is None or schedule is None:
        return None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        return None
    # With one input, one output and only one-input layers, the layers form a chain, in order.
    dense: list[keras.layers.Dense] = []
    rates: list[float] = []  # the dropout rate after each Dense layer
    norms: list[str] = []
    norm_layers: list[keras.layers.BatchNormalization | None] = []
    activations: list[Any] = []
    for layer in model.layers:
        kind = type(layer)
        if kind is keras.layers.InputLayer:
            continue
        if kind in (keras.layers.Dense, SparseInputDense) and layer.use_bias:
            dense.append(layer)
            rates.append(0.0)
            norms.append("")
            norm_layers.append(None)
            activations.append(keras.activations.serialize(layer.activation))
        elif kind is keras.layers.BatchNormalization and dense and not norms[-1] and not rates[-1]:
            if not _plain_batch_norm(layer):
                return None
            norms[-1], norm_layers[-1] = "after", layer
        elif (
            kind is keras.layers.Activation
            and norms
            and norms[-1] == "after"
            and activations[-1] == "linear"
            and not rates[-1]
        ):
            norms[-1] = "before"
            activations[-1] = keras.activations.serialize(layer.activation)
        elif kind is keras.layers.Dropout and dense and not rates[-1]:
            if layer.noise_shape is not None:
                return None
            rates[-1] = float(layer.rate)
        else:
            return None
    if not dense or rates[-1] or norms[-1]:  # dropout or normalization after the output layer
        return None
    strengths = [_penalty_strengths(layer) for layer in dense]
    if None in strengths or any(
        layer.activity_regularizer is not None or layer.bias_regularizer is not None
        for layer in dense
    ):
        return None
    sparse = bool(getattr(model.inputs[0], "sparse", False))
    if sparse and type(dense[0]) is not SparseInputDense:
        return None
    if not all(isinstance(name, str) for name in activations):
        return None  # a custom activation: no name to key the graph on
    first_norm = next((n for n in norm_layers if n is not None), None)
    key = GraphKey(
        activations=tuple(activations),
        loss=str(model.loss),
        task=task,
        sparse=sparse,
        optimizer=optimizer_name,
        optimizer_constants=constants,
        norms=tuple(norms),
        norm_constants=()
        if first_norm is None
        else (float(first_norm.momentum), float(first_norm.epsilon)),
        schedule=schedule[0],
    )
    if first_norm is not None and any(
        (float(n.momentum), float(n.epsilon)) != key.norm_constants
        for n in norm_layers
        if n is not None
    ):
        return None
    momentum = float(getattr(optimizer, "momentum", 0.0) or 0.0)
    return GraphPlan(
        key=key,
        kernels=[layer.kernel for layer in dense],
        biases=[layer.bias for layer in dense],
        dropout_rates=rates,
        l2=[pair[1] for pair in strengths if pair is not None],
        l1=[pair[0] for pair in strengths if pair is not None],
        learning_rate=schedule[1],
        norm_layers=norm_layers,
        options=(float(optimizer.weight_decay or 0.0), momentum, schedule[2], schedule[3]),
    )


_TRAINED_LOSSES: dict[str, tuple[str, ...]] = {
    "regression": ("mean_squared_error", "mean_absolute_error", "huber"),
    "binary": ("binary_crossentropy",),
    "multiclass": ("sparse_categorical_crossentropy",),
}


def _plain_batch_norm(layer: keras.layers.BatchNormalization) -> bool:
    """Keras' defaults but momentum and epsilon: last axis, centred, scaled, no renorm."""
    extras = (
        layer.beta_regularizer,
        layer.gamma_regularizer,
        layer.beta_constraint,
        layer.gamma_constraint,
    )
    return (
        layer.axis in (-1, 1)
        and layer.center
        and layer.scale
        and not layer.renorm
        and not layer.synchronized
        and layer.trainable
        and all(extra is None for extra in extras)
    )


def _penalty_strengths(layer: keras.layers.Dense) -> tuple[float, float] | None:
    """The kernel's (L1, L2) strengths, or ``None`` for a regularizer not reproduced."""
    regularizer = layer.kernel_regularizer
    if regularizer is None:
        return 0.0, 0.0
    if type(regularizer) is keras.regularizers.L2:
        return 0.0, float(regularizer.l2)
    if type(regularizer) is keras.regularizers.L1:
        return float(regularizer.l1), 0.0
    if type(regularizer) is keras.regularizers.L1L2:
        return float(regularizer.l1), float(regularizer.l2)
    return None


def _schedule(optimizer: keras.optimizers.Optimizer) -> tuple[str, float, float, float] | None:
    """(kind, initial rate, decay steps, decay rate) of the optimizer's learning rate.

    Read from the optimizer's public config; ``None`` for a schedule the graphs do not compute.
    """
    rate = optimizer.get_config()["learning_rate"]
    if isinstance(rate, (int, float)):
        return "constant", float(rate), 1.0, 1.0
    if not isinstance(rate, dict):
        return None
    name, config = rate.get("class_name"), rate.get("config", {})
    if name == "CosineDecay" and not config.get("alpha") and config.get("warmup_target") is None:
        return "cosine", float(config["initial_learning_rate"]), float(config["decay_steps"]), 1.0
    if name == "ExponentialDecay" and not config.get("staircase"):
        return (
            "exponential",
            float(config["initial_learning_rate"]),
            float(config["decay_steps"]),
            float(config["decay_rate"]),
        )
    return None


def _optimizer_constants(optimizer: keras.optimizers.Optimizer) -> tuple[str | None, tuple]:
    """The optimizer's name here and its constants, or ``None`` for options not reproduced."""
    options = (
        optimizer.clipnorm,
        optimizer.clipvalue,
        optimizer.global_clipnorm,
        optimizer.gradient_accumulation_steps,
    )
    if any(options) or optimizer.use_ema or optimizer.loss_scale_factor:
        return None, ()
    kind = type(optimizer)
    if kind is keras.optimizers.RMSprop and not optimizer.centered and not optimizer.momentum:
        return "rmsprop", (float(optimizer.rho), float(optimizer.epsilon))
    if kind in (keras.optimizers.Adam, keras.optimizers.AdamW) and not optimizer.amsgrad:
        return "adam", (
            float(optimizer.beta_1),
            float(optimizer.beta_2),
            float(optimizer.epsilon),
        )
    if kind is keras.optimizers.SGD:
        if not optimizer.momentum:
            return "sgd", ()
        return "sgd_momentum", (float(bool(optimizer.nesterov)),)
    return None, ()


class SharedGraphs:
    """Per-worker cache of compiled train-epoch and evaluation graphs, keyed by :class:`GraphKey`.

    The cache keeps the ``max_structures`` structures used last (least recently used goes
    first): a search over depths 1 to 30 would otherwise keep every depth's traced graphs, and
    their memory, to the end of the worker.

    Args:
        data: The worker's prepared data; its tensors are captured by the graphs.
        max_structures: Train-epoch graphs kept (as many evaluation graphs again, at most).
    """

    def __init__(self, data: PreparedData, max_structures: int = 12) -> None:
        self._data = data
        self._max = max_structures
        self._train: OrderedDict[GraphKey, Any] = OrderedDict()
        self._eval: OrderedDict[tuple[GraphKey, int], Any] = OrderedDict()
        self.traced = 0  # train-epoch graphs traced in all, evicted ones included

    def __len__(self) -> int:
        return len(self._train) + len(self._eval)

    def start(self, plan: GraphPlan, *, seed: int) -> TrialRun:
        """The state of one trial about to train: the model's weights and fresh slots."""
        return TrialRun(self, plan, seed)

    def train_graph(self, key: GraphKey) -> Any:
        if key not in self._train:
            self._train[key] = self._trace_train(key)
            self.traced += 1
        self._train.move_to_end(key)
        self._bound(self._train)
        return self._train[key]

    def eval_graph(self, key: GraphKey, parts: int) -> Any:
        """The evaluation graph of ``key``'s layer structure for ``parts`` evaluation parts."""
        eval_key = (_forward_key(key), parts)
        if eval_key not in self._eval:
            self._eval[eval_key] = self._trace_eval(*eval_key)
        self._eval.move_to_end(eval_key)
        self._bound(self._eval)
        return self._eval[eval_key]

    def _bound(self, cache: OrderedDict[Any, Any]) -> None:
        """Drop the least recently used graphs beyond the bound; the next session clear frees
        them (see :func:`search.training.session.request_release`)."""
        if len(cache) <= self._max:
            return
        while len(cache) > self._max // 2:  # half at once: one release per several new ones
            cache.popitem(last=False)
        request_release()

    def _trace_train(self, key: GraphKey) -> Any:
        train = self._data.splits["train"]
        n_layers = len(key.activations)
        weights_spec = _weights_spec(key, train)
        slots_spec = [weights_spec] * slot_count(key.optimizer)
        row_spec = tf.TensorSpec([None], tf.int64)
        scalar = tf.TensorSpec([], tf.float32)
        forward = _forward(key)
        per_sample = keras.losses.get(key.loss)
        measured = keras.losses.get(loss_name(key.task))  # the running data_loss, as Keras logs it
        update = UPDATE_RULES[key.optimizer]

        # No AutoGraph: these graphs write their control flow out (tf.while_loop, tf.cond), and
        # converting them took 0.5-1 s of each structure's first trace on IMDB.
        @tf.function(
            autograph=False,
            input_signature=[
                weights_spec,
                slots_spec,
                _stats_spec(key),  # batch normalization's moving statistics
                tf.TensorSpec([], tf.int64),  # optimizer steps so far
                scalar,  # learning rate (the schedule's initial one)
                tf.TensorSpec([n_layers], tf.float32),  # dropout rate after each layer
                tf.TensorSpec([n_layers], tf.float32),  # L1 strength of each kernel
                tf.TensorSpec([n_layers], tf.float32),  # L2 strength of each kernel
                tf.TensorSpec([4], tf.float32),  # weight decay, momentum, decay steps and rate
                row_spec,  # the epoch's row stream
                row_spec,  # where each step's batch starts in it
                row_spec,  # and ends
                tf.TensorSpec([], tf.int64),  # seed
            ],
        )
        def train_epoch(
            weights: _Tensors,
            slots: list[_Tensors],
            stats: _Tensors,
            iterations: tf.Tensor,
            learning_rate: tf.Tensor,
            rates: tf.Tensor,
            l1: tf.Tensor,
            l2: tf.Tensor,
            options: tf.Tensor,
            rows: tf.Tensor,
            starts: tf.Tensor,
            ends: tf.Tensor,
            seed: tf.Tensor,
        ) -> tuple[Any, ...]:
            weight_decay, momentum = options[0], options[1]

            def step(
                i: tf.Tensor,
                weights: _Tensors,
                slots: list[_Tensors],
                stats: _Tensors,
                sums: _Tensors,
            ) -> tuple[Any, ...]:
                x, y = train.gather(rows[starts[i] : ends[i]])
                done = iterations + tf.cast(i, tf.int64)  # the optimizer's iterations
                step_seed = tf.stack([seed, done])
                with tf.GradientTape() as tape:
                    tape.watch(weights)
                    pred, new_stats = forward(weights, x, rates, step_seed, stats)
                    losses = per_sample(y, pred)
                    data_loss = tf.reduce_mean(losses)
                grads = tape.gradient(data_loss, weights)
                loss, grads = tf.cond(
                    penalized,
                    lambda: _with_penalty(data_loss, grads, weights, l1, l2),
                    lambda: (data_loss, grads),
                )
                rate = _scheduled(key.schedule, learning_rate, tf.cast(done, tf.float32), options)
                # Keras' decoupled weight decay, w - w * wd * lr, before the update step.
                weights = tf.cond(
                    weight_decay > 0,
                    lambda: [w - w * weight_decay * rate for w in weights],
                    lambda: list(weights),
                )
                number = tf.cast(done + 1, tf.float32)
                step_info = Step(rate, number, key.optimizer_constants, momentum)
                weights, slots = update(weights, grads, slots, step_info)
                count = tf.cast(tf.shape(losses)[0], tf.float64)
                shown = losses if key.loss == loss_name(key.task) else measured(y, pred)
                batch = [
                    tf.cast(loss, tf.float64) * count,
                    tf.reduce_sum(tf.cast(shown, tf.float64)),
                    count_hits(key.task, y, pred),
                    count,
                ]
                new_sums = [a + b for a, b in zip(sums, batch, strict=True)]
                return i + 1, weights, slots, new_stats, new_sums

            # Chosen at run time, so models with and without penalties share the graph; the
            # penalty's reductions are skipped when no kernel has one.
            penalized = tf.reduce_any(l2 > 0) | tf.reduce_any(l1 > 0)
            zero = tf.constant(0.0, tf.float64)
            n_steps = tf.shape(starts)[0]
            _, weights, slots, stats, sums = tf.while_loop(
                lambda i, *_: i < n_steps,
                step,
                (tf.constant(0), weights, slots, stats, [zero, zero, zero, zero]),
            )
            return weights, slots, stats, sums

        return train_epoch

    def _trace_eval(self, key: GraphKey, parts: int) -> Any:
        train = self._data.splits["train"]
        forward = _forward(key)
        parts_spec = tuple([train.batch_signature()] * parts)

        @tf.function(
            autograph=False,  # as in _trace_train
            input_signature=[_weights_spec(key, train), _stats_spec(key), parts_spec],
        )
        def parts_stats(
            weights: _Tensors, stats: _Tensors, parts: tuple[tuple[Any, tf.Tensor], ...]
        ) -> tuple[tf.Tensor, tf.Tensor]:
            return summed_loss_and_hits(
                key.task, parts, lambda x: forward(weights, x, None, None, stats)[0]
            )

        return parts_stats


class TrialRun:
    """One trial's weights and optimizer state between the compiled epochs."""

    def __init__(self, graphs: SharedGraphs, plan: GraphPlan, seed: int) -> None:
        self._graphs = graphs
        self._plan = plan
        self._seed = tf.constant(seed, tf.int64)
        self.weights: _Tensors = [tf.convert_to_tensor(v.value) for v in plan.variables]
        self.stats: _Tensors = [tf.convert_to_tensor(v.value) for v in plan.statistics]
        self._slots = [
            [tf.zeros_like(w) for w in self.weights] for _ in range(slot_count(plan.key.optimizer))
        ]
        self._iterations = tf.constant(0, tf.int64)
        self._learning_rate = tf.constant(plan.learning_rate, tf.float32)
        self._rates = tf.constant(plan.dropout_rates, tf.float32)
        self._l1 = tf.constant(plan.l1 or [0.0] * len(plan.l2), tf.float32)
        self._l2 = tf.constant(plan.l2, tf.float32)
        self._options = tf.constant(plan.options, tf.float32)

    def train_epoch(
        self, rows: np.ndarray, starts: np.ndarray, ends: np.ndarray
    ) -> dict[str, float]:
        """Run one epoch's optimizer steps; returns Keras' running epoch logs."""
        graph = self._graphs.train_graph(self._plan.key)
        self.weights, self._slots, self.stats, sums = graph(
            self.weights,
            self._slots,
            self.stats,
            self._iterations,
            self._learning_rate,
            self._rates,
            self._l1,
            self._l2,
            self._options,
            tf.constant(rows, tf.int64),
            tf.constant(starts, tf.int64),
            tf.constant(ends, tf.int64),
            self._seed,
        )
        self._iterations += len(starts)
        for variable, value in zip(self._plan.variables, self.weights, strict=True):
            variable.assign(value)
        for variable, value in zip(self._plan.statistics, self.stats, strict=True):
            variable.assign(value)
        loss, data_loss, hits, count = (float(s) for s in sums)
        logs = {"loss": loss / count, "data_loss": data_loss / count}
        if self._plan.key.task != "regression":
            logs["accuracy"] = hits / count
        return logs

    def parts_stats(self, parts: Sequence[tuple[Any, Any]]) -> tuple[tf.Tensor, tf.Tensor]:
        """Summed loss and hits over evaluation parts under the current weights (inference)."""
        graph = self._graphs.eval_graph(self._plan.key, len(parts))
        return graph(self.weights, self.stats, tuple(parts))  # type: ignore[no-any-return]


def epoch_rows(
    n: int, batch_size: int, steps: int, first_step: int, seed: int, *, shuffle: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of ``steps`` batches from step ``first_step`` of a stream of (shuffled) passes.

    Each pass over the ``n`` rows is a fresh permutation (seeded by ``seed`` and the pass), or
    with ``shuffle=False`` the rows in order, cut into ``ceil(n / batch_size)`` batches, the
    last one short, as ``tf.data``'s ``shuffle(...).batch(...).repeat()`` does. A batch of
    ``n`` or more rows is the whole set, in order. Returns the rows and each batch's start and
    end in them.

    Example:
        >>> rows, starts, ends = epoch_rows(5, 2, 3, 0, seed=0)
        >>> sorted(rows.tolist()), starts.tolist(), ends.tolist()
        ([0, 1, 2, 3, 4], [0, 2, 4], [2, 4, 5])
        >>> rows, starts, ends = epoch_rows(5, 2, 4, 2, seed=0, shuffle=False)
        >>> [rows[s:e].tolist() for s, e in zip(starts, ends)]
        [[4], [0, 1], [2, 3], [4]]
    """
    if batch_size >= n:
        return np.arange(n), np.zeros(steps, np.int64), np.full(steps, n, np.int64)
    per_pass = math.ceil(n / batch_size)
    first_pass, last_pass = first_step // per_pass, (first_step + steps - 1) // per_pass
    passes = [
        np.random.default_rng([seed, p]).permutation(n) if shuffle else np.arange(n)
        for p in range(first_pass, last_pass + 1)
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
    return dataclasses.replace(
        key, optimizer="", optimizer_constants=(), loss="", schedule="constant"
    )


def _weights_spec(key: GraphKey, train: Any) -> list[tf.TensorSpec]:
    first_rows = train.n_features if train.sparse else int(train.x.shape[1])
    norms = key.norms or ("",) * len(key.activations)
    specs: list[tf.TensorSpec] = []
    for layer, norm in enumerate(norms):
        specs.append(tf.TensorSpec([first_rows if layer == 0 else None, None], tf.float32))
        specs.append(tf.TensorSpec([None], tf.float32))
        if norm:  # gamma and beta
            specs += [tf.TensorSpec([None], tf.float32)] * 2
    return specs


def _stats_spec(key: GraphKey) -> list[tf.TensorSpec]:
    return [tf.TensorSpec([None], tf.float32)] * (2 * sum(1 for n in key.norms if n))


def _scheduled(kind: str, rate: tf.Tensor, step: tf.Tensor, options: tf.Tensor) -> tf.Tensor:
    """The learning rate at optimizer step ``step``: Keras' CosineDecay or ExponentialDecay."""
    decay_steps, decay_rate = options[2], options[3]
    if kind == "cosine":
        fraction = tf.minimum(step, decay_steps) / decay_steps
        return rate * (0.5 * (1.0 + tf.cos(math.pi * fraction)))
    if kind == "exponential":
        return rate * tf.pow(decay_rate, step / decay_steps)
    return rate


def _forward(key: GraphKey) -> Callable[..., tuple[tf.Tensor, _Tensors]]:
    activations = [keras.activations.get(name) for name in key.activations]
    norms = key.norms or ("",) * len(activations)
    momentum, epsilon = key.norm_constants or (0.99, 1e-3)

    def forward(
        weights: Sequence[tf.Tensor],
        x: Any,
        rates: tf.Tensor | None,
        seed: tf.Tensor | None,
        stats: Sequence[tf.Tensor],
    ) -> tuple[tf.Tensor, _Tensors]:
        """Predictions, and the moving statistics updated (training) or as they were."""
        training = rates is not None and seed is not None
        h, w, s = x, 0, 0
        new_stats: _Tensors = []
        for layer, (activation, norm) in enumerate(zip(activations, norms, strict=True)):
            kernel, bias = weights[w], weights[w + 1]
            w += 2
            # A sparse input's product (COO or CSR) is picked by the kernel's width at run time.
            h = sparse_matmul(h, kernel) if layer == 0 and key.sparse else tf.matmul(h, kernel)
            h = tf.nn.bias_add(h, bias)
            if norm:
                gamma, beta = weights[w], weights[w + 1]
                moving_mean, moving_variance = stats[s], stats[s + 1]
                w, s = w + 2, s + 2
                if norm == "after":
                    h = activation(h)
                if training:  # batch statistics; the moving ones follow them
                    mean, variance = tf.nn.moments(h, axes=[0])
                    mean_, var_ = tf.stop_gradient(mean), tf.stop_gradient(variance)
                    new_stats += [
                        moving_mean * momentum + mean_ * (1.0 - momentum),
                        moving_variance * momentum + var_ * (1.0 - momentum),
                    ]
                else:
                    mean, variance = moving_mean, moving_variance
                    new_stats += [moving_mean, moving_variance]
                h = tf.nn.batch_normalization(h, mean, variance, beta, gamma, epsilon)
                if norm == "before":
                    h = activation(h)
            else:
                h = activation(h)
            if rates is not None and seed is not None:  # training: dropout after the layer
                h = _dropout(h, rates[layer], tf.random.experimental.stateless_fold_in(seed, layer))
        return h, new_stats

    return forward


def _with_penalty(
    data_loss: tf.Tensor, grads: _Tensors, weights: _Tensors, l1: tf.Tensor, l2: tf.Tensor
) -> tuple[tf.Tensor, _Tensors]:
    # Keras' penalties, l1 * sum(|w|) + l2 * sum(w^2), and their gradients, l1 * sign(w) +
    # 2 * l2 * w, written out: through the tape they added 24 ms to a 70 ms IMDB epoch, now 3-6 ms.
    grads = list(grads)
    penalty = []
    kernels = [i for i, spec_w in enumerate(weights) if len(spec_w.shape) == 2]
    for k, index in enumerate(kernels):
        kernel = weights[index]
        penalty.append(2.0 * l2[k] * tf.nn.l2_loss(kernel) + l1[k] * tf.reduce_sum(tf.abs(kernel)))
        grads[index] = grads[index] + (2.0 * l2[k]) * kernel + l1[k] * tf.sign(kernel)
    return data_loss + tf.add_n(penalty), grads


def _dropout(h: tf.Tensor, rate: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    # Keras' Dropout (inverted: kept units scaled by 1 / (1 - rate)); skipped when rate is 0.
    return tf.cond(
        rate > 0,
        lambda: tf.nn.experimental.stateless_dropout(h, rate=rate, seed=seed),
        lambda: h,
    )
