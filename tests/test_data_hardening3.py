"""Regression tests of the data layer's third review: a chunk damaged in an unfinished store is written again, never
sealed; stores of an older version are refused when read; the CLI and the library record the same RIR options; a
dataset of another configuration names what differs; conditions and an empty data root are refused up front."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import dies_in_the_second_block, one_line, refused, run_cli, tree

from xai_loc.acoustics.room import ShoeBox, check_snr, check_t60
from xai_loc.data import bast_scenes, binaural_store, cue_scenes, ipd_ild_scenes, store
from xai_loc.data.integrity import MANIFEST, seal_store
from xai_loc.data.resumable import ResumableStore, StoreKind, write_store
from xai_loc.data.scene import Scene, parse_condition
from xai_loc.errors import WorkLost

REPO = Path(__file__).resolve().parents[1]
KIND = StoreKind("toy store", "values", ("item", "channel"), "volts", "make_toy")
N, CHANNELS, BLOCK = 10, 3, 3  # blocks: items 0-2, 3-5, 6-8, 9
CONFIG = {"seed": 1}


def _values() -> np.ndarray:
    return (np.arange(N)[:, None] + 1 + np.arange(CHANNELS)[None, :] / 10).astype(np.float32)


def _open(out: ResumableStore) -> ResumableStore:
    return out.open_or_resume((N, CHANNELS), {"item": ("item", np.arange(N))}, {"config": json.dumps(CONFIG)},
                              block=BLOCK)


def _write(out: ResumableStore, blocks) -> None:
    for b in blocks:
        items = out.items(b)
        out.write(b, {"values": _values()[items.start:items.stop]})


def _cut(chunk: Path) -> None:
    """Cut a chunk file to half its bytes (a write a crash left half done, or damage on the disk)."""
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("toy") / "toy.zarr"
    with ResumableStore(path, KIND, CONFIG) as out:
        _write(_open(out), [0, 1, 2, 3])
        return out.finish()


# --- 1. a chunk damaged inside an unfinished store ----------------------------------------------------------------

def test_a_recorded_chunk_that_does_not_decode_is_written_again_on_resume(toy, tmp_path):
    path = tmp_path / "toy.zarr"
    with pytest.raises(KeyboardInterrupt), ResumableStore(path, KIND, CONFIG) as out:
        _write(_open(out), [0, 2])
        raise KeyboardInterrupt
    _cut(path.with_name("toy.zarr.partial") / "values" / "7.0")
    with ResumableStore(path, KIND, CONFIG) as out:
        assert _open(out).pending() == [1, 2, 3]  # block 2 (items 6-8) again, block 0 kept
        _write(out, out.pending())
        out.finish()
    assert tree(path) == tree(toy)


def test_a_chunk_that_does_not_decode_is_never_sealed(toy, tmp_path):
    path = tmp_path / "toy.zarr"
    with pytest.raises(WorkLost), ResumableStore(path, KIND, CONFIG) as out:
        _write(_open(out), [0, 1, 2, 3])
        partial = path.with_name("toy.zarr.partial")
        _cut(partial / "values" / "4.0")
        assert one_line(out.finish) == (
            f"toy store {partial}: chunk values/4.0, recorded as written, cannot be decoded (the blosc frame is not "
            "as long as its header says); run the command again to write it afresh")
        out.finish()
    assert not path.exists() and not (partial / MANIFEST).exists()
    # final review: the partial store is kept, and the rerun writes the damaged block alone
    with ResumableStore(path, KIND, CONFIG) as out:
        assert _open(out).pending() == [1]
        _write(out, out.pending())
        out.finish()
    assert tree(path) == tree(toy)


def _scene() -> Scene:
    """Two microphones, two sources, 1024-sample windows: a store in about a second."""
    return Scene(name="tiny", room=ShoeBox((4.0, 3.0, 2.5)), mics=np.array([[1.9, 1.5, 1.2], [2.1, 1.5, 1.2]]),
                 sources=np.array([[1.0, 1.0, 1.3], [3.0, 1.0, 1.3]]), splits={"test": [0, 1]}, window=1024)


def _simulate(root: Path, **kw) -> Path:
    return store.simulate_dataset(_scene(), "test", 0.15, 25.0, root=root, progress=False, **kw)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A finished dataset store, simulated as ``xai-loc simulate`` asks (RIR options ``{'mode': 'ism'}``)."""
    return _simulate(tmp_path_factory.mktemp("cli"), rir_options={"mode": "ism"})


