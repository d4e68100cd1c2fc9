"""Small file helpers: atomic writes (write aside, then rename), progress files and writer locks of resumable stores."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xai_loc.errors import InputError, WorkLost


def umask() -> int:
    """The process umask: from /proc on Linux, else by setting and restoring it (the standard library has no getter)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status", encoding="utf-8") as status:
            return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: Characters ``tempfile.mkstemp`` puts between its prefix and suffix.
_RANDOM_CHARS = 8


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first, as :func:`_missing_folders` lists them) where they are empty; a folder
    that holds anything (another process's files) stays."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _name_max(folder: Path) -> int:
    """The longest file name, in bytes, that the file system of ``folder`` (of its nearest existing parent where
    it does not exist yet) takes; 255 where unknown."""
    while not os.path.exists(folder) and folder != folder.parent:
        folder = folder.parent
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no such limit
        return 255
    return limit if limit > 0 else 255


def _temp_affixes(name: str, suffix: str, name_max: int) -> tuple[str, str]:
    """Prefix and suffix of the temporary file of ``name``: ``.<name>.`` and ``.tmp<suffix>``, the name cut
    (and, were it alone too long, the suffix dropped) so that the temporary name fits ``name_max`` bytes."""
    tail = ".tmp" + suffix
    if len(os.fsencode(tail)) + _RANDOM_CHARS + 2 > name_max:
        tail = ".tmp"
    room = name_max - len(os.fsencode(tail)) - _RANDOM_CHARS - 2
    while name and len(os.fsencode(name)) > room:
        name = name[:-1]
    return f".{name}.", tail


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success give it its mode and rename it to ``path``.

    The mode is that of the file being replaced, else the one a plain ``open(path, "w")`` gives a
    new file (0666 minus the umask; ``tempfile.mkstemp`` would leave 0600). The temporary file is
    ``.<name>.<8 random characters>.tmp<suffix>``, with ``<name>`` shortened where that would pass the file
    system's limit, so any name the file system takes works. On any error the temporary file and
    the folders created for ``path`` are removed and ``path`` is left as it was; an ``OSError`` that names no
    file (a full disk during a write) is given ``path`` as its filename. A ``path`` that is a folder, whose name
    is too long, or whose parent cannot be created or written is reported in one line
    (:class:`~xai_loc.errors.InputError`).
    """
    path = check_file_path(path)
    created = _missing_folders(path.parent)
    prefix, suffix = _temp_affixes(path.name, path.suffix, _name_max(path.parent))
    tmp = None
    try:
        ensure_writable_dir(path.parent, what=f"the folder of {path.name}")
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
        os.close(fd)
        yield tmp
        replace_keeping_mode(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        _remove_empty(created)
        if isinstance(err, OSError) and err.filename is None:
            err.filename = str(path)
        raise


def replace_keeping_mode(tmp: str | Path, path: str | Path) -> Path:
    """Rename the finished file ``tmp`` to ``path``, durably, giving it the mode of the file it replaces (a new
    file: 0666 minus the umask, as a plain ``open(path, "w")`` gives)."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:  # a new file
        mode = 0o666 & ~umask()
    os.chmod(tmp, mode)
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)
    return path


def check_file_path(path: str | Path) -> Path:
    """``path`` as a ``Path``; one line (:class:`~xai_loc.errors.InputError`) where it is a folder, which a file
    written there cannot replace, or where its name is longer than the file system allows."""
    path = Path(path)
    name_max, size = _name_max(path.parent), len(os.fsencode(path.name))
    if size > name_max:
        raise InputError(f"cannot write the file {str(path)!r}: its name is {size} bytes long; this file system "
                         f"allows at most {name_max}")
    if path.is_dir():
        raise InputError(f"cannot write the file {str(path)!r}: it is a folder; remove it or choose another path")
    return path


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk, so that a rename or a progress record
    made after it never points at data a power loss would take back."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # a file system without fsync on folders (some network mounts): nothing more to do
        pass
    finally:
        os.close(fd)


