"""What an experiment scores, for every family: the stored inputs, their truth and the error in the model's units.

The faithfulness and sanity suites run on any family's test store through one interface, a
:class:`ScoredSet`: the inputs as the model takes them (:class:`~xai_loc.experiments.perturbation.Rows`
of the store's main array), the true direction or position of each input, and the
independent units the statistics are over (``sources``: each source, sound or utterance
counted once, however many inputs it has). A store is read by the :data:`READERS` entry of
its main variable:

``signals``
    dataset stores of the multichannel families (:mod:`xai_loc.data.store`): positions (m),
    one unit per source;
``waveforms``
    ear signals (binaural, TF-CNN and BAST scene stores): azimuth and elevation (degrees, in
    the store's convention, which is the one its family is trained in), one unit per sound
    (``sound_key``) or utterance;
``cues``
    cue-scene stores (:mod:`xai_loc.data.cue_scenes`): cue maps, scored by the model without
    its front end; one unit per utterance.

A binaural checkpoint's own held-out test split is rendered from the data spec its card
records, by its family (:func:`family_test_store`), so a checkpoint alone names its test data.

The truth a model needs is made from them by its output kind (:data:`TRUTHS`: positions,
grid class labels, azimuths), and its error by :data:`ERRORS`, in the model's own units:

==================  ===========  ==========================================================
output kind         units        error per input
==================  ===========  ==========================================================
position            m            mean absolute error per coordinate
azimuth, ...        degrees      the angle to the truth (target ``angular_error``: wrapped
                                 azimuth difference, great circle, [cos, sin] angle)
direction_classes   probability  ``1 - p``, ``p`` the softmax probability of the true class
                                 (target ``true_class_probability``; for factorized logits,
                                 of the true azimuth)
==================  ===========  ==========================================================

:data:`EXPLAINED` is the target each kind is explained for by default: what speaks for the
right answer (``truth`` for positions, the paper's seed; the true class's log-odds; the output
along the true direction; the angles signed toward the truth, ``toward_truth``). A target
whose value grows with the error (``error``, ``angular_error``) is read with the opposite sign
(:attr:`~xai_loc.explain.attribute.Explainer.sense`).

A model must take the store's inputs as they are: :meth:`ScoredSet.check` refuses a model
whose input shape differs from the stored inputs' (another family's store, another rate).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from xai_loc.errors import InputError

if TYPE_CHECKING:
    import xarray as xr
    from torch import nn

    from xai_loc.data.resumable import StoreKind
    from xai_loc.experiments.modelset import ModelSet

__all__ = ["ERRORS", "EXPLAINED", "READERS", "Reader", "Rows", "ScoredSet", "default_target", "family_test_store",
           "localization_error", "scored_set"]


@dataclass(frozen=True)
class Rows:
    """Rows of a stored array picked by an index, read a batch at a time (picklable: for cluster workers).

    ``array`` is the main zarr array of a finished store (inputs first), ``index`` the store rows of
    the inputs an experiment scores (:func:`scored_set`).
    """

    array: Any
    index: np.ndarray

    def batch(self, start: int, stop: int) -> torch.Tensor:
        """Inputs ``start:stop`` of the index as a tensor."""
        rows = self.index[start:stop]
        if rows.size and np.array_equal(rows, np.arange(rows[0], rows[0] + rows.size)):
            return torch.as_tensor(self.array[int(rows[0]) : int(rows[0]) + rows.size])
        return torch.as_tensor(self.array.oindex[rows])


# ---------------------------------------------------------------------------------------------- readers
def _dataset_kind() -> StoreKind:
    from xai_loc.data.store import DATASET

    return DATASET


def _ear_kind() -> StoreKind:
    from xai_loc.explain.binaural import EAR_SIGNALS

    return EAR_SIGNALS


def _cue_kind() -> StoreKind:
    from xai_loc.data.cue_scenes import CUE_SCENES

    return CUE_SCENES


def _on_cue_maps(model: nn.Module) -> nn.Module:
    from xai_loc.explain.cuenet import on_cue_maps
    from xai_loc.models.cuenet import CueNet

    if not isinstance(model, CueNet):
        raise InputError(f"a cue-scene store holds cue maps, which only cuenet models take, not "
                         f"{getattr(model, 'arch_name', '') or type(model).__name__}; give its family's test store")
    return on_cue_maps(model)


@dataclass(frozen=True)
class Reader:
    """How one kind of store is scored.

    Parameters
    ----------
    kind
        The store kind, as a function (stores belong to stages below; imported when used).
    units
        Candidate variables naming the independent unit of each input, the first present is used.
    adapt
        The model that takes the stored inputs (None: the model itself).
    """

    kind: Callable[[], StoreKind]
    units: tuple[str, ...]
    adapt: Callable[[nn.Module], nn.Module] | None = None


#: Store readers by main variable.
READERS: dict[str, Reader] = {
    "signals": Reader(_dataset_kind, ("source_id",)),
    "waveforms": Reader(_ear_kind, ("sound_key", "utterance")),
    "cues": Reader(_cue_kind, ("utterance",), _on_cue_maps),
}


def _reader_of(path: Path) -> tuple[str, Reader]:
    for variable, reader in READERS.items():
        if (path / variable).is_dir():
            return variable, reader
    raise InputError(f"{path} holds no dataset, ear-signal or cue-scene store; give the finished test store of "
                     "the model's family ('xai-loc simulate', 'xai-loc binaural simulate', ...)")


@dataclass(frozen=True)
class ScoredSet:
    """The inputs of one store an experiment scores (see the module docs).

    Attributes
    ----------
    ds
        The store (lazy), restricted to the scored inputs; its first dimension indexes them.
    rows
        The inputs as rows of the store's main array, read a batch at a time.
    sources
        Ids of the independent units (ascending).
    per_source
        ``(input, unit)`` matrix turning per-input values into per-unit means in one product.
    directions
        ``position`` (n, 3) m, or ``azimuth`` and ``elevation`` (n,) degrees.
    reader
        The store's :class:`Reader`.
    """

    ds: xr.Dataset
    rows: Rows
    sources: np.ndarray
    per_source: np.ndarray
    directions: dict[str, np.ndarray]
    reader: Reader

    def __len__(self) -> int:
        return self.per_source.shape[0]

    def models(self, models: ModelSet) -> ModelSet:
        """``models`` as they take the stored inputs (:meth:`ModelSet.adapted` by the reader)."""
        return models if self.reader.adapt is None else models.adapted(self.reader.adapt)

    def check(self, models: ModelSet) -> None:
        """Refuse (one line) an empty model set, a model whose input shape is not that of the stored inputs, or a
        checkpoint trained on data of another sample rate or microphone array than the store's
        (:func:`~xai_loc.models.evaluation.check_recording`)."""
        if not models:
            raise InputError("models list is empty; give at least one model (a checkpoint path or module)")
        shape = tuple(self.rows.array.shape[1:])
        for name in models:
            wanted = getattr(models[name], "input_shape", None)
            if wanted is not None and tuple(wanted) != shape:
                raise InputError(f"model {name} takes inputs of shape {tuple(wanted)}, but the store holds "
                                 f"{shape}; give the test store of its own family and rate")
        mics = self.ds["mic_position"].values if "mic_position" in self.ds.variables else None
        models.check_recording(self.ds.attrs.get("fs"), mics, "the scored store")

    def positions(self) -> np.ndarray:
        """The true source positions ``(n, 3)`` in metres (the multichannel experiments); a store of
        directions is refused in one line."""
        return _positions(None, self.directions)

    def truth(self, model: nn.Module) -> np.ndarray:
        """The true values of every input as ``model``'s targets take them (:data:`TRUTHS`)."""
        kind = getattr(model, "output_kind", "position")
        return TRUTHS[kind](model, self.directions)

    @property
    def conditions(self) -> dict[str, float]:
        """The store's reverberation time and SNR (NaN where it has none or many)."""
        return {key: float(self.ds.attrs.get(key, np.nan)) for key in ("t60", "snr")}


