"""Regression tests of the data layer's review: durable resumable stores, exact condition names, simulation
arguments checked up front, components read from the windows they need, backend traits, one block helper and
the components experiment on a store of another corpus."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import xai_loc.data.resumable as resumable
from xai_loc.acoustics.room import ShoeBox
from xai_loc.data import store
from xai_loc.data.resumable import ResumableStore, StoreKind
from xai_loc.data.scene import Scene
from xai_loc.errors import InputError

KIND = StoreKind("toy store", "values", ("item", "channel"), "volts", "make_toy")
N, CHANNELS = 6, 3
CONFIG = {"name": "toy"}


def _one_line(fn, *args, **kwargs) -> str:
    with pytest.raises(InputError) as err:
        fn(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def _open(out: ResumableStore) -> ResumableStore:
    coords = {"item": ("item", np.arange(N) + 7), "label": ("item", np.full(N, np.nan))}
    return out.open_or_resume((N, CHANNELS), coords, {"config": json.dumps(CONFIG)}, block=2)


def _values(items: range) -> np.ndarray:
    return np.arange(1, 1 + len(items) * CHANNELS, dtype=np.float32).reshape(len(items), CHANNELS) + items.start


def _write(out: ResumableStore, blocks) -> None:
    for b in blocks:
        items = out.items(b)
        out.write(b, {"values": _values(items), "label": np.array(items, dtype=float)})


@pytest.fixture(scope="module")
def tiny() -> Scene:
    """Two microphones, two sources, short windows: a store in a fraction of a second."""
    return Scene("tiny", ShoeBox((4.0, 5.0, 3.0)), np.array([[1.0, 4.0, 1.2], [1.2, 4.0, 1.2]]),
                 np.array([[2.0, 2.0, 1.5], [3.0, 2.5, 1.5]]), {"test": [0, 1]}, window=1024)


@pytest.fixture(scope="module")
def tiny_store(tiny, tmp_path_factory) -> Path:
    return store.simulate_dataset(tiny, "test", 0.2, 20.0, root=tmp_path_factory.mktemp("tiny"), progress=False)


# --- 1. a resumable store is durable -----------------------------------------------------------

def test_a_new_partial_is_on_the_disk_before_its_first_progress_record(tmp_path, monkeypatch):
    synced, unsynced = set(), []
    real_fsync, real_progress = resumable.fsync_path, resumable.write_progress

    def fsync(path) -> None:
        synced.add(Path(path))
        real_fsync(path)

    def progress(path: Path, record: dict) -> None:
        partial = path.with_name(path.name.replace(".progress.json", ".partial"))
        unsynced.append([p for p in [partial, partial.parent, *partial.rglob("*")] if p not in synced])
        real_progress(path, record)

    monkeypatch.setattr(resumable, "fsync_path", fsync)
    monkeypatch.setattr(resumable, "write_progress", progress)
    with ResumableStore(tmp_path / "toy.zarr", KIND, CONFIG) as out:
        _open(out)
    assert unsynced[0] == []  # coordinates, metadata, their folders and the partial's own entry


@pytest.mark.parametrize("lost", ["item/0", "label/.zarray"])
def test_a_coordinate_file_a_power_loss_emptied_is_written_afresh(tmp_path, lost):
    path = tmp_path / "toy.zarr"
    with pytest.raises(KeyboardInterrupt), ResumableStore(path, KIND, CONFIG) as out:
        _write(_open(out), [0])
        raise KeyboardInterrupt
    (path.with_name("toy.zarr.partial") / lost).write_bytes(b"")
    with ResumableStore(path, KIND, CONFIG) as out:
        assert _open(out).pending() == [0, 1, 2]  # not resumed: the coordinates are made again
        _write(out, out.pending())
        out.finish()
    ds = KIND.open(path)
    np.testing.assert_array_equal(ds["item"].values, np.arange(N) + 7)
    np.testing.assert_array_equal(ds["label"].values, np.arange(N, dtype=float))


def test_sealing_refuses_an_empty_file(tmp_path):
    from xai_loc.data.integrity import MANIFEST, seal_store

    path = tmp_path / "toy.zarr"
    with pytest.raises(KeyboardInterrupt), ResumableStore(path, KIND, CONFIG) as out:
        _write(_open(out), [0, 1, 2])
        raise KeyboardInterrupt
    partial = path.with_name("toy.zarr.partial")
    (partial / "item" / "0").write_bytes(b"")
    assert "empty file item/0" in _one_line(seal_store, partial, complete=("values",), what="toy store")
    assert not (partial / MANIFEST).exists()


def test_the_final_name_is_flushed_to_the_disk(tmp_path, monkeypatch):
    path = tmp_path / "toy.zarr"
    calls = []
    real = resumable.fsync_path
    monkeypatch.setattr(resumable, "fsync_path", lambda p: (calls.append((Path(p), path.exists())), real(p)))
    with ResumableStore(path, KIND, CONFIG) as out:
        _write(_open(out), [0, 1, 2])
        out.finish()
    assert (tmp_path, True) in calls  # the folder's entries after the rename


# --- 2. one folder per condition ---------------------------------------------------------------

@pytest.mark.parametrize("t60, snr, name", [
    (0.15, 25, "t60-0.15_snr-25"), (0.3, 20.0, "t60-0.3_snr-20"), (0.4, 15, "t60-0.4_snr-15"),
    (0.6, 10, "t60-0.6_snr-10"), (1.25, -5.5, "t60-1.25_snr--5.5"), (2e-05, 100, "t60-2e-05_snr-100"),
])
def test_names_of_round_tripping_values_are_unchanged(t60, snr, name):
    assert store.condition_name(t60, snr) == name


def test_close_conditions_get_their_own_folders(tiny, tmp_path):
    """Two conditions never share a folder; a value within float32 rounding of its 6-digit form is that
    condition (``np.float32(0.2)``, ``0.1 + 0.2``: the names of the shipped checkpoints), in name and config."""
    values = [0.2, 0.2000001, np.float32(0.2), 0.1 + 0.1]
    names = [store.condition_name(t, 20) for t in values]
    assert names == ["t60-0.2_snr-20", "t60-0.2000001_snr-20", "t60-0.2_snr-20", "t60-0.2_snr-20"]
    assert store.condition_name(0.1 + 0.2, np.float32(20)) == "t60-0.3_snr-20"
    paths = [store.simulate_dataset(tiny, "test", t, 20.0, root=tmp_path, n_sources=1, progress=False)
             for t in values]
    assert paths[0] != paths[1] and paths[0] == paths[2] == paths[3] and all(p.is_dir() for p in paths)


# --- 3. simulation arguments are checked before anything is written ----------------------------

@pytest.mark.parametrize("kw, named", [
    ({"n_sources": True}, "n_sources=True"), ({"n_sources": 1.5}, "n_sources=1.5"), ({"seed": -1}, "seed=-1"),
    ({"seed": 1.5}, "seed=1.5"), ({"seed": "3"}, "seed='3'"), ({"device": "gpu0"}, "'gpu0'"),
    ({"rir_options": {"seed": 5}}, "'seed'"), ({"rir_options": {"device": "cpu"}}, "'device'"),
    ({"rir_options": {"convention": "gpurir"}}, "'convention'"),
    ({"rir_options": {"dtype": torch.float64}}, "'dtype'"), ({"rir_options": {"t_max": "x"}}, "t_max='x'"),
    ({"rir_options": {"t_max": math.nan}}, "t_max=nan"), ({"rir_options": [("mode", "ism")]}, "[('mode', 'ism')]"),
    ({"rir_options": {"max_order": np.array([3])}}, "max_order=array([3])"),
])
def test_bad_simulation_arguments_are_one_line_and_write_nothing(tiny, tmp_path, kw, named):
    root = tmp_path / "data"
    assert named in _one_line(store.simulate_dataset, tiny, "test", 0.2, 20.0, root=root, progress=False, **kw)
    assert not root.exists()


def test_numpy_numbers_are_recorded_as_python_numbers(tiny, tmp_path):
    path = store.simulate_dataset(tiny, "test", 0.2, 20.0, root=tmp_path, n_sources=1, seed=np.int64(3),
                                  rir_options={"max_order": np.int64(3)}, progress=False)
    config = json.loads(store.open_signals(path).attrs["config"])
    assert config["seed"] == 3 and config["rir_options"] == {"max_order": 3}
    assert store.simulate_dataset(tiny, "test", 0.2, 20.0, root=tmp_path, n_sources=1, seed=3,
                                  rir_options={"max_order": 3}, progress=False) == path  # the same store


def test_store_components_refuses_an_unknown_device(tiny_store):
    from xai_loc.data.components import store_components

    assert "'gpu'" in _one_line(store_components, store.open_signals(tiny_store), [0], device="gpu")


# --- 4. components read only the windows they render -------------------------------------------

def test_store_components_reads_only_the_windows_of_its_sources(tiny_store, monkeypatch):
    from xai_loc.data import integrity
    from xai_loc.data.components import store_components

    ds = store.open_signals(tiny_store)
    mine = ds["source_id"].values == 1
    reads = []
    real = integrity._Checks.check
    monkeypatch.setattr(integrity._Checks, "check",
                        lambda self, key, *a: (reads.append(key) if key.startswith("signals/") else None,
                                               real(self, key, *a))[1])
    parts = store_components(ds, [1])
    assert len(reads) == mine.sum() < mine.size
    np.testing.assert_array_equal(parts.sum(0).astype(np.float32), ds["signals"].values[mine])


# --- 5. values are checked as they are stored --------------------------------------------------

@pytest.mark.parametrize("value, problem", [(1e39, "NaN or infinite"), (1e-46, "all zero")])
def test_values_are_checked_in_the_stored_precision(tmp_path, value, problem):
    with ResumableStore(tmp_path / "toy.zarr", KIND, CONFIG) as out:
        _open(out)
        assert problem in _one_line(out.write, 0, {"values": np.full((2, CHANNELS), value)})
        assert out.pending() == [0, 1, 2]


# --- 6. an image-source set without arrivals ---------------------------------------------------

def test_no_image_within_reach_is_one_line():
    from xai_loc.acoustics.ism import _images

    room = ShoeBox((5.0, 4.0, 3.0))
    message = _one_line(_images, room, np.array([1.0, 1.0, 1.5]), np.array([[2.5, 3.5, 1.2]]), 0.5, None)
    assert f"{0.5 / room.c:.6g} s" in message and "t_max" in message


# --- 7. backends declare what callers need to know ---------------------------------------------

def test_backends_declare_seed_devices_and_diffuse_tail():
    from xai_loc.acoustics.backends import BACKENDS, TRAITS

    assert set(TRAITS) == set(BACKENDS)
    assert TRAITS["torch"].seeded and not TRAITS["pyroomacoustics"].seeded and not TRAITS["gpurir"].seeded
    assert TRAITS["torch"].devices == ("cpu", "cuda") and TRAITS["gpurir"].devices == ()
    assert TRAITS["torch"].diffuse_start({"mode": "hybrid"}, 0.4) == 0.1
    assert TRAITS["torch"].diffuse_start({"mode": "hybrid", "t_diff": 0.05}, 0.4) == 0.05
    assert TRAITS["torch"].diffuse_start({}, 0.4) is None
    assert TRAITS["gpurir"].diffuse_start({"t_diff": 0.05}, 0.4) == 0.05
    assert TRAITS["pyroomacoustics"].diffuse_start({"t_diff": 0.05}, 0.4) is None


@pytest.mark.parametrize("seeded", [True, False])
def test_a_plugin_backend_gets_a_seed_when_it_declares_one(tiny, monkeypatch, seeded):
    from xai_loc.acoustics import backends

    got = {}

    def plugin(room, sources, mics, t60, *, t_max=None, device="cpu", convention=None, **options):
        got.update(options)
        return np.ones((len(sources), len(mics), 8), dtype=np.float32)

    monkeypatch.setitem(backends.BACKENDS, "plugin", plugin)
    monkeypatch.setitem(backends.TRAITS, "plugin", backends.BackendTraits(seeded=seeded))
    store.source_rirs(tiny, 1, 0.2, 4, "plugin", "cpu", {})
    assert got == ({"seed": 4 * 1_000_003 + 1} if seeded else {})


# --- 8. one block helper for both paths --------------------------------------------------------

def test_both_paths_cut_sources_into_the_same_blocks():
    assert store._blocks(range(3), "cpu") == [(0,), (1,), (2,)]
    assert store._blocks(list(range(20)), "cuda") == [tuple(range(16)), (16, 17, 18, 19)]


# --- 9. the components experiment on a store of another corpus ---------------------------------

def test_components_of_a_store_simulated_from_a_speech_folder(tiny, tmp_path):
    import soundfile as sf
    from torch import nn

    from xai_loc.acoustics.speech import SpeechCorpus
    from xai_loc.experiments.components import run_components

    rng = np.random.default_rng(0)
    for k in range(2):
        sf.write(tmp_path / f"u{k}.wav", rng.uniform(-0.5, 0.5, 4000).astype(np.float32), 16000)
    corpus = SpeechCorpus.from_folder(tmp_path, fs=16000)
    path = store.simulate_dataset(tiny, "test", 0.2, 20.0, root=tmp_path / "data", corpus=corpus, n_sources=1,
                                  progress=False)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 1024, 3))
    options = {"methods": ["input_x_gradient"], "target": "x", "randomized_baseline": False, "n_boot": 10}
    assert "give its corpus" in _one_line(run_components, {"linear": model}, path, **options)
    ds = run_components({"linear": model}, path, corpus=corpus, **options)
    np.testing.assert_allclose(ds["energy_share"].sum().item(), 1.0, rtol=1e-9)
