"""The whole study of Comanducci et al. (EUSIPCO 2024) for every condition and model.

For each of the paper's conditions with shipped checkpoints: test data, localization error
beside the constant predictor and the published numbers, relevance, perturbation curves,
the TDOA table per pair distance with its baselines, SRP-PHAT maps, the input-inspection
figure, and a ``summary.md`` gathering the tables.

It runs every stage, from simulated data to figures, so it sits above all of them, below the CLI.
"""
from __future__ import annotations

import sys
from pathlib import Path

#: ``--quick``: sources of the test split and windows for SRP.
QUICK_SOURCES = 3
QUICK_SRP_WINDOWS = 8


def _available(archs, t60: float, snr: float, folder) -> dict[str, Path]:
    from xai_loc.errors import InputError
    from xai_loc.models.zoo import shipped_checkpoint

    found = {}
    for arch in archs:
        try:
            found[arch] = shipped_checkpoint(arch, t60, snr, folder)
        except InputError:
            continue
    return found


def reproduce(out: str | Path, *, quick: bool = False, data_root=None, conditions=None,
              archs=("loccnn", "samplecnn"), pretrained=None, batch_size: int = 16, device: str = "cpu",
              progress: bool | None = None, convention: str = "gpurir") -> Path:
    """Run the study and write everything below ``out``; returns the path of ``summary.md``.

    Parameters
    ----------
    out
        Results folder (one sub-folder per condition).
    quick
        A handful of test sources (:data:`QUICK_SOURCES`) so that it runs in minutes.
    data_root
        Where test data is simulated (default: ``$XAI_LOC_DATA`` or ``./xai-loc-data``).
    conditions
        (T60, SNR) pairs (default: the paper's four).
    archs
        Architectures to include when a checkpoint exists for the condition.
    pretrained
        Checkpoint folder (default: the shipped ``pretrained/``).
    convention
        Simulation convention of the test data (:mod:`xai_loc.acoustics.conventions`); each
        model's row says the convention of its training data.
    """
    from xai_loc.data.scene import PAPER_CONDITIONS, paper_scene
    from xai_loc.data.store import condition_name, open_signals, simulate_dataset
    from xai_loc.experiments.perturbation import run_perturbation
    from xai_loc.experiments.tdoa_probe import explain_models, run_tdoa, tdoa_tables, write_tdoa_results
    from xai_loc.io import write_dataset_atomic, write_text_atomic
    from xai_loc.models.checkpoint import read_card
    from xai_loc.models.evaluation import evaluate_checkpoint
    from xai_loc.models.zoo import PAPER_MAE, data_convention
    from xai_loc.plots.inspection import plot_inspection
    from xai_loc.plots.perturbation import perturbation_table, plot_perturbation
    from xai_loc.plots.tdoa import plot_srp, plot_tdoa

    out = Path(out)
    progress = sys.stderr.isatty() if progress is None else progress
    n_sources = QUICK_SOURCES if quick else None
    scene = paper_scene(convention)
    loc_rows, sections, missing = [], [], []
    for t60, snr in conditions or PAPER_CONDITIONS:
        models = _available(archs, t60, snr, pretrained)
        if not models:
            missing.append((t60, snr))
            continue
        folder = out / condition_name(t60, snr)
        store = simulate_dataset(scene, "test", t60, snr, root=data_root, n_sources=n_sources, device=device,
                                 progress=progress)
        for arch, ckpt in models.items():
            ev = evaluate_checkpoint(ckpt, store, batch_size=batch_size, device=device).summary()
            paper = PAPER_MAE.get(arch, {}).get((float(t60), float(snr)))
            loc_rows.append(f"| {t60:g} | {snr:g} | {arch} | {data_convention(read_card(ckpt))} | "
                            f"{ev['metrics']['mae']:.3f} | {ev['baseline']['metrics']['mae']:.3f} | "
                            f"{paper if paper is not None else '-'} | {ev['n_windows']} |")
        pert = run_perturbation(models, store, batch_size=batch_size, device=device, progress=progress)
        write_dataset_atomic(pert, folder / "perturbation.nc")
        plot_perturbation(pert, folder / "perturbation")
        table = perturbation_table(pert)
        write_text_atomic(folder / "perturbation.md", table)
        relevance = explain_models(models, store, batch_size=batch_size, device=device, progress=progress)
        tdoa = run_tdoa(models, store, pairs="spread", relevance=relevance, batch_size=batch_size, device=device,
                        srp_max_windows=QUICK_SRP_WINDOWS if quick else None, progress=progress)
        write_tdoa_results(tdoa, folder)
        plot_tdoa(tdoa, folder / "tdoa")
        plot_srp(tdoa, folder / "srp")
        first = next(iter(models))
        plot_inspection(open_signals(store), {first: relevance[first]}, folder / f"inspection_{first}")
        sections += [f"## T60 {t60:g} s, SNR {snr:g} dB", "", "### Perturbation (MAE per coordinate, m)", "",
                     table, "### TDOA", "", tdoa_tables(tdoa)["markdown"], ""]
    lines = ["# xai-loc reproduction of Comanducci, Antonacci & Sarti (EUSIPCO 2024)", "",
             f"{'Quick run: ' + str(QUICK_SOURCES) + ' test sources per condition.' if quick else 'Full test split.'}",
             f"Test data simulated under the {convention} convention.",
             "", "## Localization error on the test split", "",
             "| T60 s | SNR dB | model | trained on | MAE/coord m | constant predictor m | paper m | windows |",
             "|---|---|---|---|---|---|---|---|", *loc_rows, ""]
    if missing:
        lines += ["No shipped checkpoint for: " + ", ".join(f"({t:g} s, {s:g} dB)" for t, s in missing)
                  + ". Train them with scripts/train_zoo.py.", ""]
    summary = write_text_atomic(out / "summary.md", "\n".join(lines + sections) + "\n")
    return summary

