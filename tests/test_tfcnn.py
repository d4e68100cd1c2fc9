"""IPD/ILD TF-CNN: front end known answers, model, scenes, training, checkpoint and LRP probe."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import xai_loc.experiments.ipd_ild_probe as probe
import xai_loc.models.tfcnn as tfcnn
from xai_loc.acoustics.directions import from_sofa_azimuth, to_sofa_azimuth
from xai_loc.data.ipd_ild_scenes import SceneSpec, render_split, utterance_split
from xai_loc.errors import InputError
from xai_loc.explain.cue_composites import CueEnergyShare
from xai_loc.explain.tfcnn import explain_tfcnn
from xai_loc.features.ipd_ild import IPDILD
from xai_loc.models.checkpoint import load_model, save_checkpoint
from xai_loc.models.tfcnn_training import TFCNNTrainConfig, azimuth_scores, train_tfcnn
from xai_loc.plots.band_profile import plot_band_profile

FS = 16000


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_scenes():
    """Both splits of a small scene set: azimuths -90, 0, 90; 6 training and 3 test scenes."""
    spec = SceneSpec(name="tiny", azimuths=(-90.0, 0.0, 90.0), n_train=6, test_per_azimuth=1, test_snrs=(0.0,))
    return spec, render_split(spec, "train"), render_split(spec, "test")


def _zero_biases_float64(model: torch.nn.Module) -> torch.nn.Module:
    """float64, eval mode, BatchNorms with zero mean and shift, dense layers without bias."""
    model = model.double().eval()
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.zero_()
            m.bias.data.zero_()
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen, dtype=torch.float64))
        if isinstance(m, torch.nn.Linear):
            m.bias.data.zero_()
    return model


# -- front end -------------------------------------------------------------------------------------


def test_shapes_and_frame_convention():
    fe = IPDILD()
    out = fe(torch.randn(3, 2, FS))
    assert out.shape == (3, 2, 321, 50)
    assert fe.n_frames(FS) == 50 and fe.frequencies[-1] == 8000.0 and fe.frequencies[1] == 25.0
    assert np.allclose(fe.frame_times(FS)[:2], [0.01, 0.03])


def test_stft_matches_torch_stft_with_symmetric_padding():
    x = torch.randn(1, 2, FS, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fe = IPDILD().double()
    spectra = fe.spectra(x)[0]
    window = torch.hamming_window(640, dtype=torch.float64)
    padded = torch.nn.functional.pad(x[0], (160, 160))
    ref = torch.stft(padded, 640, 320, window=window, center=False, return_complex=True)
    # The kernels w[n] cos, w[n] sin are built in float64 and kept as float32 weights: each is one
    # float32 rounding (relative 2**-24) of the exact value, so in float64 arithmetic each part of
    # X[k, m] is off by at most 2**-24 sum_n |w[n] x[n + m hop]| (float64 rounding adds ~1e-13 of it)
    bound = 2.0**-24 * (padded.unfold(-1, 640, 320).abs() * window).sum(-1)  # (ear, frame)
    for ear in range(2):
        error = (spectra[2 * ear] + 1j * spectra[2 * ear + 1] - ref[ear]).abs()
        assert torch.all(error <= math.sqrt(2) * bound[ear] * (1 + 1e-9))


def test_pure_delay_gives_ipd_two_pi_f_tau():
    fe = IPDILD().double()
    bins = np.arange(4, 40, 3)  # 100 .. 975 Hz
    f = fe.frequencies[bins]
    t = np.arange(FS) / FS
    phases = np.random.default_rng(0).uniform(0, 2 * np.pi, bins.size)
    delay = 4  # samples: the right ear leads by 0.25 ms
    tau = delay / FS

    def tone(shift):
        return np.sum(np.cos(2 * np.pi * f[:, None] * (t + shift) + phases[:, None]), axis=0)

    x = torch.as_tensor(np.stack([tone(0.0), tone(tau)])[None])
    ipd = fe(x)[0, 0, bins, 2:-2].numpy()  # frames away from the zero-padded edges
    assert np.allclose(ipd, (2 * np.pi * f * tau)[:, None], atol=2e-3)


def test_gain_gives_ild_in_db():
    fe = IPDILD().double()
    left = torch.randn(1, FS, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x = torch.stack([left, left * 10 ** (7.5 / 20)], dim=1)
    out = fe(x)
    # exactly the documented 10 log10((|R|^2 + floor) / (|L|^2 + floor)), R = g L (float64)
    spectra = fe.spectra(x)[0]
    power = spectra[0] ** 2 + spectra[1] ** 2
    floor = fe.cues.power_floor
    expected = 10 * torch.log10((10 ** (7.5 / 10) * power + floor) / (power + floor))
    torch.testing.assert_close(out[0, 1, 1:], expected[1:], rtol=0, atol=1e-9)
    # which is 7.5 dB wherever the floor is negligible: it moves the ILD by < 4.4 floor / |L|^2 dB
    loud = power[1:] > 1e-3
    assert loud.float().mean() > 0.99 and (out[0, 1, 1:][loud] - 7.5).abs().max() < 1e-6
    assert out[0, 0, 1:].abs().max() < 1e-9


def test_silence_gives_finite_cues_and_gradients():
    fe = IPDILD()
    x = torch.zeros(1, 2, FS, requires_grad=True)
    out = fe(x)
    assert torch.all(out == 0)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    model = tfcnn.TFCNN().eval()
    z = torch.zeros(2, 2, FS, requires_grad=True)
    model(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_front_end_rejects_bad_settings():
    with pytest.raises(InputError):
        IPDILD(n_fft=641)
    with pytest.raises(InputError):
        IPDILD(power_floor=0.0)
    with pytest.raises(InputError):
        IPDILD()(torch.zeros(1, 3, FS))


# -- convention and scenes -----------------------------------------------------------------------------


def test_sofa_mapping():
    assert np.allclose(to_sofa_azimuth([90, -90, 0, 45]), [270, 90, 0, 315])
    assert np.allclose(from_sofa_azimuth(to_sofa_azimuth(np.arange(-90, 91, 5))), np.arange(-90, 91, 5))


def test_positive_azimuth_is_right_louder_and_right_leading(tiny_scenes):
    from xai_loc.data.ipd_ild_scenes import _Renderer

    renderer = _Renderer(tiny_scenes[0])
    noise = np.random.default_rng(0).standard_normal(FS)
    fe = IPDILD().double()
    from xai_loc.acoustics.binaural import spatialize

    cues = {az: fe(torch.as_tensor(spatialize(noise, renderer.hrir(az))[None]))[0] for az in (-90.0, 90.0)}
    high = fe.frequencies >= 2000
    low = (fe.frequencies > 50) & (fe.frequencies < 400)
    assert cues[90.0][1, high].mean() > 5.0 and cues[-90.0][1, high].mean() < -5.0
    assert cues[90.0][0, low].mean() > 0.1 and cues[-90.0][0, low].mean() < -0.1


def test_scene_sets_hold_out_utterances(tiny_scenes):
    spec, train, test = tiny_scenes
    split = utterance_split(spec, 300)
    assert not set(split["train"]) & set(split["test"])
    assert set(train["utterance"].values) <= set(split["train"])
    assert set(test["utterance"].values) <= set(split["test"])
    assert train["waveforms"].shape == (6, 2, FS) and test.sizes["example"] == 3
    assert sorted(test["azimuth"].values) == [-90.0, 0.0, 90.0] and np.all(test["snr"].values == 0.0)
    assert np.allclose(test["sofa_azimuth"].values, to_sofa_azimuth(test["azimuth"].values))
    again = render_split(spec, "test")
    assert np.array_equal(again["waveforms"].values, test["waveforms"].values)


# -- model and checkpoint --------------------------------------------------------------------------------


@pytest.mark.parametrize("head, n_out", [("regression", 1), ("multitask", 51)])
def test_forward_shapes(head, n_out):
    model = tfcnn.TFCNN(head=head).eval()
    assert model(torch.randn(2, 2, FS)).shape == (2, n_out)
    bare = tfcnn.TFCNN(head=head, front_end=False).eval()
    assert bare.input_shape == (2, 321, 50) and bare(torch.randn(2, 2, 321, 50)).shape == (2, n_out)
    decoded = model.decode(torch.zeros(2, n_out))
    assert decoded["azimuth"].shape == (2,)
    assert "elevation" not in decoded if head == "regression" else decoded["elevation"][0] == -40.0


def test_documented_parameter_counts():
    assert tfcnn.TFCNN().n_parameters() == 1478273
    assert tfcnn.TFCNN(width="paper").n_parameters() == 23066113
    assert tfcnn.TFCNN(width="paper", head="multitask").n_parameters() == 23078963


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = tfcnn.TFCNN(head="multitask", channels=[4, 8], dense=[16]).eval()
    assert not [k for k in model.state_dict() if k.startswith("front_end.")]
    path = save_checkpoint(model, tmp_path / "m.safetensors", {"condition": {"rooms": ["anechoic"], "snr": [-10, 30]}})
    loaded = load_model(path).eval()
    x = torch.randn(2, 2, FS)
    assert loaded.config == model.config
    assert torch.allclose(loaded(x), model(x), atol=1e-6)


def test_training_writes_a_scored_checkpoint(tiny_scenes, tmp_path):
    _, train, test = tiny_scenes
    out = train_tfcnn(train, tmp_path / "t.safetensors", test_scenes=test, progress=False, dtype="float32",
                      model_config={"channels": [4, 8], "dense": [16]}, config=TFCNNTrainConfig(epochs=2, batch_size=3))
    from xai_loc.models.checkpoint import read_card

    card = read_card(out)
    assert card["training"]["epochs"] == 2 and len(card["training"]["history"]["train_loss"]) == 2
    assert card["dataset"]["test"]["utterances_disjoint"] is True
    assert set(card["metrics"]["test"]["by_snr"]) == {"0"}
    assert load_model(out).config["channels"] == [4, 8]


def test_azimuth_scores_known_answers():
    scores = azimuth_scores([0.0, 16.0, -90.0, 50.0], [5.0, 5.0, -80.0, 50.0], [0, 0, 6, 6])
    assert scores["all"]["accuracy_5"] == 0.5 and scores["all"]["accuracy_10"] == 0.75
    assert math.isclose(scores["all"]["mae"], (5 + 11 + 10 + 0) / 4)
    assert scores["by_snr"]["6"]["accuracy_10"] == 1.0
    assert math.isclose(scores["baseline"]["all"]["mae"], (5 + 5 + 80 + 50) / 4)


# -- LRP ------------------------------------------------------------------------------------------------------


def test_lrp_conserves_relevance_in_float64():
    torch.manual_seed(0)
    model = _zero_biases_float64(tfcnn.TFCNN(channels=[4, 8, 8], dense=[32, 16]))
    x = np.random.default_rng(1).standard_normal((2, 2, FS)) * 0.05
    out = explain_tfcnn(model, x, conv_rule="epsilon", epsilon=1e-12, stabilizer=1e-12)
    expected = model(torch.as_tensor(x)).detach().numpy()[:, 0]
    assert np.allclose(out["cues"].relevance_sum.values, expected, rtol=1e-6)
    assert np.allclose(out["waveform"].relevance_sum.values, expected, rtol=1e-6)
    assert out["waveform"].dims == ("example", "ear", "time") and out["waveform"].shape == (2, 2, FS)
    assert out["cues"].dims == ("example", "channel", "frequency", "frame")


def test_cue_rule_splits_each_bin_by_energy():
    spectra = torch.tensor([[[[3.0]], [[4.0]], [[0.0]], [[0.0]]]], requires_grad=True)  # L = 3 + 4i, R silent
    rule = CueEnergyShare()
    rule.forward(None, (spectra,), None)
    relevance = rule.backward(None, None, (torch.tensor([[[[1.0]], [[1.5]]]]),))[0]
    assert torch.allclose(relevance.flatten(), torch.tensor([2.5 * 9 / 25, 2.5 * 16 / 25, 0.0, 0.0]))


def test_probe_profile_sums_to_total_relevance(tiny_scenes):
    _, _, test = tiny_scenes
    torch.manual_seed(0)
    model = tfcnn.TFCNN(channels=[4, 8], dense=[16]).eval()
    result = probe.ipd_ild_probe(model, test, n_examples=None, snr=0.0, batch_size=3)
    profile, cues = result["profile"], result["cues"]
    assert profile["relevance"].dims == ("channel", "band") and profile.sizes["band"] == 7
    assert profile["n_bins"].values.tolist() == [5, 5, 10, 20, 40, 80, 161]
    assert list(profile["channel"].values) == ["ipd", "ild"]
    assert np.isclose(profile["relevance"].sum(), cues.sum(), rtol=1e-9)
    assert np.isclose(profile["mass"].sum(), abs(cues).sum(), rtol=1e-9)
    assert np.isclose(profile["share"].sum(), 1.0)
    below = abs(cues).where(cues["frequency"] < probe.DUPLEX_SPLIT_HZ, 0.0)
    others = [d for d in cues.dims if d != "channel"]
    np.testing.assert_allclose(profile["share_below_split"].values,
                               (below.sum(others) / abs(cues).sum(others)).values, rtol=1e-9)
    assert math.isclose(float(profile["total_mass"]), float(abs(cues).sum()), rel_tol=1e-9)
    assert profile.attrs["composite"] == "tfcnn" and profile.attrs["model"] == "tfcnn"
    assert sorted(result["waveform"]["azimuth"].values) == [-90.0, 0.0, 90.0]
    fig = plot_band_profile(profile)
    assert len(fig.axes) == 1
    with pytest.raises(InputError):
        probe.ipd_ild_probe(model, test, snr=12.0)
    with pytest.raises(InputError):
        probe.band_profile(cues, edges=(100.0, 8000.0))
