"""Tiny real studies shared by the artifact, report and multi-objective tests.

Each study runs once per test session (memoized here, so several test files share it) on its
own SQLite file in a session temporary folder, with its artifacts beside it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import TINY_MEMORIZE, write_study

TINY_SINE = """
description = "tiny generalize study: a noisy sine with 200 points"
objective = "generalize"
trials = 2

[data]
source = "noisy_sine"
n_points = 200
validation_fraction = 0.2
seed = 7

[training]
epochs = 4
seed = 0

[space]
layers = { low = 1, high = 2 }
units = { low = 4, high = 32, log = true }
l2 = { low = 1e-6, high = 1e-3, log = true, zero = true }
dropout = { choices = [0.0, 0.2] }
batch_size = { choices = [16, 32] }
learning_rate = { low = 3e-3, high = 3e-2, log = true }
optimizer = "adam"

[pruner]
name = "none"

[[baselines]]
name = "answer_2x50"
layers = 2
units = 32
l2 = 0.0
dropout = 0.0
batch_size = 16
learning_rate = 0.01
"""

TINY_PIMA = """
description = "tiny Pima study re-trained on training + validation rows for its test score"
objective = "generalize"
trials = 2

[data]
source = "pima"
validation_fraction = 0.2
test_fraction = 0.2
seed = 0

[training]
epochs = 3
seed = 0
refit = "train+validation"

[space]
layers = 1
units = { low = 4, high = 16, log = true }
l2 = 0.0
dropout = 0.0
batch_size = 64
learning_rate = 0.01

[pruner]
name = "none"
"""

# The same study scored by 3-fold cross-validation of its training rows, pruned on the folds.
TINY_PIMA_FOLDS = TINY_PIMA.replace(
    'refit = "train+validation"', 'folds = 3\nrefit = "train+validation"'
).replace('[pruner]\nname = "none"\n', '[pruner]\nname = "median"\nn_startup_trials = 1\n')

# The same study with model size as a second objective (and so no pruner).
TINY_PARETO = (
    TINY_SINE.replace("trials = 2", "trials = 3")
    .replace("epochs = 4", "epochs = 3")
    .replace('[pruner]\nname = "none"\n', "[multi_objective]\nparam_count = true\n")
)

STUDIES = {
    "tiny_memorize": (TINY_MEMORIZE.replace("trials = 4", "trials = 3")),
    "tiny_sine": TINY_SINE,
    "tiny_pareto": TINY_PARETO,
}


@dataclass
class TinyRun:
    """A finished tiny study: where it is stored and what the run printed."""

    name: str
    storage_url: str
    folder: Path
    lines: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def artifacts(self) -> Path:
        return self.folder / "artifacts"


_RUNS: dict[str, TinyRun] = {}


def tiny_run(name: str, factory: pytest.TempPathFactory) -> TinyRun:
    """Run (once per session) the tiny study ``name`` of :data:`STUDIES`."""
    if name in _RUNS:
        return _RUNS[name]
    from search.runs import SearchOptions, run_search
    from search.spec.studyfile import load_study
    from search.views.trial_plots import ARTIFACTS_ENV

    os.environ.pop(ARTIFACTS_ENV, None)  # artifacts beside the SQLite file
    folder = factory.mktemp(name)
    spec = load_study(write_study(folder, name, STUDIES[name]))
    run = TinyRun(name, f"sqlite:///{folder / 'studies.db'}", folder)
    start = time.perf_counter()
    run_search(spec, SearchOptions(storage=run.storage_url), echo=run.lines.append)
    run.seconds = time.perf_counter() - start
    _RUNS[name] = run
    return run