def ensure_writable_dir(folder: str | Path, what: str = "output folder") -> Path:
    """Create ``folder`` (with parents) or fail in one line if it cannot be created or written.

    Checked before any work starts, so that a read-only file system, a path below a file or a
    folder without write permission ends in one line instead of a traceback or a half-done run.
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.is_symlink():
            raise InputError(f"{what} {str(folder)!r} is below a broken link {str(probe)!r}")
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{what} {str(folder)!r} is not allowed: {str(probe)!r} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{what} {str(folder)!r} is not writable ({str(probe)!r} is read-only); choose another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{what} {str(folder)!r} cannot be created: {err.strerror}") from None
    return folder


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`): a full disk is a plain ``OSError`` naming
    ``path``, and ``path`` stays as it was."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`), UTF-8 encoded whatever the locale (a page
    that declares UTF-8, a table with a dash)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)


#: Root attribute of a netCDF result: :func:`netcdf_digest` of what Fletcher-32 does not cover.
NETCDF_DIGEST = "xai_loc_sha256"


def _plain(value):
    """JSON-able form of an attribute or value as netCDF gives it back (arrays as lists, NumPy scalars as numbers)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _digest_of(f) -> str:
    """:func:`netcdf_digest` of an open ``h5netcdf.File``."""
    import hashlib

    parts = {"dimensions": {name: dim.size for name, dim in f.dimensions.items()},
             "attrs": _plain({k: v for k, v in f.attrs.items() if k != NETCDF_DIGEST}), "variables": {}}
    for name, var in sorted(f.variables.items()):
        entry = {"dims": list(var.dimensions), "dtype": str(var.dtype), "shape": list(var.shape),
                 "attrs": _plain(dict(var.attrs))}
        if not var.fletcher32:
            entry["values"] = _plain(var[...])
        parts["variables"][name] = entry
    text = json.dumps(parts, sort_keys=True, default=str, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def netcdf_digest(path: str | Path) -> str:
    """SHA-256 of a netCDF file as stored (not as xarray decodes it): its dimensions, every variable's
    dimensions, dtype, shape and attributes (``_FillValue``, ``scale_factor`` ... included), the
    values of each variable without HDF5's Fletcher-32 checksum (strings, scalars), and the root
    attributes but :data:`NETCDF_DIGEST`."""
    import h5netcdf

    with h5netcdf.File(path, "r") as f:
        return _digest_of(f)


def netcdf_digest_matches(path: str | Path) -> bool | None:
    """Whether a netCDF file's :data:`NETCDF_DIGEST` matches its content; None when it has none (older files)."""
    import h5netcdf

    with h5netcdf.File(path, "r") as f:  # one open for the stored digest and the content
        expected = f.attrs.get(NETCDF_DIGEST)
        return None if expected is None else _plain(expected) == _digest_of(f)


def netcdf_bytes(ds) -> bytes:
    """An ``xarray.Dataset`` as the bytes of a netCDF (h5netcdf) file, checksummed.

    Every numeric array is stored with HDF5's Fletcher-32 checksum filter; the rest (strings,
    scalars, dtypes, attributes: HDF5 cannot filter them) is covered by :func:`netcdf_digest`, in
    the root attribute :data:`NETCDF_DIGEST`. A changed number, label or attribute fails when the
    file is read (:func:`xai_loc.data.integrity.open_netcdf_store`) instead of being drawn or
    reported. The file is built in memory, so HDF5 never writes to disk: a full disk fails in the plain file
    write of :func:`write_bytes_atomic`, not in HDF5's close (which leaves h5py unable to clean up).
    """
    import io

    import h5netcdf

    encoding = {name: {"fletcher32": True} for name, var in ds.variables.items()
                if var.ndim and var.dtype.kind in "biufc"}
    buffer = io.BytesIO(ds.to_netcdf(engine="h5netcdf", encoding=encoding))
    with h5netcdf.File(buffer, "a") as f:
        f.attrs[NETCDF_DIGEST] = _digest_of(f)
    return buffer.getvalue()


def write_dataset_atomic(ds, path: str | Path) -> Path:
    """Write an ``xarray.Dataset`` to netCDF atomically (:func:`netcdf_bytes` through :func:`write_bytes_atomic`)."""
    return write_bytes_atomic(path, netcdf_bytes(ds))


def write_files_atomic(files: dict[Path, Callable[[str], None] | str | Any]) -> list[Path]:
    """Write several files as one: each is written to its temporary file (:func:`atomic_path`), and only when all
    are written are they renamed into place, so a failure in any leaves every file (and folder) as it was.

    Parameters
    ----------
    files
        Path -> what goes there: text (``str``, written UTF-8 encoded), an ``xarray.Dataset``
        (:func:`netcdf_bytes`) or a function that writes the temporary path it is given.

    Returns
    -------
    list of pathlib.Path
        The paths, in the order given.
    """
    with contextlib.ExitStack() as stack:
        for path, content in files.items():
            tmp = stack.enter_context(atomic_path(path))
            if isinstance(content, str):
                Path(tmp).write_text(content, encoding="utf-8")
            elif callable(content):
                content(tmp)
            else:
                Path(tmp).write_bytes(netcdf_bytes(content))
    return [Path(path) for path in files]


#: Fixed document metadata, so that the same figure gives the same bytes (PDF and SVG carry
#: a creation date and the software version by default; PNG carries the software name).
_FIGURE_METADATA = {
    ".pdf": {"CreationDate": None, "ModDate": None, "Producer": "xai-loc", "Creator": "xai-loc"},
    ".svg": {"Date": None, "Creator": "xai-loc"},
    ".png": {"Software": "xai-loc"},
}


#: The formats every figure is saved in, and the resolution of its raster one.
FIGURE_SUFFIXES = (".png", ".pdf")
FIGURE_DPI = 150


def figure_files(out_stem: str | Path) -> list[Path]:
    """The files of the figure ``out_stem``: one per :data:`FIGURE_SUFFIXES`, appended (never substituted: a stem
    such as ``perturbation_t60-0.6_snr-10`` keeps its dots)."""
    out_stem = Path(out_stem)
    return [out_stem.with_name(out_stem.name + suffix) for suffix in FIGURE_SUFFIXES]


def save_figure_set(fig, paths, dpi: int = FIGURE_DPI, close: bool = True) -> list[Path]:
    """Render ``fig`` to every path (format from each suffix) and rename them into place together.

    All renderings go to temporary files first, so a failure in any format (a PDF font error, a
    full disk) leaves every path as it was: never a new PNG beside a stale PDF. Fixed metadata (no
    dates) keeps the bytes reproducible. The figure is closed unless ``close=False``.
    """
    import matplotlib
    import matplotlib.pyplot as plt

    paths = [Path(p) for p in paths]
    try:
        # SVG element ids are random unless salted
        with contextlib.ExitStack() as stack, matplotlib.rc_context({"svg.hashsalt": "xai-loc"}):
            for path in paths:
                tmp = stack.enter_context(atomic_path(path))
                fig.savefig(tmp, dpi=dpi, bbox_inches="tight", metadata=_FIGURE_METADATA.get(path.suffix.lower()))
    finally:
        if close:
            plt.close(fig)
    return paths


def save_figure_pair(fig, out_stem: str | Path, dpi: int = FIGURE_DPI) -> list[Path]:
    """Save ``fig`` as :func:`figure_files` of ``out_stem`` (PNG and PDF) together (see :func:`save_figure_set`) and
    close it: the one way every figure of xai-loc is saved."""
    return save_figure_set(fig, figure_files(out_stem), dpi=dpi)


def partial_paths(final: str | Path) -> tuple[Path, Path]:
    """The unfinished store ``<final>.partial`` and its progress file ``<final>.progress.json``."""
    final = Path(final)
    return final.with_name(final.name + ".partial"), final.with_name(final.name + ".progress.json")


def write_progress(path: Path, record: dict) -> None:
    """Write the progress ``record`` of a partial store atomically (a killed run never leaves half a record)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)


def discard_partial(final: str | Path, partial: str | Path | None = None) -> None:
    """Remove the unfinished store of ``final`` (default ``<final>.partial``) and its progress file."""
    default, progress = partial_paths(final)
    partial = default if partial is None else Path(partial)
    if partial.is_dir() and not partial.is_symlink():
        shutil.rmtree(partial, ignore_errors=True)
    elif partial.exists() or partial.is_symlink():
        partial.unlink(missing_ok=True)
    for path in (progress, progress.with_name(progress.name + ".tmp")):
        path.unlink(missing_ok=True)


def _worth_resuming(partial: Path, progress: Path, counted: bool) -> bool:
    """Whether an unfinished store holds any work: a non-empty folder with (where counted) items recorded."""
    if not partial.is_dir() or partial.is_symlink() or not any(partial.iterdir()):
        return False
    if not counted:
        return True
    try:
        record = json.loads(progress.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    values = record.values() if isinstance(record, dict) else ()
    return any(v > 0 if isinstance(v, int) else isinstance(v, list) and bool(v) for v in values)


def _open_locked(path: Path, store: Path):
    """Open ``path`` and hold an exclusive lock on it; retried until the locked file is the one at ``path``.

    A holder removes the lock file before it lets go; a process that waited on the removed
    file would otherwise hold a lock no newcomer sees, so it opens the path again. Where another
    process holds the lock, one line on stderr says so (naming ``store``) before the wait.
    """
    said = False
    while True:
        try:
            handle = open(path, "a+b")
        except FileNotFoundError:  # the folder was removed by a holder that failed; make it again
            path.parent.mkdir(parents=True, exist_ok=True)
            continue
        if os.name == "nt":  # pragma: no cover - POSIX machines run the tests
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
            return handle
        import fcntl

        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not said:
                print(f"waiting for another xai-loc process writing {store} (lock {path})", file=sys.stderr,
                      flush=True)
                said = True
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            same = os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return handle
        handle.close()  # closing lets go of the lock on the removed file


def _unlock(handle) -> None:
    try:
        if os.name == "nt":  # pragma: no cover
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        handle.close()


@contextlib.contextmanager
def store_writer_lock(final: str | Path, partial: str | Path | None = None, counted: bool | None = None):
    """Hold an exclusive lock on ``<final>.lock`` while this process creates the store ``final``.

    A second process that wants the same store (two commands on one data root) waits, saying so
    in one line on stderr, then finds it complete, instead of writing into the same resumable
    ``.partial`` store.

    What is left after the block:

    * the store exists: the lock file is removed (any later process finds the store first);
    * the block failed with an :class:`~xai_loc.errors.InputError` (a user error, which a
      rerun repeats) or before any item was written (progress 0, an empty folder): the
      unfinished store, its progress file, the lock file and the folders this call created
      are removed, so a failed command leaves no new files;
    * the block was interrupted after items were written, or lost its workers
      (:class:`~xai_loc.errors.WorkLost`): the partial store, its progress file and the lock
      file stay, and the next run continues. A lock file left by a process
      that died holds no lock (the kernel releases it); the next run takes it over.

    Parameters
    ----------
    final
        The store's final path.
    partial
        Its unfinished form (default ``<final>.partial``).
    counted
        Whether ``<final>.progress.json`` counts the items written (default: when ``partial``
        is the default); otherwise any non-empty partial folder is worth resuming.
    """
    final = Path(final)
    default, progress = partial_paths(final)
    partial = default if partial is None else Path(partial)
    counted = (partial == default) if counted is None else counted
    created = _missing_folders(final.parent)
    ensure_writable_dir(final.parent, what=f"the folder of {final.name}")
    path = final.with_name(final.name + ".lock")
    handle = _open_locked(path, final)
    try:
        try:
            yield
        except BaseException as err:
            repeats = isinstance(err, InputError) and not isinstance(err, WorkLost)  # a rerun would fail again
            if not final.exists() and (repeats or not _worth_resuming(partial, progress, counted)):
                discard_partial(final, partial)
            raise
    finally:
        try:
            if final.exists() or not (partial.exists() or partial.is_symlink()):
                with contextlib.suppress(OSError):  # Windows keeps an open file
                    path.unlink()
                if not final.exists():
                    _remove_empty(created)
        finally:
            _unlock(handle)
