"""Microphone signals from dry speech, room impulse responses and sensor noise.

:func:`render_windows` does the whole chain under a simulation convention (see
:mod:`xai_loc.acoustics.conventions`), and :func:`window_count` says beforehand how many
windows it will return:

``"full"`` convolution (convention ``"gpurir"``, the paper's ``generate_data.py``)
    the peak-normalized utterance is convolved over ``len(speech) + len(rir) - 1`` samples,
    white Gaussian noise of power ``mean(|mic 0|**2) / 10**(SNR / 10)`` is added over that
    whole signal, and windows are cut from sample 0 (the incomplete tail dropped);
``"cut"`` convolution (convention ``"pyroomacoustics"``)
    the convolution is cut to ``len(speech)`` samples before the noise and the windows.

:func:`render_components` renders the same windows as the sum of their :data:`COMPONENTS`
(direct sound, early reflections, late reverberation, sensor noise), from the same RIRs and
noise draw, for asking which part of the signal an explanation falls on.

:func:`render_windows_batch` and :func:`render_components_batch` render several sources at
once on the device of their responses (torch, float64, each source at its own FFT length),
for simulating on a GPU without bringing the responses to the host: the same windows and
parts up to float64 rounding (the noise is drawn by the same NumPy generators and sent
along). On the CPU :func:`render_windows` stays the path: SciPy's convolution is as fast there
and keeps stores byte for byte as earlier versions wrote them.
"""
from __future__ import annotations

import contextlib
import reprlib

import numpy as np
from scipy.signal import fftconvolve

from xai_loc.acoustics.room import check_snr
from xai_loc.checks import check_integer, is_integer, is_real
from xai_loc.errors import InputError


def _float64(value, what: str) -> np.ndarray:
    """``value`` as a float64 array, or one line naming it and its dtype."""
    dtype = ""
    with contextlib.suppress(TypeError, ValueError):
        array = np.asarray(value)
        dtype = f" of dtype {array.dtype}"
        if array.dtype.kind not in "bc":  # a cast would drop the imaginary parts, or take booleans for samples
            return array.astype(np.float64, copy=False)
    raise InputError(f"{what} {reprlib.repr(value)}{dtype} is not an array of real numbers")


def _speech(speech: np.ndarray) -> np.ndarray:
    speech = _float64(speech, "speech")
    if speech.ndim != 1 or speech.size == 0:
        raise InputError(f"speech of shape {speech.shape} is not allowed; give a non-empty 1-D signal (samples,)")
    if not np.all(np.isfinite(speech)):
        raise InputError(f"speech of shape {speech.shape} holds NaN or infinite values; give a finite signal")
    return speech


def reverberant_signals(speech: np.ndarray, rirs: np.ndarray, full: bool = False) -> np.ndarray:
    """Convolve a dry signal with each microphone's impulse response.

    Parameters
    ----------
    speech
        Dry source signal ``(T,)``.
    rirs
        Impulse responses ``(M, N)``.
    full
        Return the whole convolution, ``T + N - 1`` samples (convention ``"gpurir"``);
        otherwise cut it to ``T`` samples, so that window ``k`` of every microphone covers the
        same stretch of the source.

    Returns
    -------
    numpy.ndarray
        ``(M, T + N - 1)`` or ``(M, T)`` float64.
    """
    speech = _speech(speech)
    rirs = _float64(rirs, "rirs")
    if rirs.ndim != 2 or 0 in rirs.shape or not np.all(np.isfinite(rirs)):
        raise InputError(f"rirs of shape {rirs.shape} are not allowed; give finite responses (mics, samples)")
    out = fftconvolve(speech[None, :], rirs, axes=1)
    return out if full else out[:, : speech.size]


