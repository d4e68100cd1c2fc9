"""Dataset throughput: simulate the paper's test split (285 sources) of one condition to disk.

Times the whole split with the default torch backend and, as the baseline in the same run,
the pyroomacoustics backend on a few sources; prints seconds per source, the ratio, the
split's wall time against the 2-minute target and the projected time of the full
train+val+test set (4225 sources) against the 30-minute target.

    python benchmarks/bench_simulate.py [--t60 0.6] [--snr 10] [--threads 2] [--baseline-sources 3]
"""
import argparse
import tempfile
import time

import torch

from xai_loc.acoustics.speech import SpeechCorpus
from xai_loc.data.scene import paper_scene
from xai_loc.data.store import open_signals, simulate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--t60", type=float, default=0.6)
    parser.add_argument("--snr", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline-sources", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scene, corpus = paper_scene(), SpeechCorpus.shipped()
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        simulate_dataset(scene, "test", args.t60, args.snr, root=f"{root}/ref", n_sources=args.baseline_sources,
                         corpus=corpus, backend="pyroomacoustics", progress=False)
        ref = (time.perf_counter() - start) / args.baseline_sources
        start = time.perf_counter()
        path = simulate_dataset(scene, "test", args.t60, args.snr, root=f"{root}/ours", corpus=corpus)
        total = time.perf_counter() - start
        n_win = open_signals(path).sizes["window"]
    n = len(scene.splits["test"])
    print(f"T60 {args.t60} s, SNR {args.snr} dB, torch threads {args.threads}")
    print(f"pyroomacoustics backend: {ref:.2f} s/source; torch backend: {total / n:.3f} s/source "
          f"-> {ref / (total / n):.1f}x")
    print(f"test split: {n} sources, {n_win} windows in {total:.1f} s (target < 120 s)")
    print(f"projected train+val+test (4225 sources): {total / n * 4225 / 60:.1f} min (target < 30 min)")


if __name__ == "__main__":
    main()
