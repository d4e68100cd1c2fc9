"""LRP composites by name: which rule each layer of a localizer gets.

Every entry of :data:`COMPOSITES` is a factory ``(model, **options) -> zennit Composite``
(the CLI's choices come from this map); :func:`make_composite` validates the options and
returns the composite with its resolved parameters, which go into the provenance attrs.

All composites share the handling the localizers need beyond zennit's type maps:

- BatchNorms are merged into the preceding layer, exactly
  (:class:`~xai_loc.explain.canonizers.MergeBatchNorm`); the merged BatchNorm passes
  relevance unchanged (zennit's ``Pass``).
- The squeeze-excitation product ``x * s`` (:class:`~xai_loc.models.Gate`) gets
  :class:`~xai_loc.explain.rules.GateRule`: ``s`` held constant, relevance to ``x`` only.
- The residual :class:`zennit.layer.Sum` and average pools get zennit's ``Norm``,
  activations ``Pass`` (zennit's ``layer_map_base``).
- Max-pools are winner-take-all, either by the gradient (``maxpool='wta'``: each window's
  relevance goes to its maximum) or by zennit's ``Norm`` (``'norm'``: the same, less what
  the stabilizer eats at tiny maxima), or spread over the window (``'smooth'``,
  :class:`~xai_loc.explain.rules.SmoothMaxPool` with ``maxpool_power``). The paper
  composites default to ``'paper'``: ``Norm`` on LocCNN (its name map), the gradient on
  SampleCNN (its composite has no max-pool rule).
- Dropout (eval mode) and Flatten are identities or reshapes: plain gradient.

A composite is refused where its relevance would be silently wrong (what ``xai-loc audit`` flags): a module that
relevance crosses without a rule (:func:`check_coverage`), or a torch operation other than data movement called in a
``forward()`` outside any module, such as a functional ``x + y``, which no hook sees (:func:`check_operations`, on
:class:`~xai_loc.explain.Explainer`'s first forward pass: its all-zero window, or the first window explained).

The rules a composite's options choose (``first_rule``, ``conv_rule``, ``maxpool``) come from one
registry, :data:`NAMED_RULES` (name -> factory taking the composite's options); each composite
declares the names it allows (:data:`FIRST_RULES`, :data:`MAXPOOL_RULES`, :data:`COCHCNN_CONV_RULES`,
the cue composites' tables) and checks a choice with :func:`check_rule`, which also refuses an
option that only an unchosen rule reads (``gamma`` with ``conv_rule='epsilon'``).

The rules are zennit's (``WSquare``, ``Gamma``, ``Epsilon``, ``Norm``, ``Pass``) computed as
one autograd node per module (:class:`~xai_loc.explain.rules.NodeRule`): the same relevance,
at about the cost of a plain forward and backward pass.

The paper's composites (Comanducci, Antonacci & Sarti, EUSIPCO 2024) are ``'paper'`` (with
the gate fixed) and ``'paper-samplecnn-reversed-gate'`` (the released code's gate).
``'cochcnn'`` is for the cochleagram CNN (:mod:`xai_loc.models.cochleagram_cnn`): its
BatchNorms follow ReLUs and are folded into the next layer, and relevance continues
through the cochleagram front end to the waveform (conserved exactly with ``front_epsilon=0``).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.overrides import TorchFunctionMode
from zennit.composites import (
    EpsilonAlpha2Beta1,
    EpsilonPlusFlat,
    LayerMapComposite,
    SpecialFirstLayerMapComposite,
    layer_map_base,
)
from zennit.core import Composite, Hook
from zennit.layer import Sum
from zennit.rules import Epsilon, Flat, Pass, ZBox, ZPlus
from zennit.types import Activation, AvgPool, BatchNorm, Convolution, Linear, MaxPool

from xai_loc.checks import check_choice, check_number, is_real
from xai_loc.errors import InputError
from xai_loc.explain._options import option_defaults, resolve
from xai_loc.explain.canonizers import FoldBatchNormForward, MergeBatchNorm
from xai_loc.explain.rules import (
    FastEpsilon,
    FastGamma,
    FastNorm,
    FastPass,
    FastWSquare,
    GateRule,
    SmoothMaxPool,
    WindowBox,
    epsilon_stabilizer,
)
from xai_loc.models.cochleagram_cnn import FrequencyPad
from xai_loc.models.families import FAMILIES
from xai_loc.models.layers import Gate
from xai_loc.models.registry import MODELS

__all__ = ["COCHCNN_CONV_RULES", "COMPOSITES", "DATA_MOVEMENT", "FIRST_RULES", "GRADIENT_EXACT", "GRADIENT_OK",
           "LRP_FROM_FRONT_END", "MAXPOOL_RULES", "NAMED_RULES", "RULE_OPTIONS", "UNSEEN_OK", "ModuleRule",
           "OperationRecorder", "check_coverage", "check_finite", "check_operations", "check_rule", "composite_covers",
           "composite_defaults", "composites_for", "lrp_start", "make_composite", "module_rules", "register_composite",
           "rule_label", "unused_option", "written_for"]

CompositeFactory = Callable[..., Composite]

#: name -> factory ``(model, **options) -> zennit.core.Composite``.
COMPOSITES: dict[str, CompositeFactory] = {}
#: name -> the architectures a family-specific composite is written for (absent: any model).
COMPOSITE_ARCHITECTURES: dict[str, tuple[str, ...]] = {}

#: Rules of :data:`NAMED_RULES` selectable for the first layer (the one that sees the waveform).
FIRST_RULES = ("wsquare", "flat", "zplus", "epsilon", "gamma", "zbox")
#: Max-pool treatments of :data:`NAMED_RULES` ('paper', the paper composites' default: 'norm' on LocCNN, 'wta'
#: otherwise, as the paper did).
MAXPOOL_RULES = ("paper", "wta", "norm", "smooth")


def register_composite(name: str, architectures: tuple[str, ...] | None = None
                       ) -> Callable[[CompositeFactory], CompositeFactory]:
    """Decorator registering a composite factory under ``name``.

    The factory takes the model and keyword-only options with defaults; the defaults are
    the options :func:`make_composite` accepts. ``architectures`` limits a family-specific
    composite to the models it is written for (it would leave other models' layers uncovered).
    """
    def decorator(factory: CompositeFactory) -> CompositeFactory:
        if name in COMPOSITES:
            raise ValueError(f"composite name {name!r} is already registered")
        COMPOSITES[name] = factory
        if architectures is not None:
            COMPOSITE_ARCHITECTURES[name] = tuple(architectures)
        return factory

    return decorator


def composite_covers(arch: str) -> bool:
    """Whether the shipped LRP composites cover models of architecture ``arch``: not for one of a family that
    declares no composite (:attr:`~xai_loc.models.families.Family.composite` None: BAST, whose attention and front
    end no shipped rule covers) or a plug-in subclassing such an architecture (looked up, not joined: a plug-in joins
    its generic family, whose composite is ``'epsilon'``, only where it is used); for any other, an unregistered
    module included, :func:`check_coverage` judges the model's modules. (LRP also explains an architecture that a
    registered composite is written for, :func:`written_for`; AttnLRP those this answers False for.)"""
    model = MODELS.get(arch)
    uncovered = tuple(MODELS[name] for family in FAMILIES.values() if family.composite is None
                      for name in family.models if name in MODELS)
    return not (isinstance(model, type) and issubclass(model, uncovered))


def written_for(arch: str) -> list[str]:
    """The registered composites written for architecture ``arch`` (:func:`register_composite`'s
    ``architectures``)."""
    return [name for name, archs in COMPOSITE_ARCHITECTURES.items() if arch in archs]


#: Architectures whose front end no LRP rule covers (the cue network's ITD is an arg-max lag, see
#: :mod:`~xai_loc.explain.cuenet`): LRP explains them from the front end's output up, never at the waveform.
LRP_FROM_FRONT_END = ("cuenet",)


def lrp_start(model: nn.Module) -> str:
    """``'front_end'`` for a model whose LRP starts at its front end's output (:data:`LRP_FROM_FRONT_END`,
    with a front end), else ``''`` (the waveform)."""
    name = getattr(model, "arch_name", "") or type(model).__name__
    front = getattr(model, "front_end", None)
    return "front_end" if name in LRP_FROM_FRONT_END and isinstance(front, nn.Module) \
        and not isinstance(front, nn.Identity) else ""


def composites_for(model: nn.Module) -> list[str]:
    """The registered composites that explain ``model`` at their default options: written for its architecture or
    for any, and giving a rule to every module its relevance crosses from where its LRP starts (:func:`lrp_start`,
    :func:`check_coverage`)."""
    arch, skip = getattr(model, "arch_name", ""), lrp_start(model)
    usable = []
    for name, factory in COMPOSITES.items():
        if arch not in COMPOSITE_ARCHITECTURES.get(name, (arch,)):
            continue
        try:
            check_coverage(name, model, factory(model, **option_defaults(factory)), skip=skip)
        except InputError:
            continue
        usable.append(name)
    return usable


def _factory(name: str) -> CompositeFactory:
    if not isinstance(name, str) or name not in COMPOSITES:
        raise InputError(f"unknown composite {name!r}; allowed: {', '.join(COMPOSITES)}")
    return COMPOSITES[name]


def composite_defaults(name: str) -> dict[str, Any]:
    """Options of composite ``name`` with their defaults."""
    return option_defaults(_factory(name))


def make_composite(name: str, model: nn.Module, **options: Any) -> tuple[Composite, dict[str, Any]]:
    """Build composite ``name`` for ``model``.

    Returns
    -------
    composite, params
        The zennit composite (register it with ``zennit.attribution.Gradient``) and every
        option's value, defaults included.

    Raises
    ------
    InputError
        For an unknown composite, option or option value (``maxpool='smooth'`` for a model with a max-pool that
        :class:`~xai_loc.explain.rules.SmoothMaxPool` does not take).
    """
    factory = _factory(name)
    arch = getattr(model, "arch_name", "")  # registered localizers; a family's own sub-networks pass
    if arch and name in COMPOSITE_ARCHITECTURES and arch not in COMPOSITE_ARCHITECTURES[name]:
        raise InputError(f"composite {name!r} is written for {', '.join(COMPOSITE_ARCHITECTURES[name])}, not {arch}; "
                         f"allowed for {arch}: {', '.join(composites_for(model)) or 'none (use another method)'}")
    params = resolve(option_defaults(factory), options, f"composite {name!r}")
    if params.get("maxpool") == "smooth":
        pools = [where or "the model" for where, module in model.named_modules()
                 if isinstance(module, MaxPool) and not SmoothMaxPool.takes(module)]
        if pools:
            raise InputError(f"maxpool='smooth' is not allowed for {pools[0]} ({len(pools)} such module(s)): the "
                             "smooth rule takes MaxPool1d/2d/3d without dilation; use maxpool='wta' or 'norm'")
    return factory(model, **params), params


def _label(hook: Hook, text: str) -> Hook:
    """Attach a human-readable description (shown by the audit) to a rule template."""
    hook.label = text
    return hook


def rule_label(hook: Hook) -> str:
    """Description of a rule: its label if it has one, else its class name."""
    return getattr(hook, "label", type(hook).__name__)


#: Parameter-free modules whose plain gradient is already the right relevance map: reshapes, dropout (identity in
#: eval mode) and padding (data movement: relevance goes back to the samples it came from, summed where a sample
#: is repeated; constant padding takes none, like a bias).
GRADIENT_OK = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
               nn.AlphaDropout, nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d,
               nn.ConstantPad3d, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReflectionPad3d, nn.ReplicationPad1d,
               nn.ReplicationPad2d, nn.ReplicationPad3d, FrequencyPad)


@dataclass(frozen=True)
class ModuleRule:
    """A module, the rule it gets and whether that is a problem."""

    name: str
    kind: str
    rule: str
    problem: bool = False


def _in_subtree(name: str, root: str) -> bool:
    return bool(root) and (name == root or name.startswith(root + "."))


def module_rules(model: nn.Module, composite: Composite, skip: str = "") -> tuple[list[ModuleRule], dict[str, str]]:
    """The rule of every leaf module of ``model`` (and of any module with a rule), problems marked.

    ``composite`` must be registered on ``model`` (its canonizers say which BatchNorms are merged). A
    problem is a module that transforms the signal but gets no rule: a BatchNorm not merged, or a
    module that is neither a max-pool nor a reshape (:data:`GRADIENT_OK`). ``skip``: the qualified name
    of a module whose subtree relevance never crosses (the front end below the first level read).
    """
    merged = {}
    names = {module: name for name, module in model.named_modules()}
    for handle in composite.handles:
        if isinstance(handle, (MergeBatchNorm, FoldBatchNormForward)):
            merged[handle.batch_norm] = ", ".join(names[linear] for linear in handle.linears)
    rows, labels = [], {}
    ctx: dict = {}
    for name, module in model.named_modules():
        template = composite.module_map(ctx, name, module)
        leaf = not list(module.children())
        if (not leaf and template is None) or _in_subtree(name, skip):
            continue
        kind = type(module).__name__
        problem = False
        if isinstance(module, BatchNorm):
            if module in merged:
                rule = f"{rule_label(template) if template else 'gradient'} (merged into {merged[module]})"
            else:
                rule, problem = "NO RULE: BatchNorm not merged into a preceding linear layer", True
        elif template is not None:
            rule = rule_label(template)
        elif isinstance(module, MaxPool):
            rule = "winner-take-all (gradient)"
        elif isinstance(module, GRADIENT_OK):
            rule = "identity or reshape (gradient)"
        else:
            rule, problem = "NO RULE", True
        labels[name] = rule
        rows.append(ModuleRule(name, kind, rule, problem))
    return rows, labels


def check_coverage(name: str, model: nn.Module, composite: Composite, skip: str = "") -> None:
    """Refuse composite ``name`` on ``model`` if a module relevance crosses gets no rule (:func:`module_rules`,
    what ``xai-loc audit`` flags): its relevance would be silently wrong. The composite is registered for
    the check and removed again.

    Raises
    ------
    InputError
        Naming the first uncovered module and the composites written for the model's architecture.
    """
    try:
        composite.register(model)
        rows, _ = module_rules(model, composite, skip)
    finally:
        composite.remove()
    problems = [row for row in rows if row.problem]
    if problems:
        arch = getattr(model, "arch_name", "") or type(model).__name__
        own = [n for n in written_for(arch) if n != name]
        first = problems[0]
        raise InputError(f"composite {name!r} is not allowed for {arch}: {len(problems)} module(s) would get no "
                         f"LRP rule ({first.name} ({first.kind}): {first.rule}); use "
                         + (f"composite {', '.join(map(repr, own))}" if own else
                            "a composite that gives it a rule (xai_loc.explain.register_composite)")
                         + " (xai-loc audit lists every module's rule)")


#: Torch operations that only move, reshape or describe data: harmless outside modules.
DATA_MOVEMENT = frozenset({
    "stack", "cat", "concat", "reshape", "view", "view_as", "flatten", "unflatten", "squeeze", "unsqueeze",
    "permute", "transpose", "contiguous", "split", "chunk", "unbind", "expand", "expand_as", "__getitem__",
    "size", "dim", "__get__", "narrow", "select", "clone", "detach", "to", "type_as", "float", "double",
    "numel", "is_floating_point", "__len__",
})
#: Torch operations whose plain gradient is the relevance LRP gives them as modules (ReLU's Pass, padding's and eval
#: dropout's gradient): exact outside modules too.
GRADIENT_EXACT = frozenset({"relu", "relu_", "pad", "dropout"})
#: Operations outside modules that LRP's hooks need not see: :data:`DATA_MOVEMENT` and :data:`GRADIENT_EXACT`.
UNSEEN_OK = DATA_MOVEMENT | GRADIENT_EXACT


class OperationRecorder(TorchFunctionMode):
    """Record the torch functions called while no leaf module runs, as ``(enclosing module's name, function)``:
    what LRP's hooks, which sit on modules, cannot see (``''``: the model's own ``forward()``).

    Use as a context manager around a forward pass, then :meth:`remove` the hooks. The hooks that mark a
    module's start run before any other (a composite's included), so whatever those do counts as the module's.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.leaf_depth = 0
        self.calls: list[tuple[str, str]] = []
        self.handles = []
        for name, module in model.named_modules():
            leaf = not list(module.children())
            self.handles.append(module.register_forward_pre_hook(self._enter(name, leaf), prepend=True))
            self.handles.append(module.register_forward_hook(self._leave(leaf)))

    def _enter(self, name: str, leaf: bool):
        def hook(module, args):
            self.stack.append(name)
            self.leaf_depth += leaf
        return hook

    def _leave(self, leaf: bool):
        def hook(module, args, output):
            self.stack.pop()
            self.leaf_depth -= leaf
        return hook

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.leaf_depth == 0 and self.stack:
            entry = (self.stack[-1], getattr(func, "__name__", repr(func)))
            if entry not in self.calls:
                self.calls.append(entry)
        return func(*args, **(kwargs or {}))

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self.handles:
            handle.remove()


