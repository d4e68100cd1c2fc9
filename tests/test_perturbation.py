"""Deletion curves: ranking, masking and AOPC on hand-made cases."""
import numpy as np
import pytest
import torch

from xai_loc.errors import InputError
from xai_loc.experiments.deletion_order import deletion_steps, random_deletion_steps, random_keys
from xai_loc.experiments.perturbation import (
    MODES,
    aopc,
    deletion_counts,
    deletion_predictions,
    n_deleted,
    perturbed_batches,
)


def stable_sort_steps(scores, counts):
    """Deletion steps from a stable descending sort (ties by position): the reference."""
    order = np.argsort(~scores if scores.dtype.kind == "u" else -scores.astype(np.float64), axis=1, kind="stable")
    steps = np.full(scores.shape, len(counts), dtype=np.int64)
    for j in range(len(counts) - 1, -1, -1):
        np.put_along_axis(steps, order[:, : counts[j]], j, axis=1)
    return steps


def test_masks_are_the_head_of_a_stable_descending_sort():
    scores = np.array([[0.1, 0.9, 0.5, 0.9, -1.0, 0.0]])
    steps = deletion_steps(scores, [0, 1, 2, 3, 6])
    assert [np.flatnonzero(steps[0] <= j).tolist() for j in range(5)] == [
        [], [1], [1, 3], [1, 2, 3], [0, 1, 2, 3, 4, 5]
    ]


@pytest.mark.parametrize(
    "kind", ["normal32", "ties32", "normal64", "uniform-keys", "signed-zeros", "tiny", "small-ints", "uint16"]
)
def test_deletion_steps_equal_a_stable_sort(kind):
    rng = np.random.default_rng(2)
    scores = {
        "normal32": rng.standard_normal((3, 20_000)).astype(np.float32),
        "ties32": rng.integers(-3, 4, (3, 20_000)).astype(np.float32),  # every threshold tied
        "normal64": rng.standard_normal((3, 20_000)) * 1e-300,  # subnormal-range values
        "uniform-keys": rng.integers(0, 2**64 - 1, (3, 20_000), dtype=np.uint64, endpoint=True),
        "signed-zeros": np.where(rng.random((3, 20_000)) < 0.5, -0.0, 0.0).astype(np.float32),
        "tiny": rng.integers(0, 3, (5, 17)).astype(np.float32),
        "small-ints": rng.integers(-5, 5, (3, 2_000)),
        "uint16": rng.integers(0, 2**16, (3, 2_000)).astype(np.uint16),
    }[kind]
    n = scores.shape[1]
    counts = [0, 1, n // 10, n // 3, n // 3, n // 2, n - 1, n]
    assert np.array_equal(deletion_steps(scores, counts), stable_sort_steps(scores, counts))


def test_deletion_steps_refuse_bad_input():
    for bad in (np.inf, -np.inf, np.nan, -np.nan):
        for dtype in (np.float32, np.float64):
            with pytest.raises(InputError, match="NaN or infinite"):
                deletion_steps(np.array([[0.0, bad, 1.0]], dtype=dtype), [1])
    largest = np.finfo(np.float32).max
    assert deletion_steps(np.array([[-largest, 0.0, largest]], dtype=np.float32), [1, 2]).tolist() == [[2, 1, 0]]
    with pytest.raises(InputError, match="nondecreasing"):
        deletion_steps(np.zeros((1, 4)), [2, 1])
    with pytest.raises(InputError, match="nondecreasing"):
        deletion_steps(np.zeros((1, 4)), [5])


def test_magnitude_order_is_the_order_of_absolute_values():
    rng = np.random.default_rng(4)
    scores = (rng.integers(-3, 4, (4, 3_000)) * rng.choice([1.0, -1.0], (4, 3_000))).astype(np.float32)
    scores[0, :10] = -0.0
    counts = [0, 300, 1_000, 1_000, 2_999]
    assert np.array_equal(deletion_steps(scores, counts, magnitude=True), stable_sort_steps(np.abs(scores), counts))


def test_splitmix64_known_answer():
    # SplitMix64 from state 0 (Steele, Lea & Flood 2014; the reference C code of Vigna)
    assert random_keys((3,), 0).tolist() == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_random_order_is_exact_seeded_and_uniform():
    counts = [0, 10, 25, 64]
    steps = random_deletion_steps(4_000, 64, counts, seed=7)
    assert np.array_equal(steps, deletion_steps(random_keys((4_000, 64), 7), counts))  # the keys, never stored
    for j, k in enumerate(counts):
        assert np.all((steps <= j).sum(axis=1) == k)  # exactly k per row
    assert np.array_equal(steps, random_deletion_steps(4_000, 64, counts, seed=7))
    assert not np.array_equal(steps, random_deletion_steps(4_000, 64, counts, seed=8))
    tail = random_deletion_steps(1_000, 64, counts, seed=7, first_row=3_000)  # rows by their index in the set
    assert np.array_equal(tail, steps[3_000:])
    assert np.array_equal(random_keys((5,), 7, start=3), random_keys((8,), 7)[3:])
    # each position is deleted at step 1 with probability 10/64: 625 of 4000 rows, binomial sd 23
    hits = (steps <= 1).sum(axis=0)
    assert np.all(np.abs(hits - 625) < 6 * 23)
    chi2 = ((hits - 625.0) ** 2 / (4_000 * 10 / 64 * 54 / 64)).sum()
    assert chi2 < 63 + 5 * np.sqrt(2 * 63)  # 63 degrees of freedom: far below any bias


def test_zero_fill_copies_are_the_paper_loop_result():
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.standard_normal((3, 4, 250)), dtype=torch.float32)
    scores = torch.tensor(rng.integers(0, 6, (3, 4, 250)), dtype=torch.float32)  # heavy ties
    order = torch.sort(scores.reshape(3, -1), dim=1, descending=True, stable=True).indices
    percentages = (0, 10, 35, 70, 100)
    steps = MODES["relevance"](x, scores, deletion_counts(percentages, x), 0, 0)
    for p, xp in perturbed_batches(x, steps, percentages):
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
    percentages = (0, 10, 30, 30.5, 100)
    steps = MODES["energy"](x, None, deletion_counts(percentages, x), 0, 0)
    for p, xp in perturbed_batches(x, steps, percentages, fill):
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


