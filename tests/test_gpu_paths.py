"""Every study stage with a ``--device`` option, run on CUDA and on the CPU on the same tiny data (issue 18).

Two sources of the paper scene's test split at (0.15 s, 25 dB), simulated once on the CPU, and
the shipped models of that condition. TF32 is off in every test (:func:`~xai_loc.runtime.no_tf32`),
so both devices compute in full float32 and differ by the rounding of their summation orders
and kernels: about 1e-6 of a result for the sums of up to 1e5 products in these networks. The
tolerances below are 10-100 times that; where samples are ranked by relevance, the rounding
can swap samples of nearly equal relevance at a deletion threshold, which moves an error by
far less than a millimetre, and those comparisons allow 1 mm. The last test, a CPU dry run of
``benchmarks/bench_study.py``, runs everywhere.

What the CUDA paths send to the host (from reading the stages; ``benchmarks/bench_study.py``
measures the cost). Every ``--device cuda`` command except ``train`` runs with TF32 off
(:func:`~xai_loc.runtime.full_float32`, from the CLI's ``setup``), as these tests do.

- simulate: blocks of sources (``DEVICE_SOURCES``). Images, responses and the rendering stay on
  the device (``render_windows_batch``); the NumPy-drawn noise goes there. Each block's windows
  come back once to be written; ``simulate_windows`` keeps them there and brings back two flags
  per window, once.
- explain: per batch, the relevance, prediction and sums come back to be written
  (``Explainer.explain_batch``); entering an explainer brings its zero-input output back.
- perturb: the models (and randomized copies) go to the device once per run (once per batch on
  a cluster's workers). Per batch the windows go there, and the relevance stays there
  (``explain_batch(to_host=False)``; a store's relevance goes there). Ranking
  (``torch_deletion_steps``), deleted copies and predictions happen there, and the predictions
  come back once.
- tdoa: per batch the windows go to the device and the relevance stays there. GCC-PHAT, the
  correlation times and SRP run there; delays, thresholds and SRP peaks come back.
- sanity: the maps of every cascade stage and target stay on the device, are compared there
  (``spearman``, ``pearson``, entropies, eMPRT's histograms) and the per-input numbers come back.
- faithfulness: as perturb. The model is placed once per batch, and the errors come back per
  ordering.
- components: the models go to the device once per run. Per source, the stored windows go there;
  responses, components (``render_components_batch``), relevance and the shares stay there, and
  the shares come back.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                   reason="needs CUDA: compares a stage's cuda path with its CPU path")
ROOT = Path(__file__).resolve().parents[1]

DEVICE = "cuda"
T60, SNR = 0.15, 25.0
ARCHS = ("loccnn", "samplecnn")
MM = 1e-3  # metres: the allowance of relevance-ranked deletion (module docs)


@pytest.fixture(autouse=True)
def full_float32():
    from xai_loc.runtime import no_tf32

    with no_tf32():
        yield


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from xai_loc.data.scene import paper_scene
    from xai_loc.data.store import simulate_dataset

    return simulate_dataset(paper_scene(), "test", T60, SNR, root=tmp_path_factory.mktemp("gpu-paths-cpu"),
                            n_sources=2, progress=False)


@pytest.fixture(scope="module")
def models():
    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.models.zoo import shipped_checkpoint

    return ModelSet({arch: shipped_checkpoint(arch, T60, SNR) for arch in ARCHS})


def _on_cpu(models) -> bool:
    return all(p.device.type == "cpu" for name in models for p in models[name].parameters())


def _on_both(run, models, store, **options):
    """``run(models, store)`` on the CPU and on CUDA; the models are back on the CPU afterwards."""
    cpu = run(models, store, device="cpu", **options)
    gpu = run(models, store, device=DEVICE, **options)
    assert _on_cpu(models)
    return cpu, gpu


@requires_cuda
def test_simulate_on_cuda_equals_the_cpu_store(store, tmp_path):
    from xai_loc.data.components import RENDER_TOLERANCE
    from xai_loc.data.scene import paper_scene
    from xai_loc.data.store import open_signals, simulate_dataset, simulate_windows

    gpu_store = simulate_dataset(paper_scene(), "test", T60, SNR, root=tmp_path, n_sources=2, device=DEVICE,
                                 progress=False)
    cpu, gpu = open_signals(store), open_signals(gpu_store)
    assert json.loads(cpu.attrs["rendered_on"]) == ["cpu"]
    assert json.loads(gpu.attrs["rendered_on"]) == [f"cuda ({torch.cuda.get_device_name(0)})"]
    for name in ("source_id", "window_index", "speech_id", "source_position"):
        np.testing.assert_array_equal(gpu[name].values, cpu[name].values)
    x_cpu, x_gpu = cpu["signals"].values, gpu["signals"].values
    peak = np.abs(x_cpu).max(axis=(1, 2), keepdims=True)
    # the components stage accepts a store as its own rendering within this bound (RIRs made on a GPU)
    assert np.all(np.abs(x_gpu - x_cpu) <= RENDER_TOLERANCE * peak)

    split = simulate_windows(paper_scene(), "test", T60, SNR, n_sources=2, device=DEVICE, progress=False)
    assert split.signals.device.type == "cuda"
    np.testing.assert_array_equal(split.signals.cpu().numpy(), x_gpu)  # the same device, bit for bit


@requires_cuda
@pytest.mark.parametrize("arch", ARCHS)
def test_explain_on_cuda_matches_the_cpu(store, models, arch):
    from xai_loc.data.store import open_signals

    ds = open_signals(store)
    x, truth = ds["signals"].values, ds["source_position"].values
    out = {}
    for dev in ("cpu", DEVICE):
        with models.explainer(arch, device=dev, batch_size=8) as explainer:
            out[dev] = explainer.explain_batch(x, truth)
    assert _on_cpu(models)  # the explainer puts the model back
    cpu, gpu = out["cpu"], out[DEVICE]
    np.testing.assert_allclose(gpu["prediction"], cpu["prediction"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gpu["attr_output"], cpu["attr_output"], rtol=1e-5)  # the truth, as seeded
    r_cpu, r_gpu = cpu["relevance"].reshape(len(x), -1), gpu["relevance"].reshape(len(x), -1)
    scale = np.linalg.norm(r_cpu, axis=1)
    assert np.all(scale > 0)
    assert np.all(np.linalg.norm(r_gpu - r_cpu, axis=1) <= 1e-3 * scale)
    np.testing.assert_allclose(gpu["relevance_sum"], cpu["relevance_sum"], rtol=1e-3,
                               atol=1e-4 * np.abs(r_cpu).sum(1).max())


@requires_cuda
def test_deletion_predictions_on_cuda_match_the_cpu(store, models):
    from xai_loc.data.store import open_signals
    from xai_loc.experiments.perturbation import MODES, deletion_predictions

    ds = open_signals(store)
    x = torch.as_tensor(ds["signals"].values[:8])
    relevance = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))  # one ranking for both devices
    model = models["samplecnn"]
    for fill in ("zero", "noise"):
        options = {"percentages": (0, 10, 40, 70), "modes": list(MODES), "fill": fill, "seed": 2, "batch_size": 4}
        cpu = deletion_predictions(model, x, relevance=relevance, **options)
        try:
            gpu = deletion_predictions(model.to(DEVICE), x.to(DEVICE), relevance=relevance.to(DEVICE), **options)
            host = deletion_predictions(model, x, relevance=relevance, **options)  # host windows, as perturb has
        finally:
            model.cpu()
        assert np.ptp(cpu[:, -1], axis=-2).max() > 0  # the windows are told apart
        for result in (gpu, host):  # the same samples deleted, the copies made on the device: float32 only
            np.testing.assert_allclose(result, cpu, rtol=1e-4, atol=1e-4)


@requires_cuda
def test_run_perturbation_on_cuda_matches_the_cpu(store, models):
    from xai_loc.experiments.perturbation import run_perturbation

    options = {"percentages": (0, 10, 50), "modes": ("relevance", "energy", "random"), "batch_size": 8, "seed": 1}
    cpu = run_perturbation(models, store, device="cpu", **options)
    gpu = run_perturbation(models, store, device=DEVICE, **options)  # explanations and deletions on the device
    assert _on_cpu(models)
    assert all(p.device.type == "cpu" for name in models for p in models.randomized(name, 1).parameters())
    for mode in ("energy", "random"):  # rankings that do not depend on the device
        np.testing.assert_allclose(gpu["mae"].sel(mode=mode), cpu["mae"].sel(mode=mode), atol=1e-5)
    for mode in ("relevance", "relevance-randomized"):  # relevance from each device ranks the samples
        np.testing.assert_allclose(gpu["mae"].sel(mode=mode), cpu["mae"].sel(mode=mode), atol=MM)
    np.testing.assert_allclose(gpu["mae"].sel(percentage=0), cpu["mae"].sel(percentage=0), atol=1e-5)


@requires_cuda
def test_run_tdoa_on_cuda_matches_the_cpu(store, models):
    from xai_loc.experiments.tdoa_probe import run_tdoa

    options = {"pairs": "7-8,0-15", "batch_size": 8, "srp_max_windows": 3, "interp": 16}
    cpu, gpu = _on_both(run_tdoa, models, store, **options)
    assert list(gpu["estimator"].values) == list(cpu["estimator"].values)
    np.testing.assert_array_equal(gpu["truth"].values, cpu["truth"].values)
    # the GPU correlates at full interpolation, the CPU coarse-to-fine: the same crossing to float64 rounding
    np.testing.assert_allclose(gpu["threshold"].values, cpu["threshold"].values, rtol=1e-9)
    signals = cpu["estimator_kind"].values == "signals"
    np.testing.assert_array_equal(gpu["delay"].values[signals], cpu["delay"].values[signals])
    # relevance of each device: the GCC-PHAT peak within one step of the 1/16-sample lag axis
    np.testing.assert_allclose(gpu["delay"].values, cpu["delay"].values, rtol=0, atol=1 / 16 + 1e-9)
    np.testing.assert_allclose(gpu["srp_peak"].values, cpu["srp_peak"].values, rtol=0,
                               atol=float(cpu.attrs["srp_step"]) + 1e-9)  # one grid step


@requires_cuda
def test_run_faithfulness_on_cuda_matches_the_cpu(store, models):
    from xai_loc.experiments.faithfulness import run_faithfulness

    options = {"methods": ("lrp:paper", "saliency"), "fills": ("zero", "noise"), "percentages": (0, 10, 50),
               "n_boot": 50, "batch_size": 8}
    one = models.select(["loccnn"])
    cpu, gpu = _on_both(run_faithfulness, one, store, **options)
    np.testing.assert_allclose(gpu["curve"].sel(ordering="random"), cpu["curve"].sel(ordering="random"), atol=1e-5)
    np.testing.assert_allclose(gpu["curve"], cpu["curve"], atol=MM)
    np.testing.assert_allclose(gpu["unperturbed_error"], cpu["unperturbed_error"], atol=1e-5)
    np.testing.assert_allclose(gpu["completeness"], cpu["completeness"], rtol=1e-3, atol=1e-4)


@requires_cuda
def test_run_components_on_cuda_matches_the_cpu(store, models):
    from xai_loc.data.components import RENDER_TOLERANCE
    from xai_loc.experiments.components import run_components

    options = {"methods": ("lrp:paper", "input_x_gradient"), "n_boot": 50, "batch_size": 8}
    one = models.select(["samplecnn"])
    cpu, gpu = _on_both(run_components, one, store, **options)
    assert all(p.device.type == "cpu" for p in one.randomized("samplecnn", 0).parameters())
    assert np.isfinite(cpu["share"].sel(split="power")).all()
    for name in ("share", "contribution"):  # shares in [0, 1]; NaN where the linear split is not exact
        np.testing.assert_allclose(gpu[name], cpu[name], rtol=1e-3, atol=1e-4)
    for name in ("energy_share", "reference_share"):  # model-free: only the responses were made on the device
        np.testing.assert_allclose(gpu[name], cpu[name], rtol=0, atol=RENDER_TOLERANCE)


@requires_cuda
def test_run_sanity_on_cuda_matches_the_cpu(store, models):
    from xai_loc.experiments.sanity import run_sanity

    options = {"methods": ("lrp:paper", "saliency"), "n_boot": 50, "batch_size": 8}
    one = models.select(["loccnn"])
    cpu, gpu = _on_both(run_sanity, one, store, **options)
    # correlations and entropies of relevance made on two devices (within 1e-3 of its norm, see explain)
    for name in ("similarity", "score"):
        np.testing.assert_allclose(gpu[name].values, cpu[name].values, rtol=1e-2, atol=1e-2)


def test_bench_study_dry_run_on_the_cpu_projects_the_study_from_its_rates(tmp_path):
    from xai_loc.data.scene import paper_scene
    from xai_loc.data.store import count_windows

    script = str(ROOT / "benchmarks" / "bench_study.py")
    args = ["--device", "cpu", "--sources", "1", "--t60", str(T60), "--snr", str(SNR), "--threads", "1"]
    run = subprocess.run([sys.executable, script, *args, "--stages", "simulate,explain", "--json",
                          str(tmp_path / "bench.json")], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "| simulate |" in run.stdout and "| explain |" in run.stdout and "whole study" in run.stdout
    result = json.loads((tmp_path / "bench.json").read_text())
    windows = count_windows(paper_scene(), "test", T60, SNR, n_sources=1)
    assert (result["device"], result["sources"], result["windows"]) == ("cpu", 1, windows)
    assert [row["stage"] for row in result["stages"]] == ["simulate", "explain"]
    simulate, explain = result["stages"]
    assert simulate["unit"] == "source" and explain["unit"] == "window"
    assert simulate["device_seconds"] > 0 and explain["cpu_seconds"] > 0
    np.testing.assert_allclose(simulate["projected_study_seconds"], simulate["device_seconds"] * 4 * 285, rtol=1e-12)
    np.testing.assert_allclose(explain["projected_study_seconds"], explain["device_seconds"] * 4 * 285, rtol=1e-12)
    np.testing.assert_allclose(result["projected_study_seconds"],
                               simulate["projected_study_seconds"] + explain["projected_study_seconds"], rtol=1e-12)

    bad = subprocess.run([sys.executable, script, *args, "--stages", "simulate,train"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["bench_study.py: error: argument --stages: stage 'train' is unknown; "
                                               "allowed: simulate, explain, perturb, tdoa, faithfulness, sanity, "
                                               "components"]
    typo = subprocess.run([sys.executable, script, *args, "--methods", "lrp:paper,saliancy"], capture_output=True,
                          text=True, timeout=120)
    assert typo.returncode == 2 and len(typo.stderr.strip().splitlines()) == 1
    assert typo.stderr.startswith("bench_study.py: error: argument --methods: ") and "saliancy" in typo.stderr
