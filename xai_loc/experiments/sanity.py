"""Randomization sanity checks: cascading model-parameter randomization, eMPRT and a random-target check.

An explanation that does not change when the model's weights are destroyed, or when a
different output is explained, cannot be telling us what the model computes. Per model and
attribution method (:meth:`~xai_loc.experiments.modelset.ModelSet.explainer` options, methods
parsed as in :mod:`~xai_loc.experiments.faithfulness`), on the same windows:

Cascading randomization (Adebayo et al., 2018, "Sanity checks for saliency maps")
    The parameterized layers (:func:`~xai_loc.experiments.baselines.parameterized_layers`) are
    re-initialized from the top (output) layer down, one more at each stage, cumulatively
    (:func:`~xai_loc.experiments.baselines.cascading_copies`: the reset mechanism of
    :func:`~xai_loc.experiments.baselines.randomized_copy`, seeded the same way). Stage
    ``original`` is the trained model; the stage named after a layer has that layer and all
    above it randomized; the last stage has every layer randomized. At each stage, per window:

    ``spearman``
        Spearman rank correlation of ``|R|`` with the original ``|R|`` over the window's
        ``M x T`` samples (tied values get their average rank, as scipy's ``spearmanr``; NaN
        where a map is constant; :func:`spearman`);
    ``pearson``
        Pearson correlation of the signed relevance with the original's (NaN where a map is
        constant; :func:`pearson`);
    ``entropy``
        the complexity of the stage's own map, the Shannon entropy of the normalized absolute
        relevance ``p_i = |R_i| / sum_j |R_j|``, ``H = -sum_i p_i log p_i`` (nats; Bhatt et al.,
        2020; Chalasani et al., 2020): 0 for a map on one sample, ``log N`` for a uniform one
        (:func:`relevance_entropy`).

    A method passes when the similarity falls as layers are randomized.

eMPRT (Hedström et al., 2024, "Sanity checks revisited", TMLR)
    The relative rise in explanation complexity from the original model to the fully
    randomized one, ``eMPRT = (H(e_randomized) - H(e_original)) / H(e_original)``, as Quantus's
    ``EfficientMPRT`` computes it with its defaults: the complexity ``H`` is ``discrete_entropy``,
    the Shannon entropy (nats) of the histogram of the explanation's signed values in
    :data:`EMPRT_BINS` equal bins over their own range ``[min, max]`` (``numpy.histogram``;
    no absolute value, no normalization; a constant map fills one bin, ``H = 0``)
    (:func:`histogram_entropy`). Above 0: randomizing the model makes the explanation more
    complex (noisier), as a faithful method's should. Computed per window (NaN where the
    original map has ``H = 0``), averaged per source.

Random-target check
    Position models: the original model explained for the coordinate targets ``x``, ``y`` and
    ``z`` (registered in :mod:`xai_loc.explain.targets`). Direction models: explained for the
    truth and for another true direction, drawn per input uniformly from the store's other
    distinct true values (class labels, azimuths; seeded), with the kind's truth target
    (:data:`~xai_loc.experiments.scored.EXPLAINED`). A one-output azimuth model has no other
    target (every map is the same up to sign and scale): NaN. ``spearman`` and ``pearson`` between the
    maps of every pair of targets (:data:`RANDOM_TARGETS`). A target-sensitive method gives
    different maps (low similarity).

Any family's test store is checked (:func:`~xai_loc.experiments.scored.scored_set`); the cascade
explains each model's :data:`~xai_loc.experiments.scored.EXPLAINED` target unless one is given.
Every number is per input, averaged per source (each source, sound or utterance weighted
once), with bootstrap 95 % intervals over sources
(:func:`~xai_loc.experiments.faithfulness.bootstrap_ci`). All metrics are vectorized over
inputs (no Python loop over inputs or samples) and take NumPy arrays or torch tensors: with the
models on a GPU the maps stay there and are compared there, and only the per-input numbers come
back.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from xai_loc.errors import InputError
from xai_loc.experiments.arrays import namespace, to_host
from xai_loc.experiments.base import (
    Experiment,
    input_noun,
    interval_cell,
    latex_tabular,
    markdown_row,
    markdown_text,
    method_seed,
    model_record,
)
from xai_loc.experiments.baselines import cascading_copies
from xai_loc.experiments.deletion_order import stable_ranks
from xai_loc.experiments.faithfulness import (
    bootstrap_ci,
    family_methods,
    finite_mean,
    method_label,
    parse_methods,
    source_means,
    target_label,
)
from xai_loc.experiments.perturbation import window_batches
from xai_loc.experiments.scored import EXPLAINED, Rows, default_target, scored_set

if TYPE_CHECKING:
    import xarray as xr
    from distributed import Client

    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.explain.attribute import Explainer

__all__ = ["DEFAULT_METHODS", "EMPRT_BINS", "RANDOM_TARGETS", "SanityExperiment", "SanityWork", "cascade_similarity",
           "emprt", "histogram_entropy", "other_truth", "pearson", "relevance_entropy", "run_sanity", "sanity_batch",
           "sanity_latex", "sanity_table", "spearman"]

#: The default attribution methods of the sanity checks.
DEFAULT_METHODS = ("lrp:paper", "lrp:epsilon_plus_flat", "integrated_gradients", "input_x_gradient", "saliency")
#: Per-stage metrics of the cascade.
METRICS = ("spearman", "pearson", "entropy")
#: Bins of eMPRT's explanation histogram (Quantus's default).
EMPRT_BINS = 100
#: Summary scores of the table.
SCORES = ("spearman_randomized", "pearson_randomized", "emprt", "spearman_targets", "pearson_targets")


# ---------------------------------------------------------------------------------------------- metrics
# Every metric takes NumPy arrays (computed on the host, NumPy results) or torch tensors (computed in float64
# on their device, tensor results there, so that a GPU run brings back only the per-input numbers; issue 18)
# with the same float64 operations (:mod:`xai_loc.experiments.arrays`). Given both kinds, the arrays join the
# tensors' device.
def _flats(*maps) -> tuple:
    """``(W, N)`` float64 maps of one kind: tensors on the first tensor's device if any is one, else NumPy."""
    tensor = next((m for m in maps if isinstance(m, torch.Tensor)), None)
    if tensor is None:
        return tuple(np.asarray(m).reshape(len(m), -1).astype(np.float64) for m in maps)
    return tuple(torch.as_tensor(m, device=tensor.device).detach().reshape(len(m), -1).to(torch.float64)
                 for m in maps)


