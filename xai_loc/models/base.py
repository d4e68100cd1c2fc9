"""Base class of the end-to-end localizers: a window [mics, samples] -> source (x, y, z)."""
from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from xai_loc.errors import InputError


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is a positive integer, else raise :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name}={value!r} is not allowed; use a positive integer")
    return value


#: What a localizer's output can be: a source position (x, y, z) in metres, an azimuth in
#: degrees, (azimuth, elevation) angles, logits of direction classes over a grid, or
#: ``[cos az, sin az]`` vectors. The multichannel experiments (perturbation in metres, TDOA,
#: SRP) take position localizers.
OUTPUT_KINDS = ("position", "azimuth", "azimuth_elevation", "direction_classes", "cos_sin")


class Localizer(nn.Module):
    """A network mapping a multichannel window to a source position in metres.

    Subclasses are registered with :func:`xai_loc.models.register_model`, which sets
    :attr:`arch_name`; their constructor takes exactly the arguments in :attr:`config`,
    so that a checkpoint card can rebuild them.

    Parameters
    ----------
    n_mics
        Number of microphones (input channels).
    n_samples
        Window length in samples.
    """

    arch_name: ClassVar[str] = ""
    #: What the output means, one of :data:`OUTPUT_KINDS` (set by ``register_model(..., output=...)``).
    output_kind: ClassVar[str] = "position"

    def __init__(self, n_mics: int, n_samples: int) -> None:
        super().__init__()
        self.n_mics = check_positive_int("n_mics", n_mics)
        self.n_samples = check_positive_int("n_samples", n_samples)

    @property
    def input_shape(self) -> tuple[int, int]:
        """Shape of one input window: ``(n_mics, n_samples)``."""
        return (self.n_mics, self.n_samples)

    @property
    def config(self) -> dict[str, int]:
        """Constructor arguments, enough to rebuild the architecture."""
        return {"n_mics": self.n_mics, "n_samples": self.n_samples}