def check_operations(name: str, model: nn.Module, run: Callable[[], Any], skip: str = "") -> Any:
    """Run ``run()``, a forward pass of ``model``, and refuse composite ``name`` on it if the pass calls a torch
    operation other than data movement or a gradient-exact one (:data:`UNSEEN_OK`) outside any module
    (:class:`OperationRecorder`, what ``xai-loc audit`` flags as invisible to hooks): no rule sees it, so relevance
    would be silently wrong (a functional ``x + y`` doubles it). Operations inside ``skip``'s subtree (below the
    first level read) pass.

    Returns
    -------
    What ``run()`` returns.

    Raises
    ------
    InputError
        Naming the first such operation and where it is called.
    """
    recorder = OperationRecorder(model)
    try:
        with recorder:
            result = run()
    finally:
        recorder.remove()
    flagged = [(where, op) for where, op in recorder.calls if op not in UNSEEN_OK and not _in_subtree(where, skip)]
    if flagged:
        arch = getattr(model, "arch_name", "") or type(model).__name__
        where, op = flagged[0]
        raise InputError(f"composite {name!r} is not allowed for {arch}: {op} is called in "
                         f"{where + '.forward()' if where else 'the model.forward()'} outside any module "
                         f"({len(flagged)} such operation(s)), where no LRP rule's hook sees it and relevance would "
                         "be silently wrong; do it in a module (e.g. zennit.layer.Sum for a sum) or use a gradient "
                         "method (xai-loc audit lists every operation)")
    return result


