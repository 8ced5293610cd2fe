"""What :func:`search.search` returns: the study, the best parameters, the best model, a summary."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from search.engine.stored import model_params
from search.engine.study import best_trial
from search.errors import ReplayError
from search.views.summary import (
    GAP_NOTE,
    comparison_rows,
    curve_at_best_epoch,
    format_params,
    running_train_loss,
    trial_params,
)

if TYPE_CHECKING:
    import keras
    import pandas

    from search.spec.studyfile import StudySpec
    from search.training.prepared import PreparedData

__all__ = ["SearchResult"]

_COLUMNS = ("row", "trial", "state", "value", "train_loss", "val_loss", "gap", "params", "epochs")
_KEYS = (*_COLUMNS, "model", "train_loss_kind")  # rows()' keys, also with no row


@dataclass
class SearchResult:
    """A finished search from Python.

    Attributes:
        study: The ``optuna.Study``, in the storage the CLI and the dashboard read.
        spec: The study as a validated study file (also written beside the arrays).
        test_scores: The best model's loss (and accuracy) on ``test_data``, scored once.
    """

    study: optuna.Study
    spec: StudySpec
    _data: Any = field(repr=False)  # a callable returning PreparedData, prepared on first use
    test_scores: dict[str, float | None] | None = None
    _model: Any = field(default=None, repr=False)

    @property
    def best_trial(self) -> optuna.trial.FrozenTrial:
        """The completed trial with the lowest loss (ties: the smaller, then the earlier one)."""
        best = best_trial(self.study)
        if best is None:
            # A call can end this way (every trial pruned or failed, a short timeout); the
            # study is kept, so the way on is to resume it.
            raise ReplayError(
                f"study {self.study.study_name} has no completed trial yet "
                f"({self._counts()}); run the same search.search(...) call again with more "
                "trials= or a longer timeout= to resume it."
            )
        return best

    @property
    def best_params(self) -> dict[str, Any]:
        """The best trial's model parameters (``l2 = 0.0``, not Optuna's ``use_l2`` flag).

        For a hypermodel study: its KerasTuner ``hp`` values.
        """
        trial = self.best_trial
        if self.spec.hypermodel is not None:
            return dict(trial.user_attrs.get("hp_values", trial.params))
        return model_params(self.spec, trial)

    @property
    def best_model(self) -> keras.Model:
        """The best trial re-trained with its seed for its best epoch count, ready to use.

        Re-trained on first access (the search keeps no weights), then kept. It takes raw
        inputs (a ``Normalization`` layer holds the training statistics when the data were
        standardized) and is compiled with the plain Keras loss, so ``model.evaluate(x, y)``
        works on 1-D labels.
        """
        if self._model is None:
            from search.engine.retrain import retrain_trial  # TensorFlow
            from search.training.final_model import usable_model

            trial = self.best_trial
            data: PreparedData = self._data()
            epochs = int(trial.user_attrs.get("best_epoch") or trial.user_attrs["epochs_run"])
            run = retrain_trial(self.spec, data, trial, epochs=epochs)
            params = None if self.spec.hypermodel is not None else run.params
            self._model = usable_model(run.model, data.dataset, params)
        return self._model

    def rows(self) -> list[dict[str, Any]]:
        """The best trial, then every baseline: losses at the best epoch, size, epochs.

        As in the printed summary, ``train_loss``, ``val_loss`` and ``gap`` (``val_loss -
        train_loss``) are taken at the trial's best epoch (not each curve's own minimum).
        ``train_loss_kind`` is ``"running"`` where the training loss is Keras' running one
        (dropout on, mean over the epoch's batches: the gap can be negative) and
        ``"inference"`` where it was measured on the whole training set.
        """
        out = []
        for label, trial in comparison_rows(self.study):
            attrs = trial.user_attrs
            out.append(
                {
                    "row": label,
                    "trial": trial.number,
                    "state": trial.state.name.lower(),
                    "value": trial.values[0] if trial.values else None,
                    "train_loss": _loss_at_best(attrs, "train"),
                    "val_loss": _loss_at_best(attrs, "val"),
                    "gap": attrs.get("gap_at_best"),
                    "params": attrs.get("param_count"),
                    "epochs": attrs.get("epochs_run"),
                    "model": format_params(trial_params(trial)),
                    "train_loss_kind": attrs.get("train_loss_kind"),
                }
            )
        return out

    def summary(self) -> pandas.DataFrame:
        """A pandas DataFrame of :meth:`rows` (``pip install pandas``), indexed by row.

        With no completed trial and no baseline it has the columns and no row.
        """
        import pandas

        return pandas.DataFrame(self.rows(), columns=list(_KEYS)).set_index("row")

    def _counts(self) -> str:
        trials = self.study.get_trials(deepcopy=False)
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        pruned = sum(t.state == TrialState.PRUNED for t in trials)
        return f"{complete} complete, {pruned} pruned of {len(trials)} trials"

    def __repr__(self) -> str:
        return f"SearchResult(study={self.study.study_name!r}, {self._counts()})"

    def _repr_html_(self) -> str:
        """The summary as an HTML table, for Jupyter."""
        running = running_train_loss(self.study)
        names = {"train_loss": "run_train_loss", "gap": "run_gap"} if running else {}
        head = "".join(f"<th>{names.get(c, c)}</th>" for c in (*_COLUMNS, "model"))
        body = []
        for row in self.rows():
            cells = "".join(f"<td>{html.escape(_cell(row[c]))}</td>" for c in (*_COLUMNS, "model"))
            body.append(f"<tr>{cells}</tr>")
        title = html.escape(
            f"study {self.study.study_name} ({self.spec.objective}): {self._counts()}"
        )
        note = f"<p>({html.escape(GAP_NOTE)})</p>" if running and body else ""
        if best_trial(self.study) is None:
            note += "<p>no completed trial yet: run the same call again to resume the study.</p>"
        test = ""
        if self.test_scores:
            scores = ", ".join(f"{k} {_cell(v)}" for k, v in self.test_scores.items())
            test = f"<p>test: {html.escape(scores)}</p>"
        return (
            f"<p><b>{title}</b></p><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>{note}{test}"
        )


def _loss_at_best(attrs: dict[str, Any], split: str) -> float | None:
    """A split's loss at the best epoch: its curve's value there, else the stored best.

    The curve, as the printed summary table takes it; the stored best for a trial recorded
    without curves.
    """
    at_best = curve_at_best_epoch(attrs, f"{split}_curve")
    return at_best if at_best is not None else attrs.get(f"{split}_loss_best")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
