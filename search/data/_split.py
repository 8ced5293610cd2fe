"""Seeded train/validation/test splits and standardization shared by the sources."""

from __future__ import annotations

import numpy as np


def split_sizes(n: int, validation_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Return ``(n_val, n_test)`` for ``n`` samples: each fraction times ``n``, rounded."""
    return int(round(n * validation_fraction)), int(round(n * test_fraction))


def random_split(
    n: int, validation_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle ``range(n)`` with a seeded generator and cut it into train, validation and test.

    Returns:
        Index arrays ``(train, val, test)``; ``val`` and ``test`` may be empty.

    Example:
        >>> train, val, test = random_split(10, 0.2, 0.0, seed=0)
        >>> len(train), len(val), len(test)
        (8, 2, 0)
    """
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = split_sizes(n, validation_fraction, test_fraction)
    return order[n_val + n_test :], order[:n_val], order[n_val : n_val + n_test]


def stratified_split(
    labels: np.ndarray, validation_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split indices so that each part keeps the class proportions of ``labels``.

    Each class is shuffled with the seeded generator and cut by the fractions (rounded per
    class); each part is then shuffled so classes are interleaved.

    Returns:
        Index arrays ``(train, val, test)``.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels).reshape(-1)
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for value in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == value))
        n_val, n_test = split_sizes(len(members), validation_fraction, test_fraction)
        parts[1].append(members[:n_val])
        parts[2].append(members[n_val : n_val + n_test])
        parts[0].append(members[n_val + n_test :])
    train, val, test = (rng.permutation(np.concatenate(part)) for part in parts)
    return train, val, test


def standardize(
    train: np.ndarray, *others: np.ndarray | None
) -> tuple[np.ndarray, list[np.ndarray | None], np.ndarray, np.ndarray]:
    """Centre and scale columns with the mean and standard deviation of ``train``.

    Columns with zero spread are only centred. Computed in float64, returned as float32.

    Returns:
        ``(train scaled, [others scaled], mean, std)``; ``None`` entries of ``others`` stay
        ``None``.

    Example:
        >>> scaled, _, mean, std = standardize(np.array([[1.0], [3.0]]))
        >>> scaled.ravel().tolist(), mean.tolist(), std.tolist()
        ([-1.0, 1.0], [2.0], [1.0])
    """
    train64 = np.asarray(train, dtype=np.float64)
    mean = train64.mean(axis=0)
    std = train64.std(axis=0)
    std = np.where(std > 0, std, 1.0)

    def scale(array: np.ndarray) -> np.ndarray:
        scaled: np.ndarray = ((np.asarray(array, dtype=np.float64) - mean) / std).astype(np.float32)
        return scaled

    return scale(train), [None if a is None else scale(a) for a in others], mean, std


def standardized_target(
    train: np.ndarray, *others: np.ndarray | None
) -> tuple[np.ndarray, list[np.ndarray | None], dict[str, float]]:
    """A regression target centred and scaled with its training rows' mean and std.

    Losses are then in units of the target's spread (the constant predictor's mean squared
    error is 1); the returned ``target_mean`` and ``target_std``, kept in the data set's
    reference, let an exported model predict raw values
    (:func:`search.training.final_model.usable_model`).

    Returns:
        ``(train scaled, [others scaled], {"target_mean": m, "target_std": s})``, each array of
        shape ``(n, 1)``; ``None`` entries of ``others`` stay ``None``.

    Example:
        >>> scaled, (val,), stats = standardized_target(np.array([100.0, 300.0]), np.array([200.0]))
        >>> scaled.ravel().tolist(), val.ravel().tolist(), stats
        ([-1.0, 1.0], [0.0], {'target_mean': 200.0, 'target_std': 100.0})
    """

    def column(y: np.ndarray | None) -> np.ndarray | None:
        return None if y is None else np.asarray(y, dtype=np.float64).reshape(-1, 1)

    first = np.asarray(train, dtype=np.float64).reshape(-1, 1)
    scaled, rest, mean, std = standardize(first, *(column(y) for y in others))
    return scaled, rest, {"target_mean": float(mean[0]), "target_std": float(std[0])}


def take(array: np.ndarray, index: np.ndarray) -> np.ndarray | None:
    """Return ``array[index]``, or ``None`` when ``index`` is empty (a split that is not used)."""
    if len(index) == 0:
        return None
    part: np.ndarray = array[index]
    return part
