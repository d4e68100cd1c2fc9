"""What a results folder holds, gathered for the report: one section per folder of results.

Every registered result file (:data:`xai_loc.experiments.registry.RESULTS`) below the folder
is opened and checked whole (a damaged file stops the report in one line), grouped by the
folder it lies in (one condition of ``reproduce``, or the ``--out`` of one command), and
given its tables (experiments' own :meth:`~xai_loc.experiments.base.Experiment.tables`), its
figures (drawn from the stored result by :data:`xai_loc.plots.redraw.DRAWERS`, never
recomputed) and its provenance (the attrs stored in the file).
"""
from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xai_loc.errors import InputError
from xai_loc.io import NETCDF_DIGEST
from xai_loc.plots.inspection import INSPECTION

__all__ = ["ResultEntry", "Section", "check_kept_results", "collect_sections", "describe_study_run",
           "localization_rows", "provenance", "result_paths"]


@dataclass
class ResultEntry:
    """One stored result: its registry name, file, dataset, tables (HTML) and figures (PNG bytes by name)."""

    name: str
    path: Path
    ds: Any
    command: str
    tables: list[str] = field(default_factory=list)
    figures: dict[str, bytes] = field(default_factory=dict)
    #: Whether the last ``reproduce`` run of the folder wrote it (:func:`~xai_loc.report.study_run.file_status`).
    status: str | None = None


@dataclass
class Section:
    """The results of one folder: entries by result name, the PNG figures that come with no result
    (:data:`~xai_loc.plots.inspection.INSPECTION`), whether it has a window explorer (:func:`_has_explorer`), the
    experiments missing from it (:func:`_missing`), and which of those PNG figures the last ``reproduce`` run of the
    folder did not draw."""

    folder: Path
    title: str
    entries: dict[str, ResultEntry]
    extra_figures: dict[str, bytes]
    explorer: bool
    missing: list[str]
    earlier_figures: list[str] = field(default_factory=list)


def _markdown_to_html(text: str) -> str:
    """The experiments' markdown (GitHub pipe tables) as HTML."""
    from markdown_it import MarkdownIt

    # no raw HTML and no images: a name in a table must not make the page fetch anything when it is viewed
    return MarkdownIt("commonmark", {"html": False}).enable("table").disable("image").render(text)


def _with_units(name, attrs: Mapping[str, Any]) -> str:
    """``name [units]`` where ``attrs`` record units (``itd_slope [degree/us]``), else ``name``."""
    units = attrs.get("units")
    return f"{name} [{units}]" if units not in (None, "") else str(name)


def _dataset_tables(ds, max_rows: int = 40, max_columns: int = 12) -> list[str]:
    """HTML tables of a result without its own tables: its scalars, its 1-D variables grouped by dimension (e.g.
    the duplex probe's ITD/ILD weights per band), where a dimension has at most ``max_rows``, and each 2-D variable
    of at most ``max_rows`` by ``max_columns`` under its name (e.g. the BAST table's error per sharing and
    integration). Every variable and coordinate is named with the units it records (:func:`_with_units`)."""
    import html

    def axis(dim) -> str:
        return _with_units(dim, ds[dim].attrs if dim in ds.coords else {})

    scalars = {_with_units(name, da.attrs): [_value(da.values[()])] for name, da in ds.data_vars.items()
               if da.ndim == 0}
    by_dim: dict[str, list[str]] = {}
    for name, da in ds.data_vars.items():
        if da.ndim == 1 and da.size <= max_rows:
            by_dim.setdefault(da.dims[0], []).append(name)
    frames = [ds[names].to_dataframe()[names].rename(columns=lambda n: _with_units(n, ds[n].attrs)).rename_axis(
        axis(dim)) for dim, names in by_dim.items()]
    if scalars:
        import pandas as pd

        frames.insert(0, pd.DataFrame(scalars, index=["value"]).T)
    tables = [frame.to_html(float_format=lambda v: f"{v:.4g}", border=0) for frame in frames]
    for name, da in ds.data_vars.items():
        if da.ndim == 2 and da.shape[0] <= max_rows and da.shape[1] <= max_columns and da.dtype.kind in "biuf":
            frame = da.to_pandas().rename_axis(index=axis(da.dims[0]), columns=axis(da.dims[1]))
            tables.append(f"<p>{html.escape(_with_units(name, da.attrs))} "
                          f"({html.escape(' x '.join(map(str, da.dims)))})</p>"
                          + frame.to_html(float_format=lambda v: f"{v:.4g}", border=0))
    return tables


