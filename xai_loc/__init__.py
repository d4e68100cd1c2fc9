"""xai-loc: explainability toolkit for neural sound-source localizers.

The package is organised along the data flow, one subpackage per stage::

    xai_loc.acoustics   rooms, arrays, image-source RIRs, speech, scene rendering
    xai_loc.data        presets (the paper's room/array/grid/splits) and dataset stores
    xai_loc.models      localizers (LocCNN, SampleCNN), checkpoints

Subpackages are imported on demand so that ``import xai_loc`` stays cheap.
"""
from importlib.metadata import PackageNotFoundError, version

from xai_loc.errors import InputError

try:
    __version__ = version("xai-loc")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["InputError", "__version__"]
