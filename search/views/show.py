"""Reading stored studies: the ``list`` and ``show`` commands."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from search.errors import StorageError
from search.spec.studyfile import known_studies
from search.storage.opening import open_storage
from search.storage.studies import list_studies
from search.storage.urls import mask_url, resolve_storage_url
from search.views.summary import comparison_table, format_params, pareto_lines, table, trial_params


def list_rows(storage: str | None) -> list[str]:
    """One row per study: shipped study files and stored studies, with their trial counts.

    A missing default SQLite file is not an error here: it just means nothing is stored yet.
    """
    url = resolve_storage_url(storage)
    try:
        stored = {row.name: row for row in list_studies(url)}
    except StorageError:
        if storage is not None:
            raise
        stored = {}
    names = sorted(set(known_studies()) | set(stored))
    shipped = set(known_studies())
    rows = [["study", "file", "trials", "complete", "pruned", "failed", "running", "best"]]
    for name in names:
        row = stored.get(name)
        best = f"{row.best_value:.4g}" if row and row.best_value is not None else "-"
        counts = (
            [str(row.n_trials), str(row.n_complete), str(row.n_pruned), str(row.n_failed)]
            + [str(row.n_running)]
            if row
            else ["0", "-", "-", "-", "-"]
        )
        rows.append([name, "yes" if name in shipped else "no", *counts, best])
    return [f"storage: {mask_url(url)}", *table(rows)]


def show_study(name: str, storage: str | None, *, top: int = 10) -> list[str]:
    """A stored study's best trials, its comparison with the baselines and its test result."""
    url = resolve_storage_url(storage)
    rdb = open_storage(url, create=False)
    try:
        study = optuna.load_study(study_name=name, storage=rdb)
    except KeyError:
        stored = ", ".join(s.study_name for s in optuna.get_all_study_summaries(rdb)) or "(none)"
        raise StorageError(
            f"no study {name!r} in {mask_url(url)}; stored studies: {stored}."
        ) from None
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    trials.sort(key=lambda t: t.values[0] if t.values else float("inf"))
    lines = [
        f"study {name} ({study.user_attrs.get('objective', '?')}) in {mask_url(url)}: "
        f"{len(study.trials)} trials",
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
        lines += ["best versus baselines:", *("  " + line for line in comparison)]
    lines += pareto_lines(study)
    test = study.user_attrs.get("test_evaluation")
    if test:
        acc = test.get("test_accuracy")
        lines.append(
            f"test: trial {test['trial']} loss {test['test_loss']:.4g}"
            + (f", accuracy {acc:.4f}" if acc is not None else "")
        )
    return lines
