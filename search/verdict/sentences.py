"""The verdict in words: a few sentences, each with its numbers, from the verdict's dict."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from search.verdict.rules import ILL_CONDITIONED, NOISE_Z


def _pm(summary: Mapping[str, Any]) -> str:
    if summary.get("mean") is None:
        return "not measured yet"
    std = summary.get("std")
    spread = f" ± {std:.2g}" if std is not None else ""
    return f"{summary['mean']:.4g}{spread} ({summary['n']} seeds)"


def short_label(label: str) -> str:
    """A repeat row's label without its trial: ``baseline l2 (trial 3)`` -> ``baseline l2``."""
    return label.split(" (")[0]


def sentences(v: Mapping[str, Any]) -> list[str]:
    """The verdict in a few sentences, each with its numbers."""
    out: list[str] = []
    monitor = v["monitor"]
    fit = v.get("family_fit")  # absent in verdicts stored before it
    if fit and not fit["fits"]:
        text = (
            f"No trial fits the training set much better than a constant: the family's best "
            f"training loss {v['family_best_train_loss']:.3g} is {fit['share']:.0%} of the "
            f"constant predictor's {v['constant_predictor']['train_loss']:.3g} (above "
            f"{v['thresholds']['family_fit_share']:.0%}), so the regimes below, relative to that "
            "best, do not say the data are fitted"
        )
        if fit.get("large_target"):
            target = fit["target"]
            text += (
                f". The target is in large units (mean {target['mean']:.3g}, std "
                f"{target['std']:.3g}) while a network's outputs start near 0 and move by about "
                "its learning rate per step: "
                + (
                    f"set [data] {fit['option']} = true and search again"
                    if fit.get("option")
                    else "divide the target by its std and search again"
                )
            )
        else:
            text += (
                ": either the inputs say little about the target (noisy labels) or every model "
                "here underfits (more epochs, width or a larger learning rate)"
            )
        out.append(text + ".")
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
