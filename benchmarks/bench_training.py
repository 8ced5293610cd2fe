"""``make bench``: training-speed figures measured side by side in one run, into BENCHMARKS.md.

Each figure is a ratio against a naive baseline measured in the same run on the same machine:

* P1 tiny data: optimizer steps per second, seed 000 style ``model.fit(..., epochs=E,
  batch_size=21)`` versus this service's repeated-data path.
* P2 IMDB: seconds per epoch, the book's dense multi-hot pipeline versus this service's sparse
  pipeline, at widths 16 and 512, with the validation accuracy of both after 4 epochs.
* P3 per-trial overhead: the share of an IMDB trial's wall time spent outside the epochs'
  optimizer steps, and the worker's resident memory after 1 and after N trials; the same share
  over the first trials of a real ``imdb_generalize`` search.

P4 (search efficiency against KerasTuner) is ``benchmarks/bench_search.py``, ``make
bench-search``: it runs for three times its budget, so it is kept apart.

Usage: ``python -m benchmarks.bench_training [--quick] [--only p1 p2 p2_levers p3 p3_search]
[--out FILE]``; ``p2_levers`` adds P2 rows for a batch-normalized and a funnel-shaped model.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import scipy.sparse  # noqa: E402
import tensorflow as tf  # noqa: E402

from search import settings  # noqa: E402
from search.data import DataContext, load_dataset  # noqa: E402
from search.training.model import build_model  # noqa: E402
from search.training.prepared import PreparedData, steps_per_execution  # noqa: E402
from search.training.session import clear_session, long_lived_objects_frozen  # noqa: E402
from search.training.sparse_dense import CSR_FROM_UNITS  # noqa: E402

BOOK = {
    "layers": 2,
    "units": 16,
    "activation": "relu",
    "l2": 0.0,
    "dropout": 0.0,
    "learning_rate": 0.001,
    "optimizer": "rmsprop",
}


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = psutil.virtual_memory().total / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB; Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}"
    )


def context() -> DataContext:
    shared = ROOT.parent / "shared" / "data"
    return DataContext(
        data_dir=settings.data_dir() or (shared if shared.is_dir() else None),
        cache_dir=ROOT / settings.cache_dir(),  # an absolute CAPSEARCH_CACHE stays as it is
        base_dir=ROOT / "spaces",
        offline=True,
    )


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


# -- P1 ------------------------------------------------------------------------------------------


def p1_tiny(quick: bool) -> dict[str, Any]:
    dataset = load_dataset("overfit30", {}, context())
    x, y = dataset.x_train, dataset.y_train
    params = BOOK | {"units": 32, "optimizer": "adam"}
    naive_epochs = 100 if quick else 300
    steps = 2000 if quick else 6000

    model = build_model(params, n_features=1, task="regression", seed=0)
    model.fit(x, y, epochs=2, batch_size=21, verbose=0)  # warm-up: compile once
    naive_time, _ = timed(lambda: model.fit(x, y, epochs=naive_epochs, batch_size=21, verbose=0))

    data = PreparedData(dataset)
    fast = build_model(params, n_features=1, task="regression", seed=0, steps_per_execution=100)
    data.fit(fast, batch_size=21, epochs=1, steps_per_epoch=100)  # warm-up
    fast_time, _ = timed(
        lambda: data.fit(fast, batch_size=21, epochs=steps // 500, steps_per_epoch=500)
    )
    naive_rate, fast_rate = naive_epochs / naive_time, steps / fast_time
    return {
        "naive_steps_per_s": naive_rate,
        "fast_steps_per_s": fast_rate,
        "ratio": fast_rate / naive_rate,
        "goal": 30.0,
    }


# -- P2 ------------------------------------------------------------------------------------------


P2_LEVERS: tuple[tuple[str, dict[str, Any], tuple[float, float]], ...] = (
    ("batch norm", {"batch_norm": True}, (3.0, 2.0)),
    ("funnel, 3 layers", {"layers": 3, "shape": "funnel"}, (4.0, 2.0)),
)
"""P2's rows for the widened family: label, changes to the book's model, goals at 16 and 512."""


def p2_levers(quick: bool) -> list[dict[str, Any]]:
    """P2 for a batch-normalized and a funnel-shaped model, the book's side with the same layers."""
    return [
        row
        for label, changes, goals in P2_LEVERS
        for row in p2_imdb(quick, changes=changes, label=label, goals=goals)
    ]


