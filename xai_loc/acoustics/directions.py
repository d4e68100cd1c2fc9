"""Direction grids: the classes of a direction classifier, and the two azimuth conventions.

A :class:`DirectionGrid` is the product of a list of azimuths and a list of elevations
(degrees); class ``label = i_elevation * n_azimuths + i_azimuth`` (azimuth fastest). It maps
labels to directions (:meth:`~DirectionGrid.directions`), grid directions to labels
(:meth:`~DirectionGrid.label`, exact) and any direction to the nearest class
(:meth:`~DirectionGrid.nearest`). The grids of the binaural families:

:data:`STUDY_GRID`     72 azimuths (0..355, step 5) x 7 elevations (0..60, step 10): the 504
                       classes of the cochleagram study (Francl & McDermott 2022), SOFA convention
:data:`AZIMUTH_RING`   the same 72 azimuths at elevation 0: the cochleagram CNN's ``'azimuth'``
                       head and the cue network
:data:`LATERAL_GRID`   azimuths -90..90 (step 5, positive = right) and elevations -40..90 (step
                       10, KEMAR's): the TF-CNN's two heads (Pang et al. 2019)

**Conventions.** SOFA: azimuth counter-clockwise from the front, 90 = left, in ``[0, 360)``
(circular grids). Lateral: positive to the right, -90 (left) .. 90 (right), the TF-CNN's;
:func:`to_sofa_azimuth` and :func:`from_sofa_azimuth` convert.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xai_loc.errors import InputError

__all__ = ["AZIMUTH_RING", "DirectionGrid", "LATERAL_GRID", "STUDY_GRID", "from_sofa_azimuth", "to_sofa_azimuth"]

#: Largest distance (degrees) at which a direction counts as a grid direction in :meth:`DirectionGrid.label`.
_ON_GRID = 1e-6


def to_sofa_azimuth(azimuth) -> np.ndarray:
    """SOFA azimuth (counter-clockwise, 90 = left, in ``[0, 360)``) of lateral azimuths (positive = right)."""
    return np.mod(-np.asarray(azimuth, dtype=np.float64), 360.0)


def from_sofa_azimuth(sofa) -> np.ndarray:
    """Lateral azimuth (positive = right, in ``(-180, 180]``) of SOFA azimuths."""
    a = -np.mod(np.asarray(sofa, dtype=np.float64) + 180.0, 360.0) + 180.0
    return np.where(a == -180.0, 180.0, a)


def _span(values: np.ndarray) -> str:
    """``'0..355 in steps of 5'`` for an evenly spaced axis, else the values."""
    steps = np.diff(values)
    if values.size > 2 and np.allclose(steps, steps[0]):
        return f"{values[0]:g}..{values[-1]:g} in steps of {steps[0]:g}"
    return ", ".join(f"{v:g}" for v in values)


@dataclass(frozen=True, eq=False)
class DirectionGrid:
    """Classes of a direction classifier: every pair of ``azimuths`` and ``elevations`` (degrees).

    Parameters
    ----------
    name
        Short name, for messages.
    azimuths, elevations
        Increasing class directions along each axis.
    circular
        Whether the azimuths go round the full circle (SOFA convention): azimuth distances
        wrap at 360 degrees in :meth:`nearest`.
    convention
        The azimuth convention, in words.
    """

    name: str
    azimuths: np.ndarray
    elevations: np.ndarray
    circular: bool = True
    convention: str = "SOFA: counter-clockwise from the front, 90 = left"

    def __post_init__(self) -> None:
        for axis in ("azimuths", "elevations"):
            values = np.array(getattr(self, axis), dtype=np.float64)
            if values.ndim != 1 or values.size == 0 or np.any(np.diff(values) <= 0):
                raise InputError(f"{axis}={values.tolist()} are not allowed; give increasing degrees")
            values.setflags(write=False)
            object.__setattr__(self, axis, values)

    @property
    def n_azimuths(self) -> int:
        return self.azimuths.size

    @property
    def n_elevations(self) -> int:
        return self.elevations.size

    @property
    def size(self) -> int:
        """Number of classes."""
        return self.n_azimuths * self.n_elevations

    def __len__(self) -> int:
        return self.size

    def directions(self, labels=None) -> tuple[np.ndarray, np.ndarray]:
        """Azimuth and elevation (degrees) of class ``labels`` (default: every class, in label order).

        Raises
        ------
        InputError
            For labels that are not integers in ``0 .. size - 1``.
        """
        lab = np.arange(self.size) if labels is None else np.asarray(labels)
        if lab.dtype.kind not in "iu" and not (lab.dtype.kind == "f" and np.all(lab == np.round(lab))):
            raise InputError(f"labels {labels!r} are not allowed; give integers in 0..{self.size - 1}")
        outside = (lab < 0) | (lab >= self.size)  # before the cast: 1e20 or inf would wrap round
        if np.any(outside):
            raise InputError(f"label {lab.ravel()[np.argmax(outside.ravel())]} is not allowed; "
                             f"give integers in 0..{self.size - 1}")
        lab = lab.astype(np.int64)
        return self.azimuths[lab % self.n_azimuths], self.elevations[lab // self.n_azimuths]

    def _indices(self, azimuth, elevation) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Nearest azimuth and elevation index of each direction, and their distances (degrees)."""
        az, el = np.broadcast_arrays(np.asarray(azimuth, dtype=np.float64),
                                     np.asarray(0.0 if elevation is None else elevation, dtype=np.float64))
        d_az = az[..., None] - self.azimuths
        if self.circular:
            d_az = np.mod(d_az + 180.0, 360.0) - 180.0
        d_az = np.abs(d_az)
        d_el = np.abs(el[..., None] - self.elevations)
        i_az, i_el = d_az.argmin(-1), d_el.argmin(-1)
        return (i_az, i_el, np.take_along_axis(d_az, i_az[..., None], -1)[..., 0],
                np.take_along_axis(d_el, i_el[..., None], -1)[..., 0])

    def label(self, azimuth, elevation=None) -> np.ndarray:
        """Class label of grid directions (degrees; ``elevation`` None for a one-elevation grid).

        Raises
        ------
        InputError
            If a direction is not on the grid (an azimuth of 360 is not 0 here: labels are
            exact, :meth:`nearest` is the lookup for any direction).
        """
        if elevation is None and self.n_elevations > 1:
            raise InputError(f"the {self.name} grid has {self.n_elevations} elevations; give the elevation too")
        az, el = np.broadcast_arrays(np.asarray(azimuth, dtype=np.float64),
                                     np.asarray(self.elevations[0] if elevation is None else elevation,
                                                dtype=np.float64))
        i_az, i_el, _, d_el = self._indices(az, el)
        bad = ~(np.isfinite(az) & np.isfinite(el) & (np.abs(az - self.azimuths[i_az]) < _ON_GRID)
                & (d_el < _ON_GRID))
        if bad.any():
            k = np.argmax(bad.ravel())
            raise InputError(f"direction (azimuth={az.ravel()[k]}, elevation={el.ravel()[k]}) has no label; "
                             f"allowed: azimuth {_span(self.azimuths)}, elevation {_span(self.elevations)} degrees")
        return (i_el * self.n_azimuths + i_az).astype(np.int64)

    def nearest(self, azimuth, elevation=None) -> np.ndarray:
        """Label of the class nearest to each direction (azimuth and elevation each to its nearest
        grid value; azimuths wrap on circular grids; ``elevation`` None: elevation 0).

        Raises
        ------
        InputError
            For a direction that is not finite (it has no nearest class).
        """
        az, el = np.broadcast_arrays(np.asarray(azimuth, dtype=np.float64),
                                     np.asarray(0.0 if elevation is None else elevation, dtype=np.float64))
        bad = ~(np.isfinite(az) & np.isfinite(el))
        if bad.any():
            k = np.argmax(bad.ravel())
            raise InputError(f"direction (azimuth={az.ravel()[k]}, elevation={el.ravel()[k]}) is not finite; "
                             "give finite degrees")
        i_az, i_el, _, _ = self._indices(az, el)
        return (i_el * self.n_azimuths + i_az).astype(np.int64)

    def __repr__(self) -> str:
        return (f"DirectionGrid({self.name!r}: azimuth {_span(self.azimuths)}, elevation {_span(self.elevations)}, "
                f"{self.size} classes)")


_RING = np.arange(0.0, 360.0, 5.0)

#: The 504 classes of the cochleagram study: 72 azimuths x 7 elevations (SOFA, 90 = left).
STUDY_GRID = DirectionGrid("study", _RING, np.arange(0.0, 70.0, 10.0))
#: 72 azimuths at elevation 0 (the cochleagram CNN's azimuth head, the cue network).
AZIMUTH_RING = DirectionGrid("azimuth ring", _RING, np.array([0.0]))
#: The TF-CNN's azimuths (-90..90, positive = right) and elevations (KEMAR's -40..90).
LATERAL_GRID = DirectionGrid("lateral", np.arange(-90.0, 91.0, 5.0), np.arange(-40.0, 91.0, 10.0), circular=False,
                             convention="lateral: degrees from the front, positive = right")
