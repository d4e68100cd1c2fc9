"""The faithfulness suite: known answers on constructed models, ROAD imputation against a sparse solve,
completeness, the bootstrap and ranking helpers, and the command end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner
from torch import nn

from xai_loc.errors import InputError
from xai_loc.experiments.faithfulness import (
    DEFAULT_METHODS,
    bootstrap_ci,
    check_fills,
    completeness_stats,
    curve_metrics,
    ordering_curves,
    parse_methods,
    rank_agreement,
    road_imputation,
)

M, T = 4, 250
READ = [(0, 3), (1, 100), (2, 17), (3, 249), (1, 0)]  # the only samples the constructed model reads
PERCENTAGES = (0, 10, 20, 30, 40, 50, 60, 70)


class SparseLinear(nn.Module):
    """A bias-free linear localizer ``f(x) = W x`` whose weights are non-zero at :data:`READ` only."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        weight = torch.zeros(3, M * T, dtype=dtype)
        gen = torch.Generator().manual_seed(1)
        for k, (m, t) in enumerate(READ):
            weight[:, m * T + t] = 1.0 + torch.rand(3, generator=gen, dtype=dtype) + k
        self.weight = nn.Parameter(weight)

    def forward(self, x):
        return x.flatten(1) @ self.weight.T


def _indicator() -> np.ndarray:
    out = np.zeros((M, T), np.float32)
    for m, t in READ:
        out[m, t] = 1.0
    return out


@pytest.fixture(scope="module")
def windows():
    gen = torch.Generator().manual_seed(0)
    return 0.5 + torch.rand(48, M, T, generator=gen)  # positive, so deleting a read sample always moves f


def _metrics(model, x, scores, fill="zero"):
    truth = model(x).detach().double()  # the model is exact on the unperturbed windows
    curves = ordering_curves(model, x, truth, scores, PERCENTAGES, fill, seed=3)
    return curves, curve_metrics(curves.mean(-1))


