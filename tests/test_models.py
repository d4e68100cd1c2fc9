"""Localizers (LocCNN, SampleCNN), the model registry and checkpoints."""
from __future__ import annotations

import hashlib
import json
import re

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.overrides import TorchFunctionMode
from zennit.layer import Sum

from xai_loc.errors import InputError
from xai_loc.models import (
    MODELS,
    Gate,
    Localizer,
    LocCNN,
    SampleCNN,
    build_model,
    file_digest,
    import_paper_checkpoint,
    load_model,
    load_paper_model,
    read_card,
    register_model,
    save_checkpoint,
)

CARD = {
    "condition": {"t60": 0.6, "snr": 10},
    "training": {"seed": 7, "epochs": 3},
    "metrics": {"val": {"mae": 0.2}, "test": {"mae": 0.3}},
}


def paper_keys(arch: str) -> list[str]:
    """The key layout of the paper's released state dicts (brief, section 2)."""
    wb = ("weight", "bias")
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    if arch == "loccnn":
        return [f"{m}.{p}" for m in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2") for p in wb]
    keys = [f"BasicBlock1.conv.{p}" for p in wb] + [f"BasicBlock1.bn.{p}" for p in bn]
    for i in range(1, 6):
        for module, params in (("BasicBlock.conv", wb), ("BasicBlock.bn", bn), ("conv1", wb), ("bn1", bn),
                               ("SEBlock.dense1", wb), ("SEBlock.dense2", wb)):
            keys += [f"ReSE{i}.{module}.{p}" for p in params]
    return keys + [f"dense1.{p}" for p in wb] + [f"bn1.{p}" for p in bn] + [f"output_dense.{p}" for p in wb]


def randomized(model: Localizer, seed: int = 0) -> Localizer:
    """Give every float tensor (BatchNorm statistics included) random float32 values; eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                noise = 0.2 * torch.randn(value.shape, generator=gen)
                value.copy_(noise.abs() + 0.5 if key.endswith("running_var") else noise)
    return model.eval()


def window(model: Localizer, batch: int = 2, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(batch, *model.input_shape, generator=torch.Generator().manual_seed(1)).to(dtype)


# --- architectures -------------------------------------------------------------------------

@pytest.mark.parametrize(("arch", "n_params", "n_tensors"), [("loccnn", 2_126_355, 14), ("samplecnn", 673_475, 106)])
def test_parameter_count_and_paper_key_layout(arch, n_params, n_tensors):
    model = build_model(arch)
    assert sum(p.numel() for p in model.parameters()) == n_params
    assert list(model.state_dict()) == paper_keys(arch)
    assert len(model.state_dict()) == n_tensors


def test_paper_shapes():
    loc, sample = LocCNN().state_dict(), SampleCNN().state_dict()
    assert loc["conv1.weight"].shape == (96, 16, 7)
    assert loc["fc1.weight"].shape == (500, 3712)
    assert loc["fc2.weight"].shape == (3, 500)
    assert sample["dense1.weight"].shape == (256, 128)
    assert sample["bn1.running_mean"].shape == (256,)
    assert sample["output_dense.weight"].shape == (3, 256)
    assert SampleCNN().Avgpool1.kernel_size == (7,)


@pytest.mark.parametrize(("arch", "n_mics", "n_samples"),
                         [("loccnn", 8, 4096), ("loccnn", 2, 175), ("samplecnn", 8, 4096), ("samplecnn", 1, 729)])
def test_forward_shapes_for_other_arrays_and_windows(arch, n_mics, n_samples):
    model = build_model(arch, n_mics=n_mics, n_samples=n_samples).eval()
    assert model.input_shape == (n_mics, n_samples)
    assert model.config == {"n_mics": n_mics, "n_samples": n_samples}
    assert model(torch.randn(2, n_mics, n_samples)).shape == (2, 3)


def test_flatten_size_follows_window():
    assert LocCNN(n_mics=8, n_samples=4096).fc1.in_features == 128 * (4096 // 7 // 5 // 5)


@pytest.mark.parametrize(("arch", "kwargs", "match"), [
    ("loccnn", {"n_samples": 174}, "n_samples=174 is too short for loccnn"),
    ("samplecnn", {"n_samples": 728}, "at least 729"),
    ("samplecnn", {"n_mics": 0}, "n_mics=0"),
    ("loccnn", {"n_mics": 2.5}, "n_mics=2.5"),
])
def test_bad_constructor_arguments(arch, kwargs, match):
    with pytest.raises(InputError, match=match):
        build_model(arch, **kwargs)


def test_registry():
    assert set(MODELS) >= {"loccnn", "samplecnn"}
    assert MODELS["loccnn"] is LocCNN and LocCNN.arch_name == "loccnn"
    allowed = "bast, cochcnn, cuenet, loccnn, samplecnn, tfcnn"
    with pytest.raises(InputError, match=f"unknown model architecture 'resnet'; allowed: {allowed}"):
        build_model("resnet")
    with pytest.raises(ValueError, match="already registered"):
        register_model("loccnn")(LocCNN)
    with pytest.raises(TypeError):
        register_model("plain")(nn.Linear)


def test_dropout_drops_elements_not_examples():
    for model in (LocCNN(), SampleCNN()):
        assert type(model.dr1) is nn.Dropout
    assert type(SampleCNN().ReSE1.dropout) is nn.Dropout1d  # channel dropout on [batch, channels, time]


def test_eval_mode_is_deterministic_and_train_mode_is_not():
    torch.manual_seed(0)
    for model in (LocCNN(4, 1024), SampleCNN(4, 1024)):
        x = window(model.eval(), batch=4)
        with torch.no_grad():
            assert torch.equal(model(x), model(x))
            model.train()
            assert not torch.equal(model(x), model(x))


# --- everything is a module ----------------------------------------------------------------

class _OutsideLeaves(TorchFunctionMode):
    """Record torch functions called while no leaf module is running."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.depth = 0
        self.outside: set[str] = set()
        self.handles = []
        for module in model.modules():
            if not list(module.children()):
                self.handles.append(module.register_forward_pre_hook(self._enter))
                self.handles.append(module.register_forward_hook(self._leave))

    def _enter(self, *_):
        self.depth += 1

    def _leave(self, *_):
        self.depth -= 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.depth == 0:
            self.outside.add(getattr(func, "__name__", repr(func)))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("arch", ["loccnn", "samplecnn"])
def test_forward_does_no_arithmetic_outside_modules(arch):
    model = build_model(arch, n_mics=4, n_samples=2048).eval()
    x = window(model)
    recorder = _OutsideLeaves(model)
    with torch.no_grad(), recorder:
        model(x)
    assert recorder.outside <= {"stack"}  # stacking for Sum only; no add, mul, mean, ...


@pytest.mark.parametrize("arch", ["loccnn", "samplecnn"])
def test_every_leaf_module_runs(arch):
    model = build_model(arch, n_mics=4, n_samples=2048).eval()
    calls: dict[str, int] = {}
    for name, module in model.named_modules():
        if not list(module.children()):
            module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls.get(name, 0) + 1))
    with torch.no_grad():
        model(window(model))
    leaves = {name for name, m in model.named_modules() if not list(m.children())}
    assert set(calls) == leaves
    assert all(count == 1 for count in calls.values())


