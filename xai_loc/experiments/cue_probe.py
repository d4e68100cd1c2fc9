"""Which binaural cue does the cue network rely on, per band? LRP on the cue map, and the attention weights.

The cue network (:mod:`xai_loc.models.cuenet`) is explained from its logits down to its
input, the cue map ``[3 cues (itd, ild, ic), bands, frames]``. Relevance does not go on to
the waveform: the front end's ITD is the arg-max lag of a cross-correlation (piecewise
constant, no gradient, no LRP rule), and its ILD and IC pass through normalizations and a
logarithm that no conserving LRP rule covers. The cue map is where the cues are
separable, which is what this probe asks about.

Composite ``'cuenet'`` (:mod:`xai_loc.explain.cue_composites`):

- first convolution of each cue branch: ``first_rule`` — ``'zbox'`` (default) with the
  cue's physical range as the box (ITD +-max lag ms, ILD +-clip dB, IC [0, 1]), so that a
  cue value of 0 (a frontal ITD or ILD) still earns relevance for being far from the
  bounds; ``'epsilon'`` (relevance ``x dz/dx``, zero for zero-valued cues) or ``'flat'``;
- other convolutions ``conv_rule`` (Gamma 0.25 by default: their inputs follow a ReLU),
  dense layers Epsilon; BatchNorms merged into the convolution before them; ReLUs Pass;
  the time average Norm (= Epsilon on an average);
- attention: the weights ``a_c`` are held constant, like a gate
  (:class:`~xai_loc.explain.rules.GateRule` on the :class:`~xai_loc.models.layers.Gate`
  product ``a_c e_c``), and the sum over cues gets Norm; so relevance of the fused vector
  is split among the cue embeddings in proportion to their contributions ``a_c e_c`` and
  nothing flows into the attention scorer. The attention weights are reported beside the
  relevance, as what the model *weighted*, while relevance says what *contributed*.

For a bias-free network every one of these rules conserves relevance (up to the
stabilizers); with ``first_rule='epsilon', conv_rule='epsilon'`` and zero biases the
relevance on the cue map sums to the explained logit (tested in float64). In a trained model
the biases (the merged BatchNorm shifts included) take or add some: the table's
``map_to_logit`` reports the ratio (0.94, median, for the shipped model).

Because the attention is held constant, a cue that acts on the output only *through* the
attention weights is invisible to this LRP. :func:`cue_ablation` checks the relevance
without any rule: it destroys one cue's information (in all, low or high bands) and
re-scores the model, and reports how the attention weights move.
:func:`run_cue_probe` runs both and writes the results and a figure.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xai_loc import __version__
from xai_loc.errors import InputError
from xai_loc.experiments.cues import class_logit_seed
from xai_loc.explain._options import check_choice
from xai_loc.models.cuenet import CueNet

__all__ = ["ABLATIONS", "BAND_GROUPS", "LATERALITY_BINS", "cue_ablation", "cue_relevance", "plot_cue_probe",
           "probe_cues", "reliance_table", "run_cue_probe"]

def cue_relevance(model, cues, *, azimuth=None, target: str | int = "prediction", composite: str = "cuenet",
                  batch_size: int = 64, example=None, **options: Any):
    """LRP relevance of a cue network on cue maps, per cue and band, with the attention weights.

    Parameters
    ----------
    model
        A :class:`~xai_loc.models.cuenet.CueNet` or a checkpoint path.
    cues
        Cue maps ``(n, 3, bands, frames)`` (array, tensor or DataArray).
    azimuth
        True azimuths (degrees), needed for ``target='truth'`` and recorded when given.
    target
        ``'prediction'`` (arg-max class), ``'truth'`` or a class index: the seeded logit.
    composite, options
        A registered composite (``'cuenet'``) and its options (``first_rule``, ``conv_rule`` ...).

    Returns
    -------
    xarray.Dataset
        Along ``example``: ``relevance (example, cue, band)`` (cue-map relevance summed over
        frames), ``relevance_map (example, cue, band, frame)``, ``fusion_relevance
        (example, cue)`` (relevance of each cue's embedding, after the attention),
        ``attention (example, cue)``, ``logit`` (the explained logit), ``target_class``,
        ``predicted_azimuth``; attrs carry the provenance (model, checkpoint digest,
        composite and its parameters, target).
    """
    import xarray as xr
    from zennit.attribution import Gradient

    from xai_loc.explain.attribute import resolve_model
    from xai_loc.explain.composites import make_composite
    from xai_loc.features.binaural_cues import CUES

    model, info = resolve_model(model)
    if not isinstance(model, CueNet):
        raise InputError(f"cue_relevance needs a cue network ('cuenet'), not {type(model).__name__}")
    if hasattr(cues, "dims") and hasattr(cues, "values"):
        cues = cues.values
    x_all = np.asarray(cues.detach().cpu() if isinstance(cues, torch.Tensor) else cues)
    if x_all.ndim != 4 or x_all.shape[1:] != model.cue_shape:
        raise InputError(f"cue maps of shape {x_all.shape} are not allowed; the model takes (n, {model.cue_shape})")
    if not np.isfinite(x_all).all():
        raise InputError("cue maps hold NaN or infinite values")
    if target not in ("prediction", "truth") and not (isinstance(target, int) and 0 <= target < model.n_classes):
        raise InputError(f"target={target!r} is not allowed; use 'prediction', 'truth' or a class in 0..71")
    labels = None
    if azimuth is not None:
        azimuth = np.asarray(azimuth, dtype=np.float64)
        if azimuth.shape != (len(x_all),):
            raise InputError(f"azimuth of shape {azimuth.shape} does not fit {len(x_all)} cue maps")
        labels = torch.as_tensor(np.rint(azimuth / 5.0).astype(np.int64) % model.n_classes)
    elif target == "truth":
        raise InputError("target='truth' needs the true azimuths (azimuth=...)")
    net = model.classifier
    first = next(net.parameters())
    composite_obj, params = make_composite(composite, net, **options)
    captured: dict[str, torch.Tensor] = {}

    def keep_embedding(cue: str):
        # a branch's output is the attention's input: its gradient under the composite is the relevance there
        def hook(module, inputs, output):
            output.register_hook(lambda grad: captured.__setitem__(cue, grad.detach()))
        return hook

    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("map", "fusion", "logit", "cls", "pred")}
    training = model.training
    model.eval()
    with torch.no_grad():
        attention = np.concatenate([model.attention(torch.from_numpy(x_all[s:s + batch_size]).to(first)).cpu().numpy()
                                    for s in range(0, len(x_all), batch_size)])
    handles = [net.branches[c].register_forward_hook(keep_embedding(c)) for c in CUES]
    try:
        with Gradient(net, composite_obj) as attributor:
            for s in range(0, len(x_all), batch_size):
                x = torch.from_numpy(x_all[s:s + batch_size]).to(first)
                lab = None if labels is None else labels[s:s + batch_size]
                output, relevance = attributor(x, class_logit_seed(target, lab))
                cls = output.argmax(1) if target == "prediction" else (
                    lab if target == "truth" else torch.full((len(x),), int(target)))
                parts["map"].append(relevance.detach().cpu().numpy())
                parts["fusion"].append(torch.stack([captured.pop(c).sum(-1) for c in CUES], 1).cpu().numpy())
                parts["logit"].append(output.detach().gather(1, cls[:, None].to(output.device))[:, 0].cpu().numpy())
                parts["cls"].append(cls.cpu().numpy())
                parts["pred"].append(output.argmax(1).cpu().numpy())
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)
    rmap = np.concatenate(parts["map"])
    n = len(rmap)
    example = np.arange(n) if example is None else np.asarray(example)
    coords: dict[str, Any] = {
        "example": example, "cue": list(CUES), "band": np.arange(model.n_bands),
        "frequency": ("band", model.centre_frequencies, {"units": "Hz"}),
        "frame": np.arange(model.n_frames),
        "target_class": ("example", np.concatenate(parts["cls"]).astype(np.int64)),
        "predicted_azimuth": ("example", np.concatenate(parts["pred"]) * 5.0, {"units": "degree"})}
    if azimuth is not None:
        coords["azimuth"] = ("example", azimuth, {"units": "degree"})
    attrs = {**info, "method": "lrp", "composite": composite, "composite_params": json.dumps(params, sort_keys=True),
             "target": str(target), "level": "cue map", "xai_loc_version": __version__,
             "attention_treatment": "weights held constant (gate); relevance to the cue embeddings only",
             "convention": "azimuth counter-clockwise from the front, 90 = left (SOFA)"}
    return xr.Dataset(
        {"relevance": (("example", "cue", "band"), rmap.sum(-1)),
         "relevance_map": (("example", "cue", "band", "frame"), rmap.astype(np.float32)),
         "fusion_relevance": (("example", "cue"), np.concatenate(parts["fusion"])),
         "attention": (("example", "cue"), attention),
         "logit": ("example", np.concatenate(parts["logit"]))},
        coords=coords, attrs=attrs)


#: Groups of the target's absolute lateral angle (degrees, ``asin(sin az)``): name -> [low, high).
LATERALITY_BINS = {"median": (0.0, 20.0), "intermediate": (20.0, 50.0), "lateral": (50.0, 90.0)}


def reliance_table(relevance) -> Any:
    """Average the per-example relevance of :func:`cue_relevance` into a (cue, band) table.

    Each example's relevance is divided by its total *absolute* relevance (signed totals
    can be near zero and blow shares up), then averaged over examples:

    - ``share (cue, band)``: signed; ``abs_share (cue, band)``: magnitude (sums to 1 over
      cues and bands); ``cue_abs_share (cue)``: ``abs_share`` summed over bands;
    - ``reliance (band)``: the cue with the largest ``abs_share`` in each band;
    - ``fusion_share (cue)``: the same normalization of the relevance after the attention
      (what each branch passed on), beside ``attention_mean (cue)``;
    - ``map_to_logit``: median ratio of the cue map's total relevance to the explained logit
      (below 1: relevance absorbed by biases, or not conserved by ZBox/Gamma);
    - with true azimuths: ``attention_by_laterality`` and ``cue_abs_share_by_laterality``
      ``(laterality, cue)``, the same means within groups of the target's lateral angle
      (:data:`LATERALITY_BINS`: near the median plane, intermediate, lateral).
    """
    import xarray as xr

    rel = relevance["relevance"].astype(np.float64)  # shares sum to 1 to float64 accuracy
    magnitude = np.abs(rel).sum(("cue", "band"))
    ok = magnitude > 1e-12
    abs_share = (np.abs(rel) / magnitude).where(ok).mean("example")
    fusion = relevance["fusion_relevance"].astype(np.float64)
    fusion_share = (fusion / np.abs(fusion).sum("cue")).where(ok).mean("example")
    winner = abs_share.argmax("cue")
    logit = relevance["logit"]
    to_logit = (rel.sum(("cue", "band")) / logit).where(np.abs(logit) > 1e-12).median("example")
    out = {"share": (rel / magnitude).where(ok).mean("example"), "abs_share": abs_share,
           "cue_abs_share": abs_share.sum("band"), "fusion_share": fusion_share,
           "attention_mean": relevance["attention"].astype(np.float64).mean("example"),
           "reliance": ("band", abs_share["cue"].values[winner.values]), "map_to_logit": to_logit}
    coords = {"frequency": relevance["frequency"]}
    if "azimuth" in relevance.coords:
        from xai_loc.models.classifier_training import lateral_angle

        lateral = np.abs(lateral_angle(relevance["azimuth"].values))
        edges = [edge for _, (edge, _) in LATERALITY_BINS.items()] + [90.0 + 1e-9]
        group = np.digitize(lateral, edges[1:-1])
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
        out["n_by_laterality"] = ("laterality", np.bincount(group, minlength=len(LATERALITY_BINS)))
        coords["laterality"] = list(LATERALITY_BINS)
    return xr.Dataset(out, coords=coords,
                      attrs={**relevance.attrs, "n_examples": int(ok.sum()),
                             "normalization": "per example, relevance / total absolute relevance of the example"})


#: Band groups of :func:`cue_ablation`: all bands, below and above ``split_hz``.
BAND_GROUPS = ("all", "low", "high")


#: How :func:`cue_ablation` removes a cue's information.
ABLATIONS = ("permute", "mean")


def cue_ablation(model, store, *, mode: str = "permute", split_hz: float = 1500.0, seed: int = 0,
                 batch_size: int = 256):
    """Which cue the model needs: destroy one cue's information in one band group, re-score.

    A check of the relevance that does not depend on any LRP rule: for every cue and band
    group (all bands, bands below ``split_hz``, bands above), that part of every cue map is
    replaced, ``mode='permute'``: by the same part of another example's map (a seeded
    permutation of the examples; the maps stay realistic, their link to the azimuth is
    gone: permutation importance), or ``mode='mean'``: by the cue's mean over the store
    (per band, over examples and frames; a map that never occurs).
    :func:`~xai_loc.models.cuenet.cue_metrics` of the result are compared with the intact maps.

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
    from xai_loc.models.cuenet import _logits, cue_metrics

    check_choice("mode", mode, ABLATIONS)
    model, info = resolve_model(model)
    ds = store if hasattr(store, "data_vars") else open_cue_scenes(store)
    cues, azimuth = ds["cues"].values.astype(np.float32), ds["azimuth"].values
    replacement = (cues[np.random.default_rng(seed).permutation(len(cues))] if mode == "permute"
                   else np.broadcast_to(cues.mean(axis=(0, 3), keepdims=True), cues.shape))
    freq = model.centre_frequencies
    groups = {"all": np.ones(freq.size, bool), "low": freq < split_hz, "high": freq >= split_hz}
    keys = ("top1", "top5", "azimuth_error", "lateral_error", "front_back_rate")
    was = model.training
    model.eval()
    def mean_attention(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return np.concatenate([model.attention(torch.from_numpy(x[s:s + batch_size])).numpy()
                                   for s in range(0, len(x), batch_size)]).mean(0)

    try:
        intact = cue_metrics(_logits(model, cues, batch_size), azimuth)
        table = {k: np.zeros((len(CUES), len(BAND_GROUPS))) for k in keys}
        attention = np.zeros((len(CUES), len(BAND_GROUPS), len(CUES)))
        for i, _ in enumerate(CUES):
            for j, group in enumerate(BAND_GROUPS):
                ablated = cues.copy()
                ablated[:, i, groups[group]] = replacement[:, i, groups[group]]
                metrics = cue_metrics(_logits(model, ablated, batch_size), azimuth)
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
               batch_size: int = 64, **options: Any):
    """:func:`cue_relevance` on (the first ``max_examples`` of) a cue-scene store, plus :func:`reliance_table`.

    Returns
    -------
    relevance, table
        The per-example Dataset (with the store's spec digest and split in its attrs) and
        the averaged table.
    """
    from xai_loc.data.cue_scenes import open_cue_scenes

    ds = store if hasattr(store, "data_vars") else open_cue_scenes(store)
    if max_examples is not None:
        ds = ds.isel(example=slice(0, int(max_examples)))
    rel = cue_relevance(model, ds["cues"].values, azimuth=ds["azimuth"].values, target=target,
                        batch_size=batch_size, example=ds["example"].values, **options)
    rel.attrs.update(store_spec_digest=ds.attrs.get("spec_digest", ""), store_split=ds.attrs.get("split", ""))
    return rel, reliance_table(rel)


