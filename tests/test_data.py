"""Data sources: shapes, dtypes, exact seed values, splits, the IMDB cache and error messages.

Tests on the real IMDB and Pima files use the offline copies beside the checkout and are skipped
where those are absent; every context is offline, so no test touches the network.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse

from search.data import (
    DATA_SOURCES,
    DataContext,
    Dataset,
    OptionError,
    imdb_cache_path,
    load_dataset,
    validate_data_options,
)
from search.data import _locate as locate_module
from search.data import imdb as imdb_module
from search.data._cache import load_npz, save_npz_atomic
from search.data.synthetic import (
    OVERFIT30_X_TEST,
    OVERFIT30_X_TRAIN,
    OVERFIT30_Y_TEST,
    OVERFIT30_Y_TRAIN,
)
from search.errors import DataError

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
EXAMPLE_CSV = ROOT / "spaces" / "examples" / "my_data.csv"


def context(cache_dir: Path, base_dir: Path = ROOT, data_dir: Path | None = None) -> DataContext:
    """An offline context; ``data_dir`` defaults to the shared offline copies when present."""
    if data_dir is None and SHARED_DATA.is_dir():
        data_dir = SHARED_DATA
    return DataContext(data_dir=data_dir, cache_dir=cache_dir, base_dir=base_dir, offline=True)


def needs_shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"offline copy {path} not found; the loader would download it when online")
    return path


@pytest.fixture(autouse=True)
def _empty_keras_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: Any) -> None:
    """Keep the loaders from finding files a developer downloaded into ~/.keras."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras_home")))


def assert_float32(dataset: Dataset) -> None:
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        value = getattr(dataset, name)
        if value is not None:
            assert value.dtype == np.float32, name


# --- registry and options ------------------------------------------------------------------


def test_registry_names() -> None:
    assert set(DATA_SOURCES) == {
        "imdb",
        "pima",
        "overfit30",
        "noisy_sine",
        "square",
        "collinear",
        "file",
        "arrays",
    }
    for name, source in DATA_SOURCES.items():
        assert source.name == name and source.summary and source.options


def test_validate_fills_defaults_and_converts() -> None:
    assert validate_data_options("imdb", {}) == {
        "num_words": 10000,
        "validation_size": 10000,
        "seed": 0,
        "path": "",
    }
    options = validate_data_options(
        "noisy_sine", {"source": "noisy_sine", "n_points": "500", "noise": 2, "seed": 3.0}
    )
    assert options == {"n_points": 500, "noise": 2.0, "validation_fraction": 0.2, "seed": 3}
    assert isinstance(options["noise"], float)
    assert validate_data_options("overfit30", {"standardize": "false"}) == {"standardize": False}


