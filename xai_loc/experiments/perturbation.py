"""Deletion (input-manipulation) curves: zero the top-P % of each window's samples.

For every window, the ``M x T`` input samples are ranked by a score (signed relevance,
absolute amplitude or a seeded random draw), the top ``P`` % are replaced by a fill value
(zero, as in the paper, or noise at the window's level), and the localization error of the
perturbed windows is measured. Ranking and masking are batched tensor operations: there is
no Python loop over samples or windows, so the experiment is bound by the model's forward
passes.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from xai_loc.errors import InputError

RankFn = Callable[[torch.Tensor, torch.Tensor | None, torch.Generator], torch.Tensor]
FillFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _random_ranks(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A seeded random permutation per window: its first k entries are a uniform k-subset."""
    n = x[0].numel()
    return torch.stack([torch.randperm(n, generator=gen) for _ in range(x.shape[0])]).to(x.device)


#: Orderings of the deletion, by name: ``f(windows, relevance, generator) -> ranks (W, M * T)``
#: (rank 0 is deleted first).
MODES: dict[str, RankFn] = {
    "relevance": lambda x, rel, gen: deletion_ranks(_need(rel)),
    "energy": lambda x, rel, gen: deletion_ranks(x.abs()),
    "random": lambda x, rel, gen: _random_ranks(x, gen),
}

#: Values written where samples are deleted: ``f(windows, generator) -> fill`` (same shape).
FILLS: dict[str, FillFn] = {
    "zero": lambda x, gen: torch.zeros_like(x),
    "noise": lambda x, gen: torch.randn(x.shape, generator=gen, dtype=torch.float32).to(x)
    * x.std(dim=(1, 2), keepdim=True),
}

#: The paper's percentages.
PAPER_PERCENTAGES = (0, 10, 20, 30, 40, 50, 60, 70)


def _need(relevance: torch.Tensor | None) -> torch.Tensor:
    if relevance is None:
        raise InputError("deletion mode 'relevance' needs relevance maps; explain the windows first")
    return relevance


def deletion_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Rank ``(W, M * T)`` of every sample within its window, 0 = highest score.

    Ties are broken by position (stable sort), so ranks are reproducible.
    """
    flat = scores.reshape(scores.shape[0], -1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    positions = torch.arange(flat.shape[1], device=flat.device).expand_as(order)
    return ranks.scatter_(1, order, positions)


def n_deleted(percentage: float, n_samples: int) -> int:
    """How many of ``n_samples`` the top ``percentage`` % are (rounded to the nearest)."""
    return int(round(percentage / 100.0 * n_samples))


def check_percentages(percentages) -> tuple[float, ...]:
    """Validate deletion percentages (each in [0, 100], increasing)."""
    values = tuple(float(p) for p in percentages)
    if not values or any(not 0 <= p <= 100 for p in values) or list(values) != sorted(set(values)):
        raise InputError(f"percentages {list(values)} are not allowed; give increasing values in [0, 100]")
    return values


def perturbed_batches(windows: torch.Tensor, ranks: torch.Tensor, percentages, fill: torch.Tensor):
    """Yield ``(percentage, perturbed windows)`` with the top-P % of each window replaced by ``fill``."""
    n = ranks.shape[1]
    ranks = ranks.view(windows.shape)
    for p in percentages:
        yield p, torch.where(ranks < n_deleted(p, n), fill, windows)


def aopc(errors: np.ndarray) -> np.ndarray:
    """Area over the perturbation curve: mean over steps of ``error(P) - error(P_0)``.

    For a regression error curve (Samek et al., 2017, with the error in place of the drop in
    class score); ``errors`` is ``(..., n_percentages)`` with the unperturbed step first.
    """
    errors = np.asarray(errors, dtype=np.float64)
    return (errors - errors[..., :1]).mean(axis=-1)


def deletion_predictions(
    model: torch.nn.Module,
    windows: torch.Tensor,
    percentages,
    modes,
    relevance: torch.Tensor | None = None,
    fill: str = "zero",
    seed: int = 0,
    batch_size: int = 32,
) -> np.ndarray:
    """Predictions ``(mode, percentage, window, 3)`` of ``model`` on deleted copies of ``windows``.

    Parameters
    ----------
    model
        A localizer in eval mode.
    windows
        Input windows ``(W, M, T)`` on the model's device.
    percentages
        Deletion percentages.
    modes
        Names in :data:`MODES`.
    relevance
        Relevance ``(W, M, T)`` for mode ``"relevance"``.
    fill
        A name in :data:`FILLS`.
    seed
        Seeds the random ranking and noise fill (per batch, so results do not depend on
        how windows are batched only when ``batch_size`` is kept fixed).
    batch_size
        Windows per forward pass.
    """
    percentages = check_percentages(percentages)
    for mode in modes:
        if mode not in MODES:
            raise InputError(f"deletion mode {mode!r} is unknown; allowed: {', '.join(MODES)}")
    if fill not in FILLS:
        raise InputError(f"fill {fill!r} is unknown; allowed: {', '.join(FILLS)}")
    out = np.zeros((len(modes), len(percentages), windows.shape[0], 3), dtype=np.float64)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for start in range(0, windows.shape[0], batch_size):
            x = windows[start : start + batch_size]
            rel = None if relevance is None else relevance[start : start + batch_size].to(x)
            fill_values = FILLS[fill](x, gen)
            for i, mode in enumerate(modes):
                ranks = MODES[mode](x, rel, gen)
                for j, (_, xp) in enumerate(perturbed_batches(x, ranks, percentages, fill_values)):
                    out[i, j, start : start + x.shape[0]] = model(xp).double().cpu().numpy()
    return out
