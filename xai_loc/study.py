"""The whole study of Comanducci et al. (EUSIPCO 2024) for every condition and model.

For each of the paper's conditions with shipped checkpoints: test data, localization error
beside the constant predictor and the published numbers, relevance, perturbation curves,
the TDOA table per pair distance with its baselines, SRP-PHAT maps, the input-inspection
figure, a ``summary.md`` gathering the tables and ``report.html``, the whole study as one web page
(:mod:`xai_loc.report`).

It runs every stage, from simulated data to figures, so it sits above all of them, below the CLI.
:func:`run_experiment` is the one path "run -> write -> draw -> tables" of a registered
experiment (:mod:`xai_loc.experiments.registry`), taken by ``perturb``, ``tdoa`` and
:func:`reproduce` alike.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import xarray as xr

    from xai_loc.experiments.base import Experiment
    from xai_loc.experiments.modelset import ModelSet

#: ``--quick``: sources of the test split and windows for SRP.
QUICK_SOURCES = 3
QUICK_SRP_WINDOWS = 8


@dataclass
class ExperimentRun:
    """What :func:`run_experiment` made: the result, its tables by kind and the files written by kind
    (``'result'``, the table kinds, ``'timing'``, ``'figures'`` as a list)."""

    result: xr.Dataset
    tables: dict[str, str]
    files: dict[str, Any]


def run_experiment(experiment: str | Experiment, models: ModelSet | Mapping[str, Any], data: Any,
                   out: str | os.PathLike, **options: Any) -> ExperimentRun:
    """Run a registered experiment, write its result file and tables into ``out`` and draw its figures there.

    Parameters
    ----------
    experiment
        A name in :data:`~xai_loc.experiments.registry.EXPERIMENTS` (e.g. ``'perturbation'``,
        ``'tdoa'``) or an :class:`~xai_loc.experiments.base.Experiment`.
    models
        A :class:`~xai_loc.experiments.modelset.ModelSet` (share one between experiments of a
        run), or ``{name: checkpoint path or module}``.
    data
        A dataset store path.
    out
        The results folder.
    **options
        Options of the experiment's ``run``.
    """
    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.experiments.registry import get_experiment
    from xai_loc.plots.redraw import draw_result

    exp = get_experiment(experiment) if isinstance(experiment, str) else experiment
    # seconds spent, written beside the result, never into it (a dict given as ``timing`` is filled)
    timing = options.setdefault("timing", {}) if exp.timed else None
    ds = exp.run(ModelSet.of(models), data, **options)
    tables = exp.tables(ds)
    files: dict[str, Any] = dict(exp.write(ds, out, tables=tables, timing=timing))
    files["figures"] = draw_result(exp.name, ds, files["result"])
    return ExperimentRun(ds, tables, files)


def _evaluate(models: ModelSet, name: str, store, batch_size: int, device: str) -> dict:
    """:func:`~xai_loc.models.evaluation.evaluate` a model of the set; it is back on its device afterwards."""
    from xai_loc.explain.attribute import placed
    from xai_loc.models.evaluation import evaluate
    from xai_loc.runtime import resolve_device

    module = models[name]
    with placed(module, resolve_device(device)):
        return evaluate(module, store, batch_size, device).summary()


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
    """Run the study and write everything below ``out``, ending with ``report.html``; returns the path of
    ``summary.md``.

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
    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.experiments.tdoa_probe import explain_models
    from xai_loc.io import write_text_atomic
    from xai_loc.models.zoo import PAPER_MAE, data_convention
    from xai_loc.plots.inspection import plot_inspection
    from xai_loc.report import write_report

    out = Path(out)
    progress = sys.stderr.isatty() if progress is None else progress
    n_sources = QUICK_SOURCES if quick else None
    scene = paper_scene(convention)
    loc_rows, sections, missing = [], [], []
    for t60, snr in conditions or PAPER_CONDITIONS:
        checkpoints = _available(archs, t60, snr, pretrained)
        if not checkpoints:
            missing.append((t60, snr))
            continue
        folder = out / condition_name(t60, snr)
        models = ModelSet(checkpoints)  # loaded, hashed and randomized once for every stage below
        store = simulate_dataset(scene, "test", t60, snr, root=data_root, n_sources=n_sources, device=device,
                                 progress=progress)
        for arch in models:
            ev = _evaluate(models, arch, store, batch_size, device)
            paper = PAPER_MAE.get(arch, {}).get((float(t60), float(snr)))
            loc_rows.append(f"| {t60:g} | {snr:g} | {arch} | {data_convention(models.card(arch))} | "
                            f"{ev['metrics']['mae']:.3f} | {ev['baseline']['metrics']['mae']:.3f} | "
                            f"{paper if paper is not None else '-'} | {ev['n_windows']} |")
        common = {"batch_size": batch_size, "device": device, "progress": progress}
        pert = run_experiment("perturbation", models, store, folder, **common)
        tdoa = run_experiment("tdoa", models, store, folder, pairs="spread",
                              srp_max_windows=QUICK_SRP_WINDOWS if quick else None, **common)
        first = next(iter(models))
        relevance = explain_models(models.select([first]), store, randomized_baseline=False, **common)  # stored
        plot_inspection(open_signals(store), {first: relevance[first]}, folder / f"inspection_{first}")
        sections += [f"## T60 {t60:g} s, SNR {snr:g} dB", "", "### Perturbation (MAE per coordinate, m)", "",
                     pert.tables["markdown"], "### TDOA", "", tdoa.tables["markdown"], ""]
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
    if loc_rows:  # a run without any checkpoint has no results to report
        write_report(out)
    return summary

