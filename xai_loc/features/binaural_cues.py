"""Binaural cue maps: per-band ITD, ILD and IC from a gammatone filterbank (seed 002).

Waveforms ``[B, 2 ears (left, right), T]`` at 44.1 kHz become cue maps
``[B, 3 cues (itd, ild, ic), 32 bands, frames]``:

1. :class:`GammatoneFilterbank`: 32 fourth-order gammatone filters (Patterson et al. 1992;
   ``t^3 exp(-2 pi 1.019 ERB(fc) t) cos(2 pi fc t)``, ERB of Glasberg & Moore 1990) with
   centres equally spaced on the ERB-number scale from 80 Hz to ``f_max`` (8 kHz: the shipped
   speech is band-limited there). The filters are *FIR*: each impulse response is sampled
   until its envelope has decayed 60 dB (about 56 ms after the envelope peak in the 80 Hz
   band), shifted so that the envelope peaks at the kernel centre (every band's delay is
   compensated, so frame ``f`` of every band covers the same stretch of sound) and scaled to
   unit gain at its centre frequency. They are applied by FFT convolution: linear, bias-free,
   differentiable, with no recursive (IIR) state. The shift is the same for both ears, so it
   leaves the interaural cues untouched.
2. :class:`RunningCrossCorrelation`: per band and frame the normalized cross-correlation
   ``c(tau) = sum_t l(t) r(t + tau) / sqrt(sum_t l(t)^2 sum_t r(t + tau)^2)`` over a
   rectangular 10 ms window (the "10 ms smoothing"), frames every ``hop_ms`` (10 ms), for
   every integer lag ``|tau| <= 1 ms`` (+-44 samples at 44.1 kHz), computed for all frames,
   bands and lags at once by FFT. Then

   - ``ITD`` = the lag of the maximum, in **ms**; positive when the left ear leads (the
     sound reaches the left ear first: a source on the left, SOFA azimuth 90);
   - ``ILD`` = ``10 log10(E_left / E_right(tau*))`` in **dB**, the energies of the two
     windows at that lag, clipped to +-7 dB; positive when the left ear is louder;
   - ``IC`` = that maximum, clipped to [0, 1].

   A window is silent when its energy is 100 dB or more below the example's loudest window (or
   below 1e-20). Both ears silent give ITD 0 (the lag range's centre), ILD 0, IC 0; one silent
   ear gives ITD 0, IC 0 and the clipped ILD toward the ear with sound (+-7 dB).

Frames: ``frames = (T - window) // hop + 1``; frame ``f`` covers samples
``[f hop, f hop + window)``, i.e. it is centred at ``(f hop + window / 2) / fs`` seconds
(:meth:`BinauralCues.frame_times`). A 0.5 s clip at the defaults gives 50 frames.

What is differentiable: the filterbank is linear. ``IC`` is the value of the correlation at
its maximum and ``ILD`` the energy ratio at the maximizing lag, so both have gradients with
respect to the waveform (the lag held fixed, as a max-pool's winner is). ``ITD`` is the
*index* of the maximum: piecewise constant in the waveform, gradient zero everywhere it
exists. LRP therefore explains a cue network down to the cue map only
(:mod:`xai_loc.explain.cuenet`); no relevance is sent through the arg-max, and none
through the normalizations or the logarithm, which have no LRP rule.

:func:`simulate_cue_scenes` caches the cue maps of the cue network's scenes
(:mod:`xai_loc.data.cue_scenes`), computed by this front end.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from xai_loc.checks import check_fs, check_integer, check_number, shown
from xai_loc.errors import InputError
from xai_loc.features import check_waveforms, in_float32
from xai_loc.features.cochleagram import _fast_len, erb_to_freq, freq_to_erb

__all__ = ["CUES", "BinauralCues", "GammatoneFilterbank", "RunningCrossCorrelation", "erb_bandwidth",
           "gammatone_kernels", "simulate_cue_scenes"]

#: Cue names in the order of the cue axis of :class:`BinauralCues`' output, and their units.
CUES: tuple[str, ...] = ("itd", "ild", "ic")
CUE_UNITS: dict[str, str] = {"itd": "ms", "ild": "dB", "ic": "1"}
#: Gammatone order and bandwidth factor (Patterson et al. 1992).
GAMMATONE_ORDER, GAMMATONE_B = 4, 1.019
#: Level (relative to the envelope peak) at which a gammatone kernel is cut.
KERNEL_FLOOR_DB = -60.0
#: Longest lag, window and hop of :class:`BinauralCues` in ms: a minute, longer than any clip it takes, and short
#: enough that every sample count stays a finite integer.
MAX_MS = 60_000.0
#: Energy below which a window counts as silent: 100 dB below the example's loudest window (any
#: ear, band, frame or lag), and at least 1e-20 (absolute, squared waveform units).
_SILENT_RELATIVE, _SILENT = 1e-10, 1e-20


def erb_bandwidth(freq) -> np.ndarray:
    """Equivalent rectangular bandwidth in Hz, ``24.7 (4.37 f / 1000 + 1)`` (Glasberg & Moore 1990)."""
    return 24.7 * (4.37e-3 * np.asarray(freq, dtype=np.float64) + 1.0)


def gammatone_kernels(centres, fs: float, floor_db: float = KERNEL_FLOOR_DB) -> np.ndarray:
    """FIR gammatone kernels ``(bands, taps)`` (odd ``taps``), envelope peak at the centre tap.

    Each kernel is ``t^3 exp(-2 pi b ERB t) cos(2 pi fc t)`` with ``t`` measured from the
    filter onset, sampled so that its envelope peak (at ``3 / (2 pi b ERB)``) falls on the
    centre tap, cut where the envelope of the lowest band has decayed by ``floor_db``, and
    scaled to unit magnitude response at ``fc``.

    Raises
    ------
    InputError
        Unless ``fs`` is a positive number, ``centres`` a 1-D array of frequencies in ``(0, fs / 2)`` Hz and
        ``floor_db`` a level in [-1000, -1] dB.
    """
    fs = check_number("fs", fs, strict=True)
    check_number("floor_db", floor_db, minimum=-1000.0, maximum=-1.0)
    try:
        given = np.asarray(centres)
    except ValueError:  # a ragged list
        given = np.empty(0)
    if given.ndim != 1 or not given.size or given.dtype.kind not in "iuf" \
            or not np.all((given > 0) & (given < fs / 2)):  # NaN fails the comparisons
        raise InputError(f"centres={shown(centres)} is not allowed; use a 1-D array of frequencies in (0, fs / 2 = "
                         f"{fs / 2:g}) Hz")
    centres = given.astype(np.float64)
    rate = 2.0 * math.pi * GAMMATONE_B * erb_bandwidth(centres)
    n = GAMMATONE_ORDER - 1
    # envelope e(t) = t^n exp(-rate t); find the decay to floor_db after the peak of the slowest band
    slow = float(rate.min())
    t = np.linspace(n / slow, 60.0 * n / slow, 200_000)
    level = n * np.log(t * slow / n) - (t * slow - n)
    t_end = float(t[np.argmax(level < floor_db / 20.0 * math.log(10.0))])
    half = int(math.ceil((t_end - n / slow) * fs))
    m = np.arange(-half, half + 1)
    tt = m[None, :] / fs + n / rate[:, None]
    env = np.where(tt > 0, np.clip(tt, 0, None) ** n * np.exp(-rate[:, None] * np.clip(tt, 0, None)), 0.0)
    kernels = env * np.cos(2.0 * math.pi * centres[:, None] * tt)
    gain = np.abs((kernels * np.exp(-2j * math.pi * centres[:, None] * m[None, :] / fs)).sum(axis=1))
    return kernels / gain[:, None]


class GammatoneFilterbank(nn.Module):
    """FIR gammatone filterbank by FFT convolution: ``[..., T] -> [..., bands, T]`` ('same', zero-phase-aligned).

    Linear and bias-free; the kernels are a fixed float64 buffer (not saved in state dicts), cast to the
    input's dtype at each call (float64 inputs get float64 accuracy). ``fs``: the sample rate in Hz, a positive
    whole number (:func:`~xai_loc.checks.check_fs`).
    """

    def __init__(self, fs: float, centres) -> None:
        super().__init__()
        self.fs = check_fs(fs)
        self.register_buffer("kernels", torch.as_tensor(gammatone_kernels(centres, self.fs), dtype=torch.float64),
                             persistent=False)

    @property
    def n_taps(self) -> int:
        return int(self.kernels.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, k = x.shape[-1], self.n_taps
        n_fft = _fast_len(n + k - 1)
        spec = torch.fft.rfft(x, n=n_fft)[..., None, :] * torch.fft.rfft(self.kernels.to(x.dtype), n=n_fft)
        full = torch.fft.irfft(spec, n=n_fft)
        start = (k - 1) // 2
        return full[..., start:start + n]

    def extra_repr(self) -> str:
        return f"fs={self.fs:g}, bands={self.kernels.shape[0]}, taps={self.n_taps}"


class RunningCrossCorrelation(nn.Module):
    """Per-band running normalized cross-correlation of two ears -> ITD, ILD, IC (see the module docs).

    Input: band signals ``[B, 2, bands, T]``; output ``[B, 3, bands, frames]`` (ITD ms, ILD dB, IC).
    ``fs`` is a rate (:func:`~xai_loc.checks.check_fs`), ``max_lag >= 0``, ``window >= 1`` and ``hop >= 1`` are
    integers of samples and ``ild_limit > 0`` is in dB.
    """

    def __init__(self, fs: float, max_lag: int, window: int, hop: int, ild_limit: float) -> None:
        super().__init__()
        self.fs, self.max_lag = check_fs(fs), check_integer("max_lag", max_lag)
        self.window, self.hop = check_integer("window", window, minimum=1), check_integer("hop", hop, minimum=1)
        self.ild_limit = check_number("ild_limit", ild_limit, strict=True)

    def n_frames(self, n_samples: int) -> int:
        """Frames of a signal of ``n_samples >= 0`` samples (0 or fewer when it is shorter than a window)."""
        return (check_integer("n_samples", n_samples) - self.window) // self.hop + 1

    def correlation(self, bands: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw cross-products ``c [.., frames, lags]``, left energies ``[.., frames, 1]`` and
        right energies ``[.., frames, lags]`` per lag ``-max_lag .. max_lag``."""
        m, w, h = self.max_lag, self.window, self.hop
        left, right = bands[:, 0], bands[:, 1]
        n_frames = self.n_frames(bands.shape[-1])
        lf = left.unfold(-1, w, h)[..., :n_frames, :]                                   # [B, K, F, W]
        rf = nn.functional.pad(right, (m, m)).unfold(-1, w + 2 * m, h)[..., :n_frames, :]  # [B, K, F, W + 2M]
        n_fft = _fast_len(w + 2 * m)
        cross = torch.fft.irfft(torch.fft.rfft(lf, n=n_fft).conj() * torch.fft.rfft(rf, n=n_fft), n=n_fft)
        cross = cross[..., :2 * m + 1]
        e_left = (lf * lf).sum(-1, keepdim=True)
        csum = nn.functional.pad(torch.cumsum(rf * rf, dim=-1), (1, 0))
        e_right = csum[..., w:w + 2 * m + 1] - csum[..., :2 * m + 1]
        return cross, e_left, e_right.clamp_min(0.0)

    def forward(self, bands: torch.Tensor) -> torch.Tensor:
        cross, e_left, e_right = self.correlation(bands)
        # Silence is relative: the FFT filterbank leaves rounding noise (about 1e-14 of the signal's
        # energy in float32) where the sound is digitally silent, which an absolute floor reads as sound.
        loudest = torch.maximum(e_left.flatten(1).amax(1), e_right.flatten(1).amax(1)).detach()
        floor = (loudest * _SILENT_RELATIVE).clamp_min(_SILENT).view(-1, 1, 1, 1)
        silent = (e_left <= floor) | (e_right <= floor)
        ncc = torch.where(silent, torch.zeros_like(cross),
                          cross / torch.sqrt(torch.where(silent, torch.ones_like(cross), e_left * e_right)))
        ic, k = ncc.max(dim=-1, keepdim=True)
        itd = (k.to(bands.dtype) - self.max_lag) * (1000.0 / self.fs)
        e_r = e_right.gather(-1, k)
        left_quiet, right_quiet = e_left <= floor, e_r <= floor
        ild = (10.0 * torch.log10(e_left.clamp_min(floor) / e_r.clamp_min(floor))).clamp(-self.ild_limit,
                                                                                          self.ild_limit)
        # one silent ear: the largest level difference there is, toward the ear with sound; both: none
        limit = torch.full_like(ild, self.ild_limit)
        ild = torch.where(right_quiet, limit, torch.where(left_quiet, -limit, ild))
        ild = torch.where(left_quiet & right_quiet, torch.zeros_like(ild), ild)
        itd = torch.where(left_quiet | right_quiet, torch.zeros_like(itd), itd)
        return torch.stack([itd[..., 0], ild[..., 0], ic[..., 0].clamp(0.0, 1.0)], dim=1)

    def extra_repr(self) -> str:
        return f"max_lag={self.max_lag}, window={self.window}, hop={self.hop}, ild_limit={self.ild_limit:g}"


