"""Storage URLs: which storage to use, and how to show its URL without the password.

The default is one SQLite file, ``storage/studies.db`` under the current folder; ``--storage``
or the environment variable ``CAPSEARCH_STORAGE`` can name another SQLite file or a PostgreSQL
or MySQL server. Passwords never reach a message: use :func:`mask_url` and :func:`mask_text`
for anything that may contain a URL.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote, quote_plus

from sqlalchemy.engine import make_url

from search import settings

__all__ = [
    "DEFAULT_STORAGE_DIR",
    "DEFAULT_STORAGE_FILE",
    "STORAGE_ENV_VAR",
    "default_storage_url",
    "mask_text",
    "mask_url",
    "resolve_storage_url",
]

DEFAULT_STORAGE_DIR = settings.DEFAULT_STORAGE_DIR
"""Folder, relative to the project root (the current folder), of the default SQLite file."""

DEFAULT_STORAGE_FILE = "studies.db"
"""File name of the default SQLite storage inside :data:`DEFAULT_STORAGE_DIR`."""

STORAGE_ENV_VAR = settings.STORAGE.name
"""Environment variable that names the storage when ``--storage`` is not given."""

# scheme://user:password@  (also without a user: scheme://:password@)
_URL_PASSWORD_RE = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)[^@\s]*@")


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
    return settings.storage_url() or default_storage_url()


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
