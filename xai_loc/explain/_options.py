"""Validation of the keyword options of registered composites, methods and targets."""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from xai_loc.checks import is_integer, is_real
from xai_loc.errors import InputError


def option_defaults(func: Callable) -> dict[str, Any]:
    """Keyword-only parameters of ``func`` with their defaults (its options)."""
    return {
        name: p.default for name, p in inspect.signature(func).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def resolve(defaults: dict[str, Any], options: dict[str, Any], what: str) -> dict[str, Any]:
    """Merge ``options`` into ``defaults``; unknown names raise :class:`InputError`. NumPy scalars
    (``np.int64(3)``, ``np.float32(0.5)``) become the Python numbers they hold."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        allowed = ", ".join(sorted(defaults)) or "none"
        raise InputError(f"option {unknown[0]!r} is not allowed for {what}; allowed: {allowed}")
    return {**defaults, **{k: v.item() if isinstance(v, np.generic) else v for k, v in options.items()}}


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


def check_integer(name: str, value: Any, *, minimum: int = 0) -> int:
    """Return ``value`` as an int if it is an integer (not a bool) >= ``minimum``."""
    if not is_integer(value) or value < minimum:
        raise InputError(f"{name}={value!r} is not allowed; use an integer >= {minimum}")
    return int(value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``."""
    if value not in choices:
        raise InputError(f"{name}={value!r} is not allowed; use one of {', '.join(choices)}")
    return value
