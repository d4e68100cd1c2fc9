"""Regression tests of the fourth review of the report and figures: ``reproduce`` checks the results it keeps
before any work; binaural sections are not treated as multichannel; the TDOA threshold of one pair distance is
drawn; ``report`` checks its output first; titles name each setting
once and call binaural inputs inputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr
from helpers import one_line, perturbation_result, refused, run_cli

from xai_loc.errors import InputError
from xai_loc.io import write_dataset_atomic
from xai_loc.study import STUDY_EXPERIMENTS, reproduce

CONDITION = "t60-0.15_snr-25"
ESTIMATORS = ["signals", "loccnn", "zero-lag"]


def _models(arch: str) -> str:
    return json.dumps({f"{arch}-mine": {"model": arch, "model_digest": "0123456789abcdef"}})


def _perturbation(**attrs) -> xr.Dataset:
    return perturbation_result(**{"t60": 0.15, "snr": 25.0, **attrs})


def _tdoa(distances=(0.15, 0.45), **attrs) -> xr.Dataset:
    rng = np.random.default_rng(0)
    e, p, w = len(ESTIMATORS), len(distances), 3
    return xr.Dataset(
        {"delay": (("estimator", "pair", "window"), rng.normal(size=(e, p, w))),
         "truth": (("pair", "window"), rng.normal(size=(p, w))),
         "threshold": (("pair", "window"), np.tile([2.0, 3.0, 7.0], (p, 1))),
         "anomalies_percent": (("estimator", "pair"), rng.uniform(0, 100, (e, p))),
         "mae_samples": (("estimator", "pair"), rng.uniform(0, 2, (e, p)))},
        coords={"estimator": ESTIMATORS, "pair": [f"{k}-{k + 1}" for k in range(p)],
                "pair_distance": ("pair", list(distances)), "window": [0, 1, 2]},
        attrs={"t60": 0.15, "snr": 25.0, "method": "lrp", "fs": 16000.0, "c": 343.0, **attrs})


def _sanity(arch: str) -> xr.Dataset:
    """A sanity result of one model of architecture ``arch`` (one method, two stages)."""
    sim = np.ones((1, 1, 2, 2)) * np.array([1.0, 0.2])[None, None, :, None]
    score = np.full((1, 1, 5), 0.3)
    checks = ["spearman_randomized", "pearson_randomized", "emprt", "spearman_targets", "pearson_targets"]
    return xr.Dataset({"similarity": (("model", "method", "stage", "metric"), sim),
                       "similarity_ci": (("model", "method", "stage", "metric", "bound"),
                                         np.stack([sim - 0.1, sim + 0.1], -1)),
                       "score": (("model", "method", "check"), score),
                       "score_ci": (("model", "method", "check", "bound"), np.stack([score - 0.1, score + 0.1], -1))},
                      coords={"model": [f"{arch}-mine"], "method": ["saliency"], "stage": ["original", "top"],
                              "metric": ["spearman", "pearson"], "check": checks, "bound": ["low", "high"]},
                      attrs={"t60": np.nan, "snr": np.nan, "target": "truth", "n_windows": 4, "n_sources": 2,
                             "models": _models(arch)})


# 1 -------------------------------------------------------------------------------------------------------------
def _damaged(folder):
    path = write_dataset_atomic(_sanity("loccnn").assign_attrs(t60=0.15, snr=25.0), folder / "sanity.nc")
    path.write_bytes(bytes(64) + path.read_bytes()[64:])
    return f"sanity-check result {path} is damaged or not netCDF (OSError)"


def _other_condition(folder):
    write_dataset_atomic(_tdoa(t60=0.6, snr=10.0), folder / "tdoa.nc")
    return (f"{folder / 'tdoa.nc'} holds results of T60 0.6 s, SNR 10 dB, but this run writes those of T60 0.15 s, "
            f"SNR 25 dB into {folder} (one condition per folder); remove tdoa.nc or choose another output folder")


@pytest.mark.usefixtures("no_simulation")
@pytest.mark.parametrize("kept, runs", [(_damaged, ()), (_other_condition, ("perturbation",))])
def test_reproduce_refuses_a_result_it_keeps_that_the_report_would_refuse_before_any_work(zoo, tmp_path, kept, runs):
    """Review: a damaged sanity.nc that the run skipped, or a tdoa.nc of another condition in the condition's
    folder, failed the run at its end (exit 2) after all its work, its record finished and the old page removed."""
    out = tmp_path / "rep"
    (out / CONDITION).mkdir(parents=True)
    (out / "report.html").write_text("<p>an earlier run's page</p>")
    says = kept(out / CONDITION)
    with pytest.raises(InputError) as err:
        reproduce(out, quick=True, data_root=tmp_path / "data", pretrained=zoo, conditions=[(0.15, 25.0)],
                  progress=False, skip=[name for name in STUDY_EXPERIMENTS if name not in runs])
    assert "\n" not in str(err.value) and str(err.value).startswith(says)
    assert not (out / "study.json").exists() and (out / "report.html").read_text() == "<p>an earlier run's page</p>"


# 2 -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch, missing, explorer", [
    ("bast", ["faithfulness.nc (faithfulness result; run 'xai-loc faithfulness')"], False),
    ("loccnn", ["perturbation.nc (perturbation result; run 'xai-loc perturb')",
                "tdoa.nc (TDOA result; run 'xai-loc tdoa')",
                "faithfulness.nc (faithfulness result; run 'xai-loc faithfulness')",
                "components.nc (component shares result; run 'xai-loc components')"], True),
])
def test_a_section_lists_and_explores_only_what_its_models_family_has(tmp_path, arch, missing, explorer):
    """Review: a BAST faithfulness folder was reported as multichannel: perturbation, tdoa and components listed as
    missing (their commands refuse BAST) and an empty window explorer shown."""
    from xai_loc.report import render_report
    from xai_loc.report.collect import collect_sections

    write_dataset_atomic(_sanity(arch), tmp_path / "sanity.nc")
    (section,) = collect_sections(tmp_path)
    assert (section.missing, section.explorer) == (missing, explorer)
    assert ("<h3>Window explorer</h3>" in render_report(tmp_path)) is explorer


# 3 -------------------------------------------------------------------------------------------------------------
def test_the_anomaly_threshold_of_a_single_pair_distance_is_marked(captured_figure):
    """Review: with every pair at one distance (--pairs 7-8) the threshold was a line of one point: invisible. A
    line of several distances stays as it was."""
    import xai_loc.plots.tdoa as tdoa

    for distances, marker in (((0.15,), "_"), ((0.15, 0.15), "_"), ((0.15, 0.45), "None")):
        drawn = captured_figure(tdoa)
        tdoa.plot_tdoa(_tdoa(distances), "unused")
        (line,) = [ln for ln in drawn["fig"].axes[1].get_lines() if ln.get_label() == "anomaly threshold (median)"]
        assert line.get_marker() == marker and list(line.get_ydata()) == [3.0] * len(set(distances))


# 5 -------------------------------------------------------------------------------------------------------------
def test_report_checks_its_default_path_before_rendering(tmp_path, monkeypatch):
    """Review: with a folder named report.html in the results folder, 'report' rendered the page (13 s), then
    refused."""
    import xai_loc.report.page as page
    from xai_loc.report import write_report

    def render(*args, **kwargs):
        raise AssertionError("rendered before checking the output path")

    write_dataset_atomic(_perturbation(), tmp_path / "perturbation.nc")
    (tmp_path / "report.html").mkdir()
    monkeypatch.setattr(page, "render_report", render)
    assert one_line(write_report, tmp_path) == (f"cannot write the file '{tmp_path / 'report.html'}': it is a folder; "
                                                "remove it or choose another path")
    refused(run_cli(["report", str(tmp_path)]), "report.html': it is a folder")


# 6 -------------------------------------------------------------------------------------------------------------
def test_a_title_names_each_setting_once_and_binaural_inputs_as_inputs():
    """Review: 'first rule flat, ..., first_rule=flat'; BAST's spectrograms were called windows."""
    from xai_loc.plots.labels import run_title

    titles = [run_title(_perturbation(**attrs)) for attrs in (
        {"first_rule": "flat", "target": "contrast", "explain_options": '{"first_rule": "flat", "reference": "mean"}'},
        {"explain_options": '{"first_rule": "flat"}'},  # recorded only as an option: named once, as given
        {"models": _models("bast"), "t60": np.nan, "snr": np.nan},
        {"models": _models("loccnn")})]
    assert titles == ["T60 0.15 s, SNR 25 dB, lrp, first rule flat, target contrast, reference=mean, zero fill, "
                      "7 windows",
                      "T60 0.15 s, SNR 25 dB, lrp, first_rule=flat, zero fill, 7 windows",
                      "lrp, zero fill, 7 inputs",
                      "T60 0.15 s, SNR 25 dB, lrp, zero fill, 7 windows"]
