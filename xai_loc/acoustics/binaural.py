"""Binaural scenes: a listener's head in a shoebox room, binaural RIRs, sounds and mixing.

A binaural room impulse response (BRIR) is the image-source response of
:mod:`xai_loc.acoustics.ism` with every image filtered by the head-related impulse response
of its direction of arrival relative to the head. Its reflections keep pyroomacoustics' sign
(the ``pyroomacoustics`` convention of :mod:`xai_loc.acoustics.conventions`, not gpuRIR's):
an image of order ``n`` at distance ``d`` from the head centre has amplitude
``beta**n / (4 pi d)`` and arrives ``d / c`` after emission; the HRIR adds its own delay and
level as measured (KEMAR: ~1 ms lead-in, measured at 1.4 m). ``max_order=0`` or
:func:`anechoic_rirs` give the direct path alone.

Directions are head-relative and follow SOFA: azimuth counter-clockwise from the facing
direction (90 = left, 270 = right), elevation up. The listener faces ``yaw`` degrees
counter-clockwise from the room's +x axis. Labels of the cochleagram localizer (Francl &
McDermott, Nature Human Behaviour 2022) are ``(elevation / 10) * 72 + azimuth / 5``::

    hrtf = load_hrtf("kemar", fs=48000)
    brir = ROOMS["office"].brirs([90.0], [0.0], hrtf)        # (1, 2, N) torch tensor
    x = spatialize(synthesize("pink_burst", 48000, seed=3), brir[0])
    noise = diffuse_noise(x.shape[1], hrtf, np.random.default_rng(0))
    y = render_scene(x, noise, snr=20.0)                     # (2, 48000)
    # or in one call:
    y = render_binaural(synthesize("click_train"), 90.0, 0.0, room="office", hrtf=hrtf, snr=20.0)
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from xai_loc.acoustics.conventions import ceil_samples
from xai_loc.acoustics.directions import STUDY_GRID
from xai_loc.acoustics.hrtf import DEFAULT_INTERPOLATION, HRTFSet, check_directions, load_hrtf, unit_vectors
from xai_loc.acoustics.ism import (
    FD_HALF_WIDTH,
    MAX_IMAGES,
    TAIL_FIT_S,
    _diffuse_tail,
    _direct_passed,
    _image_count,
    _images,
    _smallest_t_diff,
    check_dtype,
    check_response,
)
from xai_loc.acoustics.room import ShoeBox, check_snr
from xai_loc.checks import check_fs, is_integer, is_real
from xai_loc.errors import InputError
from xai_loc.runtime import resolve_device

#: Speed of sound in m/s used by the presets and :func:`anechoic_rirs`.
C = 343.0
#: Source distance from the head centre in the cochleagram study, metres.
SOURCE_DISTANCE = 1.4
#: Ear height of the listener in the room presets, metres.
LISTENER_HEIGHT = 1.4
#: Label grid of the cochleagram study: 72 azimuths x 7 elevations = 504 classes (:data:`STUDY_GRID`).
AZIMUTHS = STUDY_GRID.azimuths
ELEVATIONS = STUDY_GRID.elevations
N_LABELS = STUDY_GRID.size
#: Direction trains convolved with their HRIRs at once (bounds memory to ~100 MB at 1.5 s, 48 kHz).
_DIR_CHUNK = 64
#: Images processed at once when building the trains.
_IMG_CHUNK = 200_000
#: Binaural RMS of a scene at ``level_db = 0`` (about the level of a peak-normalized sound
#: through KEMAR HRIRs at 1.4 m in free field): the reference of every scene level.
REFERENCE_RMS = 0.05
#: Largest scene level magnitude in dB re :data:`REFERENCE_RMS`. +-100 dB spans any level a
#: localizer meets (the reference is arbitrary), while float32 samples and their squares
#: (energies, cochleagram powers) stay far from overflow (1e38) and from the subnormals (1e-38)
#: that +-800 dB would reach (infinite or all-zero waveforms, refused only after rendering).
MAX_LEVEL_DB = 100.0


# -- labels --------------------------------------------------------------------------------------


def direction_to_label(azimuth, elevation) -> np.ndarray:
    """Class label ``(elevation / 10) * 72 + azimuth / 5`` of grid directions (degrees) on :data:`STUDY_GRID`.

    Raises
    ------
    InputError
        If a direction is off the grid (azimuth 0..355 step 5, elevation 0..60 step 10).
    """
    return STUDY_GRID.label(azimuth, elevation)


def label_to_direction(label) -> tuple[np.ndarray, np.ndarray]:
    """Azimuth and elevation in degrees of class labels ``0 .. 503`` of :data:`STUDY_GRID`."""
    return STUDY_GRID.directions(label)


def study_grid() -> tuple[np.ndarray, np.ndarray]:
    """The 504 (azimuth, elevation) pairs in label order."""
    return STUDY_GRID.directions()


# -- listener ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    """A head at ``position`` (metres, the interaural centre) facing ``yaw`` degrees.

    ``yaw`` is counter-clockwise from the room's +x axis, in the horizontal plane; the head
    is upright.
    """

    position: tuple[float, float, float]
    yaw: float = 0.0

    def __post_init__(self) -> None:
        try:
            pos = tuple(float(v) for v in np.asarray(self.position, dtype=np.float64).ravel())
        except (TypeError, ValueError):
            pos = ()
        if len(pos) != 3 or not all(math.isfinite(v) for v in pos):
            raise InputError(f"listener position {self.position!r} is not allowed; give three finite metres")
        if not is_real(self.yaw):
            raise InputError(f"listener yaw={self.yaw!r} is not allowed; give finite degrees")
        object.__setattr__(self, "position", pos)
        object.__setattr__(self, "yaw", float(self.yaw))

    def _rotation(self) -> np.ndarray:
        """Columns: the head's front, left and up axes in room coordinates."""
        a = math.radians(self.yaw)
        return np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])

    def to_head(self, points) -> np.ndarray:
        """Room positions ``(n, 3)`` as head coordinates (x front, y left, z up), metres."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        return (pts - np.asarray(self.position)) @ self._rotation()

    def direction_of(self, points) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Head-relative azimuth, elevation (degrees) and distance (metres) of room positions."""
        rel = self.to_head(points)
        dist = np.linalg.norm(rel, axis=1)
        if np.any(dist <= 0):
            raise InputError("a source lies at the listener's head centre; its direction is undefined")
        az = np.mod(np.rad2deg(np.arctan2(rel[:, 1], rel[:, 0])), 360.0)
        return az, np.rad2deg(np.arcsin(np.clip(rel[:, 2] / dist, -1.0, 1.0))), dist

    def source_positions(self, azimuth, elevation, distance=SOURCE_DISTANCE) -> np.ndarray:
        """Room positions ``(n, 3)`` of sources at head-relative directions (degrees) and distance."""
        az, el = check_directions(azimuth, elevation)
        dist = np.broadcast_to(np.asarray(distance, dtype=np.float64), az.shape).ravel()
        if not np.all(np.isfinite(dist) & (dist > 0)):
            raise InputError(f"source distance {distance!r} is not allowed; give positive metres")
        rel = unit_vectors(az.ravel(), el.ravel()) * dist[:, None]
        return np.asarray(self.position) + rel @ self._rotation().T


