"""Stored results declare the dimensions of the variables their readers index: a file whose checksum is valid
(another tool, or an older version, wrote it through our writer) but whose required variable has other dimensions
is refused when it is opened, in one line naming the file, the variable, its dimensions and the expected ones,
before anything is drawn, tabulated or run (it ended in tracebacks inside xarray, numpy or matplotlib in
``figures``, ``report`` and ``reproduce``). And the sanity table names binaural inputs as the other tables do."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from helpers import one_line, refused, run_cli, small_model

from xai_loc.experiments.registry import EXPERIMENTS, RESULTS
from xai_loc.io import write_dataset_atomic

#: What each writer writes: the required variables of every registered result with their dimensions, in the
#: writer's order (read from files the experiments and probes wrote; the fixtures below write them again).
WRITTEN = {
    "perturbation": {"mae": ("model", "mode", "percentage", "xyz"), "mae_mean": ("model", "mode", "percentage"),
                     "baseline_mae": ("xyz",), "aopc": ("model", "mode")},
    "tdoa": {"delay": ("estimator", "pair", "window"), "anomalies_percent": ("estimator", "pair"),
             "mae_samples": ("estimator", "pair"), "threshold": ("pair", "window")},
    "faithfulness": {"score": ("model", "method", "ordering", "fill", "metric"),
                     "curve": ("model", "method", "ordering", "fill", "mode", "percentage"),
                     "score_ci": ("model", "method", "ordering", "fill", "metric", "bound"),
                     "completeness": ("model", "method", "stat")},
    "sanity": {"similarity": ("model", "method", "stage", "metric"),
               "similarity_ci": ("model", "method", "stage", "metric", "bound"), "score": ("model", "method", "check"),
               "score_ci": ("model", "method", "check", "bound")},
    "components": {"share": ("model", "method", "ordering", "split", "component"),
                   "share_ci": ("model", "method", "ordering", "split", "component", "bound"),
                   "energy_share": ("component",), "reference_share": ("split", "component"),
                   "reference_share_ci": ("split", "component", "bound"), "linear_split_exact": ("method",),
                   "energy_share_ci": ("component", "bound")},
    "duplex": {"itd_weight": ("band",), "ild_weight": ("band",)},
    "duplex_relevance": {"relevance_mass": ("stimulus", "ear", "frequency"), "lag_slope": ("band",)},
    "responses": {"response_azimuth": ("example",), "response_elevation": ("example",),
                  "target_azimuth": ("example",), "target_elevation": ("example",)},
    "cue_reliance": {"abs_share": ("cue", "band")},
    "cue_ablation": {"top1": ("cue", "bands"), "attention": ("cue", "bands", "weight_of")},
    "band_profile": {"share": ("snr", "channel", "band")},
    "bast_table": {"mirror_contrast": ("sharing", "integration"),
                   "relevance_left": ("sharing", "integration", "pair", "side"),
                   "relevance_right": ("sharing", "integration", "pair", "side")},
    "relevance_view": {"mass": ("explainer", "pair", "side", "ear", "frequency"), "ear_balance": ("explainer", "side")},
}

#: The optional variables (or coordinates) of a result that its readers index where a file holds them, as the
#: writers write them (a file without them is drawn and tabulated without them): every one of them with an extra
#: dimension ended in a traceback in ``figures`` or ``report``.
OPTIONAL = {
    "perturbation": {"euclidean": ("model", "mode", "percentage")},
    "tdoa": {"truth": ("pair", "window"), "estimator_kind": ("estimator",), "max_lag": ("pair",),
             "pair_distance": ("pair",), "srp_error": ("srp_estimator", "srp_metric"), "srp_flat": ("srp_estimator",),
             "srp_estimator_kind": ("srp_estimator",)},
    "faithfulness": {"unordered_windows": ("model", "method", "ordering", "fill"), "unperturbed_error": ("model",)},
    "duplex": {"response_itd": ("band", "azimuth", "itd_offset", "token"),
               "response_ild": ("band", "azimuth", "ild_offset", "token")},
    "cue_reliance": {"frequency": ("band",), "attention_mean": ("cue",), "cue_abs_share": ("cue",),
                     "fusion_share": ("cue",), "attention_by_laterality": ("laterality", "cue"),
                     "cue_abs_share_by_laterality": ("laterality", "cue")},
    "band_profile": {"band_low": ("band",), "band_high": ("band",), "band_centre": ("band",), "n_examples": ("snr",)},
}

#: Options that keep each experiment to seconds on the tiny store of ``split_and_store`` (4 microphones).
FAST = {
    "perturbation": {"percentages": (0, 50), "modes": ("relevance",)},
    "tdoa": {"pairs": "0-1", "srp_max_windows": 2, "srp_step": 0.25},
    "faithfulness": {"methods": ("saliency",), "fills": ("zero",), "percentages": (0, 50), "n_boot": 10},
    "sanity": {"methods": ("saliency",), "n_boot": 10},
    "components": {"methods": ("saliency",), "n_boot": 10},
}


@pytest.fixture(scope="module")
def written(split_and_store, tmp_path_factory) -> dict[str, Path]:
    """Every registered result as its writer writes it (tiny models and data): name -> file."""
    from test_cues import _tiny_model

    from xai_loc.data.bast_scenes import BastSceneSpec, load_bast_scenes
    from xai_loc.data.binaural_store import BinauralSpec, simulate_binaural
    from xai_loc.data.cue_scenes import CueSceneSpec
    from xai_loc.data.ipd_ild_scenes import SceneSpec, render_split
    from xai_loc.experiments.bast_table import mirror_relevance, run_bast_table
    from xai_loc.experiments.cue_probe import run_cue_probe
    from xai_loc.experiments.cues import run_behaviour, run_duplex_probe
    from xai_loc.experiments.ipd_ild_probe import run_ipd_ild_probe
    from xai_loc.features.binaural_cues import BinauralCues
    from xai_loc.models import build_model

    root = tmp_path_factory.mktemp("written")
    out = root / "results"
    _, store = split_and_store
    for name, exp in EXPERIMENTS.items():
        exp.write(exp.run({"m": small_model(4, 1024)}, store, batch_size=8, **FAST[name]), out / name)
    cochcnn = _tiny_model()
    run_duplex_probe(cochcnn, out / "cues", n_tokens=1)
    behaviour = BinauralSpec(name="b", rooms=("anechoic",), kinds=("white_burst",), n_sounds=4, per_sound=2,
                             test_fraction=0.5, duration=0.1, snr=None)
    run_behaviour(cochcnn, simulate_binaural(behaviour, "test", root=root / "data", progress=False), out / "cues")
    cues = np.random.default_rng(0).uniform(0, 1, (4, 3, 32, 50)).astype(np.float32)
    cue_store = xr.Dataset({"cues": (("example", "cue", "band", "frame"), cues)},
                           coords={"azimuth": ("example", [0.0, 90.0, 180.0, 270.0]),
                                   "utterance": ("example", ["u"] * 4)},
                           attrs={"spec": json.dumps(CueSceneSpec().to_dict()),
                                  "front_end": json.dumps(BinauralCues().config)})
    torch.manual_seed(0)
    run_cue_probe(build_model("cuenet", channels=8, hidden=16).eval(), cue_store, out / "cuenet")
    scenes = render_split(SceneSpec(name="tiny", azimuths=(-90.0, 90.0), n_train=2, test_per_azimuth=1,
                                    test_snrs=(0.0,)), "test")
    torch.manual_seed(0)
    run_ipd_ild_probe(build_model("tfcnn", channels=[4, 8], dense=[16]).eval(), scenes, out / "tfcnn", n_examples=None)
    bast_scenes = BastSceneSpec(name="tiny", azimuths=(90.0, 270.0), kinds=("white_burst",), n_sounds=2,
                                test_fraction=0.5, snr=None)
    tiny = {"dim": 16, "depth": 1, "heads": 2, "dim_head": 8, "mlp_dim": 32}
    run_bast_table(out / "bast", spec=bast_scenes, root=root / "data", model_options=tiny, epochs=1)
    torch.manual_seed(0)
    view = mirror_relevance(build_model("bast", integration="SUB", **tiny).eval(),
                            load_bast_scenes(bast_scenes, "test", root=root / "data"), n_steps=2)
    write_dataset_atomic(view, out / "bast" / "relevance_view.nc")  # as 'binaural bast explain' writes it
    files = {result.name: next(out.rglob(result.result_file)) for result in RESULTS.values()}
    assert len(set(files.values())) == len(RESULTS)
    return files


def _rewritten(path: Path, var: str, change, folder: Path) -> Path:
    """A copy of the result ``path`` in ``folder`` (same file name) with ``change(variable)`` in place of ``var``,
    written through the experiments' writer: its checksum is valid."""
    ds = xr.open_dataset(path, engine="h5netcdf").load()
    changed = change(ds[var])
    return write_dataset_atomic(ds.drop_vars(var).assign({var: changed}), folder / path.name)


