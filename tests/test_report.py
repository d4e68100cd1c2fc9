"""``xai-loc report``: the study as one web page, rendered from a tiny ``reproduce --quick`` run.

The study lives below a path with spaces and non-ASCII characters; the numbers on the page are
checked against the stored results, the inline audio against the relevance store.
"""
import base64
import hashlib
import html
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import xarray as xr
from click.testing import CliRunner

from xai_loc.cli import main

CONDITION = "t60-0.15_snr-25"


def make_study(base: Path, zoo: Path, *args: str) -> Path:
    """A one-checkpoint (``zoo``), one-source ``reproduce --quick`` below ``base`` (about 20 s on one thread);
    ``args`` are more options of ``reproduce``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("xai_loc.study.QUICK_SOURCES", 1)
        mp.setattr("xai_loc.study.QUICK_SRP_WINDOWS", 2)
        mp.setattr("xai_loc.study.QUICK_METHODS", ("input_x_gradient",))  # the suite as small as it gets
        mp.setattr("xai_loc.study.QUICK_FILLS", ("zero",))
        mp.setattr("xai_loc.study.QUICK_PERCENTAGES", (0.0, 50.0))
        result = CliRunner().invoke(main, ["--threads", "1", "reproduce", "--quick", "--out", str(base / "rep"),
                                           "--data", str(base / "data"), "--pretrained", str(zoo), *args])
    assert result.exit_code == 0, result.output
    return base / "rep"


@pytest.fixture(scope="module")
def study(tmp_path_factory, zoo) -> Path:
    return make_study(tmp_path_factory.mktemp("report") / "ré sults ünd spaces", zoo)


class _Page(HTMLParser):
    """Tables (rows of cell texts), resource URLs and the explorers' JSON of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.urls, self.json = [], [], []
        self._cell, self._script = None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.urls += [attrs[k] for k in ("src", "href") if k in attrs]
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "script" and attrs.get("type") == "application/json":
            self._script = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell.strip())
            self._cell = None
        elif tag == "script" and self._script is not None:
            self.json.append(json.loads(self._script))
            self._script = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._script is not None:
            self._script += data


def _row(page: _Page, first: str) -> list[str]:
    return next(row for table in page.tables for row in table if row and row[0] == first)


