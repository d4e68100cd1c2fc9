"""Binaural cue probes of direction classifiers: duplex-theory weights, relevance, behaviour.

**Duplex probe** (after Macpherson & Middlebrooks, JASA 2002). Band-limited noise bursts
(:data:`BANDS`: low 0.5-2 kHz, high 4-16 kHz, wide 0.5-16 kHz) are rendered in free field
through KEMAR at known azimuths on the horizontal plane, then an interaural time difference
(ITD, microseconds, the whole waveform delayed: fine structure and envelope) or level
difference (ILD, dB) offset is imposed. The model's response is read as a lateral angle
``asin(sin az cos el)`` (degrees, 90 = left; blind to front-back confusions), and its shift
per microsecond or per dB is the raw cue slope. Multiplying by the natural cue gradient of
the KEMAR HRIRs in that band (microseconds or dB per degree of lateral angle) gives the
*weight*: 1 when an imposed cue moves the response as far as the same natural change of
that cue would, 0 when the cue is ignored. Listeners weight ITD in low-pass noise (weight
near 1) and ILD in high-pass noise (duplex theory). Signs: a positive offset means the left
ear leads (ITD) or is louder (ILD), both pointing to the left, i.e. towards larger lateral
angles.

**Relevance view.** LRP (:func:`~xai_loc.explain.cochcnn.explain_cochcnn`, composite
``'cochcnn'``) through the CNN and the cochleagram front end gives relevance on the
cochleagram, dims ``(example, ear, frequency, time)`` with frequency coords in Hz, and on the
waveform, ``(example, ear, time)``. :func:`duplex_relevance` reports the relevance mass per
band and ear for the probe's ITD stimuli, and the interaural lag of the left/right
cross-correlation of the waveform relevance against the stimulus ITD (slope 1: relevance
carries the ITD).

**Behaviour.** :func:`behaviour_statistics` summarizes responses on a binaural test store
Hofman-style (Hofman, Van Riswick & Van Opstal, Nat. Neurosci. 1998): elevation gain
(regression slope of response on target elevation), azimuth and elevation RMSE, response
variability per target, front-back confusions; :func:`run_behaviour` writes them beside the
responses.

:func:`run_duplex_probe` and :func:`run_behaviour` write results only (``duplex.nc``,
``duplex_relevance.nc``, ``responses.nc``); :mod:`xai_loc.plots.hofman` draws them
(``cues.png``, ``hofman.png``), also from the stored files (``xai-loc figures``).

Any module that maps waveforms ``[B, 2, T]`` to logits over a head's classes can be
probed (``head``: ``'azel'`` 504 classes or ``'azimuth'`` 72, in label order of
:mod:`xai_loc.models.cochleagram_cnn`).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xai_loc import __version__
from xai_loc.checks import check_integer, is_integer, is_real
from xai_loc.errors import InputError

__all__ = [
    "BANDS", "DUPLEX_SPLIT_HZ", "band_noise", "behaviour_statistics", "duplex_probe", "duplex_relevance",
    "impose_ild", "impose_itd", "interaural_lag", "natural_cues", "run_behaviour", "run_duplex_probe",
]

#: Frequency (Hz) below which interaural phase (ITD) cues dominate human lateralization and above
#: which level (ILD) cues do (duplex theory): the split of every duplex summary in xai-loc, and the
#: lowest band edge from which interaural delays are measured on the Hilbert envelope (the fine
#: structure is ambiguous within a cycle up there; :func:`natural_cues`, :func:`duplex_relevance`).
DUPLEX_SPLIT_HZ = 1500.0
#: Noise bands of the duplex probe, Hz (Macpherson & Middlebrooks 2002).
BANDS: dict[str, tuple[float, float]] = {"low": (500.0, 2000.0), "high": (4000.0, 16000.0),
                                         "wide": (500.0, 16000.0)}
#: Default probe azimuths as lateral angles in the front (degrees, 90 = left).
PROBE_AZIMUTHS = (-45.0, -30.0, -15.0, 0.0, 15.0, 30.0, 45.0)
ITD_OFFSETS_US = (-300.0, -150.0, 0.0, 150.0, 300.0)
ILD_OFFSETS_DB = (-10.0, -5.0, 0.0, 5.0, 10.0)
#: Response readouts: arg-max class, or the posterior mean of the lateral angle.
RESPONSES = ("argmax", "mean")


# -- signals ----------------------------------------------------------------------------------------


def _band_edges(band: str | tuple[float, float], fs: float) -> tuple[float, float]:
    """``(low, high)`` Hz of a band: a name in :data:`BANDS`, or the pair itself; one line (:class:`InputError`)
    unless ``0 <= low < high <= fs/2``."""
    if isinstance(band, str):
        if band not in BANDS:
            raise InputError(f"band {band!r} is not allowed; use one of {', '.join(BANDS)} or (low, high) Hz")
        band = BANDS[band]
    edges = tuple(np.ravel(band).tolist())
    if len(edges) != 2 or not (is_real(edges[0]) and is_real(edges[1]) and 0 <= edges[0] < edges[1] <= fs / 2):
        raise InputError(f"band {edges} Hz is not allowed at fs={fs} Hz; need 0 <= low < high <= fs/2")
    return float(edges[0]), float(edges[1])


def band_noise(band: str | tuple[float, float], n: int, fs: int, rng: np.random.Generator,
               ramp_ms: float = 10.0) -> np.ndarray:
    """Gaussian noise ``(n,)`` with a flat spectrum inside the band (a name in :data:`BANDS` or
    ``(low, high)`` Hz) and nothing outside, raised-cosine ramps of ``ramp_ms``, unit RMS."""
    low, high = _band_edges(band, fs)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / fs)
    spec[(f < low) | (f > high)] = 0.0
    x = np.fft.irfft(spec, n)
    k = min(int(fs * ramp_ms / 1000.0), n // 2)
    if k > 0:
        r = 0.5 * (1.0 - np.cos(np.pi * np.arange(k) / k))
        x[:k] *= r
        x[-k:] *= r[::-1]
    return x / max(float(np.sqrt(np.mean(x ** 2))), 1e-20)


def _shift(x: np.ndarray, delay: np.ndarray, fs: int, pad: int) -> np.ndarray:
    """Delay the last axis by ``delay`` seconds (broadcast over leading axes) with FFT, zero-padded."""
    n = x.shape[-1]
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)])
    m = padded.shape[-1]
    f = np.fft.rfftfreq(m, 1.0 / fs)
    spec = np.fft.rfft(padded, axis=-1) * np.exp(-2j * np.pi * f * np.asarray(delay)[..., None])
    return np.fft.irfft(spec, m, axis=-1)[..., pad:pad + n]


def impose_itd(x: np.ndarray, itd_us, fs: int) -> np.ndarray:
    """Add an interaural delay to ear signals ``(..., 2, T)``: left advanced and right delayed by
    half of ``itd_us`` each (positive: left leads). Whole-waveform delay by FFT phase.

    ``itd_us`` broadcasts against the leading axes ``x.shape[:-2]`` (e.g. ``x`` of shape
    ``(A, 1, 2, T)`` and offsets ``(1, O)`` give ``(A, O, 2, T)``).
    """
    x = np.asarray(x, dtype=np.float64)
    itd = np.asarray(itd_us, dtype=np.float64) * 1e-6
    lead = np.broadcast_shapes(x.shape[:-2], itd.shape)
    half = np.stack([np.broadcast_to(-itd / 2.0, lead), np.broadcast_to(itd / 2.0, lead)], axis=-1)
    pad = int(math.ceil(np.max(np.abs(itd), initial=0.0) * fs)) + 32
    return _shift(np.broadcast_to(x, (*lead, *x.shape[-2:])), half, fs, pad)


def impose_ild(x: np.ndarray, ild_db) -> np.ndarray:
    """Add an interaural level difference: left ``+ild/2`` dB, right ``-ild/2`` dB (positive: left louder).

    ``ild_db`` broadcasts against the leading axes ``x.shape[:-2]``.
    """
    x = np.asarray(x, dtype=np.float64)
    ild = np.asarray(ild_db, dtype=np.float64)
    gain = np.stack([10.0 ** (ild / 40.0), 10.0 ** (-ild / 40.0)], axis=-1)
    return x * gain[..., None]


def interaural_lag(x, fs: float, max_lag: float = 1e-3, upsample: int = 8, envelope: bool = False) -> np.ndarray:
    """Interaural lag in microseconds of ear signals ``(..., 2, T)``: the maximum of the
    cross-correlation ``c(tau) = sum_t left(t) right(t + tau)`` within ``+-max_lag`` seconds.

    Positive when the left ear leads. The correlation is evaluated at ``1 / (upsample fs)``
    steps (zero-padded spectrum) and refined by a parabola through the peak. ``envelope``
    correlates Hilbert envelopes instead (for high-frequency carriers). NaN where no lag is
    measurable: an ear without signal (all zero, 200 dB below the other ear, or with
    ``envelope`` a flat envelope), ears with nothing in common (a correlation peak below
    1e-9 of its Cauchy-Schwarz bound, i.e. rounding), or a maximum on the window's edge
    (``+-max_lag``: the correlation still rises beyond it, so the true lag lies outside).
    """
    from scipy.signal import hilbert

    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or x.shape[-2] != 2:
        raise InputError(f"signals of shape {x.shape} are not allowed; give (..., 2 ears, samples)")
    half_width = max_lag * fs * upsample  # in lag steps of 1 / (upsample fs); none would search every lag
    if not (math.isfinite(half_width) and round(half_width) >= 1):
        raise InputError(f"max_lag={max_lag!r} is not allowed; use more than {0.5 / (fs * upsample):.4g} s "
                         "(half a lag step, 1 / (upsample fs))")
    loudest = (x**2).sum(axis=-1).max(axis=-1)
    if envelope:
        x = np.abs(hilbert(x, axis=-1))
        x = x - x.mean(axis=-1, keepdims=True)
    n = x.shape[-1]
    m = 1 << int(math.ceil(math.log2(2 * n)))
    spec = np.conj(np.fft.rfft(x[..., 0, :], m)) * np.fft.rfft(x[..., 1, :], m)
    cc = np.fft.irfft(spec, m * upsample, axis=-1)
    k = int(round(half_width))
    window = np.concatenate([cc[..., -k:], cc[..., :k + 1]], axis=-1)  # lags -k .. k
    i = np.argmax(window, axis=-1)
    lo, hi = np.clip(i - 1, 0, 2 * k), np.clip(i + 1, 0, 2 * k)
    y0 = np.take_along_axis(window, lo[..., None], -1)[..., 0]
    y1 = np.take_along_axis(window, i[..., None], -1)[..., 0]
    y2 = np.take_along_axis(window, hi[..., None], -1)[..., 0]
    denom = y0 - 2 * y1 + y2
    frac = np.where((np.abs(denom) > 1e-30) & (lo < i) & (i < hi), 0.5 * (y0 - y2) / np.where(denom == 0, 1, denom),
                    0.0)
    lag = (i - k + frac) / (fs * upsample)
    # a silent ear makes the correlation zero (or rounding) at every lag, and its arg-max would be
    # anywhere, e.g. the window's first lag (-max_lag): a number that looks measured
    energy = (x**2).sum(axis=-1)
    silent = (energy <= 1e-20 * loudest[..., None]).any(axis=-1)
    bound = np.sqrt(energy[..., 0] * energy[..., 1]) / upsample  # irfft at m * upsample points scales by 1/upsample
    unrelated = np.abs(window).max(axis=-1) <= 1e-9 * bound
    edge = (i == 0) | (i == 2 * k)
    return np.where(silent | unrelated | edge, np.nan, lag * 1e6)[()]


def _band_filter(x: np.ndarray, band: tuple[float, float], fs: int) -> np.ndarray:
    n = x.shape[-1]
    m = 1 << int(math.ceil(math.log2(n + 1)))
    f = np.fft.rfftfreq(m, 1.0 / fs)
    spec = np.fft.rfft(x, m, axis=-1)
    spec[..., (f < band[0]) | (f > band[1])] = 0.0
    return np.fft.irfft(spec, m, axis=-1)


def natural_cues(band: str | tuple[float, float], lateral=None, hrtf=None,
                 fs: int = 48000) -> dict[str, np.ndarray]:
    """ITD (microseconds) and ILD (dB) of the HRIRs on the horizontal plane, in a band (a name in :data:`BANDS`
    or ``(low, high)`` Hz, ``0 <= low < high <= fs/2``).

    Directions are lateral angles in the front (azimuth ``lateral mod 360``, elevation 0;
    default -90..90 in steps of 5 degrees).
    The ITD is the lag of the HRIRs' cross-correlation (:func:`interaural_lag`; Hilbert
    envelopes for bands starting at or above :data:`DUPLEX_SPLIT_HZ`, where the fine structure
    is ambiguous), the ILD the ratio of the band energies; both positive to the left.
    ``hrtf``: an :class:`~xai_loc.acoustics.hrtf.HRTFSet` (default KEMAR).
    """
    from xai_loc.acoustics.binaural import hrtf_at

    low_high = _band_edges(band, fs)
    hrtf = hrtf_at(hrtf, fs)
    lateral = np.arange(-90.0, 91.0, 5.0) if lateral is None else np.asarray(lateral, dtype=np.float64)
    h = _band_filter(hrtf.interpolate(np.mod(lateral, 360.0), np.zeros_like(lateral)), low_high, fs)
    itd = interaural_lag(h, fs, envelope=low_high[0] >= DUPLEX_SPLIT_HZ)
    energy = np.sum(h ** 2, axis=-1)
    ild = 10.0 * np.log10(np.maximum(energy[:, 0], 1e-30) / np.maximum(energy[:, 1], 1e-30))
    return {"lateral": lateral, "itd": itd, "ild": ild}


def _local_slope(x: np.ndarray, y: np.ndarray, at: np.ndarray, half_width: float = 15.0) -> np.ndarray:
    """Least-squares slope dy/dx of samples within ``+-half_width`` of each point of ``at``."""
    out = np.empty(len(at))
    for j, a in enumerate(at):
        near = np.abs(x - a) <= half_width + 1e-9
        out[j] = np.polyfit(x[near], y[near], 1)[0]
    return out


# -- model responses -----------------------------------------------------------------------------


def _head_of(model: nn.Module, head: str | None) -> str:
    from xai_loc.models.cochleagram_cnn import HEADS

    head = head or getattr(model, "head_name", None)
    if head not in HEADS:
        raise InputError(f"head={head!r} is not allowed; give one of {', '.join(HEADS)} for this model")
    return head


def _responses(model: nn.Module, waveforms: np.ndarray, head: str, response: str, batch_size: int,
               device: torch.device) -> np.ndarray:
    """Lateral angle (degrees) of the model's response to each waveform ``(n, 2, T)``."""
    from xai_loc.models.classifier_training import _forward, lateral_angle
    from xai_loc.models.cochleagram_cnn import HEAD_GRIDS

    lat = lateral_angle(*HEAD_GRIDS[head].directions())
    out = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for s in range(0, len(waveforms), batch_size):
                x = torch.as_tensor(waveforms[s:s + batch_size], dtype=torch.float32, device=device)
                logits = _forward(model, x).double().cpu().numpy()
                if response == "argmax":
                    out.append(lat[logits.argmax(axis=1)])
                else:
                    p = np.exp(logits - logits.max(axis=1, keepdims=True))
                    out.append((p / p.sum(axis=1, keepdims=True)) @ lat)
    finally:
        model.train(was_training)
    return np.concatenate(out)


