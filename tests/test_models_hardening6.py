"""Hardening of the trainers and the zoo: held-out data that is not held out, validation data of another recording,
a saved state of another run refused before simulating, and a shipped checkpoint under another model's name."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import xarray as xr
from helpers import TINY, one_line, refused, run_cli

from xai_loc.data.binaural_store import BinauralSpec, open_binaural, simulate_binaural
from xai_loc.models import read_card
from xai_loc.models.classifier_training import ClassifierConfig, train_classifier
from xai_loc.models.trainer import state_path
from xai_loc.models.training import TrainConfig, train
from xai_loc.models.zoo import PRETRAINED_ENV, pretrained_dir, shipped_checkpoint

# -- 1: the cochleagram CNN's test store must hold other sounds than its training store ---------------------------


@pytest.fixture(scope="module")
def sound_stores(tmp_path_factory):
    """The 'all', 'train' and 'test' splits of one small binaural spec (four sounds, two of them held out)."""
    spec = BinauralSpec(name="leak", rooms=("anechoic",), kinds=("white_burst", "pink_burst"), n_sounds=4,
                        per_sound=1, test_fraction=0.5, duration=0.1, snr=None)
    root = tmp_path_factory.mktemp("binaural")
    return spec, {split: simulate_binaural(spec, split, root=root, progress=False)
                  for split in ("all", "train", "test")}


def test_a_cochleagram_cnn_is_not_scored_on_its_own_training_sounds(sound_stores, tmp_path):
    spec, stores = sound_stores
    run = {"model_config": {"layers": TINY["cochcnn"]["layers"], "dense": 16},
           "config": ClassifierConfig(epochs=1, batch_size=4), "progress": False}
    out = tmp_path / "m.safetensors"
    every = sorted(map(str, set(open_binaural(stores["all"])["sound_key"].values)))
    assert one_line(train_classifier, stores["all"], out, test_store=stores["all"], **run) == (
        f"the test store shares 4 sound_key value(s) with the training store (the first: {every[0]!r}); train on "
        "the train split and test on the test split")
    held_out = sorted(map(str, set(open_binaural(stores["test"])["sound_key"].values)))
    assert len(held_out) == 2
    assert one_line(train_classifier, stores["all"], out, test_store=stores["test"], **run) == (
        f"the test store shares 2 sound_key value(s) with the training store (the first: {held_out[0]!r}); train "
        "on the train split and test on the test split")
    # the held-out split of an 'all' store's spec is refused as test data of ... the 'all' store's own sounds
    assert one_line(train_classifier, stores["train"], out, test_store=stores["all"], **run).startswith(
        "the test store shares 2 sound_key value(s) with the training store")
    assert not list(tmp_path.iterdir())  # refused before training: no state, no checkpoint
    from xai_loc.models.trainer import check_held_out

    train_ds, test_ds = (open_binaural(stores[split]) for split in ("train", "test"))
    assert check_held_out(train_ds, test_ds, ("sound_key", "sound_id")) is None  # held out: accepted
    # review: disjoint selections of one store (by sound) are held out, though their spec and split are one
    whole = open_binaural(stores["all"])
    first = whole["sound_key"].values == every[0]
    assert check_held_out(whole.isel(example=~first), whole.isel(example=first), ("sound_key",)) is None
    # data that records no sounds is refused where it is the training data by its spec and split
    assert one_line(check_held_out, whole, whole) == (
        f"the test store is the training store (split 'all' of spec {spec.digest()}); score the model on held-out "
        "data (the test split)")


# -- 2: training and validation stores of one recording -----------------------------------------------------------


def windows(n: int, split: str, seed: int, **attrs) -> xr.Dataset:
    """A multichannel store in memory: one noise window of 4 mics x 175 samples per source, microphones 0.1 m apart
    (``mic_x0``: where the first is), recorded at ``fs`` in ``convention`` (16 kHz, gpurir unless given)."""
    rng = np.random.default_rng(seed)
    x0 = attrs.pop("mic_x0", 1.0)
    mics = np.stack([x0 + 0.1 * np.arange(4), np.full(4, 7.0), np.full(4, 1.2)], axis=1)
    return xr.Dataset({"signals": (("window", "mic", "time"), rng.standard_normal((n, 4, 175)).astype(np.float32)),
                       "source_position": (("window", "xyz"), rng.uniform(1.0, 3.0, (n, 3))),
                       "source_id": ("window", np.arange(n))},
                      coords={"mic_position": (("mic", "xyz"), mics)},
                      attrs={"t60": 0.15, "snr": 25.0, "split": split, "fs": 16000.0, "convention": "gpurir",
                             "config": f'{{"split": "{split}", "seed": {seed}}}', **attrs})


@pytest.mark.parametrize("val, says", [
    ({"convention": "pyroomacoustics"}, "has simulation convention 'gpurir' but validation store the dataset has "
                                        "'pyroomacoustics'; use stores of one scene"),
    ({"fs": 48000.0}, "has sample rate (Hz) 16000.0 but validation store the dataset has 48000.0; use stores of "
                      "one scene"),
    ({"mic_x0": 1.25}, "has microphone 0 at (1, 7, 1.2) m but validation store the dataset has it at (1.25, 7, 1.2) "
                       "m; use stores of one array"),
])
def test_validation_data_of_another_recording_is_refused(tmp_path, val, says):
    out = tmp_path / "m.safetensors"
    config = TrainConfig(max_epochs=1, batch_size=2, eval_batch_size=8)
    assert one_line(train, "loccnn", windows(4, "train", 0), windows(2, "val", 1, **val), out, config,
                    progress=False) == f"training store the dataset {says}"
    assert not list(tmp_path.iterdir())
    # within the microphone tolerance (1e-6 m), or recorded by one side only, it trains
    for same in ({"mic_x0": 1.0 + 5e-7}, {"fs": None, "convention": None}):
        train("loccnn", windows(4, "train", 0), windows(2, "val", 1, **same), out, config, progress=False)
        assert read_card(out)["training"]["epochs"] == 1
        for path in (out, state_path(out)):
            path.unlink()


# -- 3: xai-loc train refuses a saved state of another run before simulating -------------------------------------


def paper_windows(n: int, split: str, seed: int) -> xr.Dataset:
    """Noise windows of the paper scene's shape (16 mics x 5120 samples)."""
    rng = np.random.default_rng(seed)
    return xr.Dataset({"signals": (("window", "mic", "time"), rng.standard_normal((n, 16, 5120)).astype(np.float32)),
                       "source_position": (("window", "xyz"), rng.uniform(1.5, 1.9, (n, 3))),
                       "source_id": ("window", np.arange(n))},
                      attrs={"t60": 0.6, "snr": 10.0, "split": split})


