"""Microphone signals from dry speech, room impulse responses and sensor noise."""
from __future__ import annotations

import numpy as np
from scipy.signal import fftconvolve

from xai_loc.acoustics.room import check_snr
from xai_loc.errors import InputError


def reverberant_signals(speech: np.ndarray, rirs: np.ndarray) -> np.ndarray:
    """Convolve a dry signal with each microphone's impulse response.

    Parameters
    ----------
    speech
        Dry source signal ``(T,)``.
    rirs
        Impulse responses ``(M, N)``.

    Returns
    -------
    numpy.ndarray
        ``(M, T)`` float64: the convolution cut to the length of the dry signal, so that
        window ``k`` of every microphone covers the same stretch of the source.
    """
    speech = np.asarray(speech, dtype=np.float64)
    if speech.ndim != 1 or not np.all(np.isfinite(speech)):
        raise InputError("speech must be a finite 1-D signal")
    return fftconvolve(speech[None, :], np.asarray(rirs, dtype=np.float64), axes=1)[:, : speech.size]


def add_white_noise(signals: np.ndarray, snr: float, rng: np.random.Generator, ref_mic: int = 0) -> np.ndarray:
    """Add independent white Gaussian noise to every channel at ``snr`` dB.

    The SNR is relative to the power of microphone ``ref_mic`` (the paper's definition):
    ``noise_power = mean(signals[ref_mic] ** 2) / 10 ** (snr / 10)``.
    """
    snr = check_snr(snr)
    power = float(np.mean(signals[ref_mic] ** 2))
    sigma = np.sqrt(power / 10.0 ** (snr / 10.0))
    return signals + sigma * rng.standard_normal(signals.shape)


def cut_windows(signals: np.ndarray, length: int) -> np.ndarray:
    """Non-overlapping windows ``(W, M, length)`` of ``(M, T)`` signals; the remainder is dropped."""
    n_win = signals.shape[1] // length
    return signals[:, : n_win * length].reshape(signals.shape[0], n_win, length).transpose(1, 0, 2)
