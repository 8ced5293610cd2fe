"""What a person reads: one line per finished trial, and the end-of-search summary tables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState

from search.console import Echo
from search.engine.study import best_trial, is_multi_objective
from search.spec.family import layer_widths

if TYPE_CHECKING:
    import optuna

    from search.spec.studyfile import StudySpec


_SHORT = {
    "layers": "layers",
    "units": "units",
    "activation": "act",
    "l2": "l2",
    "dropout": "dropout",
    "batch_size": "batch",
    "learning_rate": "lr",
    "optimizer": "opt",
}


def format_params(params: Mapping[str, Any]) -> str:
    """``layers=2 units=16 l2=0 dropout=0.5 batch=512 lr=0.001 opt=rmsprop``.

    Widths given per layer (``units_1`` ...: a ``free`` shape, a baseline's list) are shown as the
    ``units`` they replace.

    Example:
        >>> format_params({"layers": 2, "l2": 0.0, "learning_rate": 0.00123})
        'layers=2 l2=0 lr=0.00123'
        >>> format_params({"layers": 2, "units": 63, "shape": "free", "units_1": 10, "units_2": 5})
        'layers=2 units=10-5 shape=free'
    """
    free = _free_widths(params)
    parts = []
    for key, value in params.items():
        if key.startswith("use_") or (free and key.startswith("units_")):
            continue
        shown = free if key == "units" and free else _number(value)
        parts.append(f"{_SHORT.get(key, key)}={shown}")
    return " ".join(parts)


def _free_widths(params: Mapping[str, Any]) -> str:
    """``"10-5"`` for widths given per layer (a ``free`` shape, a baseline's list), else ``""``."""
    if "layers" not in params or "units_1" not in params:
        return ""
    try:
        return "-".join(str(w) for w in layer_widths(params))
    except (ValueError, TypeError):  # widths missing: show the parameters as they are
        return ""


def trial_params(trial: FrozenTrial | optuna.Trial) -> dict[str, Any]:
    """A trial's model parameters as a person reads them (``use_l2=False`` shown as ``l2=0``)."""
    out: dict[str, Any] = {}
    for key, value in trial.params.items():
        if key.startswith("use_"):
            name = key[len("use_") :]
            if not value:
                out[name] = 0.0
            continue
        out[key] = value
    order = list(_SHORT)
    return dict(sorted(out.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))


def format_trial_line(trial: FrozenTrial, spec: StudySpec) -> str:
    """One line for a finished trial: number, state, value, key parameters and time."""
    monitor = spec.monitor
    attrs = trial.user_attrs
    state = trial.state.name
    if trial.state == TrialState.PRUNED:
        state += f"@{attrs.get('epochs_run', '?')}"
    if trial.values:
        value = _number(trial.values[0])
    else:
        value = _number(_last(trial.intermediate_values)) if trial.intermediate_values else "-"
    seconds = attrs.get("wall_seconds")
    if seconds is None and trial.datetime_complete and trial.datetime_start:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    extra = ""
    if "val_accuracy_at_best" in attrs:
        extra += f" val_acc={attrs['val_accuracy_at_best']:.4f}"
    if spec.multi_objective and trial.values:
        extra += f" param_count={_number(trial.values[1])}"
    if "baseline" in attrs:
        extra += f" [baseline {attrs['baseline']}]"
    if trial.state == TrialState.FAIL:
        reason = trial.system_attrs.get("fail_reason", "") or attrs.get("fail_reason", "")
        extra += f" reason: {str(reason).splitlines()[-1][:120] if reason else '?'}"
    if "pruned_reason" in attrs:
        extra += f" reason: {attrs['pruned_reason']}"
    time_text = f" {seconds:.1f}s" if isinstance(seconds, (int, float)) else ""
    return (
        f"trial {trial.number:>4} {state:<12} {monitor}={value:<10} "
        f"{format_params(trial_params(trial))}{time_text}{extra}"
    )


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto-optimal trials of a multi-objective study, smallest model first."""
    if not is_multi_objective(study):
        return []
    return sorted(study.best_trials, key=lambda t: (t.values[1], t.values[0], t.number))


def smallest_within(study: optuna.Study, percent: float) -> tuple[FrozenTrial, FrozenTrial] | None:
    """The smallest completed model whose loss is within ``percent`` % of the best loss.

    Returns:
        ``(smallest, best)``, or None when no trial completed.
    """
    best = best_trial(study)
    if best is None:
        return None
    limit = best.values[0] + abs(best.values[0]) * percent / 100
    candidates = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values[0] <= limit
    ]
    return min(candidates, key=lambda t: (_size_of(t), t.values[0], t.number)), best


def pareto_lines(study: optuna.Study, percents: Sequence[float] = (1, 5, 10)) -> list[str]:
    """The Pareto front sorted by parameter count, and the smallest model near the best loss."""
    front = pareto_front(study)
    if not front:
        return []
    names = study.metric_names or ["loss", "param_count"]
    rows = [["trial", names[0], names[1], "params"]]
    for trial in front:
        rows.append(
            [
                str(trial.number),
                _number(trial.values[0]),
                f"{int(trial.values[1]):,}",
                format_params(trial_params(trial)),
            ]
        )
    lines = [f"Pareto front ({names[0]}, {names[1]}), smallest model first:"]
    lines += ["  " + line for line in table(rows)]
    for percent in percents:
        found = smallest_within(study, percent)
        if found is None:
            continue
        small, best = found
        lines.append(
            f"smallest model within {percent:g} % of the best loss {_number(best.values[0])}: "
            f"trial {small.number} ({_number(small.values[0])}, {_size_of(small):,} parameters)"
        )
    return lines


def _size_of(trial: FrozenTrial) -> int:
    if trial.values is not None and len(trial.values) > 1:
        return int(trial.values[1])
    return int(trial.user_attrs.get("param_count", 0))


def comparison_rows(study: optuna.Study) -> list[tuple[str, FrozenTrial]]:
    """The best trial, then each baseline's trial (as labelled rows)."""
    trials = study.get_trials(deepcopy=False)
    rows: list[tuple[str, FrozenTrial]] = []
    best = best_trial(study)
    if best is not None:
        rows.append(("best", best))
    for trial in trials:
        if "baseline" in trial.user_attrs and trial.state in (
            TrialState.COMPLETE,
            TrialState.PRUNED,
        ):
            rows.append((f"baseline {trial.user_attrs['baseline']}", trial))
    return rows


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned text columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def plural(count: int, noun: str) -> str:
    """``count`` and ``noun``, in the plural unless the count is one.

    Example:
        >>> plural(1, "baseline"), plural(0, "baseline"), plural(5, "baseline")
        ('1 baseline', '0 baselines', '5 baselines')
    """
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def comparison_title(study: optuna.Study) -> str:
    """The heading of :func:`comparison_table`: versus how many baselines, or none."""
    baselines = sum(1 for label, _ in comparison_rows(study) if label.startswith("baseline "))
    if not baselines:
        return "best trial (the study has no baselines)"
    return f"best versus {plural(baselines, 'baseline')}"


def running_train_loss(study: optuna.Study) -> bool:
    """Whether the study's training losses are Keras' running ones (dropout on, batch means).

    Generalize studies record the running loss; memorize studies (and generalize ones that ask
    for it) measure the whole training set in inference mode. With the running loss the gap
    ``val_loss - train_loss`` compares two different measures and can be negative.
    """
    kinds = {t.user_attrs.get("train_loss_kind") for t in study.get_trials(deepcopy=False)}
    return "running" in kinds


GAP_NOTE = (
    "run_train_loss is Keras' running training loss (dropout on, mean over the epoch's batches), "
    "so run_gap = val_loss - run_train_loss can be negative; memorize studies measure the "
    "training loss in inference mode"
)
"""The note printed under a comparison whose training losses are running ones."""


def comparison_table(study: optuna.Study) -> list[str]:
    """Best versus each baseline: value, losses, gap, accuracy, size and epochs.

    Every loss column is taken at the trial's best epoch, so gap = val_loss - train_loss. When
    the training loss is the running one (:func:`running_train_loss`) the columns are named
    ``run_train_loss`` and ``run_gap``, and :data:`GAP_NOTE` says why.
    """
    running = running_train_loss(study)
    train, gap = ("run_train_loss", "run_gap") if running else ("train_loss", "gap")
    header = ["", "trial", "value", train, "val_loss", gap, "val_acc", "params", "epochs"]
    rows = [header]
    for label, trial in comparison_rows(study):
        a = trial.user_attrs
        value = trial.values[0] if trial.values else None
        rows.append(
            [
                label,
                str(trial.number),
                _number(value) if value is not None else trial.state.name.lower(),
                _number(curve_at_best_epoch(a, "train_curve")),
                _number(curve_at_best_epoch(a, "val_curve")),
                _number(a.get("gap_at_best")),
                _number(a.get("val_accuracy_at_best")),
                _number(a.get("param_count")),
                _number(a.get("epochs_run")),
            ]
        )
    return table(rows) if len(rows) > 1 else []


def print_summary(study: optuna.Study, spec: StudySpec, echo: Echo = print) -> None:
    """The end-of-search summary: best trial, its parameters, best versus baselines, test."""
    counts = {s: 0 for s in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] += 1
    echo(
        f"study {study.study_name}: {counts[TrialState.COMPLETE]} complete, "
        f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed, "
        f"{counts[TrialState.RUNNING]} running"
    )
    if not counts[TrialState.COMPLETE]:
        echo("no completed trial yet")
        return
    best = best_trial(study)
    assert best is not None  # a trial completed
    monitor = "validation" if spec.objective == "generalize" else "training"
    echo(
        f"best trial {best.number}: {monitor} loss {_number(best.values[0])} at epoch "
        f"{best.user_attrs.get('best_epoch', '?')}"
    )
    echo(f"  {format_params(trial_params(best))}")
    floor = constant_line(study.user_attrs.get("constant_prediction"), spec.objective)
    if floor:
        echo(floor)
    lines = comparison_table(study)
    if lines:
        echo(
            f"{comparison_title(study)} (value = best-epoch {monitor} loss, lower is better; "
            "losses at the best epoch, epochs = epochs run):"
        )
        for line in lines:
            echo("  " + line)
        if running_train_loss(study):
            echo(f"  ({GAP_NOTE})")
    for line in pareto_lines(study):
        echo(line)
    test = study.user_attrs.get("test_evaluation")
    if test and test.get("trial") == best.number:
        accuracy = test.get("test_accuracy")
        acc_text = f", accuracy {accuracy:.4f}" if accuracy is not None else ""
        echo(
            f"test ({test['n_test']} held-out rows, trial {test['trial']} re-trained for "
            f"{test['epochs']} epochs): loss {_number(test['test_loss'])}{acc_text}"
        )


def constant_line(constant: Any, objective: str) -> str | None:
    """The floor a trained model must beat, as the summary prints it under the best trial.

    Example:
        >>> print(constant_line({"val_loss": 0.6439, "val_accuracy": 0.6494}, "generalize"))
          a constant prediction (the majority class) scores validation loss 0.6439, accuracy 0.6494
        >>> constant_line({"train_loss": 7.9e9, "train_accuracy": None}, "memorize")
        '  a constant prediction (the training mean) scores training loss 7.9e+09'
    """
    if not isinstance(constant, Mapping):
        return None
    split, where = ("val", "validation") if objective == "generalize" else ("train", "training")
    loss, accuracy = constant.get(f"{split}_loss"), constant.get(f"{split}_accuracy")
    if not isinstance(loss, (int, float)):
        return None
    what = "the training mean" if accuracy is None else "the majority class"
    acc = f", accuracy {accuracy:.4f}" if isinstance(accuracy, (int, float)) else ""
    return f"  a constant prediction ({what}) scores {where} loss {_number(loss)}{acc}"


def curve_at_best_epoch(attrs: Mapping[str, Any], curve: str) -> float | None:
    """A curve's value at the trial's best epoch."""
    values, best = attrs.get(curve), attrs.get("best_epoch")
    if not values or not best or best > len(values):
        return None
    return values[best - 1]  # type: ignore[no-any-return]


def _last(values: Mapping[int, float]) -> float:
    return values[max(values)]


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, str)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1e4 or abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.4g}"
    return str(value)