def test_every_result_declares_the_dimensions_its_writer_writes():
    """Was: ``required`` named variables only, so a file with other dimensions passed the check."""
    assert {name: dict(result.required) for name, result in RESULTS.items()} == WRITTEN


@pytest.mark.parametrize("name", sorted(WRITTEN))
def test_a_required_variable_of_other_dimensions_is_refused_on_open(name, written, tmp_path):
    """What the writer writes opens with the dimensions declared (and in any order); a required variable with an
    extra dimension or one missing is one line naming the file, the variable, its dims and the expected ones."""
    result = RESULTS[name]
    ds = result.open(written[name])
    assert {var: ds[var].dims for var in WRITTEN[name]} == WRITTEN[name]
    var, dims = next(iter(WRITTEN[name].items()))
    transposed = _rewritten(written[name], var, lambda da: da.transpose(*reversed(da.dims)), tmp_path / "order")
    assert result.open(transposed)[var].dims == dims[::-1]  # the readers select by name
    changes = [(lambda da: da.expand_dims(extra=2), ("extra", *dims)),
               (lambda da: da.isel({dims[0]: 0}, drop=True), dims[1:])]
    for i, (change, has) in enumerate(changes):
        path = _rewritten(written[name], var, change, tmp_path / str(i))
        assert one_line(result.open, path) == (
            f"{result.what} {path} is not what it should be (its {var!r} has dims ({', '.join(has)}), expected "
            f"({', '.join(dims)})); run 'xai-loc {result.command}' to rebuild it")


