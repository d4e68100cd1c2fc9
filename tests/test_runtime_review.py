"""Review findings on run-time settings, the cluster and store integrity: a worker that cannot see the command's
folder kept nothing it had written; distributed's error logs before our one line; devices given as
``torch.device`` or None; thread counts True or 2.5; integer checks that refused NumPy integers in some places;
TF32 turned back on at the end of a ``no_tf32`` block; plain log lines in Jupyter; a chunk taken out of a
store and of its manifest read as NaN."""
from __future__ import annotations

import functools
import io
import json
import re
import shutil
import sys
import time
import types
from dataclasses import replace
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import torch
from helpers import noise_windows, one_line, tf32_flags

from xai_loc import checks, runtime
from xai_loc.errors import InputError, WorkLost

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module


# 1, 2 -- a worker that cannot see the command's folder; distributed's logs --------------------------------------

def _in_a_folder_gone(progress, fn, item, payload, folder):
    """``xai_loc.cluster._run`` in a folder that does not exist, except for the first source: the others wait until
    it is written (``progress`` counts its windows) and then fail."""
    from xai_loc.cluster import _run

    if item != (0,):
        for _ in range(600):
            if progress.exists() and json.loads(progress.read_text() or "{}").get("windows_written"):
                break
            time.sleep(0.1)
        folder += "-gone"
    return _run(fn, item, payload, folder)


def test_a_worker_that_cannot_see_the_folder_keeps_what_was_written(tmp_path, monkeypatch):
    """Was: a plain InputError, taken for a user error: the partial store and its progress record were deleted."""
    from xai_loc import cluster
    from xai_loc.data.scene import paper_scene
    from xai_loc.data.store import dataset_path, open_signals, simulate_dataset
    from xai_loc.io import partial_paths

    args = (paper_scene(), "test", 0.15, 25.0)
    partial, progress = partial_paths(dataset_path(tmp_path / "data", args[0], 0.15, 25.0, "test", 2))
    monkeypatch.setattr(cluster, "_run", functools.partial(_in_a_folder_gone, progress))
    with cluster.cluster(workers=2) as client, pytest.raises(InputError) as err:
        simulate_dataset(*args, root=tmp_path / "data", n_sources=2, progress=False, client=client)
    assert "cannot see the command's folder" in str(err.value) and "\n" not in str(err.value)
    assert partial.is_dir() and json.loads(progress.read_text())["windows_written"] > 0
    assert isinstance(err.value, WorkLost)
    monkeypatch.undo()
    resumed = simulate_dataset(*args, root=tmp_path / "data", n_sources=2, progress=False)  # goes on from there
    afresh = simulate_dataset(*args, root=tmp_path / "again", n_sources=2, progress=False)
    np.testing.assert_array_equal(open_signals(resumed)["signals"].values, open_signals(afresh)["signals"].values)
    missing = str(tmp_path / "gone")
    with pytest.raises(WorkLost, match=f"^a worker cannot see the command's folder {re.escape(repr(missing))} "
                                       r"\(FileNotFoundError\); the workers must see the same paths"):
        cluster._run(len, "item", cloudpickle.dumps(None), missing)


def _refuse(item, shared):
    raise InputError(f"item {item} is refused")


def test_a_failed_item_on_a_local_cluster_prints_no_distributed_log(capfd):
    """Was: distributed's "Compute Failed" block (and, for dying workers, its scheduler's ERROR lines) on stderr
    before the command's one-line error."""
    from xai_loc.cluster import cluster, map_blocks

    with cluster(workers=1) as client, pytest.raises(InputError, match="^item 0 is refused$"):
        map_blocks(_refuse, [0], lambda item, result: None, client=client)
    err = capfd.readouterr().err
    assert "Compute Failed" not in err and "ERROR" not in err, err


# 3 -- devices ----------------------------------------------------------------------------------------------------

def test_a_device_may_be_a_torch_device_and_none_is_one_line():
    assert runtime.resolve_device(torch.device("cpu")) == torch.device("cpu")
    for bad in (None, 0, ["cpu"]):
        assert one_line(runtime.resolve_device, bad) == f"device={bad!r} is not allowed; use cpu, cuda or cuda:N"
    assert one_line(runtime.resolve_device, torch.device("meta")) == "unknown device 'meta'; allowed: cpu, cuda, cuda:N"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from xai_loc.data.scene import paper_scene
    from xai_loc.data.store import simulate_dataset

    return simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=tmp_path_factory.mktemp("data"), n_sources=1,
                            progress=False)


