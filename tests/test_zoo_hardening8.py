"""Review round 8 of the zoo scripts and the checkpoint and training-state files: gpu_zoo and train_zoo compare
their recipe with what ``--out`` (or the runs folder) holds before any work; a damaged training state is refused in
one line whatever the unpickler raises; checkpoint cards carry a digest; leftover temporaries of atomic writes are
no checkpoints; a checkpoint without a saved state is replaced only by a run on the same data.

The scripts run as :func:`test_scripts_hardening.run_here` runs them (``XAI_LOC_SCRIPTS_ROOT`` points them at
another copy of ``scripts/``, e.g. an untouched checkout).
"""
from __future__ import annotations

import importlib.util
import io
import json
import struct
import sys
import zipfile
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from helpers import one_line, refused, run_cli
from test_scripts_hardening import TREE, run_here
from test_scripts_hardening3 import no_work, one_line_refusal
from test_scripts_hardening6 import LOCCNN, checkpoint

from xai_loc.data import paper_scene
from xai_loc.data.store import SimulatedSplit
from xai_loc.errors import InputError
from xai_loc.models import build_model, load_model, read_card, save_checkpoint
from xai_loc.models.checkpoint import CARD_KEY
from xai_loc.models.trainer import read_state, state_path
from xai_loc.models.training import TrainConfig, train
from xai_loc.models.zoo import pretrained_dir

SCENE = paper_scene()


def split(name: str, seed: int, n: int = 2, mics: np.ndarray = SCENE.mics, samples: int = SCENE.window,
          t60: float = 0.15, snr: float = 25.0) -> SimulatedSplit:
    """``n`` windows of seeded noise at ``n`` sources of the paper's square, recorded as the paper scene's ``name``
    split (16 kHz, gpuRIR convention, its array): a configuration of its own per ``seed``."""
    rng = np.random.default_rng(seed)
    signals = 0.01 * torch.randn(n, len(mics), samples, generator=torch.Generator().manual_seed(seed))
    positions = np.stack([rng.uniform(1.5, 1.9, n), rng.uniform(5.3, 5.7, n), rng.uniform(1.0, 1.5, n)], axis=1)
    attrs = {"t60": t60, "snr": snr, "split": name, "convention": "gpurir", "fs": 16000.0,
             "config": json.dumps(["zoo-hardening8", name, seed, t60, snr])}
    return SimulatedSplit(signals, np.arange(n), np.zeros(n, dtype=np.int64), np.array(["-"] * n), positions,
                          np.asarray(mics, dtype=np.float64), attrs, {})


#: A LocCNN of 2 microphones and 256 samples, quick to train and to save.
TINY = {"mics": SCENE.mics[:2], "samples": 256}


def trained(out: Path, init: Path | None = None, tiny: bool = False, **config) -> Path:
    """A LocCNN of the paper scene's windows (``tiny``: of :data:`TINY` windows) trained one paper epoch at ``out`` on
    :func:`split` data (0.15 s, 25 dB), as gpu_zoo trains on the CPU (10 draws, batches of 2, no saved state) unless
    ``config`` says otherwise."""
    settings = {"batch_size": 2, "max_epochs": 1, "draws_per_epoch": 10, "save_state": False, **config}
    shape = TINY if tiny else {}
    return train("loccnn", split("train", 1, **shape), split("val", 2, **shape), out, TrainConfig(**settings),
                 progress=False, init_from=init)


