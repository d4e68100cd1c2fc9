"""The study as one self-contained web page: ``xai-loc report RESULTS``.

The page is rendered by jinja2 from ``templates/report.html.j2``: figures inline as PNG
data URIs, audio inline as WAV data URIs, a little JavaScript for the window explorer and no
request to any server when it is viewed. Its numbers are read from the stored results
(:mod:`xai_loc.report.collect`) and relevance stores (:mod:`xai_loc.report.explorer`), never
recomputed.
"""
from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

from xai_loc.report.collect import collect_sections, describe_study_run, localization_rows, provenance
from xai_loc.report.explorer import DEFAULT_WINDOWS, build_explorers
from xai_loc.report.study_run import STATUS_TEXT

__all__ = ["render_report", "write_report"]


def _png(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _number(value: Any, digits: int = 3) -> str:
    """A table cell: fixed digits, an en dash where there is no number."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("xai_loc.report", "templates"),
                             autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["png"] = _png
    env.filters["number"] = _number
    return env


def render_report(results: str | Path, n_windows: int = DEFAULT_WINDOWS) -> str:
    """The report of the results folder ``results`` as HTML text.

    Parameters
    ----------
    results
        A results folder: a ``reproduce`` output (one sub-folder per condition) or the
        ``--out`` of one command.
    n_windows
        Windows per model in the window explorer.
    """
    from xai_loc import __version__

    root = Path(results)
    sections = []
    for section in collect_sections(root):
        explorers, no_explorer = build_explorers(section.entries.values(), n_windows) if section.explorer \
            else ([], "")
        sections.append({
            "title": section.title, "folder": str(section.folder), "missing": section.missing,
            "localization": localization_rows(section), "extra_figures": section.extra_figures,
            "entries": [{"name": e.name, "file": e.path.name, "tables": e.tables, "figures": e.figures,
                         "provenance": provenance(e), "status": STATUS_TEXT.get(e.status, "")}
                        for e in section.entries.values()],
            "earlier_figures": section.earlier_figures,
            "explorers": [{"model": x.model, "store": str(x.store), "data": x.data} for x in explorers],
            "has_explorer": section.explorer, "no_explorer": no_explorer,
        })
    return _environment().get_template("report.html.j2").render(
        root=str(root.resolve()), sections=sections, version=__version__, study_run=describe_study_run(root),
        status_text=STATUS_TEXT)


def write_report(results: str | Path, out: str | Path | None = None, n_windows: int = DEFAULT_WINDOWS) -> Path:
    """Write the report of ``results`` to ``out`` (default ``<results>/report.html``) atomically; returns it.

    A path no file can be written to (a folder, a folder that cannot be written) is one line
    (:class:`~xai_loc.errors.InputError`) before the page is rendered."""
    from xai_loc.cli_params import check_out_dir
    from xai_loc.io import check_file_path, write_text_atomic

    out = Path(results) / "report.html" if out is None else Path(out)
    check_out_dir(check_file_path(out).parent, "report folder")
    return write_text_atomic(out, render_report(results, n_windows))
