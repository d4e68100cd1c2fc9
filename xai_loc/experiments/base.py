"""Experiments as objects: run on a set of models and a dataset store, give one labelled result, write it.

An :class:`Experiment` turns a :class:`~xai_loc.experiments.modelset.ModelSet` and data into
one ``xarray.Dataset`` (:meth:`~Experiment.run`), tabulates it (:meth:`~Experiment.tables`)
and writes both into a results folder (:meth:`~Experiment.write`, each file atomically). Its
figures are drawn one stage up: :mod:`xai_loc.plots.redraw` registers a drawer under the
experiment's :attr:`~Result.name`, so experiments never import plots, and ``xai-loc figures``
finds the result files by :attr:`~Result.result_file`.

A :class:`Result` is the part every stored result has, whether or not it is run through this
interface (the binaural probes write theirs from their own commands): a file name, and how
to open and check it (the variables its readers need, with their dimensions). The registry of
both is :mod:`xai_loc.experiments.registry`; a new experiment is one module with an
:class:`Experiment` subclass plus one line there. An experiment's ``seed`` seeds whatever it
draws, an attribution method's own draws included (:func:`method_seed`).
"""
from __future__ import annotations

import abc
import contextlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xai_loc.errors import InputError

if TYPE_CHECKING:
    import xarray as xr

    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.models.families import Family

__all__ = ["FIXED_LABELS", "INPUT_NOUNS", "PROVENANCE_KEYS", "Experiment", "Result", "input_noun", "interval_cell",
           "latex_escape", "latex_tabular", "markdown_row", "markdown_text", "method_seed", "model_record",
           "recorded_families"]


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "|": r"\textbar{}"}


def latex_escape(text: str) -> str:
    """``text`` as LaTeX text: its special characters escaped (a markdown cell's escaped ``\\|`` is a bar)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text.replace("\\|", "|"))


#: A bar that is not escaped already (``\\|``): it would end a markdown table cell.
_BARE_BAR = re.compile(r"(?<!\\)\|")


#: What makes inline markup in CommonMark (emphasis, code, links, autolinks, entities, escapes), GitHub's math
#: (``$``) and a heading's closing ``#``; a table's bar.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>&!#~|$])")


def markdown_text(value: Any) -> str:
    """``str(value)`` as markdown that shows it character for character, each of its markup characters escaped:
    a name a table takes from a result (a model ``loccnn_*best*`` in a heading or a cell is not emphasis). Headings
    and cells of stored names go through it once; :func:`markdown_row` only escapes bars, so that a table's own
    text keeps its markup."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(value))


def markdown_row(cells: Iterable[str]) -> str:
    """One row of a markdown pipe table, ``| a | b |``, every bar in a cell escaped (``\\|``; one escaped already
    is kept): a name with a bar (a checkpoint ``a|b.safetensors``) keeps each value under its header. An empty cell
    is one space."""
    escaped = (_BARE_BAR.sub(r"\\|", cell) for cell in cells)
    return "|" + "|".join(f" {cell} " if cell else " " for cell in escaped) + "|"


#: What a result records of each model it explains (``models`` attr): architecture, checkpoint, digests and the
#: condition it was trained in (so that a report sets the paper's number of that condition beside it).
PROVENANCE_KEYS = ("model", "checkpoint", "checkpoint_digest", "model_digest", "model_condition")


