"""Attribution targets: what an explanation is an explanation of, for every output kind.

A localizer's output ``f(x)`` is one of the output kinds of :data:`xai_loc.models.base.OUTPUT_KINDS`
(a position in metres, azimuth or (azimuth, elevation) in degrees, direction-class logits,
``[cos az, sin az]``). A target turns it into one scalar ``q`` per window and says how LRP
seeds the output; every method uses it the same way:

- per window, *weights* ``w`` in output space are computed once from the output (the chosen
  class, the true direction, the position to explain ...) and held constant;
- gradient-based methods (saliency, input x gradient, integrated gradients, DeepLift,
  GradientShap, AttnLRP) and occlusion explain ``q = scalar(f(x), w)``, linear ``w . f(x)``
  unless the target says otherwise (a probability, an angle, an angular error);
- LRP starts the backward pass with relevance ``seed(f(x), w)`` at the output, which sums
  to ``q`` (for the position targets, whose seed is ``w`` itself, to ``sum(w)``); relevance
  at the input sums to that less what biases absorb and stabilizers lose.

Targets are registered by name in :data:`TARGETS` with the output kinds they accept (the
CLI's choices come from it); :func:`bind` checks a target against a model's output kind.

========================  ===================================  ======================================
target                    output kinds                          ``q``
========================  ===================================  ======================================
truth, prediction, x, y,  position                              ``w . f`` (see each target)
z, error, contrast
class_logit               direction_classes                     logit of the arg-max (or ``cls``)
true_class_logit          direction_classes                     logit of the true class
class_contrast            direction_classes                     ``z_c - z_c'`` (``versus``: runner-up)
class_probability         direction_classes                     softmax probability of the arg-max
                                                                (not LRP: use class_log_odds)
true_class_probability    direction_classes                     softmax probability of the true class
                                                                (not LRP: use true_class_log_odds)
class_log_odds            direction_classes                     ``log(p_c / (1 - p_c))`` of the arg-max
true_class_log_odds       direction_classes                     the same of the true class
direction                 cos_sin                               ``f . u``, ``u`` the predicted (or a
                                                                given) direction
true_direction            cos_sin                               ``f . u``, ``u`` the true direction
azimuth                   azimuth, azimuth_elevation, cos_sin   predicted azimuth (degrees; for
                                                                cos_sin in (-180, 180]: 179 and 181
                                                                explain with opposite signs)
elevation                 azimuth_elevation                     predicted elevation (degrees)
toward_truth              azimuth, azimuth_elevation            ``w . f``, ``w = sign(t - f)``: the
                                                                angles signed toward the truth
angular_error             azimuth, azimuth_elevation, cos_sin   angle to the truth (degrees): wrapped
                                                                azimuth difference, great circle, or
                                                                the angle between [cos, sin] vectors
========================  ===================================  ======================================

True values (``truth``): positions ``[B, 3]`` (m), class labels ``[B]``, azimuths ``[B]``
(degrees; also for ``cos_sin``) or (azimuth, elevation) ``[B, 2]`` (degrees).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from xai_loc.checks import is_integer
from xai_loc.errors import InputError
from xai_loc.explain._options import option_defaults, resolve

__all__ = ["REFERENCES", "TARGETS", "TRUTHS", "TRUTH_SHAPES", "Objective", "Target", "bind", "check_truth",
           "class_target", "get_target", "register_target", "targets_for"]

#: What the true values are, per output kind (the ``truth`` of targets that need it).
TRUTHS = {"position": "source positions", "azimuth": "azimuths (degrees)",
          "azimuth_elevation": "azimuths and elevations (degrees)", "direction_classes": "class labels",
          "cos_sin": "azimuths (degrees)"}

#: The shapes one example's true values may have, per output kind.
TRUTH_SHAPES = {"position": ((3,),), "azimuth": ((), (1,)), "azimuth_elevation": ((2,),),
                "direction_classes": ((), (1,)), "cos_sin": ((), (1,))}

#: Named references of the ``'contrast'`` target; a position ``(x, y, z)`` in metres is
#: allowed too.
REFERENCES = ("zero", "mean", "train-mean")

Tensor = torch.Tensor
#: ``(output [B, K], truth | None, reference | None, kind, **options) -> w [B, K]``.
WeightFunction = Callable[..., Tensor]
#: ``(output [B, K], w [B, K], kind) -> [B]`` or ``-> seed [B, K]``.
OutputFunction = Callable[[Tensor, Tensor, str], Tensor]


def _linear(output: Tensor, w: Tensor, kind: str) -> Tensor:
    return (output * w).sum(-1)


def _weights_seed(output: Tensor, w: Tensor, kind: str) -> Tensor:
    return w


def _output_seed(output: Tensor, w: Tensor, kind: str) -> Tensor:
    return output * w


@dataclass(frozen=True)
class Target:
    """A registered target.

    Attributes
    ----------
    name
        Registry name.
    weights
        ``(output, truth, reference, kind, **options) -> w [B, K]``, held constant.
    kinds
        Output kinds it accepts.
    needs_truth, needs_reference
        Whether it needs the true values / a reference output (``'contrast'``).
    scalar
        ``(output, w, kind) -> q [B]``; None: linear, ``w . output``.
    seed
        ``(output, w, kind) -> [B, K]``, LRP's relevance at the output.
    options
        Keyword options of ``weights`` with their defaults.
    lrp_instead
        For a target whose value is not a sum that LRP can start from (a probability): the
        target to explain with LRP-type methods instead; None: LRP starts from ``seed``.
    description
        What the explanation means (the weight function's docstring).
    sense
        +1 when ``q`` grows with the evidence for the explained output, -1 when it grows with the
        localization error ('error', 'angular_error'): relevance times ``sense`` ranks what speaks
        for the answer (the faithfulness orderings).
    cancels
        Whether the seed's components have opposite signs by design (a difference of positions: 'error',
        'contrast'), so that their sum, what a complete attribution adds up to, may cancel within a window: the
        share of it that reaches the input (``relevance_fraction`` of a position model, see
        :func:`~xai_loc.explain.attribute.summary_attrs`) is then no share and is recorded as NaN.
    """

    name: str
    weights: WeightFunction
    kinds: tuple[str, ...]
    needs_truth: bool
    needs_reference: bool
    scalar: OutputFunction | None
    seed: OutputFunction
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    lrp_instead: str | None = None
    sense: int = 1
    cancels: bool = False


#: name -> :class:`Target`.
TARGETS: dict[str, Target] = {}


def register_target(name: str, *, kinds: tuple[str, ...] = ("position",), needs_truth: bool = False,
                    needs_reference: bool = False, scalar: OutputFunction | None = None,
                    seed: OutputFunction = _weights_seed, lrp_instead: str | None = None,
                    sense: int = 1, cancels: bool = False) -> Callable[[WeightFunction], WeightFunction]:
    """Decorator registering a weight function as target ``name``; its docstring says what it means.

    Its keyword-only parameters are the target's options; ``lrp_instead``, ``sense`` and ``cancels``: see
    :class:`Target`.
    """
    def decorator(weights: WeightFunction) -> WeightFunction:
        if name in TARGETS:
            raise ValueError(f"target name {name!r} is already registered")
        description = " ".join((weights.__doc__ or "").split())
        TARGETS[name] = Target(name, weights, tuple(kinds), needs_truth, needs_reference, scalar, seed,
                               option_defaults(weights), description, lrp_instead, sense, cancels)
        return weights

    return decorator


def get_target(name: str) -> Target:
    """The registered target ``name``; :class:`InputError` if unknown."""
    if not isinstance(name, str) or name not in TARGETS:
        raise InputError(f"unknown target {name!r}; allowed: {', '.join(TARGETS)}")
    return TARGETS[name]


def targets_for(kind: str) -> list[str]:
    """Names of the targets that accept output kind ``kind``."""
    return [name for name, target in TARGETS.items() if kind in target.kinds]


@dataclass(frozen=True)
class Objective:
    """A target bound to an output kind and its options: what methods call per batch.

    ``block``: for factorized class logits (an azimuth block, then an elevation block), the
    number of leading outputs the class targets read (the azimuth classes); None: all.
    """

    target: Target
    kind: str
    options: dict[str, Any]
    block: int | None = None

    @property
    def linear(self) -> bool:
        """Whether ``q = w . output``."""
        return self.target.scalar is None

    def _pad(self, values: Tensor, output: Tensor) -> Tensor:
        return values if self.block is None else F.pad(values, (0, output.shape[1] - self.block))

    def _cut(self, values: Tensor) -> Tensor:
        return values if self.block is None else values[:, :self.block]

    def weights(self, output: Tensor, truth: Tensor | None = None, reference: Tensor | None = None) -> Tensor:
        """``w`` of the (detached) outputs ``[B, K]``."""
        output = output.detach()
        return self._pad(self.target.weights(self._cut(output), truth, reference, self.kind, **self.options), output)

    def scalar(self, output: Tensor, w: Tensor) -> Tensor:
        """``q [B]``, differentiable in ``output``."""
        if self.target.scalar is None:
            return (output * w).sum(-1)
        return self.target.scalar(self._cut(output), self._cut(w), self.kind)

    def difference(self, output: Tensor, baseline_output: Tensor, w: Tensor) -> Tensor:
        """``q(output) - q(baseline_output)`` (completeness of path methods)."""
        if self.linear:
            return (w * (output - baseline_output)).sum(-1)
        return self.scalar(output, w) - self.scalar(baseline_output.expand_as(output), w)

    def chosen_class(self, output: Tensor, truth: Tensor | None = None) -> Tensor:
        """The class each example's class target explains ``[B]``: the one of largest weight (the arg-max,
        ``cls``, the true class; for ``class_contrast`` the class weighed against ``versus``)."""
        return self._cut(self.weights(output, truth)).argmax(dim=1)

    def seed(self, output: Tensor, w: Tensor) -> Tensor:
        """LRP's output relevance ``[B, K]``."""
        output = output.detach()
        return self._pad(self.target.seed(self._cut(output), self._cut(w), self.kind), output)


