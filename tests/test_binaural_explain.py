"""One entry point explains every binaural family: levels, dims, conservation between levels, bad input."""
import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from xai_loc.cli import main
from xai_loc.errors import InputError
from xai_loc.explain.binaural import EXPLAINERS, explain_ears, read_ear_signals, write_ear_relevance
from xai_loc.models import MODELS, load_model
from xai_loc.models.zoo import pretrained_dir

#: Levels each family explains, the finer first: relevance sums must agree between them.
LEVELS = {"cochcnn": ("waveform", "cochleagram"), "tfcnn": ("waveform", "cues"), "bast": ("waveform", "spectrogram"),
          "cuenet": ("cues",)}


def _ears(model, n: int = 2) -> np.ndarray:
    rng = np.random.default_rng(3)
    left = 0.05 * rng.standard_normal((n, model.n_samples))
    return np.stack([left, np.roll(left, 6, axis=1)], axis=1)  # the right ear lags


def test_every_binaural_architecture_has_an_explainer():
    assert set(EXPLAINERS) == set(MODELS) - {"loccnn", "samplecnn"}


@pytest.mark.parametrize("arch", sorted(LEVELS))
def test_shipped_models_explain_with_labelled_levels(arch, tmp_path):
    path = pretrained_dir() / f"{arch}_default.safetensors"
    model = load_model(path)
    result = explain_ears(path, _ears(model))
    assert tuple(sorted(result)) == tuple(sorted(LEVELS[arch]))
    for data in result.values():
        assert data.sizes["example"] == 2 and data.attrs["checkpoint"] == path.name
    if arch == "cuenet":
        # float32 softmax over 3 cues: a few float32 roundings (~5e-7); 1e-5 leaves a wide margin
        np.testing.assert_allclose(result["cues"]["attention"].sum("cue"), 1.0, rtol=1e-5)
    else:
        fine, coarse = (result[level] for level in LEVELS[arch])
        assert fine.dims == ("example", "ear", "time") and coarse.dims[0] == "example" and coarse.ndim == 4
        # the front ends pass relevance on up to their Epsilon stabilizers (not a rounding matter:
        # cochcnn's gap, ~1.3e-3 relative, is the same in float64; bast and tfcnn are within ~5e-6)
        np.testing.assert_allclose(fine.sum(("ear", "time")), coarse.sum([d for d in coarse.dims if d != "example"]),
                                   rtol=5e-3)
    written = write_ear_relevance(result, tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{level}.nc" for level in LEVELS[arch])


def test_levels_of_another_explanation_are_never_mixed(tmp_path):
    import xarray as xr

    from xai_loc.explain.binaural import LEVELS as ALL_LEVELS

    assert set(ALL_LEVELS) == {level for levels in LEVELS.values() for level in levels}
    rel = xr.DataArray(np.ones((1, 2, 4)), dims=("example", "ear", "time"), name="relevance")
    write_ear_relevance({"waveform": rel, "cochleagram": rel}, tmp_path)
    write_ear_relevance({"waveform": 2 * rel, "cochleagram": rel}, tmp_path)  # the same levels: replaced
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(InputError, match=r"^\S+ holds cochleagram.nc of another explanation, which this one would "
                                         r"not replace; results are never mixed: remove it or choose another --out$"):
        write_ear_relevance({"waveform": rel, "cues": rel}, tmp_path)  # a TF-CNN's into a cochleagram CNN's
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_sound_files_are_cut_into_windows_and_checked(tmp_path):
    x = np.random.default_rng(0).standard_normal((2500, 2)) * 0.1
    sf.write(tmp_path / "s.wav", x, 16000, subtype="FLOAT")
    windows = read_ear_signals(tmp_path / "s.wav", 16000, 1000)
    assert windows.shape == (2, 2, 1000)
    np.testing.assert_allclose(windows[1, 1], x[1000:2000, 1], atol=1e-7)
    with pytest.raises(InputError, match="44100 Hz"):
        read_ear_signals(tmp_path / "s.wav", 44100, 1000)
    sf.write(tmp_path / "mono.wav", x[:, 0], 16000)
    with pytest.raises(InputError, match="1 channel"):
        read_ear_signals(tmp_path / "mono.wav", 16000, 1000)
    with pytest.raises(InputError, match="at least 4000"):
        read_ear_signals(tmp_path / "s.wav", 16000, 4000)
    with pytest.raises(InputError, match="NaN"):
        explain_ears(pretrained_dir() / "tfcnn_default.safetensors", np.full((1, 2, 16000), np.nan))


def test_cli_explains_a_sound_file_and_refuses_a_wrong_rate(tmp_path):
    x = np.random.default_rng(1).standard_normal((16000, 2)) * 0.05
    sf.write(tmp_path / "s.wav", x, 16000)
    ckpt = str(pretrained_dir() / "bast_default.safetensors")
    runner = CliRunner()
    result = runner.invoke(main, ["binaural", "explain", ckpt, str(tmp_path / "s.wav"), "--method",
                                  "attention_rollout", "--out", str(tmp_path / "rel")])
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == [str(tmp_path / "rel" / "spectrogram.nc")]
    # 1 s at 16 kHz: two 0.5 s windows explained, shown as a progress line (stderr is no terminal here)
    assert "explain attention_rollout: 100%" in result.stderr and "2/2" in result.stderr
    result = runner.invoke(main, ["binaural", "explain", str(pretrained_dir() / "cochcnn_default.safetensors"),
                                  str(tmp_path / "s.wav"), "--out", str(tmp_path / "bad")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "48000 Hz" in result.output
    assert not (tmp_path / "bad").exists()
    result = runner.invoke(main, ["binaural", "explain", ckpt, str(tmp_path / "s.wav"), "--examples", "0"])
    assert result.exit_code == 2 and "--examples 0" in result.output


def test_family_explainers_take_any_method_and_class_target():
    from xai_loc.explain.cochcnn import explain_cochcnn
    from xai_loc.models import build_model

    torch.manual_seed(0)
    model = build_model("cochcnn", layers=["c4 1x8", "p1x8", "c8 2x4", "p2x4"], n_samples=4800, dense=16).eval()
    x = _ears(model)
    rel = explain_cochcnn(model, x, target="class_probability", method="input_x_gradient")
    with torch.no_grad():
        logits = model(torch.as_tensor(x, dtype=torch.float32))
    chosen = logits.argmax(1)
    assert rel["cochleagram"]["target_class"].values.tolist() == chosen.tolist()
    assert rel["waveform"].attrs["method"] == "input_x_gradient" and rel["cochleagram"].shape == (2, 2, 39, 800)
    assert np.isfinite(rel["waveform"].values).all() and np.abs(rel["waveform"].values).sum(axis=(1, 2)).min() > 0
    with pytest.raises(InputError, match="target='true_class_probability' needs one label per example"):
        explain_cochcnn(model, x, target="true_class_probability")
    with pytest.raises(InputError, match="target='azimuth' is not allowed; use 'prediction', 'truth', a class"):
        explain_cochcnn(model, x, target="azimuth")


@pytest.mark.parametrize("arch, options", [*((arch, {}) for arch in sorted(LEVELS)),
                                           ("bast", {"method": "integrated_gradients", "n_steps": 4}),
                                           ("bast", {"method": "attention_rollout"})])
def test_every_explainer_shows_progress_and_gives_the_same_numbers(arch, options, capsys):
    path = pretrained_dir() / f"{arch}_default.safetensors"
    x = _ears(load_model(path), 3)
    quiet = explain_ears(path, x, batch_size=2, **options)
    assert capsys.readouterr().err == ""
    shown = explain_ears(path, x, batch_size=2, progress=True, **options)
    err = capsys.readouterr().err
    assert "100%" in err and "3/3" in err  # 3 examples in batches of 2 (stderr is no terminal here)
    assert sorted(shown) == sorted(quiet)
    for level in quiet:
        assert quiet[level].identical(shown[level])
