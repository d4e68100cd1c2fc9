"""Regression tests of a review of the command line: ``--option`` keys that a flag sets, checks that ran after
simulating or rendering, stale files beside a newer result, the window explorer's store, warnings and messages
that did not name the option, shared option definitions, registry choices and the default results folder."""
import json
import types
from pathlib import Path

import pytest
from helpers import refused, run_cli

from xai_loc.cli import main
from xai_loc.errors import InputError

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
COCHCNN = str(PRETRAINED / "cochcnn_default.safetensors")
CONDITION = "t60-0.15_snr-25"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One simulated test source of (0.15 s, 25 dB) under ``root``, and a LocCNN checkpoint of that condition
    named ``mine`` (and, in ``zoo``, under the shipped name)."""
    import torch

    from xai_loc.data.scene import paper_scene
    from xai_loc.data.store import simulate_dataset
    from xai_loc.models import build_model, save_checkpoint

    base = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(1)
    model = build_model("loccnn")
    card = {"condition": {"t60": 0.15, "snr": 25.0}}
    checkpoint = save_checkpoint(model, base / "mine.safetensors", card)
    save_checkpoint(model, base / "zoo" / f"loccnn_{CONDITION}.safetensors", card)
    store = simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=base / "data", n_sources=1, progress=False)
    return types.SimpleNamespace(root=base / "data", store=store, checkpoint=str(checkpoint), zoo=base / "zoo")


@pytest.fixture(autouse=True)
def _shipped(monkeypatch):
    """The repository's checkpoints are the shipped ones, wherever the package is imported from."""
    monkeypatch.setenv("XAI_LOC_PRETRAINED", str(PRETRAINED))








@pytest.fixture
def no_work(monkeypatch):
    """Simulating or rendering test data fails the test: the command had to refuse its input first."""
    def work(*args, **kwargs):
        raise AssertionError("the command started work before refusing its input")

    monkeypatch.setattr("xai_loc.data.store.simulate_dataset", work)
    monkeypatch.setattr("xai_loc.experiments.scored.family_test_store", work)


@pytest.fixture
def recorded_run(monkeypatch):
    """The experiment is not run: the folder it would write into is recorded."""
    folders = []

    def run(experiment, models, store, folder, **options):
        folders.append(Path(folder))
        return types.SimpleNamespace(tables={"markdown": "(not run)"})

    monkeypatch.setattr("xai_loc.study.run_experiment", run)
    return folders


# ------------------------------------------------------------------------------------------- 1: --option keys
@pytest.mark.usefixtures("no_work")
@pytest.mark.parametrize("args, says", [
    (["perturb", "--option", "method=saliency"], "option 'method' is set by --method; use that"),
    (["perturb", "--option", "batch_size=4"], "option 'batch_size' is set by --batch-size"),
    (["perturb", "--option", "device=cpu"], "option 'device' is set by --device"),
    (["perturb", "--option", "target=x"], "option 'target' is set by --target"),
    (["perturb", "--option", "mean_input=1"], "option 'mean_input' is set by the command itself; leave it out"),
    (["explain", "--option", "method=saliency"], "option 'method' is set by --method"),
    (["tdoa", "--option", "seed=1"], "option 'seed' is set by --seed"),
    (["audit", "loccnn", "--option", "seed=1"], "option 'seed' is set by --seed"),
    (["audit", "loccnn", "--option", "composite=epsilon"], "option 'composite' is set by --composite"),
    (["binaural", "cues", "--no-behaviour", "--option", "seed=1"], "option 'seed' is set by --probe-seed"),
    (["tdoa", "--first-rule", "flat", "--option", "first_rule=gamma"],
     "--first-rule flat and --option first_rule=gamma differ"),
])
def test_an_option_that_a_flag_sets_is_one_line_before_any_work(tiny, tmp_path, args, says):
    """Review: such an --option crashed with a TypeError traceback (exit code 1), tdoa's after simulating."""
    if args[0] in ("perturb", "explain", "tdoa"):
        args = [*args, "--checkpoint", tiny.checkpoint, "--data", str(tmp_path / "data")]
    if args[0] in ("perturb", "tdoa", "binaural"):
        args = [*args, "--out", str(tmp_path / "out")]
    refused(run_cli(args), says)
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()


