"""Every ``CAPSEARCH_*`` environment variable: one table, one parsing rule, one accessor each.

:data:`SETTINGS` lists each variable with its kind, its rule, its default and what it sets; the
functions below read one variable each, typed (e.g. :func:`heartbeat_interval` returns an
``int`` or ``None``). The rule is the same for all:

* unset, empty or blank means the default;
* the value is stripped of surrounding blanks;
* ``flag``: ``1``, ``true``, ``yes`` or ``0``, ``false``, ``no``, in any case;
* ``int``: a whole number at least the setting's minimum;
* ``choice``: one of the setting's words, in any case;
* ``text`` and ``path``: any value;
* anything else is a one-line :class:`~search.errors.SettingsError` that names the variable, the
  value, the rule and the fix (exit code 2 on the command line).

Variables are read when a value is needed, never cached, so a test or a launcher can change the
environment between two reads. Flags of the command line win over these variables; the callers
decide that (e.g. :func:`search.storage.urls.resolve_storage_url`).

Example:
    >>> HEARTBEAT.read({}) is None  # unset
    True
    >>> HEARTBEAT.read({"CAPSEARCH_HEARTBEAT": " 5 "})
    5
    >>> try:
    ...     HEARTBEAT.read({"CAPSEARCH_HEARTBEAT": "abc"})
    ... except SettingsError as exc:
    ...     print(exc.rule, "|", exc.fix)
    an integer >= 1 | set it to a whole number of seconds or unset it
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from search.errors import SettingsError

__all__ = [
    "ARTIFACTS",
    "CACHE",
    "DATA",
    "DEFAULT_SPACES_DIR",
    "DEFAULT_STORAGE_DIR",
    "GRACE",
    "HEARTBEAT",
    "INTER_OP_THREADS",
    "INTRA_OP_THREADS",
    "MAX_RETRY",
    "OFFLINE",
    "PG_SYNCHRONOUS_COMMIT",
    "PNG",
    "SETTINGS",
    "SPACES",
    "STORAGE",
    "STORAGE_WAIT",
    "TEST_PG_BIN",
    "Setting",
    "artifacts_dir",
    "cache_dir",
    "data_dir",
    "grace_period",
    "heartbeat_interval",
    "inter_op_threads",
    "intra_op_threads",
    "max_retry",
    "offline",
    "pg_synchronous_commit",
    "postgres_bin_dir",
    "png_renderer",
    "spaces_dir",
    "storage_url",
    "storage_wait",
]

Kind = Literal["text", "path", "flag", "int", "choice"]

DEFAULT_STORAGE_DIR = Path("storage")
"""Folder of the default SQLite file, under the project root (``search.storage.urls.project_root``:
the checkout, whatever the current folder)."""

DEFAULT_SPACES_DIR = Path(__file__).resolve().parents[1] / "spaces"
"""The shipped study files: the ``spaces/`` folder beside the package."""

_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")


@dataclass(frozen=True)
class Setting:
    """One environment variable: its name, how its value is read, its default and meaning.

    Attributes:
        name: The variable, e.g. ``"CAPSEARCH_HEARTBEAT"``.
        kind: ``"text"``, ``"path"``, ``"flag"``, ``"int"`` or ``"choice"``.
        default: What :meth:`read` returns when the variable is unset, empty or blank.
        doc: What the variable sets, and what its default means.
        fix: How to correct a bad value: the end of the error message.
        minimum: The smallest value allowed (``int`` only).
        choices: The words allowed, in lower case (``choice`` only).
    """

    name: str
    kind: Kind
    default: Any
    doc: str
    fix: str = ""
    minimum: int = 0
    choices: tuple[str, ...] = ()

    @property
    def rule(self) -> str:
        """What a value must be, as the error states it (``"any value"`` for text and paths).

        Example:
            >>> HEARTBEAT.rule
            'an integer >= 1'
        """
        if self.kind == "flag":
            return f"one of {', '.join(_TRUE + _FALSE)} (any case)"
        if self.kind == "int":
            return f"an integer >= {self.minimum}"
        if self.kind == "choice":
            return f"one of {', '.join(self.choices)} (any case)"
        return "any value"

    def read(self, environ: Mapping[str, str] | None = None) -> Any:
        """The variable's value by this setting's rule.

        Args:
            environ: Where to look (default: ``os.environ``).

        Returns:
            :attr:`default` when unset or blank; else a ``str`` (``text``, ``choice``, in lower
            case for ``choice``), a :class:`~pathlib.Path`, a ``bool`` or an ``int``.

        Raises:
            SettingsError: The value breaks the rule; the message names the variable, the
                value, the rule and the fix.

        Example:
            >>> OFFLINE.read({"CAPSEARCH_OFFLINE": "Yes"})
            True
        """
        raw = (os.environ if environ is None else environ).get(self.name)
        if raw is None or not raw.strip():
            return self.default
        text = raw.strip()
        if self.kind == "text":
            return text
        if self.kind == "path":
            return Path(text)
        if self.kind == "flag":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
        elif self.kind == "int":
            try:
                value = int(text)
            except ValueError:
                pass
            else:
                if value >= self.minimum:
                    return value
        elif text.lower() in self.choices:
            return text.lower()
        raise SettingsError(self.name, raw, self.rule, self.fix)


STORAGE = Setting(
    "CAPSEARCH_STORAGE",
    "text",
    None,
    "Storage URL when --storage is not given (unset: sqlite:///storage/studies.db under the "
    "project folder, the checkout, whatever the current folder).",
)
DATA = Setting(
    "CAPSEARCH_DATA",
    "path",
    None,
    "Folder of local data copies when --data-dir is not given (unset: none).",
)
CACHE = Setting(
    "CAPSEARCH_CACHE",
    "path",
    DEFAULT_STORAGE_DIR / "cache",
    "Folder of cached, vectorized data sets (unset: storage/cache).",
)
OFFLINE = Setting(
    "CAPSEARCH_OFFLINE",
    "flag",
    False,
    "Never download data, as --offline (unset: downloads allowed).",
    fix="set it to 1 to forbid downloads, 0 to allow them, or unset it",
)
SPACES = Setting(
    "CAPSEARCH_SPACES",
    "path",
    DEFAULT_SPACES_DIR,
    "Folder of the study files looked up by name (unset: the shipped spaces/).",
)
ARTIFACTS = Setting(
    "CAPSEARCH_ARTIFACTS",
    "path",
    None,
    "Folder of the artifact store, the per-trial plots (unset: artifacts/ beside an SQLite "
    "file, else storage/artifacts).",
)
PNG = Setting(
    "CAPSEARCH_PNG",
    "choice",
    "auto",
    "Renderer of the report's PNG files (unset: auto, kaleido when a Chromium works, else "
    "matplotlib).",
    fix="set it to auto, kaleido or matplotlib, or unset it",
    choices=("auto", "kaleido", "matplotlib"),
)
HEARTBEAT = Setting(
    "CAPSEARCH_HEARTBEAT",
    "int",
    None,
    "Seconds between heartbeats of a running trial (unset: 10).",
    fix="set it to a whole number of seconds or unset it",
    minimum=1,
)
GRACE = Setting(
    "CAPSEARCH_GRACE",
    "int",
    None,
    "Seconds without heartbeat after which a running trial is dead (unset: 3 heartbeats).",
    fix="set it to a whole number of seconds, longer than the heartbeat interval, or unset it",
    minimum=1,
)
MAX_RETRY = Setting(
    "CAPSEARCH_MAX_RETRY",
    "int",
    None,
    "How often the trial of a dead or stopped worker is re-queued (unset: 3).",
    fix="set it to a whole number of re-queues (0: never) or unset it",
    minimum=0,
)
INTRA_OP_THREADS = Setting(
    "CAPSEARCH_INTRA_OP_THREADS",
    "int",
    None,
    "Threads TensorFlow uses inside one op in a worker (unset or 0: TensorFlow's default).",
    fix="set it to a whole number of threads (0: TensorFlow's default) or unset it",
    minimum=0,
)
INTER_OP_THREADS = Setting(
    "CAPSEARCH_INTER_OP_THREADS",
    "int",
    None,
    "Ops TensorFlow runs at once in a worker (unset or 0: TensorFlow's default).",
    fix="set it to a whole number of ops (0: TensorFlow's default) or unset it",
    minimum=0,
)
PG_SYNCHRONOUS_COMMIT = Setting(
    "CAPSEARCH_PG_SYNCHRONOUS_COMMIT",
    "choice",
    "off",
    "PostgreSQL commits of workers: on waits for the disk, PostgreSQL's default (unset: off, "
    "commits do not wait for the WAL flush).",
    fix="set it to on to wait for the disk, off not to, or unset it",
    choices=("on", "off"),
)

STORAGE_WAIT = Setting(
    "CAPSEARCH_STORAGE_WAIT",
    "int",
    None,
    "Seconds a worker waits for its database or proxy to come back after it stopped answering "
    "mid-run, before it gives up (unset: 300).",
    fix="set it to a whole number of seconds or unset it",
    minimum=1,
)

TEST_PG_BIN = Setting(
    "CAPSEARCH_TEST_PG_BIN",
    "path",
    Path("/usr/lib/postgresql/15/bin"),
    "PostgreSQL's bin folder (initdb, pg_ctl) for the throw-away servers of the tests and the "
    "storage benchmark (unset: /usr/lib/postgresql/15/bin).",
)

SETTINGS: dict[str, Setting] = {
    setting.name: setting
    for setting in (
        STORAGE,
        DATA,
        CACHE,
        OFFLINE,
        SPACES,
        ARTIFACTS,
        PNG,
        HEARTBEAT,
        GRACE,
        MAX_RETRY,
        INTRA_OP_THREADS,
        INTER_OP_THREADS,
        PG_SYNCHRONOUS_COMMIT,
        STORAGE_WAIT,
        TEST_PG_BIN,
    )
}
"""Every ``CAPSEARCH_*`` variable the package reads, by name."""


def storage_url() -> str | None:
    """``CAPSEARCH_STORAGE``: the storage URL, or ``None`` when unset (the default SQLite file)."""
    value: str | None = STORAGE.read()
    return value


def data_dir() -> Path | None:
    """``CAPSEARCH_DATA``: the folder of local data copies, or ``None`` when unset."""
    value: Path | None = DATA.read()
    return value


def cache_dir() -> Path:
    """``CAPSEARCH_CACHE``: the folder of cached data sets (default ``storage/cache``)."""
    value: Path = CACHE.read()
    return value


def offline() -> bool:
    """``CAPSEARCH_OFFLINE``: never download data (default ``False``).

    Raises:
        SettingsError: The value is not one of 1, 0, true, false, yes, no.
    """
    value: bool = OFFLINE.read()
    return value


def spaces_dir() -> Path:
    """``CAPSEARCH_SPACES``: the folder of study files (default: the shipped ``spaces/``)."""
    value: Path = SPACES.read()
    return value


def artifacts_dir() -> Path | None:
    """``CAPSEARCH_ARTIFACTS``: the artifact store's folder, or ``None`` (next to the storage)."""
    value: Path | None = ARTIFACTS.read()
    return value


