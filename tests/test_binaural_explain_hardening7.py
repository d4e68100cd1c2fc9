"""binaural explain: the targets its help names are the ones each family takes, another family's explanation in --out
is refused before explaining, and a damaged store names the command that rebuilds it."""
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import xarray as xr
from helpers import TINY, never, one_line, refused, run_cli

import xai_loc.explain.binaural  # noqa: F401 - patched below through sys.modules
from xai_loc.explain.targets import TARGETS, targets_for
from xai_loc.models import MODELS

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"

CLASS_TARGETS = ("class_logit, true_class_logit, class_contrast, class_probability (not with LRP: use class_log_odds), "
                 "true_class_probability (not with LRP: use true_class_log_odds), class_log_odds, true_class_log_odds")


def _checkpoint(arch: str) -> str:
    return str(PRETRAINED / f"{arch}_default.safetensors")


@pytest.fixture
def stereo16k(tmp_path):
    """One second of stereo noise at 16 kHz: one TF-CNN window, two BAST windows."""
    path = tmp_path / "st16.wav"
    sf.write(path, np.random.default_rng(0).standard_normal((16000, 2)) * 0.05, 16000)
    return path


def _tiny(arch: str, **config):
    torch.manual_seed(0)
    return MODELS[arch](**{**TINY[arch], **config}).eval()


# ------------------------------------------------------------------------------------ 1. the targets of --help
def test_the_help_says_what_each_output_kind_takes():
    """review: the help offered 'prediction (default)' and the targets of xai_loc.explain.targets_for for every
    family, but the TF-CNN refused 'prediction' and BAST every registered target; now it lists, from the
    registries, exactly what each output kind takes."""
    result = run_cli(["binaural", "explain", "--help"], terminal_width=400)
    assert result.exit_code == 0
    assert ("--target TEXT Explained output [default: prediction: the model's own answer], by the model's output kind "
            "(tfcnn --head multitask: direction_classes): direction_classes (cochcnn, cuenet): prediction, truth, "
            f"a class index, {CLASS_TARGETS}; azimuth (tfcnn): prediction, azimuth, toward_truth, angular_error; "
            "cos_sin (bast): prediction, truth, cos, sin, an azimuth in degrees, direction, true_direction, azimuth, "
            "angular_error. --composite") in " ".join(result.output.split())


def test_every_name_the_help_lists_is_taken_and_others_are_refused_in_one_line():
    """review: BAST refused 'azimuth', 'direction', 'true_direction' and 'angular_error', the TF-CNN 'prediction';
    now every listed name resolves to a registered target of the model's output kind, and a refusal lists the same
    names as the help."""
    from xai_loc.explain.binaural import TARGET_NAMES, binaural_target, explain_ears

    models = {"cochcnn": _tiny("cochcnn"), "cuenet": _tiny("cuenet"), "tfcnn": _tiny("tfcnn"),
              "tfcnn multitask": _tiny("tfcnn", head="multitask"), "bast": _tiny("bast")}
    for model in models.values():
        kind = model.output_kind
        for name in (*TARGET_NAMES[kind].shortcuts, *targets_for(kind)):
            target, _ = binaural_target(model, name)
            assert kind in TARGETS[target].kinds, (kind, name, target)
    assert binaural_target(models["tfcnn"], "prediction") == ("azimuth", {})
    assert binaural_target(models["tfcnn multitask"], "prediction") == ("class_logit", {})
    assert binaural_target(models["tfcnn multitask"], 3) == ("class_logit", {"cls": 3})
    assert binaural_target(models["cochcnn"], "truth") == ("true_class_logit", {})
    assert binaural_target(models["bast"], "prediction") == ("direction", {})
    assert binaural_target(models["bast"], "truth") == ("true_direction", {})
    assert binaural_target(models["bast"], "sin") == ("direction", {"azimuth": 90.0})
    assert binaural_target(models["bast"], 30) == ("direction", {"azimuth": 30.0})
    assert binaural_target(models["bast"], "angular_error") == ("angular_error", {})
    assert one_line(binaural_target, models["tfcnn"], "truth") == (
        "target='truth' is not allowed; use 'prediction' or one of azimuth, toward_truth, angular_error")
    assert one_line(binaural_target, models["tfcnn"], 5) == (
        "target=5 is not allowed; use 'prediction' or one of azimuth, toward_truth, angular_error")
    assert one_line(binaural_target, models["tfcnn multitask"], 37) == (
        "target=37 is not allowed; use 'prediction', 'truth', a class in 0..36 or one of "
        "class_logit, true_class_logit, class_contrast, class_probability, true_class_probability, class_log_odds, "
        "true_class_log_odds")
    x = 0.05 * np.random.default_rng(1).standard_normal((1, 2, models["tfcnn multitask"].n_samples))
    assert one_line(explain_ears, models["tfcnn multitask"], x, target=3, cls=4) == (
        "cls= is not allowed with target=3, which sets it; leave it out")
    assert explain_ears(models["tfcnn multitask"], x, target=3)["cues"].attrs["target_params"] == '{"cls": 3}'
    assert one_line(binaural_target, models["bast"], "elevation") == (
        "target='elevation' is not allowed; use 'prediction', 'truth', 'cos', 'sin', an azimuth in degrees or one of "
        "direction, true_direction, azimuth, angular_error")


