"""Validated option types of the command line: one check per kind of value, one line per bad value.

Each type raises :class:`~xai_loc.errors.InputError` naming the option (or environment
variable), the value and what is allowed; the CLI prints it in one line with exit code 2.
Paths are checked before any work starts, so a read-only file system or a path below a file
ends before anything is written. Only light imports here (``xai-loc --help`` stays fast).
"""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import click

from xai_loc.checks import MAX_BATCH
from xai_loc.errors import InputError
from xai_loc.runtime import parse_int, parse_number

__all__ = ["MAX_BATCH", "SEED", "SNR", "T60", "Device", "InputDir", "InputFile", "Int", "Number", "OutDir", "OutFile",
           "check_out_dir", "check_outside_stores", "data_root_default", "naming", "option_name", "parse_number"]

def option_name(param: click.Parameter | None, ctx: click.Context | None, value: Any = None) -> str:
    """How the user gave ``value``: ``--out``, ``XAI_LOC_DATA``, or every alias (``--data/--out``: click does
    not tell which one was typed).

    Newer click records where a value came from only after converting it: while converting, a value
    equal to the option's environment variable is named by the variable."""
    if param is None:
        return "value"
    if ctx is not None and param.name and isinstance(param.envvar, str):
        source = ctx.get_parameter_source(param.name)
        if source == click.core.ParameterSource.ENVIRONMENT or (
                source is None and value is not None and os.environ.get(param.envvar) == str(value)):
            return param.envvar
    return "/".join(param.opts) if param.opts else str(param.name)


@contextlib.contextmanager
def naming(what: str):
    """Put the option ``what`` (e.g. ``--t60``) before the one-line error of a library check in the block."""
    try:
        yield
    except InputError as err:
        raise InputError(f"{what}: {err}") from None


def check_out_dir(path: str | os.PathLike, what: str) -> Path:
    """Check that folder ``path`` exists or can be created and written, without creating it (an empty
    folder is made and removed in its nearest existing ancestor, whose modification time changes)."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            raise InputError(f"{what} {str(path)!r} is not allowed: {str(probe)!r} is a broken link")
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{what} {str(path)!r} is not allowed: {str(probe)!r} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{what} {str(path)!r} is not writable: {str(probe)!r} is read-only; choose another folder")
    # permission bits do not tell everything (root passes os.access; /proc or a full or special file system
    # refuses new entries): make and remove an empty folder there
    try:
        made = tempfile.mkdtemp(prefix=".xai-loc-probe-", dir=probe)
    except OSError as err:
        raise InputError(f"{what} {str(path)!r} is not writable: nothing can be created in {str(probe)!r} "
                         f"({err.strerror}); choose another folder") from None
    with contextlib.suppress(OSError):  # an append-only folder keeps it: nothing else can be done
        os.rmdir(made)
    return path


#: Folders of stores (zarr stores, relevance folders, stores being written): no place for a command's other output.
STORE_SUFFIXES = (".zarr", ".relevance", ".partial")
#: The folder of relevance stores (``<split>.relevance``), where a relevance store (:class:`StoreOut`) belongs.
RELEVANCE_SUFFIX = ".relevance"


def check_outside_stores(folder: str | os.PathLike, what: str, value: Any) -> None:
    """Refuse ``value`` of option ``what`` in one line where ``folder`` (where it writes) is at or below a store's
    folder (:data:`STORE_SUFFIXES`, where links lead)."""
    resolved = Path(folder).resolve()
    store = next((p for p in (resolved, *resolved.parents) if p.name.endswith(STORE_SUFFIXES)), None)
    if store is not None:
        raise InputError(f"{what} {str(value)!r} is not allowed: it is inside the store folder {str(store)!r}; "
                         f"choose a path outside any {', '.join(f'*{s}' for s in STORE_SUFFIXES)} folder")


class OutDir(click.ParamType):
    """A folder to write into: a path given (not empty), it exists as a writable folder or can be created, and is
    not at or below a store's folder (:func:`check_outside_stores`)."""

    name = "folder"

    def convert(self, value, param, ctx):
        what = option_name(param, ctx, value)
        if str(value) == "":  # it would name the current folder unseen
            raise InputError(f"{what} '' is not allowed; give a folder path ('.' for the current folder)")
        check_outside_stores(value, what, value)
        return str(check_out_dir(value, what))


