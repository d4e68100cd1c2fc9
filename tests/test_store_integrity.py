"""Whole stores: manifest at completion, checks on open, damaged and unfinished stores, locks, content checks."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import xai_loc.data.store as store
from xai_loc.acoustics.speech import SpeechCorpus
from xai_loc.data.integrity import MANIFEST, seal_store, verify_store
from xai_loc.data.scene import paper_scene
from xai_loc.errors import InputError
from xai_loc.explain import Explainer, explain_store, open_relevance
from xai_loc.models import LocCNN

REBUILD = "delete it and run 'xai-loc simulate' again to rebuild it"
REBUILD_RELEVANCE = "delete it and run 'xai-loc explain' again to rebuild it"


@pytest.fixture(scope="module")
def corpus():
    return SpeechCorpus.shipped()


def _simulate(root, corpus, **kw):
    kw = {"n_sources": 1, **kw}
    return store.simulate_dataset(paper_scene(), "test", 0.15, 20.0, root=root, corpus=corpus, progress=False, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus):
    """A small finished dataset store (one source, a few windows), never damaged: tests copy it."""
    return _simulate(tmp_path_factory.mktemp("ref"), corpus)


def _copy(reference: Path, root: Path) -> Path:
    """The reference store copied to the same place under ``root`` (where simulate would write it)."""
    target = root / reference.relative_to(reference.parents[2])
    shutil.copytree(reference, target)
    return target


def _tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(InputError) as err:
        fn(*args, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


def _leftovers(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


# --- the manifest -----------------------------------------------------------------------------

def test_manifest_is_recorded_complete_and_deterministic(reference, tmp_path, corpus):
    manifest = json.loads((reference / MANIFEST).read_text())
    assert manifest["format"] == "xai-loc-store-manifest" and manifest["version"] == 1
    n = store.open_signals(reference).sizes["window"]
    assert sorted(manifest["files"]["signals"]) == sorted([".zarray", ".zattrs"] + [f"{i}.0.0" for i in range(n)])
    entries = verify_store(reference, deep=True)
    assert entries[".zmetadata"][0] == (reference / ".zmetadata").stat().st_size
    again = _simulate(tmp_path, corpus)
    assert _tree(again) == _tree(reference)  # same command, same bytes, manifest included


def test_interrupted_store_keeps_its_partial_and_lock_then_resumes(tmp_path, corpus, monkeypatch):
    real = store._render_source

    def dying(*args, **kwargs):
        if args[1] != store.subset_ids(paper_scene().splits["test"], 2)[0]:
            raise KeyboardInterrupt  # the second source: the first one's windows are on disk
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "_render_source", dying)
    with pytest.raises(KeyboardInterrupt):
        _simulate(tmp_path, corpus, n_sources=2)
    final = store.dataset_path(tmp_path, paper_scene(), 0.15, 20.0, "test", 2)
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name + s for s in (".lock", ".partial",
                                                                                      ".progress.json")]
    monkeypatch.setattr(store, "_render_source", real)
    assert _simulate(tmp_path, corpus, n_sources=2) == final
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name]
    verify_store(final, deep=True)


@pytest.mark.parametrize("lost", [True, False])
def test_lost_workers_keep_the_written_work_and_a_user_error_does_not(tmp_path, corpus, monkeypatch, lost):
    """A cluster whose workers keep dying (WorkLost) is not a user error: the rerun resumes."""
    from xai_loc.errors import WorkLost

    real = store._render_source

    def failing(*args, **kwargs):
        if args[1] != store.subset_ids(paper_scene().splits["test"], 2)[0]:
            raise (WorkLost if lost else InputError)("work item 1 ended the worker computing it")
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "_render_source", failing)
    with pytest.raises(InputError, match="ended the worker"):
        _simulate(tmp_path, corpus, n_sources=2)
    final = store.dataset_path(tmp_path, paper_scene(), 0.15, 20.0, "test", 2)
    if lost:
        assert sorted(p.name for p in final.parent.iterdir()) == [final.name + s for s in (".lock", ".partial",
                                                                                          ".progress.json")]
        monkeypatch.setattr(store, "_render_source", real)
        assert _simulate(tmp_path, corpus, n_sources=2) == final
        verify_store(final, deep=True)
    else:
        assert not final.parent.exists() or not any(final.parent.iterdir())


# --- damaged finished stores ------------------------------------------------------------------

def test_deleted_chunk_is_reported_on_open_and_by_simulate(reference, tmp_path, corpus):
    path = _copy(reference, tmp_path)
    (path / "signals" / "1.0.0").unlink()
    message = _one_line_error(store.open_signals, path)
    assert message == f"dataset store {path} is damaged: chunk signals/1.0.0 is missing; {REBUILD}"
    assert _one_line_error(_simulate, tmp_path, corpus) == message  # never read as NaN, never rebuilt over it
    (path / "signals" / "2.0.0").unlink()
    assert "chunk signals/1.0.0 is missing (and 1 more problem);" in _one_line_error(store.open_signals, path)


def test_truncated_chunk_is_reported_with_its_sizes(reference, tmp_path):
    path = _copy(reference, tmp_path)
    chunk = path / "signals" / "0.0.0"
    size = chunk.stat().st_size
    chunk.write_bytes(chunk.read_bytes()[:1234])
    message = _one_line_error(store.open_signals, path)
    assert message == (f"dataset store {path} is damaged: chunk signals/0.0.0 has 1234 bytes, expected {size}; "
                       f"{REBUILD}")
    assert _one_line_error(store.open_signals_array, path) == message


def _flip_a_byte(chunk: Path) -> None:
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))


def test_same_size_damage_is_caught_when_read_and_by_a_deep_check(reference, tmp_path, corpus):
    path = _copy(reference, tmp_path)
    _flip_a_byte(path / "signals" / "1.0.0")
    ds = store.open_signals(path)  # presence and sizes only: cheap
    expected = f"dataset store {path} is damaged: chunk signals/1.0.0 does not match its checksum; {REBUILD}"
    assert ds.signals.isel(window=0).values.shape == (16, 5120)  # undamaged chunks read as ever
    assert _one_line_error(lambda: ds.signals.values) == expected  # not decoded into wrong numbers
    assert _one_line_error(lambda: store.open_signals_array(path)[1]) == expected
    assert _one_line_error(verify_store, path, deep=True, what="dataset store", hint=REBUILD) == expected
    assert _one_line_error(_simulate, tmp_path, corpus) == expected  # a reused store is checked in full


def test_damaged_chunk_ends_the_cli_in_one_line(tmp_path, corpus):
    """zarr's other reads of the batch are let finish: no pending-task tracebacks at exit."""
    path = _simulate(tmp_path, corpus, n_sources=2)  # enough chunks for reads still in flight at the error
    _flip_a_byte(path / "signals" / "3.0.0")
    code = ("import sys; from xai_loc.cli import main; from xai_loc.models import LocCNN; "
            "from xai_loc.models.checkpoint import save_checkpoint; "
            "save_checkpoint(LocCNN(), sys.argv[1], {'condition': {'t60': 0.15, 'snr': 20.0}}); "
            "main(['--threads', '1', 'sanity', '--checkpoint', sys.argv[1], '--store', sys.argv[2], "
            "'--methods', 'saliency', '--out', sys.argv[3]])")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.safetensors"), str(path),
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    expected = f"dataset store {path} is damaged: chunk signals/3.0.0 does not match its checksum; {REBUILD}"
    assert (result.returncode, result.stderr.strip().splitlines()[-1:]) == (2, [f"Error: {expected}"])
    assert "Traceback" not in result.stderr and "pending" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key, problem", [
    (".zattrs", "metadata .zattrs is not valid JSON"),
    (".zmetadata", "metadata .zmetadata is not valid JSON"),
    ("signals/.zarray", "metadata signals/.zarray is not valid JSON"),
])
def test_garbage_metadata_is_reported(reference, tmp_path, key, problem):
    path = _copy(reference, tmp_path)
    size = (path / key).stat().st_size
    (path / key).write_bytes(b"\x00garbage".ljust(size, b"#"))  # same size: only the parse tells
    assert _one_line_error(store.open_signals, path) == f"dataset store {path} is damaged: {problem}; {REBUILD}"
    (path / key).write_text("{}")
    assert f"metadata {key} has 2 bytes, expected {size};" in _one_line_error(store.open_signals, path)


