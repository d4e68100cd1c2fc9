"""Shoebox rooms, microphone arrays and Sabine's reverberation formula.

Conventions follow pyroomacoustics: ``fs`` in Hz, ``c`` in m/s, positions in metres with
one point per row (``(n, 3)`` arrays), ``T60`` in seconds.
"""
from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass

import numpy as np

from xai_loc.checks import is_real
from xai_loc.errors import InputError

#: Largest T60 accepted anywhere, in seconds; beyond it the request is almost surely a typo.
MAX_T60 = 10.0
#: Speeds of sound accepted, in m/s: air at any temperature, up to water; far outside, the image grid
#: (every image within T60 * c) would not fit in memory.
SPEED_OF_SOUND_RANGE = (100.0, 2000.0)
#: Closest a source may be to a microphone, in metres: the direct path's ``1 / r`` gain is not finite there.
MIN_SOURCE_MIC_DISTANCE = 1e-3


@dataclass(frozen=True)
class ShoeBox:
    """A rectangular room with one corner at the origin.

    Parameters
    ----------
    size
        ``(Lx, Ly, Lz)`` in metres.
    fs
        Sampling rate in Hz, an integer (kept as ``int``).
    c
        Speed of sound in m/s (kept as ``float``).
    """

    size: tuple[float, float, float]
    fs: int = 16000
    c: float = 343.0

    def __post_init__(self) -> None:
        size = tuple(self.size) if isinstance(self.size, (tuple, list, np.ndarray)) else ()
        if len(size) != 3 or not all(is_real(v) and v > 0 for v in size):
            raise InputError(f"room size {reprlib.repr(self.size)} is not allowed; give three positive lengths in "
                             "metres")
        object.__setattr__(self, "size", tuple(float(v) for v in size))
        if not (is_real(self.fs) and self.fs > 0 and int(self.fs) == self.fs):
            raise InputError(f"fs={reprlib.repr(self.fs)} is not allowed; use a positive integer rate in Hz")
        if not (is_real(self.c) and SPEED_OF_SOUND_RANGE[0] <= self.c <= SPEED_OF_SOUND_RANGE[1]):
            raise InputError(f"c={reprlib.repr(self.c)} is not allowed; use a speed of sound in m/s from "
                             f"{SPEED_OF_SOUND_RANGE[0]:g} to {SPEED_OF_SOUND_RANGE[1]:g}")
        # one type each, so that equal rooms describe (and digest) alike: 16000, 16000.0 and np.int64(16000)
        object.__setattr__(self, "fs", int(self.fs))
        object.__setattr__(self, "c", float(self.c))

    @property
    def volume(self) -> float:
        lx, ly, lz = self.size
        return lx * ly * lz

    @property
    def surface(self) -> float:
        lx, ly, lz = self.size
        return 2.0 * (lx * ly + lx * lz + ly * lz)

    def check_inside(self, points: np.ndarray, what: str = "point") -> np.ndarray:
        """Return ``points`` as a float64 ``(n, 3)`` array, or raise if any lies outside."""
        try:
            pts = np.asarray(points)
            if pts.dtype.kind in "bc":  # booleans and complex numbers are no coordinates
                raise TypeError
            pts = pts.astype(np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{what} positions {reprlib.repr(points)} are not an (n, 3) array of real numbers in "
                             "metres") from None
        if pts.ndim == 1:
            pts = pts[None, :]
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise InputError(f"{what} positions of shape {pts.shape} are not allowed; give (n, 3) metres")
        if not np.all(np.isfinite(pts)):
            raise InputError(f"{what} positions contain NaN or inf; give finite coordinates in metres")
        outside = np.any((pts <= 0) | (pts >= np.asarray(self.size)), axis=1)
        if outside.any():
            bad = pts[np.argmax(outside)]
            raise InputError(
                f"{what} at {tuple(round(float(v), 4) for v in bad)} m is outside the room "
                f"{self.size}; positions must lie strictly inside (0, L) on each axis"
            )
        return pts

    def min_t60(self) -> float:
        """Shortest T60 Sabine's formula can give in this room (fully absorbing walls)."""
        return 24.0 * math.log(10.0) * self.volume / (self.c * self.surface)

    def reflection_coefficient(self, t60: float) -> float:
        """Pressure reflection coefficient of every wall for a target ``t60`` (Sabine).

        ``alpha = 24 ln(10) V / (c S T60)`` and ``beta = sqrt(1 - alpha)``, as in
        pyroomacoustics' ``inverse_sabine``. gpuRIR's ``beta_SabineEstimation`` uses the rounded
        constant 0.161 for ``24 ln(10) / c``: the ``gpurir`` convention's
        :meth:`~xai_loc.acoustics.conventions.Convention.reflection_coefficient` does that.
        """
        t60 = check_t60(t60, self)
        alpha = self.min_t60() / t60
        return math.sqrt(1.0 - alpha)


