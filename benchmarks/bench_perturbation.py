"""Deletion-curve cost: vectorized masking against the paper's per-index Python loop, and the
experiment's wall time against the bare forward passes it needs.

The paper's approach (its ``perturb_array``) ranks each window's 16 x 5120 samples with a
full ``argsort`` per mode and percentage and zeroes them one index at a time in a Python
loop; xai-loc gives every sample the step at which it is first deleted (a radix pass and an
exact selection inside the threshold bins, no sort) and builds each deleted copy in one
fused pass, batch by batch as the experiment does. Both run on the same inputs in this
process, and every copy is read once (as a forward pass would); the script prints the ratios.
The experiment and the bare forward passes it needs are timed interleaved after a warm-up,
the fastest of ``--repeats`` each.

Both sides are checked to give the same numbers ("same numbers: ..."): the deleted copies of the
loop windows in the relevance and energy orders equal the paper loop's (``array_equal``; the
random order draws other samples by design, so only its count of deleted samples is compared),
and the experiment's predictions at 0 % (every mode) equal the bare forward passes' on the same
batches (``array_equal``). A difference ends the run with exit status 1.

    python benchmarks/bench_perturbation.py [--windows 64] [--loop-windows 4] [--batch-size 16] [--model loccnn]
"""
import argparse

import numpy as np
import torch
from _args import Parser, best_of, count, run_main, threads

from xai_loc.experiments.perturbation import (
    MODES,
    PAPER_PERCENTAGES,
    deletion_counts,
    deletion_predictions,
    n_deleted,
    perturbed_batches,
)
from xai_loc.models import build_model
from xai_loc.runtime import configure_cpu


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


def same_copies(x: torch.Tensor, rel: torch.Tensor, windows: int, modes) -> dict[str, bool]:
    """Per mode: the vectorized deleted copies of the first ``windows`` windows equal the paper loop's
    (relevance and energy: every value; random: other draws by design, the count of deleted samples)."""
    xb, rb = x[:windows], rel[:windows]
    same = {}
    for mode in modes:
        steps = MODES[mode](xb, rb, deletion_counts(PAPER_PERCENTAGES, xb), 0, 0)
        ours = np.stack([xp.numpy().copy() for _, xp in perturbed_batches(xb, steps, PAPER_PERCENTAGES)])
        paper = np.stack([np.stack([paper_perturb(xb[w].numpy(), p, mode, rb[w].numpy()) for w in range(windows)])
                          for p in PAPER_PERCENTAGES])
        same[mode] = (np.array_equal((ours == 0).sum(axis=(2, 3)), (paper == 0).sum(axis=(2, 3))) if mode == "random"
                      else np.array_equal(ours, paper))
    return same


def main() -> None:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=count, default=64)
    parser.add_argument("--loop-windows", type=count, default=4, help="windows timed with the Python loop")
    parser.add_argument("--batch-size", type=count, default=16, help="windows per batch (the experiment's default)")
    parser.add_argument("--model", default="loccnn", choices=("loccnn", "samplecnn"))
    parser.add_argument("--threads", type=threads, default=1)
    parser.add_argument("--repeats", type=count, default=5, help="runs per approach; the fastest counts")
    args = parser.parse_args()
    if args.loop_windows > args.windows:
        parser.error(f"--loop-windows {args.loop_windows} is not allowed; use at most --windows ({args.windows})")
    configure_cpu(args.threads)  # as every command: threads, freed memory kept for reuse
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((args.windows, 16, 5120)), dtype=torch.float32)
    rel = torch.tensor(rng.standard_normal(x.shape), dtype=torch.float32)

    modes = ["relevance", "energy", "random"]

    def paper_loop():
        for w in range(args.loop_windows):
            for p in PAPER_PERCENTAGES:
                for mode in modes:
                    paper_perturb(x[w].numpy(), p, mode, rel[w].numpy()).sum()

    def vectorized():
        for b in range(0, args.windows, args.batch_size):
            xb, rb = x[b : b + args.batch_size], rel[b : b + args.batch_size]
            for mode in modes:
                steps = MODES[mode](xb, rb, deletion_counts(PAPER_PERCENTAGES, xb), 0, b)
                for _, xp in perturbed_batches(xb, steps, PAPER_PERCENTAGES):
                    xp.sum()

    vectorized()  # compile (or load) the kernels
    (loop, vec), _ = best_of(args.repeats, paper_loop, vectorized)
    loop, vec = loop / args.loop_windows, vec / args.windows
    print(f"deleted copies, 3 modes x 8 percentages per window: paper loop {loop * 1e3:.1f} ms/window, "
          f"vectorized {vec * 1e3:.2f} ms/window -> {loop / vec:.0f}x")
    copies = same_copies(x, rel, args.loop_windows, modes)
    print(f"same numbers: deleted copies of the {args.loop_windows} loop windows, vectorized against the paper loop "
          f"(array_equal): relevance {copies['relevance']}, energy {copies['energy']}; random (other draws by "
          f"design): the same count deleted {copies['random']}")

    model = build_model(args.model).eval()

    def experiment():
        return deletion_predictions(model, x, PAPER_PERCENTAGES, modes, relevance=rel, batch_size=args.batch_size)

    def forward():
        """As many forward passes as the experiment makes, on the undeleted batches; the outputs of one round."""
        with torch.no_grad():
            for _ in range(len(modes) * len(PAPER_PERCENTAGES)):
                out = [model(x[b : b + args.batch_size]) for b in range(0, args.windows, args.batch_size)]
        return torch.cat(out).numpy()

    with torch.no_grad():
        model(x[: args.batch_size])  # warm-up: both runs below find the model's buffers and kernels ready
    (whole, bare), (predictions, outputs) = best_of(args.repeats, experiment, forward)
    print(f"{args.model}, {args.windows} windows x {len(modes)} modes x {len(PAPER_PERCENTAGES)} percentages: "
          f"experiment {whole:.1f} s, its forward passes alone {bare:.1f} s -> {whole / bare:.2f}x")
    at_zero = all(np.array_equal(predictions[m, PAPER_PERCENTAGES.index(0)], outputs) for m in range(len(modes)))
    print(f"same numbers: the experiment's predictions at 0 % (every mode) against the bare forward passes "
          f"(array_equal): {at_zero}")
    if not (at_zero and all(copies.values())):
        raise SystemExit("the vectorized path and its baseline gave different numbers")


if __name__ == "__main__":
    run_main(main)
