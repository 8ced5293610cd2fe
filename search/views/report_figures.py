"""The figures of ``capsearch report``, as plotly figures (one :class:`ReportFigure` each).

Standard views come from :mod:`optuna.visualization` (history, importances, parallel
coordinates, the slice plot of L2 and dropout against the generalization gap, the Pareto front);
only what Optuna does not draw is built here: the capacity plot (parameter count against training
and validation loss, every trial, baselines labelled), the learning curves of the best trial
against each baseline, and, for memorize studies, the training loss reached against capacity.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.engine.study import FINISHED, best_trial, is_multi_objective
from search.views.summary import format_params, trial_params
from search.views.trial_plots import spans_decades

TRAIN_COLOR = "#1f77b4"
VAL_COLOR = "#ff7f0e"
BASELINE_COLORS = ("#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
GAP_PARAMS = ("use_l2", "l2", "dropout")


@dataclass
class ReportFigure:
    """One figure of the report: ``key`` is its HTML id and PNG file stem."""

    key: str
    title: str
    figure: Any  # plotly.graph_objects.Figure
    caption: str = ""


def loss_name(study: optuna.Study) -> str:
    """``val_loss`` or ``train_loss``: the study's first objective."""
    if study.metric_names:
        return str(study.metric_names[0])
    return "train_loss" if study.user_attrs.get("objective") == "memorize" else "val_loss"


def build_figures(study: optuna.Study) -> list[ReportFigure]:
    """Every figure of the report for ``study``, in reading order."""
    figures = [
        history_figure(study),
        importance_figure(study),
        parallel_figure(study),
        capacity_figure(study),
        gap_figure(study),
        *learning_curve_figures(study),
    ]
    if study.user_attrs.get("objective") == "memorize":
        figures.append(memorize_figure(study))
    if is_multi_objective(study):
        figures.append(pareto_figure(study))
    return figures


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna warns once per trial it leaves out of a plot (NaN target); the report says so."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():  # e.g. "some regimes have less than 2 trials"
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def _target(study: optuna.Study) -> tuple[Callable[[FrozenTrial], float] | None, str]:
    """Optuna's ``target``/``target_name``: the loss (the first objective when there are two)."""
    if is_multi_objective(study):
        return (lambda t: t.values[0]), loss_name(study)
    return None, loss_name(study)


def placeholder(key: str, title: str, message: str) -> ReportFigure:
    """An empty figure that says why there is nothing to draw."""
    import plotly.graph_objects as go

    figure = go.Figure()
    figure.add_annotation(
        text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font_size=16
    )
    figure.update_layout(title=title, xaxis_visible=False, yaxis_visible=False)
    return ReportFigure(key, title, figure, message)


def _titled(key: str, title: str, figure: Any, caption: str) -> ReportFigure:
    figure.update_layout(title=title)
    return ReportFigure(key, title, figure, caption)


def history_figure(study: optuna.Study) -> ReportFigure:
    """``optuna.visualization.plot_optimization_history`` (log y when it spans decades)."""
    from optuna.visualization import plot_optimization_history

    target, name = _target(study)
    with _quiet_optuna():
        figure = plot_optimization_history(study, target=target, target_name=name)
    values = [v for t in _complete(study) for v in t.values[:1]]
    if spans_decades(values):
        figure.update_yaxes(type="log")
    return _titled(
        "history",
        "Optimization history",
        figure,
        f"Each completed trial's {name} (best epoch) and the best so far.",
    )


def importance_figure(study: optuna.Study) -> ReportFigure:
    """``optuna.visualization.plot_param_importances``, or why it cannot be computed yet."""
    from optuna.visualization import plot_param_importances

    title = "Parameter importances"
    complete = _complete(study)
    if len(complete) < 2:
        return placeholder(
            "importances", title, f"{len(complete)} completed trial(s): importances need 2 or more"
        )
    target, name = _target(study)
    try:
        with _quiet_optuna():
            figure = plot_param_importances(study, target=target, target_name=name)
    except (RuntimeError, ValueError, ZeroDivisionError) as exc:
        return placeholder("importances", title, f"importances not available: {exc}")
    return _titled(
        "importances",
        title,
        figure,
        f"Importance of each parameter for {name} (Optuna's default evaluator, completed trials).",
    )


def parallel_figure(study: optuna.Study) -> ReportFigure:
    """``optuna.visualization.plot_parallel_coordinate``."""
    from optuna.visualization import plot_parallel_coordinate

    target, name = _target(study)
    with _quiet_optuna():
        figure = plot_parallel_coordinate(study, target=target, target_name=name)
    return _titled(
        "parallel",
        "Parallel coordinates",
        figure,
        f"One line per completed trial, coloured by {name}.",
    )