def test_run_perturbation_takes_a_torch_device(store):
    """Was: TypeError from re.fullmatch on the torch.device."""
    from xai_loc.experiments.perturbation import run_perturbation
    from xai_loc.models import build_model

    torch.manual_seed(0)
    models = {"loccnn": build_model("loccnn").eval()}
    options = {"percentages": (0, 50), "modes": ("random",), "method": "saliency", "batch_size": 8,
               "randomized_baseline": False}
    named = run_perturbation(models, store, device="cpu", **options)
    given = run_perturbation(models, store, device=torch.device("cpu"), **options)
    np.testing.assert_array_equal(given["mae"].values, named["mae"].values)
    assert float(named["mae_mean"].sel(percentage=50).max()) > 0


# 4 -- threads ----------------------------------------------------------------------------------------------------

@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


@pytest.mark.parametrize("value", [True, 2.5, 0, 257, "2"])
def test_a_thread_count_is_an_integer_in_range(threads, value):
    """Was: True and 2.5 passed the range check (torch then crashed or took 1); an out-of-range XAI_LOC_THREADS
    was named threads=."""
    assert one_line(runtime.configure_threads, value) == f"threads={value!r} is not allowed; use an integer in " \
                                                         f"[1, {runtime.MAX_THREADS}]"
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize("text", ["0", "-2", "257"])
def test_an_out_of_range_thread_variable_is_named(threads, monkeypatch, text):
    monkeypatch.setenv(runtime.THREADS_ENV, text)
    assert one_line(runtime.configure_threads) == f"XAI_LOC_THREADS={int(text)} is not allowed; use an integer in " \
                                                  f"[1, {runtime.MAX_THREADS}]"
    assert torch.get_num_threads() == threads


def test_a_numpy_thread_count_is_taken(threads):
    assert runtime.configure_threads(np.int64(1)) == 1


# 5 -- NumPy integers accepted wherever integers are, and stored as plain ints ----------------------------------

def test_numpy_integers_pass_every_integer_check(monkeypatch):
    from xai_loc.cluster import check_workers
    from xai_loc.data import store
    from xai_loc.explain.methods import IntegratedGradients, Occlusion

    assert check_workers(np.int64(2)) == 2 and type(check_workers(np.int64(2))) is int
    assert one_line(check_workers, np.int64(0)) == "workers=np.int64(0) is not allowed; use an integer in [1, 256]"
    IntegratedGradients.check({"n_steps": np.int64(5), "baseline": "zero"})
    Occlusion.check({"window": np.int64(4), "stride": np.int32(2), "baseline": "zero"})
    assert one_line(Occlusion.check, {"window": 0, "stride": None, "baseline": "zero"}) == \
        "window=0 is not allowed; use a positive number of samples or None"

    class Checked(Exception):
        pass

    def planned(*args, **kwargs):
        raise Checked

    monkeypatch.setattr(store, "_job", planned)  # what follows the argument checks
    with pytest.raises(Checked):
        store.simulate_windows(None, "test", 0.15, 25.0, workers=np.int64(2))


def test_run_tdoa_takes_numpy_integers():
    from xai_loc.experiments.tdoa_probe import run_tdoa

    data = noise_windows(4)
    plain = run_tdoa({}, data, pairs="7-8,0-15", srp=False, max_windows=2, interp=4, batch_size=2)
    numpy = run_tdoa({}, data, pairs="7-8,0-15", srp=False, max_windows=np.int64(2), interp=np.int64(4),
                     batch_size=np.int64(2), srp_interp=np.int64(4))
    assert numpy.attrs == plain.attrs and plain.sizes["window"] == 2
    np.testing.assert_array_equal(numpy["delay"].values, plain["delay"].values)


def test_ipd_ild_probe_takes_a_numpy_example_count(monkeypatch):
    import xarray as xr

    from xai_loc.experiments import ipd_ild_probe

    class Explained(Exception):
        pass

    def explain(model, waveforms, **kwargs):
        raise Explained(len(waveforms))

    monkeypatch.setattr(ipd_ild_probe, "explain_tfcnn", explain)
    scenes = xr.Dataset({"waveforms": (("example", "ear", "time"), np.zeros((5, 2, 8))),
                         "azimuth": ("example", np.zeros(5)), "snr": ("example", np.zeros(5))})
    with pytest.raises(Explained) as got:
        ipd_ild_probe.ipd_ild_probe(None, scenes, n_examples=np.int64(3))
    assert got.value.args == (3,)
    assert one_line(ipd_ild_probe.ipd_ild_probe, None, scenes, n_examples=0) == \
        "n_examples=0 is not allowed; use a positive integer or None"


