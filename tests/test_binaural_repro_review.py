"""Review: the default binaural scene specs render the data the shipped models were trained on again.

Commit 28ba601 made bilinear the default HRIR interpolation, and the diffuse backgrounds of the
BAST, TF-CNN and cochleagram scenes took the default, not their spec's: the same spec digest
rendered other waveforms (0.02 off at an RMS of 0.07), and the shipped BAST and TF-CNN no longer
scored their cards. BastSceneSpec and SceneSpec now record ``interp`` (default barycentric, as the
shipped data, left out of their digests there), and every spec's background follows its ``interp``.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line

from xai_loc.acoustics import binaural
from xai_loc.acoustics.hrtf import HRTFSet
from xai_loc.data import bast_scenes, binaural_store, ipd_ild_scenes
from xai_loc.models.checkpoint import read_card

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"


@contextmanager
def barycentric_everywhere():
    """Every HRIR lookup barycentric (nearest stays nearest), whatever its caller asks for."""
    weights = HRTFSet.weights

    def forced(self, azimuth, elevation, method="bilinear"):
        return weights(self, azimuth, elevation, "nearest" if method == "nearest" else "barycentric")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(HRTFSet, "weights", forced)
        yield


def _ipd(**kw) -> ipd_ild_scenes.SceneSpec:
    return ipd_ild_scenes.SceneSpec(name="t", azimuths=(-30.0, 30.0), n_train=1, test_per_azimuth=1,
                                    test_snrs=(0.0,), duration=0.05, **kw)


def _bast(**kw) -> bast_scenes.BastSceneSpec:
    return bast_scenes.BastSceneSpec(name="t", azimuths=(30.0, 90.0), kinds=("pink_burst",), n_sounds=2,
                                     test_fraction=0.5, snr=(0.0, 0.0), **kw)


def _bast_waves(spec, root) -> np.ndarray:
    return bast_scenes.load_bast_scenes(spec, "test", root=root).waveforms.values


def _far_apart(a: np.ndarray, b: np.ndarray) -> bool:
    return np.abs(a - b).max() > 0.01 * np.sqrt(np.mean(a.astype(np.float64) ** 2))


def test_default_tfcnn_scenes_render_their_background_barycentric():
    default = ipd_ild_scenes.render_split(_ipd(), "test").waveforms.values
    with barycentric_everywhere():
        np.testing.assert_array_equal(default, ipd_ild_scenes.render_split(_ipd(), "test").waveforms.values)
    assert _far_apart(default, ipd_ild_scenes.render_split(_ipd(interp="bilinear"), "test").waveforms.values)


def test_default_bast_scenes_render_their_background_barycentric(tmp_path):
    default = _bast_waves(_bast(), tmp_path / "default")
    with barycentric_everywhere():
        np.testing.assert_array_equal(default, _bast_waves(_bast(), tmp_path / "forced"))
    assert _far_apart(default, _bast_waves(_bast(interp="bilinear"), tmp_path / "bilinear"))


def test_a_barycentric_binaural_spec_renders_its_background_barycentric():
    # the shipped cochleagram CNN's data (COCHCNN_DATA): its image sources were barycentric, its background not
    spec = binaural_store.BinauralSpec(name="t", rooms=("anechoic",), kinds=("pink_burst",), n_sounds=1,
                                       per_sound=2, duration=0.05, fs=16000, interp="barycentric")
    made = binaural_store.render_examples(spec, [0])[0]
    with barycentric_everywhere():
        np.testing.assert_array_equal(made, binaural_store.render_examples(spec, [0])[0])


def test_render_binaural_gives_its_background_the_targets_interpolation():
    sound = binaural.synthesize("pink_burst", 16000, 0.05, seed=1)
    kw = {"room": None, "fs": 16000, "snr": 0.0, "seed": 2}
    made = binaural.render_binaural(sound, 90.0, 0.0, interp="barycentric", **kw)
    with barycentric_everywhere():
        np.testing.assert_array_equal(made, binaural.render_binaural(sound, 90.0, 0.0, **kw))
    assert _far_apart(made, binaural.render_binaural(sound, 90.0, 0.0, **kw))  # bilinear, the default


def test_default_specs_keep_their_digests_and_bilinear_gets_its_own():
    # digests taken before interp was a field: the stores and cards of these specs stay theirs
    assert bast_scenes.BastSceneSpec().digest() == "fbcd7fca68e6adab"
    assert bast_scenes.BastSceneSpec(name="bast-120").digest() == "813c11e64ee314c3"
    assert ipd_ild_scenes.SceneSpec().digest() == "4b1fa8010608beb0"
    for spec in (bast_scenes.BastSceneSpec(), ipd_ild_scenes.SceneSpec()):
        assert spec.interp == "barycentric" and "interp" not in spec.to_dict()
        other = type(spec)(interp="bilinear")
        assert other.to_dict()["interp"] == "bilinear" and other.digest() != spec.digest()
        assert type(spec).from_dict(other.to_dict()) == other and type(spec).from_dict(spec.to_dict()) == spec


def test_shipped_cards_record_the_digests_of_the_specs_they_name():
    bast = read_card(PRETRAINED / "bast_default.safetensors")["dataset"]
    spec = bast_scenes.BastSceneSpec.from_dict(bast["spec"])
    assert spec.interp == "barycentric" and spec.digest() == bast["digest"]
    tfcnn = read_card(PRETRAINED / "tfcnn_default.safetensors")["dataset"]
    spec = ipd_ild_scenes.SceneSpec.from_dict(tfcnn["train"]["spec"])
    assert spec.interp == "barycentric" and spec.digest() == tfcnn["train"]["spec_digest"] \
        == tfcnn["test"]["spec_digest"]


@pytest.mark.parametrize("make", [bast_scenes.BastSceneSpec, ipd_ild_scenes.SceneSpec])
@pytest.mark.parametrize("bad", ["linear", "Bilinear", None, 3])
def test_an_unknown_interpolation_is_refused_in_one_line(make, bad):
    assert one_line(make, interp=bad) == \
        f"interp={bad!r} is not allowed; use one of nearest, bilinear, barycentric"
    assert one_line(make.from_dict, {"interp": bad}) == \
        f"interp={bad!r} is not allowed; use one of nearest, bilinear, barycentric"
