"""Figures of the TF-CNN's duplex probe (:mod:`xai_loc.experiments.ipd_ild_probe`): relevance share per cue and band."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from xai_loc.plots.labels import literal

__all__ = ["draw_band_profile", "plot_band_profile"]


def plot_band_profile(profile, ax=None, title: str | None = None):
    """Bars of each channel's relevance share per band, with the duplex split marked.

    ``profile`` is one :func:`~xai_loc.experiments.ipd_ild_probe.band_profile` (one SNR).
    Returns the matplotlib Figure (Agg-safe; nothing is shown or saved).
    """
    import matplotlib.pyplot as plt

    from xai_loc.experiments.cues import DUPLEX_SPLIT_HZ

    if ax is None:
        fig, ax = plt.subplots(figsize=(6.0, 3.2))
    else:
        fig = ax.figure
    n = profile.sizes["band"]
    x = np.arange(n)
    width = 0.8 / profile.sizes["channel"]
    for i, channel in enumerate(profile["channel"].values):
        ax.bar(x + (i - 0.5 * (profile.sizes["channel"] - 1)) * width, profile["share"].sel(channel=channel).values,
               width, label=literal(str(channel).upper()))
    labels = [f"{lo / 1000:g}-{hi / 1000:g}"
              for lo, hi in zip(profile["band_low"].values, profile["band_high"].values, strict=True)]
    ax.set_xticks(x, labels)
    split = float(profile.attrs.get("duplex_split_hz", DUPLEX_SPLIT_HZ))
    ax.axvline(np.interp(np.log2(split), np.log2(np.maximum(profile["band_centre"].values, 1.0)), x), color="0.5",
               linestyle="--", linewidth=1, label=f"{split / 1000:g} kHz")
    ax.set_xlabel("band (kHz)")
    ax.set_ylabel("share of |relevance|")
    n = profile.attrs.get("n_examples", "?")
    ax.set_title(title or literal(f"TF-CNN relevance by cue and band ({n} examples)"))
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def draw_band_profile(profile, out_stem: str | Path) -> list[Path]:
    """One panel per SNR of a stored probe (``band_profile.nc``, dim ``snr``), saved as ``<out_stem>.png`` and
    ``.pdf``."""
    import matplotlib.pyplot as plt

    from xai_loc.io import save_figure_pair

    snrs = [float(v) for v in profile["snr"].values]
    fig, axes = plt.subplots(1, len(snrs), figsize=(5.2 * len(snrs), 3.2), squeeze=False)
    for i, (ax, snr) in enumerate(zip(axes[0], snrs, strict=True)):
        n = int(profile["n_examples"].values[i]) if "n_examples" in profile else profile.attrs.get("n_examples", "?")
        plot_band_profile(profile.isel(snr=i), ax=ax, title=literal(f"SNR {snr:g} dB ({n} examples)"))
    return save_figure_pair(fig, out_stem)
