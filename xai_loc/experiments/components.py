"""What the relevance falls on: direct sound, early reflections, late reverberation or sensor noise.

The claim that end-to-end localizers "denoise and de-reverberate" is a claim about which part
of the input their output depends on. The simulator knows each window as the sum of its
:data:`~xai_loc.acoustics.render.COMPONENTS` ``x = x_direct + x_early + x_late + x_noise``
(:func:`~xai_loc.data.components.store_components`; early reflections end 50 ms after each
microphone's direct arrival), so a window's relevance ``R`` (``M x T``, one value per sample)
can be split over them. Two splits, because attribution methods differ in what a sample's
relevance is:

``linear``
    ``R_c = R * x_c / x``. For the methods whose relevance is the input times a (modified)
    gradient, ``R = x * g`` - gradient x input, integrated gradients from the zero baseline
    (``g`` the path-averaged gradient), LRP with epsilon or z rules down to the input -
    this is exactly ``x_c * g``: the first-order contribution of component ``c`` to the
    explained output, and the four parts add up to ``R``. For other methods (saliency,
    occlusion, LRP whose first layer uses the flat or w-square rule) ``R / x`` is not a
    gradient and this split is only a convention; near-cancelling samples (``x ~ 0``) can
    then inflate it.
``power``
    ``R_c = R * x_c**2 / sum_c' x_c'**2``: a sample's relevance is shared in proportion to the
    components' power at that sample. Defined for every method, with weights in [0, 1]; it
    says where the relevant samples' energy comes from, not what the model computes from it.

Per window, the **share** of component ``c`` is ``sum |R_c| / sum_c' sum |R_c'|`` (so shares
are in [0, 1] and add up to 1) and, for the linear split, its **contribution** is
``sum R_c / sum R`` (the fraction of the summed relevance, which for conservative methods is
the explained output; NaN where ``|sum R|`` is below :data:`CANCELLED` of ``sum |R|``, since
a window whose relevance cancels to rounding would give any ratio). The linear split is
reported only for the methods where it is exact (:func:`linear_split_exact`); for the others
it is NaN, because ``R / x`` blows up where the window nearly cancels and a handful of samples
would decide the share.

What a share is compared with is the **model-free reference** of the same split: the share a
relevance that ignores the model gets - ``|R| = const`` for the power split (the mean over
samples of each component's power fraction), ``R = x`` (a constant gradient) for the linear
split (``sum |x_c| / sum_c' sum |x_c'|``). The components' **energy share**
``sum x_c**2 / sum_c' sum x_c'**2`` describes the signal but is not that reference (it weighs
loud samples more than either split does). The shares of the randomized model's relevance
say what the input alone produces through an untrained network of the same architecture. A
model that listens to the direct sound puts more of its share there than the reference and
than its randomized copy. All values are per-source means (each source once; windows where a
share is undefined are skipped) with bootstrap 95 % intervals over the sources where it is
defined.
"""
from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from xai_loc.acoustics.render import COMPONENTS, EARLY_END_S
from xai_loc.experiments.arrays import namespace, to_host
from xai_loc.experiments.base import (
    Experiment,
    interval_cell,
    latex_tabular,
    markdown_row,
    markdown_text,
    method_seed,
    model_record,
)
from xai_loc.experiments.faithfulness import bootstrap_ci, finite_mean, method_label, parse_methods, source_means
from xai_loc.experiments.scored import scored_set

if TYPE_CHECKING:
    import xarray as xr
    from distributed import Client

    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.explain.attribute import Explainer

__all__ = ["COMPONENT_METHODS", "ComponentsExperiment", "ComponentsWork", "SPLITS", "component_shares",
           "components_source", "components_table", "energy_shares", "run_components"]

