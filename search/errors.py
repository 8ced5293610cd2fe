"""The project's exceptions: one base, a fatal branch for bad input and a per-trial failure.

Every exception class the package defines lives here (other modules re-export some under their
old names), and so do the two helpers that put an exception's text on one line
(:func:`one_line`, :func:`first_line`).

Every fatal error is turned into a one-line message and exit code 2 by the command-line entry
point (``search.cli``); a :class:`TrialFailure` fails one trial, stores its reason on the trial and
lets the worker go on with the next one.
"""

from __future__ import annotations


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's text on one line, shortened to ``limit`` characters.

    Example:
        >>> one_line(ValueError("no\\n  such   file"))
        'no such file'
    """
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's text, stripped; empty when it has no text.

    Example:
        >>> first_line(ValueError("\\n  bad value  \\nmore detail"))
        'bad value'
    """
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), "")


class SearchError(Exception):
    """Base class of every error this package raises on purpose."""


class FatalError(SearchError):
    """Bad input or environment: stop before anything stored is changed."""


class SettingsError(FatalError):
    """A ``CAPSEARCH_*`` environment variable holds a value its rule does not allow.

    The message names the variable, the value, the rule and the fix, e.g.
    ``CAPSEARCH_HEARTBEAT='abc' is not allowed: expected an integer >= 1; set it to a whole
    number of seconds or unset it.``

    Args:
        name: The variable, e.g. ``"CAPSEARCH_HEARTBEAT"``.
        value: Its value as found in the environment.
        rule: What a value must be, e.g. ``"an integer >= 1"``.
        fix: How to correct it, e.g. ``"set it to a whole number of seconds or unset it"``.
    """

    def __init__(self, name: str, value: str, rule: str, fix: str) -> None:
        self.name = name
        self.value = value
        self.rule = rule
        self.fix = fix
        super().__init__(f"{name}={value!r} is not allowed: expected {rule}; {fix}.")


class StudyFileError(FatalError):
    """A study file is unknown, unreadable or fails validation.

    The message names the file, the key and the problem, e.g.
    ``spaces/x.toml: space.dropout: high=1.2 is outside [0, 1); use a rate below 1.``
    """

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(f"{where}{problem}")


class SpaceError(SearchError, ValueError):
    """A search-space parameter definition is invalid; ``problem`` says rule, value and fix.

    Study files turn it into a :class:`StudyFileError` naming the file and the key.

    Args:
        problem: What is wrong, e.g. ``"range reversed: low=8 > high=4; swap them."``.
    """

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


class OptionError(SearchError, ValueError):
    """One option under ``[data]`` is unknown, of the wrong type or out of range.

    The message is ``"<key>: <problem>"``; callers that know the study file turn it into
    ``StudyFileError(source=file, key=f"data.{err.key}", problem=err.problem)``.

    Args:
        key: The option's name, e.g. ``"num_words"`` (``"source"`` for an unknown source).
        problem: What is wrong, with the value and how to fix it.
    """

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


class DataError(FatalError):
    """A data set could not be found, read or parsed."""


class InputError(DataError, ValueError):
    """In-memory data handed to :func:`search.search` cannot be searched on.

    Mismatched lengths, NaN or infinity, an empty array, labels that do not fit the task, a
    space key the model family does not have: raised before any study is created.
    """


class StudyMismatchError(FatalError):
    """A stored study is resumed with other data, another space or another objective.

    The message names the keys that differ and the ways out: a new study name, or (where the
    change only narrows a range, fixes a value or adds choices) ``--allow-narrowed``.
    """


class StorageError(FatalError):
    """A storage URL is malformed, unreachable or not writable."""


class StudyNotFoundError(StorageError):
    """A storage holds no study of the name asked for; the message lists the stored ones."""


class UsageError(FatalError):
    """A command's flags do not go together, or it needs an answer it cannot ask for."""


class DashboardError(FatalError):
    """The dashboard cannot serve: its port is out of range or its address cannot be bound."""


class StorageWriteError(SearchError):
    """A storage that opened stopped taking writes mid-run (disk full, file read-only).

    Exit code 1: the stored trials are kept; the message names the cause and the fix, and
    what became of the trial that was running.
    """


class StorageUnavailable(SearchError):
    """A storage that opened stayed unreachable longer than a worker waits for it (exit 1).

    Database or proxy restarts shorter than the wait are ridden out; the message names the
    storage, how long it was waited for, and what becomes of the running trial.
    """


class TrialFailure(SearchError):
    """One trial failed (exception, out of memory); the worker continues with the next trial."""


class HypermodelError(FatalError):
    """A KerasTuner hypermodel cannot be imported, built or mirrored on Optuna.

    The message names the hyperparameter (or the file) and the problem, e.g.
    ``hyperparameter 'units': sampling must be one of linear, log, reverse_log, got 'cube'.``
    """


class ReplayError(FatalError):
    """A stored trial cannot be re-trained: unknown study or trial, or no result to replay."""


class VerdictError(FatalError):
    """A verdict cannot be given: no finished trial, a multi-objective or hypermodel study."""


class TrialsKeepFailing(SearchError):
    """A worker stopped because too many trials in a row failed (exit code 1, not 2)."""


class WorkerStopped(KeyboardInterrupt):
    """SIGINT or SIGTERM asked the worker to stop; raised inside a trial to interrupt it.

    A :class:`KeyboardInterrupt` so that no ``except Exception`` in an objective swallows it.
    """

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"worker stopped by {signal_name}")
        self.signal_name = signal_name
