#!/usr/bin/env python
"""Adopt the checkpoints of a GPU zoo run: score each here on its condition's test split, beside the
constant predictor and SRP-PHAT, and write it under its shipped name.

``scripts/gpu_zoo.sh`` (issue 15) brings back up to eight checkpoints, scored on the GPU on
test windows it simulated there in float16. Run this here, on the CPU, on the folder they came
back in::

    python scripts/adopt_zoo.py RESULTS [--out pretrained] [--data-root DIR] [--srp-windows 200]
        [--even-if-worse] [--adopt-unfinished]

For each checkpoint of RESULTS (hidden files, the temporaries of a write cut short, are skipped): its
condition's test split of the paper scene is simulated (gpuRIR convention, float32, on the CPU)
unless the data root holds it; the model is scored on every test window in float32 and in float16
and stored by the library's float16 rule
(:func:`train_zoo.export`: float16 when no test MAE moves by more than 1 mm), with these test
metrics in its card. It goes to ``--out`` under its shipped name, unless a checkpoint there
recorded a lower test MAE on the same test sources (the same ``n_sources`` and ``n_windows`` of
its ``metrics.test``: the full split for the shipped ones) or was scored on other test sources
(say, the full split against a ``--sources`` trial), which cannot be compared: such a file is
kept, both numbers printed, and the run ends with exit status 1 (``--even-if-worse`` replaces
it). Per condition, SRP-PHAT on the microphone signals
(:func:`xai_loc.experiments.tdoa_probe.run_tdoa` without models, on ``--srp-windows`` windows
evenly spaced; its peak on the sources' plane) gives the classical localizer's error. A markdown
table for README ends the run; a model that does not beat the constant predictor is marked.

Refused in one line before any work (exit status 2, nothing created): a checkpoint of another
architecture than the zoo's or of another model configuration than the paper scene's windows (16 microphones x
5120 samples), with damaged or unreadable weights, trained on other data than the paper scene's gpuRIR convention,
sample rate and microphone array,
whose card lacks the records of a training run (``training``, ``dataset.train``,
``metrics.val``: an imported paper checkpoint), whose training did not finish
(``training.stopped`` None: a worker killed mid-run; ``--adopt-unfinished`` takes it), and two
checkpoints for one destination.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from _args import Parser, count, folder, integer, threads  # scripts/ is this script's folder, first on the path
from train_zoo import PROGRESS, check_scene, export

from xai_loc.cli_params import check_out_dir
from xai_loc.data import paper_scene, simulate_dataset
from xai_loc.data.store import default_root
from xai_loc.errors import InputError
from xai_loc.experiments.tdoa_probe import SRP_CONSTANT, run_tdoa
from xai_loc.io import replace_keeping_mode
from xai_loc.models import WindowSet, build_model, load_model, read_card
from xai_loc.models.zoo import PAPER_MAE, checkpoint_files, checkpoint_name, data_convention, paper_mae, pretrained_dir
from xai_loc.runtime import configure_cpu

#: Records of a training run that adopting needs, as (card key, entry): ``dataset.train``, ``metrics.val``.
RUN_RECORDS = (("dataset", "train"), ("metrics", "val"))


def checked_card(path: Path, scene, unfinished: bool = False) -> dict:
    """The card of a zoo checkpoint: one of the zoo's architectures built for ``scene``'s windows, whose weights load
    (:func:`~xai_loc.models.load_model`: their digest, shapes and values), trained here (its card holds
    ``training``, ``dataset.train`` and ``metrics.val``) to the end (``training.stopped`` set, unless
    ``unfinished``) on ``scene``'s gpuRIR-convention data, sample rate and microphone array; anything else is
    refused in one line."""
    card = read_card(path)
    arch = card["architecture"]
    if arch not in PAPER_MAE:
        raise InputError(f"{path.name}: architecture {arch!r} is not allowed; allowed: {', '.join(sorted(PAPER_MAE))}")
    convention = data_convention(card)
    if convention != "gpurir":
        raise InputError(f"{path.name}: trained on {convention!r}-convention data; the zoo is trained on 'gpurir'")
    missing = ["training"] if not isinstance(card.get("training"), dict) else []
    missing += [f"{key}.{entry}" for key, entry in RUN_RECORDS
                if not isinstance((card.get(key) or {}).get(entry), dict)]
    if missing:
        raise InputError(f"{path.name}: its card has no {' or '.join(missing)} record (not a run of train_zoo.py "
                         "or gpu_zoo.py, e.g. an imported paper checkpoint); only such runs are adopted")
    if card["training"].get("stopped") is None and not unfinished:
        raise InputError(f"{path.name}: its training did not finish (training.stopped is None: a worker killed "
                         "mid-run, no test metrics); pass --adopt-unfinished to adopt it anyway")
    check_scene(card, scene, path.name)
    config = load_model(path).config
    zoo = build_model(arch, n_mics=len(scene.mics), n_samples=scene.window).config
    if config != zoo:
        raise InputError(f"{path.name}: holds {arch} {config}; the zoo's {arch} is {zoo} (the paper scene's windows)")
    return card


def destinations(cards: dict[Path, dict], out: Path) -> dict[Path, Path]:
    """Each checkpoint's shipped name in ``out``; two checkpoints for one destination are refused."""
    dst: dict[Path, Path] = {}
    for path, card in cards.items():
        target = out / checkpoint_name(card["architecture"], card["condition"]["t60"], card["condition"]["snr"])
        other = next((p for p, d in dst.items() if d == target), None)
        if other is not None:
            raise InputError(f"{other.name} and {path.name} would both be adopted as {target.name}; "
                             f"leave one of them in {path.parent}")
        dst[path] = target
    return dst


