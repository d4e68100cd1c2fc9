"""Work spread over a dask.distributed cluster, written by the one process that asked for it.

Long commands (``simulate``, ``explain``, ``perturb``, ``faithfulness``, ``sanity``, ``components``) cut their work into
independent items (source blocks, window batches) and hand them to :func:`map_blocks`. On a
cluster each item is computed on a worker; every result comes back to the calling process,
which alone writes the store or result, region by region, in completion order. So a store
keeps its writer lock, its progress record and its resume (:mod:`xai_loc.data.resumable`),
and the bytes are those of the single-process run, which calls the same function on the
same items in a loop.

* :func:`cluster` gives a ``distributed.Client`` for a running scheduler (``scheduler``)
  or a local cluster of ``workers`` processes with one thread each, or None for the
  single-process path. It connects before anything is opened: an unreachable scheduler
  is one line naming the address.
* A worker that dies mid-run has its items computed again elsewhere (distributed
  reschedules them); each result is written once, whichever attempt delivered it. The
  objects every item needs (models, explainers, store handles) are pickled here, embedded
  in the graph once as bytes (recomputed rather than lost with a worker) and unpickled once
  per worker process.
* A killed client leaves the store's progress record; the same command resumes from it.

Workers compute one item at a time per process (a worker started with several threads runs
their items in turn), with one torch thread and TF32 off, which also makes their float results
those of a single-process run with ``--threads 1``. Each item runs in the command's folder, so
relative paths mean the same there. A scheduler that has no worker within
:data:`WORKER_TIMEOUT`, at the start or after it lost every worker mid-run (the command says it
is waiting, and then :class:`~xai_loc.errors.WorkLost`: what was written is kept), or a TLS or UCX
address whose transport is not set up, is one line.
The workers must see the paths the command gets (a shared file system on a cluster) and run
the same xai-loc version.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import re
import sys
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from xai_loc.errors import InputError, WorkLost

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["CONNECT_TIMEOUT", "MAX_WORKERS", "WORKER_TIMEOUT", "check_cluster", "check_scheduler", "check_workers",
           "cluster", "load_here", "map_blocks"]

#: Seconds to wait for a scheduler before giving up.
CONNECT_TIMEOUT = 10.0
#: Seconds to wait for a scheduler's first worker (workers of a batch system may sit in its queue), and for a worker
#: again when a scheduler has lost every one mid-run.
WORKER_TIMEOUT = 600.0
#: Seconds between two counts of a scheduler's workers while no result comes.
WORKER_POLL = 1.0
#: Most worker processes of a local cluster.
MAX_WORKERS = 256
#: Address schemes of a dask scheduler.
SCHEMES = ("tcp", "tls", "ucx", "ws", "wss")
_ADDRESS = re.compile(rf"^(?:{'|'.join(SCHEMES)})://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{{1,5}})$")

Item = TypeVar("Item", bound=Hashable)


def check_scheduler(address: str, what: str = "scheduler") -> str:
    """A scheduler address ``SCHEME://HOST:PORT`` (schemes :data:`SCHEMES`), else one line naming ``what``."""
    address = str(address).strip()
    match = _ADDRESS.match(address)
    if not match or not 1 <= int(match.group(1)) <= 65535:
        raise InputError(f"{what} {address!r} is not a scheduler address; use SCHEME://HOST:PORT with SCHEME one of "
                         f"{', '.join(SCHEMES)}, e.g. tcp://10.0.0.5:8786")
    return address


def check_workers(workers: int) -> int:
    """A worker count in ``[1, MAX_WORKERS]``, else one line saying so."""
    from xai_loc.checks import check_integer

    return check_integer("workers", workers, minimum=1, maximum=MAX_WORKERS)


