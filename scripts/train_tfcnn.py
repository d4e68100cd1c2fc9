#!/usr/bin/env python
"""Recreate the shipped IPD/ILD TF-CNN ``pretrained/tfcnn_default.safetensors``.

Renders the scene set of :class:`xai_loc.data.ipd_ild_scenes.SceneSpec` (defaults: free-field
KEMAR at 16 kHz, azimuths -90..90 in 5 degree steps at elevation 0, 1 s excerpts of the
shipped speech, diffuse pink background; 8000 training scenes at SNR uniform in -10..30 dB;
test: 10 scenes per azimuth at each of -6, 0 and 6 dB from held-out utterances), trains the
small TF-CNN (:mod:`xai_loc.models.tfcnn`, regression head) for 15 epochs on one CPU thread
(:func:`xai_loc.models.tfcnn_training.train_tfcnn`, resumable: rerun to continue), scores it on
the test set and writes the checkpoint (float16 where that changes no test score noticeably)
with the scores in its card.

Usage::

    python scripts/train_tfcnn.py [--epochs 15] [--max-minutes 15] [--threads 1] [--n-train 8000]
        [--test-per-azimuth 10] [--head regression] [--width small] [--seed 0]
        [--data-root DIR] [--runs DIR] [--out pretrained/tfcnn_default.safetensors]

Same arguments and thread count, same numbers (CPU). Rendering takes about 6 minutes (1.1 GB under
``<data-root>/ipd_ild/``), caching the IPD/ILD maps 2 more, the epochs about 8 (shipped run: 8.1 min).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from xai_loc.data.ipd_ild_scenes import SceneSpec, render_scenes
from xai_loc.data.store import default_root
from xai_loc.errors import InputError
from xai_loc.io import atomic_path
from xai_loc.models.checkpoint import read_card
from xai_loc.models.classifier_training import CHECKS
from xai_loc.models.tfcnn import HEADS, PRESETS
from xai_loc.models.tfcnn_training import TFCNNTrainConfig, train_tfcnn
from xai_loc.models.trainer import check_output
from xai_loc.runtime import configure_cpu
from xai_loc.script_args import Parser, checked, count, folder, setting, threads

#: Progress bars on a terminal, a line every 30 s in a log (:mod:`xai_loc.progress`).
PROGRESS = True


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=setting(CHECKS, "epochs", integer=True), default=15)
    parser.add_argument("--max-minutes", type=setting(CHECKS, "max_minutes"), default=None,
                        help="Budget of the epochs (safety net).")
    parser.add_argument("--threads", type=threads, default=1)
    parser.add_argument("--n-train", type=count, default=8000)
    parser.add_argument("--test-per-azimuth", type=count, default=10)
    parser.add_argument("--head", choices=tuple(HEADS), default="regression")
    parser.add_argument("--width", choices=tuple(PRESETS), default="small")
    parser.add_argument("--seed", type=setting(CHECKS, "seed", integer=True), default=0)
    parser.add_argument("--data-root", type=folder, default=None, help="[default: $XAI_LOC_DATA or ./xai-loc-data]")
    parser.add_argument("--runs", type=folder, default=None, help="Folder of the run and its state "
                        "[default: <data-root>/runs].")
    parser.add_argument("--out", type=checked(check_output), default="pretrained/tfcnn_default.safetensors")
    args = parser.parse_args(argv)
    try:
        config = TFCNNTrainConfig(epochs=args.epochs, max_minutes=args.max_minutes, seed=args.seed)
        configure_cpu(args.threads)
        root = args.data_root or default_root()
        name = f"tfcnn-n{args.n_train}-t{args.test_per_azimuth}-s{args.seed}"
        spec = SceneSpec(name=name, n_train=args.n_train, test_per_azimuth=args.test_per_azimuth, seed=args.seed)
        runs = args.runs or Path(root) / "runs"
        run = check_output(runs / f"tfcnn_{args.width}_{args.head}_{spec.digest()}_s{args.seed}.safetensors")
        paths = render_scenes(spec, root, progress=PROGRESS)
        train_tfcnn(paths["train"], run, test_scenes=paths["test"],
                    model_config={"width": args.width, "head": args.head}, config=config, progress=PROGRESS)
    except InputError as err:
        parser.error(str(err))
    with atomic_path(args.out) as tmp:  # a reader never sees half a checkpoint
        shutil.copyfile(run, tmp)
    card = read_card(args.out)
    test = card["metrics"]["test"]
    print(f"{args.out}: {card['training']['epochs']} epochs, {card['training']['wall_seconds'] / 60:.1f} min, "
          f"stored {card['dtype']}")
    print(json.dumps({"model": {"all": test["metrics"], **test["by_snr"]},
                      "baseline (always 0 degrees)": test["baseline"]["metrics"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
