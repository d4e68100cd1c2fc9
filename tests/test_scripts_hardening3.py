"""Review round 3 of the binaural probe commands and the training scripts: every refusal comes before any rendering
or training (the work itself is replaced by a function that fails the test if it runs), ``binaural cues`` writes
and removes its files all or none, and a probe's own randomness has its own seed (``--probe-seed``).

The scripts run in this process as ``python SCRIPT ARGS`` would (:func:`test_scripts_hardening.run_here`, which
honours ``XAI_LOC_SCRIPTS_ROOT``).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import xarray as xr
from helpers import never, refused, run_cli
from test_scripts_hardening import run_here, zoo_card

from xai_loc.errors import InputError
from xai_loc.models import build_model, save_checkpoint
from xai_loc.models.zoo import checkpoint_name

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
DEVICES = "allowed: cpu, cuda, cuda:N"


@pytest.fixture(autouse=True)
def _shipped(monkeypatch):
    """The repository's checkpoints are the shipped ones, wherever the package is imported from."""
    monkeypatch.setenv("XAI_LOC_PRETRAINED", str(PRETRAINED))




def one_line_refusal(done, line: str) -> None:
    """A script's refusal: exit status 2, exactly ``line`` on stderr, nothing on stdout."""
    assert (done.returncode, done.stderr.strip().splitlines(), done.stdout) == (2, [line], ""), \
        done.stdout[-2000:] + done.stderr[-2000:]


def fake_duplex(model, out_dir, **kwargs) -> dict:
    """A duplex probe result with the variables the registry requires, written at once."""
    from xai_loc.io import write_dataset_atomic

    ds = xr.Dataset({"itd_weight": ("band", [0.9]), "ild_weight": ("band", [0.1])}, coords={"band": ["low"]})
    return {"duplex": write_dataset_atomic(ds, Path(out_dir) / "duplex.nc")}


# ------------------------------------------------- 1: binaural cues checks every path before the probe, all or none
@pytest.mark.parametrize("folder, says", [
    ("responses.nc", "cannot remove an earlier run's responses.nc from --out: '{out}/responses.nc' is a folder; "
                     "remove it or choose another --out"),
    ("cues.pdf", "cannot write the file '{out}/cues.pdf': it is a folder; remove it or choose another path"),
])
def test_cues_refuses_a_folder_where_it_writes_or_removes_a_file_before_the_probe(tmp_path, monkeypatch, folder,
                                                                                   says):
    """Review: a folder at responses.nc failed the stale-file cleanup after duplex.nc was written (cues.png/.pdf
    never drawn)."""
    monkeypatch.setattr("xai_loc.experiments.cues.run_duplex_probe", never("the duplex probe"))
    out = tmp_path / "out"
    (out / folder).mkdir(parents=True)
    line = refused(run_cli(["binaural", "cues", "--no-behaviour", "--no-relevance", "--tokens", "1",
                            "--out", str(out)]))
    assert line == f"Error: {says.format(out=out)}\n"
    assert [p.name for p in out.iterdir()] == [folder] and not any((out / folder).iterdir())


def test_cues_writes_no_result_when_a_figure_fails(tmp_path, monkeypatch):
    """Review: the results were published before the figures were drawn; a failing figure left them beside an
    earlier run's figures."""
    def fails(*args, **kwargs):
        raise InputError("the figure failed")

    monkeypatch.setattr("xai_loc.experiments.cues.run_duplex_probe", fake_duplex)
    monkeypatch.setattr("xai_loc.plots.hofman.draw_duplex", fails)
    out = tmp_path / "out"
    out.mkdir()
    (out / "responses.nc").write_bytes(b"an earlier run's")
    assert refused(run_cli(["binaural", "cues", "--no-behaviour", "--no-relevance", "--tokens", "1",
                            "--out", str(out)])) == "Error: the figure failed\n"
    assert [p.name for p in out.iterdir()] == ["responses.nc"]
    assert (out / "responses.nc").read_bytes() == b"an earlier run's"


