"""PNG files of the report's plotly figures: kaleido when a Chromium is at hand, else matplotlib.

Kaleido 1.x renders plotly figures in a headless Chromium (Debian's ``chromium`` works offline);
all figures go through one browser session. Without a browser, or when kaleido fails, a small
matplotlib renderer draws the same traces (scatter and bar, subplots, log axes, annotations): the
figures are simpler but the files are always there. ``CAPSEARCH_PNG=kaleido|matplotlib|auto``
forces a renderer (default ``auto``).
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from search import settings

PNG_ENV = settings.PNG.name
WIDTH, HEIGHT = 1100, 650
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

_logger = logging.getLogger(__name__)


def find_browser() -> str | None:
    """The Chromium kaleido can use: ``$BROWSER_PATH`` or one on ``PATH``."""
    env = os.environ.get("BROWSER_PATH")
    if env and Path(env).exists():
        return env
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def write_pngs(figures: Sequence[Any], paths: Sequence[Path], renderer: str | None = None) -> str:
    """Write each plotly figure to its PNG path; returns the renderer used.

    Args:
        figures: plotly figures.
        paths: one ``.png`` path per figure.
        renderer: ``kaleido``, ``matplotlib`` or ``auto`` (default: ``$CAPSEARCH_PNG``, else
            ``auto``: kaleido when a browser is found and it works, else matplotlib).

    Raises:
        ValueError: ``renderer`` is none of the three.
        SettingsError: ``CAPSEARCH_PNG`` is none of the three.
    """
    choice = (renderer or settings.png_renderer()).lower()
    if choice not in ("auto", "kaleido", "matplotlib"):
        raise ValueError(f"unknown PNG renderer {choice!r}; use auto, kaleido or matplotlib")
    if choice != "matplotlib":
        browser = find_browser()
        if (browser and kaleido_installed()) or choice == "kaleido":
            try:
                _kaleido(figures, paths, browser)
                return "kaleido"
            except Exception as exc:
                if choice == "kaleido":
                    raise
                _logger.warning("kaleido failed (%s); drawing the PNGs with matplotlib", exc)
    for figure, path in zip(figures, paths, strict=True):
        draw_with_matplotlib(figure, path)
    return "matplotlib"


def kaleido_installed() -> bool:
    """Whether kaleido (plotly's own PNG export, ``pip install 'kaleido>=1'``) is importable.

    Without it ``auto`` draws with matplotlib and says nothing: the fallback draws the same
    information (ticks, colour bars, labels, error bars).
    """
    import importlib.util

    return importlib.util.find_spec("kaleido") is not None


def _kaleido(figures: Sequence[Any], paths: Sequence[Path], browser: str | None) -> None:
    import plotly.io as pio

    if browser and not os.environ.get("BROWSER_PATH"):
        os.environ["BROWSER_PATH"] = browser  # where choreographer looks first
    pio.write_images(
        list(figures), [str(p) for p in paths], format="png", width=WIDTH, height=HEIGHT
    )
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise RuntimeError(f"kaleido wrote no file for {', '.join(missing)}")


def draw_with_matplotlib(figure: Any, path: Path) -> Path:
    """Draw a plotly figure's scatter and bar traces with matplotlib (the fallback renderer)."""
    from matplotlib.figure import Figure

    layout = figure.layout
    pairs: list[tuple[str, str]] = []
    for trace in figure.data:
        pair = (trace.xaxis or "x", trace.yaxis or "y")
        if pair not in pairs:
            pairs.append(pair)
    pairs = pairs or [("x", "y")]
    canvas = Figure(figsize=(WIDTH / 100, HEIGHT / 100), dpi=100, layout="constrained")
    axes = canvas.subplots(1, len(pairs), squeeze=False, sharey=len(pairs) > 1)[0]
    bars: list[Any] = []
    for ax, (xname, yname) in zip(axes, pairs, strict=True):
        for trace in figure.data:
            if (trace.xaxis or "x", trace.yaxis or "y") == (xname, yname):
                mappable = _draw_trace(ax, trace)
                if mappable is not None and _has_colorbar(trace) and not bars:
                    bars.append(mappable)  # one colour bar per figure, as plotly draws it
                    bar = canvas.colorbar(mappable, ax=list(axes))
                    bar.set_label(_colorbar_title(trace))
        _axis(ax, layout, xname, "x")
        _axis(ax, layout, yname, "y")
        _data_annotations(ax, layout, xname, yname)
        if any(t.name and t.showlegend is not False for t in figure.data):
            handles, labels = ax.get_legend_handles_labels()
            if handles:
                ax.legend(fontsize=8)
    for note in layout.annotations or ():
        if note.xref == "paper" and note.yref == "paper":
            axes[0].text(
                note.x, note.y, _plain(note.text), transform=axes[0].transAxes, ha="center"
            )
    title = layout.title.text if layout.title and layout.title.text else ""
    canvas.suptitle(_plain(title))
    canvas.savefig(path, format="png")
    return path


def _colormap(marker: Any) -> Any:
    """The marker's plotly colour scale as a matplotlib colormap (viridis when it has none)."""
    import matplotlib
    from matplotlib.colors import LinearSegmentedColormap

    scale = marker.colorscale
    if not scale or isinstance(scale, str):
        name = str(scale).lower() if scale else "viridis"
        cmap = matplotlib.colormaps.get(name, matplotlib.colormaps["viridis"])
    else:
        stops = [(float(at), _color(c) or c) for at, c in scale]
        cmap = LinearSegmentedColormap.from_list("plotly", stops)
    return cmap.reversed() if marker.reversescale else cmap


def _has_colorbar(trace: Any) -> bool:
    marker = getattr(trace, "marker", None)
    if marker is None or not isinstance(marker.color, (list, tuple)):
        return False
    return bool(marker.showscale) or bool(marker.colorbar and marker.colorbar.title.text)


def _colorbar_title(trace: Any) -> str:
    bar = trace.marker.colorbar
    return _plain(bar.title.text) if bar and bar.title and bar.title.text else ""


def _data_annotations(ax: Any, layout: Any, xname: str, yname: str) -> None:
    """Labels placed in data coordinates (the capacity plot's names), offset as in plotly."""
    log_x = _is_log(layout, "xaxis" + xname[1:])
    log_y = _is_log(layout, "yaxis" + yname[1:])
    for note in layout.annotations or ():
        if note.xref == "paper" or note.x is None or note.y is None:
            continue
        if (note.xref or "x") != xname or (note.yref or "y") != yname:
            continue
        x = 10**note.x if log_x else note.x  # plotly takes log10 positions on log axes
        y = 10**note.y if log_y else note.y
        offset = (note.ax or 0, -(note.ay or 0))  # plotly's ay points down
        color = _color(note.font.color) if note.font and note.font.color else "black"
        ax.annotate(
            _plain(note.text),
            (x, y),
            xytext=offset,
            textcoords="offset points",
            ha="center",
            fontsize=8,
            color=color,
            arrowprops={"arrowstyle": "-", "color": color, "lw": 0.6},
            bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8},
        )


