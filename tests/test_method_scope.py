"""Which models a method explains, declared once (AttnLRP: BAST's family) and checked where every explanation goes
through; the command line's method lists come from the same declaration. The probe commands name the flag that
sets their probe's seed."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import TINY, one_line, refused, run_cli

from xai_loc.explain.attribute import Explainer
from xai_loc.explain.binaural import explain_ears
from xai_loc.models import build_model
from xai_loc.models.zoo import pretrained_dir

ALLOWED = "lrp, saliency, input_x_gradient, integrated_gradients, deeplift, gradient_shap, occlusion"
COCHCNN = pretrained_dir() / "cochcnn_default.safetensors"


def refusal(arch: str) -> str:
    return f"method 'attn_lrp' is not allowed for {arch} (it explains bast); allowed for {arch}: {ALLOWED}"


def tiny(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(arch, **TINY[arch]).double().eval()


def test_attn_lrp_is_refused_for_the_shipped_cochleagram_cnn():
    """It was input x gradient there under the AttnLRP name: explain_ears gave exactly input_x_gradient's numbers."""
    ears = 0.05 * np.random.default_rng(0).standard_normal((1, 2, 12000))
    assert one_line(explain_ears, COCHCNN, ears, method="attn_lrp") == refusal("cochcnn")


def test_attn_lrp_explains_bast_only():
    from xai_loc.explain.methods import methods_for

    for arch in ("loccnn", "samplecnn", "cochcnn", "tfcnn", "cuenet"):
        assert one_line(Explainer, tiny(arch), method="attn_lrp", target="prediction") == refusal(arch)
        assert ", ".join(methods_for(arch)) == ALLOWED
    assert methods_for("bast") == [*ALLOWED.split(", ")[1:], "attn_lrp"]  # no lrp: BAST has no composite
    with Explainer(tiny("bast"), method="attn_lrp", target="direction", azimuth=90.0, epsilon=0.0) as explainer:
        out = explainer.explain_batch(0.05 * np.random.default_rng(1).standard_normal((2, 2, 4000)))
    np.testing.assert_allclose(out["relevance_sum"] + sum(out["absorbed"].values()), out["explained"], rtol=1e-9)


def test_command_line_method_lists_follow_the_declaration(monkeypatch):
    from xai_loc.cli._common import METHOD, position_methods
    from xai_loc.explain.attn_lrp import AttnLRPMethod

    assert position_methods() == ALLOWED.split(", ")
    monkeypatch.setattr(AttnLRPMethod, "explains", classmethod(lambda cls, arch: arch in ("bast", "loccnn")),
                        raising=False)
    assert position_methods() == [*ALLOWED.split(", "), "attn_lrp"]  # it explains a localizer of positions now
    assert METHOD.convert("attn_lrp", None, None) == "attn_lrp"


def test_binaural_explain_refuses_attn_lrp_for_the_cochleagram_cnn_and_writes_nothing(tmp_path):
    wav = tmp_path / "ears.wav"
    sf.write(wav, 0.05 * np.random.default_rng(2).standard_normal((12000, 2)), 48000, subtype="FLOAT")
    out = tmp_path / "relevance"
    result = run_cli(["binaural", "explain", str(COCHCNN), str(wav), "--method", "attn_lrp", "--out", str(out)])
    assert refused(result) == f"Error: {refusal('cochcnn')}\n"
    assert not out.exists()


def test_faithfulness_refuses_attn_lrp_for_a_binaural_checkpoint_before_rendering(tmp_path, monkeypatch):
    def render(*args, **kwargs):
        raise AssertionError("the held-out split was rendered before the method was refused")

    monkeypatch.setattr("xai_loc.experiments.scored.family_test_store", render)
    for command in ("faithfulness", "sanity"):
        result = run_cli([command, "--checkpoint", str(COCHCNN), "--methods", "attn_lrp", "--data",
                          str(tmp_path / "d"), "--out", str(tmp_path / command)])
        assert refused(result) == f"Error: {refusal('cochcnn')}\n"
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("command", [["binaural", "cues"], ["binaural", "tfcnn", "probe"],
                                     ["binaural", "cuenet", "probe"]], ids=["cues", "tfcnn-probe", "cuenet-probe"])
def test_the_probe_seed_option_is_named_for_the_probes_seed(command, tmp_path):
    """The probe's own ``seed`` is set by --probe-seed (--seed picks the data); the message named --seed."""
    for key in ("seed", "probe_seed"):
        result = run_cli([*command, "--option", f"{key}=1", "--data", str(tmp_path / "d")])
        assert refused(result) == f"Error: option {key!r} is set by --probe-seed; use that\n"
    assert not (tmp_path / "d").exists()
