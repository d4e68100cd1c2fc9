"""IPD/ILD time-frequency features of Pang, Liu & Li (IEEE Access 2019), differentiable in torch.

Ear signals ``[B, 2, T]`` (ear 0 = left, ear 1 = right) become two maps ``[B, 2, F, frames]``:

- channel 0, IPD = ``angle(R / L)`` in radians, ``(-pi, pi]``;
- channel 1, ILD = ``20 log10 |R / L|`` in dB, computed as
  ``10 log10((|R|^2 + floor) / (|L|^2 + floor))`` so that silent bins give 0 dB, not inf/NaN.

With the paper's settings (16 kHz, 640-sample Hamming window, hop 320) there are 321 bins
(0 to 8 kHz in 25 Hz steps) and a 1 s input gives 50 frames: the signal is zero-padded by
``(n_fft - hop) / 2 = 160`` samples at both ends, so frame ``k`` covers samples
``320 k - 160 .. 320 k + 480`` and is centred on ``(k + 1/2) hop``; ``frames = T // hop``
(the paper's "1 s -> 50 frames"; ``torch.stft`` would give 49 without padding and 51 with
``center=True``).

Sign conventions: a right ear that *leads* the left by ``tau`` seconds gives
``IPD = 2 pi f tau > 0`` (below the first phase wrap), a louder right ear a positive ILD.
With the TF-CNN's azimuth convention (positive = right, :mod:`xai_loc.models.tfcnn`) both
cues grow with the azimuth.

Every step is a registered module so that attribution hooks see it:

- :class:`SpectralConv` is the STFT, an ``nn.Conv1d`` (bias-free, fixed windowed cos/sin
  kernels) applied to each ear: ``[B, 2, T] -> [B, 4, F, frames]`` with channels
  ``(L real, L imag, R real, R imag)`` (inside :class:`STFT`);
- :class:`InterauralCues` maps the four spectra to IPD and ILD.

**Relevance through the cue stage.** IPD and ILD are ratios: unchanged when either ear's
spectrum is scaled (homogeneous of degree 0), and the IPD is a phase that wraps at +-pi.
For such a function gradient x input sums to zero in every bin (Euler), so Taylor-style
rules (gradient x input, epsilon) cannot conserve relevance here, and near the wrap the
gradient says nothing about the cue's value. The rule of :mod:`xai_loc.explain.cue_composites`
therefore treats the cue stage like a ``Pass`` rule generalised to a 4 -> 2 map: the
relevance of a time-frequency bin (IPD + ILD) goes to the four spectral coefficients of that
same bin, in proportion to their share of the bin's energy ``x_k^2 / sum_j x_j^2``; the
STFT (linear, bias-free) then carries it to the samples by LRP-0/epsilon. Relevance is
conserved bin by bin, and the two steps together give each sample
``x_i sum_k w_ik z_k R_bin / E_bin``, finite at any phase.

For training, :class:`SafeAngle` gives ``atan2`` a gradient with a floored denominator, so
gradients stay finite on silent bins as well.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from xai_loc.checks import check_fs, check_integer, check_number
from xai_loc.errors import InputError
from xai_loc.features import check_waveforms, in_float32

__all__ = ["IPDILD", "STFT", "SpectralConv", "InterauralCues", "SafeAngle", "CHANNELS", "DEFAULTS"]

#: Feature channels, in order.
CHANNELS = ("ipd", "ild")
#: Pang et al. (2019): 16 kHz, 640-sample Hamming window, hop 320.
DEFAULTS: dict[str, Any] = {"fs": 16000, "n_fft": 640, "hop": 320, "power_floor": 1e-10}


class SafeAngle(torch.autograd.Function):
    """``atan2(imag, real)`` in ``(-pi, pi]`` whose gradient uses ``real^2 + imag^2 + floor`` as denominator.

    ``atan2`` gives ``-pi`` for a negative ``real`` and an ``imag`` of ``-0.0`` (in float32 also for an
    ``imag`` less than about ``3e-8 |real|`` below zero); that value is returned as ``+pi``.
    """

    @staticmethod
    def forward(ctx, imag: torch.Tensor, real: torch.Tensor, floor: float) -> torch.Tensor:
        ctx.save_for_backward(imag, real)
        ctx.floor = floor
        angle = torch.atan2(imag, real)
        return torch.where(angle <= -math.pi, angle + 2 * math.pi, angle)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        imag, real = ctx.saved_tensors
        denom = real * real + imag * imag + ctx.floor
        return grad * real / denom, -grad * imag / denom, None


def _check_frames(n_fft: Any, hop: Any) -> tuple[int, int]:
    """Return ``(n_fft, hop)`` as ints if ``n_fft >= 2`` and ``1 <= hop <= n_fft`` are integers with ``n_fft`` and
    ``n_fft - hop`` even (the padding ``(n_fft - hop) / 2`` is split evenly)."""
    n_fft, hop = check_integer("n_fft", n_fft, minimum=2), check_integer("hop", hop, minimum=1)
    if n_fft % 2 or hop > n_fft or (n_fft - hop) % 2:
        raise InputError(f"n_fft={n_fft!r}, hop={hop!r} are not allowed; use an even n_fft, hop <= n_fft and "
                         "an even n_fft - hop")
    return n_fft, hop


class SpectralConv(nn.Conv1d):
    """A bias-free ``Conv1d`` whose fixed kernels are the windowed DFT (cos, then -sin rows).

    Its own type so that composites can give it a rule of its own; the weights are not trained.
    They are cast to the input's dtype at each call (a float64 input gets the float32 kernels in float64); while
    the weight holds the design's rounding to its dtype (``model.bfloat16()`` rounds it), the float32 design is used
    (a non-persistent buffer, kept in float32 by :func:`~xai_loc.features.in_float32`), else the weight as loaded or
    as an LRP rule modified it.
    """

    def __init__(self, n_fft: int, hop: int) -> None:
        n_fft, hop = _check_frames(n_fft, hop)
        n_bins = n_fft // 2 + 1
        super().__init__(1, 2 * n_bins, n_fft, stride=hop, padding=(n_fft - hop) // 2, bias=False)
        n = torch.arange(n_fft, dtype=torch.float64)
        k = torch.arange(n_bins, dtype=torch.float64)[:, None]
        window = torch.hamming_window(n_fft, periodic=True, dtype=torch.float64)
        phase = 2 * math.pi * k * n / n_fft
        kernels = torch.cat([torch.cos(phase) * window, -torch.sin(phase) * window])
        self.weight.requires_grad_(False)
        self.register_buffer("design", kernels[:, None, :].float(), persistent=False)
        with torch.no_grad():
            self.weight.copy_(self.design)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        designed = torch.equal(self.weight, self.design.to(self.weight.dtype))
        return F.conv1d(x, (self.design if designed else self.weight).to(x.dtype), None, self.stride, self.padding)


class STFT(nn.Module):
    """Short-time Fourier transform of both ears: ``[B, 2, T] -> [B, 4, F, frames]``.

    Channels ``(L real, L imag, R real, R imag)``; ``X[k, m] = sum_n w[n] x[n + m hop - pad]
    exp(-2 pi i k n / n_fft)``.
    """

    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.n_fft, self.hop = _check_frames(n_fft, hop)
        self.transform = SpectralConv(self.n_fft, self.hop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, ears, t = x.shape
        z = self.transform(x.reshape(b * ears, 1, t))
        n_bins = self.n_fft // 2 + 1
        return z.reshape(b, ears * 2, n_bins, z.shape[-1])


class InterauralCues(nn.Module):
    """IPD and ILD of the spectra ``[B, 4, F, frames]`` (L re, L im, R re, R im) -> ``[B, 2, F, frames]``.

    ``IPD = angle(R conj(L))`` (radians), ``ILD = 10 log10((|R|^2 + floor) / (|L|^2 + floor))``
    (dB). ``floor`` is a power in the units of the squared STFT coefficients.
    """

    def __init__(self, power_floor: float = DEFAULTS["power_floor"]) -> None:
        super().__init__()
        self.power_floor = check_number("power_floor", power_floor, strict=True)

    def forward(self, spectra: torch.Tensor) -> torch.Tensor:
        lr, li, rr, ri = spectra.unbind(dim=1)
        cross_real = rr * lr + ri * li
        cross_imag = ri * lr - rr * li
        ipd = SafeAngle.apply(cross_imag, cross_real, self.power_floor ** 2)
        power_l = lr * lr + li * li + self.power_floor
        power_r = rr * rr + ri * ri + self.power_floor
        ild = (10.0 / math.log(10.0)) * (torch.log(power_r) - torch.log(power_l))
        return torch.stack([ipd, ild], dim=1)

    def extra_repr(self) -> str:
        return f"power_floor={self.power_floor:g}"


@in_float32
class IPDILD(nn.Module):
    """The TF-CNN's front end: ear signals ``[B, 2, T]`` -> ``[B, 2 (IPD, ILD), n_bins, n_frames]``.

    Parameters
    ----------
    fs
        Sample rate in Hz (16000).
    n_fft
        Window length in samples, even (640; Hamming, periodic).
    hop
        Hop in samples (320); ``n_fft - hop`` must be even (the padding is split evenly).
    power_floor
        Added to each ear's bin power before the log (1e-10): silent bins give ILD 0 dB.
    """

    def __init__(self, fs: int = DEFAULTS["fs"], n_fft: int = DEFAULTS["n_fft"], hop: int = DEFAULTS["hop"],
                 power_floor: float = DEFAULTS["power_floor"]) -> None:
        super().__init__()
        self.fs = check_fs(fs)
        self.stft = STFT(n_fft, hop)  # checks n_fft and hop
        self.n_fft, self.hop = self.stft.n_fft, self.stft.hop
        self.cues = InterauralCues(power_floor)  # checks power_floor

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {"fs": self.fs, "n_fft": self.n_fft, "hop": self.hop, "power_floor": self.cues.power_floor}

    @property
    def n_bins(self) -> int:
        """Frequency bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    @property
    def frequencies(self) -> np.ndarray:
        """Bin frequencies in Hz."""
        return np.arange(self.n_bins) * self.fs / self.n_fft

    def n_frames(self, n_samples: int) -> int:
        """Frames of an input of ``n_samples >= 0`` samples (``n_samples // hop`` for the paper's padding)."""
        return check_integer("n_samples", n_samples) // self.hop

    def frame_times(self, n_samples: int) -> np.ndarray:
        """Centre of each frame in seconds, ``(k + 1/2) hop / fs``."""
        return (np.arange(self.n_frames(n_samples)) * self.hop + self.hop / 2) / self.fs

    def spectra(self, x: torch.Tensor) -> torch.Tensor:
        """The STFT of both ears ``[B, 4, n_bins, frames]`` (L re, L im, R re, R im)."""
        return self.stft(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_waveforms(x)
        if x.shape[-1] < self.hop:
            raise InputError(f"{x.shape[-1]} samples are too few; give at least hop={self.hop}")
        return self.cues(self.stft(x))