def bind(name: str, kind: str, options: dict[str, Any] | None = None, block: int | None = None) -> Objective:
    """Target ``name`` for outputs of ``kind`` with ``options`` (``block``: see :class:`Objective`).

    Raises
    ------
    InputError
        For an unknown target, a kind the target does not accept (naming the targets that
        do) or an unknown option.
    """
    target = get_target(name)
    if kind not in target.kinds:
        raise InputError(f"target {name!r} does not fit a model whose output is {kind!r}; "
                         f"allowed: {', '.join(targets_for(kind)) or 'none'}")
    return Objective(target, kind, resolve(target.options, dict(options or {}), f"target {name!r}"), block)


def check_truth(truth: Any, kind: str, n: int) -> Tensor:
    """``truth`` as a tensor if it holds the true values of ``n`` examples of output kind ``kind``
    (:data:`TRUTHS`, shaped as :data:`TRUTH_SHAPES`; finite, class labels integral); else :class:`InputError`."""
    what = f"true {TRUTHS[kind]}"
    if isinstance(truth, Tensor):
        value = truth.detach()
    else:
        try:
            array = np.asarray(truth)
        except ValueError:
            raise InputError(f"{what} of unequal lengths are not allowed; use an array, one row per example") from None
        if array.dtype.kind not in "iuf":
            raise InputError(f"{what} of dtype {array.dtype} are not allowed; use numbers")
        value = torch.as_tensor(array)
    if value.dtype == torch.bool or value.is_complex():
        raise InputError(f"{what} of dtype {value.dtype} are not allowed; use real numbers")
    shapes = [(n, *tail) for tail in TRUTH_SHAPES[kind]]
    if tuple(value.shape) not in shapes:
        raise InputError(f"{what} of shape {tuple(value.shape)} are not allowed; use "
                         + " or ".join(str(list(shape)) for shape in shapes))
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise InputError(f"the {what} hold NaN or infinite values; give finite values for every example")
    if kind == "direction_classes" and value.is_floating_point() and not bool((value == value.round()).all()):
        label = value[value != value.round()][0].item()
        raise InputError(f"true class {label!r} is not allowed; use integer class labels")
    return value


