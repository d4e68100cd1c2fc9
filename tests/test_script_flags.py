"""The scripts' and benchmarks' refusals name the option the user typed with its value and what is allowed, in one
line, ``NAME.py: error: ...``, with exit status 2, before any work: every value is checked by its option's argparse
type (:mod:`xai_loc.script_args`), a library setting by its entry of the library's check table.

The scripts run in this process as ``python SCRIPT ARGS`` would (:func:`test_scripts_hardening.run_here`, which
honours ``XAI_LOC_SCRIPTS_ROOT``), with rendering, simulation and training replaced by a stand-in that fails the test
if it runs.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import subprocess
from pathlib import Path
from unittest import mock

import pytest
from helpers import never
from test_scripts_hardening import TREE, run_here

from xai_loc.errors import InputError
from xai_loc.models.training import CHECKS, TrainConfig

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
#: What the scripts render, simulate or train.
WORK = ("xai_loc.data.simulate_dataset", "xai_loc.features.binaural_cues.simulate_cue_scenes",
        "xai_loc.data.ipd_ild_scenes.render_scenes", "xai_loc.data.bast_scenes.load_bast_scenes",
        "xai_loc.data.binaural_store.simulate_binaural", "xai_loc.data.store.simulate_windows",
        "xai_loc.models.training.train")


@pytest.fixture(autouse=True)
def _shipped(monkeypatch):
    """The repository's checkpoints are the shipped ones, wherever the package is imported from."""
    monkeypatch.setenv("XAI_LOC_PRETRAINED", str(PRETRAINED))




@contextlib.contextmanager
def no_work():
    with contextlib.ExitStack() as stack:
        for target in WORK:
            stack.enter_context(mock.patch(target, never(target)))
        yield


def refusal(tmp_path: Path, script: str, *argv) -> str:
    """The one line of ``python SCRIPT ARGV`` run in ``tmp_path`` with no work allowed: exit status 2, nothing on
    stdout, one line on stderr, ``tmp_path`` left as it was."""
    before = sorted(p.name for p in tmp_path.iterdir())
    with no_work():
        done = run_here(script, *argv, cwd=tmp_path)
    lines = done.stderr.strip().splitlines()
    assert (done.returncode, done.stdout, len(lines)) == (2, "", 1), done.stdout[-2000:] + done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    return lines[0]


# ---------------------------------------------------------------- the library's check tables, with the option's name
ZOO = ["--archs", "loccnn", "--conditions", "0.15:25"]


@pytest.mark.parametrize("flag, value, allowed", [
    ("--max-epochs", "0", "a positive integer"),
    ("--lr", "-1", "a positive number"),  # the table's "None or" is no value a user can type
    ("--lr", "abc", "a positive number"),
    ("--max-minutes", "nan", "a positive number of minutes"),
    ("--batch-size", "1", "an integer in [2, 1048576]"),
    ("--batch-size", "1048577", "an integer in [2, 1048576]"),
    ("--eval-batch-size", "0", "an integer in [1, 1048576]"),
    ("--seed", "-1", "an integer >= 0"),
    ("--threads", "300", "an integer in [1, 256]"),
    ("--sources", "1", "an integer >= 2"),  # training needs two sources: refused before the splits are simulated
])
def test_train_zoo_names_the_option(tmp_path, flag, value, allowed):
    """Review: 'max_epochs=0 is not allowed', 'lr=-1.0 ...; use None or a positive number' named the TrainConfig
    fields; '--sources 1' simulated three splits before training refused one source."""
    line = refusal(tmp_path, "scripts/train_zoo.py", *ZOO, "--out", tmp_path / "zoo", "--data-root",
                   tmp_path / "data", flag, value)
    assert line == f"train_zoo.py: error: argument {flag}: {value!r} is not allowed; use {allowed}"


@pytest.mark.parametrize("script, flag, value, allowed", [
    ("train_cuenet", "--epochs", "0", "a positive integer"),
    ("train_cuenet", "--batch-size", "1", "an integer >= 2"),
    ("train_cuenet", "--label-sigma", "91", "a number of degrees in [0, 90]"),
    ("train_cuenet", "--threads", "0", "an integer in [1, 256]"),
    ("train_tfcnn", "--epochs", "0", "a positive integer"),
    ("train_tfcnn", "--max-minutes", "0", "a positive number of minutes"),
    ("train_tfcnn", "--n-train", "0", "a positive integer"),
    ("train_tfcnn", "--test-per-azimuth", "-1", "a positive integer"),
    ("train_bast", "--lr", "0", "a positive number"),
    ("train_bast", "--seed", "-1", "an integer >= 0"),
    ("train_bast", "--dim", "0", "a positive integer"),
    ("train_bast", "--n-sounds", "0", "an integer in [1, 10000]"),
    ("train_cochcnn", "--label-sigma", "-1", "a number of degrees in [0, 90]"),
    ("train_cochcnn", "--per-sound", "0", "an integer in [1, 100]"),
    ("train_cochcnn", "--threads", "300", "an integer in [1, 256]"),
])
def test_binaural_training_scripts_name_the_option(tmp_path, script, flag, value, allowed):
    """Review: 'epochs=0 is not allowed', 'label_sigma=91.0 ...', 'n_train=0 ...', 'threads=300 ...' named
    library fields."""
    line = refusal(tmp_path, f"scripts/{script}.py", "--out", tmp_path / "m.safetensors", "--data-root",
                   tmp_path / "data", flag, value)
    assert line == f"{script}.py: error: argument {flag}: {value!r} is not allowed; use {allowed}"


