"""Hardening of the model trainers: what a resumed run must match, what pins its data, and every
refusal in one line before rendering or training (review of xai_loc.models)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import xarray as xr
from safetensors.torch import load_file
from torch import nn

import xai_loc.models.trainer as trainer
from xai_loc.errors import InputError
from xai_loc.models import load_model, read_card
from xai_loc.models.classifier_training import ClassifierConfig, train_classifier
from xai_loc.models.cuenet import train_cuenet
from xai_loc.models.tfcnn_training import TFCNNTrainConfig, train_tfcnn
from xai_loc.models.trainer import state_path
from xai_loc.models.training import TrainConfig, train

FAST = {"batch_size": 5, "eval_batch_size": 64}
TINY_TFCNN = {"channels": [4, 8], "dense": [16]}
TINY_COCHCNN = {"layers": ["c4 1x8", "p1x8", "c8 2x4", "p2x4"], "dense": 16, "head": "azimuth"}
SMALL_CUENET = {"channels": 4, "hidden": 8}


def windows(n: int, seed: int, *, config: bool = True, positions=None) -> xr.Dataset:
    """A multichannel store in memory: one noise window of 2 mics x 256 samples per source."""
    rng = np.random.default_rng(seed)
    attrs = {"t60": 0.15, "snr": 25.0, **({"config": json.dumps({"seed": seed})} if config else {})}
    return xr.Dataset({"signals": (("window", "mic", "time"), rng.standard_normal((n, 2, 256)).astype(np.float32)),
                       "source_position": (("window", "xyz"),
                                           rng.uniform(1.0, 3.0, (n, 3)) if positions is None else positions),
                       "source_id": ("window", np.arange(n))}, attrs=attrs)


def scenes(n: int, split: str | None = None, seed: int = 1) -> xr.Dataset:
    """TF-CNN scenes in memory (noise, 1 s at 16 kHz), of ``split`` where given."""
    rng = np.random.default_rng(seed)
    return xr.Dataset({"waveforms": (("example", "ear", "time"), rng.standard_normal((n, 2, 16000), np.float32)),
                       "azimuth": ("example", np.resize([-90.0, 0.0, 90.0], n)), "elevation": ("example", np.zeros(n)),
                       "snr": ("example", np.zeros(n)),
                       "utterance": ("example", np.arange(n) + 1000 * (split == "test"))},  # test: held-out utterances
                      attrs={"fs": 16000, "spec": json.dumps({"train_snr": [0.0, 10.0]}), "spec_digest": "x",
                             **({"split": split} if split else {})})


def cue_store(n: int, split: str | None = None) -> xr.Dataset:
    """Random cue maps of the default front end's shape."""
    from xai_loc.data.cue_scenes import CueSceneSpec
    from xai_loc.features.binaural_cues import BinauralCues

    spec = CueSceneSpec()
    cues = np.random.default_rng(2).uniform(0, 1, (n, 3, 32, 50)).astype(np.float32)
    return xr.Dataset({"cues": (("example", "cue", "band", "frame"), cues)},
                      coords={"azimuth": ("example", np.arange(n) % 72 * 5.0),
                              "utterance": ("example", np.resize(spec.utterances(split or "train"), n))},
                      attrs={"spec": json.dumps(spec.to_dict()), "front_end": json.dumps(BinauralCues().config),
                             **({"split": split} if split else {})})


def binaural(azimuth) -> xr.Dataset:
    """A binaural store in memory (noise, 0.1 s at 48 kHz) without a config."""
    azimuth = np.asarray(azimuth, dtype=np.float64)
    noise = np.random.default_rng(0).standard_normal((azimuth.size, 2, 4800), np.float32)
    return xr.Dataset({"waveforms": (("example", "ear", "time"), noise), "azimuth": ("example", azimuth),
                       "elevation": ("example", np.zeros(azimuth.size))},
                      coords={"example": np.arange(azimuth.size)}, attrs={"fs": 48000})


