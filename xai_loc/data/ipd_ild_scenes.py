"""Free-field KEMAR speech scenes for the IPD/ILD TF-CNN (Pang, Liu & Li, IEEE Access 2019).

A :class:`SceneSpec` describes a training and a test set: 1 s excerpts of the shipped speech
corpus (:meth:`~xai_loc.acoustics.speech.SpeechCorpus.shipped`) through the KEMAR HRIRs
(:func:`~xai_loc.acoustics.hrtf.load_hrtf` at 16 kHz, free field at 1.4 m,
:func:`~xai_loc.acoustics.binaural.anechoic_rirs`) at azimuths -90..90 in 5 degree steps and
elevation 0, plus an isotropic pink background
(:func:`~xai_loc.acoustics.binaural.diffuse_noise`) mixed at an SNR
(:func:`~xai_loc.acoustics.binaural.render_scene`): uniform in ``train_snr`` for training,
each of ``test_snrs`` for testing. HRIRs between KEMAR's measured directions (the background's)
are interpolated as the spec's ``interp`` says: barycentric by default, as the shipped TF-CNN's data.

**Azimuth convention**: positive = right, as the TF-CNN's
(:func:`xai_loc.acoustics.directions.to_sofa_azimuth` gives the SOFA angle used for the HRIRs, where
90 = left). Ear 0 is the left ear.

**Held-out utterances.** The corpus's utterances are split once (seeded): a
``test_fraction`` of them is used only in the test set, the rest only in training; a store
records its utterance numbers so the disjointness can be checked.

Each split is one zarr store, written block by block (:data:`CHUNK_EXAMPLES` examples) by
:func:`~xai_loc.data.resumable.write_store`, resumable, sealed with a manifest and opened
verified (:data:`SCENES`)::

    <root>/ipd_ild/<name>/<split>.zarr
        waveforms     (example, ear, time) float32   ear signals (ear 0 = left)
        azimuth       (example) float64   degrees, positive = right
        sofa_azimuth  (example) float64   degrees, counter-clockwise, 90 = left
        elevation     (example) float64   0
        snr           (example) float64   dB of the diffuse background
        utterance     (example) int64     shipped-corpus utterance number
        start         (example) int64     first sample of the excerpt in the utterance
        level_db      (example) float64   scene RMS re REFERENCE_RMS
        attrs: config and spec (JSON), spec_digest, split, fs, convention, xai_loc_version

Every example is drawn from a generator seeded by ``(seed, split, example)``: the same spec
gives the same bytes, however often a run is interrupted. A finished store of the same spec
(:func:`~xai_loc.data.spec.spec_digest`) is reused; rendering takes about 40 ms per example
on one CPU thread (mostly the 32-direction diffuse background).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np

from xai_loc.checks import check_choice, check_integer, is_real
from xai_loc.data.resumable import StoreKind, write_store
from xai_loc.data.spec import SpecRecord, check_name, numbers
from xai_loc.errors import InputError

__all__ = ["CHUNK_EXAMPLES", "SCENES", "SceneSpec", "SPLITS", "open_scenes", "render_scene_split", "render_scenes",
           "render_split", "scene_path", "utterance_split"]

#: Splits of a scene set.
SPLITS = ("train", "test")
#: Examples per zarr chunk (and per resumable block): 4 MB of 1 s clips at 16 kHz.
CHUNK_EXAMPLES = 32
#: Version of the store's ``config``: 2 since its diffuse background follows the spec's ``interp`` (1 took bilinear).
STORE_VERSION = 2
#: What a TF-CNN scene store holds.
SCENES = StoreKind("scene store", "waveforms", ("example", "ear", "time"), "pressure (simulation units)",
                   "render_scenes (or 'xai-loc binaural tfcnn train')", format="xai-loc-ipd-ild-scenes",
                   version=STORE_VERSION)


def _default_azimuths() -> tuple[float, ...]:
    from xai_loc.acoustics.directions import LATERAL_GRID

    return tuple(float(a) for a in LATERAL_GRID.azimuths)


@dataclass(frozen=True)
class SceneSpec(SpecRecord):
    """What a TF-CNN scene set holds; recorded in each store.

    Parameters
    ----------
    name
        Folder name under ``<root>/ipd_ild/``.
    azimuths
        Source azimuths in degrees (positive = right), each in ``[-90, 90]``.
    n_train
        Training examples; azimuth uniform over ``azimuths``, SNR uniform in ``train_snr``.
    test_per_azimuth
        Test examples per azimuth and test SNR.
    train_snr
        ``(low, high)`` dB, within :data:`~xai_loc.acoustics.room.SNR_RANGE`.
    test_snrs
        Test SNRs in dB.
    test_fraction
        Share of the corpus's utterances held out for the test set.
    duration
        Seconds per example.
    fs
        Sample rate in Hz.
    level_db
        ``(low, high)``: scene level in dB re
        :data:`~xai_loc.acoustics.binaural.REFERENCE_RMS`, uniform (level is no cue); within
        +-:data:`~xai_loc.acoustics.binaural.MAX_LEVEL_DB`.
    seed
        Seeds the utterance split and every example.
    interp
        HRIR interpolation, a name in :data:`~xai_loc.acoustics.hrtf.INTERPOLATIONS`: ``'barycentric'``
        (default: the shipped TF-CNN's data; left out of the spec's record and digest) or ``'bilinear'``
        (:meth:`~xai_loc.acoustics.hrtf.HRTFSet.weights`), for the background's directions and any azimuth
        KEMAR did not measure.
    """

    LATER_FIELDS = {"interp": "barycentric"}

    name: str = "tfcnn-n8000-t10-s0"
    azimuths: tuple[float, ...] = _default_azimuths()
    n_train: int = 8000
    test_per_azimuth: int = 10
    train_snr: tuple[float, float] = (-10.0, 30.0)
    test_snrs: tuple[float, ...] = (-6.0, 0.0, 6.0)
    test_fraction: float = 0.2
    duration: float = 1.0
    fs: int = 16000
    level_db: tuple[float, float] = (-10.0, 10.0)
    seed: int = 0
    interp: str = "barycentric"

    def __post_init__(self) -> None:
        from xai_loc.acoustics.binaural import MAX_LEVEL_DB
        from xai_loc.acoustics.hrtf import INTERPOLATIONS
        from xai_loc.acoustics.room import SNR_RANGE
        from xai_loc.acoustics.speech import SpeechCorpus

        check_name(self.name, "scene set name")
        az = self._convert("azimuths", numbers, "give at least two degrees in [-90, 90]")
        if len(az) < 2 or not all(math.isfinite(a) and abs(a) <= 90 for a in az):
            raise InputError(f"azimuths={self.azimuths!r} are not allowed; give at least two degrees in [-90, 90]")
        for name in ("n_train", "test_per_azimuth", "fs", "seed"):
            object.__setattr__(self, name, check_integer(name, getattr(self, name), minimum=0 if name == "seed" else 1))
        for name, (least, most) in (("train_snr", SNR_RANGE), ("level_db", (-MAX_LEVEL_DB, MAX_LEVEL_DB))):
            lo, hi = self._convert(name, partial(numbers, length=2), "use (low, high) with low <= high")
            if not least <= lo <= hi <= most:  # NaN fails every comparison
                raise InputError(f"{name}={getattr(self, name)!r} is not allowed; use (low, high) dB with "
                                 f"{least:g} <= low <= high <= {most:g}")
        snrs = self._convert("test_snrs", numbers, "give finite dB values")
        if not snrs or not all(SNR_RANGE[0] <= v <= SNR_RANGE[1] for v in snrs):
            raise InputError(f"test_snrs={self.test_snrs!r} is not allowed; give dB values in "
                             f"[{SNR_RANGE[0]:g}, {SNR_RANGE[1]:g}]")
        if not (is_real(self.test_fraction) and 0 < self.test_fraction < 1):
            raise InputError(f"test_fraction={self.test_fraction!r} is not allowed; use a number in (0, 1)")
        n = len(SpeechCorpus.shipped())
        n_test = n_test_items(self.test_fraction, n)
        if not 0 < n_test < n:
            emptied, change = ("test", "larger") if n_test == 0 else ("training", "smaller")
            raise InputError(f"test_fraction={self.test_fraction!r} leaves the {emptied} split without utterances "
                             f"(the shipped corpus holds {n}); use a {change} share")
        if not (is_real(self.duration) and self.duration * self.fs >= 16):
            raise InputError(f"duration={self.duration!r} s is not allowed; give at least 16 samples' worth")
        check_choice("interp", self.interp, INTERPOLATIONS)

    @property
    def n_samples(self) -> int:
        """Samples per example."""
        return int(round(self.duration * self.fs))


def n_test_items(test_fraction: float, n_utterances: int) -> int:
    """Utterances held out for the test split (here and in :mod:`xai_loc.data.cue_scenes`): ``test_fraction``
    of them, rounded; a share that rounds to none (or to all) is refused by the specs."""
    return int(round(test_fraction * n_utterances))


def utterance_split(spec: SceneSpec, n_utterances: int) -> dict[str, np.ndarray]:
    """Utterance numbers of each split (disjoint, ascending), drawn once from the spec's seed."""
    order = np.random.default_rng([spec.seed, 101]).permutation(n_utterances)
    n_test = n_test_items(spec.test_fraction, n_utterances)
    return {"test": np.sort(order[:n_test]), "train": np.sort(order[n_test:])}


