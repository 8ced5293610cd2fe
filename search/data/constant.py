"""The best constant prediction of a data set: the floor every trained model must beat.

The mean for regression, the training class frequencies for classification, fitted on the
training rows. The verdict reads its losses (its underfit rule is a share of the way back to
them); the summary prints them next to the best trial, with the majority class's accuracy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from search.data._dataset import Dataset


def constant_losses(dataset: Dataset) -> tuple[float, float | None]:
    """Training and validation loss of the best constant prediction (fitted on training rows)."""
    y = np.asarray(dataset.y_train, dtype=np.float64)
    y_val = None if dataset.y_val is None else np.asarray(dataset.y_val, dtype=np.float64)
    eps = 1e-7
    if dataset.task == "regression":
        mean = float(y.mean())
        val = float(np.mean((y_val - mean) ** 2)) if y_val is not None else None
        return float(np.mean((y - mean) ** 2)), val
    if dataset.task == "binary":
        p = float(np.clip(y.mean(), eps, 1 - eps))

        def bce(t: np.ndarray) -> float:
            return float(-np.mean(t * math.log(p) + (1 - t) * math.log(1 - p)))

        return bce(y), (bce(y_val) if y_val is not None else None)
    counts = np.bincount(y.astype(int).ravel(), minlength=dataset.n_classes)
    freq = np.clip(counts / counts.sum(), eps, 1.0)

    def cce(t: np.ndarray) -> float:
        return float(-np.mean(np.log(freq[t.astype(int).ravel()])))

    return cce(y), (cce(y_val) if y_val is not None else None)


def majority_accuracy(dataset: Dataset, split: str = "val") -> float | None:
    """The accuracy of always answering the training rows' commonest class, on ``split``.

    Example:
        >>> ds = Dataset("d", "binary", np.zeros((4, 1)), np.array([[1.0], [1.0], [1.0], [0.0]]),
        ...              np.zeros((2, 1)), np.array([[1.0], [0.0]]))
        >>> majority_accuracy(ds)
        0.5
    """
    y_split = getattr(dataset, f"y_{split}")
    if dataset.task == "regression" or y_split is None:
        return None
    train = np.asarray(dataset.y_train).astype(int).ravel()
    commonest = int(np.bincount(train).argmax())
    return float(np.mean(np.asarray(y_split).astype(int).ravel() == commonest))


def constant_prediction(dataset: Dataset) -> dict[str, Any]:
    """What the summary stores and prints: the constant's losses and majority accuracy."""
    train, val = constant_losses(dataset)
    return {
        "train_loss": train,
        "val_loss": val,
        "val_accuracy": majority_accuracy(dataset, "val"),
        "train_accuracy": majority_accuracy(dataset, "train"),
    }