def bast_spec(**changes):
    from xai_loc.data.bast_scenes import BastSceneSpec

    return BastSceneSpec(**{"name": "tiny", "azimuths": (90.0, 270.0), "kinds": ("white_burst",), "n_sounds": 2,
                            "test_fraction": 0.5, "snr": None, **changes})


def same_weights(a, b) -> bool:
    wa, wb = load_file(str(a)), load_file(str(b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# -- 1: a resumed run keeps its recipe ------------------------------------------------------------------------


@pytest.mark.parametrize("first, shown", [({"draws_per_epoch": 2}, "draws_per_epoch: 2 in the state, 1 now"),
                                          ({"autocast": "bfloat16"}, "autocast: 'bfloat16' in the state, None now")])
def test_resume_refuses_a_state_whose_later_recipe_field_this_run_leaves_at_its_default(tmp_path, first, shown):
    out, data = tmp_path / "m.safetensors", (windows(10, 0), windows(4, 1))
    train("loccnn", *data, out, TrainConfig(max_epochs=2, **FAST, **first), progress=False)
    before = out.read_bytes(), state_path(out).read_bytes()
    with pytest.raises(InputError, match=rf"belongs to another training run \(recipe\.{re.escape(shown)}\)"):
        train("loccnn", *data, out, TrainConfig(max_epochs=4, **FAST), progress=False)
    assert (out.read_bytes(), state_path(out).read_bytes()) == before


def test_states_without_the_later_recipe_fields_resume_at_their_defaults(tmp_path):
    out, data = tmp_path / "m.safetensors", (windows(10, 0), windows(4, 1))
    train("loccnn", *data, out, TrainConfig(max_epochs=1, **FAST), progress=False)
    recipe = torch.load(state_path(out), weights_only=True)["recipe"]
    assert "draws_per_epoch" not in recipe and "autocast" not in recipe  # as states written before them
    train("loccnn", *data, out, TrainConfig(max_epochs=2, **FAST), progress=False)
    assert read_card(out)["training"]["epochs"] == 2


# -- 2: a run's identity pins its data ----------------------------------------------------------------------------


def test_windows_without_a_config_are_pinned_by_their_labels(tmp_path):
    out, train_set, val_set = tmp_path / "m.safetensors", windows(10, 0, config=False), windows(4, 1, config=False)
    train("loccnn", train_set, val_set, out, TrainConfig(max_epochs=1, **FAST), progress=False)
    moved = windows(10, 0, config=False, positions=np.full((10, 3), 2.0))
    with pytest.raises(InputError, match=r"\(datasets\.train: 'content:[0-9a-f]{64}' in the state, "
                                         r"'content:[0-9a-f]{64}' now\)"):
        train("loccnn", moved, val_set, out, TrainConfig(max_epochs=2, **FAST), progress=False)
    train("loccnn", train_set, val_set, out, TrainConfig(max_epochs=2, **FAST), progress=False)  # the same: resumes
    card = read_card(out)
    assert card["training"]["epochs"] == 2 and card["dataset"]["train"]["digest"] is None  # the card as before


def test_tfcnn_refuses_swapped_splits_and_pins_the_split(tmp_path):
    out, train_set, test_set = tmp_path / "t.safetensors", scenes(3, "train"), scenes(3, "test", seed=2)
    run = {"model_config": TINY_TFCNN, "config": TFCNNTrainConfig(epochs=2, batch_size=3, max_minutes=1e-9),
           "progress": False}
    train_tfcnn(train_set, out, test_scenes=test_set, **run)  # one epoch of two: the state stays
    before = out.read_bytes(), state_path(out).read_bytes()
    with pytest.raises(InputError, match=r"^the training scene store records split='test'; use the 'train' split$"):
        train_tfcnn(test_set, out, test_scenes=train_set, **run)
    with pytest.raises(InputError, match=r"^the test scene store records split='train'; use the 'test' split$"):
        train_tfcnn(train_set, out, test_scenes=train_set, **run)
    unlabelled = train_set.copy()
    unlabelled.attrs = {k: v for k, v in train_set.attrs.items() if k != "split"}
    with pytest.raises(InputError, match=r"\(split: 'train' in the state, None now\)"):
        train_tfcnn(unlabelled, out, test_scenes=test_set, **run)
    assert (out.read_bytes(), state_path(out).read_bytes()) == before


def test_cue_network_refuses_a_test_split_as_training_data(tmp_path):
    with pytest.raises(InputError, match=r"^the training store records split='test'; use the 'train' split$"):
        train_cuenet(cue_store(8, "test"), tmp_path / "c.safetensors", model_config=SMALL_CUENET,
                     config=ClassifierConfig(epochs=1, batch_size=4))
    assert not list(tmp_path.iterdir())


def test_binaural_stores_without_a_config_are_pinned_by_their_labels(tmp_path):
    out = tmp_path / "k.safetensors"
    run = {"model_config": TINY_COCHCNN, "config": ClassifierConfig(epochs=2, batch_size=2, max_minutes=1e-9),
           "progress": False}
    train_classifier(binaural([0.0, 5.0, 10.0, 15.0]), out, **run)
    with pytest.raises(InputError, match=r"\(dataset: 'content:[0-9a-f]{64}' in the state, 'content:"):
        train_classifier(binaural([20.0, 25.0, 30.0, 35.0]), out, **run)


# -- 3: init_from is not the checkpoint being written --------------------------------------------------------------


def test_init_from_the_checkpoint_being_written_is_refused_first(tmp_path):
    from xai_loc.models.training import check_training

    out, data = tmp_path / "m.safetensors", (windows(10, 0), windows(4, 1))
    train("loccnn", *data, out, TrainConfig(max_epochs=1, save_state=False, **FAST), progress=False)
    before = out.read_bytes()
    message = rf"^init_from {re.escape(str(out))} is the checkpoint this run writes \(out\); fine-tune from a copy"
    with pytest.raises(InputError, match=message):
        train("loccnn", *data, out, TrainConfig(max_epochs=2, **FAST), progress=False, init_from=out)
    with pytest.raises(InputError, match=message):
        check_training("loccnn", out, (2, 256), init_from=out)
    assert out.read_bytes() == before and not state_path(out).exists()


# -- 4: BAST checks first, resumes and leaves the global generator alone -----------------------------------------


@pytest.mark.parametrize("dim, heads", [(16, 3), (2, 4)])
def test_fit_bast_refuses_a_dim_that_heads_do_not_divide_before_rendering(tmp_path, dim, heads):
    from xai_loc.models.bast import fit_bast

    with pytest.raises(InputError, match=rf"^dim={dim} and heads={heads} are not allowed; use a dim that is a "
                                         r"multiple of heads"):
        fit_bast(bast_spec(), tmp_path / "b.safetensors", root=tmp_path / "data", dim=dim, heads=heads, depth=1,
                 epochs=1)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name, message", [("b.pt", "use a file name ending in .safetensors"),
                                           ("file/b.safetensors", r"'.*file' is a file, not a folder")])