#: Default methods: the paper's composite, a conservative LRP variant and the x * gradient family.
COMPONENT_METHODS = ("lrp:paper", "lrp:epsilon_plus_flat", "integrated_gradients", "input_x_gradient", "saliency")
#: How a sample's relevance is split over the components (module docs).
SPLITS = ("linear", "power")
#: Summed relevance below this fraction of the summed |relevance| counts as cancelled (to about the rounding of
#: float32 relevance summed over a window): no contribution ratio.
CANCELLED = 1e-6


#: Methods whose relevance is the input times a (modified) gradient from the zero baseline, ``R = x * g``.
X_TIMES_GRADIENT = ("input_x_gradient", "integrated_gradients", "deeplift")
#: First-layer LRP rules whose input relevance is not proportional to the input (they ignore x or subtract a box).
_NOT_PROPORTIONAL_RULES = ("wsquare", "flat", "zbox")
#: Composites with a fixed first-layer rule that keeps the input relevance proportional to the input
#: (epsilon and alpha-beta: ``R_i = x_i * w_ij * ...``); others name theirs in the option ``first_rule``.
_PROPORTIONAL_COMPOSITES = ("epsilon", "epsilon_alpha2_beta1")


def linear_split_exact(method: str, composite: str, composite_params: dict[str, Any] | None = None) -> bool:
    """Whether ``R * x_c / x`` is each component's exact first-order contribution for this method.

    True for :data:`X_TIMES_GRADIENT` and for LRP whose first layer keeps the input relevance
    proportional to the input (epsilon, z-plus, gamma, alpha-beta); False for saliency,
    occlusion, gradient SHAP (random baselines) and LRP with a flat, w-square or box first rule
    (the paper composite and ``epsilon_plus_flat``).
    """
    if method in X_TIMES_GRADIENT:
        return True
    if method != "lrp":
        return False
    rule = (composite_params or {}).get("first_rule")
    return rule not in _NOT_PROPORTIONAL_RULES if rule is not None else composite in _PROPORTIONAL_COMPOSITES


def _ratio(num, den, fill: float, where):
    """``num / den`` where ``where`` holds, else ``fill`` (no division where it does not)."""
    xp = namespace(num)
    return xp.where(where, num / xp.where(where, den, 1.0), fill)


def _weights(components, split: str):
    """``(C, W, M, T)`` weights of each component per sample (module docs), summing to 1 over ``C``."""
    even = 1.0 / components.shape[0]  # x == 0: R is 0 for x * g methods
    if split == "linear":
        total = components.sum(0)
        return _ratio(components, total, even, total != 0)
    power = components**2
    total = power.sum(0)
    return _ratio(power, total, even, total > 0)


def component_shares(relevance, components):
    """Shares of relevance on each component, per split and window.

    Parameters
    ----------
    relevance
        ``(W, M, T)`` relevance of ``W`` windows.
    components
        ``(C, W, M, T)`` their components (summing to the windows); NumPy, or a tensor (then
        ``relevance`` is one on its device, and so are the results).

    Returns
    -------
    share, contribution
        ``share`` ``(split, C, W)``: ``sum |R_c| / sum_c sum |R_c|`` for each split of
        :data:`SPLITS`; ``contribution`` ``(C, W)``: ``sum R_c / sum R`` of the linear split (NaN
        where ``|sum R|`` is at most :data:`CANCELLED` of ``sum |R|``, 0 included).
    """
    xp = namespace(components)
    rel = (relevance.to(torch.float64) if xp is torch else np.asarray(relevance, dtype=np.float64))[None]
    shares = []
    contribution = None
    for split in SPLITS:
        part = rel * _weights(components, split)
        mass = xp.abs(part).sum((2, 3))
        total = mass.sum(0)[None]
        shares.append(_ratio(mass, total, np.nan, total > 0))
        if split == "linear":
            summed, whole = part.sum((2, 3)), rel.sum((2, 3))
            contribution = _ratio(summed, whole, np.nan, abs(whole) > CANCELLED * xp.abs(rel).sum((2, 3)))
    return xp.stack(shares), contribution


