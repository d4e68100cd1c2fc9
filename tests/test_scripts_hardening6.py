"""Review round 6 of the zoo scripts, the GPU launchers and two benchmarks: adopt_zoo, train_zoo and gpu_zoo check
every checkpoint (its weights, model configuration and recording: sample rate, microphone array) before any
simulation or write; the launchers answer ``--help`` and never remove a folder they did not make; bench_srp times
both paths warm and interleaved; bench_study refuses an empty stage list.

The scripts run as :func:`test_scripts_hardening.run_here` runs them (``XAI_LOC_SCRIPTS_ROOT`` points them, the
shell scripts included, at another copy of ``scripts/`` and ``benchmarks/``, e.g. an untouched checkout).
"""
from __future__ import annotations

import copy
import importlib.util
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import FS, MICS
from test_scripts_hardening import ENV, TREE, run_here, zoo_card
from test_scripts_hardening3 import no_work, one_line_refusal

from xai_loc.errors import InputError
from xai_loc.models import build_model, save_checkpoint
from xai_loc.models.evaluation import WindowSet
from xai_loc.models.zoo import checkpoint_name

LOCCNN = checkpoint_name("loccnn", 0.15, 25.0)
SAMPLECNN = checkpoint_name("samplecnn", 0.15, 25.0)


def run_card(fs: float = FS, shift: float = 0.0) -> dict:
    """A training run's card (the shipped LocCNN's records) whose training data were sampled at ``fs`` by the paper's
    array moved by ``shift`` metres in y."""
    card = copy.deepcopy(zoo_card())
    card["dataset"]["train"].update(fs=fs, mic_position=(MICS + [0.0, shift, 0.0]).tolist())
    return card


def damage(path: Path) -> Path:
    """``path`` with one byte of its weights flipped."""
    blob = bytearray(path.read_bytes())
    blob[-100] ^= 0xFF
    path.write_bytes(bytes(blob))
    return path


def checkpoint(folder: Path, name: str, kind: str) -> Path:
    """A zoo run's checkpoint ``folder/name`` of the architecture in ``name``: ``kind`` 'good', 'damaged', '8 mics'
    (a LocCNN built for 8 microphones), 'moved array' (trained 1 m off the paper's array) or 'fs 48000'."""
    folder.mkdir(exist_ok=True)
    arch = name.split("_")[0].removesuffix(".safetensors")
    model = build_model(arch, **({"n_mics": 8} if kind == "8 mics" else {}))
    card = run_card(fs=48000.0 if kind == "fs 48000" else FS, shift=-1.0 if kind == "moved array" else 0.0)
    path = save_checkpoint(model, folder / name, card)
    return damage(path) if kind == "damaged" else path


MOVED = "was trained with microphone 0 at (0.575, 6, 1.2) m but the paper scene has it at (0.575, 7, 1.2) m; use the " \
        "array it was trained with"
FS48 = "was trained on data sampled at 48000 Hz but the paper scene is sampled at 16000 Hz; use data at 48000 Hz"
DAMAGED = "is damaged: its weights do not match the sha256 its card records; copy it again (or retrain it)"


# ---------------------------------------- 1, 2: adopt_zoo checks every checkpoint's weights and recording up front
@pytest.mark.parametrize("kinds, says", [
    # review: a damaged SampleCNN beside a good LocCNN failed after the LocCNN was adopted into --out (half adopted)
    ({LOCCNN: "good", SAMPLECNN: "damaged"}, "checkpoint {results}/" + SAMPLECNN + " " + DAMAGED),
    # review: an 8-microphone LocCNN failed after its test split was simulated
    ({LOCCNN: "8 mics"}, LOCCNN + ": holds loccnn {{'n_mics': 8, 'n_samples': 5120}}; the zoo's loccnn is "
                         "{{'n_mics': 16, 'n_samples': 5120}} (the paper scene's windows)"),
    # review: models trained on another array or sample rate were adopted (exit status 0)
    ({LOCCNN: "moved array"}, LOCCNN + " " + MOVED),
    ({LOCCNN: "fs 48000"}, LOCCNN + " " + FS48),
])
def test_adopt_zoo_refuses_a_damaged_foreign_or_misrecorded_checkpoint_before_any_work(tmp_path, kinds, says):
    results = tmp_path / "results"
    for name, kind in kinds.items():
        checkpoint(results, name, kind)
    before = {p.name: p.read_bytes() for p in results.iterdir()}
    with no_work():
        done = run_here("scripts/adopt_zoo.py", results, "--out", tmp_path / "out", "--data-root", tmp_path / "data",
                        "--sources", 1, "--srp-windows", 1, cwd=tmp_path)
    one_line_refusal(done, "adopt_zoo.py: error: " + says.format(results=results))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
    assert {p.name: p.read_bytes() for p in results.iterdir()} == before


