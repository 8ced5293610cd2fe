"""The re-trainings of a verdict, planned as trials of a companion study.

A verdict re-trains configurations of a finished study: the best trial, the next ones (top
``k``) and every baseline (or only the best one) with several seeds; the best with each
regularizer it uses switched off; the best on fractions of the training rows. Each re-training
is a :class:`Job` and becomes one trial of the companion study
(:func:`search.views.verdict_view.companion_name`, same storage): its configuration, seed and
data fraction are the trial's fixed parameters, its key and roles are user attributes. Jobs are
enqueued once; planning again enqueues only what is missing (a job whose trials all failed
included), which is how a stopped verdict resumes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.distributed.study_lock import study_lock
from search.engine.stored import model_params
from search.engine.study import FINISHED
from search.verdict.regularizers import used_regularizers

if TYPE_CHECKING:
    from search.spec.studyfile import StudySpec, VerdictSpec

JOB_ATTR = "verdict_job"
SEED_BASE = 100_000
"""Repeat seeds are ``training.seed + SEED_BASE + i``: apart from every trial's own seed."""


@dataclass
class Job:
    """One re-training: a configuration, a seed and a fraction of the training rows."""

    config: dict[str, Any]
    seed: int
    fraction: float = 1.0
    roles: list[str] = field(default_factory=list)
    source_trial: int | None = None
    epochs: int | None = None  # a baseline's own epoch cap; None: the study's epochs

    @property
    def key(self) -> str:
        """The job's identity: configuration, seed, fraction and cap (roles do not count)."""
        return job_key(self.config, self.seed, self.fraction, self.epochs)

    def user_attrs(self) -> dict[str, Any]:
        return {
            JOB_ATTR: self.key,
            "roles": list(self.roles),
            "config": dict(self.config),
            "seed": self.seed,
            "fraction": self.fraction,
            "source_trial": self.source_trial,
            "epochs": self.epochs,
        }


def job_key(
    config: Mapping[str, Any], seed: int, fraction: float, epochs: int | None = None
) -> str:
    """A canonical string of what a job trains (an epoch cap only where there is one).

    Example:
        >>> job_key({"units": 8, "l2": 0.0}, 3, 1.0)
        '{"config": {"l2": 0.0, "units": 8}, "fraction": 1.0, "seed": 3}'
        >>> job_key({"units": 8}, 3, 1.0, epochs=10)
        '{"config": {"units": 8}, "epochs": 10, "fraction": 1.0, "seed": 3}'
    """
    key: dict[str, Any] = {"config": dict(config), "seed": int(seed), "fraction": float(fraction)}
    if epochs is not None:
        key["epochs"] = int(epochs)
    return json.dumps(key, sort_keys=True)


@dataclass
class Group:
    """Jobs of one configuration at the full data, one per seed (a mean ± std in the verdict)."""

    label: str
    trial: FrozenTrial
    config: dict[str, Any]
    keys: list[str]


@dataclass
class Plan:
    """Every job of a verdict, and how they group into what the verdict compares."""

    jobs: list[Job]
    best: Group
    top: list[Group]
    baseline: Group | None  # the best baseline by its search run
    baselines: list[Group]  # the baselines re-trained with the seeds, in the study file's order
    ablations: list[tuple[str, Group]]  # (regularizer name, group)
    fractions: list[tuple[float, list[str]]]  # (fraction, keys); 1.0 is the best's group

    def job_keys(self) -> set[str]:
        return {job.key for job in self.jobs}


def repeat_seeds(spec: StudySpec, count: int) -> list[int]:
    """The seeds of the repeats: the same for every configuration, so they compare fairly."""
    return [spec.training.seed + SEED_BASE + i for i in range(count)]


def ranked_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Completed trials, best first (lowest value, ties to the earlier trial)."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(completed, key=lambda t: (*t.values, t.number))


