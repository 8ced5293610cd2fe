"""The ``file`` source: a user's own table, as a CSV with a header row or a NumPy ``.npz``.

For a CSV, ``features`` names the feature columns and ``target`` the label column. For an NPZ,
``features`` names arrays, each one feature of shape ``(n,)`` or several of shape ``(n, k)``,
and ``target`` names the label array. ``features`` left out (or empty) takes every column or
array but the target; a target that is also among ``features`` is refused. Rows are split at
random (by class for classification tasks) and the features are standardized with the training
split's statistics; the target is never rescaled.
"""

from __future__ import annotations

import csv
import math
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from search.data._dataset import DataContext, Dataset, DataSource, Option, Task
from search.data._locate import resolve_user_path
from search.data._options import REQUIRED, float_range, one_of
from search.data._split import (
    random_split,
    standardize,
    standardized_target,
    stratified_split,
    take,
)
from search.errors import DataError, OptionError, one_line

TASKS = ("regression", "binary", "multiclass")


def _one_character(value: str) -> str | None:
    if len(value) != 1:
        return f"must be one character, got {value!r}; use e.g. ',' or ';' or '\\t'"
    return None


def _names(values: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "") or "none"


OPTIONS = (
    Option("path", str, REQUIRED, "a .csv or .npz file, relative to the study file's folder"),
    Option(
        "features",
        list,
        [],
        "feature columns (CSV) or arrays (NPZ); empty: every column or array but the target",
    ),
    Option("target", str, REQUIRED, "the column or array to predict"),
    Option("task", str, "regression", "regression, binary or multiclass", one_of(*TASKS)),
    Option(
        "validation_fraction",
        float,
        0.2,
        "share of rows held out for validation",
        float_range(0.0, 0.5),
    ),
    Option(
        "test_fraction",
        float,
        0.0,
        "share of rows held out for the final test",
        float_range(0.0, 0.5, high_open=True),
    ),
    Option("standardize", bool, True, "standardize features with the training mean and std"),
    Option(
        "standardize_target",
        bool,
        False,
        "regression: centre and scale the target with the training mean and std",
    ),
    Option("seed", int, 0, "seed of the split"),
    Option("delimiter", str, ",", "CSV cell separator", _one_character),
)


def _number(cell: str, where: str, *, target: bool = False) -> float:
    """A CSV cell as a finite float, or a one-line error naming the cell and the way out."""
    if not cell.strip():
        raise DataError(
            f"{where}: the cell is empty (a missing value); fill it in or remove that row."
        )
    try:
        value = float(cell)
    except ValueError:
        fix = (
            'fix or remove that row, or, for class labels, set data.task to "binary" or '
            '"multiclass"'
            if target
            else "fix or remove that row, or, for a column of categories, encode it as numbers "
            "(one 0/1 column per category) or leave it out of data.features"
        )
        raise DataError(f"{where}: {cell!r} is not a number; {fix}.") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {cell!r} is not a finite number; fix or remove that row.")
    return value


def read_csv(
    path: Path, features: Sequence[str], target: str, delimiter: str, numeric_target: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Read the feature columns as numbers and the target column as numbers or text.

    Args:
        path: The CSV file; its first row names the columns.
        features: Names of the feature columns.
        target: Name of the target column.
        delimiter: The cell separator.
        numeric_target: Whether the target must be a number (regression) or may be any label.

    Returns:
        ``(x, y)``: float64 features of shape ``(n, len(features))`` and the target column, as
        float64 when ``numeric_target`` and as strings otherwise.

    Raises:
        DataError: The file is empty, lacks a column, or a row is short or not numeric; the
            message names the file, the line and the column.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = [name.strip() for name in next(reader, [])]
            if not header:
                raise DataError(f"{path} is empty; a CSV needs a header row, then one row a line.")
            repeated = sorted({name for name in header if header.count(name) > 1})
            if repeated:  # a name would pick one of its columns, silently
                raise DataError(
                    f"{path}: the header names {', '.join(map(repr, repeated))} more than once; "
                    "give every "
                    "column its own name."
                )
            if not features:  # every column but the target, as for an NPZ
                features = [name for name in header if name != target]
                if not features:
                    raise DataError(
                        f"{path}: the only column is the target {target!r}; add feature columns."
                    )
            missing = [name for name in (*features, target) if name not in header]
            if missing:
                if all(_is_number(name) for name in header):  # the first row is data
                    raise DataError(
                        f"{path}: no column {missing[0]!r}, and the first row "
                        f"({_names(header)}) is numbers: the file has no header row; add one "
                        "naming the columns."
                    )
                raise DataError(
                    f"{path}: no column {missing[0]!r}; the columns are {_names(header)}. "
                    "Fix data.features or data.target."
                )
            columns = [header.index(name) for name in features]
            target_column = header.index(target)
            rows: list[list[float]] = []
            targets: list[Any] = []
            for line, cells in enumerate(reader, start=2):
                if not cells or all(not cell.strip() for cell in cells):
                    continue
                if len(cells) != len(header):
                    raise DataError(
                        f"{path}, line {line}: {len(cells)} cells but the header has "
                        f"{len(header)}; check the delimiter ({delimiter!r}) and that row."
                    )
                rows.append(
                    [
                        _number(cells[i], f"{path}, line {line}, column {header[i]!r}")
                        for i in columns
                    ]
                )
                cell = cells[target_column].strip()
                where = f"{path}, line {line}, column {target!r}"
                if not cell:
                    raise DataError(f"{where}: the target is empty; fill in or remove that row.")
                targets.append(_number(cell, where, target=True) if numeric_target else cell)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"cannot read {path}: {one_line(error)}") from error
    if not rows:
        raise DataError(f"{path} has a header but no rows.")
    return np.array(rows, dtype=np.float64), np.array(targets)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def csv_feature_names(
    path: Path, features: Sequence[str], target: str, delimiter: str
) -> list[str]:
    """The feature columns :func:`read_csv` reads: ``features``, or every column but the target."""
    if features:
        return list(features)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        header = [name.strip() for name in next(csv.reader(handle, delimiter=delimiter), [])]
    return [name for name in header if name != target]


