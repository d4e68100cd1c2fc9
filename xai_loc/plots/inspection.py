"""The paper's input-inspection figure: a microphone pair's windows, their relevance and GCC-PHAT.

For each chosen window (default: the best and the worst localization error among the
predictions), one row: the two microphone windows of the pair, the two relevance signals
of each relevance given, and the GCC-PHAT correlations of the signals and of each
relevance on a centred lag axis, with the true (geometric) delay marked. Drawn from stored
data only: a dataset store (:func:`xai_loc.data.open_signals`) and relevance
(:func:`xai_loc.explain.open_relevance` or :func:`xai_loc.explain.explain`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from xai_loc.errors import InputError
from xai_loc.plots.labels import literal

#: The stem of the input-inspection figure in a condition's folder, by model (no result file goes with it).
INSPECTION = "inspection_{}"

_REL_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:brown")


def _signals_array(signals: Any):
    import xarray as xr

    from xai_loc.data.store import open_signals

    if isinstance(signals, (str, os.PathLike)):
        signals = open_signals(signals)
    if isinstance(signals, xr.Dataset):
        if "signals" not in signals:
            raise InputError("the dataset has no 'signals' variable; open one with xai_loc.data.open_signals")
        return signals, signals["signals"]
    if isinstance(signals, xr.DataArray) and signals.dims == ("window", "mic", "time"):
        return signals.to_dataset(name="signals"), signals
    raise InputError(f"signals of type {type(signals).__name__} are not allowed; use a dataset store path, "
                     "a Dataset from open_signals or a (window, mic, time) DataArray")


def _vector(obj, name: str, dim: str) -> np.ndarray | None:
    """``<name>`` as (n, 3) from a Dataset variable or from ``<name>_x/y/z`` coords."""
    if name in getattr(obj, "variables", {}) and obj[name].dims[0] == dim:
        return np.asarray(obj[name].values, dtype=np.float64)
    keys = [f"{name}_{a}" for a in "xyz"]
    if all(k in obj.coords for k in keys):
        return np.stack([np.asarray(obj[k].values, dtype=np.float64) for k in keys], axis=-1)
    return None


def gcc_curve(x: np.ndarray, pair: tuple[int, int], max_lag: float, interp: int) -> tuple[np.ndarray, np.ndarray]:
    """GCC-PHAT of the rows ``pair`` of ``x`` (mic, time), each scaled to a unit peak as the TDOA probe scales
    them, on lags up to ``max_lag`` samples in ``1 / interp`` steps; the curve scaled to a unit peak (a silent
    row leaves it flat). Returns ``(lags, curve)``."""
    from xai_loc.experiments.gcc import gcc_phat
    from xai_loc.experiments.tdoa_probe import _unit_peak

    scaled = _unit_peak(np.asarray(x, dtype=np.float64)[None])[0]
    lags, cc = gcc_phat(scaled[pair[0]], scaled[pair[1]], max_lag=max_lag, interp=interp)
    peak = np.max(np.abs(cc))
    return lags, cc / peak if peak > 0 else cc


def window_label(window: int, source_id: int | None = None) -> str:
    """``window W, source S``: a window named by its label in the stores (the ``window`` coordinate, which
    ``tdoa.nc`` and ``windows=`` use), as the rows of this figure and the report's explorer caption it."""
    return f"window {window}" + ("" if source_id is None else f", source {source_id}")


def localization_error_windows(relevance, predictions: Any = None, positions: np.ndarray | None = None,
                               labels: np.ndarray | None = None) -> tuple[list, np.ndarray]:
    """Window labels of the best and worst Euclidean localization error, and all errors.

    ``predictions`` ``(window, 3)`` default to the relevance's ``prediction_x/y/z`` coords;
    ``positions`` to its ``source_x/y/z``.
    """
    if predictions is None:
        predictions = _vector(relevance, "prediction", "window")
        if predictions is None:
            raise InputError("no predictions to rank windows by; pass predictions or relevance from explain")
    predictions = np.asarray(predictions, dtype=np.float64)
    if positions is None:
        positions = _vector(relevance, "source", "window")
    if positions is None or positions.shape != predictions.shape:
        raise InputError(f"predictions of shape {predictions.shape} do not match the source positions")
    errors = np.linalg.norm(predictions - positions, axis=-1)
    if not np.isfinite(errors).any():
        raise InputError("no finite localization errors to rank windows by")
    labels = np.asarray(relevance["window"].values if labels is None else labels)
    return [labels[int(np.nanargmin(errors))], labels[int(np.nanargmax(errors))]], errors


