"""GCC-PHAT, correlation time, SRP-PHAT and the TDOA probe on torch tensors (issue 18).

The torch path of :mod:`xai_loc.experiments.gcc` and :mod:`xai_loc.experiments.srp` runs on the
tensor's device; on CPU tensors it must give the float64 NumPy references' numbers, and
:func:`run_tdoa` must give the same Dataset whichever path it takes. The CUDA runs are at the end.
"""
import numpy as np
import pytest
import torch
import xarray as xr

import xai_loc.experiments.tdoa_probe as tdoa_probe
from xai_loc.data.scene import paper_scene
from xai_loc.data.store import open_signals, simulate_dataset
from xai_loc.errors import InputError
from xai_loc.experiments.gcc import correlation_time, gcc_phat, tdoa
from xai_loc.experiments.srp import plane_grid, srp_localize, srp_phat_map
from xai_loc.experiments.tdoa import anomaly_threshold, pair_delays
from xai_loc.experiments.tdoa_probe import _unit_peak, run_tdoa
from xai_loc.models import build_model

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

DELAYS = [0.0, 3.0, -5.0, 2.5, -1.25, 7.375, 11.0625]


def _delayed_copies(delays: list[float], interp: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """White noise ``(T,)`` and its copies ``(D, T)`` delayed exactly (band-limited, FFT phase shift)."""
    rng = np.random.default_rng(11)
    s = rng.standard_normal(8192)
    freqs = np.fft.rfftfreq(s.size)
    shifted = np.stack([np.fft.irfft(np.fft.rfft(s) * np.exp(-2j * np.pi * freqs * d), s.size) for d in delays])
    return s[1000:6120], shifted[:, 1000:6120]


def _random_windows(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Random windows, smoothed per row so that correlation times differ, one of them silent."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    x[1] = np.cumsum(x[1], axis=-1) * 0.05 + x[1]
    x[2] = 0.0
    return x


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("device-tdoa")
    return simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=root, n_sources=1, progress=False)


# ---- known answers on CPU tensors

@pytest.mark.parametrize("delay", DELAYS)
def test_torch_delay_of_white_noise_comes_back(delay):
    s, shifted = _delayed_copies([delay])
    est = tdoa(torch.from_numpy(s), torch.from_numpy(shifted[0]), max_lag=20, interp=16)
    assert isinstance(est, torch.Tensor) and est.dtype == torch.float64 and est.shape == ()
    assert float(est) == pytest.approx(delay, abs=1 / 16)


@pytest.mark.parametrize("interp", [1, 4, 16])
def test_batched_torch_delays_to_one_over_interp(interp):
    s, shifted = _delayed_copies(DELAYS)
    x1 = torch.from_numpy(np.broadcast_to(s, shifted.shape).copy()).float()  # float32 in: computed in float64
    est = tdoa(x1, torch.from_numpy(shifted), max_lag=20, interp=interp)
    np.testing.assert_allclose(est.numpy(), DELAYS, atol=1 / interp)
    np.testing.assert_array_equal(est.numpy() * interp, np.round(est.numpy() * interp))  # on the 1/interp grid


def test_torch_correlation_time_of_a_gaussian_pulse():
    sigma = 6.0
    t = np.arange(-200, 201)
    pulse = torch.from_numpy(np.exp(-(t**2) / (2 * sigma**2)))
    # autocorrelation exp(-tau^2 / (4 sigma^2)) falls to 1/sqrt(2) at tau = sigma sqrt(2 ln 2)
    assert float(correlation_time(pulse, interp=32)) == pytest.approx(2 * sigma * np.sqrt(2 * np.log(2)), rel=0.01)


# ---- torch equals the NumPy references

def test_torch_gcc_matches_numpy():
    x = _random_windows(0, (6, 3, 700))
    t = torch.from_numpy(x)
    for max_lag, interp in [(12.3, 8), (None, 2), (0.4, 16)]:
        lags, cc = gcc_phat(x[:, 0], x[:, 1], max_lag=max_lag, interp=interp)
        lags_t, cc_t = gcc_phat(t[:, 0], t[:, 1], max_lag=max_lag, interp=interp)
        np.testing.assert_array_equal(lags_t.numpy(), lags)  # exact: the same float64 arithmetic
        np.testing.assert_allclose(cc_t.numpy(), cc, rtol=0, atol=1e-12)
    for i, j in [(0, 1), (1, 2), (2, 0), (0, 2)]:
        for max_lag in (3.0, 9.5, None):
            ref = tdoa(x[:, i], x[:, j], max_lag=max_lag)
            got = tdoa(t[:, i], t[:, j], max_lag=max_lag)
            # the silent window 2 is an exact tie: both resolve it to the most negative lag
            np.testing.assert_array_equal(got.numpy(), ref)
    np.testing.assert_array_equal(pair_delays(t, (0, 1), 9.5).numpy(), pair_delays(x, (0, 1), 9.5))


def test_torch_correlation_time_matches_numpy():
    x = _random_windows(1, (5, 4, 900))
    for interp in (1, 16):
        ref = correlation_time(x, interp=interp)
        got = correlation_time(torch.from_numpy(x), interp=interp)
        assert got.shape == ref.shape == (5, 4)
        live = np.arange(5) != 2  # the silent window has no main lobe: compared only for being equal
        np.testing.assert_allclose(got.numpy()[live], ref[live], rtol=0, atol=1e-9)
        np.testing.assert_array_equal(got.numpy()[2], ref[2])
    np.testing.assert_allclose(anomaly_threshold(torch.from_numpy(x), (1, 0)).numpy(), anomaly_threshold(x, (1, 0)),
                               rtol=0, atol=1e-9)
    one = x[0, 0]
    assert float(correlation_time(torch.from_numpy(one))) == pytest.approx(float(correlation_time(one)), abs=1e-9)


def test_torch_srp_map_matches_numpy():
    scene = paper_scene()
    x = _random_windows(2, (4, 16, 600))
    grid = plane_grid((0.825, 2.575), (4.5, 6.5), 1.25, 0.1)
    ref = srp_phat_map(x, scene.mics, grid, scene.room.fs, scene.room.c, interp=4)
    got = srp_phat_map(torch.from_numpy(x), scene.mics, grid, scene.room.fs, scene.room.c, interp=4, batch=3)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())
    np.testing.assert_array_equal(got.numpy().argmax(axis=1), ref.argmax(axis=1))
    np.testing.assert_array_equal(srp_localize(torch.from_numpy(x), scene.mics, grid, scene.room.fs, scene.room.c),
                                  srp_localize(x, scene.mics, grid, scene.room.fs, scene.room.c))


