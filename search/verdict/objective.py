"""The objective of a companion study: train one job (configuration, seed, fraction).

It is the study's own objective (:class:`search.engine.objective.Objective`: the same training,
measurements and attributes) with the sampling replaced by the job's fixed values and the seed by
the job's seed. A fraction below 1 trains on the first rows of a fixed permutation of the
training split (seed 0), so the subsets are nested: 1/8 ⊂ 1/4 ⊂ 1/2 ⊂ all.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from search.engine.objective import Objective
from search.errors import VerdictError
from search.training.prepared import History, PreparedData
from search.verdict.jobs import JOB_ATTR

if TYPE_CHECKING:
    import keras

    from search.data import Dataset
    from search.spec.studyfile import StudySpec
    from search.training.run import TrainingRun


def subset_rows(n: int, fraction: float) -> np.ndarray:
    """The training rows of a fraction: the first of one fixed permutation, in order.

    Example:
        >>> subset_rows(8, 0.5).tolist(), subset_rows(8, 0.25).tolist()
        ([2, 3, 4, 6], [2, 4])
    """
    order = np.random.default_rng(0).permutation(n)
    count = max(1, round(n * fraction))
    return np.sort(order[:count])


def fraction_of(dataset: Dataset, fraction: float) -> Dataset:
    """The dataset with its training split cut to ``fraction`` of the rows (others kept)."""
    if fraction >= 1.0:
        return dataset
    rows = subset_rows(int(dataset.x_train.shape[0]), fraction)
    return dataclasses.replace(
        dataset, x_train=dataset.x_train[rows], y_train=dataset.y_train[rows]
    )


class JobObjective(Objective):
    """Trains the job stored on each trial of a companion study.

    Args:
        spec: The study file the verdict is of.
        data: Its data prepared once; fractions are prepared from it when first needed.
    """

    def __init__(self, spec: StudySpec, data: PreparedData) -> None:
        super().__init__(spec, data)
        self._data_by_fraction: dict[float, PreparedData] = {1.0: data}
        self._full = data

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        attrs = trial.user_attrs
        if JOB_ATTR not in attrs:  # not enqueued by a verdict: nothing to train, stop here
            trial.study.stop()
            raise VerdictError(
                f"trial {trial.number} of {trial.study.study_name} is not a verdict job; "
                "plan the jobs with capsearch verdict."
            )
        self.data = self._prepared(float(attrs["fraction"]))
        return super().__call__(trial)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The job's configuration, recorded as the trial's fixed parameters."""
        config = dict(trial.user_attrs["config"])
        for name, value in config.items():
            if isinstance(value, (list, tuple, dict)):  # e.g. one width per layer: attrs only
                continue
            _record(trial, name, value, self._choices(name, value))
        trial.suggest_int("seed", int(trial.user_attrs["seed"]), int(trial.user_attrs["seed"]))
        fraction = float(trial.user_attrs["fraction"])
        trial.suggest_float("fraction", fraction, fraction)
        return config

    def epoch_cap(self, trial: optuna.Trial) -> int | None:
        """The job's epoch cap: that of the baseline it re-trains, if it has its own."""
        epochs = trial.user_attrs.get("epochs")
        return int(epochs) if epochs is not None else None

    def trial_seed(self, trial: optuna.Trial) -> int:
        """The job's seed, not the trial number's."""
        return int(trial.user_attrs["seed"])

    def _callbacks(
        self, trial: optuna.Trial, history: History, *, prune: bool
    ) -> list[keras.callbacks.Callback]:
        """A re-training is never pruned: every seed runs its whole curve."""
        return super()._callbacks(trial, history, prune=False)

    def _record_reference(self, trial: optuna.Trial, run: TrainingRun) -> None:
        """Also the exact training loss at the end (inference mode: no dropout, no penalty).

        Generalize studies record Keras' running training loss, which dropout inflates; the
        verdict's underfitting rule reads this one instead.
        """
        super()._record_reference(trial, run)
        loss, _ = self.data.evaluate(run.model, "train")
        trial.set_user_attr("train_loss_inference", float(loss))

    def _prepared(self, fraction: float) -> PreparedData:
        if fraction not in self._data_by_fraction:
            dataset = fraction_of(self._full.dataset, fraction)
            self._data_by_fraction[fraction] = PreparedData(dataset)
        return self._data_by_fraction[fraction]

    def _choices(self, name: str, value: Any) -> list[Any]:
        """One fixed list of choices per string or boolean parameter, for every trial alike."""
        if isinstance(value, bool):
            return [False, True]
        param = self.spec.space.get(name)
        choices = getattr(param, "choices", None)
        if choices is None:
            choices = [getattr(param, "value", value)]
        return sorted({*choices, value}, key=str)


def _record(trial: optuna.Trial, name: str, value: Any, choices: list[Any]) -> None:
    """Record one fixed value as a parameter (a one-point range or a fixed choice list)."""
    if isinstance(value, (bool, str)):
        trial.suggest_categorical(name, choices)
    elif isinstance(value, int):
        trial.suggest_int(name, value, value)
    else:
        trial.suggest_float(name, float(value), float(value))