def unused_option(name: str, value: Any, default: Any, setting: str, needs: str) -> None:
    """Refuse ``name=value`` other than its ``default`` when ``setting`` turns off the rule that uses it (it would
    change nothing but the name of the store)."""
    if value != default:
        raise InputError(f"{name}={value!r} is not allowed with {setting}: no rule uses it; use {needs} "
                         "or leave it out")


def check_finite(name: str, value: Any) -> float:
    """Return ``value`` as a float if it is a finite real number (a bound or a constant baseline)."""
    if not is_real(value):
        raise InputError(f"{name}={value!r} is not allowed; use a finite number")
    return float(value)


def _box(low: float | None, high: float | None, stabilizer: float) -> Hook:
    if low is None and high is None:
        return _label(WindowBox(stabilizer=stabilizer), "ZBox(per-window bounds)")
    if low is None or high is None:
        given, value, missing = ("low", low, "high") if high is None else ("high", high, "low")
        raise InputError(f"{given}={value!r} without {missing} is not allowed; give both low and high for the box "
                         "rule, or neither (per-window bounds)")
    low, high = check_finite("low", low), check_finite("high", high)
    if not low < high:
        raise InputError(f"low={low!r}, high={high!r} are not allowed; use low < high")
    return _label(ZBox(low=low, high=high, stabilizer=stabilizer), f"ZBox(low={low:g}, high={high:g})")


