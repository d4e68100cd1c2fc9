"""LRP rules for the localizers, beside zennit's own (:mod:`zennit.rules`).

- :class:`GateRule` routes the relevance of a squeeze-excitation product ``y = x * s``
  (:class:`xai_loc.models.Gate`), which zennit cannot do itself: its hooks see only a
  module's first input.
- :class:`FastGamma` is zennit's generalized Gamma rule (Montavon et al. 2019; Andeol et al.
  2021) computed with fewer passes: on non-negative inputs (every convolution after a ReLU)
  it needs one modified forward and one transposed map instead of five forwards and a
  backward through all of them.
- :class:`FastEpsilon`, :class:`FastWSquare`, :class:`FastNorm` and :class:`FastPass` are
  zennit's ``Epsilon``, ``WSquare``, ``Norm`` and ``Pass`` with the same relevance (equal up
  to rounding; the tests compare them in float64), computed like the two above as one
  autograd node per module (:class:`NodeRule`): no discarded ordinary backward pass, no
  parameter copies or nested ``autograd.grad`` per call, modified parameters (and WSquare's
  input-independent denominator) cached while the parameters stay the same.
- :class:`SmoothMaxPool` spreads a max-pool's relevance over its window instead of giving it
  all to the winner.
- :class:`WindowBox` is zennit's ZBox rule (Montavon et al. 2017) with the box taken from
  each window's own sample range.

Rules are zennit hooks: put them in a composite (:mod:`xai_loc.explain.composites`). A
:class:`NodeRule` replaces its module's ``forward`` while registered (zennit's composites
register and remove it like any hook); hooks and taps on the module's inputs and outputs see
the relevance as before.
"""
from __future__ import annotations

import abc
import functools

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F
from zennit.core import BasicHook, Hook, RemovableHandle, RemovableHandleList, Stabilizer
from zennit.layer import Sum
from zennit.rules import ClampMod, Epsilon, Gamma, NoMod, Norm, Pass, WSquare

__all__ = ["FastEpsilon", "FastGamma", "FastNorm", "FastPass", "FastWSquare", "GateRule", "NodeRule",
           "SmoothMaxPool", "WindowBox", "GATE_ROUTES", "epsilon_stabilizer"]

#: Where :class:`GateRule` sends the relevance of ``x * s``: to the signal ``x`` (the gate
#: held constant) or to the gate ``s`` (the paper's released code).
GATE_ROUTES = ("signal", "gate")


# --- rules computed in one autograd node per module ------------------------------------------
#
# zennit's hooks (zennit.core.Hook, BasicHook) let autograd run each module's ordinary backward
# pass, throw its result away and recompute the relevance with fresh modified forward passes,
# parameter copies and a nested ``torch.autograd.grad`` per module. The rules below compute the
# same relevance directly: while registered, the module runs as one custom autograd node whose
# forward is the module's own (its output is unchanged) and whose backward is the rule. Modified
# parameters are cached until the parameters change (within one registration, i.e. one
# ``Explainer`` context), and the transposed maps are called directly.


def _stabilize(x: torch.Tensor, epsilon: float) -> torch.Tensor:
    """zennit's ``Stabilizer(epsilon)``: ``x + epsilon * sign(x)`` with ``sign(0) = +1``, bit for bit
    (float32 and float64), in fewer and vectorized passes (``torch.where`` and boolean masks are
    slow on the CPU). For ``epsilon = 0`` (LRP-0) zeros become infinite instead, so that ``R / x``
    is 0 where ``x = 0`` (zennit's gives 0/0 there)."""
    if not epsilon:
        return x.masked_fill(x == 0, torch.inf)
    sign = torch.ge(x, 0, out=torch.empty_like(x))
    sign.mul_(2).sub_(1)
    return torch.add(x, sign, alpha=epsilon)