@pytest.mark.parametrize(
    ("source", "options", "key", "fragment"),
    [
        ("nope", {}, "source", "unknown data source 'nope'; known: imdb, pima"),
        ("imdb", {"foo": 1}, "foo", "unknown option 'foo'"),
        ("imdb", {"num_words": "abc"}, "num_words", "expected an integer, got 'abc'"),
        ("imdb", {"num_words": True}, "num_words", "expected an integer"),
        ("imdb", {"num_words": 50}, "num_words", "between 100 and 100000, got 50"),
        ("imdb", {"num_words": 1.5}, "num_words", "expected an integer, got 1.5"),
        ("pima", {"validation_fraction": 0.0}, "validation_fraction", "(0.0, 0.5], got 0.0"),
        ("pima", {"test_fraction": "x"}, "test_fraction", "expected a finite number"),
        ("noisy_sine", {"noise": -1}, "noise", "[0.0, inf), got -1.0"),
        ("overfit30", {"standardize": 1}, "standardize", "expected true or false, got 1"),
        ("square", {"low": 5, "high": 5}, "high", "must be greater than low"),
        ("file", {"target": "y"}, "path", "missing; source 'file' requires it"),
        ("file", {"path": "a.csv", "target": "y", "task": "x"}, "task", "one of regression"),
        ("file", {"path": "a.csv", "target": 3}, "target", "expected a string, got 3"),
        ("file", {"path": "a.csv", "target": "y", "features": [1]}, "features", "list of str"),
        ("file", {"path": "a.csv", "target": "y", "delimiter": ";;"}, "delimiter", "one char"),
    ],
)
def test_invalid_options(source: str, options: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(OptionError) as caught:
        validate_data_options(source, options)
    assert caught.value.key == key
    assert fragment in caught.value.problem
    assert str(caught.value) == f"{key}: {caught.value.problem}"
    assert "\n" not in str(caught.value)


def test_unknown_option_lists_known_ones() -> None:
    with pytest.raises(OptionError, match="known: n_points, noise, validation_fraction, seed"):
        load_dataset("noisy_sine", {"points": 5}, context(Path("/nonexistent")))


def test_import_does_not_load_tensorflow() -> None:
    code = (
        "import sys, search.data; sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


# --- synthetic sources ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "n_train", "n_val", "n_features"),
    [
        ("overfit30", 21, 9, 1),
        ("noisy_sine", 800, 200, 1),
        ("square", 8000, 2000, 1),
        ("collinear", 100000, None, 2),
    ],
)
def test_synthetic_defaults(
    tmp_path: Path, source: str, n_train: int, n_val: int | None, n_features: int
) -> None:
    dataset = load_dataset(source, {}, context(tmp_path))
    assert dataset.name == source and dataset.task == "regression"
    assert dataset.x_train.shape == (n_train, n_features)
    assert dataset.y_train.shape == (n_train, 1)
    if n_val is None:
        assert dataset.x_val is None and dataset.y_val is None
    else:
        assert dataset.x_val.shape == (n_val, n_features)
        assert dataset.y_val.shape == (n_val, 1)
    assert dataset.x_test is None
    assert dataset.description
    assert_float32(dataset)


def test_overfit30_is_exactly_seed_000(tmp_path: Path) -> None:
    raw = load_dataset("overfit30", {"standardize": False}, context(tmp_path))
    f32 = np.float32
    np.testing.assert_array_equal(raw.x_train[:, 0], np.array(OVERFIT30_X_TRAIN, f32))
    np.testing.assert_array_equal(raw.y_train[:, 0], np.array(OVERFIT30_Y_TRAIN, f32))
    np.testing.assert_array_equal(raw.x_val[:, 0], np.array(OVERFIT30_X_TEST, f32))
    np.testing.assert_array_equal(raw.y_val[:, 0], np.array(OVERFIT30_Y_TEST, f32))
    # Spot checks against the post's text, so a typo in the constants cannot hide.
    assert OVERFIT30_X_TRAIN[0] == 0.704619794270697 and OVERFIT30_X_TRAIN[-1] == 0.8045680821762038
    assert OVERFIT30_Y_TRAIN[8] == 0.37345286573743475 and OVERFIT30_X_TEST[6] == 1.0
    assert OVERFIT30_Y_TEST[-1] == 0.9989199241685126
    assert sorted(OVERFIT30_X_TRAIN + OVERFIT30_X_TEST)[0] == 0.6303124926673513

    scaled = load_dataset("overfit30", {}, context(tmp_path))
    assert abs(float(scaled.x_train.mean())) < 1e-6
    assert abs(float(scaled.x_train.std()) - 1.0) < 1e-5
    mean, std = scaled.reference["x_mean"], scaled.reference["x_std"]
    expected_val = (np.array(OVERFIT30_X_TEST) - mean) / std
    np.testing.assert_allclose(scaled.x_val[:, 0], expected_val, rtol=1e-6)
    np.testing.assert_array_equal(scaled.y_train, raw.y_train)
    assert "standardized" in scaled.description


def test_noisy_sine_matches_the_answer(tmp_path: Path) -> None:
    dataset = load_dataset("noisy_sine", {"validation_fraction": 0.0}, context(tmp_path))
    np.random.seed(7)  # The answer's own recipe.
    x = np.linspace(0.0, 2.0 * np.pi, 1000).reshape(-1, 1)
    y = 3 * np.sin(x) + np.random.normal(0, 1, 1000).reshape(-1, 1)
    np.testing.assert_array_equal(dataset.x_train, x.astype(np.float32))
    np.testing.assert_array_equal(dataset.y_train, y.astype(np.float32))
    assert dataset.x_val is None
    assert dataset.reference["irreducible_mse"] == 1.0

    split = load_dataset("noisy_sine", {"seed": 7}, context(tmp_path))
    rows = np.concatenate([split.x_train[:, 0], split.x_val[:, 0]])
    np.testing.assert_array_equal(np.sort(rows), x[:, 0].astype(np.float32))
    assert np.all(np.diff(split.x_train[:, 0]) > 0)  # Generation order kept.


def test_square_is_raw_with_last_fifth_as_validation(tmp_path: Path) -> None:
    dataset = load_dataset("square", {}, context(tmp_path))
    np.random.seed(0)
    x = np.random.random((10000, 1)) * 100 - 50  # The answer's own recipe.
    np.testing.assert_array_equal(dataset.x_train, x[:8000].astype(np.float32))
    np.testing.assert_array_equal(dataset.x_val, x[8000:].astype(np.float32))
    np.testing.assert_array_equal(dataset.y_val, (x[8000:] ** 2).astype(np.float32))
    assert dataset.y_train.max() > 2000  # Not rescaled.

    scaled = load_dataset("square", {"scale_target": True}, context(tmp_path))
    assert float(np.abs(scaled.y_train).max()) == pytest.approx(1.0)
    scale = scaled.reference["target_scale"]
    np.testing.assert_allclose(scaled.y_val * scale, dataset.y_val, rtol=1e-5)


def test_collinear_sorted_columns_are_nearly_equal(tmp_path: Path) -> None:
    dataset = load_dataset("collinear", {}, context(tmp_path))
    x = dataset.x_train
    assert float(np.mean(np.abs(x[:, 0] - x[:, 1]))) < 0.01
    assert np.all(np.diff(x[:, 0]) >= 0) and np.all(np.diff(x[:, 1]) >= 0)
    assert abs(float(x[:, 0].mean())) < 1e-4 and abs(float(x[:, 0].std()) - 1) < 1e-4
    np.testing.assert_allclose(dataset.y_train[:, 0], x.mean(axis=1), atol=1e-6)
    assert dataset.reference["lstsq_coefficients"] == pytest.approx([0.5, 0.5], abs=1e-4)


def test_collinear_shuffled_reference_is_half_half(tmp_path: Path) -> None:
    dataset = load_dataset(
        "collinear", {"shuffled": True, "validation_fraction": 0.1}, context(tmp_path)
    )
    assert dataset.x_train.shape == (90000, 2) and dataset.x_val.shape == (10000, 2)
    w1, w2 = dataset.reference["lstsq_coefficients"]
    assert abs(w1 - 0.5) < 1e-6 and abs(w2 - 0.5) < 1e-6
    assert abs(dataset.reference["lstsq_intercept"]) < 1e-6
    x = dataset.x_train
    assert float(np.mean(np.abs(x[:, 0] - x[:, 1]))) > 0.5
    assert abs(float(np.corrcoef(x[:, 0], x[:, 1])[0, 1])) < 0.02


def test_synthetic_is_deterministic(tmp_path: Path) -> None:
    first = load_dataset("noisy_sine", {"seed": 3}, context(tmp_path))
    second = load_dataset("noisy_sine", {"seed": 3}, context(tmp_path))
    other = load_dataset("noisy_sine", {"seed": 4}, context(tmp_path))
    np.testing.assert_array_equal(first.y_train, second.y_train)
    assert not np.array_equal(first.y_train, other.y_train)


# --- pima ----------------------------------------------------------------------------------


def test_pima_defaults_stratified_and_standardized(tmp_path: Path) -> None:
    needs_shared("pima-indians-diabetes.data.csv")
    dataset = load_dataset("pima", {}, context(tmp_path))
    assert dataset.task == "binary" and dataset.n_features == 8
    assert len(dataset.y_train) + len(dataset.y_val) == 768
    assert dataset.y_train.shape == (614, 1) and dataset.x_val.shape == (154, 8)
    assert dataset.x_test is None
    assert_float32(dataset)
    overall = 268 / 768
    assert float(dataset.y_train.mean()) == pytest.approx(overall, abs=0.005)
    assert float(dataset.y_val.mean()) == pytest.approx(overall, abs=0.01)
    np.testing.assert_allclose(dataset.x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(dataset.x_train.std(axis=0), 1.0, atol=1e-4)


def test_pima_three_way_split_from_path(tmp_path: Path) -> None:
    csv_file = needs_shared("pima-indians-diabetes.data.csv")
    options = {"path": str(csv_file), "test_fraction": 0.2, "seed": 5}
    dataset = load_dataset("pima", options, context(tmp_path, data_dir=tmp_path))
    sizes = [len(dataset.y_train), len(dataset.y_val), len(dataset.y_test)]
    assert sum(sizes) == 768 and sizes[1] == sizes[2] == 154
    for labels in (dataset.y_train, dataset.y_val, dataset.y_test):
        assert float(labels.mean()) == pytest.approx(268 / 768, abs=0.01)
    again = load_dataset("pima", options, context(tmp_path, data_dir=tmp_path))
    np.testing.assert_array_equal(dataset.x_test, again.x_test)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("1,2,3,4,5,6,7,8", "line 2: expected 9 comma-separated numbers"),
        ("1,2,3,abc,5,6,7,8,1", "line 2: 'abc' is not a number"),
        ("1,2,3,4,5,6,7,8,2", "line 2: class '2' is not 0 or 1"),
    ],
)
def test_pima_bad_file(tmp_path: Path, line: str, fragment: str) -> None:
    bad = tmp_path / "pima.csv"
    bad.write_text(f"6,148,72,35,0,33.6,0.627,50,1\n{line}\n", encoding="utf-8")
    with pytest.raises(DataError, match=fragment) as caught:
        load_dataset("pima", {"path": "pima.csv"}, context(tmp_path, base_dir=tmp_path))
    assert str(bad) in str(caught.value)


