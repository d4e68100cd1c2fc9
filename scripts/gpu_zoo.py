#!/usr/bin/env python
"""Simulate the paper's four conditions on one GPU and train the LocCNN and SampleCNN zoo there.

One command, sized for one lease of the H200 machine (issue 15). Everything stays in GPU
memory: nothing but the eight checkpoints comes back.

0. **Arguments**, refused in one line (``gpu_zoo.py: error: ...``, exit status 2) before anything is
   made: a count below 1 (``--sources`` below 2: training needs two), a ``--device`` other than cpu,
   cuda or cuda:N (whether this machine has it is the preflight's question), a ``--deadline-s`` not
   above 0, a ``--reserve-s`` outside [0, ``--deadline-s``), a recipe value the trainer's check table
   refuses (``--lr``, ``--batch-size``, ``--checkpoint-every-s`` ...), a T60 below the paper room's
   Sabine minimum, a condition or architecture given twice (two workers would write one file), no ``--out``, an
   ``--out`` holding other files or a checkpoint of this run's name that another run wrote (another recipe,
   model configuration or init checkpoint: :func:`~xai_loc.models.training.check_training`), ``--init-from``
   checkpoints that :func:`train_zoo.check_job` refuses (missing, damaged, of another architecture or model
   configuration than the paper scene's windows, trained on data of another sample rate or microphone array, or
   the very files this run writes).

1. **Preflight** (about 30 s, fails fast): imports (zennit, captum, zarr and pyroomacoustics
   are not needed, soundfile comes from carried wheels), the decoded speech corpus against
   its digest on the reference machine, a GPU RIR against the CPU RIR at the longest T60
   (within 1e-5), two sources through the in-memory simulator, two rounds of three training
   steps per architecture on GPU-resident windows (the second timed warm) with a checkpoint
   that is saved and loaded again, and the GPU memory the windows will need against what is
   free.
2. **One process per condition** (``--jobs`` at a time): simulate the paper scene's train,
   val and test splits (gpuRIR convention) straight into GPU memory
   (:func:`xai_loc.data.simulate_windows`, float16, ``--sim-workers`` threads), then train
   LocCNN and SampleCNN one after the other with the paper's recipe on the GPU-resident
   windows (:func:`xai_loc.models.training.train`: batches by ``index_select``, fused Adam,
   cuDNN autotuning, super-epochs of ``--draws`` paper epochs between validations, plateau and
   early-stopping patience converted to validations, a hard deadline, the best-validation
   checkpoint written every ``--checkpoint-every-s`` and at the end), each model getting an
   equal share of the time left. Each finished model is scored on its test split (on the
   GPU) and its checkpoint rewritten with the test metrics.
3. **Output**: exactly one file per model in ``--out``, under the shipped names
   (:func:`xai_loc.models.zoo.checkpoint_name`, e.g. ``loccnn_t60-0.6_snr-10.safetensors``;
   LocCNN 8.5 MB, SampleCNN 2.7 MB in float32), and nothing else: the lease brings back at
   most 8 files. Each card holds its model's complete per-epoch log (``training.log``: losses,
   learning rate, seconds, draws and steps of every super-epoch), the device, paper epochs,
   validations, steps, wall time, every deviation from the paper's recipe
   (``training.deviations``), the test metrics beside the centroid baseline
   (``metrics.test``) and the run's record (``training.run``: preflight results and the
   simulation timings of its condition). A table on stdout summarizes the run.

The GPU command (a later session with the GPU; 15 minutes of device time in all, so one
command of at most 10 minutes)::

    # here, once (the wheels are ignored by git; 1.6 MB):
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        -d .whl soundfile==0.14.0 cffi==2.0.0 pycparser==3.0
    # the device tool's run, with carry [".whl"] and timeout_s 600:
    bash scripts/gpu_zoo.sh --out "$OUT" --device cuda --deadline-s 540

Back on the CPU machine, ``python scripts/adopt_zoo.py RESULTS`` scores what came back on the
full test splits, beside the constant predictor and SRP-PHAT, and writes it to ``pretrained/``.
A later run continues from these checkpoints (put them in a folder of the working tree, e.g.
``pretrained/``) with ``--init-from pretrained``: each model starts from its checkpoint at the
learning rate it last had.

Without a GPU the same script trains on the CPU at full size, one condition and one model at a
time (its windows, 7.5 GB at T60 0.6 s, stay in RAM), and is the fastest way to do so here:
validation every ``--draws`` paper epochs instead of every epoch, no store to read. On the
2-core development machine, with both threads and freed memory kept for reuse, LocCNN takes
about 24 s per paper epoch (validation included, draws 5)::

    python scripts/gpu_zoo.py --device cpu --conditions 0.6:10 --archs loccnn --jobs 1 \
        --sim-workers 2 --threads 2 --draws 5 --reserve-s 150 --deadline-s 5400 --out DIR [--init-from DIR0]

Sizes and estimates (windows counted with :func:`xai_loc.data.store.count_windows`): the paper
scene holds 39,784 / 42,016 / 43,261 / 46,023 windows per condition (train + val + test;
T60 0.15 / 0.3 / 0.4 / 0.6 s), 16 x 5120 samples each: 6.5 / 6.9 / 7.1 / 7.5 GB in float16,
28.0 GB (26.1 GiB) for the four, plus about 3 GB per process. Simulation runs on the GPU in
blocks of 16 sources (image enumeration, responses, FFT convolution, windows); the host draws
each source's noise with NumPy (about 9 ms for 16 microphones x 3.6 s here) and decodes its
utterance, so 4225 sources take roughly 10-20 s of host time per process over its threads
(not yet measured on the GPU machine). With the brief's 0.1-0.2 s per paper epoch on an H200
for one model (32 steps of 100 windows: 3-6 ms per step, against 1.25 s for LocCNN and 2.55 s
for SampleCNN on one CPU thread here with freed memory kept, 1.95 s and 4.4 s without), a
validation costing about 0.8-0.9 of an epoch (7,400-8,500 windows forward only; a forward
pass is 0.35 of a step), four processes time-sharing the GPU and the two models of a
process one after the other, a 540 s deadline leaves each model about 200 s of wall time
(about 50 s of the GPU): roughly 25-50 super-epochs of 10 draws, i.e. 250-500 paper epochs
(the paper's early stopping waits 200 epochs without improvement, so expect ``stopped:
deadline`` and a continuation with ``--init-from``). The preflight prints its measured step
times and an estimate for the actual machine.

CPU dry run (what ``tests/test_gpu_zoo.py`` runs, with zennit, captum, zarr, pyroomacoustics,
sofar, h5netcdf and netCDF4 made unimportable; the windows then stay in RAM; about 30-40 s)::

    bash scripts/gpu_zoo.sh --device cpu --sources 6 --deadline-s 60 --out /tmp/zoo \
        --max-epochs 4 --draws 2 --jobs 2 --sim-workers 1 --threads 1
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# run from a source tree (the GPU machine has no installed xai-loc): the tree's xai_loc comes first
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ARCHS = ("loccnn", "samplecnn")
SPLITS = ("train", "val", "test")
#: SHA-256 of the shipped corpus as decoded on the reference machine (every utterance's float32
#: samples at 16 kHz, in corpus order; soundfile 0.14.0, libsndfile 1.2.2).
CORPUS_SHA256 = "07fc1387acbbde62d98e6db76893a34c8198dcfd7db2fcef851bcabb752963f5"
#: Largest difference allowed between a GPU and a CPU room impulse response.
RIR_TOLERANCE = 1e-5
#: GPU memory a condition's process needs beside its windows (context, activations, cuDNN workspaces).
PROCESS_OVERHEAD_BYTES = 3 << 30
#: Seconds a condition's process may run past its deadline before it is killed: a 540 s deadline,
#: the launcher's wheel install and interpreter start (~20 s) and this grace stay inside the
#: device tool's 600 s limit, so the summary table is printed and nothing is cut mid-write.
KILL_GRACE_S = 15.0
#: Files the device machine brings back, and their largest size.
MAX_FILES, MAX_FILE_BYTES = 8, 16 << 20
#: Departures of the data from the paper's (the trainer adds those of the recipe itself).
DATA_NOTES = (
    "speech: xai-loc's shipped corpus (300 synthetic espeak-ng utterances) instead of CMU ARCTIC",
    "room impulse responses: xai-loc's torch image-source simulator under the gpuRIR convention "
    "(gpuRIR's image grid, sign and 8 ms Hann-windowed sinc, the kernel evaluated exactly where gpuRIR "
    "interpolates a look-up table), not gpuRIR itself",
)


def condition_label(t60: float, snr: float) -> str:
    return f"{t60:g}:{snr:g}"


def say(*parts) -> None:
    print(*parts, flush=True)


def parser() -> argparse.ArgumentParser:
    from _args import Parser, condition, count, device_spelling, seconds, setting, sources, threads  # scripts/ first

    from xai_loc.data.scene import PAPER_CONDITIONS
    from xai_loc.models.trainer import AUTOCAST
    from xai_loc.models.training import CHECKS

    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
                   help="folder of the checkpoints (default: $OUT)")
    p.add_argument("--device", type=device_spelling, default="cuda", help="cuda, cuda:N or cpu (a dry run)")
    p.add_argument("--deadline-s", type=seconds, default=540.0,
                   help="wall-clock seconds from the start to the last file written")
    p.add_argument("--sources", type=sources, default=None, help="only N sources of each split (a tiny run)")
    p.add_argument("--init-from", type=Path, default=None,
                   help="folder of checkpoints under the shipped names to continue from (at their last lr)")
    p.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
    p.add_argument("--conditions", nargs="+", type=condition, default=list(PAPER_CONDITIONS),
                   metavar="T60:SNR", help="default: the paper's four")
    p.add_argument("--autocast", choices=tuple(AUTOCAST), default=None,
                   help="mixed-precision training steps (2x measured on an AVX512-BF16 CPU)")
    p.add_argument("--draws", type=setting(CHECKS, "draws_per_epoch", integer=True), default=10,
                   help="paper epochs per super-epoch (between validations)")
    p.add_argument("--max-epochs", type=setting(CHECKS, "max_epochs", integer=True), default=5000,
                   help="paper epochs at most")
    p.add_argument("--batch-size", type=setting(CHECKS, "batch_size", integer=True), default=100)
    p.add_argument("--eval-batch-size", type=setting(CHECKS, "eval_batch_size", integer=True), default=500)
    p.add_argument("--lr", type=setting(CHECKS, "lr"), default=None,
                   help="default: the paper's (or the init checkpoint's last)")
    p.add_argument("--seed", type=setting(CHECKS, "seed", integer=True), default=0,
                   help="seeds the data (speech, noise) and the training")
    p.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="storage of the windows")
    p.add_argument("--jobs", type=count, default=None, help="condition processes at a time (default: all)")
    p.add_argument("--sim-workers", type=count, default=None, help="simulation threads per process")
    p.add_argument("--threads", type=threads, default=None, help="torch CPU threads per process")
    p.add_argument("--checkpoint-every-s", type=setting(CHECKS, "checkpoint_every_s"), default=90.0)
    p.add_argument("--reserve-s", type=float, default=None,
                   help="seconds kept at the end of each process for test scoring and the last writes, "
                        "0 or more and less than --deadline-s (default: 5 %% of --deadline-s, at most 20)")
    p.add_argument("--worker", type=condition, default=None, help=argparse.SUPPRESS)
    p.add_argument("--deadline-at", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--record", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def default_parallelism(args) -> tuple[int, int, int]:
    """(jobs, sim workers, torch threads) per process."""
    jobs = args.jobs or len(args.conditions)
    share = max(1, (os.cpu_count() or 1) // jobs)
    return jobs, args.sim_workers or share, args.threads or share


# ------------------------------------------------------------------------------------------------
# preflight
# ------------------------------------------------------------------------------------------------

def synthetic_split(n: int, split: str, device, dtype, seed: int):
    """``n`` windows of noise with random paper-scene positions, as an in-memory split."""
    import numpy as np
    import torch

    from xai_loc.data.store import SimulatedSplit

    rng = np.random.default_rng(seed)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    signals = (0.01 * torch.randn(n, 16, 5120, generator=gen)).to(device=device, dtype=dtype)
    positions = np.stack([rng.uniform(0.8, 2.6, n), rng.uniform(4.5, 6.5, n), rng.uniform(1.0, 1.5, n)], axis=1)
    attrs = {"t60": 0.6, "snr": 10.0, "split": split, "convention": "gpurir",
             "config": json.dumps(["preflight", split])}
    return SimulatedSplit(signals, np.arange(n), np.zeros(n, dtype=np.int64), np.array(["-"] * n), positions,
                          np.zeros((16, 3)), attrs, {})


def preflight(args, device, corpus, scene) -> dict:
    """Fail fast on anything the run needs; return what was measured (JSON-able)."""
    import numpy as np
    import torch

    from xai_loc.acoustics.backends import simulate_rirs
    from xai_loc.data.store import count_windows, simulate_windows
    from xai_loc.models import load_model, read_card
    from xai_loc.models.training import TrainConfig, train
    from xai_loc.models.zoo import checkpoint_name
    from xai_loc.runtime import no_tf32, software_versions

    t0 = time.monotonic()
    report = {"device": str(device), "software": software_versions(), "python": sys.version.split()[0]}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        free, total = torch.cuda.mem_get_info(device)
        report.update(gpu=props.name, gpu_memory_gb=round(total / 1e9, 1), gpu_free_gb=round(free / 1e9, 1))
    say(f"preflight: {report.get('gpu', device)}; torch {torch.__version__}, python {report['python']}")

    # the corpus decodes to the reference machine's samples
    sha = hashlib.sha256()
    for i in range(len(corpus)):
        sha.update(corpus.load(i).tobytes())
    report["corpus_sha256"] = sha.hexdigest()
    report["corpus_matches_reference"] = report["corpus_sha256"] == CORPUS_SHA256
    if not report["corpus_matches_reference"]:
        say("preflight: WARNING the speech corpus decodes differently from the reference machine "
            "(the data will not equal stores simulated there bit for bit)")

    # the device's RIR equals the CPU's at the longest T60
    t60 = max(t for t, _ in args.conditions)
    sid = int(scene.source_ids("train")[0])
    with no_tf32():
        start = time.monotonic()
        here = simulate_rirs("torch", scene.room, scene.sources[sid][None], scene.mics, t60, device=str(device),
                             convention=scene.convention)
        report["rir_seconds_device"] = time.monotonic() - start
        ref = simulate_rirs("torch", scene.room, scene.sources[sid][None], scene.mics, t60, device="cpu",
                            convention=scene.convention)
    diff = float(np.max(np.abs(here.astype(np.float64) - ref)))
    report["rir_max_difference"] = diff
    if not diff <= RIR_TOLERANCE:
        raise SystemExit(f"preflight failed: the {device} RIR differs from the CPU RIR by {diff:.3g} "
                         f"(> {RIR_TOLERANCE:g}) at T60 {t60:g} s")
    say(f"preflight: RIR on {device} = CPU RIR within {diff:.2g} (T60 {t60:g} s)")

    # the in-memory simulator on the device, timed per source at the longest T60
    probe = simulate_windows(scene, "val", t60, args.conditions[0][1], n_sources=2, corpus=corpus, seed=args.seed,
                             device=str(device), dtype=args.dtype, progress=False)
    report["sim_seconds_per_source"] = probe.timings["render"] / 2
    del probe

    # memory: every condition's windows at once, plus each process's own
    needed = {}
    for t, snr in args.conditions:
        n = sum(count_windows(scene, split, t, snr, n_sources=args.sources, corpus=corpus, seed=args.seed)
                for split in SPLITS)
        needed[condition_label(t, snr)] = n * scene.mics.shape[0] * scene.window * (2 if args.dtype == "float16"
                                                                                    else 4)
    report["window_bytes"] = needed
    if device.type == "cuda":
        jobs = default_parallelism(args)[0]
        largest = sorted(needed.values(), reverse=True)[:jobs]
        need = sum(largest) + jobs * PROCESS_OVERHEAD_BYTES
        if need > free:
            raise SystemExit(f"preflight failed: the windows need {need / 1e9:.1f} GB of GPU memory, "
                             f"{free / 1e9:.1f} GB are free; use --dtype float16, --jobs or --sources")
    say("preflight: windows " + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in needed.items())
        + f" ({args.dtype})")

    # three training steps per architecture on device-resident windows; the checkpoint saves and loads
    n = args.batch_size if args.sources is None else max(2, min(args.batch_size, args.sources))
    dtype = {"float16": torch.float16, "float32": torch.float32}[args.dtype]
    train_set = synthetic_split(n, "train", device, dtype, 1)
    val_set = synthetic_split(max(2, n // 4), "val", device, dtype, 2)
    report["steps"] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            config = TrainConfig(batch_size=args.batch_size, max_epochs=6, draws_per_epoch=3, device=str(device),
                                 autocast=args.autocast,
                                 eval_batch_size=args.eval_batch_size, deterministic=device.type != "cuda",
                                 benchmark=device.type == "cuda", save_state=False)
            path = train(arch, train_set, val_set, Path(tmp) / checkpoint_name(arch, 0.6, 10), config,
                         progress=False, full_log=True)
            log = read_card(path)["training"]
            if log["steps"] != 6:
                raise SystemExit(f"preflight failed: {arch} made {log['steps']} steps instead of 2 x 3")
            model = load_model(path, device=str(device))
            with torch.inference_mode():
                out = model(train_set.signals[:2].float())
            if out.shape != (2, 3) or not bool(torch.isfinite(out).all()):
                raise SystemExit(f"preflight failed: the reloaded {arch} gives {tuple(out.shape)} non-finite outputs")
            first, warm = log["log"]["seconds"]
            report["steps"][arch] = {"batch": n, "seconds_first_3_steps": first, "seconds_per_step": warm / 3}
            say(f"preflight: {arch} 3 steps of {n} windows + validation in {first:.2f} s (cuDNN autotuning "
                f"included), 3 more in {warm:.2f} s; checkpoint saved and loaded")
    report["seconds"] = time.monotonic() - t0
    say(f"preflight passed in {report['seconds']:.1f} s")
    return report


def estimate(args, record: dict, scene, left: float) -> str:
    """A rough plan of the run from the preflight's timings (the GPU is time-shared by the processes)."""
    jobs, sim_workers, _ = default_parallelism(args)
    waves = math.ceil(len(args.conditions) / jobs)
    sources = {s: len(scene.source_ids(s)) if args.sources is None else min(args.sources, len(scene.source_ids(s)))
               for s in SPLITS}
    sim = record["sim_seconds_per_source"] * sum(sources.values()) / max(1.0, 0.6 * sim_workers)  # threads: ~60 %
    per_model = (left / waves - 10.0 - sim - args.reserve_s) / len(args.archs)
    lines = [f"plan: {len(args.conditions)} condition processes ({jobs} at a time) x {len(args.archs)} models, "
             f"{left:.0f} s left; simulation about {sim:.0f} s per condition, then about {per_model:.0f} s "
             "per model"]
    for arch, v in record["steps"].items():
        epoch = v["seconds_per_step"] * math.ceil(sources["train"] / args.batch_size)  # one draw, GPU to itself
        paper_epochs = max(0.0, per_model) / (jobs * epoch * (1.0 + 0.9 / args.draws))  # validation ~0.9 epoch
        capped = paper_epochs > args.max_epochs
        paper_epochs = min(paper_epochs, args.max_epochs)
        lines.append(f"  {arch}: {v['seconds_per_step'] * 1e3:.1f} ms per step alone, {epoch:.3f} s per paper "
                     f"epoch: about {paper_epochs:.0f} paper epochs ({math.ceil(paper_epochs / args.draws)} "
                     "super-epochs)" + (" as --max-epochs allows" if capped else ""))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# one condition (a worker process)