def test_every_result_declares_the_optional_variables_its_readers_index():
    assert {name: dict(result.optional) for name, result in RESULTS.items() if result.optional} == OPTIONAL


@pytest.mark.parametrize("name, var", [(name, var) for name, optional in OPTIONAL.items() for var in optional])
def test_an_optional_variable_of_other_dimensions_is_refused_on_open(name, var, written, tmp_path):
    """Review: a file whose optional variable had an extra dimension was opened, then ``figures`` and ``report``
    ended in a traceback (e.g. "object too deep for desired array", "unsupported format string passed to
    numpy.ndarray"); it is one line, as for a required variable, and a file without it still opens."""
    result = RESULTS[name]
    ds = result.open(written[name])
    assert set(ds[var].dims) == set(OPTIONAL[name][var])
    path = _rewritten(written[name], var, lambda da: da.expand_dims(extra=2), tmp_path / "extra")
    assert one_line(result.open, path) == (
        f"{result.what} {path} is not what it should be (its {var!r} has dims (extra, {', '.join(ds[var].dims)}), "
        f"expected ({', '.join(OPTIONAL[name][var])})); run 'xai-loc {result.command}' to rebuild it")
    for cmd in ("figures", "report"):
        refused(run_cli([cmd, str(path.parent)]), f"its {var!r} has dims (extra, ")
    assert var not in result.open(write_dataset_atomic(ds.drop_vars(var), tmp_path / "without" / path.name))


@pytest.mark.parametrize("name, var, change, says", [
    # was: IndexError: index 2 is out of bounds for axis 0 with size 2 (report)
    ("perturbation", "mae", lambda da: da.expand_dims(extra=2),
     "its 'mae' has dims (extra, model, mode, percentage, xyz), expected (model, mode, percentage, xyz)"),
    # was: KeyError: 'window' (report) and a figure drawn without it
    ("tdoa", "delay", lambda da: da.isel(window=0, drop=True),
     "its 'delay' has dims (estimator, pair), expected (estimator, pair, window)"),
    # was: TypeError: only 0-dimensional arrays can be converted to Python scalars (figures and report)
    ("duplex", "itd_weight", lambda da: da.expand_dims(extra=2),
     "its 'itd_weight' has dims (extra, band), expected (band)"),
    # was: ValueError: x and y must have the same length (matplotlib)
    ("responses", "response_azimuth", lambda da: da.expand_dims(extra=2),
     "its 'response_azimuth' has dims (extra, example), expected (example)"),
])
def test_figures_and_report_refuse_it_in_one_line_and_write_nothing(name, var, change, says, written, tmp_path):
    folder = tmp_path / "results"
    path = _rewritten(written[name], var, change, folder)
    result = RESULTS[name]
    line = (f"{result.what} {path} is not what it should be ({says}); run 'xai-loc {result.command}' to rebuild "
            "it")
    for command in (["figures", str(folder)], ["report", str(folder)]):
        refused(run_cli(command), line)
    assert [p.name for p in folder.iterdir()] == [path.name]


@pytest.mark.usefixtures("no_simulation")
def test_reproduce_refuses_a_kept_result_of_other_dimensions_before_any_work(written, zoo, tmp_path):
    from xai_loc.study import STUDY_EXPERIMENTS, reproduce

    out = tmp_path / "rep"
    kept = _rewritten(written["tdoa"], "threshold", lambda da: da.isel(window=0, drop=True),
                      out / "t60-0.15_snr-25")
    says = one_line(reproduce, out, quick=True, data_root=tmp_path / "data", pretrained=zoo,
                    conditions=[(0.15, 25.0)], progress=False,
                    skip=[name for name in STUDY_EXPERIMENTS if name != "perturbation"])
    assert says == (f"TDOA result {kept} is not what it should be (its 'threshold' has dims (pair), expected (pair, "
                    "window)); run 'xai-loc tdoa' to rebuild it")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["t60-0.15_snr-25",
                                                                             "t60-0.15_snr-25/tdoa.nc"]


def test_the_sanity_table_names_binaural_inputs_as_inputs(written):
    """Was: "(N windows)" for every model; a binaural model's inputs (a sound, a cochleagram, a BAST spectrogram)
    are not windows of samples: named as the figures' titles name them (windows for the multichannel models)."""
    sanity = EXPERIMENTS["sanity"]
    ds = sanity.open(written["sanity"])
    first = sanity.tables(ds)["markdown"].splitlines()[0]
    assert first.startswith("Sanity checks over 1 sources (54 windows). Similarity")
    ds.attrs["models"] = json.dumps({"m": {"model": "cuenet"}})
    assert sanity.tables(ds)["markdown"].splitlines()[0] == first.replace("(54 windows)", "(54 inputs)")
