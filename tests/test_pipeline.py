"""One explanation pipeline: every (family, method, target) through the same Explainer, at every level."""
import numpy as np
import pytest
import torch
from helpers import TINY
from torch import nn

from xai_loc.errors import InputError
from xai_loc.explain import METHODS, TARGETS, Explainer
from xai_loc.explain.levels import Levels
from xai_loc.explain.methods import BackwardMethod, methods_for
from xai_loc.explain.targets import targets_for
from xai_loc.models import FAMILIES, MODELS, build_model, family_of
from xai_loc.models.base import OUTPUT_KINDS, Localizer

#: True values per output kind for a batch of two.
TRUTH = {"position": [[1.0, 5.0, 1.2], [2.0, 6.0, 1.4]], "azimuth": [10.0, -20.0],
         "azimuth_elevation": [[10.0, 0.0], [20.0, 10.0]], "direction_classes": [0, 1], "cos_sin": [10.0, 200.0]}
ARCHS = sorted(MODELS)


def tiny(arch: str) -> Localizer:
    torch.manual_seed(0)
    model = build_model(arch, **TINY[arch]).eval()
    with torch.no_grad():  # trained-looking BatchNorm statistics
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_var.uniform_(0.5, 2.0)
                module.running_mean.uniform_(-0.1, 0.1)
    return model


def inputs(model: Localizer) -> torch.Tensor:
    return 0.05 * torch.randn(2, *model.input_shape, generator=torch.Generator().manual_seed(1))


def settings(arch: str, method: str, model: Localizer) -> dict:
    """Small options: few steps and samples, occlusion patches of a quarter window."""
    composite = family_of(arch).composite or "epsilon"
    quarter = model.input_shape[-1] // 4
    return {"lrp": {"composite": composite}, "integrated_gradients": {"n_steps": 2},
            "gradient_shap": {"n_samples": 2}, "occlusion": {"window": quarter, "stride": quarter}}.get(method, {})


def representations(model: Localizer, x: torch.Tensor) -> dict[str, torch.Size]:
    shapes = {"waveform": x.shape}
    handles = [model.level_module(level).register_forward_hook(
        lambda m, a, out, level=level: shapes.__setitem__(level, out.shape)) for level in model.levels[1:]]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return shapes


def test_every_architecture_has_a_tiny_config_and_a_family():
    assert set(TINY) == set(MODELS)
    assert {arch for family in FAMILIES.values() for arch in family.models} >= set(MODELS)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("arch", ARCHS)
def test_every_allowed_target_gives_relevance_at_every_level(arch, method):
    model = tiny(arch)
    if method == "lrp" and family_of(arch).composite is None:  # a transformer: its LRP is AttnLRP (attn_lrp)
        with pytest.raises(InputError, match="would get no LRP rule"):
            Explainer(model, target=targets_for(model.output_kind)[0], method=method, **settings(arch, method, model))
        return
    if not METHODS[method].explains(arch):  # AttnLRP: BAST's family only
        with pytest.raises(InputError, match=f"method {method!r} is not allowed for {arch} "):
            Explainer(model, target=targets_for(model.output_kind)[0], method=method, **settings(arch, method, model))
        return
    x = inputs(model)
    shapes = representations(model, x)
    # LRP on a cue network starts at its front end: no rule covers the cue extraction
    levels = model.levels[1:] if arch == "cuenet" and method == "lrp" else model.levels
    for target in targets_for(model.output_kind):
        if TARGETS[target].lrp_instead and issubclass(METHODS[method], BackwardMethod):
            with pytest.raises(InputError, match=f"use target {TARGETS[target].lrp_instead!r}"):
                with Explainer(model, target=target, method=method, levels=levels, **settings(arch, method, model)):
                    pass
            continue
        with Explainer(model, target=target, method=method, levels=levels,
                       **settings(arch, method, model)) as explainer:
            out = explainer.explain_batch(x, TRUTH[model.output_kind] if TARGETS[target].needs_truth else None)
        assert tuple(out["levels"]) == levels, (target, method)
        for level, relevance in out["levels"].items():
            assert relevance.shape == tuple(shapes[level]), (target, method, level)
            assert np.isfinite(relevance).all(), (target, method, level)
            # every example gets relevance somewhere at every level: never an all-zero map passed off as one
            mass = np.abs(np.asarray(relevance, dtype=np.float64)).reshape(relevance.shape[0], -1).sum(1)
            assert (mass > 0).all(), (target, method, level, mass)
        assert out["prediction"].shape[0] == 2 and out["attr_output"].shape == out["prediction"].shape


@pytest.mark.parametrize("arch", ARCHS)
def test_targets_of_other_output_kinds_are_refused(arch):
    model = tiny(arch)
    allowed = ", ".join(targets_for(model.output_kind))
    for target in set(TARGETS) - set(targets_for(model.output_kind)):
        with pytest.raises(InputError, match=f"target {target!r} does not fit a model whose output is "
                                             f"{model.output_kind!r}; allowed: {allowed}"):
            Explainer(model, method=methods_for(arch)[0], target=target)
    with pytest.raises(InputError, match="level 'cochleagram' is not allowed"):
        Explainer(model, method=methods_for(arch)[0], target=targets_for(model.output_kind)[0],
                  levels=("waveform", "cochleagram"))
    assert set(model.output_kind for model in map(tiny, ARCHS)) <= set(OUTPUT_KINDS)


