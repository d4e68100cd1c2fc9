"""Redraw every figure of a results folder from the stored results alone."""
from __future__ import annotations

from pathlib import Path


def _perturbation(path: Path):
    from xai_loc.data.integrity import open_netcdf_store

    return open_netcdf_store(path, "perturbation result", "run 'xai-loc perturb' to rebuild it", required=("mae_mean",))


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


#: Result file name -> (function opening it, function drawing its figures next to it).
DRAWERS = {"perturbation.nc": (_perturbation, _draw_perturbation), "tdoa.nc": (_tdoa, _draw_tdoa)}


def redraw(folder: str | Path) -> list[Path]:
    """Draw the figures of every result file below ``folder``; returns the files written.

    Every result is opened and checked first, so a damaged file stops the command before
    any figure is written.
    """
    from xai_loc.errors import InputError

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"results folder {str(folder)!r} does not exist")
    opened = [(path, opener(path), draw) for name, (opener, draw) in DRAWERS.items()
              for path in sorted(folder.rglob(name))]
    if not opened:
        raise InputError(f"{folder} holds no results ({', '.join(DRAWERS)}); run perturb, tdoa or reproduce first")
    written = []
    for path, ds, draw in opened:
        written += draw(ds, path)
    return written
