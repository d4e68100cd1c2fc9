"""Draw the figures of registered results, from a run or from a results folder alone.

:data:`DRAWERS` maps each result name of :data:`xai_loc.experiments.registry.RESULTS` to the
:class:`Drawer` of its figures: the function that draws them next to its file and their names, known
before anything is drawn (every figure is saved as PNG and PDF by :func:`~xai_loc.io.save_figure_pair`);
the registry says which file the result is and how it is opened and checked. The commands that run an
experiment draw through the same map (:func:`draw_result`), so a figure written by a command and one
redrawn by ``xai-loc figures`` are the same figure.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import math
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DRAWERS", "NO_FIGURE", "Drawer", "draw", "draw_result", "link_siblings", "no_results_hint", "redraw",
           "recorded_condition", "result_files", "unusable_result"]


@dataclass(frozen=True)
class Drawer:
    """How the figures of one kind of result are drawn: ``draw(dataset, result file path, *stems)`` saves one
    figure per stem (:func:`~xai_loc.io.save_figure_pair`: PNG and PDF) and returns the files written; ``stems``
    are the figures' names beside the result file, known before anything is drawn."""

    draw: Callable[..., list[Path]]
    stems: tuple[str, ...]

    def files(self, folder: str | Path) -> list[Path]:
        """Every figure file the drawer may write into ``folder``."""
        from xai_loc.io import figure_files

        return [f for stem in self.stems for f in figure_files(Path(folder) / stem)]

    def __call__(self, ds, path: str | Path) -> list[Path]:
        path = Path(path)
        return self.draw(ds, path, *(path.parent / stem for stem in self.stems))


def _one_figure(target: str) -> Callable[..., list[Path]]:
    """The draw function of a result with one figure: ``module:function(dataset, stem)``, imported when first
    drawn (matplotlib loads with the plot modules)."""
    module, function = target.split(":")

    def draw(ds, path: Path, stem: Path) -> list[Path]:
        return getattr(importlib.import_module(module), function)(ds, stem)

    return draw


def _draw_tdoa(ds, path: Path, stem: Path, srp_stem: Path) -> list[Path]:
    from xai_loc.plots.tdoa import plot_srp, plot_tdoa

    paths = plot_tdoa(ds, stem)
    if "srp_error" in ds:
        paths += plot_srp(ds, srp_stem)
    return paths


def _duplex_settings(ds, view: bool) -> tuple:
    """What a duplex probe and its relevance view must share to be drawn together: the model, the seed, the
    bands and the tokens per stimulus condition (a probe's ``token`` dimension, a view's ``token`` labels)."""
    tokens = (len(set(ds["token"].values.tolist())) if view else ds.sizes["token"]) if "token" in ds.coords else None
    bands = [str(b) for b in ds["band"].values] if "band" in ds.coords else None
    return ds.attrs.get("model_digest"), ds.attrs.get("seed"), bands, tokens


def _draw_duplex(ds, path: Path, stem: Path) -> list[Path]:
    """``cues.png``, with the relevance view of ``duplex_relevance.nc`` where it was computed with the same model
    and probe settings (:func:`_duplex_settings`; in a folder written before that name, ``cue_relevance.nc``, a
    name the cue network's probe also writes, with other contents)."""
    from xai_loc.data.integrity import open_netcdf_store
    from xai_loc.plots import hofman

    view = None
    for name in ("duplex_relevance.nc", "cue_relevance.nc"):
        sibling = path.parent / name
        if view is None and sibling.is_file():
            candidate = open_netcdf_store(sibling, "duplex relevance view", "run 'xai-loc binaural cues' to rebuild it")
            same_run = "lag_slope" in candidate and _duplex_settings(candidate, True) == _duplex_settings(ds, False)
            view = candidate if same_run else None
    return hofman.draw_duplex(ds, stem, view)


#: The drawer of a result without a figure of its own: a table, or a view that another result's figure reads.
NO_FIGURE = Drawer(lambda ds, path: [], ())