@pytest.mark.parametrize("flag, value, allowed", [
    ("--lr", "0", "a positive number"),
    ("--batch-size", "1", "an integer in [2, 1048576]"),
    ("--seed", "-1", "an integer >= 0"),
    ("--threads", "300", "an integer in [1, 256]"),
    ("--sources", "1", "an integer >= 2"),
])
def test_gpu_zoo_names_the_option(tmp_path, flag, value, allowed):
    """Review: '--batch-size 1' and '--lr 0' were refused as 'batch_size=1 ...', 'lr=0.0 ...; use None or ...';
    '--threads 300' only by the preflight, on stdout."""
    line = refusal(tmp_path, "scripts/gpu_zoo.py", "--out", tmp_path / "zoo", "--device", "cpu", flag, value)
    assert line == f"gpu_zoo.py: error: argument {flag}: {value!r} is not allowed; use {allowed}"


INTEGER_FIELDS = ("batch_size", "lr_patience", "early_stop_patience", "max_epochs", "seed", "eval_batch_size",
                  "draws_per_epoch")


@pytest.mark.parametrize("field", ["batch_size", "lr", "weight_decay", "lr_factor", "lr_patience", "min_lr",
                                   "early_stop_patience", "max_epochs", "max_minutes", "seed", "eval_batch_size",
                                   "draws_per_epoch", "checkpoint_every_s"])
def test_an_option_allows_what_the_library_allows(field):
    """One check per setting: an option typed ``setting(CHECKS, field)`` takes a value exactly when
    :class:`TrainConfig` takes it."""
    from xai_loc.script_args import setting

    integer = field in INTEGER_FIELDS
    convert = setting(CHECKS, field, integer=integer)
    for text in ("-1", "0", "0.2", "1", "2", "1e9", "nan", "inf"):
        try:
            TrainConfig(**{field: int(text) if integer and text.lstrip("-").isdigit() else float(text)})
            library = True
        except InputError:
            library = False
        if integer and not text.lstrip("-").isdigit():
            library = False  # no integer written
        try:
            convert(text)
            option = True
        except argparse.ArgumentTypeError as err:
            assert str(err) == f"{text!r} is not allowed; use {CHECKS[field][1].removeprefix('None or ')}"
            option = False
        assert option == library, (field, text)


# ------------------------------------------------------------------------------------- library checks of a value
def test_a_condition_below_the_paper_rooms_sabine_minimum_names_the_option(tmp_path):
    """Review: '--conditions 0.05:10' was refused as 'T60=0.05 s is too short ...' by train_zoo, and by gpu_zoo
    only in its preflight, on stdout."""
    says = ("argument --conditions: condition '0.05:10': T60=0.05 s is too short for room (3.6, 8.2, 2.4); Sabine "
            "allows T60 >= 0.0987 s")
    assert refusal(tmp_path, "scripts/train_zoo.py", "--archs", "loccnn", "--conditions", "0.05:10", "--out",
                   tmp_path / "zoo", "--data-root", tmp_path / "data") == f"train_zoo.py: error: {says}"
    assert refusal(tmp_path, "scripts/gpu_zoo.py", "--out", tmp_path / "zoo", "--device", "cpu", "--conditions",
                   "0.05:10") == f"gpu_zoo.py: error: {says}"


