"""The study as one self-contained web page (``xai-loc report``): figures, tables, provenance and a
window explorer where relevance can be seen and heard.

A stage above :mod:`xai_loc.plots`: it reads stored results and relevance stores and draws
with the plots' drawers; only :mod:`xai_loc.study` and the CLI import it.
"""
from xai_loc.report.page import render_report, write_report

__all__ = ["render_report", "write_report"]
