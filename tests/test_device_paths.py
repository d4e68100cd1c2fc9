"""The device paths of perturb and components and the CLI's TF32 switch, checked on the CPU (issue 18).

The copies a GPU makes are built by one function from tensors wherever they are, so on CPU
tensors they must hold the compiled kernels' values exactly; the CUDA runs themselves are
compared with the CPU in ``tests/test_gpu_paths.py``.
"""
import click
import numpy as np
import pytest
import torch

from xai_loc.experiments.deletion_order import filled_copy, zeroed_copy
from xai_loc.experiments.perturbation import FILLS, MODES, deleted_copy, deletion_counts, deletion_predictions


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("fill", list(FILLS))
def test_device_copies_are_the_compiled_kernels_copies(mode, fill):
    rng = np.random.default_rng(5)
    x = torch.tensor(rng.standard_normal((3, 4, 300)), dtype=torch.float32)
    x[0, 0, :7] = -0.0
    relevance = torch.tensor(rng.integers(-3, 4, x.shape), dtype=torch.float32)  # heavy ties
    percentages = (0, 10, 33.3, 70, 100)
    values = FILLS[fill](x, 1, 0)
    steps = MODES[mode](x, relevance, deletion_counts(percentages, x), 1, 0)
    flat = x.reshape(3, -1).numpy()
    on_device = torch.from_numpy(steps)  # what perturbed_batches sends to the device
    fill_on_device = torch.zeros(()) if values is None else values.reshape(3, -1)
    out = np.empty_like(flat)
    for j in range(len(percentages)):
        kernel = zeroed_copy(flat, steps, j, out) if values is None else \
            filled_copy(flat, steps, j, values.reshape(3, -1).numpy(), out)
        copy = deleted_copy(x.reshape(3, -1), on_device, j, fill_on_device)
        np.testing.assert_array_equal(copy.numpy(), kernel)  # equal values (the kernels' x * 0 may be -0.0)


class Linear(torch.nn.Module):
    """A model with parameters, so that deletion_predictions sees the device it computes on."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2 * 16, 3)
        torch.nn.init.normal_(self.fc.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_deletion_predictions_of_a_model_with_parameters_come_back_in_mode_and_step_order():
    x = torch.randn(5, 2, 16, generator=torch.Generator().manual_seed(2))
    rel = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    model = Linear().eval()
    timing = {}
    pred = deletion_predictions(model, x, (0, 50, 100), list(MODES), relevance=rel.double(), batch_size=2,
                                timing=timing)
    assert pred.shape == (len(MODES), 3, 5, 3) and timing["forward"] > 0
    with torch.no_grad():
        whole = np.concatenate([model(x[b:b + 2]).double().numpy() for b in range(0, 5, 2)])
        none = np.concatenate([model(torch.zeros_like(x[b:b + 2])).double().numpy() for b in range(0, 5, 2)])
    for i in range(len(MODES)):
        np.testing.assert_array_equal(pred[i, 0], whole)  # nothing deleted: the windows themselves
        np.testing.assert_array_equal(pred[i, 2], none)  # everything deleted
    options = {"fill": "noise", "seed": 4, "batch_size": 2}
    noisy = deletion_predictions(model, x, (0, 25, 50), list(MODES), relevance=rel, **options)
    first = deletion_predictions(model, x[:2], (0, 25, 50), list(MODES), relevance=rel[:2], **options)
    np.testing.assert_array_equal(noisy[:, :, :2], first)  # the first batch alone: the same draws
    # other batches: the same draws (the float32 forward pass of another batch size may round differently)
    options["batch_size"] = 3
    np.testing.assert_allclose(deletion_predictions(model, x, (0, 25, 50), list(MODES), relevance=rel, **options),
                               noisy, rtol=1e-5, atol=1e-5)
    counts = deletion_counts((0, 25, 50), x)
    for mode in MODES:  # a window's draws depend on its index in the set alone: exactly
        np.testing.assert_array_equal(MODES[mode](x[3:], rel[3:], counts, 4, 3), MODES[mode](x, rel, counts, 4, 0)[3:])
    np.testing.assert_array_equal(FILLS["noise"](x[3:], 4, 3), FILLS["noise"](x, 4, 0)[3:])
    assert not torch.equal(FILLS["noise"](x[3:], 4, 3), FILLS["noise"](x[3:], 4, 0))  # and windows' draws differ


def test_run_perturbation_restores_the_models_device_and_mode(tmp_path):
    from xai_loc.data.scene import paper_scene
    from xai_loc.data.store import simulate_dataset
    from xai_loc.experiments.perturbation import run_perturbation
    from xai_loc.models import build_model

    torch.manual_seed(0)
    model = build_model("loccnn")  # dropout: predictions in train mode would not be reproducible
    store = simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=tmp_path, n_sources=1, progress=False)
    options = {"percentages": (0, 50), "modes": ("relevance", "random"), "method": "saliency", "batch_size": 8}
    trained = run_perturbation({"loccnn": model.train()}, store, **options)
    assert model.training and all(p.device.type == "cpu" for p in model.parameters())
    evaluated = run_perturbation({"loccnn": model.eval()}, store, **options)
    assert not model.training
    np.testing.assert_array_equal(trained["mae"].values, evaluated["mae"].values)


@pytest.fixture
def tf32_on():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _tf32() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


@pytest.mark.usefixtures("tf32_on")
def test_full_float32_turns_tf32_off_for_cuda_only_and_idempotently():
    from xai_loc.runtime import full_float32

    full_float32("cpu")
    assert _tf32() == (True, True)
    full_float32("cuda")  # the flags are plain settings: no GPU is needed to set them
    assert _tf32() == (False, False)
    full_float32("cuda:1")
    full_float32("cpu")
    assert _tf32() == (False, False)


@pytest.mark.usefixtures("tf32_on")
@pytest.mark.parametrize(("command", "device", "tf32"), [
    ("perturb", "cuda", False), ("components", "cuda:0", False), ("binaural cues", "cuda", False),
    ("perturb", "cpu", True), ("info", None, True), ("train", "cuda", True),
])
def test_cli_setup_turns_tf32_off_on_cuda_except_for_training(command, device, tf32):
    from xai_loc.cli._common import setup

    ctx = click.Context(click.Command(command.split()[-1]), obj={"threads": None})
    ctx.params = {"batch_size": 8} if device is None else {"batch_size": 8, "device": device}
    setup(ctx)
    assert _tf32() == (tf32, tf32)


def test_noise_streams_of_windows_are_distinct_beyond_32_bits():
    """Review: torch's CPU generator keeps 32 bits of a seed, so windows 130387 and 156376 of seed 0 (their 64-bit
    seeds share the low half) got the same noise."""
    from xai_loc.errors import InputError
    from xai_loc.experiments.perturbation import window_noise

    assert not torch.equal(window_noise((1, 64), 0, 130387), window_noise((1, 64), 0, 156376))
    assert not torch.equal(window_noise((1, 64), 0, 0), window_noise((1, 64), 2**32, 0))
    np.testing.assert_array_equal(window_noise((3, 64), 7, 10)[1:], window_noise((2, 64), 7, 11))
    with pytest.raises(InputError, match="first window index -1 is not allowed"):
        window_noise((1, 4), 0, -1)
