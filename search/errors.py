"""The project's exceptions: one base, a fatal branch for bad input and a per-trial failure.

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


class SearchError(Exception):
    """Base class of every error this package raises on purpose."""


class FatalError(SearchError):
    """Bad input or environment: stop before anything stored is changed."""


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


class DataError(FatalError):
    """A data set could not be found, read or parsed."""


class StorageError(FatalError):
    """A storage URL is malformed, unreachable or not writable."""


class StudyNotFoundError(StorageError):
    """A storage holds no study of the name asked for; the message lists the stored ones."""


class TrialFailure(SearchError):
    """One trial failed (exception, out of memory); the worker continues with the next trial."""


class HypermodelError(FatalError):
    """A KerasTuner hypermodel cannot be imported, built or mirrored on Optuna.

    The message names the hyperparameter (or the file) and the problem, e.g.
    ``hyperparameter 'units': sampling must be one of linear, log, reverse_log, got 'cube'.``
    """


class ReplayError(FatalError):
    """A stored trial cannot be re-trained: unknown study or trial, or no result to replay."""


class TrialsKeepFailing(SearchError):
    """A worker stopped because too many trials in a row failed (exit code 1, not 2)."""


class WorkerStopped(KeyboardInterrupt):
    """SIGINT or SIGTERM asked the worker to stop; raised inside a trial to interrupt it.

    A :class:`KeyboardInterrupt` so that no ``except Exception`` in an objective swallows it.
    """

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"worker stopped by {signal_name}")
        self.signal_name = signal_name