@pytest.mark.parametrize("args, says", [
    (["--lr", "0.5"], "(recipe.lr: 0.001 in the state, 0.5 now)"),
    (["--seed", "3"], "(recipe.seed: 0 in the state, 3 now)"),
    (["--init-from", str(pretrained_dir() / "loccnn_t60-0.6_snr-10.safetensors")], "(init: None in the state, '"),
])
def test_train_refuses_a_state_of_another_run_before_simulating(tmp_path, no_simulation, args, says):
    out = tmp_path / "m.safetensors"
    train("loccnn", paper_windows(4, "train", 0), paper_windows(2, "val", 1), out,
          TrainConfig(max_epochs=1, batch_size=2, eval_batch_size=8), progress=False)
    before = out.read_bytes(), state_path(out).read_bytes()
    command = ["train", "--model", "loccnn", "--t60", "0.6", "--snr", "10", "--sources", "2", "--batch-size", "2",
               "--max-epochs", "3", "--data", str(tmp_path / "data"), "--out", str(out)]
    refused(run_cli([*command, *args]), f"Error: {state_path(out)} belongs to another training run {says}")
    refused(run_cli([*command[:2], "samplecnn", *command[3:]]),
            f"Error: {state_path(out)} belongs to another training run (arch: 'loccnn' in the state, 'samplecnn' now; "
            "recipe.lr: 0.001 in the state, 0.01 now); remove it or write to another out")
    assert (out.read_bytes(), state_path(out).read_bytes()) == before and not (tmp_path / "data").exists()
    # the same run passes the check and goes on to simulate its data (whose digest is compared later, as before)
    result = run_cli(command)
    assert isinstance(result.exception, AssertionError) and "simulating data" in str(result.exception)


# -- 4: a shipped checkpoint is what its name says ------------------------------------------------------------------


def test_a_checkpoint_under_another_models_shipped_name_is_refused(tmp_path, monkeypatch, no_simulation):
    shipped = pretrained_dir()
    for path in sorted(shipped.glob("*_t60-*.safetensors")):  # every shipped multichannel checkpoint passes
        card = read_card(path)
        condition = card["condition"]
        assert shipped_checkpoint(card["architecture"], condition["t60"], condition["snr"]) == path
    assert shipped_checkpoint("samplecnn", 0.1 + 0.2, 20) == shipped / "samplecnn_t60-0.3_snr-20.safetensors"
    name = tmp_path / "loccnn_t60-0.6_snr-10.safetensors"
    shutil.copyfile(shipped / "samplecnn_t60-0.15_snr-25.safetensors", name)
    says = (f"checkpoint {name} is named for loccnn, T60 0.6 s, SNR 10 dB, but its card holds samplecnn, T60 0.15 s, "
            "SNR 25 dB; give each checkpoint the name of what it holds")
    assert one_line(shipped_checkpoint, "loccnn", 0.6, 10, tmp_path) == says
    monkeypatch.setenv(PRETRAINED_ENV, str(tmp_path))
    refused(run_cli(["explain", "--model", "loccnn", "--t60", "0.6", "--snr", "10", "--sources", "1",
                     "--data", str(tmp_path / "data")]), f"Error: {says}")
    assert not (tmp_path / "data").exists()
    shutil.copyfile(shipped / "loccnn_t60-0.15_snr-25.safetensors", name)  # the right model of another condition
    assert one_line(shipped_checkpoint, "loccnn", 0.6, 10) == (
        f"checkpoint {name} is named for loccnn, T60 0.6 s, SNR 10 dB, but its card holds loccnn, T60 0.15 s, SNR "
        "25 dB; give each checkpoint the name of what it holds")
    shutil.copyfile(shipped / "cochcnn_default.safetensors", name)  # a binaural model: a mix of rooms, no T60
    assert one_line(shipped_checkpoint, "loccnn", 0.6, 10) == (
        f"checkpoint {name} is named for loccnn, T60 0.6 s, SNR 10 dB, but its card holds cochcnn, rooms "
        "anechoic+office, SNR 5 to 40 dB; give each checkpoint the name of what it holds")
