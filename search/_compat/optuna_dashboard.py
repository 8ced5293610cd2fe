"""The parts of optuna-dashboard's web page that capsearch relies on, each behind one function.

Checked with optuna-dashboard 0.17 to 0.21 (``tests/test_compat.py`` run on 0.21.0); the
dependency bound ``optuna-dashboard>=0.17,<0.22`` stops at the next release, which was not
checked. What is used:

* The page's ``localStorage`` key ``plotBackendRendering``: the setting "Use Plotly Python
  library" of the dashboard's Settings dialog. On, the slice, contour and other plots are drawn
  by Optuna's own ``optuna.visualization`` on the server (``/api/studies/<id>/plot/<kind>``),
  which orders numeric choices by value; off (the dashboard's default), its JavaScript plots
  order categorical values as text (1024 before 128).
* The page's ``<script defer src="/static/bundle.js">`` tag, before which a script of capsearch
  sets that key's default (:mod:`search.views.dashboard`).
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import optuna_dashboard

from search._compat import missing_private

__all__ = [
    "BUNDLE_TAG",
    "CHECKED_VERSIONS",
    "PLOT_BACKEND_KEY",
    "check_page",
]

CHECKED_VERSIONS = "0.17 to 0.21"
"""The optuna-dashboard versions these names were checked with."""

PLOT_BACKEND_KEY = "plotBackendRendering"
"""The ``localStorage`` key of the Settings switch "Use Plotly Python library" (JSON ``true``)."""

BUNDLE_TAG = b'<script defer src="/static/bundle.js"></script>'
"""The tag of the dashboard's page that loads its JavaScript, after the page's own scripts."""

_PACKAGE = Path(optuna_dashboard.__file__).resolve().parent


def check_page() -> None:
    """Raise unless the installed dashboard's page has :data:`BUNDLE_TAG` and the setting key.

    Raises:
        RuntimeError: The page or its bundle changed (names the installed version).

    Example:
        >>> check_page()  # the installed optuna-dashboard has both
    """
    installed = version("optuna-dashboard")
    page = (_PACKAGE / "index.html").read_bytes()
    if BUNDLE_TAG not in page:
        raise missing_private(
            "optuna-dashboard", installed, f"index.html's {BUNDLE_TAG.decode()}", CHECKED_VERSIONS
        )
    bundle = (_PACKAGE / "public" / "bundle.js").read_bytes()
    if f'"{PLOT_BACKEND_KEY}"'.encode() not in bundle:
        raise missing_private(
            "optuna-dashboard", installed, f"bundle.js setting {PLOT_BACKEND_KEY}", CHECKED_VERSIONS
        )
