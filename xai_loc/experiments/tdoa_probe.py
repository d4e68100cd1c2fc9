"""The TDOA probe and the SRP comparison, with their baselines, as one labelled result.

Do relevance signals carry the inter-microphone delay better than the microphone signals?
(Comanducci, Antonacci & Sarti, EUSIPCO 2024, claim they do: the networks de-noise and
de-reverberate.) :func:`run_tdoa` answers per window and microphone pair with GCC-PHAT
delays from

- ``'signals'``: the microphone windows;
- ``<name>``: the relevance of each model (computed with :class:`~xai_loc.explain.Explainer`
  unless given);
- ``<name>-randomized``: the relevance of a randomized copy of each model (weights
  re-initialized, :func:`~xai_loc.experiments.baselines.randomized_copy`);
- any other relevance given by name (e.g. a stored one, or a hand-made control);
- ``'zero-lag'``: the constant estimator, 0 samples for every window;

scored against the geometric delay. An estimate is an anomaly when its error exceeds half
the correlation time of the pair's first microphone signal in that window (Champagne,
Bedard & Stephenne, 1996); the MAE in samples is over the other windows. The baselines are
there because a closely spaced pair cannot tell a real delay from a zero one: on pair
(7, 8) of the paper's array the true delays lie within +-2 samples while the threshold is
2-4 samples, so a relevance map that carries no delay at all still scores 0 % anomalies.
Report pairs of every spacing (``pairs='spread'``: 0.15 m ... 2.25 m). The paper's released
script differs (pair (6, 9), the dry utterance's correlation time at 0.5 of its peak, true
delays truncated to whole samples), so its TDOA table is not directly comparable with these.

The SRP comparison uses all microphones at once: the steered-response power (SRP-PHAT,
:func:`~xai_loc.experiments.srp.srp_phat_map`, all 120 pairs) over a horizontal grid
(0.05 m) covering the bounding box of the split's sources padded by 0.25 m, at their mean
height, from the microphone windows and from each relevance; the localization error of the
map peak is reported per window and as the mean absolute x and y errors and the mean
Euclidean error on the plane (metres; the height is not estimated). The constant estimator
of the SRP comparison, ``'constant'``, places every source at the centre of the grid.

Delays use a centred lag axis (:mod:`xai_loc.experiments.gcc`), searched within
``pair distance / c * fs + LAG_MARGIN`` samples. GCC-PHAT and the correlation time are
evaluated coarse-to-fine: a 4x-interpolated correlation locates the peak candidates (a
2x-interpolated one the main-lobe crossing), and the band-limited interpolation of
:func:`~xai_loc.experiments.gcc.gcc_phat` / :func:`~xai_loc.experiments.gcc.correlation_time`
is evaluated exactly on the fine grid around them, which gives their answers at a tenth of
the cost. That is on the CPU; with another ``device`` the delays, correlation times and SRP maps
are computed there in float64 with the full reference routines (their torch path), and only the
delays, thresholds and SRP peaks come back to the host. Every window is scaled to unit peak
before GCC-PHAT, so the spectral floor is relative (PHAT itself ignores scale): relevance a
million times smaller than the signals is treated alike.
"""
from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import numbers
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from xai_loc.checks import plain
from xai_loc.errors import InputError
from xai_loc.experiments.base import Experiment, latex_escape, markdown_row, markdown_text, method_seed
from xai_loc.experiments.baselines import zero_lag
from xai_loc.experiments.gcc import _next_pow2, array_ops, check_interp, check_max_lag
from xai_loc.experiments.tdoa import PAIR_SETS, parse_pairs, score, true_tdoa

if TYPE_CHECKING:
    from collections.abc import Mapping

    import xarray as xr
    from torch import nn

    from xai_loc.experiments.gcc import Array
    from xai_loc.experiments.modelset import ModelSet

__all__ = ["ESTIMATOR_SIGNALS", "ESTIMATOR_ZERO", "LAG_MARGIN", "SRP_CONSTANT", "TdoaExperiment", "explain_models",
           "fast_correlation_time", "fast_tdoa", "open_tdoa_results", "run_tdoa", "srp_grid", "tdoa_tables",
           "write_tdoa_results"]

#: Estimator names that are not relevance.
ESTIMATOR_SIGNALS = "signals"
ESTIMATOR_ZERO = "zero-lag"
SRP_CONSTANT = "constant"
#: Samples added to a pair's largest physical delay to get its lag search range.
LAG_MARGIN = 3.0
#: Factor of the coarse interpolation of the correlation-time search (the peak search takes
#: :func:`_peak_coarse`), and how many coarse local maxima the peak search refines.
_COARSE = 2
_CANDIDATES = 4
#: File names written by :func:`write_tdoa_results`.
RESULT_FILES = {"store": "tdoa.nc", "markdown": "tdoa.md", "csv": "tdoa.csv", "latex": "tdoa.tex",
                "srp_csv": "srp.csv", "srp_latex": "srp.tex"}
#: The files of the SRP comparison: its tables and its figure (``srp.png``/``.pdf``, drawn by
#: :mod:`xai_loc.plots.redraw`).
SRP_FILES = (RESULT_FILES["srp_csv"], RESULT_FILES["srp_latex"], "srp.png", "srp.pdf")


# --------------------------------------------------------------------------------------
# coarse-to-fine GCC-PHAT and correlation time
# --------------------------------------------------------------------------------------

