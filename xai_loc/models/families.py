"""Localizer families by name: what belongs to each family, as data.

A family is the set of architectures that share a scene set, a trainer, an LRP composite,
probes and a command group. :data:`FAMILIES` holds one :class:`Family` per family; the
architecture section of ``models list`` (:func:`family_rows`) and the tests are generated from
it, and a family's :attr:`Family.metric_labels` say how its checkpoint metrics read. A family's
record is the one home of its data: the spec its checkpoint cards record (:meth:`Family.recorded_spec`)
and the renderer of that spec's splits (:meth:`Family.render`), through which the probe commands and
:func:`~xai_loc.experiments.scored.family_test_store` render a checkpoint's held-out data.
Stages above ``models`` (scene specs in :mod:`xai_loc.data`, composites in
:mod:`xai_loc.explain`, probes in :mod:`xai_loc.experiments`) are named by dotted path or
registry name, so this module imports nothing above its stage.

Built-in families: ``multichannel`` (``loccnn``, ``samplecnn``; Comanducci et al. 2024),
``cochcnn`` (Francl & McDermott 2022), ``tfcnn`` (Pang et al. 2019), ``cuenet`` (ITD/ILD/IC
cue network) and ``bast`` (Kuang et al. 2022). A plug-in localizer (entry-point group
``xai_loc.localizers``) that no registered family lists joins the generic family of its
output kind (``generic-position``, ...; :func:`family_of`); a plug-in package may instead
register its own family with :func:`register_family`.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

from xai_loc.errors import InputError
from xai_loc.models.registry import MODELS

__all__ = ["FAMILIES", "Family", "family_of", "family_rows", "n_parameters", "register_family", "resolve"]


@dataclass(frozen=True)
class Family:
    """What belongs to one localizer family.

    Parameters
    ----------
    name
        Family name (the key in :data:`FAMILIES`).
    models
        Architecture names in :data:`~xai_loc.models.registry.MODELS`.
    description
        One line for ``models list``.
    scene
        Dotted path (``package.module:Name``) of the scene or data spec the family trains and is
        probed on, or None.
    spec_keys
        Where a checkpoint card of the family records its data spec (a :attr:`scene` as a dict):
        ``card[spec_keys[0]][spec_keys[1]]...`` (:meth:`recorded_spec`); ``()``: its cards record none.
    renderer
        Dotted path of ``render(spec, split, *, root, progress, **options) -> store path``, the store of one
        split of a :attr:`scene` spec (:meth:`render`), or None (the multichannel families' data is simulated
        per condition).
    trainer
        Dotted path of the training function, or None.
    composite
        Default LRP composite (a name in :data:`xai_loc.explain.composites.COMPOSITES`), or None
        for a family explained otherwise (BAST: AttnLRP).
    probes
        Names of the experiments and probe results (:data:`xai_loc.experiments.registry.RESULTS`)
        that read the family.
    cli_group
        Command group of the family's commands (``"binaural tfcnn"``; ``""``: the root commands).
    metric_labels
        Card metrics the family records in its own sense: key -> (label, format, unit), over
        the shared labels of :data:`xai_loc.models.zoo.SUMMARY_METRICS`.
    """

    name: str
    models: tuple[str, ...]
    description: str
    scene: str | None = None
    spec_keys: tuple[str, ...] = ()
    renderer: str | None = None
    trainer: str | None = None
    composite: str | None = None
    probes: tuple[str, ...] = ()
    cli_group: str = ""
    metric_labels: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    @property
    def output_kind(self) -> str:
        """Output kind of the family's default configuration (its first architecture's)."""
        return MODELS[self.models[0]].output_kind

    @property
    def levels(self) -> tuple[str, ...]:
        """Levels at which the family's relevance can be read (its first architecture's)."""
        return MODELS[self.models[0]].levels

    def recorded_spec(self, card: dict) -> Any:
        """The data spec (a :attr:`scene`) that a checkpoint card of the family records at :attr:`spec_keys`,
        or None where it records none.

        Raises
        ------
        InputError
            For a record that is not a spec of :attr:`scene` (``from_dict``: one line naming the field).
        """
        value: Any = card
        for key in self.spec_keys:
            value = value.get(key) if isinstance(value, dict) else None
        if not self.spec_keys or not isinstance(value, dict):
            return None
        return resolve(self.scene).from_dict(value)

    def render(self, spec: Any, split: str = "test", *, root=None, progress: bool = False, **options: Any) -> Path:
        """The store of ``split`` of ``spec`` (a :attr:`scene`), rendered by :attr:`renderer` under ``root``
        (default: the data root) where absent and reused after; ``options`` go to the renderer (cochcnn:
        ``device``).

        Raises
        ------
        InputError
            For a family without a renderer.
        """
        if self.renderer is None:
            raise InputError(f"family {self.name!r} renders no scene splits; allowed: "
                             f"{', '.join(f.name for f in FAMILIES.values() if f.renderer)}")
        return resolve(self.renderer)(spec, split, root=root, progress=progress, **options)


#: Families by name, built-ins first.
FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Register ``family`` in :data:`FAMILIES`.

    Raises
    ------
    ValueError
        If the name is taken, no architecture is listed or one already belongs to a family. (The
        architectures need not be registered yet: the tests check that every listed one is.)
    """
    if family.name in FAMILIES:
        raise ValueError(f"family {family.name!r} is already registered")
    if not family.models:
        raise ValueError(f"family {family.name!r} lists no architecture")
    for arch in family.models:
        owner = next((f.name for f in FAMILIES.values() if arch in f.models), None)
        if owner is not None:
            raise ValueError(f"family {family.name!r}: architecture {arch!r} already belongs to {owner!r}")
    FAMILIES[family.name] = family
    return family


