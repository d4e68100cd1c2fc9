"""The sanity figure: similarity to the original relevance against the cascading randomization stage."""
from __future__ import annotations

from pathlib import Path

from xai_loc.io import save_figure_pair
from xai_loc.plots.labels import literal, run_title

#: Most stage labels on one axis; deeper cascades label every k-th stage (and the last).
_MAX_TICKS = 24


def plot_sanity(results, out_stem: str | Path) -> list[Path]:
    """Draw, per model, Spearman (|R|) and Pearson (R) similarity to the original map against the stage
    (layers randomized cumulatively from the top), one line per method with its bootstrap band.

    Parameters
    ----------
    results
        A ``sanity.nc`` dataset (``similarity`` over model, method, stage, metric).
    out_stem
        Path without suffix; ``.png`` and ``.pdf`` are written.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    models, methods = list(results["model"].values), list(results["method"].values)
    stages = [literal(s) for s in results["stage"].values]
    pos = np.arange(len(stages))
    # a deep model (BAST: 52 stages) keeps a readable width: at most _MAX_TICKS labels, the last stage always
    step = -(-len(stages) // _MAX_TICKS)
    ticks = sorted({*range(0, len(stages), step), len(stages) - 1})
    fig, axes = plt.subplots(len(models), 2, figsize=(max(6.0, 0.45 * min(len(stages), _MAX_TICKS) + 4.0),
                                                      3.2 * len(models)), squeeze=False, sharey=True)
    for k, model in enumerate(models):
        for j, metric in enumerate(("spearman", "pearson")):
            ax = axes[k][j]
            for i, method in enumerate(methods):
                sel = {"model": model, "method": method, "metric": metric}
                value = results["similarity"].sel(sel).values
                ci = results["similarity_ci"].sel(sel).transpose("stage", "bound").values
                ax.plot(pos, value, marker="o", ms=3, color=f"C{i % 10}", label=literal(method))
                ax.fill_between(pos, ci[:, 0], ci[:, 1], color=f"C{i % 10}", alpha=0.15, linewidth=0)
            ax.axhline(0.0, color="0.5", linewidth=0.8)
            ax.set_xticks(ticks)
            ax.set_xticklabels([stages[t] for t in ticks], rotation=60, ha="right", fontsize=7)
            ax.set_title(literal(f"{model}: {'Spearman |R|' if metric == 'spearman' else 'Pearson R'} vs original"),
                         fontsize=9)
            ax.grid(alpha=0.3)
        axes[k][0].set_ylabel("similarity to original")
    axes[-1][0].set_xlabel("randomized down to layer (cumulative, top first)")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(run_title(results), fontsize=9)
    fig.tight_layout()
    return save_figure_pair(fig, out_stem)
