"""Explanations of half-precision models that overflow are refused in one line instead of coming back as NaN; LRP is
not offered where no composite covers the model (BAST); the deletion figures name what they delete."""
from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import soundfile as sf
import torch
import xarray as xr
from helpers import TINY, one_line, refused, run_cli, small_model

from xai_loc.explain.attribute import Explainer
from xai_loc.explain.methods import METHODS, methods_for
from xai_loc.models import MODELS, build_model
from xai_loc.models.zoo import pretrained_dir

matplotlib.use("Agg")

FLOAT16 = "from a float16 model; explain the same weights in float32 (model.to(torch.float32))"
GRADIENT_METHODS = ["saliency", "input_x_gradient", "integrated_gradients", "deeplift", "gradient_shap", "occlusion"]
LRP_ON_BAST = ("method 'lrp' is not allowed for bast (its modules would get no LRP rule: its family declares no LRP "
               "composite and none is registered for it (xai_loc.explain.register_composite)); allowed for bast: "
               f"{', '.join(GRADIENT_METHODS)}, attn_lrp")


def tiny_bast(head_scale: float = 1.0) -> torch.nn.Module:
    """A tiny BAST; ``head_scale`` scales its output layer's weights (1e5: outputs of about 9e4, beyond float16's
    65504)."""
    torch.manual_seed(0)
    model = build_model("bast", **TINY["bast"]).eval()
    with torch.no_grad():
        model.head.weight.mul_(head_scale)
    return model


def ears(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 2, TINY["bast"]["n_samples"])).astype(np.float32)


# -- a float16 model whose forward pass overflows -------------------------------------------------------------------
def test_a_float16_bast_is_refused_by_every_method_that_explains_it_naming_the_window():
    """Its output overflows float16: every method returned NaN predictions and relevance without a word."""
    x = ears(2)
    model = tiny_bast(head_scale=1e5)
    with Explainer(model, method="saliency", target="direction") as explainer:  # float32: finite, explained
        assert np.isfinite(explainer.explain_batch(x)["relevance"]).all()
    model.half()
    for method in [*GRADIENT_METHODS, "attn_lrp"]:  # every method for BAST (methods_for: the test below)
        if method == "deeplift":  # refused for any float16 model (test below)
            continue
        def run(method=method):
            with Explainer(model, method=method, target="direction") as explainer:
                explainer.explain_batch(x, index=np.array([7, 8]))

        assert one_line(run) == f"window 7 came out with NaN or infinite output {FLOAT16}", method


def test_a_float16_bast_through_the_family_explainer_is_one_line():
    from xai_loc.explain.attn_lrp import explain_bast

    model = tiny_bast(head_scale=1e5).half()
    assert one_line(explain_bast, model, ears(1), method="saliency") == \
        f"window 0 came out with NaN or infinite output {FLOAT16}"


def test_deeplift_is_refused_for_float16_models_before_any_work():
    """captum's DeepLift divides by input differences below 1e-10, which is 0 in float16: its relevance was NaN on
    every input (a LocCNN's predictions finite), refused only after the work and blamed on the first window."""
    model = small_model(4, 175).half()
    with Explainer(model, method="saliency", target="prediction") as explainer:
        x = (0.1 * np.random.default_rng(0).standard_normal((3, 4, 175))).astype(np.float32)
        assert np.isfinite(explainer.explain_batch(x)["prediction"]).all()
    assert one_line(Explainer, model, method="deeplift", target="prediction") == (
        "a float16 model is not allowed for method 'deeplift': captum's DeepLift divides by input differences "
        "wherever they are below 1e-10, which is 0 in float16 (NaN wherever a unit's input equals its baseline "
        "value: on real waveforms, in every window); explain model.float() (the same weights in float32; bfloat16 "
        "keeps float32's range at 8 bits of precision)")
    with Explainer(model.to(torch.bfloat16), method="deeplift", target="prediction") as explainer:
        assert np.isfinite(explainer.explain_batch(x)["relevance"]).all()


def test_relevance_that_is_not_finite_is_refused_naming_its_window_and_level():
    from xai_loc.explain.attribute import check_finite_results

    relevance = torch.zeros(3, 4, dtype=torch.float16)
    relevance[1, 2] = float("inf")
    assert one_line(check_finite_results, {"output": torch.zeros(3, 2, dtype=torch.float16),
                                           "relevance at level 'waveform'": relevance}, [5, 6, 7], torch.float16) \
        == f"window 6 came out with NaN or infinite relevance at level 'waveform' {FLOAT16}"


def test_a_float32_model_with_an_infinite_weight_is_refused_without_a_dtype_advice():
    x = (0.1 * np.random.default_rng(0).standard_normal((2, 4, 175))).astype(np.float32)
    model = small_model(4, 175)
    with torch.no_grad():
        model.fc2.bias[1] = float("inf")

    def run():
        with Explainer(model, method="input_x_gradient", target="prediction") as explainer:
            explainer.explain_batch(x, index=np.array([3, 4]))

    assert one_line(run) == ("window 3 came out with NaN or infinite output from a float32 model; check the model's "
                             "weights and operations, and the window")


def test_gradient_shap_explains_a_float16_model():
    """captum draws GradientShap's path points in float32: a float16 model raised a RuntimeError (input type)."""
    x = (0.1 * np.random.default_rng(0).standard_normal((3, 4, 175))).astype(np.float32)
    model = small_model(4, 175)
    with Explainer(model, method="gradient_shap", target="prediction") as explainer:
        full = explainer.explain_batch(x)["relevance"]
    with Explainer(model.half(), method="gradient_shap", target="prediction") as explainer:
        half = explainer.explain_batch(x)["relevance"]
    assert np.isfinite(half).all()
    assert np.abs(half - full).max() < 0.1 * np.abs(full).max()


