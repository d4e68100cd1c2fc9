"""Regressions of a review of the result tables, the benchmarks' checks and the report's window captions.

1. A bar in a model name (the checkpoint's stem, ``a|b.safetensors``) split its markdown row: every number of the
   row moved one column over, in ``tdoa.md`` and in the report, and the last ones were dropped.
2. ``bench_srp`` and ``bench_allocator`` printed a failed "same numbers" check and ended with exit status 0.
3. The report's explorer named a window by its index within its source, the inspection figure on the same page by
   its label in the stores: "window 1" of one was "window 3" of the other.

``XAI_LOC_SCRIPTS_ROOT`` points the benchmark tests at another copy of ``benchmarks/`` (as in
``test_scripts_hardening``); default: this repository.
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from test_report import _Page

from xai_loc.data.scene import paper_scene
from xai_loc.data.store import simulate_dataset
from xai_loc.experiments.tdoa_probe import run_tdoa, tdoa_tables, write_tdoa_results
from xai_loc.models import build_model

TREE = Path(os.environ.get("XAI_LOC_SCRIPTS_ROOT") or Path(__file__).resolve().parents[1])
NAME = "a|b"  # as ModelSet names the checkpoint a|b.safetensors


def _cells(line: str) -> list[str]:
    """The cells of a markdown table row, split at its unescaped bars as commonmark splits them."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


# 1 -------------------------------------------------------------------------------------------------------------
def test_markdown_rows_escape_bars_once_and_keep_plain_rows_as_they_were():
    from xai_loc.experiments.base import markdown_row

    assert markdown_row(["estimator", "7-8 (0.15 m)"]) == "| estimator | 7-8 (0.15 m) |"  # as the tables had it
    assert markdown_row(["", "SAT", "MSA"]) == "| | SAT | MSA |"  # BAST's empty corner
    assert markdown_row([NAME, "0.0 / 0.27"]) == r"| a\|b | 0.0 / 0.27 |"
    assert markdown_row([r"_mean \|true delay\| (samples)_", "a||b"]) == r"| _mean \|true delay\| (samples)_ | a\|\|b |"


@pytest.fixture(scope="module")
def barred(tmp_path_factory) -> tuple[xr.Dataset, Path]:
    """A TDOA result of a model named ``a|b`` (and its randomized copy) on one source, written to a folder."""
    tmp = tmp_path_factory.mktemp("barred")
    store = simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=tmp / "data", n_sources=1)
    torch.manual_seed(1)
    ds = run_tdoa({NAME: build_model("loccnn")}, store, pairs="7-8,0-15", max_windows=4, batch_size=4,
                  srp_max_windows=2)
    write_tdoa_results(ds, tmp / "out")
    return ds, tmp / "out"


def test_a_bar_in_a_model_name_keeps_every_value_under_its_header(barred):
    from xai_loc.report.page import render_report

    ds, folder = barred
    md = (folder / "tdoa.md").read_text()
    tables = [[line for line in block.splitlines() if line.startswith("|")] for block in md.split("\n\n")]
    tables = [t for t in tables if t]
    assert len(tables) == 2  # delays and SRP
    for table in tables:
        assert {len(_cells(line)) for line in table} == {len(_cells(table[0]))}, table
    rows = {_cells(line)[0]: _cells(line)[1:] for table in tables for line in table}
    assert rows[r"a\|b"] and rows[r"a\|b-randomized"]
    # the CSV and LaTeX tables show the name as it is
    tables = tdoa_tables(ds)
    assert [line.split(",")[0] for line in tables["csv"].splitlines()[1:3]] == ["signals", NAME]
    assert r"a\textbar{}b & " in tables["latex"] and r"a\textbar{}b-randomized & " in tables["srp_latex"]

    # the report: each number under its header, as stored
    page = _Page(render_report(folder))
    table = next(t for t in page.tables if t and t[0][0] == "estimator" and "7-8 (0.15 m)" in t[0])
    header = table[0]
    assert all(len(row) == len(header) for row in table)
    for estimator in (NAME, f"{NAME}-randomized"):
        row = next(r for r in table if r[0] == estimator)
        for head, cell in zip(header[1:], row[1:], strict=True):
            sel = {"estimator": estimator, "pair": head.split()[0]}
            anomalies, mae = cell.split(" / ")
            assert float(anomalies) == pytest.approx(float(ds["anomalies_percent"].sel(sel)), abs=0.05)
            stored = float(ds["mae_samples"].sel(sel))
            assert (mae == "–" and np.isnan(stored)) or float(mae) == pytest.approx(stored, abs=0.005)
    srp = next(t for t in page.tables if t and t[0][0] == "estimator" and "Euclidean" in t[0][-1])
    row = next(r for r in srp if r[0] == NAME)
    assert len(row) == len(srp[0]) == 4
    err = ds["srp_error"].sel(srp_estimator=NAME, srp_metric=["x", "y", "euclidean"]).values
    np.testing.assert_allclose([float(v) for v in row[1:]], err, atol=5e-4)


