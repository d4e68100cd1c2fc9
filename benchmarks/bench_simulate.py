"""Dataset throughput: simulate the paper's test split (285 sources) of one condition to disk.

The baseline, in the same run: pyroomacoustics against xai-loc's torch backend on the same
``--baseline-sources`` sources of the pyroomacoustics-convention scene (the only convention
pyroomacoustics can follow: it keeps the sign of reflections), so both do the same work; prints
seconds per source and the ratio. Then the whole split (or ``--sources N`` of it, a seeded
spread) with the shipped defaults (the gpuRIR convention, torch backend): its wall time against
the 2-minute target (whole split) and the projected time of the full train+val+test set (4225
sources) against the 30-minute target.

    python benchmarks/bench_simulate.py [--t60 0.6] [--snr 10] [--threads 2] [--baseline-sources 3] [--sources N]
"""
import argparse
import tempfile
import time

import numpy as np
from _args import Parser, checked, count, run_main, threads

from xai_loc.acoustics.room import check_snr, check_t60
from xai_loc.acoustics.speech import SpeechCorpus
from xai_loc.data.scene import paper_scene
from xai_loc.data.store import open_signals, simulate_dataset
from xai_loc.runtime import configure_cpu


def main() -> None:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--t60", type=checked(lambda t60: check_t60(t60, paper_scene().room), numeric=True),
                        default=0.6, help="seconds, at least the paper room's Sabine minimum")
    parser.add_argument("--snr", type=checked(check_snr, numeric=True), default=10.0)
    parser.add_argument("--threads", type=threads, default=2)
    parser.add_argument("--baseline-sources", type=count, default=3)
    parser.add_argument("--sources", type=count, default=None, help="only N sources of the test split (default: all)")
    args = parser.parse_args()
    scene = paper_scene()
    configure_cpu(args.threads)  # as every command: threads, freed memory kept for reuse
    corpus = SpeechCorpus.shipped()
    same_work = {"n_sources": args.baseline_sources, "corpus": corpus, "progress": False}
    with tempfile.TemporaryDirectory() as root:
        pra_scene = paper_scene("pyroomacoustics")
        # warm-up: the torch backend's compiled loops (cached on disk after the first run)
        simulate_dataset(pra_scene, "test", args.t60, args.snr, root=f"{root}/warm", **{**same_work, "n_sources": 1})
        start = time.perf_counter()
        simulate_dataset(pra_scene, "test", args.t60, args.snr, root=f"{root}/pra", backend="pyroomacoustics",
                         **same_work)
        ref = (time.perf_counter() - start) / args.baseline_sources
        start = time.perf_counter()
        simulate_dataset(pra_scene, "test", args.t60, args.snr, root=f"{root}/torch", **same_work)
        ours = (time.perf_counter() - start) / args.baseline_sources
        start = time.perf_counter()
        path = simulate_dataset(scene, "test", args.t60, args.snr, root=f"{root}/split", corpus=corpus,
                                n_sources=args.sources, progress=False)
        total = time.perf_counter() - start
        signals = open_signals(path)
        n, n_win = np.unique(signals["source_id"].values).size, signals.sizes["window"]
    print(f"T60 {args.t60} s, SNR {args.snr} dB, torch threads {args.threads}")
    print(f"pyroomacoustics convention, {args.baseline_sources} sources: pyroomacoustics backend {ref:.2f} s/source, "
          f"torch backend {ours:.3f} s/source -> {ref / ours:.1f}x")
    print(f"test split, shipped defaults ({scene.convention} convention, torch backend): {n} sources, {n_win} "
          f"windows in {total:.1f} s, {total / n:.3f} s/source (target for all 285: < 120 s)")
    print(f"projected train+val+test (4225 sources): {total / n * 4225 / 60:.1f} min (target < 30 min)")


if __name__ == "__main__":
    run_main(main)
