"""The run lifecycle every command on a study goes through (see :mod:`search.runs.lifecycle`).

Example:
    >>> from search.runs import SearchOptions, run_search
    >>> from search.spec import load_study
"""

from search.runs.lifecycle import SearchRun, evaluate_best_on_test, run_search, run_workers
from search.runs.options import SearchOptions, WorkerOptions

__all__ = [
    "SearchOptions",
    "SearchRun",
    "WorkerOptions",
    "evaluate_best_on_test",
    "run_search",
    "run_workers",
]
