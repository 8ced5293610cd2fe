"""Take the best home: ``capsearch export STUDY [--trial N] [--out DIR] [--code]``.

The search keeps no weights, so a trial is re-trained from its parameters with its seed for its
``best_epoch`` epochs (what ``EarlyStopping(restore_best_weights=True)`` would have kept), saved
as a ``.keras`` file with a JSON of its parameters and metrics, loaded back and scored on the
objective's split with :meth:`~search.training.prepared.PreparedData.evaluate` (data loss, inference
mode), next to the value the trial stored. :func:`keras_code` writes the same model as plain
Keras code.

With ``[training] refit = "train+validation"`` the model learns from the training and
validation rows together (as the end-of-run test score does); the validation rows are then no
check, so the written model is scored on the test split against the stored test evaluation of
the same trial and rows, when there is one.
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
    refit: str = "train"
    n_train: int | None = None

    @property
    def rel_diff(self) -> float:
        return relative_difference(self.loss, self.stored) if self.stored is not None else math.nan

    @property
    def verified(self) -> bool:
        return self.stored is not None and self.rel_diff <= self.tolerance

    @property
    def ok(self) -> bool:
        """Verified, or refit with nothing stored to compare with (``capsearch export`` exit 0)."""
        return self.verified or (self.stored is None and self.refit != "train")

    def rows(self) -> str:
        """Which rows the model learned from, for the first output line."""
        n = f" ({self.n_train})" if self.n_train is not None else ""
        if self.refit == "train+validation":
            return f'training + validation rows{n}, refit = "train+validation"'
        return f"training rows{n}"

    def lines(self) -> list[str]:
        """What ``capsearch export`` prints."""
        accuracy = f", accuracy {self.accuracy:.4f}" if self.accuracy is not None else ""
        stored = f"{self.stored:.8g}" if self.stored is not None else "-"
        what = "the stored value" if self.refit == "train" else "the stored test evaluation"
        if self.stored is None and self.refit != "train":
            check = "no stored test evaluation of this trial with these rows to compare with"
        else:
            verdict = "matches" if self.verified else "DIFFERS from"
            check = (
                f"stored {stored} (relative difference {self.rel_diff:.2e}, tolerance "
                f"{self.tolerance:g}): {verdict} {what}"
            )
        return [
            f"trial {self.trial}: re-trained {self.epochs} epochs with seed {self.seed} on "
            f"{self.rows()}",
            f"  model: {self.model_path}",
            f"  parameters and metrics: {self.json_path}",
            f"  loaded back, scored on {self.split}: loss {self.loss:.8g}{accuracy}; {check}",
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

    The model learns from the training rows, or from training + validation rows when the study
    file sets ``refit = "train+validation"`` (then it is scored on the test split against the
    study's stored test evaluation of the same trial, if any). Writes
    ``<out_dir>/<study>_trial<N>.keras`` and ``.json`` (parameters, hyperparameter values for
    hypermodel studies, seed, epochs, rows, stored metrics, the check of the written model).
    """
    import keras  # TensorFlow: only once the input is checked and a model is exported

    from search.engine.retrain import retrain_trial
    from search.training.final_model import evaluate_usable, usable_model

    epochs = int(trial.user_attrs.get("best_epoch") or trial.user_attrs["epochs_run"])
    seed = trial_seed(spec, trial)
    refit, rows = spec.training.refit, data
    if refit == "train+validation" and "val" in data.splits:
        from search.training.prepared import PreparedData, train_and_validation

        # as the end-of-run test score trains it (search.runs.lifecycle.evaluate_best_on_test)
        rows = PreparedData(train_and_validation(data.dataset), use_shared_graphs=False)
    else:
        refit = "train"
    run = retrain_trial(spec, rows, trial, epochs=epochs, seed=seed)
    out_dir = out_dir or default_export_dir(spec.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{spec.name}_trial{trial.number}"
    model_path = out_dir / f"{stem}.keras"
    params = None if spec.hypermodel is not None else run.params
    usable_model(run.model, data.dataset, params).save(model_path)  # raw inputs, plain Keras
    loaded = keras.models.load_model(model_path)
    split = "val" if spec.monitor == "val_loss" else "train"
    stored = stored_value(spec, trial)
    if refit != "train":  # the validation rows were learned from: check on the stored test score
        split, stored = _stored_test_loss(study, trial, refit, data)
    loss, accuracy = evaluate_usable(loaded, data, split)  # raw inputs where it standardizes
    result = ExportResult(
        model_path=model_path,
        json_path=out_dir / f"{stem}.json",
        trial=trial.number,
        seed=seed,
        epochs=epochs,
        split=split,
        stored=stored,
        loss=loss,
        accuracy=accuracy,
        refit=refit,
        n_train=rows.n_train,
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
        "refit": refit,
        "n_train": rows.n_train,
        "params": trial.params,
        "model_params": run.params,
        "metrics": {k: trial.user_attrs[k] for k in METRIC_ATTRIBUTES if k in trial.user_attrs},
        "data": {"source": spec.data.source, **spec.data.options},
        "model_file": model_path.name,
        # Which output is which label: index i of the model's output is classes[i].
        "classes": data.dataset.reference.get("classes"),
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


def _stored_test_loss(
    study: optuna.Study, trial: FrozenTrial, refit: str, data: PreparedData
) -> tuple[str, float | None]:
    """The split to score a refit model on and the stored loss to compare with.

    The study's ``test_evaluation`` when it scored this trial trained on the same rows; else
    the validation split (learned from, so nothing to compare with).
    """
    stored = study.user_attrs.get("test_evaluation") or {}
    if (
        "test" in data.splits
        and stored.get("trial") == trial.number
        and stored.get("refit") == refit
        and stored.get("test_loss") is not None
    ):
        return "test", float(stored["test_loss"])
    return "val", None


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

    Built-in studies give a ``keras.Sequential`` Dense stack with the trial's widths,
    activation, L1, L2, dropout, batch normalization, output activation, loss, optimizer,
    learning rate (schedule), weight decay, momentum, batch size, epochs and (``shuffle =
    false``) ``fit(shuffle=False)``; hypermodel
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
    mean, std = dataset.reference.get("target_mean"), dataset.reference.get("target_std")
    if mean is not None and std is not None:
        note += (
            f"\nThe study standardized the target: train on (y - {mean:.8g}) / {std:.8g}, and "
            f"predict raw values as model.predict(x) * {std:.8g} + {mean:.8g}."
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
    from search.spec.family import batch_norm_after, describe_widths, layer_widths
    from search.training.model import output_layer, training_loss  # TensorFlow

    widths, norms = layer_widths(params), batch_norm_after(params)
    activation = params.get("activation", "relu")
    l1, l2 = float(params.get("l1", 0.0)), float(params.get("l2", 0.0))
    dropout = float(params.get("dropout", 0.0))
    before = params.get("batch_norm_position", "after") == "before"
    batch_size = int(params["batch_size"])
    # Rows in their stored order every epoch when the trial trained unshuffled.
    shuffle = "" if params.get("shuffle", True) else "\n        shuffle=False,"
    order = "" if not shuffle else ", rows in their stored order"
    sparse = ", sparse=True" if dataset.is_sparse else ""
    regularizer = _regularizer_code(l1, l2)
    lines = [f"            keras.Input(shape=({dataset.n_features},){sparse}),"]
    for i, (width, norm) in enumerate(zip(widths, norms, strict=True)):
        act = "None" if norm and before else f'"{activation}"'
        lines.append(f"            keras.layers.Dense({width}, activation={act}{regularizer}),")
        if norm:
            lines.append("            keras.layers.BatchNormalization(),")
            if before:
                lines.append(f'            keras.layers.Activation("{activation}"),')
        if dropout > 0:
            lines.append(f"            keras.layers.Dropout({dropout!r}, seed={seed + i}),")
    task = dataset.task
    units, out_activation = output_layer(task, params, dataset.n_classes)
    out = f', activation="{out_activation}"' if out_activation else ""
    lines.append(f"            keras.layers.Dense({units}{out}),")
    metrics = ', metrics=["accuracy"]' if task != "regression" else ""
    plain_epochs, note = _plain_epochs(spec, dataset, batch_size, epochs)
    steps = spec.training.steps_per_epoch or math.ceil(dataset.x_train.shape[0] / batch_size)
    summary = (
        f"{describe_widths(params)} Dense ({activation}), L1 {l1:g}, L2 {l2:g}, "
        f"dropout {dropout:g}"
        + (
            f", batch normalization after every {int(params.get('batch_norm_every', 1))}"
            f" ({'before' if before else 'after'} the activation)"
            if any(norms)
            else ""
        )
    )
    return f"""
import keras


def build_model() -> keras.Model:
    \"\"\"{summary}.\"\"\"
    model = keras.Sequential(
        [
{chr(10).join(lines)}
        ]
    )
    model.compile(
        optimizer={_optimizer_code(spec, params, steps)},
        loss="{training_loss(task, params)}"{metrics},
    )
    return model


def train(x_train, y_train, x_val=None, y_val=None) -> keras.Model:
    \"\"\"Train as the trial did: batch size {batch_size}, {plain_epochs} epochs{order}.\"\"\"
    keras.utils.set_random_seed({seed})
    model = build_model()
    validation = (x_val, y_val) if x_val is not None else None{note}
    model.fit(
        x_train,
        y_train,
        batch_size={batch_size},
        epochs={plain_epochs},
        validation_data=validation,{shuffle}
    )
    return model
"""


def _regularizer_code(l1: float, l2: float) -> str:
    if l1 > 0 and l2 > 0:
        return f", kernel_regularizer=keras.regularizers.L1L2(l1={l1!r}, l2={l2!r})"
    if l1 > 0:
        return f", kernel_regularizer=keras.regularizers.L1({l1!r})"
    if l2 > 0:
        return f", kernel_regularizer=keras.regularizers.L2({l2!r})"
    return ""


def _optimizer_code(spec: StudySpec, params: dict[str, Any], steps: int) -> str:
    """``keras.optimizers.X(...)`` with the trial's rate (or schedule), decay and momentum."""
    from search.training.model import make_optimizer  # TensorFlow

    name = params.get("optimizer", "adam")
    optimizer = type(make_optimizer(name, 1e-3)).__name__
    rate = repr(float(params["learning_rate"]))
    schedule = params.get("schedule", "constant")
    if schedule == "cosine":
        rate = (
            f"keras.optimizers.schedules.CosineDecay({rate}, "
            f"decay_steps={spec.training.epochs * steps})"
        )
    elif schedule == "exponential":
        rate = (
            f"keras.optimizers.schedules.ExponentialDecay({rate}, decay_steps={steps}, "
            f"decay_rate={float(params.get('decay_rate', 0.9))!r})"
        )
    options = [f"learning_rate={rate}"]
    if float(params.get("weight_decay", 0.0)) > 0:
        options.append(f"weight_decay={float(params['weight_decay'])!r}")
    if name == "sgd" and float(params.get("momentum", 0.0)) > 0:
        options.append(f"momentum={float(params['momentum'])!r}")
        if params.get("nesterov"):
            options.append("nesterov=True")
    return f"keras.optimizers.{optimizer}({', '.join(options)})"


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
