"""Storage URLs: which storage to use, and how to show its URL without the password.

The default is one SQLite file, ``storage/studies.db`` under the project folder (the checkout
that holds ``spaces/`` and ``pyproject.toml``, whatever the current folder; the current folder
for an installed package without a checkout: :func:`project_root`); ``--storage``
or the environment variable ``CAPSEARCH_STORAGE`` can name another SQLite file or a PostgreSQL
or MySQL server. Passwords never reach a message: use :func:`mask_url` and :func:`mask_text`
for anything that may contain a URL.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote

from sqlalchemy.engine import make_url

from search import settings

__all__ = [
    "DEFAULT_STORAGE_DIR",
    "DEFAULT_STORAGE_FILE",
    "STORAGE_ENV_VAR",
    "default_storage_url",
    "PERCENT_ENCODE_ADVICE",
    "mask_text",
    "mask_url",
    "project_root",
    "raw_password_problem",
    "resolve_storage_url",
]

DEFAULT_STORAGE_DIR = settings.DEFAULT_STORAGE_DIR
"""Folder, relative to the project root (:func:`project_root`), of the default SQLite file."""

DEFAULT_STORAGE_FILE = "studies.db"
"""File name of the default SQLite storage inside :data:`DEFAULT_STORAGE_DIR`."""

STORAGE_ENV_VAR = settings.STORAGE.name
"""Environment variable that names the storage when ``--storage`` is not given."""

# scheme://user:password@  (also without a user: scheme://:password@). Greedy up to the last
# "@" before the path: a raw "@" in a password (which should be percent-encoded) stays inside.
_URL_PASSWORD_RE = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)[^\s?]*@(?=[^@/\s]*(?:[/?\s]|$))"
)
# ?password=... or &password=... in a URL's query string (libpq and SQLAlchemy accept it), and
# password=... in a libpq keyword/value connection string; also sslpassword.
_KEYWORD_PASSWORD_RE = re.compile(
    r"(?P<head>(?:^|(?<=[?&;\s]))(?:ssl)?password\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|[^&\s'\"]+)",
    re.IGNORECASE,
)
PERCENT_ENCODE_ADVICE = (
    "special characters in a password must be percent-encoded (@ as %40, : as %3A, / as %2F, "
    "# as %23, % as %25)"
)
"""What an error says when a URL's password looks like it holds a raw special character."""


def project_root() -> Path:
    """The folder the default storage lives under: the checkout the package runs from.

    That is the folder above the package when it holds ``spaces/`` and ``pyproject.toml`` (a
    clone, installed in place), so ``capsearch show x`` finds the same studies from any current
    folder; else (an installed package without a checkout) the current folder.

    Example:
        >>> project_root().is_absolute()
        True
    """
    checkout = settings.DEFAULT_SPACES_DIR.parent
    if settings.DEFAULT_SPACES_DIR.is_dir() and (checkout / "pyproject.toml").is_file():
        return checkout
    return Path.cwd()


def default_storage_url(root: Path | None = None) -> str:
    """Return the URL of the default SQLite storage, ``<root>/storage/studies.db``.

    Args:
        root: Project folder; :func:`project_root` when ``None``.

    Returns:
        An absolute ``sqlite:///`` URL.

    Example:
        >>> default_storage_url(Path("/srv/capsearch"))
        'sqlite:////srv/capsearch/storage/studies.db'
    """
    base = project_root() if root is None else Path(root)
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

    Every form SQLAlchemy and libpq accept is masked: ``user:password@`` (also with a raw
    ``@`` inside the password, which the drivers would misread), ``?password=`` in the query
    string, and ``password=`` in a keyword/value connection string.

    Args:
        url: Any storage URL or string.

    Returns:
        The URL safe to print.

    Example:
        >>> mask_url("postgresql://user:s3cret@host/db")
        'postgresql://user:***@host/db'
        >>> mask_url("postgresql://user@host/db?sslmode=off&password=s3cret")
        'postgresql://user@host/db?sslmode=off&password=***'
        >>> mask_url("postgresql://user:p@ss@host/db")
        'postgresql://user:***@host/db'
    """
    masked = _URL_PASSWORD_RE.sub(r"\g<head>***@", url)
    return _KEYWORD_PASSWORD_RE.sub(r"\g<head>***", masked)


def raw_password_problem(url: str) -> str | None:
    """Why the password of ``url`` cannot be what was meant, or None when it looks right.

    A raw ``@`` in a password makes the drivers end the password at the first ``@`` and read
    the rest as the host, so the URL connects somewhere else with a wrong password.

    Example:
        >>> raw_password_problem("postgresql://u:p%40ss@host/db") is None
        True
        >>> raw_password_problem("postgresql://u:p@ss@host/db")[:36]
        'the user and password part holds a r'
    """
    head = re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://(?P<authority>[^/?#\s]*)", url)
    if head is None or head.group("authority").count("@") < 2:
        return None
    return f"the user and password part holds a raw '@'; {PERCENT_ENCODE_ADVICE}"


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
    text = mask_url(text)
    for secret in _password_forms(url):
        text = text.replace(secret, "***")
    return text


def _password_forms(url: str) -> list[str]:
    """Every spelling of the password of ``url`` that could appear in a message, longest first.

    The password as the drivers parse it, as it is written in the URL up to the last ``@``
    (a raw ``@`` inside), and the value of a ``password=`` query or keyword; each also
    percent-encoded. A parsed password shorter than what the URL holds (cut at a raw ``@``) is
    left out: replacing its few letters everywhere would garble the message.
    """
    candidates: set[str] = set()
    parsed: str | None = None
    try:
        parsed_url = make_url(url)
        parsed = parsed_url.password
        for key, value in parsed_url.query.items():
            if key.lower() in ("password", "sslpassword"):
                candidates.update([value] if isinstance(value, str) else value)
    except Exception:
        pass
    written: str | None = None
    match = _URL_PASSWORD_RE.search(url)
    if match:
        written = url[match.end("head") : match.end() - 1]
        candidates.add(written)
        candidates.add(unquote(written))
        # After a raw "@" the drivers read the rest as the host, which messages then name.
        candidates.update(piece for piece in written.split("@")[1:] if len(piece) >= 3)
    if parsed:
        parsed = str(parsed)
        if written is None or parsed in (written, unquote(written)):
            candidates.add(parsed)
    for keyword in _KEYWORD_PASSWORD_RE.finditer(url):
        candidates.add(keyword.group("value").strip("'"))
    forms: set[str] = set()
    for password in candidates:
        if password:
            forms.update({password, quote(password, safe=""), quote_plus(password)})
    return sorted((f for f in forms if f), key=len, reverse=True)
