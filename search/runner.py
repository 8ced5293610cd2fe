"""Create or resume a study and run trials on it: what ``make search STUDY=x`` does.

The order matters for "nothing stored is changed by bad input": the study file is validated, the
storage opened and the data loaded *before* the study is created or touched.
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.storage.urls import mask_url, resolve_storage_url
from search.summary import format_trial_line

if TYPE_CHECKING:
    from search.studyfile import StudySpec
    from search.training import PreparedData
    from search.workers.stop_signals import StopSignals

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
Echo = Callable[[str], None]


@dataclass
class SearchOptions:
    """Command-line settings of one search run (``None`` means: take the study file's)."""

    trials: int | None = None
    timeout: float | None = None
    storage: str | None = None
    data_dir: Path | None = None
    offline: bool = False
    worker: str = ""
    seed_offset: int = 0
    evaluate_test: bool = True
    extra_callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = field(default_factory=list)
    trial_plots: bool = True  # a PNG artifact per finished trial, for the dashboard
    # Many workers, one study (search.workers): heartbeats of running trials, re-queues of the
    # trials of dead or stopped workers, and when to give up on trials that keep failing.
    heartbeat_interval: int | None = None  # None: $CAPSEARCH_HEARTBEAT, else 10 s
    grace_period: int | None = None  # None: $CAPSEARCH_GRACE, else 3 heartbeats
    max_retry: int | None = None  # None: $CAPSEARCH_MAX_RETRY, else 3
    max_failures: int = 10  # failed trials in a row after which the worker stops
    summary: bool = True  # print the end-of-search summary (the children of `workers` do not)
    signals: StopSignals | None = None  # SIGINT/SIGTERM handling installed by the caller
    configure_tensorflow: bool = False  # apply search.devices.configure_tensorflow first


def data_context(spec: StudySpec, options: SearchOptions) -> Any:
    """Where the study's data is looked for and cached."""
    from search.data import DataContext
    from search.storage.urls import DEFAULT_STORAGE_DIR

    env_dir = os.environ.get("CAPSEARCH_DATA")
    data_dir = options.data_dir or (Path(env_dir) if env_dir else None)
    cache = Path(os.environ.get("CAPSEARCH_CACHE", DEFAULT_STORAGE_DIR / "cache"))
    offline = options.offline or os.environ.get("CAPSEARCH_OFFLINE", "") not in ("", "0")
    return DataContext(
        data_dir=data_dir, cache_dir=cache, base_dir=spec.path.parent, offline=offline
    )


def prepare_data(spec: StudySpec, options: SearchOptions) -> PreparedData:
    """Load the study's data set (from cache when possible) and turn it into tensors once."""
    from search.data import load_dataset

    dataset = load_dataset(spec.data.source, spec.data.options, data_context(spec, options))
    # TensorFlow is imported only now, so bad input above fails fast and quietly.
    from search.training import PreparedData

    return PreparedData(dataset)


def make_sampler(spec: StudySpec, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler; each worker offsets the seed so workers do not propose twins."""
    seed = spec.sampler.seed + seed_offset
    if spec.sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        # `multivariate`, `group` and `constant_liar` are marked experimental but long stable.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=spec.sampler.n_startup_trials,
            multivariate=True,
            group=True,  # conditional parameters (use_l2 -> l2) get their own joint models
            constant_liar=True,  # running trials count as pending: parallel workers spread out
        )


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The study's per-epoch pruner; Hyperband's resource is the epoch."""
    if spec.multi_objective:  # Optuna cannot prune multi-objective trials
        return optuna.pruners.NopPruner()
    opts = spec.pruner.options
    name = spec.pruner.name
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=opts.get("min_resource", 1),
            max_resource=spec.training.epochs,
            reduction_factor=opts.get("reduction_factor", 3),
        )
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=opts.get("min_resource", 1),
            reduction_factor=opts.get("reduction_factor", 3),
            min_early_stopping_rate=opts.get("min_early_stopping_rate", 0),
        )
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=opts.get("n_startup_trials", 5),
            n_warmup_steps=opts.get("n_warmup_steps", 0),
            interval_steps=opts.get("interval_steps", 1),
        )
    return optuna.pruners.NopPruner()


