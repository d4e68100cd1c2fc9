"""Parameter-free modules that make every operation of a forward pass visible to hooks.

Attribution methods (zennit's LRP rules, captum) act through module hooks: an operation
done with a functional call inside ``forward()`` is invisible to them and silently breaks
relevance conservation. The residual add is therefore a :class:`zennit.layer.Sum` over a
stacked axis (``Sum(dim=-1)(torch.stack([x, y], dim=-1)) == x + y``), which zennit's
composites treat with the ``Norm`` rule, and the squeeze-excitation product is a
:class:`Gate`.
"""
from __future__ import annotations

import torch
from torch import nn

try:
    from zennit.layer import Sum
except ImportError:  # training-only environments (the GPU machine has no zennit): the same module
    class Sum(nn.Module):
        """``zennit.layer.Sum``'s forward (sum over ``dim``), for environments without zennit.

        Attribution needs zennit itself (its composites recognise only its own class); training
        and inference do not, and the two modules have no parameters, so checkpoints are the same.
        """

        def __init__(self, dim: int = -1) -> None:
            super().__init__()
            self.dim = dim

        def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - zennit's signature
            return torch.sum(input, dim=self.dim)

__all__ = ["Gate", "Sum"]


class Gate(nn.Module):
    """Multiply a signal by a gate: ``x * s``, with ``s`` broadcast over ``x``'s trailing axes.

    Used for squeeze-excitation (Hu et al., CVPR 2018), where ``x`` is
    ``[batch, channels, time]`` and ``s`` is ``[batch, channels]``. Attribution canonizers
    can replace this module to route relevance to ``x`` only (gate held constant).
    """

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Return ``x * s``, appending unit axes to ``s`` until it has ``x``'s rank."""
        return x * s.reshape(*s.shape, *([1] * (x.dim() - s.dim())))
