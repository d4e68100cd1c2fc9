"""LRP throughput: windows per second of the paper composites against a plain forward+backward.

For LocCNN and SampleCNN on 16 x 5120 windows, times in the same process and on the same
batch: a plain training-style forward+backward (gradients of all parameters), the input
gradient alone (the "gradient" attribution), xai-loc's LRP with the composites 'paper' and
'paper-samplecnn-reversed-gate', and, for reference, 'paper' with zennit's stock Gamma rule
instead of FastGamma. Prints windows per second and the ratio of each to the plain
forward+backward (target: LRP at most 2.5x).

    python benchmarks/bench_lrp.py [--batch 16] [--repeats 3] [--threads 1] [--device cpu]
"""
import argparse
import statistics
import time

import torch
from zennit.attribution import Gradient
from zennit.rules import Gamma

from xai_loc.explain import Explainer
from xai_loc.explain.composites import _epsilon, _first_rule, _type_composite
from xai_loc.models import build_model


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


def bench(arch: str, batch: int, repeats: int, device: torch.device, sync) -> list[tuple[str, float]]:
    """(label, seconds per batch) rows for one architecture; the first row is the baseline."""
    model = build_model(arch).eval().to(device)
    x = 0.01 * torch.randn(batch, 16, 5120, generator=torch.Generator().manual_seed(0)).to(device)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    def input_gradient():
        xx = x.clone().requires_grad_()
        torch.autograd.grad(model(xx).sum(), xx)

    rows = [("forward+backward (all parameters)", _timed(forward_backward, repeats, sync)),
            ("input gradient", _timed(input_gradient, repeats, sync))]
    for composite in ("paper", "paper-samplecnn-reversed-gate"):
        with Explainer(model, target="prediction", composite=composite, batch_size=batch,
                       device=str(device)) as explainer:
            rows.append((f"LRP '{composite}'", _timed(lambda e=explainer: e.explain_batch(x), repeats, sync)))
    stock = _type_composite(
        _first_rule("wsquare", epsilon=1e-6, gamma=0.25, stabilizer=1e-6, low=None, high=None),
        Gamma(gamma=0.25, stabilizer=1e-6), _epsilon(1e-6), gate="signal", maxpool="wta", maxpool_power=1.0,
        stabilizer=1e-6)
    with Gradient(model, stock) as attributor:
        rows.append(("LRP 'paper', zennit's stock Gamma",
                     _timed(lambda: attributor(x, lambda out: out.detach()), repeats, sync)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"batch {args.batch} windows of 16 x 5120, device {device}, torch threads {torch.get_num_threads()}")
    for arch in ("loccnn", "samplecnn"):
        rows = bench(arch, args.batch, args.repeats, device, sync)
        base = rows[0][1]
        print(f"\n{arch}")
        for label, seconds in rows:
            print(f"  {label:40s} {args.batch / seconds:8.1f} windows/s  {seconds / base:5.2f}x forward+backward")


if __name__ == "__main__":
    main()
