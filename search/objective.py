"""One trial: sample parameters, build and train the model, report every epoch, record the result.

The value a trial returns is the best epoch's loss on the objective's split (validation loss for
``generalize``, whole-training-set loss in inference mode for ``memorize``), as a run with
``EarlyStopping(restore_best_weights=True)`` would keep. Every epoch is reported to Optuna so the
pruner can stop poor trials; baselines are never pruned, so they always run their full curve.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import optuna
from optuna_integration import KerasPruningCallback

from search.model import build_model
from search.session import clear_session
from search.training import (
    EpochRecord,
    History,
    PreparedData,
    steps_per_execution,
)

if TYPE_CHECKING:
    from search.data import Dataset
    from search.studyfile import StudySpec


MAX_PLOTTED_POINTS = 1000


@dataclass
class TrainingRun:
    """What training one parameter set produced."""

    params: dict[str, Any]
    seed: int
    history: History
    param_count: int
    wall_seconds: float
    model: keras.Model

    def attributes(self, objective: str) -> dict[str, Any]:
        """The trial user attributes: losses, gap, size, time and the curves per epoch."""
        return summarize_history(self.history, objective) | {
            "param_count": self.param_count,
            "wall_seconds": round(self.wall_seconds, 3),
            "seed": self.seed,
        }


def summarize_history(history: History, objective: str) -> dict[str, Any]:
    """Final and best losses, generalization gap and curves of a (possibly cut short) run."""
    records = history.records
    if not records:
        return {"epochs_run": 0}
    key = "val_loss" if objective == "generalize" else "train_loss"
    best = min(records, key=lambda r: _finite_or_inf(getattr(r, key)))
    last = records[-1]
    out: dict[str, Any] = {
        "epochs_run": len(records),
        "best_epoch": best.epoch + 1,
        "train_loss_final": last.train_loss,
        "train_loss_best": min(_finite_or_inf(r.train_loss) for r in records),
        "train_curve": _clean(history.curve("train_loss")),
        "train_seconds": round(sum(r.train_seconds for r in records), 3),
        "eval_seconds": round(sum(r.eval_seconds for r in records), 3),
    }
    if last.val_loss is not None:
        out |= {
            "val_loss_final": last.val_loss,
            "val_loss_best": min(_finite_or_inf(r.val_loss) for r in records),
            "gap": _gap(last),
            "gap_at_best": _gap(best),
            "val_curve": _clean(history.curve("val_loss")),
        }
    if last.val_accuracy is not None:
        out |= {
            "val_accuracy_at_best": best.val_accuracy,
            "val_accuracy_best": max(r.val_accuracy or 0.0 for r in records),
            "train_accuracy_final": last.train_accuracy,
        }
    return {k: _json_float(v) for k, v in out.items()}


def measures_train_exactly(spec: StudySpec, dataset: Dataset) -> bool:
    """Memorize studies minimize the exact training loss; generalize ones only show it.

    Measuring it costs a forward pass over the training set each epoch, so generalize studies
    record Keras' running training data loss instead (see :mod:`search.training`). Hypermodel
    studies always measure it: their models have no ``data_loss`` metric to read.
    """
    return spec.objective == "memorize" or not dataset.has_validation or spec.hypermodel is not None


def train_params(
    spec: StudySpec,
    data: PreparedData,
    params: Mapping[str, Any],
    *,
    seed: int,
    epochs: int | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    history: History | None = None,
) -> TrainingRun:
    """Build and train one model from ``params`` (also used to re-train the best trial).

    ``history`` is filled epoch by epoch, so it holds the records even when a callback (the
    pruner) interrupts training with an exception.
    """
    dataset = data.dataset
    steps = data.steps_per_epoch(int(params["batch_size"]), spec.training.steps_per_epoch)
    model = build_model(
        params,
        n_features=dataset.n_features,
        task=dataset.task,
        n_classes=dataset.n_classes,
        sparse=dataset.is_sparse,
        seed=seed,
        steps_per_execution=steps_per_execution(steps),
        build_optimizer=False,  # data.fit builds the slots if it trains through model.fit
    )
    history = history if history is not None else History()
    start = time.perf_counter()
    data.fit(
        model,
        batch_size=int(params["batch_size"]),
        epochs=epochs or spec.training.epochs,
        steps_per_epoch=spec.training.steps_per_epoch,
        seed=seed,
        callbacks=callbacks or [],
        history=history,
        measure_train=measures_train_exactly(spec, dataset),
    )
    wall = time.perf_counter() - start
    return TrainingRun(dict(params), seed, history, model.count_params(), wall, model)


class Objective:
    """The Optuna objective of a study: ``study.optimize(Objective(spec, data))``.

    Args:
        spec: The validated study file.
        data: The study's data, prepared once for every trial of this worker.
    """

    def __init__(self, spec: StudySpec, data: PreparedData) -> None:
        self.spec = spec
        self.data = data
        self.monitor = "val_loss" if spec.objective == "generalize" else "train_loss"

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample every hyperparameter of the space (fixed ones are filled in)."""
        return {name: param.suggest(trial, name) for name, param in self.spec.space.items()}

    def train(
        self,
        trial: optuna.Trial,
        *,
        seed: int,
        callbacks: list[keras.callbacks.Callback],
        history: History,
    ) -> TrainingRun:
        """Sample the trial's parameters and train them (a subclass trains another family)."""
        params = self.suggest(trial)
        return train_params(
            self.spec, self.data, params, seed=seed, callbacks=callbacks, history=history
        )

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        # Free the previous trial's graphs and weights so memory stays flat over many trials
        # (clear_session runs the garbage collector itself; a second pass costs ~0.1 s). First,
        # before this trial creates anything: in a worker, what survives it is frozen.
        clear_session()
        seed = self.spec.training.seed + trial.number
        is_baseline = "baseline" in trial.user_attrs
        exact = measures_train_exactly(self.spec, self.data.dataset)
        trial.set_user_attr("train_loss_kind", "inference" if exact else "running")
        history = History()
        callbacks = self._callbacks(trial, prune=not is_baseline)
        try:
            run = self.train(trial, seed=seed, callbacks=callbacks, history=history)
        except optuna.TrialPruned:
            for key, value in summarize_history(history, self.spec.objective).items():
                trial.set_user_attr(key, value)
            trial.set_user_attr("seed", seed)
            raise
        for key, value in run.attributes(self.spec.objective).items():
            trial.set_user_attr(key, value)
        self._record_reference(trial, run)
        self._record_predictions(trial, run)
        value = min(_finite_or_inf(getattr(r, self.monitor)) for r in run.history.records)
        param_count = float(run.param_count)
        del run
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"{self.monitor} was never finite")
        if self.spec.multi_objective:  # [multi_objective] param_count = true: (loss, size)
            return value, param_count
        return value

    def _callbacks(self, trial: optuna.Trial, *, prune: bool) -> list[keras.callbacks.Callback]:
        callbacks: list[keras.callbacks.Callback] = [
            _NonFiniteGuard(self.monitor, trial),
            _RecordSize(trial),
        ]
        if self.spec.training.patience:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor=self.monitor, patience=self.spec.training.patience, mode="min"
                )
            )
        if self.spec.multi_objective:
            return callbacks  # Optuna has no report() or pruning for multi-objective studies
        if prune:
            callbacks.append(KerasPruningCallback(trial, self.monitor))
        else:
            callbacks.append(_Reporter(trial, self.monitor))
        return callbacks

    def _record_predictions(self, trial: optuna.Trial, run: TrainingRun) -> None:
        """For one-input regression, keep the fit itself (seed 000's figures): ``predictions``.

        Holds the inputs as the model saw them, the targets and the model's predictions (at most
        :data:`MAX_PLOTTED_POINTS` evenly spaced rows per split), for plots and the dashboard.
        """
        dataset = self.data.dataset
        if dataset.task != "regression" or dataset.n_features != 1 or dataset.is_sparse:
            return
        out: dict[str, list[float]] = {}
        for split in ("train", "val"):
            x, y = getattr(dataset, f"x_{split}"), getattr(dataset, f"y_{split}")
            if x is None or y is None or len(x) == 0:
                continue
            rows = np.unique(
                np.linspace(0, len(x) - 1, min(len(x), MAX_PLOTTED_POINTS)).astype(int)
            )
            pred = run.model.predict(x[rows], verbose=0, batch_size=4096)
            out[f"x_{split}"] = [float(v) for v in np.ravel(x[rows])]
            out[f"y_{split}"] = [float(v) for v in np.ravel(y[rows])]
            out[f"pred_{split}"] = [float(v) for v in np.ravel(pred)]
        trial.set_user_attr("predictions", out)

    def _record_reference(self, trial: optuna.Trial, run: TrainingRun) -> None:
        """For linear models with a known least-squares answer, record the coefficient error."""
        reference = self.data.dataset.reference
        if "lstsq_coefficients" not in reference or run.params.get("layers") != 0:
            return
        kernel, bias = run.model.get_layer("output").get_weights()
        learned = np.concatenate([kernel.ravel(), bias.ravel()])
        target = np.array([*reference["lstsq_coefficients"], reference["lstsq_intercept"]])
        trial.set_user_attr("coefficients", [float(v) for v in learned])
        trial.set_user_attr("coefficient_error", float(np.max(np.abs(learned - target))))