def check_cluster(scheduler: str | None, workers: int | None) -> None:
    """Refuse (one line, without connecting) both a scheduler and a local cluster, or either one malformed."""
    if scheduler is not None and workers is not None:
        raise InputError(f"a scheduler ({scheduler}) and a local cluster ({workers} workers) are both asked for; "
                         "give one of --scheduler and --workers")
    if scheduler is not None:
        check_scheduler(scheduler)
    if workers is not None:
        check_workers(workers)


def _unreachable(address: str, timeout: float) -> str:
    return (f"scheduler {address} cannot be reached within {timeout:g} s; start it (dask scheduler, then dask worker "
            "ADDRESS on each machine), check the address, or use --workers N for a local cluster")


def _check_transport(address: str) -> None:
    """One line, before connecting, where the address's transport is not set up here: TLS without dask's
    TLS settings, UCX without its package (a half-made ``Client`` otherwise hangs on its way out)."""
    import importlib.util

    import dask

    scheme = address.split("://", 1)[0]
    if scheme in ("tls", "wss") and not dask.config.get("distributed.comm.tls.ca-file", None):
        raise InputError(f"scheduler {address} needs TLS, and dask's TLS settings (distributed.comm.tls.ca-file, "
                         "client cert and key) are not configured here")
    if scheme == "ucx" and not any(importlib.util.find_spec(m) for m in ("distributed_ucxx", "ucp")):
        raise InputError(f"scheduler {address} needs UCX, and neither distributed-ucxx nor ucx-py is installed")


def _probe_scheduler(address: str, timeout: float) -> None:
    """Ask ``address`` who it is (dask's ``identity`` message) within ``timeout`` seconds in all, else one line.

    ``Client`` alone waits without end on a listener that accepts and never answers (a wrong port), and
    fails deep in its message decoder on one that answers something else (an HTTP server)."""
    import asyncio
    import threading

    from distributed.comm import connect
    from distributed.security import Security

    async def ask():
        comm = await connect(address, timeout=timeout, **Security().get_connection_args("client"))
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    async def bounded():
        return await asyncio.wait_for(ask(), timeout)

    # its own event loop (also under Jupyter's) in a daemon thread: a name lookup that stalls outlives
    # asyncio's bound, so the wait is bounded here too, and a stalled thread never holds the process open
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["reply"] = asyncio.run(bounded())
        except BaseException as err:  # noqa: BLE001 - judged below
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True, name="xai-loc scheduler probe")
    thread.start()
    thread.join(timeout + 1.0)
    error = outcome.get("error", None if "reply" in outcome else TimeoutError())
    if isinstance(error, (OSError, TimeoutError)):
        raise InputError(_unreachable(address, timeout))
    reply = outcome.get("reply")  # anything else: whatever answered, it was not a scheduler's message
    if not (isinstance(reply, dict) and reply.get("type") == "Scheduler"):
        raise InputError(f"{address} did not answer as a dask scheduler; check the address and port (dask's "
                         "default is 8786)")


