"""Work on a dask cluster: the same bytes as one process, an unreachable scheduler, a worker that dies, a GPU
out of memory.

One local cluster of two worker processes (one thread each) serves the module; ``simulate`` also
starts its own with ``--workers 2``. Data are tiny: two test sources at T60 0.15 s (21 windows),
an untrained LocCNN, saliency, two percentages; sanity and components with saliency alone.
"""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from xai_loc.cli import main
from xai_loc.cluster import load_here, map_blocks

distributed = pytest.importorskip("distributed")

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module

CONDITION = ["--t60", "0.15", "--snr", "25"]
EXPERIMENT = ["--sources", "2", "--batch-size", "8", "--seed", "3"]
#: Per result file, a variable (and selection) whose numbers must all be finite and positive: a real result.
POSITIVE = {"perturbation.nc": ("mae_mean", {}), "faithfulness.nc": ("curve", {}),
            "sanity.nc": ("similarity", {"metric": "entropy"}), "components.nc": ("share", {"split": "power"})}


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=40) as local, distributed.Client(local, set_as_default=False) as c:
        yield c


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(main, ["--threads", "1", *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def runs(tmp_path_factory, client):
    """simulate, explain, perturb, faithfulness, sanity and components in one process and on the cluster, each in
    its own folder."""
    from xai_loc.models import build_model, save_checkpoint

    root = tmp_path_factory.mktemp("cluster")
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("loccnn"), root / "loccnn.safetensors",
                           {"condition": {"t60": 0.15, "snr": 25.0}})
    address = client.scheduler.address
    out = {}
    for where, simulate_on, work_on in (("single", [], []), ("cluster", ["--workers", "2"], ["--scheduler", address])):
        data, results = root / where / "data", root / where / "results"
        store = Path(_invoke("simulate", *CONDITION, "--split", "test", "--sources", "2", "--data", str(data),
                             *simulate_on).strip().splitlines()[-1])
        relevance = Path(_invoke("explain", "--checkpoint", str(ckpt), "--method", "saliency", "--sources", "2",
                                 "--batch-size", "8", "--data", str(data), *work_on).strip().splitlines()[-1])
        _invoke("perturb", "--checkpoint", str(ckpt), "--method", "saliency", "--modes", "relevance,random",
                "--percentages", "0,50", *EXPERIMENT, "--data", str(data), "--out", str(results), *work_on)
        _invoke("faithfulness", "--checkpoint", str(ckpt), "--methods", "saliency", "--fills", "zero,noise",
                "--percentages", "0,50", *EXPERIMENT, "--data", str(data), "--out", str(results), *work_on)
        for command in ("sanity", "components"):
            _invoke(command, "--checkpoint", str(ckpt), "--methods", "saliency", *EXPERIMENT, "--data", str(data),
                    "--out", str(results), *work_on)
        out[where] = {"store": store, "relevance": relevance, "results": results}
    out["checkpoint"] = ckpt
    return out


@pytest.mark.parametrize("kind", ["store", "relevance"])
def test_cluster_stores_are_the_bytes_of_one_process(runs, kind):
    single, spread = _files(runs["single"][kind]), _files(runs["cluster"][kind])
    assert len(single) > 20 and single.keys() == spread.keys()
    assert [name for name in single if single[name] != spread[name]] == []


@pytest.mark.parametrize("name", list(POSITIVE))
def test_cluster_results_are_the_bytes_of_one_process(runs, name):
    import xarray as xr

    single = runs["single"]["results"] / name
    assert single.read_bytes() == (runs["cluster"]["results"] / name).read_bytes()
    variable, selection = POSITIVE[name]
    with xr.open_dataset(single) as ds:  # real numbers, not an empty result
        values = ds[variable].sel(selection).values
        assert np.isfinite(values).all() and (values > 0).all()


def test_workers_read_the_data_themselves(runs, client):
    """Only the mapped items and their shared bytes reach the scheduler: a worker reads the store itself
    (components renders from an xarray store), never through nested tasks that would queue behind the items."""
    prefixes = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    assert prefixes == ["bytes", "run"]


def test_load_here_reads_lazy_data_here_not_through_a_client():
    import threading

    import dask.array as da
    import xarray as xr

    here, seen = threading.current_thread().name, []

    def mark(block):
        seen.append(threading.current_thread().name)
        return block

    lazy = da.from_array(np.arange(12.0).reshape(3, 4), chunks=(1, 4)).map_blocks(mark, dtype=float)
    array = xr.DataArray(np.zeros((3, 4)), dims=("window", "time"), coords={"source_id": ("window", lazy[:, 0])})
    data = xr.Dataset({"signals": (("window", "time"), lazy)})
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0"):
        loaded, coord = load_here(data), load_here(array)  # the client is the default scheduler here
    assert np.array_equal(loaded["signals"].values, np.arange(12.0).reshape(3, 4))
    assert coord["source_id"].chunks is None and np.array_equal(coord["source_id"].values, [0, 4, 8])
    assert seen.count(here) >= 6 and set(seen) == {here}  # every block computed in this thread


def _square(item: int, shared: int) -> np.ndarray:
    return np.arange(item, dtype=np.float64) ** 2 + shared


def test_map_blocks_writes_every_item_once(client):
    here, there = {}, []
    map_blocks(_square, range(7), here.__setitem__, shared=0.5)
    map_blocks(_square, range(7), lambda item, result: there.append((item, result)), shared=0.5, client=client)
    assert sorted(item for item, _ in there) == list(range(7))  # each item once, whatever the order
    for item, result in there:
        np.testing.assert_array_equal(result, here[item])


class Kill(distributed.WorkerPlugin):
    """Ends the worker process that starts a mapped task: once (the first time, then a flag file exists) or always."""

    name = "kill"

    def __init__(self, flag: str | None = None) -> None:
        self.flag = flag

    def transition(self, key, start, finish, **kwargs) -> None:
        if finish == "executing" and str(key).startswith("_run") and not (self.flag and os.path.exists(self.flag)):
            if self.flag:
                Path(self.flag).touch()
            os._exit(1)


def test_a_worker_dying_mid_run_loses_and_doubles_nothing(runs, client, tmp_path):
    """distributed computes the killed worker's task again elsewhere; the store is still the one-process store."""
    import xarray as xr

    from xai_loc.explain import explain_store
    from xai_loc.models import load_model

    flag = tmp_path / "killed"
    client.register_plugin(Kill(str(flag)))
    try:
        path = explain_store(load_model(runs["checkpoint"]), runs["single"]["store"], tmp_path / "relevance.zarr",
                             method="saliency", batch_size=8, progress=False, client=client)
    finally:
        client.unregister_worker_plugin(Kill.name)
    assert flag.exists()  # a worker was killed
    reference, again = xr.open_zarr(runs["single"]["relevance"]), xr.open_zarr(path)
    for name in ("relevance", "prediction_x", "explained"):
        np.testing.assert_array_equal(again[name].values, reference[name].values)


def test_an_item_that_keeps_killing_workers_is_one_line(client):
    from xai_loc.errors import InputError

    def allow(dask_scheduler, failures):
        previous, dask_scheduler.allowed_failures = dask_scheduler.allowed_failures, failures
        return previous

    previous = client.run_on_scheduler(allow, failures=0)
    client.register_plugin(Kill())
    try:
        with pytest.raises(InputError, match=r"work item 0 ended the worker computing it 1 time\(s\) \(out of memory"):
            map_blocks(_square, [0], lambda item, result: None, shared=0.0, client=client)
    finally:
        client.unregister_worker_plugin(Kill.name)
        client.run_on_scheduler(allow, failures=previous)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr("xai_loc.cluster.CONNECT_TIMEOUT", 1.0)
    address = f"tcp://127.0.0.1:{_free_port()}"
    result = CliRunner().invoke(main, ["simulate", *CONDITION, "--sources", "1", "--data", str(tmp_path / "data"),
                                       "--scheduler", address])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and address in result.output and "cannot be reached" in result.output
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("answer", [None, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"])
def test_a_listener_that_is_not_a_scheduler_is_one_line_in_time(tmp_path, monkeypatch, answer):
    """Review: a port that accepts and never answers hung the client without end; an HTTP server's answer
    ended in a traceback from dask's message decoder."""
    import threading

    monkeypatch.setattr("xai_loc.cluster.CONNECT_TIMEOUT", 1.0)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    held = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)
            if answer:
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    try:
        result = CliRunner().invoke(main, ["simulate", *CONDITION, "--sources", "1", "--data",
                                           str(tmp_path / "data"), "--scheduler", address])
    finally:
        server.close()
        for conn in held:
            conn.close()
    assert result.exit_code == 2 and result.output.count("\n") == 1 and address in result.output
    assert ("cannot be reached within 1 s" if answer is None else "did not answer as a dask scheduler") in result.output
    assert not (tmp_path / "data").exists()


def _out_of_memory(*args, **kwargs):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_gpu_out_of_memory_names_the_batch_size_to_lower(runs, client, monkeypatch):
    with pytest.raises(torch.cuda.OutOfMemoryError):  # a worker's error comes back as itself
        map_blocks(_out_of_memory, [0], lambda item, result: None, client=client)
    monkeypatch.setattr("xai_loc.experiments.perturbation.deletion_predictions", _out_of_memory)
    result = CliRunner().invoke(main, ["--threads", "1", "perturb", "--checkpoint", str(runs["checkpoint"]),
                                       "--method", "saliency", "--sources", "2", "--batch-size", "8",
                                       "--data", str(runs["single"]["store"].parents[2]),
                                       "--out", str(runs["single"]["results"].parent / "oom")])
    assert result.exit_code == 2  # one line, after the warnings and the progress bar on stderr
    last = result.output.splitlines()[-1]
    assert last == "Error: GPU out of memory at --batch-size 8; lower it (e.g. --batch-size 4)"
    assert result.output.count("Error") == 1


@pytest.mark.parametrize("address, problem", [("tls://127.0.0.1:1", "needs TLS"), ("ucx://127.0.0.1:1", "needs UCX")])
def test_transport_not_set_up_here_is_one_line(tmp_path, address, problem):
    result = CliRunner().invoke(main, ["simulate", *CONDITION, "--sources", "1", "--data", str(tmp_path / "data"),
                                       "--scheduler", address])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and problem in result.output
    assert not (tmp_path / "data").exists()


def test_scheduler_without_workers_is_one_line_not_a_hang():
    from xai_loc.cluster import cluster
    from xai_loc.errors import InputError

    with distributed.LocalCluster(n_workers=0, dashboard_address=":0", silence_logs=40) as empty:
        with pytest.raises(InputError, match="has no worker after 1 s; start workers with 'dask worker"):
            with cluster(empty.scheduler_address, worker_timeout=1.0):
                pass


def _stay(item, folder):
    import time

    start = time.monotonic()
    time.sleep(0.3)
    return start, time.monotonic()


def test_a_worker_with_several_threads_runs_one_item_at_a_time():
    """The shared objects are one copy per worker process, so its threads must not use them side by side."""
    spans = {}
    with distributed.LocalCluster(n_workers=1, threads_per_worker=3, processes=True, dashboard_address=":0",
                                  silence_logs=40) as local, distributed.Client(local, set_as_default=False) as c:
        map_blocks(_stay, range(4), spans.__setitem__, shared=None, client=c)
    ordered = sorted(spans.values())
    assert len(ordered) == 4
    assert all(later[0] >= earlier[1] for earlier, later in zip(ordered[:-1], ordered[1:], strict=True))


def _folder(item, shared):
    return os.getcwd()


def test_items_run_in_the_commands_folder_on_any_worker(client):
    """A worker started, or restarted, in another folder computes each item in the command's folder, so that
    relative paths (the default --data) name the same files."""
    client.run(os.chdir, "/")
    try:
        seen = {}
        map_blocks(_folder, range(4), seen.__setitem__, client=client)
        assert set(seen.values()) == {os.getcwd()}
    finally:  # the module's client is shared: its workers go back whatever happened
        client.run(os.chdir, os.getcwd())
