"""Simulated multichannel datasets on disk: one chunked zarr store per scene, condition and split.

Layout (read it with plain ``xarray.open_zarr``)::

    <root>/<scene>[-<convention>]/t60-<T60>_snr-<SNR>/<split>[-n<N>].zarr
        signals          (window, mic, time) float32   microphone windows
        source_id        (window)   int64   row of the scene's source list
        window_index     (window)   int64   position of the window within its source's signal
        speech_id        (window)   str     utterance rendered at that source
        source_position  (window, xyz)      metres
        mic_position     (mic, xyz)         metres
        time             (time)             seconds within the window
        attrs: config (JSON: what was asked for, scene_digest, corpus and corpus_digest among it),
               scene (JSON), convention (+ its full spec), t60, snr, split, seed, backend, fs, c,
               rendered_on (devices that rendered it, JSON), ...

Each source is rendered under the scene's simulation convention
(:func:`xai_loc.acoustics.render.render_windows`; ``gpurir`` by default: the utterance
convolved over its full length, noise over the whole signal, windows from sample 0). On the CPU
sources are rendered one by one in NumPy; on another device (a GPU) in blocks of
:data:`DEVICE_SOURCES` (:func:`_blocks`), their responses made and rendered there
(:func:`~xai_loc.acoustics.render.render_windows_batch`) and each block's windows copied to the
host once.

Writing, resuming and opening are those of every store
(:class:`~xai_loc.data.resumable.ResumableStore`, one window per block): a killed run
continues with the windows not yet written, and a store under its final name is always
whole. Every source's speech and noise come from generators seeded by
``(seed, source id)``, so the bytes do not depend on interruptions or subsets, nor on
where a source is rendered: given a dask client, sources are rendered on its workers and
written by this process (:func:`xai_loc.cluster.map_blocks`).

Before the first source is simulated, the backend checks its arguments against every source of the
split at once (:func:`~xai_loc.acoustics.backends.check_rirs`, the geometry only): a hybrid ``t_diff``
too early for the farthest source is refused in one line, nothing written, not after the sources before it.
Windows holding NaN, infinite or only zero samples are refused before they are written. A
finished store records a manifest of its files (sizes and CRC-32), checked whenever it is
opened (:mod:`xai_loc.data.integrity`); a damaged store is reported in one line.

:func:`simulate_windows` renders the same split straight into memory (a torch tensor on any
device, float32 or float16) for training where the data cannot be stored or moved (the GPU
machine). Both paths plan the split with :func:`_job`, cut its sources into the same blocks
(:func:`_blocks`) and render each block with :func:`_rendered_block` (the store through
:func:`~xai_loc.cluster.map_blocks` and :func:`_block_windows`, memory through
:func:`_render_sources`), so the same arguments give the same windows, bit for bit in float32
on the same device.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xai_loc.acoustics.backends import BACKENDS, TRAITS, check_options, check_rirs, simulate_rirs, without_defaults
from xai_loc.acoustics.conventions import DEFAULT_CONVENTION, get_convention, rir_length
from xai_loc.acoustics.render import render_windows, render_windows_batch, window_count
from xai_loc.acoustics.room import SourceError, check_snr, check_t60
from xai_loc.checks import check_integer, is_integer, is_real
from xai_loc.data.integrity import check_flags, check_values, open_zarr_group, value_flags
from xai_loc.data.resumable import ResumableStore, StoreKind
from xai_loc.data.scene import SPLITS, Scene
from xai_loc.data.spec import first_difference, spec_digest
from xai_loc.errors import InputError
from xai_loc.runtime import no_tf32

if TYPE_CHECKING:
    import xarray as xr
    from distributed import Client

#: Windows per zarr chunk: one, so that training can read random windows cheaply
#: (16 x 5120 float32 = 328 kB before compression).
CHUNK_WINDOWS = 1
DATA_ENV = "XAI_LOC_DATA"
#: What a dataset store holds.
DATASET = StoreKind("dataset store", "signals", ("window", "mic", "time"), "pressure (simulation units)",
                    "'xai-loc simulate'")


def default_root() -> Path:
    """Data root: ``$XAI_LOC_DATA`` (unset or empty: ``./xai-loc-data``)."""
    return Path(os.environ.get(DATA_ENV) or "xai-loc-data")


def condition_value(value: float) -> float:
    """``value`` as the condition it names: its 6-digit ``:g`` form where that is within float32 rounding of it
    (``np.float32(0.6)``, ``0.1 + 0.2``: the conditions 0.6 and 0.3 of the shipped checkpoints), else itself
    (``0.2000001`` stays a condition of its own)."""
    value = float(value) + 0.0  # -0.0 is the condition 0
    short = float(f"{value:g}")
    return short if math.isclose(short, value, rel_tol=1e-7, abs_tol=1e-12) else value


def condition_number(value: float) -> str:
    """:func:`condition_value` as ``:g`` writes it where that reads back as the same float, else its ``repr``: how
    names and messages write a T60 or SNR (two different conditions never read alike)."""
    value = condition_value(value)
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def condition_name(t60: float, snr: float) -> str:
    """Folder name of a condition, e.g. ``t60-0.6_snr-10``; two different conditions (:func:`condition_value`)
    never share one (``0.2000001`` is written in full, not as ``0.2``)."""
    return f"t60-{condition_number(t60)}_snr-{condition_number(snr)}"


#: Seed of source subsets (``--sources N``): fixed, so that every command picks the same sources.
SUBSET_SEED = 5000


def check_n_sources(n_sources: int | None) -> None:
    """Refuse, in one line, a source count that is not None (the whole split) or an integer >= 1."""
    if n_sources is not None and not (is_integer(n_sources) and n_sources >= 1):
        raise InputError(f"n_sources={n_sources!r} is not allowed; use an integer >= 1 (None: the whole split)")


def subset_ids(ids: np.ndarray, n_sources: int | None) -> np.ndarray:
    """A seeded spread of ``n_sources`` of ``ids`` over the whole split, in ascending order.

    The subset is the head of one fixed random permutation of the split (seed
    :data:`SUBSET_SEED`), so smaller subsets nest in larger ones and every command asking
    for N sources gets the same N; unlike the first N ids (a narrow strip of the grid), it
    covers the split's area, so a baseline fitted on it describes the split.
    """
    check_n_sources(n_sources)
    ids = np.asarray(ids)
    if n_sources is None or n_sources >= ids.size:
        return ids
    order = np.random.default_rng(SUBSET_SEED).permutation(ids.size)
    return np.sort(ids[order[:n_sources]])


def dataset_path(root: str | Path, scene: Scene, t60: float, snr: float, split: str,
                 n_sources: int | None = None) -> Path:
    """Path of the store for a scene, condition and split (``n_sources``: a subset, :func:`subset_ids`).

    Data of a convention other than the default live under ``<scene>-<convention>/``, so
    stores of two conventions never meet.
    """
    if not isinstance(root, (str, os.PathLike)):
        raise InputError(f"root={root!r} is not allowed; give the path of a data root folder")
    name = split if n_sources is None else f"{split}-n{n_sources}"
    folder = scene.name if scene.convention == DEFAULT_CONVENTION else f"{scene.name}-{scene.convention}"
    return Path(root) / folder / condition_name(t60, snr) / f"{name}.zarr"


@dataclass(frozen=True)
class _Plan:
    """What a store will hold: sources, their utterances and the window table."""

    source_ids: np.ndarray
    utterances: np.ndarray
    first_window: np.ndarray  # (n_sources + 1,) cumulative window offsets


def _plan(scene: Scene, ids: np.ndarray, corpus, seed: int, n_rir: int) -> _Plan:
    n_utt = len(corpus)
    utt = np.array([np.random.default_rng([seed, int(s), 0]).integers(n_utt) for s in ids], dtype=np.int64)
    counts = np.array([window_count(scene.convention, len(corpus.load(int(u))), n_rir, scene.window) for u in utt],
                      dtype=np.int64)
    if np.any(counts == 0):
        short = corpus.ids[int(utt[np.argmax(counts == 0)])]
        raise InputError(f"utterance {short!r} is shorter than one window of {scene.window} samples; use longer audio")
    return _Plan(ids, utt, np.concatenate([[0], np.cumsum(counts)]))


@contextlib.contextmanager
def _naming_sources(ids) -> Iterator[None]:
    """Inside the block, a :class:`~xai_loc.acoustics.room.SourceError` about row ``k`` of the sources passed to a
    backend names the scene's source ``ids[k]`` instead."""
    try:
        yield
    except SourceError as err:
        raise err.naming(ids) from None