def test_tdoa_takes_first_rule_as_an_option_and_leaves_no_stale_srp_file(tiny, tmp_path):
    """Review: 'tdoa --option first_rule=flat', the example of its own help, crashed after simulating; after
    'tdoa --no-srp' the srp.* files of an earlier run stayed, and the report showed srp.png beside a result
    without SRP."""
    from xai_loc.experiments.tdoa_probe import open_tdoa_results
    from xai_loc.report.collect import collect_sections

    out = tmp_path / "res"
    out.mkdir()
    for name in ("srp.csv", "srp.tex", "srp.png", "srp.pdf"):
        (out / name).write_bytes(b"an earlier run's")
    result = run_cli(["tdoa", "--checkpoint", tiny.checkpoint, "--sources", "1", "--data", str(tiny.root), "--out",
                   str(out), "--no-srp", "--no-randomized", "--pairs", "7-8", "--option", "first_rule=flat"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert (out / "tdoa.nc").is_file() and (out / "tdoa.png").is_file()
    assert not any((out / name).exists() for name in ("srp.csv", "srp.tex", "srp.png", "srp.pdf"))
    info = json.loads(open_tdoa_results(out).attrs["models"])["loccnn-mine"]
    assert json.loads(info["composite_params"])["first_rule"] == "flat"
    # a folder written before the fix (or by hand): only the figures its results draw, and the inspection figure
    (out / "srp.png").write_bytes((out / "tdoa.png").read_bytes())
    (out / "inspection_loccnn.png").write_bytes((out / "tdoa.png").read_bytes())
    (section,) = collect_sections(out)
    assert set(section.extra_figures) == {"inspection_loccnn.png"}
    assert set(section.entries["tdoa"].figures) == {"tdoa.png"}


# ------------------------------------------------------------------------------------------- 2: reproduce --data
def test_reproduce_refuses_a_data_store_of_other_data_before_it_writes_anything(tiny, tmp_path, monkeypatch):
    """Review: reproduce wrote study.json and removed the earlier report.html, then the simulation refused the
    store."""
    from xai_loc.data.scene import paper_scene
    from xai_loc.data.store import simulate_dataset
    from xai_loc.study import reproduce

    other = tmp_path / "data"
    store = simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=other, n_sources=1, seed=1, progress=False)
    out = tmp_path / "rep"
    out.mkdir()
    (out / "study.json").write_text('{"finished": true}')
    (out / "report.html").write_text("<p>an earlier run's page</p>")
    monkeypatch.setattr("xai_loc.study.QUICK_SOURCES", 1)
    with pytest.raises(InputError) as err:
        reproduce(out, quick=True, data_root=other, pretrained=tiny.zoo, conditions=[(0.15, 25.0)], progress=False)
    assert str(err.value).startswith(f"{store} holds a dataset with a different configuration")
    assert (out / "study.json").read_text() == '{"finished": true}'
    assert (out / "report.html").read_text() == "<p>an earlier run's page</p>"
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "study.json"]


def test_reproduce_shows_the_progress_of_its_evaluation(tiny, tmp_path, monkeypatch):
    """Review: the evaluation on the whole test split ran without a progress bar."""
    from xai_loc.study import STUDY_EXPERIMENTS, reproduce

    seen = []

    class Stop(Exception):
        pass

    def evaluate(model, store, batch_size=100, device="cpu", progress=False, attrs=None):
        seen.append(progress)
        raise Stop

    monkeypatch.setattr("xai_loc.models.evaluation.evaluate", evaluate)
    monkeypatch.setattr("xai_loc.study.QUICK_SOURCES", 1)
    with pytest.raises(Stop):
        reproduce(tmp_path / "rep", quick=True, data_root=tiny.root, pretrained=tiny.zoo, conditions=[(0.15, 25.0)],
                  progress=True, skip=list(STUDY_EXPERIMENTS))
    assert seen == [True]


