"""Regression tests of the fifth review of the study and of hybrid stores: ``reproduce`` names the file of another
condition that a folder really holds, refuses its arguments and output before any work (nothing written, the earlier
page kept), and an explicit ``t_diff`` at its default is recorded as the default."""
from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from helpers import one_line, run_cli

from xai_loc.io import write_dataset_atomic
from xai_loc.study import STUDY_EXPERIMENTS, reproduce

CONDITION = "t60-0.15_snr-25"
ESTIMATORS = ["signals", "loccnn", "zero-lag"]


def _tdoa(t60: float, snr: float) -> xr.Dataset:
    """A TDOA result of one pair recording (``t60``, ``snr``)."""
    rng = np.random.default_rng(0)
    return xr.Dataset(
        {"delay": (("estimator", "pair", "window"), rng.normal(size=(3, 1, 3))),
         "truth": (("pair", "window"), rng.normal(size=(1, 3))),
         "threshold": (("pair", "window"), [[2.0, 3.0, 7.0]]),
         "anomalies_percent": (("estimator", "pair"), rng.uniform(0, 100, (3, 1))),
         "mae_samples": (("estimator", "pair"), rng.uniform(0, 2, (3, 1)))},
        coords={"estimator": ESTIMATORS, "pair": ["7-8"], "pair_distance": ("pair", [0.15]), "window": [0, 1, 2]},
        attrs={"t60": t60, "snr": snr, "method": "lrp", "fs": 16000.0, "c": 343.0})