def model_record(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`PROVENANCE_KEYS` of an explainer's or a model set's provenance ``attrs``."""
    return {key: value for key, value in attrs.items() if key in PROVENANCE_KEYS}


#: What a result's inputs are called, by the output kind of the models it records
#: (:attr:`~xai_loc.models.families.Family.output_kind`); "inputs" for the other kinds (a binaural sound, a BAST
#: spectrogram).
INPUT_NOUNS = {"position": "windows"}


def recorded_families(attrs: Mapping[str, Any]) -> list[Family]:
    """The :class:`~xai_loc.models.families.Family` of each architecture among the models a result records (its
    ``models`` attribute, JSON: name -> ``{"model": architecture, ...}``, :func:`model_record`), without repeats;
    empty where it records none, or none this installation knows (a damaged attribute is refused where a table
    reads it)."""
    from xai_loc.models.families import family_of

    try:
        models = json.loads(attrs.get("models", "{}"))
    except (TypeError, ValueError):
        return []
    families = {}
    for info in models.values() if isinstance(models, dict) else ():
        if isinstance(info, dict) and isinstance(info.get("model"), str):
            with contextlib.suppress(InputError):  # an architecture this installation does not know
                family = family_of(info["model"])
                families.setdefault(family.name, family)
    return list(families.values())


def input_noun(attrs: Mapping[str, Any]) -> str:
    """What the inputs of a result are called (:data:`INPUT_NOUNS`): "windows" for the multichannel localizers'
    windows (and where the result records no model), "inputs" where a recorded model's output is of another kind."""
    nouns = {INPUT_NOUNS.get(family.output_kind, "inputs") for family in recorded_families(attrs)}
    return "inputs" if "inputs" in nouns else "windows"


def method_seed(method: str | None, seed: int) -> dict[str, int]:
    """What an experiment's ``seed`` adds to the options of ``method``: ``{"seed": seed}`` for a method with random
    draws of its own (a ``seed`` option: GradientShap's path points and noise), so that the experiment's seed seeds
    them too; ``{}`` for the others, and where ``seed`` is the method's default (the same draws; the recorded
    ``explain_options`` stay those given). ``seed`` is checked (an integer >= 0; one-line error)."""
    from xai_loc.checks import check_integer
    from xai_loc.explain.methods import METHODS

    seed = check_integer("seed", seed)
    options = METHODS[method].OPTIONS if isinstance(method, str) and method in METHODS else {}
    return {"seed": seed} if "seed" in options and seed != options["seed"] else {}


def interval_cell(value: float, low: float, high: float, digits: int = 3) -> str:
    """A table cell ``value [low, high]``, ``n/a`` where the value is undefined (NaN), the value alone where
    its interval is (one source)."""
    if not np.isfinite(value):
        return "n/a"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def latex_tabular(comment: str, header: list[str], rows: list[list[str]]) -> list[str]:
    """Lines of one LaTeX ``tabular`` (first column left, the others right) with every cell escaped
    (:func:`latex_escape`), after a ``% comment`` line and followed by an empty line."""
    esc = [[latex_escape(c) for c in r] for r in [header, *rows]]
    return [f"% {comment}", r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\hline",
            " & ".join(esc[0]) + r" \\", r"\hline", *(" & ".join(r) + r" \\" for r in esc[1:]), r"\hline",
            r"\end{tabular}", ""]


#: Dimensions whose labels are fixed, in order, wherever a result holds them: readers take their entries by position
#: (a confidence interval's ``bound``: its lower end first).
FIXED_LABELS = {"bound": ("low", "high")}


class Result:
    """A kind of stored result: its registry name, file name and how it is opened and checked.

    Parameters override the class attributes (declarations of results written elsewhere).
    """

    #: Registry key; also the key of the result's drawer in :data:`xai_loc.plots.redraw.DRAWERS`.
    name: str = ""
    #: The netCDF file written into a results folder, e.g. ``"perturbation.nc"``.
    result_file: str = ""
    #: What it is, in words, for messages.
    what: str = ""
    #: The ``xai-loc`` command that writes it (named in the rebuild hint of a damaged file).
    command: str = ""
    #: Variables a file must hold to be this result, each with the dimensions (in any order) that the figures,
    #: tables and report read: as the experiment writes them.
    required: Mapping[str, tuple[str, ...]] = {}
    #: Variables (or coordinates) a file may lack (written by an earlier version or without an option) but that
    #: the readers index where they are: each with its dimensions, checked when present.
    optional: Mapping[str, tuple[str, ...]] = {}
    #: Dimensions a file may not hold empty (one without labels leaves its figure and tables nothing to show).
    nonempty: tuple[str, ...] = ()

    def __init__(self, name: str | None = None, result_file: str | None = None, *, what: str | None = None,
                 command: str | None = None, required: Mapping[str, tuple[str, ...]] | None = None,
                 optional: Mapping[str, tuple[str, ...]] | None = None, nonempty: tuple[str, ...] | None = None
                 ) -> None:
        for key, value in (("name", name), ("result_file", result_file), ("what", what), ("command", command),
                           ("required", required), ("optional", optional), ("nonempty", nonempty)):
            if value is not None:
                setattr(self, key, value)

    def open(self, path: str | os.PathLike) -> xr.Dataset:
        """Load a stored result into memory, checked whole: its checksums, :attr:`required` variables and their
        dimensions, the dimensions of the :attr:`optional` ones it holds, :attr:`nonempty` dimensions and the labels
        of :data:`FIXED_LABELS` dimensions (one-line error with a rebuild hint)."""
        from xai_loc.data.integrity import open_netcdf_store

        hint = f"run 'xai-loc {self.command}' to rebuild it"
        ds = open_netcdf_store(Path(path), self.what, hint, required=self.required, optional=self.optional)
        empty = next((dim for dim in self.nonempty if ds.sizes.get(dim) == 0), None)
        if empty is not None:
            raise InputError(f"{self.what} {path} is not what it should be (its {empty!r} dimension is empty; it "
                             f"needs at least one label); {hint}")
        for dim, labels in FIXED_LABELS.items():
            found = tuple(str(label) for label in ds[dim].values) if dim in ds.dims else labels
            if found != labels:
                shown = ", ".join(repr(label) for label in found[:4]) + (", ..." if len(found) > 4 else "")
                raise InputError(f"{self.what} {path} is not what it should be (its {dim!r} labels are ({shown}), "
                                 f"expected ({', '.join(map(repr, labels))})); {hint}")
        return ds

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.result_file!r})"


