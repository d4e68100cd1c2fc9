"""The GPU zoo run, dry-run on the CPU: in-memory simulation, GPU-resident training options, the script itself.

Nothing here needs a GPU; what is GPU-specific (CUDA RIRs, fused Adam, cuDNN autotuning,
memory) is checked by the script's own preflight on the GPU machine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from safetensors.torch import load_file

import xai_loc.models.trainer as trainer
from xai_loc.acoustics.room import ShoeBox, linear_array
from xai_loc.data import Scene, paper_scene, simulate_dataset, simulate_windows
from xai_loc.errors import InputError
from xai_loc.models import WindowSet, load_model, read_card
from xai_loc.models.training import TrainConfig, state_path, train
from xai_loc.models.zoo import checkpoint_name, data_convention

ROOT = Path(__file__).resolve().parents[1]
#: Modules the GPU machine lacks (soundfile travels there as a wheel, so it is not blocked).
MISSING_THERE = ("zennit", "captum", "zarr", "pyroomacoustics", "sofar", "h5netcdf", "netCDF4")
FAST = {"batch_size": 5, "eval_batch_size": 64}


def tiny_scene() -> Scene:
    """A 4 x 5 x 3 m room, 4 microphones, 16 sources (10 train, 4 val), windows of 1024 samples."""
    xs, ys = np.meshgrid(np.linspace(1.0, 3.0, 4), np.linspace(1.5, 3.0, 4), indexing="ij")
    sources = np.stack([xs.ravel(), ys.ravel(), np.linspace(1.1, 1.6, 16)], axis=1)
    val = [1, 6, 11, 12]
    splits = {"train": [i for i in range(16) if i not in val][:10], "val": val}
    return Scene("tinyzoo", ShoeBox((4.0, 5.0, 3.0)), linear_array(4, 0.1, (2.0, 4.0, 1.2)), sources, splits,
                 window=1024)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny scene's splits on disk and in memory (float32)."""
    root = tmp_path_factory.mktemp("zoo-data")
    scene = tiny_scene()
    stores = {s: simulate_dataset(scene, s, 0.15, 25.0, root=root, progress=False) for s in ("train", "val")}
    memory = {s: simulate_windows(scene, s, 0.15, 25.0, progress=False) for s in ("train", "val")}
    return stores, memory


# -- in-memory simulation --------------------------------------------------------------------------

@pytest.mark.parametrize("t60,snr", [(0.15, 25.0), (0.6, 10.0)])
def test_memory_windows_equal_the_store(tmp_path, t60, snr):
    scene = paper_scene()
    store = simulate_dataset(scene, "val", t60, snr, root=tmp_path, n_sources=2, progress=False)
    split = simulate_windows(scene, "val", t60, snr, n_sources=2, progress=False)
    ds = xr.open_zarr(store)
    assert split.signals.dtype == torch.float32 and split.signals.device.type == "cpu"
    np.testing.assert_array_equal(split.signals.numpy(), ds.signals.values)  # bit for bit
    for name in ("source_id", "window_index", "speech_id", "source_position", "mic_position"):
        np.testing.assert_array_equal(getattr(split, name), ds[name].values)
    assert {k: split.attrs[k] for k in ds.attrs} == dict(ds.attrs)
    assert (split.attrs["storage_dtype"], split.attrs["convention"]) == ("float32", "gpurir")
    assert split.digest == WindowSet(store).digest == WindowSet(split).digest
    assert np.unique(split.source_id).size == 2 and split.timings["sources"] == 2

    # float16 is the float32 windows rounded; threads render the same windows
    half = simulate_windows(scene, "val", t60, snr, n_sources=2, dtype="float16", workers=2, progress=False)
    assert half.signals.dtype == torch.float16 and half.nbytes * 2 == split.nbytes
    assert torch.equal(half.signals, split.signals.half())
    assert half.digest == split.digest


def test_memory_simulation_refuses_bad_settings():
    scene = paper_scene()
    with pytest.raises(InputError, match="dtype 'bfloat16' is not allowed"):
        simulate_windows(scene, "val", 0.15, 25.0, n_sources=2, dtype="bfloat16", progress=False)
    with pytest.raises(InputError, match="workers=0 is not allowed"):
        simulate_windows(scene, "val", 0.15, 25.0, n_sources=2, workers=0, progress=False)
    with pytest.raises(InputError, match="split 'dev' is unknown"):
        simulate_windows(scene, "dev", 0.15, 25.0, n_sources=2, progress=False)


