"""xai-loc: explainability toolkit for neural sound-source localizers.

The package is organised along the data flow, one subpackage per stage::

    xai_loc.acoustics   rooms, arrays, image-source RIRs, HRTFs, speech, scene rendering
    xai_loc.data        presets (the paper's room/array/grid/splits) and dataset stores
    xai_loc.features    front ends (cochleagram)
    xai_loc.models      localizers (LocCNN, SampleCNN, cochleagram CNN), checkpoints, training
    xai_loc.explain     LRP (zennit) and captum attributions, relevance stores, audit
    xai_loc.experiments perturbation curves, TDOA and SRP probes, cue probes
    xai_loc.plots       figures and tables drawn from stored results
    xai_loc.study       the whole study of the paper (reproduce), across every stage

Subpackages are imported on demand so that ``import xai_loc`` stays cheap.
"""
from importlib.metadata import PackageNotFoundError, version

from xai_loc.errors import InputError

try:
    __version__ = version("xai-loc")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["InputError", "__version__"]
