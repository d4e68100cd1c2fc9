"""xai-loc: explainability toolkit for neural sound-source localizers.

The package is organised along the data flow, one subpackage per stage::

    xai_loc.acoustics   rooms, arrays, image-source RIRs, HRTFs, speech, scene rendering
    xai_loc.data        presets (the paper's room/array/grid/splits) and dataset stores
    xai_loc.features    front ends (cochleagram, IPD/ILD, binaural cue maps, spectrogram)
    xai_loc.models      localizers (LocCNN, SampleCNN, cochleagram CNN, TF-CNN, cue network, BAST),
                        checkpoints, training
    xai_loc.explain     LRP (zennit) and captum attributions, relevance stores, audit
    xai_loc.experiments perturbation curves, TDOA and SRP probes, cue probes
    xai_loc.plots       figures and tables drawn from stored results
    xai_loc.study       the whole study of the paper (reproduce), across every stage

The common path of a notebook reads as a few calls from the package itself::

    import xai_loc as xl
    model = xl.load_model(xl.shipped_checkpoint("loccnn", 0.6, 10))
    split = xl.simulate_windows(xl.paper_scene(), "test", 0.6, 10, n_sources=1)
    relevance = xl.explain(model, split.signals.numpy(), positions=split.source_position)
    curves = xl.deletion_predictions(model, split.signals, (0, 10, 30), ["relevance", "random"],
                                     relevance=torch.as_tensor(relevance.values))

Those names are imported on first use (module ``__getattr__``), so ``import xai_loc`` stays
cheap: it loads neither torch nor xarray. ``xl.explain`` is the subpackage ``xai_loc.explain``, which calls
:func:`xai_loc.explain.explain` when called.
"""
from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

from xai_loc.errors import InputError

try:
    __version__ = version("xai-loc")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

#: The public surface for notebooks and scripts: name -> module it lives in (loaded on first use).
_LAZY = {
    # scenes and data
    "paper_scene": "xai_loc.data.scene", "load_scene": "xai_loc.data.scene",
    "simulate_windows": "xai_loc.data.store", "simulate_dataset": "xai_loc.data.store",
    "open_signals": "xai_loc.data.store",
    # models
    "load_model": "xai_loc.models.checkpoint", "read_card": "xai_loc.models.checkpoint",
    "build_model": "xai_loc.models.registry", "shipped_checkpoint": "xai_loc.models.zoo",
    "data_convention": "xai_loc.models.zoo", "evaluate_checkpoint": "xai_loc.models.evaluation",
    # explanations
    "explain": "xai_loc.explain.attribute", "explain_store": "xai_loc.explain.store",
    "open_relevance": "xai_loc.explain.store", "write_wavs": "xai_loc.explain.store",
    # experiments and figures
    "deletion_predictions": "xai_loc.experiments.perturbation", "run_perturbation": "xai_loc.experiments.perturbation",
    "run_tdoa": "xai_loc.experiments.tdoa_probe", "plot_perturbation": "xai_loc.plots.perturbation",
    "redraw": "xai_loc.plots.redraw", "ModelSet": "xai_loc.experiments.modelset",
    "EXPERIMENTS": "xai_loc.experiments.registry", "run_experiment": "xai_loc.study",
}

__all__ = ["InputError", "__version__", *sorted(_LAZY)]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        # later look-ups skip this function; a name the import just bound to a subpackage keeps it ('explain': the
        # import system binds xai_loc.explain here whichever way it is first imported, so that subpackage is
        # callable as the function, and `import xai_loc.explain as e` always gets the subpackage)
        return globals().setdefault(name, value)
    raise AttributeError(f"module 'xai_loc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