# -- training on in-memory windows -------------------------------------------------------------------

def test_training_on_memory_windows_equals_training_on_the_store(tiny, tmp_path):
    stores, memory = tiny
    config = TrainConfig(max_epochs=2, **FAST)
    a = train("loccnn", stores["train"], stores["val"], tmp_path / "a.safetensors", config, progress=False)
    b = train("loccnn", memory["train"], memory["val"], tmp_path / "b.safetensors", config, progress=False)
    wa, wb = load_file(str(a)), load_file(str(b))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ca, cb = read_card(a), read_card(b)
    assert ca["training"]["history"] == cb["training"]["history"]
    assert ca["dataset"]["train"]["digest"] == cb["dataset"]["train"]["digest"]
    assert cb["dataset"]["train"]["in_memory"] and cb["dataset"]["train"]["convention"] == "gpurir"
    assert cb["training"]["implementation"]["data"] == "in-memory tensor"
    # the paper's schedule: one draw per epoch, no deviation of the recipe
    assert ca["training"]["draws_per_epoch"] == 1 and ca["training"]["validations"] == ca["training"]["epochs"] == 2
    assert ca["training"]["deviations"][0] == "recipe: batch_size 5 (paper 100)"
    assert not any(d.startswith("validation every") for d in ca["training"]["deviations"])


def test_super_epochs_scale_the_schedule_and_log_every_epoch(tiny, tmp_path):
    _, memory = tiny
    out = tmp_path / "s.safetensors"
    config = TrainConfig(max_epochs=7, draws_per_epoch=3, lr_patience=4, early_stop_patience=9, save_state=False,
                         checkpoint_every_s=1e-3, **FAST)
    train("samplecnn", memory["train"], memory["val"], out, config, progress=False, full_log=True, notes=["a note"])
    t = read_card(out)["training"]
    # 7 paper epochs: super-epochs of 3, 3 and 1 draws; 2 batches of 5 per draw of 10 sources
    assert (t["epochs"], t["validations"], t["steps"], t["stopped"]) == (7, 3, 14, "max_epochs")
    assert t["log"]["draws"] == [3, 3, 1] and t["log"]["steps"] == [6, 6, 2] and t["log"]["paper_epoch"] == [3, 6, 7]
    assert len(t["log"]["seconds"]) == len(t["log"]["val_loss"]) == 3 and t["history"]["paper_epoch"] == [3, 6, 7]
    assert t["best_epoch"] == t["log"]["paper_epoch"][t["best_validation"] - 1]
    assert any("every 3 paper epochs" in d and "counted as 2 and 3 validations" in d for d in t["deviations"])
    assert t["deviations"][-1] == "a note" and not state_path(out).exists()  # save_state False


def test_deadline_cuts_a_super_epoch_short_and_keeps_the_best(tiny, tmp_path, monkeypatch):
    _, memory = tiny
    calls = []

    def clock():  # the first check (before super-epoch 2) is early; every later one is past the deadline
        calls.append(1)
        return 0.0 if len(calls) <= 3 else 1e12

    monkeypatch.setattr(trainer, "_now", clock)
    out = tmp_path / "d.safetensors"
    config = TrainConfig(max_epochs=100, draws_per_epoch=2, deadline=1e9, save_state=False, **FAST)
    train("loccnn", memory["train"], memory["val"], out, config, progress=False)
    t = read_card(out)["training"]
    # super-epoch 1 always completes; super-epoch 2 is dropped after 2 of its 4 steps
    assert (t["stopped"], t["epochs"], t["validations"], t["steps"], t["dropped_steps"]) == ("deadline", 2, 1, 4, 2)
    assert any(d.startswith("stopped by deadline") for d in t["deviations"])
    # a deadline already past stops a fine-tuning run before its first epoch: the init weights are kept
    monkeypatch.setattr(trainer, "_now", lambda: 1e12)
    kept = train("loccnn", memory["train"], memory["val"], tmp_path / "k.safetensors", config, progress=False,
                 init_from=out)
    t = read_card(kept)["training"]
    assert (t["stopped"], t["epochs"], t["best_epoch"]) == ("deadline", 0, 0)
    ref, got = load_file(str(out)), load_file(str(kept))
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_the_card_records_the_rate_after_the_last_scheduler_step(tiny, tmp_path):
    _, memory = tiny
    out = tmp_path / "lr.safetensors"
    # a rate so small that the validation never improves: patience 0 halves it after the second validation
    config = TrainConfig(max_epochs=2, lr=1e-7, lr_patience=0, lr_factor=0.5, save_state=False, **FAST)
    train("loccnn", memory["train"], memory["val"], out, config, progress=False)
    final = read_card(out)["training"]["final"]
    assert (final["lr"], final["next_lr"]) == (1e-7, 5e-8)  # where a continued run (gpu_zoo --init-from) starts


