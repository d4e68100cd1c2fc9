"""Regression tests of the third hardening review: GCC-PHAT edge cases, deletion curves of a model in training
mode, the front ends' building blocks and the SRP plane."""
import math

import numpy as np
import pytest
import torch
from helpers import one_line
from torch import nn

from xai_loc.experiments.gcc import correlation_time, gcc_phat, tdoa
from xai_loc.experiments.perturbation import deletion_predictions
from xai_loc.experiments.srp import plane_grid
from xai_loc.experiments.tdoa_probe import fast_correlation_time, fast_tdoa
from xai_loc.features.binaural_cues import GammatoneFilterbank
from xai_loc.features.cochleagram import Cochleagram, ERBFilterbank, SincDownsample, erb_cosine_filters
from xai_loc.features.spectrogram import FrameSTFT, stft_kernel


def test_fast_correlation_time_without_interpolation_counts_the_nyquist_bin_once():
    """At interp 1 the autocorrelation is irfft(power, n): its Nyquist bin has weight 1, not 2."""
    x = np.random.default_rng(0).standard_normal((50, 1024))
    smooth = np.apply_along_axis(lambda v: np.convolve(v, np.ones(9) / 9, "same"), 1, x)
    for interp in (1, 2, 16):
        np.testing.assert_allclose(fast_correlation_time(smooth, interp=interp),
                                   correlation_time(smooth, interp=interp), rtol=0, atol=1e-11)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_signal_that_is_not_finite_has_no_delay(bad):
    """NaN (not -max_lag) for the pair with a NaN or an infinity, in NumPy, torch and the fast search; the other
    pair keeps its delay."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 512))
    y = np.roll(x, 3, axis=1)
    y[0, 5] = bad
    for estimate in (tdoa(x, y, max_lag=10), fast_tdoa(x, y, max_lag=10),
                     tdoa(torch.from_numpy(x), torch.from_numpy(y), max_lag=10).numpy(),
                     tdoa(y, x, max_lag=10), fast_tdoa(y, x, max_lag=10)):
        assert np.isnan(estimate[0]) and abs(abs(estimate[1]) - 3) < 1e-12


def test_the_lag_of_no_overlap_is_left_out_by_both_searches():
    """Neither the reference nor the coarse-to-fine search answers a lag of n / 2 (the FFT size's half, where the
    windows do not overlap), so the two agree bit for bit at any lag window."""
    x, y = np.array([[-0.803, 0.243, -1.656, 0.656]]), np.array([[1.143, -0.453, 0.43, 0.251]])
    assert tdoa(x, y, max_lag=4, interp=1)[0] == fast_tdoa(x, y, max_lag=4, interp=1)[0] == -1.0
    lags, _ = gcc_phat(x, y, interp=4)
    assert -lags[0] == lags[-1] == 4 - 1 / 4  # n = 8: symmetric, -n / 2 left out
    rng = np.random.default_rng(7)
    for _ in range(600):
        t1 = int(rng.integers(2, 40))
        t2 = t1 if rng.random() < 0.7 else int(rng.integers(2, 40))
        interp = int(rng.choice([1, 2, 3, 4, 6, 8, 12, 16]))
        n = 1 << (t1 + t2 - 1).bit_length()
        max_lag = float(rng.choice([rng.uniform(0, n), n / 2, n, 1e9]))
        a, b = rng.standard_normal((2, 3, t1)), rng.standard_normal((3, t2))
        a, b = a[0], np.roll(a[1], int(rng.integers(-t1, t1)), axis=1) if t1 == t2 and rng.random() < 0.3 else b
        reference = tdoa(a, b, max_lag=max_lag, interp=interp)
        assert np.array_equal(reference, fast_tdoa(a, b, max_lag=max_lag, interp=interp)), (t1, t2, interp, max_lag)
        assert np.all(np.abs(reference) < n / 2)


def test_deletion_predictions_of_a_model_in_training_mode_are_those_of_eval_mode():
    """Dropout is off while predicting (eval mode), and the model's training mode comes back afterwards."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(4 * 64, 3)).train()
    x = torch.randn(3, 4, 64)
    first = deletion_predictions(model, x, (0, 10, 50), ["random", "energy"])
    assert model.training
    np.testing.assert_array_equal(first, deletion_predictions(model, x, (0, 10, 50), ["random", "energy"]))
    np.testing.assert_array_equal(first[:, 0], model.eval()(x).double().detach().numpy()[None].repeat(2, 0))


@pytest.mark.parametrize(("build", "message"), [
    (lambda: SincDownsample(48000, 0), "out_fs=0 is not allowed; give a positive integer rate in Hz such as 16000"),
    (lambda: SincDownsample(-48000, 8000),
     "fs=-48000 is not allowed; give a positive integer rate in Hz such as 16000"),
    (lambda: ERBFilterbank(fs=0), "fs=0 is not allowed; give a positive integer rate in Hz such as 16000"),
    (lambda: ERBFilterbank(fs=math.nan), "fs=nan is not allowed; give a positive integer rate in Hz such as 16000"),
    (lambda: FrameSTFT(n_fft=0), "n_fft=0 is not allowed; use an integer >= 2"),
    (lambda: FrameSTFT(hop=0), "hop=0 is not allowed; use an integer in [1, 256]"),
    (lambda: FrameSTFT(fs=0), "fs=0 is not allowed; give a positive integer rate in Hz such as 16000"),
    (lambda: stft_kernel(0, 16000), "n_fft=0 is not allowed; use an integer >= 2"),
    (lambda: stft_kernel(256, 0), "fs=0 is not allowed; use a number > 0"),
    (lambda: GammatoneFilterbank(0, [100.0]), "fs=0 is not allowed; give a positive integer rate in Hz such as 16000"),
    (lambda: GammatoneFilterbank(math.inf, [100.0]),
     "fs=inf is not allowed; give a positive integer rate in Hz such as 16000"),
])
def test_front_end_building_blocks_refuse_bad_rates_and_frames(build, message):
    assert one_line(build) == message


def test_plane_grid_refuses_ranges_that_hold_no_plane():
    for x_range, y_range, z, message in [
        ((1, 0), (0, 1), 1.0, "x_range=(1, 0) is not allowed; use two finite numbers of metres (lo, hi), lo <= hi"),
        ((0, 1), (0, math.nan), 1.0,
         "y_range=(0, nan) is not allowed; use two finite numbers of metres (lo, hi), lo <= hi"),
        ((0, 1), (0, 1), math.inf, "z=inf is not allowed; use a finite number of metres"),
    ]:
        assert one_line(plane_grid, x_range, y_range, z, 0.25) == message
    assert plane_grid((0, 1), (2, 2), 1.0, 0.25).shape == (5, 3)


def test_cochleagram_centre_frequencies_are_the_float64_design():
    coch = Cochleagram(n_filters=20, f_max=7000.0, fs=16000, out_fs=4000, signal_length=1600, n_taps=1025)
    _, centres = erb_cosine_filters(1600, 16000, 20, 30.0, 7000.0)
    assert np.array_equal(coch.centre_frequencies, centres) and coch.centre_frequencies.dtype == np.float64
