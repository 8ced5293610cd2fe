"""The verdict computed from a study, its companion study's re-trainings and its data.

Everything here reads stored values; nothing trains. The thresholds are module constants,
stated in the verdict's output and in docs/verdict.md.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from search.verdict.jobs import Group, Plan, job_values, trials_by_job
from search.views.summary import format_params, trial_params

if TYPE_CHECKING:
    import optuna

    from search.data import Dataset
    from search.spec.studyfile import StudySpec

SCHEMA = "capsearch.verdict/1"

UNDERFIT_SHARE = 0.10
"""Underfits: its best training loss is more than this share of the way from the family's best
training loss on this data back up to the constant predictor's."""
OVERFIT_RISE = 0.05
"""Overfits (1/2), unstable (1/2): the last epoch's validation loss is at least this much above
its best."""
OVERFIT_GAP = 0.20
"""Overfits (2/2): since the best epoch, the gap (validation minus training loss) widened by at
least this share of the last validation loss. The widening, not the gap itself, so that a running
training loss (dropout on, inflated by a roughly constant amount) reads like an exact one."""
UNSTABLE_RISE = 0.05
"""Unstable (2/2): the last epoch's training loss is at least this much above its value at the
best epoch: training itself went wrong (too large a step), which is no overfitting."""
NOISE_Z = 2.0
"""Two means differ beyond noise when |a - b| > NOISE_Z * sqrt(sa²/na + sb²/nb)."""
ILL_CONDITIONED = 100.0
"""A least-squares problem whose condition number is above this is called ill-conditioned."""
MEMORIZE_SHARE = 1e-3
"""Default memorization threshold: this share of the constant predictor's training loss."""


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None where there are too few values).

    Example:
        >>> mean_std([1.0, 2.0, 3.0])
        (2.0, 1.0)
    """
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def noise_of(a: Mapping[str, Any], b: Mapping[str, Any]) -> float | None:
    """The seed noise of the difference of two repeat summaries (``NOISE_Z`` standard errors).

    Example:
        >>> round(noise_of({"std": 0.03, "n": 3}, {"std": 0.04, "n": 3}), 4)
        0.0577
    """
    if a.get("std") is None or b.get("std") is None:
        return None
    return NOISE_Z * math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])


def constant_losses(dataset: Dataset) -> tuple[float, float | None]:
    """Training and validation loss of the best constant prediction (fitted on training rows)."""
    y = np.asarray(dataset.y_train, dtype=np.float64)
    y_val = None if dataset.y_val is None else np.asarray(dataset.y_val, dtype=np.float64)
    eps = 1e-7
    if dataset.task == "regression":
        mean = float(y.mean())
        val = float(np.mean((y_val - mean) ** 2)) if y_val is not None else None
        return float(np.mean((y - mean) ** 2)), val
    if dataset.task == "binary":
        p = float(np.clip(y.mean(), eps, 1 - eps))

        def bce(t: np.ndarray) -> float:
            return float(-np.mean(t * math.log(p) + (1 - t) * math.log(1 - p)))

        return bce(y), (bce(y_val) if y_val is not None else None)
    counts = np.bincount(y.astype(int).ravel(), minlength=dataset.n_classes)
    freq = np.clip(counts / counts.sum(), eps, 1.0)

    def cce(t: np.ndarray) -> float:
        return float(-np.mean(np.log(freq[t.astype(int).ravel()])))

    return cce(y), (cce(y_val) if y_val is not None else None)


def condition_number(dataset: Dataset) -> float | None:
    """The condition number of the least-squares problem ``[X, 1] w = y`` (linear studies)."""
    if "lstsq_coefficients" not in dataset.reference or dataset.is_sparse:
        return None
    x = np.asarray(dataset.x_train, dtype=np.float64)
    return float(np.linalg.cond(np.hstack([x, np.ones((len(x), 1))])))


def regime(
    trial: FrozenTrial,
    family_best_train: float,
    constant_train: float,
    exact_train: float | None = None,
    *,
    memorize: bool = False,
) -> dict[str, Any]:
    """Unstable, overfits, underfits or fits, with the numbers the rule read.

    In a generalize study a model whose validation loss turns up while its training loss keeps
    falling has the capacity to fit, whatever its training loss: overfitting (and instability)
    is checked first. A memorize study asks whether the training set is fitted at all, so there
    underfitting is checked first.

    ``exact_train`` (the mean inference-mode training loss of its seed re-trainings) replaces the
    trial's own training loss where there is one: it is not a single run, and not Keras' running
    loss (dropout on).

    Example:
        >>> from optuna.trial import create_trial
        >>> t = create_trial(value=0.30, user_attrs={
        ...     "train_loss_best": 0.05, "train_loss_final": 0.05, "best_epoch": 2,
        ...     "val_loss_best": 0.30, "val_loss_final": 0.45,
        ...     "train_curve": [0.3, 0.2, 0.1, 0.05], "val_curve": [0.35, 0.3, 0.4, 0.45]})
        >>> regime(t, family_best_train=0.05, constant_train=0.69)["regime"]
        'overfits'
    """
    a = trial.user_attrs
    train = a.get("train_loss_best")
    what = "training loss"
    if a.get("train_loss_kind") == "running":
        what = "running training loss (dropout on)"
    if exact_train is not None:  # seeds, not its single search run (also a lucky or unlucky one)
        train, what = exact_train, "training loss (inference mode, mean of its re-trainings)"
    val_best, val_final = a.get("val_loss_best"), a.get("val_loss_final")
    train_final = a.get("train_loss_final")
    out: dict[str, Any] = {
        "trial": trial.number,
        "train_loss": train,
        "val_loss_best": val_best,
        "val_loss_final": val_final,
        "best_epoch": a.get("best_epoch"),
        "epochs_run": a.get("epochs_run"),
    }
    scale = constant_train - family_best_train
    share = (train - family_best_train) / scale if train is not None and scale > 0 else None
    if share is not None:
        out["underfit_share"] = share
    underfit_why = (
        f"{what} {_g(train)} is {share:.0%} of the way from the family's best "
        f"{_g(family_best_train)} to the constant predictor's {_g(constant_train)} "
        f"(threshold {UNDERFIT_SHARE:.0%})"
        if share is not None
        else ""
    )
    underfits = share is not None and share > UNDERFIT_SHARE
    if memorize and underfits:
        return out | {"regime": "underfits", "why": underfit_why}
    if _numbers(val_best, val_final, train_final):
        val_best, val_final, train_final = (
            float(cast(float, v)) for v in (val_best, val_final, train_final)
        )
        at_best = _at_best_epoch(a)
        rise = (val_final - val_best) / val_best if val_best > 0 else 0.0
        out["val_rise"] = rise
        if at_best is not None:
            best_val_epoch, train_at_best, val_at_best = at_best
            train_rise = (train_final - train_at_best) / train_at_best if train_at_best > 0 else 0.0
            widening = (val_final - train_final) - (val_at_best - train_at_best)
            widening_share = widening / val_final if val_final > 0 else 0.0
            out |= {"train_rise": train_rise, "gap_widening_share": widening_share}
            if rise >= OVERFIT_RISE and train_rise >= UNSTABLE_RISE:
                out["regime"] = "unstable"
                out["why"] = (
                    f"after its best validation epoch {best_val_epoch} its training loss rose too, "
                    f"{train_rise:.0%} (threshold {UNSTABLE_RISE:.0%}), with the validation loss "
                    f"{rise:.0%}: the optimizer diverges (a smaller learning rate or batch "
                    "normalization), which is no overfitting"
                )
                return out
            if rise >= OVERFIT_RISE and widening_share >= OVERFIT_GAP:
                out["regime"] = "overfits"
                out["why"] = (
                    f"validation loss rose {rise:.0%} after its best epoch {best_val_epoch} "
                    f"(threshold {OVERFIT_RISE:.0%}) while the training loss did not, and the gap "
                    f"widened by {widening_share:.0%} of it (threshold {OVERFIT_GAP:.0%})"
                )
                return out
    if underfits:
        return out | {"regime": "underfits", "why": underfit_why}
    out["regime"] = "fits"
    parts = []
    if "underfit_share" in out:
        parts.append(f"{what} {_g(train)} is {out['underfit_share']:.0%} of the way up")
    if "gap_widening_share" in out:
        parts.append(
            f"its validation loss ends {out['val_rise']:.0%} above its best, the gap widened by "
            f"{out['gap_widening_share']:.0%} of it"
        )
    out["why"] = "; ".join(parts) or "no rule applies"
    return out


def _numbers(*values: Any) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def _at_best_epoch(attrs: Mapping[str, Any]) -> tuple[int, float, float] | None:
    """The best validation epoch (1-based) and the training and validation loss there.

    The validation curve's own best, also in memorize studies (whose ``best_epoch`` is the
    training loss's): "rises after its best epoch" reads the validation loss.
    """
    train, val = attrs.get("train_curve"), attrs.get("val_curve")
    if not isinstance(train, list) or not isinstance(val, list):
        return None
    epochs = [i for i in range(min(len(train), len(val))) if _numbers(train[i], val[i])]
    if not epochs:
        return None
    best = min(epochs, key=lambda i: float(val[i]))
    return best + 1, float(train[best]), float(val[best])


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


def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """``b.mean - a.mean`` against the noise: ``a lower``, ``b lower`` or ``within noise``."""
    if a.get("mean") is None or b.get("mean") is None:
        return {"difference": None, "noise": None, "decision": "not measured"}
    difference = b["mean"] - a["mean"]
    noise = noise_of(a, b)
    if noise is None:
        decision = "not measured"
    elif abs(difference) <= noise:
        decision = "within noise"
    else:
        decision = "a lower" if difference > 0 else "b lower"
    return {"difference": difference, "noise": noise, "decision": decision}


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
        baselines["reference_name"] = _short(_baseline_name(finished, reference))
        if all(best_rep is not r for r in baseline_reps):  # a best that is a baseline has its row
            baselines["best_versus_reference"] = _versus(reference, best_rep, "best")
        for other in baseline_reps[1:]:
            name = _short(_baseline_name(finished, other))
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
            "memorize_threshold": capacity["memorize_threshold"],
        },
        "constant_predictor": {"train_loss": constant_train, "val_loss": constant_val},
        "family_best_train_loss": family_best,
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


def _g(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _pm(summary: Mapping[str, Any]) -> str:
    if summary.get("mean") is None:
        return "not measured yet"
    std = summary.get("std")
    spread = f" ± {std:.2g}" if std is not None else ""
    return f"{summary['mean']:.4g}{spread} ({summary['n']} seeds)"


def _short(label: str) -> str:
    """A repeat row's label without its trial: ``baseline l2 (trial 3)`` -> ``baseline l2``."""
    return label.split(" (")[0]


