"""Regression tests of the sixth review of the report and figures: stored names are shown as written (no mathtext
in figures, no markup in tables); text files are UTF-8 whatever the locale; an attribute of another kind is one
line; the generic tables name units; the localization table fills the models' Euclidean error."""
from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import perturbation_result, refused, run_cli

from xai_loc.io import write_dataset_atomic

#: Checkpoint names that matplotlib's mathtext read as TeX: the first failed to parse, the second lost its dollars.
DOLLARS = ["loccnn_$\\x$", "samplecnn_$2$"]


def _perturbation(names=("loccnn",), **attrs) -> xr.Dataset:
    """:func:`helpers.perturbation_result` of models ``names`` (the same curves each), with a 3-D Euclidean error."""
    one = perturbation_result(**{"t60": 0.15, "snr": 25.0, **attrs})
    ds = xr.concat([one.assign_coords(model=[name]) for name in names], "model", data_vars="minimal",
                   coords="minimal")
    euclidean = np.arange(ds.sizes["model"] * 6, dtype=float).reshape(-1, 2, 3) / 100 + 0.2
    return ds.assign(euclidean=(("model", "mode", "percentage"), euclidean, {"units": "m"}))


def _tdoa(estimators=("signals", "loccnn", "zero-lag"), **attrs) -> xr.Dataset:
    """A small TDOA result of one pair with an SRP comparison."""
    rng = np.random.default_rng(0)
    e = len(estimators)
    return xr.Dataset(
        {"delay": (("estimator", "pair", "window"), rng.normal(size=(e, 1, 3))),
         "truth": (("pair", "window"), rng.normal(size=(1, 3))),
         "threshold": (("pair", "window"), [[2.0, 3.0, 7.0]]),
         "anomalies_percent": (("estimator", "pair"), rng.uniform(0, 100, (e, 1))),
         "mae_samples": (("estimator", "pair"), rng.uniform(0, 2, (e, 1))),
         "srp_error": (("srp_estimator", "srp_metric"), rng.uniform(0, 1, (2, 3)))},
        coords={"estimator": list(estimators), "pair": ["7-8"], "pair_distance": ("pair", [0.15]),
                "window": [0, 1, 2], "srp_estimator": ["signals", estimators[1]],
                "srp_metric": ["x", "y", "euclidean"]},
        attrs={"t60": 0.15, "snr": 25.0, "method": "lrp", "fs": 16000.0, "c": 343.0, "srp_windows": 3, **attrs})


def _shown(text) -> str:
    """What matplotlib draws of a text artist: its string after mathtext's reading of ``$`` (none where it is
    not math)."""
    shown, math = text._preprocess_math(text.get_text())
    assert not math, text.get_text()
    return shown


# 1 -------------------------------------------------------------------------------------------------------------

def test_a_checkpoint_named_with_dollars_is_drawn_as_written(tmp_path, captured_figure):
    """Review: ``loccnn_$\\x$`` ended ``figures`` and ``report`` in a ParseFatalException traceback (and ``perturb``
    after all its work), ``samplecnn_$2$`` was titled ``samplecnn_2``."""
    from xai_loc.plots import perturbation, tdoa

    ds = _perturbation(DOLLARS, method="lrp_$y$")
    drawn = captured_figure(perturbation)
    perturbation.plot_perturbation(ds, tmp_path / "p")
    axes = drawn["fig"].axes
    assert [_shown(ax.title) for ax in axes] == DOLLARS
    assert _shown(drawn["fig"]._suptitle) == "T60 0.15 s, SNR 25 dB, lrp_$y$, zero fill, 7 windows"
    # a TDOA estimator's name is a legend entry and an SRP bar's label
    srp = captured_figure(tdoa)
    tdoa.plot_srp(_tdoa(("signals", DOLLARS[1], "zero-lag")), tmp_path / "s")
    assert [_shown(t) for t in srp["fig"].axes[0].get_xticklabels()] == ["signals", DOLLARS[1]]


def test_figures_and_report_of_a_folder_with_dollar_names(tmp_path):
    folder = tmp_path / "res"
    write_dataset_atomic(_perturbation(DOLLARS), folder / "perturbation.nc")
    write_dataset_atomic(_tdoa(("signals", DOLLARS[0], "zero-lag")), folder / "tdoa.nc")
    result = run_cli(["figures", str(folder)])
    assert result.exit_code == 0, result.output
    assert {"perturbation.png", "tdoa.png", "srp.png"} <= {p.name for p in folder.iterdir()}
    result = run_cli(["report", str(folder), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output


# 1 (markdown) ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["loccnn_*best*", "_e_.safetensors", "`c`", "[l](http://x.org)", "<b>x</b>",
                                  "$\\x$", "a|b", "a\\|b", "&amp;", "m #", "~~s~~", "foo\\"])
