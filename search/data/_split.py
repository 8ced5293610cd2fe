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


def take(array: np.ndarray, index: np.ndarray) -> np.ndarray | None:
    """Return ``array[index]``, or ``None`` when ``index`` is empty (a split that is not used)."""
    if len(index) == 0:
        return None
    part: np.ndarray = array[index]
    return part
