"""The private names of Optuna, TensorFlow and KerasTuner that ``search._compat`` relies on.

One test per name (or per group used together): it still exists and behaves as the adapter
relies on. After an upgrade that drops or changes one, the failing test names the library and
its installed version; the adapter's docstring lists what was checked.
"""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from search._compat import optuna as optuna_compat
from search._compat import private_attr

OPTUNA = f"optuna {optuna.__version__}"

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(params=["memory", "sqlite"])
def study(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[optuna.Study]:
    """A study in memory and one on an SQLite file (Optuna wraps the latter in its cache)."""
    if request.param == "memory":
        yield optuna.create_study()
        return
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'compat.db'}")
    try:
        yield optuna.create_study(study_name="compat", storage=storage)
    finally:
        storage.engine.dispose()


@pytest.fixture
def heartbeat_storage(tmp_path: Path) -> Iterator[optuna.storages.RDBStorage]:
    """An SQLite storage with heartbeats every second, stale after two."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            f"sqlite:///{tmp_path / 'beats.db'}", heartbeat_interval=1, grace_period=2
        )
    try:
        yield storage
    finally:
        storage.engine.dispose()


def _age_heartbeat(storage: optuna.storages.RDBStorage, trial_id: int, seconds: int) -> None:
    """Move a trial's last heartbeat ``seconds`` into the past."""
    with storage.engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("UPDATE trial_heartbeats SET heartbeat = :t WHERE trial_id = :i"),
            {"t": datetime.datetime.utcnow() - datetime.timedelta(seconds=seconds), "i": trial_id},
        )


# --------------------------------------------------------------------------------------------
# The adapters' own error
# --------------------------------------------------------------------------------------------


def test_a_missing_private_name_is_reported_with_the_library_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(RuntimeError, match=r"optuna 9\.9\.9 has no object\._gone.*4\.2 to 5\.0"):
        private_attr(object(), "_gone", "optuna", "9.9.9", "4.2 to 5.0")
    study = optuna.create_study()
    monkeypatch.delattr(study, "_thread_local")
    with pytest.raises(RuntimeError, match=rf"{OPTUNA} has no Study\._thread_local"):
        optuna_compat.forget_cached_trials(study)


# --------------------------------------------------------------------------------------------
# Optuna
# --------------------------------------------------------------------------------------------


def test_study_storage_and_ids(study: optuna.Study) -> None:
    # Study._storage, Study._study_id, FrozenStudy._study_id, (Frozen)Trial._trial_id and
    # _CachedStorage._backend.
    storage = optuna_compat.study_storage(study)
    assert isinstance(storage, optuna.storages.BaseStorage), OPTUNA
    assert optuna_compat.study_id(study) == storage.get_study_id_from_name(study.study_name)
    (frozen_study,) = storage.get_all_studies()
    assert optuna_compat.study_id(frozen_study) == optuna_compat.study_id(study), OPTUNA
    trial = study.ask()
    trial_id = optuna_compat.trial_id(trial)
    assert storage.get_trial(trial_id).number == trial.number, OPTUNA
    assert optuna_compat.trial_id(study.trials[0]) == trial_id, OPTUNA
    rdb = optuna_compat.rdb_storage(study)
    if isinstance(storage, optuna.storages.InMemoryStorage):
        assert rdb is None
    else:
        assert isinstance(rdb, optuna.storages.RDBStorage), f"{OPTUNA}: no RDB under the cache"
        assert rdb is not storage and rdb.get_trial(trial_id).number == trial.number


