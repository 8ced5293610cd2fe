"""Per-trial plots, stored in Optuna's artifact store so optuna-dashboard shows them.

Every finished trial (complete or pruned) gets one PNG: training and validation loss by epoch
(log y-axis when the values span more than two decades) and, for one-input regression, a second
panel with the data (red dots) and the model's predictions (blue squares), training points
filled and validation points hollow, as in seed 000's figures. The PNG is uploaded with
:func:`optuna.artifacts.upload_artifact` and its id recorded on the trial as ``plot_artifact``.

Optuna refuses attributes on a finished trial, so the plot is made by :class:`TrialPlots`, a
wrapper of the objective that runs just before the trial is told, not by an ``optimize``
callback. A failing plot never fails the trial: it prints one warning line and the search goes on.

Where artifacts live (:func:`artifact_dir`): ``$CAPSEARCH_ARTIFACTS`` when set; else, for an
SQLite storage at ``P``, the folder ``artifacts`` beside ``P``; else ``storage/artifacts``.
``capsearch dashboard`` opens the same store.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from search import settings
from search.errors import first_line
from search.storage.urls import DEFAULT_STORAGE_DIR

if TYPE_CHECKING:
    from optuna.artifacts import FileSystemArtifactStore

ARTIFACTS_ENV = settings.ARTIFACTS.name
PLOT_ATTR = "plot_artifact"
LOG_DECADES = 2.0

Echo = Callable[[str], None]


def artifact_dir(storage_url: str) -> Path:
    """The folder of the artifact store that belongs to a storage.

    Example:
        >>> artifact_dir("sqlite:////data/runs/studies.db")  # with CAPSEARCH_ARTIFACTS unset
        PosixPath('/data/runs/artifacts')
    """
    env = settings.artifacts_dir()
    if env is not None:
        return env
    from sqlalchemy.engine import make_url

    try:
        url = make_url(storage_url)
    except Exception:  # not a URL: fall back to the default folder
        return DEFAULT_STORAGE_DIR / "artifacts"
    database = url.database
    if url.drivername.startswith("sqlite") and database and database != ":memory:":
        return Path(database).parent / "artifacts"
    return DEFAULT_STORAGE_DIR / "artifacts"


def open_artifact_store(storage_url: str) -> FileSystemArtifactStore:
    """The :class:`~optuna.artifacts.FileSystemArtifactStore` of a storage (folder created)."""
    from optuna.artifacts import FileSystemArtifactStore

    folder = artifact_dir(storage_url)
    folder.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(base_path=str(folder))


def spans_decades(values: Iterable[float | None], decades: float = LOG_DECADES) -> bool:
    """Whether the positive finite values span more than ``decades`` powers of ten.

    Example:
        >>> spans_decades([0.5, 0.001]), spans_decades([0.5, 0.1]), spans_decades([0.0, 1.0])
        (True, False, False)
    """
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite or min(finite) <= 0:
        return False
    return math.log10(max(finite) / min(finite)) > decades


def draw_trial_figure(attrs: Mapping[str, Any], title: str, path: Path) -> Path:
    """Draw a trial's loss curves (and its fit, for one-input regression) into a PNG.

    Args:
        attrs: The trial's user attributes (``train_curve``, ``val_curve``, ``best_epoch``,
            ``train_loss_kind`` and, optionally, ``predictions``).
        title: The figure's title.
        path: Where the PNG goes.

    Example:
        >>> draw_trial_figure({"train_curve": [1.0, 0.5], "val_curve": [1.1, 0.7]},
        ...                   "trial 0", Path("/tmp/t0.png"))
        PosixPath('/tmp/t0.png')
    """
    from matplotlib.figure import Figure  # Agg canvas, no pyplot state: safe in any process

    fit = attrs.get("predictions") or {}
    panels = 2 if fit.get("x_train") else 1
    width, height = 6.4 * panels, 4.6
    figure = Figure(figsize=(width, height), dpi=100)
    # Fixed margins, in inches: matplotlib's constrained layout took 40 % of the drawing time
    # (0.19 s against 0.11 s), and the plot is drawn while the worker waits, once per trial.
    figure.subplots_adjust(
        left=0.9 / width,
        right=1 - 0.2 / width,
        bottom=0.5 / height,
        top=1 - 0.75 / height,
        wspace=0.15,  # of a panel's width: 0.8 in between the two panels
    )
    axes = figure.subplots(1, panels, squeeze=False)[0]
    _draw_curves(axes[0], attrs)
    if panels == 2:
        _draw_fit(axes[1], fit)
    figure.suptitle(title, fontsize=10)
    figure.savefig(path, format="png")
    return path


def _draw_curves(ax: Any, attrs: Mapping[str, Any]) -> None:
    from matplotlib.ticker import MaxNLocator

    train = list(attrs.get("train_curve") or [])
    val = list(attrs.get("val_curve") or [])
    if not train and not val:
        raise ValueError("the trial recorded no loss curve")
    kind = attrs.get("train_loss_kind", "")
    label = "training" + (f" ({kind})" if kind else "")
    if train:
        ax.plot(range(1, len(train) + 1), _nan(train), "o-", color="tab:blue", ms=3, label=label)
    if val:
        ax.plot(
            range(1, len(val) + 1), _nan(val), "s-", color="tab:orange", ms=3, label="validation"
        )
    best = attrs.get("best_epoch")
    if best:
        step = f" (dashboard step {best - 1})" if "best_step" in attrs else ""
        ax.axvline(best, color="gray", linestyle=":", label=f"best epoch {best}{step}")
    if spans_decades([*train, *val]):
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (data loss, no L2 penalty)")
    ax.set_title("loss by epoch")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _draw_fit(ax: Any, fit: Mapping[str, list[float]]) -> None:
    for split, hollow in (("train", False), ("val", True)):
        if not fit.get(f"x_{split}"):
            continue
        name = "training" if split == "train" else "validation"
        x = fit[f"x_{split}"]
        style: dict[str, Any] = {"s": 14, "linewidths": 0.8}
        data_style = style | _colors("red", hollow)
        pred_style = style | _colors("blue", hollow)
        ax.scatter(x, fit[f"y_{split}"], marker="o", label=f"{name} data", **data_style)
        ax.scatter(x, fit[f"pred_{split}"], marker="s", label=f"{name} prediction", **pred_style)
    ax.set_xlabel("x (as the model sees it)")
    ax.set_ylabel("y")
    ax.set_title("data (red) and predictions (blue)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _colors(color: str, hollow: bool) -> dict[str, Any]:
    return {"facecolors": "none", "edgecolors": color} if hollow else {"color": color}


def _nan(values: list[float | None]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def trial_title(study_name: str, trial: optuna.Trial, state: str) -> str:
    """``imdb_generalize trial 7 (COMPLETE, baseline original)`` and its parameters below."""
    from search.views.summary import format_params, trial_params

    attrs = trial.user_attrs
    extra = f", baseline {attrs['baseline']}" if "baseline" in attrs else ""
    size = f", {attrs['param_count']:,} parameters" if "param_count" in attrs else ""
    params = format_params(trial_params(trial))
    return f"{study_name} trial {trial.number} ({state}{extra}{size})\n{params}"


def store_trial_plot(
    trial: optuna.Trial, state: str, store: Any, study_name: str | None = None
) -> str:
    """Draw ``trial``'s figure, upload it and record its id as the ``plot_artifact`` attribute.

    The trial must still be running (Optuna refuses changes to finished trials).

    Returns:
        The artifact id; the dashboard serves it at ``/artifacts/<study_id>/<trial_id>/<id>``.
    """
    from optuna.artifacts import upload_artifact

    name = study_name or trial.study.study_name
    with tempfile.TemporaryDirectory(prefix="capsearch-plot-") as tmp:
        path = Path(tmp) / f"{name}_trial{trial.number:04d}.png"
        draw_trial_figure(trial.user_attrs, trial_title(name, trial, state), path)
        artifact_id = upload_artifact(
            artifact_store=store, file_path=str(path), study_or_trial=trial, mimetype="image/png"
        )
    trial.set_user_attr(PLOT_ATTR, artifact_id)
    return artifact_id


class TrialPlots:
    """Wraps an objective: each trial that completes or is pruned gets its plot artifact.

    Args:
        objective: The study's objective (:class:`search.engine.objective.Objective`).
        store: An Optuna artifact store (:func:`open_artifact_store`).
        echo: Where the warning line of a failed plot goes.
    """

    def __init__(
        self, objective: Callable[[optuna.Trial], Any], store: Any, echo: Echo = print
    ) -> None:
        self.objective = objective
        self.store = store
        self.echo = echo

    def __call__(self, trial: optuna.Trial) -> Any:
        try:
            result = self.objective(trial)
        except optuna.TrialPruned:
            self.record(trial, "PRUNED")
            raise
        self.record(trial, "COMPLETE")
        return result

    def record(self, trial: optuna.Trial, state: str) -> str | None:
        """Store the trial's plot; on any error print one warning line and return None."""
        try:
            return store_trial_plot(trial, state, self.store)
        except Exception as exc:  # a plot must never fail the trial
            first = first_line(exc)
            self.echo(
                f"warning: trial {trial.number}: plot artifact not stored "
                f"({type(exc).__name__}{': ' + first[:160] if first else ''})"
            )
            return None
