"""Review findings on the TDOA probe, the sanity metrics and their figures: the SRP figure's window count, the
--srp-windows help, provenance of given randomized relevance, unlabelled relevance of the wrong length, a legend
peak on a silent relevance, the host delay search against the device one, SRP plane and pair checks, and Pearson
on a constant map."""
import matplotlib
import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner
from helpers import FS, C, T, noise_windows

from xai_loc.errors import InputError
from xai_loc.experiments.gcc import tdoa
from xai_loc.experiments.tdoa_probe import _BlockEstimates, run_tdoa, srp_grid

matplotlib.use("Agg")









# 1 -------------------------------------------------------------------------------------------------------------
def test_the_srp_figure_names_the_srp_windows_not_all_windows(captured_figure, tmp_path):
    from xai_loc.plots import tdoa as plots

    out = run_tdoa({}, noise_windows(6), pairs="7-8", srp_max_windows=2, srp_step=0.1)
    assert out.attrs["srp_windows"] == 2 and out.sizes["window"] == 6
    drawn = captured_figure(plots)
    plots.plot_srp(out, tmp_path / "srp")
    assert drawn["fig"].axes[0].get_title() == "SRP on 2 of 6 windows"
    assert drawn["fig"]._suptitle.get_text().startswith("T60 0.15 s, SNR 25 dB, lrp")


# 2 -------------------------------------------------------------------------------------------------------------
def test_srp_windows_help_says_evenly_spaced():
    from xai_loc.cli import main

    result = CliRunner().invoke(main, ["tdoa", "--help"], terminal_width=200)
    line = next(line for line in result.output.splitlines() if "--srp-windows" in line)
    assert line.split() == ["--srp-windows", "INTEGER", "SRP", "on", "N", "windows", "only,", "evenly", "spaced",
                            "(it", "is", "costly)."]


# 3 -------------------------------------------------------------------------------------------------------------
def test_given_randomized_relevance_of_another_composite_is_refused():
    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.models import build_model

    models = ModelSet.of({"m": build_model("loccnn")})
    ds = noise_windows(6)
    common = {"method": "lrp", "target": "truth"}
    own = ds["signals"].copy(data=ds["signals"].values).assign_attrs(
        model_digest=models.provenance("m")["model_digest"], composite="paper", **common)
    digest = models.randomized_provenance("m", 0)["model_digest"]
    relevance = {"m": own, "m-randomized": own.copy().assign_attrs(model_digest=digest, composite="paper")}
    out = run_tdoa(models, ds, pairs="7-8", relevance=relevance, srp=False)
    assert list(out["estimator"].values) == ["signals", "m", "m-randomized", "zero-lag"]
    relevance["m-randomized"] = relevance["m-randomized"].assign_attrs(composite="epsilon_plus_flat")
    with pytest.raises(InputError, match="'m-randomized' was computed with composite 'epsilon_plus_flat', "
                                         "not 'paper'"):
        run_tdoa(models, ds, pairs="7-8", relevance=relevance, srp=False)


# 4 -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_windows", [8, 4])
def test_unlabelled_relevance_must_hold_every_window_of_the_data(n_windows):
    ds = noise_windows(6)
    values = np.random.default_rng(1).standard_normal((n_windows, 16, T))
    bare = xr.DataArray(values, dims=("window", "mic", "time"))  # no window coord: taken in the data's order
    with pytest.raises(InputError, match=rf"'x' has {n_windows} windows and no window coord; use one per window "
                                         r"of the data \(6\)"):
        run_tdoa({}, ds, pairs="7-8", relevance={"x": bare}, max_windows=4, srp=False)
    with pytest.raises(InputError, match=r"use \[6, 16, 512\]"):  # as an array of that shape is
        run_tdoa({}, ds, pairs="7-8", relevance={"x": values}, max_windows=4, srp=False)
    same = run_tdoa({}, ds, pairs="7-8", relevance={"x": ds["signals"].drop_vars("window")}, srp=False)
    np.testing.assert_array_equal(same["delay"].sel(estimator="x"), same["delay"].sel(estimator="signals"))


# 5 -------------------------------------------------------------------------------------------------------------
def test_inspection_legend_gives_no_peak_for_relevance_silent_on_a_microphone(captured_figure, tmp_path):
    import xai_loc.io
    from xai_loc.plots.inspection import plot_inspection

    rng = np.random.default_rng(0)
    coords = {"window": [3, 4], "mic": [0, 1], "time": np.arange(64) / FS,
              "source_x": ("window", [1.0, 1.2]), "source_y": ("window", [2.0, 2.0]),
              "source_z": ("window", [1.5, 1.5]), "mic_x": ("mic", [0.0, 0.15]), "mic_y": ("mic", [0.0, 0.0]),
              "mic_z": ("mic", [1.0, 1.0])}
    signals = xr.DataArray(rng.standard_normal((2, 2, 64)), dims=("window", "mic", "time"), coords=coords,
                           attrs={"fs": FS})
    relevance = signals.copy(data=rng.standard_normal((2, 2, 64)))
    relevance.values[1, 1] = 0.0  # window 4: no relevance on microphone 1
    assert np.isnan(tdoa(relevance.values[1, 0], relevance.values[1, 1], max_lag=10.0))
    drawn = captured_figure(xai_loc.io)
    plot_inspection(signals, {"r": relevance}, tmp_path / "insp", windows=[3, 4], pair=(0, 1))
    gcc_axes = [row[-1] for row in np.reshape(drawn["fig"].axes, (2, 3))]
    legends = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in gcc_axes]
    assert legends[0][1].startswith("r (peak ") and legends[1][1] == "r (no peak)"
    markers = [[line for line in ax.get_lines() if line.get_marker() == "o"] for ax in gcc_axes]
    assert [len(m) for m in markers] == [2, 1]  # window 4: the signals' peak only


