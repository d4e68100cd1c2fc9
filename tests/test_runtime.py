"""Process set-up for CPU work: freed memory kept for reuse (glibc), and its switch."""
import ast
import ctypes
import platform
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from xai_loc.cli import main
from xai_loc.errors import InputError
from xai_loc.runtime import KEEP_MEMORY_ENV, keep_freed_memory

GLIBC = platform.libc_ver()[0] == "glibc"


@pytest.fixture
def restore_keep():
    yield
    keep_freed_memory(True)  # as the CLI leaves the suite's process


@pytest.mark.skipif(not GLIBC or not hasattr(ctypes.CDLL(None), "mallinfo2"), reason="needs glibc >= 2.33")
def test_kept_memory_serves_large_blocks_from_the_heap_and_the_defaults_from_pages_of_their_own():
    # a fresh process: in this one, blocks kept earlier would serve a large request from the heap whatever the setting
    code = textwrap.dedent("""
        import ctypes
        import numpy as np
        from xai_loc.runtime import keep_freed_memory

        class Mallinfo2(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                       "fsmblks", "uordblks", "fordblks", "keepcost")]

        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = Mallinfo2
        mapped = lambda: libc.mallinfo2().hblks  # blocks served with pages of their own
        size = 100 << 20  # above glibc's largest mmap threshold (32 MiB)
        out = [keep_freed_memory(False), mapped()]
        block = np.ones(size, dtype=np.uint8)
        out.append(mapped())
        del block
        out += [mapped(), keep_freed_memory(True)]
        block = np.ones(size, dtype=np.uint8)
        out += [mapped(), int(block.sum()) == size]
        del block
        again = np.zeros(size, dtype=np.uint8)  # the freed block is reused, still no pages of its own
        out += [mapped(), not again.any()]
        print(out)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    off, before, with_block, after, on, kept, filled, reused, zeroed = ast.literal_eval(run.stdout)
    assert (off, on, filled, zeroed) == (False, True, True, True)
    assert (with_block, after) == (before + 1, before)  # glibc's defaults: a mapping of its own, returned at free
    assert (kept, reused) == (before, before)  # kept: from the heap, and reused


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_the_environment_switch(monkeypatch, restore_keep):
    monkeypatch.setenv(KEEP_MEMORY_ENV, "0")
    assert keep_freed_memory() is False
    monkeypatch.setenv(KEEP_MEMORY_ENV, "1")
    assert keep_freed_memory() is True
    monkeypatch.setenv(KEEP_MEMORY_ENV, "yes")
    with pytest.raises(InputError, match=r"^XAI_LOC_KEEP_MEMORY='yes' is not allowed; use 1 \(keep freed memory\) "
                                         r"or 0 \(glibc's defaults\)$"):
        keep_freed_memory()


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_info_says_whether_freed_memory_is_kept(restore_keep):
    kept = CliRunner().invoke(main, ["--threads", "1", "info"], env={KEEP_MEMORY_ENV: "1"})
    assert kept.exit_code == 0 and "freed memory     kept for reuse" in kept.output
    returned = CliRunner().invoke(main, ["--threads", "1", "info"], env={KEEP_MEMORY_ENV: "0"})
    assert returned.exit_code == 0 and "freed memory     returned to the system" in returned.output


def test_off_glibc_nothing_changes():
    code = ("import platform; platform.libc_ver = lambda *a, **k: ('', ''); "
            "from xai_loc.runtime import keep_freed_memory; print(keep_freed_memory(True))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "False", run.stderr


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_a_refused_mallopt_is_an_error_not_a_false_claim(monkeypatch):
    class Refusing:
        def mallopt(self, param, value):
            return 0  # glibc's answer to a parameter it does not take

    monkeypatch.setattr(ctypes, "CDLL", lambda name: Refusing())
    with pytest.raises(OSError, match=r"^mallopt\(-4, 0\) failed$"):
        keep_freed_memory(True)
