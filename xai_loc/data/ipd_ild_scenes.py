"""Free-field KEMAR speech scenes for the IPD/ILD TF-CNN (Pang, Liu & Li, IEEE Access 2019).

A :class:`SceneSpec` describes a training and a test set: 1 s excerpts of the shipped speech
corpus (:meth:`~xai_loc.acoustics.speech.SpeechCorpus.shipped`) through the KEMAR HRIRs
(:func:`~xai_loc.acoustics.hrtf.load_hrtf` at 16 kHz, free field at 1.4 m,
:func:`~xai_loc.acoustics.binaural.anechoic_rirs`) at azimuths -90..90 in 5 degree steps and
elevation 0, plus an isotropic pink background
(:func:`~xai_loc.acoustics.binaural.diffuse_noise`) mixed at an SNR
(:func:`~xai_loc.acoustics.binaural.render_scene`): uniform in ``train_snr`` for training,
each of ``test_snrs`` for testing.

**Azimuth convention**: positive = right, as the TF-CNN's
(:func:`xai_loc.acoustics.directions.to_sofa_azimuth` gives the SOFA angle used for the HRIRs, where
90 = left). Ear 0 is the left ear.

**Held-out utterances.** The corpus's utterances are split once (seeded): a
``test_fraction`` of them is used only in the test set, the rest only in training; a store
records its utterance numbers so the disjointness can be checked.

Each split is one netCDF file, written atomically (:func:`xai_loc.io.write_dataset_atomic`)::

    <root>/ipd_ild/<name>/<split>.nc
        waveforms     (example, ear, time) float32   ear signals (ear 0 = left)
        azimuth       (example) float64   degrees, positive = right
        sofa_azimuth  (example) float64   degrees, counter-clockwise, 90 = left
        elevation     (example) float64   0
        snr           (example) float64   dB of the diffuse background
        utterance     (example) int64     shipped-corpus utterance number
        start         (example) int64     first sample of the excerpt in the utterance
        level_db      (example) float64   scene RMS re REFERENCE_RMS
        attrs: spec (JSON), spec_digest, split, fs, convention, xai_loc_version

Every example is drawn from a generator seeded by ``(seed, split, example)``: the same spec
gives the same bytes. A complete file of the same spec is reused; rendering takes about
40 ms per example on one CPU thread (mostly the 32-direction diffuse background), and a split
is held in memory before it is written (128 kB per example).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from xai_loc.data.integrity import open_netcdf_store, write_netcdf_store
from xai_loc.data.spec import SpecRecord
from xai_loc.errors import InputError

__all__ = ["SceneSpec", "SPLITS", "render_split", "render_scenes", "scene_path", "open_scenes", "utterance_split"]

#: Splits of a scene set.
SPLITS = ("train", "test")


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
        ``(low, high)`` dB.
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
        :data:`~xai_loc.data.binaural_store.REFERENCE_RMS`, uniform (level is no cue).
    seed
        Seeds the utterance split and every example.
    """

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

    def __post_init__(self) -> None:
        az = np.asarray(self.azimuths, dtype=np.float64)
        if az.ndim != 1 or az.size < 2 or not np.all(np.isfinite(az)) or np.abs(az).max() > 90:
            raise InputError(f"azimuths={self.azimuths!r} are not allowed; give at least two degrees in [-90, 90]")
        for name in ("n_train", "test_per_azimuth", "fs", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "seed" else 1):
                raise InputError(f"{name}={v!r} is not allowed; use a positive integer")
        for name in ("train_snr", "level_db"):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise InputError(f"{name}={getattr(self, name)!r} is not allowed; use (low, high) with low <= high")
        if not self.test_snrs or not all(math.isfinite(s) for s in self.test_snrs):
            raise InputError(f"test_snrs={self.test_snrs!r} is not allowed; give finite dB values")
        if not 0 < self.test_fraction < 1:
            raise InputError(f"test_fraction={self.test_fraction!r} is not allowed; use a number in (0, 1)")
        if not (math.isfinite(self.duration) and self.duration * self.fs >= 16):
            raise InputError(f"duration={self.duration!r} s is not allowed; give at least 16 samples' worth")
        for name in ("azimuths", "train_snr", "test_snrs", "level_db"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))

    @property
    def n_samples(self) -> int:
        """Samples per example."""
        return int(round(self.duration * self.fs))



def utterance_split(spec: SceneSpec, n_utterances: int) -> dict[str, np.ndarray]:
    """Utterance numbers of each split (disjoint, ascending), drawn once from the spec's seed."""
    order = np.random.default_rng([spec.seed, 101]).permutation(n_utterances)
    n_test = max(1, int(round(spec.test_fraction * n_utterances)))
    return {"test": np.sort(order[:n_test]), "train": np.sort(order[n_test:])}


def scene_path(root: str | Path, spec: SceneSpec, split: str) -> Path:
    """``<root>/ipd_ild/<name>/<split>.nc``."""
    return Path(root) / "ipd_ild" / spec.name / f"{split}.nc"


