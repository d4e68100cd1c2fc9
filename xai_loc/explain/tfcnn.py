"""LRP of the IPD/ILD TF-CNN (Pang, Liu & Li 2019): relevance on the IPD/ILD maps and the waveform.

The composite ``'tfcnn'`` (:mod:`xai_loc.explain.cue_composites`) goes from the output to the
waveform: dense layers Epsilon, convolutions Gamma (or Epsilon), BatchNorms merged into the
convolution before them (exact), ReLUs Pass; the cue stage
(:class:`~xai_loc.features.ipd_ild.InterauralCues`) gets
:class:`~xai_loc.explain.cue_composites.CueEnergyShare`, and the STFT
(:class:`~xai_loc.features.ipd_ild.SpectralConv`, linear and bias-free) Epsilon. The relevance
output seed is the model's output: the predicted azimuth in degrees for the regression head
(so sources on the left, negative azimuths, give negative totals), the predicted azimuth
class's logit for the multitask head. Gamma does not conserve relevance; with
``conv_rule='epsilon'`` and zero biases the chain is conservative to the samples.

:func:`explain_tfcnn` returns both levels from one backward pass (the front end's output is
captured on the way); the duplex probe of :mod:`xai_loc.experiments.ipd_ild_probe` reads them.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
from torch import nn

from xai_loc.acoustics.directions import LATERAL_GRID
from xai_loc.errors import InputError

__all__ = ["explain_tfcnn"]


def _seed(model: nn.Module):
    def seed(output: torch.Tensor) -> torch.Tensor:
        if model.head_name == "regression":
            return output
        cls = output[:, :LATERAL_GRID.n_azimuths].argmax(dim=1)
        return nn.functional.one_hot(cls, output.shape[1]).to(output) * output
    return seed


def explain_tfcnn(model, waveforms, *, composite: str = "tfcnn", batch_size: int = 8, example=None,
                  **options: Any) -> dict[str, Any]:
    """LRP relevance of a TF-CNN on its IPD/ILD maps and on the ear signals.

    Parameters
    ----------
    model
        A :class:`~xai_loc.models.tfcnn.TFCNN` with its front end, or a checkpoint path.
    waveforms
        ``(n, 2, n_samples)`` ear signals (array, tensor or DataArray); ear 0 = left.
    composite
        A registered composite (``'tfcnn'``); ``options`` go to it.
    example
        Coordinate values of the example axis (default ``0 .. n-1``).

    Returns
    -------
    dict
        ``'cues'``: DataArray ``(example, channel, frequency, frame)``; ``'waveform'``:
        DataArray ``(example, ear, time)``; both with per-example coords ``output`` (the
        seeded output value), ``response_azimuth`` (degrees, positive = right) and
        ``relevance_sum``; attrs: provenance (model, digest, composite and parameters, target).
    """
    import xarray as xr
    from zennit.attribution import Gradient

    from xai_loc import __version__
    from xai_loc.explain.attribute import resolve_model
    from xai_loc.explain.composites import make_composite
    from xai_loc.models.tfcnn import TFCNN

    model, info = resolve_model(model)  # loading a checkpoint needs TFCNN registered (imported above)
    if not isinstance(model, TFCNN) or not model.with_front_end:
        raise InputError("explain_tfcnn needs a TF-CNN ('tfcnn') with its front end (waveform inputs)")
    if hasattr(waveforms, "dims") and hasattr(waveforms, "values"):
        waveforms = waveforms.values
    x_all = np.asarray(waveforms.detach().cpu() if isinstance(waveforms, torch.Tensor) else waveforms)
    if x_all.ndim != 3 or x_all.shape[1:] != (2, model.n_samples):
        raise InputError(f"waveforms of shape {x_all.shape} are not allowed; the model takes (n, 2, {model.n_samples})")
    if not np.isfinite(x_all).all():
        raise InputError("waveforms hold NaN or infinite samples")
    dtype = next(model.parameters()).dtype
    composite_obj, params = make_composite(composite, model, **options)
    captured: dict[str, torch.Tensor] = {}

    def keep_output(module, inputs, output):
        output.register_hook(lambda grad: captured.__setitem__("cues", grad.detach()))

    wave_parts, cue_parts, out_parts, az_parts = [], [], [], []
    training = model.training
    model.eval()
    handle = model.front_end.register_forward_hook(keep_output)
    try:
        with Gradient(model, composite_obj) as attributor:
            for s in range(0, len(x_all), batch_size):
                x = torch.as_tensor(x_all[s:s + batch_size], dtype=dtype)
                output, relevance = attributor(x, _seed(model))
                seeded = _seed(model)(output.detach()).sum(dim=1)
                wave_parts.append(relevance.detach().double().numpy())
                cue_parts.append(captured.pop("cues").double().numpy())
                out_parts.append(seeded.double().numpy())
                az_parts.append(model.directions(output.detach())[0])
    finally:
        handle.remove()
        model.train(training)
    n = len(x_all)
    example = np.arange(n) if example is None else np.asarray(example)
    wave, cues = np.concatenate(wave_parts), np.concatenate(cue_parts)
    per_example = {"output": ("example", np.concatenate(out_parts)),
                   "response_azimuth": ("example", np.concatenate(az_parts), {"units": "degree",
                                                                               "convention": "positive = right"})}
    target = "predicted azimuth (degrees)" if model.head_name == "regression" else \
        "logit of the predicted azimuth class"
    attrs = {**info, "method": "lrp", "composite": composite, "composite_params": json.dumps(params, sort_keys=True),
             "target": target, "xai_loc_version": __version__}
    cue_da = xr.DataArray(
        cues, dims=("example", "channel", "frequency", "frame"),
        coords={"example": example, "channel": ["ipd", "ild"],
                "frequency": ("frequency", model.frequencies, {"units": "Hz"}),
                "frame": ("frame", model.frame_times, {"units": "s", "note": "frame centre"}), **per_example,
                "relevance_sum": ("example", cues.sum(axis=(1, 2, 3)))},
        name="relevance", attrs={**attrs, "level": "IPD/ILD maps"})
    wave_da = xr.DataArray(
        wave, dims=("example", "ear", "time"),
        coords={"example": example, "ear": ["left", "right"],
                "time": ("time", np.arange(model.n_samples) / model.fs, {"units": "s"}), **per_example,
                "relevance_sum": ("example", wave.sum(axis=(1, 2)))},
        name="relevance", attrs={**attrs, "level": "waveform"})
    return {"cues": cue_da, "waveform": wave_da}