def _gamma(gamma: float, stabilizer: float) -> Hook:
    return _label(FastGamma(gamma=check_number("gamma", gamma), stabilizer=stabilizer), f"Gamma(gamma={gamma:g})")


def _epsilon(epsilon: float) -> Hook:
    return _label(FastEpsilon(epsilon=epsilon), f"Epsilon(epsilon={epsilon:g})")


def _stock_epsilon(epsilon: float) -> Hook:
    """zennit's own Epsilon rule, labelled (for modules the fast rule does not take; ``epsilon=0``: LRP-0,
    nothing through an output of exactly 0)."""
    return _label(Epsilon(epsilon=epsilon_stabilizer(epsilon)), f"Epsilon(epsilon={epsilon:g})")


#: The rules a composite option (``first_rule``, ``conv_rule``, ``maxpool``) selects, by name: name -> factory taking
#: the composite's options as keywords (each reads those it needs; ``'wta'``: no rule, max-pools take the gradient).
#: Every composite builds its choices from here and declares only the names it allows (:data:`FIRST_RULES`,
#: :data:`MAXPOOL_RULES`, :data:`COCHCNN_CONV_RULES` and those of :mod:`~xai_loc.explain.cue_composites`).
NAMED_RULES: dict[str, Callable[..., Hook | None]] = {
    "wsquare": lambda *, stabilizer, **_: _label(FastWSquare(stabilizer=stabilizer), "WSquare"),
    "flat": lambda *, stabilizer, **_: _label(Flat(stabilizer=stabilizer), "Flat"),
    "zplus": lambda *, stabilizer, **_: _label(ZPlus(stabilizer=stabilizer), "ZPlus"),
    "epsilon": lambda *, epsilon, **_: _epsilon(epsilon),
    "gamma": lambda *, gamma, stabilizer, **_: _gamma(gamma, stabilizer),
    "zbox": lambda *, stabilizer, low=None, high=None, **_: _box(low, high, stabilizer),
    "wta": lambda **_: None,
    "norm": lambda *, stabilizer, **_: _label(FastNorm(stabilizer=stabilizer), "Norm"),
    "smooth": lambda *, maxpool_power, **_: _label(SmoothMaxPool(power=maxpool_power),
                                                   f"SmoothMaxPool(power={maxpool_power:g})"),
}
#: Options that only one named rule reads, with the default that leaves them unset (every composite's default).
RULE_OPTIONS = {"gamma": {"gamma": 0.25}, "zbox": {"low": None, "high": None}, "smooth": {"maxpool_power": 1.0}}


