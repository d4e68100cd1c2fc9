"""The models of one run: each loaded, hashed and randomized once, with its provenance.

A command that runs several experiments on the same checkpoints (``reproduce``: evaluation,
perturbation, TDOA, inspection) and each experiment inside it (the explainer, the relevance
store lookup, the randomized baseline) ask for the same model many times. A :class:`ModelSet`
is built once per run from ``{name: checkpoint path or module}`` and handed to all of them: a
checkpoint is loaded once, its weights hashed once, and its randomized copy
(:func:`~xai_loc.experiments.baselines.randomized_copy`, the model-randomization test of
Adebayo et al., 2018) made once per seed, so every experiment of the run scores, and stores
relevance for, the very same copy.

It reads like the ``{name: module}`` dict the experiments took before (a mapping of name to
loaded module), and every experiment still accepts that plain dict, converted with
:meth:`ModelSet.of` at its top.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from xai_loc.explain.attribute import Explainer

__all__ = ["ModelSet"]


@dataclass
class _Entry:
    module: nn.Module
    provenance: dict[str, Any]
    card: dict[str, Any] | None = None
    path: Path | None = None
    randomized: dict[int, tuple[nn.Module, dict[str, Any]]] = field(default_factory=dict)


def _load(model: nn.Module | str | os.PathLike) -> _Entry:
    """One model loaded (a checkpoint path) or taken as it is (a module), with its provenance
    in the keys and order of :func:`~xai_loc.explain.attribute.resolve_model`."""
    from xai_loc.explain.attribute import resolve_model
    from xai_loc.models import checkpoint

    if not isinstance(model, (str, os.PathLike)):
        module, info = resolve_model(model)
        return _Entry(module, info)
    path = Path(model)
    card = checkpoint.read_card(path)
    module, info = resolve_model(checkpoint.load_model(path))
    provenance = {"checkpoint": path.name, "checkpoint_digest": checkpoint.file_digest(path),
                  "model_condition": json.dumps(card.get("condition")), **info}
    return _Entry(module, provenance, card, path)


class ModelSet(Mapping[str, "nn.Module"]):
    """Named localizers for one run: ``name -> loaded module`` with provenance and randomized copies.

    Parameters
    ----------
    models
        ``{name: checkpoint path or torch module}``. Checkpoints are loaded here (on the CPU,
        in eval mode), once.

    Examples
    --------
    >>> models = ModelSet({"loccnn": "pretrained/loccnn_t60-0.6_snr-10.safetensors"})  # doctest: +SKIP
    >>> run_perturbation(models, store); run_tdoa(models, store)  # doctest: +SKIP
    """

    def __init__(self, models: Mapping[str, nn.Module | str | os.PathLike] | None = None) -> None:
        self._entries: dict[str, _Entry] = {str(name): _load(model) for name, model in (models or {}).items()}

    @classmethod
    def of(cls, models: ModelSet | Mapping[str, Any] | Iterable[Any] | None) -> ModelSet:
        """``models`` itself when it is a ModelSet, else a ModelSet of it (a mapping, or an iterable
        of checkpoints or modules, named by position)."""
        if isinstance(models, ModelSet):
            return models
        if models is not None and not isinstance(models, Mapping):
            models = {str(i): model for i, model in enumerate(models)}
        return cls(models)

    def adapted(self, adapt: Callable[[nn.Module], nn.Module]) -> ModelSet:
        """The same models as ``adapt`` makes them take another input (a cue-scene store's cue maps), with
        their provenance; randomized copies are made from the adapted modules."""
        out = ModelSet()
        out._entries = {name: _Entry(adapt(entry.module), entry.provenance, entry.card, entry.path)
                        for name, entry in self._entries.items()}
        return out

    def select(self, names: Iterable[str]) -> ModelSet:
        """The named models only, sharing their loaded modules and randomized copies."""
        out = ModelSet()
        out._entries = {name: self._entries[name] for name in names}
        return out

    # ---- the mapping: name -> loaded module
    def __getitem__(self, name: str) -> nn.Module:
        return self._entries[name].module

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        digests = (f"{name}={entry.provenance.get('model_digest', '?')}" for name, entry in self._entries.items())
        return f"ModelSet({', '.join(digests)})"

    # ---- provenance
    def provenance(self, name: str) -> dict[str, Any]:
        """Checkpoint file name and SHA-256 and the card's condition (for a checkpoint), architecture,
        weight digest and configuration: the attrs :func:`~xai_loc.explain.attribute.resolve_model` gives."""
        return dict(self._entries[name].provenance)

    def card(self, name: str) -> dict[str, Any] | None:
        """The checkpoint's card (None for a model given as a module)."""
        return self._entries[name].card

    def path(self, name: str) -> Path | None:
        """The checkpoint file (None for a model given as a module)."""
        return self._entries[name].path

    def check_recording(self, fs: float | None, mics, where: str) -> None:
        """Refuse (one line) data of ``where`` sampled at ``fs`` (Hz) by microphones at ``mics`` ``(mic, xyz)``
        unless each checkpoint's card records such training data, or none
        (:func:`~xai_loc.models.evaluation.check_recording`)."""
        from xai_loc.models.evaluation import check_recording

        for name in self:
            card = self.card(name)
            if card is not None:
                check_recording(card, fs, mics, where, f"model {name}")

    # ---- randomized copies
    def _randomized(self, name: str, seed: int) -> tuple[nn.Module, dict[str, Any]]:
        from xai_loc.experiments.baselines import randomized_copy
        from xai_loc.explain.attribute import resolve_model

        entry = self._entries[name]
        if seed not in entry.randomized:
            entry.randomized[seed] = resolve_model(randomized_copy(entry.module, seed))
        return entry.randomized[seed]

    def randomized(self, name: str, seed: int = 0) -> nn.Module:
        """The randomized copy of model ``name`` for ``seed``, made on first use and kept."""
        return self._randomized(name, seed)[0]

    def randomized_provenance(self, name: str, seed: int = 0) -> dict[str, Any]:
        """Architecture, weight digest and configuration of :meth:`randomized`."""
        return dict(self._randomized(name, seed)[1])

    # ---- explainers
    def explainer(self, name: str, *, randomized_seed: int | None = None, **options: Any) -> Explainer:
        """An :class:`~xai_loc.explain.attribute.Explainer` of model ``name`` (or of its randomized copy
        for ``randomized_seed``) whose attrs carry the full provenance, as if built from the checkpoint."""
        from xai_loc.explain.attribute import Explainer

        if randomized_seed is None:
            module, info = self[name], self.provenance(name)
        else:
            module, info = self._randomized(name, randomized_seed)
        explainer = Explainer(module, **options)
        explainer.attrs = {**info, **explainer.attrs}
        return explainer
