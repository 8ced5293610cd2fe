"""The IMDB source: the Large Movie Review Dataset as multi-hot rows over the commonest words.

Reviews are read from an ``aclImdb/`` folder or streamed from its ``.tar.gz`` (never extracted),
tokenized, and turned into the Keras book's ``vectorize_sequences`` rows: one float32 0/1 column
per vocabulary word. The matrix is a ``scipy.sparse.csr_matrix`` (a dense 50,000 x 10,000 one
would take 2 GB). Vectorizing takes a while, so the result is cached under
``context.cache_dir/imdb`` and later loads only read that file.
"""

from __future__ import annotations

import logging
import re
import tarfile
import time
import zlib
from array import array
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search.data._cache import cache_key, file_identity, load_npz, save_npz_atomic
from search.data._dataset import DataContext, Dataset, DataSource, Option
from search.data._locate import find_or_fetch, keras_datasets_dir, resolve_user_path
from search.data._options import int_range
from search.errors import DataError, one_line

if TYPE_CHECKING:
    import scipy.sparse

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Bump when the tokenizer or the cache layout changes, so old caches are not reused."""

ORIGIN = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
ARCHIVE_NAMES = ("aclImdb_v1.tar.gz", "aclImdb_labeled.tar.gz")
SPLITS = ("train", "test")
LABELS = ("neg", "pos")  # Index in this tuple is the label: 1 = positive.

_MEMBER = re.compile(r"(?:^|/)aclImdb/(train|test)/(neg|pos)/(\d+)_\d+\.txt$")
_HINT = (
    "Pass --data-dir DIR or set CAPSEARCH_DATA to a folder holding aclImdb/ or "
    "aclImdb_v1.tar.gz, or set data.path to either."
)
# Every byte that cannot be part of a word becomes a space: the effect of
# re.findall(r"[a-z0-9']+") on lower-cased text, at C speed (non-ASCII bytes separate words).
_WORD_BYTES = set(b"abcdefghijklmnopqrstuvwxyz0123456789'")
_TABLE = bytes(byte if byte in _WORD_BYTES else 0x20 for byte in range(256))

OPTIONS = (
    Option("num_words", int, 10000, "vocabulary size: the commonest words", int_range(100, 100000)),
    Option(
        "validation_size",
        int,
        10000,
        "training reviews held out for validation after a seeded shuffle",
        int_range(0, 24000),
    ),
    Option("seed", int, 0, "seed of the shuffle that picks the validation reviews"),
    Option(
        "path", str, "", "an aclImdb/ folder or a .tar.gz of it; empty: look in the usual places"
    ),
)


def tokenize(text: str) -> list[str]:
    """Split a review into words: lower-cased, ``<br />`` dropped, apostrophes trimmed.

    Example:
        >>> tokenize("It's 'great'!<br />Loved it")
        ["it's", 'great', 'loved', 'it']
    """
    return [word.decode("utf-8") for word in _tokenize_bytes(text.encode("utf-8"))]


def _tokenize_bytes(raw: bytes) -> list[bytes]:
    text = raw.decode("utf-8", errors="replace").lower().replace("<br />", " ")
    cleaned = text.encode("utf-8").translate(_TABLE)
    words = cleaned.split()
    if b"'" in cleaned:
        words = [word for word in (w.strip(b"'") for w in words) if word]
    return words


def _is_review_folder(path: Path) -> bool:
    return (path / "train").is_dir() and (path / "test").is_dir()


def _usable(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and _is_review_folder(path))


def find_imdb(options: Mapping[str, Any], context: DataContext) -> Path:
    """Locate the reviews: ``path`` option, data folder, Keras cache, then a download.

    Args:
        options: Validated options of the ``imdb`` source.
        context: Where to look and whether downloading is allowed.

    Returns:
        An ``aclImdb/`` folder or a ``.tar.gz`` holding one.

    Raises:
        DataError: Nothing usable found (and the download skipped or failed).
    """
    if options["path"]:
        path = resolve_user_path(options["path"], context)
        if path.is_dir() and not _is_review_folder(path) and _is_review_folder(path / "aclImdb"):
            path = path / "aclImdb"
        if not _usable(path):
            raise DataError(
                f"IMDB data not found at data.path={options['path']!r} ({path}): no aclImdb "
                "folder (with train/ and test/) or .tar.gz there. Point data.path at an aclImdb/ "
                "folder or aclImdb_v1.tar.gz."
            )
        return path
    candidates: list[Path] = []
    if context.data_dir is not None:
        candidates += [context.data_dir / "aclImdb"]
        candidates += [context.data_dir / name for name in ARCHIVE_NAMES]
    keras_dir = keras_datasets_dir()
    candidates += [keras_dir / "aclImdb", keras_dir / "aclImdb_v1_extracted" / "aclImdb"]
    candidates += [keras_dir / ARCHIVE_NAMES[0]]
    return find_or_fetch(
        "IMDB data",
        candidates,
        fname=ARCHIVE_NAMES[0],
        origin=ORIGIN,
        context=context,
        hint=_HINT,
        accept=_usable,
    )


def imdb_cache_path(options: Mapping[str, Any], context: DataContext) -> Path:
    """Return the cache file that a load with these options uses (it may not exist yet).

    Finds the data first (see :func:`find_imdb`), because the key includes the source file's
    path, size and modification time.
    """
    return _cache_path(find_imdb(options, context), options, context)


def _cache_path(source: Path, options: Mapping[str, Any], context: DataContext) -> Path:
    key = cache_key(
        {
            "source": file_identity(source),
            "num_words": options["num_words"],
            "validation_size": options["validation_size"],
            "seed": options["seed"],
            "format": FORMAT_VERSION,
        }
    )
    return context.cache_dir / "imdb" / f"imdb-{options['num_words']}w-{key}.npz"


def _iter_archive(path: Path) -> Iterator[tuple[str, int, int, bytes]]:
    with tarfile.open(path, mode="r|gz") as archive:
        for member in archive:
            match = _MEMBER.search(member.name)
            if match is None or not member.isfile():
                continue
            handle = archive.extractfile(member)
            if handle is not None:
                split, label, number = match.groups()
                yield split, LABELS.index(label), int(number), handle.read()


def _iter_folder(path: Path) -> Iterator[tuple[str, int, int, bytes]]:
    for split in SPLITS:
        for label_index, label in enumerate(LABELS):
            for file in (path / split / label).glob("*_*.txt"):
                number = file.name.split("_", 1)[0]
                if number.isdigit():
                    yield split, label_index, int(number), file.read_bytes()


def read_reviews(source: Path) -> dict[str, tuple[list[bytes], np.ndarray]]:
    """Read the labelled reviews of both splits, in a fixed order (label, then review number).

    Returns:
        For ``"train"`` and ``"test"``: the raw review texts and their 0/1 labels.

    Raises:
        DataError: The archive or folder is unreadable or lacks a split or a label.
    """
    found: dict[str, list[tuple[int, int, bytes]]] = {split: [] for split in SPLITS}
    reader = _iter_folder if source.is_dir() else _iter_archive
    try:
        for split, label, number, raw in reader(source):
            found[split].append((label, number, raw))
    except (OSError, EOFError, tarfile.TarError, zlib.error) as error:
        raise DataError(
            f"cannot read IMDB data {source}: {one_line(error)}; replace it with a fresh copy of "
            f"{ORIGIN} or point data.path at a good one."
        ) from error
    result: dict[str, tuple[list[bytes], np.ndarray]] = {}
    for split in SPLITS:
        reviews = sorted(found[split], key=lambda item: (item[0], item[1]))
        labels = np.array([label for label, _, _ in reviews], dtype=np.float32)
        for label_index, label_name in enumerate(LABELS):
            if not np.any(labels == label_index):
                raise DataError(
                    f"IMDB data {source} has no aclImdb/{split}/{label_name}/*.txt reviews; use "
                    f"the complete archive from {ORIGIN}."
                )
        result[split] = ([raw for _, _, raw in reviews], labels)
    return result


def build_vocabulary(texts: list[bytes], num_words: int) -> dict[bytes, int]:
    """Map the ``num_words`` commonest words of ``texts`` to column indices (ties alphabetical)."""
    counts: Counter[bytes] = Counter()
    for raw in texts:
        counts.update(_tokenize_bytes(raw))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:num_words]
    return {word: index for index, (word, _) in enumerate(ranked)}


def multi_hot(texts: list[bytes], vocabulary: dict[bytes, int]) -> scipy.sparse.csr_matrix:
    """Return one float32 CSR row per text with 1.0 in the columns of the words it contains."""
    import scipy.sparse  # Lazy: a quarter second that listing or validating studies can skip.

    lookup = vocabulary.get
    indices = array("i")
    indptr = array("q", [0])
    for raw in texts:
        found = map(lookup, set(_tokenize_bytes(raw)))
        columns = [column for column in found if column is not None]
        columns.sort()
        indices.extend(columns)
        indptr.append(len(indices))
    index_array = np.frombuffer(indices, dtype=np.int32).copy()
    data = np.ones(len(index_array), dtype=np.float32)
    matrix = scipy.sparse.csr_matrix(
        (data, index_array, np.frombuffer(indptr, dtype=np.int64).copy()),
        shape=(len(texts), len(vocabulary)),
    )
    matrix.has_sorted_indices = True
    return matrix


def _vectorize(source: Path, options: Mapping[str, Any]) -> dict[str, np.ndarray]:
    reviews = read_reviews(source)
    train_texts, train_labels = reviews["train"]
    test_texts, test_labels = reviews["test"]
    if options["validation_size"] >= len(train_texts):
        raise DataError(
            f"data.validation_size={options['validation_size']} leaves no training reviews: "
            f"{source} has {len(train_texts)}; choose a smaller validation_size."
        )
    vocabulary = build_vocabulary(train_texts, options["num_words"])
    rng = np.random.default_rng(options["seed"])
    order = rng.permutation(len(train_texts))
    test_order = rng.permutation(len(test_texts))
    n_val = options["validation_size"]
    parts = {
        "train": (multi_hot([train_texts[i] for i in order[n_val:]], vocabulary), order[n_val:]),
        "val": (multi_hot([train_texts[i] for i in order[:n_val]], vocabulary), order[:n_val]),
        "test": (multi_hot([test_texts[i] for i in test_order], vocabulary), test_order),
    }
    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT_VERSION),
        "vocabulary": np.array([word.decode("utf-8") for word in vocabulary]),
    }
    for name, (matrix, index) in parts.items():
        labels = test_labels if name == "test" else train_labels
        arrays[f"{name}_indptr"] = matrix.indptr
        arrays[f"{name}_indices"] = matrix.indices
        arrays[f"{name}_y"] = labels[index].reshape(-1, 1)
    return arrays


def _matrix(arrays: Mapping[str, np.ndarray], name: str, n_columns: int) -> Any:
    import scipy.sparse

    indptr, indices = arrays[f"{name}_indptr"], arrays[f"{name}_indices"]
    data = np.ones(len(indices), dtype=np.float32)
    matrix = scipy.sparse.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, n_columns))
    matrix.has_sorted_indices = True
    return matrix


def load_imdb(options: Mapping[str, Any], context: DataContext) -> Dataset:
    """Load the IMDB reviews as multi-hot rows, from the cache when it holds them.

    Args:
        options: Validated options of the ``imdb`` source.
        context: Where to look for the data and the cache.

    Returns:
        A binary data set: ``num_words`` columns, 25,000 - ``validation_size`` training rows,
        ``validation_size`` validation rows and the 25,000 official test reviews.
    """
    source = find_imdb(options, context)
    cache = _cache_path(source, options, context)
    arrays = load_npz(cache)
    if arrays is None or int(arrays.get("format", -1)) != FORMAT_VERSION:
        started = time.perf_counter()
        arrays = _vectorize(source, options)
        save_npz_atomic(cache, arrays)
        seconds = time.perf_counter() - started
        logger.info("vectorized %s in %.1f s; cached in %s", source, seconds, cache)
    else:
        logger.debug("read IMDB arrays from cache %s", cache)
    n_columns = len(arrays["vocabulary"])
    has_val = len(arrays["val_indptr"]) > 1
    dataset = Dataset(
        name="imdb",
        task="binary",
        x_train=_matrix(arrays, "train", n_columns),
        y_train=arrays["train_y"],
        x_val=_matrix(arrays, "val", n_columns) if has_val else None,
        y_val=arrays["val_y"] if has_val else None,
        x_test=_matrix(arrays, "test", n_columns),
        y_test=arrays["test_y"],
        n_classes=2,
        reference={"vocabulary_size": n_columns},
    )
    n_val = len(arrays["val_y"]) if has_val else 0
    dataset.description = (
        f"IMDB reviews, multi-hot over {n_columns} words: {len(arrays['train_y'])} train / "
        f"{n_val} validation / {len(arrays['test_y'])} test"
    )
    return dataset


SOURCE = DataSource(
    name="imdb",
    summary="IMDB movie reviews (aclImdb), multi-hot over the commonest words; binary sentiment",
    options=OPTIONS,
    load=load_imdb,
)
