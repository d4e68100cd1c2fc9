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

:func:`cue_relevance` explains cue maps through the one pipeline
(:func:`~xai_loc.explain.attribute.explain_arrays`, target ``class_logit`` or ``true_class_logit``),
reading the relevance of each cue's embedding as a level on the way (the branch outputs);
:func:`explain_cuenet` computes the cue maps from ear signals with the model's front end first.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xai_loc.errors import InputError
from xai_loc.explain.targets import TARGETS, class_target
from xai_loc.models.cuenet import CueNet

__all__ = ["cue_relevance", "explain_cuenet", "on_cue_maps"]


def on_cue_maps(model: CueNet) -> CueNet:
    """``model`` taking cue maps: the same classifier without the front end, in the same mode (the caller's random
    generators are left as they were)."""
    from xai_loc.models.trainer import seeded

    if not model.with_front_end:
        return model
    first = next(model.parameters())
    with seeded(0):  # the twin's initial weights are replaced below
        twin = CueNet(**{**model.config, "front_end": False}).to(first.device, first.dtype)
    twin.classifier.load_state_dict(model.classifier.state_dict())
    return twin.train(model.training)


def cue_relevance(model, cues, *, azimuth=None, target: str | int = "prediction", composite: str = "cuenet",
                  method: str = "lrp", batch_size: int = 64, example=None, **options: Any):
    """Relevance of a cue network on cue maps, per cue and band, with the attention weights.

    Parameters
    ----------
    model
        A :class:`~xai_loc.models.cuenet.CueNet` or a checkpoint path.
    cues
        Cue maps ``(n, 3, bands, frames)`` (array, tensor or DataArray).
    azimuth
        True azimuths (degrees), needed for ``target='truth'`` and recorded when given.
    target
        ``'prediction'`` (arg-max class), ``'truth'`` or a class index: the seeded logit; or
        the name of a class target (``'class_probability'`` ...).
    composite, method, options
        A registered composite (``'cuenet'``) and method (``'lrp'``) and their options
        (``first_rule``, ``conv_rule`` ...).

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
    from xai_loc.explain.attribute import resolve_model

    model, info = resolve_model(model)
    return _cue_relevance(model, info, cues, azimuth=azimuth, target=target, composite=composite, method=method,
                          batch_size=batch_size, example=example, **options)


def _cue_relevance(model, info: dict[str, Any], cues, *, azimuth=None, target: str | int = "prediction",
                   composite: str = "cuenet", method: str = "lrp", batch_size: int = 64, example=None,
                   **options: Any):
    """:func:`cue_relevance` of a resolved model with its provenance ``info``."""
    import xarray as xr

    from xai_loc.explain.attribute import explain_arrays
    from xai_loc.features.binaural_cues import CUES

    if not isinstance(model, CueNet):
        raise InputError(f"cue_relevance needs a cue network ('cuenet'), not {type(model).__name__}")
    name, target_options = class_target(target, model.n_classes)
    labels = None
    if azimuth is not None:
        azimuth = np.asarray(azimuth, dtype=np.float64)
        if azimuth.shape != (len(cues),):
            raise InputError(f"azimuth of shape {azimuth.shape} does not fit {len(cues)} cue maps")
        if not np.isfinite(azimuth).all():  # the nearest direction of NaN would be the grid's first
            raise InputError("azimuth holds NaN or infinite values; give degrees for every cue map")
        labels = model.direction_grid.nearest(azimuth)
    elif TARGETS[name].needs_truth:
        raise InputError(f"target={target!r} needs the true azimuths (azimuth=...)")
    net = on_cue_maps(model)
    # a branch's output is the attention's input: the relevance there is each cue's share of the fusion
    branches = tuple(f"classifier.branches.{c}" for c in CUES)
    explainer, out = explain_arrays(net, cues, truth=labels if TARGETS[name].needs_truth else None,
                                    batch_size=batch_size,
                                    what="cue maps", target=name, method=method, composite=composite,
                                    levels=("waveform", *branches), **target_options, **options)
    rmap = out["relevance"]
    n = len(rmap)
    x = torch.as_tensor(np.asarray(getattr(cues, "values", cues)))
    training = net.training
    net.eval()
    with torch.no_grad():
        first = next(net.parameters())
        attention = np.concatenate([_host(net.attention(x[s:s + batch_size].to(first)))
                                    for s in range(0, n, batch_size)])
    net.train(training)
    predicted = out["prediction"].argmax(1)
    truth = torch.as_tensor(labels) if TARGETS[name].needs_truth else None
    target_class = explainer.objective.chosen_class(torch.as_tensor(out["prediction"]), truth).numpy()
    example = np.arange(n) if example is None else np.asarray(example)
    coords: dict[str, Any] = {
        "example": example, "cue": list(CUES), "band": np.arange(model.n_bands),
        "frequency": ("band", model.centre_frequencies, {"units": "Hz"}),
        "frame": np.arange(model.n_frames),
        "target_class": ("example", np.asarray(target_class, dtype=np.int64)),
        "predicted_azimuth": ("example", model.direction_grid.azimuths[predicted], {"units": "degree"})}
    if azimuth is not None:
        coords["azimuth"] = ("example", azimuth, {"units": "degree"})
    attrs = explainer.provenance(
        **info, target=str(target), level="cue map", levels=["cue map", *branches],  # its input is the cue map
        attention_treatment="weights held constant (gate); relevance to the cue embeddings only",
        convention="azimuth counter-clockwise from the front, 90 = left (SOFA)")
    fusion = np.stack([out["levels"][b].sum(-1) for b in branches], axis=1)
    logit = np.take_along_axis(out["prediction"], np.asarray(target_class)[:, None], axis=1)[:, 0]
    return xr.Dataset(
        {"relevance": (("example", "cue", "band"), rmap.sum(-1)),
         "relevance_map": (("example", "cue", "band", "frame"), rmap.astype(np.float32)),
         "fusion_relevance": (("example", "cue"), fusion),
         "attention": (("example", "cue"), attention),
         "logit": ("example", logit)},
        coords=coords, attrs=attrs)


def _host(values: torch.Tensor) -> np.ndarray:
    """``values`` as a NumPy array (bfloat16, which NumPy lacks, as float32:
    :data:`~xai_loc.explain.attribute.HOST_DTYPES`)."""
    from xai_loc.explain.attribute import HOST_DTYPES

    return values.to(HOST_DTYPES.get(values.dtype, values.dtype)).cpu().numpy()


def explain_cuenet(model, waveforms, **options: Any) -> dict[str, Any]:
    """:func:`cue_relevance` of the cue maps of ear signals ``(n, 2, n_samples)`` (the model's front end).

    Returns
    -------
    dict
        ``'cues'``: the Dataset of :func:`cue_relevance`.
    """
    from xai_loc.checks import check_integer
    from xai_loc.explain.attribute import placed, resolve_model
    from xai_loc.runtime import resolve_device

    module, info = resolve_model(model)  # loaded once
    if not isinstance(module, CueNet) or not module.with_front_end:
        raise InputError("explain_cuenet needs a cue network ('cuenet') with its front end (waveform inputs)")
    device = resolve_device(str(options.get("device", "cpu")))
    size = check_integer("batch_size", options.get("batch_size", 64), minimum=1)
    x = torch.as_tensor(np.asarray(waveforms))
    dtype = next(module.parameters()).dtype  # the front end runs in the model's dtype, in eval mode, on device
    with placed(module, device), torch.no_grad():
        cues = torch.cat([module.front_end(x[s:s + size].to(device, dtype)).cpu() for s in range(0, len(x), size)])
    return {"cues": _cue_relevance(module, info, _host(cues), **options)}