# 6 -------------------------------------------------------------------------------------------------------------
def _host_and_device(x: np.ndarray, max_lag: float, interp: int) -> tuple[np.ndarray, np.ndarray]:
    mics = np.array([[0.0, 0.0, 0.0], [0.15, 0.0, 0.0]])
    out = []
    for device in (None, torch.device("cpu")):  # the coarse-to-fine NumPy search; the reference routine in torch
        block = _BlockEstimates([(0, 1)], np.array([max_lag]), interp, x.shape[-1], device, [], mics, None, FS, C, 4)
        out.append(block({"signals": x}, ["signals"], np.zeros(len(x), dtype=bool), "0")[1][0, 0])
    return out[0], out[1]


@pytest.mark.parametrize(("seeds", "n_time", "max_lag", "interp", "expected"), [
    ([62], 512, 1.0, 16, [0.875]),  # a lobe inside the range, the coarse samples rising to the edge
    ([138, 144], 5120, 2.25 / 343 * 16000 + 3, 16, [-71.25, -81.75]),  # pair 0-15: the 5th/6th coarse peaks
    ([939], 512, 3.5, 8, [3.25]),
    ([939], 512, 3.5, 6, [19 / 6]),
    ([63, 252], 512, 3.5, 5, [3.4, 2.4]),  # an odd interpolation: the coarse search was on whole samples
])
def test_host_delay_search_gives_the_device_reference_delays(seeds, n_time, max_lag, interp, expected):
    x = np.stack([np.random.default_rng(s).standard_normal((2, n_time)) for s in seeds])
    host, device = _host_and_device(x, max_lag, interp)
    np.testing.assert_array_equal(device, expected)
    np.testing.assert_array_equal(host, device)


# 7 -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"pad": -1.0}, r"srp_pad=-1.0 is not allowed; use a number >= 0"),
    ({"pad": float("nan")}, r"srp_pad=nan is not allowed"),
    ({"step": float("inf")}, r"srp_step=inf is not allowed; use a number > 0"),
])
def test_srp_plane_refuses_a_negative_or_non_finite_pad_or_step(kwargs, message):
    positions = np.array([[1.5, 5.3, 1.2], [1.9, 5.7, 1.2]])
    assert srp_grid(positions, pad=0.0)["x_range"] == [1.5, 1.9]
    with pytest.raises(InputError, match=message):
        srp_grid(positions, **kwargs)


@pytest.mark.parametrize(("pairs", "message"), [
    ([(7, 8, 9)], r"pair \(7, 8, 9\) is not allowed; use \(i, j\) with microphones 0..15"),
    ([("a", "b")], r"pair \('a', 'b'\) is not allowed"),
    ([(7.5, 8)], r"pair \(7.5, 8\) is not allowed"),
    ([(7, 16)], r"pair \(7, 16\) is not allowed; use \(i, j\) with microphones 0..15"),
    ([(7, 7)], r"pair '7-7' is not allowed; microphones are 0..15 and must differ"),
    (7, r"pairs=7 is not allowed; use a list of \(i, j\)"),
])
def test_pairs_as_a_list_pass_the_checks_of_the_string_form(pairs, message):
    with pytest.raises(InputError, match=message):
        run_tdoa({}, noise_windows(2), pairs=pairs, srp=False)


def test_pairs_as_a_list_give_the_string_forms_result_and_each_pair_once():
    ds = noise_windows(2)
    listed = run_tdoa({}, ds, pairs=[(7, 8), (np.int64(0), np.int64(15))], srp=False)
    spec = run_tdoa({}, ds, pairs="7-8,0-15", srp=False)
    assert list(listed["pair"].values) == ["7-8", "0-15"]
    np.testing.assert_array_equal(listed["delay"].values, spec["delay"].values)
    with pytest.raises(InputError, match="pair '8-7' is asked for twice"):  # as "7-8,8-7" is
        run_tdoa({}, ds, pairs=[(7, 8), (8, 7)], srp=False)


# 8 -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("as_tensor", [False, True])
def test_pearson_is_nan_for_a_constant_non_zero_map(as_tensor):
    from xai_loc.experiments.faithfulness import finite_mean
    from xai_loc.experiments.sanity import pearson, spearman

    rng = np.random.default_rng(0)
    a = np.stack([np.full(300, 0.1), rng.standard_normal(300)])  # window 0: constant, not zero
    b = rng.standard_normal((2, 300))
    expected = np.corrcoef(a[1], b[1])[0, 1]
    if as_tensor:
        a, b = torch.from_numpy(a), torch.from_numpy(b)
    rho = np.asarray(pearson(a, b))
    assert np.isnan(rho[0]) and rho[1] == pytest.approx(expected, rel=1e-12)
    assert np.isnan(np.asarray(pearson(b, a))[0])
    assert np.isnan(np.asarray(spearman(a, b))[0])
    assert finite_mean(rho) == pytest.approx(expected, rel=1e-12)  # the constant map is skipped, not scored ~0