def test_cues_publishes_the_probe_and_its_figure_and_removes_what_it_left_out(tmp_path):
    """The real probe (one token per condition): its result and figure replace an earlier run's, whose behaviour
    and relevance view are removed; --probe-seed seeds the tokens and is recorded."""
    out = tmp_path / "out"
    out.mkdir()
    for name in ("responses.nc", "hofman.png", "hofman.pdf", "duplex_relevance.nc", "cues.png"):
        (out / name).write_bytes(b"an earlier run's")
    result = run_cli(["binaural", "cues", "--no-behaviour", "--no-relevance", "--tokens", "1", "--probe-seed", "3",
                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(out / name) for name in ("duplex.nc", "cues.png", "cues.pdf")]
    assert sorted(p.name for p in out.iterdir()) == ["cues.pdf", "cues.png", "duplex.nc"]
    assert (out / "cues.png").read_bytes()[:4] == b"\x89PNG"
    with xr.open_dataset(out / "duplex.nc") as duplex:
        assert duplex.attrs["seed"] == 3 and duplex.sizes["token"] == 1
        assert np.isfinite(duplex["itd_weight"].values).all()


# ------------------------------------------------------ 2: --no-behaviour refuses the dataset options (no effect)
@pytest.mark.parametrize("given, shown", [
    (["--rooms", "attic", "--kinds", "foo"], "--rooms attic"),
    (["--kinds", "foo"], "--kinds foo"),
    (["--no-noise"], "--no-noise"),
    (["--seed", "1"], "--seed 1"),
    (["--n-sounds", "10"], "--n-sounds 10"),
    (["--data", "{tmp}/data"], "--data {tmp}/data"),
])
def test_cues_refuses_dataset_options_with_no_behaviour(tmp_path, monkeypatch, given, shown):
    """Review: 'binaural cues --no-behaviour --rooms attic --kinds foo' ran and exited 0: the options were ignored."""
    monkeypatch.setattr("xai_loc.experiments.cues.run_duplex_probe", never("the duplex probe"))
    given = [arg.format(tmp=tmp_path) for arg in given]
    line = refused(run_cli(["binaural", "cues", "--no-behaviour", *given, "--out", str(tmp_path / "out")]))
    assert line == (f"Error: {shown.format(tmp=tmp_path)} is not allowed with --no-behaviour: the dataset options "
                    "only pick and render the behaviour's held-out scenes; leave it out or drop --no-behaviour\n")
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------- 3: --probe-seed seeds the probes, --seed the data only
@pytest.fixture
def probes(monkeypatch, tmp_path):
    """The probes' work replaced: ``seen`` gets each probe's keyword arguments and the spec its scenes come from.
    The data root comes from $XAI_LOC_DATA, which ``cues --no-behaviour`` takes (it is no option given)."""
    monkeypatch.setenv("XAI_LOC_DATA", str(tmp_path / "data"))
    seen: dict = {}

    def record(name, result):
        def probe(*args, **kwargs):
            seen[name] = kwargs
            return result
        return probe

    def scenes(spec, *args, **kwargs):
        seen["spec"] = spec
        return {"test": "scenes"}

    monkeypatch.setattr("xai_loc.experiments.cues.run_duplex_probe", record("cues", {}))
    monkeypatch.setattr("xai_loc.plots.redraw.draw", lambda paths: [])
    monkeypatch.setattr("xai_loc.experiments.cue_probe.run_cue_probe", record("cuenet", {"paths": {}}))
    monkeypatch.setattr("xai_loc.features.binaural_cues.simulate_cue_scenes", scenes)
    monkeypatch.setattr("xai_loc.experiments.ipd_ild_probe.run_ipd_ild_probe", record("tfcnn", {}))
    monkeypatch.setattr("xai_loc.data.ipd_ild_scenes.render_scenes", scenes)
    return seen


@pytest.mark.parametrize("command, extra", [
    (["binaural", "cues", "--no-behaviour", "--no-relevance"], []),
    (["binaural", "cuenet", "probe"], ["--examples", "10"]),
    (["binaural", "tfcnn", "probe"], ["--examples", "10"]),
])
def test_probe_seed_seeds_the_probe_and_leaves_the_data_to_the_checkpoint(tmp_path, probes, command, extra):
    """Review: one --seed picked the held-out split and the probe's draws, and it must equal the card's, so a
    shipped checkpoint's probe could never be drawn again (--seed 1 --examples 10: refused)."""
    family = command[1]
    out = ["--out", str(tmp_path / "out")]
    for given, seed in (([], 0), (["--probe-seed", "7"], 7)):  # 0: the draw of every earlier run
        result = run_cli([*command, *extra, *given, *out])
        assert result.exit_code == 0, result.output
        assert probes.pop(family)["seed"] == seed
        if family != "cues":
            assert probes.pop("spec").seed == 0  # the shipped checkpoint's held-out data
    if family != "cues":
        refused(run_cli([*command, "--seed", "1", *extra, *out]), "--seed 1 differs from the checkpoint's training")
        assert "a draw seeded by --probe-seed" in " ".join(run_cli([*command, "--help"]).stdout.split())


# ------------------------------------------------------------------ 4-7, 9: the scripts refuse before any work
@contextlib.contextmanager
def no_work():
    """The scripts' rendering, simulation and training replaced by :func:`never`."""
    with contextlib.ExitStack() as stack:
        for target in ("xai_loc.data.simulate_dataset", "xai_loc.features.binaural_cues.simulate_cue_scenes",
                       "xai_loc.data.ipd_ild_scenes.render_scenes", "xai_loc.models.training.train"):
            stack.enter_context(mock.patch(target, never(target)))
        yield


def test_train_zoo_checks_devices_and_init_checkpoints_before_simulating(tmp_path):
    """Review: '--device gpu' and a missing '--init-from' failed only after three splits were simulated."""
    data, out = tmp_path / "data", tmp_path / "out"
    base = ["--archs", "loccnn", "samplecnn", "--conditions", "0.15:25", "--data-root", data, "--out", out]
    inits = tmp_path / "inits"
    inits.mkdir()
    save_checkpoint(build_model("loccnn"), inits / "loccnn.safetensors", {"condition": {"t60": 0.15, "snr": 25.0}})
    save_checkpoint(build_model("loccnn"), inits / "samplecnn.safetensors", {"condition": {"t60": 0.15, "snr": 25.0}})
    with no_work():
        for extra, line in (
            (["--device", "gpu"], f"train_zoo.py: error: argument --device: unknown device 'gpu'; {DEVICES}"),
            (["--sim-device", "cuda:01"],
             f"train_zoo.py: error: argument --sim-device: unknown device 'cuda:01'; {DEVICES}"),
            (["--init-from", "/nonexist/{arch}.safetensors"],
             "train_zoo.py: error: checkpoint /nonexist/loccnn.safetensors does not exist"),
        ):
            one_line_refusal(run_here("scripts/train_zoo.py", *base, *extra, cwd=tmp_path), line)
        done = run_here("scripts/train_zoo.py", *base, "--init-from", f"{inits}/{{arch}}.safetensors", cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr[-2000:]
    assert done.stderr.startswith(f"train_zoo.py: error: init checkpoint {inits}/samplecnn.safetensors holds loccnn ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inits"]


@pytest.mark.parametrize("script, flag, refusal", [
    # review: '--epochs 0' rendered 720 + 4320 scenes before the refusal; '--probe FILE' trained and wrote the
    # checkpoint, then failed
    ("train_cuenet", "--probe", "--probe '{afile}' is not allowed: '{afile}' is a file, not a folder"),
    # review: '--epochs 0' rendered 8000 scenes before TFCNNTrainConfig refused it
    ("train_tfcnn", "--runs", "argument --runs: folder '{afile}' is not allowed: '{afile}' is a file, not a folder"),
])
def test_train_scripts_check_the_recipe_and_their_folders_before_rendering(tmp_path, script, flag, refusal):
    afile = tmp_path / "afile"
    afile.write_text("x")
    base = ["--data-root", tmp_path / "data", "--out", tmp_path / "out" / "c.safetensors"]
    with no_work():
        one_line_refusal(run_here(f"scripts/{script}.py", *base, "--epochs", "0", cwd=tmp_path),
                         f"{script}.py: error: argument --epochs: '0' is not allowed; use a positive integer")
        one_line_refusal(run_here(f"scripts/{script}.py", *base, flag, afile, cwd=tmp_path),
                         f"{script}.py: error: " + refusal.format(afile=afile))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_adopt_zoo_refuses_an_out_that_is_a_file_before_any_work(tmp_path):
    """Review: '--out FILE' ended in a FileExistsError traceback."""
    results, afile = tmp_path / "results", tmp_path / "afile"
    results.mkdir()
    save_checkpoint(build_model("loccnn"), results / checkpoint_name("loccnn", 0.15, 25.0), zoo_card())
    afile.write_text("x")
    with no_work():
        one_line_refusal(run_here("scripts/adopt_zoo.py", results, "--out", afile, "--data-root", tmp_path / "data",
                                  cwd=tmp_path),
                         f"adopt_zoo.py: error: --out '{afile}' is not allowed: '{afile}' is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "results"] and afile.read_text() == "x"


@pytest.mark.parametrize("device", ["gpu", "cuda:01", "CPU"])
def test_gpu_zoo_refuses_an_unknown_device_name_on_stderr_before_the_preflight(tmp_path, device):
    """Review: '--device gpu' printed 'preflight failed: ...' on stdout, nothing on stderr."""
    out = tmp_path / "out"
    one_line_refusal(run_here("scripts/gpu_zoo.py", "--out", out, "--device", device, cwd=tmp_path),
                     f"gpu_zoo.py: error: argument --device: unknown device {device!r}; {DEVICES}")
    assert not out.exists()


# ----------------------------------------------------------------------------- 8: train_bast's budget is wall-clock
def test_train_bast_says_its_budget_is_wall_clock():
    """Review: --max-minutes was described as a CPU-time budget; the trainer measures wall-clock time."""
    done = run_here("scripts/train_bast.py", "--help")
    assert done.returncode == 0, done.stderr
    assert "Wall-clock budget of the epochs" in " ".join(done.stdout.split()) and "CPU-time" not in done.stdout
