"""Explanations: rules, composites, methods, targets, relevance arrays and stores, audit."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
import xarray as xr
from torch import nn
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import LayerMapComposite, SpecialFirstLayerMapComposite, layer_map_base
from zennit.core import Hook
from zennit.layer import Sum
from zennit.rules import Epsilon, Gamma, Norm, Pass, WSquare, ZBox
from zennit.types import Convolution, MaxPool
from zennit.types import Linear as AnyLinear

from xai_loc.errors import InputError
from xai_loc.explain import (
    COMPOSITES,
    METHODS,
    TARGETS,
    Explainer,
    FastGamma,
    MergeBatchNorm,
    SmoothMaxPool,
    WindowBox,
    audit,
    explain,
    explain_store,
    open_explained_signals,
    open_relevance,
    write_wavs,
)
from xai_loc.explain.attribute import explain_arrays, model_digest
from xai_loc.explain.canonizers import IDENTITY_EPS
from xai_loc.explain.rules import FastEpsilon, FastNorm, FastPass, FastWSquare
from xai_loc.explain.targets import targets_for
from xai_loc.models import LocCNN, SampleCNN
from xai_loc.models.base import OUTPUT_KINDS
from xai_loc.models.layers import Gate

N_MICS, N_TIME = 16, 1024


def randomized(model: nn.Module, seed: int = 0, zero_bias: bool = False) -> nn.Module:
    """Random float64 weights and BatchNorm statistics; eval mode. ``zero_bias``: no bias anywhere,
    BatchNorm means and shifts included."""
    gen = torch.Generator().manual_seed(seed)
    model = model.double()
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if not value.is_floating_point():
                continue
            noise = torch.randn(value.shape, generator=gen, dtype=value.dtype)
            if key.endswith("running_var"):
                value.copy_(0.2 * noise.abs() + 0.5)
            elif zero_bias and (key.endswith("bias") or key.endswith("running_mean")):
                value.zero_()
            elif key.endswith("weight") and value.dim() > 1:
                value.copy_(noise * (2.0 / value[0].numel()) ** 0.5)
            elif key.endswith("weight"):  # BatchNorm scale
                value.copy_(1.0 + 0.2 * noise)
            else:
                value.copy_(0.2 * noise)
    return model.eval()


def windows(batch: int = 2, n_mics: int = N_MICS, n_time: int = N_TIME, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, n_mics, n_time, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


POSITIONS = np.array([[1.7, 5.5, 1.2], [1.5, 5.3, 1.4]])


def hooks_left(model: nn.Module) -> int:
    """Hooks on the model's modules, and forwards replaced by rules (xai_loc.explain.rules.NodeRule)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) + ("forward" in m.__dict__) for m in model.modules())


# --- registries and options ----------------------------------------------------------------

def test_registries_and_option_errors():
    assert set(COMPOSITES) == {"paper", "paper-samplecnn-reversed-gate", "epsilon", "epsilon_plus_flat",
                               "epsilon_gamma_box", "epsilon_alpha2_beta1", "cochcnn", "tfcnn", "cuenet"}
    assert {"lrp", "integrated_gradients", "saliency", "input_x_gradient", "deeplift", "gradient_shap",
            "occlusion", "attn_lrp"} <= set(METHODS)
    assert targets_for("position") == ["truth", "prediction", "x", "y", "z", "error", "contrast"]
    assert all(t.description and set(t.kinds) <= set(OUTPUT_KINDS) for t in TARGETS.values())
    model = LocCNN(4, 175)
    x = torch.zeros(1, 4, 175)
    with pytest.raises(InputError, match="unknown composite 'nope'; allowed: paper"):
        explain(model, x, composite="nope", target="prediction")
    with pytest.raises(InputError, match="option 'gama' is not allowed"):
        explain(model, x, target="prediction", gama=0.1)
    with pytest.raises(InputError, match="first_rule='box' is not allowed"):
        explain(model, x, target="prediction", first_rule="box")
    with pytest.raises(InputError, match="n_steps=0"):
        explain(model, x, method="integrated_gradients", target="prediction", n_steps=0)
    with pytest.raises(InputError, match="target 'truth' needs the true source positions"):
        explain(model, x)
    with pytest.raises(InputError, match="NaN"):
        explain(model, torch.full((1, 4, 175), float("nan")), target="prediction")
    with pytest.raises(InputError, match="do not fit the model"):
        explain(model, torch.zeros(1, 3, 175), target="prediction")
    with pytest.raises(InputError, match="reference="):
        explain(model, x, target="contrast", reference="median")
    # review: these gave NaN relevance silently, a KeyError and captum's AssertionError
    with pytest.raises(InputError, match="^positions hold NaN or infinite values"):
        explain(model, x, positions=[[1.0, float("nan"), 1.0]])
    with pytest.raises(InputError, match="^no windows to explain"):
        explain(model, x[:0], positions=np.zeros((0, 3)))
    with pytest.raises(InputError, match="^no inputs to explain"):
        explain_arrays(model, x[:0].numpy(), target="prediction")
    with pytest.raises(InputError, match="^the true values hold NaN"):
        explain_arrays(model, x.numpy(), target="truth", truth=[[1.0, 2.0, float("inf")]])
    with pytest.raises(InputError, match="^stride=100 is not allowed with an occlusion window of 50 samples"):
        explain(model, x, method="occlusion", target="prediction", window=50, stride=100)


