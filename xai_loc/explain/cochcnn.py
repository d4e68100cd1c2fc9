"""Relevance of the cochleagram CNN (Francl & McDermott 2022) on the cochleagram and the waveform.

:func:`explain_cochcnn` labels what the one pipeline (:func:`~xai_loc.explain.attribute.explain_arrays`)
returns at the model's two levels: one class's logit (target ``class_logit`` or
``true_class_logit``) propagated with the composite ``'cochcnn'`` (:mod:`xai_loc.explain.composites`)
through the CNN and the cochleagram front end down to the ear signals, the front end's output read
on the way: ``'cochleagram'`` ``(example, ear, frequency, time)``, frequency the band centres in
Hz, and ``'waveform'`` ``(example, ear, time)``. The probes of :mod:`xai_loc.experiments.cues` read it.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xai_loc.errors import InputError
from xai_loc.explain.targets import TARGETS, class_target

__all__ = ["explain_cochcnn"]


def explain_cochcnn(model, waveforms, *, target: str | int = "prediction", labels=None, composite: str = "cochcnn",
                    method: str = "lrp", batch_size: int = 4, device: str = "cpu", example=None,
                    **options: Any) -> dict[str, Any]:
    """Relevance of a cochleagram CNN on the waveform and on the cochleagram.

    Parameters
    ----------
    model
        A :class:`~xai_loc.models.cochleagram_cnn.CochleagramCNN` with its front end, or a
        checkpoint path.
    waveforms
        ``(n, 2, n_samples)`` ear signals (array, tensor or DataArray).
    target
        ``'prediction'`` (the arg-max class), ``'truth'`` (``labels``) or a class index:
        relevance is seeded with that class's logit (the others zero); or the name of a
        class target (``'class_probability'``, ``'class_contrast'`` ...).
    composite, method
        A registered composite (``'cochcnn'``) and method (``'lrp'``); ``options`` go to them
        (``conv_rule``, ``gamma``, ``epsilon``, ``front_epsilon``, ``maxpool`` ...).
    example
        Coordinate values of the example axis (default ``0 .. n-1``).

    Returns
    -------
    dict
        ``'waveform'``: DataArray ``(example, ear, time)``; ``'cochleagram'``: DataArray
        ``(example, ear, frequency, time)`` with ``frequency`` the band centres in Hz and
        ``time`` the frame times; per-example coords ``logit`` (the seeded logit),
        ``target_class``, ``relevance_sum``. With the composite ``'cochcnn'`` and
        ``front_epsilon=0`` the sums agree between the two levels up to rounding, at any input
        level (bias-free linear maps under LRP-0, elementwise steps under Pass); its default
        1e-6 absorbs some where the envelopes are small against it (0.1 % of the relevance of
        the shipped model at its training level, 9 % at -40 dB).
    """
    import xarray as xr

    from xai_loc.explain.attribute import explain_arrays, resolve_model

    model, info = resolve_model(model)
    if not getattr(model, "with_front_end", False):
        raise InputError("explain_cochcnn needs a cochleagram CNN with its front end (waveform inputs)")
    name, target_options = class_target(target, model.n_classes)
    needs_labels = TARGETS[name].needs_truth
    if needs_labels and (labels is None or len(labels) != len(waveforms)):
        raise InputError(f"target={target!r} needs one label per example")
    explainer, out = explain_arrays(model, waveforms, truth=labels if needs_labels else None,
                                    batch_size=batch_size, what="waveforms", target=name, method=method,
                                    composite=composite, device=device, levels=("waveform", "front_end"),
                                    **target_options, **options)
    wave, coch = out["levels"]["waveform"], out["levels"]["front_end"]
    n = len(wave)
    example = np.arange(n) if example is None else np.asarray(example)
    truth = torch.as_tensor(np.asarray(labels)) if needs_labels else None
    target_class = explainer.objective.chosen_class(torch.as_tensor(out["prediction"]), truth).numpy()
    attrs = explainer.provenance(**info, target=str(target), fs=model.fs, frame_rate=model.frame_rate)
    logit = np.take_along_axis(out["prediction"], target_class[:, None], axis=1)[:, 0]
    common = {"example": ("example", example), "logit": ("example", logit),
              "target_class": ("example", target_class.astype(np.int64)),
              "ear": ("ear", np.array(["left", "right"]))}
    wave_coords = {**common, "time": ("time", np.arange(wave.shape[-1]) / model.fs, {"units": "s"}),
                   "relevance_sum": ("example", wave.reshape(n, -1).sum(1))}
    wave_da = xr.DataArray(wave, dims=("example", "ear", "time"), name="relevance", coords=wave_coords,
                           attrs={**attrs, "level": "waveform"})
    coch_da = xr.DataArray(
        coch, dims=("example", "ear", "frequency", "time"), name="relevance", attrs={**attrs, "level": "cochleagram"},
        coords={**common, "frequency": ("frequency", model.centre_frequencies, {"units": "Hz"}),
                "time": ("time", np.arange(coch.shape[-1]) / model.frame_rate, {"units": "s"}),
                "relevance_sum": ("example", coch.reshape(n, -1).sum(1))})
    return {"waveform": wave_da, "cochleagram": coch_da}
