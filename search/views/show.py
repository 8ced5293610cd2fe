"""Reading stored studies: the ``list`` and ``show`` commands, as text or as JSON records."""

from __future__ import annotations

from collections import Counter
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.errors import StorageError
from search.spec.studyfile import known_studies
from search.storage.studies import list_studies, load_stored_study
from search.storage.urls import mask_url, resolve_storage_url
from search.views.summary import (
    GAP_NOTE,
    comparison_table,
    comparison_title,
    format_params,
    pareto_lines,
    running_train_loss,
    table,
    trial_params,
)


def list_records(storage: str | None) -> list[dict[str, Any]]:
    """What ``list`` shows, as records (``capsearch list --json``): one dict per study.

    A missing default SQLite file is not an error here: it just means nothing is stored yet.
    Counts of a study that is not stored are ``0`` trials and ``None`` for the rest.
    """
    url = resolve_storage_url(storage)
    try:
        stored = {row.name: row for row in list_studies(url)}
    except StorageError:
        if storage is not None:
            raise
        stored = {}
    shipped = set(known_studies())
    records = []
    for name in sorted(shipped | set(stored)):
        row = stored.get(name)
        records.append(
            {
                "study": name,
                "shipped": name in shipped,
                "trials": row.n_trials if row else 0,
                "complete": row.n_complete if row else None,
                "pruned": row.n_pruned if row else None,
                "failed": row.n_failed if row else None,
                "running": row.n_running if row else None,
                "best": row.best_value if row else None,
            }
        )
    return records


def list_rows(storage: str | None) -> list[str]:
    """One row per study: shipped study files and stored studies, with their trial counts."""
    url = resolve_storage_url(storage)
    rows = [["study", "file", "trials", "complete", "pruned", "failed", "running", "best"]]
    for record in list_records(storage):
        best = record["best"]
        counts = [
            "-" if record[key] is None else str(record[key])
            for key in ("trials", "complete", "pruned", "failed", "running")
        ]
        rows.append(
            [
                record["study"],
                "yes" if record["shipped"] else "no",
                *counts,
                "-" if best is None else f"{best:.4g}",
            ]
        )
    return [f"storage: {mask_url(url)}", *table(rows)]


def _state_counts(study: optuna.Study) -> dict[str, int]:
    counts = Counter(t.state for t in study.get_trials(deepcopy=False))
    return {state.name.lower(): counts[state] for state in TrialState}


def show_record(name: str, storage: str | None, *, top: int = 10) -> dict[str, Any]:
    """What ``show`` shows, as one record (``capsearch show --json``).

    Keys: ``study``, ``objective``, ``storage`` (password masked), ``trials`` (counts by
    state), ``ranked`` (the ``top`` best completed trials: number, value, params, epochs,
    seconds, baseline), ``baselines`` (name, trial, state, value) and ``test_evaluation``.
    """
    stored = load_stored_study(name, storage)
    study, url = stored.study, stored.url
    ranked = []
    for trial in _ranked(study)[:top]:
        ranked.append(
            {
                "trial": trial.number,
                "values": list(trial.values),
                "params": trial_params(trial),
                "epochs": trial.user_attrs.get("epochs_run"),
                "seconds": trial.user_attrs.get("wall_seconds"),
                "baseline": trial.user_attrs.get("baseline"),
            }
        )
    baselines = [
        {
            "name": t.user_attrs["baseline"],
            "trial": t.number,
            "state": t.state.name.lower(),
            "values": list(t.values) if t.values else None,
        }
        for t in study.get_trials(deepcopy=False)
        if "baseline" in t.user_attrs
    ]
    return {
        "study": name,
        "objective": study.user_attrs.get("objective"),
        "storage": mask_url(url),
        "trials": _state_counts(study),
        "ranked": ranked,
        "baselines": baselines,
        "test_evaluation": study.user_attrs.get("test_evaluation"),
    }


def _ranked(study: optuna.Study) -> list[FrozenTrial]:
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(trials, key=lambda t: (t.values[0] if t.values else float("inf"), t.number))


def show_study(name: str, storage: str | None, *, top: int = 10) -> list[str]:
    """A stored study's best trials, its comparison with the baselines and its test result."""
    stored = load_stored_study(name, storage)
    study, url = stored.study, stored.url
    trials = _ranked(study)
    counts = _state_counts(study)
    shown = min(top, len(trials))
    lines = [
        f"study {name} ({study.user_attrs.get('objective', '?')}) in {mask_url(url)}: "
        f"{len(study.trials)} trials ({counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['fail']} failed, {counts['running']} running, {counts['waiting']} waiting); "
        f"ranked: {shown} of the {counts['complete']} complete (pruned and failed trials "
        "are not ranked)",
    ]
    rows = [["rank", "trial", "value", "params", "epochs", "seconds"]]
    for rank, trial in enumerate(trials[:top], start=1):
        rows.append(
            [
                str(rank),
                str(trial.number),
                f"{trial.values[0]:.5g}",
                format_params(trial_params(trial)),
                str(trial.user_attrs.get("epochs_run", "-")),
                f"{trial.user_attrs.get('wall_seconds', 0):.1f}",
            ]
        )
    lines += table(rows) if len(rows) > 1 else ["no completed trial yet"]
    comparison = comparison_table(study)
    if comparison:
        lines += [f"{comparison_title(study)}:", *("  " + line for line in comparison)]
        if running_train_loss(study):
            lines.append(f"  ({GAP_NOTE})")
    lines += pareto_lines(study)
    test = study.user_attrs.get("test_evaluation")
    if test:
        acc = test.get("test_accuracy")
        lines.append(
            f"test: trial {test['trial']} loss {test['test_loss']:.4g}"
            + (f", accuracy {acc:.4f}" if acc is not None else "")
        )
    return lines