# --- rules ---------------------------------------------------------------------------------

def assert_same_relevance(ours, theirs) -> None:
    """Equal up to rounding: 1e-10 relative, plus 1e-12 of the largest value for entries that cancel to ~0."""
    ours, theirs = (np.asarray(a.detach() if isinstance(a, torch.Tensor) else a) for a in (ours, theirs))
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12 * np.abs(theirs).max())


def single_layer_relevance(layer: nn.Module, rule: Hook, x: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    with Gradient(layer, LayerMapComposite([(type(layer), rule)])) as attributor:
        return attributor(x.clone(), seed)[1]


@pytest.mark.parametrize("layer", [nn.Conv1d(5, 6, 3, padding=1), nn.Conv1d(5, 6, 3, bias=False), nn.Linear(7, 4),
                                   nn.Conv2d(5, 6, 3, stride=2, padding=1)])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("seed_sign", ["any", "where z > 0"])
def test_fast_gamma_equals_zennit_gamma(layer, signed, seed_sign):
    """Both output signs carrying relevance (stacked terms) and only z > 0 (one term, as after ReLU-Pass)."""
    layer = layer.double()
    gen = torch.Generator().manual_seed(3)
    shape = {nn.Linear: (3, 7), nn.Conv1d: (3, 5, 12), nn.Conv2d: (3, 5, 9, 8)}[type(layer)]
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    x = x if signed else x.clamp(min=0)
    with torch.no_grad():
        z = layer(x)
    seed = torch.randn(z.shape, generator=gen, dtype=torch.float64)
    seed = seed if seed_sign == "any" else seed * (z > 0)
    theirs = single_layer_relevance(layer, Gamma(gamma=0.3), x, seed)
    ours = single_layer_relevance(layer, FastGamma(gamma=0.3), x, seed)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)


FAST_RULE_CASES = {
    "epsilon-linear": (nn.Linear(7, 4), FastEpsilon(1e-6), Epsilon(1e-6), (3, 7)),
    "epsilon-conv1d": (nn.Conv1d(5, 6, 3, padding=1), FastEpsilon(1e-6), Epsilon(1e-6), (3, 5, 12)),
    "epsilon-conv2d-strided": (nn.Conv2d(5, 6, 3, stride=2, padding=1), FastEpsilon(0.1), Epsilon(0.1), (3, 5, 9, 8)),
    "epsilon-conv1d-same": (nn.Conv1d(5, 6, 5, padding="same", dilation=2), FastEpsilon(1e-6), Epsilon(1e-6),
                            (3, 5, 12)),
    "epsilon-conv1d-reflect": (nn.Conv1d(5, 6, 3, padding=1, padding_mode="reflect"), FastEpsilon(1e-6),
                               Epsilon(1e-6), (3, 5, 12)),
    "wsquare-conv1d": (nn.Conv1d(5, 6, 7, padding=3), FastWSquare(1e-6), WSquare(1e-6), (3, 5, 20)),
    "wsquare-conv1d-nobias": (nn.Conv1d(5, 6, 3, bias=False), FastWSquare(1e-6), WSquare(1e-6), (3, 5, 12)),
    "wsquare-linear": (nn.Linear(7, 4), FastWSquare(1e-6), WSquare(1e-6), (3, 7)),
    "norm-maxpool1d": (nn.MaxPool1d(3), FastNorm(1e-6), Norm(1e-6), (3, 4, 31)),
    "norm-maxpool1d-overlapping": (nn.MaxPool1d(3, stride=2, padding=1), FastNorm(1e-6), Norm(1e-6), (3, 4, 31)),
    "norm-maxpool2d": (nn.MaxPool2d(2), FastNorm(1e-6), Norm(1e-6), (3, 4, 8, 6)),
    "norm-avgpool1d": (nn.AvgPool1d(4), FastNorm(1e-6), Norm(1e-6), (3, 4, 16)),
    "norm-adaptive-avgpool1d": (nn.AdaptiveAvgPool1d(1), FastNorm(1e-6), Norm(1e-6), (3, 4, 16)),
    "norm-sum": (Sum(dim=-1), FastNorm(1e-6), Norm(1e-6), (3, 4, 6, 2)),
    "pass-relu": (nn.ReLU(), FastPass(), Pass(), (3, 4, 16)),
    "pass-sigmoid": (nn.Sigmoid(), FastPass(), Pass(), (3, 4, 16)),
    "pass-batchnorm": (nn.BatchNorm1d(4).eval(), FastPass(), Pass(), (3, 4, 16)),
}


@pytest.mark.parametrize("case", list(FAST_RULE_CASES))
@pytest.mark.parametrize("signed", [True, False])
def test_fast_rules_equal_zennit_rules(case, signed):
    """Each rule computed in one autograd node gives zennit's stock rule's relevance (float64)."""
    layer, fast, stock, shape = FAST_RULE_CASES[case]
    layer = layer.double()
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    x = x if signed else x.abs()
    with torch.no_grad():
        output = layer(x)
    seed = torch.randn(output.shape, generator=gen, dtype=torch.float64)
    theirs = single_layer_relevance(layer, stock, x, seed)
    ours = single_layer_relevance(layer, fast.copy(), x, seed)
    assert_same_relevance(ours, theirs)
    assert "forward" not in layer.__dict__  # the rule put the module's own forward back


