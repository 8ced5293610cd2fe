"""The example notebook, executed by a real Jupyter kernel (short run: 2 trials of 2 epochs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "notebooks" / "seed000_memorize.ipynb"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_example_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("NOTEBOOK_TRIALS", "2")
    monkeypatch.setenv("NOTEBOOK_EPOCHS", "2")
    monkeypatch.setenv("NOTEBOOK_FIGURE", str(tmp_path / "best.png"))
    monkeypatch.setenv("CAPSEARCH_STORAGE", f"sqlite:///{tmp_path / 'studies.db'}")
    monkeypatch.setenv(
        "PYTHONPATH", str(NOTEBOOK.parents[2]) + os.pathsep + os.environ.get("PYTHONPATH", "")
    )
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=500,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("<table>" in page and "seed000_notebook" in page for page in html)
    assert (tmp_path / "best.png").stat().st_size > 10_000
    texts = "".join(o.get("text", "") for o in outputs)
    assert "training MSE (plain Keras, raw x, 1-D y):" in texts
