"""The family registry (:mod:`xai_loc.models.families`): every architecture has one family, and every
family's entries name things that exist (architectures, scene specs, trainers, composites, probes and
command groups). A new family is tested by being registered."""
import pytest
import torch

from xai_loc.errors import InputError
from xai_loc.models import MODELS
from xai_loc.models.base import Localizer
from xai_loc.models.families import FAMILIES, Family, family_of, family_rows, register_family, resolve


def _command(path: str):
    from xai_loc.cli import main

    command = main
    for name in path.split():
        command = command.commands[name]
    return command


def test_every_architecture_belongs_to_exactly_one_family():
    for arch in MODELS:
        assert arch in family_of(arch).models
    listed = [arch for family in FAMILIES.values() for arch in family.models]
    assert len(listed) == len(set(listed)) and set(listed) <= set(MODELS)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_family_names_what_exists(name):
    from xai_loc.experiments.registry import RESULTS
    from xai_loc.explain import cue_composites  # noqa: F401 - registers the binaural composites
    from xai_loc.explain.composites import COMPOSITES

    family = FAMILIES[name]
    assert family.description and "\n" not in family.description
    # one output kind and one list of levels per family, the models' own
    assert {MODELS[arch].output_kind for arch in family.models} == {family.output_kind}
    assert {MODELS[arch].levels for arch in family.models} == {family.levels}
    assert family.levels[0] == "waveform"
    for path in (family.scene, family.trainer):
        assert path is None or callable(resolve(path))
    assert family.composite is None or family.composite in COMPOSITES
    assert set(family.probes) <= set(RESULTS)
    assert _command(family.cli_group).commands  # a group with commands (the root for "")


def test_the_multichannel_commands_offer_the_multichannel_family():
    from xai_loc.cli import MODEL_CHOICES

    assert set(MODEL_CHOICES) == set(FAMILIES["multichannel"].models)


def test_models_list_has_a_section_per_family():
    rows = family_rows()
    titles = [row.split(":")[0] for row in rows if not row.startswith(" ")]
    assert titles == list(FAMILIES)
    for arch in MODELS:
        row = next(row for row in rows if row.split()[0] == arch)
        assert f"{MODELS[arch].output_kind} output" in row and "levels waveform" in row


def test_a_plugin_joins_the_generic_family_of_its_output_kind(monkeypatch):
    class Angles(Localizer):
        output_kind = "azimuth_elevation"

        def __init__(self, n_mics: int = 2, n_samples: int = 4) -> None:
            super().__init__(n_mics, n_samples)

        def forward(self, x):
            return x[:, 0, :2]

    monkeypatch.setitem(MODELS, "test_angles", Angles)
    monkeypatch.setattr("xai_loc.models.families.FAMILIES", dict(FAMILIES))
    from xai_loc.models import families

    family = family_of("test_angles")
    assert family.name == "generic-azimuth_elevation" and family.models == ("test_angles",)
    assert families.FAMILIES["generic-azimuth_elevation"] is family
    assert family.trainer is None and family.levels == ("waveform",)
    assert any(row.startswith("  test_angles ") for row in family_rows())
    # a plug-in whose constructor needs arguments is listed, not built (review 16, item 14)
    needs = type("Needs", (Angles,), {"__init__": lambda self, n_mics, n_samples: None})
    monkeypatch.setitem(MODELS, "test_needs", needs)
    row = next(row for row in family_rows() if row.startswith("  test_needs "))
    assert row == "  test_needs   (needs arguments: n_mics, n_samples), azimuth_elevation output, levels waveform"
    # a position plug-in shares the multichannel scene, trainer and probes
    monkeypatch.setitem(MODELS, "test_position", Angles)
    monkeypatch.setattr(Angles, "output_kind", "position")
    position = family_of("test_position")
    assert (position.scene, position.trainer, position.probes) == \
        (FAMILIES["multichannel"].scene, FAMILIES["multichannel"].trainer, FAMILIES["multichannel"].probes)
    assert Angles()(torch.ones(1, 2, 4)).shape == (1, 2)


def test_register_family_refuses_conflicts_and_family_of_unknown_names():
    with pytest.raises(ValueError, match="already registered"):
        register_family(Family("tfcnn", ("tfcnn",), "again"))
    with pytest.raises(ValueError, match="already belongs to 'multichannel'"):
        register_family(Family("mine", ("loccnn",), "a second home"))
    with pytest.raises(ValueError, match="lists no architecture"):
        register_family(Family("empty", (), "nothing"))
    with pytest.raises(InputError, match="unknown model architecture 'resnet'"):
        family_of("resnet")
