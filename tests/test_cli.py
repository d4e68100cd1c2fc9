"""The command line end to end: help speed-path, info, simulate, and one-line errors with exit code 2."""
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

from xai_loc.acoustics.backends import BACKENDS
from xai_loc.acoustics.conventions import CONVENTIONS
from xai_loc.acoustics.ism import MODES
from xai_loc.cli import BACKEND_CHOICES, CONVENTION_CHOICES, RIR_MODE_CHOICES, main


def test_help_does_not_import_torch():
    code = ("import sys\n"
            "from xai_loc.cli import main\n"
            "for args in (['--help'], ['perturb', '--help'], ['binaural', '--help'], ['explain', '--help']):\n"
            "    try:\n"
            "        main(args)\n"
            "    except SystemExit as stop:\n"
            "        assert stop.code == 0, (args, stop.code)\n"
            "assert 'torch' not in sys.modules and 'xarray' not in sys.modules, 'help imported torch or xarray'\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Usage: " in run.stdout and "--fill" in run.stdout  # the help texts were printed, perturb's among them


def test_a_terminated_command_removes_the_file_it_was_writing(tmp_path):
    """Review: SIGTERM killed a command at once, leaving the temporary file of an atomic write (which the report
    then showed as a figure); it now ends the command as an error does (exit code 143)."""
    code = ("import os, signal, sys, time\n"
            "import xai_loc.io\n"
            "from xai_loc.cli import main\n"
            "def killed(path):\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(60)\n"
            "@main.command('write')\n"
            "def write():\n"
            "    xai_loc.io.fsync_path = killed\n"
            "    xai_loc.io.write_text_atomic(sys.argv[1] + '/figure.png', 'half')\n"
            "main(['write'])\n")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 143, run.stderr[-2000:]
    assert not any(tmp_path.iterdir())


def test_report_out_is_an_html_file(tmp_path):
    """Review: report --out study.json (or a result file's name) overwrote what the report reads."""
    for name in ("study.json", "perturbation.nc", "page"):
        result = CliRunner().invoke(main, ["report", str(tmp_path), "--out", str(tmp_path / name)])
        assert result.exit_code == 2 and result.output == (f"Error: --out {str(tmp_path / name)!r} is not allowed; "
                                                           "use a file name ending in .html\n"), result.output


@pytest.mark.parametrize("store", ["test-n1.zarr", "test-n1.relevance", "test-n1.zarr.0123.partial"])
def test_an_out_folder_inside_a_store_is_refused(tmp_path, store):
    """Review: reproduce --out inside a data store was accepted."""
    (tmp_path / store).mkdir()
    (tmp_path / "link").symlink_to(tmp_path / store)
    for out in (tmp_path / store, tmp_path / store / "results", tmp_path / "link" / "results"):
        result = CliRunner().invoke(main, ["reproduce", "--quick", "--out", str(out), "--pretrained", str(tmp_path)])
        assert result.exit_code == 2 and result.output.startswith(
            f"Error: --out {str(out)!r} is not allowed: it is inside the store folder {str(tmp_path / store)!r}"), \
            result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", store] and not any((tmp_path / store).iterdir())


def test_reproduce_names_its_skip_option(tmp_path):
    result = CliRunner().invoke(main, ["reproduce", "--quick", "--skip", "bogus", "--out", str(tmp_path / "rep")])
    assert result.exit_code == 2 and result.output.startswith("Error: --skip 'bogus' is not an experiment of the "
                                                              "study; allowed: perturbation, tdoa"), result.output
    assert not any(tmp_path.iterdir())


def test_cli_choices_follow_the_registries():
    assert set(BACKEND_CHOICES) == set(BACKENDS)
    assert set(CONVENTION_CHOICES) == set(CONVENTIONS)
    assert set(RIR_MODE_CHOICES) == set(MODES)


def test_info_reports_versions_threads_and_device():
    result = CliRunner().invoke(main, ["--threads", "1", "info"])
    assert result.exit_code == 0, result.output
    assert "torch" in result.output and "threads          1" in result.output and "device" in result.output


def test_simulate_end_to_end(tmp_path):
    result = CliRunner().invoke(main, ["--threads", "1", "simulate", "--t60", "0.15", "--snr", "25", "--sources", "2",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    path = tmp_path / "paper" / "t60-0.15_snr-25" / "test-n2.zarr"
    assert result.output.strip().endswith(str(path))
    ds = xr.open_zarr(path)
    assert ds.signals.shape[1:] == (16, 5120) and len(set(ds.source_id.values.tolist())) == 2


@pytest.mark.parametrize("args, match", [
    (["--t60", "0", "--snr", "10"], "T60=0.0 s is not allowed"),
    (["--t60", "99", "--snr", "10"], "T60=99.0 s is not allowed"),
    (["--t60", "0.6", "--snr", "nan"], "SNR=nan dB is not allowed"),
    (["--t60", "0.6", "--snr", "10", "--device", "tpu"], "unknown device 'tpu'"),
    (["--t60", "0.6", "--snr", "10", "--scene", "nowhere"], "neither a built-in"),
    (["--t60", "0.6", "--snr", "10", "--speech", "MISSING"], "does not exist"),
    (["--t60", "0.6", "--snr", "10", "--sources", "-3"], "--sources -3 is not allowed"),
    (["--t60", "0.6", "--snr", "10", "--backend", "pyroomacoustics", "--mode", "hybrid"],  # was dropped silently
     "--mode hybrid is not allowed with --backend pyroomacoustics"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, match):
    result = CliRunner().invoke(main, ["simulate", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert match in result.output and result.output.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_empty_speech_folder_and_unknown_split(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["simulate", "--t60", "0.3", "--snr", "10", "--speech", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "holds no audio files" in result.output
    result = CliRunner().invoke(main, ["simulate", "--t60", "0.3", "--snr", "10", "--split", "dev"])
    assert result.exit_code == 2 and "dev" in result.output


def test_model_choices_follow_the_registry():
    from xai_loc.cli import MODEL_CHOICES
    from xai_loc.models import MODELS, build_model

    # the multichannel commands offer every registered multichannel (16-mic) localizer
    multichannel = {name for name in MODELS if build_model(name).input_shape[0] == 16}
    assert set(MODEL_CHOICES) == multichannel


def test_models_list_and_import_round_trip(tmp_path):
    import torch

    from xai_loc.models import build_model, load_model

    torch.manual_seed(0)
    paper = build_model("loccnn")
    torch.save(paper.state_dict(), tmp_path / "paper.pth")
    runner = CliRunner()
    result = runner.invoke(main, ["models", "import", "--arch", "loccnn", "--t60", "0.6", "--snr", "10",
                                  str(tmp_path / "paper.pth")])
    assert result.exit_code == 0, result.output
    model = load_model(tmp_path / "paper.safetensors")
    x = torch.randn(2, 16, 5120)
    torch.testing.assert_close(model(x), paper.eval()(x))
    result = runner.invoke(main, ["models", "list", "--dir", str(tmp_path)])
    assert result.exit_code == 0 and "2,126,355" in result.output and "673,475" in result.output
    assert "paper.safetensors" in result.output and "T60 0.6 s, SNR 10 dB" in result.output
    result = runner.invoke(main, ["models", "import", "--arch", "samplecnn", "--t60", "0.6", "--snr", "10",
                                  str(tmp_path / "paper.pth"), "--out", str(tmp_path / "wrong.safetensors")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "missing" in result.output
    assert not (tmp_path / "wrong.safetensors").exists()


def test_every_training_knob_is_a_flag():
    from dataclasses import fields

    from xai_loc.cli.multichannel import train
    from xai_loc.models import TrainConfig

    flags = {p.name for p in train.params}
    assert {f.name for f in fields(TrainConfig)} <= flags


def test_train_then_evaluate_end_to_end(tmp_path):
    import json

    from xai_loc.models import read_card

    runner = CliRunner()
    ckpt = tmp_path / "m.safetensors"
    result = runner.invoke(main, ["--threads", "1", "train", "--model", "loccnn", "--t60", "0.15", "--snr", "25",
                                  "--data", str(tmp_path / "data"), "--sources", "3", "--max-epochs", "2",
                                  "--batch-size", "3", "--out", str(ckpt)])
    assert result.exit_code == 0, result.output
    card = read_card(ckpt)
    assert card["condition"] == {"t60": 0.15, "snr": 25.0} and card["training"]["epochs"] == 2
    result = runner.invoke(main, ["--threads", "1", "evaluate", str(ckpt), "--data", str(tmp_path / "data"),
                                  "--sources", "2", "--json", str(tmp_path / "eval.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["n_sources"] == 2 and len(report["per_source"]) == 2
    assert "baseline" in result.output.lower()
    # the same numbers from the model's own forward pass over the stored windows, computed here in float64
    from xai_loc.data import open_signals, paper_scene, simulate_dataset
    from xai_loc.models import load_model

    ds = open_signals(simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=tmp_path / "data", n_sources=2,
                                       progress=False))
    with torch.no_grad():
        predicted = load_model(ckpt)(torch.as_tensor(ds["signals"].values)).double().numpy()
    error = np.abs(predicted - ds["source_position"].values)
    sources = ds["source_id"].values
    for row in report["per_source"]:
        mine = error[sources == row["source_id"]].mean(0)
        np.testing.assert_allclose([row["mae_x"], row["mae_y"], row["mae_z"]], mine, rtol=1e-4, atol=1e-6)
        assert row["n_windows"] == int((sources == row["source_id"]).sum())
    np.testing.assert_allclose(report["metrics"]["mae"], error.mean(), rtol=1e-4)


def test_explain_choices_follow_the_registries():
    from xai_loc.cli import COMPOSITE_CHOICES, METHOD_CHOICES, TARGET_CHOICES
    from xai_loc.explain import COMPOSITES, METHODS
    from xai_loc.explain.targets import targets_for

    # the multichannel commands take every method but AttnLRP, which explains transformers (binaural explain)
    assert set(METHOD_CHOICES) == set(METHODS) - {"attn_lrp"}
    assert set(TARGET_CHOICES) == set(targets_for("position"))
    from xai_loc.cli._common import ANY_TARGET_CHOICES
    from xai_loc.explain.targets import TARGETS

    assert set(ANY_TARGET_CHOICES) == set(TARGETS)  # faithfulness and sanity take any family's targets
    assert set(COMPOSITE_CHOICES) == set(COMPOSITES)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    import torch

    from xai_loc.models import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "samplecnn.safetensors"
    return save_checkpoint(build_model("samplecnn"), path, {"condition": {"t60": 0.15, "snr": 25.0}})


def test_explain_audit_listen_end_to_end(tmp_path, tiny_checkpoint):
    runner = CliRunner()
    data = tmp_path / "data"
    result = runner.invoke(main, ["--threads", "1", "explain", "--t60", "0.15", "--snr", "25", "--checkpoint",
                                  str(tiny_checkpoint), "--sources", "1", "--data", str(data), "--batch-size", "4",
                                  "--option", "first_rule=flat"])
    assert result.exit_code == 0, result.output
    store = result.output.strip().splitlines()[-1]
    rel = xr.open_zarr(store)
    signals = xr.open_zarr(data / "paper" / "t60-0.15_snr-25" / "test-n1.zarr")
    var = next(iter(rel.data_vars.values()))
    assert var.shape == signals.signals.shape and var.dims == ("window", "mic", "time")
    result = runner.invoke(main, ["listen", store, "--out", str(tmp_path / "wavs"), "--mics", "7,8"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "wavs").glob("*.wav"))) >= 2
    result = runner.invoke(main, ["--threads", "1", "audit", str(tiny_checkpoint)])
    assert result.exit_code == 0, result.output
    assert "ReSE1.gate" in result.output and "problems: none" in result.output
    # the data simulated again under the same name (here: another condition's store put there): listen refuses it
    other = runner.invoke(main, ["--threads", "1", "simulate", "--t60", "0.3", "--snr", "20", "--split", "test",
                                 "--sources", "1", "--data", str(data)])
    assert other.exit_code == 0, other.output
    explained = data / "paper" / "t60-0.15_snr-25" / "test-n1.zarr"
    shutil.rmtree(explained)
    shutil.copytree(other.output.strip().splitlines()[-1], explained)
    result = runner.invoke(main, ["listen", store, "--out", str(tmp_path / "wavs2"), "--mics", "7"])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "is not the one" in result.output and "explain it again" in result.output
    assert not (tmp_path / "wavs2").exists()


def test_explain_without_a_shipped_checkpoint_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("XAI_LOC_PRETRAINED", str(tmp_path))
    result = CliRunner().invoke(main, ["explain", "--t60", "0.3", "--snr", "20", "--data", str(tmp_path / "d")])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "samplecnn_t60-0.3_snr-20.safetensors" in result.output
    assert f"XAI_LOC_PRETRAINED={tmp_path}" in result.output  # the message names the variable that chose the folder
    assert not (tmp_path / "d").exists()


def test_perturb_end_to_end_writes_store_figure_and_table(tmp_path, tiny_checkpoint):
    result = CliRunner().invoke(main, ["--threads", "1", "perturb", "--t60", "0.15", "--snr", "25", "--checkpoint",
                                       str(tiny_checkpoint), "--model", "samplecnn", "--sources", "2",
                                       "--percentages", "0,50", "--data", str(tmp_path / "data"), "--out",
                                       str(tmp_path / "res"), "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    res = xr.open_dataset(tmp_path / "res" / "perturbation.nc")
    assert res.mae.dims == ("model", "mode", "percentage", "xyz")
    assert list(res["mode"].values) == ["relevance", "energy", "random", "relevance-randomized"]
    # nothing deleted at 0 %: every ordering gives the unperturbed error
    assert np.allclose(res.mae_mean.sel(percentage=0.0), res.mae_mean.sel(percentage=0.0)[0, 0])
    assert float(res.baseline_mae_mean) > 0
    for name in ("perturbation.png", "perturbation.pdf", "perturbation.md"):
        assert (tmp_path / "res" / name).stat().st_size > 0
    assert "AOPC" in result.output


def test_perturb_rejects_bad_percentages(tmp_path, tiny_checkpoint):
    result = CliRunner().invoke(main, ["perturb", "--t60", "0.15", "--snr", "25", "--checkpoint",
                                       str(tiny_checkpoint), "--sources", "1", "--percentages", "50,10",
                                       "--data", str(tmp_path / "d"), "--out", str(tmp_path / "res")])
    assert result.exit_code == 2 and "increasing" in result.output
    assert not (tmp_path / "res").exists() and not (tmp_path / "d").exists()


def test_first_rule_choices_follow_the_registry():
    from xai_loc.cli import FIRST_RULE_CHOICES
    from xai_loc.explain import FIRST_RULES

    assert set(FIRST_RULE_CHOICES) == set(FIRST_RULES)


def test_tdoa_end_to_end(tmp_path, tiny_checkpoint):
    result = CliRunner().invoke(main, ["--threads", "1", "tdoa", "--t60", "0.15", "--snr", "25", "--checkpoint",
                                       str(tiny_checkpoint), "--model", "samplecnn", "--sources", "1",
                                       "--pairs", "7-8,0-15", "--srp-windows", "2", "--data",
                                       str(tmp_path / "data"), "--out", str(tmp_path / "res")])
    assert result.exit_code == 0, result.output
    res = xr.open_dataset(tmp_path / "res" / "tdoa.nc")
    assert {"signals", "zero-lag", "samplecnn", "samplecnn-randomized"} <= set(res["estimator"].values.tolist())
    np.testing.assert_allclose(res.pair_distance.values, [0.15, 2.25])
    for name in ("tdoa.md", "tdoa.csv", "tdoa.tex", "tdoa.png", "srp.png"):
        assert (tmp_path / "res" / name).exists()
    bad = CliRunner().invoke(main, ["tdoa", "--t60", "0.15", "--snr", "25", "--checkpoint", str(tiny_checkpoint),
                                    "--pairs", "7-99", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "0..15" in bad.output and not (tmp_path / "bad").exists()


def test_reproduce_quick_and_figures_redraw(tmp_path, monkeypatch, zoo):
    import xai_loc.models.checkpoint
    from xai_loc.study import STUDY_EXPERIMENTS

    monkeypatch.setattr("xai_loc.study.QUICK_SOURCES", 1)
    monkeypatch.setattr("xai_loc.study.QUICK_SRP_WINDOWS", 2)
    # the explanation-quality suite as small as it gets: one method, one fill, two percentages
    monkeypatch.setattr("xai_loc.study.QUICK_METHODS", ("input_x_gradient",))
    monkeypatch.setattr("xai_loc.study.QUICK_FILLS", ("zero",))
    monkeypatch.setattr("xai_loc.study.QUICK_PERCENTAGES", (0.0, 50.0))
    loads, real_load = [], xai_loc.models.checkpoint.load_model

    def counting_load(path, *args, **kwargs):
        loads.append(path)
        return real_load(path, *args, **kwargs)

    for module in (xai_loc.models.checkpoint, xai_loc.models):  # through the module and the package name alike
        monkeypatch.setattr(module, "load_model", counting_load)
    runner = CliRunner()
    result = runner.invoke(main, ["--threads", "1", "reproduce", "--quick", "--out", str(tmp_path / "rep"),
                                  "--data", str(tmp_path / "data"), "--pretrained", str(zoo)])
    assert result.exit_code == 0, result.output
    assert len(loads) == 1  # one ModelSet for evaluation, the five experiments and the inspection
    summary = (tmp_path / "rep" / "summary.md").read_text()
    row = next(line for line in summary.splitlines() if line.startswith("| 0.15 | 25 | loccnn |"))
    assert row.split("|")[4].strip() == "pyroomacoustics"  # a card without a convention: the legacy data
    assert row.split("|")[7].strip() == "0.088"  # the paper's number beside ours
    assert "Test data simulated under the gpurir convention." in summary
    missing = next(line for line in summary.splitlines() if line.startswith(f"No checkpoint in {zoo} for: "))
    assert "samplecnn (0.15 s, 25 dB)" in missing and "loccnn (0.3 s, 20 dB)" in missing  # one architecture too
    assert "loccnn (0.15 s, 25 dB)" not in missing
    assert "faithfulness, sanity, components on 1 of them with input_x_gradient and 200 bootstrap" in summary
    cond = tmp_path / "rep" / "t60-0.15_snr-25"
    for name in ("perturbation.nc", "tdoa.nc", "tdoa.md", "inspection_loccnn.png", "faithfulness.png", "sanity.png",
                 "components.png"):
        assert (cond / name).exists()
    # the suite ran with the quick settings on the same model and windows, each table a section of summary.md
    faith = xr.open_dataset(cond / "faithfulness.nc")
    assert faith["method"].values.tolist() == ["input_x_gradient"] and faith["fill"].values.tolist() == ["zero"]
    np.testing.assert_array_equal(faith["percentage"].values, [0.0, 50.0])
    pert = xr.open_dataset(cond / "perturbation.nc")
    np.testing.assert_allclose(float(faith["unperturbed_error"].sel(model="loccnn")),
                               float(pert["mae"].sel(model="loccnn", mode="random", percentage=0.0).mean()), rtol=1e-5)
    for name in ("faithfulness", "sanity", "components"):
        ds = xr.open_dataset(cond / f"{name}.nc")
        assert ds["method"].values.tolist() == ["input_x_gradient"] and ds.attrs["n_boot"] == 200
        assert ds.attrs["models"] == pert.attrs["models"]  # the shared ModelSet: same checkpoint, same digest
        assert f"### {STUDY_EXPERIMENTS[name]}\n\n{(cond / f'{name}.md').read_text()}" in summary
    for name in ("perturbation.png", "faithfulness.png"):
        (cond / name).unlink()
    result = runner.invoke(main, ["figures", str(tmp_path / "rep")])
    assert result.exit_code == 0 and (cond / "tdoa.png").exists()
    assert (cond / "perturbation.png").exists() and (cond / "faithfulness.png").exists()
    result = runner.invoke(main, ["figures", str(tmp_path / "nothing")])
    assert result.exit_code == 2


TINY_BINAURAL = ["--rooms", "anechoic", "--kinds", "white_burst,click_train,pink_burst", "--n-sounds", "6",
                 "--per-sound", "2", "--duration", "0.1", "--no-noise", "--test-fraction", "0.34"]


def test_binaural_simulate_train_and_cues_end_to_end(tmp_path):
    from pathlib import Path

    from xai_loc.models import read_card

    runner = CliRunner()
    data = ["--data", str(tmp_path / "data")]
    result = runner.invoke(main, ["binaural", "simulate", *TINY_BINAURAL, *data, "--split", "test"])
    assert result.exit_code == 0, result.output
    assert re.search(r"cochcnn-anechoic-6x2-[0-9a-f]{10}/test.zarr$", result.output.strip())  # not the defaults
    out = tmp_path / "m.safetensors"
    result = runner.invoke(main, ["binaural", "train", *TINY_BINAURAL, *data, "--epochs", "2", "--batch-size", "4",
                                  "--head", "azimuth", "--out", str(out)])
    assert result.exit_code == 0, result.output
    card = read_card(out)
    assert card["training"]["epochs"] == 2 and card["condition"] == {"rooms": ["anechoic"], "snr": None}
    assert card["metrics"]["test"]["metrics"]["n"] == 4  # 2 held-out sounds x 2 renderings
    assert "azimuth error" in result.output
    result = runner.invoke(main, ["binaural", "cues", *TINY_BINAURAL, *data, "--checkpoint", str(out),
                                  "--tokens", "1", "--no-relevance", "--out", str(tmp_path / "res")])
    assert result.exit_code == 0, result.output
    written = {Path(line).name for line in result.stdout.split()}
    assert written == {"duplex.nc", "cues.png", "cues.pdf", "responses.nc", "hofman.png", "hofman.pdf"}
    duplex = xr.open_dataset(tmp_path / "res" / "duplex.nc")
    assert set(duplex["band"].values) == {"low", "high", "wide"}
    assert xr.open_dataset(tmp_path / "res" / "responses.nc").sizes["example"] == 4
    for name in ("cues.png", "hofman.png"):
        (tmp_path / "res" / name).unlink()
    result = runner.invoke(main, ["figures", str(tmp_path / "res")])  # the probe's figures come from its files
    assert result.exit_code == 0, result.output
    assert {Path(line).name for line in result.stdout.split()} == {"cues.png", "cues.pdf", "hofman.png", "hofman.pdf"}


@pytest.mark.parametrize("rooms, says", [("mars", "'mars'"), ("anechoic,anechoic", "room 'anechoic' is given twice")])
def test_binaural_bad_room_is_one_line_and_writes_nothing(tmp_path, rooms, says):
    result = CliRunner().invoke(main, ["binaural", "simulate", "--rooms", rooms, "--data", str(tmp_path / "d")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and says in result.output
    assert not (tmp_path / "d").exists()


def test_models_list_describes_room_mixtures():
    from xai_loc.models.zoo import describe_condition, describe_test_metrics, describe_training

    assert describe_condition({"rooms": ["anechoic", "office"], "snr": [5.0, 40.0]}) == \
        "rooms anechoic+office, SNR 5 to 40 dB"
    assert describe_condition({"t60": 0.6, "snr": 10.0}) == "T60 0.6 s, SNR 10 dB"
    test = {"metrics": {"accuracy": 0.0682, "n": 3}, "baseline": {"metrics": {"accuracy": 0.002}}}
    text = describe_test_metrics(test, "cochcnn")
    assert text == "accuracy 6.8% (baseline 0.2%)"
    training = {"epochs": 16, "wall_seconds": 2570.0, "device": "cpu", "converged": False,
                "init_from": {"file": "loccnn_t60-0.6_snr-10.safetensors"}}
    assert describe_training(training) == \
        "16 epochs in 43 min on cpu, not converged, fine-tuned from loccnn_t60-0.6_snr-10.safetensors"
    parent = {"file": "loccnn_t60-0.15_snr-25.safetensors", "condition": {"t60": 0.6, "snr": 10.0}}
    assert describe_training({**training, "init_from": parent}).endswith(
        "fine-tuned from loccnn_t60-0.15_snr-25.safetensors (trained on T60 0.6 s, SNR 10 dB)")
    assert describe_training({**training, "config": {"autocast": "bfloat16"}}).startswith(
        "16 epochs in 43 min on cpu (bfloat16 mixed precision), not converged")
    assert describe_training({"note": "imported"}) == ""
    assert describe_training({**training, "best_epoch": 0}).endswith("(no epoch beat it: its weights are kept)")


def test_tfcnn_train_and_probe_end_to_end(tmp_path):
    import xarray as xr

    from xai_loc.models import read_card

    runner = CliRunner()
    scenes = ["--n-train", "40", "--test-per-azimuth", "1", "--data", str(tmp_path / "data")]
    out = tmp_path / "tf.safetensors"
    result = runner.invoke(main, ["binaural", "tfcnn", "train", *scenes, "--epochs", "1", "--batch-size", "8",
                                  "--out", str(out)])
    assert result.exit_code == 0, result.output
    test = read_card(out)["metrics"]["test"]
    assert set(test["by_snr"]) == {"-6", "0", "6"} and test["metrics"]["n"] == 3 * 37
    stores = tmp_path / "data" / "ipd_ild" / "tfcnn-n40-t1-s0"  # finished, sealed zarr stores, nothing else
    assert sorted(p.name for p in stores.iterdir()) == ["test.zarr", "train.zarr"]
    assert (stores / "test.zarr" / ".xai-loc-manifest.json").is_file()
    result = runner.invoke(main, ["binaural", "tfcnn", "probe", *scenes, "--checkpoint", str(out), "--snr", "0",
                                  "--examples", "3", "--out", str(tmp_path / "res")])
    assert result.exit_code == 0, result.output
    profile = xr.open_dataset(tmp_path / "res" / "band_profile.nc")
    assert profile["share"].dims == ("snr", "channel", "band") and list(profile["channel"].values) == ["ipd", "ild"]
    np.testing.assert_allclose(profile["share"].sum(("channel", "band")), 1.0, rtol=1e-9)
    assert profile["share_below_split"].dims == ("snr", "channel")  # kept per SNR, not dropped as attrs
    assert ((profile["share_below_split"] > 0) & (profile["share_below_split"] < 1)).all()
    assert (tmp_path / "res" / "band_profile.png").stat().st_size > 0
    (tmp_path / "res" / "band_profile.png").unlink()
    result = runner.invoke(main, ["figures", str(tmp_path / "res")])
    assert result.exit_code == 0 and (tmp_path / "res" / "band_profile.png").stat().st_size > 0


def test_cuenet_probe_of_the_shipped_model(tmp_path):
    import xarray as xr

    result = CliRunner().invoke(main, ["binaural", "cuenet", "probe", "--train-per-utterance", "1",
                                       "--test-per-utterance", "1", "--data", str(tmp_path / "data"),
                                       "--out", str(tmp_path / "res")])
    assert result.exit_code == 0, result.output
    table = xr.open_dataset(tmp_path / "res" / "cue_reliance.nc")
    assert set(table["cue"].values) == {"itd", "ild", "ic"}
    # attention_mean is float32: the softmax leaves each example's 3 weights summing to 1 within
    # ~4 roundings of 2**-24, and the float32 mean over the 60 examples (a running sum along the
    # example axis) adds up to 60 more; summed in float64 that is 1 within 64 * 2**-24 = 3.8e-6
    total = table["attention_mean"].values.astype(np.float64).sum()
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=(60 + 4) * 2.0**-24)
    assert xr.open_dataset(tmp_path / "res" / "cue_relevance.nc").sizes["example"] == 60  # one per held-out utterance
    assert (tmp_path / "res" / "cue_probe.png").stat().st_size > 0
    (store,) = (tmp_path / "data" / "cue_scenes").iterdir()  # the test split's finished zarr store, nothing else
    assert sorted(p.name for p in store.iterdir()) == ["test.zarr"]


def test_bast_train_and_explain_end_to_end(tmp_path):
    import xarray as xr

    from xai_loc.models import read_card

    runner = CliRunner()
    scenes = ["--n-sounds", "10", "--data", str(tmp_path / "data")]
    out = tmp_path / "b.safetensors"
    result = runner.invoke(main, ["binaural", "bast", "train", *scenes, "--epochs", "1", "--dim", "16", "--depth", "1",
                                  "--heads", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    card = read_card(out)
    assert card["config"]["integration"] == "SUB"
    assert card["metrics"]["test"]["metrics"]["n"] == 2 * 36  # 2 held-out sounds
    result = runner.invoke(main, ["binaural", "bast", "explain", *scenes, "--checkpoint", str(out), "--steps", "4",
                                  "--out", str(tmp_path / "res")])
    assert result.exit_code == 0, result.output
    view = xr.open_dataset(tmp_path / "res" / "relevance_view.nc")
    assert list(view["explainer"].values) == ["attn_lrp", "integrated_gradients", "attention_rollout"]
    assert view["mass"].dims == ("explainer", "pair", "side", "ear", "frequency")
    np.testing.assert_allclose(view["ear_balance"].sel(explainer="attention_rollout"), 0.0, atol=1e-6)  # by design


def test_options_read_booleans_and_points_the_methods_and_targets_take():
    from xai_loc.cli._common import parse_options
    from xai_loc.explain import Explainer
    from xai_loc.models import build_model

    options = parse_options(("abs=False", "n_steps=8", "epsilon=1e-6", "reference=(1.5, 2, 1)", "first_rule=flat",
                             "fill=a,b"))
    assert options == {"abs": False, "n_steps": 8, "epsilon": 1e-6, "reference": (1.5, 2.0, 1.0),
                       "first_rule": "flat", "fill": "a,b"}
    model = build_model("loccnn")
    assert Explainer(model, method="saliency", abs=parse_options(("abs=true",))["abs"]).attrs["method"] == "saliency"
    contrast = Explainer(model, target="contrast", method="saliency", **parse_options(("reference=1.5,2,1",)))
    assert "1.5" in contrast.attrs["target_params"]