def test_damaged_or_missing_manifest(reference, tmp_path, corpus):
    path = _copy(reference, tmp_path)
    (path / MANIFEST).write_text('{"files": ')
    assert _one_line_error(store.open_signals, path) == (
        f"dataset store {path} is damaged: its manifest {MANIFEST} is not valid; {REBUILD}")
    (path / MANIFEST).unlink()  # a store written before manifests existed
    message = _one_line_error(store.open_signals, path)
    assert message.startswith(f"dataset store {path} has no manifest of its contents") and message.endswith(REBUILD)
    assert _one_line_error(_simulate, tmp_path, corpus) == message
    plain = tmp_path / "plain.zarr"  # any zarr store not written by xai-loc
    xr.Dataset({"signals": (("window", "mic", "time"), np.ones((2, 3, 4), np.float32))}).to_zarr(
        plain, zarr_format=2)
    assert "has no manifest of its contents" in _one_line_error(store.open_signals, plain)


def test_empty_folder_or_file_under_the_store_name(reference, tmp_path, corpus):
    path = tmp_path / reference.relative_to(reference.parents[2])
    path.mkdir(parents=True)
    assert _one_line_error(store.open_signals, path) == (
        f"dataset store {path} is an empty folder, not a store; {REBUILD}")
    assert _tree(_simulate(tmp_path, corpus)) == _tree(reference)  # an empty folder holds nothing: replaced
    shutil.rmtree(path)
    path.write_text("not a store")
    assert _one_line_error(store.open_signals, path) == (
        f"dataset store {path} is a file, not a zarr store; give a dataset store folder")


