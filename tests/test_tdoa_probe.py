"""TDOA probe experiment: labelled result, baselines, known answers, tables, files and figures."""
import csv
import io
import json

import numpy as np
import pytest
import torch

from xai_loc.data.scene import paper_scene
from xai_loc.data.store import open_signals, simulate_dataset
from xai_loc.errors import InputError
from xai_loc.experiments.gcc import correlation_time, tdoa
from xai_loc.experiments.tdoa import parse_pairs, score
from xai_loc.experiments.tdoa_probe import (
    fast_correlation_time,
    fast_tdoa,
    open_tdoa_results,
    run_tdoa,
    tdoa_tables,
    write_tdoa_results,
)
from xai_loc.models import build_model

N_WINDOWS = 8


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("tdoa-data")
    return simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=root, n_sources=2, progress=False)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    return build_model("loccnn")


@pytest.fixture(scope="module")
def result(store, model):
    ds = open_signals(store)
    # a hand-made "relevance" equal to the microphone signals: must give the signals' delays
    return run_tdoa({"loccnn": model}, store, relevance={"mic-copy": ds["signals"]}, max_windows=N_WINDOWS,
                    batch_size=4, srp_max_windows=4)


def test_result_dims_coords_and_provenance(result, model):
    assert result["delay"].dims == ("estimator", "pair", "window")
    assert list(result["estimator"].values) == ["signals", "loccnn", "loccnn-randomized", "mic-copy", "zero-lag"]
    assert list(result["estimator_kind"].values) == ["signals", "relevance", "randomized", "relevance", "constant"]
    spread = parse_pairs("spread", 16)
    assert result.sizes == {**result.sizes, "pair": 15, "window": N_WINDOWS}
    assert list(result["pair"].values) == [f"{i}-{j}" for i, j in spread]
    assert list(result["mic_i"].values) == [i for i, _ in spread]
    assert list(result["mic_j"].values) == [j for _, j in spread]
    np.testing.assert_allclose(result["pair_distance"].values, 0.15 * np.arange(1, 16), atol=1e-9)
    assert result["truth"].dims == result["threshold"].dims == ("pair", "window")
    assert result["anomalies_percent"].dims == result["mae_samples"].dims == ("estimator", "pair")
    assert (result["threshold"].values > 0).all()
    # every delay is within the pair's search range
    assert (np.abs(result["delay"].values) <= result["max_lag"].values[None, :, None] + 1e-9).all()
    attrs = result.attrs
    assert (attrs["t60"], attrs["snr"], attrs["method"], attrs["composite"], attrs["target"]) == \
        (0.15, 25.0, "lrp", "paper", "truth")
    assert attrs["first_rule"] == "wsquare" and attrs["n_windows"] == N_WINDOWS
    models = json.loads(attrs["models"])
    from xai_loc.explain.attribute import model_digest
    assert models["loccnn"]["model_digest"] == model_digest(model)
    assert models["loccnn-randomized"]["randomized_from"] == model_digest(model)
    assert models["loccnn-randomized"]["model_digest"] != model_digest(model)
    assert models["mic-copy"]["relevance"] == "given"
    assert "relevance_fraction" in models["loccnn"]


def test_a_silent_signal_gives_no_delay_and_no_correlation_time():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 700))
    x[1, 1] = 0.0  # the second signal of window 1 is silent
    x[2] = 0.0  # window 2 is silent on both
    ref = tdoa(x[:, 0], x[:, 1], max_lag=20.0)
    assert np.isfinite(ref[0]) and np.isnan(ref[1:]).all()
    np.testing.assert_array_equal(fast_tdoa(x[:, 0], x[:, 1], 20.0), ref)
    np.testing.assert_array_equal(tdoa(torch.from_numpy(x[:, 0]), torch.from_numpy(x[:, 1]), max_lag=20.0).numpy(),
                                  ref)
    ct = correlation_time(x[:, 1])
    assert np.isfinite(ct[0]) and ct[0] > 0 and np.isnan(ct[1:]).all()
    np.testing.assert_allclose(fast_correlation_time(x[:, 1]), ct, rtol=1e-9)
    np.testing.assert_allclose(correlation_time(torch.from_numpy(x[:, 1])).numpy(), ct, rtol=1e-9)


