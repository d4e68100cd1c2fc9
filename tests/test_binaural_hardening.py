"""Review of the binaural paths: bad inputs refused in one line before any rendering, edge lags, one
mechanism for levels, draws and split sizes, the duplex relevance file's own name."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

from xai_loc.errors import InputError

FS = 48000
PRETRAINED = str(Path(__file__).resolve().parents[1] / "pretrained" / "{}_default.safetensors")


def _one_line(fn, *args, match: str, **kwargs) -> str:
    with pytest.raises(InputError, match=match) as err:
        fn(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def _tiny_cochcnn():
    from xai_loc.models import build_model

    torch.manual_seed(0)
    return build_model("cochcnn", layers=["c4 1x8", "p1x8", "c8 2x4", "p2x4"], n_samples=4800, dense=32).eval()


_SMALL_PROBE = {"bands": ("low",), "azimuths": (0.0,), "itd_offsets": (0.0, 300.0), "ild_offsets": (0.0, 10.0),
                "n_tokens": 1}


# -- 1. the duplex probe ---------------------------------------------------------------------------


@pytest.mark.parametrize("change, says", [
    ({"fs": 16000}, "fs=16000 does not match the model's fs=48000"),  # was: a probe at the wrong rate
    ({"n_samples": 2400}, "n_samples=2400 does not match the model's n_samples=4800"),  # was: a matmul traceback
    ({"level_db": float("nan")}, "level_db=nan is not allowed"),  # was: all-NaN stimuli, every answer class 0
    ({"level_db": 800.0}, "level_db=800.0 is not allowed"),
    ({"hrtf": "kemar"}, "hrtf must be an HRTFSet"),  # was: AttributeError
    ({"bands": ("low", "mid")}, r"bands=\('low', 'mid'\) is not allowed"),
])
def test_duplex_probe_refuses_what_it_cannot_honour(change, says):
    from xai_loc.experiments.cues import duplex_probe

    _one_line(duplex_probe, _tiny_cochcnn(), **{**_SMALL_PROBE, **change}, match=says)


def test_duplex_probe_takes_a_single_band_name():
    from xai_loc.experiments.cues import duplex_probe

    probe = duplex_probe(_tiny_cochcnn(), **{**_SMALL_PROBE, "bands": "low"})  # was: "band 'l' is not allowed"
    assert list(probe["band"].values) == ["low"]


def test_an_unknown_band_name_of_the_noise_is_one_line():
    from xai_loc.experiments.cues import band_noise, natural_cues

    _one_line(band_noise, "foo", 480, FS, np.random.default_rng(0), match="band 'foo' is not allowed")  # was: KeyError
    _one_line(natural_cues, "foo", match="band 'foo' is not allowed")


# -- 2. the CLI checks its target and options before rendering -----------------------------------


def _never_rendered(*args, **kwargs):
    raise AssertionError("the scenes were rendered before the bad input was refused")


@pytest.mark.parametrize("renderer, args, says", [
    ("xai_loc.data.bast_scenes.load_bast_scenes", ["bast", "explain", "--target", "foo"],
     "target='foo' is not allowed"),
    ("xai_loc.features.binaural_cues.simulate_cue_scenes", ["cuenet", "probe", "--option", "bogus=1"],
     "option 'bogus' is not allowed"),
])
def test_a_bad_target_or_option_is_refused_before_rendering(monkeypatch, tmp_path, renderer, args, says):
    """bast explain (target) and cuenet probe (options) rendered their whole test split before refusing."""
    from xai_loc.cli import main

    monkeypatch.setattr(renderer, _never_rendered)
    family = args[0]
    result = CliRunner().invoke(main, ["binaural", *args, "--data", str(tmp_path),
                                       "--checkpoint", PRETRAINED.format(family), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and says in result.output
    assert not (tmp_path / "out").exists()


# -- 3. a lag beyond the window is no measurement -------------------------------------------------


@pytest.mark.parametrize("band, envelope", [((200.0, 800.0), False), ("low", True)])
def test_a_lag_beyond_the_window_is_nan_not_the_window_edge(band, envelope):
    """A broad correlation peak beyond +-max_lag (1 ms) still rises at the window's edge: no lag was found."""
    from xai_loc.experiments.cues import band_noise, impose_itd, interaural_lag

    x = np.stack([band_noise(band, 4800, FS, np.random.default_rng(0))] * 2)
    lags = interaural_lag(impose_itd(x, np.array([-1200.0, 1200.0, 600.0]), FS), FS, envelope=envelope)
    assert np.isnan(lags[:2]).all()  # was: -1000 and 1000, read as measured
    assert lags[2] == pytest.approx(600.0, abs=15.0)


