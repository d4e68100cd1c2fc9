"""LRP rules for the localizers, beside zennit's own (:mod:`zennit.rules`).

- :class:`GateRule` routes the relevance of a squeeze-excitation product ``y = x * s``
  (:class:`xai_loc.models.Gate`), which zennit cannot do itself: its hooks see only a
  module's first input.
- :class:`FastGamma` is zennit's generalized Gamma rule (Montavon et al. 2019; Andeol et al.
  2021) computed with fewer passes: on non-negative inputs (every convolution after a ReLU)
  it needs one modified forward and one backward instead of five and four.
- :class:`SmoothMaxPool` spreads a max-pool's relevance over its window instead of giving it
  all to the winner.
- :class:`WindowBox` is zennit's ZBox rule (Montavon et al. 2017) with the box taken from
  each window's own sample range.

Rules are zennit hooks: put them in a composite (:mod:`xai_loc.explain.composites`).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from zennit.core import BasicHook, Hook, Stabilizer
from zennit.rules import ClampMod, NoMod

__all__ = ["FastGamma", "GateRule", "SmoothMaxPool", "WindowBox", "GATE_ROUTES"]

#: Where :class:`GateRule` sends the relevance of ``x * s``: to the signal ``x`` (the gate
#: held constant) or to the gate ``s`` (the paper's released code).
GATE_ROUTES = ("signal", "gate")


class GateRule(Hook):
    """Relevance of a gate product ``y = x * s`` (squeeze-excitation, Hu et al. 2018).

    Parameters
    ----------
    to
        ``'signal'``: ``s`` is held constant, so ``y`` is linear in ``x`` with a diagonal
        weight and the epsilon rule gives all of ``y``'s relevance to ``x`` and none to
        ``s``. ``'gate'``: the variant of Comanducci et al.'s released code, whose
        ``SignalOnlyGate`` receives its arguments in the reverse order: ``x`` gets nothing
        and ``s`` gets ``y``'s relevance summed over the broadcast (time) axes, which then
        flows back through the squeeze-excitation branch.
    """

    def __init__(self, to: str = "signal") -> None:
        super().__init__()
        if to not in GATE_ROUTES:
            raise ValueError(f"to={to!r} is not allowed; use one of {', '.join(GATE_ROUTES)}")
        self.to = to

    def copy(self) -> GateRule:
        """A fresh hook with the same routing."""
        return type(self)(self.to)

    def backward(self, module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
        """Return the relevance of ``(x, s)`` from the relevance of ``y``."""
        relevance = grad_output[0]
        s_grad = grad_input[1]
        if self.to == "signal":
            return relevance, None if s_grad is None else torch.zeros_like(s_grad)
        if s_grad is None:
            return torch.zeros_like(relevance), None
        return torch.zeros_like(relevance), relevance.sum(dim=tuple(range(s_grad.dim(), relevance.dim())))


def _linear_forward(module: nn.Module, x: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor | None) -> torch.Tensor:
    """``module``'s affine map with other parameters, without running its hooks."""
    if isinstance(module, nn.Linear):
        return F.linear(x, weight, bias)
    return module._conv_forward(x, weight, bias)


