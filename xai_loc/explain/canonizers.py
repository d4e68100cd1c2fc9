"""Canonizers: temporary, exactly reversible rewrites of a model that LRP rules need.

The localizers already register every operation as a module (the residual sum is a
:class:`zennit.layer.Sum`, the squeeze-excitation product a :class:`~xai_loc.models.Gate`
that :class:`~xai_loc.explain.rules.GateRule` handles), so the only rewrite left is
merging each BatchNorm into the layer before it (:class:`MergeBatchNorm`) or, where a
BatchNorm follows a ReLU as in the cochleagram CNN, into the layer after it
(:class:`FoldBatchNormForward`).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from zennit.canonizers import Canonizer, SequentialMergeBatchNorm
from zennit.core import collect_leaves

from xai_loc.errors import InputError

__all__ = ["IDENTITY_EPS", "FoldBatchNormForward", "MergeBatchNorm"]

#: ``eps`` of a BatchNorm while it is merged into the identity: ``1 + 2**-60`` rounds to exactly 1
#: in float64, float32, float16 and bfloat16, so ``x / sqrt(1 + eps)`` is ``x``. Not 0: torch 2.11
#: (the GPU machine's) refuses ``eps <= 0`` in ``F.batch_norm``.
IDENTITY_EPS = 2.0 ** -60


def _check_batch_norm(batch_norm: nn.Module, names: dict[nn.Module, str], affine: bool = True) -> None:
    """Raise :class:`InputError` for a BatchNorm that is not a fixed affine map with (``affine``) parameters."""
    name = names.get(batch_norm, type(batch_norm).__name__)
    if batch_norm.running_mean is None:
        raise InputError(f"BatchNorm {name!r} without running statistics (track_running_stats=False) is not allowed "
                         "for LRP: it normalizes each batch by itself; use one with running statistics or a gradient "
                         "method")
    if affine and batch_norm.weight is None:
        raise InputError(f"BatchNorm {name!r} without affine parameters (affine=False) is not allowed for LRP's "
                         "BatchNorm merge; use affine=True or a gradient method")


@contextlib.contextmanager
def _removed_on_failure(instances: list[Canonizer]):
    """Remove the canonizer ``instances`` applied so far (last first) when the block raises: zennit's own
    ``apply`` drops them, and they would stay applied in the user's model."""
    try:
        yield
    except BaseException:
        for instance in reversed(instances):
            instance.remove()
        raise


class MergeBatchNorm(SequentialMergeBatchNorm):
    """Merge every BatchNorm that directly follows a linear layer into it, exactly.

    zennit's :class:`~zennit.canonizers.SequentialMergeBatchNorm` folds the statistics
    into the linear layer and resets the BatchNorm to the identity, but leaves its ``eps``
    in place, so the merged model is off by a factor ``1 / sqrt(1 + eps)`` per BatchNorm
    (zennit 0.5.1). This canonizer also sets ``eps`` to :data:`IDENTITY_EPS` while merged
    and restores it on removal. Adjacency follows the order in which modules are registered, which for the
    localizers is the order of the forward pass. Removal puts the saved tensors back, so a change made to a
    merged layer while merged (inside an :class:`~xai_loc.explain.Explainer`) is discarded: change a
    model's weights outside one.
    """

    def apply(self, root_module: nn.Module) -> list[MergeBatchNorm]:
        """zennit's ``apply`` (one merged instance per linear layer followed by a BatchNorm), undone
        in full when a BatchNorm cannot be merged: zennit's loses the instances it already merged,
        which then stay merged in the model. A BatchNorm without affine parameters or running
        statistics raises :class:`InputError` naming it."""
        instances: list[MergeBatchNorm] = []
        last_leaf = None
        names = {module: name for name, module in root_module.named_modules()}
        with _removed_on_failure(instances):
            for leaf in collect_leaves(root_module):
                if isinstance(last_leaf, self.linear_type) and isinstance(leaf, self.batch_norm_type):
                    _check_batch_norm(leaf, names)
                    instance = self.copy()
                    instance.register((last_leaf,), leaf)
                    instances.append(instance)
                last_leaf = leaf
        return instances

    def register(self, linears: list[nn.Module], batch_norm: nn.Module) -> None:
        """Merge ``batch_norm`` into ``linears`` and make it an exact identity."""
        super().register(linears, batch_norm)
        self.batch_norm_eps = batch_norm.eps
        batch_norm.eps = IDENTITY_EPS

    def remove(self) -> None:
        """Restore the original parameters and ``eps``."""
        super().remove()
        self.batch_norm.eps = self.batch_norm_eps