def plot_cue_probe(table, path: str | Path | None = None):
    """Figure of a :func:`reliance_table`: relevance magnitude per cue and band, and per cue the
    attention weight, the relevance after the fusion and on the map.

    Returns the matplotlib figure; with ``path`` it is written there atomically and closed.
    """

    import matplotlib.pyplot as plt

    by_side = "attention_by_laterality" in table
    fig, axes = plt.subplots(1, 3 if by_side else 2, figsize=(14 if by_side else 10, 3.4),
                             gridspec_kw={"width_ratios": [3, 1.3, 1.6] if by_side else [3, 1.3]})
    ax_share, ax_cue = axes[0], axes[1]
    freq = table["frequency"].values
    for cue in table["cue"].values:
        ax_share.semilogx(freq, table["abs_share"].sel(cue=cue).values, marker="o", ms=3, label=str(cue).upper())
    ax_share.set(xlabel="band centre frequency (Hz)", ylabel="mean share of |relevance|", ylim=(0, None),
                 title=f"LRP on the cue map ({table.attrs.get('n_examples', '?')} test scenes)")
    ax_share.legend(frameon=False)
    cues = [str(c).upper() for c in table["cue"].values]
    x = np.arange(len(cues))
    ax_cue.bar(x - 0.27, table["attention_mean"].values, 0.27, label="attention weight")
    ax_cue.bar(x, table["fusion_share"].values, 0.27, label="relevance after fusion")
    ax_cue.bar(x + 0.27, table["cue_abs_share"].values, 0.27, label="|relevance| on the map")
    ax_cue.axhline(0.0, color="0.6", lw=0.8)
    ax_cue.set_xticks(x, cues)
    ax_cue.set(title="per cue")
    ax_cue.legend(frameon=False, fontsize=7)
    if by_side:
        ax_side, groups = axes[2], [str(g) for g in table["laterality"].values]
        xg = np.arange(len(groups))
        for k, cue in enumerate(table["cue"].values):
            ax_side.bar(xg + (k - 1) * 0.27, table["attention_by_laterality"].sel(cue=cue).values, 0.27,
                        label=str(cue).upper())
            ax_side.plot(xg + (k - 1) * 0.27, table["cue_abs_share_by_laterality"].sel(cue=cue).values, "kx", ms=5)
        ax_side.set_xticks(xg, groups)
        ax_side.set(title="attention (bars), |relevance| (x) by target laterality", ylim=(0, 1))
        ax_side.title.set_fontsize(8)
        ax_side.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    if path is not None:
        from xai_loc.io import save_figure_atomic

        save_figure_atomic(fig, Path(path))
    return fig