def scored_set(data: str | os.PathLike, n_sources: int | None = None) -> ScoredSet:
    """The inputs of the store at ``data`` an experiment scores: a seeded spread of ``n_sources`` of its
    units (:func:`~xai_loc.data.store.subset_ids`; all when None), opened verified.

    Raises
    ------
    InputError
        For a path that holds no readable store, a damaged store, or ``n_sources`` not an integer >= 1.
    """
    from xai_loc.data.store import check_n_sources, subset_ids

    check_n_sources(n_sources)  # before the store is opened
    path = Path(data)
    variable, reader = _reader_of(path)
    kind = reader.kind()
    ds = kind.open(path)
    dim = ds[variable].dims[0]
    unit = next((name for name in reader.units if name in ds.variables), None)
    if unit is None:
        raise InputError(f"{path} names no {' or '.join(reader.units)} per input; rebuild it with {kind.make}")
    ids = ds[unit].values
    keep = np.isin(ids, subset_ids(np.unique(ids), n_sources))
    index = np.flatnonzero(keep)
    ds = ds.isel({dim: index})
    sources, source_index = np.unique(ids[keep], return_inverse=True)
    per_source = np.zeros((index.size, sources.size))
    per_source[np.arange(index.size), source_index] = 1.0
    if "source_position" in ds.variables:
        directions = {"position": ds["source_position"].values.astype(np.float64)}
    else:
        zeros = np.zeros(index.size)
        directions = {"azimuth": ds["azimuth"].values.astype(np.float64),
                      "elevation": ds["elevation"].values.astype(np.float64) if "elevation" in ds.variables else zeros}
    rows = Rows(kind.open_array(path), index.astype(np.int64))
    return ScoredSet(ds, rows, sources, per_source / per_source.sum(0, keepdims=True), directions, reader)


