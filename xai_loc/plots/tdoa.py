"""TDOA probe figures, drawn from stored results only (:func:`~xai_loc.experiments.tdoa_probe.write_tdoa_results`).

:func:`plot_tdoa`: % anomalies and MAE (samples) against the microphone-pair distance, one
line per estimator (signals, each model's relevance, the randomized-model relevance and the
zero-lag constant), one row per result (e.g. per condition).
:func:`plot_srp`: the mean SRP-PHAT peak error per estimator (bars), one panel per result.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from xai_loc.io import save_figure_pair
from xai_loc.plots.labels import literal, run_title, stored_attr

#: Line style per estimator kind (coord ``estimator_kind``); colours cycle over estimators.
KIND_STYLES = {
    "signals": {"color": "k", "marker": "o", "linestyle": "-", "linewidth": 1.8},
    "relevance": {"marker": "s", "linestyle": "-"},
    "randomized": {"marker": "x", "linestyle": "--"},
    "constant": {"color": "tab:gray", "marker": "^", "linestyle": ":"},
}
_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def _load(results: Any) -> list:
    """Datasets from a Dataset, a results folder / file, or a list of them."""
    from xai_loc.experiments.tdoa_probe import open_tdoa_results

    items = results if isinstance(results, (list, tuple)) else [results]
    return [open_tdoa_results(item) if isinstance(item, (str, os.PathLike)) else item for item in items]


def _styles(names: list[str], kinds: list[str]) -> dict[str, dict[str, Any]]:
    """A style per estimator: a model and its randomized copy share a colour."""
    colours: dict[str, str] = {}
    out = {}
    for name, kind in zip(names, kinds, strict=True):
        style = dict(KIND_STYLES.get(kind, {}))
        if "color" not in style:
            base = name.removesuffix("-randomized")
            colours.setdefault(base, _COLOURS[len(colours) % len(_COLOURS)])
            style["color"] = colours[base]
        out[name] = style
    return out


def _by_distance(distance: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per-pair ``values`` as one point per distinct pair distance, ascending: the mean over the pairs at
    that distance (e.g. every adjacent pair of a uniform array), NaN where none has a value; and
    whether any distance held several pairs."""
    dist, group = np.unique(np.round(distance, 9), return_inverse=True)
    sums = np.bincount(group, weights=np.nan_to_num(values), minlength=len(dist))
    counts = np.bincount(group, weights=np.isfinite(values), minlength=len(dist))
    with np.errstate(invalid="ignore", divide="ignore"):
        return dist, np.where(counts > 0, sums / counts, np.nan), len(dist) < len(distance)


def plot_tdoa(results: Any, out_stem: str | Path) -> list[Path]:
    """% anomalies and MAE against pair distance, one line per estimator (PNG and PDF).

    Parameters
    ----------
    results
        A TDOA result Dataset, its folder or ``.nc`` file, or a list of them (one row of
        panels each, e.g. one per condition).
    out_stem
        Path without suffix; ``<out_stem>.png`` and ``.pdf`` are written.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """

    import matplotlib.pyplot as plt

    datasets = _load(results)
    fig, axes = plt.subplots(len(datasets), 2, figsize=(10, 3.4 * len(datasets)), squeeze=False)
    for row, ds in zip(axes, datasets, strict=True):
        names = [str(e) for e in ds["estimator"].values]
        kinds = ([str(k) for k in ds["estimator_kind"].values] if "estimator_kind" in ds.coords
                 else ["relevance"] * len(names))
        styles = _styles(names, kinds)
        distance = ds["pair_distance"].values
        for name in names:
            dist, anomalies, pooled = _by_distance(distance, ds["anomalies_percent"].sel(estimator=name).values)
            row[0].plot(dist, anomalies, label=literal(name), **styles[name])
            row[1].plot(dist, _by_distance(distance, ds["mae_samples"].sel(estimator=name).values)[1],
                        label=literal(name), **styles[name])
        threshold = ds["threshold"].median("window").values  # per pair, NaN (a silent window) left out
        # at one distance the line is a single point, which a line style does not show: mark it
        single = {"marker": "_", "markersize": 16, "markeredgewidth": 1.5} if len(dist) == 1 else {}
        row[1].plot(dist, _by_distance(distance, threshold)[1], color="0.6", linewidth=0.8, linestyle="-.",
                    label="anomaly threshold (median)", **single)
        row[0].set_ylabel("anomalies [%]")
        row[0].set_ylim(-3, 103)
        row[1].set_ylabel("MAE of the others [samples]")
        for ax in row:
            ax.set_xlabel("microphone pair distance [m]" + (" (mean over the pairs at each)" if pooled else ""))
            ax.grid(alpha=0.3)
        row[0].set_title(run_title(ds), fontsize=9, loc="left")  # once per row, over both panels
    axes[0][1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure_pair(fig, out_stem)


def _srp_title(ds: Any, alone: bool = False) -> str:
    """The SRP windows, e.g. ``"SRP on 2 of 11 windows"``; unless ``alone`` (one result, whose
    :func:`~xai_loc.plots.labels.run_title` is the figure's title) after the condition and method, e.g.
    ``"T60 0.15 s, SNR 25 dB, lrp, SRP on 2 of 11 windows"``."""
    import xarray as xr

    head = run_title(xr.Dataset(attrs={k: v for k, v in ds.attrs.items() if k in ("t60", "snr", "method",
                                                                                   "first_rule")}))
    srp = f"SRP on {int(stored_attr(ds, 'srp_windows'))} of {ds.sizes['window']} windows"
    return f"{head}, {srp}" if head and not alone else srp


def plot_srp(results: Any, out_stem: str | Path) -> list[Path]:
    """Mean SRP-PHAT peak error per estimator: Euclidean (bars) with |x| and |y| marks (PNG and PDF), titled
    with the windows the SRP comparison ran on."""

    import matplotlib.pyplot as plt

    from xai_loc.errors import InputError

    datasets = _load(results)
    if any("srp_error" not in ds for ds in datasets):
        raise InputError("the TDOA results hold no SRP comparison; run it with srp=True")
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.4), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        names = [str(e) for e in ds["srp_estimator"].values]
        kinds = ([str(k) for k in ds["srp_estimator_kind"].values] if "srp_estimator_kind" in ds.coords
                 else ["relevance"] * len(names))
        styles = _styles(names, kinds)
        err = ds["srp_error"]
        pos = np.arange(len(names))
        ax.bar(pos, err.sel(srp_metric="euclidean").values, color=[styles[n]["color"] for n in names], alpha=0.7)
        ax.bar([0], [0], color="0.6", alpha=0.7, label="Euclidean")  # legend entry only
        ax.plot(pos, err.sel(srp_metric="x").values, "k_", markersize=14, label="|x| error")
        ax.plot(pos, err.sel(srp_metric="y").values, "k.", markersize=8, label="|y| error")
        ax.set_xticks(pos, [literal(n) for n in names], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("SRP peak error [m]")
        ax.set_title(_srp_title(ds, alone=len(datasets) == 1), fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].legend(fontsize=7)
    if len(datasets) == 1:
        fig.suptitle(run_title(datasets[0]), fontsize=9)
    fig.tight_layout()
    return save_figure_pair(fig, out_stem)