def _wav(uri: str) -> tuple[np.ndarray, int]:
    return sf.read(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def test_reproduce_ends_with_a_report_of_the_stored_numbers(study, zoo):
    page = _Page((study / "report.html").read_text())
    cond = study / CONDITION
    pert = xr.open_dataset(cond / "perturbation.nc")
    tdoa = xr.open_dataset(cond / "tdoa.nc")
    # localization beside its baselines, as stored
    mae = pert.mae.sel(model="loccnn", mode="relevance", percentage=0.0).values
    assert _row(page, "loccnn")[1:6] == [f"{v:.3f}" for v in mae] + [f"{mae.mean():.3f}", "0.088"]  # the paper's
    assert _row(page, "constant (centroid)")[4] == f"{float(pert.baseline_mae_mean):.3f}"
    assert _row(page, "loccnn")[-1] == f"perturbation.nc, 0 %, {pert.n_windows} windows of {pert.n_sources} sources"
    srp = tdoa.srp_error.sel(srp_estimator="signals")
    assert _row(page, "SRP-PHAT signals")[6] == f"{float(srp.sel(srp_metric='euclidean')):.3f}"
    # the experiments' tables, every baseline included
    cell = f"{float(tdoa.anomalies_percent.sel(estimator='zero-lag', pair='7-8')):.1f} / " \
           f"{float(tdoa.mae_samples.sel(estimator='zero-lag', pair='7-8')):.2f}"
    assert _row(page, "zero-lag")[1] == cell and _row(page, "loccnn-randomized")
    assert _row(page, "relevance")[1] == f"{float(pert.mae_mean.sel(model='loccnn', mode='relevance')[0]):.3f}"
    # provenance: the checkpoint's sha256, its composite and target
    digest = hashlib.sha256((zoo / "loccnn_t60-0.15_snr-25.safetensors").read_bytes()).hexdigest()
    assert any(row[:3] == ["loccnn", "loccnn_t60-0.15_snr-25.safetensors", digest]
               and row[4:] == ["paper", "truth"] for t in page.tables for row in t)
    text = html.unescape((study / "report.html").read_text())
    assert "xai_loc_sha256" in pert.attrs and "xai_loc_sha256" not in text  # the file's own digest is not provenance
    # self-contained: every resource inline, no address outside the page
    assert page.urls and all(re.match(r"data:|#", url) for url in page.urls)
    assert "run 'xai-loc" not in text  # reproduce wrote every registered experiment: none is listed as missing
    faith = xr.open_dataset(cond / "faithfulness.nc")
    aopc = faith.score.sel({"model": "loccnn", "method": "input_x_gradient", "fill": "zero", "ordering": "relevance",
                            "metric": "aopc"})
    # faithfulness, as stored (the interval only where two sources give one)
    assert any(row[0] == "input_x_gradient" and row[1].split(" [")[0] == f"{float(aopc):.4f}"
               for table in page.tables for row in table if row)


def test_explorer_audio_and_gcc_come_from_the_relevance_store(study):
    from xai_loc.explain.store import open_explained_signals, open_relevance

    (explorer,) = _Page((study / "report.html").read_text()).json
    tdoa = xr.open_dataset(study / CONDITION / "tdoa.nc")
    digest = json.loads(tdoa.attrs["models"])["loccnn"]["model_digest"]  # the trained model, not its randomized copy
    store = next((study.parent / "data").rglob(f"loccnn-{digest[:12]}-lrp-paper-truth.zarr"))
    relevance, signals = open_relevance(store), open_explained_signals(store)
    assert len(explorer["windows"]) == 4 and explorer["pairs"] == [str(p) for p in tdoa.pair.values]
    assert explorer["duration"] == pytest.approx(5120 / 16000)
    window = explorer["windows"][-1]  # the last window of the store
    clip, fs = _wav(window["relevance_audio"][7])
    expected = relevance.isel(window=-1).sel(mic=7).values.astype(np.float64)
    assert fs == 16000 and clip.shape == (5120,)
    np.testing.assert_allclose(clip, 0.99 * expected / np.abs(expected).max(), atol=1.5 / 32767)
    mic, _ = _wav(window["mic_audio"][8])
    expected = signals.signals.isel(window=-1).sel(mic=8).values.astype(np.float64)
    np.testing.assert_allclose(mic, 0.99 * expected / np.abs(expected).max(), atol=1.5 / 32767)
    # GCC-PHAT of the signals peaks where the TDOA probe found the delay (finer lag grid there)
    gcc = window["gcc"]["7-8"]
    w = int(relevance.isel(window=-1)["window"])
    assert gcc["truth"] == pytest.approx(float(tdoa.truth.sel(pair="7-8", window=w)), abs=1e-3)
    peak = explorer["lags"]["7-8"][int(np.argmax(gcc["signals"]))]
    assert peak == pytest.approx(float(tdoa.delay.sel(estimator="signals", pair="7-8", window=w)), abs=0.5)


def test_partial_folder_says_what_is_missing(study, tmp_path):
    folder = tmp_path / "nür perturbation"
    folder.mkdir()
    shutil.copy(study / CONDITION / "perturbation.nc", folder)
    out = tmp_path / "out dir" / "bericht.html"
    result = CliRunner().invoke(main, ["report", str(folder), "--out", str(out), "--windows", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(out)
    text = html.unescape(out.read_text())
    assert "tdoa.nc (TDOA result; run 'xai-loc tdoa')" in text
    assert "No window explorer: no result of this folder records the path of the dataset it used" in text
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # atomic: no temporary file left


def test_report_marks_what_the_last_reproduce_run_did_not_write(study, zoo, tmp_path):
    from xai_loc.io import write_dataset_atomic

    base = tmp_path / "again"
    shutil.copytree(study.parent, base)
    rep = base / "rep"
    earlier = json.loads((rep / "study.json").read_text())
    assert earlier["finished"] and f"{CONDITION}/faithfulness.nc" in earlier["files"]
    # a second run that skips the suite leaves the first run's suite results in the folder
    make_study(base, zoo, "--skip", "faithfulness,sanity,components")
    record = json.loads((rep / "study.json").read_text())
    assert record["finished"] and record["settings"]["skipped"] == ["faithfulness", "sanity", "components"]
    assert {f"{CONDITION}/perturbation.nc", f"{CONDITION}/tdoa.nc", "summary.md"} <= set(record["files"])
    assert not any(name.endswith(("faithfulness.nc", "sanity.nc", "components.nc")) for name in record["files"])
    page = (rep / "report.html").read_text()
    text = html.unescape(page)
    assert "full test split" not in text and "quick run; conditions t60-0.15_snr-25; skipped faithfulness" in text
    marked = {name for name in ("perturbation", "tdoa", "faithfulness", "sanity", "components")
              if f"{name}.nc: not written by the last reproduce run" in text}
    assert marked == {"faithfulness", "sanity", "components"}
    assert "It did not finish" not in text and "class=\"stale\"" not in page.split("<section")[0]
    # a result replaced after the run, by another command, is marked as such, in its localization rows too
    with xr.open_dataset(rep / CONDITION / "tdoa.nc") as ds:
        replaced = ds.load()
    write_dataset_atomic(replaced.assign_attrs(note="rewritten"), rep / CONDITION / "tdoa.nc")
    result = CliRunner().invoke(main, ["report", str(rep)])
    assert result.exit_code == 0, result.output
    page = _Page((rep / "report.html").read_text())
    assert _row(page, "SRP-PHAT signals")[-1].endswith("written after the last reproduce run of this folder "
                                                       "(replaced since by another command)")
    assert _row(page, "loccnn")[-1].startswith("perturbation.nc") and "reproduce" not in _row(page, "loccnn")[-1]
    # a run that stopped part way says so at the top
    (rep / "study.json").write_text(json.dumps({**record, "finished": False}))
    CliRunner().invoke(main, ["report", str(rep)])
    assert "It did not finish" in html.unescape((rep / "report.html").read_text())
    # a damaged record: one line, exit 2, the earlier page kept
    before = (rep / "report.html").read_bytes()
    for damage in ("{", json.dumps({**record, "files": {"x": 1}}), json.dumps({**record, "format": "other"})):
        (rep / "study.json").write_text(damage)
        result = CliRunner().invoke(main, ["report", str(rep)])
        assert result.exit_code == 2 and result.output.count("\n") == 1 and "study.json is damaged" in result.output
    assert (rep / "report.html").read_bytes() == before


def test_a_run_that_writes_no_result_still_leaves_a_page_of_the_folder(study, zoo, tmp_path):
    """Review: a second run that skipped every experiment left the first run's report.html beside its newer
    study.json; and the temporary file of a killed write (a dot-file) was shown on the page as a figure."""
    base = tmp_path / "again"
    shutil.copytree(study.parent, base)
    rep = base / "rep"
    (rep / CONDITION / ".tdoa.png.k1ll3d.tmp.png").write_bytes((rep / CONDITION / "tdoa.png").read_bytes())
    make_study(base, zoo, "--skip", "perturbation,tdoa,faithfulness,sanity,components")
    text = html.unescape((rep / "report.html").read_text())
    assert "quick run; conditions t60-0.15_snr-25; skipped perturbation, tdoa, faithfulness, sanity, components" \
        in text
    marked = {name for name in ("perturbation", "tdoa", "faithfulness", "sanity", "components")
              if f"{name}.nc: not written by the last reproduce run" in text}
    assert marked == {"perturbation", "tdoa", "faithfulness", "sanity", "components"}
    assert ".tdoa.png" not in text and "k1ll3d" not in text


def test_bad_inputs_are_one_line_exit_2_and_write_nothing(study, tmp_path):
    damaged = tmp_path / "dämaged"
    damaged.mkdir()
    (damaged / "tdoa.nc").write_bytes((study / CONDITION / "tdoa.nc").read_bytes()[:2000])
    shutil.copy(study / CONDITION / "perturbation.nc", damaged)
    (tmp_path / "empty").mkdir()
    (tmp_path / "folder.html").mkdir()
    from xai_loc.io import write_dataset_atomic

    mixed = tmp_path / "mixed"  # review: merged under the first file's condition in one section
    mixed.mkdir()
    shutil.copy(study / CONDITION / "perturbation.nc", mixed)
    with xr.open_dataset(study / CONDITION / "tdoa.nc") as ds:
        write_dataset_atomic(ds.load().assign_attrs(t60=0.6, snr=10.0), mixed / "tdoa.nc")
    for args, says in [([str(damaged)], "is damaged or not netCDF"),
                       ([str(mixed)], "holds results of different conditions: perturbation.nc (T60 0.15 s, SNR 25 "
                                      "dB), tdoa.nc (T60 0.6 s, SNR 10 dB); keep one condition per folder"),
                       ([str(tmp_path / "empty")], "holds no results"),
                       ([str(tmp_path / "nowhere")], "does not exist"),
                       ([str(damaged), "--windows", "0"], "--windows 0 is not allowed"),
                       ([str(damaged), "--out", str(tmp_path / "folder.html")], "is a folder")]:
        result = CliRunner().invoke(main, ["report", *args])
        assert result.exit_code == 2, result.output
        assert says in result.output and result.output.count("\n") == 1
    assert not (damaged / "report.html").exists() and not (tmp_path / "empty" / "report.html").exists()
    assert not (mixed / "report.html").exists()
    # results of a binaural store record no condition (NaN): not a mix
    for name in ("perturbation.nc", "tdoa.nc"):
        with xr.open_dataset(study / CONDITION / name) as ds:
            write_dataset_atomic(ds.load().assign_attrs(t60=float("nan"), snr=float("nan")), mixed / name)
    result = CliRunner().invoke(main, ["report", str(mixed), "--windows", "1"])
    assert result.exit_code == 0, result.output


def test_results_without_their_own_tables_show_scalars_and_1d_variables():
    from xai_loc.report.collect import _dataset_tables

    ds = xr.Dataset({"itd_weight": ("band", [0.25, 0.5]), "ild_weight": ("band", [0.75, 0.125]),
                     "n_tokens": ((), 3.0), "per_example": ("example", np.arange(41.0))},
                    coords={"band": ["low", "high"]})
    # two tables: 41 examples are more rows than a table shows
    scalars, weights = (_Page(text).tables[0] for text in _dataset_tables(ds))
    assert scalars[-1] == ["n_tokens", "3"]
    assert weights[0] == ["", "itd_weight", "ild_weight"] and weights[2:] == [["low", "0.25", "0.75"],
                                                                               ["high", "0.5", "0.125"]]


def test_the_paper_number_is_that_of_the_models_own_condition():
    """A checkpoint trained at (0.15 s, 25 dB) run on (0.6 s, 10 dB) data is set beside the paper's
    0.088, not 0.110; conditions match to 1e-6, so float sums and float32 values find theirs."""
    import numpy as np

    from xai_loc.models.zoo import paper_mae
    from xai_loc.report.collect import _trained_condition

    data = {"t60": 0.6, "snr": 10.0}
    trained = {"model": "loccnn", "model_condition": json.dumps({"t60": 0.15, "snr": 25.0})}
    assert paper_mae(*_trained_condition(trained, data)) == 0.088
    assert paper_mae(*_trained_condition({"model": "loccnn", "model_condition": "null"}, data)) == 0.110
    assert paper_mae(*_trained_condition({"model": "samplecnn"}, data)) == 0.111
    assert paper_mae("loccnn", 0.1 + 0.2, 20) == 0.103 and paper_mae("samplecnn", np.float32(0.3), 20.0) == 0.097
    assert paper_mae("loccnn", 0.5, 10.0) is None and paper_mae(None, 0.6, 10.0) is None


def test_the_explorer_reads_the_store_its_results_explained_or_none(tmp_path):
    """Review: the explorer took the first result's model entry (components.nc, no method), never matched a
    method without composite ('none') or an option tag, and otherwise took the alphabetically first store."""
    import types

    from xai_loc.report.explorer import find_relevance_stores

    data = tmp_path / "test-n2.zarr"
    digest = "10e2b5bf084bcd57"
    for name in ("integrated_gradients-truth", "lrp-paper-truth", "lrp-paper-first_rule=flat-truth", "saliency-truth"):
        (tmp_path / "test-n2.relevance" / f"loccnn-{digest[:12]}-{name}.zarr").mkdir(parents=True)
    models = json.dumps({"loccnn": {"model": "loccnn", "model_digest": digest},
                         "loccnn-randomized": {"model": "loccnn", "model_digest": "f" * 16, "randomized_from": "x"}})

    def entry(name, **attrs):
        return types.SimpleNamespace(name=name, ds=types.SimpleNamespace(attrs={"models": models, **attrs}))

    components = entry("components", target="truth")

    def tdoa(**attrs):
        return entry("tdoa", data=str(data), **{"method": "lrp", "composite": "paper", "target": "truth", **attrs})

    def found(*entries):
        stores, reason = find_relevance_stores(entries)
        return {k: v.name for k, v in stores.items()}, reason

    assert found(components, tdoa()) == ({"loccnn": f"loccnn-{digest[:12]}-lrp-paper-truth.zarr"}, "")
    assert found(components, tdoa(explain_options=json.dumps({"first_rule": "flat"}))) == \
        ({"loccnn": f"loccnn-{digest[:12]}-lrp-paper-first_rule=flat-truth.zarr"}, "")
    assert found(tdoa(method="saliency", composite="none")) == \
        ({"loccnn": f"loccnn-{digest[:12]}-saliency-truth.zarr"}, "")
    assert found(components, tdoa(target="prediction")) == \
        ({}, f"no matching relevance store in {tmp_path / 'test-n2.relevance'} for loccnn "
             f"(loccnn-{digest[:12]}-lrp-paper-prediction.zarr)")
    assert found(components, entry("tdoa", data=str(data))) == \
        ({}, "no result of this folder records the method of its relevance (tdoa.nc does)")
