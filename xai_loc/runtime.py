"""Run-time settings shared by the CLI and scripts: threads, devices, TF32 and deterministic kernels, provenance."""
from __future__ import annotations

import contextlib
import os
import platform
import re
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from xai_loc.errors import InputError

if TYPE_CHECKING:
    import torch

THREADS_ENV = "XAI_LOC_THREADS"
#: Upper bound of the thread count (torch crashes when asked for tens of thousands).
MAX_THREADS = 256
_INTEGER = re.compile(r"[+-]?[0-9]+")


def parse_int(text: str) -> int:
    """An integer written as ASCII digits with an optional sign (surrounding spaces allowed).

    Raises ``ValueError`` for anything else: unlike :func:`int`, underscores (``1_6``) and other
    scripts' digits are refused. Every integer option, ``listen``'s lists and ``XAI_LOC_THREADS`` are read
    with it (``--option`` values are the methods' own).
    """
    if not _INTEGER.fullmatch(text.strip()):
        raise ValueError(f"{text!r} is not an integer")
    return int(text)


#: A decimal number as the command line takes it: ASCII digits with an optional sign, point and exponent, or nan/inf
#: (then refused by each check, naming its range).
_NUMBER = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:e[+-]?[0-9]+)?|nan|inf|infinity)",
                     re.ASCII | re.IGNORECASE)