# -- positions (x, y, z) in metres ------------------------------------------------------------------


@register_target("truth", needs_truth=True)
def _truth(output, truth, reference, kind):
    """Seed = the true source position (x, y, z) of each window: the paper's choice. LRP
    distributes the true coordinates over the input; gradient methods explain t . f(x)."""
    return truth.to(output)


@register_target("prediction")
def _prediction(output, truth, reference, kind):
    """Seed = the predicted position: each coordinate explains its own value (standard LRP
    seeding); gradient methods explain f(x) . f(x) with the first factor held constant."""
    return output.detach().clone()


def _coordinate(k: int):
    def weights(output, truth, reference, kind):
        out = torch.zeros_like(output)
        out[:, k] = output[:, k].detach()
        return out
    return weights


for _k, _axis in enumerate("xyz"):
    _coordinate_weights = _coordinate(_k)
    _coordinate_weights.__doc__ = (
        f"Seed = the predicted {_axis} coordinate alone (the other two zero): the explanation of"
        f" that coordinate; gradient methods explain f_{_axis}(x) scaled by its value.")
    register_target(_axis)(_coordinate_weights)


@register_target("error", needs_truth=True, sense=-1, cancels=True)
def _error(output, truth, reference, kind):
    """Seed = prediction - truth per coordinate: what drives the localization error. For
    gradient methods this is the gradient of 1/2 |f(x) - t|^2, the training loss up to scale."""
    return output.detach() - truth.to(output)