def source_rirs(scene: Scene, sid: int, t60: float, seed: int, backend: str, device: str,
                rir_options: dict, as_tensor: bool = False):
    """The responses ``(M, N)`` of source ``sid`` as a store of ``seed`` simulates them (on ``device``; a
    tensor there with ``as_tensor``, else a NumPy array)."""
    seeded = {"seed": seed * 1_000_003 + sid} if TRAITS[backend].seeded else {}
    with _naming_sources([sid]):
        return simulate_rirs(backend, scene.room, scene.sources[sid][None], scene.mics, t60, device=device,
                             convention=scene.convention, as_tensor=as_tensor, **seeded, **rir_options)[0]


def noise_rng(seed: int, sid: int) -> np.random.Generator:
    """The generator of source ``sid``'s sensor noise in a store of ``seed``."""
    return np.random.default_rng([seed, sid, 1])


def _render_source(scene: Scene, sid: int, utterance: np.ndarray, t60: float, snr: float, seed: int,
                   backend: str, device: str, rir_options: dict) -> np.ndarray:
    """The windows of one source: its RIRs (on ``device``) and the convention's rendering (NumPy, float64)."""
    rirs = source_rirs(scene, sid, t60, seed, backend, device, rir_options)
    return render_windows(scene.convention, utterance, rirs, snr, noise_rng(seed, sid), scene.window)


