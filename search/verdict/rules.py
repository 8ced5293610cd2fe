"""The verdict's rules: thresholds, the seed-noise comparison and the regime of a trial.

Each threshold is a module constant, stated in the verdict's output and in docs/verdict.md;
the functions read stored values only.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

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
FAMILY_FIT_SHARE = 0.5
"""No trial fits: the family's best training loss is above this share of the constant
predictor's. The regimes are relative to the family's best, so this is said before them."""


def family_fit(
    family_best_train: float,
    constant_train: float,
    target: Mapping[str, float] | None = None,
    option: str | None = None,
) -> dict[str, Any]:
    """Whether any trial fits the training set at all, and a likely cause where none does.

    ``target`` is a regression target's ``mean`` and ``std`` on the training rows; a target in
    large units (:data:`search.data.target.LARGE_TARGET`) is named as the likely cause, with
    ``option``, the data source's option that rescales it.

    Example:
        >>> family_fit(4.96e9, 7.5e9, {"mean": 2.0e5, "std": 8.7e4})["fits"]
        False
        >>> family_fit(4.96e9, 7.5e9, {"mean": 2.0e5, "std": 8.7e4})["large_target"]
        True
        >>> fit = family_fit(0.05, 0.69)
        >>> round(fit["share"], 4), fit["fits"], fit["large_target"]
        (0.0725, True, False)
    """
    from search.data.target import is_large

    share = family_best_train / constant_train if constant_train > 0 else 0.0
    large = is_large(dict(target) if target is not None else None)
    out: dict[str, Any] = {"share": share, "fits": share <= FAMILY_FIT_SHARE, "large_target": large}
    if target is not None:
        out["target"] = dict(target)
    if large and option is not None:
        out["option"] = option
    return out


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
        f"{what} {format_number(train)} is {share:.0%} of the way from the family's best "
        f"{format_number(family_best_train)} to the constant predictor's "
        f"{format_number(constant_train)} (threshold {UNDERFIT_SHARE:.0%})"
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
        parts.append(f"{what} {format_number(train)} is {out['underfit_share']:.0%} of the way up")
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


def format_number(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
