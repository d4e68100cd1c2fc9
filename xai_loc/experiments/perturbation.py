"""Deletion (input-manipulation) curves: zero the top-P % of each window's samples.

For every window, the ``M x T`` input samples are scored (signed relevance, absolute
amplitude or a seeded random draw), the top ``P`` % by score are replaced by a fill value
(zero, as in the paper, or noise at the window's level), and the localization error of the
perturbed windows is measured. Ties are broken by position (the earlier sample goes first),
so the deleted set is exactly the first ``k`` entries of a stable descending sort.

The masking has no Python loop over samples or windows and needs no sort: compiled kernels
(:mod:`xai_loc.experiments.deletion_order`) give every sample the step at which it is first
deleted, in about three linear passes per window, and each deleted copy is one fused pass
over the window. The experiment is then bound by the model's forward passes
(``benchmarks/bench_perturbation.py``). With the model on a GPU the windows and relevance are
sent there once per batch, ranked there (the same steps, made with torch:
:func:`~xai_loc.experiments.deletion_order.deletion_steps_on`), each copy is made there
(:func:`deleted_copy`) and only the predictions come back.
"""
from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from xai_loc.checks import check_integer, is_real
from xai_loc.errors import InputError
from xai_loc.experiments.base import Experiment, markdown_row, markdown_text, method_seed, model_record
from xai_loc.experiments.deletion_order import (
    check_step_count,
    deletion_steps_on,
    filled_copy,
    random_deletion_steps_on,
    zeroed_copy,
)
from xai_loc.experiments.scored import Rows, scored_set
from xai_loc.runtime import input_dtype, model_device

if TYPE_CHECKING:
    import xarray as xr
    from distributed import Client

    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.explain.attribute import Explainer

OrderFn = Callable[[torch.Tensor, torch.Tensor | None, list[int], int, int], np.ndarray | torch.Tensor]
FillFn = Callable[[torch.Tensor, int, int], torch.Tensor | None]


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(t.shape[0], -1)


#: Deletion orders, by name: ``f(windows, relevance, counts, seed, first) -> steps (W, M * T)``,
#: the step at which each sample is first deleted when step ``j`` deletes the ``counts[j]``
#: samples with the highest scores (:mod:`~xai_loc.experiments.deletion_order`): signed
#: relevance (times the target's sense, :meth:`Relevance.batch`), absolute amplitude, or seeded
#: uniform random keys (a window's from ``seed`` and its index ``first + w`` in the whole set, so they
#: do not depend on the batches: :func:`~xai_loc.experiments.deletion_order.random_deletion_steps`).
#: Ties go by position, as the paper's deletion loop takes them (so a constant map deletes front to
#: back; the faithfulness suite instead leaves such windows out as unordered). Ranked on the windows' device
#: (:func:`~xai_loc.experiments.deletion_order.deletion_steps_on`): a numpy array for CPU
#: windows, a uint8 tensor on theirs otherwise; the same bytes either way.
MODES: dict[str, OrderFn] = {
    "relevance": lambda x, rel, counts, seed, first: deletion_steps_on(_rows(_need(rel, x).to(x.device)), counts),
    "energy": lambda x, rel, counts, seed, first: deletion_steps_on(_rows(x), counts, magnitude=True),
    "random": lambda x, rel, counts, seed, first: random_deletion_steps_on(
        x.device, x.shape[0], x[0].numel(), counts, seed, first
    ),
}

#: Marks the noise fills' seeds (``[seed, _NOISE_STREAM, window index]``), apart from any other use of the seed.
_NOISE_STREAM = 0x6A09E667F3BCC909


def window_noise(shape, seed: int, first: int) -> torch.Tensor:
    """Standard normal float32 noise ``shape = (W, ...)`` on the host, window ``w`` from a generator of its own.

    Window ``w``'s generator is numpy's PCG64 seeded by the whole of ``(seed, index first + w)`` (a
    ``SeedSequence``; torch's CPU generator keeps only 32 bits of a seed, so windows of a large set would
    share streams), so a window's noise depends on its index in the whole set alone, never on how the set
    is split into batches or where a batch runs.
    """
    if first < 0:
        raise InputError(f"first window index {first} is not allowed; give an index >= 0")
    out = np.empty(shape, dtype=np.float32)
    for w in range(shape[0]):
        np.random.default_rng([seed % 2**64, _NOISE_STREAM, first + w]).standard_normal(
            shape[1:], dtype=np.float32, out=out[w])
    return torch.from_numpy(out)


