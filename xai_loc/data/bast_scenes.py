"""Binaural scenes for BAST: every sound at every azimuth of the horizontal plane, through KEMAR.

As in the seed's data (Kuang et al. 2022), each sound is spatialized to all azimuths of a set
(default 0-350 degrees in steps of 10, elevation 0; SOFA convention, 90 = left), 0.5 s at
16 kHz (8000 samples, 61 spectrogram frames), in free field (KEMAR HRIRs at 1.4 m). Sounds are
the synthetic kinds of :data:`xai_loc.acoustics.binaural.SOUNDS` and loud 0.5 s excerpts of the
shipped speech corpus, numbered and split by sound exactly as a
:class:`~xai_loc.data.binaural_store.BinauralSpec` with the same kinds, count, test share and
seed: no sound (noise token, utterance) is in both splits. A diffuse background (one token per
sound, circularly shifted per azimuth) is mixed at an SNR drawn per example, and every scene is
scaled to a random level. HRIRs between KEMAR's measured directions (the background's) are
interpolated as the spec's ``interp`` says: barycentric by default, as the shipped BAST's data.

One zarr store per split, ``<root>/bast/<name>/<split>.zarr`` with ``waveforms (example,
ear, time)`` float32 and per-example ``azimuth``, ``sound_key``, ``sound_kind``, ``sound_id``,
``snr``, ``level_db``; the spec as JSON in the attrs. It is written one sound (all its
azimuths) per block by :func:`~xai_loc.data.resumable.write_store`: an interrupted run
resumes, and a finished store is sealed with a manifest and opened verified
(:data:`BAST_SCENES`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from pathlib import Path

import numpy as np

from xai_loc.data.resumable import StoreKind, write_store
from xai_loc.data.spec import SpecRecord, numbers
from xai_loc.errors import InputError

__all__ = ["BAST_SCENES", "BastSceneSpec", "FS", "N_SAMPLES", "load_bast_scenes", "render_bast_scenes", "scene_path"]

#: Rate and clip length of the seed: 16 kHz, 0.5 s.
FS, N_SAMPLES = 16000, 8000
SPLITS = ("train", "test")
#: Version of the store's ``config``: 2 since its diffuse background follows the spec's ``interp`` (1 took bilinear).
STORE_VERSION = 2
#: What a BAST scene store holds.
BAST_SCENES = StoreKind("BAST scene store", "waveforms", ("example", "ear", "time"), "pressure (simulation units)",
                        "render_bast_scenes (or 'xai-loc binaural bast train')", format="xai-loc-bast-scenes",
                        version=STORE_VERSION)


def _default_kinds() -> tuple[str, ...]:
    from xai_loc.acoustics.binaural import SOUNDS
    from xai_loc.data.binaural_store import SPEECH

    return (*SOUNDS, SPEECH)


@dataclass(frozen=True)
class BastSceneSpec(SpecRecord):
    """What a BAST scene set holds; recorded in its files.

    Parameters
    ----------
    name
        Folder name under ``<root>/bast/``.
    azimuths
        Azimuths in degrees (default: the seed's 0, 10, ..., 350).
    kinds
        Sound kinds: synthetic kinds and ``'speech'``; sound ``i`` is of kind ``kinds[i % len(kinds)]``.
    n_sounds
        Distinct sounds before the split, at most :data:`~xai_loc.data.binaural_store.MAX_SOUNDS`; each is rendered
        at every azimuth.
    test_fraction
        Share of the sounds held out for the test split.
    snr
        ``(low, high)`` dB of the diffuse background, uniform per example; None: no background.
    level_db
        ``(low, high)`` scene level in dB re :data:`xai_loc.acoustics.binaural.REFERENCE_RMS`.
    seed
        Seeds the split, the sounds and every draw.
    interp
        HRIR interpolation, a name in :data:`~xai_loc.acoustics.hrtf.INTERPOLATIONS`: ``'barycentric'``
        (default: the shipped BAST's data; left out of the spec's record and digest) or ``'bilinear'``
        (:meth:`~xai_loc.acoustics.hrtf.HRTFSet.weights`), for the background's directions and any azimuth
        KEMAR did not measure.
    """

    LATER_FIELDS = {"interp": "barycentric"}

    name: str = "default"
    azimuths: tuple[float, ...] = tuple(float(a) for a in range(0, 360, 10))
    kinds: tuple[str, ...] = field(default_factory=_default_kinds)
    n_sounds: int = 120
    test_fraction: float = 0.2
    snr: tuple[float, float] | None = (20.0, 40.0)
    level_db: tuple[float, float] = (-10.0, 10.0)
    seed: int = 0
    interp: str = "barycentric"

    def __post_init__(self) -> None:
        self._convert("azimuths", numbers, "give distinct degrees in [0, 360)")
        if not self.azimuths or not all(0.0 <= a < 360.0 for a in self.azimuths) \
                or len(set(self.azimuths)) != len(self.azimuths):
            raise InputError(f"azimuths={list(self.azimuths)} are not allowed; give distinct degrees in [0, 360)")
        if self.snr is not None:
            low, high = self._convert("snr", partial(numbers, length=2), "use (low, high) dB with low <= high, or None")
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise InputError(f"snr={self.snr!r} is not allowed; use (low, high) dB with low <= high, or None")
        self._convert("level_db", partial(numbers, length=2), "use (low, high) dB with low <= high")
        self.binaural_spec()  # validates name, kinds, n_sounds, test_fraction, level_db, seed and interp

    def named(self) -> BastSceneSpec:
        """This spec under the name of its stores in the CLI and ``scripts/train_bast.py``: ``bast-<n_sounds>``,
        with ``-s<seed>`` for a seed other than 0 (so each finds the other's stores)."""
        return replace(self, name=f"bast-{self.n_sounds}" + (f"-s{self.seed}" if self.seed else ""))

    def binaural_spec(self):
        """The :class:`~xai_loc.data.binaural_store.BinauralSpec` that numbers and splits the sounds."""
        from xai_loc.data.binaural_store import BinauralSpec

        return BinauralSpec(name=self.name, rooms=("anechoic",), kinds=self.kinds, n_sounds=self.n_sounds,
                            per_sound=1, test_fraction=self.test_fraction, duration=N_SAMPLES / FS, fs=FS,
                            snr=self.snr, level_db=self.level_db, interp=self.interp, seed=self.seed)

    def sound_ids(self, split: str) -> np.ndarray:
        """The sounds of ``split``, refused (one line) where it holds none (too few sounds for its share)."""
        return self.binaural_spec().sound_ids(split)


def scene_path(root: str | Path, spec: BastSceneSpec, split: str) -> Path:
    """``<root>/bast/<name>/<split>.zarr``."""
    return Path(root) / "bast" / spec.name / f"{split}.zarr"


def _dry_sound(kind: str, seed: int, corpus) -> np.ndarray:
    """The dry sound ``(N_SAMPLES,)``: a synthetic kind, or the loudest 0.5 s of an utterance; peak 1."""
    from xai_loc.acoustics.binaural import synthesize
    from xai_loc.data.binaural_store import SPEECH

    if kind != SPEECH:
        return synthesize(kind, FS, N_SAMPLES / FS, seed=seed).astype(np.float64)
    x = corpus.load(int(seed)).astype(np.float64)
    if x.size < N_SAMPLES:
        x = np.pad(x, (0, N_SAMPLES - x.size))
    energy = np.convolve(x ** 2, np.ones(N_SAMPLES), mode="valid")
    start = int(np.argmax(energy))
    y = x[start:start + N_SAMPLES]
    return y / max(float(np.max(np.abs(y))), 1e-12)


class _Renderer:
    """KEMAR responses of the spec's azimuths and the speech corpus (loaded when first needed)."""

    def __init__(self, spec: BastSceneSpec, split: str) -> None:
        bspec = spec.binaural_spec()
        self.spec, self.sounds, self.ids = spec, bspec.sounds(), spec.sound_ids(split)

    @cached_property
    def hrtf(self):
        from xai_loc.acoustics.hrtf import load_hrtf

        return load_hrtf("kemar", fs=FS)

    @cached_property
    def brirs(self) -> np.ndarray:
        from xai_loc.acoustics.binaural import anechoic_rirs

        az = np.asarray(self.spec.azimuths)
        return anechoic_rirs(az, np.zeros_like(az), hrtf=self.hrtf, fs=FS, interp=self.spec.interp).double().numpy()

    @cached_property
    def corpus(self):
        from xai_loc.acoustics.speech import SpeechCorpus

        return SpeechCorpus.shipped(fs=FS, cache_size=0)

    def coords(self) -> dict[str, tuple]:
        """Per-example coords: every sound of the split at every azimuth (``snr``, ``level_db`` filled in later)."""
        n_az = len(self.spec.azimuths)
        kind = np.array([self.sounds[int(s)][0] for s in self.ids], dtype=str)
        key = np.array([f"{k}:{s}" for k, s in (self.sounds[int(i)] for i in self.ids)], dtype=str)
        n = self.ids.size * n_az
        return {
            "example": np.arange(n), "ear": ["left", "right"],
            "time": ("time", np.arange(N_SAMPLES) / FS, {"units": "s"}),
            "azimuth": ("example", np.tile(np.asarray(self.spec.azimuths), self.ids.size),
                        {"units": "degree", "convention": "SOFA, 90 = left"}),
            "sound_key": ("example", np.repeat(key, n_az)),
            "sound_kind": ("example", np.repeat(kind, n_az)),
            "sound_id": ("example", np.repeat(self.ids.astype(np.int64), n_az)),
            "snr": ("example", np.full(n, np.nan), {"units": "dB", "note": "NaN: no background"}),
            "level_db": ("example", np.full(n, np.nan), {"units": "dB re REFERENCE_RMS"}),
        }

    def render(self, items: range) -> dict[str, np.ndarray]:
        """Waveforms, SNRs and levels of examples ``items`` (whole sounds: all azimuths of each)."""
        from xai_loc.acoustics.binaural import diffuse_noise, render_scene, scale_to_level, spatialize

        spec, n_az = self.spec, len(self.spec.azimuths)
        waves = np.zeros((len(items), 2, N_SAMPLES), dtype=np.float32)
        snrs, levels = np.full(len(items), np.nan), np.zeros(len(items))
        i = 0
        for sid in self.ids[items.start // n_az:items.stop // n_az]:
            kind, seed = self.sounds[int(sid)]
            dry = _dry_sound(kind, seed, self.corpus)
            rng = np.random.default_rng([spec.seed, int(sid), 53])
            noise = diffuse_noise(N_SAMPLES, self.hrtf, rng, interp=spec.interp) if spec.snr is not None else None
            for brir in self.brirs:
                scene = spatialize(dry, brir)
                if noise is not None:
                    snrs[i] = float(rng.uniform(*spec.snr))
                    scene = render_scene(scene, np.roll(noise, int(rng.integers(N_SAMPLES)), axis=-1), snrs[i])
                levels[i] = float(rng.uniform(*spec.level_db))
                waves[i] = scale_to_level(scene, levels[i])
                i += 1
        return {"waveforms": waves, "snr": snrs, "level_db": levels}


def render_bast_scenes(spec: BastSceneSpec, split: str, *, root: str | Path | None = None,
                       progress: bool = False) -> Path:
    """Render (or finish, or reuse) one split's store and return its path.

    The same spec gives the same bytes, however often a run is interrupted; a finished store
    of another spec under the same name is an error.
    """
    from xai_loc import __version__
    from xai_loc.data.store import default_root

    if split not in SPLITS:
        raise InputError(f"split {split!r} is unknown; allowed: {', '.join(SPLITS)}")
    renderer = _Renderer(spec, split)
    n_az = len(spec.azimuths)
    config = {"spec": spec.to_dict(), "split": split}
    attrs = {"spec": json.dumps(spec.to_dict(), sort_keys=True), "digest": spec.digest(), "split": split, "fs": FS,
             "hrtf": "kemar", "xai_loc_version": __version__}
    return write_store(scene_path(root or default_root(), spec, split), BAST_SCENES, config,
                       shape=(renderer.ids.size * n_az, 2, N_SAMPLES), coords=renderer.coords(), attrs=attrs,
                       render=renderer.render, chunk=n_az,
                       mismatch="holds scenes of another spec; remove it or use another name",
                       hint="check the spec's sounds, SNRs and levels", progress=progress, desc=f"render {split}")


def load_bast_scenes(spec: BastSceneSpec, split: str, *, root: str | Path | None = None, progress: bool = False):
    """The split as an in-memory ``xarray.Dataset`` (rendered first if missing), opened by :data:`BAST_SCENES`."""
    return BAST_SCENES.open(render_bast_scenes(spec, split, root=root, progress=progress)).load()