class DataRoot(OutDir):
    """A data root that stores are read from and, where absent, written to: an existing folder needs no write
    access (finished stores are read without it; one that must be written is refused by the store in one line,
    before any work), a new one must be creatable; never empty, nor at or below a store's folder."""

    def convert(self, value, param, ctx):
        if str(value) == "" or not Path(value).resolve().is_dir():
            return super().convert(value, param, ctx)
        check_outside_stores(value, option_name(param, ctx, value), value)
        return str(value)


class OutFile(click.ParamType):
    """A file to write: a name given (not empty), not an existing folder, its folder writable or creatable, its
    name ending in ``suffix`` where one is given (checked before any work, e.g. a checkpoint's ``.safetensors``)."""

    name = "file"

    def __init__(self, suffix: str | None = None):
        self.suffix = suffix

    def convert(self, value, param, ctx):
        what = option_name(param, ctx, value)
        if str(value) == "":  # it would name the current folder
            raise InputError(f"{what} '' is not allowed; give a file name")
        path = Path(value)
        if self.suffix is not None and path.suffix != self.suffix:
            raise InputError(f"{what} {str(path)!r} is not allowed; use a file name ending in {self.suffix}")
        if path.is_dir():
            raise InputError(f"{what} {str(path)!r} is a folder; give a file name")
        check_outside_stores(path.parent, what, value)
        check_out_dir(path.parent, what + " folder")
        return str(path)


class StoreOut(click.ParamType):
    """A zarr store to write: a named path that is new, an empty folder, or a store already (resumed or
    checked); never an unrelated folder of the user's, which the store's failure handling could remove."""

    name = "store"

    def convert(self, value, param, ctx):
        what = option_name(param, ctx, value)
        path = Path(value)
        if path.name in ("", ".", ".."):
            raise InputError(f"{what} {str(value)!r} is not allowed; name a new store, e.g. relevance.zarr")
        if path.is_file() or (path.is_dir() and any(path.iterdir()) and not any(
                (path / marker).exists() for marker in ("zarr.json", ".zgroup"))):
            raise InputError(f"{what} {str(path)!r} exists and is not a zarr store; choose a new path, e.g. "
                             f"{str((path.parent if path.is_file() else path) / 'relevance.zarr')!r}")
        folder = path.resolve().parent
        check_outside_stores(folder.parent if folder.name.endswith(RELEVANCE_SUFFIX) else folder, what, value)
        check_out_dir(path.parent, what + " folder")
        return str(path)


class _Existing(click.ParamType):
    """An existing, readable file or folder, named (an empty path is refused, never read as the current folder)."""

    def __init__(self, folder: bool):
        self.folder = folder
        self.name = "folder" if folder else "file"

    def convert(self, value, param, ctx):
        what = option_name(param, ctx, value)
        if str(value) == "":  # it would name the current folder unseen
            here = " ('.' for the current folder)" if self.folder else ""
            raise InputError(f"{what} '' is not allowed; give a {self.name} path{here}")
        path = Path(value)
        if not path.exists():
            raise InputError(f"{what} {str(path)!r} does not exist")
        if path.is_dir() != self.folder:
            raise InputError(f"{what} {str(path)!r} is not a {self.name}")
        if not os.access(path, os.R_OK | (os.X_OK if self.folder else 0)):
            raise InputError(f"{what} {str(path)!r} is not readable")
        return str(path)


def InputFile() -> click.ParamType:  # noqa: N802 - reads like the other types
    """An existing, readable file."""
    return _Existing(folder=False)


