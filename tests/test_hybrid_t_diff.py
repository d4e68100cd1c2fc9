"""Hybrid responses near the paper room's shortest T60: the default t_diff (T60 / 4) cannot fit the diffuse tail to
10 ms of reflections after a far source's direct sound. A split is checked whole before its first source is simulated
(it was refused mid-run, after the sources before the far one), and ``simulate --t-diff`` follows the hint."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import xarray as xr
from helpers import one_line, refused, run_cli

from xai_loc.acoustics.ism import image_source_rirs
from xai_loc.data import simulate_dataset, simulate_windows
from xai_loc.data.scene import paper_scene
from xai_loc.data.store import config_digest, subset_ids

#: 50 val sources of the paper scene at T60 = 0.105 s: the first three fit T60 / 4, the fourth does not.
VAL50 = ("val", 0.105, 10.0)
VAL50_SAYS = ("t_diff=0.02625 s (the default, T60/4) at T60=0.105 s starts the diffuse tail too early: it must leave "
              "10 ms of image-source reflections after the direct sound 3.022 m away; give t_diff >= 0.027 s "
              "(--t-diff)")


@pytest.fixture
def no_response(monkeypatch):
    """Simulating a source's responses fails the test: a refusal must come before the first source."""
    def simulate(*args, **kwargs):
        raise AssertionError("a source was simulated before the split was refused")

    monkeypatch.setattr("xai_loc.data.store.source_rirs", simulate)


def test_the_smallest_t_diff_of_the_far_val_source_follows_from_its_distance():
    # 3.022 m = 140 samples at 343 m/s; the 128-tap filter reaches 65 samples past it (+1): the fit starts at 206,
    # leaves out 65 samples before t_diff and needs 10 ms: (206 + 65) / 16000 + 0.01 = 0.0269375 -> 0.027 s
    from xai_loc.acoustics.backends import check_rirs

    scene = paper_scene()
    ids = subset_ids(scene.source_ids("val"), 50)
    far = np.linalg.norm(scene.sources[ids][:, None] - scene.mics[None], axis=-1).max()
    assert round(far, 3) == 3.022 and math.floor(far / 343.0 * 16000) == 140
    args = (scene.room, scene.sources[ids], scene.mics, 0.105)
    assert check_rirs("torch", *args, mode="hybrid", t_diff=0.027) is None
    assert "give t_diff >= 0.027 s" in one_line(check_rirs, "torch", *args, mode="hybrid", t_diff=0.0269)


def test_a_store_refuses_the_default_t_diff_before_its_first_source(tmp_path, no_response):
    # was: three sources rendered, then "t_diff=0.02625 s starts the diffuse tail too early ... give t_diff >= 0.027 s"
    says = one_line(simulate_dataset, paper_scene(), *VAL50, n_sources=50, root=tmp_path,
                    rir_options={"mode": "hybrid"}, progress=False)
    assert says == VAL50_SAYS
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("split", "t60", "smallest", "far"), [
    ("all", 0.1, 0.0275, 3.206), ("all", 0.0987, 0.0275, 3.206), ("val", 0.105, 0.0275, 3.185)])
def test_in_memory_splits_are_refused_before_planning(monkeypatch, no_response, split, t60, smallest, far):
    def plan(*args, **kwargs):
        raise AssertionError("the split was planned (its utterances read) before it was refused")

    monkeypatch.setattr("xai_loc.data.store._plan", plan)
    says = one_line(simulate_windows, paper_scene(), split, t60, 10.0, rir_options={"mode": "hybrid"}, progress=False)
    assert says == (f"t_diff={t60 / 4} s (the default, T60/4) at T60={t60} s starts the diffuse tail too early: it "
                    f"must leave 10 ms of image-source reflections after the direct sound {far} m away; give t_diff >= "
                    f"{smallest} s (--t-diff)")


def test_the_cli_refuses_the_split_in_one_line_naming_t_diff(tmp_path, no_response):
    result = run_cli(["simulate", "--t60", "0.105", "--snr", "10", "--split", "val", "--sources", "50",
                      "--mode", "hybrid", "--data", str(tmp_path)])
    assert refused(result, VAL50_SAYS)
    assert list(tmp_path.iterdir()) == []
    result = run_cli(["simulate", "--t60", "0.105", "--snr", "10", "--split", "val", "--sources", "50",
                      "--mode", "hybrid", "--t-diff", "0.02", "--data", str(tmp_path)])
    refused(result, "t_diff=0.02 s at T60=0.105 s starts the diffuse tail too early", "give t_diff >= 0.027 s")