def _train_zoo(monkeypatch):
    """``scripts/train_zoo.py`` imported as a module, with ``scripts/_args`` as its ``_args`` (both put back)."""
    folder = TREE / "scripts"
    for name in ("_args", "train_zoo"):
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
    return sys.modules["train_zoo"]


def test_train_zoo_export_refuses_test_windows_of_another_recording(tmp_path, monkeypatch):
    """Review: export() scored with bare evaluate(), so a model of another sample rate was scored and written."""
    train_zoo = _train_zoo(monkeypatch)
    run = save_checkpoint(build_model("loccnn", n_mics=16, n_samples=512), tmp_path / "run.safetensors",
                          run_card(fs=48000.0))
    n = 4
    test = WindowSet(xr.Dataset(
        {"signals": (("window", "mic", "time"), np.random.default_rng(0).standard_normal((n, 16, 512)))},
        coords={"source_id": ("window", np.arange(n)), "mic_position": (("mic", "xyz"), MICS),
                "source_position": (("window", "xyz"), np.tile([1.7, 5.5, 1.2], (n, 1)))},
        attrs={"fs": FS, "t60": 0.15, "snr": 25.0, "split": "test"}))
    with pytest.raises(InputError) as err:
        train_zoo.export(run, test, tmp_path / "out.safetensors", 4, "cpu")
    assert str(err.value) == f"checkpoint {run} {FS48.replace('the paper scene', 'the dataset')}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.safetensors"]


# -------------------------------------------- 4: train_zoo and gpu_zoo check the init checkpoints before simulating
def test_train_zoo_refuses_an_init_checkpoint_of_another_array_before_simulating(tmp_path):
    inits = tmp_path / "inits"
    init = checkpoint(inits, "loccnn.safetensors", "moved array")
    with no_work():
        done = run_here("scripts/train_zoo.py", "--archs", "loccnn", "--conditions", "0.15:25", "--data-root",
                        tmp_path / "data", "--out", tmp_path / "out", "--init-from", f"{inits}/{{arch}}.safetensors",
                        cwd=tmp_path)
    one_line_refusal(done, f"train_zoo.py: error: init checkpoint {init} {MOVED}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inits"]


@pytest.mark.parametrize("kind, says", [
    ("8 mics", "init checkpoint {init} holds loccnn {{'n_mics': 8, 'n_samples': 5120}}; this run trains loccnn "
               "{{'n_mics': 16, 'n_samples': 5120}}"),
    ("damaged", "checkpoint {init} " + DAMAGED),
    ("fs 48000", "init checkpoint {init} " + FS48),
    ("moved array", "init checkpoint {init} " + MOVED),
])
def test_gpu_zoo_checks_init_checkpoints_as_train_does_before_the_preflight(tmp_path, kind, says):
    """Review: only the init card's architecture was compared; such checkpoints failed in the worker, after the
    preflight and the simulation (exit status 1)."""
    init = checkpoint(tmp_path / "inits", LOCCNN, kind)
    out = tmp_path / "out"
    done = run_here("scripts/gpu_zoo.py", "--out", out, "--device", "cuda", "--archs", "loccnn", "--conditions",
                    "0.15:25", "--init-from", init.parent, cwd=tmp_path)
    one_line_refusal(done, "gpu_zoo.py: error: " + says.format(init=init))
    assert not out.exists()