def test_extending_a_run_past_a_short_super_epoch_is_recorded(tiny, tmp_path):
    _, memory = tiny
    for first, short in ((4, False), (3, True)):  # draws 2: 3 paper epochs end in a super-epoch of 1
        out = tmp_path / f"x{first}.safetensors"
        for max_epochs in (first, 6):
            train("loccnn", memory["train"], memory["val"], out,
                  TrainConfig(max_epochs=max_epochs, draws_per_epoch=2, **FAST), progress=False)
        t = read_card(out)["training"]
        assert t["epochs"] == 6
        assert any(d.startswith("super-epoch 2 drew fewer than 2") for d in t["deviations"]) == short


def test_new_config_fields_are_checked_and_old_states_resume(tiny, tmp_path):
    for bad in ({"draws_per_epoch": 0}, {"deadline": -1.0}, {"checkpoint_every_s": 0}, {"save_state": 1},
                {"benchmark": "yes"}):
        with pytest.raises(InputError, match=f"{next(iter(bad))}="):
            TrainConfig(**bad)
    # draws_per_epoch 1 (the paper's) is left out of a run's identity: states written before it existed resume
    assert "draws_per_epoch" not in TrainConfig().recipe("loccnn")
    assert TrainConfig(draws_per_epoch=2).recipe("loccnn")["draws_per_epoch"] == 2
    _, memory = tiny
    out = tmp_path / "old.safetensors"
    train("loccnn", memory["train"], memory["val"], out, TrainConfig(max_epochs=1, **FAST), progress=False)
    state = torch.load(state_path(out), weights_only=True)
    for key in ("draws", "steps"):  # a state of the earlier layout (version 1, written before the digest)
        del state["history"][key]
    del state["sha256"]
    torch.save({**state, "version": 1}, state_path(out))
    train("loccnn", memory["train"], memory["val"], out, TrainConfig(max_epochs=2, **FAST), progress=False)
    t = read_card(out)["training"]
    assert (t["epochs"], t["validations"], t["steps"]) == (2, 2, 4)


# -- the script, exactly as the GPU machine runs it, without the packages it lacks there ------------

BLOCKER = """
import sys

BLOCKED = {blocked!r}


class _Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not installed on the GPU machine (blocked by the test)")
        return None


sys.meta_path.insert(0, _Missing())
"""


