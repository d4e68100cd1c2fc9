"""Draw the figures of registered results, from a run or from a results folder alone.

:data:`DRAWERS` maps each result name of :data:`xai_loc.experiments.registry.RESULTS` to the
function that draws its figures next to its file; the registry says which file that is and
how it is opened and checked. The commands that run an experiment draw through the same map
(:func:`draw_result`), so a figure written by a command and one redrawn by ``xai-loc figures``
are the same figure.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

__all__ = ["DRAWERS", "draw", "draw_result", "link_siblings", "redraw", "recorded_condition", "result_files",
           "unusable_result"]


def _draw_perturbation(ds, path: Path) -> list[Path]:
    from xai_loc.plots.perturbation import plot_perturbation

    return plot_perturbation(ds, path.with_suffix(""))


def _draw_faithfulness(ds, path: Path) -> list[Path]:
    from xai_loc.plots.faithfulness import plot_faithfulness

    return plot_faithfulness(ds, path.with_suffix(""))


def _draw_sanity(ds, path: Path) -> list[Path]:
    from xai_loc.plots.sanity import plot_sanity

    return plot_sanity(ds, path.with_suffix(""))


def _draw_components(ds, path: Path) -> list[Path]:
    from xai_loc.plots.components import plot_components

    return plot_components(ds, path.with_suffix(""))


def _draw_tdoa(ds, path: Path) -> list[Path]:
    from xai_loc.plots.tdoa import plot_srp, plot_tdoa

    paths = plot_tdoa(ds, path.with_suffix(""))
    if "srp_error" in ds:
        paths += plot_srp(ds, path.parent / "srp")
    return paths


def _draw_duplex(ds, path: Path) -> list[Path]:
    """``cues.png``, with the relevance view of the same model and seed where ``duplex_relevance.nc`` holds one
    (or, in a folder written before that name, ``cue_relevance.nc``, a name the cue network's probe also writes,
    with other contents)."""
    from xai_loc.data.integrity import open_netcdf_store
    from xai_loc.plots.hofman import draw_duplex

    view = None
    for name in ("duplex_relevance.nc", "cue_relevance.nc"):
        sibling = path.parent / name
        if view is None and sibling.is_file():
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


#: Result name (:data:`~xai_loc.experiments.registry.RESULTS`) -> function drawing its figures next to
#: its file, ``f(dataset, result file path) -> files written``.
DRAWERS: dict[str, Callable] = {
    "perturbation": _draw_perturbation,
    "tdoa": _draw_tdoa,
    "faithfulness": _draw_faithfulness,
    "sanity": _draw_sanity,
    "components": _draw_components,
    "duplex": _draw_duplex,
    "responses": _draw_behaviour,
    "cue_reliance": _draw_cue_probe,
    "band_profile": _draw_band_profile,
}


def _raised_by_a_label_lookup(err: KeyError) -> bool:
    """Whether ``err`` was raised inside xarray or pandas (a label or variable the file lacks)."""
    tb = err.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    parts = Path(tb.tb_frame.f_code.co_filename).parts
    return "xarray" in parts or "pandas" in parts


@contextlib.contextmanager
def unusable_result(name: str, ds, path: str | Path, doing: str) -> Iterator[None]:
    """What the block raises because result ``name`` (``ds``, the file ``path``) lacks a label or variable
    (a KeyError inside xarray or pandas) or holds an attribute that is not JSON, as a one-line
    :class:`~xai_loc.errors.InputError`: ``<what> <path> <doing> (<why>); run ... to rebuild it``."""
    from xai_loc.errors import InputError
    from xai_loc.experiments.registry import RESULTS

    try:
        yield
    except KeyError as err:
        if not _raised_by_a_label_lookup(err):
            raise  # a KeyError of our own code is a bug, not a damaged file
        why = "missing: " + str(err.args[0] if err.args else err).splitlines()[0][:120]
    except json.JSONDecodeError as err:  # only stored attributes are parsed while drawing or tabulating
        key = next((k for k, v in ds.attrs.items() if isinstance(v, str) and v == err.doc), None)
        why = f"attribute {key!r} is not JSON" if key is not None else f"an attribute is not JSON: {err.doc[:40]!r}"
    else:
        return
    result = RESULTS[name]
    raise InputError(f"{result.what} {path} {doing} ({why}); run 'xai-loc {result.command}' to rebuild it") from None


def recorded_condition(name: str, ds, path: str | Path) -> tuple[float, float]:
    """The ``(t60, snr)`` that result ``name`` (``ds``, the file ``path``) records, NaN where it records none;
    a one-line :class:`~xai_loc.errors.InputError` where one is not a number."""
    from xai_loc.errors import InputError
    from xai_loc.experiments.registry import RESULTS

    condition = []
    for key in ("t60", "snr"):
        try:
            condition.append(float(ds.attrs.get(key, math.nan)))
        except (TypeError, ValueError):
            result = RESULTS[name]
            raise InputError(f"{result.what} {path} records {key}={ds.attrs[key]!r}, not a number; run "
                             f"'xai-loc {result.command}' to rebuild it") from None
    return condition[0], condition[1]


def draw_result(name: str, ds, path: str | Path, source: str | Path | None = None) -> list[Path]:
    """Draw the figures of result ``name`` (in memory as ``ds``, stored at ``path``) next to ``path``.

    A file that passed its registry check but lacks a label the figure needs (e.g. a ``random``
    ordering) or holds a damaged JSON attribute is a one-line :class:`~xai_loc.errors.InputError`
    naming ``source`` (default ``path``: where ``path`` is a scratch copy, the user's file); a figure
    is only saved once drawn whole.
    """
    with unusable_result(name, ds, path if source is None else source, "cannot be drawn"):
        return DRAWERS[name](ds, Path(path))


def link_siblings(folder: Path, scratch: Path) -> None:
    """The results of ``folder`` linked (copied where links cannot be made) into a scratch folder, for
    drawers that read a sibling result (the duplex figure adds ``duplex_relevance.nc``)."""
    import shutil

    for sibling in folder.glob("*.nc"):
        try:
            (scratch / sibling.name).symlink_to(sibling.resolve())
        except OSError:  # a file system without symbolic links
            shutil.copy2(sibling, scratch / sibling.name)


def result_files(folder: Path, name: str) -> list[Path]:
    """Result files ``name`` below ``folder``, sorted; none inside a hidden folder (a staging folder of
    ``figures`` that a killed run left behind holds links to results)."""
    return sorted(p for p in folder.rglob(name) if not any(part.startswith(".") for part in
                                                           p.relative_to(folder).parts[:-1]))


def draw(paths: Iterable[str | Path]) -> list[Path]:
    """Draw the figures of result files (those the registry names; others are skipped).

    Every file is opened and checked first, so a damaged one stops before any figure is
    written. Returns the figure files written.
    """
    from xai_loc.experiments.registry import result_for_file

    found = [(Path(p), result_for_file(Path(p).name)) for p in paths]
    opened = [(path, result.name, result.open(path)) for path, result in found if result is not None]
    for path, name, ds in opened:  # titles print the condition
        recorded_condition(name, ds, path)
    staged: list[tuple[Path, Path]] = []  # (drawn in a staging folder, where it goes)
    with contextlib.ExitStack() as stack:
        # every figure is drawn before any is put in place: a result that cannot be drawn leaves none behind
        for path, name, ds in opened:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=path.parent, prefix=".figures-")))
            link_siblings(path.parent, scratch)
            for drawn in draw_result(name, ds, scratch / path.name, source=path):
                staged.append((Path(drawn), path.parent / Path(drawn).relative_to(scratch)))
        for drawn, final in staged:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(drawn, final)
    return [final for _, final in staged]


def redraw(folder: str | Path) -> list[Path]:
    """Draw the figures of every registered result file below ``folder``; returns the files written."""
    from xai_loc.errors import InputError
    from xai_loc.experiments.registry import RESULTS

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"results folder {str(folder)!r} does not exist")
    files = [result.result_file for result in RESULTS.values()]
    found = [path for name in files for path in result_files(folder, name)]
    if not found:
        raise InputError(f"{folder} holds no results ({', '.join(files)}); run an experiment "
                         "(perturb, faithfulness, sanity, tdoa, reproduce, binaural cues or a binaural probe) first")
    return draw(found)
