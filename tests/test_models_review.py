"""Regressions of a review of xai_loc.models and the multichannel commands: the training data's sample rate and
microphone array recorded and checked, split checks of multichannel training, predict in the model's dtype,
position shapes, non-finite weights, constructor errors, the fine-tuning lineage in ``models list`` and the paper
column of ``scripts/train_zoo.py``.

``XAI_LOC_SCRIPTS_ROOT`` points the script test at another copy of ``scripts/`` (as in test_scripts_hardening).
"""
from __future__ import annotations

import copy
import importlib.util
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import xarray as xr
from helpers import one_line, refused, run_cli

from xai_loc.data.scene import paper_scene
from xai_loc.models import build_model, import_paper_checkpoint, read_card, save_checkpoint
from xai_loc.models.checkpoint import build_configured
from xai_loc.models.evaluation import WindowSet, evaluate_checkpoint, localization_errors, predict
from xai_loc.models.training import TrainConfig, train
from xai_loc.models.zoo import checkpoint_name, describe_training, list_checkpoints, pretrained_dir

SHIPPED = pretrained_dir() / checkpoint_name("loccnn", 0.15, 25.0)
PAPER = paper_scene()
SCRIPTS = Path(os.environ.get("XAI_LOC_SCRIPTS_ROOT") or Path(__file__).resolve().parents[1]) / "scripts"
#: A tiny LocCNN: 2 microphones, 256 samples.
TINY = {"n_mics": 2, "n_samples": 256}
TINY_MICS = np.array([[1.0, 2.0, 1.2], [1.1, 2.0, 1.2]])
FAST = TrainConfig(max_epochs=1, batch_size=2, eval_batch_size=4)


def windows(n: int, mics: np.ndarray, n_samples: int, fs: float = 16000.0, split: str | None = "test",
            seed: int = 0) -> xr.Dataset:
    """``n`` windows of noise, one source each, on microphones ``mics``, recorded at ``fs`` for ``split``."""
    rng = np.random.default_rng(seed)
    attrs = {"t60": 0.15, "snr": 25.0, "fs": fs, **({} if split is None else {"split": split})}
    return xr.Dataset(
        {"signals": (("window", "mic", "time"), rng.standard_normal((n, len(mics), n_samples)).astype(np.float32)),
         "source_position": (("window", "xyz"), rng.uniform(1.0, 2.0, (n, 3))),
         "source_id": ("window", np.arange(n))},
        coords={"mic_position": (("mic", "xyz"), mics)}, attrs=attrs)


def tiny_checkpoint(path: Path, **card) -> Path:
    return save_checkpoint(build_model("loccnn", **TINY), path, {"condition": {"t60": 0.15, "snr": 25.0}, **card})


# -- 1: the training data's sample rate and microphone array --------------------------------------------------------

def test_evaluate_refuses_data_of_another_sample_rate():
    message = one_line(evaluate_checkpoint, SHIPPED, windows(2, PAPER.mics, 5120, fs=48000.0))
    assert message == (f"checkpoint {SHIPPED} was trained on data sampled at 16000 Hz but the dataset is sampled at "
                       "48000 Hz; use data at 16000 Hz")


def test_evaluate_refuses_another_microphone_array_and_takes_the_paper_one():
    moved = PAPER.mics.copy()
    moved[3, 0] += 0.05
    message = one_line(evaluate_checkpoint, SHIPPED, windows(2, moved, 5120))
    assert message == (f"checkpoint {SHIPPED} was trained with microphone 3 at (1.025, 7, 1.2) m but the dataset has "
                       "it at (1.075, 7, 1.2) m; use the array it was trained with")
    assert evaluate_checkpoint(SHIPPED, windows(2, PAPER.mics, 5120)).predictions.shape == (2, 3)


def test_cards_record_the_rate_and_the_array(tmp_path):
    from xai_loc.models.zoo import data_recording

    described = WindowSet(windows(2, TINY_MICS, 256, fs=48000.0)).describe()
    assert described["fs"] == 48000.0 and described["mic_position"] == TINY_MICS.tolist()
    src = tmp_path / "loccnn.pth"
    torch.save(build_model("loccnn").state_dict(), src)
    card = read_card(import_paper_checkpoint(src, "loccnn", 0.6, 10.0))
    assert card["data_fs"] == 16000 and card["data_mic_position"] == PAPER.mics.tolist()
    for recorded in (card, read_card(SHIPPED)):
        fs, mics = data_recording(recorded)
        assert fs == 16000.0 and np.array_equal(mics, PAPER.mics)
    assert data_recording(read_card(pretrained_dir() / "cochcnn_default.safetensors")) is None


