"""GCC-PHAT time-delay estimation and the correlation time of a signal.

Lags are on a centred axis: lag 0 is the middle sample of the (interpolated) correlation,
so a delay of ``D`` samples is reported as ``D`` exactly (the paper's released code reports
every delay half a sample off).
"""
from __future__ import annotations

import numpy as np


def _next_pow2(n: int) -> int:
    return 1 << (int(n) - 1).bit_length()


def gcc_phat(x1: np.ndarray, x2: np.ndarray, max_lag: float | None = None, interp: int = 16,
             eps: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """Generalized cross-correlation with phase transform (Knapp & Carter, 1976).

    Parameters
    ----------
    x1, x2
        Signals ``(..., T)``; leading dimensions are batched.
    max_lag
        Largest absolute lag returned, in samples (default: all).
    interp
        Interpolation factor of the lag axis (band-limited, by zero-padding the spectrum).
    eps
        Floor of the spectral magnitude in the PHAT weighting.

    Returns
    -------
    lags, cc
        Lags in samples ``(L,)`` (centred: 0 in the middle) and the correlation
        ``(..., L)``; its peak is at ``tau2 - tau1``, positive when ``x2`` lags ``x1``.
    """
    x1 = np.asarray(x1, dtype=np.float64)
    x2 = np.asarray(x2, dtype=np.float64)
    n = _next_pow2(x1.shape[-1] + x2.shape[-1])
    cross = np.fft.rfft(x2, n) * np.conj(np.fft.rfft(x1, n))
    cross /= np.maximum(np.abs(cross), eps)
    m = n * interp
    cc = np.fft.fftshift(np.fft.irfft(cross, m), axes=-1)
    lags = (np.arange(m) - m // 2) / interp
    if max_lag is not None:
        keep = np.abs(lags) <= max_lag
        lags, cc = lags[keep], cc[..., keep]
    return lags, cc


def tdoa(x1: np.ndarray, x2: np.ndarray, max_lag: float | None = None, interp: int = 16) -> np.ndarray:
    """GCC-PHAT delay of ``x2`` relative to ``x1`` in samples, ``(...)``."""
    lags, cc = gcc_phat(x1, x2, max_lag=max_lag, interp=interp)
    return lags[np.argmax(cc, axis=-1)]


def correlation_time(x: np.ndarray, interp: int = 16) -> np.ndarray:
    """Width of the autocorrelation main lobe at ``1/sqrt(2)`` of its peak, in samples.

    The definition of Champagne, Bedard & Stephenne (IEEE TSAP 1996); half of it is the
    threshold above which a delay error counts as an anomaly. Sub-sample resolution by
    band-limited interpolation of the autocorrelation; ``x`` is ``(..., T)``.
    """
    x = np.asarray(x, dtype=np.float64)
    n = _next_pow2(2 * x.shape[-1])
    power = np.abs(np.fft.rfft(x, n)) ** 2
    r = np.fft.irfft(power, n * interp)[..., : n * interp // 2]
    r = r / np.maximum(r[..., :1], 1e-300)
    below = r < 1.0 / np.sqrt(2.0)
    first = np.where(below.any(axis=-1), np.argmax(below, axis=-1), r.shape[-1])
    # linear interpolation between the last sample above and the first below the level
    idx = np.clip(first, 1, r.shape[-1] - 1)
    r_hi = np.take_along_axis(r, (idx - 1)[..., None], -1)[..., 0]
    r_lo = np.take_along_axis(r, idx[..., None], -1)[..., 0]
    frac = (r_hi - 1.0 / np.sqrt(2.0)) / np.maximum(r_hi - r_lo, 1e-300)
    return 2.0 * (idx - 1 + frac) / interp