def test_gpu_zoo_refuses_to_continue_into_its_own_init_checkpoints(tmp_path):
    init = checkpoint(tmp_path / "zoo", LOCCNN, "good")
    before = init.read_bytes()
    done = run_here("scripts/gpu_zoo.py", "--out", init.parent, "--device", "cuda", "--archs", "loccnn",
                    "--conditions", "0.15:25", "--init-from", init.parent, cwd=tmp_path)
    one_line_refusal(done, f"gpu_zoo.py: error: init_from {init} is the checkpoint this run writes (out); fine-tune "
                           "from a copy or write to another out")
    assert [p.name for p in init.parent.iterdir()] == [LOCCNN] and init.read_bytes() == before


# -------------------------------------------------------- 3: gpu_image_dry_run.sh removes only folders it made
FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
if [ "$1" = -m ] && [ "$2" = venv ]; then
    mkdir -p "$3/bin"; echo "home = /fake" > "$3/pyvenv.cfg"; cp "$0" "$3/bin/python"
fi
exit 0
"""


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def dry_run(tmp_path):
    """``run(*args)``: the tree's gpu_image_dry_run.sh in a copy of the tree that holds one wheel and launchers that
    only say they ran, with a fake Python 3.12 that logs its calls to ``tmp/calls`` (a venv it makes is a folder of
    pyvenv.cfg and bin/python); returns the finished process."""
    tree = tmp_path / "tree"
    (tree / "scripts").mkdir(parents=True)
    (tree / ".whl").mkdir()
    (tree / ".whl" / "fake-1.0-py3-none-any.whl").write_bytes(b"")
    (tree / "scripts" / "gpu_image_dry_run.sh").write_bytes((TREE / "scripts" / "gpu_image_dry_run.sh").read_bytes())
    for launcher in ("gpu_zoo", "gpu_study"):
        (tree / "scripts" / f"{launcher}.sh").write_text(f'echo "{launcher} ran"\n')
    python = _executable(tmp_path / "python3.12", FAKE_PYTHON)
    env = {**ENV, "PYTHON312": str(python), "CALLS": str(tmp_path / "calls"), "TMPDIR": str(tmp_path)}

    def run(*args) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(tree / "scripts" / "gpu_image_dry_run.sh"), *map(str, args)],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)

    return run


def test_gpu_image_dry_run_refuses_a_folder_it_did_not_make(tmp_path, dry_run):
    """Review: a user's own venv (pyvenv.cfg, no .built marker) given as ENV_DIR was removed with rm -rf."""
    mine = tmp_path / "my-venv"
    mine.mkdir()
    (mine / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (mine / "my-work.txt").write_text("keep me")
    done = dry_run(mine)
    assert (done.returncode, done.stdout, done.stderr) == (
        2, "", f"gpu_image_dry_run.sh: error: ENV_DIR {mine} exists and was not made by this script (no "
               f"{mine}/.gpu-image-dry-run); name a new or empty folder\n")
    assert sorted(p.name for p in mine.iterdir()) == ["my-work.txt", "pyvenv.cfg"]
    assert not (tmp_path / "calls").exists()  # no interpreter looked for


def test_gpu_image_dry_run_makes_its_own_half_built_folder_again(tmp_path, dry_run):
    env = tmp_path / "env"
    env.mkdir()
    (env / ".gpu-image-dry-run").touch()  # an earlier run of the script, cut short before .built
    (env / "half-installed").touch()
    done = dry_run(env, tmp_path / "out")
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in env.iterdir()) == [".built", ".gpu-image-dry-run", "bin", "pyvenv.cfg"]
    assert done.stdout.splitlines()[-3:] == ["gpu_zoo ran", "gpu_study ran",
                                             f"gpu_image_dry_run.sh: both launchers passed; outputs in {tmp_path}/out"]
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[1] == f"-m venv {env}" and calls[2].startswith("-m pip install -q torch==2.11.0 ")


