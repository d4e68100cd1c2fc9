"""Type tests shared by every input check: which values count as a number.

One definition for the whole package, so that ``True``, ``np.bool_``, ``nan`` or an integer too large for a
float are refused the same way everywhere; each check still names its own bounds in its message.
"""
from __future__ import annotations

import math
import numbers

import numpy as np


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


def plain(value):
    """A NumPy scalar as the Python number it holds (checked values go into JSON cards); anything else as it is."""
    return value.item() if isinstance(value, np.generic) else value
