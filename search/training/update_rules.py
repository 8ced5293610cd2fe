"""The optimizers' update rules, written out for the shared training graphs.

Each rule repeats its Keras optimizer's ``update_step`` (no amsgrad, RMSprop neither centered nor
with momentum, SGD with or without momentum and Nesterov) on plain tensors, so one traced graph
serves every trial of a layer structure; the tests compare them step for step with ``model.fit``.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

_Tensors = list[tf.Tensor]


class Step(NamedTuple):
    """What an update rule needs besides the weights, gradients and slots."""

    learning_rate: tf.Tensor
    number: tf.Tensor  # the optimizer's iterations + 1, as a float (Adam's bias correction)
    constants: tuple[float, ...]  # rho, epsilon; beta_1, beta_2, epsilon; nesterov
    momentum: tf.Tensor | float = 0.0  # SGD's, an argument of the graph


def slot_count(optimizer: str) -> int:
    """Optimizer state tensors per weight: RMSprop's velocity, Adam's two moments."""
    return {"rmsprop": 1, "adam": 2, "sgd": 0, "sgd_momentum": 1}[optimizer]


def _rmsprop(
    weights: _Tensors, grads: _Tensors, slots: list[_Tensors], step: Step
) -> tuple[_Tensors, list[_Tensors]]:
    # keras.optimizers.RMSprop.update_step, not centered, no momentum.
    rho, epsilon = step.constants
    lr = step.learning_rate
    velocities = [rho * v + (1 - rho) * tf.square(g) for v, g in zip(slots[0], grads, strict=True)]
    new = [
        w - (lr * g) / tf.sqrt(v + epsilon)
        for w, g, v in zip(weights, grads, velocities, strict=True)
    ]
    return new, [velocities]


def _adam(
    weights: _Tensors, grads: _Tensors, slots: list[_Tensors], step: Step
) -> tuple[_Tensors, list[_Tensors]]:
    # keras.optimizers.Adam.update_step, no amsgrad.
    beta_1, beta_2, epsilon = step.constants
    power = step.number
    alpha = step.learning_rate * tf.sqrt(1 - tf.pow(beta_2, power)) / (1 - tf.pow(beta_1, power))
    moments = [m + (g - m) * (1 - beta_1) for m, g in zip(slots[0], grads, strict=True)]
    velocities = [
        v + (tf.square(g) - v) * (1 - beta_2) for v, g in zip(slots[1], grads, strict=True)
    ]
    new = [
        w - (m * alpha) / (tf.sqrt(v) + epsilon)
        for w, m, v in zip(weights, moments, velocities, strict=True)
    ]
    return new, [moments, velocities]


def _sgd(
    weights: _Tensors, grads: _Tensors, slots: list[_Tensors], step: Step
) -> tuple[_Tensors, list[_Tensors]]:
    return [w - g * step.learning_rate for w, g in zip(weights, grads, strict=True)], []


def _sgd_momentum(
    weights: _Tensors, grads: _Tensors, slots: list[_Tensors], step: Step
) -> tuple[_Tensors, list[_Tensors]]:
    # keras.optimizers.SGD.update_step with momentum (Nesterov when constants[0] is set).
    (nesterov,) = step.constants
    lr, momentum = step.learning_rate, step.momentum
    velocities = [m * momentum - g * lr for m, g in zip(slots[0], grads, strict=True)]
    if nesterov:
        new = [
            w + (m * momentum - g * lr) for w, m, g in zip(weights, velocities, grads, strict=True)
        ]
    else:
        new = [w + m for w, m in zip(weights, velocities, strict=True)]
    return new, [velocities]


UPDATE_RULES = {"rmsprop": _rmsprop, "adam": _adam, "sgd": _sgd, "sgd_momentum": _sgd_momentum}
