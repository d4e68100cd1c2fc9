"""Deletion curves: ranking, masking and AOPC on hand-made cases."""
import numpy as np
import pytest
import torch

from xai_loc.errors import InputError
from xai_loc.experiments.perturbation import (
    aopc,
    deletion_predictions,
    keep_mask,
    kth_largest,
    n_deleted,
    perturbed_batches,
)


def top_k_masks(scores, ks):
    """Deletion masks (len(ks), W, N) from the library's thresholds and keep masks."""
    thresholds = kth_largest(scores, ks)
    return np.stack([~keep_mask(scores, k, thresholds.get(k)) for k in ks])


def test_masks_are_the_head_of_a_stable_descending_sort():
    scores = np.array([[0.1, 0.9, 0.5, 0.9, -1.0, 0.0]])
    masks = top_k_masks(scores, [0, 1, 2, 3, 6])
    assert [np.flatnonzero(m).tolist() for m in masks] == [[], [1], [1, 3], [1, 2, 3], [0, 1, 2, 3, 4, 5]]
    rng = np.random.default_rng(1)
    many = rng.integers(0, 5, (3, 400)).astype(np.float32)  # heavy ties
    order = torch.sort(torch.from_numpy(many), dim=1, descending=True, stable=True).indices
    ks = [0, 1, 40, 123, 200, 399, 400]
    for k, mask in zip(ks, top_k_masks(many, ks), strict=True):
        expected = torch.zeros(mask.shape, dtype=torch.bool)
        expected.scatter_(1, order[:, :k], True)
        assert np.array_equal(mask, expected.numpy())


def test_nested_selection_gives_the_sorted_values():
    rng = np.random.default_rng(2)
    for scores in (rng.standard_normal((5, 1000)), rng.integers(0, 3, (5, 1000)).astype(np.float32)):
        ks = [1, 7, 100, 333, 500, 999, 1000]
        expected = -np.sort(-scores, axis=1)
        for k, value in kth_largest(scores, ks).items():
            assert np.array_equal(value[:, 0], expected[:, k - 1])


def test_zero_fill_copies_are_the_paper_loop_result():
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.standard_normal((3, 4, 250)), dtype=torch.float32)
    scores = torch.tensor(rng.integers(0, 6, (3, 4, 250)), dtype=torch.float32)  # heavy ties
    order = torch.sort(scores.reshape(3, -1), dim=1, descending=True, stable=True).indices
    for p, xp in perturbed_batches(x, scores, (0, 10, 35, 70, 100), torch.zeros_like(x)):
        expected = x.reshape(3, -1).clone()
        for w in range(3):
            for i in order[w, : n_deleted(p, 1000)]:  # the paper's loop, one index at a time
                expected[w, i] = 0
        assert torch.equal(xp.reshape(3, -1), expected)


def test_top_p_percent_are_replaced_and_nothing_else():
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((4, 2, 50)), dtype=torch.float32)
    original = x.clone()
    fill = torch.full_like(x, 99.0)
    for p, xp in perturbed_batches(x, x.abs(), (0, 10, 30, 30.5, 100), fill):
        k = n_deleted(p, 100)
        deleted = xp == 99.0
        assert deleted.reshape(4, -1).sum(1).tolist() == [k] * 4
        assert torch.equal(xp[~deleted], x[~deleted])
        if 0 < k < 100:
            kept_max = x.abs()[~deleted].reshape(4, -1).max(1).values
            deleted_min = x.abs()[deleted].reshape(4, -1).min(1).values
            assert torch.all(deleted_min >= kept_max)
    assert torch.equal(x, original)  # the input is never modified


class Sum(torch.nn.Module):
    """Predicts (sum of mic 0, 0, 0): the error grows exactly with what is deleted."""

    def forward(self, x):
        out = torch.zeros(x.shape[0], 3, dtype=x.dtype)
        out[:, 0] = x[:, 0].sum(-1)
        return out


def test_predictions_follow_the_deleted_mass():
    x = torch.ones(5, 2, 10)
    rel = torch.zeros_like(x)
    rel[:, 0] = 1.0  # mic 0 most relevant: deleting 50 % removes all of mic 0
    pred = deletion_predictions(Sum(), x, (0, 25, 50), ["relevance", "random"], relevance=rel, batch_size=2)
    assert pred.shape == (2, 3, 5, 3)
    np.testing.assert_allclose(pred[0, :, :, 0], [[10] * 5, [5] * 5, [0] * 5])
    again = deletion_predictions(Sum(), x, (0, 25, 50), ["relevance", "random"], relevance=rel, batch_size=2)
    np.testing.assert_array_equal(pred, again)  # seeded
    assert np.all(pred[1, 2, :, 0] > 0)  # random deletion hits mic 1 too


def test_aopc_and_bad_options():
    assert aopc(np.array([0.1, 0.2, 0.4])) == pytest.approx((0 + 0.1 + 0.3) / 3)
    with pytest.raises(InputError, match="needs relevance"):
        deletion_predictions(Sum(), torch.ones(1, 2, 4), (0, 50), ["relevance"])
    with pytest.raises(InputError, match="allowed: relevance, energy, random"):
        deletion_predictions(Sum(), torch.ones(1, 2, 4), (0, 50), ["loudness"])
    with pytest.raises(InputError, match="increasing"):
        deletion_predictions(Sum(), torch.ones(1, 2, 4), (50, 10), ["energy"])