def test_fit_bast_checks_out_before_rendering(tmp_path, name, message):
    from xai_loc.models.bast import fit_bast

    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match=message):
        fit_bast(bast_spec(), tmp_path / name, root=tmp_path / "data", dim=16, heads=2, depth=1, epochs=1)
    assert not (tmp_path / "data").exists()


def test_fit_bast_resumes_to_the_uninterrupted_weights_and_keeps_the_global_generator(tmp_path):
    from xai_loc.models.bast import fit_bast

    run = {"root": tmp_path / "data", "dim": 16, "heads": 2, "depth": 1, "epochs": 2, "batch_size": 4}
    whole, _ = fit_bast(bast_spec(), tmp_path / "whole.safetensors", max_minutes=None, **run)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for _ in range(2):  # a spent budget still runs one epoch per call
        part, card = fit_bast(bast_spec(), tmp_path / "part.safetensors", max_minutes=1e-9, **run)
    assert torch.equal(torch.rand(3), expected)
    assert card["training"]["epochs"] == 2 and state_path(part).exists()
    assert same_weights(whole, part)


def test_bast_table_checks_the_recipe_and_both_splits_before_rendering(tmp_path):
    from xai_loc.experiments.bast_table import run_bast_table

    with pytest.raises(InputError, match=r"^split 'test' of 'tiny' holds no sounds"):
        run_bast_table(tmp_path / "out", spec=bast_spec(test_fraction=0.1), root=tmp_path / "data")
    with pytest.raises(InputError, match=r"^epochs=0 is not allowed"):
        run_bast_table(tmp_path / "out", spec=bast_spec(), root=tmp_path / "data", epochs=0)
    with pytest.raises(InputError, match=r"^heads=0 is not allowed"):
        run_bast_table(tmp_path / "out", spec=bast_spec(), root=tmp_path / "data",
                       model_options={"dim": 16, "depth": 1, "heads": 0, "dim_head": 8, "mlp_dim": 32})
    assert not list(tmp_path.iterdir())


