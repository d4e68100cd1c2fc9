"""The component figure: share of |relevance| on direct sound, early and late reverberation and noise."""
from __future__ import annotations

from pathlib import Path

from xai_loc.io import save_figure_pair
from xai_loc.plots.labels import literal, run_title


def plot_components(results, out_stem: str | Path) -> list[Path]:
    """Draw, per model and split, grouped bars of each method's share of |relevance| per component
    (hatched: the randomized model's), beside the split's model-free reference, with bootstrap intervals.

    Parameters
    ----------
    results
        A ``components.nc`` dataset (``share`` over model, method, ordering, split, component).
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
    splits, comps = list(results["split"].values), [str(c) for c in results["component"].values]
    orderings = list(results["ordering"].values)
    bars = [(m, o) for m in methods for o in orderings]
    width = 0.8 / (len(bars) + 1)
    pos = np.arange(len(comps))
    fig, axes = plt.subplots(len(models), len(splits), figsize=(3.2 + 1.1 * len(comps) * len(splits),
                                                                3.2 * len(models)), squeeze=False, sharey=True)
    for k, model in enumerate(models):
        for j, split in enumerate(splits):
            ax = axes[k][j]
            for b, (method, ordering) in enumerate(bars):
                sel = {"model": model, "method": method, "ordering": ordering, "split": split}
                value = results["share"].sel(sel).transpose("component").values
                ci = results["share_ci"].sel(sel).transpose("bound", "component").values
                i = methods.index(method)
                ax.bar(pos + b * width, value, width, yerr=np.abs(ci - value), capsize=1.5,
                       color=f"C{i % 10}", hatch="//" if ordering != "relevance" else None,
                       alpha=0.5 if ordering != "relevance" else 0.9,
                       label=literal(method if ordering == "relevance" else f"{method} (randomized)"),
                       error_kw={"lw": 0.6})
            ref = results["reference_share"].sel(split=split).transpose("component").values
            ref_ci = results["reference_share_ci"].sel(split=split).transpose("bound", "component").values
            ax.bar(pos + len(bars) * width, ref, width, yerr=np.abs(ref_ci - ref), capsize=1.5,
                   color="0.6", label="model-free reference", error_kw={"lw": 0.6})
            ax.set_xticks(pos + 0.4 - width / 2)
            ax.set_xticklabels([literal(c) for c in comps])
            ax.set_title(literal(f"{model}: {split} split"), fontsize=9)
            ax.grid(alpha=0.3, axis="y")
        axes[k][0].set_ylabel("share of |relevance|")
    axes[0][-1].legend(fontsize=6)
    fig.suptitle(run_title(results), fontsize=9)
    fig.tight_layout()
    return save_figure_pair(fig, out_stem)
