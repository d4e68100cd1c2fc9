"""Whole stores: a manifest recorded when a zarr store is finished, checked whenever it is opened.

Every zarr store xai-loc writes (dataset, relevance, binaural and scene stores) is built as
``<name>.zarr.partial`` and, just before the rename to its final name, sealed by
:func:`seal_store`: the file :data:`MANIFEST` inside the store records every file of it
(metadata and chunks) with its size in bytes and the CRC-32 (:func:`zlib.crc32`) of its
bytes, and the arrays every chunk of which was written (``complete``). The manifest holds nothing
else (no dates), so the same store gives the same bytes.

Opening (:func:`open_zarr_dataset`, used by ``open_signals``, ``open_relevance`` and
``open_binaural``) checks cheaply that the store is whole (:func:`verify_store`): every
metadata file is present, parses as JSON and matches its size and checksum, and every chunk
file is present with its recorded size (one ``stat`` per chunk: about 0.2 s for 40,000
chunks), every chunk of a complete array among them (one left out of the manifest too would read as
the fill value). The dataset is then read through a store that checks the size and checksum of each
chunk as it is read, so a damaged byte is reported where it is met, not decoded into wrong
numbers. ``verify_store(path, deep=True)`` checks every checksum at once. A store without a
manifest (written before this check existed, or by other software) is refused.

Every problem is one line (:class:`~xai_loc.errors.InputError`) that names the store, what
is wrong and how to rebuild it, e.g. ``dataset store data/test.zarr is damaged: chunk
signals/17.0.0 is missing; delete it and run 'xai-loc simulate' again to rebuild it`` (each
:class:`~xai_loc.data.resumable.StoreKind` names the command that makes it; :data:`REBUILD`
otherwise).

Unfinished stores are resumed only when they can be; writing, resuming and finishing are
:class:`xai_loc.data.resumable.ResumableStore`, shared by every zarr store writer, which
refuses non-finite or silent items before they are written (:func:`check_values`).
Single-file (netCDF) results are written whole by an atomic rename
(:func:`xai_loc.io.write_dataset_atomic`) and opened through :func:`open_netcdf_store`.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xai_loc.errors import InputError, WorkLost
from xai_loc.io import netcdf_digest_matches, partial_paths, write_text_atomic

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["JOURNAL", "MANIFEST", "REBUILD", "check_values", "chunk_keys", "consolidate", "empty_files",
           "file_sums", "final_store_exists", "holds_zarr_metadata", "open_netcdf_store", "open_zarr_dataset",
           "open_zarr_group", "seal_store", "settle_reads", "undecodable_chunks", "verify_store"]

#: The manifest's file name inside a store.
MANIFEST = ".xai-loc-manifest.json"
#: The file inside an unfinished store where its writer records the size and CRC-32 of each chunk it wrote
#: (:class:`~xai_loc.data.resumable.ResumableStore`); never part of a finished store.
JOURNAL = ".xai-loc-written.jsonl"
#: Format name and version recorded in every manifest.
MANIFEST_FORMAT, MANIFEST_VERSION = "xai-loc-store-manifest", 1
#: How to rebuild a damaged store (the end of every message about one).
REBUILD = "delete it and run the command again to rebuild it"
#: zarr metadata files (JSON), checked in full on every open.
_METADATA = (".zattrs", ".zarray", ".zgroup", ".zmetadata")
#: Temporary files zarr writes beside a chunk before renaming it (left by a killed run).
_ZARR_TEMP = re.compile(r"\.[0-9a-f]{32}\.partial$")


def _crc(data) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _is_metadata(key: str) -> bool:
    return key.rsplit("/", 1)[-1] in _METADATA


def _describe(key: str) -> str:
    return f"metadata {key}" if _is_metadata(key) else f"chunk {key}"


def _files(path: Path) -> dict[str, Path]:
    """Every file of a store by its key (posix path relative to the store), the manifest and journal excepted."""
    out = {}
    for folder, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            full = Path(folder) / name
            key = full.relative_to(path).as_posix()
            if key not in (MANIFEST, JOURNAL):
                out[key] = full
    return out


def chunk_keys(meta: dict[str, Any]) -> list[str]:
    """Every chunk key of a zarr v2 array from its ``.zarray``."""
    import itertools

    grid = [range(math.ceil(n / c)) for n, c in zip(meta["shape"], meta["chunks"], strict=True)]
    sep = meta.get("dimension_separator") or "."
    return [sep.join(str(i) for i in index) for index in itertools.product(*grid)] if grid else ["0"]


def empty_files(path: str | Path, skip_chunks: str | None = None) -> list[str]:
    """Keys of the files of no bytes in a zarr store: writes a power loss took back (JSON metadata and
    compressed chunks are never empty). Temporary files of a killed write are left out, and so are the
    chunks (not the metadata) of the array ``skip_chunks``."""
    path = Path(path)
    return [key for key, full in _files(path).items()
            if not _ZARR_TEMP.search(full.name)
            and (key.rpartition("/")[0] != skip_chunks or _is_metadata(key)) and full.stat().st_size == 0]


def file_sums(path: str | Path, keys: Iterable[str] | None = None) -> dict[str, list[int]]:
    """``[size, CRC-32]`` of each file ``keys`` of a store that exists (default: every file but the metadata)."""
    path = Path(path)
    if keys is None:
        keys = [key for key in _files(path) if not _is_metadata(key)]
    out = {}
    for key in keys:
        with contextlib.suppress(FileNotFoundError):
            data = (path / key).read_bytes()
            out[key] = [len(data), _crc(data)]
    return out


def consolidate(path: str | Path) -> None:
    """Consolidate a zarr (v2) store's metadata into ``.zmetadata`` (its writer's :data:`JOURNAL`, no part of the
    hierarchy, passed over without zarr's warning about it)."""
    import warnings

    import zarr

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=f"Object at {re.escape(JOURNAL)} is not recognized")
        zarr.consolidate_metadata(path, zarr_format=2)


