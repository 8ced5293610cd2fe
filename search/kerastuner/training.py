"""Training a hypermodel as KerasTuner does: ``build(hp)``, then ``fit(hp, model, ...)``."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras
import keras_tuner
import optuna

from search.errors import HypermodelError
from search.training.prepared import EpochEvaluator, History, PreparedData
from search.training.run import TrainingRun

if TYPE_CHECKING:
    from search.spec.studyfile import StudySpec


def train_hypermodel(
    spec: StudySpec,
    data: PreparedData,
    hypermodel: keras_tuner.HyperModel,
    hp: keras_tuner.HyperParameters,
    *,
    seed: int,
    epochs: int | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    history: History | None = None,
    keras_val_curve: list[float | None] | None = None,
) -> TrainingRun:
    """Build and train one model through the hypermodel, measured after every epoch.

    Args:
        spec: The study (epoch cap).
        data: The prepared data; training and validation arrays go to ``hypermodel.fit``.
        hypermodel: The study's hypermodel.
        hp: Values to build with: :class:`OptunaHyperParameters` in a trial, or
            :func:`fixed_hyperparameters` to re-train a stored trial.
        seed: Seeds weights, dropout and batch order (``keras.utils.set_random_seed``).
        epochs: Epoch cap; default the study's.
        callbacks: Run after the measurement has written ``train_loss``/``val_loss``.
        history: Filled epoch by epoch (kept when a pruner interrupts training).
        keras_val_curve: Filled with Keras' own ``val_loss`` per epoch (L2 penalty included).

    Returns:
        The run; ``params`` are the hyperparameter values, ``fit`` override's included.
    """
    keras.utils.set_random_seed(seed)
    model = hypermodel.build(hp)
    history = history if history is not None else History()
    evaluator = EpochEvaluator(data, model, history, None, measure_train=True)
    ds = data.dataset
    validation = (ds.x_val, ds.y_val) if ds.has_validation else None
    start = time.perf_counter()
    hypermodel.fit(
        hp,
        model,
        ds.x_train,
        ds.y_train,
        validation_data=validation,
        epochs=epochs or spec.training.epochs,
        callbacks=[_KeepKerasValLoss(keras_val_curve), evaluator, *callbacks],
        verbose=0,
    )
    wall = time.perf_counter() - start
    if not history.records:
        raise HypermodelError(
            "the hypermodel's fit() did not pass its callbacks on to model.fit; nothing measured."
        )
    return TrainingRun(dict(hp.values), seed, history, model.count_params(), wall, model)


class _KeepKerasValLoss(keras.callbacks.Callback):
    """Keeps Keras' own ``val_loss`` before the measurement replaces it with the data loss."""

    def __init__(self, curve: list[float | None] | None) -> None:
        super().__init__()
        self._curve = curve

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get("val_loss")
        value = float(value) if value is not None and math.isfinite(float(value)) else None
        if logs is not None:
            logs["keras_val_loss"] = value
        if self._curve is not None:
            self._curve.append(value)


class RecordHpValues(keras.callbacks.Callback):
    """Stores the trial's hyperparameter values when training starts (pruned trials keep them)."""

    def __init__(self, trial: optuna.Trial, hp: keras_tuner.HyperParameters) -> None:
        super().__init__()
        self._trial = trial
        self._hp = hp

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._trial.set_user_attr("hp_values", dict(self._hp.values))
