"""GradientShap's path points run at most ``batch_size`` per forward pass, with the same draws as one pass."""
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
    for stdevs in (0.0, 0.002):  # noise drawn per chunk too
        whole, largest = relevance_and_largest_pass(32, n_samples=20, stdevs=stdevs)
        assert largest == 20
        for batch_size in (8, 7, 1):
            chunked, largest = relevance_and_largest_pass(batch_size, n_samples=20, stdevs=stdevs)
            assert largest == batch_size
            # the same points (both generators drawn in sequence), summed in another order
            np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-12 * np.abs(whole).max())
        assert np.abs(whole).max() > 0


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