def parse_number(text: str) -> float:
    """A number written as :data:`_NUMBER` (surrounding spaces allowed), as a float.

    Raises ``ValueError`` for anything else: unlike :func:`float`, underscores (``1_0``) and other scripts'
    digits are refused, as :func:`parse_int` refuses them in integers.
    """
    if not _NUMBER.fullmatch(text.strip()):
        raise ValueError(f"{text!r} is not a number")
    return float(text)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count.

    Parameters
    ----------
    threads
        Number of threads; ``None`` reads ``XAI_LOC_THREADS`` and otherwise keeps torch's
        default. On small shared machines one thread is often fastest.

    Returns
    -------
    int
        The thread count in force.
    """
    import torch

    from xai_loc.checks import check_integer

    name = "threads"
    if threads is None and os.environ.get(THREADS_ENV):
        raw, name = os.environ[THREADS_ENV], THREADS_ENV
        try:
            threads = parse_int(raw)
        except ValueError:
            raise InputError(f"{THREADS_ENV}={raw!r} is not an integer; use an integer in [1, {MAX_THREADS}]") from None
    if threads is not None:
        torch.set_num_threads(check_integer(name, threads, minimum=1, maximum=MAX_THREADS))
    return torch.get_num_threads()


#: glibc ``mallopt`` parameters (malloc.h) and the defaults that :func:`keep_freed_memory` restores: glibc's as
#: they stand once a process has freed large blocks (its dynamic mmap threshold stops at 32 MiB, the trim
#: threshold at twice that).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_GLIBC_DEFAULTS = {_M_MMAP_THRESHOLD: 32 << 20, _M_TRIM_THRESHOLD: 64 << 20, _M_MMAP_MAX: 65536}
_KEEP = {_M_MMAP_MAX: 0, _M_TRIM_THRESHOLD: 2**31 - 1}  # a C int: trim only a free top past 2 GiB
KEEP_MEMORY_ENV = "XAI_LOC_KEEP_MEMORY"


def keep_freed_memory(enabled: bool | None = None) -> bool:
    """Serve large CPU buffers from memory the process has freed before, not from fresh pages (glibc only).

    glibc gives every allocation above 32 MiB pages of its own (``mmap``) and hands them back to
    the kernel when it is freed, so each batch allocates its activations anew and the kernel
    faults in and zeroes every page again (LocCNN's first layer alone is 197 MB at batch 100).
    Keeping freed memory for reuse (``mallopt``: no ``mmap`` for blocks, no trimming) removes
    that work: ``benchmarks/bench_allocator.py`` measures training steps and forward passes
    faster by the ratios README gives, with the same numbers. The cost: the process holds its
    peak memory until it exits. No library does this for us (jemalloc or tcmalloc would, through
    ``LD_PRELOAD`` before the interpreter starts, which a command or a notebook cannot do).

    Parameters
    ----------
    enabled
        True keeps freed memory, False restores glibc's defaults and hands the kept memory back;
        None reads ``XAI_LOC_KEEP_MEMORY`` (``1``, the default when unset or empty, or ``0``).

    Returns
    -------
    bool
        Whether freed memory is now kept (False where the C library is not glibc).
    """
    if enabled is None:
        raw = (os.environ.get(KEEP_MEMORY_ENV) or "1").strip()
        if raw not in ("0", "1"):
            raise InputError(f"{KEEP_MEMORY_ENV}={raw!r} is not allowed; use 1 (keep freed memory) or 0 (glibc's "
                             "defaults)")
        enabled = raw == "1"
    if platform.libc_ver()[0] != "glibc":
        return False
    import ctypes

    libc = ctypes.CDLL(None)  # the interpreter's own C library
    for param, value in (_KEEP if enabled else _GLIBC_DEFAULTS).items():
        if not libc.mallopt(param, value):
            raise OSError(f"mallopt({param}, {value}) failed")
    if not enabled:
        libc.malloc_trim(0)  # hand back what was kept
    return enabled


def configure_cpu(threads: int | None = None) -> int:
    """Set up a command's or script's process for CPU work: torch's threads (:func:`configure_threads`) and
    freed memory kept for reuse (:func:`keep_freed_memory`, unless ``XAI_LOC_KEEP_MEMORY=0``).

    Returns
    -------
    int
        The thread count in force.
    """
    threads = configure_threads(threads)
    keep_freed_memory()
    return threads


#: A CUDA device as torch spells it: ``cuda`` or ``cuda:N``, ``N`` ASCII digits without leading zeros.
CUDA_NAME = re.compile(r"cuda(?::(0|[1-9][0-9]*))?")


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """Return a ``torch.device`` for ``'cpu'``, ``'cuda'`` or ``'cuda:N'`` (or such a ``torch.device``), checking
    availability in this process, also where a dask cluster does the work (``--scheduler``): the calling process
    uses the device too (explain and the experiments build and run the models there).

    ``N`` is written as torch takes it: ASCII digits without leading zeros (``'cuda:²'`` or ``'cuda:01'``
    are refused in one line, as any other unknown device or a value that is no device name).
    """
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise InputError(f"device={device!r} is not allowed; use cpu, cuda or cuda:N")
    if device == "cpu":
        return torch.device("cpu")
    match = CUDA_NAME.fullmatch(device)
    if match:
        if not torch.cuda.is_available():
            # with a dask cluster too: the models are built and some of the work runs here (--scheduler's help)
            raise InputError(f"device {device!r} requested but CUDA is not available to this process; use 'cpu'")
        if match[1] is not None and int(match[1]) >= torch.cuda.device_count():
            raise InputError(f"device {device!r} does not exist; this machine has cuda:0 to "
                             f"cuda:{torch.cuda.device_count() - 1}")
        return torch.device(device)
    raise InputError(f"unknown device {device!r}; allowed: cpu, cuda, cuda:N")


def input_dtype(model, default):
    """The dtype ``model`` (a ``torch.nn.Module``) takes its inputs in: its first parameter's if that is a
    float, else ``default``."""
    first = next(model.parameters(), None)
    return default if first is None or not first.is_floating_point() else first.dtype


def model_device(model, default):
    """Where ``model`` (a ``torch.nn.Module``) computes: its first parameter's or buffer's device, else
    ``default``."""
    import itertools

    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return default if first is None else first.device


def device_name(device, *, index: bool = True) -> str:
    """``'cpu'`` or ``'cuda:0 (<GPU name>)'`` (``'cuda (<GPU name>)'`` without ``index``) for cards and stores;
    the bare device where this process sees no such GPU."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return str(device) if index else device.type
    return f"{device if index else 'cuda'} ({torch.cuda.get_device_name(device)})"


class _SharedSetting:
    """One process-wide torch setting that blocks of any threads hold, overlapping: the first block in reads it
    and puts ``held(setting)`` in force, the last one out puts back what the first read (where that differs)."""

    def __init__(self, read: Callable[[], Any], write: Callable[[Any], None], held: Callable[[Any], Any]) -> None:
        self.read, self.write, self.held = read, write, held
        self.lock = threading.Lock()
        self.users = 0
        self.saved: Any = None  # what the last block out puts back (None: nothing)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self.lock:
            if not self.users:
                before = self.read()
                wanted = self.held(before)
                self.saved = None if wanted == before else before
                if self.saved is not None:
                    self.write(wanted)
            self.users += 1
        try:
            yield
        finally:
            with self.lock:
                self.users -= 1
                if not self.users and self.saved is not None:
                    self.write(self.saved)

    def settle(self, value: Any) -> None:
        """Put ``value`` in force for good: now, and as what the last open block puts back."""
        with self.lock:
            self.write(value)
            if self.users:
                self.saved = value


def _read_tf32() -> tuple[bool, bool]:
    import torch

    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def _write_tf32(flags: tuple[bool, bool]) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def _read_deterministic() -> tuple[bool, bool]:
    import torch

    return torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()


def _write_deterministic(mode: tuple[bool, bool]) -> None:
    import torch

    torch.use_deterministic_algorithms(mode[0], warn_only=mode[1])


#: TF32 of matrix products and cuDNN convolutions (allowed, allowed): off while held.
_TF32 = _SharedSetting(_read_tf32, _write_tf32, lambda flags: (False, False))
#: torch's deterministic mode (on, warn only): on, warning only, while held, unless it is on already.
_DETERMINISTIC = _SharedSetting(_read_deterministic, _write_deterministic,
                                lambda mode: mode if mode[0] else (True, True))


def full_float32(device: str) -> None:
    """Turn TF32 off process-wide when ``device`` is a CUDA device (``cuda``, ``cuda:N``); else do nothing.

    Matrix products and cuDNN convolutions then keep float32's 23-bit mantissa instead of
    TF32's 10 bits (cuDNN's default on Ampere and later GPUs), so that a run on the GPU matches
    the CPU's within the documented tolerances. Setting the flags again changes nothing, and
    the end of an open :func:`no_tf32` block does not turn TF32 back on.
    """
    import torch

    if torch.device(device).type == "cuda":
        _TF32.settle((False, False))


def no_tf32() -> contextlib.AbstractContextManager[None]:
    """Full float32 matrix products and convolutions inside the block (TF32 off), restored afterwards.

    The simulators' products must not be rounded to TF32's 10-bit mantissa on Ampere and later GPUs.
    Blocks rendered at once in threads share torch's flags: they stay off until the last block ends.
    """
    return _TF32.hold()


def deterministic_algorithms() -> contextlib.AbstractContextManager[None]:
    """torch's deterministic kernels inside the block (``warn_only``: an operation without one warns).

    The mode is global to the process, so every thread sees it while any block of any thread
    is inside; blocks of several threads may overlap. The first to enter switches it on unless
    it is on already, and the last to leave switches it off again if the first switched it on.
    """
    return _DETERMINISTIC.hold()


def software_versions() -> dict[str, str]:
    """Versions of xai-loc and its main dependencies, for provenance attrs and cards."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("xai-loc", "torch", "numpy", "scipy", "xarray", "zarr", "zennit", "captum",
                 "pyroomacoustics", "safetensors"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out