@contextlib.contextmanager
def cluster(scheduler: str | None = None, workers: int | None = None, *,
            timeout: float | None = None, worker_timeout: float | None = None) -> Iterator[Client | None]:
    """A ``distributed.Client`` for the work of one command, or None to run in this process.

    Parameters
    ----------
    scheduler
        Address of a running dask scheduler (``tcp://host:8786``), e.g. one started by
        ``dask scheduler`` or dask-jobqueue.
    workers
        Start a local cluster of this many worker processes (one thread each) instead.
    timeout
        Seconds to wait for the scheduler (default :data:`CONNECT_TIMEOUT`).
    worker_timeout
        Seconds to wait for a scheduler's first worker, e.g. a batch job still queued (default
        :data:`WORKER_TIMEOUT`).

    Raises
    ------
    InputError
        Both or neither valid, or the scheduler cannot be reached in time.
    """
    check_cluster(scheduler, workers)
    if scheduler is None and workers is None:
        yield None
        return
    from distributed import Client, LocalCluster

    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    worker_timeout = WORKER_TIMEOUT if worker_timeout is None else worker_timeout
    with contextlib.ExitStack() as stack:
        if workers is not None:
            local = stack.enter_context(LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                silence_logs=logging.CRITICAL))  # a failed item is reported by map_blocks, in one line
            client = stack.enter_context(Client(local, set_as_default=False))
        else:
            address = check_scheduler(scheduler)  # stripped
            _check_transport(address)
            _probe_scheduler(address, timeout)
            try:
                client = Client(address, timeout=timeout, set_as_default=False)
            except (OSError, TimeoutError):
                raise InputError(_unreachable(address, timeout)) from None
            except (TypeError, ValueError, ImportError) as err:  # e.g. tls:// without dask's security settings
                raise InputError(f"scheduler {address} cannot be used ({type(err).__name__}: "
                                 f"{str(err).splitlines()[0][:100] if str(err) else 'no detail'}); a tls:// or ucx:// "
                                 "scheduler needs dask's security or ucx settings configured") from None
            stack.enter_context(client)
            if not client.scheduler_info().get("workers"):
                print(f"waiting up to {worker_timeout:g} s for a worker of {address}", file=sys.stderr, flush=True)
                try:
                    client.wait_for_workers(1, timeout=worker_timeout)
                except (OSError, TimeoutError):
                    raise InputError(f"scheduler {address} has no worker after {worker_timeout:g} s; start workers "
                                     f"with 'dask worker {address}' (or a batch job that runs it)") from None
        yield client


def load_here(data: Any) -> Any:
    """``data`` (an xarray object) loaded into memory by this process.

    Lazily dask-backed data is computed with dask's synchronous scheduler: on a worker, a
    work item reads its own inputs rather than through the cluster's scheduler. Data that
    is not dask-backed is loaded without importing dask, which may be absent (the GPU
    machine has none).
    """
    variables = (data.variables.values() if hasattr(data, "data_vars")
                 else [data.variable, *data.coords.variables.values()])
    if not any(v.chunks for v in variables):  # not Dataset.chunks: it refuses variables chunked differently
        return data.load()
    import dask

    with dask.config.set(scheduler="synchronous"):
        return data.compute()


@functools.lru_cache(maxsize=1)
def _unpickled(payload: bytes) -> Any:
    """The shared objects of a run, unpickled once per worker process. Workers pass each other these bytes,
    never the objects, which the items may change (an explainer holds its hooks while it is entered)."""
    return pickle.loads(payload)


@functools.lru_cache(maxsize=1)
def _worker_setup() -> bool:
    """Once per worker process, as in a command's own process: freed memory kept for reuse, and TF32 off
    (a no-op without CUDA; the command's device is not known here, and TF32 would change a GPU's numbers)."""
    from xai_loc.runtime import full_float32, keep_freed_memory

    full_float32("cuda")
    return keep_freed_memory()


#: One item at a time per worker process: the shared objects are one copy per process (an explainer
#: registers its hooks while entered; gradient SHAP seeds NumPy's global generator), so the threads of
#: a worker started with several (``dask worker``'s default) must not run items side by side.
_ONE_ITEM = threading.Lock()


def _run(fn: Callable[[Any, Any], Any], item: Any, payload: bytes, folder: str) -> Any:
    """One item on a worker, computed with one torch thread, alone in its process, in the calling
    process's ``folder`` (so that a relative path, e.g. the default ``--data``, names the same files
    on a worker started elsewhere, restarted or joined late)."""
    import torch

    with _ONE_ITEM:
        try:
            os.chdir(folder)
        except OSError as err:
            raise WorkLost(f"a worker cannot see the command's folder {folder!r} ({type(err).__name__}); the "
                           "workers must see the same paths (a shared file system)") from None
        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)
        _worker_setup()
        return fn(item, _unpickled(payload))


