"""Train one parameter set of the model family: the run a trial, a re-run and an export share.

The value a trial returns is the best epoch's loss on the objective's split (validation loss for
``generalize``, whole-training-set loss in inference mode for ``memorize``), as a run with
``EarlyStopping(restore_best_weights=True)`` would keep; :func:`summarize_history` turns a
run's epochs into the attributes stored on its trial.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import keras

from search.spec.studyfile import monitor_of
from search.training.model import build_model
from search.training.prepared import EpochRecord, History, PreparedData, steps_per_execution

if TYPE_CHECKING:
    from search.data import Dataset
    from search.spec.studyfile import StudySpec


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
    key = monitor_of(objective)
    best = min(records, key=lambda r: finite_or_inf(getattr(r, key)))
    last = records[-1]
    out: dict[str, Any] = {
        "epochs_run": len(records),
        "best_epoch": best.epoch + 1,
        "best_step": best.epoch,  # the dashboard's step of that epoch (KerasTuner's best_step)
        "train_loss_final": last.train_loss,
        "train_loss_best": min(finite_or_inf(r.train_loss) for r in records),
        "train_curve": _clean(history.curve("train_loss")),
        "train_seconds": round(sum(r.train_seconds for r in records), 3),
        "eval_seconds": round(sum(r.eval_seconds for r in records), 3),
    }
    if last.val_loss is not None:
        out |= {
            "val_loss_final": last.val_loss,
            "val_loss_best": min(finite_or_inf(r.val_loss) for r in records),
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
    record Keras' running training data loss instead (see :mod:`search.training.prepared`).
    Hypermodel
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
    schedule_epochs: int | None = None,
) -> TrainingRun:
    """Build and train one model from ``params`` (also used to re-train the best trial).

    ``schedule_epochs`` is the epoch count a learning-rate schedule spans (default: the
    epochs trained). A stored trial re-trained for its best epochs passes its own epoch cap,
    so a cosine decay falls as it fell in the search rather than over the shorter run.

    ``history`` is filled epoch by epoch, so it holds the records even when a callback (the
    pruner) interrupts training with an exception. ``shuffle = false`` in ``params`` trains on
    the rows in their stored order every epoch (Keras ``fit(shuffle=False)``).
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
        steps_per_epoch=steps,
        epochs=schedule_epochs or epochs or spec.training.epochs,
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
        shuffle=bool(params.get("shuffle", True)),
    )
    wall = time.perf_counter() - start
    return TrainingRun(dict(params), seed, history, model.count_params(), wall, model)


def _gap(record: EpochRecord) -> float | None:
    if record.val_loss is None:
        return None
    return record.val_loss - record.train_loss


def finite_or_inf(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else math.inf


def _json_float(value: Any) -> Any:
    """Optuna stores attributes as JSON: turn inf/NaN into None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _clean(curve: list[float | None]) -> list[float | None]:
    return [None if v is None or not math.isfinite(v) else float(v) for v in curve]
