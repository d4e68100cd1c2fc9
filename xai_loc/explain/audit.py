"""Audit a model against a composite before trusting its explanations.

:func:`audit` reports, for one model and composite:

- every module with the rule it gets (merged BatchNorms, plain-gradient modules that need
  no rule, and ``NO RULE`` for modules a rule should cover but none does);
- torch operations called in ``forward()`` outside any leaf module, which hooks cannot
  see (a functional ``x + y`` or ``x * s`` silently breaks conservation); data movement
  such as ``stack`` or ``reshape`` is listed but not flagged;
- relevance conservation layer by layer for one input: the relevance arriving at each
  module's output and leaving at its input. Layers with parameters may lose relevance to
  their biases, and so may pads whose rows a folded BatchNorm fills with its shift
  (:class:`~xai_loc.explain.canonizers.FoldBatchNormForward`: constant rows, like a bias);
  other parameter-free layers must not lose any.

``report.render()`` is the text of ``xai-loc audit``; ``report.problems`` lists what is
wrong (empty when the composite covers the model).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from xai_loc.errors import InputError
from xai_loc.explain.attribute import bind_target, lrp_start, out_of_place, placed, resolve_model
from xai_loc.explain.canonizers import FoldBatchNormForward
from xai_loc.explain.composites import UNSEEN_OK, ModuleRule, OperationRecorder, make_composite, module_rules
from xai_loc.explain.targets import check_truth, get_target, targets_for
from xai_loc.models.families import n_parameters

__all__ = ["AuditReport", "LayerRelevance", "ModuleRule", "audit"]

#: Relative tolerance for relevance conservation of parameter-free layers.
LEAK_TOLERANCE = 1e-3
#: How the audit labels a pad whose rows a folded BatchNorm fills.
FILLED = "; rows filled by a folded BatchNorm (absorb like a bias)"


@dataclass(frozen=True)
class LayerRelevance:
    """Relevance totals at one module's output and input for the audited input."""

    name: str
    rule: str
    relevance_out: float
    relevance_in: float
    has_parameters: bool
    bias_like: bool = False  #: a pad filled by a folded BatchNorm: its constant rows absorb relevance like a bias

    @property
    def leaks(self) -> bool:
        """A layer whose relevance is not finite, or one without parameters or bias-like rows that does not
        conserve it."""
        if not (math.isfinite(self.relevance_in) and math.isfinite(self.relevance_out)):
            return True
        scale = max(abs(self.relevance_out), 1e-12)
        absorbs = self.has_parameters or self.bias_like
        return not absorbs and abs(self.relevance_in - self.relevance_out) > LEAK_TOLERANCE * scale


@dataclass
class AuditReport:
    """What :func:`audit` found; :meth:`render` for text."""

    model: str
    composite: str
    params: dict[str, Any]
    target: str
    modules: list[ModuleRule] = field(default_factory=list)
    functional: list[tuple[str, str]] = field(default_factory=list)
    layers: list[LayerRelevance] = field(default_factory=list)
    input_module: str = ""
    start: str = ""
    seed_sum: float = 0.0
    input_sum: float = 0.0

    @property
    def flagged_functional(self) -> list[tuple[str, str]]:
        """Operations outside modules that are neither data movement nor gradient-exact (:data:`UNSEEN_OK`)."""
        return [(where, op) for where, op in self.functional if op not in UNSEEN_OK]

    @property
    def problems(self) -> list[str]:
        """One line per problem; empty if the composite covers the model."""
        out = [f"{m.name} ({m.kind}): {m.rule}" for m in self.modules if m.problem]
        out += [f"{op} called in {where + '.forward()' if where else 'the model.forward()'} outside any module: "
                "hooks cannot see it" for where, op in self.flagged_functional]
        out += [f"{layer.name} ({layer.rule}) does not conserve relevance: receives {layer.relevance_out:.6g}, "
                f"passes on {layer.relevance_in:.6g}" for layer in self.layers if layer.leaks]
        if not (math.isfinite(self.seed_sum) and math.isfinite(self.input_sum)):
            out.append(f"relevance is not finite: seeded {self.seed_sum:.6g}, reaching the input {self.input_sum:.6g}")
        return out

    def render(self) -> str:
        """The report as text."""
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        lines = [f"audit of {self.model} with composite {self.composite!r} ({params})", "", "modules and rules:"]
        width = max((len(m.name) for m in self.modules), default=10)
        kinds = max((len(m.kind) for m in self.modules), default=10)
        for m in self.modules:
            lines.append(f"  {m.name:<{width}}  {m.kind:<{kinds}}  {m.rule}{'   <-- problem' if m.problem else ''}")
        if self.input_module:
            lines.append(f"  the input enters at: {self.input_module}")
        if self.start:
            lines.append(f"  {self.start}")
        lines += ["", "torch operations in forward() outside modules:"]
        if not self.functional:
            lines.append("  none")
        for where, op in sorted(set(self.functional)):
            note = "data movement or gradient-exact, harmless" if op not in {o for _, o in self.flagged_functional} \
                else "INVISIBLE TO HOOKS"
            lines.append(f"  {where or '(model)'}: {op} ({note})")
        lines += ["", f"relevance conservation for one input (target {self.target!r}):",
                  f"  {'module':<{width}}  {'relevance out':>14}  {'relevance in':>14}  {'in/out':>8}  rule"]
        for layer in self.layers:
            ratio = layer.relevance_in / layer.relevance_out if layer.relevance_out else float("nan")
            flag = "   <-- leaks" if layer.leaks else ""
            lines.append(f"  {layer.name:<{width}}  {layer.relevance_out:>14.6g}  {layer.relevance_in:>14.6g}  "
                         f"{ratio:>8.4f}  {layer.rule}{flag}")
        share = self.input_sum / self.seed_sum if self.seed_sum else float("nan")
        lines += [f"  seeded at the output: {self.seed_sum:.6g}; reaching the input: {self.input_sum:.6g} "
                  f"({share:.1%}); the difference is what biases absorbed, stabilizers lost and "
                  "non-conserving layers added", ""]
        problems = self.problems
        lines.append("problems: none" if not problems else "problems:")
        lines += [f"  {p}" for p in problems]
        return "\n".join(lines)


