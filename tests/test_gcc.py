"""Known answers for GCC-PHAT and the correlation time."""
import numpy as np
import pytest

from xai_loc.experiments.gcc import correlation_time, gcc_phat, tdoa


def _fractional_delay(x: np.ndarray, delay: float) -> np.ndarray:
    """Delay a signal by ``delay`` samples exactly (circularly, in the frequency domain)."""
    freqs = np.fft.rfftfreq(x.size)
    return np.fft.irfft(np.fft.rfft(x) * np.exp(-2j * np.pi * freqs * delay), x.size)


@pytest.mark.parametrize("delay", [0.0, 3.0, -5.0, 2.5, -1.25, 7.375])
def test_white_noise_delay_comes_back(delay):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(8192)
    y = _fractional_delay(x, delay)
    est = tdoa(x[1000:6120], y[1000:6120], max_lag=20, interp=16)
    assert est == pytest.approx(delay, abs=1 / 16)


@pytest.mark.parametrize("max_lag", [0.0, 0.3, 10.0, 37.5, 1e9, -1.0])
def test_kept_lags_are_the_slice_of_the_whole_shifted_correlation(max_lag):
    """The lags within max_lag are gathered from the unshifted correlation; the same numbers as shifting all of
    them (the full output, max_lag None) and slicing, for windows of any length and any interpolation."""
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((2, 3, 2, 700))
    for interp in (1, 4, 16):
        all_lags, whole = gcc_phat(x, y, interp=interp)
        lags, cc = gcc_phat(x, y, max_lag=max_lag, interp=interp)
        kept = np.abs(all_lags) <= max_lag
        assert np.array_equal(lags, all_lags[kept]) and np.array_equal(cc, whole[..., kept])
        assert np.all(np.diff(lags) == 1 / interp) and (lags.size > 0) == (max_lag >= 0)


def test_batched_and_centred_lag_axis():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4096))
    y = np.stack([np.roll(x[0], 2), np.roll(x[1], -4), x[2]])
    lags, cc = gcc_phat(x, y, max_lag=10, interp=1)
    assert lags[len(lags) // 2] == 0 and lags[0] == -10 and lags[-1] == 10
    np.testing.assert_array_equal(lags[np.argmax(cc, -1)], [2, -4, 0])


def test_correlation_time_of_a_gaussian_pulse():
    sigma = 6.0
    t = np.arange(-200, 201)
    pulse = np.exp(-(t**2) / (2 * sigma**2))
    # autocorrelation exp(-tau^2 / (4 sigma^2)) falls to 1/sqrt(2) at tau = sigma sqrt(2 ln 2)
    expected = 2 * sigma * np.sqrt(2 * np.log(2))
    assert correlation_time(pulse, interp=32) == pytest.approx(expected, rel=0.01)


def test_correlation_time_orders_smooth_and_white_signals():
    rng = np.random.default_rng(3)
    white = rng.standard_normal(5120)
    smooth = np.convolve(white, np.ones(20) / 20, mode="same")
    ct = correlation_time(np.stack([white, smooth]))
    assert ct[0] < 2.0 < 10.0 < ct[1]
