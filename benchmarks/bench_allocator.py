"""CPU cost of fresh pages: the paper's models with freed memory kept for reuse against glibc's defaults.

glibc serves every block above 32 MiB with pages of its own and returns them when the block is
freed, so each batch faults in and zeroes its activations again;
:func:`xai_loc.runtime.keep_freed_memory` keeps freed memory for reuse, as every xai-loc
command and script does. In one process, on the same batch, this script times

1. a training step of the paper's recipe (batch 100: forward, MSE, backward, Adam);
2. a forward pass in inference mode at batch 100 (evaluation) and 16 (the experiments' default);
3. LRP with the composite 'paper' (``Explainer.explain_batch``, batch 16),

for LocCNN and SampleCNN, each under glibc's defaults (the baseline) and with freed memory
kept, in interleaved rounds (the best of each), and checks that both give the same numbers
(``array_equal`` of the outputs, the relevance and the parameters after the step); a difference ends the run
with exit status 1.

    python benchmarks/bench_allocator.py [--models loccnn samplecnn] [--rounds 3] [--threads 1]
"""
import copy
import time

import torch
from _args import Parser, count, run_main, threads

from xai_loc.explain import Explainer
from xai_loc.models import build_model
from xai_loc.runtime import configure_threads, keep_freed_memory


def workloads(arch: str):
    """(name, run) pairs; ``run()`` returns the tensors whose values must not depend on the allocator."""
    torch.manual_seed(0)
    model = build_model(arch).eval()
    x = torch.randn(100, 16, 5120)
    y = torch.rand(100, 3)

    def train_step():
        net = copy.deepcopy(model).train()
        torch.manual_seed(1)  # the same dropout masks
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        start = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
        return time.perf_counter() - start, [p.detach() for p in net.parameters()]

    def forward(batch: int):
        def run():
            with torch.inference_mode():
                start = time.perf_counter()
                out = model(x[:batch])
            return time.perf_counter() - start, [out]
        return run

    def lrp():
        with Explainer(model, target="prediction", composite="paper", batch_size=16) as explainer:
            start = time.perf_counter()
            relevance = explainer.explain_batch(x[:16])
        return time.perf_counter() - start, [torch.from_numpy(relevance["relevance"])]

    return [("training step, batch 100", train_step), ("forward, batch 100", forward(100)),
            ("forward, batch 16", forward(16)), ("LRP 'paper', batch 16", lrp)]


def main() -> None:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["loccnn", "samplecnn"], choices=("loccnn", "samplecnn"))
    parser.add_argument("--rounds", type=count, default=3)
    parser.add_argument("--threads", type=threads, default=1)
    args = parser.parse_args()
    configure_threads(args.threads)  # freed memory is what this script switches
    print(f"{args.threads} torch thread(s); best of {args.rounds} interleaved rounds")
    differ = []
    for arch in args.models:
        for name, run in workloads(arch):
            best = {False: float("inf"), True: float("inf")}
            values = {}
            for _ in range(args.rounds):
                for kept in (False, True):
                    keep_freed_memory(kept)
                    run()  # a warm-up under this setting
                    seconds, values[kept] = run()
                    best[kept] = min(best[kept], seconds)
            same = all(torch.equal(a, b) for a, b in zip(values[False], values[True], strict=True))
            print(f"{arch:9s} {name:26s} glibc defaults {best[False] * 1e3:7.0f} ms, freed memory kept "
                  f"{best[True] * 1e3:7.0f} ms, ratio {best[False] / best[True]:4.2f}x, same numbers: {same}")
            if not same:
                differ.append(f"{arch} {name}")
    keep_freed_memory(False)
    if differ:
        raise SystemExit(f"glibc's defaults and freed memory kept gave different numbers for {', '.join(differ)}")


if __name__ == "__main__":
    run_main(main)