# -- LRP only where a composite covers the architecture -------------------------------------------------------------
def test_lrp_is_offered_for_every_architecture_but_bast():
    for arch in MODELS:
        offered = methods_for(arch)
        assert offered == ([*GRADIENT_METHODS, "attn_lrp"] if arch == "bast" else ["lrp", *GRADIENT_METHODS]), arch
        assert ("lrp" in offered) == (arch != "bast"), (arch, offered)
        assert ("attn_lrp" in offered) == (arch == "bast"), (arch, offered)
        assert offered == [m for m in METHODS if m in offered]
    assert one_line(Explainer, tiny_bast(), method="lrp", target="direction") == LRP_ON_BAST


def test_a_composite_registered_for_bast_makes_lrp_an_offered_method(monkeypatch):
    """Final review: the refusal of lrp for BAST ignored composites registered for it (the extension point the
    coverage message names); AttnLRP stays offered."""
    from zennit.composites import EpsilonGammaBox

    from xai_loc.explain import composites

    monkeypatch.setitem(composites.COMPOSITES, "bast_own", lambda model: EpsilonGammaBox(low=-1.0, high=1.0))
    monkeypatch.setitem(composites.COMPOSITE_ARCHITECTURES, "bast_own", ("bast",))
    assert methods_for("bast") == ["lrp", *GRADIENT_METHODS, "attn_lrp"]
    # a registered composite that leaves modules uncovered is not offered as the way out of its own refusal
    says = one_line(Explainer, tiny_bast(), method="lrp", target="direction", composite="bast_own")
    assert says.startswith("composite 'bast_own' is not allowed for bast: ") and says.endswith(
        "use a composite that gives it a rule (xai_loc.explain.register_composite) (xai-loc audit lists every "
        "module's rule)"), says


def test_a_plug_in_follows_the_architecture_it_subclasses(monkeypatch):
    from xai_loc.explain.attn_lrp import AttnLRPMethod
    from xai_loc.models import LocCNN, families
    from xai_loc.models.bast import BAST

    monkeypatch.setattr(families, "FAMILIES", dict(families.FAMILIES))  # the plug-ins join families of this test
    monkeypatch.setitem(MODELS, "mybast", type("MyBAST", (BAST,), {"arch_name": "mybast"}))
    monkeypatch.setitem(MODELS, "myloc", type("MyLoc", (LocCNN,), {"arch_name": "myloc"}))
    assert not METHODS["lrp"].explains("mybast") and AttnLRPMethod.explains("mybast")
    assert METHODS["lrp"].explains("myloc") and not AttnLRPMethod.explains("myloc")
    assert METHODS["lrp"].explains("Sequential")  # an unregistered module: its modules decide (check_coverage)


def test_binaural_explain_refuses_lrp_for_bast_in_one_line_and_writes_nothing(tmp_path):
    wav = tmp_path / "ears.wav"
    sf.write(wav, 0.05 * np.random.default_rng(2).standard_normal((16000, 2)), 16000, subtype="FLOAT")
    out = tmp_path / "relevance"
    result = run_cli(["binaural", "explain", str(pretrained_dir() / "bast_default.safetensors"), str(wav),
                      "--method", "lrp", "--out", str(out)])
    assert refused(result) == f"Error: {LRP_ON_BAST}\n"
    assert not out.exists()


# -- the deletion figures name what is deleted ----------------------------------------------------------------------
def _faithfulness(data_config: str) -> xr.Dataset:
    dims = ("model", "method", "ordering", "fill", "mode", "percentage")
    shape = (1, 1, 1, 1, 3, 2)
    return xr.Dataset({"curve": (dims, np.arange(np.prod(shape), dtype=float).reshape(shape))}, coords={
        "model": ["m"], "method": ["saliency"], "ordering": ["relevance"], "fill": ["zero"],
        "mode": ["morf", "lerf", "insertion"], "percentage": [0.0, 50.0]}, attrs={"data_config": data_config})


def _perturbation(data_config: str) -> xr.Dataset:
    return xr.Dataset({"mae_mean": (("model", "mode", "percentage"), [[[0.1, 0.2]]], {"units": "m"})},
                      coords={"model": ["loccnn"], "mode": ["relevance"], "percentage": [0.0, 50.0]},
                      attrs={"data_config": data_config})


@pytest.mark.parametrize("figure", ["faithfulness", "perturbation"])
def test_the_deletion_axis_names_the_values_of_the_scored_store(figure, captured_figure, tmp_path):
    """A cue network is scored on cue maps, whose values were called samples; ear signals and the multichannel
    windows keep 'samples' (the same bytes as before)."""
    from xai_loc.data.cue_scenes import CUE_SCENES
    from xai_loc.data.ipd_ild_scenes import SCENES
    from xai_loc.plots import faithfulness, perturbation

    module, build, axis = {"faithfulness": (faithfulness, _faithfulness, "deleted / inserted {} [%]"),
                           "perturbation": (perturbation, _perturbation, "deleted {} [%]")}[figure]
    stores = {json.dumps({"format": CUE_SCENES.format}): "cue values",
              json.dumps({"format": SCENES.format, "n_train": 2}): "samples", json.dumps({"t60": 0.6}): "samples",
              "": "samples"}
    for config, values in stores.items():
        drawn = captured_figure(module)
        getattr(module, f"plot_{figure}")(build(config), tmp_path / figure)
        assert [ax.get_xlabel() for ax in drawn["fig"].axes if ax.get_xlabel()][-1] == axis.format(values), config
