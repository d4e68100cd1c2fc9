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

Workers compute with one torch thread each, which also makes their float results those of
a single-process run with ``--threads 1``. The workers must see the paths the command gets
(a shared file system on a cluster) and run the same xai-loc version.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import pickle
import re
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from xai_loc.errors import InputError

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["CONNECT_TIMEOUT", "MAX_WORKERS", "check_scheduler", "check_workers", "cluster", "load_here", "map_blocks"]

#: Seconds to wait for a scheduler before giving up.
CONNECT_TIMEOUT = 10.0
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
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise InputError(f"workers={workers!r} is not allowed; use an integer in [1, {MAX_WORKERS}]")
    return workers


@contextlib.contextmanager
def cluster(scheduler: str | None = None, workers: int | None = None, *,
            timeout: float | None = None) -> Iterator[Client | None]:
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

    Raises
    ------
    InputError
        Both or neither valid, or the scheduler cannot be reached in time.
    """
    if scheduler is not None and workers is not None:
        raise InputError(f"a scheduler ({scheduler}) and a local cluster ({workers} workers) are both asked for; "
                         "give one of --scheduler and --workers")
    if scheduler is None and workers is None:
        yield None
        return
    from distributed import Client, LocalCluster

    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    with contextlib.ExitStack() as stack:
        if workers is not None:
            local = stack.enter_context(LocalCluster(
                n_workers=check_workers(workers), threads_per_worker=1, processes=True, dashboard_address=":0",
                silence_logs=logging.ERROR))
            client = stack.enter_context(Client(local, set_as_default=False))
        else:
            address = check_scheduler(scheduler)
            try:
                client = Client(address, timeout=timeout, set_as_default=False)
            except (OSError, TimeoutError):
                raise InputError(f"scheduler {address} cannot be reached within {timeout:g} s; start it (dask "
                                 "scheduler, then dask worker ADDRESS on each machine), check the address, or use "
                                 "--workers N for a local cluster") from None
            stack.enter_context(client)
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
def _keep_memory() -> bool:
    """Freed memory kept for reuse, once per worker process, as in a command's own process."""
    from xai_loc.runtime import keep_freed_memory

    return keep_freed_memory()


def _run(fn: Callable[[Any, Any], Any], item: Any, payload: bytes) -> Any:
    """One item on a worker, computed with one torch thread and freed memory kept for reuse."""
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    _keep_memory()
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
        If an item keeps killing the workers that compute it (e.g. out of memory).
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
        futures = client.map(_run, [fn] * len(items), items, payload=context, pure=False)
        of = {future.key: item for future, item in zip(futures, items, strict=True)}
        try:
            for future, result in as_completed(futures, loop=client.loop, with_results=True):
                item = of[future.key]
                write(item, result)
                future.release()
                bar.update(size(item))
        except KilledWorker as err:
            raise InputError(f"work item {of.get(err.task, err.task)!r} ended the worker computing it "
                             f"{err.allowed_failures + 1} time(s) (out of memory?); lower --batch-size or give the "
                             "workers more memory") from None
        finally:
            client.cancel([*futures, context])