def test_relevance_silent_on_a_microphone_counts_as_anomalies_there(store, model):
    ds = open_signals(store)
    silent = ds["signals"].copy(data=np.array(ds["signals"].values))
    silent.values[:2, 8] = 0.0  # no relevance on microphone 8 in the first two windows
    out = run_tdoa({"loccnn": model}, store, relevance={"mic-copy": silent}, max_windows=4, batch_size=4,
                   pairs="7-8,6-9", randomized_baseline=False, srp=False)
    delay = out["delay"].sel(estimator="mic-copy")
    assert np.isnan(delay.sel(pair="7-8").values[:2]).all() and np.isfinite(delay.sel(pair="7-8").values[2:]).all()
    np.testing.assert_array_equal(delay.sel(pair="6-9").values, out["delay"].sel(estimator="signals", pair="6-9"))
    signals = out["anomalies_percent"].sel(estimator="signals", pair="7-8").item()
    assert signals == 0.0 and out["anomalies_percent"].sel(estimator="mic-copy", pair="7-8").item() == 50.0


def test_an_all_zero_window_has_no_srp_peak_and_is_scored_at_the_constant_guess(store, model):
    ds = open_signals(store)
    silent = ds["signals"].copy(data=np.array(ds["signals"].values))
    silent.values[:2] = 0.0  # no relevance at all in the first two windows: a flat SRP map
    out = run_tdoa({"loccnn": model}, store, relevance={"mic-copy": silent}, max_windows=4, batch_size=4,
                   pairs="7-8", randomized_baseline=False, srp_max_windows=4)
    peak = out["srp_peak"].sel(srp_estimator="mic-copy").values
    signals = out["srp_peak"].sel(srp_estimator="signals").values
    constant = out["srp_peak"].sel(srp_estimator="constant").values
    assert np.isnan(peak[:2]).all() and np.array_equal(peak[2:], signals[2:])  # not the grid's first point
    assert out["srp_flat"].sel(srp_estimator="mic-copy").item() == 2
    assert out["srp_flat"].sel(srp_estimator="signals").item() == 0
    # the mean covers the same four windows as every other estimator's, the flat two at the constant guess
    scored = np.concatenate([constant[:2], signals[2:]])
    source = np.stack([out["source_x"], out["source_y"]], axis=1)
    mean = out["srp_error"].sel(srp_estimator="mic-copy", srp_metric="euclidean").item()
    assert mean == pytest.approx(np.hypot(*np.abs(scored - source).T).mean(), rel=1e-12)
    assert "scored at the constant guess): `mic-copy` 2." in tdoa_tables(out)["markdown"]


def test_zero_lag_scores_the_true_delay_as_its_error(result):
    zero = result["delay"].sel(estimator="zero-lag").values
    assert (zero == 0).all()
    truth, thr = result["truth"].values, result["threshold"].values
    for p in range(result.sizes["pair"]):
        expected = score(np.zeros_like(truth[p]), truth[p], thr[p])
        err = np.abs(truth[p])
        assert result["anomalies_percent"].sel(estimator="zero-lag").values[p] == expected["anomalies_percent"]
        assert result["anomalies_percent"].sel(estimator="zero-lag").values[p] == 100 * np.mean(err > thr[p])
        mae = result["mae_samples"].sel(estimator="zero-lag").values[p]
        good = err[err <= thr[p]]
        assert (np.isnan(mae) and good.size == 0) or mae == pytest.approx(good.mean(), rel=1e-12)


def test_signals_find_the_true_delay_in_a_low_reverb_room(result):
    err = np.abs(result["delay"].sel(estimator="signals") - result["truth"]).values
    assert err.max() < 0.5  # T60 0.15 s, 25 dB: GCC-PHAT is right to a fraction of a sample on every pair
    assert (result["anomalies_percent"].sel(estimator="signals").values == 0).all()
    assert result["srp_error"].sel(srp_estimator="signals", srp_metric="euclidean") < 0.1


def test_relevance_equal_to_the_signals_gives_the_signals_delays(result):
    np.testing.assert_array_equal(result["delay"].sel(estimator="mic-copy").values,
                                  result["delay"].sel(estimator="signals").values)
    np.testing.assert_array_equal(result["srp_peak"].sel(srp_estimator="mic-copy").values,
                                  result["srp_peak"].sel(srp_estimator="signals").values)


