"""Regression tests of the explain review: bad inputs get one-line errors, edge cases give real numbers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from zennit.rules import Epsilon

from xai_loc.errors import InputError
from xai_loc.explain import Explainer, explain
from xai_loc.explain.attn_lrp import AttnLRP
from xai_loc.explain.attribute import explain_arrays
from xai_loc.explain.canonizers import FoldBatchNormForward
from xai_loc.explain.cuenet import on_cue_maps
from xai_loc.explain.rules import FastEpsilon, SmoothMaxPool
from xai_loc.models import LocCNN, build_model

torch.set_num_threads(1)

#: Small configurations of the binaural families (those of tests/test_pipeline.py).
TINY = {"cochcnn": {"layers": ["c4 1x8", "p1x8", "c8 2x4", "p2x4"], "n_samples": 4800, "dense": 16},
        "cuenet": {"channels": 8, "hidden": 16, "n_samples": 2205},
        "bast": {"dim": 16, "depth": 1, "heads": 2, "dim_head": 8, "mlp_dim": 32, "n_samples": 4000}}


def tiny(arch: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(arch, **TINY[arch]).double().eval()


@pytest.fixture()
def loccnn() -> LocCNN:
    torch.manual_seed(0)
    return LocCNN(4, 350).double().eval()


def windows(n: int = 2) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, 4, 350))


POSITIONS = np.array([[1.0, 5.0, 1.2], [2.0, 6.0, 1.4]])


# -- 1: explain_batch only inside the with block ---------------------------------------------------

def test_explain_batch_outside_its_with_block_is_refused():
    torch.manual_seed(0)
    model = LocCNN(4, 350).double()  # train mode: dropout on outside the block
    x = torch.as_tensor(windows())
    explainer = Explainer(model, target="prediction")
    with pytest.raises(InputError, match="^Explainer.explain_batch outside its with block is not allowed .*"
                                         "use Explainer inside a with block$"):
        explainer.explain_batch(x)
    with explainer:
        inside = explainer.explain_batch(x)
    assert model.training
    with pytest.raises(InputError, match="use Explainer inside a with block$"):
        explainer.explain_batch(x)
    with explainer:  # a second block works again, with the same numbers
        again = explainer.explain_batch(x)
    np.testing.assert_array_equal(again["relevance"], inside["relevance"])


# -- 2: a 'mean' baseline or reference needs more than one window ----------------------------------

def test_mean_of_one_window_is_refused_and_an_explicit_mean_is_used(loccnn):
    x = windows(4)
    positions = np.random.default_rng(2).random((4, 3))
    for options in ({"method": "integrated_gradients", "baseline": "mean", "n_steps": 8},
                    {"target": "contrast", "reference": "mean"}):
        with pytest.raises(InputError, match="^a 'mean' baseline or reference of 1 window is not allowed .*"
                                             r"give at least 2 windows or mean_input=\[mic, time\]$"):
            explain(loccnn, x[:1], positions=positions[:1], **options)
        whole = explain(loccnn, x, positions=positions, **options)
        alone = explain(loccnn, x[:1], positions=positions[:1], mean_input=x.mean(0), **options)
        assert np.abs(alone.values).max() > 0  # the window alone no longer is its own baseline
        np.testing.assert_allclose(alone.values[0], whole.values[0], rtol=1e-9, atol=1e-15)
    with pytest.raises(InputError, match=r"^mean_input of shape \(4, 3\) are not allowed; use \[4, 350\]$"):
        explain(loccnn, x[:1], positions=positions[:1], mean_input=np.zeros((4, 3)), baseline="mean",
                method="integrated_gradients")


# -- 3: smooth max-pool relevance at large powers ----------------------------------------------------

def _smooth(pool: nn.Module, power: float, x: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    handles = SmoothMaxPool(power).register(pool)
    try:
        leaf = x.clone().requires_grad_()
        (out,) = torch.autograd.grad(pool(leaf), leaf, relevance)
    finally:
        handles.remove()
    return out


def test_smooth_maxpool_does_not_overflow_at_large_powers():
    pool = nn.MaxPool1d(3)
    x = torch.tensor([[[1000.0, 500.0, -2.0, 3.0, 6.0, 0.0]]])  # 1000 ** 20 overflows float32 (and float64)
    relevance = torch.tensor([[[2.0, 3.0]]])
    out = _smooth(pool, 20.0, x, relevance)
    share = 0.5 ** 20 / (1 + 0.5 ** 20)
    expected = [2 * (1 - share), 2 * share, 0.0, 3 * 0.5 ** 20 / (1 + 0.5 ** 20), 3 / (1 + 0.5 ** 20), 0.0]
    np.testing.assert_allclose(out[0, 0].numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("pool", [nn.MaxPool1d(3, 2), nn.MaxPool1d(4, 3, padding=1),
                                  nn.MaxPool1d(5, 4, padding=2, ceil_mode=True),
                                  nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)], ids=str)
def test_smooth_maxpool_scaled_weights_match_the_formula(pool):
    """Overlapping, padded, ceil-mode windows: ``R_i = sum_j x_i^p / sum_k x_k^p R_j``, computed plainly in float64
    on inputs scaled by 1e-110 (the rule is scale-free); the rule gets inputs whose cubes overflow float64."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 23, dtype=torch.float64) if isinstance(pool, nn.MaxPool2d) else \
        torch.randn(2, 3, 23, dtype=torch.float64)
    relevance = torch.randn_like(pool(x))
    weight = x.clamp(min=0) ** 3
    avg = nn.functional.avg_pool2d if isinstance(pool, nn.MaxPool2d) else nn.functional.avg_pool1d
    leaf = weight.clone().requires_grad_()
    pooled = avg(leaf, pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode, count_include_pad=True)
    (grad,) = torch.autograd.grad(pooled, leaf, relevance / torch.where(pooled > 0, pooled, 1.0).detach())
    np.testing.assert_allclose(_smooth(pool, 3.0, x * 1e110, relevance).numpy(), (weight * grad).numpy(), rtol=1e-12,
                               atol=1e-14)