def test_commands_refuse_a_scene_of_another_rate_before_simulating(tmp_path):
    scene = tmp_path / "lab48.toml"
    scene.write_text('name = "lab48"\n[room]\nsize = [3.6, 8.2, 2.4]\nfs = 48000\n[array]\n'
                     'linear = { n = 16, spacing = 0.15, center = [1.7, 7.0, 1.2], axis = 0 }\n[sources]\n'
                     'positions = [[1.6, 5.4, 1.2], [1.8, 5.6, 1.3], [1.7, 5.5, 1.25], [1.65, 5.45, 1.2], '
                     '[1.9, 5.2, 1.1], [1.5, 5.8, 1.4]]\n[splits]\ntest = [0, 1]\ntrain = [2, 3]\nval = [4, 5]\n')
    says = (f"checkpoint {SHIPPED} was trained on data sampled at 16000 Hz but scene 'lab48' is sampled at 48000 Hz; "
            "use data at 16000 Hz")
    data = tmp_path / "d"
    refused(run_cli(["evaluate", str(SHIPPED), "--scene", str(scene), "--data", str(data)]), says)
    refused(run_cli(["train", "--model", "loccnn", "--t60", "0.15", "--snr", "25", "--scene", str(scene),
                     "--data", str(data), "--init-from", str(SHIPPED), "--out", str(tmp_path / "o.safetensors"),
                     "--max-epochs", "1", "--sources", "2"]), says)
    assert not data.exists() and not (tmp_path / "o.safetensors").exists()


def test_experiments_refuse_a_checkpoint_trained_at_another_rate(tmp_path):
    at48 = tmp_path / "at48.safetensors"
    save_checkpoint(build_model("loccnn"), at48, {"condition": {"t60": 0.15, "snr": 25.0},
                                                  "dataset": {"train": {"fs": 48000.0}}})
    data = tmp_path / "d"
    says = f"checkpoint {at48} was trained on data sampled at 48000 Hz but {{}} is sampled at 16000 Hz"
    refused(run_cli(["explain", "--checkpoint", str(at48), "--sources", "1", "--data", str(data)]),
            says.format("scene 'paper'"))
    refused(run_cli(["perturb", "--checkpoint", str(at48), "--sources", "1", "--data", str(data), "--no-randomized",
                     "--percentages", "0,10", "--modes", "random", "--out", str(tmp_path / "o")]),
            says.format("the paper scene"))
    assert not data.exists() and not (tmp_path / "o").exists()


def test_fine_tuning_refuses_an_init_checkpoint_of_another_rate(tmp_path):
    init = tiny_checkpoint(tmp_path / "init.safetensors",
                           dataset={"train": {"fs": 16000.0, "mic_position": TINY_MICS.tolist()}})
    data = [windows(4, TINY_MICS, 256, fs=48000.0, split=split, seed=i) for i, split in enumerate(("train", "val"))]
    out = tmp_path / "tuned.safetensors"
    message = one_line(train, "loccnn", *data, out, FAST, progress=False, init_from=init)
    assert message == (f"init checkpoint {init} was trained on data sampled at 16000 Hz but the dataset is sampled "
                       "at 48000 Hz; use data at 16000 Hz")
    assert not out.exists()


def test_trained_cards_record_rate_array_and_the_dropout_deviation(tmp_path):
    from xai_loc.models.zoo import data_recording

    data = [windows(4, TINY_MICS, 256, split=split, seed=i) for i, split in enumerate(("train", "val"))]
    card = read_card(train("loccnn", *data, tmp_path / "m.safetensors", FAST, progress=False))
    assert card["dataset"]["train"]["fs"] == 16000.0 and card["dataset"]["val"]["mic_position"] == TINY_MICS.tolist()
    assert data_recording(card)[0] == 16000.0 and np.array_equal(data_recording(card)[1], TINY_MICS)
    assert card["training"]["deviations"][-1] == (
        "dropout after fc1 element-wise (torch.nn.Dropout) instead of the paper's Dropout1d on the [batch, 500] "
        "features, which drops whole examples")