@pytest.mark.parametrize("script", ["train_cuenet", "train_bast", "train_tfcnn", "train_cochcnn", "adopt_zoo"])
def test_a_data_root_that_is_a_file_names_the_option(tmp_path, script):
    """Review: '--data-root FILE' went on to render (train_cuenet, train_bast) or simulate (adopt_zoo), or was
    refused as 'checkpoint folder FILE/runs ...'."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    first = [tmp_path / "results"] if script == "adopt_zoo" else ["--out", tmp_path / "m.safetensors"]
    line = refusal(tmp_path, f"scripts/{script}.py", *first, "--data-root", afile)
    assert line == f"{script}.py: error: argument --data-root: folder '{afile}' is not allowed: '{afile}' is a " \
                   "file, not a folder"


def test_a_checkpoint_path_names_the_option(tmp_path):
    out = tmp_path / "m.txt"
    assert refusal(tmp_path, "scripts/train_tfcnn.py", "--out", out, "--data-root", tmp_path / "data") == \
        f"train_tfcnn.py: error: argument --out: checkpoint path {out} is not allowed; use a file name ending in " \
        ".safetensors"


def test_cochcnn_rooms_and_layers_are_the_registries_choices(tmp_path):
    """Review: 'room 'attic' is not allowed' and 'model_config: layer preset ...' named library fields."""
    from xai_loc.acoustics.binaural import ROOMS
    from xai_loc.models.cochleagram_cnn import LAYER_PRESETS

    base = ["--out", tmp_path / "m.safetensors", "--data-root", tmp_path / "data"]
    rooms = ", ".join(repr(r) for r in ("anechoic", *ROOMS))
    assert refusal(tmp_path, "scripts/train_cochcnn.py", *base, "--rooms", "attic") == \
        f"train_cochcnn.py: error: argument --rooms: invalid choice: 'attic' (choose from {rooms})"
    layers = ", ".join(repr(name) for name in LAYER_PRESETS)
    assert refusal(tmp_path, "scripts/train_cochcnn.py", *base, "--layers", "huge") == \
        f"train_cochcnn.py: error: argument --layers: invalid choice: 'huge' (choose from {layers})"


def test_make_kemar_sofa_refuses_its_output_and_missing_packages_in_one_line(tmp_path):
    """Review: a bad '--out' or a missing slab ended in a traceback."""
    real = importlib.util.find_spec

    def without_slab(name, *args, **kwargs):
        return None if name in ("slab", "sofar") else real(name, *args, **kwargs)

    out = tmp_path / "kemar.txt"
    assert refusal(tmp_path, "scripts/make_kemar_sofa.py", "--out", out) == \
        f"make_kemar_sofa.py: error: argument --out: '{out}' is not allowed; use a file name ending in .sofa"
    with mock.patch("importlib.util.find_spec", without_slab):
        line = refusal(tmp_path, "scripts/make_kemar_sofa.py", "--out", tmp_path / "kemar.sofa")
    assert line == ("make_kemar_sofa.py: error: slab and sofar cannot be imported; run this script where slab and "
                    "sofar are installed (a scratch environment: see its docstring)")


# ------------------------------------------------------------------------------------------------------ benchmarks
def test_benchmarks_name_the_option_in_argparse_style(tmp_path):
    """Review: benchmarks ended in 'bench_simulate: T60=-1.0 s ...', 'bench_study: stage ...', 'bench_faithfulness:
    method ...', 'bench_rir: threads=300 ...' (no option named, not argparse's 'NAME.py: error:')."""
    stages = "simulate, explain, perturb, tdoa, faithfulness, sanity, components"
    for argv, line in (
        (["benchmarks/bench_simulate.py", "--t60", "-1"],
         "bench_simulate.py: error: argument --t60: T60=-1.0 s is not allowed; give seconds in (0, 10.0]"),
        (["benchmarks/bench_simulate.py", "--t60", "0.05"],
         "bench_simulate.py: error: argument --t60: T60=0.05 s is too short for room (3.6, 8.2, 2.4); Sabine "
         "allows T60 >= 0.0987 s"),
        (["benchmarks/bench_rir.py", "--threads", "300"],
         "bench_rir.py: error: argument --threads: '300' is not allowed; use an integer in [1, 256]"),
        (["benchmarks/bench_study.py", "--device", "cpu", "--stages", "simulate,train"],
         f"bench_study.py: error: argument --stages: stage 'train' is unknown; allowed: {stages}"),
        (["benchmarks/bench_study.py", "--device", "gpu"],
         "bench_study.py: error: argument --device: unknown device 'gpu'; allowed: cpu, cuda, cuda:N"),
        (["benchmarks/bench_study.py", "--device", "cpu", "--sources", "0"],
         "bench_study.py: error: argument --sources: '0' is not allowed; use a positive integer"),
        (["benchmarks/bench_faithfulness.py", "--fills", "zero,foo"],
         "bench_faithfulness.py: error: argument --fills: fills 'foo' is unknown; allowed: zero, noise, road"),
    ):
        assert refusal(tmp_path, *argv) == line


def test_bench_study_checks_its_arguments_without_work(tmp_path):
    """gpu_study.sh checks the benchmark's arguments (``--check``) before its tests spend minutes of the lease."""
    with no_work():
        done = run_here("benchmarks/bench_study.py", "--device", "cuda", "--device", "cpu", "--sources", "1",
                        "--t60", "0.6", "--snr", "10", "--json", tmp_path / "bench.json", "--check", cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert not any(tmp_path.iterdir())


def test_gpu_study_sh_refuses_out_without_a_folder(tmp_path):
    """Review: '--out' as the last argument ended with exit status 1 and bash's 'line 35: 2: ...'."""
    done = subprocess.run(["bash", str(TREE / "scripts" / "gpu_study.sh"), "--out"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert (done.returncode, done.stderr, done.stdout) == (2, "gpu_study.sh: error: argument --out: expected a "
                                                              "folder\n", "")
