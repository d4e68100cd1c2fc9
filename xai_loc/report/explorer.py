"""The window explorer's content: for a few windows of a relevance store, the microphone signals and
their relevance as a figure, both as audio (the ``listen`` export, per microphone) and GCC-PHAT curves
computed as the section's ``tdoa.nc`` computed them (its pairs, ``fs``, ``c``, lag range and interpolation; drawn at
:data:`DISPLAY_INTERP` points per sample at most, the resolution a page shows, and at the delays it stored, with which
they are captioned: a narrow peak between two drawn points is still drawn where its caption says).

Everything is read from stored files: the relevance store that an experiment of the section
explained (the one :func:`xai_loc.explain.store.relevance_store_path` names for the ``data`` path,
model digests, method, composite, options and target its result records) and the dataset it explains.
"""
from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Explorer", "GccSettings", "build_explorers", "explorer_data", "find_relevance_stores"]

#: Windows shown per explorer by default (each carries 16 microphones x 2 clips of audio).
DEFAULT_WINDOWS = 4


@dataclass
class Explorer:
    """One model's explorer: the relevance store it reads and its page data (JSON-able)."""

    model: str
    store: Path
    data: dict[str, Any]


def _explained(entry) -> dict[str, dict]:
    """Explained (not randomized) models of a result that records how it explained them (``method``):
    ``{name: model info with the result's method, composite, target and options}`` (empty for one that does not)."""
    attrs = entry.ds.attrs
    if not isinstance(attrs.get("method"), str):  # components, sanity ...: several methods, none stored
        return {}
    try:
        models = json.loads(attrs.get("models", "{}"))
        options = json.loads(attrs.get("explain_options", "{}"))
    except (TypeError, ValueError):
        return {}
    if not isinstance(options, dict) or not isinstance(models, dict):
        return {}
    return {name: {"model": name, **info, "method": attrs["method"], "composite": attrs.get("composite", "none"),
                   "target": attrs.get("target"), "options": options}
            for name, info in models.items()
            if isinstance(info, dict) and "model_digest" in info and "randomized_from" not in info}


def _expected_store(data: Path, info: dict[str, Any]) -> Path:
    """The relevance store :func:`~xai_loc.explain.store.relevance_store_path` names for a model's recorded
    explanation of ``data``.

    An untrained model of the recorded architecture stands in for the checkpoint: the name takes the
    recorded weight digest, the model only resolves the options of the method and composite (defaults included).
    """
    import torch

    from xai_loc.explain.attribute import Explainer
    from xai_loc.explain.store import relevance_store_path
    from xai_loc.models import build_model

    with torch.random.fork_rng(devices=[]):  # its random weights leave the global random state as it was
        model = build_model(info["model"])
    stand_in = torch.zeros(model.input_shape)  # a 'mean' reference or baseline needs one; the name does not
    explainer = Explainer(model, method=info["method"], composite=info["composite"], target=info["target"],
                          mean_input=stand_in, train_mean=np.zeros(3), **info["options"])
    explainer.attrs.update(model=info["model"], model_digest=info["model_digest"])
    return relevance_store_path(data, explainer)


def find_relevance_stores(entries) -> tuple[dict[str, Path], str]:
    """Relevance stores of the models a section's results explained: ``({model: store}, reason if none)``.

    A model's store is the one named by the data path, method, composite, options and target that one and the
    same result records (tdoa.nc does); a model without that store is left out, never shown with another store.
    """
    from xai_loc.errors import InputError

    recorded = [e for e in entries if isinstance(e.ds.attrs.get("data"), str)]
    if not recorded:
        return {}, "no result of this folder records the path of the dataset it used (tdoa.nc does)"
    explained = [(Path(e.ds.attrs["data"]), models) for e in recorded if (models := _explained(e))]
    if not explained:
        return {}, "no result of this folder records the method of its relevance (tdoa.nc does)"
    found, reasons = {}, []
    for data, models in explained:
        folder = data.with_name(data.name.removesuffix(".zarr") + ".relevance")
        if not folder.is_dir():
            reasons.append(f"the relevance stores of {data} are not at {folder}")
            continue
        missing = []
        for name, info in models.items():
            if name in found:
                continue
            try:
                store = _expected_store(data, info)
            except InputError as err:  # an architecture or option this installation does not know
                missing.append(f"{name} ({err})")
                continue
            if store.is_dir():
                found[name] = store
            else:
                missing.append(f"{name} ({store.name})")
        if missing:
            reasons.append(f"no matching relevance store in {folder} for {', '.join(missing)}")
    return found, "" if found else "; ".join(reasons)