@pytest.mark.parametrize(("args", "says"), [
    (["--t-diff", "0.03"], "--t-diff 0.03 is not allowed with --mode ism, which has no diffuse tail; use --backend "
                           "torch --mode hybrid, or --backend gpurir"),
    (["--backend", "pyroomacoustics", "--t-diff", "0.03"],
     "--t-diff 0.03 is not allowed with --backend pyroomacoustics, which has no diffuse tail; use --backend torch "
     "--mode hybrid, or --backend gpurir"),
    (["--mode", "hybrid", "--t-diff", "0"], "--t-diff 0 is not allowed; use a finite number > 0"),
    (["--mode", "hybrid", "--t-diff", "0.2"], "t_diff=0.2 s is not allowed; give a value in (0, t_max=0.15] (t_max "
                                              "is T60 unless given; --t-diff on the command line)"),
    # final review: gpuRIR asserts Tdiff <= Tmax (a traceback after it started); refused before any source now
    (["--backend", "gpurir", "--t-diff", "5"], "t_diff=5.0 s is not allowed; give a value in (0, t_max=0.15] (t_max "
                                               "is T60 unless given; --t-diff on the command line)"),
])
def test_the_cli_refuses_a_t_diff_without_a_tail_to_start(tmp_path, no_response, args, says):
    result = run_cli(["simulate", "--t60", "0.15", "--snr", "25", "--sources", "1", "--data", str(tmp_path), *args])
    refused(result, says)
    assert list(tmp_path.iterdir()) == []


def test_a_t_diff_in_ism_mode_is_refused_not_ignored():
    # was: ignored, so a store recorded an option its responses did not follow (another digest, the same data)
    scene = paper_scene()
    says = one_line(image_source_rirs, scene.room, scene.sources[:1], scene.mics, 0.15, t_diff=0.03)
    assert says == ("t_diff=0.03 s is not allowed in mode 'ism', which has no diffuse tail; use mode 'hybrid' "
                    "(--mode hybrid) or leave t_diff out")


def test_a_t_max_too_short_for_any_tail_is_not_told_to_take_a_t_diff_beyond_it():
    # was: "give t_diff >= 0.0275 s", which t_max = 0.02 s refuses in turn
    scene = paper_scene()
    says = one_line(image_source_rirs, scene.room, scene.sources[:1], scene.mics, 0.6, t_max=0.02, mode="hybrid",
                    t_diff=0.015)
    assert says.endswith("after the direct sound 3.206 m away; responses of t_max=0.02 s are too short for a diffuse "
                         "tail: use mode 'ism'")


def _store(root, *extra):
    result = run_cli(["simulate", "--t60", "0.15", "--snr", "25", "--sources", "1", "--mode", "hybrid",
                      "--data", str(root), *extra])
    assert result.exit_code == 0, result.output
    return xr.open_zarr(result.stdout.strip())


def test_t_diff_is_recorded_and_the_default_store_stays_as_it_was(tmp_path):
    default, explicit = _store(tmp_path / "a"), _store(tmp_path / "b", "--t-diff", "0.04")
    config = json.loads(default.attrs["config"])
    assert config["rir_options"] == {"mode": "hybrid"}
    assert default.attrs["config"] == (
        '{"scene_digest": "55c5aec614ecf430", "convention": "gpurir", "t60": 0.15, "snr": 25.0, "split": "test", '
        '"n_sources": 1, "seed": 0, "backend": "torch", "rir_options": {"mode": "hybrid"}, "corpus": "shipped", '
        '"corpus_digest": "7168a067a58adb1c", "hybrid_tail": "image-energy"}')
    assert json.loads(explicit.attrs["config"]) == {**config, "rir_options": {"mode": "hybrid", "t_diff": 0.04}}
    assert config_digest(explicit.attrs) != config_digest(default.attrs)
    a, b = default.signals.values, explicit.signals.values
    assert a.shape == b.shape and not np.array_equal(a, b)
    # a store of the default t_diff is not the one asked with --t-diff: named, not reused
    result = run_cli(["simulate", "--t60", "0.15", "--snr", "25", "--sources", "1", "--mode", "hybrid",
                      "--t-diff", "0.04", "--data", str(tmp_path / "a")])
    refused(result, "(rir_options.t_diff not recorded, 0.04 asked)")
