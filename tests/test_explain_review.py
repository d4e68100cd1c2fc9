"""Regression tests of the explain review: each test fails on the package before its fix."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xai_loc.errors import InputError
from xai_loc.explain import Explainer, audit, explain, explain_arrays, write_wavs
from xai_loc.explain.binaural import explain_ears
from xai_loc.explain.cochcnn import explain_cochcnn
from xai_loc.explain.composites import make_composite
from xai_loc.explain.cuenet import cue_relevance, on_cue_maps
from xai_loc.explain.rules import FastEpsilon, FastGamma, FastWSquare
from xai_loc.models import LocCNN, build_model

TINY = {"cochcnn": {"layers": ["c4 1x8", "p1x8", "c8 2x4", "p2x4"], "n_samples": 4800, "dense": 16},
        "cuenet": {"channels": 8, "hidden": 16, "n_samples": 2205},
        "bast": {"dim": 16, "depth": 1, "heads": 2, "dim_head": 8, "mlp_dim": 32, "n_samples": 4000}}
PROVENANCE = ("method_params", "target_params", "software", "xai_loc_version", "composite_params")


def tiny(arch: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(arch, **TINY[arch]).double().eval()


def ears(model: nn.Module, n: int = 2) -> np.ndarray:
    return 0.05 * np.random.default_rng(0).standard_normal((n, *model.input_shape))


@pytest.fixture()
def loccnn() -> LocCNN:
    torch.manual_seed(0)
    return LocCNN(4, 350).double().eval()


# -- 1: LRP refuses a composite that leaves signal-transforming modules without a rule ----------------

@pytest.mark.parametrize("composite", ["epsilon", "paper", "epsilon_plus_flat", "epsilon_alpha2_beta1"])
def test_generic_composites_on_the_cochleagram_cnn_are_refused_as_audit_flags_them(composite):
    model = tiny("cochcnn")
    assert audit(model, composite, target="class_logit").problems  # what audit flags, Explainer refuses
    with pytest.raises(InputError, match=rf"^composite '{composite}' is not allowed for cochcnn: \d+ module\(s\) would "
                                         r"get no LRP rule \(.*\); use composite 'cochcnn'"):
        Explainer(model, target="class_logit", composite=composite, levels=("waveform", "front_end"))
    explain_arrays(model, ears(model), target="class_logit", composite="cochcnn")  # its own composite works


class _Ears(nn.Conv1d):
    """A convolution with its own forward: takes [B, 1, channels, T]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x[:, 0])


def test_fast_rules_leave_a_convolution_with_its_own_forward_to_zennit():
    from xai_loc.features.cochleagram import SincDownsample

    assert not any(rule.supports(SincDownsample()) for rule in (FastEpsilon(), FastGamma(), FastWSquare()))
    assert FastEpsilon().supports(nn.Conv1d(2, 3, 5))
    torch.manual_seed(0)
    model = nn.Sequential(_Ears(2, 3, 5, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 3, bias=False))
    model = model.double().eval()
    x = torch.randn(2, 1, 2, 20, dtype=torch.float64)
    _, out = explain_arrays(model, x, target="prediction", composite="epsilon", epsilon=1e-12, stabilizer=1e-12)
    np.testing.assert_allclose(out["relevance_sum"], out["explained"], rtol=1e-8)


# -- 2: binaural explanations record the explained class and the explainer's provenance --------------