def test_samplecnn_gate_and_residual_modules():
    model = randomized(SampleCNN(n_mics=4, n_samples=1024))
    for i in range(1, 6):
        block = getattr(model, f"ReSE{i}")
        assert isinstance(block.gate, Gate) and isinstance(block.residual, Sum)
    gate_out, sum_out = {}, {}
    block = model.ReSE2
    block.gate.register_forward_hook(lambda m, inp, out: gate_out.update(x=inp[0], s=inp[1], y=out))
    block.residual.register_forward_hook(lambda m, inp, out: sum_out.update(x=inp[0], y=out))
    with torch.no_grad():
        model(window(model))
    x, s = gate_out["x"], gate_out["s"]
    assert s.shape == x.shape[:2] and ((s > 0) & (s < 1)).all()
    torch.testing.assert_close(gate_out["y"], x * s[..., None])
    torch.testing.assert_close(sum_out["y"], x + x * s[..., None])


# --- xai-loc checkpoints -------------------------------------------------------------------

def test_own_format_round_trip_float32(tmp_path):
    model = randomized(SampleCNN(n_mics=4, n_samples=1024))
    path = save_checkpoint(model, tmp_path / "m.safetensors", CARD)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left
    loaded = load_model(path)
    assert isinstance(loaded, SampleCNN) and not loaded.training
    assert loaded.config == model.config
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = window(model)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    card = read_card(path)
    assert card["architecture"] == "samplecnn"
    assert card["config"] == {"n_mics": 4, "n_samples": 1024}
    assert card["condition"] == {"t60": 0.6, "snr": 10.0}
    assert card["training"] == {"seed": 7, "epochs": 3}
    assert card["metrics"]["test"] == {"metrics": {"mae": 0.3}, "baseline": None}  # a flat entry, upgraded on read
    assert card["dataset"] is None
    assert card["dtype"] == "float32" and "torch" in card["software"] and card["created"]


