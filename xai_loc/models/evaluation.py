"""Localization error of a model over every window of a dataset store, beside a trivial baseline.

The paper's metric is the mean absolute error per coordinate (metres) over all windows,
averaged over x, y and z. Every report here also scores the *centroid baseline*, a constant
prediction at the centroid of the evaluated split's source positions (each source counted
once): on the paper's test split, the centre of the 0.5 x 0.5 m test square. A localizer's
numbers only mean something next to it (brief, section 2), so :class:`Evaluation` always
carries both, and the model's skill ``1 - error / baseline error``.

:func:`in_batches` and :func:`after_front_end` are the batched passes every family's trainer
and scorer share: a fixed front end runs once over the examples, the rest of the model on its cache.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from xai_loc.errors import InputError
from xai_loc.models.base import Chain, Localizer, check_positive_int
from xai_loc.runtime import resolve_device

#: Names of the three coordinates, in the order of a model's outputs.
AXES = ("x", "y", "z")
#: Variables (and their dims) a dataset store must have to be evaluated or trained on.
REQUIRED = {"signals": ("window", "mic", "time"), "source_position": ("window", "xyz"), "source_id": ("window",)}
#: Windows read per block when a store is loaded into memory.
PRELOAD_BLOCK = 256

T = TypeVar("T")
U = TypeVar("U")


def prefetched(load: Callable[[T], U], items: Iterable[T]) -> Iterator[U]:
    """Yield ``load(item)`` for each item, loading the next item in a background thread.

    Decompressing windows overlaps with the network's compute; the order is unchanged.
    """
    items = list(items)
    if not items:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, items[0])
        for item in items[1:]:
            ready = pending.result()
            pending = pool.submit(load, item)
            yield ready
        yield pending.result()


def batches(n: int, batch_size: int) -> list[np.ndarray]:
    """Consecutive index batches covering ``range(n)``."""
    return [np.arange(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def in_batches(fn: Callable[[torch.Tensor], torch.Tensor], inputs, batch_size: int) -> torch.Tensor:
    """``fn`` of ``inputs`` ``[n, ...]`` (array or tensor), batch by batch as float32 without gradient, concatenated.

    The binaural trainers run a fixed front end once this way (``fn = model.front_end``) and
    score the rest of the model on that cache (``fn = after_front_end(model)``).
    """
    with torch.inference_mode():
        return torch.cat([fn(torch.as_tensor(inputs[s:s + batch_size], dtype=torch.float32))
                          for s in range(0, len(inputs), batch_size)])


def after_front_end(model: Localizer) -> Chain:
    """The model past its front end, ``head(body(r))``, for representations ``r`` cached once."""
    return Chain(model.body, model.head)


def localization_errors(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Localization error metrics of predicted against true positions, in metres.

    Parameters
    ----------
    pred, true
        Positions ``(n, 3)`` in metres; either may also be one position ``(3,)``
        broadcast to every row of the other.

    Returns
    -------
    dict
        ``mae_x``, ``mae_y``, ``mae_z`` (mean absolute error per coordinate), ``mae``
        (their mean: the paper's metric), ``euclidean`` (mean Euclidean distance),
        ``rmse`` (root mean squared Euclidean distance) and ``mse`` (mean squared error
        per coordinate, the training loss), all floats.
    """
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    for name, value in (("predictions", pred), ("true positions", true)):
        if value.shape != (3,) and (value.ndim != 2 or value.shape[1] != 3):
            raise InputError(f"{name} of shape {value.shape} are not allowed; give (n, 3) or (3,) arrays of metres")
    try:
        diff = np.broadcast_to(pred - true, np.broadcast_shapes(pred.shape, true.shape))
    except ValueError:
        raise InputError(f"predictions {pred.shape} and true positions {true.shape} do not match; "
                         "give (n, 3) arrays of metres") from None
    if diff.ndim != 2 or diff.shape[1] != 3 or diff.shape[0] == 0:
        raise InputError(f"positions of shape {diff.shape} are not allowed; give (n, 3) arrays of metres, n >= 1")
    mae = np.abs(diff).mean(axis=0)
    squared = (diff**2).sum(axis=1)
    out = {f"mae_{axis}": float(v) for axis, v in zip(AXES, mae, strict=True)}
    out.update(mae=float(mae.mean()), euclidean=float(np.sqrt(squared).mean()),
               rmse=float(np.sqrt(squared.mean())), mse=float(squared.mean() / 3))
    return out


