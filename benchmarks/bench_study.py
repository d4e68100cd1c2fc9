"""The study's stages on a device against the CPU, on the same data in one process, and the whole study projected.

Each stage of ``xai-loc reproduce`` runs on ``--device`` and then on the CPU: simulate the test
split of one condition (``--sources`` sources of the paper scene), explain every window with
LRP (composite ``paper``) into a relevance store, the perturbation experiment, the TDOA probe
(with SRP), the faithfulness suite (``--methods``, zero fill), the sanity checks (``--methods``) and
the component shares, for both
shipped models of the condition. Every stage after the simulation reads the CPU-simulated store,
so both devices see the same windows. Printed per stage: seconds on the device, on the CPU, the
ratio CPU / device, and the device's time per source (simulation) or per window (the others).
Each stage's numbers on the device are checked against the CPU's ("same numbers: ..."): every
numeric output (the simulated signals, the relevance, each result variable), as the norm of the
difference over the norm of the CPU's values, the worst variable; the CPU against itself must agree
bit for bit, another device within ``DEVICE_TOLERANCE`` (float32 summed in another order, and
samples of nearly equal relevance swapped at a deletion threshold: ``tests/test_gpu_paths.py``).
A stage outside it ends the run with exit status 1, after the table.
Before any timing, every selected stage runs once on a one-source store on each device (untimed), so
that neither pass pays a first use (CUDA context, compiled kernels, cached randomized copies) that
the other does not; the process is set up as a command's (threads, freed memory kept for reuse).

The projection multiplies those rates by the whole study: the 4 paper conditions x 285 test
sources x the windows per source measured here, both models. The simulation of other
conditions is projected at the measured condition's rate (T60 0.6 s, the default, is the
slowest, so the projection is an upper bound for simulation).

    python benchmarks/bench_study.py --device cuda [--sources 4 --t60 0.6 --snr 10 --threads 16] [--json out.json]
    python benchmarks/bench_study.py --device cpu --sources 2 --t60 0.15 --snr 25   # dry run
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _args import Parser, checked, count, device_spelling, methods, run_main, threads

from xai_loc.errors import InputError
from xai_loc.io import check_file_path

#: The whole study: the paper's conditions and test sources (both shipped models per condition).
STUDY_CONDITIONS = 4
STUDY_SOURCES = 285
#: The shipped models of a condition the study runs.
ARCHS = ("loccnn", "samplecnn")
#: Largest difference allowed between a device's numbers and the CPU's, as the norm of the difference over the norm
#: of the CPU's values of a variable (the CPU against itself: 0, bit for bit). ``tests/test_gpu_paths.py`` allows
#: 1e-3 of a window's norm for relevance and 1e-2 (sanity correlations) to 1e-5 elsewhere; not yet run on a GPU.
DEVICE_TOLERANCE = 1e-2


@dataclass
class Bench:
    """What every stage needs: the data, the models and the options of the run (``root``: a fresh folder
    per stage and pass for what it writes, so that no pass finds the stores of another)."""

    root: Path
    scene: object
    t60: float
    snr: float
    sources: int
    store: Path | None
    models: object
    batch_size: int
    methods: tuple[str, ...]


Numbers = dict[str, np.ndarray]


def numbers(ds) -> Numbers:
    """The numeric variables of a result Dataset, by name."""
    return {name: var.values for name, var in ds.data_vars.items() if var.dtype.kind in "biuf"}


def _simulate(b: Bench, device: str) -> Numbers:
    from xai_loc.data.store import open_signals, simulate_dataset

    store = simulate_dataset(b.scene, "test", b.t60, b.snr, root=b.root, n_sources=b.sources,
                             device=device, progress=False)
    return {"signals": open_signals(store)["signals"].values}


def _explain(b: Bench, device: str) -> Numbers:
    from xai_loc.explain.store import explain_store, open_relevance

    return {f"relevance of {name}": open_relevance(
        explain_store(b.models[name], b.store, b.root / f"relevance-{name}.zarr", method="lrp", composite="paper",
                      batch_size=b.batch_size, device=device, progress=False,
                      provenance=b.models.provenance(name))).values
            for name in b.models}


def _perturb(b: Bench, device: str) -> Numbers:
    from xai_loc.experiments.perturbation import run_perturbation

    return numbers(run_perturbation(b.models, b.store, batch_size=b.batch_size, device=device))


def _tdoa(b: Bench, device: str) -> Numbers:
    from xai_loc.experiments.tdoa_probe import run_tdoa

    return numbers(run_tdoa(b.models, b.store, pairs="spread", batch_size=b.batch_size, device=device))


def _faithfulness(b: Bench, device: str) -> Numbers:
    from xai_loc.experiments.faithfulness import run_faithfulness

    return numbers(run_faithfulness(b.models, b.store, methods=b.methods, fills=("zero",), n_boot=100,
                                    batch_size=b.batch_size, device=device))


def _sanity(b: Bench, device: str) -> Numbers:
    from xai_loc.experiments.sanity import run_sanity

    return numbers(run_sanity(b.models, b.store, methods=b.methods, n_boot=100, batch_size=b.batch_size,
                              device=device))


def _components(b: Bench, device: str) -> Numbers:
    from xai_loc.experiments.components import run_components

    return numbers(run_components(b.models, b.store, methods=b.methods, n_boot=100, batch_size=b.batch_size,
                                  device=device))


def relative_difference(got: Numbers, ref: Numbers) -> tuple[float, str]:
    """The norm of ``got - ref`` over the norm of ``ref``'s finite values, for the worst variable, and its name
    (equal values, infinities and NaNs included, count 0; a NaN or infinity on one side only, or another shape,
    makes it infinite)."""
    worst = (0.0, "-")
    for name, b in ref.items():
        a, b = np.asarray(got[name], dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            return math.inf, name
        with np.errstate(invalid="ignore"):  # inf - inf, where both are infinite
            diff = np.where((a == b) | (np.isnan(a) & np.isnan(b)), 0.0, a - b)
        if not np.isfinite(diff).all():
            return math.inf, name
        scale = np.linalg.norm(b[np.isfinite(b)]) or 1.0
        worst = max(worst, (float(np.linalg.norm(diff) / scale), name))
    return worst


#: The study's stages in order: name -> (run on a device and return its numbers, unit of its rate).
STAGES: dict[str, tuple[Callable[[Bench, str], Numbers], str]] = {
    "simulate": (_simulate, "source"),
    "explain": (_explain, "window"),
    "perturb": (_perturb, "window"),
    "tdoa": (_tdoa, "window"),
    "faithfulness": (_faithfulness, "window"),
    "sanity": (_sanity, "window"),
    "components": (_components, "window"),
}


def timed(fn: Callable[[Bench, str], Numbers], b: Bench, device: str) -> tuple[float, Numbers]:
    """Seconds of ``fn(b, device)``, the device's queued work included, and its numbers."""
    import torch

    start = time.perf_counter()
    result = fn(b, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def warm_up(b: Bench, devices, stages) -> None:
    """Run every stage once, untimed, on a store of one source, on each device (CPU included): the CUDA
    context, kernels and cuDNN plans, numba's deletion kernels (compiled on a fresh install), the cached
    randomized copies and the simulation paths, so that no timed pass pays a first use the other does not."""
    import torch

    from xai_loc.data.store import simulate_dataset

    warm = dataclasses.replace(b, sources=1)
    warm.store = simulate_dataset(b.scene, "test", b.t60, b.snr, root=b.root / "warm-up" / "data", n_sources=1,
                                  device="cpu", progress=False)
    for device in devices:
        for stage in stages:
            warm.root = b.root / "warm-up" / f"{stage}-{device}"
            STAGES[stage][0](warm, device)
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 600 else f"{value / 60:.1f} min"


def report(times: dict[str, tuple[float, float]], same: dict[str, tuple[float, str, bool]], device: str,
           n_sources: int, n_windows: int) -> dict:
    """Print the per-stage table and the projection of the whole study; return both as data.

    ``times``: stage -> (seconds on ``device``, seconds on the CPU); ``same``: stage -> (relative difference
    of the device's numbers from the CPU's, its worst variable, within the tolerance).
    """
    per_source = n_windows / n_sources
    study_windows = STUDY_CONDITIONS * STUDY_SOURCES * per_source
    rows, projected, projected_cpu = [], {}, {}
    print(f"\n{n_sources} sources, {n_windows} windows ({per_source:.1f} per source), both models; "
          f"device {device} against cpu\n")
    print(f"| stage | {device} | cpu | cpu/{device} | {device} per unit | study on {device} | study on cpu baseline |")
    print("|---|---|---|---|---|---|---|")
    for stage, (_, unit) in STAGES.items():
        if stage not in times:
            continue
        t_dev, t_cpu = times[stage]
        count = n_sources if unit == "source" else n_windows
        whole = STUDY_CONDITIONS * STUDY_SOURCES if unit == "source" else study_windows
        projected[stage], projected_cpu[stage] = t_dev / count * whole, t_cpu / count * whole
        print(f"| {stage} | {t_dev:.2f} s | {t_cpu:.2f} s | {t_cpu / t_dev:.2f}x | {t_dev / count * 1e3:.1f} ms/{unit} "
              f"| {_seconds(projected[stage])} | {_seconds(projected_cpu[stage])} |")
        rows.append({"stage": stage, "device_seconds": t_dev, "cpu_seconds": t_cpu, "unit": unit,
                     "device_per_unit": t_dev / count, "projected_study_seconds": projected[stage],
                     "projected_study_cpu_seconds": projected_cpu[stage], "relative_difference": same[stage][0],
                     "relative_difference_variable": same[stage][1], "same_numbers": same[stage][2]})
    total, total_cpu = sum(projected.values()), sum(projected_cpu.values())
    print(f"\nwhole study ({STUDY_CONDITIONS} conditions x {STUDY_SOURCES} sources x {per_source:.1f} windows, "
          f"both models), projected from the per-unit rates above: {_seconds(total)} on {device}, "
          f"{_seconds(total_cpu)} on the cpu baseline")
    return {"device": device, "sources": n_sources, "windows": n_windows, "stages": rows,
            "projected_study_seconds": total, "projected_study_cpu_seconds": total_cpu}


def stage_names(text: str) -> list[str]:
    """Comma-separated stages of :data:`STAGES`, in the order given; at least one."""
    stages = [s.strip() for s in text.split(",") if s.strip()]
    if not stages:
        raise InputError(f"{text!r} names no stage; allowed: one or more of {', '.join(STAGES)}, comma-separated")
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise InputError(f"stage {unknown[0]!r} is unknown; allowed: {', '.join(STAGES)}")
    return stages


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # spelling only here (gpu_study.sh puts its default before the user's --device); the machine's is checked below
    parser.add_argument("--device", type=device_spelling, default="cuda",
                        help="the device measured against the CPU (cpu, cuda, cuda:N)")
    parser.add_argument("--sources", type=count, default=4, help="test sources of the condition")
    parser.add_argument("--t60", type=float, default=0.6)
    parser.add_argument("--snr", type=float, default=10.0)
    parser.add_argument("--batch-size", type=count, default=16)
    parser.add_argument("--methods", type=methods, default="lrp:paper,input_x_gradient",
                        help="comma-separated methods of the faithfulness, sanity and component stages")
    parser.add_argument("--stages", type=checked(stage_names), default=",".join(STAGES),
                        help=f"comma-separated subset of {', '.join(STAGES)}")
    parser.add_argument("--threads", type=threads, default=1, help="torch CPU threads")
    parser.add_argument("--work", type=Path, default=None,
                        help="a new or empty folder for the stores, kept afterwards (default: a temporary one)")
    parser.add_argument("--json", type=checked(check_file_path), default=None, help="also write the results here")
    parser.add_argument("--check", action="store_true",
                        help="check the arguments (devices, checkpoints, folders included), then end without work")
    args = parser.parse_args(argv)

    import torch

    from xai_loc.data.scene import PAPER_CONDITIONS, paper_scene
    from xai_loc.data.store import count_windows, simulate_dataset
    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.models.zoo import checkpoint_name, pretrained_dir, shipped_checkpoint
    from xai_loc.runtime import configure_cpu, no_tf32, resolve_device

    stages, device = args.stages, str(resolve_device(args.device))
    if args.work is not None and args.work.exists() and not args.work.is_dir():
        raise InputError(f"--work {args.work} is a file; give a new or empty folder")
    if args.work is not None and args.work.exists() and any(args.work.iterdir()):
        raise InputError(f"--work {args.work} is not empty; give a new or empty folder (stores found there "
                         "would be reused and time nothing)")
    try:
        checkpoints = {arch: shipped_checkpoint(arch, args.t60, args.snr) for arch in ARCHS}
    except InputError:  # its advice (--checkpoint, train one) is not this script's: name the conditions it takes
        shipped = [f"--t60 {t:g} --snr {s:g}" for t, s in PAPER_CONDITIONS
                   if all((pretrained_dir() / checkpoint_name(arch, t, s)).is_file() for arch in ARCHS)]
        raise InputError(f"--t60 {args.t60:g} --snr {args.snr:g} has no shipped checkpoints in {pretrained_dir()}; "
                         f"allowed: {', '.join(shipped) or 'none (no shipped checkpoints)'}") from None
    if args.check:
        return 0
    configure_cpu(args.threads)  # as every xai-loc command: threads, freed memory kept for reuse
    scene = paper_scene()
    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp, no_tf32():
        root = Path(args.work or tmp)
        n_windows = count_windows(scene, "test", args.t60, args.snr, n_sources=args.sources)
        bench = Bench(root, scene, args.t60, args.snr, args.sources, None, ModelSet(checkpoints), args.batch_size,
                      tuple(args.methods))
        print(f"torch {torch.__version__}, {device}"
              + (f" ({torch.cuda.get_device_name(device)})" if device.startswith("cuda") else "")
              + f", {args.threads} CPU thread(s); T60 {args.t60:g} s, SNR {args.snr:g} dB; TF32 off", flush=True)
        # the data of every stage after the simulation, for both devices: simulated once on the CPU, untimed
        bench.store = simulate_dataset(scene, "test", args.t60, args.snr, root=root / "data-cpu",
                                       n_sources=args.sources, device="cpu", progress=False)
        warm_up(bench, dict.fromkeys((device, "cpu")), stages)
        times: dict[str, tuple[float, float]] = {}
        same: dict[str, tuple[float, str, bool]] = {}
        tolerance = 0.0 if device == "cpu" else DEVICE_TOLERANCE
        for stage in stages:
            seconds, results = [], []
            for k, dev in enumerate((device, "cpu")):
                bench.root = root / f"{stage}-{k}"
                t, result = timed(STAGES[stage][0], bench, dev)
                seconds.append(t)
                results.append(result)
                print(f"{stage} on {dev}: {t:.2f} s", flush=True)
            times[stage] = (seconds[0], seconds[1])
            diff, variable = relative_difference(*results)
            same[stage] = (diff, variable, bool(diff <= tolerance))
            detail = "bit for bit" if diff == 0 else f"|{device} - cpu| / |cpu| {diff:.2g} for {variable}"
            print(f"same numbers: {stage} on {device} and cpu: {'yes' if diff <= tolerance else 'NO'}, {detail} "
                  f"(tolerance {tolerance:g})", flush=True)
        summary = report(times, same, device, args.sources, n_windows)
    if args.json is not None:
        from xai_loc.io import write_text_atomic

        write_text_atomic(args.json, json.dumps(summary, indent=1) + "\n")
    differ = [stage for stage, (_, _, ok) in same.items() if not ok]
    if differ:
        print(f"bench_study: {device} and cpu gave different numbers in {', '.join(differ)} "
              f"(beyond {tolerance:g})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_main(main)
