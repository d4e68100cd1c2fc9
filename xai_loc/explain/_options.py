"""Validation of the keyword options of registered composites, methods and targets."""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

from xai_loc.errors import InputError


def option_defaults(func: Callable) -> dict[str, Any]:
    """Keyword-only parameters of ``func`` with their defaults (its options)."""
    return {
        name: p.default for name, p in inspect.signature(func).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def resolve(defaults: dict[str, Any], options: dict[str, Any], what: str) -> dict[str, Any]:
    """Merge ``options`` into ``defaults``; unknown names raise :class:`InputError`."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        allowed = ", ".join(sorted(defaults)) or "none"
        raise InputError(f"option {unknown[0]!r} is not allowed for {what}; allowed: {allowed}")
    return {**defaults, **options}


def check_number(name: str, value: Any, *, minimum: float = 0.0, strict: bool = False) -> float:
    """Return ``value`` as a float if it is a finite number >= (or >) ``minimum``."""
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < minimum or (strict and value == minimum):
        raise InputError(f"{name}={value!r} is not allowed; use a number {bound}")
    return float(value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``."""
    if value not in choices:
        raise InputError(f"{name}={value!r} is not allowed; use one of {', '.join(choices)}")
    return value
