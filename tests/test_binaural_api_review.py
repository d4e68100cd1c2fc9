"""Review of the binaural Python API: BAST's trainer and scorer check their examples, explaining a cue network leaves
the caller's random generator alone, and ``binaural explain`` explains against the truth a store holds."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import xarray as xr
from helpers import refused, run_cli

from xai_loc.errors import InputError
from xai_loc.models import load_model
from xai_loc.models.bast import BAST, evaluate_bast, train_bast
from xai_loc.models.zoo import pretrained_dir


# ------------------------------------------------------------ 1: train_bast and evaluate_bast check their examples
def _tiny_bast() -> BAST:
    torch.manual_seed(0)
    return BAST(dim=8, depth=1, heads=2, dim_head=4, mlp_dim=16, front_end=False).eval()


def _spectrograms(n: int = 4) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).standard_normal((n, 2, 129, 61)).astype(np.float32))


AZIMUTH = [0.0, 90.0, 180.0, 270.0]

BAD_EXAMPLES = {
    "three ears": (torch.zeros(4, 3, 129, 61), AZIMUTH,
                   r"^spectrograms of shape \(4, 3, 129, 61\) are not allowed; give \(n >= 1, 2, 129, 61\): the "
                   r"model's front end of the ear signals$"),
    "a frame short": (torch.zeros(4, 2, 129, 60), AZIMUTH, r"^spectrograms of shape \(4, 2, 129, 60\) are not"),
    "waveforms": (torch.zeros(4, 2, 8000), AZIMUTH, r"^spectrograms of shape \(4, 2, 8000\) are not allowed"),
    "none": (torch.zeros(0, 2, 129, 61), [], r"^spectrograms of shape \(0, 2, 129, 61\) are not allowed"),
    "integers": (torch.zeros(4, 2, 129, 61, dtype=torch.int64), AZIMUTH,
                 r"^spectrograms of dtype torch.int64 are not allowed; give floating-point values \(dB\)$"),
    "three azimuths": (_spectrograms(), AZIMUTH[:3],
                       r"^4 spectrograms and azimuths of shape \(3,\) are not allowed; give one azimuth \(degrees\) "
                       r"each$"),
    "an azimuth column": (_spectrograms(), np.array(AZIMUTH)[:, None], r"^4 spectrograms and azimuths of shape "
                                                                        r"\(4, 1\) are not allowed"),
    "NaN azimuth": (_spectrograms(), [0.0, 90.0, np.nan, 270.0],
                    r"^azimuths of 1 example\(s\) hold NaN or infinite values \(the first: example 2\)"),
    "text azimuths": (_spectrograms(), ["left"] * 4, r"^azimuth=\['left', 'left', 'left', 'left'\] is not allowed; "
                                                     r"give one azimuth \(degrees\) per spectrogram$"),
}


@pytest.mark.parametrize("score", [False, True], ids=["train_bast", "evaluate_bast"])
@pytest.mark.parametrize("case", sorted(BAD_EXAMPLES))
def test_bast_examples_that_do_not_fit_are_one_line_errors_before_training(case, score):
    """Review: three ears trained silently on the first two, a NaN azimuth scored mean_error nan, and a wrong frame
    count, a missing azimuth or waveforms gave tracebacks (RuntimeError, ValueError)."""
    model = _tiny_bast()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spectrograms, azimuth, says = BAD_EXAMPLES[case]
    with pytest.raises(InputError, match=says) as err:
        evaluate_bast(model, spectrograms, azimuth) if score else train_bast(model, spectrograms, azimuth, epochs=1)
    assert "\n" not in str(err.value)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_bast_takes_spectrograms_as_arrays_like_tensors():
    """Review: numpy spectrograms crashed train_bast with a TypeError; they train and score as the tensor does."""
    x = _spectrograms()
    runs = []
    for spectrograms in (x, x.numpy()):
        model = _tiny_bast()
        info = train_bast(model, spectrograms, AZIMUTH, epochs=2, batch_size=2)
        runs.append((info["loss_history"], evaluate_bast(model, spectrograms, AZIMUTH)))
    assert runs[0] == runs[1]
    model = _tiny_bast()
    with torch.no_grad():
        out = model(x).double().numpy()
    truth = np.deg2rad(AZIMUTH)  # known answer: the mean angle between the outputs and the true directions
    angle = np.rad2deg(np.arccos((out[:, 0] * np.cos(truth) + out[:, 1] * np.sin(truth)) / np.hypot(*out.T)))
    assert evaluate_bast(model, x.numpy(), AZIMUTH)["mean_error"] == pytest.approx(angle.mean(), abs=1e-3)


# ------------------------------------------------------------------ 2: explaining a cue network draws no random number
def test_cue_relevance_leaves_the_global_generator_as_it_was():
    """Review: on_cue_maps built its twin with fresh weights from torch's global generator, so every explanation moved
    the caller's random stream (torch.rand(1) after an explanation gave 0.3446 instead of 0.4963)."""
    from xai_loc.explain.cuenet import cue_relevance, on_cue_maps
    from xai_loc.models.cuenet import CueNet

    torch.manual_seed(1)
    model = CueNet(channels=4, hidden=8).eval()
    cues = torch.rand(2, *model.cue_shape, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    twin = on_cue_maps(model)
    result = cue_relevance(model, cues.numpy())
    assert torch.rand(1).item() == pytest.approx(0.4963, abs=1e-4)  # the first draw after torch.manual_seed(0)
    assert result["relevance"].sizes["example"] == 2
    assert not twin.training and on_cue_maps(model.train()).training  # in the model's mode
    with torch.no_grad():  # the twin is the same classifier
        torch.testing.assert_close(twin(cues), model.eval().classifier(cues))


# ------------------------------------------------------------- 3: binaural explain explains against a store's truth
@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Small test stores of the BAST, TF-CNN and cochleagram CNN families at their shipped models' rates."""
    from xai_loc.data.bast_scenes import BastSceneSpec, render_bast_scenes
    from xai_loc.data.binaural_store import cochcnn_spec, simulate_binaural
    from xai_loc.data.ipd_ild_scenes import SceneSpec, render_scenes

    root = tmp_path_factory.mktemp("data")
    return {
        "bast": render_bast_scenes(BastSceneSpec(name="t", azimuths=(60.0, 300.0), kinds=("white_burst",), n_sounds=2,
                                                 test_fraction=0.5, snr=None), "test", root=root),
        "tfcnn": render_scenes(SceneSpec(name="t", azimuths=(-30.0, 30.0), n_train=3, test_per_azimuth=1,
                                         test_snrs=(20.0,), duration=1.0), root, progress=False,
                               splits=("test",))["test"],
        "cochcnn": simulate_binaural(cochcnn_spec(rooms=("anechoic",), kinds=("white_burst",), n_sounds=4, per_sound=1,
                                                  test_fraction=0.5, snr=None), "test", root=root),
    }


def _explain(arch: str, inputs, target: str, out) -> xr.Dataset:
    path = pretrained_dir() / f"{arch}_default.safetensors"
    result = run_cli(["binaural", "explain", str(path), str(inputs), "--target", target, "--examples", "2",
                      "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    level = {"bast": "spectrogram", "tfcnn": "cues", "cochcnn": "cochleagram"}[arch]
    return xr.load_dataset(out / f"{level}.nc")


def _store(path) -> tuple[np.ndarray, xr.Dataset]:
    ds = xr.open_zarr(path)
    return ds["waveforms"].values[:2], ds.isel(example=slice(0, 2))


def _assert_bast_explained_along(store, sofa_azimuth, out) -> None:
    """``binaural explain`` of the shipped BAST with ``--target truth`` on the first two examples of ``store``
    explains the output along the true direction (SOFA degrees): known answer ``y . (cos t, sin t)`` (float64)."""
    x, _ = _store(store)
    rel = _explain("bast", store, "truth", out)
    model = load_model(pretrained_dir() / "bast_default.safetensors").double().eval()
    with torch.no_grad():
        y = model(torch.from_numpy(x.astype(np.float64))).numpy()
    truth = np.deg2rad(sofa_azimuth)
    np.testing.assert_allclose(rel["output"].values, y[:, 0] * np.cos(truth) + y[:, 1] * np.sin(truth), atol=1e-4)


def test_bast_explains_along_the_true_direction_of_a_store(stores, tmp_path):
    """Review: '--target truth' failed with the Python API's 'needs one azimuth (degrees) per example'."""
    _assert_bast_explained_along(stores["bast"], _store(stores["bast"])[1]["azimuth"].values, tmp_path / "out")


def test_tfcnn_explains_toward_the_truth_of_a_store(stores, tmp_path):
    """Review: 'toward_truth' and 'angular_error' started explaining, then failed: 'needs the true azimuths'."""
    x, ds = _store(stores["tfcnn"])
    rel = _explain("tfcnn", stores["tfcnn"], "toward_truth", tmp_path / "toward")
    model = load_model(pretrained_dir() / "tfcnn_default.safetensors").eval()
    with torch.no_grad():  # float32 as explained: the IPD front end moves the answer by ~0.1 degree in float64
        f = model(torch.from_numpy(x)).double().numpy()[:, 0]
    t = ds["azimuth"].values  # positive = right, as the model answers
    np.testing.assert_allclose(rel["output"].values, np.sign(t - f) * f, atol=1e-3)  # w . f, w = sign(t - f)
    error = _explain("tfcnn", stores["tfcnn"], "angular_error", tmp_path / "error")
    np.testing.assert_allclose(error["output"].values, np.abs(t - f), atol=1e-3)


def test_cochcnn_explains_the_true_class_of_a_store(stores, tmp_path):
    """Review: '--target truth' failed with the Python API's 'needs one label per example'."""
    _, ds = _store(stores["cochcnn"])
    rel = _explain("cochcnn", stores["cochcnn"], "truth", tmp_path / "out")
    np.testing.assert_array_equal(rel["target_class"].values, ds["label"].values)  # the store's own labels


def test_explain_ears_maps_true_directions_to_what_each_family_takes(stores):
    from xai_loc.explain.binaural import explain_ears

    x, ds = _store(stores["cochcnn"])
    path = pretrained_dir() / "cochcnn_default.safetensors"
    result = explain_ears(path, x, azimuth=ds["azimuth"].values, elevation=ds["elevation"].values,
                          target="true_class_log_odds")
    np.testing.assert_array_equal(result["cochleagram"]["target_class"].values, ds["label"].values)
    with pytest.raises(InputError, match=r"^labels= and azimuth= are not allowed together; give the true "
                                         r"directions once$"):
        explain_ears(path, x, azimuth=ds["azimuth"].values, elevation=ds["elevation"].values,
                     labels=ds["label"].values, target="truth")
    with pytest.raises(InputError, match=r"^elevation= without azimuth= is not allowed"):
        explain_ears(path, x, elevation=ds["elevation"].values, target="truth")

    from xai_loc.models import build_model

    torch.manual_seed(0)
    multitask = build_model("tfcnn", head="multitask").eval()  # class logits: an azimuth block, an elevation block
    x, ds = _store(stores["tfcnn"])
    result = explain_ears(multitask, x, azimuth=ds["sofa_azimuth"].values, elevation=ds["elevation"].values,
                          target="true_class_logit")  # SOFA azimuths, whatever the family
    with torch.no_grad():
        logits = multitask(torch.from_numpy(x)).double().numpy()
    true_class = np.searchsorted(multitask.direction_grid.azimuths, ds["azimuth"].values)  # -30 and 30 on the grid
    np.testing.assert_allclose(result["cues"]["output"].values, logits[[0, 1], true_class], rtol=1e-5, atol=1e-6)


def test_a_truth_target_on_a_sound_file_is_refused_before_any_work(tmp_path, monkeypatch):
    def work(*args, **kwargs):
        raise AssertionError("the explanation started")

    monkeypatch.setattr(sys.modules["xai_loc.explain.binaural"], "explain_ears", work)
    sf.write(tmp_path / "x.wav", np.random.default_rng(0).standard_normal((16000, 2)) * 0.05, 16000)
    for arch, target in (("bast", "truth"), ("tfcnn", "toward_truth"), ("tfcnn", "angular_error")):
        path = pretrained_dir() / f"{arch}_default.safetensors"
        refused(run_cli(["binaural", "explain", str(path), str(tmp_path / "x.wav"), "--target", target,
                         "--out", str(tmp_path / "out")]),
                f"INPUTS {tmp_path / 'x.wav'} holds no true directions; --target {target} needs a store with azimuth")
    assert not (tmp_path / "out").exists()


# ------------------------------------------ 4: true azimuths in the store's recorded convention; the model loaded once
@pytest.fixture(scope="module")
def same_directions(tmp_path_factory):
    """A TF-CNN scene store (positive = right) and a BAST scene store (SOFA) of the same two directions, 0.5 s at
    16 kHz (BAST's input)."""
    from xai_loc.data.bast_scenes import BastSceneSpec, render_bast_scenes
    from xai_loc.data.ipd_ild_scenes import SceneSpec, render_scenes

    root = tmp_path_factory.mktemp("same")
    return {"tfcnn": render_scenes(SceneSpec(name="h", azimuths=(-30.0, 30.0), n_train=3, test_per_azimuth=1,
                                             test_snrs=(20.0,), duration=0.5), root, progress=False,
                                   splits=("test",))["test"],
            "bast": render_bast_scenes(BastSceneSpec(name="h", azimuths=(30.0, 330.0), kinds=("white_burst",),
                                                     n_sounds=2, test_fraction=0.5, snr=None), "test", root=root)}


def test_the_same_direction_in_a_tfcnn_and_a_sofa_store_gives_each_family_the_same_target(same_directions):
    """Review: a TF-CNN store's azimuths (positive = right) reached every family as if they were SOFA's."""
    from types import SimpleNamespace

    from xai_loc.acoustics.directions import AZIMUTH_RING
    from xai_loc.explain.binaural import TRUTH_OPTIONS, read_ear_examples
    from xai_loc.models import build_model

    _, lateral = read_ear_examples(same_directions["tfcnn"], 16000, 8000)  # -30 (left) and 30 (right)
    _, sofa = read_ear_examples(same_directions["bast"], 16000, 8000)  # 30 (left) and 330 (right)
    np.testing.assert_array_equal(lateral["azimuth"], [30.0, 330.0])
    np.testing.assert_array_equal(sofa["azimuth"][:2], [30.0, 330.0])
    torch.manual_seed(0)
    multitask = build_model("tfcnn", head="multitask")
    families = (("tfcnn", build_model("tfcnn"), {"truth": [-30.0, 30.0]}),  # positive = right
                ("tfcnn", multitask, {"truth": np.searchsorted(multitask.direction_grid.azimuths, [-30.0, 30.0])}),
                ("cochcnn", SimpleNamespace(direction_grid=AZIMUTH_RING), {"labels": [6, 66]}),  # 5-degree ring
                ("bast", None, {"azimuth": [30.0, 330.0]}), ("cuenet", None, {"azimuth": [30.0, 330.0]}))
    for arch, model, expected in families:
        for truth in (lateral, {"azimuth": sofa["azimuth"][:2], "elevation": np.zeros(2)}):
            options = TRUTH_OPTIONS[arch](model, truth["azimuth"], truth.get("elevation"))
            assert options.keys() == expected.keys(), arch
            np.testing.assert_allclose(next(iter(options.values())), next(iter(expected.values())), atol=1e-9)


def test_bast_explains_a_tfcnn_store_toward_its_true_side(same_directions, tmp_path):
    """Review: BAST on a TF-CNN store (it fits BAST's input) explained toward the mirrored directions, exit 0."""
    store = same_directions["tfcnn"]
    # its azimuths are positive = right: SOFA 30 (left) and 330 (right) for -30 and 30
    _assert_bast_explained_along(store, -_store(store)[1]["azimuth"].values, tmp_path / "out")


def test_azimuths_of_an_unknown_convention_are_refused_for_a_truth_target(same_directions, tmp_path, monkeypatch):
    from xai_loc.explain.binaural import TO_SOFA, read_ear_examples, read_ear_signals

    monkeypatch.delitem(TO_SOFA, "positive = right")  # a store of a convention this version does not know
    path = same_directions["tfcnn"]
    with pytest.raises(InputError, match=r"^.*test.zarr records azimuth convention 'positive = right', which is not "
                                         r"allowed; allowed: 'SOFA, 90 = left'$"):
        read_ear_examples(path, 16000, 8000)
    assert read_ear_signals(path, 16000, 8000).shape == (2, 2, 8000)  # the ear signals need no convention
    refused(run_cli(["binaural", "explain", str(pretrained_dir() / "bast_default.safetensors"), str(path),
                     "--target", "truth", "--out", str(tmp_path / "out")]),
            "records azimuth convention 'positive = right', which is not allowed")
    assert not (tmp_path / "out").exists()


def test_explain_ears_loads_a_checkpoint_once_and_records_its_provenance(same_directions, monkeypatch):
    """Review: a truth target loaded the checkpoint twice (once for the truth options, once to explain)."""
    import json

    import xai_loc.models
    from xai_loc.explain.binaural import explain_ears
    from xai_loc.models import file_digest, read_card

    loads = []
    load = xai_loc.models.load_model
    monkeypatch.setattr(xai_loc.models, "load_model", lambda *args, **kwargs: loads.append(args) or load(*args,
                                                                                                          **kwargs))
    x, ds = _store(same_directions["bast"])
    path = pretrained_dir() / "bast_default.safetensors"
    result = explain_ears(path, x, azimuth=ds["azimuth"].values, target="truth")
    assert len(loads) == 1
    for level in ("waveform", "spectrogram"):
        attrs = result[level].attrs
        assert (attrs["checkpoint"], attrs["checkpoint_digest"], attrs["model_condition"]) == \
            (path.name, file_digest(path), json.dumps(read_card(path).get("condition")))
