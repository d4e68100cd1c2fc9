"""Scenes: a room, a microphone array, a list of source positions and their splits.

The paper's scene (Comanducci, Antonacci & Sarti, EUSIPCO 2024) is built in as
:func:`paper_scene`; other scenes come from Python objects or a small TOML file
(:meth:`Scene.from_toml`).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tomllib

from xai_loc.acoustics.room import ShoeBox, linear_array
from xai_loc.errors import InputError

#: Split names understood everywhere; ``"all"`` is every source in index order.
SPLITS = ("train", "val", "test", "all")

#: The paper's (T60 s, SNR dB) conditions, one model per condition.
PAPER_CONDITIONS = ((0.15, 25.0), (0.3, 20.0), (0.4, 15.0), (0.6, 10.0))


@dataclass(frozen=True, eq=False)
class Scene:
    """Room, array, candidate source positions and their train/val/test split.

    Parameters
    ----------
    name
        Short identifier, used in store paths.
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
    """

    name: str
    room: ShoeBox
    mics: np.ndarray
    sources: np.ndarray
    splits: dict[str, np.ndarray] = field(default_factory=dict)
    window: int = 5120

    def __post_init__(self) -> None:
        object.__setattr__(self, "mics", self.room.check_inside(self.mics, "microphone"))
        object.__setattr__(self, "sources", self.room.check_inside(self.sources, "source"))
        n = self.sources.shape[0]
        splits = {}
        for key, ids in self.splits.items():
            if key not in SPLITS[:3]:
                raise InputError(f"split {key!r} is unknown; allowed: train, val, test")
            ids = np.asarray(ids, dtype=np.int64)
            if ids.size and (ids.min() < 0 or ids.max() >= n):
                raise InputError(f"split {key!r} names source ids outside 0..{n - 1}")
            splits[key] = ids
        object.__setattr__(self, "splits", splits)
        if int(self.window) != self.window or self.window < 1:
            raise InputError(f"window={self.window!r} is not allowed; use a positive number of samples")

    def source_ids(self, split: str) -> np.ndarray:
        """Source ids of a split (``"all"``: every source)."""
        if split == "all":
            return np.arange(self.sources.shape[0])
        if split not in self.splits:
            allowed = ", ".join([*self.splits, "all"])
            raise InputError(f"split {split!r} is unknown for scene {self.name!r}; allowed: {allowed}")
        return self.splits[split]

    def to_dict(self) -> dict:
        """JSON-serialisable description (stored in dataset attrs)."""
        return {
            "name": self.name,
            "room": {"size": list(self.room.size), "fs": self.room.fs, "c": self.room.c},
            "mics": self.mics.tolist(),
            "sources": self.sources.tolist(),
            "splits": {k: v.tolist() for k, v in self.splits.items()},
            "window": self.window,
        }

    def digest(self) -> str:
        """Short sha256 of :meth:`to_dict`, identifying the scene in provenance."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_toml(cls, path: str | Path) -> Scene:
        """Read a scene from a TOML file.

        Example::

            name = "lab"
            window = 4096
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
        """
        path = Path(path)
        try:
            cfg = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"scene file {str(path)!r} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise InputError(f"scene file {str(path)!r} is not valid TOML: {err}") from None
        try:
            room_cfg = cfg["room"]
            room = ShoeBox(tuple(room_cfg["size"]), fs=room_cfg.get("fs", 16000), c=room_cfg.get("c", 343.0))
            arr = cfg["array"]
            if "linear" in arr:
                lin = arr["linear"]
                mics = linear_array(int(lin["n"]), float(lin["spacing"]), tuple(lin["center"]),
                                    int(lin.get("axis", 0)))
            else:
                mics = np.asarray(arr["positions"], dtype=np.float64)
            sources = np.asarray(cfg["sources"]["positions"], dtype=np.float64)
        except KeyError as err:
            raise InputError(
                f"scene file {str(path)!r} lacks the entry {err.args[0]!r} (see Scene.from_toml)") from None
        split_cfg = cfg.get("splits", {})
        if any(k in split_cfg for k in SPLITS[:3]):
            splits = {k: split_cfg[k] for k in SPLITS[:3] if k in split_cfg}
        else:
            splits = random_split(len(sources), split_cfg.get("fractions", [0.8, 0.1, 0.1]), split_cfg.get("seed", 0))
        return cls(cfg.get("name", path.stem), room, mics, sources, splits, int(cfg.get("window", 5120)))


def random_split(n: int, fractions, seed: int) -> dict[str, np.ndarray]:
    """Split ``n`` ids at random into train/val/test with the given fractions."""
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.shape != (3,) or np.any(fractions < 0) or not np.isclose(fractions.sum(), 1.0):
        raise InputError(
            f"split fractions {fractions.tolist()} are not allowed; give three non-negative numbers summing to 1")
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return {"train": np.sort(perm[:n_train]), "val": np.sort(perm[n_train : n_train + n_val]),
            "test": np.sort(perm[n_train + n_val :])}


def paper_scene() -> Scene:
    """The scene of Comanducci et al. (EUSIPCO 2024).

    Room 3.6 x 8.2 x 2.4 m, fs 16 kHz, c 343 m/s; 16-microphone linear array along x,
    spacing 0.15 m, centred at (1.7, 7.0, 1.2); a 65 x 65 source grid over
    x in [min mic x + 0.25, max mic x - 0.25], y in [4.5, 6.5] (grid index ``ix * 65 + iy``),
    heights uniform in [1, 1.5] (seed 5000). Test: grid points strictly inside
    x in (1.45, 1.95), y in (5.25, 5.75) (285 sources); the other 3940 split 80/20 into
    train/val by a permutation with seed 5000 (3152 / 788).
    """
    room = ShoeBox((3.6, 8.2, 2.4), fs=16000, c=343.0)
    mics = linear_array(16, 0.15, (1.7, 7.0, 1.2))
    gx = np.linspace(mics[:, 0].min() + 0.25, mics[:, 0].max() - 0.25, 65)
    gy = np.linspace(4.5, 6.5, 65)
    xx, yy = np.meshgrid(gx, gy, indexing="ij")
    rng = np.random.default_rng(5000)
    zz = rng.uniform(1.0, 1.5, xx.size)
    sources = np.stack([xx.ravel(), yy.ravel(), zz], axis=1)
    in_test = (sources[:, 0] > 1.45) & (sources[:, 0] < 1.95) & (sources[:, 1] > 5.25) & (sources[:, 1] < 5.75)
    test = np.flatnonzero(in_test)
    rest = np.random.default_rng(5000).permutation(np.flatnonzero(~in_test))
    n_train = int(round(0.8 * rest.size))
    splits = {"train": np.sort(rest[:n_train]), "val": np.sort(rest[n_train:]), "test": test}
    return Scene("paper", room, mics, sources, splits, window=5120)


#: Built-in scenes by name.
SCENES = {"paper": paper_scene}


def load_scene(name_or_path: str | Path = "paper") -> Scene:
    """A built-in scene by name (see :data:`SCENES`) or a scene TOML file by path."""
    if str(name_or_path) in SCENES:
        return SCENES[str(name_or_path)]()
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return Scene.from_toml(path)
    raise InputError(f"scene {str(name_or_path)!r} is neither a built-in ({', '.join(SCENES)}) nor a TOML file")