@pytest.mark.parametrize("args", [["--help"], ["-h"], [Path("env"), "--help"]])
def test_gpu_image_dry_run_help_prints_its_usage(tmp_path, dry_run, args):
    """Review: '--help' was taken as ENV_DIR (a venv named --help was built)."""
    done = dry_run(*args)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "Usage: bash scripts/gpu_image_dry_run.sh [ENV_DIR] [OUT_DIR]   (-h, --help: this text)\n" in done.stdout
    assert done.stdout.startswith("Dry-run both GPU launchers here, on the CPU")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["python3.12", "tree"]


# ----------------------------------------------------------------------------- 6a: gpu_study.sh --help
@pytest.mark.parametrize("args", [["--help"], ["--out", "out", "-h", "--sources", "2"]])
def test_gpu_study_help_prints_its_usage_and_runs_nothing(tmp_path, args):
    """Review: '--help' went to bench_study.py --check, then the GPU tests ran; without --out it printed only
    '--out FOLDER is required'."""
    python = _executable(tmp_path / "python", FAKE_PYTHON)
    done = subprocess.run(["bash", str(TREE / "scripts" / "gpu_study.sh"), *args], capture_output=True, text=True,
                          env={**ENV, "PYTHON": str(python), "CALLS": str(tmp_path / "calls")}, cwd=tmp_path,
                          timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith("Run the study's GPU checks from this source tree on the GPU machine")
    assert '  bash scripts/gpu_study.sh --out "$OUT" [--no-tests] [--sources 4 --t60 0.6 --snr 10 ...]\n' \
        in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["python"]  # no out folder, no call



def test_gpu_zoo_help_installs_nothing(tmp_path):
    """Review: 'gpu_zoo.sh --help' checked soundfile and installed the wheels first (or, with no wheels, ended in
    'fetch them', exit 2): it goes straight to gpu_zoo.py's help."""
    python = _executable(tmp_path / "python", FAKE_PYTHON)
    done = subprocess.run(["bash", str(TREE / "scripts" / "gpu_zoo.sh"), "--out", "x", "--help"], capture_output=True,
                          text=True, env={**ENV, "PYTHON": str(python), "CALLS": str(tmp_path / "calls")},
                          cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "calls").read_text() == f"{TREE / 'scripts' / 'gpu_zoo.py'} --help\n"  # one call: the help

# ------------------------------------------------------------------------ 6b: bench_study refuses no stages
@pytest.mark.parametrize("stages", [",", "", " , "])
def test_bench_study_refuses_an_empty_stage_list(tmp_path, stages):
    """Review: '--stages ,' was accepted and the run reported the whole study taking 0.0 s."""
    done = run_here("benchmarks/bench_study.py", "--device", "cpu", "--stages", stages, "--check", cwd=tmp_path)
    one_line_refusal(done, f"bench_study.py: error: argument --stages: {stages!r} names no stage; allowed: one or "
                           "more of simulate, explain, perturb, tdoa, faithfulness, sanity, components, "
                           "comma-separated")


# ------------------------------------------------------------ 5: bench_srp times both paths warm, interleaved
def test_bench_srp_warms_both_paths_and_interleaves_the_timed_runs(tmp_path, monkeypatch):
    """Review: only the gathered path was warmed up and each path was timed once (7.35x printed for one window
    against 1.0-1.3x warm)."""
    from xai_loc.experiments import gcc, srp

    calls = []

    def srp_map(windows, mics, grid, *args, **kwargs):
        calls.append("gathered" if srp.gcc_phat is gcc.gcc_phat else "shifted")
        return np.zeros((len(windows), len(grid)))

    monkeypatch.setattr(srp, "srp_phat_map", srp_map)
    monkeypatch.setattr("xai_loc.runtime.configure_cpu", lambda threads: None)  # this process's threads, allocator
    done = run_here("benchmarks/bench_srp.py", "--windows", 1, "--repeats", 3, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert calls == ["gathered", "shifted"] * 4  # one untimed warm-up of each, then three timed rounds
    assert ", fastest of 3 interleaved runs after a warm-up: " in done.stdout
    assert done.stdout.rstrip().endswith("maps equal: True")
