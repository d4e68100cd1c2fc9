"""Canonizers: temporary, exactly reversible rewrites of a model that LRP rules need.

The localizers already register every operation as a module (the residual sum is a
:class:`zennit.layer.Sum`, the squeeze-excitation product a :class:`~xai_loc.models.Gate`
that :class:`~xai_loc.explain.rules.GateRule` handles), so the only rewrite left is
merging each BatchNorm into the layer before it.
"""
from __future__ import annotations

from torch import nn
from zennit.canonizers import SequentialMergeBatchNorm

__all__ = ["MergeBatchNorm"]


class MergeBatchNorm(SequentialMergeBatchNorm):
    """Merge every BatchNorm that directly follows a linear layer into it, exactly.

    zennit's :class:`~zennit.canonizers.SequentialMergeBatchNorm` folds the statistics
    into the linear layer and resets the BatchNorm to the identity, but leaves its ``eps``
    in place, so the merged model is off by a factor ``1 / sqrt(1 + eps)`` per BatchNorm
    (zennit 0.5.1). This canonizer also sets ``eps`` to 0 while merged and restores it on
    removal. Adjacency follows the order in which modules are registered, which for the
    localizers is the order of the forward pass.
    """

    def register(self, linears: list[nn.Module], batch_norm: nn.Module) -> None:
        """Merge ``batch_norm`` into ``linears`` and make it an exact identity."""
        super().register(linears, batch_norm)
        self.batch_norm_eps = batch_norm.eps
        batch_norm.eps = 0.0

    def remove(self) -> None:
        """Restore the original parameters and ``eps``."""
        super().remove()
        self.batch_norm.eps = self.batch_norm_eps
