"""What a worker records on its trials: who ran each one and why it failed or was pruned.

``worker`` (user attribute) names the worker; ``fail_reason`` (user and system attribute) and
``pruned_reason`` (user attribute) hold one line that says what happened.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial

from search._compat import optuna as optuna_compat
from search.errors import first_line

__all__ = ["WORKER_ATTR", "fail_reason"]

WORKER_ATTR = "worker"
"""Trial user attribute: the id of the worker that ran the trial."""

_REASON_ATTRS = ("fail_reason", "pruned_reason", WORKER_ATTR)
_MAX_REASON_CHARS = 500


def fail_reason(exc: BaseException) -> str:
    """One line naming an exception, e.g. ``ResourceExhaustedError: OOM when allocating ...``.

    Example:
        >>> fail_reason(ValueError("bad\\nvalue"))
        'ValueError: bad'
    """
    first = first_line(exc)
    reason = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return reason[:_MAX_REASON_CHARS]


def _set_attrs(trial: optuna.Trial, attrs: dict[str, Any], *, system: bool = False) -> None:
    """Set user (and system) attributes; a trial finished meanwhile is left as it is."""
    try:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
            if system:
                trial.storage.set_trial_system_attr(optuna_compat.trial_id(trial), key, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


def _stored_reason(trial: FrozenTrial) -> str:
    """The failure reason stored on ``trial`` (system attribute first), else ``?``."""
    return str(trial.system_attrs.get("fail_reason") or trial.user_attrs.get("fail_reason", "?"))
