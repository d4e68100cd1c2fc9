"""Explanations of localizers: LRP (zennit), AttnLRP and captum attributions as labelled relevance.

One pipeline for every family and output kind: :class:`Explainer` binds a model, a method, a
target and the levels to read; :func:`explain_arrays` runs it over any inputs. :func:`explain`
returns the relevance of multichannel windows as an ``xarray.DataArray`` with provenance;
:func:`explain_store` does the same for a whole dataset store into a resumable zarr store.
Methods, composites and targets are registered by name:

    METHODS     'lrp', 'integrated_gradients', 'saliency', 'input_x_gradient', 'deeplift',
                'gradient_shap', 'occlusion'                       (xai_loc.explain.methods)
                'attn_lrp'                                         (xai_loc.explain.attn_lrp)
    COMPOSITES  'paper', 'paper-samplecnn-reversed-gate', 'epsilon', 'epsilon_plus_flat',
                'epsilon_gamma_box', 'epsilon_alpha2_beta1', 'cochcnn'
                                                                   (xai_loc.explain.composites)
                'tfcnn', 'cuenet'                                  (xai_loc.explain.cue_composites)
    NAMED_RULES what the composites' options first_rule, conv_rule and maxpool select: 'wsquare', 'flat',
                'zplus', 'epsilon', 'gamma', 'zbox'; max-pools 'wta', 'norm', 'smooth'
                                                                   (xai_loc.explain.composites)
    TARGETS     per output kind (xai_loc.explain.targets): positions 'truth', 'prediction', 'x',
                'y', 'z', 'error', 'contrast'; classes 'class_logit', 'true_class_logit',
                'class_contrast', 'class_log_odds', 'true_class_log_odds', 'class_probability',
                'true_class_probability' (the probabilities for gradient and perturbation methods only: LRP
                takes the log-odds); angles
                'azimuth', 'elevation', 'angular_error', 'direction', 'true_direction'

The subpackage is callable: ``xai_loc.explain(...)`` (``xl.explain`` in a notebook) is :func:`explain`.

Relevance at every level a model declares (``'waveform'``, ``'front_end'`` ...) comes from one
mechanism, hooks on the level modules (:mod:`xai_loc.explain.levels`), for every method. A new
method is one :class:`Method` subclass registered with :func:`register_method`.

:func:`audit` checks that a composite covers a model; the ``.xai`` accessor
(:mod:`xai_loc.explain.accessor`) gives per-microphone, per-source and audio views, and
:func:`write_wavs` writes relevance as wav files.

Binaural localizers: :func:`xai_loc.explain.binaural.explain_ears` labels the pipeline's levels
in each family's terms: :mod:`~xai_loc.explain.cochcnn`, :mod:`~xai_loc.explain.tfcnn`,
:mod:`~xai_loc.explain.cuenet`, :mod:`~xai_loc.explain.attn_lrp` (BAST).
"""
import importlib
import inspect
import sys
import types

from xai_loc.explain import (
    accessor,  # noqa: F401  (registers the .xai accessor)
    attn_lrp,  # noqa: F401  (registers the method 'attn_lrp')
    cue_composites,  # noqa: F401  (registers 'tfcnn' and 'cuenet')
)
from xai_loc.explain.attribute import Explainer, explain, explain_arrays
from xai_loc.explain.audit import AuditReport, audit
from xai_loc.explain.canonizers import MergeBatchNorm
from xai_loc.explain.composites import (
    COMPOSITES,
    FIRST_RULES,
    MAXPOOL_RULES,
    NAMED_RULES,
    make_composite,
    register_composite,
)
from xai_loc.explain.levels import Levels
from xai_loc.explain.methods import METHODS, Method, methods_for, register_method
from xai_loc.explain.rules import FastGamma, GateRule, SmoothMaxPool, WindowBox
from xai_loc.explain.store import (
    explain_store,
    open_explained_signals,
    open_relevance,
    relevance_store_path,
    write_wavs,
)
from xai_loc.explain.targets import REFERENCES, TARGETS, Target, register_target, targets_for


class _CallableModule(types.ModuleType):
    """This subpackage, callable as :func:`~xai_loc.explain.attribute.explain`.

    ``xai_loc.explain`` names both the subpackage and the function a notebook calls (``xl.explain(...)``). Importing
    the subpackage by any route (``import xai_loc.explain.store``, ``xl.write_wavs`` ...) binds it as the attribute
    ``explain`` of ``xai_loc``, where it shadows the lazily imported function; a callable subpackage is both.
    """

    __call__ = staticmethod(explain)

    def __reduce__(self):  # pickled by name (a dask task of xl.explain), as a module is imported
        return importlib.import_module, (self.__name__,)


sys.modules[__name__].__class__ = _CallableModule
__signature__ = inspect.signature(explain)  # what inspect.signature(xai_loc.explain) reports

__all__ = [
    # explaining
    "Explainer", "Levels", "explain", "explain_arrays", "explain_store", "open_explained_signals", "open_relevance",
    "relevance_store_path", "write_wavs",
    # checking
    "AuditReport", "audit",
    # registries
    "COMPOSITES", "FIRST_RULES", "MAXPOOL_RULES", "METHODS", "NAMED_RULES", "REFERENCES", "TARGETS", "Method", "Target",
    "make_composite", "methods_for", "register_composite", "register_method", "register_target", "targets_for",
    # rules and canonizers
    "FastGamma", "GateRule", "MergeBatchNorm", "SmoothMaxPool", "WindowBox",
]