# --- unfinished stores: resumed when they can be, else written afresh ---------------------------

def _partial_like_a_killed_run(reference: Path, root: Path, keep_array: bool, progress: str | None) -> Path:
    """What a run killed early leaves: the partial store (coords, maybe the array), maybe a progress file."""
    final = root / reference.relative_to(reference.parents[2])
    partial = final.with_name(final.name + ".partial")
    shutil.copytree(reference, partial)
    (partial / MANIFEST).unlink()
    (partial / ".zmetadata").unlink()
    if not keep_array:
        shutil.rmtree(partial / "signals")
    if progress is not None:
        final.with_name(final.name + ".progress.json").write_text(progress)
    final.with_name(final.name + ".lock").touch()
    return final


@pytest.mark.parametrize("keep_array, progress", [
    (False, None),                          # killed after the coords, before the array
    (True, None),                           # progress file lost
    (True, '{"windows_written": 999}'),     # progress beyond the store
])
def test_unresumable_partial_is_written_afresh(reference, tmp_path, corpus, keep_array, progress):
    final = _partial_like_a_killed_run(reference, tmp_path, keep_array, progress)
    assert _tree(_simulate(tmp_path, corpus)) == _tree(reference)
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name]


def test_partial_with_garbage_metadata_is_written_afresh(reference, tmp_path, corpus):
    final = _partial_like_a_killed_run(reference, tmp_path, True, '{"windows_written": 1}')
    partial = final.with_name(final.name + ".partial")
    (partial / ".zattrs").write_text("\x00\x01 not json")
    (partial / "signals" / ".zarray").write_text("[")
    assert _tree(_simulate(tmp_path, corpus)) == _tree(reference)