def test_srp_comparison_shape_and_subset(result):
    assert list(result["srp_estimator"].values) == ["signals", "loccnn", "loccnn-randomized", "mic-copy", "constant"]
    assert result["srp_error"].dims == ("srp_estimator", "srp_metric")
    assert list(result["srp_metric"].values) == ["x", "y", "euclidean"]
    computed = np.isfinite(result["srp_peak"].values[..., 0])
    assert (computed.sum(axis=1) == 4).all() and result.attrs["srp_windows"] == 4
    assert (result["srp_flat"].values == 0).all()
    assert np.isfinite(result["srp_error"].values).all()


def test_tables_list_every_estimator_and_pair(result):
    tables = tdoa_tables(result)
    assert "map was flat" not in tables["markdown"]  # every SRP window had a peak
    assert {"markdown", "csv", "latex", "srp_csv", "srp_latex"} <= set(tables)
    for name in result["estimator"].values:
        assert f"| {name} |" in tables["markdown"]
        assert name.replace("_", r"\_") in tables["latex"]
    for pair, dist in zip(result["pair"].values, result["pair_distance"].values, strict=True):
        assert f"{pair} ({dist:.2f} m)" in tables["markdown"]
        assert pair.replace("-", "--") in tables["latex"]
    rows = list(csv.reader(io.StringIO(tables["csv"])))
    assert len(rows[0]) == 1 + 2 * result.sizes["pair"]
    assert [r[0] for r in rows[1:]] == list(result["estimator"].values)
    values = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    np.testing.assert_allclose(values[:, 0::2], result["anomalies_percent"].values, atol=1e-3)
    srp_rows = list(csv.reader(io.StringIO(tables["srp_csv"])))
    assert [r[0] for r in srp_rows[1:]] == list(result["srp_estimator"].values)
    assert r"\begin{tabular}" in tables["latex"] and r"\end{tabular}" in tables["latex"]


def test_results_round_trip_and_figures(result, store, model, tmp_path):
    from xai_loc.explain import explain
    from xai_loc.plots.inspection import plot_inspection
    from xai_loc.plots.tdoa import plot_srp, plot_tdoa

    paths = write_tdoa_results(result, tmp_path / "tdoa")
    assert {p.name for p in paths.values()} == {"tdoa.nc", "tdoa.md", "tdoa.csv", "tdoa.tex", "srp.csv", "srp.tex"}
    assert not [p for p in (tmp_path / "tdoa").iterdir() if p.name.startswith(".")]  # no temporaries left
    back = open_tdoa_results(tmp_path / "tdoa")
    np.testing.assert_array_equal(back["delay"].values, result["delay"].values)
    assert list(back["estimator"].values) == list(result["estimator"].values)
    assert back.attrs["models"] == result.attrs["models"]

    figures = plot_tdoa(tmp_path / "tdoa", tmp_path / "fig" / "tdoa-t60-0.15")  # drawn from the stored file
    figures += plot_srp(tmp_path / "tdoa" / "tdoa.nc", tmp_path / "fig" / "srp")
    ds = open_signals(store).isel(window=slice(0, 4))
    relevance = explain(model, ds, batch_size=4)
    figures += plot_inspection(store, {"loccnn": relevance}, tmp_path / "fig" / "inspection", pair=(7, 8))
    assert [p.name for p in figures] == ["tdoa-t60-0.15.png", "tdoa-t60-0.15.pdf", "srp.png", "srp.pdf",
                                         "inspection.png", "inspection.pdf"]
    assert all(p.stat().st_size > 1000 for p in figures)
    with pytest.raises(InputError, match="does not exist"):
        open_tdoa_results(tmp_path / "nothing")


def test_fast_gcc_matches_the_reference_routines(store):
    x = open_signals(store)["signals"].values[:6].astype(np.float64)
    for i, j in [(7, 8), (6, 9), (0, 15)]:
        max_lag = abs(j - i) * 0.15 / 343 * 16000 + 3
        np.testing.assert_array_equal(fast_tdoa(x[:, i], x[:, j], max_lag), tdoa(x[:, i], x[:, j], max_lag=max_lag))
    np.testing.assert_allclose(fast_correlation_time(x[:, 3]), correlation_time(x[:, 3]), rtol=1e-9)
    # review: a peak between the last coarse sample inside the range and max_lag was never refined, so
    # uncorrelated windows (low SNR) gave the fast search another delay than the reference's in ~1 %
    noise = np.random.default_rng(0).standard_normal((2, 600, 1024))
    max_lag = 0.15 / 343 * 16000 + 3  # pair (7, 8): 9.997 samples
    np.testing.assert_array_equal(fast_tdoa(noise[0], noise[1], max_lag), tdoa(noise[0], noise[1], max_lag=max_lag))


