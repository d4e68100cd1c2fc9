"""The paper's perturbation figure: localization error against the deleted percentage."""
from __future__ import annotations

from pathlib import Path

from xai_loc.io import save_figure_pair
from xai_loc.plots.labels import deleted_values, literal, run_title

#: Line style per deletion ordering; orderings not listed get matplotlib's defaults.
STYLES = {
    "relevance": {"color": "tab:red", "marker": "o"},
    "energy": {"color": "tab:blue", "marker": "s"},
    "random": {"color": "tab:gray", "marker": "^"},
    "relevance-randomized": {"color": "tab:orange", "marker": "x", "linestyle": "--"},
}


def plot_perturbation(results, out_stem: str | Path, metric: str = "mae_mean") -> list[Path]:
    """Draw one panel per model (error in metres against percentage, one curve per ordering).

    Parameters
    ----------
    results
        Dataset with ``metric`` over (model, mode, percentage) and ``baseline_mae_mean``.
    out_stem
        Path without suffix; ``.png`` and ``.pdf`` are written.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """

    import matplotlib.pyplot as plt

    models = list(results["model"].values)
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.4), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models, strict=True):
        for mode in results["mode"].values:
            curve = results[metric].sel(model=model, mode=mode)
            ax.plot(results["percentage"].values, curve.values, label=literal(mode), **STYLES.get(str(mode), {}))
        if "baseline_mae_mean" in results and metric == "mae_mean":
            ax.axhline(float(results["baseline_mae_mean"]), color="k", linewidth=0.8, linestyle=":",
                       label="constant predictor")
        ax.set_title(literal(model))
        ax.set_xlabel(f"deleted {deleted_values(results.attrs)} [%]")
        ax.grid(alpha=0.3)
    units = results[metric].attrs.get("units")
    axes[0][0].set_ylabel("MAE per coordinate [m]" if metric == "mae_mean" else
                          f"{metric} [{units}]" if units else metric)
    fig.suptitle(run_title(results), fontsize=9)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    return save_figure_pair(fig, out_stem)


def __getattr__(name: str):
    """``perturbation_table`` moved to its experiment (:mod:`xai_loc.experiments.perturbation`); still
    importable from here, lazily, so that drawing imports no experiment code."""
    if name == "perturbation_table":
        from xai_loc.experiments.perturbation import perturbation_table

        return perturbation_table
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