def _weights(n: int, m: int) -> np.ndarray:
    """Weights of the bins of an ``n``-point rfft spectrum in ``irfft(X, m)``, ``m >= n`` (``n`` even): 1, 2, 2, ...,
    and the last (Nyquist) bin 1 where ``m == n``, 2 where it is zero-padded."""
    w = np.full(n // 2 + 1, 2.0)
    w[0] = 1.0
    if m == n:
        w[-1] = 1.0
    return w


def _unit_peak(x: Array) -> Array:
    """Windows ``(W, ..., T)`` scaled to a peak magnitude of 1 (all-zero windows stay zero), in
    float64: NumPy on the host, a torch tensor on its device."""
    xp = array_ops(x)
    x = xp.asarray(x)
    flat = abs(x.reshape(x.shape[0], int(np.prod(x.shape[1:]))))  # an explicit size: W may be 0
    peak = xp.amax(flat) if flat.shape[1] else xp.zeros(x.shape[0])
    peak = xp.where(peak > 0, peak, 1.0)
    return x / peak.reshape((-1,) + (1,) * (x.ndim - 1))


def _phat_spectra(x: np.ndarray, n: int) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # an infinity: a spectrum that is not finite, answered with NaN
        return np.fft.rfft(np.asarray(x, dtype=np.float64), n)


def _peak_lags(f1: np.ndarray, f2: np.ndarray, n: int, max_lag: float, interp: int, eps: float = 1e-12) -> np.ndarray:
    """GCC-PHAT delay of the signals with spectra ``f2`` vs ``f1`` ``(B, K)``: as :func:`gcc.tdoa` (NaN where a
    signal is all zero or not finite: its spectrum is zero or not finite); a single spectrum pairs with every other."""
    f1, f2 = np.broadcast_arrays(f1, f2)
    usable = f1.any(axis=1) & f2.any(axis=1) & np.isfinite(f1).all(axis=1) & np.isfinite(f2).all(axis=1)
    out = np.full(f1.shape[0], np.nan)
    if usable.any():
        out[usable] = _peaks(f1[usable], f2[usable], n, max_lag, interp, eps)
    return out


def _peak_coarse(interp: int) -> int:
    """Coarse interpolation of the peak search: the smallest divisor of ``interp`` from 3 (a step of at most a
    third of a sample), or ``interp`` itself (the search is then exact)."""
    return next((d for d in range(3, interp) if interp % d == 0), interp)


@functools.lru_cache(maxsize=4)
def _fine_tables(n: int, coarse: int, interp: int) -> tuple[np.ndarray, torch.Tensor]:
    """The phase of every coarse lag ``(n coarse,)`` and the weighted steering of the fine offsets around a coarse
    lag ``(K, L)`` in the peak search; shared between calls, not to be modified."""
    m_c, r = n * coarse, interp // coarse
    k = np.arange(n // 2 + 1)
    roots = np.exp(2j * np.pi * np.arange(m_c) / m_c)
    roots.flags.writeable = False
    steer = _weights(n, n * interp)[:, None] * np.exp(2j * np.pi * np.outer(k, np.arange(-r, r + 1)) / (n * interp))
    return roots, torch.from_numpy(steer)


def _peaks(f1: np.ndarray, f2: np.ndarray, n: int, max_lag: float, interp: int, eps: float) -> np.ndarray:
    """The peak lags of :func:`_peak_lags` (of usable signals), within ``max_lag`` and below ``n / 2``."""
    cross = f2 * np.conj(f1)
    cross /= np.maximum(np.abs(cross), eps)
    coarse = _peak_coarse(interp)
    m_c = n * coarse
    inside = min(int(np.floor(max_lag * coarse + 1e-9)), m_c // 2 - 1)  # the last coarse lag within max_lag
    # one coarse sample past the range tells whether the correlation still rises at its edge
    half = min(inside + (coarse != interp), m_c // 2 - 1)
    cc = np.fft.irfft(cross, m_c)
    window = np.concatenate([cc[:, m_c - half:], cc[:, : half + 1]], axis=1) if half else cc[:, :1]
    if coarse == interp:
        return (np.argmax(window, axis=1) - half) / interp
    # refine around the coarse local maxima with the highest parabolic peak estimate (a lower coarse sample can
    # sit on a higher lobe), each moved inside the range (its fine grid then covers the edge and the coarse
    # step before it)
    padded = np.pad(window, ((0, 0), (1, 1)), constant_values=-np.inf)
    left, right = padded[:, :-2], padded[:, 2:]
    is_peak = (window >= left) & (window >= right)
    left, right = np.where(np.isfinite(left), left, window), np.where(np.isfinite(right), right, window)
    curvature = 2 * window - left - right
    estimate = window + (right - left) ** 2 / (8 * np.where(curvature > 0, curvature, np.inf))
    top = min(_CANDIDATES, window.shape[1])
    best = np.argpartition(np.where(is_peak, -estimate, np.inf), top - 1, axis=1)[:, :top] - half
    best = np.clip(best, -inside, inside)  # (B, C) coarse lag units
    r = interp // coarse
    k = np.arange(cross.shape[1])
    roots, steer = _fine_tables(n, coarse, interp)
    lags = (best[:, :, None] * r + np.arange(-r, r + 1)).reshape(best.shape[0], -1)  # fine units, (B, C * L)
    base = roots[np.multiply.outer(best, k) % m_c]  # (B, C, K) = exp(2 pi i k best r / m), by lookup
    # torch's matmul follows torch's thread setting (numpy's BLAS may spin extra threads beside torch)
    fine = torch.from_numpy((cross[:, None, :] * base).reshape(-1, k.size)) @ steer
    fine = fine.real.numpy().reshape(lags.shape)
    fine[(np.abs(lags) > max_lag * interp + 1e-9) | (np.abs(lags) >= n * interp // 2)] = -np.inf  # as gcc_phat
    # ties (overlapping candidates) resolve to the most negative lag, as np.argmax does on the full axis
    order = np.argsort(lags, axis=1, kind="stable")
    lags = np.take_along_axis(lags, order, 1)
    fine = np.take_along_axis(fine, order, 1)
    return lags[np.arange(lags.shape[0]), np.argmax(fine, axis=1)] / interp


def fast_tdoa(x1: np.ndarray, x2: np.ndarray, max_lag: float, interp: int = 16) -> np.ndarray:
    """GCC-PHAT delay ``(W,)`` of ``x2`` relative to ``x1`` ``(W, T)``, in samples.

    The answer of :func:`xai_loc.experiments.gcc.tdoa` (same centred lag axis, same
    band-limited interpolation, same ``max_lag`` window) found coarse-to-fine: the highest
    local maxima of a correlation interpolated by :func:`_peak_coarse` (4x for ``interp`` 16),
    then the fine grid within one coarse step of each.
    """
    check_max_lag(max_lag)
    check_interp(interp)
    x1 = np.atleast_2d(np.asarray(x1, dtype=np.float64))
    x2 = np.atleast_2d(np.asarray(x2, dtype=np.float64))
    n = _next_pow2(x1.shape[-1] + x2.shape[-1])
    return _peak_lags(_phat_spectra(x1, n), _phat_spectra(x2, n), n, float(max_lag), int(interp))


def fast_correlation_time(x: np.ndarray, interp: int = 16) -> np.ndarray:
    """Correlation time ``(W,)`` of windows ``(W, T)``, in samples, as :func:`gcc.correlation_time`.

    The main-lobe crossing of ``1/sqrt(2)`` is located on a 2x-interpolated
    autocorrelation and refined on the fine grid between the two coarse samples around it.
    """
    from xai_loc.experiments.gcc import correlation_time

    check_interp(interp)
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    n = _next_pow2(2 * x.shape[-1])
    power = np.abs(np.fft.rfft(x, n)) ** 2
    level = 1.0 / np.sqrt(2.0)
    coarse = _COARSE if interp % _COARSE == 0 else 1
    r_c = np.fft.irfft(power, n * coarse)[:, : n * coarse // 2]
    r_c = r_c / np.maximum(r_c[:, :1], 1e-300)
    below = r_c < level
    idx_c = np.argmax(below, axis=1)
    ok = below.any(axis=1) & (idx_c >= 1) & (power.sum(axis=1) > 0)
    out = np.empty(x.shape[0])
    if (~ok).any():  # degenerate rows (silence, no crossing): the reference routine
        out[~ok] = correlation_time(x[~ok], interp=interp)
    if ok.any():
        r = interp // coarse
        p = power[ok]
        k = np.arange(p.shape[1])
        w = _weights(n, n * interp) * p  # (B, K)
        start = (idx_c[ok] - 1) * r - 1  # one fine step before the last coarse sample above
        offsets = np.arange(r + 2)
        lags = np.maximum(start[:, None] + offsets[None, :], 0)  # fine units, (B, r + 2)
        m = n * interp
        vals = np.einsum("bk,bkl->bl", w, np.cos(2 * np.pi * k[None, :, None] * lags[:, None, :] / m))
        vals = vals / w.sum(axis=1, keepdims=True)
        first = np.argmax(vals < level, axis=1)
        first = np.maximum(first, 1)
        rows = np.arange(lags.shape[0])
        hi, lo = vals[rows, first - 1], vals[rows, first]
        frac = (hi - level) / np.maximum(hi - lo, 1e-300)
        out[ok] = 2.0 * (lags[rows, first] - 1 + frac) / interp
    return out


# --------------------------------------------------------------------------------------
# the estimators on a block of windows: NumPy on the host, torch on a device
# --------------------------------------------------------------------------------------

#: Windows per SRP-PHAT map batch on a device (120 pairs of 16 mics at srp_interp 4: ~0.2 GB a window).
_SRP_DEVICE_BATCH = 8


def _estimation_device(device: str | torch.device) -> torch.device | None:
    """Where :func:`run_tdoa` estimates delays and SRP maps: ``None`` (NumPy, on the host) for the CPU.

    On CPU cores the coarse-to-fine NumPy search (:func:`fast_tdoa`, :func:`fast_correlation_time`)
    is faster than the full interpolated correlation in torch (2.4 times for 8 windows x 15 pairs
    on one thread); on an accelerator the full correlation of :mod:`~xai_loc.experiments.gcc` is
    cheap, and the relevance need not come back to the host (issue 18).
    """
    device = torch.device(device)
    return None if device.type == "cpu" else device


def _on(values: Any, device: torch.device) -> torch.Tensor:
    """``values`` (NumPy from a store or an explainer, or a tensor) as a tensor on ``device``."""
    if isinstance(values, torch.Tensor):
        return values.to(device)
    values = np.asarray(values)
    return torch.from_numpy(values if values.flags.writeable else values.copy()).to(device)


class _BlockEstimates:
    """Thresholds ``(P, B)``, delays ``(E, P, B)`` and SRP peak grid indices (-1: a flat map) of a block of windows.

    ``device`` ``None`` computes in NumPy (coarse-to-fine); a torch device computes there with
    the reference routines of :mod:`~xai_loc.experiments.gcc` and :mod:`~xai_loc.experiments.srp`
    and brings back only these small results. Both give the same numbers up to float rounding (the
    coarse-to-fine delays matched the full search on all of 124 000 test windows of white, low-pass,
    random-walk and sparse signals).
    """

    def __init__(self, pairs: list[tuple[int, int]], max_lag: np.ndarray, interp: int, n_time: int,
                 device: torch.device | None, srp_names: list[str], mics: np.ndarray, grid: np.ndarray | None,
                 fs: float, c: float, srp_interp: int) -> None:
        self.pairs, self.max_lag, self.interp, self.device = pairs, max_lag, interp, device
        self.pair_i = np.array([i for i, _ in pairs])
        self.first_mics = np.unique(self.pair_i)
        self.used_mics = np.unique([m for pair in pairs for m in pair])
        self.nfft = _next_pow2(2 * n_time)
        self.srp_names, self.mics, self.grid, self.fs, self.c, self.srp_interp = \
            srp_names, mics, grid, fs, c, srp_interp

    def __call__(self, sets: dict[str, Any], names: list[str], rows: np.ndarray,
                 where: str) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Estimates of the ``names`` in ``sets`` (``'signals'`` among them), SRP on windows ``rows``."""
        if self.device is None:
            return self._host(sets, names, rows, where)
        return self._on_device(sets, names, rows, where)

    def _host(self, sets: dict[str, Any], names: list[str], rows: np.ndarray,
              where: str) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        from xai_loc.experiments.srp import peak_index, srp_phat_map

        x = sets[ESTIMATOR_SIGNALS]
        # threshold: half the correlation time of each pair's first microphone signal
        ct = {int(m): fast_correlation_time(x[:, m], interp=self.interp) for m in self.first_mics}
        threshold = 0.5 * np.stack([ct[int(i)] for i in self.pair_i])
        delay = np.zeros((len(names), len(self.pairs), x.shape[0]))
        peaks = {}
        for e, name in enumerate(names):
            values = sets[name]
            if not np.isfinite(values).all():
                raise InputError(f"relevance {name!r} has NaN or infinite values in windows {where}")
            scaled = _unit_peak(values)
            spectra = {int(m): _phat_spectra(scaled[:, m], self.nfft) for m in self.used_mics}
            for p, (i, j) in enumerate(self.pairs):
                delay[e, p] = _peak_lags(spectra[i], spectra[j], self.nfft, float(self.max_lag[p]), self.interp)
            if name in self.srp_names and rows.any():
                maps = srp_phat_map(scaled[rows], self.mics, self.grid, self.fs, self.c, interp=self.srp_interp,
                                    batch=2)
                peaks[name] = peak_index(maps)
        return threshold, delay, peaks

    def _on_device(self, sets: dict[str, Any], names: list[str], rows: np.ndarray,
                   where: str) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        from xai_loc.experiments.gcc import correlation_time, tdoa
        from xai_loc.experiments.srp import peak_index, srp_phat_map

        x = _on(sets[ESTIMATOR_SIGNALS], self.device)
        # one microphone at a time: a correlation at full interpolation is B x 16 x 2 T float64 values
        ct = torch.stack([correlation_time(x[:, int(m)], interp=self.interp) for m in self.first_mics])
        threshold = 0.5 * ct[_on(np.searchsorted(self.first_mics, self.pair_i), self.device)]
        rows_on = _on(rows, self.device)
        delay, peaks = [], {}
        for name in names:
            values = x if name == ESTIMATOR_SIGNALS else _on(sets[name], self.device)
            if not bool(torch.isfinite(values).all()):
                raise InputError(f"relevance {name!r} has NaN or infinite values in windows {where}")
            scaled = _unit_peak(values)
            delay.append(torch.stack([tdoa(scaled[:, i], scaled[:, j], max_lag=float(self.max_lag[p]),
                                           interp=self.interp) for p, (i, j) in enumerate(self.pairs)]))
            if name in self.srp_names and rows.any():
                maps = srp_phat_map(scaled[rows_on], self.mics, self.grid, self.fs, self.c, interp=self.srp_interp,
                                    batch=_SRP_DEVICE_BATCH)
                peaks[name] = peak_index(maps)
        return (threshold.cpu().numpy(), torch.stack(delay).cpu().numpy(),
                {name: index.cpu().numpy() for name, index in peaks.items()})


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------

def _open_data(data: Any) -> tuple[xr.Dataset, str]:
    import xarray as xr

    from xai_loc.data.store import open_signals

    if isinstance(data, (str, os.PathLike)):
        return open_signals(data), os.path.abspath(data)  # absolute: the report finds the store from anywhere
    if isinstance(data, xr.Dataset):
        if "signals" not in data:
            raise InputError("the dataset has no 'signals' variable; open one with xai_loc.data.open_signals")
        return data, str(data.encoding.get("source", "") or "in memory")
    raise InputError(f"data of type {type(data).__name__} is not allowed; use a dataset store path or "
                     "a Dataset from xai_loc.data.open_signals")


def srp_grid(positions: np.ndarray, step: float = 0.05, pad: float = 0.25) -> dict[str, Any]:
    """The SRP search plane: the bounding box of ``positions`` padded by ``pad`` m (finite, >= 0), at their
    mean height, on a grid of ``step`` m (finite, > 0).

    Returns a dict with ``grid`` ``(G, 3)``, ``x_range``, ``y_range``, ``z``, ``step`` and
    ``centre`` (x, y of the grid centre: the constant estimator's answer).
    """
    from xai_loc.checks import check_number
    from xai_loc.experiments.srp import plane_grid

    step = check_number("srp_step", step, strict=True)
    pad = check_number("srp_pad", pad)
    lo = positions[:, :2].min(axis=0) - pad
    hi = positions[:, :2].max(axis=0) + pad
    z = float(positions[:, 2].mean())
    grid = plane_grid((lo[0], hi[0]), (lo[1], hi[1]), z, step)
    centre = lo / 2 + hi / 2
    return {"grid": grid, "x_range": [float(lo[0]), float(hi[0])], "y_range": [float(lo[1]), float(hi[1])],
            "z": z, "step": float(step), "centre": centre}


def _area_positions(ds: xr.Dataset, positions: np.ndarray) -> tuple[np.ndarray, str]:
    """Source positions that define the SRP search area, and where they come from.

    The sources of the data's whole split in its scene (so that a store of the first few
    sources searches the same area as the full split), else the data's own positions.
    """
    with contextlib.suppress(KeyError, ValueError, TypeError, IndexError):
        scene = json.loads(ds.attrs["scene"])
        split = ds.attrs["split"]
        sources = np.asarray(scene["sources"], dtype=np.float64)
        ids = np.arange(len(sources)) if split == "all" else np.asarray(scene["splits"][split], dtype=np.int64)
        if ids.size and sources.ndim == 2 and sources.shape[1] == 3:
            return sources[ids], f"scene {scene.get('name', '?')!s}, split {split}"
    return positions, "data"


def _pair_list(pairs: str | list[tuple[int, int]], n_mics: int) -> list[tuple[int, int]]:
    """Pairs from a name or spec (:func:`~xai_loc.experiments.tdoa.parse_pairs`) or a list of ``(i, j)``, which
    passes the same checks (microphones in range and distinct, each pair once)."""
    if isinstance(pairs, str):
        return parse_pairs(pairs, n_mics)
    try:
        items = [tuple(p) for p in pairs]
    except TypeError:
        raise InputError(f"pairs={pairs!r} is not allowed; use a list of (i, j), a spec like 7-8,0-15 or one "
                         f"of {', '.join(PAIR_SETS)}") from None
    for pair in items:
        if len(pair) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))
                                     and 0 <= v < n_mics for v in pair):
            raise InputError(f"pair {pair!r} is not allowed; use (i, j) with microphones 0..{n_mics - 1}")
    return parse_pairs(",".join(f"{i}-{j}" for i, j in items), n_mics) if items else []


#: Per-window coords of the data that relevance handed in must carry alike where it has them.
_GIVEN_LABELS = ("source_id", "window_index")


class _Given:
    """Relevance handed in by the caller, read block by block in the data's window order.

    ``data`` holds the data's ``dataset_digest`` (or None) and its :data:`_GIVEN_LABELS` of the windows scored: a
    relevance array of other data (another digest, or other sources or windows under the same window labels) is
    refused.
    """

    def __init__(self, name: str, relevance: Any, windows: np.ndarray, n_total: int, shape: tuple[int, int],
                 data: dict[str, Any]) -> None:
        import xarray as xr

        self.name = name
        self.attrs: dict[str, Any] = {}
        if isinstance(relevance, xr.DataArray):
            if relevance.dims != ("window", "mic", "time"):
                raise InputError(f"relevance {name!r} has dims {relevance.dims}; use (window, mic, time)")
            self.attrs = dict(relevance.attrs)
            found = self.attrs.get("dataset_digest")
            if found is not None and data["dataset_digest"] is not None and str(found) != data["dataset_digest"]:
                raise InputError(f"relevance {name!r} was computed on other data (dataset_digest {found!r}, this "
                                 f"data's is {data['dataset_digest']!r}); explain this data")
            if "window" in relevance.coords:
                index = relevance.indexes["window"].get_indexer(windows)
                if (index < 0).any():
                    missing = windows[np.argmax(index < 0)]
                    raise InputError(f"relevance {name!r} lacks window {missing} of the data; "
                                     "explain the same data (or pass max_windows)")
            else:
                if relevance.shape[0] != n_total:
                    raise InputError(f"relevance {name!r} has {relevance.shape[0]} windows and no window coord; "
                                     f"use one per window of the data ({n_total}) or a window coord")
                index = np.arange(len(windows))
            for coord in _GIVEN_LABELS:
                if coord in relevance.coords and data.get(coord) is not None:
                    found, wanted = np.asarray(relevance[coord].values)[index], data[coord]
                    if not np.array_equal(found, wanted):
                        w = int(np.argmax(found != wanted))
                        raise InputError(f"relevance {name!r} has {coord} {plain(found[w])!r} at window "
                                         f"{plain(windows[w])!r}, where the data has {plain(wanted[w])!r}; "
                                         "explain this data")
            self.array, self.index = relevance, index
        else:
            array = np.asarray(relevance)
            if array.ndim != 3 or array.shape[0] != n_total:
                raise InputError(f"relevance {name!r} of shape {array.shape} is not allowed; "
                                 f"use [{n_total}, {shape[0]}, {shape[1]}] (window, mic, time)")
            self.array, self.index = array, np.arange(len(windows))
        if tuple(self.array.shape[1:]) != tuple(shape):
            raise InputError(f"relevance {name!r} has {self.array.shape[1]} mics x {self.array.shape[2]} samples; "
                             f"the data has {shape[0]} x {shape[1]}")

    def block(self, start: int, stop: int) -> np.ndarray:
        idx = self.index[start:stop]
        if isinstance(self.array, np.ndarray):
            return self.array[idx]
        if np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
            return np.asarray(self.array[idx[0] : idx[0] + len(idx)].values)
        return np.asarray(self.array.isel(window=idx).values)


_PROVENANCE_KEYS = ("model", "model_digest", "checkpoint", "checkpoint_digest", "model_condition", "method",
                    "composite", "composite_params", "target", "target_params", "relevance_fraction",
                    "input_dependence")


def _provenance(attrs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key in _PROVENANCE_KEYS:
        if key in attrs:
            value = attrs[key]
            out[key] = value.tolist() if isinstance(value, np.ndarray) else value
    return out


def _check_given(name: str, attrs: dict[str, Any], expected: dict[str, Any]) -> None:
    """Given relevance of a model must be of that model, method, composite and target."""
    for key, value in expected.items():
        found = attrs.get(key)
        if key == "first_rule":
            with contextlib.suppress(ValueError, TypeError):
                found = json.loads(attrs.get("composite_params", "{}")).get("first_rule")
        if found is not None and value is not None and str(found) != str(value):
            raise InputError(f"relevance {name!r} was computed with {key} {found!r}, not {value!r}; "
                             "explain again or pass matching options")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# --------------------------------------------------------------------------------------
# the experiment
# --------------------------------------------------------------------------------------

def run_tdoa(
    models: ModelSet | Mapping[str, nn.Module | str | os.PathLike] | None,
    data: Any,
    pairs: str | list[tuple[int, int]] = "spread",
    relevance: dict[str, Any] | None = None,
    method: str = "lrp",
    composite: str = "paper",
    target: str = "truth",
    first_rule: str | None = None,
    randomized_baseline: bool = True,
    seed: int = 0,
    batch_size: int = 16,
    device: str = "cpu",
    max_windows: int | None = None,
    progress: bool = False,
    *,
    interp: int = 16,
    srp: bool = True,
    srp_step: float = 0.05,
    srp_pad: float = 0.25,
    srp_interp: int = 4,
    srp_max_windows: int | None = None,
    **explain_options: Any,
) -> xr.Dataset:
    """GCC-PHAT delays per window and pair from signals, relevance and baselines, scored.

    Parameters
    ----------
    models
        A :class:`~xai_loc.experiments.modelset.ModelSet` (or estimator name -> localizer or
        checkpoint path, loaded once here). Each is explained on the data (unless
        ``relevance`` holds its relevance) and, with ``randomized_baseline``, so is its
        randomized copy (``'<name>-randomized'``, :meth:`ModelSet.randomized
        <xai_loc.experiments.modelset.ModelSet.randomized>`).
    data
        A dataset store path or a Dataset from :func:`xai_loc.data.open_signals`
        (a selection of one is fine).
    pairs
        A pair set name ('spread', 'adjacent', 'all'), a spec like ``'7-8,0-15'``, or a
        list of ``(i, j)``.
    relevance
        Estimator name -> relevance ``(window, mic, time)`` (a DataArray, e.g. from
        :func:`~xai_loc.explain.open_relevance`, aligned on its ``window`` coord; or an
        array over all windows of ``data``). A model's name (or ``'<name>-randomized'``)
        replaces its explanation; other names are extra estimators. A DataArray of other data (its
        ``dataset_digest`` attr, or its ``source_id`` or ``window_index`` on the windows scored, not the
        data's) is refused.
    method, composite, target, first_rule, **explain_options
        How relevance is computed (:func:`~xai_loc.explain.explain`); ``first_rule``
        ('wsquare', 'flat', 'zplus', 'epsilon', 'gamma', 'zbox') is the LRP rule of the
        first layer (default: the composite's). A ``'mean'`` baseline or reference is the mean
        of the windows of ``data`` (all of them, also with ``max_windows``), as for
        :func:`~xai_loc.explain.explain_store`.
    randomized_baseline
        Also score the relevance of a randomized copy of each model.
    seed
        An integer >= 0; seeds the randomized copies and the method's own draws
        (:func:`~xai_loc.experiments.base.method_seed`; recorded in ``explain_options``).
    batch_size, device, progress
        Windows per block and forward pass; torch device of the explanations and, when not
        the CPU, of the delay, correlation-time and SRP estimation too; progress bar.
    max_windows
        Only the first ``max_windows`` windows of ``data``.
    interp
        Interpolation factor of the GCC-PHAT lag axis (1/16 sample by default).
    srp, srp_step, srp_pad, srp_interp
        Run the SRP comparison on a plane grid of ``srp_step`` m over the sources' bounding
        box padded by ``srp_pad`` m, at their mean height (the sources of the data's whole
        split in its scene, e.g. the paper's 0.5 x 0.5 m test square even for a store of
        its first few sources; else the data's own); ``srp_interp`` is the correlation
        interpolation of :func:`~xai_loc.experiments.srp.srp_phat_map`.
    srp_max_windows
        SRP on at most this many windows, evenly spaced (the SRP maps cost about 0.08 s
        per window and estimator on one CPU core); others get NaN peaks.

    Returns
    -------
    xarray.Dataset
        Dims ``estimator``, ``pair``, ``window`` (and ``srp_estimator``, ``srp_metric``,
        ``plane`` with ``srp``). Variables: ``delay`` (estimator, pair, window) and
        ``truth`` and ``threshold`` (pair, window) in samples; ``anomalies_percent`` and
        ``mae_samples`` (estimator, pair); ``srp_peak`` (srp_estimator, window, plane; NaN for a flat map),
        ``srp_error`` (srp_estimator, srp_metric: 'x', 'y', 'euclidean'; metres; a flat map
        scored at the constant guess) and ``srp_flat`` (srp_estimator: how many maps were flat). Coords
        ``estimator_kind``, ``mic_i``, ``mic_j``, ``pair_distance`` (m), ``max_lag``
        (samples), per-window ``source_id``, ``window_index``, ``source_x/y/z``. Attrs:
        provenance (models and digests, method, composite, first rule, target, T60, SNR,
        data, seed, versions).
    """
    import xarray as xr

    from xai_loc import __version__
    from xai_loc.checks import check_integer
    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.explain.attribute import Explainer, dataset_inputs, experiment_inputs
    from xai_loc.progress import tqdm
    from xai_loc.runtime import software_versions

    ds, data_label = _open_data(data)
    d = dataset_inputs(ds)
    signals = d["signals"]
    n_total, n_mics, n_time = signals.shape
    if d["positions"] is None or d["mics"] is None:
        raise InputError("the data needs source_position and mic_position to give true delays")
    if max_windows is not None:
        max_windows = check_integer("max_windows", max_windows, minimum=1)
    batch_size = check_integer("batch_size", batch_size, minimum=1)
    interp = check_integer("interp", interp, minimum=1)
    srp_interp = check_integer("srp_interp", srp_interp, minimum=1)
    if srp_max_windows is not None:
        check_integer("srp_max_windows", srp_max_windows, minimum=1)
    check_integer("seed", seed)
    n = n_total if max_windows is None else min(max_windows, n_total)
    if n == 0:
        raise InputError("the data holds no windows")
    window_labels = np.asarray(ds["window"].values[:n])
    positions = np.asarray(d["positions"][:n], dtype=np.float64)
    mics = np.asarray(d["mics"], dtype=np.float64)
    fs = float(d["fs"])
    c = float(ds.attrs.get("c", 343.0))

    pair_list = _pair_list(pairs, n_mics)
    if not pair_list:
        raise InputError("no microphone pairs given; use 7-8, adjacent, spread or all")
    pair_i = np.array([p[0] for p in pair_list])
    pair_j = np.array([p[1] for p in pair_list])
    distance = np.linalg.norm(mics[pair_j] - mics[pair_i], axis=-1)
    max_lag = distance / c * fs + LAG_MARGIN

    # ---- estimators
    models = ModelSet.of(models)
    models.check_recording(fs, mics, "the store")
    relevance = dict(relevance or {})
    options = {**explain_options, **method_seed(method, seed)}
    if first_rule is not None:
        options["first_rule"] = first_rule
    inputs, options, recorded = experiment_inputs(d, options)
    explain_kw = {"target": target, "method": method, "composite": composite, "batch_size": batch_size,
                  "device": device, **inputs, **options}
    estimators: list[str] = [ESTIMATOR_SIGNALS]
    kinds: dict[str, str] = {ESTIMATOR_SIGNALS: "signals"}
    explainers: dict[str, Explainer] = {}
    given: dict[str, _Given] = {}
    info: dict[str, dict[str, Any]] = {}
    reserved = {ESTIMATOR_SIGNALS, ESTIMATOR_ZERO, SRP_CONSTANT}
    for name in [*models, *relevance]:
        if name in reserved:
            raise InputError(f"estimator name {name!r} is reserved; choose another name")

    given_data = {"dataset_digest": d["attrs"].get("dataset_digest"),
                  **{coord: d["coords"][coord][1][:n] for coord in _GIVEN_LABELS if coord in d["coords"]}}

    def add_given(name: str, kind: str, expected: dict[str, Any]) -> None:
        g = _Given(name, relevance[name], window_labels, n_total, (n_mics, n_time), given_data)
        _check_given(name, g.attrs, expected)
        given[name] = g
        info[name] = {**_provenance(g.attrs), "relevance": "given"}
        estimators.append(name)
        kinds[name] = kind

    for name in models:
        if name.endswith("-randomized"):
            raise InputError(f"model name {name!r} is not allowed; '-randomized' names the baselines")
        digest = models.provenance(name)["model_digest"]
        expected = {"model_digest": digest, "method": method, "target": target,
                    "composite": composite if method == "lrp" else None, "first_rule": first_rule}
        if name in relevance:
            add_given(name, "relevance", expected)
        else:
            ex = models.explainer(name, **explain_kw)
            explainers[name] = ex
            info[name] = {**_provenance(ex.attrs), "relevance": "explained"}
            estimators.append(name)
            kinds[name] = "relevance"
        rname = f"{name}-randomized"
        if rname in relevance:
            add_given(rname, "randomized", {"model_digest": models.randomized_provenance(name, seed)["model_digest"],
                                             "method": method, "target": target,
                                             "composite": composite if method == "lrp" else None,
                                             "first_rule": first_rule})
            info[rname].update(randomized_seed=seed, randomized_from=digest)
        elif randomized_baseline:
            rex = models.explainer(name, randomized_seed=seed, **explain_kw)
            explainers[rname] = rex
            info[rname] = {**_provenance(rex.attrs), "relevance": "explained", "randomized_seed": seed,
                           "randomized_from": digest}
            estimators.append(rname)
            kinds[rname] = "randomized"
    for name in relevance:
        if name in given:
            continue
        add_given(name, "randomized" if name.endswith("-randomized") else "relevance", {})
    estimators.append(ESTIMATOR_ZERO)
    kinds[ESTIMATOR_ZERO] = "constant"
    for ex in explainers.values():
        if ex.target.needs_truth and positions is None:
            raise InputError(f"target {target!r} needs the true source positions")
        shape = getattr(ex.model, "input_shape", None)
        if shape is not None and tuple(shape) != (n_mics, n_time):
            raise InputError(f"windows of {n_mics} mics x {n_time} samples do not fit the model; "
                             f"it takes {shape[0]} x {shape[1]}")

    # ---- SRP set-up
    srp_names = [e for e in estimators if e != ESTIMATOR_ZERO]
    if srp:
        area_positions, area_from = _area_positions(ds, positions)
        plane = srp_grid(area_positions, srp_step, srp_pad)
        if srp_max_windows is None or srp_max_windows >= n:
            srp_rows = np.ones(n, dtype=bool)
        else:
            srp_rows = np.zeros(n, dtype=bool)
            srp_rows[np.unique(np.linspace(0, n - 1, srp_max_windows).round().astype(int))] = True
        srp_peak = np.full((len(srp_names) + 1, n, 2), np.nan)
        srp_peak[-1, srp_rows] = plane["centre"]

    # ---- the pass over windows
    truth = np.stack([true_tdoa(positions, mics, p, fs, c) for p in pair_list])  # (P, W)
    delay = np.full((len(estimators), len(pair_list), n), np.nan)
    delay[estimators.index(ESTIMATOR_ZERO)] = zero_lag(n)  # the constant baseline; the others come per block
    threshold = np.zeros((len(pair_list), n))
    names = [e for e in estimators if e != ESTIMATOR_ZERO]
    on_device = _estimation_device(device)
    block_estimates = _BlockEstimates(pair_list, max_lag, interp, n_time, on_device,
                                      srp_names if srp else [], mics, plane["grid"] if srp else None, fs, c,
                                      srp_interp)
    summaries: dict[str, dict[str, list[np.ndarray]]] = {name: {} for name in explainers}

    with contextlib.ExitStack() as stack:
        for ex in explainers.values():
            stack.enter_context(ex)
        bar = stack.enter_context(tqdm(total=n, disable=not progress, desc="tdoa", unit="win"))
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            x = np.asarray(signals[start:stop].values)
            if not np.isfinite(x).all():
                raise InputError(f"windows {start}..{stop - 1} contain NaN or infinite samples; clean the data first")
            if on_device is not None:  # once, for the explainers and the estimators
                x = torch.from_numpy(x).to(on_device)
            sets: dict[str, Any] = {ESTIMATOR_SIGNALS: x}
            for name, ex in explainers.items():
                # on a device the relevance stays there for the estimators; the summaries come back
                out = ex.explain_batch(x, positions[start:stop], np.arange(start, stop), to_host=on_device is None)
                sets[name] = out["relevance"]
                for key in ("prediction", "relevance_sum", "explained"):
                    summaries[name].setdefault(key, []).append(torch.as_tensor(out[key]).cpu().numpy())
            for name, g in given.items():
                sets[name] = g.block(start, stop)
            rows = srp_rows[start:stop] if srp else np.zeros(stop - start, dtype=bool)
            block_threshold, block_delay, peaks = block_estimates(sets, names, rows, f"{start}..{stop - 1}")
            threshold[:, start:stop] = block_threshold
            delay[[estimators.index(name) for name in names], :, start:stop] = block_delay
            for name, index in peaks.items():
                # a flat map (relevance on fewer than two mics) has no peak: its arg-max, the grid's first point,
                # is no estimate
                srp_peak[srp_names.index(name), np.arange(start, stop)[rows]] = np.where(
                    (index >= 0)[:, None], plane["grid"][np.maximum(index, 0), :2], np.nan)
            bar.update(stop - start)
        zero_outputs = {name: ex.zero_output for name, ex in explainers.items()}

    from xai_loc.explain.attribute import summary_attrs

    for name, parts in summaries.items():
        joined = {k: np.concatenate(v) for k, v in parts.items()}
        info[name].update(summary_attrs(joined["prediction"], joined["relevance_sum"], joined["explained"],
                                        zero_outputs[name], explainers[name].attrs["target"]))

    # ---- scores
    anomalies = np.zeros((len(estimators), len(pair_list)))
    mae = np.zeros((len(estimators), len(pair_list)))
    for e in range(len(estimators)):
        for p in range(len(pair_list)):
            s = score(delay[e, p], truth[p], threshold[p])
            anomalies[e, p], mae[e, p] = s["anomalies_percent"], s["mae_samples"]

    coords: dict[str, Any] = {
        "estimator": ("estimator", np.array(estimators, dtype=str)),
        "estimator_kind": ("estimator", np.array([kinds[e] for e in estimators], dtype=str)),
        "pair": ("pair", np.array([f"{i}-{j}" for i, j in pair_list], dtype=str)),
        "mic_i": ("pair", pair_i.astype(np.int64)),
        "mic_j": ("pair", pair_j.astype(np.int64)),
        "pair_distance": ("pair", distance, {"units": "m"}),
        "max_lag": ("pair", max_lag, {"units": "samples"}),
        "window": ("window", window_labels),
        "source_x": ("window", positions[:, 0], {"units": "m"}),
        "source_y": ("window", positions[:, 1], {"units": "m"}),
        "source_z": ("window", positions[:, 2], {"units": "m"}),
    }
    for name in ("source_id", "window_index"):
        if name in ds.coords:
            coords[name] = ("window", np.asarray(ds[name].values[:n]))
    data_vars: dict[str, Any] = {
        "delay": (("estimator", "pair", "window"), delay,
                  {"units": "samples", "description": "GCC-PHAT delay of mic_j relative to mic_i (NaN: no "
                                                      "estimate, a signal of the pair is all zero; an anomaly)"}),
        "truth": (("pair", "window"), truth, {"units": "samples", "description": "geometric delay"}),
        "threshold": (("pair", "window"), threshold,
                      {"units": "samples", "description": "half the correlation time of the mic_i signal "
                                                          "(NaN: it is silent; the window is not scored)"}),
        "anomalies_percent": (("estimator", "pair"), anomalies,
                              {"units": "%", "description": "scored windows with |delay - truth| > threshold "
                                                            "or no delay"}),
        "mae_samples": (("estimator", "pair"), mae,
                        {"units": "samples", "description": "mean |delay - truth| over the other windows"}),
    }
    attrs: dict[str, Any] = {}
    if srp:
        names = [*srp_names, SRP_CONSTANT]
        coords["srp_estimator"] = ("srp_estimator", np.array(names, dtype=str))
        coords["srp_estimator_kind"] = ("srp_estimator", np.array([kinds.get(e, "constant") for e in names], dtype=str))
        coords["srp_metric"] = ("srp_metric", np.array(["x", "y", "euclidean"], dtype=str))
        coords["plane"] = ("plane", np.array(["x", "y"], dtype=str))
        # a flat map (relevance on fewer than two microphones) gives no estimate: it is scored at the
        # constant guess, so that every estimator's mean covers the same windows and abstaining is not rewarded
        flat = np.isnan(srp_peak[..., 0]) & srp_rows[None, :]
        scored_at = np.where(flat[..., None], plane["centre"], srp_peak)
        err = np.abs(scored_at - positions[None, :, :2])
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # no SRP windows: NaN means, said by srp_windows = 0
            srp_error = np.stack([np.nanmean(err[..., 0], axis=1), np.nanmean(err[..., 1], axis=1),
                                  np.nanmean(np.hypot(err[..., 0], err[..., 1]), axis=1)], axis=1)
        data_vars["srp_peak"] = (("srp_estimator", "window", "plane"), srp_peak,
                                 {"units": "m", "description": "SRP-PHAT map peak on the plane (NaN: not computed, "
                                                               "or a flat map: relevance on fewer than two mics)"})
        data_vars["srp_flat"] = (("srp_estimator",), flat.sum(axis=1),
                                 {"description": "SRP windows whose map was flat (no peak), scored at the constant "
                                                 "guess in srp_error"})
        data_vars["srp_error"] = (("srp_estimator", "srp_metric"), srp_error,
                                  {"units": "m", "description": "mean absolute x, y and Euclidean error of the "
                                                                "map peak on the plane over the SRP windows (a flat "
                                                                "map scored at the constant guess)"})
        attrs.update(srp_x_range=plane["x_range"], srp_y_range=plane["y_range"], srp_z=plane["z"],
                     srp_step=plane["step"], srp_pad=float(srp_pad), srp_interp=int(srp_interp),
                     srp_windows=int(srp_rows.sum()), srp_grid_points=int(plane["grid"].shape[0]),
                     srp_area_from=area_from)

    resolved_rule = first_rule
    for entry in info.values():
        if resolved_rule is None:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                resolved_rule = json.loads(entry.get("composite_params", "{}")).get("first_rule")
    attrs.update({
        "description": "TDOA probe: GCC-PHAT delays from microphone signals, relevance and baselines "
                       "(xai_loc.experiments.tdoa_probe)",
        "models": json.dumps(info, sort_keys=True, default=_json_default),
        "method": method,
        "composite": composite if method == "lrp" else "none",
        "first_rule": str(resolved_rule) if resolved_rule else "default",
        "target": target,
        "explain_options": json.dumps(recorded, sort_keys=True, default=_json_default),
        "randomized_baseline": int(bool(randomized_baseline)),
        "seed": int(seed),
        "pairs": pairs if isinstance(pairs, str) else ",".join(f"{i}-{j}" for i, j in pair_list),
        "interp": int(interp),
        "lag_margin": LAG_MARGIN,
        "data": data_label,
        "n_windows": int(n),
        "fs": fs,
        "c": c,
        "xai_loc_version": __version__,
        "software": json.dumps(software_versions(), sort_keys=True),
    })
    for key in ("t60", "snr", "split", "scene_digest"):
        if key in ds.attrs:
            attrs[key] = ds.attrs[key]
    if "config" in ds.attrs and "scene_digest" not in attrs:
        with contextlib.suppress(ValueError, TypeError):
            attrs["scene_digest"] = json.loads(ds.attrs["config"]).get("scene_digest", "")
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def explain_models(
    models: ModelSet | Mapping[str, nn.Module | str | os.PathLike],
    data: str | os.PathLike,
    *,
    method: str = "lrp",
    composite: str = "paper",
    target: str = "truth",
    first_rule: str | None = None,
    randomized_baseline: bool = True,
    seed: int = 0,
    batch_size: int = 16,
    device: str = "cpu",
    progress: bool = False,
    **options: Any,
) -> dict[str, xr.DataArray]:
    """Relevance stores (resumable, reused when they match) of models and their randomized copies.

    Each model ``name`` of ``models`` (a :class:`~xai_loc.experiments.modelset.ModelSet`, or
    ``{name: localizer or checkpoint path}``) and its randomized copy (seed ``seed``, which seeds the
    method's own draws too: :func:`~xai_loc.experiments.base.method_seed`) are explained with
    :func:`~xai_loc.explain.explain_store` into :func:`~xai_loc.explain.relevance_store_path` (named by
    architecture and weight digest).
    Returns the opened relevance by estimator name (``name`` and ``'<name>-randomized'``),
    ready for ``run_tdoa(relevance=...)``.
    """
    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.explain.store import explain_store, open_relevance

    models = ModelSet.of(models)
    options = {**options, **method_seed(method, seed)}
    if first_rule is not None:
        options["first_rule"] = first_rule
    kw = {"method": method, "composite": composite, "target": target, "batch_size": batch_size, "device": device,
          "progress": progress, **options}
    out: dict[str, xr.DataArray] = {}
    for name in models:
        out[name] = open_relevance(explain_store(models[name], data, provenance=models.provenance(name), **kw))
        if randomized_baseline:
            out[f"{name}-randomized"] = open_relevance(explain_store(
                models.randomized(name, seed), data, provenance=models.randomized_provenance(name, seed), **kw))
    return out


# --------------------------------------------------------------------------------------
# tables and files
# --------------------------------------------------------------------------------------

def _fmt(value: float, digits: int, nan: str = "nan") -> str:
    return nan if not np.isfinite(value) else f"{value:.{digits}f}"


def _pair_headers(ds: xr.Dataset) -> list[str]:
    return [f"{p} ({float(dist):.2f} m)" for p, dist in zip(ds["pair"].values, ds["pair_distance"].values, strict=True)]


def _condition_line(ds: xr.Dataset) -> str:
    parts = []
    if "t60" in ds.attrs:
        parts.append(f"T60 {float(ds.attrs['t60']):g} s")
    if "snr" in ds.attrs:
        parts.append(f"SNR {float(ds.attrs['snr']):g} dB")
    parts.append(f"{ds.sizes['window']} windows")
    method = ds.attrs.get("method", "?")
    if ds.attrs.get("composite", "none") != "none":
        method += f" / {ds.attrs['composite']} (first rule {ds.attrs.get('first_rule', 'default')})"
    parts.append(f"relevance: {method}, target {ds.attrs.get('target', '?')}")
    return ", ".join(parts)


def tdoa_tables(ds: xr.Dataset) -> dict[str, str]:
    """The result as tables: rows estimators, columns pairs (with their distance).

    Returns
    -------
    dict
        ``'markdown'`` (cells ``% anomalies / MAE samples``, then reference rows with the
        median anomaly threshold and the mean |true delay|, then the SRP table when
        present), ``'csv'`` (``estimator`` then two numeric columns per pair: ``<pair>
        anomalies %`` and ``<pair> MAE samples``), ``'latex'`` (booktabs, cells as in
        markdown); with SRP results also ``'srp_csv'`` and ``'srp_latex'``.
    """
    estimators = [str(e) for e in ds["estimator"].values]
    headers = _pair_headers(ds)
    # labelled order, not the stored one: a file written with its dimensions transposed tabulates alike
    anomalies = ds["anomalies_percent"].transpose("estimator", "pair").values
    mae = ds["mae_samples"].transpose("estimator", "pair").values
    cells = [[f"{_fmt(anomalies[e, p], 1)} / {_fmt(mae[e, p], 2, '–')}" for p in range(len(headers))]
             for e in range(len(estimators))]
    thr = np.nanmedian(ds["threshold"].transpose("pair", "window").values, axis=1)  # NaN: a silent window
    mean_truth = np.abs(ds["truth"].transpose("pair", "window").values).mean(axis=1)

    md = [f"**TDOA probe** — {_condition_line(ds)}.", "",
          "Cells: % anomalies / MAE in samples over the non-anomalous windows (anomaly: |error| > half the "
          "correlation time of the microphone signal; – where every window is anomalous). "
          "Baselines: `zero-lag` (constant 0) and `*-randomized` (relevance of a randomly re-initialized copy).", "",
          markdown_row(["estimator", *headers]),
          "|---|" + "---:|" * len(headers)]
    md += [markdown_row([markdown_text(name), *row]) for name, row in zip(estimators, cells, strict=True)]
    md += [markdown_row(["_anomaly threshold, median (samples)_", *(_fmt(v, 2) for v in thr)]),
           markdown_row(["_mean \\|true delay\\| (samples)_", *(_fmt(v, 2) for v in mean_truth)])]

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["estimator"] + [f"{h} {what}" for h in headers for what in ("anomalies %", "MAE samples")])
    for e, name in enumerate(estimators):
        writer.writerow([name] + [v for p in range(len(headers))
                                  for v in (_fmt(anomalies[e, p], 3), _fmt(mae[e, p], 4))])

    col = "l" + "r" * len(headers)
    tex = [f"% TDOA probe: {latex_escape(_condition_line(ds))}",
           "% cells: % anomalies / MAE in samples over the non-anomalous windows",
           rf"\begin{{tabular}}{{{col}}}", r"\toprule",
           "estimator & " + " & ".join(latex_escape(h.replace("-", "--", 1)) for h in headers) + r" \\",
           r"\midrule"]
    tex += [latex_escape(name) + " & " + " & ".join(c.replace("–", "--") for c in row) + r" \\"
            for name, row in zip(estimators, cells, strict=True)]
    tex += [r"\midrule",
            r"threshold (median) & " + " & ".join(_fmt(v, 2) for v in thr) + r" \\",
            r"mean $|$true delay$|$ & " + " & ".join(_fmt(v, 2) for v in mean_truth) + r" \\",
            r"\bottomrule", r"\end{tabular}"]
    tables = {"markdown": "\n".join(md) + "\n", "csv": buf.getvalue(), "latex": "\n".join(tex) + "\n"}

    if "srp_error" in ds:
        names = [str(e) for e in ds["srp_estimator"].values]
        err = ds["srp_error"].transpose("srp_estimator", "srp_metric").sel(srp_metric=["x", "y", "euclidean"]).values
        md_srp = ["", f"**SRP-PHAT map peak** — {int(ds.attrs.get('srp_windows', 0))} windows, "
                      f"{float(ds.attrs.get('srp_step', float('nan'))):g} m grid over x "
                      f"{_range(ds.attrs.get('srp_x_range'))}, y {_range(ds.attrs.get('srp_y_range'))} m at "
                      f"z {float(ds.attrs.get('srp_z', float('nan'))):.2f} m; all microphone pairs. "
                      "`constant`: the grid centre for every window.", "",
                  markdown_row(["estimator", "mean \\|x error\\| (m)", "mean \\|y error\\| (m)",
                                "mean Euclidean error (m)"]),
                  "|---|---:|---:|---:|"]
        md_srp += [markdown_row([markdown_text(name), *(_fmt(v, 3) for v in row)])
                   for name, row in zip(names, err, strict=True)]
        if "srp_flat" in ds:  # results written before the count have none
            flat = [f"`{name}` {int(k)}" for name, k in zip(names, ds["srp_flat"].values, strict=True) if k]
            if flat:
                md_srp += ["", "Windows whose map was flat (relevance on fewer than two microphones; no peak, scored "
                               "at the constant guess): " + ", ".join(flat) + "."]
        tables["markdown"] += "\n".join(md_srp) + "\n"
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["estimator", "mae_x_m", "mae_y_m", "euclidean_m"])
        for name, row in zip(names, err, strict=True):
            writer.writerow([name] + [_fmt(v, 4) for v in row])
        tables["srp_csv"] = buf.getvalue()
        tex = ["% SRP-PHAT map peak error on the source plane (metres)", r"\begin{tabular}{lrrr}", r"\toprule",
               r"estimator & $|\Delta x|$ & $|\Delta y|$ & Euclidean \\", r"\midrule"]
        tex += [latex_escape(name) + " & " + " & ".join(_fmt(v, 3) for v in row) + r" \\"
                for name, row in zip(names, err, strict=True)]
        tex += [r"\bottomrule", r"\end{tabular}"]
        tables["srp_latex"] = "\n".join(tex) + "\n"
    return tables


def _range(value: Any) -> str:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        return "?"
    return f"{lo:.2f}..{hi:.2f}"


#: Options of :meth:`TdoaExperiment.run` that are the probe's own (the rest say how to explain).
_PROBE_OPTIONS = ("pairs", "max_windows", "interp", "srp", "srp_step", "srp_pad", "srp_interp", "srp_max_windows")


class TdoaExperiment(Experiment):
    """The TDOA probe and SRP comparison: relevance stores of every model and randomized copy
    (:func:`explain_models`, for a store path), then :func:`run_tdoa`. Files ``tdoa.nc``, ``tdoa.md``,
    ``.csv``, ``.tex`` and ``srp.csv``, ``srp.tex``; figures ``tdoa.png``/``.pdf`` and ``srp.png``/``.pdf``."""

    name = "tdoa"
    result_file = RESULT_FILES["store"]
    what = "TDOA result"
    command = "tdoa"
    required = {"delay": ("estimator", "pair", "window"), "anomalies_percent": ("estimator", "pair"),
                "mae_samples": ("estimator", "pair"), "threshold": ("pair", "window")}
    optional = {"truth": ("pair", "window"), "estimator_kind": ("estimator",), "max_lag": ("pair",),
                "pair_distance": ("pair",), "srp_error": ("srp_estimator", "srp_metric"),
                "srp_flat": ("srp_estimator",), "srp_estimator_kind": ("srp_estimator",)}
    nonempty = ("estimator", "pair")
    table_files = {kind: file for kind, file in RESULT_FILES.items() if kind != "store"}

    def run(self, models: ModelSet | Mapping, data: Any, **options: Any) -> xr.Dataset:
        from xai_loc.experiments.modelset import ModelSet

        models = ModelSet.of(models)
        probe = {key: options.pop(key) for key in _PROBE_OPTIONS if key in options}
        relevance = explain_models(models, data, **options) if isinstance(data, (str, os.PathLike)) else None
        return run_tdoa(models, data, relevance=relevance, **probe, **options)

    def tables(self, ds: xr.Dataset) -> dict[str, str]:
        return tdoa_tables(ds)

    def write(self, ds: xr.Dataset, folder: str | os.PathLike, *, tables: Mapping[str, str] | None = None,
              timing: Mapping[str, Any] | None = None) -> dict[str, Path]:
        """As :meth:`Experiment.write`; a result without SRP removes the :data:`SRP_FILES` an earlier run left in
        ``folder``, so that they are never read beside it."""
        paths = super().write(ds, folder, tables=tables, timing=timing)
        if "srp_error" not in ds:
            for name in SRP_FILES:
                (Path(folder) / name).unlink(missing_ok=True)
        return paths

    def open(self, path: str | os.PathLike) -> xr.Dataset:
        """As :meth:`Result.open`; a results folder stands for its ``tdoa.nc``."""
        path = Path(path)
        return super().open(path / self.result_file if path.is_dir() else path)


def write_tdoa_results(ds: xr.Dataset, folder: str | os.PathLike) -> dict[str, Path]:
    """Write the Dataset (``tdoa.nc``, netCDF) and its tables (``tdoa.md``, ``.csv``, ``.tex``;
    ``srp.csv``, ``srp.tex``) into ``folder``, each atomically; returns the paths by kind
    (``'store'`` for the ``.nc``), as :meth:`TdoaExperiment.write`."""
    paths = TdoaExperiment().write(ds, folder)
    return {"store": paths.pop("result"), **paths}


def open_tdoa_results(path: str | os.PathLike) -> xr.Dataset:
    """Load a result written by :func:`write_tdoa_results` (the folder or the ``.nc`` file) into memory."""
    return TdoaExperiment().open(path)

