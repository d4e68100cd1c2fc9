"""Faithfulness-suite cost against the forward and backward passes it needs.

The suite (:func:`xai_loc.experiments.faithfulness.run_faithfulness`) must do two kinds of
network work: the attributions (each method's own passes, for the model and its randomized
copy) and one forward pass per perturbed batch (fills x orderings x curves x percentages).
Everything else - ranking the samples, building the filled copies, ROAD's imputation and
noise, the metrics and the bootstrap - is overhead. This script runs the suite on a small
test split and, in the same process and on the same windows, the bare passes: every
explainer's ``explain_batch`` over the windows, and the model's forward pass on as many
batches of the same shapes as the suite evaluates. It prints both times and their ratio
(target: at most 1.3).

    python benchmarks/bench_faithfulness.py [--model loccnn] [--sources 2] [--batch-size 16] [--device cpu]
"""
import tempfile
import time

import numpy as np
import torch
from _args import Parser, count, device_name, fills, methods, run_main, threads

from xai_loc.data.scene import paper_scene
from xai_loc.data.store import open_signals, simulate_dataset
from xai_loc.experiments.faithfulness import ORDERINGS, parse_methods, run_faithfulness
from xai_loc.experiments.modelset import ModelSet
from xai_loc.experiments.perturbation import PAPER_PERCENTAGES
from xai_loc.models import build_model
from xai_loc.runtime import configure_cpu, resolve_device


def bare_passes(models: ModelSet, name: str, windows: torch.Tensor, truth: np.ndarray, specs, fills, n_p: int,
                batch_size: int, device: str, seed: int) -> float:
    """Seconds of the attributions and the forward passes the suite needs, run bare."""
    kw = {"target": "truth", "batch_size": batch_size, "device": device}
    explainers = [models.explainer(name, method=m, composite=c, **kw) for m, c in specs]
    explainers += [models.explainer(name, randomized_seed=seed, method=m, composite=c, **kw) for m, c in specs]
    n_orderings = len(specs) * (len(ORDERINGS) - 1) + 1  # relevance and randomized per method, one random
    n_forward = len(fills) * n_orderings * 3 * n_p
    net = models[name].to(resolve_device(device))
    tic = time.perf_counter()
    for start in range(0, windows.shape[0], batch_size):
        x = windows[start:start + batch_size]
        for explainer in explainers:
            with explainer:
                explainer.explain_batch(x, truth[start:start + batch_size])
        xd = x.to(resolve_device(device))
        with torch.no_grad():
            for _ in range(n_forward):
                net(xd)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - tic


def main() -> None:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="loccnn", choices=("loccnn", "samplecnn"))
    parser.add_argument("--sources", type=count, default=2, help="test sources (about 10 windows each)")
    parser.add_argument("--methods", type=methods, default="lrp:paper,input_x_gradient,saliency")
    parser.add_argument("--fills", type=fills, default="zero,noise,road")
    parser.add_argument("--batch-size", type=count, default=16)
    parser.add_argument("--threads", type=threads, default=1)
    parser.add_argument("--device", default="cpu", type=device_name)
    args = parser.parse_args()
    specs = parse_methods(args.methods)
    configure_cpu(args.threads)  # as every command: threads, freed memory kept for reuse
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = simulate_dataset(paper_scene(), "test", 0.6, 10.0, root=tmp, n_sources=args.sources)
        ds = open_signals(store)
        windows = torch.as_tensor(ds["signals"].values)
        truth = ds["source_position"].values.astype(np.float64)
        models = ModelSet({args.model: build_model(args.model)})
        common = {"methods": args.methods, "fills": args.fills, "batch_size": args.batch_size,
                  "device": args.device, "n_boot": 1000}
        run_faithfulness(models, store, **{**common, "n_sources": 1})  # warm-up: kernels compiled, caches filled
        tic = time.perf_counter()
        run_faithfulness(models, store, **common)
        suite = time.perf_counter() - tic
        bare = bare_passes(models, args.model, windows, truth, specs, args.fills, len(PAPER_PERCENTAGES),
                           args.batch_size, args.device, 0)
    print(f"{args.model}, {windows.shape[0]} windows, methods {','.join(args.methods)}, "
          f"fills {','.join(args.fills)}, {len(PAPER_PERCENTAGES)} percentages, device {args.device}")
    print(f"faithfulness suite      {suite:8.2f} s")
    print(f"bare passes it needs    {bare:8.2f} s")
    print(f"ratio suite / passes    {suite / bare:8.2f} x   (target <= 1.3)")


if __name__ == "__main__":
    run_main(main)
