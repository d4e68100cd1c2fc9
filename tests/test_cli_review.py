"""Regression tests of a review of the command line: ``--option`` names that the library passes itself, a
binaural cue probe that rendered a whole test split for a model that could not take it and wrote half its
results, click trains without a click, audit's composite and BatchNorm-filled pads, output files inside a data
store, ``train --sources 1``, ``models import`` overwriting its input, and help texts that said other things
than the code does."""
import hashlib
import sys
import types
from pathlib import Path

import click
import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import refused, run_cli

import xai_loc.explain.binaural  # noqa: F401 - patched below through sys.modules
from xai_loc.cli import main
from xai_loc.errors import InputError

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
COCHCNN = str(PRETRAINED / "cochcnn_default.safetensors")


@pytest.fixture(autouse=True)
def _shipped(monkeypatch):
    """The repository's checkpoints are the shipped ones, wherever the package is imported from."""
    monkeypatch.setenv("XAI_LOC_PRETRAINED", str(PRETRAINED))








def _walk(group: click.Group, path=()):
    """Every group and command below ``group``, by its words."""
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _walk(command, (*path, name))


# ------------------------------------------------------------------ 1: --option names the library passes itself
@pytest.fixture
def no_work(monkeypatch):
    """Data simulation, scene rendering and the explanations fail the test: an --option must be refused first."""
    def work(*args, **kwargs):
        raise AssertionError("the command started work before refusing its --option")

    for target in ("xai_loc.data.store.simulate_dataset", "xai_loc.experiments.scored.family_test_store",
                   "xai_loc.data.binaural_store.simulate_binaural", "xai_loc.data.ipd_ild_scenes.render_scenes",
                   "xai_loc.features.binaural_cues.simulate_cue_scenes", "xai_loc.experiments.cues.run_duplex_probe"):
        monkeypatch.setattr(target, work)
    monkeypatch.setattr(sys.modules["xai_loc.explain.binaural"], "explain_ears", work)  # xai_loc.explain: a function


#: Names of the parameters that the library functions behind the commands take or pass themselves (a
#: composite's factory, ModelSet.explainer, explain_arrays, the family explainers, audit).
LIBRARY_NAMES = ("name", "levels", "truth", "waveforms", "inputs", "cues", "input", "positions", "labels", "example")


@pytest.mark.usefixtures("no_work")
def test_every_option_name_the_explanation_does_not_take_is_one_line_before_any_work(tmp_path):
    """Review: such names crashed with a TypeError traceback (exit code 1), e.g. 'explain --option name=1'
    (ModelSet.explainer() got multiple values for argument 'name'), 'binaural explain --option levels=waveform',
    'binaural cues --option inputs=1', 'binaural cuenet probe --option cues=1'."""
    x48k, x16k = tmp_path / "x48k.wav", tmp_path / "x16k.wav"
    sf.write(x48k, np.random.default_rng(0).standard_normal((12000, 2)) * 0.05, 48000)
    sf.write(x16k, np.random.default_rng(0).standard_normal((16000, 2)) * 0.05, 16000)
    data, out = ["--data", str(tmp_path / "data")], ["--out", str(tmp_path / "out")]
    condition = ["--t60", "0.6", "--snr", "10", "--model", "loccnn", "--sources", "1", *data]
    base = {
        ("explain",): [*condition],
        ("perturb",): [*condition, *out],
        ("tdoa",): [*condition, *out],
        ("audit",): ["loccnn"],
        ("binaural", "explain"): [COCHCNN, str(x48k), *out],
        ("binaural", "cues"): [*data, *out],
        ("binaural", "tfcnn", "probe"): [*data, *out],
        ("binaural", "cuenet", "probe"): [*data, *out],
    }
    taking = {words for words, command in _walk(main) if any(p.name == "options" for p in command.params)}
    assert taking == set(base), "a command takes --option: add it here"
    for words, args in base.items():
        for name in LIBRARY_NAMES:
            says = "is set by" if name == "inputs" and words == ("binaural", "explain") else "is not allowed for"
            refused(run_cli([*words, *args, "--option", f"{name}=1"]), f"option {name!r} {says}")
    tfcnn = [str(PRETRAINED / "tfcnn_default.safetensors"), str(x16k), *out]
    refused(run_cli(["binaural", "explain", *tfcnn, "--option", "levels=waveform"]),
            "allowed: conv_rule, epsilon, front_epsilon, gamma")
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()