def _wav_uri(audio: np.ndarray, fs: int) -> str:
    """A mono float clip as a 16-bit WAV data URI."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, audio, fs, subtype="PCM_16", format="WAV")
    return "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _window_figure(signals: np.ndarray, relevance: np.ndarray, fs: float, title: str) -> str:
    """Microphone signals, relevance per microphone and the relevance spectrogram, as a PNG data URI."""
    import matplotlib.pyplot as plt
    from scipy.signal import spectrogram

    from xai_loc.plots.labels import literal

    n_mics, n = signals.shape
    t = np.arange(n) / fs * 1e3
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), constrained_layout=True)
    scale = np.abs(signals).max() or 1.0
    for m in range(n_mics):
        axes[0].plot(t, m - 0.45 * signals[m] / scale, lw=0.4, color="k")  # the axis runs down: + is up
    # microphone 0 on top, as in the relevance image beside it
    axes[0].set(title="microphone signals", xlabel="time (ms)", ylabel="microphone", xlim=(t[0], t[-1]),
                ylim=(n_mics - 0.5, -0.5))
    top = np.abs(relevance).max() or 1.0
    im = axes[1].imshow(relevance, aspect="auto", cmap="RdBu_r", vmin=-top, vmax=top, interpolation="nearest",
                        extent=(t[0], t[-1], n_mics - 0.5, -0.5))
    axes[1].set(title="relevance per microphone", xlabel="time (ms)", ylabel="microphone")
    fig.colorbar(im, ax=axes[1], shrink=0.8)
    f, tt, power = spectrogram(relevance.astype(np.float64), fs=fs, nperseg=256, noverlap=192, axis=-1)
    level = 10 * np.log10(power.sum(0) + 1e-30)
    im = axes[2].pcolormesh(tt * 1e3, f / 1e3, level, shading="auto", vmin=level.max() - 80, vmax=level.max())
    axes[2].set(title="relevance spectrogram (all microphones)", xlabel="time (ms)", ylabel="frequency (kHz)")
    fig.colorbar(im, ax=axes[2], shrink=0.8, label="dB")
    fig.suptitle(literal(title))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72, metadata={"Software": "xai-loc"})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


#: Points per sample of the explorer's GCC-PHAT curves at most (besides the delays tdoa.nc stored, drawn as well):
#: tdoa.nc's 16 would make the page 1.6x larger (3455 lags per curve of the widest pair instead of 437) for curves no
#: screen resolves; the captions give the delays tdoa.nc estimated at its own resolution.
DISPLAY_INTERP = 2


def _drawn_lags(lags: np.ndarray, interp: int, delays) -> np.ndarray:
    """Which of the lags of a GCC-PHAT curve at ``interp`` points per sample the explorer draws (a boolean mask):
    :data:`DISPLAY_INTERP` per sample at most (lag 0 among them) and each of ``delays`` (samples, those tdoa.nc
    stored at that ``interp``), so that a drawn curve peaks where its caption says."""
    steps = np.round(np.asarray(lags) * interp).astype(int)
    stored = np.round(np.asarray(list(delays), dtype=np.float64) * interp).astype(int)
    return (steps % math.ceil(interp / DISPLAY_INTERP) == 0) | np.isin(steps, stored)


@dataclass
class GccSettings:
    """How the section's ``tdoa.nc`` computed GCC-PHAT: ``fs``, ``c``, ``interp``, the lag range of each pair
    (``{name: max_lag}``) and its stored ``delay`` (estimator, pair, window)."""

    fs: float
    c: float
    interp: int
    max_lag: dict[str, float]
    delay: Any

    @classmethod
    def of(cls, tdoa) -> GccSettings:
        """The settings of a ``tdoa.nc`` dataset; a :class:`~xai_loc.plots.labels.MissingAttribute` (or an
        xarray KeyError) where it lacks one."""
        from xai_loc.plots.labels import stored_attr

        return cls(float(stored_attr(tdoa, "fs")), float(stored_attr(tdoa, "c")), int(stored_attr(tdoa, "interp")),
                   {str(p): float(tdoa["max_lag"].sel(pair=p)) for p in tdoa["pair"].values}, tdoa["delay"])

    def stored_delay(self, estimator: str, pair: str, window) -> float | None:
        """The delay ``tdoa.nc`` estimated (samples, 3 decimals); None where it holds none for that window."""
        labels = self.delay.indexes
        if estimator not in labels["estimator"] or window not in labels["window"]:
            return None
        value = float(self.delay.sel(estimator=estimator, pair=pair, window=window))
        return round(value, 3) if math.isfinite(value) else None


def explorer_data(relevance, signals, settings: GccSettings, model: str, n_windows: int) -> dict[str, Any]:
    """The explorer's page data for ``n_windows`` windows spread over a relevance store of ``model``.

    Per window: a figure, the microphone signal and the relevance of every microphone as WAV
    (each clip peak-normalized, as :func:`~xai_loc.explain.store.write_wavs` does) and, per
    pair of ``settings``, the GCC-PHAT curves of both (:func:`~xai_loc.plots.inspection.gcc_curve` at tdoa.nc's
    interpolation, at the lags :func:`_drawn_lags` keeps for the delays stored for every window shown) with the true
    delay and the delays ``tdoa.nc`` stored for the signals and the model; the lags of each pair's curves once,
    under ``"lags"``.
    """
    from xai_loc.experiments.tdoa import true_tdoa
    from xai_loc.plots.inspection import gcc_curve, window_label

    fs, c = settings.fs, settings.c
    picks = np.unique(np.linspace(0, relevance.sizes["window"] - 1, min(n_windows, relevance.sizes["window"]))
                      .round().astype(int))
    mics = np.stack([relevance[f"mic_{k}"].values for k in "xyz"], -1)
    pairs = {name: tuple(int(m) for m in name.split("-")) for name in settings.max_lag}
    windows, lags, stored = [], {}, {name: set() for name in pairs}
    for w in picks:
        rel = relevance.isel(window=int(w))
        window = int(rel["window"])
        sig = np.asarray(signals["signals"].sel(window=window).values, dtype=np.float64)
        r = np.asarray(rel.values, dtype=np.float64)
        source = np.array([float(rel[f"source_{k}"]) for k in "xyz"])
        label = window_label(window, int(rel["source_id"]))
        gcc = {}
        for name, pair in pairs.items():
            truth = float(true_tdoa(source[None], mics, pair, fs, c)[0])
            lags[name], cc_sig = gcc_curve(sig, pair, settings.max_lag[name], settings.interp)
            _, cc_rel = gcc_curve(r, pair, settings.max_lag[name], settings.interp)
            delay = {"signals": settings.stored_delay("signals", name, window),
                     "relevance": settings.stored_delay(model, name, window)}
            stored[name].update(d for d in delay.values() if d is not None)
            gcc[name] = {"signals": cc_sig, "relevance": cc_rel, "truth": round(truth, 3), "delay": delay}
        windows.append({
            "label": label, "figure": _window_figure(sig, r, fs, f"{relevance.attrs.get('model', '')}: {label}"),
            "mic_audio": [_wav_uri(0.99 * s / (np.abs(s).max() or 1.0), int(fs)) for s in sig],
            "relevance_audio": [_wav_uri(0.99 * s / (np.abs(s).max() or 1.0), int(fs)) for s in r],
            "gcc": gcc,
        })
    drawn = {name: _drawn_lags(lags[name], settings.interp, stored[name]) for name in lags}
    for window in windows:
        for name, curves in window["gcc"].items():
            curves.update({key: np.round(curves[key][drawn[name]], 3).tolist() for key in ("signals", "relevance")})
    return {"fs": fs, "duration": relevance.sizes["time"] / fs, "n_mics": int(relevance.sizes["mic"]),
            "pairs": list(pairs), "lags": {k: v[drawn[k]].tolist() for k, v in lags.items()}, "windows": windows}


def build_explorers(entries, n_windows: int = DEFAULT_WINDOWS) -> tuple[list[Explorer], str]:
    """Explorers of a section's explained models, and why there are none (empty when there are).

    A relevance store that is present but damaged stops the report (one-line
    :class:`~xai_loc.errors.InputError` from :func:`~xai_loc.explain.store.open_relevance`), and so does a
    ``tdoa.nc`` lacking the GCC-PHAT settings the curves take (:class:`GccSettings`).
    """
    from xai_loc.explain.store import open_explained_signals, open_relevance
    from xai_loc.plots.redraw import unusable_result

    entries = list(entries)
    stores, reason = find_relevance_stores(entries)
    tdoa = next((e for e in entries if e.name == "tdoa"), None)
    if stores and tdoa is None:
        return [], "no tdoa.nc in this folder records the GCC-PHAT settings of the curves"
    explorers = []
    for name, store in stores.items():
        with unusable_result("tdoa", tdoa.ds, tdoa.path, "cannot be explored"):
            settings = GccSettings.of(tdoa.ds)
        relevance = open_relevance(store)
        signals = open_explained_signals(store)
        explorers.append(Explorer(name, store, explorer_data(relevance, signals, settings, name, n_windows)))
    return explorers, reason
