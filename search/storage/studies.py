"""Whole studies in a storage: list them, copy one to another storage, delete one.

Each function opens the storages it needs for the one task and closes their connections
before it returns.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import optuna
import sqlalchemy.exc

from search._compat import optuna as optuna_compat
from search.errors import StorageError, StudyNotFoundError
from search.storage.opening import OpenedStorage, _fail, _reason, close_storage, open_storage
from search.storage.proxy import LOCK_STUDY_PREFIX
from search.storage.urls import mask_text, mask_url, resolve_storage_url

__all__ = [
    "StoredStudy",
    "StudySummaryRow",
    "copy_study",
    "delete_study",
    "delete_study_if_present",
    "list_studies",
    "load_stored_study",
]

_logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class StoredStudy:
    """A study loaded from a storage, with the URL it came from (to name it in messages)."""

    study: optuna.Study
    url: str


def load_stored_study(name: str, storage: str | None) -> StoredStudy:
    """Load a stored study: the one way every command reads a study it did not create.

    Args:
        name: Study name.
        storage: Storage URL (``None``: ``$CAPSEARCH_STORAGE``, else the default file).

    Raises:
        StudyNotFoundError: No study ``name`` there (the message lists the stored ones).
        StorageError: The storage cannot be opened (a missing SQLite file included).
    """
    url = resolve_storage_url(storage)
    rdb = open_storage(url, create=False)
    try:
        return StoredStudy(optuna.load_study(study_name=name, storage=rdb), url)
    except KeyError:
        stored = ", ".join(s.study_name for s in optuna.get_all_study_summaries(rdb)) or "(none)"
        raise StudyNotFoundError(
            f"no study {name!r} in {mask_url(url)}; stored studies: {stored}. "
            f"Run it first (capsearch run {name}) or pass the --storage that holds it."
        ) from None


def list_studies(url: str) -> list[StudySummaryRow]:
    """Summarise every study in a storage, sorted by name.

    The storage is opened with ``create=False``: a missing SQLite file is an error.

    Args:
        url: Storage URL.

    Returns:
        One row per study.

    Raises:
        StorageError: The storage cannot be opened or read.
    """
    storage = open_storage(url, create=False)
    try:
        rows = []
        for study in storage.get_all_studies():
            if study.study_name.startswith(LOCK_STUDY_PREFIX):  # a proxy's study lock
                continue
            trials = storage.get_all_trials(optuna_compat.study_id(study), deepcopy=False)
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


def _study_id(storage: optuna.storages.BaseStorage, name: str) -> int | None:
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        return None


def _dispose(storage: OpenedStorage) -> None:
    """Close the connections of a storage this module opened for a one-off task."""
    close_storage(storage)


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
    """
    source = open_storage(from_url, create=False)
    try:  # the source is checked before the destination is opened (and maybe created)
        source_id = _study_id(source, name)
        if source_id is None:
            raise StorageError(
                f"No study '{name}' in {mask_url(from_url)}; "
                "check the name with the list command or pass the storage that holds it."
            )
        destination = open_storage(to_url, create=True)
    except StorageError:
        _dispose(source)
        raise
    try:
        if _study_id(destination, name) is not None:
            raise StorageError(
                f"Study '{name}' already exists in {mask_url(to_url)}; "
                f"delete it or choose another name (capsearch delete {name} --storage URL "
                "deletes it)."
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
                f"delete it or choose another name (capsearch delete {name} --storage URL "
                "deletes it)."
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


def _delete_partial(storage: optuna.storages.BaseStorage, name: str) -> None:
    study_id = _study_id(storage, name)
    if study_id is None:
        return
    try:
        storage.delete_study(study_id)
    except Exception:  # keep the original error; the leftover study is logged
        _logger.warning("Could not delete the partial copy of study '%s'.", name)


def delete_study_if_present(url: str, name: str) -> bool:
    """Delete the study ``name`` with all its trials from the storage at ``url``, if it is there.

    The storage is opened like :func:`~search.storage.opening.open_storage` opens it by default
    (with ``create=True``: a missing SQLite file or missing Optuna tables are created, so the
    call works on any storage that can be reached).

    Args:
        url: Storage URL.
        name: Study name.

    Returns:
        True if the study was there and is deleted, False if there was no such study.

    Raises:
        StorageError: The storage cannot be opened.
    """
    storage = open_storage(url)
    try:
        study_id = _study_id(storage, name)
        if study_id is None:
            return False
        storage.delete_study(study_id)
        return True
    finally:
        _dispose(storage)


def delete_study(name: str, url: str) -> int:
    """Delete the stored study ``name`` with all its trials; the storage must exist.

    Unlike :func:`delete_study_if_present`, nothing is created: a missing SQLite file or a
    missing study is an error.

    Args:
        name: Study name.
        url: Storage URL.

    Returns:
        The number of trials deleted with the study.

    Raises:
        StudyNotFoundError: No study ``name`` there (the message lists the stored ones).
        StorageError: The storage cannot be opened or the study cannot be deleted.
    """
    storage = open_storage(url, create=False)
    try:
        study_id = _study_id(storage, name)
        if study_id is None:
            stored = ", ".join(s.study_name for s in storage.get_all_studies()) or "(none)"
            raise StudyNotFoundError(
                f"no study {name!r} in {mask_url(url)}; stored studies: {stored}. "
                "Check the name (capsearch list) or pass the --storage that holds it."
            )
        count = storage.get_n_trials(study_id)
        try:
            storage.delete_study(study_id)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise _fail(
                url, f"cannot delete study {name!r} ({_reason(exc, url)})", "check the database"
            ) from exc
        return count
    finally:
        _dispose(storage)
