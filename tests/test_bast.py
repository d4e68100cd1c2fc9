"""BAST: spectrogram front end, the six model variants, losses, AttnLRP, Integrated Gradients, rollout."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import signal
from torch import nn

import xai_loc.explain.attn_lrp as attn
import xai_loc.models.bast as bast
from xai_loc.errors import InputError
from xai_loc.features.spectrogram import BinauralSpectrogram
from xai_loc.models.checkpoint import load_model, save_checkpoint

TINY = {"dim": 16, "depth": 1, "heads": 2, "dim_head": 8, "mlp_dim": 32}
VARIANTS = [(integration, shared) for shared in (True, False) for integration in ("ADD", "SUB", "CONCAT")]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny(integration="SUB", shared=False, seed=0, **kwargs) -> bast.BAST:
    torch.manual_seed(seed)
    return bast.BAST(integration=integration, share_weights=shared, **{**TINY, **kwargs}).double().eval()


def _ears(n=2, seed=0) -> np.ndarray:
    """Ear signals with an interaural level and time difference (left louder and earlier)."""
    x = np.random.default_rng(seed).standard_normal((n, 8000))
    return np.stack([x, 0.5 * np.roll(x, 5, axis=-1)], axis=1)


# -- front end -----------------------------------------------------------------------------------------


def test_spectrogram_shape_matches_scipy():
    front = BinauralSpectrogram(standardize=False).double()
    x = _ears(3)
    spec = front(torch.from_numpy(x)).numpy()
    assert spec.shape == (3, 2, 129, 61)
    _, t, psd = signal.spectrogram(x, 16000, nperseg=256, noverlap=128)
    np.testing.assert_allclose(spec, 10 * np.log10(psd + 1e-14), atol=1e-8)
    np.testing.assert_allclose(front.frame_times(8000), t)


def test_tone_lands_in_its_bin_and_standardization():
    t = np.arange(8000) / 16000
    tone = np.stack([np.sin(2 * np.pi * 1000.0 * t), 0.1 * np.sin(2 * np.pi * 2500.0 * t)])[None]
    front = BinauralSpectrogram().double()
    spec = front(torch.from_numpy(tone)).numpy()[0]
    assert front.frequencies[16] == 1000.0 and front.frequencies[40] == 2500.0
    assert np.all(spec[0].argmax(axis=0) == 16) and np.all(spec[1].argmax(axis=0) == 40)
    assert abs(spec.mean()) < 1e-10 and abs(spec.std() - 1) < 1e-6


def test_patch_grid_is_the_seeds():
    counts, padding = bast.patch_grid((129, 61), 16, 10)
    assert counts == (20, 9) and padding == (1, 3)
    model = _tiny()
    left, right = model.embed(torch.zeros(1, 2, 129, 61, dtype=torch.float64))
    assert left.shape == right.shape == (1, 180, 16)


# -- variants and symmetry -------------------------------------------------------------------------------


@pytest.mark.parametrize(("integration", "shared"), VARIANTS)
def test_six_variants_forward(integration, shared):
    model = _tiny(integration, shared)
    out = model(torch.from_numpy(_ears(2)))
    assert out.shape == (2, 2) and torch.isfinite(out).all()
    assert hasattr(model, "encoder_right") is not shared
    width = 32 if integration == "CONCAT" else 16
    assert model.head.in_features == width


def test_shared_add_is_swap_invariant_and_sub_antisymmetric():
    x = torch.from_numpy(_ears(2))
    swapped = x.flip(1)
    # Exact in exact arithmetic, but not the same float computation: the front end's
    # standardization sums both ears in the other order (a last-bit difference in float64
    # whose size depends on the CPU's SIMD width). 1e-12 on O(1) values is ~1e4 float64 ulps,
    # far below the ~1e-3 an ear-asymmetric model gives (checked below).
    add = _tiny("ADD", shared=True)
    torch.testing.assert_close(add(swapped), add(x), rtol=1e-12, atol=1e-12)
    sub = _tiny("SUB", shared=True)
    spec, spec_swapped = sub.front_end(x), sub.front_end(swapped)
    joint = sub.integrate(*(sub.encoder_left(t) for t in sub.embed(spec)))
    joint_swapped = sub.integrate(*(sub.encoder_left(t) for t in sub.embed(spec_swapped)))
    torch.testing.assert_close(joint_swapped, -joint, rtol=1e-12, atol=1e-12)
    assert (sub(swapped) - sub(x)).abs().max() > 1e-3
    nsp_add = _tiny("ADD", shared=False)
    assert (nsp_add(swapped) - nsp_add(x)).abs().max() > 1e-3


def test_bad_options_are_refused():
    with pytest.raises(InputError, match="integration"):
        bast.BAST(integration="MUL")
    with pytest.raises(InputError, match="share_weights"):
        bast.BAST(share_weights="yes")


# -- losses --------------------------------------------------------------------------------------------


def test_losses_known_values():
    y = bast.angles_to_targets([0.0, 90.0, 200.0]).double()
    assert float(bast.angular_distance(y, y)) < 2e-3
    assert float(bast.angular_distance(-y, y)) == pytest.approx(math.pi, abs=2e-3)
    assert float(bast.angular_distance(2.5 * y, y)) < 2e-3  # scale-free
    quarter = bast.angles_to_targets([90.0, 180.0, 290.0]).double()
    assert float(bast.angular_distance(quarter, y)) == pytest.approx(math.pi / 2, abs=1e-9)
    assert float(bast.LOSSES["MSE"](-y, y)) == pytest.approx(2.0)
    assert float(bast.LOSSES["MIX"](-y, y)) == pytest.approx(2.0 + math.pi, abs=2e-3)
    out = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    bast.LOSSES["AD"](out + y, y).backward()
    assert torch.isfinite(out.grad).all()
    # the cos_sin decoder reads [cos az, sin az] back to degrees in [0, 360), whatever the vector's length
    decoded = _tiny().decode(torch.cat([y, 2.5 * y]))["azimuth"]
    np.testing.assert_allclose(decoded.numpy(), [0.0, 90.0, 200.0] * 2, atol=1e-9)


# -- AttnLRP -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("integration", "shared", "epsilon", "softmax"),
                         [("SUB", False, 0.0, "attnlrp"), ("CONCAT", True, 1e-3, "attnlrp"), ("ADD", True, 0.0, "cp")])
def test_attn_lrp_conserves_relevance(integration, shared, epsilon, softmax):
    model = _tiny(integration, shared)
    result = attn.attn_lrp(model, _ears(2), epsilon=epsilon, softmax=softmax)
    wave, spec = result["waveform"], result["spectrogram"]
    absorbed = sum(wave[c].values for c in wave.coords if c.startswith("absorbed_"))
    np.testing.assert_allclose(wave.relevance_sum + absorbed, wave.output, rtol=1e-6)
    np.testing.assert_allclose(spec.relevance_sum, wave.relevance_sum, rtol=1e-6)  # the front end conserves
    assert ("absorbed_softmax" in wave.coords) is (softmax == "attnlrp")
    assert spec.dims == ("example", "ear", "frequency", "time") and spec.frequency[-1] == 8000.0


def test_attn_lrp_keeps_the_prediction_on_digital_silence():
    """Review: the identity rule on ``Decibel`` replaced the -140 dB floor of silent frames by 0, so
    AttnLRP explained (and reported) a different prediction; the floor now absorbs its share like a bias."""
    model = _tiny("SUB", bias=False)
    ears = _ears(2)
    ears[..., :4000] = 0.0  # the first half is digital silence
    out = _outputs(model, ears)
    wave = attn.attn_lrp(model, ears, epsilon=0.0, softmax="cp")["waveform"]
    np.testing.assert_allclose(wave.output, np.linalg.norm(out, axis=1), rtol=1e-9)
    np.testing.assert_allclose(wave.azimuth_pred, np.degrees(np.arctan2(out[:, 1], out[:, 0])) % 360, atol=1e-7)
    assert float(np.abs(wave.absorbed_bias).min()) > 0  # the floor's share left the network
    np.testing.assert_allclose(wave.relevance_sum + wave.absorbed_bias, wave.output, rtol=1e-6)


def test_attn_lrp_exact_without_additive_constants():
    model = _tiny("SUB", bias=False)
    with torch.no_grad():
        model.positions.weight.zero_()
    wave = attn.attn_lrp(model, _ears(2), epsilon=0.0, softmax="cp")["waveform"]
    assert set(c for c in wave.coords if c.startswith("absorbed_")) <= {"absorbed_bias"}
    np.testing.assert_allclose(wave.relevance_sum, wave.output, rtol=1e-6)
    np.testing.assert_allclose(wave.output, np.linalg.norm(_outputs(model), axis=1), rtol=1e-9)


@pytest.mark.parametrize("target", ["azimuth", "angular_error"])
def test_attn_lrp_explains_scale_free_angle_targets(target):
    """Review 16, item 3: an angle does not change with |f|, so f . dq/df = 0; AttnLRP starts from the seed."""
    from xai_loc.explain import explain_arrays

    model = _tiny("SUB", bias=False)
    with torch.no_grad():
        model.positions.weight.zero_()
    out = _outputs(model)
    azimuth = np.degrees(np.arctan2(out[:, 1], out[:, 0]))
    truth = azimuth - np.array([10.0, -40.0])  # 10 and 40 degrees off
    _, res = explain_arrays(model, _ears(2), target=target, method="attn_lrp", epsilon=0.0, softmax="cp",
                            truth=truth if target == "angular_error" else None)
    expected = azimuth if target == "azimuth" else np.array([10.0, 40.0])
    np.testing.assert_allclose(res["explained"], expected, rtol=1e-9)
    np.testing.assert_allclose(res["attr_output"].sum(1), expected, rtol=1e-9)
    absorbed = sum(res["absorbed"].values())  # biases of the linear layers: none here
    np.testing.assert_allclose(res["relevance"].reshape(2, -1).sum(1) + absorbed, expected, rtol=1e-6)


def test_a_level_that_runs_once_per_ear_is_refused():
    """Review 16, item 1: the patch embedding runs once per ear; reading or replacing it at one call is wrong."""
    from xai_loc.explain import explain_arrays

    model = _tiny("SUB", shared=True)
    for level, runs in (("patches", 2), ("encoder_left", 2)):
        for method in ("attn_lrp", "integrated_gradients"):
            with pytest.raises(InputError, match=f"level {level!r} runs {runs} times per forward pass; choose a "
                                                 "module that runs once"):
                explain_arrays(model, _ears(1), target="direction", method=method, levels=("waveform", level))


def _outputs(model, ears=None) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(_ears(2) if ears is None else ears)).numpy()


def test_softmax_and_matmul_rules_match_their_formulas():
    scores = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    seed = torch.randn(3, 5, dtype=torch.float64)
    softmax = nn.Softmax(dim=-1)
    with attn.AttnLRP(softmax, epsilon=0.0) as lrp:
        s = softmax(scores)
        s.backward(seed)
    r_out = s.detach() * seed
    expected = scores.detach() * (r_out - s.detach() * r_out.sum(-1, keepdim=True))
    torch.testing.assert_close(scores.detach() * scores.grad, expected)
    np.testing.assert_allclose(lrp.ledger.total(3).numpy(),
                               (r_out.sum(-1) - expected.sum(-1)).numpy(), atol=1e-12)

    a = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    matmul = bast.MatMul()
    with attn.AttnLRP(matmul, epsilon=0.0):
        out = matmul(a, b)
        out.backward(torch.ones_like(out))
    total = out.detach().sum((1, 2))
    torch.testing.assert_close((a.detach() * a.grad).sum((1, 2)), total / 2)
    torch.testing.assert_close((b.detach() * b.grad).sum((1, 2)), total / 2)


def test_shared_add_relevance_swaps_with_the_ears():
    model = _tiny("ADD", shared=True)
    x = _ears(2)
    rel = attn.attn_lrp(model, x, target="sin", epsilon=0.0)["spectrogram"].values
    rel_swapped = attn.attn_lrp(model, x[:, ::-1].copy(), target="sin", epsilon=0.0)["spectrogram"].values
    np.testing.assert_allclose(rel_swapped, rel[:, ::-1], atol=1e-12)


def test_targets():
    y = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(attn.target_directions(y, "prediction"), torch.tensor([[0.6, 0.8]], dtype=torch.float64))
    torch.testing.assert_close(attn.target_directions(y, "sin"), torch.tensor([[0.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(attn.target_directions(y, 90.0), torch.tensor([[0.0, 1.0]], dtype=torch.float64))
    with pytest.raises(InputError, match="truth"):
        attn.target_directions(y, "truth")


# -- Integrated Gradients and rollout ---------------------------------------------------------------------


def test_integrated_gradients_completeness():
    model = _tiny("SUB")
    ig = attn.integrated_gradients(model, _ears(2), n_steps=32)
    assert ig.dims == ("example", "ear", "frequency", "time")
    np.testing.assert_allclose(ig.attribution_sum - (ig.output - ig.baseline_output), ig.delta, atol=1e-9)
    assert np.all(np.abs(ig.delta) < 1e-3 * np.maximum(np.abs(ig.output - ig.baseline_output), 1e-3))


@pytest.mark.parametrize("shared", [True, False])
def test_rollout_rows_sum_to_one(shared):
    model = _tiny("CONCAT", shared)
    result = attn.attention_rollout(model, _ears(2))
    np.testing.assert_allclose(result["matrices"].sum("key"), 1.0, atol=1e-12)
    assert (result["matrices"].values >= 0).all()
    np.testing.assert_allclose(result["patches"].sum(("ear", "patch")), 1.0, atol=1e-12)
    spec = result["spectrogram"]
    np.testing.assert_allclose(spec.sum(("ear", "frequency", "time")), 1.0, atol=1e-12)
    np.testing.assert_allclose(spec.sel(ear="left").sum(("frequency", "time")), 0.5, atol=1e-12)
    assert spec.shape == (2, 2, 129, 61)


# -- checkpoint and training ---------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    model = _tiny("SUB", shared=True).float()
    assert not any(k.startswith("front_end") for k in model.state_dict())
    path = save_checkpoint(model, tmp_path / "bast.safetensors",
                           {"condition": {"rooms": ["anechoic"], "snr": [20.0, 40.0]}})
    loaded = load_model(path)
    assert isinstance(loaded, bast.BAST) and loaded.config == model.config
    x = torch.from_numpy(_ears(2)).float()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_training_lowers_the_loss():
    model = _tiny("SUB").float()
    spec = model.front_end(torch.from_numpy(_ears(8, seed=1)).float())
    azimuth = np.array([90.0, 270.0] * 4)
    spec[1::2] = spec[1::2].flip(1)  # mirrored scenes: ears swapped
    info = bast.train_bast(model, spec, azimuth, loss="MIX", epochs=15, batch_size=4, lr=3e-3)
    assert info["loss_history"][-1] < 0.5 * info["loss_history"][0]
    assert bast.evaluate_bast(model, spec, azimuth)["lateral_sign_error"] == 0.0


# -- scenes and the table's helpers ----------------------------------------------------------------------------


def test_scenes_split_by_sound_and_carry_the_ild(tmp_path):
    from xai_loc.data.bast_scenes import BastSceneSpec, load_bast_scenes

    spec = BastSceneSpec(name="tiny", azimuths=(90.0, 270.0), kinds=("white_burst", "speech"), n_sounds=4,
                         test_fraction=0.5, snr=None)
    train, test = (load_bast_scenes(spec, split, root=tmp_path) for split in ("train", "test"))
    assert train.waveforms.shape == (4, 2, 8000) and test.waveforms.shape == (4, 2, 8000)
    assert not set(train.sound_key.values) & set(test.sound_key.values)
    power = (train.waveforms ** 2).sum("time")
    ild = 10 * np.log10(power.sel(ear="left") / power.sel(ear="right"))
    az = train.azimuth.values
    assert np.all(ild.values[az == 90.0] > 5) and np.all(ild.values[az == 270.0] < -5)
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(InputError, match="azimuths"):
        BastSceneSpec(azimuths=(400.0,))
    reseeded = BastSceneSpec(name="tiny", azimuths=(90.0, 270.0), kinds=("white_burst", "speech"), n_sounds=4,
                             test_fraction=0.5, snr=None, seed=1)
    with pytest.raises(InputError, match="another spec"):  # a file of the same name is never reused blindly
        load_bast_scenes(reseeded, "train", root=tmp_path)

    from xai_loc.experiments.bast_table import mirror_relevance

    view = mirror_relevance(_tiny("ADD", shared=True), train, n_steps=8)
    assert view.mass.shape == (3, 2, 2, 2, 129)  # explainer, pair (one sound per kind), side, ear, frequency
    np.testing.assert_allclose(view.ear_balance.sel(explainer="attention_rollout"), 0.0, atol=1e-12)
    np.testing.assert_allclose(view.pair_azimuth.values, [[90.0, 270.0]] * 2)


def test_mirror_pairs_and_markdown():
    import xarray as xr

    from xai_loc.experiments.bast_table import markdown_table, mirror_pairs

    azimuth = np.array([30.0, 330.0, 60.0, 300.0, 30.0, 330.0])
    sound = np.array([0, 0, 0, 0, 1, 1])
    pairs = mirror_pairs(azimuth, sound, azimuths=(30.0, 60.0), sounds_per_kind=1, sound_kind=np.array(["a"] * 6))
    np.testing.assert_array_equal(pairs, [[0, 1], [2, 3]])
    ds = xr.Dataset({"mean_error": (("sharing", "integration"), [[1.0, 2.0], [3.0, 4.5]])},
                    coords={"sharing": ["SP", "NSP"], "integration": ["ADD", "SUB"]})
    assert markdown_table(ds).splitlines()[-1] == "| NSP | 3.00 | 4.50 |"


def test_shipped_model_tells_left_from_right():
    from pathlib import Path

    from xai_loc.acoustics.binaural import anechoic_rirs, spatialize, synthesize
    from xai_loc.models.checkpoint import read_card

    path = Path(__file__).resolve().parents[1] / "pretrained" / "bast_default.safetensors"
    card = read_card(path)
    assert card["config"]["integration"] == "SUB" and not card["config"]["share_weights"]
    test = card["metrics"]["test"]
    assert test["metrics"]["mean_error"] < 30 and test["baseline"]["kind"] == "always 0 degrees" \
        and path.stat().st_size < 5e6
    model = load_model(path)
    brirs = anechoic_rirs([60.0, 300.0], [0.0, 0.0], fs=16000).double().numpy()
    dry = synthesize("pink_burst", 16000, 0.5, seed=123).astype(np.float64)
    x = torch.as_tensor(np.stack([spatialize(dry, h) for h in brirs]), dtype=torch.float32)
    with torch.no_grad():
        sin = model(x)[:, 1]
    assert sin[0] > 0.3 and sin[1] < -0.3


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"batch_size": 0}, {"lr": -1.0}, {"max_minutes": 0}, {"seed": -1},
                                 {"seed": 1.5}, {"seed": "0"}, {"lr": True}])
def test_bad_training_values_are_one_line_errors(bad):
    model = _tiny("SUB", shared=False)
    x = torch.zeros(4, 2, 129, 61)
    with pytest.raises(InputError, match=f"^{next(iter(bad))}="):
        bast.train_bast(model, x, np.zeros(4), **bad)


def test_fit_bast_refuses_a_bad_recipe_before_rendering(tmp_path):
    from xai_loc.data.bast_scenes import BastSceneSpec

    spec = BastSceneSpec(name="tiny", azimuths=(90.0, 270.0), kinds=("white_burst",), n_sounds=2, test_fraction=0.5,
                         snr=None)
    with pytest.raises(InputError, match="^seed=-1 is not allowed; use an integer >= 0$"):
        bast.fit_bast(spec, tmp_path / "m.safetensors", root=tmp_path / "data", seed=-1)
    assert not list(tmp_path.iterdir())


def test_the_time_budget_is_called_wall_clock():
    from xai_loc.cli.bast import binaural_bast_train

    text = next(p.help for p in binaural_bast_train.params if p.name == "max_minutes")
    assert text.startswith("Wall-clock budget") and "CPU" not in text


@pytest.mark.parametrize("where", ["azimuths", "spectrograms"])
def test_non_finite_training_inputs_are_refused_before_training(where):
    model = _tiny("SUB", shared=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, azimuth = torch.zeros(4, 2, 129, 61), np.zeros(4)
    if where == "azimuths":
        azimuth[2] = np.nan
    else:
        x[1, 0, 5, 5] = np.inf
    with pytest.raises(InputError, match=rf"^{where} of 1 example\(s\) hold NaN or infinite values \(the first: "
                                         rf"example {2 if where == 'azimuths' else 1}\)"):
        bast.train_bast(model, x, azimuth, epochs=1)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_rates_without_a_qualifying_target_are_undefined_not_zero():
    from xai_loc.models.bast import _azimuth_scores

    midline = _azimuth_scores(np.array([0.0, 180.0]), np.array([0.0, 180.0]))  # no lateral target
    assert midline["lateral_sign_error"] is None and midline["front_back_rate"] == 0.0
    axis = _azimuth_scores(np.array([90.0, 270.0]), np.array([90.0, 270.0]))  # none can be front-back confused
    assert axis["front_back_rate"] is None and axis["lateral_sign_error"] == 0.0
    assert midline["mean_error"] == axis["mean_error"] == 0.0


def test_fit_bast_stores_a_scored_checkpoint_with_its_card(tmp_path):
    from xai_loc.data.bast_scenes import BastSceneSpec
    from xai_loc.models import load_model, read_card

    spec = BastSceneSpec(name="tiny", azimuths=(90.0, 270.0), kinds=("white_burst", "speech"), n_sounds=4,
                         test_fraction=0.5, snr=None)
    path, card = bast.fit_bast(spec, tmp_path / "b.safetensors", root=tmp_path, epochs=1, batch_size=4, dim=16,
                               depth=1, heads=2, max_minutes=None)
    assert path == tmp_path / "b.safetensors" and card == read_card(path)
    stored = card["training"]["stored_dtype"]
    assert stored in ("float16", "float32") and card["storage"]["dtype"] == stored
    assert set(card["storage"]["change"]) == set(bast.FP16_TOLERANCE)  # every metric compared
    test = card["metrics"]["test"]
    assert test["baseline"]["kind"] == "always 0 degrees" and 0.0 <= test["metrics"]["accuracy_5"] <= 1.0
    model = load_model(path)
    x = torch.randn(1, *model.input_shape)
    assert torch.isfinite(model(x)).all()