def test_the_tfcnn_explains_its_prediction_as_by_default(stereo16k, tmp_path):
    """review: 'binaural explain tfcnn_default --target prediction' said "target 'prediction' does not fit a model
    whose output is 'azimuth'"; now it is the default explanation (the predicted azimuth), byte for byte, and a
    target the TF-CNN does not take is one line naming what it takes, nothing written."""
    default, given = tmp_path / "default", tmp_path / "prediction"
    assert run_cli(["binaural", "explain", _checkpoint("tfcnn"), str(stereo16k), "--out", str(default)]).exit_code == 0
    assert run_cli(["binaural", "explain", _checkpoint("tfcnn"), str(stereo16k), "--target", "prediction",
                    "--out", str(given)]).exit_code == 0
    for level in ("waveform.nc", "cues.nc"):
        assert (default / level).read_bytes() == (given / level).read_bytes()
    with xr.open_dataset(given / "cues.nc") as cues:
        assert cues["relevance"].attrs["target"] == "predicted azimuth (degrees)"
    result = run_cli(["binaural", "explain", _checkpoint("tfcnn"), str(stereo16k), "--target", "truth",
                      "--out", str(tmp_path / "truth")])
    assert refused(result) == ("Error: target='truth' is not allowed; use 'prediction' or one of azimuth, "
                               "toward_truth, angular_error\n")
    assert not (tmp_path / "truth").exists()


def test_bast_explains_the_registered_targets_of_its_output(stereo16k, tmp_path):
    """review: BAST refused --target azimuth ("use one of prediction, truth, cos, sin or an azimuth in degrees");
    now AttnLRP explains the predicted azimuth in degrees: what reaches the input plus what the network absorbs is
    that angle, wrapped to (-180, 180]."""
    out = tmp_path / "azimuth"
    assert run_cli(["binaural", "explain", _checkpoint("bast"), str(stereo16k), "--target", "azimuth",
                    "--out", str(out)]).exit_code == 0
    with xr.open_dataset(out / "spectrogram.nc") as spec:
        wrapped = np.mod(spec["azimuth_pred"].values + 180.0, 360.0) - 180.0
        np.testing.assert_allclose(spec["output"].values, wrapped, atol=1e-4)  # float32 angles of ~180 degrees
        absorbed = sum(spec[name].values for name in spec.coords if name.startswith("absorbed_"))
        np.testing.assert_allclose(spec["relevance_sum"].values + absorbed, spec["output"].values, rtol=1e-4)
        assert spec["relevance"].attrs["target"] == "azimuth" and abs(spec["output"].values).min() > 1.0
    result = run_cli(["binaural", "explain", _checkpoint("bast"), str(stereo16k), "--target", "elevation",
                      "--out", str(tmp_path / "elevation")])
    assert refused(result) == ("Error: target='elevation' is not allowed; use 'prediction', 'truth', 'cos', 'sin', an "
                               "azimuth in degrees or one of direction, true_direction, azimuth, angular_error\n")


def test_bast_explains_its_angular_error_against_a_stores_truth(tmp_path):
    """review: BAST refused --target angular_error and true_direction; now they take the store's true azimuths:
    the explained angular error is the angle between prediction and truth, and true_direction is 'truth'."""
    from xai_loc.data import bast_scenes

    spec = bast_scenes.BastSceneSpec(name="t", azimuths=(60.0, 300.0), kinds=("white_burst",), n_sounds=4,
                                     test_fraction=0.5)
    store = bast_scenes.render_bast_scenes(spec, "test", root=tmp_path / "data")
    with bast_scenes.BAST_SCENES.open(store) as ds:
        truth = ds["azimuth"].values[:2]
    np.testing.assert_array_equal(truth, [60.0, 300.0])
    args = ["binaural", "explain", _checkpoint("bast"), str(store), "--examples", "2", "--out"]
    for target in ("angular_error", "true_direction", "truth"):
        assert run_cli([*args, str(tmp_path / target), "--target", target]).exit_code == 0
    with xr.open_dataset(tmp_path / "angular_error" / "spectrogram.nc") as error:
        step = np.mod(error["azimuth_pred"].values - truth + 180.0, 360.0) - 180.0
        np.testing.assert_allclose(error["output"].values, np.abs(step), atol=1e-4)
        assert (error["output"].values > 0.1).all()
    with xr.open_dataset(tmp_path / "truth" / "waveform.nc") as by_truth, \
            xr.open_dataset(tmp_path / "true_direction" / "waveform.nc") as by_name:
        np.testing.assert_array_equal(by_truth["relevance"].values, by_name["relevance"].values)


