"""The model a user takes home: raw inputs, plain Keras loss and metrics, no loading warnings.

A trained trial's model expects what the search fed it (standardized features when the data
source standardized them), is compiled with the search's ``data_loss`` metric (a raw loss
function, which cannot evaluate 1-D labels against a ``(None, 1)`` output) and has an optimizer
whose slots live in the shared graphs (so a saved file's optimizer does not match a freshly
compiled one on load). :func:`usable_model` returns the same weights as a model that:

* takes raw inputs: a ``keras.layers.Normalization`` layer in front holds the training split's
  mean and variance when the data set was standardized;
* predicts raw values: a ``keras.layers.Rescaling`` layer at the end (``unstandardize_target``)
  holds a regression target's training mean and std when the study standardized the target;
* uses plain ``keras.layers.Dense`` layers (no sparse first layer class of this package), so a
  saved ``.keras`` file loads with Keras alone;
* is compiled with the plain Keras loss (by name) and ``"accuracy"`` for classification, so it
  evaluates and fits on ``(n,)`` as well as ``(n, 1)`` labels;
* has its optimizer built (fresh slots), so ``keras.models.load_model`` restores it without the
  "Skipping variable loading for optimizer" warning.

Hypermodel models are the user's own: they keep their compile settings, lose the sparse first
layer and gain the same two layers where the data were standardized.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from search.training.model import make_optimizer, training_loss
from search.training.sparse_dense import plain_dense_copy

if TYPE_CHECKING:
    from search.data import Dataset
    from search.training.prepared import PreparedData

__all__ = ["evaluate_usable", "raw_dataset", "usable_model"]


def usable_model(
    model: keras.Model, dataset: Dataset, params: dict[str, Any] | None = None
) -> keras.Model:
    """``model``'s weights as a model for raw inputs, compiled with plain Keras (see above).

    Args:
        model: A trained model (built-in family or a hypermodel's).
        dataset: Its data: task, input width and, when standardized, the statistics.
        params: The trial's model parameters (built-in family); ``None`` for a hypermodel,
            whose model keeps its own compile settings (loss, metrics, a fresh optimizer of
            its kind), also where it gains the layers that take raw inputs and give raw values.
    """
    plain = plain_dense_copy(model)
    if params is not None and plain is model:  # a copy: the trained model stays as it was
        plain = keras.models.clone_model(model)
        plain.set_weights(model.get_weights())
    final = _with_raw_ends(plain, dataset)
    if params is None:
        if final is not plain:
            config = plain.get_compile_config()
            if config:
                final.compile_from_config(config)
        return final
    rate = float(params.get("learning_rate", 1e-3))
    optimizer = make_optimizer(
        params.get("optimizer", "adam"),
        rate,
        weight_decay=float(params.get("weight_decay", 0.0)),
        momentum=float(params.get("momentum", 0.0)),
        nesterov=bool(params.get("nesterov", False)),
    )
    metrics = ["accuracy"] if dataset.task != "regression" else []
    final.compile(optimizer=optimizer, loss=training_loss(dataset.task, params), metrics=metrics)
    optimizer.build(final.trainable_variables)  # saved with its slots: loads without warning
    return final


def _with_raw_ends(plain: keras.Model, dataset: Dataset) -> keras.Model:
    """``plain`` behind a ``standardize`` layer and before an ``unstandardize_target`` one,
    where the data set standardized its features or its target; else ``plain`` itself."""
    mean = dataset.reference.get("feature_mean")
    std = dataset.reference.get("feature_std")
    raw_inputs = mean is not None and std is not None and not dataset.is_sparse
    target = _target_stats(dataset)
    if not raw_inputs and target is None:
        return plain
    inputs = keras.Input(shape=(dataset.n_features,), name="features", sparse=dataset.is_sparse)
    features = inputs
    if raw_inputs:
        features = keras.layers.Normalization(
            mean=np.asarray(mean, dtype=np.float32),
            variance=np.square(np.asarray(std, dtype=np.float32)),
            name="standardize",
        )(inputs)
    outputs = plain(features)
    if target is not None:  # it learned the standardized target: predict raw values
        outputs = keras.layers.Rescaling(scale=target[1], offset=target[0], name=UNSTANDARDIZE)(
            outputs
        )
    return keras.Model(inputs, outputs, name=f"{plain.name}_raw_inputs")


UNSTANDARDIZE = "unstandardize_target"
"""The last layer of a usable model whose study standardized its regression target."""


def _target_stats(dataset: Dataset) -> tuple[float, float] | None:
    mean, std = dataset.reference.get("target_mean"), dataset.reference.get("target_std")
    return None if mean is None or std is None else (float(mean), float(std))


def raw_dataset(dataset: Dataset) -> Dataset:
    """The data set with standardized features turned back into raw ones (for a raw model)."""
    from dataclasses import replace

    mean = dataset.reference.get("feature_mean")
    std = dataset.reference.get("feature_std")
    if mean is None or std is None or dataset.is_sparse:
        return dataset
    m, s = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)

    def undo(x: Any) -> Any:
        return None if x is None else (np.asarray(x, dtype=np.float64) * s + m).astype(np.float32)

    return replace(
        dataset,
        x_train=undo(dataset.x_train),
        x_val=undo(dataset.x_val),
        x_test=undo(dataset.x_test),
    )


def evaluate_usable(
    model: keras.Model, data: PreparedData, split: str
) -> tuple[float, float | None]:
    """Data loss and accuracy of a :func:`usable_model` on a split, fed the inputs it takes.

    A model with the ``standardize`` layer gets the raw features back (:func:`raw_dataset`);
    any other the prepared ones. A model ending in ``unstandardize_target`` is scored before
    that layer, on the standardized target the search scored.
    """
    names = {layer.name for layer in model.layers}
    if "standardize" in names:
        from search.training.prepared import PreparedData

        data = PreparedData(raw_dataset(data.dataset))
    if UNSTANDARDIZE in names:  # its loss on the target as the search scored it (standardized)
        inner = model.get_layer(UNSTANDARDIZE).input
        model = keras.Model(model.inputs, inner, name=f"{model.name}_standardized_target")
    return data.evaluate(model, split)
