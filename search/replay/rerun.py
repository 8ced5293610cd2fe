"""``capsearch rerun``: re-train a stored trial with its seed and say whether it reproduces.

The search keeps no weights. A trial is re-trained from what it stored
(:func:`search.engine.retrain.retrain_trial`): its parameters (the Dense-stack ones, or a
hypermodel's ``hp_values``), its ``seed`` and an epoch count. With the same seed, the same data
and the same libraries on CPU, re-training repeats the trial: TensorFlow's CPU kernels for these
small Dense models run the same operations in the same order. :func:`rerun_trial` checks it
against :data:`DEFAULT_RTOL`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial

from search.console import Echo
from search.engine.stored import pick_trial, stored_value
from search.errors import ReplayError
from search.runs import SearchOptions, SearchRun

if TYPE_CHECKING:
    from search.spec.studyfile import StudySpec
    from search.training.prepared import PreparedData

DEFAULT_RTOL = 1e-4
"""Relative tolerance of a re-run (or an exported model) against the stored value.

Measured on this project's CPU host (TensorFlow 2.21, Keras 3.15, 2 cores): re-runs of built-in
generalize trials (Pima), memorize trials (overfit30, ``steps_per_epoch``) and hypermodel trials,
complete and pruned, repeat every stored epoch bit for bit (relative difference 0), without
``tf.config.experimental.enable_op_determinism()``, so none is set. The tolerance is meant for
another host: a CPU with other vector units can sum float32 in another order (rounding of about
1e-7 relative per operation, which training amplifies; expected, not measured here, to stay
below 1e-4 on these short runs), while a changed data file, library or hypermodel moves the
value by far more. GPU runs are not covered (cuDNN and atomics are not deterministic).
"""


@dataclass(frozen=True)
class RerunResult:
    """A re-run of a stored trial against its stored curve."""

    trial: int
    seed: int
    epochs: int
    monitor: str
    stored: float
    rerun: float
    curve_max_rel_diff: float
    tolerance: float
    scope: str = ""  # " of fold 1" in a cross-validated study: the fold its curve is from

    @property
    def rel_diff(self) -> float:
        return relative_difference(self.rerun, self.stored)

    @property
    def reproduced(self) -> bool:
        return self.rel_diff <= self.tolerance

    def lines(self) -> list[str]:
        """What ``capsearch rerun`` prints."""
        verdict = "reproduced" if self.reproduced else "NOT reproduced"
        return [
            f"trial {self.trial}: re-ran {self.epochs} epochs with seed {self.seed}",
            f"  stored {self.monitor}{self.scope} {self.stored:.8g}, re-run {self.rerun:.8g}: "
            "relative "
            f"difference {self.rel_diff:.2e} (tolerance {self.tolerance:g}): {verdict}",
            f"  whole curve: largest relative difference per epoch {self.curve_max_rel_diff:.2e}",
        ]


def relative_difference(value: float, reference: float) -> float:
    """``|value - reference| / |reference|`` (absolute when the reference is 0).

    Example:
        >>> relative_difference(1.0001, 1.0) < 1.1e-4
        True
    """
    if not (math.isfinite(value) and math.isfinite(reference)):
        return 0.0 if value == reference else math.inf
    return abs(value - reference) / (abs(reference) or 1.0)


def rerun_trial(
    spec: StudySpec, data: PreparedData, trial: FrozenTrial, *, rel_tol: float = DEFAULT_RTOL
) -> RerunResult:
    """Re-train a stored trial for the epochs it ran and compare with what it stored.

    The compared value is the best epoch's loss (the trial's value); every epoch of the curve
    is compared too. In a cross-validated study (``[training] folds``) the trial's value is a
    mean over folds and its stored curve is its first fold's: that fold is re-trained and
    compared with its own value (``fold_values[0]``).

    Raises:
        ReplayError: The trial stored no curve to compare with.
    """
    monitor = spec.monitor
    stored = stored_value(spec, trial)
    curve_key = "val_curve" if monitor == "val_loss" else "train_curve"
    stored_curve: list[Any] = list(trial.user_attrs.get(curve_key) or [])
    scope = ""
    if spec.training.folds:
        values = trial.user_attrs.get("fold_values") or []
        stored, scope = (float(values[0]) if values else None), " of fold 1"
    if stored is None or not stored_curve:
        raise ReplayError(f"trial {trial.number} stored no {monitor} curve to compare with.")
    from search.engine.retrain import retrain_trial  # TensorFlow, once the input is checked

    if spec.training.folds:  # the folds the search cut, seed 0 (search.engine.folds)
        from search.training.prepared import PreparedData, fold_datasets

        data = PreparedData(fold_datasets(data.dataset, int(spec.training.folds))[0])

    epochs = len(stored_curve)
    run = retrain_trial(spec, data, trial, epochs=epochs)
    curve = [v for v in run.history.curve(monitor)]
    finite = [v for v in curve if v is not None and math.isfinite(v)]
    rerun = min(finite) if finite else math.inf
    diffs = [
        relative_difference(float(a), float(b))
        for a, b in zip(curve, stored_curve, strict=False)
        if a is not None and b is not None
    ]
    return RerunResult(
        trial=trial.number,
        seed=run.seed,
        epochs=epochs,
        monitor=monitor,
        stored=stored,
        rerun=rerun,
        curve_max_rel_diff=max(diffs, default=math.inf),
        tolerance=rel_tol,
        scope=scope,
    )


def rerun_stored(
    spec: StudySpec,
    options: SearchOptions,
    trial_number: int,
    *,
    rel_tol: float = DEFAULT_RTOL,
    echo: Echo = print,
) -> RerunResult:
    """``capsearch rerun STUDY TRIAL``: re-run a stored trial and say whether it reproduces.

    Uses the study file as stored with the study, and ``options``' storage and data settings.
    """
    run = SearchRun(spec, options, echo=echo)
    trial = pick_trial(run.open_stored(), trial_number)
    result = rerun_trial(run.spec, run.data(), trial, rel_tol=rel_tol)
    for line in result.lines():
        echo(line)
    return result