def _is_log(layout: Any, key: str) -> bool:
    try:
        return bool(layout[key].type == "log")
    except KeyError:
        return False


def _draw_trace(ax: Any, trace: Any) -> Any:
    """Draw one trace; returns the scatter when its colours map a scale (for a colour bar)."""
    label = trace.name if trace.showlegend is not False else None
    if trace.type == "bar":
        if trace.orientation == "h":
            ax.barh([str(v) for v in trace.y], list(trace.x), label=label)
        else:
            ax.bar([str(v) for v in trace.x], list(trace.y), label=label)
        return None
    if trace.type not in ("scatter", "scattergl") or trace.x is None or trace.y is None:
        return None
    x, y = list(trace.x), [math.nan if v is None else v for v in trace.y]
    mode = trace.mode or "markers"
    errors = trace.error_y.array if trace.error_y is not None else None
    if errors is not None and len(errors) == len(y):
        ax.errorbar(x, y, yerr=list(errors), fmt="none", ecolor="#444", capsize=4, lw=1)
    line_color = _color(trace.line.color) if trace.line else None
    if "lines" in mode:
        style = "--" if trace.line and trace.line.dash in ("dash", "dot") else "-"
        alpha = trace.opacity if trace.opacity is not None else 1.0
        ax.plot(x, y, style, color=line_color, label=label, alpha=alpha)
        label = None
    if "markers" in mode:
        marker = trace.marker
        color = marker.color if marker and marker.color is not None else trace.line.color
        hollow = bool(marker and marker.symbol and str(marker.symbol).endswith("-open"))
        shape = "s" if marker and marker.symbol and "square" in str(marker.symbol) else "o"
        kwargs: dict[str, Any] = {"marker": shape, "s": 24, "label": label}
        if isinstance(color, (list, tuple)) and color and all(_number(c) for c in color):
            kwargs |= {"c": list(color), "cmap": _colormap(marker)}
            if marker.cmin is not None and marker.cmax is not None:
                kwargs |= {"vmin": float(marker.cmin), "vmax": float(marker.cmax)}
        elif color is not None:
            kwargs["color"] = _color(color)
        if hollow:
            edge = kwargs.pop("color", None) or "black"
            kwargs |= {"facecolors": "none", "edgecolors": edge}
        drawn = ax.scatter(x, y, **kwargs)
        return drawn if "c" in kwargs else None
    return None


def _axis(ax: Any, layout: Any, name: str, which: str) -> None:
    key = ("xaxis" if which == "x" else "yaxis") + name[1:]
    try:
        axis = layout[key]
    except KeyError:
        return
    setter = ax.set_xscale if which == "x" else ax.set_yscale
    if axis.type == "log":
        from matplotlib.ticker import NullFormatter

        setter("log")
        (ax.xaxis if which == "x" else ax.yaxis).set_minor_formatter(NullFormatter())
    if axis.title and axis.title.text:
        (ax.set_xlabel if which == "x" else ax.set_ylabel)(_plain(axis.title.text))
    if axis.tickvals is not None and axis.ticktext is not None:
        ticks = ax.set_xticks if which == "x" else ax.set_yticks
        labels = [_plain(str(t)) for t in axis.ticktext]
        ticks(list(axis.tickvals), labels, rotation=30 if which == "x" else 0, fontsize=8)
    if axis.visible is False:
        (ax.xaxis if which == "x" else ax.yaxis).set_visible(False)


def _color(value: Any) -> Any:
    if not isinstance(value, str):
        return None
    match = re.fullmatch(r"rgba?\(([^)]*)\)", value.replace(" ", ""))
    if match:
        parts = [float(p) for p in match.group(1).split(",")]
        rgb = tuple(min(max(p / 255, 0.0), 1.0) for p in parts[:3])
        return (*rgb, parts[3]) if len(parts) == 4 else rgb
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain(text: str) -> str:
    return re.sub(r"<[^>]+>", " ", text or "").strip()
