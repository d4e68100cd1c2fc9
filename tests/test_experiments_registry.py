"""The experiment registry and the ModelSet: every registered experiment runs, writes, draws and tabulates
through the one path; every stored result has a drawer; each checkpoint is loaded once per command."""
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from xai_loc.data.scene import paper_scene
from xai_loc.data.store import simulate_dataset
from xai_loc.experiments.base import Experiment, Result
from xai_loc.experiments.modelset import ModelSet
from xai_loc.experiments.registry import EXPERIMENTS, RESULTS, get_experiment, result_for_file
from xai_loc.models import build_model, save_checkpoint
from xai_loc.plots.redraw import DRAWERS, draw

#: Options that keep a registered experiment to seconds on one CPU core; an experiment not
#: named here runs with its defaults.
FAST = {
    "perturbation": {"percentages": (0, 50), "modes": ("relevance", "energy")},
    "tdoa": {"pairs": "7-8,0-15", "srp_max_windows": 2},
    "faithfulness": {"methods": ("saliency",), "fills": ("zero", "road"), "percentages": (0, 50), "n_boot": 50},
    "sanity": {"methods": ("saliency",), "n_boot": 50},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry-data")
    return simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=root, n_sources=2, progress=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("registry-ckpt") / "loccnn_t60-0.15_snr-25.safetensors"
    return save_checkpoint(build_model("loccnn"), path, {"condition": {"t60": 0.15, "snr": 25.0}})


def test_every_result_has_a_drawer_and_its_own_file():
    assert set(DRAWERS) == set(RESULTS)
    assert set(EXPERIMENTS) <= set(RESULTS)
    files = [r.result_file for r in RESULTS.values()]
    assert len(set(files)) == len(files) and all(f.endswith(".nc") for f in files)
    for name, result in RESULTS.items():
        assert isinstance(result, Result) and result.name == name and result.what and result.command
        assert result_for_file(result.result_file) is result
    assert result_for_file("unrelated.nc") is None


def test_unknown_experiment_is_a_one_line_error():
    from xai_loc.errors import InputError

    with pytest.raises(InputError, match="registered: " + ", ".join(EXPERIMENTS)):
        get_experiment("nonesuch")


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiment_runs_writes_draws_and_tabulates(name, store, checkpoint, tmp_path):
    from xai_loc.study import run_experiment

    exp = EXPERIMENTS[name]
    assert isinstance(exp, Experiment)
    models = ModelSet({"loccnn": checkpoint})
    run = run_experiment(name, models, store, tmp_path, batch_size=8, **FAST.get(name, {}))
    # the result file and every table, each named by the registry
    assert run.files["result"] == tmp_path / exp.result_file
    assert "markdown" in run.tables and set(run.tables) <= set(exp.table_files)
    for kind, text in run.tables.items():
        assert (tmp_path / exp.table_files[kind]).read_text() == text and text.strip()
    if exp.timed:
        assert "loccnn" in (tmp_path / exp.timing_file).read_text()
    # the figures: drawn by the run, and the same files again from the stored result alone
    figures = run.files["figures"]
    assert figures and all(p.stat().st_size > 1000 for p in figures)
    for path in figures:
        path.unlink()
    assert draw([run.files["result"]]) == figures and all(p.exists() for p in figures)
    # the stored result opens, checked, and carries the checkpoint's provenance
    back = exp.open(run.files["result"])
    assert set(exp.required) <= set(back.data_vars)
    assert models.provenance("loccnn")["checkpoint_digest"] in back.attrs["models"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_model_set_loads_hashes_and_randomizes_once(checkpoint, monkeypatch):
    from xai_loc.explain.attribute import Explainer, resolve_model

    _, expected = resolve_model(checkpoint)  # what a checkpoint path gives, loading it
    reference = Explainer(checkpoint, target="prediction").attrs
    loads = _count_loads(monkeypatch)
    models = ModelSet({"a": checkpoint, "b": build_model("loccnn")})
    assert list(models) == ["a", "b"] and len(models) == 2
    assert ModelSet.of(models) is models and models.select(["a"])["a"] is models["a"]
    # provenance as resolve_model gives it for the path (keys and order), from the one load
    assert models.provenance("a") == expected and list(models.provenance("a")) == list(expected)
    assert models.card("a")["condition"] == {"t60": 0.15, "snr": 25.0} and models.path("a") == checkpoint
    assert models.card("b") is None and "checkpoint" not in models.provenance("b")
    explainer = models.explainer("a", target="prediction")
    assert explainer.model is models["a"] and explainer.attrs == reference
    # one randomized copy per seed, shared by every caller of the run
    copy = models.randomized("a", 0)
    assert models.randomized("a", 0) is copy and models.randomized("a", 1) is not copy
    assert models.randomized_provenance("a", 0)["model_digest"] != models.provenance("a")["model_digest"]
    assert models.explainer("a", randomized_seed=0).model is copy
    assert loads == [checkpoint.name]


def _count_loads(monkeypatch) -> list[str]:
    """Record every checkpoint load, through the module and the package name alike."""
    import xai_loc.models
    import xai_loc.models.checkpoint

    real = xai_loc.models.checkpoint.load_model
    loads: list[str] = []

    def counting(path, *args, **kwargs):
        loads.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(xai_loc.models.checkpoint, "load_model", counting)
    monkeypatch.setattr(xai_loc.models, "load_model", counting)
    return loads


@pytest.mark.parametrize("command", [
    ["perturb", "--percentages", "0,50", "--modes", "relevance"],
    ["tdoa", "--pairs", "7-8", "--no-srp"],
])
def test_each_checkpoint_is_loaded_once_per_command(command, tmp_path, monkeypatch):
    from xai_loc.cli import main

    zoo = tmp_path / "zoo"
    for seed, arch in enumerate(("loccnn", "samplecnn")):
        torch.manual_seed(seed)
        save_checkpoint(build_model(arch), zoo / f"{arch}_t60-0.15_snr-25.safetensors",
                        {"condition": {"t60": 0.15, "snr": 25.0}})
    monkeypatch.setenv("XAI_LOC_PRETRAINED", str(zoo))
    loads = _count_loads(monkeypatch)
    result = CliRunner().invoke(main, ["--threads", "1", *command, "--t60", "0.15", "--snr", "25", "--model", "all",
                                       "--sources", "1", "--batch-size", "8", "--data", str(tmp_path / "data"),
                                       "--out", str(tmp_path / "res")])
    assert result.exit_code == 0, result.output
    assert sorted(loads) == ["loccnn_t60-0.15_snr-25.safetensors", "samplecnn_t60-0.15_snr-25.safetensors"]
