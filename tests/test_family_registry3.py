"""A family's data knowledge has one home, its :class:`~xai_loc.models.families.Family` record: where its checkpoint
cards record the data spec and the renderer of that spec's splits. A checkpoint's test split and every probe command
render through it; every result file the probe commands write is registered (and draws nothing where it has no
figure of its own)."""
from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import one_line, refused, run_cli

from xai_loc.errors import InputError
from xai_loc.models import read_card
from xai_loc.models.families import FAMILIES, resolve
from xai_loc.models.zoo import pretrained_dir

#: Per family: the probe command that runs a checkpoint on the test split of its own data.
PROBES = {
    "cochcnn": ["binaural", "cues", "--tokens", "1", "--no-relevance"],
    "tfcnn": ["binaural", "tfcnn", "probe", "--examples", "1"],
    "cuenet": ["binaural", "cuenet", "probe", "--examples", "1"],
    "bast": ["binaural", "bast", "explain", "--steps", "1"],
}


def _rendered() -> list[str]:
    """The families with a renderer: those whose checkpoints record their data spec."""
    return sorted(name for name, family in FAMILIES.items() if family.renderer)


def _shipped(family: str) -> str:
    return str(pretrained_dir() / f"{FAMILIES[family].models[0]}_default.safetensors")


@pytest.fixture
def rendered(monkeypatch):
    """Every family's renderer replaced by one that records its call and stops the command in one line; the
    renderers the commands used to call directly fail the test if called."""
    calls = []

    def render(spec, split, *, root=None, progress=False, **options):
        calls.append((type(spec).__name__, spec.to_dict(), split, str(root), progress, options))
        raise InputError(f"rendered {spec.name} {split}")

    def direct(*args, **kwargs):
        raise AssertionError("a renderer was called directly, not through the family")

    module = types.ModuleType("fixfamily_renderers")
    module.render = render
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for name in _rendered():
        monkeypatch.setitem(FAMILIES, name, dataclasses.replace(FAMILIES[name], renderer=f"{module.__name__}:render"))
    for target in ("xai_loc.data.binaural_store.simulate_binaural", "xai_loc.data.ipd_ild_scenes.render_scenes",
                   "xai_loc.features.binaural_cues.simulate_cue_scenes", "xai_loc.data.bast_scenes.render_bast_scenes",
                   "xai_loc.data.bast_scenes.load_bast_scenes"):
        monkeypatch.setattr(target, direct)
    return calls


def test_the_binaural_families_record_their_data_spec_and_renderer():
    assert _rendered() == sorted(PROBES)  # the multichannel families are simulated per condition
    for name in _rendered():
        family = FAMILIES[name]
        spec = family.recorded_spec(read_card(_shipped(name)))  # the shipped card's spec, as a spec of the family
        assert isinstance(spec, resolve(family.scene)) and callable(resolve(family.renderer))
    multichannel = read_card(pretrained_dir() / "loccnn_t60-0.6_snr-10.safetensors")
    assert FAMILIES["multichannel"].recorded_spec(multichannel) is None
    assert one_line(FAMILIES["multichannel"].render, None) == \
        "family 'multichannel' renders no scene splits; allowed: cochcnn, tfcnn, cuenet, bast"


@pytest.mark.parametrize("family", sorted(PROBES))
def test_a_checkpoints_test_store_is_rendered_by_its_family(family, rendered, tmp_path):
    from xai_loc.experiments.scored import family_test_store

    spec = FAMILIES[family].recorded_spec(read_card(_shipped(family)))
    assert one_line(family_test_store, _shipped(family), tmp_path) == f"rendered {spec.name} test"
    assert rendered == [(type(spec).__name__, spec.to_dict(), "test", str(tmp_path), False, {})]


@pytest.mark.parametrize("family", sorted(PROBES))
def test_every_probe_command_renders_the_checkpoints_test_split_through_its_family(family, rendered, tmp_path,
                                                                                    monkeypatch):
    monkeypatch.setattr("xai_loc.experiments.cues.run_duplex_probe", lambda model, out_dir, **kwargs: {})
    spec = FAMILIES[family].recorded_spec(read_card(_shipped(family)))
    data, out = tmp_path / "data", tmp_path / "out"
    refused(run_cli([*PROBES[family], "--data", str(data), "--out", str(out)]), f"rendered {spec.name} test")
    options = {"device": "cpu"} if family == "cochcnn" else {}  # the room simulation's device
    assert rendered == [(type(spec).__name__, spec.to_dict(), "test", str(data), True, options)]
    assert not out.exists()