# ------------------------------------------------------------------------------------------------

def job_config(args, arch: str, t60: float, snr: float, device_type: str, device: str = "cpu",
               deadline: float | None = None):
    """``(init checkpoint, TrainConfig, notes)`` of one model of the run: what the worker trains with (on a
    ``device`` of ``device_type``, until ``deadline``) and what :func:`check_args` hands to
    :func:`train_zoo.check_job` before any work. Without ``--lr`` an init checkpoint's run continues at its last
    learning rate. ``device`` and ``deadline`` are run fields, outside the recipe that a checkpoint in ``--out`` is
    compared on, so that the check needs no GPU."""
    from xai_loc.models import read_card
    from xai_loc.models.training import TrainConfig
    from xai_loc.models.zoo import checkpoint_name

    name = checkpoint_name(arch, t60, snr)
    init = None if args.init_from is None else args.init_from / name
    lr, notes = args.lr, list(DATA_NOTES)
    if init is not None and lr is None:
        parent = read_card(init)
        final = (parent.get("training") or {}).get("final") or {}
        lr = final.get("next_lr", final.get("lr"))  # after the parent's last scheduler step (older cards: before)
        if lr is not None:
            notes.append(f"continued from {init.name} at its last learning rate {lr:g}")
        cond = parent.get("condition") or {}
        if (cond.get("t60"), cond.get("snr")) != (t60, snr):
            notes.append(f"fine-tuned from a model trained on T60 {cond.get('t60')} s, SNR {cond.get('snr')} dB "
                         f"(the paper trains each condition from a seeded initialization)")
    config = TrainConfig(batch_size=args.batch_size, lr=lr, max_epochs=args.max_epochs, seed=args.seed,
                         device=device, eval_batch_size=args.eval_batch_size,
                         deterministic=device_type != "cuda", benchmark=device_type == "cuda",
                         draws_per_epoch=args.draws, deadline=deadline, checkpoint_every_s=args.checkpoint_every_s,
                         autocast=args.autocast, save_state=False)
    return init, config, notes