def test_simulate_killed_then_a_chunk_damaged_resumes_to_the_bytes_of_one_run(dataset, tmp_path, monkeypatch):
    """The reviewer's case: `simulate` killed, a recorded chunk of the partial store cut, `simulate` again: it
    reported the store good and sealed the damaged chunk, which only a later read refused."""
    dies_in_the_second_block(monkeypatch, ResumableStore, "write", KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        _simulate(tmp_path)
    monkeypatch.undo()
    final = dataset.relative_to(dataset.parents[2])
    partial = tmp_path / final.with_name(final.name + ".partial")
    record = json.loads((tmp_path / final.with_name(final.name + ".progress.json")).read_text())
    assert record["windows_written"] > 1
    _cut(partial / "signals" / "1.0.0")
    assert _simulate(tmp_path) == tmp_path / final
    assert tree(tmp_path / final) == tree(dataset)


# --- 2, 3. stores of an older version are refused when read --------------------------------------------------------

def _set_version(path: Path, version: int) -> None:
    """Record ``version`` in a finished store's config, sealed again as its writer sealed it."""
    for name in (".zattrs", ".zmetadata"):
        text = (path / name).read_text()
        assert len(re.findall(r'\\"version\\": \d', text)) == 1
        (path / name).write_text(re.sub(r'(\\"version\\": )\d', rf"\g<1>{version}", text))
    seal_store(path, json.loads((path / MANIFEST).read_text()).get("complete", ()))


def _bast(root: Path) -> tuple[Path, StoreKind]:
    spec = bast_scenes.BastSceneSpec(name="t", azimuths=(60.0, 300.0), kinds=("white_burst",), n_sounds=4,
                                     test_fraction=0.5)
    return bast_scenes.render_bast_scenes(spec, "test", root=root), bast_scenes.BAST_SCENES


def _tfcnn(root: Path) -> tuple[Path, StoreKind]:
    spec = ipd_ild_scenes.SceneSpec(name="t", azimuths=(-30.0, 30.0), n_train=1, test_per_azimuth=1,
                                    test_snrs=(20.0,), duration=0.05)
    return ipd_ild_scenes.render_scenes(spec, root, progress=False, splits=("test",))["test"], ipd_ild_scenes.SCENES


def _binaural(root: Path) -> tuple[Path, StoreKind]:
    spec = binaural_store.BinauralSpec(name="tiny", rooms=("anechoic",), kinds=("pink_burst",), n_sounds=5,
                                       per_sound=2, duration=0.05, fs=16000, snr=None)
    return binaural_store.simulate_binaural(spec, "test", root=root), binaural_store.BINAURAL


@pytest.mark.parametrize("render, opens", [
    (_bast, [bast_scenes.BAST_SCENES.open]),
    (_tfcnn, [ipd_ild_scenes.open_scenes]),
    (_binaural, [binaural_store.open_binaural]),
], ids=["bast", "tfcnn", "binaural"])
def test_a_store_of_an_older_version_is_refused_when_read(tmp_path, render, opens):
    """The reviewer's case: a binaural store of version 1 (its background of bilinear HRIRs) opened as current, so
    training and probes read it."""
    path, kind = render(tmp_path)
    assert json.loads(kind.open(path).attrs["config"])["version"] == 2
    _set_version(path, 1)
    message = f"{path} was written by an older xai-loc (store version 1, now 2); remove it to render it again"
    from xai_loc.explain.binaural import EAR_SIGNALS  # final review: the reader of any ear-signal store too

    for read in [*opens, kind.open, kind.open_array, EAR_SIGNALS.open, EAR_SIGNALS.open_array]:
        assert one_line(read, path) == message
    assert one_line(render, tmp_path) == message  # and not reused by the writer either


def test_cue_scene_stores_record_and_check_their_version(tmp_path):
    kind, path = cue_scenes.CUE_SCENES, tmp_path / "test.zarr"
    toy = dict(shape=(2, 1, 1, 1), coords={}, attrs={}, render=lambda items: {"cues": np.ones((len(items), 1, 1, 1))})
    write_store(path, kind, {"spec": {}}, **toy)
    assert json.loads(kind.open(path).attrs["config"]) == {"spec": {}, "format": "xai-loc-cue-scenes", "version": 1}
    assert cue_scenes.open_cue_scenes(path)["cues"].shape == (2, 1, 1, 1)  # today's stores (version 1) still open
    _set_version(path, 0)
    message = f"{path} was written by an older xai-loc (store version 0, now 1); remove it to render it again"
    assert one_line(cue_scenes.open_cue_scenes, path) == one_line(kind.open_array, path) == message
    assert one_line(write_store, path, kind, {"spec": {}}, **toy) == message


# --- 4. the CLI and the library record the same RIR options ---------------------------------------------------------

def test_rir_options_at_their_defaults_are_recorded_as_none(dataset, tmp_path, monkeypatch):
    from xai_loc.models import WindowSet

    assert json.loads(store.open_signals(dataset).attrs["config"])["rir_options"] == {}
    split = store.simulate_windows(_scene(), "test", 0.15, 25.0, progress=False)  # train/evaluate/explain's route
    assert split.digest == WindowSet(dataset).digest == WindowSet(split).digest
    # a store that recorded {'mode': 'ism'} before is still the same data: reused as it is
    old = tmp_path / dataset.relative_to(dataset.parents[2])
    shutil.copytree(dataset, old)
    for name in (".zattrs", ".zmetadata"):
        text = (old / name).read_text()
        assert text.count(r'\"rir_options\": {}') == 1
        (old / name).write_text(text.replace(r'\"rir_options\": {}', r'\"rir_options\": {\"mode\": \"ism\"}'))
    seal_store(old, ["signals"])
    before = tree(old)
    monkeypatch.setattr(store, "_block_windows", lambda *a: pytest.fail("a reusable store was rendered again"))
    assert _simulate(tmp_path) == old and tree(old) == before


# --- 5. a dataset of another configuration names the first difference --------------------------------------------

def test_a_dataset_of_another_configuration_names_what_differs(dataset):
    root = dataset.parents[2]
    message = (f"{dataset} holds a dataset with a different configuration (seed 0 recorded, 1 asked); remove it or "
               "use another data root (--data)")
    assert one_line(_simulate, root, seed=1) == message
    assert one_line(store.check_dataset, _scene(), "test", 0.15, 25.0, root=root, seed=1) == message
    from xai_loc.data.spec import first_difference

    assert first_difference({"a": {"b": 1}, "c": 2}, {"c": 2, "a": {"b": 3}}) == "a.b 1 recorded, 3 asked"
    assert first_difference({"a": 1}, {"a": 1, "mode": "ism"}) == "mode not recorded, 'ism' asked"
    assert first_difference({"a": 1, "mode": "ism"}, {"a": 1}) == "mode 'ism' recorded, not asked"
    assert first_difference({"a": [1]}, {"a": [1]}) is None


# --- 6. conditions are checked where they are given ------------------------------------------------------------------

@pytest.mark.parametrize("text, check, value", [("99:10", check_t60, 99.0), ("nan:inf", check_t60, float("nan")),
                                                 ("0.6:inf", check_snr, float("inf")), ("0.6:300", check_snr, 300.0)])
def test_a_condition_out_of_range_is_refused_when_parsed(text, check, value):
    assert one_line(parse_condition, text) == f"condition {text!r}: {one_line(check, value)}"


def test_train_zoo_refuses_a_bad_condition_before_any_work(tmp_path):
    """The reviewer's case: ``--conditions 0.15:25 99:10`` trained the first condition and only then failed."""
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "train_zoo.py"), "--conditions", "99:10",
                          "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines()[-1] == (f"train_zoo.py: error: argument --conditions: condition '99:10': "
                                           f"{one_line(check_t60, 99.0)}")
    assert parse_condition("0.15:25") == (0.15, 25.0)
    assert list(tmp_path.iterdir()) == []


# --- 7. an empty data root ------------------------------------------------------------------------------------------

def test_an_empty_data_root_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli(["simulate", "--t60", "0.15", "--snr", "25", "--sources", "1", "--data", ""])
    refused(result, "--data/--out '' is not allowed; give a folder path ('.' for the current folder)")
    assert list(tmp_path.iterdir()) == []
    from xai_loc.cli_params import DataRoot, data_root_default

    assert one_line(DataRoot().convert, "", None, None) == (
        "value '' is not allowed; give a folder path ('.' for the current folder)")
    monkeypatch.setenv("XAI_LOC_DATA", "")
    assert data_root_default() == "xai-loc-data"  # an empty variable still means the default