#: Sources rendered together off the CPU (:func:`_blocks`): their noise goes over in one copy and their
#: windows come back in one (about 0.1 GB of float64 noise for 16 microphones and 3.6 s utterances).
DEVICE_SOURCES = 16


def renders_on_host(device: str) -> bool:
    """Whether sources are rendered in NumPy (on the CPU) rather than with torch on ``device`` (in blocks,
    :data:`DEVICE_SOURCES` at a time, for a store)."""
    import torch

    return torch.device(device).type == "cpu"


def _blocks(ks: Sequence[int], device: str) -> list[tuple[int, ...]]:
    """``ks`` cut into work items rendered together: one source each on the CPU (finest resume, threads
    overlap), :data:`DEVICE_SOURCES` elsewhere."""
    size = 1 if renders_on_host(device) else DEVICE_SOURCES
    return [tuple(ks[i : i + size]) for i in range(0, len(ks), size)]


@dataclass(frozen=True)
class _Job:
    """One split of a scene under one condition, validated and planned (shared by the store and memory paths)."""

    scene: Scene
    split: str
    t60: float
    snr: float
    ids: np.ndarray
    n_sources: int | None
    corpus: Any
    seed: int
    backend: str
    rir_options: dict
    config: dict
    plan: _Plan | None = field(default=None, compare=False)

    def planned(self) -> _Job:
        """The job with its plan (utterances read to count windows)."""
        if self.plan is not None:
            return self
        n_rir = rir_length(self.scene.convention, self.t60, self.scene.room.fs, self.rir_options.get("t_max"))
        plan = _plan(self.scene, self.ids, self.corpus, self.seed, n_rir)
        return _Job(**{**{k: getattr(self, k) for k in self.__dataclass_fields__}, "plan": plan})

    def check_responses(self, device: str) -> None:
        """Refuse, in one line, responses the backend would refuse for any of the split's sources (a hybrid
        ``t_diff`` too early for a far source, ...), all checked at once from the geometry before the first is
        simulated (:func:`~xai_loc.acoustics.backends.check_rirs`); a message about one source names its id in the
        scene."""
        with _naming_sources(self.ids):
            check_rirs(self.backend, self.scene.room, self.scene.sources[self.ids], self.scene.mics, self.t60,
                       device=device, convention=self.scene.convention, **self.rir_options)

    def attrs(self) -> dict:
        """Attributes of the split's data (a store's attrs; an in-memory split's too)."""
        from xai_loc import __version__

        scene = self.scene
        return {
            "config": json.dumps(self.config), "scene": json.dumps(scene.to_dict()), "t60": self.t60,
            "snr": self.snr, "split": self.split, "seed": self.seed, "backend": self.backend, "fs": scene.room.fs,
            "c": scene.room.c, "convention": scene.convention,
            "convention_spec": json.dumps(get_convention(scene.convention).to_dict()),
            "xai_loc_version": __version__, "description": "microphone windows, see xai_loc.data.store",
        }


#: Backend arguments a simulation sets itself (each source's seed from its own, its device, the scene's convention,
#: float32 responses), never RIR options.
_RESERVED_OPTIONS = ("seed", "device", "convention", "dtype", "as_tensor")


def _checked_options(backend: str, rir_options: Mapping | None, t60: float) -> dict:
    """RIR options as a store of condition ``t60`` records them, checked before anything is planned or written.

    A mapping of option names ``backend`` takes (none of :data:`_RESERVED_OPTIONS`), ``t_max`` a
    positive number of seconds, every value JSON; NumPy scalars become the Python numbers they hold,
    and options that ask for what the backend does without them are left out
    (:func:`~xai_loc.acoustics.backends.without_defaults`).
    """
    if rir_options is None:
        return {}
    if not isinstance(rir_options, Mapping):
        raise InputError(f"rir_options={rir_options!r} is not allowed; give a dict of backend options, "
                         "e.g. {'mode': 'hybrid'}")
    options = {k: v.item() if isinstance(v, np.generic) else v for k, v in rir_options.items()}
    for key in options:
        if not isinstance(key, str) or key in _RESERVED_OPTIONS:
            raise InputError(f"RIR option {key!r} is not allowed: a simulation sets {', '.join(_RESERVED_OPTIONS)} "
                             "itself (seed and device are its own arguments, the convention is the scene's)")
    check_options(backend, options, taken=_RESERVED_OPTIONS)
    t_max = options.get("t_max")
    if t_max is not None and not (is_real(t_max) and t_max > 0):
        raise InputError(f"RIR option t_max={t_max!r} is not allowed; give a positive number of seconds")
    for key, value in options.items():
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise InputError(f"RIR option {key}={value!r} is not allowed; give a finite number, a string, a bool, "
                             "None or a list of them") from None
    return without_defaults(backend, options, t60)