def test_own_format_round_trip_float16(tmp_path):
    model = randomized(LocCNN(n_mics=4, n_samples=1024))
    path = save_checkpoint(model, tmp_path / "m.safetensors", CARD, dtype=torch.float16)
    assert read_card(path)["dtype"] == "float16"
    loaded = load_model(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    rounded = LocCNN(n_mics=4, n_samples=1024).eval()
    rounded.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    x = window(model)
    with torch.no_grad():
        assert torch.equal(loaded(x), rounded(x))
        torch.testing.assert_close(loaded(x), model(x), rtol=2e-2, atol=2e-2 * model(x).abs().max().item())
    assert path.stat().st_size < 0.6 * save_checkpoint(model, tmp_path / "f32.safetensors", CARD).stat().st_size


def test_save_checkpoint_rejects_bad_input_and_writes_nothing(tmp_path):
    model = LocCNN(n_mics=2, n_samples=175)
    with pytest.raises(InputError, match="t60=-1"):
        save_checkpoint(model, tmp_path / "a.safetensors", {"condition": {"t60": -1, "snr": 10}})
    with pytest.raises(InputError, match="condition"):
        save_checkpoint(model, tmp_path / "a.safetensors", {})
    with pytest.raises(InputError, match="dtype 'bfloat16'"):
        save_checkpoint(model, tmp_path / "a.safetensors", CARD, dtype=torch.bfloat16)
    with pytest.raises(TypeError):
        save_checkpoint(model, tmp_path / "a.safetensors", {**CARD, "training": {1, 2}})
    assert list(tmp_path.iterdir()) == []


def test_load_model_refuses_foreign_and_corrupt_files(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00not a checkpoint" * 50)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign), metadata={"format": "pt"})
    alien = tmp_path / "alien.safetensors"
    save_file(LocCNN(2, 175).state_dict(), str(alien), metadata={"xai_loc_card": json.dumps(
        {"format": "xai-loc-checkpoint", "format_version": 1, "architecture": "resnet", "config": {}})})
    good = save_checkpoint(LocCNN(2, 175), tmp_path / "good.safetensors", CARD)
    nocond = tmp_path / "nocond.safetensors"  # a card another tool wrote without the condition every reader shows
    save_file(LocCNN(2, 175).state_dict(), str(nocond), metadata={"xai_loc_card": json.dumps(
        {"format": "xai-loc-checkpoint", "format_version": 1, "architecture": "loccnn", "config": {"n_mics": 2,
                                                                                                  "n_samples": 175},
         "condition": {"t60": "0.6", "snr": 10}})})
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-1000])
    cases = [
        (garbage, "is not a safetensors file"),
        (foreign, "has no xai-loc card"),
        (alien, "names architecture 'resnet', which is not registered; registered: bast, cochcnn, cuenet, loccnn,"),
        (truncated, "is not a safetensors file"),
        (nocond, "has a card whose t60='0.6' is not allowed; use a positive number of seconds"),
        (tmp_path / "missing.safetensors", "does not exist"),
    ]
    for path, message in cases:
        with pytest.raises(InputError, match=message) as err:
            load_model(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_load_model_refuses_weights_that_do_not_match_the_card(tmp_path):
    path = tmp_path / "m.safetensors"
    card = {"format": "xai-loc-checkpoint", "format_version": 1, "architecture": "samplecnn",
            "config": {"n_mics": 16, "n_samples": 5120}, "condition": {"t60": 0.6, "snr": 10.0}}
    save_file(LocCNN().state_dict(), str(path), metadata={"xai_loc_card": json.dumps(card)})
    with pytest.raises(InputError, match="does not match samplecnn: missing 106.*unexpected 14"):
        load_model(path)


def test_flipped_weight_bytes_and_integer_weights_are_refused(tmp_path):
    path = save_checkpoint(LocCNN(2, 175), tmp_path / "m.safetensors", {"condition": {"t60": 0.6, "snr": 10}})
    card = read_card(path)
    header = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    assert card["weights_sha256"] == hashlib.sha256(path.read_bytes()[header:]).hexdigest()
    state = randomized(LocCNN(2, 175), seed=1).state_dict()
    other = save_checkpoint(randomized(LocCNN(2, 175), seed=1), tmp_path / "other.safetensors", card)
    assert read_card(other)["weights_sha256"] not in ("", card["weights_sha256"])  # a card's old digest is replaced
    load_model(other)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01  # one bit of the last tensor: still a valid float, only the digest tells
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=rf"^checkpoint {re.escape(str(path))} is damaged: its weights do not match "
                                         r"the sha256 its card records; copy it again \(or retrain it\)$"):
        load_model(path)
    old = tmp_path / "old.safetensors"  # a card from before the digest: loaded unchecked
    save_file(state, str(old), metadata={"xai_loc_card": json.dumps({k: v for k, v in card.items()
                                                                      if k not in ("weights_sha256", "card_sha256")})})
    load_model(old)
    save_file({**state, "conv1.bias": state["conv1.bias"].to(torch.int32)}, str(old),
              metadata={"xai_loc_card": json.dumps({k: v for k, v in card.items()
                                                    if k not in ("weights_sha256", "card_sha256")})})
    with pytest.raises(InputError, match=r"mis-typed 1: conv1.bias int32 \(expected float32\)"):
        load_model(old)


