"""Review 3 of the binaural experiments: BAST's lateral error, the BAST card's baseline, the cue probe of a model
without relevance, the duplex and behaviour results' provenance."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr
from test_cues import _tiny_model

from xai_loc import __version__
from xai_loc.models.bast import _azimuth_scores

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"


# -- 1. an answer on the median plane is on neither side ----------------------------------------------


def test_an_answer_on_the_median_plane_is_a_lateral_sign_error():
    """Review: 0 deg counted as the right side (sin 0 = 0 is no sign error) and 180 deg as left (sin 180 deg is
    1.2e-16), so always answering 0 deg scored a perfect 0.0 and always 180 deg 0.5."""
    truth = np.array([90.0, 270.0, 60.0, 300.0])
    for answer in (0.0, 180.0, 360.0, -180.0):
        assert _azimuth_scores(np.full(4, answer), truth)["lateral_sign_error"] == 1.0
    assert _azimuth_scores(truth + 5.0, truth)["lateral_sign_error"] == 0.0
    assert _azimuth_scores(np.array([10.0, 190.0, 181.0, 179.0]), truth)["lateral_sign_error"] == 0.5


# -- 2. the shipped BAST card records its trivial baseline ----------------------------------------------


def test_the_bast_card_records_the_always_0_degrees_baseline_of_its_test_split():
    """Review: the card had no baseline, so ``models list`` showed none for BAST. Re-scored on the card's own test
    split (every test sound at every azimuth): 90 deg mean, 24 and 72 of 864 scenes within 5 and 10 deg; the
    model's numbers stay those of training, which reproduce; weights unchanged."""
    from xai_loc.data.bast_scenes import BastSceneSpec
    from xai_loc.models.checkpoint import read_card, weights_digest

    path = PRETRAINED / "bast_default.safetensors"
    card = read_card(path)
    spec = BastSceneSpec.from_dict(card["dataset"]["spec"])
    truth = np.tile(np.asarray(spec.azimuths), spec.sound_ids("test").size)
    test = card["metrics"]["test"]
    assert test["baseline"] == {"kind": "always 0 degrees", "metrics": _azimuth_scores(np.zeros(truth.size), truth)}
    baseline = test["baseline"]["metrics"]
    assert baseline["n"] == truth.size == 864 and baseline["mean_error"] == 90.0
    assert baseline["accuracy_5"] == 24 / 864 and baseline["accuracy_10"] == 72 / 864
    assert baseline["front_back_rate"] == 0.5 and baseline["lateral_sign_error"] == 1.0
    assert test["metrics"]["mean_error"] == 15.540812748227578 and test["metrics"]["lateral_sign_error"] == 0.0
    assert card["rescored"]["date"] == "2026-12-07" and "weights unchanged" in card["rescored"]["why"]
    assert weights_digest(path) == card["weights_sha256"] == \
        "f45f76db56438e6573deb1e58288e3718c25605aa73429b4e1a38863ff3b7d9c"


# -- 3. the cue probe of a model without relevance ------------------------------------------------------


def _relevance(rel: np.ndarray, fusion: np.ndarray) -> xr.Dataset:
    n = len(rel)
    return xr.Dataset({"relevance": (("example", "cue", "band"), rel), "fusion_relevance": (("example", "cue"), fusion),
                       "attention": (("example", "cue"), np.full((n, 3), 1 / 3)), "logit": ("example", np.ones(n))},
                      coords={"cue": ["itd", "ild", "ic"], "frequency": ("band", [500.0, 4000.0]),
                              "azimuth": ("example", np.linspace(0.0, 90.0, n))})


def test_a_cue_network_without_relevance_has_no_winning_cue():
    """Review: relevance zero everywhere (a head of zero weights) made every share NaN and the band's winner an
    arg-max over NaN: "All-NaN slice encountered", the probe's command ended with exit code 1."""
    from xai_loc.experiments.cue_probe import reliance_table

    table = reliance_table(_relevance(np.zeros((4, 3, 2)), np.zeros((4, 3))))
    assert table["reliance"].values.tolist() == ["none", "none"] and table.attrs["n_examples"] == 0
    assert table["abs_share"].isnull().all() and table["fusion_share"].isnull().all()
    assert table["n_by_laterality"].values.tolist() == [0, 0, 0]
    np.testing.assert_allclose(table["attention_mean"].values, 1 / 3)
    # the shares average the examples with relevance, the fusion shares those with relevance after the attention
    rel = np.zeros((4, 3, 2))
    rel[1] = [[1.0, 0.0], [0.0, 3.0], [0.0, 0.0]]  # ild wins the high band, itd the low one
    rel[2] = [[2.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
    fusion = rel.sum(-1)
    fusion[2] = 0.0  # relevance on the map, none after the attention: no fusion share of its own
    table = reliance_table(_relevance(rel, fusion))
    assert table["reliance"].values.tolist() == ["itd", "ild"] and table.attrs["n_examples"] == 2
    np.testing.assert_allclose(table["abs_share"].values, [[0.375, 0.0], [0.0, 0.5], [0.0, 0.125]], rtol=0,
                               atol=1e-15)
    np.testing.assert_allclose(table["fusion_share"].values, [0.25, 0.75, 0.0], rtol=0, atol=1e-15)
    # final review: a band without relevance in any example has no winner either
    rel = np.zeros((4, 3, 2))
    rel[1, 1, 0] = 2.0  # ild, in the low band only
    table = reliance_table(_relevance(rel, rel.sum(-1)))
    assert table["reliance"].values.tolist() == ["ild", "none"]


# -- 4. the duplex and behaviour results record the version and the explainer ---------------------------


def test_the_duplex_results_record_the_version_and_the_explainers_provenance(tmp_path):
    """Review: duplex.nc, duplex_relevance.nc and responses.nc had no xai_loc_version, and the relevance view kept
    five of the explainer's attrs (no method, software or version)."""
    from xai_loc.data.binaural_store import BinauralSpec, simulate_binaural
    from xai_loc.experiments.cues import duplex_probe, duplex_relevance, run_behaviour
    from xai_loc.explain.cochcnn import explain_cochcnn

    model = _tiny_model()
    probe = duplex_probe(model, bands=("low",), azimuths=(0.0, 30.0), n_tokens=1)
    assert probe.attrs["xai_loc_version"] == __version__
    view = duplex_relevance(model, bands=("low",), azimuths=(0.0, 30.0), itd_offsets=(0.0, 300.0))
    explainer = explain_cochcnn(model, np.zeros((1, 2, 4800), np.float32))["waveform"].attrs
    assert {k: v for k, v in view.attrs.items() if k not in ("probe", "seed")} == \
        {k: v for k, v in explainer.items() if k != "level"}
    assert view.attrs["method"] == "lrp" and view.attrs["xai_loc_version"] == __version__
    assert set(json.loads(view.attrs["software"])) >= {"torch", "numpy"}
    view.to_netcdf(tmp_path / "duplex_relevance.nc")  # every attr storable
    assert xr.open_dataset(tmp_path / "duplex_relevance.nc").attrs["method_params"] == view.attrs["method_params"]

    spec = BinauralSpec(name="b", rooms=("anechoic",), kinds=("white_burst",), n_sounds=4, per_sound=2,
                        test_fraction=0.5, duration=0.1, snr=None)
    store = simulate_binaural(spec, "test", root=tmp_path, progress=False)
    responses = xr.open_dataset(run_behaviour(model, store, tmp_path / "out")["responses"])
    assert responses.attrs["xai_loc_version"] == __version__
