"""RIR simulation speed: xai-loc's image-source simulator against pyroomacoustics, per convention.

Paper room (3.6 x 8.2 x 2.4 m), 16-microphone array, one test-split source, fs 16 kHz, each of
the paper's four T60s; every simulator in the same process, single-threaded by default, each
the best of ``--repeat`` runs. pyroomacoustics (the baseline) runs with its Sabine order
(``inverse_sabine``, the real package, +beta). Like for like: xai-loc under the same
``pyroomacoustics`` convention (16-tap filter, xai-loc's earlier simulator), whose responses are
checked against pyroomacoustics' ("same numbers": the largest difference within
:data:`TOLERANCE` of pyroomacoustics' peak; the two draw arrivals with 16- and 81-tap filters).
For reference only, as they compute other responses: xai-loc under the ``gpurir`` convention
(128-tap 8 ms arrival filter, gpuRIR's image grid, images up to T60: the paper's data) and with
the diffuse tail (``hybrid``, gpurir). Then the time per source over the first ``--sources``
sources of the test split at T60 = 0.6 s (``--sources 285``: the whole split).

    python benchmarks/bench_rir.py [--threads 1] [--repeat 5] [--sources 10]
"""
import argparse
import time

import numpy as np
from _args import Parser, count, run_main, threads

from xai_loc.acoustics.backends import simulate_rirs
from xai_loc.data.scene import PAPER_CONDITIONS, paper_scene
from xai_loc.runtime import configure_cpu

#: Largest difference allowed between xai-loc's and pyroomacoustics' responses under the pyroomacoustics convention,
#: as a fraction of pyroomacoustics' peak (16- against 81-tap arrival filters: 4-7 % measured).
TOLERANCE = 0.1


def best_time(func, repeat: int):
    """The fastest of ``repeat`` runs of ``func`` (seconds) and what its last run returned."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=threads, default=1)
    parser.add_argument("--repeat", type=count, default=5)
    parser.add_argument("--sources", type=count, default=10, help="test-split sources timed at T60 = 0.6 s")
    args = parser.parse_args()
    configure_cpu(args.threads)  # as every command: threads, freed memory kept for reuse
    scene = paper_scene()
    src = scene.sources[scene.splits["test"][:1]]

    def run(backend, t60, **options):
        return simulate_rirs(backend, scene.room, src, scene.mics, t60, **options)

    run("torch", 0.15)  # compile the loop (cached on disk after the first run)
    print(f"torch threads: {args.threads}; one source, 16 microphones; best of {args.repeat} for every simulator")
    print("like for like: pyroomacoustics against xai-loc under its convention ('pra-conv'); for reference (other "
          "responses): xai-loc's gpurir convention and its hybrid, divided into pyroomacoustics' time")
    print(f"{'T60 s':>6} {'pyroomacoustics s':>18} {'pra-conv s':>11} {'ratio':>7} {'diff/peak':>10} | "
          f"{'gpurir s':>9} {'ref. ratio':>10} {'gpurir hybrid s':>16} {'ref. ratio':>10}")
    differ = []
    for t60, _ in PAPER_CONDITIONS:
        ref, theirs = best_time(lambda t60=t60: run("pyroomacoustics", t60, convention="pyroomacoustics"),
                                args.repeat)
        pra, ours = best_time(lambda t60=t60: run("torch", t60, convention="pyroomacoustics"), args.repeat)
        gp, _ = best_time(lambda t60=t60: run("torch", t60, convention="gpurir"), args.repeat)
        hyb, _ = best_time(lambda t60=t60: run("torch", t60, convention="gpurir", mode="hybrid"), args.repeat)
        err = float(np.abs(ours - theirs).max() / np.abs(theirs).max()) if ours.shape == theirs.shape else np.inf
        if not err <= TOLERANCE:
            differ.append(f"{t60:g} s")
        print(f"{t60:6.2f} {ref:18.3f} {pra:11.4f} {ref / pra:6.1f}x {err:9.1%}{' ' if err <= TOLERANCE else '!'} | "
              f"{gp:9.4f} {ref / gp:9.1f}x {hyb:16.4f} {ref / hyb:9.1f}x")
    print(f"same numbers: xai-loc's pyroomacoustics-convention responses against pyroomacoustics', largest difference "
          f"as a share of its peak (16-tap against 81-tap arrival filters; tolerance {TOLERANCE:.0%}): "
          + ("within at every T60" if not differ else f"OUTSIDE at T60 {', '.join(differ)}"))
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
    if differ:
        raise SystemExit("xai-loc's and pyroomacoustics' responses differ beyond the tolerance")


if __name__ == "__main__":
    run_main(main)
