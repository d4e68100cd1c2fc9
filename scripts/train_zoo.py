#!/usr/bin/env python
"""Retrain the pretrained zoo: LocCNN and SampleCNN for the paper's four conditions.

For every condition the paper scene's train/val/test splits are simulated if absent
(:func:`xai_loc.data.simulate_dataset`); every architecture is trained with the paper's
recipe (:func:`xai_loc.models.training.train`, resumable: rerunning the script continues
where a run stopped), scored on every test window beside the centroid baseline, and
exported to ``<out>/<arch>_t60-<T60>_snr-<SNR>.safetensors`` with the test metrics in its
card. Weights are stored by the library's rule (:func:`xai_loc.models.trainer.float16_check`):
float16 when that moves no test MAE (per coordinate and mean) by more than 1 mm, else float32;
the card's ``storage`` entry is that rule's record (both scores, their changes, the tolerance,
the verdict).
A table of test errors next to the paper's ends the run.

Usage::

    python scripts/train_zoo.py [--archs loccnn samplecnn] [--conditions 0.15:25 0.6:10]
        [--max-minutes 60] [--device cuda] [--sim-device cuda] [--data-root DIR]
        [--out pretrained] [--runs DIR] [--threads 1] [--preload] [--sources N]
        [--init-from 'pretrained/{arch}_t60-0.6_snr-10.safetensors']

Training states (``*.state.pt``, several times a checkpoint's size) stay in ``--runs``;
only the exported checkpoints go to ``--out``.
"""
from __future__ import annotations

import sys
from pathlib import Path

from _args import Parser, condition, device_name, folder, setting, sources, threads  # scripts/ is first on the path

from xai_loc.cli_params import check_out_dir
from xai_loc.data import PAPER_CONDITIONS, paper_scene, simulate_dataset
from xai_loc.data.store import condition_name, default_root
from xai_loc.errors import InputError
from xai_loc.models import build_card, check_training, float16_check, load_model, read_card, save_checkpoint
from xai_loc.models.evaluation import Evaluation, WindowSet, check_recording, evaluate_checkpoint
from xai_loc.models.training import CHECKS, TrainConfig, train
from xai_loc.models.zoo import PAPER_MAE, paper_mae
from xai_loc.runtime import configure_cpu

#: Largest change of a test MAE (metres) that float16 storage may cause.
FP16_TOLERANCE = 1e-3
SPLITS = ("train", "val", "test")
MAE_KEYS = ("mae_x", "mae_y", "mae_z", "mae")
#: Progress bars on a terminal, a line every 30 s in a log (:mod:`xai_loc.progress`).
PROGRESS = True


def check_scene(card: dict, scene, name: str) -> None:
    """Refuse (one line) a checkpoint ``name`` whose ``card`` records training data of another sample rate or
    microphone array than ``scene``'s (:func:`~xai_loc.models.evaluation.check_recording`), before any simulation."""
    check_recording(card, scene.room.fs, scene.mics, "the paper scene", name)


def check_job(arch: str, out: Path, scene, init: str | Path | None = None, config: TrainConfig | None = None) -> None:
    """Refuse (one line) a run of ``arch`` with ``config`` on ``scene``'s windows writing ``out`` before any
    simulation: what :func:`~xai_loc.models.training.check_training` refuses (given ``config``, a saved state or an
    existing ``out`` of another recipe too), and an ``init`` checkpoint trained on another recording than ``scene``'s
    (:func:`check_scene`)."""
    check_training(arch, out, (len(scene.mics), scene.window), init, config)
    if init is not None:
        check_scene(read_card(init), scene, f"init checkpoint {init}")