class FastGamma(Hook):
    """zennit's generalized Gamma rule, computed with as few passes as the input allows.

    The relevance is that of :class:`zennit.rules.Gamma` (same parameters, same
    stabilizer; equal up to rounding): outputs with ``z > 0`` redistribute over
    ``x+ (W + gamma W+) + x- (W + gamma W-)`` (bias ``b + gamma b+``), outputs with
    ``z < 0`` over ``x+ (W + gamma W-) + x- (W + gamma W+)`` (bias ``b + gamma b-``).
    Terms whose input part is all zero (``x-`` after a ReLU) or whose relevance is all
    zero are skipped, and the unmodified output is kept from the forward pass.
    For :class:`torch.nn.Linear` and standard (not transposed) convolutions.

    Parameters
    ----------
    gamma
        Weight of the positive (resp. negative) parameter parts.
    stabilizer
        Added to the denominators with their sign (as zennit's ``Stabilizer``).
    """

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6) -> None:
        super().__init__()
        self.gamma = gamma
        self.stabilizer = stabilizer
        self.stabilize = Stabilizer.ensure(stabilizer)

    def copy(self) -> FastGamma:
        """A fresh hook with the same parameters."""
        return type(self)(self.gamma, self.stabilizer)

    def forward(self, module: nn.Module, input: tuple, output: torch.Tensor) -> None:
        """Keep the module's input and output for the backward pass."""
        self.stored_tensors["input"] = input
        self.stored_tensors["output"] = output.detach()

    def backward(self, module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
        """Redistribute the output relevance to the input."""
        x = self.stored_tensors["input"][0].detach()
        z = self.stored_tensors["output"]
        relevance = grad_output[0]
        weight, bias, gamma = module.weight, module.bias, self.gamma
        w_pos, w_neg = weight + gamma * weight.clamp(min=0), weight + gamma * weight.clamp(max=0)
        b_pos = None if bias is None else bias + gamma * bias.clamp(min=0)
        b_neg = None if bias is None else bias + gamma * bias.clamp(max=0)
        x_pos, x_neg = x.clamp(min=0), x.clamp(max=0)
        has_neg = bool(x_neg.any())
        result = torch.zeros_like(x)
        # (sign mask, weight and bias on x+, weight on x-)
        for mask, (w_x_pos, b_x_pos), w_x_neg in ((z > 0, (w_pos, b_pos), w_neg), (z < 0, (w_neg, b_neg), w_pos)):
            masked = relevance * mask
            if not bool(masked.any()):
                continue
            with torch.enable_grad():
                inputs = [x_pos.detach().requires_grad_()]
                out = _linear_forward(module, inputs[0], w_x_pos, b_x_pos)
                if has_neg:
                    inputs.append(x_neg.detach().requires_grad_())
                    out = out + _linear_forward(module, inputs[1], w_x_neg, None)
            grads = torch.autograd.grad(out, inputs, masked / self.stabilize(out.detach()))
            for inp, grad in zip(inputs, grads, strict=True):
                result = result + inp.detach() * grad
        return tuple(result if original.shape == result.shape else None for original in grad_input)


_AVG_POOLS = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


class SmoothMaxPool(Hook):
    """Max-pool relevance spread over the pool window instead of winner-take-all.

    Each pooled output's relevance ``R_j`` goes to the inputs ``i`` of its window in
    proportion to ``max(x_i, 0) ** power``::

        R_i = sum_j  max(x_i, 0)**p / sum_{k in window j} max(x_k, 0)**p  *  R_j

    ``power = 1`` treats the max-pool as a sum-pool for relevance (zennit's Norm rule on
    a sum-pool; proportional to the positive inputs); larger powers approach
    winner-take-all. The rule is scale-invariant (unlike a softmax with a temperature,
    whose effect depends on each layer's activation scale) and conservative: every window
    with a positive input passes on all its relevance. Windows without a positive input
    pass on nothing; after a ReLU they receive no relevance from the rules used here.
    For ``MaxPool1d/2d/3d`` without dilation; use powers up to about 8 (``x**p`` must not
    underflow).

    Parameters
    ----------
    power
        Exponent ``p > 0`` of the positive inputs.
    """

    def __init__(self, power: float = 1.0) -> None:
        super().__init__()
        if not power > 0:
            raise ValueError(f"power={power!r} is not allowed; use a positive number")
        self.power = power

    def copy(self) -> SmoothMaxPool:
        """A fresh hook with the same power."""
        return type(self)(self.power)

    def forward(self, module: nn.Module, input: tuple, output: torch.Tensor) -> None:
        """Keep the module's input for the backward pass."""
        self.stored_tensors["input"] = input

    def backward(self, module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
        """Redistribute the pooled relevance over each window."""
        x = self.stored_tensors["input"][0].detach()
        if module.dilation not in (1, (1,) * (x.dim() - 2)):
            raise ValueError("SmoothMaxPool does not support dilated max-pools")
        pool = _AVG_POOLS[x.dim() - 2]
        with torch.enable_grad():
            weight = (x.clamp(min=0) ** self.power).requires_grad_()
            pooled = pool(weight, module.kernel_size, module.stride, module.padding, module.ceil_mode,
                          count_include_pad=True)
        safe = torch.where(pooled > 0, pooled.detach(), torch.ones_like(pooled))
        grad, = torch.autograd.grad(pooled, weight, grad_output[0] / safe)
        result = weight.detach() * grad
        return tuple(result if original.shape == result.shape else None for original in grad_input)


def _window_bound(reduce):
    def bound(x: torch.Tensor) -> torch.Tensor:
        return reduce(x, dim=tuple(range(1, x.dim())), keepdim=True).expand_as(x)
    return bound


class WindowBox(BasicHook):
    """zennit's ZBox rule with the box of each window's own sample range.

    ``low`` and ``high`` are the minimum and maximum sample of each window (all
    microphones), so that a window's relevance does not depend on the other windows in
    its batch.

    Parameters
    ----------
    stabilizer
        Added to the denominators with their sign.
    """

    def __init__(self, stabilizer: float = 1e-6) -> None:
        stabilize = Stabilizer.ensure(stabilizer)
        low, high = _window_bound(torch.amin), _window_bound(torch.amax)

        def difference(positive, *negatives):
            return positive - sum(negatives)

        super().__init__(
            input_modifiers=[lambda x: x, low, high],
            param_modifiers=[NoMod(), ClampMod(min=0.0), ClampMod(max=0.0)],
            output_modifiers=[lambda out: out] * 3,
            gradient_mapper=lambda out_grad, outputs: (out_grad / stabilize(difference(*outputs)),) * 3,
            reducer=lambda inputs, grads: difference(*(i * g for i, g in zip(inputs, grads, strict=True))),
        )
