"""Front ends: from waveforms to the inputs of the localizers.

Modules are imported on demand (``from xai_loc.features.cochleagram import Cochleagram``) so
that importing the package stays cheap. :func:`check_waveforms` is the input check they share.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from xai_loc.errors import InputError

if TYPE_CHECKING:
    import torch


def check_waveforms(x: torch.Tensor, ears: bool = True) -> None:
    """Refuse waveforms a front end would turn into wrong numbers: integer samples or, with ``ears``, a shape
    other than ``[batch, 2 ears, samples]``.

    The front ends cast their fixed kernels to the input's dtype, so integer samples (int16 PCM) would meet
    kernels rounded to integers.

    Raises
    ------
    InputError
        For a dtype that is not floating point, or (``ears``) a shape other than ``[batch, 2, samples]``.
    """
    if not x.is_floating_point():
        raise InputError(f"waveforms of dtype {x.dtype} are not allowed; give floating-point samples such as "
                         f"float32 or float64")
    if ears and (x.dim() != 3 or x.shape[1] != 2):
        raise InputError(f"ear signals of shape {tuple(x.shape)} are not allowed; give [batch, 2 ears, samples]")


__all__ = ["check_waveforms"]
