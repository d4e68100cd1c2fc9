"""Process set-up for CPU work: freed memory kept for reuse (glibc), and its switch; torch's threads, set for
every command; integers and environment variables read alike everywhere."""
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


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_an_empty_variable_counts_as_unset(monkeypatch, restore_keep):
    """Review: an empty XAI_LOC_KEEP_MEMORY was refused while an empty XAI_LOC_THREADS counted as unset, and an
    empty XAI_LOC_DATA put data into the working directory."""
    from pathlib import Path

    from xai_loc.cli_params import data_root_default
    from xai_loc.data.store import default_root

    monkeypatch.setenv(KEEP_MEMORY_ENV, "")
    assert keep_freed_memory() is True
    monkeypatch.setenv("XAI_LOC_DATA", "")
    assert data_root_default() == "xai-loc-data" and default_root() == Path("xai-loc-data")
    from xai_loc.models.zoo import PRETRAINED_ENV, pretrained_dir

    monkeypatch.setenv(PRETRAINED_ENV, "")
    assert pretrained_dir() == Path(__file__).resolve().parents[1] / "pretrained"
    result = CliRunner().invoke(main, ["info"], env={"XAI_LOC_THREADS": "", KEEP_MEMORY_ENV: ""})
    assert result.exit_code == 0 and "freed memory     kept for reuse" in result.output, result.output


@pytest.mark.parametrize("text", ["1_6", "\u0661\u0666", "１６", "16.0", "0x10", ""],
                         ids=["underscore", "arabic-indic", "fullwidth", "float", "hex", "empty"])
def test_integers_are_ascii_digits_only(monkeypatch, text):
    """Review: XAI_LOC_THREADS=1_6 was read as 16 (int() takes underscores and other scripts' digits)."""
    from xai_loc.cli_params import Int
    from xai_loc.runtime import MAX_THREADS, THREADS_ENV, configure_threads, parse_int

    with pytest.raises(ValueError):
        parse_int(text)
    with pytest.raises(InputError, match=f"^value {text!r} is not an integer; use an integer >= 1$"):
        Int(1).convert(text, None, None)
    if text:  # empty: unset
        monkeypatch.setenv(THREADS_ENV, text)
        with pytest.raises(InputError, match=rf"^XAI_LOC_THREADS={text!r} is not an integer; use an integer in "
                                             rf"\[1, {MAX_THREADS}\]$"):
            configure_threads()
        result = CliRunner().invoke(main, ["info"], env={THREADS_ENV: text})
        assert result.exit_code == 2 and result.output == f"Error: XAI_LOC_THREADS {text!r} is not an integer; use " \
            f"an integer in [1, {MAX_THREADS}]\n", result.output
    assert [parse_int(t) for t in (" 16 ", "+16", "-3", "007")] == [16, 16, -3, 7]


def test_the_thread_setting_holds_for_every_command(tmp_path):
    """Review: --threads and XAI_LOC_THREADS were applied only by the commands that set up CPU work, not by
    report, figures, listen or models."""
    import torch

    before = torch.get_num_threads()
    try:
        for args, env in ((["--threads", "1", "models", "list", "--dir", str(tmp_path)], {}),
                          (["models", "list", "--dir", str(tmp_path)], {"XAI_LOC_THREADS": "2"}),
                          (["--threads", "1", "figures", str(tmp_path)], {})):  # an error after the setting
            torch.set_num_threads(3)
            result = CliRunner().invoke(main, args, env=env)
            assert result.exit_code == (2 if "figures" in args else 0), result.output
            assert torch.get_num_threads() == (2 if env else 1)
    finally:
        torch.set_num_threads(before)