def epsilon_stabilizer(epsilon: float):
    """The ``epsilon`` argument of zennit's ``Epsilon`` rule (and composites): ``epsilon``, or for
    LRP-0 (``epsilon = 0``) a stabilizer that makes ``R / z`` 0 where ``z = 0``, not 0/0."""
    return epsilon if epsilon else functools.partial(_stabilize, epsilon=0.0)


def _mask(z: torch.Tensor, positive: bool) -> torch.Tensor:
    """``z > 0`` (or ``z < 0``) as 1.0/0.0 in ``z``'s dtype: the value of zennit's boolean mask in a
    product, without the slow boolean-to-float promotion."""
    return (torch.gt if positive else torch.lt)(z, 0, out=torch.empty_like(z))


#: The affine modules the fast rules compute themselves, with their stock ``forward``.
_AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _is_affine(module: nn.Module) -> bool:
    """A linear layer or a standard (not transposed) convolution running torch's own ``forward``: a
    subclass with its own ``forward`` (a front end's filter reshaping its input) gets zennit's rule,
    which calls that ``forward``."""
    return any(isinstance(module, cls) and type(module).forward is cls.forward for cls in _AFFINE)


def _param_key(module: nn.Module) -> tuple:
    """Identity and version of a module's weight and bias (cached modified parameters follow them)."""
    return tuple((p.data_ptr(), p._version, p.dtype, p.device, tuple(p.shape)) if p is not None else None
                 for p in (module.weight, module.bias))


def _channel_dim(module: nn.Module, x: torch.Tensor) -> int:
    """The feature (Linear) or channel (convolution) axis of ``x``."""
    return -1 if isinstance(module, nn.Linear) else x.dim() - (module.weight.dim() - 1)


def _input_grad(module: nn.Module, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The transposed map of ``module``'s affine part with ``weight`` (its input gradient at ``x``)."""
    if isinstance(module, nn.Linear):
        return grad.matmul(weight)
    if module.padding_mode == "zeros" and not isinstance(module.padding, str) and x.dim() == weight.dim():
        n = weight.dim() - 2
        return torch.ops.aten.convolution_backward(
            grad, x, weight, None, module.stride, module.padding, module.dilation, False, [0] * n,
            module.groups, [True, False, False])[0]
    with torch.enable_grad():  # padding modes, 'same'/'valid' padding, unbatched input
        leaf = x.detach().requires_grad_()
        out = module._conv_forward(leaf, weight, None)
    return torch.autograd.grad(out, leaf, grad)[0]


#: Max-pool modules, their functional form and number of pooled axes.
_MAX_POOLS = ((nn.MaxPool1d, F.max_pool1d, 1), (nn.MaxPool2d, F.max_pool2d, 2), (nn.MaxPool3d, F.max_pool3d, 3))


def _max_pool(module: nn.Module) -> tuple | None:
    """``(functional, pooled axes)`` of a max-pool module, else None."""
    return next(((pool, n) for cls, pool, n in _MAX_POOLS if isinstance(module, cls)), None)


def _affine_forward(module: nn.Module, x: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor | None) -> torch.Tensor:
    """``module``'s affine map with other parameters, without running its hooks."""
    if isinstance(module, nn.Linear):
        return F.linear(x, weight, bias)
    return module._conv_forward(x, weight, bias)


class _RuleNode(torch.autograd.Function):
    """The module's forward; the rule's relevance as its backward."""

    @staticmethod
    def forward(ctx, rule, module, forward, *args):
        output = rule.compute(ctx, module, forward, args)
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"rule {type(rule).__name__} needs a module returning one tensor, not "
                            f"{type(output).__name__} ({type(module).__name__})")
        ctx.rule, ctx.module, ctx.forward, ctx.n_args = rule, module, forward, len(args)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        grads = tuple(ctx.rule.relevance(ctx, ctx.module, grad_output))
        grads = grads + (None,) * (ctx.n_args - len(grads))
        needs = ctx.needs_input_grad[3:]
        return (None, None, None, *(g if need else None for g, need in zip(grads, needs, strict=True)))


