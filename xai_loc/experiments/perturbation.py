"""Deletion (input-manipulation) curves: zero the top-P % of each window's samples.

For every window, the ``M x T`` input samples are scored (signed relevance, absolute
amplitude or a seeded random draw), the top ``P`` % by score are replaced by a fill value
(zero, as in the paper, or noise at the window's level), and the localization error of the
perturbed windows is measured. Ties are broken by position (the earlier sample goes first),
so the deleted set is exactly the first ``k`` entries of a stable descending sort.

The masking is batched array work with no Python loop over samples or windows, and it
needs neither a permutation nor a sort: a nested selection (``partition``) of each window's
score values gives the threshold of every percentage, each mask is one comparison, and each
deleted copy is the window times its 0/1 keep mask (plus the fill times the deleted mask
for a non-zero fill; exact, and faster than masked copies). The experiment is then bound
by the model's forward passes (``benchmarks/bench_perturbation.py``).
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from xai_loc.errors import InputError

ScoreFn = Callable[[torch.Tensor, torch.Tensor | None, torch.Generator], torch.Tensor]
FillFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _random_scores(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Seeded uniform keys (float64, so ties do not occur in practice): their top k are a uniform k-subset.

    Drawn by numpy (seeded from ``gen``), about three times faster than ``torch.rand`` here.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    return torch.from_numpy(np.random.default_rng(seed).random(tuple(x.shape))).to(x.device)


#: Deletion priorities, by name: ``f(windows, relevance, generator) -> scores (W, M, T)``;
#: the samples with the highest scores are deleted first.
MODES: dict[str, ScoreFn] = {
    "relevance": lambda x, rel, gen: _need(rel),
    "energy": lambda x, rel, gen: x.abs(),
    "random": lambda x, rel, gen: _random_scores(x, gen),
}

#: Values written where samples are deleted: ``f(windows, generator) -> fill`` (same shape).
FILLS: dict[str, FillFn] = {
    "zero": lambda x, gen: torch.zeros_like(x),
    "noise": lambda x, gen: torch.randn(x.shape, generator=gen, dtype=torch.float32).to(x)
    * x.std(dim=(1, 2), keepdim=True),
}

#: Offset of the seed of the randomized model copies (kept apart from weight-init seeds).
RANDOMIZED_SEED_OFFSET = 10_007

#: The paper's percentages.
PAPER_PERCENTAGES = (0, 10, 20, 30, 40, 50, 60, 70)


def _need(relevance: torch.Tensor | None) -> torch.Tensor:
    if relevance is None:
        raise InputError("deletion mode 'relevance' needs relevance maps; explain the windows first")
    return relevance


def n_deleted(percentage: float, n_samples: int) -> int:
    """How many of ``n_samples`` the top ``percentage`` % are (rounded to the nearest)."""
    return int(round(percentage / 100.0 * n_samples))


def check_percentages(percentages) -> tuple[float, ...]:
    """Validate deletion percentages (each in [0, 100], increasing)."""
    values = tuple(float(p) for p in percentages)
    if not values or any(not 0 <= p <= 100 for p in values) or list(values) != sorted(set(values)):
        raise InputError(f"percentages {list(values)} are not allowed; give increasing values in [0, 100]")
    return values


def kth_largest(scores: np.ndarray, ks) -> dict[int, np.ndarray]:
    """Each row's ``k``-th largest score for every ``k`` in ``ks`` (``0 < k <= N``): ``{k: (W, 1)}``.

    Selection, not sorting: one in-place ``partition`` of a copy at the middle requested
    rank, then of the part on either side for the ranks that fall there, and so on. For
    the paper's seven ranks this costs about three linear passes, a fraction of a full sort
    (numpy's ``partition`` with several ranks at once is slower than one sort).
    """
    n = scores.shape[1]
    work = scores.copy()
    ranks = sorted({n - int(k) for k in ks if 0 < k <= n})  # ascending positions

    def split(lo: int, hi: int, positions: list[int]) -> None:
        if not positions:
            return
        mid = positions[len(positions) // 2]
        work[:, lo:hi].partition(mid - lo, axis=1)
        split(lo, mid, [q for q in positions if q < mid])
        split(mid + 1, hi, [q for q in positions if q > mid])

    split(0, n, ranks)
    return {n - q: work[:, q : q + 1].copy() for q in ranks}


def keep_mask(scores: np.ndarray, k: int, threshold: np.ndarray | None, out: np.ndarray | None = None) -> np.ndarray:
    """Boolean ``(W, N)``: True where a sample is *not* among its row's ``k`` highest scores.

    The deleted set is exactly the first ``k`` entries of a stable descending sort (ties by
    position: the earlier sample goes first). ``threshold`` is the row's ``k``-th largest
    score (:func:`kth_largest`; ignored for ``k == 0``).
    """
    n = scores.shape[1]
    if out is None:
        out = np.empty(scores.shape, dtype=bool)
    if k == 0:
        out[...] = True
        return out
    np.less(scores, threshold, out=out)
    surplus = (n - np.count_nonzero(out, axis=1)) - k  # > 0 only where the threshold value is tied
    rows = np.flatnonzero(surplus)
    if rows.size:  # keep the latest `surplus` ties of those rows (counted on them alone: ties are rare)
        ties = scores[rows] == threshold[rows]
        seen = np.cumsum(ties, axis=1, dtype=np.int32)  # ties at or before each position
        out[rows] |= ties & (seen > (seen[:, -1] - surplus[rows])[:, None])
    return out


def perturbed_batches(windows: torch.Tensor, scores: torch.Tensor, percentages, fill: torch.Tensor):
    """Yield ``(percentage, perturbed windows)`` with each window's top-P % samples by score replaced by ``fill``.

    On the CPU one buffer is reused from step to step: the same tensor is yielded every time
    (clone it to keep a step). ``windows`` is never modified.
    """
    w = windows.shape[0]
    flat = scores.detach().reshape(w, -1).cpu().numpy()
    if not np.isfinite(flat).all():
        raise InputError("deletion scores hold NaN or infinite values")
    ks = [n_deleted(p, flat.shape[1]) for p in percentages]
    thresholds = kth_largest(flat, ks)
    keep = np.empty(flat.shape, dtype=bool)
    if windows.device.type == "cpu":
        # x * keep (+ fill * deleted) with 0/1 factors is exact for finite samples and, as
        # streaming passes, several times faster than numpy's masked copies or `where`
        x, f = windows.detach().reshape(w, -1).numpy(), fill.detach().reshape(w, -1).numpy()
        zero_fill = not f.any()
        out = np.empty_like(x)
        part = None if zero_fill else np.empty_like(x)
        for p, k in zip(percentages, ks, strict=True):
            keep_mask(flat, k, thresholds.get(k), out=keep)
            np.multiply(x, keep, out=out)
            if not zero_fill:
                np.multiply(f, ~keep, out=part)
                out += part
            yield p, torch.from_numpy(out).view(windows.shape)
    else:
        x, f = windows.reshape(w, -1), fill.reshape(w, -1)
        for p, k in zip(percentages, ks, strict=True):
            keep_mask(flat, k, thresholds.get(k), out=keep)
            yield p, torch.where(torch.from_numpy(keep).to(windows.device), x, f).view(windows.shape)


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
    timing: dict[str, float] | None = None,
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
    timing
        If given, ``timing["forward"]`` accumulates the seconds spent in the model.
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
                scores = MODES[mode](x, rel, gen)
                for j, (_, xp) in enumerate(perturbed_batches(x, scores, percentages, fill_values)):
                    tic = time.perf_counter()
                    pred = model(xp)
                    if timing is not None:
                        timing["forward"] = timing.get("forward", 0.0) + time.perf_counter() - tic
                    out[i, j, start : start + x.shape[0]] = pred.double().cpu().numpy()
    return out


def _relevance_source(data_path, model_path, explainer_kwargs: dict):
    """An opened matching relevance store, or None when none exists (then relevance is computed)."""
    from xai_loc.explain import Explainer, open_relevance, relevance_store_path

    if data_path is None or model_path is None:
        return None
    probe = Explainer(model_path, **explainer_kwargs)
    path = relevance_store_path(data_path, probe, probe.attrs["model"])
    return open_relevance(path) if path.exists() else None


def run_perturbation(
    models: dict,
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
    **explain_options,
):
    """The paper's input-manipulation experiment, with the randomized-model baseline.

    Parameters
    ----------
    models
        ``{name: checkpoint path or localizer}``.
    data
        A dataset store path (from :func:`~xai_loc.data.store.simulate_dataset`).
    percentages, modes, fill
        Deletion percentages, orderings (:data:`MODES`) and fill (:data:`FILLS`).
    method, composite, target, explain_options
        How relevance is computed (see :func:`xai_loc.explain.explain`); a matching
        relevance store next to the data is reused.
    randomized_baseline
        Also delete in the order of the relevance of a randomized copy of each model
        (mode ``"relevance-randomized"``; Adebayo et al., 2018).
    seed
        Seeds random orderings, noise fill and the randomized copies.
    batch_size
        Windows per explanation and forward pass.
    n_sources
        Only the first ``n_sources`` sources of the store.

    Returns
    -------
    xarray.Dataset
        ``mae`` (model, mode, percentage, xyz), ``mae_mean`` and ``euclidean`` (model, mode,
        percentage), ``aopc`` (model, mode) of ``mae_mean``, the constant-predictor
        baseline ``baseline_mae`` (xyz) and ``baseline_mae_mean``, and timing and provenance
        attrs.
    """
    import json

    import xarray as xr
    from tqdm.auto import tqdm

    from xai_loc import __version__
    from xai_loc.data.store import open_signals
    from xai_loc.experiments.baselines import randomized_copy
    from xai_loc.explain import Explainer
    from xai_loc.models.evaluation import localization_errors

    percentages = check_percentages(percentages)
    ds = open_signals(data)
    if n_sources is not None:
        keep = np.isin(ds["source_id"].values, np.unique(ds["source_id"].values)[:n_sources])
        ds = ds.isel(window=np.flatnonzero(keep))
    truth = ds["source_position"].values
    n = truth.shape[0]
    all_modes = list(modes) + (["relevance-randomized"] if randomized_baseline else [])
    need_relevance = "relevance" in modes
    kwargs = {"target": target, "method": method, "composite": composite, "batch_size": batch_size,
              "device": device, **explain_options}
    preds = np.zeros((len(models), len(all_modes), len(percentages), n, 3))
    timings, explained = {}, {}
    for k, (name, model) in enumerate(models.items()):
        explainer = Explainer(model, **kwargs)
        net = explainer.model
        stored = _relevance_source(data, model if not isinstance(model, torch.nn.Module) else None, kwargs) \
            if need_relevance and n_sources is None else None
        random_explainer = Explainer(randomized_copy(net, RANDOMIZED_SEED_OFFSET + seed), **kwargs) \
            if randomized_baseline else None
        timing: dict[str, float] = {}
        tic = time.perf_counter()
        with tqdm(total=n, disable=not progress, desc=f"perturb {name}", unit="win") as bar:
            for start in range(0, n, batch_size):
                stop = min(n, start + batch_size)
                x = torch.as_tensor(ds["signals"].isel(window=slice(start, stop)).values)
                rel = None
                explain_tic = time.perf_counter()
                if need_relevance:
                    if stored is not None:
                        rel = torch.as_tensor(stored.isel(window=slice(start, stop)).values)
                    else:
                        with explainer:
                            rel = torch.as_tensor(explainer.explain_batch(x, truth[start:stop])["relevance"])
                timing["explain"] = timing.get("explain", 0.0) + time.perf_counter() - explain_tic
                net.eval()
                preds[k, : len(modes), :, start:stop] = deletion_predictions(
                    net, x, percentages, modes, relevance=rel, fill=fill, seed=seed + start,
                    batch_size=batch_size, timing=timing)
                if random_explainer is not None:
                    explain_tic = time.perf_counter()
                    with random_explainer:
                        rel_r = torch.as_tensor(random_explainer.explain_batch(x, truth[start:stop])["relevance"])
                    timing["explain"] += time.perf_counter() - explain_tic
                    preds[k, len(modes), :, start:stop] = deletion_predictions(
                        net, x, percentages, ["relevance"], relevance=rel_r, fill=fill, seed=seed + start,
                        batch_size=batch_size, timing=timing)[0]
                bar.update(stop - start)
        timings[name] = {"wall_seconds": time.perf_counter() - tic, "forward_seconds": timing.get("forward", 0.0),
                         "explain_seconds": timing.get("explain", 0.0)}
        explained[name] = {k2: v for k2, v in explainer.attrs.items()
                           if k2 in ("model", "checkpoint", "checkpoint_digest", "model_digest")}

    err = np.abs(preds - truth)  # (model, mode, percentage, window, xyz)
    mae = err.mean(axis=3)
    euclid = np.sqrt(((preds - truth) ** 2).sum(-1)).mean(axis=3)
    _, first = np.unique(ds["source_id"].values, return_index=True)
    base = localization_errors(truth[first].mean(axis=0), truth)  # each source counted once, as in evaluate
    names = list(models)
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
            "method": method, "composite": composite, "target": target, "fill": fill, "seed": seed,
            "explain_options": json.dumps(explain_options, sort_keys=True, default=str),
            "t60": float(ds.attrs.get("t60", np.nan)), "snr": float(ds.attrs.get("snr", np.nan)),
            "n_windows": n, "n_sources": int(np.unique(ds["source_id"].values).size),
            "models": json.dumps(explained, sort_keys=True), "timing": json.dumps(timings, sort_keys=True),
            "data_config": ds.attrs.get("config", ""), "xai_loc_version": __version__,
        },
    )
    return result