def test_a_name_in_a_markdown_heading_or_cell_is_shown_as_written(name):
    """Review: ``### loccnn_*best*`` and its cells were rendered with ``<em>best</em>`` in the report."""
    from xai_loc.experiments.base import markdown_row, markdown_text
    from xai_loc.report.collect import _markdown_to_html

    text = "\n".join([f"### {markdown_text(name)}", "", markdown_row(["ordering", "0 %"]), "|---|---|",
                      markdown_row([markdown_text(name), "0.100"])])
    page = _markdown_to_html(text)
    assert [html.unescape(h) for h in re.findall(r"<h3>(.*)</h3>", page)] == [name]
    assert [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", page)] == [name, "0.100"]
    # only markup characters are escaped: the rest of a name reads as it is in the .md file
    assert markdown_text("loccnn-0.6 (t60-0.15_snr-25.pt)") == r"loccnn-0.6 (t60-0.15\_snr-25.pt)"



def test_the_tables_show_a_model_name_as_written():
    """Review: the experiments' tables put stored model names in headings and cells as markdown, so the report
    showed ``loccnn_*best*`` as "loccnn_<em>best</em>"; each table escapes them once (:func:`markdown_text`)."""
    from xai_loc.experiments.registry import EXPERIMENTS
    from xai_loc.experiments.tdoa_probe import tdoa_tables
    from xai_loc.report.collect import _markdown_to_html

    name = "loccnn_*best*"
    table = EXPERIMENTS["perturbation"].tables(perturbation_result().assign_coords(model=[name]))["markdown"]
    assert [html.unescape(h) for h in re.findall(r"<h3>(.*)</h3>", _markdown_to_html(table))] == [name]
    page = _markdown_to_html(tdoa_tables(_tdoa(("signals", name, "zero-lag")))["markdown"])
    assert name in [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", page)]

# 2 -------------------------------------------------------------------------------------------------------------

_C_LOCALE_SCRIPT = """
import json, sys
from pathlib import Path
from xai_loc.io import write_files_atomic, write_progress, write_text_atomic
from xai_loc.report.study_run import read_study_run
from xai_loc.data.scene import Scene

root = Path(sys.argv[1])
write_text_atomic(root / "page.html", "T60 0.6 s \\u2013 ok")
write_files_atomic({root / "table.md": "| a \\u2013 b |"})
write_progress(root / "p.progress.json", {"note": "\\u2013", "done": 1})
record = {"format": "xai-loc-study-run", "version": 1, "finished": True, "files": {},
          "settings": {"quick": True, "conditions": ["\\u2013"], "skipped": [], "missing_checkpoints": []}}
(root / "study.json").write_bytes(json.dumps(record, ensure_ascii=False).encode("utf-8"))
print(read_study_run(root)["settings"]["conditions"] == ["\\u2013"])
print([float(v) for v in Scene.from_toml(root / "scene.toml").room.size])
"""


def test_text_files_are_written_and_read_as_utf8_in_a_c_locale(tmp_path):
    """Review: ``write_text`` without an encoding: UnicodeEncodeError ('–') under LC_ALL=C, cp1252 bytes under the
    page's ``<meta charset=utf-8>`` on Windows; a study record or scene file with non-ASCII text failed to read."""
    (tmp_path / "scene.toml").write_bytes("""# Raum \u2013 klein
[room]
size = [5.0, 4.0, 3.0]
[array]
positions = [[1.0, 1.0, 1.0], [1.2, 1.0, 1.0]]
[sources]
positions = [[2.0, 2.0, 1.5], [3.0, 2.0, 1.5], [2.0, 3.0, 1.5]]
""".encode("utf-8"))
    env = {**os.environ, "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "LC_ALL": "C", "LANG": "C"}
    done = subprocess.run([sys.executable, "-c", _C_LOCALE_SCRIPT, str(tmp_path)], env=env, capture_output=True,
                          text=True, encoding="utf-8", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["True", "[5.0, 4.0, 3.0]"]
    assert (tmp_path / "page.html").read_bytes() == "T60 0.6 s \u2013 ok".encode("utf-8")
    assert (tmp_path / "table.md").read_bytes() == "| a \u2013 b |".encode("utf-8")
    assert (tmp_path / "p.progress.json").read_bytes() == b'{"note": "\\u2013", "done": 1}'


# 3 -------------------------------------------------------------------------------------------------------------

def _nothing_written(folder: Path, name: str) -> None:
    assert [p.name for p in folder.iterdir()] == [name]  # no figure, no report, no staging folder


@pytest.mark.parametrize("file, ds, says", [
    ("perturbation.nc", _perturbation(models='["loccnn","samplecnn"]'),
     {"report": "cannot be tabulated (attribute 'models' is '[\"loccnn\",\"samplecnn\"]', not a JSON object of one "
                "object per model); run 'xai-loc perturb' to rebuild it"}),
    ("perturbation.nc", _perturbation(n_windows="27 windows"),
     dict.fromkeys(("report", "figures"), "cannot be drawn (attribute 'n_windows' is '27 windows', not a whole "
                                          "number); run 'xai-loc perturb' to rebuild it")),
    ("tdoa.nc", _tdoa(srp_windows="eight"),
     {"report": "cannot be tabulated (attribute 'srp_windows' is 'eight', not a whole number); run 'xai-loc tdoa' "
                "to rebuild it",
      "figures": "cannot be drawn (attribute 'srp_windows' is 'eight', not a whole number); run 'xai-loc tdoa' to "
                 "rebuild it"}),
])
def test_an_attribute_of_another_kind_is_one_line(tmp_path, file, ds, says):
    """Review: AttributeError (``models`` a JSON list) and ValueError (``int('27 windows')``, ``int('eight')``)
    tracebacks in ``report`` and ``figures``."""
    path = write_dataset_atomic(ds, tmp_path / "res" / file)
    for command, line in says.items():
        refused(run_cli([command, str(path.parent)]), f"{path} {line}")
        _nothing_written(path.parent, file)


# 4 -------------------------------------------------------------------------------------------------------------

def test_the_generic_tables_name_the_units_the_file_records():
    """Review: the duplex probe's table showed ``natural_itd``, ``itd_slope``, ``azimuth`` without their units."""
    from xai_loc.report.collect import _dataset_tables

    ds = xr.Dataset({"itd_slope": ("band", [0.1, 0.2], {"units": "degree/us"}),
                     "itd_weight": ("band", [0.9, 0.1], {"units": "1"}), "tokens": ("band", [3, 3]),
                     "natural_itd": (("band", "azimuth"), [[-395.2, 395.2], [-380.8, 380.8]], {"units": "us"}),
                     "level": ((), 60.0, {"units": "dB SPL"})},
                    coords={"band": ["low", "high"], "azimuth": ("azimuth", [-45.0, 45.0], {"units": "degree"})})
    scalars, per_band, itd = _dataset_tables(ds)
    assert re.findall(r"<th>(.*?)</th>", scalars) == ["", "value", "level [dB SPL]"]
    assert re.findall(r"<th>(.*?)</th>", per_band) == ["", "itd_slope [degree/us]", "itd_weight [1]", "tokens",
                                                       "band", "", "", "", "low", "high"]
    assert itd.startswith("<p>natural_itd [us] (band x azimuth)</p>")
    assert re.findall(r"<th>(.*?)</th>", itd)[:2] == ["azimuth [degree]", "-45.0"]


# 5 -------------------------------------------------------------------------------------------------------------

def test_the_localization_table_fills_the_models_euclidean_error(tmp_path):
    """Review: '–' in the Euclidean column of every model although perturbation.nc holds it at 0 %; the column now
    says that the models' is 3-D and SRP-PHAT's in the x-y plane."""
    from xai_loc.report.collect import collect_sections, localization_rows
    from xai_loc.report.page import render_report

    folder = tmp_path / "res"
    ds = _perturbation(["loccnn", "samplecnn"])
    write_dataset_atomic(ds, folder / "perturbation.nc")
    write_dataset_atomic(_tdoa(), folder / "tdoa.nc")
    rows = {row["estimator"]: row for row in localization_rows(collect_sections(folder)[0])}
    assert rows["loccnn"]["euclidean"] == 0.2 and rows["samplecnn"]["euclidean"] == 0.26
    assert np.isnan(rows["constant (centroid)"].get("euclidean", np.nan))
    page = render_report(folder)
    assert "<th>Euclidean (models: 3-D; SRP-PHAT: x-y)</th>" in page
    cells = re.search(r"<tr class=\"model\"><td>samplecnn</td>(.*?)</tr>", page, re.S).group(1)
    assert re.findall(r"<td>(.*?)</td>", cells)[:6] == ["0.100", "0.100", "0.100", "0.100", "–", "0.260"]
