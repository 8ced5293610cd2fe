"""Where studies live: open, check, list and copy Optuna storages safely.

Every study is kept in an Optuna :class:`~optuna.storages.RDBStorage`. By default that is one
SQLite file, ``storage/studies.db`` under the current folder; ``--storage`` or the environment
variable ``CAPSEARCH_STORAGE`` can point to another SQLite file or to a PostgreSQL or MySQL
server shared by several machines.

SQLite is opened in WAL mode with a 60 s busy timeout so that several worker processes on one
file wait for each other instead of failing with ``database is locked``; :func:`with_retry`
covers the rare conflicts that SQLite reports without waiting. Server databases get a small,
pre-pinged connection pool per process.

Every problem becomes a one-line :class:`~search.errors.StorageError` that names the storage
(password replaced by ``***``) and the fix. Passwords never reach a message: use
:func:`mask_url` and :func:`mask_text` for anything that may contain a URL.
"""

from __future__ import annotations

import logging
import os
import random
import re
import sqlite3
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus

import optuna
import sqlalchemy.exc
from sqlalchemy.engine import URL, make_url

from search.errors import StorageError

__all__ = [
    "DEFAULT_STORAGE_DIR",
    "DEFAULT_STORAGE_FILE",
    "STORAGE_ENV_VAR",
    "StudySummaryRow",
    "copy_study",
    "default_storage_url",
    "list_studies",
    "mask_text",
    "mask_url",
    "open_storage",
    "resolve_storage_url",
    "with_retry",
]

_logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_STORAGE_DIR = Path("storage")
"""Folder, relative to the project root (the current folder), of the default SQLite file."""

DEFAULT_STORAGE_FILE = "studies.db"
"""File name of the default SQLite storage inside :data:`DEFAULT_STORAGE_DIR`."""

STORAGE_ENV_VAR = "CAPSEARCH_STORAGE"
"""Environment variable that names the storage when ``--storage`` is not given."""

SQLITE_BUSY_TIMEOUT_S = 60
"""Seconds an SQLite connection waits for another process's write lock before failing."""

_SERVER_ENGINE_KWARGS: dict[str, Any] = {
    "pool_pre_ping": True,
    "pool_size": 2,
    "max_overflow": 2,
    "pool_recycle": 3600,
}
_CONNECT_TIMEOUT_S = 10
_SUPPORTED_BACKENDS = ("sqlite", "postgresql", "mysql")
_EXAMPLES = "sqlite:///storage/studies.db or postgresql://user@host:5432/dbname"
_DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "pg8000": "pg8000",
    "mysqldb": "mysqlclient",
    "pymysql": "PyMySQL",
    "mysqlconnector": "mysql-connector-python",
    "mariadbconnector": "mariadb",
}
_RETRY_MARKERS = ("database is locked", "deadlock", "could not serialize")
# scheme://user:password@  (also without a user: scheme://:password@)
_URL_PASSWORD_RE = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)[^@\s]*@")


# --------------------------------------------------------------------------------------------
# URLs
# --------------------------------------------------------------------------------------------


def default_storage_url(root: Path | None = None) -> str:
    """Return the URL of the default SQLite storage, ``<root>/storage/studies.db``.

    Args:
        root: Project folder; the current folder when ``None``.

    Returns:
        An absolute ``sqlite:///`` URL.

    Example:
        >>> default_storage_url(Path("/srv/capsearch"))
        'sqlite:////srv/capsearch/storage/studies.db'
    """
    base = Path.cwd() if root is None else Path(root)
    path = (base / DEFAULT_STORAGE_DIR / DEFAULT_STORAGE_FILE).absolute()
    return f"sqlite:///{path.as_posix()}"


def resolve_storage_url(flag: str | None) -> str:
    """Choose the storage URL: the ``--storage`` flag, else ``$CAPSEARCH_STORAGE``, else default.

    Empty or blank values count as not given.

    Args:
        flag: Value of ``--storage`` or ``None``.

    Returns:
        The storage URL to open.

    Example:
        >>> resolve_storage_url("postgresql://optuna@db/studies")
        'postgresql://optuna@db/studies'
    """
    if flag is not None and flag.strip():
        return flag.strip()
    env = os.environ.get(STORAGE_ENV_VAR, "").strip()
    if env:
        return env
    return default_storage_url()


