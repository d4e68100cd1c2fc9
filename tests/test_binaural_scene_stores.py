"""The binaural scene sets (TF-CNN, BAST, cue network) as resumable zarr stores of the one mechanism.

Each set is written by :func:`xai_loc.data.resumable.write_store` and opened by its
:class:`~xai_loc.data.resumable.StoreKind`: the stored numbers are the in-memory renderings,
a finished store is reused only for the same spec digest, an interrupted one resumes to the
same bytes, and a damaged, unfinished or foreign one is refused in one line.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from helpers import dies_in_the_second_block

from xai_loc.data import bast_scenes, cue_scenes, ipd_ild_scenes
from xai_loc.errors import InputError


def _one_line(fn, *args, **kwargs) -> str:
    with pytest.raises(InputError) as err:
        fn(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def _tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _ipd_spec(**kw) -> ipd_ild_scenes.SceneSpec:
    return ipd_ild_scenes.SceneSpec(name="t", azimuths=(-30.0, 30.0), n_train=3, test_per_azimuth=1,
                                    test_snrs=(0.0, 6.0), duration=0.05, **kw)


def _bast_spec(**kw) -> bast_scenes.BastSceneSpec:
    return bast_scenes.BastSceneSpec(name="t", azimuths=(90.0, 270.0), kinds=("white_burst", "speech"), n_sounds=4,
                                     test_fraction=0.5, **kw)


def _cue_spec() -> cue_scenes.CueSceneSpec:
    return cue_scenes.CueSceneSpec(name="t", per_utterance={"train": 1, "test": 1}, test_fraction=0.02, duration=0.1)


def test_tfcnn_scene_store_holds_the_in_memory_rendering_and_is_reused_by_digest(tmp_path, monkeypatch):
    from xai_loc.explain.binaural import read_ear_signals

    spec = _ipd_spec()
    path = ipd_ild_scenes.render_scenes(spec, tmp_path, progress=False, splits=("test",))["test"]
    assert path == tmp_path / "ipd_ild" / "t" / "test.zarr"
    stored, memory = ipd_ild_scenes.open_scenes(path), ipd_ild_scenes.render_split(spec, "test")
    for name in ("waveforms", "azimuth", "snr", "utterance", "start", "level_db"):
        np.testing.assert_array_equal(stored[name].values, memory[name].values)
        assert stored[name].dtype == memory[name].dtype
    assert stored.waveforms.shape == (4, 2, 800) and stored.attrs["spec_digest"] == spec.digest()
    np.testing.assert_array_equal(read_ear_signals(path, 16000, 800), memory.waveforms.values)
    before = _tree(path)
    def never(*args):
        raise AssertionError("a finished store of the same spec is rendered again")

    monkeypatch.setattr(ipd_ild_scenes, "_render_items", never)
    assert ipd_ild_scenes.render_scenes(spec, tmp_path, progress=False, splits=("test",))["test"] == path
    assert _tree(path) == before
    assert _one_line(ipd_ild_scenes.render_scenes, _ipd_spec(seed=1), tmp_path, progress=False,
                     splits=("test",)) == f"{path} holds scenes of another spec; remove it or use another name"


def test_cue_scene_store_holds_the_front_end_of_the_rerendered_examples(tmp_path):
    from xai_loc.features.binaural_cues import BinauralCues, simulate_cue_scenes

    spec = _cue_spec()
    path = simulate_cue_scenes(spec, "test", root=tmp_path)
    assert path == tmp_path / "cue_scenes" / f"t-{spec.digest()}" / "test.zarr"
    ds = cue_scenes.open_cue_scenes(path)
    n = ds.sizes["example"]
    assert n == 6 and ds.cues.dims == ("example", "cue", "band", "frame")
    with torch.inference_mode():  # one batch of all six, as the store computed them
        expected = BinauralCues(fs=spec.fs)(torch.from_numpy(cue_scenes.render_scene_example(spec, "test", range(n))))
    np.testing.assert_array_equal(ds.cues.values, expected.numpy())
    np.testing.assert_array_equal(ds.azimuth.values, spec.plan("test")["azimuth"])
    assert set(ds.noise_kind.values.ravel()) <= set(spec.noise_kinds) and np.isfinite(ds.snr.values).all()


def test_an_interrupted_bast_store_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    spec = _bast_spec(snr=(20.0, 40.0))
    clean = bast_scenes.render_bast_scenes(spec, "train", root=tmp_path / "clean")
    calls = dies_in_the_second_block(monkeypatch, bast_scenes._Renderer)
    with pytest.raises(RuntimeError, match="killed"):
        bast_scenes.render_bast_scenes(spec, "train", root=tmp_path / "run")
    final = tmp_path / "run" / "bast" / "t" / "train.zarr"
    assert not final.exists() and final.with_name("train.zarr.partial").is_dir()
    calls.clear()
    assert bast_scenes.render_bast_scenes(spec, "train", root=tmp_path / "run") == final
    assert calls == [range(2, 4)]  # one sound (both azimuths) per block: only the second is rendered again
    assert sorted(p.name for p in final.parent.iterdir()) == ["train.zarr"]
    assert _tree(final) == _tree(clean)


@pytest.mark.parametrize("kind", [ipd_ild_scenes.SCENES, bast_scenes.BAST_SCENES, cue_scenes.CUE_SCENES],
                         ids=lambda k: k.what)
def test_damaged_unfinished_and_foreign_scene_stores_are_one_line(tmp_path, kind):
    from xai_loc.data.resumable import write_store

    path = tmp_path / "test.zarr"
    shape = (4, *(1,) * (len(kind.dims) - 1))
    write_store(path, kind, {"toy": 1}, shape=shape, coords={}, attrs={}, chunk=2,
                render=lambda items: {kind.variable: np.ones((len(items), *shape[1:]), np.float32)})
    assert kind.open(path)[kind.variable].shape == shape
    chunk = ".".join(["1"] + ["0"] * (len(kind.dims) - 1))
    (path / kind.variable / chunk).unlink()
    assert _one_line(kind.open, path) == (f"{kind.what} {path} is damaged: chunk {kind.variable}/{chunk} "
                                          f"is missing; {kind.rebuild}")
    partial = path.with_name("test.zarr.partial")
    shutil.move(path, partial)
    assert _one_line(kind.open, partial) == (f"{partial} is an unfinished {kind.what}; run {kind.make} again "
                                             "to complete it")
    xr.Dataset({kind.variable: (kind.dims, np.ones(shape, np.float32))}).to_netcdf(path, engine="h5netcdf")
    assert _one_line(kind.open, path).startswith(f"{kind.what} {path} is a file, not a zarr store")


def test_a_scene_block_with_nan_is_refused_in_one_line_and_leaves_nothing(tmp_path):
    from xai_loc.data.resumable import write_store

    kind, path = cue_scenes.CUE_SCENES, tmp_path / "cue_scenes" / "t" / "test.zarr"

    def render(items):  # the second block (examples 2, 3) holds a NaN in example 3
        values = np.ones((len(items), 1, 1, 1), np.float32)
        values[-1] = np.nan if items.start == 2 else 1.0
        return {kind.variable: values}

    message = _one_line(write_store, path, kind, {"toy": 1}, shape=(4, 1, 1, 1), coords={}, attrs={}, chunk=2,
                        render=render, hint="check the toy")
    assert message == f"{path}: example 3 came out with NaN or infinite cue values; nothing was stored; check the toy"
    assert not (tmp_path / "cue_scenes").exists()
