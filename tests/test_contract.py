"""The localizer contract (:mod:`xai_loc.models.base`), checked on every registered architecture and on
the plug-in example of ``docs/examples/xailoc-demo``: ``forward == head(body(front_end(x)))`` in
float64, ``decode`` gives the quantities of the output kind, every declared level has its module,
and the contract's views add no state and follow a deep copy."""
import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from xai_loc.acoustics.directions import LATERAL_GRID, STUDY_GRID
from xai_loc.errors import InputError
from xai_loc.models import MODELS, build_model
from xai_loc.models.base import DECODERS, OUTPUT_KINDS, Localizer

DEMO = Path(__file__).resolve().parents[1] / "docs" / "examples" / "xailoc-demo"

#: Small configurations, so that every check runs in well under a second; architectures not
#: named here (plug-ins) are built with their defaults.
SMALL = {
    "loccnn": {"n_mics": 4, "n_samples": 875},
    "samplecnn": {"n_mics": 4, "n_samples": 729},
    "cochcnn": {"n_samples": 4800, "layers": ["c4 1x8", "p1x8", "c4 2x4", "p2x4"], "dense": 16},
    "tfcnn": {"n_samples": 3200, "channels": [4, 4], "dense": [8]},
    "cuenet": {"n_samples": 4410, "channels": 4, "hidden": 8},
    "bast": {"n_samples": 2000, "dim": 8, "depth": 1, "heads": 2, "dim_head": 4, "mlp_dim": 8},
}
#: What each output kind decodes to (the contract's table).
DECODED = {"position": {"position"}, "azimuth": {"azimuth"}, "azimuth_elevation": {"azimuth", "elevation"},
           "direction_classes": {"class", "azimuth", "elevation"}, "cos_sin": {"azimuth"}}


def _demo(monkeypatch) -> Localizer:
    monkeypatch.syspath_prepend(str(DEMO))
    from xailoc_demo.model import STFTCNN

    return STFTCNN(n_mics=4, n_samples=1024, n_fft=64, width=4)


def _built(name: str, monkeypatch) -> Localizer:
    torch.manual_seed(0)
    model = _demo(monkeypatch) if name == "demo" else build_model(name, **SMALL.get(name, {}))
    return model.double().eval()


def _waveforms(model: Localizer, batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, *model.input_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.fixture(params=[*MODELS, "demo"])
def model(request, monkeypatch) -> Localizer:
    return _built(request.param, monkeypatch)


def test_forward_is_head_of_body_of_front_end_in_float64(model):
    x = _waveforms(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.head(model.body(model.front_end(x))), rtol=0, atol=1e-12)


def test_decode_gives_the_quantities_of_the_output_kind(model):
    assert model.output_kind in OUTPUT_KINDS
    with torch.no_grad():
        output = model(_waveforms(model))
        decoded = model.decode(output)
    assert set(decoded) == DECODED[model.output_kind]
    assert all(value.shape[0] == output.shape[0] for value in decoded.values())
    assert (model.direction_grid is not None) == (model.output_kind == "direction_classes")


def test_every_level_has_its_module_and_its_batch(model):
    assert model.levels[0] == "waveform" and len(set(model.levels)) == len(model.levels)
    assert model.level_module("waveform") is None
    captured = {}
    handles = [model.level_module(level).register_forward_hook(
        lambda module, args, out, level=level: captured.__setitem__(level, out)) for level in model.levels[1:]]
    with torch.no_grad():
        model(_waveforms(model, batch=2))
    for handle in handles:
        handle.remove()
    assert set(captured) == set(model.levels[1:])
    assert all(out.shape[0] == 2 for out in captured.values())
    with pytest.raises(InputError, match="level 'cortex' is not allowed"):
        model.level_module("cortex")


def test_every_leaf_module_runs(model):
    ran = set()
    handles = [module.register_forward_hook(lambda *_, name=name: ran.add(name))
               for name, module in model.named_modules() if not list(module.children())]
    with torch.no_grad():
        model(_waveforms(model))
    for handle in handles:
        handle.remove()
    assert ran == {name for name, module in model.named_modules() if not list(module.children())}


def test_the_views_add_no_state_and_follow_a_deep_copy(model):
    # no tensor is registered twice (the body and head views do not own the layers)
    assert len(list(model.named_parameters(remove_duplicate=False))) == len(list(model.named_parameters()))
    assert len(list(model.named_modules(remove_duplicate=False))) == len(list(model.named_modules()))
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(0.1)
        x = _waveforms(model)
        torch.testing.assert_close(twin(x), twin.head(twin.body(twin.front_end(x))), rtol=0, atol=1e-12)
        assert not torch.allclose(twin(x), model(x))


def test_config_and_state_dict_rebuild_the_model(model):
    twin = type(model)(**model.config).double().eval()
    twin.load_state_dict(model.state_dict())  # strict: the views add no keys, fixed front ends are rebuilt
    x = _waveforms(model)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x), rtol=0, atol=0)


