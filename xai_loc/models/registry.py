"""Registry of localizer architectures by name (the CLI's choices come from it), plug-ins included.

Architectures of other packages join through the entry-point group ``xai_loc.localizers``
(the Python packaging convention for plug-ins): an entry ``name = package.module:Class``
pointing at a :class:`~xai_loc.models.base.Localizer` subclass registers ``Class`` under
``name`` when :mod:`xai_loc.models` is imported, so checkpoints, ``models list``, ``explain``,
``audit``, ``perturb`` and ``tdoa`` take it like a built-in family. A plug-in that no registered
family lists joins the generic family of its output kind (:func:`xai_loc.models.families.family_of`).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from xai_loc.errors import InputError
from xai_loc.models.base import DECODERS, Localizer

MODELS: dict[str, type[Localizer]] = {}
#: Entry-point group of plug-in localizers.
PLUGIN_GROUP = "xai_loc.localizers"


def register_model(name: str, output: str = "position") -> Callable[[type[Localizer]], type[Localizer]]:
    """Class decorator registering a :class:`Localizer` subclass under ``name``.

    Sets the class attributes ``arch_name``, which checkpoints record, and ``output_kind``
    (a key of :data:`~xai_loc.models.base.DECODERS`).
    """
    if output not in DECODERS:
        raise ValueError(f"output kind {output!r} is unknown; allowed: {', '.join(DECODERS)}")

    def decorator(cls: type[Localizer]) -> type[Localizer]:
        if not (isinstance(cls, type) and issubclass(cls, Localizer)):
            raise TypeError(f"{cls!r} is not a Localizer subclass")
        if name in MODELS:
            raise ValueError(f"model name {name!r} is already registered to {MODELS[name].__name__}")
        cls.arch_name = name
        cls.output_kind = output
        MODELS[name] = cls
        return cls

    return decorator


def load_plugins() -> list[str]:
    """Register the localizers of installed packages (entry-point group :data:`PLUGIN_GROUP`).

    A plug-in class keeps the ``output_kind`` it declares (default ``"position"``). A plug-in
    that fails to load, is not a Localizer or takes a registered name is skipped with a
    one-line warning, so that one broken package does not break xai-loc. Returns the names
    registered now.
    """
    from importlib.metadata import entry_points

    added = []
    for entry in entry_points(group=PLUGIN_GROUP):
        if entry.name in MODELS and MODELS[entry.name].__module__ == entry.module:
            continue  # loaded before
        try:
            cls = entry.load()
            register_model(entry.name, output=getattr(cls, "output_kind", "position"))(cls)
        except Exception as err:  # noqa: BLE001 - any failure of foreign code: skip it, say why
            warnings.warn(f"plug-in localizer {entry.name!r} ({entry.value}) is skipped: {err}", stacklevel=2)
            continue
        added.append(entry.name)
    return added


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
