"""Re-training a stored trial from what it stored: parameters (or ``hp_values``) and seed.

The search keeps no weights. With the same seed, the same data and the same libraries on CPU,
re-training repeats the trial (see :data:`search.replay.rerun.DEFAULT_RTOL`); the test
evaluation, ``capsearch export`` and ``capsearch rerun`` all go through :func:`retrain_trial`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from search.engine.stored import model_params, trial_seed
from search.kerastuner import (
    fixed_hyperparameters,
    load_hypermodel,
    train_hypermodel,
    trial_hp_values,
)
from search.training.run import TrainingRun, train_params
from search.training.session import clear_session

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from search.spec.studyfile import StudySpec
    from search.training.prepared import History, PreparedData


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

    Built-in studies go through :func:`search.training.run.train_params`; hypermodel studies rebuild
    through the hypermodel with the trial's ``hp_values`` fixed.
    """
    seed = trial_seed(spec, trial) if seed is None else seed
    clear_session()  # as before every trial of the search (collects garbage)
    if spec.hypermodel is not None:
        hp = fixed_hyperparameters(trial_hp_values(trial))
        return train_hypermodel(
            spec, data, load_hypermodel(spec), hp, seed=seed, epochs=epochs, history=history
        )
    params = model_params(spec, trial)
    return train_params(
        spec,
        data,
        params,
        seed=seed,
        epochs=epochs,
        history=history,
        schedule_epochs=trial_epoch_cap(spec, trial),
    )


def trial_epoch_cap(spec: StudySpec, trial: FrozenTrial) -> int:
    """The epochs a stored trial could train in the search: its baseline's cap or the study's."""
    return spec.baseline_epochs(trial.user_attrs.get("baseline")) or spec.training.epochs