def test_the_options_of_the_method_composite_and_target_still_pass(tmp_path, monkeypatch):
    """What the explanation takes is passed on: composite, method and target options alike."""
    seen, shown = [], []
    monkeypatch.setattr(sys.modules["xai_loc.explain.binaural"], "explain_ears",
                        lambda model, waves, progress, **kw: seen.append(kw) or shown.append(progress) or {})
    sf.write(tmp_path / "x.wav", np.zeros((12000, 2)), 48000)
    args = ["binaural", "explain", COCHCNN, str(tmp_path / "x.wav"), "--out", str(tmp_path / "out")]
    assert run_cli([*args, "--option", "conv_rule=epsilon", "--option", "cls=3"]).exit_code == 0
    ig = ["--method", "integrated_gradients", "--option", "n_steps=4", "--batch-size", "2"]
    assert run_cli([*args, *ig]).exit_code == 0
    assert seen == [{"conv_rule": "epsilon", "cls": 3},
                    {"method": "integrated_gradients", "n_steps": 4, "batch_size": 2}]
    assert shown == [True, True]  # the command shows progress
    refused(run_cli([*args, "--option", "batch_size=2"]), "option 'batch_size' is set by --batch-size")
    refused(run_cli([*args, "--method", "saliency", "--option", "conv_rule=epsilon"]), "option 'conv_rule' is not "
             "allowed for method 'saliency' and the model's targets; allowed: abs, cls, versus")


