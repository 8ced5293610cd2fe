"""Optuna's private names capsearch relies on, each behind one small function.

Checked with Optuna 4.2.0 and 5.0.0 (``tests/test_compat.py`` passes on both); the dependency
bound ``optuna>=4.2,<5.1`` keeps the installed version among them. What is used:

* ``Study._storage``, ``Study._study_id``, ``FrozenStudy._study_id``, ``Trial._trial_id`` and
  ``FrozenTrial._trial_id``: the storage and database ids behind the public objects (Optuna has
  no public accessor for them); ``_CachedStorage._backend``: the RDB storage a study wraps.
* ``Study._stop_flag`` and ``Study._thread_local.in_optimize_loop``: what ``study.optimize``
  sets so that ``study.stop()`` works in callbacks and ``ask()`` does not warn about
  heartbeats; a loop of its own around ``ask`` and ``tell`` sets them the same way.
* ``Study._thread_local.cached_all_trials``: what ``Study.ask`` clears before it takes an
  enqueued or re-queued trial (else creates one), so that a caller can run that database part
  alone under a lock (:func:`reserve_trial`, then :func:`open_trial`);
  ``search.engine.trial_loop`` says why, with figures. The taking itself is
  ``Study._pop_waiting_trial_id``'s loop over public storage calls (:func:`take_waiting_trial`),
  with the caller's attributes written before the trial leaves the queue.
* ``RDBStorage._get_stale_trial_ids``: the RUNNING trials whose heartbeat is older than the
  grace period, without failing them (the public ``fail_stale_trials`` fails them at once,
  before a reason can be stored on them).
* ``optuna.storages._rdb.models``: the ``trials`` table (``study_id``, ``state``), the
  ``trial_heartbeats`` table (``trial_id``) and the ``trial_system_attributes`` table
  (``trial_id``, ``key``, ``value_json``), read with one query each instead of loading every
  trial.
* ``optuna.storages._rdb.models``' ``trial_params`` table (``param_name``, ``param_value``,
  ``distribution_json``), ``study_user_attributes`` table (``study_id``, ``key``,
  ``value_json``) and ``_CachedStorage._studies``: choice lists widened on the stored trials
  with the study's attributes (:func:`widen_choices`), in one transaction, and the cached
  copies dropped.
* ``RDBStorage._create_new_trial``, ``_get_trials``, ``_get_stale_trial_ids`` (and
  ``_set_trial_param`` in 5.0) among the methods :data:`RDB_TRANSACTION_METHODS` lists: each is
  one transaction, and Optuna (its cache included) calls them through the instance, so
  patching them there wraps every call.
"""

from __future__ import annotations

import contextlib
import datetime
import json
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna
import sqlalchemy
from optuna.distributions import CategoricalDistribution, distribution_to_json, json_to_distribution
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from search._compat import private_attr

if TYPE_CHECKING:  # what ``storage.get_all_studies()`` returns; not exported by Optuna
    from optuna.study._frozen import FrozenStudy

__all__ = [
    "CHECKED_VERSIONS",
    "RDB_TRANSACTION_METHODS",
    "RDB_TRANSACTION_METHODS_IF_PRESENT",
    "Widening",
    "beating_trial_ids",
    "create_trial",
    "forget_cached_trials",
    "open_trial",
    "optimize_loop",
    "rdb_storage",
    "reserve_trial",
    "running_trials_with_system_attr",
    "running_trial_template",
    "stale_trial_ids",
    "state_counts_query",
    "stop_requested",
    "study_id",
    "study_storage",
    "take_waiting_trial",
    "trial_id",
    "widen_choices",
    "wrap_storage_methods",
]

CHECKED_VERSIONS = "4.2 to 5.0"
"""The Optuna versions these functions were checked with."""

