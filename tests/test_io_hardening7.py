"""A full disk while a result, a training state or a sound file is written: one line naming the file, exit code 2,
nothing left behind (netCDF and training state serialized in memory, written by a plain atomic file write)."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import click
import numpy as np
import pytest
import soundfile as sf
import torch
import xarray as xr
from helpers import perturbation_result, run_cli

from xai_loc.cli._common import user_errors
from xai_loc.io import NETCDF_DIGEST, netcdf_digest_matches, write_dataset_atomic
from xai_loc.models.trainer import Hooks, Schedule, Trainer, cached_batches, shuffled

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
ENOSPC = "No space left on device"


@pytest.fixture
def full_disk(monkeypatch, tmp_path):
    """Every ``Path.write_bytes`` below ``tmp_path / 'small'`` fails as a full disk does (errno ENOSPC, no filename:
    a plain file write names none); returns that folder."""
    small, real = tmp_path / "small", Path.write_bytes

    def write_bytes(self, data):
        if Path(self).is_relative_to(small):
            raise OSError(errno.ENOSPC, ENOSPC)
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    return small


def test_a_netcdf_result_on_a_full_disk_is_an_oserror_naming_it(full_disk, tmp_path):
    """review: the netCDF was written by HDF5 into the temporary file; a full disk failed in HDF5's close with a
    two-line message naming only the temporary file, then h5py's cleanup crashed the process (exit 139). Now the
    file is built in memory and written by one file write: an OSError naming the result, no file or folder left."""
    path = full_disk / "c" / "perturbation.nc"
    with pytest.raises(OSError) as err:
        write_dataset_atomic(perturbation_result(), path)
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(path))
    assert sorted(p.name for p in tmp_path.rglob("*")) == []


def test_the_netcdf_built_in_memory_keeps_its_digest(tmp_path):
    """What holds now: the file built in memory reads back identical, its digest checks out, and it is the same
    digest as the file HDF5 writes to disk (the bytes differ: HDF5 lays out a file written through Python
    differently)."""
    from xai_loc.io import netcdf_bytes

    ds = perturbation_result()
    path = write_dataset_atomic(ds, tmp_path / "perturbation.nc")
    assert netcdf_digest_matches(path) is True
    assert path.read_bytes() == netcdf_bytes(ds)  # same dataset, same bytes
    xr.testing.assert_identical(xr.load_dataset(path).drop_attrs(), ds.drop_attrs())
    assert xr.load_dataset(path).attrs["t60"] == 0.6
    numeric = [name for name, var in ds.variables.items() if var.ndim and var.dtype.kind in "biufc"]
    assert numeric == ["mae_mean", "aopc", "mae", "baseline_mae", "percentage"]
    ds.to_netcdf(tmp_path / "disk.nc", engine="h5netcdf",  # the old way, HDF5 writing the file; no digest yet
                 encoding={name: {"fletcher32": True} for name in numeric})
    from xai_loc.io import netcdf_digest

    assert netcdf_digest(tmp_path / "disk.nc") == xr.load_dataset(path).attrs[NETCDF_DIGEST]


def test_binaural_explain_on_a_full_disk_is_one_line_exit_2(full_disk, tmp_path):
    """review: `binaural explain` on a full disk printed HDF5's two-line error and crashed (exit 139). Now: one line
    naming the result file, exit 2, no file or folder left in --out."""
    wav = tmp_path / "ears.wav"
    sf.write(wav, np.random.default_rng(0).standard_normal((16000, 2)) * 0.05, 16000)
    out = full_disk / "explained"
    result = run_cli(["binaural", "explain", str(PRETRAINED / "tfcnn_default.safetensors"), str(wav), "--out",
                      str(out)])
    assert result.exit_code == 2, (result.output, result.exception)
    errors = [line for line in result.stderr.splitlines() if not line.startswith("explain lrp:")]  # progress lines
    assert errors == [f"Error: cannot use '{out / 'cues.nc'}': {ENOSPC}"]
    assert not full_disk.exists()


def _line_trainer(state_file: Path) -> Trainer:
    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    x = torch.linspace(-1, 1, 8)[:, None]
    hooks = Hooks(picks=shuffled(8), assemble=cached_batches(lambda: x, 2 * x - 1, torch.device("cpu")),
                  forward=model, loss=torch.nn.functional.mse_loss)
    return Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), hooks, Schedule(4, 1),
                   identity={"arch": "line"}, state_file=state_file)


def test_a_training_state_on_a_full_disk_is_an_oserror_naming_it(full_disk, tmp_path):
    """review: `train --out small/m.safetensors` on a full disk ended after an epoch of work in torch.save's
    "RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos 8960 vs 8854" (exit 1). Now the state
    is serialized in memory and written by one file write: an OSError naming the state file, one line through the
    command line's error mapping, no file left."""
    state = full_disk / "m.state.pt"
    run = _line_trainer(state)
    with pytest.raises(OSError) as err:
        run.save()
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(state))
    assert sorted(p.name for p in tmp_path.rglob("*")) == []