def test_relevance_or_steps_of_another_shape_are_refused():
    """Review: the compiled copies indexed the steps by the window's position unchecked, so a smaller
    relevance map read memory past its end and deleted arbitrary fractions."""
    from xai_loc.experiments.deletion_order import filled_copy, zeroed_copy

    x = torch.ones(2, 2, 50)
    with pytest.raises(InputError, match=r"relevance of shape \(2, 2, 25\) does not fit windows of shape \(2, 2, 50\)"):
        deletion_predictions(Sum(), x, (0, 10, 50), ["relevance"], relevance=torch.ones(2, 2, 25))
    short = np.zeros((2, 50), dtype=np.uint8)
    with pytest.raises(InputError, match="deletion steps of shape"):
        list(perturbed_batches(x, short, (0, 50)))
    flat, out = x.reshape(2, -1).numpy(), np.empty((2, 200), dtype=np.float32)
    with pytest.raises(InputError, match="one size each"):
        zeroed_copy(flat, short, 0, out)
    with pytest.raises(InputError, match="one size each"):
        filled_copy(flat, np.zeros((2, 200), dtype=np.uint8), 0, np.zeros(10, dtype=np.float32), out)


def test_aopc_and_bad_options():
    assert aopc(np.array([0.1, 0.2, 0.4])) == pytest.approx((0 + 0.1 + 0.3) / 3)
    with pytest.raises(InputError, match="needs relevance"):
        deletion_predictions(Sum(), torch.ones(1, 2, 4), (0, 50), ["relevance"])
    with pytest.raises(InputError, match="allowed: relevance, energy, random"):
        deletion_predictions(Sum(), torch.ones(1, 2, 4), (0, 50), ["loudness"])
    with pytest.raises(InputError, match="increasing"):
        deletion_predictions(Sum(), torch.ones(1, 2, 4), (50, 10), ["energy"])


def test_perturbation_reuses_the_relevance_stores_tdoa_wrote(tmp_path, monkeypatch):
    """One key for one content: the model's and its randomized copy's relevance, explained once by
    the TDOA probe, are read back by the perturbation experiment instead of recomputed."""
    from xai_loc.data.scene import paper_scene
    from xai_loc.data.store import simulate_dataset
    from xai_loc.experiments.perturbation import run_perturbation
    from xai_loc.experiments.tdoa_probe import explain_models
    from xai_loc.explain import Explainer
    from xai_loc.models import build_model

    torch.manual_seed(0)
    model = build_model("loccnn")
    store = simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=tmp_path, n_sources=1, progress=False)
    fresh = run_perturbation({"loccnn": model}, store, percentages=(0, 50), modes=("relevance",), seed=3,
                             batch_size=8)  # no store yet: computed
    explain_models({"loccnn": model}, store, batch_size=8, seed=3)

    def refuse(*args, **kwargs):
        raise AssertionError("relevance recomputed although a matching store exists")

    monkeypatch.setattr(Explainer, "explain_batch", refuse)
    again = run_perturbation({"loccnn": model}, store, percentages=(0, 50), modes=("relevance",), seed=3,
                             batch_size=8)
    np.testing.assert_array_equal(again["mae"].values, fresh["mae"].values)