def worker(args) -> int:
    from xai_loc.acoustics.speech import SpeechCorpus
    from xai_loc.data import paper_scene, simulate_windows
    from xai_loc.models import load_model, read_card, save_checkpoint
    from xai_loc.models.evaluation import WindowSet, evaluate
    from xai_loc.models.training import train
    from xai_loc.models.zoo import PAPER_MAE, checkpoint_name
    from xai_loc.runtime import configure_cpu, resolve_device

    t60, snr = args.worker
    tag = f"[{condition_label(t60, snr)}]"
    _, sim_workers, threads = default_parallelism(args)
    configure_cpu(threads)
    device = resolve_device(args.device)
    deadline = args.deadline_at
    record = json.loads(args.record.read_text(encoding="utf-8")) if args.record else {}
    scene = paper_scene()
    corpus = SpeechCorpus.shipped(fs=scene.room.fs)

    sets, sims = {}, {}
    for split in SPLITS:
        sim = simulate_windows(scene, split, t60, snr, n_sources=args.sources, corpus=corpus, seed=args.seed,
                               device=str(device), dtype=args.dtype, workers=sim_workers, progress=False)
        sims[split] = {**sim.timings, "windows": int(sim.signals.shape[0]), "bytes": sim.nbytes}
        sets[split] = WindowSet(sim)
        say(f"{tag} simulated {split}: {sim.timings['sources']} sources, {sim.signals.shape[0]} windows, "
            f"{sim.nbytes / 1e9:.2f} GB {args.dtype} in {sim.timings['total']:.1f} s")

    status = 0
    for i, arch in enumerate(args.archs):
        name = checkpoint_name(arch, t60, snr)
        out = args.out / name
        end = time.time() + (deadline - args.reserve_s - time.time()) / (len(args.archs) - i)
        init, config, notes = job_config(args, arch, t60, snr, device.type, str(device), end)
        say(f"{tag} {arch}: training until {end - time.time():.0f} s from now")
        try:
            train(arch, sets["train"], sets["val"], out, config, progress=False, init_from=init, notes=notes,
                  full_log=True)
            card = read_card(out)
            model = load_model(out, device=str(device))
            test = evaluate(model, sets["test"], args.eval_batch_size, device)
            card["metrics"]["test"] = test.summary()
            card["dataset"]["test"] = sets["test"].describe()
            card["training"]["run"] = {"script": "scripts/gpu_zoo.py", "argv": sys.argv[1:],
                                       "simulation": sims, "preflight": record}
            save_checkpoint(model, out, {k: v for k, v in card.items()
                                         if k not in ("format", "format_version", "architecture", "config",
                                                      "dtype")})
        except Exception as err:  # report and go on with the next model
            status = 1
            say(f"{tag} {arch} FAILED: {type(err).__name__}: {err}")
            continue
        t = card["training"]
        row = {"arch": arch, "t60": t60, "snr": snr, "file": name, "test_mae": test.metrics["mae"],
               "baseline_mae": test.baseline_metrics["mae"], "paper_mae": PAPER_MAE.get(arch, {}).get((t60, snr)),
               "epochs": t["epochs"], "validations": t["validations"], "steps": t["steps"],
               "best_epoch": t["best_epoch"], "stopped": t["stopped"], "wall_s": t["wall_seconds"],
               "sim_s": sum(s["total"] for s in sims.values()), "bytes": out.stat().st_size}
        say("RESULT " + json.dumps(row))
    return status