def test_fast_rules_keep_the_output_and_fall_back_where_they_cannot():
    conv = nn.Conv1d(4, 6, 3, padding=1, groups=2).double()  # grouped: zennit's own Gamma
    x = torch.rand(2, 4, 10, dtype=torch.float64)
    seed = torch.randn(2, 6, 10, dtype=torch.float64)
    assert_same_relevance(single_layer_relevance(conv, FastGamma(0.25), x, seed),
                          single_layer_relevance(conv, Gamma(0.25), x, seed))
    pool = nn.MaxPool1d(2, return_indices=True)  # a tuple output: zennit's Norm (which then fails alike)
    assert not FastNorm().supports(pool)
    layer = nn.Linear(7, 4).double()
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    with LayerMapComposite([(nn.Linear, FastEpsilon())]).context(layer) as modified:
        assert "forward" in layer.__dict__
        torch.testing.assert_close(modified(x), nn.functional.linear(x, layer.weight, layer.bias), rtol=0, atol=0)
        with torch.no_grad():
            assert modified(x).grad_fn is None
    assert "forward" not in layer.__dict__


class StockGateRule(Hook):
    """The gate rule as a zennit hook (xai-loc before its rules became single autograd nodes)."""

    def __init__(self, to: str = "signal") -> None:
        super().__init__()
        self.to = to

    def copy(self):
        return type(self)(self.to)

    def backward(self, module, grad_input, grad_output):
        relevance, s_grad = grad_output[0], grad_input[1]
        if self.to == "signal":
            return relevance, None if s_grad is None else torch.zeros_like(s_grad)
        if s_grad is None:
            return torch.zeros_like(relevance), None
        return torch.zeros_like(relevance), relevance.sum(dim=tuple(range(s_grad.dim(), relevance.dim())))


def stock_paper_composite(arch: str, gate: str) -> SpecialFirstLayerMapComposite:
    """The paper composites with zennit's stock rules only (and the gate rule as a zennit hook)."""
    layer_map = ([(Gate, StockGateRule(gate))] + ([(MaxPool, Norm(1e-6))] if arch == "loccnn" else [])
                 + layer_map_base(1e-6) + [(Convolution, Gamma(gamma=0.25, stabilizer=1e-6)),
                                           (nn.Linear, Epsilon(1e-6))])
    return SpecialFirstLayerMapComposite(layer_map=layer_map, first_map=[(AnyLinear, WSquare(1e-6))],
                                         canonizers=[MergeBatchNorm()])


@pytest.mark.parametrize("arch", [LocCNN, SampleCNN])
@pytest.mark.parametrize("composite, gate", [("paper", "signal"), ("paper-samplecnn-reversed-gate", "gate")])
def test_paper_composites_equal_zennit_stock_rules(arch, composite, gate):
    """The whole fast composite against zennit's rules, float64; the output is the (BatchNorm-merged) model's."""
    model = randomized(arch(N_MICS, N_TIME), seed=2)
    x = windows(3, seed=2)
    with torch.no_grad():
        plain = model(x)
    with Explainer(model, target="prediction", composite=composite) as explainer:
        ours = explainer.explain_batch(x)
    with Gradient(model, stock_paper_composite(model.arch_name, gate)) as attributor:
        output, theirs = attributor(x.clone(), lambda out: out.detach())
    assert_same_relevance(ours["relevance"], theirs)
    np.testing.assert_array_equal(ours["prediction"], output.detach().numpy())
    np.testing.assert_allclose(ours["prediction"], plain.numpy(), rtol=1e-12)