class _Renderer:
    """HRIRs (cached per azimuth), speech excerpts and backgrounds of one spec."""

    def __init__(self, spec: SceneSpec) -> None:
        from xai_loc.acoustics.hrtf import load_hrtf
        from xai_loc.acoustics.speech import SpeechCorpus

        self.spec = spec
        self.hrtf = load_hrtf("kemar", fs=spec.fs)
        self.corpus = SpeechCorpus.shipped(fs=spec.fs, cache_size=0)
        self._hrirs: dict[float, np.ndarray] = {}

    def hrir(self, azimuth: float) -> np.ndarray:
        """Free-field binaural response ``(2, N)`` of a source at ``azimuth`` (positive = right), elevation 0."""
        from xai_loc.acoustics.binaural import anechoic_rirs
        from xai_loc.acoustics.directions import to_sofa_azimuth

        if azimuth not in self._hrirs:
            h = anechoic_rirs([float(to_sofa_azimuth(azimuth))], [0.0], hrtf=self.hrtf, fs=self.spec.fs)
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
        from xai_loc.acoustics.binaural import diffuse_noise, render_scene, spatialize
        from xai_loc.data.binaural_store import REFERENCE_RMS

        dry, start = self.excerpt(utterance, rng)
        target = spatialize(dry, self.hrir(azimuth))
        scene = render_scene(target, diffuse_noise(target.shape[1], self.hrtf, rng), snr)
        level = float(rng.uniform(*self.spec.level_db))
        scene = scene * (REFERENCE_RMS * 10.0 ** (level / 20.0) / np.sqrt(np.mean(scene ** 2)))
        return {"waveform": scene.astype(np.float32), "start": start, "level_db": level}


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


def render_split(spec: SceneSpec, split: str, progress: bool = False):
    """Render one split in memory as an ``xarray.Dataset`` (the layout of the module docs)."""
    import xarray as xr

    from xai_loc import __version__
    from xai_loc.acoustics.directions import to_sofa_azimuth
    from xai_loc.progress import tqdm

    if split not in SPLITS:
        raise InputError(f"split {split!r} is unknown; allowed: {', '.join(SPLITS)}")
    renderer = _Renderer(spec)
    utterances = utterance_split(spec, len(renderer.corpus))[split]
    rows = _plan(spec, split, utterances)
    waves = np.empty((len(rows), 2, spec.n_samples), dtype=np.float32)
    starts, levels = np.empty(len(rows), np.int64), np.empty(len(rows))
    for i, row in enumerate(tqdm(rows, disable=not progress, desc=f"render {split}", unit="ex")):
        rng = np.random.default_rng([spec.seed, SPLITS.index(split) + 1, i])
        out = renderer.render(row["utterance"], row["azimuth"], row["snr"], rng)
        waves[i], starts[i], levels[i] = out["waveform"], out["start"], out["level_db"]
    azimuth = np.array([r["azimuth"] for r in rows])
    deg = {"units": "degree"}
    return xr.Dataset(
        {"waveforms": (("example", "ear", "time"), waves, {"units": "pressure (simulation units)"})},
        coords={"example": np.arange(len(rows)), "ear": np.array(["left", "right"]),
                "time": ("time", np.arange(spec.n_samples) / spec.fs, {"units": "s"}),
                "azimuth": ("example", azimuth, {**deg, "convention": "positive = right"}),
                "sofa_azimuth": ("example", to_sofa_azimuth(azimuth), {**deg, "convention": "SOFA, 90 = left"}),
                "elevation": ("example", np.zeros(len(rows)), deg),
                "snr": ("example", np.array([r["snr"] for r in rows]), {"units": "dB"}),
                "utterance": ("example", np.array([r["utterance"] for r in rows], dtype=np.int64)),
                "start": ("example", starts, {"units": "samples"}),
                "level_db": ("example", levels, {"units": "dB re REFERENCE_RMS"})},
        attrs={"spec": json.dumps(spec.to_dict()), "spec_digest": spec.digest(), "split": split, "fs": spec.fs,
               "hrtf": "kemar", "convention": "azimuth positive = right; ear 0 = left",
               "xai_loc_version": __version__,
               "description": "free-field KEMAR speech scenes with diffuse noise, see xai_loc.data.ipd_ild_scenes"})


def render_scenes(spec: SceneSpec, root: str | Path | None = None, progress: bool = True,
                  splits: tuple[str, ...] = SPLITS) -> dict[str, Path]:
    """Render (or reuse) the splits on disk (default: both); returns ``{split: path}``.

    A complete file of another spec under the same name is an error.
    """
    from xai_loc.data.store import default_root

    bad = [sp for sp in splits if sp not in SPLITS]
    if bad or not splits:
        raise InputError(f"split {bad[0] if bad else None!r} is not allowed; use some of {', '.join(SPLITS)}")
    return {split: write_netcdf_store(scene_path(root or default_root(), spec, split), spec,
                                      partial(render_split, spec, split, progress), what="scene file",
                                      hint="check the spec's SNRs and levels")
            for split in splits}


def open_scenes(path: str | Path):
    """Open a scene file as an ``xarray.Dataset`` (lazy); a damaged one is one line (InputError)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"scene file {str(path)!r} does not exist; create it with render_scenes")
    ds = open_netcdf_store(path, what="scene file", load=False)
    if "waveforms" not in ds or ds["waveforms"].dims != ("example", "ear", "time") or "azimuth" not in ds:
        raise InputError(f"{path} has no waveforms (example, ear, time) and azimuths; is it a TF-CNN scene file?")
    return ds