def _ranks(a: torch.Tensor) -> torch.Tensor:
    """Ordinal ranks along the last axis, on the tensor's device: the inverse permutation of a stable sort
    (the NumPy path ranks with :func:`~xai_loc.experiments.deletion_order.stable_ranks`, the same numbers)."""
    order = torch.sort(a, dim=-1, stable=True).indices
    ordinal = torch.arange(a.shape[-1], dtype=torch.float64, device=a.device).expand(order.shape)
    return torch.empty_like(a, dtype=torch.float64).scatter_(-1, order, ordinal)


def _tie_averaged(a, ranks):
    """Average ranks of ``a (W, N)`` from its ordinal ranks: each run of equal values gets the mean of its
    ordinal ranks (scipy's ``rankdata(method="average")`` less one). Ordinal ranks alone put a ramp of
    positions into every tie, which correlates two sparse maps through their zeros."""
    n = a.shape[-1]
    if isinstance(a, torch.Tensor):
        idx = ranks.long()
        pos = torch.arange(n, dtype=torch.float64, device=a.device).expand(idx.shape)
        order = torch.empty_like(idx).scatter_(-1, idx, pos.long())
        s = a.gather(-1, order)
        new = torch.ones_like(s, dtype=torch.bool)
        new[:, 1:] = s[:, 1:] != s[:, :-1]
        end = torch.ones_like(new)
        end[:, :-1] = new[:, 1:]
        first = torch.cummax(torch.where(new, pos, 0.0), -1).values
        last = torch.cummin(torch.where(end, pos, float(n)).flip(-1), -1).values.flip(-1)
        return ((first + last) / 2).gather(-1, idx)
    idx = ranks.astype(np.int64)
    pos = np.broadcast_to(np.arange(n, dtype=np.float64), idx.shape)
    order = np.empty_like(idx)
    np.put_along_axis(order, idx, pos.astype(np.int64), -1)
    s = np.take_along_axis(a, order, -1)
    new = np.ones(s.shape, bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    end = np.ones(s.shape, bool)
    end[:, :-1] = new[:, 1:]
    first = np.maximum.accumulate(np.where(new, pos, 0.0), -1)
    last = np.minimum.accumulate(np.where(end, pos, float(n))[:, ::-1], -1)[:, ::-1]
    return np.take_along_axis((first + last) / 2, idx, -1)


def pearson(a, b):
    """Pearson correlation of each window's map in ``a`` with its map in ``b`` (``(W, ...)`` each): ``(W,)``;
    NaN where a map is constant."""
    a, b = _flats(a, b)
    # a constant map centres to rounding residue (~1e-17 for 0.1), not to zero: masked, not divided
    constant = (a == a[:, :1]).all(-1) | (b == b[:, :1]).all(-1)
    a = a - a.mean(-1)[:, None]
    b = b - b.mean(-1)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (a * b).sum(-1) / namespace(a).sqrt((a * a).sum(-1) * (b * b).sum(-1))
    return namespace(rho).where(constant, float("nan"), rho)


def spearman(a, b):
    """Spearman rank correlation per window of ``a`` and ``b`` (``(W, ...)``, ranked as given; pass
    ``|R|`` for the cascade): ``(W,)``. Ties get their average rank (as scipy's ``spearmanr``); NaN where
    a map is constant (an all-zero relevance has no ranking)."""
    # a constant map has constant ranks: NaN from pearson
    if not any(isinstance(m, torch.Tensor) for m in (a, b)):  # ranked in their own dtype: float32 sorts faster
        a, b = (np.asarray(m).reshape(len(m), -1) for m in (a, b))
        return pearson(_tie_averaged(a, stable_ranks(a)), _tie_averaged(b, stable_ranks(b)))
    a, b = _flats(a, b)
    return pearson(_tie_averaged(a, _ranks(a)), _tie_averaged(b, _ranks(b)))


def _entropy(p):
    """``-sum p log p`` along the last axis (``0 log 0 = 0``), as ``0.0 - ...`` so that no entropy is -0.0."""
    xp = namespace(p)
    return 0.0 - xp.where(p > 0, p * xp.log(xp.where(p > 0, p, 1.0)), 0.0).sum(-1)


def relevance_entropy(relevance):
    """Complexity per window: Shannon entropy (nats) of ``p = |R| / sum |R|``: ``(W,)``; 0 for one non-zero
    sample, ``log N`` for a uniform map, NaN for an all-zero map."""
    a = abs(_flats(relevance)[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        p = a / a.sum(-1)[:, None]
        return _entropy(p) + 0.0 * p.sum(-1)


def _take(a, index):
    return torch.gather(a, -1, index) if isinstance(a, torch.Tensor) else np.take_along_axis(a, index, -1)


def _count(mask):
    """A boolean mask as int64 (torch does not subtract booleans)."""
    return mask.to(torch.int64) if isinstance(mask, torch.Tensor) else mask.astype(np.int64)


def _linspace(low, high, num: int):
    """``numpy.linspace(low[:, 0], high[:, 0], num, axis=-1)`` for ``(W, 1)`` bounds, in the same float64
    operations (its step, its special case of a step that underflows to 0, its last value the stop)."""
    xp = namespace(low)
    i = xp.arange(num, dtype=xp.float64) if xp is np else torch.arange(num, dtype=torch.float64, device=low.device)
    delta, div = high - low, num - 1
    step = delta / div
    edges = (i[None] / div * delta if bool((step == 0).any()) else i[None] * step) + low
    edges[:, -1] = high[:, 0]
    return edges


def histogram_entropy(relevance, n_bins: int = EMPRT_BINS):
    """eMPRT's complexity per window: entropy (nats) of the histogram of the signed values in ``n_bins``
    equal bins over ``[min, max]``: ``(W,)``, the bins exactly ``numpy.histogram``'s (its index arithmetic
    and its correction against the ``linspace`` edges; the maximum in the last bin); 0 for a constant map.
    Vectorized over windows (one ``bincount``)."""
    a = _flats(relevance)[0]
    xp = namespace(a)
    w, n = a.shape
    low, high = xp.amin(a, -1)[:, None], xp.amax(a, -1)[:, None]
    constant = high == low
    low, high = xp.where(constant, low - 0.5, low), xp.where(constant, high + 0.5, high)  # numpy's range
    with np.errstate(over="ignore"):
        scale = n_bins / (high - low)
    if not bool(xp.isfinite(scale).all() & xp.isfinite(a).all()):  # else bin indices out of range (a GPU assert)
        raise InputError("relevance maps hold NaN or infinite values, or span less than 1e-306; eMPRT's "
                         "histogram cannot bin them")
    edges = _linspace(low, high, n_bins + 1)
    bins = (a - low) * scale
    bins = bins.to(torch.int64) if xp is torch else bins.astype(np.int64)
    bins = bins - _count(bins == n_bins)
    bins = bins - _count(a < _take(edges, bins))
    bins = bins + _count((a >= _take(edges, bins + 1)) & (bins != n_bins - 1))
    rows = xp.arange(w) if xp is np else torch.arange(w, device=a.device)
    counts = xp.bincount((bins + n_bins * rows[:, None]).reshape(-1), minlength=w * n_bins)
    counts = counts.to(torch.float64) if xp is torch else counts  # torch divides integers into float32
    return _entropy(counts.reshape(w, n_bins) / n)


def emprt(original, randomized, n_bins: int = EMPRT_BINS):
    """eMPRT per window: ``(H(randomized) - H(original)) / H(original)`` of :func:`histogram_entropy`
    (module docs); NaN where ``H(original)`` is 0."""
    h_original = histogram_entropy(original, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        rise = (histogram_entropy(randomized, n_bins) - h_original) / h_original
        return namespace(h_original).where(h_original > 0, rise, float("nan"))


# ---------------------------------------------------------------------------------------------- random targets
def other_truth(truth: np.ndarray, seed: int) -> np.ndarray:
    """Per input, another true value: drawn uniformly from the distinct values of ``truth`` (rows for
    2-D truth) other than its own, seeded. With one distinct value there is no other; an InputError."""
    truth = np.asarray(truth)
    values, own = np.unique(truth, axis=0, return_inverse=True)
    own = own.reshape(-1)
    if values.shape[0] < 2:
        raise InputError("the random-target check needs inputs of at least two true directions; give more sources")
    pick = np.random.default_rng(seed).integers(0, values.shape[0] - 1, size=own.size)
    return values[pick + (pick >= own)]


def _coordinates(model, truth: np.ndarray, seed: int) -> list[tuple[str, str, np.ndarray]]:
    return [(axis, axis, truth) for axis in "xyz"]


def _true_and_other(model, truth: np.ndarray, seed: int) -> list[tuple[str, str, np.ndarray]]:
    explained = EXPLAINED[model.output_kind]
    return [("truth", explained, truth), ("other", explained, other_truth(truth, seed))]


def _one_output(model, truth: np.ndarray, seed: int) -> list[tuple[str, str, np.ndarray]]:
    return []


#: The targets of the random-target check, by output kind: ``f(model, truth, seed) -> [(label, target name,
#: truth)]``; every pair of them is compared (module docs). A one-output model (an azimuth) has no other
#: target: any target is a multiple of its one output, so every map is the same up to sign and scale and
#: the check is reported as NaN.
RANDOM_TARGETS: dict[str, Callable[..., list[tuple[str, str, np.ndarray]]]] = {
    "position": _coordinates, "azimuth": _one_output, "azimuth_elevation": _true_and_other,
    "cos_sin": _true_and_other, "direction_classes": _true_and_other}


def _stage_metrics(original, stage):
    """``(metric, W)`` of :data:`METRICS` for one stage's maps against the original's (arrays or tensors)."""
    return namespace(stage).stack([spearman(abs(original), abs(stage)), pearson(original, stage),
                                   relevance_entropy(stage)])


def cascade_similarity(model: torch.nn.Module, explain: Callable[[torch.nn.Module], np.ndarray], *,
                       seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Cascading randomization of ``model`` with one explanation function.

    ``explain(module) -> relevance (W, ...)`` explains the same windows with the given module.
    Returns the stage names (``"original"``, then the layers top-down), the metrics
    ``(stage, metric, W)`` (:data:`METRICS`) and eMPRT per window (original vs the last stage).
    """
    original = np.asarray(explain(model))
    names, rows, last = ["original"], [_stage_metrics(original, original)], original
    for name, copy in cascading_copies(model, seed):
        last = np.asarray(explain(copy))
        names.append(name)
        rows.append(_stage_metrics(original, last))
    return names, np.stack(rows), emprt(original, last)


# ---------------------------------------------------------------------------------------------- the experiment
@dataclass(frozen=True)
class SanityWork:
    """What every batch of :func:`run_sanity` needs (sent once to a cluster's workers).

    Per model name: ``truth`` of every input, ``cascade`` explainers (method, stage: the
    original model, then :func:`~xai_loc.experiments.baselines.cascading_copies`), and the
    random-target check's explainers ``by_target`` (method, target) with their truths
    ``target_truth`` (:data:`RANDOM_TARGETS`).
    """

    rows: Rows
    truth: dict[str, np.ndarray]
    cascade: dict[str, list[list[Explainer]]]
    by_target: dict[str, list[list[Explainer]]]
    target_truth: dict[str, list[np.ndarray]]


def sanity_batch(batch: tuple[str, int, int], work: SanityWork):
    """The checks of one model on one batch of inputs: ``(similarity, emprt, target similarity, seconds)``.

    ``batch`` is ``(model name, start, stop)``. ``similarity`` is ``(method, stage, metric, input)``
    (:data:`METRICS` against the original's map), ``emprt`` ``(method, input)`` and ``target
    similarity`` ``(method, pair, [spearman, pearson], input)`` for every pair of the random
    targets. Nothing is drawn here, so a batch gives the same numbers wherever it runs.
    """
    name, start, stop = batch
    tic = time.perf_counter()
    x = work.rows.batch(start, stop)
    truth = work.truth[name][start:stop]
    cascade, by_target = work.cascade[name], work.by_target[name]
    n_t = len(work.target_truth[name])
    pairs = [(a, b) for a in range(n_t) for b in range(a + 1, n_t)]
    sim = np.zeros((len(cascade), len(cascade[0]), len(METRICS), stop - start))
    ratio = np.zeros((len(cascade), stop - start))
    tsim = np.zeros((len(cascade), len(pairs), 2, stop - start))
    index = np.arange(start, stop)  # seeds a sampling method by each window's place in the set, not in the batch
    for i, (stages, targets) in enumerate(zip(cascade, by_target, strict=True)):
        on_host = _on_host(stages[0])
        maps = []
        for explainer in stages:
            with explainer:
                maps.append(explainer.explain_batch(x, truth, index, to_host=on_host)["relevance"])
        sim[i] = to_host(namespace(maps[0]).stack([_stage_metrics(maps[0], r) for r in maps]))
        ratio[i] = to_host(emprt(maps[0], maps[-1]))
        maps = []
        for explainer, target_truth in zip(targets, work.target_truth[name], strict=True):
            with explainer:
                maps.append(explainer.explain_batch(x, target_truth[start:stop], index, to_host=on_host)["relevance"])
        for p, (a, b) in enumerate(pairs):
            tsim[i, p, 0] = to_host(spearman(abs(maps[a]), abs(maps[b])))
            tsim[i, p, 1] = to_host(pearson(maps[a], maps[b]))
    return sim, ratio, tsim, time.perf_counter() - tic


def _on_host(explainer: Explainer) -> bool:
    """Whether the maps are compared in NumPy (an explainer on the CPU) or stay on the explainer's device, where
    torch compares them and only the per-input numbers come back (issue 18)."""
    return explainer.device.type == "cpu"


def run_sanity(
    models: ModelSet | Mapping,
    data,
    *,
    methods: Sequence[str] | None = None,
    target: str | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    batch_size: int = 16,
    device: str = "cpu",
    n_sources: int | None = None,
    progress: bool = False,
    timing: dict | None = None,
    client: Client | None = None,
) -> xr.Dataset:
    """The sanity checks (module docs) on the inputs of a test store.

    Parameters
    ----------
    models
        A :class:`~xai_loc.experiments.modelset.ModelSet` (or ``{name: checkpoint or module}``).
    data
        A test store path of the models' family (:func:`~xai_loc.experiments.scored.scored_set`).
    methods
        ``method`` or ``lrp:composite`` names; None: :data:`DEFAULT_METHODS` for the models' family
        (:func:`~xai_loc.experiments.faithfulness.family_methods`).
    target
        What the cascade explains (:data:`xai_loc.explain.TARGETS`); None: each model's
        :data:`~xai_loc.experiments.scored.EXPLAINED`. The random-target check compares
        :data:`RANDOM_TARGETS` of the model's output kind.
    seed
        An integer >= 0; seeds the randomized layers, the other targets, the bootstrap and the methods' own
        draws (:func:`~xai_loc.experiments.base.method_seed`).
    n_boot
        Bootstrap resamples of the sources.
    n_sources
        Only a seeded spread of ``n_sources`` of the store's sources.
    timing
        A dict to fill with seconds per model (kept out of the result).
    client
        A ``distributed.Client`` (:func:`xai_loc.cluster.cluster`): the input batches of every
        model are checked on its workers (:func:`sanity_batch`), the result is the same.

    Returns
    -------
    xarray.Dataset
        ``similarity`` (model, method, stage, metric) with ``similarity_ci`` (..., bound) and
        ``source_similarity`` (..., source); ``score``, ``score_ci``, ``source_score`` (model,
        method, check[, bound | source]) for :data:`SCORES`; coordinate ``layer`` (model,
        stage). Stages are named by layer when every model has the same layers, else
        ``top-1``, ``top-2``, ... (NaN past a model's last stage).
    """
    import xarray as xr

    from xai_loc import __version__
    from xai_loc.checks import check_integer
    from xai_loc.cluster import map_blocks
    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.explain.attribute import Explainer

    check_integer("seed", seed)
    check_integer("n_boot", n_boot, minimum=1)
    scored = scored_set(data, n_sources)
    models = scored.models(ModelSet.of(models))
    scored.check(models)
    specs = family_methods(models, DEFAULT_METHODS) if methods is None else parse_methods(methods)
    labels = [method_label(*m) for m in specs]
    sources, per_source, n = scored.sources, scored.per_source, len(scored)
    names = list(models)
    kw = {"batch_size": batch_size, "device": device}
    targets, truth, layer_lists, cascade, by_target, target_truth, random_targets = {}, {}, [], {}, {}, {}, {}
    for name in names:
        module = models[name]
        targets[name] = target or default_target(module)
        truth[name] = scored.truth(module)
        variants = RANDOM_TARGETS[module.output_kind](module, truth[name], seed)
        random_targets[name] = [label for label, _, _ in variants]
        target_truth[name] = [variant_truth for _, _, variant_truth in variants]
        # the original's explainers first: a method or option refused before the randomized copies are made
        by_target[name] = [[models.explainer(name, method=m, composite=c, target=variant, **method_seed(m, seed), **kw)
                            for _, variant, _ in variants] for m, c in specs]
        stages = [("original", module), *cascading_copies(module, seed)]
        layer_lists.append([s for s, _ in stages[1:]])
        cascade[name] = [[Explainer(net, method=m, composite=c, target=targets[name], **method_seed(m, seed), **kw)
                          for _, net in stages] for m, c in specs]
    work = SanityWork(scored.rows, truth, cascade, by_target, target_truth)
    n_pairs = {name: len(t) * (len(t) - 1) // 2 for name, t in target_truth.items()}
    sim = {name: np.zeros((len(specs), 1 + len(layers), len(METRICS), n))
           for name, layers in zip(names, layer_lists, strict=True)}
    ratio = {name: np.zeros((len(specs), n)) for name in names}
    tsim = {name: np.zeros((len(specs), n_pairs[name], 2, n)) for name in names}
    spent = dict.fromkeys(names, 0.0)

    def write(batch, result) -> None:
        name, start, stop = batch
        sim[name][..., start:stop], ratio[name][:, start:stop], tsim[name][..., start:stop] = result[:3]
        spent[name] += result[3]

    map_blocks(sanity_batch, window_batches(names, n, batch_size), write, shared=work, client=client,
               size=lambda batch: batch[2] - batch[1], progress=progress, desc="sanity", unit="input")
    timings = {} if timing is None else timing
    results, explained_models = [], {}
    for name in names:
        source_sim = source_means(sim[name], per_source)  # (method, stage, metric, source)
        pairs = source_means(tsim[name], per_source).mean(1) if tsim[name].shape[1] else \
            np.full((len(specs), 2, sources.size), np.nan)  # (method, spearman | pearson, source)
        source_scores = np.stack([source_sim[:, -1, 0], source_sim[:, -1, 1], source_means(ratio[name], per_source),
                                  pairs[:, 0], pairs[:, 1]], 1)
        results.append((source_sim, source_scores))
        timings[name] = {"windows": n, "stages": sim[name].shape[1], "wall_seconds": spent[name]}
        explained_models[name] = model_record(models.provenance(name))

    n_stage = 1 + max(len(layers) for layers in layer_lists)
    same = all(layers == layer_lists[0] for layers in layer_lists)
    stage_names = ["original", *(layer_lists[0] if same else [f"top-{k}" for k in range(1, n_stage)])]
    layer = np.array([["original", *layers, *[""] * (n_stage - 1 - len(layers))] for layers in layer_lists],
                     dtype=object).astype(str)
    source_sim = np.full((len(models), len(specs), n_stage, len(METRICS), sources.size), np.nan)
    for k, (s, _) in enumerate(results):
        source_sim[k, :, : s.shape[1]] = s
    source_score = np.stack([r[1] for r in results])  # (model, method, score, source)
    return xr.Dataset(
        {
            "similarity": (("model", "method", "stage", "metric"), finite_mean(source_sim),
                           {"description": "spearman: rank correlation of |R| with the original's; pearson: "
                                           "correlation of the signed R with the original's; entropy: Shannon "
                                           "entropy (nats) of |R|/sum|R| of the stage's own map. Layers "
                                           "randomized cumulatively from the top; mean over sources"}),
            "similarity_ci": (("model", "method", "stage", "metric", "bound"),
                              bootstrap_ci(source_sim, n_boot=n_boot, seed=seed),
                              {"description": f"bootstrap 95 % interval over sources ({n_boot} resamples)"}),
            "source_similarity": (("model", "method", "stage", "metric", "source"), source_sim),
            "score": (("model", "method", "check"), finite_mean(source_score),
                      {"description": "spearman/pearson_randomized: similarity to the original at full "
                                      "randomization (lower passes); emprt: (H(randomized) - H(original)) / "
                                      f"H(original), H the entropy of the {EMPRT_BINS}-bin histogram of R over its "
                                      "range (Quantus EfficientMPRT; above 0 passes); spearman/pearson_targets: "
                                      "similarity between the maps for the random_targets (mean over pairs; lower: "
                                      "target-sensitive)"}),
            "score_ci": (("model", "method", "check", "bound"), bootstrap_ci(source_score, n_boot=n_boot, seed=seed),
                         {"description": f"bootstrap 95 % interval over sources ({n_boot} resamples)"}),
            "source_score": (("model", "method", "check", "source"), source_score),
        },
        coords={"model": names, "method": labels, "attribution": ("method", [m for m, _ in specs]),
                "composite": ("method", [c for _, c in specs]), "stage": stage_names,
                "layer": (("model", "stage"), layer), "metric": list(METRICS), "check": list(SCORES),
                "bound": ["low", "high"], "source": sources},
        attrs={
            "experiment": "sanity (cascading model randomization, eMPRT, random target)",
            "target": target_label(targets), "random_targets": json.dumps(random_targets, sort_keys=True),
            "seed": seed, "n_boot": n_boot, "emprt_bins": EMPRT_BINS, **scored.conditions, "n_windows": n,
            "n_sources": int(sources.size), "models": json.dumps(explained_models, sort_keys=True),
            "data_config": scored.ds.attrs.get("config", ""), "xai_loc_version": __version__,
        },
    )


# ---------------------------------------------------------------------------------------------- tables
_COLUMNS = (("Spearman abs(R) randomized", "spearman_randomized"), ("Pearson R randomized", "pearson_randomized"),
            ("eMPRT", "emprt"), ("Spearman abs(R) other target", "spearman_targets"),
            ("Pearson R other target", "pearson_targets"))


def _cells(ds, model) -> tuple[list[str], list[list[str]]]:
    header = ["method"] + [c for c, _ in _COLUMNS]
    rows = []
    for method in ds["method"].values:
        row = [str(method)]
        for _, score in _COLUMNS:
            sel = {"model": model, "method": method, "check": score}
            low, high = ds["score_ci"].sel(sel).values
            row.append(interval_cell(float(ds["score"].sel(sel)), low, high))
        rows.append(row)
    return header, rows


def sanity_table(ds: xr.Dataset) -> str:
    """Markdown: per model, method x score with bootstrap 95 % intervals over sources; the inputs named as the
    figures' titles name them (:func:`~xai_loc.experiments.base.input_noun`: windows, or inputs of a binaural model)."""
    lines = [f"Sanity checks over {int(ds.attrs['n_sources'])} sources ({int(ds.attrs['n_windows'])} "
             f"{input_noun(ds.attrs)}). "
             "Similarity to the original relevance with every layer randomized (lower passes), eMPRT "
             "(relative rise in explanation complexity from the original to the randomized model, above 0 "
             "passes), and similarity between the maps for other targets (x, y, z for positions; the truth and "
             "another true direction for direction models; lower: target-sensitive). Intervals: bootstrap 95 % "
             "over sources.", ""]
    for model in ds["model"].values:
        header, rows = _cells(ds, model)
        lines += [f"### {markdown_text(model)}", "", markdown_row(header), "|---" * len(header) + "|"]
        lines += [markdown_row(r) for r in rows] + [""]
    return "\n".join(lines) + "\n"


def sanity_latex(ds: xr.Dataset) -> str:
    """LaTeX tabulars of :func:`sanity_table`, one per model."""
    parts = []
    for model in ds["model"].values:
        parts += latex_tabular(str(model), *_cells(ds, model))
    return "\n".join(parts)


class SanityExperiment(Experiment):
    """:func:`run_sanity`: ``sanity.nc``, ``sanity.md``, ``sanity.tex`` and ``sanity.timing.json``;
    figure ``sanity.png``/``.pdf``."""

    name = "sanity"
    result_file = "sanity.nc"
    what = "sanity-check result"
    command = "sanity"
    required = {"similarity": ("model", "method", "stage", "metric"),
                "similarity_ci": ("model", "method", "stage", "metric", "bound"), "score": ("model", "method", "check"),
                "score_ci": ("model", "method", "check", "bound")}
    nonempty = ("model", "method", "stage")
    table_files = {"markdown": "sanity.md", "latex": "sanity.tex"}
    timed = True

    def run(self, models: ModelSet | Mapping, data: Any, **options: Any) -> xr.Dataset:
        return run_sanity(models, data, **options)

    def tables(self, ds: xr.Dataset) -> dict[str, str]:
        return {"markdown": sanity_table(ds), "latex": sanity_latex(ds)}
