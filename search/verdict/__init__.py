"""The verdict: regimes, capacity, ablations and seed noise, answered in words with numbers.

Example:
    >>> from search.verdict import REGULARIZERS
    >>> [r.param for r in REGULARIZERS][:2]
    ['l2', 'dropout']
"""

from search.verdict.compute import SCHEMA, compute_verdict
from search.verdict.regularizers import REGULARIZERS, Regularizer, used_regularizers
from search.verdict.run import give_verdict, run_verdict_worker

__all__ = [
    "REGULARIZERS",
    "SCHEMA",
    "Regularizer",
    "compute_verdict",
    "give_verdict",
    "run_verdict_worker",
    "used_regularizers",
]
