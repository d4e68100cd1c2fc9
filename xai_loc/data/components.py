"""The windows of a dataset store split into direct sound, early reflections, late reverberation and noise.

A store keeps only the summed microphone windows. Everything that made them is recorded in
its attributes (scene, condition, seed, RIR backend and options, corpus and the utterance of
every window), so the parts can be rendered again on demand, source by source, from the same
responses and the same noise draw (:func:`~xai_loc.acoustics.render.render_components`; on a GPU
:func:`~xai_loc.acoustics.render.render_components_batch`, there).
:func:`store_components` checks that the parts add up to the stored windows before it
returns them: a store made by another version or with another corpus is refused, never
explained with parts of different windows.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import torch

from xai_loc.acoustics.backends import BACKENDS, TRAITS, option_defaults, simulate_rirs
from xai_loc.acoustics.render import COMPONENTS, EARLY_END_S, render_components, render_components_batch
from xai_loc.acoustics.room import ShoeBox
from xai_loc.data.scene import Scene
from xai_loc.data.spec import spec_digest
from xai_loc.data.store import corpus_digest, noise_rng, renders_on_host, source_rirs
from xai_loc.errors import InputError
from xai_loc.runtime import no_tf32, resolve_device

__all__ = ["COMPONENTS", "scene_of", "store_components", "store_corpus"]


def scene_of(ds) -> Scene:
    """The scene a dataset store was simulated in, rebuilt from its attributes, which are checked against the
    digest the store recorded for them (the stored description, not the rebuilt room: a store of a room given
    as ``c=343`` or ``fs=16000.0`` before rooms kept one type for each stays readable)."""
    try:
        spec, config = json.loads(ds.attrs["scene"]), json.loads(ds.attrs["config"])
        scene = Scene(name=spec["name"], room=ShoeBox(**spec["room"]), mics=np.asarray(spec["mics"]),
                      sources=np.asarray(spec["sources"]),
                      splits={k: np.asarray(v, dtype=np.int64) for k, v in spec["splits"].items()},
                      window=spec["window"], convention=spec["convention"])
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"the dataset store does not describe its scene ({err}); re-simulate it with "
                         "'xai-loc simulate'") from None
    if spec_digest(spec) != config.get("scene_digest"):
        raise InputError("the dataset store's scene attributes do not match its digest; re-simulate it")
    return scene


def store_corpus(ds, corpus=None):
    """The speech corpus a dataset store was simulated from: ``corpus`` (default: the shipped corpus), refused
    in one line unless its digest is the one the store recorded."""
    from xai_loc.acoustics.speech import SpeechCorpus

    config = json.loads(ds.attrs["config"])
    corpus = SpeechCorpus.shipped(fs=scene_of(ds).room.fs) if corpus is None else corpus
    if corpus_digest(corpus) != config["corpus_digest"]:
        raise InputError(f"the dataset store was simulated from corpus {config['corpus']!r}, not from "
                         f"{corpus.name!r}; give its corpus")
    return corpus


#: Largest difference, relative to a window's peak, between a stored window and its components rendered again:
#: responses made on a GPU differ from the CPU's by about 1e-7 (summation order), a changed rendering by far more.
RENDER_TOLERANCE = 1e-5


def _direct_rirs(backend: str, scene: Scene, sid: int, t60: float, device: str, rir_options: dict,
                 as_tensor: bool = False):
    """The responses of the direct path only, ``(M, N)``, drawn like the store's responses (a tensor on
    ``device`` with ``as_tensor``).

    Backends without a ``max_order`` option (gpuRIR) get theirs from xai-loc's own simulator in
    the same convention: the direct arrival is one filtered impulse, the same in both.
    """
    options = {k: v for k, v in rir_options.items() if k == "t_max"}
    if "max_order" not in option_defaults(backend):
        backend = "torch"
    if "mode" in option_defaults(backend):
        options["mode"] = "ism"
    return simulate_rirs(backend, scene.room, scene.sources[sid][None], scene.mics, t60, device=device,
                         convention=scene.convention, max_order=0, as_tensor=as_tensor, **options)[0]


def store_components(ds, source_ids: Sequence[int], corpus=None, *, device: str = "cpu",
                     early_end: float = EARLY_END_S, to_host: bool = True):
    """The :data:`COMPONENTS` of the windows of ``source_ids`` in a dataset store.

    Parameters
    ----------
    ds
        An opened dataset store (:func:`~xai_loc.data.store.open_signals`), possibly a subset of
        its windows; every window of each source asked for must be present.
    source_ids
        Sources to render.
    corpus
        The speech corpus of the store (default: the shipped corpus; :func:`store_corpus`).
    device
        Where a backend that makes its responses on a device of this type
        (:attr:`~xai_loc.acoustics.backends.BackendTraits.devices`; the torch backend) makes
        them, in full float32, and renders the parts: on the CPU in NumPy; on another device
        there, with torch (:func:`~xai_loc.acoustics.render.render_components_batch`), so that
        nothing of a source but its stored windows crosses over. The parts of the other
        backends' responses are rendered in NumPy.
    early_end
        Early/late boundary after each microphone's direct arrival, in seconds.
    to_host
        Return a NumPy array; False: a tensor on ``device`` where the parts were rendered there
        (for computing on with them there), else still NumPy.

    Returns
    -------
    numpy.ndarray or torch.Tensor
        ``(4, W, M, T)`` float64 for the ``W`` windows of those sources, source by source in
        the order of ``source_ids`` (each source's windows in store order), adding up to the
        stored windows: the rounding between the store's rendering and this one (below 1e-5 of
        each window's peak, e.g. responses made on a GPU) is put into ``late``; a larger
        difference is refused. Only the stored windows of those sources are read.
    """
    kind = resolve_device(device).type
    scene = scene_of(ds)
    config = json.loads(ds.attrs["config"])
    t60, snr, seed, backend = float(ds.attrs["t60"]), float(ds.attrs["snr"]), int(config["seed"]), config["backend"]
    if backend not in BACKENDS:
        raise InputError(f"the dataset store was simulated with RIR backend {backend!r}, which is not registered "
                         f"here; allowed: {', '.join(BACKENDS)}")
    corpus = store_corpus(ds, corpus)
    rir_options = dict(config["rir_options"])
    traits = TRAITS[backend]
    device = device if kind in traits.devices else "cpu"  # a backend that picks its own device: parts in NumPy
    on_host = renders_on_host(device)
    tail = traits.diffuse_start(rir_options, t60)  # no reflection geometry: late reverberation however early
    late_start = None if tail is None else tail * scene.room.fs
    sid_of_window, window_index, speech_id = (ds[k].values for k in ("source_id", "window_index", "speech_id"))
    rows_of = [np.flatnonzero(sid_of_window == int(sid)) for sid in source_ids]
    if not rows_of:
        raise InputError("source_ids is empty; give at least one source of the dataset store")
    parts = []
    for sid, rows in zip((int(s) for s in source_ids), rows_of, strict=True):
        if rows.size == 0:
            raise InputError(f"source {sid} has no windows in this dataset store")
        windex = window_index[rows]
        speech = corpus.load(str(speech_id[rows[0]]))
        with no_tf32():  # responses made on a GPU must match the store's within RENDER_TOLERANCE
            rirs = source_rirs(scene, sid, t60, seed, backend, device, rir_options, as_tensor=not on_host)
            direct = _direct_rirs(backend, scene, sid, t60, device, rir_options, as_tensor=not on_host)
        delays = np.linalg.norm(scene.mics - scene.sources[sid], axis=1) / scene.room.c * scene.room.fs
        if on_host:
            comp = render_components(scene.convention, speech, rirs, direct, delays, snr, noise_rng(seed, sid),
                                     scene.window, scene.room.fs, early_end, late_start=late_start)
        else:
            comp = render_components_batch(scene.convention, [speech], rirs[None], direct[None], delays[None], snr,
                                           [noise_rng(seed, sid)], scene.window, scene.room.fs, early_end,
                                           late_start=late_start)[0]
        if windex.max() >= comp.shape[1]:
            raise InputError(f"source {sid} has {comp.shape[1]} windows when rendered again but the store holds "
                             f"window {int(windex.max())}; re-simulate the store with this version")
        parts.append(comp[:, windex] if on_host else comp[:, torch.from_numpy(windex).to(comp.device)])
    stored = ds["signals"].isel(window=np.concatenate(rows_of)).values  # those windows only
    if on_host:
        out = np.concatenate(parts, axis=1)
        residual = stored.astype(np.float64) - out.sum(0)
        too_far = np.any(np.abs(residual) > RENDER_TOLERANCE * np.abs(stored).max(axis=(1, 2), keepdims=True))
    else:
        out = torch.cat(parts, dim=1)
        stored = torch.from_numpy(stored).to(out.device, torch.float64)
        residual = stored - out.sum(0)
        too_far = bool((residual.abs() > RENDER_TOLERANCE * stored.abs().amax(dim=(1, 2), keepdim=True)).any())
    if too_far:
        raise InputError("the windows rendered again from the dataset store's attributes differ from the stored "
                         "ones; re-simulate the store with this version of xai-loc")
    out[COMPONENTS.index("late")] += residual
    return out.cpu().numpy() if to_host and not on_host else out