# -- 5: train_on_spec checks out and dtype before rendering -------------------------------------------------------


@pytest.mark.parametrize("name, dtype, message", [
    ("m.pt", "auto", "use a file name ending in .safetensors"),
    ("m.safetensors", "bf16", r"^dtype='bf16' is not allowed; use 'auto', 'float32' or 'float16'$"),
])
def test_train_on_spec_checks_out_and_dtype_before_rendering(tmp_path, name, dtype, message):
    from xai_loc.data.binaural_store import BinauralSpec
    from xai_loc.models.classifier_training import train_on_spec

    spec = BinauralSpec(name="tiny", rooms=("anechoic",), kinds=("white_burst", "click_train", "pink_burst"),
                        n_sounds=9, per_sound=2, test_fraction=0.34, duration=0.1, snr=None)
    with pytest.raises(InputError, match=message):
        train_on_spec(spec, tmp_path / name, root=tmp_path / "data", config=ClassifierConfig(epochs=1), dtype=dtype,
                      progress=False)
    assert not (tmp_path / "data").exists()


# -- 6: the TF-CNN without its front end; an empty training store ----------------------------------------------------


def test_tfcnn_without_its_front_end_trains_on_the_maps_of_one_built_from_its_options(tmp_path):
    run = {"test_scenes": scenes(3, "test", seed=2), "config": TFCNNTrainConfig(epochs=1, batch_size=3),
           "dtype": "float32", "progress": False}
    bare = train_tfcnn(scenes(3, "train"), tmp_path / "bare.safetensors",
                       model_config={**TINY_TFCNN, "front_end": False}, **run)
    full = train_tfcnn(scenes(3, "train"), tmp_path / "full.safetensors", model_config=TINY_TFCNN, **run)
    model = load_model(bare)
    assert model.config["front_end"] is False and model.input_shape == model.cue_shape == (2, 321, 50)
    assert same_weights(bare, full)  # the same maps, the same seeded weights
    assert read_card(bare)["metrics"]["test"] == read_card(full)["metrics"]["test"]


def test_an_empty_training_store_is_one_line_before_anything_is_written(tmp_path):
    with pytest.raises(InputError, match=r"^the training data hold 0 examples; training needs at least 1$"):
        train_tfcnn(scenes(0, "train"), tmp_path / "t.safetensors", model_config=TINY_TFCNN, progress=False,
                    config=TFCNNTrainConfig(epochs=1))
    assert not list(tmp_path.iterdir())


# -- 7: the output folder is checked before training ---------------------------------------------------------------


