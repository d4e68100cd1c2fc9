"""Type tests shared by every input check: which values count as a number, and the one-line checks built on them.

One definition for the whole package, so that ``True``, ``np.bool_``, ``nan`` or an integer too large for a
float are refused the same way everywhere; each check still names its own bounds in its message.
"""
from __future__ import annotations

import math
import numbers
import reprlib
from typing import Any

import numpy as np

from xai_loc.errors import InputError

#: The largest batch a command or a training recipe takes: more windows than that fit no memory, and a number of 2**63
#: or more would not fit the int64 attribute a result records (it crashed at the end of a run).
MAX_BATCH = 2**20
#: Most points on a path method's path (``n_steps``, ``n_samples``): a path of more points is no meaningful refinement
#: of the integral (its quadrature error is long below float32 rounding), and the memory and time it would take grow
#: without bound (every point is a forward and backward pass per window).
MAX_PATH_POINTS = 100_000


def is_integer(value) -> bool:
    """Whether ``value`` is an integer (Python or NumPy), not a boolean."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value) -> bool:
    """Whether ``value`` is a finite real number (Python or NumPy), not a boolean."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def shown(value) -> str:
    """``repr(value)`` shortened to one line by :mod:`reprlib` (an array would print in full, on many lines)."""
    return reprlib.repr(value).replace("\n", " ")


def plain(value):
    """A NumPy scalar as the Python number it holds (checked values go into JSON cards); anything else as it is."""
    return value.item() if isinstance(value, np.generic) else value


def check_number(name: str, value: Any, *, minimum: float = 0.0, strict: bool = False,
                 maximum: float = math.inf) -> float:
    """Return ``value`` as a float if it is a finite real number >= (or >) ``minimum`` and <= ``maximum``."""
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    if maximum < math.inf:
        bound += f" and <= {maximum:g}"
    if not is_real(value) or value < minimum \
            or (strict and value == minimum) or value > maximum:
        raise InputError(f"{name}={value!r} is not allowed; use a number {bound}")
    return float(value)


def check_integer(name: str, value: Any, *, minimum: int = 0, maximum: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer (not a bool) >= ``minimum`` (and <= ``maximum``)."""
    if not is_integer(value) or value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise InputError(f"{name}={value!r} is not allowed; use an integer {bound}")
    return int(value)


def check_fs(fs: Any, what: str = "fs") -> int:
    """Return a sample rate in Hz as an int if it is a positive whole number: ``16000``, ``16000.0`` or a NumPy
    integer or float holding one (every front end, HRTF set and corpus checks its rate here)."""
    if not (is_real(fs) and fs > 0 and fs == int(fs)):
        raise InputError(f"{what}={fs!r} is not allowed; give a positive integer rate in Hz such as 16000")
    return int(fs)


def check_flag(name: str, value: Any) -> bool:
    """Return ``value`` if it is ``True`` or ``False`` (a number, ``np.bool_`` or a string is no flag)."""
    if not isinstance(value, bool):
        raise InputError(f"{name}={shown(value)} is not allowed; use True or False")
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``."""
    if value not in choices:
        raise InputError(f"{name}={value!r} is not allowed; use one of {', '.join(choices)}")
    return value
