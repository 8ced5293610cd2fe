"""capsearch verdict: the companion study's re-trainings, their statistics, the JSON, bad input.

Real training on tiny studies (overfit30 and Pima, a few trials of a few epochs), real SQLite.
"""

from __future__ import annotations

import html
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from search.runs import SearchOptions, run_search
from search.spec.studyfile import load_study
from search.views.verdict_view import companion_name
from tests.conftest import ROOT, write_study

pytestmark = pytest.mark.slow

MEMORIZE = """
description = "tiny memorize study with a verdict"
objective = "memorize"
trials = 4

[data]
source = "overfit30"

[training]
epochs = 4
steps_per_epoch = 20
seed = 0

[space]
layers = { low = 1, high = 2 }
units = { low = 4, high = 32, log = true }
l2 = { low = 1e-6, high = 1e-3, log = true, zero = true }
dropout = { choices = [0.1, 0.2] }
batch_size = 21
learning_rate = { low = 1e-3, high = 1e-2, log = true }

[pruner]
name = "none"

[[baselines]]
name = "small"
layers = 1
units = 8
l2 = 0.0
dropout = 0.1
learning_rate = 0.005

[verdict]
seeds = 3
top_k = 2
fractions = [0.5, 1.0]
"""

# Every trial trains the same configuration; only the seed (study seed + trial number) differs,
# so whichever trial is "best" drew a lucky seed.
FLUKE = """
description = "identical configurations, different seeds"
objective = "generalize"
trials = 4

[data]
source = "pima"
validation_fraction = 0.2
test_fraction = 0.2
seed = 0

[training]
epochs = 3
seed = 0

[space]
layers = 1
units = 8
l2 = 0.0
dropout = 0.0
batch_size = 64
learning_rate = 0.01

[pruner]
name = "none"

[[baselines]]
name = "same"
layers = 1
units = 8
l2 = 0.0
dropout = 0.0
batch_size = 64
learning_rate = 0.01

[verdict]
seeds = 4
top_k = 3
fractions = [1.0]
"""


def capsearch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "search", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def searched(tmp_path: Path, name: str, text: str) -> tuple[Path, str]:
    path = write_study(tmp_path, name, text)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    run_search(load_study(path), SearchOptions(storage=url, trial_plots=False), echo=lambda _: None)
    return path, url