# 2 -------------------------------------------------------------------------------------------------------------
def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bench_script(monkeypatch):
    """``load(name, *argv)``: ``benchmarks/<name>.py`` imported as a module with ``benchmarks/_args`` as its
    ``_args`` (``scripts/_args`` shares the name; both put back afterwards) and ``sys.argv`` as ``python
    benchmarks/<name>.py ARGV`` sets it."""
    folder = TREE / "benchmarks"
    monkeypatch.setitem(sys.modules, "_args", _load(folder / "_args.py", "_args"))

    def load(name: str, *argv: str):
        monkeypatch.setattr(sys, "argv", [str(folder / f"{name}.py"), *argv])
        return _load(folder / f"{name}.py", f"_bench_{name}")

    return load


def test_bench_srp_ends_with_exit_status_1_when_the_maps_differ(bench_script, monkeypatch, capsys):
    bench = bench_script("bench_srp", "--windows", "1")
    monkeypatch.setattr(bench, "configure_cpu", lambda threads: None)  # this process's threads and allocator
    assert bench.main() is None
    assert "maps equal: True" in capsys.readouterr().out
    shifted = bench.shifted_gcc_phat

    def off(*args, **kwargs):
        lags, cc = shifted(*args, **kwargs)
        return lags, cc + 1e-3

    monkeypatch.setattr(bench, "shifted_gcc_phat", off)
    with pytest.raises(SystemExit) as exit_:
        bench.main()
    assert exit_.value.code == "the gathered and the shifted correlations gave different SRP-PHAT maps"
    assert "maps equal: False" in capsys.readouterr().out


def test_bench_allocator_ends_with_exit_status_1_when_the_numbers_differ(bench_script, monkeypatch, capsys):
    bench = bench_script("bench_allocator", "--models", "loccnn", "--rounds", "1")
    kept = []
    monkeypatch.setattr(bench, "configure_threads", lambda threads: None)
    monkeypatch.setattr(bench, "keep_freed_memory", kept.append)

    def workloads(arch, offset):
        """One workload whose numbers under glibc's defaults (the baseline) are ``offset`` off."""
        return [("step", lambda: (1e-3, [torch.tensor([1.0 + (0.0 if kept[-1] else offset)])]))]

    monkeypatch.setattr(bench, "workloads", lambda arch: workloads(arch, 0.0))
    assert bench.main() is None
    assert "same numbers: True" in capsys.readouterr().out
    monkeypatch.setattr(bench, "workloads", lambda arch: workloads(arch, 1e-6))
    with pytest.raises(SystemExit) as exit_:
        bench.main()
    assert exit_.value.code == "glibc's defaults and freed memory kept gave different numbers for loccnn step"
    assert "same numbers: False" in capsys.readouterr().out
    assert kept[-1] is False  # the default put back before the exit


# 3 -------------------------------------------------------------------------------------------------------------
def test_explorer_and_inspection_name_a_window_alike(captured_figure, tmp_path):
    """Two sources of two windows each: window 3 is the second window of source 20, and both captions say
    'window 3, source 20'."""
    import xai_loc.io
    from xai_loc.plots.inspection import plot_inspection
    from xai_loc.report.explorer import GccSettings, explorer_data

    rng = np.random.default_rng(0)
    fs, n = 16000.0, 512
    coords = {"window": [0, 1, 2, 3], "mic": [0, 1], "time": np.arange(n) / fs,
              "source_id": ("window", [10, 10, 20, 20]), "window_index": ("window", [0, 1, 0, 1]),
              "source_x": ("window", [1.0, 1.0, 1.2, 1.2]), "source_y": ("window", [2.0, 2.0, 2.5, 2.5]),
              "source_z": ("window", [1.5, 1.5, 1.5, 1.5]), "mic_x": ("mic", [0.0, 0.15]),
              "mic_y": ("mic", [0.0, 0.0]), "mic_z": ("mic", [1.0, 1.0])}
    signals = xr.DataArray(rng.standard_normal((4, 2, n)), dims=("window", "mic", "time"), coords=coords,
                           attrs={"fs": fs}).to_dataset(name="signals")
    relevance = signals["signals"].copy(data=rng.standard_normal((4, 2, n)))
    delay = xr.DataArray(np.zeros((1, 1, 4)), dims=("estimator", "pair", "window"),
                         coords={"estimator": ["signals"], "pair": ["0-1"], "window": [0, 1, 2, 3]})
    data = explorer_data(relevance, signals, GccSettings(fs, 343.0, 2, {"0-1": 8.0}, delay), "m", 4)
    assert [w["label"] for w in data["windows"]] == [f"window {w}, source {s}" for w, s in
                                                     ((0, 10), (1, 10), (2, 20), (3, 20))]
    drawn = captured_figure(xai_loc.io)
    plot_inspection(signals, {"m": relevance}, tmp_path / "insp", windows=[3], pair=(0, 1))
    assert drawn["fig"].axes[0].get_ylabel() == "window 3, source 20 (error n/a)"
