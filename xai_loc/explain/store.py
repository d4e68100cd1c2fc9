"""Relevance stores on disk, beside the data they explain, and relevance as audio.

Layout (read it with plain ``xarray.open_zarr``; :func:`open_relevance` returns the
``relevance`` DataArray with the store's attrs)::

    <data>.zarr                                     microphone windows (xai_loc.data)
    <data>.relevance/<arch>-<weights digest>-<method>[-<composite>][-<options>]-<target>.zarr
        relevance       (window, mic, time) float32, one window per chunk
        coords          window, source_id, window_index, speech_id, source_x/y/z, mic,
                        mic_x/y/z, time (s), prediction_x/y/z, attr_output_x/y/z,
                        relevance_sum, explained (see xai_loc.explain.attribute); the
                        per-window results (prediction to explained) in chunks of one batch
        attrs           provenance (model and checkpoint digests, method, composite, target
                        and their parameters, T60, SNR, fs, versions, ``data``: the
                        dataset store's path relative to the store's folder), the summary
                        (relevance_fraction, input_dependence, output_zero_input) and
                        ``config`` (JSON), which identifies what the store holds

Writing, resuming and opening are those of every store
(:class:`~xai_loc.data.resumable.ResumableStore`, one batch per block): a killed run
continues with the batches not yet written (a kill inside a write loses only the batch being
written: each batch's results have chunks of their own), and the store gets its final name only when
complete. Given a dask client, the blocks are explained on its workers and written by this
process (:func:`xai_loc.cluster.map_blocks`), the same bytes. A complete store of a
different model, method, composite, target, options or data is never mixed in or
overwritten: that is an :class:`~xai_loc.errors.InputError`; an unfinished one of other
settings (or one that cannot be resumed) is discarded and written afresh. Relevance that
comes out NaN or infinite is refused before it is written. A finished store records a
manifest of its files, checked whenever it is opened
(:mod:`xai_loc.data.integrity`).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from xai_loc.checks import is_integer, plain
from xai_loc.data.resumable import ResumableStore, StoreKind
from xai_loc.data.spec import omit_later, spec_digest
from xai_loc.errors import InputError
from xai_loc.explain.attribute import (
    AXES,
    Explainer,
    check_data_options,
    check_waveform_levels,
    dataset_inputs,
    experiment_inputs,
    input_coords,
    result_coords,
    summary_attrs,
)
from xai_loc.io import ensure_writable_dir, replace_keeping_mode, write_text_atomic

if TYPE_CHECKING:
    import xarray as xr
    from distributed import Client

__all__ = ["check_relevance_out", "explain_store", "open_explained_signals", "open_relevance", "planned_data_digest",
           "relevance_store_path", "stored_relevance", "write_wavs"]

#: Windows per zarr chunk of the relevance.
CHUNK_WINDOWS = 1
#: What a relevance store holds.
RELEVANCE = StoreKind("relevance store", "relevance", ("window", "mic", "time"), "relevance", "'xai-loc explain'",
                      values="relevance", zeros=True)
#: Config keys compared to refuse mixing, with the words used in the message.
_CONFIG_WORDS = {
    "model_digest": "model weights", "method": "method", "method_params": "method options",
    "composite": "composite", "composite_params": "composite options", "target": "target",
    "target_params": "target options", "data": "data", "mean_input": "mean window (mean_input)",
}


def _options_tag(explainer: Explainer) -> str:
    """Non-default options, short and readable when possible, else a digest."""
    from xai_loc.explain.composites import composite_defaults

    changed = {k: v for k, v in explainer.method_params.items() if explainer.method_cls.OPTIONS.get(k) != v}
    if explainer.composite is not None:
        defaults = composite_defaults(explainer.composite_name)
        changed.update({k: v for k, v in explainer.composite_params.items() if defaults.get(k) != v})
    reference = explainer.target_params.get("reference")
    if reference not in (None, "zero"):
        changed["reference"] = reference
    if not changed:
        return ""
    tag = ",".join(f"{k}={v}" for k, v in sorted(changed.items()))
    tag = re.sub(r"[^A-Za-z0-9_.,=+-]", "", tag)
    if len(tag) > 40:
        tag = spec_digest(changed, 8)
    return tag


def relevance_store_path(data_path: str | os.PathLike, explainer: Explainer) -> Path:
    """Default store of ``explainer``'s results for the data store ``data_path``.

    Named by everything that determines its content: architecture and weight digest (so
    two checkpoints of one architecture, or a model and its randomized copy, never share
    a store, and ``explain``, ``perturb`` and ``tdoa`` find each other's stores), method,
    composite, non-default options and target.
    """
    data_path = Path(data_path)
    stem = data_path.name.removesuffix(".zarr")
    parts = [f"{explainer.attrs['model']}-{explainer.attrs['model_digest'][:12]}", explainer.attrs["method"]]
    if explainer.composite is not None:
        parts.append(explainer.composite_name)
    tag = _options_tag(explainer)
    if tag:
        parts.append(tag)
    parts.append(explainer.attrs["target"])
    return data_path.with_name(f"{stem}.relevance") / ("-".join(parts) + ".zarr")


def _store_config(explainer: Explainer, ds: xr.Dataset, shape: tuple[int, int, int]) -> dict[str, Any]:
    """What a relevance store of ``explainer``'s results for the windows ``shape`` of ``ds`` records as ``config``."""
    config = {key: explainer.attrs[key] for key in ("model_digest", "method", "method_params", "composite",
                                                    "composite_params", "target", "target_params")}
    config["data"] = _data_digest(ds.attrs.get("config", ""), shape)
    return config


def _data_digest(config: str, shape: tuple[int, int, int]) -> str:
    """The identity of a dataset store's windows ``shape``: its simulation ``config`` attr and size."""
    n, n_mics, n_time = shape
    return hashlib.sha256(f"{config}|{n}|{n_mics}|{n_time}".encode()).hexdigest()[:16]


def planned_data_digest(scene, split: str, t60: float, snr: float, *, root: str | os.PathLike | None = None,
                        n_sources: int | None = None, device: str = "cpu") -> str | None:
    """The ``data`` that :func:`explain_store` records for the store :func:`~xai_loc.data.store.simulate_dataset`
    gives for these arguments, known before anything is simulated (read only).

    From the finished dataset store there, else from the simulation's ``config`` and window count
    (:func:`~xai_loc.data.store.count_windows`: utterances read, nothing rendered). None while an unfinished
    store is there (it keeps what it recorded; :func:`explain_store` compares once it is finished). A request
    :func:`~xai_loc.data.store.simulate_dataset` would refuse, or a store there of other settings, is refused.
    """
    from xai_loc.data.store import check_dataset, check_simulation, count_windows, open_signals
    from xai_loc.io import partial_paths

    job = check_simulation(scene, split, t60, snr, n_sources=n_sources, device=device)
    path = check_dataset(scene, split, t60, snr, root=root, n_sources=n_sources)
    if path.is_dir() and any(path.iterdir()):  # a finished store of these settings (check_dataset)
        ds = open_signals(path)
        return _data_digest(ds.attrs.get("config", ""), tuple(ds["signals"].shape))
    if partial_paths(path)[0].exists():
        return None
    n = count_windows(scene, split, t60, snr, n_sources=n_sources)
    return _data_digest(job.attrs()["config"], (n, scene.mics.shape[0], scene.window))


def stored_relevance(data: str | os.PathLike, explainer: Explainer):
    """The relevance array (read-only zarr) of the finished default store of ``explainer`` for the
    dataset store ``data``, or None when there is none or it holds anything else.

    The store is matched by its recorded configuration (weights, method, composite, target, their
    options and the data it explains), not by its name alone: the data store may have been
    simulated again with other settings under the same name.
    """
    from xai_loc.data.integrity import final_store_exists, open_zarr_group
    from xai_loc.data.store import open_signals

    path = relevance_store_path(data, explainer)
    if not final_store_exists(path):
        return None
    try:
        found = json.loads(open_zarr_group(path, what=RELEVANCE.what, hint=RELEVANCE.rebuild).attrs["config"])
    except (KeyError, TypeError, ValueError):
        return None
    ds = open_signals(data)
    wanted = _store_config(explainer, ds, tuple(ds["signals"].shape))
    if spec_digest(_identity(found)) != spec_digest(_identity(wanted)):
        return None
    return RELEVANCE.open_array(path)


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """What decides whether a relevance store holds the relevance asked for."""
    return {key: config.get(key) for key in _CONFIG_WORDS}


def _mismatch(config: dict[str, Any]):
    """The message about a finished store of other settings: the first of them that differs (or that it is none of
    relevance)."""
    def message(found: Any) -> str:
        if not isinstance(found, dict) or "model_digest" not in found:
            what = "a dataset store" if isinstance(found, dict) and "scene_digest" in found else "another kind of store"
            return f"is {what}, not a relevance store; results are never mixed: choose another out"
        key = next((k for k in _CONFIG_WORDS if spec_digest(found.get(k)) != spec_digest(config.get(k))), "data")
        return (f"holds relevance of other {_CONFIG_WORDS[key]} ({found.get(key)!r}, not {config.get(key)!r}); "
                "results are never mixed: remove it or choose another out")
    return message


def check_relevance_out(out: str | Path, attrs: dict[str, Any], data: str | None = None) -> None:
    """Refuse ``out``, a finished store of other relevance than an explainer's ``attrs``
    (:attr:`~xai_loc.explain.Explainer.attrs`) would write for ``data`` (:func:`planned_data_digest`; None: the data
    is compared by :func:`explain_store`), read only and before any data is simulated: another model, method,
    composite, target, options or data, or a store of another kind. A missing or empty folder passes, and so does
    one that is no zarr store with a ``config`` (:func:`explain_store` says so)."""
    from xai_loc.data.integrity import open_zarr_group

    if not Path(out).is_dir() or not any(Path(out).iterdir()):
        return
    try:
        found = json.loads(open_zarr_group(out, what=RELEVANCE.what, hint=RELEVANCE.rebuild).attrs["config"])
    except (KeyError, TypeError, ValueError):
        return
    wanted = {key: attrs.get(key) for key in _CONFIG_WORDS if key != "data"}
    if data is not None:
        wanted["data"] = data
    if not isinstance(found, dict) or spec_digest({key: found.get(key) for key in wanted}) != spec_digest(wanted):
        raise InputError(f"{out} {_mismatch(wanted)(found)}")


@dataclass(frozen=True)
class _Blocks:
    """What every block of :func:`explain_store` needs (sent once to a cluster's workers)."""

    explainer: Explainer
    signals: Any  # the dataset's windows, a zarr array
    positions: np.ndarray | None
    step: int
    n: int


def _explain_block(block: int, work: _Blocks) -> dict[str, Any]:
    """:meth:`Explainer.explain_batch` of the windows of one block (a work item, on a dask worker or here)."""
    start, stop = block * work.step, min(work.n, (block + 1) * work.step)
    truth = None if work.positions is None else work.positions[start:stop]
    with work.explainer:
        return work.explainer.explain_batch(work.signals[start:stop], truth, np.arange(start, stop))


def explain_store(
    model: nn.Module | str | os.PathLike,
    data: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    method: str = "lrp",
    target: str = "truth",
    composite: str = "paper",
    batch_size: int = 32,
    device: str = "cpu",
    progress: bool = True,
    provenance: Mapping[str, Any] | None = None,
    client: Client | None = None,
    mean_input: Any = None,
    **options: Any,
) -> Path:
    """Explain every window of a dataset store into a chunked relevance store (resumable).

    Parameters
    ----------
    model
        A localizer or an xai-loc checkpoint path (named after its file).
    data
        A dataset store written by :func:`xai_loc.data.simulate_dataset`.
    out
        The relevance store (default :func:`relevance_store_path` beside ``data``).
    method, target, composite, batch_size, device, **options
        As for :func:`~xai_loc.explain.explain` (waveform relevance only: no ``levels`` besides ``'waveform'``).
    progress
        Show a progress bar.
    provenance
        Provenance of a model given as a module that was loaded from a checkpoint (its
        ``checkpoint``, ``checkpoint_digest`` and ``model_condition``, e.g.
        :meth:`ModelSet.provenance <xai_loc.experiments.modelset.ModelSet.provenance>`): the
        store's attrs then read as if the checkpoint path had been given, without loading it again.
    client
        A ``distributed.Client`` (:func:`xai_loc.cluster.cluster`): the blocks are explained on its
        workers and written here, the same bytes (:func:`~xai_loc.cluster.map_blocks`).
    mean_input
        The window ``[mic, time]`` that ``baseline='mean'`` and ``reference='mean'`` use (default: the mean of the
        store's windows). Recorded in the store's ``config``, so a store of another mean window is never mixed in.

    Returns
    -------
    pathlib.Path
        The complete store. A complete store with the same configuration is returned as
        it is.
    """
    from xai_loc.cluster import map_blocks
    from xai_loc.data.store import open_signals, open_signals_array

    check_data_options(options)
    ds = open_signals(data)
    d = dataset_inputs(ds)
    if isinstance(model, (str, os.PathLike)):  # a checkpoint runs only on data of the rate and array it knows
        from xai_loc.models import read_card
        from xai_loc.models.evaluation import check_recording

        check_recording(read_card(model), d["fs"], d["mics"], str(data), f"checkpoint {model}")
    n, n_mics, n_time = d["signals"].shape
    inputs, options, recorded = experiment_inputs(d, {**options, "mean_input": mean_input})
    explainer = Explainer(model, target=target, method=method, composite=composite, batch_size=batch_size,
                          device=device, **inputs, **options)
    check_waveform_levels(explainer, "explain_store()", only=True)
    if provenance:
        explainer.attrs = {**provenance, **explainer.attrs}
    shape = getattr(explainer.model, "input_shape", None)
    if shape is not None and tuple(shape) != (n_mics, n_time):
        raise InputError(f"{data} has windows of {n_mics} mics x {n_time} samples; the model takes "
                         f"{shape[0]} x {shape[1]}")
    if explainer.target.needs_truth and d["positions"] is None:
        raise InputError(f"{data} has no source positions, which target {target!r} needs")
    final = Path(out) if out is not None else relevance_store_path(data, explainer)
    attrs = explainer.attrs
    config = _store_config(explainer, ds, (n, n_mics, n_time))
    if "mean_input" in recorded:  # not the windows' mean: what the relevance depends on is recorded
        config["mean_input"] = recorded["mean_input"]

    with ResumableStore(final, RELEVANCE, config, identity=_identity, chunk=CHUNK_WINDOWS) as out:
        if out.finished(_mismatch(config)):
            return final
        placeholder = {"prediction": np.full((n, 3), np.nan), "attr_output": np.full((n, 3), np.nan),
                       "relevance_sum": np.full(n, np.nan), "explained": np.full(n, np.nan)}
        coords = {**input_coords(d, d["positions"], d["mics"], d["fs"], n_mics, n_time), **result_coords(placeholder)}
        store_attrs = {**attrs, **d["attrs"], "fs": d["fs"],
                       "data": os.path.relpath(Path(data).resolve(), final.parent.resolve()),
                       "config": json.dumps(config, sort_keys=True),
                       "description": "relevance of each input sample, see xai_loc.explain.store"}
        step = max(CHUNK_WINDOWS, min(batch_size, n) // CHUNK_WINDOWS * CHUNK_WINDOWS)  # no block beyond the data
        out.open_or_resume((n, n_mics, n_time), coords, store_attrs, block=step, results=result_coords(placeholder))
        pending = out.pending()

        def write(block: int, result: dict[str, Any]) -> None:
            out.write(block, {"relevance": result["relevance"].astype(np.float32),
                              **{name: coord[1] for name, coord in result_coords(result).items()}},
                      hint=f"{method} gives no usable relevance here; try other options or another method")

        work = _Blocks(explainer, open_signals_array(data), d["positions"], step, n)
        map_blocks(_explain_block, pending, write, shared=work, client=client, size=lambda b: len(out.items(b)),
                   total=n, initial=n - sum(len(out.items(b)) for b in pending), progress=progress,
                   desc=f"explain {method}", unit="win")
        with explainer:
            zero_output = explainer.zero_output
        group = out.group
        prediction = np.stack([group[f"prediction_{a}"][:] for a in AXES], axis=-1)
        summary = summary_attrs(prediction, group["relevance_sum"][:], group["explained"][:], zero_output,
                                explainer.attrs["target"])
        if "reference_output" in explainer.attrs:
            summary["reference_output"] = explainer.attrs["reference_output"]
        return out.finish(summary)


def open_relevance(path: str | os.PathLike) -> xr.DataArray:
    """Open a complete relevance store as its ``relevance`` DataArray (lazy), attrs included.

    The store is checked first (:func:`xai_loc.data.integrity.verify_store`) and every chunk
    again as it is read; a damaged, unfinished or foreign store is an
    :class:`~xai_loc.errors.InputError` naming it and how to rebuild it.
    """
    ds = RELEVANCE.open(path)
    da = ds["relevance"]
    da.attrs = {**ds.attrs, **da.attrs}
    return da


def open_explained_signals(path: str | os.PathLike) -> xr.Dataset:
    """The dataset (``open_signals``) that the relevance store ``path`` explains.

    Refused (one line) where the dataset at the recorded path is no longer the one explained
    (simulated again with other settings or another size under the same name).
    """
    from xai_loc.data.store import open_signals

    relevance = open_relevance(path)
    if "data" not in relevance.attrs:
        raise InputError(f"{path} does not record the dataset it explains")
    # the recorded path is relative to the store's real folder (explain_store), not to a link's
    data = (Path(path).resolve().parent / relevance.attrs["data"]).resolve()
    if not data.exists():
        raise InputError(f"dataset {data}, which relevance store {path} explains, does not exist; put it back "
                         "there or explain the moved dataset again")
    ds = open_signals(data)
    try:
        recorded = json.loads(relevance.attrs["config"])["data"]
    except (KeyError, TypeError, ValueError):
        recorded = None  # a store of another writer: nothing to compare against
    if recorded is not None and recorded != _data_digest(ds.attrs.get("config", ""), tuple(ds["signals"].shape)):
        raise InputError(f"dataset {data} is not the one {path} explains: it was simulated again since (other "
                         "settings or size under the same name); explain it again")
    return ds


#: The file in a folder of :func:`write_wavs` that records which relevance its wav files come from.
WAV_MANIFEST = "listen.json"
#: Names of the wav files :func:`write_wavs` writes.
_WAV_NAME = re.compile(r"^(source-\d+|window-\d+)_(relevance|microphones)\.wav$")
#: Attrs that identify relevance without a store ``config``: model, method, composite, target and data.
_IDENTITY = ("model_digest", "method", "method_params", "composite", "composite_params", "target", "target_params",
             "data", "t60", "snr", "dataset_digest", "storage_dtype")
#: Attrs of :data:`_IDENTITY` added later, with what arrays without them mean: left out there, so the digests of
#: the wav folders of such arrays hold.
_LATER_IDENTITY = {"dataset_digest": None, "storage_dtype": None}


def _relevance_digest(relevance: xr.DataArray) -> str:
    """Digest of what a relevance array explains: its store's ``config``, else its identifying attrs."""
    attrs = relevance.attrs
    identity = attrs["config"] if "config" in attrs else json.dumps(
        omit_later({k: attrs.get(k) for k in _IDENTITY}, _LATER_IDENTITY), sort_keys=True, default=str)
    return hashlib.sha256(str(identity).encode()).hexdigest()[:16]


def _check_wav_folder(folder: Path, digest: str) -> None:
    """Refuse a folder holding wav files of :func:`write_wavs` from other relevance (or of unknown origin)."""
    if not folder.is_dir():
        return
    ours = sorted(p.name for p in folder.iterdir() if _WAV_NAME.match(p.name))
    try:
        recorded = json.loads((folder / WAV_MANIFEST).read_text(encoding="utf-8")).get("relevance")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if ours and recorded is None:
        raise InputError(f"{folder} holds wav files ({ours[0]} ...) of unknown relevance (no readable {WAV_MANIFEST}; "
                         "written by an older xai-loc?); wav files of different stores are never mixed: remove them "
                         "or choose another folder")
    if ours and recorded != digest:
        raise InputError(f"{folder} holds wav files ({ours[0]} ...) of other relevance than this one; wav files of "
                         "different stores are never mixed: remove them or choose another folder")


def _window_positions(sources: Any, n: int) -> list[Any]:
    """``sources`` as positions of ``n`` windows, or one line naming the first that is none."""
    picked = list(np.atleast_1d(np.asarray(sources, dtype=object)).ravel())
    bad = next((w for w in picked if not (is_integer(w) and 0 <= w < n)), None)
    if bad is not None:
        raise InputError(f"window {plain(bad)!r} does not exist; the relevance has no source_id coords, so sources are "
                         f"window positions: give integers in [0, {n - 1}]")
    return picked


def _check_explained(relevance: xr.DataArray, signals: xr.DataArray, digest: str | None, windows: np.ndarray) -> None:
    """Refuse signals that are not the data ``relevance`` explains, in one line: another ``dataset_digest`` (the
    signals' is ``digest``) where both record one, a window of the relevance (of ``windows``) missing there, and,
    where no digests tell, a window paired by its label that has another ``source_id`` or ``window_index``."""
    found = relevance.attrs.get("dataset_digest")
    if found is not None and digest is not None and str(found) != digest:
        raise InputError(f"the signals are of other data (dataset_digest {digest[:16]!r}) than the relevance "
                         f"explains ({str(found)[:16]!r}); give the signals it explains (open_explained_signals)")
    absent = np.setdiff1d(windows, signals["window"].values)
    if absent.size:
        raise InputError(f"window {plain(absent[0])!r} of the relevance is not among the signals' windows; give the "
                         "signals the relevance explains (open_explained_signals)")
    if found is not None and digest is not None:  # the same data: their labels agree
        return
    for name in ("source_id", "window_index"):
        if name in relevance.coords and name in signals.coords:
            ours = relevance[name].sel(window=windows).values
            theirs = signals[name].sel(window=windows).values
            bad = np.flatnonzero(ours != theirs)
            if bad.size:
                w = bad[0]
                raise InputError(f"window {plain(windows[w])!r} is {name} {plain(ours[w])!r} in the relevance but "
                                 f"{plain(theirs[w])!r} in the signals; give the signals the relevance explains "
                                 "(open_explained_signals)")


def write_wavs(
    relevance: xr.DataArray,
    signals: xr.Dataset | xr.DataArray | None,
    folder: str | os.PathLike,
    *,
    sources=None,
    mics=None,
    fs: float | None = None,
    subtype: str = "PCM_16",
) -> list[Path]:
    """Write relevance (and the microphone signals) as wav files, one pair per source.

    Each source's windows are joined in the order of their ``window_index`` into
    ``source-<id>_relevance.wav`` and ``source-<id>_microphones.wav`` (one channel per
    microphone), each normalized to a peak of 0.99 on its own, as on the paper's companion
    page. Without ``source_id`` coords every window is its own file (``window-<n>_...``). Signals of other data
    than the relevance explains are refused (another ``dataset_digest`` where both record one, else another
    ``source_id`` or ``window_index`` of a window).
    ``listen.json`` (:data:`WAV_MANIFEST`) records which relevance the files come from: a folder
    holding such files of other relevance is refused before anything is written (the same
    relevance again overwrites its own files).

    Parameters
    ----------
    relevance
        A relevance DataArray (:func:`~xai_loc.explain.explain`, :func:`open_relevance`).
    signals
        The dataset (or its ``signals``) the relevance explains, matched by ``window`` and, where both
        label them, by ``mic`` (e.g. :func:`open_explained_signals`); None writes relevance only.
    folder
        Output folder (created).
    sources
        Source ids to write (default all); without ``source_id`` coords, window positions ``0 .. n-1``.
    mics
        Microphones (channels) to write, as positions ``0 .. n - 1`` along the relevance's ``mic`` (default all).
    fs
        Sample rate (default the relevance's ``fs`` attr, else 16 kHz).
    subtype
        A soundfile subtype, e.g. 'PCM_16' or 'FLOAT'.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    import soundfile as sf
    import xarray as xr

    from xai_loc.data.store import data_digest

    folder = Path(folder)
    if mics is not None:
        relevance.xai.check_mics(mics)
    fs = int(round(fs if fs is not None else relevance.attrs.get("fs", 16000)))
    given = None if signals is None else data_digest(signals)
    if isinstance(signals, xr.Dataset):
        signals = signals["signals"]
    if signals is not None and "mic" in signals.coords and "mic" in relevance.coords:  # the same microphones
        absent = np.setdiff1d(relevance["mic"].values, signals["mic"].values)
        if absent.size:
            raise InputError(f"microphone {plain(absent[0])!r} of the relevance is not among the signals' "
                             "microphones; give the signals the relevance explains")
        signals = signals.sel(mic=relevance["mic"].values)
    if "source_id" in relevance.coords:
        ids = np.unique(relevance["source_id"].values) if sources is None else np.atleast_1d(sources)
        groups = [(f"source-{int(i):04d}", relevance.xai.source(int(i))) for i in ids]
    else:
        n = relevance.sizes["window"]
        picked = range(n) if sources is None else _window_positions(sources, n)
        groups = [(f"window-{int(w):05d}", relevance.isel(window=[int(w)])) for w in picked]
    stems = [stem for stem, _ in groups]
    twice = next((stem for i, stem in enumerate(stems) if stem in stems[:i]), None)
    if twice is not None:
        raise InputError(f"{twice.replace('-', ' ')} is asked for twice; give each once")
    if signals is not None:
        _check_explained(relevance, signals, given, np.asarray([w for _, rel in groups for w in rel["window"].values]))
    digest = _relevance_digest(relevance)
    _check_wav_folder(folder, digest)
    made = not folder.exists()
    ensure_writable_dir(folder)
    # Every file is written into a hidden staging folder first and moved in only when all are
    # written: a chunk found damaged halfway (or any other error) leaves the folder as it was.
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".wavs-", suffix=".partial"))
    try:
        names = []
        for stem, rel in groups:
            files = [(f"{stem}_relevance.wav", rel)]
            if signals is not None:
                files.append((f"{stem}_microphones.wav", signals.sel(window=rel["window"].values)))
            for name, da in files:
                buffer = io.BytesIO()  # a full disk then fails in a plain write: one line, not libsndfile's
                sf.write(buffer, da.xai.as_audio(mics=mics), fs, subtype=subtype, format="WAV")
                try:
                    (staging / name).write_bytes(buffer.getvalue())
                except OSError as err:  # named by the file asked for, not its staging copy
                    err.filename = str(folder / name)
                    raise
                names.append(name)
        write_text_atomic(folder / WAV_MANIFEST, json.dumps({"relevance": digest}) + "\n")
        for name in names:
            replace_keeping_mode(staging / name, folder / name)  # a replaced wav keeps its mode
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    staging.rmdir()
    return [folder / name for name in names]