def sentences(v: Mapping[str, Any]) -> list[str]:
    """The verdict in a few sentences, each with its numbers."""
    out: list[str] = []
    monitor = v["monitor"]
    for r in v["regimes"]:
        verb = "trains unstably" if r["regime"] == "unstable" else r["regime"]
        out.append(f"The {r['label']} (trial {r['trial']}) {verb}: {r['why']}.")
    cap = v["capacity"]
    if cap.get("generalize"):
        g = cap["generalize"]
        out.append(
            f"Capacity to generalize: the smallest model within the noise of the best "
            f"({monitor} ≤ {g['limit']:.4g}) is trial {g['trial']} with {g['param_count']:,} "
            f"parameters ({g['params']}; {monitor} {g['value']:.4g}), against "
            f"{g['best_param_count']:,} for the best."
        )
    if cap.get("memorize"):
        m = cap["memorize"]
        when = f"after {m['epochs']} epochs"
        if m.get("steps"):
            when += f" ({m['steps']:,} steps"
            when += f", {m['seconds']:.1f} s)" if m.get("seconds") is not None else ")"
        elif m.get("seconds") is not None:
            when += f" ({m['seconds']:.1f} s)"
        kind = "" if m.get("exact") else " (running training loss, dropout on)"
        out.append(
            f"Capacity to memorize: the smallest model that reaches a training loss of "
            f"{cap['memorize_threshold']:.3g}{kind} is trial {m['trial']} with "
            f"{m['param_count']:,} parameters ({m['params']}), {when}."
        )
    else:
        out.append(
            f"No trial memorized the training set to {cap['memorize_threshold']:.3g} "
            "(the family's best training loss is "
            f"{v['family_best_train_loss']:.3g})."
        )
    w = v["winner"]
    rep = {r["label"]: r for r in v["repeats"]}
    best = rep[w["best_label"]]
    if best["mean"] is not None:
        text = f"Re-trained with {best['n']} seeds, the {best['label']} scores {_pm(best)}"
        z = w.get("single_run_z")
        if z is not None and z < -NOISE_Z:
            text += f"; its search run ({best['single_run']:.4g}) was a lucky seed ({z:.1f} std)"
        if "versus_baseline" in w and not w.get("same_configuration"):
            base = rep[w["baseline_label"]]
            vs = w["versus_baseline"]
            text += f"; the {base['label']} scores {_pm(base)}"
            if vs["decision"] == "a lower":
                text += (
                    f": the best beats it by {vs['difference']:.3g}, more than the seed noise "
                    f"({vs['noise']:.2g})"
                )
            elif vs["decision"] == "within noise":
                text += (
                    f": the difference {vs['difference']:.3g} is within the seed noise "
                    f"({vs['noise']:.2g}), the best does not really beat it"
                )
            elif vs["decision"] == "b lower":
                text += (
                    f": the baseline is better by {-vs['difference']:.3g} (noise {vs['noise']:.2g})"
                )
        if w.get("same_configuration"):
            text += (
                f"; the best baseline, {w['baseline_name']}, trains the same configuration "
                "with other seeds, so the search's lead over it is the seed alone: within noise"
            )
        out.append(text + ".")
        if w.get("top_two"):
            first = w["ranking"][0]
            if w.get("ranking_within_noise"):
                out.append(
                    f"Ranked by mean over seeds, {first} comes first, but the first two are "
                    f"within noise ({w['top_two']['difference']:.3g} ≤ "
                    f"{w['top_two']['noise']:.2g}): the ranking is within noise."
                )
            else:
                out.append(f"Ranked by mean over seeds, {first} is first beyond the noise.")
    b = v.get("baselines") or {}
    # Only with other baselines: a lone one is the winner sentence's baseline already.
    rows = [*([b["best_versus_reference"]] if b.get("best_versus_reference") else [])]
    rows += b.get("comparisons") or []
    if b.get("comparisons") and rep[b["reference"]]["mean"] is not None:
        parts = []
        for c in rows:
            if c["decision"] == "not measured":
                parts.append(f"{c['name']} not measured yet")
                continue
            what = {
                "better": f"better by {-c['difference']:.3g}",
                "worse": f"worse by {c['difference']:.3g}",
                "within noise": f"within noise, {c['difference']:+.3g}",
            }[c["decision"]]
            parts.append(f"{c['name']} {_pm(c)}: {what} (noise {c['noise']:.2g})")
        reference = rep[b["reference"]]
        out.append(
            f"Against the {b['reference_name']}, {_pm(reference)} of {monitor} over seeds: "
            + "; ".join(parts)
            + "."
        )
    for r in v["regularization"]:
        text = (
            f"{r['regularizer']} ({r['value']:.3g}): without it {monitor} is "
            f"{_pm(r['without'])} against {_pm(r['with'])}"
            if isinstance(r["value"], (int, float)) and not isinstance(r["value"], bool)
            else f"{r['regularizer']}: without it {_pm(r['without'])} against {_pm(r['with'])}"
        )
        if r["decision"] == "helps":
            text += f"; it helps by {r['effect']:.3g} (noise {r['noise']:.2g})"
        elif r["decision"] == "hurts":
            text += f"; it hurts by {-r['effect']:.3g} (noise {r['noise']:.2g})"
        elif r["decision"] == "within noise":
            text += f"; its effect {r['effect']:.3g} is within the noise ({r['noise']:.2g})"
        out.append(text + ".")
    if not v["regularization"]:
        out.append("The best trial uses no regularizer, so there is nothing to ablate.")
    d = v["data_size"]
    if d["halving_cost"] is not None:
        cost = d["halving_cost"]
        more = (
            "more data would still help"
            if d["noise"] is None or cost > d["noise"]
            else "within the noise: more data would not help much"
        )
        noise = f" (noise {d['noise']:.2g})" if d["noise"] is not None else ""
        out.append(
            f"Halving the training data costs {cost:.3g} of {d['loss'].replace('_best', '')}"
            f"{noise}; {more}."
        )
    test = v.get("test")
    if test:
        parts = []
        for rows, t in test.items():
            acc = f", accuracy {t['accuracy']:.4f}" if t.get("accuracy") is not None else ""
            parts.append(f"trained on {rows} ({t['n_train']:,} rows): loss {t['loss']:.4g}{acc}")
        out.append(
            f"Test ({next(iter(test.values()))['n_test']:,} rows), the best configuration "
            + "; ".join(parts)
            + "."
        )
    if v.get("condition_number") is not None:
        kappa = v["condition_number"]
        out.append(
            f"The least-squares problem's condition number is {kappa:.3g} (gradient descent "
            f"works against its square, {kappa**2:.3g}): "
            + ("ill-conditioned." if kappa > ILL_CONDITIONED else "well-conditioned.")
        )
    if v.get("coefficients"):
        parts = [
            f"{c['label']} {c['coefficient_error']:.2g}"
            + (
                " (" + ", ".join(f"{w:.3g}" for w in c["coefficients"]) + ")"
                if c.get("coefficients")
                else ""
            )
            for c in v["coefficients"]
        ]
        out.append(
            "Coefficient error (largest |learned − least-squares|, weights then bias): "
            + "; ".join(parts)
            + "."
        )
    if not v["complete"]:
        out.append(
            f"Incomplete: {v['jobs']['finished']} of {v['jobs']['planned']} re-trainings "
            "finished; run capsearch verdict again to resume."
        )
    return out
