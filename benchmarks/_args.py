"""Argument types shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""
from __future__ import annotations

import argparse

from xai_loc.errors import InputError
from xai_loc.runtime import resolve_device


def count(text: str) -> int:
    """argparse type: an integer of at least 1 (a zero or negative count ends in argparse's one-line error)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; use a positive integer")
    return value


def device_name(text: str) -> str:
    """argparse type: ``cpu``, ``cuda`` or ``cuda:N``, available on this machine."""
    try:
        return str(resolve_device(text))
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None

