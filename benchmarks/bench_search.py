"""``make bench-search``: P4 search efficiency, one section of BENCHMARKS.md.

Three engines search the same space (``spaces/imdb_generalize.toml``: 1-3 layers, 4-512 units,
L2 off or 1e-6-1e-2, dropout 0-0.7, batch 64-1024, learning rate 1e-4-1e-2, RMSprop or Adam) on
the same IMDB split, one after another on the same machine, each with the same wall-clock budget
S (no trial starts after S seconds; the running one finishes, as ``capsearch run --timeout``):

* (a) this service: ``run_search`` on imdb_generalize without its baselines, TPE + Hyperband
  pruning, into a temporary SQLite storage;
* (a') with ``--workers N`` (N > 1, default one per core): the same search run the way this
  service uses a multi-core machine, ``capsearch workers -n N`` on one study (each worker a
  process with its share of the cores, see :mod:`search.distributed`);
* (b) the same as (a) with Optuna's pruning off (``[pruner] name = "none"``);
* (c) KerasTuner's ``Hyperband`` (max epochs = the study's 20, factor 3) on
  ``benchmarks/imdb_hypermodel.py``, the same space written against KerasTuner's API, with the
  objective ``val_data_loss`` (the validation data loss without the L2 penalty, measured by Keras
  in inference mode) and early stopping with the study's patience, like the service's trials.

Each engine's best validation data loss over time is recorded per finished trial; the section
gives every final best, when each engine first reached KerasTuner's final best, the goal "this
service reaches KerasTuner's final best in <= 1/3 of KerasTuner's time and ends lower" for (a)
and (a') each, and a PNG of the curves (one panel per seed). An existing P4 section of the output
file is replaced; the rest is kept.

One early lucky trial can decide a single run, so the engines run once per seed (``--seeds
0,1,2``: the samplers', KerasTuner's oracle's and the training seeds), and the goal is judged on
the medians over seeds, each seed's verdict shown beside them.

Usage: ``python -m benchmarks.bench_search --budget S [--seeds 0,1,2] [--workers N] [--out FILE]
[--quick]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The service's runs read the IMDB cache where bench_training's context() puts it.
os.environ.setdefault("CAPSEARCH_CACHE", str(ROOT / "storage" / "cache"))

from benchmarks.bench_training import context, machine  # noqa: E402
from search.distributed.devices import available_cpus  # noqa: E402

SECTION = "## P4 search efficiency"
STUDY = "imdb_generalize"
TRIAL_CAP = 10_000  # the budget, not the trial count, ends every search
QUICK_EPOCHS = 2
ENGINES = {
    "capsearch": "this service: TPE + Hyperband pruning",
    "capsearch_workers": "this service, {n} workers: TPE + Hyperband pruning",
    "optuna_nopruning": "Optuna TPE, no pruning",
    "keras_tuner": "KerasTuner Hyperband",
}
SERVICES = ("capsearch", "capsearch_workers")  # the engines the goal is judged for
Point = dict[str, Any]  # one finished trial: t (s since start), loss, complete, epochs


def study_spec(quick: bool, seed: int = 0) -> Any:
    """imdb_generalize without baselines (the engines start from nothing alike), its sampler and
    training seeded with ``seed``."""
    from search.spec.studyfile import load_study

    spec = load_study(STUDY)
    spec = dataclasses.replace(
        spec,
        baselines=(),
        sampler=dataclasses.replace(spec.sampler, seed=seed),
        training=dataclasses.replace(spec.training, seed=seed),
    )
    if quick:
        spec = dataclasses.replace(
            spec, training=dataclasses.replace(spec.training, epochs=QUICK_EPOCHS)
        )
    return spec


# -- (a), (b): this service on Optuna -------------------------------------------------------------


def run_optuna(spec: Any, budget: float, storage_dir: Path, key: str) -> dict[str, Any]:
    """``run_search`` into a fresh SQLite file for ``budget`` seconds; its finished trials."""
    import optuna

    from search.runs import run_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options = _search_options(budget, f"sqlite:///{storage_dir / f'{key}.db'}")
    study = run_search(spec, options, echo=lambda line: print(f"  [{key}] {line}", flush=True))
    return optuna_points(study)


def run_optuna_workers(
    spec: Any, budget: float, storage_dir: Path, n: int, *, seed: int, quick: bool
) -> dict[str, Any]:
    """(a'): ``n`` worker processes on one study in a fresh SQLite file, as ``capsearch workers``.

    Each worker is this module run with ``--worker``: the launcher's placement (threads per
    worker), the worker loop and the sampler seed offset per worker are the service's own.
    """
    import optuna

    from search.distributed.launcher import launch_workers
    from search.storage.opening import close_storage, open_storage

    url = f"sqlite:///{storage_dir / 'capsearch_workers.db'}"
    close_storage(open_storage(url))  # the tables, once, as `capsearch workers` makes them

    def argv_for(worker: str) -> list[str]:
        argv = [sys.executable, "-m", "benchmarks.bench_search", "--budget", str(budget)]
        argv += ["--seeds", str(seed), "--worker", worker]
        return argv + (["--quick"] if quick else [])

    def echo(line: str) -> None:
        print(f"  [capsearch_workers] {line}", flush=True)

    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    code = launch_workers(n, argv_for, url, echo, env={**os.environ, "PYTHONPATH": path})
    if code:
        raise RuntimeError(f"a worker of the {n}-worker search exited with an error (see above)")
    study = optuna.load_study(study_name=spec.name, storage=url)
    return optuna_points(study)


def run_worker(spec: Any, budget: float, worker: str) -> int:
    """One worker of (a'), started by :func:`run_optuna_workers` (storage in the environment)."""
    import optuna

    from search.engine.trial_loop import seed_offset_for
    from search.runs import run_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options = dataclasses.replace(
        _search_options(budget, None),  # None: the URL the launcher put in the environment
        worker=worker,
        seed_offset=seed_offset_for(worker),
        configure_tensorflow=True,  # the launcher's thread placement
    )
    run_search(spec, options, echo=lambda line: print(line, flush=True))
    return 0


def _search_options(budget: float, storage: str | None) -> Any:
    from search.runs import SearchOptions

    return SearchOptions(
        trials=TRIAL_CAP,
        timeout=budget,
        storage=storage,
        data_dir=context().data_dir,
        offline=True,
        evaluate_test=False,
        trial_plots=False,
        summary=False,
    )


def optuna_points(study: Any) -> dict[str, Any]:
    """Finished trials by completion time, counted from the first trial's start.

    A complete trial counts with its value (its best epoch's validation data loss); a pruned trial
    with the best validation data loss it reported before it was stopped: KerasTuner's Hyperband
    ranks its short, early-bracket trials the same way, so both curves count every model trained.
    """
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start is not None]
    if not trials:
        return {"points": [], "seconds": 0.0, "trials": 0, "pruned": 0, "epochs": 0}
    start = min(t.datetime_start for t in trials)
    points: list[Point] = []
    for t in trials:
        if t.datetime_complete is None or t.state not in (TrialState.COMPLETE, TrialState.PRUNED):
            continue
        reported = [v for v in t.intermediate_values.values() if math.isfinite(v)]
        complete = t.state == TrialState.COMPLETE
        loss = t.values[0] if complete else min(reported, default=None)
        points.append(
            {
                "t": (t.datetime_complete - start).total_seconds(),
                "loss": loss,
                "complete": complete,
                "epochs": len(t.intermediate_values),
            }
        )
    points.sort(key=lambda p: p["t"])
    end = max(t.datetime_complete or t.datetime_start for t in trials)
    return {
        "points": points,
        "seconds": (end - start).total_seconds(),
        "trials": len(points),
        "pruned": sum(not p["complete"] for p in points),
        "epochs": sum(p["epochs"] for p in points),
    }