def _title(folder: Path, root: Path, entries: dict[str, ResultEntry]) -> str:
    """The condition the folder's results record (:func:`~xai_loc.plots.labels.condition_title`, from the first that
    records a finite one) and where it lies; the folder's name alone where none does (a binaural or user store)."""
    from xai_loc.plots.labels import condition_title

    where = folder.relative_to(root).as_posix() if folder != root else folder.name
    condition = next((title for e in entries.values() if (title := condition_title(e.ds.attrs))), "")
    return f"{condition} ({where})" if condition else where


def _figures(name: str, ds, path: Path) -> dict[str, bytes]:
    """The result's figures, drawn into a scratch folder from the stored dataset (PNG only).

    The folder's other results are linked into the scratch folder, for drawers that read a
    sibling (the duplex figure adds the relevance view of ``duplex_relevance.nc``); the results
    folder itself is never written.
    """
    from xai_loc.plots.redraw import draw_result, link_siblings

    with tempfile.TemporaryDirectory() as scratch:
        link_siblings(path.parent, Path(scratch))
        drawn = draw_result(name, ds, Path(scratch) / path.name, source=path)
        return {Path(p).name: Path(p).read_bytes() for p in drawn if Path(p).suffix == ".png"}


def _one_condition_per_folder(recorded: Mapping[Path, tuple[float, float]],
                              rewritten: Mapping[Path, tuple[float, float]]) -> None:
    """One line where a folder holds results of different conditions (a section has one title); ``recorded``:
    result file -> the (T60, SNR) it records (:func:`~xai_loc.plots.redraw.recorded_condition`), ``rewritten``: the
    same of the results a run is about to write (named in the message as what the run writes)."""
    conditions: dict[Path, dict[tuple[float, float], str]] = {}
    for path, key in sorted({**rewritten, **recorded}.items()):
        if all(math.isfinite(v) for v in key):  # a binaural store's results record no condition (NaN)
            conditions.setdefault(path.parent, {}).setdefault(key, path.name)
    for folder, found in sorted(conditions.items()):
        run = next((key for path, key in rewritten.items() if path.parent == folder), None)
        if len(found) > 1 and run is not None:
            name, (t, s) = next((name, key) for key, name in sorted(found.items()) if key != run)
            raise InputError(f"{folder / name} holds results of T60 {t:g} s, SNR {s:g} dB, but this run writes those "
                             f"of T60 {run[0]:g} s, SNR {run[1]:g} dB into {folder} (one condition per folder); "
                             f"remove {name} or choose another output folder")
        if len(found) > 1:
            listed = ", ".join(f"{name} (T60 {t:g} s, SNR {s:g} dB)" for (t, s), name in sorted(found.items()))
            raise InputError(f"{folder} holds results of different conditions: {listed}; keep one condition per "
                             "folder")


def result_paths(root: str | Path) -> list[tuple[Path, Any]]:
    """``(path, registered result)`` of every registered result file below ``root``, sorted."""
    from xai_loc.experiments.registry import RESULTS
    from xai_loc.plots.redraw import result_files

    return sorted((path, result) for result in RESULTS.values() for path in result_files(Path(root),
                                                                                         result.result_file))


def _tables(result, ds, path: Path) -> list[str]:
    """The tables of a result as HTML: an experiment's own, or its variables' (:func:`_dataset_tables`)."""
    from xai_loc.experiments.registry import EXPERIMENTS
    from xai_loc.plots.redraw import unusable_result

    with unusable_result(result.name, ds, path, "cannot be tabulated"):
        return [_markdown_to_html(result.tables(ds)["markdown"])] if result.name in EXPERIMENTS \
            else _dataset_tables(ds)


