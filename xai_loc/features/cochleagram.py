"""A differentiable cochleagram: the front end of the Francl & McDermott (2022) localizer.

Waveforms ``[..., T]`` at 48 kHz become ``[..., 39 bands, 8000]`` per second:

1. :class:`ERBFilterbank`: 39 half-cosine filters equally spaced on the ERB-number scale
   ``9.265 ln(1 + f / (24.7 * 9.265))`` (Glasberg & Moore 1990) between 30 Hz and 20 kHz,
   applied in the frequency domain (rfft, multiply, irfft), so that subbands keep their
   temporal fine structure (McDermott & Simoncelli 2011; the ``pycochleagram`` design);
2. half-wave rectification (``nn.ReLU``);
3. :class:`SincDownsample`: Kaiser-windowed sinc low-pass (4 kHz cutoff, 4097 taps,
   beta 5) and decimation to 8 kHz, one strided convolution;
4. rectification again (the low-pass can ring below zero);
5. :class:`PowerCompression`: ``x ** 0.3`` with a bounded gradient at zero.

Every stage is a registered submodule, so hooks (zennit, captum) see each one, and the
whole chain is differentiable from the output back to the waveform. The filterbank and the
low-pass are linear and bias-free; the downsampler *is* an ``nn.Conv1d`` (its FFT evaluation
is an implementation detail), so LRP rules for convolutions apply to it directly. Both keep
their float64 design and cast it to the input's dtype at each call: float32 inputs get the
float32-rounded filters, float64 inputs float64 accuracy.

Cost (one CPU thread of the 2-core reference machine while a training job held the other
core, float32, input ``[1, 2, 48000]``, forward): filterbank 0.02 s; downsampling by FFT
0.05 s against 4 s as a direct strided ``conv1d`` (8000 outputs x 4097 taps x 78 channels =
2.6 GMAC); the whole cochleagram 0.08 s, forward plus backward 0.25 s. Memory is dominated
by the subbands, ``B x 2 x 39 x 48000`` floats (15 MB per example).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xai_loc.checks import check_choice, check_fs, check_integer, check_number, is_real
from xai_loc.errors import InputError
from xai_loc.features import check_waveforms, in_float32

#: Downsampling implementations of :class:`SincDownsample` (same numbers up to rounding).
DOWNSAMPLE_METHODS = ("fft", "conv")


def freq_to_erb(freq):
    """ERB number (Cams) of frequencies in Hz: ``9.265 ln(1 + f / (24.7 * 9.265))``."""
    return 9.265 * np.log1p(np.asarray(freq, dtype=np.float64) / (24.7 * 9.265))


def erb_to_freq(erb):
    """Frequency in Hz of ERB numbers; the inverse of :func:`freq_to_erb`."""
    return 24.7 * 9.265 * np.expm1(np.asarray(erb, dtype=np.float64) / 9.265)


def erb_cosine_filters(n_fft: int, fs: float, n_filters: int = 39, f_min: float = 30.0,
                       f_max: float = 20000.0) -> tuple[np.ndarray, np.ndarray]:
    """Half-cosine filters on the ERB scale, sampled at the ``n_fft // 2 + 1`` rfft bins.

    Cutoffs ``e_0 < ... < e_{n+1}`` are equally spaced in ERB number from ``f_min`` to
    ``f_max`` (spacing ``D``); filter ``k`` spans ``[e_k, e_{k+2}]`` with centre ``c = e_{k+1}``
    and magnitude ``cos(pi (e - c) / (2 D))``. Neighbours are in quadrature, so the squared
    responses sum to exactly 1 between the first and the last centre frequency and fall to 0
    at ``f_min`` and ``f_max`` (no low-pass/high-pass edge filters are added).

    Returns
    -------
    filters, centres
        ``(n_filters, n_fft // 2 + 1)`` float64 magnitudes (zero phase) and centre
        frequencies ``(n_filters,)`` in Hz.

    Raises
    ------
    InputError
        Unless ``n_fft >= 1`` and ``n_filters >= 1`` are integers, ``fs`` is a positive number and
        ``0 < f_min < f_max <= fs / 2``.
    """
    n_fft, fs = check_integer("n_fft", n_fft, minimum=1), check_number("fs", fs, strict=True)
    n_filters = check_integer("n_filters", n_filters, minimum=1)
    if not (is_real(f_min) and is_real(f_max) and 0 < f_min < f_max <= fs / 2):
        raise InputError(f"band edges f_min={f_min!r}, f_max={f_max!r} Hz are not allowed; "
                         f"need 0 < f_min < f_max <= fs / 2 = {fs / 2:g}")
    freqs = np.fft.rfftfreq(n_fft, 1.0 / fs)
    cut = np.linspace(freq_to_erb(f_min), freq_to_erb(f_max), n_filters + 2)
    spacing = cut[1] - cut[0]
    erb = freq_to_erb(freqs)
    x = (erb[None, :] - cut[1:-1, None]) / (2.0 * spacing)
    filters = np.where(np.abs(x) < 0.5, np.cos(np.pi * x), 0.0)
    return filters, erb_to_freq(cut[1:-1])


def kaiser_lowpass(cutoff: float, fs: float, n_taps: int = 4097, beta: float = 5.0) -> np.ndarray:
    """Linear-phase FIR low-pass: sinc at ``cutoff`` Hz times a Kaiser window, unit DC gain.

    Raises
    ------
    InputError
        Unless ``fs`` is a positive number, ``0 < cutoff <= fs / 2``, ``n_taps >= 1`` an integer and ``beta >= 0``.
    """
    fs = check_number("fs", fs, strict=True)
    check_number("cutoff", cutoff, strict=True, maximum=fs / 2)
    n_taps, beta = check_integer("n_taps", n_taps, minimum=1), check_number("beta", beta)
    n = np.arange(n_taps) - (n_taps - 1) / 2.0
    h = np.sinc(2.0 * cutoff / fs * n) * np.kaiser(n_taps, beta)
    return h / h.sum()


class ERBFilterbank(nn.Module):
    """Zero-phase ERB half-cosine filterbank applied by FFT: ``[..., T] -> [..., n_filters, T]``.

    The filters are stored for ``signal_length`` samples (a float64 buffer, cast to the input's
    dtype at each call); other lengths get filters built on the fly. Filtering is circular over
    the rfft length ``T + pad``; give ``pad`` samples of zero padding to keep the end of a clip
    from ringing into its start. ``n_filters``, ``f_min`` and ``f_max`` as :func:`erb_cosine_filters` takes them,
    ``fs`` a rate (:func:`~xai_loc.checks.check_fs`), ``signal_length >= 1`` and ``pad >= 0`` integers.
    """

    def __init__(self, n_filters: int = 39, f_min: float = 30.0, f_max: float = 20000.0, fs: int = 48000,
                 signal_length: int = 48000, pad: int = 0) -> None:
        super().__init__()
        self.fs = check_fs(fs)
        self.signal_length = check_integer("signal_length", signal_length, minimum=1)
        self.pad = check_integer("pad", pad)
        filters, centres = erb_cosine_filters(self.signal_length + self.pad, self.fs, n_filters, f_min, f_max)
        self.n_filters, self.f_min, self.f_max = int(n_filters), float(f_min), float(f_max)  # checked there
        self.register_buffer("filters", torch.as_tensor(filters, dtype=torch.float64), persistent=False)
        self.centres = np.asarray(centres, dtype=np.float64)  # the frequency axis: no buffer, so no .half() casts it

    def response(self, length: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """Filter magnitudes ``(n_filters, (length + pad) // 2 + 1)`` for signals of ``length >= 1`` samples."""
        check_integer("length", length, minimum=1)
        if length == self.signal_length:
            return self.filters.to(device=device or self.filters.device, dtype=dtype)
        filters, _ = erb_cosine_filters(length + self.pad, self.fs, self.n_filters, self.f_min, self.f_max)
        return torch.as_tensor(filters, device=device or self.filters.device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1] + self.pad
        spec = torch.fft.rfft(x, n=n)
        resp = self.response(x.shape[-1], x.device, x.real.dtype)
        return torch.fft.irfft(spec.unsqueeze(-2) * resp, n=n)[..., : x.shape[-1]]

    def extra_repr(self) -> str:
        return f"n_filters={self.n_filters}, f_min={self.f_min:g}, f_max={self.f_max:g}, fs={self.fs}"


class SincDownsample(nn.Conv1d):
    """Kaiser-windowed sinc low-pass and decimation, ``[..., T] -> [..., ceil(T / factor)]``.

    A frozen single-channel ``nn.Conv1d`` (stride ``factor``, ``(taps - 1) / 2`` zeros on
    each side, so output sample ``m`` is centred on input sample ``m * factor``). With
    ``method="fft"`` the forward pass evaluates the same convolution by FFT (one rfft of
    the padded signal, one of the kernel, one irfft, then every ``factor``-th sample):
    O(T log T) instead of O(T x taps / factor). Any leading dims are folded into the batch.

    The weight holds the float32 rounding of the Kaiser design, which is kept in float64 as well
    (the ``design`` buffer): see :meth:`kernel` for which one a call uses.

    Raises
    ------
    InputError
        For rates that are not positive whole numbers (:func:`~xai_loc.checks.check_fs`) or whose ratio is not an
        integer, an ``n_taps`` that is not an odd positive integer, an unknown ``method``, a ``cutoff`` outside
        ``(0, out_fs / 2]`` or a Kaiser ``beta`` that is not a finite number >= 0 (:func:`kaiser_lowpass`).
    """

    def __init__(self, fs: int = 48000, out_fs: int = 8000, cutoff: float | None = None, n_taps: int = 4097,
                 beta: float = 5.0, method: str = "fft") -> None:
        fs, out_fs = check_fs(fs), check_fs(out_fs, "out_fs")
        if fs % out_fs:
            raise InputError(f"out_fs={out_fs} Hz is not allowed for fs={fs} Hz; the ratio must be an integer")
        if check_integer("n_taps", n_taps, minimum=1) % 2 != 1:
            raise InputError(f"n_taps={n_taps} is not allowed; give an odd positive number (linear phase, centred)")
        check_choice("method", method, DOWNSAMPLE_METHODS)
        cutoff = out_fs / 2.0 if cutoff is None else cutoff
        if not is_real(cutoff) or not 0 < cutoff <= out_fs / 2:
            raise InputError(f"cutoff={cutoff!r} Hz is not allowed; give 0 < cutoff <= out_fs / 2 = {out_fs / 2:g} Hz")
        design = kaiser_lowpass(float(cutoff), fs, n_taps, beta)  # checks beta
        factor, n_taps = fs // out_fs, int(n_taps)
        super().__init__(1, 1, n_taps, stride=factor, padding=(n_taps - 1) // 2, bias=False)
        self.cutoff, self.beta, self.method, self.factor = float(cutoff), float(beta), method, factor
        design = torch.as_tensor(design, dtype=torch.float64).view(1, 1, -1)
        self.register_buffer("design", design, persistent=False)
        with torch.no_grad():
            self.weight.copy_(design.float())
        self.weight.requires_grad_(False)

    def kernel(self, dtype: torch.dtype) -> torch.Tensor:
        """The kernel in ``dtype``: the design rounded to ``dtype`` while the weight still holds its float32
        rounding (cast to the weight's dtype: a float64 input gets the float64 design, a half-precision model's
        float32 computation the float32 kernel), else the weight (as loaded, or as an LRP rule modified it) cast
        to ``dtype``."""
        if torch.equal(self.weight, self.design.float().to(self.weight.dtype)):
            return self.design.to(dtype)
        return self.weight.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(-1, 1, x.shape[-1])
        kernel = self.kernel(x.dtype)
        if self.method == "conv":
            out = F.conv1d(flat, kernel, None, self.stride, self.padding)
        else:
            out = _fft_conv_strided(flat, kernel, self.padding[0], self.factor)
        return out.reshape(*lead, out.shape[-1])

    def extra_repr(self) -> str:
        return (f"taps={self.kernel_size[0]}, cutoff={self.cutoff:g}, beta={self.beta:g}, "
                f"factor={self.factor}, method={self.method!r}")


def _fft_conv_strided(x: torch.Tensor, weight: torch.Tensor, padding: int, stride: int) -> torch.Tensor:
    """``F.conv1d(x, weight, stride=stride, padding=padding)`` for one channel, via FFT."""
    n_in, k = x.shape[-1], weight.shape[-1]
    n_out = (n_in + 2 * padding - k) // stride + 1
    n_fft = _fast_len(n_in + k - 1)
    # Cross-correlation = convolution with the reversed kernel; full output index j is the
    # correlation at lag j - (k - 1), i.e. the padded conv output at j - (k - 1) + padding.
    spec = torch.fft.rfft(x, n=n_fft) * torch.fft.rfft(weight.flip(-1), n=n_fft)
    full = torch.fft.irfft(spec, n=n_fft)
    start = k - 1 - padding
    return full[..., start: start + (n_out - 1) * stride + 1: stride]


def _fast_len(n: int) -> int:
    from scipy.fft import next_fast_len

    return int(next_fast_len(int(n), real=True))


class _SafePow(torch.autograd.Function):
    """``max(x, 0) ** p`` with derivative ``p * max(x, eps) ** (p - 1)`` for ``x >= 0`` (finite at 0) and 0 for
    ``x < 0``, where the value is constant."""

    @staticmethod
    def forward(ctx, x, exponent: float, eps: float):
        ctx.save_for_backward(x)
        ctx.exponent, ctx.eps = exponent, eps
        return x.clamp(min=0.0).pow(exponent)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        p = ctx.exponent
        return torch.where(x < 0, 0.0, grad * p * x.clamp(min=ctx.eps).pow(p - 1.0)), None, None


class PowerCompression(nn.Module):
    """Power-law compression ``x ** exponent`` of non-negative inputs with a safe gradient at 0.

    The forward value is exact (``0 ** p == 0``; negatives count as 0, so their derivative is 0). The true
    derivative ``p x ** (p - 1)`` is infinite at 0, which turns into NaN wherever it meets a zero
    (ReLU masks, LRP's ``x * grad``); here it is evaluated at ``max(x, eps)``, so it is at
    most ``p * eps ** (p - 1)`` (about 2.4e4 for ``p = 0.3``, ``eps = 1e-7``, its value at 0) and exact for
    ``x >= eps``. Both ``exponent`` and ``eps`` must be finite and positive (``eps = 0`` would bring
    back the infinite gradient).
    """

    def __init__(self, exponent: float = 0.3, eps: float = 1e-7) -> None:
        super().__init__()
        self.exponent = check_number("exponent", exponent, strict=True)
        self.eps = check_number("eps", eps, strict=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SafePow.apply(x, self.exponent, self.eps)

    def extra_repr(self) -> str:
        return f"exponent={self.exponent:g}, eps={self.eps:g}"


@in_float32
class Cochleagram(nn.Module):
    """Waveforms ``[..., T]`` -> cochleagram ``[..., n_filters, ceil(T * out_fs / fs)]``.

    With the defaults, a binaural batch ``[B, 2, 48000]`` (1 s at 48 kHz) becomes
    ``[B, 2, 39, 8000]`` (Francl & McDermott, Nature Human Behaviour 2022). Samples must be
    floating point; float64 inputs get float64 accuracy (see :class:`ERBFilterbank`), float16 and
    bfloat16 ones are computed in float32 (:func:`~xai_loc.features.in_float32`).

    Parameters
    ----------
    n_filters, f_min, f_max
        ERB-spaced half-cosine bands (see :func:`erb_cosine_filters`).
    fs, out_fs
        Input and output rates in Hz; ``fs / out_fs`` must be an integer.
    exponent
        Power compression (0.3); ``1`` turns compression off.
    cutoff, n_taps, beta
        The anti-aliasing low-pass: cutoff in ``(0, out_fs / 2]`` Hz (default ``out_fs / 2``), 4097
        taps, Kaiser window shape ``beta >= 0`` (5; 0 is a rectangular window).
    signal_length
        Length the filterbank is precomputed for (others work, slightly slower).
    pad
        Zero padding of the FFT filtering in samples, ``>= 0`` (see :class:`ERBFilterbank`).
    downsample
        ``"fft"`` (fast) or ``"conv"`` (direct strided convolution, same numbers).
    eps
        Gradient guard of the compression (see :class:`PowerCompression`).
    """

    def __init__(self, n_filters: int = 39, f_min: float = 30.0, f_max: float = 20000.0, fs: int = 48000,
                 out_fs: int = 8000, exponent: float = 0.3, *, cutoff: float | None = None, n_taps: int = 4097,
                 beta: float = 5.0, signal_length: int = 48000, pad: int = 0, downsample: str = "fft",
                 eps: float = 1e-7) -> None:
        super().__init__()
        fs, out_fs = check_fs(fs), check_fs(out_fs, "out_fs")
        check_choice("downsample", downsample, DOWNSAMPLE_METHODS)  # SincDownsample's method
        self.fs, self.out_fs = fs, out_fs
        self.filterbank = ERBFilterbank(n_filters, f_min, f_max, fs, signal_length, pad)  # checks the bands
        self.rectify = nn.ReLU()
        self.downsample = SincDownsample(self.fs, self.out_fs, cutoff, n_taps, beta, downsample)
        self.rectify_envelope = nn.ReLU()
        self.compress = PowerCompression(exponent, eps)
        self.config = dict(n_filters=int(n_filters), f_min=float(f_min), f_max=float(f_max), fs=fs,
                           out_fs=out_fs, exponent=float(exponent), cutoff=cutoff, n_taps=int(n_taps),
                           beta=float(beta), signal_length=int(signal_length), pad=int(pad),
                           downsample=downsample, eps=float(eps))

    @property
    def centre_frequencies(self) -> np.ndarray:
        """Centre frequency of each band in Hz (the coordinate of the frequency axis)."""
        return self.filterbank.centres.copy()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_waveforms(x, ears=False)
        if x.dim() == 0 or x.shape[-1] < 1:
            raise InputError(f"waveforms of shape {tuple(x.shape)} are not allowed; give [..., samples] with at least "
                             f"one sample")
        if x.numel() == 0:  # no waveforms (an empty batch): the FFTs refuse empty inputs
            return x.new_zeros(*x.shape[:-1], self.filterbank.n_filters, -(-x.shape[-1] // self.downsample.factor))
        x = self.filterbank(x)
        x = self.rectify(x)
        x = self.downsample(x)
        x = self.rectify_envelope(x)
        return self.compress(x)


__all__ = [
    "Cochleagram", "ERBFilterbank", "SincDownsample", "PowerCompression",
    "freq_to_erb", "erb_to_freq", "erb_cosine_filters", "kaiser_lowpass", "DOWNSAMPLE_METHODS",
]