class _RestoreForward:
    """Handle that puts a module's own ``forward`` back."""

    def __init__(self, module: nn.Module, wrapper, own) -> None:
        self.module, self.wrapper, self.own = module, wrapper, own

    def remove(self) -> None:
        if self.module is None:
            return
        if self.module.__dict__.get("forward") is self.wrapper:
            if self.own is None:
                del self.module.__dict__["forward"]
            else:
                self.module.forward = self.own
        self.module = self.wrapper = self.own = None


class NodeRule(Hook, metaclass=abc.ABCMeta):
    """Base of rules computed in one autograd node per module (see the section comment above).

    Registered on a module (by a zennit composite), the rule replaces the module's ``forward``
    for as long as it is registered: when gradients are needed for the first input, the
    module runs inside a custom autograd function whose backward returns the relevance of each
    input; otherwise the module runs as usual. Modules the rule does not handle get zennit's
    equivalent hook (:meth:`stock`). Subclasses define :meth:`relevance` and may override
    :meth:`compute` (the forward, saving what the backward needs) and :meth:`supports`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.cache: dict = {}
        self.fallback: Hook | None = None

    def supports(self, module: nn.Module) -> bool:
        """Whether this rule handles ``module`` itself (else zennit's hook does)."""
        return True

    def stock(self) -> Hook | None:
        """zennit's equivalent hook, for modules the rule does not handle (None: the rule handles every module)."""
        return None

    def compute(self, ctx, module: nn.Module, forward, args: tuple) -> torch.Tensor:
        """Run the module's forward (gradients off) and save what :meth:`relevance` needs."""
        output = forward(*args)
        ctx.save_for_backward(args[0], output)
        return output

    @abc.abstractmethod
    def relevance(self, ctx, module: nn.Module, relevance: torch.Tensor) -> tuple:
        """The relevance of each input (``None`` for inputs without) from the output's."""

    def cached(self, module: nn.Module, key: tuple, make):
        """``make()``, computed once per ``key`` while the module's parameters stay the same: the same
        tensors at the same versions (in-place changes through ``.data`` are not seen; canonizers,
        which assign ``.data``, and in-place changes under ``torch.no_grad()`` are)."""
        params = _param_key(module)
        if self.cache.get("params") != params:
            self.cache = {"params": params}
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def register(self, module: nn.Module) -> RemovableHandleList:
        """Replace ``module.forward`` while registered (zennit's hook for unsupported modules)."""
        if not self.supports(module):
            self.fallback = self.stock()
            if self.fallback is None:
                raise TypeError(f"{type(self).__name__} cannot handle {type(module).__name__} "
                                "and has no zennit equivalent")
            return self.fallback.register(module)
        own = module.__dict__.get("forward")
        original = module.forward

        def forward(*args, **kwargs):
            if not (self.active and torch.is_grad_enabled() and args and isinstance(args[0], torch.Tensor)
                    and args[0].requires_grad):
                return original(*args, **kwargs)
            if kwargs:
                raise TypeError(f"{type(module).__name__} with rule {type(self).__name__} must be called with "
                                "positional arguments only")
            return _RuleNode.apply(self, module, original, *args)

        module.forward = forward
        return RemovableHandleList([RemovableHandle(self), _RestoreForward(module, forward, own)])

    def remove(self) -> None:
        """Drop stored tensors and cached parameters."""
        super().remove()
        self.cache = {}


class GateRule(NodeRule):
    """Relevance of a gate product ``y = x * s`` (squeeze-excitation, Hu et al. 2018).

    zennit's own hooks cannot express it: they see only a module's first input.

    Parameters
    ----------
    to
        ``'signal'``: ``s`` is held constant, so ``y`` is linear in ``x`` with a diagonal
        weight and the epsilon rule gives all of ``y``'s relevance to ``x`` and none to
        ``s``. ``'gate'``: the variant of Comanducci et al.'s released code, whose
        ``SignalOnlyGate`` receives its arguments in the reverse order: ``x`` gets nothing
        and ``s`` gets ``y``'s relevance summed over the axes it is broadcast along (those
        :class:`~xai_loc.models.layers.Gate` appends, and its own unit axes, such as time in a
        ``[batch, channels, 1]`` gate), which then flows back through the squeeze-excitation branch.
    """

    def __init__(self, to: str = "signal") -> None:
        super().__init__()
        if to not in GATE_ROUTES:
            raise ValueError(f"to={to!r} is not allowed; use one of {', '.join(GATE_ROUTES)}")
        self.to = to

    def copy(self) -> GateRule:
        """A fresh hook with the same routing."""
        return type(self)(self.to)

    def compute(self, ctx, module, forward, args):
        """The product; keeps the gate's shape."""
        if len(args) != 2:
            raise TypeError(f"GateRule needs a module called as (x, s), not with {len(args)} arguments")
        ctx.gate = (args[1].shape, args[1].dtype, args[1].device) if isinstance(args[1], torch.Tensor) else None
        return forward(*args)

    def relevance(self, ctx, module, relevance):
        """Return the relevance of ``(x, s)`` from the relevance of ``y``."""
        if ctx.gate is None:
            return relevance, None
        shape, dtype, device = ctx.gate
        if self.to == "signal":
            return relevance, torch.zeros(shape, dtype=dtype, device=device)
        padded = (*shape, *[1] * (relevance.dim() - len(shape)))  # s as Gate broadcasts it
        return torch.zeros_like(relevance), relevance.sum_to_size(padded).reshape(shape)


class FastPass(NodeRule):
    """zennit's ``Pass`` (the output's relevance goes unchanged to the single input)."""

    def copy(self) -> FastPass:
        """A fresh hook."""
        return type(self)()

    def stock(self) -> Hook:
        """zennit's ``Pass``."""
        return Pass()

    def supports(self, module: nn.Module) -> bool:
        """Modules with one input and one output (zennit's ``Pass`` otherwise)."""
        return not isinstance(module, nn.MultiheadAttention)

    def compute(self, ctx, module, forward, args):
        """The module's forward; nothing to keep."""
        if len(args) != 1:
            raise TypeError(f"Pass needs a module with one input, not {len(args)} ({type(module).__name__})")
        return forward(*args)

    def relevance(self, ctx, module, relevance):
        """The output's relevance, unchanged."""
        return (relevance,)


class FastEpsilon(NodeRule):
    """zennit's ``Epsilon`` rule (Bach et al. 2015) on a linear layer or convolution.

    ``R_i = x_i sum_j w_ji R_j / stab(z_j)`` with the module's own output ``z`` (bias
    included), computed from the kept output and one transposed map.

    Parameters
    ----------
    epsilon
        Added to the denominators with their sign (zennit's ``Stabilizer``); 0 is LRP-0, with
        ``R_j / z_j = 0`` where ``z_j = 0``.
    """

    def __init__(self, epsilon: float = 1e-6) -> None:
        super().__init__()
        self.epsilon = float(epsilon)

    def copy(self) -> FastEpsilon:
        """A fresh hook with the same epsilon."""
        return type(self)(self.epsilon)

    def stock(self) -> Hook:
        """zennit's ``Epsilon``."""
        return Epsilon(epsilon=epsilon_stabilizer(self.epsilon))

    def supports(self, module: nn.Module) -> bool:
        """Linear layers and standard convolutions."""
        return _is_affine(module)

    def relevance(self, ctx, module, relevance):
        """``x * W^T (R / stab(z))``."""
        x, z = ctx.saved_tensors
        return (x * _input_grad(module, relevance / _stabilize(z, self.epsilon), x, module.weight),)


class FastNorm(NodeRule):
    """zennit's ``Norm`` rule: ``R_i = x_i d z_j / d x_i R_j / stab(z_j)`` for parameter-free layers.

    Max-pools keep the winners' indices from their forward pass and route relevance with
    them (no second pool); a :class:`zennit.layer.Sum` broadcasts it back; other modules
    (average pools) get one local gradient of their forward.

    Parameters
    ----------
    stabilizer
        Added to the denominators with their sign.
    """

    def __init__(self, stabilizer: float = 1e-6) -> None:
        super().__init__()
        self.stabilizer = float(stabilizer)

    def copy(self) -> FastNorm:
        """A fresh hook with the same stabilizer."""
        return type(self)(self.stabilizer)

    def stock(self) -> Hook:
        """zennit's ``Norm``."""
        return Norm(stabilizer=self.stabilizer)

    def supports(self, module: nn.Module) -> bool:
        """Anything but max-pools returning their indices."""
        return not (_max_pool(module) is not None and module.return_indices)

    def compute(self, ctx, module, forward, args):
        """The forward (max-pools: with the winners' indices)."""
        if len(args) != 1:
            raise TypeError(f"Norm needs a module with one input, not {len(args)} ({type(module).__name__})")
        x = args[0]
        if _max_pool(module) is not None:
            pool, _ = _max_pool(module)
            output, indices = pool(x, module.kernel_size, module.stride, module.padding, module.dilation,
                                   ceil_mode=module.ceil_mode, return_indices=True)
            ctx.save_for_backward(x, output, indices)
            return output
        output = forward(x)
        ctx.save_for_backward(x, output)
        return output

    def relevance(self, ctx, module, relevance):
        """``x * (dz/dx)^T (R / stab(z))``."""
        x, z, *indices = ctx.saved_tensors
        scaled = relevance / _stabilize(z, self.stabilizer)
        if indices:
            n = x.dim() - _max_pool(module)[1]
            grad = torch.zeros(x.shape, dtype=scaled.dtype, device=scaled.device)
            grad.flatten(n).scatter_add_(-1, indices[0].flatten(n), scaled.flatten(n))
        elif isinstance(module, Sum) and isinstance(module.dim, int):
            grad = scaled.unsqueeze(module.dim % x.dim()).expand_as(x)
        else:
            if scaled.numel() < x.numel() and not bool(scaled.any()):
                return (None,)  # a pool without relevance (the gate's branch): the input gets none
            with torch.enable_grad():
                leaf = x.detach().requires_grad_()
                out = ctx.forward(leaf)
            grad, = torch.autograd.grad(out, leaf, scaled)
        return (x * grad,)


class FastWSquare(NodeRule):
    """zennit's ``WSquare`` rule (Montavon et al. 2017): ``R_i = sum_j w_ji^2 / stab(sum_i' w_ji'^2 + b_j^2) R_j``.

    The denominator does not depend on the input's values, only on its shape: it is computed
    once per shape and kept, with the squared weights, while the parameters stay the same.

    Parameters
    ----------
    stabilizer
        Added to the denominators with their sign.
    """

    def __init__(self, stabilizer: float = 1e-6) -> None:
        super().__init__()
        self.stabilizer = float(stabilizer)

    def copy(self) -> FastWSquare:
        """A fresh hook with the same stabilizer."""
        return type(self)(self.stabilizer)

    def stock(self) -> Hook:
        """zennit's ``WSquare``."""
        return WSquare(stabilizer=self.stabilizer)

    def supports(self, module: nn.Module) -> bool:
        """Linear layers and standard convolutions."""
        return _is_affine(module)

    def compute(self, ctx, module, forward, args):
        """The forward; keeps the input (for its shape)."""
        ctx.save_for_backward(args[0])
        return forward(*args)

    def _squares(self, module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def make():
            weight = module.weight.detach() ** 2
            bias = None if module.bias is None else module.bias.detach() ** 2
            ones = torch.ones((1, *x.shape[1:]), dtype=x.dtype, device=x.device)
            return weight, _stabilize(_affine_forward(module, ones, weight, bias), self.stabilizer)

        return self.cached(module, ("wsquare", tuple(x.shape[1:]), x.dtype, x.device), make)

    def relevance(self, ctx, module, relevance):
        """``(W^2)^T (R / stab(W^2 1 + b^2))``."""
        x, = ctx.saved_tensors
        weight, denominator = self._squares(module, x)
        return (_input_grad(module, relevance / denominator, x, weight),)


class FastGamma(NodeRule):
    """zennit's generalized Gamma rule, computed with as few passes as the input allows.

    The relevance is that of :class:`zennit.rules.Gamma` (same parameters, same
    stabilizer; equal up to rounding): outputs with ``z > 0`` redistribute over
    ``x+ (W + gamma W+) + x- (W + gamma W-)`` (bias ``b + gamma b+``), outputs with
    ``z < 0`` over ``x+ (W + gamma W-) + x- (W + gamma W+)`` (bias ``b + gamma b-``).
    Terms whose input part is all zero (``x-`` after a ReLU) or whose relevance is all
    zero are skipped (after a ReLU-Pass-Gamma chain only ``z > 0`` carries relevance),
    the unmodified output is kept from the forward pass, and the remaining terms go
    through one modified forward and one transposed map with their weights stacked
    (cached while the parameters stay the same). For :class:`torch.nn.Linear` and
    ungrouped standard convolutions; other convolutions get zennit's ``Gamma``.

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
        self.stabilizer = float(stabilizer)

    def copy(self) -> FastGamma:
        """A fresh hook with the same parameters."""
        return type(self)(self.gamma, self.stabilizer)

    def stock(self) -> Hook:
        """zennit's ``Gamma``."""
        return Gamma(gamma=self.gamma, stabilizer=self.stabilizer)

    def supports(self, module: nn.Module) -> bool:
        """Linear layers and ungrouped standard convolutions."""
        return _is_affine(module) and getattr(module, "groups", 1) == 1

    def _stacked(self, module: nn.Module, terms: tuple[bool, ...], signed: bool):
        """Weights (and biases) of ``terms`` (True: ``z > 0``, False: ``z < 0``) stacked along the
        outputs, each over ``x+`` and (``signed``) ``x-`` along the inputs."""
        def make():
            weight, bias, gamma = module.weight.detach(), module.bias, self.gamma
            w_pos, w_neg = weight + gamma * weight.clamp(min=0), weight + gamma * weight.clamp(max=0)
            if bias is not None:
                bias = bias.detach()
                b_pos, b_neg = bias + gamma * bias.clamp(min=0), bias + gamma * bias.clamp(max=0)
            rows, biases = [], []
            for positive in terms:
                on_pos, on_neg = (w_pos, w_neg) if positive else (w_neg, w_pos)
                rows.append(torch.cat([on_pos, on_neg], dim=1) if signed else on_pos)
                if bias is not None:
                    biases.append(b_pos if positive else b_neg)
            stacked = rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)
            stacked_bias = None if bias is None else (biases[0] if len(biases) == 1 else torch.cat(biases))
            return stacked, stacked_bias

        return self.cached(module, ("gamma", terms, signed), make)

    def relevance(self, ctx, module, relevance):
        """Redistribute the output relevance to the input."""
        x, z = ctx.saved_tensors
        on_positive = relevance * _mask(z, True)
        if torch.equal(on_positive, relevance):  # no relevance where z <= 0 (after ReLU-Pass-Gamma chains)
            masked = [(True, on_positive)]
        else:
            masked = [(sign, part) for sign, part in ((True, on_positive), (False, relevance * _mask(z, False)))
                      if bool(part.any())]
        if not masked:
            return (torch.zeros_like(x),)
        signed = bool(x.min() < 0) if x.numel() else False
        dim = _channel_dim(module, x)
        inputs = torch.cat([x.clamp(min=0), x.clamp(max=0)], dim=dim) if signed else x
        weight, bias = self._stacked(module, tuple(sign for sign, _ in masked), signed)
        outputs = _affine_forward(module, inputs, weight, bias)
        if len(masked) > 1:
            scaled = torch.empty_like(outputs)
            for (_, part), out, into in zip(masked, outputs.chunk(len(masked), dim=dim),
                                            scaled.chunk(len(masked), dim=dim), strict=True):
                torch.div(part, _stabilize(out, self.stabilizer), out=into)
        else:
            scaled = masked[0][1] / _stabilize(outputs, self.stabilizer)
        grad = _input_grad(module, scaled, inputs, weight)
        if not signed:
            return (x * grad,)
        grad_pos, grad_neg = grad.chunk(2, dim=dim)
        return (x.clamp(min=0) * grad_pos + x.clamp(max=0) * grad_neg,)


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
    For ``MaxPool1d/2d/3d`` without dilation (:meth:`takes`; the composites refuse others). For ``p != 1``
    each window's weights are computed as ``(x_i / max_k x_k) ** p``, which cannot overflow at any power.

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

    @staticmethod
    def takes(module: nn.Module) -> bool:
        """Whether the rule applies to ``module``: a ``MaxPool1d/2d/3d`` without dilation."""
        dilation = getattr(module, "dilation", None)
        return _max_pool(module) is not None and all(d == 1 for d in (
            dilation if isinstance(dilation, (tuple, list)) else (dilation,)))

    def forward(self, module: nn.Module, input: tuple, output: torch.Tensor) -> None:
        """Keep the module's input for the backward pass."""
        self.stored_tensors["input"] = input

    def backward(self, module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
        """Redistribute the pooled relevance over each window."""
        x = self.stored_tensors["input"][0].detach()
        if not self.takes(module):
            raise ValueError(f"SmoothMaxPool does not take {module}; use it on max-pools without dilation")
        if self.power == 1:  # x**1 cannot overflow: the weights are the inputs, pooled as a sum
            pool = _AVG_POOLS[x.dim() - 2]
            with torch.enable_grad():
                weight = x.clamp(min=0).requires_grad_()
                pooled = pool(weight, module.kernel_size, module.stride, module.padding, module.ceil_mode,
                              count_include_pad=True)
            safe = torch.where(pooled > 0, pooled.detach(), torch.ones_like(pooled))
            grad, = torch.autograd.grad(pooled, weight, grad_output[0] / safe)
            result = weight.detach() * grad
        else:
            result = self._scaled(module, x.clamp(min=0), grad_output[0])
        return tuple(result if original.shape == result.shape else None for original in grad_input)

    def _scaled(self, module: nn.Module, x: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        """The rule with each window's weights ``(x_i / window max) ** p`` (in [0, 1], the maximum's 1): the
        windows as views of ``x`` (zero-padded: pads weigh 0), their shares summed back by autograd."""
        n = x.dim() - 2
        kernel, stride, padding = (tuple(v) if isinstance(v, (tuple, list)) else (v,) * n
                                   for v in (module.kernel_size, module.stride or module.kernel_size, module.padding))
        out = relevance.shape[2:]
        pads = []
        for d in reversed(range(n)):  # F.pad lists the last axis first; ceil_mode's last window may need more
            extra = max(0, (out[d] - 1) * stride[d] + kernel[d] - x.shape[2 + d] - 2 * padding[d])
            pads += [padding[d], padding[d] + extra]
        with torch.enable_grad():
            leaf = x.detach().requires_grad_()
            windows = F.pad(leaf, pads)
            for d in range(n):
                windows = windows.unfold(2 + d, kernel[d], stride[d])
            windows = windows[(slice(None), slice(None), *(slice(0, o) for o in out))]
        axes = tuple(range(-n, 0))
        values = windows.detach()
        top = values.amax(dim=axes, keepdim=True)
        weight = (values / torch.where(top > 0, top, torch.ones_like(top))) ** self.power
        total = weight.sum(dim=axes, keepdim=True)  # >= 1 where the window has a positive input, else 0
        share = weight * (relevance.reshape(total.shape) / torch.where(total > 0, total, torch.ones_like(total)))
        grad, = torch.autograd.grad(windows, leaf, share)
        return grad


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