#: Values written where samples are deleted: ``f(windows, seed, first) -> fill`` (same shape; None: zero); noise
#: (:func:`window_noise`) at the level of each whole input (every axis but the first).
FILLS: dict[str, FillFn] = {
    "zero": lambda x, seed, first: None,
    "noise": lambda x, seed, first: window_noise(tuple(x.shape), seed, first).to(x)
    * x.std(dim=tuple(range(1, x.ndim)), keepdim=True),
}

#: The paper's percentages.
PAPER_PERCENTAGES = (0, 10, 20, 30, 40, 50, 60, 70)


def _need(relevance: torch.Tensor | None, windows: torch.Tensor) -> torch.Tensor:
    if relevance is None:
        raise InputError("deletion mode 'relevance' needs relevance maps; explain the windows first")
    if tuple(relevance.shape) != tuple(windows.shape):
        raise InputError(f"relevance of shape {tuple(relevance.shape)} does not fit windows of shape "
                         f"{tuple(windows.shape)}; give one relevance value per sample")
    return relevance


#: Window dtypes that the deletion kernels take in float32 (no compiled kernels of their own; float32 holds them).
_NARROW_FLOATS = (torch.float16, torch.bfloat16)


def n_deleted(percentage: float, n_samples: int) -> int:
    """How many of ``n_samples`` the top ``percentage`` % are (rounded to the nearest)."""
    return int(round(percentage / 100.0 * n_samples))


def check_percentages(percentages, *, from_zero: bool = False, what: str = "percentages") -> tuple[float, ...]:
    """Validate deletion percentages: each in [0, 100], increasing, at most
    :data:`~xai_loc.experiments.deletion_order.MAX_STEPS` of them; with ``from_zero`` the first 0,
    the unperturbed window that a curve's AOPC is measured from. ``what`` names them in errors."""
    try:
        items = None if isinstance(percentages, (str, bytes)) else list(percentages)
    except TypeError:  # not a sequence
        items = None
    if items is None or not all(is_real(p) for p in items):
        raise InputError(f"{what} {percentages!r} are not allowed; give a sequence of numbers in [0, 100]")
    values = tuple(float(p) for p in items)
    if not values or any(not 0 <= p <= 100 for p in values) or list(values) != sorted(set(values)):
        raise InputError(f"{what} {list(values)} are not allowed; give increasing values in [0, 100]")
    check_step_count(len(values), what)
    if from_zero and values[0] != 0:
        raise InputError(f"{what} {list(values)} are not allowed; they must start at 0 (the unperturbed "
                         "window, which AOPC is measured from)")
    if from_zero and len(values) < 2:
        raise InputError(f"{what} {list(values)} are not allowed; give 0 and at least one more (a curve "
                         "with the unperturbed point alone has no area)")
    return values


def check_names(names, allowed, what: str, one: str) -> tuple[str, ...]:
    """Validate a list of names (or one name) from ``allowed``: each once, at least one; ``what`` names the
    list in errors and ``one`` a single entry of it."""
    names = tuple(str(n).strip() for n in ([names] if isinstance(names, str) else names))
    if not names:
        raise InputError(f"{what} list is empty; give at least one of {', '.join(allowed)}")
    for name in names:
        if name not in allowed:
            raise InputError(f"{what} {name!r} is unknown; allowed: {', '.join(allowed)}")
    if len(set(names)) < len(names):
        raise InputError(f"{what} {','.join(names)!r} names a {one} twice; give each once")
    return names


def check_modes(modes, what: str = "modes") -> tuple[str, ...]:
    """Validate deletion orderings: names in :data:`MODES` (one name or a sequence), each once, at least one.
    ``what`` names them in errors."""
    return check_names(modes, MODES, what, "mode")


