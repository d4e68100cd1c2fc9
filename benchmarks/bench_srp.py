"""SRP-PHAT maps on the CPU: the kept lags read from the unshifted correlation, against shifting it whole.

:func:`xai_loc.experiments.srp.srp_phat_map` reads each of the 120 microphone pairs'
GCC-PHAT correlation (16 384 x ``interp`` lags) at a few hundred lags around 0.
:func:`xai_loc.experiments.gcc.gcc_phat` gathers those lags from the inverse FFT's output;
the baseline (the earlier code) applied ``fftshift`` to all lags first and then sliced, a
copy of the whole correlation. In one process, on the same windows of the paper's array, this
script computes the SRP maps of all windows with each, once untimed (a warm-up of both), then
``--repeats`` times interleaved, and prints the fastest run of each
(:func:`_args.best_of`); it checks that the maps are equal (``array_equal``): a
difference ends the run with exit status 1.

    python benchmarks/bench_srp.py [--windows 11] [--interp 4] [--repeats 5] [--threads 1]
"""
from unittest import mock

import numpy as np
from _args import Parser, best_of, count, run_main, threads

from xai_loc.data.scene import paper_scene
from xai_loc.experiments import gcc, srp
from xai_loc.experiments.tdoa_probe import srp_grid
from xai_loc.runtime import configure_cpu


def shifted_gcc_phat(x1, x2, max_lag=None, interp=16, eps=1e-12):
    """The baseline, NumPy only: the whole correlation shifted, then the kept lags sliced."""
    n = gcc._next_pow2(x1.shape[-1] + x2.shape[-1])
    cross = np.fft.rfft(x2, n) * np.fft.rfft(x1, n).conj()
    cross /= np.maximum(abs(cross), eps)
    m = n * interp
    cc = np.fft.fftshift(np.fft.irfft(cross, m), axes=-1)
    lags = (np.arange(m) - m // 2) / interp
    kept = np.flatnonzero(np.abs(lags) <= max_lag)
    return lags[kept], cc[..., kept[0] : kept[-1] + 1]


def main() -> None:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=count, default=11)
    parser.add_argument("--interp", type=count, default=4, help="lag interpolation (the tdoa experiment's default)")
    parser.add_argument("--repeats", type=count, default=5, help="timed runs of each, interleaved; the fastest counts")
    parser.add_argument("--threads", type=threads, default=1)
    args = parser.parse_args()
    configure_cpu(args.threads)  # as every command: threads, freed memory kept for reuse
    scene = paper_scene()
    windows = np.random.default_rng(0).standard_normal((args.windows, scene.mics.shape[0], 5120))
    grid = srp_grid(scene.sources[scene.splits["test"]])["grid"]  # the tdoa experiment's search plane
    fs, c = 16000.0, 343.0

    def gathered() -> np.ndarray:
        return srp.srp_phat_map(windows, scene.mics, grid, fs, c, interp=args.interp)

    def shifted() -> np.ndarray:
        with mock.patch.object(srp, "gcc_phat", shifted_gcc_phat):
            return gathered()

    best_of(1, gathered, shifted)  # warm-up of both, untimed
    (fast, slow), (maps, reference) = best_of(args.repeats, gathered, shifted)
    equal = np.array_equal(maps, reference)
    print(f"SRP-PHAT, {args.windows} windows x {scene.mics.shape[0]} microphones, {grid.shape[0]} points, fastest "
          f"of {args.repeats} interleaved runs after a warm-up: {fast:6.2f} s gathered, {slow:6.2f} s shifted whole, "
          f"ratio {slow / fast:4.2f}x; maps equal: {equal}")
    if not equal:
        raise SystemExit("the gathered and the shifted correlations gave different SRP-PHAT maps")


if __name__ == "__main__":
    run_main(main)
