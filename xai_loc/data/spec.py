"""What the frozen dataclasses describing a data set share: a JSON round trip and a short digest."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any, ClassVar


class SpecRecord:
    """Mixin for frozen dataclasses whose fields are scalars, tuples of scalars or flat dicts.

    Stores record :meth:`to_dict` as JSON in their attrs, :meth:`from_dict` rebuilds the spec,
    and :meth:`digest` (the first :attr:`DIGEST_CHARS` hex digits of the sha256 of that JSON)
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
        """Short sha256 of every field."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[: self.DIGEST_CHARS]
