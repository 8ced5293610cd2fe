"""Per-trial plot artifacts and the study note, as stored and as optuna-dashboard serves them.

The slow tests share one tiny real memorize study (``tests.tiny_studies``) and one dashboard
server on it; the browser test loads the dashboard in headless Chromium when one is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState

from search.views.trial_plots import (
    ARTIFACTS_ENV,
    PLOT_ATTR,
    TrialPlots,
    artifact_dir,
    draw_trial_figure,
    spans_decades,
)
from tests.tiny_studies import TinyRun, tiny_run

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


# --- fast: no training ------------------------------------------------------------------------


def test_artifacts_live_beside_the_sqlite_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ARTIFACTS_ENV, raising=False)
    assert artifact_dir("sqlite:////data/runs/studies.db") == Path("/data/runs/artifacts")
    assert artifact_dir("sqlite:///storage/studies.db") == Path("storage/artifacts")
    assert artifact_dir("postgresql://u:p@db/capsearch") == Path("storage/artifacts")
    monkeypatch.setenv(ARTIFACTS_ENV, "/srv/plots")
    assert artifact_dir("postgresql://u:p@db/capsearch") == Path("/srv/plots")
    assert artifact_dir("sqlite:////data/runs/studies.db") == Path("/srv/plots")


def test_log_axis_only_when_losses_span_two_decades() -> None:
    assert spans_decades([1.0, 0.001])
    assert not spans_decades([1.0, 0.02])
    assert not spans_decades([1.0, 0.0, None])  # a zero loss cannot go on a log axis


def test_trial_figure_has_the_fit_panel_for_one_input_regression(tmp_path: Path) -> None:
    attrs = {
        "train_curve": [1.0, 0.1, 0.001],
        "val_curve": [1.2, 0.3, 0.2],
        "best_epoch": 3,
        "predictions": {
            "x_train": [0.0, 1.0],
            "y_train": [0.0, 1.0],
            "pred_train": [0.1, 0.9],
            "x_val": [0.5],
            "y_val": [0.4],
            "pred_val": [0.6],
        },
    }
    one = draw_trial_figure({"train_curve": [1.0, 0.5]}, "curves", tmp_path / "one.png")
    two = draw_trial_figure(attrs, "curves and fit", tmp_path / "two.png")
    assert one.read_bytes().startswith(PNG_MAGIC) and two.read_bytes().startswith(PNG_MAGIC)
    from matplotlib.image import imread

    assert imread(two).shape[1] > 1.8 * imread(one).shape[1]  # a second panel


def test_a_failing_plot_never_fails_the_trial(tmp_path: Path) -> None:
    store = FileSystemArtifactStore(str(tmp_path))
    study = optuna.create_study()
    lines: list[str] = []

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("train_curve", [])  # nothing to draw: the plot raises
        return 1.0

    study.optimize(TrialPlots(objective, store, echo=lines.append), n_trials=1)
    assert study.trials[0].state == TrialState.COMPLETE
    assert PLOT_ATTR not in study.trials[0].user_attrs
    assert len(lines) == 1 and lines[0].startswith("warning: trial 0: plot artifact not stored")


def test_pruned_trials_get_their_plot_too(tmp_path: Path) -> None:
    store = FileSystemArtifactStore(str(tmp_path))
    study = optuna.create_study()

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("train_curve", [1.0, 2.0])
        raise optuna.TrialPruned("worse")

    study.optimize(TrialPlots(objective, store), n_trials=1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED
    assert (tmp_path / trial.user_attrs[PLOT_ATTR]).read_bytes().startswith(PNG_MAGIC)


# --- slow: a tiny real study, the dashboard on it ------------------------------------------------


@pytest.fixture(scope="module")
def memorize(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    return tiny_run("tiny_memorize", tmp_path_factory)


@pytest.mark.slow
def test_every_finished_trial_has_its_plot_artifact(memorize: TinyRun) -> None:
    study = optuna.load_study(study_name=memorize.name, storage=memorize.storage_url)
    finished = study.get_trials(states=FINISHED)
    assert len(finished) == 3
    for trial in finished:
        artifact_id = trial.user_attrs[PLOT_ATTR]
        meta = json.loads(trial.system_attrs[f"artifacts:{artifact_id}"])
        assert meta["mimetype"] == "image/png"
        assert (memorize.artifacts / artifact_id).read_bytes().startswith(PNG_MAGIC)
        assert trial.user_attrs["param_count"] > 0  # pruned ones too: the capacity plot
    assert not any(line.startswith("warning:") for line in memorize.lines)


@pytest.mark.slow
def test_study_note_describes_the_study_and_its_results(memorize: TinyRun) -> None:
    from search.views.notes import RESULTS_HEADING, read_study_note

    study = optuna.load_study(study_name=memorize.name, storage=memorize.storage_url)
    note = read_study_note(study)
    assert note.startswith(f"# {memorize.name}\n")
    assert "tiny memorize study for tests" in note  # the description
    assert "**Data** — `overfit30`" in note and "**Space**" in note and "| small |" in note
    assert "step 0 is epoch 1" in note and "`best_step`" in note
    assert "choices of dropout, batch_size by value" in note
    assert RESULTS_HEADING in note and "baseline small" in note  # updated after the run


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read()
        return json.loads(body) if "json" in response.headers.get("Content-Type", "") else body


def _serve_dashboard(storage_url: str) -> Iterator[str]:
    """``python -m search dashboard`` on the storage; yields its base URL."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "search", "dashboard", "--storage", storage_url]
        + ["--port", str(port)],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                _get(f"{base}/api/meta")
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("dashboard did not answer")
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def dashboard(memorize: TinyRun) -> Iterator[str]:
    """The dashboard on the tiny study; yields its base URL."""
    yield from _serve_dashboard(memorize.storage_url)


