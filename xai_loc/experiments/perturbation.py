"""Deletion (input-manipulation) curves: zero the top-P % of each window's samples.

For every window, the ``M x T`` input samples are ranked by a score (signed relevance,
absolute amplitude or a seeded random draw), the top ``P`` % are replaced by a fill value
(zero, as in the paper, or noise at the window's level), and the localization error of the
perturbed windows is measured. Ranking and masking are batched tensor operations: there is
no Python loop over samples or windows, so the experiment is bound by the model's forward
passes. Each window is ordered once per ordering (one sort), and the deleted copies for
increasing percentages are built incrementally, writing only the newly deleted samples.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from xai_loc.errors import InputError

OrderFn = Callable[[torch.Tensor, torch.Tensor | None, torch.Generator], torch.Tensor]
FillFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _random_order(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A seeded random permutation per window: its first k entries are a uniform k-subset."""
    n = x[0].numel()
    return torch.stack([torch.randperm(n, generator=gen) for _ in range(x.shape[0])]).to(x.device)


#: Orderings of the deletion, by name: ``f(windows, relevance, generator) -> order (W, M * T)``,
#: the flat sample indices of each window in the order they are deleted.
MODES: dict[str, OrderFn] = {
    "relevance": lambda x, rel, gen: deletion_order(_need(rel)),
    "energy": lambda x, rel, gen: deletion_order(x.abs()),
    "random": lambda x, rel, gen: _random_order(x, gen),
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


def deletion_order(scores: torch.Tensor) -> torch.Tensor:
    """Flat sample indices ``(W, M * T)`` of each window by descending score.

    Ties are broken by position (stable sort), so the order is reproducible.
    """
    flat = scores.reshape(scores.shape[0], -1)
    return torch.sort(flat, dim=1, descending=True, stable=True).indices


def n_deleted(percentage: float, n_samples: int) -> int:
    """How many of ``n_samples`` the top ``percentage`` % are (rounded to the nearest)."""
    return int(round(percentage / 100.0 * n_samples))


def check_percentages(percentages) -> tuple[float, ...]:
    """Validate deletion percentages (each in [0, 100], increasing)."""
    values = tuple(float(p) for p in percentages)
    if not values or any(not 0 <= p <= 100 for p in values) or list(values) != sorted(set(values)):
        raise InputError(f"percentages {list(values)} are not allowed; give increasing values in [0, 100]")
    return values


def perturbed_batches(windows: torch.Tensor, order: torch.Tensor, percentages, fill: torch.Tensor):
    """Yield ``(percentage, perturbed windows)`` with the top-P % of each window replaced by ``fill``.

    Percentages increase, so each step only writes the samples added since the previous
    one (a scatter of ``O(delta k)`` entries): the work of all steps together is one pass
    over the deleted samples. The same buffer is yielded every time, updated in place;
    clone it to keep a step.
    """
    out = windows.clone().reshape(windows.shape[0], -1)
    fill = fill.reshape(out.shape)
    done = 0
    for p in percentages:
        k = n_deleted(p, out.shape[1])
        if k > done:
            idx = order[:, done:k]
            out.scatter_(1, idx, fill.gather(1, idx))
            done = k
        yield p, out.view(windows.shape)


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
                order = MODES[mode](x, rel, gen)
                for j, (_, xp) in enumerate(perturbed_batches(x, order, percentages, fill_values)):
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