def test_a_constant_map_orders_nothing_its_curves_are_nan(windows):
    """Review: an all-zero map was deleted front to back for MoRF and LeRF alike (SRG exactly 0), a plausible
    number for an explanation that gives no order."""
    model, x = SparseLinear(), windows[:3]
    scores = np.broadcast_to(_indicator(), x.shape).copy()
    scores[1] = 0.0
    curves = ordering_curves(model, x, model(x).detach().double(), scores, PERCENTAGES, "zero", seed=3)
    assert np.isnan(curves[..., 1]).all() and np.isfinite(np.delete(curves, 1, axis=-1)).all()
    assert np.isfinite(ordering_curves(model, x, model(x).detach().double(), None, PERCENTAGES, "zero")).all()
    wide = SparseLinear().double()  # a float64 model gets the float32 copies in its own dtype
    again = ordering_curves(wide, x, wide(x.double()).detach(), scores, PERCENTAGES, "zero", seed=3)
    np.testing.assert_allclose(again, curves, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fill", ["noise", "road"])
def test_random_orders_and_noise_of_a_window_depend_on_its_index_not_on_the_batch(windows, fill):
    model = SparseLinear(torch.float64)  # float64: another batch size rounds nothing visibly
    x = windows[:10].double()
    truth = model(x).detach()
    whole = ordering_curves(model, x, truth, None, PERCENTAGES, fill, seed=3)
    relevance = torch.from_numpy(np.broadcast_to(_indicator(), x.shape).copy())
    relevance = relevance + torch.rand(x.shape, dtype=torch.float64)
    ordered = ordering_curves(model, x, truth, relevance, PERCENTAGES, fill, seed=3)
    for first, stop in ((0, 4), (4, 10)):
        part = slice(first, stop)
        np.testing.assert_allclose(ordering_curves(model, x[part], truth[part], None, PERCENTAGES, fill, seed=3,
                                                   first=first), whole[..., part], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ordering_curves(model, x[part], truth[part], relevance[part], PERCENTAGES, fill,
                                                   seed=3, first=first), ordered[..., part], rtol=1e-12, atol=1e-12)
    shifted = ordering_curves(model, x[4:], truth[4:], None, PERCENTAGES, fill, seed=3)  # at another index
    assert not np.allclose(shifted, whole[..., 4:])


def test_scores_of_another_size_are_refused(windows):
    """Review: scores smaller than the windows were read past their end by the compiled copies."""
    model, x = SparseLinear(), windows[:2]
    for shape in [(2, M, T // 2), (2, 2 * M * T), (1, M, T)]:
        with pytest.raises(InputError, match=r"scores of shape .* do not fit windows of shape \(2, 4, 250\)"):
            ordering_curves(model, x, model(x).detach().double(), np.ones(shape, np.float32), PERCENTAGES, "zero")


@pytest.mark.parametrize("fill", ["zero", "road"])
def test_relevance_on_the_read_samples_gives_the_largest_aopc_and_srg(windows, fill):
    model = SparseLinear()
    exact = np.broadcast_to(_indicator(), windows.shape)
    curves, (aopc, srg, insertion) = _metrics(model, windows, exact, fill)
    # MoRF deletes every read sample at the first step; LeRF never reaches them (they are 5 of 1000)
    assert np.all(curves[1] < 1e-5)
    assert np.all(curves[0, 1:].mean(-1) > 0.1)
    assert srg == pytest.approx(aopc) and srg == pytest.approx(curves[0, 1:].mean() * 7 / 8, rel=1e-5)
    # insertion puts them back first: exact from the first step on
    assert np.all(curves[2, 1:] < 1e-5) and insertion == pytest.approx(curves[2, 0].mean() / 8)
    if fill == "zero":  # zero fill: f = 0, so the MoRF error is the mean |truth|, the most deletion can do
        truth = model(windows).detach().double().abs().mean(-1)
        np.testing.assert_allclose(curves[0, 1:], np.broadcast_to(truth.numpy(), curves[0, 1:].shape), rtol=1e-5)
    # any other ranking scores lower
    _, (aopc_r, srg_r, _) = _metrics(model, windows, None, fill)
    assert srg_r < 0.2 * srg and aopc_r < aopc


def test_reversed_relevance_gives_the_opposite_srg_and_random_relevance_about_zero(windows):
    model = SparseLinear()
    exact = np.broadcast_to(_indicator(), windows.shape)
    _, (_, srg, _) = _metrics(model, windows, exact)
    _, (aopc_rev, srg_rev, ins_rev) = _metrics(model, windows, -exact)
    assert srg_rev == pytest.approx(-srg) and aopc_rev < 1e-5 and ins_rev > 0.5 * srg
    noise = np.random.default_rng(0).standard_normal(windows.shape).astype(np.float32)
    _, (_, srg_noise, _) = _metrics(model, windows, noise)
    assert abs(srg_noise) < 0.1 * srg


def _sparse_solve(x: np.ndarray, deleted: np.ndarray) -> np.ndarray:
    """The neighbour-average system of one channel, solved with a sparse LU: for each deleted ``i``,
    ``deg(i) u_i - sum of deleted neighbours u_j = sum of kept neighbours x_j``."""
    from scipy.sparse import lil_matrix
    from scipy.sparse.linalg import spsolve

    n = x.size
    unknown = np.flatnonzero(deleted)
    col = {i: k for k, i in enumerate(unknown)}
    a = lil_matrix((unknown.size, unknown.size))
    b = np.zeros(unknown.size)
    for k, i in enumerate(unknown):
        for j in (i - 1, i + 1):
            if 0 <= j < n:
                a[k, k] += 1.0
                if deleted[j]:
                    a[k, col[j]] -= 1.0
                else:
                    b[k] += x[j]
    out = x.copy()
    if unknown.size:
        out[unknown] = spsolve(a.tocsc(), b)
    return out


@pytest.mark.parametrize("share", [0.1, 0.5, 0.9])
def test_road_imputation_equals_the_sparse_solve(share):
    rng = np.random.default_rng(int(share * 10))
    x = rng.standard_normal((3, 4, 60))
    deleted = rng.random(x.shape) < share
    deleted[..., 0] |= rng.random(x.shape[:-1]) < 0.5  # gaps at the window ends too
    deleted[..., -1] |= rng.random(x.shape[:-1]) < 0.5
    deleted[..., 30] = False  # every channel keeps a sample: the system is nonsingular
    got = road_imputation(torch.from_numpy(x), torch.from_numpy(deleted)).numpy()
    want = np.stack([_sparse_solve(x[w, m], deleted[w, m]) for w in range(3) for m in range(4)]).reshape(x.shape)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got[~deleted], x[~deleted])


def test_road_imputation_of_a_fully_deleted_channel_is_zero_and_shapes_are_checked():
    x = torch.randn(2, 3, 10, dtype=torch.float64)
    deleted = torch.zeros_like(x, dtype=torch.bool)
    deleted[0, 1] = True
    out = road_imputation(x, deleted)
    assert torch.all(out[0, 1] == 0) and torch.equal(out[1], x[1])
    with pytest.raises(InputError, match="mask shape"):
        road_imputation(x, deleted[0])


def test_completeness_residual_is_zero_for_input_x_gradient_of_a_bias_free_linear_model(windows):
    from xai_loc.explain import Explainer

    model = SparseLinear(torch.float64)
    x = windows[:8].double()
    truth = np.random.default_rng(0).standard_normal((8, 3))
    with Explainer(model, method="input_x_gradient", target="truth") as explainer:
        out = explainer.explain_batch(x, truth)
    residual = out["relevance_sum"] - out["explained"]
    mean_abs, relative = completeness_stats(residual, out["explained"])
    assert mean_abs < 1e-12 and relative < 1e-14
    # saliency has no completeness property: NaN, reported as such
    assert np.isnan(completeness_stats(np.full(4, np.nan), np.full(4, np.nan))).all()
    # one undefined window among defined ones is left out, not taken for a method without the property
    np.testing.assert_allclose(completeness_stats([0.1, np.nan, -0.3], [1.0, np.nan, 1.0]), [0.2, 0.2])


def test_bootstrap_and_rank_agreement():
    values = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 2.0], [np.nan, 1.0, 2.0], [np.nan, np.nan, np.nan]])
    ci = bootstrap_ci(values, n_boot=500, seed=0)
    np.testing.assert_allclose(ci[0], [1.0, 1.0])
    assert 0.0 <= ci[1, 0] < 1.0 < ci[1, 1] <= 2.0
    assert 1.0 <= ci[2, 0] < 1.5 < ci[2, 1] <= 2.0  # an undefined source is left out, not the whole cell
    assert np.isnan(ci[3]).all()
    np.testing.assert_array_equal(ci, bootstrap_ci(values, n_boot=500, seed=0))
    assert np.isnan(bootstrap_ci(np.array([[0.37]]))).all()  # one source has no spread to resample
    assert np.isnan(bootstrap_ci(np.array([[np.nan, 0.2, np.nan]]))).all()
    srg = np.array([[0.3, 0.1, -0.3], [0.2, 0.2, -0.2], [0.1, 0.3, -0.1]])  # method x fill
    tau = rank_agreement(srg)
    assert tau[0, 0] == pytest.approx(1.0) and tau[0, 1] == pytest.approx(-1.0) and tau[0, 2] == pytest.approx(-1.0)
    assert np.isnan(rank_agreement(srg[:1])).all()
    undefined = np.vstack([srg, np.full(3, np.nan)])  # a method whose every map is constant: left out
    np.testing.assert_array_equal(rank_agreement(undefined), tau)
    from xai_loc.experiments.base import interval_cell

    assert interval_cell(0.1234, np.nan, np.nan, 4) == "0.1234"  # one source: the value, no [nan, nan]
    assert interval_cell(np.nan, 0.1, 0.2) == "n/a" and interval_cell(0.5, 0.25, 0.75, 2) == "0.50 [0.25, 0.75]"