def test_specs_take_numpy_integers_with_the_digests_of_plain_ones():
    from xai_loc.data.binaural_store import BinauralSpec
    from xai_loc.data.cue_scenes import CueSceneSpec
    from xai_loc.data.ipd_ild_scenes import SceneSpec

    defaults = {BinauralSpec: "66fb9d427293971a", SceneSpec: "4b1fa8010608beb0", CueSceneSpec: "f4042285c5"}
    fields = {BinauralSpec: ("n_sounds", "per_sound", "seed"), SceneSpec: ("n_train", "test_per_azimuth", "fs", "seed"),
              CueSceneSpec: ("n_noise", "seed")}
    for cls, digest in defaults.items():
        spec = cls()
        assert spec.digest() == digest  # the stores of default specs keep their names
        numpy = replace(spec, **{name: np.int64(getattr(spec, name)) for name in fields[cls]})
        if cls is CueSceneSpec:
            numpy = replace(numpy, per_utterance={k: np.int32(v) for k, v in spec.per_utterance.items()})
        assert numpy.digest() == digest and numpy == spec
        assert json.dumps(numpy.to_dict(), sort_keys=True) == json.dumps(spec.to_dict(), sort_keys=True)
    assert one_line(CueSceneSpec, n_noise=11) == "n_noise=11 is not allowed; use an integer in [0, 10]"
    assert one_line(SceneSpec, seed=-1) == "seed=-1 is not allowed; use an integer >= 0"
    assert one_line(BinauralSpec, per_sound=True) == "per_sound=True is not allowed; use an integer in [1, 100]"


def test_check_integer_names_its_range():
    assert checks.check_integer("n", np.uint8(3), minimum=1, maximum=3) == 3
    assert one_line(checks.check_integer, "n", 4, minimum=1, maximum=3) == \
        "n=4 is not allowed; use an integer in [1, 3]"


# 6 -- process-wide flags -----------------------------------------------------------------------------------------

@pytest.mark.usefixtures("tf32_on")
def test_full_float32_inside_a_no_tf32_block_holds_after_it():
    """Was: the block's end put back the flags it had saved, TF32 on again for the rest of a CUDA command."""
    from xai_loc.data import store

    with store.no_tf32():
        assert tf32_flags() == (False, False)
    assert tf32_flags() == (True, True)
    with store.no_tf32(), store.no_tf32():
        runtime.full_float32("cuda")
    assert tf32_flags() == (False, False)
    assert store.no_tf32 is runtime.no_tf32  # one guard, beside the other process-wide settings


# 7 -- progress in Jupyter ----------------------------------------------------------------------------------------

def _shell(name: str) -> types.ModuleType:
    ipython = types.ModuleType("IPython")
    shell = type(name, (), {})()
    ipython.get_ipython = lambda: shell
    return ipython


@pytest.mark.parametrize(("shell", "redrawn"), [("ZMQInteractiveShell", True), ("TerminalInteractiveShell", False),
                                                (None, False)])
def test_a_jupyter_kernel_gets_a_live_bar(monkeypatch, shell, redrawn):
    """Was: the log mode (a line at 0 % and one at 100 %) in a notebook, whose stderr is no terminal."""
    import tqdm.auto  # noqa: F401 - chosen before IPython is faked

    from xai_loc.progress import tqdm as bar

    if shell is None:
        monkeypatch.delitem(sys.modules, "IPython", raising=False)
    else:
        monkeypatch.setitem(sys.modules, "IPython", _shell(shell))
    out = io.StringIO()
    for _ in bar(range(3), file=out, mininterval=0, desc="work"):
        pass
    text = out.getvalue()
    assert ("\r" in text) is redrawn, text
    assert "work: 100%" in text


# 8 -- a chunk taken out of a store and its manifest --------------------------------------------------------------

def _sealed(path: Path) -> Path:
    import xarray as xr

    from xai_loc.data.integrity import seal_store

    ds = xr.Dataset({"signals": (("window", "time"), np.arange(12.0).reshape(4, 3) + 1)})
    ds.to_zarr(path, encoding={"signals": {"chunks": (1, 3)}}, zarr_format=2, consolidated=True)
    seal_store(path, complete=["signals"], what="dataset store")
    return path


def test_a_chunk_missing_from_a_complete_array_and_its_manifest_is_refused(tmp_path):
    """Was: a chunk deleted together with its manifest entry read as NaN, silently."""
    from xai_loc.data.integrity import MANIFEST, REBUILD, open_zarr_dataset

    path = _sealed(tmp_path / "a.zarr")
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["complete"] == ["signals"]
    np.testing.assert_array_equal(open_zarr_dataset(path)["signals"].values[2], [7.0, 8.0, 9.0])
    del manifest["files"]["signals"]["2.0"]
    (path / MANIFEST).write_text(json.dumps(manifest))
    (path / "signals" / "2.0").unlink()
    assert one_line(open_zarr_dataset, path, what="dataset store") == \
        f"dataset store {path} is damaged: chunk signals/2.0 is missing; {REBUILD}"
    older = shutil.copytree(path, tmp_path / "older.zarr")  # a manifest from before the record: read as it was
    del manifest["complete"]
    (older / MANIFEST).write_text(json.dumps(manifest))
    assert np.isnan(open_zarr_dataset(older)["signals"].values[2]).all()