def test_cached_rule_parameters_follow_the_model_within_one_explainer():
    model = randomized(LocCNN(N_MICS, N_TIME), seed=3)
    first, second = windows(2, seed=4), windows(2, seed=5)

    def fresh(x):
        with Explainer(model, target="prediction") as explainer:
            return explainer.explain_batch(x)["relevance"]

    with Explainer(model, target="prediction") as explainer:
        results = [explainer.explain_batch(first)["relevance"], explainer.explain_batch(second)["relevance"]]
        with torch.no_grad():
            model.conv1.weight.mul_(1.5)
            model.conv3.weight.mul_(-0.5)
            model.conv3.bias.add_(0.1)
        changed = explainer.explain_batch(second)["relevance"]
    assert not np.allclose(changed, results[1])
    assert_same_relevance(changed, fresh(second))
    with torch.no_grad():
        model.conv1.weight.div_(1.5)
        model.conv3.bias.sub_(0.1)
        model.conv3.weight.div_(-0.5)
    assert_same_relevance(results[0], fresh(first))
    assert_same_relevance(results[1], fresh(second))


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_smooth_maxpool_conserves_and_spreads(power):
    pool = nn.MaxPool1d(3)
    x = torch.rand(2, 4, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seed = torch.rand(2, 4, 10, dtype=torch.float64)
    with Gradient(pool, LayerMapComposite([(nn.MaxPool1d, SmoothMaxPool(power))])) as attributor:
        relevance = attributor(x, seed)[1]
    torch.testing.assert_close(relevance.sum(), seed.sum(), rtol=1e-12, atol=0)
    weights = x.reshape(2, 4, 10, 3) ** power
    expected = (weights / weights.sum(-1, keepdim=True) * seed[..., None]).reshape(2, 4, 30)
    torch.testing.assert_close(relevance, expected)
    assert (relevance > 0).all()  # not winner-take-all


def test_window_box_is_zbox_with_each_windows_range():
    conv = nn.Conv1d(3, 4, 5, padding=2).double()
    x = torch.randn(2, 3, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seed = torch.randn(2, 4, 16, dtype=torch.float64)
    with Gradient(conv, LayerMapComposite([(nn.Conv1d, WindowBox())])) as attributor:
        ours = attributor(x, seed)[1]
    for i in range(2):
        box = ZBox(low=float(x[i].min()), high=float(x[i].max()))
        with Gradient(conv, LayerMapComposite([(nn.Conv1d, box)])) as attributor:
            torch.testing.assert_close(ours[i:i + 1], attributor(x[i:i + 1], seed[i:i + 1])[1])


# --- canonizers and the gate ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_a_merged_batchnorm_is_the_exact_identity_with_a_positive_eps(dtype):
    # torch 2.11 refuses eps <= 0 in F.batch_norm; IDENTITY_EPS is positive and vanishes in 1 + eps
    x = torch.randn(3, 4, 50, dtype=torch.float64).mul(1e3).to(dtype)
    ones, zeros = torch.ones(4, dtype=dtype), torch.zeros(4, dtype=dtype)
    assert IDENTITY_EPS > 0
    out = torch.nn.functional.batch_norm(x, zeros, ones, ones, zeros, training=False, eps=IDENTITY_EPS)
    assert torch.equal(out, x)


def test_batchnorm_merge_is_exact_and_reversible():
    model = randomized(SampleCNN(N_MICS, N_TIME))
    x = windows()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    eps = [m.eps for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    with torch.no_grad():
        reference = model(x)
        for canonizer, tol in ((MergeBatchNorm(), 1e-12), (SequentialMergeBatchNorm(), None)):
            handles = canonizer.apply(model)
            assert len(handles) == 12  # every BatchNorm of SampleCNN
            error = float(((model(x) - reference).abs() / reference.abs()).max())
            for handle in handles:
                handle.remove()
            if tol is not None:
                assert error < tol
            else:  # zennit 0.5.1 keeps eps: off by about 12 * eps / 2 relative
                zennit_error = error
    assert zennit_error > 1e-6
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.eps for m in model.modules() if isinstance(m, nn.BatchNorm1d)] == eps


def _gate_relevance(composite: str) -> tuple[float, float, float]:
    """Relevance at ReSE2's gate output and its SEBlock output, and the total at the input."""
    model = randomized(SampleCNN(N_MICS, N_TIME))
    caught = {}

    def catch(name):
        def hook(module, args, output):
            if output.requires_grad:  # not the no-grad forward of the all-zero window
                output.register_hook(lambda grad: caught.__setitem__(name, float(grad.sum())))
        return hook

    handles = [model.ReSE2.gate.register_forward_hook(catch("gate")),
               model.ReSE2.SEBlock.register_forward_hook(catch("se"))]
    rel = explain(model, windows(1), target="prediction", composite=composite)
    for handle in handles:
        handle.remove()
    return caught["gate"], caught["se"], float(rel.sum())


def test_gate_gets_no_relevance_and_reversed_variant_sends_it_into_the_gate():
    gate, se, _ = _gate_relevance("paper")
    assert gate != 0 and se == 0.0
    gate, se, _ = _gate_relevance("paper-samplecnn-reversed-gate")
    assert se != 0 and se == pytest.approx(gate, rel=1e-9)


# --- conservation and agreement ------------------------------------------------------------

@pytest.mark.parametrize("arch", [LocCNN, SampleCNN])
@pytest.mark.parametrize("maxpool", ["wta", "norm", "smooth"])
def test_epsilon_conserves_relevance_with_zero_biases(arch, maxpool):
    model = randomized(arch(N_MICS, N_TIME), zero_bias=True)
    rel = explain(model, windows(), positions=POSITIONS, composite="epsilon", epsilon=1e-12, stabilizer=1e-12,
                  maxpool=maxpool)
    seed = POSITIONS.sum(axis=1)
    np.testing.assert_allclose(rel.sum(("mic", "time")).values, seed, rtol=1e-6)
    np.testing.assert_allclose(rel["relevance_sum"].values, seed, rtol=1e-6)
    assert rel.attrs["relevance_fraction"] == pytest.approx(1.0, rel=1e-6)


class Plain(nn.Module):
    """Convolutions and dense layers only; flattening with ``view`` (captum's LRP breaks on nn.Flatten)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(4, 6, 5, padding=2)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv1d(6, 5, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(5 * 32, 3)

    def forward(self, x):
        return self.fc(self.relu2(self.conv2(self.relu1(self.conv1(x)))).view(x.shape[0], -1))


def test_zennit_epsilon_lrp_agrees_with_captum_lrp():
    from captum.attr import LRP
    from captum.attr._utils.lrp_rules import EpsilonRule

    model = randomized(Plain(), seed=4)
    x = windows(3, 4, 32)
    for k, axis in enumerate("xyz"):
        ours = explain(model, x, target=axis, composite="epsilon", epsilon=1e-9).values
        for layer in (model.conv1, model.conv2, model.fc):
            layer.rule = EpsilonRule(epsilon=1e-9)
        theirs = LRP(model).attribute(x.clone().requires_grad_(), target=k).detach().numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-7, atol=1e-12)


def test_integrated_gradients_complete_within_captums_delta():
    from captum.attr import IntegratedGradients

    model = randomized(LocCNN(4, 350))
    x = windows(2, 4, 350)
    rel = explain(model, x, positions=POSITIONS, method="integrated_gradients", n_steps=32)
    seed = torch.as_tensor(POSITIONS)
    attr, delta = IntegratedGradients(lambda v, w: (model(v) * w).sum(-1)).attribute(
        x.clone().requires_grad_(), baselines=torch.zeros_like(x), additional_forward_args=(seed,), n_steps=32,
        return_convergence_delta=True)
    np.testing.assert_allclose(rel.values, attr.detach().numpy(), rtol=1e-9, atol=1e-15)
    gap = np.abs(rel["relevance_sum"].values - rel["explained"].values)
    assert np.all(gap <= np.abs(delta.detach().numpy()) * (1 + 1e-6) + 1e-12)
    assert np.all(gap <= 0.05 * np.abs(rel["explained"].values))  # 32 steps over a random ReLU net


# --- known answer --------------------------------------------------------------------------

class OneMicWindow(nn.Module):
    """Output depends on microphone 1, samples 64..127 only (conv kernel 5 over outputs 66..125)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 3, 5, padding=2)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(3 * 192, 3)
        randomized(self, seed=5)
        with torch.no_grad():
            self.conv.weight[:, [0, 2, 3]] = 0
            self.conv.bias.fill_(0.1)
            fc = self.fc.weight.view(3, 3, 192)
            fc[..., :66] = 0
            fc[..., 126:] = 0

    def forward(self, x):
        return self.fc(self.flatten(self.relu(self.conv(x))))


KNOWN = [("lrp", {"composite": "paper"}), ("lrp", {"composite": "epsilon"}),
         ("lrp", {"composite": "epsilon_gamma_box"}), ("integrated_gradients", {"n_steps": 8}), ("saliency", {}),
         ("input_x_gradient", {}), ("deeplift", {}),
         ("gradient_shap", {"n_samples": 4}), ("occlusion", {"window": 32, "stride": 32})]


@pytest.mark.parametrize(("method", "options"), KNOWN, ids=[f"{m}-{o.get('composite', '')}" for m, o in KNOWN])
def test_relevance_only_inside_the_window_the_output_depends_on(method, options):
    model = OneMicWindow()
    x = windows(2, 4, 192).abs() + 0.1
    rel = explain(model, x, target="prediction", method=method, **options).values
    inside = np.zeros_like(rel, dtype=bool)
    inside[:, 1, 64:128] = True
    # zero outside, up to a few float64 roundings of the output for occlusion (f(x) - f(x occluded): the two forward
    # passes run in batches of other sizes, which some BLAS code paths round differently: -4.4e-16 seen)
    assert np.abs(rel[~inside]).max() <= 1e-12 * np.abs(rel).max()
    assert np.count_nonzero(rel[inside]) > 0.5 * inside.sum()


def test_gradient_shap_of_a_window_does_not_depend_on_the_selection_it_is_explained_in():
    model = randomized(LocCNN(4, 350))
    ds = xr.Dataset({"signals": (("window", "mic", "time"), windows(6, 4, 350).numpy())},
                    coords={"window": np.arange(6)})
    settings = {"target": "prediction", "method": "gradient_shap", "n_samples": 3, "batch_size": 4}
    whole = explain(model, ds, **settings)
    part = explain(model, ds.isel(window=[4, 5]), **settings)
    np.testing.assert_allclose(part.values, whole.values[4:], rtol=1e-6, atol=1e-6 * np.abs(whole.values).max())


# --- targets -------------------------------------------------------------------------------

def test_targets_seed_the_documented_vectors():
    model = randomized(LocCNN(4, 350))
    x = windows(2, 4, 350)
    with torch.no_grad():
        out, zero = model(x).numpy(), model(torch.zeros(1, 4, 350, dtype=torch.float64)).numpy()[0]

    def seed(target, **kw):
        rel = explain(model, x, positions=POSITIONS, target=target, **kw)
        return rel.xai.vector("attr_output").values, rel

    np.testing.assert_allclose(seed("truth")[0], POSITIONS)
    np.testing.assert_allclose(seed("prediction")[0], out)
    np.testing.assert_allclose(seed("y")[0], out * [0, 1, 0])
    np.testing.assert_allclose(seed("error")[0], out - POSITIONS)
    contrast, rel = seed("contrast")
    np.testing.assert_allclose(contrast, out - zero)
    assert rel.attrs["reference_output"] == pytest.approx(list(zero))
    np.testing.assert_allclose(seed("contrast", reference=(1, 2, 3))[0], out - [1, 2, 3])
    np.testing.assert_allclose(seed("contrast", reference="mean")[0],
                               out - model(x.mean(0, keepdim=True)).detach().numpy())
    with pytest.raises(InputError, match="train-mean"):
        seed("contrast", reference="train-mean")


# --- relevance arrays, stores, audio -------------------------------------------------------

def fake_dataset(path, n_sources: int = 3, per_source: int = 2, n_mics: int = 4, n_time: int = 350):
    """A dataset store laid out as xai_loc.data.store writes it (without simulating)."""
    from xai_loc.data.integrity import seal_store

    n = n_sources * per_source
    gen = np.random.default_rng(0)
    sources = gen.uniform([1.0, 4.5, 1.0], [2.5, 6.5, 1.5], (n_sources + 4, 3))
    sid = np.repeat(np.arange(n_sources), per_source)
    scene = {"name": "fake", "sources": sources.tolist(), "splits": {"train": [3, 4, 5, 6], "test": [0, 1, 2]}}
    ds = xr.Dataset(
        {"signals": (("window", "mic", "time"), (0.01 * gen.standard_normal((n, n_mics, n_time))).astype(np.float32))},
        coords={"window": np.arange(n), "source_id": ("window", sid), "window_index": ("window", np.tile(
                np.arange(per_source), n_sources)), "speech_id": ("window", np.array([f"utt{i}" for i in sid])),
                "source_position": (("window", "xyz"), sources[sid]),
                "mic_position": (("mic", "xyz"), np.c_[np.linspace(1, 2, n_mics), np.full((n_mics, 2), 7.0)]),
                "xyz": ["x", "y", "z"], "mic": np.arange(n_mics), "time": np.arange(n_time) / 16000},
        attrs={"config": json.dumps({"fake": 1}), "scene": json.dumps(scene), "t60": 0.6, "snr": 10.0,
               "fs": 16000})
    ds.to_zarr(path, mode="w", zarr_format=2)
    seal_store(path)  # record its manifest, as xai_loc.data.store does for the stores it writes
    return path, sources


def test_relevance_array_dims_coords_attrs_and_views(tmp_path):
    from xai_loc.data import open_signals

    path, sources = fake_dataset(tmp_path / "test.zarr")
    ds = open_signals(path)
    model = randomized(LocCNN(4, 350)).float()
    rel = explain(model, ds, target="contrast", reference="train-mean", batch_size=4)
    assert rel.dims == ("window", "mic", "time") and rel.shape == (6, 4, 350)
    for name in ("source_id", "window_index", "speech_id", "source_x", "source_z", "mic_x", "prediction_y",
                 "attr_output_z", "relevance_sum", "explained"):
        assert name in rel.coords
    np.testing.assert_allclose(rel["time"].values[:2], [0, 1 / 16000])
    for key in ("model", "model_digest", "method", "composite", "composite_params", "target", "target_description",
                "t60", "snr", "fs", "xai_loc_version", "output_zero_input", "input_dependence",
                "relevance_fraction"):
        assert key in rel.attrs
    assert rel.attrs["model"] == "loccnn" and rel.attrs["t60"] == 0.6
    assert json.loads(rel.attrs["composite_params"])["first_rule"] == "wsquare"
    np.testing.assert_allclose(rel.attrs["reference_output"], sources[3:7].mean(0))
    np.testing.assert_allclose(rel.xai.source_position.values, ds["source_position"].values)
    assert rel.xai.mic_position.dims == ("mic", "xyz")
    assert rel.xai.per_mic("abs").dims == ("window", "mic")
    one = rel.xai.source(1)
    assert list(one["window_index"].values) == [0, 1]
    audio = one.xai.as_audio(mics=[0, 2])
    assert audio.shape == (700, 2) and np.abs(audio).max() == pytest.approx(0.99)
    assert "relevance of 6 windows" in rel.xai.summary()
    with pytest.raises(InputError, match="source 9 has no windows"):
        rel.xai.source(9)
    part = explain(model, ds["signals"].isel(window=[4, 5]), target="prediction", method="saliency")
    assert list(part["source_id"].values) == [2, 2] and list(part["window"].values) == [4, 5]


def test_store_resumes_and_refuses_to_mix(tmp_path, monkeypatch):
    path, _ = fake_dataset(tmp_path / "test.zarr")
    model = randomized(LocCNN(4, 350), seed=2).float()
    expected = explain(model, xr.open_zarr(path), batch_size=2)

    calls = {"n": 0}
    original = Explainer.explain_batch

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Explainer, "explain_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        explain_store(model, path, batch_size=2, progress=False)
    digest = model_digest(model)[:12]
    out = tmp_path / "test.relevance" / f"loccnn-{digest}-lrp-paper-truth.zarr"  # named by the weights
    assert not out.exists() and out.with_name(out.name + ".partial").exists()
    assert json.loads(out.with_name(out.name + ".progress.json").read_text())["windows_written"] == 2
    assert hooks_left(model) == 0
    monkeypatch.setattr(Explainer, "explain_batch", original)
    assert explain_store(model, path, batch_size=2, progress=False) == out
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    stored = open_relevance(out)
    np.testing.assert_allclose(stored.values, expected.values, rtol=1e-6)
    np.testing.assert_allclose(stored["relevance_sum"].values, expected["relevance_sum"].values, rtol=1e-5)
    assert stored.attrs["relevance_fraction"] == pytest.approx(expected.attrs["relevance_fraction"], rel=1e-5)
    assert stored.attrs["t60"] == 0.6 and "source_x" in stored.coords
    assert explain_store(model, path, batch_size=2, progress=False) == out  # complete: returned as it is

    with pytest.raises(InputError, match="other method"):
        explain_store(model, path, out=out, method="saliency", progress=False)
    with pytest.raises(InputError, match="other model weights"):
        explain_store(randomized(LocCNN(4, 350), seed=3).float(), path, out=out, progress=False)
    with pytest.raises(InputError, match="other composite options"):
        explain_store(model, path, out=out, first_rule="flat", progress=False)
    other = explain_store(model, path, method="saliency", target="prediction", progress=False)
    assert other.name == f"loccnn-{digest}-saliency-prediction.zarr"
    assert explain_store(model, path, first_rule="flat", progress=False).name == \
        f"loccnn-{digest}-lrp-paper-first_rule=flat-truth.zarr"
    # other weights of the same architecture get their own store, never the first one's
    other_weights = randomized(LocCNN(4, 350), seed=3).float()
    assert explain_store(other_weights, path, progress=False).name == \
        f"loccnn-{model_digest(other_weights)[:12]}-lrp-paper-truth.zarr"


def test_write_wavs_next_to_microphone_signals(tmp_path):
    path, _ = fake_dataset(tmp_path / "test.zarr")
    store = explain_store(randomized(LocCNN(4, 350)).float(), path, progress=False)
    rel, ds = open_relevance(store), open_explained_signals(store)
    assert rel.attrs["data"] == "../test.zarr"
    files = write_wavs(rel, ds, tmp_path / "wav", sources=[0, 2], mics=[1])
    assert [f.name for f in files] == ["source-0000_relevance.wav", "source-0000_microphones.wav",
                                       "source-0002_relevance.wav", "source-0002_microphones.wav"]
    audio, fs = sf.read(files[0])
    assert fs == 16000 and audio.shape == (700,) and np.abs(audio).max() == pytest.approx(0.99, abs=1e-4)
    mic, _ = sf.read(files[1])
    expected = ds["signals"].values[0:2, 1].reshape(-1)
    np.testing.assert_allclose(mic, expected / np.abs(expected).max() * 0.99, atol=1e-4)
    with pytest.raises(InputError, match="^source 0002 is asked for twice; give each once$"):
        write_wavs(rel, ds, tmp_path / "twice", sources=[2, 2])
    with pytest.raises(InputError, match="^microphone 1 is asked for twice; give each once$"):
        write_wavs(rel, ds, tmp_path / "twice", mics=[1, 0, 1])
    assert not (tmp_path / "twice").exists()


def test_write_wavs_leaves_nothing_when_a_chunk_is_damaged_halfway(tmp_path):
    path, _ = fake_dataset(tmp_path / "test.zarr")
    store = explain_store(randomized(LocCNN(4, 350)).float(), path, progress=False)
    last = max((store / "relevance").glob("[0-9]*"), key=lambda p: int(p.name.split(".")[0]))  # the last source's
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only its checksum tells, when it is read
    last.write_bytes(bytes(data))
    rel, ds = open_relevance(store), open_explained_signals(store)
    with pytest.raises(InputError, match="does not match its checksum"):
        write_wavs(rel, ds, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "mine.txt").write_text("kept")
    with pytest.raises(InputError, match="does not match its checksum"):
        write_wavs(rel, ds, tmp_path / "old")
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["mine.txt"]


# --- the real models, and leaving them as they were -----------------------------------------

@pytest.mark.parametrize("arch", [LocCNN, SampleCNN])
def test_paper_models_explained_and_left_unchanged(arch):
    model = arch()  # 16 x 5120, float32
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    x = 0.01 * torch.randn(1, 16, 5120, generator=torch.Generator().manual_seed(0))
    for composite in ("paper", "paper-samplecnn-reversed-gate"):
        rel = explain(model, x, positions=POSITIONS[:1], composite=composite)
        assert rel.shape == (1, 16, 5120) and np.isfinite(rel.values).all() and np.any(rel.values != 0)
    explain(model, x, target="prediction", method="deeplift")
    assert model.training and hooks_left(model) == 0
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, nn.BatchNorm1d))
    assert not [name for name, _ in model.named_modules() if "canonizer" in name]


