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
        ``M x T`` samples (ranks by a stable argsort applied twice, so ties get distinct
        ordinal ranks in sample order; :func:`spearman`);
    ``pearson``
        Pearson correlation of the signed relevance with the original's (:func:`pearson`);
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
    (:data:`~xai_loc.experiments.scored.EXPLAINED`). ``spearman`` and ``pearson`` between the
    maps of every pair of targets (:data:`RANDOM_TARGETS`). A target-sensitive method gives
    different maps (low similarity).

Any family's test store is checked (:func:`~xai_loc.experiments.scored.scored_set`); the cascade
explains each model's :data:`~xai_loc.experiments.scored.EXPLAINED` target unless one is given.
Every number is per input, averaged per source (each source, sound or utterance weighted
once), with bootstrap 95 % intervals over sources
(:func:`~xai_loc.experiments.faithfulness.bootstrap_ci`). All metrics are vectorized over
inputs (no Python loop over inputs or samples).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from xai_loc.errors import InputError
from xai_loc.experiments.base import Experiment, latex_tabular
from xai_loc.experiments.baselines import cascading_copies
from xai_loc.experiments.faithfulness import bootstrap_ci, family_methods, method_label, parse_methods, target_label
from xai_loc.experiments.scored import EXPLAINED, default_target, scored_set

if TYPE_CHECKING:
    import xarray as xr

    from xai_loc.experiments.modelset import ModelSet

__all__ = ["DEFAULT_METHODS", "EMPRT_BINS", "RANDOM_TARGETS", "SanityExperiment", "cascade_similarity", "emprt",
           "histogram_entropy", "other_truth", "pearson", "relevance_entropy", "run_sanity", "sanity_latex",
           "sanity_table", "spearman"]

#: The default attribution methods of the sanity checks.
DEFAULT_METHODS = ("lrp:paper", "lrp:epsilon_plus_flat", "integrated_gradients", "input_x_gradient", "saliency")
#: Per-stage metrics of the cascade.
METRICS = ("spearman", "pearson", "entropy")
#: Bins of eMPRT's explanation histogram (Quantus's default).
EMPRT_BINS = 100
#: Summary scores of the table.
SCORES = ("spearman_randomized", "pearson_randomized", "emprt", "spearman_targets", "pearson_targets")