def library_versions() -> dict[str, str]:
    """Versions of what produced the trials, stored on the study."""
    import keras
    import numpy
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "optuna": optuna.__version__,
        "numpy": numpy.__version__,
    }


def open_study(
    spec: StudySpec, storage: optuna.storages.BaseStorage, seed_offset: int = 0
) -> tuple[optuna.Study, bool]:
    """Create the study (recording its file, versions and baselines) or load it to resume.

    Returns:
        The study and whether it was created now.
    """
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        sampler=make_sampler(spec, seed_offset),
        pruner=make_pruner(spec),
        directions=spec.directions,
        load_if_exists=True,
    )
    created = spec.name not in existing
    if created or "study_file" not in study.user_attrs:
        study.set_user_attr("study_file", str(spec.path))
        study.set_user_attr("study_file_text", spec.path.read_text(encoding="utf-8"))
        study.set_user_attr("spec", json.loads(json.dumps(spec.to_dict())))
        study.set_user_attr("objective", spec.objective)
        study.set_user_attr("versions", library_versions())
        for baseline in spec.baselines:
            study.enqueue_trial(
                spec.baseline_trial_params(baseline),
                user_attrs={"baseline": baseline.name},
                skip_if_exists=True,
            )
        _describe_study(study, spec)
    return study, created


def _describe_study(study: optuna.Study, spec: StudySpec) -> None:
    """Objective names (``val_loss``, ``param_count``) and the study note, for optuna-dashboard."""
    from search.notes import write_study_note

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(spec.metric_names)
    write_study_note(study, spec)


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_search(spec: StudySpec, options: SearchOptions, echo: Echo = print) -> optuna.Study:
    """Create or resume ``spec``'s study and run trials until its budget is reached.

    ``trials`` is the number of finished (complete or pruned) trials the study should have in all,
    so re-running the same command resumes an interrupted study and stops when it is done. The
    trials run in :func:`search.workers.run_trials`, the loop every worker shares: one budget for
    all processes on the study, heartbeats, re-queues of dead workers' trials.

    Raises:
        WorkerStopped: SIGINT or SIGTERM stopped the search (the running trial was failed and
            re-queued); a ``KeyboardInterrupt``.
        TrialsKeepFailing: ``max_failures`` trials in a row failed.

    Example:
        >>> study = run_search(load_study("overfit30_memorize"), SearchOptions(trials=5))
        ... # doctest: +SKIP
    """
    from search.notes import update_study_note
    from search.summary import print_summary
    from search.workers.liveness import liveness_settings
    from search.workers.stop_signals import WorkerStopped
    from search.workers.study_lock import study_lock
    from search.workers.trial_loop import TrialsKeepFailing, run_trials
    from search.workers.worker_storage import open_worker_storage

    url = resolve_storage_url(options.storage)
    liveness = liveness_settings(
        options.heartbeat_interval, options.grace_period, options.max_retry
    )
    storage = open_worker_storage(url, liveness)
    if options.configure_tensorflow:  # worker processes: threads and GPU memory growth
        from search.devices import configure_tensorflow

        configure_tensorflow()
    data = prepare_data(spec, options)
    # TensorFlow: only once the input is known good; a hypermodel is imported and checked here,
    # before the study is created or touched.
    objective = make_objective(spec, data)

    with study_lock(storage, spec.name):  # workers starting together create it once
        study, created = open_study(spec, storage, options.seed_offset)
    target = options.trials or spec.trials
    done = count_finished(study)
    prefix = f"[{options.worker}] " if options.worker else ""
    verb = "created" if created else "resumed"
    echo(
        f"{prefix}study {spec.name} {verb} in {mask_url(url)}: {done} finished trials, "
        f"target {target}; objective {spec.objective} ({spec.data.source})"
    )
    if done < target:
        timer = time.perf_counter()
        if options.trial_plots:  # each finished trial's PNG, see search.artifacts
            from search.artifacts import TrialPlots, open_artifact_store

            objective = TrialPlots(objective, open_artifact_store(url), echo=echo)

        def report(study: optuna.Study, trial: FrozenTrial) -> None:
            echo(prefix + format_trial_line(trial, spec))

        from search.session import long_lived_objects_frozen

        with long_lived_objects_frozen():  # each trial's garbage collection skips them
            result = run_trials(
                study,
                objective,
                target=target,
                timeout=options.timeout if options.timeout is not None else spec.timeout,
                worker=options.worker,
                echo=echo,
                callbacks=[report, *options.extra_callbacks],
                liveness=liveness,
                max_failures=options.max_failures,
                signals=options.signals,
                gc_after_trial=False,  # the objective's clear_session() collects per trial
            )
        elapsed = time.perf_counter() - timer
        echo(
            f"{prefix}{count_finished(study)} finished trials after {elapsed:.1f} s "
            f"({result.describe()})"
        )
        if result.signal_name is not None:
            raise WorkerStopped(result.signal_name)
        if result.reason == "failures":
            raise TrialsKeepFailing(
                f"{options.max_failures} trials in a row failed; see the reasons above"
            )
    else:
        echo(f"{prefix}target reached; pass a larger --trials (TRIALS=) to continue the search")
    if options.evaluate_test:
        evaluate_best_on_test(spec, data, study, echo)
    if options.summary:
        print_summary(study, spec, echo)
        update_study_note(study, spec, echo)
    return study


