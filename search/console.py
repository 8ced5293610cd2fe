"""Where progress lines go: an ``Echo`` is any callable taking one line (``print`` by default)."""

from __future__ import annotations

from collections.abc import Callable

Echo = Callable[[str], None]


def echo_flushed(line: str) -> None:
    """Print one line at once (workers' lines reach the launcher as they happen)."""
    print(line, flush=True)