#: Per family: the data function its renderer calls, where the card records the spec, and the arguments the data
#: function got after the spec before the Family held the renderer (behaviour that must stay the same: these tests
#: pass against the code before the change too).
RENDER_CALLS = {
    "cochcnn": ("xai_loc.data.binaural_store.simulate_binaural", ("dataset", "train", "spec"), ("test",),
                {"root": "scenes-root", "progress": True}),
    "tfcnn": ("xai_loc.data.ipd_ild_scenes.render_scenes", ("dataset", "train", "spec"), ("scenes-root",),
              {"progress": True, "splits": ("test",)}),
    "cuenet": ("xai_loc.features.binaural_cues.simulate_cue_scenes", ("dataset", "spec"), ("test",),
               {"root": "scenes-root", "progress": True}),
    "bast": ("xai_loc.data.bast_scenes.render_bast_scenes", ("dataset", "spec"), ("test",),
             {"root": "scenes-root", "progress": True}),
}


@pytest.mark.parametrize("family", sorted(RENDER_CALLS))
def test_the_test_store_comes_from_the_same_data_function_with_the_same_arguments(family, monkeypatch):
    from xai_loc.experiments.scored import family_test_store

    target, keys, args, keywords = RENDER_CALLS[family]
    seen = []

    def data_function(*given, **kwargs):
        seen.append((given, kwargs))
        return {"test": Path("store")} if family == "tfcnn" else Path("store")

    monkeypatch.setattr(target, data_function)
    assert family_test_store(_shipped(family), "scenes-root", progress=True) == Path("store")
    record = read_card(_shipped(family))
    for key in keys:
        record = record[key]
    ((spec, *rest), kwargs), = seen
    assert spec == type(spec).from_dict(record) and (tuple(rest), kwargs) == (args, keywords)


#: What each probe command writes (result files), by command; ``cue_relevance.nc`` (the cue network's per-example
#: relevance) is left out: folders of ``binaural cues`` written before ``duplex_relevance.nc`` hold that name with
#: other contents.
WRITTEN = {
    "binaural cues": ("duplex.nc", "duplex_relevance.nc", "responses.nc"),
    "binaural tfcnn probe": ("band_profile.nc",),
    "binaural cuenet probe": ("cue_reliance.nc", "cue_ablation.nc"),
    "binaural bast table": ("bast_table.nc",),
    "binaural bast explain": ("relevance_view.nc",),
}

#: The data-only results: what each holds (its required variables), drawn with no figure of its own.
DATA_ONLY = {
    "duplex_relevance.nc": {"relevance_mass": ("stimulus", "ear", "frequency"), "lag_slope": ("band",)},
    "cue_ablation.nc": {"top1": ("cue", "bands"), "attention": ("cue", "bands", "weight_of")},
    "bast_table.nc": {"mirror_contrast": ("sharing", "integration"),
                      "relevance_left": ("sharing", "integration", "pair", "side"),
                      "relevance_right": ("sharing", "integration", "pair", "side")},
    "relevance_view.nc": {"mass": ("explainer", "pair", "side", "ear", "frequency"),
                          "ear_balance": ("explainer", "side")},
}


def test_every_result_a_probe_writes_is_registered_and_listed_by_its_family():
    from xai_loc.experiments.registry import result_for_file

    for command, files in WRITTEN.items():
        group = command.rsplit(" ", 1)[0] if command != "binaural cues" else "binaural"
        family = next(f for f in FAMILIES.values() if f.cli_group == group)
        for name in files:
            result = result_for_file(name)
            assert result is not None and result.command == command, name
            assert result.name in family.probes, (family.name, result.name)


def _data_only(name: str, drop: str | None = None) -> xr.Dataset:
    variables = {var: (dims, np.full((2,) * len(dims), 0.25)) for var, dims in DATA_ONLY[name].items() if var != drop}
    return xr.Dataset(variables, attrs={"xai_loc_version": "test"})


def test_the_data_only_results_open_draw_nothing_and_reach_the_report(tmp_path):
    from xai_loc.experiments.registry import result_for_file
    from xai_loc.io import write_dataset_atomic
    from xai_loc.plots.redraw import draw, redraw
    from xai_loc.report import render_report
    from xai_loc.report.collect import collect_sections

    folder = tmp_path / "results"
    paths = [write_dataset_atomic(_data_only(name), folder / name) for name in DATA_ONLY]
    assert draw(paths) == []  # registered, with no figure to draw
    assert one_line(redraw, folder) == (f"{folder} holds only results without figures of their own (bast_table.nc, "
                                        "cue_ablation.nc, duplex_relevance.nc, relevance_view.nc); read them with "
                                        "xai-loc report")
    (section,) = collect_sections(folder)
    assert sorted(section.entries) == ["bast_table", "cue_ablation", "duplex_relevance", "relevance_view"]
    assert all(entry.figures == {} for entry in section.entries.values())
    page = render_report(folder)
    assert all(name in page for name in DATA_ONLY)
    assert sorted(Path(p).name for p in folder.iterdir()) == sorted(DATA_ONLY)  # nothing drawn beside them
    for name, variables in DATA_ONLY.items():
        missing = next(iter(variables))
        path = write_dataset_atomic(_data_only(name, drop=missing), tmp_path / "damaged" / name)
        result = result_for_file(name)
        assert one_line(result.open, path) == (f"{result.what} {path} is not what it should be (it has no "
                                               f"{missing!r}); run 'xai-loc {result.command}' to rebuild it")
