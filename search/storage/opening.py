"""Opening a storage: the URL and its driver checked, SQLite in WAL mode, pooled servers.

SQLite is opened in WAL mode with a 60 s busy timeout so that several worker processes on one
file wait for each other instead of failing with ``database is locked``. Server databases
(PostgreSQL, MySQL) get a small connection pool per process whose connections are pinged before
use once they have been idle (see :func:`_ping_after_idle`).

Every problem becomes a one-line :class:`~search.errors.StorageError` that names the storage
(password replaced by ``***``) and the fix.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from sqlalchemy.engine import URL, make_url

from search.errors import StorageError
from search.storage.proxy import ProxyStorage, is_proxy_url, open_proxy
from search.storage.retry import with_retry
from search.storage.urls import (
    DEFAULT_STORAGE_DIR,
    DEFAULT_STORAGE_FILE,
    mask_text,
    mask_url,
    raw_password_problem,
)

__all__ = ["SQLITE_BUSY_TIMEOUT_S", "OpenedStorage", "close_storage", "open_storage"]

OpenedStorage = optuna.storages.RDBStorage | ProxyStorage
"""What :func:`open_storage` returns: a database, or Optuna's gRPC proxy in front of one."""

_logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 60
"""Seconds an SQLite connection waits for another process's write lock before failing."""

_SERVER_ENGINE_KWARGS: dict[str, Any] = {
    # Pinged only after PING_AFTER_IDLE_S idle (_ping_after_idle), not at every checkout.
    "pool_pre_ping": False,
    "pool_size": 2,
    "max_overflow": 2,
    "pool_recycle": 3600,
    # Reuse the connection used last: the others stay idle, get pinged, or time out harmlessly.
    "pool_use_lifo": True,
}
PING_AFTER_IDLE_S = 5.0
"""A pooled server connection idle for longer than this is pinged before it is used again."""
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
    password_problem = raw_password_problem(url)
    if password_problem is not None:  # the driver would connect elsewhere, with a cut password
        raise _fail(url, password_problem, "fix --storage (or $CAPSEARCH_STORAGE) and try again")
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
    """Switch the SQLite file at ``path`` to WAL mode (persistent; creates the file if needed).

    Changing the journal mode fails at once with "database is locked", without waiting for the
    busy timeout, while another process writes in rollback mode: workers opening a new file
    together do. So the switch is tried again, as other lock conflicts are.
    """
    try:
        mode = with_retry(lambda: _switch_to_wal(path), attempts=11)  # waits up to about 50 s
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


def _switch_to_wal(path: Path) -> str:
    conn = sqlite3.connect(str(path), timeout=SQLITE_BUSY_TIMEOUT_S)
    try:
        mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
        if mode.lower() != "wal":  # reading waits for other writers; switching does not
            mode = str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        return mode
    finally:
        conn.close()