def plan_jobs(study: optuna.Study, spec: StudySpec, verdict: VerdictSpec) -> Plan:
    """The jobs a verdict of ``study`` needs (the study must have a completed trial)."""
    ranked = ranked_trials(study)
    seeds = repeat_seeds(spec, verdict.seeds)
    jobs: dict[str, Job] = {}

    def add(
        config: dict[str, Any], seed: int, fraction: float, role: str, trial: FrozenTrial
    ) -> str:
        job = Job(
            config,
            seed,
            fraction,
            source_trial=trial.number,
            epochs=spec.baseline_epochs(trial.user_attrs.get("baseline")),
        )
        job = jobs.setdefault(job.key, job)
        if role not in job.roles:
            job.roles.append(role)
        return job.key

    def group(label: str, trial: FrozenTrial, config: dict[str, Any], role: str) -> Group:
        keys = [add(config, s, 1.0, role, trial) for s in seeds]
        return Group(label, trial, config, keys)

    best = ranked[0]
    best_config = model_params(spec, best)
    best_group = group(f"best (trial {best.number})", best, best_config, "best")
    top = [best_group]
    for rank, trial in enumerate(ranked[1 : verdict.top_k], start=2):
        name = f" baseline {trial.user_attrs['baseline']}" if "baseline" in trial.user_attrs else ""
        label = f"#{rank}{name} (trial {trial.number})"
        top.append(group(label, trial, model_params(spec, trial), "top"))
    by_value = [t for t in ranked if "baseline" in t.user_attrs]
    repeated = by_value[:1] if verdict.baselines == "best" else by_value
    # Enqueued first, in the file's order, so their trial numbers keep that order.
    baseline_groups = [
        group(
            f"baseline {t.user_attrs['baseline']} (trial {t.number})",
            t,
            model_params(spec, t),
            "baseline",
        )
        for t in sorted(repeated, key=lambda t: t.number)
    ]
    baseline = next((g for g in baseline_groups if g.trial is by_value[0]), None)
    ablations = []
    for regularizer in used_regularizers(best_config):
        config = regularizer.switched_off(best_config)
        label = f"best without {regularizer.name}"
        ablations.append(
            (regularizer.name, group(label, best, config, f"ablation:{regularizer.param}"))
        )
    fractions: list[tuple[float, list[str]]] = []
    for fraction in verdict.fractions:
        if fraction >= 1.0:
            fractions.append((1.0, best_group.keys))
            continue
        keys = [
            add(best_config, s, fraction, f"fraction:{fraction:g}", best)
            for s in seeds[: verdict.fraction_seeds]
        ]
        fractions.append((fraction, keys))
    return Plan(
        list(jobs.values()), best_group, top, baseline, baseline_groups, ablations, fractions
    )


def trials_by_job(companion: optuna.Study) -> dict[str, list[FrozenTrial]]:
    """The companion study's trials, by job key."""
    out: dict[str, list[FrozenTrial]] = {}
    for trial in companion.get_trials(deepcopy=False):
        key = trial.user_attrs.get(JOB_ATTR)
        if key is not None:
            out.setdefault(str(key), []).append(trial)
    return out


def enqueue_missing(
    companion: optuna.Study, jobs: Iterable[Job], storage: optuna.storages.BaseStorage
) -> int:
    """Enqueue every job with no finished, running or waiting trial; returns how many.

    Under the companion study's lock, so verdicts started together enqueue each job once.
    """
    alive = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)
    count = 0
    with study_lock(storage, companion.study_name):
        existing = trials_by_job(companion)
        for job in jobs:
            if any(t.state in alive for t in existing.get(job.key, [])):
                continue
            companion.enqueue_trial(job_params(job), user_attrs=job.user_attrs())
            count += 1
    return count


def job_params(job: Job) -> dict[str, Any]:
    """The fixed parameters of a job's trial: its configuration, seed and fraction."""
    return {**job.config, "seed": job.seed, "fraction": job.fraction}


def job_values(companion_trials: Mapping[str, list[FrozenTrial]], key: str) -> FrozenTrial | None:
    """The finished trial of a job (the first COMPLETE one), if any."""
    for trial in companion_trials.get(key, []):
        if trial.state == TrialState.COMPLETE:
            return trial
    return None
