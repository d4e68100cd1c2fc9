#!/usr/bin/env python
"""Recreate the shipped ITD/ILD/IC cue network ``pretrained/cuenet_default.safetensors``.

Renders the cue-scene dataset of :class:`xai_loc.data.cue_scenes.CueSceneSpec` (defaults:
shipped speech, 0.5 s at 44.1 kHz, one of 72 azimuths at elevation 0, KEMAR free field, two
noise sources at other random azimuths, SNR 15-40 dB each; 240 training / 60 test
utterances, no utterance in both; 4320 / 720 scenes) and caches its cue maps (the front end
is fixed), trains the cue network (:mod:`xai_loc.models.cuenet`) with Adam on one CPU
thread (:func:`xai_loc.models.cuenet.train_cuenet`), scores it on the held-out utterances
and writes the checkpoint (float16 where that changes no test metric noticeably). With
``--probe DIR`` it then runs the cue probe (:func:`xai_loc.experiments.cue_probe.run_cue_probe`)
on the test scenes: LRP relevance per cue and band with the attention weights, the cue
ablation, and a figure (``DIR/cue_relevance.nc``, ``cue_reliance.nc``, ``cue_ablation.nc``,
``cue_probe.png``).

Usage::

    python scripts/train_cuenet.py [--epochs 100] [--batch-size 32] [--lr 1e-3] [--label-sigma 0]
        [--threads 1] [--seed 0] [--data-root DIR] [--out pretrained/cuenet_default.safetensors]
        [--probe DIR]

Same arguments and thread count, same numbers (CPU). Rendering and caching take about
10 minutes on one thread, training a few more; rerunning reuses the cached cue maps.
"""
from __future__ import annotations

import json
from pathlib import Path

from xai_loc.cli_params import check_out_dir
from xai_loc.data.cue_scenes import CueSceneSpec
from xai_loc.data.store import default_root
from xai_loc.errors import InputError
from xai_loc.features.binaural_cues import simulate_cue_scenes
from xai_loc.models.checkpoint import read_card
from xai_loc.models.classifier_training import CHECKS, ClassifierConfig
from xai_loc.models.cuenet import train_cuenet
from xai_loc.models.trainer import check_output
from xai_loc.runtime import configure_cpu
from xai_loc.script_args import Parser, checked, folder, setting, threads

#: Progress bars on a terminal, a line every 30 s in a log (:mod:`xai_loc.progress`).
PROGRESS = True


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=setting(CHECKS, "epochs", integer=True), default=100)
    parser.add_argument("--batch-size", type=setting(CHECKS, "batch_size", integer=True), default=32)
    parser.add_argument("--lr", type=setting(CHECKS, "lr"), default=1e-3)
    parser.add_argument("--label-sigma", type=setting(CHECKS, "label_sigma"), default=0.0,
                        help="Spread the cross-entropy target over neighbouring azimuths (degrees; 0: one-hot).")
    parser.add_argument("--max-minutes", type=setting(CHECKS, "max_minutes"), default=15.0,
                        help="Budget of the epochs (safety net).")
    parser.add_argument("--threads", type=threads, default=1)
    parser.add_argument("--seed", type=setting(CHECKS, "seed", integer=True), default=0)
    parser.add_argument("--data-root", type=folder, default=None, help="[default: $XAI_LOC_DATA or ./xai-loc-data]")
    parser.add_argument("--out", type=checked(check_output), default="pretrained/cuenet_default.safetensors")
    parser.add_argument("--probe", type=Path, default=None, help="Folder for the cue probe's results and figure.")
    args = parser.parse_args(argv)
    try:
        if args.probe is not None:
            check_out_dir(args.probe, "--probe")
        config = ClassifierConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                  max_minutes=args.max_minutes, label_sigma=args.label_sigma)
        configure_cpu(args.threads)
        root = args.data_root or default_root()
        spec = CueSceneSpec(name="cuenet", seed=args.seed)
        test_store = simulate_cue_scenes(spec, "test", root=root, progress=PROGRESS)
        train_store = simulate_cue_scenes(spec, "train", root=root, progress=PROGRESS)
        train_cuenet(train_store, args.out, test_store=test_store, config=config, progress=PROGRESS)
        card = read_card(args.out)
        test = card["metrics"]["test"]
        print(f"{args.out}: {card['training']['epochs']} epochs, {card['training']['minutes']:.1f} min, "
              f"stored {card['dtype']}")
        keys = ("top1", "top5", "azimuth_error", "front_back_rate", "azimuth_error_folded", "lateral_error")
        scores = {k: {"model": test["metrics"][k], "chance": test["baseline"]["metrics"][k]} for k in keys}
        print(json.dumps(scores, indent=1))
        if args.probe is not None:
            from xai_loc.experiments.cue_probe import run_cue_probe
            from xai_loc.plots.redraw import draw

            probe = run_cue_probe(args.out, test_store, args.probe)
            draw(probe["paths"].values())  # cue_probe.png from the stored results
            table, ablation = probe["table"], probe["ablation"]
            print("cue relied on per band (largest |relevance| share):",
                  " ".join(f"{f:.0f}Hz:{c}" for f, c in zip(table["frequency"].values, table["reliance"].values,
                                                            strict=True)))
            for name in ("cue_abs_share", "fusion_share", "attention_mean"):
                print(f"{name}:", {str(c): round(float(v), 3) for c, v in
                                   zip(table["cue"].values, table[name].values, strict=True)})
            print("ablation (cue permuted across scenes), top-1 / lateral error:")
            print(ablation[["top1", "lateral_error"]].to_dataframe().round(3).to_string())
            print(f"intact: top-1 {float(ablation['top1_intact']):.3f}, lateral error "
                  f"{float(ablation['lateral_error_intact']):.2f} deg; files in {args.probe}")
    except InputError as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
