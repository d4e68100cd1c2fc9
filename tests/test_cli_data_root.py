"""Review: a finished store on a read-only data root could be read by no command (``--data`` demanded write
access up front); ``binaural simulate --no-noise --snr`` dropped the SNR without a word; ``--store`` told the
user to delete a data root given in its place."""
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import xai_loc.cli_params
import xai_loc.io
from xai_loc.cli import main
from xai_loc.errors import InputError

CHECKPOINT = Path(__file__).resolve().parent.parent / "pretrained" / "loccnn_t60-0.15_snr-25.safetensors"


def _one_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture()
def read_only_root(tmp_path, monkeypatch):
    """A data root holding a finished 2-source test store, then made read-only (as root, permission bits do not
    stop writes: the two checks that look for write access are told the folder is read-only)."""
    root = tmp_path / "data"
    result = CliRunner().invoke(main, ["simulate", "--t60", "0.15", "--snr", "25", "--sources", "2", "--data",
                                       str(root)])
    assert result.exit_code == 0, result.output
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        inside = Path(path).resolve().is_relative_to(root.resolve())
        return False if inside and mode & os.W_OK else real_access(path, mode, *args, **kwargs)

    def ensure_writable_dir(folder, what="output folder"):
        if Path(folder).resolve().is_relative_to(root.resolve()):
            raise InputError(f"{what} {str(folder)!r} is not writable ({str(root)!r} is read-only); choose another "
                             "path")
        return real_ensure(folder, what)

    real_ensure = xai_loc.io.ensure_writable_dir
    monkeypatch.setattr(xai_loc.cli_params.os, "access", access)
    monkeypatch.setattr(xai_loc.io, "ensure_writable_dir", ensure_writable_dir)
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_finished_store_on_a_read_only_root_is_evaluated(read_only_root):
    before = _tree(read_only_root)
    result = CliRunner().invoke(main, ["evaluate", str(CHECKPOINT), "--sources", "2", "--data", str(read_only_root)])
    assert result.exit_code == 0, result.output
    assert "MAE" in result.output or "mae" in result.output.lower()
    assert _tree(read_only_root) == before


def test_a_store_that_must_be_written_on_a_read_only_root_is_one_line(read_only_root):
    before = _tree(read_only_root)
    line = _one_line(CliRunner().invoke(main, ["evaluate", str(CHECKPOINT), "--sources", "3", "--data",
                                               str(read_only_root)]))
    assert "not writable" in line
    assert _tree(read_only_root) == before


def test_simulate_still_needs_a_writable_root(read_only_root):
    line = _one_line(CliRunner().invoke(main, ["simulate", "--t60", "0.15", "--snr", "25", "--sources", "3",
                                               "--data", str(read_only_root)]))
    assert "not writable" in line


def test_snr_with_no_noise_is_refused(tmp_path):
    line = _one_line(CliRunner().invoke(main, ["binaural", "simulate", "--no-noise", "--snr", "1", "2", "--data",
                                               str(tmp_path / "d")]))
    assert line == ("Error: --snr 1,2 is not allowed with --no-noise (no background to set the level of); give one "
                    "of them")
    assert not (tmp_path / "d").exists()


def test_a_data_root_given_as_store_is_not_to_be_deleted(tmp_path):
    root = tmp_path / "data"
    (root / "paper").mkdir(parents=True)
    line = _one_line(CliRunner().invoke(main, ["sanity", "--store", str(root), "--sources", "1"]))
    assert "delete" not in line and str(root) in line


@pytest.mark.parametrize("flag", ["--data", "--out"])
def test_a_bad_root_of_simulate_names_both_aliases(flag, tmp_path):
    """``simulate --out`` is an alias of ``--data``; click does not tell which was typed, so both are named."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = _one_line(CliRunner().invoke(main, ["simulate", "--t60", "0.15", "--snr", "25", flag,
                                               str(blocker / "root")]))
    assert line.startswith(f"Error: --data/--out '{blocker / 'root'}' ")
    assert not (blocker.parent / "root").exists()