@register_target("contrast", needs_reference=True, cancels=True)
def _contrast(output, truth, reference, kind):
    """Seed = prediction - reference, w = f(x) - r, with r the output on an all-zero ('zero') or mean
    ('mean') window, the training set's mean source position ('train-mean') or a given (x, y, z). What
    each method family then explains: LRP is linear in its seed, so its relevance is the 'prediction'
    heatmap of each coordinate rescaled by (f_k - r_k) / f_k (where relevance lies does not change, only
    how the coordinates are weighed), and 'explained' is sum_k (f_k - r_k), which may cancel (so
    relevance_fraction is NaN). Gradient methods explain
    q = w . f(x) with w held constant; path methods (integrated gradients, DeepLift, GradientShap)
    explain q(f(x)) - q(f(baseline)) = w . (f(x) - f(baseline)), which is |f(x) - r|^2 when the
    baseline's output is the reference (baseline and reference both 'zero' or both 'mean')."""
    return output.detach() - reference.to(output)


# -- direction classes ------------------------------------------------------------------------------

CLASSES = ("direction_classes",)


def _class(output: Tensor, cls: int | None) -> Tensor:
    if cls is None:
        return output.argmax(dim=1)
    if not is_integer(cls) or not 0 <= cls < output.shape[1]:
        raise InputError(f"cls={cls!r} is not allowed; use a class in 0..{output.shape[1] - 1}")
    return torch.full(output.shape[:1], cls, dtype=torch.long, device=output.device)


def _labels(output: Tensor, truth: Tensor) -> Tensor:
    labels = truth.to(output.device).long().reshape(-1)
    if labels.shape != output.shape[:1] or labels.min() < 0 or labels.max() >= output.shape[1]:
        raise InputError(f"true classes {truth.tolist()} are not allowed; use one class in 0..{output.shape[1] - 1} "
                         "per example")
    return labels


def _one_hot(output: Tensor, cls: Tensor) -> Tensor:
    return F.one_hot(cls, output.shape[1]).to(output)


def _probability(output: Tensor, w: Tensor, kind: str) -> Tensor:
    return (torch.softmax(output, dim=1) * w).sum(-1)


