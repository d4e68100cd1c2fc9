"""Explanations of localizers: LRP (zennit) and captum attributions as labelled relevance.

One entry point, :func:`explain`, takes a model, windows and an attribution target and
returns relevance with the input's shape as an ``xarray.DataArray`` with provenance;
:func:`explain_store` does the same for a whole dataset store into a resumable zarr store.
Methods, composites and targets are registered by name:

    METHODS     'lrp', 'integrated_gradients', 'saliency', 'input_x_gradient', 'deeplift',
                'gradient_shap', 'occlusion'                       (xai_loc.explain.methods)
    COMPOSITES  'paper', 'paper-samplecnn-reversed-gate', 'epsilon', 'epsilon_plus_flat',
                'epsilon_gamma_box', 'epsilon_alpha2_beta1', 'cochcnn'
                                                                   (xai_loc.explain.composites)
                'tfcnn', 'cuenet'                                  (xai_loc.explain.cue_composites)
    TARGETS     'truth', 'prediction', 'x', 'y', 'z', 'error', 'contrast'
                                                                   (xai_loc.explain.targets)

:func:`audit` checks that a composite covers a model; the ``.xai`` accessor
(:mod:`xai_loc.explain.accessor`) gives per-microphone, per-source and audio views, and
:func:`write_wavs` writes relevance as wav files.

Binaural localizers: :func:`xai_loc.explain.binaural.explain_ears`, which picks the family's
explainer, one module each: :mod:`~xai_loc.explain.cochcnn`, :mod:`~xai_loc.explain.tfcnn`,
:mod:`~xai_loc.explain.cuenet`, :mod:`~xai_loc.explain.attn_lrp` (BAST).
"""
from xai_loc.explain import (
    accessor,  # noqa: F401  (registers the .xai accessor)
    cue_composites,  # noqa: F401  (registers 'tfcnn' and 'cuenet')
)
from xai_loc.explain.attribute import Explainer, explain
from xai_loc.explain.audit import AuditReport, audit
from xai_loc.explain.canonizers import MergeBatchNorm
from xai_loc.explain.composites import COMPOSITES, FIRST_RULES, MAXPOOL_RULES, make_composite, register_composite
from xai_loc.explain.methods import METHODS, Method, register_method
from xai_loc.explain.rules import FastGamma, GateRule, SmoothMaxPool, WindowBox
from xai_loc.explain.store import (
    explain_store,
    open_explained_signals,
    open_relevance,
    relevance_store_path,
    write_wavs,
)
from xai_loc.explain.targets import REFERENCES, TARGETS, Target, register_target

__all__ = [
    # explaining
    "Explainer", "explain", "explain_store", "open_explained_signals", "open_relevance", "relevance_store_path",
    "write_wavs",
    # checking
    "AuditReport", "audit",
    # registries
    "COMPOSITES", "FIRST_RULES", "MAXPOOL_RULES", "METHODS", "REFERENCES", "TARGETS", "Method", "Target",
    "make_composite", "register_composite", "register_method", "register_target",
    # rules and canonizers
    "FastGamma", "GateRule", "MergeBatchNorm", "SmoothMaxPool", "WindowBox",
]
