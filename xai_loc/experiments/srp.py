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

from xai_loc.checks import check_integer, check_number, is_real
from xai_loc.errors import InputError
from xai_loc.experiments.gcc import array_ops, check_interp, gcc_phat

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


def _points(name: str, points, fewest: int, what: str) -> np.ndarray:
    """``points`` as a finite float64 array ``(N, 3)`` of at least ``fewest`` rows, else a one-line refusal."""
    try:
        array = np.asarray(points)
        given = f"{name} of shape {array.shape}"
    except (TypeError, ValueError):  # ragged rows, a tensor on a GPU
        array, given = np.empty(0), f"{name} of type {type(points).__name__}"
    if not (array.ndim == 2 and array.shape[0] >= fewest and array.shape[1] == 3 and array.dtype.kind in "iuf"):
        raise InputError(f"{given} is not allowed; give {what} as a NumPy array (N, 3) of metres, N >= {fewest}")
    if not np.isfinite(array).all():
        raise InputError(f"{given} holds NaN or infinite values; give finite {what} in metres")
    return array.astype(np.float64, copy=False)


def _checked_geometry(signals: Array, mics, grid, fs: float, c: float, interp: int,
                      batch: int) -> tuple[np.ndarray, np.ndarray]:
    """The microphone and candidate positions of :func:`srp_phat_map` as float64 arrays, after refusing (one
    line) the arguments that give no map."""
    shape = tuple(np.shape(signals))
    if len(shape) != 3:
        raise InputError(f"signals of shape {shape} are not allowed; give windows (W, M mics, T samples)")
    mics = _points("mics", mics, 2, "microphone positions")
    grid = _points("grid", grid, 1, "candidate points")
    if shape[1] != mics.shape[0]:
        raise InputError(f"signals of shape {shape} hold {shape[1]} microphones, mics {mics.shape[0]} positions; "
                         "give one position (a row of mics) per microphone (the signals' second axis)")
    check_number("fs", fs, strict=True)
    check_number("c", c, strict=True)
    check_interp(interp)
    check_integer("batch", batch, minimum=1)
    return mics, grid


def srp_phat_map(signals: Array, mics: np.ndarray, grid: np.ndarray, fs: float, c: float,
                 interp: int = 8, batch: int = 2) -> Array:
    """SRP-PHAT power ``(W, G)`` of windows ``(W, M, T)`` at candidate points ``(G, 3)``.

    All microphone pairs are used; correlations are read at the exact (fractional) pair
    delays by linear interpolation of a ``interp``-times upsampled GCC-PHAT. Windows in a
    torch tensor give the map as a float64 tensor on their device (the geometry stays NumPy).
    A window that holds a NaN or an infinity has an all-NaN map.

    Refused (one line, before any work): windows not ``(W, M, T)`` with ``M`` the number of rows of ``mics``;
    ``mics`` not a finite ``(M, 3)`` array with M >= 2; ``grid`` not a finite ``(G, 3)`` array with G >= 1;
    ``fs`` or ``c`` not finite and > 0; ``interp`` or ``batch`` (windows per step) not an integer >= 1.
    """
    mics, grid = _checked_geometry(signals, mics, grid, fs, c, interp, batch)
    xp = array_ops(signals)
    pairs = np.array(list(combinations(range(mics.shape[0]), 2)))
    dist = np.linalg.norm(grid[None, :, :] - mics[:, None, :], axis=-1)  # (M, G)
    delays = (dist[pairs[:, 1]] - dist[pairs[:, 0]]) / c * fs  # (P, G)
    max_lag = float(np.ceil(np.abs(delays).max())) + 1.0
    first, second, delays = xp.index(pairs[:, 0]), xp.index(pairs[:, 1]), xp.asarray(delays)
    out = xp.zeros((len(signals), grid.shape[0]))
    for start in range(0, len(signals), batch):
        x = xp.asarray(signals[start : start + batch])
        with np.errstate(invalid="ignore"):  # a NaN or an infinity: its map is NaN, said above
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

    NaN where the map has no peak (:func:`peak_index`): its arg-max, the grid's first point, would look like an
    estimate.
    """
    peak = array_ops(signals).host(peak_index(srp_phat_map(signals, mics, grid, fs, c, **kwargs)))
    return np.where(peak[:, None] < 0, np.nan, np.asarray(grid, dtype=np.float64)[np.maximum(peak, 0)])


def peak_index(maps: Array) -> Array:
    """Grid index ``(W,)`` of each map's peak; NumPy, or torch on the maps' device.

    -1 for a map without a peak, whose arg-max, the grid's first point, is no estimate: a flat map (signal on
    fewer than two microphones) and one holding a NaN or an infinity (a window that does).
    """
    xp = array_ops(maps)
    top, bottom = xp.amax(maps), -xp.amax(-maps)  # NaN where a map holds a NaN
    return xp.where((bottom < top) & (top < np.inf) & (bottom > -np.inf), xp.argmax(maps), -1)