def skill(model: dict[str, float], baseline: dict[str, float]) -> dict[str, float | None]:
    """``1 - model / baseline`` for the MAE and the Euclidean error (None where the baseline is 0).

    1 is a perfect localizer, 0 one no better than the constant baseline, below 0 a worse one.
    """
    return {key: (1.0 - model[key] / baseline[key]) if baseline[key] > 0 else None for key in ("mae", "euclidean")}


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _check_positions(name: str, positions: np.ndarray) -> None:
    """One line naming the first window of ``positions (window, xyz)`` whose source position is not finite."""
    bad = ~np.isfinite(positions).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"{name}: window {i} has the source position {positions[i].tolist()}; "
                         "positions must be finite (metres)")


def _is_memory_split(store) -> bool:
    """Whether ``store`` is an in-memory split (:class:`xai_loc.data.store.SimulatedSplit` or alike)."""
    return isinstance(getattr(store, "signals", None), torch.Tensor) and isinstance(getattr(store, "attrs", None),
                                                                                    dict)


class WindowSet:
    """The windows of one dataset store and their labels, read by index.

    Parameters
    ----------
    store
        A store written by :func:`xai_loc.data.simulate_dataset` (a path), an
        ``xarray.Dataset`` with the same layout: ``signals (window, mic, time)``,
        ``source_position (window, xyz)``, ``source_id (window)`` and optionally
        ``window_index (window)`` and ``mic_position (mic, xyz)``; attrs ``t60``, ``snr``,
        ``split``, ``config``, ``fs``; or an
        in-memory split (:func:`xai_loc.data.simulate_windows`), whose window tensor stays on
        its device (:attr:`tensor`): training and prediction then gather batches there
        (:meth:`take`) without copies through the host.
    preload
        Hold every window in memory (read once, in blocks) instead of reading on demand;
        the paper's train and validation splits take about 9.3 and 2.3 GB.
    """

    #: The window tensor of an in-memory split (float32 or float16, on its device); None for stores.
    tensor: torch.Tensor | None = None
    #: Microphone positions ``(mic, xyz)`` in metres; None where the data records none.
    mic_position: np.ndarray | None = None

    def __init__(self, store, preload: bool = False) -> None:
        if _is_memory_split(store):
            self._init_memory(store)
            return
        import xarray as xr

        from xai_loc.data.store import config_digest, open_signals, open_signals_array

        self.path = None if isinstance(store, xr.Dataset) else Path(store)
        ds = store if self.path is None else open_signals(self.path)
        name = "the dataset" if self.path is None else str(self.path)
        for var, dims in REQUIRED.items():
            if var not in ds.variables or ds[var].dims != dims:
                raise InputError(f"{name} lacks {var} with dims {dims}; is it an xai-loc dataset store?")
        # windows of a store on disk are read with zarr directly (faster than through xarray), each chunk checked
        self._array = None if self.path is None else open_signals_array(self.path)
        self.name = name
        self.dataset = ds
        self.attrs = dict(ds.attrs)
        self.positions = np.asarray(ds["source_position"].values, dtype=np.float64)
        self.source_id = np.asarray(ds["source_id"].values, dtype=np.int64)
        n = self.source_id.size
        self.window_index = (np.asarray(ds["window_index"].values, dtype=np.int64) if "window_index" in ds.variables
                             else np.zeros(n, dtype=np.int64))
        if n == 0:
            raise InputError(f"{name} holds no windows")
        _check_positions(name, self.positions)
        self.n_windows, self.n_mics, self.n_samples = (int(v) for v in ds["signals"].shape)
        if "mic_position" in ds.variables and ds["mic_position"].dims == ("mic", "xyz"):
            self.mic_position = np.asarray(ds["mic_position"].values, dtype=np.float64)
        self.digest = config_digest(ds.attrs)
        self._memory: np.ndarray | None = None
        if preload:
            self._memory = self._read_blocks()

    def _init_memory(self, split) -> None:
        signals = split.signals
        self.path, self._array, self._memory, self.dataset = None, None, None, None
        self.attrs = dict(split.attrs)
        self.name = f"the in-memory {self.attrs.get('split') or ''} windows".replace("  ", " ")
        if signals.ndim != 3 or not signals.is_floating_point():
            raise InputError(f"{self.name} have shape {tuple(signals.shape)} and dtype {signals.dtype}; "
                             "give float windows (window, mic, time)")
        self.tensor = signals
        self.positions = np.asarray(split.source_position, dtype=np.float64)
        self.source_id = np.asarray(split.source_id, dtype=np.int64)
        n = self.source_id.size
        window_index = getattr(split, "window_index", None)
        self.window_index = (np.zeros(n, dtype=np.int64) if window_index is None
                             else np.asarray(window_index, dtype=np.int64))
        if n == 0:
            raise InputError(f"{self.name} hold no windows")
        if signals.shape[0] != n or self.positions.shape != (n, 3) or self.window_index.shape != (n,):
            raise InputError(f"{self.name}: {signals.shape[0]} windows but {n} source ids, positions of shape "
                             f"{self.positions.shape} and {self.window_index.size} window indices")
        _check_positions(self.name, self.positions)
        from xai_loc.data.store import all_finite, config_digest

        if not all_finite(signals):  # one check (and host sync) for the whole tensor
            raise InputError(f"{self.name} hold NaN or infinite samples")
        self.n_windows, self.n_mics, self.n_samples = (int(v) for v in signals.shape)
        if getattr(split, "mic_position", None) is not None:
            self.mic_position = np.asarray(split.mic_position, dtype=np.float64)
        self.digest = config_digest(split.attrs)
        self._positions_tensor = torch.as_tensor(self.positions, device=signals.device).float()

    def take(self, idx: torch.Tensor, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows (float32) and true positions (float32) ``idx`` of an in-memory split, gathered on its device.

        ``idx``: an int64 tensor on the windows' device; no host synchronisation happens here.
        """
        if self.tensor is None:
            raise InputError(f"{self.name} are not held as a tensor; use read()")
        x = self.tensor.index_select(0, idx).to(device=device, dtype=torch.float32)
        return x, self._positions_tensor.index_select(0, idx).to(device)

    def _read_blocks(self) -> np.ndarray:
        return np.concatenate(list(prefetched(self.read, batches(self.n_windows, PRELOAD_BLOCK))))

    def read(self, idx: np.ndarray) -> np.ndarray:
        """Windows ``idx`` (sorted for speed) as a float32 array ``(len(idx), n_mics, n_samples)``.

        Raises
        ------
        InputError
            If a window holds NaN or infinite samples.
        """
        idx = np.asarray(idx, dtype=np.int64)
        if self.tensor is not None:
            index = torch.as_tensor(idx, device=self.tensor.device)
            return self.tensor.index_select(0, index).float().cpu().numpy()
        if self._memory is not None:
            out = self._memory[idx]
        elif self._array is not None:
            out = np.asarray(self._array.oindex[idx], dtype=np.float32)
        else:
            out = np.asarray(self.dataset["signals"].isel(window=idx).values, dtype=np.float32)
        bad = ~np.isfinite(out).all(axis=(1, 2))
        if bad.any():
            raise InputError(f"{self.name}: window {int(idx[np.argmax(bad)])} holds NaN or infinite samples")
        return out

    @property
    def identity(self) -> str:
        """What pins these windows in a training run's identity: :attr:`digest`, or for windows without a
        config, ``content:`` and the SHA-256 of their shape, positions, source ids, window indices and
        t60/snr/split attrs (:func:`~xai_loc.models.trainer.content_digest`; the signals are not read)."""
        from xai_loc.models.trainer import content_digest

        if self.digest is not None:
            return self.digest
        return content_digest((self.n_windows, self.n_mics, self.n_samples), positions=self.positions,
                              source_id=self.source_id, window_index=self.window_index,
                              **{key: str(self.attrs.get(key)) for key in ("t60", "snr", "split")})

    @property
    def n_sources(self) -> int:
        """Number of distinct sources."""
        return int(np.unique(self.source_id).size)

    @property
    def condition(self) -> dict[str, float | None]:
        """``{'t60': s, 'snr': dB}`` from the store's attrs (None where absent)."""
        return {key: _optional_float(self.attrs.get(key)) for key in ("t60", "snr")}

    def windows_by_source(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Window indices grouped by source: ``(order, starts, counts)``.

        The windows of the k-th distinct source (ascending id) are
        ``order[starts[k] : starts[k] + counts[k]]``.
        """
        order = np.argsort(self.source_id, kind="stable")
        _, starts, counts = np.unique(self.source_id[order], return_index=True, return_counts=True)
        return order, starts, counts

    def describe(self) -> dict[str, Any]:
        """JSON-able provenance: path, config digest, split, condition, simulation convention, sample rate
        ``fs`` (Hz) and ``mic_position`` (metres; each None where the data records none), the devices
        that rendered it (None for stores older than that record) and sizes (in-memory splits add
        ``in_memory``, ``storage_dtype``, ``device`` and their ``seed``)."""
        rendered_on = self.attrs.get("rendered_on")
        out = {
            "path": str(self.path) if self.path else None, "digest": self.digest,
            "split": self.attrs.get("split"), **self.condition,
            "convention": self.attrs.get("convention"), "fs": _optional_float(self.attrs.get("fs")),
            "mic_position": None if self.mic_position is None else self.mic_position.tolist(),
            "rendered_on": None if rendered_on is None else json.loads(rendered_on),
            "n_sources": self.n_sources, "n_windows": self.n_windows,
            "n_mics": self.n_mics, "n_samples": self.n_samples,
        }
        if self.tensor is not None:
            out.update(in_memory=True, storage_dtype=str(self.tensor.dtype).removeprefix("torch."),
                       device=str(self.tensor.device), seed=self.attrs.get("seed"))
        return out

    def check_model(self, model: nn.Module) -> None:
        """Raise :class:`InputError` if ``model.input_shape`` (where it has one) differs from the windows."""
        check_window_shape(model, (self.n_mics, self.n_samples), str(self.name))

    def check_card(self, card: dict[str, Any], name: str) -> None:
        """Raise :class:`InputError` if the windows' sample rate or microphone array is not that of the training
        data of checkpoint ``name`` (its ``card``; :func:`check_recording`)."""
        check_recording(card, self.attrs.get("fs"), self.mic_position, str(self.name), name)


def check_window_shape(model: nn.Module, shape: tuple[int, int], where: str) -> None:
    """Raise :class:`InputError` if ``model.input_shape`` (where it has one) differs from the windows
    ``shape`` (microphones, samples) of ``where`` (a store, a scene: named in the message)."""
    expected = getattr(model, "input_shape", None)
    if expected is not None and tuple(expected) != tuple(shape):
        raise InputError(
            f"{getattr(model, 'arch_name', '') or type(model).__name__} expects windows of {expected[0]} mics x "
            f"{expected[1]} samples but {where} has {shape[0]} mics x {shape[1]} samples"
        )


#: Largest distance (metres, per coordinate) between a microphone's position and the one a model was trained with.
MIC_TOLERANCE = 1e-6


def moved_microphone(mics: np.ndarray, other: np.ndarray) -> int | None:
    """The first microphone of ``mics`` ``(mic, xyz)`` more than :data:`MIC_TOLERANCE` from its place in ``other``
    (of the same shape), or None."""
    moved = np.abs(np.asarray(mics, dtype=np.float64) - np.asarray(other, dtype=np.float64)).max(axis=1) > MIC_TOLERANCE
    return int(np.argmax(moved)) if moved.any() else None


def check_recording(card: dict[str, Any], fs: float | None, mics: np.ndarray | None, where: str,
                    name: str = "the model") -> None:
    """Raise :class:`InputError` if data of ``where`` (a store, a scene: named in the message) sampled at ``fs``
    (Hz) by microphones at ``mics`` ``(mic, xyz)`` (metres) are not what the multichannel checkpoint ``name`` was
    trained on (its ``card``: :func:`~xai_loc.models.zoo.data_recording`); None: not recorded, not checked.

    A model of raw windows runs on data of another rate or array without complaint and returns wrong positions.
    """
    from xai_loc.models.zoo import data_recording

    trained = data_recording(card)
    if trained is None:
        return
    trained_fs, trained_mics = trained
    if fs is not None and trained_fs is not None and float(fs) != trained_fs:
        raise InputError(f"{name} was trained on data sampled at {trained_fs:g} Hz but {where} is sampled at "
                         f"{float(fs):g} Hz; use data at {trained_fs:g} Hz")
    if mics is None or trained_mics is None:
        return
    mics = np.asarray(mics, dtype=np.float64)
    if mics.shape != trained_mics.shape:
        raise InputError(f"{name} was trained with {len(trained_mics)} microphones but {where} has "
                         f"{len(mics)}; use the array it was trained with")
    i = moved_microphone(mics, trained_mics)
    if i is not None:
        at = ", ".join(f"{v:g}" for v in trained_mics[i])
        raise InputError(f"{name} was trained with microphone {i} at ({at}) m but {where} has it at "
                         f"({', '.join(f'{v:g}' for v in mics[i])}) m; use the array it was trained with")


def as_window_set(store, preload: bool = False) -> WindowSet:
    """``store`` itself if it is a :class:`WindowSet`, else a :class:`WindowSet` of it."""
    return store if isinstance(store, WindowSet) else WindowSet(store, preload)


def predict(model: nn.Module, windows, batch_size: int = 100, device: str | torch.device = "cpu",
            progress: bool = False, desc: str = "predict") -> np.ndarray:
    """Model outputs for every window, in window order, as float64 ``(n_windows, 3)``.

    ``windows`` is a :class:`WindowSet`, a store path or an ``xarray.Dataset``. The model
    is run in eval mode on ``device`` (it is moved there) and left in the mode it was in, on
    windows in the dtype of its parameters (float32 for a model without any).
    """
    from xai_loc.progress import tqdm

    batch_size = check_positive_int("batch_size", batch_size)
    device = device if isinstance(device, torch.device) else resolve_device(str(device))
    windows = as_window_set(windows)
    windows.check_model(model)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    was_training = model.training
    model.to(device).eval()
    out = []
    parts = batches(windows.n_windows, batch_size)
    try:
        with torch.inference_mode():
            if windows.tensor is not None:  # slices on the windows' device, one copy to the host at the end
                for idx in tqdm(parts, disable=not progress, desc=desc, unit="batch", leave=False):
                    x = windows.tensor[int(idx[0]) : int(idx[-1]) + 1].to(device=device, dtype=dtype)
                    out.append(model(x).double())
                out = [torch.cat(out).cpu().numpy()]
            else:
                for x in tqdm(prefetched(windows.read, parts), total=len(parts), disable=not progress, desc=desc,
                              unit="batch", leave=False):
                    out.append(model(torch.from_numpy(x).to(device=device, dtype=dtype)).double().cpu().numpy())
    finally:
        model.train(was_training)
    pred = np.concatenate(out).astype(np.float64)
    if pred.shape != (windows.n_windows, 3):
        raise InputError(f"the model returned {pred.shape[1:]} per window; localizers return (x, y, z)")
    return pred


@dataclass(frozen=True, eq=False)
class Evaluation:
    """A model's predictions for every window of a split, scored beside the centroid baseline.

    Parameters
    ----------
    predictions
        Model outputs ``(window, 3)`` in metres.
    targets
        True source positions ``(window, 3)`` in metres.
    source_id
        Source of each window.
    window_index
        Position of each window within its source's signal.
    attrs
        Provenance (model, checkpoint, dataset, condition, split ...); JSON-able values.
    """

    predictions: np.ndarray
    targets: np.ndarray
    source_id: np.ndarray
    window_index: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.source_id)
        for name in ("predictions", "targets"):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.shape != (n, 3):
                raise InputError(f"{name} of shape {value.shape} do not fit {n} windows; give ({n}, 3) metres")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "source_id", np.asarray(self.source_id, dtype=np.int64))
        object.__setattr__(self, "window_index", np.asarray(self.window_index, dtype=np.int64))

    @property
    def sources(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distinct source ids (ascending), their positions ``(source, 3)`` and window counts."""
        ids, first, counts = np.unique(self.source_id, return_index=True, return_counts=True)
        return ids, self.targets[first], counts

    @property
    def baseline_position(self) -> np.ndarray:
        """The centroid of the scored sources' positions (the split's, or the ``--sources`` subset's), each source
        counted once."""
        return self.sources[1].mean(axis=0)

    @property
    def metrics(self) -> dict[str, float]:
        """The model's :func:`localization_errors` over every window."""
        return localization_errors(self.predictions, self.targets)

    @property
    def baseline_metrics(self) -> dict[str, float]:
        """The same metrics for the constant prediction :attr:`baseline_position`."""
        return localization_errors(self.baseline_position, self.targets)

    def per_source(self) -> dict[str, np.ndarray]:
        """Per-source table: ``source_id``, ``position (source, 3)``, ``n_windows``,
        ``mae (source, 3)``, ``euclidean`` and ``baseline_euclidean`` (metres)."""
        ids, positions, counts = self.sources
        row = np.searchsorted(ids, self.source_id)
        abs_err = np.abs(self.predictions - self.targets)
        mae = np.stack([np.bincount(row, abs_err[:, k], ids.size) for k in range(3)], axis=1) / counts[:, None]
        euclid = np.bincount(row, np.linalg.norm(self.predictions - self.targets, axis=1), ids.size) / counts
        return {"source_id": ids, "position": positions, "n_windows": counts, "mae": mae, "euclidean": euclid,
                "baseline_euclidean": np.linalg.norm(positions - self.baseline_position, axis=1)}

    def summary(self) -> dict[str, Any]:
        """Window and source counts, model metrics, baseline position and metrics, skill (JSON-able)."""
        model, base = self.metrics, self.baseline_metrics
        return {
            "n_windows": int(self.source_id.size), "n_sources": int(self.sources[0].size), "metrics": model,
            "baseline": {"kind": "centroid of the scored sources' positions (fitted on their own labels)",
                         "position": self.baseline_position.tolist(), "metrics": base},
            "skill": skill(model, base),
        }

    def to_dict(self, per_source: bool = True) -> dict[str, Any]:
        """:meth:`summary` plus provenance attrs and (optionally) the per-source table, JSON-able."""
        out = {**self.summary(), "attrs": self.attrs}
        if per_source:
            table = self.per_source()
            out["per_source"] = [
                {"source_id": int(sid), "position": pos.tolist(), "n_windows": int(n),
                 **{f"mae_{a}": float(v) for a, v in zip(AXES, mae, strict=True)},
                 "mae": float(mae.mean()), "euclidean": float(eu), "baseline_euclidean": float(be)}
                for sid, pos, n, mae, eu, be in zip(table["source_id"], table["position"], table["n_windows"],
                                                     table["mae"], table["euclidean"], table["baseline_euclidean"],
                                                     strict=True)
            ]
        return out

    def to_text(self, max_sources: int | None = 10) -> str:
        """A readable report: metrics beside the baseline, skill, and the worst sources.

        Parameters
        ----------
        max_sources
            How many sources (largest Euclidean error first) the table lists; None: all.
        """
        a, s = self.attrs, self.summary()
        cond = ", ".join(f"{label} {a[key]:g} {unit}" for key, label, unit in
                         (("t60", "T60", "s"), ("snr", "SNR", "dB")) if a.get(key) is not None)
        cond = f" ({cond})" if cond else ""
        lines = [
            f"Localization on {a.get('split') or 'the dataset'}{cond}: {s['n_sources']} sources, "
            f"{s['n_windows']} windows",
            f"model: {a.get('model', '?')}" + (f"  checkpoint: {a['checkpoint']}" if a.get("checkpoint") else ""),
            "",
            f"{'metres':22s}{'MAE x':>8s}{'MAE y':>8s}{'MAE z':>8s}{'MAE':>8s}{'Euclid':>8s}",
        ]
        for label, m in (("model", s["metrics"]), ("baseline (centroid)", s["baseline"]["metrics"])):
            lines.append(f"{label:22s}" + "".join(f"{m[k]:8.4f}" for k in ("mae_x", "mae_y", "mae_z", "mae",
                                                                            "euclidean")))
        sk = s["skill"]
        lines.append(f"{'skill vs baseline':22s}{'':24s}" + "".join(
            f"{v:8.3f}" if v is not None else f"{'-':>8s}" for v in (sk["mae"], sk["euclidean"])))
        centre = ", ".join(f"{v:.3f}" for v in s["baseline"]["position"])
        lines += [f"baseline: every window predicted at ({centre}) m, the centroid of the {s['n_sources']} sources "
                  "scored here (fitted on their own labels); skill = 1 - model / baseline", ""]
        table = self.per_source()
        order = np.argsort(-table["euclidean"], kind="stable")
        shown = order if max_sources is None else order[:max_sources]
        title = "per source" if len(shown) == len(order) else f"per source, worst {len(shown)} of {len(order)}"
        lines.append(f"{title} (metres):")
        lines.append(f"{'source':>7s}{'x':>7s}{'y':>7s}{'z':>7s}{'windows':>8s}{'MAE x':>8s}{'MAE y':>8s}"
                     f"{'MAE z':>8s}{'Euclid':>8s}{'base':>8s}")
        for i in shown:
            pos, mae = table["position"][i], table["mae"][i]
            lines.append(f"{table['source_id'][i]:7d}" + "".join(f"{v:7.3f}" for v in pos)
                         + f"{table['n_windows'][i]:8d}" + "".join(f"{v:8.4f}" for v in mae)
                         + f"{table['euclidean'][i]:8.4f}{table['baseline_euclidean'][i]:8.4f}")
        return "\n".join(lines)

    def to_dataset(self):
        """The evaluation as an ``xarray.Dataset`` with dims ``window``, ``xyz`` and ``source``.

        Variables: ``prediction``, ``source_position``, ``abs_error`` (window, xyz),
        ``euclidean_error`` (window); ``source_mae`` (source, xyz), ``source_euclidean_error``,
        ``source_n_windows``, ``source_baseline_euclidean_error`` (source);
        ``baseline_position`` (xyz). Attrs: provenance plus ``metrics`` (the JSON summary).
        """
        import xarray as xr

        from xai_loc import __version__

        table = self.per_source()
        diff = self.predictions - self.targets
        xyz = ("xyz", list(AXES))
        attrs = {key: value if isinstance(value, str | int | float) else json.dumps(value)
                 for key, value in self.attrs.items() if value is not None}
        attrs.update(metrics=json.dumps(self.summary()), xai_loc_version=__version__,
                     description="localization errors in metres, see xai_loc.models.evaluation")
        return xr.Dataset(
            {
                "prediction": (("window", "xyz"), self.predictions, {"units": "m"}),
                "source_position": (("window", "xyz"), self.targets, {"units": "m"}),
                "abs_error": (("window", "xyz"), np.abs(diff), {"units": "m"}),
                "euclidean_error": ("window", np.linalg.norm(diff, axis=1), {"units": "m"}),
                "source_mae": (("source", "xyz"), table["mae"], {"units": "m"}),
                "source_euclidean_error": ("source", table["euclidean"], {"units": "m"}),
                "source_baseline_euclidean_error": ("source", table["baseline_euclidean"], {"units": "m"}),
                "source_n_windows": ("source", table["n_windows"]),
                "source_location": (("source", "xyz"), table["position"], {"units": "m"}),
                "baseline_position": ("xyz", self.baseline_position, {"units": "m"}),
            },
            coords={"window": np.arange(self.source_id.size), "source_id": ("window", self.source_id),
                    "window_index": ("window", self.window_index), "source": table["source_id"], "xyz": xyz},
            attrs=attrs,
        )


def model_attrs(model: nn.Module) -> dict[str, Any]:
    """Provenance of a model: registered architecture name (or class name) and constructor config."""
    return {"model": getattr(model, "arch_name", "") or type(model).__name__,
            "model_config": dict(getattr(model, "config", {}) or {})}


def evaluate(model: nn.Module, store, batch_size: int = 100, device: str | torch.device = "cpu",
             progress: bool = False, attrs: dict[str, Any] | None = None) -> Evaluation:
    """Score a localizer on every window of a dataset store, beside the centroid baseline.

    Parameters
    ----------
    model
        A localizer (moved to ``device``, run in eval mode).
    store
        Store path, ``xarray.Dataset`` or :class:`WindowSet`.
    batch_size
        Windows per forward pass.
    device
        'cpu', 'cuda' or 'cuda:N'.
    progress
        Show a progress bar.
    attrs
        Extra provenance recorded in the result (e.g. the checkpoint).

    Returns
    -------
    Evaluation

    Raises
    ------
    InputError
        If the model predicts NaN or infinity for a window (naming the first; ``attrs['checkpoint']`` names the
        model where given).
    """
    windows = as_window_set(store)
    pred = predict(model, windows, batch_size, device, progress, desc="evaluate")
    bad = ~np.isfinite(pred).all(axis=1)
    if bad.any():  # NaN metrics would be reported as scores (and written as invalid JSON)
        i = int(np.argmax(bad))
        who = f"checkpoint {attrs['checkpoint']}" if (attrs or {}).get("checkpoint") else model_attrs(model)["model"]
        raise InputError(f"{who} predicts {pred[i].tolist()} for window {i} (source {windows.source_id[i]}) of "
                         f"{windows.name}; a localizer's outputs must be finite: check its weights")
    info = windows.describe()
    provenance = {
        **model_attrs(model), "dataset": info["path"], "dataset_digest": info["digest"], "split": info["split"],
        "t60": info["t60"], "snr": info["snr"], "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(attrs or {}),
    }
    return Evaluation(pred, windows.positions, windows.source_id, windows.window_index, provenance)


def evaluate_checkpoint(checkpoint: str | Path, store, batch_size: int = 100, device: str = "cpu",
                        progress: bool = False, model: nn.Module | None = None) -> Evaluation:
    """:func:`evaluate` an xai-loc checkpoint; its file name, SHA-256 and condition join the provenance.

    ``model``: the checkpoint already loaded (it is then not loaded again). Data of another sample rate or
    microphone array than the checkpoint's training data are refused (:meth:`WindowSet.check_card`).
    """
    from xai_loc.models.checkpoint import file_digest, load_model, read_card

    card = read_card(checkpoint)
    windows = as_window_set(store)
    windows.check_card(card, f"checkpoint {checkpoint}")
    model = load_model(checkpoint, device=device) if model is None else model.to(device).eval()
    attrs = {"checkpoint": Path(checkpoint).name, "checkpoint_sha256": file_digest(checkpoint),
             "model_condition": card["condition"]}
    return evaluate(model, windows, batch_size, device, progress, attrs)