def test_pima_not_found_offline(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        load_dataset("pima", {}, context(tmp_path, data_dir=tmp_path))
    message = str(caught.value)
    assert "Pima data not found: looked in" in message
    assert str(tmp_path / "pima-indians-diabetes.data.csv") in message
    assert "download skipped (offline)" in message and "--data-dir" in message
    assert "\n" not in message


# --- imdb ----------------------------------------------------------------------------------


def write_reviews(root: Path, reviews: dict[str, dict[str, list[str]]]) -> Path:
    """Write a miniature ``aclImdb/`` folder: split -> label -> texts."""
    for split, labels in reviews.items():
        for label, texts in labels.items():
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for number, text in enumerate(texts):
                (folder / f"{number}_{7 if label == 'pos' else 2}.txt").write_text(text)
    return root / "aclImdb"


MINI = {
    "train": {
        "pos": ["Great great film!<br />Loved it", "A great cast", "Fun, fun and 'great'"],
        "neg": ["Bad film. Boring", "Boring, bad, BAD", "It's bad"],
    },
    "test": {"pos": ["great fun"], "neg": ["bad unknownword"]},
}


def test_tokenize() -> None:
    assert imdb_module.tokenize("It's 'great'!<br />Loved it ''' rock'n'roll 9/10") == [
        "it's",
        "great",
        "loved",
        "it",
        "rock'n'roll",
        "9",
        "10",
    ]
    assert imdb_module.tokenize("Café déjà-vu") == ["caf", "d", "j", "vu"]


def test_imdb_from_small_folder_and_archive(tmp_path: Path) -> None:
    folder = write_reviews(tmp_path / "data", MINI)
    options = {"num_words": 100, "validation_size": 2, "seed": 1}
    dataset = load_dataset("imdb", options, context(tmp_path / "cache", data_dir=folder.parent))
    # Counts over the 6 training reviews: bad 4, great 4, boring 2, film 2, fun 2, then ones;
    # ties are alphabetical.
    ctx = context(tmp_path / "cache", data_dir=folder.parent)
    cache = imdb_cache_path(validate_data_options("imdb", options), ctx)
    vocabulary = np.load(cache)["vocabulary"].tolist()
    assert vocabulary[:5] == ["bad", "great", "boring", "film", "fun"]
    assert "unknownword" not in vocabulary  # Test reviews do not shape the vocabulary.
    assert dataset.x_train.shape == (4, len(vocabulary)) and dataset.x_val.shape[0] == 2
    test_rows = {
        tuple(vocabulary[i] for i in dataset.x_test[row].indices): float(dataset.y_test[row, 0])
        for row in range(2)
    }
    assert test_rows == {("great", "fun"): 1.0, ("bad",): 0.0}

    # The same reviews as a .tar.gz give the same arrays (the archive is streamed, not extracted).
    archive = tmp_path / "archive" / "aclImdb_v1.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="aclImdb")
    from_tar = load_dataset(
        "imdb", {**options, "path": str(archive)}, context(tmp_path / "cache2", data_dir=tmp_path)
    )
    for name in ("x_train", "x_val", "x_test"):
        assert (getattr(from_tar, name) != getattr(dataset, name)).nnz == 0
    np.testing.assert_array_equal(from_tar.y_train, dataset.y_train)


def test_imdb_corrupt_cache_is_rebuilt(tmp_path: Path) -> None:
    folder = write_reviews(tmp_path / "data", MINI)
    ctx = context(tmp_path / "cache", data_dir=folder.parent)
    options = {"num_words": 100, "validation_size": 2}
    first = load_dataset("imdb", options, ctx)
    cache = imdb_cache_path(validate_data_options("imdb", options), ctx)
    cache.write_bytes(b"not a zip file")
    again = load_dataset("imdb", options, ctx)
    assert (again.x_train != first.x_train).nnz == 0
    assert load_npz(cache) is not None
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # No temporary files left.


def test_imdb_not_found_offline(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        load_dataset("imdb", {}, context(tmp_path, data_dir=tmp_path))
    message = str(caught.value)
    assert message.startswith("IMDB data not found: looked in ")
    assert str(tmp_path / "aclImdb_v1.tar.gz") in message
    assert "download skipped (offline)" in message
    assert "CAPSEARCH_DATA" in message and "\n" not in message


def test_imdb_download_failure_is_a_data_error(tmp_path: Path, monkeypatch: Any) -> None:
    def fail(fname: str, origin: str) -> Path:
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3]\nno network")

    monkeypatch.setattr(locate_module, "download", fail)
    online = DataContext(data_dir=tmp_path, cache_dir=tmp_path, base_dir=tmp_path, offline=False)
    with pytest.raises(DataError) as caught:
        load_dataset("imdb", {}, online)
    message = str(caught.value)
    assert "IMDB data not found: looked in" in message and "\n" not in message
    assert f"download from {imdb_module.ORIGIN} failed (URL fetch failure" in message


def test_imdb_bad_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data.path='missing.tar.gz'"):
        load_dataset("imdb", {"path": "missing.tar.gz"}, context(tmp_path, base_dir=tmp_path))
    (tmp_path / "broken.tar.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match="cannot read IMDB data"):
        load_dataset("imdb", {"path": "broken.tar.gz"}, context(tmp_path, base_dir=tmp_path))


@pytest.fixture(scope="module")
def imdb_real(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, DataContext, float]:
    """The real IMDB data, vectorized once into a cache shared by this module's tests."""
    needs_shared("aclImdb_labeled.tar.gz")
    ctx = context(tmp_path_factory.mktemp("imdb_cache"), data_dir=SHARED_DATA)
    started = time.perf_counter()
    dataset = load_dataset("imdb", {}, ctx)
    return dataset, ctx, time.perf_counter() - started


def test_imdb_real_splits(imdb_real: tuple[Dataset, DataContext, float]) -> None:
    dataset, _, _ = imdb_real
    assert dataset.task == "binary" and dataset.n_classes == 2
    assert dataset.is_sparse and dataset.n_features == 10000
    for x, y, rows in [
        (dataset.x_train, dataset.y_train, 15000),
        (dataset.x_val, dataset.y_val, 10000),
        (dataset.x_test, dataset.y_test, 25000),
    ]:
        assert isinstance(x, scipy.sparse.csr_matrix)
        assert x.shape == (rows, 10000) and x.dtype == np.float32 and x.has_sorted_indices
        assert np.all(x.data == 1.0)
        assert y.shape == (rows, 1) and y.dtype == np.float32
        assert set(np.unique(y).tolist()) == {0.0, 1.0}
        assert x.getnnz(axis=1).min() > 0  # Every review has a known word.
    assert float(dataset.y_test.sum()) == 12500.0
    assert float(dataset.y_train.sum() + dataset.y_val.sum()) == 12500.0
    assert 0.45 < float(dataset.y_train.mean()) < 0.55
    assert dataset.description == (
        "IMDB reviews, multi-hot over 10000 words: 15000 train / 10000 validation / 25000 test"
    )


def test_imdb_real_second_load_hits_cache(imdb_real: tuple[Dataset, DataContext, float]) -> None:
    dataset, ctx, first_seconds = imdb_real
    cache = imdb_cache_path(validate_data_options("imdb", {}), ctx)
    assert cache.is_file() and cache.parent == ctx.cache_dir / "imdb"
    written = cache.stat().st_mtime_ns
    started = time.perf_counter()
    again = load_dataset("imdb", {}, ctx)
    seconds = time.perf_counter() - started
    assert seconds < 2.0 and seconds < first_seconds / 5
    assert cache.stat().st_mtime_ns == written
    assert (again.x_train != dataset.x_train).nnz == 0
    np.testing.assert_array_equal(again.y_val, dataset.y_val)
    other_seed = imdb_cache_path(validate_data_options("imdb", {"seed": 1}), ctx)
    assert other_seed != cache


def test_imdb_real_common_words(imdb_real: tuple[Dataset, DataContext, float]) -> None:
    _, ctx, _ = imdb_real
    vocabulary = np.load(imdb_cache_path(validate_data_options("imdb", {}), ctx))["vocabulary"]
    assert list(vocabulary[:5]) == ["the", "and", "a", "of", "to"]
    assert "movie" in vocabulary[:20] and "br" not in vocabulary


# --- file ----------------------------------------------------------------------------------


def test_file_example_csv(tmp_path: Path) -> None:
    assert EXAMPLE_CSV.stat().st_size < 20_000
    # As a study file in spaces/ names it: relative to the study file's folder.
    ctx = context(tmp_path, base_dir=ROOT / "spaces")
    options = {"path": "examples/my_data.csv", "features": ["x1", "x2", "x3"], "target": "y"}
    dataset = load_dataset("file", options, ctx)
    assert dataset.task == "regression"
    assert dataset.x_train.shape == (160, 3) and dataset.x_val.shape == (40, 3)
    assert dataset.y_train.shape == (160, 1) and dataset.x_test is None
    assert_float32(dataset)
    np.testing.assert_allclose(dataset.x_train.mean(axis=0), 0.0, atol=1e-5)
    raw = load_dataset("file", {**options, "standardize": False}, ctx)
    table = np.loadtxt(EXAMPLE_CSV, delimiter=",", skiprows=1, dtype=np.float32)
    rows = {tuple(row) for row in table.tolist()}
    loaded = zip(raw.x_train.tolist(), raw.y_train.tolist(), strict=True)
    assert {(*x, y[0]) for x, y in loaded} <= rows


def test_file_csv_classes(tmp_path: Path) -> None:
    lines = ["a;b;kind"] + [f"{i};{i % 7};{['cat', 'dog', 'emu'][i % 3]}" for i in range(60)]
    (tmp_path / "animals.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    base = {"path": "animals.csv", "features": ["a", "b"], "target": "kind", "delimiter": ";"}
    ctx = context(tmp_path, base_dir=tmp_path)
    multi = load_dataset("file", {**base, "task": "multiclass", "test_fraction": 0.2}, ctx)
    assert multi.n_classes == 3 and multi.reference["classes"] == ["cat", "dog", "emu"]
    assert multi.y_train.dtype == np.int64 and multi.y_train.shape == (36,)
    assert np.bincount(multi.y_val).tolist() == [4, 4, 4]  # Stratified.
    with pytest.raises(DataError, match="binary task needs exactly 2 target values, found 3"):
        load_dataset("file", {**base, "task": "binary"}, ctx)


def test_a_split_that_leaves_no_validation_row_is_refused(tmp_path: Path) -> None:
    """Before: the study ran, every trial was pruned ("val_loss became None"), exit 0."""
    ctx = context(tmp_path, base_dir=tmp_path)
    (tmp_path / "two.csv").write_text("x,y\n1,2\n3,4\n", encoding="utf-8")
    with pytest.raises(DataError, match="2 rows leave no validation row at validation_fraction"):
        load_dataset("file", {"path": "two.csv", "target": "y"}, ctx)
    # A float target read as classes: one-member classes never reach the validation rows.
    rows = "\n".join(f"{i},{i * 0.37:.3f}" for i in range(40))
    (tmp_path / "float.csv").write_text(f"x,y\n{rows}\n", encoding="utf-8")
    with pytest.raises(DataError, match='40 classes over 40 rows.*use task = "regression"'):
        load_dataset("file", {"path": "float.csv", "target": "y", "task": "multiclass"}, ctx)


def test_a_csv_without_a_header_or_with_a_repeated_name_says_so(tmp_path: Path) -> None:
    """Before: a headerless file listed its first row as "the columns"; ``a,a,y`` was read."""
    ctx = context(tmp_path, base_dir=tmp_path)
    (tmp_path / "bare.csv").write_text("0.5,1.25,3\n0.1,2.0,4\n", encoding="utf-8")
    with pytest.raises(DataError, match="the file has no header row; add one"):
        load_dataset("file", {"path": "bare.csv", "target": "y"}, ctx)
    (tmp_path / "twice.csv").write_text("a,a,y\n1,2,3\n4,5,6\n", encoding="utf-8")
    with pytest.raises(DataError, match="names 'a' more than once"):
        load_dataset("file", {"path": "twice.csv", "target": "y"}, ctx)


def test_file_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3))
    label = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "data.npz", x=x, extra=x[:, 0] * 2, label=label)
    ctx = context(tmp_path, base_dir=tmp_path)
    dataset = load_dataset(
        "file", {"path": "data.npz", "features": ["x"], "target": "label", "task": "binary"}, ctx
    )
    assert dataset.task == "binary" and dataset.x_train.shape == (80, 3)
    assert dataset.y_train.shape == (80, 1) and dataset.y_train.dtype == np.float32
    every = load_dataset("file", {"path": "data.npz", "target": "label"}, ctx)
    assert every.n_features == 4 and every.reference["features"] == ["x", "extra"]


