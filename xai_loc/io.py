"""Small file helpers: atomic writes (write aside, then rename), progress files and writer locks of resumable stores."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def write_dataset_atomic(ds, path: str | Path) -> Path:
    """Write an ``xarray.Dataset`` to netCDF (h5netcdf) through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        ds.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def save_figure_atomic(fig, path: str | Path, dpi: int = 130, close: bool = True) -> Path:
    """Save a matplotlib figure to ``path`` (format from the suffix) atomically; close it unless ``close=False``."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        if close:
            plt.close(fig)
    return path


def read_progress(path: Path, key: str = "windows_written") -> int:
    """Items safely written so far, from the progress file beside a partial store (0 if none)."""
    try:
        return int(json.loads(Path(path).read_text())[key])
    except (FileNotFoundError, KeyError, ValueError):
        return 0


def write_progress(path: Path, n: int, key: str = "windows_written") -> None:
    """Record ``n`` items written, atomically (a killed run never leaves a half-written record)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({key: n}))
    os.replace(tmp, path)


@contextlib.contextmanager
def store_writer_lock(final: str | Path):
    """Hold an exclusive lock on ``<final>.lock`` while this process creates the store ``final``.

    A second process that wants the same store (two commands on one data root) waits, then
    finds it complete, instead of writing into the same resumable ``.partial`` store. The
    lock file is removed once the store exists (any later process then finds the store
    first); after an interrupted run it stays, beside the partial store it guards.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    path = final.with_name(final.name + ".lock")
    with open(path, "a+b") as handle:
        if os.name == "nt":  # pragma: no cover - POSIX machines run the tests
            import msvcrt

            handle.seek(0)
            lock, unlock = (lambda: msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1),
                            lambda: msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1))
        else:
            import fcntl

            lock, unlock = (lambda: fcntl.flock(handle, fcntl.LOCK_EX), lambda: fcntl.flock(handle, fcntl.LOCK_UN))
        lock()
        try:
            yield
            if final.exists():
                with contextlib.suppress(OSError):  # Windows keeps an open file
                    path.unlink()
        finally:
            unlock()
