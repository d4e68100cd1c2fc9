"""Sanity baselines that every experiment reports beside the models.

An explanation is only interesting where it beats these: the relevance of a randomized copy
of the model (the model-randomization test of Adebayo et al., 2018) and, for delay probes,
a constant zero-lag estimator.
"""
from __future__ import annotations

import copy

import torch

#: Offset of the seed of randomized copies, so that the copy of a model trained with seed
#: ``s`` is never that model's own initialization.
RANDOMIZED_SEED_OFFSET = 10_007


def randomized_copy(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A deep copy of ``model`` with every parameterized layer re-initialized (seeded).

    Layers are reset with their own ``reset_parameters`` (PyTorch's default initialisation),
    batch-norm running statistics included; the original model is untouched. The generator
    is seeded with ``RANDOMIZED_SEED_OFFSET + seed``; every experiment (perturbation, TDOA)
    makes the same copy for the same seed, so they share its relevance stores.
    """
    clone = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOMIZED_SEED_OFFSET + seed)
        for module in clone.modules():
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return clone.eval()


def zero_lag(n_windows: int) -> torch.Tensor:
    """The constant zero-lag delay estimator: 0 samples for every window."""
    return torch.zeros(n_windows)
