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


def first_line(err: BaseException) -> str:
    """The first sentence of an exception's message, for one-line errors."""
    lines = str(err).strip().splitlines()
    return lines[0].split(". ")[0].rstrip(".") if lines else type(err).__name__


def build_model(name: str, **kwargs: Any) -> Localizer:
    """Build the registered architecture ``name`` with constructor arguments ``kwargs``.

    Raises
    ------
    InputError
        If ``name`` is not registered or an argument is not allowed (one line, :func:`build_configured`).
    """
    return build_configured(name, kwargs, None)


def build_configured(arch: str, config: dict[str, Any], source: str | None = "model_config") -> Localizer:
    """Build the registered architecture ``arch`` from constructor arguments ``config`` (named ``source``).

    Raises
    ------
    InputError
        One line: for an ``arch`` not registered; ``'<source> does not fit <arch> (...)'`` for an argument the
        constructor does not take (or lacks), ``'<source>: <error>'`` for a value it refuses,
        ``'<source> holds a value <arch> cannot use (...)'`` for one that fails in a conversion (``int(nan)``,
        ``int(inf)``). ``source`` None: the constructor's own line for a refused value, ``config`` for the others.
    """
    if arch not in MODELS:
        raise InputError(f"unknown model architecture {arch!r}; allowed: {', '.join(sorted(MODELS))}")
    try:
        return MODELS[arch](**config)
    except TypeError as err:
        raise InputError(f"{source or 'config'} does not fit {arch} ({first_line(err)})") from None
    except InputError as err:
        raise InputError(f"{source}: {err}" if source else str(err)) from None
    except (ValueError, OverflowError) as err:
        raise InputError(f"{source or 'config'} holds a value {arch} cannot use ({first_line(err)})") from None