#: Result name (:data:`~xai_loc.experiments.registry.RESULTS`) -> the :class:`Drawer` of its figures.
DRAWERS: dict[str, Drawer] = {
    "perturbation": Drawer(_one_figure("xai_loc.plots.perturbation:plot_perturbation"), ("perturbation",)),
    "tdoa": Drawer(_draw_tdoa, ("tdoa", "srp")),
    "faithfulness": Drawer(_one_figure("xai_loc.plots.faithfulness:plot_faithfulness"), ("faithfulness",)),
    "sanity": Drawer(_one_figure("xai_loc.plots.sanity:plot_sanity"), ("sanity",)),
    "components": Drawer(_one_figure("xai_loc.plots.components:plot_components"), ("components",)),
    "duplex": Drawer(_draw_duplex, ("cues",)),
    "responses": Drawer(_one_figure("xai_loc.plots.hofman:draw_behaviour"), ("hofman",)),
    "cue_reliance": Drawer(_one_figure("xai_loc.plots.cue_probe:draw_cue_probe"), ("cue_probe",)),
    "band_profile": Drawer(_one_figure("xai_loc.plots.band_profile:draw_band_profile"), ("band_profile",)),
    "duplex_relevance": NO_FIGURE,  # drawn into cues.png beside its duplex.nc
    "cue_ablation": NO_FIGURE,
    "bast_table": NO_FIGURE,
    "relevance_view": NO_FIGURE,
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
    (a KeyError inside xarray or pandas, or a :class:`~xai_loc.plots.labels.MissingAttribute`), holds an
    attribute that is not JSON, or fails on an attribute of another kind than its readers convert
    (:func:`~xai_loc.plots.labels.misread_attribute`: a count ``'27 windows'``, ``models`` a JSON list), as a
    one-line :class:`~xai_loc.errors.InputError`: ``<what> <path> <doing> (<why>); run ... to rebuild it``."""
    from xai_loc.errors import InputError
    from xai_loc.experiments.registry import RESULTS
    from xai_loc.plots.labels import MissingAttribute, misread_attribute

    try:
        yield
    except InputError:
        raise  # one line already
    except KeyError as err:
        if not (isinstance(err, MissingAttribute) or _raised_by_a_label_lookup(err)):
            raise  # a KeyError of our own code is a bug, not a damaged file
        why = "missing: " + str(err.args[0] if err.args else err).splitlines()[0][:120]
    except json.JSONDecodeError as err:  # only stored attributes are parsed while drawing or tabulating
        key = next((k for k, v in ds.attrs.items() if isinstance(v, str) and v == err.doc), None)
        why = f"attribute {key!r} is not JSON" if key is not None else f"an attribute is not JSON: {err.doc[:40]!r}"
    except (TypeError, ValueError, AttributeError):
        why = misread_attribute(ds.attrs)
        if why is None:
            raise  # no stored attribute of another kind: a bug, not a damaged file
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
    """Draw the figures of result files (those the registry names; others are skipped), all or none.

    Every file is opened and checked, and every figure file its drawer declares checked as a path a file can
    take (:func:`~xai_loc.io.check_file_path`), before any figure is drawn; every figure is drawn in a scratch
    folder before any is put in place, each keeping the mode of the file it replaces. Returns the figure files
    written.
    """
    from xai_loc.experiments.registry import result_for_file
    from xai_loc.io import check_file_path, replace_keeping_mode

    found = [(Path(p), result_for_file(Path(p).name)) for p in paths]
    opened = [(path, result.name, result.open(path)) for path, result in found if result is not None]
    for path, name, ds in opened:  # titles print the condition
        recorded_condition(name, ds, path)
        for figure in DRAWERS[name].files(path.parent):
            check_file_path(figure)
    staged: list[tuple[Path, Path]] = []  # (drawn in a staging folder, where it goes)
    with contextlib.ExitStack() as stack:
        for path, name, ds in opened:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=path.parent, prefix=".figures-")))
            link_siblings(path.parent, scratch)
            for drawn in draw_result(name, ds, scratch / path.name, source=path):
                staged.append((Path(drawn), path.parent / Path(drawn).relative_to(scratch)))
        for drawn, final in staged:
            replace_keeping_mode(drawn, final)
    return [final for _, final in staged]


def no_results_hint(folder: str | Path) -> str:
    """The one line for a folder without registered results: the files looked for and the commands writing them."""
    from xai_loc.experiments.registry import RESULTS

    files = ", ".join(r.result_file for r in RESULTS.values())
    commands = ", ".join(dict.fromkeys(r.command for r in RESULTS.values()))
    return f"{folder} holds no results ({files}); run an experiment ({commands}, or reproduce) first"


def redraw(folder: str | Path) -> list[Path]:
    """Draw the figures of every registered result file below ``folder``; returns the files written (a folder of
    :data:`NO_FIGURE` results only: a one-line error, as a folder without results)."""
    from xai_loc.errors import InputError
    from xai_loc.experiments.registry import RESULTS

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"results folder {str(folder)!r} does not exist")
    found = {path: name for name, result in RESULTS.items() for path in result_files(folder, result.result_file)}
    if not found:
        raise InputError(no_results_hint(folder))
    if all(DRAWERS[name] is NO_FIGURE for name in found.values()):
        raise InputError(f"{folder} holds only results without figures of their own "
                         f"({', '.join(sorted({path.name for path in found}))}); read them with xai-loc report")
    return draw(list(found))
