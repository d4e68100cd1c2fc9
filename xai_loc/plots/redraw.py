"""Redraw every figure of a results folder from the stored results alone."""
from __future__ import annotations

from pathlib import Path


def _perturbation(path: Path) -> list[Path]:
    import xarray as xr

    from xai_loc.plots.perturbation import plot_perturbation

    with xr.open_dataset(path) as ds:
        return plot_perturbation(ds.load(), path.with_suffix(""))


def _tdoa(path: Path) -> list[Path]:
    from xai_loc.experiments.tdoa_probe import open_tdoa_results
    from xai_loc.plots.tdoa import plot_srp, plot_tdoa

    ds = open_tdoa_results(path)
    paths = plot_tdoa(ds, path.with_suffix(""))
    if "srp_error" in ds:
        paths += plot_srp(ds, path.parent / "srp")
    return paths


#: Result file name -> function drawing its figures next to it.
DRAWERS = {"perturbation.nc": _perturbation, "tdoa.nc": _tdoa}


def redraw(folder: str | Path) -> list[Path]:
    """Draw the figures of every result file below ``folder``; returns the files written."""
    from xai_loc.errors import InputError

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"results folder {str(folder)!r} does not exist")
    written = []
    for name, draw in DRAWERS.items():
        for path in sorted(folder.rglob(name)):
            written += draw(path)
    if not written:
        raise InputError(f"{folder} holds no results ({', '.join(DRAWERS)}); run perturb, tdoa or reproduce first")
    return written
