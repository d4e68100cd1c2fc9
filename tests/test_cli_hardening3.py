"""Review fixes of the command line (third round): ``reproduce`` checks every file it will write before any work;
click's usage errors are one line; ``train`` allows what ``TrainConfig`` allows; numbers are ASCII; T60 and SNR
checks take numbers, not text; options named once; no AttnLRP on position models; empty paths refused; no empty
condition headings in ``summary.md``."""
from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import one_line, refused, run_cli

from xai_loc.errors import InputError
from xai_loc.study import STUDY_EXPERIMENTS, reproduce

CONDITION = "t60-0.15_snr-25"
SHIPPED = "--t60", "0.6", "--snr", "10"  # a condition with shipped checkpoints


# --- 1. reproduce: every experiment's files checked before any work --------------------------------------------------
@pytest.mark.usefixtures("no_simulation")
@pytest.mark.parametrize("blocked, skip", [("tdoa.nc", []), ("faithfulness.png", ["tdoa"]),
                                           ("inspection_loccnn.pdf", list(STUDY_EXPERIMENTS))],
                         ids=["result", "figure", "inspection"])
def test_reproduce_refuses_a_folder_in_the_way_of_any_of_its_files_before_any_work(zoo, tmp_path, blocked, skip):
    """Review: with t60-0.6_snr-10/tdoa.nc a folder, reproduce simulated, evaluated and ran perturbation, removed the
    earlier report.html and left study.json unfinished, then failed."""
    out = tmp_path / "rep"
    (out / CONDITION / blocked).mkdir(parents=True)
    (out / "study.json").write_text('{"finished": true}')
    (out / "report.html").write_text("<p>an earlier run's page</p>")
    says = one_line(reproduce, out, quick=True, data_root=tmp_path / "data", pretrained=zoo,
                    conditions=[(0.15, 25.0)], skip=skip, progress=False)
    assert says == (f"cannot write the file {str(out / CONDITION / blocked)!r}: it is a folder; remove it or choose "
                    "another path")
    assert (out / "study.json").read_text() == '{"finished": true}' and (out / "report.html").exists()
    assert not (tmp_path / "data").exists()


def test_the_output_check_leaves_skipped_experiments_alone(tmp_path):
    from xai_loc.study import _check_out

    (tmp_path / CONDITION / "tdoa.nc").mkdir(parents=True)
    _check_out(tmp_path, {CONDITION: "loccnn"}, ["perturbation", "faithfulness", "sanity", "components"])
    with pytest.raises(InputError, match="tdoa.nc'. it is a folder"):
        _check_out(tmp_path, {CONDITION: "loccnn"}, ["tdoa"])


# --- 2. click's usage errors in one line ---------------------------------------------------------------------------
@pytest.mark.parametrize("args, line", [
    (["simulate", *SHIPPED, "--split", "bogus"],
     "Invalid value for '--split': 'bogus' is not one of 'train', 'val', 'test', 'all'."),
    (["simulate", *SHIPPED, "--convention", "foo"],
     "Invalid value for '--convention': 'foo' is not one of 'gpurir', 'pyroomacoustics'."),
    (["simulate", "--t60", "0.6"], "Missing option '--snr'."),
    (["simulate", *SHIPPED, "--zzz", "red"], "No such option '--zzz'."),
    (["simulat"], "No such command 'simulat'. Did you mean 'simulate'?"),
    ([], "Missing command."),
    (["evaluate"], "Missing argument 'CHECKPOINT'."),
], ids=["choice", "convention", "missing-option", "unknown-option", "unknown-command", "no-command",
        "missing-argument"])
def test_a_usage_error_is_one_line(tmp_path, args, line):
    """Review: click's usage errors printed four lines (Usage, Try --help, a blank line, Error)."""
    result = run_cli(args)
    assert result.exit_code == 2 and result.stderr == f"Error: {line}\n" and result.stdout == ""


def test_a_missing_file_argument_is_one_line(tmp_path):
    from xai_loc.models.zoo import pretrained_dir

    result = run_cli(["binaural", "explain", str(pretrained_dir() / "cochcnn_default.safetensors"),
                      str(tmp_path / "none.wav")])
    assert result.exit_code == 2
    assert result.stderr == f"Error: Invalid value for 'INPUTS': Path {str(tmp_path / 'none.wav')!r} does not exist.\n"


@pytest.mark.parametrize("args", [[], ["models"], ["binaural", "tfcnn"]], ids=["root", "models", "tfcnn"])
def test_a_group_prints_its_help_without_a_command_and_one_line_for_an_unknown_one(args):
    from click.testing import CliRunner

    from xai_loc.cli import main

    bare = CliRunner().invoke(main, args)
    assert bare.output.startswith("Usage: ") and "Commands:" in bare.output and "Error" not in bare.output
    helped = CliRunner().invoke(main, [*args, "--help"])
    assert helped.exit_code == 0 and helped.stdout == bare.output
    unknown = CliRunner().invoke(main, [*args, "zzz"])
    assert unknown.exit_code == 2 and unknown.stderr == "Error: No such command 'zzz'.\n" and unknown.stdout == ""