def add_white_noise(signals: np.ndarray, snr: float, rng: np.random.Generator, ref_mic: int = 0) -> np.ndarray:
    """Add independent white Gaussian noise to every channel at ``snr`` dB.

    The SNR is relative to the power of microphone ``ref_mic`` (the paper's definition):
    ``noise_power = mean(signals[ref_mic] ** 2) / 10 ** (snr / 10)``; ``signals`` is ``(M, T)``.
    """
    snr = check_snr(snr)
    _check_rng(rng)
    signals = _float64(signals, "signals")
    if signals.ndim != 2:
        raise InputError(f"signals of shape {np.shape(signals)} are not allowed; give (mics, samples)")
    n_mics = len(signals)
    if not is_integer(ref_mic) or not 0 <= ref_mic < n_mics:
        raise InputError(f"ref_mic={ref_mic!r} is not allowed; give a microphone index in 0..{n_mics - 1}")
    power = float(np.mean(signals[ref_mic] ** 2))
    sigma = np.sqrt(power / 10.0 ** (snr / 10.0))
    return signals + sigma * rng.standard_normal(signals.shape)


def _check_rng(rng) -> None:
    if not isinstance(rng, np.random.Generator):
        raise InputError(f"rng={reprlib.repr(rng)} is not allowed; give a numpy.random.Generator "
                         "(numpy.random.default_rng(seed))")


def cut_windows(signals: np.ndarray, length: int) -> np.ndarray:
    """Non-overlapping windows ``(W, M, length)`` of ``(M, T)`` signals from sample 0; the remainder is dropped."""
    n_win = signals.shape[1] // length
    return signals[:, : n_win * length].reshape(signals.shape[0], n_win, length).transpose(1, 0, 2)


def _window(window) -> int:
    if not (is_real(window) and int(window) == window and window >= 1):
        raise InputError(f"window={window!r} is not allowed; use a positive number of samples")
    return int(window)


def window_count(convention, n_speech: int, n_rir: int, window: int) -> int:
    """Windows :func:`render_windows` returns for an utterance of ``n_speech`` samples and RIRs of ``n_rir``.

    ``"full"`` convolution: ``(n_speech + n_rir - 1) // window``; ``"cut"``: ``n_speech // window``.
    ``convention``: a name or a :class:`~xai_loc.acoustics.conventions.Convention`. The RIR
    length of a simulation follows from :func:`~xai_loc.acoustics.conventions.rir_length`.
    """
    from xai_loc.acoustics.conventions import get_convention

    conv, window = get_convention(convention), _window(window)
    n_speech, n_rir = check_integer("n_speech", n_speech, minimum=1), check_integer("n_rir", n_rir, minimum=1)
    if conv.convolution == "full":
        return (n_speech + n_rir - 1) // window
    return n_speech // window


def _peak_normalized(conv, speech: np.ndarray) -> np.ndarray:
    """The dry signal as the convention renders it (divided by its peak if the convention says so); silent
    speech is refused under every convention (its windows, noise included, would be silent)."""
    peak = float(np.max(np.abs(speech)))
    if peak == 0.0:
        raise InputError("speech is silent (all zeros); give an utterance with signal (the noise is scaled to it)")
    return speech / peak if conv.peak_normalize else speech


