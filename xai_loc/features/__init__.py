"""Front ends: from waveforms to the inputs of the localizers.

Modules are imported on demand (``from xai_loc.features.cochleagram import Cochleagram``) so
that importing the package stays cheap. :func:`check_waveforms` is the input check they share,
:func:`in_float32` the precision of half-precision inputs.
"""
from __future__ import annotations

import functools
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


def in_float32(cls: type) -> type:
    """Class decorator of a front end (an ``nn.Module``): float16 and bfloat16 waveforms are computed in float32,
    with the kernels as designed, and the output is cast back to their dtype.

    torch.fft has no CPU kernels for half precision, and the front ends' small constants (power floors of 1e-14
    and 1e-10, silence thresholds, the compression's gradient guard) round to 0 in float16, their logarithms to
    ``-inf``. The outputs (compressed envelopes, dB, cues, standardized values) fit either dtype. Kernels rounded
    to bfloat16 would move a cochleagram's gradient with respect to the waveform by up to its largest value, so
    a dtype cast of the module (``model.half()``, ``model.to(torch.bfloat16)``) moves its non-persistent
    buffers, the fixed designs rebuilt from its config, to the new device but keeps their dtype.
    """
    import torch

    half, forward, apply = (torch.float16, torch.bfloat16), cls.forward, cls._apply

    @functools.wraps(forward)
    def run(self, x, *args, **kwargs):
        if x.dtype not in half:
            return forward(self, x, *args, **kwargs)
        return forward(self, x.float(), *args, **kwargs).to(x.dtype)

    @functools.wraps(apply)
    def keep_designs(self, fn, recurse=True):
        designs = [(m._buffers, name, m._buffers[name]) for m in self.modules()
                   for name in m._non_persistent_buffers_set if m._buffers.get(name) is not None]
        apply(self, fn, recurse)
        for buffers, name, design in designs:
            buffers[name] = design.to(buffers[name].device)
        return self

    cls.forward, cls._apply = run, keep_designs
    return cls


__all__ = ["check_waveforms", "in_float32"]
