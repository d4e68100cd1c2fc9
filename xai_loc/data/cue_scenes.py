"""Binaural speech-in-noise scenes for the ITD/ILD/IC cue network (seed 002), cached as cue maps.

A scene: a 0.5 s excerpt of one shipped espeak-ng utterance
(:meth:`~xai_loc.acoustics.speech.SpeechCorpus.shipped`, resampled to 44.1 kHz) at one of
the 72 azimuths (5 degree steps, elevation 0, SOFA convention: 90 = left), plus two noise
sources (synthetic kinds of :data:`~xai_loc.acoustics.binaural.SOUNDS`) at two other grid
azimuths drawn at random, each at its own SNR uniform in 15-40 dB relative to the speech
(powers averaged over both ears). Free field: the MIT KEMAR HRIRs at their native 44.1 kHz
(:func:`~xai_loc.acoustics.binaural.anechoic_rirs`, source at 1.4 m). The mixture is scaled
to an RMS of 0.05.

The split is by utterance: a seeded permutation sends ``test_fraction`` of the corpus's
utterances to ``test`` and the rest to ``train``, so no utterance (sentence) is in both
(:meth:`CueSceneSpec.utterances`). The seed's published numbers came from a split that
shared source sentences between training and evaluation; this one does not. Each utterance
is rendered ``per_utterance[split]`` times (new excerpt, direction, noises and SNRs each
time); directions come from whole copies of the 72 azimuths, so every azimuth occurs equally
often in a split whose size is a multiple of 72; otherwise the counts vary (in a split of 240: 1 to 4).

Because the front end (:class:`~xai_loc.features.binaural_cues.BinauralCues`) has no
trainable parameters, the stores hold the cue maps, not the waveforms
(:func:`write_cue_scenes`): ``<root>/cue_scenes/<name>-<digest>/<split>.zarr``, a zarr
store with ``cues (example, cue, band, frame)`` float32 and per-example labels and drawn
noises. It is written in blocks of :data:`BLOCK_EXAMPLES` examples by
:func:`~xai_loc.data.resumable.write_store`, so an interrupted run resumes with the blocks
not yet written, and gets its final name, sealed with a manifest, only when complete; it is
opened verified (:data:`CUE_SCENES`). Any example's waveform is re-rendered exactly by
:func:`render_scene_example` (same spec, split and index, same samples).

**Who computes the cue maps.** The data stage sits below the features stage, so this module
does not build the front end: :func:`write_cue_scenes` takes it from its caller and stores
what it computes; :func:`xai_loc.features.binaural_cues.simulate_cue_scenes` passes the
spec's ``BinauralCues``. The store (layout, labels) stays here with the
other stores, and what a cue map is stays with the front ends; keeping waveforms instead
would store 9 times more (a 0.5 s clip is 176 kB, its cue map 19 kB).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np

from xai_loc.acoustics.binaural import check_sound_fs
from xai_loc.acoustics.room import SNR_RANGE
from xai_loc.checks import check_flag, check_fs, check_integer, is_integer, is_real
from xai_loc.data.ipd_ild_scenes import n_test_items
from xai_loc.data.resumable import StoreKind, write_store
from xai_loc.data.spec import SpecRecord, check_name, numbers, words
from xai_loc.errors import InputError

__all__ = ["BLOCK_EXAMPLES", "CHUNK_EXAMPLES", "CUE_SCENES", "CUE_SPLITS", "CueSceneSpec", "cue_store_path",
           "open_cue_scenes", "render_scene_example", "write_cue_scenes"]

#: Splits of a cue-scene dataset.
CUE_SPLITS = ("train", "test")
#: Examples per zarr chunk (600 kB of default cue maps).
CHUNK_EXAMPLES = 32
#: Examples per resumable block (rendered, then their cue maps computed in batches).
BLOCK_EXAMPLES = 256
#: Version of the store's ``config`` (raised, and older stores refused, when its data change for the same config).
STORE_VERSION = 1
#: What a cue-scene store holds.
CUE_SCENES = StoreKind("cue-scene store", "cues", ("example", "cue", "band", "frame"), "per cue: see cue_unit",
                       "xai_loc.features.binaural_cues.simulate_cue_scenes (or 'xai-loc binaural cuenet train')",
                       values="cue values", format="xai-loc-cue-scenes", version=STORE_VERSION)
#: RMS of every rendered mixture.
SCENE_RMS = 0.05
#: Default noise kinds (registered synthetic sounds; continuous textures, bursts and harmonic complexes).
NOISE_KINDS = ("am_noise", "pink_burst", "white_burst", "tone_complex")


#: Most renderings per utterance in a split: 240 training utterances x 1000 = 240,000 cue maps of 19.2 kB (the
#: default front end's 3 cues x 32 bands x 50 frames in float32), 4.6 GB on disk; the label plan is built in memory
#: before rendering, so an unbounded count grows memory without limit instead of failing.
MAX_PER_UTTERANCE = 1000


@dataclass(frozen=True)
class CueSceneSpec(SpecRecord):
    """What a cue-scene dataset holds; recorded in its stores.

    Parameters
    ----------
    name
        Folder name prefix under ``<root>/cue_scenes/``.
    per_utterance
        Renderings per utterance in each split (at most :data:`MAX_PER_UTTERANCE`), ``{'train': 18, 'test': 12}``:
        with 300
        utterances and 20 % held out, 4320 training and 720 test scenes (60 and 10 per azimuth).
    test_fraction
        Share of the utterances held out for testing.
    duration
        Clip length in seconds (0.5).
    fs
        Sample rate (44100, KEMAR's native rate), at least each noise kind's
        :data:`~xai_loc.acoustics.binaural.SOUND_MIN_FS`.
    snr
        ``(low, high)`` dB: each noise source's SNR re the speech, uniform.
    n_noise
        Noise sources per scene (2), at distinct grid azimuths other than the target's.
    noise_kinds
        Registered synthetic sound kinds the noises are drawn from.
    front_end
        Options of :class:`~xai_loc.features.binaural_cues.BinauralCues` (its defaults if empty).
    seed
        Seeds the split and every rendering.
    """

    DIGEST_CHARS = 10  # the digest suffixes the store folder's name

    name: str = "default"
    per_utterance: dict[str, int] = field(default_factory=lambda: {"train": 18, "test": 12})
    test_fraction: float = 0.2
    duration: float = 0.5
    fs: int = 44100
    snr: tuple[float, float] = (15.0, 40.0)
    n_noise: int = 2
    noise_kinds: tuple[str, ...] = NOISE_KINDS
    front_end: dict[str, Any] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        from xai_loc.acoustics.binaural import SOUNDS
        from xai_loc.acoustics.speech import SpeechCorpus

        check_name(self.name, "scene set name")
        if not isinstance(self.per_utterance, Mapping) or set(self.per_utterance) != set(CUE_SPLITS) or not all(
                is_integer(v) and 1 <= v <= MAX_PER_UTTERANCE for v in self.per_utterance.values()):
            raise InputError(f"per_utterance={self.per_utterance!r} is not allowed; give {{'train': n, 'test': n}} "
                             f"with integers in [1, {MAX_PER_UTTERANCE}]")
        object.__setattr__(self, "per_utterance", {k: int(v) for k, v in self.per_utterance.items()})
        if not (is_real(self.test_fraction) and 0 < self.test_fraction < 1):
            raise InputError(f"test_fraction={self.test_fraction!r} is not allowed; use a number in (0, 1)")
        n = len(SpeechCorpus.shipped())
        if not 0 < n_test_items(self.test_fraction, n) < n:
            raise InputError(f"test_fraction={self.test_fraction!r} leaves a split without utterances; use a share "
                             f"that gives each split at least one of the shipped corpus's {n}")
        if not (is_real(self.duration) and 0.02 <= self.duration <= 10):
            raise InputError(f"duration={self.duration!r} s is not allowed; use 0.02-10 s")
        fs = check_fs(self.fs)
        low, high = self._convert("snr", partial(numbers, length=2), "give (low, high) dB with low <= high")
        if not SNR_RANGE[0] <= low <= high <= SNR_RANGE[1]:
            raise InputError(f"snr={self.snr!r} is not allowed; give (low, high) dB with low <= high, both in "
                             f"[{SNR_RANGE[0]:g}, {SNR_RANGE[1]:g}]")
        object.__setattr__(self, "n_noise", check_integer("n_noise", self.n_noise, maximum=10))
        kinds = self._convert("noise_kinds", words, f"use some of {', '.join(SOUNDS)}")
        unknown = [k for k in kinds if k not in SOUNDS]
        if unknown or not kinds:
            raise InputError(f"noise kinds {unknown or list(kinds)} are not allowed; use some of {', '.join(SOUNDS)}")
        check_sound_fs(kinds, fs)
        if not isinstance(self.front_end, Mapping) or not all(isinstance(k, str) for k in self.front_end):
            raise InputError(f"front_end={self.front_end!r} is not allowed; give the front end's options by name")
        object.__setattr__(self, "seed", check_integer("seed", self.seed))

    @property
    def n_samples(self) -> int:
        """Samples per ear of one clip."""
        return int(round(self.duration * self.fs))

    def utterances(self, split: str) -> tuple[str, ...]:
        """Utterance ids of ``split`` (corpus order); train and test are disjoint and cover the corpus."""
        from xai_loc.acoustics.speech import SpeechCorpus

        _check_split(split)
        ids = SpeechCorpus.shipped().ids
        order = np.random.default_rng([self.seed, 17]).permutation(len(ids))
        test = set(order[:n_test_items(self.test_fraction, len(ids))].tolist())
        return tuple(uid for i, uid in enumerate(ids) if (i in test) == (split == "test"))

    def plan(self, split: str) -> dict[str, np.ndarray]:
        """Per example of ``split``: ``utterance`` id and target ``azimuth``, drawn without replacement from
        ``ceil(n / 72)`` copies of the 72 azimuths (each equally often only where ``n`` is a multiple of 72)."""
        from xai_loc.acoustics.binaural import AZIMUTHS

        utts = np.array(self.utterances(split))
        n = utts.size * self.per_utterance[split]
        rng = np.random.default_rng([self.seed, CUE_SPLITS.index(split), 29])
        azimuth = rng.permutation(np.tile(AZIMUTHS, -(-n // AZIMUTHS.size)))[:n]
        return {"utterance": np.repeat(utts, self.per_utterance[split]), "azimuth": azimuth}


def _check_split(split: str) -> None:
    if split not in CUE_SPLITS:
        raise InputError(f"split {split!r} is unknown; allowed: {', '.join(CUE_SPLITS)}")


class _SceneRenderer:
    """KEMAR responses of the 72 azimuths and the speech corpus, loaded once."""

    def __init__(self, spec: CueSceneSpec) -> None:
        from xai_loc.acoustics.binaural import AZIMUTHS, anechoic_rirs
        from xai_loc.acoustics.hrtf import load_hrtf
        from xai_loc.acoustics.speech import SpeechCorpus

        self.spec = spec
        hrtf = load_hrtf("kemar", fs=spec.fs)
        self.hrirs = anechoic_rirs(AZIMUTHS, np.zeros_like(AZIMUTHS), hrtf=hrtf, fs=spec.fs).double().numpy()
        self.corpus = SpeechCorpus.shipped(fs=16000, cache_size=64)

    def speech(self, utterance: str, rng: np.random.Generator) -> np.ndarray:
        """A loud 0.5 s stretch of ``utterance`` at ``spec.fs``, peak 1."""
        from xai_loc.acoustics.speech import resample

        spec = self.spec
        x = self.corpus.load(utterance).astype(np.float64)
        n16 = int(math.ceil(spec.duration * 16000))
        x = np.pad(x, (0, max(0, n16 - x.size)))
        starts = np.arange(0, x.size - n16 + 1, max(1, n16 // 8))
        power = np.array([np.mean(x[s:s + n16] ** 2) for s in starts])
        start = int(rng.choice(starts[power >= 0.5 * power.max()]))
        y = resample(x[start:start + n16], 16000, spec.fs, "speech excerpt")[:spec.n_samples]
        y = np.pad(y, (0, spec.n_samples - y.size))
        return y / max(np.max(np.abs(y)), 1e-12)

    def render(self, utterance: str, azimuth: float, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
        """Ear signals ``(2, n_samples)`` of one scene and what was drawn for it."""
        from xai_loc.acoustics.binaural import AZIMUTHS, SOUNDS, render_scene, spatialize

        spec, n = self.spec, self.spec.n_samples
        k_target = int(np.flatnonzero(AZIMUTHS == azimuth)[0])
        target = spatialize(self.speech(utterance, rng), self.hrirs[k_target])
        others = np.delete(np.arange(AZIMUTHS.size), k_target)
        k_noise = rng.choice(others, size=spec.n_noise, replace=False)
        kinds = rng.choice(np.array(spec.noise_kinds), size=spec.n_noise)
        snrs = rng.uniform(spec.snr[0], spec.snr[1], size=spec.n_noise)
        mix = target.copy()
        for k, kind, snr in zip(k_noise, kinds, snrs, strict=True):
            noise = spatialize(SOUNDS[str(kind)](rng, spec.fs, n), self.hrirs[k])
            mix += render_scene(target, noise, float(snr)) - target
        mix *= SCENE_RMS / max(math.sqrt(float(np.mean(mix ** 2))), 1e-12)
        return mix, {"noise_azimuth": AZIMUTHS[k_noise], "noise_kind": kinds.astype(str), "snr": snrs}


def _example_rng(spec: CueSceneSpec, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, CUE_SPLITS.index(split), int(index), 31])


def render_scene_example(spec: CueSceneSpec, split: str, index: int | Sequence[int]) -> np.ndarray:
    """Waveforms ``(n, 2, n_samples)`` float32 of examples ``index`` of a split, exactly as stored.

    Raises
    ------
    InputError
        For an unknown split or an index outside the split.
    """
    _check_split(split)
    plan = spec.plan(split)
    idx = np.atleast_1d(np.asarray(index, dtype=np.int64))
    if idx.size == 0 or idx.min() < 0 or idx.max() >= plan["azimuth"].size:
        raise InputError(f"example index {index!r} is not allowed; split {split!r} has examples "
                         f"0..{plan['azimuth'].size - 1}")
    renderer = _SceneRenderer(spec)
    return np.stack([renderer.render(str(plan["utterance"][i]), float(plan["azimuth"][i]),
                                     _example_rng(spec, split, i))[0] for i in idx]).astype(np.float32)


def cue_store_path(root: str | Path, spec: CueSceneSpec, split: str) -> Path:
    """``<root>/cue_scenes/<name>-<digest>/<split>.zarr``."""
    _check_split(split)
    return Path(root) / "cue_scenes" / f"{spec.name}-{spec.digest()}" / f"{split}.zarr"


def _coords(spec: CueSceneSpec, plan: dict[str, np.ndarray], front_end) -> dict[str, tuple]:
    """The store's coords: the plan, the front end's axes and the drawn noises (filled in by rendering)."""
    n, shape = plan["azimuth"].size, (plan["azimuth"].size, spec.n_noise)
    width = max(len(k) for k in spec.noise_kinds)
    return {"example": np.arange(n), "cue": list(front_end.cue_names),
            "azimuth": ("example", plan["azimuth"], {"units": "degree"}),
            "elevation": ("example", np.zeros(n), {"units": "degree"}),
            "utterance": ("example", plan["utterance"].astype(str)),
            "band": ("band", np.arange(front_end.n_bands)),
            "frequency": ("band", front_end.centre_frequencies, {"units": "Hz"}),
            "frame_time": ("frame", front_end.frame_times(spec.n_samples), {"units": "s"}),
            "cue_unit": ("cue", [front_end.cue_units[c] for c in front_end.cue_names]),
            "noise_azimuth": (("example", "noise"), np.full(shape, np.nan), {"units": "degree"}),
            "noise_kind": (("example", "noise"), np.full(shape, "", dtype=f"<U{width}")),
            "snr": (("example", "noise"), np.full(shape, np.nan), {"units": "dB"})}


class _BlockRenderer:
    """Renders blocks of a split's examples and computes their cue maps in batches of ``batch_size``."""

    def __init__(self, spec: CueSceneSpec, split: str, plan: dict[str, np.ndarray], front_end,
                 batch_size: int) -> None:
        self.spec, self.split, self.plan = spec, split, plan
        self.front_end, self.batch_size = front_end, batch_size

    @cached_property
    def scenes(self) -> _SceneRenderer:
        return _SceneRenderer(self.spec)

    def __call__(self, items: range) -> dict[str, np.ndarray]:
        import torch

        plan, waves, drawn = self.plan, [], []
        for i in items:
            w, info = self.scenes.render(str(plan["utterance"][i]), float(plan["azimuth"][i]),
                                         _example_rng(self.spec, self.split, i))
            waves.append(w.astype(np.float32))
            drawn.append(info)
        with torch.inference_mode():
            cues = np.concatenate([self.front_end(torch.from_numpy(np.stack(waves[s:s + self.batch_size]))).numpy()
                                   for s in range(0, len(waves), self.batch_size)])
        return {"cues": cues, **{key: np.stack([d[key] for d in drawn]) for key in ("noise_azimuth", "noise_kind",
                                                                                   "snr")}}


def write_cue_scenes(spec: CueSceneSpec, split: str, front_end, *, root: str | Path | None = None,
                     batch_size: int = 16, progress: bool = False) -> Path:
    """Render the scenes of ``split`` and store their cue maps (resumable; see the module docs).

    Parameters
    ----------
    front_end
        The module that maps waveforms ``[B, 2, T]`` to cue maps ``[B, cues, bands, frames]``
        (the spec's :class:`~xai_loc.features.binaural_cues.BinauralCues`), with its
        ``fs``, ``cue_names``, ``cue_units``, ``n_bands``, ``centre_frequencies``,
        ``frame_times(n_samples)`` and ``config``, which label the store.

    batch_size
        Scenes rendered per pass, an integer >= 1.

    Returns
    -------
    Path
        The split's finished store (returned at once if it is there).
    """
    from xai_loc.data.store import default_root

    check_integer("batch_size", batch_size, minimum=1)
    check_flag("progress", progress)
    if front_end.fs != spec.fs:
        raise InputError(f"front-end fs={front_end.fs} does not match the scenes' fs={spec.fs}")
    front_end.eval()
    plan = spec.plan(split)
    config = {"spec": spec.to_dict(), "split": split, "front_end": front_end.config}
    attrs = {"spec": json.dumps(spec.to_dict(), sort_keys=True), "spec_digest": spec.digest(), "split": split,
             "fs": spec.fs, "n_samples": spec.n_samples, "front_end": json.dumps(front_end.config, sort_keys=True),
             "convention": "azimuth counter-clockwise from the front, 90 = left (SOFA); ITD > 0 and "
                           "ILD > 0: left ear leading / louder"}
    n_frames = front_end.frame_times(spec.n_samples).size
    return write_store(cue_store_path(default_root() if root is None else root, spec, split), CUE_SCENES, config,
                       shape=(plan["azimuth"].size, len(front_end.cue_names), front_end.n_bands, n_frames),
                       coords=_coords(spec, plan, front_end), attrs=attrs,
                       render=_BlockRenderer(spec, split, plan, front_end, batch_size), chunk=CHUNK_EXAMPLES,
                       block=BLOCK_EXAMPLES, mismatch="holds cue maps of another spec; remove it or use another name",
                       hint="check the front end and the spec's SNRs", progress=progress,
                       desc=f"cue scenes {split}")


def open_cue_scenes(path: str | Path):
    """Load a finished cue-scene store into memory (``xarray.Dataset``), opened by :data:`CUE_SCENES`.

    Raises
    ------
    InputError
        One line if the store is missing, unfinished, damaged or not a cue-scene store.
    """
    return CUE_SCENES.open(path).load()
