"""Argument types and the script entry shared by the benchmark scripts (run as ``python benchmarks/NAME.py``):
those of :mod:`xai_loc.script_args` and the faithfulness suite's method and fill lists."""
from __future__ import annotations

from xai_loc.script_args import Parser, checked, count, device_name, device_spelling, run_main, threads

__all__ = ["Parser", "checked", "count", "device_name", "device_spelling", "fills", "methods", "run_main", "threads"]


def _methods(text: str) -> list[str]:
    """Comma-separated attribution methods, ``lrp:paper,saliency`` (:func:`~xai_loc.experiments.faithfulness.
    parse_methods`)."""
    from xai_loc.experiments.faithfulness import parse_methods

    names = [name.strip() for name in text.split(",")]
    parse_methods(names)
    return names


def _fills(text: str) -> list[str]:
    """Comma-separated fills of the deleted samples (:func:`~xai_loc.experiments.faithfulness.check_fills`)."""
    from xai_loc.experiments.faithfulness import check_fills

    return list(check_fills(text.split(",")))


#: argparse types of ``--methods`` and ``--fills``.
methods, fills = checked(_methods), checked(_fills)