def gpu_zoo_module(monkeypatch):
    """``scripts/gpu_zoo.py`` imported as a module with its siblings ``_args`` and ``train_zoo`` of the same folder
    (``sys.path`` and ``sys.modules`` put back afterwards)."""
    monkeypatch.setattr(sys, "path", sys.path[:])  # gpu_zoo puts its source tree first
    for name in ("_args", "train_zoo", "gpu_zoo"):
        spec = importlib.util.spec_from_file_location(name, TREE / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
    return sys.modules["gpu_zoo"]


# ------------------------------------------------- 1: the zoo scripts compare their recipe before any work
def test_gpu_zoo_refuses_a_checkpoint_of_another_recipe_in_out_before_any_work(tmp_path):
    """A checkpoint of batch size 2 in --out, a run of the default 100: refused in one line, exit status 2, --out as
    it was. Review: check_args passed no TrainConfig, so the preflight and the simulation ran first and the worker
    failed ('loccnn FAILED: InputError ... recipe.batch_size', exit status 1)."""
    out = tmp_path / "out"
    old = trained(out / LOCCNN)
    before = old.read_bytes()
    with no_work():
        done = run_here("scripts/gpu_zoo.py", "--out", out, "--device", "cpu", "--archs", "loccnn", "--conditions",
                        "0.15:25", cwd=tmp_path)
    one_line_refusal(done, f"gpu_zoo.py: error: {old} is a checkpoint of another training run (recipe.batch_size: 2 "
                           "in it, 100 now); remove it or write to another out")
    assert [p.name for p in out.iterdir()] == [LOCCNN] and old.read_bytes() == before


def test_gpu_zoo_checks_continuations_at_the_init_checkpoints_last_rate(tmp_path, monkeypatch):
    """check_args builds each model's TrainConfig as the worker does, on a CUDA-less machine for --device cuda too: a
    rerun of the same recipe and a continuation (--init-from, its learning rate the parent's last) pass, rerun into
    the continued checkpoint too, and another --lr is refused. Review: no recipe was compared before the worker."""
    gpu_zoo = gpu_zoo_module(monkeypatch)
    parent = trained(tmp_path / "zoo0" / LOCCNN)
    next_lr = read_card(parent)["training"]["final"]["next_lr"]
    continued = trained(tmp_path / "zoo1" / LOCCNN, init=parent, lr=next_lr)

    def check(*argv):
        args = gpu_zoo.parser().parse_args(["--archs", "loccnn", "--conditions", "0.15:25", "--batch-size", "2",
                                            *map(str, argv)])
        args.reserve_s = 1.0
        return gpu_zoo.check_args(args)

    assert check("--out", parent.parent, "--device", "cpu") == {LOCCNN}  # the same recipe again
    assert check("--out", tmp_path / "new", "--init-from", parent.parent, "--device", "cuda") == {LOCCNN}
    assert check("--out", continued.parent, "--init-from", parent.parent, "--device", "cpu") == {LOCCNN}
    with pytest.raises(InputError) as err:
        check("--out", continued.parent, "--init-from", parent.parent, "--device", "cpu", "--lr", "0.5")
    assert str(err.value) == (f"{continued} is a checkpoint of another training run (recipe.lr: {next_lr!r} in it, "
                              "0.5 now); remove it or write to another out")
    args = gpu_zoo.parser().parse_args(["--init-from", str(parent.parent), "--out", str(tmp_path)])
    init, config, notes = gpu_zoo.job_config(args, "loccnn", 0.15, 25.0, "cuda")  # what the worker trains with
    assert (init, config.lr, config.deterministic, config.benchmark, config.device, config.save_state) == \
        (parent, next_lr, False, True, "cpu", False)
    assert notes[-1] == f"continued from {LOCCNN} at its last learning rate {next_lr:g}"


def test_train_zoo_refuses_a_saved_state_of_another_recipe_before_simulating(tmp_path):
    """A state of batch size 2 in --runs, a run of the default 100: refused in one line before any simulation (no
    data folder, no --out). Review: check_job passed no config, so the splits were simulated first."""
    runs = tmp_path / "runs"
    run = trained(runs / "loccnn_t60-0.15_snr-25-n2.safetensors", save_state=True, draws_per_epoch=1)
    with no_work():
        done = run_here("scripts/train_zoo.py", "--archs", "loccnn", "--conditions", "0.15:25", "--sources", 2,
                        "--runs", runs, "--data-root", tmp_path / "data", "--out", tmp_path / "zoo", cwd=tmp_path)
    one_line_refusal(done, f"train_zoo.py: error: {state_path(run)} belongs to another training run "
                           "(recipe.batch_size: 2 in the state, 100 now); remove it or write to another out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


# ------------------------------------------------- 2: damaged training states, whatever the unpickler raises
#: What the weights-only unpickler raises on damaged bytes besides the errors read_state caught before.
UNCAUGHT = ("UnicodeDecodeError", "KeyError", "TypeError", "AttributeError")


def _pickle_span(blob: bytes) -> tuple[int, int]:
    """Start and length of ``data.pkl``'s bytes in a torch zip file (stored uncompressed)."""
    info = next(i for i in zipfile.ZipFile(io.BytesIO(blob)).infolist() if i.filename.endswith("/data.pkl"))
    name, extra = struct.unpack("<HH", blob[info.header_offset + 26 : info.header_offset + 30])
    return info.header_offset + 30 + name + extra, info.file_size


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_damaged_training_state_is_refused_in_one_line_whatever_the_unpickler_raises(tmp_path):
    """One flipped byte of data.pkl per exception type of the weights-only unpickler (found by flipping bytes in
    order): each state is refused in one line by read_state, and by train() resuming it. Review: read_state caught
    only UnpicklingError, RuntimeError, EOFError and OSError: tracebacks on UnicodeDecodeError, KeyError, TypeError,
    AttributeError."""
    out = trained(tmp_path / "run.safetensors", tiny=True, save_state=True, draws_per_epoch=1)
    state = state_path(out)
    blob = state.read_bytes()
    start, size = _pickle_span(blob)
    flips = {}
    for pos in range(start, start + size):
        damaged = bytearray(blob)
        damaged[pos] ^= 0xFF
        try:
            torch.load(io.BytesIO(bytes(damaged)), map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - classifying what the unpickler raises
            flips.setdefault(type(err).__name__, bytes(damaged))
        if set(UNCAUGHT) <= flips.keys():
            break
    assert set(UNCAUGHT) <= flips.keys(), sorted(flips)
    for kind in UNCAUGHT:
        state.write_bytes(flips[kind])
        assert one_line(read_state, state) == (f"training state {state} is unreadable ({kind}); remove it to start "
                                               "afresh"), kind
    with pytest.raises(InputError, match=r"^training state .* is unreadable \(AttributeError\); remove it to start"):
        trained(out, tiny=True, save_state=True, draws_per_epoch=1)
    assert state.read_bytes() == flips["AttributeError"]


# ------------------------------------------------- 3: a digest of the checkpoint card
def _flipped(path: Path, old: bytes, new: bytes) -> Path:
    """``path`` with the one occurrence of ``old`` in its header replaced by ``new`` (of the same length)."""
    blob = path.read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    assert blob[8 : 8 + n].count(old) == 1 and len(old) == len(new)
    out = path.with_name("flipped.safetensors")
    out.write_bytes(blob[:8] + blob[8 : 8 + n].replace(old, new) + blob[8 + n :])
    return out


def test_a_changed_card_byte_is_refused_in_one_line(tmp_path):
    """'"t60": 0.15' made '"t60": 0.17' in the header: read_card, load_model and 'models list' refuse it in one
    line. Review: the card had no digest, so it read as a model of T60 0.17 s and loaded."""
    path = save_checkpoint(build_model("loccnn", n_mics=2, n_samples=256), tmp_path / "m.safetensors",
                           {"condition": {"t60": 0.15, "snr": 25.0}})
    bad = _flipped(path, rb'\"t60\": 0.15', rb'\"t60\": 0.17')  # as the header escapes the card's JSON
    says = (f"checkpoint {bad} is damaged: its card does not match the sha256 it records (card_sha256); copy it again "
            "(or retrain it)")
    assert one_line(read_card, bad) == says
    assert one_line(load_model, bad) == says
    refused(run_cli(["models", "list", "--dir", str(tmp_path)]), says)


def test_every_card_byte_flip_is_refused_or_reads_the_same_card(tmp_path):
    """Every 3rd byte of a trained checkpoint's card flipped (bit 1): each file is refused in one line or reads as the
    same card (a float's digit past double precision; a flip in the name of the digest field leaves the contents
    as they were, read unchecked as cards from before the digest are). Review: the card had no digest; about 44 % of
    header bit flips loaded with a changed card."""
    path = trained(tmp_path / "run.safetensors", tiny=True)
    card, blob = read_card(path), path.read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    escaped = json.dumps(json.loads(blob[8 : 8 + n])["__metadata__"][CARD_KEY])[1:-1].encode()
    start = blob.index(escaped)  # the card's JSON as the header's string holds it
    probe, read = tmp_path / "probe.safetensors", {}
    probe.write_bytes(blob)
    with open(probe, "r+b") as handle:
        for pos in range(start, start + len(escaped), 3):
            handle.seek(pos)
            handle.write(bytes([blob[pos] ^ 0x02]))
            handle.flush()
            try:
                read[pos] = read_card(probe)
            except InputError as err:
                assert "\n" not in str(err)
            handle.seek(pos)
            handle.write(blob[pos : pos + 1])
    assert len(read) < 0.05 * len(range(start, start + len(escaped), 3))
    for pos, found in read.items():  # the same card, or its digest under another name
        assert len(found) == len(card) and found.get("card_sha256") in (card["card_sha256"], None), pos
        assert {k: v for k, v in found.items() if k in card and k != "card_sha256"} == \
            {k: v for k, v in card.items() if k != "card_sha256"}, pos


def test_card_rewrites_record_a_valid_digest_and_older_cards_stay_unchecked(tmp_path):
    """A card read back and saved again (as gpu_zoo adds test metrics, adopt_zoo a storage record) records the digest
    of its new contents; the shipped checkpoints, written before the digest, load unchecked. Review: no card had a
    digest."""
    from xai_loc.models.checkpoint import card_digest

    path = trained(tmp_path / "run.safetensors", tiny=True)
    card = read_card(path)
    assert card["card_sha256"] == card_digest(card)
    card["metrics"]["test"] = {"metrics": {"mae": 0.5}, "baseline": None}
    again = save_checkpoint(load_model(path), tmp_path / "again.safetensors", card)
    rewritten = read_card(again)
    assert rewritten["metrics"]["test"]["metrics"] == {"mae": 0.5}
    assert rewritten["card_sha256"] == card_digest(rewritten) != card["card_sha256"]
    shipped = sorted(pretrained_dir().glob("*.safetensors"))
    assert shipped and all("card_sha256" not in read_card(p) for p in shipped)
    load_model(shipped[0])


# ------------------------------------------------- 4: leftover temporaries of atomic writes
def test_adopt_zoo_and_models_list_skip_leftover_temporaries(tmp_path):
    """A results folder holding a zoo checkpoint and the leftovers of killed atomic writes (a truncated one and a
    complete copy, ``.<name>.<8 random characters>.tmp.safetensors``): 'models list' lists the checkpoint, adopt_zoo
    goes on to score it (its test split is the first work). Review: both globbed '*.safetensors': 'is not a
    safetensors file', 'would both be adopted'."""
    results = tmp_path / "results"
    good = checkpoint(results, LOCCNN, "good")
    (results / f".{LOCCNN}.k3x9q2zt.tmp.safetensors").write_bytes(good.read_bytes())
    (results / f".{LOCCNN}.a81jw0de.tmp.safetensors").write_bytes(good.read_bytes()[:5000])
    listed = run_cli(["models", "list", "--dir", str(results)])
    assert listed.exit_code == 0, listed.output
    assert [line.split()[0] for line in listed.stdout.split(f"checkpoints in {results}:")[1].strip().splitlines()] \
        == [LOCCNN]
    calls = []

    def simulate(scene, split, t60, snr, **kwargs):
        calls.append((split, t60, snr))
        raise InputError("stopped at the first work")

    with no_work(), mock.patch("xai_loc.data.simulate_dataset", simulate):
        done = run_here("scripts/adopt_zoo.py", results, "--out", tmp_path / "out", "--data-root", tmp_path / "data",
                        "--sources", 1, cwd=tmp_path)
    one_line_refusal(done, "adopt_zoo.py: error: stopped at the first work")
    assert calls == [("test", 0.15, 25.0)]
    for leftover in sorted(results.glob(".*")):
        leftover.unlink()
    (results / f".{LOCCNN}.a81jw0de.tmp.safetensors").write_bytes(good.read_bytes()[:5000])
    good.unlink()
    with no_work():
        done = run_here("scripts/adopt_zoo.py", results, "--out", tmp_path / "out", cwd=tmp_path)
    one_line_refusal(done, f"adopt_zoo.py: error: {results} holds no .safetensors checkpoints")


# ------------------------------------------------- 5: replacing a checkpoint without a saved state
def test_train_refuses_to_replace_a_checkpoint_of_other_data_without_a_state(tmp_path):
    """No saved state (gpu_zoo's runs, --no-save-state): a run on other data (here another condition) is refused in
    one line and the checkpoint kept; the same data replace it. Review: only the recipe was compared, so a model of
    another condition was silently replaced."""
    tiny = TINY
    config = TrainConfig(batch_size=2, max_epochs=1, save_state=False)
    out = train("loccnn", split("train", 1, **tiny), split("val", 2, **tiny), tmp_path / "m.safetensors", config,
                progress=False)
    before = out.read_bytes()
    other = split("train", 1, t60=0.6, snr=10.0, **tiny), split("val", 2, t60=0.6, snr=10.0, **tiny)
    digests = [s.digest for s in (split("train", 1, **tiny), split("val", 2, **tiny), *other)]
    says = one_line(train, "loccnn", *other, out, config, progress=False)
    assert says == (f"{out} is a checkpoint of another training run (datasets.train: {digests[0]!r} in it, "
                    f"{digests[2]!r} now; datasets.val: {digests[1]!r} in it, {digests[3]!r} now); remove it or "
                    "write to another out")
    assert out.read_bytes() == before
    train("loccnn", split("train", 1, **tiny), split("val", 2, **tiny), out, config, progress=False)
    assert read_card(out)["condition"] == {"t60": 0.15, "snr": 25.0} and out.read_bytes() != before