# -- 4. background counts --------------------------------------------------------------------------


@pytest.mark.parametrize("n_noise", [600, -1, 0, 2.5])
def test_a_spatialized_background_needs_a_count_the_grid_can_give(n_noise):
    from xai_loc.acoustics.binaural import render_binaural, synthesize

    sound = synthesize("click_train", 16000, 0.05)
    _one_line(render_binaural, sound, 90.0, 0.0, room=None, fs=16000, snr=10.0, background="spatialized",
              n_noise=n_noise, match=f"n_noise={n_noise!r} is not allowed; use an integer from 1 to 503")


@pytest.mark.parametrize("n_directions", [0, -3, 2.5])
def test_a_diffuse_background_needs_a_direction(n_directions):
    from xai_loc.acoustics.binaural import diffuse_noise
    from xai_loc.acoustics.hrtf import load_hrtf

    _one_line(diffuse_noise, 100, load_hrtf("kemar", fs=16000), np.random.default_rng(0), n_directions=n_directions,
              match=f"n_directions={n_directions!r} is not allowed")  # was: silent zeros


# -- 5. probe arguments ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cuenet_and_maps():
    from xai_loc.models import load_model

    model = load_model(PRETRAINED.format("cuenet"))
    n = 24
    maps = np.random.default_rng(0).standard_normal((n, *model.cue_shape)).astype(np.float32)
    ds = xr.Dataset({"cues": (("example", "cue", "band", "frame"), maps)},
                    coords={"example": np.arange(n), "azimuth": ("example", np.arange(0, 360, 15.0)),
                            "frequency": ("band", model.centre_frequencies)},
                    attrs={"front_end": json.dumps(model.cue_options)})
    return model, ds


def test_the_tfcnn_probe_needs_an_snr():
    from xai_loc.experiments.ipd_ild_probe import run_ipd_ild_probe

    ds = xr.Dataset({"waveforms": (("example", "ear", "time"), np.zeros((2, 2, 16000), np.float32))},
                    coords={"azimuth": ("example", [0.0, 30.0]), "snr": ("example", [0.0, 0.0])})
    _one_line(run_ipd_ild_probe, PRETRAINED.format("tfcnn"), ds, "unused", snrs=[],
              match=r"snrs=\[\] is not allowed")  # was: an xarray concat error


@pytest.mark.parametrize("max_examples", [-1, 0, 2.5, True])
def test_probe_cues_needs_a_whole_positive_count(cuenet_and_maps, max_examples):
    from xai_loc.experiments.cue_probe import probe_cues

    model, ds = cuenet_and_maps
    _one_line(probe_cues, model, ds, max_examples=max_examples, match=f"max_examples={max_examples!r} is not allowed")


@pytest.mark.parametrize("split_hz", [-5.0, 0.0, 1e6, float("nan")])
def test_the_ablation_split_must_leave_bands_on_both_sides(cuenet_and_maps, split_hz):
    from xai_loc.experiments.cue_probe import cue_ablation

    model, ds = cuenet_and_maps
    _one_line(cue_ablation, model, ds, split_hz=split_hz, match=f"split_hz={split_hz!r} is not allowed")


@pytest.mark.parametrize("azimuth_bin", [0, -30.0, 200.0, float("nan")])
def test_hofman_bins_must_be_a_positive_width_up_to_a_half_circle(azimuth_bin):
    from xai_loc.experiments.cues import behaviour_statistics

    az = np.repeat(np.arange(0.0, 360.0, 30.0), 2)
    ds = xr.Dataset({"response_azimuth": ("example", az), "response_elevation": ("example", np.zeros_like(az))},
                    coords={"target_azimuth": ("example", az), "target_elevation": ("example", np.zeros_like(az))})
    _one_line(behaviour_statistics, ds, azimuth_bin=azimuth_bin, match=f"azimuth_bin={azimuth_bin!r} is not allowed")


# -- 6. one threshold for measuring the ITD on the envelope ---------------------------------------


def test_natural_cues_and_the_relevance_view_switch_to_the_envelope_at_the_same_frequency():
    from xai_loc.acoustics.hrtf import load_hrtf
    from xai_loc.experiments.cues import DUPLEX_SPLIT_HZ, _band_filter, interaural_lag, natural_cues

    band = (DUPLEX_SPLIT_HZ + 500.0, 2800.0)  # was: fine structure below 3 kHz here, the envelope in the view
    lateral = np.array([-30.0, 0.0, 30.0])
    hrtf = load_hrtf("kemar", fs=FS)
    h = _band_filter(hrtf.interpolate(np.mod(lateral, 360.0), np.zeros_like(lateral)), band, FS)
    np.testing.assert_array_equal(natural_cues(band, lateral, fs=FS)["itd"], interaural_lag(h, FS, envelope=True))


