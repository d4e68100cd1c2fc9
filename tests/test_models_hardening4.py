"""Regressions of a review of xai_loc.models checkpoints: card records of the training data's rate and array, the
card's format version, architecture and dtype, negative BatchNorm variances, non-finite predictions scored as
numbers, and the parameter counts of ``models list``."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from helpers import one_line, refused, run_cli
from safetensors.torch import save

from xai_loc.errors import InputError
from xai_loc.models import build_model, import_paper_checkpoint, load_model, read_card, save_checkpoint
from xai_loc.models.checkpoint import CARD_KEY
from xai_loc.models.evaluation import evaluate, evaluate_checkpoint
from xai_loc.models.families import family_rows
from xai_loc.models.zoo import checkpoint_name, pretrained_dir

SHIPPED = pretrained_dir() / checkpoint_name("loccnn", 0.6, 10.0)
#: A tiny LocCNN: 2 microphones, 256 samples.
TINY = {"n_mics": 2, "n_samples": 256}


def recarded(path: Path, source: Path = SHIPPED, tensors: dict | None = None, **changes) -> Path:
    """A copy of checkpoint ``source`` at ``path``, its card updated with ``changes`` and the header entries of
    ``tensors`` (name -> entries) with theirs; the tensors' bytes are kept."""
    data = source.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    card = {**json.loads(header["__metadata__"][CARD_KEY]), **changes}
    header["__metadata__"] = {CARD_KEY: json.dumps(card)}
    for name, entries in (tensors or {}).items():
        header[name] = {**header[name], **entries}
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(len(head).to_bytes(8, "little") + head + data[8 + n:])
    return path


def carded(path: Path, **fields) -> Path:
    """A file of one tensor with a loccnn card of ``fields``."""
    card = {"format": "xai-loc-checkpoint", "format_version": 1, "architecture": "loccnn",
            "config": {"n_mics": 16, "n_samples": 5120}, "condition": {"t60": 0.6, "snr": 10.0}, **fields}
    path.write_bytes(save({"w": torch.zeros(1)}, metadata={CARD_KEY: json.dumps(card)}))
    return path


# -- 1: the training data's sample rate and microphone positions ------------------------------------------------------

POSITIONS = "a list of finite [x, y, z] positions in metres, one per microphone (or none) is allowed"


@pytest.mark.parametrize(("fields", "says"), [
    ({"data_fs": "abc"}, "data_fs is 'abc'; a positive number of Hz (or none) is allowed"),
    ({"data_fs": 0}, "data_fs is 0; a positive number of Hz (or none) is allowed"),
    ({"data_fs": math.inf}, "data_fs is inf; a positive number of Hz (or none) is allowed"),
    ({"data_fs": None, "dataset": {"train": {"fs": "x"}}}, "dataset.train.fs is 'x'; a positive number of Hz"),
    ({"data_mic_position": [["a", "b", "c"]]}, f"data_mic_position is [['a', 'b', 'c']]; {POSITIONS}"),
    ({"data_mic_position": [[math.nan, 7, 1.2]]}, f"data_mic_position is [[nan, 7, 1.2]]; {POSITIONS}"),
    ({"data_mic_position": [[0, 0]]}, f"data_mic_position is [[0, 0]]; {POSITIONS}"),
    ({"data_mic_position": []}, f"data_mic_position is []; {POSITIONS}"),
    ({"dataset": {"train": {"mic_position": [[1, 2, True]]}}},
     f"dataset.train.mic_position is [[1, 2, True]]; {POSITIONS}"),
    ({"dataset": {"train": [1]}}, "dataset.train is list [1]; a mapping (or none) is allowed"),
])
def test_cards_refuse_recordings_that_are_not_numbers(tmp_path, fields, says):
    path = carded(tmp_path / "a.safetensors", **fields)
    message = one_line(read_card, path)
    assert message.startswith(f"checkpoint {path} has a card whose {says}") and message.endswith("is allowed"), message


def test_evaluate_refuses_nan_microphones_in_one_line_before_simulating(tmp_path, no_simulation):
    path = recarded(tmp_path / "m.safetensors", data_mic_position=[[math.nan, 7.0, 1.2]] * 16)
    refused(run_cli(["evaluate", str(path), "--sources", "2", "--data", str(tmp_path / "data")]),
            f"Error: checkpoint {path} has a card whose data_mic_position is [[nan, 7.0, 1.2], ", POSITIONS)
    fine = recarded(tmp_path / "fine.safetensors", data_fs=16000.0)  # a float rate reads as the shipped int
    assert read_card(fine)["data_fs"] == 16000.0 and read_card(SHIPPED)["data_fs"] == 16000


# -- 2: non-finite predictions, negative BatchNorm variances ----------------------------------------------------------

def noise(n: int, n_mics: int, n_samples: int) -> xr.Dataset:
    rng = np.random.default_rng(0)
    return xr.Dataset({"signals": (("window", "mic", "time"), rng.standard_normal((n, n_mics, n_samples))),
                       "source_position": (("window", "xyz"), rng.uniform(1.0, 2.0, (n, 3))),
                       "source_id": ("window", np.arange(n) + 7)}, attrs={"t60": 0.15, "snr": 25.0, "fs": 16000.0})


def test_evaluate_refuses_non_finite_predictions(tmp_path):
    model = build_model("loccnn", **TINY)
    with torch.no_grad():
        model.fc2.weight.fill_(3e38)  # finite weights whose outputs overflow to inf
    path = save_checkpoint(model, tmp_path / "m.safetensors", {"condition": {"t60": 0.15, "snr": 25.0}})
    assert one_line(evaluate_checkpoint, path, noise(3, 2, 256)) == (
        "checkpoint m.safetensors predicts [inf, inf, inf] for window 0 (source 7) of the dataset; a localizer's "
        "outputs must be finite: check its weights")
    assert one_line(evaluate, model, noise(3, 2, 256)) == (
        "loccnn predicts [inf, inf, inf] for window 0 (source 7) of the dataset; a localizer's outputs must be "
        "finite: check its weights")


