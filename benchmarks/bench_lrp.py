"""LRP throughput: windows per second of the paper composites against a plain forward+backward.

For LocCNN and SampleCNN on 16 x 5120 windows, times in the same process and on the same
batch: a plain training-style forward+backward (gradients of all parameters), the input
gradient alone (the "gradient" attribution), xai-loc's LRP with the composites 'paper' and
'paper-samplecnn-reversed-gate' (``Explainer.explain_batch``), and, for reference, 'paper'
with zennit's stock hooks (``WSquare``, ``Gamma``, ``Epsilon``, ``Norm``, ``Pass``; the gate
rule as xai-loc's). Prints windows per second and the ratio of each to the plain
forward+backward (target: LRP 'paper' at most 1.5x).

Each round times every row (median of ``--repeats`` calls after a warm-up) one after the
other, so a round's ratios share the machine's load; with ``--rounds`` above 1 the printed
ratios are the medians over rounds.

The two implementations of the same rules are checked to give the same numbers on the timed
batch ("same numbers: ..."): xai-loc's LRP 'paper' against zennit's stock hooks, the largest
difference of the relevance over its largest magnitude within :data:`TOLERANCE` (float32; the
two sum in different orders), else the run ends with exit status 1. The other rows compute other
things by design (parameter gradients, the input gradient, another gate rule): timing references.

    python benchmarks/bench_lrp.py [--batch 16] [--repeats 3] [--rounds 1] [--threads 1] [--device cpu]
"""
import argparse
import statistics
import time

import torch
from _args import Parser, count, device_name, run_main, threads
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import SpecialFirstLayerMapComposite, layer_map_base
from zennit.rules import Epsilon, Gamma, Norm, WSquare
from zennit.types import Convolution, Linear, MaxPool

from xai_loc.explain import Explainer, GateRule, MergeBatchNorm
from xai_loc.models import build_model
from xai_loc.models.layers import Gate
from xai_loc.runtime import configure_cpu

#: Largest difference allowed between xai-loc's LRP 'paper' relevance and zennit's stock hooks', relative to the
#: largest magnitude of the relevance (float32).
TOLERANCE = 1e-5


def _timed(fn, repeats: int, sync) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def stock_paper(arch: str) -> SpecialFirstLayerMapComposite:
    """'paper' with zennit's stock hooks (the gate rule is xai-loc's: zennit has none)."""
    layer_map = ([(Gate, GateRule("signal"))] + ([(MaxPool, Norm(1e-6))] if arch == "loccnn" else [])
                 + layer_map_base(1e-6) + [(Convolution, Gamma(gamma=0.25, stabilizer=1e-6)),
                                           (nn.Linear, Epsilon(1e-6))])
    return SpecialFirstLayerMapComposite(layer_map=layer_map, first_map=[(Linear, WSquare(1e-6))],
                                         canonizers=[MergeBatchNorm()])


def same_relevance(model: nn.Module, arch: str, x: torch.Tensor, device: torch.device) -> float:
    """Largest difference of xai-loc's LRP 'paper' relevance from zennit's stock hooks' on ``x``, relative to
    the largest magnitude of the stock relevance."""
    with Explainer(model, target="prediction", composite="paper", batch_size=x.shape[0],
                   device=str(device)) as explainer:
        ours = torch.as_tensor(explainer.explain_batch(x)["relevance"]).double()
    with Gradient(model, stock_paper(arch)) as attributor:
        _, stock = attributor(x, lambda out: out.detach())
    stock = stock.detach().cpu().double().reshape(ours.shape)
    return float((ours - stock).abs().max() / stock.abs().max())


def bench(arch: str, batch: int, repeats: int, rounds: int, device: torch.device,
          sync) -> tuple[list[tuple[str, float, float]], float]:
    """(label, median seconds per batch, median ratio to the first row) for one architecture, and the largest
    relative difference of LRP 'paper' from zennit's stock hooks on the timed batch."""
    model = build_model(arch).eval().to(device)
    x = 0.01 * torch.randn(batch, 16, 5120, generator=torch.Generator().manual_seed(0)).to(device)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    def input_gradient():
        xx = x.clone().requires_grad_()
        torch.autograd.grad(model(xx).sum(), xx)

    def explainer_row(composite):
        def run():
            with Explainer(model, target="prediction", composite=composite, batch_size=batch,
                           device=str(device)) as explainer:
                return _timed(lambda: explainer.explain_batch(x), repeats, sync)
        return run

    def stock_row():
        with Gradient(model, stock_paper(arch)) as attributor:
            return _timed(lambda: attributor(x, lambda out: out.detach()), repeats, sync)

    rows = [("forward+backward (all parameters)", lambda: _timed(forward_backward, repeats, sync)),
            ("input gradient", lambda: _timed(input_gradient, repeats, sync)),
            ("LRP 'paper'", explainer_row("paper")),
            ("LRP 'paper-samplecnn-reversed-gate'", explainer_row("paper-samplecnn-reversed-gate")),
            ("LRP 'paper', zennit's stock hooks", stock_row)]
    seconds = {label: [] for label, _ in rows}
    ratios = {label: [] for label, _ in rows}
    for _ in range(rounds):
        times = [(label, run()) for label, run in rows]
        base = times[0][1]
        for label, value in times:
            seconds[label].append(value)
            ratios[label].append(value / base)
    return ([(label, statistics.median(seconds[label]), statistics.median(ratios[label])) for label, _ in rows],
            same_relevance(model, arch, x, device))


def main() -> None:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=count, default=16)
    parser.add_argument("--repeats", type=count, default=3)
    parser.add_argument("--rounds", type=count, default=1)
    parser.add_argument("--threads", type=threads, default=1)
    parser.add_argument("--device", default="cpu", type=device_name)
    args = parser.parse_args()
    configure_cpu(args.threads)  # as every command: threads, freed memory kept for reuse
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"batch {args.batch} windows of 16 x 5120, device {device}, torch threads {torch.get_num_threads()}, "
          f"{args.rounds} round(s) of {args.repeats} repeats")
    differ = []
    for arch in ("loccnn", "samplecnn"):
        rows, diff = bench(arch, args.batch, args.repeats, args.rounds, device, sync)
        print(f"\n{arch}")
        for label, seconds, ratio in rows:
            print(f"  {label:40s} {args.batch / seconds:8.1f} windows/s  {ratio:5.2f}x forward+backward")
        print(f"  same numbers: LRP 'paper' against zennit's stock hooks on the timed batch: "
              f"{'yes' if diff <= TOLERANCE else 'NO'}, largest difference {diff:.2g} of the largest |R| "
              f"(tolerance {TOLERANCE:g})")
        if diff > TOLERANCE:
            differ.append(arch)
    if differ:
        raise SystemExit(f"LRP 'paper' and zennit's stock hooks gave different relevance for {', '.join(differ)}")


if __name__ == "__main__":
    run_main(main)