class _NonFiniteGuard(keras.callbacks.Callback):
    """Prunes a trial whose loss became NaN or infinite, storing the reason on it."""

    def __init__(self, monitor: str, trial: optuna.Trial) -> None:
        super().__init__()
        self._monitor = monitor
        self._trial = trial

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get(self._monitor)
        if value is None or not math.isfinite(value):
            reason = f"{self._monitor} became {value} at epoch {epoch + 1}"
            self._trial.set_user_attr("pruned_reason", reason)
            raise optuna.TrialPruned(reason)


class _RecordSize(keras.callbacks.Callback):
    """Records ``param_count`` when training starts, so pruned trials have it too."""

    def __init__(self, trial: optuna.Trial) -> None:
        super().__init__()
        self._trial = trial

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._trial.set_user_attr("param_count", int(self.model.count_params()))


class _Reporter(keras.callbacks.Callback):
    """Reports each epoch to Optuna without ever pruning (for baselines)."""

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        super().__init__()
        self._trial = trial
        self._monitor = monitor

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._trial.report(float((logs or {})[self._monitor]), step=epoch)


def _gap(record: EpochRecord) -> float | None:
    if record.val_loss is None:
        return None
    return record.val_loss - record.train_loss


def _finite_or_inf(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else math.inf


def _json_float(value: Any) -> Any:
    """Optuna stores attributes as JSON: turn inf/NaN into None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _clean(curve: list[float | None]) -> list[float | None]:
    return [None if v is None or not math.isfinite(v) else float(v) for v in curve]