class _Tap(torch.autograd.Function):
    """Identity that reports the gradient (zennit's relevance) flowing back through it."""

    @staticmethod
    def forward(ctx, record, *tensors):
        ctx.record = record
        return tensors

    @staticmethod
    def backward(ctx, *grads):
        ctx.record(grads)
        return (None, *grads)


def _same_storage(a: Any, x: torch.Tensor) -> bool:
    return isinstance(a, torch.Tensor) and a.shape == x.shape and a.data_ptr() == x.data_ptr()


class _Taps:
    """Relevance totals at each leaf module's output and input during one LRP pass.

    Registered before the composite, so the input tap sits outside zennit's hooks and sees
    the relevance its rule produced.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor) -> None:
        self.order: list[str] = []
        self.out: dict[str, float] = {}
        self.into: dict[str, float] = {}
        self.input_module = ""
        self.handles = []
        self.x = x
        for name, module in model.named_modules():
            if not list(module.children()):
                self.handles.append(module.register_forward_pre_hook(self._pre(name)))
                self.handles.append(module.register_forward_hook(self._post(name)))

    def _pre(self, name: str):
        def hook(module, args):
            if not self.input_module and any(_same_storage(a, self.x) for a in args):
                self.input_module = name
            grad_args = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
            if not grad_args:
                return None

            def record(grads):
                total = sum(float(g.double().sum()) for g in grads if g is not None)
                self.into[name] = self.into.get(name, 0.0) + total

            tapped = iter(_Tap.apply(record, *grad_args))
            if name not in self.order:
                self.order.append(name)
            return tuple(next(tapped) if isinstance(a, torch.Tensor) and a.requires_grad else a for a in args)
        return hook

    def _post(self, name: str):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor) and output.requires_grad:
                def record(grad):
                    self.out[name] = self.out.get(name, 0.0) + float(grad.double().sum())
                output.register_hook(record)
        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def audit(model: nn.Module | str | os.PathLike, composite: str = "paper", input: Any = None,
          target: str | None = None, positions: Any = None, seed: int = 0, **options: Any) -> AuditReport:
    """Audit ``model`` against ``composite`` (see the module docs).

    Parameters
    ----------
    model
        A localizer or an xai-loc checkpoint path.
    composite
        A name in :data:`~xai_loc.explain.COMPOSITES`.
    input
        One window ``[mic, time]`` (or ``[1, mic, time]``); default Gaussian noise of
        standard deviation 0.01 (the level of gpuRIR-scale speech) seeded by ``seed``.
    target
        A target name (default: the model's own output, the first target of its output kind that
        needs no truth: 'prediction', 'class_logit', 'azimuth' or 'direction'); 'truth' and
        'error' need ``positions`` (one (x, y, z)); 'contrast' uses the output on an all-zero
        window as its reference.
    positions
        The true source position (x, y, z), for targets that need it (for other output kinds the true value of
        one example: a class label or direction, as :func:`~xai_loc.explain.targets.check_truth` takes).
    seed
        Seed of the default input.
    **options
        Composite options.

    Returns
    -------
    AuditReport
    """
    model, info = resolve_model(model)
    kind = getattr(model, "output_kind", "position")
    free = [name for name in targets_for(kind) if not get_target(name).needs_truth]
    if target is None:  # the probe input has no truth
        target = free[0]
    target_spec = get_target(target)
    if target_spec.needs_truth and positions is None and target in targets_for(kind):
        raise InputError(f"target {target!r} needs the truth (a true position or class), which the random probe "
                         f"input lacks; use one of {', '.join(free)}")
    objective = bind_target(model, target)
    dtype = next(model.parameters()).dtype
    x = _probe(model, input, seed).to(dtype)
    truth = None
    if target_spec.needs_truth:
        if positions is None:
            raise InputError(f"target {target!r} needs positions=(x, y, z)")
        one = positions[None] if isinstance(positions, torch.Tensor) else [positions]  # a batch of one
        truth = check_truth(one, kind, 1).to(torch.long if kind == "direction_classes" else dtype)
    built, params = make_composite(composite, model, **options)
    n_params = n_parameters(model)
    report = AuditReport(f"{info['model']} ({type(model).__name__}, {n_params:,} parameters)", composite, params,
                         target)
    start = lrp_start(model)  # where Explainer starts LRP: the waveform, or a front end no rule covers
    with placed(model, torch.device("cpu")), out_of_place(model):
        with torch.no_grad():
            reference = model(torch.zeros_like(x)) if target_spec.needs_reference else None
            if start:
                x = model.front_end(x)
                report.start = (f"LRP on {info['model']} starts at the output of its {start} (no rule covers it), "
                                "as Explainer does: audited from there")
        forward = (lambda a: model.head(model.body(a))) if start else model
        recorder = OperationRecorder(model)
        try:
            with torch.no_grad(), recorder:
                forward(x)
        finally:
            recorder.remove()
        report.functional = recorder.calls

        x = x.clone().requires_grad_()
        taps = _Taps(model, x)
        try:
            with built.context(model):
                report.modules, labels = module_rules(model, built, skip=start)
                filled = {pad for handle in built.handles if isinstance(handle, FoldBatchNormForward)
                          for pad in handle.pads}
                output = forward(x)
                seed_relevance = objective.seed(output, objective.weights(output, truth, reference))
                relevance, = torch.autograd.grad(output, x, seed_relevance)
        finally:
            taps.remove()
    modules = dict(model.named_modules())
    report.layers = [
        LayerRelevance(name, labels.get(name, "") + (FILLED if modules[name] in filled else ""),
                       taps.out.get(name, 0.0), taps.into.get(name, 0.0),
                       any(True for _ in modules[name].parameters(recurse=False)), modules[name] in filled)
        for name in taps.order
    ]
    report.input_module = f"{taps.input_module} ({labels.get(taps.input_module, '')})" if taps.input_module else ""
    report.seed_sum = float(seed_relevance.double().sum())
    report.input_sum = float(relevance.double().sum())
    return report


def _probe(model: nn.Module, input: Any, seed: int) -> torch.Tensor:
    """The audited window ``[1, *input_shape]``: ``input`` checked, or noise seeded by ``seed``."""
    shape = getattr(model, "input_shape", None)
    if input is None:
        if shape is None:
            raise InputError("give an input window: the model has no input_shape")
        gen = torch.Generator().manual_seed(seed)
        return 0.01 * torch.randn(1, *shape, generator=gen, dtype=torch.float64)
    try:
        array = np.asarray(input.detach().cpu() if isinstance(input, torch.Tensor) else input)
    except (TypeError, ValueError):
        array = np.asarray(None)
    want = "one window [mic, time]" if shape is None else f"one window of shape {tuple(shape)}"
    if array.dtype.kind not in "iuf":
        raise InputError(f"input of type {type(input).__name__} is not allowed; use {want} of real numbers")
    x = torch.as_tensor(array)
    if shape is not None:
        x = x[None] if tuple(x.shape) == tuple(shape) else x
        if tuple(x.shape) != (1, *shape):
            raise InputError(f"input of shape {tuple(array.shape)} is not allowed; use {want}")
    else:
        x = x[None] if x.dim() == 2 else x
        if x.dim() != 3 or x.shape[0] != 1:
            raise InputError(f"input of shape {tuple(array.shape)} is not allowed; use {want}")
    if not bool(torch.isfinite(x).all()):
        raise InputError("input holds NaN or infinite values; use a window of finite samples")
    return x
