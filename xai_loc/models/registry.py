"""Registry of localizer architectures by name (the CLI's choices come from it)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xai_loc.errors import InputError
from xai_loc.models.base import Localizer

MODELS: dict[str, type[Localizer]] = {}


def register_model(name: str) -> Callable[[type[Localizer]], type[Localizer]]:
    """Class decorator registering a :class:`Localizer` subclass under ``name``.

    Sets the class attribute ``arch_name``, which checkpoints record.
    """
    def decorator(cls: type[Localizer]) -> type[Localizer]:
        if not (isinstance(cls, type) and issubclass(cls, Localizer)):
            raise TypeError(f"{cls!r} is not a Localizer subclass")
        if name in MODELS:
            raise ValueError(f"model name {name!r} is already registered to {MODELS[name].__name__}")
        cls.arch_name = name
        MODELS[name] = cls
        return cls

    return decorator


def build_model(name: str, **kwargs: Any) -> Localizer:
    """Build the registered architecture ``name`` with constructor arguments ``kwargs``.

    Raises
    ------
    InputError
        If ``name`` is not registered or an argument is not allowed.
    """
    if name not in MODELS:
        raise InputError(f"unknown model architecture {name!r}; allowed: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)
