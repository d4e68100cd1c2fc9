"""LRP of the ITD/ILD/IC cue network: relevance on the cue map per cue and band, with the attention weights.

The cue network (:mod:`xai_loc.models.cuenet`) is explained from its logits down to its
input, the cue map ``[3 cues (itd, ild, ic), bands, frames]``. Relevance does not go on to
the waveform: the front end's ITD is the arg-max lag of a cross-correlation (piecewise
constant, no gradient, no LRP rule), and its ILD and IC pass through normalizations and a
logarithm that no conserving LRP rule covers. The cue map is where the cues are
separable, which is what the probe of :mod:`xai_loc.experiments.cue_probe` asks about.

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
relevance on the cue map sums to the explained logit (tested in float64).

:func:`cue_relevance` explains cue maps; :func:`explain_cuenet` computes them from ear
signals with the model's front end first.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from xai_loc import __version__
from xai_loc.errors import InputError
from xai_loc.explain.targets import class_logit_seed
from xai_loc.models.cuenet import GRID, CueNet

__all__ = ["cue_relevance", "explain_cuenet"]


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
        raise InputError(f"target={target!r} is not allowed; use 'prediction', 'truth' or a class in "
                         f"0..{model.n_classes - 1}")
    labels = None
    if azimuth is not None:
        azimuth = np.asarray(azimuth, dtype=np.float64)
        if azimuth.shape != (len(x_all),):
            raise InputError(f"azimuth of shape {azimuth.shape} does not fit {len(x_all)} cue maps")
        labels = torch.as_tensor(GRID.nearest(azimuth))
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
        "predicted_azimuth": ("example", GRID.azimuths[np.concatenate(parts["pred"])], {"units": "degree"})}
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


def explain_cuenet(model, waveforms, **options: Any) -> dict[str, Any]:
    """:func:`cue_relevance` of the cue maps of ear signals ``(n, 2, n_samples)`` (the model's front end).

    Returns
    -------
    dict
        ``'cues'``: the Dataset of :func:`cue_relevance`.
    """
    from xai_loc.explain.attribute import resolve_model

    module, _ = resolve_model(model)
    with torch.no_grad():
        cues = module.cue_map(torch.as_tensor(np.asarray(waveforms), dtype=torch.float32)).numpy()
    return {"cues": cue_relevance(model, cues, **options)}