def resolve(path: str) -> Any:
    """The object a dotted path ``package.module:name`` names (a family's scene spec, renderer or trainer)."""
    module, _, name = path.partition(":")
    return getattr(import_module(module), name)


#: What a generic family (plug-ins by output kind) shares with a built-in family: position
#: localizers take the multichannel scene, trainer and probes.
GENERIC_LIKE: dict[str, str] = {"position": "multichannel"}


def family_of(arch: str) -> Family:
    """The family of a registered architecture: the family that lists it, else (plug-ins) the
    generic family of its output kind, which it joins.

    Raises
    ------
    InputError
        If ``arch`` is not registered.
    """
    if arch not in MODELS:
        raise InputError(f"unknown model architecture {arch!r}; allowed: {', '.join(sorted(MODELS))}")
    owner = next((f for f in FAMILIES.values() if arch in f.models), None)
    if owner is not None:
        return owner
    kind = MODELS[arch].output_kind
    name = f"generic-{kind}"
    if name in FAMILIES:
        FAMILIES[name] = dataclasses.replace(FAMILIES[name], models=(*FAMILIES[name].models, arch))
        return FAMILIES[name]
    like = FAMILIES.get(GENERIC_LIKE.get(kind, ""))
    shared = {} if like is None else {"scene": like.scene, "spec_keys": like.spec_keys, "renderer": like.renderer,
                                      "trainer": like.trainer, "probes": like.probes, "cli_group": like.cli_group}
    return register_family(Family(name, (arch,), f"plug-in localizers with {kind} output", composite="epsilon",
                                  **shared))


