"""The faithfulness figure: deletion (MoRF solid, LeRF dashed) and insertion curves per method and fill, beside the
randomized model's MoRF and insertion (dash-dot) and a random order (dotted)."""
from __future__ import annotations

from pathlib import Path

from xai_loc.io import save_figure_pair
from xai_loc.plots.labels import deleted_values, literal, run_title


def plot_faithfulness(results, out_stem: str | Path) -> list[Path]:
    """Draw, per model, a row of deletion panels and a row of insertion panels, one column per fill.

    Parameters
    ----------
    results
        A ``faithfulness.nc`` dataset (``curve`` over model, method, ordering, fill, mode, percentage).
    out_stem
        Path without suffix; ``.png`` and ``.pdf`` are written.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    import matplotlib.pyplot as plt

    # dict selections throughout: DataArray.sel(method=...) is the fill method of inexact matches

    models, fills = list(results["model"].values), list(results["fill"].values)
    methods, orderings = list(results["method"].values), list(results["ordering"].values)
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    pct = results["percentage"].values
    label = literal(f"{results.attrs.get('error', 'MAE per coordinate')} [{results.attrs.get('units', 'm')}]")
    deleted = deleted_values(results.attrs)
    fig, axes = plt.subplots(2 * len(models), len(fills), figsize=(4.0 * len(fills), 3.0 * 2 * len(models)),
                             squeeze=False, sharex=True)
    for k, model in enumerate(models):
        for f, fill in enumerate(fills):
            deletion, insertion = axes[2 * k][f], axes[2 * k + 1][f]
            curve = results["curve"].sel(model=model, fill=fill)
            for method in methods:
                c = curve.sel({"method": method, "ordering": "relevance"})
                deletion.plot(pct, c.sel(mode="morf").values, color=colors[method], marker="o", ms=3,
                              label=literal(method))
                deletion.plot(pct, c.sel(mode="lerf").values, color=colors[method], linestyle="--")
                insertion.plot(pct, c.sel(mode="insertion").values, color=colors[method], marker="o", ms=3)
                if "randomized" in orderings:  # the same method on the model with randomized weights
                    r = curve.sel({"method": method, "ordering": "randomized"})
                    deletion.plot(pct, r.sel(mode="morf").values, color=colors[method], linestyle="-.", alpha=0.6,
                                  label=literal(f"{method}, randomized model"))
                    insertion.plot(pct, r.sel(mode="insertion").values, color=colors[method], linestyle="-.",
                                   alpha=0.6)
            if "random" in orderings:  # the same for every method
                rnd = curve.sel({"method": methods[0], "ordering": "random"})
                deletion.plot(pct, rnd.sel(mode="morf").values, color="0.5", linestyle=":", label="random order")
                insertion.plot(pct, rnd.sel(mode="insertion").values, color="0.5", linestyle=":")
            deletion.set_title(literal(f"{model}, {fill} fill: deletion (MoRF -, LeRF --)"), fontsize=9)
            insertion.set_title(literal(f"{model}, {fill} fill: insertion"), fontsize=9)
            for ax in (deletion, insertion):
                ax.grid(alpha=0.3)
            insertion.set_xlabel(f"deleted / inserted {deleted} [%]")
        for row in (2 * k, 2 * k + 1):
            axes[row][0].set_ylabel(label)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(run_title(results), fontsize=9)
    fig.tight_layout()
    return save_figure_pair(fig, out_stem)