def test_smooth_maxpool_power_50_on_a_localizer_is_finite(loccnn):
    rel = explain(loccnn.float(), windows().astype(np.float32), positions=POSITIONS, maxpool="smooth",
                  maxpool_power=50.0)
    assert np.isfinite(rel.values).all() and np.isfinite(rel.relevance_sum.values).all()
    assert np.abs(rel.values).max() > 0


# -- 4: LRP-0 where a layer's output is exactly 0 ------------------------------------------------------

@pytest.mark.parametrize("fast", [True, False], ids=["fast", "zennit"])
def test_lrp0_gives_nothing_through_a_zero_output(fast):
    from xai_loc.explain.rules import epsilon_stabilizer

    rule = FastEpsilon(0.0) if fast else Epsilon(epsilon=epsilon_stabilizer(0.0))
    layer = nn.Linear(3, 2, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 1.0, 5.0], [2.0, -1.0, 4.0]]))
    x = torch.tensor([[1.0, -1.0, 0.0]], dtype=torch.float64, requires_grad=True)  # z = (0, 3)
    handles = rule.register(layer)
    try:
        (relevance,) = torch.autograd.grad(layer(x), x, torch.tensor([[1.0, 1.0]], dtype=torch.float64))
    finally:
        handles.remove()
    # only z_1 = 3 passes relevance: x_i w_1i / 3
    np.testing.assert_allclose(relevance[0].numpy(), [2.0 / 3.0, 1.0 / 3.0, 0.0], rtol=1e-15)


