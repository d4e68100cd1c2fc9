"""Training (recipe, resume, determinism, refusals) and evaluation (hand-made known answers, baseline)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr
from safetensors.torch import load_file
from torch import nn

import xai_loc.models.trainer as trainer
from xai_loc.acoustics.room import ShoeBox, linear_array
from xai_loc.data import Scene, simulate_dataset
from xai_loc.errors import InputError
from xai_loc.models import build_model, load_model, read_card
from xai_loc.models.evaluation import Evaluation, WindowSet, evaluate, evaluate_checkpoint, localization_errors
from xai_loc.models.training import DEFAULT_LR, TrainConfig, state_path, train

#: A short recipe for the tiny stores: 10 training sources, 2 batches per epoch.
FAST = {"batch_size": 5, "eval_batch_size": 64}


def tiny_scene(n_mics: int = 4) -> Scene:
    """A 4 x 5 x 3 m room, a small linear array and 16 sources; windows of 1024 samples."""
    xs, ys = np.meshgrid(np.linspace(1.0, 3.0, 4), np.linspace(1.5, 3.0, 4), indexing="ij")
    sources = np.stack([xs.ravel(), ys.ravel(), np.linspace(1.1, 1.6, 16)], axis=1)
    val = [1, 6, 11, 12]
    splits = {"train": [i for i in range(16) if i not in val][:10], "val": val}
    return Scene(f"tiny{n_mics}", ShoeBox((4.0, 5.0, 3.0)), linear_array(n_mics, 0.1, (2.0, 4.0, 1.2)),
                 sources, splits, window=1024)


@pytest.fixture(scope="session")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    sim = {"t60": 0.15, "snr": 25.0, "root": root, "progress": False}
    return {
        "train": simulate_dataset(tiny_scene(), "train", **sim),
        "val": simulate_dataset(tiny_scene(), "val", **sim),
        "val3": simulate_dataset(tiny_scene(3), "val", **sim),
    }


@pytest.fixture(scope="session")
def reference(stores, tmp_path_factory):
    """An uninterrupted 6-epoch LocCNN run."""
    out = tmp_path_factory.mktemp("ref") / "loccnn.safetensors"
    return train("loccnn", stores["train"], stores["val"], out, TrainConfig(max_epochs=6, **FAST), progress=False)


def weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


# -- training ---------------------------------------------------------------------------------------

def test_training_lowers_the_loss_and_card_records_the_run(reference, stores):
    card = read_card(reference)
    t = card["training"]
    history = t["history"]
    assert history["epoch"] == [1, 2, 3, 4, 5, 6] and t["epochs"] == 6 and t["stopped"] == "max_epochs"
    # untrained outputs are near 0 m against targets of 1-3 m: MSE about 3 m^2; six epochs cut it
    assert history["train_loss"][0] > 1.0
    assert min(history["train_loss"][-3:]) < 0.5 * history["train_loss"][0]
    assert min(history["val_loss"]) < 0.5 * history["val_loss"][0]
    assert t["best_val_loss"] == min(history["val_loss"]) == history["val_loss"][t["best_epoch"] - 1]
    assert t["config"]["lr"] == DEFAULT_LR["loccnn"] == 1e-3 and t["config"]["lr_factor"] == 0.2
    assert t["config"]["lr_patience"] == 100 and t["config"]["early_stop_patience"] == 200 and t["seed"] == 0
    assert t["device"] == "cpu" and t["wall_seconds"] > 0 and not t["converged"]
    assert card["condition"] == {"t60": 0.15, "snr": 25.0}
    attrs = xr.open_zarr(stores["train"]).attrs
    assert card["dataset"]["train"]["digest"] == WindowSet(stores["train"]).digest
    assert card["dataset"]["train"]["n_sources"] == 10 and card["dataset"]["val"]["n_sources"] == 4
    assert card["dataset"]["train"]["split"] == attrs["split"] == "train"
    val = card["metrics"]["val"]
    assert set(val) >= {"metrics", "baseline", "skill", "n_windows"} and val["metrics"]["mse"] == t["best_val_loss"]

    # the checkpoint rebuilds alone and scores on the validation store what the card says
    model = load_model(reference)
    assert model.arch_name == "loccnn" and model.input_shape == (4, 1024)
    result = evaluate(model, stores["val"], batch_size=64)
    assert result.summary() == val  # the same predictions, bit for bit


def test_interrupted_run_resumes_to_the_same_weights(reference, stores, tmp_path, monkeypatch):
    out = tmp_path / "loccnn.safetensors"
    config = TrainConfig(max_epochs=6, **FAST)
    save = trainer.Trainer.save
    saved = []

    def killed_after_three(run):
        save(run)
        saved.append(run.epoch)
        if run.epoch == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer.Trainer, "save", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        train("loccnn", stores["train"], stores["val"], out, config, progress=False)
    monkeypatch.undo()
    assert saved == [1, 2, 3] and not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        state_path(out).name]
    state = torch.load(state_path(out), weights_only=True)
    assert state["epoch"] == 3 and len(state["history"]["train_loss"]) == 3

    train("loccnn", stores["train"], stores["val"], out, config, progress=False)
    ref, res = weights(reference), weights(out)
    assert ref.keys() == res.keys() and all(torch.equal(ref[k], res[k]) for k in ref)
    a, b = read_card(reference)["training"], read_card(out)["training"]
    assert a["history"] == b["history"] and a["best_epoch"] == b["best_epoch"]
    ref_state = torch.load(state_path(reference), weights_only=True)
    res_state = torch.load(state_path(out), weights_only=True)
    assert all(torch.equal(v, res_state["model"][k]) for k, v in ref_state["model"].items())
    assert ref_state["scheduler"] == res_state["scheduler"]


def test_seed_decides_the_weights(stores, tmp_path):
    def one_epoch(seed, name):
        config = TrainConfig(max_epochs=1, seed=seed, **FAST)
        return weights(train("loccnn", stores["train"], stores["val"], tmp_path / name, config, progress=False))

    a, b, c = one_epoch(0, "a.safetensors"), one_epoch(0, "b.safetensors"), one_epoch(1, "c.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_init_from_starts_at_the_checkpoint_and_is_recorded(reference, stores, tmp_path):
    # zero epochs of training keep the initial weights: they are the reference's, exactly
    untrained = train("loccnn", stores["train"], stores["val"], tmp_path / "zero.safetensors",
                      TrainConfig(max_epochs=1, lr=1e-30, **FAST), progress=False, init_from=reference)
    ref, got = weights(reference), weights(untrained)
    assert all(torch.allclose(ref[k], got[k], rtol=0, atol=1e-20) for k in ref)
    init = read_card(untrained)["training"]["init_from"]
    assert init["file"] == reference.name and init["epochs"] == 6
    assert init["condition"] == {"t60": 0.15, "snr": 25.0} and len(init["sha256"]) == 64
    assert init["weights_sha256"] == read_card(reference)["weights_sha256"]  # survives a change of the card alone
    # the init weights are validated first (epoch 0): the reference's best validation loss
    assert init["val_loss"] == pytest.approx(read_card(reference)["training"]["best_val_loss"], rel=1e-12)
    # a run that never beats its init keeps the init weights
    worse = train("loccnn", stores["train"], stores["val"], tmp_path / "worse.safetensors",
                  TrainConfig(max_epochs=1, lr=1.0, **FAST), progress=False, init_from=reference)
    assert read_card(worse)["training"]["best_epoch"] == 0
    assert all(torch.equal(ref[k], v) for k, v in weights(worse).items())
    # fine-tuning starts where the reference ended: its first validation loss is the reference's best
    out = tmp_path / "tuned.safetensors"
    train("loccnn", stores["train"], stores["val"], out, TrainConfig(max_epochs=1, **FAST), progress=False,
          init_from=reference)
    first = read_card(out)["training"]["history"]["val_loss"][0]
    assert first < read_card(reference)["training"]["history"]["val_loss"][0]
    # resuming with the same init keeps its record (the epoch-0 validation is not redone)
    train("loccnn", stores["train"], stores["val"], out, TrainConfig(max_epochs=2, **FAST), progress=False,
          init_from=reference)
    assert read_card(out)["training"]["init_from"] == read_card(untrained)["training"]["init_from"]
    assert read_card(out)["training"]["epochs"] == 2
    # a resumed run must name the same init checkpoint; another architecture is refused
    with pytest.raises(InputError, match="another training run"):
        train("loccnn", stores["train"], stores["val"], out, TrainConfig(max_epochs=2, **FAST), progress=False)
    samplecnn = train("samplecnn", stores["train"], stores["val"], tmp_path / "s.safetensors",
                      TrainConfig(max_epochs=1, **FAST), progress=False)
    with pytest.raises(InputError, match="holds samplecnn"):
        train("loccnn", stores["train"], stores["val"], tmp_path / "x.safetensors", TrainConfig(max_epochs=1, **FAST),
              progress=False, init_from=samplecnn)


def test_time_budget_stops_at_an_epoch_boundary_and_resumes(stores, tmp_path):
    out = tmp_path / "budget.safetensors"
    tight = TrainConfig(max_epochs=5, max_minutes=1e-6, **FAST)
    train("loccnn", stores["train"], stores["val"], out, tight, progress=False)
    t = read_card(out)["training"]
    assert (t["epochs"], t["stopped"]) == (1, "time_budget")
    train("loccnn", stores["train"], stores["val"], out, TrainConfig(max_epochs=2, **FAST), progress=False)
    t = read_card(out)["training"]
    assert (t["epochs"], t["stopped"], t["config"]["max_minutes"]) == (2, "max_epochs", None)


def test_early_stopping_and_plateau_schedule(stores, tmp_path):
    out = tmp_path / "early.safetensors"
    config = TrainConfig(max_epochs=30, early_stop_patience=1, lr_patience=0, **FAST)
    train("loccnn", stores["train"], stores["val"], out, config, progress=False)
    t = read_card(out)["training"]
    assert t["stopped"] == "early_stopping" and t["converged"] and t["epochs"] == t["best_epoch"] + 1 < 30
    losses = t["history"]["val_loss"]
    assert losses[-1] >= losses[-2] and losses[:-1] == sorted(losses[:-1], reverse=True)
    # lr_patience 0: the first epoch without improvement multiplies the learning rate by 0.2
    state = torch.load(state_path(out), weights_only=True)
    assert set(t["history"]["lr"]) == {1e-3} and state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(2e-4)


def test_samplecnn_default_lr_checkpoint_and_evaluation(stores, tmp_path):
    out = tmp_path / "samplecnn.safetensors"
    train("samplecnn", stores["train"], stores["val"], out, TrainConfig(max_epochs=1, **FAST), progress=False)
    card = read_card(out)
    assert card["training"]["config"]["lr"] == DEFAULT_LR["samplecnn"] == 1e-2
    assert load_model(out).arch_name == "samplecnn"
    result = evaluate_checkpoint(out, stores["val"], batch_size=64)
    assert result.summary() == card["metrics"]["val"]
    assert result.attrs["checkpoint"] == out.name and len(result.attrs["checkpoint_sha256"]) == 64


def test_bfloat16_autocast_trains_in_mixed_precision_and_is_recorded(reference, stores, tmp_path, monkeypatch):
    import xai_loc.models.training as training

    seen = {"conv": [], "loss_input": [], "weights": []}

    def spied(model, dtype, device):  # the training steps' forward pass, watched
        model.conv1.register_forward_hook(lambda m, i, o: seen["conv"].append((m.training, o.dtype)))
        forward = trainer.autocast_forward(model, dtype, device)

        def run(x):
            out = forward(x)
            seen["loss_input"].append(out.dtype)
            seen["weights"].append(model.conv1.weight.dtype)
            return out
        return run

    monkeypatch.setattr(training, "autocast_forward", spied)
    out = train("loccnn", stores["train"], stores["val"], tmp_path / "bf16.safetensors",
                TrainConfig(max_epochs=6, autocast="bfloat16", **FAST), progress=False)
    steps = read_card(out)["training"]["steps"]
    # every training step ran its convolutions in bfloat16 on float32 weights and gave the loss float32;
    # validation (the model in eval mode) ran in float32
    assert [dtype for training_mode, dtype in seen["conv"] if training_mode] == [torch.bfloat16] * steps
    assert {dtype for training_mode, dtype in seen["conv"] if not training_mode} == {torch.float32}
    assert set(seen["loss_input"]) == set(seen["weights"]) == {torch.float32} and len(seen["weights"]) == steps
    t, ref = read_card(out)["training"], read_card(reference)["training"]
    assert t["config"]["autocast"] == "bfloat16" and ref["config"]["autocast"] is None
    assert any("bfloat16 mixed precision" in d for d in t["deviations"])
    assert not any("mixed precision" in d for d in ref["deviations"])
    # the same seeded start and draws: the first epoch's loss is float32's but for bfloat16's rounding, and it learns
    assert t["history"]["train_loss"][0] != ref["history"]["train_loss"][0]
    assert t["history"]["train_loss"][0] == pytest.approx(ref["history"]["train_loss"][0], rel=0.05)
    assert min(t["history"]["val_loss"]) < 0.5 * t["history"]["val_loss"][0]
    # a run resumes only with the same precision
    with pytest.raises(InputError, match=r"recipe\.autocast"):
        train("loccnn", stores["train"], stores["val"], reference, TrainConfig(max_epochs=6, autocast="bfloat16",
                                                                                **FAST))
    with pytest.raises(InputError, match=r"autocast='float16' is not allowed; use None or 'bfloat16'"):
        TrainConfig(autocast="float16")


def test_resume_refuses_another_recipe_or_dataset(reference, stores):
    with pytest.raises(InputError, match=r"recipe\.lr: 0\.001 in the state, 0\.002 now"):
        train("loccnn", stores["train"], stores["val"], reference, TrainConfig(lr=2e-3, max_epochs=6, **FAST))
    unconfigured = xr.open_zarr(stores["train"]).load()  # the same windows, told by their labels (no config)
    del unconfigured.attrs["config"]
    with pytest.raises(InputError, match=r"datasets\.train"):
        train("loccnn", unconfigured, stores["val"], reference, TrainConfig(max_epochs=6, **FAST))
    with pytest.raises(InputError, match="arch: 'loccnn' in the state, 'samplecnn' now"):
        train("samplecnn", stores["train"], stores["val"], reference, TrainConfig(lr=1e-3, max_epochs=6, **FAST))


def test_corrupt_state_is_refused(stores, tmp_path):
    out = tmp_path / "x.safetensors"
    state_path(out).write_bytes(b"not a torch file")
    with pytest.raises(InputError, match=r"x\.safetensors\.state\.pt is unreadable"):
        train("loccnn", stores["train"], stores["val"], out, TrainConfig(**FAST))
    assert not out.exists()


def test_mismatched_stores_and_bad_settings_are_refused(stores, tmp_path):
    out = tmp_path / "x.safetensors"
    with pytest.raises(InputError, match=r"has 4 mics x 1024 samples but validation store .* has 3 mics x 1024"):
        train("loccnn", stores["train"], stores["val3"], out, TrainConfig(**FAST))
    model = build_model("loccnn", n_mics=4, n_samples=1024)
    with pytest.raises(InputError, match=r"loccnn expects windows of 4 mics x 1024 samples but .* has 3 mics"):
        evaluate(model, stores["val3"])
    with pytest.raises(InputError, match="ending in .safetensors"):
        train("loccnn", stores["train"], stores["val"], tmp_path / "x.pt")
    with pytest.raises(InputError, match="unknown model architecture 'resnet'"):
        train("resnet", stores["train"], stores["val"], out)
    with pytest.raises(InputError, match="does not exist"):
        train("loccnn", tmp_path / "nothing.zarr", stores["val"], out)
    for bad in ({"batch_size": 1}, {"lr": -1.0}, {"lr_factor": 1.5}, {"max_minutes": 0},
                {"seed": -1}, {"max_epochs": 2.5}, {"preload": "yes"}):
        with pytest.raises(InputError, match=f"{next(iter(bad))}="):
            TrainConfig(**bad)
    assert not any(tmp_path.iterdir())


def test_preloaded_and_on_demand_reads_agree(stores):
    lazy, held = WindowSet(stores["val"]), WindowSet(stores["val"], preload=True)
    idx = np.array([0, 3, 17, held.n_windows - 1])
    np.testing.assert_array_equal(lazy.read(idx), held.read(idx))
    np.testing.assert_array_equal(lazy.read(idx), xr.open_zarr(stores["val"]).signals.values[idx])


# -- evaluation on hand-made cases ------------------------------------------------------------------

#: Three sources with 2, 3 and 1 windows; positions exact in float32.
POSITIONS = np.array([[1.0, 2.0, 1.5], [2.0, 3.0, 1.25], [1.5, 2.5, 1.0]])
SOURCE_OF_WINDOW = np.array([0, 0, 1, 1, 1, 2])
OFFSET = np.array([0.25, -0.5, 0.125])


class TruthPlusOffset(nn.Module):
    """Reads the true position from the first three samples of microphone 0 and adds :data:`OFFSET`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, :3] + torch.tensor(OFFSET, dtype=x.dtype)