def check_full_size(cards: dict[Path, dict], sources: int | None) -> None:
    """Refuse to replace the shipped checkpoints with a trial: one scored on a few test sources, or trained
    on fewer than the paper's training sources (a ``--sources`` GPU run); such runs need their own ``--out``."""
    if sources is not None and sources < len(paper_scene().source_ids("test")):
        raise InputError(f"--sources {sources} scores on a part of the test split; give --out (pretrained/ takes "
                         "only checkpoints scored on the full split)")
    full = len(paper_scene().source_ids("train"))
    for path, card in cards.items():
        n = card["dataset"]["train"].get("n_sources")
        if n != full:
            raise InputError(f"{path.name}: trained on {n} sources, not the paper's {full}; give --out "
                             "(pretrained/ takes only full-size runs)")


def recorded_test(card: dict) -> tuple[float | None, tuple]:
    """A card's recorded test MAE (None where it has none) and the test sources it was scored on
    (``n_sources``, ``n_windows``)."""
    test = (card.get("metrics") or {}).get("test") or {}
    mae = (test.get("metrics") or {}).get("mae")
    return (float(mae) if isinstance(mae, (int, float)) else None), (test.get("n_sources"), test.get("n_windows"))


def keep_existing(existing: dict, candidate: dict) -> str | None:
    """Why the checkpoint already at the destination stays (a lower test MAE on the same test sources, or
    scores on other test sources that cannot be compared), or None where the candidate may replace it."""
    (old, old_on), (new, new_on) = recorded_test(existing), recorded_test(candidate)
    if old is None:
        return None
    if old_on != new_on:
        return (f"not compared: the existing one was scored on {old_on[0]} test sources ({old_on[1]} windows), "
                f"the new one on {new_on[0]} ({new_on[1]} windows)")
    if old < new:
        return f"the existing one is better on the same {new_on[0]} test sources ({new_on[1]} windows)"
    return None