def test_a_card_without_records_runs_on_any_rate_and_array(tmp_path):
    from xai_loc.models.evaluation import check_recording

    model = build_model("loccnn", n_mics=16, n_samples=256).eval()
    legacy = save_checkpoint(model, tmp_path / "legacy.safetensors",  # as train wrote it before the records
                             {"condition": {"t60": 0.15, "snr": 25.0}, "dataset": {"train": {"digest": "0" * 64}}})
    elsewhere = np.stack([np.linspace(1.0, 2.5, 16), np.full(16, 4.0), np.full(16, 1.2)], axis=1)
    data = windows(3, elsewhere, 256, fs=48000.0)
    with torch.no_grad():
        by_hand = model(torch.from_numpy(data["signals"].values)).double().numpy()
    np.testing.assert_allclose(evaluate_checkpoint(legacy, data).predictions, by_hand, rtol=1e-5, atol=1e-6)
    check_recording(read_card(legacy), PAPER.room.fs, PAPER.mics, "the paper scene")


@pytest.mark.parametrize("arch", ["loccnn", "samplecnn"])
@pytest.mark.parametrize(("t60", "snr"), [(0.15, 25.0), (0.3, 20.0), (0.4, 15.0), (0.6, 10.0)])
def test_shipped_cards_record_the_paper_rate_and_array(arch, t60, snr):
    from xai_loc.models.checkpoint import weights_digest
    from xai_loc.models.evaluation import check_recording

    path = pretrained_dir() / checkpoint_name(arch, t60, snr)
    card = read_card(path)
    assert card["data_fs"] == 16000 and card["data_mic_position"] == PAPER.mics.tolist()
    assert weights_digest(path) == card["weights_sha256"]  # only the card changed
    for convention in ("gpurir", "pyroomacoustics"):
        scene = paper_scene(convention)
        check_recording(card, scene.room.fs, scene.mics, f"scene {scene.name!r}")
    moved = PAPER.mics.copy()
    moved[0, 1] -= 3.0
    assert one_line(check_recording, card, 16000.0, moved, "scene 'lab'") == (
        "the model was trained with microphone 0 at (0.575, 7, 1.2) m but scene 'lab' has it at (0.575, 4, 1.2) m; "
        "use the array it was trained with")


def test_an_eight_microphone_paper_import_records_no_array_and_runs(tmp_path):
    model = build_model("loccnn", n_mics=8).eval()
    src = tmp_path / "paper8.pth"
    torch.save(model.state_dict(), src)
    imported = import_paper_checkpoint(src, "loccnn", 0.15, 25.0, n_mics=8)
    card = read_card(imported)
    assert card["data_fs"] == 16000 and "data_mic_position" not in card
    eight = np.stack([np.linspace(1.175, 2.225, 8), np.full(8, 7.0), np.full(8, 1.2)], axis=1)
    data = windows(2, eight, 5120)
    with torch.no_grad():
        by_hand = model(torch.from_numpy(data["signals"].values)).double().numpy()
    np.testing.assert_allclose(evaluate_checkpoint(imported, data).predictions, by_hand, rtol=1e-5, atol=1e-6)
    assert one_line(evaluate_checkpoint, imported, windows(2, eight, 5120, fs=48000.0)) == (
        f"checkpoint {imported} was trained on data sampled at 16000 Hz but the dataset is sampled at 48000 Hz; "
        "use data at 16000 Hz")


# -- 2: multichannel training takes the train split, validates on the val split, never on the same data ----------

@pytest.mark.parametrize(("splits", "says"), [
    (("test", "val"), "the training data (the dataset) records split='test'; use the 'train' split"),
    (("train", "test"), "the validation data (the dataset) records split='test'; use the 'val' split"),
    (("all", "val"), "the training data (the dataset) records split='all'; use the 'train' split"),
])
def test_training_refuses_other_splits(tmp_path, splits, says):
    data = [windows(4, TINY_MICS, 256, split=split, seed=i) for i, split in enumerate(splits)]
    out = tmp_path / "m.safetensors"
    assert one_line(train, "loccnn", *data, out, FAST, progress=False) == says
    assert not out.exists()


