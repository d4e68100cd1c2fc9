"""The registry of experiments and of every stored result that ``xai-loc figures`` can redraw.

:data:`EXPERIMENTS` maps a name to an :class:`~xai_loc.experiments.base.Experiment` (run on a
:class:`~xai_loc.experiments.modelset.ModelSet`, tables, files); the commands ``perturb``,
``faithfulness``, ``sanity``, ``components`` and ``tdoa``, ``reproduce`` and ``figures`` all go through it
(:func:`xai_loc.study.run_experiment`).
:data:`RESULTS` adds the results that the binaural probes write from their own commands, as
:class:`~xai_loc.experiments.base.Result` declarations (file name, the variables to check with their dimensions:
required ones and optional ones the readers index where present, the dimensions that may not be empty, the command
that rebuilds it): every result file a probe command writes but the cue network's per-example ``cue_relevance.nc`` (a
name that folders of ``binaural cues`` written before ``duplex_relevance.nc`` hold with other contents). Each name
has a drawer of the same name in :data:`xai_loc.plots.redraw.DRAWERS`, one without figures for a result that is a
table or a view another result's figure reads (``duplex_relevance``, ``cue_ablation``, ``bast_table``,
``relevance_view``).

A new experiment is one module with an ``Experiment`` subclass plus one line in :data:`EXPERIMENTS`.
"""
from __future__ import annotations

from xai_loc.errors import InputError
from xai_loc.experiments.base import Experiment, Result
from xai_loc.experiments.components import ComponentsExperiment
from xai_loc.experiments.faithfulness import FaithfulnessExperiment
from xai_loc.experiments.perturbation import PerturbationExperiment
from xai_loc.experiments.sanity import SanityExperiment
from xai_loc.experiments.tdoa_probe import TdoaExperiment

__all__ = ["EXPERIMENTS", "RESULTS", "get_experiment", "result_for_file"]

#: Runnable experiments by name.
EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    PerturbationExperiment(),
    TdoaExperiment(),
    FaithfulnessExperiment(),
    SanityExperiment(),
    ComponentsExperiment(),
)}

#: Every stored result by name: the experiments and the binaural probes' result files.
RESULTS: dict[str, Result] = {**EXPERIMENTS, **{r.name: r for r in (
    Result("duplex", "duplex.nc", what="duplex probe result", command="binaural cues",
           required={"itd_weight": ("band",), "ild_weight": ("band",)},
           optional={f"response_{cue}": ("band", "azimuth", f"{cue}_offset", "token") for cue in ("itd", "ild")},
           nonempty=("band",)),
    Result("duplex_relevance", "duplex_relevance.nc", what="duplex relevance view", command="binaural cues",
           required={"relevance_mass": ("stimulus", "ear", "frequency"), "lag_slope": ("band",)}),
    Result("responses", "responses.nc", what="binaural responses", command="binaural cues",
           required=dict.fromkeys(("response_azimuth", "response_elevation", "target_azimuth", "target_elevation"),
                                  ("example",)), nonempty=("example",)),
    Result("cue_reliance", "cue_reliance.nc", what="cue reliance table", command="binaural cuenet probe",
           required={"abs_share": ("cue", "band")},
           optional={"frequency": ("band",), "attention_mean": ("cue",), "cue_abs_share": ("cue",),
                     "fusion_share": ("cue",), "attention_by_laterality": ("laterality", "cue"),
                     "cue_abs_share_by_laterality": ("laterality", "cue")}, nonempty=("cue", "band")),
    Result("cue_ablation", "cue_ablation.nc", what="cue ablation table", command="binaural cuenet probe",
           required={"top1": ("cue", "bands"), "attention": ("cue", "bands", "weight_of")}),
    Result("band_profile", "band_profile.nc", what="band profile", command="binaural tfcnn probe",
           required={"share": ("snr", "channel", "band")},
           optional={**dict.fromkeys(("band_low", "band_high", "band_centre"), ("band",)), "n_examples": ("snr",)},
           nonempty=("snr", "channel", "band")),
    Result("bast_table", "bast_table.nc", what="BAST integration x weight-sharing table",
           command="binaural bast table",
           required={"mirror_contrast": ("sharing", "integration"),
                     "relevance_left": ("sharing", "integration", "pair", "side"),
                     "relevance_right": ("sharing", "integration", "pair", "side")}),
    Result("relevance_view", "relevance_view.nc", what="BAST relevance view of mirror pairs",
           command="binaural bast explain",
           required={"mass": ("explainer", "pair", "side", "ear", "frequency"), "ear_balance": ("explainer", "side")}),
)}}


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name`` (one-line error listing the names otherwise)."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise InputError(f"experiment {name!r} is unknown; registered: {', '.join(EXPERIMENTS)}") from None


def result_for_file(file_name: str) -> Result | None:
    """The registered result stored under ``file_name`` (a base name such as ``"tdoa.nc"``), or None."""
    return next((r for r in RESULTS.values() if r.result_file == file_name), None)