def p2_imdb(
    quick: bool,
    *,
    changes: dict[str, Any] | None = None,
    label: str = "book 2 layers",
    goals: tuple[float, float] = (4.0, 2.0),
) -> list[dict[str, Any]]:
    dataset = load_dataset("imdb", {}, context())
    epochs = 2 if quick else 4
    rows = []
    assert isinstance(dataset.x_train, scipy.sparse.spmatrix | scipy.sparse.sparray)
    assert isinstance(dataset.x_val, scipy.sparse.spmatrix | scipy.sparse.sparray)
    x_dense = dataset.x_train.toarray()  # the book's 15,000 x 10,000 float matrix
    x_val_dense = dataset.x_val.toarray()
    data = PreparedData(dataset)
    for units in (16, 512):
        params = BOOK | (changes or {}) | {"units": units}
        clear_session()
        book = build_model(params, n_features=dataset.n_features, task="binary", seed=0)
        book_epochs = _EpochClock()
        book_time, history = timed(
            functools.partial(
                book.fit,
                x_dense,
                dataset.y_train,
                epochs=epochs,
                batch_size=512,
                validation_data=(x_val_dense, dataset.y_val),
                callbacks=[book_epochs],
                verbose=0,
            )
        )
        book_acc = float(history.history["val_accuracy"][-1])
        clear_session()
        # As the service's objective builds it: the epoch's steps in one compiled call.
        fast = build_model(
            params,
            n_features=dataset.n_features,
            task="binary",
            sparse=True,
            seed=0,
            steps_per_execution=steps_per_execution(data.steps_per_epoch(512)),
        )
        fast_time, fast_history = timed(
            functools.partial(data.fit, fast, batch_size=512, epochs=epochs, measure_train=False)
        )
        # Warm epochs (the first one traces the graphs) include each side's validation pass;
        # medians, so that one epoch slowed by the machine does not decide the ratio.
        book_warm = float(np.median(book_epochs.seconds[1:]))
        fast_warm = float(
            np.median([r.train_seconds + r.eval_seconds for r in fast_history.records[1:]])
        )
        rows.append(
            {
                "units": units,
                "book_s_per_epoch": book_time / epochs,
                "fast_s_per_epoch": fast_time / epochs,
                "ratio_all": book_time / fast_time,
                "book_warm": book_warm,
                "fast_warm": fast_warm,
                "ratio": book_warm / fast_warm,
                "book_val_acc": book_acc,
                "fast_val_acc": fast_history.records[-1].val_accuracy,
                "goal": goals[0] if units == 16 else goals[1],
                "model": label,
                "input": "sparse, COO" if units < CSR_FROM_UNITS else "sparse, CSR",
                "epochs": epochs,
            }
        )
        del book, fast
        gc.collect()
    return rows