def trials_of(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials()


def originals(url: str, name: str) -> list[tuple[Any, ...]]:
    return [(t.number, t.state, t.values, t.params, t.user_attrs) for t in trials_of(url, name)]


@pytest.fixture(scope="module")
def memorize_verdict(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from search.verdict import give_verdict

    folder = tmp_path_factory.mktemp("verdict")
    path, url = searched(folder, "tiny_verdict", MEMORIZE)
    before = originals(url, "tiny_verdict")
    lines: list[str] = []
    verdict = give_verdict(load_study(path), SearchOptions(storage=url), echo=lines.append)
    return {"verdict": verdict, "url": url, "path": path, "before": before, "lines": lines}


def test_companion_study_holds_every_job_with_its_role(memorize_verdict: dict[str, Any]) -> None:
    verdict, url = memorize_verdict["verdict"], memorize_verdict["url"]
    jobs = trials_of(url, companion_name("tiny_verdict"))
    assert verdict["complete"] and len(jobs) == verdict["jobs"]["planned"]
    assert all(t.state == TrialState.COMPLETE for t in jobs)
    roles = {role for t in jobs for role in t.user_attrs["roles"]}
    assert {"best", "top", "baseline", "fraction:0.5"} <= roles
    assert any(r.startswith("ablation:") for r in roles)
    for t in jobs:  # configuration, seed and fraction are the trial's fixed parameters
        assert t.params["seed"] == t.user_attrs["seed"] == t.user_attrs["seed"]
        assert t.params["fraction"] == t.user_attrs["fraction"]
        assert {k: t.params[k] for k in t.user_attrs["config"]} == t.user_attrs["config"]


def test_the_original_study_is_unchanged(memorize_verdict: dict[str, Any]) -> None:
    assert originals(memorize_verdict["url"], "tiny_verdict") == memorize_verdict["before"]
    study = optuna.load_study(study_name="tiny_verdict", storage=memorize_verdict["url"])
    from search.views.notes import read_study_note

    assert "## Verdict" in read_study_note(study)  # only its note is rewritten


def test_seed_repeat_statistics_are_the_stored_values(memorize_verdict: dict[str, Any]) -> None:
    verdict, url = memorize_verdict["verdict"], memorize_verdict["url"]
    jobs = trials_of(url, companion_name("tiny_verdict"))
    for repeat in verdict["repeats"]:
        stored = [
            t.values[0]
            for t in jobs
            if t.user_attrs["source_trial"] == repeat["trial"]
            and t.user_attrs["fraction"] == 1.0
            and any(r in ("best", "top", "baseline") for r in t.user_attrs["roles"])
        ]
        assert repeat["n"] == 3 and sorted(repeat["values"]) == sorted(stored[:3])
        assert repeat["mean"] == pytest.approx(statistics.fmean(repeat["values"]))
        assert repeat["std"] == pytest.approx(statistics.stdev(repeat["values"]))


def test_an_ablation_trains_with_the_regularizer_off(memorize_verdict: dict[str, Any]) -> None:
    from search.training.model import build_model

    url = memorize_verdict["url"]
    jobs = trials_of(url, companion_name("tiny_verdict"))
    ablated = [t for t in jobs if "ablation:dropout" in t.user_attrs["roles"]]
    best = [t for t in jobs if "best" in t.user_attrs["roles"]]
    assert ablated and best
    assert ablated[0].params["dropout"] == 0.0 and best[0].params["dropout"] > 0

    def dropout_layers(config: dict[str, Any]) -> int:
        model = build_model(config, n_features=1, task="regression")
        return sum(type(layer).__name__ == "Dropout" for layer in model.layers)

    assert dropout_layers(best[0].user_attrs["config"]) > 0
    assert dropout_layers(ablated[0].user_attrs["config"]) == 0
    names = [r["regularizer"] for r in memorize_verdict["verdict"]["regularization"]]
    assert "dropout" in names


def test_json_follows_the_documented_schema(memorize_verdict: dict[str, Any]) -> None:
    verdict = memorize_verdict["verdict"]
    text = json.dumps(verdict, allow_nan=False)  # strict JSON: no NaN or infinity
    again = json.loads(text)
    docs = (ROOT / "docs" / "verdict.md").read_text(encoding="utf-8")
    assert again["schema"] == "capsearch.verdict/1"
    for key in again:
        assert f"`{key}`" in docs, f"top-level key {key!r} is not documented in docs/verdict.md"
    for section, keys in {
        "regimes": ["label", "trial", "regime", "why"],
        "repeats": ["label", "trial", "seeds", "values", "mean", "std", "n", "single_run"],
        "regularization": ["regularizer", "with", "without", "effect", "noise", "decision"],
    }.items():
        for item in again[section]:
            assert set(keys) <= set(item), (section, item)
    assert {r["regime"] for r in again["regimes"]} <= {"underfits", "overfits", "unstable", "fits"}
    assert [p["fraction"] for p in again["data_size"]["points"]] == [0.5, 1.0]
    assert isinstance(again["sentences"], list) and all(
        isinstance(s, str) for s in again["sentences"]
    )


def test_a_stopped_verdict_resumes_without_repeating_a_job(
    memorize_verdict: dict[str, Any],
) -> None:
    url, path = memorize_verdict["url"], memorize_verdict["path"]
    before = len(trials_of(url, companion_name("tiny_verdict")))
    result = capsearch("verdict", str(path), "--storage", url, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["complete"]
    assert len(trials_of(url, companion_name("tiny_verdict"))) == before  # nothing re-trained


def test_a_partly_run_verdict_finishes_the_rest(tmp_path: Path) -> None:
    from search.data import data_context, load_dataset
    from search.engine.trial_loop import run_trials
    from search.spec.studyfile import VerdictSpec
    from search.training.prepared import PreparedData
    from search.verdict import give_verdict
    from search.verdict.jobs import enqueue_missing, plan_jobs
    from search.verdict.objective import JobObjective

    text = MEMORIZE.replace("trials = 4", "trials = 2").replace("seeds = 3", "seeds = 2")
    path, url = searched(tmp_path, "partial", text)
    spec = load_study(path)
    study = optuna.load_study(study_name="partial", storage=url)
    companion = optuna.create_study(study_name=companion_name("partial"), storage=url)
    plan = plan_jobs(study, spec, spec.verdict or VerdictSpec())
    enqueue_missing(companion, plan.jobs, optuna.storages.RDBStorage(url))
    dataset = load_dataset(spec.data.source, spec.data.options, data_context(tmp_path))
    run_trials(companion, JobObjective(spec, PreparedData(dataset)), target=2, echo=lambda _: None)
    assert len(companion.get_trials(states=(TrialState.COMPLETE,))) == 2  # "stopped" after two
    verdict = give_verdict(spec, SearchOptions(storage=url), echo=lambda _: None)
    jobs = trials_of(url, companion_name("partial"))
    assert verdict["complete"] and len(jobs) == len(plan.jobs)
    assert len({t.user_attrs["verdict_job"] for t in jobs}) == len(jobs)


def test_a_seed_fluke_is_reported_within_noise(tmp_path: Path, shared_data: Path) -> None:
    path, url = searched(tmp_path, "fluke", FLUKE)
    result = capsearch("verdict", str(path), "--storage", url, "--json")
    assert result.returncode == 0, result.stderr
    # In one process too, TensorFlow's start-up lines and its retracing warning stay hidden.
    assert "absl::InitializeLog" not in result.stderr, result.stderr
    assert "triggered tf.function retracing" not in result.stderr, result.stderr
    verdict = json.loads(result.stdout)
    values = [t.values[0] for t in trials_of(url, "fluke")]
    assert len(set(values)) > 1  # the seeds did make the single runs differ
    winner = verdict["winner"]
    assert winner["beats_baseline"] is False
    assert winner["versus_baseline"]["decision"] == "within noise"
    assert winner["same_configuration"] and winner["ranking_within_noise"]
    assert any("within noise" in s for s in verdict["sentences"])
    assert set(verdict["test"]) == {"train", "train+validation"}
    assert verdict["test"]["train+validation"]["n_train"] > verdict["test"]["train"]["n_train"]
    # One model, one test score: the search scored the best trained on train; the verdict says
    # that same figure (before, it trained it again through another path: 0.5236 against 0.5214).
    by_search = optuna.load_study(study_name="fluke", storage=url).user_attrs["test_evaluation"]
    best = min(trials_of(url, "fluke"), key=lambda t: (t.values[0], t.number))
    assert by_search["trial"] == best.number and by_search["refit"] == "train"
    assert verdict["test"]["train"]["loss"] == by_search["test_loss"]
    assert verdict["test"]["train"]["accuracy"] == by_search["test_accuracy"]
    assert "trained on train: the search's" in result.stderr, result.stderr[-2000:]
    text = capsearch("verdict", str(path), "--storage", url, "--no-train")
    assert text.returncode == 0, text.stderr
    assert "within noise" in text.stdout and "mean ± std" in text.stdout
    stored = optuna.load_study(study_name=companion_name("fluke"), storage=url).user_attrs
    assert stored["verdict"]["wall_seconds"] == verdict["wall_seconds"]  # the training run's


def test_no_finished_trial_is_one_line_exit_2(tmp_path: Path) -> None:
    path = write_study(tmp_path, "empty", MEMORIZE)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    optuna.create_study(study_name="empty", storage=url)
    result = capsearch("verdict", str(path), "--storage", url)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no finished trial" in result.stderr


def test_multi_objective_is_one_line_exit_2(tmp_path: Path) -> None:
    path = write_study(tmp_path, "pareto", MEMORIZE)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name="pareto", storage=url, directions=["minimize"] * 2)
    study.add_trial(optuna.trial.create_trial(values=[1.0, 10.0]))
    result = capsearch("verdict", str(path), "--storage", url)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "multi-objective" in result.stderr


def test_data_that_cannot_load_says_where_it_looked(tmp_path: Path) -> None:
    path = write_study(tmp_path, "nodata", FLUKE)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name="nodata", storage=url)
    study.add_trial(optuna.trial.create_trial(value=0.5))
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {"CAPSEARCH_DATA": str(empty), "CAPSEARCH_CACHE": str(tmp_path / "cache")}
    result = capsearch("verdict", str(path), "--storage", url, "--offline", env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "looked in" in result.stderr and str(empty) in result.stderr


def test_the_report_opens_with_the_verdict(
    memorize_verdict: dict[str, Any], tmp_path: Path
) -> None:
    from search.views.report import write_report

    result = write_report("tiny_verdict", memorize_verdict["url"], tmp_path / "report")
    page = result.html.read_text(encoding="utf-8")
    assert page.index('id="verdict"') < page.index("<nav>")  # at the top, before the figures
    assert html.escape(memorize_verdict["verdict"]["sentences"][0]) in page
    assert {"verdict_repeats", "verdict_data_size"} <= set(result.keys)
    assert all(p.is_file() for p in result.pngs)


def test_run_ends_with_the_verdict_when_the_file_asks(tmp_path: Path) -> None:
    text = MEMORIZE.replace("trials = 4", "trials = 2").replace("seeds = 3", "seeds = 2")
    text = text.replace("top_k = 2", "top_k = 1").replace(
        "fractions = [0.5, 1.0]", "fractions = [1.0]"
    )
    path = write_study(tmp_path, "hooked", text)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    skipped = capsearch("run", str(path), "--storage", url, "--trials", "1", "--no-verdict")
    assert skipped.returncode == 0, skipped.stderr
    assert "verdict of hooked" not in skipped.stdout
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["hooked"]
    result = capsearch("run", str(path), "--storage", url)
    assert result.returncode == 0, result.stderr
    assert "verdict of hooked" in result.stdout and "mean ± std" in result.stdout
    companion = optuna.load_study(study_name=companion_name("hooked"), storage=url)
    assert companion.user_attrs["verdict"]["complete"]


def test_two_workers_run_every_job_to_the_end(tmp_path: Path) -> None:
    text = MEMORIZE.replace("trials = 4", "trials = 2").replace("seeds = 3", "seeds = 2")
    text = text.replace("top_k = 2", "top_k = 1")
    path, url = searched(tmp_path, "two", text)
    result = capsearch("verdict", str(path), "--storage", url, "-n", "2", "--json")
    assert result.returncode == 0, result.stderr
    verdict = json.loads(result.stdout)
    jobs = trials_of(url, companion_name("two"))
    assert verdict["complete"] and verdict["workers"] == 2
    assert [t.state for t in jobs] == [TrialState.COMPLETE] * len(jobs)  # never pruned
    assert {t.user_attrs.get("worker") for t in jobs} <= {"w0", "w1"}
    # The worker processes hold TensorFlow's start-up lines back, as the search's workers do.
    shown = result.stdout + result.stderr
    assert "absl::InitializeLog" not in shown and "cuInit" not in shown, shown


# The study file's first baseline is the reference; one that cannot learn in 3 epochs (a
# learning rate of 1e-5) must come out worse than it beyond the seed noise.
BASELINES = """
description = "three baselines, each re-trained with the seeds"
objective = "generalize"
trials = 4

[data]
source = "pima"
validation_fraction = 0.2
seed = 0

[training]
epochs = 3
seed = 0

[space]
layers = 1
units = { low = 4, high = 16 }
l2 = 0.0
dropout = 0.0
batch_size = 64
learning_rate = { low = 1e-5, high = 1e-2, log = true }

[pruner]
name = "none"

[[baselines]]
name = "reference"
units = 8
learning_rate = 0.01

[[baselines]]
name = "wider"
units = 16
learning_rate = 0.01

[[baselines]]
name = "frozen"
units = 8
learning_rate = 1e-5

[verdict]
seeds = 3
top_k = 1
fractions = [1.0]
"""


def test_every_baseline_is_re_trained_and_compared_with_the_first(
    tmp_path: Path, shared_data: Path
) -> None:
    from search.spec.studyfile import VerdictSpec
    from search.verdict import give_verdict
    from search.verdict.jobs import plan_jobs
    from search.verdict.rules import compare

    path, url = searched(tmp_path, "baselines", BASELINES)
    spec = load_study(path)
    verdict = give_verdict(spec, SearchOptions(storage=url), echo=lambda _: None)
    assert verdict["complete"]
    study = trials_of(url, "baselines")
    names = {t.number: t.user_attrs["baseline"] for t in study if "baseline" in t.user_attrs}
    assert sorted(names.values()) == ["frozen", "reference", "wider"]
    jobs = trials_of(url, companion_name("baselines"))
    for number in names:  # each baseline's configuration, once per seed, at all rows
        repeated = [
            t
            for t in jobs
            if t.user_attrs["source_trial"] == number
            and t.user_attrs["fraction"] == 1.0
            and {"baseline", "best"} & set(t.user_attrs["roles"])
        ]
        assert len({t.user_attrs["seed"] for t in repeated}) == 3, names[number]

    def stored(number: int) -> dict[str, Any]:
        values = [
            t.values[0]
            for t in jobs
            if t.user_attrs["source_trial"] == number and t.user_attrs["fraction"] == 1.0
        ]
        mean = statistics.fmean(values)
        return {"mean": mean, "std": statistics.stdev(values), "n": len(values)}

    reference = min(names)  # the study file's first baseline: the first enqueued trial
    section = verdict["baselines"]
    assert section["reference_name"] == "baseline reference"
    by_name = {c["name"]: c for c in section["comparisons"]}
    assert set(by_name) == {"baseline wider", "baseline frozen"}
    for number, name in names.items():
        if number == reference:
            continue
        expected = compare(stored(reference), stored(number))
        row = by_name[f"baseline {name}"]
        assert row["difference"] == pytest.approx(expected["difference"])
        assert row["noise"] == pytest.approx(expected["noise"])
    assert by_name["baseline frozen"]["decision"] == "worse"
    best_trial = verdict["regimes"][0]["trial"]
    versus = section["best_versus_reference"]
    if best_trial in names:  # the best is a baseline: its comparison is that baseline's row
        assert versus is None
    else:
        expected = compare(stored(reference), stored(best_trial))
        assert versus["difference"] == pytest.approx(expected["difference"])
    assert any(s.startswith("Against the baseline reference") for s in verdict["sentences"])
    # Every baseline's regime reads its repeats: each one has a regime row.
    best = verdict["regimes"][0]
    assert [r["trial"] for r in verdict["regimes"][1:]] == sorted(set(names) - {best["trial"]})
    if best["trial"] in names:  # a best that is a baseline has one row, named both ways
        assert best["label"] == f"best, baseline {names[best['trial']]}"

    # baselines = "best": only the best baseline is re-trained with the seeds.
    optuna_study = optuna.load_study(study_name="baselines", storage=url)
    plan = plan_jobs(optuna_study, spec, VerdictSpec(seeds=3, top_k=1, baselines="best"))
    assert len(plan.baselines) == 1 and plan.baselines[0] is plan.baseline
    assert "frozen" not in plan.baseline.label


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('baselines = "some"', 'write "all"'),
        ("seeds = 1", "must be >= 2"),
        ("fractions = [0, 1]", "fractions in (0, 1]"),
    ],
)
def test_a_bad_verdict_table_is_one_line(tmp_path: Path, line: str, message: str) -> None:
    text = BASELINES.replace("[verdict]\n", f"[verdict]\n{line}\n").replace("seeds = 3\n", "")
    if line.startswith("fractions"):
        text = text.replace("fractions = [1.0]\n", "")
    path = write_study(tmp_path, "bad_verdict", text)
    result = capsearch("validate", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr, result.stderr


def test_a_baseline_that_differs_only_by_its_epoch_cap_runs_and_keeps_it(tmp_path: Path) -> None:
    from search.verdict import give_verdict

    text = MEMORIZE.replace("trials = 4", "trials = 3").replace(
        "[verdict]",
        '[[baselines]]\nname = "small_2_epochs"\nlayers = 1\nunits = 8\nl2 = 0.0\n'
        "dropout = 0.1\nlearning_rate = 0.005\nepochs = 2\n\n[verdict]",
    )
    path, url = searched(tmp_path, "capped", text)
    study = {t.user_attrs.get("baseline"): t for t in trials_of(url, "capped")}
    assert {"small", "small_2_epochs"} <= set(study)  # the same parameters, both enqueued
    assert study["small"].params == study["small_2_epochs"].params
    assert study["small"].user_attrs["epochs_run"] == 4
    assert study["small_2_epochs"].user_attrs["epochs_run"] == 2
    verdict = give_verdict(load_study(path), SearchOptions(storage=url), echo=lambda _: None)
    assert verdict["complete"]
    jobs = trials_of(url, companion_name("capped"))
    for name, epochs in (("small", 4), ("small_2_epochs", 2)):
        repeats = [
            t
            for t in jobs
            if t.user_attrs["source_trial"] == study[name].number and t.user_attrs["fraction"] == 1
        ]
        assert len(repeats) == 3, name  # each re-trained with the seeds, under its own cap
        assert {t.user_attrs["epochs_run"] for t in repeats} == {epochs}, name
