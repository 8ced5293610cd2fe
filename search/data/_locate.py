"""Finding a data file: a path from the study file, the data folder, the Keras cache, a download."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from search.data._dataset import DataContext
from search.errors import DataError, one_line


def resolve_user_path(value: str, context: DataContext) -> Path:
    """Turn a ``path`` option into an absolute path (``~`` expanded, relative to ``base_dir``).

    Example:
        >>> ctx = DataContext(data_dir=None, cache_dir=Path("/c"), base_dir=Path("/study"))
        >>> resolve_user_path("data/x.csv", ctx)
        PosixPath('/study/data/x.csv')
    """
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = context.base_dir / path
    return path


def keras_datasets_dir() -> Path:
    """Return the folder ``keras.utils.get_file`` downloads into, without importing Keras.

    That is ``$KERAS_HOME/datasets`` when ``KERAS_HOME`` is set, else ``~/.keras/datasets``
    (``/tmp/.keras/datasets`` when the home folder is not writable, as Keras does).
    """
    home = os.environ.get("KERAS_HOME")
    if home:
        base = Path(home).expanduser()
    else:
        user = Path("~").expanduser()
        base = (user if os.access(user, os.W_OK) else Path("/tmp")) / ".keras"
    return base / "datasets"


def download(fname: str, origin: str) -> Path:
    """Download ``origin`` into the Keras cache as ``fname`` (kept there for later loads).

    Imports Keras, so only call it when no local copy was found.

    Raises:
        Exception: Whatever ``keras.utils.get_file`` raises; callers turn it into a
            :class:`DataError`.
    """
    import keras  # Lazy: importing Keras starts TensorFlow.

    return Path(keras.utils.get_file(fname=fname, origin=origin))


def find_or_fetch(
    what: str,
    candidates: Sequence[Path],
    *,
    fname: str,
    origin: str,
    context: DataContext,
    hint: str,
    accept: Callable[[Path], bool] = Path.exists,
) -> Path:
    """Return the first acceptable candidate, else download the file unless offline.

    Args:
        what: The data set's name for messages, e.g. ``"IMDB data"``.
        candidates: Places to look, in order.
        fname: File name to download as.
        origin: Official download address.
        context: Where to look and whether downloading is allowed.
        hint: The last sentence of the error: how to point at the data.
        accept: Whether a candidate that exists is usable.

    Returns:
        The path of the data.

    Raises:
        DataError: Nothing found locally and the download was skipped or failed; the one-line
            message lists the places looked in.
    """
    for candidate in candidates:
        if accept(candidate):
            return candidate
    if context.offline:
        reason = "download skipped (offline)"
    else:
        try:
            return download(fname, origin)
        except Exception as error:  # noqa: BLE001 - any failure is reported the same way.
            reason = f"download from {origin} failed ({one_line(error)})"
    looked = ", ".join(str(candidate) for candidate in candidates)
    raise DataError(f"{what} not found: looked in {looked}; {reason}. {hint}")