def check_rule(option: str, name: str, allowed: tuple[str, ...], **options: Any) -> str:
    """Return ``name``, the value of composite option ``option``, if it is one of ``allowed``.

    ``options``: the composite's options that only some rules read (:data:`RULE_OPTIONS`; those its other layers
    read too stay out): one that only another allowed rule reads is refused at other than its default, since it
    would change nothing (``gamma`` with ``conv_rule='epsilon'``).
    """
    check_choice(option, name, allowed)
    for rule in allowed:
        for key, default in RULE_OPTIONS.get(rule, {}).items():
            if rule != name and key in options:
                unused_option(key, options[key], default, f"{option}={name!r}", f"{option}={rule!r}")
    return name


def _check_common(epsilon: float, stabilizer: float, maxpool: str, maxpool_power: float,
                  paper: bool = False) -> None:
    check_number("epsilon", epsilon)
    check_number("stabilizer", stabilizer, strict=True)
    check_number("maxpool_power", maxpool_power, strict=True)
    check_rule("maxpool", maxpool, MAXPOOL_RULES if paper else MAXPOOL_RULES[1:], maxpool_power=maxpool_power)


def _localizer_map(gate: str, maxpool: str, maxpool_power: float, stabilizer: float) -> list:
    """Layer-map entries for the localizers' own modules, placed before zennit's."""
    pool = NAMED_RULES[maxpool](stabilizer=stabilizer, maxpool_power=maxpool_power)
    entries = [(Gate, _label(GateRule(to=gate), f"GateRule(to={gate})"))]
    return entries if pool is None else [*entries, (MaxPool, pool)]