def test_cochleagram_lrp0_through_digital_silence_is_finite_and_conserved():
    model = tiny("cochcnn").float()
    x = torch.randn(1, *model.input_shape, generator=torch.Generator().manual_seed(3))
    x[..., 1000:] = 0.0  # trailing digital silence: in float32 front-end outputs are exactly 0 there
    _, out = explain_arrays(model, x, method="lrp", composite="cochcnn", target="class_logit", epsilon=0.0,
                            levels=("waveform", "front_end"))
    wave, front = out["levels"]["waveform"].astype(np.float64), out["levels"]["front_end"].astype(np.float64)
    assert np.isfinite(wave).all() and np.abs(wave).sum() > 0
    # the bias-free front end conserves relevance, up to float32 rounding of the whole map's mass
    assert abs(wave.sum() - front.sum()) < 1e-5 * np.abs(front).sum()


# -- 5 and 8: true values --------------------------------------------------------------------------

def test_class_labels_must_be_integers():
    model = tiny("cochcnn")
    x = 0.05 * torch.randn(2, *model.input_shape, dtype=torch.float64)
    with pytest.raises(InputError, match=r"^true class 1\.7 is not allowed; use integer class labels$"):
        explain_arrays(model, x, method="saliency", target="true_class_logit", truth=[1.7, 3.2])
    with pytest.raises(InputError, match="^true class labels of dtype <U1 are not allowed; use numbers$"):
        explain_arrays(model, x, method="saliency", target="true_class_logit", truth=np.array(["1", "2"]))
    with pytest.raises(InputError, match="^true class labels of dtype bool are not allowed; use numbers$"):
        explain_arrays(model, x, method="saliency", target="true_class_logit", truth=[True, False])
    with pytest.raises(InputError, match=r"^true class 0\.5 is not allowed"), \
            Explainer(model, method="saliency", target="true_class_logit") as explainer:
        explainer.explain_batch(x, torch.tensor([0.5, 1.0]))
    _, floats = explain_arrays(model, x, method="saliency", target="true_class_logit", truth=[1.0, 3.0])
    _, ints = explain_arrays(model, x, method="saliency", target="true_class_logit", truth=[1, 3])
    np.testing.assert_array_equal(floats["relevance"], ints["relevance"])
    assert [int(np.flatnonzero(seed)[0]) for seed in floats["attr_output"]] == [1, 3]


def test_true_values_must_have_the_shape_of_the_output_kind(loccnn):
    x = windows()
    with pytest.raises(InputError, match=r"^true source positions of shape \(2, 2\) are not allowed; use \[2, 3\]$"):
        explain_arrays(loccnn, x, truth=np.zeros((2, 2)))
    with pytest.raises(InputError, match=r"^true source positions of shape \(3, 3\) are not allowed; use \[2, 3\]$"):
        with Explainer(loccnn) as explainer:
            explainer.explain_batch(x, np.zeros((3, 3)))
    bast = tiny("bast")
    ears = 0.05 * torch.randn(2, *bast.input_shape, dtype=torch.float64)
    with pytest.raises(InputError, match=r"^true azimuths \(degrees\) of shape \(2, 2\) are not allowed; "
                                         r"use \[2\] or \[2, 1\]$"):
        explain_arrays(bast, ears, method="saliency", target="true_direction", truth=np.zeros((2, 2)))
    _, out = explain_arrays(bast, ears, method="saliency", target="true_direction", truth=[0.0, 90.0])
    np.testing.assert_allclose(out["attr_output"] / out["prediction"], [[1.0, 0.0], [0.0, 1.0]], atol=1e-12)


# -- 6: the cue network's front end has no LRP rules ---------------------------------------------------

def test_lrp_on_a_cue_network_starts_at_its_front_end():
    model = tiny("cuenet")
    with pytest.raises(InputError, match="^level 'waveform' is not allowed for method 'lrp' on cuenet: no LRP rule "
                                         "covers its front end; allowed: 'front_end' first"):
        Explainer(model, target="class_logit", composite="cuenet")
    ears = 0.05 * torch.randn(2, *model.input_shape, dtype=torch.float64)
    _, out = explain_arrays(model, ears, target="class_logit", composite="cuenet", levels="front_end")
    with torch.no_grad():
        cues = model.front_end(ears)
    _, twin = explain_arrays(on_cue_maps(model), cues, target="class_logit", composite="cuenet")
    np.testing.assert_allclose(out["relevance"], twin["relevance"], rtol=1e-12, atol=1e-15)
    Explainer(model, target="class_logit", method="saliency")  # gradients may go on to the waveform


