"""Regression tests of reviewed acoustics defects: cut or damaged Ogg speech read as shorter utterances without a
word, backend gpurir refused for a missing package only after a run started, complex inputs of the renderers cast
to their real parts, and the documented width of gpuRIR's arrival window (gpuRIR rounds it)."""
import math
import re
import shutil
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import never, one_line, refused, run_cli

from xai_loc.acoustics import conventions
from xai_loc.acoustics.backends import check_rirs
from xai_loc.acoustics.conventions import get_convention
from xai_loc.acoustics.ism import hann_sinc
from xai_loc.acoustics.render import add_white_noise, render_components, render_windows, render_windows_batch
from xai_loc.acoustics.speech import SHIPPED_DIR, read_sound
from xai_loc.data.scene import paper_scene

# ------------------------------------------------------------------------------------------------
# 1. A cut or damaged Ogg file is refused, not read as a shorter utterance
# ------------------------------------------------------------------------------------------------

DAMAGED = "is truncated or damaged: "


def _ogg(path, n=48000):
    rng = np.random.default_rng(0)
    x = 0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000) + 0.05 * rng.standard_normal(n)
    sf.write(path, x, 16000, format="OGG", subtype="VORBIS")
    return path.read_bytes()


def _flipped(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0xFF
    out[at + 1] ^= 0xFF
    return bytes(out)


@pytest.mark.parametrize(("damage", "says"), [
    (lambda b: b[: len(b) // 2], r"its Ogg pages end at byte \d+ of \d+ before the end of the stream"),  # review:
    # it read as 14976 of 48000 frames
    (lambda b: b[:-10], r"its Ogg pages end at byte \d+ of \d+ before the end of the stream"),  # 46720 frames
    (lambda b: _flipped(b, len(b) - 10), r"the Ogg page at byte \d+ fails its checksum"),  # 46720 frames
], ids=["half", "end-page-cut", "end-page-checksum"])
def test_a_cut_ogg_file_is_refused(tmp_path, damage, says):
    whole = _ogg(tmp_path / "whole.ogg")
    assert read_sound(tmp_path / "whole.ogg")[0].shape == (48000, 1)
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(damage(whole))
    assert re.fullmatch(re.escape(f"{cut} {DAMAGED}") + says, one_line(read_sound, cut))


def test_an_ogg_file_with_a_damaged_page_inside_is_refused(tmp_path):
    path = tmp_path / "flipped.ogg"
    path.write_bytes(_flipped(_ogg(tmp_path / "whole.ogg"), 16651 // 2))
    assert sf.info(str(path)).frames == 48000  # the header still says 48000; review: read as 31616 frames
    assert re.fullmatch(re.escape(f"{path} {DAMAGED}") + r"the Ogg page at byte \d+ fails its checksum",
                        one_line(read_sound, path))


def test_an_ogg_file_whose_first_audio_page_is_damaged_is_refused(tmp_path):
    # review: libsndfile then lowers the frames it declares too (esp000: 21440 of 40640 decoded, both checks passed)
    whole = (SHIPPED_DIR / "esp000.ogg").read_bytes()
    path = tmp_path / "esp000.ogg"
    path.write_bytes(_flipped(whole, 3446 + 200))  # pages at 0, 58, 3446, ...: the first audio page
    assert one_line(read_sound, path) == f"{path} {DAMAGED}the Ogg page at byte 3446 fails its checksum"


def test_whole_ogg_streams_with_trailing_bytes_read_and_a_chained_file_is_refused(tmp_path):
    # review: 70 kB after a whole stream were refused ("its last intact Ogg page does not end the stream"), and a
    # chained file (two streams) read as its first stream alone without a word
    whole = _ogg(tmp_path / "whole.ogg")
    for name, data in (("padded.ogg", whole + bytes(70_000)), ("tagged.ogg", whole + b"TAG" + bytes(125))):
        (tmp_path / name).write_bytes(data)
        assert read_sound(tmp_path / name)[0].shape == (48000, 1)
    chained = tmp_path / "chained.ogg"
    chained.write_bytes(whole + whole)
    assert one_line(read_sound, chained) == \
        f"{chained} {DAMAGED}it chains a second Ogg stream after the first, which is read alone"


def test_the_shipped_corpus_reads_as_libsndfile_decodes_it_and_a_cut_copy_is_refused(tmp_path):
    files = sorted(SHIPPED_DIR.glob("*.ogg"))
    assert len(files) == 300
    for path in files:
        samples, fs = read_sound(path)
        expected, expected_fs = sf.read(str(path), dtype="float64", always_2d=True)
        assert fs == expected_fs == 16000
        np.testing.assert_array_equal(samples, expected)
    cut = tmp_path / "esp000.ogg"
    cut.write_bytes(files[0].read_bytes()[:-100])
    assert one_line(read_sound, cut).startswith(f"{cut} {DAMAGED}its Ogg pages end at byte")


def test_simulate_refuses_a_cut_ogg_in_the_speech_folder(tmp_path):
    speech, data = tmp_path / "speech", tmp_path / "data"
    speech.mkdir()
    shutil.copy(SHIPPED_DIR / "esp000.ogg", speech / "a.ogg")
    (speech / "a.ogg").write_bytes((SHIPPED_DIR / "esp000.ogg").read_bytes()[:-100])
    result = run_cli(["simulate", "--t60", "0.15", "--snr", "25", "--sources", "1", "--speech", str(speech),
                      "--data", str(data)])  # review: it gave exit 0, a store of the shorter utterance
    refused(result, f"{speech / 'a.ogg'} {DAMAGED}its Ogg pages end at byte")
    assert not data.exists() or list(data.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# 2. Backend gpurir without the gpuRIR package is refused before any work
# ------------------------------------------------------------------------------------------------

MISSING = "backend 'gpurir' needs the gpuRIR package (CUDA); install it or use 'torch'"


def test_gpurir_without_its_package_is_refused_by_the_check(monkeypatch):
    monkeypatch.setitem(sys.modules, "gpuRIR", None)  # not importable, whatever this machine has
    scene = paper_scene()
    assert one_line(check_rirs, "gpurir", scene.room, scene.sources[:2], scene.mics, 0.15) == MISSING


def test_simulate_refuses_gpurir_without_its_package_before_any_store_file(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gpuRIR", None)
    monkeypatch.setattr("xai_loc.data.store._plan", never("planning the split (reading utterances)"))
    data = tmp_path / "data"
    result = run_cli(["simulate", "--backend", "gpurir", "--t60", "0.15", "--snr", "25", "--sources", "1",
                      "--data", str(data)])  # review: a progress bar, .lock and .partial files, then the refusal
    refused(result, MISSING)
    assert not data.exists() or list(data.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# 3. Complex (and boolean) inputs of the renderers are refused, not cast to their real parts
# ------------------------------------------------------------------------------------------------

SPEECH = np.random.default_rng(0).standard_normal(300)
RIRS = np.random.default_rng(1).standard_normal((2, 100))


def test_complex_responses_are_refused_not_rendered_as_zeros():
    # review: it gave all-zero windows (the imaginary responses cast to 0 with a ComplexWarning)
    says = one_line(render_windows, "gpurir", SPEECH, RIRS * 1j, 10.0, np.random.default_rng(0), 64)
    assert says.startswith("rirs array(") and says.endswith(" of dtype complex128 is not an array of real numbers")
    says = one_line(render_components, "gpurir", SPEECH, RIRS * 1j, RIRS, np.zeros(2), 10.0,
                    np.random.default_rng(0), 64, 16000)
    assert says.endswith(" of dtype complex128 is not an array of real numbers"), says
    says = one_line(render_windows_batch, "gpurir", [SPEECH], torch.from_numpy(RIRS * 1j)[None], 10.0,
                    [np.random.default_rng(0)], 64)
    assert says == "rirs of dtype torch.complex128 are not real numbers; give a tensor of real responses"


def test_complex_or_boolean_speech_is_refused_naming_its_dtype():
    # review: it gave "speech is silent (all zeros)" for imaginary speech, booleans taken for samples 0 and 1
    rng = np.random.default_rng(0)
    assert one_line(render_windows, "gpurir", [1j, 2j], RIRS, 10.0, rng, 64) == \
        "speech [1j, 2j] of dtype complex128 is not an array of real numbers"
    assert one_line(render_windows, "gpurir", [True, False], RIRS, 10.0, rng, 64) == \
        "speech [True, False] of dtype bool is not an array of real numbers"
    assert one_line(add_white_noise, [[1j, 2j]], 10.0, rng) == \
        "signals [[1j, 2j]] of dtype complex128 is not an array of real numbers"
    assert one_line(render_windows, "gpurir", [[1.0], [2.0, 3.0]], RIRS, 10.0, rng, 64) == \
        "speech [[1.0], [2.0, 3.0]] is not an array of real numbers"  # ragged: no dtype to name


# ------------------------------------------------------------------------------------------------
# 4. gpuRIR rounds its 8 ms window; xai-loc keeps 0.008 fs, within 1.3e-5 of an arrival
# ------------------------------------------------------------------------------------------------

def _gpurir_taps(fs: int) -> int:
    """cuda_rirGenerator: ``int Tw = (int) round(8e-3f * Fs)`` (C rounds halves away from zero)."""
    return math.floor(float(np.float32(8e-3) * np.float32(fs)) + 0.5)


@pytest.mark.parametrize("fs, theirs, gap, claim", [
    (22050, 176, 1.3e-5, "176 at 22.05 kHz); we keep ``0.008 fs`` unrounded (176.4)"),
    (16000, 128, 0.0, "not at all where ``0.008 fs`` is whole (128 at 16 kHz, the paper's rate)"),
])
def test_the_unrounded_window_is_within_its_documented_gap_of_gpurirs(fs, theirs, gap, claim):
    ours = get_convention("gpurir").taps(fs)
    assert _gpurir_taps(fs) == theirs and ours == pytest.approx(0.008 * fs, rel=1e-12)
    x = np.linspace(-ours / 2 - 1, ours / 2 + 1, 400_001)  # every offset from an arrival, 1/1000 sample apart
    measured = float(np.abs(hann_sinc(x, ours) - hann_sinc(x, theirs)).max())  # of an arrival's amplitude 1
    assert measured < 1e-4 and round(measured, 6) == gap and (measured == 0.0) == (gap == 0.0)
    docs = " ".join(conventions.__doc__.split())
    assert claim in docs and "1.3e-5 of an arrival at 22.05 kHz" in docs  # review: it gave "not rounded: ... 176.4"
    assert "not rounded, as in gpuRIR" not in conventions.Convention.__doc__


def test_simulate_refuses_gpurir_without_its_package_before_a_cluster_starts(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gpuRIR", None)
    monkeypatch.setattr("xai_loc.cluster.cluster", never("starting a dask cluster"))
    data = tmp_path / "data"
    result = run_cli(["simulate", "--backend", "gpurir", "--t60", "0.15", "--snr", "25", "--sources", "1",
                      "--workers", "2", "--data", str(data)])  # review: a local cluster started first (24 s)
    refused(result, MISSING)
    assert not data.exists() or list(data.iterdir()) == []
