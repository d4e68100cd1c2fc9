"""Regression tests of the eighth review of the results path: ``reproduce`` checks, before any work, that it can write
the relevance stores it explains its test data into; a binaural result with an empty dimension and a result whose
``bound`` is not (low, high) are refused in one line; the window explorer draws each GCC-PHAT curve at the delays its
caption gives."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import never, one_line, refused, run_cli, tree

import xai_loc.cli_params
from xai_loc.experiments.gcc import tdoa
from xai_loc.io import write_dataset_atomic
from xai_loc.study import reproduce

CONDITION = "t60-0.15_snr-25"
#: What a run leaves out to run the TDOA experiment, or to skip it (the inspection figure is drawn either way).
WITH_TDOA, NO_TDOA = ("faithfulness", "sanity", "components"), ("tdoa", "faithfulness", "sanity", "components")


# 1 -------------------------------------------------------------------------------------------------------------
class Started(Exception):
    """The run got past its checks: it evaluates its first model."""


@pytest.fixture()
def data_store(tmp_path, monkeypatch) -> Path:
    """The one-source test store of a quick run (the run takes one source) under ``tmp_path / 'data'``."""
    from xai_loc.data import simulate_dataset
    from xai_loc.data.scene import paper_scene

    monkeypatch.setattr("xai_loc.study.QUICK_SOURCES", 1)
    return Path(simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=tmp_path / "data", n_sources=1,
                                 progress=False))


def _read_only(monkeypatch, root: Path) -> None:
    """Make ``root`` read-only for the write-access checks (as root, permission bits do not stop writes)."""
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        inside = Path(path).resolve().is_relative_to(root.resolve())
        return False if inside and mode & os.W_OK else real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(xai_loc.cli_params.os, "access", access)


def _reproduce(zoo, store: Path, out: Path, skip) -> None:
    reproduce(out, quick=True, data_root=store.parents[2], pretrained=zoo, conditions=[(0.15, 25.0)], skip=skip,
              progress=False)


def _store_name(zoo, randomized: bool = False) -> str:
    from xai_loc.experiments.modelset import ModelSet

    models = ModelSet({"loccnn": zoo / f"loccnn_{CONDITION}.safetensors"})
    info = models.randomized_provenance("loccnn") if randomized else models.provenance("loccnn")
    return f"loccnn-{info['model_digest'][:12]}-lrp-paper-truth.zarr"


@pytest.mark.parametrize("skip", [WITH_TDOA, NO_TDOA])
def test_reproduce_refuses_a_read_only_data_root_it_explains_into_before_any_work(zoo, data_store, tmp_path,
                                                                                  monkeypatch, skip):
    """The relevance stores of the TDOA experiment and of the inspection figure (even with tdoa skipped) are written
    beside the test store: a read-only root is one line before any work. review: the perturbation experiment ran
    whole, then the first relevance store failed ('... is not writable'), leaving a half-finished study."""
    monkeypatch.setattr("xai_loc.study._evaluate", never("evaluating a model"))
    _read_only(monkeypatch, tmp_path / "data")
    before, folder = tree(tmp_path / "data"), data_store.parent
    says = one_line(_reproduce, zoo, data_store, tmp_path / "out", skip)
    assert says == (f"the folder of {_store_name(zoo)} '{folder / 'test-n1.relevance'}' is not writable: "
                    f"'{folder}' is read-only; choose another folder")
    assert not (tmp_path / "out").exists() and tree(tmp_path / "data") == before


def test_a_read_only_data_root_is_used_where_it_holds_every_relevance_store_the_run_needs(zoo, data_store, tmp_path,
                                                                                         monkeypatch):
    """A store that stands is reused without writing: the model's store lets a run without tdoa start; with tdoa the
    randomized copy's is needed too, and once it is there the run starts. review: a missing store was found only
    when the run came to write it."""
    from xai_loc.experiments.tdoa_probe import explain_models

    def started(*args, **kwargs):
        raise Started

    monkeypatch.setattr("xai_loc.study._evaluate", started)
    checkpoint = {"loccnn": zoo / f"loccnn_{CONDITION}.safetensors"}
    relevance = data_store.parent / "test-n1.relevance"
    explain_models(checkpoint, data_store, randomized_baseline=False, progress=False)
    assert [p.name for p in relevance.iterdir()] == [_store_name(zoo)]
    with monkeypatch.context() as patch:
        _read_only(patch, tmp_path / "data")
        says = one_line(_reproduce, zoo, data_store, tmp_path / "out", WITH_TDOA)
        assert says == (f"the folder of {_store_name(zoo, randomized=True)} '{relevance}' is not writable: "
                        f"'{relevance}' is read-only; choose another folder")
        with pytest.raises(Started):
            _reproduce(zoo, data_store, tmp_path / "out", NO_TDOA)
    explain_models(checkpoint, data_store, progress=False)
    with monkeypatch.context() as patch:
        _read_only(patch, tmp_path / "data")
        with pytest.raises(Started):
            _reproduce(zoo, data_store, tmp_path / "out", WITH_TDOA)


# 2 -------------------------------------------------------------------------------------------------------------
def _result(folder: Path, name: str, ds: xr.Dataset) -> Path:
    folder.mkdir(parents=True)
    ds.to_netcdf(folder / name, engine="h5netcdf")
    return folder / name


def _refused_by_figures_and_report(path: Path) -> list[str]:
    """The lines ``figures`` and ``report`` refuse the folder of ``path`` with; neither writes anything."""
    says = [refused(run_cli([command, str(path.parent)])).strip() for command in ("figures", "report")]
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    return says


HOFMAN = ("response_azimuth", "response_elevation", "target_azimuth", "target_elevation")


@pytest.mark.parametrize("name, ds, dim, command", [
    ("band_profile.nc", xr.Dataset({"share": (("snr", "channel", "band"), np.zeros((0, 2, 3)))},
                                   coords={"snr": np.zeros(0), "channel": ["ipd", "ild"], "band": [0, 1, 2]}),
     "snr", "binaural tfcnn probe"),
    ("responses.nc", xr.Dataset({k: ("example", np.zeros(0)) for k in HOFMAN}), "example", "binaural cues"),
    ("duplex.nc", xr.Dataset({"itd_weight": ("band", np.zeros(0)), "ild_weight": ("band", np.zeros(0))}), "band",
     "binaural cues"),
    ("cue_reliance.nc", xr.Dataset({"abs_share": (("cue", "band"), np.zeros((3, 0)))},
                                   coords={"cue": ["itd", "ild", "ic"]}), "band", "binaural cuenet probe"),
])
def test_a_binaural_result_with_an_empty_dimension_is_one_line(tmp_path, name, ds, dim, command):
    """A binaural result with no label along a dimension its figure and tables read is refused as damaged. review:
    band_profile.nc with no SNR and responses.nc with no example ended in a ValueError traceback (exit 1)."""
    from xai_loc.experiments.registry import result_for_file

    path = _result(tmp_path / "r", name, ds)
    what = result_for_file(name).what
    assert _refused_by_figures_and_report(path) == 2 * [
        f"Error: {what} {path} is not what it should be (its {dim!r} dimension is empty; it needs at least one "
        f"label); run 'xai-loc {command}' to rebuild it"]


def _sanity(bound) -> xr.Dataset:
    """A sanity result of one model and method, with the entries ``bound`` of its intervals."""
    sim = np.ones((1, 1, 2, 2)) * np.array([1.0, 0.2])[None, None, :, None]
    score = np.full((1, 1, 2), 0.3)
    ci = np.array([-0.1, 0.1, 0.2][:len(bound)])
    return xr.Dataset({"similarity": (("model", "method", "stage", "metric"), sim),
                       "similarity_ci": (("model", "method", "stage", "metric", "bound"), sim[..., None] + ci),
                       "score": (("model", "method", "check"), score),
                       "score_ci": (("model", "method", "check", "bound"), score[..., None] + ci)},
                      coords={"model": ["loccnn"], "method": ["saliency"], "stage": ["original", "top"],
                              "metric": ["spearman", "pearson"], "check": ["emprt", "spearman_targets"],
                              "bound": list(bound)},
                      attrs={"t60": 0.15, "snr": 25.0, "target": "truth", "n_windows": 4, "n_sources": 2,
                             "models": "{}"})


@pytest.mark.parametrize("bound, says", [(["low"], "('low')"), (["high", "low"], "('high', 'low')"),
                                         (["low", "high", "mid"], "('low', 'high', 'mid')")])
def test_a_bound_other_than_low_high_is_one_line(tmp_path, bound, says):
    """The readers take an interval's ends by position: a ``bound`` dimension must be exactly (low, high). review:
    sanity.nc sliced to bound=['low'] ended in an IndexError traceback; reversed, it would have been drawn upside
    down."""
    path = tmp_path / "r" / "sanity.nc"
    write_dataset_atomic(_sanity(bound), path)
    assert _refused_by_figures_and_report(path) == 2 * [
        f"Error: sanity-check result {path} is not what it should be (its 'bound' labels are {says}, expected "
        "('low', 'high')); run 'xai-loc sanity' to rebuild it"]


def test_a_sanity_result_with_low_high_is_still_drawn(tmp_path):
    """The check refuses only other bounds (the control of the test above). review: as above."""
    path = tmp_path / "r" / "sanity.nc"
    write_dataset_atomic(_sanity(["low", "high"]), path)
    result = run_cli(["figures", str(path.parent)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in path.parent.iterdir()) == ["sanity.nc", "sanity.pdf", "sanity.png"]
    one_bound = tmp_path / "s" / "sanity.nc"
    write_dataset_atomic(_sanity(["low"]), one_bound)
    assert refused(run_cli(["figures", str(one_bound.parent)]), "'bound' labels are ('low')")


# 3 -------------------------------------------------------------------------------------------------------------
def test_the_explorer_draws_each_gcc_curve_at_the_delay_its_caption_gives():
    """Four windows of independent noise on two microphones (GCC-PHAT curves with many lobes of similar height) and
    the delays tdoa.nc stores for them at 1/16 sample: each drawn curve peaks at its stored delay, drawn beside the
    half-sample lags. review: the curves were drawn at half-sample lags only, so the relevance curve of window 2
    peaked at -1 sample while its caption said -5.75."""
    from xai_loc.report.explorer import GccSettings, explorer_data

    rng = np.random.default_rng(0)
    fs, n, w = 16000.0, 512, 4
    coords = {"window": np.arange(w), "mic": [0, 1], "time": np.arange(n) / fs, "source_id": ("window", np.arange(w)),
              **{f"source_{k}": ("window", np.full(w, v)) for k, v in zip("xyz", (1.0, 2.0, 1.5), strict=True)},
              "mic_x": ("mic", [0.0, 0.15]), "mic_y": ("mic", [0.0, 0.0]), "mic_z": ("mic", [1.0, 1.0])}
    signals = xr.DataArray(rng.standard_normal((w, 2, n)), dims=("window", "mic", "time"), coords=coords,
                           attrs={"fs": fs}).to_dataset(name="signals")
    relevance = signals["signals"].copy(data=rng.standard_normal((w, 2, n)))
    stored = np.stack([tdoa(x[:, 0], x[:, 1], max_lag=8.0, interp=16) for x in (signals["signals"].values,
                                                                                relevance.values)])
    np.testing.assert_array_equal(stored, [[-6.9375, 4.1875, -0.3125, 7.375], [-5.25, -1.0625, -5.75, -1.75]])
    delay = xr.DataArray(stored[:, None], dims=("estimator", "pair", "window"),
                         coords={"estimator": ["signals", "m"], "pair": ["0-1"], "window": np.arange(w)})
    data = explorer_data(relevance, signals, GccSettings(fs, 343.0, 16, {"0-1": 8.0}, delay), "m", w)
    lags = np.array(data["lags"]["0-1"])
    # half-sample lags from -8 to 8, and the eight stored delays (none of them on that grid)
    np.testing.assert_array_equal(lags, np.sort(np.concatenate([np.arange(-16, 17) / 2, stored.ravel()])))
    half = lags * 2 == np.round(lags * 2)
    for k, window in enumerate(data["windows"]):
        gcc = window["gcc"]["0-1"]
        assert gcc["delay"] == {"signals": round(stored[0, k], 3), "relevance": round(stored[1, k], 3)}
        for row, key in enumerate(("signals", "relevance")):
            curve = np.array(gcc[key])
            assert lags[np.argmax(curve)] == stored[row, k]
    relevance_2 = np.array(data["windows"][2]["gcc"]["0-1"]["relevance"])
    assert lags[half][np.argmax(relevance_2[half])] == -1.0  # what the half-sample lags alone drew
