"""Head-related impulse response sets: the shipped MIT KEMAR set and any SOFA file.

An :class:`HRTFSet` holds HRIRs ``(directions, 2 ears, taps)`` (ear 0 = left), their
directions ``(azimuth, elevation, distance)`` and the sample rate. Directions follow SOFA
(AES69): azimuth in degrees counter-clockwise from the front (90 = left, 270 = right),
elevation in degrees up from the horizontal plane, distance in metres. This is also the
label convention of the cochleagram localizer (Francl & McDermott, 2022)::

    hrtf = HRTFSet.kemar()                    # 710 directions, 44.1 kHz, 512 taps
    hrtf = load_hrtf("sofa", "my_set.sofa")   # any SimpleFreeFieldHRIR-like SOFA file
    h = hrtf.nearest(90.0, 0.0)               # (2, taps): a source on the left
    h = hrtf.interpolate(93.0, 5.0)           # barycentric between 3 measured directions
    hrtf48 = hrtf.resample(48000)

The KEMAR data (Gardner & Martin, MIT Media Lab Perceptual Computing TR #280, 1994) ship in
``hrtf_data/`` as a SOFA file made by ``scripts/make_kemar_sofa.py``; see the README there
for its provenance and licence (free to use, the authors must be cited). SOFA files are read
with ``sofar`` (or, where it is not installed, directly with ``h5py``: SOFA is netCDF-4/HDF5).
"""
from __future__ import annotations

import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from xai_loc.checks import check_fs, is_real
from xai_loc.errors import InputError

#: Folder of the shipped HRTF sets.
HRTF_DIR = Path(__file__).resolve().parent / "hrtf_data"
#: The shipped KEMAR file (normal pinna, 710 directions).
KEMAR_FILE = HRTF_DIR / "mit_kemar_normal_pinna.sofa"
#: Interpolation methods of :meth:`HRTFSet.weights`.
INTERPOLATIONS = ("nearest", "bilinear", "barycentric")
#: The default: bilinear over elevation rings (KEMAR's grid), else barycentric.
DEFAULT_INTERPOLATION = "bilinear"
#: Barycentric weights below this are dropped (so that grid points are reproduced exactly).
_TINY = 1e-12
#: Queries processed at once in brute-force searches (bounds memory to a few tens of MB).
_CHUNK = 2048


def unit_vectors(azimuth, elevation) -> np.ndarray:
    """Unit vectors ``(..., 3)`` of directions in degrees (x front, y left, z up; SOFA)."""
    az = np.deg2rad(np.asarray(azimuth, dtype=np.float64))
    el = np.deg2rad(np.asarray(elevation, dtype=np.float64))
    return np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=-1)


def check_directions(azimuth, elevation) -> tuple[np.ndarray, np.ndarray]:
    """Broadcast directions to float64 arrays; azimuth wrapped to ``[0, 360)``.

    Raises
    ------
    InputError
        If a value is not finite or an elevation lies outside ``[-90, 90]`` degrees.
    """
    try:
        az, el = np.broadcast_arrays(np.asarray(azimuth, dtype=np.float64), np.asarray(elevation, dtype=np.float64))
    except (TypeError, ValueError):
        raise InputError(f"direction (azimuth={azimuth!r}, elevation={elevation!r}) is not allowed; "
                         f"give numbers in degrees") from None
    bad = ~(np.isfinite(az) & np.isfinite(el) & (np.abs(el) <= 90.0 + 1e-9))
    if bad.any():
        k = np.argmax(bad.ravel())
        raise InputError(
            f"direction (azimuth={az.ravel()[k]}, elevation={el.ravel()[k]}) is not allowed; "
            f"azimuth must be finite and elevation in [-90, 90] degrees")
    return np.mod(az, 360.0), np.clip(el, -90.0, 90.0)