# -- (c): KerasTuner's Hyperband ------------------------------------------------------------------


def run_keras_tuner_hyperband(spec: Any, budget: float, directory: Path) -> dict[str, Any]:
    """KerasTuner's Hyperband on the mirrored hypermodel, objective ``val_data_loss``.

    ``search.compare.keras_tuner.run_keras_tuner`` ranks by Keras' ``val_loss`` (L2 penalty
    included), so
    the tuner is driven here, with that module's deadline and TensorBoard workaround.
    """
    import keras
    import keras_tuner

    from benchmarks.imdb_hypermodel import ImdbHyperModel
    from search.compare.keras_tuner import (
        ENDLESS_ITERATIONS,
        HYPERBAND_FACTOR,
        _deadline_tuner,
        _weights_only_loads,
    )
    from search.data import load_dataset

    ds = load_dataset(spec.data.source, spec.data.options, context())
    points: list[Point] = []
    trained: dict[str, int] = {}  # epochs run per trial (early stopping included)
    clock = {"start": time.perf_counter()}
    deadline = time.monotonic() + budget

    class RecordingHyperband(_deadline_tuner(keras_tuner.Hyperband, deadline)):  # type: ignore[misc]
        def on_epoch_end(self, trial: Any, model: Any, epoch: int, logs: Any = None) -> None:
            super().on_epoch_end(trial, model, epoch, logs)
            trained[trial.trial_id] = trained.get(trial.trial_id, 0) + 1

        def on_trial_end(self, trial: Any) -> None:
            super().on_trial_end(trial)  # the oracle scores the trial: its best val_data_loss
            stored = self.oracle.trials[trial.trial_id]
            score = stored.score
            ok = stored.status == "COMPLETED" and score is not None and math.isfinite(score)
            points.append(
                {
                    "t": time.perf_counter() - clock["start"],
                    "loss": float(score) if ok else None,
                    "complete": ok,
                    "epochs": trained.get(trial.trial_id, 0),  # this trial's own, not its parent's
                }
            )

    tuner = RecordingHyperband(
        ImdbHyperModel(),
        objective=keras_tuner.Objective("val_data_loss", direction="min"),
        max_epochs=spec.training.epochs,
        factor=HYPERBAND_FACTOR,
        hyperband_iterations=ENDLESS_ITERATIONS,
        seed=spec.sampler.seed,
        directory=str(directory),
        project_name="hyperband",
        overwrite=True,
    )
    callbacks = []
    if spec.training.patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_data_loss", patience=spec.training.patience)
        )
    keras.utils.set_random_seed(spec.training.seed)
    clock["start"] = time.perf_counter()
    try:
        with _weights_only_loads():
            tuner.search(
                ds.x_train,
                ds.y_train,
                validation_data=(ds.x_val, ds.y_val),
                epochs=spec.training.epochs,
                callbacks=callbacks,
                verbose=0,
            )
    except RuntimeError as exc:  # KerasTuner: "Number of consecutive failures exceeded..."
        print(f"  [keras_tuner] stopped: {exc}", flush=True)
    seconds = time.perf_counter() - clock["start"]
    print(f"  [keras_tuner] {len(points)} trials in {seconds:.1f} s", flush=True)
    return {
        "points": points,
        "seconds": seconds,
        "trials": len(points),
        "pruned": None,
        "epochs": sum(trained.values()),
    }