RDB_TRANSACTION_METHODS = (
    "create_new_trial",
    "_create_new_trial",
    "set_trial_param",
    "set_trial_state_values",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "set_study_user_attr",
    "set_study_system_attr",
    "record_heartbeat",
    "get_trial",
    "get_all_trials",
    "_get_trials",
    "_get_stale_trial_ids",
    "get_n_trials",
    "get_study_id_from_name",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
)
"""``RDBStorage`` methods that are each one database transaction (a lock conflict rolls one back
whole, so calling it again is safe, trial creation included). Optuna's cache in front of the
storage creates trials through the private ``_create_new_trial`` and reads them through
``_get_trials``, so the public names alone would miss the calls a study makes."""

RDB_TRANSACTION_METHODS_IF_PRESENT = ("_set_trial_param",)
"""Further one-transaction methods that only some checked versions have: from Optuna 5.0 the
cache writes parameters through ``_set_trial_param`` (4.2 calls ``set_trial_param``)."""


def _get(obj: Any, name: str) -> Any:
    return private_attr(obj, name, "optuna", optuna.__version__, CHECKED_VERSIONS)


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage a study reads and writes through (Optuna's cache around an RDB storage)."""
    storage: BaseStorage = _get(study, "_storage")
    return storage


def rdb_storage(study: optuna.Study) -> RDBStorage | None:
    """The :class:`~optuna.storages.RDBStorage` under a study, or None for other storages.

    Optuna wraps an RDB storage in its private ``_CachedStorage``, whose ``_backend`` it is.

    Example:
        >>> rdb_storage(optuna.create_study(storage=RDBStorage("sqlite://"))) is not None
        True
    """
    storage = study_storage(study)
    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, RDBStorage) else None