# ------------------------------------------------------------------------------- 3: a binaural checkpoint's split
@pytest.mark.usefixtures("no_work")
@pytest.mark.parametrize("command", ["faithfulness", "sanity"])
@pytest.mark.parametrize("args, says", [
    (["--target", "x"], "target 'x' does not fit"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "give one of --scheduler and --workers"),
], ids=["target", "cluster"])
def test_a_binaural_checkpoint_is_checked_before_its_test_split_is_rendered(tmp_path, command, args, says):
    """Review: faithfulness and sanity rendered the whole held-out split (1760 examples) before checking --target
    and the --workers/--scheduler conflict."""
    refused(run_cli([command, "--checkpoint", COCHCNN, *args, "--data", str(tmp_path / "data")]), says)
    assert not (tmp_path / "data").exists()


# ----------------------------------------------------------------------------------- 4: explain --out of others
def test_explain_refuses_an_out_store_of_another_method_before_simulating(tiny, tmp_path, monkeypatch):
    """Review: explain --out X.zarr holding relevance of another method was refused only after simulating."""
    from xai_loc.explain import explain_store

    out = tmp_path / "rel.zarr"
    explain_store(tiny.checkpoint, tiny.store, out, method="saliency", progress=False)
    args = ["explain", "--checkpoint", tiny.checkpoint, "--sources", "1", "--data", str(tiny.root), "--out", str(out)]
    result = run_cli([*args, "--method", "saliency"])  # the same settings: the store is the answer
    assert result.exit_code == 0 and result.stdout.strip() == str(out), (result.output, result.exception)
    monkeypatch.setattr("xai_loc.data.store.simulate_dataset", lambda *a, **k: pytest.fail("simulated first"))
    refused(run_cli([*args, "--method", "lrp"]), f"--out {out} holds relevance of other method ('saliency', not 'lrp')")
    refused(run_cli([*args, "--method", "saliency", "--target", "x"]), "holds relevance of other target")


# ------------------------------------------------------------------------------------------ 6: the explorer
def test_the_explorer_reads_the_method_of_the_result_that_records_the_data(tmp_path):
    """Review: the data path came from tdoa.nc, the method from the first result with one (perturbation.nc)."""
    from xai_loc.report.explorer import _expected_store, find_relevance_stores

    data = tmp_path / "test-n2.zarr"
    digest = "10e2b5bf084bcd57"
    models = json.dumps({"loccnn": {"model": "loccnn", "model_digest": digest}})

    def entry(name, **attrs):
        return types.SimpleNamespace(name=name, ds=types.SimpleNamespace(attrs={"models": models, **attrs}))

    perturbation = entry("perturbation", method="saliency", composite="none", target="truth")
    tdoa = entry("tdoa", data=str(data), method="lrp", composite="paper", target="truth")
    info = {"model": "loccnn", "model_digest": digest, "method": "lrp", "composite": "paper", "target": "truth",
            "options": {}}
    _expected_store(data, info).mkdir(parents=True)
    stores, reason = find_relevance_stores([perturbation, tdoa])
    assert reason == "" and stores == {"loccnn": _expected_store(data, info)}


# --------------------------------------------------------------------------- 7: models of another condition
def test_shipped_models_scored_on_a_store_of_another_condition_are_warned_about(tiny, tmp_path, recorded_run):
    """Review: --store with --t60/--snr and no --checkpoint scored other-condition models without the warning that
    evaluate and explain print."""
    result = run_cli(["faithfulness", "--store", str(tiny.store), "--t60", "0.6", "--snr", "10", "--model", "loccnn",
                   "--out", str(tmp_path / "res")])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "was trained at T60 0.6 s, SNR 10 dB; running it on T60 0.15 s, SNR 25 dB" in result.stderr
    result = run_cli(["faithfulness", "--store", str(tiny.store), "--model", "loccnn", "--out", str(tmp_path / "res")])
    assert result.exit_code == 0 and "warning" not in result.stderr  # the store's own condition