# --- 3. train allows what TrainConfig allows, in its words ---------------------------------------------------------
@pytest.mark.parametrize("flag, values", [("--batch-size", ("0", "1")), ("--early-stop-patience", ("-1", "0")),
                                          ("--lr-factor", ("1.5", "1")), ("--max-epochs", ("-3", "0"))])
def test_train_refuses_a_recipe_value_as_the_library_does(tmp_path, flag, values):
    """Review: --batch-size 0 said ">= 1" but 1 said ">= 2"; --early-stop-patience -1 said ">= 0" but 0 "a positive
    integer"; --lr-factor 1.5 said "> 0 and <= 1" but 1 "in (0, 1)"."""
    from xai_loc.models.training import CHECKS

    field = flag[2:].replace("-", "_")
    for value in values:
        refused(run_cli(["train", "--model", "loccnn", *SHIPPED, "--data", str(tmp_path / "d"), flag, value]),
                f"Error: {flag} {value} is not allowed; use {CHECKS[field][1]}")
    assert not (tmp_path / "d").exists()


def test_train_refuses_a_word_or_a_fraction_for_an_integer(tmp_path):
    refused(run_cli(["train", "--model", "loccnn", *SHIPPED, "--data", str(tmp_path / "d"), "--batch-size", "2.5"]),
            "Error: --batch-size '2.5' is not an integer; use an integer in [2, 1048576]")


# --- 4. TrainConfig checks its device ------------------------------------------------------------------------------
def test_train_config_refuses_a_device_it_cannot_use():
    from xai_loc.models import TrainConfig

    assert TrainConfig(device="cpu").device == "cpu"
    assert one_line(TrainConfig, device="gpu") == "unknown device 'gpu'; allowed: cpu, cuda, cuda:N"
    assert one_line(TrainConfig, device="cuda:01") == "unknown device 'cuda:01'; allowed: cpu, cuda, cuda:N"
    if not torch.cuda.is_available():
        assert one_line(TrainConfig, device="cuda") == (
            "device 'cuda' requested but CUDA is not available to this process; use 'cpu'")


# --- 5. numbers are ASCII digits, as integers are ------------------------------------------------------------------
def test_numbers_are_read_as_ascii_digits():
    from xai_loc.cli._common import csv_list
    from xai_loc.cli_params import parse_number

    assert [parse_number(t) for t in ("10", " -1.5e-3 ", ".5", "5.", "+2E2")] == [10.0, -0.0015, 0.5, 5.0, 200.0]
    assert math.isnan(parse_number("nan")) and parse_number("-Infinity") == -math.inf  # refused by each range
    for text in ("1_0", "0_05", "\u0661\u0660", "1e", "", "0x10", "\u0131nf"):
        with pytest.raises(ValueError):
            parse_number(text)
    assert csv_list("0, 10,20", float, "--percentages") == [0.0, 10.0, 20.0]
    assert one_line(csv_list, "0,1_0", float, "--percentages") == \
        "--percentages '0,1_0' is not a comma-separated list of float values"


@pytest.mark.parametrize("args, line", [
    (["simulate", "--t60", "0.3", "--snr", "1_0"], "--snr: SNR='1_0' is not a number; give dB in [-60, 200]"),
    (["simulate", "--t60", "\u0660.3", "--snr", "10"],
     "--t60: T60='\u0660.3' is not a number; give seconds in (0, 10.0]"),
    (["components", *SHIPPED, "--early-end", "0_05"], "--early-end '0_05' is not a number; use a finite number >= 0 "
                                                       "and <= 1"),
    (["train", "--model", "loccnn", *SHIPPED, "--lr", "1_0"], "--lr '1_0' is not a number; use a finite number > 0"),
    (["perturb", *SHIPPED, "--percentages", "0,1_0"],
     "--percentages '0,1_0' is not a comma-separated list of float values"),
], ids=["snr", "t60", "early-end", "lr", "percentages"])
def test_a_number_with_underscores_or_other_digits_is_refused(tmp_path, args, line):
    """Review: --snr 1_0 simulated at 10 dB and --early-end 0_05 took 5 s, while integers refuse 1_6."""
    result = run_cli([*args, "--data", str(tmp_path / "d")])
    assert result.exit_code == 2 and result.stderr == f"Error: {line}\n"
    assert not (tmp_path / "d").exists()


# --- 6. T60 and SNR checks take numbers; the command line reads its text first -------------------------------------
def test_t60_and_snr_checks_refuse_text():
    from xai_loc.acoustics.room import check_snr, check_t60
    from xai_loc.cli_params import SNR, T60

    assert one_line(check_snr, "10") == "SNR='10' is not a number; give dB in [-60, 200]"
    assert one_line(check_t60, "0.3") == "T60='0.3' is not a number; give seconds in (0, 10.0]"
    assert one_line(check_t60, float("nan")) == "T60=nan s is not allowed; give seconds in (0, 10.0]"
    assert check_t60(0.3) == 0.3 and check_snr(10) == 10.0 and type(check_snr(10)) is float
    assert T60.convert("0.3", None, None) == 0.3 and SNR.convert(" -5 ", None, None) == -5.0
    assert one_line(SNR.convert, "nan", None, None) == "value: SNR=nan dB is not allowed; give dB in [-60, 200]"


