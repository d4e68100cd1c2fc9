#!/usr/bin/env python
"""Adopt the checkpoints of a GPU zoo run: score each here on its condition's test split, beside the
constant predictor and SRP-PHAT, and write it under its shipped name.

``scripts/gpu_zoo.sh`` (issue 15) brings back up to eight checkpoints, scored on the GPU on
test windows it simulated there in float16. Run this here, on the CPU, on the folder they came
back in::

    python scripts/adopt_zoo.py RESULTS [--out pretrained] [--data-root DIR] [--srp-windows 200]

For each checkpoint of RESULTS: its condition's test split of the paper scene is simulated
(gpuRIR convention, float32, on the CPU) unless the data root holds it; the model is scored on
every test window in float32 and in float16, and written to ``--out`` under its shipped name
in float16 when that moves no test MAE by 1 mm or more, else in float32, with these test
metrics in its card (:func:`train_zoo.export`). Per condition, SRP-PHAT on the microphone
signals (:func:`xai_loc.experiments.tdoa_probe.run_tdoa` without models, on ``--srp-windows``
windows evenly spaced; its peak on the sources' plane) gives the classical localizer's error.
A markdown table for README ends the run; a model that does not beat the constant predictor is
marked. Checkpoints trained on other data than the paper scene's gpuRIR convention are refused.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from train_zoo import PROGRESS, export  # scripts/ is this script's folder, first on the path

from xai_loc.data import paper_scene, simulate_dataset
from xai_loc.data.store import default_root
from xai_loc.errors import InputError
from xai_loc.experiments.tdoa_probe import SRP_CONSTANT, run_tdoa
from xai_loc.models import WindowSet, read_card
from xai_loc.models.zoo import PAPER_MAE, checkpoint_name, data_convention, paper_mae, pretrained_dir
from xai_loc.runtime import configure_cpu


def checked_card(path: Path) -> dict:
    """The card of a zoo checkpoint, refused unless it was trained on the paper scene's gpuRIR-convention data."""
    card = read_card(path)
    convention = data_convention(card)
    if convention != "gpurir":
        raise InputError(f"{path.name}: trained on {convention!r}-convention data; the zoo is trained on 'gpurir'")
    if card["architecture"] not in PAPER_MAE:
        raise InputError(f"{path.name}: architecture {card['architecture']!r} is not allowed; allowed: "
                         f"{', '.join(sorted(PAPER_MAE))}")
    return card


def check_full_size(cards: dict[Path, dict], sources: int | None) -> None:
    """Refuse to replace the shipped checkpoints with a trial: one scored on a few test sources, or trained
    on fewer than the paper's training sources (a ``--sources`` GPU run); such runs need their own ``--out``."""
    if sources is not None and sources < len(paper_scene().source_ids("test")):
        raise InputError(f"--sources {sources} scores on a part of the test split; give --out (pretrained/ takes "
                         "only checkpoints scored on the full split)")
    full = len(paper_scene().source_ids("train"))
    for path, card in cards.items():
        n = ((card.get("dataset") or {}).get("train") or {}).get("n_sources")
        if n != full:
            raise InputError(f"{path.name}: trained on {n} sources, not the paper's {full}; give --out "
                             "(pretrained/ takes only full-size runs)")


def srp_errors(store: Path, windows: int | None) -> dict[str, float]:
    """Euclidean error (m) on the sources' plane of SRP-PHAT on the microphone signals and of the constant guess."""
    ds = run_tdoa(None, store, pairs="adjacent", srp_max_windows=windows)
    error = ds["srp_error"].sel(srp_metric="euclidean")
    return {"signals": float(error.sel(srp_estimator="signals")),
            "constant": float(error.sel(srp_estimator=SRP_CONSTANT))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="the folder of checkpoints a GPU zoo run brought back")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the adopted checkpoints go (default: pretrained, only for full-size results "
                             "scored on the full test split)")
    parser.add_argument("--data-root", type=Path, default=None, help="default: $XAI_LOC_DATA or ./xai-loc-data")
    parser.add_argument("--sources", type=int, default=None, help="only N test sources (a quick trial)")
    parser.add_argument("--srp-windows", type=int, default=200, help="SRP-PHAT windows per condition (0: all)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    try:
        configure_cpu(args.threads)
        if args.srp_windows < 0:
            raise InputError(f"--srp-windows {args.srp_windows} is not allowed; use 0 (all) or more")
        paths = sorted(args.results.glob("*.safetensors")) if args.results.is_dir() else []
        if not paths:
            raise InputError(f"{args.results} holds no .safetensors checkpoints")
        cards = {path: checked_card(path) for path in paths}  # every card checked before any work
        if args.out is None:
            check_full_size(cards, args.sources)
            args.out = pretrained_dir()  # the shipped folder wherever this runs from, not ./pretrained
        root = args.data_root or default_root()
        args.out.mkdir(parents=True, exist_ok=True)
        rows, srp = [], {}
        for path, card in cards.items():
            t60, snr = float(card["condition"]["t60"]), float(card["condition"]["snr"])
            store = simulate_dataset(paper_scene(), "test", t60, snr, root=root, n_sources=args.sources,
                                     progress=PROGRESS)
            arch = card["architecture"]
            dst = args.out / checkpoint_name(arch, t60, snr)
            result = export(path, WindowSet(store), dst, args.batch_size, "cpu")
            if (t60, snr) not in srp:
                srp[(t60, snr)] = srp_errors(store, args.srp_windows or None)
            rows.append((arch, t60, snr, result, read_card(dst)["storage"]["dtype"], card["training"]))
    except InputError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 2
    print("| checkpoint | test MAE/coord (m) | test Euclidean (m) | constant (m) | paper (m) | SRP-PHAT, "
          "signals (m) | storage | paper epochs (this run) | stopped | device s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for arch, t60, snr, result, storage, t in rows:
        mae, base = result.metrics["mae"], result.baseline_metrics["mae"]
        mark = "" if mae < base else " (no better than constant)"
        paper = paper_mae(arch, t60, snr)  # None: a condition the paper did not train
        print(f"| {arch} ({t60:g} s, {snr:g} dB) | {mae:.3f}{mark} | {result.metrics['euclidean']:.3f} | "
              f"{base:.3f} | {'-' if paper is None else f'{paper:.3f}'} | {srp[(t60, snr)]['signals']:.3f} | "
              f"{storage} | {t['epochs']} | {t['stopped']} | {t['wall_seconds']:.0f} |")
    print("\nSRP-PHAT: Euclidean error of the map peak on the sources' plane (x, y); constant guess on that plane: "
          + ", ".join(f"{v['constant']:.3f} m at ({t:g} s, {s:g} dB)" for (t, s), v in srp.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