def test_training_refuses_the_same_data_for_training_and_validation(tmp_path):
    data = windows(4, TINY_MICS, 256, split=None)
    out = tmp_path / "m.safetensors"
    assert one_line(train, "loccnn", data, data.copy(), out, FAST, progress=False) == (
        "the training and validation data are the same (the dataset); validate on held-out sources (the val split)")
    assert not out.exists()


# -- 3: predict runs the model in its own dtype ----------------------------------------------------------------------

def test_predict_runs_a_float64_model_in_float64():
    data = windows(5, TINY_MICS, 256)
    model = build_model("loccnn", **TINY).double().eval()
    x = torch.from_numpy(data["signals"].values)
    with torch.no_grad():
        by_hand = model(x.double()).numpy()
        in_float32 = copy.deepcopy(model).float()(x).double().numpy()
    pred = predict(model, data, batch_size=2)
    np.testing.assert_allclose(pred, by_hand, rtol=1e-12, atol=1e-15)
    assert np.abs(in_float32 - by_hand).max() > 1e-12  # float32 would have been told apart
    assert next(model.parameters()).dtype == torch.float64
    assert np.array_equal(predict(model, data, batch_size=np.int64(2)), pred)  # a NumPy integer is an integer


# -- 4: position shapes ---------------------------------------------------------------------------------------------

def test_localization_errors_take_n_by_3_or_one_position_only():
    pred = np.zeros((4, 3))
    assert localization_errors(pred, np.array([1.0, 2.0, 2.0]))["mae"] == pytest.approx(5 / 3, rel=1e-15)
    assert one_line(localization_errors, pred, np.ones((4, 1))) == (
        "true positions of shape (4, 1) are not allowed; give (n, 3) or (3,) arrays of metres")
    assert one_line(localization_errors, pred, 1.0) == (
        "true positions of shape () are not allowed; give (n, 3) or (3,) arrays of metres")
    assert one_line(localization_errors, np.zeros((4, 1)), np.ones((4, 3))) == (
        "predictions of shape (4, 1) are not allowed; give (n, 3) or (3,) arrays of metres")


# -- 5: non-finite weights ------------------------------------------------------------------------------------------

def test_saving_non_finite_weights_says_so(tmp_path):
    model = build_model("loccnn", **TINY)
    path = tmp_path / "m.safetensors"
    card = {"condition": {"t60": 0.15, "snr": 25.0}}
    with torch.no_grad():
        model.fc2.bias[0] = float("nan")
    assert one_line(save_checkpoint, model, path, card) == (
        "weight fc2.bias holds NaN or inf; a checkpoint needs finite weights")
    with torch.no_grad():
        model.fc2.bias[0] = 1e6
    assert one_line(save_checkpoint, model, path, card, "float16") == (
        "weight fc2.bias does not fit float16 (overflow); save as float32")
    assert not path.exists()


# -- 6: constructor errors ------------------------------------------------------------------------------------------

def test_build_model_refuses_an_unknown_argument_in_one_line():
    assert one_line(build_model, "loccnn", foo=1) == (
        "config does not fit loccnn (LocCNN.__init__() got an unexpected keyword argument 'foo')")
    assert one_line(build_model, "loccnn", n_mics=0) == "n_mics=0 is not allowed; use a positive integer"
    assert one_line(build_configured, "loccnn", {"foo": 1}, "checkpoint c") == (
        "checkpoint c does not fit loccnn (LocCNN.__init__() got an unexpected keyword argument 'foo')")
    assert one_line(build_configured, "loccnn", {"n_mics": 0}) == (
        "model_config: n_mics=0 is not allowed; use a positive integer")


# -- 7: a parent recorded under the listed file's own name ----------------------------------------------------------