def _earlier_run(out):
    """An earlier run's page and finished record in ``out``; what a refusal must leave as it is."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.html").write_text("<p>an earlier run's page</p>")
    (out / "study.json").write_text('{"finished": true}')


def _kept_as_it_was(out) -> bool:
    return ((out / "report.html").read_text() == "<p>an earlier run's page</p>"
            and (out / "study.json").read_text() == '{"finished": true}')


def _run(out, zoo, tmp_path, runs=(), **kwargs):
    kwargs = {"quick": True, "data_root": tmp_path / "data", "pretrained": zoo, "conditions": [(0.15, 25.0)],
              "progress": False, "skip": [name for name in STUDY_EXPERIMENTS if name not in runs], **kwargs}
    return one_line(reproduce, out, **kwargs)


# 1 -------------------------------------------------------------------------------------------------------------
@pytest.mark.usefixtures("no_simulation")
def test_a_kept_result_of_another_condition_is_named_as_the_file_the_folder_holds(zoo, tmp_path):
    """Review: 'holds results of different conditions: perturbation.nc (T60 0.15 s, SNR 25 dB), tdoa.nc (...)' named
    the perturbation.nc the run would write as if the folder held it."""
    out = tmp_path / "rep"
    _earlier_run(out)
    (out / CONDITION).mkdir()
    write_dataset_atomic(_tdoa(0.6, 10.0), out / CONDITION / "tdoa.nc")
    says = _run(out, zoo, tmp_path, runs=("perturbation",))
    assert says == (f"{out / CONDITION / 'tdoa.nc'} holds results of T60 0.6 s, SNR 10 dB, but this run writes those "
                    f"of T60 0.15 s, SNR 25 dB into {out / CONDITION} (one condition per folder); remove tdoa.nc or "
                    "choose another output folder")
    assert _kept_as_it_was(out) and sorted(p.name for p in (out / CONDITION).iterdir()) == ["tdoa.nc"]


# 3 -------------------------------------------------------------------------------------------------------------
@pytest.mark.usefixtures("no_simulation")
@pytest.mark.parametrize("given, says", [
    ({"archs": ("loccnn", "resnet")}, "architecture 'resnet' is not a localizer of source positions that the study "
                                      "runs; allowed: loccnn, samplecnn"),
    ({"conditions": [(-1.0, 25.0)]}, "T60=-1.0 s is not allowed; give seconds in (0, 10.0]"),
    ({"conditions": [(0.15, 25.0), 0.6]}, "condition 0.6 is not allowed; give (T60 s, SNR dB) pairs"),
    ({"conditions": [(0.15, 25.0), (0.1500000001, 25.0)]},
     "conditions (0.15, 25.0) and (0.1500000001, 25.0) are both condition t60-0.15_snr-25; give each condition once"),
    ({"batch_size": 0}, "batch_size=0 is not allowed; use a positive integer"),
    ({"device": "tpu"}, "unknown device 'tpu'; allowed: cpu, cuda, cuda:N"),
    ({"data_root": "FILE"}, "the folder of test-n3.zarr '{file}/paper/t60-0.15_snr-25' is not allowed: '{file}' is a "
                            "file, not a folder"),
], ids=["arch", "t60", "not-a-pair", "twice", "batch-size", "device", "data-root"])
def test_bad_arguments_are_refused_before_any_work(zoo, tmp_path, given, says):
    """Review: an unknown architecture or a bad T60 was 'no checkpoint of ... for the study's conditions'; a condition
    given twice ran twice into one folder; a bad batch size, device or data root was refused only after the
    earlier page was removed and a new record begun (batch size: after the data was simulated)."""
    out, file = tmp_path / "rep", tmp_path / "a-file"
    _earlier_run(out)
    file.write_text("not a folder")
    given = {k: file if v == "FILE" else v for k, v in given.items()}
    assert _run(out, zoo, tmp_path, runs=("perturbation",), **given) == says.format(file=file)
    assert _kept_as_it_was(out) and sorted(p.name for p in out.iterdir()) == ["report.html", "study.json"]
    assert not (tmp_path / "data").exists() and file.read_text() == "not a folder"


@pytest.mark.usefixtures("no_simulation")
def test_an_output_folder_that_is_a_file_is_named_as_such(zoo, tmp_path):
    """Review: 'condition folder '<out>/t60-0.15_snr-25' is not allowed: '<out>' is a file' named a folder the user
    never gave."""
    out = tmp_path / "rep"
    out.write_text("a file")
    assert _run(out, zoo, tmp_path) == f"output folder '{out}' is not allowed: '{out}' is a file, not a folder"
    assert out.read_text() == "a file"


def test_one_experiment_to_skip_may_be_given_as_its_name():
    """Review: skip='sanity' was read letter by letter: "skip 's' is not an experiment of the study"."""
    from xai_loc.study import check_skip

    assert check_skip("sanity") == ("sanity",)
    assert one_line(check_skip, "sanity,tdoa") == ("skip 'sanity,tdoa' is not an experiment of the study; allowed: "
                                                   "perturbation, tdoa, faithfulness, sanity, components")


# 2 -------------------------------------------------------------------------------------------------------------
def test_a_t_diff_at_the_start_the_backend_gives_without_it_is_left_out():
    from xai_loc.acoustics.backends import without_defaults

    assert 0.6 / 4 == 0.15 and 0.15 / 4 == 0.0375  # dividing by 4 is exact: the decimal a user types is the default
    assert without_defaults("torch", {"mode": "hybrid", "t_diff": 0.15}, 0.6) == {"mode": "hybrid"}
    assert without_defaults("torch", {"mode": "hybrid", "t_diff": 0.0375}, 0.15) == {"mode": "hybrid"}
    assert without_defaults("torch", {"mode": "hybrid", "t_diff": 0.1500001}, 0.6) == {"mode": "hybrid",
                                                                                       "t_diff": 0.1500001}
    assert without_defaults("torch", {"mode": "ism", "max_order": None}, 0.6) == {}
    assert without_defaults("gpurir", {"t_diff": 0.15}, 0.6) == {"t_diff": 0.15}  # gpuRIR: no tail by default


def test_simulate_with_the_default_t_diff_reuses_the_default_store(tmp_path):
    """Review: '--t60 0.6 --t-diff 0.15' on a default hybrid store was refused ('rir_options.t_diff not recorded,
    0.15 asked'), though it asks for the same data."""
    scene = tmp_path / "tiny.toml"
    scene.write_text('name = "tiny"\nwindow = 1024\n[room]\nsize = [4.0, 5.0, 3.0]\n[array]\n'
                     'linear = { n = 2, spacing = 0.1, center = [2.0, 4.0, 1.2], axis = 0 }\n[sources]\n'
                     'positions = [[1.0, 1.5, 1.2], [2.5, 2.0, 1.3]]\n[splits]\ntest = [1]\ntrain = [0]\n')
    args = ["simulate", "--t60", "0.6", "--snr", "10", "--scene", str(scene), "--mode", "hybrid",
            "--data", str(tmp_path / "data")]
    default = run_cli(args)
    assert default.exit_code == 0, default.output
    store = default.stdout.strip()
    config = xr.open_zarr(store).attrs["config"]
    assert json.loads(config)["rir_options"] == {"mode": "hybrid"}
    explicit = run_cli([*args, "--t-diff", "0.15"])
    assert explicit.exit_code == 0, explicit.output
    assert explicit.stdout.strip() == store and xr.open_zarr(store).attrs["config"] == config
    assert [p.name for p in (tmp_path / "data" / "tiny" / "t60-0.6_snr-10").iterdir()] == ["test.zarr"]


def test_a_library_call_with_the_default_t_diff_names_the_default_store(tmp_path):
    """A ``t_diff`` at its default in a library call is left out of the record (as on the command line), and a store
    recorded without it is the same data as one asked with it."""
    from xai_loc.data.store import _checked_options, _identity

    assert _checked_options("torch", {"mode": "hybrid", "t_diff": 0.15}, 0.6) == {"mode": "hybrid"}
    assert _checked_options("torch", {"mode": "hybrid", "t_diff": 0.2}, 0.6) == {"mode": "hybrid", "t_diff": 0.2}
    found = {"backend": "torch", "t60": 0.6, "rir_options": {"mode": "hybrid"}}
    assert _identity(found) == _identity({**found, "rir_options": {"mode": "hybrid", "t_diff": 0.15}})
    assert _identity(found) != _identity({**found, "rir_options": {"mode": "hybrid", "t_diff": 0.2}})