def _base_map(stabilizer: float) -> list:
    """zennit's ``layer_map_base`` (Pass on activations and BatchNorms, Norm on sums and average
    pools) with the same rules computed in one autograd node per module."""
    return [(Activation, _label(FastPass(), "Pass")), (Sum, _label(FastNorm(stabilizer=stabilizer), "Norm")),
            (AvgPool, _label(FastNorm(stabilizer=stabilizer), "Norm")), (BatchNorm, _label(FastPass(), "Pass"))]


def _type_composite(first: Hook, conv: Hook, linear: Hook, *, gate: str, maxpool: str, maxpool_power: float,
                    stabilizer: float) -> Composite:
    """First layer ``first``; other convolutions ``conv``; dense layers ``linear``."""
    layer_map = (_localizer_map(gate, maxpool, maxpool_power, stabilizer) + _base_map(stabilizer)
                 + [(Convolution, conv), (nn.Linear, linear)])
    return SpecialFirstLayerMapComposite(layer_map=layer_map, first_map=[(Linear, first)],
                                         canonizers=[MergeBatchNorm()])


def _paper(model: nn.Module, gate: str, first_rule: str, epsilon: float, gamma: float, stabilizer: float,
           maxpool: str, maxpool_power: float, low: float | None, high: float | None) -> Composite:
    _check_common(epsilon, stabilizer, maxpool, maxpool_power, paper=True)
    if maxpool == "paper":
        maxpool = "norm" if getattr(model, "arch_name", "") == "loccnn" else "wta"
    check_rule("first_rule", first_rule, FIRST_RULES, low=low, high=high)
    first = NAMED_RULES[first_rule](epsilon=epsilon, gamma=gamma, stabilizer=stabilizer, low=low, high=high)
    return _type_composite(first, _gamma(gamma, stabilizer), _epsilon(epsilon), gate=gate, maxpool=maxpool,
                           maxpool_power=maxpool_power, stabilizer=stabilizer)