def test_checkpoint_path_records_its_digest(tmp_path):
    from xai_loc.models import file_digest, save_checkpoint

    path = save_checkpoint(LocCNN(4, 350), tmp_path / "loc.safetensors", {"condition": {"t60": 0.3, "snr": 20}})
    rel = explain(path, torch.zeros(1, 4, 350), target="prediction", method="saliency")
    assert rel.attrs["checkpoint"] == "loc.safetensors" and rel.attrs["checkpoint_digest"] == file_digest(path)
    assert json.loads(rel.attrs["model_condition"]) == {"t60": 0.3, "snr": 20.0}
    with pytest.raises(InputError, match="does not exist"):
        explain(tmp_path / "missing.safetensors", torch.zeros(1, 4, 350), target="prediction")


def test_model_restored_after_an_error_inside():
    model = randomized(SampleCNN(4, 729))
    with pytest.raises(RuntimeError, match="boom"), Explainer(model, target="prediction"):
        assert hooks_left(model) > 0
        raise RuntimeError("boom")
    assert hooks_left(model) == 0
    assert all(m.eps == 1e-5 for m in model.modules() if isinstance(m, nn.BatchNorm1d))


# --- audit ---------------------------------------------------------------------------------

def test_audit_shows_the_papers_loccnn_name_map():
    rules = {m.name: m.rule for m in audit(randomized(LocCNN(4, 350))).modules}
    assert rules["conv1"] == "WSquare"
    assert {rules[f"conv{i}"] for i in range(2, 6)} == {"Gamma(gamma=0.25)"}
    assert rules["fc1"] == rules["fc2"] == "Epsilon(epsilon=1e-06)"
    assert {rules[f"activation{i}"] for i in range(1, 7)} == {"Pass"}
    assert rules["pool1"] == "Norm"