def _connect_fix(backend: str) -> str:
    if backend == "sqlite":
        return "check the file and its folder or pass --storage with another path"
    return (
        "check that the server is running and that host, port, user, password (special "
        "characters percent-encoded) and database name in --storage are right"
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
    create: bool = True,
    pool_size: int | None = None,
) -> OpenedStorage:
    """Open an Optuna storage, checking the URL and the database first.

    SQLite files are switched to WAL mode and opened with a 60 s busy timeout; the folder
    ``storage/`` of the default location is created, any other missing folder is an error.
    ``postgresql://`` URLs use the psycopg 3 driver; server databases get a small pool whose
    connections are pinged before use after 5 s idle.

    Args:
        url: Storage URL (``sqlite:///path.db``, ``postgresql://...``, ``mysql+pymysql://...``,
            or ``grpc://host:port`` for a ``capsearch proxy``: :mod:`search.storage.proxy`).
        heartbeat_interval: Seconds between heartbeats of running trials; enables the detection
            of trials whose worker died.
        grace_period: Seconds without heartbeat after which a running trial is stale
            (Optuna's default is twice ``heartbeat_interval``). Failing and re-queueing stale
            trials is left to :mod:`search.distributed.liveness`: the storage gets no Optuna
            retry callback, so that a dead worker's trial is re-queued once, with its reason.
        create: When False, a missing SQLite file is an error (and is not created) and no
            tables are created.
        pool_size: Server databases: connections kept open (default 2, plus 2 opened and
            closed again at need); a multi-threaded server such as ``capsearch proxy`` sets
            it to its number of threads, so that its connections are not opened per call.

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
    if is_proxy_url(url):  # Optuna's gRPC proxy: the database is the proxy's business
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return open_proxy(url, heartbeat_interval=heartbeat_interval)
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    for name, value, lowest in (
        ("heartbeat_interval", heartbeat_interval, 1),
        ("grace_period", grace_period, 1),
    ):
        if value is not None and (type(value) is not int or value < lowest):
            raise _fail(url, f"{name}={value!r} is not allowed", f"use an integer >= {lowest}")

    engine_kwargs: dict[str, Any]
    if backend == "sqlite":
        _prepare_sqlite(url, parsed.database, create)
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    else:
        engine_kwargs = dict(_SERVER_ENGINE_KWARGS)
        if pool_size is not None:
            engine_kwargs["pool_size"] = pool_size
        if "connect_timeout" not in parsed.query:
            engine_kwargs["connect_args"] = {"connect_timeout": _CONNECT_TIMEOUT_S}

    options: dict[str, Any] = {
        "heartbeat_interval": heartbeat_interval,
        "grace_period": grace_period,
        "skip_table_creation": not create,
    }
    with warnings.catch_warnings():
        # Heartbeats are "experimental" in Optuna 5; the warning only adds noise to every
        # worker's log.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        real_url = parsed.render_as_string(hide_password=False)
        _precheck(url, real_url, engine_kwargs, backend=backend, create=create)
        try:
            storage = _rdb_storage(real_url, engine_kwargs, options)
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
    if backend != "sqlite":
        _ping_after_idle(storage.engine, PING_AFTER_IDLE_S)
    return storage


def close_storage(storage: OpenedStorage) -> None:
    """Close what :func:`open_storage` opened: the pooled connections, or the proxy's channel."""
    if isinstance(storage, ProxyStorage):
        storage.close()
    else:
        storage.remove_session()
        storage.engine.dispose()


def _rdb_storage(
    url: str, engine_kwargs: dict[str, Any], options: dict[str, Any]
) -> optuna.storages.RDBStorage:
    """``RDBStorage``, opened again while another process is creating the same new schema.

    Workers started together on a new database each create Optuna's tables, its version row
    and its alembic stamp; all but the first fail with "table ... already exists" or a
    duplicate key. Once the first has committed, opening again finds everything in place.
    """
    return with_retry(
        lambda: optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **options),
        retry_on=_lost_schema_race,
    )


def _lost_schema_race(exc: BaseException) -> bool:
    """Whether ``exc`` says another process created a table or row this one was creating."""
    if isinstance(exc, sqlalchemy.exc.IntegrityError):
        return True  # the version row or alembic stamp inserted twice
    if not isinstance(exc, sqlalchemy.exc.DBAPIError):
        return False
    text = str(exc.orig).lower()
    return "already exists" in text or "duplicate key" in text


def _ping_after_idle(engine: sqlalchemy.Engine, idle_seconds: float) -> None:
    """Ping a pooled connection before use when it has been idle for ``idle_seconds``.

    SQLAlchemy's ``pool_pre_ping`` pings at every checkout, and Optuna checks a connection out
    for each storage call: about ten extra round trips per trial, a fifth of a null trial's
    statements. Connections die while idle (server restart, idle timeouts of the server, a
    proxy or a firewall), so this pings only those; a connection that fails the ping is
    replaced, as with ``pool_pre_ping`` (SQLAlchemy's checkout-event recipe).
    """

    @sqlalchemy.event.listens_for(engine, "checkin")
    def _note_idle_since(dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["capsearch_idle_since"] = time.monotonic()

    @sqlalchemy.event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.get("capsearch_idle_since")
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return  # new, or used a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # the pool discards it and checks out a fresh one
            raise sqlalchemy.exc.DisconnectionError(str(exc)) from exc
