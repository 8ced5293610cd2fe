"""``capsearch report``: one self-contained HTML page with every figure, and a PNG of each."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from search.cli import main
from search.errors import StorageError
from search.views.report import REPORT_FILE, write_report
from tests.tiny_studies import TinyRun, tiny_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Every report: (section id, title); learning curves and the memorize/Pareto figures vary.
COMMON = {
    "history": "Optimization history",
    "importances": "Parameter importances",
    "parallel": "Parallel coordinates",
    "capacity": "Capacity: parameter count against training and validation loss",
    "gap": "L2 and dropout against the generalization gap",
}


def _check_report(html: str, folder: Path, sections: dict[str, str]) -> None:
    # The best trial against each baseline (only the best trial's curves if it is the baseline).
    curves = re.findall(r'<section id="(curves[a-z0-9_]*)">', html)
    assert curves, "no learning curves"
    sections = sections | dict.fromkeys(curves, "Learning curves: best trial")
    for key, title in sections.items():
        assert f'<section id="{key}">' in html, key
        assert f"<h2>{title}" in html, title
        assert f'id="plot-{key}"' in html, key
        assert (folder / f"{key}.png").read_bytes().startswith(PNG_MAGIC), key
    # plotly.js inlined exactly once, nothing fetched from the network.
    assert len(re.findall(r"plotly\.js v\d", html)) == 1
    assert not re.search(r"<script[^>]+src=", html)


def test_unknown_study_names_the_stored_ones(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    optuna.create_study(study_name="stored_one", storage=url)
    with pytest.raises(StorageError, match="stored studies: stored_one"):
        write_report("missing", url, tmp_path / "out")
    assert main(["report", "missing", "--storage", url]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("capsearch: error: no study 'missing'") and "\n" not in err


def test_too_few_trials_still_make_every_figure(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    optuna.create_study(study_name="empty", storage=url)
    result = write_report("empty", url, tmp_path / "out", png="matplotlib")
    html = result.html.read_text(encoding="utf-8")
    assert "importances need 2 or more" in html
    assert set(COMMON) <= set(result.keys)
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in result.pngs)


@pytest.fixture(scope="module")
def memorize(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    return tiny_run("tiny_memorize", tmp_path_factory)


@pytest.fixture(scope="module")
def sine(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    return tiny_run("tiny_sine", tmp_path_factory)


@pytest.mark.slow
def test_memorize_report_has_every_figure(memorize: TinyRun, tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert (
        main(["report", memorize.name, "--storage", memorize.storage_url, "--out", str(out)]) == 0
    )
    html = (out / REPORT_FILE).read_text(encoding="utf-8")
    sections = COMMON | {"memorize": "Memorization: training loss reached against capacity"}
    _check_report(html, out, sections)
    assert "baseline small" in html  # the summary table and the labelled capacity plot
    assert len(list(out.glob("*.png"))) == len(re.findall("<section id=", html))


@pytest.mark.slow
def test_generalize_report_with_matplotlib_pngs(sine: TinyRun, tmp_path: Path) -> None:
    result = write_report(sine.name, sine.storage_url, tmp_path / "report", png="matplotlib")
    assert result.renderer == "matplotlib"
    html = result.html.read_text(encoding="utf-8")
    _check_report(html, result.folder, COMMON)
    assert "memorize" not in result.keys and "pareto" not in result.keys
    assert "a noisy sine with 200 points" in html  # the study's description
