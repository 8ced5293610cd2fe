"""``capsearch verdict STUDY``: plan the re-trainings, run them, compute and store the verdict.

The steps, in order: load the stored study (never created here) and its study file as stored;
refuse what has no verdict (no completed trial, a multi-objective or hypermodel study); load the
data; create or resume the companion study and enqueue the jobs it lacks; run them here or in
``N`` worker processes (``capsearch verdict STUDY --worker-only`` each, on any host too); score
the best configuration on the test split trained on the training rows and on training plus
validation rows; compute the verdict, store it on the companion study and rewrite the study's
note. The original study's trials and attributes are never written.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.console import Echo
from search.data import data_context, load_dataset
from search.distributed.launcher import launch_workers
from search.distributed.liveness import liveness_settings
from search.distributed.study_lock import study_lock
from search.distributed.worker_storage import open_worker_storage
from search.engine.stored import model_params, stored_spec, trial_seed
from search.engine.study import is_multi_objective
from search.engine.trial_loop import run_trials
from search.errors import VerdictError, one_line
from search.spec.studyfile import VerdictSpec
from search.storage.studies import load_stored_study
from search.storage.urls import resolve_storage_url
from search.verdict.compute import compute_verdict
from search.verdict.jobs import JOB_ATTR, Plan, enqueue_missing, plan_jobs, ranked_trials
from search.views.notes import update_study_note
from search.views.summary import format_params
from search.views.verdict_view import VERDICT_ATTR, companion_name

if TYPE_CHECKING:
    from search.data import Dataset
    from search.runs.options import SearchOptions
    from search.spec.studyfile import StudySpec

__all__ = ["give_verdict", "run_verdict_worker"]

TEST_ATTR = "test_scores"


@dataclasses.dataclass
class _Opened:
    spec: StudySpec
    study: optuna.Study
    url: str
    verdict: VerdictSpec


def _open(spec: StudySpec, options: SearchOptions) -> _Opened:
    """The stored study and its stored file; bad input raises before anything is written."""
    url = resolve_storage_url(options.storage)
    study = load_stored_study(spec.name, options.storage).study
    asked = spec.verdict  # a [verdict] table added after the search counts too
    spec = stored_spec(spec, study)
    name = study.study_name
    if is_multi_objective(study):
        raise VerdictError(
            f"study {name} is multi-objective (loss and size); a verdict needs one objective: "
            "read its Pareto front with capsearch show or capsearch report instead."
        )
    if spec.hypermodel is not None:
        raise VerdictError(
            f"study {name} trains a [hypermodel]; the verdict re-trains the built-in model "
            "family only."
        )
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise VerdictError(
            f"study {name} has no finished trial yet; run it first (capsearch run {name})."
        )
    return _Opened(spec, study, url, spec.verdict or asked or VerdictSpec())


def _dataset(spec: StudySpec, options: SearchOptions) -> Dataset:
    """The study's data; a loader that finds nothing says where it looked (DataError)."""
    context = data_context(spec.path.parent, options.data)
    return load_dataset(spec.data.source, spec.data.options, context)


def _companion(opened: _Opened, storage: optuna.storages.BaseStorage) -> optuna.Study:
    name = companion_name(opened.study.study_name)
    with study_lock(storage, name):
        companion = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=optuna.samplers.RandomSampler(seed=0),
            pruner=optuna.pruners.NopPruner(),
            direction="minimize",
            load_if_exists=True,
        )
        if "verdict_of" not in companion.user_attrs:
            companion.set_user_attr("verdict_of", opened.study.study_name)
            companion.set_user_attr("objective", opened.spec.objective)
    return companion


def _job_line(prefix: str, echo: Echo) -> Any:
    """The callback that prints one line per finished job."""

    def report(study: optuna.Study, trial: FrozenTrial) -> None:
        a = trial.user_attrs
        value = f"{trial.values[0]:.5g}" if trial.values else trial.state.name.lower()
        echo(
            f"{prefix}verdict trial {trial.number} [{', '.join(a.get('roles', []))}] seed "
            f"{a.get('seed')} fraction {a.get('fraction', 1.0):g}: {value} "
            f"({format_params(a.get('config', {}))}, {a.get('wall_seconds', 0):.1f} s)"
        )

    return report


