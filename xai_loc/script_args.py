"""Argument parsing shared by the repository's scripts and benchmarks (argparse, not click: the GPU machine
that runs ``scripts/gpu_zoo.py`` has no click).

A bad value ends in one line with exit status 2 before any work, as the ``xai-loc`` commands do.
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from xai_loc.errors import InputError
from xai_loc.runtime import CUDA_NAME, resolve_device

__all__ = ["Parser", "count", "device_name", "device_spelling", "run_main", "seconds"]


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line naming the value and what is allowed (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def count(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; use a positive integer")
    return value


def seconds(text: str) -> float:
    """argparse type: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; use a number of seconds above 0")
    return value


def device_name(text: str) -> str:
    """argparse type: ``cpu``, ``cuda`` or ``cuda:N``, available on this machine."""
    try:
        return str(resolve_device(text))
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def device_spelling(text: str) -> str:
    """argparse type: ``cpu``, ``cuda`` or ``cuda:N`` as :func:`~xai_loc.runtime.resolve_device` spells them, without
    asking whether this machine has the device (no CUDA needed to parse: a script checks that where it uses it)."""
    if not (text == "cpu" or CUDA_NAME.fullmatch(text)):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; allowed: cpu, cuda, cuda:N")
    return text


def run_main(main: Callable[[], int | None]) -> NoReturn:
    """Run a script's ``main()``: a bad value (:class:`~xai_loc.errors.InputError`, checked before any work) ends
    in one line, ``NAME: MESSAGE``, with exit status 2."""
    try:
        status = main()
    except InputError as err:
        print(f"{Path(sys.argv[0]).stem}: {err}", file=sys.stderr)
        status = 2
    sys.exit(status)
