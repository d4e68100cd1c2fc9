"""Binaural commands: the probes' results and figures all or none, checked before any work; bounded sound counts;
``--snr LOW HIGH`` refused in the flag's words; the probes' help lists every file they write."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import never, one_line, refused, run_cli

from xai_loc.cli.binaural import SceneOptions

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"


@pytest.fixture
def shipped(monkeypatch):
    """The shipped checkpoints, wherever the package is imported from."""
    monkeypatch.setenv("XAI_LOC_PRETRAINED", str(PRETRAINED))


@pytest.mark.parametrize("command, folder", [
    (["binaural", "tfcnn", "probe"], "band_profile.png"),
    (["binaural", "cuenet", "probe"], "cue_probe.pdf"),
], ids=["tfcnn", "cuenet"])
def test_probe_refuses_a_figure_path_that_is_a_folder_before_any_work(tmp_path, monkeypatch, shipped, command,
                                                                      folder):
    monkeypatch.setattr(SceneOptions, "test_store", never("rendering the test scenes"))
    out = tmp_path / "res"
    (out / folder).mkdir(parents=True)
    (out / "earlier.nc").write_bytes(b"earlier")
    result = run_cli([*command, "--data", str(tmp_path / "data"), "--out", str(out)])
    refused(result, f"cannot write the file {str(out / folder)!r}: it is a folder")
    assert sorted(p.name for p in out.iterdir()) == sorted(["earlier.nc", folder])
    assert (out / "earlier.nc").read_bytes() == b"earlier" and not (tmp_path / "data").exists()


def test_tfcnn_probe_keeps_an_earlier_result_when_drawing_fails(tmp_path, monkeypatch, shipped):
    import xai_loc.experiments.ipd_ild_probe as ipd_ild_probe
    import xai_loc.plots.band_profile as band_profile

    def probe(model, scenes, out_dir, **kwargs):  # a finished result, then the figure fails
        share = xr.DataArray(np.full((1, 2, 3), 1 / 6), dims=("snr", "channel", "band"))
        path = Path(out_dir) / "band_profile.nc"
        xr.Dataset({"share": share}).to_netcdf(path)
        return {"profile": path}

    def fails(ds, stem):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(SceneOptions, "test_store", lambda self, spec, root: "scenes")
    monkeypatch.setattr(ipd_ild_probe, "run_ipd_ild_probe", probe)
    monkeypatch.setattr(band_profile, "draw_band_profile", fails)
    out = tmp_path / "res"
    out.mkdir()
    (out / "band_profile.nc").write_bytes(b"earlier")
    result = run_cli(["binaural", "tfcnn", "probe", "--data", str(tmp_path / "data"), "--out", str(out)])
    assert isinstance(result.exception, RuntimeError) and str(result.exception) == "drawing failed"
    assert [p.name for p in out.iterdir()] == ["band_profile.nc"]
    assert (out / "band_profile.nc").read_bytes() == b"earlier"


def test_sound_counts_are_bounded_in_the_spec():
    from xai_loc.data.bast_scenes import BastSceneSpec
    from xai_loc.data.binaural_store import MAX_PER_SOUND, MAX_SOUNDS, BinauralSpec

    assert (MAX_SOUNDS, MAX_PER_SOUND) == (10_000, 100)
    assert one_line(BinauralSpec, n_sounds=10_001) == "n_sounds=10001 is not allowed; use an integer in [1, 10000]"
    assert one_line(BinauralSpec, per_sound=101) == "per_sound=101 is not allowed; use an integer in [1, 100]"
    assert one_line(BastSceneSpec, n_sounds=10**12) == \
        "n_sounds=1000000000000 is not allowed; use an integer in [1, 10000]"
    spec = BinauralSpec(n_sounds=10_000, per_sound=100)  # the bounds themselves are allowed
    assert (spec.n_sounds, spec.per_sound) == (10_000, 100) and BastSceneSpec(n_sounds=10_000).n_sounds == 10_000


def test_the_command_line_offers_the_spec_bounds():
    import xai_loc.cli.binaural as cli
    import xai_loc.data.binaural_store as store

    assert (cli.MAX_SOUNDS, cli.MAX_PER_SOUND) == (store.MAX_SOUNDS, store.MAX_PER_SOUND)


#: Each command taking --n-sounds (the cochleagram CNN's also --per-sound), an option it needs, and the library call
#: that would do its work.
COUNTED = [
    (("binaural", "simulate"), ["--split", "test"], "xai_loc.data.binaural_store.simulate_binaural"),
    (("binaural", "train"), [], "xai_loc.models.classifier_training.train_on_spec"),
    (("binaural", "cues"), [], "xai_loc.experiments.cues.run_duplex_probe"),
    (("binaural", "bast", "train"), [], "xai_loc.models.bast.fit_bast"),
    (("binaural", "bast", "table"), [], "xai_loc.experiments.bast_table.run_bast_table"),
    (("binaural", "bast", "explain"), [], "xai_loc.experiments.bast_table.mirror_relevance"),
]


@pytest.mark.parametrize("command, given, work", COUNTED, ids=[" ".join(c[1:]) for c, _, _ in COUNTED])
def test_n_sounds_is_bounded_on_the_command_line(tmp_path, monkeypatch, shipped, command, given, work):
    monkeypatch.setattr(work, never(work))
    result = run_cli([*command, *given, "--n-sounds", "1000000000000", "--data", str(tmp_path / "data")])
    refused(result, "--n-sounds 1000000000000 is not allowed; use an integer in [1, 10000]")
    assert not (tmp_path / "data").exists()
    help_text = " ".join(run_cli([*command, "--help"]).output.split())
    assert "at most 10000." in help_text
    if "bast" not in command:
        assert "at most 100 (a rendering is 96 kB on disk at the default --duration)" in help_text
        result = run_cli([*command, *given, "--per-sound", "101", "--data", str(tmp_path / "data")])
        refused(result, "--per-sound 101 is not allowed; use an integer in [1, 100]")


@pytest.mark.parametrize("command, given, work", COUNTED[:3], ids=["simulate", "train", "cues"])
def test_snr_range_is_refused_in_the_flags_words(tmp_path, monkeypatch, shipped, command, given, work):
    monkeypatch.setattr(work, never(work))
    result = run_cli([*command, *given, "--snr", "10", "5", "--data", str(tmp_path / "data")])
    line = refused(result)
    assert line == "Error: --snr 10 5 is not allowed; give LOW HIGH dB with -60 <= LOW <= HIGH <= 200\n"
    result = run_cli([*command, *given, "--snr", "7.5", "-2", "--data", str(tmp_path / "data")])
    refused(result, "--snr 7.5 -2 is not allowed")


@pytest.mark.parametrize("command, files", [
    (["binaural", "tfcnn", "probe"], "writes band_profile.nc and band_profile.png/.pdf under OUT, all or none."),
    (["binaural", "cuenet", "probe"], "writes cue_relevance.nc, cue_reliance.nc, cue_ablation.nc and "
                                      "cue_probe.png/.pdf under OUT, all or none."),
], ids=["tfcnn", "cuenet"])
def test_probe_help_lists_every_file_written(command, files):
    assert files in " ".join(run_cli([*command, "--help"]).output.split())
