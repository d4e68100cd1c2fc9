"""Review 14 of the explainers: GradientShap seeds that would overflow torch's, window labels of explain_batch,
relevance_fraction of targets whose seed may cancel, finite bounds and baselines, the smooth max-pool rule on
dilated max-pools -- each refused in one line before any work."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import never, noise_windows, one_line, small_model
from torch import nn

from xai_loc.explain import explain
from xai_loc.explain.attribute import Explainer, explain_arrays, summary_attrs
from xai_loc.explain.targets import TARGETS

POSITIONS = np.array([[1.7, 5.5, 1.2], [1.6, 5.4, 1.3], [1.8, 5.6, 1.1]])


def windows(n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 16, 512)).astype(np.float32) * 0.01


def test_gradient_shap_refuses_a_seed_beyond_torchs_range_before_any_work(monkeypatch):
    model = small_model(16, 512)
    with monkeypatch.context() as patched:
        patched.setattr(torch, "manual_seed", never("torch.manual_seed"))
        message = one_line(Explainer, model, method="gradient_shap", n_samples=2, seed=10**16)
    assert message == "seed=10000000000000000 is not allowed; use an integer in [0, 18446688729348]"
    # the largest seed leaves room for window labels below 2**32, and explains
    assert 18446688729348 * 1_000_003 + 2**32 - 1 < 2**64
    rel = explain(small_model(16, 512), windows(2), positions=POSITIONS[:2], method="gradient_shap", n_samples=2,
                  seed=18446688729348)
    assert np.isfinite(rel["relevance_sum"].values).all() and (rel["relevance_sum"].values != 0).all()
    # review: a window label of 2**33 with that seed ended in "Overflow when unpacking long long"
    with Explainer(small_model(16, 512), method="gradient_shap", n_samples=2, seed=18446688729348,
                   target="prediction") as explainer:
        out = explainer.explain_batch(torch.from_numpy(windows(1)), None, np.array([2**33]))
    assert np.isfinite(np.asarray(out["relevance"])).all()


@pytest.mark.parametrize(("index", "says"), [
    (np.array([0, 1]), "index of shape (2,) and dtype int64"),
    (np.array([[0, 1, 2]]), "index of shape (1, 3) and dtype int64"),
    (np.array(["a", "b", "c"]), "index of shape (3,) and dtype <U1"),
    (np.array([0.0, 1.0, 2.0]), "index of shape (3,) and dtype float64"),
    ([[0, 1], [2]], "index of shape () and dtype object"),
])
def test_explain_batch_refuses_index_that_is_not_one_integer_label_per_window(index, says, monkeypatch):
    with Explainer(small_model(16, 512), method="gradient_shap", n_samples=2) as explainer:
        monkeypatch.setattr(explainer._method, "attribute", never("the method"))
        message = one_line(explainer.explain_batch, windows(3), POSITIONS, index=index)
    assert message == f"{says} is not allowed; use a 1-D array of 3 integers, one label per window"


def test_relevance_fraction_is_nan_for_targets_whose_seed_may_cancel():
    assert {name for name, target in TARGETS.items() if target.cancels} == {"error", "contrast"}
    relevance_sum, explained = np.array([2.0, 1.5]), np.array([1.0, 0.01])
    assert math.isnan(summary_attrs(None, relevance_sum, explained, None, "contrast")["relevance_fraction"])
    assert math.isnan(summary_attrs(None, relevance_sum, explained, None, "error")["relevance_fraction"])
    assert summary_attrs(None, relevance_sum, explained, None, "truth")["relevance_fraction"] == pytest.approx(
        3.5 / 1.01)
    # review: a baseline method's q(x) - q(baseline) of any target takes both signs (integrated gradients of the
    # truth target gave a "share" of 0.777 of a sum of -38 over windows from -3.5 to 0.85)
    mixed = np.array([1.0, -0.99])  # sum 0.01: 350 "times" the seed
    assert math.isnan(summary_attrs(None, relevance_sum, mixed, None, "truth")["relevance_fraction"])
    assert math.isnan(summary_attrs(None, relevance_sum, mixed, None)["relevance_fraction"])


def test_contrast_relevance_records_nan_fraction_and_truth_keeps_its_share():
    model, data = small_model(16, 512), noise_windows(3)
    contrast = explain(model, data, target="contrast", reference=(2.0, 5.2367, 1.24))
    assert math.isnan(contrast.attrs["relevance_fraction"])
    assert np.isfinite(contrast["explained"].values).all()
    truth = explain(model, data)
    share = float(truth["relevance_sum"].sum() / truth["explained"].sum())
    assert truth.attrs["relevance_fraction"] == pytest.approx(share, rel=1e-12)



def test_a_relevance_store_and_the_tdoa_probe_record_it_alike(split_and_store, tmp_path):
    """The store ``xai-loc explain --out`` writes and the TDOA probe's per-model record take the target too (they
    recorded the cancelling ratio, 189.6 in the review's contrast run)."""
    from xai_loc.experiments.tdoa_probe import run_tdoa
    from xai_loc.explain.store import explain_store, open_relevance
    from xai_loc.models import save_checkpoint

    _, store = split_and_store
    options = {"target": "contrast", "reference": (2.0, 5.2, 1.24)}
    ck = save_checkpoint(small_model(4, 1024), tmp_path / "m.safetensors", {"condition": {"t60": 0.15, "snr": 25.0}})
    assert math.isnan(open_relevance(explain_store(ck, store, progress=False, **options)).attrs["relevance_fraction"])
    result = run_tdoa({"m": ck}, store, pairs="0-1", srp=False, randomized_baseline=False, max_windows=4, **options)
    assert math.isnan(json.loads(result.attrs["models"])["m"]["relevance_fraction"])
    truth = open_relevance(explain_store(ck, store, progress=False))
    assert truth.attrs["relevance_fraction"] == pytest.approx(
        float(truth["relevance_sum"].sum() / truth["explained"].sum()), rel=1e-6)

