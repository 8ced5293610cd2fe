"""Where studies live: open, check, list and copy Optuna storages safely.

Every study is kept in an Optuna :class:`~optuna.storages.RDBStorage`. By default that is one
SQLite file, ``storage/studies.db`` under the project folder (the checkout, from any current
folder); ``--storage`` or the environment variable ``CAPSEARCH_STORAGE`` can point to another
SQLite file or to a PostgreSQL or MySQL server shared by several machines.

One concept per module:

* :mod:`search.storage.urls`: which storage URL to use; passwords masked in anything shown.
* :mod:`search.storage.opening`: :func:`open_storage`, with the URL, driver, file and server
  checked first; SQLite in WAL mode with a busy timeout, servers with a small pooled engine.
* :mod:`search.storage.retry`: :func:`with_retry`, for the lock conflicts that do not wait.
* :mod:`search.storage.studies`: list, copy and delete whole studies.

Every problem becomes a one-line :class:`~search.errors.StorageError` that names the storage
(password replaced by ``***``) and the fix. This package re-exports the public API of its
modules, so ``from search.storage import open_storage`` works as well.
"""

from search.storage.opening import open_storage
from search.storage.retry import with_retry
from search.storage.studies import (
    StudySummaryRow,
    copy_study,
    delete_study_if_present,
    list_studies,
)
from search.storage.urls import (
    DEFAULT_STORAGE_DIR,
    DEFAULT_STORAGE_FILE,
    STORAGE_ENV_VAR,
    default_storage_url,
    mask_text,
    mask_url,
    resolve_storage_url,
)

__all__ = [
    "DEFAULT_STORAGE_DIR",
    "DEFAULT_STORAGE_FILE",
    "STORAGE_ENV_VAR",
    "StudySummaryRow",
    "copy_study",
    "default_storage_url",
    "delete_study_if_present",
    "list_studies",
    "mask_text",
    "mask_url",
    "open_storage",
    "resolve_storage_url",
    "with_retry",
]