# -- binaural impulse responses ------------------------------------------------------------------


def _sinc_taps(frac: torch.Tensor) -> torch.Tensor:
    """Hann-windowed sinc ``(K, 2 W)``: tap ``j`` lands ``j - W + 1`` samples after the arrival's integer sample."""
    w = FD_HALF_WIDTH
    x = (torch.arange(2 * w, device=frac.device, dtype=frac.dtype) - w + 1)[None, :] - frac[:, None]
    return torch.sinc(x) * 0.5 * (1.0 + torch.cos(math.pi * x / w))


def _render_arrivals(
    rel: np.ndarray,
    amp: np.ndarray,
    hrtf: HRTFSet,
    n_samples: int,
    fs: int,
    c: float,
    interp: str,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Binaural response ``(2, n_samples)`` of point arrivals at head coordinates ``rel`` ``(K, 3)``.

    Arrival ``k`` has amplitude ``amp[k]`` and delay ``|rel[k]| / c``; it is filtered by the
    HRIR of its direction (nearest measured one, or a mix of measured ones: :meth:`HRTFSet.weights`).

    Convolving every image with its own HRIR would cost ``K`` convolutions (``K`` is 10^4 to
    10^6). Instead, arrivals are grouped by the HRIR direction they use: each used direction
    gets one impulse train (every arrival scattered into it as a windowed sinc at its
    fractional delay, ``index_add``), and each train is convolved once with its HRIR via FFT.
    The per-direction products are summed in the frequency domain, so the cost is one FFT per
    used direction (at most the set's 710) plus one inverse FFT per ear, independent of ``K``.
    """
    dist = np.linalg.norm(rel, axis=1)
    delay = dist / c * fs
    keep = delay < n_samples
    rel, amp, dist, delay = rel[keep], amp[keep], dist[keep], delay[keep]
    n_taps = hrtf.n_taps
    nfft = _next_fast_len(n_samples + n_taps - 1)
    cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    out_spec = torch.zeros(2, nfft // 2 + 1, device=device, dtype=cdtype)
    if dist.size == 0:
        return torch.zeros(2, n_samples, device=device, dtype=dtype)
    az = np.rad2deg(np.arctan2(rel[:, 1], rel[:, 0]))
    el = np.rad2deg(np.arcsin(np.clip(rel[:, 2] / dist, -1.0, 1.0)))
    idx, wgt = hrtf.weights(az, el, interp)  # (K, k): HRIR directions and weights per arrival
    # One entry per (arrival, direction) pair with a non-zero weight, sorted by direction so
    # that each chunk of directions is a slice of the entries.
    nz = np.flatnonzero(wgt.ravel() > 0)
    used, row = np.unique(idx.ravel()[nz], return_inverse=True)
    order = np.argsort(row, kind="stable")
    row, arrival = row[order], nz[order] // idx.shape[1]
    gain = (amp[:, None] * wgt).ravel()[nz[order]]
    n0 = np.floor(delay)
    w = FD_HALF_WIDTH
    width = n_samples + 2 * w  # train columns; column c is sample c - W
    frac = torch.as_tensor(delay - n0, device=device, dtype=dtype)
    col0 = torch.as_tensor(n0.astype(np.int64) + 1, device=device)  # column of tap 0: n0 - W + 1 + W
    taps = torch.arange(2 * w, device=device)
    hrirs = torch.as_tensor(hrtf.hrirs[used], device=device, dtype=dtype)
    for d0 in range(0, used.size, _DIR_CHUNK):
        d1 = min(used.size, d0 + _DIR_CHUNK)
        lo, hi = np.searchsorted(row, [d0, d1])
        trains = torch.zeros((d1 - d0) * width, device=device, dtype=dtype)
        for e0 in range(lo, hi, _IMG_CHUNK):
            e1 = min(hi, e0 + _IMG_CHUNK)
            a = torch.as_tensor(arrival[e0:e1], device=device)
            r = torch.as_tensor(row[e0:e1] - d0, device=device)
            vals = _sinc_taps(frac[a]) * torch.as_tensor(gain[e0:e1], device=device, dtype=dtype)[:, None]
            cols = col0[a][:, None] + taps[None, :] + r[:, None] * width
            trains.index_add_(0, cols.reshape(-1), vals.reshape(-1))
        trains = trains.view(d1 - d0, width)[:, w:w + n_samples]
        spec = torch.fft.rfft(trains, n=nfft)
        out_spec += torch.einsum("df,def->ef", spec, torch.fft.rfft(hrirs[d0:d1], n=nfft))
    return torch.fft.irfft(out_spec, n=nfft)[:, :n_samples].to(dtype)


def _next_fast_len(n: int) -> int:
    from scipy.fft import next_fast_len

    return int(next_fast_len(int(n), real=True))


def hrtf_at(hrtf: HRTFSet | None, fs: int) -> HRTFSet:
    """``hrtf`` (None: KEMAR) at ``fs`` Hz; anything but an :class:`HRTFSet` is refused in one line."""
    if hrtf is None:
        return load_hrtf("kemar", fs=fs)
    if not isinstance(hrtf, HRTFSet):
        raise InputError(f"hrtf must be an HRTFSet (got {type(hrtf).__name__}); build one with load_hrtf()")
    return hrtf.resample(fs)


@functools.lru_cache(maxsize=8)
def _kemar_taps(fs: int) -> int:
    """KEMAR's HRIR length at ``fs`` (every binaural spec checks its ``t_diff`` with it: loaded once per rate)."""
    return hrtf_at(None, fs).n_taps


def min_t_diff(distance: float, fs: int, c: float = C, hrtf: HRTFSet | None = None) -> float:
    """Smallest ``t_diff`` (seconds) of :func:`binaural_rirs` for sources up to ``distance`` metres away.

    The diffuse tail's level is fitted to the reflections between the direct sound and ``t_diff``
    (:func:`xai_loc.acoustics.ism._diffuse_tail`); they start once the latest direct sound, its arrival
    filter and its HRIR (of ``hrtf`` at ``fs``, default KEMAR: 558 taps at 48 kHz) have passed, and the
    fit needs :data:`TAIL_FIT_S` of them (and :data:`FD_HALF_WIDTH` samples it leaves out). Rounded up
    to 0.1 ms: 0.0261 s for KEMAR at 1.4 m, 48 kHz. An earlier tail would replace the direct sound or
    be fitted to it, or to a few samples of reflections.
    """
    if not (is_real(distance) and distance > 0 and is_real(c) and c > 0):
        raise InputError(f"distance={distance!r} m and c={c!r} m/s are not allowed; give positive numbers")
    n_taps = _kemar_taps(fs) if hrtf is None else hrtf_at(hrtf, fs).n_taps
    return _smallest_t_diff(_direct_passed(distance, fs, c, FD_HALF_WIDTH + n_taps), FD_HALF_WIDTH, fs)


def binaural_rirs(
    room: ShoeBox,
    listener: Listener,
    sources,
    t60: float,
    hrtf: HRTFSet | None = None,
    *,
    t_max: float | None = None,
    max_order: int | None = None,
    t_diff: float | None = None,
    interp: str = DEFAULT_INTERPOLATION,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Binaural room impulse responses from every source to the listener's two ears.

    Parameters
    ----------
    room
        The shoebox room (size, ``fs``, ``c``).
    listener
        Head position (strictly inside the room) and facing direction.
    sources
        Source positions ``(S, 3)`` in metres, strictly inside the room.
    t60
        Reverberation time in seconds; the walls' reflection coefficient follows from Sabine.
    hrtf
        HRIR set (default: KEMAR); resampled to ``room.fs`` when its rate differs.
    t_max
        Length in seconds (default ``t60``, the simulator's convention). Arrivals after
        ``t_max`` are dropped; the HRIR tails of late arrivals are cut at ``t_max``.
    max_order
        Highest reflection order kept (``0``: direct path only, i.e. anechoic).
    t_diff
        When given, image sources only up to ``t_diff`` seconds, then an exponentially
        decaying Gaussian tail fitted to the image part's reflections (after each source's
        direct sound), independently per ear (gpuRIR's hybrid idea,
        :func:`xai_loc.acoustics.ism._diffuse_tail`): its interaural coherence is zero, lower
        than a real diffuse field's at low frequencies. At least :func:`min_t_diff` of the
        farthest source (its HRIR included), at most ``t_max``.
    interp
        A name in :data:`~xai_loc.acoustics.hrtf.INTERPOLATIONS`: ``"bilinear"`` (default:
        every image direction gets its own interpolated HRIR, exact at measured directions;
        :meth:`~xai_loc.acoustics.hrtf.HRTFSet.weights`), ``"barycentric"`` or ``"nearest"``
        (the nearest measured HRIR).
    seed
        Seed of the diffuse tail.
    device, dtype
        Where and in which precision to compute.

    Returns
    -------
    torch.Tensor
        ``(S, 2, ceil(t_max * fs))``, ear 0 = left.
    """
    t60, t_max, max_order = check_response(room, t60, t_max, max_order)
    if not (is_integer(seed) and seed >= 0):
        raise InputError(f"seed={seed!r} is not allowed; use a non-negative integer")
    dtype, device = check_dtype(dtype), resolve_device(device)
    if not isinstance(listener, Listener):
        raise InputError(f"listener must be a Listener (got {type(listener).__name__})")
    head = room.check_inside(listener.position, "listener")
    src = room.check_inside(sources, "source")
    distance = np.linalg.norm(src - head, axis=1)
    if np.any(distance <= 0):
        raise InputError("a source lies at the listener's head centre; move it away from the head")
    hrtf = hrtf_at(hrtf, room.fs)
    beta = room.reflection_coefficient(t60)
    n_samples = ceil_samples(t_max, room.fs)
    n_ism = n_samples
    if t_diff is not None:
        if not (is_real(t_diff) and 0 < t_diff <= t_max):
            raise InputError(f"t_diff={t_diff!r} s is not allowed; give a value in (0, t_max={t_max}]")
        t_diff = float(t_diff)
        n_ism = min(n_samples, int(math.ceil(t_diff * room.fs)) + FD_HALF_WIDTH)
        smallest = min_t_diff(float(distance.max()), room.fs, room.c, hrtf)
        if n_ism < n_samples and t_diff < smallest:
            raise InputError(f"t_diff={t_diff} s starts the diffuse tail too early: it is fitted to "
                             f"{TAIL_FIT_S * 1e3:g} ms of reflections after the direct sound {distance.max():.4g} m "
                             f"away (its {hrtf.n_taps}-tap HRIR included); give t_diff >= {smallest:g} s")
    reach = room.c * n_ism / room.fs
    count = _image_count(room, np.reshape(head, (1, 3)), reach, max_order)
    if count > MAX_IMAGES:  # every source's images are listed at once
        raise InputError(f"T60={t60} s with t_max={t_max} s in room {room.size} needs about {count:.2g} image "
                         f"sources per source; at most {MAX_IMAGES:.0e} fit in memory: give a larger room, a shorter "
                         "T60 or t_max, a max_order or a t_diff")
    out = torch.zeros(src.shape[0], 2, n_samples, device=device, dtype=dtype)
    for i, s in enumerate(src):
        pos, order = _images(room, s, head, reach, max_order)
        rel = listener.to_head(pos)
        amp = beta ** order.astype(np.float64) / (4.0 * math.pi * np.maximum(np.linalg.norm(rel, axis=1), 1e-12))
        brir = _render_arrivals(rel, amp, hrtf, n_ism, room.fs, room.c, interp, device, dtype)
        out[i, :, :n_ism] = brir
        if t_diff is not None and n_ism < n_samples:
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))
            out[i] = _diffuse_tail(out[i], n_ism - FD_HALF_WIDTH, t60, room.fs, gen,
                                   start=_direct_passed(distance[i], room.fs, room.c, FD_HALF_WIDTH + hrtf.n_taps))
    return out


def anechoic_rirs(
    azimuth,
    elevation,
    distance=SOURCE_DISTANCE,
    hrtf: HRTFSet | None = None,
    *,
    fs: int = 48000,
    c: float = C,
    n_samples: int | None = None,
    interp: str = DEFAULT_INTERPOLATION,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Free-field binaural responses ``(S, 2, N)`` of sources at head-relative directions.

    The HRIR of each direction, scaled by ``1 / (4 pi d)`` and delayed by ``d / c`` (a
    fractional-delay sinc), as the direct path of :func:`binaural_rirs`. ``N`` defaults to
    the last arrival plus the HRIR length.
    """
    fs = check_fs(fs)
    if not (is_real(c) and c > 0):
        raise InputError(f"c={c!r} is not allowed; use a positive speed of sound in m/s")
    az, el = check_directions(azimuth, elevation)
    az, el = az.ravel(), el.ravel()
    dist = np.broadcast_to(np.asarray(distance, dtype=np.float64), az.shape)
    if not np.all(np.isfinite(dist) & (dist > 0)):
        raise InputError(f"source distance {distance!r} is not allowed; give positive metres")
    hrtf = hrtf_at(hrtf, fs)
    if n_samples is None:
        n_samples = int(math.ceil(dist.max() / c * fs)) + FD_HALF_WIDTH + hrtf.n_taps
    elif not (is_real(n_samples) and int(n_samples) == n_samples and n_samples >= 1):
        raise InputError(f"n_samples={n_samples!r} is not allowed; give a positive integer")
    dtype, device = check_dtype(dtype), resolve_device(device)
    out = torch.zeros(az.size, 2, int(n_samples), device=device, dtype=dtype)
    for i in range(az.size):
        rel = unit_vectors(az[i], el[i])[None, :] * dist[i]
        amp = np.array([1.0 / (4.0 * math.pi * dist[i])])
        out[i] = _render_arrivals(rel, amp, hrtf, int(n_samples), fs, c, interp, device, dtype)
    return out


# -- room presets ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoomPreset:
    """A shoebox room with a listener, for rendering the study's 504-direction grid.

    Parameters
    ----------
    name
        Registry key.
    size
        ``(Lx, Ly, Lz)`` in metres.
    t60
        Reverberation time in seconds (uniform absorption, Sabine).
    listener
        Head centre ``(x, y, z)`` in metres (ears at :data:`LISTENER_HEIGHT`).
    yaw
        Facing direction, degrees counter-clockwise from +x.
    description
        One line for listings.
    """

    name: str
    size: tuple[float, float, float]
    t60: float
    listener: tuple[float, float, float]
    yaw: float = 0.0
    description: str = ""

    def room(self, fs: int = 48000, c: float = C) -> ShoeBox:
        return ShoeBox(self.size, fs=fs, c=c)

    def head(self) -> Listener:
        return Listener(self.listener, self.yaw)

    def sources(self, azimuth, elevation, distance=SOURCE_DISTANCE) -> np.ndarray:
        """Room positions of sources at head-relative directions (checked to lie inside)."""
        return self.room().check_inside(self.head().source_positions(azimuth, elevation, distance), "source")

    def brirs(self, azimuth, elevation, hrtf: HRTFSet | None = None, *, fs: int = 48000,
              distance=SOURCE_DISTANCE, **options) -> torch.Tensor:
        """BRIRs ``(S, 2, N)`` of sources at head-relative directions; ``options`` go to :func:`binaural_rirs`."""
        room = self.room(fs)
        return binaural_rirs(room, self.head(), self.sources(azimuth, elevation, distance), self.t60, hrtf, **options)


#: The five rooms of our binaural scenes (Francl & McDermott 2022 trained in 5 shoebox rooms;
#: the sizes, T60s and listener placements here are our choice, spanning a treated booth to a
#: hall). Listeners stand off-centre at ear height 1.4 m, every study source (1.4 m away,
#: elevation 0-60) lies inside with at least 0.2 m to spare.
ROOMS: dict[str, RoomPreset] = {p.name: p for p in (
    RoomPreset("booth", (3.8, 4.2, 3.0), 0.2, (1.85, 2.15, LISTENER_HEIGHT), 0.0,
               "small treated listening booth, T60 0.2 s"),
    RoomPreset("office", (5.2, 4.4, 2.9), 0.4, (2.4, 2.0, LISTENER_HEIGHT), 30.0,
               "furnished office, T60 0.4 s"),
    RoomPreset("classroom", (8.6, 6.8, 3.2), 0.7, (3.3, 4.1, LISTENER_HEIGHT), 90.0,
               "classroom, T60 0.7 s"),
    RoomPreset("lecture_hall", (13.0, 10.0, 4.5), 1.0, (5.1, 6.3, LISTENER_HEIGHT), 180.0,
               "lecture hall, T60 1.0 s"),
    RoomPreset("hall", (21.0, 15.0, 7.0), 1.4, (8.7, 6.2, LISTENER_HEIGHT), 300.0,
               "large reverberant hall, T60 1.4 s"),
)}


def load_room(name: str) -> RoomPreset:
    """The registered room preset ``name`` (see :data:`ROOMS`)."""
    if name not in ROOMS:
        raise InputError(f"unknown room preset {name!r}; allowed: {', '.join(ROOMS)}")
    return ROOMS[name]


# -- sounds ----------------------------------------------------------------------------------------

SoundMaker = Callable[[np.random.Generator, int, int], np.ndarray]
#: Synthetic non-speech sounds by kind: ``maker(rng, fs, n_samples) -> (n_samples,)``.
SOUNDS: dict[str, SoundMaker] = {}
#: Stream key of each built-in kind in :func:`synthesize`'s seed (their places in the sorted names of the five,
#: frozen so that registering another kind changes no built-in sound); see :func:`sound_key`.
_BUILT_IN_KEYS = {"am_noise": 0, "click_train": 1, "pink_burst": 2, "tone_complex": 3, "white_burst": 4}
#: Lowest rate in Hz at which each kind of :data:`SOUNDS` can be made.
SOUND_MIN_FS: dict[str, int] = {}


def register_sound(kind: str, min_fs: int = 1) -> Callable[[SoundMaker], SoundMaker]:
    """Register a sound maker ``f(rng, fs, n_samples) -> float64 (n_samples,)`` for rates of at least ``min_fs``."""

    def wrap(func: SoundMaker) -> SoundMaker:
        SOUNDS[kind] = func
        SOUND_MIN_FS[kind] = min_fs
        return func

    return wrap


def _ramp(x: np.ndarray, fs: int, ms: float = 5.0) -> np.ndarray:
    """Raised-cosine onset and offset ramps of ``ms`` milliseconds."""
    n = min(int(fs * ms / 1000.0), x.size // 2)
    if n > 0:
        r = 0.5 * (1.0 - np.cos(np.pi * np.arange(n) / n))
        x = x.copy()
        x[:n] *= r
        x[-n:] *= r[::-1]
    return x


def _burst(rng: np.random.Generator, fs: int, n: int, noise: np.ndarray) -> np.ndarray:
    """Place a ramped burst of 30-100 % of the clip at a random onset."""
    length = int(n * rng.uniform(0.3, 1.0))
    start = int(rng.integers(0, n - length + 1))
    out = np.zeros(n)
    out[start:start + length] = _ramp(noise[:length], fs)
    return out


def _colored_noise(rng: np.random.Generator, n: int, slope_db_per_octave: float) -> np.ndarray:
    """Gaussian noise with a power spectrum falling ``slope`` dB per octave (0 white, -3 pink)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    spec *= f ** (slope_db_per_octave / (20.0 * math.log10(2.0)))
    spec[0] = 0.0
    return np.fft.irfft(spec, n)


@register_sound("white_burst")
def white_burst(rng: np.random.Generator, fs: int, n: int) -> np.ndarray:
    """White Gaussian noise burst, 30-100 % of the clip, 5 ms ramps."""
    return _burst(rng, fs, n, rng.standard_normal(n))


@register_sound("pink_burst")
def pink_burst(rng: np.random.Generator, fs: int, n: int) -> np.ndarray:
    """Pink (-3 dB/octave) noise burst, 30-100 % of the clip, 5 ms ramps."""
    return _burst(rng, fs, n, _colored_noise(rng, n, -3.0))


@register_sound("tone_complex", min_fs=math.ceil(1000.0 / 0.45))
def tone_complex(rng: np.random.Generator, fs: int, n: int) -> np.ndarray:
    """Harmonic complex: f0 log-uniform in 100-1000 Hz, harmonics below min(10 kHz, 0.45 fs),
    random phases, spectral tilt -3 to -9 dB/octave, 10 ms ramps (fs >= 2223 Hz: every f0 below 0.45 fs)."""
    f0 = math.exp(rng.uniform(math.log(100.0), math.log(1000.0)))
    tilt = rng.uniform(-9.0, -3.0)
    k = np.arange(1, int(min(10000.0, 0.45 * fs) // f0) + 1)
    t = np.arange(n) / fs
    amp = 10.0 ** (tilt * np.log2(k) / 20.0)
    phase = rng.uniform(0.0, 2.0 * np.pi, k.size)
    x = np.zeros(n)
    for kk, a, p in zip(k, amp, phase, strict=True):
        x += a * np.sin(2.0 * np.pi * kk * f0 * t + p)
    return _ramp(x, fs, 10.0)


@register_sound("click_train")
def click_train(rng: np.random.Generator, fs: int, n: int) -> np.ndarray:
    """Clicks (0.1 ms rectangular) at 4-40 per second with 0-20 % timing jitter; at least one (a clip shorter
    than a period whose first onset falls after its end gets one, anywhere in it)."""
    rate = rng.uniform(4.0, 40.0)
    jitter = rng.uniform(0.0, 0.2)
    period = fs / rate
    width = max(1, int(round(1e-4 * fs)))
    first = rng.uniform(0.0, period)
    if first >= n:  # drawn again only here, so that every train that had a click keeps its samples
        first = rng.uniform(0.0, n - width)
    onsets = np.arange(first, n, period)
    onsets = onsets + rng.uniform(-jitter, jitter, onsets.size) * period
    x = np.zeros(n)
    for o in np.clip(onsets.astype(np.int64), 0, n - width):
        x[o:o + width] = 1.0
    return x


@register_sound("am_noise", min_fs=500)
def am_noise(rng: np.random.Generator, fs: int, n: int) -> np.ndarray:
    """Noise texture: band-limited noise (1-3 octaves wide, centre 200 Hz to min(8 kHz, 0.4 fs)) under a sum
    of two sinusoidal amplitude modulations at 2-32 Hz (fs >= 500 Hz: a 200 Hz centre below 0.4 fs)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1.0 / fs)
    centre = math.exp(rng.uniform(math.log(200.0), math.log(min(8000.0, 0.4 * fs))))
    half = rng.uniform(0.5, 1.5)  # octaves on each side
    with np.errstate(divide="ignore"):
        octs = np.abs(np.log2(np.where(f > 0, f, 1e-12) / centre))
    spec *= np.where(octs <= half, 0.5 * (1.0 + np.cos(np.pi * octs / half)), 0.0)
    x = np.fft.irfft(spec, n)
    t = np.arange(n) / fs
    env = np.ones(n)
    for _ in range(2):
        rate, depth = math.exp(rng.uniform(math.log(2.0), math.log(32.0))), rng.uniform(0.5, 1.0)
        env *= 1.0 + depth * np.sin(2.0 * np.pi * rate * t + rng.uniform(0.0, 2.0 * np.pi))
    return _ramp(x * env, fs, 10.0)


def sound_key(kind: str) -> int:
    """The stream key of a sound kind: :func:`synthesize` seeds ``kind`` with ``SeedSequence([seed, key])``.

    The built-in kinds keep 0 to 4 (:data:`_BUILT_IN_KEYS`); any other kind gets the bytes ``0x01`` + its UTF-8
    name read as one big-endian integer: a key of its own name alone (no two names share one, none is below 256),
    so a kind's sounds do not depend on which other kinds are registered.
    """
    return _BUILT_IN_KEYS.get(kind, int.from_bytes(b"\x01" + kind.encode(), "big"))


def check_sound_fs(kinds, fs: int) -> None:
    """Refuse, in one line, a rate ``fs`` (Hz) below the lowest at which a kind of ``kinds`` can be made
    (:data:`SOUND_MIN_FS`; kinds not registered there, such as speech, pass)."""
    for kind in kinds:
        least = SOUND_MIN_FS.get(kind, 0)
        if fs < least:
            raise InputError(f"sound kind {kind!r} cannot be made at fs={fs} Hz; give fs >= {least} Hz")


def synthesize(kind: str, fs: int = 48000, duration: float = 1.0, seed: int = 0) -> np.ndarray:
    """One synthetic sound, float32 ``(round(duration * fs),)``, peak-normalized to 1.

    The same ``(kind, fs, duration, seed)`` always gives the same samples, whatever other kinds are registered
    (:func:`sound_key`).
    """
    if kind not in SOUNDS:
        raise InputError(f"unknown sound kind {kind!r}; allowed: {', '.join(SOUNDS)}")
    fs = check_fs(fs)
    check_sound_fs((kind,), fs)
    if not (is_real(duration) and math.isfinite(duration * fs) and round(duration * fs) >= 16):
        raise InputError(f"duration={duration!r} s is not allowed; give at least 16 samples' worth")
    if not (is_integer(seed) and seed >= 0):
        raise InputError(f"seed={seed!r} is not allowed; use a non-negative integer")
    n = int(round(float(duration) * fs))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), sound_key(kind)]))
    x = SOUNDS[kind](rng, fs, n)
    peak = np.max(np.abs(x))
    return (x / peak if peak > 0 else x).astype(np.float32)


