"""Redraw every figure of a results folder from the stored results alone.

:data:`DRAWERS` maps each result file name to the function that opens (and checks) it and
the function that draws its figures next to it. The commands that run an experiment draw
through the same map (:func:`draw`), so a figure written by a command and one redrawn by
``xai-loc figures`` are the same figure.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def _opener(what: str, command: str, required: str):
    def open_result(path: Path):
        from xai_loc.data.integrity import open_netcdf_store

        return open_netcdf_store(path, what, f"run 'xai-loc {command}' to rebuild it", required=(required,))
    return open_result


def _draw_perturbation(ds, path: Path) -> list[Path]:
    from xai_loc.plots.perturbation import plot_perturbation

    return plot_perturbation(ds, path.with_suffix(""))


def _tdoa(path: Path):
    from xai_loc.experiments.tdoa_probe import open_tdoa_results

    return open_tdoa_results(path)


def _draw_tdoa(ds, path: Path) -> list[Path]:
    from xai_loc.plots.tdoa import plot_srp, plot_tdoa

    paths = plot_tdoa(ds, path.with_suffix(""))
    if "srp_error" in ds:
        paths += plot_srp(ds, path.parent / "srp")
    return paths


def _draw_duplex(ds, path: Path) -> list[Path]:
    """``cues.png``, with the relevance view of the same model and seed where ``cue_relevance.nc`` holds one
    (the cue network's probe writes a file of that name too, with other contents)."""
    from xai_loc.data.integrity import open_netcdf_store
    from xai_loc.plots.hofman import draw_duplex

    view = None
    sibling = path.parent / "cue_relevance.nc"
    if sibling.is_file():
        candidate = open_netcdf_store(sibling, "duplex relevance view", "run 'xai-loc binaural cues' to rebuild it")
        same_run = all(candidate.attrs.get(k) == ds.attrs.get(k) for k in ("model_digest", "seed"))
        view = candidate if "lag_slope" in candidate and same_run else None
    return draw_duplex(ds, path.parent / "cues.png", view)


def _draw_behaviour(ds, path: Path) -> list[Path]:
    from xai_loc.plots.hofman import draw_behaviour

    return draw_behaviour(ds, path.parent / "hofman.png")


def _draw_cue_probe(ds, path: Path) -> list[Path]:
    from xai_loc.plots.cue_probe import plot_cue_probe

    plot_cue_probe(ds, path.parent / "cue_probe.png")
    return [path.parent / "cue_probe.png"]


def _draw_band_profile(ds, path: Path) -> list[Path]:
    from xai_loc.plots.band_profile import draw_band_profile

    return draw_band_profile(ds, path.with_suffix(".png"))


#: Result file name -> (function opening it, function drawing its figures next to it).
DRAWERS = {
    "perturbation.nc": (_opener("perturbation result", "perturb", "mae_mean"), _draw_perturbation),
    "tdoa.nc": (_tdoa, _draw_tdoa),
    "duplex.nc": (_opener("duplex probe result", "binaural cues", "itd_weight"), _draw_duplex),
    "responses.nc": (_opener("binaural responses", "binaural cues", "response_azimuth"), _draw_behaviour),
    "cue_reliance.nc": (_opener("cue reliance table", "binaural cuenet probe", "abs_share"), _draw_cue_probe),
    "band_profile.nc": (_opener("band profile", "binaural tfcnn probe", "share"), _draw_band_profile),
}


def draw(paths: Iterable[str | Path]) -> list[Path]:
    """Draw the figures of result files (those named in :data:`DRAWERS`; others are skipped).

    Returns the figure files written.
    """
    opened = [(Path(p), *DRAWERS[Path(p).name]) for p in paths if Path(p).name in DRAWERS]
    opened = [(path, opener(path), drawer) for path, opener, drawer in opened]
    written = []
    for path, ds, drawer in opened:
        written += drawer(ds, path)
    return written


def redraw(folder: str | Path) -> list[Path]:
    """Draw the figures of every result file below ``folder``; returns the files written.

    Every result is opened and checked first, so a damaged file stops the command before
    any figure is written.
    """
    from xai_loc.errors import InputError

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"results folder {str(folder)!r} does not exist")
    found = [path for name in DRAWERS for path in sorted(folder.rglob(name))]
    if not found:
        raise InputError(f"{folder} holds no results ({', '.join(DRAWERS)}); run an experiment "
                         "(perturb, tdoa, reproduce, binaural cues or a binaural probe) first")
    return draw(found)