class Experiment(Result, metaclass=abc.ABCMeta):
    """An experiment on models and data: ``run -> Dataset``, its tables and files.

    Subclasses set the :class:`Result` attributes and :attr:`table_files`, and implement
    :meth:`run` and :meth:`tables`.
    """

    #: Table kind (a key of :meth:`tables`) -> file name in the results folder.
    table_files: Mapping[str, str] = {}
    #: Whether :meth:`run` takes ``timing={}`` to fill with seconds spent; they are written to
    #: ``<stem>.timing.json`` beside the result, never into it (results stay byte-reproducible).
    timed: bool = False

    @abc.abstractmethod
    def run(self, models: ModelSet | Mapping[str, Any], data: Any, **options: Any) -> xr.Dataset:
        """Run the experiment on ``models`` (a :class:`~xai_loc.experiments.modelset.ModelSet`; a plain
        ``{name: checkpoint path or module}`` is converted) and ``data`` (a dataset store path)."""

    @abc.abstractmethod
    def tables(self, ds: xr.Dataset) -> dict[str, str]:
        """The result as text tables by kind: ``'markdown'`` always; CSV and LaTeX where the experiment has them."""

    @property
    def timing_file(self) -> str:
        return f"{Path(self.result_file).stem}.timing.json"

    def files(self, folder: str | os.PathLike) -> list[Path]:
        """Every file :meth:`write` may write into ``folder``: the result, the tables and (when :attr:`timed`) the
        timings."""
        names = [self.result_file, *self.table_files.values(), *([self.timing_file] if self.timed else [])]
        return [Path(folder) / name for name in names]

    def write(self, ds: xr.Dataset, folder: str | os.PathLike, *, tables: Mapping[str, str] | None = None,
              timing: Mapping[str, Any] | None = None) -> dict[str, Path]:
        """Write the result file, its tables (and the timings, if given) into ``folder``, all or none
        (:func:`~xai_loc.io.write_files_atomic`).

        Returns the paths by kind: ``'result'``, each table kind, and ``'timing'``.
        """
        from xai_loc.io import write_files_atomic

        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder} is a file; give a folder for the {self.what}")
        tables = self.tables(ds) if tables is None else tables
        paths = {"result": folder / self.result_file,
                 **{kind: folder / self.table_files[kind] for kind in tables}}
        contents = {paths["result"]: ds, **{paths[kind]: text for kind, text in tables.items()}}
        if timing is not None:
            paths["timing"] = folder / self.timing_file
            contents[paths["timing"]] = json.dumps(timing, indent=2, sort_keys=True)
        write_files_atomic(contents)
        return paths