class Stages(Localizer):
    """A bias-free two-stage localizer in float64: conv front end, linear head, two classes."""

    output_kind = "direction_classes"
    levels = ("waveform", "front_end")

    def __init__(self) -> None:
        super().__init__(2, 12)
        self.front_end = nn.Conv1d(2, 3, 5, bias=False)
        self.body = nn.Flatten()
        self.head = nn.Linear(24, 2, bias=False)


def _stages() -> Stages:
    torch.manual_seed(4)
    return Stages().double().eval()


def _front_and_grad(model, x, cls):
    a = model.front_end(x).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.head(model.body(a))[torch.arange(len(x)), cls].sum(), a)
    return a.detach(), grad


def test_levels_read_by_lrp_conserve_and_captum_levels_match_the_analytic_answer():
    model = _stages()
    x = torch.randn(2, 2, 12, dtype=torch.float64)
    cls = model(x).argmax(1)
    a, grad = _front_and_grad(model, x, cls)
    with Explainer(model, target="class_logit", method="lrp", composite="epsilon", epsilon=1e-12,
                   levels=("front_end", "waveform")) as explainer:
        lrp = explainer.explain_batch(x)
    logit = model(x)[torch.arange(2), cls].detach().numpy()
    for level in ("waveform", "front_end"):  # bias-free LRP-0: every level sums to the logit
        np.testing.assert_allclose(lrp["levels"][level].sum((1, 2)), logit, rtol=1e-9)
    np.testing.assert_allclose(lrp["levels"]["front_end"], (a * grad).numpy(), rtol=1e-9, atol=1e-14)
    for method, options in (("input_x_gradient", {}), ("integrated_gradients", {})):
        # a linear head: each is a x grad there
        with Explainer(model, target="class_logit", method=method, levels=model.levels, **options) as explainer:
            out = explainer.explain_batch(x)
        np.testing.assert_allclose(out["levels"]["front_end"], (a * grad).numpy(), rtol=1e-9, atol=1e-14)
    # only the front end asked: it is the method's input, the waveform never differentiated
    with Explainer(model, target="class_logit", method="occlusion", window=12, stride=12,
                   levels="front_end") as explainer:
        whole = explainer.explain_batch(x)
    # the patch spans all 8 frames of one channel (12 of 12 samples); each frame gets the whole change of its
    # row, and the rows of a linear head add up to the logit (captum returns float32 here)
    np.testing.assert_allclose(whole["relevance"].sum((1, 2)) / 8, logit, rtol=1e-5)
    assert tuple(whole["levels"]) == ("front_end",) and whole["relevance"].shape == (2, 3, 8)
    assert all(not m._forward_hooks for m in model.modules())


class InputTimesSign(BackwardMethod):
    """The representation times the sign of the gradient of the target, at every level."""

    def backward(self, output, weights, seed, tensors):
        return torch.autograd.grad(self.objective.scalar(output, weights).sum(), tensors)

    def relevance(self, tensor, grad):
        return tensor.detach() * grad.sign()

    def explained(self, output, weights, seed):
        return torch.full(output.shape[:1], float("nan"), dtype=output.dtype)


@pytest.mark.parametrize("arch", ["loccnn", "tfcnn"])
def test_a_new_method_is_one_class_and_works_for_every_family(arch, monkeypatch):
    monkeypatch.setitem(METHODS, "input", InputTimesSign)
    model = tiny(arch)
    x = inputs(model)
    with Explainer(model, target=targets_for(model.output_kind)[1], method="input", levels=model.levels) as ex:
        out = ex.explain_batch(x, TRUTH[model.output_kind])
    front = representations(model, x)
    assert set(out["levels"]) == set(model.levels) and set(front) == set(model.levels)
    np.testing.assert_array_equal(np.abs(out["relevance"]), np.abs(x.numpy()) * (out["relevance"] != 0))
    assert (out["relevance"] != 0).mean() > 0.5


def test_factorized_class_logits_choose_among_the_azimuth_block():
    torch.manual_seed(0)
    model = build_model("tfcnn", head="multitask", **TINY["tfcnn"]).eval()
    assert model.output_kind == "direction_classes" and model.factorized_classes
    with Explainer(model, target="class_logit", method="input_x_gradient", levels=model.levels) as explainer:
        out = explainer.explain_batch(inputs(model))
    logits, n_azimuths = out["prediction"], model.direction_grid.n_azimuths
    chosen = logits[:, :n_azimuths].argmax(1)
    seed = np.zeros_like(logits)
    seed[[0, 1], chosen] = logits[[0, 1], chosen]
    np.testing.assert_array_equal(out["attr_output"], seed)  # the elevation block is not a competitor
    np.testing.assert_allclose(out["explained"], logits[[0, 1], chosen], rtol=1e-6)
    assert out["levels"]["front_end"].shape == (2, *model.cue_shape)


