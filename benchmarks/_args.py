"""Argument types and the script entry shared by the benchmark scripts (run as ``python benchmarks/NAME.py``):
those of :mod:`xai_loc.script_args`."""
from __future__ import annotations

from xai_loc.script_args import Parser, count, device_name, run_main

__all__ = ["Parser", "count", "device_name", "run_main"]