class _EpochClock(keras.callbacks.Callback):
    """Wall seconds of each epoch, validation included."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


# -- P3 ------------------------------------------------------------------------------------------


def p3_overhead(quick: bool) -> dict[str, Any]:
    """Where an IMDB trial's wall time goes, and the worker's memory over many trials.

    Each trial's epochs record ``train_seconds`` (the epoch's steps) and ``eval_seconds``
    (the validation pass). The first epoch's steps also hold any tracing (the worker's first
    trial traces its shared graphs): see :func:`_trial_parts`. *Other* is the rest of the
    trial's wall time (model build, ``clear_session``, pruner reports and attribute writes).
    """
    import optuna

    from search.engine.objective import Objective
    from search.spec.studyfile import load_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_study("imdb_generalize")
    data = PreparedData(load_dataset("imdb", spec.data.options, context()))
    objective = Objective(spec, data)
    study = optuna.create_study(pruner=optuna.pruners.NopPruner())
    fixed = {
        "layers": 2,
        "units": 16,
        "use_l2": False,
        "dropout": 0.5,
        "batch_size": 512,
        "learning_rate": 0.001,
        "optimizer": "rmsprop",
    }
    process = psutil.Process()
    n_trials = 20 if quick else 100
    rss: dict[int, float] = {}
    parts: list[dict[str, float]] = []
    # Frozen as a worker's trial loop does (search.runs.lifecycle).
    with long_lived_objects_frozen(), _histories_kept() as histories:
        for i in range(n_trials):
            study.enqueue_trial(fixed)
            study.optimize(objective, n_trials=1)
            trial = study.trials[-1]
            parts.append(_trial_parts(trial, histories[trial.number].records))
            if i in (0, n_trials - 1):
                rss[i + 1] = process.memory_info().rss / 2**20
    later = parts[1:] if len(parts) > 1 else parts
    median = {key: float(np.median([p[key] for p in later])) for key in parts[0]}
    return {
        "trials": n_trials,
        "first": parts[0],
        "median": median,
        "overhead_share_first": 1 - parts[0]["steps"] / parts[0]["wall"],
        "overhead_share_median": float(np.median([1 - p["steps"] / p["wall"] for p in later])),
        "rss_after_1_mb": rss[1],
        "rss_after_n_mb": rss[n_trials],
        "growth_mb": rss[n_trials] - rss[1],
        "epochs": spec.training.epochs,
    }


def p3_search(quick: bool) -> dict[str, Any]:
    """Where the trials of a real search spend their time, as ``make search`` runs them.

    ``run_search`` on the ``imdb_generalize`` study file in a fresh SQLite storage: its
    baselines first, then TPE with Hyperband pruning, a plot artifact per trial, every
    attribute written. Each trial's time is cut as :func:`_trial_parts` does; *other* is then
    sampling, pruning, storage, model build, ``clear_session`` and the plot.
    """
    import tempfile

    import optuna

    from search.runs import SearchOptions, run_search
    from search.spec.studyfile import load_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n_trials = 12 if quick else 40
    with (
        tempfile.TemporaryDirectory(prefix="capsearch-bench-") as tmp,
        _histories_kept() as histories,
        _calls_timed(_other_costs()) as costs,
    ):
        options = SearchOptions(
            trials=n_trials,
            storage=f"sqlite:///{tmp}/studies.db",
            data_dir=context().data_dir,
            offline=True,
            evaluate_test=False,
            summary=False,
        )
        study = run_search(load_study("imdb_generalize"), options, echo=lambda line: None)
        # Finished trials only: a failed one may have no epoch (or no history) to cut.
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        trials = study.get_trials(deepcopy=False, states=finished)
    parts = [_trial_parts(trial, histories[trial.number].records) for trial in trials]
    keys = ("wall", "steps", "tracing", "eval", "other")
    totals = {key: sum(p[key] for p in parts) for key in keys}
    return {
        "trials": len(trials),
        "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
        "epochs": sum(int(p["epochs"]) for p in parts),
        "totals": totals,
        "overhead_share": 1 - totals["steps"] / totals["wall"],
        "other_costs": costs,
    }


def _other_costs() -> dict[str, list[tuple[Any, str]]]:
    """The calls a real search's trial makes outside its epochs, by what they are for.

    No entry calls another, so nothing counts twice: the plot's drawing leaves out its upload
    and its one attribute write (an attribute write); the sampler's and pruner's storage reads
    count as sampling and pruning.
    """
    import optuna

    import search.engine.objective
    import search.training.run
    import search.views.trial_plots

    return {
        "plot drawing": [(search.views.trial_plots, "draw_trial_figure")],
        "Keras model build": [(search.training.run, "build_model")],
        "attribute writes": [(optuna.storages.RDBStorage, "set_trial_user_attr")],
        "Hyperband's checks": [(optuna.pruners.HyperbandPruner, "prune")],
        "TPE sampling": [
            (optuna.samplers.TPESampler, "sample_relative"),
            (optuna.samplers.TPESampler, "sample_independent"),
        ],
        "reported values": [(optuna.storages.RDBStorage, "set_trial_intermediate_value")],
        "clear_session": [(search.engine.objective, "clear_session")],
    }


@contextlib.contextmanager
def _calls_timed(places: dict[str, list[tuple[Any, str]]]) -> Iterator[dict[str, float]]:
    """Seconds spent in each group of ``places`` (module or class, attribute) while the block runs.

    Each callable is wrapped by :func:`_wrapped` for the block and put back after it.
    """
    seconds = dict.fromkeys(places, 0.0)

    def timing(label: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(fn)
            def timed_call(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    seconds[label] += time.perf_counter() - start

            return timed_call

        return wrap

    with contextlib.ExitStack() as stack:
        for label, group in places.items():
            for owner, name in group:
                stack.enter_context(_wrapped(owner, name, timing(label)))
        yield seconds


@contextlib.contextmanager
def _wrapped(
    owner: Any, name: str, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> Iterator[None]:
    """``owner.name`` replaced by ``wrap(owner.name)`` while the block runs, put back after it.

    A class's method must be defined on that class itself, so that putting it back restores the
    class as it was.
    """
    if isinstance(owner, type) and name not in vars(owner):
        raise ValueError(f"{owner.__name__}.{name} is inherited: wrap the base class's")
    original = vars(owner)[name] if isinstance(owner, type) else getattr(owner, name)
    setattr(owner, name, wrap(original))
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def _histories_kept() -> Iterator[dict[int, Any]]:
    """Every trial's epoch records by trial number, pruned trials' too, while the block runs.

    Wraps :meth:`search.engine.objective.Objective.train`, which every objective of the searched
    family calls, so it sees the trials ``run_search`` runs as well as one's own.
    """
    from search.engine.objective import Objective

    histories: dict[int, Any] = {}

    def keeping(train: Callable[..., Any]) -> Callable[..., Any]:
        def keep_history(self: Objective, trial: Any, **kwargs: Any) -> Any:
            histories[trial.number] = kwargs["history"]  # filled epoch by epoch
            return train(self, trial, **kwargs)

        return keep_history

    with _wrapped(Objective, "train", keeping):
        yield histories


def _trial_parts(trial: Any, records: list[Any]) -> dict[str, float]:
    """A finished trial's wall time cut into optimizer steps, tracing, validation and the rest.

    *Tracing* is the first epoch's surplus over the trial's median later epoch (none in a trial
    of one epoch); *steps* are the rest of the epochs' training time.
    """
    assert trial.datetime_complete is not None and trial.datetime_start is not None
    wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
    seconds = [r.train_seconds for r in records]
    warm = float(np.median(seconds[1:])) if len(seconds) > 1 else seconds[0]
    tracing = max(seconds[0] - warm, 0.0)
    steps = sum(seconds) - tracing
    evaluation = sum(r.eval_seconds for r in records)
    return {
        "wall": wall,
        "epochs": len(records),
        "steps": steps,
        "tracing": tracing,
        "eval": evaluation,
        "other": wall - steps - tracing - evaluation,
    }


# -- report --------------------------------------------------------------------------------------


def _mark(ok: bool) -> str:
    return "met" if ok else "not met"


def render(results: dict[str, Any], seconds: float) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` on {time.strftime('%Y-%m-%d')}: {results['machine']}.",
        f"Last run: {seconds:.0f} s. Every ratio compares two measurements taken side by side in "
        "one run.",
        "",
    ]
    p1 = results.get("p1")
    if p1:
        lines += [
            "## P1 tiny data (21 points, Dense 32-32, full batch)",
            "",
            "| path | steps/s |",
            "| --- | --- |",
            f"| naive `fit(epochs=E, batch_size=21)` | {p1['naive_steps_per_s']:.0f} |",
            f"| repeated data, 500 steps per epoch | {p1['fast_steps_per_s']:.0f} |",
            "",
            f"Ratio **{p1['ratio']:.1f}x** (goal >= 30x: {_mark(p1['ratio'] >= 30)}).",
            "",
        ]
    p2 = [*results.get("p2", []), *results.get("p2_levers", [])]
    if p2:
        lines += [
            f"## P2 IMDB, seconds per epoch (batch 512, {p2[0]['epochs']} epochs)",
            "",
            "Warm epochs: median of epochs 2 onwards, each with its validation pass (the book's "
            "Keras `validation_data`, the service's inference-mode measurement); in brackets the "
            "average over all epochs, first one (graph tracing) included.",
            "",
            "| model, width | book dense s/epoch | this service s/epoch (input) | ratio | goal | "
            "book val acc | service val acc |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for row in p2:
            met = _mark(row["ratio"] >= row["goal"])
            model = row.get("model", "book 2 layers")
            book = f"{row['book_warm']:.2f} ({row['book_s_per_epoch']:.2f})"
            lines.append(
                f"| {model}, {row['units']} | {book}"
                f" | {row['fast_warm']:.2f} ({row['fast_s_per_epoch']:.2f}; {row['input']})"
                f" | {row['ratio']:.2f}x ({row['ratio_all']:.2f}x) | >= {row['goal']:.0f}x {met}"
                f" | {row['book_val_acc']:.4f} | {row['fast_val_acc']:.4f} |"
            )
        lines.append("")
    p3 = results.get("p3")
    if p3:
        lines += [
            "## P3 per-trial overhead and memory (IMDB, Dense 16-16, dropout 0.5)",
            "",
            "Median over trials 2 onwards (the first one in brackets), seconds per trial:",
            "",
            "| wall | optimizer steps | graph tracing | validation passes | other | epochs |",
            "| --- | --- | --- | --- | --- | --- |",
            _p3_row(p3["median"], p3["first"]),
            "",
            f"- Share of a trial's wall time outside the optimizer steps: "
            f"{p3['overhead_share_median']:.1%} (first trial {p3['overhead_share_first']:.1%}; "
            f"goal <= 5 %: {_mark(p3['overhead_share_median'] <= 0.05)}).",
            f"- What it is made of: the validation passes, which pruning and the objective need "
            f"after every epoch, are {_eval_floor(p3['median']):.1%} of steps plus validation "
            f"on their own, so the share stays above that however small the rest gets.",
            f"- The overhead outside the epochs (an epoch being its steps and its validation "
            f"pass, as Keras' `fit(validation_data=...)` counts it), graph tracing and the "
            f"rest: "
            f"{(p3['median']['tracing'] + p3['median']['other']) / p3['median']['wall']:.1%} of "
            f"the trial. Only the worker's first trial of a layer structure traces its shared "
            f"train-epoch and evaluation graphs (search.training.shared_graphs); the rest is "
            "building the "
            f"Keras model, clear_session, pruner reports and attribute writes.",
            f"- Resident memory after 1 trial {p3['rss_after_1_mb']:.0f} MB, after "
            f"{p3['trials']} trials {p3['rss_after_n_mb']:.0f} MB: growth {p3['growth_mb']:.0f} MB "
            f"(goal <= 100 MB: {_mark(p3['growth_mb'] <= 100)}).",
            "",
        ]
    search = results.get("p3_search")
    if search:
        totals = search["totals"]
        lines += [
            "### P3 in a real search (`make search STUDY=imdb_generalize`, SQLite)",
            "",
            f"The study's first {search['trials']} trials ({search['pruned']} pruned, "
            f"{search['epochs']} epochs), its 5 baselines first, as `capsearch run` runs them: "
            "TPE, Hyperband pruning, a plot per trial. Seconds over all trials:",
            "",
            "| wall | optimizer steps | graph tracing | validation passes | other | "
            "outside the steps |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| {totals['wall']:.1f} | {totals['steps']:.1f} | {totals['tracing']:.1f} | "
            f"{totals['eval']:.1f} | {totals['other']:.1f} | {search['overhead_share']:.1%} "
            f"(goal <= 5 %: {_mark(search['overhead_share'] <= 0.05)}) |",
            "",
            f"- *Other*, {totals['other'] / search['trials'] * 1000:.0f} ms a trial, is what the "
            "fixed-trial figure above leaves out. " + _other_costs_line(search),
            "- *Graph tracing* (estimated: the first epoch's surplus over the later ones) is "
            "paid once per worker for each new layer structure (depth and optimizer: six in "
            "this space), so its share falls as a search goes on.",
            "",
        ]
    return "\n".join(lines) + "\n"


def _other_costs_line(search: dict[str, Any]) -> str:
    """What a real search's *other* time is made of, in ms a trial, largest first."""
    costs = search.get("other_costs")
    if not costs:  # a result from before the calls were timed
        return "It is sampling, pruning, storage writes, the plot, model build and clear_session."
    per_trial = {label: s / search["trials"] * 1000 for label, s in costs.items()}
    rest = search["totals"]["other"] / search["trials"] * 1000 - sum(per_trial.values())
    parts = [f"{label} {ms:.0f}" for label, ms in sorted(per_trial.items(), key=lambda i: -i[1])]
    return (
        f"Measured in ms a trial: {', '.join(parts)}; the rest {rest:.0f} (trial start and "
        "tell, heartbeat, the other storage writes, callbacks, epoch bookkeeping)."
    )