def _open_all(found, rewritten: Mapping[Path, tuple[float, float]] | None = None) -> list[tuple[Path, Any, Any]]:
    """``(path, registered result, dataset)`` of each ``(path, result)`` of ``found``, opened and checked whole, all
    before any is drawn; then one condition per folder (:func:`_one_condition_per_folder`), the results a run is
    about to write counted in (``rewritten``: path -> the (T60, SNR) it will record). A one-line error where one
    fails, or records a condition that is not a number."""
    from xai_loc.plots.redraw import recorded_condition

    opened = [(path, result, result.open(path)) for path, result in found]
    _one_condition_per_folder({path: recorded_condition(result.name, ds, path) for path, result, ds in opened},
                              rewritten or {})
    return opened


def check_kept_results(root: str | Path, rewritten: Mapping[Path, tuple[float, float]]) -> None:
    """Check, before a run that writes the results ``rewritten`` (result file below ``root``, named as ``root /
    ...``, -> the (T60, SNR) it will record), what :func:`collect_sections` reads afterwards of the results the run
    keeps: every other registered result below ``root`` opened and checked whole and tabulated, and one condition
    per folder, the run's results counted in. One line (:class:`~xai_loc.errors.InputError`) naming the file."""
    kept = [(path, result) for path, result in result_paths(root) if path not in rewritten]
    for path, result, ds in _open_all(kept, rewritten):
        _tables(result, ds, path)


def _has_explorer(families, entries) -> bool:
    """Whether a section gets a window explorer: where its models are of a family the TDOA probe reads (the explorer
    shows microphone signals, their relevance and GCC-PHAT as ``tdoa.nc`` computed it); where its results record no
    model it knows, where it holds a result of an experiment."""
    from xai_loc.experiments.registry import EXPERIMENTS

    if families:
        return any("tdoa" in family.probes for family in families)
    return any(name in EXPERIMENTS for name in entries)


def _missing(families, entries) -> list[str]:
    """The experiments a section with a result of an experiment lacks (file, what, command): those whose command
    reads a family of its models (:attr:`~xai_loc.models.families.Family.probes`), every one where its results record
    no model it knows."""
    from xai_loc.experiments.registry import EXPERIMENTS

    if not any(name in EXPERIMENTS for name in entries):
        return []
    return [f"{e.result_file} ({e.what}; run 'xai-loc {e.command}')" for e in EXPERIMENTS.values()
            if e.name not in entries and (not families or any(e.name in family.probes for family in families))]


def collect_sections(root: str | Path) -> list[Section]:
    """Open every registered result below ``root`` and gather them by folder (sorted by path).

    Where ``root`` holds the record of a ``reproduce`` run (:mod:`xai_loc.report.study_run`), or its parent
    holds that of a run that wrote into ``root`` (one condition of the run), each result and figure says whether
    that run wrote it.

    Raises :class:`~xai_loc.errors.InputError` (one line, naming the file) where ``root`` is not a
    folder, holds no results, a result file or the run's record is damaged, a result lacks what its
    tables or figures read, or a folder mixes conditions.
    """
    from xai_loc.plots.labels import recorded_families
    from xai_loc.plots.redraw import no_results_hint
    from xai_loc.report.study_run import file_status, find_study_run

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"results folder {str(root)!r} does not exist or is not a folder")
    found = result_paths(root)
    if not found:
        raise InputError(no_results_hint(root))
    record_root, record = find_study_run(root)
    by_folder: dict[Path, dict[str, ResultEntry]] = {}
    for path, result, ds in _open_all(found):
        by_folder.setdefault(path.parent, {})[result.name] = ResultEntry(
            result.name, path, ds, result.command, _tables(result, ds, path), _figures(result.name, ds, path),
            file_status(record, record_root, path))
    sections = []
    for folder, entries in sorted(by_folder.items()):
        # the figures that come with no result file (reproduce's input inspection); any other PNG is a result's,
        # drawn above from the stored result when it is there, and never shown beside a result that did not draw
        # it (e.g. the srp.png of an earlier tdoa run beside a tdoa.nc without SRP)
        others = sorted(folder.glob(INSPECTION.format("*") + ".png"))
        extra = {p.name: p.read_bytes() for p in others}
        earlier = [p.name for p in others if file_status(record, record_root, p) == "earlier"]
        families = [*{f.name: f for e in entries.values() for f in recorded_families(e.ds.attrs)}.values()]
        sections.append(Section(folder, _title(folder, root, entries), entries, extra,
                                _has_explorer(families, entries), _missing(families, entries), earlier))
    return sections


