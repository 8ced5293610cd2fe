"""The verdict computed from a study, its companion study's re-trainings and its data.

Everything here reads stored values; nothing trains. The rules and their thresholds are in
:mod:`search.verdict.rules`, the words in :mod:`search.verdict.sentences`.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from search.data.constant import constant_losses
from search.data.target import rescaling_option, target_scale
from search.verdict.jobs import Group, Plan, job_values, trials_by_job
from search.verdict.rules import (
    FAMILY_FIT_SHARE,
    MEMORIZE_SHARE,
    NOISE_Z,
    OVERFIT_GAP,
    OVERFIT_RISE,
    UNDERFIT_SHARE,
    UNSTABLE_RISE,
    compare,
    family_fit,
    mean_std,
    regime,
)
from search.verdict.sentences import sentences, short_label
from search.views.summary import format_params, trial_params

if TYPE_CHECKING:
    import optuna

    from search.data import Dataset
    from search.spec.studyfile import StudySpec

SCHEMA = "capsearch.verdict/1"


def condition_number(dataset: Dataset) -> float | None:
    """The condition number of the least-squares problem ``[X, 1] w = y`` (linear studies)."""
    if "lstsq_coefficients" not in dataset.reference or dataset.is_sparse:
        return None
    x = np.asarray(dataset.x_train, dtype=np.float64)
    return float(np.linalg.cond(np.hstack([x, np.ones((len(x), 1))])))


def ordered(config: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration in the order people read it (as the trial lines show it).

    Example:
        >>> list(ordered({"learning_rate": 0.1, "units": 8, "layers": 2}))
        ['layers', 'units', 'learning_rate']
    """
    order = ["layers", "units", "activation", "l2", "dropout", "batch_size", "learning_rate"]
    return dict(sorted(config.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))


def summarize_group(group: Group, found: Mapping[str, list[FrozenTrial]]) -> dict[str, Any]:
    """A configuration's repeats: seeds, values, mean ± std, and its own search run."""
    seeds, values = [], []
    for key in group.keys:
        trial = job_values(found, key)
        if trial is not None and trial.values:
            seeds.append(int(trial.user_attrs["seed"]))
            values.append(float(trial.values[0]))
    mean, std = mean_std(values)
    single = group.trial.values[0] if group.trial.values else None
    return {
        "label": group.label,
        "trial": group.trial.number,
        "params": format_params(ordered(group.config)),
        "param_count": group.trial.user_attrs.get("param_count"),
        "single_run": single,
        "seeds": seeds,
        "values": values,
        "planned": len(group.keys),
        "n": len(values),
        "mean": mean,
        "std": std,
    }


