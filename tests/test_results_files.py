"""Result files: the same command gives the same bytes (no wall-clock values, fixed figure
metadata) and files end with the permissions of a plain write."""
import os
import stat

import pytest
from click.testing import CliRunner

from xai_loc.cli import main


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import torch

    from xai_loc.models import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "loccnn_tiny.safetensors"
    return save_checkpoint(build_model("loccnn"), path, {"condition": {"t60": 0.15, "snr": 25.0}})


def test_perturb_twice_gives_the_same_bytes_with_plain_permissions(tmp_path, tiny_checkpoint):
    old = os.umask(0o022)
    try:
        for run in ("a", "b"):
            result = CliRunner().invoke(main, [
                "--threads", "1", "perturb", "--checkpoint", str(tiny_checkpoint), "--sources", "1",
                "--percentages", "0,50", "--modes", "energy,random", "--no-randomized", "--batch-size", "4",
                "--data", str(tmp_path / "data"), "--out", str(tmp_path / run)])
            assert result.exit_code == 0, result.output
    finally:
        os.umask(old)
    for name in ("perturbation.nc", "perturbation.pdf", "perturbation.png", "perturbation.md"):
        a, b = tmp_path / "a" / name, tmp_path / "b" / name
        assert a.read_bytes() == b.read_bytes(), name
        assert stat.S_IMODE(a.stat().st_mode) == 0o644, name
    timing = (tmp_path / "a" / "perturbation.timing.json").read_text()
    assert "wall_seconds" in timing and "loccnn_tiny" in timing  # the model is named after its file


def test_imported_checkpoint_has_plain_permissions(tmp_path):
    import torch

    from xai_loc.models import build_model

    torch.save(build_model("loccnn").state_dict(), tmp_path / "paper.pth")
    old = os.umask(0o027)
    try:
        result = CliRunner().invoke(main, ["models", "import", "--arch", "loccnn", "--t60", "0.6", "--snr", "10",
                                           str(tmp_path / "paper.pth")])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert "loccnn, 14 tensors, trained at T60 0.6 s, SNR 10 dB; one noise window -> (" in result.output
    assert stat.S_IMODE((tmp_path / "paper.safetensors").stat().st_mode) == 0o640