def seal_store(path: str | Path, complete: Iterable[str] = (), what: str = "store",
               written: Mapping[str, list[int]] | None = None) -> Path:
    """Record the manifest of a finished zarr store (call it just before the rename to its final name).

    Parameters
    ----------
    path
        The finished store (usually ``<name>.zarr.partial``); its metadata is consolidated
        here if it is not yet.
    complete
        Arrays every chunk of which must be present (the data arrays: an unwritten chunk
        would read as the fill value) and decode (the checksum recorded for a chunk damaged
        before now would vouch for it); the manifest records them, so that opening the store
        refuses one of their chunks missing later.
    what
        The kind of store, for messages.
    written
        ``[size, CRC-32]`` of chunks as their writer wrote them (:func:`file_sums`): a chunk missing or
        differing from them since (damage that may still decode) is refused.

    Returns
    -------
    pathlib.Path
        The manifest file.

    Raises
    ------
    InputError
        If a chunk of a ``complete`` array is missing or does not decode, or a file has no bytes (a write a
        power loss took back); the store is then not sealed. :class:`~xai_loc.errors.WorkLost` (the store is kept
        for the rerun, which writes that chunk again) where a chunk does not decode or is not as ``written``.
    """
    path, complete = Path(path), sorted(complete)
    for folder, _, names in os.walk(path):  # temporary files of a killed write (a chunk, an earlier manifest)
        for name in names:
            if _ZARR_TEMP.search(name) or (name.startswith(f".{MANIFEST}.") and name.endswith(".tmp.json")):
                (Path(folder) / name).unlink(missing_ok=True)
    if not (path / ".zmetadata").is_file():
        consolidate(path)
    decoders = {}  # the codecs and a chunk buffer of every chunk of a complete array, by its key
    for array in complete:
        meta = json.loads((path / array / ".zarray").read_text(encoding="utf-8"))
        codecs = _codecs(meta)
        buffer = _chunk_buffer(codecs)
        for key in (f"{array}/{key}" for key in chunk_keys(meta)):
            if not (path / key).is_file():
                raise InputError(f"{what} {path} misses chunk {key}, which was recorded as written; "
                                 "run the command again to write it afresh")
            decoders[key] = codecs, buffer
    written = dict(written or {})
    found = _files(path)
    missing = sorted(set(written) - set(found))
    if missing:
        raise WorkLost(f"{what} {path} misses chunk {missing[0]}, which was recorded as written; run the command "
                       "again to write it afresh")
    files: dict[str, dict[str, list[int]]] = {}
    for key, full in found.items():
        folder, _, name = key.rpartition("/")
        data = full.read_bytes()
        if not data:
            raise InputError(f"{what} {path} holds an empty file {key} (a write lost to a power loss); run the "
                             "command again to write it afresh")
        why = _undecodable(decoders[key][0], data, out=decoders[key][1]) if key in decoders else None
        if why is not None:
            # kept for the rerun, which writes that chunk again (ResumableStore drops it from the written ranges)
            raise WorkLost(f"{what} {path}: chunk {key}, recorded as written, cannot be decoded ({why}); run the "
                           "command again to write it afresh")
        entry = [len(data), _crc(data)]
        if key in written and list(written[key]) != entry:
            raise WorkLost(f"{what} {path}: chunk {key} has changed since it was written ({entry[0]} bytes, CRC-32 "
                           f"{entry[1]:08x}; written: {written[key][0]} bytes, {written[key][1]:08x}); run the command "
                           "again to write it afresh")
        files.setdefault(folder, {})[name] = entry
    manifest = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "checksum": "crc32", "files": files}
    if complete:  # left out otherwise, as in the manifests recorded before it
        manifest["complete"] = complete
    return write_text_atomic(path / MANIFEST, json.dumps(manifest, sort_keys=True, separators=(",", ":")) + "\n")


