"""RIR simulation speed: xai-loc's torch image-source simulator against pyroomacoustics.

Paper room (3.6 x 8.2 x 2.4 m), 16-microphone array, one source, fs 16 kHz, each of the
paper's four T60s; both simulators in the same process, single-threaded torch by default.
pyroomacoustics runs with its Sabine order (``inverse_sabine``), xai-loc with image sources
up to T60 ("ism", the default) and with the diffuse tail ("hybrid"). Prints the ratios.

    python benchmarks/bench_rir.py [--threads 1] [--repeat 3]
"""
import argparse
import time

import numpy as np
import torch

from xai_loc.acoustics.backends import simulate_rirs
from xai_loc.data.scene import PAPER_CONDITIONS, paper_scene


def best_time(func, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    scene = paper_scene()
    src = scene.sources[scene.splits["test"][:1]]
    print(f"torch threads: {args.threads}; one source, 16 microphones, best of {args.repeat}")
    print(f"{'T60 s':>6} {'pyroomacoustics s':>18} {'xai-loc ism s':>14} {'ratio':>7} {'hybrid s':>9} {'ratio':>7}")
    for t60, _ in PAPER_CONDITIONS:
        def run(backend, t60=t60, **options):
            return simulate_rirs(backend, scene.room, src, scene.mics, t60, **options)

        ref = best_time(lambda: run("pyroomacoustics"), 1 if t60 >= 0.4 else args.repeat)
        ism = best_time(lambda: run("torch"), args.repeat)
        hyb = best_time(lambda: run("torch", mode="hybrid"), args.repeat)
        print(f"{t60:6.2f} {ref:18.3f} {ism:14.3f} {ref / ism:6.1f}x {hyb:9.3f} {ref / hyb:6.1f}x")
    ours = simulate_rirs("torch", scene.room, src, scene.mics, 0.6)
    theirs = simulate_rirs("pyroomacoustics", scene.room, src, scene.mics, 0.6)
    err = np.abs(ours - theirs).max() / np.abs(theirs).max()
    print(f"T60 0.6: largest difference to pyroomacoustics {err:.3%} of its peak")


if __name__ == "__main__":
    main()
