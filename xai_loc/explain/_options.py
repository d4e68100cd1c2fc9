"""Validation of the keyword options of registered composites, methods and targets."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

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