@pytest.mark.parametrize(("options", "message"), [
    ({"method": "integrated_gradients", "baseline": float("inf")},
     "baseline=inf is not allowed; use a finite number"),
    ({"method": "deeplift", "baseline": float("nan")}, "baseline=nan is not allowed; use a finite number"),
    ({"first_rule": "zbox", "low": -float("inf"), "high": 1.0}, "low=-inf is not allowed; use a finite number"),
    ({"first_rule": "zbox", "low": -1.0, "high": float("inf")}, "high=inf is not allowed; use a finite number"),
])
def test_unbounded_options_ask_for_a_finite_number(options, message):
    assert one_line(Explainer, small_model(16, 512), **options) == message


class DilatedPool(nn.Module):
    """A plug-in model with a dilated max-pool."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.act = nn.Conv1d(2, 4, 3, padding=1), nn.ReLU()
        self.pool, self.flat, self.fc = nn.MaxPool1d(2, dilation=2), nn.Flatten(), nn.Linear(4 * 14, 3)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.act(self.conv(x)))))


def test_smooth_maxpool_refuses_a_dilated_max_pool_when_the_composite_is_built(monkeypatch):
    x = np.random.default_rng(0).standard_normal((2, 2, 30)).astype(np.float32)
    monkeypatch.setattr(Explainer, "explain_batch", never("explain_batch"))
    message = one_line(explain_arrays, DilatedPool().eval(), x, target="prediction", maxpool="smooth")
    assert message == ("maxpool='smooth' is not allowed for pool (1 such module(s)): the smooth rule takes "
                       "MaxPool1d/2d/3d without dilation; use maxpool='wta' or 'norm'")
    monkeypatch.undo()
    _, out = explain_arrays(DilatedPool().eval(), x, target="prediction", maxpool="wta")
    assert np.isfinite(out["relevance_sum"]).all()