def test_optimize_loop_flags_allow_stop_and_quiet_ask(
    heartbeat_storage: optuna.storages.RDBStorage,
) -> None:
    # Study._stop_flag and Study._thread_local.in_optimize_loop: what study.stop() and ask()
    # read.
    study = optuna.create_study(storage=heartbeat_storage)
    with pytest.raises(RuntimeError):  # outside an optimize loop, as Optuna documents
        study.stop()
    with warnings.catch_warnings(record=True) as outside:
        warnings.simplefilter("always")
        study.ask()
    assert any("Heartbeat" in str(w.message) for w in outside), f"{OPTUNA}: no warning"
    with optuna_compat.optimize_loop(study):
        assert not optuna_compat.stop_requested(study)
        with warnings.catch_warnings(record=True) as inside:
            warnings.simplefilter("always")
            study.ask()
        assert not [w for w in inside if "Heartbeat" in str(w.message)], OPTUNA
        study.stop()
        assert optuna_compat.stop_requested(study), OPTUNA
    with pytest.raises(RuntimeError):  # the flag is reset when the block ends
        study.stop()


def test_take_waiting_trial_writes_the_attributes_before_the_trial_leaves_the_queue(
    study: optuna.Study, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Study._pop_waiting_trial_id's loop on public storage calls: the first step of ask.
    assert optuna_compat.take_waiting_trial(study, {"worker": "w1"}) is None
    study.enqueue_trial({"x": 1.0})
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    storage = optuna_compat.study_storage(study)
    running = storage.set_trial_state_values

    def died_at_the_state_change(trial_id: int, state: TrialState, values: Any = None) -> bool:
        if state == TrialState.RUNNING:
            raise ConnectionError("the taker died here")
        return running(trial_id, state, values)

    monkeypatch.setattr(storage, "set_trial_state_values", died_at_the_state_change)
    with pytest.raises(ConnectionError):
        optuna_compat.take_waiting_trial(study, {"worker": "w1"}, {"token": "t1"})
    assert study.get_trials()[0].state == TrialState.WAITING, OPTUNA  # still queued, not lost
    monkeypatch.setattr(storage, "set_trial_state_values", running)
    taken = optuna_compat.take_waiting_trial(study, {"worker": "w2"}, {"token": "t2"})
    assert taken == optuna_compat.trial_id(waiting), OPTUNA
    (trial,) = study.get_trials()
    assert trial.state == TrialState.RUNNING, OPTUNA
    assert trial.system_attrs["fixed_params"] == {"x": 1.0}, OPTUNA  # the enqueued values
    assert trial.user_attrs == {"worker": "w2"} and trial.system_attrs["token"] == "t2", OPTUNA
    assert optuna_compat.take_waiting_trial(study, {"worker": "w3"}) is None, OPTUNA


def test_create_trial_writes_the_template_with_the_trial(study: optuna.Study) -> None:
    # Study._storage.create_new_trial(Study._study_id, template_trial=...).
    new_id = optuna_compat.create_trial(study, optuna_compat.running_trial_template({"w": "w1"}))
    (trial,) = study.get_trials()
    assert optuna_compat.trial_id(trial) == new_id and trial.number == 0, OPTUNA
    assert trial.state == TrialState.RUNNING and trial.user_attrs == {"w": "w1"}, OPTUNA
    assert trial.datetime_start is not None, OPTUNA


def test_reserve_then_open_is_ask_in_two_halves(study: optuna.Study) -> None:
    # The copy of Study.ask the trial loop runs: reserve under the lock, open outside.
    study.enqueue_trial({"x": 0.25})
    fresh = optuna_compat.reserve_trial(study, {"worker": "w1"}, waiting=False)
    popped = optuna_compat.reserve_trial(study, {"worker": "w2"})
    by_id = {optuna_compat.trial_id(t): t for t in study.get_trials()}
    assert by_id[popped].number == 0 and by_id[fresh].number == 1, OPTUNA  # the enqueued one
    assert [by_id[i].user_attrs for i in (fresh, popped)] == [{"worker": "w1"}, {"worker": "w2"}]
    assert {t.state for t in by_id.values()} == {TrialState.RUNNING}, OPTUNA
    trial = optuna_compat.open_trial(study, popped)
    assert trial.suggest_float("x", 0, 1) == 0.25, f"{OPTUNA}: the enqueued params are lost"
    study.tell(trial, 0.25)
    assert study.best_trial.number == 0


def test_forget_cached_trials_makes_the_study_read_the_storage_again(study: optuna.Study) -> None:
    # Study._thread_local.cached_all_trials: what ask() clears first.
    thread_local = study._thread_local  # noqa: SLF001  (the name under test)
    thread_local.cached_all_trials = []
    optuna_compat.forget_cached_trials(study)
    assert thread_local.cached_all_trials is None, OPTUNA


def test_stale_trial_ids_leaves_the_stale_trials_running(
    heartbeat_storage: optuna.storages.RDBStorage,
) -> None:
    # RDBStorage._get_stale_trial_ids: stale means a heartbeat older than the grace period.
    study = optuna.create_study(storage=heartbeat_storage)
    with optuna_compat.optimize_loop(study):
        beating, stale, silent = study.ask(), study.ask(), study.ask()
    for trial in (beating, stale):
        heartbeat_storage.record_heartbeat(optuna_compat.trial_id(trial))
    _age_heartbeat(heartbeat_storage, optuna_compat.trial_id(stale), seconds=60)
    ids = optuna_compat.stale_trial_ids(heartbeat_storage, study)
    assert ids == [optuna_compat.trial_id(stale)], f"{OPTUNA}: {ids}"
    assert heartbeat_storage.get_trial(ids[0]).state == TrialState.RUNNING, OPTUNA
    # Never beating: not stale for Optuna (capsearch finds those itself), no heartbeat row.
    all_ids = [optuna_compat.trial_id(t) for t in (beating, stale, silent)]
    found = optuna_compat.beating_trial_ids(heartbeat_storage, all_ids)
    assert found == set(all_ids[:2]), OPTUNA
    assert optuna_compat.beating_trial_ids(heartbeat_storage, []) == set()


def test_rdb_models_have_the_columns_queried() -> None:
    # optuna.storages._rdb.models: the trials and trial_heartbeats tables.
    from optuna.storages._rdb import models

    trials = models.TrialModel.__table__
    assert trials.name == "trials", OPTUNA
    assert {"trial_id", "study_id", "state"} <= set(trials.columns.keys()), OPTUNA
    beats = models.TrialHeartbeatModel.__table__
    assert beats.name == "trial_heartbeats", OPTUNA
    assert {"trial_id", "heartbeat"} <= set(beats.columns.keys()), OPTUNA
    attrs = models.TrialSystemAttributeModel.__table__
    assert attrs.name == "trial_system_attributes", OPTUNA
    assert {"trial_id", "key", "value_json"} <= set(attrs.columns.keys()), OPTUNA


def test_running_trials_are_found_by_a_system_attribute(tmp_path: Path) -> None:
    # TrialModel joined with TrialSystemAttributeModel: a reservation's token finds its trial.
    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'tokens.db'}")
    study = optuna.create_study(storage=rdb)
    study.enqueue_trial({"x": 1.0})
    popped = optuna_compat.reserve_trial(study, {}, system_attrs={"token": "a"})
    fresh = optuna_compat.reserve_trial(study, {}, waiting=False, system_attrs={"token": "b"})
    done = optuna_compat.reserve_trial(study, {}, waiting=False, system_attrs={"token": "b"})
    rdb.set_trial_state_values(done, TrialState.COMPLETE, [1.0])  # finished: not found
    with rdb.engine.connect() as connection:
        found = {
            token: optuna_compat.running_trials_with_system_attr(connection, study, "token", token)
            for token in ("a", "b", "c")
        }
    rdb.engine.dispose()
    assert found == {"a": [popped], "b": [fresh], "c": []}, f"{OPTUNA}: {found}"