# --------------------------------------------------- 2: binaural cues on data the model cannot take; all or none
def test_cues_refuses_a_duration_the_model_does_not_take_before_the_probe(tmp_path, monkeypatch):
    """Review: '--duration 0.5' ran the probe and rendered 1760 scenes (about 2 minutes), then failed, leaving a new
    duplex.nc beside older results."""
    def work(*args, **kwargs):
        raise AssertionError("the probe ran or scenes were rendered before the refusal")

    monkeypatch.setattr("xai_loc.experiments.cues.run_duplex_probe", work)
    monkeypatch.setattr("xai_loc.data.binaural_store.simulate_binaural", work)
    result = run_cli(["binaural", "cues", "--tokens", "1", "--no-relevance", "--duration", "0.5", "--rooms", "anechoic",
                   "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    refused(result, "24000 samples per ear at 48000 Hz", "takes 12000 at 48000 Hz; give --duration 0.25")
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()


def test_cues_writes_the_probe_only_when_the_behaviour_succeeded_too(tmp_path, monkeypatch):
    """The probe's files waited for nothing: a failure of the behaviour part left them beside an older responses.nc."""
    import xarray as xr

    from xai_loc.io import write_dataset_atomic

    def probe(model, out_dir, **kwargs):
        return {"duplex": write_dataset_atomic(xr.Dataset({"v": ("x", [1.0])}), Path(out_dir) / "duplex.nc")}

    def behaviour(*args, **kwargs):
        raise InputError("the store is damaged")

    monkeypatch.setattr("xai_loc.experiments.cues.run_duplex_probe", probe)
    monkeypatch.setattr("xai_loc.data.binaural_store.simulate_binaural", lambda *a, **k: "store")
    monkeypatch.setattr("xai_loc.experiments.cues.run_behaviour", behaviour)
    out = tmp_path / "out"
    out.mkdir()
    (out / "responses.nc").write_bytes(b"an earlier run's")
    refused(run_cli(["binaural", "cues", "--no-relevance", "--data", str(tmp_path / "d"), "--out", str(out)]),
             "the store is damaged")
    assert sorted(p.name for p in out.iterdir()) == ["responses.nc"]


# ---------------------------------------------------------------------- 3: a click train holds at least one click
def test_a_short_click_train_holds_one_click_and_the_default_ones_keep_their_samples():
    """Review: a first onset drawn in [0, period) with rates down to 4 Hz left clips shorter than 0.25 s silent
    (seeds 25, 75, 91, 110, 124 at 0.1 s), and 'binaural simulate --duration 0.1' failed midway."""
    from xai_loc.acoustics.binaural import synthesize

    for seed in (25, 75, 91, 110, 124, 188):  # silent before: now one click of 0.1 ms (5 samples at 48 kHz)
        x = synthesize("click_train", 48000, 0.1, seed=seed)
        assert np.count_nonzero(x) == 5 and np.ptp(np.flatnonzero(x)) == 4 and x.max() == 1.0
    assert all(synthesize("click_train", 48000, d, seed=s).any() for d in (0.05, 0.1, 0.2) for s in range(300))
    # the sounds of the shipped models' data (0.25 s and 1 s at 48 kHz, the cue scenes' 0.5 s at 44.1 kHz, the
    # TF-CNN's 1 s at 16 kHz) are those of the code before the fix, bit for bit
    pinned = {(48000, 0.25): "d2563c765aa90ac7fd6c90fe038fb9b5df17a4e3d2fa21ec02fd7ee2b837a7ef",
              (48000, 1.0): "f229c96694bb85113f42bf8009c3b5c791fd829b855e8b883d6603ac32b2e0ba",
              (44100, 0.5): "d68c0d4f15ed49e06faae14e5ab57758c4c7731af416e46fa153738cc5535b7e",
              (16000, 1.0): "0cf3d103872cf74d7109dc5607b428226049414f088ed37c16b519bc0d6d7be4"}
    for (fs, duration), digest in pinned.items():
        h = hashlib.sha256()
        for seed in range(100):
            h.update(synthesize("click_train", fs, duration, seed=seed).tobytes())
        assert h.hexdigest() == digest, (fs, duration)


def test_binaural_simulate_renders_short_click_trains(tmp_path):
    result = run_cli(["binaural", "simulate", "--duration", "0.1", "--n-sounds", "26", "--per-sound", "1", "--kinds",
                   "click_train", "--rooms", "anechoic", "--no-noise", "--split", "all", "--data", str(tmp_path)])
    assert result.exit_code == 0, (result.output, result.exception)
    import xarray as xr

    with xr.open_zarr(result.stdout.split()[-1]) as ds:
        waves = ds["waveforms"].values
    assert waves.shape == (26, 2, 4800) and (np.abs(waves).max(axis=(1, 2)) > 0).all()


# ----------------------------------------------------------------- 4: audit: the family's composite; filled pads
def test_audit_takes_the_composite_of_the_model_family(monkeypatch):
    """Review: audit always took 'paper', even for the binaural families (NO RULE on the filterbank and the
    BatchNorms, exit code 1), while 'models list' shows each family's own composite."""
    from xai_loc.models.families import FAMILIES

    used = []

    def audit(model, composite, **kwargs):
        used.append(composite)
        return types.SimpleNamespace(render=lambda: "", problems=[])

    monkeypatch.setattr(sys.modules["xai_loc.explain"], "audit", audit)
    for family in FAMILIES.values():
        if family.name.startswith("generic-"):  # plug-ins that other tests registered
            continue
        for arch in family.models:
            result = run_cli(["audit", arch])
            if family.composite is None:
                refused(result, f"a {arch!r} model, whose family {family.name!r} registers no LRP composite",
                         "give --composite")
            else:
                assert result.exit_code == 0, (result.output, result.exception)
                assert used.pop() == family.composite
    assert run_cli(["audit", COCHCNN]).exit_code == 0 and used.pop() == "cochcnn"
    assert run_cli(["audit", "bast", "--composite", "epsilon"]).exit_code == 0 and used.pop() == "epsilon"
    assert not used


def test_audit_books_the_pads_a_folded_batchnorm_fills_as_absorbing_like_a_bias():
    """Review: the shipped cochleagram CNN exited 1 with its own composite: 'features.pad3/pad4 does not conserve
    relevance'. The rows those pads add hold the folded BatchNorm's -b/a: constants, which take relevance as a
    bias does. What a pad does not pass on is exactly the relevance of its filled rows (float64 sums)."""
    from xai_loc.explain import audit
    from xai_loc.models import load_model
    from xai_loc.models.cochleagram_cnn import FrequencyPad

    model = load_model(COCHCNN)
    pads = {name: m for name, m in model.named_modules() if isinstance(m, FrequencyPad)}
    rows = {}

    def keep(name, pad):
        def hook(module, args, output):
            if output.requires_grad and pad.fill is not None:
                def record(grad):
                    edge = grad.double()
                    rows[name] = float(edge[..., :pad.top, :].sum() + edge[..., edge.shape[-2] - pad.bottom:, :].sum())
                output.register_hook(record)
        return hook

    handles = [pad.register_forward_hook(keep(name, pad)) for name, pad in pads.items()]
    try:
        report = audit(model, "cochcnn")
    finally:
        for handle in handles:
            handle.remove()
    assert report.problems == []
    layers = {layer.name: layer for layer in report.layers}
    assert set(rows) == set(pads)
    for name in pads:
        layer = layers[name]
        assert layer.bias_like and not layer.leaks and "absorb like a bias" in layer.rule
        lost = layer.relevance_out - layer.relevance_in
        assert lost == pytest.approx(rows[name], rel=1e-6, abs=1e-9 * abs(layer.relevance_out))
    assert abs(layers["features.pad3"].relevance_out - layers["features.pad3"].relevance_in) > 0.01  # it loses some
    # a pad nobody fills still has to conserve its relevance
    from xai_loc.explain.audit import LayerRelevance

    assert LayerRelevance("pad", "gradient", 1.0, 0.9, has_parameters=False).leaks


def test_audit_of_a_missing_checkpoint_says_it_does_not_exist(tmp_path):
    """Review: 'audit pretrained/x.safetensors' said "unknown model architecture 'pretrained/x.safetensors'"."""
    refused(run_cli(["audit", str(tmp_path / "x.safetensors")]), "does not exist")
    refused(run_cli(["audit", "x.safetensors"]), "checkpoint x.safetensors does not exist")
    refused(run_cli(["audit", "nosuch"]), "unknown model architecture 'nosuch'")


# ------------------------------------------------------------------------- 5: no output file inside a data store
@pytest.mark.usefixtures("no_work")
def test_an_output_file_or_store_inside_a_data_store_is_refused(tmp_path):
    """Review: 'explain --out DATA/test-n1.zarr/rel.zarr', 'evaluate --json DATA/test-n1.zarr/e.json' and 'report
    --out DATA/test-n1.zarr/r.html' wrote inside the dataset store; only folder options were checked."""
    from xai_loc.cli_params import StoreOut

    store = tmp_path / "test-n1.zarr"
    (store / "sub").mkdir(parents=True)
    (store / "zarr.json").write_text("{}")
    loccnn = str(PRETRAINED / "loccnn_t60-0.6_snr-10.safetensors")
    cases = [["explain", "--model", "loccnn", "--t60", "0.6", "--snr", "10", "--out", str(store / "rel.zarr")],
             ["evaluate", loccnn, "--json", str(store / "e.json")],
             ["evaluate", loccnn, "--json", str(store / "sub" / "e.json")],
             ["report", str(tmp_path), "--out", str(store / "r.html")],
             ["train", "--model", "loccnn", "--t60", "0.6", "--snr", "10", "--out", str(store / "m.safetensors")]]
    for args in cases:
        refused(run_cli(args), f"is not allowed: it is inside the store folder {str(store)!r}")
    assert sorted(p.name for p in store.iterdir()) == ["sub", "zarr.json"] and not any((store / "sub").iterdir())
    # a relevance store belongs in a <split>.relevance folder (explain's default place), but not below a store
    assert StoreOut().convert(str(tmp_path / "test.relevance" / "mine.zarr"), None, None)
    with pytest.raises(InputError, match="inside the store folder"):
        StoreOut().convert(str(store / "test.relevance" / "mine.zarr"), None, None)


# ------------------------------------------------------------------------- 6, 7: train --sources 1; models import
def test_train_refuses_one_source_before_simulating(tmp_path, monkeypatch):
    """Review: 'train --sources 1' simulated the train and val splits, then said training needs 2 sources."""
    def work(*args, **kwargs):
        raise AssertionError("simulated before refusing")

    monkeypatch.setattr("xai_loc.data.store.simulate_dataset", work)
    refused(run_cli(["train", "--model", "loccnn", "--t60", "0.6", "--snr", "10", "--sources", "1", "--max-epochs", "1",
                   "--data", str(tmp_path / "d")]), "--sources 1 is not allowed; use an integer >= 2")
    assert not (tmp_path / "d").exists()


def test_models_import_never_overwrites_its_input(tmp_path):
    """Review: the default --out is FILE with suffix .safetensors, i.e. FILE itself for a state dict saved under that
    name: the user's original was replaced without a word."""
    from safetensors.torch import save_file

    from xai_loc.models import build_model

    torch.manual_seed(0)
    raw = tmp_path / "paper.safetensors"  # a plain state dict (no card) in the safetensors format
    save_file(build_model("loccnn").state_dict(), raw)
    before = raw.read_bytes()
    args = ["models", "import", "--arch", "loccnn", "--t60", "0.6", "--snr", "10"]
    refused(run_cli([*args, str(raw)]),
            f"output {str(raw)!r} would overwrite the source file {str(raw)!r}; give another output")
    refused(run_cli([*args, "--out", str(raw), str(raw)]), "would overwrite the source file")
    assert raw.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["paper.safetensors"]
    result = run_cli([*args, "--out", str(tmp_path / "mine.safetensors"), str(raw)])
    assert result.exit_code == 0, result.output
    assert raw.read_bytes() == before


# ----------------------------------------------------------------------------------------------- 8: help texts
def test_bast_train_writes_where_its_help_says(tmp_path, monkeypatch):
    """Review: the help said <data>/runs/bast_<variant>.safetensors; the code writes bast_<variant>_s<seed>."""
    written = []

    def fit(spec, out, **kwargs):
        written.append(Path(out))
        return out, {"metrics": {"test": {}}}

    monkeypatch.setattr("xai_loc.models.bast.fit_bast", fit)
    monkeypatch.setattr("xai_loc.models.zoo.describe_test_metrics", lambda *a, **k: "")
    assert run_cli(["binaural", "bast", "train", "--seed", "3", "--data", str(tmp_path)]).exit_code == 0
    said = next(p.help for p in main.commands["binaural"].commands["bast"].commands["train"].params if p.name == "out")
    assert "<data>/runs/bast_<variant>_s<seed>.safetensors" in said
    assert written == [tmp_path / "runs" / "bast_NSP-SUB-MIX_s3.safetensors"]


def test_no_command_list_cuts_a_short_help_inside_parentheses():
    """Review: 'binaural --help' listed the TF-CNN as "IPD/ILD time-frequency CNN (Pang et al." (click's short help
    ends at the first word ending in a period)."""
    for words, command in [((), main), *_walk(main)]:
        short = command.get_short_help_str(limit=1000)
        assert short.count("(") == short.count(")"), (words, short)
