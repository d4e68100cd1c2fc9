"""Sound kinds keep their streams whatever else is registered; front ends take half-precision waveforms; truncated WAV
files are refused; the compression's gradient is 0 below zero; every front end checks its rate the same way."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import one_line, refused, run_cli

from xai_loc import checks
from xai_loc.acoustics import binaural, speech
from xai_loc.data import binaural_store
from xai_loc.explain.attribute import resolve_model
from xai_loc.explain.binaural import explain_ears
from xai_loc.features.binaural_cues import BinauralCues, GammatoneFilterbank
from xai_loc.features.cochleagram import Cochleagram, ERBFilterbank, PowerCompression, SincDownsample
from xai_loc.features.ipd_ild import IPDILD
from xai_loc.features.spectrogram import BinauralSpectrogram

COCHCNN = Path(__file__).resolve().parents[1] / "pretrained" / "cochcnn_default.safetensors"
#: The built-in kinds by the stream key they have always had (their places in the sorted names of the five).
BUILT_IN = ("am_noise", "click_train", "pink_burst", "tone_complex", "white_burst")


@pytest.fixture
def plug_in(monkeypatch):
    """``plug_in(kind)`` registers a white-noise kind through :func:`register_sound`; gone after the test."""
    def register(kind: str) -> None:
        monkeypatch.setitem(binaural.SOUNDS, kind, None)  # recorded as absent: monkeypatch removes both entries
        monkeypatch.setitem(binaural.SOUND_MIN_FS, kind, 1)
        binaural.register_sound(kind)(lambda rng, fs, n: rng.standard_normal(n))
    return register


# -- 1: a registered kind moves no other kind's stream ---------------------------------------------------------------


def test_registering_a_sound_kind_changes_no_other_kinds_sounds(plug_in):
    spec = binaural_store.BinauralSpec(kinds=("white_burst",), n_sounds=10)
    stored = binaural_store._Renderer(spec).sound("white_burst", 3)
    plug_in("zz_texture")
    zz = binaural.synthesize("zz_texture", 16000, 0.05, seed=3)
    plug_in("a_plugin_texture")  # sorts before every built-in kind
    np.testing.assert_array_equal(binaural_store._Renderer(spec).sound("white_burst", 3), stored)
    np.testing.assert_array_equal(binaural.synthesize("zz_texture", 16000, 0.05, seed=3), zz)
    for key, kind in enumerate(BUILT_IN):  # the streams the shipped data were made with
        x = binaural.SOUNDS[kind](np.random.default_rng(np.random.SeedSequence([3, key])), 16000, 800)
        np.testing.assert_array_equal(binaural.synthesize(kind, 16000, 0.05, seed=3),
                                      (x / np.abs(x).max()).astype(np.float32))
    # a plug-in kind has a stream of its own, not a built-in kind's
    noise = np.random.default_rng(np.random.SeedSequence([3, BUILT_IN.index("white_burst")])).standard_normal(800)
    assert not np.array_equal(binaural.synthesize("a_plugin_texture", 16000, 0.05, seed=3),
                              (noise / np.abs(noise).max()).astype(np.float32))


# -- 2: half-precision waveforms --------------------------------------------------------------------------------------

#: Each front end with a clip length it takes.
FRONT_ENDS = {"cochleagram": (lambda: Cochleagram(signal_length=4800), 4800), "ipd_ild": (IPDILD, 1600),
              "spectrogram": (BinauralSpectrogram, 8000), "binaural_cues": (BinauralCues, 2205)}


def _ears(n_samples: int) -> torch.Tensor:
    """Two examples of quiet noise, the second silent in its first third (floors and silence thresholds matter)."""
    x = 0.05 * torch.randn(2, 2, n_samples, generator=torch.Generator().manual_seed(0))
    x[1, :, : n_samples // 3] = 0.0
    return x


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", FRONT_ENDS)
def test_half_precision_waveforms_are_computed_in_float32(name, dtype):
    """Each front end computes half-precision waveforms in float32 and returns its own dtype, finite and equal to
    the float32 result rounded (torch.fft, which takes no half precision on the CPU, once stopped the cochleagram and
    the cues, and the float16 spectrogram came out all NaN, its 1e-14 floor being 0 there)."""
    make, n = FRONT_ENDS[name]
    x = _ears(n).to(dtype)
    out = make()(x)
    assert out.dtype == dtype and bool(torch.isfinite(out).all())
    assert torch.equal(out, make()(x.float()).to(dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["cochleagram", "ipd_ild", "spectrogram", "binaural_cues"])
def test_a_front_end_cast_to_half_precision_keeps_its_kernels_as_designed(name, dtype):
    """A model cast with .half() or .to(torch.bfloat16) rounded the filterbanks and the low-pass with its weights:
    the waveform gradient of a bfloat16 cochleagram then correlated 0.6 with the float32 one of the same input."""
    make, n = FRONT_ENDS[name]
    x = _ears(n).to(dtype)
    assert torch.equal(make().to(dtype)(x), make()(x.float()).to(dtype))


def test_the_gradient_of_a_half_precision_cochleagram_is_its_float32_gradient():
    make, n = FRONT_ENDS["cochleagram"]
    x = _ears(n).bfloat16().requires_grad_(True)
    upstream = torch.randn(2, 2, 39, 800, generator=torch.Generator().manual_seed(1))
    make().bfloat16()(x).backward(upstream.bfloat16())
    x32 = x.detach().float().requires_grad_(True)
    make()(x32).backward(upstream.bfloat16().float())
    assert x.grad.dtype == torch.bfloat16
    assert torch.equal(x.grad, x32.grad.bfloat16())


@pytest.mark.parametrize("method", ["lrp", "saliency"])
def test_a_bfloat16_cochleagram_cnn_is_explained_like_its_float32_weights(method):
    """A bfloat16 cochleagram CNN (the dtype the float16 refusal of LRP names beside model.float(); torch.fft once
    stopped it, taking no half precision on the CPU) is explained like its float32 weights on the same
    bfloat16-rounded waveform: bfloat16's 8 significant bits through the network move the relevance by about 10 %
    (median), and the maps correlate above 0.98."""
    x = (0.05 * np.random.default_rng(0).standard_normal((1, 2, 12000))).astype(np.float32)
    rounded = torch.from_numpy(x).bfloat16().float().numpy()
    reference = explain_ears(resolve_model(COCHCNN)[0], rounded, method=method)
    got = explain_ears(resolve_model(COCHCNN)[0].to(torch.bfloat16), x, method=method)
    assert set(got) == {"waveform", "cochleagram"}
    for level, data in got.items():
        a, b = reference[level].values.astype(np.float64), data.values.astype(np.float64)
        assert np.isfinite(b).all()
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.97, level
        assert abs(b.sum() - a.sum()) < 0.03 * np.abs(a).sum(), level


# -- 3: truncated WAV files -------------------------------------------------------------------------------------------


def _cut(path, keep_bytes: int):
    """A copy of ``path`` beside it, its last bytes cut off (the header still declares them)."""
    data = path.read_bytes()
    cut = path.with_name("cut_" + path.name)
    cut.write_bytes(data[:len(data) - keep_bytes])
    return cut


def test_a_truncated_wav_in_a_speech_folder_is_refused_on_load(tmp_path):
    """Review: libsndfile read it as a shorter valid file, without a word."""
    folder = tmp_path / "speech"
    folder.mkdir()
    sf.write(folder / "a.wav", np.sin(np.arange(1000) / 10.0), 16000, subtype="PCM_16")
    data = (folder / "a.wav").read_bytes()
    offset = data.index(b"data") + 4  # a stream's header: the data size left unknown (0xFFFFFFFF) is read in full
    (folder / "stream.wav").write_bytes(data[:offset] + struct.pack("<I", 0xFFFFFFFF) + data[offset + 4:])
    cut = _cut(folder / "a.wav", 152)
    corpus = speech.SpeechCorpus.from_folder(folder)
    assert corpus.load("a.wav").shape == corpus.load("stream.wav").shape == (1000,)
    says = f"{cut} is truncated: its header declares 1000 frames, the file holds 924"
    assert one_line(corpus.load, "cut_a.wav") == says


def test_binaural_explain_refuses_a_truncated_recording(tmp_path):
    """Review: exit code 0, fewer windows explained."""
    sf.write(tmp_path / "left.wav", np.full((24000, 2), 0.1), 48000, subtype="FLOAT")
    cut = _cut(tmp_path / "left.wav", 57627)
    result = run_cli(["binaural", "explain", str(COCHCNN), str(cut), "--out", str(tmp_path / "out")])
    refused(result, f"{cut} is truncated: its header declares 24000 frames, the file holds 16796")
    assert not (tmp_path / "out").exists()


# -- 4: the compression's gradient below zero -------------------------------------------------------------------------


def test_power_compression_has_no_gradient_where_its_input_is_negative():
    """Review: 0.3 * 1e-7 ** -0.7 = 23830 at -1, where the output is constant (0)."""
    x = torch.tensor([-1.0, -1e-12, 0.0, 1.0], dtype=torch.float64, requires_grad=True)
    PowerCompression()(x).sum().backward()
    assert x.grad[:2].tolist() == [0.0, 0.0]
    torch.testing.assert_close(x.grad[2:], torch.tensor([0.3 * 1e-7 ** -0.7, 0.3], dtype=torch.float64),
                               rtol=1e-15, atol=0)


# -- 5: one rate check ------------------------------------------------------------------------------------------------


#: Each front end and building block that takes a rate, by a rate it takes.
RATED = [(lambda fs: Cochleagram(fs=fs, signal_length=4800), 48000),
         (lambda fs: ERBFilterbank(fs=fs, signal_length=4800), 48000),
         (lambda fs: BinauralSpectrogram(fs=fs), 16000), (lambda fs: IPDILD(fs=fs), 16000),
         (lambda fs: BinauralCues(fs=fs), 44100), (lambda fs: GammatoneFilterbank(fs, [100.0]), 44100)]


def test_every_front_end_takes_whole_rates_of_any_number_type_as_int():
    """Review: IPDILD refused 16000.0 and np.float64(16000), BinauralCues 44100.0."""
    for build, fs in RATED:
        for given in (fs, float(fs), np.float64(fs), np.int64(fs)):
            module = build(given)
            assert type(module.fs) is int and module.fs == fs, (fs, given)
    assert SincDownsample(np.float64(48000), 8000.0).factor == 6


def test_every_front_end_refuses_a_rate_in_the_same_words():
    named = [*((build, "fs") for build, _ in RATED), (lambda fs: SincDownsample(48000, fs), "out_fs"),
             (speech.check_fs, "fs")]
    for build, name in named:
        for fs in (16000.5, True, "16000", float("nan"), 0, -16000):
            says = f"{name}={fs!r} is not allowed; give a positive integer rate in Hz such as 16000"
            assert one_line(build, fs) == says
    assert speech.check_fs is checks.check_fs
    says = "fs=800 is not allowed; use an integer sample rate >= 1000 Hz"
    assert one_line(BinauralCues, fs=np.float64(800.0)) == says


def test_a_bfloat16_cue_network_is_explained_in_float32_arrays():
    """The cue front end now runs on bfloat16 waveforms, but explain_cuenet handed its bfloat16 cue maps and
    attention weights to NumPy, which has no bfloat16 (TypeError)."""
    from xai_loc.explain.cuenet import explain_cuenet
    from xai_loc.models.cuenet import CueNet

    torch.manual_seed(0)
    model = CueNet(channels=8, hidden=16).eval()
    rng = np.random.default_rng(0)
    ears = (0.1 * rng.standard_normal((2, 2, 22050))).astype(np.float32)  # 0.5 s at 44.1 kHz
    want = explain_cuenet(model, ears, target="prediction")["cues"]
    got = explain_cuenet(model.to(torch.bfloat16), ears, target="prediction")["cues"]
    assert got["relevance"].dtype == np.float32 and got["attention"].dtype == np.float32
    assert np.isfinite(got["relevance"].values).all()
    np.testing.assert_allclose(got["attention"].values, want["attention"].values, atol=0.05)
    assert np.corrcoef(got["relevance"].values.ravel(), want["relevance"].values.ravel())[0, 1] > 0.9