# ---------------------------------------------------------------------------------------------- a family's test split
def family_test_store(checkpoint: str | os.PathLike, root=None, progress: bool = False) -> Path:
    """The held-out test split of a binaural checkpoint's own data: the spec its card records, rendered under
    ``root`` if absent by its family's renderer (:meth:`~xai_loc.models.families.Family.recorded_spec`,
    :meth:`~xai_loc.models.families.Family.render`).

    Raises
    ------
    InputError
        For a checkpoint of a family without a renderer (the multichannel families are simulated per
        condition instead), or a card that records no data spec.
    """
    from xai_loc.models import read_card
    from xai_loc.models.families import family_of

    card = read_card(checkpoint)
    family = family_of(card["architecture"])
    if family.renderer is None:
        raise InputError(f"checkpoint {checkpoint} is a {card['architecture']} model, whose test data is the "
                         "simulated paper scene; give --t60 and --snr, or a test store with --store")
    spec = family.recorded_spec(card)
    if spec is None:
        raise InputError(f"checkpoint {checkpoint} records no data spec; give its test store with --store")
    return family.render(spec, "test", root=root, progress=progress)


# ---------------------------------------------------------------------------------------------- truth and error
def _positions(model, directions):
    if "position" not in directions:
        raise InputError("the model outputs source positions but the store holds directions only; give a dataset "
                         "store of the multichannel scene")
    return directions["position"]


def _angles(name: str):
    def truth(model, directions):
        if "azimuth" not in directions:
            raise InputError(f"the model outputs {name} but the store holds source positions; give the test store "
                             "of its binaural family")
        if name == "azimuth_elevation":
            return np.stack([directions["azimuth"], directions["elevation"]], axis=1)
        return directions["azimuth"]
    return truth


def _labels(model, directions):
    """Grid labels; a one-elevation grid ignores the elevation (as training does), and factorized logits
    (an azimuth block, then an elevation block) take the azimuth index, the block the class targets read."""
    grid = model.direction_grid
    azimuth = _angles("direction classes")(model, directions)
    labels = grid.label(azimuth, directions["elevation"] if grid.n_elevations > 1 else None).astype(np.int64)
    return labels % grid.n_azimuths if getattr(model, "factorized_classes", False) else labels


#: The true values of a model's targets, by output kind: ``f(model, directions) -> array``.
TRUTHS: dict[str, Callable[[Any, dict[str, np.ndarray]], np.ndarray]] = {
    "position": _positions,
    "azimuth": _angles("azimuth"),
    "azimuth_elevation": _angles("azimuth_elevation"),
    "cos_sin": _angles("cos_sin"),
    "direction_classes": _labels,
}


def _objective(model, name: str):
    from xai_loc.explain.targets import bind

    grid = getattr(model, "direction_grid", None)
    block = grid.n_azimuths if getattr(model, "factorized_classes", False) else None
    return bind(name, model.output_kind, None, block)


def _mae(model, output: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    return (output.double() - truth).abs().mean(-1)


def _angular(model, output: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    objective = _objective(model, "angular_error")
    output = output.double()
    return objective.scalar(output, objective.weights(output, truth))


def _probability_lost(model, output: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    objective = _objective(model, "true_class_probability")
    output = output.double()
    return 1.0 - objective.scalar(output, objective.weights(output, truth))


@dataclass(frozen=True)
class Error:
    """A localization error in a model's own units: ``error(model, output, truth) -> [B]`` (higher is worse)."""

    units: str
    label: str
    error: Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]


#: The error of each output kind (module docs).
ERRORS: dict[str, Error] = {
    "position": Error("m", "MAE per coordinate", _mae),
    "azimuth": Error("deg", "angular error", _angular),
    "azimuth_elevation": Error("deg", "great-circle error", _angular),
    "cos_sin": Error("deg", "angular error", _angular),
    "direction_classes": Error("probability", "true-class probability lost", _probability_lost),
}

#: The target each output kind is explained for by default (module docs).
EXPLAINED: dict[str, str] = {"position": "truth", "azimuth": "toward_truth", "azimuth_elevation": "toward_truth",
                             "cos_sin": "true_direction", "direction_classes": "true_class_log_odds"}


def default_target(model) -> str:
    """:data:`EXPLAINED` of ``model``'s output kind."""
    return EXPLAINED[getattr(model, "output_kind", "position")]


def localization_error(model, output: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per-input error of raw outputs ``[B, K]`` against the truth (:data:`ERRORS` of the model's output kind;
    ``truth`` as :data:`TRUTHS` gives it, on the outputs' device), float64."""
    return ERRORS[getattr(model, "output_kind", "position")].error(model, output, truth)
