"""Take the best home: ``capsearch export STUDY [--trial N] [--out DIR] [--code]``.

The search keeps no weights, so a trial is re-trained from its parameters with its seed for its
``best_epoch`` epochs (what ``EarlyStopping(restore_best_weights=True)`` would have kept), saved
as a ``.keras`` file with a JSON of its parameters and metrics, loaded back and scored on the
objective's split with :meth:`~search.training.prepared.PreparedData.evaluate` (data loss, inference
mode), next to the value the trial stored. :func:`keras_code` writes the same model as plain
Keras code.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.console import Echo
from search.engine.stored import model_params, pick_trial, stored_value, trial_seed
from search.engine.study import library_versions
from search.replay.rerun import DEFAULT_RTOL, relative_difference
from search.runs import SearchOptions, SearchRun
from search.storage.urls import DEFAULT_STORAGE_DIR

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from search.data import Dataset
    from search.spec.studyfile import StudySpec
    from search.training.prepared import PreparedData

METRIC_ATTRIBUTES = (
    "best_epoch",
    "epochs_run",
    "train_loss_best",
    "train_loss_final",
    "val_loss_best",
    "val_loss_final",
    "gap_at_best",
    "val_accuracy_at_best",
    "param_count",
    "wall_seconds",
    "train_loss_kind",
)


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_trial` wrote and how the written model scored."""

    model_path: Path
    json_path: Path
    trial: int
    seed: int
    epochs: int
    split: str
    stored: float | None
    loss: float
    accuracy: float | None
    tolerance: float = DEFAULT_RTOL

    @property
    def rel_diff(self) -> float:
        return relative_difference(self.loss, self.stored) if self.stored is not None else math.nan

    @property
    def verified(self) -> bool:
        return self.stored is not None and self.rel_diff <= self.tolerance

    def lines(self) -> list[str]:
        """What ``capsearch export`` prints."""
        accuracy = f", accuracy {self.accuracy:.4f}" if self.accuracy is not None else ""
        stored = f"{self.stored:.8g}" if self.stored is not None else "-"
        verdict = "matches" if self.verified else "DIFFERS from"
        return [
            f"trial {self.trial}: re-trained {self.epochs} epochs with seed {self.seed}",
            f"  model: {self.model_path}",
            f"  parameters and metrics: {self.json_path}",
            f"  loaded back, scored on {self.split}: loss {self.loss:.8g}{accuracy}; stored "
            f"{stored} (relative difference {self.rel_diff:.2e}, tolerance {self.tolerance:g}): "
            f"{verdict} the stored value",
        ]


def default_export_dir(study_name: str) -> Path:
    """``storage/exports/<study>``.

    Example:
        >>> default_export_dir("pima_generalize").as_posix()
        'storage/exports/pima_generalize'
    """
    return DEFAULT_STORAGE_DIR / "exports" / study_name