def test_every_shipped_checkpoint_records_and_matches_its_weights_digest():
    from xai_loc.models.zoo import pretrained_dir
    paths = sorted(pretrained_dir().glob("*.safetensors"))
    assert len(paths) >= 12
    for path in paths:
        card = read_card(path)
        header = 8 + int.from_bytes(path.read_bytes()[:8], "little")
        assert card["weights_sha256"] == hashlib.sha256(path.read_bytes()[header:]).hexdigest(), path.name


def test_file_digest(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"xai-loc" * 1000)
    assert file_digest(path) == hashlib.sha256(b"xai-loc" * 1000).hexdigest()


# --- the paper's state dicts ---------------------------------------------------------------

@pytest.mark.parametrize("arch", ["loccnn", "samplecnn"])
@pytest.mark.parametrize("wrapper", [None, "state_dict", "model_state_dict"])
def test_paper_import_round_trip_float64(tmp_path, arch, wrapper):
    # float32-representable values, stored as float64: the import must keep them exactly
    reference = randomized(build_model(arch), seed=3).double()
    state = reference.state_dict()
    src = tmp_path / f"model_SNR_10_T60_0.6_{arch}.pth"
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 12}, src)
    dst = import_paper_checkpoint(src, arch, t60=0.6, snr=10)
    assert dst == src.with_suffix(".safetensors")
    card = read_card(dst)
    assert card["source"] == {"kind": "paper-state-dict", "file": src.name, "sha256": file_digest(src)}
    assert card["condition"] == {"t60": 0.6, "snr": 10.0} and card["architecture"] == arch
    loaded = load_model(dst).double()
    x = window(reference, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), reference(x), rtol=1e-12, atol=1e-12)