# --- 7, 8. --methods and --fills named once; no AttnLRP on localizers of positions ---------------------------------
ALLOWED = ("lrp, saliency, input_x_gradient, integrated_gradients, deeplift, gradient_shap, occlusion "
           "(LRP as lrp:COMPOSITE)")


@pytest.mark.parametrize("args, line", [
    (["faithfulness", *SHIPPED, "--methods", ""], "--methods '' is empty; give at least one comma-separated value"),
    (["sanity", *SHIPPED, "--methods", ","], "--methods ',' is empty; give at least one comma-separated value"),
    (["faithfulness", *SHIPPED, "--fills", "foo"], "--fills 'foo' is unknown; allowed: zero, noise, road"),
    (["faithfulness", *SHIPPED, "--fills", ""], "--fills '' is empty; give at least one comma-separated value"),
    (["faithfulness", *SHIPPED, "--methods", "saliency,attn_lrp"],
     f"--methods: method 'attn_lrp' is for transformers, not localizers of source positions; allowed: {ALLOWED}"),
    (["sanity", *SHIPPED, "--methods", "attn_lrp"],
     f"--methods: method 'attn_lrp' is for transformers, not localizers of source positions; allowed: {ALLOWED}"),
    (["components", *SHIPPED, "--methods", "attn_lrp"],
     f"--methods: method 'attn_lrp' is for transformers, not localizers of source positions; allowed: {ALLOWED}"),
    (["faithfulness", *SHIPPED, "--methods", "magic"], f"--methods: method 'magic' is unknown; allowed: {ALLOWED}"),
], ids=["methods-empty", "methods-comma", "fills-unknown", "fills-empty", "faithfulness-attn-lrp",
        "sanity-attn-lrp", "components-attn-lrp", "methods-unknown"])
def test_methods_and_fills_are_named_once_and_attn_lrp_is_for_transformers(tmp_path, args, line):
    """Review: "--methods: --methods '' is empty", "--fills: fills 'foo' is unknown"; faithfulness and sanity took
    attn_lrp on LocCNN (input x gradient under another label there) while explain refused it."""
    result = run_cli([*args, "--data", str(tmp_path / "d")])
    assert result.exit_code == 2 and result.stderr == f"Error: {line}\n"
    assert not (tmp_path / "d").exists()


def test_attn_lrp_stays_a_method_of_other_families():
    from xai_loc.cli.multichannel import _method_specs

    assert _method_specs("attn_lrp,saliency", (), positions=False)["explanations"] == \
        [("attn_lrp", "none"), ("saliency", "none")]
    assert one_line(_method_specs, "magic", (), positions=False).startswith(
        "--methods: method 'magic' is unknown; allowed: lrp, saliency, input_x_gradient, integrated_gradients, "
        "deeplift, gradient_shap, occlusion, attn_lrp")


# --- 9. empty paths; no empty headings ------------------------------------------------------------------------------
@pytest.mark.parametrize("args, line", [
    (["evaluate", "{ckpt}", "--json", ""], "--json '' is not allowed; give a file name"),
    (["audit", ""], "MODEL '' is not allowed; give a checkpoint file or an architecture name"),
    (["figures", ""], "results '' is not allowed; give a folder path ('.' for the current folder)"),
    (["explain", "--checkpoint", ""], "--checkpoint '' is not allowed; give a file path"),
    (["models", "import", "--arch", "loccnn", *SHIPPED, "{ckpt}", "--out", ""],
     "--out '' is not allowed; give a file name"),
], ids=["evaluate-json", "audit", "figures", "explain-checkpoint", "import-out"])
def test_an_empty_path_is_refused_as_given(zoo, tmp_path, monkeypatch, args, line):
    """Review: --json "" said "--json '.' is a folder", audit "" said "checkpoint . is a folder"."""
    monkeypatch.chdir(tmp_path)
    ckpt = str(zoo / f"loccnn_{CONDITION}.safetensors")
    result = run_cli([a.format(ckpt=ckpt) for a in args])
    assert result.exit_code == 2 and result.stderr == f"Error: {line}\n"
    assert list(tmp_path.iterdir()) == []


def test_a_study_without_experiments_has_no_condition_headings(zoo, tmp_path, monkeypatch):
    """Review: --skip of every experiment wrote summary.md with an empty "## T60 ..." heading per condition."""
    monkeypatch.setattr("xai_loc.study.QUICK_SOURCES", 1)
    summary = reproduce(tmp_path / "rep", quick=True, data_root=tmp_path / "data", pretrained=zoo,
                        conditions=[(0.15, 25.0)], skip=list(STUDY_EXPERIMENTS), progress=False).read_text()
    assert "## T60" not in summary and "| 0.15 | 25 | loccnn |" in summary
    assert json.loads((tmp_path / "rep" / "study.json").read_text())["finished"]