def test_widen_choices_rewrites_the_stored_choice_lists_and_keeps_every_value(
    tmp_path: Path,
) -> None:
    # TrialParamModel (trial_params: param_name, param_value, distribution_json),
    # StudyUserAttributeModel (study_user_attributes: study_id, key, value_json) and
    # _CachedStorage._studies: the stored trials take a longer choice list with the study's
    # attributes, in one transaction, cache dropped.
    from optuna.storages._rdb import models

    params = models.TrialParamModel.__table__
    assert params.name == "trial_params", OPTUNA
    assert {"trial_id", "param_name", "param_value", "distribution_json"} <= set(
        params.columns.keys()
    ), OPTUNA
    attrs = models.StudyUserAttributeModel.__table__
    assert attrs.name == "study_user_attributes", OPTUNA
    assert {"study_id", "key", "value_json"} <= set(attrs.columns.keys()), OPTUNA
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'widen.db'}")
    assert isinstance(getattr(study._storage, "_studies", None), dict), OPTUNA
    for batch, act in ((512, "relu"), (64, "tanh"), (512, "tanh")):
        study.enqueue_trial({"batch": batch, "act": act})

    def objective(trial: optuna.Trial) -> float:
        act = trial.suggest_categorical("act", ["relu", "tanh"])
        return float(trial.suggest_categorical("batch", [64, 512])) + len(act)

    study.optimize(objective, n_trials=3)
    assert [t.params["batch"] for t in study.trials] == [512, 64, 512]  # read: now cached
    study.set_user_attr("space", "old")
    wider = [32, 512, 64]  # another order: the stored indices are re-pointed

    def is_batch(name: str) -> bool:
        return name == "batch"

    # A write that fails inside the transaction (a value JSON cannot store) changes nothing.
    with pytest.raises(TypeError):
        optuna_compat.widen_choices(study, [(is_batch, wider)], user_attrs={"bad": object()})
    assert {t.distributions["batch"].choices for t in study.trials} == {(64, 512)}
    assert study.user_attrs == {"space": "old"}
    rewritten = optuna_compat.widen_choices(
        study, [(is_batch, wider)], user_attrs={"space": "new", "added": [1]}
    )
    assert rewritten == 3
    assert study.user_attrs == {"space": "new", "added": [1]}, OPTUNA
    assert [t.params["batch"] for t in study.trials] == [512, 64, 512], OPTUNA
    assert {t.distributions["batch"].choices for t in study.trials} == {(32, 512, 64)}, OPTUNA
    assert {t.distributions["act"].choices for t in study.trials} == {("relu", "tanh")}
    # The study goes on with the longer list; Optuna refuses the old one now.
    study.optimize(lambda t: t.suggest_categorical("batch", wider), n_trials=2)
    assert all(t.state == TrialState.COMPLETE for t in study.trials), OPTUNA
    with pytest.raises(ValueError, match="in the new choices"):
        optuna_compat.widen_choices(study, [(is_batch, [32, 64])], user_attrs={"space": "x"})
    assert [t.params["batch"] for t in study.trials][:3] == [512, 64, 512]  # nothing changed
    assert study.user_attrs["space"] == "new"