def hand_made_dataset() -> xr.Dataset:
    positions = POSITIONS[SOURCE_OF_WINDOW]
    signals = np.zeros((6, 2, 8), dtype=np.float32)
    signals[:, 0, :3] = positions
    return xr.Dataset(
        {"signals": (("window", "mic", "time"), signals)},
        coords={"source_id": ("window", SOURCE_OF_WINDOW + 10), "window_index": ("window", [0, 1, 0, 1, 2, 0]),
                "source_position": (("window", "xyz"), positions)},
        attrs={"t60": 0.6, "snr": 10.0, "split": "test"},
    )


def test_evaluation_known_answer_and_centroid_baseline():
    result = evaluate(TruthPlusOffset(), hand_made_dataset(), batch_size=4)
    m = result.metrics
    assert (m["mae_x"], m["mae_y"], m["mae_z"]) == (0.25, 0.5, 0.125)
    assert m["mae"] == pytest.approx(0.875 / 3, abs=1e-15)
    assert m["euclidean"] == pytest.approx(np.sqrt(0.0625 + 0.25 + 0.015625), abs=1e-15)
    # the baseline predicts the centroid of the three sources, each counted once: (1.5, 2.5, 1.25)
    np.testing.assert_array_equal(result.baseline_position, [1.5, 2.5, 1.25])
    b = result.baseline_metrics
    # per window |x - 1.5|: 0.5, 0.5, 0.5, 0.5, 0.5, 0; |y - 2.5| the same; |z - 1.25|: 0.25 x2, 0 x3, 0.25
    assert (b["mae_x"], b["mae_y"], b["mae_z"]) == pytest.approx((2.5 / 6, 2.5 / 6, 0.75 / 6), abs=1e-15)
    eu = [np.sqrt(0.25 + 0.25 + 0.0625)] * 2 + [np.sqrt(0.5)] * 3 + [0.25]
    assert b["euclidean"] == pytest.approx(np.mean(eu), abs=1e-15)
    s = result.summary()
    assert s["skill"]["mae"] == pytest.approx(1 - m["mae"] / b["mae"])
    assert (s["n_windows"], s["n_sources"]) == (6, 3)

    table = result.per_source()
    assert table["source_id"].tolist() == [10, 11, 12] and table["n_windows"].tolist() == [2, 3, 1]
    np.testing.assert_array_equal(table["mae"], np.tile(np.abs(OFFSET), (3, 1)))
    np.testing.assert_allclose(table["baseline_euclidean"], [np.sqrt(0.5625), np.sqrt(0.5), 0.25])

    d = result.to_dict()
    assert json.loads(json.dumps(d)) == d and len(d["per_source"]) == 3 and d["attrs"]["split"] == "test"
    text = result.to_text()
    assert "baseline (centroid)" in text and "0.2917" in text and "(1.500, 2.500, 1.250)" in text
    ds = result.to_dataset()
    assert ds.prediction.dims == ("window", "xyz") and ds.source_mae.dims == ("source", "xyz")
    assert ds.sizes == {"window": 6, "xyz": 3, "source": 3} and ds.attrs["t60"] == 0.6
    assert json.loads(ds.attrs["metrics"])["metrics"]["mae_x"] == 0.25 and ds.attrs["model"] == "TruthPlusOffset"


def test_localization_errors_broadcasts_and_checks_shapes():
    true = np.array([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]])
    e = localization_errors(np.zeros(3), true)
    assert (e["mae_x"], e["mae_y"], e["mae_z"], e["euclidean"], e["rmse"]) == (1.5, 2.0, 0.0, 2.5, np.sqrt(12.5))
    assert e["mse"] == pytest.approx(25 / 6)
    with pytest.raises(InputError, match="do not match"):
        localization_errors(np.zeros((3, 3)), np.zeros((2, 3)))
    with pytest.raises(InputError, match=r"\(n, 3\)"):
        localization_errors(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(InputError, match="fit 2 windows"):
        Evaluation(np.zeros((3, 3)), np.zeros((2, 3)), [0, 1], [0, 0])
