"""The Pima source: the Pima Indians diabetes table (768 patients, 8 measurements, 0/1 onset)."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from search.data._dataset import DataContext, Dataset, DataSource, Option
from search.data._locate import find_or_fetch, keras_datasets_dir, resolve_user_path
from search.data._options import float_range
from search.data._split import standardize, stratified_split, take
from search.errors import DataError

FILE_NAME = "pima-indians-diabetes.data.csv"
ALSO_ACCEPTED = ("pima-indians-diabetes.csv",)
ORIGIN = (
    "https://raw.githubusercontent.com/jbrownlee/Datasets/master/pima-indians-diabetes.data.csv"
)
FEATURES = (
    "pregnancies",
    "glucose",
    "blood_pressure",
    "skin_thickness",
    "insulin",
    "bmi",
    "diabetes_pedigree",
    "age",
)
_HINT = (
    f"Pass --data-dir DIR or set CAPSEARCH_DATA to a folder holding {FILE_NAME}, "
    "or set data.path to the file."
)

OPTIONS = (
    Option("path", str, "", "the CSV file; empty: search the usual places"),
    Option(
        "validation_fraction",
        float,
        0.2,
        "share of each class held out for validation",
        float_range(0.0, 0.5, low_open=True),
    ),
    Option(
        "test_fraction",
        float,
        0.0,
        "share of each class held out for the final test",
        float_range(0.0, 0.5, high_open=True),
    ),
    Option("seed", int, 0, "seed of the stratified split"),
)


def find_pima(options: Mapping[str, Any], context: DataContext) -> Path:
    """Locate the CSV: ``path`` option, data folder, Keras cache, then a download.

    Raises:
        DataError: Nothing found (and the download skipped or failed).
    """
    if options["path"]:
        path = resolve_user_path(options["path"], context)
        if not path.is_file():
            raise DataError(
                f"Pima data not found at data.path={options['path']!r} ({path}): no such file. "
                f"Point data.path at {FILE_NAME}."
            )
        return path
    candidates: list[Path] = []
    if context.data_dir is not None:
        candidates += [context.data_dir / name for name in (FILE_NAME, *ALSO_ACCEPTED)]
    candidates.append(keras_datasets_dir() / FILE_NAME)
    return find_or_fetch(
        "Pima data",
        candidates,
        fname=FILE_NAME,
        origin=ORIGIN,
        context=context,
        hint=_HINT,
        accept=Path.is_file,
    )


def read_pima(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the headerless CSV: 8 numeric features, then the 0/1 class.

    Returns:
        ``(x, y)``: float64 features of shape ``(n, 8)`` and 0/1 labels of shape ``(n,)``.

    Raises:
        DataError: A line does not have 9 numbers or the class is not 0 or 1; the message names
            the file and the line.
    """
    rows: list[list[float]] = []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            for line_number, cells in enumerate(csv.reader(handle), start=1):
                if not cells or all(not cell.strip() for cell in cells):
                    continue
                if len(cells) != 9:
                    raise DataError(
                        f"{path}, line {line_number}: expected 9 comma-separated numbers "
                        f"(8 features, then the 0/1 class), got {len(cells)} cells; use the "
                        f"original {FILE_NAME}."
                    )
                try:
                    row = [float(cell) for cell in cells]
                except ValueError:
                    bad = next(cell for cell in cells if not _is_number(cell))
                    raise DataError(
                        f"{path}, line {line_number}: {bad!r} is not a number; the file has no "
                        "header and only numbers."
                    ) from None
                if row[8] not in (0.0, 1.0):
                    raise DataError(
                        f"{path}, line {line_number}: class {cells[8]!r} is not 0 or 1."
                    )
                rows.append(row)
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read Pima data {path}: {error}") from error
    if not rows:
        raise DataError(f"{path} holds no rows; use the original {FILE_NAME}.")
    table = np.array(rows, dtype=np.float64)
    return table[:, :8], table[:, 8]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_pima(options: Mapping[str, Any], context: DataContext) -> Dataset:
    """Load the Pima table, split it by class and standardize it with the training statistics.

    Args:
        options: Validated options of the ``pima`` source.
        context: Where to look for the file.

    Returns:
        A binary data set with 8 standardized features.
    """
    x, y = read_pima(find_pima(options, context))
    train, val, test = stratified_split(
        y, options["validation_fraction"], options["test_fraction"], options["seed"]
    )
    if len(train) == 0 or len(val) == 0:
        raise DataError(f"Pima data has only {len(y)} rows: too few to split.")
    x_train, (x_val, x_test), mean, std = standardize(x[train], x[val], take(x, test))
    labels = y.astype(np.float32).reshape(-1, 1)
    dataset = Dataset(
        name="pima",
        task="binary",
        x_train=x_train,
        y_train=labels[train],
        x_val=x_val,
        y_val=labels[val],
        x_test=x_test,
        y_test=take(labels, test),
        n_classes=2,
        reference={
            "features": list(FEATURES),
            "feature_mean": mean.tolist(),
            "feature_std": std.tolist(),
            "positive_rate": float(y.mean()),
        },
    )
    dataset.description = (
        f"Pima Indians diabetes, 8 features standardized with the training split: {len(train)} "
        f"train / {len(val)} validation / {len(test)} test, stratified ({y.mean():.0%} positive)"
    )
    return dataset


SOURCE = DataSource(
    name="pima",
    summary="Pima Indians diabetes: 768 patients, 8 measurements, 0/1 diabetes onset",
    options=OPTIONS,
    load=load_pima,
)