def export_trial(
    spec: StudySpec,
    data: PreparedData,
    study: optuna.Study,
    trial: FrozenTrial,
    out_dir: Path | None = None,
) -> ExportResult:
    """Re-train ``trial`` for its best epoch count, save it and score the saved file.

    Writes ``<out_dir>/<study>_trial<N>.keras`` and ``.json`` (parameters, hyperparameter values
    for hypermodel studies, seed, epochs, stored metrics, the check of the written model).
    """
    import keras  # TensorFlow: only once the input is checked and a model is exported

    from search.engine.retrain import retrain_trial
    from search.training.sparse_dense import plain_dense_copy

    epochs = int(trial.user_attrs.get("best_epoch") or trial.user_attrs["epochs_run"])
    seed = trial_seed(spec, trial)
    run = retrain_trial(spec, data, trial, epochs=epochs, seed=seed)
    out_dir = out_dir or default_export_dir(spec.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{spec.name}_trial{trial.number}"
    model_path = out_dir / f"{stem}.keras"
    plain_dense_copy(run.model).save(model_path)  # loads with Keras alone
    loaded = keras.models.load_model(model_path)
    split = "val" if spec.monitor == "val_loss" else "train"
    loss, accuracy = data.evaluate(loaded, split)
    result = ExportResult(
        model_path=model_path,
        json_path=out_dir / f"{stem}.json",
        trial=trial.number,
        seed=seed,
        epochs=epochs,
        split=split,
        stored=stored_value(spec, trial),
        loss=loss,
        accuracy=accuracy,
    )
    record: dict[str, Any] = {
        "study": spec.name,
        "study_file": str(spec.path),
        "objective": spec.objective,
        "trial": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "seed": seed,
        "epochs": epochs,
        "params": trial.params,
        "model_params": run.params,
        "metrics": {k: trial.user_attrs[k] for k in METRIC_ATTRIBUTES if k in trial.user_attrs},
        "data": {"source": spec.data.source, **spec.data.options},
        "model_file": model_path.name,
        "verification": {
            "split": split,
            "loss": loss,
            "accuracy": accuracy,
            "stored": result.stored,
            "relative_difference": result.rel_diff,
            "tolerance": result.tolerance,
            "verified": result.verified,
        },
        "versions": library_versions(),
    }
    if spec.hypermodel is not None:
        record["hypermodel"] = spec.hypermodel.to_dict()
    result.json_path.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    return result


def export_stored(
    spec: StudySpec,
    options: SearchOptions,
    *,
    trial_number: int | None = None,
    out_dir: Path | None = None,
    code: bool = False,
    echo: Echo = print,
) -> ExportResult:
    """``capsearch export STUDY``: export the best (or given) stored trial; print its code.

    Uses the study file as stored with the study, and ``options``' storage and data settings.
    """
    run = SearchRun(spec, options, echo=echo)
    study = run.open_stored()
    spec, trial, data = run.spec, pick_trial(study, trial_number), run.data()
    result = export_trial(spec, data, study, trial, out_dir)
    for line in result.lines():
        echo(line)
    if code:
        echo(keras_code(spec, trial, data.dataset))
    return result


def code_params(spec: StudySpec, trial: FrozenTrial) -> dict[str, Any]:
    """The values a trial's model is built from: Dense-stack parameters or ``hp_values``."""
    if spec.hypermodel is not None:
        from search.kerastuner import trial_hp_values  # TensorFlow (KerasTuner)

        return trial_hp_values(trial)
    return model_params(spec, trial)


def keras_code(spec: StudySpec, trial: FrozenTrial, dataset: Dataset) -> str:
    """Plain Keras code that builds and trains the trial's model, to paste into a notebook.

    Built-in studies give a ``keras.Sequential`` Dense stack with the trial's layers, units,
    activation, L2, dropout, optimizer, learning rate, loss, batch size and epochs; hypermodel
    studies give the hypermodel's own build and fit with the trial's values fixed.

    Args:
        spec: The study.
        trial: The stored trial.
        dataset: The study's data (input width, task, classes, training rows).
    """
    epochs = int(trial.user_attrs.get("best_epoch") or trial.user_attrs.get("epochs_run", 1))
    seed = trial_seed(spec, trial)
    value = stored_value(spec, trial)
    note = (
        "Given the study's arrays, this is the trial's own build and fit: the same numbers."
        if spec.hypermodel is not None
        else "capsearch batches the data its own way: model.fit gives close, not identical, "
        "numbers."
    )
    header = (
        f'"""Study {spec.name}, trial {trial.number}: {spec.monitor} '
        f'{value:.4g} at epoch {epochs} (seed {seed}), as plain Keras.\n\n{note}\n"""\n'
    )
    params = code_params(spec, trial)
    if spec.hypermodel is not None:
        return header + _hypermodel_code(spec, params, seed, epochs)
    return header + _dense_stack_code(spec, dataset, params, seed, epochs)


def _dense_stack_code(
    spec: StudySpec, dataset: Dataset, params: dict[str, Any], seed: int, epochs: int
) -> str:
    from search.training.model import loss_name, make_optimizer  # TensorFlow

    layers, units = int(params["layers"]), int(params["units"])
    activation = params.get("activation", "relu")
    l2, dropout = float(params.get("l2", 0.0)), float(params.get("dropout", 0.0))
    batch_size = int(params["batch_size"])
    optimizer = type(make_optimizer(params.get("optimizer", "adam"), 1e-3)).__name__
    sparse = ", sparse=True" if dataset.is_sparse else ""
    regularizer = f", kernel_regularizer=keras.regularizers.L2({l2!r})" if l2 > 0 else ""
    lines = [f"            keras.Input(shape=({dataset.n_features},){sparse}),"]
    for i in range(layers):
        lines.append(
            f'            keras.layers.Dense({units}, activation="{activation}"{regularizer}),'
        )
        if dropout > 0:
            lines.append(f"            keras.layers.Dropout({dropout!r}, seed={seed + i}),")
    task = dataset.task
    if task == "regression":
        lines.append("            keras.layers.Dense(1),")
    elif task == "binary":
        lines.append('            keras.layers.Dense(1, activation="sigmoid"),')
    else:
        lines.append(f'            keras.layers.Dense({dataset.n_classes}, activation="softmax"),')
    metrics = ', metrics=["accuracy"]' if task != "regression" else ""
    plain_epochs, note = _plain_epochs(spec, dataset, batch_size, epochs)
    return f"""
import keras


def build_model() -> keras.Model:
    \"\"\"{layers} x Dense({units}, {activation}), L2 {l2:g}, dropout {dropout:g}.\"\"\"
    model = keras.Sequential(
        [
{chr(10).join(lines)}
        ]
    )
    model.compile(
        optimizer=keras.optimizers.{optimizer}(learning_rate={float(params["learning_rate"])!r}),
        loss="{loss_name(task)}"{metrics},
    )
    return model


def train(x_train, y_train, x_val=None, y_val=None) -> keras.Model:
    \"\"\"Train as the trial did: batch size {batch_size}, {plain_epochs} epochs.\"\"\"
    keras.utils.set_random_seed({seed})
    model = build_model()
    validation = (x_val, y_val) if x_val is not None else None{note}
    model.fit(
        x_train,
        y_train,
        batch_size={batch_size},
        epochs={plain_epochs},
        validation_data=validation,
    )
    return model
"""


def _plain_epochs(
    spec: StudySpec, dataset: Dataset, batch_size: int, epochs: int
) -> tuple[int, str]:
    """Epochs of plain ``model.fit`` for the same number of optimizer steps, and a comment."""
    steps = spec.training.steps_per_epoch
    if not steps:
        return epochs, ""
    per_pass = math.ceil(dataset.x_train.shape[0] / batch_size)
    total = epochs * steps
    plain = max(1, round(total / per_pass))
    return plain, (
        f"\n    # The study's {epochs} epochs of {steps} steps are {total} optimizer steps; "
        f"one pass\n    # over the training rows is {per_pass} step(s)."
    )


def _hypermodel_code(spec: StudySpec, values: dict[str, Any], seed: int, epochs: int) -> str:

    config = spec.hypermodel
    assert config is not None
    if config.path is not None:
        where = (
            "import sys\n\n"
            f"sys.path.insert(0, {str(config.path.parent)!r})\n"
            f"from {config.path.stem} import {config.build}  # noqa: E402\n"
        )
    else:
        where = f"from {config.module} import {config.build}\n"
    from search.kerastuner import hypermodel_target  # TensorFlow (KerasTuner)

    target = hypermodel_target(spec)
    if isinstance(target, type) or hasattr(target, "fit"):  # a HyperModel class or instance
        made = f"{config.build}()" if isinstance(target, type) else config.build
        setup, build = f"hypermodel = {made}\n", "hypermodel.build(hp)"
        fit = "hypermodel.fit(hp, model, "
    else:  # a build_model(hp) function
        setup, build, fit = "", f"{config.build}(hp)", "model.fit("
    return f"""
import keras
import keras_tuner
{where}
hp = keras_tuner.HyperParameters()
hp.values.update({values!r})
{setup}

def build_model() -> keras.Model:
    \"\"\"The hypermodel's model with the trial's hyperparameters fixed.\"\"\"
    return {build}


def train(x_train, y_train, x_val=None, y_val=None) -> keras.Model:
    \"\"\"Train as the trial did: the hypermodel's fit, {epochs} epochs.\"\"\"
    keras.utils.set_random_seed({seed})
    model = build_model()
    validation = (x_val, y_val) if x_val is not None else None
    {fit}x_train, y_train, epochs={epochs}, validation_data=validation)
    return model
"""
