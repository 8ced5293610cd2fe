"""The run lifecycle: what ``make search STUDY=x`` does, and every command built on a study.

One object, :class:`SearchRun`, owns the steps in their order: open the storage → load the data
→ check the space (build the objective; a hypermodel is imported and probed) → create or resume
the study under the study lock → run trials → evaluate the best trial on the test split →
print the summary → rewrite the study note. ``capsearch run`` and ``worker`` take every step in
one process (:func:`run_search`); ``workers`` takes them around worker processes
(:func:`run_workers`); ``rerun``, ``export`` and ``kt`` open a stored study through
:meth:`SearchRun.open_stored`.

The order matters for "nothing stored is changed by bad input": the study file is validated,
the storage opened and the data loaded *before* the study is created or touched.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.console import Echo
from search.data import Dataset, data_context, load_dataset
from search.data.constant import constant_prediction
from search.data.target import large_target_warning
from search.distributed.launcher import launch_workers
from search.distributed.study_lock import study_lock
from search.distributed.worker_storage import open_worker_storage
from search.engine.fingerprint import check_resume, record_fingerprint
from search.engine.stored import stored_spec
from search.engine.study import best_trial, count_finished, open_study
from search.engine.trial_loop import LoopResult, run_trials
from search.errors import TrialsKeepFailing, WorkerStopped
from search.runs.options import SearchOptions, WorkerOptions
from search.spec.studyfile import StudySpec
from search.storage.studies import load_stored_study
from search.storage.urls import mask_url, resolve_storage_url
from search.views.notes import update_study_note, write_study_note
from search.views.summary import format_trial_line, print_summary
from search.views.trial_plots import TrialPlots, open_artifact_store

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

    from search.training.prepared import PreparedData

# TensorFlow is imported by the steps that train (data(), objective(), run_trials(), the test
# evaluation), inside them: bad input (study file, storage, data) fails fast and quietly first.

__all__ = ["SearchRun", "evaluate_best_on_test", "run_search", "run_workers"]


class SearchRun:
    """One run over one study, step by step (each step at most once, in order).

    Args:
        spec: The validated study file.
        options: Budget, storage, data and what to report.
        worker: Set for a process running trials beside others.
        echo: Where progress lines go.
    """

    def __init__(
        self,
        spec: StudySpec,
        options: SearchOptions | None = None,
        worker: WorkerOptions | None = None,
        echo: Echo = print,
    ) -> None:
        self.spec = spec
        self.options = options or SearchOptions()
        self.worker = worker or WorkerOptions()
        self.echo = echo
        self.url = resolve_storage_url(self.options.storage)
        self.liveness = self.worker.liveness()
        self._storage: optuna.storages.BaseStorage | None = None
        self._data: PreparedData | None = None
        self._dataset: Dataset | None = None
        self._declared: Callable[[optuna.Study], Mapping[str, BaseDistribution]] | None = None

    @property
    def target(self) -> int:
        """Finished trials the study should have in all."""
        return self.options.trials or self.spec.trials

    # 1. storage
    def storage(self) -> optuna.storages.BaseStorage:
        """The storage, opened once (checked first; retried on lock conflicts)."""
        if self._storage is None:
            self._storage = open_worker_storage(self.url, self.liveness)
        return self._storage

    # 2. data
    def check_data(self) -> None:
        """Load the data set without building tensors (the launcher's check)."""
        self._load_dataset()

    def _load_dataset(self) -> Dataset:
        if self._dataset is None:
            context = data_context(self.spec.path.parent, self.options.data)
            self._dataset = load_dataset(self.spec.data.source, self.spec.data.options, context)
        return self._dataset

    def data(self) -> PreparedData:
        """The study's data as tensors, prepared once (TensorFlow is imported here)."""
        if self._data is None:
            dataset = self._load_dataset()  # first: a data problem fails before TensorFlow
            from search.training.quiet_start import native_startup_quieted

            with native_startup_quieted():  # TensorFlow's native start-up lines held back
                from search.distributed.devices import configure_tensorflow
                from search.training.prepared import PreparedData  # TensorFlow

                if self.worker.configure_tensorflow:  # threads, GPU memory growth: before ops
                    configure_tensorflow()
                self._data = PreparedData(dataset)
        return self._data

    # 3. space
    def objective(self) -> Callable[[optuna.Trial], Any]:
        """The objective on the prepared data; a hypermodel is imported and probed."""
        data = self.data()  # first: a data problem fails before TensorFlow is imported
        from search.engine.objective import make_objective  # TensorFlow

        objective = make_objective(self.spec, data)
        self._declared = objective.declared  # a hypermodel's space: compared at a resume
        return objective

    # 4. study
    def open_study(self) -> tuple[optuna.Study, bool]:
        """Create or resume the study under the study lock; a new study gets its note."""
        with study_lock(self.storage(), self.spec.name):  # workers starting together: once
            study, created = open_study(self.spec, self.storage(), self.worker.seed_offset)
            if created:
                record_fingerprint(study, self.spec, self._dataset)
                write_study_note(study, self.spec)
            else:  # other data, space or objective: one line, nothing run (engine.fingerprint)
                check_resume(
                    study,
                    self.spec,
                    self._dataset,
                    allow_narrowed=self.options.allow_narrowed,
                    study_file_text=self._file_text(),
                    declared=self._declared(study) if self._declared else None,
                )
        done = count_finished(study)
        verb = "created" if created else "resumed"
        self.echo(
            f"{self.worker.prefix}study {self.spec.name} {verb} in {mask_url(self.url)}: "
            f"{done} finished trials, target {self.target}; objective {self.spec.objective} "
            f"({self.spec.data.source})"
        )
        dataset, source = self._dataset, self.spec.data.source
        warning = large_target_warning(dataset, source) if dataset is not None else None
        if warning and not self.worker.prefix:  # once, not from every worker of a launch
            self.echo(warning)
        return study, created

    def _file_text(self) -> str | None:
        try:
            return self.spec.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def open_stored(self) -> optuna.Study:
        """Load the stored study (never creates one); the spec becomes the stored file's."""
        study = load_stored_study(self.spec.name, self.options.storage).study
        self.spec = stored_spec(self.spec, study)
        return study

    # 5. trials
    def run_trials(self, study: optuna.Study, objective: Callable[[optuna.Trial], Any]) -> None:
        """Run trials until the study's budget is reached, shared with every other worker.

        Raises:
            WorkerStopped: SIGINT or SIGTERM stopped the run (the trial was re-queued).
            TrialsKeepFailing: ``max_failures`` trials in a row failed.
        """
        prefix = self.worker.prefix
        if count_finished(study) >= self.target:
            self.echo(f"{prefix}target reached; pass a larger --trials (TRIALS=) to continue")
            return
        if self.options.trial_plots:  # each finished trial's PNG, see search.views.trial_plots
            objective = TrialPlots(objective, open_artifact_store(self.url), echo=self.echo)

        def report(study: optuna.Study, trial: FrozenTrial) -> None:
            self.echo(prefix + format_trial_line(trial, self.spec))

        from search.training.session import long_lived_objects_frozen  # TensorFlow

        timer = time.perf_counter()
        with long_lived_objects_frozen():  # each trial's garbage collection skips them
            result = run_trials(
                study,
                objective,
                target=self.target,
                timeout=self.options.timeout
                if self.options.timeout is not None
                else self.spec.timeout,
                worker=self.worker.worker_id,
                echo=self.echo,
                callbacks=[report, *self.options.extra_callbacks],
                liveness=self.liveness,
                max_failures=self.worker.max_failures,
                signals=self.worker.signals,
                gc_after_trial=False,  # the objective's clear_session() collects per trial
            )
        self._finished(study, result, time.perf_counter() - timer)

    def _finished(self, study: optuna.Study, result: LoopResult, elapsed: float) -> None:
        self.echo(
            f"{self.worker.prefix}{count_finished(study)} finished trials after {elapsed:.1f} s "
            f"({result.describe()})"
        )
        if result.signal_name is not None:
            raise WorkerStopped(result.signal_name)
        if result.reason == "failures":
            failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            last = failed[-1].system_attrs.get("fail_reason") if failed else None
            reason = f"; the last one: {last}" if last else ""  # also where no line was printed
            raise TrialsKeepFailing(
                f"{self.worker.max_failures} trials in a row failed{reason}; fix that and run "
                "again (the finished trials are kept)"
            )

    # 6.-8. test, summary, note
    def finish(self, study: optuna.Study) -> None:
        """Evaluate the best trial on the test split, print the summary, rewrite the note."""
        if self.options.evaluate_test and self.spec.objective == "generalize":
            evaluate_best_on_test(self.spec, self.data(), study, self.echo)
        if self.options.summary:
            if "constant_prediction" not in study.user_attrs:  # the floor the summary prints
                constant = constant_prediction(self._load_dataset())
                study.set_user_attr("constant_prediction", constant)
            print_summary(study, self.spec, self.echo)
            update_study_note(study, self.spec, self.echo)

    def search(self) -> optuna.Study:
        """Every step in this process: what ``capsearch run`` and ``worker`` do."""
        self.storage()
        objective = self.objective()  # data loaded, space checked: before the study is touched
        study, _ = self.open_study()
        self.run_trials(study, objective)
        self.finish(study)
        return study

    def search_with_workers(self, n: int) -> int:
        """The steps around ``n`` worker processes: what ``capsearch workers`` does.

        Everything that can be wrong with the input is checked here before any worker starts
        (storage, data, a hypermodel); the workers share the one budget; only this process
        evaluates the best trial on the test split and prints the summary.

        Returns:
            0 if every worker exited with 0, else 1.
        """
        self.storage()
        self.check_data()  # loaded without tensors: each worker builds its own
        if self.spec.hypermodel is not None:  # imported and probed: its space is its code
            self.objective()  # TensorFlow, once the rest is good; the test score needs it too
        study, _ = self.open_study()
        live = self.liveness
        self.echo(
            f"{n} workers (heartbeat {live.heartbeat_interval} s, grace {live.grace_period} s, "
            f"{live.max_retry} retries)"
        )
        code = 0
        if count_finished(study) < self.target:
            timer = time.perf_counter()
            code = launch_workers(n, self._worker_argv, self.url, self.echo)
            elapsed = time.perf_counter() - timer
            self.echo(f"{count_finished(study)} finished trials after {elapsed:.1f} s")
        else:
            self.echo("target reached; pass a larger --trials (TRIALS=) to continue the search")
        self.finish(study)
        return code

    def _worker_argv(self, worker: str) -> list[str]:
        argv = [sys.executable, "-m", "search", "worker", str(self.spec.path)]
        argv += ["--worker-id", worker, "--trials", str(self.target), "--no-summary"]
        if self.options.timeout is not None:
            argv += ["--timeout", str(self.options.timeout)]
        if self.options.data_dir is not None:
            argv += ["--data-dir", str(self.options.data_dir)]
        if self.options.offline:
            argv.append("--offline")
        return argv


def run_search(
    spec: StudySpec,
    options: SearchOptions | None = None,
    echo: Echo = print,
    *,
    worker: WorkerOptions | None = None,
) -> optuna.Study:
    """Create or resume ``spec``'s study and run trials until its budget is reached.

    ``trials`` is the number of finished (complete or pruned) trials the study should have in
    all, so re-running the same command resumes an interrupted study and stops when it is done.

    Raises:
        WorkerStopped: SIGINT or SIGTERM stopped the search (the running trial was failed and
            re-queued); a ``KeyboardInterrupt``.
        TrialsKeepFailing: ``max_failures`` trials in a row failed.
    """
    return SearchRun(spec, options, worker, echo).search()


def run_workers(
    spec: StudySpec, n: int, options: SearchOptions | None = None, echo: Echo = print
) -> int:
    """``capsearch workers``: create the study once, run ``n`` worker processes, summarize.

    Returns:
        0 if every worker exited with 0, else 1.
    """
    return SearchRun(spec, options, echo=echo).search_with_workers(n)


def evaluate_best_on_test(
    spec: StudySpec, data: PreparedData, study: optuna.Study, echo: Echo = print
) -> dict[str, Any] | None:
    """Score the best trial once on the test split, stored on the study as ``test_evaluation``.

    The best trial's parameters are re-trained with its seed for its best epoch count (what
    early stopping would have kept); the test split is touched only here, never by the search.
    """
    from search.engine.retrain import retrain_trial  # TensorFlow

    if spec.objective != "generalize" or "test" not in data.splits:
        return None
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    best = best_trial(study)
    assert best is not None  # a trial completed
    stored = study.user_attrs.get("test_evaluation")
    if stored and stored.get("trial") == best.number:
        return dict(stored)
    epochs = int(best.user_attrs.get("best_epoch", spec.training.epochs))
    seed = int(best.user_attrs.get("seed", spec.training.seed + best.number))
    echo(f"evaluating best trial {best.number} on the test split ({epochs} epochs, seed {seed})")
    rows = data
    if spec.training.refit == "train+validation":  # the final model learns from both
        from search.training.prepared import PreparedData, train_and_validation

        rows = PreparedData(train_and_validation(data.dataset), use_shared_graphs=False)
    run = retrain_trial(spec, rows, best, seed=seed, epochs=epochs)
    loss, accuracy = rows.evaluate(run.model, "test")
    val_loss, _ = rows.evaluate(run.model, "val") if "val" in rows.splits else (None, None)
    result = {
        "refit": spec.training.refit,
        "n_train": rows.n_train,
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