def reference_shares(components):
    """``(split, C, W)`` model-free shares: what ``|R| = const`` gets from the power split and ``R = x`` from
    the linear split (:data:`SPLITS` order), per window."""
    power = _weights(components, "power").mean((2, 3))
    amplitude = namespace(components).abs(components).sum((2, 3))
    return namespace(components).stack([amplitude / amplitude.sum(0)[None], power])


def energy_shares(components):
    """``(C, W)`` energy share ``sum x_c**2 / sum_c sum x_c**2`` of each component per window."""
    energy = (components**2).sum((2, 3))
    return energy / energy.sum(0)[None]


@dataclass(frozen=True)
class ComponentsWork:
    """What every source of :func:`run_components` needs (sent once to a cluster's workers).

    ``explainers`` are per model name, ``(ordering, method)``: the model's, then its randomized
    copy's; ``exact`` says per method whether its linear split is kept (:func:`linear_split_exact`);
    ``corpus`` is the store's speech corpus (None: the shipped one).
    """

    ds: xr.Dataset
    truth: np.ndarray
    explainers: dict[str, list[list[Explainer]]]
    exact: np.ndarray
    batch_size: int
    device: str
    early_end: float
    corpus: Any = None


def components_source(sid: int, work: ComponentsWork):
    """One source's windows rendered by component and every model's relevance split over them.

    Returns ``(energy, reference, share, contribution, seconds)`` for the source's ``W``
    windows (store order): :func:`energy_shares` ``(C, W)``, :func:`reference_shares` ``(split,
    C, W)``, ``share`` ``(model, method, ordering, split, C, W)``, ``contribution`` ``(model,
    method, ordering, C, W)`` (linear split; NaN where it is not exact) and the explanation
    seconds per model. The models sit on the device for the whole source.
    """
    from xai_loc.cluster import load_here
    from xai_loc.data.components import store_components
    from xai_loc.explain.attribute import placed
    from xai_loc.runtime import resolve_device

    rows = np.flatnonzero(load_here(work.ds["source_id"].reset_coords(drop=True)).values == sid)
    windows = load_here(work.ds.isel(window=rows))
    comp = store_components(windows, [sid], work.corpus, device=work.device, early_end=work.early_end,
                            to_host=False)
    on_host = isinstance(comp, np.ndarray)
    dev = resolve_device(work.device)
    first = next(iter(work.explainers.values()))  # (ordering, method)
    share = np.zeros((len(work.explainers), len(first[0]), len(first), len(SPLITS), len(COMPONENTS), rows.size))
    contribution = np.zeros(share.shape[:3] + share.shape[4:])
    seconds = []
    with contextlib.ExitStack() as stack:
        for groups in work.explainers.values():  # each model and its randomized copy on the device once
            for group in groups:
                stack.enter_context(placed(group[0].model, dev))
        x = torch.as_tensor(windows["signals"].values).to(dev)  # sent once for every explainer
        truth = work.truth[rows]
        for k, groups in enumerate(work.explainers.values()):
            tic = time.perf_counter()
            for o, group in enumerate(groups):
                for i, explainer in enumerate(group):
                    with explainer:  # the relevance stays where the components are
                        rel = [explainer.explain_batch(x[b:b + work.batch_size], truth[b:b + work.batch_size],
                                                       rows[b:b + work.batch_size], to_host=on_host)["relevance"]
                               for b in range(0, rows.size, work.batch_size)]
                    shares = component_shares(np.concatenate(rel) if on_host else torch.cat(rel), comp)
                    share[k, i, o], contribution[k, i, o] = (to_host(v) for v in shares)
                    if not work.exact[i]:  # R / x is no gradient: the linear split would be decided by x ~ 0
                        share[k, i, o, 0], contribution[k, i, o] = np.nan, np.nan
            seconds.append(time.perf_counter() - tic)
    return to_host(energy_shares(comp)), to_host(reference_shares(comp)), share, contribution, seconds


