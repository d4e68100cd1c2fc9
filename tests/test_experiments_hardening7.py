"""Regression tests: deletion_predictions' inputs, the methods' sample counts, ``train --out`` over another file."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import one_line, refused, run_cli, small_model

from xai_loc.experiments.perturbation import deletion_predictions


class Spy(torch.nn.Module):
    """Predicts (sum of mic 0, sum of mic 1, 0) and counts its forward passes."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        out = torch.zeros(x.shape[0], 3, dtype=torch.float64)
        out[:, :2] = x[:, :2].sum(-1)
        return out


def _windows() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(4)
    return torch.randn(4, 2, 10, generator=gen), torch.randn(4, 2, 10, generator=gen) * 1e-3


@pytest.mark.parametrize(("change", "message"), [
    # review: int16 windows ranked by relevance cast to int16 (1e-3 -> 0), predictions far from the float call's
    ({"windows": "int16"}, "windows of dtype torch.int16 are not allowed; give floating-point windows "
                           "(e.g. windows.float(), at the level the model was trained on)"),
    # review: a NaN window returned NaN predictions silently
    ({"nan": 1, "first": 2}, "window 3 holds NaN or infinite samples; clean the audio first or leave that window out"),
    ({"relevance_nan": 2}, "relevance holds NaN or infinite values; give finite relevance per sample"),
    # review: seeds were never checked (2.5 acted as 2, 2**70 as 0, -1 as 2**64 - 1, True as 1)
    ({"seed": 2.5}, "seed=2.5 is not allowed; use an integer in [0, 18446744073709551615]"),
    ({"seed": 2**70}, "seed=1180591620717411303424 is not allowed; use an integer in [0, 18446744073709551615]"),
    ({"seed": -1}, "seed=-1 is not allowed; use an integer in [0, 18446744073709551615]"),
    ({"seed": True}, "seed=True is not allowed; use an integer in [0, 18446744073709551615]"),
    # review: batch_size=0 -> ValueError from range(); first=2**70 -> OverflowError
    ({"batch_size": 0}, "batch_size=0 is not allowed; use an integer >= 1"),
    ({"first": 2**70}, "first=1180591620717411303424 is not allowed; use an integer in [0, 461168601842738786]"),
    # review: 2-D windows -> a raw torch RuntimeError; percentages "0,10" -> ValueError from float()
    ({"windows": "2d"}, "windows of shape (4, 20) are not allowed; the model takes (windows, mics, time)"),
    ({"percentages": "0,10"}, "percentages '0,10' are not allowed; give a sequence of numbers in [0, 100]"),
    ({"percentages": (0, "x")}, "percentages (0, 'x') are not allowed; give a sequence of numbers in [0, 100]"),
])
def test_deletion_predictions_refuse_bad_inputs_in_one_line_before_any_forward_pass(change, message):
    x, rel = _windows()
    kind = change.pop("windows", None)
    if kind == "int16":
        x = (x * 1000).to(torch.int16)
    if kind == "2d":
        x, rel = x.reshape(4, 20), rel.reshape(4, 20)
    if "nan" in change:
        x[change.pop("nan"), 1, 3] = float("nan")
    if "relevance_nan" in change:
        rel[change.pop("relevance_nan"), 0, 0] = float("nan")
    model = Spy()
    options = {"percentages": (0, 10, 50), "modes": ["relevance", "random"], "relevance": rel, **change}
    assert one_line(deletion_predictions, model, x, **options) == message
    assert model.calls == 0


def test_windows_that_do_not_fit_the_model_are_refused_in_one_line():
    # review: 15-mic windows for a 16-mic model -> a raw torch RuntimeError from its first convolution
    model = small_model(16, 512)
    x = torch.zeros(2, 15, 512)
    assert one_line(deletion_predictions, model, x, (0, 10), ["energy"]) == \
        "windows of shape (2, 15, 512) are not allowed; the model takes (windows, 16, 512)"


def test_numpy_windows_and_relevance_give_the_tensors_predictions():
    # review: numpy windows or relevance -> AttributeError 'numpy.ndarray' object has no attribute 'to'
    x, rel = _windows()
    options = {"modes": ["relevance", "energy", "random"], "fill": "noise", "seed": 7, "batch_size": 3}
    want = deletion_predictions(Spy(), x, (0, 10, 50), relevance=rel, **options)
    got = deletion_predictions(Spy(), x.numpy(), (0, 10, 50), relevance=rel.numpy(), **options)
    np.testing.assert_array_equal(got, want)
    assert want.shape == (3, 3, 4, 3)
    # relevance of about 1e-3 ranks as it is: the first 10 % (2 of 20 samples) go by the largest relevance
    zeroed = deletion_predictions(Spy(), x.numpy(), (0, 10), ["relevance"], relevance=rel.numpy())
    flat = rel.reshape(4, -1)
    kept = x.reshape(4, -1).clone()
    kept.scatter_(1, torch.argsort(flat, dim=1, descending=True, stable=True)[:, :2], 0.0)
    np.testing.assert_allclose(zeroed[0, 1, :, :2], kept.reshape(4, 2, 10).sum(-1).double().numpy(), rtol=1e-6)


