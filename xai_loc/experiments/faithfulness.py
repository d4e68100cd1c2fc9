"""Faithfulness of attributions: deletion and insertion curves in both orders, per method and fill.

For each model and attribution method, relevance is computed once per input (through
:meth:`~xai_loc.experiments.modelset.ModelSet.explainer`), and the localization error in the
model's own units (:data:`~xai_loc.experiments.scored.ERRORS`: MAE per coordinate in metres for
positions, the angle to the truth in degrees for azimuths and [cos, sin] outputs, the
probability of the true direction class lost, ``1 - p``, for classifiers) is measured on
copies of each input in which the top ``P`` % of its samples (``M x T`` samples of a window,
every value of a cue map) are replaced by a fill, for three curves (Samek et al., 2017;
Blücher et al., 2024):

``morf``
    deletion, most relevant first (relevance times the explainer's
    :attr:`~xai_loc.explain.attribute.Explainer.sense`, descending: what speaks most for the
    right answer first);
``lerf``
    deletion, least relevant first (ascending);
``insertion``
    start from the fill everywhere and put back the most relevant ``P`` % first.

Any family's test store is scored (:func:`~xai_loc.experiments.scored.scored_set`); each model is
explained for :data:`~xai_loc.experiments.scored.EXPLAINED` of its output kind unless a target is
given. For classifiers, AOPC on ``1 - p`` is the AOPC of Samek et al. on the true class's
probability.

Metrics (``P_0 = 0`` first, ``e(P)`` the error curve, means over the percentages, so the
areas are in the error's units and comparable with :func:`~xai_loc.experiments.perturbation.aopc`):

``aopc``
    ``mean_P e_morf(P) - e_morf(0)``: how much deleting the most relevant samples hurts.
    Higher is more faithful.
``srg``
    symmetric relevance gain, the area between the LeRF and MoRF deletion curves,
    ``mean_P e_morf(P) - e_lerf(P)`` (Blücher et al., 2024): positive when the ranking
    separates samples that matter from samples that do not, whatever the fill does to the
    input on its own (that effect is common to both curves and cancels). Higher is more faithful.
``insertion_auc``
    ``mean_P e_insertion(P)``: the error while the most relevant samples are put back.
    Lower is more faithful.

Each is reported for the method's relevance (ordering ``relevance``), the relevance of the
randomized copy of the model (``randomized``, :meth:`ModelSet.randomized` with the run's seed;
Adebayo et al., 2018) and a seeded random ordering (``random``; the same for every method,
stored under each), per source (each source weighted once) with bootstrap 95 % intervals
over sources (sounds or utterances for the binaural stores). Completeness (the per-input
residual ``sum(relevance) - explained``, see
:mod:`xai_loc.explain.methods`) is reported per method, NaN for methods that have no
completeness property (saliency, occlusion), never left out.

Fills (:data:`FAITHFULNESS_FILLS`): ``zero`` and ``noise`` are
:data:`~xai_loc.experiments.perturbation.FILLS`; ``road`` is a 1-D per-channel version of
ROAD's noisy linear imputation (Rong et al., 2022, "A consistent and efficient evaluation
strategy for attribution methods"), :func:`road_imputation`. Zero fill puts silence into
speech, which a model may read as a cue of its own; imputation from the undeleted temporal
neighbours keeps the deleted input close to the data. How much the method ranking (by SRG)
depends on the fill is reported as Kendall's tau between every pair of fills.

Masks come from the deletion steps of :mod:`~xai_loc.experiments.deletion_order` (each sample
gets the step at which it is deleted), made where the model runs: by the compiled kernels on the
CPU, with torch on another device (the same bytes); nothing loops over samples or windows in Python.
"""
from __future__ import annotations

import json
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from xai_loc.errors import InputError
from xai_loc.experiments.base import (
    Experiment,
    interval_cell,
    latex_tabular,
    markdown_row,
    markdown_text,
    method_seed,
    model_record,
)
from xai_loc.experiments.deletion_order import (
    deletion_steps_on,
    filled_copy,
    random_deletion_steps_on,
    zeroed_copy,
)
from xai_loc.experiments.perturbation import (
    FILLS,
    PAPER_PERCENTAGES,
    Rows,
    aopc,
    check_names,
    check_percentages,
    deletion_counts,
    window_batches,
)
from xai_loc.experiments.scored import ERRORS, default_target, localization_error, scored_set
from xai_loc.runtime import input_dtype

if TYPE_CHECKING:
    import xarray as xr
    from distributed import Client

    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.explain.attribute import Explainer

__all__ = ["DEFAULT_METHODS", "FAITHFULNESS_FILLS", "FaithfulnessExperiment", "FaithfulnessWork", "bootstrap_ci",
           "check_fills", "completeness_stats", "curve_metrics", "faithfulness_batch", "faithfulness_latex",
           "faithfulness_table", "family_methods", "finite_mean", "method_label", "ordering_curves", "parse_methods",
           "rank_agreement", "road_imputation", "run_faithfulness", "source_means", "target_label"]