def test_resumable_partial_is_resumed_to_the_same_bytes(reference, tmp_path, corpus, monkeypatch):
    final = _partial_like_a_killed_run(reference, tmp_path, True, '{"windows_written": 3}')
    partial = final.with_name(final.name + ".partial")
    for chunk in (partial / "signals").glob("[0-9]*"):
        if int(chunk.name.split(".")[0]) >= 3:  # killed after window 3
            chunk.unlink()
    rendered = []
    real = store._render_source
    monkeypatch.setattr(store, "_render_source", lambda *a, **k: rendered.append(a[1]) or real(*a, **k))
    assert _tree(_simulate(tmp_path, corpus)) == _tree(reference)
    assert len(rendered) == 1 and not final.with_name(final.name + ".partial").exists()


# --- locks and leftovers after failures ---------------------------------------------------------

def test_lock_file_of_a_killed_process_neither_blocks_nor_stays(reference, tmp_path, corpus):
    final = tmp_path / reference.relative_to(reference.parents[2])
    final.parent.mkdir(parents=True)
    lock = final.with_name(final.name + ".lock")
    code = ("import fcntl, os, sys; f = open(sys.argv[1], 'a+b'); fcntl.flock(f, fcntl.LOCK_EX); "
            "os.kill(os.getpid(), 9)")
    assert subprocess.run([sys.executable, "-c", code, str(lock)]).returncode == -signal.SIGKILL
    assert lock.exists()

    def blocked(*_):
        raise TimeoutError("waited on the lock of a dead process")

    previous = signal.signal(signal.SIGALRM, blocked)
    signal.alarm(600)  # a guard against waiting forever, not a speed limit
    try:
        path = _simulate(tmp_path, corpus)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert sorted(p.name for p in final.parent.iterdir()) == [path.name]


def test_failure_before_any_data_leaves_nothing(tmp_path, corpus, monkeypatch):
    import soundfile as sf

    silent = tmp_path / "speech"
    silent.mkdir()
    sf.write(silent / "quiet.wav", np.zeros(16000 * 2), 16000)
    out = tmp_path / "out"
    message = _one_line_error(_simulate, out, SpeechCorpus.from_folder(silent))  # raised while planning
    assert "all zeros (silent)" in message
    assert not out.exists()

    def no_device(*args, **kwargs):  # as --device cuda on a machine without CUDA, inside the writer
        raise RuntimeError("Found no NVIDIA driver on your system")

    monkeypatch.setattr(store, "_render_source", no_device)
    with pytest.raises(RuntimeError):
        _simulate(out, corpus)
    assert not out.exists()  # no lock, progress file, partial store or folder


def test_all_zero_or_nan_windows_are_refused_and_nothing_is_kept(tmp_path, corpus, monkeypatch):
    real = store._render_source
    monkeypatch.setattr(store, "_render_source", lambda *a, **k: np.zeros_like(real(*a, **k)))
    message = _one_line_error(_simulate, tmp_path, corpus)
    final = store.dataset_path(tmp_path, paper_scene(), 0.15, 20.0, "test", 1)
    assert message.startswith(f"{final}: window 0 came out all zero (silent); nothing was stored; source ")
    assert _leftovers(tmp_path) == []

    def nan_second(*args, **kwargs):
        out = real(*args, **kwargs)
        out[1, 3, 7] = np.nan
        return out

    monkeypatch.setattr(store, "_render_source", nan_second)
    message = _one_line_error(_simulate, tmp_path, corpus)
    assert message.startswith(f"{final}: window 1 came out with NaN or infinite samples; nothing was stored")
    assert _leftovers(tmp_path) == []


# --- relevance stores ---------------------------------------------------------------------------