@register_composite("paper")
def paper(model: nn.Module, *, first_rule: str = "wsquare", epsilon: float = 1e-6, gamma: float = 0.25,
          stabilizer: float = 1e-6, maxpool: str = "paper", maxpool_power: float = 1.0,
          low: float | None = None, high: float | None = None) -> Composite:
    """The paper's rules, with the squeeze-excitation gate held constant.

    First layer WSquare (or ``first_rule``), other convolutions Gamma (0.25), dense layers
    Epsilon (1e-6), Norm on sums and average pools, Pass on activations; BatchNorms merged.
    On LocCNN this is the paper's name map (conv1 WSquare, conv2-5 Gamma, Norm on the
    max-pools, fc1/fc2 Epsilon, Pass on ReLUs; dropout is the identity in eval mode); on
    SampleCNN its composite with the gate fixed (relevance to the signal, none to the gate).
    ``low``/``high`` are the box of ``first_rule='zbox'`` (default: per window).
    """
    return _paper(model, "signal", first_rule, epsilon, gamma, stabilizer, maxpool, maxpool_power, low, high)


@register_composite("paper-samplecnn-reversed-gate")
def paper_reversed_gate(model: nn.Module, *, first_rule: str = "wsquare", epsilon: float = 1e-6,
                        gamma: float = 0.25, stabilizer: float = 1e-6, maxpool: str = "paper",
                        maxpool_power: float = 1.0, low: float | None = None,
                        high: float | None = None) -> Composite:
    """The paper's released SampleCNN composite exactly: the gate product's relevance goes
    into the gate branch ``s`` (and back through the SEBlock), none directly to ``x``.

    Same rules as ``'paper'`` otherwise; identical to it on models without a gate.
    """
    return _paper(model, "gate", first_rule, epsilon, gamma, stabilizer, maxpool, maxpool_power, low, high)


@register_composite("epsilon")
def epsilon_everywhere(model: nn.Module, *, epsilon: float = 1e-6, stabilizer: float = 1e-6,
                       maxpool: str = "wta", maxpool_power: float = 1.0) -> Composite:
    """Epsilon on every convolution and dense layer (LRP-0 for ``epsilon=0``).

    With zero biases the relevance is conserved layer by layer up to the stabilizers,
    which makes it the composite of conservation checks.
    """
    _check_common(epsilon, stabilizer, maxpool, maxpool_power)
    rule = _epsilon(epsilon)
    return _type_composite(rule, rule, rule, gate="signal", maxpool=maxpool, maxpool_power=maxpool_power,
                           stabilizer=stabilizer)


@register_composite("epsilon_plus_flat")
def epsilon_plus_flat(model: nn.Module, *, epsilon: float = 1e-6, stabilizer: float = 1e-6,
                      maxpool: str = "wta", maxpool_power: float = 1.0) -> Composite:
    """zennit's EpsilonPlusFlat: Flat on the first layer, ZPlus on convolutions, Epsilon on
    dense layers (Kohlbrenner et al. 2020), plus the localizer handling above."""
    _check_common(epsilon, stabilizer, maxpool, maxpool_power)
    return EpsilonPlusFlat(epsilon=epsilon_stabilizer(epsilon), stabilizer=stabilizer,
                           layer_map=_localizer_map("signal", maxpool, maxpool_power, stabilizer),
                           canonizers=[MergeBatchNorm()])


@register_composite("epsilon_alpha2_beta1")
def epsilon_alpha2_beta1(model: nn.Module, *, epsilon: float = 1e-6, stabilizer: float = 1e-6,
                         maxpool: str = "wta", maxpool_power: float = 1.0) -> Composite:
    """zennit's EpsilonAlpha2Beta1: AlphaBeta (2, 1) on all convolutions, Epsilon on dense
    layers, plus the localizer handling above."""
    _check_common(epsilon, stabilizer, maxpool, maxpool_power)
    return EpsilonAlpha2Beta1(epsilon=epsilon_stabilizer(epsilon), stabilizer=stabilizer,
                              layer_map=_localizer_map("signal", maxpool, maxpool_power, stabilizer),
                              canonizers=[MergeBatchNorm()])