# ---------------------------------------------------------------------------------------------- metrics
def _flat(a) -> np.ndarray:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    return a.reshape(a.shape[0], -1).astype(np.float64)


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ordinal ranks along the last axis: a stable argsort applied twice."""
    return np.argsort(np.argsort(a, axis=-1, kind="stable"), axis=-1, kind="stable").astype(np.float64)


def pearson(a, b) -> np.ndarray:
    """Pearson correlation of each window's map in ``a`` with its map in ``b`` (``(W, ...)`` each): ``(W,)``;
    NaN where a map is constant."""
    a, b = _flat(a), _flat(b)
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))


def spearman(a, b) -> np.ndarray:
    """Spearman rank correlation per window of ``a`` and ``b`` (``(W, ...)``, ranked as given; pass
    ``|R|`` for the cascade): ``(W,)``. Ties get ordinal ranks (stable argsort twice)."""
    return pearson(_ranks(_flat(a)), _ranks(_flat(b)))


def relevance_entropy(relevance) -> np.ndarray:
    """Complexity per window: Shannon entropy (nats) of ``p = |R| / sum |R|``: ``(W,)``; 0 for one non-zero
    sample, ``log N`` for a uniform map, NaN for an all-zero map."""
    a = np.abs(_flat(relevance))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = a / a.sum(-1, keepdims=True)
        return -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(-1) + 0.0 * p.sum(-1)


def histogram_entropy(relevance, n_bins: int = EMPRT_BINS) -> np.ndarray:
    """eMPRT's complexity per window: entropy (nats) of the histogram of the signed values in ``n_bins``
    equal bins over ``[min, max]`` (the maximum in the last bin, as ``numpy.histogram``): ``(W,)``; 0 for
    a constant map. Vectorized over windows (one ``bincount``)."""
    a = _flat(relevance)
    w, n = a.shape
    low, high = a.min(-1, keepdims=True), a.max(-1, keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    bins = np.clip(((a - low) * (n_bins / span)).astype(np.int64), 0, n_bins - 1)  # numpy.histogram's arithmetic
    counts = np.bincount((bins + n_bins * np.arange(w)[:, None]).ravel(), minlength=w * n_bins)
    q = counts.reshape(w, n_bins) / n
    return -np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0).sum(-1)


def emprt(original, randomized, n_bins: int = EMPRT_BINS) -> np.ndarray:
    """eMPRT per window: ``(H(randomized) - H(original)) / H(original)`` of :func:`histogram_entropy`
    (module docs); NaN where ``H(original)`` is 0."""
    h_original = histogram_entropy(original, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(h_original > 0, (histogram_entropy(randomized, n_bins) - h_original) / h_original, np.nan)


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


def _coordinates(model, target: str, truth: np.ndarray, seed: int) -> list[tuple[str, str, np.ndarray]]:
    return [(axis, axis, truth) for axis in "xyz"]


def _true_and_other(model, target: str, truth: np.ndarray, seed: int) -> list[tuple[str, str, np.ndarray]]:
    explained = EXPLAINED[model.output_kind]
    return [("truth", explained, truth), ("other", explained, other_truth(truth, seed))]


#: The targets of the random-target check, by output kind: ``f(model, target, truth, seed) -> [(label,
#: target name, truth)]``; every pair of them is compared (module docs).
RANDOM_TARGETS: dict[str, Callable[..., list[tuple[str, str, np.ndarray]]]] = {
    "position": _coordinates, "azimuth": _true_and_other, "azimuth_elevation": _true_and_other,
    "cos_sin": _true_and_other, "direction_classes": _true_and_other}


def _stage_metrics(original: np.ndarray, stage: np.ndarray) -> np.ndarray:
    """``(metric, W)`` of :data:`METRICS` for one stage's maps against the original's."""
    return np.stack([spearman(np.abs(original), np.abs(stage)), pearson(original, stage), relevance_entropy(stage)])


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
def _finite_mean(values: np.ndarray, per_source: np.ndarray) -> np.ndarray:
    """Per-source means ``(..., source)`` of per-input ``values (..., input)`` over the finite inputs only
    (NaN for a source without any)."""
    finite = np.isfinite(values)
    weight = finite @ (per_source > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(weight > 0, np.where(finite, values, 0.0) @ (per_source > 0) / weight, np.nan)


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
        Seeds the randomized layers and the bootstrap.
    n_sources
        Only a seeded spread of ``n_sources`` of the store's sources.
    timing
        A dict to fill with seconds per model (kept out of the result).

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
    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.explain.attribute import Explainer
    from xai_loc.progress import tqdm

    scored = scored_set(data, n_sources)
    models = scored.models(ModelSet.of(models))
    specs = family_methods(models, DEFAULT_METHODS) if methods is None else parse_methods(methods)
    labels = [method_label(*m) for m in specs]
    sources, per_source, n = scored.sources, scored.per_source, len(scored)
    timings = {} if timing is None else timing
    results, layer_lists, explained_models, targets, random_targets = [], [], {}, {}, {}
    for name in models:
        module = models[name]
        targets[name] = target or default_target(module)
        truth_all = scored.truth(module)
        variants = RANDOM_TARGETS[module.output_kind](module, targets[name], truth_all, seed)
        random_targets[name] = [label for label, _, _ in variants]
        pairs = [(a, b) for a in range(len(variants)) for b in range(a + 1, len(variants))]
        kw = {"batch_size": batch_size, "device": device}
        stages = [("original", module), *cascading_copies(module, seed)]
        layer_lists.append([s for s, _ in stages[1:]])
        n_s = len(stages)
        sim = np.zeros((len(specs), n_s, len(METRICS), n))
        ratio = np.zeros((len(specs), n))
        tsim = np.zeros((len(specs), len(pairs), 2, n))
        tic = time.perf_counter()
        with tqdm(total=n, disable=not progress, desc=f"sanity {name}", unit="input") as bar:
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                x = scored.rows.batch(start, stop)
                truth = truth_all[start:stop]
                for i, (m, c) in enumerate(specs):
                    maps = []
                    for _, net in stages:
                        with Explainer(net, method=m, composite=c, target=targets[name], **kw) as explainer:
                            maps.append(explainer.explain_batch(x, truth)["relevance"])
                    sim[i, ..., start:stop] = np.stack([_stage_metrics(maps[0], r) for r in maps])
                    ratio[i, start:stop] = emprt(maps[0], maps[-1])
                    by_target = []
                    for _, variant, variant_truth in variants:
                        with models.explainer(name, method=m, composite=c, target=variant, **kw) as explainer:
                            by_target.append(explainer.explain_batch(x, variant_truth[start:stop])["relevance"])
                    for p, (a, b) in enumerate(pairs):
                        tsim[i, p, 0, start:stop] = spearman(np.abs(by_target[a]), np.abs(by_target[b]))
                        tsim[i, p, 1, start:stop] = pearson(by_target[a], by_target[b])
                bar.update(stop - start)
        with np.errstate(invalid="ignore"):
            source_sim = sim @ per_source  # (method, stage, metric, source)
            source_scores = np.stack([source_sim[:, -1, 0], source_sim[:, -1, 1], _finite_mean(ratio, per_source),
                                      tsim[:, :, 0].mean(1) @ per_source, tsim[:, :, 1].mean(1) @ per_source], 1)
        results.append((source_sim, source_scores))
        timings[name] = {"windows": n, "stages": n_s, "wall_seconds": time.perf_counter() - tic}
        explained_models[name] = {k: v for k, v in models.provenance(name).items()
                                  if k in ("model", "checkpoint", "checkpoint_digest", "model_digest")}

    n_stage = 1 + max(len(layers) for layers in layer_lists)
    same = all(layers == layer_lists[0] for layers in layer_lists)
    stage_names = ["original", *(layer_lists[0] if same else [f"top-{k}" for k in range(1, n_stage)])]
    layer = np.array([["original", *layers, *[""] * (n_stage - 1 - len(layers))] for layers in layer_lists],
                     dtype=object).astype(str)
    source_sim = np.full((len(models), len(specs), n_stage, len(METRICS), sources.size), np.nan)
    for k, (s, _) in enumerate(results):
        source_sim[k, :, : s.shape[1]] = s
    source_score = np.stack([r[1] for r in results])  # (model, method, score, source)
    names = list(models)
    return xr.Dataset(
        {
            "similarity": (("model", "method", "stage", "metric"), source_sim.mean(-1),
                           {"description": "spearman: rank correlation of |R| with the original's; pearson: "
                                           "correlation of the signed R with the original's; entropy: Shannon "
                                           "entropy (nats) of |R|/sum|R| of the stage's own map. Layers "
                                           "randomized cumulatively from the top; mean over sources"}),
            "similarity_ci": (("model", "method", "stage", "metric", "bound"),
                              bootstrap_ci(source_sim, n_boot=n_boot, seed=seed),
                              {"description": f"bootstrap 95 % interval over sources ({n_boot} resamples)"}),
            "source_similarity": (("model", "method", "stage", "metric", "source"), source_sim),
            "score": (("model", "method", "check"), source_score.mean(-1),
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
            row.append(f"{float(ds['score'].sel(sel)):.3f} [{low:.3f}, {high:.3f}]")
        rows.append(row)
    return header, rows


def sanity_table(ds: xr.Dataset) -> str:
    """Markdown: per model, method x score with bootstrap 95 % intervals over sources."""
    lines = [f"Sanity checks over {int(ds.attrs['n_sources'])} sources ({int(ds.attrs['n_windows'])} windows). "
             "Similarity to the original relevance with every layer randomized (lower passes), eMPRT "
             "(relative rise in explanation complexity from the original to the randomized model, above 0 "
             "passes), and similarity between the maps for other targets (x, y, z for positions; the truth and "
             "another true direction for direction models; lower: target-sensitive). Intervals: bootstrap 95 % "
             "over sources.", ""]
    for model in ds["model"].values:
        header, rows = _cells(ds, model)
        lines += [f"### {model}", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
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
    required = ("similarity", "score")
    table_files = {"markdown": "sanity.md", "latex": "sanity.tex"}
    timed = True

    def run(self, models: ModelSet | Mapping, data: Any, **options: Any) -> xr.Dataset:
        return run_sanity(models, data, **options)

    def tables(self, ds: xr.Dataset) -> dict[str, str]:
        return {"markdown": sanity_table(ds), "latex": sanity_latex(ds)}