# -- 7: autograd contexts --------------------------------------------------------------------------

def test_lrp_under_no_grad_and_inference_mode(loccnn):
    x = windows()
    outside = explain(loccnn, x, positions=POSITIONS)
    with torch.no_grad():
        inside = explain(loccnn, x, positions=POSITIONS)
    np.testing.assert_array_equal(inside.values, outside.values)
    with torch.inference_mode(), pytest.raises(InputError, match=r"^explaining inside torch.inference_mode\(\) is "
                                                                   "not allowed"):
        explain(loccnn, x, positions=POSITIONS)


# -- 9 and 10: levels -------------------------------------------------------------------------------

def test_levels_against_the_forward_order_are_refused(loccnn):
    x = windows()
    with pytest.raises(InputError, match=r"^level 'conv1' is not computed from level 'conv3', the method's input "
                                         r"\(the first level\); the model runs them in the order \('conv1', 'conv3'\)"):
        explain_arrays(loccnn, x, target="prediction", levels=("conv3", "conv1"))
    _, out = explain_arrays(loccnn, x, target="prediction", levels=("conv1", "conv3"))
    assert out["levels"]["conv1"].shape == (2, 96, 350) and np.abs(out["levels"]["conv3"]).sum() > 0


def test_explain_labels_only_waveform_relevance(loccnn):
    with pytest.raises(InputError, match=r"^levels=\('conv1',\) are not allowed in explain\(\), which labels waveform "
                                         "relevance"):
        explain(loccnn, windows(), positions=POSITIONS, levels="conv1")
    rel = explain(loccnn, windows(), positions=POSITIONS, levels=("waveform", "conv1"))
    assert rel.dims == ("window", "mic", "time") and rel.shape == (2, 4, 350)


# -- 11: BatchNorms that cannot be merged or folded ------------------------------------------------------

class TwoBatchNorms(nn.Module):
    def __init__(self, **second) -> None:
        super().__init__()
        self.c1, self.b1, self.r = nn.Conv1d(2, 3, 3, padding=1), nn.BatchNorm1d(3), nn.ReLU()
        self.c2, self.b2 = nn.Conv1d(3, 3, 3, padding=1), nn.BatchNorm1d(3, **second)
        self.f, self.out = nn.Flatten(), nn.Linear(3 * 8, 3)

    def forward(self, x):
        return self.out(self.f(self.b2(self.c2(self.r(self.b1(self.c1(x)))))))


@pytest.mark.parametrize(("second", "message"), [({"affine": False}, "without affine parameters"),
                                                 ({"track_running_stats": False}, "without running statistics")])
def test_batch_norms_that_cannot_be_merged_are_named(second, message):
    torch.manual_seed(0)
    model = TwoBatchNorms(**second).double().eval()
    with torch.no_grad():
        model.b1.running_mean.normal_()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InputError, match=f"^BatchNorm 'b2' {message} .* is not allowed for LRP"):
        with Explainer(model, target="prediction"):
            pass
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and model.b1.eps == 1e-5


def test_a_batch_norm_without_statistics_is_not_folded():
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.BatchNorm1d(3, track_running_stats=False),
                          nn.Flatten(), nn.Linear(3 * 6, 2)).eval()
    with pytest.raises(InputError, match="^BatchNorm '2' without running statistics"):
        FoldBatchNormForward().apply(model)


# -- 12 and 13: explain()'s other inputs ------------------------------------------------------------

