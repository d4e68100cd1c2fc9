"""Attribution targets of a regression localizer: what an explanation is an explanation of.

A localizer outputs a position ``f(x) = (x, y, z)``. Every target defines, per window, a
*seed* ``w`` in output space (zennit's ``attr_output``), used the same way by all methods:

- LRP starts the backward pass with relevance ``w`` at the output: coordinate ``k``
  carries relevance ``w_k``, and the input relevance sums to ``sum(w)`` less what biases
  absorb and stabilizers lose.
- Gradient-based methods (saliency, input x gradient, integrated gradients, DeepLift,
  GradientShap) and occlusion explain the scalar ``w . f(x)`` with ``w`` held constant;
  for integrated gradients it is ``w . (f(x) - f(baseline))`` that the attributions sum to.

Targets are registered by name in :data:`TARGETS` (the CLI's choices come from it).

Direction classifiers (the binaural families) are explained through one class's logit:
:func:`class_logit_seed`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from xai_loc.errors import InputError

__all__ = ["REFERENCES", "TARGETS", "Target", "class_logit_seed", "get_target", "register_target"]

#: Named references of the ``'contrast'`` target; a position ``(x, y, z)`` in metres is
#: allowed too.
REFERENCES = ("zero", "mean", "train-mean")

SeedFunction = Callable[[torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"], torch.Tensor]


@dataclass(frozen=True)
class Target:
    """A registered target.

    Attributes
    ----------
    name
        Registry name.
    seed
        ``(output [B, 3], truth [B, 3] | None, reference [3] | None) -> seed [B, 3]``.
    needs_truth
        Whether it needs the true source positions.
    needs_reference
        Whether it needs a reference output (the ``reference`` option of
        :func:`~xai_loc.explain.explain`).
    description
        What the explanation means (the seed function's docstring).
    """

    name: str
    seed: SeedFunction
    needs_truth: bool
    needs_reference: bool
    description: str


#: name -> :class:`Target`.
TARGETS: dict[str, Target] = {}


def register_target(name: str, *, needs_truth: bool = False,
                    needs_reference: bool = False) -> Callable[[SeedFunction], SeedFunction]:
    """Decorator registering a seed function as target ``name``; its docstring says what it means."""
    def decorator(seed: SeedFunction) -> SeedFunction:
        if name in TARGETS:
            raise ValueError(f"target name {name!r} is already registered")
        description = " ".join((seed.__doc__ or "").split())
        TARGETS[name] = Target(name, seed, needs_truth, needs_reference, description)
        return seed

    return decorator


def get_target(name: str) -> Target:
    """The registered target ``name``; :class:`InputError` if unknown."""
    if name not in TARGETS:
        raise InputError(f"unknown target {name!r}; allowed: {', '.join(TARGETS)}")
    return TARGETS[name]


@register_target("truth", needs_truth=True)
def _truth(output, truth, reference):
    """Seed = the true source position (x, y, z) of each window: the paper's choice. LRP
    distributes the true coordinates over the input; gradient methods explain t . f(x)."""
    return truth.to(output)


@register_target("prediction")
def _prediction(output, truth, reference):
    """Seed = the predicted position: each coordinate explains its own value (standard LRP
    seeding); gradient methods explain f(x) . f(x) with the first factor held constant."""
    return output.detach().clone()


def _coordinate(k: int):
    def seed(output, truth, reference):
        out = torch.zeros_like(output)
        out[:, k] = output[:, k].detach()
        return out
    return seed


for _k, _axis in enumerate("xyz"):
    _coordinate_seed = _coordinate(_k)
    _coordinate_seed.__doc__ = (
        f"Seed = the predicted {_axis} coordinate alone (the other two zero): the explanation of"
        f" that coordinate; gradient methods explain f_{_axis}(x) scaled by its value.")
    register_target(_axis)(_coordinate_seed)


@register_target("error", needs_truth=True)
def _error(output, truth, reference):
    """Seed = prediction - truth per coordinate: what drives the localization error. For
    gradient methods this is the gradient of 1/2 |f(x) - t|^2, the training loss up to scale."""
    return output.detach() - truth.to(output)


@register_target("contrast", needs_reference=True)
def _contrast(output, truth, reference):
    """Seed = prediction - reference: how the input moves the prediction away from a reference,
    the output on an all-zero ('zero') or mean ('mean') window, the training set's mean source
    position ('train-mean') or a given (x, y, z). Explains what the input changes rather than
    the constant a model outputs regardless of its input."""
    return output.detach() - reference.to(output)


# -- direction classifiers ------------------------------------------------------------------------------


def class_logit_seed(target: str | int, labels: torch.Tensor | None = None):
    """LRP output seed of a classifier: the logit of the predicted (``'prediction'``), true
    (``'truth'``: ``labels``) or given class, the other logits zero."""

    def seed(output: torch.Tensor) -> torch.Tensor:
        if target == "prediction":
            cls = output.argmax(dim=1)
        elif target == "truth":
            cls = labels.to(output.device)
        else:
            cls = torch.full((output.shape[0],), int(target), device=output.device)
        return torch.nn.functional.one_hot(cls, output.shape[1]).to(output) * output
    return seed
