"""Review 6 of long runs: a kill inside a relevance store's block write, a cluster that loses every worker, --device
cuda with --scheduler, a second writer of a store, an experiment's output blocked by a folder."""
from __future__ import annotations

import json
import sys
import time

import cloudpickle
import numpy as np
import pytest
from helpers import refused, run_cli, small_model, tree

from xai_loc.data.resumable import ResumableStore
from xai_loc.errors import WorkLost

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module

BATCH = 8  # the tiny split's 54 windows: blocks 0..6, the last one of 6 windows


# --- 1. a kill inside a block write of a relevance store loses that block only ------------------------------------
def _explain(store, out, monkeypatch) -> list[int]:
    """``explain_store`` of the tiny split into ``out``; the blocks it computed."""
    import xai_loc.explain.store as es

    real, computed = es._explain_block, []

    def counted(block, work):
        computed.append(block)
        return real(block, work)

    monkeypatch.setattr(es, "_explain_block", counted)
    es.explain_store(small_model(4, 1024), store, out, batch_size=BATCH, progress=False)
    monkeypatch.setattr(es, "_explain_block", real)
    return computed


@pytest.fixture(scope="module")
def reference(split_and_store, tmp_path_factory):
    """The relevance store of the tiny split written in one go, and the blocks that run computed."""
    with pytest.MonkeyPatch.context() as m:
        path = tmp_path_factory.mktemp("relevance") / "reference.zarr"
        return path, _explain(split_and_store[1], path, m)


def _dies_between_chunk_and_journal(monkeypatch, write: int) -> None:
    """The ``write``-th block write stops (as a kill would) once its ``prediction_x`` chunk is on the disk, before
    the journal records it."""
    real, calls = ResumableStore._sync, []

    def sync(self, name, keys):
        real(self, name, keys)
        if name == "prediction_x":
            calls.append(keys)
            if len(calls) == write:
                raise KeyboardInterrupt

    monkeypatch.setattr(ResumableStore, "_sync", sync)


def test_a_kill_inside_a_block_write_recomputes_only_the_missing_blocks(split_and_store, reference, tmp_path,
                                                                        monkeypatch):
    _, store = split_and_store
    reference, computed = reference
    assert computed == [0, 1, 2, 3, 4, 5, 6]
    out = tmp_path / "killed.zarr"
    with monkeypatch.context() as m:
        _dies_between_chunk_and_journal(m, write=4)
        with pytest.raises(KeyboardInterrupt):
            _explain(store, out, m)
    progress = json.loads(out.with_name(out.name + ".progress.json").read_text(encoding="utf-8"))
    assert progress == {"windows_written": 24, "written": [[0, 24]]}
    assert _explain(store, out, monkeypatch) == [3, 4, 5, 6]  # the block in flight and those after it
    assert tree(out) == tree(reference)  # the bytes of the uninterrupted run
    prediction = json.loads((out / "prediction_x" / ".zarray").read_text(encoding="utf-8"))
    assert prediction["chunks"] == [BATCH] and prediction["shape"] == [54]


def test_a_partial_store_of_whole_store_result_chunks_resumes_to_the_same_values(split_and_store, reference,
                                                                                 tmp_path, monkeypatch):
    """A partial store an earlier xai-loc began (each per-window result one chunk of the whole store) resumes; it
    keeps its chunks, and holds the values of a store written in one go."""
    from xai_loc.explain import open_relevance

    _, store = split_and_store
    reference, _ = reference
    out = tmp_path / "earlier.zarr"
    real_open, real_block = ResumableStore.open_or_resume, None
    with monkeypatch.context() as m:
        m.setattr(ResumableStore, "open_or_resume", lambda self, *a, results=(), **k: real_open(self, *a, **k))
        import xai_loc.explain.store as es

        real_block = es._explain_block

        def dies(block, work):
            if block == 2:
                raise KeyboardInterrupt
            return real_block(block, work)

        m.setattr(es, "_explain_block", dies)
        with pytest.raises(KeyboardInterrupt):
            es.explain_store(small_model(4, 1024), store, out, batch_size=BATCH, progress=False)
    partial = out.with_name(out.name + ".partial")
    assert json.loads((partial / "explained" / ".zarray").read_text(encoding="utf-8"))["chunks"] == [54]
    assert _explain(store, out, monkeypatch) == [2, 3, 4, 5, 6]
    assert json.loads((out / "explained" / ".zarray").read_text(encoding="utf-8"))["chunks"] == [54]
    again, expected = open_relevance(out), open_relevance(reference)  # a finished store of either layout reads
    np.testing.assert_array_equal(again.values, expected.values)
    for name in ("prediction_x", "attr_output_z", "relevance_sum", "explained"):
        np.testing.assert_array_equal(again[name].values, expected[name].values)
    assert json.loads((reference / "explained" / ".zarray").read_text(encoding="utf-8"))["chunks"] == [BATCH]