def describe_study_run(root: str | Path) -> dict[str, Any] | None:
    """What the report says of the last ``reproduce`` run of ``root`` (its record in ``root``, or in its parent
    for one condition of that run, :func:`~xai_loc.report.study_run.find_study_run`):
    ``{"text", "finished"}``, or ``None`` where there is no record of one."""
    from xai_loc.report.study_run import find_study_run

    record = find_study_run(root)[1]
    if record is None:
        return None
    settings = record["settings"]
    parts = ["quick run" if settings.get("quick") else "full test split"]
    if settings.get("conditions"):
        parts.append("conditions " + ", ".join(settings["conditions"]))
    if settings.get("skipped"):
        parts.append("skipped " + ", ".join(settings["skipped"]))
    if settings.get("missing_checkpoints"):
        parts.append("no checkpoint for " + ", ".join(settings["missing_checkpoints"]))
    parts.append(f"{len(record['files'])} files written")
    return {"text": "; ".join(parts), "finished": record["finished"]}


def localization_rows(section: Section) -> list[dict[str, Any]]:
    """Localization error of each model beside its baselines, read from the section's stored results.

    The models' and the constant predictor's MAE per coordinate and the models' mean Euclidean error (3-D) come
    from ``perturbation.nc`` (nothing deleted, 0 %); SRP-PHAT's and its constant's (Euclidean in the x-y plane)
    from ``tdoa.nc``. Each row: ``{"estimator", "kind", "x", "y", "z", "mean", "euclidean", "source", "status"}``
    (NaN where a number is not stored; ``status`` that of the result file read), the models' rows with
    ``"paper"``, the published MAE per coordinate of their architecture and condition (the constant's row has no
    Euclidean error: NaN). A result lacking what a row reads, or holding an attribute of another kind (``models``
    not a JSON object of objects), is a one-line :class:`~xai_loc.errors.InputError`
    (:func:`~xai_loc.plots.redraw.unusable_result`).
    """
    from xai_loc.plots.redraw import unusable_result

    rows = []
    for name, reader in (("perturbation", _perturbation_rows), ("tdoa", _srp_rows)):
        entry = section.entries.get(name)
        if entry is not None:
            with unusable_result(name, entry.ds, entry.path, "cannot be tabulated"):
                rows += reader(entry)
    return rows


def _perturbation_rows(pert: ResultEntry) -> list[dict[str, Any]]:
    """The models' rows and the constant predictor's of :func:`localization_rows`, from ``perturbation.nc``."""
    from xai_loc.models.zoo import paper_mae

    rows = []
    if 0.0 in pert.ds["percentage"].values:  # the models' own error: nothing deleted
        ds = pert.ds
        unperturbed = ds.sel(percentage=0.0, mode=ds["mode"].values[0])
        models = json.loads(ds.attrs.get("models", "{}"))
        for model in ds["model"].values:
            mae = unperturbed["mae"].sel(model=model, xyz=list("xyz")).values
            paper = paper_mae(*_trained_condition(models.get(str(model), {}), ds.attrs))
            euclidean = float(unperturbed["euclidean"].sel(model=model)) if "euclidean" in ds else np.nan
            rows.append({"estimator": str(model), "kind": "model", "x": mae[0], "y": mae[1], "z": mae[2],
                         "mean": float(mae.mean()), "euclidean": euclidean,  # NaN: a file written before it
                         "source": f"perturbation.nc, 0 %, {_counted(ds.attrs)}",
                         "paper": np.nan if paper is None else paper, "status": pert.status})
        base = ds["baseline_mae"].sel(xyz=list("xyz")).values
        rows.append({"estimator": "constant (centroid)", "kind": "baseline", "x": base[0], "y": base[1],
                     "z": base[2], "mean": float(ds["baseline_mae_mean"]),
                     "source": f"perturbation.nc, {_counted(ds.attrs)}", "status": pert.status})
    return rows


