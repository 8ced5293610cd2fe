"""The same hypermodel under KerasTuner's own tuners: ``capsearch kt STUDY``.

Runs a study's hypermodel with KerasTuner's ``Hyperband`` or ``BayesianOptimization`` on the
study's data (``objective="val_loss"``): its ``[hypermodel]``, or, for a plain study, its
``[space]`` declared with KerasTuner's ``hp`` calls and built by the service's own model builder
(:class:`~search.kerastuner.SpaceHyperModel`). Files go under
``storage/keras_tuner/<study>/<tuner>``, within a wall-clock budget: no trial starts after
``timeout`` seconds (the running one finishes), as ``capsearch run --timeout`` does.

The two engines measure differently. KerasTuner ranks by Keras' ``val_loss``, which includes the
L2 penalty; capsearch ranks by the data loss in inference mode. So KerasTuner's best model is
re-scored with :meth:`~search.training.prepared.PreparedData.evaluate` on the validation split, and
the
Optuna study's best trial shows Keras' ``val_loss`` at its best epoch (``keras_val_curve``), and
:func:`comparison_lines` prints both numbers for both engines.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import optuna
from optuna.trial import TrialState

from search.console import Echo
from search.engine.study import FINISHED, best_trial
from search.errors import HypermodelError, StorageError
from search.runs import SearchOptions, SearchRun
from search.spec.space import Fixed
from search.storage.urls import DEFAULT_STORAGE_DIR
from search.views.summary import table

if TYPE_CHECKING:
    import keras_tuner

    from search.spec.studyfile import StudySpec
    from search.training.prepared import PreparedData

TunerName = Literal["hyperband", "bayesian"]
TUNERS: tuple[TunerName, ...] = ("hyperband", "bayesian")
HYPERBAND_FACTOR = 3
ENDLESS_ITERATIONS = 1000  # Hyperband rounds when a timeout, not the rounds, ends the search


@dataclass
class KerasTunerResult:
    """KerasTuner's best trial, in its own terms and in ours."""

    tuner: str
    trials: int
    seconds: float
    keras_val_loss: float  # KerasTuner's score: Keras' val_loss, L2 penalty included
    data_val_loss: float  # its best model re-scored: data loss, inference mode
    val_accuracy: float | None
    values: dict[str, Any]
    best_epoch: int | None
    directory: str


def keras_tuner_dir(study_name: str) -> Path:
    """``storage/keras_tuner/<study>``.

    Example:
        >>> keras_tuner_dir("kt_pima").as_posix()
        'storage/keras_tuner/kt_pima'
    """
    return DEFAULT_STORAGE_DIR / "keras_tuner" / study_name


def run_keras_tuner(
    spec: StudySpec,
    data: PreparedData,
    *,
    tuner: TunerName = "hyperband",
    timeout: float | None = None,
    max_trials: int | None = None,
    max_epochs: int | None = None,
    directory: Path | None = None,
    resume: bool = False,
) -> KerasTunerResult:
    """Search the study's hypermodel with a KerasTuner tuner; return its best, scored both ways.

    Args:
        spec: A study: its ``[hypermodel]``, else its ``[space]`` (:func:`keras_tuner_hypermodel`).
        data: Its prepared data (training and validation arrays go to ``tuner.search``).
        tuner: ``"hyperband"`` (``max_epochs``, factor 3) or ``"bayesian"``.
        timeout: Start no trial after this many seconds.
        max_trials: Trial cap (Bayesian default: the study's ``trials``; Hyperband: its rounds).
        max_epochs: Epochs of the longest trial; default the study's ``training.epochs``.
        directory: Default ``storage/keras_tuner/<study>``; the project is the tuner's name.
        resume: Continue a previous search in the directory instead of starting afresh.

    Raises:
        HypermodelError: The hypermodel does not fit the data, or KerasTuner finished no trial.
    """
    import keras  # TensorFlow and KerasTuner: once the input is checked
    import keras_tuner

    from search.kerastuner import SpaceHyperModel

    _check_tuner_installed(tuner)
    if not data.dataset.has_validation:
        raise HypermodelError(f"study {spec.name}: KerasTuner's val_loss needs a validation split.")
    epochs = max_epochs or spec.training.epochs
    hypermodel = keras_tuner_hypermodel(spec, data, epochs=epochs)
    directory = directory or keras_tuner_dir(spec.name)
    deadline = time.monotonic() + timeout if timeout is not None else None
    common: dict[str, Any] = {
        "objective": "val_loss",
        "seed": spec.sampler.seed,
        "directory": str(directory),
        "project_name": tuner,
        "overwrite": not resume,
    }
    if tuner == "hyperband":
        rounds = ENDLESS_ITERATIONS if timeout is not None or max_trials else 1
        search_tuner: Any = _deadline_tuner(keras_tuner.Hyperband, deadline)(
            hypermodel,
            max_epochs=epochs,
            factor=HYPERBAND_FACTOR,
            hyperband_iterations=rounds,
            **common,
        )
        search_tuner.oracle.max_trials = max_trials
    else:
        search_tuner = _deadline_tuner(keras_tuner.BayesianOptimization, deadline)(
            hypermodel, max_trials=max_trials or spec.trials, **common
        )
    ds = data.dataset
    keras.utils.set_random_seed(spec.training.seed)
    start = time.perf_counter()
    try:
        with _weights_only_loads():
            search_tuner.search(
                ds.x_train,
                ds.y_train,
                validation_data=(ds.x_val, ds.y_val),
                epochs=epochs,
                verbose=0,
            )
    except RuntimeError as exc:  # KerasTuner: "Number of consecutive failures exceeded..."
        raise HypermodelError(f"KerasTuner {tuner} stopped: {exc} (tracebacks above).") from None
    seconds = time.perf_counter() - start
    oracle = search_tuner.oracle
    best_trials = oracle.get_best_trials(1)
    if not best_trials or best_trials[0].score is None:
        raise HypermodelError(f"KerasTuner {tuner} finished no trial; see {directory}.")
    best = best_trials[0]
    with _weights_only_loads():
        model = search_tuner.get_best_models(1)[0]
    data_loss, accuracy = data.evaluate(model, "val")
    result = KerasTunerResult(
        tuner=tuner,
        trials=len(oracle.trials),
        seconds=seconds,
        keras_val_loss=float(best.score),
        data_val_loss=data_loss,
        val_accuracy=accuracy,
        values=(
            hypermodel.used_values(best.hyperparameters.values)
            if isinstance(hypermodel, SpaceHyperModel)
            else dict(best.hyperparameters.values)
        ),
        best_epoch=int(best.best_step) + 1 if best.best_step is not None else None,
        directory=str(directory / tuner),
    )
    result_file = directory / tuner / "capsearch_result.json"
    result_file.write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    return result