def test_sampled_relevance_does_not_depend_on_the_batch_size(tmp_path, monkeypatch):
    """gradient SHAP draws its baselines per window from the window's place in the set, not in its batch."""
    from xai_loc.data.scene import paper_scene
    from xai_loc.data.store import simulate_dataset
    from xai_loc.experiments.perturbation import run_perturbation
    from xai_loc.explain import Explainer
    from xai_loc.models import build_model

    torch.manual_seed(0)
    model = build_model("loccnn")
    store = simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=tmp_path, n_sources=1, progress=False)
    real, relevance = Explainer.explain_batch, []

    def kept(self, windows, truth=None, index=None, **kwargs):
        out = real(self, windows, truth, index, **kwargs)
        relevance.append(out["relevance"].cpu().numpy())
        return out

    monkeypatch.setattr(Explainer, "explain_batch", kept)
    maps = []
    for b in (3, 8):
        relevance.clear()
        run_perturbation({"loccnn": model}, store, percentages=(0, 20), modes=("relevance",),
                         method="gradient_shap", randomized_baseline=False, n_samples=2, batch_size=b)
        maps.append(np.concatenate(relevance))
    np.testing.assert_allclose(maps[0], maps[1], rtol=1e-4, atol=1e-6 * np.abs(maps[0]).max())


def test_perturbation_ignores_a_relevance_store_of_other_data_under_the_same_name(tmp_path, monkeypatch):
    """A store is matched by what it records, not by its name: relevance of other windows (the data
    simulated again with other settings) is computed afresh, never read in their place."""
    import shutil

    from xai_loc.data.scene import paper_scene
    from xai_loc.data.store import simulate_dataset
    from xai_loc.experiments.perturbation import run_perturbation
    from xai_loc.experiments.tdoa_probe import explain_models
    from xai_loc.explain import Explainer
    from xai_loc.models import build_model

    torch.manual_seed(0)
    model = build_model("loccnn")
    other = simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=tmp_path / "a", n_sources=1, progress=False)
    store = simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=tmp_path / "b", n_sources=1, progress=False,
                             seed=1)
    fresh = run_perturbation({"loccnn": model}, store, percentages=(0, 50), modes=("relevance",), seed=3,
                             batch_size=8, randomized_baseline=False)
    explain_models({"loccnn": model}, other, batch_size=8, seed=3)
    stores = other.with_name(other.name.removesuffix(".zarr") + ".relevance")
    shutil.copytree(stores, store.with_name(stores.name))
    calls, explain_batch = [], Explainer.explain_batch

    def counted(self, *args, **kwargs):
        calls.append(1)
        return explain_batch(self, *args, **kwargs)

    monkeypatch.setattr(Explainer, "explain_batch", counted)
    again = run_perturbation({"loccnn": model}, store, percentages=(0, 50), modes=("relevance",), seed=3,
                             batch_size=8, randomized_baseline=False)
    assert calls  # computed, not read from the other data's store
    np.testing.assert_array_equal(again["mae"].values, fresh["mae"].values)


def test_relevance_ordering_follows_the_targets_sense():
    """As in the faithfulness suite, an error target's relevance is ranked with the opposite sign:
    what lowers the error (speaks for the answer) is deleted first."""
    from xai_loc.experiments.perturbation import Relevance
    from xai_loc.explain import Explainer
    from xai_loc.models import build_model

    torch.manual_seed(0)
    model = build_model("loccnn")
    x, truth = 0.01 * torch.randn(2, 16, 5120), np.array([[1.6, 5.4, 1.2], [1.8, 5.6, 1.3]])
    for target, sense in (("truth", 1), ("error", -1)):
        explainer = Explainer(model, target=target)
        with explainer:
            raw = explainer.explain_batch(x, truth, to_host=False)["relevance"]
        ranked = Relevance(explainer).batch(x, truth, 0, 2, {})
        assert explainer.sense == sense and bool(raw.abs().sum() > 0)
        torch.testing.assert_close(ranked, sense * raw, rtol=0, atol=0)