def export(run: Path, test: WindowSet, dst: Path, batch_size: int, device: str) -> Evaluation:
    """Score a trained checkpoint on the test windows and write it to ``dst`` with the test metrics.

    Scored by :func:`~xai_loc.models.evaluation.evaluate_checkpoint`, which refuses test windows of another sample
    rate or microphone array than the checkpoint's training data. Stored by the library's float16 rule
    (:func:`xai_loc.models.trainer.float16_check`): float16 when no test MAE (per coordinate and mean) moves by more
    than :data:`FP16_TOLERANCE`; the card's ``storage`` is that rule's record. Returns the evaluation of the model as
    stored.
    """
    card = read_card(run)
    model = load_model(run, device=device)
    scored = []  # (card entry, evaluation) of each model float16_check scores

    def score(net) -> dict:
        evaluation = evaluate_checkpoint(run, test, batch_size, device, PROGRESS, model=net)
        scored.append((evaluation.summary(), evaluation))
        return scored[-1][0]

    dtype, entry, storage = float16_check(model, score, dict.fromkeys(MAE_KEYS, FP16_TOLERANCE))
    save_checkpoint(model, dst, build_card(
        condition=card["condition"], training=card["training"],
        dataset={**card["dataset"], "test": test.describe()},
        val=card["metrics"]["val"], test=entry, storage=storage), dtype=dtype)
    return next(evaluation for summary, evaluation in scored if summary is entry)


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", choices=sorted(PAPER_MAE), default=sorted(PAPER_MAE))
    parser.add_argument("--conditions", nargs="+", type=condition, default=list(PAPER_CONDITIONS),
                        metavar="T60:SNR", help="default: the paper's four")
    parser.add_argument("--max-minutes", type=setting(CHECKS, "max_minutes"), default=None,
                        help="wall-clock budget per model and call; rerun to continue")
    parser.add_argument("--max-epochs", type=setting(CHECKS, "max_epochs", integer=True),
                        default=TrainConfig.max_epochs)
    parser.add_argument("--seed", type=setting(CHECKS, "seed", integer=True), default=TrainConfig.seed)
    parser.add_argument("--batch-size", type=setting(CHECKS, "batch_size", integer=True),
                        default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=setting(CHECKS, "lr"), default=None,
                        help="Adam learning rate (default: the paper's per architecture; lower it for --init-from)")
    parser.add_argument("--eval-batch-size", type=setting(CHECKS, "eval_batch_size", integer=True),
                        default=TrainConfig.eval_batch_size)
    parser.add_argument("--device", type=device_name, default="cpu",
                        help="training and evaluation device: cpu, cuda, cuda:N")
    parser.add_argument("--sim-device", type=device_name, default="cpu", help="device of the torch room simulator")
    parser.add_argument("--sources", type=sources, default=None,
                        help="only N sources of each split, a seeded spread (a quick trial; file names get -nN)")
    parser.add_argument("--preload", action="store_true", help="hold the training and validation sets in RAM")
    parser.add_argument("--threads", type=threads, default=None, help="torch CPU threads")
    parser.add_argument("--data-root", type=folder, default=None, help="default: $XAI_LOC_DATA or ./xai-loc-data")
    parser.add_argument("--runs", type=folder, default=None, help="training checkpoints and states "
                        "(default: <data-root>/runs)")
    parser.add_argument("--out", type=Path, default=Path("pretrained"), help="exported checkpoints")
    parser.add_argument("--init-from", default=None, metavar="TEMPLATE",
                        help="start each run from this checkpoint ('{arch}' is replaced by the architecture), "
                        "e.g. 'pretrained/{arch}_t60-0.6_snr-10.safetensors'; default: seeded initialization")
    args = parser.parse_args(argv)

    try:
        check_out_dir(args.out, "--out")  # before any work: a file there fails only at the first export
        configure_cpu(args.threads)
        config = TrainConfig(batch_size=args.batch_size, lr=args.lr, max_epochs=args.max_epochs,
                             max_minutes=args.max_minutes,
                             seed=args.seed, device=args.device, eval_batch_size=args.eval_batch_size,
                             preload=args.preload)
        root = args.data_root or default_root()
        runs = args.runs or root / "runs"
        scene = paper_scene()
        jobs = {}  # (t60, snr, arch) -> (name, init checkpoint), every run checked before the first simulation
        for t60, snr in args.conditions:
            for arch in args.archs:
                name = f"{arch}_{condition_name(t60, snr)}" + (f"-n{args.sources}" if args.sources else "")
                init = None if args.init_from is None else args.init_from.replace("{arch}", arch)
                check_job(arch, runs / f"{name}.safetensors", scene, init, config)
                jobs[t60, snr, arch] = name, init
        rows = []
        for t60, snr in args.conditions:
            stores = {split: simulate_dataset(scene, split, t60, snr, root=root, n_sources=args.sources,
                                              device=args.sim_device, progress=PROGRESS)
                      for split in SPLITS}
            test = WindowSet(stores["test"])
            for arch in args.archs:
                name, init = jobs[t60, snr, arch]
                run = train(arch, stores["train"], stores["val"], runs / f"{name}.safetensors", config, PROGRESS,
                            init_from=init)
                result = export(run, test, args.out / f"{name}.safetensors", args.eval_batch_size, args.device)
                t = read_card(run)["training"]
                rows.append((name, result.metrics["mae"], result.baseline_metrics["mae"],
                             paper_mae(arch, t60, snr), t["epochs"], t["stopped"],
                             t["wall_seconds"] / 3600))
                print(result.to_text(max_sources=5), end="\n\n")
    except InputError as err:
        parser.error(str(err))
    print("| model | test MAE (m) | centroid baseline (m) | paper (m) | epochs | stopped | hours |")
    print("|---|---|---|---|---|---|---|")
    for name, mae, base, paper, epochs, stopped, hours in rows:
        paper_text = "-" if paper is None else f"{paper:.3f}"
        print(f"| {name} | {mae:.4f} | {base:.4f} | {paper_text} | {epochs} | {stopped} | {hours:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