def test_unit_peak_is_the_same_division_in_torch():
    x = _random_windows(3, (3, 2, 50)).astype(np.float32)
    got = _unit_peak(torch.from_numpy(x))
    assert got.dtype == torch.float64
    np.testing.assert_array_equal(got.numpy(), _unit_peak(x))  # byte-identical, the silent window stays zero


# ---- run_tdoa: the device path gives the host path's Dataset

def _on_cpu_tensors(monkeypatch) -> list:
    """Make run_tdoa take its device path on the CPU (its dispatch sends only accelerators there);
    returns the list of what it moved to the device."""
    assert tdoa_probe._estimation_device("cpu") is None
    assert tdoa_probe._estimation_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.setattr(tdoa_probe, "_estimation_device", lambda device: torch.device("cpu"))
    moved, on = [], tdoa_probe._on
    monkeypatch.setattr(tdoa_probe, "_on", lambda values, device: moved.append(np.shape(values)) or on(values, device))
    return moved


def _assert_same_result(got: xr.Dataset, ref: xr.Dataset) -> None:
    np.testing.assert_array_equal(got["delay"].values, ref["delay"].values)
    np.testing.assert_allclose(got["threshold"].values, ref["threshold"].values, rtol=1e-12)
    np.testing.assert_array_equal(got["srp_peak"].values, ref["srp_peak"].values)  # NaN where not computed
    xr.testing.assert_identical(got.drop_vars("threshold"), ref.drop_vars("threshold"))