class Twice(Localizer):
    """One linear map applied to each microphone (as BAST's patch embedding runs once per ear), a spare
    module that never runs, and an in-place ReLU after a linear layer; float64, two classes."""

    output_kind = "direction_classes"
    levels = ("waveform", "spare")

    def __init__(self) -> None:
        super().__init__(2, 6)
        self.shared, self.spare = nn.Linear(6, 6), nn.Linear(6, 6)
        self.lin1, self.act, self.lin2 = nn.Linear(12, 5), nn.ReLU(inplace=True), nn.Linear(5, 2)

    def forward(self, x):
        h = torch.cat([self.shared(x[:, 0]), self.shared(x[:, 1])], dim=1)
        return self.lin2(self.act(self.lin1(h)))


def _twice() -> Twice:
    torch.manual_seed(2)
    return Twice().double().eval()


@pytest.mark.parametrize("method", ["lrp", "integrated_gradients"])
def test_a_level_must_run_exactly_once_per_forward_pass(method):
    """Review 16, items 1 and 15: a module run twice (or never) has no one representation."""
    model = _twice()
    x = torch.randn(2, 2, 6, dtype=torch.float64)
    options = {"composite": "epsilon"} if method == "lrp" else {"n_steps": 2}
    for level, runs in (("shared", "runs 2 times"), ("spare", "does not run")):
        with pytest.raises(InputError, match=f"level {level!r} {runs} per forward pass; choose a module that runs "
                                             "once"):
            with Explainer(model, target="class_logit", method=method, levels=("waveform", level),
                           **options) as explainer:
                explainer.explain_batch(x)
        assert all(not m._forward_hooks for m in model.modules())


def test_a_level_followed_by_an_in_place_op_keeps_its_value_and_gradient():
    """Review 16, item 5: ReLU(inplace=True) after the level must not change what is read there."""
    model = _twice()
    x = torch.randn(3, 2, 6, dtype=torch.float64)
    with torch.no_grad():
        pre = model.lin1(torch.cat([model.shared(x[:, 0]), model.shared(x[:, 1])], dim=1))
    assert (pre < 0).any()
    assert torch.equal(Levels(model, ("waveform", "lin1")).representation(x, "lin1"), pre)  # not ReLU(pre)
    cls = model(x).argmax(1)
    grad = (pre > 0) * model.lin2.weight.detach()[cls]  # d z_c / d pre, analytic
    cases = (("input_x_gradient", {}, 1e-9), ("lrp", {"composite": "epsilon", "epsilon": 1e-12}, 1e-9),
             ("integrated_gradients", {"n_steps": 3}, 1e-6))  # captum's path points are float32
    for method, options, rtol in cases:
        with Explainer(model, target="class_logit", method=method, levels=("waveform", "lin1"), **options) as ex:
            out = ex.explain_batch(x)
        # from a zero level the ReLU pattern holds along the whole path, so integrated gradients are pre x grad too
        np.testing.assert_allclose(out["levels"]["lin1"], (pre * grad).numpy(), rtol=rtol, atol=1e-12)


class Offset(Localizer):
    """A front end with ``f(0) != 0`` (``log(|x| + 0.1)``, as a dB front end) and a linear head; float64."""

    output_kind = "direction_classes"
    levels = ("waveform", "front_end")

    def __init__(self) -> None:
        super().__init__(2, 4)
        self.front_end, self.body, self.head = _Log(), nn.Flatten(), nn.Linear(8, 3)


class _Log(nn.Module):
    def forward(self, x):
        return torch.log(x.abs() + 0.1)


@pytest.mark.parametrize("method", ["integrated_gradients", "deeplift", "gradient_shap"])
def test_completeness_at_a_level_uses_the_baseline_there(method):
    """Review 16, item 6: at the front end the baseline is a zero representation, not a zero waveform."""
    torch.manual_seed(3)
    model = Offset().double().eval()
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
        cls = out.argmax(1)
        expected = (out - model.head(torch.zeros(1, 8, dtype=torch.float64)))[torch.arange(3), cls].numpy()
    with Explainer(model, target="class_logit", method=method, levels="front_end") as explainer:
        result = explainer.explain_batch(x)
    np.testing.assert_allclose(result["explained"], expected, rtol=1e-9)
    np.testing.assert_allclose(result["relevance_sum"], expected, rtol=1e-5)  # a linear head: exact up to float32


def test_explain_labels_positions_only():
    """Review 16, item 7: explain() refuses a class model instead of calling its logits prediction_x/y/z."""
    from xai_loc.explain import explain

    with pytest.raises(InputError, match="this model outputs 'direction_classes': use "
                                         "xai_loc.explain.explain_arrays"):
        explain(_stages(), np.zeros((1, 2, 12)), target="class_logit", method="saliency")
