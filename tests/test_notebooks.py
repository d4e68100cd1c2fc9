"""The notebooks run top to bottom (nbclient) on small data and show their figures."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_LOC_THREADS", "1")
    monkeypatch.setenv("XAI_LOC_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("XAI_LOC_RESULTS", str(tmp_path / "results"))
    # the kernel draws with Jupyter's inline backend, as in JupyterLab, whatever MPLBACKEND this run has
    # (the notebooks themselves force no backend: that would keep their figures from showing)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors
    figures = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert figures, f"{path.name} showed no figure"
