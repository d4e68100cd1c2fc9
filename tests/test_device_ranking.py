"""Deletion ranking with torch on the scores' device (issue 18): byte-identical to the compiled kernels.

The torch path runs on CPU tensors here and is compared with the numba kernels byte for byte;
the callers (``deletion_predictions``, ``ordering_curves``) give identical results whichever
path ranks. The CUDA tests compare the same on a GPU where one is present.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from xai_loc.errors import InputError
from xai_loc.experiments import deletion_order
from xai_loc.experiments.deletion_order import (
    MAX_STEPS,
    deletion_steps,
    deletion_steps_on,
    random_deletion_steps,
    random_deletion_steps_on,
    stable_ranks,
    torch_deletion_steps,
    torch_random_deletion_steps,
)
from xai_loc.experiments.faithfulness import ordering_curves
from xai_loc.experiments.perturbation import FILLS, MODES, deletion_predictions

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: ranks on the GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]
KINDS = ["normal32", "normal64", "subnormal64", "wide64", "ties32", "zeros32", "signed-zeros64", "extremes32",
         "int64", "float16", "uint8", "uint16", "uint32", "uint64", "tiny"]


def _scores(kind: str) -> np.ndarray:
    rng = np.random.default_rng(KINDS.index(kind))
    shape = (4, 3_000)
    signs = rng.choice([-1.0, 1.0], shape)
    if kind == "zeros32":  # mostly +0.0 and -0.0, a few ties at +-1
        return (signs * (rng.random(shape) < 0.05)).astype(np.float32)
    if kind == "extremes32":
        largest, smallest = np.finfo(np.float32).max, np.finfo(np.float32).smallest_subnormal
        return (signs * rng.choice([0.0, smallest, 2 * smallest, 1.0, largest], shape)).astype(np.float32)
    return {
        "normal32": lambda: rng.standard_normal(shape).astype(np.float32),
        "normal64": lambda: rng.standard_normal(shape),
        "subnormal64": lambda: rng.standard_normal(shape) * 1e-310,
        "wide64": lambda: signs * 10.0 ** rng.uniform(-300, 300, shape),
        "ties32": lambda: rng.integers(-3, 4, shape).astype(np.float32),
        "signed-zeros64": lambda: signs * 0.0,
        "int64": lambda: rng.integers(-5, 5, shape),
        "float16": lambda: rng.standard_normal(shape).astype(np.float16),
        "uint8": lambda: rng.integers(0, 2**8, shape, dtype=np.uint8),
        "uint16": lambda: rng.integers(0, 2**16, shape).astype(np.uint16),
        "uint32": lambda: rng.integers(0, 2**32, shape, dtype=np.uint32),
        "uint64": lambda: rng.integers(0, 2**64 - 1, shape, dtype=np.uint64, endpoint=True),
        "tiny": lambda: rng.integers(0, 3, (5, 17)).astype(np.float32),
    }[kind]()


def _counts(n: int) -> list[int]:
    return [0, 0, 1, n // 10, n // 3, n // 3, n // 2, n - 1, n, n]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("magnitude", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_torch_steps_are_the_kernels_bytes(kind, magnitude, device):
    scores = _scores(kind)
    counts = _counts(scores.shape[1])
    expected = deletion_steps(scores, counts, magnitude)
    steps = torch_deletion_steps(torch.from_numpy(scores).to(device), counts, magnitude)
    assert steps.dtype == torch.uint8 and steps.device.type == device
    np.testing.assert_array_equal(steps.cpu().numpy(), expected)
    assert np.all((expected == 2).sum(axis=1) == 1)  # counts[2] = 1: the top sample of each row


@pytest.mark.parametrize("device", DEVICES)
def test_torch_steps_with_the_most_steps_allowed(device):
    rng = np.random.default_rng(9)
    scores = rng.integers(-20, 20, (3, 400)).astype(np.float32)
    counts = np.sort(rng.integers(0, 400, MAX_STEPS))  # the last rank never deleted
    expected = deletion_steps(scores, counts)
    assert expected.max() == MAX_STEPS  # the "never" step of 255 counts fits in a uint8
    np.testing.assert_array_equal(torch_deletion_steps(torch.from_numpy(scores).to(device), counts).cpu().numpy(),
                                  expected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("n_rows", "n"), [(1, 1), (3, 1_000), (7, 64), (2, 81_920)])
def test_torch_random_steps_are_the_kernels_bytes(n_rows, n, device):
    counts = sorted([0, 1, n // 4, n // 4, n])
    for seed in (0, 7, -1, 2**63 + 5, 2**64 + 3):
        expected = random_deletion_steps(n_rows, n, counts, seed)  # row w continues SplitMix64 at output w * n
        steps = torch_random_deletion_steps(n_rows, n, counts, seed, device)
        assert steps.dtype == torch.uint8 and steps.device.type == device
        np.testing.assert_array_equal(steps.cpu().numpy(), expected)
        later = torch_random_deletion_steps(n_rows, n, counts, seed, device, first_row=5)
        np.testing.assert_array_equal(later.cpu().numpy(), random_deletion_steps(n_rows, n, counts, seed, 5))


def _message(fn, *args) -> str:
    with pytest.raises(InputError) as err:
        fn(*args)
    return str(err.value)


@pytest.mark.parametrize("magnitude", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_torch_steps_refuse_nan_and_infinity_as_the_kernels_do(bad, dtype, magnitude):
    scores = np.array([[0.0, 1.0, bad, -2.0]], dtype=dtype)
    message = _message(deletion_steps, scores, [1, 2], magnitude)
    assert message == _message(torch_deletion_steps, torch.from_numpy(scores), [1, 2], magnitude)
    assert "NaN or infinite" in message


@pytest.mark.parametrize(("shape", "counts"), [((4,), [1]), ((1, 4), [2, 1]), ((1, 4), [5]), ((1, 4), [-1]),
                                               ((1, 4), [1] * (MAX_STEPS + 1))])
def test_torch_steps_refuse_bad_shapes_and_counts_as_the_kernels_do(shape, counts):
    scores = np.zeros(shape, np.float32)
    assert _message(deletion_steps, scores, counts) == _message(torch_deletion_steps, torch.from_numpy(scores), counts)
    if len(shape) == 2:
        assert _message(random_deletion_steps, 1, 4, counts, 0) == _message(torch_random_deletion_steps, 1, 4,
                                                                          counts, 0)


def test_dispatch_keeps_the_compiled_kernels_on_the_cpu():
    scores = _scores("ties32")
    counts = _counts(scores.shape[1])
    steps = deletion_steps_on(torch.from_numpy(scores), counts, magnitude=True)
    assert isinstance(steps, np.ndarray)
    np.testing.assert_array_equal(steps, deletion_steps(scores, counts, magnitude=True))
    random = random_deletion_steps_on("cpu", 3, 500, [0, 5, 500], 11)
    assert isinstance(random, np.ndarray)
    np.testing.assert_array_equal(random, random_deletion_steps(3, 500, [0, 5, 500], 11))


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=requires_cuda)])
def test_dispatch_ranks_on_another_device_there(device):
    scores = torch.from_numpy(_scores("zeros32"))
    counts = _counts(scores.shape[1])
    steps = deletion_steps_on(scores.to(device), counts)
    assert isinstance(steps, torch.Tensor) and steps.device.type == device
    np.testing.assert_array_equal(steps.cpu().numpy(), deletion_steps(scores.numpy(), counts))
    random = random_deletion_steps_on(device, 3, 500, [0, 5, 500], 11)
    assert isinstance(random, torch.Tensor) and random.device.type == device
    np.testing.assert_array_equal(random.cpu().numpy(), random_deletion_steps(3, 500, [0, 5, 500], 11))


# ---------------------------------------------------------------------------------------------- the callers
def _rank_with_torch(monkeypatch) -> list[str]:
    """Make the dispatch's CPU branch rank with the torch path (as numpy, what the CPU copies take);
    returns the list of calls it records."""
    calls = []

    def steps(scores, counts, magnitude=False):
        calls.append("scores")
        return torch_deletion_steps(torch.from_numpy(scores), counts, magnitude).numpy()

    def random_steps(n_rows, n, counts, seed, first_row=0):
        calls.append("random")
        return torch_random_deletion_steps(n_rows, n, counts, seed, first_row=first_row).numpy()

    monkeypatch.setattr(deletion_order, "deletion_steps", steps)
    monkeypatch.setattr(deletion_order, "random_deletion_steps", random_steps)
    return calls


class Dense(nn.Module):
    """A linear localizer reading every sample, so that any change of a deleted set moves its output."""

    def __init__(self, n: int):
        super().__init__()
        self.fc = nn.Linear(n, 3)
        torch.nn.init.normal_(self.fc.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, x):
        return self.fc(x.flatten(1))


def _windows_and_ties(shape=(6, 4, 300)):
    rng = np.random.default_rng(5)
    x = torch.tensor(rng.standard_normal(shape), dtype=torch.float32)
    x[0, 0, :40] = -0.0  # ties in the energy order
    x[1, 0, :40] = 0.0
    relevance = torch.tensor(rng.integers(-3, 4, shape), dtype=torch.float64)  # heavy ties
    return x, relevance


@pytest.mark.parametrize("fill", list(FILLS))
def test_deletion_predictions_are_the_same_whichever_path_ranks(fill, monkeypatch):
    x, relevance = _windows_and_ties()
    model = Dense(x[0].numel()).eval()
    options = {"relevance": relevance, "fill": fill, "seed": 3, "batch_size": 4}
    percentages = (0, 10, 33.3, 70, 100)
    host = deletion_predictions(model, x, percentages, list(MODES), **options)
    calls = _rank_with_torch(monkeypatch)
    ranked_by_torch = deletion_predictions(model, x, percentages, list(MODES), **options)
    assert sorted(set(calls)) == ["random", "scores"]
    np.testing.assert_array_equal(ranked_by_torch, host)


@pytest.mark.parametrize("fill", ["zero", "noise", "road"])
@pytest.mark.parametrize("ordering", ["relevance", "random"])
def test_ordering_curves_are_the_same_whichever_path_ranks(ordering, fill, monkeypatch):
    x, relevance = _windows_and_ties()
    model = Dense(x[0].numel()).eval()
    truth = model(x).detach().double()
    scores = relevance.numpy() if ordering == "relevance" else None  # float64, ranked as float32
    percentages = (0, 10, 20, 50, 70)
    host = ordering_curves(model, x, truth, scores, percentages, fill, seed=4)
    calls = _rank_with_torch(monkeypatch)
    ranked_by_torch = ordering_curves(model, x, truth, scores, percentages, fill, seed=4)
    assert calls == (["scores"] * 2 if scores is not None else ["random"] * 2)  # MoRF and LeRF
    np.testing.assert_array_equal(ranked_by_torch, host)


class Recorder(nn.Module):
    """Keeps a host copy of every input it sees and returns three of its samples (exact on any device)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))  # tells the callers the device it computes on
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().cpu().clone())
        return x.flatten(1)[:, :3] * self.scale