def sound_set(fs: int = 48000, duration: float = 1.0, per_kind: int = 4, seed: int = 0,
              kinds: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """A small deterministic set of non-speech sounds: ``{"<kind>_<k>": samples}``."""
    kinds = list(SOUNDS) if kinds is None else list(kinds)
    return {f"{kind}_{k:02d}": synthesize(kind, fs, duration, seed=seed * 1000 + k)
            for kind in kinds for k in range(per_kind)}


# -- rendering -------------------------------------------------------------------------------------


def check_level(level_db, name: str = "level_db") -> float:
    """A scene level in dB re :data:`REFERENCE_RMS` as a float; a one-line :class:`InputError` unless it
    is finite and within +-:data:`MAX_LEVEL_DB`."""
    if not (is_real(level_db) and abs(level_db) <= MAX_LEVEL_DB):
        raise InputError(f"{name}={level_db!r} is not allowed; give finite dB re the reference level within "
                         f"+-{MAX_LEVEL_DB:g}")
    return float(level_db)


def scale_to_level(x: np.ndarray, level_db: float) -> np.ndarray:
    """Ear signals ``(..., 2, T)`` scaled so that each scene's RMS (over its ears and samples) is
    ``REFERENCE_RMS * 10 ** (level_db / 20)``.

    Raises
    ------
    InputError
        If a scene is silent (or not finite): it has no level to scale.
    """
    level_db = check_level(level_db)
    x = np.asarray(x, dtype=np.float64)
    rms = np.sqrt(np.mean(x ** 2, axis=(-2, -1), keepdims=True))
    if not np.all((rms > 0) & np.isfinite(rms)):
        raise InputError("a scene of zero (or non-finite) RMS cannot be scaled to a level; give a sound with signal")
    return x * (REFERENCE_RMS * 10.0 ** (level_db / 20.0) / rms)


def spatialize(sound: np.ndarray, brir) -> np.ndarray:
    """Ear signals ``(2, T)``: the dry sound ``(T,)`` convolved with a BRIR ``(2, N)``, cut to ``T``."""
    from xai_loc.acoustics.render import reverberant_signals

    brir = brir.detach().cpu().numpy() if isinstance(brir, torch.Tensor) else np.asarray(brir)
    if brir.ndim != 2 or brir.shape[0] != 2:
        raise InputError(f"BRIR of shape {brir.shape} is not allowed; give (2 ears, taps)")
    return reverberant_signals(sound, brir)


def _fibonacci_directions(n: int, min_elevation: float) -> tuple[np.ndarray, np.ndarray]:
    """``n`` nearly uniform directions on the sphere above ``min_elevation`` degrees."""
    k = np.arange(n) + 0.5
    z_lo = math.sin(math.radians(min_elevation))
    z = z_lo + (1.0 - z_lo) * k / n
    az = np.mod(np.rad2deg(k * math.pi * (3.0 - math.sqrt(5.0))), 360.0)
    return az, np.rad2deg(np.arcsin(z))


def diffuse_noise(n_samples: int, hrtf: HRTFSet, rng: np.random.Generator, *, n_directions: int = 32,
                  kind: str = "pink", interp: str = DEFAULT_INTERPOLATION) -> np.ndarray:
    """Approximately isotropic background ``(2, n_samples)`` at the HRTF set's rate.

    ``n_directions`` (at least 1) independent noises (``"white"``, ``"pink"`` or a registered
    sound kind) through the HRIRs of a Fibonacci lattice of directions covering the set's
    elevation range, summed; the HRIRs between measured directions by ``interp``
    (:meth:`~xai_loc.acoustics.hrtf.HRTFSet.weights`). Anechoic: the room is not simulated.
    """
    _check_length(n_samples)
    if not (is_integer(n_directions) and n_directions >= 1):
        raise InputError(f"n_directions={n_directions!r} is not allowed; use an integer >= 1")
    az, el = _fibonacci_directions(int(n_directions), float(hrtf.elevation.min()))
    hrirs = hrtf.interpolate(az, el, interp)
    out = np.zeros((2, n_samples))
    for h in hrirs:
        out += spatialize(_noise(kind, rng, hrtf.fs, n_samples), h)
    return out


def spatialized_noise(n_samples: int, brirs, rng: np.random.Generator, fs: int, *,
                      kind: str = "am_noise") -> np.ndarray:
    """Background ``(2, n_samples)``: an independent noise of ``kind`` through each BRIR ``(k, 2, N)``, summed."""
    _check_length(n_samples)
    brirs = brirs.detach().cpu().numpy() if isinstance(brirs, torch.Tensor) else np.asarray(brirs)
    if brirs.ndim != 3 or brirs.shape[1] != 2:
        raise InputError(f"noise BRIRs of shape {brirs.shape} are not allowed; give (sources, 2 ears, taps)")
    out = np.zeros((2, n_samples))
    for b in brirs:
        out += spatialize(_noise(kind, rng, fs, n_samples), b)
    return out


def _check_length(n_samples) -> None:
    """A one-line :class:`InputError` unless ``n_samples`` (of a background) is a positive integer."""
    if not (is_integer(n_samples) and n_samples >= 1):
        raise InputError(f"n_samples={n_samples!r} is not allowed; give a positive integer")


def _noise(kind: str, rng: np.random.Generator, fs: int, n: int) -> np.ndarray:
    if kind == "white":
        return rng.standard_normal(n)
    if kind == "pink":
        return _colored_noise(rng, n, -3.0)
    if kind in SOUNDS:
        return SOUNDS[kind](rng, fs, n)
    raise InputError(f"unknown noise kind {kind!r}; allowed: white, pink, {', '.join(SOUNDS)}")


def render_scene(target: np.ndarray, noise: np.ndarray | None = None, snr: float | None = None) -> np.ndarray:
    """Mix ear signals ``(2, T)`` with a background ``(2, T)`` at ``snr`` dB.

    The SNR is the ratio of the target's power to the noise's power, each averaged over both
    ears: ``noise`` is scaled by ``sqrt(P_target / (P_noise 10**(snr / 10)))``. Without
    ``noise`` the target is returned unchanged (as float64).
    """
    target = np.asarray(target, dtype=np.float64)
    if target.ndim != 2 or target.shape[0] != 2 or not np.all(np.isfinite(target)):
        raise InputError(f"target of shape {target.shape} is not allowed; give finite (2 ears, samples) signals")
    if noise is None:
        return target.copy()
    if snr is None:
        raise InputError("a background noise needs an SNR; give snr in dB")
    snr = check_snr(snr)
    noise = np.asarray(noise, dtype=np.float64)
    if noise.shape != target.shape or not np.all(np.isfinite(noise)):
        raise InputError(f"noise of shape {noise.shape} does not match the target {target.shape}; give finite signals")
    p_noise = float(np.mean(noise ** 2))
    if p_noise == 0.0:
        raise InputError("the background noise is all zeros; it cannot be scaled to an SNR")
    p_target = float(np.mean(target ** 2))
    return target + noise * math.sqrt(p_target / (p_noise * 10.0 ** (snr / 10.0)))


#: Background kinds of :func:`render_binaural`.
BACKGROUNDS = ("diffuse", "spatialized")


def _check_brir_options(options: dict, preset: RoomPreset | None) -> None:
    """Refuse, in one line, an option of :func:`render_binaural` that its responses do not take: the keywords
    of :func:`anechoic_rirs` in free field (``preset`` None), else of :meth:`RoomPreset.brirs` (``distance``)
    and :func:`binaural_rirs`, less its own."""
    import inspect

    own = inspect.signature(render_binaural).parameters
    makers = (anechoic_rirs,) if preset is None else (RoomPreset.brirs, binaural_rirs)
    allowed = [name for maker in makers for name, param in inspect.signature(maker).parameters.items()
               if param.kind is inspect.Parameter.KEYWORD_ONLY and name not in own]
    unknown = [name for name in options if name not in allowed]
    if unknown:
        where = "in free field (room=None)" if preset is None else f"in room {preset.name!r}"
        raise InputError(f"option {unknown[0]}={options[unknown[0]]!r} is not allowed {where}; allowed: "
                         f"{', '.join(allowed)}")


def render_binaural(
    sound: np.ndarray,
    azimuth: float,
    elevation: float,
    *,
    room: str | RoomPreset | None = "office",
    hrtf: HRTFSet | None = None,
    fs: int = 48000,
    snr: float | None = None,
    background: str = "diffuse",
    n_noise: int = 4,
    noise_kind: str = "am_noise",
    seed: int = 0,
    **brir_options,
) -> np.ndarray:
    """Ear signals ``(2, T)`` of a dry ``sound`` at a head-relative direction, with optional background.

    Parameters
    ----------
    sound
        Dry source ``(T,)`` at ``fs`` (e.g. :func:`synthesize`, or shipped speech loaded at
        ``fs``).
    azimuth, elevation
        Direction in degrees (90 = left); the source is :data:`SOURCE_DISTANCE` away.
    room
        A preset name or :class:`RoomPreset`, or ``None`` for free field.
    hrtf
        HRIR set (default KEMAR); pass one already at ``fs`` to avoid resampling per call.
    snr
        Target-to-background ratio in dB (both ears); ``None``: no background.
    background
        ``"diffuse"``: an isotropic field of 32 anechoic pink noises (:func:`diffuse_noise`, with the
        target's ``interp``);
        ``"spatialized"``: ``n_noise`` independent ``noise_kind`` sounds at random grid
        directions other than the target's (1 to their number, 503 for a grid target), through
        the same room (Francl & McDermott's spatialized textures).
    seed
        Seeds the background; same arguments and seed give the same signals.
    brir_options
        Passed to :meth:`RoomPreset.brirs` in a room (``distance``, and :func:`binaural_rirs`' ``t_max``,
        ``max_order``, ``t_diff``, ``interp``, ...), to
        :func:`anechoic_rirs` in free field (``c``, ``n_samples``, ``interp``, ...); any other is refused.
    """
    # every argument checked before the room is simulated
    if background not in BACKGROUNDS:
        raise InputError(f"background {background!r} is unknown; allowed: {', '.join(BACKGROUNDS)}")
    snr = None if snr is None else check_snr(snr)
    grid_az, grid_el = study_grid()
    far = np.flatnonzero(np.not_equal(grid_az, check_directions(azimuth, elevation)[0])
                         | np.not_equal(grid_el, elevation))
    if background == "spatialized" and not (is_integer(n_noise) and 1 <= n_noise <= far.size):
        raise InputError(f"n_noise={n_noise!r} is not allowed; use an integer from 1 to {far.size} (the grid "
                         "directions other than the target's)")
    if not (is_integer(seed) and seed >= 0):
        raise InputError(f"seed={seed!r} is not allowed; use a non-negative integer")
    if not (room is None or isinstance(room, (str, RoomPreset))):
        raise InputError(f"room={room!r} is not allowed; give a preset name ({', '.join(ROOMS)}), a RoomPreset or "
                         "None for free field")
    preset = load_room(room) if isinstance(room, str) else room
    _check_brir_options(brir_options, preset)
    hrtf = hrtf_at(hrtf, fs)

    def brirs(az, el) -> np.ndarray:
        if preset is None:
            return anechoic_rirs(az, el, SOURCE_DISTANCE, hrtf, fs=fs, **brir_options).double().numpy()
        return preset.brirs(az, el, hrtf, fs=fs, **brir_options).double().numpy()

    target = spatialize(sound, brirs([azimuth], [elevation])[0])
    if snr is None:
        return target
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    if background == "diffuse":
        noise = diffuse_noise(target.shape[1], hrtf, rng, interp=brir_options.get("interp", DEFAULT_INTERPOLATION))
    else:
        pick = rng.choice(far, size=int(n_noise), replace=False)
        noise = spatialized_noise(target.shape[1], brirs(grid_az[pick], grid_el[pick]), rng, fs, kind=noise_kind)
    return render_scene(target, noise, snr)


__all__ = [
    # labels
    "AZIMUTHS", "ELEVATIONS", "N_LABELS", "STUDY_GRID", "direction_to_label", "label_to_direction", "study_grid",
    # geometry and responses
    "Listener", "binaural_rirs", "anechoic_rirs", "min_t_diff", "TAIL_FIT_S", "SOURCE_DISTANCE", "LISTENER_HEIGHT", "C",
    "hrtf_at",
    # rooms
    "RoomPreset", "ROOMS", "load_room",
    # sounds and rendering
    "SOUNDS", "SOUND_MIN_FS", "check_sound_fs", "register_sound", "sound_key", "synthesize", "sound_set",
    "spatialize", "diffuse_noise", "spatialized_noise", "render_scene", "render_binaural", "BACKGROUNDS",
    # levels
    "REFERENCE_RMS", "MAX_LEVEL_DB", "check_level", "scale_to_level",
]