def study_id(study: optuna.Study | FrozenStudy) -> int:
    """The database id of a study (storage methods take it, not the name)."""
    value: int = _get(study, "_study_id")
    return value


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (unique in the storage, unlike ``trial.number``)."""
    value: int = _get(trial, "_trial_id")
    return value


@contextlib.contextmanager
def optimize_loop(study: optuna.Study) -> Iterator[None]:
    """Mark the block as an optimize loop, as ``study.optimize`` does around its trials.

    Inside, ``study.stop()`` (from a callback) is allowed and sets :func:`stop_requested`, and
    ``study.ask()`` on a storage with heartbeats does not warn that heartbeats are meant for
    ``optimize``.

    Example:
        >>> study = optuna.create_study()
        >>> with optimize_loop(study):
        ...     study.stop()  # raises RuntimeError outside the block
        >>> stop_requested(study)
        True
    """
    thread_local = _get(study, "_thread_local")
    _get(study, "_stop_flag")  # present, so that the assignments below are read by Optuna
    _get(thread_local, "in_optimize_loop")
    study._stop_flag = False
    thread_local.in_optimize_loop = True
    try:
        yield
    finally:
        thread_local.in_optimize_loop = False


def stop_requested(study: optuna.Study) -> bool:
    """Whether ``study.stop()`` was called since :func:`optimize_loop` began."""
    return bool(_get(study, "_stop_flag"))


def forget_cached_trials(study: optuna.Study) -> None:
    """Drop the trials the study cached in this thread, as ``Study.ask`` does first.

    ``ask`` then reads the storage again, so a trial another process just enqueued is seen.
    """
    thread_local = _get(study, "_thread_local")
    _get(thread_local, "cached_all_trials")
    thread_local.cached_all_trials = None


def take_waiting_trial(
    study: optuna.Study, user_attrs: dict[str, Any], system_attrs: dict[str, Any] | None = None
) -> int | None:
    """Take the oldest WAITING trial (enqueued or re-queued): RUNNING, with the attributes.

    The first step of ``Study.ask`` (``Study._pop_waiting_trial_id``'s loop: a trial another
    process took meanwhile is skipped), except that the attributes are written while the trial
    still waits and only then is it made RUNNING. A process that dies between the two leaves a
    WAITING trial that the next reservation takes, never a RUNNING one without its worker's id
    or reservation token (which only the orphan check would find, a grace period later). Run it
    under the study lock, as the trial loop and the proxy do: two takers racing without it
    could each write their attributes onto the trial one of them takes.

    Returns:
        Its trial id, or None when no trial waits.

    Example:
        >>> study = optuna.create_study()
        >>> study.enqueue_trial({"x": 1.0})
        >>> taken = take_waiting_trial(study, {"worker": "w1"})
        >>> study.trials[0].state.name, study.trials[0].user_attrs
        ('RUNNING', {'worker': 'w1'})
        >>> take_waiting_trial(study, {"worker": "w2"}) is None
        True
    """
    storage = study_storage(study)
    waiting = storage.get_all_trials(study_id(study), deepcopy=False, states=(TrialState.WAITING,))
    for trial in waiting:
        taken = trial_id(trial)
        try:
            for key, value in user_attrs.items():
                storage.set_trial_user_attr(taken, key, value)
            for key, value in (system_attrs or {}).items():
                storage.set_trial_system_attr(taken, key, value)
            if not storage.set_trial_state_values(taken, state=TrialState.RUNNING):
                continue  # another process made it RUNNING meanwhile
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process finished it meanwhile
        return taken
    return None


def create_trial(study: optuna.Study, template: FrozenTrial | None = None) -> int:
    """Create a new trial of the study, RUNNING unless ``template`` says otherwise.

    The second step of ``Study.ask``; a ``template`` (e.g. a RUNNING trial with user attributes)
    is written in the same transaction.

    Returns:
        Its trial id.
    """
    return study_storage(study).create_new_trial(study_id(study), template_trial=template)


def running_trial_template(
    user_attrs: dict[str, Any], system_attrs: dict[str, Any] | None = None
) -> FrozenTrial:
    """A RUNNING trial started now with ``user_attrs`` (and ``system_attrs``), for
    :func:`create_trial`.

    Example:
        >>> template = running_trial_template({"worker": "w1"}, {"token": "t"})
        >>> template.state.name, template.user_attrs, template.system_attrs
        ('RUNNING', {'worker': 'w1'}, {'token': 't'})
    """
    return FrozenTrial(
        number=-1,  # numbered by the storage
        state=TrialState.RUNNING,
        value=None,
        datetime_start=datetime.datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs=user_attrs,
        system_attrs=dict(system_attrs or {}),
        intermediate_values={},
        trial_id=-1,
    )


def reserve_trial(
    study: optuna.Study,
    user_attrs: dict[str, Any],
    *,
    waiting: bool = True,
    system_attrs: dict[str, Any] | None = None,
) -> int:
    """The database half of ``Study.ask``: the next trial, RUNNING and carrying ``user_attrs``.

    A WAITING trial (enqueued or re-queued) is taken first, as ``ask`` does; ``waiting=False``
    (the caller counted none) skips that read. A new trial gets ``user_attrs`` and
    ``system_attrs`` in the same transaction that creates it (a taken WAITING trial gets them
    just before it leaves the queue: :func:`take_waiting_trial`). :func:`open_trial` is the
    other half.

    Returns:
        The trial id.

    Example:
        >>> study = optuna.create_study()
        >>> trial = open_trial(study, reserve_trial(study, {"worker": "w1"}))
        >>> trial.number, study.trials[0].state.name, study.trials[0].user_attrs
        (0, 'RUNNING', {'worker': 'w1'})
    """
    forget_cached_trials(study)
    if waiting:
        taken = take_waiting_trial(study, user_attrs, system_attrs)
        if taken is not None:
            return taken
    marked = user_attrs or system_attrs
    return create_trial(study, running_trial_template(user_attrs, system_attrs) if marked else None)


def open_trial(study: optuna.Study, reserved_id: int) -> optuna.Trial:
    """The other half of ``Study.ask``: the :class:`optuna.Trial` of a reserved trial.

    It reads the trial and sets the sampler up for it (in Optuna 4.2 this includes inferring
    the relative search space from every trial), which needs no lock.
    """
    return optuna.Trial(study, reserved_id)


def stale_trial_ids(storage: RDBStorage, study: optuna.Study) -> list[int]:
    """The study's RUNNING trials whose last heartbeat is older than the grace period.

    They are left as they are (the caller stores a reason, then fails them). Trials that never
    sent a heartbeat are not among them.
    """
    stale: Callable[[int], list[int]] = _get(storage, "_get_stale_trial_ids")
    return list(stale(study_id(study)))


def _models() -> Any:
    try:
        from optuna.storages._rdb import models
    except ImportError:
        raise RuntimeError(
            f"optuna {optuna.__version__} has no optuna.storages._rdb.models, which capsearch "
            f"relies on (checked with optuna {CHECKED_VERSIONS}); install a checked version"
        ) from None
    return models


def state_counts_query(study: optuna.Study) -> sqlalchemy.Select[Any]:
    """``SELECT state, count(*) FROM trials WHERE study_id = ? GROUP BY state``.

    Its rows are ``(TrialState, int)`` pairs; one query instead of loading every trial.
    """
    model = _get(_models(), "TrialModel")
    return (
        sqlalchemy.select(model.state, sqlalchemy.func.count())
        .where(model.study_id == study_id(study))
        .group_by(model.state)
    )


def running_trials_with_system_attr(
    connection: sqlalchemy.Connection, study: optuna.Study, key: str, value: Any
) -> list[int]:
    """The ids of the study's RUNNING trials whose system attribute ``key`` is ``value``.

    One query on the ``trials`` and ``trial_system_attributes`` tables (the value compared as
    Optuna stores it, JSON), on ``connection`` (e.g. the study lock's, which sees every commit).
    """
    trial = _get(_models(), "TrialModel")
    attr = _get(_models(), "TrialSystemAttributeModel")
    query = (
        sqlalchemy.select(trial.trial_id)
        .join(attr, attr.trial_id == trial.trial_id)
        .where(trial.study_id == study_id(study))
        .where(trial.state == TrialState.RUNNING)
        .where(attr.key == key)
        .where(attr.value_json == json.dumps(value))
        .order_by(trial.trial_id)
    )
    return [row[0] for row in connection.execute(query)]


def beating_trial_ids(storage: RDBStorage, trial_ids: Collection[int]) -> set[int]:
    """Those of ``trial_ids`` that have sent at least one heartbeat."""
    if not trial_ids:
        return set()
    model = _get(_models(), "TrialHeartbeatModel")
    query = sqlalchemy.select(model.trial_id).where(model.trial_id.in_(list(trial_ids)))
    with storage.engine.connect() as connection:
        return {row[0] for row in connection.execute(query)}


def wrap_storage_methods(
    storage: RDBStorage, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> None:
    """Replace each of :data:`RDB_TRANSACTION_METHODS` on ``storage`` by ``wrap(method)``.

    Set on the instance: the study's cache and the storage itself call them through it (a
    public method that calls a private one of the list goes through both wrappers).
    :data:`RDB_TRANSACTION_METHODS_IF_PRESENT` are wrapped where the installed Optuna has them.

    Raises:
        RuntimeError: One of :data:`RDB_TRANSACTION_METHODS` is gone from the installed Optuna.
    """
    for name in RDB_TRANSACTION_METHODS:
        setattr(storage, name, wrap(_get(storage, name)))
    for name in RDB_TRANSACTION_METHODS_IF_PRESENT:
        method = getattr(storage, name, None)
        if method is not None:
            setattr(storage, name, wrap(method))


Widening = tuple[Callable[[str], bool], Collection[Any]]
"""Which stored parameters (``is_param(name)``) take which longer choice list."""


def widen_choices(
    study: optuna.Study,
    widenings: Sequence[Widening],
    *,
    user_attrs: Mapping[str, Any] | None = None,
) -> int:
    """Give the study's stored categorical parameters longer choice lists, values kept.

    Optuna keeps one choice list per stored parameter and refuses another one; a list that
    only adds choices can still take the stored trials: each stored categorical parameter
    named so that ``is_param(name)`` holds (for the first widening whose ``is_param`` does)
    gets that widening's choices as its distribution and its stored index re-pointed at the
    same value in the new list. The study attributes ``user_attrs`` are written in the same
    transaction on the ``trial_params`` and ``study_user_attributes`` tables, so that a crash
    leaves either the old lists and attributes or the new ones, never a mix. The study's cached
    trials are dropped, so that they are read again.

    Args:
        study: A study in an RDB storage (SQLite, PostgreSQL, MySQL).
        widenings: ``(is_param, choices)`` pairs; ``choices`` must contain every stored value.
        user_attrs: Study user attributes to set with them (JSON values, as Optuna stores).

    Returns:
        The number of stored parameter values rewritten.

    Raises:
        ValueError: The study is not in an RDB storage, or a stored value is not in its new
            choices (nothing is changed).

    Example:
        >>> study = optuna.create_study(storage="sqlite://")
        >>> study.enqueue_trial({"b": 64})
        >>> study.optimize(lambda t: t.suggest_categorical("b", [64, 512]), n_trials=1)
        >>> widen_choices(study, [(lambda name: name == "b", [32, 64, 512])], user_attrs={"v": 2})
        1
        >>> study.trials[0].params, study.trials[0].distributions["b"].choices, study.user_attrs
        ({'b': 64}, (32, 64, 512), {'v': 2})
    """
    storage = rdb_storage(study)
    if storage is None:
        raise ValueError("only a study in a database (sqlite://, postgresql://) can be rewritten")
    lists = [(is_param, CategoricalDistribution(list(choices))) for is_param, choices in widenings]
    trial = _get(_models(), "TrialModel")
    param = _get(_models(), "TrialParamModel")
    rows = (
        sqlalchemy.select(
            param.param_id, param.param_name, param.param_value, param.distribution_json
        )
        .join(trial, trial.trial_id == param.trial_id)
        .where(trial.study_id == study_id(study))
    )
    rewritten = 0
    with storage.engine.begin() as connection:  # all of them or none
        for param_id, name, value, stored_json in connection.execute(rows).all() if lists else []:
            stored = json_to_distribution(stored_json)
            wider = next((d for is_param, d in lists if is_param(name)), None)
            if wider is None or not isinstance(stored, CategoricalDistribution):
                continue
            choice = stored.to_external_repr(value)
            if choice not in wider.choices:  # the transaction is rolled back: nothing changed
                raise ValueError(
                    f"the stored value {choice!r} of {name} is not in the new choices "
                    f"{list(wider.choices)}"
                )
            update = (
                sqlalchemy.update(param)
                .where(param.param_id == param_id)
                .values(
                    param_value=wider.to_internal_repr(choice),
                    distribution_json=distribution_to_json(wider),
                )
            )
            connection.execute(update)
            rewritten += 1
        for key, attr_value in (user_attrs or {}).items():
            _set_study_user_attr(connection, study_id(study), key, attr_value)
    cached = study_storage(study)
    if cached is not storage:  # Optuna's _CachedStorage in front: it reads the trials again
        _get(cached, "_studies").pop(study_id(study), None)
    forget_cached_trials(study)
    return rewritten


def _set_study_user_attr(
    connection: sqlalchemy.Connection, study: int, key: str, value: Any
) -> None:
    """``RDBStorage.set_study_user_attr`` on ``connection``, inside the caller's transaction."""
    attrs = _get(_models(), "StudyUserAttributeModel")
    value_json = json.dumps(value)  # as Optuna stores it; a value it cannot take raises here
    found = connection.execute(
        sqlalchemy.update(attrs)
        .where(attrs.study_id == study, attrs.key == key)
        .values(value_json=value_json)
    )
    if found.rowcount == 0:
        connection.execute(
            sqlalchemy.insert(attrs).values(study_id=study, key=key, value_json=value_json)
        )