@requires_cuda
@pytest.mark.parametrize("fill", list(FILLS))
def test_deletion_predictions_on_cuda_delete_what_the_cpu_deletes(fill):
    x, relevance = _windows_and_ties()
    options = {"relevance": relevance, "fill": fill, "seed": 3, "batch_size": 4}
    cpu_model, gpu_model = Recorder(), Recorder().cuda()
    cpu = deletion_predictions(cpu_model, x, (0, 10, 33.3, 70, 100), list(MODES), **options)
    gpu = deletion_predictions(gpu_model, x, (0, 10, 33.3, 70, 100), list(MODES), **options)
    np.testing.assert_array_equal(gpu, cpu)
    assert len(gpu_model.seen) == len(cpu_model.seen)
    for seen_gpu, seen_cpu in zip(gpu_model.seen, cpu_model.seen, strict=True):
        np.testing.assert_array_equal(seen_gpu.numpy(), seen_cpu.numpy())  # every deleted copy, value for value


@requires_cuda
@pytest.mark.parametrize("fill", ["zero", "noise", "road"])
@pytest.mark.parametrize("ordering", ["relevance", "random"])
def test_ordering_curves_on_cuda_delete_what_the_cpu_deletes(ordering, fill):
    x, relevance = _windows_and_ties()
    scores = relevance.numpy() if ordering == "relevance" else None
    cpu_model, gpu_model = Recorder(), Recorder().cuda()
    truth = x.flatten(1)[:, :3].double() + 1.0
    percentages = (0, 10, 20, 50, 70)
    cpu = ordering_curves(cpu_model, x, truth, scores, percentages, fill, seed=4)
    gpu = ordering_curves(gpu_model, x, truth, scores, percentages, fill, seed=4, device="cuda")
    np.testing.assert_allclose(gpu, cpu, rtol=1e-12, atol=0)  # float64 means of three errors
    for seen_gpu, seen_cpu in zip(gpu_model.seen, cpu_model.seen, strict=True):
        if fill == "road":  # the imputation's float32 arithmetic, on two devices
            np.testing.assert_allclose(seen_gpu.numpy(), seen_cpu.numpy(), rtol=1e-6, atol=1e-6)
        else:
            np.testing.assert_array_equal(seen_gpu.numpy(), seen_cpu.numpy())
    assert len(gpu_model.seen) == len(cpu_model.seen) == 3 * len(percentages)


