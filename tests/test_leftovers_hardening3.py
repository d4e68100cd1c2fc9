"""Follow-ups of the hardening round: an in-memory split's dataset, metres on a relevance store's positions, wav
folders of explain() results told apart by their dataset, ``placed`` and a model of buffers only, one walk over
differing records, a spec's rate checked against its sounds when it is built."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import xarray as xr
from helpers import noise_windows, one_line, small_model

from xai_loc.data import open_signals
from xai_loc.data.binaural_store import BinauralSpec
from xai_loc.data.cue_scenes import CueSceneSpec
from xai_loc.errors import InputError
from xai_loc.explain import explain, explain_store, open_relevance, write_wavs
from xai_loc.explain.attribute import placed


def test_an_in_memory_split_is_the_dataset_of_its_store(split_and_store):
    split, store = split_and_store
    ds = split.to_dataset()
    xr.testing.assert_identical(ds, open_signals(store).load())  # values, coords (units too) and attrs
    assert ds["signals"].dtype == np.float32 and ds["time"].attrs["units"] == "s"
    assert "storage_dtype" not in ds.attrs and "device" not in ds.attrs


def test_a_relevance_store_carries_metres_on_every_position(split_and_store, tmp_path):
    _, store = split_and_store
    stored = open_relevance(explain_store(small_model(4, 1024), store, out=tmp_path / "rel.zarr", batch_size=64,
                                          progress=False))
    for vector in ("prediction", "source", "mic"):
        for axis in "xyz":
            assert stored[f"{vector}_{axis}"].attrs["units"] == "m", f"{vector}_{axis}"
    assert np.isfinite(stored["prediction_x"].values).all()  # the values were written, not only the placeholder


def test_wav_folders_of_explain_results_from_different_datasets_differ(tmp_path):
    from xai_loc.explain.store import _IDENTITY, _relevance_digest

    model = small_model(16, 512)
    first, second = noise_windows(2), noise_windows(2)
    first.attrs["config"], second.attrs["config"] = json.dumps({"seed": 0}), json.dumps({"seed": 1})
    a, b = explain(model, first, batch_size=2), explain(model, second, batch_size=2)
    assert a.attrs["t60"] == b.attrs["t60"] and a.attrs["snr"] == b.attrs["snr"]
    assert a.attrs["dataset_digest"] != b.attrs["dataset_digest"]
    write_wavs(a, None, tmp_path / "wavs")
    write_wavs(a, None, tmp_path / "wavs")  # the same relevance again overwrites its own files
    with pytest.raises(InputError, match="holds wav files .* of other relevance than this one"):
        write_wavs(b, None, tmp_path / "wavs")
    # an array without the digest (written before it was recorded) keeps the digest its folder records
    old = a.copy()
    del old.attrs["dataset_digest"]
    before = json.dumps({k: old.attrs.get(k) for k in _IDENTITY if k != "dataset_digest"}, sort_keys=True, default=str)
    assert _relevance_digest(old) == hashlib.sha256(before.encode()).hexdigest()[:16]


class _Buffered(torch.nn.Module):
    """A module of one buffer and no parameters."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.register_buffer("scale", torch.ones(3, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def test_placed_puts_a_model_of_buffers_only_back_on_its_device():
    model = _Buffered("meta").train()
    with placed(model, torch.device("meta")) as net:  # before: moved back to the CPU (no parameter to ask)
        assert not net.training
    assert model.scale.device.type == "meta" and model.training
    cpu = _Buffered("cpu")
    with placed(cpu, torch.device("cpu")) as net:
        assert net(torch.full((3,), 2.0)).tolist() == [2.0, 2.0, 2.0]
    assert cpu.scale.device.type == "cpu"


def test_trainer_and_store_mismatches_walk_the_records_alike():
    from xai_loc.data.spec import ABSENT, differing_fields, first_difference
    from xai_loc.models.trainer import differences

    found = {"arch": "line", "recipe": {"lr": 0.001, "draws_per_epoch": 1}, "history": [1.0]}
    asked = {"arch": "curve", "recipe": {"lr": 0.002}}
    assert list(differing_fields(found, asked)) == [("arch", "line", "curve"), ("recipe.lr", 0.001, 0.002),
                                                   ("recipe.draws_per_epoch", 1, ABSENT), ("history", [1.0], ABSENT)]
    defaults = {"recipe": {"draws_per_epoch": 1}}  # what a state without the field means: no difference
    assert list(differing_fields(found, asked, defaults, [*asked, *defaults])) == [
        ("arch", "line", "curve"), ("recipe.lr", 0.001, 0.002)]
    assert differences(asked, found, defaults) == ["arch: 'line' in the state, 'curve' now",
                                                   "recipe.lr: 0.001 in the state, 0.002 now"]
    assert first_difference(found, asked) == "arch 'line' recorded, 'curve' asked"
    assert first_difference({"a": None}, {}) == "a None recorded, not asked"  # absent is not None here
    assert differences({"a": None}, {}) == []  # but is in a state (no default: None)


def test_a_spec_below_a_sounds_lowest_rate_is_refused_when_built():
    assert one_line(BinauralSpec, kinds=("speech", "tone_complex"), fs=2000) == (
        "sound kind 'tone_complex' cannot be made at fs=2000 Hz; give fs >= 2223 Hz")
    assert one_line(BinauralSpec.from_dict, {"kinds": ["am_noise"], "fs": 400}) == (
        "sound kind 'am_noise' cannot be made at fs=400 Hz; give fs >= 500 Hz")
    assert one_line(CueSceneSpec, noise_kinds=("pink_burst", "am_noise"), fs=400) == (
        "sound kind 'am_noise' cannot be made at fs=400 Hz; give fs >= 500 Hz")
    assert BinauralSpec(kinds=("speech", "white_burst"), fs=2000, t_diff=None).fs == 2000  # no lowest rate
    assert CueSceneSpec(noise_kinds=("tone_complex",), fs=2223).fs == 2223
