"""The ``arrays`` source: a Python caller's in-memory arrays, checked once and written once.

:func:`search.search` takes NumPy arrays, pandas DataFrames and Series (column names kept) or SciPy
sparse matrices (kept as CSR, for the sparse first layer). :func:`check_arrays` turns them into
float32 features and task labels, refusing bad input with one line (mismatched lengths, NaN or
infinity, an empty array, labels that do not fit the task) before any study exists.
:func:`write_arrays` writes the splits once, as ``.npy`` files in a folder named by their hash
(under the storage's artifact folder), so that worker processes, on this host or others sharing
the folder, map them (``np.load(mmap_mode="r")``) instead of copying them; the ``arrays`` source
loads that folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search.data._dataset import DataContext, Dataset, DataSource, Features, Option, Task
from search.data._locate import resolve_user_path
from search.data._options import REQUIRED, float_range, one_of
from search.data._split import random_split, standardize, standardized_target, stratified_split
from search.errors import InputError

__all__ = ["SOURCE", "MemoryData", "check_arrays", "write_arrays"]

TASKS = ("regression", "binary", "multiclass")


@dataclass
class MemoryData:
    """Checked in-memory splits: float32 features (or CSR), labels as the task needs them."""

    task: Task
    splits: dict[str, tuple[Features, np.ndarray]]
    features: list[str] = field(default_factory=list)
    classes: list[Any] = field(default_factory=list)


def _features(x: Any, where: str) -> tuple[Features, list[str]]:
    names: list[str] = []
    if _is_frame(x):  # a pandas DataFrame
        names = [str(c) for c in x.columns]
        kinds = getattr(x, "dtypes", [])
        for name, kind in zip(names, kinds, strict=False):
            if getattr(kind, "kind", "f") not in "biuf":
                raise InputError(
                    f"{where}: column {name!r} is {kind}, not numbers; encode it or drop it."
                )
        x = x.to_numpy(dtype=np.float64)
    elif hasattr(x, "to_numpy"):  # a pandas Series: one feature
        names = [str(getattr(x, "name", "") or "x")]
        x = x.to_numpy().reshape(-1, 1)
    if hasattr(x, "tocsr") and not isinstance(x, np.ndarray):  # SciPy sparse
        csr = x.tocsr().astype(np.float32)
        csr.sort_indices()
        if csr.shape[0] == 0 or csr.shape[1] == 0:
            raise InputError(f"{where} is empty (shape {csr.shape}); give it rows and columns.")
        if not np.isfinite(csr.data).all():
            raise InputError(f"{where} holds NaN or infinity; fix or drop those rows.")
        return csr, names
    array = np.asarray(x)
    if array.dtype.kind not in "biuf":
        raise InputError(f"{where} is {array.dtype}, not numbers; encode it as numbers.")
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise InputError(
            f"{where} has shape {array.shape}; give (n, features) rows, e.g. x.reshape(len(x), -1)."
        )
    if array.size == 0:
        raise InputError(f"{where} is empty (shape {array.shape}); give it rows and columns.")
    bad = np.flatnonzero(~np.isfinite(array.astype(np.float64)).all(axis=1))
    if len(bad):
        raise InputError(f"{where} has NaN or infinity in row {bad[0]}; fix or drop those rows.")
    return np.asarray(array, dtype=np.float32), names


def _is_frame(x: Any) -> bool:
    return hasattr(x, "columns") and hasattr(x, "to_numpy")


def _columns_as_in(frame: Any, train: list[str], where: str) -> Any:
    """``frame`` with its columns in the training frame's order, matched by name.

    The model sees columns by position, so a validation or test frame with the same columns in
    another order would be scored on swapped features without this.
    """
    found = [str(c) for c in frame.columns]
    if found == train:
        return frame
    missing = [c for c in train if c not in found]
    extra = [c for c in found if c not in train]
    if missing or extra:
        parts = [f"lacks x's columns {missing}"] if missing else []
        parts += [f"has columns {extra} that x lacks"] if extra else []
        raise InputError(
            f"{where} {' and '.join(parts)}; give every split the same column names as x."
        )
    if len(set(found)) != len(found) or len(set(train)) != len(train):
        raise InputError(
            f"{where} has its columns in another order than x and a name repeats, so they "
            "cannot be matched by name; give each column a unique name."
        )
    return frame.iloc[:, [found.index(c) for c in train]]


def _labels(y: Any, where: str) -> np.ndarray:
    if hasattr(y, "to_numpy"):
        y = y.to_numpy()
    array = np.asarray(y)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array.reshape(-1)
    if array.ndim != 1:
        one_hot = (
            array.ndim == 2
            and array.dtype.kind in "biuf"
            and np.isin(array, (0, 1)).all()
            and bool((array.sum(axis=1) == 1).all())
        )
        hint = (
            " These are one-hot rows: pass y.argmax(axis=1), the class indices." if one_hot else ""
        )
        raise InputError(
            f"{where} has shape {array.shape}; give one label per row, shape (n,).{hint}"
        )
    if array.size == 0:
        raise InputError(f"{where} is empty; give one label per row.")
    if array.dtype.kind in "biuf" and not np.isfinite(array.astype(np.float64)).all():
        row = int(np.flatnonzero(~np.isfinite(array.astype(np.float64)))[0])
        raise InputError(f"{where} has NaN or infinity in row {row}; fix or drop those rows.")
    return array


def infer_task(y: np.ndarray) -> Task:
    """The task labels imply, when they leave no doubt.

    Non-integral numbers: regression; two values: binary; text or booleans with more values:
    multiclass. Integers with more than two values could be classes or counts: ambiguous.

    Example:
        >>> infer_task(np.array([0.5, 1.5])), infer_task(np.array([0, 1, 1]))
        ('regression', 'binary')
    """
    values = np.unique(y)
    if y.dtype.kind == "f" and not np.all(np.mod(values, 1) == 0):
        return "regression"
    if len(values) == 2:
        return "binary"
    if y.dtype.kind not in "iuf":
        return "multiclass"
    raise InputError(
        f"cannot tell the task from labels with {len(values)} integer values; pass "
        'task="multiclass" (class indices) or task="regression".'
    )


def _encode(y: np.ndarray, task: Task, classes: list[Any], where: str) -> np.ndarray:
    if task == "regression":
        if y.dtype.kind not in "biuf":
            raise InputError(f"{where} is {y.dtype}, not numbers; a regression needs numbers.")
        return y.astype(np.float32).reshape(-1, 1)
    lookup = {value: i for i, value in enumerate(classes)}
    unknown = [v for v in np.unique(y).tolist() if v not in lookup]
    if unknown:
        raise InputError(
            f"{where} has the label {unknown[0]!r}, which the training labels do not have "
            f"({classes}); give every split the same classes."
        )
    codes = np.array([lookup[v] for v in y.tolist()], dtype=np.int64)
    return codes if task == "multiclass" else codes.astype(np.float32).reshape(-1, 1)


def check_arrays(splits: Mapping[str, tuple[Any, Any]], task: Task | None = None) -> MemoryData:
    """Check and convert ``{"train": (x, y), "val": ..., "test": ...}``.

    Raises:
        InputError: Mismatched lengths or widths, NaN or infinity, an empty array, labels that
            do not fit the task (three classes for a binary task), non-numeric features, a
            validation or test DataFrame whose column names differ from x's (the same names in
            another order are put in x's order).

    Example:
        >>> data = check_arrays({"train": (np.array([[0.0], [1.0]]), np.array([0, 1]))})
        >>> data.task, data.splits["train"][1].ravel().tolist()
        ('binary', [0.0, 1.0])
    """
    if task is not None and task not in TASKS:
        raise InputError(f"task={task!r} is unknown; use one of {', '.join(TASKS)} or None.")
    raw: dict[str, tuple[Features, np.ndarray]] = {}
    names: list[str] = []
    train_x = splits["train"][0]
    for split, (x, y) in splits.items():
        label = {"train": "x", "val": "validation_data x", "test": "test_data x"}[split]
        if split != "train" and _is_frame(train_x) and _is_frame(x):
            x = _columns_as_in(x, [str(c) for c in train_x.columns], label)
        features, found = _features(x, label)
        labels = _labels(y, label.replace("x", "y").rstrip())
        if features.shape[0] != len(labels):
            raise InputError(
                f"{label} has {features.shape[0]} rows but its y has {len(labels)}; give one "
                "label per row."
            )
        if split != "train" and features.shape[1] != raw["train"][0].shape[1]:
            raise InputError(
                f"{label} has {features.shape[1]} features but x has "
                f"{raw['train'][0].shape[1]}; give every split the same columns."
            )
        names = names or found
        raw[split] = (features, labels)
    y_train = raw["train"][1]
    task = task or infer_task(y_train)
    classes: list[Any] = []
    if task != "regression":
        classes = np.unique(y_train).tolist()
        if task == "binary" and len(classes) != 2:
            raise InputError(
                f"a binary task needs exactly 2 label values, y has {len(classes)} "
                f'({classes[:10]}); pass task="multiclass" or fix y.'
            )
        if len(classes) < 2:
            raise InputError(f"y has the single value {classes[0]!r}; nothing to learn.")
    out = {s: (x, _encode(y, task, classes, f"{s} labels")) for s, (x, y) in raw.items()}
    if task == "regression" and classes == []:
        classes = []
    return MemoryData(task=task, splits=out, features=names, classes=classes)


def _array_files(name: str, x: Features) -> dict[str, np.ndarray]:
    if isinstance(x, np.ndarray):
        return {name: x}
    return {
        f"{name}.data": x.data,
        f"{name}.indices": x.indices,
        f"{name}.indptr": x.indptr,
        f"{name}.shape": np.asarray(x.shape, dtype=np.int64),
    }


def write_arrays(data: MemoryData, root: Path) -> tuple[Path, str]:
    """Write the splits once under ``root/<sha256>/`` (``.npy`` files and ``meta.json``).

    Returns:
        The folder and the hash; a folder already there (same arrays) is reused as it is.
    """
    files: dict[str, np.ndarray] = {}
    for split, (x, y) in data.splits.items():
        files |= _array_files(f"x_{split}", x) | {f"y_{split}": y}
    meta = {"task": data.task, "features": data.features, "classes": data.classes}
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode())
    for name in sorted(files):
        array = np.ascontiguousarray(files[name])
        digest.update(f"{name}{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    sha = digest.hexdigest()
    folder = root / sha[:16]
    if not (folder / "meta.json").is_file():
        partial = root / f".{sha[:16]}.partial"
        partial.mkdir(parents=True, exist_ok=True)
        for name, array in files.items():
            np.save(partial / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        (partial / "meta.json").write_text(json.dumps(meta, default=str), encoding="utf-8")
        if not folder.exists():
            partial.rename(folder)  # whole or absent: a second writer finds it done
    return folder, sha


def _read(folder: Path, name: str) -> Features | None:
    dense = folder / f"{name}.npy"
    if dense.is_file():  # mapped; a plain ndarray view of the map, as TensorFlow expects
        return np.asarray(np.load(dense, mmap_mode="r", allow_pickle=False))
    if not (folder / f"{name}.data.npy").is_file():
        return None
    import scipy.sparse

    parts = [
        np.asarray(np.load(folder / f"{name}.{p}.npy", mmap_mode="r")) for p in ("data", "indices")
    ]
    indptr = np.load(folder / f"{name}.indptr.npy")
    shape = tuple(int(n) for n in np.load(folder / f"{name}.shape.npy"))
    return scipy.sparse.csr_matrix((parts[0], parts[1], indptr), shape=shape)


OPTIONS = (
    Option("path", str, REQUIRED, "the folder write_arrays wrote, relative to the study file"),
    Option("task", str, "regression", "regression, binary or multiclass", one_of(*TASKS)),
    Option(
        "validation_fraction",
        float,
        0.0,
        "share of the training rows held out for validation (when none is given)",
        float_range(0.0, 0.5, high_open=True),
    ),
    Option("standardize", bool, False, "standardize dense features with the training statistics"),
    Option(
        "standardize_target",
        bool,
        False,
        "regression: centre and scale the target with the training mean and std",
    ),
    Option("seed", int, 0, "seed of the validation split"),
)


def _sequence(values: Sequence[Any] | None) -> list[Any]:
    return list(values) if values is not None else []


def load_arrays(options: Mapping[str, Any], context: DataContext) -> Dataset:
    """Load a folder written by :func:`write_arrays` (mapped, not copied)."""
    folder = resolve_user_path(options["path"], context)
    if not (folder / "meta.json").is_file():
        raise InputError(
            f"no arrays in {folder}: data.path={options['path']!r}; run the search from Python "
            "again (it writes them), or point data.path at the folder it wrote."
        )
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    task: Task = options["task"]
    x_train, y_train = _read(folder, "x_train"), np.load(folder / "y_train.npy")
    assert x_train is not None
    x_val, x_test = _read(folder, "x_val"), _read(folder, "x_test")
    y_val = np.load(folder / "y_val.npy") if x_val is not None else None
    y_test = np.load(folder / "y_test.npy") if x_test is not None else None
    fraction = options["validation_fraction"]
    if x_val is None and fraction > 0:
        if task == "regression":
            train, val, _ = random_split(len(y_train), fraction, 0.0, options["seed"])
        else:
            train, val, _ = stratified_split(y_train.reshape(-1), fraction, 0.0, options["seed"])
        train, val = np.sort(train), np.sort(val)
        x_val, y_val = x_train[val], y_train[val]
        x_train, y_train = x_train[train], y_train[train]
    reference: dict[str, Any] = {"features": _sequence(meta.get("features"))}
    if meta.get("classes"):
        reference["classes"] = meta["classes"]
    if options["standardize"] and isinstance(x_train, np.ndarray):
        x_train, (x_val, x_test), mean, std = standardize(x_train, x_val, x_test)
        reference.update(feature_mean=mean.tolist(), feature_std=std.tolist())
    if options["standardize_target"]:
        if task != "regression":
            raise InputError(
                f"standardize_target is for regression; a {task} target is class labels: "
                "leave it out."
            )
        y_train, (y_val, y_test), stats = standardized_target(y_train, y_val, y_test)
        reference.update(stats)
    n_val = 0 if x_val is None else x_val.shape[0]
    return Dataset(
        name="arrays",
        task=task,
        x_train=x_train,
        y_train=np.asarray(y_train),
        x_val=x_val,
        y_val=None if y_val is None else np.asarray(y_val),
        x_test=x_test,
        y_test=None if y_test is None else np.asarray(y_test),
        n_classes=max(2, len(meta.get("classes") or [])),
        description=f"in-memory arrays: {x_train.shape[0]} train / {n_val} validation rows, "
        f"{x_train.shape[1]} features ({task})",
        reference=reference,
    )


SOURCE = DataSource(
    name="arrays",
    summary="arrays handed to search.search() from Python, written once under the storage",
    options=OPTIONS,
    load=load_arrays,
)