def test_models_list_tells_a_parent_of_the_same_name_by_condition_and_digest(tmp_path):
    name = "loccnn_t60-0.15_snr-25.safetensors"
    parent = {"file": name, "condition": {"t60": 0.6, "snr": 10.0}, "sha256": "f" * 64,
              "weights_sha256": "1a2b3c4d" + "0" * 56}
    tiny_checkpoint(tmp_path / name, training={"epochs": 3, "init_from": parent})
    tiny_checkpoint(tmp_path / "other.safetensors", training={"epochs": 3, "init_from": parent})
    own, other = list_checkpoints(tmp_path)
    assert own.startswith(name) and own.endswith(
        "3 epochs, fine-tuned from a T60 0.6 s, SNR 10 dB model (weights 1a2b3c4d)")
    assert other.endswith(f"3 epochs, fine-tuned from {name} (trained on T60 0.6 s, SNR 10 dB)")
    older = {k: v for k, v in parent.items() if k != "weights_sha256"}
    assert describe_training({"epochs": 3, "init_from": older}, name) == (
        "3 epochs, fine-tuned from a T60 0.6 s, SNR 10 dB model (file sha256 ffffffff)")


# -- 8: the paper column of train_zoo -------------------------------------------------------------------------------

def test_train_zoo_finds_the_paper_mae_of_a_condition_within_rounding(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    monkeypatch.delitem(sys.modules, "_args", raising=False)
    spec = importlib.util.spec_from_file_location("train_zoo_under_test", SCRIPTS / "train_zoo.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    result = SimpleNamespace(metrics={"mae": 0.1}, baseline_metrics={"mae": 0.127}, to_text=lambda max_sources: "")
    monkeypatch.setattr(script, "simulate_dataset", lambda *args, **kwargs: tmp_path)
    monkeypatch.setattr(script, "WindowSet", lambda store: None)
    monkeypatch.setattr(script, "train", lambda *args, **kwargs: tmp_path / "run.safetensors")
    monkeypatch.setattr(script, "export", lambda *args: result)
    monkeypatch.setattr(script, "read_card", lambda path: {"training": {"epochs": 2, "stopped": "max_epochs",
                                                                        "wall_seconds": 36.0}})
    assert script.main(["--archs", "loccnn", "--conditions", "0.30000001:20", "--out", str(tmp_path / "out"),
                        "--data-root", str(tmp_path)]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1]
    assert row.endswith("| 0.1000 | 0.1270 | 0.103 | 2 | max_epochs | 0.01 |"), row



def test_the_python_experiments_refuse_a_checkpoint_trained_at_another_rate(tmp_path):
    """The experiments and ``explain_store`` check the cards in Python as the commands do (one
    ``ModelSet.check_recording``)."""
    from xai_loc.data import simulate_dataset
    from xai_loc.experiments.components import run_components
    from xai_loc.experiments.perturbation import run_perturbation
    from xai_loc.experiments.tdoa_probe import run_tdoa
    from xai_loc.explain import explain_store

    at48 = tmp_path / "at48.safetensors"
    save_checkpoint(build_model("loccnn"), at48, {"condition": {"t60": 0.15, "snr": 25.0},
                                                  "dataset": {"train": {"fs": 48000.0}}})
    store = simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=tmp_path / "d", n_sources=1, progress=False)
    said = "was trained on data sampled at 48000 Hz but {} is sampled at 16000 Hz; use data at 48000 Hz"
    assert one_line(run_perturbation, {"m": str(at48)}, store, percentages=(0, 10), modes=("random",),
                    randomized_baseline=False) == "model m " + said.format("the scored store")
    assert one_line(run_tdoa, {"m": str(at48)}, store, pairs=[(0, 1)], srp=False,
                    randomized_baseline=False) == "model m " + said.format("the store")
    assert one_line(run_components, {"m": str(at48)}, store) == "model m " + said.format("the scored store")
    assert one_line(explain_store, str(at48), store, out=tmp_path / "r.zarr",
                    progress=False) == f"checkpoint {at48} " + said.format(store)
    assert not (tmp_path / "r.zarr").exists()
    shipped = Path(__file__).resolve().parent.parent / "pretrained" / "loccnn_t60-0.15_snr-25.safetensors"
    result = run_perturbation({"m": str(shipped)}, store, percentages=(0, 10), modes=("random",),
                              randomized_baseline=False)
    assert np.isfinite(result["mae"].values).all()  # the paper's rate and array pass