# ------------------------------------------------------------------------------------------------
# the orchestrating process
# ------------------------------------------------------------------------------------------------

def _relay(proc: subprocess.Popen, tag: str, results: list) -> None:
    for line in proc.stdout:
        line = line.rstrip("\n")
        if line.startswith("RESULT "):
            results.append(json.loads(line[len("RESULT "):]))
        else:
            print(line if line.startswith("[") else f"[{tag}] {line}", flush=True)


def run_workers(args, deadline: float, record_file: Path) -> tuple[list[dict], list[str]]:
    """One process per condition, ``--jobs`` at a time in waves that share the time left."""
    jobs, sim_workers, threads = default_parallelism(args)
    waves = [args.conditions[i : i + jobs] for i in range(0, len(args.conditions), jobs)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    results, failures = [], []
    for w, wave in enumerate(waves):
        wave_end = time.time() + (deadline - time.time()) / (len(waves) - w)
        procs = []
        for t60, snr in wave:
            argv = [sys.executable, str(Path(__file__).resolve()), "--worker", f"{t60}:{snr}",
                    "--deadline-at", repr(wave_end), "--record", str(record_file)]
            argv += _forwarded(args)
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
            relay = threading.Thread(target=_relay, args=(proc, condition_label(t60, snr), results), daemon=True)
            relay.start()
            procs.append((proc, relay, condition_label(t60, snr)))
        for proc, relay, tag in procs:
            try:
                proc.wait(timeout=max(1.0, wave_end - time.time() + KILL_GRACE_S))
            except subprocess.TimeoutExpired:
                proc.kill()  # our own child, past its deadline
                proc.wait()
                failures.append(f"{tag}: killed past its deadline")
            relay.join(timeout=5)
            if proc.returncode:
                failures.append(f"{tag}: exit status {proc.returncode}")
    return results, failures


def _forwarded(args) -> list[str]:
    out = ["--out", str(args.out), "--device", args.device, "--archs", *args.archs,
           "--draws", str(args.draws), "--max-epochs", str(args.max_epochs), "--batch-size", str(args.batch_size),
           "--eval-batch-size", str(args.eval_batch_size), "--seed", str(args.seed), "--dtype", args.dtype,
           "--checkpoint-every-s", str(args.checkpoint_every_s), "--reserve-s", str(args.reserve_s),
           "--jobs", str(default_parallelism(args)[0]), "--sim-workers", str(default_parallelism(args)[1]),
           "--threads", str(default_parallelism(args)[2]),
           "--conditions", *(f"{t}:{s}" for t, s in args.conditions)]
    for flag, value in (("--sources", args.sources), ("--lr", args.lr), ("--init-from", args.init_from),
                        ("--autocast", args.autocast)):
        if value is not None:
            out += [flag, str(value)]
    return out


def check_output(out: Path, expected: set[str]) -> list[str]:
    """Remove stray temporary files; return the problems with what will come back."""
    problems = []
    for path in sorted(out.iterdir()):
        if path.name.startswith(".") and ".tmp" in path.name:
            path.unlink()  # an atomic write cut short
    files = sorted(p for p in out.rglob("*") if p.is_file())
    names = {p.name for p in files}
    if len(files) > MAX_FILES:
        problems.append(f"{len(files)} files in {out}; at most {MAX_FILES} come back")
    for missing in sorted(expected - names):
        problems.append(f"missing {missing}")
    for extra in sorted(names - expected):
        problems.append(f"unexpected file {extra}")
    for p in files:
        if p.stat().st_size >= MAX_FILE_BYTES:
            problems.append(f"{p.name} is {p.stat().st_size / 2**20:.1f} MiB (limit 16 MiB)")
    return problems


def check_args(args) -> set[str]:
    """Refuse, in one line, what the run cannot do, before anything is made; return the checkpoints' file names."""
    from train_zoo import check_job  # scripts/ is first on the path

    from xai_loc.data import paper_scene
    from xai_loc.errors import InputError
    from xai_loc.models.zoo import checkpoint_name

    if args.out is None:
        raise InputError("give --out (or set OUT)")
    if not 0 <= args.reserve_s < args.deadline_s:
        raise InputError(f"--reserve-s {args.reserve_s:g} is not allowed; use 0 or more and less than --deadline-s "
                         f"({args.deadline_s:g})")
    for arch in args.archs:
        if args.archs.count(arch) > 1:
            raise InputError(f"--archs {arch} is given twice; give each architecture once")
    names = [checkpoint_name(args.archs[0], t, s) for t, s in args.conditions]
    for (t, s), name in zip(args.conditions, names, strict=True):
        if names.count(name) > 1:  # two workers would write one file
            raise InputError(f"--conditions names {condition_label(t, s)} twice (two workers would write "
                             f"{name}); give each condition once")
    expected = {checkpoint_name(a, t, s) for a in args.archs for t, s in args.conditions}
    if len(expected) > MAX_FILES:
        raise InputError(f"{len(expected)} checkpoints would not come back (at most {MAX_FILES} files); "
                         "give fewer --archs or --conditions")
    others = sorted(p.name for p in args.out.iterdir() if p.name not in expected) if args.out.is_dir() else []
    if others:
        raise InputError(f"--out {args.out} holds other files ({', '.join(others[:5])}); give a new or empty folder")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"--out {args.out} is a file; give a new or empty folder")
    above = next(p for p in args.out.absolute().parents if p.exists())  # made only after the preflight
    if not args.out.exists() and not (above.is_dir() and os.access(above, os.W_OK | os.X_OK)):
        raise InputError(f"--out {args.out} cannot be made: {above} is not a writable folder")
    scene = paper_scene()
    device_type = "cuda" if args.device.startswith("cuda") else "cpu"
    for arch in args.archs:  # what train() would refuse only after the simulation: init checkpoints, their recipes
        for t, snr in args.conditions:
            init, config, _ = job_config(args, arch, t, snr, device_type)
            check_job(arch, args.out / checkpoint_name(arch, t, snr), scene, init, config)
    return expected


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    p = parser()
    args = p.parse_args(argv)
    if args.reserve_s is None:
        args.reserve_s = min(20.0, 0.05 * args.deadline_s)
    if args.worker is not None:
        return worker(args)  # its values come checked from the orchestrating process

    from xai_loc.errors import InputError

    try:
        expected = check_args(args)
    except InputError as err:
        p.error(str(err))

    import torch

    from xai_loc.acoustics.speech import SpeechCorpus
    from xai_loc.data import paper_scene
    from xai_loc.runtime import configure_cpu, resolve_device

    deadline = started + args.deadline_s
    try:
        configure_cpu(default_parallelism(args)[2])
        device = resolve_device(args.device)
        scene = paper_scene()
        corpus = SpeechCorpus.shipped(fs=scene.room.fs)
        record = preflight(args, device, corpus, scene)
    except InputError as err:
        say(f"preflight failed: {err}")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)  # after the preflight: a failed one leaves no folder behind
    if device.type == "cuda":
        torch.cuda.empty_cache()
    say(estimate(args, record, scene, deadline - time.time()))
    with tempfile.TemporaryDirectory() as tmp:
        record_file = Path(tmp) / "preflight.json"
        record_file.write_text(json.dumps(record), encoding="utf-8")
        results, failures = run_workers(args, deadline - 5.0, record_file)
    problems = check_output(args.out, expected)

    say("")
    say("| model | condition | test MAE (m) | centroid (m) | paper (m) | paper epochs | validations | steps | "
        "stopped | train s | sim s | MiB |")
    say("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(results, key=lambda r: (r["arch"], r["t60"])):
        paper = "-" if r["paper_mae"] is None else f"{r['paper_mae']:.3f}"
        say(f"| {r['arch']} | {r['t60']:g} s / {r['snr']:g} dB | {r['test_mae']:.4f} | {r['baseline_mae']:.4f} | "
            f"{paper} | {r['epochs']} | {r['validations']} | {r['steps']} | {r['stopped']} | {r['wall_s']:.0f} | "
            f"{r['sim_s']:.0f} | {r['bytes'] / 2**20:.1f} |")
    say(f"total {time.time() - started:.0f} s; {len(list(args.out.iterdir()))} files in {args.out}")
    for line in failures + problems:
        say(f"PROBLEM: {line}")
    return 1 if failures or problems else 0


if __name__ == "__main__":
    sys.exit(main())
