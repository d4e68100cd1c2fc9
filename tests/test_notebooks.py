"""The notebooks run top to bottom (nbclient) on small data and show their figures."""
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def run_notebook(path: Path, folder: Path) -> list:
    """The outputs of ``path`` run in ``folder``, checked to hold no error and at least one figure."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors
    figures = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert figures, f"{path.name} showed no figure"
    return outputs


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_LOC_THREADS", "1")
    monkeypatch.setenv("XAI_LOC_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("XAI_LOC_RESULTS", str(tmp_path / "results"))
    # the kernel draws with Jupyter's inline backend, as in JupyterLab, whatever MPLBACKEND this run has
    # (the notebooks themselves force no backend: that would keep their figures from showing)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    run_notebook(path, tmp_path)
    if path.stem == "paper_figures":  # results without TDOA (a run that skipped it): the rest drawn, TDOA skipped
        partial = tmp_path / "partial"
        shutil.copytree(tmp_path / "results" / "reproduce", partial / "reproduce")
        for tdoa in partial.rglob("tdoa.nc"):
            tdoa.unlink()
        monkeypatch.setenv("XAI_LOC_RESULTS", str(partial))
        outputs = run_notebook(path, tmp_path)
        shown = " ".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
        assert "no TDOA results" in shown and "AOPC" in shown