def png_renderer() -> str:
    """``CAPSEARCH_PNG``: ``auto`` (default), ``kaleido`` or ``matplotlib``, in lower case.

    Raises:
        SettingsError: The value is none of the three.
    """
    value: str = PNG.read()
    return value


def heartbeat_interval() -> int | None:
    """``CAPSEARCH_HEARTBEAT``: seconds between heartbeats, or ``None`` when unset (10 s).

    Raises:
        SettingsError: The value is not an integer >= 1.
    """
    value: int | None = HEARTBEAT.read()
    return value


def grace_period() -> int | None:
    """``CAPSEARCH_GRACE``: seconds until a silent trial is dead, or ``None`` (3 heartbeats).

    Raises:
        SettingsError: The value is not an integer >= 1.
    """
    value: int | None = GRACE.read()
    return value


def max_retry() -> int | None:
    """``CAPSEARCH_MAX_RETRY``: re-queues of a dead worker's trial, or ``None`` when unset (3).

    Raises:
        SettingsError: The value is not an integer >= 0.
    """
    value: int | None = MAX_RETRY.read()
    return value


def intra_op_threads() -> int | None:
    """``CAPSEARCH_INTRA_OP_THREADS``: TensorFlow's intra-op threads, or ``None`` when unset.

    Raises:
        SettingsError: The value is not an integer >= 0.
    """
    value: int | None = INTRA_OP_THREADS.read()
    return value


def inter_op_threads() -> int | None:
    """``CAPSEARCH_INTER_OP_THREADS``: TensorFlow's inter-op threads, or ``None`` when unset.

    Raises:
        SettingsError: The value is not an integer >= 0.
    """
    value: int | None = INTER_OP_THREADS.read()
    return value


def postgres_bin_dir() -> Path:
    """``CAPSEARCH_TEST_PG_BIN``: where ``initdb`` and ``pg_ctl`` of the throw-away servers are."""
    value: Path = TEST_PG_BIN.read()
    return value


def pg_synchronous_commit() -> str:
    """``CAPSEARCH_PG_SYNCHRONOUS_COMMIT``: ``"off"`` (default) or ``"on"``, in lower case.

    Raises:
        SettingsError: The value is neither on nor off.
    """
    value: str = PG_SYNCHRONOUS_COMMIT.read()
    return value


def storage_wait() -> int | None:
    """``CAPSEARCH_STORAGE_WAIT``: seconds to wait out a storage outage, or ``None`` (default).

    Raises:
        SettingsError: The value is not an integer >= 1.
    """
    value: int | None = STORAGE_WAIT.read()
    return value