# --- 2. path methods' sample counts have a maximum -----------------------------------------------------------------
@pytest.mark.parametrize(("method", "option"), [("integrated_gradients", "n_steps"), ("gradient_shap", "n_samples")])
def test_path_methods_refuse_more_than_100000_points(method, option):
    # review: n_steps=10**10 -> MemoryError; n_samples=2**70 ran forever
    from xai_loc.explain.methods import get_method

    assert get_method(method).resolve({option: 100_000})[option] == 100_000
    assert one_line(get_method(method).resolve, {option: 10**10}) == \
        f"{option}=10000000000 is not allowed; use an integer in [1, 100000]"


@pytest.mark.usefixtures("no_simulation")
@pytest.mark.parametrize("command", ["explain", "perturb", "tdoa"])
def test_a_huge_n_steps_is_refused_before_the_data_are_simulated(tmp_path, command):
    # review: an OverflowError traceback from numpy's leggauss, after the test data were simulated
    refused(run_cli([command, "--t60", "0.6", "--snr", "10", "--sources", "1", "--method", "integrated_gradients",
                     "--option", "n_steps=1180591620717411303424", "--data", str(tmp_path / "data"),
                     "--out", str(tmp_path / "out")]),
            "n_steps=1180591620717411303424 is not allowed; use an integer in [1, 100000]")
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()


def test_bast_explain_refuses_more_than_100000_steps(tmp_path):
    # review: --steps 1180591620717411303424 -> the same traceback from numpy's leggauss
    refused(run_cli(["binaural", "bast", "explain", "--steps", "1180591620717411303424", "--data",
                     str(tmp_path / "data"), "--out", str(tmp_path / "out")]),
            "Error: --steps 1180591620717411303424 is not allowed; use an integer in [1, 100000]")
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()


# --- 3. train --out does not replace a file that another run (or nothing) wrote ------------------------------------
def _paper_windows(n: int, split: str, seed: int):
    import xarray as xr

    rng = np.random.default_rng(seed)
    return xr.Dataset({"signals": (("window", "mic", "time"), rng.standard_normal((n, 16, 5120)).astype(np.float32)),
                       "source_position": (("window", "xyz"), rng.uniform(1.5, 1.9, (n, 3))),
                       "source_id": ("window", np.arange(n))},
                      attrs={"t60": 0.15, "snr": 25.0, "split": split})


TRAIN = ["train", "--model", "loccnn", "--t60", "0.15", "--snr", "25", "--sources", "2", "--batch-size", "2",
         "--max-epochs", "1"]


@pytest.mark.usefixtures("no_simulation")
def test_train_refuses_to_replace_another_runs_checkpoint_or_another_file_before_simulating(tmp_path):
    # review: a copy of a shipped SampleCNN checkpoint (or a text file) at --out was overwritten, exit 0
    import shutil

    from xai_loc.models.trainer import state_path
    from xai_loc.models.zoo import pretrained_dir

    out = tmp_path / "m.safetensors"
    command = [*TRAIN, "--data", str(tmp_path / "data"), "--out", str(out)]
    shutil.copyfile(pretrained_dir() / "samplecnn_t60-0.15_snr-25.safetensors", out)
    before = out.read_bytes()
    says = refused(run_cli(command), f"Error: {out} is a checkpoint of another training run (arch: 'samplecnn' in it, "
                                     "'loccnn' now; ")
    assert "recipe.lr: 0.0004 in it, 0.001 now; recipe.autocast: 'bfloat16' in it, None now" in says
    assert out.read_bytes() == before
    out.write_text("notes, not a checkpoint")
    refused(run_cli(command),
            f"Error: {out} exists and is not an xai-loc checkpoint; remove it or write to another out")
    assert out.read_text() == "notes, not a checkpoint" and not (tmp_path / "data").exists()
    # a checkpoint this run wrote (no state kept) is replaced by the same run as before, not by another recipe
    from xai_loc.models.training import TrainConfig, train

    out.unlink()
    train("loccnn", _paper_windows(4, "train", 0), _paper_windows(2, "val", 1), out,
          TrainConfig(max_epochs=1, batch_size=2, eval_batch_size=8, save_state=False), progress=False)
    assert not state_path(out).exists()
    before = out.read_bytes()
    refused(run_cli([*command, "--lr", "0.5"]),
            f"Error: {out} is a checkpoint of another training run (recipe.lr: 0.001 in it, 0.5 now); remove it or "
            "write to another out")
    assert out.read_bytes() == before
    result = run_cli(command)  # passes the check and goes on to simulate its data
    assert isinstance(result.exception, AssertionError) and "simulating data" in str(result.exception)