def test_audit_of_samplecnn_finds_no_problem():
    report = audit(randomized(SampleCNN(N_MICS, N_TIME)))
    assert report.problems == []
    rules = {m.name: m.rule for m in report.modules}
    assert rules["BasicBlock1.conv"] == "WSquare"
    assert rules["ReSE1.bn1"].endswith("(merged into ReSE1.conv1)")
    assert rules["ReSE3.gate"] == "GateRule(to=signal)"
    assert report.input_module.startswith("BasicBlock1.conv")
    assert ("ReSE1", "stack") in report.functional and not report.flagged_functional
    layers = {layer.name: layer for layer in report.layers}
    assert layers["ReSE2.residual"].relevance_in == pytest.approx(layers["ReSE2.residual"].relevance_out, rel=1e-6)
    assert layers["ReSE2.SEBlock.dense1"].relevance_out == 0
    text = report.render()
    assert "problems: none" in text and "ReSE5.gate" in text


def test_audit_explains_the_models_own_output_by_default():
    from xai_loc.models import build_model

    assert audit(randomized(SampleCNN(N_MICS, N_TIME))).target == "prediction"
    tfcnn = randomized(build_model("tfcnn"))  # an azimuth regressor: no position, and no truth for the probe
    report = audit(tfcnn, composite="tfcnn")
    assert report.target == "azimuth" and report.problems == []
    with pytest.raises(InputError, match="target 'prediction' does not fit a model whose output is 'azimuth'"):
        audit(tfcnn, composite="tfcnn", target="prediction")