@register_composite("epsilon_gamma_box")
def epsilon_gamma_box(model: nn.Module, *, epsilon: float = 1e-6, gamma: float = 0.25,
                      stabilizer: float = 1e-6, low: float | None = None, high: float | None = None,
                      maxpool: str = "wta", maxpool_power: float = 1.0) -> Composite:
    """zennit's EpsilonGammaBox: ZBox on the first layer, Gamma on other convolutions,
    Epsilon on dense layers, plus the localizer handling above.

    The box is ``[low, high]`` if given, else each window's own sample range (the
    waveform has no natural bounds), so a window's relevance does not depend on its batch.
    """
    _check_common(epsilon, stabilizer, maxpool, maxpool_power)
    return _type_composite(_box(low, high, stabilizer), _gamma(gamma, stabilizer), _epsilon(epsilon),
                           gate="signal", maxpool=maxpool, maxpool_power=maxpool_power, stabilizer=stabilizer)


#: Rules of :data:`NAMED_RULES` selectable for the convolutions of the cochleagram CNN.
COCHCNN_CONV_RULES = ("gamma", "epsilon", "zplus")


@register_composite("cochcnn", architectures=("cochcnn",))
def cochcnn(model: nn.Module, *, conv_rule: str = "gamma", epsilon: float = 1e-6, gamma: float = 0.25,
            stabilizer: float = 1e-6, maxpool: str = "wta", maxpool_power: float = 1.0,
            front_epsilon: float | None = None) -> Composite:
    """The cochleagram CNN from logits to the waveform.

    CNN: convolutions ``conv_rule`` (Gamma 0.25 by default; the cochleagram is
    non-negative), dense layers Epsilon (``epsilon``), ReLUs Pass, max-pools as ``maxpool``,
    every BatchNorm folded into the next layer
    (:class:`~xai_loc.explain.canonizers.FoldBatchNormForward`) and then Pass.
    Front end: the power compression ``x ** 0.3`` is elementwise, so it passes relevance
    unchanged (Pass); the rectifiers too; the sinc low-pass (a ``Conv1d``) and the ERB
    filterbank are linear and bias-free and get the Epsilon rule with their own
    ``front_epsilon`` (None: ``epsilon``, as before it existed). The default 1e-6 damps filter
    outputs that nearly cancel, at the cost of absorbing relevance where the envelopes are small
    against it: on the shipped model 0.1 % of the cochleagram's relevance at its training level,
    9 % at -40 dB. ``front_epsilon=0`` is
    LRP-0 (``R / z = 0`` where ``z = 0``, e.g. in digital silence), which conserves relevance
    from the cochleagram down to the waveform at any input level (up to rounding), but gives
    large signed relevance to the samples of a filter output that nearly cancels: on the
    shipped model its waveform maps delete less faithfully (SRG with ROAD fill over 6 sources
    0.0084 [0.0041, 0.0122] against 0.0136 [0.0084, 0.0192] at the default, same draws).
    """
    from xai_loc.features.cochleagram import ERBFilterbank, PowerCompression, SincDownsample

    _check_common(epsilon, stabilizer, maxpool, maxpool_power)
    if front_epsilon is not None:
        check_number("front_epsilon", front_epsilon)
    check_rule("conv_rule", conv_rule, COCHCNN_CONV_RULES, gamma=gamma)
    conv = NAMED_RULES[conv_rule](epsilon=epsilon, gamma=gamma, stabilizer=stabilizer)
    front = _stock_epsilon(epsilon if front_epsilon is None else front_epsilon)
    layer_map = ([(ERBFilterbank, front), (SincDownsample, front), (PowerCompression, _label(Pass(), "Pass"))]
                 + _localizer_map("signal", maxpool, maxpool_power, stabilizer) + layer_map_base(stabilizer)
                 + [(Convolution, conv), (nn.Linear, _epsilon(epsilon))])
    return LayerMapComposite(layer_map=layer_map, canonizers=[FoldBatchNormForward()])
