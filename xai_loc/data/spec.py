"""One digest for every store's identity, and what the frozen dataclasses describing a data set share."""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, fields
from typing import Any, ClassVar

from xai_loc.checks import is_integer, is_real
from xai_loc.errors import InputError

#: Names that become folders below the data root: letters, digits, '.', '_', '-', not starting with '.'.
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
NAME_MAX = 100
NAME_RULE = (f"use 1 to {NAME_MAX} letters, digits, '.', '_' or '-', not starting with '.' and without '..' "
             "(it becomes a folder name)")


def short_repr(value, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_name(name, what: str = "name") -> str:
    """``name`` if it may name a folder below the data root (:data:`NAME_RULE`), else one line naming it."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name or len(name) > NAME_MAX:
        raise InputError(f"{what} {short_repr(name)} is not allowed; {NAME_RULE}")
    return name


def numbers(value, length: int | None = None) -> tuple[float, ...]:
    """``value`` (a sequence of numbers, ``length`` of them where given) as a tuple of floats.

    Raises
    ------
    TypeError, ValueError
        For a string, a mapping, a non-number item or another length.
    """
    if isinstance(value, (str, bytes, Mapping)) or not all(is_real(v) for v in value):
        raise TypeError(f"{value!r} is not a sequence of numbers")
    out = tuple(float(v) for v in value)
    if length is not None and len(out) != length:
        raise ValueError(f"{value!r} does not hold {length} numbers")
    return out


def words(value) -> tuple[str, ...]:
    """``value`` (a sequence of strings, not one string) as a tuple; TypeError for anything else."""
    if isinstance(value, (str, bytes, Mapping)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{value!r} is not a sequence of strings")
    return tuple(value)


def spec_digest(record: Any, chars: int = 16) -> str:
    """The first ``chars`` hex digits of the sha256 of ``record`` as sorted-key JSON (other objects as ``str``).

    The one digest of xai-loc's stores: a spec names a store folder with it, and a writer
    compares the digest of what a store holds with the digest of what it is asked for
    (:class:`~xai_loc.data.resumable.ResumableStore`) before it reuses or resumes the store.
    """
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:chars]


def omit_later(record: Mapping[str, Any], later: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` without the ``later`` fields (added after records were written) that hold the value ``later``
    gives them, the value older records mean: the digests of those records hold."""
    return {k: v for k, v in record.items() if not (k in later and later[k] == v)}


#: What :func:`differing_fields` gives for a field that a record lacks (and no default stands for).
ABSENT = object()


def differing_fields(found: Mapping[str, Any], asked: Mapping[str, Any], defaults: Mapping[str, Any] | None = None,
                     keys: Sequence[str] | None = None) -> Iterator[tuple[str, Any, Any]]:
    """``(name, recorded value, asked value)`` of every field that differs between a recorded record ``found`` and
    the ``asked`` one, nested mappings field by field under dotted names.

    ``keys`` are the fields compared (default: ``asked``'s, then ``found``'s others; nested mappings: always both).
    A field a record lacks is :data:`ABSENT`; with ``defaults`` (nested like ``asked``) it is the value ``defaults``
    gives it, None where it gives none: what records written before the field existed mean.
    """
    for key in dict.fromkeys([*asked, *found] if keys is None else keys):
        default = ABSENT if defaults is None else defaults.get(key)
        was, now = found.get(key, default), asked.get(key, default)
        if isinstance(was, Mapping) and isinstance(now, Mapping):
            inner = None if defaults is None else default if isinstance(default, Mapping) else {}
            yield from ((f"{key}.{name}", a, b) for name, a, b in differing_fields(was, now, inner))
        elif was is ABSENT or now is ABSENT or was != now:
            yield key, was, now


def first_difference(found: Mapping[str, Any], asked: Mapping[str, Any]) -> str | None:
    """The first field whose value differs between a recorded record ``found`` and the ``asked`` one, as
    ``'seed 0 recorded, 1 asked'`` (nested mappings by dotted names, ``asked``'s order first); None where none does
    (:func:`differing_fields`)."""
    for key, was, now in differing_fields(found, asked):
        return (f"{key} {'not' if was is ABSENT else short_repr(was)} recorded, "
                f"{'not' if now is ABSENT else short_repr(now)} asked")
    return None


def older_store(found: Any, version: int) -> str | None:
    """What to say (after the path) of a store whose ``config`` ``found`` records a version before ``version``;
    None where it records another or none."""
    was = found.get("version") if isinstance(found, Mapping) else None
    if is_integer(was) and was < version:
        return f"was written by an older xai-loc (store version {was}, now {version}); remove it to render it again"
    return None


def store_mismatch(mismatch: str | Callable[[Any], str], version: int) -> Callable[[Any], str]:
    """The ``mismatch`` of :func:`~xai_loc.data.resumable.write_store` for a store whose ``config`` records
    ``version``: a finished store of an earlier version is told to be rendered again (:func:`older_store`), any
    other one ``mismatch`` (or what ``mismatch(found)`` says)."""
    def message(found: Any) -> str:
        return older_store(found, version) or (mismatch if isinstance(mismatch, str) else mismatch(found))

    return message


class SpecRecord:
    """Mixin for frozen dataclasses whose fields are scalars, tuples of scalars or flat dicts.

    Stores record :meth:`to_dict` as JSON in their attrs, :meth:`from_dict` rebuilds the spec,
    and :meth:`digest` (:func:`spec_digest` of that dict, :attr:`DIGEST_CHARS` hex digits)
    names or checks a store. A spec validates its fields in ``__post_init__`` (every bad value
    one :class:`~xai_loc.errors.InputError` naming the field; :meth:`_convert` for the fields it
    converts), so a spec a file records is checked as one given in code.
    """

    DIGEST_CHARS: ClassVar[int] = 16
    #: Fields added after stores and cards recorded the spec, with the value those records mean: at that
    #: value :meth:`to_dict` leaves them out (:func:`omit_later`), so the digests and stores of older specs hold.
    LATER_FIELDS: ClassVar[dict[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (tuples as lists), :attr:`LATER_FIELDS` at their old value left out."""
        record = omit_later(asdict(self), self.LATER_FIELDS)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in record.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """The spec :meth:`to_dict` recorded (lists back to tuples).

        Raises
        ------
        InputError
            For a record that is not a mapping, holds a field the spec does not have, or a bad value.
        """
        allowed = [f.name for f in fields(cls)]
        if not isinstance(data, Mapping):
            raise InputError(f"a {cls.__name__} record must be a mapping of its fields, not {short_repr(data)}")
        unknown = sorted(set(data) - set(allowed), key=str)
        if unknown:
            raise InputError(f"a {cls.__name__} has no field {unknown[0]!r}; allowed: {', '.join(allowed)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def digest(self) -> str:
        """Short sha256 of :meth:`to_dict` (:func:`spec_digest`)."""
        return spec_digest(self.to_dict(), self.DIGEST_CHARS)

    def _convert(self, name: str, convert: Callable[[Any], Any], allowed: str) -> Any:
        """Field ``name`` as ``convert`` makes it, stored back; a value it refuses (TypeError, ValueError) is
        one line naming the field and ``allowed``."""
        value = getattr(self, name)
        try:
            out = convert(value)
        except (TypeError, ValueError):
            raise InputError(f"{name}={short_repr(value)} is not allowed; {allowed}") from None
        object.__setattr__(self, name, out)
        return out