def evaluate_best_on_test(
    spec: StudySpec, data: PreparedData, study: optuna.Study, echo: Echo = print
) -> dict[str, Any] | None:
    """Score the best trial once on the test split, stored on the study as ``test_evaluation``.

    The best trial's parameters are re-trained with its seed for its best epoch count (what
    early stopping would have kept); the test split is touched only here, never by the search.
    """
    from search.replay import retrain_trial
    from search.summary import best_trial

    if spec.objective != "generalize" or "test" not in data.splits:
        return None
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        return None
    best = best_trial(study)
    assert best is not None  # a trial completed
    stored = study.user_attrs.get("test_evaluation")
    if stored and stored.get("trial") == best.number:
        return dict(stored)
    epochs = int(best.user_attrs.get("best_epoch", spec.training.epochs))
    seed = int(best.user_attrs.get("seed", spec.training.seed + best.number))
    echo(f"evaluating best trial {best.number} on the test split ({epochs} epochs, seed {seed})")
    run = retrain_trial(spec, data, best, seed=seed, epochs=epochs)
    loss, accuracy = data.evaluate(run.model, "test")
    val_loss, _ = data.evaluate(run.model, "val") if "val" in data.splits else (None, None)
    result = {
        "trial": best.number,
        "epochs": epochs,
        "seed": seed,
        "test_loss": loss,
        "test_accuracy": accuracy,
        "n_test": data.splits["test"].n,
        "val_loss_retrained": val_loss,
    }
    study.set_user_attr("test_evaluation", result)
    return result


def make_objective(spec: StudySpec, data: PreparedData) -> Callable[[optuna.Trial], Any]:
    """The study's objective: the Dense-stack space, or the study's KerasTuner hypermodel.

    Raises:
        HypermodelError: The hypermodel cannot be imported, built or mirrored on Optuna.
    """
    if spec.hypermodel is not None:
        from search.hypermodel import HypermodelObjective

        return HypermodelObjective(spec, data)
    from search.objective import Objective

    return Objective(spec, data)


def model_params(spec: StudySpec, trial: FrozenTrial) -> dict[str, Any]:
    """All model parameters of a stored trial: fixed ones included, ``use_l2 = False`` as 0."""
    from search.space import FloatRange

    out: dict[str, Any] = {}
    for name, param in spec.space.items():
        if name in trial.params:
            out[name] = trial.params[name]
        elif isinstance(param, FloatRange) and param.zero:
            out[name] = 0.0
    return spec.resolve_params(out)