def run_components(
    models: ModelSet | Mapping,
    data,
    *,
    methods: Sequence[str] = COMPONENT_METHODS,
    target: str = "truth",
    randomized_baseline: bool = True,
    early_end: float = EARLY_END_S,
    seed: int = 0,
    n_boot: int = 1000,
    batch_size: int = 16,
    device: str = "cpu",
    n_sources: int | None = None,
    corpus=None,
    progress: bool = False,
    timing: dict | None = None,
    client: Client | None = None,
) -> xr.Dataset:
    """Relevance shares on the simulator's components (module docs) for the windows of a dataset store.

    Parameters
    ----------
    models
        A :class:`~xai_loc.experiments.modelset.ModelSet` (or ``{name: checkpoint or module}``).
    data
        A dataset store path (its windows are rendered again by component and checked to add up).
    methods
        ``method`` or ``lrp:composite`` names.
    target
        What is explained (:data:`xai_loc.explain.TARGETS`).
    randomized_baseline
        Also split the relevance of each model's randomized copy (seed ``seed``).
    early_end
        Early/late boundary after the direct arrival, in seconds.
    seed
        Seeds the randomized copies, the bootstrap and the methods' own draws
        (:func:`~xai_loc.experiments.base.method_seed`).
    device
        Where the models explain (each placed there once per source) and the components'
        responses are made (:func:`~xai_loc.data.components.store_components`).
    n_sources
        Only a seeded spread of ``n_sources`` of the store's sources.
    corpus
        The :class:`~xai_loc.acoustics.speech.SpeechCorpus` the store was simulated from (default:
        the shipped corpus; a store of another corpus is refused without it).
    timing
        A dict to fill with seconds per model (kept out of the result).
    client
        A ``distributed.Client`` (:func:`xai_loc.cluster.cluster`): the sources are rendered and
        split on its workers (:func:`components_source`), the result is the same.

    Returns
    -------
    xarray.Dataset
        ``share`` and ``share_ci`` (model, method, ordering, split, component[, bound]),
        ``contribution`` (model, method, ordering, component), ``energy_share`` and its interval
        (component), per-source values; provenance attrs, no wall-clock values.
    """
    import xarray as xr

    from xai_loc import __version__
    from xai_loc.checks import check_integer
    from xai_loc.cluster import map_blocks
    from xai_loc.data.components import store_corpus
    from xai_loc.experiments.modelset import ModelSet

    n_boot = check_integer("n_boot", n_boot, minimum=1)
    models = ModelSet.of(models)
    specs = parse_methods(methods)
    scored = scored_set(data, n_sources)
    ds, sources, per_source = scored.ds, scored.sources, scored.per_source
    models.check_recording(ds.attrs.get("fs"), ds["mic_position"].values if "mic_position" in ds.variables else None,
                           "the scored store")
    store_corpus(ds, corpus)  # a store of another corpus is refused before any model is explained
    source_of_window = ds["source_id"].values
    orderings = ("relevance", "randomized") if randomized_baseline else ("relevance",)
    n_c, n_s, n_m, n_o = len(COMPONENTS), len(SPLITS), len(specs), len(orderings)
    energy = np.zeros((n_c, source_of_window.size))
    reference = np.zeros((n_s, n_c, source_of_window.size))
    timings = {} if timing is None else timing
    explained_models = {}
    explainers = {}
    for name in models:
        kw = {"target": target, "batch_size": batch_size, "device": device}
        explainers[name] = [[models.explainer(name, method=m, composite=c, **method_seed(m, seed), **kw)
                             for m, c in specs]]
        if randomized_baseline:
            explainers[name].append([models.explainer(name, randomized_seed=seed, method=m, composite=c,
                                                      **method_seed(m, seed), **kw) for m, c in specs])
        explained_models[name] = model_record(explainers[name][0][0].attrs)
    exact = np.array([linear_split_exact(m, c, e.composite_params)
                      for (m, c), e in zip(specs, explainers[next(iter(models))][0], strict=True)])
    work = ComponentsWork(ds, scored.positions().astype(np.float64), explainers, exact, batch_size, device,
                          early_end, corpus)
    per_window_share = np.zeros((len(models), n_m, n_o, n_s, n_c, source_of_window.size))
    per_window_contrib = np.zeros((len(models), n_m, n_o, n_c, source_of_window.size))
    spent = dict.fromkeys(models, 0.0)

    def write(sid, result) -> None:
        rows = np.flatnonzero(source_of_window == sid)
        energy[:, rows], reference[..., rows], per_window_share[..., rows], per_window_contrib[..., rows] = result[:4]
        for name, seconds in zip(models, result[4], strict=True):
            spent[name] += seconds

    map_blocks(components_source, [int(sid) for sid in sources], write, shared=work, client=client,
               progress=progress, desc="components", unit="src")
    share = source_means(per_window_share, per_source)
    contribution = source_means(per_window_contrib, per_source)
    energy_source = energy @ per_source
    reference_source = reference @ per_source
    for name in models:
        timings[name] = {"windows": int(source_of_window.size), "explain_seconds": spent[name]}
    labels = [method_label(*m) for m in specs]
    dims = ("model", "method", "ordering")
    return xr.Dataset(
        {
            "share": ((*dims, "split", "component"), finite_mean(share),
                      {"description": "sum |R_c| / sum_c sum |R_c| per window, mean over sources (each once); "
                                      "R_c: the split of each sample's relevance over the components "
                                      "(linear: R x_c / x, NaN where the method is not x * gradient; power: "
                                      "R x_c^2 / sum x_c'^2)"}),
            "share_ci": ((*dims, "split", "component", "bound"), bootstrap_ci(share, n_boot=n_boot, seed=seed),
                         {"description": f"bootstrap 95 % interval over sources ({n_boot} resamples)"}),
            "source_share": ((*dims, "split", "component", "source"), share),
            "contribution": ((*dims, "component"), finite_mean(contribution),
                             {"description": "sum R_c / sum R of the linear split: the component's fraction of "
                                             "the summed relevance (exact first-order contribution for x * g "
                                             "methods)"}),
            "energy_share": (("component",), energy_source.mean(-1),
                             {"description": "sum x_c^2 / sum_c sum x_c^2 per window, mean over sources"}),
            "energy_share_ci": (("component", "bound"), bootstrap_ci(energy_source, n_boot=n_boot, seed=seed)),
            "source_energy_share": (("component", "source"), energy_source),
            "reference_share": (("split", "component"), reference_source.mean(-1),
                                {"description": "model-free share per split: linear, R = x (sum |x_c| / sum |x|); "
                                                "power, |R| = const (mean over samples of x_c^2 / sum x_c'^2)"}),
            "reference_share_ci": (("split", "component", "bound"),
                                   bootstrap_ci(reference_source, n_boot=n_boot, seed=seed)),
            "linear_split_exact": (("method",), exact,
                                   {"description": "whether R x_c / x is the exact first-order contribution "
                                                   "(x * gradient methods); the linear split is NaN otherwise"}),
        },
        coords={"model": list(models), "method": labels, "attribution": ("method", [m for m, _ in specs]),
                "composite": ("method", [c for _, c in specs]), "ordering": list(orderings),
                "split": list(SPLITS), "component": list(COMPONENTS), "bound": ["low", "high"],
                "source": sources},
        attrs={
            "experiment": "relevance shares on direct sound, early reflections, late reverberation and noise",
            "target": target, "seed": seed, "n_boot": n_boot, "early_end_s": float(early_end),
            "t60": float(ds.attrs.get("t60", np.nan)), "snr": float(ds.attrs.get("snr", np.nan)),
            "n_windows": int(source_of_window.size), "n_sources": int(sources.size),
            "models": json.dumps(explained_models, sort_keys=True),
            "data_config": ds.attrs.get("config", ""), "xai_loc_version": __version__,
        },
    )


