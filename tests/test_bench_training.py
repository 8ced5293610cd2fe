"""How P3 cuts a real search's *other* time by call: the timing patches and their report."""

from __future__ import annotations

import time
import types

import pytest

from benchmarks.bench_training import _calls_timed, _other_costs, _other_costs_line


class _Base:
    def inherited(self) -> str:
        return "base"


class _Worker(_Base):
    def work(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds


def test_calls_are_timed_by_group_and_put_back_after_the_block():
    module = types.ModuleType("timed_module")
    module.nap = lambda seconds: time.sleep(seconds)  # type: ignore[attr-defined]
    original_nap, original_work = module.nap, _Worker.__dict__["work"]
    groups = {"naps": [(module, "nap")], "work": [(_Worker, "work")]}
    with _calls_timed(groups) as seconds:
        module.nap(0.05)
        module.nap(0.05)
        assert _Worker().work(0.02) == 0.02  # results and arguments pass through
    assert seconds["naps"] == pytest.approx(0.10, abs=0.05)
    assert seconds["work"] == pytest.approx(0.02, abs=0.03)
    assert module.nap is original_nap and _Worker.__dict__["work"] is original_work


def test_an_inherited_method_is_refused_and_nothing_stays_patched():
    module = types.ModuleType("timed_module")
    module.nap = lambda seconds: None  # type: ignore[attr-defined]
    original = module.nap
    with (
        pytest.raises(ValueError, match="inherited"),
        _calls_timed({"a": [(module, "nap")], "b": [(_Worker, "inherited")]}),
    ):
        pass
    assert module.nap is original and "inherited" not in vars(_Worker)


def test_every_timed_place_exists_where_a_search_calls_it():
    for group in _other_costs().values():
        for owner, name in group:
            # Defined there itself (a class's inherited method would be refused).
            assert callable(vars(owner).get(name)), f"{owner.__name__}.{name}"


def test_the_report_line_lists_costs_per_trial_largest_first_and_the_rest():
    search = {
        "trials": 10,
        "totals": {"other": 3.0},
        "other_costs": {"plot drawing": 1.5, "TPE sampling": 0.5},
    }
    line = _other_costs_line(search)
    assert line.index("plot drawing 150") < line.index("TPE sampling 50")
    assert "the rest 100" in line
