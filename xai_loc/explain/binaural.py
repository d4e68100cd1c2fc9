"""One entry point for the binaural localizers: explain ear signals, whatever the family.

Every family is explained by the one pipeline (:func:`~xai_loc.explain.attribute.explain_arrays`:
any method, a target of the model's output kind, relevance at the levels the model declares);
what differs is how the levels are labelled (a cochleagram's bands, IPD/ILD maps' bins, cue
maps' cues), so :data:`EXPLAINERS` registers one labelling function per architecture name
(:mod:`~xai_loc.explain.cochcnn`, :mod:`~xai_loc.explain.tfcnn`, :mod:`~xai_loc.explain.cuenet`,
:func:`~xai_loc.explain.attn_lrp.explain_bast`); :func:`explain_ears` picks it from the model
(or checkpoint card) and returns every level, as labelled xarray objects with provenance attrs:

``cochcnn``  ``'waveform'`` (example, ear, time), ``'cochleagram'`` (example, ear, frequency, time)
``tfcnn``    ``'waveform'`` (example, ear, time), ``'cues'`` (example, channel, frequency, frame)
``cuenet``   ``'cues'``: Dataset of relevance per (example, cue, band), the per-frame maps and
             the attention weights (the ITD is an arg-max: relevance stops at the cue map)
``bast``     ``'waveform'`` (example, ear, time), ``'spectrogram'`` (example, ear, frequency, time)
             by ``method`` ``'attn_lrp'`` (default) or another registered gradient or perturbation
             method; ``'integrated_gradients'`` and ``'attention_rollout'`` give ``'spectrogram'`` only

A target is named as :data:`TARGET_NAMES` says for the model's output kind (:func:`binaural_target`): ``'prediction'``
(the default, the model's own answer), the kind's registered targets and a few shortcuts (``'truth'``, a class
index, ``'sin'`` ...); :func:`target_help` lists them. The levels each family returns are known before explaining
(:data:`EAR_LEVELS`), so that :func:`check_out_folder` refuses a folder of another family's explanation first.

The targets that explain against the truth (``'truth'``, ``'toward_truth'``, ``'angular_error'`` ...) take
the examples' true directions, ``explain_ears(..., azimuth=, elevation=)`` (SOFA azimuths: counter-clockwise,
90 = left, whatever the family), which :data:`TRUTH_OPTIONS` hands to each explainer as it takes them (azimuths
in the family's convention, grid labels); :func:`read_ear_examples` reads them from a store beside the ear
signals, converted from the convention the store records (:data:`TO_SOFA`). :func:`write_ear_relevance`
stores the levels, one netCDF file per level, atomically.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xai_loc.acoustics.directions import from_sofa_azimuth, to_sofa_azimuth
from xai_loc.data import bast_scenes, binaural_store, ipd_ild_scenes
from xai_loc.data.resumable import StoreKind
from xai_loc.errors import InputError
from xai_loc.explain.attn_lrp import NAMED_TARGETS, bast_levels, explain_bast, registry_target
from xai_loc.explain.cochcnn import explain_cochcnn
from xai_loc.explain.cuenet import explain_cuenet
from xai_loc.explain.targets import TARGETS, class_target, targets_for
from xai_loc.explain.tfcnn import explain_tfcnn

__all__ = ["EAR_LEVELS", "EAR_SIGNALS", "EAR_STORES", "EXPLAINERS", "LEVELS", "TARGET_NAMES", "TO_SOFA",
           "TRUTH_OPTIONS", "TargetNames", "binaural_target", "check_out_folder", "explain_ears", "read_ear_examples",
           "read_ear_signals", "target_help", "write_ear_relevance"]

#: Each family's store of ear signals by the format it records: :func:`read_ear_examples` opens a store as its kind,
#: so that a message about a damaged one names the command that rebuilds it.
EAR_STORES: dict[str, StoreKind] = {kind.format: kind for kind in (binaural_store.BINAURAL, ipd_ild_scenes.SCENES,
                                                                   bast_scenes.BAST_SCENES)}

#: Any store of ear signals (binaural, TF-CNN and BAST scene stores), as :func:`read_ear_examples` opens a store that
#: records none of the formats of :data:`EAR_STORES`, and finds which it records.
EAR_SIGNALS = StoreKind("waveform store", "waveforms", ("example", "ear", "time"), "pressure (simulation units)",
                        "the command that made it")

#: SOFA azimuths of a store's ``azimuth`` by the convention its attrs record (binaural and BAST scene stores: SOFA;
#: TF-CNN scene stores: positive = right).
TO_SOFA: dict[str, Callable[[np.ndarray], np.ndarray]] = {"SOFA, 90 = left": lambda a: np.mod(a, 360.0),
                                                           "positive = right": to_sofa_azimuth}


@dataclass(frozen=True)
class TargetNames:
    """The ``target=`` values the binaural explainers take for models of one output kind: the kind's registered
    targets (:func:`~xai_loc.explain.targets.targets_for`) and names and numbers that stand for one of them.

    Parameters
    ----------
    shortcuts
        Names that stand for a registered target, ``'prediction'`` (the default: the model's own answer) first.
    number
        What a number stands for, in words (``''``: none is taken).
    resolve
        ``resolve(model, target) -> (registered target, options)``; :class:`InputError` naming what is allowed.
    """

    shortcuts: tuple[str, ...]
    number: str
    resolve: Callable[[Any, Any], tuple[str, dict[str, Any]]]

    def allowed(self, kind: str) -> list[str]:
        """Every value a model of output ``kind`` takes, in words (the shortcuts first)."""
        return [*self.shortcuts, *filter(None, [self.number]), *targets_for(kind)]


def _class_target(model, target) -> tuple[str, dict[str, Any]]:
    """:func:`~xai_loc.explain.targets.class_target` over the classes the class targets read (a factorized head's
    azimuth block)."""
    factorized = getattr(model, "factorized_classes", False)
    return class_target(target, model.direction_grid.n_azimuths if factorized else model.n_classes)


def _azimuth_target(model, target) -> tuple[str, dict[str, Any]]:
    """``'prediction'``: the predicted azimuth (``'azimuth'``); a registered target of ``azimuth`` outputs: itself."""
    if target == "prediction":
        return "azimuth", {}
    if isinstance(target, str) and target in targets_for("azimuth"):
        return target, {}
    raise InputError(f"target={target!r} is not allowed; use 'prediction' or one of "
                     f"{', '.join(targets_for('azimuth'))}")


#: How the binaural explainers name the targets of each output kind of their models.
TARGET_NAMES: dict[str, TargetNames] = {
    "direction_classes": TargetNames(("prediction", "truth"), "a class index", _class_target),
    "azimuth": TargetNames(("prediction",), "", _azimuth_target),
    "cos_sin": TargetNames(NAMED_TARGETS, "an azimuth in degrees", lambda model, target: registry_target(target)),
}


def binaural_target(model, target) -> tuple[str, dict[str, Any]]:
    """The registered target (:data:`~xai_loc.explain.targets.TARGETS`) and options that ``target`` names for a
    binaural ``model`` (:data:`TARGET_NAMES` of its output kind); :class:`InputError` naming what is allowed."""
    return TARGET_NAMES[model.output_kind].resolve(model, target)


def target_help() -> str:
    """What ``target=`` each output kind of the binaural models takes (:data:`TARGET_NAMES`), naming the
    architectures whose default head has it; for ``--help``."""
    from xai_loc.models.registry import MODELS

    def shown(name: str) -> str:
        instead = name in TARGETS and TARGETS[name].lrp_instead
        return f"{name} (not with LRP: use {instead})" if instead else name

    return "; ".join(
        f"{kind} ({', '.join(arch for arch in EXPLAINERS if MODELS[arch].output_kind == kind)}): "
        f"{', '.join(map(shown, names.allowed(kind)))}" for kind, names in TARGET_NAMES.items())


def _explain_tfcnn(model, waveforms, *, target=None, **options: Any) -> dict[str, Any]:
    """:func:`~xai_loc.explain.tfcnn.explain_tfcnn` taking its targets as :func:`binaural_target` names them
    (``'prediction'``: its default, the predicted azimuth or its class's logit)."""
    if target is None or target == "prediction":
        return explain_tfcnn(model, waveforms, **options)
    name, named = binaural_target(model, target)
    return explain_tfcnn(model, waveforms, target=name, **named, **options)


#: Explanation of each binaural architecture: ``f(model, waveforms (n, 2, T), progress=..., **options) -> {level: x}``
EXPLAINERS: dict[str, Callable[..., dict[str, Any]]] = {"cochcnn": explain_cochcnn, "tfcnn": _explain_tfcnn,
                                                         "cuenet": explain_cuenet, "bast": explain_bast}

#: The levels each architecture's explainer returns (:func:`explain_ears`): ``f(model, method | None) -> levels``,
#: known before explaining (:func:`check_out_folder`).
EAR_LEVELS: dict[str, Callable[[Any, str | None], tuple[str, ...]]] = {
    "cochcnn": lambda model, method: ("waveform", "cochleagram"), "tfcnn": lambda model, method: ("waveform", "cues"),
    "cuenet": lambda model, method: ("cues",),
    "bast": lambda model, method: bast_levels(model, method or "attn_lrp")}


def _azimuth_options(model, azimuth, elevation) -> dict[str, Any]:
    """BAST and the cue network take the true azimuths themselves (``azimuth=``, SOFA)."""
    return {"azimuth": azimuth}


def _cochcnn_options(model, azimuth, elevation) -> dict[str, Any]:
    """The cochleagram CNN takes grid labels, as it is trained (the elevation only where its grid has several)."""
    grid = model.direction_grid
    return {"labels": grid.label(azimuth, elevation if grid.n_elevations > 1 else None)}


def _tfcnn_options(model, azimuth, elevation) -> dict[str, Any]:
    """The TF-CNN takes the azimuths (regression head) or, as it is trained, the nearest class of its grid's
    azimuth block (multitask head, whose class targets read that block); both positive = right."""
    azimuth = from_sofa_azimuth(azimuth)
    if model.output_kind == "azimuth":
        return {"truth": azimuth}
    grid = model.direction_grid
    return {"truth": grid.nearest(azimuth, elevation) % grid.n_azimuths}


#: How each architecture's explainer takes the true directions of the examples:
#: ``f(model, azimuth, elevation | None) -> options`` (degrees, SOFA azimuths).
TRUTH_OPTIONS: dict[str, Callable[..., dict[str, Any]]] = {"cochcnn": _cochcnn_options, "tfcnn": _tfcnn_options,
                                                           "cuenet": _azimuth_options, "bast": _azimuth_options}


def _architecture(model) -> str:
    if isinstance(model, (str, os.PathLike)):
        from xai_loc.models.checkpoint import read_card

        return read_card(model)["architecture"]
    return getattr(model, "arch_name", "") or type(model).__name__


def explain_ears(model, waveforms, *, azimuth=None, elevation=None, progress: bool = False,
                 **options: Any) -> dict[str, Any]:
    """Relevance of a binaural localizer for ear signals ``(n, 2, n_samples)`` at the model's rate.

    Parameters
    ----------
    model
        A binaural localizer with its front end, or a checkpoint path (provenance then
        includes the checkpoint's digest).
    waveforms
        Array, tensor or DataArray; ear 0 is the left ear.
    azimuth, elevation
        True directions of the examples (degrees; SOFA azimuths, counter-clockwise, 90 = left, for every family:
        :func:`read_ear_examples`), for the targets that need them (``'truth'``, ``'toward_truth'`` ...); passed
        to the family's explainer as it takes them (:data:`TRUTH_OPTIONS`).
    progress
        Show a progress bar (examples explained).
    options
        Options of the family's explainer (``target``, ``composite`` and its rule options,
        ``method`` for BAST, ``batch_size`` ...).

    Returns
    -------
    dict
        Level name -> DataArray or Dataset (see the module docs).
    """
    arch = _architecture(model)
    if arch not in EXPLAINERS:
        raise InputError(f"model architecture {arch!r} has no binaural explainer; allowed: {', '.join(EXPLAINERS)}")
    if hasattr(waveforms, "dims") and hasattr(waveforms, "values"):
        waveforms = waveforms.values
    x = np.asarray(waveforms.detach().cpu() if isinstance(waveforms, torch.Tensor) else waveforms)
    if x.ndim != 3 or x.shape[1] != 2:
        raise InputError(f"ear signals of shape {x.shape} are not allowed; give (examples, 2 ears, samples)")
    if not np.isfinite(x).all():
        raise InputError("ear signals hold NaN or infinite samples")
    if azimuth is None and elevation is not None:
        raise InputError("elevation= without azimuth= is not allowed; give both true angles (degrees)")
    from xai_loc.explain.attribute import resolve_model

    module, info = resolve_model(model)  # loaded once; the explainer takes the module
    target = options.get("target")
    if target is not None and target != "prediction":  # a class index sets cls=, an azimuth in degrees ...
        twice = sorted(binaural_target(module, target)[1].keys() & options.keys())  # the caller's options only
        if twice:
            raise InputError(f"{twice[0]}= is not allowed with target={target!r}, which sets it; leave it out")
    if azimuth is not None:
        truth = TRUTH_OPTIONS[arch](module, azimuth, elevation)
        twice = sorted(truth.keys() & options.keys())
        if twice:
            raise InputError(f"{twice[0]}= and azimuth= are not allowed together; give the true directions once")
        options.update(truth)
    result = EXPLAINERS[arch](module, x, progress=progress, **options)
    for data in result.values():  # the checkpoint's provenance (file name, digest, condition), as from its path
        data.attrs.update({k: v for k, v in info.items() if k not in data.attrs})
    return result


def _ear_store(path: Path) -> StoreKind:
    """The kind of the store of ear signals at ``path`` by the format it records (:data:`EAR_STORES`), else
    :data:`EAR_SIGNALS`."""
    with EAR_SIGNALS.open(path) as ds:  # verified: its metadata is whole
        try:
            found = json.loads(ds.attrs["config"]).get("format")
        except (KeyError, TypeError, ValueError, AttributeError):
            return EAR_SIGNALS
    return EAR_STORES.get(found, EAR_SIGNALS)


def read_ear_signals(path: str | os.PathLike, fs: int, n_samples: int) -> np.ndarray:
    """The ear signals of :func:`read_ear_examples`."""
    return read_ear_examples(path, fs, n_samples, truth=False)[0]


def read_ear_examples(path: str | os.PathLike, fs: int, n_samples: int, *,
                      truth: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """Ear signals ``(n, 2, n_samples)`` from a stereo sound file or a finished store with ``waveforms``, and their
    true directions where the store holds them.

    A sound file (anything soundfile reads, complete: :func:`~xai_loc.acoustics.speech.read_sound`) must be stereo
    at ``fs``; it is cut into consecutive ``n_samples`` windows (a shorter tail is dropped). A store (``.zarr``: a
    binaural, TF-CNN or BAST scene store) is opened verified as the kind its format names (:data:`EAR_STORES`,
    whose messages name the command that rebuilds it; else :data:`EAR_SIGNALS`) and must
    hold ``waveforms (example, ear, time)`` of ``n_samples`` samples (at ``fs`` where its
    attrs record a rate). With ``truth``, a store's true directions are read too.

    Returns
    -------
    waveforms, truth
        The ear signals; ``{'azimuth': (n,), 'elevation': (n,)}`` in degrees, the azimuths converted to SOFA
        (counter-clockwise, 90 = left) from the convention the store records (:data:`TO_SOFA`), the elevation
        where the store has one: :func:`explain_ears` takes them; None for a sound file, a store without
        azimuths or ``truth=False``.

    Raises
    ------
    InputError
        For a missing, unreadable or truncated file, an unfinished, damaged or foreign store, a wrong channel count,
        sample rate or length; with ``truth``, for a store's azimuths of no known convention.
    """
    from xai_loc.acoustics.speech import read_sound

    path = Path(path)
    if not path.exists():
        raise InputError(f"input {path} does not exist")
    if path.is_dir() or ".zarr" in path.suffixes:
        with _ear_store(path).open(path) as ds:
            if ds["waveforms"].shape[1:] != (2, n_samples):
                raise InputError(f"{path} holds no waveforms (example, 2 ears, {n_samples} samples) for this model")
            if "fs" in ds.attrs and int(ds.attrs["fs"]) != fs:
                raise InputError(f"{path} is sampled at {ds.attrs['fs']} Hz; the model needs {fs} Hz")
            if not truth or "azimuth" not in ds.variables:
                return ds["waveforms"].values, None
            convention = ds["azimuth"].attrs.get("convention")
            if convention not in TO_SOFA:
                raise InputError(f"{path} records azimuth convention {convention!r}, which is not allowed; "
                                 f"allowed: {', '.join(map(repr, TO_SOFA))}")
            directions = {"azimuth": TO_SOFA[convention](ds["azimuth"].values.astype(np.float64))}
            if "elevation" in ds.variables:
                directions["elevation"] = ds["elevation"].values.astype(np.float64)
            return ds["waveforms"].values, directions
    audio, rate = read_sound(path)
    if audio.shape[1] != 2:
        raise InputError(f"{path} has {audio.shape[1]} channel(s); the model needs 2 (left, right)")
    if rate != fs:
        raise InputError(f"{path} is sampled at {rate} Hz; the model needs {fs} Hz")
    n = audio.shape[0] // n_samples
    if n == 0:
        raise InputError(f"{path} is {audio.shape[0]} samples long; the model needs at least {n_samples}")
    return audio[: n * n_samples].reshape(n, n_samples, 2).transpose(0, 2, 1).copy(), None


#: Every level an explainer of :data:`EXPLAINERS` returns (the module docs), i.e. the file names
#: :func:`write_ear_relevance` may find in a folder from an earlier explanation.
LEVELS = ("waveform", "cochleagram", "cues", "spectrogram")


def check_out_folder(folder: str | os.PathLike, levels) -> None:
    """Refuse ``folder`` where it holds levels of an earlier explanation that one of ``levels`` (those of
    :data:`EAR_LEVELS`, known before explaining) would not replace (another family's): results are never mixed."""
    folder = Path(folder)
    stale = [f"{level}.nc" for level in LEVELS if level not in levels and (folder / f"{level}.nc").exists()]
    if stale:
        raise InputError(f"{folder} holds {', '.join(stale)} of another explanation, which this one would not "
                         "replace; results are never mixed: remove it or choose another --out")


def write_ear_relevance(result: dict[str, Any], folder: str | os.PathLike) -> list[Path]:
    """Write each level of :func:`explain_ears` to ``folder/<level>.nc`` (atomically); returns the paths.

    A folder holding levels of an earlier explanation that this one would not replace (another
    family's) is refused before anything is written (:func:`check_out_folder`).
    """
    import xarray as xr

    from xai_loc.io import write_files_atomic

    check_out_folder(folder, result)
    folder = Path(folder)
    return write_files_atomic({  # every level or none
        folder / f"{level}.nc": data.to_dataset(name=data.name or "relevance") if isinstance(data, xr.DataArray)
        else data for level, data in result.items()})