def test_every_trainer_checks_the_output_folder_before_training(tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained before the output path was refused")

    monkeypatch.setattr(trainer.Trainer, "run_epoch", no_training)
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "m.safetensors"
    message = rf"^checkpoint folder '{re.escape(str(tmp_path / 'file'))}' is not allowed: .* is a file, not a folder"
    calls = [lambda: train("loccnn", windows(10, 0), windows(4, 1), out, TrainConfig(**FAST), progress=False),
             lambda: train_tfcnn(scenes(3, "train"), out, model_config=TINY_TFCNN, progress=False),
             lambda: train_cuenet(cue_store(8), out, model_config=SMALL_CUENET),
             lambda: train_classifier(binaural([0.0, 5.0]), out, model_config=TINY_COCHCNN, progress=False)]
    for call in calls:
        with pytest.raises(InputError, match=message):
            call()


# -- 8: one definition each: accuracy within N degrees, the positive-integer check, the storage dtype check ---------


def test_accuracy_within_5_degrees_is_one_inclusive_definition():
    from xai_loc.models.bast import _azimuth_scores
    from xai_loc.models.tfcnn_training import azimuth_scores

    # errors of 5 degrees that float subtraction makes 5.000000000000028 (wrapped) and 5.000000000000014
    pred, true = np.array([256.1, -127.8, 3.0]), np.array([251.1, -132.8, 9.5])
    bast, tfcnn = _azimuth_scores(pred, true), azimuth_scores(pred, true, np.zeros(3))["all"]
    assert bast["accuracy_5"] == tfcnn["accuracy_5"] == pytest.approx(2 / 3)
    assert bast["accuracy_10"] == tfcnn["accuracy_10"] == 1.0


def test_one_positive_integer_check_for_every_family():
    from xai_loc.models import build_model
    from xai_loc.models.base import check_positive_int

    value = check_positive_int("n", np.int64(3))
    assert value == 3 and type(value) is int
    with pytest.raises(InputError, match=r"^n_samples=8 is not allowed; use an integer >= 16$"):
        check_positive_int("n_samples", 8, 16)
    for arch, name in (("cuenet", "channels"), ("cochcnn", "dense"), ("bast", "dim"), ("loccnn", "n_mics")):
        with pytest.raises(InputError, match=rf"^{name}=0 is not allowed; use a positive integer$"):
            build_model(arch, **{name: 0})


def test_one_storage_dtype_check(tmp_path):
    from xai_loc.models.trainer import save_trained

    message = r"^dtype='bf16' is not allowed; use 'auto', 'float32' or 'float16'$"
    with pytest.raises(InputError, match=message):
        save_trained(nn.Linear(1, 1), tmp_path / "x.safetensors", condition={}, training={}, dataset={}, dtype="bf16")
    with pytest.raises(InputError, match=message):
        train_tfcnn(scenes(3, "train"), tmp_path / "t.safetensors", model_config=TINY_TFCNN, dtype="bf16",
                    progress=False)
    assert not list(tmp_path.iterdir())


def test_numpy_settings_are_stored_as_python_numbers():
    """Review: np.int64 epochs passed the number check and then failed after training, in the JSON card."""
    from xai_loc.models.bast import _check_recipe
    from xai_loc.models.classifier_training import ClassifierConfig
    from xai_loc.models.training import TrainConfig

    config = ClassifierConfig(epochs=np.int64(2), lr=np.float32(0.5), seed=np.uint8(3))
    assert (type(config.epochs), type(config.lr), type(config.seed)) == (int, float, int)
    assert json.loads(json.dumps(config.recipe()))["lr"] == 0.5
    assert type(TrainConfig(batch_size=np.int64(4)).batch_size) is int
    assert [type(v) for v in _check_recipe("MIX", np.int64(1), np.int64(2), np.float64(1e-3), np.int8(0), None)] \
        == [int, int, float, int, type(None)]


def test_bast_table_checks_its_output_folder_before_rendering(tmp_path):
    """Review: run_bast_table checked its output folder only when writing, after rendering and training."""
    from xai_loc.experiments.bast_table import run_bast_table

    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match=r"^output folder '.*file/out' is not allowed: .* is a file, not a folder$"):
        run_bast_table(tmp_path / "file" / "out", root=tmp_path / "data")
    assert not (tmp_path / "data").exists()