def InputDir() -> click.ParamType:  # noqa: N802 - reads like the other types
    """An existing, readable folder."""
    return _Existing(folder=True)


class Int(click.ParamType):
    """An integer in ``[low, high]`` (either bound optional)."""

    name = "integer"

    def __init__(self, low: int | None = None, high: int | None = None):
        self.low, self.high = low, high

    def _allowed(self) -> str:
        if self.high is None:
            return f"an integer >= {self.low}"
        return f"an integer in [{self.low}, {self.high}]" if self.low is not None else f"an integer <= {self.high}"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = parse_int(str(value))
            except ValueError:
                raise InputError(f"{option_name(param, ctx, value)} {value!r} is not an integer; "
                                 f"use {self._allowed()}") from None
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            raise InputError(f"{option_name(param, ctx, value)} {number} is not allowed; use {self._allowed()}")
        return number


class Number(click.ParamType):
    """A finite number in a range; ``open_low``/``open_high`` exclude a bound (e.g. a positive rate)."""

    name = "number"

    def __init__(self, low: float | None = None, high: float | None = None, open_low: bool = False,
                 open_high: bool = False):
        self.low, self.high, self.open_low, self.open_high = low, high, open_low, open_high

    def _allowed(self) -> str:
        low = "" if self.low is None else f"{'>' if self.open_low else '>='} {self.low:g}"
        high = "" if self.high is None else f"{'<' if self.open_high else '<='} {self.high:g}"
        return "a finite number " + " and ".join(b for b in (low, high) if b) if (low or high) else "a finite number"

    def convert(self, value, param, ctx):
        try:
            number = parse_number(str(value))
        except ValueError:
            raise InputError(f"{option_name(param, ctx, value)} {value!r} is not a number; "
                             f"use {self._allowed()}") from None
        low_bad = self.low is not None and (number <= self.low if self.open_low else number < self.low)
        high_bad = self.high is not None and (number >= self.high if self.open_high else number > self.high)
        if not math.isfinite(number) or low_bad or high_bad:
            raise InputError(f"{option_name(param, ctx, value)} {value} is not allowed; use {self._allowed()}")
        return number


class Device(click.ParamType):
    """``cpu``, ``cuda`` or ``cuda:N``, checked against the machine before any work starts."""

    name = "device"

    def convert(self, value, param, ctx):
        from xai_loc.runtime import resolve_device

        resolve_device(str(value))
        return str(value)


class _Checked(click.ParamType):
    """A number checked by a library function (imported on use, so ``--help`` stays fast): read as
    :func:`parse_number` reads it; text that is no number goes to the check as it is, which refuses it."""

    name = "number"

    def __init__(self, module: str, function: str):
        self.module, self.function = module, function

    def convert(self, value, param, ctx):
        import importlib

        what = option_name(param, ctx, value)
        with contextlib.suppress(ValueError):
            value = parse_number(str(value))
        with naming(what):
            return getattr(importlib.import_module(self.module), self.function)(value)


#: Reverberation time (s) and SNR (dB), checked as the simulator checks them.
T60 = _Checked("xai_loc.acoustics.room", "check_t60")
SNR = _Checked("xai_loc.acoustics.room", "check_snr")

#: Seeds: numpy's generators take non-negative integers; torch's take 64 bits.
SEED = Int(0, 2**63 - 1)


def results_root_default() -> str:
    """The results root of every default ``--out``: ``$XAI_LOC_RESULTS`` (unset or empty: ``./xai-loc-results``)."""
    return os.environ.get("XAI_LOC_RESULTS") or "xai-loc-results"


def data_root_default() -> str:
    """The data root when ``--data`` is not given: ``$XAI_LOC_DATA`` (unset or empty: ``./xai-loc-data``)."""
    return os.environ.get("XAI_LOC_DATA") or "xai-loc-data"