def _required_arguments(cls: type) -> list[str]:
    """Names of the constructor parameters of ``cls`` without a default."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in inspect.signature(cls).parameters.values() if p.kind in kinds and p.default is p.empty]


def n_parameters(model: Any) -> int:
    """The model's trainable parameters: its own ``n_parameters()`` where it has one, else those that require a
    gradient (a fixed front end's kernels, e.g. tfcnn's STFT, are not counted)."""
    count = getattr(model, "n_parameters", None)
    return int(count()) if callable(count) else sum(p.numel() for p in model.parameters() if p.requires_grad)


def family_rows() -> list[str]:
    """``models list``'s architecture section: per family a title line, then per architecture its
    trainable parameters (:func:`n_parameters`), input shape, output kind and levels (default configuration; for a
    plug-in whose constructor has no defaults, the arguments it needs instead of parameters and shape)."""
    for arch in list(MODELS):
        family_of(arch)  # plug-ins registered since import join their generic family
    rows = []
    for family in FAMILIES.values():
        archs = [arch for arch in family.models if arch in MODELS]  # a plug-in removed from MODELS since it joined
        if not archs:
            continue
        group = f"xai-loc {family.cli_group}".rstrip()
        rows.append(f"{family.name}: {family.description} [{group}; composite {family.composite or 'none'}]")
        for arch in archs:
            needed = _required_arguments(MODELS[arch])
            if needed:  # a plug-in without a default configuration
                rows.append(f"  {arch:12s} (needs arguments: {', '.join(needed)}), {MODELS[arch].output_kind} "
                            f"output, levels {', '.join(MODELS[arch].levels)}")
                continue
            model = MODELS[arch]()
            n_params = n_parameters(model)
            shape = " x ".join(str(v) for v in model.input_shape)
            rows.append(f"  {arch:12s} {n_params:>10,d} parameters, input {shape}, {model.output_kind} output, "
                        f"levels {', '.join(model.levels)}")
    return rows


register_family(Family(
    "multichannel", ("loccnn", "samplecnn"),
    "end-to-end localizers of the 16-microphone array regressing (x, y, z) (Comanducci et al. 2024)",
    scene="xai_loc.data.scene:paper_scene", trainer="xai_loc.models.training:train", composite="paper",
    probes=("perturbation", "tdoa", "faithfulness", "sanity", "components")))
register_family(Family(
    "cochcnn", ("cochcnn",), "cochleagram CNN classifying 504 directions (Francl & McDermott 2022)",
    scene="xai_loc.data.binaural_store:BinauralSpec", spec_keys=("dataset", "train", "spec"),
    renderer="xai_loc.data.binaural_store:simulate_binaural",
    trainer="xai_loc.models.classifier_training:train_classifier", composite="cochcnn",
    probes=("duplex", "duplex_relevance", "responses", "faithfulness", "sanity"), cli_group="binaural"))
register_family(Family(
    "tfcnn", ("tfcnn",), "IPD/ILD time-frequency CNN regressing the lateral azimuth (Pang et al. 2019)",
    scene="xai_loc.data.ipd_ild_scenes:SceneSpec", spec_keys=("dataset", "train", "spec"),
    renderer="xai_loc.data.ipd_ild_scenes:render_scene_split", trainer="xai_loc.models.tfcnn_training:train_tfcnn",
    composite="tfcnn", probes=("band_profile", "faithfulness", "sanity"), cli_group="binaural tfcnn",
    metric_labels={"mae": ("azimuth MAE", ".1f", " deg")}))
register_family(Family(
    "cuenet", ("cuenet",), "ITD/ILD/IC cue branches fused by attention, 72 azimuth classes",
    scene="xai_loc.data.cue_scenes:CueSceneSpec", spec_keys=("dataset", "spec"),
    renderer="xai_loc.features.binaural_cues:simulate_cue_scenes", trainer="xai_loc.models.cuenet:train_cuenet",
    composite="cuenet", probes=("cue_reliance", "cue_ablation", "faithfulness", "sanity"),
    cli_group="binaural cuenet"))
register_family(Family(
    "bast", ("bast",), "binaural spectrogram transformer regressing [cos, sin] azimuth (Kuang et al. 2022)",
    scene="xai_loc.data.bast_scenes:BastSceneSpec", spec_keys=("dataset", "spec"),
    renderer="xai_loc.data.bast_scenes:render_bast_scenes", trainer="xai_loc.models.bast:fit_bast",
    probes=("bast_table", "relevance_view", "faithfulness", "sanity"), cli_group="binaural bast"))