def test_gpu_zoo_dry_run_on_the_cpu(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(BLOCKER.format(blocked=set(MISSING_THERE))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    env.pop("OUT", None)
    probe = subprocess.run([sys.executable, "-c", "import zennit"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "blocked by the test" in probe.stderr  # the blocker is in force

    out = tmp_path / "out"
    cmd = ["bash", str(ROOT / "scripts" / "gpu_zoo.sh"), "--device", "cpu", "--sources", "6", "--deadline-s", "3600",
           "--out", str(out), "--max-epochs", "4", "--draws", "2", "--jobs", "2", "--sim-workers", "1",
           "--threads", "1"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "preflight passed" in run.stdout and "| loccnn | 0.6 s / 10 dB |" in run.stdout

    files = sorted(out.iterdir())
    expected = sorted(checkpoint_name(a, t, s) for a in ("loccnn", "samplecnn")
                      for t, s in ((0.15, 25), (0.3, 20), (0.4, 15), (0.6, 10)))
    assert [p.name for p in files] == expected  # exactly the 8 files that come back
    for path in files:
        assert path.stat().st_size < 16 << 20
        model = load_model(path)
        card = read_card(path)
        t = card["training"]
        assert model.arch_name == card["architecture"] and model.input_shape == (16, 5120)
        assert data_convention(card) == "gpurir" == card["dataset"]["train"]["convention"]
        assert card["dataset"]["train"]["storage_dtype"] == "float16" and card["dataset"]["train"]["n_sources"] == 6
        assert t["device"] == "cpu" and (t["epochs"], t["validations"], t["draws_per_epoch"]) == (4, 2, 2)
        assert t["steps"] == 4 and t["stopped"] == "max_epochs" and isinstance(t["wall_seconds"], float)
        assert len(t["log"]["seconds"]) == len(t["log"]["train_loss"]) == t["validations"]
        assert any("every 2 paper epochs" in d for d in t["deviations"])
        assert any("float16" in d for d in t["deviations"]) and any("espeak" in d for d in t["deviations"])
        assert set(card["metrics"]) == {"val", "test"} and card["metrics"]["test"]["n_sources"] == 6
        assert "baseline" in card["metrics"]["test"]
        run_record = t["run"]
        assert run_record["preflight"]["rir_max_difference"] <= 1e-5
        assert isinstance(run_record["preflight"]["corpus_matches_reference"], bool)
        assert set(run_record["simulation"]) == {"train", "val", "test"}
        json.dumps(card)  # JSON-able throughout

    # adopted here: scored on a CPU-simulated test split, beside the constant predictor and SRP-PHAT
    adopted = tmp_path / "pretrained"
    adopt = [sys.executable, str(ROOT / "scripts" / "adopt_zoo.py"), str(out), "--out", str(adopted), "--data-root",
             str(tmp_path / "data"), "--sources", "2", "--srp-windows", "2", "--threads", "1"]
    run = subprocess.run(adopt, capture_output=True, text=True, cwd=tmp_path, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert [p.name for p in sorted(adopted.iterdir())] == expected
    for path in sorted(adopted.iterdir()):
        card = read_card(path)
        test = card["metrics"]["test"]
        assert test["n_sources"] == 2 and card["dataset"]["test"]["n_sources"] == 2
        assert card["storage"]["dtype"] in ("float16", "float32") and card["training"]["device"] == "cpu"
        row = next(line for line in run.stdout.splitlines()
                   if line.startswith(f"| {card['architecture']} ({card['condition']['t60']:g} s"))
        assert f"| {test['metrics']['mae']:.3f}" in row and f"| {test['baseline']['metrics']['mae']:.3f} |" in row
    assert "SRP-PHAT: Euclidean error of the map peak" in run.stdout
    # without --out, a trial never lands in pretrained/: refused in one line before any work
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for extra, message in ((["--sources", "2"], "adopt_zoo.py: error: --sources 2 scores on a part of the test split; "
                                                "give --out"),
                           ([], f"adopt_zoo.py: error: {expected[0]}: trained on 6 sources, not the paper's 3152; "
                                "give --out")):
        refused = subprocess.run([sys.executable, str(ROOT / "scripts" / "adopt_zoo.py"), str(out), *extra],
                                 capture_output=True, text=True, cwd=elsewhere, timeout=300)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1 and lines[0].startswith(message)
        assert not any(elsewhere.iterdir())


def test_adopt_zoo_refuses_checkpoints_of_other_data_before_any_work(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    from xai_loc.models import build_model, save_checkpoint

    # a card that names no convention: trained before conventions existed, on pyroomacoustics-convention data
    save_checkpoint(build_model("loccnn"), results / "loccnn_t60-0.6_snr-10.safetensors",
                    {"condition": {"t60": 0.6, "snr": 10.0}})
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "adopt_zoo.py"), str(results), "--out",
                          str(tmp_path / "out"), "--data-root", str(tmp_path / "data")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        "adopt_zoo.py: error: loccnn_t60-0.6_snr-10.safetensors: trained on 'pyroomacoustics'-convention data; the "
        "zoo is trained on 'gpurir'"]
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the answer on a machine without CUDA")
def test_gpu_zoo_fails_fast_in_preflight(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_zoo.py"), "--out", str(out), "--device", "cuda"],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert run.returncode == 2 and "preflight failed: device 'cuda' requested but CUDA is not available" in run.stdout
    assert not out.exists()  # made only after a passed preflight