@dataclass(frozen=True, eq=False)
class HRTFSet:
    """Head-related impulse responses on a set of directions.

    Parameters
    ----------
    hrirs
        Impulse responses ``(D, 2, N)``, ear 0 = left, ear 1 = right.
    directions
        ``(D, 3)``: azimuth (degrees, counter-clockwise from the front, 90 = left),
        elevation (degrees, up), distance (metres), as in SOFA's spherical
        ``SourcePosition``.
    fs
        Sample rate in Hz.
    name
        Short name shown in ``repr`` and stored in provenance.
    attrs
        Free-form provenance (source file, licence, references).
    """

    hrirs: np.ndarray
    directions: np.ndarray
    fs: int
    name: str = "custom"
    attrs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        hrirs = np.array(self.hrirs, dtype=np.float64)  # a copy: it is made read-only below
        dirs = np.asarray(self.directions, dtype=np.float64)
        if hrirs.ndim != 3 or hrirs.shape[1] != 2 or hrirs.shape[0] < 1 or hrirs.shape[2] < 1:
            raise InputError(f"HRIRs of shape {hrirs.shape} are not allowed; give (directions, 2 ears, taps)")
        if dirs.shape != (hrirs.shape[0], 3):
            raise InputError(
                f"directions of shape {dirs.shape} do not match {hrirs.shape[0]} HRIRs; give (directions, 3)")
        if not np.all(np.isfinite(hrirs)):
            raise InputError(f"HRTF set {self.name!r} contains NaN or inf samples")
        az, el = check_directions(dirs[:, 0], dirs[:, 1])
        dirs = np.stack([az, el, dirs[:, 2]], axis=1)
        hrirs.setflags(write=False)
        dirs.setflags(write=False)
        object.__setattr__(self, "hrirs", hrirs)
        object.__setattr__(self, "directions", dirs)
        object.__setattr__(self, "fs", check_fs(self.fs, "HRTF fs"))

    def __repr__(self) -> str:
        return (f"HRTFSet({self.name!r}, {self.n_directions} directions, {self.n_taps} taps, "
                f"fs={self.fs}, elevations {self.elevation.min():g}..{self.elevation.max():g})")

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def kemar(cls) -> HRTFSet:
        """The shipped MIT KEMAR set (normal pinna, 710 directions, 44.1 kHz, 512 taps, 1.4 m).

        Gardner & Martin (1994), MIT Media Lab Perceptual Computing TR #280. Free to use;
        cite the authors (see ``hrtf_data/README.md``).
        """
        out = cls.from_sofa(KEMAR_FILE)
        object.__setattr__(out, "name", "kemar")
        return out

    @classmethod
    def from_sofa(cls, path: str | Path, distance: float | None = None) -> HRTFSet:
        """Read HRIRs from a SOFA file (``SimpleFreeFieldHRIR`` or any FIR convention with 2 receivers).

        Cartesian source positions are converted to spherical ones; a non-zero
        ``Data.Delay`` is applied as a whole-sample lead-in. The ears follow ``ReceiverPosition``
        (SOFA's y axis points left): receivers stored right ear first are swapped; without
        positions, or with both on the y = 0 plane, receiver 0 is the left ear. The listener is
        assumed to look along +x (``ListenerView`` is not applied).

        Parameters
        ----------
        path
            A ``.sofa`` file.
        distance
            Keep only the measurements at this distance in metres (needed when the file
            holds several distances; nearest-distance match within 1 cm).

        Raises
        ------
        InputError
            If the file is missing, not a SOFA file, not time-domain data with 2 receivers,
            or has an unusable sample rate, delay or positions (also receivers that are not one
            left and one right ear).
        """
        path = Path(path)
        if not path.is_file():
            raise InputError(f"HRTF file {str(path)!r} does not exist; give the path of a .sofa file")
        if path.suffix.lower() != ".sofa":
            raise InputError(f"HRTF file {str(path)!r} is not allowed; give a SOFA file ending in .sofa")
        where = f"HRTF file {str(path)!r}"
        try:
            fields = _read_sofa(path)
        except InputError:
            raise
        except Exception as err:  # netCDF/HDF5 and sofar raise many types for foreign files
            msg = " ".join(str(err).split()) or type(err).__name__
            raise InputError(f"{where} is not a readable SOFA file ({msg})") from None
        if fields["DataType"] not in ("FIR", "FIR-E"):
            raise InputError(f"{where} holds {fields['DataType']!r} data; only time-domain FIR HRIRs are supported")
        ir, fs, pos, delay = fields["IR"], fields["SamplingRate"], fields["SourcePosition"], fields["Delay"]
        pos_type, units = fields["SourcePosition_Type"], fields["SourcePosition_Units"]
        if ir.ndim == 2:
            ir = ir[None]
        if ir.ndim != 3 or ir.shape[1] != 2:
            raise InputError(f"{where} has Data.IR of shape {ir.shape}; expected (measurements, 2 receivers, taps)")
        n = ir.shape[0]
        if delay.size <= 1:
            delay = np.full((1, 2), delay.ravel()[0] if delay.size else 0.0)
        elif delay.shape in ((2,), (1, 2), (n, 2)):
            delay = delay.reshape(-1, 2)
        else:
            raise InputError(f"{where} has Data.Delay of shape {delay.shape} for {n} measurements of 2 receivers; "
                             f"allowed: (1, 2), ({n}, 2) or one value")
        if _receivers_swapped(fields["ReceiverPosition"], fields["ReceiverPosition_Type"], where):
            ir, delay = ir[:, ::-1], delay[:, ::-1]
        if fs.size != 1 or not np.isfinite(fs[0]) or fs[0] <= 0 or fs[0] != round(fs[0]):
            raise InputError(f"{where} has sampling rate {fs.tolist()}; expected one positive integer rate in Hz")
        if pos.shape[0] == 1 and ir.shape[0] > 1:
            pos = np.repeat(pos, ir.shape[0], axis=0)
        if pos.shape != (ir.shape[0], 3):
            raise InputError(f"{where} has source positions of shape {pos.shape} for {ir.shape[0]} measurements")
        if pos_type == "cartesian":
            dist = np.linalg.norm(pos, axis=1)
            if np.any(dist <= 0):
                raise InputError(f"{where} has a source at the listener position; directions are undefined")
            pos = np.stack([np.rad2deg(np.arctan2(pos[:, 1], pos[:, 0])),
                            np.rad2deg(np.arcsin(np.clip(pos[:, 2] / dist, -1, 1))), dist], axis=1)
        elif pos_type != "spherical" or not units.startswith("degree"):
            raise InputError(f"{where} has source positions of type {pos_type!r} in {units!r}; "
                             f"expected spherical degrees or cartesian metres")
        try:
            check_directions(pos[:, 0], pos[:, 1])
        except InputError as err:
            raise InputError(f"{where}: {err}") from None
        radii = np.unique(np.round(pos[:, 2], 2))
        if distance is not None:
            if not (is_real(distance) and distance > 0):
                raise InputError(f"distance={distance!r} is not allowed; give positive metres (available: "
                                 f"{', '.join(f'{r:g}' for r in radii)})")
            keep = np.abs(pos[:, 2] - float(distance)) <= 0.01
            if not keep.any():
                raise InputError(f"{where} has no measurements at distance {distance} m; "
                                 f"available: {', '.join(f'{r:g}' for r in radii)}")
            ir, pos, delay = ir[keep], pos[keep], (delay[keep] if delay.shape[0] > 1 else delay)
        elif radii.size > 1:
            raise InputError(f"{where} holds several distances ({', '.join(f'{r:g}' for r in radii)} m); "
                             f"choose one with distance=")
        delay = np.broadcast_to(np.round(delay).astype(np.int64), (ir.shape[0], 2))
        if np.any(delay):
            if np.any(delay < 0):
                raise InputError(f"{where} has negative Data.Delay values; they cannot be applied")
            lead = int(delay.max())
            padded = np.zeros((ir.shape[0], 2, ir.shape[2] + lead))
            for (m, r), d in np.ndenumerate(delay):
                padded[m, r, d:d + ir.shape[2]] = ir[m, r]
            ir = padded
        attrs = {"file": str(path)}
        for key in ("Title", "DatabaseName", "ListenerShortName", "License", "References"):
            if fields.get(key):
                attrs[key.lower()] = fields[key]
        return cls(ir, pos, int(fs[0]), name=path.stem, attrs=attrs)

    # -- properties -----------------------------------------------------------------------------

    @property
    def n_directions(self) -> int:
        return self.hrirs.shape[0]

    @property
    def n_taps(self) -> int:
        return self.hrirs.shape[2]

    @property
    def azimuth(self) -> np.ndarray:
        """Azimuths in degrees, ``[0, 360)``, counter-clockwise from the front."""
        return self.directions[:, 0]

    @property
    def elevation(self) -> np.ndarray:
        """Elevations in degrees, ``[-90, 90]``."""
        return self.directions[:, 1]

    @cached_property
    def _units(self) -> np.ndarray:
        return unit_vectors(self.azimuth, self.elevation)

    @cached_property
    def _hull(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Hull triangles ``(F, 3)``, inverses of their vertex matrices ``(F, 3, 3)`` and the
        scaled face normals ``(3, F)`` (``n_f / -b_f`` of the face planes ``n_f . x + b_f = 0``).

        ``None`` when the directions do not enclose the listener (e.g. one horizontal ring):
        :meth:`weights` then falls back to inverse-angle weighting.
        """
        from scipy.spatial import ConvexHull, QhullError

        if self.n_directions < 4:
            return None
        # Regular grids hold many coplanar vertex sets (the corners of each azimuth x
        # elevation cell, KEMAR's -40 degree ring that closes the hull underneath), where
        # the triangulation is ambiguous and rays tie between faces. A fixed radial jitter of
        # 1e-7 makes every face a distinct plane; weights change by ~1e-7 and stay exact at
        # the measured directions.
        jitter = 1.0 + 1e-7 * np.random.default_rng(0).uniform(-1.0, 1.0, self.n_directions)
        verts = self._units * jitter[:, None]
        try:
            hull = ConvexHull(verts)
        except QhullError:
            return None
        offset = -hull.equations[:, 3]
        if not np.all(offset > 1e-6):  # the origin must lie strictly inside
            return None
        faces = hull.simplices
        inv = np.linalg.inv(verts[faces])  # w = q @ inv[f] solves q = w @ vertices[f]
        return faces, inv, (hull.equations[:, :3] / offset[:, None]).T

    @cached_property
    def _rings(self) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]] | None:
        """Elevation rings ``(R,)`` (ascending) with each ring's direction indices and azimuths in
        ``[0, 360)``, both sorted by azimuth, a direction listed twice on a ring taken once (its first
        listing, as in :meth:`nearest_index`); ``None`` where the set is not a grid of rings (fewer
        than 2 rings, or fewer than 4 directions per ring on average)."""
        rounded = np.round(self.elevation, 6)
        levels = np.unique(rounded)
        if levels.size < 2 or self.n_directions < 4 * levels.size:
            return None
        index, azimuth = [], []
        for level in levels:
            members = np.flatnonzero(rounded == level)
            # a direction listed twice on a ring (a pole as az 0 and 360) counts once: its first listing
            az, first = np.unique(self.azimuth[members], return_index=True)
            index.append(members[first])
            azimuth.append(az)
        return levels, index, azimuth

    # -- lookup ---------------------------------------------------------------------------------

    def nearest_index(self, azimuth, elevation) -> np.ndarray:
        """Index of the measured direction with the smallest great-circle angle to each query.

        Directions outside the measured range (e.g. below KEMAR's -40 degrees) get the
        closest measured direction. Returns an int array of the broadcast query shape.
        """
        az, el = check_directions(azimuth, elevation)
        q = unit_vectors(az, el).reshape(-1, 3)
        out = np.empty(q.shape[0], dtype=np.int64)
        for i in range(0, q.shape[0], _CHUNK):
            out[i:i + _CHUNK] = np.argmax(q[i:i + _CHUNK] @ self._units.T, axis=1)
        return out.reshape(az.shape)

    def nearest(self, azimuth, elevation) -> np.ndarray:
        """HRIRs ``(..., 2, N)`` of the nearest measured directions."""
        return self.hrirs[self.nearest_index(azimuth, elevation)]

    def weights(self, azimuth, elevation, method: str = DEFAULT_INTERPOLATION) -> tuple[np.ndarray, np.ndarray]:
        """Measured directions and weights that make up each query direction.

        ``"nearest"``: one direction, weight 1. ``"bilinear"`` (default): for a set measured
        on elevation rings (KEMAR: 14 rings from -40 to 90 degrees), linear in azimuth between
        the two neighbours on each of the two rings that bracket the elevation, then linear in
        elevation between the rings; elevations beyond the outer rings take the outer ring
        (a floor reflection below KEMAR's -40 degrees gets the -40 degree ring at its
        azimuth). It is exact at measured directions, continuous, and mirror-symmetric where
        the set is (left ear at ``az`` = right ear at ``-az``); sets that are not ring grids
        use ``"barycentric"``. ``"barycentric"``: the triangle of the
        convex hull of the measured unit vectors that the query ray passes through (a
        spherical Delaunay triangulation for well-spread sets) and the barycentric weights of
        the ray's crossing point, normalized to sum to 1 (as in vector-base amplitude
        panning, Pulkki 1997). Weights are linear within a triangle, continuous across
        edges, and exactly ``(1, 0, 0)`` at a measured direction. On a ring grid the
        triangulation of its flat cells is arbitrary (a mirror-image direction can get the
        other diagonal), and a query outside the measured range falls in a cap triangle whose
        corners can be far apart in azimuth (below KEMAR's -40 degrees, up to 200 degrees:
        wrong interaural cues); kept to reproduce data rendered with it. Sets that do not
        enclose the listener (a single ring) use inverse-angle weights of the 3 nearest
        directions instead.

        Returns
        -------
        index, weight
            ``(..., K)`` int and float64 arrays, ``K = 1`` (nearest), 4 (bilinear) or 3;
            unused slots have weight 0.
        """
        if method not in INTERPOLATIONS:
            raise InputError(f"HRIR interpolation {method!r} is unknown; allowed: {', '.join(INTERPOLATIONS)}")
        az, el = check_directions(azimuth, elevation)
        if method == "nearest":
            idx = self.nearest_index(az, el)[..., None]
            return idx, np.ones(idx.shape)
        if method == "bilinear" and self._rings is not None:
            idx, w = self._bilinear(az.ravel(), el.ravel(), *self._rings)
        else:
            q = unit_vectors(az, el).reshape(-1, 3)
            hull = self._hull
            idx, w = self._inverse_angle_weights(q) if hull is None else self._barycentric(q, *hull)
        w[w < _TINY] = 0.0
        w /= w.sum(axis=1, keepdims=True)
        return idx.reshape(*az.shape, idx.shape[-1]), w.reshape(*az.shape, w.shape[-1])

    @staticmethod
    def _bilinear(az: np.ndarray, el: np.ndarray, levels: np.ndarray, index: list[np.ndarray],
                  azimuth: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`weights`' ``"bilinear"``: ``(Q, 4)`` indices and weights (lower ring's two, then upper's)."""
        el = np.clip(el, levels[0], levels[-1])
        lo = np.clip(np.searchsorted(levels, el, side="right") - 1, 0, levels.size - 2)
        t = np.clip((el - levels[lo]) / (levels[lo + 1] - levels[lo]), 0.0, 1.0)
        az = np.mod(az, 360.0)
        idx, w = np.zeros((az.size, 4), dtype=np.int64), np.zeros((az.size, 4))
        for slot, ring_of, share in ((0, lo, 1.0 - t), (2, lo + 1, t)):
            for r in np.unique(ring_of):
                sel = np.flatnonzero(ring_of == r)
                ring_az, ring_idx = azimuth[r], index[r]
                if ring_az.size == 1:  # a pole
                    idx[sel, slot], w[sel, slot] = ring_idx[0], share[sel]
                    continue
                k = np.searchsorted(ring_az, az[sel], side="right") - 1  # -1: below the first, wraps to the last
                a0 = ring_az[k]
                gap = np.mod(ring_az[(k + 1) % ring_az.size] - a0, 360.0)
                u = np.mod(az[sel] - a0, 360.0) / gap
                idx[sel, slot], idx[sel, slot + 1] = ring_idx[k], ring_idx[(k + 1) % ring_az.size]
                w[sel, slot], w[sel, slot + 1] = share[sel] * (1.0 - u), share[sel] * u
        return idx, w

    def _barycentric(self, q: np.ndarray, faces, inv, normals) -> tuple[np.ndarray, np.ndarray]:
        # The ray t q (t > 0) leaves the convex hull through the face whose plane it meets
        # first, i.e. the face maximizing (n_f . q) / -b_f: one matrix product per chunk.
        face = np.concatenate([np.argmax(q[i:i + _CHUNK] @ normals, axis=1) for i in range(0, q.shape[0], _CHUNK)])
        weight = np.einsum("qc,qcj->qj", q, inv[face])
        # Rays through edges or vertices may tie between faces; for the rare ray whose chosen
        # face has a negative weight, take among the faces it meets first the one whose
        # weights are least negative (searched over all faces, for these rays only).
        miss = np.nonzero(weight.min(axis=1) < -1e-9)[0]
        step = max(1, _CHUNK // 8)
        for i in range(0, miss.size, step):
            sel = miss[i:i + step]
            score = q[sel] @ normals
            w = np.einsum("qc,fcj->qfj", q[sel], inv).min(axis=2)
            tied = score >= score.max(axis=1, keepdims=True) - 1e-9
            face[sel] = np.argmax(np.where(tied, w, -np.inf), axis=1)
            weight[sel] = np.einsum("qc,qcj->qj", q[sel], inv[face[sel]])
        return faces[face], np.clip(weight, 0.0, None)

    def _inverse_angle_weights(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = min(3, self.n_directions)
        cos = np.clip(q @ self._units.T, -1.0, 1.0)
        idx = np.argsort(-cos, axis=1)[:, :k]
        ang = np.arccos(np.take_along_axis(cos, idx, axis=1))
        exact = ang < 1e-9
        w = np.where(exact.any(axis=1, keepdims=True), exact.astype(np.float64), 1.0 / np.maximum(ang, 1e-12))
        if k < 3:
            idx = np.pad(idx, ((0, 0), (0, 3 - k)))
            w = np.pad(w, ((0, 0), (0, 3 - k)))
        return idx, w

    def interpolate(self, azimuth, elevation, method: str = DEFAULT_INTERPOLATION) -> np.ndarray:
        """HRIRs ``(..., 2, N)`` at arbitrary directions: a weighted sum of measured HRIRs.

        See :meth:`weights` for the methods. Time-domain mixing of neighbouring HRIRs (a few
        degrees apart on KEMAR) slightly smooths the interaural delay and adds mild comb
        filtering above a few kHz; at a measured direction the result is that HRIR exactly.
        """
        idx, w = self.weights(azimuth, elevation, method)
        return np.einsum("...k,...ken->...en", w, self.hrirs[idx])

    # -- transforms -----------------------------------------------------------------------------

    def resample(self, fs: int) -> HRTFSet:
        """The same set at rate ``fs`` (``scipy.signal.resample_poly``, Kaiser window).

        Taps become ``ceil(N * fs / self.fs)``. Samples are scaled by ``self.fs / fs`` so
        that the filters keep their frequency response (the same gain on a signal at the new
        rate); content above the lower Nyquist frequency is removed when downsampling.
        """
        from xai_loc.acoustics.speech import resample

        fs = check_fs(fs)
        if fs == self.fs:
            return self
        hrirs = resample(self.hrirs, self.fs, fs, f"HRTF set {self.name!r}") * (self.fs / fs)
        attrs = {**self.attrs, "resampled_from": self.fs}
        out = HRTFSet(hrirs, self.directions, fs, name=self.name, attrs=attrs)
        for key in ("_units", "_hull"):  # same directions: share the cached geometry
            if key in self.__dict__:
                out.__dict__[key] = self.__dict__[key]
        return out

    def subset(self, index) -> HRTFSet:
        """The set restricted to the directions ``index``: ints in ``0..D-1`` or a boolean mask of ``D``, picking
        at least one."""
        index, n = np.asarray(index), self.n_directions
        if index.dtype == bool and index.shape == (n,):
            picked = int(index.sum())
        elif index.ndim == 1 and index.dtype.kind in "iu" and np.all((index >= 0) & (index < n)):
            picked = index.size
        else:
            picked = 0
        if picked == 0:
            raise InputError(f"direction index {reprlib.repr(index.tolist())} is not allowed; give direction numbers "
                             f"in 0..{n - 1} or a boolean mask of {n}, picking at least one")
        return HRTFSet(self.hrirs[index], self.directions[index], self.fs, name=self.name, attrs=dict(self.attrs))

    def onset(self, threshold_db: float = -20.0) -> np.ndarray:
        """First sample ``(D, 2)`` where each HRIR's envelope exceeds ``threshold_db`` re its peak."""
        mag = np.abs(self.hrirs)
        above = mag >= mag.max(axis=2, keepdims=True) * 10.0 ** (threshold_db / 20.0)
        return np.argmax(above, axis=2)


_GLOBALS = ("DataType", "Title", "DatabaseName", "ListenerShortName", "License", "References")


def _receivers_swapped(receivers: np.ndarray | None, pos_type: str, where: str) -> bool:
    """Whether receiver 0 of a SOFA file is the right ear, from its ``ReceiverPosition`` ``(2, 3[, I or M])``.

    SOFA's y axis points left: (y > 0, y < 0) is (left, right), (y < 0, y > 0) swapped. No
    positions, or both receivers within a nanometre of y = 0, keep receiver 0 as the left ear.

    Raises
    ------
    InputError
        If the positions are not two receivers, not cartesian or spherical, or not one left and
        one right ear in every measurement.
    """
    if receivers is None or receivers.size == 0:
        return False
    pos = receivers[..., None] if receivers.ndim == 2 else receivers
    if pos.ndim != 3 or pos.shape[:2] != (2, 3):
        raise InputError(f"{where} has ReceiverPosition of shape {receivers.shape}; expected (2 receivers, 3)")
    if pos_type == "cartesian":
        y = pos[:, 1]
    elif pos_type == "spherical":
        y = pos[:, 2] * np.cos(np.deg2rad(pos[:, 1])) * np.sin(np.deg2rad(pos[:, 0]))
    else:
        raise InputError(f"{where} has receiver positions of type {pos_type!r}; expected cartesian or spherical")
    side = np.where(np.abs(y) <= 1e-9, 0.0, np.sign(y))  # (2 receivers, I or M)
    if np.any(side != side[:, :1]):
        raise InputError(f"{where} has receivers that change sides between measurements; expected the same ears "
                         f"throughout")
    left, right = side[:, 0]
    if left == right == 0 or (left, right) == (1, -1):
        return False
    if (left, right) == (-1, 1):
        return True
    raise InputError(f"{where} has receivers at y = {y[0, 0]:g} and {y[1, 0]:g} m; expected one left (y > 0) "
                     f"and one right ear (y < 0), SOFA's y axis pointing left")


def _read_sofa(path: Path) -> dict:
    """The fields of a SOFA file that :meth:`HRTFSet.from_sofa` uses, as plain arrays and strings.

    Read with ``sofar`` (the reference SOFA reader); where sofar is not installed (e.g. a
    GPU image without it), SOFA's netCDF-4 layout is read directly with ``h5py``.
    """
    try:
        import sofar
    except ImportError:
        return _read_sofa_h5py(path)
    sofa = sofar.read_sofa(str(path), verify=False, verbose=False)
    try:
        fields = {
            "IR": np.asarray(sofa.Data_IR, dtype=np.float64),
            "SamplingRate": np.asarray(sofa.Data_SamplingRate, dtype=np.float64).ravel(),
            "SourcePosition": np.atleast_2d(np.asarray(sofa.SourcePosition, dtype=np.float64)),
            "SourcePosition_Type": str(getattr(sofa, "SourcePosition_Type", "spherical")).lower(),
            "SourcePosition_Units": str(getattr(sofa, "SourcePosition_Units", "degree, degree, metre")).lower(),
            "Delay": np.asarray(getattr(sofa, "Data_Delay", 0.0), dtype=np.float64),
            "ReceiverPosition": (None if getattr(sofa, "ReceiverPosition", None) is None
                                 else np.asarray(sofa.ReceiverPosition, dtype=np.float64)),
            "ReceiverPosition_Type": str(getattr(sofa, "ReceiverPosition_Type", "cartesian")).lower(),
        }
    except (AttributeError, TypeError, ValueError) as err:
        raise InputError(f"HRTF file {str(path)!r} lacks HRIR data or source positions ({err})") from None
    for key in _GLOBALS:
        fields[key] = str(getattr(sofa, f"GLOBAL_{key}", "FIR" if key == "DataType" else ""))
    return fields


def _read_sofa_h5py(path: Path) -> dict:
    import h5py

    def text(value, default: str = "") -> str:
        if value is None:
            return default
        return value.decode() if isinstance(value, bytes) else str(value)

    with h5py.File(path, "r") as f:
        if "Data.IR" not in f or "SourcePosition" not in f or "Data.SamplingRate" not in f:
            raise InputError(f"HRTF file {str(path)!r} lacks HRIR data or source positions "
                             f"(Data.IR, Data.SamplingRate, SourcePosition)")
        src = f["SourcePosition"]
        fields = {
            "IR": np.asarray(f["Data.IR"][()], dtype=np.float64),
            "SamplingRate": np.asarray(f["Data.SamplingRate"][()], dtype=np.float64).ravel(),
            "SourcePosition": np.atleast_2d(np.asarray(src[()], dtype=np.float64)),
            "SourcePosition_Type": text(src.attrs.get("Type"), "spherical").lower(),
            "SourcePosition_Units": text(src.attrs.get("Units"), "degree, degree, metre").lower(),
            "Delay": np.asarray(f["Data.Delay"][()], dtype=np.float64) if "Data.Delay" in f else np.zeros(1),
            "ReceiverPosition": None, "ReceiverPosition_Type": "cartesian",
        }
        if "ReceiverPosition" in f:
            fields["ReceiverPosition"] = np.asarray(f["ReceiverPosition"][()], dtype=np.float64)
            fields["ReceiverPosition_Type"] = text(f["ReceiverPosition"].attrs.get("Type"), "cartesian").lower()
        for key in _GLOBALS:
            fields[key] = text(f.attrs.get(key), "FIR" if key == "DataType" else "")
    return fields


#: HRTF set constructors by name; :func:`load_hrtf` and the CLI's choices come from here.
HRTF_SETS: dict[str, Callable[..., HRTFSet]] = {
    "kemar": HRTFSet.kemar,
    "sofa": HRTFSet.from_sofa,
}


def load_hrtf(name: str = "kemar", path: str | Path | None = None, fs: int | None = None,
              distance: float | None = None) -> HRTFSet:
    """Build the registered HRTF set ``name`` (see :data:`HRTF_SETS`), optionally resampled to ``fs``.

    ``"kemar"`` takes no ``path`` and no ``distance`` (it is measured at 1.4 m only); ``"sofa"`` needs a
    ``path``, and a ``distance`` in metres where the file holds several (:meth:`HRTFSet.from_sofa`).
    """
    if name not in HRTF_SETS:
        raise InputError(f"unknown HRTF set {name!r}; allowed: {', '.join(HRTF_SETS)}")
    if name == "sofa":
        if path is None:
            raise InputError("HRTF set 'sofa' needs a path; give a .sofa file")
        hrtf = HRTF_SETS[name](path, distance=distance)
    else:
        if path is not None:
            raise InputError(f"HRTF set {name!r} takes no path (got {str(path)!r}); use 'sofa' for your own file")
        if distance is not None:
            raise InputError(f"HRTF set {name!r} takes no distance (got {distance!r}); it holds one, use 'sofa' "
                             "for a file of several")
        hrtf = HRTF_SETS[name]()
    return hrtf if fs is None else hrtf.resample(fs)


def great_circle(az1, el1, az2, el2) -> np.ndarray:
    """Great-circle angle in degrees between directions (degrees)."""
    u, v = unit_vectors(az1, el1), unit_vectors(az2, el2)
    return np.rad2deg(np.arccos(np.clip((u * v).sum(axis=-1), -1.0, 1.0)))


__all__ = [
    "HRTFSet", "HRTF_SETS", "load_hrtf", "unit_vectors", "check_directions", "great_circle",
    "DEFAULT_INTERPOLATION", "INTERPOLATIONS", "KEMAR_FILE",
]
