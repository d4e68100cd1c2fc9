"""Which binaural cue does the cue network rely on, per band? LRP on the cue map, the attention weights, ablation.

The relevance comes from :func:`~xai_loc.explain.cuenet.cue_relevance` (LRP from the logits
to the cue map ``[3 cues (itd, ild, ic), bands, frames]``, composite ``'cuenet'``; see
:mod:`xai_loc.explain.cuenet` for the rules and why relevance stops at the cue map).
:func:`reliance_table` averages it into a (cue, band) table beside the attention weights. In
a trained model the biases (the merged BatchNorm shifts included) take or add some
relevance: the table's ``map_to_logit`` reports the ratio (0.94, median, for the shipped
model).

Because the attention is held constant, a cue that acts on the output only *through* the
attention weights is invisible to this LRP. :func:`cue_ablation` checks the relevance
without any rule: it destroys one cue's information (in all, low or high bands) and
re-scores the model, and reports how the attention weights move.
:func:`run_cue_probe` runs both and writes the results; :mod:`xai_loc.plots.cue_probe`
draws them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from xai_loc import __version__
from xai_loc.checks import check_choice, is_integer, is_real
from xai_loc.errors import InputError
from xai_loc.experiments.cues import DUPLEX_SPLIT_HZ
from xai_loc.explain.cuenet import cue_relevance

__all__ = ["ABLATIONS", "BAND_GROUPS", "LATERALITY_BINS", "cue_ablation", "probe_cues", "reliance_table",
           "run_cue_probe"]

#: Groups of the target's absolute lateral angle (degrees, ``asin(sin az)``): name -> [low, high).
LATERALITY_BINS = {"median": (0.0, 20.0), "intermediate": (20.0, 50.0), "lateral": (50.0, 90.0)}


def reliance_table(relevance) -> Any:
    """Average the per-example relevance of :func:`~xai_loc.explain.cuenet.cue_relevance` into a (cue, band) table.

    Each example's relevance is divided by its total *absolute* relevance (signed totals
    can be near zero and blow shares up), then averaged over examples:

    - ``share (cue, band)``: signed; ``abs_share (cue, band)``: magnitude (sums to 1 over
      cues and bands); ``cue_abs_share (cue)``: ``abs_share`` summed over bands;
    - ``reliance (band)``: the cue with the largest ``abs_share`` in each band (``'none'`` where no example
      has relevance in the band);
    - ``fusion_share (cue)``: the same normalization of the relevance after the attention
      (what each branch passed on), beside ``attention_mean (cue)``;
    - ``map_to_logit``: median ratio of the cue map's total relevance to the explained logit
      (below 1: relevance absorbed by biases, or not conserved by ZBox/Gamma);
    - with true azimuths: ``attention_by_laterality`` and ``cue_abs_share_by_laterality``
      ``(laterality, cue)``, the same means within groups of the target's lateral angle
      (:data:`LATERALITY_BINS`: near the median plane, intermediate, lateral), and
      ``n_by_laterality``: the examples of each group that the shares average.

    The shares average the examples with relevance (total absolute relevance above 1e-12),
    counted in the attrs' ``n_examples`` (and, per group, in ``n_by_laterality``, which sums
    to it); the attention means take every example.
    """
    import xarray as xr

    rel = relevance["relevance"].astype(np.float64)  # shares sum to 1 to float64 accuracy
    magnitude = np.abs(rel).sum(("cue", "band"))
    ok = magnitude > 1e-12
    abs_share = (np.abs(rel) / magnitude).where(ok).mean("example")
    fusion = relevance["fusion_relevance"].astype(np.float64)
    fusion_total = np.abs(fusion).sum("cue")
    fusion_share = (fusion / fusion_total).where(ok & (fusion_total > 1e-12)).mean("example")
    has_share = (abs_share.fillna(0).max("cue") > 0).values  # False where no example has relevance in the band
    winner = np.where(has_share, abs_share["cue"].values[abs_share.fillna(0).argmax("cue").values], "none")
    logit = relevance["logit"]
    to_logit = (rel.sum(("cue", "band")) / logit).where(np.abs(logit) > 1e-12).median("example")
    out = {"share": (rel / magnitude).where(ok).mean("example"), "abs_share": abs_share,
           "cue_abs_share": abs_share.sum("band"), "fusion_share": fusion_share,
           "attention_mean": relevance["attention"].astype(np.float64).mean("example"),
           "reliance": ("band", winner), "map_to_logit": to_logit}
    coords = {"frequency": relevance["frequency"]}
    if "azimuth" in relevance.coords:
        from xai_loc.models.classifier_training import lateral_angle

        # rounded: asin(sin 340 deg) is 19.999999999999993, and mirror targets must share a group
        lateral = np.round(np.abs(lateral_angle(relevance["azimuth"].values)), 6)
        group = np.digitize(lateral, [low for low, _ in LATERALITY_BINS.values()][1:])
        per_cue = (np.abs(rel) / magnitude).sum("band").where(ok).values

        def group_mean(values: np.ndarray) -> np.ndarray:
            """Mean over the examples of each group (NaN for an empty group)."""
            out_rows = np.full((len(LATERALITY_BINS), values.shape[1]), np.nan)
            for g in range(len(LATERALITY_BINS)):
                rows = values[(group == g) & np.isfinite(values).all(1)]
                if len(rows):
                    out_rows[g] = rows.mean(0)
            return out_rows

        out["attention_by_laterality"] = (("laterality", "cue"), group_mean(relevance["attention"].values))
        out["cue_abs_share_by_laterality"] = (("laterality", "cue"), group_mean(per_cue))
        out["n_by_laterality"] = ("laterality", np.bincount(group[ok.values], minlength=len(LATERALITY_BINS)))
        coords["laterality"] = list(LATERALITY_BINS)
    return xr.Dataset(out, coords=coords,
                      attrs={**relevance.attrs, "n_examples": int(ok.sum()),
                             "normalization": "per example, relevance / total absolute relevance of the example"})


#: Band groups of :func:`cue_ablation`: all bands, below and above ``split_hz``.
BAND_GROUPS = ("all", "low", "high")


#: How :func:`cue_ablation` removes a cue's information.
ABLATIONS = ("permute", "mean")


def cue_ablation(model, store, *, mode: str = "permute", split_hz: float = DUPLEX_SPLIT_HZ, seed: int = 0,
                 batch_size: int = 256):
    """Which cue the model needs: destroy one cue's information in one band group, re-score.

    A check of the relevance that does not depend on any LRP rule: for every cue and band
    group (all bands, bands below ``split_hz``, bands above), that part of every cue map is
    replaced, ``mode='permute'``: by the same part of another example's map (a seeded
    permutation of the examples; the maps stay realistic, their link to the azimuth is
    gone: permutation importance), or ``mode='mean'``: by the cue's mean over the store
    (per band, over examples and frames; a map that never occurs).
    :func:`~xai_loc.models.cuenet.cue_metrics` of the result are compared with the intact maps.
    ``split_hz`` lies strictly between the lowest and the highest band's centre frequency, so
    that both band groups hold bands.

    Returns
    -------
    xarray.Dataset
        ``top1, top5, azimuth_error, lateral_error, front_back_rate (cue, bands)`` and the
        same metrics on the intact maps as scalar variables ``<metric>_intact``;
        ``attention (cue, bands, weight_of)``: the mean attention weights with that part
        ablated (``attention_intact (weight_of)`` without), which shows a cue acting
        through the attention (a gate LRP holds constant) rather than as evidence.
    """
    import xarray as xr

    from xai_loc.data.cue_scenes import open_cue_scenes
    from xai_loc.explain.attribute import resolve_model
    from xai_loc.features.binaural_cues import CUES
    from xai_loc.models.cuenet import _check_store, cue_metrics
    from xai_loc.models.evaluation import after_front_end, in_batches

    check_choice("mode", mode, ABLATIONS)
    model, info = resolve_model(model)
    freq = model.centre_frequencies
    if not (is_real(split_hz) and freq.min() < split_hz < freq.max()):
        raise InputError(f"split_hz={split_hz!r} is not allowed; give Hz strictly between the lowest and highest "
                         f"band centre ({freq.min():.6g} and {freq.max():.6g} Hz), so both band groups hold bands")
    ds = store if hasattr(store, "data_vars") else open_cue_scenes(store)
    _check_store(model, ds)  # the check of evaluate_cuenet: the model's cue-map shape and front end
    cues, azimuth = ds["cues"].values.astype(np.float32), ds["azimuth"].values
    replacement = (cues[np.random.default_rng(seed).permutation(len(cues))] if mode == "permute"
                   else np.broadcast_to(cues.mean(axis=(0, 3), keepdims=True), cues.shape))
    groups = {"all": np.ones(freq.size, bool), "low": freq < split_hz, "high": freq >= split_hz}
    keys = ("top1", "top5", "azimuth_error", "lateral_error", "front_back_rate")
    classify = after_front_end(model)
    was = model.training
    model.eval()

    def mean_attention(x: np.ndarray) -> np.ndarray:
        return in_batches(model.attention, x, batch_size).numpy().mean(0)

    try:
        intact = cue_metrics(in_batches(classify, cues, batch_size).numpy(), azimuth)
        table = {k: np.zeros((len(CUES), len(BAND_GROUPS))) for k in keys}
        attention = np.zeros((len(CUES), len(BAND_GROUPS), len(CUES)))
        for i, _ in enumerate(CUES):
            for j, group in enumerate(BAND_GROUPS):
                ablated = cues.copy()
                ablated[:, i, groups[group]] = replacement[:, i, groups[group]]
                metrics = cue_metrics(in_batches(classify, ablated, batch_size).numpy(), azimuth)
                for k in keys:
                    table[k][i, j] = metrics[k]
                attention[i, j] = mean_attention(ablated)
        attention_intact = mean_attention(cues)
    finally:
        model.train(was)
    return xr.Dataset({k: (("cue", "bands"), v) for k, v in table.items()}
                      | {f"{k}_intact": intact[k] for k in keys}
                      | {"attention": (("cue", "bands", "weight_of"), attention),
                         "attention_intact": ("weight_of", attention_intact)},
                      coords={"cue": list(CUES), "bands": list(BAND_GROUPS), "weight_of": list(CUES)},
                      attrs={**info, "method": f"cue ablation ({mode})", "mode": mode, "seed": int(seed),
                             "xai_loc_version": __version__,
                             "split_hz": float(split_hz), "store_spec_digest": ds.attrs.get("spec_digest", ""),
                             "store_split": ds.attrs.get("split", ""), "n_examples": int(len(cues))})


def probe_cues(model, store, *, max_examples: int | None = None, target: str | int = "prediction",
               batch_size: int = 64, seed: int = 0, **options: Any):
    """:func:`~xai_loc.explain.cuenet.cue_relevance` on a cue-scene store (or ``max_examples`` of it, a
    seeded draw: the store is ordered by utterance, so its first examples would cover few), plus
    :func:`reliance_table`.

    Returns
    -------
    relevance, table
        The per-example Dataset (with the store's spec digest and split in its attrs) and
        the averaged table.
    """
    from xai_loc.data.cue_scenes import open_cue_scenes

    if max_examples is not None and not (is_integer(max_examples) and max_examples >= 1):
        raise InputError(f"max_examples={max_examples!r} is not allowed; use an integer >= 1, or None for all")
    ds = store if hasattr(store, "data_vars") else open_cue_scenes(store)
    labels = ds["example"].values if "example" in ds.coords else np.arange(ds.sizes["example"])
    if max_examples is not None and max_examples < labels.size:
        index = np.sort(np.random.default_rng(seed).choice(labels.size, size=int(max_examples), replace=False))
        ds, labels = ds.isel(example=index), labels[index]
    rel = cue_relevance(model, ds["cues"].values, azimuth=ds["azimuth"].values, target=target,
                        batch_size=batch_size, example=labels, **options)
    rel.attrs.update(store_spec_digest=ds.attrs.get("spec_digest", ""), store_split=ds.attrs.get("split", ""))
    return rel, reliance_table(rel)


def run_cue_probe(model, store, out_dir: str | Path, *, max_examples: int | None = None, ablation: str = "permute",
                  seed: int = 0, **options: Any) -> dict[str, Any]:
    """The whole probe on a cue-scene store, written to ``out_dir`` (each file atomically).

    ``options`` go to the composite (``first_rule``, ``conv_rule`` ...); ``ablation`` is the
    :func:`cue_ablation` mode; ``seed`` draws the ``max_examples`` and the ablation's permutation.

    Writes ``cue_relevance.nc`` (per example, cue and band, attention weights; the
    per-frame maps are left out), ``cue_reliance.nc`` (:func:`reliance_table`, drawn as
    ``cue_probe.png`` by :func:`xai_loc.plots.cue_probe.plot_cue_probe`) and
    ``cue_ablation.nc`` (:func:`cue_ablation`).

    Returns
    -------
    dict
        ``'relevance'``, ``'table'``, ``'ablation'`` (the Datasets) and ``'paths'``.
    """
    from xai_loc.data.cue_scenes import open_cue_scenes
    from xai_loc.io import write_files_atomic

    check_choice("ablation", ablation, ABLATIONS)  # before the relevance is computed
    out_dir = Path(out_dir)
    store = store if hasattr(store, "data_vars") else open_cue_scenes(store)  # opened (and verified) once
    relevance, table = probe_cues(model, store, max_examples=max_examples, seed=seed, **options)
    ablated = cue_ablation(model, store, mode=ablation, seed=seed)
    paths = {"relevance": out_dir / "cue_relevance.nc", "table": out_dir / "cue_reliance.nc",
             "ablation": out_dir / "cue_ablation.nc"}  # written together: all or none
    write_files_atomic({paths["relevance"]: relevance.drop_vars("relevance_map"), paths["table"]: table,
                        paths["ablation"]: ablated})
    return {"relevance": relevance, "table": table, "ablation": ablated, "paths": paths}
