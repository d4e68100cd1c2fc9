"""Deletion-curve cost: vectorized masking against the paper's per-index Python loop, and the
experiment's wall time against the bare forward passes it needs.

The paper's approach (its ``perturb_array``) ranks each window's 16 x 5120 samples with a
full ``argsort`` per mode and percentage and zeroes them one index at a time in a Python
loop; xai-loc selects every percentage's threshold from each window's score values with a
nested ``partition`` (no sort, no permutation) and builds each deleted copy with one
comparison and one multiplication over all windows.
Both run on the same inputs in this process; the script prints the ratios.

    python benchmarks/bench_perturbation.py [--windows 64] [--loop-windows 4] [--model loccnn]
"""
import argparse
import time

import numpy as np
import torch

from xai_loc.experiments.perturbation import (
    MODES,
    PAPER_PERCENTAGES,
    deletion_predictions,
    n_deleted,
    perturbed_batches,
)
from xai_loc.models import build_model


def paper_perturb(window: np.ndarray, percentage: float, mode: str, relevance: np.ndarray | None = None):
    """The released code's approach, per window, mode and percentage: order, then zero one
    flat index at a time in a Python loop."""
    flat = window.reshape(-1)
    k = n_deleted(percentage, flat.size)
    if mode == "relevance":
        idx = np.argsort(-relevance.reshape(-1))[:k]
    elif mode == "energy":
        idx = np.argsort(-np.abs(flat))[:k]
    else:
        idx = np.random.choice(np.arange(flat.size), k, replace=False)
    out = flat.copy()
    for i in range(len(idx)):
        out[idx[i]] = 0
    return out.reshape(window.shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=64)
    parser.add_argument("--loop-windows", type=int, default=4, help="windows timed with the Python loop")
    parser.add_argument("--model", default="loccnn")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((args.windows, 16, 5120)), dtype=torch.float32)
    rel = torch.tensor(rng.standard_normal(x.shape), dtype=torch.float32)

    modes = ["relevance", "energy", "random"]
    start = time.perf_counter()
    for w in range(args.loop_windows):
        for p in PAPER_PERCENTAGES:
            for mode in modes:
                paper_perturb(x[w].numpy(), p, mode, rel[w].numpy())
    loop = (time.perf_counter() - start) / args.loop_windows
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for mode in modes:
        scores = MODES[mode](x, rel, gen)
        for _, xp in perturbed_batches(x, scores, PAPER_PERCENTAGES, torch.zeros_like(x)):
            xp.sum()  # touch every copy, as a forward pass would
    vec = (time.perf_counter() - start) / args.windows
    print(f"deleted copies, 3 modes x 8 percentages per window: paper loop {loop * 1e3:.1f} ms/window, "
          f"vectorized {vec * 1e3:.2f} ms/window -> {loop / vec:.0f}x")

    model = build_model(args.model).eval()
    start = time.perf_counter()
    deletion_predictions(model, x, PAPER_PERCENTAGES, modes, relevance=rel, batch_size=32)
    experiment = time.perf_counter() - start
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(len(modes) * len(PAPER_PERCENTAGES)):
            for b in range(0, args.windows, 32):
                model(x[b : b + 32])
    forward = time.perf_counter() - start
    print(f"{args.model}, {args.windows} windows x {len(modes)} modes x {len(PAPER_PERCENTAGES)} percentages: "
          f"experiment {experiment:.1f} s, its forward passes alone {forward:.1f} s -> {experiment / forward:.2f}x")


if __name__ == "__main__":
    main()
