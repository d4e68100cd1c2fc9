"""Argument types, the script entry and the interleaved timing shared by the benchmark scripts (run as ``python
benchmarks/NAME.py``): those of :mod:`xai_loc.script_args`, the faithfulness suite's method and fill lists and
:func:`best_of`."""
from __future__ import annotations

import time

from xai_loc.script_args import Parser, checked, count, device_name, device_spelling, run_main, threads

__all__ = ["Parser", "best_of", "checked", "count", "device_name", "device_spelling", "fills", "methods", "run_main",
           "threads"]


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


def best_of(repeats: int, *fns) -> tuple[list[float], list]:
    """The fastest of ``repeats`` runs of each of ``fns``, in seconds, the runs interleaved so
    that both see the same machine (as ``timeit`` advises, the slower runs measure the machine),
    and what each returned on its last run."""
    times, results = [[] for _ in fns], [None for _ in fns]
    for _ in range(repeats):
        for k, (fn, t) in enumerate(zip(fns, times, strict=True)):
            start = time.perf_counter()
            results[k] = fn()
            t.append(time.perf_counter() - start)
    return [min(t) for t in times], results
