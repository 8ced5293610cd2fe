"""Whole studies with their plots: ``capsearch copy`` and ``capsearch delete``.

A study's trials live in its storage, the PNG of each trial in the storage's artifact store
(:func:`search.views.trial_plots.artifact_dir`). Copying the trials alone
(:func:`search.storage.studies.copy_study`) would leave the copy's dashboard with broken images,
so :func:`copy_with_artifacts` copies each trial's artifact files too (same ids: the copied
trials already name them); :func:`delete_with_artifacts` removes them with the study.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import optuna

from search.storage.opening import close_storage, open_storage
from search.storage.studies import copy_study, delete_study
from search.views.trial_plots import artifact_dir, open_artifact_store

__all__ = ["CopyResult", "artifact_ids", "copy_with_artifacts", "delete_with_artifacts"]


@dataclass(frozen=True)
class CopyResult:
    """What :func:`copy_with_artifacts` copied.

    Attributes:
        trials: Trials copied.
        artifacts: Artifact files (trial plots) copied.
        missing: Artifacts the trials name but the source store does not hold.
        shared: Both storages use one artifact folder: the plots are there already.
    """

    trials: int
    artifacts: int
    missing: int
    shared: bool = False


def artifact_ids(name: str, url: str) -> list[str]:
    """The ids of the artifacts (trial plots) attached to the study ``name`` and its trials."""
    from optuna.artifacts import get_all_artifact_meta

    storage = open_storage(url, create=False)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
        ids = [meta.artifact_id for meta in get_all_artifact_meta(study)]
        for trial in study.get_trials(deepcopy=False):
            ids += [meta.artifact_id for meta in get_all_artifact_meta(trial, storage=storage)]
        return ids
    finally:
        close_storage(storage)


def copy_with_artifacts(name: str, from_url: str, to_url: str) -> CopyResult:
    """Copy the study ``name`` (see :func:`~search.storage.studies.copy_study`) and its plots.

    Raises:
        StorageError: As :func:`~search.storage.studies.copy_study`; nothing is created in the
            destination when the source has no such study.
    """
    trials = copy_study(name, from_url, to_url)
    source_dir = artifact_dir(from_url).resolve()
    if source_dir == artifact_dir(to_url).resolve():
        shared = len(artifact_ids(name, to_url))  # one store for both: nothing to copy
        return CopyResult(trials, shared, 0, shared=True)
    source, destination = open_artifact_store(from_url), open_artifact_store(to_url)
    copied = missing = 0
    for artifact_id in artifact_ids(name, to_url):
        try:
            reader = source.open_reader(artifact_id)
        except Exception:  # the trial names a plot its store lost: count it, go on
            missing += 1
            continue
        with reader:
            destination.write(artifact_id, reader)
        copied += 1
    return CopyResult(trials, copied, missing)


def delete_with_artifacts(name: str, url: str) -> tuple[int, int | None]:
    """Delete the study ``name`` with its trials, and its plots where no other storage shares them.

    Plot files are removed only when the artifact folder belongs to this SQLite file alone (no
    other ``.db`` file beside it): a copy in a storage that shares the folder names the same
    files, and must keep its plots.

    Returns:
        The trials deleted, and the plot files removed (None when they were kept as shared).

    Raises:
        StudyNotFoundError: No such study (nothing is deleted or created).
        StorageError: The storage cannot be opened.
    """
    ids = artifact_ids_or_none(name, url)
    count = delete_study(name, url)
    if not _artifacts_own(url):
        return count, None
    store = artifact_dir(url)
    removed = 0
    for artifact_id in ids:
        path = store / artifact_id
        with contextlib.suppress(OSError):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed += 1
    return count, removed


def _artifacts_own(url: str) -> bool:
    """Whether the artifact folder of ``url`` serves this SQLite file only."""
    from sqlalchemy.engine import make_url

    try:
        database = make_url(url).database
    except Exception:
        return False
    if not database or not make_url(url).drivername.startswith("sqlite"):
        return False
    path = Path(database).absolute()
    if artifact_dir(url).absolute() != path.parent / "artifacts":
        return False  # $CAPSEARCH_ARTIFACTS: one folder for every storage
    return [p.name for p in path.parent.glob("*.db")] == [path.name]


def artifact_ids_or_none(name: str, url: str) -> list[str]:
    """:func:`artifact_ids`, or an empty list when the study is not there (delete says so)."""
    try:
        return artifact_ids(name, url)
    except KeyError:
        return []
