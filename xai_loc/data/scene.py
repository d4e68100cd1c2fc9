"""Scenes: a room, a microphone array, a list of source positions and their splits.

The paper's scene (Comanducci, Antonacci & Sarti, EUSIPCO 2024) is built in as
:func:`paper_scene`; other scenes come from Python objects or a small TOML file
(:meth:`Scene.from_toml`). A scene also names the simulation convention its data follow
(:mod:`xai_loc.acoustics.conventions`; ``"gpurir"`` by default).
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from xai_loc.acoustics.conventions import CONVENTIONS, DEFAULT_CONVENTION
from xai_loc.acoustics.room import ShoeBox, check_snr, check_t60, linear_array, source_mic_distances
from xai_loc.checks import is_real
from xai_loc.data.spec import check_name, short_repr, spec_digest
from xai_loc.errors import InputError
from xai_loc.runtime import parse_number

#: Split names understood everywhere; ``"all"`` is every source in index order.
SPLITS = ("train", "val", "test", "all")

#: The paper's (T60 s, SNR dB) conditions, one model per condition.
PAPER_CONDITIONS = ((0.15, 25.0), (0.3, 20.0), (0.4, 15.0), (0.6, 10.0))


def parse_condition(text: str) -> tuple[float, float]:
    """``'T60:SNR'`` (seconds, dB) -> ``(t60, snr)``, e.g. ``'0.6:10'`` -> ``(0.6, 10.0)``; each checked
    (:func:`~xai_loc.acoustics.room.check_t60`, :func:`~xai_loc.acoustics.room.check_snr`), so a bad one is
    refused where it is given."""
    try:
        t60, snr = (parse_number(v) for v in text.split(":"))
    except ValueError:
        raise InputError(f"condition {text!r} is not T60:SNR, e.g. 0.6:10") from None
    try:
        return check_t60(t60), check_snr(snr)
    except InputError as err:
        raise InputError(f"condition {text!r}: {err}") from None


@dataclass(frozen=True, eq=False)
class Scene:
    """Room, array, candidate source positions, their train/val/test split and the simulation convention.

    Parameters
    ----------
    name
        Short identifier, used in store paths (letters, digits, '.', '_', '-').
    room
        The shoebox room (size, ``fs``, ``c``).
    mics
        Microphone positions ``(M, 3)`` in metres.
    sources
        Source positions ``(S, 3)`` in metres; a source's id is its row index.
    splits
        ``{"train": ids, "val": ids, "test": ids}`` as integer arrays of source ids.
    window
        Window length in samples fed to the localizers.
    convention
        Simulation convention of the scene's data (a name in
        :data:`~xai_loc.acoustics.conventions.CONVENTIONS`); part of :meth:`digest`.
    """

    name: str
    room: ShoeBox
    mics: np.ndarray
    sources: np.ndarray
    splits: dict[str, np.ndarray] = field(default_factory=dict)
    window: int = 5120
    convention: str = DEFAULT_CONVENTION

    def __post_init__(self) -> None:
        check_name(self.name, "scene name")
        object.__setattr__(self, "mics", self.room.check_inside(self.mics, "microphone"))
        object.__setattr__(self, "sources", self.room.check_inside(self.sources, "source"))
        if self.sources.shape[0] == 0 or self.mics.shape[0] == 0:
            raise InputError("a scene needs at least one microphone and one source")
        n = self.sources.shape[0]
        splits = {}
        for key, ids in self.splits.items():
            if key not in SPLITS[:3]:
                raise InputError(f"split {key!r} is unknown; allowed: train, val, test")
            ids = np.asarray(ids)
            if ids.size and not np.issubdtype(ids.dtype, np.integer):
                raise InputError(f"split {key!r} holds {short_repr(ids.tolist())}; give integer source ids")
            ids = ids.astype(np.int64)
            if ids.size and (ids.min() < 0 or ids.max() >= n):
                raise InputError(f"split {key!r} names source ids outside 0..{n - 1}")
            values, counts = np.unique(ids, return_counts=True)
            if (counts > 1).any():
                raise InputError(f"split {key!r} names source {int(values[counts > 1][0])} more than once; "
                                 "give each id once")
            for other, seen in splits.items():  # a test source in training would leak its windows
                shared = np.intersect1d(ids, seen)
                if shared.size:
                    raise InputError(f"splits {other!r} and {key!r} share source {int(shared[0])}; "
                                     "give each source to one split")
            splits[key] = ids
        object.__setattr__(self, "splits", splits)
        source_mic_distances(self.sources, self.mics)
        if not is_real(self.window) or int(self.window) != self.window or self.window < 1:
            raise InputError(f"window={short_repr(self.window)} is not allowed; use a positive number of samples")
        object.__setattr__(self, "window", int(self.window))
        if not isinstance(self.convention, str) or self.convention not in CONVENTIONS:
            raise InputError(f"convention {short_repr(self.convention)} is unknown; allowed: {', '.join(CONVENTIONS)}")

    def source_ids(self, split: str) -> np.ndarray:
        """Source ids of a split (``"all"``: every source)."""
        if split == "all":
            return np.arange(self.sources.shape[0])
        if split not in self.splits:
            allowed = ", ".join([*self.splits, "all"])
            raise InputError(f"split {split!r} is unknown for scene {self.name!r}; allowed: {allowed}")
        return self.splits[split]

    def with_convention(self, convention: str) -> Scene:
        """The same scene under another simulation convention (a new digest)."""
        return replace(self, convention=convention)

    def to_dict(self) -> dict:
        """JSON-serialisable description (stored in dataset attrs)."""
        return {
            "name": self.name,
            "room": {"size": list(self.room.size), "fs": self.room.fs, "c": self.room.c},
            "mics": self.mics.tolist(),
            "sources": self.sources.tolist(),
            "splits": {k: v.tolist() for k, v in self.splits.items()},
            "window": self.window,
            "convention": self.convention,
        }

    def digest(self) -> str:
        """Short sha256 of :meth:`to_dict` (the convention included), identifying the scene in provenance."""
        return spec_digest(self.to_dict())

    @classmethod
    def from_toml(cls, path: str | Path) -> Scene:
        """Read a scene from a TOML file.

        Example::

            name = "lab"             # optional (default: the file name); a folder name
            window = 4096            # optional (5120)
            convention = "gpurir"    # optional: "gpurir" (default) or "pyroomacoustics"
            [room]
            size = [5.0, 4.0, 3.0]   # metres; fs and c optional (16000 Hz, 343 m/s)
            [array]
            linear = { n = 8, spacing = 0.1, center = [2.5, 3.5, 1.2], axis = 0 }
            # or: positions = [[x, y, z], ...]
            [sources]
            positions = [[1.0, 1.0, 1.5], [2.0, 1.5, 1.5], [3.0, 1.0, 1.5]]
            [splits]                 # optional: explicit id lists, or fractions with a seed
            fractions = [0.6, 0.2, 0.2]
            seed = 0

        Every malformed or out-of-range field raises :class:`~xai_loc.errors.InputError`
        with one line naming the field, its value and what is allowed.
        """
        path = Path(path)
        label = f"scene file {str(path)!r}"
        try:
            with path.open("rb") as handle:  # TOML is UTF-8, whatever the locale
                cfg = tomllib.load(handle)
        except FileNotFoundError:
            raise InputError(f"{label} does not exist") from None
        except IsADirectoryError:
            raise InputError(f"{label} is a folder; give a .toml file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise InputError(f"{label} is not valid TOML: {str(err).splitlines()[0]}") from None
        except OSError as err:
            raise InputError(f"{label} cannot be read ({err.strerror or type(err).__name__})") from None
        return _scene_from_config(cfg, path, label)


class _Fields:
    """Typed access to a TOML table, every complaint one line naming the field."""

    def __init__(self, label: str):
        self.label = label

    def fail(self, key: str, value, allowed: str) -> InputError:
        return InputError(f"{self.label}: {key} = {short_repr(value)} is not allowed; {allowed}")

    def table(self, cfg: dict, key: str, allowed_keys: tuple[str, ...], required: bool = True) -> dict:
        if key not in cfg:
            if required:
                raise InputError(f"{self.label} lacks the table [{key}] (see Scene.from_toml)")
            return {}
        value = cfg[key]
        if not isinstance(value, dict):
            raise self.fail(key, value, "give a table")
        unknown = sorted(set(value) - set(allowed_keys))
        if unknown:
            raise InputError(f"{self.label}: [{key}] has the unknown entry {unknown[0]!r}; "
                             f"allowed: {', '.join(allowed_keys)}")
        return value

    def number(self, key: str, value, *, positive: bool = False, integer: bool = False,
               lo: float | None = None, hi: float | None = None, allowed: str | None = None) -> float:
        text = allowed or "give " + ("a positive " if positive else "a ") + ("integer" if integer else "number")
        if not is_real(value):
            raise self.fail(key, value, text)
        if integer and not isinstance(value, (int, np.integer)) and float(value) != int(value):
            raise self.fail(key, value, text)
        if (positive and value <= 0) or (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self.fail(key, value, text)
        return int(value) if integer else float(value)

    def vector(self, key: str, value, *, positive: bool = False) -> tuple[float, float, float]:
        what = "three positive numbers in metres" if positive else "three numbers in metres"
        if not isinstance(value, list) or len(value) != 3 or not all(is_real(v) for v in value):
            raise self.fail(key, value, f"give {what}")
        out = tuple(float(v) for v in value)
        if positive and min(out) <= 0:
            raise self.fail(key, value, f"give {what}")
        return out

    def points(self, key: str, value) -> np.ndarray:
        what = "a non-empty list of [x, y, z] positions in metres"
        if not isinstance(value, list) or not value:
            raise self.fail(key, value, f"give {what}")
        for point in value:
            if not isinstance(point, list) or len(point) != 3 or not all(is_real(v) for v in point):
                raise self.fail(key, point, f"give {what}")
        return np.asarray(value, dtype=np.float64)


def _scene_from_config(cfg: dict, path: Path, label: str) -> Scene:
    f = _Fields(label)
    top = ("name", "window", "convention", "room", "array", "sources", "splits")
    unknown = sorted(set(cfg) - set(top))
    if unknown:
        raise InputError(f"{label} has the unknown entry {unknown[0]!r}; allowed: {', '.join(top)}")
    name = check_name(cfg.get("name", path.stem),
                      what=f"{label}: " + ("name" if "name" in cfg else "the scene name (from the file name)"))
    window = f.number("window", cfg.get("window", 5120), positive=True, integer=True, hi=2**24,
                      allowed="give a positive integer number of samples")
    convention = cfg.get("convention", DEFAULT_CONVENTION)
    if not isinstance(convention, str) or convention not in CONVENTIONS:
        raise f.fail("convention", convention, f"allowed: {', '.join(CONVENTIONS)}")

    room_cfg = f.table(cfg, "room", ("size", "fs", "c"))
    if "size" not in room_cfg:
        raise InputError(f"{label} lacks room.size (see Scene.from_toml)")
    size = f.vector("room.size", room_cfg["size"], positive=True)
    fs = f.number("room.fs", room_cfg.get("fs", 16000), positive=True, integer=True, hi=10**6,
                  allowed="give a positive integer rate in Hz (at most 1000000)")
    c = f.number("room.c", room_cfg.get("c", 343.0), positive=True, allowed="give a positive speed of sound in m/s")

    arr = f.table(cfg, "array", ("linear", "positions"))
    if ("linear" in arr) == ("positions" in arr):
        raise InputError(f"{label}: [array] needs exactly one of 'linear' and 'positions'")
    if "linear" in arr:
        lin = arr["linear"]
        if not isinstance(lin, dict):
            raise f.fail("array.linear", lin, "give a table {n, spacing, center, axis}")
        unknown = sorted(set(lin) - {"n", "spacing", "center", "axis"})
        if unknown:
            raise InputError(f"{label}: array.linear has the unknown entry {unknown[0]!r}; "
                             "allowed: n, spacing, center, axis")
        for key in ("n", "spacing", "center"):
            if key not in lin:
                raise InputError(f"{label} lacks array.linear.{key} (see Scene.from_toml)")
        n = f.number("array.linear.n", lin["n"], positive=True, integer=True, hi=4096,
                     allowed="give a positive integer number of microphones (at most 4096)")
        spacing = f.number("array.linear.spacing", lin["spacing"], positive=True,
                           allowed="give a positive spacing in metres")
        center = f.vector("array.linear.center", lin["center"])
        axis = lin.get("axis", 0)
        if not is_real(axis) or axis not in (0, 1, 2):
            raise f.fail("array.linear.axis", axis, "allowed: 0 (x), 1 (y), 2 (z)")
        mics = linear_array(n, spacing, center, int(axis))
    else:
        mics = f.points("array.positions", arr["positions"])

    src_cfg = f.table(cfg, "sources", ("positions",))
    if "positions" not in src_cfg:
        raise InputError(f"{label} lacks sources.positions (see Scene.from_toml)")
    sources = f.points("sources.positions", src_cfg["positions"])

    split_cfg = f.table(cfg, "splits", ("train", "val", "test", "fractions", "seed"), required=False)
    if any(k in split_cfg for k in SPLITS[:3]):
        if "fractions" in split_cfg or "seed" in split_cfg:
            raise InputError(f"{label}: [splits] takes either id lists (train, val, test) or fractions and seed")
        splits = {}
        for key in SPLITS[:3]:
            if key not in split_cfg:
                continue
            ids = split_cfg[key]
            if not isinstance(ids, list) or not all(is_real(i) and float(i) == int(i) for i in ids) \
                    or any(not 0 <= i < len(sources) for i in ids):
                raise f.fail(f"splits.{key}", ids, f"give a list of source ids in 0..{len(sources) - 1}")
            splits[key] = [int(i) for i in ids]
    else:
        fractions = split_cfg.get("fractions", [0.8, 0.1, 0.1])
        if not isinstance(fractions, list) or len(fractions) != 3 or not all(is_real(v) for v in fractions) \
                or any(not 0 <= v <= 1 for v in fractions) or not math.isclose(sum(fractions), 1.0):
            raise f.fail("splits.fractions", fractions, "give three non-negative numbers summing to 1")
        seed = f.number("splits.seed", split_cfg.get("seed", 0), integer=True, lo=0,
                        allowed="give a non-negative integer")
        splits = random_split(len(sources), fractions, seed)
    try:
        return Scene(name, ShoeBox(size, fs=fs, c=c), mics, sources, splits, window, convention)
    except InputError as err:  # a room it cannot simulate, positions outside the room, ...: say which file
        raise InputError(f"{label}: {err}") from None


def random_split(n: int, fractions, seed: int) -> dict[str, np.ndarray]:
    """Split ``n`` ids at random into train/val/test with the given fractions."""
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.shape != (3,) or np.any(fractions < 0) or not np.isclose(fractions.sum(), 1.0):
        raise InputError(
            f"split fractions {fractions.tolist()} are not allowed; give three non-negative numbers summing to 1")
    perm = np.random.default_rng(seed).permutation(n)
    # cut where the cumulative shares fall: a share of 0 gets no id, and the three sizes add up to n
    n_train, cut = (int(v) for v in np.round(np.cumsum(fractions[:2]) * n))
    return {"train": np.sort(perm[:n_train]), "val": np.sort(perm[n_train:cut]), "test": np.sort(perm[cut:])}


def train_test_split_ids(ids: np.ndarray, test_size: float, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``train_test_split(ids, test_size=..., random_state=...)`` without scikit-learn.

    Its ``ShuffleSplit`` draws ``numpy.random.RandomState(random_state).permutation(n)``; the
    test part is the first ``ceil(test_size n)`` of it and the train part the next
    ``n - n_test``. Returns ``(train, test)`` in that drawn order.
    """
    ids = np.asarray(ids)
    n_test = int(math.ceil(test_size * ids.size))
    perm = np.random.RandomState(random_state).permutation(ids.size)
    return ids[perm[n_test:]], ids[perm[:n_test]]


