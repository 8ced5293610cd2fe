"""k-fold cross-validation of one trial (``[training] folds = k``).

On a few hundred rows a single validation split decides by noise. With ``folds`` set, a trial
trains its configuration once per fold of the training and validation rows together (stratified
for classification; :func:`search.training.prepared.fold_datasets`), with the same seed and the
study's early stopping. Its value is the mean over folds of the best-epoch validation loss; the
per-fold values are stored as ``fold_values`` (and their best epochs as ``fold_best_epochs``).
After each fold the running mean is reported to the pruner at step = fold number, so the study's
pruner (median, successive halving) prunes on it; with ``[pruner] name = "wilcoxon"`` the fold's own
value is reported instead, as Optuna's ``WilcoxonPruner`` expects (a signed-rank test against the
best trial's same folds). Baselines are never pruned. The test split is never touched.
"""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, Any

import keras
import optuna

from search.training.prepared import History, PreparedData, fold_datasets
from search.training.run import finite_or_inf, summarize_history, train_params

if TYPE_CHECKING:
    from search.engine.objective import Objective


def fold_data(objective: Objective) -> list[PreparedData]:
    """The objective's data cut into its folds, prepared once per data set."""
    cache: dict[int, list[PreparedData]] = objective.__dict__.setdefault("_fold_cache", {})
    key = id(objective.data)
    if key not in cache:
        folds = int(objective.spec.training.folds or 0)
        cache[key] = [PreparedData(d) for d in fold_datasets(objective.data.dataset, folds)]
    return cache[key]


def cross_validate(objective: Objective, trial: optuna.Trial, *, seed: int, prune: bool) -> float:
    """Train every fold of one trial; the mean best-epoch loss over folds is its value."""
    spec = objective.spec
    params = objective.suggest(trial)
    values: list[float] = []
    best_epochs: list[int] = []
    first: dict[str, Any] = {}
    param_count = 0
    folds = fold_data(objective)
    for i, data in enumerate(folds):
        callbacks: list[keras.callbacks.Callback] = []
        if spec.training.patience:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor=objective.monitor, patience=spec.training.patience, mode="min"
                )
            )
        history = History()
        run = train_params(spec, data, params, seed=seed, callbacks=callbacks, history=history)
        param_count = run.param_count
        summary = summarize_history(history, spec.objective)
        if i == 0:
            first = run.attributes(spec.objective)
            first.pop("best_step", None)  # a fold study's steps are folds, not epochs
            objective._record_reference(trial, run)  # noqa: SLF001 - the objective's own hook
        values.append(min(finite_or_inf(getattr(r, objective.monitor)) for r in history.records))
        best_epochs.append(int(summary.get("best_epoch", 0)))
        del run
        mean = statistics.fmean(values)
        if not math.isfinite(mean):
            trial.set_user_attr("pruned_reason", f"fold {i + 1}: {objective.monitor} not finite")
            raise optuna.TrialPruned(f"fold {i + 1} never reached a finite loss")
        trial.set_user_attr("fold_values", values)
        if spec.multi_objective:  # Optuna has no report() for multi-objective studies
            continue
        # Wilcoxon compares per-fold scores with the best trial's same folds; the other
        # pruners compare running means.
        trial.report(values[-1] if spec.pruner.name == "wilcoxon" else mean, step=i)
        if prune and i < len(folds) - 1 and trial.should_prune():  # the last saves nothing
            for key, value in {**first, f"{objective.monitor}_best": mean}.items():
                trial.set_user_attr(key, value)  # the trial line and the report read these
            raise optuna.TrialPruned(f"pruned after fold {i + 1}: running mean {mean:.4g}")
    for key, value in first.items():
        trial.set_user_attr(key, value)
    mean = statistics.fmean(values)
    trial.set_user_attr("fold_values", values)
    trial.set_user_attr("fold_best_epochs", best_epochs)
    trial.set_user_attr(f"{objective.monitor}_best", mean)
    trial.set_user_attr("best_epoch", max(1, round(statistics.fmean(best_epochs))))
    trial.set_user_attr("param_count", param_count)
    trial.set_user_attr("folds", len(values))
    return mean