# -- 7. binaural dataset specs ---------------------------------------------------------------------


@pytest.mark.parametrize("change, says", [
    ({"t_diff": 1e-4}, r"t_diff=0.0001 is not allowed; use seconds from 0.0261 \(the direct sound has passed\) "
                       r"to 0.4 \(the shortest T60"),  # was: a ValueError deep in the image sources
    ({"t_diff": 5.0}, "t_diff=5.0 is not allowed"),  # was: refused only when the first BRIR was rendered
    ({"snr": (300.0, 300.0)}, r"snr=\(300.0, 300.0\) is not allowed; use \(low, high\) dB with -60 <= low"),
    ({"level_db": (800.0, 800.0)}, r"level_db=\(800.0, 800.0\) is not allowed; use \(low, high\) dB with -100"),
])
def test_a_binaural_spec_refuses_what_would_fail_while_rendering(change, says):
    from xai_loc.data.binaural_store import BinauralSpec

    _one_line(BinauralSpec, name="x", rooms=("anechoic", "office"), **change, match=says)


def test_binaural_rirs_refuse_a_tail_before_the_direct_sound():
    from xai_loc.acoustics.binaural import ROOMS

    _one_line(ROOMS["office"].brirs, [0.0], [0.0], fs=16000, t_diff=1e-4, match="t_diff=0.0001 s starts the diffuse")


# -- 8. one draw for the plan and the rendering ---------------------------------------------------


def test_the_stored_labels_and_the_waveforms_come_from_one_draw(monkeypatch, tmp_path):
    from xai_loc.data import binaural_store

    spec = binaural_store.BinauralSpec(name="d", rooms=("anechoic",), kinds=("white_burst",), n_sounds=2,
                                       per_sound=2, test_fraction=0.5, duration=0.02, snr=None)
    real = binaural_store._draw

    def fixed_label(*args):
        drawn, rng = real(*args)
        return {**drawn, "label": 18}, rng  # azimuth 90 (left)

    monkeypatch.setattr(binaural_store, "_draw", fixed_label)
    store = binaural_store.open_binaural(binaural_store.simulate_binaural(spec, "test", root=tmp_path,
                                                                          progress=False))
    assert (store["label"].values == 18).all()
    waves = store["waveforms"].values.astype(np.float64)
    assert ((waves[:, 0] ** 2).sum(-1) > 2 * (waves[:, 1] ** 2).sum(-1)).all()  # rendered on the left too


# -- 9. one level mechanism, one test-share rule ---------------------------------------------------


def test_scale_to_level_sets_the_rms_and_refuses_silence():
    from xai_loc.acoustics.binaural import REFERENCE_RMS, scale_to_level

    x = np.random.default_rng(0).standard_normal((3, 2, 100))
    y = scale_to_level(x, 6.0)
    np.testing.assert_allclose(np.sqrt(np.mean(y ** 2, axis=(1, 2))), REFERENCE_RMS * 10 ** (6 / 20), rtol=1e-12)
    _one_line(scale_to_level, np.zeros((2, 100)), 0.0, match="zero")  # was: NaN (TF-CNN) or silent scenes


@pytest.mark.parametrize("family", ["binaural", "tfcnn", "bast", "duplex"])
def test_every_scene_renderer_sets_levels_through_the_one_helper(monkeypatch, tmp_path, family):
    import xai_loc.acoustics.binaural as binaural

    calls = []
    real = binaural.scale_to_level

    def spy(x, level_db):
        calls.append(float(np.max(level_db)))
        return real(x, level_db)

    monkeypatch.setattr(binaural, "scale_to_level", spy)
    if family == "binaural":
        from xai_loc.data.binaural_store import BinauralSpec, render_examples

        render_examples(BinauralSpec(name="l", rooms=("anechoic",), kinds=("white_burst",), n_sounds=2, per_sound=1,
                                     duration=0.02, snr=None), [0])
    elif family == "tfcnn":
        from xai_loc.data.ipd_ild_scenes import SceneSpec, render_split

        render_split(SceneSpec(name="l", azimuths=(-30.0, 30.0), n_train=1, test_per_azimuth=1, test_snrs=(0.0,),
                               duration=0.02), "test")
    elif family == "bast":
        from xai_loc.data.bast_scenes import BastSceneSpec, render_bast_scenes

        render_bast_scenes(BastSceneSpec(name="l", azimuths=(90.0,), kinds=("white_burst",), n_sounds=2,
                                         test_fraction=0.5), "test", root=tmp_path)
    else:
        from xai_loc.experiments.cues import duplex_probe

        duplex_probe(_tiny_cochcnn(), **_SMALL_PROBE)
    assert calls


