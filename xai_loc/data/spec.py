"""One digest for every store's identity, and what the frozen dataclasses describing a data set share."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any, ClassVar


def spec_digest(record: Any, chars: int = 16) -> str:
    """The first ``chars`` hex digits of the sha256 of ``record`` as sorted-key JSON (other objects as ``str``).

    The one digest of xai-loc's stores: a spec names a store folder with it, and a writer
    compares the digest of what a store holds with the digest of what it is asked for
    (:class:`~xai_loc.data.resumable.ResumableStore`) before it reuses or resumes the store.
    """
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:chars]


class SpecRecord:
    """Mixin for frozen dataclasses whose fields are scalars, tuples of scalars or flat dicts.

    Stores record :meth:`to_dict` as JSON in their attrs, :meth:`from_dict` rebuilds the spec,
    and :meth:`digest` (:func:`spec_digest` of that dict, :attr:`DIGEST_CHARS` hex digits)
    names or checks a store.
    """

    DIGEST_CHARS: ClassVar[int] = 16

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """The spec :meth:`to_dict` recorded (lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def digest(self) -> str:
        """Short sha256 of every field (:func:`spec_digest`)."""
        return spec_digest(self.to_dict(), self.DIGEST_CHARS)
