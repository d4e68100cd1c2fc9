"""The whole study of Comanducci et al. (EUSIPCO 2024) for every condition and model.

For each of the paper's conditions with shipped checkpoints: test data, localization error
beside the constant predictor and the published numbers, relevance, the experiments of
:data:`STUDY_EXPERIMENTS` (perturbation curves, the TDOA table per pair distance with its
baselines and SRP-PHAT maps, then the explanation-quality suite: faithfulness, sanity checks
and relevance shares on the simulator's components), the input-inspection figure, a
``summary.md`` gathering the tables and ``report.html``, the whole study as one web page
(:mod:`xai_loc.report`). A ``--quick`` run runs the suite on fewer sources, methods, fills and
percentages (:func:`study_options`); ``skip`` leaves experiments out.

It runs every stage, from simulated data to figures, so it sits above all of them, below the CLI.
:func:`run_experiment` is the one path "run -> write -> draw -> tables" of a registered
experiment (:mod:`xai_loc.experiments.registry`), taken by ``perturb``, ``tdoa`` and
:func:`reproduce` alike.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xai_loc.errors import InputError

if TYPE_CHECKING:
    import xarray as xr

    from xai_loc.experiments.base import Experiment
    from xai_loc.experiments.modelset import ModelSet

#: ``--quick``: sources of the test split and windows for SRP.
QUICK_SOURCES = 3
QUICK_SRP_WINDOWS = 8
#: ``--quick``: the suite (faithfulness, sanity, components) on this many of those sources, with these
#: methods, bootstrap resamples, and the faithfulness fills and percentages.
QUICK_SUITE_SOURCES = 2
QUICK_METHODS = ("lrp:paper", "input_x_gradient", "saliency")
QUICK_N_BOOT = 200
QUICK_FILLS = ("zero", "road")
QUICK_PERCENTAGES = (0.0, 30.0, 60.0)

#: The experiments of the study (names in :data:`~xai_loc.experiments.registry.EXPERIMENTS`), in the
#: order they run, with the title of their section in ``summary.md``.
STUDY_EXPERIMENTS = {
    "perturbation": "Perturbation (MAE per coordinate, m)",
    "tdoa": "TDOA",
    "faithfulness": "Faithfulness (deletion and insertion, m)",
    "sanity": "Sanity checks (randomized layers and targets)",
    "components": "Relevance on the simulator's components",
}
#: The explanation-quality suite among them: what ``--quick`` runs small.
SUITE = ("faithfulness", "sanity", "components")
#: Those among them that store relevance beside the test data: of every model and its randomized copy
#: (:func:`~xai_loc.experiments.tdoa_probe.explain_models`).
STORES_RELEVANCE = ("tdoa",)
#: How to rebuild a damaged store that the study reuses.
REBUILD_HINT = "delete it and run 'xai-loc reproduce' again to rebuild it"
#: The files of the study's folder besides its record and the conditions' folders.
SUMMARY, REPORT = "summary.md", "report.html"


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

    Every file it writes (:meth:`~xai_loc.experiments.base.Experiment.files` and the figures of its
    :class:`~xai_loc.plots.redraw.Drawer`) is checked before the run: a folder in the way of one is one line
    (:class:`~xai_loc.errors.InputError`) and nothing is written.

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
    check_outputs(exp, out)
    # seconds spent, written beside the result, never into it (a dict given as ``timing`` is filled)
    timing = options.setdefault("timing", {}) if exp.timed else None
    ds = exp.run(ModelSet.of(models), data, **options)
    tables = exp.tables(ds)
    files: dict[str, Any] = dict(exp.write(ds, out, tables=tables, timing=timing))
    files["figures"] = draw_result(exp.name, ds, files["result"])
    return ExperimentRun(ds, tables, files)


def check_outputs(experiment: str | Experiment, out: str | os.PathLike) -> None:
    """One line (:class:`~xai_loc.errors.InputError`) where a file :func:`run_experiment` writes for ``experiment``
    into ``out`` cannot be written there (a folder in its way, :func:`~xai_loc.io.check_file_path`): its result,
    tables and timings (:meth:`~xai_loc.experiments.base.Experiment.files`) and the figures of its drawer. Read only;
    a command calls it before any work (a cluster started, data simulated), :func:`run_experiment` before its run."""
    from xai_loc.experiments.registry import get_experiment
    from xai_loc.io import check_file_path
    from xai_loc.plots.redraw import DRAWERS

    exp = get_experiment(experiment) if isinstance(experiment, str) else experiment
    for path in [*exp.files(out), *DRAWERS[exp.name].files(out)]:
        check_file_path(path)


def study_options(quick: bool) -> dict[str, dict[str, Any]]:
    """Options of each experiment of :data:`STUDY_EXPERIMENTS` in a quick or a full run.

    A full run takes each experiment's defaults (TDOA on a spread of pair distances); a quick one
    the ``QUICK_*`` settings of this module, read when called.
    """
    options = {"perturbation": {}, "tdoa": {"pairs": "spread", "srp_max_windows": QUICK_SRP_WINDOWS if quick else None},
               **{name: {} for name in SUITE}}
    if quick:
        for name in SUITE:
            options[name].update(methods=QUICK_METHODS, n_sources=QUICK_SUITE_SOURCES, n_boot=QUICK_N_BOOT)
        options["faithfulness"].update(fills=QUICK_FILLS, percentages=QUICK_PERCENTAGES)
    return options


def check_skip(skip: str | Sequence[str], what: str = "skip") -> tuple[str, ...]:
    """Validate the names of experiments (one name or several) to leave out of the study (:data:`STUDY_EXPERIMENTS`),
    each once; ``what`` names them in the error (``--skip`` on the command line)."""
    names = tuple(str(name).strip() for name in ((skip,) if isinstance(skip, str) else skip))
    for name in names:
        if name not in STUDY_EXPERIMENTS:
            raise InputError(f"{what} {name!r} is not an experiment of the study; allowed: "
                             f"{', '.join(STUDY_EXPERIMENTS)}")
    if len(set(names)) < len(names):
        raise InputError(f"{what} {','.join(names)!r} names an experiment twice; give each once")
    return names


def _quick_note(skip: Sequence[str]) -> str:
    """The line of ``summary.md`` that says what a quick run left small."""
    note = f"Quick run: {QUICK_SOURCES} test sources per condition"
    suite = [name for name in SUITE if name not in skip]
    if suite:
        note += (f"; {', '.join(suite)} on {min(QUICK_SUITE_SOURCES, QUICK_SOURCES)} of them with "
                 f"{', '.join(QUICK_METHODS)} and {QUICK_N_BOOT} bootstrap resamples")
    if "faithfulness" in suite:
        note += (f"; faithfulness fills {', '.join(QUICK_FILLS)} at "
                 f"{', '.join(f'{p:g}' for p in QUICK_PERCENTAGES)} %")
    return note + "."


def _evaluate(models: ModelSet, name: str, store, batch_size: int, device: str, progress: bool) -> dict:
    """:func:`~xai_loc.models.evaluation.evaluate` a model of the set; it is back on its device afterwards."""
    from xai_loc.explain.attribute import placed
    from xai_loc.models.evaluation import evaluate
    from xai_loc.runtime import resolve_device

    module = models[name]
    with placed(module, resolve_device(device)):
        return evaluate(module, store, batch_size, device, progress).summary()


def _check_archs(archs) -> tuple[str, ...]:
    """``archs`` (one name or several) if each names a registered localizer of source positions, whose test data the
    study simulates; one line naming the first that does not and what is allowed."""
    from xai_loc.models import MODELS

    names = (archs,) if isinstance(archs, str) else tuple(archs)
    allowed = [name for name, cls in MODELS.items() if cls.output_kind == "position"]
    for name in names:
        if name not in allowed:
            raise InputError(f"architecture {name!r} is not a localizer of source positions that the study runs; "
                             f"allowed: {', '.join(allowed)}")
    return names


def _check_conditions(conditions, room) -> list[tuple[float, float]]:
    """``conditions`` as (T60, SNR) pairs of floats that ``room`` allows, each in a folder of its own
    (:func:`~xai_loc.data.store.condition_name`); one line naming the first that is not."""
    from xai_loc.acoustics.room import check_snr, check_t60
    from xai_loc.data.store import condition_name

    checked: dict[str, tuple[float, float]] = {}
    for item in conditions:
        try:
            t60, snr = item
        except (TypeError, ValueError):
            raise InputError(f"condition {item!r} is not allowed; give (T60 s, SNR dB) pairs") from None
        condition = check_t60(t60, room), check_snr(snr)
        name = condition_name(*condition)
        if name in checked:
            raise InputError(f"conditions {checked[name]!r} and {condition!r} are both condition {name}; give each "
                             "condition once")
        checked[name] = condition
    return list(checked.values())


def _available(archs, t60: float, snr: float, folder) -> dict[str, Path]:
    """The checkpoints of ``archs`` for (``t60``, ``snr``) in ``folder`` (None: the shipped ones), found by their
    names; one line where a card holds another architecture or condition than its file's name says
    (:func:`~xai_loc.models.zoo.shipped_checkpoint`)."""
    from xai_loc.models.zoo import shipped_checkpoint, shipped_path

    return {arch: shipped_checkpoint(arch, t60, snr, folder) for arch in archs
            if shipped_path(arch, t60, snr, folder).is_file()}


def _check_out(out: Path, conditions: Mapping[str, str], experiments: Sequence[str]) -> None:
    """One line, before any work, where ``out`` or a condition's folder is a file or cannot be written, a condition's
    folder is a link (the report does not follow links), or where a file the run writes is a folder: the study's
    own, and in each condition's folder (``conditions``: folder name -> the model of its inspection figure) those of
    every experiment of ``experiments`` (as :func:`run_experiment` checks them) and the inspection figure."""
    from xai_loc.cli_params import check_out_dir
    from xai_loc.io import check_file_path, figure_files
    from xai_loc.plots.inspection import INSPECTION
    from xai_loc.report.study_run import STUDY_RECORD

    check_out_dir(out, "output folder")
    for name in (STUDY_RECORD, SUMMARY, REPORT):
        check_file_path(out / name)
    for name, first in conditions.items():
        folder = out / name
        if folder.is_symlink():
            raise InputError(f"condition folder {str(folder)!r} is a link, which the report does not follow; "
                             "remove the link or choose another output folder")
        check_out_dir(folder, "condition folder")
        for experiment in experiments:
            check_outputs(experiment, folder)
        for path in figure_files(folder / INSPECTION.format(first)):
            check_file_path(path)


def _check_kept(out: Path, conditions: Mapping[str, tuple[float, float]], experiments: Sequence[str]) -> None:
    """One line, before any work, where the report at the end would refuse a result below ``out`` that the run
    keeps (a damaged one, one of another condition in a folder the run writes into, ...:
    :func:`~xai_loc.report.collect.check_kept_results`); ``conditions``: folder name -> the (T60, SNR) the run
    records there for every experiment of ``experiments``."""
    from xai_loc.experiments.registry import get_experiment
    from xai_loc.report.collect import check_kept_results

    check_kept_results(out, {out / name / get_experiment(e).result_file: condition
                             for name, condition in conditions.items() for e in experiments})


def _relevance_stores(store: Path, models: ModelSet, experiments: Sequence[str]) -> list[Path]:
    """The relevance stores of the test data ``store`` that the run writes or reuses
    (:func:`~xai_loc.explain.store.relevance_store_path`, as :func:`~xai_loc.experiments.tdoa_probe.explain_models`
    explains by default): the first model's for the inspection figure and, with an experiment of
    :data:`STORES_RELEVANCE` among ``experiments``, every model's and its randomized copy's (seed 0)."""
    from xai_loc.explain.store import relevance_store_path

    if any(name in STORES_RELEVANCE for name in experiments):
        explainers = [*map(models.explainer, models), *(models.explainer(name, randomized_seed=0) for name in models)]
    else:
        explainers = [models.explainer(next(iter(models)))]
    return [relevance_store_path(store, explainer) for explainer in explainers]


def _check_stores(scene, loaded, root, n_sources: int | None, experiments: Sequence[str]) -> None:
    """One line, before anything is written, where the test store a condition reuses under ``root`` holds data
    of another configuration (read only: :func:`~xai_loc.data.store.check_dataset`), or where the folder of one the
    run simulates, or the folder of a relevance store the run explains it into (:func:`_relevance_stores`, where
    none stands yet), cannot be written, or where a relevance store it reuses is damaged; ``loaded``: ``(t60, snr,
    models)`` of each condition."""
    from xai_loc.cli_params import check_out_dir
    from xai_loc.data.integrity import holds_zarr_metadata, verify_store
    from xai_loc.data.store import check_dataset
    from xai_loc.explain.store import RELEVANCE

    for t60, snr, models in loaded:
        path = check_dataset(scene, "test", t60, snr, root=root, n_sources=n_sources)
        if not path.is_dir():  # simulated by the run
            check_out_dir(path.parent, f"the folder of {path.name}")
        stores = _relevance_stores(path, models, experiments)
        missing = [store for store in stores if not holds_zarr_metadata(store)]
        if missing:
            check_out_dir(missing[0].parent, f"the folder of {missing[0].name}")
        for store in stores:  # reused: read in full now, not after the experiments before the one reading it
            if store not in missing:
                verify_store(store, deep=True, what=RELEVANCE.what, hint=REBUILD_HINT)


def reproduce(out: str | Path, *, quick: bool = False, data_root=None, conditions=None,
              archs=("loccnn", "samplecnn"), pretrained=None, batch_size: int = 16, device: str = "cpu",
              progress: bool | None = None, convention: str = "gpurir", skip: Sequence[str] = ()) -> Path:
    """Run the study and write everything below ``out``, ending with ``report.html`` (when the folder holds
    results, this run's or an earlier one's; an earlier page is removed when the run starts); returns the path
    of ``summary.md``.

    Parameters
    ----------
    out
        Results folder (one sub-folder per condition).
    quick
        A handful of test sources (:data:`QUICK_SOURCES`) and a small suite (:func:`study_options`)
        so that it runs in minutes.
    data_root
        Where test data is simulated (default: ``$XAI_LOC_DATA`` or ``./xai-loc-data``).
    conditions
        (T60, SNR) pairs (default: the paper's four), each once.
    archs
        Architectures (localizers of source positions) to include when a checkpoint exists for the condition.
    pretrained
        Checkpoint folder (default: the shipped ``pretrained/``), checkpoints under the shipped names, each
        card holding the architecture and condition its name says (checked before any work starts).
    convention
        Simulation convention of the test data (:mod:`xai_loc.acoustics.conventions`); each
        model's row says the convention of its training data.
    skip
        Names in :data:`STUDY_EXPERIMENTS` to leave out (checked before any work starts).

    Raises
    ------
    InputError
        One line, before any work: a bad ``skip``, ``archs``, condition, ``batch_size`` or ``device``, no
        checkpoint, a checkpoint whose card disagrees with its name, an output that cannot be used
        (:func:`_check_out`), a result the run keeps below ``out`` that the report at the end would refuse
        (:func:`_check_kept`) or a test store under ``data_root`` that holds other data, or that or its relevance
        stores cannot be written (:func:`_check_stores`); before anything is written below ``out``: a damaged test
        or relevance store that the run reuses (read in full).
    """
    skip = check_skip(skip)
    from xai_loc.data.scene import PAPER_CONDITIONS, paper_scene
    from xai_loc.data.store import condition_name, open_signals, simulate_dataset
    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.experiments.tdoa_probe import explain_models
    from xai_loc.io import write_text_atomic
    from xai_loc.models.base import check_positive_int
    from xai_loc.models.zoo import data_convention, paper_mae
    from xai_loc.plots.inspection import INSPECTION, plot_inspection
    from xai_loc.report import write_report
    from xai_loc.report.collect import result_paths
    from xai_loc.report.study_run import StudyRun
    from xai_loc.runtime import resolve_device

    out = Path(out)
    progress = sys.stderr.isatty() if progress is None else progress
    n_sources = QUICK_SOURCES if quick else None
    scene = paper_scene(convention)
    archs, conditions = _check_archs(archs), _check_conditions(conditions or PAPER_CONDITIONS, scene.room)
    check_positive_int("batch_size", batch_size)
    resolve_device(device)
    plan = [(t60, snr, _available(archs, t60, snr, pretrained)) for t60, snr in conditions]
    missing = [(arch, t60, snr) for t60, snr, found in plan for arch in archs if arch not in found]
    if not any(found for _, _, found in plan):
        from xai_loc.models.zoo import pretrained_dir

        raise InputError(f"no checkpoint of {', '.join(archs)} for the study's conditions in "
                         f"{pretrained or pretrained_dir()}; give --pretrained a folder holding them under the shipped "
                         "names (e.g. loccnn_t60-0.6_snr-10.safetensors)")
    experiments, options = [name for name in STUDY_EXPERIMENTS if name not in skip], study_options(quick)
    _check_out(out, {condition_name(t60, snr): next(iter(found)) for t60, snr, found in plan if found}, experiments)
    _check_kept(out, {condition_name(t60, snr): (t60, snr) for t60, snr, found in plan if found}, experiments)
    # every checkpoint loaded (hashed, randomized) before anything is written: a damaged one is one line and
    # leaves an earlier run's record as it was
    loaded = [(t60, snr, ModelSet(checkpoints)) for t60, snr, checkpoints in plan if checkpoints]
    _check_stores(scene, loaded, data_root, n_sources, experiments)
    # every test store simulated, or read in full where it is reused, before anything is written below out: a
    # damaged one is one line and leaves an earlier run's record and page as they were
    stores = [simulate_dataset(scene, "test", t60, snr, root=data_root, n_sources=n_sources, device=device,
                               progress=progress) for t60, snr, _ in loaded]
    # what this run writes, so that the report can mark what an earlier run left in the folder
    record = StudyRun(out, {"quick": quick, "skipped": list(skip), "convention": convention, "archs": list(archs),
                            "conditions": [condition_name(t60, snr) for t60, snr, found in plan if found],
                            "missing_checkpoints": [f"{a} ({t:g} s, {s:g} dB)" for a, t, s in missing]})
    (out / REPORT).unlink(missing_ok=True)  # an earlier run's page: regenerated at the end, never left stale
    loc_rows, sections = [], []
    for (t60, snr, models), store in zip(loaded, stores, strict=True):  # each model loaded once for every stage
        folder = out / condition_name(t60, snr)
        for arch in models:
            ev = _evaluate(models, arch, store, batch_size, device, progress)
            paper = paper_mae(arch, t60, snr)
            loc_rows.append(f"| {t60:g} | {snr:g} | {arch} | {data_convention(models.card(arch))} | "
                            f"{ev['metrics']['mae']:.3f} | {ev['baseline']['metrics']['mae']:.3f} | "
                            f"{'-' if paper is None else f'{paper:.3f}'} | {ev['n_windows']} |")
        common = {"batch_size": batch_size, "device": device, "progress": progress}
        if experiments:  # a condition without sections has no heading
            sections += [f"## T60 {t60:g} s, SNR {snr:g} dB", ""]
        for name in experiments:
            run = run_experiment(name, models, store, folder, **options[name], **common)
            record.add(run.files)
            sections += [f"### {STUDY_EXPERIMENTS[name]}", "", run.tables["markdown"], ""]
        first = next(iter(models))
        relevance = explain_models(models.select([first]), store, randomized_baseline=False, **common)  # stored
        inspection = folder / INSPECTION.format(first)
        record.add(plot_inspection(open_signals(store), {first: relevance[first]}, inspection))
    lines = ["# xai-loc reproduction of Comanducci, Antonacci & Sarti (EUSIPCO 2024)", "",
             _quick_note(skip) if quick else "Full test split.",
             f"Test data simulated under the {convention} convention.",
             "", "## Localization error on the test split", "",
             "| T60 s | SNR dB | model | trained on | MAE/coord m | constant predictor m | paper m | windows |",
             "|---|---|---|---|---|---|---|---|", *loc_rows, ""]
    if missing:
        lines += [("No shipped checkpoint" if pretrained is None else f"No checkpoint in {pretrained}") + " for: "
                  + ", ".join(f"{a} ({t:g} s, {s:g} dB)" for a, t, s in missing)
                  + ". Train them with scripts/train_zoo.py.", ""]
    summary = write_text_atomic(out / SUMMARY, "\n".join(lines + sections) + "\n")
    record.add(summary)
    record.finish()
    if result_paths(out):  # this run's results or an earlier run's (every experiment skipped: maybe none)
        write_report(out)
    return summary