def run_cue_probe(model, store, out_dir: str | Path, *, max_examples: int | None = None, ablation: str = "permute",
                  **options: Any) -> dict[str, Any]:
    """The whole probe on a cue-scene store, written to ``out_dir`` (each file atomically).

    ``options`` go to the composite (``first_rule``, ``conv_rule`` ...); ``ablation`` is the
    :func:`cue_ablation` mode.

    Writes ``cue_relevance.nc`` (per example, cue and band, attention weights; the
    per-frame maps are left out), ``cue_reliance.nc`` (:func:`reliance_table`),
    ``cue_ablation.nc`` (:func:`cue_ablation`) and ``cue_probe.png``.

    Returns
    -------
    dict
        ``'relevance'``, ``'table'``, ``'ablation'`` (the Datasets) and ``'paths'``.
    """
    from xai_loc.io import write_dataset_atomic

    out_dir = Path(out_dir)
    relevance, table = probe_cues(model, store, max_examples=max_examples, **options)
    ablated = cue_ablation(model, store, mode=ablation)
    paths = {"relevance": write_dataset_atomic(relevance.drop_vars("relevance_map"), out_dir / "cue_relevance.nc"),
             "table": write_dataset_atomic(table, out_dir / "cue_reliance.nc"),
             "ablation": write_dataset_atomic(ablated, out_dir / "cue_ablation.nc")}
    plot_cue_probe(table, out_dir / "cue_probe.png")
    paths["figure"] = out_dir / "cue_probe.png"
    return {"relevance": relevance, "table": table, "ablation": ablated, "paths": paths}
