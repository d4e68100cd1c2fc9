"""Binaural dB spectrogram front end of BAST (Kuang, van der Heijden & Mehrkanoon 2022), in torch.

The seed implementation computes, per ear, ``scipy.signal.spectrogram(x, fs, nperseg=256,
noverlap=128)`` of int16 sample values (Tukey window with ``alpha = 0.25``, constant detrending,
one-sided power spectral density), takes ``20 log10`` of it without a floor (the ``-inf`` of an
all-zero bin is then set to 0) and standardizes every example (all its values, both ears) to
zero mean and unit variance. Its clips are 0.5 s at 16 kHz (8000 samples), so
``(8000 - 256) // 128 + 1 = 61`` frames of ``256 // 2 + 1 = 129`` bins (0-8 kHz in steps of
62.5 Hz): input ``[B, 2, 8000]`` -> ``[B, 2 ears, 129, 61]``.

Here the same spectral density of the input as given (float samples) becomes
``10 log10(p + amin)`` with a fixed floor ``amin = 1e-14`` (keeps digital silence finite), then
is standardized the same way. The dB factor (10 or 20) and the sample scale cancel in the
standardization, so the seed's features do not depend on the input level; ours do where the
floor is not negligible, in bins less than about 20 dB above ``10 log10 amin = -140 dB`` (the
high frequencies of low-pass sounds, the detrended DC bin), and through the example's mean and
variance then in all bins. Measured on 1000 examples of each noise (independent Gaussian noise
in the two ears, float64): noise low-passed at 3 kHz (4th-order Butterworth) at RMS 0.0158 and
at RMS 0.158 (the ends of the BAST scenes' level range, -10 and +10 dB re 0.05) gives
standardized values that differ by up to 0.41 (34 % of them by more than 0.1). White noise
moves 99.99 % of its values by less than 0.02, but in 90 % of the examples a few weak bins
(DC, Nyquist, chance near-zero bins, where the floor dominates) move by more, up to 3.4 (the
largest change per example has median 0.15). At RMS 0.158 the low-passed noise's values differ
from the seed's (its int16 samples taken as ``round(32768 x)``) by up to 4.3 (the largest
difference per example has median 1.5; 5 % of the values differ by more than 0.1). The shipped
BAST checkpoint was trained on these features.

Every step is a registered module so that explanation rules can attach to it:

``stft`` (:class:`FrameSTFT`)
    Framing, detrending, windowing, the real DFT and the density scaling folded into one fixed
    linear map (a strided convolution with a ``[2 * bins, n_fft]`` kernel, no bias): relevance
    passes it unchanged in sum.
``power`` (:class:`PowerSpectrum`)
    ``re ** 2 + im ** 2``.
``decibel`` (:class:`Decibel`)
    ``10 log10(p + amin)``, ``amin`` an absolute floor.
``standardize`` (:class:`Standardize`)
    Per example ``(x - mean) / std``.

The kernel is a non-persistent float64 buffer rebuilt from the config and cast to the input's dtype
at each call (float64 inputs get float64 accuracy): the front end adds nothing to state dicts.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from xai_loc.checks import check_flag, check_fs, check_integer, check_number, shown
from xai_loc.errors import InputError
from xai_loc.features import check_waveforms, in_float32

__all__ = ["BinauralSpectrogram", "Decibel", "FrameSTFT", "PowerSpectrum", "Standardize", "SEED_FS",
           "SEED_SAMPLES", "stft_kernel"]

#: Rate and clip length of the seed's data: 16 kHz, 0.5 s -> 61 frames.
SEED_FS, SEED_SAMPLES = 16000, 8000


def stft_kernel(n_fft: int, fs: float, window: str | tuple = ("tukey", 0.25), detrend: bool = True) -> np.ndarray:
    """The linear map of one frame to scaled real and imaginary parts, ``(2, n_fft // 2 + 1, n_fft)``.

    Row ``k`` of part 0 (1) gives ``sqrt(c_k)`` times the real (imaginary) part of the DFT of the
    (mean-removed, when ``detrend``) windowed frame, with ``c_k = 1 / (fs sum w**2)``, doubled
    except at DC and Nyquist: ``re**2 + im**2`` is then scipy's one-sided power spectral density.

    Raises
    ------
    InputError
        If ``n_fft`` is not an integer >= 2, ``fs`` not a positive number, ``window`` not a
        ``scipy.signal.get_window`` spec of a finite window that is not all zeros, or ``detrend`` not a bool.
    """
    from scipy.signal import get_window

    n_fft = check_integer("n_fft", n_fft, minimum=2)
    check_number("fs", fs, strict=True)
    check_flag("detrend", detrend)
    try:
        with np.errstate(all="ignore"):  # a Kaiser beta of inf gives NaN, refused below
            w = None if isinstance(window, (bool, np.bool_)) else get_window(window, n_fft)
    except (ValueError, TypeError, IndexError):  # scipy's error for an unknown name or a malformed spec
        w = None
    if w is None or not np.all(np.isfinite(w)) or not np.any(w):  # a number is a Kaiser beta: nan gives NaN
        raise InputError(f"window={shown(window)} is not allowed; give a scipy.signal.get_window spec such as "
                         f"('tukey', 0.25) or 'hann'")
    n_bins = n_fft // 2 + 1
    k = np.arange(n_bins)[:, None]
    n = np.arange(n_fft)[None, :]
    phase = 2.0 * np.pi * k * n / n_fft
    scale = np.full(n_bins, 2.0 / (fs * np.sum(w ** 2)))
    scale[0] /= 2.0
    if n_fft % 2 == 0:
        scale[-1] /= 2.0
    basis = np.stack([np.cos(phase), -np.sin(phase)]) * w[None, None, :] * np.sqrt(scale)[None, :, None]
    if detrend:
        basis = basis - basis.mean(axis=-1, keepdims=True)  # B (I - 11^T / n): removes the frame mean
    return basis


class FrameSTFT(nn.Module):
    """Scaled short-time Fourier transform ``[B, ears, T] -> [B, ears, 2 (re, im), bins, frames]``.

    Frames of ``n_fft`` samples every ``hop`` samples, no padding: ``(T - n_fft) // hop + 1`` frames
    (scipy's ``spectrogram`` convention). One fixed bias-free linear map (see :func:`stft_kernel`).

    Raises
    ------
    InputError
        For an ``fs`` that is not a positive integer, a ``hop`` that is not an integer in ``[1, n_fft]``, or the
        ``n_fft``, ``window`` and ``detrend`` that :func:`stft_kernel` refuses.
    """

    def __init__(self, n_fft: int = 256, hop: int = 128, fs: int = SEED_FS, window: str | tuple = ("tukey", 0.25),
                 detrend: bool = True) -> None:
        super().__init__()
        fs = check_fs(fs)
        kernel = stft_kernel(n_fft, fs, window, detrend)  # n_fft, window and detrend checked there
        self.n_fft, self.hop, self.fs = int(n_fft), check_integer("hop", hop, minimum=1, maximum=n_fft), fs
        self.n_bins = self.n_fft // 2 + 1
        kernel = kernel.reshape(2 * self.n_bins, 1, self.n_fft)
        self.register_buffer("kernel", torch.as_tensor(kernel, dtype=torch.float64), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        out = F.conv1d(x.reshape(-1, 1, x.shape[-1]), self.kernel.to(x.dtype), stride=self.hop)
        return out.reshape(*lead, 2, self.n_bins, out.shape[-1])

    def extra_repr(self) -> str:
        return f"n_fft={self.n_fft}, hop={self.hop}, fs={self.fs}"


class PowerSpectrum(nn.Module):
    """``[..., 2 (re, im), F, T] -> [..., F, T]``: ``re ** 2 + im ** 2``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.square().sum(dim=-3)


class Decibel(nn.Module):
    """``10 log10(p + amin)``: power to dB; ``amin`` keeps digital silence finite and, being absolute,
    makes bins whose power is not far above it depend on the input level (see the module docs)."""

    def __init__(self, amin: float = 1e-14) -> None:
        super().__init__()
        self.amin = check_number("amin", amin, strict=True)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(p + self.amin)

    def extra_repr(self) -> str:
        return f"amin={self.amin:g}"


class Standardize(nn.Module):
    """Zero mean and unit variance over all dims but the first (the example), as the seed's
    ``StandardScaler`` over each flattened example; ``eps > 0`` guards constant inputs."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = check_number("eps", eps, strict=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, x.ndim))
        centred = x - x.mean(dim=dims, keepdim=True)
        std = centred.square().mean(dim=dims, keepdim=True).add(self.eps).sqrt()
        return centred / std


@in_float32
class BinauralSpectrogram(nn.Module):
    """Ear signals ``[B, 2, T]`` -> standardized dB spectrograms ``[B, 2, n_fft // 2 + 1, frames]``.

    Defaults give the seed's ``[2, 129, 61]`` for 0.5 s at 16 kHz (8000 samples); see the module docs.

    Parameters
    ----------
    fs
        Sample rate in Hz (16000).
    n_fft, hop
        Segment length and hop in samples (256 and 128: 128 samples overlap).
    window
        A ``scipy.signal.get_window`` spec (seed: ``('tukey', 0.25)``, scipy's default).
    detrend
        Remove each segment's mean before windowing (scipy's default).
    amin
        Floor added to the power before the logarithm (1e-14, absolute: weak bins depend on the
        input level, see the module docs).
    standardize
        Standardize each example (the seed does).
    """

    def __init__(self, fs: int = SEED_FS, n_fft: int = 256, hop: int = 128,
                 window: str | list | tuple = ("tukey", 0.25), detrend: bool = True, amin: float = 1e-14,
                 standardize: bool = True) -> None:
        super().__init__()
        window = tuple(window) if isinstance(window, list) else window
        self.stft = FrameSTFT(n_fft, hop, fs, window, detrend)  # checks fs, n_fft, hop, window and detrend
        self.power = PowerSpectrum()
        self.decibel = Decibel(amin)  # checks amin
        self.standardize = Standardize() if check_flag("standardize", standardize) else nn.Identity()
        self.fs, self.n_fft, self.hop = self.stft.fs, self.stft.n_fft, self.stft.hop
        self.config: dict[str, Any] = {"fs": self.fs, "n_fft": self.n_fft, "hop": self.hop,
                                       "window": list(window) if isinstance(window, tuple) else window,
                                       "detrend": detrend, "amin": self.decibel.amin, "standardize": standardize}

    @property
    def n_bins(self) -> int:
        """Frequency bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    def n_frames(self, n_samples: int) -> int:
        """Frames of a clip of ``n_samples >= n_fft`` samples."""
        return (check_integer("n_samples", n_samples, minimum=self.n_fft) - self.n_fft) // self.hop + 1

    @property
    def frequencies(self) -> np.ndarray:
        """Bin frequencies in Hz."""
        return np.arange(self.n_bins) * self.fs / self.n_fft

    def frame_times(self, n_samples: int) -> np.ndarray:
        """Segment centres in seconds (scipy's ``t``)."""
        return (np.arange(self.n_frames(n_samples)) * self.hop + self.n_fft / 2) / self.fs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_waveforms(x)
        if x.shape[-1] < self.n_fft:
            raise InputError(f"{x.shape[-1]} samples are too few; give at least n_fft={self.n_fft}")
        return self.standardize(self.decibel(self.power(self.stft(x))))
