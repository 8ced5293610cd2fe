"""What a stored study holds, read back: its study file and its trials' seeds and values."""

from __future__ import annotations

import tomllib
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial

from search.engine.study import FINISHED, best_trial
from search.errors import ReplayError, StudyFileError
from search.spec.studyfile import spec_from_dict

if TYPE_CHECKING:
    from search.spec.studyfile import StudySpec


def trial_seed(spec: StudySpec, trial: FrozenTrial) -> int:
    """The seed a trial trained with (its ``seed`` attribute; study seed + number before)."""
    return int(trial.user_attrs.get("seed", spec.training.seed + trial.number))


def stored_value(spec: StudySpec, trial: FrozenTrial) -> float | None:
    """A trial's best-epoch loss: its (first) value, or a pruned trial's best recorded loss."""
    if trial.values:
        return float(trial.values[0])  # multi-objective studies: (loss, param_count)
    value = trial.user_attrs.get(f"{spec.monitor}_best")
    return float(value) if value is not None else None


def stored_spec(spec: StudySpec, study: optuna.Study) -> StudySpec:
    """The study file as it was when the study was created (data split, epochs, hypermodel).

    Falls back to ``spec`` (the current file) for studies that did not store their file.
    """
    text = study.user_attrs.get("study_file_text")
    if not text:
        return spec
    try:
        return spec_from_dict(tomllib.loads(text), name=spec.name, path=spec.path)
    except (StudyFileError, tomllib.TOMLDecodeError):
        return spec  # written for an older capsearch: the current file is the best guess


def pick_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    """The best trial (``number=None``) or trial ``number``; it must have trained an epoch.

    Raises:
        ReplayError: No completed trial, no such trial, or one with nothing to replay.
    """
    if number is None:
        best = best_trial(study)
        if best is None:
            raise ReplayError(f"study {study.study_name} has no completed trial yet.")
        return best
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise ReplayError(
            f"study {study.study_name} has no trial {number}; it has trials 0 to {len(trials) - 1}."
        )
    trial = trials[number]
    if trial.state not in FINISHED or not trial.user_attrs.get("epochs_run"):
        raise ReplayError(
            f"trial {number} is {trial.state.name.lower()} with no finished epoch; nothing to "
            "replay. Pick a complete or pruned trial (capsearch show)."
        )
    return trial


def model_params(spec: StudySpec, trial: FrozenTrial) -> dict[str, Any]:
    """All model parameters of a stored trial: fixed ones included, ``use_l2 = False`` as 0."""
    return spec.stored_params(trial.params, trial.user_attrs.get("baseline"))
