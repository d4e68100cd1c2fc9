"""Steered-response-power (SRP-PHAT) maps over a plane of candidate source positions.

The map at a candidate point is the sum over microphone pairs of the GCC-PHAT correlation
at the pair's delay for that point (DiBiase, Silverman & Brandstein, 2001). Computed from
microphone windows or from relevance signals, it asks whether the whole array's relevance
keeps the spatial information of the signals.
"""
from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np

from xai_loc.checks import is_real
from xai_loc.errors import InputError
from xai_loc.experiments.gcc import array_ops, gcc_phat

if TYPE_CHECKING:
    from xai_loc.experiments.gcc import Array


def plane_grid(x_range: tuple[float, float], y_range: tuple[float, float], z: float, step: float) -> np.ndarray:
    """Candidate points ``(G, 3)`` on a horizontal plane, at most ``step`` metres (finite, > 0) apart.

    Each axis runs evenly from the first end of its range ``(lo, hi)``, finite with ``lo <= hi``, to the last, both
    included, so the grid is symmetric about the range's centre; the plane is at height ``z`` (finite).
    """
    if not (is_real(step) and step > 0):
        raise InputError(f"step={step!r} is not allowed; use a finite number of metres > 0")
    for name, ends in (("x_range", x_range), ("y_range", y_range)):
        if not (np.ndim(ends) == 1 and len(ends) == 2 and all(is_real(end) for end in ends) and ends[0] <= ends[1]):
            raise InputError(f"{name}={ends!r} is not allowed; use two finite numbers of metres (lo, hi), lo <= hi")
    if not is_real(z):
        raise InputError(f"z={z!r} is not allowed; use a finite number of metres")
    gx, gy = (np.linspace(lo, hi, int(np.ceil((hi - lo) / step - 1e-9)) + 1) for lo, hi in (x_range, y_range))
    xx, yy = np.meshgrid(gx, gy, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel(), np.full(xx.size, z)], axis=1)


def srp_phat_map(signals: Array, mics: np.ndarray, grid: np.ndarray, fs: float, c: float,
                 interp: int = 8, batch: int = 2) -> Array:
    """SRP-PHAT power ``(W, G)`` of windows ``(W, M, T)`` at candidate points ``(G, 3)``.

    All microphone pairs are used; correlations are read at the exact (fractional) pair
    delays by linear interpolation of a ``interp``-times upsampled GCC-PHAT. Windows in a
    torch tensor give the map as a float64 tensor on their device (the geometry stays NumPy).
    """
    xp = array_ops(signals)
    pairs = np.array(list(combinations(range(mics.shape[0]), 2)))
    dist = np.linalg.norm(grid[None, :, :] - mics[:, None, :], axis=-1)  # (M, G)
    delays = (dist[pairs[:, 1]] - dist[pairs[:, 0]]) / c * fs  # (P, G)
    max_lag = float(np.ceil(np.abs(delays).max())) + 1.0
    first, second, delays = xp.index(pairs[:, 0]), xp.index(pairs[:, 1]), xp.asarray(delays)
    out = xp.zeros((signals.shape[0], grid.shape[0]))
    for start in range(0, signals.shape[0], batch):
        x = xp.asarray(signals[start : start + batch])
        lags, cc = gcc_phat(x[:, first], x[:, second], max_lag=max_lag, interp=interp)  # (B, P, L)
        pos = (delays - lags[0]) * interp
        lo = xp.floor_int(pos)
        frac = pos - lo
        lo_vals = xp.take(cc, lo[None])
        hi_vals = xp.take(cc, lo[None] + 1)
        out[start : start + x.shape[0]] = ((1 - frac) * lo_vals + frac * hi_vals).sum(axis=1)
    return out


def srp_localize(signals: Array, mics: np.ndarray, grid: np.ndarray, fs: float, c: float,
                 **kwargs) -> np.ndarray:
    """Position ``(W, 3)`` of each window's SRP-PHAT map peak (found on the device of ``signals``).

    NaN for a flat map (signal on fewer than two microphones): it has no peak, and its arg-max,
    the grid's first point, would look like an estimate.
    """
    peak = array_ops(signals).host(peak_index(srp_phat_map(signals, mics, grid, fs, c, **kwargs)))
    return np.where(peak[:, None] < 0, np.nan, grid[np.maximum(peak, 0)])


def peak_index(maps: Array) -> Array:
    """Grid index ``(W,)`` of each map's peak, -1 for a flat map (signal on fewer than two microphones),
    whose arg-max, the grid's first point, is no estimate; NumPy, or torch on the maps' device."""
    xp = array_ops(maps)
    return xp.where(xp.amax(maps) <= -xp.amax(-maps), -1, xp.argmax(maps))