def check_file(options: Mapping[str, Any]) -> None:
    """Checks of the ``file`` source that involve several options (run when a study loads).

    Raises:
        OptionError: ``target`` is also among ``features`` (the model would train on its label),
            or ``standardize_target`` is set for class labels.

    Example:
        >>> try:
        ...     check_file({"features": ["x1", "y"], "target": "y"})
        ... except OptionError as exc:
        ...     print(exc.problem[:38])
        the target 'y' is also a feature, so t
    """
    if options["target"] in options["features"]:
        target = options["target"]
        raise OptionError(
            "features",
            f"the target {target!r} is also a feature, so the model would see its label; "
            f"remove {target!r} from data.features",
        )
    if options.get("standardize_target") and options.get("task", "regression") != "regression":
        raise OptionError(
            "standardize_target",
            f"standardize_target = true is for regression, and a {options['task']} target is "
            'class labels; remove it, or set task = "regression" for a numeric target',
        )


def read_npz(
    path: Path, features: Sequence[str], target: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read feature arrays (columns side by side) and the target array from an ``.npz``.

    Returns:
        ``(x, y, names)``: float64 features of shape ``(n, n_features)``, the target of shape
        ``(n,)`` and the names of the feature arrays used.

    Raises:
        DataError: The file is unreadable, an array is missing, not numeric, of another length
            or holds NaN or infinity.
    """
    if path.is_file() and not zipfile.is_zipfile(path):  # numpy would offer to unpickle it
        raise DataError(
            f"{path} is not a .npz archive; write one with numpy.savez(path, x=..., y=...), or "
            "give a .csv file."
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as error:  # an object array inside: never unpickled
        raise DataError(
            f"{path} holds an array of Python objects, which is not loaded (it would run "
            "pickled code); save numeric arrays (numpy.savez with float or int arrays)."
        ) from error
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"cannot read {path} as .npz: {one_line(error)}") from error
    names = list(features) or [name for name in arrays if name != target]
    missing = [name for name in (*names, target) if name not in arrays]
    if missing or not names:
        raise DataError(
            f"{path}: no array {missing[0] if missing else 'for the features'!r}; the arrays are "
            f"{_names(list(arrays))}. Fix data.features or data.target."
        )
    n = len(arrays[target])
    parts: list[np.ndarray] = []
    for name in (*names, target):
        array = arrays[name]
        if array.ndim not in (1, 2) or (name == target and array.ndim == 2 and array.shape[1] != 1):
            raise DataError(
                f"{path}: array {name!r} has shape {array.shape}; features need (n,) or (n, k), "
                "the target (n,) or (n, 1)."
            )
        if len(array) != n:
            raise DataError(f"{path}: array {name!r} has {len(array)} rows but {target!r} has {n}.")
        if name != target or array.dtype.kind in "biuf":
            if array.dtype.kind not in "biuf":
                raise DataError(f"{path}: array {name!r} is {array.dtype}, not numbers.")
            bad = np.flatnonzero(~np.isfinite(array.astype(np.float64)).reshape(n, -1).all(axis=1))
            if len(bad):
                raise DataError(f"{path}: array {name!r} has NaN or infinity in row {bad[0]}.")
        if name != target:
            parts.append(array.reshape(n, -1).astype(np.float64))
    return np.concatenate(parts, axis=1), arrays[target].reshape(n), names


def _encode_classes(values: np.ndarray, task: Task, where: str) -> tuple[np.ndarray, list[Any]]:
    """Map class values to 0..K-1 in sorted order (numerically when they are all numbers)."""
    try:
        numeric = values.astype(np.float64)
        classes, codes = np.unique(numeric, return_inverse=True)
        names: list[Any] = [int(c) if float(c).is_integer() else float(c) for c in classes]
    except ValueError:
        text = values.astype(str)
        classes, codes = np.unique(text, return_inverse=True)
        names = [str(c) for c in classes]
    if task == "binary" and len(classes) != 2:
        raise DataError(
            f"{where}: a binary task needs exactly 2 target values, found {len(classes)} "
            f'({_names([str(name) for name in names], 10)}); use task = "multiclass" or '
            "another target."
        )
    if len(classes) < 2:
        raise DataError(f"{where}: the target has a single value {names[0]!r}; nothing to learn.")
    return codes.reshape(-1), names


def load_file(options: Mapping[str, Any], context: DataContext) -> Dataset:
    """Load a user's CSV or NPZ file, split it and standardize its features.

    Args:
        options: Validated options of the ``file`` source.
        context: ``base_dir`` resolves a relative ``path``.

    Returns:
        A data set of the requested task: float32 ``y`` of shape ``(n, 1)`` for regression and
        binary tasks (binary classes become 0 and 1 in sorted order), int64 class indices of
        shape ``(n,)`` for multiclass ones.
    """
    path = resolve_user_path(options["path"], context)
    if not path.is_file():
        raise DataError(
            f"data file not found: data.path={options['path']!r} ({path.resolve()}); the path "
            f"is relative to the study file's folder ({context.base_dir.resolve()})."
        )
    target, task = options["target"], options["task"]
    if path.suffix.lower() == ".npz":
        x, raw_y, feature_names = read_npz(path, options["features"], target)
    else:
        numeric = task == "regression"
        x, raw_y = read_csv(path, options["features"], target, options["delimiter"], numeric)
        feature_names = csv_feature_names(path, options["features"], target, options["delimiter"])
    classes: list[Any] = []
    if task == "regression":
        if raw_y.dtype.kind not in "biuf":
            raise DataError(f"{path}: target {target!r} is {raw_y.dtype}, not numbers.")
        y = raw_y.astype(np.float64)
    else:
        y, classes = _encode_classes(raw_y, task, f"{path}, target {target!r}")
    fractions = options["validation_fraction"], options["test_fraction"]
    if task == "regression":
        train, val, test = random_split(len(y), *fractions, options["seed"])
    else:
        train, val, test = stratified_split(y, *fractions, options["seed"])
    if len(train) == 0:
        raise DataError(f"{path} has {len(y)} rows: too few to split; give it more rows.")
    if options["validation_fraction"] > 0 and len(val) == 0:  # else every trial is pruned
        many = (
            f" (the target has {len(classes)} classes over {len(y)} rows, most too small to "
            'split: if it is a number, use task = "regression")'
            if classes and len(classes) > len(y) / 4
            else ""
        )
        raise DataError(
            f"{path}: {len(y)} rows leave no validation row at validation_fraction = "
            f"{options['validation_fraction']:g}{many}; give it more rows or raise "
            "data.validation_fraction."
        )
    x_train, (x_val, x_test) = x[train], [take(x, val), take(x, test)]
    reference: dict[str, Any] = {"features": feature_names, "target": target}
    if options["standardize"]:
        x_train, (x_val, x_test), mean, std = standardize(x_train, x_val, x_test)
        reference.update(feature_mean=mean.tolist(), feature_std=std.tolist())
    labels = y.astype(np.int64) if task == "multiclass" else y.astype(np.float32).reshape(-1, 1)
    y_train, y_val, y_test = labels[train], take(labels, val), take(labels, test)
    if options["standardize_target"]:
        y_train, (y_val, y_test), stats = standardized_target(y_train, y_val, y_test)
        reference.update(stats)
    if classes:
        reference["classes"] = classes
    return Dataset(
        name="file",
        task=task,
        x_train=np.asarray(x_train, dtype=np.float32),
        y_train=y_train,
        x_val=None if x_val is None else np.asarray(x_val, dtype=np.float32),
        y_val=y_val,
        x_test=None if x_test is None else np.asarray(x_test, dtype=np.float32),
        y_test=y_test,
        n_classes=len(classes) if classes else 2,
        description=(
            f"{path.name}: {x.shape[1]} features, target {target!r} ({task}): {len(train)} "
            f"train / {len(val)} validation / {len(test)} test"
            + (", features standardized" if options["standardize"] else "")
            + (", target standardized" if options["standardize_target"] else "")
        ),
        reference=reference,
    )


SOURCE = DataSource(
    name="file",
    summary="your own CSV (with a header row) or .npz file",
    options=OPTIONS,
    load=load_file,
)