def _run_jobs(
    opened: _Opened,
    companion: optuna.Study,
    dataset: Dataset,
    echo: Echo,
    worker: str = "",
) -> None:
    """Run the companion study's waiting jobs in this process."""
    from search.training.prepared import PreparedData  # TensorFlow
    from search.training.session import long_lived_objects_frozen
    from search.verdict.objective import JobObjective

    states = [t.state for t in companion.get_trials(deepcopy=False)]
    target = sum(
        states.count(s)
        for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    )
    objective = JobObjective(opened.spec, PreparedData(dataset))
    report = _job_line(f"[{worker}] " if worker else "", echo)
    with long_lived_objects_frozen():
        run_trials(
            companion,
            objective,
            target=target,
            worker=worker,
            echo=echo,
            callbacks=[report],
            gc_after_trial=False,
        )


def run_verdict_worker(
    spec: StudySpec, options: SearchOptions, worker: str, echo: Echo = print
) -> None:
    """One worker of a verdict: run waiting jobs of the companion study until none is left."""
    opened = _open(spec, options)
    dataset = _dataset(opened.spec, options)
    storage = open_worker_storage(opened.url, liveness_settings())
    companion = optuna.load_study(  # Optuna does not store them: the companion's own, again
        study_name=companion_name(opened.study.study_name),
        storage=storage,
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.NopPruner(),
    )
    _start_tensorflow()
    _run_jobs(opened, companion, dataset, echo, worker)


def _start_tensorflow() -> None:
    """Import TensorFlow and set up its devices as a worker does, its start-up lines held back
    (a second call changes nothing)."""
    from search.training.quiet_start import native_startup_quieted

    with native_startup_quieted():
        from search.distributed.devices import configure_tensorflow

        configure_tensorflow()


def _worker_argv(spec: StudySpec, options: SearchOptions) -> Any:
    def argv(worker: str) -> list[str]:
        out = [sys.executable, "-m", "search", "verdict", str(spec.path), "--worker-only"]
        out += ["--worker-id", worker]
        if options.data_dir is not None:
            out += ["--data-dir", str(options.data_dir)]
        if options.offline:
            out.append("--offline")
        return out

    return argv


def test_scores(
    spec: StudySpec,
    dataset: Dataset,
    best: FrozenTrial,
    echo: Echo = print,
    searched: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The best configuration's test score, trained on ``train`` and on ``train+validation``.

    Each is trained with the best trial's seed for its best epoch count (what early stopping
    kept); the test split is touched only here. ``searched`` is the study's own
    ``test_evaluation`` (:func:`search.runs.lifecycle.evaluate_best_on_test`): where it scored
    the same trial, rows, seed and epochs, its figures are taken as they are, so that the verdict
    and ``show`` give one test score for one model, and that model is not trained twice.
    """
    if spec.objective != "generalize" or dataset.x_test is None or dataset.y_test is None:
        return None
    from search.engine.retrain import trial_epoch_cap
    from search.training.prepared import PreparedData, train_and_validation  # TensorFlow
    from search.training.run import train_params
    from search.training.session import clear_session

    epochs = int(best.user_attrs.get("best_epoch", spec.training.epochs))
    seed = trial_seed(spec, best)
    params = model_params(spec, best)
    out: dict[str, Any] = {}
    for rows, data in (("train", dataset), ("train+validation", train_and_validation(dataset))):
        if _scored_by_the_search(searched, best.number, rows, epochs, seed):
            assert searched is not None
            echo(f"verdict: test score of trial {best.number} trained on {rows}: the search's")
            loss, accuracy = searched["test_loss"], searched["test_accuracy"]
        else:
            echo(f"verdict: test score of trial {best.number} trained on {rows} ({epochs} epochs)")
            clear_session()
            # model.fit, not the shared graphs: their traced graphs are per process and data
            # set, and a second sparse data set in one process failed in them (AlreadyExistsError).
            prepared = PreparedData(data, use_shared_graphs=False)
            cap = trial_epoch_cap(spec, best)  # the span of its learning-rate schedule
            run = train_params(
                spec, prepared, params, seed=seed, epochs=epochs, schedule_epochs=cap
            )
            loss, accuracy = prepared.evaluate(run.model, "test")
        out[rows] = {
            "loss": loss,
            "accuracy": accuracy,
            "n_train": int(data.x_train.shape[0]),
            "n_test": int(dataset.x_test.shape[0]),
            "epochs": epochs,
            "seed": seed,
        }
    out["trial"] = best.number
    return out


def _scored_by_the_search(
    searched: Mapping[str, Any] | None, trial: int, rows: str, epochs: int, seed: int
) -> bool:
    """Whether the search's test evaluation trained this very model (same rows, seed, epochs)."""
    if not isinstance(searched, Mapping):
        return False
    same = (searched.get(k) for k in ("trial", "refit", "epochs", "seed"))
    return tuple(same) == (trial, rows, epochs, seed) and searched.get("test_loss") is not None