def keras_tuner_hypermodel(
    spec: StudySpec, data: PreparedData, *, epochs: int | None = None
) -> keras_tuner.HyperModel:
    """The hypermodel KerasTuner searches, checked on a few rows (``probe_space``).

    The study's ``[hypermodel]``; for a plain study, its ``[space]`` as a
    :class:`~search.kerastuner.SpaceHyperModel` (the model ``capsearch run`` builds, ``epochs``
    the schedules' horizon).

    Raises:
        HypermodelError: It cannot be imported, or its model does not fit the data.
    """
    from search.kerastuner import SpaceHyperModel, load_hypermodel, probe_space

    if spec.hypermodel is None:
        hypermodel: keras_tuner.HyperModel = SpaceHyperModel(spec, data, epochs=epochs)
        label = f"study {spec.name}'s [space]"
    else:
        hypermodel = load_hypermodel(spec)
        label = str(spec.hypermodel.path or spec.hypermodel.module)
    probe_space(hypermodel, data, label)
    return hypermodel


def compare_with_keras_tuner(
    spec: StudySpec,
    options: SearchOptions,
    *,
    tuner: TunerName = "hyperband",
    max_epochs: int | None = None,
    resume: bool = False,
    echo: Echo = print,
) -> KerasTunerResult:
    """``capsearch kt STUDY``: KerasTuner's search, then both engines' best side by side.

    ``options.timeout`` is the wall-clock budget and ``options.trials`` the trial cap; the Optuna
    side is the study of the same name in ``options.storage``, when there is one.
    """
    _check_tuner_installed(tuner)  # before the data is loaded
    run = SearchRun(spec, options, echo=echo)
    data = run.data()
    budget = f"{options.timeout:g} s" if options.timeout else "no time limit"
    echo(f"keras-tuner {tuner} on {spec.name} ({spec.data.source}), {budget}")
    result = run_keras_tuner(
        spec,
        data,
        tuner=tuner,
        timeout=options.timeout,
        max_trials=options.trials,
        max_epochs=max_epochs,
        resume=resume,
    )
    echo(f"{result.trials} trials in {result.seconds:.1f} s; files in {result.directory}")
    try:
        optuna_side = optuna_best(run.open_stored())
    except StorageError:  # no study of that name, or no storage yet: KerasTuner's side alone
        optuna_side = None
    if optuna_side is not None and spec.hypermodel is None:  # Optuna stores no fixed value
        optuna_side["values"] = optuna_side["values"] | _fixed_values(spec)
    for line in comparison_lines(result, optuna_side):
        echo(line)
    if optuna_side is not None and spec.training.folds:
        echo(
            f"(optuna's val loss is the mean over {spec.training.folds} folds of the training and "
            "validation rows; KerasTuner's is the validation split's)"
        )
    return result