def _small_dataset(path: Path) -> Path:
    """A sealed dataset store of 6 windows, 4 mics x 350 samples (as xai_loc.data.store lays it out)."""
    gen = np.random.default_rng(0)
    sources = gen.uniform([1.0, 4.5, 1.0], [2.5, 6.5, 1.5], (3, 3))
    sid = np.repeat(np.arange(3), 2)
    scene = {"name": "small", "sources": sources.tolist(), "splits": {"test": [0, 1, 2]}}
    xr.Dataset(
        {"signals": (("window", "mic", "time"), (0.01 * gen.standard_normal((6, 4, 350))).astype(np.float32))},
        coords={"window": np.arange(6), "source_id": ("window", sid), "window_index": ("window", np.tile([0, 1], 3)),
                "source_position": (("window", "xyz"), sources[sid]), "xyz": ["x", "y", "z"],
                "mic_position": (("mic", "xyz"), np.c_[np.linspace(1, 2, 4), np.full((4, 2), 7.0)]),
                "mic": np.arange(4), "time": np.arange(350) / 16000},
        attrs={"config": json.dumps({"small": 1}), "scene": json.dumps(scene), "t60": 0.6, "snr": 10.0, "fs": 16000},
    ).to_zarr(path, mode="w", zarr_format=2)
    seal_store(path, complete=("signals",))
    return path


def _model():
    import torch

    torch.manual_seed(0)
    return LocCNN(4, 350).float().eval()


