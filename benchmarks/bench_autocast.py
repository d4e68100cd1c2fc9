"""Training steps in bfloat16 mixed precision against float32, for the paper's models.

One process, one batch of the paper's size (100 windows of 16 x 5120 samples) and the same
seeded weights: a training step (forward, MSE, backward, Adam) in float32 (the baseline) and
with the forward pass under ``torch.autocast`` in bfloat16
(:func:`xai_loc.models.trainer.autocast_forward`, what ``xai-loc train --autocast bfloat16``
runs), in interleaved rounds (the best of each). Prints each step's time, the ratio
float32 / bfloat16, and how far the step's loss and gradient lie from float32's (relative;
bfloat16 keeps 8 bits of mantissa; the gradient, not Adam's first update, which is about
``lr * sign(g)`` and so counts sign flips of tiny gradients). The gain needs a CPU with
AVX512-BF16 or AMX (or a GPU with bfloat16 units); without them bfloat16 may be slower.

    python benchmarks/bench_autocast.py [--models loccnn samplecnn] [--rounds 3] [--threads 2] [--device cpu]
"""
import copy
import time

import torch
from _args import Parser, count, device_name, run_main, threads

from xai_loc.models import build_model
from xai_loc.models.trainer import autocast_forward
from xai_loc.runtime import configure_threads, keep_freed_memory


def step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: str | None, device: torch.device):
    """One training step of a copy of ``model``; (seconds, loss, the gradient of every parameter, flattened)."""
    net = copy.deepcopy(model).train()
    forward = net if dtype is None else autocast_forward(net, dtype, device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    torch.manual_seed(1)  # the same dropout masks
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(forward(x), y)
    loss.backward()
    opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return seconds, float(loss.detach()), torch.cat([p.grad.flatten() for p in net.parameters()])


def main() -> None:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["loccnn", "samplecnn"], choices=("loccnn", "samplecnn"))
    p.add_argument("--rounds", type=count, default=3)
    p.add_argument("--threads", type=threads, default=2)
    p.add_argument("--device", type=device_name, default="cpu")
    args = p.parse_args()
    configure_threads(args.threads)
    keep_freed_memory()
    device = torch.device(args.device)
    print(f"device {device}, {args.threads} threads, batch 100 x 16 x 5120, best of {args.rounds} rounds")
    for arch in args.models:
        torch.manual_seed(0)
        model = build_model(arch).to(device)
        x = torch.randn(100, 16, 5120, device=device)
        y = torch.rand(100, 3, device=device)
        step(model, x, y, "bfloat16", device)  # warm-up of both paths
        step(model, x, y, None, device)
        best = {"float32": float("inf"), "bfloat16": float("inf")}
        for _ in range(args.rounds):
            for name, dtype in (("float32", None), ("bfloat16", "bfloat16")):
                seconds, loss, grad = step(model, x, y, dtype, device)
                best[name] = min(best[name], seconds)
                if name == "float32":
                    ref_loss, ref_grad = loss, grad
                else:
                    loss_error = abs(loss - ref_loss) / ref_loss
                    grad_error = float((grad - ref_grad).norm() / ref_grad.norm())
        print(f"{arch:10s} step float32 {best['float32']:.3f} s, bfloat16 {best['bfloat16']:.3f} s: "
              f"{best['float32'] / best['bfloat16']:.2f}x; loss differs by {loss_error:.1e} (relative), "
              f"the gradient by {grad_error:.1e} (relative norm)")


if __name__ == "__main__":
    run_main(main)