# --- 2. a cluster that loses every worker mid-run stops in one line -------------------------------------------------
def _slow(item: int, shared) -> int:
    time.sleep(0.3)
    return item


def test_a_scheduler_that_loses_every_worker_mid_run_is_one_line_not_a_hang(monkeypatch, capsys):
    import threading

    import distributed

    import xai_loc.cluster as cl

    monkeypatch.setattr(cl, "WORKER_TIMEOUT", 1.0)
    monkeypatch.setattr(cl, "WORKER_POLL", 0.2, raising=False)
    written, outcome = [], {}
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=40) as local, distributed.Client(local, set_as_default=False) as client:
        def write(item, result):
            written.append(result)
            local.scale(0)  # every worker goes, none comes back

        def run():
            try:
                cl.map_blocks(_slow, range(6), write, client=client)
            except WorkLost as err:
                outcome["error"] = str(err)

        waiting = threading.Thread(target=run, daemon=True)  # a hang must fail the test, not stop it
        waiting.start()
        waiting.join(20.0)
        address = client.scheduler.address
    assert not waiting.is_alive(), "map_blocks still waits 20 s after the scheduler lost its last worker"
    assert outcome["error"] == (f"scheduler {address} has had no worker for 1 s; what was written is kept, run the "
                                "command again")
    assert written[0] == 0 and len(written) < 6
    assert f"scheduler {address} has no worker left; waiting up to 1 s for one\n" in capsys.readouterr().err


# --- 3. --device cuda with --scheduler: this process needs the GPU too ----------------------------------------------
def test_device_cuda_with_a_scheduler_says_this_process_needs_the_gpu_too(tmp_path, monkeypatch):
    import torch

    import xai_loc.cluster as cl

    def no_cluster(*args, **kwargs):
        raise AssertionError("the scheduler was reached before the device was refused")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU login node
    monkeypatch.setattr(cl, "cluster", no_cluster)
    result = run_cli(["simulate", "--t60", "0.15", "--snr", "25", "--split", "test", "--sources", "1", "--device",
                      "cuda", "--scheduler", "tcp://127.0.0.1:8786", "--data", str(tmp_path / "data")])
    refused(result, "device 'cuda' requested but CUDA is not available to this process; use 'cpu'")
    assert not (tmp_path / "data").exists()
    assert "With --device cuda this process needs the GPU too." in " ".join(
        run_cli(["simulate", "--help"]).output.split())


# --- 4. a second writer of a store says that it waits ---------------------------------------------------------------
def test_a_second_writer_of_a_store_says_it_waits_for_the_first(tmp_path, capsys):
    import threading

    from xai_loc.io import store_writer_lock

    final, order = tmp_path / "data" / "test.zarr", []

    def second():
        with store_writer_lock(final):
            order.append("second")

    with store_writer_lock(final):
        capsys.readouterr()
        waiter = threading.Thread(target=second, daemon=True)
        waiter.start()
        deadline = time.monotonic() + 10
        said = ""
        while not said and time.monotonic() < deadline:
            time.sleep(0.02)
            said = capsys.readouterr().err
        order.append("first")
    waiter.join(10)
    assert said == f"waiting for another xai-loc process writing {final} (lock {final}.lock)\n"
    assert order == ["first", "second"] and not waiter.is_alive()
    assert capsys.readouterr().err == ""  # said once, though the first writer removed the lock file it waited on


# --- 5. an experiment's output blocked by a folder is refused before the cluster and the simulation -----------------
@pytest.mark.parametrize("command, blocked", [("perturb", "perturbation.png"), ("faithfulness", "faithfulness.nc"),
                                              ("sanity", "sanity.md"), ("components", "components.pdf")])
def test_an_output_blocked_by_a_folder_is_refused_before_the_cluster(zoo, tmp_path, monkeypatch, no_simulation,
                                                                     command, blocked):
    import xai_loc.cluster as cl

    def no_cluster(*args, **kwargs):
        raise AssertionError("the cluster was started before the output was checked")

    monkeypatch.setattr(cl, "cluster", no_cluster)
    out = tmp_path / "results"
    (out / blocked).mkdir(parents=True)
    result = run_cli([command, "--checkpoint", str(zoo / "loccnn_t60-0.15_snr-25.safetensors"), "--sources", "1",
                      "--data", str(tmp_path / "data"), "--out", str(out), "--workers", "2"])
    refused(result, f"cannot write the file {str(out / blocked)!r}: it is a folder; remove it or choose another path")
    assert [p.name for p in out.iterdir()] == [blocked] and not (tmp_path / "data").exists()
