"""P4's verdicts: per seed, and on the medians over seeds (no training: recorded trials)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.bench_search import _seeds, analyse, render, summarize, write_results


def _run(*points: tuple[float, float | None]) -> dict:
    return {
        "points": [{"t": t, "loss": loss, "complete": True, "epochs": 1} for t, loss in points],
        "seconds": 600.0,
        "trials": len(points),
        "pruned": 0,
        "epochs": len(points),
    }


def _runs(ours: dict, kt: dict) -> dict:
    return {"capsearch": ours, "optuna_nopruning": _run((5.0, 0.30)), "keras_tuner": kt}


def test_a_seed_meets_the_goal_reaching_keras_tuners_best_in_a_third_of_its_time_and_ending_lower():
    kt = _run((10.0, 0.29), (90.0, 0.27), (300.0, 0.28))  # final best 0.27, reached at 90 s
    verdict = analyse(_runs(_run((20.0, 0.275), (29.0, 0.269), (400.0, 0.265)), kt))
    assert verdict["target"] == 0.27 and verdict["kt_time"] == 90.0
    assert verdict["ratio"] == pytest.approx(29.0 / 90.0)
    assert verdict["margin"] == pytest.approx(0.265 - 0.27)
    assert verdict["goal_met"]


def test_a_seed_misses_the_goal_when_too_slow_or_never_reaching_it():
    kt = _run((90.0, 0.27))
    slow = analyse(_runs(_run((31.0, 0.269)), kt))  # 31 s > 90 s / 3
    assert not slow["goal_met"] and slow["margin"] < 0
    never = analyse(_runs(_run((5.0, 0.28), (10.0, None)), kt))
    assert math.isinf(never["ratio"]) and not never["goal_met"]


def test_the_goal_over_seeds_is_judged_on_the_medians():
    met = {"ratio": 0.1, "margin": -0.01, "goal_met": True}
    never = {"ratio": math.inf, "margin": 0.002, "goal_met": False}
    slow = {"ratio": 0.5, "margin": -0.003, "goal_met": False}
    two_of_three = summarize({0: met, 1: met, 2: never})
    assert two_of_three["goal_met"] and two_of_three["met_seeds"] == 2
    assert two_of_three["median_ratio"] == 0.1
    one_of_three = summarize({0: met, 1: slow, 2: never})
    assert not one_of_three["goal_met"] and one_of_three["median_ratio"] == 0.5


def test_each_service_run_is_judged_on_its_own_and_reported_under_its_worker_count():
    kt = _run((90.0, 0.27))
    runs = _runs(_run((60.0, 0.269)), kt)
    runs["capsearch_workers"] = _run((20.0, 0.268)) | {"workers": 2}
    verdicts = {
        "capsearch": {0: analyse(runs)},
        "capsearch_workers": {0: analyse(runs, "capsearch_workers")},
    }
    assert not verdicts["capsearch"][0]["goal_met"]  # 60 s > 90 s / 3
    assert verdicts["capsearch_workers"][0]["goal_met"]
    assert verdicts["capsearch_workers"][0]["ratio"] == pytest.approx(20.0 / 90.0)
    summaries = {key: summarize(by_seed) for key, by_seed in verdicts.items()}
    text = render(
        {0: runs}, verdicts, summaries, budget=600, epochs=20, quick=False, png="p.png", seconds=1
    )
    assert "| 0 | this service, 2 workers: TPE + Hyperband pruning | 1 (0 pruned) |" in text
    goals = [line for line in text.splitlines() if line.startswith("Goal: ")]
    assert len(goals) == 2
    assert goals[0].endswith("**not met** (met in 0 of 1 seeds on its own).")
    assert "this service, 2 workers" in goals[1] and "**met** (met in 1 of 1" in goals[1]


def test_results_are_written_after_each_seed_keeping_the_rest_of_the_file(tmp_path: Path):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n## P1 tiny data\n\nkept\n", encoding="utf-8")
    png = tmp_path / "p4_search.png"
    runs = {0: _runs(_run((20.0, 0.269)), _run((90.0, 0.27)))}
    options = dict(budget=600, epochs=20, quick=False, seconds=1.0, out=out, png=png)
    write_results(runs, ["capsearch"], pending=[1, 2], **options)
    text = out.read_text(encoding="utf-8")
    assert "kept" in text and "Partial: seeds 1, 2 not run yet" in text
    raw = json.loads(png.with_suffix(".json").read_text(encoding="utf-8"))
    assert raw["pending_seeds"] == [1, 2] and list(raw["seeds"]) == ["0"]
    assert raw["seeds"]["0"]["verdicts"]["capsearch"]["goal_met"]
    assert png.stat().st_size > 0
    write_results(runs, ["capsearch"], pending=[], **options)  # the last seed done
    text = out.read_text(encoding="utf-8")
    assert "Partial" not in text and text.count("## P4 search efficiency") == 1


def test_seeds_are_distinct_integers():
    assert _seeds("0,1,2") == [0, 1, 2]
    for bad in ("0,x", "1,1", ""):
        with pytest.raises(Exception, match="e.g. 0,1,2"):
            _seeds(bad)