def test_a_plugin_that_defines_only_forward_gets_the_defaults():
    class Mean(Localizer):
        def forward(self, x):
            return x.mean(-1)

    model = Mean(3, 16)
    x = torch.randn(2, 3, 16, dtype=torch.float64)
    assert isinstance(model.front_end, nn.Identity) and isinstance(model.head, nn.Identity)
    assert model.levels == ("waveform",) and model.output_kind == "position"
    torch.testing.assert_close(model.head(model.body(model.front_end(x))), x.mean(-1), rtol=0, atol=0)
    assert model.state_dict() == {} and not list(model.children())
    with pytest.raises(InputError, match="allowed: waveform"):
        model.level_module("front_end")

    class Nothing(Localizer):
        pass

    with pytest.raises(TypeError, match="defines neither forward nor body"):
        Nothing(1, 4)(torch.zeros(1, 1, 4))


def test_decoders_known_answers():
    def decode(kind, output, **attributes):
        model = Localizer(1, 1)
        model.output_kind = kind
        for key, value in attributes.items():
            setattr(model, key, value)
        return model.decode(torch.as_tensor(output, dtype=torch.float64))

    assert set(DECODERS) == set(OUTPUT_KINDS) == set(DECODED)
    position = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(decode("position", position)["position"], position)
    np.testing.assert_array_equal(decode("azimuth", [[-30.0], [45.0]])["azimuth"], [-30.0, 45.0])
    both = decode("azimuth_elevation", [[10.0, 20.0]])
    assert (float(both["azimuth"][0]), float(both["elevation"][0])) == (10.0, 20.0)
    angles = np.deg2rad([0.0, 90.0, 200.0, 359.0])
    cos_sin = decode("cos_sin", np.stack([np.cos(angles), np.sin(angles)], 1))["azimuth"]
    np.testing.assert_allclose(cos_sin, [0.0, 90.0, 200.0, 359.0], atol=1e-12)
    # one logit per grid class: label = elevation index * 72 + azimuth index
    logits = np.eye(STUDY_GRID.size)[[75, 503]]
    classes = decode("direction_classes", logits, direction_grid=STUDY_GRID)
    np.testing.assert_array_equal(classes["class"], [75, 503])
    np.testing.assert_array_equal(classes["azimuth"], [15.0, 355.0])
    np.testing.assert_array_equal(classes["elevation"], [10.0, 60.0])
    # factorized: an azimuth block (37, lateral) then an elevation block (14)
    factorized = np.concatenate([np.eye(37)[[0, 36]], np.eye(14)[[13, 4]]], axis=1)
    lateral = decode("direction_classes", factorized, direction_grid=LATERAL_GRID, factorized_classes=True)
    np.testing.assert_array_equal(lateral["azimuth"], [-90.0, 90.0])
    np.testing.assert_array_equal(lateral["elevation"], [90.0, 0.0])
    np.testing.assert_array_equal(lateral["class"], [13 * 37, 4 * 37 + 36])


def test_cos_sin_decoding_is_differentiable():
    output = torch.tensor([[math.cos(0.3), math.sin(0.3)]], dtype=torch.float64, requires_grad=True)
    model = Localizer(1, 1)
    model.output_kind = "cos_sin"
    model.decode(output)["azimuth"].sum().backward()
    # d(atan2(s, c))/d(c, s) = (-s, c) / (c^2 + s^2), in degrees
    np.testing.assert_allclose(output.grad[0].numpy(), np.rad2deg([-math.sin(0.3), math.cos(0.3)]), rtol=1e-12)


def test_the_tfcnn_multitask_head_decodes_lateral_classes():
    model = build_model("tfcnn", head="multitask", **SMALL["tfcnn"])
    assert (model.output_kind, model.direction_grid, model.factorized_classes) == \
        ("direction_classes", LATERAL_GRID, True)
    assert build_model("tfcnn", **SMALL["tfcnn"]).output_kind == "azimuth"