def mask_url(url: str) -> str:
    """Return ``url`` with its password, if any, replaced by ``***``.

    Strings that SQLAlchemy cannot parse are masked with a pattern that matches
    ``scheme://user:password@``.

    Args:
        url: Any storage URL or string.

    Returns:
        The URL safe to print.

    Example:
        >>> mask_url("postgresql://user:s3cret@host/db")
        'postgresql://user:***@host/db'
    """
    try:
        parsed = make_url(url)
    except Exception:  # not a URL: fall back to the pattern
        return _URL_PASSWORD_RE.sub(r"\g<head>***@", url)
    if parsed.password is None:
        return _URL_PASSWORD_RE.sub(r"\g<head>***@", url)
    return parsed.render_as_string(hide_password=True)


def mask_text(text: str, url: str) -> str:
    """Remove the password of ``url`` from ``text`` (e.g. a driver's error message).

    Both the raw and the URL-encoded forms of the password are replaced by ``***``, and so is
    the password part of any other ``scheme://user:password@`` in the text.

    Args:
        text: Message that may contain the URL or its password.
        url: The storage URL whose password must disappear.

    Returns:
        The message safe to print.

    Example:
        >>> mask_text("cannot reach postgresql://u:s3cret@h/db (pw s3cret)",
        ...           "postgresql://u:s3cret@h/db")
        'cannot reach postgresql://u:***@h/db (pw ***)'
    """
    text = _URL_PASSWORD_RE.sub(r"\g<head>***@", text)
    for secret in _password_forms(url):
        text = text.replace(secret, "***")
    return text


def _password_forms(url: str) -> list[str]:
    """Every spelling of the password of ``url`` that could appear in a message, longest first."""
    forms: set[str] = set()
    try:
        password = make_url(url).password
    except Exception:
        password = None
    if password is None:
        match = _URL_PASSWORD_RE.search(url)
        if match:
            password = url[match.end("head") : match.end() - 1]
    if password:
        password = str(password)
        forms.update({password, quote(password, safe=""), quote_plus(password)})
    return sorted((f for f in forms if f), key=len, reverse=True)


def _fail(url: str, problem: str, fix: str) -> StorageError:
    """Build the one-line StorageError for ``url`` with the password removed."""
    message = f"Cannot open storage '{mask_url(url)}': {problem}; {fix}"
    message = " ".join(mask_text(message, url).split())
    return StorageError(message)


def _reason(exc: BaseException, url: str) -> str:
    """One line that says what went wrong in ``exc``, without any password."""
    inner: BaseException = exc
    while True:
        if isinstance(inner, sqlalchemy.exc.DBAPIError) and inner.orig is not None:
            inner = inner.orig
        elif inner.__cause__ is not None and isinstance(
            inner, (optuna.exceptions.StorageInternalError, sqlalchemy.exc.StatementError)
        ):
            inner = inner.__cause__
        else:
            break
    text = str(inner).strip() or type(inner).__name__
    first = next((line.strip() for line in text.splitlines() if line.strip()), text)
    return mask_text(first.rstrip("."), url)


