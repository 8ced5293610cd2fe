"""The study note optuna-dashboard shows: what the study is, and (after a run) how it went.

Written when the study is created (description, data, objective, space, baselines) and rewritten
at the end of each run with the best trial against the baselines, the Pareto front of a
multi-objective study and the test result. The note is Markdown, stored by
:func:`optuna_dashboard.save_note` in the study's system attributes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from search.errors import one_line
from search.spec.space import Choice

if TYPE_CHECKING:
    import optuna

    from search.spec.studyfile import StudySpec

RESULTS_HEADING = "## Results"


def describe_objective(spec: StudySpec) -> str:
    """One sentence on what the study minimizes."""
    if spec.objective == "generalize":
        text = "generalize: minimize the best-epoch validation loss (data loss, no L2 penalty)"
    else:
        text = (
            "memorize: minimize the best-epoch training loss, measured on the whole training "
            "set in inference mode"
        )
    if spec.multi_objective:
        text += "; and, as a second objective, the parameter count (Pareto front, no pruning)"
    return text + "."


def study_note(spec: StudySpec) -> str:
    """The Markdown description of a study file."""
    lines = [f"# {spec.name}", "", spec.description.strip() or "(no description)", ""]
    lines += [f"**Objective** — {describe_objective(spec)}", ""]
    data = ", ".join(f"{k} = {_value(v)}" for k, v in spec.data.options.items())
    lines += [f"**Data** — `{spec.data.source}`" + (f" ({data})" if data else ""), ""]
    training = ", ".join(f"{k} = {v}" for k, v in vars(spec.training).items() if v is not None)
    lines += [
        f"**Training** — {training}; **sampler** {spec.sampler.name} (seed {spec.sampler.seed}); "
        f"**pruner** {'none (multi-objective)' if spec.multi_objective else spec.pruner.name}; "
        f"**trials** {spec.trials}",
        "",
    ]
    if spec.space:
        lines += ["**Space**", "", "| parameter | values |", "| --- | --- |"]
        lines += [f"| {k} | {describe_param(p.to_dict())} |" for k, p in spec.space.items()]
        lines.append("")
    if spec.baselines:
        keys = list(spec.space) or sorted({k for b in spec.baselines for k in b.params})
        lines += ["**Baselines** (enqueued first, never pruned)", ""]
        lines += ["| name | " + " | ".join(keys) + " |", "|" + " --- |" * (len(keys) + 1)]
        for b in spec.baselines:
            cells = " | ".join(_value(b.params.get(k, "")) for k in keys)
            lines.append(f"| {b.name} | {cells} |")
        lines.append("")
    lines += [reading_the_dashboard(spec), ""]
    lines.append(f"Study file: `{spec.path}`")
    return "\n".join(lines) + "\n"


def reading_the_dashboard(spec: StudySpec) -> str:
    """What reads differently in the dashboard than in ``show`` (docs/report-and-dashboard.md).

    Example:
        >>> from search.spec.studyfile import load_study
        >>> epochs = reading_the_dashboard(load_study("imdb_generalize"))
        >>> print(epochs)  # doctest: +NORMALIZE_WHITESPACE
        **Reading the dashboard** — a learning curve's step is the epoch's index from 0, as
        Optuna's Keras callback reports it: step 0 is epoch 1, and a trial's `best_step` is its
        best epoch on that scale (`best_epoch`, counted from 1 as Keras prints epochs, is
        `best_step` + 1); the slice, contour and rank plots are Optuna's own (Settings, "Use
        Plotly Python library", on by default in `capsearch dashboard`), which order the
        numeric choices of batch_size by value: turned off, the dashboard's plots order them as
        text (1024 before 128).
        >>> folds = reading_the_dashboard(load_study("pima_generalize"))  # [training] folds = 5
        >>> print(folds.split(";")[0])  # doctest: +NORMALIZE_WHITESPACE
        **Reading the dashboard** — a learning curve's step is the fold's index from 0 (step 0
        is fold 1), its value the running mean of the folds' best validation losses
    """
    if spec.training.folds:
        text = (
            "**Reading the dashboard** — a learning curve's step is the fold's index from 0 "
            "(step 0 is fold 1), its value "
            + (
                "that fold's best validation loss"
                if spec.pruner.name == "wilcoxon"
                else "the running mean of the folds' best validation losses"
            )
        )
    else:
        text = (
            "**Reading the dashboard** — a learning curve's step is the epoch's index from 0, as "
            "Optuna's Keras callback reports it: step 0 is epoch 1, and a trial's `best_step` is "
            "its best epoch on that scale (`best_epoch`, counted from 1 as Keras prints epochs, "
            "is `best_step` + 1)"
        )
    numeric = [
        key
        for key, param in spec.space.items()
        if isinstance(param, Choice)
        and len(param.choices) > 1
        and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in param.choices)
    ]
    if numeric:
        text += (
            "; the slice, contour and rank plots are Optuna's own (Settings, \"Use Plotly Python "
            'library", on by default in `capsearch dashboard`), which order the numeric choices '
            f"of {', '.join(numeric)} by value: turned off, the dashboard's plots order them as "
            "text (1024 before 128)"
        )
    return text + "."


def results_section(study: optuna.Study) -> str:
    """Markdown: best versus baselines, the Pareto front and the test result of a study."""
    from optuna.trial import TrialState

    from search.engine.study import best_trial
    from search.views.summary import (
        GAP_NOTE,
        comparison_table,
        comparison_title,
        pareto_lines,
        running_train_loss,
    )

    counts = {s: 0 for s in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] += 1
    lines = [
        RESULTS_HEADING,
        "",
        f"{counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
        f"{counts[TrialState.FAIL]} failed trials.",
        "",
    ]
    best = best_trial(study)
    if best is None:
        return "\n".join([*lines, "No completed trial yet.", ""])
    table = comparison_table(study)
    if table:
        title = comparison_title(study)
        lines += [f"{title[0].upper()}{title[1:]} (value = best-epoch loss):", "", "```"]
        lines += [*table, "```", ""]
        if running_train_loss(study):
            lines += [f"{GAP_NOTE[0].upper()}{GAP_NOTE[1:]}.", ""]
    front = pareto_lines(study)
    if front:
        lines += ["```", *front, "```", ""]
    test = study.user_attrs.get("test_evaluation")
    if test and test.get("trial") == best.number:
        accuracy = test.get("test_accuracy")
        acc = f", accuracy {accuracy:.4f}" if accuracy is not None else ""
        lines.append(
            f"**Test** ({test['n_test']} held-out rows, trial {test['trial']} re-trained for "
            f"{test['epochs']} epochs): loss {test['test_loss']:.4g}{acc}"
        )
        lines.append("")
    return "\n".join(lines)


def write_study_note(study: optuna.Study, spec: StudySpec, *, results: bool = False) -> str:
    """Save the study note (with the results section when ``results``) and return it."""
    from optuna_dashboard import save_note

    from search.views.verdict_view import stored_verdict, verdict_markdown

    body = study_note(spec)
    if results:
        verdict = stored_verdict(study)
        if verdict is not None:  # the answer first, then the table it comes from
            body += "\n" + verdict_markdown(verdict)
        body += "\n" + results_section(study)
    save_note(study, body)
    return body


def read_study_note(study: optuna.Study) -> str:
    """The study's note ('' when none was written)."""
    from optuna_dashboard import get_note

    return str(get_note(study))


def describe_param(config: Any) -> str:
    """A search-space entry as a person reads it.

    Example:
        >>> describe_param({"low": 1e-06, "high": 0.01, "log": True, "zero": True})
        '0 or 1e-06 … 0.01 (log)'
        >>> describe_param({"choices": [64, 128]}), describe_param("relu")
        ('64, 128', 'relu')
    """
    if not isinstance(config, dict):
        return _value(config)
    if "choices" in config:
        return ", ".join(_value(c) for c in config["choices"])
    if "low" in config:
        text = f"{_value(config['low'])} … {_value(config['high'])}"
        text += " (log)" if config.get("log") else ""
        return f"0 or {text}" if config.get("zero") else text
    return ", ".join(f"{k} = {_value(v)}" for k, v in config.items())


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def update_study_note(study: optuna.Study, spec: StudySpec, echo: Any = print) -> None:
    """Rewrite the note with the results; a failure prints one warning line, nothing more."""
    try:
        write_study_note(study, spec, results=True)
    except Exception as exc:  # the note is a convenience: never fail a finished search on it
        echo(f"warning: study note not updated ({type(exc).__name__}: {one_line(exc)})")