def _model_rate(model: nn.Module, fs: int | None, n_samples: int | None) -> tuple[int, int]:
    """The stimuli's rate and length: the model's (its ``fs`` and ``n_samples``), which the given
    values may repeat but not change; the given ones for a model without them (rate default 48 kHz)."""
    out = {}
    for name, given in (("fs", fs), ("n_samples", n_samples)):
        own = getattr(model, name, None)
        if given is not None and not (is_integer(given) and given >= 1):
            raise InputError(f"{name}={given!r} is not allowed; use a positive integer")
        if given is not None and own is not None and given != own:
            raise InputError(f"{name}={given!r} does not match the model's {name}={own}; leave it out or give "
                             "the model's")
        out[name] = given if own is None else own
    if out["n_samples"] is None:
        raise InputError("the model has no n_samples; give n_samples (waveform length) for the stimuli")
    return int(out["fs"] or 48000), int(out["n_samples"])


def _checked_offsets(name: str, values) -> np.ndarray:
    """Imposed cue offsets: at least two, finite, 0 (the reference) among them."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size < 2 or not np.isfinite(values).all() or 0.0 not in values:
        raise InputError(f"{name}={values.tolist()} is not allowed; give at least two finite offsets including 0")
    return values


def _checked_probe(bands: str | Sequence[str], azimuths, itd_offsets, n_tokens: int, level_db: float,
                   batch_size: int, seed: int) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """The probe's bands (a name or names), azimuths (lateral angles), ITD offsets, token count, level,
    batch size and seed, checked; the bands as a tuple, azimuths and offsets as arrays."""
    from xai_loc.acoustics.binaural import check_level

    names = (bands,) if isinstance(bands, str) else tuple(bands) if isinstance(bands, list | tuple) else ()
    if not names or any(not isinstance(b, str) or b not in BANDS for b in names):
        raise InputError(f"bands={bands!r} is not allowed; give one or some of {', '.join(BANDS)}")
    check_level(level_db)
    azimuths = np.asarray(azimuths, dtype=np.float64)
    if azimuths.ndim != 1 or azimuths.size == 0 or not np.all(np.abs(azimuths) <= 90):
        raise InputError(f"azimuths={azimuths.tolist()} are not allowed; give lateral angles in [-90, 90] degrees")
    for name, value, least in (("n_tokens", n_tokens, 1), ("batch_size", batch_size, 1), ("seed", seed, 0)):
        check_integer(name, value, minimum=least)
    return names, azimuths, _checked_offsets("itd_offsets", itd_offsets)


def _lateral_brirs(azimuths: np.ndarray, hrtf, fs: int) -> np.ndarray:
    """Anechoic HRIRs of the probe's directions in the horizontal plane, float64 ``(azimuth, 2, taps)``."""
    from xai_loc.acoustics.binaural import anechoic_rirs

    return anechoic_rirs(np.mod(azimuths, 360.0), np.zeros_like(azimuths), hrtf=hrtf, fs=fs).double().numpy()