def map_blocks(fn: Callable[[Item, Any], Any], items: Iterable[Item], write: Callable[[Item, Any], None], *,
               shared: Any = None, client: Client | None = None, size: Callable[[Item], int] | None = None,
               total: int | None = None, initial: int = 0, progress: bool = False, desc: str = "",
               unit: str = "it") -> None:
    """``write(item, fn(item, shared))`` for every item: on the cluster's workers, or here in order.

    Parameters
    ----------
    fn
        A picklable (module-level) function of an item and ``shared``.
    items
        The work items (hashable, e.g. block numbers or ``(model, start, stop)``).
    write
        Called in this process with each item and its result, in completion order (in item
        order without a cluster), each item exactly once; it writes the result away.
    shared
        What every item needs (models, store handles, options): sent to the cluster once.
    client
        A client from :func:`cluster`; None computes here.
    size, total, initial, progress, desc, unit
        The progress bar (:func:`xai_loc.progress.tqdm`): ``size(item)`` units per item
        (default 1), ``total`` (default ``initial`` plus all sizes), units already done.

    Raises
    ------
    InputError
        If an item keeps killing the workers that compute it (e.g. out of memory), or the scheduler has had no
        worker for :data:`WORKER_TIMEOUT` (:class:`~xai_loc.errors.WorkLost`).
    """
    from xai_loc.progress import tqdm

    items = list(items)
    size = size or (lambda item: 1)
    total = initial + sum(size(item) for item in items) if total is None else total
    with tqdm(total=total, initial=initial, disable=not progress, desc=desc, unit=unit) as bar:
        if client is None or not items:
            for item in items:
                write(item, fn(item, shared))
                bar.update(size(item))
            return
        import cloudpickle
        import dask
        from distributed import KilledWorker, as_completed

        payload = cloudpickle.dumps(shared)  # here, so that what cannot be sent fails here, at once
        with dask.config.set({"distributed.admin.large-graph-warning-threshold": "4GiB"}):
            context = client.submit(bytes, payload, pure=False)  # in the graph once: recomputed if lost
        futures = client.map(_run, [fn] * len(items), items, payload=context, folder=os.getcwd(), pure=False)
        of = {future.key: item for future, item in zip(futures, items, strict=True)}
        try:
            for future, result in _completed(as_completed(futures, loop=client.loop, with_results=True), client):
                item = of[future.key]
                write(item, result)
                future.release()
                bar.update(size(item))
        except KilledWorker as err:
            raise WorkLost(f"work item {of.get(err.task, err.task)!r} ended the worker computing it "
                           f"{err.allowed_failures + 1} time(s) (out of memory?); give the workers more memory (or "
                           "lower --batch-size where the command has one) and run the command again (simulate and "
                           "explain resume from what they wrote)") from None
        finally:
            client.cancel([*futures, context])


def _completed(done, client: Client) -> Iterator[tuple[Any, Any]]:
    """The ``(future, result)`` pairs of ``done`` (an ``as_completed`` with results) as they come. While none comes,
    the scheduler's workers are counted every :data:`WORKER_POLL` seconds: a line on stderr when it has none left,
    :class:`~xai_loc.errors.WorkLost` once it has had none for :data:`WORKER_TIMEOUT` (``as_completed`` alone
    waits without end)."""
    import time

    address, alone_since, counted = client.scheduler.address, None, time.monotonic()
    while not done.is_empty():
        if done.has_ready():
            yield next(done)
            continue
        time.sleep(0.05)
        now = time.monotonic()
        if now - counted < WORKER_POLL:
            continue
        counted = now
        if client.scheduler_info().get("workers"):
            alone_since = None
        elif alone_since is None:
            alone_since = now
            print(f"scheduler {address} has no worker left; waiting up to {WORKER_TIMEOUT:g} s for one",
                  file=sys.stderr, flush=True)
        elif now - alone_since >= WORKER_TIMEOUT:
            raise WorkLost(f"scheduler {address} has had no worker for {WORKER_TIMEOUT:g} s; what was written is "
                           "kept, run the command again")
