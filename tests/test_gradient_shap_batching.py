"""GradientShap's path points run at most ``batch_size`` per forward pass, with the draws (points and noise) of one
pass."""
from __future__ import annotations

import numpy as np
import torch
from helpers import small_model

from xai_loc.explain.attribute import explain_arrays

POSITIONS = np.array([[1.7, 5.5, 1.2], [1.6, 5.4, 1.3]])


def windows() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 16, 512)) * 0.01


def model():
    """float64, so that the draws are compared, not float32 rounding (which flips a max-pool or ReLU of a
    random model now and then between batch sizes: up to 2 % of a window's relevance here)."""
    return small_model(16, 512).double()


def relevance_and_largest_pass(batch_size: int, **options) -> tuple[np.ndarray, int]:
    net = model()
    rows = []
    net.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    _, out = explain_arrays(net, windows(), truth=POSITIONS, method="gradient_shap", batch_size=batch_size,
                            **options)
    return np.asarray(out["relevance"]), max(rows)


def test_gradient_shap_runs_at_most_batch_size_path_points_per_pass_with_the_draws_of_one_pass():
    # review: all n_samples points ran in one forward pass whatever the batch size (1.38 GB more memory at 200
    # points on the shipped LocCNN; 0.33 GB now at batch 32)
    whole, largest = relevance_and_largest_pass(32, n_samples=20)
    assert largest == 20
    for batch_size in (8, 7, 1):
        chunked, largest = relevance_and_largest_pass(batch_size, n_samples=20)
        assert largest == batch_size
        # the same points (numpy's coefficients drawn in sequence), summed in another order
        np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-12 * np.abs(whole).max())
    assert np.abs(whole).max() > 0


def test_gradient_shap_with_noise_runs_at_most_batch_size_points_per_pass_with_the_noise_of_one_pass():
    """With noise, too, at most batch_size points run per pass and the relevance is that of one pass (the noise of
    all points drawn first), summed in another order. review: noise drawn per chunk depended on the chunks where a
    window's size is not a multiple of 16 (torch redraws the last 16 normals of such a tensor: up to 27 % of the
    relevance of a 3 x 509 window moved), so all points then ran in one pass whatever the batch size."""
    net = small_model(3, 509).double()
    rows = []
    net.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    x = np.random.default_rng(1).standard_normal((1, 3, 509)) * 0.01
    runs = []
    for batch_size in (32, 7, 1):
        rows.clear()
        runs.append(np.asarray(explain_arrays(net, x, truth=POSITIONS[:1], method="gradient_shap",
                                              batch_size=batch_size, n_samples=20, stdevs=0.002)[1]["relevance"]))
        assert max(rows) == min(batch_size, 20)
    for run in runs[1:]:
        np.testing.assert_allclose(run, runs[0], rtol=0, atol=1e-12 * np.abs(runs[0]).max())
    assert np.abs(runs[0]).max() > 0


def test_gradient_shap_takes_a_whole_number_stdevs():
    # review: stdevs=1 (or 0) reached captum as an int: "AssertionError: stdevs must be type float"
    whole, _ = relevance_and_largest_pass(32, n_samples=3, stdevs=0)
    again, _ = relevance_and_largest_pass(32, n_samples=3, stdevs=0.0)
    np.testing.assert_array_equal(whole, again)
    assert np.isfinite(relevance_and_largest_pass(32, n_samples=3, stdevs=1)[0]).all()


def test_gradient_shap_within_one_pass_is_captums_gradient_shap():
    from captum.attr import GradientShap

    net = model()
    ours = relevance_and_largest_pass(32, n_samples=5, seed=4)[0][0]
    x = torch.from_numpy(windows()[:1])
    seed = 4 * 1_000_003 + 0  # seed * SEED_STEP + the first window's label

    def q(a):  # the truth target: the output's projection on the true position
        return (net(a) * torch.from_numpy(POSITIONS[:1])).sum(1)

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    reference = GradientShap(q).attribute(x, baselines=torch.zeros_like(x), n_samples=5)[0].detach().numpy()
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12 * np.abs(reference).max())


def test_gradient_shap_with_noise_in_chunks_is_captums_gradient_shap_of_one_pass():
    """The points and noise of captum's GradientShap (one pass), run 3 per pass."""
    from captum.attr import GradientShap

    net = model()
    ours = relevance_and_largest_pass(3, n_samples=10, seed=2, stdevs=0.003)[0][0]
    x = torch.from_numpy(windows()[:1])
    seed = 2 * 1_000_003 + 0

    def q(a):
        return (net(a) * torch.from_numpy(POSITIONS[:1])).sum(1)

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    reference = GradientShap(q).attribute(x, baselines=torch.zeros_like(x), n_samples=10,
                                          stdevs=0.003)[0].detach().numpy()
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12 * np.abs(reference).max())
    noiseless = relevance_and_largest_pass(3, n_samples=10, seed=2)[0][0]
    assert np.abs(ours - noiseless).max() > 1e-3 * np.abs(reference).max()  # the noise took part


def test_gradient_shap_draws_at_most_batch_size_points_of_noise_at_a_time_without_noise(monkeypatch):
    """Without noise (the default) no draw spans more than batch_size points, so batch_size bounds the memory.
    review: the noise of all n_samples points was drawn first whatever stdevs was (448 MB against 192 MB at
    100000 points of a 2 x 256 window)."""
    drawn = []
    normal = torch.normal

    def recorded(*args, **kwargs):
        out = normal(*args, **kwargs)
        drawn.append(out.shape[0])
        return out

    monkeypatch.setattr(torch, "normal", recorded)
    relevance_and_largest_pass(4, n_samples=20)
    assert drawn and max(drawn) == 4
    drawn.clear()
    relevance_and_largest_pass(4, n_samples=20, stdevs=0.001)
    assert max(drawn) == 20  # with noise, one draw of every point (as one pass draws it), then run 4 at a time
