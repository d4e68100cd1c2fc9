"""ITD/ILD/IC cue network: known-answer cues, model, checkpoint, LRP conservation, clean split."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import xai_loc.experiments.cue_probe as cue_probe
import xai_loc.models.cuenet as cuenet
from xai_loc.data.cue_scenes import CueSceneSpec, render_scene_example
from xai_loc.errors import InputError
from xai_loc.explain.cuenet import cue_relevance
from xai_loc.features.binaural_cues import BinauralCues
from xai_loc.models.checkpoint import load_model, read_card, save_checkpoint
from xai_loc.models.classifier_training import ClassifierConfig
from xai_loc.models.evaluation import after_front_end

FS = 44100
N = 22050
PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained" / "cuenet_default.safetensors"


@pytest.fixture(scope="module")
def front_end() -> BinauralCues:
    torch.set_num_threads(1)
    return BinauralCues()


@pytest.fixture(scope="module")
def noise() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(N + 200)


def _cues(front_end: BinauralCues, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    x = torch.tensor(np.stack([left, right])[None], dtype=torch.float32)
    with torch.no_grad():
        return front_end(x)[0].numpy()


@pytest.mark.parametrize("delay", [10, -25, 3])
def test_pure_delay_comes_back_as_itd(front_end, noise, delay):
    left, right = noise[100:100 + N], noise[100 - delay:100 - delay + N]  # right lags left by `delay` samples
    cues = _cues(front_end, left, right)
    low = front_end.centre_frequencies < 1500
    expected_ms = delay / FS * 1000
    np.testing.assert_allclose(np.median(cues[0, low], axis=1), expected_ms, atol=1e-5)
    assert np.mean(np.isclose(cues[0, low], expected_ms, atol=1e-5)) > 0.95
    assert cues[2, low].mean() > 0.97


@pytest.mark.parametrize("gain_db, expected", [(4.0, 4.0), (-2.5, -2.5), (12.0, 7.0), (-20.0, -7.0)])
def test_gain_comes_back_as_ild_clipped(front_end, noise, gain_db, expected):
    left = noise[:N]
    cues = _cues(front_end, left, left * 10 ** (-gain_db / 20))
    np.testing.assert_allclose(cues[1], expected, atol=1e-3)
    assert np.abs(cues[0]).max() == 0.0


def test_digital_silence_gives_no_cues_and_one_silent_ear_the_clipped_ild(front_end, noise):
    """Review: the float32 filterbank leaves ~1e-14 of rounding where the sound is digitally silent, which
    an absolute floor read as sound (random ITD and ILD); one silent ear gave ILD 0 dB."""
    other = np.random.default_rng(1).standard_normal(N)
    gap = np.concatenate([np.ones(N // 2), np.zeros(N - N // 2)])
    cues = _cues(front_end, noise[:N] * gap, other * gap)
    tail = front_end.frame_times(N) > N / 2 / FS + 0.08  # past the longest kernel's reach (about 56 ms)
    assert tail.sum() >= 10 and np.abs(cues[:, :, tail]).max() == 0.0
    assert np.abs(cues[1, :, :10]).max() > 1.0  # the sounding half still has level differences
    for left, right, ild in [(noise[:N], np.zeros(N), 7.0), (np.zeros(N), noise[:N], -7.0)]:
        one = _cues(front_end, left, right)
        np.testing.assert_array_equal(one[1], ild)
        assert np.abs(one[0]).max() == 0.0 and np.abs(one[2]).max() == 0.0


def test_identical_ears_are_coherent_and_uncorrelated_are_not(front_end, noise):
    same = _cues(front_end, noise[:N], noise[:N])
    assert same[2].min() > 0.999 and np.abs(same[0]).max() == 0.0 and np.abs(same[1]).max() < 1e-4
    other = np.random.default_rng(1).standard_normal(N)
    apart = _cues(front_end, noise[:N], other)
    assert apart[2].mean() < 0.7
    assert np.median(apart[2]) < same[2].min() - 0.3


def test_kemar_lateral_sources_give_cues_of_their_side(front_end, noise):
    from xai_loc.acoustics.binaural import anechoic_rirs, spatialize
    from xai_loc.acoustics.hrtf import load_hrtf

    hrirs = anechoic_rirs([90.0, 270.0], [0.0, 0.0], hrtf=load_hrtf("kemar", fs=FS), fs=FS).double().numpy()
    left_src, right_src = (_cues(front_end, *spatialize(noise[:N], h)) for h in hrirs)
    low, high = front_end.centre_frequencies < 800, front_end.centre_frequencies > 3000
    assert np.median(left_src[0, low]) > 0.5 and np.median(right_src[0, low]) < -0.5  # ms; KEMAR's ~0.65 ms
    assert np.median(left_src[1, high]) > 5.0 and np.median(right_src[1, high]) < -5.0  # dB


def test_shapes_frames_and_input_errors(front_end):
    x = torch.zeros(2, 2, N)
    out = front_end(x)
    assert out.shape == (2, 3, 32, 50)
    assert torch.all(out == 0)  # silence: ITD 0, ILD 0, IC 0
    times = front_end.frame_times(N)
    assert times.size == 50 and times[0] == pytest.approx(0.005) and np.diff(times) == pytest.approx(0.01)
    assert front_end.centre_frequencies[0] == pytest.approx(80.0)
    with pytest.raises(InputError):
        front_end(torch.zeros(1, 1, N))
    with pytest.raises(InputError):
        front_end(torch.zeros(1, 2, 100))
    with pytest.raises(InputError):
        BinauralCues(f_min=9000.0)


def test_gradients_reach_waveform_through_ic_and_ild_not_itd(front_end, noise):
    x = torch.tensor(np.stack([noise[:N], noise[3:N + 3]])[None], dtype=torch.float32, requires_grad=True)
    out = front_end(x)
    grads = [torch.autograd.grad(out[:, c].sum(), x, retain_graph=True)[0] for c in range(3)]
    assert grads[0].abs().max() == 0.0  # ITD: arg-max lag, no gradient
    assert grads[1].abs().max() > 0 and grads[2].abs().max() > 0


def test_model_forward_attention_and_config(front_end):
    torch.manual_seed(0)
    model = cuenet.CueNet().eval()
    x = 0.05 * torch.randn(3, 2, N)
    logits = model(x)
    assert logits.shape == (3, 72)
    cues = model.front_end(x)
    weights = model.attention(cues)
    assert weights.shape == (3, 3)
    torch.testing.assert_close(weights.sum(1), torch.ones(3))
    seen = {}
    handle = model.classifier.attention.softmax.register_forward_hook(lambda m, i, o: seen.setdefault("w", o))
    after_front_end(model)(cues)
    handle.remove()
    torch.testing.assert_close(seen["w"], weights)
    assert not any(k.startswith("front_end") for k in model.state_dict())
    no_front = cuenet.CueNet(**{**model.config, "front_end": False})
    no_front.load_state_dict(model.state_dict())
    torch.testing.assert_close(no_front.eval()(cues), logits)
    assert sum(p.numel() for p in model.parameters()) < 500_000


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    model = cuenet.CueNet(channels=16, hidden=32).eval()
    path = save_checkpoint(model, tmp_path / "c.safetensors", {"condition": {"rooms": ["anechoic"], "snr": [15, 40]}})
    loaded = load_model(path)
    assert isinstance(loaded, cuenet.CueNet) and loaded.config == model.config
    cues = torch.rand(2, *model.cue_shape)
    torch.testing.assert_close(after_front_end(loaded)(cues), after_front_end(model)(cues))


def _bias_free_float64_model() -> cuenet.CueNet:
    torch.manual_seed(2)
    model = cuenet.CueNet(front_end=False, channels=16, hidden=32).double().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.zero_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
    return model


def test_relevance_is_conserved_through_the_fusion_in_float64():
    model = _bias_free_float64_model()
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-1, 1, (4, 2, 32, 50)), rng.uniform(0, 1, (4, 1, 32, 50))], axis=1)
    rel = cue_relevance(model, x, first_rule="epsilon", conv_rule="epsilon", epsilon=1e-12,
                                  stabilizer=1e-12, batch_size=3)
    np.testing.assert_allclose(rel["relevance"].sum(("cue", "band")).values, rel["logit"].values, rtol=1e-8)
    np.testing.assert_allclose(rel["fusion_relevance"].sum("cue").values, rel["logit"].values, rtol=1e-8)
    # each branch conserves: a cue's relevance on the map is what the fusion gave that cue
    np.testing.assert_allclose(rel["relevance"].sum("band").values, rel["fusion_relevance"].values,
                               rtol=1e-7, atol=1e-12)
    # attention weights held constant: the fusion relevance of cue c is a_c e_c . dz/dfused, not the gradient
    np.testing.assert_allclose(rel["attention"].sum("cue").values, 1.0)
    # review: a NaN azimuth was read as the grid's first direction (the logit of 0 degrees explained as the truth)
    with pytest.raises(InputError, match="^azimuth holds NaN"):
        cue_relevance(model, x, target="truth", azimuth=[np.nan, 10.0, 20.0, 30.0])


def test_default_composite_runs_and_table_names_a_cue_per_band():
    model = _bias_free_float64_model().float()
    x = np.random.default_rng(4).uniform(0, 1, (5, 3, 32, 50)).astype(np.float32)
    rel = cue_relevance(model, x, azimuth=np.arange(5) * 5.0, target="truth")
    assert np.isfinite(rel["relevance"]).all()
    assert json.loads(rel.attrs["composite_params"])["first_rule"] == "zbox"
    table = cue_probe.reliance_table(rel)
    assert table["share"].dims == ("cue", "band") and set(table["reliance"].values) <= {"itd", "ild", "ic"}
    with pytest.raises(InputError):
        cue_relevance(model, x[:, :2])


def test_split_is_clean_and_directions_balanced():
    spec = CueSceneSpec()
    train, test = spec.utterances("train"), spec.utterances("test")
    assert not set(train) & set(test)
    assert len(train) + len(test) == 300 and len(test) == 60
    for split in ("train", "test"):
        plan = spec.plan(split)
        assert set(plan["utterance"]) == set(spec.utterances(split))
        counts = np.bincount((plan["azimuth"] / 5).astype(int), minlength=72)
        assert counts.min() == counts.max()
    assert CueSceneSpec(seed=1).utterances("test") != test
    with pytest.raises(InputError):
        spec.utterances("validation")


def test_rendering_is_deterministic():
    spec = CueSceneSpec()
    a, b = render_scene_example(spec, "test", [0, 5]), render_scene_example(spec, "test", [5])
    assert a.shape == (2, 2, N) and a.dtype == np.float32
    np.testing.assert_array_equal(a[1], b[0])
    np.testing.assert_allclose(np.sqrt(np.mean(a[0].astype(np.float64) ** 2)), 0.05, rtol=1e-5)


def _fake_store(utterances, n: int, seed: int) -> xr.Dataset:
    spec = CueSceneSpec()
    rng = np.random.default_rng(seed)
    az = np.arange(n) % 72 * 5.0
    cues = rng.uniform(0, 1, (n, 3, 32, 50)).astype(np.float32)
    cues[:, 0] += (np.sin(np.deg2rad(az)) * 0.7)[:, None, None]  # a lateral ITD to learn from
    return xr.Dataset({"cues": (("example", "cue", "band", "frame"), cues)},
                      coords={"azimuth": ("example", az), "utterance": ("example", np.resize(utterances, n))},
                      attrs={"spec": json.dumps(spec.to_dict()), "front_end": json.dumps(BinauralCues().config)})


def test_training_refuses_shared_utterances_and_writes_a_card(tmp_path):
    spec = CueSceneSpec()
    train = _fake_store(np.array(spec.utterances("train")), 96, 0)
    config = ClassifierConfig(epochs=1, batch_size=32)
    small = {"channels": 8, "hidden": 16}
    with pytest.raises(InputError, match="^the test store shares 8 utterance value"):
        cuenet.train_cuenet(train, tmp_path / "x.safetensors", test_store=_fake_store(train["utterance"].values, 8, 1),
                            config=config, model_config=small)
    test = _fake_store(np.array(spec.utterances("test")), 72, 2)
    out = cuenet.train_cuenet(train, tmp_path / "m.safetensors", test_store=test, config=config, model_config=small)
    card = read_card(out)
    metrics = card["metrics"]["test"]["metrics"]
    assert card["architecture"] == "cuenet" and metrics["n"] == 72 and 0 <= metrics["top1"] <= metrics["top5"] <= 1
    assert card["metrics"]["test"]["baseline"]["metrics"]["top5"] == pytest.approx(5 / 72)
    assert card["condition"] == {"rooms": ["anechoic"], "snr": [15.0, 40.0]}
    # the float16 rule scored both storages; what is stored is what the card says
    storage = card["storage"]
    assert storage["dtype"] == card["dtype"] and set(storage["change"]) == {"top1", "azimuth_error"}
    assert storage["within_tolerance"] == (card["dtype"] == "float16")


@pytest.mark.skipif(not PRETRAINED.exists(), reason="shipped cue network not built")
def test_shipped_model_card_and_lateralization():
    from xai_loc.models.classifier_training import lateral_angle

    card = read_card(PRETRAINED)
    assert card["dataset"]["test"]["utterances_shared_with_train"] == 0
    test = card["metrics"]["test"]  # a card of the earlier layout, upgraded on read
    assert test["metrics"]["top5"] > 5 * test["baseline"]["metrics"]["top5"]
    model = load_model(PRETRAINED)
    spec = CueSceneSpec.from_dict(card["dataset"]["spec"])
    idx = np.arange(0, 720, 90)
    waves = torch.from_numpy(render_scene_example(spec, "test", idx))
    with torch.no_grad():
        pred = model.decode(model(waves))["azimuth"].numpy()
    true = spec.plan("test")["azimuth"][idx]
    assert np.mean(np.sign(lateral_angle(pred).round(6)) == np.sign(lateral_angle(true).round(6))) >= 0.75


def test_probe_finds_the_only_informative_cue(tmp_path):
    """A model trained on maps where only the ILD carries the azimuth: ablation and relevance both point at ILD."""
    spec = CueSceneSpec()
    rng = np.random.default_rng(5)
    az = np.tile(np.arange(0, 360, 5.0), 6)
    cues = rng.uniform(-1, 1, (az.size, 3, 32, 50)).astype(np.float32)
    cues[:, 2] = rng.uniform(0.5, 1.0, (az.size, 32, 50))
    cues[:, 1] = 7 * np.sin(np.deg2rad(az))[:, None, None] * np.linspace(0.2, 1, 32)[None, :, None] \
        + np.cos(np.deg2rad(az))[:, None, None] * np.linspace(-3, 3, 32)[None, :, None] \
        + 0.3 * rng.standard_normal((az.size, 32, 50))
    store = xr.Dataset({"cues": (("example", "cue", "band", "frame"), cues)},
                       coords={"azimuth": ("example", az), "utterance": ("example", np.resize(["u"], az.size))},
                       attrs={"spec": json.dumps(spec.to_dict()), "front_end": json.dumps(BinauralCues().config)})
    # The probe is tested on a model that learned the task. One seed's 15 epochs can land in a poor minimum on
    # some CPUs and thread counts (seed 0: 6 degrees with 1 thread, 22-48 with 2-4 threads on some SIMD paths), so
    # the next seed is trained where one did not learn; seeds 0-8 learn (3-8 degrees) on this machine's 1 thread.
    for seed in (0, 1, 2):
        config = ClassifierConfig(epochs=15, batch_size=32, lr=3e-3, seed=seed)
        out = cuenet.train_cuenet(store, tmp_path / f"ild-{seed}.safetensors", config=config,
                                  model_config={"channels": 16, "hidden": 32, "dropout": 0.0})
        ablation = cue_probe.cue_ablation(out, store)
        if float(ablation["azimuth_error_intact"]) < 15.0:  # degrees; chance: 90
            break
    assert float(ablation["azimuth_error_intact"]) < 15.0, "no seed of three learned the task"
    error = ablation["azimuth_error"]
    assert error.sel(cue="ild", bands="all") > 70.0
    assert error.sel(cue="itd", bands="all") < 15.0 and error.sel(cue="ic", bands="all") < 15.0
    mean_ablation = cue_probe.cue_ablation(out, store, mode="mean")
    assert mean_ablation["azimuth_error"].sel(cue="ild", bands="all") > 70.0
    np.testing.assert_allclose(mean_ablation["attention"].sum("weight_of"), 1.0, rtol=1e-5)
    with pytest.raises(InputError):
        cue_probe.cue_ablation(out, store, mode="zero")
    _, table = cue_probe.probe_cues(out, store)
    assert table["cue_abs_share"].sel(cue="ild") == table["cue_abs_share"].max()
    drawn, _ = cue_probe.probe_cues(out, store, max_examples=4, seed=1)  # a seeded draw, not the first four
    again, _ = cue_probe.probe_cues(out, store, max_examples=4, seed=1)
    assert drawn.sizes["example"] == 4 and list(drawn["example"].values) == list(again["example"].values)
    assert list(drawn["example"].values) != list(store["example"].values[:4])
    # abs_share is float32 (reliance_table normalizes the float32 relevance in float32): each
    # example's denominator is a float32 sum of 96 (cue, band) terms and the mean over the examples
    # a float32 sum along the example axis, so, summed in float64, the shares total 1 within
    # (96 + n_examples + 2) float32 roundings of 2**-24 (~3e-5 worst case; typically ~1e-6)
    assert abs(table["abs_share"].values.astype(np.float64).sum() - 1.0) <= (96 + az.size + 2) * 2.0**-24


def test_explain_cuenet_computes_the_cue_maps_in_the_models_dtype(noise):
    """Review: the cue maps were always computed from float32 waveforms (1e-6 off for a float64 model)."""
    from xai_loc.explain.cuenet import explain_cuenet

    torch.manual_seed(0)
    model = cuenet.CueNet(channels=8, hidden=16).double().eval()
    ears = np.stack([np.stack([noise[:N], 0.5 * noise[3:N + 3]])] * 2)
    with torch.no_grad():
        cues = model.front_end(torch.from_numpy(ears)).numpy()
    got = explain_cuenet(model, ears, target="prediction")["cues"]
    want = cue_relevance(model, cues, target="prediction")
    np.testing.assert_array_equal(got["relevance"].values, want["relevance"].values)
