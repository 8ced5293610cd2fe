"""Adapters around the private parts of the libraries capsearch builds on: one module per library.

Product code never names a private attribute of Optuna, TensorFlow, KerasTuner or
optuna-dashboard; it calls a small function of the adapter instead:

* :mod:`search._compat.optuna`: the study's storage and ids, the trial queue, the optimize-loop
  flags, the RDB schema (trial states, heartbeats) and the storage methods that are one
  transaction each.
* :mod:`search._compat.tensorflow`: the global gradient registry and the kernel cache.
* :mod:`search._compat.keras_tuner`: the hyperparameter types, the per-declaration hook of
  ``HyperParameters`` and the tuner hooks around each build.
* :mod:`search._compat.optuna_dashboard`: the dashboard page's script tag and its setting that
  draws the plots with Optuna's own functions.

Each adapter imports only the library it wraps, names the versions it was checked with, and
raises :class:`RuntimeError` naming the installed version when a name it relies on is gone
(``tests/test_compat.py`` checks every one of them). This package itself imports none of the
four libraries: importing an adapter imports its library, nothing more.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

__all__ = ["missing_private", "private_attr"]


def missing_private(library: str, version: str, name: str, checked: str) -> RuntimeError:
    """The error for a private name that an installed library no longer has.

    Args:
        library: The distribution, e.g. ``"optuna"``.
        version: Its installed version.
        name: The private name, e.g. ``"Study._pop_waiting_trial_id"``.
        checked: The versions the adapter was checked with, e.g. ``"4.2 to 5.0"``.

    Example:
        >>> print(missing_private("optuna", "9.0.0", "Study._stop_flag", "4.2 to 5.0"))
        optuna 9.0.0 has no Study._stop_flag, which capsearch relies on (checked with optuna
        4.2 to 5.0); install a checked version
    """
    return RuntimeError(
        f"{library} {version} has no {name}, which capsearch relies on (checked with "
        f"{library} {checked}); install a checked version"
    )


def private_attr(obj: Any, name: str, library: str, version: str, checked: str) -> Any:
    """``getattr(obj, name)``, or :func:`missing_private`'s error when the library dropped it.

    Args:
        obj: The library's object (class, instance or module).
        name: The private attribute.
        library: The distribution, for the message.
        version: Its installed version, for the message.
        checked: The versions the adapter was checked with, for the message.

    Raises:
        RuntimeError: ``obj`` has no attribute ``name``.

    Example:
        >>> private_attr(object(), "_gone", "optuna", "9.0.0", "4.2 to 5.0")
        Traceback (most recent call last):
        RuntimeError: optuna 9.0.0 has no object._gone, which capsearch relies on ...
    """
    try:
        return getattr(obj, name)
    except AttributeError:
        owner = obj.__name__ if isinstance(obj, (type, ModuleType)) else type(obj).__name__
        raise missing_private(library, version, f"{owner}.{name}", checked) from None
