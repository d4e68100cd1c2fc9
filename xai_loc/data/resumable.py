"""One resumable zarr store behind every store xai-loc writes block by block.

The dataset (:mod:`xai_loc.data.store`), binaural (:mod:`xai_loc.data.binaural_store`),
scene (:mod:`xai_loc.data.ipd_ild_scenes`, :mod:`xai_loc.data.bast_scenes`,
:mod:`xai_loc.data.cue_scenes`) and relevance (:mod:`xai_loc.explain.store`) stores differ
only in what they hold, described by a :class:`StoreKind`; how they are written, resumed,
finished and opened is here, once::

    with ResumableStore(final, DATASET, config, identity=canonical) as store:
        if store.finished(mismatch="holds other data"):    # whole, same digest; else the writer lock is taken
            return final
        store.open_or_resume(shape, coords, attrs, block=32)
        for block in store.pending():                                         # any order
            store.write(block, {"signals": values})                           # checked, recorded
        return store.finish()                                                 # sealed, renamed

Life of a store:

* a finished store with the same data is reused without the writer lock (it never changes once
  renamed into place), so one on a read-only data root can be read; otherwise the store is
  written as ``<final>.partial`` under :func:`xai_loc.io.store_writer_lock`, which also
  takes over the lock of a killed process and clears what a failed run leaves that is worth
  nothing;
* every file of a new partial store is flushed to the disk before its first progress record;
* its main array is cut along axis 0 into blocks of ``block`` items (a multiple of the chunk);
  :meth:`ResumableStore.write` writes one or more consecutive whole blocks in any order,
  refusing NaN, infinite or (unless the kind allows it) all-zero items (as stored, in float32)
  before anything is written, and records the written item ranges in ``<final>.progress.json``
  (``{"windows_written": <items written from the start>, "written": [[start, stop], ...]}``), after the size and
  CRC-32 of every chunk file it wrote (read back once, ~2 % of a small ``simulate``) in a journal inside the partial
  store (:data:`~xai_loc.data.integrity.JOURNAL`, one JSON line per write: not a whole record rewritten per block),
  as it records those of the chunk files written when the store is created;
* a later run resumes the partial store when its configuration has the same
  :func:`~xai_loc.data.spec.spec_digest`, its array the same shape and chunks, every chunk
  recorded as written is present, no other file is empty and every coordinate has its metadata,
  and writes only the :meth:`~ResumableStore.pending` blocks, among them those holding a chunk whose bytes are not
  those the journal records (damage that still decodes; where it records none, a partial store of an earlier
  xai-loc: a chunk that no longer decodes), such a chunk deleted first; anything else (a chunk written once, at
  creation, so damaged) is deleted and written afresh;
* :meth:`~ResumableStore.finish` records the manifest (:func:`~xai_loc.data.integrity.seal_store`,
  which refuses an empty file, a main-array chunk that does not decode and a chunk that is not as the journal
  records it, keeping the partial store for the rerun), removes the journal and renames the store to its final
  name, all flushed to the disk, so a store under its final name is always whole and holds what was written;
* :meth:`StoreKind.open` verifies a finished store against its manifest and opens it lazily,
  every chunk checked as it is read, and refuses a store whose ``config`` records another kind's
  :attr:`~StoreKind.format` or an earlier :attr:`~StoreKind.version`; every problem is one line
  (:class:`~xai_loc.errors.InputError`).

:func:`write_store` is that whole loop for a writer that computes its blocks one after another
(``render(items) -> {variable: values}``), with a progress bar.

Blocks can be computed anywhere (threads, dask workers) and handed to
:meth:`~ResumableStore.write` from any thread of the writing process, in any order: writes
are serialized (per-item results may share a chunk), and the progress record is updated
after the values are on disk.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xai_loc.data.integrity import (
    JOURNAL,
    check_values,
    chunk_keys,
    consolidate,
    empty_files,
    file_sums,
    final_store_exists,
    holds_zarr_metadata,
    open_zarr_dataset,
    open_zarr_group,
    seal_store,
    undecodable_chunks,
    verify_store,
)
from xai_loc.data.spec import older_store, spec_digest, store_mismatch
from xai_loc.errors import InputError
from xai_loc.io import discard_partial, fsync_path, partial_paths, store_writer_lock, write_progress

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["ResumableStore", "StoreKind", "write_store"]

#: The dtype of every store's main array.
DTYPE = np.dtype("float32")


#: The version of each store format (:attr:`StoreKind.format` -> :attr:`StoreKind.version`), filled as kinds are
#: made: a kind reading stores of several formats checks each against its own.
FORMAT_VERSIONS: dict[str, int] = {}


@dataclass(frozen=True)
class StoreKind:
    """What one kind of store holds: its main array and the words of its messages.

    Parameters
    ----------
    what
        The kind's name in messages, e.g. ``"dataset store"``.
    variable
        The main array, written block by block (:data:`DTYPE`, NaN where unwritten).
    dims
        Its dimensions; the first one counts the items (``"window"``, ``"example"``).
    units
        Its ``units`` attribute.
    make
        How a user creates one, e.g. ``"'xai-loc simulate'"``.
    values
        What the values are called in the message about a non-finite item.
    zeros
        Whether all-zero items are allowed (relevance may be zero; a signal may not).
    format
        The tag :func:`write_store` records as ``format`` in a store's ``config`` attr, and
        :meth:`open` and :meth:`open_array` require there: kinds holding the same array (the
        binaural families' ear signals) refuse each other's stores. None: no tag (any store
        holding the array, e.g. every store of ear signals); a store recording no tag is taken.
    version
        The version of what a store holds, raised when the same ``config`` comes to mean other data:
        :func:`write_store` records it as ``version`` in the ``config`` attr, and a store recording an
        earlier one is refused by :meth:`open` and :meth:`open_array` and, finished, by :func:`write_store`
        (:func:`~xai_loc.data.spec.older_store`), never read as current. None: no version; a store
        recording none is taken.
    """

    what: str
    variable: str
    dims: tuple[str, ...]
    units: str
    make: str
    values: str = "samples"
    zeros: bool = False
    format: str | None = None
    version: int | None = None

    def __post_init__(self):
        if self.format is not None and self.version is not None:
            FORMAT_VERSIONS[self.format] = self.version

    @property
    def item(self) -> str:
        """What one row along the first dimension is called."""
        return self.dims[0]

    @property
    def rebuild(self) -> str:
        """How to rebuild a damaged store of this kind (the end of every message about one)."""
        return f"delete it and run {self.make} again to rebuild it"

    def _checked_path(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        if path.name.endswith(".partial"):
            raise InputError(f"{path} is an unfinished {self.what}; run {self.make} again to complete it")
        if not path.exists():
            raise InputError(f"{self.what} {str(path)!r} does not exist; create it with {self.make}")
        return path

    def _no_variable(self, path: Path) -> InputError:
        return InputError(f"{self.what} {path} has no {self.variable!r} variable ({', '.join(self.dims)}); "
                          f"is it an xai-loc {self.what}?")

    def _check_config(self, path: Path, attrs: Mapping[str, Any]) -> None:
        """Refuse a store whose ``config`` attr records another kind's :attr:`format` or an earlier version: this
        kind's :attr:`version`, or, for a kind of no version (any store of ear signals), the version of the kind
        whose format the store records (:data:`FORMAT_VERSIONS`)."""
        try:
            config = json.loads(attrs["config"])
            found = config.get("format")
        except (KeyError, TypeError, ValueError, AttributeError):
            return
        if self.format is not None and found is not None and found != self.format:
            raise InputError(f"{path} is a {found!r} store, not a {self.what} ({self.format!r}); give a {self.what}, "
                             f"made by {self.make}")
        version = self.version if self.version is not None else FORMAT_VERSIONS.get(found)
        older = None if version is None else older_store(config, version)
        if older is not None:
            raise InputError(f"{path} {older}")

    def open(self, path: str | os.PathLike) -> xr.Dataset:
        """Verify a finished store against its manifest and open it as a lazy ``xarray.Dataset``.

        Raises
        ------
        InputError
            One line for an unfinished, missing, damaged or foreign store.
        """
        path = self._checked_path(path)
        ds = open_zarr_dataset(path, what=self.what, hint=self.rebuild)
        if self.variable not in ds or ds[self.variable].dims != self.dims:
            raise self._no_variable(path)
        self._check_config(path, ds.attrs)
        return ds

    def open_array(self, path: str | os.PathLike):
        """The main array of a finished store as a read-only zarr array (each chunk checked as it is read)."""
        path = self._checked_path(path)
        group = open_zarr_group(path, what=self.what, hint=self.rebuild)
        if self.variable not in group:
            raise self._no_variable(path)
        self._check_config(path, group.attrs)
        return group[self.variable]


def _stands(final: Path) -> bool:
    """Whether something stands under a store's final name, looked at without changing anything (an empty
    folder is no store; :func:`~xai_loc.data.integrity.final_store_exists` removes it under the lock)."""
    if final.is_dir() and not final.is_symlink():
        return any(final.iterdir())
    return final.exists() or final.is_symlink()


def _has_bytes(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _sync_tree(folder: Path) -> None:
    """Flush every file under ``folder``, every folder's entries and ``folder``'s own entry to the disk."""
    for where, _, names in os.walk(folder):
        for name in names:
            fsync_path(os.path.join(where, name))
        fsync_path(where)
    fsync_path(folder.parent)


def _without(ranges: list[list[int]], drop: Iterable[list[int]]) -> list[list[int]]:
    """The ``[start, stop)`` ranges (sorted, non-overlapping) less the items of ``drop``."""
    out: list[list[int]] = []
    for start, stop in ranges:
        for a, b in sorted(d for d in drop if d[0] < stop and d[1] > start):
            if a > start:
                out.append([start, a])
            start = max(start, b)
        if start < stop:
            out.append([start, stop])
    return out


def _fold(created: dict[str, list[int]], written: dict[str, list[int]], entry: Mapping[str, Any]) -> None:
    """Apply one line of a checksum journal (:data:`~xai_loc.data.integrity.JOURNAL`) to the checksums of the chunks
    written when the store was created and of those written by :meth:`ResumableStore.write` (None: no file)."""
    created.update(entry.get("created", {}))
    for key, value in entry.get("written", {}).items():
        created.pop(key, None)
        if value is None:
            written.pop(key, None)
        else:
            written[key] = value


def _read_journal(partial: Path) -> tuple[dict[str, list[int]], dict[str, list[int]], int]:
    """The checksums a partial store's journal records (created, written; both empty where it has none: an
    unfinished store of an xai-loc before it) and the length of its whole lines (a killed append leaves half one)."""
    try:
        data = (partial / JOURNAL).read_bytes()
    except FileNotFoundError:
        return {}, {}, 0
    end = data.rfind(b"\n") + 1
    created: dict[str, list[int]] = {}
    written: dict[str, list[int]] = {}
    for line in data[:end].splitlines():
        _fold(created, written, json.loads(line))
    if not all(isinstance(v, list) and len(v) == 2 and all(type(x) is int for x in v)
               for v in (*created.values(), *written.values())):
        raise ValueError(f"{partial / JOURNAL} is not a checksum journal")
    return created, written, end


def _merged(ranges: list[list[int]]) -> list[list[int]]:
    """Sorted, non-overlapping ``[start, stop)`` ranges covering the same items."""
    out: list[list[int]] = []
    for start, stop in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], stop)
        else:
            out.append([start, stop])
    return out


class ResumableStore:
    """A zarr store written in blocks along its first axis, resumable after any interruption.

    Use it as a context manager: it holds the store's writer lock from the moment :meth:`finished` finds no
    finished store (or :meth:`open_or_resume` is called) until the block ends; see the module docs.

    Parameters
    ----------
    path
        The store's final path (``<name>.zarr``).
    kind
        What the store holds.
    config
        What the store is asked to hold; recorded by the caller in the ``config`` attr (JSON).
    identity
        The part of a configuration that decides whether two stores hold the same data
        (default: all of it); compared by :func:`~xai_loc.data.spec.spec_digest`.
    chunk
        Items per zarr chunk of the main array.
    """

    def __init__(self, path: str | os.PathLike, kind: StoreKind, config: Mapping[str, Any], *,
                 identity: Callable[[Mapping[str, Any]], Any] = dict, chunk: int = 1) -> None:
        self.path, self.kind, self.config = Path(path), kind, dict(config)
        self.identity, self.chunk = identity, int(chunk)
        self.partial, self.progress_file = partial_paths(self.path)
        self.shape: tuple[int, ...] = ()
        self.block = self.chunk
        self.group = None
        self._written: list[list[int]] = []
        # [size, CRC-32] of the chunk files written when the store was created, and of those written by write()
        self._created: dict[str, list[int]] = {}
        self._sums: dict[str, list[int]] = {}
        self._lock = store_writer_lock(self.path)
        self._locked = False
        self._writing = threading.Lock()

    def __enter__(self) -> ResumableStore:
        return self

    def __exit__(self, *exc) -> bool | None:
        return self._lock.__exit__(*exc) if self._locked else None

    def _take_lock(self) -> None:
        """Take the store's writer lock (waiting for another writer of it) unless this store holds it."""
        if not self._locked:
            self._lock.__enter__()
            self._locked = True

    @property
    def _key(self) -> str:
        return f"{self.kind.item}s_written"

    def same_data(self, found: Any) -> bool:
        """Whether a recorded configuration has the digest of this store's configuration."""
        try:
            return spec_digest(self.identity(found)) == spec_digest(self.identity(self.config))
        except (TypeError, ValueError, AttributeError, KeyError):
            return False

    def finished(self, mismatch: str | Callable[[dict], str]) -> bool:
        """Whether the store already stands whole under its final name with the same data.

        A finished store that is reused is checked in full (every chunk read and checksummed,
        :func:`~xai_loc.data.integrity.verify_store` ``deep=True``; ~1 s a GB): the command
        that would rebuild it must not report it good while a chunk is damaged. It is looked for
        first without the writer lock and reused without it, needing no write access; where none
        stands there, the lock is taken (waiting for another writer of the store) and it is looked
        for again.

        Parameters
        ----------
        mismatch
            The message (after the path), or a function of the found configuration giving
            it, when a finished store holds other data.

        Raises
        ------
        InputError
            If the finished store is damaged, not an xai-loc store or holds other data.
        """
        if not self._locked:
            if _stands(self.path):
                reusable = self._reusable(mismatch)
                # what a run killed between the rename and its cleanup left: best effort (a read-only root keeps it)
                with contextlib.suppress(OSError):
                    self.progress_file.unlink(missing_ok=True)
                return reusable
            self._take_lock()
        return final_store_exists(self.path) and self._reusable(mismatch)

    def _reusable(self, mismatch: str | Callable[[dict], str]) -> bool:
        """True for the finished store under the final name if it holds the same data and is whole (see
        :meth:`finished`), else one line."""
        foreign = InputError(f"{self.path} exists but is not an xai-loc {self.kind.what}; remove it or choose "
                             "another path")
        if not holds_zarr_metadata(self.path):
            raise foreign
        attrs = open_zarr_group(self.path, what=self.kind.what, hint=self.kind.rebuild).attrs
        try:
            found = json.loads(attrs["config"])
        except (KeyError, TypeError, ValueError):
            raise foreign from None
        if not self.same_data(found):
            raise InputError(f"{self.path} {mismatch if isinstance(mismatch, str) else mismatch(found)}")
        verify_store(self.path, deep=True, what=self.kind.what, hint=self.kind.rebuild)
        return True

    def _resumable(self, names: Iterable[str]) -> tuple[list[list[int]], dict, dict, list[str], int] | None:
        """What a partial store that can be resumed holds, else None (``names``: its coordinates): the item ranges
        written and whole, the checksums of its journal (created, written), the chunks found damaged (to be
        written again) and the length of the journal's whole lines."""
        import zarr

        n, variable = self.shape[0], self.kind.variable
        try:
            if not self.partial.is_dir() or self.partial.is_symlink():
                return None
            record = json.loads(self.progress_file.read_text(encoding="utf-8"))
            done = record[self._key]
            if isinstance(done, bool) or not isinstance(done, int) or not 0 <= done <= n:
                return None
            ranges = record.get("written", [[0, done]] if done else [])
            if not isinstance(ranges, list) or not all(
                    isinstance(r, list) and len(r) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                for v in r) and 0 <= r[0] < r[1] <= n
                    and r[0] % self.chunk == 0 and (r[1] % self.chunk == 0 or r[1] == n) for r in ranges):
                return None
            ranges = _merged(ranges)
            if done != (ranges[0][1] if ranges and ranges[0][0] == 0 else 0):
                return None
            group = zarr.open_group(self.partial, mode="r", zarr_format=2, use_consolidated=False)
            if not self.same_data(json.loads(group.attrs["config"])):
                return None
            stored = group[variable]
            if tuple(stored.shape) != self.shape or tuple(stored.chunks) != (self.chunk, *self.shape[1:]):
                return None
            meta = json.loads((self.partial / variable / ".zarray").read_text(encoding="utf-8"))
            sep = meta.get("dimension_separator") or "."
            rows = {r for start, stop in ranges for r in range(start // self.chunk, math.ceil(stop / self.chunk))}
            recorded = [key for key in chunk_keys(meta) if int(key.split(sep)[0]) in rows]
            # a chunk file of no bytes is a write a power loss took back (a compressed chunk never is empty)
            if not all(_has_bytes(self.partial / variable / key) for key in recorded):
                return None
            # nor any other file (a write before the first record that a power loss took back)
            if empty_files(self.partial, skip_chunks=variable) or not all(
                    _has_bytes(self.partial / name / meta) for name in (*names, variable)
                    for meta in (".zarray", ".zattrs")):
                return None
            # a chunk damaged since it was written is written again (sealed, its checksum would vouch for it): one
            # whose bytes are not those the journal records (most damage still decodes), or, where the journal
            # records none (an unfinished store of an xai-loc before it), one that no longer decodes
            created, sums, end = _read_journal(self.partial)
            found = file_sums(self.partial, {**created, **sums})
            damaged = [key for key, entry in {**created, **sums}.items() if found.get(key) != entry]
            if not {key.partition("/")[0] for key in damaged} <= {variable, *(key.partition("/")[0] for key in sums)}:
                return None  # a chunk of a variable written once, when the store was created: nothing writes it again
            damaged += [f"{variable}/{key}" for key in undecodable_chunks(
                self.partial / variable, [key for key in recorded if f"{variable}/{key}" not in sums])]
            ranges = _without(ranges, [self._items_of(key) for key in damaged])
        except Exception:  # noqa: BLE001 - any unreadable or inconsistent leftover is written afresh
            return None
        return ranges, created, sums, damaged, end

    def _items_of(self, key: str) -> list[int]:
        """The items ``[start, stop)`` of the main array's chunks that hold the items of chunk ``key``
        (``<variable>/<chunk key>``)."""
        name, _, chunk = key.partition("/")
        meta = json.loads((self.partial / name / ".zarray").read_text(encoding="utf-8"))
        size, row = meta["chunks"][0], int(chunk.split(meta.get("dimension_separator") or ".")[0])
        return [row * size // self.chunk * self.chunk,
                min(self.shape[0], math.ceil((row + 1) * size / self.chunk) * self.chunk)]

    def open_or_resume(self, shape: tuple[int, ...], coords: Mapping[str, Any], attrs: Mapping[str, Any], *,
                       block: int | None = None, results: Iterable[str] = ()) -> ResumableStore:
        """Resume the partial store if it can be (see the module docs), else create it afresh.

        Parameters
        ----------
        shape
            Shape of the main array (items first).
        coords, attrs
            Coordinates (``xarray.Dataset`` coords, the per-item ones filled in by
            :meth:`write` where they are results) and attrs (``config`` among them) of a new store.
        block
            Items per block (default: one chunk); a multiple of the chunk.
        results
            The per-item coordinates that :meth:`write` fills: a new store holds them in chunks of ``block`` items, so
            that a write rewrites only chunks of the blocks it writes and a run killed inside it loses no block
            written before. A resumed store keeps the chunks it has (one chunk of the whole store, as an earlier
            xai-loc wrote them, resumes as before: such a chunk found rewritten sends every block back to be
            written again).
        """
        import xarray as xr
        import zarr

        self.shape = tuple(int(s) for s in shape)
        self.block = self.chunk if block is None else int(block)
        if self.block < 1 or self.block % self.chunk:
            raise ValueError(f"block={self.block} must be a positive multiple of the chunk ({self.chunk})")
        self._take_lock()
        found = self._resumable(coords)
        if found is None:
            discard_partial(self.path)
            ds = xr.Dataset(coords=dict(coords), attrs=dict(attrs))
            ds.to_zarr(self.partial, mode="w", consolidated=False, zarr_format=2,
                       encoding={name: {"chunks": (self.block, *ds[name].shape[1:])} for name in results})
            zarr.open_group(self.partial, mode="a", zarr_format=2).create_array(
                self.kind.variable, shape=self.shape, dtype=DTYPE, chunks=(self.chunk, *self.shape[1:]),
                fill_value=np.nan, attributes={"_ARRAY_DIMENSIONS": list(self.kind.dims), "units": self.kind.units})
            self._created, self._sums = {}, {}
            self._log({"created": file_sums(self.partial)})
            _sync_tree(self.partial)  # on the disk before a progress record can vouch for it
            ranges = []
            self._record(ranges)
        else:
            ranges, self._created, self._sums, damaged, end = found
            journal = self.partial / JOURNAL
            if journal.is_file() and journal.stat().st_size > end:  # half a line a killed append left
                os.truncate(journal, end)
                fsync_path(journal)
            if damaged:
                self._record(ranges)  # before the damaged chunks go (one that does not decode would stop a write)
                for key in damaged:
                    (self.partial / key).unlink(missing_ok=True)
                self._log({"written": dict.fromkeys(damaged)})
        self._written = ranges
        self.group = zarr.open_group(self.partial, mode="a", zarr_format=2)
        return self

    def _chunk_files(self, name: str, start: int, stop: int) -> list[str]:
        """The keys (``<name>/<chunk key>``) of the chunks of ``name`` holding items ``start..stop``."""
        array = self.group[name]
        sep = getattr(array.metadata, "dimension_separator", None) or "."
        # the keys of these rows only (every key of the array per write grows with the store's square)
        rest = chunk_keys({"shape": list(array.shape[1:]), "chunks": list(array.chunks[1:]),
                           "dimension_separator": sep}) if array.ndim > 1 else []
        return [f"{name}/{key}" for row in range(start // array.chunks[0], math.ceil(stop / array.chunks[0]))
                for key in [sep.join((str(row), r)) for r in rest] or [str(row)]]

    def _sync(self, name: str, keys: list[str]) -> None:
        """Flush the chunk files ``keys`` of ``name`` to the disk before the progress file records them."""
        for key in keys:
            if (self.partial / key).is_file():
                fsync_path(self.partial / key)
        fsync_path(self.partial / name)  # zarr renames each chunk into place: the folder's entries too

    def _log(self, entry: dict[str, dict[str, list[int] | None]]) -> None:
        """Append checksums (``{"created" | "written": {key: [size, CRC-32] or None}}``) to the journal, on the disk
        before a progress record vouches for them, and keep them."""
        journal = self.partial / JOURNAL
        new = not journal.exists()
        with open(journal, "a", encoding="utf-8") as out:
            out.write(json.dumps(entry, separators=(",", ":")) + "\n")
            out.flush()
            os.fsync(out.fileno())
        if new:
            fsync_path(self.partial)
        _fold(self._created, self._sums, entry)

    def _record(self, ranges: list[list[int]]) -> None:
        done = ranges[0][1] if ranges and ranges[0][0] == 0 else 0
        write_progress(self.progress_file, {self._key: done, "written": ranges})

    def items(self, block: int) -> range:
        """The items of block ``block``."""
        return range(block * self.block, min(self.shape[0], (block + 1) * self.block))

    def pending(self) -> list[int]:
        """Blocks not yet written, ascending."""
        starts = [r[0] for r in self._written]
        out = []
        for block in range(math.ceil(self.shape[0] / self.block)):
            items = self.items(block)
            i = int(np.searchsorted(starts, items.start, side="right")) - 1
            if i < 0 or self._written[i][1] < items.stop:
                out.append(block)
        return out

    def write(self, block: int, arrays: Mapping[str, np.ndarray], hint: str = "") -> None:
        """Write one or more consecutive whole blocks from ``block`` on, in any order and from any thread; record them.

        Parameters
        ----------
        block
            The first block written.
        arrays
            Values by variable: the main array (whose length along axis 0 says how many items
            are written) and any per-item variable of the store (e.g. results kept as coords).
        hint
            What to check, ending the message about a non-finite or silent item.

        Raises
        ------
        InputError
            If an item of the main array, as stored (:data:`DTYPE`: 1e39 is infinite there, 1e-46
            zero), is NaN, infinite or (unless allowed) all zero; nothing of this call is written then.
        """
        with np.errstate(over="ignore"):  # an overflow is refused below, as the infinity it is stored as
            main = np.asarray(arrays[self.kind.variable]).astype(DTYPE, copy=False)
        start = block * self.block
        stop = start + len(main)
        if not 0 <= block or not start < stop <= self.shape[0] or (stop % self.block and stop != self.shape[0]):
            raise ValueError(f"items {start}..{stop} of {self.path} are not whole blocks of {self.block}")
        check_values(main, self.path, start, item=self.kind.item, zeros=self.kind.zeros, what=self.kind.values,
                     hint=hint)
        arrays = {**arrays, self.kind.variable: main}
        with self._writing:
            sums: dict[str, list[int] | None] = {}
            for name, values in arrays.items():
                self.group[name][start:stop] = values
                keys = self._chunk_files(name, start, stop)
                self._sync(name, keys)
                sums |= dict.fromkeys(keys) | file_sums(self.partial, keys)  # None: no file (all fill values)
            self._log({"written": sums})  # read back once: a rerun and the seal compare the chunks with them
            self._written = _merged([*self._written, [start, stop]])
            self._record(self._written)

    def finish(self, attrs: Mapping[str, Any] | None = None) -> Path:
        """Add ``attrs``, seal the complete store with its manifest and give it its final name."""
        missing = self.pending()
        if missing:
            raise ValueError(f"{self.path} cannot be finished: {len(missing)} blocks are not written "
                             f"(the first is {missing[0]})")
        if attrs:
            self.group.attrs.update(dict(attrs))
        consolidate(self.partial)
        for name in (".zattrs", ".zmetadata"):  # what the manifest records, on the disk before it
            fsync_path(self.partial / name)
        seal_store(self.partial, complete=(self.kind.variable,), what=self.kind.what,
                   written={**self._created, **self._sums})
        (self.partial / JOURNAL).unlink(missing_ok=True)  # the writer's, never part of the finished store
        fsync_path(self.partial)
        os.replace(self.partial, self.path)
        fsync_path(self.path.parent)  # the new name survives a power loss
        # a reader that found the finished store may have removed it already (it does so unlocked)
        self.progress_file.unlink(missing_ok=True)
        return self.path


def write_store(path: str | os.PathLike, kind: StoreKind, config: Mapping[str, Any], *, shape: tuple[int, ...],
                coords: Mapping[str, Any], attrs: Mapping[str, Any],
                render: Callable[[range], Mapping[str, np.ndarray]], chunk: int = 1, block: int | None = None,
                mismatch: str | Callable[[dict], str] = "holds data of another spec; remove it or use another name",
                hint: str = "",
                progress: bool = False, desc: str = "render") -> Path:
    """Write a store whose blocks ``render`` computes: reuse it if finished, else resume or start it, then finish it.

    Parameters
    ----------
    path, kind, config, chunk
        As for :class:`ResumableStore` (``config`` is also recorded in the ``config`` attr, with the
        kind's :attr:`~StoreKind.format` as ``format`` and its :attr:`~StoreKind.version` as ``version``).
    shape, coords, attrs, block
        As for :meth:`ResumableStore.open_or_resume`.
    render
        ``render(items) -> {variable: values}`` for the items (a ``range``) of one block: the
        main array and any per-item results, as for :meth:`ResumableStore.write`.
    mismatch, hint
        The end of the message about a finished store of other data (of an earlier version: that it was written
        by an older xai-loc, :func:`~xai_loc.data.spec.store_mismatch`), and about a bad item.
    progress, desc
        Show a progress bar (items) labelled ``desc``.

    Returns
    -------
    Path
        The finished store.
    """
    from xai_loc.progress import tqdm

    path = Path(path)
    config = {**config, **{k: v for k, v in (("format", kind.format), ("version", kind.version)) if v is not None}}
    if kind.version is not None:
        mismatch = store_mismatch(mismatch, kind.version)
    with ResumableStore(path, kind, config, chunk=chunk) as out:
        if out.finished(mismatch):
            return out.path
        out.open_or_resume(shape, coords, {**attrs, "config": json.dumps(config, sort_keys=True)}, block=block)
        pending = out.pending()
        done = shape[0] - sum(len(out.items(b)) for b in pending)
        with tqdm(total=shape[0], initial=done, disable=not progress, desc=desc, unit=kind.item) as bar:
            for b in pending:
                out.write(b, render(out.items(b)), hint=hint)
                bar.update(len(out.items(b)))
        return out.finish()