def test_negative_batchnorm_variances_are_refused_on_import_and_load(tmp_path):
    model = build_model("samplecnn")
    with torch.no_grad():
        model.BasicBlock1.bn.running_var[5] = -0.25
    says = "has negative BatchNorm variances in BasicBlock1.bn.running_var (smallest -0.25); variances must be >= 0"
    src = tmp_path / "paper.pth"
    torch.save(model.state_dict(), src)
    dst = tmp_path / "paper.safetensors"
    assert one_line(import_paper_checkpoint, src, "samplecnn", 0.6, 10.0, dst) == (
        f"checkpoint {src} {says}, it cannot be used")
    assert not dst.exists()
    path = save_checkpoint(model, tmp_path / "m.safetensors", {"condition": {"t60": 0.6, "snr": 10.0}})
    assert one_line(load_model, path) == f"checkpoint {path} {says}, it cannot be used"


# -- 3, 5: the card's architecture and format version -----------------------------------------------------------------

@pytest.mark.parametrize("arch", [["loccnn"], {"x": 1}])
def test_an_architecture_that_is_not_a_name_is_refused_in_one_line(tmp_path, arch):
    path = carded(tmp_path / "a.safetensors", architecture=arch)
    assert one_line(read_card, path).startswith(f"checkpoint {path} names architecture {arch!r}, which is not "
                                                "registered; registered: bast, cochcnn, cuenet, loccnn, samplecnn")
    refused(run_cli(["models", "list", "--dir", str(tmp_path)]), f"names architecture {arch!r}")


@pytest.mark.parametrize("version", [0, -1, True, 2])
def test_card_format_versions_outside_one_to_the_newest_are_refused(tmp_path, version):
    path = carded(tmp_path / "a.safetensors", format_version=version)
    assert one_line(read_card, path) == (f"checkpoint {path} has card format version {version!r}; allowed: an "
                                         "integer from 1 to 1, the newest this xai-loc reads")


# -- 4: the stored dtype -------------------------------------------------------------------------------------------

def test_weights_read_in_another_dtype_than_the_card_records_are_refused(tmp_path):
    path = recarded(tmp_path / "bf16.safetensors", tensors={"conv1.weight": {"dtype": "BF16"}})
    assert one_line(load_model, path) == (f"checkpoint {path} stores conv1.weight as bfloat16 but its card records "
                                          "float16 weights; copy it again (or retrain it)")
    wide = recarded(tmp_path / "wide.safetensors", dtype="float32")  # the card lies about float16 tensors
    assert one_line(load_model, wide) == (f"checkpoint {wide} stores conv1.bias as float16 but its card records "
                                          "float32 weights; copy it again (or retrain it)")
    unknown = recarded(tmp_path / "bf.safetensors", dtype="bfloat16")
    assert one_line(read_card, unknown) == (f"checkpoint {unknown} has a card whose dtype is 'bfloat16'; one of "
                                            "float32, float16 (or none) is allowed")
    for name, dtype in (("loccnn_t60-0.6_snr-10", torch.float16), ("cuenet_default", torch.float32)):
        shipped = pretrained_dir() / f"{name}.safetensors"  # the shipped float16 and float32 files still load
        assert read_card(shipped)["dtype"] == str(dtype).removeprefix("torch.")
        assert load_model(shipped).training is False


# -- 6: parameters in models list ---------------------------------------------------------------------------------

def test_models_list_counts_trainable_parameters_not_fixed_front_end_kernels():
    rows = {row.split()[0]: row for row in family_rows() if row.startswith("  ")}
    counts = {arch: int(row.split()[1].replace(",", "")) for arch, row in rows.items()}
    assert {arch: counts[arch] for arch in ("loccnn", "samplecnn", "cochcnn", "tfcnn", "cuenet", "bast")} == {
        "loccnn": 2_126_355, "samplecnn": 673_475, "cochcnn": 3_543_648, "tfcnn": 1_478_273, "cuenet": 119_369,
        "bast": 227_906}
    tfcnn = build_model("tfcnn")
    assert sum(p.numel() for p in tfcnn.parameters()) == 1_889_153  # 410,880 of them the fixed STFT kernels
    from xai_loc.models.families import n_parameters

    frozen = torch.nn.Linear(3, 2)
    frozen.weight.requires_grad_(False)
    assert n_parameters(frozen) == 2


def test_float16_check_stores_float32_when_the_rounded_weights_predict_inf():
    """Final review: evaluate() refuses non-finite predictions, which broke float16_check's fallback: a weight beyond
    float16's range (65504) rounds to inf, and the rule must store float32 instead of failing."""
    from xai_loc.models.trainer import float16_check

    model = build_model("loccnn", **TINY).eval()
    with torch.no_grad():
        model.fc2.bias[0] = 1e5

    def score(net):
        out = net(torch.zeros(1, *net.input_shape))
        if not torch.isfinite(out).all():
            raise InputError("loccnn predicts inf for window 0")
        return {"metrics": {"mae": float(out.abs().mean())}}

    stored, entry, record = float16_check(model, score, {"mae": 0.005})
    assert stored == "float32" and record["within_tolerance"] is False and record["change"] == {}
    assert record["float16_refused"] == "loccnn predicts inf for window 0"
    assert entry == score(model)
    with pytest.raises(InputError, match="predicts inf"):
        float16_check(model, score, {"mae": 0.005}, dtype="float16")