def gap_figure(study: optuna.Study) -> ReportFigure:
    """``plot_slice`` of ``use_l2``, ``l2`` and ``dropout`` against ``gap_at_best``."""
    from optuna.visualization import plot_slice

    title = "L2 and dropout against the generalization gap"
    searched = {name for t in _complete(study) for name in t.params}
    params = [p for p in GAP_PARAMS if p in searched]
    gaps = [t for t in _complete(study) if _finite(t.user_attrs.get("gap_at_best"))]
    if not params or not gaps:
        why = "L2 and dropout are not searched" if not params else "no trial recorded a gap"
        return placeholder("gap", title, why)

    def gap(trial: FrozenTrial) -> float:
        value = trial.user_attrs.get("gap_at_best")
        return float(value) if value is not None and _finite(value) else math.nan

    with _quiet_optuna():
        figure = plot_slice(study, params=params, target=gap, target_name="gap_at_best")
    return _titled(
        "gap",
        title,
        figure,
        "gap_at_best = validation − training loss at the best epoch, per completed trial "
        "(in generalize studies the training loss is Keras' running one, dropout on, so the "
        "gap can be negative); "
        "trials without L2 (use_l2 = False) appear only in the use_l2 panel.",
    )


def capacity_figure(study: optuna.Study) -> ReportFigure:
    """Parameter count (log x) against training and validation loss, baselines labelled.

    The seeds' "smaller / original / bigger" picture: as capacity grows the training loss falls,
    while the validation loss falls, then rises once the model starts to memorize.
    """
    import plotly.graph_objects as go

    title = "Capacity: parameter count against training and validation loss"
    trials = [t for t in _finished(study) if t.user_attrs.get("param_count")]
    if not trials:
        return placeholder("capacity", title, "no finished trial with a parameter count yet")
    figure = go.Figure()
    best = best_trial(study)
    losses: list[float] = []
    for attr, label, color, symbol in (
        ("train_loss_best", "training loss", TRAIN_COLOR, "circle"),
        ("val_loss_best", "validation loss", VAL_COLOR, "square"),
    ):
        for state, open_ in ((TrialState.COMPLETE, ""), (TrialState.PRUNED, "-open")):
            points = [t for t in trials if t.state == state and _finite(t.user_attrs.get(attr))]
            if not points:
                continue
            losses += [t.user_attrs[attr] for t in points]
            figure.add_trace(
                go.Scatter(
                    x=[t.user_attrs["param_count"] for t in points],
                    y=[t.user_attrs[attr] for t in points],
                    mode="markers",
                    name=f"{label}" + (" (pruned)" if state == TrialState.PRUNED else ""),
                    marker={"color": color, "symbol": symbol + open_, "size": 9},
                    text=[_hover(t) for t in points],
                    hovertemplate="%{text}<br>%{x:,} parameters<br>" + attr + " %{y:.4g}"
                    "<extra></extra>",
                )
            )
        labelled = sorted(
            (t for t in trials if _label(t, best) and _finite(t.user_attrs.get(attr))),
            key=lambda t: (t.user_attrs["param_count"], t.number),
        )
        side = -1 if attr == "val_loss_best" else 1
        for i, trial in enumerate(labelled):  # neighbours by size get staggered heights
            figure.add_annotation(
                x=math.log10(trial.user_attrs["param_count"]),
                y=trial.user_attrs[attr],
                text=_label(trial, best),
                showarrow=True,
                arrowhead=0,
                arrowcolor=color,
                ax=0,
                ay=side * (24 + 18 * (i % 3)),
                font={"color": color, "size": 11},
                bgcolor="rgba(255,255,255,0.8)",
            )
    log_y = spans_decades(losses)
    if log_y:  # annotations on a log axis take log10 positions
        for annotation in figure.layout.annotations:
            annotation.y = math.log10(annotation.y) if annotation.y > 0 else annotation.y
    figure.update_layout(
        title=title,
        xaxis={"title": "parameter count", "type": "log"},
        yaxis={"title": "lowest loss reached (data loss)", "type": "log" if log_y else "linear"},
        legend={"orientation": "h", "y": -0.18},
    )
    return ReportFigure(
        "capacity",
        title,
        figure,
        "Every finished trial: its lowest training loss (circles) and lowest validation loss "
        "(squares) against its size; hollow markers are pruned trials; baselines and the best "
        "trial are labelled.",
    )


