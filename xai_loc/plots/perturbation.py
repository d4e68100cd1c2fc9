"""The paper's perturbation figure: localization error against the deleted percentage."""
from __future__ import annotations

from pathlib import Path

from xai_loc.io import save_figure_atomic

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
            ax.plot(results["percentage"].values, curve.values, label=str(mode), **STYLES.get(str(mode), {}))
        if "baseline_mae_mean" in results and metric == "mae_mean":
            ax.axhline(float(results["baseline_mae_mean"]), color="k", linewidth=0.8, linestyle=":",
                       label="constant predictor")
        ax.set_title(str(model))
        ax.set_xlabel("deleted samples [%]")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("MAE per coordinate [m]" if metric == "mae_mean" else metric)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    out_stem = Path(out_stem)
    return [save_figure_atomic(fig, out_stem.with_suffix(suffix), dpi=150, close=suffix == ".pdf")
            for suffix in (".png", ".pdf")]


def perturbation_table(results) -> str:
    """Markdown: per model, the error (MAE per coordinate, m) per ordering and percentage, and AOPC."""
    pcts = [f"{p:g} %" for p in results["percentage"].values]
    lines = []
    for model in results["model"].values:
        lines += [f"### {model}", "", "| ordering | " + " | ".join(pcts) + " | AOPC |",
                  "|---" * (len(pcts) + 2) + "|"]
        for mode in results["mode"].values:
            row = results["mae_mean"].sel(model=model, mode=mode).values
            lines.append(f"| {mode} | " + " | ".join(f"{v:.3f}" for v in row)
                         + f" | {float(results['aopc'].sel(model=model, mode=mode)):.4f} |")
        lines.append("")
    fitted = f"the {int(results.attrs['n_sources'])} sources scored here" if "n_sources" in results.attrs \
        else "the sources scored here"
    lines.append(f"Constant predictor at the centroid of {fitted} (fitted on their own labels): "
                 f"{float(results['baseline_mae_mean']):.3f} m per coordinate.")
    return "\n".join(lines) + "\n"