# ------------------------------------------------------------------------------- 2. --out checked before the work
@pytest.mark.parametrize("arch, extra, stale", [
    ("tfcnn", [], "spectrogram.nc"),  # the reviewer's case: a BAST explanation there
    ("cochcnn", [], "cues.nc"),
    ("cuenet", [], "waveform.nc"),
    ("bast", [], "cochleagram.nc"),
    ("bast", ["--method", "integrated_gradients"], "waveform.nc"),  # an AttnLRP explanation's waveform level
])
def test_another_explanation_in_out_is_refused_before_explaining(arch, extra, stale, stereo16k, tmp_path, monkeypatch):
    """review: 'binaural explain tfcnn_default st16.wav --out o6' with an earlier BAST explanation in o6 ran the
    whole explanation ('explain lrp: 100%'), then refused; now the refusal comes before any work."""
    monkeypatch.setattr(sys.modules["xai_loc.explain.binaural"], "explain_ears", never("the explanation"))
    monkeypatch.setattr(sys.modules["xai_loc.explain.binaural"], "read_ear_examples", never("reading INPUTS"))
    out = tmp_path / "out"
    out.mkdir()
    (out / stale).write_bytes(b"earlier")
    result = run_cli(["binaural", "explain", _checkpoint(arch), str(stereo16k), *extra, "--out", str(out)])
    assert refused(result) == (f"Error: {out} holds {stale} of another explanation, which this one would not "
                               "replace; results are never mixed: remove it or choose another --out\n")
    assert [p.name for p in out.iterdir()] == [stale] and (out / stale).read_bytes() == b"earlier"


@pytest.mark.parametrize("arch, method", [("cochcnn", None), ("tfcnn", None), ("cuenet", None), ("bast", None),
                                          ("bast", "integrated_gradients"), ("bast", "attention_rollout"),
                                          ("bast", "saliency")])
def test_the_levels_known_before_explaining_are_the_levels_explained(arch, method):
    """What the early check takes as the explanation's levels is what the explanation returns."""
    from xai_loc.explain.binaural import EAR_LEVELS, explain_ears

    model = _tiny(arch)
    x = 0.05 * np.random.default_rng(1).standard_normal((1, 2, model.n_samples))
    options = {} if method is None else {"method": method, **({"n_steps": 2} if method == "integrated_gradients"
                                                               else {})}
    assert sorted(EAR_LEVELS[arch](model, method)) == sorted(explain_ears(model, x, **options))


# ------------------------------------------------------------------------------ 3. damaged stores name their maker
def _damage(store, chunk: str = "waveforms/0.0.0") -> None:
    data = bytearray((store / chunk).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (store / chunk).write_bytes(bytes(data))


def test_a_damaged_store_names_the_command_that_rebuilds_it(tmp_path):
    """review: a damaged TF-CNN scene store said "delete it and run 'xai-loc binaural simulate' again to rebuild
    it", which renders cochleagram CNN data; now each store's message names its own family's command."""
    from xai_loc.data import binaural_store, ipd_ild_scenes

    scenes = ipd_ild_scenes.SceneSpec(name="t", azimuths=(-30.0, 30.0), n_train=1, test_per_azimuth=1,
                                      test_snrs=(20.0,), duration=1.0)
    tfcnn_store = ipd_ild_scenes.render_scenes(scenes, tmp_path / "data", progress=False, splits=("test",))["test"]
    binaural = binaural_store.BinauralSpec(name="tiny", rooms=("anechoic",), kinds=("pink_burst",), n_sounds=5,
                                           per_sound=2, duration=0.25, snr=None)
    cochcnn_store = binaural_store.simulate_binaural(binaural, "test", root=tmp_path / "data")
    expected = {
        "tfcnn": (tfcnn_store, f"Error: scene store {tfcnn_store} is damaged: chunk waveforms/0.0.0 does not match its "
                               "checksum; delete it and run render_scenes (or 'xai-loc binaural tfcnn train') again "
                               "to rebuild it\n"),
        "cochcnn": (cochcnn_store, f"Error: binaural store {cochcnn_store} is damaged: chunk waveforms/0.0.0 does not "
                                   "match its checksum; delete it and run simulate_binaural (or 'xai-loc binaural "
                                   "simulate') again to rebuild it\n"),
    }
    for arch, (store, message) in expected.items():
        _damage(store)
        out = tmp_path / f"out-{arch}"
        assert refused(run_cli(["binaural", "explain", _checkpoint(arch), str(store), "--out", str(out)])) == message
        assert not out.exists()