class FoldBatchNormForward(Canonizer):
    """Fold every BatchNorm into the linear layer that *follows* it, exactly and reversibly.

    In the cochleagram CNN (Francl & McDermott 2022) BatchNorm comes after the ReLU
    (``conv -> pool -> ReLU -> BN``), so it cannot merge into the convolution before it:
    ``BN(relu(z)) = a relu(z) + b`` with ``a = gamma / sqrt(var + eps)``,
    ``b = beta - mean a`` has a shift outside the ReLU. It is an affine map per channel,
    and the next layer is linear, so ``W (a x + b) + c = (W a) x + (W b + c)``: the scale
    goes into the next layer's weights (per input channel) and the shift into its bias;
    the BatchNorm becomes the exact identity (``eps`` set to :data:`IDENTITY_EPS` while folded) and gets
    zennit's ``Pass``.

    Between the BatchNorm and the next ``Linear``/``Conv`` there may be dropout (eval
    mode), ``Flatten`` (the scale is repeated over each channel's flattened positions)
    and a :class:`~xai_loc.models.cochleagram_cnn.FrequencyPad`. Zero padding does not
    commute with the shift: padded rows are 0 after the BatchNorm, i.e. ``-b / a`` before
    it. While folded, the pad module therefore fills its rows with ``-b / a`` per channel,
    which keeps the model's output unchanged at the borders too; for the epsilon rule this
    is the same as a position-dependent bias (padded rows lose the relevance a bias would
    absorb). A channel with ``a = 0`` before a pad cannot be folded this way (InputError; the
    BatchNorms folded before it are restored). A convolution's own zero padding has no such
    fill, so a BatchNorm before one stays unfolded (:func:`~xai_loc.explain.audit` flags it, and
    :class:`~xai_loc.explain.Explainer` refuses the composite).

    Adjacency follows the order in which leaf modules are registered, which must be the
    order of the forward pass (as in ``nn.Sequential``); any other module in between (a
    ReLU, a pool) leaves that BatchNorm unfolded. The model must be in eval mode.
    """

    def __init__(self) -> None:
        super().__init__()
        self.batch_norm: nn.Module | None = None
        self.pads: list[nn.Module] = []
        self.linear: nn.Module | None = None
        self.linears: tuple[nn.Module, ...] = ()  # as MergeBatchNorm's: the layers the BatchNorm went into
        self.saved: dict = {}

    def copy(self) -> FoldBatchNormForward:
        return type(self)()

    @staticmethod
    def _is_target(module: nn.Module) -> bool:
        """A linear layer the shift can go into: a Linear, or a convolution without groups or zero padding of
        its own (its padded zeros would take the shift as well)."""
        if isinstance(module, nn.Linear):
            return True
        if not isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) or module.groups != 1:
            return False
        padded = module.padding == "same" or (module.padding != "valid" and any(module.padding))
        return module.padding_mode != "zeros" or not padded

    def apply(self, root_module: nn.Module) -> list[FoldBatchNormForward]:
        """Fold each BatchNorm followed (through dropout, flatten, pads) by a linear layer."""
        from xai_loc.models.cochleagram_cnn import FrequencyPad

        instances, pending = [], None
        names = {module: name for name, module in root_module.named_modules()}
        with _removed_on_failure(instances):  # a BatchNorm that cannot be folded: the earlier ones restored
            for leaf in collect_leaves(root_module):
                if isinstance(leaf, nn.modules.batchnorm._BatchNorm):
                    pending = (leaf, [])
                elif pending is None:
                    continue
                elif isinstance(leaf, FrequencyPad):
                    pending[1].append(leaf)
                elif isinstance(leaf, (nn.Dropout, nn.Flatten, nn.Identity)):
                    continue
                elif self._is_target(leaf):
                    _check_batch_norm(pending[0], names, affine=False)
                    instance = self.copy()
                    instance.register(pending[0], pending[1], leaf)
                    instances.append(instance)
                    pending = None
                else:
                    pending = None
        return instances

    def register(self, batch_norm: nn.Module, pads: list[nn.Module], linear: nn.Module) -> None:
        """Fold ``batch_norm`` into ``linear`` (and set the fill of ``pads``)."""
        if batch_norm.training:
            raise InputError("FoldBatchNormForward needs the model in eval mode (BatchNorm running statistics)")
        self.batch_norm, self.pads, self.linear, self.linears = batch_norm, list(pads), linear, (linear,)
        bn = batch_norm
        self.saved = {
            "weight": linear.weight.data, "bias": None if linear.bias is None else linear.bias.data,
            "bn": {k: getattr(bn, k).data for k in ("weight", "bias", "running_mean", "running_var")
                   if getattr(bn, k, None) is not None},
            "eps": bn.eps, "fills": [pad.fill for pad in self.pads],
        }
        weight = linear.weight.data
        scale = 1.0 / torch.sqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.data
        shift = -bn.running_mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias.data
        scale, shift = scale.to(weight.dtype), shift.to(weight.dtype)
        channels = scale.numel()
        if isinstance(linear, nn.Linear):
            if linear.in_features % channels:
                raise InputError(f"cannot fold a BatchNorm of {channels} channels into a Linear layer of "
                                 f"{linear.in_features} inputs")
            repeat = linear.in_features // channels
            scale_in, shift_in = scale.repeat_interleave(repeat), shift.repeat_interleave(repeat)
            new_weight = weight * scale_in[None, :]
            offset = weight @ shift_in
        else:
            if weight.shape[1] != channels:
                raise InputError(f"cannot fold a BatchNorm of {channels} channels into a convolution with "
                                 f"{weight.shape[1]} input channels")
            index = (None, slice(None), *((None,) * (weight.dim() - 2)))
            new_weight = weight * scale[index]
            offset = (weight * shift[index]).sum(dim=tuple(range(1, weight.dim())))
        if self.pads:
            if bool((scale == 0).any()):
                raise InputError("a BatchNorm channel with zero scale precedes a padded convolution; "
                                 "it cannot be folded exactly (explain without LRP, or with an unfolded model)")
            for pad in self.pads:
                pad.fill = (-shift / scale).detach()
        linear.weight.data = new_weight
        if linear.bias is None:
            linear.bias = nn.Parameter(offset)
        else:
            linear.bias.data = linear.bias.data + offset
        bn.running_mean.data = torch.zeros_like(bn.running_mean)
        bn.running_var.data = torch.ones_like(bn.running_var)
        if bn.weight is not None:
            bn.weight.data = torch.ones_like(bn.weight)
        if bn.bias is not None:
            bn.bias.data = torch.zeros_like(bn.bias)
        bn.eps = IDENTITY_EPS

    def remove(self) -> None:
        """Restore the original parameters, ``eps`` and pad fills."""
        linear, bn = self.linear, self.batch_norm
        linear.weight.data = self.saved["weight"]
        if self.saved["bias"] is None:
            linear.bias = None
        else:
            linear.bias.data = self.saved["bias"]
        for key, value in self.saved["bn"].items():
            getattr(bn, key).data = value
        bn.eps = self.saved["eps"]
        for pad, fill in zip(self.pads, self.saved["fills"], strict=True):
            pad.fill = fill
