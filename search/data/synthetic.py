"""Small data sets rebuilt from the questions in the seeds, exactly as their posts make them.

* ``overfit30``: the 30 points of seed 000's question (21 train, 9 test); a memorization study.
* ``noisy_sine``: seed 000's second answer, ``3 sin(x)`` plus Gaussian noise on ``[0, 2 pi]``.
* ``square``: seed 002's ``y = x**2`` for ``x`` uniform in ``[-50, 50]``, deliberately unscaled.
* ``collinear``: seed 004's two sorted, standardized Poisson columns with ``y = (x1 + x2) / 2``,
  whose near-collinearity makes gradient descent settle on almost any split of the weights.

Generators use ``np.random.RandomState(seed)`` so that the default seeds give the very numbers the
posts' ``np.random.seed(...)`` calls give.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from search.data._dataset import DataContext, Dataset, DataSource, Option
from search.data._options import float_range, int_range
from search.data._split import random_split, standardize, take
from search.errors import OptionError

# Seed 000, as posted: X_train/y_train (21 points) and X_test/y_test (9 points).
OVERFIT30_X_TRAIN = (
    0.704619794270697, 0.6779457393024553, 0.8207082120250023, 0.8588819357831449,
    0.8692320257603844, 0.6878750931810429, 0.9556331888763945, 0.77677964510883,
    0.7211381534179618, 0.6438319113259414, 0.6478339581502052, 0.9710222750072649,
    0.8952188423349681, 0.6303124926673513, 0.9640316662124185, 0.869691568491902,
    0.8320164648420931, 0.8236399177660375, 0.8877334038470911, 0.8084042532069621,
    0.8045680821762038,
)  # fmt: skip
OVERFIT30_Y_TRAIN = (
    0.7766424210611557, 0.8210846773655833, 0.9996114311913593, 0.8041331063189883,
    0.9980525368790883, 0.8164056182686034, 0.8925487603333683, 0.7758207470960685,
    0.37345286573743475, 0.9325789202459493, 0.6060269037514895, 0.9319771743389491,
    0.9990691225991941, 0.9320002808310418, 0.9992560731072977, 0.9980241561997089,
    0.8882905258641204, 0.4678339275898943, 0.9312152374846061, 0.9542371205095945,
    0.8885893668675711,
)  # fmt: skip
OVERFIT30_X_TEST = (
    0.9749191829308574, 0.8735366740730178, 0.8882783211709133, 0.8022891400991644,
    0.8650601322313454, 0.8697902997857514, 1.0, 0.8165876695985228, 0.8923841531760973,
)  # fmt: skip
OVERFIT30_Y_TEST = (
    0.975653685270635, 0.9096752789481569, 0.6653736469114154, 0.46367666660348744,
    0.9991817903431941, 1.0, 0.9111205717076893, 0.5264993912088891, 0.9989199241685126,
)  # fmt: skip

_FRACTION = float_range(0.0, 0.5, high_open=True)


def _column(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(-1, 1)


def _ordered_split(n: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pick validation rows at random but keep both parts in generation order."""
    train, val, _ = random_split(n, validation_fraction, 0.0, seed)
    return np.sort(train), np.sort(val)


def load_overfit30(options: Mapping[str, Any], context: DataContext) -> Dataset:
    """Seed 000's 30 points; the question's 9 test points are the validation split.

    Args:
        options: Validated options of ``overfit30``.
        context: Unused; the data are built in.

    Returns:
        A regression data set with one feature, 21 training and 9 validation rows.
    """
    x_train, x_val = _column(OVERFIT30_X_TRAIN), _column(OVERFIT30_X_TEST)
    reference: dict[str, Any] = {}
    note = "raw x in [0.63, 1]"
    if options["standardize"]:
        # From the posted float64 values, so only the result is rounded to float32.
        raw_train = np.reshape(OVERFIT30_X_TRAIN, (-1, 1))
        x_train, (x_scaled,), mean, std = standardize(
            raw_train, np.reshape(OVERFIT30_X_TEST, (-1, 1))
        )
        x_val = _column(x_scaled)
        reference = {"x_mean": float(mean[0]), "x_std": float(std[0])}
        note = (
            "x standardized with the training mean and std (raw x lies in [0.63, 1], "
            "much easier to fit once centred)"
        )
    return Dataset(
        name="overfit30",
        task="regression",
        x_train=x_train,
        y_train=_column(OVERFIT30_Y_TRAIN),
        x_val=x_val,
        y_val=_column(OVERFIT30_Y_TEST),
        description=f"Seed 000's 30 points: 21 train / 9 validation (the post's test set); {note}",
        reference=reference,
    )