def test_cochcnn_records_the_class_of_the_cls_option_and_full_provenance():
    model = tiny("cochcnn")
    x = ears(model)
    got = explain_cochcnn(model, x, target="class_logit", cls=5)
    for level in got.values():
        assert level.target_class.values.tolist() == [5, 5]
        assert all(key in level.attrs for key in PROVENANCE)
    with torch.no_grad():
        logits = model(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(got["waveform"].logit.values, logits[:, 5], rtol=1e-12)
    assert explain_cochcnn(model, x, target=np.int64(3))["waveform"].target_class.values.tolist() == [3, 3]


def test_cue_network_records_the_class_of_the_cls_option_and_full_provenance():
    model = tiny("cuenet")
    with torch.no_grad():
        cues = model.front_end(torch.as_tensor(ears(model))).numpy()
    got = cue_relevance(model, cues, target="class_logit", cls=5)
    assert got.target_class.values.tolist() == [5, 5]
    assert all(key in got.attrs for key in PROVENANCE)
    waves = explain_ears(model, ears(model), target="class_logit", cls=7)["cues"]
    assert waves.target_class.values.tolist() == [7, 7]


# -- 4: audit explains what Explainer explains, and checks its input ---------------------------------

def test_audit_seeds_the_azimuth_block_of_factorized_class_logits():
    model = build_model("tfcnn", head="multitask").eval()
    with torch.no_grad():  # an elevation logit becomes the global arg-max
        [m for m in model.modules() if isinstance(m, nn.Linear)][-1].bias[model.direction_grid.n_azimuths:] += 50.0
    x = 0.01 * torch.randn(1, *model.input_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    report = audit(model, "tfcnn", target="class_logit", input=x[0].float())
    with Explainer(model, composite="tfcnn", target="class_logit") as explainer:
        out = explainer.explain_batch(x.float())
    assert report.seed_sum == pytest.approx(float(out["attr_output"].sum()), rel=1e-6)


def test_audit_refuses_inputs_of_the_wrong_shape_or_not_finite(loccnn):
    with pytest.raises(InputError, match=r"^input of shape \(3, 100\) is not allowed; use one window of shape "
                                         r"\(4, 350\)$"):
        audit(loccnn, input=np.zeros((3, 100)))
    with pytest.raises(InputError, match="^input holds NaN or infinite values"):
        audit(loccnn, input=np.full((4, 350), np.nan))


def test_audit_counts_non_finite_relevance_as_a_problem(loccnn):
    with torch.no_grad():
        loccnn.fc2.weight[0, 0] = float("nan")
    report = audit(loccnn)
    assert report.problems and "problems: none" not in report.render()


def test_audit_of_a_cue_network_starts_where_lrp_starts():
    report = audit(tiny("cuenet"), "cuenet", target="class_logit")
    assert report.problems == []
    assert not any(m.name.startswith("front_end") for m in report.modules)
    assert "starts at the output of its front_end" in report.render()


# -- 5: options whose rule is off are refused ---------------------------------------------------------

def test_options_of_rules_that_are_off_are_refused(loccnn):
    with pytest.raises(InputError, match=r"^maxpool_power=3.0 is not allowed with maxpool='paper': no rule uses it; "
                                         r"use maxpool='smooth' or leave it out$"):
        Explainer(loccnn, maxpool_power=3.0)
    Explainer(loccnn, maxpool="smooth", maxpool_power=3.0)
    for arch in ("cochcnn", "cuenet"):
        model = tiny(arch)
        with pytest.raises(InputError, match=r"^gamma=0.5 is not allowed with conv_rule='epsilon'"):
            make_composite(arch, model, conv_rule="epsilon", gamma=0.5)
        make_composite(arch, model, conv_rule="epsilon")


# -- 7: occlusion's stride is checked with the model's input shape, before any data -------------------

def test_occlusion_stride_longer_than_its_window_is_refused_at_construction(loccnn):
    with pytest.raises(InputError, match="^stride=300 is not allowed with an occlusion window of 35 samples"):
        Explainer(loccnn, method="occlusion", stride=300)  # the default window: a tenth of 350 samples
    with pytest.raises(InputError, match="^stride=20 is not allowed with an occlusion window of 10 samples"):
        Explainer(loccnn, method="occlusion", window=10, stride=20)


# -- 6: wav folders never mix relevance ---------------------------------------------------------------

def test_wavs_of_other_relevance_are_refused_and_the_same_relevance_overwrites(loccnn, tmp_path):
    x = np.random.default_rng(1).standard_normal((2, 4, 350))
    lrp = explain(loccnn, x, target="prediction")
    saliency = explain(loccnn, x, target="prediction", method="saliency")
    folder = tmp_path / "wavs"
    first = write_wavs(lrp, None, folder)
    assert write_wavs(lrp, None, folder) == first  # the same relevance again
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(InputError, match="holds wav files .* of other relevance than this one"):
        write_wavs(saliency, None, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    (folder / "listen.json").unlink()  # a folder an older xai-loc wrote: its origin is unknown, not "other"
    with pytest.raises(InputError, match="holds wav files .* of unknown relevance"):
        write_wavs(lrp, None, folder)


# -- 9, 11: the Explainer's data and type checks ------------------------------------------------------

def test_explainer_checks_its_data_arguments(loccnn):
    with pytest.raises(InputError, match="^mean_input holds NaN or infinite values"):
        Explainer(loccnn, method="integrated_gradients", baseline="mean", mean_input=np.full((4, 350), np.nan))
    with pytest.raises(InputError, match=r"^mean_input of shape \(3, 3\) are not allowed; use \[4, 350\]$"):
        Explainer(loccnn, method="integrated_gradients", baseline="mean", mean_input=np.zeros((3, 3)))
    with pytest.raises(InputError, match="^train_mean holds NaN or infinite values"):
        Explainer(loccnn, target="contrast", reference="train-mean", train_mean=[1.0, np.nan, 1.0])
    with pytest.raises(InputError, match=r"^train_mean of shape \(2,\) are not allowed; use \[3\]$"):
        Explainer(loccnn, target="contrast", reference="train-mean", train_mean=[1.0, 2.0])


@pytest.mark.parametrize("settings, message", [
    ({"target": ["truth"]}, r"^unknown target \['truth'\]"),
    ({"composite": ["paper"]}, r"^unknown composite \['paper'\]"),
    ({"method": {}}, r"^unknown method \{\}"),
    ({"levels": 3}, r"^levels=3 is not allowed"),
])
def test_explainer_refuses_arguments_of_the_wrong_type_in_one_line(loccnn, settings, message):
    with pytest.raises(InputError, match=message):
        Explainer(loccnn, **settings)


def test_explain_arrays_refuses_ragged_inputs_and_a_scalar_truth(loccnn):
    with pytest.raises(InputError, match="^inputs of type list that are not an array are not allowed"):
        explain_arrays(loccnn, [[1, 2], [3]], target="prediction")
    with pytest.raises(InputError, match="^one true value 3.0 do not fit 2 inputs"):
        explain_arrays(loccnn, np.zeros((2, 4, 350)), truth=3.0)


# -- 10: every registered method works on BAST --------------------------------------------------------

@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "occlusion"])
def test_registered_methods_explain_bast_at_both_levels(method):
    model = tiny("bast")
    got = explain_ears(model, ears(model), method=method)
    assert set(got) == {"spectrogram", "waveform"}
    assert got["waveform"].dims == ("example", "ear", "time") and got["spectrogram"].attrs["method"] == method
    assert np.isfinite(got["spectrogram"].values).all()


# -- 12: explain_cuenet loads its checkpoint once ------------------------------------------------------

def test_explain_cuenet_loads_its_checkpoint_once(tmp_path, monkeypatch):
    import xai_loc.models as models
    from xai_loc.explain.cuenet import explain_cuenet
    from xai_loc.models.checkpoint import save_checkpoint

    model = tiny("cuenet").float()
    path = save_checkpoint(model, tmp_path / "c.safetensors", {"condition": {"rooms": ["anechoic"], "snr": [15, 40]}})
    loads = []
    original = models.load_model
    monkeypatch.setattr(models, "load_model", lambda *a, **k: loads.append(1) or original(*a, **k))
    got = explain_cuenet(path, ears(model).astype(np.float32), target="prediction")["cues"]
    assert len(loads) == 1 and got.attrs["checkpoint"] == "c.safetensors"
    twin = cue_relevance(on_cue_maps(model), model.front_end(torch.as_tensor(ears(model), dtype=torch.float32))
                         .detach().numpy(), target="prediction")
    np.testing.assert_allclose(got.relevance.values, twin.relevance.values, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("pad", [nn.ZeroPad1d(2), nn.ConstantPad1d(2, 0.0), nn.ReflectionPad1d(2)])
def test_padding_needs_no_rule_of_its_own(pad):
    """Padding moves samples (its gradient is the relevance map): a user model with it is not refused."""
    model = nn.Sequential(nn.Conv1d(1, 2, 3), pad, nn.Flatten(), nn.Linear(2 * 22, 3))
    rel = explain(model.eval(), torch.randn(2, 1, 20), target="prediction", method="lrp", composite="epsilon")
    assert rel.shape == (2, 1, 20) and np.isfinite(rel.values).all()
