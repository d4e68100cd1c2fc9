"""The zoo scripts and the benchmarks, run as their users run them: bad inputs end in one line with exit status 2
before any work and with nothing created; adopt_zoo never silently replaces a better checkpoint.

Each run executes the script as ``python SCRIPT ARGS`` would (its ``__main__`` entry, its folder first on the
path, ``sys.argv`` set, the working folder and the environment as a subprocess gets them; see :func:`run_here`),
but in this process, which has torch and xai_loc imported already: a subprocess would spend seconds on its
imports alone. A few of the bad inputs also run as real subprocesses (:data:`AS_USERS_RUN_THEM`, started at the
first test, while the others run), to see the exit status and the stderr a user sees.

``XAI_LOC_SCRIPTS_ROOT`` points the runs at another copy of ``scripts/`` and ``benchmarks/`` (for example an
untouched checkout, to see these tests fail there); default: this repository. The in-process runs use this
process's ``xai_loc`` wherever the scripts come from.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import re
import runpy
import subprocess
import sys
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest
import torch

from xai_loc.data.scene import paper_scene
from xai_loc.models import build_model, load_model, read_card, save_checkpoint
from xai_loc.models.zoo import checkpoint_name, pretrained_dir

TREE = Path(os.environ.get("XAI_LOC_SCRIPTS_ROOT") or Path(__file__).resolve().parents[1])
NAME = checkpoint_name("loccnn", 0.15, 25.0)
SHIPPED = pretrained_dir() / NAME
ENV = {**{k: v for k, v in os.environ.items() if k != "OUT"}, "OMP_NUM_THREADS": "1"}
#: Modules a script imports from its own folder (``scripts/_args.py`` and ``benchmarks/_args.py`` share a name).
SIBLINGS = ("_args", "train_zoo")


def run(script: str, *argv, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGV`` in a subprocess."""
    return subprocess.run([sys.executable, str(TREE / script), *map(str, argv)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=timeout)


@contextlib.contextmanager
def _as_script(path: Path, argv: list[str], cwd: Path | None):
    """This process set up as ``python PATH ARGV`` in ``cwd`` sees it, and put back afterwards: ``sys.argv``, the
    script's folder first on ``sys.path`` with none of its sibling modules cached, the environment of
    :data:`ENV`'s runs (no ``OUT``), the working folder and torch's thread count."""
    saved_path, saved_argv, saved_cwd, threads = sys.path[:], sys.argv[:], os.getcwd(), torch.get_num_threads()
    saved_modules = {name: sys.modules.pop(name) for name in SIBLINGS if name in sys.modules}
    before = set(sys.modules)
    sys.path.insert(0, str(path.parent))
    sys.argv = [str(path), *argv]
    try:
        with mock.patch.dict(os.environ, {"OMP_NUM_THREADS": "1"}):
            os.environ.pop("OUT", None)
            if cwd is not None:
                os.chdir(cwd)
            yield
    finally:
        os.chdir(saved_cwd)
        sys.path[:], sys.argv = saved_path, saved_argv
        torch.set_num_threads(threads)
        for name in set(sys.modules) - before:  # the script's own modules, loaded from its folder
            file = getattr(sys.modules[name], "__file__", None)
            if name in SIBLINGS or (file is not None and Path(file).parent == path.parent):
                del sys.modules[name]
        sys.modules.update(saved_modules)


def run_here(script: str, *argv, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGV`` run in this process: its ``__main__`` entry, ``SystemExit`` as the exit status, an
    uncaught exception as the traceback on stderr with exit status 1, and the warnings an interpreter shows by
    default written to stderr, as a subprocess would see them (:func:`_as_script` sets the process up)."""
    path, argv = TREE / script, [str(a) for a in argv]
    out, err = io.StringIO(), io.StringIO()
    with (_as_script(path, argv, cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err),
          warnings.catch_warnings(record=True) as shown):
        warnings.resetwarnings()  # the interpreter's default filters (no -W options): these are hidden
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        try:
            runpy.run_path(str(path), run_name="__main__")
            code = 0
        except SystemExit as exit_:
            if exit_.code is None or isinstance(exit_.code, int):
                code = exit_.code or 0
            else:  # sys.exit("message"): the message on stderr, exit status 1
                print(exit_.code, file=sys.stderr)
                code = 1
        except Exception:  # uncaught: what the interpreter prints, exit status 1
            traceback.print_exc()
            code = 1
        for w in shown:
            err.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))
    return subprocess.CompletedProcess([sys.executable, str(path), *argv], code, out.getvalue(), err.getvalue())


def zoo_card(**training) -> dict:
    """The records of a training run, as the shipped LocCNN (0.15 s, 25 dB) holds them (``training`` updated)."""
    card = read_card(SHIPPED)
    return {"condition": card["condition"], "training": {**card["training"], **training},
            "dataset": card["dataset"], "metrics": card["metrics"]}


@dataclass
class Case:
    """A bad input: the command, what its one line must say, and the folders it must leave as they were."""

    script: str
    argv: list
    says: str
    left: dict[Path, list[str] | None] = field(default_factory=dict)  # folder -> its file names (None: absent)


def _cases(tmp: Path) -> dict[str, Case]:
    out, data = tmp / "out", tmp / "data"
    untouched = {out: None, data: None}
    full = tmp / "full"
    full.mkdir()
    (full / "notes.txt").write_text("x")
    (tmp / "dir.safetensors").mkdir()

    def results(name: str, *cards: tuple[str, dict]) -> Path:
        folder = tmp / name
        folder.mkdir()
        for file, card in cards:
            save_checkpoint(build_model("loccnn"), folder / file, card)
        return folder

    nonzoo = tmp / "nonzoo"
    nonzoo.mkdir()
    (nonzoo / "tfcnn_default.safetensors").write_bytes((pretrained_dir() / "tfcnn_default.safetensors").read_bytes())
    imported = results("imported", (NAME, {"condition": {"t60": 0.15, "snr": 25.0}, "data_convention": "gpurir"}))
    killed = results("killed", (NAME, zoo_card(stopped=None)))
    twice = results("twice", (NAME, zoo_card()), (NAME.replace(".safetensors", ".copy.safetensors"), zoo_card()))
    adopt = ["--out", out, "--data-root", data]
    zoo = ["--out", out, "--device", "cuda"]  # a refusal must come before the device is even looked at
    return {
        # gpu_zoo: every value checked in main(), before the preflight and before --out is made
        "gpu_zoo draws 0": Case("scripts/gpu_zoo.py", [*zoo, "--draws", "0"], "--draws: '0' is not allowed",
                                untouched),
        "gpu_zoo deadline 0": Case("scripts/gpu_zoo.py", [*zoo, "--deadline-s", "0"],
                                   "--deadline-s: '0' is not allowed", untouched),
        "gpu_zoo jobs -1": Case("scripts/gpu_zoo.py", [*zoo, "--jobs", "-1"], "--jobs: '-1' is not allowed", untouched),
        "gpu_zoo reserve -100": Case("scripts/gpu_zoo.py", [*zoo, "--reserve-s", "-100"],
                                     "--reserve-s -100 is not allowed", untouched),
        "gpu_zoo checkpoint every 0": Case("scripts/gpu_zoo.py", [*zoo, "--checkpoint-every-s", "0"],
                                           "--checkpoint-every-s: '0' is not allowed", untouched),
        "gpu_zoo condition twice": Case("scripts/gpu_zoo.py", [*zoo, "--conditions", "0.15:25", "0.15:25.0"],
                                        "--conditions names 0.15:25 twice", untouched),
        "gpu_zoo arch twice": Case("scripts/gpu_zoo.py", [*zoo, "--archs", "loccnn", "loccnn"],
                                   "--archs loccnn is given twice", untouched),
        "gpu_zoo condition text": Case("scripts/gpu_zoo.py", [*zoo, "--conditions", "0.6-10"],
                                       "condition '0.6-10' is not T60:SNR", untouched),
        "gpu_zoo no out": Case("scripts/gpu_zoo.py", ["--device", "cuda"], "give --out (or set OUT)"),
        "gpu_zoo out under a file": Case("scripts/gpu_zoo.py", ["--out", full / "notes.txt" / "zoo", *zoo[2:]],
                                         "cannot be made:", {full: ["notes.txt"]}),
        "gpu_zoo other files": Case("scripts/gpu_zoo.py", ["--out", full, "--device", "cuda"],
                                    "holds other files (notes.txt)", {full: ["notes.txt"]}),
        "train_zoo condition text": Case("scripts/train_zoo.py", ["--conditions", "0.6-10"],
                                         "condition '0.6-10' is not T60:SNR"),
        # training scripts: --out checked before anything is rendered or trained (nothing made under data)
        "train_zoo out file": Case("scripts/train_zoo.py", ["--out", full / "notes.txt", "--data-root", data],
                                   "is a file, not a folder", untouched),
        "train_tfcnn out folder": Case("scripts/train_tfcnn.py", ["--out", full, "--data-root", data],
                                       "use a file name ending in .safetensors", untouched),
        "train_cuenet out folder": Case("scripts/train_cuenet.py", ["--out", tmp / "dir.safetensors",
                                                                    "--data-root", data],
                                        "it is a folder", {data: None}),
        "make_speech_corpus n 0": Case("scripts/make_speech_corpus.py", ["--n", "0", "--out", out],
                                       "--n: '0' is not allowed", untouched),
        "bench_study json folder": Case("benchmarks/bench_study.py", ["--device", "cpu", "--json", full],
                                        "it is a folder"),
        # adopt_zoo: every checkpoint checked before any work, nothing made
        "adopt missing folder": Case("scripts/adopt_zoo.py", [tmp / "missing", *adopt], "missing does not exist",
                                     untouched),
        "adopt other architecture": Case("scripts/adopt_zoo.py", [nonzoo, *adopt],
                                         "architecture 'tfcnn' is not allowed; allowed: loccnn, samplecnn", untouched),
        "adopt imported": Case("scripts/adopt_zoo.py", [imported, *adopt], "its card has no training", untouched),
        "adopt killed worker": Case("scripts/adopt_zoo.py", [killed, *adopt], "pass --adopt-unfinished", untouched),
        "adopt two for one": Case("scripts/adopt_zoo.py", [twice, *adopt], f"would both be adopted as {NAME}",
                                  untouched),
        "adopt sources 0": Case("scripts/adopt_zoo.py", [twice, *adopt, "--sources", "0"],
                                "--sources: '0' is not allowed", untouched),
        # benchmarks: one line, no traceback
        "bench_autocast models": Case("benchmarks/bench_autocast.py", ["--models", "foo"], "invalid choice: 'foo'"),
        "bench_rir repeat 0": Case("benchmarks/bench_rir.py", ["--repeat", "0"], "--repeat: '0' is not allowed"),
        "train_bast loss": Case("scripts/train_bast.py", ["--loss", "foo", "--out", out / "b.safetensors"],
                                "--loss: invalid choice: 'foo'", untouched),
        "bench_faithfulness methods": Case("benchmarks/bench_faithfulness.py", ["--methods", "foo"], "'foo'"),
        "bench_faithfulness fills": Case("benchmarks/bench_faithfulness.py", ["--fills", "foo"], "'foo'"),
        "bench_sanity methods": Case("benchmarks/bench_sanity.py", ["--methods", "foo"], "'foo'"),
        "bench_simulate t60": Case("benchmarks/bench_simulate.py", ["--t60", "-1"], "T60=-1.0 s is not allowed"),
        "bench_study condition": Case("benchmarks/bench_study.py", ["--device", "cpu", "--t60", "0.5"],
                                      "--t60 0.5 --snr 10 has no shipped checkpoints"),
    }


#: The names of :func:`_cases` (its folders are made per run, so the names are listed here for parametrize).
CASES = ("gpu_zoo draws 0", "gpu_zoo deadline 0", "gpu_zoo jobs -1", "gpu_zoo reserve -100",
         "gpu_zoo checkpoint every 0", "gpu_zoo condition twice", "gpu_zoo arch twice", "gpu_zoo condition text",
         "gpu_zoo no out", "gpu_zoo out under a file", "gpu_zoo other files", "train_zoo condition text",
         "train_zoo out file",
         "train_tfcnn out folder", "train_cuenet out folder", "make_speech_corpus n 0", "bench_study json folder",
         "adopt missing folder",
         "adopt other architecture", "adopt imported", "adopt killed worker", "adopt two for one", "adopt sources 0",
         "bench_autocast models", "bench_rir repeat 0", "train_bast loss", "bench_faithfulness methods",
         "bench_faithfulness fills", "bench_sanity methods",
         "bench_simulate t60", "bench_study condition")
#: Cases also run as real subprocesses, one of each kind of script: gpu_zoo (its own preflight and folders),
#: adopt_zoo (scripts/_args and train_zoo imported from its folder) and a benchmark (benchmarks/_args, run_main).
AS_USERS_RUN_THEM = ("gpu_zoo other files", "adopt killed worker", "bench_simulate t60")


@pytest.fixture(scope="module")
def as_users_run_them(tmp_path_factory):
    """The cases of :data:`AS_USERS_RUN_THEM` as subprocesses, started at once in folders of their own (they run
    while the other tests do): name -> (case, future of its CompletedProcess)."""
    tmp = tmp_path_factory.mktemp("subprocess")
    cases = _cases(tmp)
    with ThreadPoolExecutor(max_workers=len(AS_USERS_RUN_THEM)) as pool:
        yield {name: (cases[name], pool.submit(run, cases[name].script, *cases[name].argv, cwd=tmp))
               for name in AS_USERS_RUN_THEM}


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> tuple[Path, dict[str, Case]]:
    tmp = tmp_path_factory.mktemp("refused")
    return tmp, _cases(tmp)


def check_refused(case: Case, done: subprocess.CompletedProcess) -> None:
    """Exit status 2, one line on stderr (no argparse usage block), nothing on stdout, no traceback, and
    ``case.left``'s folders as they were."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr and not done.stdout.strip()
    assert len(lines) == 1 and case.says in lines[0], done.stderr
    for folder, names in case.left.items():
        assert (sorted(p.name for p in folder.iterdir()) if folder.exists() else None) == names, folder


def test_every_case_is_run(as_users_run_them, cases):  # first: it starts the subprocesses
    assert sorted(CASES) == sorted(cases[1]) and set(as_users_run_them) <= set(CASES)


@pytest.mark.parametrize("name", CASES)
def test_bad_inputs_end_in_one_line_before_any_work(cases, name):
    tmp, by_name = cases
    case = by_name[name]
    check_refused(case, run_here(case.script, *case.argv, cwd=tmp))


# -- adopt_zoo keeps a better checkpoint --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def zoo_results(tmp_path_factory):
    """Results folders of one checkpoint each: the shipped LocCNN (0.15 s, 25 dB), and a worse copy of it."""
    tmp = tmp_path_factory.mktemp("adopt")
    good, worse = tmp / "good", tmp / "worse"
    good.mkdir()
    worse.mkdir()
    save_checkpoint(load_model(SHIPPED), good / NAME, zoo_card())
    model = load_model(SHIPPED)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * p.abs().mean() * torch.randn(p.shape, generator=gen))
    save_checkpoint(model, worse / NAME, zoo_card())
    return tmp, good, worse


def _adopt(tmp: Path, results: Path, out: Path, *extra) -> subprocess.CompletedProcess:
    return run_here("scripts/adopt_zoo.py", results, "--out", out, "--data-root", tmp / "data", "--sources", 1,
               "--srp-windows", 1, "--threads", 1, *extra, cwd=tmp)


def test_adopt_zoo_keeps_a_better_checkpoint_unless_told(zoo_results):
    tmp, good, worse = zoo_results
    out = tmp / "out"
    first = _adopt(tmp, good, out)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    card = read_card(out / NAME)
    better = card["metrics"]["test"]["metrics"]["mae"]
    # stored by the library's float16 rule, with its record
    storage = card["storage"]
    assert storage["tolerance"] == dict.fromkeys(("mae_x", "mae_y", "mae_z", "mae"), 1e-3)
    assert storage["dtype"] == card["dtype"] and storage["within_tolerance"] == (card["dtype"] == "float16")
    before = (out / NAME).read_bytes()

    second = _adopt(tmp, worse, out)
    assert second.returncode == 1, second.stdout[-2000:] + second.stderr[-2000:]
    assert (out / NAME).read_bytes() == before and sorted(p.name for p in out.iterdir()) == [NAME]
    # both numbers printed: the kept one's and the new one's (also in the table's row)
    kept = [line for line in second.stdout.splitlines() if line.startswith(f"{out / NAME}: kept")]
    assert len(kept) == 1 and f"(test MAE {better:.4f} m)" in kept[0] and "--even-if-worse" in kept[0], kept
    new = float(re.search(rf"over the new {re.escape(NAME)} \((\d+\.\d+) m\)", kept[0])[1])
    assert new > better
    row = next(line for line in second.stdout.splitlines() if line.startswith("| loccnn (0.15 s, 25 dB)"))
    assert abs(float(row.split("|")[2].split()[0]) - new) <= 6e-4  # the row gives it to 3 decimals
    assert row.rstrip().endswith("| no: kept the existing one |")

    third = _adopt(tmp, worse, out, "--even-if-worse")
    assert third.returncode == 0, third.stdout[-2000:] + third.stderr[-2000:]
    assert read_card(out / NAME)["metrics"]["test"]["metrics"]["mae"] > better


def test_adopt_zoo_does_not_compare_scores_on_other_test_sources(zoo_results):
    tmp, _, worse = zoo_results
    out = tmp / "shipped"
    out.mkdir()
    (out / NAME).write_bytes(SHIPPED.read_bytes())  # scored on the full test split
    run_ = _adopt(tmp, worse, out)
    assert run_.returncode == 1, run_.stdout[-2000:] + run_.stderr[-2000:]
    assert (out / NAME).read_bytes() == SHIPPED.read_bytes()
    full = len(paper_scene().source_ids("test"))
    assert f"not compared: the existing one was scored on {full} test sources" in run_.stdout


# -- gpu_zoo's plan ---------------------------------------------------------------------------------------------

def test_gpu_zoo_plans_no_more_epochs_than_max_epochs():
    spec = importlib.util.spec_from_file_location("gpu_zoo_under_test", TREE / "scripts" / "gpu_zoo.py")
    gpu_zoo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_zoo)
    args = argparse.Namespace(jobs=1, sim_workers=1, threads=1, conditions=[(0.6, 10.0)], archs=["loccnn"],
                              sources=None, batch_size=100, draws=5, reserve_s=20.0, max_epochs=2)
    record = {"sim_seconds_per_source": 1e-3, "steps": {"loccnn": {"seconds_per_step": 1e-3}}}
    plan = gpu_zoo.estimate(args, record, paper_scene(), 540.0)
    assert "about 2 paper epochs (1 super-epochs) as --max-epochs allows" in plan


# -- as users run them -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", AS_USERS_RUN_THEM)
def test_bad_inputs_as_users_run_them(as_users_run_them, name):
    case, future = as_users_run_them[name]
    check_refused(case, future.result())