def scene_path(root: str | Path, spec: SceneSpec, split: str) -> Path:
    """``<root>/ipd_ild/<name>/<split>.zarr``."""
    return Path(root) / "ipd_ild" / spec.name / f"{split}.zarr"


class _Renderer:
    """HRIRs (cached per azimuth), speech excerpts and backgrounds of one spec."""

    def __init__(self, spec: SceneSpec) -> None:
        from xai_loc.acoustics.speech import SpeechCorpus

        self.spec = spec
        self.corpus = SpeechCorpus.shipped(fs=spec.fs, cache_size=0)
        self._hrirs: dict[float, np.ndarray] = {}

    @cached_property
    def hrtf(self):
        """KEMAR at the spec's rate (loaded when a scene is first rendered)."""
        from xai_loc.acoustics.hrtf import load_hrtf

        return load_hrtf("kemar", fs=self.spec.fs)

    def hrir(self, azimuth: float) -> np.ndarray:
        """Free-field binaural response ``(2, N)`` of a source at ``azimuth`` (positive = right), elevation 0."""
        from xai_loc.acoustics.binaural import anechoic_rirs
        from xai_loc.acoustics.directions import to_sofa_azimuth

        if azimuth not in self._hrirs:
            h = anechoic_rirs([float(to_sofa_azimuth(azimuth))], [0.0], hrtf=self.hrtf, fs=self.spec.fs,
                              interp=self.spec.interp)
            self._hrirs[azimuth] = h[0].double().numpy()
        return self._hrirs[azimuth]

    def excerpt(self, utterance: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """A peak-normalized excerpt of ``n_samples`` from a loud stretch of an utterance, and its start."""
        x = self.corpus.load(int(utterance)).astype(np.float64)
        n = self.spec.n_samples
        x = np.pad(x, (0, max(0, n - x.size)))
        starts = np.arange(0, x.size - n + 1, max(1, n // 8))
        power = np.array([np.mean(x[s:s + n] ** 2) for s in starts])
        start = int(rng.choice(starts[power >= 0.5 * power.max()]))
        y = x[start:start + n]
        peak = np.max(np.abs(y))
        return (y / peak if peak > 0 else y), start

    def render(self, utterance: int, azimuth: float, snr: float, rng: np.random.Generator) -> dict[str, Any]:
        """One scene: ear signals ``(2, n_samples)`` and its labels."""
        from xai_loc.acoustics.binaural import diffuse_noise, render_scene, scale_to_level, spatialize

        dry, start = self.excerpt(utterance, rng)
        target = spatialize(dry, self.hrir(azimuth))
        scene = render_scene(target, diffuse_noise(target.shape[1], self.hrtf, rng, interp=self.spec.interp), snr)
        level = float(rng.uniform(*self.spec.level_db))
        return {"waveform": scale_to_level(scene, level).astype(np.float32), "start": start, "level_db": level}


def _plan(spec: SceneSpec, split: str, utterances: np.ndarray) -> list[dict[str, Any]]:
    """Azimuth, SNR and utterance of every example of a split."""
    az = np.asarray(spec.azimuths)
    rows = []
    if split == "train":
        for i in range(spec.n_train):
            rng = np.random.default_rng([spec.seed, 0, i])
            rows.append({"azimuth": float(az[rng.integers(az.size)]), "snr": float(rng.uniform(*spec.train_snr)),
                         "utterance": int(utterances[rng.integers(utterances.size)])})
        return rows
    k = 0
    for snr in spec.test_snrs:
        for a in az:
            for _ in range(spec.test_per_azimuth):
                rows.append({"azimuth": float(a), "snr": float(snr), "utterance": int(utterances[k % utterances.size])})
                k += 1
    return rows


def _layout(spec: SceneSpec, split: str, renderer: _Renderer) -> tuple[list[dict[str, Any]], dict, dict]:
    """The plan of a split's examples, the store's coords (``start`` and ``level_db`` filled in by
    rendering) and its attrs."""
    from xai_loc import __version__
    from xai_loc.acoustics.directions import to_sofa_azimuth

    if split not in SPLITS:
        raise InputError(f"split {split!r} is unknown; allowed: {', '.join(SPLITS)}")
    rows = _plan(spec, split, utterance_split(spec, len(renderer.corpus))[split])
    n = len(rows)
    azimuth = np.array([r["azimuth"] for r in rows])
    deg = {"units": "degree"}
    coords = {"example": np.arange(n), "ear": np.array(["left", "right"]),
              "time": ("time", np.arange(spec.n_samples) / spec.fs, {"units": "s"}),
              "azimuth": ("example", azimuth, {**deg, "convention": "positive = right"}),
              "sofa_azimuth": ("example", to_sofa_azimuth(azimuth), {**deg, "convention": "SOFA, 90 = left"}),
              "elevation": ("example", np.zeros(n), deg),
              "snr": ("example", np.array([r["snr"] for r in rows]), {"units": "dB"}),
              "utterance": ("example", np.array([r["utterance"] for r in rows], dtype=np.int64)),
              "start": ("example", np.zeros(n, np.int64), {"units": "samples"}),
              "level_db": ("example", np.full(n, np.nan), {"units": "dB re REFERENCE_RMS"})}
    attrs = {"spec": json.dumps(spec.to_dict()), "spec_digest": spec.digest(), "split": split, "fs": spec.fs,
             "hrtf": "kemar", "convention": "azimuth positive = right; ear 0 = left", "xai_loc_version": __version__,
             "description": "free-field KEMAR speech scenes with diffuse noise, see xai_loc.data.ipd_ild_scenes"}
    return rows, coords, attrs


def _render_items(spec: SceneSpec, split: str, rows: list[dict[str, Any]], renderer: _Renderer,
                  items: range) -> dict[str, np.ndarray]:
    """Waveforms and the drawn ``start`` and ``level_db`` of examples ``items``."""
    waves = np.empty((len(items), 2, spec.n_samples), dtype=np.float32)
    starts, levels = np.empty(len(items), np.int64), np.empty(len(items))
    for j, i in enumerate(items):
        rng = np.random.default_rng([spec.seed, SPLITS.index(split) + 1, i])
        out = renderer.render(rows[i]["utterance"], rows[i]["azimuth"], rows[i]["snr"], rng)
        waves[j], starts[j], levels[j] = out["waveform"], out["start"], out["level_db"]
    return {"waveforms": waves, "start": starts, "level_db": levels}


def render_split(spec: SceneSpec, split: str):
    """Render one split in memory as an ``xarray.Dataset``: the numbers of its store (module docs)."""
    import xarray as xr

    renderer = _Renderer(spec)
    rows, coords, attrs = _layout(spec, split, renderer)
    values = _render_items(spec, split, rows, renderer, range(len(rows)))
    ds = xr.Dataset({"waveforms": (SCENES.dims, values.pop("waveforms"), {"units": SCENES.units})}, coords=coords,
                    attrs=attrs)
    return ds.assign_coords({name: ds[name].copy(data=v) for name, v in values.items()})


def render_scenes(spec: SceneSpec, root: str | Path | None = None, progress: bool = True,
                  splits: tuple[str, ...] = SPLITS) -> dict[str, Path]:
    """Render (or finish, or reuse) the splits' stores (default: both); returns ``{split: path}``.

    A finished store of another spec under the same name is an error.
    """
    from xai_loc.data.store import default_root

    bad = [sp for sp in splits if sp not in SPLITS]
    if bad or not splits:
        raise InputError(f"split {bad[0] if bad else None!r} is not allowed; use some of {', '.join(SPLITS)}")
    paths = {}
    for split in splits:
        renderer = _Renderer(spec)
        rows, coords, attrs = _layout(spec, split, renderer)
        config = {"spec": spec.to_dict(), "split": split}
        paths[split] = write_store(
            scene_path(root or default_root(), spec, split), SCENES, config,
            shape=(len(rows), 2, spec.n_samples), coords=coords, attrs=attrs,
            render=partial(_render_items, spec, split, rows, renderer), chunk=CHUNK_EXAMPLES,
            mismatch="holds scenes of another spec; remove it or use another name",
            hint="check the spec's SNRs and levels", progress=progress, desc=f"render {split}")
    return paths


def render_scene_split(spec: SceneSpec, split: str, *, root: str | Path | None = None, progress: bool = False) -> Path:
    """One split's store (:func:`render_scenes` of that split alone): the renderer of the ``tfcnn`` family
    (:attr:`~xai_loc.models.families.Family.renderer`)."""
    return render_scenes(spec, root, progress=progress, splits=(split,))[split]


def open_scenes(path: str | Path):
    """Open a finished scene store as a lazy ``xarray.Dataset`` (:meth:`SCENES.open <StoreKind.open>`).

    Raises
    ------
    InputError
        One line for a missing, unfinished, damaged or foreign store.
    """
    return SCENES.open(path)