@pytest.mark.slow
def test_dashboard_serves_trials_curves_note_and_plots(memorize: TinyRun, dashboard: str) -> None:
    summaries = _get(f"{dashboard}/api/studies")["study_summaries"]
    assert [s["study_name"] for s in summaries] == [memorize.name]
    study_id = summaries[0]["study_id"]
    detail = _get(f"{dashboard}/api/studies/{study_id}")
    assert detail["has_intermediate_values"]
    assert detail["note"]["body"].startswith(f"# {memorize.name}")
    assert len(detail["trials"]) == 3
    for trial in detail["trials"]:
        assert trial["intermediate_values"], "the learning curve reached the dashboard"
        (artifact,) = trial["artifacts"]
        assert artifact["filename"].endswith(".png")
        url = f"{dashboard}/artifacts/{study_id}/{trial['trial_id']}/{artifact['artifact_id']}"
        assert _get(url).startswith(PNG_MAGIC)


def _chromium() -> str:
    found = next(
        (
            shutil.which(n)
            for n in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(n)
        ),
        None,
    )
    if found is None:
        pytest.skip("no chromium on PATH (apt-get install chromium); browser test skipped")
    return found


def _headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
    ]
    return subprocess.run(
        [browser, *flags, *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.slow
def test_dashboard_renders_the_study_in_chromium(
    memorize: TinyRun, dashboard: str, tmp_path: Path
) -> None:
    browser = _chromium()
    study_id = _get(f"{dashboard}/api/studies")["study_summaries"][0]["study_id"]
    page = f"{dashboard}/dashboard/studies/{study_id}"
    dom = _headless(browser, tmp_path / "profile", "--dump-dom", page)
    assert memorize.name in dom.stdout, dom.stderr[-2000:]
    shot = tmp_path / "dashboard.png"
    _headless(browser, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,900", page)
    assert shot.read_bytes().startswith(PNG_MAGIC)
    print(f"dashboard screenshot: {shot}")


def _ticks_by_axis(dom: str) -> list[tuple[str, list[str]]]:
    """(axis title, its tick labels) of every plot on a dumped page."""
    axes = []
    for plot in dom.split('class="plot-container')[1:]:
        for axis in "xy":
            marks = re.findall(rf'class="{axis}(tick|title)"[^>]*>(?:<[^>]*>)*([^<]*)', plot)
            titles = [text for kind, text in marks if kind == "title"]
            if titles:
                axes.append((titles[0], [text for kind, text in marks if kind == "tick"]))
    return axes


@pytest.fixture(scope="module")
def numeric_choices(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The dashboard on a study whose batch_size choices sort differently as text: base URL."""
    storage = f"sqlite:///{tmp_path_factory.mktemp('choices') / 'studies.db'}"
    study = optuna.create_study(study_name="numeric_choices", storage=storage)
    for i, batch_size in enumerate([7, 21, 128, 1024] * 3):
        study.enqueue_trial({"batch_size": batch_size, "units": 8 + 20 * i})
    study.optimize(
        lambda t: (
            t.suggest_categorical("batch_size", [7, 21, 128, 1024]) / 1000
            + t.suggest_int("units", 8, 256) / 100
        ),
        n_trials=12,
    )
    yield from _serve_dashboard(storage)


@pytest.mark.slow
def test_the_dashboard_plots_numeric_choices_in_numeric_order(
    numeric_choices: str, tmp_path: Path
) -> None:
    # optuna-dashboard's own contour and rank plots put batch_size 1024 before 128 (text
    # order); capsearch's page turns on its "Use Plotly Python library": Optuna's own plots.
    browser = _chromium()
    study_id = _get(f"{numeric_choices}/api/studies")["study_summaries"][0]["study_id"]
    page = f"{numeric_choices}/dashboard/studies/{study_id}/analytics"
    dom = _headless(browser, tmp_path / "profile", "--dump-dom", page).stdout
    axes = [ticks for title, ticks in _ticks_by_axis(dom) if title == "batch_size"]
    assert len(axes) >= 3, _ticks_by_axis(dom)  # slice, contour, rank
    for ticks in axes:
        values = [float(t.replace("\u2212", "-").replace(",", "")) for t in ticks]
        assert len(values) >= 2 and values == sorted(values), ticks
    assert "Slice Plot" in dom and "Contour Plot" in dom, "Optuna's plots, drawn on the server"
