"""Re-training stored trials: the test evaluation, ``capsearch export`` and ``capsearch rerun``.

The search keeps no weights. A trial is re-trained from what it stored: its parameters (the
Dense-stack ones, or a hypermodel's ``hp_values``), its ``seed`` and an epoch count. With the same
seed, the same data and the same libraries on CPU, re-training repeats the trial: TensorFlow's
CPU kernels for these small Dense models run the same operations in the same order.
:func:`rerun_trial` checks it against :data:`DEFAULT_RTOL`.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.errors import ReplayError
from search.storage.opening import open_storage
from search.storage.urls import mask_url, resolve_storage_url

if TYPE_CHECKING:
    from search.objective import TrainingRun
    from search.runner import Echo, SearchOptions
    from search.studyfile import StudySpec
    from search.training import History, PreparedData

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


def monitor_of(spec: StudySpec) -> str:
    """The loss a trial's value is made of: ``val_loss`` (generalize) or ``train_loss``.

    Example:
        >>> monitor_of(load_study("overfit30_memorize"))  # doctest: +SKIP
        'train_loss'
    """
    return "val_loss" if spec.objective == "generalize" else "train_loss"


def trial_seed(spec: StudySpec, trial: FrozenTrial) -> int:
    """The seed a trial trained with (its ``seed`` attribute; study seed + number before).

    Example:
        >>> trial_seed(spec, study.trials[3])  # doctest: +SKIP
        3
    """
    return int(trial.user_attrs.get("seed", spec.training.seed + trial.number))


def stored_value(spec: StudySpec, trial: FrozenTrial) -> float | None:
    """A trial's best-epoch loss: its (first) value, or a pruned trial's best recorded loss.

    Example:
        >>> stored_value(spec, study.best_trial) == study.best_value  # doctest: +SKIP
        True
    """
    if trial.values:
        return float(trial.values[0])  # multi-objective studies: (loss, param_count)
    value = trial.user_attrs.get(f"{monitor_of(spec)}_best")
    return float(value) if value is not None else None


def open_stored_study(spec: StudySpec, storage: str | None) -> optuna.Study:
    """Load ``spec``'s study from the storage.

    Raises:
        ReplayError: No such study there.
        StorageError: The storage cannot be opened.

    Example:
        >>> open_stored_study(load_study("pima_generalize"), None).study_name  # doctest: +SKIP
        'pima_generalize'
    """
    url = resolve_storage_url(storage)
    rdb = open_storage(url, create=False)
    try:
        return optuna.load_study(study_name=spec.name, storage=rdb)
    except KeyError:
        raise ReplayError(
            f"no study {spec.name!r} in {mask_url(url)}; run it first: capsearch run {spec.name}."
        ) from None


def stored_spec(spec: StudySpec, study: optuna.Study) -> StudySpec:
    """The study file as it was when the study was created (data split, epochs, hypermodel).

    Falls back to ``spec`` (the current file) for studies that did not store their file.

    Example:
        >>> spec = stored_spec(spec, open_stored_study(spec, None))  # doctest: +SKIP
    """
    from search.errors import StudyFileError
    from search.studyfile import spec_from_dict

    text = study.user_attrs.get("study_file_text")
    if not text:
        return spec
    try:
        return spec_from_dict(tomllib.loads(text), name=spec.name, path=spec.path)
    except (StudyFileError, tomllib.TOMLDecodeError):
        return spec  # written for an older capsearch: the current file is the best guess


def best_completed(study: optuna.Study) -> FrozenTrial | None:
    """The completed trial with the lowest loss (the first objective of multi-objective ones).

    Example:
        >>> best_completed(study).number  # doctest: +SKIP
        7
    """
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return min(completed, key=lambda t: t.values[0]) if completed else None


def pick_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    """The best trial (``number=None``) or trial ``number``; it must have trained an epoch.

    Raises:
        ReplayError: No completed trial, no such trial, or one with nothing to replay.

    Example:
        >>> pick_trial(study, None).number == study.best_trial.number  # doctest: +SKIP
        True
    """
    if number is None:
        best = best_completed(study)
        if best is None:
            raise ReplayError(f"study {study.study_name} has no completed trial yet.")
        return best
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise ReplayError(
            f"study {study.study_name} has no trial {number}; it has trials 0 to {len(trials) - 1}."
        )
    trial = trials[number]
    if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED) or not trial.user_attrs.get(
        "epochs_run"
    ):
        raise ReplayError(
            f"trial {number} is {trial.state.name.lower()} with no finished epoch; nothing to "
            "replay. Pick a complete or pruned trial (capsearch show)."
        )
    return trial


def retrain_trial(
    spec: StudySpec,
    data: PreparedData,
    trial: FrozenTrial,
    *,
    epochs: int,
    seed: int | None = None,
    history: History | None = None,
) -> TrainingRun:
    """Re-train a stored trial's model from its parameters and seed for ``epochs`` epochs.

    Built-in studies go through :func:`search.objective.train_params`; hypermodel studies rebuild
    through the hypermodel with the trial's ``hp_values`` fixed.

    Example:
        >>> run = retrain_trial(spec, data, study.best_trial, epochs=12)  # doctest: +SKIP
        >>> data.evaluate(run.model, "val")  # doctest: +SKIP
        (0.4791..., 0.77...)
    """
    from search.session import clear_session

    seed = trial_seed(spec, trial) if seed is None else seed
    clear_session()  # as before every trial of the search (collects garbage)
    if spec.hypermodel is not None:
        from search.hypermodel import (
            fixed_hyperparameters,
            load_hypermodel,
            train_hypermodel,
            trial_hp_values,
        )

        hp = fixed_hyperparameters(trial_hp_values(trial))
        return train_hypermodel(
            spec, data, load_hypermodel(spec), hp, seed=seed, epochs=epochs, history=history
        )
    from search.objective import train_params
    from search.runner import model_params

    params = model_params(spec, trial)
    return train_params(spec, data, params, seed=seed, epochs=epochs, history=history)


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
            f"  stored {self.monitor} {self.stored:.8g}, re-run {self.rerun:.8g}: relative "
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
    is compared too.

    Raises:
        ReplayError: The trial stored no curve to compare with.

    Example:
        >>> result = rerun_trial(spec, data, study.trials[3])  # doctest: +SKIP
        >>> result.reproduced  # doctest: +SKIP
        True
    """
    monitor = monitor_of(spec)
    stored = stored_value(spec, trial)
    curve_key = "val_curve" if monitor == "val_loss" else "train_curve"
    stored_curve: list[Any] = list(trial.user_attrs.get(curve_key) or [])
    if stored is None or not stored_curve:
        raise ReplayError(f"trial {trial.number} stored no {monitor} curve to compare with.")
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

    Example:
        >>> rerun_stored(load_study("pima_generalize"), SearchOptions(), 7).reproduced
        ... # doctest: +SKIP
        True
    """
    from search.runner import prepare_data

    study = open_stored_study(spec, options.storage)
    spec = stored_spec(spec, study)
    trial = pick_trial(study, trial_number)
    data = prepare_data(spec, options)
    result = rerun_trial(spec, data, trial, rel_tol=rel_tol)
    for line in result.lines():
        echo(line)
    return result