def srp_errors(store: Path, windows: int | None) -> dict[str, float]:
    """Euclidean error (m) on the sources' plane of SRP-PHAT on the microphone signals and of the constant guess."""
    ds = run_tdoa(None, store, pairs="adjacent", srp_max_windows=windows)
    error = ds["srp_error"].sel(srp_metric="euclidean")
    return {"signals": float(error.sel(srp_estimator="signals")),
            "constant": float(error.sel(srp_estimator=SRP_CONSTANT))}


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="the folder of checkpoints a GPU zoo run brought back")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the adopted checkpoints go (default: pretrained, only for full-size results "
                             "scored on the full test split)")
    parser.add_argument("--data-root", type=folder, default=None, help="default: $XAI_LOC_DATA or ./xai-loc-data")
    parser.add_argument("--sources", type=count, default=None, help="only N test sources (a quick trial)")
    parser.add_argument("--srp-windows", type=integer(0), default=200, help="SRP-PHAT windows per condition (0: all)")
    parser.add_argument("--batch-size", type=count, default=100)
    parser.add_argument("--threads", type=threads, default=None, help="torch CPU threads")
    parser.add_argument("--even-if-worse", action="store_true",
                        help="replace a checkpoint in --out even where it recorded a lower test MAE, or was scored "
                             "on other test sources (default: keep it and end with exit status 1)")
    parser.add_argument("--adopt-unfinished", action="store_true",
                        help="also adopt checkpoints whose training did not finish (training.stopped is None)")
    args = parser.parse_args(argv)
    try:
        if not args.results.is_dir():
            raise InputError(f"{args.results} does not exist" if not args.results.exists()
                             else f"{args.results} is not a folder; give the folder a GPU zoo run brought back")
        paths = checkpoint_files(args.results)  # leftover temporaries of a killed write are no checkpoints
        if not paths:
            raise InputError(f"{args.results} holds no .safetensors checkpoints")
        scene = paper_scene()
        cards = {path: checked_card(path, scene, args.adopt_unfinished) for path in paths}  # all before any work
        if args.out is None:
            check_full_size(cards, args.sources)
            args.out = pretrained_dir()  # the shipped folder wherever this runs from, not ./pretrained
        check_out_dir(args.out, "--out")
        targets = destinations(cards, args.out)
        existing = {dst: read_card(dst) for dst in targets.values() if dst.exists()}  # unreadable: refused here
        configure_cpu(args.threads)
        root = args.data_root or default_root()
        args.out.mkdir(parents=True, exist_ok=True)
        rows, srp, kept = [], {}, []
        for path, card in cards.items():
            t60, snr = float(card["condition"]["t60"]), float(card["condition"]["snr"])
            store = simulate_dataset(scene, "test", t60, snr, root=root, n_sources=args.sources,
                                     progress=PROGRESS)
            arch, dst = card["architecture"], targets[path]
            with tempfile.TemporaryDirectory(dir=args.out, prefix=".adopt-") as tmp:
                candidate = Path(tmp) / dst.name  # scored aside, moved over dst only when adopted
                result = export(path, WindowSet(store), candidate, args.batch_size, "cpu")
                written = read_card(candidate)
                old = existing.get(dst)
                reason = None if old is None or args.even_if_worse else keep_existing(old, written)
                was = None if old is None else recorded_test(old)[0]
                if reason is None:
                    replace_keeping_mode(candidate, dst)  # durable, with the replaced file's mode
                else:
                    kept.append(f"{dst}: kept (test MAE {'-' if was is None else f'{was:.4f}'} m) over the new "
                                f"{path.name} ({result.metrics['mae']:.4f} m): {reason}; pass --even-if-worse "
                                "to replace it")
            if (t60, snr) not in srp:
                srp[(t60, snr)] = srp_errors(store, args.srp_windows or None)
            rows.append((arch, t60, snr, result, written["storage"]["dtype"], card["training"], was, reason is None))
    except InputError as err:
        parser.error(str(err))
    print("| checkpoint | test MAE/coord (m) | test Euclidean (m) | constant (m) | paper (m) | SRP-PHAT, "
          "signals (m) | storage | paper epochs (this run) | stopped | device s | existing (m) | adopted |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for arch, t60, snr, result, storage, t, was, adopted in rows:
        mae, base = result.metrics["mae"], result.baseline_metrics["mae"]
        mark = "" if mae < base else " (no better than constant)"
        paper = paper_mae(arch, t60, snr)  # None: a condition the paper did not train
        print(f"| {arch} ({t60:g} s, {snr:g} dB) | {mae:.3f}{mark} | {result.metrics['euclidean']:.3f} | "
              f"{base:.3f} | {'-' if paper is None else f'{paper:.3f}'} | {srp[(t60, snr)]['signals']:.3f} | "
              f"{storage} | {t['epochs']} | {t['stopped']} | {t['wall_seconds']:.0f} | "
              f"{'-' if was is None else f'{was:.3f}'} | {'yes' if adopted else 'no: kept the existing one'} |")
    print("\nSRP-PHAT: Euclidean error of the map peak on the sources' plane (x, y); constant guess on that plane: "
          + ", ".join(f"{v['constant']:.3f} m at ({t:g} s, {s:g} dB)" for (t, s), v in srp.items()))
    for line in kept:
        print(line)
    return 1 if kept else 0


if __name__ == "__main__":
    sys.exit(main())
