"""Sanity baselines that every experiment reports beside the models.

An explanation is only interesting where it beats these: the relevance of a randomized copy
of the model (the model-randomization test of Adebayo et al., 2018) and, for delay probes,
a constant zero-lag estimator.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np
import torch

#: Offset of the seed of randomized copies, so that the copy of a model trained with seed
#: ``s`` is never that model's own initialization.
RANDOMIZED_SEED_OFFSET = 10_007


def _learned(module: torch.nn.Module) -> bool:
    """Whether ``module`` holds learned state: batch-norm statistics, or own parameters of which one
    is trainable (a frozen signal-processing layer, e.g. the cochleagram's sinc decimator, is not)."""
    own = list(module.parameters(recurse=False))
    return hasattr(module, "reset_running_stats") or (
        hasattr(module, "reset_parameters") and (not own or any(p.requires_grad for p in own)))


def reset_modules(modules: Iterable[torch.nn.Module], seed: int = 0) -> None:
    """Re-initialize ``modules`` in place, in the order given, from one seeded generator.

    Each is reset with its own ``reset_parameters`` (PyTorch's default initialisation) and
    ``reset_running_stats`` (batch norm); modules with neither, and frozen ones (no trainable
    parameter of their own: fixed signal processing), are left alone. The global
    generator is seeded with ``RANDOMIZED_SEED_OFFSET + seed`` inside a forked RNG state, so
    the caller's random state is untouched. The one mechanism behind :func:`randomized_copy`
    and :func:`cascading_copies`.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOMIZED_SEED_OFFSET + seed)
        for module in filter(_learned, modules):
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()


def randomized_copy(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A deep copy of ``model`` with every parameterized layer re-initialized (seeded).

    Layers are reset with their own ``reset_parameters`` (PyTorch's default initialisation),
    batch-norm running statistics included (:func:`reset_modules`, in module order); the
    original model is untouched. The generator is seeded with ``RANDOMIZED_SEED_OFFSET + seed``;
    every experiment (perturbation, TDOA) makes the same copy for the same seed, so they share
    its relevance stores.
    """
    clone = copy.deepcopy(model)
    reset_modules(clone.modules(), seed)
    return clone.eval()


def parameterized_layers(model: torch.nn.Module) -> list[str]:
    """Names of the modules :func:`reset_modules` re-initializes (``reset_parameters`` or
    ``reset_running_stats``, not frozen), in ``model.named_modules()`` order; the root, if it is one, is ``"model"``."""
    return [name or "model" for name, module in model.named_modules() if _learned(module)]


def cascading_copies(model: torch.nn.Module, seed: int = 0) -> list[tuple[str, torch.nn.Module]]:
    """Cascading model-parameter randomization (Adebayo et al., 2018): one copy per stage.

    The layers of :func:`parameterized_layers` are taken from the top (output) down; copy
    ``k`` has the top ``k`` layers re-initialized by :func:`reset_modules` (seed ``seed``,
    top-down order). The generator's stream is the same for every copy, so copy ``k`` extends
    copy ``k - 1`` (its top ``k - 1`` layers carry the same random weights) and the last copy
    has every layer re-initialized. Returns ``[(name of the layer added at the stage, copy), ...]``
    in eval mode; ``model`` is untouched.
    """
    layers = parameterized_layers(model)[::-1]
    out = []
    for k, name in enumerate(layers, start=1):
        clone = copy.deepcopy(model)
        found = {n or "model": m for n, m in clone.named_modules()}
        reset_modules([found[n] for n in layers[:k]], seed)
        out.append((name, clone.eval()))
    return out


def zero_lag(n_windows: int) -> np.ndarray:
    """The constant zero-lag delay estimator: 0 samples for every window, ``(n_windows,)``."""
    return np.zeros(n_windows)
