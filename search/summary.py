"""What a person reads: one line per finished trial, and the end-of-search summary tables."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    import optuna

    from search.studyfile import StudySpec

Echo = Callable[[str], None]

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

    Example:
        >>> format_params({"layers": 2, "l2": 0.0, "learning_rate": 0.00123})
        'layers=2 l2=0 lr=0.00123'
    """
    parts = []
    for key, value in params.items():
        if key.startswith("use_"):
            continue
        parts.append(f"{_SHORT.get(key, key)}={_number(value)}")
    return " ".join(parts)


def trial_params(trial: FrozenTrial) -> dict[str, Any]:
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
    monitor = "val_loss" if spec.objective == "generalize" else "train_loss"
    attrs = trial.user_attrs
    state = trial.state.name
    if trial.state == TrialState.PRUNED:
        state += f"@{attrs.get('epochs_run', '?')}"
    if trial.value is not None:
        value = _number(trial.value)
    else:
        value = _number(_last(trial.intermediate_values)) if trial.intermediate_values else "-"
    seconds = attrs.get("wall_seconds")
    if seconds is None and trial.datetime_complete and trial.datetime_start:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    extra = ""
    if "val_accuracy_at_best" in attrs:
        extra += f" val_acc={attrs['val_accuracy_at_best']:.4f}"
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


def comparison_rows(study: optuna.Study) -> list[tuple[str, FrozenTrial]]:
    """The best trial, then each baseline's trial (as labelled rows)."""
    trials = study.get_trials(deepcopy=False)
    rows: list[tuple[str, FrozenTrial]] = []
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    if completed:
        rows.append(("best", study.best_trial))
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


def comparison_table(study: optuna.Study) -> list[str]:
    """Best versus each baseline: value, losses, gap, accuracy, size and epochs."""
    header = ["", "trial", "value", "train_loss", "val_loss", "gap", "val_acc", "params", "epochs"]
    rows = [header]
    for label, trial in comparison_rows(study):
        a = trial.user_attrs
        value = trial.value if trial.value is not None else None
        rows.append(
            [
                label,
                str(trial.number),
                _number(value) if value is not None else trial.state.name.lower(),
                _number(a.get("train_loss_best")),
                _number(a.get("val_loss_best")),
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
    best = study.best_trial
    monitor = "validation" if spec.objective == "generalize" else "training"
    echo(
        f"best trial {best.number}: {monitor} loss {_number(best.value)} at epoch "
        f"{best.user_attrs.get('best_epoch', '?')}"
    )
    echo(f"  {format_params(trial_params(best))}")
    lines = comparison_table(study)
    if lines:
        echo("best versus baselines (value = best-epoch " + monitor + " loss, lower is better):")
        for line in lines:
            echo("  " + line)
    test = study.user_attrs.get("test_evaluation")
    if test and test.get("trial") == best.number:
        accuracy = test.get("test_accuracy")
        acc_text = f", accuracy {accuracy:.4f}" if accuracy is not None else ""
        echo(
            f"test ({test['n_test']} held-out rows, trial {test['trial']} re-trained for "
            f"{test['epochs']} epochs): loss {_number(test['test_loss'])}{acc_text}"
        )


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
