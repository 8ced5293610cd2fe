"""Opening a study: its sampler and pruner, creation or resumption, and the rules that read it.

One rule each, used everywhere: :data:`FINISHED` (the states that count against the budget),
:func:`best_trial` (lowest loss, ties to the smaller model, then to the earlier trial) and
:func:`count_finished`.
"""

from __future__ import annotations

import json
import platform
import warnings
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from search.spec.studyfile import StudySpec

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
"""Trial states that count against a study's budget of trials."""


def make_sampler(spec: StudySpec, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler; each worker offsets the seed so workers do not propose twins."""
    seed = spec.sampler.seed + seed_offset
    if spec.sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        # `multivariate`, `group` and `constant_liar` are marked experimental but long stable.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=spec.sampler.n_startup_trials,
            multivariate=True,
            group=True,  # conditional parameters (use_l2 -> l2) get their own joint models
            constant_liar=True,  # running trials count as pending: parallel workers spread out
        )


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The study's per-epoch pruner; Hyperband's resource is the epoch."""
    if spec.multi_objective:  # Optuna cannot prune multi-objective trials
        return optuna.pruners.NopPruner()
    opts = spec.pruner.options
    name = spec.pruner.name
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=opts.get("min_resource", 1),
            max_resource=spec.training.epochs,
            reduction_factor=opts.get("reduction_factor", 3),
        )
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=opts.get("min_resource", 1),
            reduction_factor=opts.get("reduction_factor", 3),
            min_early_stopping_rate=opts.get("min_early_stopping_rate", 0),
        )
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=opts.get("n_startup_trials", 5),
            n_warmup_steps=opts.get("n_warmup_steps", 0),
            interval_steps=opts.get("interval_steps", 1),
        )
    return optuna.pruners.NopPruner()


def library_versions() -> dict[str, str]:
    """Versions of what produced the trials, stored on the study."""
    import keras  # TensorFlow: imported only once a study is really opened
    import numpy
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "optuna": optuna.__version__,
        "numpy": numpy.__version__,
    }


def open_study(
    spec: StudySpec, storage: optuna.storages.BaseStorage, seed_offset: int = 0
) -> tuple[optuna.Study, bool]:
    """Create the study (recording its file, versions and baselines) or load it to resume.

    Call it under :func:`search.distributed.study_lock` when several processes may start
    together, so the baselines are enqueued once.

    Returns:
        The study and whether it was created now.
    """
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        sampler=make_sampler(spec, seed_offset),
        pruner=make_pruner(spec),
        directions=spec.directions,
        load_if_exists=True,
    )
    created = spec.name not in existing
    if created or "study_file" not in study.user_attrs:
        study.set_user_attr("study_file", str(spec.path))
        study.set_user_attr("study_file_text", spec.path.read_text(encoding="utf-8"))
        study.set_user_attr("spec", json.loads(json.dumps(spec.to_dict())))
        study.set_user_attr("objective", spec.objective)
        study.set_user_attr("versions", library_versions())
        for baseline in spec.baselines:
            study.enqueue_trial(
                spec.baseline_trial_params(baseline),
                user_attrs={"baseline": baseline.name},
                skip_if_exists=True,
            )
        # objective names (val_loss, param_count), for the dashboard
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(spec.metric_names)
    return study, created


def count_finished(study: optuna.Study) -> int:
    """Trials that count against the budget (COMPLETE or PRUNED)."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def is_multi_objective(study: optuna.Study) -> bool:
    """Whether the study has more than one objective (loss and parameter count)."""
    return len(study.directions) > 1


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The completed trial with the lowest loss; None if none completed.

    The one rule for "best" everywhere (summary, report, test evaluation, export, rerun):
    lowest first objective (the loss), ties to the lower second one (the parameter count of a
    multi-objective study), then to the earlier trial. A single-objective study's best is
    Optuna's ``study.best_trial`` except that a tie goes to the earlier trial by rule.
    """
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        return None
    return min(completed, key=lambda t: (*t.values, t.number))
