"""Scene stores written while every diffuse background took bilinear HRIRs (28ba601 to 83d924d) are not reused.

Their specs have today's digests, so the store ``config`` carries the version (2): a finished store of
version 1 is refused in one line telling to render it again, an interrupted one is rendered afresh.
One mechanism leaves a later field at its old value out of a record (:func:`xai_loc.data.spec.omit_later`),
for specs and training recipes alike.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import dies_in_the_second_block

from xai_loc.data import bast_scenes, binaural_store, ipd_ild_scenes
from xai_loc.data.integrity import MANIFEST, seal_store
from xai_loc.errors import InputError


def _bast(root: Path) -> Path:
    spec = bast_scenes.BastSceneSpec(name="t", azimuths=(60.0, 300.0), kinds=("white_burst",), n_sounds=4,
                                     test_fraction=0.5)
    return bast_scenes.render_bast_scenes(spec, "test", root=root)


def _tfcnn(root: Path) -> Path:
    spec = ipd_ild_scenes.SceneSpec(name="t", azimuths=(-30.0, 30.0), n_train=1, test_per_azimuth=1,
                                    test_snrs=(20.0,), duration=0.05)
    return ipd_ild_scenes.render_scenes(spec, root, progress=False, splits=("test",))["test"]


def _binaural(root: Path) -> Path:
    spec = binaural_store.cochcnn_spec(rooms=("anechoic",), kinds=("white_burst",), n_sounds=2, per_sound=1,
                                       test_fraction=0.5, duration=0.05)
    return binaural_store.simulate_binaural(spec, "test", root=root)


def _set_version(path: Path, version: int) -> None:
    """Record ``version`` in the store's config as a store of that version holds it."""
    for name in (".zattrs", ".zmetadata"):
        file = path / name
        if file.exists():
            text, was = file.read_text(), re.compile(r'(\\"version\\": )\d')
            assert len(was.findall(text)) == 1
            file.write_text(was.sub(rf"\g<1>{version}", text))
    manifest = path / MANIFEST
    if manifest.exists():  # a finished store: sealed again, as its writer sealed it
        seal_store(path, json.loads(manifest.read_text()).get("complete", ()))


@pytest.mark.parametrize("render", [_bast, _tfcnn, _binaural], ids=["bast", "tfcnn", "binaural"])
def test_a_finished_store_of_version_1_is_refused_in_one_line(tmp_path, render):
    path = render(tmp_path)
    assert render(tmp_path) == path  # today's store of the same spec is reused
    _set_version(path, 1)
    with pytest.raises(InputError) as err:
        render(tmp_path)
    assert str(err.value) == (f"{path} was written by an older xai-loc (store version 1, now 2); "
                              "remove it to render it again")


def test_an_interrupted_store_of_version_1_is_rendered_afresh(tmp_path, monkeypatch):
    clean = _bast(tmp_path / "clean")
    render = bast_scenes._Renderer.render
    calls = dies_in_the_second_block(monkeypatch, bast_scenes._Renderer)
    with pytest.raises(RuntimeError, match="killed"):
        _bast(tmp_path / "run")
    final = tmp_path / "run" / "bast" / "t" / "test.zarr"
    _set_version(final.with_name("test.zarr.partial"), 1)
    calls.clear()
    monkeypatch.setattr(bast_scenes._Renderer, "render", lambda self, items: calls.append(items) or render(self, items))
    assert _bast(tmp_path / "run") == final
    assert calls == [range(0, 2), range(2, 4)]  # its first block is not kept
    np.testing.assert_array_equal(bast_scenes.BAST_SCENES.open(final)["waveforms"].values,
                                  bast_scenes.BAST_SCENES.open(clean)["waveforms"].values)


def test_a_store_of_another_spec_keeps_its_message():
    from xai_loc.data.spec import store_mismatch

    message = store_mismatch("holds scenes of another spec; remove it or use another name", 2)
    assert message({"spec": {}, "version": 2}) == message({"version": "1"}) == message(["version"]) == \
        "holds scenes of another spec; remove it or use another name"
    assert message({"version": 1}) == "was written by an older xai-loc (store version 1, now 2); remove it to " \
                                      "render it again"


def test_specs_and_recipes_leave_later_fields_out_by_one_rule():
    from xai_loc.data.spec import omit_later
    from xai_loc.models.training import LATER_RECIPE_FIELDS, TrainConfig

    assert omit_later({"a": 1, "b": None, "c": 3}, {"a": 1, "b": 0}) == {"b": None, "c": 3}
    assert omit_later({"a": 2}, {"a": 1}) == {"a": 2}
    recipe = TrainConfig().recipe("loccnn")
    assert not set(LATER_RECIPE_FIELDS) & set(recipe) and recipe["lr"] == 1e-3
    assert TrainConfig(draws_per_epoch=2).recipe("loccnn") == {**recipe, "draws_per_epoch": 2}
    spec = bast_scenes.BastSceneSpec()
    assert spec.to_dict() == omit_later(spec.to_dict(), {"interp": "barycentric"}) and "interp" not in spec.to_dict()
    assert spec.digest() == "fbcd7fca68e6adab"