def _probability_seed(output: Tensor, w: Tensor, kind: str) -> Tensor:
    return _probability(output, w, kind)[:, None] * w


def _log_odds(output: Tensor, w: Tensor, kind: str) -> Tensor:
    """``z_c - logsumexp_{k != c} z = log(p_c / (1 - p_c))``, ``c`` where ``w`` is positive."""
    chosen = w > 0
    others = torch.logsumexp(output.masked_fill(chosen, -math.inf), dim=1)
    return (output * chosen).sum(-1) - others


def _log_odds_weights(output: Tensor, cls: Tensor) -> Tensor:
    """``e_c - softmax_{k != c}(z)``: the gradient of the log-odds of class ``c``."""
    chosen = _one_hot(output, cls)
    return chosen - torch.softmax(output.masked_fill(chosen.bool(), -math.inf), dim=1)


def class_target(target: str | int, n_classes: int) -> tuple[str, dict[str, Any]]:
    """The class target and options of ``'prediction'`` (the arg-max class's logit), ``'truth'`` (the
    true class's logit), a class index, or the name of a class target."""
    if target == "prediction":
        return "class_logit", {}
    if target == "truth":
        return "true_class_logit", {}
    if is_integer(target) and 0 <= target < n_classes:
        return "class_logit", {"cls": int(target)}
    if isinstance(target, str) and target in targets_for("direction_classes"):
        return target, {}
    raise InputError(f"target={target!r} is not allowed; use 'prediction', 'truth', a class in 0..{n_classes - 1} "
                     f"or one of {', '.join(targets_for('direction_classes'))}")


@register_target("class_logit", kinds=CLASSES, seed=_output_seed)
def _class_logit(output, truth, reference, kind, *, cls=None):
    """The logit of the arg-max class (or of class ``cls``), the other logits zero: what
    speaks for the chosen direction."""
    return _one_hot(output, _class(output, cls))


@register_target("true_class_logit", kinds=CLASSES, needs_truth=True, seed=_output_seed)
def _true_class_logit(output, truth, reference, kind):
    """The logit of the true class: what speaks for the right direction, chosen or not."""
    return _one_hot(output, _labels(output, truth))


@register_target("class_contrast", kinds=CLASSES, seed=_output_seed)
def _class_contrast(output, truth, reference, kind, *, versus=None):
    """Logit of the arg-max class minus the logit of class ``versus`` (default: the runner-up):
    what makes the model choose its direction over the other (contrastive LRP seeds
    +z_c on c and -z_c' on c')."""
    top2 = output.topk(2, dim=1).indices
    other = top2[:, 1] if versus is None else _class(output, versus)
    if versus is not None and bool((other == top2[:, 0]).any()):
        windows = torch.nonzero(other == top2[:, 0]).reshape(-1).tolist()
        raise InputError(f"versus={versus} is not allowed: it is the predicted class of window(s) {windows}; "
                         "use another class or None (the runner-up)")
    return _one_hot(output, top2[:, 0]) - _one_hot(output, other)


@register_target("class_probability", kinds=CLASSES, scalar=_probability, seed=_probability_seed,
                 lrp_instead="class_log_odds")
def _class_probability(output, truth, reference, kind, *, cls=None):
    """The softmax probability of the arg-max class (or of ``cls``), for gradient and
    perturbation methods; LRP-type methods explain its log-odds ('class_log_odds')."""
    return _one_hot(output, _class(output, cls))


@register_target("true_class_probability", kinds=CLASSES, needs_truth=True, scalar=_probability,
                 seed=_probability_seed, lrp_instead="true_class_log_odds")
def _true_class_probability(output, truth, reference, kind):
    """The softmax probability of the true class, for gradient and perturbation methods;
    LRP-type methods explain its log-odds ('true_class_log_odds')."""
    return _one_hot(output, _labels(output, truth))