def test_method_and_fill_names_are_checked():
    assert [f"{m}:{c}" for m, c in parse_methods(DEFAULT_METHODS)][:2] == ["lrp:paper", "lrp:epsilon_plus_flat"]
    assert parse_methods(["lrp", "saliency"]) == [("lrp", "paper"), ("saliency", "none")]
    for bad, match in ((["magic"], "unknown"), (["lrp:nonesuch"], "composite"), (["saliency:paper"], "no composite"),
                       ([], "empty"), (["lrp", "lrp:paper"], "twice")):
        with pytest.raises(InputError, match=match):
            parse_methods(bad)
    assert check_fills(["zero", "road"]) == ("zero", "road")
    for bad in (["mean"], [], ["zero", "zero"]):
        with pytest.raises(InputError):
            check_fills(bad)


def test_faithfulness_command_end_to_end_and_figures_redraw(tmp_path):
    from xai_loc.cli import main
    from xai_loc.models import build_model, save_checkpoint

    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("loccnn"), tmp_path / "loccnn.safetensors",
                           {"condition": {"t60": 0.15, "snr": 25.0}})
    out = tmp_path / "res"
    runner = CliRunner()
    result = runner.invoke(main, ["--threads", "1", "faithfulness", "--checkpoint", str(ckpt), "--sources", "1",
                                  "--methods", "saliency", "--fills", "zero", "--percentages", "0,50",
                                  "--batch-size", "8", "--data", str(tmp_path / "data"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "SRG" in result.output and "n/a (no completeness property)" in result.output
    ds = xr.open_dataset(out / "faithfulness.nc")
    assert ds["score"].dims == ("model", "method", "ordering", "fill", "metric")
    assert list(ds["ordering"].values) == ["relevance", "randomized", "random"]
    assert list(ds["mode"].values) == ["morf", "lerf", "insertion"]
    curve = ds["curve"].isel(model=0, method=0, fill=0)
    # nothing deleted at 0 %: both deletion curves start at the unperturbed error
    np.testing.assert_allclose(curve.sel(mode=["morf", "lerf"], percentage=0.0).values,
                               float(ds["unperturbed_error"][0]))
    assert "wall" not in " ".join(ds.attrs) and (out / "faithfulness.timing.json").exists()
    for name in ("faithfulness.md", "faithfulness.tex", "faithfulness.png", "faithfulness.pdf"):
        assert (out / name).stat().st_size > 100
    ds.close()
    (out / "faithfulness.png").unlink()
    result = runner.invoke(main, ["figures", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "faithfulness.png").exists()


@pytest.mark.parametrize("fill", ["zero", "noise", "road"])
@pytest.mark.parametrize("insert", [False, True])
def test_device_copies_equal_the_cpu_kernels(fill, insert):
    """The copies made on the model's device (GPU path, here run with CPU tensors) equal the compiled kernels'."""
    from xai_loc.experiments.deletion_order import deletion_steps
    from xai_loc.experiments.faithfulness import ROAD_NOISE, _perturbed, _perturbed_on_device
    from xai_loc.experiments.perturbation import FILLS

    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3, M, T, generator=gen)
    steps = deletion_steps(torch.randn(3, M * T, generator=gen).numpy(), [0, 100, 400, 900])
    noise = FILLS["noise"](x, 4, 0)
    values = noise if fill == "noise" else None
    road = ROAD_NOISE * noise if fill == "road" else None
    for j in range(4):
        cpu = _perturbed(x.reshape(3, -1).numpy(), steps, j, fill, None if values is None else
                         values.reshape(3, -1).numpy(), None if road is None else road.numpy(), insert,
                         np.empty((3, M * T), np.float32))
        dev = _perturbed_on_device(x, torch.from_numpy(steps).view(x.shape), j, fill, values, road, insert)
        np.testing.assert_array_equal(dev.reshape(3, -1).numpy(), cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ordering_curves_on_cuda_equal_the_cpu_path(windows):
    model = SparseLinear()
    truth = model(windows).detach().double()
    scores = torch.randn(windows.shape, generator=torch.Generator().manual_seed(2)).numpy()
    for fill in ("zero", "noise", "road"):
        cpu = ordering_curves(model, windows, truth, scores, PERCENTAGES, fill, seed=5)
        gpu = ordering_curves(model.cuda(), windows, truth, scores, PERCENTAGES, fill, seed=5, device="cuda")
        model.cpu()
        np.testing.assert_allclose(gpu, cpu, rtol=1e-5, atol=1e-5)  # float32 matmuls on two devices


def test_latex_tables_escape_every_cell():
    """The markdown header's escaped bar and any LaTeX special character reach a .tex file as text."""
    from xai_loc.experiments.base import latex_tabular

    lines = latex_tabular("lrp_x, 50 %", ["method", "completeness \\|r\\| (rel.)"], [["lrp:paper_x", "5 % & $ #"]])
    assert lines[0] == "% lrp_x, 50 %"
    assert lines[3] == r"method & completeness \textbar{}r\textbar{} (rel.) \\"
    assert lines[5] == r"lrp:paper\_x & 5 \% \& \$ \# \\"


def test_the_table_names_the_windows_without_an_order():
    from xai_loc.experiments.faithfulness import _unordered_line

    counts = np.array([[[[0, 0], [2, 3]], [[0, 0], [0, 0]]]])  # (model, method, ordering, fill)
    ds = xr.Dataset({"unordered_windows": (("model", "method", "ordering", "fill"), counts)},
                    coords={"model": ["a"], "method": ["lrp", "saliency"], "ordering": ["relevance", "random"],
                            "fill": ["zero", "road"]})
    assert _unordered_line(ds, "a").endswith(": lrp (random) 3")
    assert _unordered_line(ds.drop_vars("unordered_windows"), "a") == ""


def test_default_methods_leave_out_lrp_composites_that_do_not_cover_the_model():
    """epsilon_plus_flat gives the cochleagram CNN's filterbank no rule (its waveform relevance came out near zero):
    the defaults drop it there and keep it for the multichannel models, which it covers."""
    from xai_loc.experiments.faithfulness import DEFAULT_METHODS, family_methods
    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.models.zoo import pretrained_dir

    coch = family_methods(ModelSet({"c": pretrained_dir() / "cochcnn_default.safetensors"}), DEFAULT_METHODS)
    loc = family_methods(ModelSet({"l": pretrained_dir() / "loccnn_t60-0.6_snr-10.safetensors"}), DEFAULT_METHODS)
    assert ("lrp", "cochcnn") in coch and not any(c == "epsilon_plus_flat" for _, c in coch)
    assert ("lrp", "paper") in loc and ("lrp", "epsilon_plus_flat") in loc