def _cells(value, ci) -> list[str]:
    """One cell per component: ``value`` (component) with its interval ``ci`` (component, bound), in labelled order
    (a file written with its dimensions transposed tabulates alike)."""
    ci = ci.transpose("component", "bound").values
    return [interval_cell(v, lo, hi) for v, (lo, hi) in zip(value.values, ci, strict=True)]


def _rows(ds: xr.Dataset, model: str, split: str) -> list[list[str]]:
    """Per method (and its randomized model), then the model-free reference and the energy shares."""
    rows = []
    for method in ds["method"].values:
        for ordering in ds["ordering"].values:
            sel = {"model": model, "method": method, "ordering": ordering, "split": split}
            label = str(method) if ordering == "relevance" else f"{method} (randomized model)"
            if split == "linear" and not bool(ds["linear_split_exact"].sel({"method": method})):
                label += " (not x * gradient: n/a)"
            rows.append([label, *_cells(ds["share"].sel(sel), ds["share_ci"].sel(sel))])
    rows.append(["model-free reference", *_cells(ds["reference_share"].sel(split=split),
                                                 ds["reference_share_ci"].sel(split=split))])
    rows.append(["energy share (signal)", *_cells(ds["energy_share"], ds["energy_share_ci"])])
    return rows


def components_table(ds: xr.Dataset) -> str:
    """Markdown: per model and split, the share of |relevance| on each component beside the model-free
    reference of the split and the components' energy shares."""
    comps = [str(c) for c in ds["component"].values]
    lines = [f"Share of |relevance| per component over {int(ds.attrs['n_sources'])} sources "
             f"({int(ds.attrs['n_windows'])} windows; early reflections end {1000 * ds.attrs['early_end_s']:.0f} ms "
             "after the direct arrival). Compare each method with the model-free reference of its split (what a "
             "relevance that ignores the model gets) and with its randomized model. Intervals: bootstrap 95 % "
             "over sources.", ""]
    for model in ds["model"].values:
        for split in ds["split"].values:
            lines += [f"### {markdown_text(model)}, {split} split", "", markdown_row(["method", *comps]),
                      "|---" * (len(comps) + 1) + "|"]
            lines += [markdown_row(r) for r in _rows(ds, model, split)]
            lines.append("")
    return "\n".join(lines) + "\n"