def test_load_paper_model(tmp_path):
    src = tmp_path / "m.pth"
    reference = randomized(LocCNN())
    torch.save(reference.state_dict(), src)
    model = load_paper_model(src, "loccnn")
    assert not model.training
    x = window(model)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


class _Custom:
    """An arbitrary class: pickling it into a checkpoint makes the file unsafe to load."""


def test_paper_import_refuses_pickled_objects(tmp_path):
    src = tmp_path / "evil.pth"
    torch.save({**LocCNN().state_dict(), "extra": _Custom()}, src)
    with pytest.raises(InputError, match="refused .*evil.pth.*arbitrary objects .*_Custom"):
        import_paper_checkpoint(src, "loccnn", t60=0.6, snr=10)
    assert not src.with_suffix(".safetensors").exists()


def test_paper_import_refuses_wrong_architecture(tmp_path):
    src = tmp_path / "loccnn.pth"
    torch.save(LocCNN().state_dict(), src)
    with pytest.raises(InputError) as err:
        import_paper_checkpoint(src, "samplecnn", t60=0.6, snr=10)
    message = str(err.value)
    assert "\n" not in message and "loccnn.pth does not fit samplecnn" in message
    assert "missing 106: BasicBlock1.conv.weight" in message and "(+101 more)" in message
    assert "unexpected 14: conv1.weight" in message
    assert not src.with_suffix(".safetensors").exists()


def test_paper_import_refuses_wrong_shapes_and_bad_condition(tmp_path):
    src = tmp_path / "eight_mics.pth"
    torch.save(LocCNN(n_mics=8).state_dict(), src)
    with pytest.raises(InputError, match=r"mis-shaped 1: conv1.weight \[96, 8, 7\] \(expected \[96, 16, 7\]\)"):
        import_paper_checkpoint(src, "loccnn", t60=0.6, snr=10)
    dst = import_paper_checkpoint(src, "loccnn", t60=0.6, snr=10, dst=tmp_path / "out.safetensors", n_mics=8)
    assert read_card(dst)["config"] == {"n_mics": 8, "n_samples": 5120}
    with pytest.raises(InputError, match="t60=0"):
        import_paper_checkpoint(src, "loccnn", t60=0, snr=10, n_mics=8)
    with pytest.raises(InputError, match="unknown model architecture"):
        import_paper_checkpoint(src, "resnet", t60=0.6, snr=10)


def test_paper_import_refuses_corrupt_files(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x80\x02 not a checkpoint" * 20)
    zipped = tmp_path / "truncated.pth"
    torch.save(LocCNN(2, 175).state_dict(), zipped)
    zipped.write_bytes(zipped.read_bytes()[:2000])
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    cases = [(garbage, "not a PyTorch state dict"), (zipped, "not a PyTorch state dict"),
             (tensor, "holds a Tensor, not a state dict"), (tmp_path / "missing.pth", "does not exist")]
    for src, message in cases:
        with pytest.raises(InputError, match=message) as err:
            import_paper_checkpoint(src, "loccnn", t60=0.6, snr=10)
        assert "\n" not in str(err.value)