def load_noisy_sine(options: Mapping[str, Any], context: DataContext) -> Dataset:
    """``y = 3 sin(x) + N(0, noise^2)`` on ``n_points`` evenly spaced ``x`` in ``[0, 2 pi]``.

    Args:
        options: Validated options of ``noisy_sine``.
        context: Unused.

    Returns:
        A regression data set; ``reference["irreducible_mse"]`` is the noise variance, the
        mean squared error of the true curve.
    """
    n, noise = options["n_points"], options["noise"]
    rng = np.random.RandomState(options["seed"])
    x = np.linspace(0.0, 2.0 * np.pi, n).reshape(-1, 1)
    y = 3.0 * np.sin(x) + rng.normal(0.0, noise, n).reshape(-1, 1)
    train, val = _ordered_split(n, options["validation_fraction"], options["seed"])
    return Dataset(
        name="noisy_sine",
        task="regression",
        x_train=_column(x[train]),
        y_train=_column(y[train]),
        x_val=take(_column(x), val),
        y_val=take(_column(y), val),
        description=(
            f"3 sin(x) + N(0, {noise}^2) noise at {n} evenly spaced x in [0, 2 pi]: "
            f"{len(train)} train / {len(val)} validation"
        ),
        reference={"noise_std": noise, "irreducible_mse": noise**2},
    )


def check_square(options: Mapping[str, Any]) -> None:
    """Reject ``high <= low`` for the ``square`` source.

    Raises:
        OptionError: ``high`` is not above ``low``.
    """
    if options["high"] <= options["low"]:
        raise OptionError(
            "high",
            f"must be greater than low, got low={options['low']} and high={options['high']}; "
            "swap or widen them",
        )


def load_square(options: Mapping[str, Any], context: DataContext) -> Dataset:
    """``y = x**2`` for ``x`` uniform in ``[low, high)``; the last samples are the validation.

    The target is left at its raw scale (up to 2,500 by default), which is what seed 002 is
    about; ``scale_target`` divides ``y`` by the largest ``|y|`` of the training split.

    Args:
        options: Validated options of ``square``.
        context: Unused.

    Returns:
        A regression data set; ``reference["target_scale"]`` is the divisor applied to ``y``.
    """
    check_square(options)
    n, low, high = options["n_points"], options["low"], options["high"]
    rng = np.random.RandomState(options["seed"])
    x = rng.random_sample((n, 1)) * (high - low) + low
    y = x**2
    # Like Keras' validation_split: the last fraction of the samples, not shuffled.
    split_at = int(np.floor(n * (1.0 - options["validation_fraction"])))
    scale = float(np.abs(y[:split_at]).max()) if options["scale_target"] else 1.0
    y = y / (scale if scale > 0 else 1.0)
    has_val = split_at < n
    return Dataset(
        name="square",
        task="regression",
        x_train=_column(x[:split_at]),
        y_train=_column(y[:split_at]),
        x_val=_column(x[split_at:]) if has_val else None,
        y_val=_column(y[split_at:]) if has_val else None,
        description=(
            f"y = x^2 for x uniform in [{low}, {high}): {split_at} train / {n - split_at} "
            f"validation (the last samples); "
            + (f"y divided by {scale:g}" if options["scale_target"] else "raw scale, unscaled")
        ),
        reference={"target_scale": scale},
    )


def _scale(values: np.ndarray) -> np.ndarray:
    """Standardize like ``sklearn.preprocessing.scale``: population std, float64."""
    floats = values.astype(np.float64)
    scaled: np.ndarray = (floats - floats.mean()) / floats.std()
    return scaled