def _eval_floor(median: dict[str, float]) -> float:
    """The share validation alone takes of a trial with no tracing and no other overhead."""
    return median["eval"] / (median["steps"] + median["eval"])


def _p3_row(median: dict[str, float], first: dict[str, float]) -> str:
    keys = ("wall", "steps", "tracing", "eval", "other")
    cells = [f"{median[k]:.2f} ({first[k]:.2f})" for k in keys]
    return f"| {' | '.join(cells)} | {median['epochs']:.0f} ({first['epochs']:.0f}) |"


RESULTS = ROOT / "storage" / "bench_results.json"


def _other_sections(path: Path) -> str:
    """Sections of an existing BENCHMARKS.md that this script does not write (e.g. P4)."""
    if not path.exists():
        return ""
    kept, keep = [], False
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            keep = not line.startswith(("## P1", "## P2", "## P3"))
        if keep:
            kept.append(line)
    return "\n".join(kept) + "\n" if kept else ""


_SECTION_RESULTS = {"## P1": ("p1",), "## P2": ("p2", "p2_levers"), "## P3": ("p3", "p3_search")}
"""Each measured section of BENCHMARKS.md and the results it is rendered from."""


def _sections(text: str) -> tuple[str, dict[str, str]]:
    """Split a BENCHMARKS.md into its head and its ``## P1``-``## P3`` sections (by prefix)."""
    head: list[str] = []
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            prefix = next((k for k in _SECTION_RESULTS if line.startswith(k)), None)
            current = sections.setdefault(prefix, []) if prefix else None
        if current is not None:
            current.append(line)
        elif not sections:
            head.append(line)
    return "\n".join(head), {k: "\n".join(v) for k, v in sections.items()}