@pytest.mark.parametrize(
    ("content", "options", "fragment"),
    [
        (None, {}, "data file not found: data.path='data.csv'"),
        (
            "x1,x2,y\n1,2,3\n",
            {"features": ["x1", "x9"]},
            "no column 'x9'; the columns are x1, x2, y",
        ),
        ("x1,x2,y\n1,2,3\n", {"target": "z"}, "no column 'z'"),
        (
            "x1,x2,y\n1,2,3\n4,oops,6\n",
            {},
            "line 3, column 'x2': 'oops' is not a number; fix or remove that row, or, for a "
            "column of categories, encode it as numbers (one 0/1 column per category) or leave "
            "it out of data.features.",
        ),
        (
            "x1,x2,y\n1,2,3\n4,,6\n",
            {},
            "line 3, column 'x2': the cell is empty (a missing value); fill it in or remove "
            "that row.",
        ),
        (
            "x1,x2,y\n1,2,cat\n",
            {},
            "line 2, column 'y': 'cat' is not a number; fix or remove that row, or, for class "
            'labels, set data.task to "binary" or "multiclass".',
        ),
        ("x1,x2,y\n1,2,3\n4,5,nan\n", {}, "line 3, column 'y': 'nan' is not a finite number"),
        ("x1,x2,y\n1,2,3\n4,5\n", {}, "line 3: 2 cells but the header has 3"),
        ("y\n3\n", {"features": []}, "the only column is the target 'y'; add feature columns"),
        ("", {}, "is empty"),
    ],
)
def test_file_bad_csv(
    tmp_path: Path, content: str | None, options: dict[str, Any], fragment: str
) -> None:
    if content is not None:
        (tmp_path / "data.csv").write_text(content, encoding="utf-8")
    given = {"path": "data.csv", "features": ["x1", "x2"], "target": "y", **options}
    with pytest.raises(DataError) as caught:
        load_dataset("file", given, context(tmp_path, base_dir=tmp_path))
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def test_file_bad_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((5, 2)), y=np.zeros(4))
    ctx = context(tmp_path, base_dir=tmp_path)
    with pytest.raises(DataError, match="no array 'z'; the arrays are x, y"):
        load_dataset("file", {"path": "d.npz", "features": ["z"], "target": "y"}, ctx)
    with pytest.raises(DataError, match="array 'x' has 5 rows but 'y' has 4"):
        load_dataset("file", {"path": "d.npz", "features": ["x"], "target": "y"}, ctx)


# --- cache helper --------------------------------------------------------------------------


def test_save_npz_atomic_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.npz"
    save_npz_atomic(target, {"v": np.arange(3)})
    save_npz_atomic(target, {"v": np.arange(4)})
    assert load_npz(target)["v"].tolist() == [0, 1, 2, 3]
    assert [p.name for p in target.parent.iterdir()] == ["a.npz"]
    assert load_npz(tmp_path / "missing.npz") is None
    buffer = io.BytesIO()
    np.savez(buffer, v=np.arange(2))
    (tmp_path / "cut.npz").write_bytes(buffer.getvalue()[:40])
    assert load_npz(tmp_path / "cut.npz") is None
