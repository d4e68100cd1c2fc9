#!/usr/bin/env python
"""Recreate the shipped cochleagram localizer ``pretrained/cochcnn_default.safetensors``.

Renders the binaural dataset of :func:`xai_loc.data.binaural_store.cochcnn_spec` (the shipped model's data:
anechoic + office rooms, KEMAR, 6 sound kinds incl. shipped speech, 2200 distinct sounds x 4
renderings, 0.25 s at 48 kHz, diffuse background at 5-40 dB SNR, 20 % of the sounds held
out), trains the small cochleagram CNN (:mod:`xai_loc.models.cochleagram_cnn`, preset
``small``, 504 classes) for 5 epochs with cross-entropy against targets spread over
neighbouring directions (Gaussian, 10 degrees; ``--label-sigma 0`` for the paper's one-hot
targets), Adam 1e-3, batches of 16 on one CPU thread
(:func:`xai_loc.models.classifier_training.train_classifier`, resumable: rerun to continue),
scores it on the held-out sounds and writes the checkpoint (float16 where that changes no
test metric noticeably) with the metrics in its card.

Usage::

    python scripts/train_cochcnn.py [--epochs 5] [--max-minutes 15] [--threads 1]
        [--n-sounds 2200] [--per-sound 4] [--rooms anechoic office] [--head azel] [--label-sigma 10]
        [--data-root DIR] [--runs DIR] [--out pretrained/cochcnn_default.safetensors]

Same arguments and thread count, same numbers (CPU). Rendering takes a few minutes, the
cochleagrams of the training set a few more; ``--max-minutes`` bounds the epochs only.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from xai_loc.acoustics.binaural import ROOMS
from xai_loc.data.binaural_store import ANECHOIC, MAX_PER_SOUND, MAX_SOUNDS, cochcnn_spec
from xai_loc.data.store import default_root
from xai_loc.errors import InputError
from xai_loc.io import atomic_path
from xai_loc.models.checkpoint import read_card
from xai_loc.models.classifier_training import CHECKS, ClassifierConfig, train_on_spec
from xai_loc.models.cochleagram_cnn import HEADS, LAYER_PRESETS
from xai_loc.models.trainer import check_output
from xai_loc.runtime import configure_cpu
from xai_loc.script_args import Parser, checked, folder, integer, setting, threads

#: Progress bars on a terminal, a line every 30 s in a log (:mod:`xai_loc.progress`).
PROGRESS = True


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=setting(CHECKS, "epochs", integer=True), default=5)
    parser.add_argument("--max-minutes", type=setting(CHECKS, "max_minutes"), default=None,
                        help="Budget of the epochs (safety net).")
    parser.add_argument("--threads", type=threads, default=1)
    parser.add_argument("--n-sounds", type=integer(1, MAX_SOUNDS), default=2200)
    parser.add_argument("--per-sound", type=integer(1, MAX_PER_SOUND), default=4)
    parser.add_argument("--rooms", nargs="+", choices=(ANECHOIC, *ROOMS), default=["anechoic", "office"])
    parser.add_argument("--head", choices=tuple(HEADS), default="azel")
    parser.add_argument("--layers", choices=tuple(LAYER_PRESETS), default="small",
                        help="Layer preset of the cochleagram CNN.")
    parser.add_argument("--label-sigma", type=setting(CHECKS, "label_sigma"), default=10.0,
                        help="Spread the cross-entropy target over neighbouring directions (degrees; 0: one-hot).")
    parser.add_argument("--seed", type=setting(CHECKS, "seed", integer=True), default=0)
    parser.add_argument("--data-root", type=folder, default=None, help="[default: $XAI_LOC_DATA or ./xai-loc-data]")
    parser.add_argument("--runs", type=folder, default=None, help="Folder of the run and its state [default: "
                        "<data-root>/runs].")
    parser.add_argument("--out", type=checked(check_output), default="pretrained/cochcnn_default.safetensors")
    args = parser.parse_args(argv)
    try:
        configure_cpu(args.threads)
        root = args.data_root or default_root()
        spec = cochcnn_spec(rooms=tuple(args.rooms), n_sounds=args.n_sounds, per_sound=args.per_sound, seed=args.seed)
        runs = args.runs or Path(root) / "runs"
        run = runs / f"cochcnn_{args.layers}_{args.head}_s{args.label_sigma:g}_{spec.digest()}.safetensors"
        config = ClassifierConfig(epochs=args.epochs, max_minutes=args.max_minutes, seed=args.seed,
                                  label_sigma=args.label_sigma)
        train_on_spec(spec, run, root=root, model_config={"layers": args.layers, "head": args.head}, config=config,
                      progress=PROGRESS)
    except InputError as err:
        parser.error(str(err))
    with atomic_path(args.out) as tmp:  # a reader never sees half a checkpoint
        shutil.copyfile(run, tmp)
    card = read_card(args.out)
    test = card["metrics"]["test"]
    keys = ("accuracy", "azimuth_error", "elevation_error", "front_back_rate", "azimuth_error_folded",
            "lateral_error")
    print(f"{args.out}: {card['training']['epochs']} epochs, {card['training']['wall_seconds'] / 60:.1f} min, "
          f"stored {card['dtype']}")
    print(json.dumps({k: {"model": test["metrics"][k], "chance": test["baseline"]["metrics"][k]} for k in keys},
                     indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