def memorize_figure(study: optuna.Study) -> ReportFigure:
    """Memorize studies: the training loss reached against parameter count, by depth."""
    import plotly.graph_objects as go

    title = "Memorization: training loss reached against capacity"
    trials = [
        t
        for t in _finished(study)
        if t.user_attrs.get("param_count") and _finite(t.user_attrs.get("train_loss_best"))
    ]
    if not trials:
        return placeholder("memorize", title, "no finished trial with a training loss yet")
    figure = go.Figure()
    for state, symbol in ((TrialState.COMPLETE, "circle"), (TrialState.PRUNED, "circle-open")):
        points = [t for t in trials if t.state == state]
        if not points:
            continue
        figure.add_trace(
            go.Scatter(
                x=[t.user_attrs["param_count"] for t in points],
                y=[t.user_attrs["train_loss_best"] for t in points],
                mode="markers",
                name=state.name.lower(),
                marker={
                    "symbol": symbol,
                    "size": 10,
                    "color": [t.params.get("layers", 0) for t in points],
                    "colorscale": "Viridis",
                    "colorbar": {"title": {"text": "layers"}},
                    "showscale": state == TrialState.COMPLETE,
                },
                text=[_hover(t) for t in points],
                hovertemplate="%{text}<br>%{x:,} parameters<br>train loss %{y:.4g}<extra></extra>",
            )
        )
    values = [t.user_attrs["train_loss_best"] for t in trials]
    figure.update_layout(
        title=title,
        xaxis={"title": "parameter count", "type": "log"},
        yaxis={
            "title": "lowest training loss (inference mode)",
            "type": "log" if spans_decades(values, 1.0) else "linear",
        },
        legend={"orientation": "h", "y": -0.18},
    )
    return ReportFigure(
        "memorize",
        title,
        figure,
        "How low each trial drove the training loss, against its size; colour is depth, hollow "
        "markers are pruned trials.",
    )


def learning_curve_figures(study: optuna.Study) -> list[ReportFigure]:
    """Training and validation loss by epoch: the best trial against each baseline."""
    best = best_trial(study)
    if best is None or not best.user_attrs.get("train_curve"):
        return [placeholder("curves", "Learning curves", "no completed trial yet")]
    baselines = [
        t
        for t in _finished(study)
        if "baseline" in t.user_attrs
        and t.number != best.number
        and t.user_attrs.get("train_curve")
    ]
    if not baselines:
        title = f"Learning curves: best trial {best.number}"
        return [ReportFigure("curves", title, _curves_figure(title, [(best, VAL_COLOR)]))]
    out = []
    for i, trial in enumerate(baselines):
        name = trial.user_attrs["baseline"]
        title = f"Learning curves: best trial {best.number} against baseline {name}"
        color = BASELINE_COLORS[i % len(BASELINE_COLORS)]
        figure = _curves_figure(title, [(best, TRAIN_COLOR), (trial, color)])
        caption = (
            f"Solid: validation loss; dashed: training loss. Best trial {best.number}: "
            f"{format_params(trial_params(best))}. Baseline {name} (trial {trial.number}): "
            f"{format_params(trial_params(trial))}."
        )
        out.append(ReportFigure(f"curves_{_slug(name)}", title, figure, caption))
    return out


def pareto_figure(study: optuna.Study) -> ReportFigure:
    """``optuna.visualization.plot_pareto_front`` of loss against parameter count."""
    from optuna.visualization import plot_pareto_front

    names = list(study.metric_names or [loss_name(study), "param_count"])
    with _quiet_optuna():
        figure = plot_pareto_front(study, target_names=names)
    sizes = [t.values[1] for t in _complete(study)]
    if spans_decades(sizes, 1.0):
        figure.update_yaxes(type="log")
    return _titled(
        "pareto",
        f"Pareto front: {names[0]} against {names[1]}",
        figure,
        "Trials no other trial beats on both objectives (red) and the rest; "
        "see the summary for the smallest model within a few percent of the best loss.",
    )


def _curves_figure(title: str, runs: list[tuple[FrozenTrial, str]]) -> Any:
    import plotly.graph_objects as go

    figure = go.Figure()
    values: list[float] = []
    for trial, color in runs:
        who = (
            f"baseline {trial.user_attrs['baseline']}"
            if "baseline" in trial.user_attrs
            else f"trial {trial.number}"
        )
        for attr, label, dash in (
            ("val_curve", "validation", "solid"),
            ("train_curve", "training", "dash"),
        ):
            curve = trial.user_attrs.get(attr) or []
            if not curve:
                continue
            values += [v for v in curve if _finite(v)]
            figure.add_trace(
                go.Scatter(
                    x=list(range(1, len(curve) + 1)),
                    y=curve,
                    mode="lines+markers",
                    name=f"{who} {label}",
                    line={"color": color, "dash": dash},
                    marker={"size": 5},
                )
            )
    figure.update_layout(
        title=title,
        xaxis={"title": "epoch"},
        yaxis={"title": "loss (data loss)", "type": "log" if spans_decades(values) else "linear"},
    )
    return figure


def _complete(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _finished(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _label(trial: FrozenTrial, best: FrozenTrial | None) -> str:
    names = []
    if "baseline" in trial.user_attrs:
        names.append(str(trial.user_attrs["baseline"]))
    if best is not None and trial.number == best.number:
        names.append("best")
    return " / ".join(names)


def _hover(trial: FrozenTrial) -> str:
    who = f"trial {trial.number} ({trial.state.name.lower()})"
    if "baseline" in trial.user_attrs:
        who += f", baseline {trial.user_attrs['baseline']}"
    return f"{who}<br>{format_params(trial_params(trial))}"


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)
