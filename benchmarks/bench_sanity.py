"""Sanity-check cost on the CPU: the Spearman ranks against numpy's stable argsort.

The cascading-randomization and random-target checks
(:func:`xai_loc.experiments.sanity.run_sanity`) compare maps by Spearman correlation of
their ordinal ranks. numpy ranks a row with a stable argsort (timsort, a comparison sort);
:func:`xai_loc.experiments.deletion_order.stable_ranks` gives the same ranks from a radix
sort of order-preserving integer keys. In one process, on the same data, this script times

1. ranking 16 maps of 16 x 5120 float32 samples (``|R|``) with ``stable_ranks`` and with
   the inverted stable argsort (the baseline), and checks that the ranks are equal;
2. the whole sanity run with each ranking swapped in, and checks that the results are equal
   (every variable, ``array_equal``).

    python benchmarks/bench_sanity.py [--model loccnn] [--sources 1] [--methods lrp:paper,input_x_gradient]
"""
import tempfile
import time
import timeit
from unittest import mock

import numpy as np
import torch
from _args import Parser, count, methods, run_main, threads

from xai_loc.data.scene import paper_scene
from xai_loc.data.store import simulate_dataset
from xai_loc.experiments import sanity
from xai_loc.experiments.deletion_order import stable_ranks
from xai_loc.experiments.modelset import ModelSet
from xai_loc.models import build_model
from xai_loc.runtime import configure_cpu


def argsort_ranks(a: np.ndarray) -> np.ndarray:
    """The baseline: ordinal ranks as the inverse permutation of numpy's stable argsort (in float64, as before)."""
    a = np.asarray(a, dtype=np.float64)
    order = np.argsort(a, axis=-1, kind="stable")
    ranks = np.empty(order.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(a.shape[-1], dtype=np.float64), order.shape), axis=-1)
    return ranks


def main() -> None:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="loccnn", choices=("loccnn", "samplecnn"))
    parser.add_argument("--sources", type=count, default=1, help="test sources (about 10 windows each)")
    parser.add_argument("--methods", type=methods, default="lrp:paper,input_x_gradient")
    parser.add_argument("--batch-size", type=count, default=16)
    parser.add_argument("--threads", type=threads, default=1)
    args = parser.parse_args()
    configure_cpu(args.threads)  # as every command: threads, freed memory kept for reuse
    torch.manual_seed(0)

    maps = np.abs(np.random.default_rng(0).standard_normal((16, 16 * 5120)).astype(np.float32))
    assert np.array_equal(stable_ranks(maps), argsort_ranks(maps))
    fast, slow = (min(timeit.repeat(lambda f=f: f(maps), number=1, repeat=6)) for f in (stable_ranks, argsort_ranks))
    print(f"ranking 16 maps of 16 x 5120 float32: stable_ranks {fast * 1e3:7.1f} ms, stable argsort "
          f"{slow * 1e3:7.1f} ms, ratio {slow / fast:5.1f}x")

    with tempfile.TemporaryDirectory() as tmp:
        store = simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=tmp, n_sources=args.sources)
        models = ModelSet({args.model: build_model(args.model)})
        common = {"methods": args.methods, "n_boot": 100, "batch_size": args.batch_size}
        sanity.run_sanity(models, store, **{**common, "n_sources": 1})  # warm-up: kernels compiled, caches filled
        tic = time.perf_counter()
        new = sanity.run_sanity(models, store, **common)
        fast = time.perf_counter() - tic
        with mock.patch.object(sanity, "stable_ranks", argsort_ranks):
            tic = time.perf_counter()
            old = sanity.run_sanity(models, store, **common)
            slow = time.perf_counter() - tic
    same = all(np.array_equal(new[v].values, old[v].values, equal_nan=True) for v in new.data_vars)
    print(f"sanity run, {args.model}, {new.attrs['n_windows']} windows, methods {','.join(args.methods)}: "
          f"{fast:6.2f} s with stable_ranks, {slow:6.2f} s with the stable argsort, ratio {slow / fast:4.2f}x; "
          f"results equal: {same}")
    if not same:
        raise SystemExit("the two rankings gave different sanity results")


if __name__ == "__main__":
    run_main(main)