def check_fill(fill: str, what: str = "fill") -> str:
    """Validate the fill of deleted samples (:data:`FILLS`); ``what`` names it in errors."""
    if fill not in FILLS:
        raise InputError(f"{what} {fill!r} is unknown; allowed: {', '.join(FILLS)}")
    return fill


def deletion_counts(percentages, windows: torch.Tensor) -> list[int]:
    """Samples deleted per window at each percentage."""
    return [n_deleted(p, windows[0].numel()) for p in percentages]


def deleted_copy(x: torch.Tensor, steps: torch.Tensor, j: int, fill: torch.Tensor) -> torch.Tensor:
    """``x`` with the samples that step ``j`` or an earlier one deletes replaced by ``fill``, on their device.

    ``steps`` (shaped like ``x``) come from a :data:`MODES` order; ``fill`` is shaped like ``x``
    or a scalar tensor. The values of the CPU path's compiled kernels (whose ``x * 0`` may leave
    a zero's sign negative), made wherever the tensors are, with no host round trip.
    """
    return torch.where(steps <= j, fill, x)


def perturbed_batches(windows: torch.Tensor, steps: np.ndarray | torch.Tensor, percentages,
                      fill: torch.Tensor | None = None):
    """Yield ``(percentage, perturbed windows)``: the samples deleted by each step replaced by ``fill``.

    ``steps`` come from a :data:`MODES` order with :func:`deletion_counts` of the same
    percentages. ``fill`` is a tensor shaped like ``windows``, or None for zeros. A step
    that deletes nothing yields ``windows`` itself, and on the CPU one buffer is reused from
    step to step (clone a yielded tensor to keep it); do not modify what is yielded.
    ``windows`` is never modified. On another device the copies are made there
    (:func:`deleted_copy`), from steps sent there once unless they are there already.
    """
    w = windows.shape[0]
    counts = deletion_counts(percentages, windows)
    if (steps.numel() if isinstance(steps, torch.Tensor) else np.size(steps)) != windows.numel():
        raise InputError(f"deletion steps of shape {tuple(steps.shape)} do not fit windows of shape "
                         f"{tuple(windows.shape)}; rank one score per sample")
    if windows.device.type == "cpu":  # compiled kernels into one reused buffer
        steps = np.asarray(steps)
        x = windows.detach().reshape(w, -1).numpy()
        f = None if fill is None else fill.detach().reshape(w, -1).numpy()
        out = np.empty_like(x)

        def deleted(j: int) -> torch.Tensor:
            if f is None:
                return torch.from_numpy(zeroed_copy(x, steps, j, out))
            return torch.from_numpy(filled_copy(x, steps, j, f, out))

    else:
        x = windows.reshape(w, -1)
        f = torch.zeros((), dtype=x.dtype, device=x.device) if fill is None else fill.reshape(w, -1)
        steps_on_device = torch.as_tensor(steps, device=windows.device)

        def deleted(j: int) -> torch.Tensor:
            return deleted_copy(x, steps_on_device, j, f)

    for j, (p, k) in enumerate(zip(percentages, counts, strict=True)):
        yield p, (windows if k == 0 else deleted(j).view(windows.shape))  # k == 0: nothing deleted


def aopc(errors: np.ndarray) -> np.ndarray:
    """Area over the perturbation curve: mean over steps of ``error(P) - error(P_0)``.

    For a regression error curve (Samek et al., 2017, with the error in place of the drop in
    class score); ``errors`` is ``(..., n_percentages)`` with the unperturbed step first.
    """
    errors = np.asarray(errors, dtype=np.float64)
    return (errors - errors[..., :1]).mean(axis=-1)


#: Seeds are taken modulo 2**64 by the random orders and noise fills: a larger one would repeat a smaller one's draws.
MAX_SEED = 2**64 - 1