class Careless(nn.Module):
    """A functional residual add and a custom parameter-free module: both invisible to the rules."""

    class Twice(nn.Module):
        def forward(self, x):
            return 2 * x

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.twice = self.Twice()
        self.fc = nn.Linear(3 * 8, 3)

    def forward(self, x):
        h = self.relu(self.conv(x))
        return self.fc((h + self.twice(h)).flatten(1))


def test_audit_flags_what_hooks_cannot_see():
    report = audit(randomized(Careless()), composite="epsilon", input=windows(1, 2, 8).abs())
    problems = "\n".join(report.problems)
    assert "twice (Twice): NO RULE" in problems
    assert "__add__ called in the model.forward()" in problems or "add called" in problems
    assert "does not conserve relevance" in problems  # the Double module's gradient doubles it
    assert "INVISIBLE TO HOOKS" in report.render()


def test_a_merge_that_fails_part_way_leaves_the_model_as_it_was():
    """A BatchNorm without affine parameters cannot be merged; the ones merged before it are unmerged
    again (zennit keeps no handle to them), so the model's weights, eps and digest are unchanged."""

    class TwoBatchNorms(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.b1, self.r = nn.Conv1d(2, 3, 3, padding=1), nn.BatchNorm1d(3), nn.ReLU()
            self.c2, self.b2 = nn.Conv1d(3, 3, 3, padding=1), nn.BatchNorm1d(3, affine=False)
            self.f, self.out = nn.Flatten(), nn.Linear(3 * 8, 3)

        def forward(self, x):
            return self.out(self.f(self.b2(self.c2(self.r(self.b1(self.c1(x)))))))

    torch.manual_seed(0)
    model = TwoBatchNorms().double().eval()
    with torch.no_grad():
        model.b1.running_mean.normal_()
        model.b1.running_var.uniform_(0.5, 2.0)
    before, digest = {k: v.clone() for k, v in model.state_dict().items()}, model_digest(model)
    with pytest.raises(InputError, match="BatchNorm 'b2' without affine parameters"), \
            Explainer(model, target="prediction") as explainer:
        explainer.explain_batch(torch.randn(2, 2, 8, dtype=torch.float64))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.b1.eps == 1e-5 and model_digest(model) == digest


@pytest.mark.parametrize("composite", ["epsilon", "paper"])
def test_a_model_with_in_place_activations_is_explained_as_without(composite):
    """Review: the rules save a layer's output for the backward pass, which a following ReLU(inplace=True)
    overwrote (every composite failed); the activations compute out of place while explaining."""
    from xai_loc.explain.attribute import Explainer
    from xai_loc.explain.audit import audit

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(32, 3)).double().eval()
    x = torch.randn(2, 2, 10, dtype=torch.float64)
    sums = []
    for inplace in (False, True):
        model[1].inplace = inplace
        with Explainer(model, target="prediction", method="lrp", composite=composite) as explainer:
            sums.append(explainer.explain_batch(x)["relevance"])
        assert model[1].inplace is inplace  # restored
    np.testing.assert_array_equal(sums[0], sums[1])
    assert "ReLU" in audit(model, composite=composite, input=x[0].numpy()).render()
