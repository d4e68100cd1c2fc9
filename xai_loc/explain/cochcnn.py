"""LRP of the cochleagram CNN (Francl & McDermott 2022): relevance on the cochleagram and the waveform.

:func:`explain_cochcnn` seeds one class's logit (:func:`~xai_loc.explain.targets.class_logit_seed`)
and propagates it with the composite ``'cochcnn'`` (:mod:`xai_loc.explain.composites`) through
the CNN and the cochleagram front end down to the ear signals; the front end's output is
captured on the way (a hook on its gradient), so one backward pass gives both levels:
``'cochleagram'`` ``(example, ear, frequency, time)``, frequency the band centres in Hz, and
``'waveform'`` ``(example, ear, time)``. The probes of :mod:`xai_loc.experiments.cues` read it.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from xai_loc.errors import InputError
from xai_loc.explain.targets import class_logit_seed

__all__ = ["explain_cochcnn"]


def explain_cochcnn(model, waveforms, *, target: str | int = "prediction", labels=None, composite: str = "cochcnn",
                    batch_size: int = 4, device: str = "cpu", example=None, **options: Any) -> dict[str, Any]:
    """LRP relevance of a cochleagram CNN on the waveform and on the cochleagram.

    Parameters
    ----------
    model
        A :class:`~xai_loc.models.cochleagram_cnn.CochleagramCNN` with its front end, or a
        checkpoint path.
    waveforms
        ``(n, 2, n_samples)`` ear signals (array, tensor or DataArray).
    target
        ``'prediction'`` (the arg-max class), ``'truth'`` (``labels``) or a class index:
        relevance is seeded with that class's logit (the others zero).
    composite
        A registered composite (``'cochcnn'``); ``options`` go to it (``conv_rule``,
        ``gamma``, ``epsilon``, ``maxpool`` ...).
    example
        Coordinate values of the example axis (default ``0 .. n-1``).

    Returns
    -------
    dict
        ``'waveform'``: DataArray ``(example, ear, time)``; ``'cochleagram'``: DataArray
        ``(example, ear, frequency, time)`` with ``frequency`` the band centres in Hz and
        ``time`` the frame times; per-example coords ``logit`` (the seeded logit),
        ``target_class``, ``relevance_sum``. The sums agree between the two levels: the
        front end conserves relevance (bias-free linear maps under LRP-0, elementwise
        steps under Pass).
    """
    import xarray as xr
    from zennit.attribution import Gradient

    from xai_loc.explain.attribute import resolve_model
    from xai_loc.explain.composites import make_composite
    from xai_loc.runtime import resolve_device

    model, info = resolve_model(model)
    if not getattr(model, "with_front_end", False):
        raise InputError("explain_cochcnn needs a cochleagram CNN with its front end (waveform inputs)")
    if target not in ("prediction", "truth") and not (isinstance(target, int) and 0 <= target < model.n_classes):
        raise InputError(f"target={target!r} is not allowed; use 'prediction', 'truth' or a class in "
                         f"0..{model.n_classes - 1}")
    if hasattr(waveforms, "dims") and hasattr(waveforms, "values"):
        waveforms = waveforms.values
    x_all = np.asarray(waveforms.detach().cpu() if isinstance(waveforms, torch.Tensor) else waveforms,
                       dtype=np.float64)
    first = next(model.parameters(), None)
    dtype = first.dtype if first is not None else torch.float32
    if x_all.ndim != 3 or x_all.shape[1:] != (2, model.n_samples):
        raise InputError(f"waveforms of shape {x_all.shape} are not allowed; the model takes (n, 2, {model.n_samples})")
    if not np.isfinite(x_all).all():
        raise InputError("waveforms hold NaN or infinite samples")
    if target == "truth":
        if labels is None or len(labels) != len(x_all):
            raise InputError("target='truth' needs one label per example")
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    device = resolve_device(device)
    composite_obj, params = make_composite(composite, model, **options)
    captured: dict[str, torch.Tensor] = {}

    def keep_output(module, inputs, output):
        output.register_hook(lambda grad: captured.__setitem__("cochleagram", grad.detach()))

    wave_parts, coch_parts, logit_parts, class_parts = [], [], [], []
    training = model.training
    model.to(device).eval()
    handle = model.front_end.register_forward_hook(keep_output)
    try:
        with Gradient(model, composite_obj) as attributor:
            for s in range(0, len(x_all), batch_size):
                x = torch.from_numpy(x_all[s:s + batch_size]).to(device, dtype)
                lab = None if target != "truth" else labels[s:s + batch_size]
                output, relevance = attributor(x, class_logit_seed(target, lab))
                cls = output.argmax(1) if target == "prediction" else (
                    lab.to(device) if target == "truth" else torch.full((len(x),), int(target), device=device))
                wave_parts.append(relevance.detach().cpu().numpy())
                coch_parts.append(captured.pop("cochleagram").cpu().numpy())
                logit_parts.append(output.detach().gather(1, cls[:, None])[:, 0].cpu().numpy())
                class_parts.append(cls.cpu().numpy())
    finally:
        handle.remove()
        model.train(training)
    wave, coch = np.concatenate(wave_parts), np.concatenate(coch_parts)
    n = len(wave)
    example = np.arange(n) if example is None else np.asarray(example)
    attrs = {**info, "method": "lrp", "composite": composite, "composite_params": json.dumps(params, sort_keys=True),
             "target": str(target), "fs": model.fs, "frame_rate": model.frame_rate}
    common = {"example": ("example", example), "logit": ("example", np.concatenate(logit_parts)),
              "target_class": ("example", np.concatenate(class_parts).astype(np.int64)),
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