def _srp_rows(tdoa: ResultEntry) -> list[dict[str, Any]]:
    """SRP-PHAT's rows and its constant's of :func:`localization_rows`, from ``tdoa.nc``."""
    from xai_loc.plots.labels import stored_attr

    rows = []
    if "srp_error" in tdoa.ds:
        err, windows = tdoa.ds["srp_error"], int(stored_attr(tdoa.ds, "srp_windows"))
        for name in err["srp_estimator"].values:
            if str(name) not in ("signals", "constant"):
                continue
            row = err.sel(srp_estimator=name)
            rows.append({"estimator": f"SRP-PHAT {name}" if name == "signals" else "SRP-PHAT constant (grid centre)",
                         "kind": "baseline", "x": float(row.sel(srp_metric="x")), "y": float(row.sel(srp_metric="y")),
                         "z": np.nan, "mean": np.nan, "euclidean": float(row.sel(srp_metric="euclidean")),
                         "source": f"tdoa.nc (x-y plane, mean |error|), {windows} windows",
                         "status": tdoa.status})
    return rows


def _counted(attrs: Mapping[str, Any]) -> str:
    """How many windows and sources a stored number is from (a quick run's few are then plain to see);
    ``counts not recorded`` for a result written before they were."""
    if "n_windows" not in attrs or "n_sources" not in attrs:
        return "counts not recorded"
    return f"{int(attrs['n_windows'])} windows of {int(attrs['n_sources'])} sources"


def _trained_condition(info: dict[str, Any], attrs: Mapping[str, Any]) -> tuple[str | None, float, float]:
    """Architecture and the condition a model was trained in (its card's, recorded as ``model_condition``),
    else the data's: the paper's number to set beside it is the one of its own condition."""
    with contextlib.suppress(TypeError, ValueError, KeyError):
        condition = json.loads(info["model_condition"])
        return info.get("model"), float(condition["t60"]), float(condition["snr"])
    return info.get("model"), float(attrs.get("t60", np.nan)), float(attrs.get("snr", np.nan))


def _value(value: Any) -> Any:
    """An attr as text, JSON strings parsed and pretty-printed."""
    if isinstance(value, np.ndarray):
        return np.array2string(value, separator=", ", precision=6)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.dumps(json.loads(value), indent=1, sort_keys=True)
        except ValueError:
            return value
    return value


def provenance(entry: ResultEntry) -> dict[str, Any]:
    """The provenance of a stored result: its attrs (JSON pretty-printed) and the models it scored.

    ``{"attrs": {key: text}, "models": [{"name", "checkpoint", "checkpoint_digest", "model_digest",
    "composite", "target"}], "command": ...}``; the command is the one that writes this kind of
    file (the exact arguments are not stored in results).
    """
    attrs = {key: _value(value) for key, value in entry.ds.attrs.items() if key != NETCDF_DIGEST}
    try:
        models = json.loads(entry.ds.attrs.get("models", "{}"))
    except (TypeError, ValueError):
        models = {}
    rows = [{"name": name, **{k: info.get(k, entry.ds.attrs.get(k, "")) for k in
                              ("checkpoint", "checkpoint_digest", "model_digest", "composite", "target")}}
            for name, info in (models.items() if isinstance(models, dict) else []) if isinstance(info, dict)]
    return {"attrs": attrs, "models": rows, "command": f"xai-loc {entry.command}"}