def load_collinear(options: Mapping[str, Any], context: DataContext) -> Dataset:
    """Seed 004's two sorted standardized Poisson columns, ``y = (x1 + x2) / 2``.

    Sorting each column makes the two nearly equal, so many weight pairs fit about as well as
    ``(0.5, 0.5)``. ``shuffled`` permutes each column on its own before ``y`` is computed, the
    answer's fix, which makes the columns independent.

    Args:
        options: Validated options of ``collinear``.
        context: Unused.

    Returns:
        A regression data set with two features. ``reference`` holds the least-squares fit of
        ``y`` on ``[x1, x2, 1]`` over the training rows, in float64 from the float32 arrays.
    """
    n, seed = options["n_points"], options["seed"]
    rng = np.random.RandomState(seed)
    x1 = np.sort(_scale(rng.poisson(1_000_000, n)))
    x2 = np.sort(_scale(rng.poisson(1_000_000, n)))
    if options["shuffled"]:
        x1, x2 = rng.permutation(x1), rng.permutation(x2)
    x = np.stack([x1, x2], axis=1).astype(np.float32)
    y = _column((x1 + x2) / 2.0)
    train, val = _ordered_split(n, options["validation_fraction"], seed)
    design = np.column_stack([x[train].astype(np.float64), np.ones(len(train))])
    solution = np.linalg.lstsq(design, y[train, 0].astype(np.float64), rcond=None)[0]
    reference = {
        "lstsq_coefficients": [float(solution[0]), float(solution[1])],
        "lstsq_intercept": float(solution[2]),
        "condition_number": float(np.linalg.cond(design)),
        "mean_abs_x1_minus_x2": float(np.mean(np.abs(x[train, 0] - x[train, 1]))),
    }
    order = "shuffled independently" if options["shuffled"] else "each sorted (near-collinear)"
    return Dataset(
        name="collinear",
        task="regression",
        x_train=x[train],
        y_train=y[train],
        x_val=take(x, val),
        y_val=take(y, val),
        description=(
            f"y = (x1 + x2) / 2, x1 and x2 standardized Poisson(1e6) columns {order}: "
            f"{len(train)} train / {len(val)} validation"
        ),
        reference=reference,
    )


SOURCES = (
    DataSource(
        name="overfit30",
        summary="Seed 000's 30 points (21 train, 9 validation): can a network memorize them?",
        options=(
            Option("standardize", bool, True, "standardize x with the training mean and std"),
        ),
        load=load_overfit30,
    ),
    DataSource(
        name="noisy_sine",
        summary="3 sin(x) + Gaussian noise on [0, 2 pi] (seed 000's second answer)",
        options=(
            Option("n_points", int, 1000, "number of points", int_range(100, 100000)),
            Option("noise", float, 1.0, "standard deviation of the noise", float_range(0.0)),
            Option("validation_fraction", float, 0.2, "share held out at random", _FRACTION),
            Option("seed", int, 7, "seed of the noise and the split (7 as in the post)"),
        ),
        load=load_noisy_sine,
    ),
    DataSource(
        name="square",
        summary="y = x^2 for x uniform in [-50, 50], unscaled (seed 002)",
        options=(
            Option("n_points", int, 10000, "number of points", int_range(10, 10_000_000)),
            Option("low", float, -50.0, "lower end of x"),
            Option("high", float, 50.0, "upper end of x; above low"),
            Option(
                "validation_fraction",
                float,
                0.2,
                "share held out: the last samples, like Keras' validation_split",
                float_range(0.0, 0.5),
            ),
            Option("seed", int, 0, "seed of the x values"),
            Option(
                "scale_target", bool, False, "divide y by the largest |y| of the training split"
            ),
        ),
        load=load_square,
    ),
    DataSource(
        name="collinear",
        summary="y = (x1 + x2) / 2 with two sorted, nearly equal columns (seed 004)",
        options=(
            Option("n_points", int, 100000, "number of rows", int_range(10, 10_000_000)),
            Option("seed", int, 1443, "seed of the Poisson draws (1443 as in the post)"),
            Option(
                "shuffled", bool, False, "shuffle each column on its own, breaking collinearity"
            ),
            Option("validation_fraction", float, 0.0, "share held out at random", _FRACTION),
        ),
        load=load_collinear,
    ),
)