def compute_verdict(
    spec: StudySpec,
    study: optuna.Study,
    companion: optuna.Study,
    plan: Plan,
    dataset: Dataset,
    *,
    memorize_threshold: float | None = None,
    test: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The verdict as a JSON-ready dict (schema in docs/verdict.md, ``schema`` names it)."""
    found = trials_by_job(companion)
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    completed = [t for t in finished if t.state == TrialState.COMPLETE]
    constant_train, constant_val = constant_losses(dataset)
    train_bests = [
        t.user_attrs["train_loss_best"]
        for t in finished
        if isinstance(t.user_attrs.get("train_loss_best"), (int, float))
    ]
    exact = _exact_train_losses(plan, found)
    if spec.objective == "memorize":  # its value is the best-epoch training loss: the repeats'
        exact = _repeat_means(plan, found)
    comparable = [
        v
        for t in finished
        if t.user_attrs.get("train_loss_kind") != "running"
        for v in [t.user_attrs.get("train_loss_best")]
        if isinstance(v, (int, float))
    ] + list(exact.values())
    train_bests = comparable or train_bests  # only running losses: compare like with like
    family_best = min(train_bests) if train_bests else constant_train
    done = sum(1 for job in plan.jobs if job_values(found, job.key) is not None)

    # Regimes: the best trial and every baseline, from their search runs.
    memorize = spec.objective == "memorize"
    best = plan.best.trial
    best_name = f", baseline {best.user_attrs['baseline']}" if "baseline" in best.user_attrs else ""
    regimes = [
        {
            "label": f"best{best_name}",  # a best that is a baseline gets one row
            **regime(best, family_best, constant_train, exact.get(best.number), memorize=memorize),
        }
    ]
    for t in sorted(finished, key=lambda t: t.number):
        if "baseline" in t.user_attrs and t.number != best.number:
            label = f"baseline {t.user_attrs['baseline']}"
            row = regime(t, family_best, constant_train, exact.get(t.number), memorize=memorize)
            regimes.append({"label": label, **row})

    # Is the winner real? Repeats of the top k and the baselines.
    groups = _repeated_groups(plan)
    repeats = [summarize_group(g, found) for g in groups]
    rep_of = {id(g): r for g, r in zip(groups, repeats, strict=True)}
    best_rep = repeats[0]
    baseline_reps = [_rep_for(g, groups, rep_of) for g in plan.baselines]
    base_rep = None
    if baseline_reps:
        # The best baseline by its mean over seeds; by its search run until one is measured.
        measured_bases = [r for r in baseline_reps if r["mean"] is not None]
        if measured_bases:
            base_rep = min(measured_bases, key=lambda r: (r["mean"], r["trial"]))
        elif plan.baseline is not None:
            base_rep = _rep_for(plan.baseline, groups, rep_of)
    measured = [r for r in repeats if r["mean"] is not None]
    ranking = sorted(measured, key=lambda r: (r["mean"], r["trial"]))
    winner: dict[str, Any] = {
        "ranking": [r["label"] for r in ranking],
        "best_label": best_rep["label"],
        "baseline_label": base_rep["label"] if base_rep else None,
        "baseline_name": _baseline_name(finished, base_rep) if base_rep else None,
    }
    if len(ranking) > 1:
        first_two = compare(ranking[0], ranking[1])
        winner["ranking_within_noise"] = first_two["decision"] != "a lower"
        winner["top_two"] = first_two
    if base_rep is not None:
        winner["same_configuration"] = base_rep is best_rep
        versus = compare(best_rep, base_rep)
        winner["versus_baseline"] = versus
        winner["beats_baseline"] = versus["decision"] == "a lower"
    if best_rep["mean"] is not None and best_rep["std"] and best_rep["single_run"] is not None:
        winner["single_run_z"] = (best_rep["single_run"] - best_rep["mean"]) / best_rep["std"]

    # Regularization: the best with each regularizer off.
    regularization = []
    for name, group in plan.ablations:
        off = summarize_group(group, found)
        effect = compare(best_rep, off)
        decision = {"a lower": "helps", "b lower": "hurts"}.get(
            effect["decision"], effect["decision"]
        )
        regularization.append(
            {
                "regularizer": name,
                "value": next(
                    (
                        plan.best.config[k]
                        for k in plan.best.config
                        if group.config[k] != plan.best.config[k]
                    ),
                    None,
                ),
                "with": {"mean": best_rep["mean"], "std": best_rep["std"], "n": best_rep["n"]},
                "without": {"mean": off["mean"], "std": off["std"], "n": off["n"]},
                "effect": effect["difference"],
                "noise": effect["noise"],
                "decision": decision,
            }
        )

    # Each baseline against the study file's first one (the user's own network, as a rule).
    baselines: dict[str, Any] = {
        "reference": None,
        "reference_name": None,
        "best_versus_reference": None,
        "comparisons": [],
    }
    if baseline_reps:
        reference = baseline_reps[0]
        baselines["reference"] = reference["label"]
        baselines["reference_name"] = short_label(_baseline_name(finished, reference))
        if all(best_rep is not r for r in baseline_reps):  # a best that is a baseline has its row
            baselines["best_versus_reference"] = _versus(reference, best_rep, "best")
        for other in baseline_reps[1:]:
            name = short_label(_baseline_name(finished, other))
            baselines["comparisons"].append(_versus(reference, other, name))

    capacity = _capacity(spec, plan, completed, best_rep, constant_train, memorize_threshold)
    data_size = _data_size(spec, plan, found, dataset)
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "study": study.study_name,
        "companion": companion.study_name,
        "objective": spec.objective,
        "monitor": spec.monitor,
        "jobs": {"planned": len(plan.jobs), "finished": done},
        "complete": done == len(plan.jobs),
        "thresholds": {
            "underfit_share": UNDERFIT_SHARE,
            "overfit_rise": OVERFIT_RISE,
            "overfit_gap": OVERFIT_GAP,
            "unstable_rise": UNSTABLE_RISE,
            "noise_z": NOISE_Z,
            "family_fit_share": FAMILY_FIT_SHARE,
            "memorize_threshold": capacity["memorize_threshold"],
        },
        "constant_predictor": {"train_loss": constant_train, "val_loss": constant_val},
        "family_best_train_loss": family_best,
        "family_fit": family_fit(
            family_best,
            constant_train,
            target_scale(dataset),
            rescaling_option(spec.data.source),
        ),
        "regimes": regimes,
        "capacity": capacity,
        "repeats": repeats,
        "winner": winner,
        "baselines": baselines,
        "regularization": regularization,
        "data_size": data_size,
        "test": dict(test) if test else None,
        "condition_number": condition_number(dataset),
        "coefficients": [
            {
                "label": r["label"],
                "trial": r["trial"],
                "coefficient_error": t.user_attrs["coefficient_error"],
                "coefficients": t.user_attrs.get("coefficients"),
            }
            for r in regimes
            for t in [study.trials[r["trial"]]]
            if "coefficient_error" in t.user_attrs
        ],
    }
    out["sentences"] = sentences(out)
    return out


def _versus(reference: Mapping[str, Any], other: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``other``'s repeats against the reference's: ``better``, ``worse`` or ``within noise``."""
    effect = compare(reference, other)
    decision = {"a lower": "worse", "b lower": "better"}.get(effect["decision"], effect["decision"])
    return {
        "label": other["label"],
        "name": name,
        "trial": other["trial"],
        "mean": other["mean"],
        "std": other["std"],
        "n": other["n"],
        "difference": effect["difference"],
        "noise": effect["noise"],
        "decision": decision,
    }


def _repeated_groups(plan: Plan) -> list[Group]:
    """The configurations re-trained on all rows with every seed: the top k, then the baselines
    that are not among them (a baseline in the top k is one group, labelled by its rank)."""
    groups = list(plan.top)
    for group in [*plan.baselines, *([plan.baseline] if plan.baseline else [])]:
        if all(group.keys != g.keys for g in groups):
            groups.append(group)
    return groups


def _rep_for(
    group: Group, groups: Sequence[Group], rep_of: Mapping[int, dict[str, Any]]
) -> dict[str, Any]:
    """The repeat summary of ``group``: that of the repeated group with the same jobs."""
    return rep_of[id(next(g for g in groups if g.keys == group.keys))]


def _baseline_name(finished: Sequence[FrozenTrial], rep: Mapping[str, Any]) -> str:
    """``baseline <name> (trial n)`` for a repeat row, also one labelled by its rank."""
    trial = next(t for t in finished if t.number == rep["trial"])
    name = trial.user_attrs.get("baseline")
    return f"baseline {name} (trial {trial.number})" if name is not None else rep["label"]


def _exact_train_losses(plan: Plan, found: Mapping[str, list[FrozenTrial]]) -> dict[int, float]:
    """Per source trial, the mean inference-mode training loss of its full-data repeats."""
    out: dict[int, float] = {}
    for group in _repeated_groups(plan):
        values = []
        for key in group.keys:
            trial = job_values(found, key)
            value = trial.user_attrs.get("train_loss_inference") if trial else None
            if isinstance(value, (int, float)):
                values.append(float(value))
        if values:
            out[group.trial.number] = statistics.fmean(values)
    return out


def _repeat_means(plan: Plan, found: Mapping[str, list[FrozenTrial]]) -> dict[int, float]:
    """Per source trial, the mean over its full-data seed repeats of the study's value."""
    out: dict[int, float] = {}
    for group in _repeated_groups(plan):
        mean = summarize_group(group, found).get("mean")
        if isinstance(mean, (int, float)):
            out[group.trial.number] = float(mean)
    return out


def _capacity(
    spec: StudySpec,
    plan: Plan,
    completed: list[FrozenTrial],
    best_rep: Mapping[str, Any],
    constant_train: float,
    threshold: float | None,
) -> dict[str, Any]:
    threshold = threshold if threshold is not None else MEMORIZE_SHARE * constant_train
    curve = sorted(
        (
            {
                "trial": t.number,
                "param_count": t.user_attrs.get("param_count"),
                "train_loss": t.user_attrs.get("train_loss_best"),
                "val_loss": t.user_attrs.get("val_loss_best"),
                "baseline": t.user_attrs.get("baseline"),
            }
            for t in completed
            if t.user_attrs.get("param_count") is not None
        ),
        key=lambda p: (p["param_count"], p["trial"]),
    )
    out: dict[str, Any] = {"memorize_threshold": threshold, "curve": curve, "generalize": None}
    if spec.objective == "generalize" and completed:
        best_value = plan.best.trial.values[0]
        limit = best_value
        if best_rep.get("std") is not None:
            limit = best_rep["mean"] + NOISE_Z * best_rep["std"]
        within = [t for t in completed if t.values[0] <= limit and "param_count" in t.user_attrs]
        if within:
            small = min(within, key=lambda t: (t.user_attrs["param_count"], t.values[0], t.number))
            out["generalize"] = {
                "trial": small.number,
                "param_count": small.user_attrs["param_count"],
                "value": small.values[0],
                "limit": limit,
                "params": format_params(_readable(small)),
                "best_param_count": plan.best.trial.user_attrs.get("param_count"),
            }
    memorizers = []
    for t in completed:
        curve_t = t.user_attrs.get("train_curve") or []
        hit = next((i for i, v in enumerate(curve_t) if v is not None and v <= threshold), None)
        if hit is not None and "param_count" in t.user_attrs:
            memorizers.append((t, hit + 1))
    out["memorize"] = None
    if memorizers:
        t, epoch = min(
            memorizers, key=lambda p: (p[0].user_attrs["param_count"], p[1], p[0].number)
        )
        run = t.user_attrs.get("epochs_run") or epoch
        seconds = t.user_attrs.get("train_seconds")
        out["memorize"] = {
            "trial": t.number,
            "param_count": t.user_attrs["param_count"],
            "epochs": epoch,
            "steps": epoch * spec.training.steps_per_epoch
            if spec.training.steps_per_epoch
            else None,
            "seconds": seconds * epoch / run if seconds is not None else None,
            "train_loss": t.user_attrs.get("train_loss_best"),
            "params": format_params(_readable(t)),
            "exact": t.user_attrs.get("train_loss_kind") == "inference",
        }
    return out


def _data_size(
    spec: StudySpec, plan: Plan, found: Mapping[str, list[FrozenTrial]], dataset: Dataset
) -> dict[str, Any]:
    n = int(dataset.x_train.shape[0])
    key = "val_loss_best" if dataset.has_validation else "train_loss_best"
    points: list[dict[str, Any]] = []
    for fraction, keys in plan.fractions:
        values = []
        for k in keys:
            trial = job_values(found, k)
            if trial is not None and trial.user_attrs.get(key) is not None:
                values.append(float(trial.user_attrs[key]))
        mean, std = mean_std(values)
        points.append(
            {
                "fraction": fraction,
                "n_train": max(1, round(n * fraction)),
                "values": values,
                "mean": mean,
                "std": std,
            }
        )
    out: dict[str, Any] = {"loss": key, "points": points, "halving_cost": None, "noise": None}
    full = next((p for p in points if p["fraction"] == 1.0), None)
    half = next((p for p in points if p["fraction"] == 0.5), None)
    if full and half and full["mean"] is not None and half["mean"] is not None:
        out["halving_cost"] = half["mean"] - full["mean"]
        out["noise"] = NOISE_Z * full["std"] if full["std"] is not None else None
    return out


def _readable(trial: FrozenTrial) -> dict[str, Any]:
    return trial_params(trial)
