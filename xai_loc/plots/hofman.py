"""Figures of binaural behaviour: Hofman-style response grids and the duplex cue probe.

:func:`plot_hofman` draws what Hofman, Van Riswick & Van Opstal (Nat. Neurosci. 1998) show
for listeners: the target grid and the mean responses drawn as a (deformed) grid, with
elevation gain, RMSE and variability; beside them response-versus-target plots and the
azimuth confusion matrix before and after front-back folding. :func:`plot_cues` draws the
duplex probe of :mod:`xai_loc.experiments.cues`. Both return the matplotlib figure;
:func:`draw_behaviour` and :func:`draw_duplex` write them from the stored results
(``responses.nc`` -> ``hofman.png``/``.pdf``, ``duplex.nc`` and ``duplex_relevance.nc`` -> ``cues.png``/``.pdf``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from xai_loc.plots.labels import literal

__all__ = ["draw_behaviour", "draw_duplex", "plot_cues", "plot_hofman"]

BAND_COLORS = {"low": "tab:blue", "high": "tab:red", "wide": "tab:gray"}


def _signed(az) -> np.ndarray:
    """Azimuth in degrees as ``(-180, 180]`` (0 front, positive left)."""
    a = np.mod(np.asarray(az, dtype=np.float64) + 180.0, 360.0) - 180.0
    return np.where(a == -180.0, 180.0, a)


def _grid_panel(ax, stats: dict, front: bool) -> None:
    """Mean target positions (grey grid) and mean responses (black grid) of the pooled
    targets (:func:`~xai_loc.experiments.cues.behaviour_statistics` ``grid``), front or rear."""
    g = stats["grid"]
    bins, levels = np.asarray(g["azimuth_bin"]), np.asarray(g["elevation"])
    t_az, t_el = np.asarray(g["target_azimuth"]), np.asarray(g["target_elevation"])
    m_az, m_el = np.asarray(g["mean_azimuth_folded"]), np.asarray(g["mean_elevation"])
    signed_bin = _signed(bins)
    keep = (np.abs(signed_bin) <= 90.0) if front else (np.abs(signed_bin) >= 90.0)

    def x_of(az):
        s = _signed(az)
        return s if front else np.where(s >= 0, 180.0 - s, -180.0 - s)  # rear: signed distance from the back

    has_elevation = bool(np.all(np.isfinite(m_el)))
    y_resp = m_el if has_elevation else t_el  # an azimuth-only model: responses shown at the targets' elevation
    for (x, y), style in (((x_of(t_az), t_el), {"color": "0.75", "lw": 0.8, "marker": "o", "ms": 3, "zorder": 1}),
                          ((x_of(m_az), y_resp), {"color": "k", "lw": 1.0, "marker": ".", "ms": 4, "zorder": 2})):
        for value, along in ((levels, x_of(bins)), (signed_bin, levels)):
            for level in np.unique(value[keep]):
                sel = np.flatnonzero(keep & (value == level))
                order = sel[np.argsort(along[sel])]
                ax.plot(x[order], y[order], **style)
    ax.set_xlim(-100, 100)
    ax.set_xlabel("azimuth (deg, + left)" if front else "azimuth from the back (deg, + left)")
    ax.set_ylabel("elevation (deg)")
    ax.set_title(f"{'front' if front else 'rear'} targets (pooled in {g['bin_width']:g} deg bins)"
                 + ("" if has_elevation else "\nno elevation output: responses drawn at the target elevation"),
                 fontsize=10 if has_elevation else 9)


def _accuracy_line(metrics: dict, baseline: dict, fmt) -> str:
    """Class accuracy, or azimuth accuracy for a model without elevation classes, beside chance."""
    key = "accuracy" if metrics.get("accuracy") is not None else "azimuth_accuracy"
    return f"{key.replace('_', ' ')} {fmt(metrics.get(key))} (chance {fmt(baseline.get(key))})"


def plot_hofman(responses, stats: dict | None = None):
    """Hofman-style figure of a model's responses on a binaural test store.

    Parameters
    ----------
    responses
        ``DirectionEvaluation.responses`` (e.g. ``responses.nc`` of
        :func:`xai_loc.experiments.cues.run_behaviour`).
    stats
        :func:`xai_loc.experiments.cues.behaviour_statistics` of it (computed if None).

    Panels: mean responses over the target grid for front and rear targets (targets pooled
    in 30-degree azimuth bins per elevation; front-back confusions folded back; grey the
    mean targets, black the mean responses), response against target elevation with the
    elevation gain, the azimuth confusion matrix before and after front-back folding, and
    the statistics beside the uniformly guessing baseline.
    """

    import matplotlib.pyplot as plt

    from xai_loc.experiments.cues import behaviour_statistics
    from xai_loc.models.classifier_training import front_back_confusions, mirror_front_back

    stats = behaviour_statistics(responses) if stats is None else stats
    t_az, t_el = responses["target_azimuth"].values, responses["target_elevation"].values
    r_az, r_el = responses["response_azimuth"].values, responses["response_elevation"].values
    fig, axes = plt.subplots(2, 3, figsize=(14, 8.5))
    _grid_panel(axes[0, 0], stats, front=True)
    _grid_panel(axes[0, 1], stats, front=False)

    ax = axes[0, 2]
    if np.all(np.isfinite(r_el)):
        levels = np.unique(t_el)
        means = [r_el[t_el == v].mean() for v in levels]
        sds = [r_el[t_el == v].std() for v in levels]
        ax.errorbar(levels, means, yerr=sds, marker="o", color="k", capsize=3, label="mean +- SD")
        ax.plot(levels, stats["elevation_gain"] * levels + stats["elevation_bias"], color="tab:red",
                label=f"gain {stats['elevation_gain']:.2f}")
        ax.plot([levels.min(), levels.max()], [levels.min(), levels.max()], ls=":", color="0.5")
        ax.legend(loc="upper left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "the model gives no elevation", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("target elevation (deg)")
    ax.set_ylabel("response elevation (deg)")
    ax.set_title("elevation")

    confused, _ = front_back_confusions(r_az, t_az)
    folded = np.where(confused, mirror_front_back(r_az), r_az)
    bins = np.arange(-182.5, 182.6, 5.0)
    for ax, resp, title in ((axes[1, 0], r_az, "azimuth confusions"),
                            (axes[1, 1], folded, "after front-back folding")):
        h, _, _ = np.histogram2d(_signed(t_az), _signed(resp), bins=[bins, bins])
        h = h / np.maximum(h.sum(axis=1, keepdims=True), 1)
        ax.imshow(h.T, origin="lower", extent=[bins[0], bins[-1], bins[0], bins[-1]], cmap="Greys", vmin=0,
                  vmax=max(float(h.max()), 1e-9), aspect="equal")
        x = np.linspace(-180, 180, 361)
        y = _signed(mirror_front_back(x))
        y[1:][np.abs(np.diff(y)) > 90] = np.nan  # no line across the wrap at 0 degrees
        ax.plot(x, y, ls=":", lw=0.8, color="tab:red", label="front-back mirror")
        ax.set_xlabel("target azimuth (deg, + left)")
        ax.set_ylabel("response azimuth (deg)")
        ax.set_title(title)

    ax = axes[1, 2]
    ax.axis("off")
    metrics = json.loads(responses.attrs.get("metrics", "{}"))
    baseline = json.loads(responses.attrs.get("baseline", "{}"))

    def fmt(v, unit=""):
        return "n/a" if v is None else f"{v:.3g}{unit}"

    lines = [f"n = {stats['n']} responses",
             _accuracy_line(metrics, baseline, fmt),
             f"azimuth RMSE {fmt(stats['azimuth_rmse'], ' deg')} (folded {fmt(stats['azimuth_rmse_folded'], ' deg')})",
             f"elevation RMSE {fmt(stats['elevation_rmse'], ' deg')}",
             f"elevation gain {fmt(stats['elevation_gain'])}, bias {fmt(stats['elevation_bias'], ' deg')}",
             f"variability: azimuth {fmt(stats['azimuth_variability'], ' deg')}, "
             f"elevation {fmt(stats['elevation_variability'], ' deg')}",
             f"front-back confusions {fmt(stats['front_back_rate'])} (chance {fmt(baseline.get('front_back_rate'))})",
             f"mean azimuth error {fmt(metrics.get('azimuth_error'), ' deg')} "
             f"(chance {fmt(baseline.get('azimuth_error'), ' deg')})",
             f"mean elevation error {fmt(metrics.get('elevation_error'), ' deg')} "
             f"(chance {fmt(baseline.get('elevation_error'), ' deg')})"]
    ax.text(0.0, 1.0, "\n".join(lines), va="top", family="monospace", fontsize=9)
    fig.suptitle(literal(f"Responses of {responses.attrs.get('model', 'model')} (Hofman-style; azimuth 90 = left)"))
    fig.tight_layout()
    return fig


def plot_cues(probe, view=None):
    """The duplex probe: response shifts against imposed ITD and ILD per band, the cue weights,
    and (with ``view`` from :func:`~xai_loc.experiments.cues.duplex_relevance`) the relevance
    mass per frequency and ear and the relevance lag against the stimulus ITD."""

    import matplotlib.pyplot as plt

    n_cols = 3 if view is None else 5
    fig, axes = plt.subplots(1, n_cols, figsize=(4.0 * n_cols, 3.6))
    bands = [str(b) for b in probe["band"].values]
    for ax, cue, unit in ((axes[0], "itd", "us"), (axes[1], "ild", "dB")):
        offsets = probe[f"{cue}_offset"].values
        for band in bands:
            resp = probe[f"response_{cue}"].sel(band=band)
            shift = (resp - resp.sel({f"{cue}_offset": 0.0})).mean(("azimuth", "token"))
            ax.plot(offsets, shift.values, marker="o", color=BAND_COLORS.get(band), label=literal(band))
        ax.axhline(0, color="0.7", lw=0.8)
        ax.set_xlabel(f"imposed {cue.upper()} ({unit}, + left)")
        ax.set_ylabel("response shift (deg lateral)")
        ax.set_title(f"{cue.upper()} offsets")
        ax.legend(fontsize=8)
    ax = axes[2]
    x = np.arange(len(bands))
    ax.bar(x - 0.2, probe["itd_weight"].values, width=0.4, label="ITD weight", color="tab:purple")
    ax.bar(x + 0.2, probe["ild_weight"].values, width=0.4, label="ILD weight", color="tab:green")
    ax.set_xticks(x, [literal(b) for b in bands])
    ax.axhline(0, color="k", lw=0.8)
    ax.axhline(1, color="0.6", lw=0.8, ls=":")
    ax.set_ylabel("weight (1 = full use)")
    ax.set_title("cue weights by band")
    ax.legend(fontsize=8)
    if view is not None:
        ax = axes[3]
        freqs = view["frequency"].values
        for band in [str(b) for b in view["band"].values]:
            for ear, ls in (("left", "-"), ("right", "--")):
                ax.plot(freqs, view["band_mass"].sel(band=band, ear=ear).values, ls=ls,
                        color=BAND_COLORS.get(band), label=literal(f"{band} {ear}"))
        ax.set_xscale("log")
        ax.set_xlabel("band centre frequency (Hz)")
        ax.set_ylabel("share of |relevance|")
        ax.set_title("relevance per band and ear")
        ax.legend(fontsize=7)
        ax = axes[4]
        for band in [str(b) for b in view["band"].values]:
            sel = view["stimulus_band"] == band
            ax.scatter(view["stimulus_itd"].values[sel], view["relevance_lag"].values[sel], s=12,
                       color=BAND_COLORS.get(band),
                       label=literal(f"{band}: slope {float(view['lag_slope'].sel(band=band)):.2f}"))
        lim = [-1000, 1000]
        ax.plot(lim, lim, ls=":", color="0.5")
        ax.set_xlim(lim)
        ax.set_ylim(lim)
        ax.set_xlabel("stimulus ITD (us, + left leads)")
        ax.set_ylabel("relevance interaural lag (us)")
        ax.set_title("relevance lag vs ITD")
        ax.legend(fontsize=7)
    model, response = probe.attrs.get("model", "model"), probe.attrs.get("response")
    fig.suptitle(literal(f"Duplex probe of {model} (response: {response})"))
    fig.tight_layout()
    return fig


def draw_behaviour(responses, out_stem: str | Path) -> list[Path]:
    """:func:`plot_hofman` of stored responses (their Hofman statistics from the attrs, where
    :func:`~xai_loc.experiments.cues.run_behaviour` put them), saved as ``<out_stem>.png`` and ``.pdf``."""
    from xai_loc.io import save_figure_pair

    stats = json.loads(responses.attrs["hofman"]) if "hofman" in responses.attrs else None
    return save_figure_pair(plot_hofman(responses, stats), out_stem)


def draw_duplex(probe, out_stem: str | Path, view=None) -> list[Path]:
    """:func:`plot_cues` of a stored duplex probe (and its relevance view), saved as ``<out_stem>.png`` and ``.pdf``."""
    from xai_loc.io import save_figure_pair

    return save_figure_pair(plot_cues(probe, view), out_stem)
