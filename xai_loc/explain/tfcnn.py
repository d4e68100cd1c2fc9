"""LRP of the IPD/ILD TF-CNN (Pang, Liu & Li 2019): relevance on the IPD/ILD maps and the waveform.

:func:`explain_tfcnn` labels what the one pipeline (:func:`~xai_loc.explain.attribute.explain_arrays`)
returns at the model's two levels. The composite ``'tfcnn'`` (:mod:`xai_loc.explain.cue_composites`)
goes from the output to the waveform: dense layers Epsilon, convolutions Gamma (or Epsilon),
BatchNorms merged into the convolution before them (exact), ReLUs Pass; the cue stage
(:class:`~xai_loc.features.ipd_ild.InterauralCues`) gets
:class:`~xai_loc.explain.cue_composites.CueEnergyShare`, and the STFT
(:class:`~xai_loc.features.ipd_ild.SpectralConv`, linear and bias-free) Epsilon. The target is
the predicted azimuth in degrees for the regression head (target ``'azimuth'``; sources on the
left, negative azimuths, give negative totals), the predicted azimuth class's logit for the
multitask head (``'class_logit'`` over the azimuth block). Gamma does not conserve relevance; with
``conv_rule='epsilon'`` and zero biases the chain is conservative to the samples.

:func:`explain_tfcnn` returns both levels from one backward pass (the front end's output is
read on the way); the duplex probe of :mod:`xai_loc.experiments.ipd_ild_probe` reads them.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xai_loc.errors import InputError

__all__ = ["explain_tfcnn"]


def explain_tfcnn(model, waveforms, *, target: str | None = None, composite: str = "tfcnn", method: str = "lrp",
                  batch_size: int = 8, example=None, **options: Any) -> dict[str, Any]:
    """Relevance of a TF-CNN on its IPD/ILD maps and on the ear signals.

    Parameters
    ----------
    model
        A :class:`~xai_loc.models.tfcnn.TFCNN` with its front end, or a checkpoint path.
    waveforms
        ``(n, 2, n_samples)`` ear signals (array, tensor or DataArray); ear 0 = left.
    target
        A target of the model's output kind (:func:`~xai_loc.explain.targets.targets_for`);
        default ``'azimuth'`` (regression head) or ``'class_logit'`` (multitask head).
    composite, method
        A registered composite (``'tfcnn'``) and method (``'lrp'``); ``options`` go to them, and
        ``truth=`` (true azimuths, or classes of the multitask head) to the targets that need it.
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

    from xai_loc.explain.attribute import explain_arrays, resolve_model
    from xai_loc.models.tfcnn import TFCNN

    model, info = resolve_model(model)  # loading a checkpoint needs TFCNN registered (imported above)
    if not isinstance(model, TFCNN) or not model.with_front_end:
        raise InputError("explain_tfcnn needs a TF-CNN ('tfcnn') with its front end (waveform inputs)")
    regression = model.output_kind == "azimuth"
    default = "azimuth" if regression else "class_logit"
    explainer, out = explain_arrays(model, waveforms, batch_size=batch_size, what="waveforms",
                                    target=default if target is None else target, method=method,
                                    composite=composite, levels=("waveform", "front_end"), **options)
    wave, cues = out["levels"]["waveform"].astype(np.float64), out["levels"]["front_end"].astype(np.float64)
    n = len(wave)
    example = np.arange(n) if example is None else np.asarray(example)
    azimuth = model.decode(torch.as_tensor(out["prediction"]))["azimuth"].double().numpy()
    per_example = {"output": ("example", out["attr_output"].astype(np.float64).sum(1)),
                   "response_azimuth": ("example", azimuth, {"units": "degree", "convention": "positive = right"})}
    if target is None:
        target = "predicted azimuth (degrees)" if regression else "logit of the predicted azimuth class"
    attrs = explainer.provenance(**info, target=target)
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