@pytest.mark.parametrize("delay", [5.0, -3.0, 2.25, -7.5])
def test_fast_tdoa_known_delay_of_white_noise(delay):
    rng = np.random.default_rng(0)
    n = 8192
    s = rng.standard_normal(n)
    k = np.fft.rfftfreq(n)
    shifted = np.fft.irfft(np.fft.rfft(s) * np.exp(-2j * np.pi * k * delay), n)  # s delayed by `delay` samples
    x1, x2 = s[1000:6120][None], shifted[1000:6120][None]
    assert fast_tdoa(x1, x2, max_lag=20)[0] == pytest.approx(delay, abs=1 / 16)


def test_flat_first_rule_carries_no_delay(store, model):
    out = run_tdoa({"m": model}, store, pairs="7-8,0-15", first_rule="flat", randomized_baseline=False,
                   max_windows=4, batch_size=4, srp=False)
    assert out.attrs["first_rule"] == "flat"
    # Flat gives every microphone the same relevance: lag 0 exactly, like the constant estimator
    np.testing.assert_array_equal(out["delay"].sel(estimator="m").values, 0.0)
    np.testing.assert_array_equal(out["anomalies_percent"].sel(estimator="m").values,
                                  out["anomalies_percent"].sel(estimator="zero-lag").values)


def test_user_errors(store, model):
    ds = open_signals(store)
    other = build_model("loccnn")
    from xai_loc.explain import explain
    foreign = explain(other, ds.isel(window=slice(0, 2)), batch_size=2)
    with pytest.raises(InputError, match="model_digest"):
        run_tdoa({"loccnn": model}, store, relevance={"loccnn": foreign}, max_windows=2, srp=False)
    with pytest.raises(InputError, match="lacks window 2"):
        run_tdoa({}, store, relevance={"x": foreign}, max_windows=3, srp=False)
    with pytest.raises(InputError, match="reserved"):
        run_tdoa({}, store, relevance={"signals": foreign}, max_windows=2, srp=False)
    with pytest.raises(InputError, match="0..15"):
        run_tdoa({}, store, pairs="7-16", max_windows=2, srp=False)
    with pytest.raises(InputError, match="does not exist"):
        run_tdoa({}, store.parent / "missing.zarr")


def test_stored_relevance_gives_the_same_result(result, store, model):
    from xai_loc.experiments.tdoa_probe import explain_models

    stored = explain_models({"loccnn": model}, store, batch_size=4)  # the batches of the run it is compared with
    assert set(stored) == {"loccnn", "loccnn-randomized"}
    n_windows = open_signals(store).sizes["window"]
    assert all(da.sizes["window"] == n_windows for da in stored.values())  # the whole store, resumable, reusable
    folder = store.with_name(store.name.removesuffix(".zarr") + ".relevance")
    from xai_loc.experiments.baselines import randomized_copy
    from xai_loc.explain.attribute import model_digest

    names = {f"loccnn-{model_digest(m)[:12]}-lrp-paper-truth.zarr" for m in (model, randomized_copy(model, 0))}
    assert {p.name for p in folder.iterdir()} == names  # named by weight digest: model and randomized copy
    stamps = {p.name: (p / ".zattrs").stat().st_mtime_ns for p in folder.iterdir()}
    explain_models({"loccnn": model}, store, batch_size=4)  # found and reused, not recomputed
    assert stamps == {p.name: (p / ".zattrs").stat().st_mtime_ns for p in folder.iterdir()}
    out = run_tdoa({"loccnn": model}, store, relevance=stored, max_windows=N_WINDOWS, batch_size=4, srp=False)
    models = json.loads(out.attrs["models"])
    assert models["loccnn"]["relevance"] == models["loccnn-randomized"]["relevance"] == "given"
    with pytest.raises(InputError, match="model_digest"):  # randomized relevance of another seed
        run_tdoa({"loccnn": model}, store, relevance=stored, seed=1, max_windows=2, srp=False)
    for name in ("signals", "loccnn", "loccnn-randomized", "zero-lag"):
        np.testing.assert_array_equal(out["delay"].sel(estimator=name).values,
                                      result["delay"].sel(estimator=name).values)