def test_a_test_share_that_leaves_no_utterance_is_refused():
    from xai_loc.data import ipd_ild_scenes

    # 0.3 of the 300 utterances: was rounded up to one test utterance here, refused for the cue network
    _one_line(ipd_ild_scenes.SceneSpec, test_fraction=0.001,
              match="test_fraction=0.001 leaves the test split without utterances")


# -- 10. the duplex relevance has its own file name -----------------------------------------------


def test_the_duplex_relevance_is_written_and_drawn_as_duplex_relevance_nc(monkeypatch, tmp_path):
    import xai_loc.experiments.cues as cues
    import xai_loc.plots.hofman as hofman
    from xai_loc.io import write_dataset_atomic
    from xai_loc.plots.redraw import DRAWERS

    def result(name):
        return lambda *args, **kwargs: xr.Dataset({name: ("band", [1.0])}, attrs={"seed": 0})

    monkeypatch.setattr(cues, "duplex_probe", result("itd_weight"))
    monkeypatch.setattr(cues, "duplex_relevance", result("lag_slope"))
    paths = cues.run_duplex_probe(_tiny_cochcnn(), tmp_path / "new", n_tokens=1)
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["duplex.nc", "duplex_relevance.nc"]
    assert paths["relevance"].name == "duplex_relevance.nc"

    drawn = []
    monkeypatch.setattr(hofman, "draw_duplex", lambda ds, path, view: drawn.append(view) or [])
    probe = xr.load_dataset(paths["duplex"])
    DRAWERS["duplex"](probe, paths["duplex"])
    assert drawn[-1] is not None and "lag_slope" in drawn[-1]
    # a folder written before the new name: its duplex view under the cue network's file name still counts
    old = tmp_path / "old"
    write_dataset_atomic(probe, old / "duplex.nc")
    write_dataset_atomic(xr.load_dataset(paths["relevance"]), old / "cue_relevance.nc")
    DRAWERS["duplex"](probe, old / "duplex.nc")
    assert drawn[-1] is not None and "lag_slope" in drawn[-1]


# -- 11. the cue probe's counts and its store ------------------------------------------------------


def test_the_laterality_counts_are_the_examples_the_shares_average():
    from xai_loc.experiments.cue_probe import reliance_table

    n, rng = 6, np.random.default_rng(0)
    rel = rng.standard_normal((n, 3, 4))
    rel[1] = 0.0  # no relevance: left out of the shares
    relevance = xr.Dataset(
        {"relevance": (("example", "cue", "band"), rel), "fusion_relevance": (("example", "cue"), rel.sum(-1)),
         "attention": (("example", "cue"), np.full((n, 3), 1 / 3)), "logit": ("example", np.ones(n))},
        coords={"cue": ["itd", "ild", "ic"], "frequency": ("band", [200.0, 500.0, 2000.0, 5000.0]),
                "azimuth": ("example", [0.0, 10.0, 30.0, 40.0, 60.0, 90.0])})
    table = reliance_table(relevance)
    assert table.attrs["n_examples"] == 5 and list(table["n_by_laterality"].values) == [1, 2, 2]  # was: [2, 2, 2]


def test_the_cue_probe_opens_its_store_once(monkeypatch, tmp_path, cuenet_and_maps):
    import xai_loc.data.cue_scenes as cue_scenes
    from xai_loc.experiments.cue_probe import run_cue_probe

    model, ds = cuenet_and_maps
    opened = []
    monkeypatch.setattr(cue_scenes, "open_cue_scenes", lambda path: opened.append(path) or ds)
    run_cue_probe(model, tmp_path / "store.zarr", tmp_path / "out", max_examples=4)
    assert opened == [tmp_path / "store.zarr"]  # was: opened and verified twice


def test_every_scene_spec_checks_its_snrs_against_one_range():
    """Review: the IPD/ILD test SNRs and the cue scenes' SNR range were only checked for finiteness, then failed
    while rendering."""
    from xai_loc.data.cue_scenes import CueSceneSpec
    from xai_loc.data.ipd_ild_scenes import SceneSpec

    with pytest.raises(InputError, match=r"^snr=\(-100\.0, 0\.0\) is not allowed; .* in \[-60, 200\]$"):
        CueSceneSpec(snr=(-100, 0))
    with pytest.raises(InputError, match=r"^test_snrs=\(-100\.0,\) is not allowed; give dB values in \[-60, 200\]$"):
        SceneSpec(test_snrs=(-100.0,))