def test_relevance_store_damage_and_nan_relevance(tmp_path, monkeypatch):
    data = _small_dataset(tmp_path / "test.zarr")
    model = _model()
    out = tmp_path / "rel" / "lrp.zarr"
    path = explain_store(model, data, out, batch_size=2, progress=False)
    assert np.isfinite(open_relevance(path).values).all()
    verify_store(path, deep=True)
    (path / "relevance" / "3.0.0").unlink()
    assert _one_line_error(open_relevance, path) == (
        f"relevance store {path} is damaged: chunk relevance/3.0.0 is missing; {REBUILD_RELEVANCE}")
    assert _one_line_error(explain_store, model, data, out, batch_size=2, progress=False) == \
        _one_line_error(open_relevance, path)
    shutil.rmtree(path)
    path = explain_store(model, data, out, batch_size=2, progress=False)
    _flip_a_byte(path / "relevance" / "1.0.0")  # same size: only the checksums tell
    assert _one_line_error(explain_store, model, data, out, batch_size=2, progress=False) == (
        f"relevance store {path} is damaged: chunk relevance/1.0.0 does not match its checksum; {REBUILD_RELEVANCE}")

    original = Explainer.explain_batch

    def nan_relevance(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if args[2][0] == 2:  # the second batch
            result["relevance"][1, 0, 5] = np.nan
        return result

    monkeypatch.setattr(Explainer, "explain_batch", nan_relevance)
    other = tmp_path / "other" / "lrp.zarr"
    message = _one_line_error(explain_store, model, data, other, batch_size=2, progress=False)
    assert message.startswith(f"{other}: window 3 came out with NaN or infinite relevance; nothing was stored; lrp ")
    assert not (tmp_path / "other").exists()  # not even the partial store of the first batch

    def no_device(self, *args, **kwargs):  # a failure inside the writer, before any data
        raise RuntimeError("CUDA error: no kernel image is available")

    monkeypatch.setattr(Explainer, "explain_batch", no_device)
    with pytest.raises(RuntimeError):
        explain_store(model, data, other, batch_size=2, progress=False)
    assert not (tmp_path / "other").exists()


def test_relevance_partial_killed_before_its_array_is_written_afresh(tmp_path):
    data = _small_dataset(tmp_path / "test.zarr")
    model = _model()
    reference = explain_store(model, data, tmp_path / "ref" / "lrp.zarr", batch_size=2, progress=False)
    out = tmp_path / "run" / "lrp.zarr"
    partial = out.with_name(out.name + ".partial")
    shutil.copytree(reference, partial)
    shutil.rmtree(partial / "relevance")
    (partial / MANIFEST).unlink()
    out.with_name(out.name + ".lock").touch()
    assert explain_store(model, data, out, batch_size=2, progress=False) == out
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    assert _tree(out) == _tree(reference)


def test_changed_numbers_in_a_netcdf_result_fail_when_read(tmp_path):
    import h5py

    from xai_loc.data.integrity import open_netcdf_store
    from xai_loc.io import write_dataset_atomic

    ds = xr.Dataset({"mae": (("mode", "percentage"), np.arange(12.0).reshape(3, 4)), "n": ((), 7)},
                    coords={"mode": ["relevance", "energy", "random"], "percentage": [0.0, 10.0, 20.0, 30.0]})
    path = write_dataset_atomic(ds, tmp_path / "perturbation.nc")
    loaded = open_netcdf_store(path, "results file")
    assert len(loaded.attrs.pop("xai_loc_sha256")) == 64
    xr.testing.assert_identical(loaded, ds)
    with h5py.File(path) as f:
        assert f["mae"].fletcher32 and f["percentage"].fletcher32
        where = f["mae"].id.get_chunk_info(0).byte_offset
    data = bytearray(path.read_bytes())
    data[where + 8] ^= 0x40  # 8.0 becomes another valid float64: only the checksum tells
    path.write_bytes(bytes(data))
    assert _one_line_error(open_netcdf_store, path, "results file") == (
        f"results file {path} is damaged or not netCDF (OSError); delete it and run the command again to rebuild it")


def test_changed_labels_scalars_or_attributes_in_a_netcdf_result_fail_when_read(tmp_path):
    """What Fletcher-32 cannot cover (strings, scalars, attributes) is covered by the file's digest."""
    import h5py

    from xai_loc.data.integrity import open_netcdf_store
    from xai_loc.io import NETCDF_DIGEST, write_dataset_atomic

    ds = xr.Dataset({"mae": (("mode",), [0.1, 0.2, 0.3]), "n": ((), 7)},
                    coords={"mode": ["relevance", "energy", "random"]}, attrs={"model": "loccnn", "t60": 0.6})
    ds["mae"].attrs["units"] = "m"
    hint = "delete it and run the command again to rebuild it"
    damaged = f"is damaged (its labels, scalars or attributes do not match their checksum); {hint}"

    def changed(name, edit):
        path = write_dataset_atomic(ds, tmp_path / f"{name}.nc")
        assert open_netcdf_store(path, "results file").attrs[NETCDF_DIGEST]
        with h5py.File(path, "a") as f:
            edit(f)
        return path

    def relabel(f):  # two labels swapped: every value is still a valid one
        f["mode"][0], f["mode"][2] = b"random", b"relevance"

    for name, edit in (("labels", relabel), ("scalar", lambda f: f["n"].write_direct(np.array(8))),
                       ("attribute", lambda f: f.attrs.modify("t60", 0.4)),
                       ("units", lambda f: f["mae"].attrs.modify("units", "cm")),
                       # attributes xarray's decoding consumes: they change the numbers without touching them
                       ("scale", lambda f: f["mae"].attrs.create("scale_factor", 10.0)),
                       ("fill", lambda f: f["mae"].attrs.modify("_FillValue", 0.2))):
        path = changed(name, edit)
        assert _one_line_error(open_netcdf_store, path, "results file") == f"results file {path} {damaged}"
        assert _one_line_error(open_netcdf_store, path, "results file", load=False) == \
            f"results file {path} {damaged}"
    # a file written before the digest existed opens as before
    path = changed("older", lambda f: f.attrs.__delitem__(NETCDF_DIGEST))
    xr.testing.assert_identical(open_netcdf_store(path, "results file"), ds)


def test_a_corpus_at_another_sample_rate_is_refused_before_anything_is_written(tmp_path):
    """Review: a 16 kHz corpus in a 48 kHz scene was accepted and its speech played 3x too fast."""
    with pytest.raises(InputError, match=r"is at 48000 Hz, scene .* at 16000 Hz; load the corpus with fs=16000"):
        _simulate(tmp_path, SpeechCorpus.shipped(fs=48000))
    assert not any(tmp_path.iterdir())
