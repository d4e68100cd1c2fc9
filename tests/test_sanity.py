"""Randomization sanity checks: known answers of the similarity and complexity measures, the cascade's
order and behaviour on constructed models, and the command end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner
from torch import nn

from xai_loc.experiments.baselines import cascading_copies, parameterized_layers, randomized_copy
from xai_loc.experiments.sanity import (
    DEFAULT_METHODS,
    cascade_similarity,
    emprt,
    histogram_entropy,
    pearson,
    relevance_entropy,
    spearman,
)

M, T = 4, 50


def _linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(M * T, 3, bias=False))


def test_rank_correlation_known_answers():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, M, T))
    np.testing.assert_allclose(spearman(a, a), 1.0)
    np.testing.assert_allclose(spearman(a, -a), -1.0)  # the reverse ranking
    np.testing.assert_allclose(spearman(a, np.exp(a)), 1.0)  # ranks only: any increasing map
    np.testing.assert_allclose(pearson(a, 2 * a + 1), 1.0)
    np.testing.assert_allclose(pearson(a, -a), -1.0)
    # vectorized over windows, equal to scipy's per window (no ties in continuous data)
    from scipy.stats import spearmanr

    b = rng.standard_normal((5, M, T))
    want = [spearmanr(a[w].ravel(), b[w].ravel()).statistic for w in range(5)]
    np.testing.assert_allclose(spearman(a, b), want, atol=1e-12)
    # a constant map (all-zero relevance) has no ranking: NaN (as scipy's and pearson), on either path
    c = b.copy()
    c[1] = 0.0
    for x, y in ((a, c), (c, a), (torch.as_tensor(a), torch.as_tensor(c))):
        rho = np.asarray(spearman(x, y))
        assert np.isnan(rho[1])
        np.testing.assert_allclose(np.delete(rho, 1), np.delete(want, 1), atol=1e-12)


def test_rank_correlation_of_sparse_maps_averages_ties_as_scipy():
    """Review: ordinal ranks put a ramp of positions into every tie, so two independent maps that are 95 %
    zeros correlated at about 0.8; average ranks (scipy's) give about 0."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal((4, M, T)).astype(np.float32) * (rng.random((4, M, T)) < 0.05) for _ in range(2))
    a[0, 0, :5] = b[0, 0, :5] = 1.5  # ties away from zero too
    want = [spearmanr(a[w].ravel(), b[w].ravel()).statistic for w in range(4)]
    assert np.abs(want[1:]).max() < 0.1  # window 0 shares its five largest values: correlated
    np.testing.assert_allclose(spearman(a, b), want, atol=1e-9)
    np.testing.assert_allclose(spearman(torch.as_tensor(a), torch.as_tensor(b)).numpy(), want, atol=1e-9)


def test_entropy_known_answers():
    n = M * T
    one_hot = np.zeros((2, M, T))
    one_hot[:, 1, 7] = -3.0
    uniform = np.full((2, M, T), 0.5)
    np.testing.assert_allclose(relevance_entropy(one_hot), 0.0, atol=1e-12)
    np.testing.assert_allclose(relevance_entropy(uniform), np.log(n))
    np.testing.assert_allclose(relevance_entropy(-uniform), np.log(n))
    assert np.isnan(relevance_entropy(np.zeros((1, M, T)))).all()
    # eMPRT's histogram entropy: one value -> one bin -> 0; two equally filled bins -> log 2
    assert histogram_entropy(uniform) == pytest.approx([0.0, 0.0])
    half = np.ones((1, M, T))
    half[0, :2] = 0.0
    assert histogram_entropy(half)[0] == pytest.approx(np.log(2))
    rng = np.random.default_rng(1)
    maps = rng.standard_normal((3, M, T))
    np.testing.assert_allclose(emprt(maps, maps), 0.0)
    assert np.all(emprt(one_hot[:1] + half * 1e-3, maps[:1]) > 0.0)  # noisier explanation: complexity rises
    assert np.isnan(emprt(uniform[:1], maps[:1])).all()  # no complexity to rise from: undefined


def test_histogram_entropy_is_quantus_discrete_entropy():
    """Quantus's discrete_entropy: scipy's entropy of numpy.histogram(a, bins=100) of the signed values."""
    from scipy.stats import entropy

    rng = np.random.default_rng(3)
    maps = np.concatenate([rng.standard_normal((3, M, T)), rng.laplace(size=(2, M, T)) ** 3,
                           np.round(rng.standard_normal((1, M, T)), 1)])
    want = [entropy(np.histogram(m, bins=100)[0]) for m in maps]
    np.testing.assert_allclose(histogram_entropy(maps), want, rtol=1e-12)
    # values on the bin edges go where numpy puts them; a constant map has +0 complexity
    edges = np.stack([np.linspace(0.0, 1.0, 1001), np.linspace(-3.0, 7.0, 1001) ** 3])
    np.testing.assert_allclose(histogram_entropy(edges), [entropy(np.histogram(m, bins=100)[0]) for m in edges],
                               rtol=1e-12)
    assert np.signbit(histogram_entropy(np.full((1, 9), 2.5))).tolist() == [False]
    h_o, h_r = histogram_entropy(maps[:3]), histogram_entropy(maps[3:6])
    np.testing.assert_allclose(emprt(maps[:3], maps[3:6]), (h_r - h_o) / h_o, rtol=1e-12)


def test_cascade_visits_layers_top_down_and_shares_the_reset_mechanism():
    from xai_loc.models import build_model

    torch.manual_seed(0)
    model = build_model("loccnn")
    layers = parameterized_layers(model)
    copies = cascading_copies(model, seed=2)
    assert [name for name, _ in copies] == layers[::-1] and copies[0][0] == "fc2" and copies[-1][0] == "conv1"
    original = dict(model.named_parameters())
    first = dict(copies[0][1].named_parameters())
    assert not torch.equal(first["fc2.weight"], original["fc2.weight"])
    assert torch.equal(first["fc1.weight"], original["fc1.weight"])  # only the top layer so far
    second = dict(copies[1][1].named_parameters())
    assert torch.equal(second["fc2.weight"], first["fc2.weight"])  # cumulative, the same random weights
    assert not torch.equal(second["fc1.weight"], original["fc1.weight"])
    assert all(not torch.equal(p, original[n]) for n, p in copies[-1][1].named_parameters() if n.endswith("weight"))
    # randomized_copy is unchanged by the refactor: seeded, reproducible, the original untouched
    a, b = randomized_copy(model, 2), randomized_copy(model, 2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert torch.equal(dict(model.named_parameters())["fc2.weight"], original["fc2.weight"])


def test_a_map_that_ignores_the_model_stays_identical_and_input_x_gradient_does_not():
    from xai_loc.explain import Explainer

    model = _linear()
    x = 0.5 + torch.rand(6, M, T, generator=torch.Generator().manual_seed(0))
    names, metrics, ratio = cascade_similarity(model, lambda module: x.numpy() ** 2, seed=0)
    assert names == ["original", "1"]
    np.testing.assert_allclose(metrics[:, :2], 1.0)  # spearman and pearson stay 1 at every stage
    np.testing.assert_allclose(ratio, 0.0)  # no rise in complexity

    def gxi(module):
        with Explainer(module, method="input_x_gradient", target="x") as explainer:
            return explainer.explain_batch(x)["relevance"]

    names, metrics, ratio = cascade_similarity(model, gxi, seed=0)
    np.testing.assert_allclose(metrics[0, :2], 1.0, atol=1e-6)
    assert np.all(np.abs(metrics[1, 0]) < 0.3) and np.all(np.abs(metrics[1, 1]) < 0.3)  # the only layer: gone
    assert np.isfinite(metrics[:, 2]).all() and np.isfinite(ratio).all()


def test_default_methods_parse():
    from xai_loc.experiments.faithfulness import parse_methods

    assert [m for m, _ in parse_methods(DEFAULT_METHODS)] == ["lrp", "lrp", "integrated_gradients",
                                                               "input_x_gradient", "saliency"]


def test_sanity_command_end_to_end_and_figures_redraw(tmp_path):
    from xai_loc.cli import main
    from xai_loc.models import build_model, save_checkpoint

    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("loccnn"), tmp_path / "loccnn.safetensors",
                           {"condition": {"t60": 0.15, "snr": 25.0}})
    out = tmp_path / "res"
    runner = CliRunner()
    result = runner.invoke(main, ["--threads", "1", "sanity", "--checkpoint", str(ckpt), "--sources", "2",
                                  "--methods", "saliency", "--batch-size", "8", "--data", str(tmp_path / "data"),
                                  "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "eMPRT" in result.output and "saliency" in result.output
    ds = xr.open_dataset(out / "sanity.nc")
    assert ds["similarity"].dims == ("model", "method", "stage", "metric")
    assert ds["source_similarity"].dims == ("model", "method", "stage", "metric", "source")
    stages = list(ds["stage"].values)
    assert stages[:2] == ["original", "fc2"] and stages[-1] == "conv1" and len(stages) == 8
    original = ds["similarity"].isel(model=0, method=0).sel(stage="original")
    np.testing.assert_allclose(original.sel(metric=["spearman", "pearson"]).values, 1.0, atol=1e-9)
    assert list(ds["check"].values) == ["spearman_randomized", "pearson_randomized", "emprt", "spearman_targets",
                                        "pearson_targets"]
    assert np.isfinite(ds["score"].values).all() and ds["score_ci"].shape[-1] == 2
    assert (out / "sanity.timing.json").exists()
    for name in ("sanity.md", "sanity.tex", "sanity.png", "sanity.pdf"):
        assert (out / name).stat().st_size > 100
    ds.close()
    (out / "sanity.png").unlink()
    result = runner.invoke(main, ["figures", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "sanity.png").exists()


@pytest.mark.parametrize("kind", ["normal", "ties", "float32", "constant", "zeros"])
def test_metrics_on_tensors_equal_the_numpy_ones(kind):
    """The device path's arithmetic (torch, float64, here on CPU tensors) against NumPy's: the same bins and
    ranks, sums to float64 rounding."""
    rng = np.random.default_rng(4)
    a = {"normal": rng.standard_normal((5, M, T)), "ties": rng.integers(-3, 4, (5, M, T)).astype(float),
         "float32": rng.standard_normal((5, M, T)).astype(np.float32), "constant": np.full((5, M, T), 2.5),
         "zeros": np.zeros((5, M, T))}[kind]
    a[0, 0, :3] = 0.0
    b = rng.standard_normal(a.shape)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    for f in (histogram_entropy, relevance_entropy):
        got = f(ta)
        assert isinstance(got, torch.Tensor)
        np.testing.assert_allclose(got.numpy(), f(a), rtol=0, atol=1e-13)
    for f in (pearson, spearman, emprt):
        np.testing.assert_allclose(f(ta, tb).numpy(), f(a, b), rtol=0, atol=1e-13)


def test_sanity_on_the_device_path_equals_the_host_path(tmp_path, monkeypatch):
    """run_sanity with the maps kept as tensors and compared by torch (forced on the CPU) against NumPy."""
    from xai_loc.data.scene import paper_scene
    from xai_loc.data.store import simulate_dataset
    from xai_loc.experiments import sanity
    from xai_loc.models import build_model

    store = simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=tmp_path, n_sources=1, progress=False)
    torch.manual_seed(0)
    models = {"loccnn": build_model("loccnn").eval()}
    options = {"methods": ["saliency", "input_x_gradient"], "n_boot": 20, "batch_size": 8}
    host = sanity.run_sanity(models, store, **options)
    asked = []
    monkeypatch.setattr(sanity, "_on_host", lambda explainer: asked.append(explainer) or False)
    device = sanity.run_sanity(models, store, **options)
    assert asked and np.isfinite(host["similarity"].values).any()
    for name in host.data_vars:
        if host[name].dtype.kind == "f":
            np.testing.assert_allclose(device[name].values, host[name].values, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_maps_that_cannot_be_binned_are_refused_in_one_line(bad):
    """A non-finite map would index outside the histogram (on a GPU, an assert that ends the process's CUDA)."""
    from xai_loc.errors import InputError

    maps = np.random.default_rng(0).standard_normal((3, 40))
    maps[1, 7] = bad
    for given in (maps, torch.from_numpy(maps)):
        with pytest.raises(InputError, match="NaN or infinite values"):
            emprt(given, given)


def _families() -> list[str]:
    from xai_loc.models import MODELS  # importing the package registers every family

    return sorted(MODELS)


@pytest.mark.parametrize("arch", _families())
def test_every_weight_of_every_family_is_randomized(arch):
    """The randomized copy and the cascade's last stage leave no trained weight behind (a module
    without ``reset_parameters``, such as BAST's position embedding once was, would keep its own)."""
    from xai_loc.models import build_model

    torch.manual_seed(0)
    model = build_model(arch)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.123)  # off any initialization's values
    original = {n: p.clone() for n, p in model.named_parameters()}
    for copy_ in (randomized_copy(model, 1), cascading_copies(model, 1)[-1][1]):
        kept = [n for n, p in copy_.named_parameters() if torch.equal(p, original[n])]
        assert kept == [n for n, p in model.named_parameters() if not p.requires_grad]  # frozen: fixed DSP
    assert all(torch.equal(p, original[n]) for n, p in model.named_parameters())  # the original untouched


def test_a_frozen_front_end_is_not_randomized():
    """Review: the cochleagram's fixed sinc decimator (a frozen Conv1d) was re-initialized with the
    learned layers, so the randomized model heard another front end, not just other weights."""
    from xai_loc.models.cochleagram_cnn import CochleagramCNN

    model = CochleagramCNN(layers=["c4 3x3"], head="azimuth", n_samples=400, dense=8,
                           cochleagram=dict(n_filters=6, fs=8000, out_fs=2000, f_min=50.0, f_max=3000.0,
                                            n_taps=31)).eval()
    frozen = model.front_end.downsample.weight
    assert not frozen.requires_grad
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.123)  # off any initialization's values
    learned = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for copy_ in (randomized_copy(model, 0), cascading_copies(model, 0)[-1][1]):
        assert torch.equal(copy_.front_end.downsample.weight, frozen)
        assert not any(torch.equal(p, learned[n]) for n, p in copy_.named_parameters() if n in learned)
    assert "front_end.downsample" not in parameterized_layers(model)
