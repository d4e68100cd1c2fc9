"""Argument parsing shared by the repository's scripts and benchmarks (argparse, not click: the GPU machine
that runs ``scripts/gpu_zoo.py`` has no click).

Every value is checked by its option's ``type``, so a bad one ends in one line naming the option and the value
and saying what is allowed (``NAME.py: error: argument --epochs: '0' is not allowed; use a positive integer``),
with exit status 2, before any work. A library setting is checked by its entry of the library's check table
(:func:`setting`, e.g. :data:`xai_loc.models.training.CHECKS`) and any other library check by :func:`checked`, so
that each check is written once and the option's name comes from argparse.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from xai_loc.errors import InputError
from xai_loc.runtime import CUDA_NAME, MAX_THREADS, parse_int, parse_number, resolve_device

__all__ = ["Parser", "checked", "count", "device_name", "device_spelling", "folder", "integer", "number", "run_main",
           "seconds", "setting", "threads"]

T = TypeVar("T")


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line naming the value and what is allowed (no usage block), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def number(test: Callable[[Any], bool], allowed: str, integer: bool = False) -> Callable[[str], int | float]:
    """argparse type: a number (an ``integer``) as the command line writes one (:func:`~xai_loc.runtime.parse_number`,
    :func:`~xai_loc.runtime.parse_int`) that ``test`` allows; anything else is ``'TEXT' is not allowed; use
    ALLOWED``."""

    def convert(text: str) -> int | float:
        try:
            value = (parse_int if integer else parse_number)(text)
        except ValueError:
            value = None
        if value is None or not test(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not allowed; use {allowed}")
        return value

    return convert


def integer(minimum: int = 1, maximum: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in ``[minimum, maximum]`` (no upper bound where ``maximum`` is None)."""
    if maximum is not None:
        return number(lambda v: minimum <= v <= maximum, f"an integer in [{minimum}, {maximum}]", integer=True)
    allowed = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    return number(lambda v: v >= minimum, allowed, integer=True)


def setting(checks: Mapping[str, tuple[Callable[[Any], bool], str]], field: str,
            integer: bool = False) -> Callable[[str], int | float]:
    """argparse type of a library setting: ``field``'s entry ``(test, what is allowed)`` of the library's check table
    ``checks`` (e.g. :data:`xai_loc.models.training.CHECKS`). An option left out is the setting's None, so the
    table's "None or" is not offered."""
    test, allowed = checks[field]
    return number(test, allowed.removeprefix("None or "), integer)


def checked(check: Callable[[Any], T], numeric: bool = False) -> Callable[[str], T]:
    """argparse type: the value of a library check ``check(text)``, whose one-line
    :class:`~xai_loc.errors.InputError` becomes the option's error (argparse puts ``argument --OPTION:`` before
    it). ``numeric``: the text is read as a number first (:func:`~xai_loc.runtime.parse_number`); text that is no
    number goes to the check as it is, which refuses it."""

    def convert(text: str) -> T:
        value: Any = text
        if numeric:
            with contextlib.suppress(ValueError):
                value = parse_number(text)
        try:
            return check(value)
        except InputError as err:  # a ValueError, which argparse would replace by 'invalid convert value'
            raise argparse.ArgumentTypeError(str(err)) from None

    return convert


#: A count: an integer of at least 1.
count = integer(1)
#: Torch CPU threads, as :func:`~xai_loc.runtime.configure_threads` allows them.
threads = integer(1, MAX_THREADS)
#: A finite number of seconds above 0.
seconds = number(lambda v: math.isfinite(v) and v > 0, "a number of seconds above 0")
#: ``cpu``, ``cuda`` or ``cuda:N``, available on this machine (:func:`~xai_loc.runtime.resolve_device`).
device_name = checked(lambda text: str(resolve_device(text)))


def device_spelling(text: str) -> str:
    """argparse type: ``cpu``, ``cuda`` or ``cuda:N`` as :func:`~xai_loc.runtime.resolve_device` spells them, without
    asking whether this machine has the device (no CUDA needed to parse: a script checks that where it uses it)."""
    if not (text == "cpu" or CUDA_NAME.fullmatch(text)):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; allowed: cpu, cuda, cuda:N")
    return text


def _folder(text: str) -> Path:
    from xai_loc.cli_params import check_out_dir  # imports click: only where a script has a folder option

    path = Path(text)
    return path if path.is_dir() else check_out_dir(path, "folder")


#: A folder that exists, or can be made (:func:`~xai_loc.cli_params.check_out_dir`; nothing is made), e.g. a data
#: root: a file there is refused before any work.
folder = checked(_folder)


def run_main(main: Callable[[], int | None]) -> NoReturn:
    """Run a script's ``main()``: a bad value (:class:`~xai_loc.errors.InputError`, checked before any work) ends
    in one line, ``NAME.py: error: MESSAGE`` as argparse's own, with exit status 2."""
    try:
        status = main()
    except InputError as err:
        print(f"{Path(sys.argv[0]).name}: error: {err}", file=sys.stderr)
        status = 2
    sys.exit(status)
