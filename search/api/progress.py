"""What a search from Python shows as it runs: ``verbose`` 0, 1 or 2, as in Keras.

* ``0``: nothing;
* ``1``: in a Jupyter notebook, one tqdm progress bar (trials finished of the budget, elapsed
  time, best loss so far) instead of scrolling lines; in a terminal, the per-trial lines the CLI
  prints;
* ``2``: every line the CLI prints, also in a notebook.

Lines that report a failure are shown at ``verbose=1`` in a notebook too.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import optuna
from optuna.trial import FrozenTrial

__all__ = ["Progress", "in_notebook"]


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython's ZMQ shell).

    Example:
        >>> in_notebook()
        False
    """
    shell = sys.modules.get("IPython")
    get = getattr(shell, "get_ipython", None)
    return get is not None and type(get()).__name__ == "ZMQInteractiveShell"


class Progress:
    """The echo and the per-trial callback of one search, by ``verbose``.

    Args:
        verbose: 0, 1 or 2.
        total: Finished trials the search should reach in this call.
        bar: Draw a tqdm bar (default: in a notebook at ``verbose=1``).
    """

    def __init__(self, verbose: int, total: int, *, bar: bool | None = None) -> None:
        self.verbose = verbose
        self.bar_on = verbose == 1 and (in_notebook() if bar is None else bar)
        self.total = total
        self._bar: Any = None
        self.best = math.inf

    def echo(self, line: str) -> None:
        """A line of the run: printed, dropped, or (failures) written above the bar."""
        if self.verbose == 0:
            return
        if self.bar_on:
            if "FAIL" in line or "failed" in line.split(":")[0]:
                self._start().write(line)
            return
        print(line)

    def _start(self) -> Any:
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, unit="trial", desc="search")
        return self._bar

    def callback(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """After each trial: advance the bar and show the best loss so far."""
        if not self.bar_on:
            return
        bar = self._start()
        if trial.values and math.isfinite(trial.values[0]):
            self.best = min(self.best, float(trial.values[0]))
        if trial.state.is_finished() and trial.state.name != "FAIL":
            bar.update(1)
        if math.isfinite(self.best):
            bar.set_postfix(best=f"{self.best:.4g}")

    def close(self) -> None:
        """End the bar (if one was drawn)."""
        if self._bar is not None:
            self._bar.close()