# --- whole-row ranks (the sanity checks' Spearman correlations) ---------------------------------------------
def _argsort_ranks(a: np.ndarray) -> np.ndarray:
    """The reference: numpy's stable argsort, inverted (other dtypes than float32/64 as float64 values)."""
    a = a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)
    order = np.argsort(a, axis=-1, kind="stable")
    ranks = np.empty(a.shape)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(a.shape[-1], dtype=np.float64), a.shape), axis=-1)
    return ranks


@pytest.fixture(params=["radix", "argsort"])
def ranking(request, monkeypatch):
    """Both ways of stable_ranks, whatever the row length: the radix passes and numpy's argsort."""
    monkeypatch.setattr(deletion_order, "RADIX_MIN_LENGTH", 0 if request.param == "radix" else 2**62)
    return request.param


@pytest.mark.parametrize("kind", KINDS)
def test_stable_ranks_are_those_of_numpys_stable_argsort(kind, ranking):
    scores = _scores(kind)
    assert np.array_equal(stable_ranks(scores), _argsort_ranks(scores))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stable_ranks_put_nan_of_either_sign_last_and_signed_zeros_by_position(dtype, ranking):
    row = np.array([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 1.0, 1.0, -1.0, 0.0, np.nan, -0.0], dtype)
    assert np.signbit(row[3]) and np.isnan(row[3])
    ranks = stable_ranks(row[None])
    assert ranks.tolist() == [[2, 3, 9, 10, 8, 0, 6, 7, 1, 4, 11, 5]]
    assert np.array_equal(ranks, _argsort_ranks(row[None]))
    rng = np.random.default_rng(1)  # NaN scattered among ties, in a 3-d array ranked along its last axis
    cube = rng.choice(np.array([np.nan, -np.nan, 0.0, -0.0, 2.0, -2.0], dtype), (3, 4, 500))
    assert np.array_equal(stable_ranks(cube), _argsort_ranks(cube))
    assert stable_ranks(np.zeros((0, 7), dtype)).shape == (0, 7) and stable_ranks(np.zeros((2, 0))).shape == (2, 0)


def test_long_rows_take_the_radix_passes_and_short_ones_the_argsort(monkeypatch):
    radix, calls = deletion_order._radix_ranks, []

    def counted(*args):
        calls.append(args[0].shape)
        return radix(*args)

    monkeypatch.setattr(deletion_order, "_radix_ranks", counted)
    rng = np.random.default_rng(5)
    for n in (deletion_order.RADIX_MIN_LENGTH - 1, deletion_order.RADIX_MIN_LENGTH):
        rows = np.abs(rng.standard_normal((3, n))).astype(np.float32)
        rows[:, ::7] = rows[:, :1]  # ties
        assert np.array_equal(stable_ranks(rows), _argsort_ranks(rows))
    assert calls == [(3, deletion_order.RADIX_MIN_LENGTH)]