def holds_zarr_metadata(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding zarr (v2) metadata, i.e. looks like a zarr store: only such a store is
    ever to be deleted and rebuilt (a data root given by mistake holds the stores themselves)."""
    return any((Path(path) / name).is_file() for name in _METADATA)


def _read_manifest(path: Path, what: str, hint: str) -> tuple[dict[str, dict[str, list[int]]], list[str]]:
    """The manifest's files by folder and its complete arrays (none in a manifest recorded before them)."""
    if not path.exists():
        raise InputError(f"{what} {str(path)!r} does not exist")
    if not path.is_dir():
        raise InputError(f"{what} {path} is a file, not a zarr store; give a {what} folder")
    if not any(path.iterdir()):
        raise InputError(f"{what} {path} is an empty folder, not a store; {hint}")
    if not holds_zarr_metadata(path):  # a data root, or any other folder: never to be deleted
        raise InputError(f"{what} {path} is not a {what} (no zarr metadata); give the path of a {what}")
    try:
        text = (path / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} {path} has no manifest of its contents (written before xai-loc recorded one, "
                         f"or not by xai-loc); {hint}") from None
    except OSError as err:
        raise InputError(f"{what} {path}: its manifest {MANIFEST} cannot be read ({err.strerror}); {hint}") from None
    try:
        manifest = json.loads(text)
        files, complete = manifest["files"], manifest.get("complete", [])
        fmt, version = manifest["format"], manifest["version"]
        if not isinstance(files, dict) or not all(
                isinstance(v, dict) and all(isinstance(e, list) and len(e) == 2 for e in v.values())
                for v in files.values()) or not (isinstance(complete, list) and all(
                isinstance(a, str) for a in complete)):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{what} {path} is damaged: its manifest {MANIFEST} is not valid; {hint}") from None
    if fmt != MANIFEST_FORMAT or version != MANIFEST_VERSION:
        raise InputError(f"{what} {path} has a manifest of another format ({fmt!r} version {version!r}); "
                         f"this xai-loc reads version {MANIFEST_VERSION}; {hint}")
    return files, complete


def _problem(key: str, data, size: int, crc: int | None) -> str | None:
    """What is wrong with the bytes read for ``key`` (None: nothing); ``crc`` None skips the checksum."""
    if data is None:
        return f"{_describe(key)} is missing"
    n = memoryview(data).nbytes
    if n != size:
        return f"{_describe(key)} has {n} bytes, expected {size}"
    if crc is not None and _crc(data) != crc:
        return f"{_describe(key)} does not match its checksum"
    return None


def verify_store(path: str | Path, deep: bool = False, what: str = "store", hint: str = REBUILD) -> dict[str, list]:
    """Check that a zarr store is whole; return its manifest entries ``{key: [size, crc32]}``.

    Metadata files are read, parsed and checksummed; chunk files are checked for presence
    and size (one ``stat`` each), and with ``deep=True`` also read and checksummed; every chunk
    of the arrays the manifest records as complete must be in it.

    Raises
    ------
    InputError
        One line naming the store, the first problem (and how many more there are) and ``hint``.
    """
    path = Path(path)
    files, complete = _read_manifest(path, what, hint)
    entries: dict[str, list] = {}
    problems: list[str] = []
    by_fd = os.stat in os.supports_dir_fd
    for folder, names in files.items():  # plain strings and one open folder: ~3 us per chunk
        where = os.path.join(path, folder) if folder else str(path)
        prefix = f"{folder}/" if folder else ""
        try:
            fd = os.open(where, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if by_fd else None
        except OSError:
            fd, where = None, None  # the folder is gone: every file in it is missing
        try:
            for name, entry in names.items():
                key = prefix + name
                entries[key] = entry
                size, crc = entry
                if name in _METADATA or deep:
                    try:
                        with open(os.path.join(where, name), "rb") as handle:
                            data = handle.read()
                    except (TypeError, FileNotFoundError, IsADirectoryError, NotADirectoryError):
                        data = None
                    problem = _problem(key, data, size, crc)
                    if problem is not None and data is not None and name in _METADATA:
                        try:  # say what zarr would trip over
                            json.loads(data)
                        except ValueError:
                            problem = f"{_describe(key)} is not valid JSON"
                else:
                    try:
                        found = (os.stat(name, dir_fd=fd) if fd is not None else os.stat(os.path.join(where, name))
                                 ).st_size
                    except (TypeError, FileNotFoundError, NotADirectoryError):
                        found = None
                    problem = (None if found == size else f"{_describe(key)} is missing" if found is None else
                               f"{_describe(key)} has {found} bytes, expected {size}")
                if problem:
                    problems.append(problem)
        finally:
            if fd is not None:
                os.close(fd)
    for array in complete:  # a chunk taken out of the manifest as well would read as the fill value
        meta = f"{array}/.zarray"
        if meta not in entries:
            problems.append(f"{_describe(meta)} is missing")
            continue
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):  # damaged: reported above
            unrecorded = [f"{array}/{key}" for key in chunk_keys(json.loads((path / meta).read_bytes()))
                          if f"{array}/{key}" not in entries]
            problems += [f"{_describe(key)} is {'not in the manifest' if (path / key).exists() else 'missing'}"
                         for key in unrecorded]
    if problems:
        problems.sort(key=lambda p: not p.startswith("metadata"))  # unreadable metadata first
        more = f" (and {len(problems) - 1} more problem{'s' * (len(problems) > 2)})" if len(problems) > 1 else ""
        raise InputError(f"{what} {path} is damaged: {problems[0]}{more}; {hint}")
    return entries


def _codecs(meta: dict[str, Any]) -> tuple[Any, list, int | None]:
    """The compressor, filters and decoded chunk size in bytes (None: not fixed) of the zarr v2 array ``meta``
    (its ``.zarray``)."""
    import numcodecs

    compressor = numcodecs.get_codec(meta["compressor"]) if meta.get("compressor") else None
    filters = [numcodecs.get_codec(f) for f in meta.get("filters") or ()]
    dtype = np.dtype(meta["dtype"]) if isinstance(meta.get("dtype"), str) else None
    size = None if dtype is None or dtype.hasobject or filters else math.prod(meta["chunks"]) * dtype.itemsize
    return compressor, filters, size


def _undecodable(codecs: tuple[Any, list, int | None], data, out: np.ndarray | None = None) -> str | None:
    """Why one chunk's bytes do not decode with its array's codecs (:func:`_codecs`) to one whole chunk, in a few
    words; None where they do.

    A blosc frame is first checked to be as long as its header says: blosc decodes a cut frame stored
    uncompressed without an error, reading past its end. ``out``, a buffer of one whole chunk's bytes, takes a
    blosc frame of that size (nothing else applied to it): reused from chunk to chunk, it spares allocating and
    faulting in fresh memory, 3 times the decoding itself.
    """
    compressor, filters, size = codecs
    try:
        if compressor is not None:
            if compressor.codec_id == "blosc":
                if int.from_bytes(bytes(data[12:16]), "little") != len(data):
                    return "the blosc frame is not as long as its header says"
                if out is not None and not filters and int.from_bytes(bytes(data[4:8]), "little") == out.nbytes:
                    compressor.decode(data, out=out)
                    return None
            data = compressor.decode(data)
        for f in reversed(filters):
            data = f.decode(data)
    except Exception as err:  # noqa: BLE001 - codecs raise many types for damaged bytes
        return " ".join(str(err).split()) or type(err).__name__
    if size is not None and memoryview(data).nbytes != size:
        return f"it decodes to {memoryview(data).nbytes} bytes, not {size}"
    return None


def undecodable_chunks(array: str | Path, keys: Iterable[str]) -> list[str]:
    """The chunks among ``keys`` of the zarr v2 array folder ``array`` (its ``.zarray`` read) whose bytes do not
    decode (:func:`_undecodable`); a missing chunk is not one of them."""
    array = Path(array)
    codecs = _codecs(json.loads((array / ".zarray").read_bytes()))
    buffer = _chunk_buffer(codecs)
    found = []
    for key in keys:
        with contextlib.suppress(FileNotFoundError):
            if _undecodable(codecs, (array / key).read_bytes(), buffer) is not None:
                found.append(key)
    return found


def _chunk_buffer(codecs: tuple[Any, list, int | None]) -> np.ndarray | None:
    """A buffer of one decoded chunk of an array of ``codecs`` (:func:`_codecs`; None where its size is not fixed),
    reused by :func:`_undecodable` for one chunk after another in one thread."""
    return None if codecs[2] is None else np.empty(codecs[2], np.uint8)


class _Checks:
    """The manifest entries of one store and how to word a problem with it."""

    def __init__(self, path: Path, entries: dict[str, list], what: str, hint: str) -> None:
        self.path, self.entries, self.what, self.hint = path, entries, what, hint
        self.codecs: dict[str, tuple] = {}  # by chunk folder (:func:`_codecs`), read with its first chunk

    def fail(self, problem: str) -> InputError:
        return InputError(f"{self.what} {self.path} is damaged: {problem}; {self.hint}")

    def check(self, key: str, buf, byte_range) -> None:
        entry = self.entries.get(key)
        if entry is None:
            if buf is not None and key != MANIFEST:
                raise self.fail(f"{_describe(key)} is not part of the store as recorded")
            return
        if byte_range is None:
            data = None if buf is None else buf.as_numpy_array()
            problem = _problem(key, data, *entry)
            if problem:
                raise self.fail(problem)
            if not _is_metadata(key):
                self.decodes(key, data)
        elif buf is None:
            raise self.fail(f"{_describe(key)} is missing")

    def decodes(self, key: str, data) -> None:
        """Refuse a chunk that matches the manifest but that its array's codecs cannot decode (damaged before
        the store was sealed): here, in one line, rather than as a codec's error where the values are used."""
        parent = key.rpartition("/")[0]
        try:
            if parent not in self.codecs:  # the array's folder: the parent, or above it ('/' dimension separator)
                folder = parent
                while folder and not (self.path / folder / ".zarray").is_file():
                    folder = folder.rpartition("/")[0]
                self.codecs[parent] = _codecs(json.loads((self.path / folder / ".zarray").read_bytes()))
            why = _undecodable(self.codecs[parent], data)
        except Exception as err:  # noqa: BLE001 - a damaged .zarray: its codecs are unknown
            why = " ".join(str(err).split()) or type(err).__name__
        if why is not None:
            raise self.fail(f"{_describe(key)} cannot be decoded ({why})")

    def unreadable(self, key: str, err: OSError) -> InputError:
        return InputError(f"{self.what} {self.path}: {_describe(key)} cannot be read ({err.strerror}); {self.hint}")


_STORE_CLASS = None


def _store_class():
    """A read-only zarr ``LocalStore`` that checks every file it reads against the manifest (made once)."""
    global _STORE_CLASS
    if _STORE_CLASS is not None:
        return _STORE_CLASS
    from zarr.storage import LocalStore

    class _VerifiedStore(LocalStore):
        def __init__(self, root, *, read_only: bool = True, checks: _Checks | None = None) -> None:
            super().__init__(root, read_only=True)
            self.checks = checks

        def with_read_only(self, read_only: bool = False):
            return self

        async def get(self, key, prototype=None, byte_range=None):
            try:
                buf = await super().get(key, prototype, byte_range)
            except OSError as err:
                raise self.checks.unreadable(key, err) from None
            self.checks.check(key, buf, byte_range)
            return buf

        def get_sync(self, key, *, prototype=None, byte_range=None):
            try:
                buf = super().get_sync(key, prototype=prototype, byte_range=byte_range)
            except OSError as err:
                raise self.checks.unreadable(key, err) from None
            self.checks.check(key, buf, byte_range)
            return buf

        async def get_partial_values(self, prototype, key_ranges):
            key_ranges = list(key_ranges)
            out = await super().get_partial_values(prototype, key_ranges)
            for (key, byte_range), buf in zip(key_ranges, out, strict=True):
                self.checks.check(key, buf, byte_range)
            return out

    _VerifiedStore.__module__ = __name__
    _VerifiedStore.__qualname__ = "_VerifiedStore"
    _STORE_CLASS = _VerifiedStore
    return _VerifiedStore


def __getattr__(name: str):  # unpickling a verified store finds its class here
    if name == "_VerifiedStore":
        return _store_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _verified_store(path: Path, entries: dict[str, list], what: str, hint: str):
    return _store_class()(path, checks=_Checks(path, entries, what, hint))


def open_zarr_group(path: str | Path, what: str = "store", hint: str = REBUILD):
    """Verify a finished zarr store (:func:`verify_store`) and open its root group read-only, reads checked."""
    import zarr

    path = Path(path)
    entries = verify_store(path, what=what, hint=hint)
    try:
        return zarr.open_group(_verified_store(path, entries, what, hint), mode="r", zarr_format=2,
                               use_consolidated=True)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - zarr raises many types for foreign layouts
        raise InputError(f"{what} {path} is not a readable zarr store ({type(err).__name__}); {hint}") from None


def open_zarr_dataset(path: str | Path, what: str = "store", hint: str = REBUILD) -> xr.Dataset:
    """Verify a finished zarr store (:func:`verify_store`) and open it as a lazy ``xarray.Dataset``.

    Every chunk read later is checked against the manifest (size and CRC-32), so damage
    found while reading is the same one-line :class:`~xai_loc.errors.InputError`.
    """
    import xarray as xr

    path = Path(path)
    entries = verify_store(path, what=what, hint=hint)
    try:
        return xr.open_zarr(_verified_store(path, entries, what, hint), consolidated=True)
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - zarr raises many types for foreign layouts
        raise InputError(f"{what} {path} is not a readable zarr store ({type(err).__name__}); {hint}") from None


def settle_reads(timeout: float = 10.0) -> None:
    """Let the reads still in flight on zarr's IO loop finish (at most ``timeout`` seconds).

    A damaged chunk raises its :class:`~xai_loc.errors.InputError` from one read of a batch
    while zarr's other reads of it are pending; exiting then makes the interpreter close the
    loop under them, and zarr prints screens of "Task was destroyed but it is pending!" and
    "Event loop is closed" tracebacks after the one-line error. The CLI calls this before it
    exits with an error. Nothing happens where zarr has not started its loop.
    """
    import asyncio

    sync = sys.modules.get("zarr.core.sync")
    loop = getattr(sync, "loop", [None])[0]
    if loop is None or loop.is_closed() or not loop.is_running():
        return

    async def drain() -> None:
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if others:
            await asyncio.wait(others, timeout=timeout)

    with contextlib.suppress(Exception):  # best effort: the error being reported matters more
        asyncio.run_coroutine_threadsafe(drain(), loop).result(timeout + 1)


def final_store_exists(final: str | Path) -> bool:
    """Whether something stands under a store's final name, for a writer holding its lock.

    An empty folder there is no store and holds nothing: it is removed (and the store
    written). Beside a finished store, a progress file left by a run killed between the
    rename and its removal is removed.
    """
    final = Path(final)
    if final.is_dir() and not final.is_symlink():
        try:
            final.rmdir()
            return False
        except OSError:  # not empty: a store, whole or not
            pass
    exists = final.exists() or final.is_symlink()
    if exists:
        partial_paths(final)[1].unlink(missing_ok=True)
    return exists


def open_netcdf_store(path: str | Path, what: str = "store", hint: str = REBUILD, load: bool = True,
                      required: Mapping[str, tuple[str, ...]] | None = None,
                      optional: Mapping[str, tuple[str, ...]] | None = None) -> xr.Dataset:
    """Open a single-file (netCDF) store or result, in memory (``load``) or lazily; one line if it is damaged.

    These files are written whole by an atomic rename, so damage comes from outside: a
    truncated or overwritten file fails here (HDF5 checks its own structure on open), and so
    does a changed number (Fletcher-32, when it is read) or label, scalar or attribute
    (:func:`~xai_loc.io.netcdf_digest`), as an :class:`~xai_loc.errors.InputError` naming the
    file and ``hint``; so does one that lacks a ``required`` variable (name -> its dimensions), or holds one of
    ``required`` or ``optional`` with other dimensions (in any order: readers select by name) — a file another tool
    wrote, whose checksum is valid.
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {str(path)!r} does not exist")
    if not path.is_file():
        raise InputError(f"{what} {path} is not a file; {hint}")
    try:
        intact = netcdf_digest_matches(path)  # None: written before the digest
        if intact is False:
            raise InputError(f"{what} {path} is damaged (its labels, scalars or attributes do not match their "
                             f"checksum); {hint}")
        if load:
            with xr.open_dataset(path, engine="h5netcdf") as ds:
                out = ds.load()
        else:
            out = xr.open_dataset(path, engine="h5netcdf")
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - h5py and xarray raise many types for damaged files
        raise InputError(f"{what} {path} is damaged or not netCDF ({type(err).__name__}); {hint}") from None
    problem = _unexpected(out, required or {}, optional or {})
    if problem:
        out.close()
        raise InputError(f"{what} {path} is not what it should be ({problem}); {hint}")
    return out


def _unexpected(ds: xr.Dataset, required: Mapping[str, tuple[str, ...]],
                optional: Mapping[str, tuple[str, ...]]) -> str | None:
    """What of ``required`` (variable -> its dimensions, in any order) ``ds`` lacks, in a few words (a variable
    first, then the dimensions of a variable of ``required`` or, where ``ds`` holds it, of ``optional``); None if
    nothing."""
    missing = [name for name in required if name not in ds]
    if missing:
        return f"it has no {missing[0]!r}"
    for name, dims in {**required, **{k: v for k, v in optional.items() if k in ds.variables}}.items():
        if set(ds[name].dims) != set(dims):
            return f"its {name!r} has dims ({', '.join(map(str, ds[name].dims))}), expected ({', '.join(dims)})"
    return None


def value_flags(values) -> tuple[Any, Any]:
    """Per item (along axis 0) of a NumPy array or torch tensor: ``(holds NaN or infinity, all zero)``,
    computed where the values are (a tensor's flags stay on its device until :func:`check_flags` reads them)."""
    flat = values.reshape(len(values), -1)
    if isinstance(values, np.ndarray):
        return ~np.isfinite(flat).all(axis=1), ~flat.any(axis=1)
    return ~flat.isfinite().all(dim=1), ~flat.any(dim=1)


def check_flags(bad, silent, store: str | Path, first: int, item: str = "window", zeros: bool = False,
                what: str = "values", hint: str = "") -> None:
    """Refuse items flagged by :func:`value_flags`: NaN or infinite values, or (unless ``zeros``) only zeros.

    ``first`` is the index of the first flag's item in the store; the message names the store, the
    first bad item and ``hint``.
    """
    bad, silent = (np.asarray(f.cpu() if hasattr(f, "cpu") else f) for f in (bad, silent))  # tensors: one copy
    tail = f"; {hint}" if hint else ""
    if bad.any():
        raise InputError(f"{store}: {item} {first + int(np.argmax(bad))} came out with NaN or infinite {what}; "
                         f"nothing was stored{tail}")
    if not zeros and silent.any():
        raise InputError(f"{store}: {item} {first + int(np.argmax(silent))} came out all zero (silent); "
                         f"nothing was stored{tail}")


def check_values(values: np.ndarray, store: str | Path, first: int, item: str = "window",
                 zeros: bool = False, what: str = "values", hint: str = "") -> None:
    """Refuse to store items (along axis 0) holding NaN or infinite values, or (unless ``zeros``) only zeros
    (:func:`check_flags` of :func:`value_flags`)."""
    check_flags(*value_flags(np.asarray(values)), store, first, item=item, zeros=zeros, what=what, hint=hint)