# ------------------------------------------------------------------------------- 8: help and naming the option
def test_the_checkpoint_folder_variable_is_documented_and_named(tmp_path, monkeypatch):
    """Review: XAI_LOC_PRETRAINED was in no --help, reproduce --pretrained said the shipped folder was its default
    even with the variable set, and a bad value did not name the variable."""
    assert "XAI_LOC_PRETRAINED" in run_cli(["--help"]).stdout
    assert "$XAI_LOC_PRETRAINED" in run_cli(["reproduce", "--help"], terminal_width=200).stdout
    monkeypatch.setenv("XAI_LOC_PRETRAINED", str(tmp_path / "missing"))
    refused(run_cli(["reproduce", "--quick", "--out", str(tmp_path / "rep")]), "XAI_LOC_PRETRAINED",
             str(tmp_path / "missing"))
    assert not (tmp_path / "rep").exists()


@pytest.mark.usefixtures("no_work")
@pytest.mark.parametrize("args, says", [
    (["simulate", "--t60", "99", "--snr", "10"], "--t60: T60=99.0 s is not allowed"),
    (["simulate", "--t60", "0.3", "--snr", "999"], "--snr: SNR=999 dB is not allowed"),
    (["perturb", "--t60", "nan", "--snr", "10"], "--t60"),
    (["faithfulness", "--t60", "0.15", "--snr", "25", "--fills", "zero,bogus"], "--fills 'bogus' is unknown"),
    (["faithfulness", "--t60", "0.15", "--snr", "25", "--methods", "bogus"], "--methods: method 'bogus' is unknown"),
    (["perturb", "--t60", "0.15", "--snr", "25", "--fill", "bogus"], "--fill 'bogus' is unknown; allowed: zero, noise"),
    (["explain", "--model", "nope"], "--model 'nope' is not allowed; use one of loccnn, samplecnn"),
    (["train", "--model", "loccnn", "--t60", "0.15", "--snr", "25", "--batch-size", "1"],
     "--batch-size 1 is not allowed; use an integer in [2, 1048576]"),
    (["train", "--model", "loccnn", "--t60", "0.15", "--snr", "25", "--early-stop-patience", "0"],
     "--early-stop-patience 0 is not allowed; use a positive integer"),
], ids=["t60", "snr", "t60-nan", "fills", "methods", "fill", "model", "batch-size", "patience"])
def test_a_bad_value_is_named_by_its_option(tmp_path, args, says):
    """Review: the --t60/--snr, --fills and --methods messages did not name the option; --fill was checked twice
    (a click choice beside the registry); train took --batch-size 1 and --early-stop-patience 0, then refused
    batch_size=1."""
    refused(run_cli([*args, "--data", str(tmp_path / "data")]), says)
    assert not (tmp_path / "data").exists()


def test_listen_names_the_option_of_a_bad_list(tmp_path):
    (tmp_path / "rel").mkdir()
    refused(run_cli(["listen", str(tmp_path / "rel"), "--out", str(tmp_path / "wav"), "--mics", "0,a"]),
             "--mics '0,a' is not allowed")


# ---------------------------------------------------------------------------- 9, 10: shared definitions, registries
def test_options_are_defined_once_and_alike_in_every_command():
    """Review: --device was written 7 times, --data 5 (plus the binaural copies), --sources 4; explain declared the
    condition options again; the cluster options lived in one family's module."""
    from xai_loc.cli import _common
    from xai_loc.models.zoo import PRETRAINED_ENV

    assert _common.PRETRAINED_ENV == PRETRAINED_ENV

    def commands(group, path=()):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                yield from commands(command, (*path, name))
            else:
                yield (*path, name), command

    seen = set()
    for path, command in commands(main):
        for param in command.params:
            if param.name == "device":
                assert param.help.startswith("cpu, cuda or cuda:N") and param.default == "cpu", path
            elif param.name == "data" and "--data" in param.opts:
                assert param.envvar == "XAI_LOC_DATA" and param.help.startswith("Data root"), path
            elif param.name == "n_sources":
                assert "seeded spread" in param.help, path
            else:
                continue
            seen.add(param.name)
    assert seen == {"device", "data", "n_sources"}
    explain = main.commands["explain"]
    assert next(p for p in explain.params if p.name == "arch").default == "samplecnn"