def _token_stimuli(band: str, token: int, seed: int, brirs: np.ndarray, n: int, fs: int,
                   level_db: float) -> np.ndarray:
    """One noise token of ``band`` at every probe direction, ``(azimuth, 2, n)`` at ``level_db`` re
    :data:`~xai_loc.acoustics.binaural.REFERENCE_RMS`. The token is seeded by the band's name (its
    place in :data:`BANDS`), so the probe and its relevance view, and any subset of bands, hear the
    same tokens."""
    from xai_loc.acoustics.binaural import scale_to_level, spatialize

    dry = band_noise(band, n, fs, np.random.default_rng([seed, list(BANDS).index(band), token, 41]))
    return scale_to_level(np.stack([spatialize(dry, h) for h in brirs]), level_db)


def duplex_probe(
    model: nn.Module,
    *,
    head: str | None = None,
    bands: Sequence[str] = ("low", "high", "wide"),
    azimuths: Sequence[float] = PROBE_AZIMUTHS,
    itd_offsets: Sequence[float] = ITD_OFFSETS_US,
    ild_offsets: Sequence[float] = ILD_OFFSETS_DB,
    n_tokens: int = 4,
    response: str = "argmax",
    level_db: float = 0.0,
    fs: int | None = None,
    n_samples: int | None = None,
    hrtf=None,
    batch_size: int = 16,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = False,
):
    """ITD and ILD weights of a direction classifier per noise band (see the module docs).

    Parameters
    ----------
    model
        Maps waveforms ``[B, 2, n_samples]`` to logits of ``head``.
    head
        ``'azel'`` or ``'azimuth'`` (default: ``model.head_name``).
    bands
        A name or names in :data:`BANDS`.
    azimuths
        Target directions as lateral angles in the front, degrees (90 = left).
    itd_offsets, ild_offsets
        Imposed cue offsets in microseconds and dB (0 included, as the reference).
    n_tokens
        Noise tokens per band; every token is used for every azimuth and offset.
    response
        ``'argmax'`` (the most likely class, a listener's answer) or ``'mean'`` (posterior
        mean lateral angle, smoother).
    level_db
        Stimulus level in dB re :data:`xai_loc.acoustics.binaural.REFERENCE_RMS` (within
        +-:data:`~xai_loc.acoustics.binaural.MAX_LEVEL_DB`).
    fs, n_samples
        Stimulus rate and length: the model's (``model.fs``, ``model.n_samples``; give them only
        for a model without them, or equal to them).
    hrtf
        An :class:`~xai_loc.acoustics.hrtf.HRTFSet` (default KEMAR).

    Returns
    -------
    xarray.Dataset
        ``response_itd (band, azimuth, itd_offset, token)`` and ``response_ild (band,
        azimuth, ild_offset, token)`` lateral angles; ``natural_itd``/``natural_ild`` and
        their gradients ``natural_itd_gradient`` (us/deg) and ``natural_ild_gradient``
        (dB/deg) per ``(band, azimuth)``; raw slopes ``itd_slope_by_azimuth`` (deg/us),
        ``ild_slope_by_azimuth`` (deg/dB) and weights ``itd_weight_by_azimuth``,
        ``ild_weight_by_azimuth``; their means over azimuths ``itd_slope``, ``ild_slope``,
        ``itd_weight``, ``ild_weight`` per band.
    """
    import xarray as xr

    from xai_loc.acoustics.binaural import hrtf_at
    from xai_loc.progress import tqdm
    from xai_loc.runtime import resolve_device

    head = _head_of(model, head)
    if response not in RESPONSES:
        raise InputError(f"response={response!r} is not allowed; use one of {', '.join(RESPONSES)}")
    bands, azimuths, itd_offsets = _checked_probe(bands, azimuths, itd_offsets, n_tokens, level_db, batch_size, seed)
    ild_offsets = _checked_offsets("ild_offsets", ild_offsets)
    fs, n = _model_rate(model, fs, n_samples)
    device = resolve_device(device)
    hrtf = hrtf_at(hrtf, fs)
    brirs = _lateral_brirs(azimuths, hrtf, fs)

    shape = (len(bands), azimuths.size, n_tokens)
    resp_itd = np.empty((*shape[:2], itd_offsets.size, n_tokens))
    resp_ild = np.empty((*shape[:2], ild_offsets.size, n_tokens))
    bar = tqdm(total=len(bands) * n_tokens, disable=not progress, desc="duplex probe", unit="token")
    for b, band in enumerate(bands):
        for t in range(n_tokens):
            base = _token_stimuli(band, t, seed, brirs, n, fs, level_db)  # (azimuth, 2, T)
            itd = impose_itd(base[:, None], itd_offsets[None, :], fs)  # (az, offset, 2, T)
            ild = impose_ild(base[:, None], ild_offsets[None, :])
            stim = np.concatenate([itd, ild], axis=1).reshape(-1, 2, n)
            lat = _responses(model, stim.astype(np.float32), head, response, batch_size, device)
            lat = lat.reshape(azimuths.size, itd_offsets.size + ild_offsets.size)
            resp_itd[b, :, :, t] = lat[:, :itd_offsets.size]
            resp_ild[b, :, :, t] = lat[:, itd_offsets.size:]
            bar.update(1)
    bar.close()

    def slopes(resp: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        mean = resp.mean(axis=-1)  # (band, azimuth, offset)
        centred = offsets - offsets.mean()
        return (mean - mean.mean(axis=-1, keepdims=True)) @ centred / np.sum(centred ** 2)

    itd_slope, ild_slope = slopes(resp_itd, itd_offsets), slopes(resp_ild, ild_offsets)
    nat = {band: natural_cues(band, hrtf=hrtf, fs=fs) for band in bands}
    nat_itd = np.stack([np.interp(azimuths, nat[b]["lateral"], nat[b]["itd"]) for b in bands])
    nat_ild = np.stack([np.interp(azimuths, nat[b]["lateral"], nat[b]["ild"]) for b in bands])
    grad_itd = np.stack([_local_slope(nat[b]["lateral"], nat[b]["itd"], azimuths) for b in bands])
    grad_ild = np.stack([_local_slope(nat[b]["lateral"], nat[b]["ild"], azimuths) for b in bands])
    itd_w, ild_w = itd_slope * grad_itd, ild_slope * grad_ild
    dims2 = ("band", "azimuth")
    ds = xr.Dataset(
        {
            "response_itd": (("band", "azimuth", "itd_offset", "token"), resp_itd, {"units": "degree (lateral)"}),
            "response_ild": (("band", "azimuth", "ild_offset", "token"), resp_ild, {"units": "degree (lateral)"}),
            "natural_itd": (dims2, nat_itd, {"units": "us", "description": "KEMAR ITD, positive: left leads"}),
            "natural_ild": (dims2, nat_ild, {"units": "dB", "description": "KEMAR ILD, positive: left louder"}),
            "natural_itd_gradient": (dims2, grad_itd, {"units": "us/degree"}),
            "natural_ild_gradient": (dims2, grad_ild, {"units": "dB/degree"}),
            "itd_slope_by_azimuth": (dims2, itd_slope, {"units": "degree/us"}),
            "ild_slope_by_azimuth": (dims2, ild_slope, {"units": "degree/dB"}),
            "itd_weight_by_azimuth": (dims2, itd_w, {"units": "1"}),
            "ild_weight_by_azimuth": (dims2, ild_w, {"units": "1"}),
            "itd_slope": ("band", itd_slope.mean(axis=1), {"units": "degree/us"}),
            "ild_slope": ("band", ild_slope.mean(axis=1), {"units": "degree/dB"}),
            "itd_weight": ("band", itd_w.mean(axis=1), {"units": "1", "description": "1: full use of the cue"}),
            "ild_weight": ("band", ild_w.mean(axis=1), {"units": "1", "description": "1: full use of the cue"}),
        },
        coords={
            "band": ("band", list(bands)),
            "band_low": ("band", [BANDS[b][0] for b in bands], {"units": "Hz"}),
            "band_high": ("band", [BANDS[b][1] for b in bands], {"units": "Hz"}),
            "azimuth": ("azimuth", azimuths, {"units": "degree", "description": "lateral angle, 90 = left"}),
            "itd_offset": ("itd_offset", itd_offsets, {"units": "us", "description": "positive: left leads"}),
            "ild_offset": ("ild_offset", ild_offsets, {"units": "dB", "description": "positive: left louder"}),
            "token": ("token", np.arange(n_tokens)),
        },
        attrs={"probe": "duplex (Macpherson & Middlebrooks 2002)", "head": head, "response": response,
               "level_db": float(level_db), "fs": fs, "n_samples": n, "hrtf": hrtf.name, "seed": int(seed),
               "description": "responses as lateral angles asin(sin az cos el), degrees, 90 = left",
               "xai_loc_version": __version__},
    )
    return ds


# -- relevance --------------------------------------------------------------------------------------


def duplex_relevance(model, *, bands: str | Sequence[str] = ("low", "high", "wide"),
                     azimuths: Sequence[float] = PROBE_AZIMUTHS, itd_offsets: Sequence[float] = ITD_OFFSETS_US,
                     n_tokens: int = 1, level_db: float = 0.0, composite: str = "cochcnn", batch_size: int = 4,
                     device: str = "cpu", seed: int = 0, progress: bool = False, **options: Any):
    """Relevance of ITD-probe stimuli: mass per band and ear, and the interaural lag of the relevance.

    The stimuli are those of :func:`duplex_probe` (same seeds: the same tokens) with the ITD
    offsets; relevance is seeded with the predicted class's logit.

    Returns
    -------
    xarray.Dataset
        Along ``stimulus`` (band, azimuth, ITD offset, token): ``stimulus_itd`` (measured on
        the ear signals, us), ``relevance_lag`` (lag of the left/right relevance
        cross-correlation, us; both on the envelope in the high band; NaN where an ear gets no
        relevance or the lag lies beyond +-1 ms, :func:`interaural_lag`), ``relevance_total``
        (signed); ``relevance_mass (stimulus, ear, frequency)`` (time-summed |cochleagram
        relevance| over the stimulus's sum of |relevance|) and its mean ``band_mass (band,
        ear, frequency)``; ``lag_slope (band)``: regression slope
        of relevance lag on stimulus ITD over the stimuli with both lags (1: the relevance carries
        the ITD; NaN with fewer than two ITDs), with ``lag_slope_r`` the correlation and
        ``lag_slope_n`` the number of those stimuli.
    """
    import xarray as xr

    from xai_loc.acoustics.binaural import hrtf_at
    from xai_loc.explain.attribute import resolve_model
    from xai_loc.explain.cochcnn import explain_cochcnn
    from xai_loc.progress import tqdm

    model, _ = resolve_model(model)
    bands, azimuths, itd_offsets = _checked_probe(bands, azimuths, itd_offsets, n_tokens, level_db, batch_size, seed)
    fs, n = _model_rate(model, None, None)
    brirs = _lateral_brirs(azimuths, hrtf_at(None, fs), fs)
    rows, stims = [], []
    for band in bands:
        for t in range(n_tokens):
            base = _token_stimuli(band, t, seed, brirs, n, fs, level_db)
            stim = impose_itd(base[:, None], itd_offsets[None, :], fs)
            for a, az in enumerate(azimuths):
                for o, off in enumerate(itd_offsets):
                    rows.append((band, az, off, t))
                    stims.append(stim[a, o])
    stims = np.stack(stims).astype(np.float32)
    parts = []
    for s in tqdm(range(0, len(stims), 32), disable=not progress, desc="relevance", unit="block"):
        parts.append(explain_cochcnn(model, stims[s:s + 32], composite=composite, batch_size=batch_size,
                                     device=device, **options))
    wave = np.concatenate([p["waveform"].values for p in parts])
    # shares of |relevance|: relevance is signed and cancels (sum |r| can be tens of times the
    # total, which can be negative or near 0), so a share of the signed total can flip sign and
    # blow up one stimulus's map; float64 so that the shares sum to 1 to the last digit
    coch = np.concatenate([p["cochleagram"].values for p in parts]).astype(np.float64)
    total = coch.sum(axis=(1, 2, 3))
    coch = np.abs(coch)
    absolute = coch.sum(axis=(1, 2, 3))
    mass = coch.sum(axis=-1) / np.where(absolute == 0, 1.0, absolute)[:, None, None]
    band_names = np.array([r[0] for r in rows])
    # above the duplex split interaural delays are carried by the envelope (fine structure is ambiguous
    # within a cycle): both the stimulus's ITD and the relevance's lag are measured on it there, as the
    # natural ITDs of natural_cues
    high = np.array([BANDS[b][0] >= DUPLEX_SPLIT_HZ for b in band_names])

    def lags(x: np.ndarray) -> np.ndarray:  # each stimulus measured once, on fine structure or envelope
        out = np.empty(len(x))
        for envelope in (False, True):
            if (sel := high == envelope).any():
                out[sel] = interaural_lag(x[sel], fs, envelope=envelope)
        return out

    stimulus_itd, rel_lag = lags(stims), lags(wave)
    slope, corr, fitted = [], [], []
    for band in bands:
        sel = band_names == band
        ok = np.isfinite(rel_lag[sel]) & np.isfinite(stimulus_itd[sel])  # e.g. relevance that leaves an ear empty
        x, y = stimulus_itd[sel][ok], rel_lag[sel][ok]
        fitted.append(int(ok.sum()))
        if len(x) > 1 and np.ptp(x) > 0:
            slope.append(float(np.polyfit(x, y, 1)[0]))
            corr.append(float(np.corrcoef(x, y)[0, 1]) if np.ptp(y) > 0 else float("nan"))
        else:
            slope.append(float("nan"))
            corr.append(float("nan"))
    centres = model.centre_frequencies
    band_mass = np.stack([mass[band_names == b].mean(axis=0) for b in bands])
    provenance = {k: v for k, v in parts[0]["waveform"].attrs.items() if k != "level"}  # the explainer's, whole
    return xr.Dataset(
        {
            "stimulus_itd": ("stimulus", stimulus_itd, {"units": "us", "description": "positive: left leads"}),
            "relevance_lag": ("stimulus", rel_lag, {
                "units": "us", "description": "positive: left relevance leads; NaN: an ear without relevance, "
                                              "or a lag beyond +-1 ms"}),
            "relevance_total": ("stimulus", total),
            "relevance_mass": (("stimulus", "ear", "frequency"), mass, {"units": "share of |relevance|"}),
            "band_mass": (("band", "ear", "frequency"), band_mass, {"units": "share of |relevance|"}),
            "lag_slope": ("band", np.array(slope), {"units": "us/us"}),
            "lag_slope_r": ("band", np.array(corr)),
            "lag_slope_n": ("band", np.array(fitted), {"description": "stimuli with a lag, the slope's points"}),
        },
        coords={
            "stimulus": ("stimulus", np.arange(len(rows))),
            "stimulus_band": ("stimulus", band_names),
            "stimulus_azimuth": ("stimulus", np.array([r[1] for r in rows]), {"units": "degree (lateral)"}),
            "itd_offset": ("stimulus", np.array([r[2] for r in rows]), {"units": "us"}),
            "token": ("stimulus", np.array([r[3] for r in rows])),
            "band": ("band", list(bands)),
            "ear": ("ear", np.array(["left", "right"])),
            "frequency": ("frequency", centres, {"units": "Hz"}),
        },
        attrs=provenance | {"probe": "relevance view of the ITD probe", "seed": int(seed)},
    )


# -- behaviour ----------------------------------------------------------------------------------


def _circular(deg: np.ndarray) -> tuple[float, float]:
    """Circular mean (degrees in [0, 360)) and circular standard deviation ``sqrt(-2 ln R)`` (degrees)."""
    ang = np.deg2rad(deg)
    c, s = np.cos(ang).mean(), np.sin(ang).mean()
    return (float(np.mod(np.rad2deg(np.arctan2(s, c)), 360.0)),
            float(np.rad2deg(np.sqrt(max(0.0, -2.0 * np.log(max(np.hypot(c, s), 1e-12)))))))


def behaviour_statistics(responses, azimuth_bin: float = 30.0) -> dict[str, Any]:
    """Hofman-style summary of responses (a ``DirectionEvaluation.responses`` dataset).

    Returns elevation gain and bias (least-squares fit of response on target elevation),
    azimuth RMSE (wrapped) and its front-back-folded value, elevation RMSE, response
    variability (mean over targets of the circular SD of response azimuth and the SD of
    response elevation), the front-back rate, per-target mean responses (circular mean
    azimuth after front-back folding, mean elevation) under ``targets``, and under ``grid``
    the same for targets pooled into azimuth bins of ``azimuth_bin`` degrees (``[c - bin/2, c + bin/2)``
    around its multiples ``c``; more than 0, at most 180: a wider bin would pool front and back)
    per elevation: the grid of the Hofman plot, which needs several responses per node.
    """
    from xai_loc.models.classifier_training import azimuth_error, front_back_confusions, mirror_front_back

    if not (is_real(azimuth_bin) and 0 < azimuth_bin <= 180):
        raise InputError(f"azimuth_bin={azimuth_bin!r} is not allowed; give degrees in (0, 180]")

    t_az, t_el = responses["target_azimuth"].values, responses["target_elevation"].values
    r_az, r_el = responses["response_azimuth"].values, responses["response_elevation"].values
    has_el = bool(np.all(np.isfinite(r_el)))
    confused, eligible = front_back_confusions(r_az, t_az)
    folded = np.where(confused, mirror_front_back(r_az), r_az)
    out: dict[str, Any] = {
        "n": int(t_az.size),
        "azimuth_rmse": float(np.sqrt(np.mean(azimuth_error(r_az, t_az) ** 2))),
        "azimuth_rmse_folded": float(np.sqrt(np.mean(azimuth_error(folded, t_az) ** 2))),
        "front_back_rate": float(confused[eligible].mean()) if eligible.any() else None,
    }
    targets = sorted(set(zip(t_az.tolist(), t_el.tolist(), strict=True)))
    mean_az, mean_el, sd_az, sd_el, counts = [], [], [], [], []
    for a, e in targets:
        sel = (t_az == a) & (t_el == e)
        mean, sd = _circular(folded[sel])
        mean_az.append(mean)
        sd_az.append(sd)
        mean_el.append(float(r_el[sel].mean()) if has_el else float("nan"))
        sd_el.append(float(r_el[sel].std()) if has_el else float("nan"))
        counts.append(int(sel.sum()))
    counts = np.asarray(counts)
    repeated = counts > 1
    out["azimuth_variability"] = float(np.mean(np.asarray(sd_az)[repeated])) if repeated.any() else None
    if has_el:
        gain, bias = np.polyfit(t_el, r_el, 1) if np.ptp(t_el) > 0 else (float("nan"), float("nan"))
        out.update(elevation_gain=float(gain), elevation_bias=float(bias),
                   elevation_rmse=float(np.sqrt(np.mean((r_el - t_el) ** 2))),
                   elevation_variability=float(np.mean(np.asarray(sd_el)[repeated])) if repeated.any() else None)
    else:
        out.update(elevation_gain=None, elevation_bias=None, elevation_rmse=None, elevation_variability=None)
    out["targets"] = {"azimuth": [t[0] for t in targets], "elevation": [t[1] for t in targets],
                      "mean_azimuth_folded": mean_az, "mean_elevation": mean_el, "count": counts.tolist()}
    centre = np.mod(np.floor(t_az / azimuth_bin + 0.5) * azimuth_bin, 360.0)  # half-open: np.round is half to even
    grid: dict[str, list] = {k: [] for k in ("azimuth_bin", "elevation", "target_azimuth", "target_elevation",
                                             "mean_azimuth_folded", "mean_elevation", "count")}
    for c, e in sorted(set(zip(centre.tolist(), t_el.tolist(), strict=True))):
        sel = (centre == c) & (t_el == e)
        grid["azimuth_bin"].append(c)
        grid["elevation"].append(e)
        grid["target_azimuth"].append(_circular(t_az[sel])[0])
        grid["target_elevation"].append(float(t_el[sel].mean()))
        grid["mean_azimuth_folded"].append(_circular(folded[sel])[0])
        grid["mean_elevation"].append(float(r_el[sel].mean()) if has_el else float("nan"))
        grid["count"].append(int(sel.sum()))
    out["grid"] = {**grid, "bin_width": float(azimuth_bin)}
    return out


def run_behaviour(model, store, out_dir: str | Path, *, batch_size: int = 32, device: str = "cpu",
                  progress: bool = False) -> dict[str, Path]:
    """Responses of a model on a binaural store and their Hofman statistics.

    Writes ``responses.nc`` (responses along ``example`` with the metrics and the Hofman
    statistics as JSON attrs) under ``out_dir``, atomically; :func:`xai_loc.plots.hofman.draw_behaviour`
    draws ``hofman.png`` from it.
    """
    from xai_loc.explain.attribute import resolve_model
    from xai_loc.io import write_dataset_atomic
    from xai_loc.models.classifier_training import evaluate_directions

    model, info = resolve_model(model)
    evaluation = evaluate_directions(model, store, batch_size=batch_size, device=device, progress=progress)
    ds = evaluation.responses
    stats = behaviour_statistics(ds)
    ds.attrs.update({k: v for k, v in info.items() if isinstance(v, str)})
    ds.attrs.update(hofman=json.dumps(stats), xai_loc_version=__version__)
    return {"responses": write_dataset_atomic(ds, Path(out_dir) / "responses.nc")}


def run_duplex_probe(model, out_dir: str | Path, *, relevance: bool = True, n_tokens: int = 4,
                     response: str = "argmax", batch_size: int = 16, device: str = "cpu", seed: int = 0,
                     progress: bool = False, **options: Any) -> dict[str, Path]:
    """The duplex probe (and its relevance view, with as many tokens) of a model, written as stores.

    Writes ``duplex.nc`` (:func:`duplex_probe`) and ``duplex_relevance.nc``
    (:func:`duplex_relevance`, unless ``relevance=False``: then an earlier run's ``duplex_relevance.nc`` is
    removed, never drawn beside this probe) under ``out_dir``, atomically;
    model provenance goes into the attrs. ``options`` go to the LRP composite.
    :func:`xai_loc.plots.hofman.draw_duplex` draws ``cues.png`` from them.
    """
    from xai_loc.explain.attribute import resolve_model
    from xai_loc.io import write_files_atomic

    model, info = resolve_model(model)
    out_dir = Path(out_dir)
    if options and not relevance:
        raise InputError(f"composite option {next(iter(options))!r} only applies to the relevance view; "
                         "drop it, or compute the view")
    results = {}
    if relevance:  # first: a bad composite option fails before any file is written
        results["relevance"] = ("duplex_relevance.nc", duplex_relevance(
            model, n_tokens=n_tokens, batch_size=batch_size, device=device, seed=seed, progress=progress, **options))
    results["duplex"] = ("duplex.nc", duplex_probe(model, n_tokens=n_tokens, response=response,
                                                   batch_size=batch_size, device=device, seed=seed,
                                                   progress=progress))
    paths = {}
    for key in ("duplex", "relevance"):
        if key in results:
            name, ds = results[key]
            ds.attrs.update({k: v for k, v in info.items() if isinstance(v, str)})
            paths[key] = out_dir / name
    write_files_atomic({paths[key]: results[key][1] for key in paths})  # the probe and its view: all or none
    if not relevance:
        (out_dir / "duplex_relevance.nc").unlink(missing_ok=True)
    return paths
