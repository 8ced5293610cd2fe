"""The report's figures of a stored verdict: seed repeats with error bars, loss against data size.

Both read the verdict JSON (:func:`search.views.verdict_view.stored_verdict`); a study without a
verdict gets neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from search.views.report_figures import TRAIN_COLOR, VAL_COLOR, ReportFigure

if TYPE_CHECKING:
    import optuna


def verdict_figures(study: optuna.Study) -> list[ReportFigure]:
    """The repeats and data-size figures, or [] when no verdict is stored."""
    from search.views.verdict_view import stored_verdict

    verdict = stored_verdict(study)
    if verdict is None:
        return []
    return [repeats_figure(verdict), data_size_figure(verdict)]


def repeats_figure(verdict: Mapping[str, Any]) -> ReportFigure:
    """Mean ± standard deviation over seeds of each re-trained configuration, and its run."""
    import plotly.graph_objects as go

    monitor = verdict.get("monitor", "loss")
    rows = [r for r in verdict.get("repeats", []) if r.get("mean") is not None]
    rows += [
        {"label": f"best without {a['regularizer']}", **a["without"], "single_run": None}
        for a in verdict.get("regularization", [])
        if a["without"].get("mean") is not None
    ]
    labels = [r["label"] for r in rows]
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=labels,
            y=[r["mean"] for r in rows],
            error_y={"type": "data", "array": [r.get("std") or 0.0 for r in rows]},
            mode="markers",
            name="mean ± std over seeds",
            marker={"color": VAL_COLOR, "size": 11, "symbol": "square"},
        )
    )
    single = [(r["label"], r["single_run"]) for r in rows if r.get("single_run") is not None]
    if single:
        figure.add_trace(
            go.Scatter(
                x=[s[0] for s in single],
                y=[s[1] for s in single],
                mode="markers",
                name="its search run (one seed)",
                marker={"color": TRAIN_COLOR, "size": 9, "symbol": "circle-open"},
            )
        )
    title = f"Is the winner real? {monitor} over seeds"
    figure.update_layout(
        title=title,
        xaxis={"title": "configuration", "tickangle": -20},
        yaxis={"title": f"{monitor} (best epoch)"},
        legend={"orientation": "h", "y": -0.3},
    )
    return ReportFigure(
        "verdict_repeats",
        title,
        figure,
        "Each configuration re-trained with the same seeds: mean and standard deviation "
        "(error bars), and the single search run that ranked it.",
    )


def data_size_figure(verdict: Mapping[str, Any]) -> ReportFigure:
    """The best configuration's loss against the number of training rows (log x)."""
    import plotly.graph_objects as go

    data = verdict.get("data_size", {})
    points = [p for p in data.get("points", []) if p.get("mean") is not None]
    loss = str(data.get("loss", "val_loss_best"))
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=[p["n_train"] for p in points],
            y=[p["mean"] for p in points],
            error_y={"type": "data", "array": [p.get("std") or 0.0 for p in points]},
            mode="lines+markers",
            name=f"best configuration, {loss}",
            line={"color": VAL_COLOR},
            marker={"size": 9},
        )
    )
    title = "Would more data help? Loss against training-set size"
    figure.update_layout(
        title=title,
        xaxis={"title": "training rows", "type": "log"},
        yaxis={"title": loss},
    )
    cost = data.get("halving_cost")
    caption = "The best configuration trained on nested fractions of the training rows."
    if cost is not None:
        caption += f" Halving the data costs {cost:.3g}."
    return ReportFigure("verdict_data_size", title, figure, caption)
