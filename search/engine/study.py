"""Opening a study: its sampler and pruner, creation or resumption, and the rules that read it.

One rule each, used everywhere: :data:`FINISHED` (the states that count against the budget),
:func:`best_trial` (lowest loss, ties to the smaller model, then to the earlier trial) and
:func:`count_finished`.
"""

from __future__ import annotations

import contextlib
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


def sampler_seed(spec: StudySpec, seed_offset: int = 0, stored_trials: int = 0) -> int:
    """The seed of a study's sampler: the study file's seed, the worker's offset, the trials stored.

    A new study (no trial stored) starts from ``sampler.seed + seed_offset``, as always. A
    resumed one adds the number of trials already stored (whatever their state), so it goes on
    with new draws instead of repeating the first ones of the sequence it started with; the
    same stored study resumed twice still draws the same.

    Example:
        >>> from types import SimpleNamespace
        >>> spec = SimpleNamespace(sampler=SimpleNamespace(seed=42))
        >>> sampler_seed(spec), sampler_seed(spec, 0, 4), sampler_seed(spec, 7, 4)
        (42, 46, 53)
    """
    return int(spec.sampler.seed) + seed_offset + stored_trials


def make_sampler(
    spec: StudySpec, seed_offset: int = 0, stored_trials: int = 0
) -> optuna.samplers.BaseSampler:
    """The study's sampler; each worker offsets the seed so workers do not propose twins.

    ``stored_trials`` is how many trials a resumed study already holds (see
    :func:`sampler_seed`).
    """
    seed = sampler_seed(spec, seed_offset, stored_trials)
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
    if name == "wilcoxon":  # per-fold scores against the best trial's same folds
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(
                p_threshold=opts.get("p_threshold", 0.1),
                n_startup_steps=opts.get("n_startup_steps", 2),
            )
    return optuna.pruners.NopPruner()


def library_versions() -> dict[str, str]:
    """Versions of what produced the trials, stored on the study."""
    import numpy

    from search.training.quiet_start import native_startup_quieted

    with native_startup_quieted():  # TensorFlow: imported only once a study is really opened
        import keras
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
    file_text = _study_file_text(spec)  # first: a missing file creates nothing
    stored_trials = 0
    if spec.name in existing:  # resumed: the sampler goes on, it does not start over
        stored_trials = storage.get_n_trials(storage.get_study_id_from_name(spec.name))
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        sampler=make_sampler(spec, seed_offset, stored_trials),
        pruner=make_pruner(spec),
        directions=spec.directions,
        load_if_exists=True,
    )
    created = spec.name not in existing
    if not created:
        _check_resumable(study, spec, stored_trials)
    if created or "study_file" not in study.user_attrs:
        try:
            _record_study(study, spec, file_text)
        except BaseException:
            if created:  # no half-made study is left behind: the next run starts afresh
                with contextlib.suppress(Exception):
                    optuna.delete_study(study_name=spec.name, storage=storage)
            raise
    return study, created


_OWN_MARKS = ("study_file", "spec", "fingerprint", "objective")
"""User attributes every study this package made carries (the oldest ones at least one)."""


def _check_resumable(study: optuna.Study, spec: StudySpec, stored_trials: int) -> None:
    """Refuse a stored study of the same name that this package did not make, or that
    optimizes in other directions: resuming it would mix its trials into this search's best.

    An empty study with no marks (a creation interrupted before its attributes were written)
    is taken over.
    """
    from search.errors import StudyMismatchError

    name = study.study_name
    ours = any(mark in study.user_attrs for mark in _OWN_MARKS)
    if not ours and stored_trials:
        raise StudyMismatchError(
            f"study {name!r} holds {stored_trials} trial(s) that no capsearch search made (it "
            "stores no study file); nothing was run. Give this search another study name (rename "
            f"the study file, or study_name= from Python), or delete that study (capsearch "
            f"delete {name} with the same --storage) if it is not needed."
        )
    stored = [d.name.lower() for d in study.directions]
    if stored != list(spec.directions):
        raise StudyMismatchError(
            f"study {name!r} is stored with direction(s) {', '.join(stored)}, this search's are "
            f"{', '.join(spec.directions)}; nothing was run. Give this search another study "
            "name (rename the study file, or study_name= from Python)."
        )


def _study_file_text(spec: StudySpec) -> str:
    """The study file's text, stored on the study; a file that cannot be read is bad input."""
    from search.errors import StudyFileError

    try:
        return spec.path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise StudyFileError(
            str(spec.path), "", f"cannot read the study file ({reason}); fix the path and run again"
        ) from None


def _record_study(study: optuna.Study, spec: StudySpec, file_text: str) -> None:
    """A new study's file, spec, versions, baselines (enqueued) and metric names."""
    study.set_user_attr("study_file", str(spec.path.resolve()))  # found from any folder
    study.set_user_attr("study_file_text", file_text)
    study.set_user_attr("spec", json.loads(json.dumps(spec.to_dict())))
    study.set_user_attr("objective", spec.objective)
    study.set_user_attr("versions", library_versions())
    # By name, not by parameters: Optuna's skip_if_exists compares parameters only, so a
    # baseline that differs from another by its own epoch cap alone would never run.
    enqueued = {t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False)}
    for baseline in spec.baselines:
        if baseline.name not in enqueued:
            study.enqueue_trial(
                spec.baseline_trial_params(baseline), user_attrs={"baseline": baseline.name}
            )
    # objective names (val_loss, param_count), for the dashboard
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(spec.metric_names)


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