def test_run_tdoa_device_path_gives_the_host_result(store, monkeypatch):
    torch.manual_seed(3)
    model = build_model("loccnn")
    signals = open_signals(store)["signals"].values
    relevance = {"scaled-copy": signals * np.linspace(0.2, 3.0, signals.shape[-1], dtype=signals.dtype)}
    relevance["scaled-copy"][[0, 4]] = 0.0  # all-zero windows: no delay, a flat SRP map
    kw = {"pairs": "7-8,6-9,0-15,3-2", "relevance": relevance, "randomized_baseline": False, "max_windows": 5,
          "batch_size": 3, "srp_max_windows": 2, "srp_step": 0.1}
    ref = run_tdoa({"loccnn": model}, store, **kw)
    assert np.isfinite(ref["srp_peak"].values).any() and np.isnan(ref["srp_peak"].values).any()
    assert ref["srp_flat"].sel(srp_estimator="scaled-copy") > 0 and ref["srp_flat"].sel(srp_estimator="signals") == 0
    moved = _on_cpu_tensors(monkeypatch)
    got = run_tdoa({"loccnn": model}, store, **kw)
    # per block: the signals, the model's and the given relevance (and small index arrays)
    assert sorted(shape for shape in moved if len(shape) == 3) == [(2, 16, 5120)] * 3 + [(3, 16, 5120)] * 3
    _assert_same_result(got, ref)
    delay = got["delay"].values
    assert np.isnan(delay[list(got["estimator"].values).index("scaled-copy")][:, [0, 4]]).all()
    assert (np.abs(delay[np.isfinite(delay)]) <= np.broadcast_to(got["max_lag"].values[None, :, None],
                                                                   delay.shape)[np.isfinite(delay)] + 1e-9).all()


def test_run_tdoa_device_path_rejects_nonfinite_relevance(store, monkeypatch):
    _on_cpu_tensors(monkeypatch)
    bad = open_signals(store)["signals"].values.copy()
    bad[1, 4, 10] = np.nan
    with pytest.raises(InputError, match="relevance 'bad' has NaN or infinite values in windows 0..2"):
        run_tdoa({}, store, relevance={"bad": bad}, pairs="7-8", max_windows=3, batch_size=3, srp=False)


# ---- CUDA: the same numbers from the accelerator

@requires_cuda
def test_cuda_estimators_match_numpy():
    scene = paper_scene()
    x = _random_windows(4, (4, 16, 800))
    t = torch.from_numpy(x).cuda()
    got = tdoa(t[:, 3], t[:, 9], max_lag=8.0)
    assert got.device.type == "cuda"
    np.testing.assert_array_equal(got.cpu().numpy(), tdoa(x[:, 3], x[:, 9], max_lag=8.0))
    np.testing.assert_allclose(correlation_time(t).cpu().numpy()[[0, 1, 3]], correlation_time(x)[[0, 1, 3]],
                               rtol=0, atol=1e-9)
    grid = plane_grid((0.825, 2.575), (4.5, 6.5), 1.25, 0.1)
    ref = srp_phat_map(x, scene.mics, grid, scene.room.fs, scene.room.c, interp=4)
    maps = srp_phat_map(t, scene.mics, grid, scene.room.fs, scene.room.c, interp=4, batch=4)
    np.testing.assert_allclose(maps.cpu().numpy(), ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max())
    np.testing.assert_array_equal(maps.argmax(dim=1).cpu().numpy(), ref.argmax(axis=1))
    s, shifted = _delayed_copies(DELAYS)
    est = tdoa(torch.from_numpy(np.broadcast_to(s, shifted.shape).copy()).cuda(), torch.from_numpy(shifted).cuda(),
               max_lag=20)
    np.testing.assert_allclose(est.cpu().numpy(), DELAYS, atol=1 / 16)


@requires_cuda
def test_run_tdoa_on_cuda_gives_the_cpu_result(store):
    signals = open_signals(store)["signals"].values
    kw = {"pairs": "spread", "relevance": {"copy": signals}, "max_windows": 4, "batch_size": 4,
          "srp_max_windows": 2, "srp_step": 0.1}
    _assert_same_result(run_tdoa({}, store, device="cuda", **kw), run_tdoa({}, store, device="cpu", **kw))
