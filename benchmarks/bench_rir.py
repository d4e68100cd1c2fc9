"""RIR simulation speed: xai-loc's image-source simulator against pyroomacoustics, per convention.

Paper room (3.6 x 8.2 x 2.4 m), 16-microphone array, one test-split source, fs 16 kHz, each of
the paper's four T60s; every simulator in the same process, single-threaded by default.
pyroomacoustics runs with its Sabine order (``inverse_sabine``, the real package, +beta);
xai-loc runs under the ``gpurir`` convention (128-tap 8 ms arrival filter, gpuRIR's image
grid, images up to T60: the paper's data) and the ``pyroomacoustics`` convention (16-tap
filter, xai-loc's earlier simulator), and with the diffuse tail (``hybrid``, gpurir). Prints
the ratios, then the time per source over the first ``--sources`` sources of the test split
at T60 = 0.6 s (``--sources 285``: the whole split).

    python benchmarks/bench_rir.py [--threads 1] [--repeat 5] [--sources 10]
"""
import argparse
import time

import numpy as np
from _args import count

from xai_loc.acoustics.backends import simulate_rirs
from xai_loc.data.scene import PAPER_CONDITIONS, paper_scene
from xai_loc.runtime import configure_cpu


def best_time(func, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=count, default=1)
    parser.add_argument("--repeat", type=count, default=5)
    parser.add_argument("--sources", type=count, default=10, help="test-split sources timed at T60 = 0.6 s")
    args = parser.parse_args()
    configure_cpu(args.threads)  # as every command: threads, freed memory kept for reuse
    scene = paper_scene()
    src = scene.sources[scene.splits["test"][:1]]

    def run(backend, t60, **options):
        return simulate_rirs(backend, scene.room, src, scene.mics, t60, **options)

    run("torch", 0.15)  # compile the loop (cached on disk after the first run)
    print(f"torch threads: {args.threads}; one source, 16 microphones; best of {args.repeat} "
          "(pyroomacoustics: of 3 below T60 0.4 s, else 1)")
    print(f"{'T60 s':>6} {'pyroomacoustics s':>18} {'gpurir s':>9} {'ratio':>7} {'pra-conv s':>11} {'ratio':>7} "
          f"{'gpurir hybrid s':>16} {'ratio':>7}")
    for t60, _ in PAPER_CONDITIONS:
        ref = best_time(lambda t60=t60: run("pyroomacoustics", t60, convention="pyroomacoustics"),
                        3 if t60 < 0.4 else 1)
        gp = best_time(lambda t60=t60: run("torch", t60, convention="gpurir"), args.repeat)
        pra = best_time(lambda t60=t60: run("torch", t60, convention="pyroomacoustics"), args.repeat)
        hyb = best_time(lambda t60=t60: run("torch", t60, convention="gpurir", mode="hybrid"), args.repeat)
        print(f"{t60:6.2f} {ref:18.3f} {gp:9.4f} {ref / gp:6.1f}x {pra:11.4f} {ref / pra:6.1f}x "
              f"{hyb:16.4f} {ref / hyb:6.1f}x")
    ours = simulate_rirs("torch", scene.room, src, scene.mics, 0.6, convention="pyroomacoustics")
    theirs = simulate_rirs("pyroomacoustics", scene.room, src, scene.mics, 0.6, convention="pyroomacoustics")
    err = np.abs(ours - theirs).max() / np.abs(theirs).max()
    print(f"T60 0.6, pyroomacoustics convention: largest difference to pyroomacoustics {err:.3%} of its peak "
          "(16-tap against 81-tap filters)")
    ids = scene.splits["test"][: args.sources]
    times = []
    for sid in ids:
        start = time.perf_counter()
        simulate_rirs("torch", scene.room, scene.sources[[sid]], scene.mics, 0.6, convention="gpurir")
        times.append(time.perf_counter() - start)
    times = np.array(times)
    print(f"T60 0.6, gpurir convention, {len(ids)} test-split sources: {times.mean() * 1e3:.1f} ms per source "
          f"(min {times.min() * 1e3:.1f}, max {times.max() * 1e3:.1f}); the 285-source test split: "
          f"~{times.mean() * 285:.0f} s of RIRs")


if __name__ == "__main__":
    main()
