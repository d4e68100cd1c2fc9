"""Reviews of 2026-12-07: what the evaluation JSON says its baseline is; the TF-CNN's LRP front end."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from xai_loc.models.evaluation import Evaluation


def test_evaluation_json_names_the_centroid_of_the_scored_sources():
    # review: a --sources subset's JSON said "centroid of the split's source positions" beside the centroid of
    # the 3 sources scored; the text report said the latter. Both say so now, with that centroid.
    targets = np.array([[1.0, 5.0, 1.0], [1.0, 5.0, 1.0], [2.0, 6.0, 1.5], [3.0, 5.0, 1.2]])
    ev = Evaluation(predictions=targets + 0.1, targets=targets, source_id=np.array([4, 4, 9, 11]),
                    window_index=np.array([0, 1, 0, 0]))
    baseline = ev.summary()["baseline"]
    assert baseline["kind"] == "centroid of the scored sources' positions (fitted on their own labels)"
    np.testing.assert_allclose(baseline["position"], [2.0, 16 / 3, 3.7 / 3])  # each source once, not per window
    assert "the centroid of the 3 sources" in ev.to_text()


def test_tfcnn_lrp_with_front_epsilon_0_passes_the_cue_maps_relevance_to_the_samples_whole_at_any_level():
    # review: the STFT took the dense layers' absolute epsilon (1e-6), which absorbed 0.03 % of the relevance at
    # -40 dB and 2.8 % at -80 dB re a 0.05 RMS input; it has its own front_epsilon now (default 1e-6, the old maps),
    # as the cochleagram CNN's, and with 0 (LRP-0) the relevance reaches the samples whole
    from xai_loc.explain.tfcnn import explain_tfcnn
    from xai_loc.models.checkpoint import load_model

    model = load_model(Path(__file__).resolve().parents[1] / "pretrained" / "tfcnn_default.safetensors").double().eval()
    x = np.random.default_rng(0).standard_normal((1, 2, 16000)) * 0.05
    x[:, 1] = np.roll(x[:, 0], 5, axis=-1) * 0.7  # the right ear lags: a source on the left
    for level in (1.0, 1e-2, 1e-4):
        out = explain_tfcnn(model, x * level, front_epsilon=0.0)
        cues, samples = (float(out[k].sum()) for k in ("cues", "waveform"))
        assert abs(samples - cues) <= 1e-12 * abs(cues), level
    default = explain_tfcnn(model, x * 1e-4)
    lost = 1 - float(default["waveform"].sum()) / float(default["cues"].sum())
    assert 0.02 < lost < 0.04  # 2.8 % at the default


def test_binaural_explain_help_lists_the_registries_targets_without_importing_torch():
    # the help text is written out (importing the registries for --help took 5.3 s instead of 0.2 s)
    import subprocess
    import sys

    from xai_loc.cli.binaural import TARGET_HELP
    from xai_loc.explain.binaural import target_help

    assert TARGET_HELP == target_help()
    code = ("import sys\nfrom click.testing import CliRunner\nfrom xai_loc.cli import main\n"
            "r = CliRunner().invoke(main, ['binaural', 'explain', '--help'])\n"
            "print(r.exit_code, 'torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.split() == ["0", "False"]


def test_a_class_index_target_with_its_own_cls_option_is_one_line_for_every_classifier():
    # review: cochcnn and cuenet ended in "explain_arrays() got multiple values for keyword argument 'cls'"
    from helpers import one_line

    from xai_loc.explain.binaural import explain_ears
    from xai_loc.models import load_model

    for family in ("cochcnn", "cuenet"):
        model = load_model(Path(__file__).resolve().parents[1] / "pretrained" / f"{family}_default.safetensors")
        x = np.random.default_rng(0).standard_normal((1, 2, model.n_samples)) * 0.05
        assert one_line(explain_ears, model, x, target=3, cls=4) == \
            "cls= is not allowed with target=3, which sets it; leave it out"


def test_every_default_out_lies_under_xai_loc_results(tmp_path, monkeypatch):
    # review: only the notebooks read $XAI_LOC_RESULTS; the CLI wrote under ./xai-loc-results whatever it said, so
    # paper_figures.ipynb missed what `xai-loc reproduce` had written and ran the study again
    import soundfile as sf
    from helpers import run_cli

    wav = tmp_path / "st16.wav"
    sf.write(wav, np.random.default_rng(0).standard_normal((16000, 2)) * 0.05, 16000)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XAI_LOC_RESULTS", str(tmp_path / "results"))
    checkpoint = Path(__file__).resolve().parents[1] / "pretrained" / "tfcnn_default.safetensors"
    assert run_cli(["binaural", "explain", str(checkpoint), str(wav)]).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "results" / "binaural-relevance").iterdir()) == ["cues.nc",
                                                                                              "waveform.nc"]
    assert not (tmp_path / "xai-loc-results").exists()
    monkeypatch.delenv("XAI_LOC_RESULTS")  # unset: ./xai-loc-results, as before
    assert run_cli(["binaural", "explain", str(checkpoint), str(wav)]).exit_code == 0
    assert (tmp_path / "xai-loc-results" / "binaural-relevance" / "cues.nc").exists()


def test_bast_targets_of_their_own_direction_take_the_true_azimuths_beside_them():
    # review: explain_ears(bast, x, azimuth=[30, 300], target='cos') said "azimuth= is not allowed with
    # target='cos', which sets it" (the truth's key taken for the target's own direction); it explains again
    from xai_loc.explain.binaural import explain_ears
    from xai_loc.models import load_model

    model = load_model(Path(__file__).resolve().parents[1] / "pretrained" / "bast_default.safetensors")
    x = np.random.default_rng(0).standard_normal((2, 2, model.n_samples)) * 0.05
    for target in ("cos", "sin", 45.0):
        with_truth = explain_ears(model, x, azimuth=[30, 300], target=target)
        alone = explain_ears(model, x, target=target)
        for level in alone:
            np.testing.assert_array_equal(with_truth[level].values, alone[level].values)


def test_a_batch_size_beyond_2_to_the_20_is_refused_before_any_work(tmp_path):
    # review: perturb --batch-size 18446744073709551616 ran every window, then crashed writing its result ("Object
    # dtype dtype('O') has no native HDF5 equivalent"); explain crashed in zarr ("Maximum allowed dimension exceeded")
    from helpers import refused, run_cli

    for command in (["perturb", "--t60", "0.6", "--snr", "10"], ["explain", "--t60", "0.6", "--snr", "10"]):
        result = run_cli([*command, "--sources", "1", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"),
                          "--batch-size", str(2**64)])
        refused(result, f"--batch-size {2**64} is not allowed; use an integer in [1, 1048576]")
    assert not (tmp_path / "d").exists() and not (tmp_path / "o").exists()


def test_write_wavs_on_a_full_disk_is_an_oserror_naming_the_file_asked_for(tmp_path, monkeypatch):
    # review: libsndfile wrote into the staging folder itself, so a full disk was "LibsndfileError: System error."
    # naming the hidden staging copy; the audio is now encoded in memory and written as plain bytes
    import errno

    from test_explain import fake_dataset, randomized

    from xai_loc.explain import explain_store, open_explained_signals, open_relevance, write_wavs
    from xai_loc.models import LocCNN

    path, _ = fake_dataset(tmp_path / "test.zarr")
    store = explain_store(randomized(LocCNN(4, 350)).float(), path, progress=False)
    rel, ds = open_relevance(store), open_explained_signals(store)
    wanted = write_wavs(rel, ds, tmp_path / "whole", sources=[0])[0].read_bytes()
    real = Path.write_bytes

    def full(self, data):
        if self.suffix == ".wav":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    try:
        write_wavs(rel, ds, tmp_path / "wav", sources=[0])
    except OSError as err:
        assert err.errno == errno.ENOSPC and err.filename == str(tmp_path / "wav" / "source-0000_relevance.wav")
    else:
        raise AssertionError("no error on a full disk")
    assert not (tmp_path / "wav").exists()  # the folder it made removed, nothing half-written
    monkeypatch.undo()
    assert write_wavs(rel, ds, tmp_path / "again", sources=[0])[0].read_bytes() == wanted  # the same bytes


def test_xl_explain_pickles_by_name_as_a_dask_task_needs():
    # review: once callable, the subpackage could not be pickled ("cannot pickle '_CallableModule' object"), so
    # a dask task or a functools.partial of xl.explain failed where the function had worked
    import functools
    import pickle

    import cloudpickle

    import xai_loc as xl
    import xai_loc.explain.store  # noqa: F401  (the subpackage bound first)

    assert pickle.loads(pickle.dumps(xl.explain)) is xl.explain
    assert cloudpickle.loads(cloudpickle.dumps(xl.explain)) is xl.explain
    assert pickle.loads(pickle.dumps(functools.partial(xl.explain, target="prediction"))).func is xl.explain