def _check_tuner_installed(tuner: TunerName) -> None:
    """KerasTuner's ``BayesianOptimization`` needs scikit-learn, an optional dependency of it.

    Raises:
        HypermodelError: It is not installed, with the command that installs it.
    """
    if tuner == "bayesian" and importlib.util.find_spec("sklearn") is None:
        raise HypermodelError(
            "--tuner bayesian: KerasTuner's BayesianOptimization needs scikit-learn, which is "
            "not installed; pip install 'keras-tuner[bayesian]', or use --tuner hyperband."
        )


def _fixed_values(spec: StudySpec) -> dict[str, Any]:
    """The plain study's fixed values, which KerasTuner records as ``hp.Fixed``."""
    return {
        name: param.value
        for name, param in spec.space.items()
        if isinstance(param, Fixed) and not isinstance(param.value, tuple)
    }


@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    """KerasTuner restores checkpoints (Hyperband's next rounds, the best model) into fresh
    models, whose optimizers have no state yet; Keras warns about it each time. Each trial's
    new model traces its own ``fit`` functions, which TensorFlow warns about as retracing from
    the sixth on: both are expected here."""
    from search.training.quiet_start import ExpectedRetracingFilter

    quiet = ExpectedRetracingFilter()
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.addFilter(quiet)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            yield
    finally:
        tf_logger.removeFilter(quiet)


def _deadline_tuner(base: type, deadline: float | None) -> type:
    """``base`` that creates no trial once ``deadline`` (``time.monotonic``) has passed."""
    from search._compat.keras_tuner import TunerHooks  # KerasTuner
    from search.training.session import forget_custom_gradients  # TensorFlow

    class DeadlineTuner(TunerHooks, base):  # type: ignore[misc, valid-type]
        def pre_create_trial(self) -> None:
            super().pre_create_trial()
            if deadline is not None and time.monotonic() >= deadline and self.oracle.trials:
                self.oracle.max_trials = len(self.oracle.trials)  # the oracle stops here

        def before_build(self) -> None:
            # KerasTuner clears the Keras session before each build; the graphs TensorFlow's
            # gradient registry still holds go too (see search.training.session), so memory
            # stays flat.
            forget_custom_gradients()

    DeadlineTuner.__name__ = base.__name__
    return DeadlineTuner


def optuna_best(study: optuna.Study) -> dict[str, Any] | None:
    """The Optuna study's best trial in the comparison's terms; ``None`` without one."""
    best = best_trial(study)
    if best is None:
        return None
    trials = study.get_trials(deepcopy=False)
    attrs = best.user_attrs
    epoch = attrs.get("best_epoch")
    keras_curve = attrs.get("keras_val_curve") or []
    keras_val = keras_curve[epoch - 1] if epoch and len(keras_curve) >= epoch else None
    finished = [t for t in trials if t.state in FINISHED]
    seconds = sum(
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in finished
        if t.datetime_complete and t.datetime_start
    )
    pruned = sum(t.state == TrialState.PRUNED for t in finished)
    return {
        "trial": best.number,
        "trials": f"{len(finished)} ({pruned} pruned)",
        "seconds": seconds,
        "data_val_loss": best.values[0],
        "keras_val_loss": keras_val,
        "val_accuracy": attrs.get("val_accuracy_at_best"),
        "best_epoch": epoch,
        "values": attrs.get("hp_values", best.params),
    }


def comparison_lines(kt: KerasTunerResult, optuna_side: dict[str, Any] | None) -> list[str]:
    """The two engines side by side: both losses, trials, time and every hyperparameter."""
    kt_label = f"keras-tuner {kt.tuner}"
    rows = [["", "optuna (capsearch)", kt_label]]
    side = optuna_side or {}

    def row(label: str, ours: Any, theirs: Any) -> None:
        rows.append([label, _text(ours), _text(theirs)])

    row("val data loss (inference, no L2)", side.get("data_val_loss"), kt.data_val_loss)
    row("Keras val_loss (with L2 penalty)", side.get("keras_val_loss"), kt.keras_val_loss)
    row("val accuracy", side.get("val_accuracy"), kt.val_accuracy)
    row("best epoch", side.get("best_epoch"), kt.best_epoch)
    row("finished trials", side.get("trials"), kt.trials)
    row("search seconds", side.get("seconds"), kt.seconds)
    values = side.get("values") or {}
    names = dict.fromkeys([*values, *kt.values])
    for name in (n for n in names if not n.startswith("tuner/")):  # Hyperband's bookkeeping
        row(f"  {name}", values.get(name, "-"), kt.values.get(name, "-"))
    lines = table(rows)
    if optuna_side is None:
        lines.append("(no Optuna study of this name in the storage yet: capsearch run it first)")
    else:
        lines.append(
            f"(optuna: best trial {side['trial']}; search seconds are the trials' own time)"
        )
    return lines


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
    return str(value)