def _tensor(value: Any, what: str) -> torch.Tensor:
    """``value`` (a tensor, a DataArray or anything numpy holds) as a tensor of real numbers, or one line naming
    ``what``."""
    try:
        tensor = torch.as_tensor(value.values if hasattr(value, "dims") and hasattr(value, "values") else value)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"{what} of type {type(value).__name__} are not allowed; give an array of numbers") from None
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise InputError(f"{what} of dtype {tensor.dtype} are not allowed; give real numbers")
    return tensor


def checked_deletion_inputs(model: torch.nn.Module, windows: Any, relevance: Any, modes: tuple[str, ...],
                            first: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``windows`` and ``relevance`` as tensors, checked for :func:`deletion_predictions`, or one line naming the fault.

    Windows must be floating point (their amplitudes are ranked and filled, and integer samples would need a
    scale), ``(W, M, T)`` and of the model's ``input_shape`` where it declares one, and finite (as
    :func:`xai_loc.explain.explain` takes them); ``first + W`` windows of ``M * T`` samples must fit the random
    orders' 63-bit counters. Relevance is real, finite and shaped like the windows where mode ``"relevance"`` ranks it.
    """
    from xai_loc.explain.attribute import check_finite_windows

    windows = _tensor(windows, "windows")
    if not windows.is_floating_point():
        raise InputError(f"windows of dtype {windows.dtype} are not allowed; give floating-point windows "
                         "(e.g. windows.float(), at the level the model was trained on)")
    shape = getattr(model, "input_shape", None)
    if windows.ndim != 3 or (shape is not None and tuple(windows.shape[1:]) != tuple(shape)):
        want = "(windows, mics, time)" if shape is None else f"(windows, {', '.join(map(str, shape))})"
        raise InputError(f"windows of shape {tuple(windows.shape)} are not allowed; the model takes {want}")
    check_integer("first", first, maximum=max(0, (2**63 - 1) // max(1, windows[0].numel()) - len(windows)))
    check_finite_windows(windows, range(first, first + len(windows)))
    if relevance is None:
        return windows, None
    relevance = _tensor(relevance, "relevance")
    if "relevance" in modes and not torch.isfinite(_need(relevance, windows)).all():
        raise InputError("relevance holds NaN or infinite values; give finite relevance per sample")
    return windows, relevance


def deletion_predictions(
    model: torch.nn.Module,
    windows: torch.Tensor,
    percentages,
    modes,
    relevance: torch.Tensor | None = None,
    fill: str = "zero",
    seed: int = 0,
    batch_size: int = 32,
    timing: dict[str, float] | None = None,
    first: int = 0,
) -> np.ndarray:
    """Predictions ``(mode, percentage, window, 3)`` of ``model`` on deleted copies of ``windows``.

    Parameters
    ----------
    model
        A localizer, run in eval mode (its mode restored afterwards). On a device other than the CPU, the
        windows are ranked (:data:`MODES`) and the deleted copies made there (:func:`perturbed_batches`),
        and each batch's predictions come back once.
    windows
        Floating-point input windows ``(W, M, T)`` (a tensor on any device, or an array), finite and of the model's
        ``input_shape`` where it declares one; sent to the model's device once per batch
        (with the batch's relevance). Float16 and bfloat16 windows (and their relevance) are ranked and copied in
        float32 (which holds them exactly, as the faithfulness suite takes them); the model gets its own dtype.
        Integer windows are refused: convert them (``windows.float()``) at the level the model was trained on.
    percentages
        Deletion percentages.
    modes
        Names in :data:`MODES`.
    relevance
        Relevance ``(W, M, T)`` for mode ``"relevance"`` (finite), ranked in the windows' floating dtype.
    fill
        A name in :data:`FILLS`.
    seed
        An integer in [0, 2**64 - 1]; seeds the random ranking and noise fill, per window (so the results do not
        depend on how the windows are batched).
    batch_size
        Windows per forward pass (>= 1).
    timing
        If given, ``timing["forward"]`` accumulates the seconds spent in the model (on a GPU,
        until its predictions are back on the host).
    first
        The index (>= 0) of ``windows[0]`` in the whole set, whose windows' random draws these are.
    """
    from xai_loc.explain.attribute import placed

    percentages = check_percentages(percentages)
    modes = check_modes(modes)
    check_fill(fill)
    check_integer("seed", seed, maximum=MAX_SEED)
    check_integer("batch_size", batch_size, minimum=1)
    windows, relevance = checked_deletion_inputs(model, windows, relevance, modes, first)
    out = np.zeros((len(modes), len(percentages), windows.shape[0], 3), dtype=np.float64)
    device, dtype = model_device(model, windows.device), input_dtype(model, windows.dtype)
    seconds = 0.0
    with torch.no_grad(), placed(model, device):
        for start in range(0, windows.shape[0], batch_size):
            x = windows[start : start + batch_size]
            x = x.float() if x.dtype in _NARROW_FLOATS else x
            rel = None if relevance is None else relevance[start : start + batch_size].to(device, x.dtype)
            fill_values = FILLS[fill](x, seed, first + start)
            x_model = x.to(device)
            fill_model = None if fill_values is None else fill_values.to(device)
            preds = []
            for mode in modes:  # ranked on the model's device (the relevance mode moves rel there)
                steps = MODES[mode](x_model, rel, deletion_counts(percentages, x), seed, first + start)
                for _, xp in perturbed_batches(x_model, steps, percentages, fill_model):
                    tic = time.perf_counter()
                    preds.append(model(xp.to(dtype)).double())
                    seconds += time.perf_counter() - tic
            tic = time.perf_counter()
            out[:, :, start : start + x.shape[0]] = torch.stack(preds).cpu().numpy().reshape(out.shape[:2] + (-1, 3))
            seconds += time.perf_counter() - tic
    if timing is not None:
        timing["forward"] = timing.get("forward", 0.0) + seconds
    return out


def window_batches(models, n: int, batch_size: int) -> list[tuple[str, int, int]]:
    """The work items of an experiment over windows: ``(model name, start, stop)`` per batch of each model."""
    return [(name, start, min(n, start + batch_size)) for name in models for start in range(0, n, batch_size)]


def _relevance_source(data_path, explainer) -> Rows | None:
    """The relevance of a matching store (same weights, method, composite, options, target and data)
    as :class:`Rows`, or None when none matches (then relevance is computed)."""
    from xai_loc.explain.store import stored_relevance

    array = stored_relevance(data_path, explainer) if isinstance(data_path, (str, os.PathLike)) else None
    return None if array is None else Rows(array, np.arange(array.shape[0]))


@dataclass(frozen=True)
class Relevance:
    """Relevance of a model's window batches: read from a matching store, else computed by ``explainer``."""

    explainer: Explainer
    stored: Rows | None = None

    def batch(self, x: torch.Tensor, truth: np.ndarray, start: int, stop: int, spent: dict[str, float]) -> torch.Tensor:
        """Relevance of windows ``x`` (``start:stop`` of the experiment) times the explainer's
        :attr:`~xai_loc.explain.attribute.Explainer.sense` (so that the highest speaks most for the
        model's answer, as in the faithfulness suite), the seconds added to ``spent["explain"]``."""
        tic = time.perf_counter()
        if self.stored is not None:
            rel = self.stored.batch(start, stop)
        else:
            with self.explainer:
                # seeded by each window's place in the set, as in a stored relevance; stays on the device
                rel = self.explainer.explain_batch(x, truth, np.arange(start, stop), to_host=False)["relevance"]
        spent["explain"] = spent.get("explain", 0.0) + time.perf_counter() - tic
        return rel if self.explainer.sense == 1 else rel * self.explainer.sense


@dataclass(frozen=True)
class PerturbationWork:
    """What every batch of :func:`run_perturbation` needs (sent once to a cluster's workers)."""

    windows: Rows
    truth: np.ndarray
    relevance: dict[str, Relevance]
    randomized: dict[str, Relevance]
    percentages: tuple[float, ...]
    modes: tuple[str, ...]
    fill: str
    seed: int
    batch_size: int
    device: str


def perturbation_batch(batch: tuple[str, int, int], work: PerturbationWork) -> tuple[np.ndarray, dict[str, float]]:
    """Predictions ``(mode, percentage, window, 3)`` of one model on deleted copies of one window batch.

    ``batch`` is ``(model name, start, stop)`` (:func:`window_batches`). The modes are
    ``work.modes`` then, with a randomized model, ``relevance-randomized``. Random orders and
    noise are seeded per window (``seed`` and its index), so a batch draws the same deletions wherever it runs
    and however the windows are batched (the predictions agree to float rounding, bit for bit only with the same
    thread count and CPU code path).
    The model stays on ``work.device`` for the whole batch (explanations, ranking and
    deletions); the relevance stays there from the explainer (a store's goes there once) to be
    ranked there, and the predictions come back once. Also returns the seconds spent
    (``forward``, ``explain``, ``wall``).
    """
    from xai_loc.explain.attribute import placed
    from xai_loc.runtime import resolve_device

    name, start, stop = batch
    tic = time.perf_counter()
    spent: dict[str, float] = {}
    x = work.windows.batch(start, stop)
    truth = work.truth[start:stop]
    relevance = work.relevance[name]
    options = {"fill": work.fill, "seed": work.seed, "first": start, "batch_size": work.batch_size, "timing": spent}
    with placed(relevance.explainer.model, resolve_device(work.device)) as net:
        rel = relevance.batch(x, truth, start, stop, spent) if "relevance" in work.modes else None
        preds = [deletion_predictions(net, x, work.percentages, work.modes, relevance=rel, **options)]
        if name in work.randomized:
            rel_r = work.randomized[name].batch(x, truth, start, stop, spent)
            preds.append(deletion_predictions(net, x, work.percentages, ["relevance"], relevance=rel_r, **options))
    spent["wall"] = time.perf_counter() - tic
    return np.concatenate(preds), spent


def run_perturbation(
    models: ModelSet | Mapping,
    data,
    *,
    percentages=PAPER_PERCENTAGES,
    modes=("relevance", "energy", "random"),
    method: str = "lrp",
    composite: str = "paper",
    target: str = "truth",
    fill: str = "zero",
    randomized_baseline: bool = True,
    seed: int = 0,
    batch_size: int = 16,
    device: str = "cpu",
    n_sources: int | None = None,
    progress: bool = False,
    timing: dict | None = None,
    client: Client | None = None,
    **explain_options,
):
    """The paper's input-manipulation experiment, with the randomized-model baseline.

    Parameters
    ----------
    models
        A :class:`~xai_loc.experiments.modelset.ModelSet` (or ``{name: checkpoint path or
        localizer}``, loaded once here); its randomized copies are the baseline's.
    data
        A dataset store path (from :func:`~xai_loc.data.store.simulate_dataset`).
    percentages, modes, fill
        Deletion percentages, orderings (:data:`MODES`) and fill (:data:`FILLS`).
    method, composite, target, explain_options
        How relevance is computed (see :func:`xai_loc.explain.explain`); a matching
        relevance store next to the data is reused. A ``'mean'`` baseline or reference is the mean
        of the store's windows and ``reference='train-mean'`` the mean of its scene's training
        sources, as for :func:`~xai_loc.explain.explain_store` (also with ``n_sources``).
    randomized_baseline
        Also delete in the order of the relevance of a randomized copy of each model
        (mode ``"relevance-randomized"``; Adebayo et al., 2018).
    seed
        An integer >= 0; seeds random orderings, noise fill, the randomized copies and the method's own
        draws (:func:`~xai_loc.experiments.base.method_seed`; recorded in ``explain_options``).
    batch_size
        Windows per explanation and forward pass.
    device
        Where the models explain and predict (``cpu``, ``cuda``, ``cuda:N``): each model goes
        there once for the run (once per batch on a cluster's workers); per batch the windows (and
        a store's relevance) go there once, the relevance is made, ranked and deleted there, and
        only the predictions come back.
    n_sources
        Only a seeded spread of ``n_sources`` of the store's sources (:func:`~xai_loc.data.store.subset_ids`).
    timing
        A dict to fill with the seconds spent per model (wall, forward passes, explanations);
        timings stay out of the result so that it is byte-reproducible.
    client
        A ``distributed.Client`` (:func:`xai_loc.cluster.cluster`): the window batches of every
        model are computed on its workers (:func:`perturbation_batch`), the result is the same.

    Returns
    -------
    xarray.Dataset
        ``mae`` (model, mode, percentage, xyz), ``mae_mean`` and ``euclidean`` (model, mode,
        percentage), ``aopc`` (model, mode) of ``mae_mean``, the constant-predictor
        baseline ``baseline_mae`` (xyz) and ``baseline_mae_mean``, and provenance attrs (no
        wall-clock values, so the same run gives the same bytes; pass ``timing={}`` to get the
        seconds spent per model).
    """
    import json

    import xarray as xr

    from xai_loc import __version__
    from xai_loc.checks import check_integer
    from xai_loc.cluster import map_blocks
    from xai_loc.data.store import open_signals
    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.explain.attribute import dataset_inputs, experiment_inputs, placed
    from xai_loc.models.evaluation import localization_errors
    from xai_loc.runtime import resolve_device

    percentages = check_percentages(percentages, from_zero=True)
    modes = check_modes(modes)
    check_fill(fill)
    check_integer("seed", seed)
    models = ModelSet.of(models)
    scored = scored_set(data, n_sources)
    scored.check(models)
    ds, windows, truth = scored.ds, scored.rows, scored.positions()
    n = truth.shape[0]
    all_modes = list(modes) + (["relevance-randomized"] if randomized_baseline else [])
    need_relevance = "relevance" in modes
    # the windows' mean and the training sources' mean position come from the whole store, as explain_store takes
    # them, so that its relevance store of the same explanation is found; a caller's own mean window is never in one
    inputs, explain_options, recorded = experiment_inputs(dataset_inputs(open_signals(data)),
                                                          {**explain_options, **method_seed(method, seed)})
    kwargs = {"target": target, "method": method, "composite": composite, "batch_size": batch_size,
              "device": device, **inputs, **explain_options}
    from_store = n_sources is None and "mean_input" not in recorded
    relevance, randomized = {}, {}
    for name in models:
        explainer = models.explainer(name, **kwargs)
        stored = _relevance_source(data, explainer) if need_relevance and from_store else None
        relevance[name] = Relevance(explainer, stored)
        if randomized_baseline:
            random_explainer = models.explainer(name, randomized_seed=seed, **kwargs)
            randomized[name] = Relevance(random_explainer,
                                         _relevance_source(data, random_explainer) if from_store else None)
    work = PerturbationWork(windows, truth, relevance, randomized, percentages, modes, fill, seed, batch_size,
                            device)
    preds = np.zeros((len(models), len(all_modes), len(percentages), n, 3))
    names = list(models)
    spent = {name: {} for name in names}

    def write(batch, result) -> None:
        name, start, stop = batch
        preds[names.index(name), :, :, start:stop] = result[0]
        for key, seconds in result[1].items():
            spent[name][key] = spent[name].get(key, 0.0) + seconds

    with contextlib.ExitStack() as stack:
        if client is None:  # computed here: each model on the device once for the run, not once per batch
            dev = resolve_device(device)
            for r in [*relevance.values(), *randomized.values()]:
                stack.enter_context(placed(r.explainer.model, dev))
        map_blocks(perturbation_batch, window_batches(names, n, batch_size), write, shared=work, client=client,
                   size=lambda batch: batch[2] - batch[1], progress=progress, desc="perturb", unit="win")
    timings = {} if timing is None else timing
    explained = {}
    for name in names:
        timings[name] = {"windows": n, "wall_seconds": spent[name].get("wall", 0.0),
                         "forward_seconds": spent[name].get("forward", 0.0),
                         "explain_seconds": spent[name].get("explain", 0.0)}
        explained[name] = model_record(relevance[name].explainer.attrs)

    err = np.abs(preds - truth)  # (model, mode, percentage, window, xyz)
    mae = err.mean(axis=3)
    euclid = np.sqrt(((preds - truth) ** 2).sum(-1)).mean(axis=3)
    _, first = np.unique(ds["source_id"].values, return_index=True)
    base = localization_errors(truth[first].mean(axis=0), truth)  # each source counted once, as in evaluate
    result = xr.Dataset(
        {
            "mae": (("model", "mode", "percentage", "xyz"), mae, {"units": "m"}),
            "mae_mean": (("model", "mode", "percentage"), mae.mean(-1),
                         {"units": "m", "description": "mean absolute error per coordinate (the paper's metric)"}),
            "euclidean": (("model", "mode", "percentage"), euclid, {"units": "m"}),
            "aopc": (("model", "mode"), aopc(mae.mean(-1)),
                     {"units": "m", "description": "area over the perturbation curve of mae_mean"}),
            "baseline_mae": (("xyz",), [base["mae_x"], base["mae_y"], base["mae_z"]], {"units": "m"}),
            "baseline_mae_mean": ((), base["mae"],
                                  {"units": "m", "description": "constant predictor at the centroid of the sources"}),
        },
        coords={"model": names, "mode": all_modes, "percentage": list(percentages), "xyz": ["x", "y", "z"]},
        attrs={
            "experiment": "perturbation (deletion of the top-P % samples per window)",
            "method": method, "composite": relevance[names[0]].explainer.composite_name, "target": target,
            "fill": fill, "seed": seed, "batch_size": batch_size,
            "explain_options": json.dumps(recorded, sort_keys=True, default=str),
            "t60": float(ds.attrs.get("t60", np.nan)), "snr": float(ds.attrs.get("snr", np.nan)),
            "n_windows": n, "n_sources": int(np.unique(ds["source_id"].values).size),
            "models": json.dumps(explained, sort_keys=True),
            "data_config": ds.attrs.get("config", ""), "xai_loc_version": __version__,
        },
    )
    return result


def perturbation_table(results) -> str:
    """Markdown: per model, the error (MAE per coordinate, m) per ordering and percentage, and AOPC."""
    pcts = [f"{p:g} %" for p in results["percentage"].values]
    lines = []
    for model in results["model"].values:
        lines += [f"### {markdown_text(model)}", "", markdown_row(["ordering", *pcts, "AOPC"]),
                  "|---" * (len(pcts) + 2) + "|"]
        for mode in results["mode"].values:
            row = results["mae_mean"].sel(model=model, mode=mode).values
            lines.append(markdown_row([str(mode), *(f"{v:.3f}" for v in row),
                                       f"{float(results['aopc'].sel(model=model, mode=mode)):.4f}"]))
        lines.append("")
    fitted = f"the {int(results.attrs['n_sources'])} sources scored here" if "n_sources" in results.attrs \
        else "the sources scored here"
    lines.append(f"Constant predictor at the centroid of {fitted} (fitted on their own labels): "
                 f"{float(results['baseline_mae_mean']):.3f} m per coordinate.")
    return "\n".join(lines) + "\n"


class PerturbationExperiment(Experiment):
    """The deletion curves of :func:`run_perturbation`: ``perturbation.nc``, ``perturbation.md``
    (with AOPC) and ``perturbation.timing.json``; figure ``perturbation.png``/``.pdf``."""

    name = "perturbation"
    result_file = "perturbation.nc"
    what = "perturbation result"
    command = "perturb"
    required = {"mae": ("model", "mode", "percentage", "xyz"), "mae_mean": ("model", "mode", "percentage"),
                "aopc": ("model", "mode"), "baseline_mae": ("xyz",)}
    optional = {"euclidean": ("model", "mode", "percentage")}
    nonempty = ("model", "mode", "percentage")
    table_files = {"markdown": "perturbation.md"}
    timed = True

    def run(self, models: ModelSet | Mapping, data: Any, **options: Any) -> xr.Dataset:
        return run_perturbation(models, data, **options)

    def tables(self, ds: xr.Dataset) -> dict[str, str]:
        return {"markdown": perturbation_table(ds)}