def test_a_plugin_localizer_can_be_chosen_with_model(monkeypatch, tmp_path):
    """Review: --model offered a fixed list; a plug-in localizer could not be chosen."""
    from xai_loc.models import MODELS, LocCNN

    plugin = type("PlugIn", (LocCNN,), {"arch_name": "hardening_plugin", "output_kind": "position"})
    monkeypatch.setitem(MODELS, "hardening_plugin", plugin)
    refused(run_cli(["explain", "--model", "hardening_plugin", "--t60", "0.15", "--snr", "25",
                   "--data", str(tmp_path / "data")]), "no shipped checkpoint hardening_plugin_t60-0.15_snr-25")
    assert "hardening_plugin" in run_cli(["explain", "--model", "nope"]).stderr  # the registry's names are listed


# ------------------------------------------------------------------------------------ 12: default results folder
def test_the_default_results_folder_of_a_checkpoint_is_its_own(tiny, tmp_path, monkeypatch, recorded_run):
    """Review: perturb --checkpoint wrote into xai-loc-results/<condition>, over the shipped models' results."""
    monkeypatch.chdir(tmp_path)
    data = ["--sources", "1", "--data", str(tiny.root)]
    for args in (["--checkpoint", tiny.checkpoint], ["--t60", "0.15", "--snr", "25", "--model", "loccnn"]):
        result = run_cli(["perturb", *args, *data])
        assert result.exit_code == 0, (result.output, result.exception)
    assert recorded_run == [Path("xai-loc-results", "loccnn-mine", CONDITION), Path("xai-loc-results", CONDITION)]


def test_components_renders_a_split_of_your_own_speech_from_its_folder(tiny, tmp_path, monkeypatch):
    """--speech reaches both the simulation of the test split and the components' rendering (a store simulated
    from a speech folder could not be split into components from the CLI)."""
    import numpy as np
    import soundfile as sf

    speech = tmp_path / "speech"
    speech.mkdir()
    for i in range(2):
        sf.write(speech / f"u{i}.wav", 0.1 * np.sin(np.arange(16000) * (0.1 + 0.05 * i)).astype(np.float32), 16000)
    seen = {}

    def simulate(*args, corpus=None, **kwargs):
        seen["simulated"] = corpus
        return tiny.store

    def run(experiment, models, store, folder, **options):
        seen["rendered"] = options.get("corpus")
        return types.SimpleNamespace(tables={"markdown": "(not run)"})

    monkeypatch.setattr("xai_loc.data.store.simulate_dataset", simulate)
    monkeypatch.setattr("xai_loc.study.run_experiment", run)
    result = run_cli(["components", "--t60", "0.15", "--snr", "25", "--model", "loccnn", "--sources", "1",
                   "--speech", str(speech), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert seen["simulated"] is seen["rendered"] and list(seen["rendered"].ids) == ["u0.wav", "u1.wav"]


@pytest.mark.usefixtures("no_work")
@pytest.mark.parametrize("command", ["perturb", "tdoa", "components"])
def test_commands_of_position_localizers_name_a_binaural_checkpoint_as_such(tmp_path, command):
    """Only faithfulness and sanity score a binaural checkpoint on its own split; the others say what they take
    (a review found them refusing its target instead)."""
    refused(run_cli([command, "--checkpoint", COCHCNN, "--sources", "1", "--out", str(tmp_path / "out")]),
             "this command takes localizers of source positions")
    assert not (tmp_path / "out").exists()
