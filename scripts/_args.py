"""Argument parsing of the zoo scripts (run as ``python scripts/NAME.py``: this folder is first on the path): the
shared types of :mod:`xai_loc.script_args` and the condition type.

A bad value ends in one line, ``NAME: error: MESSAGE``, with exit status 2, before any work.
"""
from __future__ import annotations

import argparse

from xai_loc.errors import InputError
from xai_loc.script_args import Parser, count, device_name, device_spelling, seconds

__all__ = ["Parser", "condition", "count", "device_name", "device_spelling", "seconds"]


def condition(text: str) -> tuple[float, float]:
    """argparse type: ``T60:SNR`` (:func:`xai_loc.data.scene.parse_condition`), its one-line error kept."""
    from xai_loc.data.scene import parse_condition

    try:
        return parse_condition(text)
    except InputError as err:  # a ValueError, which argparse would replace by 'invalid condition value'
        raise argparse.ArgumentTypeError(str(err)) from None
