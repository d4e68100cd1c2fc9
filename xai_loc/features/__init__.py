"""Front ends: from waveforms to the inputs of the localizers.

Modules are imported on demand (``from xai_loc.features.cochleagram import Cochleagram``) so
that importing the package stays cheap. Registered front ends: :data:`FRONT_ENDS`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _cochleagram(**kwargs: Any):
    from xai_loc.features.cochleagram import Cochleagram

    return Cochleagram(**kwargs)


def _ipd_ild(**kwargs: Any):
    from xai_loc.features.ipd_ild import IPDILD

    return IPDILD(**kwargs)


def _binaural_cues(**kwargs: Any):
    from xai_loc.features.binaural_cues import BinauralCues

    return BinauralCues(**kwargs)


def _binaural_spectrogram(**kwargs: Any):
    from xai_loc.features.spectrogram import BinauralSpectrogram

    return BinauralSpectrogram(**kwargs)


#: Front-end constructors by name (``torch.nn.Module`` factories taking keyword arguments).
FRONT_ENDS: dict[str, Callable[..., Any]] = {"cochleagram": _cochleagram, "ipd_ild": _ipd_ild,
                                             "binaural_cues": _binaural_cues,
                                             "binaural_spectrogram": _binaural_spectrogram}


def build_front_end(name: str, **kwargs: Any):
    """Build the registered front end ``name`` with its keyword arguments."""
    from xai_loc.errors import InputError

    if name not in FRONT_ENDS:
        raise InputError(f"unknown front end {name!r}; allowed: {', '.join(FRONT_ENDS)}")
    return FRONT_ENDS[name](**kwargs)


__all__ = ["FRONT_ENDS", "build_front_end"]