def _job(scene: Scene, split: str, t60: float, snr: float, n_sources: int | None, corpus, seed: int, backend: str,
         rir_options: Mapping | None) -> _Job:
    """Validate a simulation request and describe it (``config``: what a store records and compares)."""
    from xai_loc.acoustics.speech import SpeechCorpus

    if not isinstance(scene, Scene):
        raise InputError(f"scene={scene!r} is not allowed; give a Scene, e.g. paper_scene() or load_scene(path)")
    if corpus is not None and not isinstance(corpus, SpeechCorpus):
        raise InputError(f"corpus={corpus!r} is not allowed; give a SpeechCorpus, e.g. SpeechCorpus.from_folder(path) "
                         "(None: the shipped corpus)")
    t60 = condition_value(check_t60(t60, scene.room))
    snr = condition_value(check_snr(snr))
    if split not in SPLITS:
        raise InputError(f"split {split!r} is unknown; allowed: {', '.join(SPLITS)}")
    if backend not in BACKENDS:
        raise InputError(f"RIR backend {backend!r} is unknown; allowed: {', '.join(BACKENDS)}")
    check_n_sources(n_sources)
    if not (is_integer(seed) and seed >= 0):
        raise InputError(f"seed={seed!r} is not allowed; use an integer >= 0")
    seed = int(seed)
    rir_options = _checked_options(backend, rir_options, t60)
    ids = scene.source_ids(split)
    if ids.size == 0:
        raise InputError(f"split {split!r} of scene {scene.name!r} holds no sources; give it source ids (or a "
                         "larger fraction) in the scene's [splits]")
    if n_sources is not None:
        # asking for at least the whole split is the split: its own store, not a second copy named by the count
        n_sources = None if n_sources >= ids.size else int(n_sources)
        ids = subset_ids(ids, n_sources)
    corpus = SpeechCorpus.shipped(fs=scene.room.fs) if corpus is None else corpus
    if corpus.fs != scene.room.fs:  # its speech would play at the wrong speed through the responses
        raise InputError(f"corpus {corpus.name!r} is at {corpus.fs} Hz, scene {scene.name!r} at {scene.room.fs} Hz; "
                         f"load the corpus with fs={scene.room.fs}")
    config = {
        "scene_digest": scene.digest(), "convention": scene.convention, "t60": t60, "snr": snr, "split": split,
        "n_sources": len(ids), "seed": seed, "backend": backend, "rir_options": rir_options, "corpus": corpus.name,
        "corpus_digest": corpus_digest(corpus),
        **HYBRID_TAIL.get((backend, rir_options.get("mode")), {}),
    }
    return _Job(scene, split, t60, snr, ids, n_sources, corpus, seed, backend, rir_options, config)


#: What the config of a store records of how its responses' diffuse tail was made, by (backend, mode): the torch
#: hybrid's tail carries the late energy of the image sources it replaces since 2026-12-08 (its level was fitted to
#: the reflections before t_diff), so a hybrid store simulated before is not reused as this one.
HYBRID_TAIL = {("torch", "hybrid"): {"hybrid_tail": "image-energy"}}


def _rendered_block(job: _Job, device: str, ks: Sequence[int], utterances: dict | None = None) -> list:
    """The windows of the k-th sources of a planned job, for every ``k`` of ``ks``: NumPy arrays of
    :func:`_render_source` on the CPU; elsewhere float32 tensors on ``device``, the block's responses made and
    rendered there (:func:`~xai_loc.acoustics.render.render_windows_batch`) without passing through the host.
    ``utterances``: decoded utterances by index (read from the job's corpus where missing)."""
    plan, utterances = job.plan, utterances or {}
    sids = [int(plan.source_ids[k]) for k in ks]
    speech = [utterances.get(int(plan.utterances[k])) for k in ks]
    speech = [job.corpus.load(int(plan.utterances[k])) if u is None else u for k, u in zip(ks, speech, strict=True)]
    with no_tf32():  # every path (store, memory, dask worker) renders here
        if renders_on_host(device):
            return [_render_source(job.scene, sid, u, job.t60, job.snr, job.seed, job.backend, device,
                                   job.rir_options) for sid, u in zip(sids, speech, strict=True)]
        import torch

        rirs = torch.stack([source_rirs(job.scene, sid, job.t60, job.seed, job.backend, device, job.rir_options,
                                        as_tensor=True) for sid in sids])
        return render_windows_batch(job.scene.convention, speech, rirs, job.snr,
                                    [noise_rng(job.seed, sid) for sid in sids], job.scene.window)


def _block_windows(ks: tuple[int, ...], work: tuple[_Job, str]) -> list[np.ndarray]:
    """The windows of the k-th sources of a planned job ``work = (job, device)`` as NumPy arrays (a block
    rendered on a device comes to the host in one copy). A work item of :func:`simulate_dataset`, on a dask
    worker or here."""
    job, device = work
    windows = _rendered_block(job, device, ks)
    if renders_on_host(device):
        return windows
    import torch

    host = torch.cat(windows).cpu().numpy()
    return np.split(host, np.cumsum([len(w) for w in windows])[:-1])