def _stored_tests(
    opened: _Opened, companion: optuna.Study, dataset: Dataset, best: FrozenTrial, echo: Echo
) -> dict[str, Any] | None:
    stored = companion.user_attrs.get(TEST_ATTR)
    if isinstance(stored, Mapping) and stored.get("trial") == best.number:
        return {k: v for k, v in stored.items() if k != "trial"}
    try:
        searched = opened.study.user_attrs.get("test_evaluation")
        scores = test_scores(opened.spec, dataset, best, echo, searched)
    except Exception as exc:  # the test score is one line of the verdict: never lose the rest
        echo(f"warning: verdict test score not computed ({type(exc).__name__}: {one_line(exc)})")
        return None
    if scores is None:
        return None
    companion.set_user_attr(TEST_ATTR, scores)
    return {k: v for k, v in scores.items() if k != "trial"}


def give_verdict(
    spec: StudySpec,
    options: SearchOptions,
    *,
    workers: int = 1,
    train: bool = True,
    echo: Echo = print,
) -> dict[str, Any]:
    """Plan and run the verdict's re-trainings, then compute, store and return the verdict.

    Args:
        spec: The study file (its stored copy is used when the study stored one).
        options: Storage and data settings.
        workers: Worker processes for the re-trainings (1: this process).
        train: False computes the verdict from what is already stored, training nothing.
        echo: Where progress lines go.

    Raises:
        VerdictError: No completed trial, or a multi-objective or hypermodel study.
        StorageError: The study is not stored there.
        DataError: The data cannot be loaded (the message says where it looked).
    """
    start = time.perf_counter()
    opened = _open(spec, options)
    dataset = _dataset(opened.spec, options)
    storage = open_worker_storage(opened.url, liveness_settings())
    companion = _companion(opened, storage)
    plan: Plan = plan_jobs(opened.study, opened.spec, opened.verdict)
    if train:
        added = enqueue_missing(companion, plan.jobs, storage)
        echo(
            f"verdict of {opened.study.study_name}: {len(plan.jobs)} re-trainings in study "
            f"{companion.study_name} ({added} enqueued now)"
        )
        waiting = companion.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if waiting and any(JOB_ATTR in t.user_attrs for t in waiting):
            if workers > 1:
                launch_workers(workers, _worker_argv(opened.spec, options), opened.url, echo)
            else:
                _start_tensorflow()
                _run_jobs(opened, companion, dataset, echo)
    best = ranked_trials(opened.study)[0]
    if train:
        _start_tensorflow()  # the test scores train here
    tests = _stored_tests(opened, companion, dataset, best, echo) if train else None
    if tests is None:
        stored = companion.user_attrs.get(TEST_ATTR)
        if isinstance(stored, Mapping) and stored.get("trial") == best.number:
            tests = {k: v for k, v in stored.items() if k != "trial"}
    verdict = compute_verdict(
        opened.spec,
        opened.study,
        companion,
        plan,
        dataset,
        memorize_threshold=opened.verdict.memorize_threshold,
        test=tests,
    )
    verdict["wall_seconds"] = round(time.perf_counter() - start, 1)
    verdict["workers"] = workers
    earlier = companion.user_attrs.get(VERDICT_ATTR)
    if not train and isinstance(earlier, Mapping) and "wall_seconds" in earlier:
        # Read from what is stored: the time is still that of the run that trained.
        verdict["wall_seconds"], verdict["workers"] = earlier["wall_seconds"], earlier["workers"]
    companion.set_user_attr(VERDICT_ATTR, verdict)
    update_study_note(opened.study, opened.spec, echo)
    return verdict
