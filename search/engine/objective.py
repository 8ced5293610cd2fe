"""The objectives: one trial samples parameters, trains, reports every epoch, records the result.

:class:`Objective` trains the study file's space; :class:`HypermodelObjective` trains a
``[hypermodel]`` through the KerasTuner bridge (:mod:`search.kerastuner`); :func:`make_objective`
picks the one a study needs.

The value a trial returns is the best epoch's loss on the objective's split (validation loss for
``generalize``, whole-training-set loss in inference mode for ``memorize``), as a run with
``EarlyStopping(restore_best_weights=True)`` would keep. Every epoch is reported to Optuna so the
pruner can stop poor trials; baselines are never pruned, so they always run their full curve.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import optuna
from optuna_integration import KerasPruningCallback

from search.kerastuner import (
    OptunaHyperParameters,
    load_hypermodel,
    probe_space,
    probe_stored_paths,
    train_hypermodel,
)
from search.kerastuner.training import RecordHpValues
from search.training.prepared import History, PreparedData
from search.training.run import (
    TrainingRun,
    finite_or_inf,
    measures_train_exactly,
    summarize_history,
    train_params,
)
from search.training.session import clear_session

if TYPE_CHECKING:
    import keras_tuner
    from optuna.distributions import BaseDistribution

    from search.spec.studyfile import StudySpec


MAX_PLOTTED_POINTS = 1000


class Objective:
    """The Optuna objective of a study: ``study.optimize(Objective(spec, data))``.

    Args:
        spec: The validated study file.
        data: The study's data, prepared once for every trial of this worker.
    """

    def __init__(self, spec: StudySpec, data: PreparedData) -> None:
        from search.spec.memory import check_model_fits

        check_model_fits(spec, n_features=data.dataset.n_features)  # before any trial
        self.spec = spec
        self.data = data
        self.monitor = spec.monitor

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample every hyperparameter of the space (fixed ones are filled in)."""
        return self.spec.suggest(trial)

    def declared(self, study: optuna.Study) -> dict[str, BaseDistribution]:
        """What a resume compares beyond the fingerprint: none (the study file is the space)."""
        return {}

    def epoch_cap(self, trial: optuna.Trial) -> int | None:
        """A baseline's own epoch cap (``epochs`` in its table); None: the study's epochs."""
        return self.spec.baseline_epochs(trial.user_attrs.get("baseline"))

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
            self.spec,
            self.data,
            params,
            seed=seed,
            epochs=self.epoch_cap(trial),
            callbacks=callbacks,
            history=history,
        )

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        # Free the previous trial's graphs and weights so memory stays flat over many trials
        # (clear_session runs the garbage collector itself; a second pass costs ~0.1 s). First,
        # before this trial creates anything: in a worker, what survives it is frozen.
        clear_session()
        seed = self.trial_seed(trial)
        is_baseline = "baseline" in trial.user_attrs
        exact = measures_train_exactly(self.spec, self.data.dataset)
        trial.set_user_attr("train_loss_kind", "inference" if exact else "running")
        if self.spec.training.folds:  # k-fold cross-validation: see search.engine.folds
            from search.engine.folds import cross_validate

            trial.set_user_attr("seed", seed)
            value = cross_validate(self, trial, seed=seed, prune=not is_baseline)
            if self.spec.multi_objective:
                return value, float(trial.user_attrs["param_count"])
            return value
        history = History(start_of=self.monitor)  # the divergence guard reads its start
        callbacks = self._callbacks(trial, history, prune=not is_baseline)
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
        value = min(finite_or_inf(getattr(r, self.monitor)) for r in run.history.records)
        param_count = float(run.param_count)
        del run
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"{self.monitor} was never finite")
        if self.spec.multi_objective:  # [multi_objective] param_count = true: (loss, size)
            return value, param_count
        return value

    def trial_seed(self, trial: optuna.Trial) -> int:
        """The seed a trial trains with: the study's seed plus the trial number."""
        return self.spec.training.seed + trial.number

    def _callbacks(
        self, trial: optuna.Trial, history: History, *, prune: bool
    ) -> list[keras.callbacks.Callback]:
        callbacks: list[keras.callbacks.Callback] = [
            _NonFiniteGuard(self.monitor, trial, history),
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
            # A direct call, not predict(): predict builds a tf.function per new model and
            # warns about retracing from the sixth model on; at most 1000 rows fit one batch.
            pred = keras.ops.convert_to_numpy(run.model(x[rows], training=False))
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


DIVERGED_FACTOR = 100.0
"""A loss above this many times its start (before the first step) has diverged: pruned, like
NaN."""


def diverged(value: float | None, start: float | None) -> bool:
    """Whether an epoch's loss shows a diverged model: NaN, infinite, or far above its start.

    Far above: more than :data:`DIVERGED_FACTOR` times the (positive) loss the model had
    before its first step, or, where that was not measured, at its first epoch.

    Example:
        >>> diverged(float("nan"), 0.7), diverged(734.0, 0.69), diverged(5.0, 0.69)
        (True, True, False)
    """
    if value is None or not math.isfinite(value):
        return True
    return start is not None and start > 0 and value > DIVERGED_FACTOR * start


class _NonFiniteGuard(keras.callbacks.Callback):
    """Prunes a trial whose loss diverged (:func:`diverged`), storing the reason on it.

    Its start is the untrained model's loss (``history.start``, measured before the first step;
    a learning rate of 45 gave a first-epoch MSE of 1.2e11), else its first epoch's.
    """

    def __init__(self, monitor: str, trial: optuna.Trial, history: History) -> None:
        super().__init__()
        self._monitor = monitor
        self._trial = trial
        self._history = history
        self._first: float | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get(self._monitor)
        start = self._history.start.get(self._monitor)
        what = "before its first step" if start is not None else "at its first epoch"
        start = start if start is not None else self._first
        if diverged(value, start):
            if value is None or not math.isfinite(value):
                reason = f"{self._monitor} became {value} at epoch {epoch + 1}"
            else:
                reason = (
                    f"{self._monitor} diverged to {value:.4g} at epoch {epoch + 1}, more than "
                    f"{DIVERGED_FACTOR:g} x its {start:.4g} {what}"
                )
            self._trial.set_user_attr("pruned_reason", reason)
            raise optuna.TrialPruned(reason)
        if self._first is None and value is not None:
            self._first = float(value)


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


class HypermodelObjective(Objective):
    """The Optuna objective of a ``[hypermodel]`` study; the flow is :class:`Objective`'s.

    The hypermodel is imported and probed at construction, so a bad one fails before the study
    is created. Trials record the same attributes as built-in ones, plus ``hp_values`` (the
    values the model was built with) and ``keras_val_curve``.
    """

    def __init__(
        self, spec: StudySpec, data: PreparedData, hypermodel: keras_tuner.HyperModel | None = None
    ) -> None:
        super().__init__(spec, data)
        label = str(spec.hypermodel.path or spec.hypermodel.module) if spec.hypermodel else ""
        self.hypermodel = hypermodel or load_hypermodel(spec)
        self.mirrors = probe_space(self.hypermodel, data, label or "hypermodel")

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        raise NotImplementedError("hypermodel trials sample while the hypermodel builds")

    def declared(self, study: optuna.Study) -> dict[str, BaseDistribution]:
        """The hyperparameters the hypermodel declares now, as Optuna samples them: on the
        default path (``build`` and ``fit``) and on the paths ``study``'s trials took. A resume
        compares them with the stored trials' distributions: the code is the space."""
        trials = study.get_trials(deepcopy=False)
        mirrors = probe_stored_paths(self.hypermodel, trials, self.mirrors)
        return {name: mirror.distribution for name, mirror in mirrors.items()}

    def train(
        self,
        trial: optuna.Trial,
        *,
        seed: int,
        callbacks: list[keras.callbacks.Callback],
        history: History,
    ) -> TrainingRun:
        hp = OptunaHyperParameters(trial)
        keras_val: list[float | None] = []
        run = train_hypermodel(
            self.spec,
            self.data,
            self.hypermodel,
            hp,
            seed=seed,
            callbacks=[RecordHpValues(trial, hp), *callbacks],
            history=history,
            keras_val_curve=keras_val,
        )
        trial.set_user_attr("hp_values", run.params)
        trial.set_user_attr("keras_val_curve", keras_val)
        return run


def make_objective(spec: StudySpec, data: PreparedData) -> Objective:
    """The study's objective: the file's space, or the study's KerasTuner hypermodel.

    Raises:
        HypermodelError: The hypermodel cannot be imported, built or mirrored on Optuna.
    """
    if spec.hypermodel is not None:
        return HypermodelObjective(spec, data)
    return Objective(spec, data)