def keep_unmeasured(rendered: str, previous: str, results: dict[str, Any]) -> str:
    r"""``rendered`` with each P section that has no results taken from ``previous``.

    ``make bench BENCH_ARGS="--only p2"`` on a fresh clone (no cached results) measures P2
    only; the P1 and P3 sections of the existing BENCHMARKS.md stay as they were.

    Example:
        >>> old = "# B\n\n## P1 tiny\nold p1\n## P2 imdb\nold p2\n"
        >>> new = "# B\n\n## P2 imdb\nnew p2"
        >>> print(keep_unmeasured(new, old, {"p2": {}}))
        # B
        <BLANKLINE>
        ## P1 tiny
        old p1
        ## P2 imdb
        new p2
    """
    head, fresh = _sections(rendered)
    _, old = _sections(previous)
    parts = [head]
    for prefix, keys in _SECTION_RESULTS.items():
        if prefix in fresh and any(results.get(key) is not None for key in keys):
            parts.append(fresh[prefix])
        elif prefix in old:
            parts.append(old[prefix])
        elif prefix in fresh:
            parts.append(fresh[prefix])
    return "\n".join(part for part in parts if part)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    parser.add_argument(
        "--only",
        nargs="*",
        default=["p1", "p2", "p2_levers", "p3", "p3_search"],
        help="figures to run",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    # Figures not re-run keep their last measurement (same machine), so one can be redone alone.
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["machine"] = machine()
    # P3 first: its memory figures describe a worker, not a process that ran P2's dense matrices
    # (freed, but kept by the allocator).
    figures: tuple[tuple[str, Callable[[bool], Any]], ...] = (
        ("p3", p3_overhead),
        ("p3_search", p3_search),
        ("p1", p1_tiny),
        ("p2", p2_imdb),
        ("p2_levers", p2_levers),
    )
    for name, fn in figures:
        if name in args.only:
            print(f"running {name}...", flush=True)
            results[name] = fn(args.quick)
            print(results[name], flush=True)
    if args.only:
        results["seconds"] = time.perf_counter() - start
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    previous = args.out.read_text() if args.out.exists() else ""
    rendered = keep_unmeasured(render(results, results.get("seconds", 0.0)), previous, results)
    text = rendered.rstrip("\n") + "\n\n" + _other_sections(args.out)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
