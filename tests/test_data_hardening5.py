"""Review findings on the stores: a reader removing a finishing writer's progress record, the condition -0."""
from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_cli

import xai_loc.data.resumable as resumable
from xai_loc.data.integrity import verify_store
from xai_loc.data.resumable import ResumableStore, StoreKind
from xai_loc.data.store import condition_name, condition_value

KIND = StoreKind("toy store", "values", ("item", "channel"), "volts", "make_toy")


def test_a_writer_finishes_when_a_reader_removed_its_progress_record(tmp_path, monkeypatch):
    """Review: a reader that found the renamed store removed the progress record (unlocked) while the writer synced
    the folder; the writer then failed with FileNotFoundError (exit 1) on a whole store."""
    path = tmp_path / "toy.zarr"
    fsync = resumable.fsync_path

    def slow_fsync(target):
        fsync(target)
        if target == path.parent and path.exists():  # after the rename: a reader's clean-up lands here
            (tmp_path / "toy.zarr.progress.json").unlink()

    monkeypatch.setattr(resumable, "fsync_path", slow_fsync)
    values = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    with ResumableStore(path, KIND, {"seed": 1}) as store:
        store.open_or_resume((2, 3), {"item": ("item", np.arange(2))}, {"config": json.dumps({"seed": 1})}, block=2)
        assert store.progress_file.exists()
        store.write(0, {"values": values})
        assert store.finish({}) == path
    verify_store(path, deep=True)
    assert not (tmp_path / "toy.zarr.progress.json").exists()


def test_minus_zero_is_the_condition_zero(tmp_path):
    """Review: '--snr -0' made a folder 't60-0.15_snr--0' of its own, byte-identical data to '--snr 0'."""
    assert str(condition_value(-0.0)) == "0.0" and condition_name(0.3, -0.0) == "t60-0.3_snr-0"
    data = tmp_path / "data"
    paths = []
    for snr in ("-0", "0"):
        done = run_cli(["simulate", "--t60", "0.15", "--snr", snr, "--sources", "1", "--data", str(data)])
        assert done.exit_code == 0, done.output
        paths.append(done.stdout.strip())
    assert paths[0] == paths[1] and paths[0].endswith("t60-0.15_snr-0/test-n1.zarr")


def test_cue_scene_counts_are_bounded_in_the_spec_and_on_the_command_line(tmp_path):
    """Review: '--train-per-utterance 1000000000000' rendered the test split for a minute before the training
    split's plan (240 x 10^12 labels) could not be built."""
    from xai_loc.cli import cuenet as cli_cuenet
    from xai_loc.data import cue_scenes
    from xai_loc.errors import InputError

    assert cli_cuenet.MAX_PER_UTTERANCE == cue_scenes.MAX_PER_UTTERANCE == 1000
    with pytest.raises(InputError, match=r"^per_utterance=\{'train': 1001, 'test': 12\} is not allowed; give "
                                         r"\{'train': n, 'test': n\} with integers in \[1, 1000\]$"):
        cue_scenes.CueSceneSpec(per_utterance={"train": 1001, "test": 12})
    assert cue_scenes.CueSceneSpec(per_utterance={"train": 1000, "test": 1}).per_utterance["train"] == 1000
    for flag in ("--train-per-utterance", "--test-per-utterance"):
        done = run_cli(["binaural", "cuenet", "train", flag, "1000000000000", "--data", str(tmp_path / "data"),
                        "--out", str(tmp_path / "o.safetensors")])
        assert done.exit_code == 2 and "[1, 1000]" in done.output and flag in done.output
        assert not (tmp_path / "data").exists()
