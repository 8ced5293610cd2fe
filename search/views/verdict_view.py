"""A stored verdict, read and shown: its sentences and its table (terminal, note, report).

``capsearch verdict`` (:mod:`search.verdict`) computes the verdict and stores it as JSON in the
``verdict`` user attribute of the companion study (:func:`companion_name`, same storage); the
note and the report read it from there, so they show it without training anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from search.views.summary import table

if TYPE_CHECKING:
    import optuna

VERDICT_ATTR = "verdict"
VERDICT_HEADING = "## Verdict"


def companion_name(study_name: str) -> str:
    """The companion study that holds a study's verdict re-trainings.

    Example:
        >>> companion_name("pima_generalize")
        'pima_generalize.verdict'
    """
    return f"{study_name}.verdict"


def stored_verdict(study: optuna.Study) -> dict[str, Any] | None:
    """The verdict stored for ``study`` (None when no verdict was computed)."""
    import optuna

    from search._compat.optuna import study_storage

    try:
        companion = optuna.load_study(
            study_name=companion_name(study.study_name), storage=study_storage(study)
        )
    except KeyError:
        return None
    verdict = companion.user_attrs.get(VERDICT_ATTR)
    return dict(verdict) if isinstance(verdict, Mapping) else None


def _n(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def verdict_table(verdict: Mapping[str, Any]) -> list[str]:
    """The repeats and ablations: configuration, size, search run, mean ± std over seeds."""
    regimes = {r["trial"]: r["regime"] for r in verdict.get("regimes", [])}
    rows = [["", "trial", "params", "size", "regime", "search run", "mean ± std", "seeds"]]
    for r in verdict.get("repeats", []):
        spread = "-" if r["mean"] is None else _n(r["mean"])
        if r.get("std") is not None:
            spread += f" ± {r['std']:.2g}"
        rows.append(
            [
                r["label"].split(" (")[0],
                str(r["trial"]),
                r["params"],
                _n(r.get("param_count")),
                regimes.get(r["trial"], "-"),
                _n(r.get("single_run")),
                spread,
                f"{r['n']}/{r['planned']}",
            ]
        )
    for a in verdict.get("regularization", []):
        w = a["without"]
        spread = "-" if w["mean"] is None else _n(w["mean"])
        if w.get("std") is not None:
            spread += f" ± {w['std']:.2g}"
        rows.append([f"best without {a['regularizer']}", "-", "", "", "", "", spread, str(w["n"])])
    for p in verdict.get("data_size", {}).get("points", []):
        if p["fraction"] >= 1.0:
            continue
        spread = "-" if p["mean"] is None else _n(p["mean"])
        if p.get("std") is not None:
            spread += f" ± {p['std']:.2g}"
        label = f"best on {p['fraction']:g} of rows ({verdict['data_size']['loss']})"
        rows.append(
            [label, "-", f"{p['n_train']:,} rows", "", "", "", spread, str(len(p["values"]))]
        )
    return table(rows)


def thresholds_line(verdict: Mapping[str, Any]) -> str:
    """The rules' thresholds, as the output states them."""
    t = verdict.get("thresholds", {})
    return (
        f"Rules: underfits when the training loss is > {t.get('underfit_share', 0):.0%} of the way "
        "from the family's best back to the constant predictor's; overfits when the validation "
        f"loss ends ≥ {t.get('overfit_rise', 0):.0%} above its best and the gap widened since "
        f"then by ≥ {t.get('overfit_gap', 0):.0%} of it; unstable when the training loss also "
        f"ends ≥ {t.get('unstable_rise', 0):.0%} above its value at the best epoch; two means "
        "differ when the gap exceeds "
        f"{t.get('noise_z', 0):g} standard errors (seeds); memorized at training loss ≤ "
        f"{t.get('memorize_threshold', 0):.3g}."
    )


def verdict_lines(verdict: Mapping[str, Any]) -> list[str]:
    """The verdict for a terminal: its sentences, the rules, then the table."""
    values = f"{verdict.get('monitor', 'loss')} over seeds"
    return [
        f"verdict of {verdict['study']} ({verdict['jobs']['finished']}/"
        f"{verdict['jobs']['planned']} re-trainings, in study {verdict['companion']}):",
        *[f"  {s}" for s in verdict.get("sentences", [])],
        f"  {thresholds_line(verdict)}",
        "",
        f"{values}:",
        *verdict_table(verdict),
    ]


def verdict_markdown(verdict: Mapping[str, Any]) -> str:
    """The verdict as a Markdown section (the study note)."""
    lines = [VERDICT_HEADING, ""]
    lines += [f"* {s}" for s in verdict.get("sentences", [])]
    lines += ["", thresholds_line(verdict), "", "```", *verdict_table(verdict), "```", ""]
    return "\n".join(lines)