def _render_sources(job: _Job, device: str, ks: Sequence[int], workers: int = 1) -> Iterator[tuple[int, Any]]:
    """``(k, windows)`` for the k-th source of a planned job, for every ``k`` of ``ks`` in that order.

    Sources go in blocks (:func:`_blocks`) through :func:`_rendered_block`: one by one in NumPy on
    the CPU (arrays), in blocks on ``device`` otherwise (tensors there). ``workers > 1`` renders that
    many blocks at once in threads (the image enumeration, the FFTs, the noise generator and torch
    release the GIL; CPU RIRs use per-thread work arrays), with at most ``2 * workers`` blocks in flight;
    the windows are the same, only sooner.
    """
    ks = list(ks)
    blocks = _blocks(ks, device)
    if workers <= 1:
        for block in blocks:
            yield from zip(block, _rendered_block(job, device, block), strict=True)
        return
    plan = job.plan
    # corpora are not thread-safe: decode every utterance needed here, once
    decoded = {int(u): job.corpus.load(int(u)) for u in np.unique(plan.utterances[ks])} if ks else {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: dict[int, Any] = {}
        ahead = iter(range(len(blocks)))
        for i, block in enumerate(blocks):
            while len(pending) < 2 * workers and (nxt := next(ahead, None)) is not None:
                pending[nxt] = pool.submit(_rendered_block, job, device, blocks[nxt], decoded)
            yield from zip(block, pending.pop(i).result(), strict=True)


def _coords(scene: Scene, plan: _Plan, corpus) -> dict:
    counts = np.diff(plan.first_window)
    sid = np.repeat(plan.source_ids, counts)
    widx = np.concatenate([np.arange(c) for c in counts]) if counts.size else np.zeros(0, np.int64)
    speech = np.repeat(np.array([corpus.ids[int(u)] for u in plan.utterances], dtype=str), counts)
    return _label_coords(sid.astype(np.int64), widx.astype(np.int64), speech, scene.sources[sid], scene.mics,
                         scene.window, scene.room.fs)


def _label_coords(source_id: np.ndarray, window_index: np.ndarray, speech_id: np.ndarray,
                  source_position: np.ndarray, mic_position: np.ndarray, n_time: int, fs: float) -> dict:
    """A dataset's coords (a store's, :meth:`SimulatedSplit.to_dataset`'s) from its labels."""
    return {
        "window": ("window", np.arange(source_id.size)),
        "source_id": ("window", source_id),
        "window_index": ("window", window_index),
        "speech_id": ("window", speech_id),
        "source_position": (("window", "xyz"), source_position),
        "mic_position": (("mic", "xyz"), mic_position),
        "xyz": ("xyz", np.array(["x", "y", "z"])),
        "mic": ("mic", np.arange(mic_position.shape[0])),
        "time": ("time", np.arange(n_time) / fs, {"units": "s"}),
    }


def corpus_digest(corpus) -> str:
    """Short sha256 of a corpus' name (its fingerprint, where it has one), rate and utterance ids."""
    return spec_digest([getattr(corpus, "fingerprint", None) or corpus.name, corpus.fs, list(corpus.ids)])


def _hint(job: _Job, k: int) -> str:
    """What to check when source ``k``'s windows come out NaN, infinite or silent."""
    utterance = job.corpus.ids[int(job.plan.utterances[k])]
    return f"source {int(job.plan.source_ids[k])} got utterance {utterance!r}; check the speech files and RIR options"


def _identity(config: dict) -> dict:
    """What decides whether a store holds the data asked for: RIR options at their defaults count as absent (as
    stores recorded them before :func:`_checked_options` left them out), and so does the corpus' name where its
    :func:`corpus_digest` is recorded (the digest identifies the audio; a folder's name is the path it was given
    by, which another spelling of the same folder changes)."""
    options = config.get("rir_options") or {}
    if config.get("backend") in BACKENDS and is_real(config.get("t60")):
        options = without_defaults(config["backend"], options, config["t60"])
    named = {k: v for k, v in config.items() if k != "corpus" or "corpus_digest" not in config}
    return {**named, "rir_options": options}


def _mismatch(found: Any, asked: dict) -> str:
    """What to say of a store whose recorded configuration ``found`` is not the ``asked`` one (its first differing
    field named)."""
    if not isinstance(found, dict) or "convention" not in found:
        return ("was simulated before xai-loc recorded simulation conventions; delete it and run the command again "
                "to rebuild it")
    said = first_difference(_identity(found), _identity(asked))
    return (f"holds a dataset with a different configuration{f' ({said})' if said else ''}; remove it or use "
            "another data root (--data)")


def check_dataset(scene: Scene, split: str, t60: float, snr: float, *, root: str | Path | None = None,
                  n_sources: int | None = None, seed: int = 0, backend: str = "torch") -> Path:
    """The path :func:`simulate_dataset` would write, refused in one line (read only, nothing written) where a
    store there holds data of another configuration; a missing or empty folder passes (it would be simulated).

    Raises
    ------
    InputError
        If the store there was simulated with other settings or is not a dataset store.
    """
    job = _job(scene, split, t60, snr, n_sources, None, seed, backend, None)
    path = dataset_path(root or default_root(), scene, job.t60, job.snr, split, job.n_sources)
    if not path.is_dir() or not any(path.iterdir()):
        return path
    try:
        found = json.loads(open_zarr_group(path, what=DATASET.what, hint=DATASET.rebuild).attrs["config"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path} exists but is not an xai-loc {DATASET.what}; remove it or choose another "
                         "data root") from None
    if not ResumableStore(path, DATASET, job.config, identity=_identity).same_data(found):
        raise InputError(f"{path} {_mismatch(found, job.config)}")
    return path


def _record_device(out: ResumableStore, device: str) -> None:
    """Add ``device`` (its kind and GPU model) to the store's ``rendered_on`` attr (JSON list); warn when a
    resumed store was begun on another: its windows then agree with a one-device store to float32
    rounding (about 1e-5 of a response), not bit for bit."""
    from xai_loc.runtime import device_name

    here = device_name(device, index=False)
    before = json.loads(out.group.attrs.get("rendered_on", "[]"))
    if here in before:
        return
    if before:
        warnings.warn(f"{out.path}: resuming a store begun on {', '.join(before)} with {here}; its windows will "
                      "agree with a one-device store to float32 rounding, not bit for bit (its attr 'rendered_on' "
                      "lists both)", stacklevel=3)
    out.group.attrs["rendered_on"] = json.dumps([*before, here])


def check_simulation(scene: Scene, split: str, t60: float, snr: float, *, n_sources: int | None = None, corpus=None,
                     seed: int = 0, backend: str = "torch", device: str = "cpu", rir_options: dict | None = None):
    """What :func:`simulate_dataset` refuses before any work (same arguments): the device, the condition, the
    backend and its options (a backend whose package is missing); returns the planned job. A caller that starts a
    cluster first calls it before."""
    from xai_loc.runtime import resolve_device

    resolve_device(device)
    job = _job(scene, split, t60, snr, n_sources, corpus, seed, backend, rir_options)
    job.check_responses(device)
    return job


def simulate_dataset(
    scene: Scene,
    split: str,
    t60: float,
    snr: float,
    *,
    root: str | Path | None = None,
    n_sources: int | None = None,
    corpus=None,
    seed: int = 0,
    backend: str = "torch",
    device: str = "cpu",
    rir_options: dict | None = None,
    progress: bool = True,
    client: Client | None = None,
) -> Path:
    """Simulate (or finish simulating) one split of a scene under one condition.

    Parameters
    ----------
    scene
        The scene (e.g. :func:`~xai_loc.data.scene.paper_scene`).
    split
        ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
    t60, snr
        Reverberation time (s) and SNR (dB, relative to microphone 0).
    root
        Data root (default :func:`default_root`).
    n_sources
        Only a seeded spread of ``n_sources`` sources over the split (:func:`subset_ids`; a
        separate store); at least the split's size means the whole split (its store).
    corpus
        A :class:`~xai_loc.acoustics.speech.SpeechCorpus` (default: the shipped corpus).
    seed
        Seeds speech choice, noise and any diffuse tail; same seed, same bytes.
    backend, device, rir_options
        RIR backend name, torch device and extra backend options (e.g. ``{"mode": "hybrid"}``).
    progress
        Show a progress bar.
    client
        A ``distributed.Client`` (:func:`xai_loc.cluster.cluster`): sources are rendered on its
        workers and written here, the same bytes (:func:`~xai_loc.cluster.map_blocks`).

    Returns
    -------
    pathlib.Path
        The complete store. An existing complete store with the same configuration is
        returned as it is; one with a different configuration is an error.
    """
    from xai_loc.cluster import map_blocks

    job = check_simulation(scene, split, t60, snr, n_sources=n_sources, corpus=corpus, seed=seed, backend=backend,
                           device=device, rir_options=rir_options)
    final = dataset_path(root or default_root(), scene, job.t60, job.snr, split, job.n_sources)
    with ResumableStore(final, DATASET, job.config, identity=_identity, chunk=CHUNK_WINDOWS) as out:
        if out.finished(partial(_mismatch, asked=job.config)):
            return final
        job = job.planned()
        first_window = job.plan.first_window
        out.open_or_resume((int(first_window[-1]), scene.mics.shape[0], scene.window),
                           _coords(scene, job.plan, job.corpus), job.attrs())
        _record_device(out, device)
        pending = np.array(out.pending(), dtype=np.int64)  # one window per block
        todo = [int(k) for k in np.unique(np.searchsorted(first_window, pending, side="right") - 1)]

        def write(ks: tuple[int, ...], block: list[np.ndarray]) -> None:
            for k, windows in zip(ks, block, strict=True):
                first = int(first_window[k])
                mine = pending[(pending >= first) & (pending < first_window[k + 1])]
                for run in np.split(mine, np.flatnonzero(np.diff(mine) > 1) + 1):  # consecutive windows
                    out.write(int(run[0]), {"signals": windows[run[0] - first : run[-1] + 1 - first]},
                              hint=_hint(job, k))

        map_blocks(_block_windows, _blocks(todo, device), write,
                   shared=(job, device), client=client, size=len, total=len(job.ids),
                   initial=len(job.ids) - len(todo), progress=progress, desc=f"simulate {split}", unit="src")
        return out.finish()


def count_windows(scene: Scene, split: str, t60: float, snr: float, *, n_sources: int | None = None, corpus=None,
                  seed: int = 0, rir_options: dict | None = None) -> int:
    """Windows a simulation of these arguments holds (the utterances are read, nothing is rendered)."""
    job = _job(scene, split, t60, snr, n_sources, corpus, seed, "torch", rir_options).planned()
    return int(job.plan.first_window[-1])


def all_finite(signals, block: int = 1024) -> bool:
    """Whether a tensor holds no NaN or infinity, checked in blocks along axis 0 (no full-size mask;
    one host synchronisation)."""
    import torch

    ok = torch.ones((), dtype=torch.bool, device=signals.device)
    for start in range(0, signals.shape[0], block):
        ok &= torch.isfinite(signals[start : start + block]).all()
    return bool(ok)


@dataclass(frozen=True, eq=False)
class SimulatedSplit:
    """One split of a scene under one condition, simulated into memory (:func:`simulate_windows`).

    The same data as the store :func:`simulate_dataset` writes for the same arguments (its
    variables as arrays, its attrs), with the windows as a torch tensor on any device;
    :meth:`to_dataset` is that store's dataset.
    :class:`xai_loc.models.WindowSet` takes it as it is (``WindowSet(split)``) for training
    and evaluation on that device.

    Attributes
    ----------
    signals
        ``(window, mic, time)`` tensor, float32 or float16.
    source_id, window_index, speech_id, source_position, mic_position
        As the store's variables of these names (NumPy arrays).
    attrs
        The store's attrs (``config``, ``scene``, ``t60``, ``snr``, ``split``, ``convention`` ...)
        plus ``storage_dtype`` (the tensor's dtype) and ``device``.
    timings
        Seconds spent: ``plan``, ``render`` (RIRs, rendering, copies) and ``total``.
    """

    signals: Any
    source_id: np.ndarray
    window_index: np.ndarray
    speech_id: np.ndarray
    source_position: np.ndarray
    mic_position: np.ndarray
    attrs: dict
    timings: dict

    @property
    def digest(self) -> str:
        """SHA-256 of the configuration (equal to the digest of the store of the same arguments)."""
        return config_digest(self.attrs)

    @property
    def nbytes(self) -> int:
        """Bytes of the window tensor."""
        return self.signals.numel() * self.signals.element_size()

    def to_dataset(self) -> xr.Dataset:
        """The dataset of the store of the same arguments (:func:`open_signals`: its variables, coords and attrs),
        the windows copied to the host in the tensor's dtype; the in-memory attrs ``storage_dtype`` and ``device``
        left out."""
        import xarray as xr

        coords = _label_coords(self.source_id, self.window_index, self.speech_id, self.source_position,
                               self.mic_position, self.signals.shape[2], self.attrs["fs"])
        signals = (DATASET.dims, self.signals.detach().cpu().numpy(), _signal_attrs(self.attrs))
        return xr.Dataset({DATASET.variable: signals}, coords=coords,
                          attrs={k: v for k, v in self.attrs.items() if k not in ("storage_dtype", "device")})


def config_digest(attrs: Mapping[str, Any]) -> str | None:
    """SHA-256 of a dataset's recorded ``config`` (its ``attrs``; a store's, an in-memory split's), None without one:
    the digest that names the data in cards and relevance."""
    config = attrs.get("config")
    return hashlib.sha256(config.encode()).hexdigest() if isinstance(config, str) else None


def data_digest(data) -> str | None:
    """The digest naming the data of a dataset (:func:`config_digest` of its attrs) or of its ``signals`` alone (their
    ``dataset_digest`` attr, set by :func:`open_signals` and :meth:`SimulatedSplit.to_dataset`), None without one.
    xarray keeps attrs through arithmetic, so the signals' digest names the data they came from: it tells other
    data apart (:func:`~xai_loc.explain.store.write_wavs`), never that windows are unaltered."""
    digest = config_digest(data.attrs)
    if digest is None and hasattr(data, "data_vars") and DATASET.variable in data.data_vars:
        data = data[DATASET.variable]
    return digest if digest is not None else data.attrs.get("dataset_digest")


def _signal_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attrs of a dataset's ``signals``: units and the dataset's digest, so that the signals alone still name their
    data (:func:`data_digest`)."""
    digest = config_digest(attrs)
    return {"units": DATASET.units, **({"dataset_digest": digest} if digest is not None else {})}


def simulate_windows(
    scene: Scene,
    split: str,
    t60: float,
    snr: float,
    *,
    n_sources: int | None = None,
    corpus=None,
    seed: int = 0,
    backend: str = "torch",
    device: str = "cpu",
    rir_options: dict | None = None,
    out_device: str | None = None,
    dtype: str = "float32",
    workers: int = 1,
    progress: bool = True,
) -> SimulatedSplit:
    """Simulate one split of a scene under one condition straight into memory.

    Takes the arguments of :func:`simulate_dataset` (without ``root`` and ``client``; with
    ``out_device``, ``dtype`` and ``workers``) and renders every
    block of sources exactly as it does (:func:`_rendered_block`): for the same arguments the windows
    equal the store's, bit for bit in float32 on the same ``device``. Nothing is written to
    disk and zarr is not needed.

    Parameters
    ----------
    out_device
        Where the window tensor lives (default: ``device``).
    dtype
        ``"float32"`` or ``"float16"`` (half the memory; its rounding, about -66 dB of the
        signal, lies far below the sensor noise of -10 to -25 dB).
    workers
        Sources rendered at once in threads (see :func:`_render_sources`).

    Returns
    -------
    SimulatedSplit
        Windows, labels and the store's attrs.
    """
    import torch

    from xai_loc.progress import tqdm

    dtypes = {"float32": torch.float32, "float16": torch.float16}
    if dtype not in dtypes:
        raise InputError(f"dtype {dtype!r} is not allowed; use float32 or float16")
    workers = check_integer("workers", workers, minimum=1)
    from xai_loc.runtime import device_name, resolve_device

    resolve_device(device)
    target = resolve_device(out_device or device)
    started = time.monotonic()
    job = _job(scene, split, t60, snr, n_sources, corpus, seed, backend, rir_options)
    job.check_responses(device)
    job = job.planned()
    plan, planned = job.plan, time.monotonic()
    n_total, n_mics = int(plan.first_window[-1]), scene.mics.shape[0]
    name = f"in-memory {split} split ({condition_name(job.t60, job.snr)})"
    signals = torch.empty((n_total, n_mics, scene.window), dtype=dtypes[dtype], device=target)
    bar = tqdm(total=len(job.ids), disable=not progress, desc=f"simulate {split}", unit="src")
    flags = []  # of windows rendered on a device: checked at the end, with one copy to the host
    for k, windows in _render_sources(job, str(device), range(len(job.ids)), workers=workers):
        a, b = int(plan.first_window[k]), int(plan.first_window[k + 1])
        if isinstance(windows, np.ndarray):
            check_values(windows, name, a, what="samples", hint=_hint(job, k))
            windows = torch.from_numpy(windows)
        else:
            flags.append(value_flags(windows))
        signals[a:b].copy_(windows)
        bar.update(1)
    bar.close()
    if flags:
        bad, silent = (torch.cat(f).cpu().numpy() for f in zip(*flags, strict=True))
        flagged = np.flatnonzero(bad) if bad.any() else np.flatnonzero(silent)
        if flagged.size:
            k = int(np.searchsorted(plan.first_window, flagged[0], side="right") - 1)
            check_flags(bad, silent, name, 0, what="samples", hint=_hint(job, k))
    if target.type == "cuda":
        torch.cuda.synchronize(target)
    if dtype == "float16" and not all_finite(signals):
        raise InputError(f"{name}: samples overflow float16; use dtype float32")
    coords = _coords(scene, plan, job.corpus)
    done = time.monotonic()
    return SimulatedSplit(
        signals=signals, source_id=coords["source_id"][1], window_index=coords["window_index"][1],
        speech_id=coords["speech_id"][1], source_position=coords["source_position"][1],
        mic_position=coords["mic_position"][1],
        attrs={**job.attrs(), "storage_dtype": dtype, "device": str(target),
               "rendered_on": json.dumps([device_name(device, index=False)])},
        timings={"plan": planned - started, "render": done - planned, "total": done - started,
                 "sources": len(job.ids), "workers": workers},
    )


def open_signals(path: str | Path):
    """Open a complete dataset store as an ``xarray.Dataset`` (lazy).

    The store is checked first (:func:`xai_loc.data.integrity.verify_store`) and every chunk
    is checked again as it is read; a damaged, unfinished or foreign store is an
    :class:`~xai_loc.errors.InputError` naming it and how to rebuild it. The ``signals`` carry the dataset's digest
    (attr ``dataset_digest``), so that they alone still name their data.
    """
    ds = DATASET.open(path)
    ds[DATASET.variable].attrs.update(_signal_attrs(ds.attrs))
    return ds


def open_signals_array(path: str | Path):
    """The ``signals`` of a complete dataset store as a read-only zarr array (each chunk checked as it is read)."""
    return DATASET.open_array(path)