@register_target("class_log_odds", kinds=CLASSES, scalar=_log_odds, seed=_output_seed)
def _class_log_odds(output, truth, reference, kind, *, cls=None):
    """The log-odds of the arg-max class (or of ``cls``), log(p_c / (1 - p_c)) = z_c -
    logsumexp of the other logits: the probability on a scale relevance can add up on. Gradient
    methods explain it exactly; LRP seeds z * w with w = e_c - softmax of the other logits
    (their soft minimum, Montavon et al.), z_c on c and -s_k z_k on the others, which sums to
    z_c - sum_k s_k z_k, the log-odds plus the entropy of s."""
    return _log_odds_weights(output, _class(output, cls))


@register_target("true_class_log_odds", kinds=CLASSES, needs_truth=True, scalar=_log_odds, seed=_output_seed)
def _true_class_log_odds(output, truth, reference, kind):
    """The log-odds of the true class, z_t - logsumexp of the other logits; LRP seeds it as
    'class_log_odds' does."""
    return _log_odds_weights(output, _labels(output, truth))


# -- angles in degrees ------------------------------------------------------------------------------

ANGLES = ("azimuth", "azimuth_elevation", "cos_sin")


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _wrap(degrees: Tensor) -> Tensor:
    return torch.remainder(degrees + 180.0, 360.0) - 180.0


def _vector_angle(a: Tensor, b: Tensor) -> Tensor:
    """Signed angle from ``a`` to ``b`` (degrees), rows of 2-vectors."""
    cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    return torch.rad2deg(torch.atan2(cross, (a * b).sum(-1)))


def _share(q: Tensor, contributions: Tensor) -> Tensor:
    """``q`` split over the outputs in proportion to ``contributions`` (evenly where they sum to 0)."""
    total = contributions.sum(-1, keepdim=True)
    even = torch.full_like(contributions, 1.0 / contributions.shape[1])
    shares = torch.where(total.abs() > 1e-12, contributions / torch.where(total == 0, 1.0, total), even)
    return q[:, None] * shares


def _azimuth(output: Tensor, w: Tensor, kind: str) -> Tensor:
    if kind == "cos_sin":  # measured from the predicted direction w: no branch cut near the prediction
        return torch.rad2deg(torch.atan2(w[:, 1], w[:, 0])) + _vector_angle(w, output)
    return (output * w).sum(-1)


def _azimuth_seed(output: Tensor, w: Tensor, kind: str) -> Tensor:
    if kind == "cos_sin":  # each component's share of |f| along the predicted direction
        return _share(_azimuth(output, w, kind), output * w)
    return output * w


def _direction_weights(output: Tensor, degrees: float) -> Tensor:
    rad = torch.full(output.shape[:1], math.radians(float(degrees)), dtype=output.dtype, device=output.device)
    return torch.stack([torch.cos(rad), torch.sin(rad)], dim=1)


@register_target("direction", kinds=("cos_sin",), seed=_output_seed)
def _direction(output, truth, reference, kind, *, azimuth=None):
    """The output along the predicted direction (its length, the model's confidence), or along
    the direction of ``azimuth`` (degrees: 0 is the cos component, 90 the sin component)."""
    if azimuth is None:
        return _unit(output)
    if isinstance(azimuth, bool) or not isinstance(azimuth, (int, float)) or not math.isfinite(azimuth):
        raise InputError(f"azimuth={azimuth!r} is not allowed; use a number of degrees or None (the prediction)")
    return _direction_weights(output, azimuth)


@register_target("true_direction", kinds=("cos_sin",), needs_truth=True, seed=_output_seed)
def _true_direction(output, truth, reference, kind):
    """The output along the true direction: what speaks for the right azimuth."""
    rad = truth.to(output).reshape(-1) * (math.pi / 180.0)
    return torch.stack([torch.cos(rad), torch.sin(rad)], dim=1)