def plot_inspection(
    signals: Any,
    relevance: Any,
    out_stem: str | Path,
    pair: tuple[int, int] = (7, 8),
    windows: list | None = None,
    predictions: Any = None,
    max_lag: float | None = None,
    interp: int = 16,
    time_range: tuple[float, float] | None = None,
) -> list[Path]:
    """Draw the input-inspection figure (PNG and PDF).

    Parameters
    ----------
    signals
        A dataset store path, a Dataset from :func:`~xai_loc.data.open_signals`, or the
        ``signals`` DataArray (window, mic, time).
    relevance
        Relevance (window, mic, time) as a DataArray, or a dict name -> DataArray (e.g.
        ``{'samplecnn': ..., 'samplecnn-randomized': ...}``); aligned on ``window``.
    out_stem
        Path without suffix; ``<out_stem>.png`` and ``.pdf`` are written.
    pair
        Microphones ``(i, j)``; delays are of ``j`` relative to ``i``.
    windows
        Window labels to show (default: best and worst localization error).
    predictions
        Predicted positions ``(window, 3)`` in the relevance's window order (default: the
        first relevance's ``prediction_x/y/z`` coords).
    max_lag
        Lag range of the GCC-PHAT panel in samples (default: the pair's largest physical
        delay plus :data:`~xai_loc.experiments.tdoa_probe.LAG_MARGIN`).
    interp
        Interpolation of the GCC-PHAT lag axis.
    time_range
        Shown part of the window, in seconds (default: all).

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    import matplotlib.pyplot as plt
    import xarray as xr

    from xai_loc.experiments.tdoa import true_tdoa
    from xai_loc.experiments.tdoa_probe import LAG_MARGIN, _unit_peak
    from xai_loc.io import save_figure_pair

    ds, sig = _signals_array(signals)
    rels = relevance if isinstance(relevance, dict) else {str(relevance.name or "relevance"): relevance}
    if not rels:
        raise InputError("no relevance given to inspect")
    for name, rel in rels.items():
        if not isinstance(rel, xr.DataArray) or rel.dims != ("window", "mic", "time"):
            raise InputError(f"relevance {name!r} must be a (window, mic, time) DataArray")
    first = next(iter(rels.values()))
    n_mics = sig.sizes["mic"]
    i, j = (int(v) for v in pair)
    if not (0 <= i < n_mics and 0 <= j < n_mics and i != j):
        raise InputError(f"pair {i}-{j} is not allowed; microphones are 0..{n_mics - 1} and must differ")
    fs = ds.attrs.get("fs", sig.attrs.get("fs", first.attrs.get("fs")))
    if fs is None:
        raise InputError("neither the signals nor the relevance record their sampling rate (attr 'fs'); "
                         "give data opened from a store")
    fs = float(fs)
    c = float(ds.attrs.get("c", 343.0))
    mics = _vector(ds, "mic_position", "mic")
    if mics is None:
        mics = _vector(first, "mic", "mic")
    labels = np.asarray(sig["window"].values)
    positions, source_labels = _vector(ds, "source_position", "window"), labels
    if positions is None:  # e.g. a bare signals DataArray: the relevance's source coords
        positions, source_labels = _vector(first, "source", "window"), np.asarray(first["window"].values)
    if mics is None or positions is None:
        raise InputError("the data needs source positions and mic positions to give true delays")
    position_of = dict(zip(source_labels.tolist(), positions, strict=True))
    if windows is None:
        rel_positions = _vector(first, "source", "window")
        windows, errors = localization_error_windows(first, predictions, rel_positions)
        err_by_label = dict(zip(np.asarray(first["window"].values).tolist(), errors.tolist(), strict=True))
        names = ["best", "worst"]
    else:
        windows = list(windows)
        err_by_label = {}
        if predictions is not None or _vector(first, "prediction", "window") is not None:
            _, errors = localization_error_windows(first, predictions, _vector(first, "source", "window"))
            err_by_label = dict(zip(np.asarray(first["window"].values).tolist(), errors.tolist(), strict=True))
        names = [""] * len(windows)
    missing = [w for w in windows if w not in set(labels.tolist())]
    if missing:
        raise InputError(f"window {missing[0]!r} is not in the data; windows are {labels[0]}..{labels[-1]}")
    for name, rel in rels.items():
        held = set(np.asarray(rel["window"].values).tolist()) if "window" in rel.coords else set(labels.tolist())
        missing = [w for w in windows if w not in held or w not in position_of]
        if missing:
            raise InputError(f"window {missing[0]!r} is not in relevance {name!r} (or has no source position)")
    if max_lag is None:
        max_lag = float(np.linalg.norm(mics[j] - mics[i]) / c * fs + LAG_MARGIN)

    time = np.asarray(sig["time"].values) if "time" in sig.coords else np.arange(sig.sizes["time"]) / fs
    shown = slice(None) if time_range is None else (time >= time_range[0]) & (time <= time_range[1])
    if time_range is not None and not shown.any():
        raise InputError(f"time_range {tuple(time_range)} s selects no sample; the windows span "
                         f"{time[0]:g}..{time[-1]:g} s")
    n_cols = 2 + len(rels)
    fig, axes = plt.subplots(len(windows), n_cols, figsize=(3.6 * n_cols, 2.9 * len(windows)), squeeze=False)
    for row, label, tag in zip(axes, windows, names, strict=True):
        k = int(np.nonzero(labels == label)[0][0])
        x = np.asarray(sig.isel(window=k).values, dtype=np.float64)
        truth = float(true_tdoa(position_of[label][None], mics, (i, j), fs, c)[0])
        ax = row[0]
        ax.plot(time[shown] * 1e3, x[i][shown], color="tab:blue", linewidth=0.6, label=f"mic {i}")
        ax.plot(time[shown] * 1e3, x[j][shown], color="tab:orange", linewidth=0.6, alpha=0.8, label=f"mic {j}")
        ax.set_title("microphone signals", fontsize=9)
        ax.set_xlabel("time [ms]")
        ax.legend(fontsize=7, loc="upper right")
        curves = {"signals": x}
        for col, (name, rel) in enumerate(rels.items(), start=1):
            r = np.asarray(rel.sel(window=label).values if "window" in rel.coords else rel[k].values, dtype=np.float64)
            curves[name] = r
            ax = row[col]
            ax.plot(time[shown] * 1e3, r[i][shown], color="tab:blue", linewidth=0.6, label=f"mic {i}")
            ax.plot(time[shown] * 1e3, r[j][shown], color="tab:orange", linewidth=0.6, alpha=0.8, label=f"mic {j}")
            ax.set_title(literal(f"relevance: {name}"), fontsize=9)
            ax.set_xlabel("time [ms]")
        ax = row[-1]
        for n, (name, values) in enumerate(curves.items()):
            scaled = _unit_peak(values[None])[0]
            lags, cc = gcc_curve(values, (i, j), max_lag, interp)
            colour = "k" if name == "signals" else _REL_COLOURS[(n - 1) % len(_REL_COLOURS)]
            if scaled[i].any() and scaled[j].any():
                best = lags[np.argmax(cc)]
                ax.plot(lags, cc, color=colour, linewidth=1.0, label=literal(f"{name} (peak {best:+.2f})"))
                ax.plot([best], [cc.max()], "o", color=colour, markersize=4)
            else:  # a silent signal: the correlation is flat, its first lag no peak (NaN in gcc.tdoa)
                ax.plot(lags, cc, color=colour, linewidth=1.0, label=literal(f"{name} (no peak)"))
        ax.axvline(truth, color="tab:green", linestyle="--", linewidth=1.0, label=f"true {truth:+.2f}")
        ax.set_title(f"GCC-PHAT, mics {i}-{j}", fontsize=9)
        ax.set_xlabel("lag [samples]")
        ax.legend(fontsize=6, loc="upper left", framealpha=0.6)
        error = err_by_label.get(label.item() if hasattr(label, "item") else label)
        source = int(ds["source_id"].values[k]) if "source_id" in ds.coords else None
        text = window_label(label, source) + (f" ({tag} error" if tag else " (error") \
            + (f" {error:.3f} m)" if error is not None else " n/a)")
        row[0].set_ylabel(text, fontsize=8)
        for ax in row:
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
    fig.tight_layout()
    return save_figure_pair(fig, out_stem)