@pytest.mark.parametrize(("options", "message"), [
    ({"positions": [["a", "b", "c"]] * 2}, "^positions of type list that are not an array of numbers are not allowed"),
    ({"positions": [[1.0, 2.0, 3.0], [1.0, 2.0]]}, "^positions of type list that are not an array of numbers"),
    ({"mic_positions": "abc"}, r"^mic_positions of type str .*; use \[4, 3\] numbers$"),
    ({"fs": "abc"}, "^fs='abc' is not allowed; use a number > 0$"),
    ({"fs": 0}, "^fs=0 is not allowed; use a number > 0$"),
    ({"fs": -16000.0}, "^fs=-16000.0 is not allowed"),
    ({"fs": float("nan")}, "^fs=nan is not allowed")])
def test_bad_positions_and_sample_rates_are_refused(loccnn, options, message):
    with pytest.raises(InputError, match=message):
        explain(loccnn, windows(), **{"positions": POSITIONS, **options})


def test_complex_windows_are_refused(loccnn):
    x = windows() + 1j * windows()
    with pytest.raises(InputError, match="^windows of dtype complex128 are not allowed; use real numbers$"):
        explain(loccnn, x, positions=POSITIONS)
    with pytest.raises(InputError, match="^windows of dtype torch.complex128 are not allowed; use real numbers$"):
        with Explainer(loccnn) as explainer:
            explainer.explain_batch(torch.as_tensor(x), POSITIONS)
    with pytest.raises(InputError, match=r"^windows of shape \(2, 3, 350\) are not allowed; the model takes "
                                         r"\(n, 4, 350\)$"):
        with Explainer(loccnn, target="prediction") as explainer:
            explainer.explain_batch(torch.zeros(2, 3, 350, dtype=torch.float64))


# -- 14: as_audio's peak --------------------------------------------------------------------------------

def test_audio_peak_is_between_zero_and_one(loccnn):
    rel = explain(loccnn, windows(), positions=POSITIONS)
    for peak in (-0.5, float("nan"), 1.5, "loud"):
        with pytest.raises(InputError, match=f"^peak={peak!r} is not allowed; use a number >= 0 and <= 1$"):
            rel.xai.as_audio(peak=peak)
    audio = rel.xai.as_audio(peak=np.float32(0.5))
    assert np.abs(audio).max() == pytest.approx(0.5)
    raw = rel.xai.as_audio(peak=0)
    np.testing.assert_allclose(audio, raw * (0.5 / np.abs(raw).max()), rtol=1e-6)


# -- 15: NumPy scalars as options -----------------------------------------------------------------------

def test_numpy_scalars_are_options_like_python_numbers(loccnn):
    x = windows()
    for numpy_options, plain in [({"seed": np.int64(3), "n_samples": np.int64(2)}, {"seed": 3, "n_samples": 2}),
                                 ({"baseline": np.float32(0.5)}, {"baseline": 0.5}),
                                 ({"gamma": np.float32(0.5), "batch_size": np.int64(1)}, {"gamma": 0.5})]:
        method = "gradient_shap" if "seed" in plain else "integrated_gradients" if "baseline" in plain else "lrp"
        with_numpy = explain(loccnn, x, positions=POSITIONS, method=method, **numpy_options)
        with_python = explain(loccnn, x, positions=POSITIONS, method=method, **plain)
        np.testing.assert_allclose(with_numpy.values, with_python.values, rtol=1e-12, atol=1e-18)
        assert with_numpy.attrs["method_params"] == with_python.attrs["method_params"]
        assert with_numpy.attrs["composite_params"] == with_python.attrs["composite_params"]
    assert AttnLRP(tiny("bast"), epsilon=np.float32(0.5)).epsilon == 0.5
    rel = explain(loccnn, x, positions=POSITIONS, fs=np.float32(8000.0))
    np.testing.assert_array_equal(rel.time.values, np.arange(350) / 8000.0)
    assert rel.attrs["fs"] == 8000.0