class SourceError(InputError):
    """An :class:`InputError` about one source of a call's ``(S, 3)`` positions, named by its row: ``template``
    holds ``{source}`` where the message names it; :meth:`naming` says the same of the caller's id for that row
    (a store checks a split's sources, rows of the scene's, and names the scene's ids)."""

    def __init__(self, template: str, row: int) -> None:
        super().__init__(template.replace("{source}", str(row)))
        self.template, self.row = template, int(row)

    def __reduce__(self):
        return type(self), (self.template, self.row)

    def naming(self, ids) -> SourceError:
        """The same error naming the source ``ids[row]`` (``ids``: the caller's id of each row)."""
        return SourceError(self.template, int(ids[self.row]))


def source_at(sources: np.ndarray, row: int) -> str:
    """``"source {source} at (x, y, z) m"`` for a :class:`SourceError` template about row ``row`` of ``sources``."""
    return "source {source} at " + f"{tuple(round(float(v), 4) for v in sources[row])} m"


def source_mic_distances(sources: np.ndarray, mics: np.ndarray) -> np.ndarray:
    """Distance ``(S, M)`` in metres from each source to each microphone (positions ``(n, 3)``).

    Raises
    ------
    SourceError
        If a source lies closer than :data:`MIN_SOURCE_MIC_DISTANCE` to a microphone.
    """
    gap = np.linalg.norm(sources[:, None, :] - mics[None, :, :], axis=-1)
    if gap.size and gap.min() < MIN_SOURCE_MIC_DISTANCE:
        k, m = np.unravel_index(int(np.argmin(gap)), gap.shape)
        raise SourceError(f"{source_at(sources, k)} is {gap[k, m]:.2g} m from microphone {m} at "
                          f"{mics[m].tolist()}; keep sources at least {MIN_SOURCE_MIC_DISTANCE:g} m from every "
                          "microphone", k)
    return gap


def _float(value, what: str, allowed: str) -> float:
    """``value``, a real number (:func:`~xai_loc.checks.is_real`, or a NaN or infinite float, which the caller's
    range refuses), as a float; text, a boolean or anything else is a one-line :class:`InputError` naming ``what``
    and the ``allowed`` values (the command line reads its text as a number first)."""
    if is_real(value) or isinstance(value, (float, np.floating)):
        return float(value)
    raise InputError(f"{what}={reprlib.repr(value)} is not a number; give {allowed}")


def check_t60(t60: float, room: ShoeBox | None = None) -> float:
    """Validate a reverberation time in seconds (and, with ``room``, that Sabine allows it)."""
    t60 = _float(t60, "T60", f"seconds in (0, {MAX_T60}]")
    if not math.isfinite(t60) or t60 <= 0 or t60 > MAX_T60:
        raise InputError(f"T60={t60} s is not allowed; give seconds in (0, {MAX_T60}]")
    if room is not None and t60 < room.min_t60():
        raise InputError(
            f"T60={t60} s is too short for room {room.size}; Sabine allows T60 >= {room.min_t60():.4f} s"
        )
    return t60


#: SNR range (dB) a float32 simulation can represent: below it the noise overflows float32
#: (10 ** (-SNR / 20) times the signal), above it the noise is far below float32 resolution.
SNR_RANGE = (-60.0, 200.0)


def check_snr(snr: float) -> float:
    """Validate a signal-to-noise ratio in dB (finite, within :data:`SNR_RANGE`)."""
    low, high = SNR_RANGE
    snr = _float(snr, "SNR", f"dB in [{low:g}, {high:g}]")
    if not math.isfinite(snr) or not low <= snr <= high:
        raise InputError(f"SNR={snr:g} dB is not allowed; give dB in [{low:g}, {high:g}]")
    return snr


def linear_array(n_mics: int, spacing: float, center: tuple[float, float, float], axis: int = 0) -> np.ndarray:
    """Positions ``(n_mics, 3)`` of a uniform linear array centred at ``center``.

    Parameters
    ----------
    n_mics
        Number of microphones.
    spacing
        Inter-microphone distance in metres.
    center
        Array centre ``(x, y, z)`` in metres.
    axis
        Axis the array lies along (0 = x, 1 = y, 2 = z).
    """
    if not (is_real(n_mics) and n_mics >= 1 and int(n_mics) == n_mics and is_real(spacing) and spacing > 0):
        raise InputError(f"linear array with n_mics={reprlib.repr(n_mics)}, spacing={reprlib.repr(spacing)} is not "
                         "allowed; give a positive integer count and a positive spacing in metres")
    if not (is_real(axis) and axis in (0, 1, 2)):
        raise InputError(f"axis={reprlib.repr(axis)} is not allowed; allowed: 0 (x), 1 (y), 2 (z)")
    centre = np.array(center, dtype=object).reshape(-1)  # (3,) or (1, 3)
    if centre.shape != (3,) or not all(is_real(v) for v in centre):
        raise InputError(f"array centre {reprlib.repr(center)} is not allowed; give (x, y, z) in metres")
    n_mics = int(n_mics)
    pos = np.tile(centre.astype(np.float64), (n_mics, 1))
    pos[:, int(axis)] += (np.arange(n_mics) - (n_mics - 1) / 2.0) * spacing
    return pos