def _rendered(conv, speech: np.ndarray, rirs: np.ndarray, snr: float,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(speech, clean, noise)`` of one utterance under a convention: the (peak-normalized) dry
    signal, its reverberant signals and the noise :func:`add_white_noise` draws for them."""
    speech = _peak_normalized(conv, _speech(speech))
    clean = reverberant_signals(speech, rirs, full=conv.convolution == "full")
    noise = add_white_noise(clean, snr, rng) - clean
    return speech, clean, noise


def render_windows(convention, speech: np.ndarray, rirs: np.ndarray, snr: float, rng: np.random.Generator,
                   window: int) -> np.ndarray:
    """Noisy microphone windows of one utterance at one source, under a simulation convention.

    Parameters
    ----------
    convention
        A name (``"gpurir"``, ``"pyroomacoustics"``) or a
        :class:`~xai_loc.acoustics.conventions.Convention`.
    speech
        Dry utterance ``(T,)`` (peak-normalized here if the convention says so).
    rirs
        Impulse responses ``(M, N)`` from the source to each microphone.
    snr
        Signal-to-noise ratio in dB, relative to the power of microphone 0 over the rendered
        signal.
    rng
        Generator of the noise (``standard_normal`` of the rendered signal's shape).
    window
        Window length in samples.

    Returns
    -------
    numpy.ndarray
        ``(window_count(convention, T, N, window), M, window)`` float32, windows from sample 0.
    """
    from xai_loc.acoustics.conventions import get_convention

    conv, window = get_convention(convention), _window(window)
    _, clean, noise = _rendered(conv, speech, rirs, snr, rng)
    return cut_windows(clean + noise, window).astype(np.float32)


def _checked_batch(speeches, rirs, rngs, what: str = "rirs") -> None:
    import torch

    if not isinstance(rirs, torch.Tensor) or rirs.ndim != 3 or rirs.shape[2] == 0 or rirs.shape[0] != len(speeches):
        raise InputError(f"{what} must be a (sources, mics, samples) tensor with one source per utterance, not "
                         f"{tuple(getattr(rirs, 'shape', ()))} for {len(speeches)} utterances")
    if len(rngs) != len(speeches):
        raise InputError(f"{len(rngs)} noise generators for {len(speeches)} utterances; give one per utterance")
    for rng in rngs:
        _check_rng(rng)
    if rirs.is_complex() or rirs.dtype == torch.bool:  # a cast would drop imaginary parts, or take booleans
        raise InputError(f"{what} of dtype {rirs.dtype} are not real numbers; give a tensor of real responses")
    if not bool(torch.isfinite(rirs).all()):
        raise InputError(f"{what} hold NaN or infinite values; give finite responses")


def _rendered_batch(conv, speeches, responses, snr: float, rngs, n_mic: int) -> list:
    """``(signals, noise)`` per utterance, in torch float64 on the responses' device.

    ``responses (B, K, N)``: per source, the microphones' responses first (``n_mic`` of them, the
    ones the noise is scaled to), then any others convolved alike. ``signals (K, L_b)`` are the
    convolutions, ``noise (n_mic, L_b)`` the noise :func:`add_white_noise` adds to the first
    ``n_mic``: drawn by each source's NumPy generator on the host, all of them sent over in one
    copy. Each source is convolved at its own FFT length, so its windows do not depend on the
    sources rendered with it.
    """
    import torch
    from scipy.fft import next_fast_len

    snr = check_snr(snr)
    device, n_resp = responses.device, responses.shape[2]
    dry = [_peak_normalized(conv, _speech(s)) for s in speeches]
    lengths = [d.size + n_resp - 1 if conv.convolution == "full" else d.size for d in dry]
    sizes = [d.size for d in dry] + [n_mic * n for n in lengths]
    host = np.empty(sum(sizes))  # the block's dry signals and noise, one buffer, one copy to the device
    views = np.split(host, np.cumsum(sizes)[:-1])
    for d, view in zip(dry, views, strict=False):
        view[:] = d
    for rng, n, view in zip(rngs, lengths, views[len(dry):], strict=True):
        rng.standard_normal(out=view.reshape(n_mic, n))  # add_white_noise's draw, in place
    pieces = torch.from_numpy(host).to(device).split(sizes)
    out = []
    for b, (d, n) in enumerate(zip(dry, lengths, strict=True)):
        n_fft = next_fast_len(d.size + n_resp - 1, real=True)
        spectrum = torch.fft.rfft(pieces[b], n_fft) * torch.fft.rfft(responses[b].to(torch.float64), n_fft)
        signals = torch.fft.irfft(spectrum, n_fft)[:, :n]
        sigma = torch.sqrt(torch.mean(signals[0] ** 2) / 10.0 ** (snr / 10.0))  # mic 0 over the whole signal
        out.append((signals, pieces[len(dry) + b].view(n_mic, n) * sigma))
    return out


def _cut(signals, window: int):
    """Windows ``(W, ..., window)`` of tensor ``signals (..., L)`` from sample 0 (the remainder dropped)."""
    n_win = signals.shape[-1] // window
    return signals[..., : n_win * window].unflatten(-1, (n_win, window)).movedim(-2, 0)


def render_windows_batch(convention, speeches, rirs, snr: float, rngs, window: int) -> list:
    """:func:`render_windows` of several sources at once, on the device of their responses.

    Parameters
    ----------
    convention, snr, window
        As for :func:`render_windows`.
    speeches
        One dry utterance ``(T_b,)`` per source (NumPy; lengths may differ).
    rirs
        ``torch.Tensor`` ``(B, M, N)``: each source's responses, on the device to render on.
    rngs
        One noise generator per source, each drawing what :func:`render_windows` would draw.

    Returns
    -------
    list of torch.Tensor
        Per source, ``(W_b, M, window)`` float32 on the device of ``rirs``; equal to
        :func:`render_windows`'s windows up to the rounding of float64 FFTs.
    """
    import torch

    from xai_loc.acoustics.conventions import get_convention

    conv, window = get_convention(convention), _window(window)
    _checked_batch(speeches, rirs, rngs)
    return [_cut(clean + noise, window).to(torch.float32)
            for clean, noise in _rendered_batch(conv, speeches, rirs, snr, rngs, rirs.shape[1])]


#: The parts of a rendered window, in the order :func:`render_components` returns them.
COMPONENTS = ("direct", "early", "late", "noise")
#: End of the early reflections after each microphone's direct arrival, in seconds: the usual
#: early/late boundary of room acoustics (ISO 3382-1's clarity C50 and definition D50).
EARLY_END_S = 0.050


def render_components(convention, speech: np.ndarray, rirs: np.ndarray, direct_rirs: np.ndarray,
                      direct_delays: np.ndarray, snr: float, rng: np.random.Generator, window: int, fs: float,
                      early_end: float = EARLY_END_S, late_start: float | None = None) -> np.ndarray:
    """The windows of :func:`render_windows` split into direct sound, early reflections, late
    reverberation and sensor noise (:data:`COMPONENTS`).

    The responses are split and the rendering is linear, so the parts add up to the rendered
    signal: ``direct`` is the utterance through ``direct_rirs`` (the responses with the direct
    path only, drawn with the convention's arrival filter); ``early`` through the reflections
    ``rirs - direct_rirs`` up to ``early_end`` seconds after microphone ``m``'s direct arrival
    ``direct_delays[m]``; ``late`` is the rest of the reverberant signal. The cut is by sample:
    a reflection that arrives within the arrival filter's half-width (4 ms in the ``gpurir``
    convention) of it has its filtered impulse split between ``early`` and ``late`` (a few 1e-4
    of the early energy in a small room; the parts still add up exactly);
    ``noise`` is the sensor noise of the same draw (``rng`` in the state :func:`render_windows`
    would get), scaled to the full reverberant signal.

    Parameters
    ----------
    convention, speech, rirs, snr, rng, window
        As for :func:`render_windows`.
    direct_rirs
        ``(M, N)`` the same responses with the direct path only.
    direct_delays
        ``(M,)`` direct-path delay of each microphone in samples (distance / c * fs).
    fs
        Sampling rate of the responses in Hz.
    early_end
        Seconds after the direct arrival at which the late reverberation starts.
    late_start
        Where a statistical diffuse tail starts (it has no reflection geometry, so it is late
        whatever the arrival): samples from ``ceil(late_start)`` on; None: no tail.

    Returns
    -------
    numpy.ndarray
        ``(4, W, M, window)`` float64; ``components.sum(0).astype(float32)`` is
        :func:`render_windows`'s result (to the last bit of the float64 sum).
    """
    from xai_loc.acoustics.conventions import get_convention

    conv, window = get_convention(convention), _window(window)
    rirs, direct_rirs = _float64(rirs, "rirs"), _float64(direct_rirs, "direct_rirs")
    end = _early_end(rirs.shape, direct_rirs.shape, direct_delays, early_end, fs, late_start)
    speech, clean, noise = _rendered(conv, speech, rirs, snr, rng)
    full = conv.convolution == "full"
    gate = np.arange(rirs.shape[1]) <= end
    direct = reverberant_signals(speech, direct_rirs, full=full)
    early = reverberant_signals(speech, np.where(gate, rirs - direct_rirs, 0.0), full=full)
    parts = np.stack([direct, early, clean - direct - early, noise])
    n_win = parts.shape[2] // window
    return parts[:, :, : n_win * window].reshape(4, parts.shape[1], n_win, window).transpose(0, 2, 1, 3)


def _early_end(shape: tuple, direct_shape: tuple, direct_delays, early_end: float, fs: float,
               late_start: float | None) -> np.ndarray:
    """The last early-reflection sample of every response ``(..., M, 1)`` (checked arguments of
    :func:`render_components`; ``shape``: the responses' ``(..., M, N)``)."""
    delays = _float64(direct_delays, "direct_delays")
    if direct_shape != shape or delays.shape != shape[:-1]:
        raise InputError(f"direct responses {direct_shape} and delays {delays.shape} must match the responses "
                         f"{shape}: ([sources,] mics, samples) and ([sources,] mics)")
    if not np.all(np.isfinite(delays)):
        raise InputError(f"direct_delays {reprlib.repr(delays)} hold NaN or infinite values; give finite samples")
    if not (is_real(early_end) and early_end >= 0):
        raise InputError(f"early_end={reprlib.repr(early_end)} s is not allowed; give a non-negative duration")
    if not (is_real(fs) and fs > 0):
        raise InputError(f"fs={reprlib.repr(fs)} is not allowed; give the responses' sampling rate in Hz")
    if late_start is not None and not (is_real(late_start) and late_start >= 0):
        raise InputError(f"late_start={reprlib.repr(late_start)} is not allowed; give a sample index >= 0, or None")
    end = delays[..., None] + early_end * fs
    return end if late_start is None else np.minimum(end, np.ceil(late_start) - 1)  # the tail's first sample: late


def render_components_batch(convention, speeches, rirs, direct_rirs, direct_delays, snr: float, rngs,
                            window: int, fs: float, early_end: float = EARLY_END_S,
                            late_start: float | None = None) -> list:
    """:func:`render_components` of several sources at once, on the device of their responses.

    Parameters
    ----------
    convention, snr, window, fs, early_end, late_start
        As for :func:`render_components`.
    speeches, rngs
        As for :func:`render_windows_batch`.
    rirs, direct_rirs
        ``torch.Tensor`` ``(B, M, N)`` each: the responses and their direct paths, on one device.
    direct_delays
        ``(B, M)`` direct-path delays in samples.

    Returns
    -------
    list of torch.Tensor
        Per source, ``(4, W_b, M, window)`` float64 on the device of ``rirs``: the parts of
        :func:`render_windows_batch`'s windows, equal to :func:`render_components`'s up to the
        rounding of float64 FFTs.
    """
    import torch

    from xai_loc.acoustics.conventions import get_convention

    conv, window = get_convention(convention), _window(window)
    _checked_batch(speeches, rirs, rngs)
    _checked_batch(speeches, direct_rirs, rngs, "direct responses")
    if direct_rirs.device != rirs.device:
        raise InputError(f"direct responses on {direct_rirs.device} and responses on {rirs.device}; give both on "
                         "one device")
    if isinstance(direct_delays, torch.Tensor):
        direct_delays = direct_delays.detach().cpu().numpy()
    end = _early_end(tuple(rirs.shape), tuple(direct_rirs.shape), direct_delays, early_end, fs, late_start)
    full64, direct64 = rirs.to(torch.float64), direct_rirs.to(torch.float64)
    gate = torch.arange(rirs.shape[2], device=rirs.device) <= torch.from_numpy(end).to(rirs.device)
    early64 = torch.where(gate, full64 - direct64, 0.0)
    n_mic = rirs.shape[1]
    out = []
    for signals, noise in _rendered_batch(conv, speeches, torch.cat([full64, direct64, early64], dim=1), snr, rngs,
                                          n_mic):
        clean, direct, early = signals.split(n_mic)
        out.append(_cut(torch.stack([direct, early, clean - direct - early, noise]), window).transpose(0, 1))
    return out
