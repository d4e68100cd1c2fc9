"""Review of the data layer: store identity by corpus content, finished stores without write access, messages
about paths that are no store, TF32 off wherever sources are rendered, undecodable chunks, argument types and
two writers of one store."""
from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line, tf32_flags, tree

import xai_loc.io
from xai_loc.acoustics.room import ShoeBox
from xai_loc.acoustics.speech import SHIPPED_DIR, SpeechCorpus
from xai_loc.data import store
from xai_loc.data.integrity import MANIFEST, REBUILD, open_zarr_group, seal_store
from xai_loc.data.resumable import StoreKind, write_store
from xai_loc.data.scene import Scene
from xai_loc.errors import InputError

SIM = {"progress": False}


def _scene() -> Scene:
    """Two microphones, two sources, 1024-sample windows: a store in about a second."""
    return Scene(name="tiny", room=ShoeBox((4.0, 3.0, 2.5)), mics=np.array([[1.9, 1.5, 1.2], [2.1, 1.5, 1.2]]),
                 sources=np.array([[1.0, 1.0, 1.3], [3.0, 1.0, 1.3]]), splits={"test": [0, 1]}, window=1024)


def _simulate(root: Path, **kw) -> Path:
    return store.simulate_dataset(_scene(), "test", 0.15, 25.0, root=root, **SIM, **kw)