def components_latex(ds: xr.Dataset) -> str:
    """LaTeX tabulars of :func:`components_table`, one per model and split."""
    comps = [str(c) for c in ds["component"].values]
    parts = []
    for model in ds["model"].values:
        for split in ds["split"].values:
            parts += latex_tabular(f"{model}, {split} split", ["method", *comps], _rows(ds, model, split))
    return "\n".join(parts)


class ComponentsExperiment(Experiment):
    """:func:`run_components`: ``components.nc``, ``components.md``, ``components.tex`` and
    ``components.timing.json``; figure ``components.png``/``.pdf``."""

    name = "components"
    result_file = "components.nc"
    what = "component shares result"
    command = "components"
    required = {"share": ("model", "method", "ordering", "split", "component"),
                "share_ci": ("model", "method", "ordering", "split", "component", "bound"),
                "energy_share": ("component",), "energy_share_ci": ("component", "bound"),
                "reference_share": ("split", "component"), "reference_share_ci": ("split", "component", "bound"),
                "linear_split_exact": ("method",)}
    nonempty = ("model", "method", "ordering", "split", "component")
    table_files = {"markdown": "components.md", "latex": "components.tex"}
    timed = True

    def run(self, models: ModelSet | Mapping, data: Any, **options: Any) -> xr.Dataset:
        return run_components(models, data, **options)

    def tables(self, ds: xr.Dataset) -> dict[str, str]:
        return {"markdown": components_table(ds), "latex": components_latex(ds)}
