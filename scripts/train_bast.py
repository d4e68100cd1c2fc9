#!/usr/bin/env python
"""Recreate the shipped BAST localizer ``pretrained/bast_default.safetensors``.

Renders the BAST scenes of :class:`xai_loc.data.bast_scenes.BastSceneSpec` (defaults: 120
sounds of 6 kinds incl. shipped speech, each at the seed's 36 azimuths 0-350 deg in 10 degree
steps, elevation 0, KEMAR free field, 0.5 s at 16 kHz, diffuse background at 20-40 dB SNR;
20 % of the sounds held out), computes the [2, 129, 61] spectrograms once, trains BAST
(:mod:`xai_loc.models.bast`; default NSP, SUB, MIX loss, width 64, depth 2, 4 heads) with Adam
(lr 1e-3, cosine decay) on one CPU thread, scores it on the held-out sounds and writes the
checkpoint (float16 when that moves no test metric noticeably) with the metrics in its card.
The scenes are stored as the CLI stores them (``<data-root>/bast/bast-<n-sounds>``, ``-s<seed>`` added for
a seed other than 0: :meth:`~xai_loc.data.bast_scenes.BastSceneSpec.named`), so each reuses the other's.

Usage::

    python scripts/train_bast.py [--integration SUB] [--share-weights] [--loss MIX] [--epochs 18]
        [--max-minutes 15] [--threads 1] [--n-sounds 120] [--dim 64] [--depth 2] [--heads 4]
        [--seed 0] [--data-root DIR] [--out pretrained/bast_default.safetensors]

Same arguments and thread count, same numbers (CPU), as long as the wall-clock safety net
(``--max-minutes``) does not cut the epochs. The shipped file: 18 epochs in 12.7 CPU minutes
(one thread, reference CPU); on the 864 held-out scenes mean angular error 15.5 deg (median
7.7), 38 % within 5 deg, 58 % within 10 deg, 10.7 % front-back confusions, no left/right errors.
"""
from __future__ import annotations

import json

from xai_loc.data.bast_scenes import BastSceneSpec
from xai_loc.data.binaural_store import MAX_SOUNDS
from xai_loc.data.store import default_root
from xai_loc.errors import InputError
from xai_loc.models.bast import INTEGRATIONS, LOSSES, fit_bast
from xai_loc.models.classifier_training import CHECKS
from xai_loc.models.trainer import check_output
from xai_loc.runtime import configure_cpu
from xai_loc.script_args import Parser, checked, count, folder, integer, setting, threads

#: Progress bars on a terminal, a line every 30 s in a log (:mod:`xai_loc.progress`).
PROGRESS = True


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--integration", choices=sorted(INTEGRATIONS), default="SUB")
    parser.add_argument("--share-weights", action="store_true", help="One encoder for both ears (SP).")
    parser.add_argument("--loss", choices=sorted(LOSSES), default="MIX")
    parser.add_argument("--epochs", type=setting(CHECKS, "epochs", integer=True), default=18)
    parser.add_argument("--max-minutes", type=setting(CHECKS, "max_minutes"), default=15.0,
                        help="Wall-clock budget of the epochs (safety net).")
    parser.add_argument("--batch-size", type=count, default=32)  # no BatchNorm: a batch of one is allowed
    parser.add_argument("--lr", type=setting(CHECKS, "lr"), default=1e-3)
    parser.add_argument("--threads", type=threads, default=1)
    parser.add_argument("--n-sounds", type=integer(1, MAX_SOUNDS), default=120)
    parser.add_argument("--dim", type=count, default=64)
    parser.add_argument("--depth", type=count, default=2)
    parser.add_argument("--heads", type=count, default=4)
    parser.add_argument("--seed", type=setting(CHECKS, "seed", integer=True), default=0)
    parser.add_argument("--data-root", type=folder, default=None, help="[default: $XAI_LOC_DATA or ./xai-loc-data]")
    parser.add_argument("--out", type=checked(check_output), default="pretrained/bast_default.safetensors")
    args = parser.parse_args(argv)
    try:
        configure_cpu(args.threads)
        spec = BastSceneSpec(n_sounds=args.n_sounds, seed=args.seed).named()  # the CLI's store
        path, card = fit_bast(spec, args.out, root=args.data_root or default_root(), integration=args.integration,
                              share_weights=args.share_weights, loss=args.loss, epochs=args.epochs,
                              batch_size=args.batch_size, lr=args.lr, dim=args.dim, depth=args.depth,
                              heads=args.heads, seed=args.seed, max_minutes=args.max_minutes, progress=PROGRESS)
    except InputError as err:
        parser.error(str(err))
    training = card["training"]
    print(f"{path}: {training['variant']}, {args.loss}, {training['epochs']} epochs, "
          f"{training['cpu_minutes']:.1f} CPU min ({training['wall_seconds'] / 60:.1f} min wall)")
    print(json.dumps(card["metrics"]["test"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
