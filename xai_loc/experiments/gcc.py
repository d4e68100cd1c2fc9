"""GCC-PHAT time-delay estimation and the correlation time of a signal.

Lags are on a centred axis: lag 0 is the middle sample of the (interpolated) correlation,
so a delay of ``D`` samples is reported as ``D`` exactly (the paper's released code reports
every delay half a sample off).

Every estimator takes NumPy arrays (computed in float64 on the host: the reference) or torch
tensors (computed in float64 on the tensor's device, results left there, so that a GPU
pipeline brings back only the small answers; issue 18). The two differ only in the few
operations of :func:`array_ops`; the formulas are written once.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import numpy as np

from xai_loc.checks import check_integer, is_real
from xai_loc.errors import InputError

if TYPE_CHECKING:
    import torch

    #: What the estimators take and return: a NumPy array or a torch tensor.
    Array = np.ndarray | torch.Tensor


def _next_pow2(n: int) -> int:
    return 1 << (int(n) - 1).bit_length()


class _NumpyOps:
    """The array operations of the estimators on NumPy arrays, in float64."""

    rfft = staticmethod(np.fft.rfft)
    irfft = staticmethod(np.fft.irfft)
    maximum = staticmethod(np.maximum)
    where = staticmethod(np.where)
    zeros = staticmethod(np.zeros)

    @staticmethod
    def asarray(x: Any) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)

    @staticmethod
    def index(x: Any) -> np.ndarray:
        return np.asarray(x, dtype=np.int64)

    @staticmethod
    def arange(m: int) -> np.ndarray:
        return np.arange(m)

    @staticmethod
    def concat(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts, axis=-1)

    @staticmethod
    def argmax(x: np.ndarray) -> np.ndarray:
        return np.argmax(x, axis=-1)

    @staticmethod
    def amax(x: np.ndarray) -> np.ndarray:
        return np.max(x, axis=-1)

    @staticmethod
    def take(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return np.take_along_axis(x, idx, axis=-1)

    @staticmethod
    def floor_int(x: np.ndarray) -> np.ndarray:
        return np.floor(x).astype(np.int64)

    @staticmethod
    def host(x: Any) -> np.ndarray:
        return np.asarray(x)


class _TorchOps:
    """The array operations of the estimators on torch tensors, in float64 on ``device``."""

    def __init__(self, torch: Any, device: Any) -> None:
        self.torch, self.device = torch, device
        self.rfft, self.irfft, self.where = torch.fft.rfft, torch.fft.irfft, torch.where

    def asarray(self, x: Any) -> Any:
        return self.torch.as_tensor(x, dtype=self.torch.float64, device=self.device)

    def index(self, x: Any) -> Any:
        return self.torch.as_tensor(x, dtype=self.torch.int64, device=self.device)

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return self.torch.zeros(shape, dtype=self.torch.float64, device=self.device)

    def arange(self, m: int) -> Any:
        return self.torch.arange(m, dtype=self.torch.float64, device=self.device)

    def concat(self, parts: list[Any]) -> Any:
        return self.torch.cat(parts, dim=-1)

    def maximum(self, x: Any, floor: float) -> Any:
        return x.clamp(min=floor)

    def argmax(self, x: Any) -> Any:
        return (x.to(self.torch.uint8) if x.dtype == self.torch.bool else x).argmax(dim=-1)

    def amax(self, x: Any) -> Any:
        return x.amax(dim=-1)

    def take(self, x: Any, idx: Any) -> Any:
        return self.torch.take_along_dim(x, idx, dim=-1)

    def floor_int(self, x: Any) -> Any:
        return x.floor().to(self.torch.int64)

    def host(self, x: Any) -> np.ndarray:
        return x.cpu().numpy()


def array_ops(*arrays: Any) -> _NumpyOps | _TorchOps:
    """The operations for ``arrays``: torch's on the device of the first tensor among them, else NumPy's.

    The estimators' one place that tells the two apart (the other experiments use
    :mod:`xai_loc.experiments.arrays`); torch is not imported for it (no tensor can exist before
    it is).
    """
    torch = sys.modules.get("torch")
    tensor = next((x for x in arrays if torch is not None and isinstance(x, torch.Tensor)), None)
    return _NumpyOps() if tensor is None else _TorchOps(torch, tensor.device)


def check_max_lag(max_lag: float) -> None:
    """Refuse (one line) a lag window of a delay estimate that holds no lag: ``max_lag`` must be a finite number
    of samples >= 0."""
    if not (is_real(max_lag) and max_lag >= 0):
        raise InputError(f"max_lag={max_lag!r} is not allowed; use a finite number of samples >= 0")


def check_interp(interp: int) -> None:
    """Refuse (one line) an interpolation factor of the lag axis that is not an integer >= 1."""
    check_integer("interp", interp, minimum=1)


def gcc_phat(x1: Array, x2: Array, max_lag: float | None = None, interp: int = 16,
             eps: float = 1e-12) -> tuple[Array, Array]:
    """Generalized cross-correlation with phase transform (Knapp & Carter, 1976).

    Parameters
    ----------
    x1, x2
        Signals ``(..., T)``; leading dimensions are batched. NumPy arrays, or torch tensors
        (computed on their device, see the module notes).
    max_lag
        Largest absolute lag returned, a finite number of samples (default: all; a negative one keeps none).
    interp
        Interpolation factor of the lag axis, an integer >= 1 (band-limited, by zero-padding the spectrum).
    eps
        Floor of the spectral magnitude in the PHAT weighting.

    Returns
    -------
    lags, cc
        Lags in samples ``(L,)`` (centred: 0 in the middle) and the correlation
        ``(..., L)``; its peak is at ``tau2 - tau1``, positive when ``x2`` lags ``x1``.
        Float64, tensors (on the device of the first tensor input) if either input is one.
        The lags are those below ``n / 2`` in magnitude, ``n`` the FFT size (the next power of two of
        ``T1 + T2``): the circular lag ``n / 2`` is the alias of ``-n / 2``, where windows of equal length do
        not overlap (windows of unequal length: a delay beyond ``n / 2`` is read as its alias).
    """
    if max_lag is not None and not is_real(max_lag):
        raise InputError(f"max_lag={max_lag!r} is not allowed; use a finite number of samples (None: every lag)")
    check_interp(interp)
    xp = array_ops(x1, x2)
    x1 = xp.asarray(x1)
    x2 = xp.asarray(x2)
    n = _next_pow2(x1.shape[-1] + x2.shape[-1])
    cross = xp.rfft(x2, n) * xp.rfft(x1, n).conj()
    cross /= xp.maximum(abs(cross), eps)
    m = n * interp
    cc = xp.irfft(cross, m)  # lag k at index k mod m
    lags = (np.arange(m) - m // 2) / interp  # data-independent: chosen on the host, costs a GPU no sync
    kept = np.flatnonzero((np.abs(lags) < n / 2) & (np.abs(lags) <= (np.inf if max_lag is None else max_lag)))
    if not kept.size:
        return xp.asarray(lags[kept]), cc[..., :0]
    # the kept lags (one run around lag 0) read straight from the unshifted correlation, negative ones from its end,
    # by two slices (no index array to send to a GPU): shifting all m lags first copies the whole array, most of an
    # SRP map's time on the CPU (16 384 x interp lags per pair, a few hundred kept)
    first, last = int(kept[0]) - m // 2, int(kept[-1]) - m // 2  # first <= 0 <= last
    return xp.asarray(lags[kept]), xp.concat([cc[..., m + first :], cc[..., : last + 1]])


def tdoa(x1: Array, x2: Array, max_lag: float | None = None, interp: int = 16) -> Array:
    """GCC-PHAT delay of ``x2`` relative to ``x1`` in samples, ``(...)`` (of the kind of ``x1``).

    NaN where either signal is all zero or holds a NaN or an infinity: its correlation is flat or undefined, and its
    peak (the first lag) is no estimate. ``max_lag``: a finite number of samples >= 0 (default: every lag of
    :func:`gcc_phat`).
    """
    if max_lag is not None:
        check_max_lag(max_lag)
    with np.errstate(invalid="ignore"):  # a NaN or an infinity: the answer is NaN, said below
        lags, cc = gcc_phat(x1, x2, max_lag=max_lag, interp=interp)
    xp = array_ops(cc)
    peaks = [xp.amax(abs(xp.asarray(x))) for x in (x1, x2)]  # NaN where a sample is
    usable = (peaks[0] > 0) & (peaks[0] < np.inf) & (peaks[1] > 0) & (peaks[1] < np.inf)
    return xp.where(usable, lags[xp.argmax(cc)], np.nan)


def correlation_time(x: Array, interp: int = 16) -> Array:
    """Width of the autocorrelation main lobe at ``1/sqrt(2)`` of its peak, in samples.

    The definition of Champagne, Bedard & Stephenne (IEEE TSAP 1996); half of it is the
    threshold above which a delay error counts as an anomaly. Sub-sample resolution by
    band-limited interpolation of the autocorrelation; ``x`` is ``(..., T)`` (NumPy, or a
    torch tensor computed on its device). NaN for an all-zero signal (it has no main lobe).
    """
    check_interp(interp)
    xp = array_ops(x)
    x = xp.asarray(x)
    n = _next_pow2(2 * x.shape[-1])
    power = abs(xp.rfft(x, n)) ** 2
    r = xp.irfft(power, n * interp)[..., : n * interp // 2]
    r = r / xp.maximum(r[..., :1], 1e-300)
    below = r < 1.0 / np.sqrt(2.0)
    first = xp.where(below.any(axis=-1), xp.argmax(below), r.shape[-1])
    # linear interpolation between the last sample above and the first below the level
    idx = first.clip(1, r.shape[-1] - 1)
    r_hi = xp.take(r, (idx - 1)[..., None])[..., 0]
    r_lo = xp.take(r, idx[..., None])[..., 0]
    frac = (r_hi - 1.0 / np.sqrt(2.0)) / xp.maximum(r_hi - r_lo, 1e-300)
    return xp.where(r[..., 0] > 0, 2.0 * (idx - 1 + frac) / interp, np.nan)