#: The suite's default attribution methods: ``method`` or ``lrp:composite`` (names of
#: :data:`xai_loc.explain.METHODS` and :data:`xai_loc.explain.COMPOSITES`).
DEFAULT_METHODS = ("lrp:paper", "lrp:epsilon_plus_flat", "integrated_gradients", "input_x_gradient", "saliency",
                   "occlusion")
#: Fills of deleted samples.
FAITHFULNESS_FILLS = ("zero", "noise", "road")
#: The three curves.
CURVES = ("morf", "lerf", "insertion")
#: Whose ranking orders the samples.
ORDERINGS = ("relevance", "randomized", "random")
METRICS = ("aopc", "srg", "insertion_auc")
#: ROAD's noise, as a fraction of the window's standard deviation.
ROAD_NOISE = 0.01


def parse_methods(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``["lrp:paper", "saliency"]`` -> ``[("lrp", "paper"), ("saliency", "none")]``, checked against the
    registries (``"lrp"`` alone is ``lrp:paper``); one-line errors for unknown names, repeats and empty lists."""
    from xai_loc.explain import COMPOSITES, METHODS

    specs = [str(s).strip() for s in specs]
    if not specs or not all(specs):
        raise InputError("methods list is empty; give at least one method, e.g. saliency or lrp:paper")
    out = []
    for spec in specs:
        method, _, composite = spec.partition(":")
        if method not in METHODS:
            raise InputError(f"method {method!r} is unknown; allowed: {', '.join(METHODS)} (LRP as lrp:COMPOSITE)")
        uses = METHODS[method].uses_composite
        if composite and not uses:
            raise InputError(f"method {method!r} takes no composite; give {method!r} alone")
        composite = (composite or "paper") if uses else "none"
        if uses and composite not in COMPOSITES:
            raise InputError(f"composite {composite!r} is unknown; allowed: {', '.join(COMPOSITES)}")
        out.append((method, composite))
    labels = [method_label(*m) for m in out]
    if len(set(labels)) < len(labels):
        raise InputError(f"methods {','.join(specs)!r} name a method twice; give each once")
    return out


def family_methods(models: ModelSet, methods: Sequence[str] = DEFAULT_METHODS) -> list[tuple[str, str]]:
    """``methods`` parsed (:func:`parse_methods`), LRP with the ``paper`` composite given the composite of the
    models' family instead (:data:`~xai_loc.models.families.FAMILIES`), and other LRP composites kept only where
    they give every module relevance crosses a rule on every model (:func:`_covers`; e.g. ``epsilon_plus_flat``
    leaves the cochleagram CNN's filterbank without one). A family without a composite (BAST, a transformer) gets
    AttnLRP for it and no other LRP composite. Models of families with different composites keep ``methods`` as
    given."""
    from xai_loc.models.families import family_of
    from xai_loc.models.registry import MODELS

    archs = {getattr(models[name], "arch_name", "") for name in models}
    composites = {family_of(arch).composite for arch in archs if arch in MODELS} or {"paper"}
    specs = parse_methods(methods)
    if len(composites) > 1:
        return specs
    composite = composites.pop()
    if composite is None:
        return [("attn_lrp", "none") if spec == ("lrp", "paper") else spec for spec in specs
                if spec[0] != "lrp" or spec == ("lrp", "paper")]
    return [("lrp", composite) if spec == ("lrp", "paper") else spec for spec in specs
            if spec[0] != "lrp" or spec == ("lrp", "paper") or all(_covers(spec[1], models[n]) for n in models)]


def _covers(composite: str, model) -> bool:
    """Whether LRP with ``composite`` (default options) gives a rule to every module of ``model`` its relevance
    crosses (:func:`~xai_loc.explain.composites.check_coverage`, from where the family's LRP starts)."""
    from xai_loc.explain.attribute import lrp_start
    from xai_loc.explain.composites import check_coverage, make_composite

    try:
        built, _ = make_composite(composite, model)
        check_coverage(composite, model, built, skip=lrp_start(model))
    except InputError:
        return False
    return True


def method_label(method: str, composite: str) -> str:
    """``"lrp:paper"`` for LRP with a composite, the bare method name otherwise."""
    return f"{method}:{composite}" if composite != "none" else method


def check_fills(fills: Sequence[str] | str) -> tuple[str, ...]:
    """Validate fill names (:data:`FAITHFULNESS_FILLS`; one name or a sequence), each once, at least one."""
    return check_names(fills, FAITHFULNESS_FILLS, "fills", "fill")


# ---------------------------------------------------------------------------------------------- ROAD imputation
def road_imputation(x: torch.Tensor, deleted: torch.Tensor) -> torch.Tensor:
    """Each deleted sample replaced from its undeleted temporal neighbours (per channel, noise-free).

    The 1-D, per-channel form of ROAD's linear imputation (Rong et al., 2022): the deleted
    samples ``u`` of a channel solve the neighbour-average system ``u_i = mean of its
    neighbours (i - 1, i + 1 where they exist)`` with the undeleted samples fixed. That
    discrete Laplace system is solved exactly by linear interpolation across each gap:
    inside a gap between kept samples at ``a`` and ``b`` the equations say ``u_{i+1} - u_i =
    u_i - u_{i-1}``, so the values have a constant step and meet both ends, i.e. the straight
    line; in a gap at a window end the end sample has one neighbour (``u_0 = u_1``) and the
    constant step is zero, i.e. the nearest kept value (flat extrapolation). The line is
    the system's unique solution (its matrix is irreducibly diagonally dominant when a
    channel keeps a sample), so no sparse solve is needed. A channel with every sample
    deleted has no solution to pin it; it gets zeros.

    Parameters
    ----------
    x
        Windows ``(..., T)``; any float dtype and device.
    deleted
        Boolean mask of ``x``'s shape.

    Returns
    -------
    torch.Tensor
        The imputed windows (``x`` where not deleted).
    """
    if x.shape != deleted.shape:
        raise InputError(f"mask shape {tuple(deleted.shape)} differs from the windows' {tuple(x.shape)}")
    n = x.shape[-1]
    idx = torch.arange(n, device=x.device).expand(x.shape)
    kept = ~deleted
    prev = torch.where(kept, idx, -1).cummax(-1).values  # last kept sample at or before i (-1: none)
    nxt = torch.where(kept, idx, n).flip(-1).cummin(-1).values.flip(-1)  # first kept at or after i (n: none)
    has_prev, has_next = prev >= 0, nxt < n
    left = x.gather(-1, prev.clamp(min=0))
    right = x.gather(-1, nxt.clamp(max=n - 1))
    span = (nxt - prev).clamp(min=1).to(x.dtype)
    inner = left + (right - left) * (idx - prev).to(x.dtype) / span
    value = torch.where(has_prev & has_next, inner,
                        torch.where(has_prev, left, torch.where(has_next, right, torch.zeros_like(x))))
    return torch.where(kept, x, value)


# ---------------------------------------------------------------------------------------------- curves
def _perturbed(x: np.ndarray, steps: np.ndarray, j: int, fill: str, fill_values: np.ndarray | None,
               road_noise: np.ndarray | None, insert: bool, out: np.ndarray) -> np.ndarray:
    """``x (W, N)`` with the samples removed at step ``j`` filled: deleted ones (``steps <= j``), or for
    ``insert`` the ones not yet inserted (``steps > j``). CPU: the compiled copy kernels into ``out``."""
    if fill == "road":
        removed = steps > j if insert else steps <= j
        shape = x.shape[:1] + road_noise.shape[1:]
        imputed = road_imputation(torch.from_numpy(x).view(shape), torch.from_numpy(removed).view(shape))
        fill_values = (imputed.numpy() + road_noise).reshape(x.shape)
    if insert:  # kept where already inserted: the roles of window and fill swap
        return filled_copy(np.zeros_like(x) if fill_values is None else fill_values, steps, j, x, out)
    if fill_values is None:
        return zeroed_copy(x, steps, j, out)
    return filled_copy(x, steps, j, fill_values, out)


def _perturbed_on_device(x: torch.Tensor, steps: torch.Tensor, j: int, fill: str, fill_values: torch.Tensor | None,
                         road_noise: torch.Tensor | None, insert: bool) -> torch.Tensor:
    """:func:`_perturbed` with tensors on any device (``x (W, M, T)``, ``steps`` of its shape): the copies
    are made where the model runs, with no host round trip; the same values as the CPU kernels."""
    removed = steps > j if insert else steps <= j
    if fill == "road":
        fill_values = road_imputation(x, removed) + road_noise
    if fill_values is None:
        fill_values = torch.zeros((), dtype=x.dtype, device=x.device)
    return torch.where(removed, fill_values, x)


def _errors(model: torch.nn.Module, batches, truth: torch.Tensor, device: torch.device) -> np.ndarray:
    """Per-input localization error of ``model`` on each perturbed batch, in its own units
    (:func:`~xai_loc.experiments.scored.localization_error`; one transfer of the errors)."""
    truth = truth.to(device)
    dtype = input_dtype(model, torch.float32)  # the copies are float32; a float64 model gets float64 inputs
    errors = []
    with torch.no_grad():
        for xp in batches:
            errors.append(localization_error(model, model(xp.to(device, dtype)), truth))
    return torch.stack(errors).cpu().numpy()


def ordering_curves(model: torch.nn.Module, windows: torch.Tensor, truth: torch.Tensor,
                    scores: np.ndarray | torch.Tensor | None,
                    percentages: Sequence[float], fill: str, *, seed: int = 0, first: int = 0,
                    device: str | torch.device = "cpu", timing: dict[str, float] | None = None) -> np.ndarray:
    """Errors ``(curve, percentage, window)`` (curves :data:`CURVES`) for one ordering of one batch.

    ``truth`` is what :meth:`~xai_loc.experiments.scored.ScoredSet.truth` gives (positions, labels,
    degrees). ``scores (W, ...)`` of the windows' shape orders the samples (descending for MoRF,
    ascending for LeRF; a window whose scores are all equal gets NaN curves: it has no order);
    None draws a seeded random order (a second draw for LeRF). ``fill`` is a name in
    :data:`FAITHFULNESS_FILLS`. The random orders and the noise are seeded per window, by ``seed`` and the
    window's index ``first + w`` in the whole set (so they do not depend on the batches). On the CPU the
    steps and copies come from the compiled kernels; on another device the scores (float32) go there once
    per batch, are ranked there and the copies made there, and only the errors come back.
    """
    w = windows.shape[0]
    x = windows.detach().to(torch.float32).cpu().reshape(w, -1).contiguous().numpy()
    counts = deletion_counts(percentages, windows)
    n = x.shape[1]
    device = torch.device(device)
    unordered = np.zeros(w, bool)
    if scores is None:
        morf = random_deletion_steps_on(device, w, n, counts, seed, first)
        lerf = random_deletion_steps_on(device, w, n, counts, seed + 1_000_003, first)
    else:  # rounded to float32 where the scores are, then ranked where the model runs
        if not isinstance(scores, torch.Tensor):  # a read-only store chunk is copied: torch wants writable memory
            scores = torch.from_numpy(np.require(scores, requirements="W"))
        if scores.shape[0] != w or scores.numel() != windows.numel():
            raise InputError(f"scores of shape {tuple(scores.shape)} do not fit windows of shape "
                             f"{tuple(windows.shape)}; give one score per sample")
        flat = scores.detach().to(torch.float32).reshape(w, -1).to(device)
        morf, lerf = deletion_steps_on(flat, counts), deletion_steps_on(-flat, counts)
        unordered = (flat == flat[:, :1]).all(-1).cpu().numpy()
    cpu_windows = torch.from_numpy(x).view(windows.shape)
    fill_values, road_noise = None, None
    if fill == "noise":
        fill_values = FILLS["noise"](cpu_windows, seed, first)
    elif fill == "road":
        road_noise = ROAD_NOISE * FILLS["noise"](cpu_windows, seed, first)
    tic = time.perf_counter()
    if device.type == "cpu":
        out = np.empty_like(x)
        values = None if fill_values is None else fill_values.reshape(w, -1).numpy()
        noise = None if road_noise is None else road_noise.numpy()

        def batches(steps, insert):
            for j in range(len(counts)):
                yield torch.from_numpy(_perturbed(x, steps, j, fill, values, noise, insert, out).reshape(windows.shape))
    else:
        xd = cpu_windows.to(device)
        values = None if fill_values is None else fill_values.to(device)
        noise = None if road_noise is None else road_noise.to(device)

        def batches(steps, insert):
            on_device = steps.view(windows.shape)
            for j in range(len(counts)):
                yield _perturbed_on_device(xd, on_device, j, fill, values, noise, insert)

    result = np.stack([_errors(model, batches(morf, False), truth, device),
                       _errors(model, batches(lerf, False), truth, device),
                       _errors(model, batches(morf, True), truth, device)])
    if timing is not None:
        timing["forward"] = timing.get("forward", 0.0) + time.perf_counter() - tic
    result[..., unordered] = np.nan  # a constant map orders nothing: its curves are undefined, not by position
    return result


def curve_metrics(curves: np.ndarray) -> np.ndarray:
    """Metrics :data:`METRICS` from curves ``(..., curve, percentage)`` (curves :data:`CURVES`, ``P_0 = 0``
    first): ``(..., metric)``; see the module docs."""
    curves = np.asarray(curves, dtype=np.float64)
    morf, lerf, insertion = curves[..., 0, :], curves[..., 1, :], curves[..., 2, :]
    return np.stack([aopc(morf), (morf - lerf).mean(-1), insertion.mean(-1)], axis=-1)


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> np.ndarray:
    """Percentile bootstrap interval of the mean over the last axis (sources): ``(..., 2)``.

    Resamples are drawn as multinomial counts (``n_boot x S``), so the means are one matrix
    product. Sources whose value is NaN (undefined there) are left out of each resample's mean;
    a cell with fewer than two finite sources gets NaN (one source has no spread to resample).
    """
    values = np.asarray(values, dtype=np.float64)
    s = values.shape[-1]
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(s, np.full(s, 1.0 / s), size=n_boot).T / s  # (S, n_boot)
    finite = np.isfinite(values)
    counted = finite @ weights
    means = np.divide(np.where(finite, values, 0.0) @ weights, counted, out=np.full(counted.shape, np.nan),
                      where=counted > 0)
    alpha = (1.0 - level) / 2.0
    with warnings.catch_warnings():  # a cell without any finite source: NaN, as documented
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = np.stack([np.nanquantile(means, alpha, axis=-1), np.nanquantile(means, 1.0 - alpha, axis=-1)], axis=-1)
    return np.where(finite.sum(-1, keepdims=True) >= 2, ci, np.nan)


def finite_mean(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis (sources) of the finite values, as :func:`bootstrap_ci` counts them; NaN
    where there are none."""
    ok = np.isfinite(values)
    count = ok.sum(-1)
    total = np.where(ok, values, 0.0).sum(-1)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def source_means(values: np.ndarray, per_source: np.ndarray) -> np.ndarray:
    """Per-source means ``(..., source)`` of per-input ``values (..., input)`` that skip NaN inputs
    (``per_source``: the ``(input, source)`` averaging matrix); NaN for a source without a finite input."""
    ok = np.isfinite(values)
    weight = ok @ per_source
    summed = np.where(ok, values, 0.0) @ per_source
    return np.divide(summed, weight, out=np.full_like(summed, np.nan), where=weight > 0)


def completeness_stats(residual: np.ndarray, explained: np.ndarray) -> np.ndarray:
    """Mean absolute and relative completeness residual over the last axis (windows): ``(..., 2)``.

    ``residual = sum(relevance) - explained`` per window (``explain_batch``'s ``relevance_sum``
    less ``explained``); relative is ``sum |residual| / sum |explained|``, both over the windows with
    a finite residual. NaN where no window has one (a method without a completeness property,
    whose ``explained`` is NaN).
    """
    residual = np.asarray(residual, dtype=np.float64)
    finite = np.isfinite(residual)
    count = finite.sum(-1)
    size = np.abs(np.where(finite, residual, 0.0))
    mean_abs = np.divide(size.sum(-1), count, out=np.full(count.shape, np.nan), where=count > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = size.sum(-1) / np.abs(np.where(finite, np.asarray(explained, dtype=np.float64), 0.0)).sum(-1)
    return np.stack([mean_abs, np.where(count > 0, relative, np.nan)], axis=-1)


def rank_agreement(srg: np.ndarray) -> np.ndarray:
    """Kendall's tau of the method ranking by SRG between every pair of fills: ``srg (method, fill)`` ->
    ``(fill, fill)``, over the methods with an SRG in every fill (NaN with fewer than two)."""
    from scipy.stats import kendalltau

    srg = srg[np.isfinite(srg).all(axis=1)]  # a method without ordered windows has no rank
    n_methods, n_fills = srg.shape
    tau = np.full((n_fills, n_fills), np.nan)
    if n_methods < 2:
        return tau
    for a in range(n_fills):
        for b in range(n_fills):
            tau[a, b] = kendalltau(srg[:, a], srg[:, b]).statistic
    return tau


# ---------------------------------------------------------------------------------------------- the experiment
@dataclass(frozen=True)
class FaithfulnessWork:
    """What every batch of :func:`run_faithfulness` needs (sent once to a cluster's workers)."""

    windows: Rows
    truth: dict[str, np.ndarray]
    explainers: dict[str, list[Explainer]]
    randomized: dict[str, list[Explainer]]
    fills: tuple[str, ...]
    percentages: tuple[float, ...]
    seed: int
    device: str


def faithfulness_batch(batch: tuple[str, int, int], work: FaithfulnessWork):
    """Curves of one model on one window batch: ``(errors, residual, explained, seconds)``.

    ``batch`` is ``(model name, start, stop)``. ``errors`` is ``(method, ordering, fill, curve,
    percentage, window)`` (orderings ``relevance``, [``randomized``,] ``random``), ``residual``
    and ``explained`` are ``(method, window)`` (the completeness residual and the explained
    output); random draws are seeded per window (``seed`` and its index), so a batch gives the same numbers
    wherever it runs and however the windows are batched.
    The model stays on the device for the whole batch (explanations and deletion passes).
    """
    from xai_loc.explain.attribute import placed
    from xai_loc.runtime import resolve_device

    name, start, stop = batch
    tic = time.perf_counter()
    spent: dict[str, float] = {}
    x = work.windows.batch(start, stop)
    truth_np = work.truth[name][start:stop]
    truth = torch.from_numpy(truth_np)
    explainers, randomized = work.explainers[name], work.randomized.get(name, [])
    n_o = 3 if randomized else 2
    errors = np.zeros((len(explainers), n_o, len(work.fills), 3, len(work.percentages), stop - start))
    residual = np.zeros((len(explainers), stop - start))
    output = np.zeros((len(explainers), stop - start))
    rel, rel_r = [], []
    index = np.arange(start, stop)  # seeds a sampling method by each window's place in the set, not in the batch
    net, dev = explainers[0].model, resolve_device(work.device)
    with placed(net, dev):
        explain_tic = time.perf_counter()
        for i, explainer in enumerate(explainers):
            with explainer:  # the relevance stays on the device, to be ranked there
                out = explainer.explain_batch(x, truth_np, index, to_host=False)
            rel.append(out["relevance"] * explainer.sense)
            residual[i] = (out["relevance_sum"] - out["explained"]).cpu().numpy()
            output[i] = out["explained"].cpu().numpy()
        for explainer in randomized:
            with explainer:
                rel_r.append(explainer.explain_batch(x, truth_np, index, to_host=False)["relevance"] * explainer.sense)
        spent["explain"] = time.perf_counter() - explain_tic
        for f, fill in enumerate(work.fills):
            common = {"seed": work.seed, "first": start, "device": dev, "timing": spent}
            random = ordering_curves(net, x, truth, None, work.percentages, fill, **common)
            for i in range(len(explainers)):
                errors[i, 0, f] = ordering_curves(net, x, truth, rel[i], work.percentages, fill, **common)
                if randomized:
                    errors[i, 1, f] = ordering_curves(net, x, truth, rel_r[i], work.percentages, fill, **common)
                errors[i, -1, f] = random  # method-independent
    spent["wall"] = time.perf_counter() - tic
    return errors, residual, output, spent


def _one_error(models: ModelSet):
    """The :data:`~xai_loc.experiments.scored.ERRORS` entry all ``models`` share (one unit per result)."""
    kinds = {getattr(models[name], "output_kind", "position") for name in models}
    if len(kinds) > 1:
        raise InputError(f"models of output kinds {', '.join(sorted(kinds))} cannot be scored in one run (errors "
                         "in different units); run each kind on its own store")
    return ERRORS[kinds.pop() if kinds else "position"]


def target_label(targets: Mapping[str, str]) -> str:
    """The explained target: its name when every model shares it, else JSON ``{model: target}``."""
    names = set(targets.values())
    return names.pop() if len(names) == 1 else json.dumps(dict(targets), sort_keys=True)


def run_faithfulness(
    models: ModelSet | Mapping,
    data,
    *,
    methods: Sequence[str] | None = None,
    fills: Sequence[str] = FAITHFULNESS_FILLS,
    percentages: Sequence[float] = PAPER_PERCENTAGES,
    target: str | None = None,
    randomized_baseline: bool = True,
    seed: int = 0,
    n_boot: int = 1000,
    batch_size: int = 16,
    device: str = "cpu",
    n_sources: int | None = None,
    progress: bool = False,
    timing: dict | None = None,
    client: Client | None = None,
) -> xr.Dataset:
    """The faithfulness suite (module docs) on the inputs of a test store.

    Parameters
    ----------
    models
        A :class:`~xai_loc.experiments.modelset.ModelSet` (or ``{name: checkpoint or module}``), all of
        one output kind (one error unit).
    data
        A test store path of the models' family (:func:`~xai_loc.experiments.scored.scored_set`).
    methods
        ``method`` or ``lrp:composite`` names; None: :data:`DEFAULT_METHODS` for the models' family
        (:func:`family_methods`).
    fills
        Names in :data:`FAITHFULNESS_FILLS`.
    percentages
        Increasing, in [0, 100], starting at 0.
    target
        What is explained (:data:`xai_loc.explain.TARGETS`); None: each model's
        :data:`~xai_loc.experiments.scored.EXPLAINED`. Errors are always against the truth.
    randomized_baseline
        Also order by the relevance of each model's randomized copy (seed ``seed``).
    seed
        An integer >= 0; seeds random orderings, noise, the randomized copies, the bootstrap and the methods'
        own draws (:func:`~xai_loc.experiments.base.method_seed`).
    n_boot
        Bootstrap resamples of the sources.
    n_sources
        Only a seeded spread of ``n_sources`` of the store's sources.
    timing
        A dict to fill with seconds per model (kept out of the result).
    client
        A ``distributed.Client`` (:func:`xai_loc.cluster.cluster`): the window batches of every
        model are computed on its workers (:func:`faithfulness_batch`), the result is the same.

    Returns
    -------
    xarray.Dataset
        ``curve`` (model, method, ordering, fill, mode, percentage), ``score`` and ``score_ci``
        (..., metric[, bound]) with per-source values ``source_score``, ``completeness``
        (model, method, stat), ``fill_rank_tau`` (model, fill, fill_other), ``unperturbed_error``
        (model); the error's units and name in attrs ``units`` and ``error``; provenance attrs,
        no wall-clock values.
    """
    import xarray as xr

    from xai_loc import __version__
    from xai_loc.checks import check_integer
    from xai_loc.cluster import map_blocks
    from xai_loc.experiments.modelset import ModelSet

    fills = check_fills(fills)
    percentages = check_percentages(percentages, from_zero=True)
    check_integer("seed", seed)
    check_integer("n_boot", n_boot, minimum=1)
    scored = scored_set(data, n_sources)
    models = scored.models(ModelSet.of(models))
    scored.check(models)
    error = _one_error(models)
    specs = family_methods(models) if methods is None else parse_methods(methods)
    labels = [method_label(*m) for m in specs]
    sources, per_source = scored.sources, scored.per_source
    n = len(scored)
    orderings = ORDERINGS if randomized_baseline else ("relevance", "random")
    n_m, n_o, n_f, n_p = len(specs), len(orderings), len(fills), len(percentages)
    names = list(models)
    targets = {name: target or default_target(models[name]) for name in names}
    truth = {name: scored.truth(models[name]) for name in names}
    kw = {"batch_size": batch_size, "device": device}
    explainers = {name: [models.explainer(name, method=m, composite=c, target=targets[name], **method_seed(m, seed),
                                          **kw) for m, c in specs] for name in names}
    randomized = {name: [models.explainer(name, randomized_seed=seed, method=m, composite=c, target=targets[name],
                                          **method_seed(m, seed), **kw) for m, c in specs]
                  for name in names} if randomized_baseline else {}
    work = FaithfulnessWork(scored.rows, truth, explainers, randomized, fills, percentages, seed, device)
    errors = np.zeros((len(models), n_m, n_o, n_f, 3, n_p, n))
    residual = np.zeros((len(models), n_m, n))
    output = np.zeros((len(models), n_m, n))
    spent = {name: {} for name in names}

    def write(batch, result) -> None:
        name, start, stop = batch
        k = names.index(name)
        errors[k, ..., start:stop], residual[k, :, start:stop], output[k, :, start:stop] = result[:3]
        for key, seconds in result[3].items():
            spent[name][key] = spent[name].get(key, 0.0) + seconds

    map_blocks(faithfulness_batch, window_batches(names, n, batch_size), write, shared=work, client=client,
               size=lambda batch: batch[2] - batch[1], progress=progress, desc="faithfulness", unit="win")
    curves = source_means(errors, per_source)  # a window without an order (NaN) is left out of its source
    undefined = np.isnan(errors[..., 0, 0, :]).sum(-1)  # (model, method, ordering, fill)
    # the unperturbed error is the same for every ordering; the random one is always defined
    unperturbed = np.array([float((errors[k, 0, -1, 0, 0, 0] @ per_source).mean()) for k in range(len(names))])
    completeness = completeness_stats(residual, output)
    timings = {} if timing is None else timing
    explained_models = {}
    for name in names:
        timings[name] = {"windows": n, "wall_seconds": spent[name].get("wall", 0.0),
                         "forward_seconds": spent[name].get("forward", 0.0),
                         "explain_seconds": spent[name].get("explain", 0.0)}
        explained_models[name] = model_record(explainers[name][0].attrs)

    source_metric = curve_metrics(np.moveaxis(curves, -1, -3))  # (model, method, ordering, fill, source, metric)
    source_metric = np.moveaxis(source_metric, -2, -1)  # (..., metric, source)
    metric = finite_mean(source_metric)
    ci = bootstrap_ci(source_metric, n_boot=n_boot, seed=seed)
    tau = np.stack([rank_agreement(metric[k, :, 0, :, METRICS.index("srg")]) for k in range(len(models))])
    dims = ("model", "method", "ordering", "fill")
    units = error.units
    return xr.Dataset(
        {
            "curve": ((*dims, "mode", "percentage"), finite_mean(curves),
                      {"units": units, "description": f"{error.label} against the truth, mean over sources (each "
                                                      "source once)"}),
            "score": ((*dims, "metric"), metric,
                       {"units": units, "description": "aopc: mean_P e_morf(P) - e_morf(0) (higher: more faithful); "
                                                       "srg: mean_P e_morf(P) - e_lerf(P) (higher: more faithful); "
                                                       "insertion_auc: mean_P e_insertion(P) (lower: more faithful)"}),
            "score_ci": ((*dims, "metric", "bound"), ci,
                          {"units": units,
                           "description": f"bootstrap 95 % interval over sources ({n_boot} resamples)"}),
            "source_score": ((*dims, "metric", "source"), source_metric, {"units": units}),
            "completeness": (("model", "method", "stat"), completeness,
                             {"description": "residual sum(relevance) - explained per window: mean absolute (units "
                                             "of the explained output) and relative (sum |residual| / sum "
                                             "|explained|); NaN where the method has no completeness property"}),
            "fill_rank_tau": (("model", "fill", "fill_other"), tau,
                              {"description": "Kendall tau of the method ranking by SRG (ordering relevance) "
                                              "between two fills"}),
            "unperturbed_error": (("model",), unperturbed, {"units": units}),
            "unordered_windows": (dims, undefined,
                                  {"description": "windows whose map is constant (e.g. all-zero relevance): no "
                                                  "order, left out of the curves and scores"}),
        },
        coords={"model": names, "method": labels, "attribution": ("method", [m for m, _ in specs]),
                "composite": ("method", [c for _, c in specs]), "ordering": list(orderings), "fill": list(fills),
                "fill_other": list(fills), "mode": list(CURVES), "percentage": list(percentages),
                "metric": list(METRICS), "bound": ["low", "high"], "stat": ["mean_abs", "relative"],
                "source": sources},
        attrs={
            "experiment": "faithfulness (MoRF/LeRF deletion and insertion per method and fill)",
            "target": target_label(targets), "error": error.label, "units": units, "seed": seed, "n_boot": n_boot,
            "batch_size": batch_size,
            "road_noise": ROAD_NOISE, **scored.conditions, "n_windows": n, "n_sources": int(sources.size),
            "models": json.dumps(explained_models, sort_keys=True),
            "data_config": scored.ds.attrs.get("config", ""), "xai_loc_version": __version__,
        },
    )


# ---------------------------------------------------------------------------------------------- tables
_COLUMNS = (("AOPC", "relevance", "aopc"), ("SRG", "relevance", "srg"), ("insertion AUC", "relevance", "insertion_auc"),
            ("SRG randomized model", "randomized", "srg"), ("SRG random order", "random", "srg"))


def _units(ds) -> str:
    """The error's units (results written before binaural families were scored are in metres)."""
    return str(ds.attrs.get("units", "m"))


def _cells(ds, model, fill) -> tuple[list[str], list[list[str]]]:
    units = _units(ds)
    header = (["method"] + [f"{c} {units}" for c, o, _ in _COLUMNS if o in ds["ordering"].values]
              + ["completeness \\|r\\| (rel.)"])
    rows = []
    for method in ds["method"].values:
        row = [str(method)]
        for _, ordering, metric in _COLUMNS:
            if ordering not in ds["ordering"].values:
                continue
            sel = {"model": model, "method": method, "ordering": ordering, "fill": fill, "metric": metric}
            value = float(ds["score"].sel(sel))
            low, high = ds["score_ci"].sel(sel).values
            row.append(interval_cell(value, low, high, 4))
        mean_abs, rel = ds["completeness"].sel({"model": model, "method": method}).values
        row.append("n/a (no completeness property)" if not np.isfinite(mean_abs) else f"{mean_abs:.3g} ({rel:.3g})")
        rows.append(row)
    return header, rows


def _tau_line(ds, model) -> str:
    fills = list(ds["fill"].values)
    pairs = [f"{a}/{b} {float(ds['fill_rank_tau'].sel(model=model, fill=a, fill_other=b)):.2f}"
             for i, a in enumerate(fills) for b in fills[i + 1:]]
    return ("Kendall tau of the method ranking by SRG between fills: " + ", ".join(pairs)) if pairs else ""


def faithfulness_table(ds: xr.Dataset) -> str:
    """Markdown: per model and fill, method x metric with bootstrap 95 % intervals over sources."""
    units = _units(ds)
    unperturbed = ds["unperturbed_error"] if "unperturbed_error" in ds else ds["unperturbed_mae"]
    lines = [f"Faithfulness over {int(ds.attrs['n_sources'])} sources ({int(ds.attrs['n_windows'])} inputs); "
             f"errors are {ds.attrs.get('error', 'MAE per coordinate')} in {units}; AOPC and SRG: higher is more "
             "faithful, insertion AUC: lower. Intervals: bootstrap 95 % over sources.", ""]
    for model in ds["model"].values:
        lines.append(f"### {markdown_text(model)} (unperturbed {float(unperturbed.sel(model=model)):.3f} {units})")
        for fill in ds["fill"].values:
            header, rows = _cells(ds, model, fill)
            lines += ["", f"fill: {fill}", "", markdown_row(header), "|---" * len(header) + "|"]
            lines += [markdown_row(r) for r in rows]
        tau = _tau_line(ds, model)
        lines += ["", tau, ""] if tau else [""]
        unordered = _unordered_line(ds, model)
        lines += [unordered, ""] if unordered else []
    return "\n".join(lines) + "\n"


def _unordered_line(ds, model) -> str:
    if "unordered_windows" not in ds:
        return ""
    counts = ds["unordered_windows"].sel(model=model).max("fill")
    found = []
    for m in ds["method"].values:
        for o in ds["ordering"].values:
            count = int(counts.sel({"method": m, "ordering": o}))
            if count:
                found.append(f"{m} ({o}) {count}")
    return ("Windows with a constant map (no order; left out of curves and scores): " + ", ".join(found)) \
        if found else ""


def faithfulness_latex(ds: xr.Dataset) -> str:
    """LaTeX tabulars of :func:`faithfulness_table`, one per model and fill."""
    parts = []
    for model in ds["model"].values:
        for fill in ds["fill"].values:
            parts += latex_tabular(f"{model}, fill {fill}", *_cells(ds, model, fill))
    return "\n".join(parts)


class FaithfulnessExperiment(Experiment):
    """:func:`run_faithfulness`: ``faithfulness.nc``, ``faithfulness.md``, ``faithfulness.tex`` and
    ``faithfulness.timing.json``; figure ``faithfulness.png``/``.pdf``."""

    name = "faithfulness"
    result_file = "faithfulness.nc"
    what = "faithfulness result"
    command = "faithfulness"
    required = {"score": ("model", "method", "ordering", "fill", "metric"),
                "score_ci": ("model", "method", "ordering", "fill", "metric", "bound"),
                "completeness": ("model", "method", "stat"),
                "curve": ("model", "method", "ordering", "fill", "mode", "percentage")}
    optional = {"unordered_windows": ("model", "method", "ordering", "fill"), "unperturbed_error": ("model",)}
    nonempty = ("model", "method", "ordering", "fill", "percentage")
    table_files = {"markdown": "faithfulness.md", "latex": "faithfulness.tex"}
    timed = True

    def run(self, models: ModelSet | Mapping, data: Any, **options: Any) -> xr.Dataset:
        return run_faithfulness(models, data, **options)

    def tables(self, ds: xr.Dataset) -> dict[str, str]:
        return {"markdown": faithfulness_table(ds), "latex": faithfulness_latex(ds)}
