"""Probing a hypermodel before a study is touched: build it, fit a few rows, check its output."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import keras
import keras_tuner

from search.errors import HypermodelError, one_line
from search.kerastuner.hyperparameters import Mirror, ProbeHyperParameters
from search.training.prepared import PreparedData
from search.training.session import clear_session

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from search.data import Dataset


PROBE_ROWS = 8


def probe_space(
    hypermodel: keras_tuner.HyperModel, data: PreparedData, label: str = "hypermodel"
) -> dict[str, Mirror]:
    """Build the hypermodel once with KerasTuner's defaults and check it fits the data.

    Also runs its ``fit`` for one epoch on a few rows, so hyperparameters declared in a ``fit``
    override (a searched batch size) are checked too, and so is that ``fit`` passing our
    callbacks on to ``model.fit``.

    Returns:
        The Optuna form of every hyperparameter declared on the default path.

    Raises:
        HypermodelError: A declaration has no Optuna form, or the model does not fit the data.
    """
    hp = ProbeHyperParameters()
    clear_session()
    model = _guarded(label, "build(hp)", lambda: hypermodel.build(hp))
    check_model(model, data.dataset, label)
    ds = data.dataset
    rows = min(PROBE_ROWS, ds.x_train.shape[0])
    x_val, y_val = ds.x_val, ds.y_val
    validation = (x_val[:rows], y_val[:rows]) if x_val is not None and y_val is not None else None
    seen = _Seen()
    _guarded(
        label,
        "fit(hp, model, ...)",
        lambda: hypermodel.fit(
            hp,
            model,
            ds.x_train[:rows],
            ds.y_train[:rows],
            validation_data=validation,
            epochs=1,
            callbacks=[seen],
            verbose=0,
        ),
    )
    if not seen.epochs:
        raise HypermodelError(
            f"{label}: fit(hp, model, *args, **kwargs) must pass its arguments on to "
            "model.fit (our per-epoch measurement and pruning are callbacks)."
        )
    clear_session()
    return hp.mirrors


def probe_stored_paths(
    hypermodel: keras_tuner.HyperModel, trials: Sequence[FrozenTrial], known: Mapping[str, Mirror]
) -> dict[str, Mirror]:
    """``known`` plus the hyperparameters declared on the paths the stored trials took.

    A conditional hyperparameter (``units_2`` under ``layers >= 3``) is not declared on the
    default path :func:`probe_space` builds. For every stored parameter still unseen, the
    latest trial that sampled it is built again (``build(hp)`` only) with its ``hp_values``; a
    build that fails, or that no longer declares the name, leaves it out. At most one build per
    unseen name.
    """
    from search.kerastuner.hyperparameters import ReplayHyperParameters

    seen = dict(known)
    unseen = {name for trial in trials for name in trial.distributions} - set(seen)
    for trial in reversed(trials):
        wanted = unseen & set(trial.distributions)
        values = trial.user_attrs.get("hp_values")
        if not wanted or not isinstance(values, dict):
            continue
        hp = ReplayHyperParameters(values)
        clear_session()
        # An edited build may refuse an old path: what it declared before failing still counts.
        with contextlib.suppress(Exception):
            hypermodel.build(hp)
        for name, mirror in hp.mirrors.items():
            seen.setdefault(name, mirror)
        unseen -= wanted | set(hp.mirrors)
        if not unseen:
            break
    clear_session()
    return seen


def check_model(model: Any, dataset: Dataset, label: str = "hypermodel") -> None:
    """A compiled Keras model whose input and output fit the data and its task.

    Raises:
        HypermodelError: The model does not fit, with the fix.
    """
    if not isinstance(model, keras.Model):
        raise HypermodelError(f"{label}: build(hp) returned {type(model).__name__}, not a model.")
    if not getattr(model, "compiled", True) or model.optimizer is None:
        raise HypermodelError(
            f"{label}: build(hp) must return a compiled model (KerasTuner's convention)."
        )
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        return  # not built yet (a Sequential without Input): fit will tell
    if len(inputs) != 1 or len(outputs) != 1:
        raise HypermodelError(f"{label}: the model needs one input and one output.")
    width = inputs[0].shape[-1]
    if width is not None and width != dataset.n_features:
        raise HypermodelError(
            f"{label}: the model's input has {width} features, the data has "
            f"{dataset.n_features}; declare keras.Input(shape=({dataset.n_features},))."
        )
    if dataset.is_sparse and not getattr(inputs[0], "sparse", False):
        raise HypermodelError(
            f"{label}: the data is sparse (multi-hot); declare "
            f"keras.Input(shape=({dataset.n_features},), sparse=True)."
        )
    units = 1 if dataset.task in ("regression", "binary") else dataset.n_classes
    if outputs[0].shape[-1] != units:
        raise HypermodelError(
            f"{label}: a {dataset.task} task needs {units} output unit(s), the model has "
            f"{outputs[0].shape[-1]}."
        )


class _Seen(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.epochs = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epochs += 1


def _guarded(label: str, what: str, call: Any) -> Any:
    try:
        return call()
    except HypermodelError:
        raise
    except Exception as exc:
        raise HypermodelError(
            f"{label}: {what} failed: {type(exc).__name__}: {one_line(exc)}"
        ) from None