@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    """A folder of three utterances of the shipped corpus."""
    folder = tmp_path_factory.mktemp("speech") / "sp"
    folder.mkdir()
    for name in ("esp000.ogg", "esp001.ogg", "esp002.ogg"):
        shutil.copy(SHIPPED_DIR / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """A finished store of the shipped corpus."""
    return _simulate(tmp_path_factory.mktemp("ref"))


def _counting(monkeypatch) -> list[int]:
    """The ids of the sources rendered from now on."""
    rendered: list[int] = []
    real = store._render_source
    monkeypatch.setattr(store, "_render_source", lambda *a, **k: rendered.append(a[1]) or real(*a, **k))
    return rendered


# --- 1. a speech folder is identified by its audio, not by the path it was named by --------------------------

def test_a_speech_folder_named_by_another_path_is_the_same_data(speech, tmp_path, monkeypatch):
    monkeypatch.chdir(speech.parent)
    relative = SpeechCorpus.from_folder("sp")
    path = _simulate(tmp_path, corpus=relative)
    # the name is recorded as before (stores of earlier versions record the same), only not compared
    assert json.loads(store.open_signals(path).attrs["config"])["corpus"] == "folder:sp"
    before = tree(path)
    rendered = _counting(monkeypatch)
    assert _simulate(tmp_path, corpus=SpeechCorpus.from_folder(speech)) == path  # absolute: reused as it is
    assert _simulate(tmp_path, corpus=SpeechCorpus.from_folder("./sp/../sp")) == path
    assert rendered == [] and tree(path) == before
    # other audio is still other data
    (speech.parent / "other").mkdir()
    shutil.copy(speech / "esp000.ogg", speech.parent / "other" / "esp000.ogg")
    assert "different configuration" in one_line(_simulate, tmp_path, corpus=SpeechCorpus.from_folder("other"))


def test_an_unfinished_store_resumes_under_another_spelling_of_its_speech_folder(speech, tmp_path, monkeypatch):
    monkeypatch.chdir(speech.parent)
    whole = tree(_simulate(tmp_path / "ref", corpus=SpeechCorpus.from_folder("sp")))
    real = store._render_source

    def killed_on_the_second(*a, **k):
        if a[1] == 1:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(store, "_render_source", killed_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        _simulate(tmp_path / "run", corpus=SpeechCorpus.from_folder("sp"))
    monkeypatch.setattr(store, "_render_source", real)
    rendered = _counting(monkeypatch)
    path = _simulate(tmp_path / "run", corpus=SpeechCorpus.from_folder(speech))
    assert rendered == [1]  # source 0 was kept, not written afresh
    assert tree(path) == whole


# --- 2. a finished store needs no write access ----------------------------------------------------------------

def test_a_finished_store_is_reused_without_write_access(reference, tmp_path, monkeypatch):
    root = tmp_path / "ro"
    shutil.copytree(reference.parents[2], root)

    def read_only(folder, what="output folder"):
        raise InputError(f"{what} {str(folder)!r} is not writable (read-only); choose another path")

    writable = xai_loc.io.ensure_writable_dir
    monkeypatch.setattr(xai_loc.io, "ensure_writable_dir", read_only)
    before = tree(root)
    path = _simulate(root)
    assert path == root / reference.relative_to(reference.parents[2])
    assert store.open_signals(path).signals.shape[0] > 0
    assert tree(root) == before  # nothing written, no lock file
    kind = StoreKind("toy store", "values", ("item", "channel"), "volts", "make_toy")
    toy = dict(shape=(2, 3), coords={"item": ("item", np.arange(2))}, attrs={},
               render=lambda items: {"values": np.ones((len(items), 3))})
    monkeypatch.setattr(xai_loc.io, "ensure_writable_dir", writable)  # (undo() would also undo conftest's patches)
    made = write_store(tmp_path / "toy.zarr", kind, {"seed": 1}, **toy)
    monkeypatch.setattr(xai_loc.io, "ensure_writable_dir", read_only)
    assert write_store(made, kind, {"seed": 1}, **toy) == made
    # writing still needs it, and says so
    assert "is not writable" in one_line(_simulate, root, n_sources=1)
    assert "is not writable" in one_line(write_store, tmp_path / "new.zarr", kind, {"seed": 1}, **toy)


# --- 3. a path that is no store is never to be deleted ---------------------------------------------------------

def test_a_data_root_or_a_file_given_as_a_store_is_not_to_be_deleted(reference, tmp_path):
    root = reference.parents[2]
    assert one_line(store.open_signals, root) == (
        f"dataset store {root} is not a dataset store (no zarr metadata); give the path of a dataset store")
    assert one_line(open_zarr_group, root, what="test store") == (
        f"test store {root} is not a test store (no zarr metadata); give the path of a test store")
    text = tmp_path / "notes.txt"
    text.write_text("not a store")
    assert one_line(store.open_signals, text) == (
        f"dataset store {text} is a file, not a zarr store; give a dataset store folder")
    # nor is a file or folder standing where a store is to be written
    final = store.dataset_path(tmp_path / "d", _scene(), 0.15, 25.0, "test")
    final.parent.mkdir(parents=True)
    shutil.copy(text, final)
    foreign = f"{final} exists but is not an xai-loc dataset store; remove it or choose another path"
    assert one_line(_simulate, tmp_path / "d") == foreign
    final.unlink()
    (final / "notes").mkdir(parents=True)
    assert one_line(_simulate, tmp_path / "d") == foreign
    # a zarr store without a manifest is one to rebuild
    copy = tmp_path / "copy.zarr"
    shutil.copytree(reference, copy)
    (copy / MANIFEST).unlink()
    assert one_line(store.open_signals, copy).endswith("delete it and run 'xai-loc simulate' again to rebuild it")
    assert one_line(open_zarr_group, copy, what="test store").endswith(REBUILD)


# --- 4. TF32 is off wherever sources are rendered ---------------------------------------------------------------

def test_tf32_is_off_while_a_store_is_rendered(tmp_path, monkeypatch, tf32_on):
    seen = []
    real = store.source_rirs
    monkeypatch.setattr(store, "source_rirs", lambda *a, **k: seen.append(tf32_flags()) or real(*a, **k))
    _simulate(tmp_path)
    assert seen == [(False, False)] * 2
    assert tf32_flags() == (True, True)  # restored


def test_tf32_stays_off_until_the_last_of_blocks_rendered_in_threads(monkeypatch, tf32_on):
    """Source 1 looks at the flags after source 0's block has ended in another thread."""
    ended = threading.Event()
    seen = {}
    real_block, real_rirs = store._rendered_block, store.source_rirs

    def block(job, device, ks, *rest):
        out = real_block(job, device, ks, *rest)
        if list(ks) == [0]:
            ended.set()
        return out

    def rirs(scene, sid, *a, **k):
        if sid == 1:
            assert ended.wait(30)
        seen[sid] = tf32_flags()
        return real_rirs(scene, sid, *a, **k)

    monkeypatch.setattr(store, "_rendered_block", block)
    monkeypatch.setattr(store, "source_rirs", rirs)
    store.simulate_windows(_scene(), "test", 0.15, 25.0, workers=2, **SIM)
    assert seen == {0: (False, False), 1: (False, False)}
    assert tf32_flags() == (True, True)


# --- 5. a chunk that matches its manifest but cannot be decoded -------------------------------------------------

@pytest.mark.parametrize("damage", ["cut", "scrambled"])
def test_an_undecodable_chunk_is_one_line(reference, tmp_path, damage):
    path = tmp_path / "test.zarr"
    shutil.copytree(reference, path)
    chunk = path / "signals" / "1.0.0"
    data = bytearray(chunk.read_bytes())
    if damage == "cut":
        data = data[: len(data) // 2]
    else:  # the offsets of blosc's blocks (there only in a compressed frame: flag 0x02 means stored as is)
        assert not data[2] & 0x02
        data[16:24] = bytes([255] * 8)
    chunk.write_bytes(bytes(data))
    (path / MANIFEST).unlink()
    seal_store(path)  # the manifest vouches for the damaged bytes
    rebuild = "delete it and run 'xai-loc simulate' again to rebuild it"
    message = one_line(lambda: store.open_signals(path).signals.values)
    assert message.startswith(f"dataset store {path} is damaged: chunk signals/1.0.0 cannot be decoded (")
    assert message.endswith(rebuild)
    assert one_line(lambda: store.open_signals_array(path)[1]) == message
    np.testing.assert_array_equal(store.open_signals_array(path)[0], store.open_signals_array(reference)[0])


# --- 7. arguments of the wrong type -----------------------------------------------------------------------------

@pytest.mark.parametrize("scene, kw, message", [
    ("paper", {}, "scene='paper' is not allowed; give a Scene, e.g. paper_scene() or load_scene(path)"),
    (None, {"corpus": "x"}, "corpus='x' is not allowed; give a SpeechCorpus, e.g. SpeechCorpus.from_folder(path) "
                            "(None: the shipped corpus)"),
    (None, {"root": 123}, "root=123 is not allowed; give the path of a data root folder"),
])
def test_arguments_of_the_wrong_type_are_one_line(tmp_path, monkeypatch, scene, kw, message):
    monkeypatch.chdir(tmp_path)
    args = {"root": tmp_path / "d", **SIM, **kw}
    assert one_line(store.simulate_dataset, scene or _scene(), "test", 0.15, 25.0, **args) == message
    assert not any(tmp_path.iterdir())


# --- 8. two writers of one store --------------------------------------------------------------------------------

def test_a_second_writer_waits_for_the_first_and_reuses_its_store(tmp_path):
    kind = StoreKind("toy store", "values", ("item", "channel"), "volts", "make_toy")
    release, started = threading.Event(), threading.Event()
    calls: list[tuple[str, int]] = []

    def render(items):
        calls.append((threading.current_thread().name, items.start))
        if threading.current_thread().name == "first":
            started.set()
            assert release.wait(30)
        return {"values": np.arange(items.start, items.stop)[:, None] + np.ones((1, 3))}

    def write(into: dict) -> None:
        into[threading.current_thread().name] = write_store(
            tmp_path / "toy.zarr", kind, {"seed": 1}, shape=(4, 3), coords={"item": ("item", np.arange(4))},
            attrs={}, render=render, block=2)

    got: dict = {}
    first = threading.Thread(target=write, args=(got,), name="first", daemon=True)
    second = threading.Thread(target=write, args=(got,), name="second", daemon=True)
    try:
        first.start()
        assert started.wait(30)  # the first writer holds the lock and has begun
        second.start()
        second.join(0.5)
        assert second.is_alive() and "second" not in got  # waiting for the lock (flock: not on NFS)
    finally:
        release.set()
        for thread in (first, second):
            if thread.ident is not None:  # started
                thread.join(30)
    assert got["first"] == got["second"] == tmp_path / "toy.zarr"
    assert calls == [("first", 0), ("first", 2)]  # the second rendered nothing
    alone = write_store(tmp_path / "alone.zarr", kind, {"seed": 1}, shape=(4, 3),
                        coords={"item": ("item", np.arange(4))}, attrs={},
                        render=lambda items: {"values": np.arange(items.start, items.stop)[:, None] + np.ones((1, 3))},
                        block=2)
    assert tree(got["first"]) == tree(alone)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone.zarr", "toy.zarr"]  # no lock, partial or progress


# --- final review: chunks under '/' separators; what a killed run left beside a finished store --------------------

def test_chunks_of_an_array_with_nested_keys_decode(tmp_path):
    """The decode check looked for ``x/0/.zarray`` for chunk ``x/0/0`` of a '/'-separated array."""
    import zarr

    path = tmp_path / "nested.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=2)
    array = group.create_array("x", shape=(4, 6), chunks=(2, 3), dtype="float64", chunk_key_encoding={
        "name": "v2", "separator": "/"})
    array[:] = np.arange(24.0).reshape(4, 6)
    zarr.consolidate_metadata(path, zarr_format=2)
    assert (path / "x" / "1" / "1").is_file()
    seal_store(path)
    np.testing.assert_array_equal(open_zarr_group(path)["x"][:], np.arange(24.0).reshape(4, 6))


def test_a_reused_store_clears_the_progress_record_a_killed_run_left(tmp_path):
    kind = StoreKind("toy store", "values", ("item", "channel"), "volts", "make_toy")
    toy = dict(shape=(2, 3), coords={"item": ("item", np.arange(2))}, attrs={},
               render=lambda items: {"values": np.ones((len(items), 3))})
    made = write_store(tmp_path / "toy.zarr", kind, {"seed": 1}, **toy)
    stale = tmp_path / "toy.zarr.progress.json"
    stale.write_text("{}")  # killed between the rename and the cleanup
    assert write_store(made, kind, {"seed": 1}, **toy) == made
    assert not stale.exists()