@register_target("azimuth", kinds=ANGLES, scalar=_azimuth, seed=_azimuth_seed)
def _azimuth_weights(output, truth, reference, kind):
    """The predicted azimuth in degrees, as the model outputs it; for [cos, sin] outputs
    atan2(sin, cos) in (-180, 180], measured from the predicted direction (no branch cut near
    it), and LRP splits it over cos and sin by their shares of the output's length. The value
    explained is the signed angle from azimuth 0 (the cos axis): sources on either side of 180
    degrees get opposite signs (179 and -179), so their heatmaps flip sign. To explain the
    distance to a direction, use 'angular_error' (to the truth) or 'direction' (along one)."""
    if kind == "cos_sin":
        return _unit(output)
    w = torch.zeros_like(output)
    w[:, 0] = 1.0
    return w


@register_target("toward_truth", kinds=("azimuth", "azimuth_elevation"), needs_truth=True, seed=_output_seed)
def _toward_truth(output, truth, reference, kind):
    """Each angle signed by the side the truth lies on, ``w = sign(t - f)`` (azimuth wrapped): ``q = w . f``
    grows as the prediction moves toward the truth, so positive relevance speaks for the right answer
    on either side of it (what ``angular_error`` relevance says with the opposite sign, but also for
    LRP, whose angular-error seed is positive on both sides). An exact prediction has nothing to explain."""
    truth = truth.to(output).reshape(output.shape[0], -1)
    if truth.shape[1] != output.shape[1]:
        raise InputError(f"true directions with {truth.shape[1]} value(s) per example are not allowed for "
                         f"{kind!r} outputs; use {output.shape[1]} (degrees)")
    step = truth - output
    step[:, 0] = _wrap(step[:, 0])
    return torch.sign(step)


@register_target("elevation", kinds=("azimuth_elevation",), seed=_output_seed)
def _elevation(output, truth, reference, kind):
    """The predicted elevation in degrees."""
    w = torch.zeros_like(output)
    w[:, 1] = 1.0
    return w


def _angular_error(output: Tensor, w: Tensor, kind: str) -> Tensor:
    if kind == "azimuth":
        return _wrap(output[:, 0] - w[:, 0]).abs()
    if kind == "cos_sin":
        return _vector_angle(w, output).abs()
    # atan2(|u x v|, u . v), accurate at every angle (arccos of the dot product is not near 0)
    u = _sphere(output[:, 0] - w[:, 0], output[:, 1])
    v = _sphere(torch.zeros_like(w[:, 0]), w[:, 1])
    return torch.rad2deg(torch.atan2(torch.linalg.vector_norm(torch.linalg.cross(u, v), dim=1), (u * v).sum(-1)))


def _sphere(azimuth: Tensor, elevation: Tensor) -> Tensor:
    """Unit vectors ``[B, 3]`` of azimuths and elevations in degrees."""
    az, el = torch.deg2rad(azimuth), torch.deg2rad(elevation)
    return torch.stack([torch.cos(el) * torch.cos(az), torch.cos(el) * torch.sin(az), torch.sin(el)], dim=1)


def _angular_error_seed(output: Tensor, w: Tensor, kind: str) -> Tensor:
    """The error split over the outputs by a first-order expansion from the truth: ``dq/df_k (f_k - t_k)``."""
    out = output.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        q = _angular_error(out, w, kind)
        (grad,) = torch.autograd.grad(q.sum(), out)
    step = output - w
    if kind != "cos_sin":
        step[:, 0] = _wrap(step[:, 0])
    return _share(q.detach(), (grad * step).abs())


@register_target("angular_error", kinds=ANGLES, needs_truth=True, scalar=_angular_error, seed=_angular_error_seed,
                 sense=-1)
def _angular_error_weights(output, truth, reference, kind):
    """The angle between prediction and truth in degrees: the wrapped azimuth difference, the
    great-circle angle for (azimuth, elevation), the angle between [cos, sin] and the true
    direction; what drives the error. LRP splits it over the outputs by a first-order
    expansion from the truth."""
    truth = truth.to(output).reshape(output.shape[0], -1)
    if kind == "cos_sin":
        return _true_direction(output, truth, reference, kind)
    if truth.shape[1] != output.shape[1]:
        raise InputError(f"true directions with {truth.shape[1]} value(s) per example are not allowed for "
                         f"{kind!r} outputs; use {output.shape[1]} (degrees)")
    return truth
