"""Speech corpora: the shipped corpus, the folder loader's resampling, and every bad input."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from xai_loc.acoustics.speech import (
    CORPORA,
    MAX_RESAMPLE_FACTOR,
    SpeechCorpus,
    load_corpus,
    resample_factors,
)
from xai_loc.errors import InputError

WINDOW = 5120  # samples per network input window at 16 kHz


@pytest.fixture(scope="module")
def shipped() -> SpeechCorpus:
    return SpeechCorpus.shipped()


@pytest.fixture(scope="module")
def shipped_audio(shipped: SpeechCorpus) -> list[np.ndarray]:
    return [shipped.load(i) for i in range(len(shipped))]


def _sine(f0: float, fs: int, seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * fs)) / fs
    return amp * np.sin(2 * np.pi * f0 * t)


def _peak_frequency(x: np.ndarray, fs: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / fs)[np.argmax(spectrum)])


# -- shipped corpus -----------------------------------------------------------------------------


def test_shipped_corpus_size_and_texts(shipped: SpeechCorpus) -> None:
    assert shipped.fs == 16000
    assert len(shipped) >= 200
    texts = [shipped.text(i) for i in range(len(shipped))]
    assert all(isinstance(t, str) and len(t.split()) >= 4 for t in texts)
    assert len(set(texts)) >= 200
    assert len(set(shipped.ids)) == len(shipped)


def test_shipped_audio_is_normalized_mono_and_long_enough(shipped_audio: list[np.ndarray]) -> None:
    for x in shipped_audio:
        assert x.dtype == np.float32 and x.ndim == 1
        assert np.max(np.abs(x)) == 1.0
        assert np.all(np.isfinite(x))
        assert len(x) >= 2 * WINDOW  # two non-overlapping windows at 16 kHz
    durations = np.array([len(x) for x in shipped_audio]) / 16000
    assert durations.min() >= 1.5
    assert durations.max() <= 5.0
    assert 600 <= durations.sum() <= 1200  # 10-20 minutes in all


def test_shipped_audio_is_speech_like(shipped_audio: list[np.ndarray]) -> None:
    # speech: most energy below 4 kHz, but real content up to 8 kHz; silence trimmed
    x = np.concatenate(shipped_audio[:20]).astype(np.float64)
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    low = power[f < 4000].sum() / power.sum()
    assert 0.8 < low < 0.9999
    for y in shipped_audio[:20]:
        edge = int(0.1 * 16000)
        rms = np.sqrt(np.mean(y.astype(np.float64) ** 2))
        assert np.sqrt(np.mean(y[: 2 * edge].astype(np.float64) ** 2)) > 0.01 * rms


def test_shipped_lookup_by_id_index_and_cache(shipped: SpeechCorpus) -> None:
    first = shipped.ids[0]
    a = shipped.load(first)
    b = shipped.load(0)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(shipped.load(-1), shipped.load(len(shipped) - 1))
    b[:] = 0  # a caller's copy must not corrupt the cache
    assert np.max(np.abs(shipped.load(0))) == 1.0
    clone = pickle.loads(pickle.dumps(shipped))
    np.testing.assert_array_equal(clone.load(0), a)


def test_shipped_resamples_to_other_rates(shipped: SpeechCorpus) -> None:
    n16 = len(shipped.load(3))
    x48 = SpeechCorpus.shipped(fs=48000, cache_size=0).load(3)
    x8 = load_corpus("shipped", fs=8000).load(3)
    assert len(x48) == 3 * n16 and np.max(np.abs(x48)) == 1.0
    assert len(x8) == n16 // 2


# -- folder loader ------------------------------------------------------------------------------


@pytest.mark.parametrize(("fs_in", "f0"), [(48000, 1000.0), (22050, 440.0), (16000, 2500.0)])
def test_folder_resamples_sine_to_16k(tmp_path, fs_in: int, f0: float) -> None:
    sf.write(tmp_path / "tone.wav", _sine(f0, fs_in, 1.5), fs_in, subtype="FLOAT")
    corpus = SpeechCorpus.from_folder(tmp_path)
    x = corpus.load("tone.wav")
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 1.5 * 16000) <= 1
    assert np.max(np.abs(x)) == pytest.approx(1.0, abs=0)
    assert _peak_frequency(x, 16000) == pytest.approx(f0, abs=16000 / len(x) + 1e-9)
    # away from the filter's edge transients the waveform is the ideal 16 kHz sine
    t = np.arange(len(x)) / 16000
    ideal = np.sin(2 * np.pi * f0 * t)
    mid = slice(2000, len(x) - 2000)
    assert np.max(np.abs(x[mid] - ideal[mid])) < 0.01
    assert corpus.text(0) is None


def test_a_folder_is_identified_by_its_files_not_its_path(tmp_path, monkeypatch) -> None:
    import os
    import shutil

    from xai_loc.data.store import corpus_digest

    sf.write(tmp_path / "a.wav", _sine(440.0, 16000, 0.5), 16000)
    first = corpus_digest(SpeechCorpus.from_folder(tmp_path))
    monkeypatch.chdir(tmp_path.parent)
    assert corpus_digest(SpeechCorpus.from_folder(Path(tmp_path.name))) == first  # relative or absolute
    os.utime(tmp_path / "a.wav", ns=(1, 1))  # touched or copied without its time: the same audio
    assert corpus_digest(SpeechCorpus.from_folder(tmp_path)) == first
    shutil.copytree(tmp_path, tmp_path.parent / f"{tmp_path.name}-copy")
    assert corpus_digest(SpeechCorpus.from_folder(tmp_path.parent / f"{tmp_path.name}-copy")) == first
    data, fs = sf.read(tmp_path / "a.wav", dtype="int16")
    data[100] += 1  # one sample, same size and time
    stat = (tmp_path / "a.wav").stat()
    sf.write(tmp_path / "a.wav", data, fs, subtype="PCM_16")
    os.utime(tmp_path / "a.wav", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (tmp_path / "a.wav").stat().st_size == stat.st_size
    assert corpus_digest(SpeechCorpus.from_folder(tmp_path)) != first


def test_folder_recursive_sorted_mixed_formats_first_channel(tmp_path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "deep").mkdir(parents=True)
    stereo = np.stack([_sine(300.0, 16000, 1.0), _sine(3000.0, 16000, 1.0)], axis=1)
    sf.write(tmp_path / "b" / "stereo.flac", stereo, 16000)
    sf.write(tmp_path / "a" / "deep" / "x.OGG", _sine(500.0, 44100, 1.0), 44100, format="OGG")
    sf.write(tmp_path / "a" / "y.wav", _sine(700.0, 8000, 1.0), 8000)
    (tmp_path / "notes.txt").write_text("not audio")
    corpus = load_corpus("folder", tmp_path)
    assert corpus.ids == ("a/deep/x.OGG", "a/y.wav", "b/stereo.flac")
    assert _peak_frequency(corpus.load("b/stereo.flac"), 16000) == pytest.approx(300.0, abs=2)
    assert _peak_frequency(corpus.load(0), 16000) == pytest.approx(500.0, abs=2)
    assert _peak_frequency(corpus.load(1), 16000) == pytest.approx(700.0, abs=2)
    assert len(corpus.load(0)) == 16000 and len(corpus.load(1)) == 16000


def test_resample_factors_reduce_the_ratio() -> None:
    assert resample_factors(22050, 16000) == (320, 441)
    assert resample_factors(48000, 16000) == (1, 3)
    assert resample_factors(44100, 16000) == (160, 441)
    assert resample_factors(8000, 16000) == (2, 1)


# -- bad inputs ---------------------------------------------------------------------------------


def _one_line_error(excinfo: pytest.ExceptionInfo, *needles: str) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


def test_missing_folder(tmp_path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(InputError) as exc:
        SpeechCorpus.from_folder(missing)
    _one_line_error(exc, str(missing), "does not exist")


def test_folder_is_a_file(tmp_path) -> None:
    f = tmp_path / "a.wav"
    sf.write(f, _sine(440.0, 16000, 1.0), 16000)
    with pytest.raises(InputError) as exc:
        SpeechCorpus.from_folder(f)
    _one_line_error(exc, str(f), "not a folder")


def test_folder_without_audio(tmp_path) -> None:
    (tmp_path / "readme.txt").write_text("nothing here")
    (tmp_path / "sub").mkdir()
    with pytest.raises(InputError) as exc:
        SpeechCorpus.from_folder(tmp_path)
    _one_line_error(exc, str(tmp_path), "no audio files", ".wav")


def test_corrupt_file_is_named_on_load(tmp_path) -> None:
    sf.write(tmp_path / "good.wav", _sine(440.0, 16000, 1.0), 16000)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4)
    corpus = SpeechCorpus.from_folder(tmp_path)  # lazily: construction succeeds
    assert len(corpus.load("good.wav")) == 16000
    with pytest.raises(InputError) as exc:
        corpus.load("broken.wav")
    _one_line_error(exc, str(bad), "cannot read")


def test_nan_and_inf_samples(tmp_path) -> None:
    for name, value in [("nan.wav", np.nan), ("inf.wav", np.inf)]:
        x = _sine(440.0, 16000, 1.0)
        x[123] = value
        sf.write(tmp_path / name, x, 16000, subtype="FLOAT")
    corpus = SpeechCorpus.from_folder(tmp_path)
    for name in ("nan.wav", "inf.wav"):
        with pytest.raises(InputError) as exc:
            corpus.load(name)
        _one_line_error(exc, str(tmp_path / name), "1 NaN or infinite")


def test_all_zero_file(tmp_path) -> None:
    sf.write(tmp_path / "silence.wav", np.zeros(16000), 16000)
    with pytest.raises(InputError) as exc:
        SpeechCorpus.from_folder(tmp_path).load(0)
    _one_line_error(exc, str(tmp_path / "silence.wav"), "all zeros")


def test_rate_that_cannot_be_resampled(tmp_path) -> None:
    sf.write(tmp_path / "odd.wav", _sine(440.0, 16001, 1.0), 16001)
    with pytest.raises(InputError) as exc:
        SpeechCorpus.from_folder(tmp_path).load("odd.wav")
    _one_line_error(exc, str(tmp_path / "odd.wav"), "16001 Hz", "16000/16001", str(MAX_RESAMPLE_FACTOR))


def test_non_positive_rates() -> None:
    for fs in (0, -16000):
        with pytest.raises(InputError) as exc:
            SpeechCorpus.shipped(fs=fs)
        _one_line_error(exc, f"fs={fs}", "positive")
    with pytest.raises(InputError) as exc:
        resample_factors(0, 16000, "clip.wav")
    _one_line_error(exc, "clip.wav", "0 Hz", "positive")
    with pytest.raises(InputError) as exc:
        SpeechCorpus.shipped(fs=44101)  # 44101/16000 cannot be reduced
    _one_line_error(exc, "44101", str(MAX_RESAMPLE_FACTOR))


def test_unknown_corpus_name_and_paths() -> None:
    with pytest.raises(InputError) as exc:
        load_corpus("timit")
    _one_line_error(exc, "'timit'", *CORPORA)
    with pytest.raises(InputError) as exc:
        load_corpus("folder")
    _one_line_error(exc, "'folder'", "needs a path")


def test_unknown_utterance(shipped: SpeechCorpus) -> None:
    with pytest.raises(InputError) as exc:
        shipped.load("no-such-id")
    _one_line_error(exc, "'no-such-id'")
    with pytest.raises(InputError) as exc:
        shipped.load(len(shipped))
    _one_line_error(exc, str(len(shipped)), f"0..{len(shipped) - 1}")