# -- analysis -------------------------------------------------------------------------------------


def best_so_far(points: list[Point], complete_only: bool = False) -> list[tuple[float, float]]:
    """(seconds, best loss so far) at each improvement."""
    curve: list[tuple[float, float]] = []
    for p in points:
        if p["loss"] is None or (complete_only and not p["complete"]):
            continue
        if not curve or p["loss"] < curve[-1][1]:
            curve.append((p["t"], p["loss"]))
    return curve


def first_reach(curve: list[tuple[float, float]], target: float | None) -> float | None:
    """When the curve first got to ``target`` or lower; ``None``: never."""
    if target is None:
        return None
    return next((t for t, loss in curve if loss <= target), None)


def analyse(runs: dict[str, dict[str, Any]], service: str = "capsearch") -> dict[str, Any]:
    """One seed's verdict for ``service``: curves, final bests, when each engine reached
    KerasTuner's best.

    ``ratio`` is the service's time to KerasTuner's final best over KerasTuner's own (infinite
    when the service never reached it), ``margin`` its final best minus KerasTuner's.
    """
    for run in runs.values():
        run["curve"] = best_so_far(run["points"])
        run["final"] = run["curve"][-1][1] if run["curve"] else None
        completed = best_so_far(run["points"], complete_only=True)
        run["final_complete"] = completed[-1][1] if completed else None
    kt = runs["keras_tuner"]
    target = kt["final"]
    for run in runs.values():
        run["reach"] = first_reach(run["curve"], target)
    ours = runs[service]
    kt_time = kt["reach"]
    ratio = math.inf
    if ours["reach"] is not None and kt_time:
        ratio = ours["reach"] / kt_time
    margin = math.inf
    if ours["final"] is not None and target is not None:
        margin = ours["final"] - target
    return {
        "target": target,
        "kt_time": kt_time,
        "ratio": ratio,
        "margin": margin,
        "goal_met": ratio <= 1 / 3 and margin < 0,
    }


