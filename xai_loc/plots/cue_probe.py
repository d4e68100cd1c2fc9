"""Figure of the cue network's probe (:mod:`xai_loc.experiments.cue_probe`): relevance per cue and band."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from xai_loc.plots.labels import literal

__all__ = ["draw_cue_probe", "plot_cue_probe"]


def plot_cue_probe(table):
    """Figure of a :func:`~xai_loc.experiments.cue_probe.reliance_table` (``cue_reliance.nc``): relevance
    magnitude per cue and band, and per cue the attention weight, the relevance after the fusion and on the map.

    Returns the matplotlib figure (nothing is shown or saved).
    """
    import matplotlib.pyplot as plt

    by_side = "attention_by_laterality" in table
    fig, axes = plt.subplots(1, 3 if by_side else 2, figsize=(14 if by_side else 10, 3.4),
                             gridspec_kw={"width_ratios": [3, 1.3, 1.6] if by_side else [3, 1.3]})
    ax_share, ax_cue = axes[0], axes[1]
    freq = table["frequency"].values
    for cue in table["cue"].values:
        ax_share.semilogx(freq, table["abs_share"].sel(cue=cue).values, marker="o", ms=3,
                          label=literal(str(cue).upper()))
    ax_share.set(xlabel="band centre frequency (Hz)", ylabel="mean share of |relevance|", ylim=(0, None),
                 title=literal(f"LRP on the cue map ({table.attrs.get('n_examples', '?')} test scenes)"))
    ax_share.legend(frameon=False)
    cues = [literal(str(c).upper()) for c in table["cue"].values]
    x = np.arange(len(cues))
    ax_cue.bar(x - 0.27, table["attention_mean"].values, 0.27, label="attention weight")
    ax_cue.bar(x, table["fusion_share"].values, 0.27, label="relevance after fusion")
    ax_cue.bar(x + 0.27, table["cue_abs_share"].values, 0.27, label="|relevance| on the map")
    ax_cue.axhline(0.0, color="0.6", lw=0.8)
    ax_cue.set_xticks(x, cues)
    ax_cue.set(title="per cue")
    ax_cue.legend(frameon=False, fontsize=7)
    if by_side:
        ax_side, groups = axes[2], [literal(g) for g in table["laterality"].values]
        xg = np.arange(len(groups))
        for k, cue in enumerate(table["cue"].values):
            ax_side.bar(xg + (k - 1) * 0.27, table["attention_by_laterality"].sel(cue=cue).values, 0.27,
                        label=literal(str(cue).upper()))
            ax_side.plot(xg + (k - 1) * 0.27, table["cue_abs_share_by_laterality"].sel(cue=cue).values, "kx", ms=5)
        ax_side.set_xticks(xg, groups)
        ax_side.set(title="attention (bars), |relevance| (x) by target laterality", ylim=(0, 1))
        ax_side.title.set_fontsize(8)
        ax_side.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig


def draw_cue_probe(table, out_stem: str | Path) -> list[Path]:
    """:func:`plot_cue_probe` of a stored table, saved as ``<out_stem>.png`` and ``.pdf``."""
    from xai_loc.io import save_figure_pair

    return save_figure_pair(plot_cue_probe(table), out_stem)