def _parse(url: str) -> URL:
    """Parse and check ``url``; map ``postgresql://`` to psycopg 3."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise _fail(
            url,
            "not a database URL",
            f"pass --storage as a URL such as {_EXAMPLES} (a file needs the sqlite:/// prefix)",
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "postgres":  # Heroku-style spelling
        parsed = parsed.set(drivername="postgresql+psycopg")
        backend = "postgresql"
    if backend not in _SUPPORTED_BACKENDS:
        raise _fail(
            url,
            f"unsupported database type '{backend}'",
            f"use SQLite, PostgreSQL or MySQL, e.g. {_EXAMPLES}",
        )
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        dialect = parsed.get_dialect()
    except Exception as exc:
        raise _fail(
            url,
            f"unknown driver '{parsed.get_driver_name()}' for {backend}",
            f"use a known driver, e.g. {_EXAMPLES}",
        ) from exc
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        driver = parsed.get_driver_name()
        package = _DRIVER_PACKAGES.get(driver, driver)
        raise _fail(
            url,
            f"the {backend} driver '{driver}' is not installed",
            f"install it (pip install {package}) or name an installed driver in the URL",
        ) from exc
    return parsed


# --------------------------------------------------------------------------------------------
# Opening
# --------------------------------------------------------------------------------------------


def _is_default_location(path: Path) -> bool:
    """True for ``<some existing folder>/storage/studies.db``, the layout of the default URL."""
    return (
        path.name == DEFAULT_STORAGE_FILE
        and path.parent.name == DEFAULT_STORAGE_DIR.name
        and path.parent.parent.is_dir()
    )


def _prepare_sqlite(url: str, database: str | None, create: bool) -> Path | None:
    """Check the folder and file of an SQLite storage and switch it to WAL mode.

    Returns the file's path, or ``None`` for an in-memory database.
    """
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    path = Path(database).expanduser().absolute()
    folder = path.parent
    if path.is_dir():
        raise _fail(url, f"{path} is a folder", "pass --storage with the path of a .db file")
    if not path.exists():
        if not create:
            raise _fail(
                url,
                f"no storage at {path}",
                "run a search first or pass --storage with the storage the search used",
            )
        if not folder.is_dir():
            if _is_default_location(path):
                try:
                    folder.mkdir(exist_ok=True)
                except OSError as exc:
                    raise _fail(
                        url,
                        f"cannot create folder {folder} ({exc.strerror or exc})",
                        "create it by hand or pass --storage with a writable path",
                    ) from exc
            else:
                raise _fail(
                    url,
                    f"folder {folder} does not exist or is not writable",
                    "create the folder or pass --storage with a writable path",
                )
    if not os.access(folder, os.W_OK | os.X_OK):
        # SQLite writes the -wal and -shm files next to the database.
        raise _fail(
            url,
            f"folder {folder} does not exist or is not writable",
            "fix its permissions or pass --storage with a writable path",
        )
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise _fail(
            url,
            f"file {path} is not readable and writable",
            "fix its permissions or pass --storage with another path",
        )
    _enable_wal(url, path)
    return path


def _enable_wal(url: str, path: Path) -> None:
    """Switch the SQLite file at ``path`` to WAL mode (persistent; creates the file if needed)."""
    try:
        conn = sqlite3.connect(str(path), timeout=SQLITE_BUSY_TIMEOUT_S)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise _fail(
            url,
            f"{path} is not a usable SQLite database ({exc})",
            "pass --storage with another path or restore the file",
        ) from exc
    if str(mode).lower() != "wal":
        _logger.warning(
            "SQLite storage %s stays in %s journal mode (the file system may not support WAL); "
            "parallel workers may see 'database is locked'.",
            path,
            mode,
        )


def _connect_fix(backend: str) -> str:
    if backend == "sqlite":
        return "check the file and its folder or pass --storage with another path"
    return (
        "check that the server is running and that host, port, user, password and database "
        "name in --storage are right"
    )


def _precheck(
    url: str, real_url: str, engine_kwargs: dict[str, Any], *, backend: str, create: bool
) -> None:
    """Connect once (and, when not creating, look for Optuna's tables) before Optuna does.

    A failure inside ``RDBStorage.__init__`` would leave its engine and connections open.
    """
    engine = sqlalchemy.create_engine(real_url, **engine_kwargs)
    try:
        with engine.connect() as connection:
            if not create and not sqlalchemy.inspect(connection).has_table("version_info"):
                raise _fail(
                    url,
                    "no Optuna storage there (it has no Optuna tables)",
                    "run a search first or pass --storage with the storage the search used",
                )
    except sqlalchemy.exc.OperationalError as exc:
        raise _fail(url, f"cannot connect ({_reason(exc, url)})", _connect_fix(backend)) from exc
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise _fail(url, _reason(exc, url), "check the database and its permissions") from exc
    finally:
        engine.dispose()


def open_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    failed_trial_max_retry: int | None = None,
    create: bool = True,
) -> optuna.storages.RDBStorage:
    """Open an Optuna storage, checking the URL and the database first.

    SQLite files are switched to WAL mode and opened with a 60 s busy timeout; the folder
    ``storage/`` of the default location is created, any other missing folder is an error.
    ``postgresql://`` URLs use the psycopg 3 driver; server databases get a small pool with
    ``pool_pre_ping``.

    Args:
        url: Storage URL (``sqlite:///path.db``, ``postgresql://...``, ``mysql+pymysql://...``).
        heartbeat_interval: Seconds between heartbeats of running trials; enables the detection
            of trials whose worker died.
        grace_period: Seconds without heartbeat after which a running trial is marked failed
            (Optuna's default is twice ``heartbeat_interval``).
        failed_trial_max_retry: Re-queue a trial whose worker died up to this many times. Needs
            ``heartbeat_interval``.
        create: When False, a missing SQLite file is an error (and is not created) and no
            tables are created.

    Returns:
        The opened storage, to pass to :func:`optuna.create_study` or :func:`optuna.load_study`.

    Raises:
        StorageError: The URL is malformed, its driver is missing, the file or folder is not
            usable, the server does not answer, or the storage does not exist and
            ``create`` is False.

    Example:
        >>> storage = open_storage("sqlite:///storage/studies.db", heartbeat_interval=60)
        >>> study = optuna.create_study(study_name="mlp", storage=storage, load_if_exists=True)
    """
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    for name, value, lowest in (
        ("heartbeat_interval", heartbeat_interval, 1),
        ("grace_period", grace_period, 1),
        ("failed_trial_max_retry", failed_trial_max_retry, 0),
    ):
        if value is not None and (type(value) is not int or value < lowest):
            raise _fail(url, f"{name}={value!r} is not allowed", f"use an integer >= {lowest}")
    if failed_trial_max_retry is not None and heartbeat_interval is None:
        raise _fail(
            url,
            f"failed_trial_max_retry={failed_trial_max_retry} has no effect without heartbeats",
            "set heartbeat_interval too",
        )

    engine_kwargs: dict[str, Any]
    if backend == "sqlite":
        _prepare_sqlite(url, parsed.database, create)
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    else:
        engine_kwargs = dict(_SERVER_ENGINE_KWARGS)
        if "connect_timeout" not in parsed.query:
            engine_kwargs["connect_args"] = {"connect_timeout": _CONNECT_TIMEOUT_S}

    options: dict[str, Any] = {
        "heartbeat_interval": heartbeat_interval,
        "grace_period": grace_period,
        "skip_table_creation": not create,
    }
    with warnings.catch_warnings():
        # Heartbeats and their retry callback are "experimental" in Optuna 5; the warning only
        # adds noise to every worker's log.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if failed_trial_max_retry is not None:
            # Optuna 4.9 renamed failed_trial_callback / RetryFailedTrialCallback (deprecated,
            # removed in 6.0) to heartbeat_stale_trial_callback / RetryHeartbeatStaleTrialCallback.
            retry_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
            if retry_cls is not None:
                options["heartbeat_stale_trial_callback"] = retry_cls(
                    max_retry=failed_trial_max_retry
                )
            else:  # Optuna < 4.9
                options["failed_trial_callback"] = optuna.storages.RetryFailedTrialCallback(
                    max_retry=failed_trial_max_retry
                )
        real_url = parsed.render_as_string(hide_password=False)
        _precheck(url, real_url, engine_kwargs, backend=backend, create=create)
        try:
            return optuna.storages.RDBStorage(real_url, engine_kwargs=engine_kwargs, **options)
        except sqlalchemy.exc.OperationalError as exc:
            raise _fail(
                url, f"cannot connect ({_reason(exc, url)})", _connect_fix(backend)
            ) from exc
        except (sqlalchemy.exc.ProgrammingError, optuna.exceptions.StorageInternalError) as exc:
            raise _fail(url, _reason(exc, url), "check the database and its permissions") from exc
        except RuntimeError as exc:  # Optuna: schema of an older or newer version
            raise _fail(
                url,
                _reason(exc, url),
                "upgrade it with `optuna storage upgrade --storage URL` or use a matching Optuna",
            ) from exc
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.OptunaError, ValueError) as exc:
            raise _fail(url, _reason(exc, url), "check --storage and the database") from exc
        except ImportError as exc:
            raise _fail(url, _reason(exc, url), "install the database driver") from exc


# --------------------------------------------------------------------------------------------
# Retrying
# --------------------------------------------------------------------------------------------


def _is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it wraps) is a lock conflict worth retrying."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (sqlalchemy.exc.OperationalError, sqlite3.OperationalError)):
            message = str(current).lower()
            if any(marker in message for marker in _RETRY_MARKERS):
                return True
        current = current.__cause__ or current.__context__
    return False


def with_retry(fn: Callable[[], T], *, attempts: int = 8, base_delay: float = 0.05) -> T:
    """Call ``fn`` and retry it when the database reports a lock conflict.

    Retries on SQLAlchemy ``OperationalError`` (also when wrapped, e.g. in Optuna's
    ``StorageInternalError``) whose message contains ``database is locked``, ``deadlock`` or
    ``could not serialize``; waits ``base_delay * 2**k`` seconds, times a random factor in
    [0.5, 1.5), between attempts. Any other exception is raised at once.

    Args:
        fn: Function without arguments; wrap calls with ``lambda`` or ``functools.partial``.
        attempts: Number of calls in all, at least 1.
        base_delay: Delay in seconds before the first retry.

    Returns:
        What ``fn`` returns.

    Raises:
        ValueError: ``attempts`` is below 1.
        Exception: The last exception of ``fn`` once the attempts are used up, or any
            exception that is not a lock conflict.

    Example:
        >>> study = with_retry(lambda: optuna.load_study(study_name="mlp", storage=storage))
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts - 1 or not _is_transient(exc):
                raise
            delay = base_delay * (2**attempt) * (0.5 + random.random())
            _logger.debug(
                "Storage busy (%s); retry %d/%d in %.2f s",
                type(exc).__name__,
                attempt + 1,
                attempts - 1,
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# Listing and copying
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudySummaryRow:
    """One line of ``list_studies``: a study's name, trial counts and best value.

    Attributes:
        name: Study name.
        n_trials: All trials, whatever their state (WAITING included).
        n_complete: Trials in state COMPLETE.
        n_pruned: Trials in state PRUNED.
        n_failed: Trials in state FAIL.
        n_running: Trials in state RUNNING.
        best_value: Best objective value of a single-objective study with a complete trial,
            else ``None``.
        directions: ``"minimize"`` or ``"maximize"`` per objective.
    """

    name: str
    n_trials: int
    n_complete: int
    n_pruned: int
    n_failed: int
    n_running: int
    best_value: float | None
    directions: tuple[str, ...]


def list_studies(url: str) -> list[StudySummaryRow]:
    """Summarise every study in a storage, sorted by name.

    The storage is opened with ``create=False``: a missing SQLite file is an error.

    Args:
        url: Storage URL.

    Returns:
        One row per study.

    Raises:
        StorageError: The storage cannot be opened or read.

    Example:
        >>> for row in list_studies("sqlite:///storage/studies.db"):
        ...     print(row.name, row.n_complete, row.best_value)
    """
    storage = open_storage(url, create=False)
    try:
        rows = []
        for study in storage.get_all_studies():
            trials = storage.get_all_trials(study._study_id, deepcopy=False)
            states = Counter(t.state for t in trials)
            directions = tuple(d.name.lower() for d in study.directions)
            best: float | None = None
            complete = [
                t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.values
            ]
            if len(directions) == 1 and complete:
                pick = max if directions[0] == "maximize" else min
                best = float(pick(t.values[0] for t in complete))
            rows.append(
                StudySummaryRow(
                    name=study.study_name,
                    n_trials=len(trials),
                    n_complete=states[optuna.trial.TrialState.COMPLETE],
                    n_pruned=states[optuna.trial.TrialState.PRUNED],
                    n_failed=states[optuna.trial.TrialState.FAIL],
                    n_running=states[optuna.trial.TrialState.RUNNING],
                    best_value=best,
                    directions=directions,
                )
            )
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise _fail(
            url, f"cannot read studies ({_reason(exc, url)})", "check the database"
        ) from exc
    finally:
        _dispose(storage)
    return sorted(rows, key=lambda row: row.name)


def _study_id(storage: optuna.storages.RDBStorage, name: str) -> int | None:
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        return None


def _dispose(storage: optuna.storages.RDBStorage) -> None:
    """Close the connections of a storage this module opened for a one-off task."""
    storage.remove_session()
    storage.engine.dispose()


def copy_study(name: str, from_url: str, to_url: str, *, allow_running: bool = False) -> int:
    """Copy the study ``name`` with all its trials from one storage to another.

    Uses :func:`optuna.copy_study`: directions, study user and system attributes and every
    trial with its state, params, distributions, values, intermediate values, user and system
    attributes and datetimes are copied; trial numbers stay the same. The destination study
    keeps the same name.

    RUNNING trials are refused by default: a copy would hold trials that no worker will ever
    finish. Stop the workers (or wait for the search to end) first, or pass
    ``allow_running=True`` to copy them as they are, still RUNNING.

    If the copy fails half-way, the partial destination study is deleted.

    Args:
        name: Study name.
        from_url: Source storage URL; must hold the study.
        to_url: Destination storage URL; must not hold a study of that name yet.
        allow_running: Copy RUNNING trials as they are instead of refusing.

    Returns:
        The number of trials copied.

    Raises:
        StorageError: A storage cannot be opened, the source has no such study, the
            destination already has one, the source has RUNNING trials, or the copy failed.

    Example:
        >>> copy_study("mlp", "sqlite:///storage/studies.db", "postgresql://optuna@db/studies")
        120
    """
    source = open_storage(from_url, create=False)
    try:
        destination = open_storage(to_url, create=True)
    except StorageError:
        _dispose(source)
        raise
    try:
        source_id = _study_id(source, name)
        if source_id is None:
            raise StorageError(
                f"No study '{name}' in {mask_url(from_url)}; "
                "check the name with the list command or pass the storage that holds it."
            )
        if _study_id(destination, name) is not None:
            raise StorageError(
                f"Study '{name}' already exists in {mask_url(to_url)}; "
                "delete it or choose another name."
            )
        trials = source.get_all_trials(source_id, deepcopy=False)
        running = [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        if running and not allow_running:
            shown = ", ".join(str(n) for n in running[:10]) + (", ..." if len(running) > 10 else "")
            raise StorageError(
                f"Study '{name}' in {mask_url(from_url)} has {len(running)} RUNNING trial(s) "
                f"({shown}); stop its workers or wait for the search to end, then copy again."
            )
        try:
            optuna.copy_study(from_study_name=name, from_storage=source, to_storage=destination)
        except optuna.exceptions.DuplicatedStudyError as exc:  # created meanwhile by another
            raise StorageError(
                f"Study '{name}' already exists in {mask_url(to_url)}; "
                "delete it or choose another name."
            ) from exc
        except Exception as exc:
            _delete_partial(destination, name)
            raise StorageError(
                f"Copying study '{name}' from {mask_url(from_url)} to {mask_url(to_url)} "
                f"failed ({mask_text(_reason(exc, to_url), from_url)}); the partial copy was "
                "deleted, fix the problem and copy again."
            ) from exc
        copied_id = destination.get_study_id_from_name(name)
        return destination.get_n_trials(copied_id)
    finally:
        _dispose(source)
        _dispose(destination)


def _delete_partial(storage: optuna.storages.RDBStorage, name: str) -> None:
    study_id = _study_id(storage, name)
    if study_id is None:
        return
    try:
        storage.delete_study(study_id)
    except Exception:  # keep the original error; the leftover study is logged
        _logger.warning("Could not delete the partial copy of study '%s'.", name)