def summarize(verdicts: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The goal over seeds: median time ratio <= 1/3 and median final-best margin below 0.

    Example:
        >>> v = {"ratio": 0.2, "margin": -0.01, "goal_met": True}
        >>> w = {"ratio": math.inf, "margin": 0.02, "goal_met": False}
        >>> summarize({0: v, 1: v, 2: w})["goal_met"]
        True
    """
    ratio = statistics.median(v["ratio"] for v in verdicts.values())
    margin = statistics.median(v["margin"] for v in verdicts.values())
    return {
        "median_ratio": ratio,
        "median_margin": margin,
        "met_seeds": sum(bool(v["goal_met"]) for v in verdicts.values()),
        "seeds": len(verdicts),
        "goal_met": ratio <= 1 / 3 and margin < 0,
    }


# -- report ---------------------------------------------------------------------------------------


def plot(
    by_seed: dict[int, dict[str, dict[str, Any]]],
    verdicts: dict[int, dict[str, Any]],
    budget: float,
    path: Path,
) -> None:
    """One panel per seed: each engine's best-so-far curve, KerasTuner's final best dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(by_seed)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.6), dpi=110, sharey=True, squeeze=False)
    for ax, (seed, runs) in zip(axes[0], by_seed.items(), strict=True):
        for key, run in runs.items():
            curve = run["curve"]
            if not curve:
                continue
            xs = [t for t, _ in curve] + [max(run["seconds"], curve[-1][0])]
            ys = [loss for _, loss in curve] + [curve[-1][1]]
            style = "--" if key == "optuna_nopruning" else "-"  # (a) and (b) may coincide early
            ax.step(xs, ys, where="post", linestyle=style, label=engine_name(key, run))
        target = verdicts[seed]["target"]
        if target is not None:
            ax.axhline(target, color="gray", linestyle=":", linewidth=1)
        ax.axvline(budget, color="gray", linestyle="--", linewidth=1)
        ax.set_title(f"seed {seed}", fontsize=10)
        ax.set_xlabel("seconds since the search started")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("best validation data loss")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(
        "P4: best-so-far on IMDB (dotted: KerasTuner's final best; dashed: budget)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _num(value: float | None, unit: str = "") -> str:
    return "never" if value is None else f"{value:.4f}" if not unit else f"{value:.0f} {unit}"


def _ratio(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:.2f}"


def _margin(value: float) -> str:
    return "n/a" if math.isinf(value) else f"{value:+.4f}"


def render(
    by_seed: dict[int, dict[str, dict[str, Any]]],
    verdicts: dict[str, dict[int, dict[str, Any]]],
    summaries: dict[str, dict[str, Any]],
    *,
    budget: float,
    epochs: int,
    quick: bool,
    png: str,
    seconds: float,
    pending: Sequence[int] = (),
) -> str:
    seeds = ", ".join(str(seed) for seed in by_seed)
    caveats = f" Quick smoke run ({epochs}-epoch cap): not a measurement." if quick else ""
    if pending:
        still = ", ".join(str(seed) for seed in pending)
        caveats += f" Partial: seeds {still} not run yet (the run is going on or was stopped)."
    lines = [
        f"{SECTION} (IMDB, imdb_generalize space, {budget:g} s per engine, seeds {seeds})",
        "",
        f"Measured by `make bench-search` on {time.strftime('%Y-%m-%d')}: {machine()}. "
        f"For each seed the engines ran one after another, each with a wall-clock budget "
        f"of {budget:g} s (no trial starts later; the running one finishes), epoch cap {epochs}, "
        f"no baselines, no per-trial plot artifacts (`make search` draws one, about 0.15 s a "
        f"trial); the seed seeds the TPE sampler, KerasTuner's oracle and the training. "
        f"Whole run: {seconds:.0f} s.{caveats}",
        "",
        "| seed | engine | finished trials | epochs trained | search s | final best val data loss "
        "| complete trials only | first reached KerasTuner's final best |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for seed, runs in by_seed.items():
        for key, run in runs.items():
            trials = str(run["trials"])
            if run["pruned"] is not None:
                trials += f" ({run['pruned']} pruned)"
            reach = "never" if run["reach"] is None else f"{run['reach']:.0f} s"
            lines.append(
                f"| {seed} | {engine_name(key, run)} | {trials} | {run['epochs']} "
                f"| {run['seconds']:.0f} | {_num(run['final'])} | {_num(run['final_complete'])} "
                f"| {reach} |"
            )
    for service, service_summary in summaries.items():
        lines += _verdict_table(by_seed, verdicts[service], service_summary, service)
    lines += [
        "",
        "Best-so-far is the lowest validation data loss (binary cross-entropy without the L2 "
        "penalty, in inference mode) among the trials finished so far, stamped when each trial "
        "finished, counted from the engine's first trial start (data loading excluded for all). "
        "Optuna: a complete trial counts with its value (its best epoch); a pruned trial with the "
        "best value it reported before it was stopped, as KerasTuner's Hyperband counts its short "
        "early-bracket trials too; the column 'complete trials only' is what Optuna itself calls "
        "the best. KerasTuner: the oracle's score of each trial (best `val_data_loss` over its "
        "epochs, from a `data_loss` metric compiled into the hypermodel), read in the tuner's "
        "`on_trial_end`; its trials stop early with the study's patience like the service's. "
        "A trial of a later Hyperband bracket continues from its parent's checkpoint, so its "
        "epochs are counted once. The run with several workers counts every worker's trials, "
        "from the first trial start among them; each worker process has its share of the "
        "cores (`capsearch workers`' placement) and the same time budget.",
        "",
        f"![P4 best-so-far validation data loss]({png})",
    ]
    return "\n".join(lines) + "\n"


def _verdict_table(
    by_seed: dict[int, dict[str, dict[str, Any]]],
    verdicts: dict[int, dict[str, Any]],
    summary: dict[str, Any],
    service: str,
) -> list[str]:
    """The goal for one service engine: per seed and on the medians."""
    name = engine_name(service, next(iter(by_seed.values()))[service])
    lines = [
        "",
        f"Goal for *{name}*:",
        "",
        "| seed | KerasTuner's final best (reached at) | this service reached it at "
        "| time ratio (goal <= 0.33) | this service's final best | margin (goal < 0) | goal |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for seed, runs in by_seed.items():
        v = verdicts[seed]
        kt = "none" if v["target"] is None else f"{v['target']:.4f} ({v['kt_time']:.0f} s)"
        ours = runs[service]
        reach = "never" if ours["reach"] is None else f"{ours['reach']:.0f} s"
        lines.append(
            f"| {seed} | {kt} | {reach} | {_ratio(v['ratio'])} | {_num(ours['final'])} "
            f"| {_margin(v['margin'])} | {'met' if v['goal_met'] else 'not met'} |"
        )
    met = "met" if summary["goal_met"] else "not met"
    return lines + [
        f"| median | | | {_ratio(summary['median_ratio'])} | "
        f"| {_margin(summary['median_margin'])} | **{met}** |",
        "",
        f"Goal: {name} reaches KerasTuner's final best within 1/3 of KerasTuner's time and "
        f"ends lower, judged on the medians over seeds: time ratio "
        f"{_ratio(summary['median_ratio'])}, final-best margin "
        f"{_margin(summary['median_margin'])} - **{met}** (met in {summary['met_seeds']} of "
        f"{summary['seeds']} seeds on its own).",
    ]


def engine_name(key: str, run: dict[str, Any]) -> str:
    """The engine's label in tables and the plot (the worker count filled in)."""
    return ENGINES[key].format(n=run.get("workers", 1))


def merge_section(text: str, section: str, heading: str = SECTION) -> str:
    """``text`` with its section starting with ``heading`` replaced by ``section``, or
    ``section`` appended.

    Example:
        >>> merge_section("# B\\n\\n## P1\\n\\nx\\n", "## P4 search efficiency\\n\\ny\\n")
        '# B\\n\\n## P1\\n\\nx\\n\\n## P4 search efficiency\\n\\ny\\n'
    """
    if not text.strip():
        return "# Benchmarks\n\n" + section
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    if start is None:
        return text.rstrip("\n") + "\n\n" + section
    end = next((j for j in range(start + 1, len(lines)) if lines[j].startswith("## ")), None)
    rest = "" if end is None else "\n" + "".join(lines[end:])
    return "".join(lines[:start]) + section + rest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, required=True, help="seconds per engine")
    parser.add_argument(
        "--seeds",
        type=_seeds,
        default=[0],
        help="comma-separated seeds: each engine runs once per seed",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument(
        "--quick", action="store_true", help=f"a smoke test: {QUICK_EPOCHS}-epoch cap"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=available_cpus(),
        help="worker processes of (a') (default: one per core; 1 leaves (a') out)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one worker of (a'), see run_worker
    args = parser.parse_args(argv)
    if args.budget <= 0:
        parser.error("--budget must be positive")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.worker:
        return run_worker(study_spec(args.quick, args.seeds[0]), args.budget, args.worker)
    out: Path = args.out
    default = out.resolve() == (ROOT / "BENCHMARKS.md").resolve()
    png = (ROOT / "benchmarks" if default else out.parent) / "p4_search.png"

    start = time.perf_counter()
    specs = {seed: study_spec(args.quick, seed) for seed in args.seeds}
    services = [key for key in SERVICES if key != "capsearch_workers" or args.workers > 1]
    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for seed, spec in specs.items():
        print(f"seed {seed}", flush=True)
        by_seed[seed] = run_engines(spec, args.budget, args.workers, seed=seed, quick=args.quick)
        # Written after every seed: a run stopped later keeps the seeds it finished.
        section = write_results(
            by_seed,
            services,
            pending=[s for s in specs if s not in by_seed],
            budget=args.budget,
            epochs=spec.training.epochs,  # the seeds differ in nothing else
            quick=args.quick,
            seconds=time.perf_counter() - start,
            out=out,
            png=png,
        )
    print(section)
    print(f"wrote {out}, {png} and {png.with_suffix('.json')}")
    return 0


def write_results(
    by_seed: dict[int, dict[str, dict[str, Any]]],
    services: list[str],
    *,
    pending: Sequence[int],
    budget: float,
    epochs: int,
    quick: bool,
    seconds: float,
    out: Path,
    png: Path,
) -> str:
    """The P4 section of ``out``, its PNG and the raw JSON beside the PNG, for the seeds run so
    far (``pending``: those still to run, named in the section); returns the section."""
    verdicts = {key: {seed: analyse(by_seed[seed], key) for seed in by_seed} for key in services}
    summaries = {key: summarize(verdicts[key]) for key in services}
    png.parent.mkdir(parents=True, exist_ok=True)
    plot(by_seed, verdicts["capsearch"], budget, png)
    section = render(
        by_seed,
        verdicts,
        summaries,
        budget=budget,
        epochs=epochs,
        quick=quick,
        png=os.path.relpath(png, out.resolve().parent),
        seconds=seconds,
        pending=pending,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    old = out.read_text(encoding="utf-8") if out.exists() else ""
    out.write_text(merge_section(old, section), encoding="utf-8")
    raw = {
        "budget": budget,
        "quick": quick,
        "pending_seeds": list(pending),
        "summary": summaries,
        "seeds": {
            str(seed): {
                "verdicts": {key: verdicts[key][seed] for key in services},
                "runs": by_seed[seed],
            }
            for seed in by_seed
        },
    }
    png.with_suffix(".json").write_text(json.dumps(raw, indent=1) + "\n", encoding="utf-8")
    return section


def run_engines(
    spec: Any, budget: float, workers: int, *, seed: int, quick: bool
) -> dict[str, dict[str, Any]]:
    """The engines one after another on ``spec``, each for ``budget`` seconds ((a') when
    ``workers > 1``)."""
    from search.training.session import clear_session

    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="capsearch-p4-") as tmp:
        folder = Path(tmp)
        print(f"running capsearch ({ENGINES['capsearch']}), {budget:g} s...", flush=True)
        runs["capsearch"] = run_optuna(spec, budget, folder, "capsearch")
        clear_session()  # collects garbage
        if workers > 1:
            label = ENGINES["capsearch_workers"].format(n=workers)
            print(f"running capsearch_workers ({label}), {budget:g} s...", flush=True)
            run = run_optuna_workers(spec, budget, folder, workers, seed=seed, quick=quick)
            runs["capsearch_workers"] = run | {"workers": workers}
        no_pruning = dataclasses.replace(spec, pruner=_no_pruner())
        print(
            f"running optuna_nopruning ({ENGINES['optuna_nopruning']}), {budget:g} s...", flush=True
        )
        runs["optuna_nopruning"] = run_optuna(no_pruning, budget, folder, "optuna_nopruning")
        clear_session()
        print(f"running keras_tuner ({ENGINES['keras_tuner']}), {budget:g} s...", flush=True)
        runs["keras_tuner"] = run_keras_tuner_hyperband(spec, budget, folder / "kt")
        clear_session()
    return runs


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: give distinct integers, e.g. 0,1,2")
    return seeds


def _no_pruner() -> Any:
    from search.spec.studyfile import PrunerSpec

    return PrunerSpec(name="none")


if __name__ == "__main__":
    sys.exit(main())