def test_state_counts_query_counts_each_state(tmp_path: Path) -> None:
    rdb = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'counts.db'}")
    study = optuna.create_study(storage=rdb)
    study.enqueue_trial({"x": 1.0})
    study.ask()  # takes the enqueued trial
    study.tell(study.ask(), 1.0)
    study.tell(study.ask(), state=TrialState.PRUNED)
    study.enqueue_trial({"x": 2.0})
    with rdb.engine.connect() as connection:
        counts = dict(connection.execute(optuna_compat.state_counts_query(study)).all())
    rdb.engine.dispose()
    expected = {TrialState.RUNNING: 1, TrialState.COMPLETE: 1, TrialState.PRUNED: 1}
    assert counts == {**expected, TrialState.WAITING: 1}, f"{OPTUNA}: {counts}"


def test_every_retried_storage_method_exists_and_ask_and_tell_go_through_them(
    tmp_path: Path,
) -> None:
    # RDB_TRANSACTION_METHODS, _get_trials and _get_stale_trial_ids among them, set on the
    # instance: Optuna's cache and the storage call them through it.
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'wrapped.db'}")
    calls: dict[str, int] = {}

    def wrap(method: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            calls[method.__name__] = calls.get(method.__name__, 0) + 1
            return method(*args, **kwargs)

        return counted

    try:
        optuna_compat.wrap_storage_methods(storage, wrap)
        study = optuna.create_study(storage=storage)
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        trial.report(0.5, step=0)
        study.tell(trial, 0.5)
        study.get_trials()
    finally:
        storage.engine.dispose()
    for name in (
        "_create_new_trial",
        "set_trial_intermediate_value",
        "set_trial_state_values",
        "_get_trials",
    ):
        assert calls.get(name), f"{OPTUNA}: {name} was not called through the instance: {calls}"
    # The parameter goes through the private method where the storage has one.
    param_writer = "_set_trial_param" if hasattr(storage, "_set_trial_param") else "set_trial_param"
    assert calls.get(param_writer), f"{OPTUNA}: {param_writer} was not called: {calls}"


# --------------------------------------------------------------------------------------------
# TensorFlow
# --------------------------------------------------------------------------------------------


def test_gradient_registry_holds_custom_gradients_until_removed() -> None:
    # ops._gradient_registry._registry and the CustomGradient- prefix.
    import tensorflow as tf

    from search._compat import tensorflow as tf_compat

    version = f"tensorflow {tf.__version__}"
    registrations = tf_compat.gradient_registrations()
    assert isinstance(registrations, MutableMapping), version
    assert "MatMul" in registrations, f"{version}: built-in gradients are registered elsewhere"
    before = set(registrations)

    @tf.custom_gradient
    def doubled(x: Any) -> Any:
        return 2 * x, lambda dy: 2 * dy

    @tf.function
    def gradient(x: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = doubled(x)
        return tape.gradient(y, x)

    assert float(gradient(tf.constant(3.0))) == 2.0
    added = set(registrations) - before
    assert added, f"{version}: a traced tf.custom_gradient registered nothing"
    assert all(n.startswith(tf_compat.CUSTOM_GRADIENT_PREFIX) for n in added), (version, added)
    for name in added:
        del registrations[name]
    assert set(registrations) == before


def test_keras_clear_session_empties_the_kernel_cache_unless_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # context().clear_kernel_cache: the method Keras' clear_session calls.
    import keras
    import tensorflow as tf
    from tensorflow.python.eager import context

    from search._compat import tensorflow as tf_compat

    version = f"tensorflow {tf.__version__}, keras {keras.__version__}"
    calls: list[object] = []
    monkeypatch.setattr(context.Context, "clear_kernel_cache", lambda self: calls.append(self))
    keras.backend.clear_session()
    assert len(calls) == 1, f"{version}: clear_session no longer calls clear_kernel_cache"
    with tf_compat.kernel_cache_kept():
        keras.backend.clear_session()
    assert len(calls) == 1, version
    assert "clear_kernel_cache" not in vars(context.context()), version  # the method is back


# --------------------------------------------------------------------------------------------
# optuna-dashboard
# --------------------------------------------------------------------------------------------


def test_the_dashboard_page_has_its_bundle_tag_and_the_plot_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from search._compat import optuna_dashboard as dashboard_compat

    dashboard_compat.check_page()
    monkeypatch.setattr(dashboard_compat, "PLOT_BACKEND_KEY", "plotBackendGone")
    with pytest.raises(
        RuntimeError, match=r"optuna-dashboard \S+ has no bundle\.js setting plotBack"
    ):
        dashboard_compat.check_page()
    monkeypatch.setattr(dashboard_compat, "BUNDLE_TAG", b"<script src='/gone.js'></script>")
    with pytest.raises(RuntimeError, match=r"has no index\.html's <script src='/gone\.js'>"):
        dashboard_compat.check_page()


# --------------------------------------------------------------------------------------------
# KerasTuner
# --------------------------------------------------------------------------------------------


def test_register_is_called_once_per_declaration() -> None:
    # HyperParameters._register and hp.space: every declaration, with the registered copy.
    import keras_tuner

    from search._compat import keras_tuner as kt_compat

    version = f"keras-tuner {keras_tuner.__version__}"
    seen: list[tuple[str, type, Any, bool]] = []

    class Recording(kt_compat.DeclarationHookHyperParameters):
        def declared(self, hp: Any, value: Any, *, first: bool) -> Any:
            seen.append((hp.name, type(hp), value, first))
            return value

    hp = Recording()
    assert hp.Int("units", 4, 64, default=8) == 8
    assert hp.Float("rate", 0.0, 0.5, default=0.1) == 0.1
    assert hp.Choice("act", ["relu", "tanh"]) == "relu"
    assert hp.Boolean("bn") is False
    assert hp.Fixed("depth", 2) == 2
    with hp.conditional_scope("act", ["tanh"]):
        assert hp.Int("tanh_only", 1, 3) is None  # inactive: KerasTuner gives None
    assert [(name, kind, value) for name, kind, value, _ in seen] == [
        ("units", kt_compat.Int, 8),
        ("rate", kt_compat.Float, 0.1),
        ("act", kt_compat.Choice, "relu"),
        ("bn", kt_compat.Boolean, False),
        ("depth", kt_compat.Fixed, 2),
        ("tanh_only", kt_compat.Int, None),
    ], version
    assert all(first for *_, first in seen), version
    again = Recording()
    again.values["units"] = 32  # chosen before, as an oracle's values are
    assert again.Int("units", 4, 64) == 32
    assert seen[-1] == ("units", kt_compat.Int, 32, False), version


def test_tuner_hooks_exist_and_run_in_a_search(tmp_path: Path) -> None:
    # Tuner._try_build and Tuner._configure_tensorboard_dir, called by name during a search.
    import keras
    import keras_tuner
    import numpy as np

    from search._compat import keras_tuner as kt_compat

    version = f"keras-tuner {keras_tuner.__version__}"
    for tuner_class in (
        keras_tuner.RandomSearch,
        keras_tuner.Hyperband,
        keras_tuner.BayesianOptimization,
    ):
        kt_compat.check_hooks(
            tuner_class, (kt_compat.TRY_BUILD, kt_compat.CONFIGURE_TENSORBOARD_DIR)
        )
    kt_compat.check_hooks(keras_tuner.HyperParameters, (kt_compat.REGISTER,))
    builds: list[int] = []

    class Counted(kt_compat.TunerHooks, keras_tuner.RandomSearch):
        def before_build(self) -> None:
            builds.append(1)

    def build(hp: keras_tuner.HyperParameters) -> keras.Model:
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(hp.Int("u", 1, 2))])
        model.compile(optimizer="sgd", loss="mse")
        return model

    tuner = Counted(
        build, objective="val_loss", max_trials=1, directory=str(tmp_path), project_name="p"
    )
    x = np.zeros((8, 2), dtype="float32")
    tuner.search(x, x[:, :1], validation_data=(x, x[:, :1]), epochs=1, verbose=0)
    assert builds, f"{version}: the search did not build through {kt_compat.TRY_BUILD}"


def test_a_hook_that_is_gone_fails_when_the_subclass_is_defined() -> None:
    import keras_tuner

    from search._compat import keras_tuner as kt_compat

    class NoHooks:
        pass

    with pytest.raises(RuntimeError, match=rf"keras-tuner {keras_tuner.__version__} has no"):
        kt_compat.check_hooks(NoHooks, (kt_compat.TRY_BUILD,))
    with pytest.raises(RuntimeError, match="_try_build"):

        class Broken(kt_compat.TunerHooks, NoHooks):
            pass