def test_a_training_state_is_the_same_bytes_every_time(tmp_path):
    """review: torch.save wrote the state to the random temporary path, and a zip file made by torch.save holds
    its file's name: the same state gave other bytes every time. Now it is serialized in memory (folder 'archive'
    inside): the same state, the same bytes, and it reads back."""
    run = _line_trainer(tmp_path / "m.state.pt")
    run.save()
    first = run.state_file.read_bytes()
    run.save()
    assert run.state_file.read_bytes() == first
    assert first[30:46] == b"archive/data.pkl"  # the first zip entry's name
    assert _line_trainer(run.state_file).resumed


def _fail(error: BaseException, capsys) -> str:
    """The line :func:`user_errors` prints for ``error``, checked to end with exit code 2."""
    with pytest.raises(click.exceptions.Exit) as ended:
        with user_errors():
            raise error
    assert ended.value.exit_code == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1, stderr
    return stderr.strip()


def test_an_hdf5_style_oserror_is_one_line_naming_the_file(capsys):
    """review: HDF5's disk-full text holds a newline, so the error took two lines, and an OSError of a plain file
    write (no filename) said only "cannot use: No space left on device". Now: whitespace collapsed, and the file
    that atomic writes name is shown."""
    hdf5 = OSError(errno.ENOSPC, "Can't close file (file write failed: time = Mon,\n, filename = 'x.tmp.nc')")
    assert _fail(hdf5, capsys) == ("Error: cannot use: Can't close file (file write failed: time = Mon, , "
                                   "filename = 'x.tmp.nc')")
    assert _fail(OSError(errno.ENOSPC, ENOSPC, "/out/r.nc"), capsys) == f"Error: cannot use '/out/r.nc': {ENOSPC}"


def _dev_full_after_open(path: Path) -> None:
    """Point the descriptor that libsndfile holds for ``path`` at /dev/full: its next write fails with ENOSPC."""
    fd = next(int(fd) for fd in os.listdir("/proc/self/fd")
              if os.path.realpath(f"/proc/self/fd/{fd}") == str(path.resolve()))
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, fd)
    os.close(full)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_sound_file_on_a_full_disk_is_one_line_naming_it(tmp_path, capsys):
    """review: `listen REL --out small/w` on a full disk ended in "soundfile.LibsndfileError: System error." with a
    traceback (exit 1): not an OSError, so the error mapping missed it. Now: one line naming the file soundfile was
    writing, exit 2."""
    path = tmp_path / "w.wav"

    def write():
        with sf.SoundFile(path, "w", 16000, 1, subtype="PCM_16", format="WAV") as f:
            _dev_full_after_open(path)
            f.write(np.zeros(160000))

    assert _fail(sf.LibsndfileError(2, "Error opening 'x.wav': "), capsys) == (
        "Error: sound file: Error opening 'x.wav': System error.")
    with pytest.raises(sf.LibsndfileError):
        write()
    assert _fail(_raised(write), capsys) == f"Error: sound file '{path}': System error."


def _raised(fn) -> BaseException:
    """The error ``fn()`` raises (its traceback kept)."""
    try:
        fn()
    except BaseException as err:  # noqa: BLE001 - handed back to the caller
        return err
    raise AssertionError("no error raised")