def paper_scene(convention: str = DEFAULT_CONVENTION) -> Scene:
    """The scene of Comanducci et al. (EUSIPCO 2024), source ids in the paper's order.

    Room 3.6 x 8.2 x 2.4 m, fs 16 kHz, c 343 m/s; 16-microphone linear array along x,
    spacing 0.15 m, centred at (1.7, 7.0, 1.2); a 65 x 65 source grid over
    x in [min mic x + 0.25, max mic x - 0.25], y in [4.5, 6.5], in the order of the paper's
    ``params.py`` (``np.meshgrid`` of x and y, raveled: id ``iy * 65 + ix``), heights uniform
    in [1, 1.5] drawn in that order (``default_rng(5000)``). Test: grid points strictly inside
    x in (1.45, 1.95), y in (5.25, 5.75) (285 sources); the other 3940, in id order, split by
    scikit-learn's ``train_test_split(test_size=0.2, random_state=5000)`` into train/val
    (3152 / 788; :func:`train_test_split_ids`). Split ids are stored sorted.

    Parameters
    ----------
    convention
        Simulation convention of the data (default ``"gpurir"``, as the paper simulated).
    """
    room = ShoeBox((3.6, 8.2, 2.4), fs=16000, c=343.0)
    mics = linear_array(16, 0.15, (1.7, 7.0, 1.2))
    gx = np.linspace(mics[:, 0].min() + 0.25, mics[:, 0].max() - 0.25, 65)
    gy = np.linspace(4.5, 6.5, 65)
    xx, yy = np.meshgrid(gx, gy)  # 'xy' indexing, as params.py: x varies fastest
    zz = np.random.default_rng(5000).uniform(1.0, 1.5, xx.size)
    sources = np.stack([xx.ravel(), yy.ravel(), zz], axis=1)
    in_test = (sources[:, 0] > 1.45) & (sources[:, 0] < 1.95) & (sources[:, 1] > 5.25) & (sources[:, 1] < 5.75)
    test = np.flatnonzero(in_test)
    train, val = train_test_split_ids(np.flatnonzero(~in_test), test_size=0.2, random_state=5000)
    splits = {"train": np.sort(train), "val": np.sort(val), "test": test}
    return Scene("paper", room, mics, sources, splits, window=5120, convention=convention)


#: Built-in scenes by name.
SCENES = {"paper": paper_scene}


def load_scene(name_or_path: str | Path = "paper", convention: str | None = None) -> Scene:
    """A built-in scene by name (see :data:`SCENES`) or a scene TOML file by path.

    ``convention``: replace the scene's simulation convention (``None``: keep it).
    """
    text = str(name_or_path)
    if not text.strip():
        raise InputError(f"scene {text!r} is empty; give a built-in name ({', '.join(SCENES)}) or a .toml file")
    if text in SCENES:
        scene = SCENES[text]()
    else:
        path = Path(name_or_path)
        if path.suffix == ".toml" or path.exists():
            scene = Scene.from_toml(path)
        else:
            raise InputError(f"scene {text!r} is neither a built-in ({', '.join(SCENES)}) nor an existing .toml file")
    if convention is not None and convention != scene.convention:
        if convention not in CONVENTIONS:
            raise InputError(f"convention {convention!r} is unknown; allowed: {', '.join(CONVENTIONS)}")
        scene = scene.with_convention(convention)
    return scene
