"""Binaural datasets on disk: rendered scenes for the cochleagram localizer, one zarr store per split.

A :class:`BinauralSpec` describes a dataset: which sounds (synthetic kinds of
:data:`~xai_loc.acoustics.binaural.SOUNDS` and excerpts of the shipped speech), how often each
is rendered, in which rooms (:data:`~xai_loc.acoustics.binaural.ROOMS`, or ``"anechoic"``),
at which SNRs and levels. Directions are drawn uniformly from the 504-direction study grid
(azimuth 0-355 step 5, elevation 0-60 step 10; 90 = left), sources 1.4 m from the head.

Layout (read it with plain ``xarray.open_zarr``)::

    <root>/binaural/<name>/<split>.zarr
        waveforms    (example, ear, time) float32   ear signals at fs (ear 0 = left)
        label        (example) int64     (elevation / 10) * 72 + azimuth / 5
        azimuth      (example) float64   degrees, counter-clockwise, 90 = left
        elevation    (example) float64   degrees
        room         (example) str       room preset or 'anechoic'
        t60          (example) float64   seconds (0 for anechoic)
        sound_kind   (example) str       e.g. 'pink_burst', 'speech'
        sound_seed   (example) int64     seed of the sound (speech: utterance number)
        sound_key    (example) str       '<kind>:<seed>', unique per distinct sound
        snr          (example) float64   dB of the diffuse background (NaN: none)
        level_db     (example) float64   RMS level re the reference level (see below)
        time         (time)              seconds
        attrs: spec (JSON), config digest, fs, split, xai_loc_version, ...

**Splits by sound.** Each distinct sound (``sound_key``) belongs to exactly one split, drawn
once from the spec's seed, so no sound (no noise token, no speech utterance) is in both the
training and the test split; directions, rooms and SNRs are drawn per rendering.

**Resumable and atomic** as every store (:class:`~xai_loc.data.resumable.ResumableStore`,
blocks of :data:`CHUNK_EXAMPLES`): a killed run continues with the blocks not yet written,
and the store gets its final name only when complete. Every example is drawn from
generators seeded by ``(seed, sound, rendering)``, so the bytes do not depend on
interruptions. Examples holding NaN, infinite or only zero samples are refused before they
are written; a finished store records a manifest of its files, checked whenever it is
opened (:mod:`xai_loc.data.integrity`).

**Levels.** Each scene (target plus background) is scaled to a binaural RMS of
``REFERENCE_RMS * 10 ** (level_db / 20)`` with ``level_db`` uniform in the spec's range,
so that absolute level is not a cue to distance or direction.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from xai_loc.acoustics.binaural import MAX_LEVEL_DB, REFERENCE_RMS, check_sound_fs
from xai_loc.acoustics.hrtf import INTERPOLATIONS
from xai_loc.checks import check_fs, check_integer, is_real
from xai_loc.data.resumable import StoreKind, write_store
from xai_loc.data.spec import SpecRecord, check_name, numbers, spec_digest, words
from xai_loc.errors import InputError

#: Examples per zarr chunk (and per resumable block).
CHUNK_EXAMPLES = 32
#: Splits of a binaural dataset.
BINAURAL_SPLITS = ("train", "test", "all")
#: Pseudo-room of free-field scenes.
ANECHOIC = "anechoic"
#: Sound kind of excerpts of the shipped speech corpus.
SPEECH = "speech"
#: Ears, in channel order.
EARS = ("left", "right")
#: Most distinct sounds and renderings per sound of a dataset. A rendering is 2 ears x ``duration`` x ``fs`` float32
#: samples, 96 kB at the default 0.25 s and 48 kHz (3.8 MB at 10 s), and its labels are planned in memory before
#: anything is rendered (:func:`_plan_coords`, about 0.5 kB each): the largest set, 10,000 x 100 = 1,000,000
#: renderings, is 96 GB on disk at the default length and its plan about 0.5 GB, against 8,800 renderings (0.8 GB)
#: of the shipped cochleagram CNN's data; a BAST set renders each sound at its 36 azimuths, 64 kB each (23 GB for
#: 10,000 sounds). ``xai-loc binaural`` and ``binaural bast`` offer the same bounds.
MAX_SOUNDS, MAX_PER_SOUND = 10_000, 100
#: Version of the store's ``config``: 2 since its diffuse background follows the spec's ``interp`` (1 took bilinear).
STORE_VERSION = 2
#: What a binaural store holds.
BINAURAL = StoreKind("binaural store", "waveforms", ("example", "ear", "time"), "pressure (simulation units)",
                     "simulate_binaural (or 'xai-loc binaural simulate')", format="xai-loc-binaural",
                     version=STORE_VERSION)


def _default_kinds() -> tuple[str, ...]:
    from xai_loc.acoustics.binaural import SOUNDS

    return (*SOUNDS, SPEECH)


@dataclass(frozen=True)
class BinauralSpec(SpecRecord):
    """What a binaural dataset holds; every field is recorded in the store.

    Parameters
    ----------
    name
        Folder name under ``<root>/binaural/``.
    rooms
        Room presets (:data:`~xai_loc.acoustics.binaural.ROOMS`) and/or ``'anechoic'``; each
        rendering picks one uniformly.
    kinds
        Sound kinds: registered synthetic kinds and ``'speech'`` (0.25-1 s excerpts of the
        shipped espeak-ng corpus); sound ``i`` is of kind ``kinds[i % len(kinds)]``.
    n_sounds
        Distinct sounds (before the split), at most :data:`MAX_SOUNDS`.
    per_sound
        Renderings of each sound (each at its own direction, room, SNR and level), at most :data:`MAX_PER_SOUND`.
    test_fraction
        Share of the distinct sounds that go to the test split.
    duration
        Length of each example in seconds (0.25 s: the default cochleagram CNN's input).
    fs
        Sample rate in Hz, at least each chosen kind's :data:`~xai_loc.acoustics.binaural.SOUND_MIN_FS`.
    snr
        ``(low, high)`` dB: the diffuse background's SNR is uniform in it; None: no background.
        Within :data:`~xai_loc.acoustics.room.SNR_RANGE`.
    level_db
        ``(low, high)``: scene level in dB re :data:`REFERENCE_RMS`, uniform; within
        +-:data:`~xai_loc.acoustics.binaural.MAX_LEVEL_DB`.
    t_diff
        Image sources up to ``t_diff`` seconds, then a diffuse tail (see
        :func:`~xai_loc.acoustics.binaural.binaural_rirs`); None: image sources up to T60. From
        :func:`~xai_loc.acoustics.binaural.min_t_diff` (the direct sound has passed) to the
        shortest T60 of the rooms.
    interp
        HRIR interpolation of the image sources and the diffuse background, a name in
        :data:`~xai_loc.acoustics.hrtf.INTERPOLATIONS` (``'bilinear'``; ``'barycentric'``
        reproduces data rendered before it, e.g. the shipped cochleagram CNN's).
    seed
        Seeds the split, the sounds' excerpts and every rendering.
    """

    name: str = "default"
    rooms: tuple[str, ...] = (ANECHOIC, "office")
    kinds: tuple[str, ...] = field(default_factory=_default_kinds)
    n_sounds: int = 1200
    per_sound: int = 4
    test_fraction: float = 0.2
    duration: float = 0.25
    fs: int = 48000
    snr: tuple[float, float] | None = (5.0, 40.0)
    level_db: tuple[float, float] = (-10.0, 10.0)
    t_diff: float | None = 0.05
    interp: str = "bilinear"
    seed: int = 0

    def __post_init__(self) -> None:
        from xai_loc.acoustics.binaural import ROOMS, SOUNDS, SOURCE_DISTANCE, min_t_diff
        from xai_loc.acoustics.room import SNR_RANGE
        check_name(self.name, "dataset name")
        allowed_rooms = (ANECHOIC, *ROOMS)
        self._convert("rooms", words, f"give room names, some of {', '.join(allowed_rooms)}")
        bad = [r for r in self.rooms if r not in allowed_rooms]
        if not self.rooms or bad:
            raise InputError(f"room {bad[0]!r} is not allowed; use some of {', '.join(allowed_rooms)}" if bad else
                             f"no room given; use some of {', '.join(allowed_rooms)}")
        twice = sorted({r for r in self.rooms if self.rooms.count(r) > 1})
        if twice:
            raise InputError(f"room {twice[0]!r} is given twice; give each room once")
        allowed_kinds = (*SOUNDS, SPEECH)
        self._convert("kinds", words, f"give sound kinds, some of {', '.join(allowed_kinds)}")
        bad = [k for k in self.kinds if k not in allowed_kinds]
        if not self.kinds or bad or len(set(self.kinds)) != len(self.kinds):
            raise InputError(f"sound kinds {list(self.kinds)} are not allowed; use distinct ones of "
                             f"{', '.join(allowed_kinds)}")
        for name, most in (("n_sounds", MAX_SOUNDS), ("per_sound", MAX_PER_SOUND)):
            object.__setattr__(self, name, check_integer(name, getattr(self, name), minimum=1, maximum=most))
        if not (is_real(self.test_fraction) and 0 <= self.test_fraction < 1):
            raise InputError(f"test_fraction={self.test_fraction!r} is not allowed; use a number in [0, 1)")
        object.__setattr__(self, "fs", check_fs(self.fs))
        check_sound_fs(self.kinds, self.fs)
        if not (is_real(self.duration) and 0.01 <= self.duration <= 10):
            raise InputError(f"duration={self.duration!r} s is not allowed; use 0.01 to 10 seconds")
        if self.snr is not None:
            self._convert("snr", partial(numbers, length=2), "use (low, high) in dB, or None for no background")
        self._convert("level_db", partial(numbers, length=2), "use (low, high) in dB")
        for name, (least, most) in (("snr", SNR_RANGE), ("level_db", (-MAX_LEVEL_DB, MAX_LEVEL_DB))):
            value = getattr(self, name)
            if value is not None and not least <= value[0] <= value[1] <= most:  # NaN fails every comparison
                raise InputError(f"{name}={value!r} is not allowed; use (low, high) dB with "
                                 f"{least:g} <= low <= high <= {most:g}")
        if self.t_diff is not None:
            # the tail starts once the direct sound has passed and at the latest at the end of the BRIR (T60)
            least = min_t_diff(SOURCE_DISTANCE, self.fs)
            most = min((ROOMS[r].t60 for r in self.rooms if r != ANECHOIC), default=math.inf)
            if not (is_real(self.t_diff) and least <= self.t_diff <= most):
                upto = f" to {most:g} (the shortest T60 of the rooms)" if math.isfinite(most) else " up"
                raise InputError(f"t_diff={self.t_diff!r} is not allowed; use seconds from {least:g} (the direct "
                                 f"sound has passed){upto}, or None")
        if not isinstance(self.interp, str) or self.interp not in INTERPOLATIONS:
            raise InputError(f"interp={self.interp!r} is not allowed; use one of {', '.join(INTERPOLATIONS)}")
        object.__setattr__(self, "seed", check_integer("seed", self.seed))

    @property
    def n_samples(self) -> int:
        """Samples per example."""
        return int(round(self.duration * self.fs))

    def sounds(self) -> list[tuple[str, int]]:
        """``(kind, seed)`` of sound ``0 .. n_sounds - 1``: kinds in turn, seeds counting per kind.

        Speech seeds are utterance numbers of the shipped corpus (300), taken modulo its size:
        sounds beyond that repeat utterances and share their key (and split).
        """
        n_utt = _n_utterances() if SPEECH in self.kinds else 0
        out = []
        for i in range(self.n_sounds):
            kind, seed = self.kinds[i % len(self.kinds)], i // len(self.kinds)
            out.append((kind, seed % n_utt if kind == SPEECH else seed))
        return out

    def split_of_keys(self) -> dict[str, str]:
        """``'<kind>:<seed>' -> 'train' | 'test'`` for every distinct sound."""
        keys = sorted({f"{k}:{s}" for k, s in self.sounds()})
        rng = np.random.default_rng([self.seed, 17])
        order = rng.permutation(len(keys))
        n_test = int(round(self.test_fraction * len(keys)))
        test = {keys[i] for i in order[:n_test]}
        return {k: ("test" if k in test else "train") for k in keys}

    def sound_ids(self, split: str) -> np.ndarray:
        """Sound numbers in ``split`` (``'all'``: every sound), ascending.

        Raises
        ------
        InputError
            For an unknown split, or one that holds no sound (too few sounds for the test share).
        """
        if split not in BINAURAL_SPLITS:
            raise InputError(f"split {split!r} is unknown; allowed: {', '.join(BINAURAL_SPLITS)}")
        which = self.split_of_keys()
        ids = np.array([i for i, (k, s) in enumerate(self.sounds()) if split == "all" or which[f"{k}:{s}"] == split],
                       dtype=np.int64)
        if ids.size == 0:
            raise InputError(f"split {split!r} of {self.name!r} holds no sounds (n_sounds={self.n_sounds}, "
                             f"test_fraction={self.test_fraction:g}); raise n_sounds or change test_fraction")
        return ids


#: The data of the shipped cochleagram CNN (``pretrained/cochcnn_default``), which ``xai-loc binaural`` renders
#: by default (:func:`cochcnn_spec`); the other fields are :class:`BinauralSpec`'s defaults.
COCHCNN_DATA = {"rooms": (ANECHOIC, "office"), "n_sounds": 2200, "per_sound": 4, "interp": "barycentric"}


def cochcnn_spec(base: BinauralSpec | None = None, **changes: Any) -> BinauralSpec:
    """The dataset of the cochleagram runs: ``base`` (default :data:`COCHCNN_DATA`) with ``changes``, named
    ``cochcnn-<rooms>-<n_sounds>x<per_sound>``, e.g. ``cochcnn-anechoic-office-2200x4``.

    Where a field other than these three differs from :data:`COCHCNN_DATA`, the name ends in
    ``-<digest>`` (10 hex digits of the other fields), so datasets of other seeds, durations,
    noise or sounds get their own folders. ``xai-loc binaural simulate|train|cues`` and
    ``scripts/train_cochcnn.py`` name their data alike, so they find each other's stores.
    """
    spec = replace(base or BinauralSpec(**COCHCNN_DATA), **changes)
    shown = ("name", "rooms", "n_sounds", "per_sound")
    other = {k: v for k, v in spec.to_dict().items() if k not in shown}
    default = {k: v for k, v in BinauralSpec(**COCHCNN_DATA).to_dict().items() if k not in shown}
    name = f"cochcnn-{'-'.join(spec.rooms)}-{spec.n_sounds}x{spec.per_sound}"
    return replace(spec, name=name if other == default else f"{name}-{spec_digest(other, 10)}")


def _n_utterances() -> int:
    from xai_loc.acoustics.speech import SpeechCorpus

    return len(SpeechCorpus.shipped())


def binaural_dataset_path(root: str | Path, spec: BinauralSpec, split: str) -> Path:
    """Path of the store of one split: ``<root>/binaural/<name>/<split>.zarr``."""
    return Path(root) / "binaural" / spec.name / f"{split}.zarr"


# -- rendering ------------------------------------------------------------------------------------


class _Renderer:
    """Sounds, BRIRs (cached per room and direction) and backgrounds of one spec."""

    def __init__(self, spec: BinauralSpec, device: str = "cpu") -> None:
        from xai_loc.acoustics.hrtf import load_hrtf

        self.spec, self.device = spec, device
        self.hrtf = load_hrtf("kemar", fs=spec.fs)
        self._brirs: dict[tuple[str, int], np.ndarray] = {}
        self._corpus = None

    def sound(self, kind: str, seed: int) -> np.ndarray:
        """The dry sound ``(n_samples,)``, peak-normalized."""
        from xai_loc.acoustics.binaural import synthesize

        spec = self.spec
        if kind != SPEECH:
            return synthesize(kind, spec.fs, spec.duration, seed=seed).astype(np.float64)
        return self._speech_excerpt(seed)

    def _speech_excerpt(self, utterance: int) -> np.ndarray:
        """A loud stretch of utterance ``utterance``, at the spec's rate, peak-normalized."""
        from xai_loc.acoustics.speech import SpeechCorpus, resample

        if self._corpus is None:
            self._corpus = SpeechCorpus.shipped(fs=16000, cache_size=0)
        x = self._corpus.load(int(utterance)).astype(np.float64)
        n16 = int(math.ceil(self.spec.duration * 16000))
        if x.size < n16:
            x = np.pad(x, (0, n16 - x.size))
        hop = max(1, n16 // 4)
        starts = np.arange(0, x.size - n16 + 1, hop)
        rms = np.array([np.sqrt(np.mean(x[s:s + n16] ** 2)) for s in starts])
        loud = starts[rms >= 0.5 * rms.max()]
        rng = np.random.default_rng([self.spec.seed, int(utterance), 23])
        start = int(rng.choice(loud))
        y = resample(x[start:start + n16], 16000, self.spec.fs, "speech excerpt")[: self.spec.n_samples]
        y = np.pad(y, (0, self.spec.n_samples - y.size))
        peak = np.max(np.abs(y))
        return y / peak if peak > 0 else y

    def brir(self, room: str, label: int) -> np.ndarray:
        """Binaural response ``(2, N)`` of grid direction ``label`` in ``room``."""
        from xai_loc.acoustics.binaural import ROOMS, anechoic_rirs, label_to_direction

        key = (room, int(label))
        if key not in self._brirs:
            az, el = label_to_direction(int(label))
            if room == ANECHOIC:
                h = anechoic_rirs([az], [el], hrtf=self.hrtf, fs=self.spec.fs, interp=self.spec.interp)
            else:
                h = ROOMS[room].brirs([az], [el], self.hrtf, fs=self.spec.fs, t_diff=self.spec.t_diff,
                                      interp=self.spec.interp, device=self.device)
            self._brirs[key] = h[0].double().cpu().numpy()
        return self._brirs[key]

    def render(self, sound: np.ndarray, sound_id: int, k: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Rendering ``k`` of sound ``sound_id``: ear signals ``(2, T)`` and their labels."""
        from xai_loc.acoustics.binaural import (
            ROOMS,
            diffuse_noise,
            label_to_direction,
            render_scene,
            scale_to_level,
            spatialize,
        )

        drawn, rng = _draw(self.spec, sound_id, k)
        label, room = drawn["label"], drawn["room"]
        scene = spatialize(sound, self.brir(room, label))
        if self.spec.snr is not None:  # the background continues the draws' generator
            noise = diffuse_noise(scene.shape[1], self.hrtf, rng, interp=self.spec.interp)
            scene = render_scene(scene, noise, drawn["snr"])
        az, el = label_to_direction(label)
        info = {**drawn, "azimuth": float(az), "elevation": float(el),
                "t60": 0.0 if room == ANECHOIC else float(ROOMS[room].t60)}
        return scale_to_level(scene, drawn["level_db"]).astype(np.float32), info


def _draw(spec: BinauralSpec, sound_id: int, k: int) -> tuple[dict[str, Any], np.random.Generator]:
    """What rendering ``k`` of sound ``sound_id`` draws (``label``, ``room``, ``snr``, ``level_db``), and
    the generator after these draws (the background continues it): the one source of the store's
    planned coordinates and of its waveforms."""
    from xai_loc.acoustics.binaural import N_LABELS

    rng = np.random.default_rng([spec.seed, int(sound_id), int(k), 31])
    label = int(rng.integers(N_LABELS))
    room = spec.rooms[int(rng.integers(len(spec.rooms)))]
    snr = float(rng.uniform(*spec.snr)) if spec.snr is not None else float("nan")
    return {"label": label, "room": room, "snr": snr, "level_db": float(rng.uniform(*spec.level_db))}, rng


def render_examples(spec: BinauralSpec, sound_ids: Sequence[int], device: str = "cpu",
                    progress: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render every rendering of ``sound_ids`` in memory: waveforms ``(n, 2, T)`` and label arrays.

    The same numbers as the stores of :func:`simulate_binaural` (for small sets and tests).
    """
    from xai_loc.progress import tqdm

    renderer = _Renderer(spec, device)
    sounds = spec.sounds()
    waves, rows = [], []
    for sid in tqdm(list(sound_ids), disable=not progress, desc="render", unit="sound"):
        kind, seed = sounds[int(sid)]
        dry = renderer.sound(kind, seed)
        for k in range(spec.per_sound):
            w, info = renderer.render(dry, int(sid), k)
            waves.append(w)
            rows.append({**info, "sound_kind": kind, "sound_seed": seed, "sound_key": f"{kind}:{seed}",
                         "sound_id": int(sid)})
    columns = {key: np.array([r[key] for r in rows]) for key in rows[0]} if rows else {}
    return (np.stack(waves) if waves else np.zeros((0, 2, spec.n_samples), np.float32)), columns


# -- stores ----------------------------------------------------------------------------------------


def _plan_coords(spec: BinauralSpec, sound_ids: np.ndarray) -> dict[str, tuple]:
    """Per-example labels of a split, drawn without rendering (:func:`_draw`, as :class:`_Renderer` does)."""
    from xai_loc.acoustics.binaural import ROOMS, label_to_direction

    sounds = spec.sounds()
    cols: dict[str, list] = {k: [] for k in ("label", "room", "snr", "level_db", "sound_kind", "sound_seed",
                                             "sound_id", "sound_key", "rendering")}
    for sid in sound_ids:
        kind, seed = sounds[int(sid)]
        for k in range(spec.per_sound):
            for name, value in _draw(spec, sid, k)[0].items():
                cols[name].append(value)
            cols["sound_kind"].append(kind)
            cols["sound_seed"].append(seed)
            cols["sound_id"].append(int(sid))
            cols["sound_key"].append(f"{kind}:{seed}")
            cols["rendering"].append(k)
    label = np.array(cols["label"], dtype=np.int64)
    az, el = label_to_direction(label) if label.size else (np.zeros(0), np.zeros(0))
    rooms = np.array(cols["room"], dtype=str)
    t60 = np.array([0.0 if r == ANECHOIC else ROOMS[r].t60 for r in rooms], dtype=np.float64)
    n = label.size
    return {
        "example": ("example", np.arange(n)),
        "ear": ("ear", np.array(EARS)),
        "time": ("time", np.arange(spec.n_samples) / spec.fs, {"units": "s"}),
        "label": ("example", label),
        "azimuth": ("example", np.asarray(az, dtype=np.float64), {"units": "degree", "convention": "SOFA, 90 = left"}),
        "elevation": ("example", np.asarray(el, dtype=np.float64), {"units": "degree"}),
        "room": ("example", rooms),
        "t60": ("example", t60, {"units": "s"}),
        "snr": ("example", np.array(cols["snr"], dtype=np.float64), {"units": "dB", "note": "NaN: no background"}),
        "level_db": ("example", np.array(cols["level_db"], dtype=np.float64), {"units": "dB re REFERENCE_RMS"}),
        "sound_kind": ("example", np.array(cols["sound_kind"], dtype=str)),
        "sound_seed": ("example", np.array(cols["sound_seed"], dtype=np.int64)),
        "sound_id": ("example", np.array(cols["sound_id"], dtype=np.int64)),
        "sound_key": ("example", np.array(cols["sound_key"], dtype=str)),
        "rendering": ("example", np.array(cols["rendering"], dtype=np.int64)),
    }


def simulate_binaural(spec: BinauralSpec, split: str, *, root: str | Path | None = None, device: str = "cpu",
                      progress: bool = True) -> Path:
    """Render (or finish rendering) one split of a binaural dataset into a zarr store.

    Parameters
    ----------
    spec
        The dataset (:class:`BinauralSpec`).
    split
        ``'train'``, ``'test'`` or ``'all'``.
    root
        Data root (default: :func:`xai_loc.data.store.default_root`, i.e. ``$XAI_LOC_DATA``
        or ``./xai-loc-data``).
    device
        Torch device of the room simulation.
    progress
        Show a progress bar.

    Returns
    -------
    pathlib.Path
        The complete store. An existing complete store of the same spec is returned as it is;
        one of another spec is an error.
    """
    from xai_loc import __version__
    from xai_loc.data.store import default_root

    if not isinstance(spec, BinauralSpec):
        raise InputError(f"spec must be a BinauralSpec (got {type(spec).__name__})")
    ids = spec.sound_ids(split)
    config = {"spec": spec.to_dict(), "split": split}
    final = binaural_dataset_path(root or default_root(), spec, split)
    coords = _plan_coords(spec, ids)
    n_total = coords["label"][1].size
    attrs = {"spec": json.dumps(spec.to_dict()), "spec_digest": spec.digest(), "split": split, "fs": spec.fs,
             "hrtf": "kemar", "reference_rms": REFERENCE_RMS, "xai_loc_version": __version__,
             "description": "binaural scenes (ear signals), see xai_loc.data.binaural_store"}
    sounds = spec.sounds()
    sound_of, rendering = coords["sound_id"][1], coords["rendering"][1]
    state: dict[str, Any] = {}  # the renderer (HRTFs loaded once, when a block is rendered) and the last sound

    def render(items: range) -> dict[str, np.ndarray]:
        if "renderer" not in state:
            state["renderer"] = _Renderer(spec, device)
        renderer = state["renderer"]
        waves = []
        for i in items:
            sid = int(sound_of[i])
            if state.get("sid") != sid:
                state.update(sid=sid, sound=renderer.sound(*sounds[sid]))
            waves.append(renderer.render(state["sound"], sid, int(rendering[i]))[0])
        return {"waveforms": np.stack(waves)}

    return write_store(final, BINAURAL, config, shape=(n_total, 2, spec.n_samples), coords=coords, attrs=attrs,
                       render=render, chunk=CHUNK_EXAMPLES,
                       mismatch="holds a dataset with a different spec; remove it or use another name",
                       hint="check the spec's sounds, levels and rooms", progress=progress, desc=f"render {split}")


def open_binaural(path: str | Path):
    """Open a complete binaural store as an ``xarray.Dataset`` (lazy).

    The store is checked first (:func:`xai_loc.data.integrity.verify_store`) and every chunk
    again as it is read; a damaged, unfinished or foreign store is an
    :class:`~xai_loc.errors.InputError` naming it and how to rebuild it.
    """
    return BINAURAL.open(path)


__all__ = [
    "BINAURAL_SPLITS", "BinauralSpec", "CHUNK_EXAMPLES", "COCHCNN_DATA", "EARS", "MAX_PER_SOUND", "MAX_SOUNDS",
    "REFERENCE_RMS", "ANECHOIC", "SPEECH",
    "binaural_dataset_path", "cochcnn_spec", "open_binaural", "render_examples",
    "simulate_binaural",
]
