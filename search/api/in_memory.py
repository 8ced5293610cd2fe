"""``search.search(x, y, ...)``: one call searches in-memory data, as ``capsearch run`` does a file.

The call checks the arrays and the space first (bad input is a one-line
:class:`~search.errors.InputError` before anything is written or stored), writes the arrays once
under the storage's artifact folder (``arrays/<hash>/``, ``.npy`` files that worker processes map)
and a study file beside them (``studies/<hash>/<study_name>.toml``), then runs that study file
through the same run lifecycle as the CLI. So a study made from Python is listed by
``capsearch list``, shown by ``show``, ``report`` and the dashboard, exported by ``export``, and
resumed (with the fingerprint guard of :mod:`search.engine.fingerprint`) when the same call runs
again.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import re
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from search.api.progress import Progress
from search.api.result import SearchResult
from search.api.space import baseline_table, default_space, space_table
from search.data.memory import check_arrays, write_arrays
from search.engine.study import best_trial, count_finished
from search.errors import InputError
from search.runs import SearchOptions, SearchRun
from search.spec.studyfile import OBJECTIVES, PRUNERS, load_study, spec_from_dict
from search.storage.urls import resolve_storage_url
from search.views.trial_plots import artifact_dir

__all__ = ["search", "study_toml"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HYPERMODELS = "capsearch_api_hypermodels"  # in-process home of notebook-defined hypermodels


def search(
    x: Any,
    y: Any,
    *,
    validation_data: tuple[Any, Any] | None = None,
    validation_split: float = 0.0,
    test_data: tuple[Any, Any] | None = None,
    objective: str = "generalize",
    task: str | None = None,
    space: Mapping[str, Any] | Any = None,
    baselines: Sequence[Mapping[str, Any]] = (),
    trials: int = 20,
    timeout: float | None = None,
    epochs: int = 50,
    patience: int | None = None,
    steps_per_epoch: int | None = None,
    standardize: bool = False,
    standardize_target: bool = False,
    pruner: str = "hyperband",
    storage: str | None = None,
    study_name: str | None = None,
    workers: int = 1,
    seed: int = 0,
    verbose: int = 1,
    trial_plots: bool = True,
    allow_narrowed: bool = False,
) -> SearchResult:
    """Search the capacity and regularization of a Keras model on in-memory data.

    Keyword-only after ``x, y`` (as ``model.fit``'s common ones are positional): ``trials`` is
    the number of finished trials the study should have in all, so running the same call again
    resumes the study and stops when it is done, as ``capsearch run`` does.

    Args:
        x: Features: a NumPy array ``(n, features)``, a pandas DataFrame (column names kept) or
            Series, or a SciPy sparse matrix (multi-hot text, trained on the sparse path).
        y: Labels, one per row: numbers (regression), two values (binary), or class labels.
        validation_data: ``(x_val, y_val)``, the split a ``generalize`` search minimizes.
        validation_split: Else this share of the training rows is held out (seeded).
        test_data: ``(x_test, y_test)``: scores the best model once, at the end.
        objective: ``"generalize"`` (validation loss) or ``"memorize"`` (training loss).
        task: ``"regression"``, ``"binary"`` or ``"multiclass"``; inferred when the labels
            leave no doubt.
        space: Ranges ``(low, high[, "log"])``, choices ``[...]`` or fixed values per parameter
            (keys left out take :func:`search.api.space.default_space`'s); or a KerasTuner
            ``build_model(hp)`` function, ``HyperModel`` class or instance instead.
        baselines: Hand-made configurations, run first and never pruned; keys left out take
            plain defaults (``{"layers": 2, "units": 16}``).
        trials: Finished trials the study should have in all.
        timeout: Stop starting trials after this many seconds (a positive number, or None).
        epochs: The epoch cap of a trial.
        patience: Stop a trial this many epochs past its best one.
        steps_per_epoch: Make an epoch this many optimizer steps (tiny data sets).
        standardize: Standardize dense features with the training statistics; the best model
            still takes raw inputs (a ``Normalization`` layer holds the statistics).
        standardize_target: Regression: centre and scale the target with its training mean and
            std (losses are then in its std's units); the best model still predicts raw values
            (a ``Rescaling`` layer holds the statistics).
        pruner: ``"hyperband"``, ``"successive_halving"``, ``"median"`` or ``"none"``: a name,
            not an Optuna pruner object (a pruner's options go in the study file's ``[pruner]``
            table, docs/study-files.md).
        storage: Storage URL (``None``: ``$CAPSEARCH_STORAGE``, else ``storage/studies.db``).
        study_name: The study's name (default ``python_<objective>``): another name starts
            another study.
        workers: Worker processes on this study (``> 1``: each maps the arrays written once).
        seed: Seeds the split, the sampler and trial ``n``'s training (``seed + n``).
        verbose: 0 silent, 1 a progress bar in a notebook (trial lines in a terminal), 2 every
            line.
        trial_plots: Store a loss-curve PNG per trial for the dashboard.
        allow_narrowed: Resume a study whose space this call only narrows or gives more
            choices (added choices are written onto the stored trials first).

    Returns:
        The study, the best parameters and (re-trained on first use) the best model. A call
        that ends with no completed trial still returns it; its ``best_*`` then say so.

    Raises:
        InputError: Bad input (lengths, NaN, labels, empty arrays, unknown space keys, a
            non-positive timeout, an object where a name or number belongs), raised before any
            study is created.
        search.errors.StudyMismatchError: The study exists with other data, space or objective.

    Example:
        >>> import numpy as np, search
        >>> x = np.linspace(0, 1, 21).reshape(-1, 1)
        >>> try:
        ...     search.search(x, np.zeros(20), objective="memorize")
        ... except search.InputError as exc:
        ...     print(exc)
        x has 21 rows but its y has 20; give one label per row.
    """
    if objective not in OBJECTIVES:
        raise InputError(f"objective={objective!r} is unknown; use one of {', '.join(OBJECTIVES)}.")
    workers = _integer("workers", workers)
    if workers < 1:
        raise InputError(f"workers={workers!r} must be a positive integer.")
    trials = _integer("trials", trials)
    if trials < 1:
        raise InputError(f"trials={trials!r} must be a positive integer.")
    timeout = _timeout(timeout)
    _check_pruner(pruner)
    if storage is not None and not isinstance(storage, str):
        raise InputError(
            f"storage={type(storage).__name__} is not a storage URL; pass the URL as a string "
            '(e.g. "sqlite:///studies.db"), as the CLI and the dashboard read the study from it.'
        )
    if study_name is not None and not isinstance(study_name, str):
        hint = getattr(study_name, "study_name", None)
        fix = f"pass its name: study_name={hint!r}" if isinstance(hint, str) else "pass a name"
        raise InputError(f"study_name={type(study_name).__name__} is not a string; {fix}.")
    # NumPy integers (np.int64 from a grid) would not go into the study file; plain ints do.
    epochs, seed = _integer("epochs", epochs), _integer("seed", seed)
    patience = None if patience is None else _integer("patience", patience)
    steps_per_epoch = (
        None if steps_per_epoch is None else _integer("steps_per_epoch", steps_per_epoch)
    )
    if verbose not in (0, 1, 2):
        raise InputError(f"verbose={verbose!r} must be 0, 1 or 2, as in Keras.")
    if validation_data is not None and validation_split:
        raise InputError("give validation_data= or validation_split=, not both.")
    if not 0.0 <= validation_split < 0.5:
        raise InputError(f"validation_split={validation_split!r} must be in [0, 0.5).")
    splits: dict[str, tuple[Any, Any]] = {"train": (x, y)}
    for name, given in (("val", validation_data), ("test", test_data)):
        if given is not None:
            if not isinstance(given, (tuple, list)) or len(given) != 2:
                raise InputError(f"{name} data must be an (x, y) pair, got {type(given).__name__}.")
            splits[name] = (given[0], given[1])
    if objective == "generalize" and validation_data is None and not validation_split:
        raise InputError(
            'objective="generalize" minimizes a validation loss: pass validation_data=(x, y) '
            'or validation_split=0.2, or use objective="memorize".'
        )
    data = check_arrays(splits, task)  # type: ignore[arg-type]
    if standardize_target and data.task != "regression":
        raise InputError(
            f"standardize_target=True is for regression; these labels are a {data.task} task: "
            'leave it out (or pass task="regression" for numeric targets).'
        )
    name = study_name or f"python_{objective}"
    if not _NAME.match(name):
        raise InputError(
            f"study_name={name!r}: use letters, digits, '_', '-' and '.', starting with a letter "
            "or digit."
        )
    n_train = int(data.splits["train"][0].shape[0] * (1 - validation_split))
    table = study_table(
        objective=objective,
        task=data.task,
        space=space,
        baselines=baselines,
        trials=trials,
        epochs=epochs,
        patience=patience,
        steps_per_epoch=steps_per_epoch,
        standardize=standardize,
        standardize_target=standardize_target,
        validation_split=validation_split,
        pruner=pruner,
        seed=seed,
        n_train=max(n_train, 1),
        workers=workers,
    )
    url = resolve_storage_url(storage)
    root = artifact_dir(url)
    table["data"]["path"] = "../../arrays/0"  # placeholder: validated before anything is written
    spec_from_dict(json.loads(json.dumps(table)), name=name, path=root / "studies" / f"{name}.toml")
    folder, _ = write_arrays(data, root / "arrays")
    table["data"]["path"] = f"../../arrays/{folder.name}"
    text = study_toml(table)
    study_dir = root / "studies" / hashlib.sha256(text.encode()).hexdigest()[:16]
    study_dir.mkdir(parents=True, exist_ok=True)
    path = study_dir / f"{name}.toml"
    if not path.is_file():
        path.write_text(text, encoding="utf-8")
    spec = load_study(path)
    return _run(
        spec, url, trials, timeout, workers, verbose, trial_plots, allow_narrowed, "test" in splits
    )


def _integer(name: str, value: Any) -> int:
    """``value`` as a plain int (NumPy integers too), else a one-line InputError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name}={value!r} must be a whole number, e.g. {name}=10.")
    return int(value)


def _timeout(value: Any) -> float | None:
    """None, or a positive number of seconds as a float."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or math.isnan(value)
        or value <= 0
    ):
        raise InputError(
            f"timeout={value!r} must be a positive number of seconds (e.g. timeout=600), or "
            "None for no time limit."
        )
    return float(value)


def _check_pruner(pruner: Any) -> None:
    names = ", ".join(PRUNERS)
    if isinstance(pruner, str):
        if pruner not in PRUNERS:
            raise InputError(f"pruner={pruner!r} is unknown; use one of {names}.")
        return
    # The study is stored as a study file that the CLI and workers re-read, so the pruner must
    # be a name there, not a live object.
    raise InputError(
        f"pruner={type(pruner).__name__}(...) is not taken: an Optuna pruner object cannot be "
        f"stored in the study file; pass one of the names {names} (a pruner's options go in "
        "the study file's [pruner] table, docs/study-files.md)."
    )


def _run(
    spec: Any,
    url: str,
    trials: int,
    timeout: float | None,
    workers: int,
    verbose: int,
    trial_plots: bool,
    allow_narrowed: bool,
    has_test: bool,
) -> SearchResult:
    done = _finished_before(spec.name, url)
    progress = Progress(verbose, max(trials - done, 0))
    options = SearchOptions(
        trials=trials,
        timeout=timeout,
        storage=url,
        evaluate_test=False,  # the best model is scored on test_data once, below
        trial_plots=trial_plots,
        extra_callbacks=[progress.callback],
        allow_narrowed=allow_narrowed,
    )
    verbosity = optuna.logging.get_verbosity()
    _quiet_libraries(verbose)
    try:  # the caller's Optuna logging level is theirs again after the call, even on an error
        run = SearchRun(spec, options, echo=progress.echo)
        try:
            if workers == 1:
                study = run.search()
            else:
                run.search_with_workers(workers)
                study = optuna.load_study(study_name=spec.name, storage=run.storage())
        finally:
            progress.close()
        result = SearchResult(study=study, spec=run.spec, _data=run.data)
        if has_test and best_trial(study) is not None:
            result.test_scores = _score_test(result, run)
        return result
    finally:
        optuna.logging.set_verbosity(verbosity)


def _score_test(result: SearchResult, run: SearchRun) -> dict[str, float | None]:
    """The best model's data loss (and accuracy) on the test split, stored on the study."""
    from search.training.final_model import evaluate_usable  # TensorFlow

    model = result.best_model
    dataset = run.data().dataset
    loss, accuracy = evaluate_usable(model, run.data(), "test")
    best = result.best_trial
    result.study.set_user_attr(
        "test_evaluation",
        {
            "refit": "train",
            "n_train": int(dataset.x_train.shape[0]),
            "trial": best.number,
            "epochs": int(best.user_attrs.get("best_epoch") or best.user_attrs["epochs_run"]),
            "seed": int(best.user_attrs.get("seed", 0)),
            "test_loss": loss,
            "test_accuracy": accuracy,
            "n_test": int(dataset.x_test.shape[0]) if dataset.x_test is not None else 0,
            "val_loss_retrained": None,
        },
    )
    return {"test_loss": loss, "test_accuracy": accuracy}


def _finished_before(name: str, url: str) -> int:
    try:
        return count_finished(optuna.load_study(study_name=name, storage=url))
    except Exception:  # no such study (or no storage yet): a new one
        return 0


def _quiet_libraries(verbose: int) -> None:
    # Optuna's INFO lines ("A new study created in RDB ...") are not the CLI's, at any verbose;
    # _run restores the caller's level. TF_CPP_MIN_LOG_LEVEL stays: TensorFlow reads it once.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if verbose < 2:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def study_table(
    *,
    objective: str,
    task: str,
    space: Any,
    baselines: Sequence[Mapping[str, Any]],
    trials: int,
    epochs: int,
    patience: int | None,
    steps_per_epoch: int | None,
    standardize: bool,
    validation_split: float,
    standardize_target: bool = False,
    pruner: str,
    seed: int,
    n_train: int,
    workers: int = 1,
) -> dict[str, Any]:
    """The study file of a call, as a dict (see :func:`study_toml`)."""
    training: dict[str, Any] = {"epochs": epochs, "seed": seed}
    if patience is not None:
        training["patience"] = patience
    if steps_per_epoch is not None:
        training["steps_per_epoch"] = steps_per_epoch
    table: dict[str, Any] = {
        "description": f"search.search() from Python: {objective}, {task}.",
        "objective": objective,
        "trials": trials,
        "data": {
            "source": "arrays",
            "path": "",
            "task": task,
            "validation_fraction": float(validation_split),
            "standardize": bool(standardize),
            "seed": seed,
        },
        "training": training,
        "sampler": {"name": "tpe", "seed": seed},
        "pruner": {"name": pruner},
    }
    if standardize_target:  # only when set: studies made before it keep their data table
        table["data"]["standardize_target"] = True
    if space is not None and not isinstance(space, Mapping):
        if baselines:
            raise InputError("baselines= need a space of the model family, not a hypermodel.")
        table["hypermodel"] = _hypermodel_table(space, workers)
        return table
    given = space_table(space or {})  # the caller's order first: the sampler draws in it
    full = given | {k: v for k, v in default_space(objective, n_train).items() if k not in given}
    table["space"] = full
    table["baselines"] = [baseline_table(b, full, i) for i, b in enumerate(baselines)]
    return table


def _hypermodel_table(target: Any, workers: int) -> dict[str, str]:
    """``[hypermodel]`` for a build function, HyperModel class or instance.

    One defined at the top of an importable ``.py`` file is named by its file, so worker
    processes and the CLI import it too; any other (a notebook's) is kept in this process.
    """
    if not (callable(target) or hasattr(target, "build")):
        raise InputError(
            f"space={type(target).__name__} is neither a dict of ranges nor a KerasTuner "
            "build_model(hp) / HyperModel."
        )
    name = getattr(target, "__name__", None) or type(target).__name__
    module = sys.modules.get(getattr(target, "__module__", "") or "")
    file = getattr(module, "__file__", None)
    if (
        module is not None
        and module.__name__ != "__main__"
        and file
        and getattr(module, name, None) is target
    ):
        return {"module": str(Path(file).resolve()), "build": name}
    if workers > 1:
        raise InputError(
            f"hypermodel {name!r} is defined in this session only; workers > 1 need it at the "
            "top of a .py file they can import (or use workers=1)."
        )
    home = sys.modules.setdefault(_HYPERMODELS, types.ModuleType(_HYPERMODELS))
    setattr(home, name, target)
    return {"module": _HYPERMODELS, "build": name}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise InputError(f"cannot write {value!r} ({type(value).__name__}) to a study file.")


def study_toml(table: Mapping[str, Any]) -> str:
    """A study-file dict as TOML text (scalars, then tables, then ``[[baselines]]``).

    Example:
        >>> print(study_toml({"trials": 2, "space": {"units": {"low": 4, "high": 8}}}))
        trials = 2
        <BLANKLINE>
        [space]
        units = { low = 4, high = 8 }
        <BLANKLINE>
    """
    lines: list[str] = []
    for key, value in table.items():
        if not isinstance(value, Mapping) and key != "baselines":
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in table.items():
        if isinstance(value, Mapping):
            lines += ["", f"[{key}]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in value.items()]
    for baseline in table.get("baselines", []):
        lines += ["", "[[baselines]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in baseline.items()]
    return "\n".join(lines) + "\n"