@in_float32
class BinauralCues(nn.Module):
    """Gammatone ITD/ILD/IC cue maps of binaural waveforms (seed 002); see the module docs.

    Parameters
    ----------
    fs
        Sample rate in Hz (44100).
    n_bands, f_min, f_max
        Gammatone bands equally spaced in ERB number from ``f_min`` to ``f_max`` Hz (32, 80, 8000).
    max_lag_ms
        Largest interaural lag searched, ms (1.0).
    window_ms, hop_ms
        Rectangular correlation window (the smoothing) and frame hop, ms (10, 10). These three are at most
        :data:`MAX_MS` and at least one sample each.
    ild_limit
        ILD clip in dB (7).
    """

    #: Names of the cue axis of the output, and their units.
    cue_names: ClassVar[tuple[str, ...]] = CUES
    cue_units: ClassVar[dict[str, str]] = CUE_UNITS

    def __init__(self, fs: int = 44100, n_bands: int = 32, f_min: float = 80.0, f_max: float = 8000.0,
                 max_lag_ms: float = 1.0, window_ms: float = 10.0, hop_ms: float = 10.0,
                 ild_limit: float = 7.0) -> None:
        super().__init__()
        fs = check_fs(fs)
        if fs < 1000:
            raise InputError(f"fs={fs} is not allowed; use an integer sample rate >= 1000 Hz")
        self.fs, self.n_bands = fs, check_integer("n_bands", n_bands, minimum=1)
        f_min, f_max = check_number("f_min", f_min, strict=True), check_number("f_max", f_max, strict=True)
        if not f_min < f_max < fs / 2:
            raise InputError(f"f_min={f_min:g}, f_max={f_max:g} are not allowed; use f_min < f_max < fs / 2 = "
                             f"{fs / 2:g} Hz")
        self.f_min, self.f_max = f_min, f_max
        durations = {name: check_number(name, value, strict=True, maximum=MAX_MS)
                     for name, value in (("max_lag_ms", max_lag_ms), ("window_ms", window_ms), ("hop_ms", hop_ms))}
        samples = {name: round(ms * 1e-3 * fs) for name, ms in durations.items()}
        for name, n in samples.items():
            if n < 1:
                raise InputError(f"{name}={durations[name]!r} is not allowed; use at least one sample, "
                                 f"{1e3 / fs:.3g} ms at fs={fs}")
        self.max_lag_ms, self.window_ms, self.hop_ms = durations.values()
        self.max_lag, self.window, self.hop = samples.values()
        self.ild_limit = check_number("ild_limit", ild_limit, strict=True)
        self._centres = erb_to_freq(np.linspace(freq_to_erb(f_min), freq_to_erb(f_max), self.n_bands))
        self.filterbank = GammatoneFilterbank(fs, self._centres)
        self.correlator = RunningCrossCorrelation(fs, self.max_lag, self.window, self.hop, self.ild_limit)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {"fs": self.fs, "n_bands": self.n_bands, "f_min": self.f_min, "f_max": self.f_max,
                "max_lag_ms": self.max_lag_ms, "window_ms": self.window_ms, "hop_ms": self.hop_ms,
                "ild_limit": self.ild_limit}

    @property
    def centre_frequencies(self) -> np.ndarray:
        """Centre frequency of each band in Hz."""
        return self._centres.copy()

    def n_frames(self, n_samples: int) -> int:
        """Frames of the cue map of ``n_samples`` samples."""
        n = self.correlator.n_frames(n_samples)
        if n < 1:
            raise InputError(f"{n_samples} samples are shorter than one {self.window_ms:g} ms window")
        return n

    def frame_times(self, n_samples: int) -> np.ndarray:
        """Centre of each frame in seconds."""
        return (np.arange(self.n_frames(n_samples)) * self.hop + self.window / 2) / self.fs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Cue maps ``[B, 3 (itd ms, ild dB, ic), bands, frames]`` of waveforms ``[B, 2 (left, right), T]``."""
        check_waveforms(x)
        n_frames = self.n_frames(x.shape[-1])
        if x.shape[0] == 0:  # an empty batch: the FFTs refuse empty inputs
            return x.new_zeros(0, len(CUES), self.n_bands, n_frames)
        return self.correlator(self.filterbank(x))

    def extra_repr(self) -> str:
        return f"fs={self.fs}, bands={self.n_bands} ({self.f_min:g}-{self.f_max:g} Hz)"


def simulate_cue_scenes(spec, split: str, *, root: str | Path | None = None, batch_size: int = 16,
                        progress: bool = False) -> Path:
    """Render the scenes of a :class:`~xai_loc.data.cue_scenes.CueSceneSpec` split and cache their cue maps.

    The front end is the spec's (:class:`BinauralCues` with ``spec.front_end`` options at
    ``spec.fs``); the store is :func:`xai_loc.data.cue_scenes.write_cue_scenes`'s (resumable;
    returned at once if it exists), which checks ``batch_size`` and ``progress``.
    """
    from xai_loc.data.cue_scenes import CueSceneSpec, write_cue_scenes

    if not isinstance(spec, CueSceneSpec):
        raise InputError(f"spec={shown(spec)} is not allowed; give a CueSceneSpec")
    front_end = BinauralCues(**{"fs": spec.fs, **spec.front_end})
    return write_cue_scenes(spec, split, front_end, root=root, batch_size=batch_size, progress=progress)
