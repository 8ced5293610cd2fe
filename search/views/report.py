"""``capsearch report STUDY``: a self-contained HTML report of a stored study, and its PNGs.

The report (``storage/reports/<study>/report.html`` by default) embeds every figure of
:mod:`search.views.report_figures` with plotly.js inlined once, so it opens offline; each figure is
also written as ``<key>.png`` beside it (:mod:`search.views.report_png`).
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from search import settings
from search.storage.studies import load_stored_study
from search.storage.urls import DEFAULT_STORAGE_DIR, mask_url

if TYPE_CHECKING:
    from search.views.report_figures import ReportFigure

REPORTS_DIR = DEFAULT_STORAGE_DIR / "reports"
REPORT_FILE = "report.html"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
nav a { margin-right: 1em; }
section { margin: 2.5em 0; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 13px; }
.caption { color: #555; }
"""


@dataclass
class ReportResult:
    """What :func:`write_report` wrote."""

    study: str
    folder: Path
    html: Path
    pngs: list[Path] = field(default_factory=list)
    renderer: str = ""
    keys: list[str] = field(default_factory=list)


def write_report(
    name: str, storage: str | None = None, out_dir: Path | None = None, *, png: str | None = None
) -> ReportResult:
    """Write ``report.html`` and one PNG per figure for the stored study ``name``.

    Args:
        name: The study's name.
        storage: Storage URL (default: ``$CAPSEARCH_STORAGE``, else ``storage/studies.db``).
        out_dir: Folder of the files (default ``storage/reports/<name>``).
        png: PNG renderer, see :func:`search.views.report_png.write_pngs`.

    Raises:
        StorageError: Unknown study or unreadable storage.
        SettingsError: ``CAPSEARCH_PNG`` names no renderer (checked before anything is written).
    """
    from search.views.report_figures import build_figures
    from search.views.report_png import write_pngs
    from search.views.verdict_figures import verdict_figures

    png = png or settings.png_renderer()
    stored = load_stored_study(name, storage)
    study, url = stored.study, stored.url
    folder = Path(out_dir) if out_dir is not None else REPORTS_DIR / name
    folder.mkdir(parents=True, exist_ok=True)
    figures = build_figures(study) + verdict_figures(study)  # the stored verdict's, if any
    page = folder / REPORT_FILE
    page.write_text(render_html(study, figures, mask_url(url)), encoding="utf-8")
    pngs = [folder / f"{figure.key}.png" for figure in figures]
    renderer = write_pngs([figure.figure for figure in figures], pngs, png)
    return ReportResult(name, folder, page, pngs, renderer, [f.key for f in figures])


def summary_lines(study: optuna.Study) -> list[str]:
    """The text part of the report: trial counts, best versus baselines, Pareto front, test."""
    from optuna.trial import TrialState

    from search.engine.study import best_trial
    from search.views.summary import (
        GAP_NOTE,
        comparison_table,
        comparison_title,
        format_params,
        pareto_lines,
        running_train_loss,
    )
    from search.views.summary import trial_params as readable

    states = [t.state for t in study.get_trials(deepcopy=False)]
    lines = [
        f"{states.count(TrialState.COMPLETE)} complete, {states.count(TrialState.PRUNED)} "
        f"pruned, {states.count(TrialState.FAIL)} failed, {states.count(TrialState.RUNNING)} "
        "running trials"
    ]
    best = best_trial(study)
    if best is not None:
        lines += [f"best trial {best.number}: {format_params(readable(best))}", ""]
    table = comparison_table(study)
    if table:
        lines += [f"{comparison_title(study)}:", *table]
        lines += [f"({GAP_NOTE})", ""] if running_train_loss(study) else [""]
    lines += pareto_lines(study)
    test = study.user_attrs.get("test_evaluation")
    if test and best is not None and test.get("trial") == best.number:
        accuracy = test.get("test_accuracy")
        lines.append(
            f"test: trial {test['trial']} re-trained for {test['epochs']} epochs, loss "
            f"{test['test_loss']:.4g}" + (f", accuracy {accuracy:.4f}" if accuracy else "")
        )
    return lines


def verdict_html(study: optuna.Study) -> list[str]:
    """The stored verdict (``capsearch verdict``) as the top of the report; [] when none."""
    from search.views.verdict_view import stored_verdict, thresholds_line, verdict_table

    verdict = stored_verdict(study)
    if verdict is None:
        return []
    items = "".join(f"<li>{html.escape(s)}</li>" for s in verdict.get("sentences", []))
    return [
        '<section id="verdict"><h2>Verdict</h2>',
        f"<ul>{items}</ul>",
        f'<p class="caption">{html.escape(thresholds_line(verdict))}</p>',
        f"<pre>{html.escape(chr(10).join(verdict_table(verdict)))}</pre></section>",
    ]


def render_html(study: optuna.Study, figures: list[ReportFigure], where: str) -> str:
    """The report page: the study's description and summary, then every figure.

    plotly.js is inlined with the first figure only; nothing is loaded from the network.
    """
    import plotly.io as pio

    spec = study.user_attrs.get("spec") or {}
    description = str(spec.get("description", "")).strip()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>capsearch report: {html.escape(study.study_name)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(study.study_name)}</h1>",
        f"<p>{html.escape(str(study.user_attrs.get('objective', '')))} study in "
        f"<code>{html.escape(where)}</code>; report written {stamp}.</p>",
    ]
    if description:
        parts.append(f"<p>{html.escape(description)}</p>")
    parts += verdict_html(study)
    parts.append(f"<pre>{html.escape(chr(10).join(summary_lines(study)))}</pre>")
    links = " ".join(f'<a href="#{f.key}">{html.escape(f.title)}</a>' for f in figures)
    parts.append(f"<nav>{links}</nav>")
    for i, figure in enumerate(figures):
        div = pio.to_html(
            figure.figure,
            full_html=False,
            include_plotlyjs=i == 0,  # inline, once; never the CDN
            include_mathjax=False,
            div_id=f"plot-{figure.key}",
            config={"displaylogo": False, "responsive": True},
        )
        parts += [
            f'<section id="{figure.key}">',
            f"<h2>{html.escape(figure.title)}</h2>",
            f'<p class="caption">{html.escape(figure.caption)} '
            f'<a href="{figure.key}.png">PNG</a></p>',
            div,
            "</section>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts)
