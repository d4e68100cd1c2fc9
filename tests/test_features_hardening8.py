"""One argument check for the four front ends: counts are integers (a whole-valued float or a bool is refused, as
:func:`~xai_loc.checks.check_integer` refuses it), rates whole numbers of any type, every other setting a finite
number in its range, each refused in one line in the words of :mod:`xai_loc.checks` before any work."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import one_line

from xai_loc.features.binaural_cues import BinauralCues, GammatoneFilterbank, RunningCrossCorrelation, gammatone_kernels
from xai_loc.features.cochleagram import (
    Cochleagram,
    ERBFilterbank,
    PowerCompression,
    SincDownsample,
    erb_cosine_filters,
    kaiser_lowpass,
)
from xai_loc.features.ipd_ild import IPDILD, STFT, InterauralCues, SpectralConv
from xai_loc.features.spectrogram import BinauralSpectrogram, Decibel, FrameSTFT, Standardize, stft_kernel

NAN, INF = math.nan, math.inf
CENTRES = [100.0, 1000.0]

#: Per front end or building block: its builder and a table of (keyword arguments, the one line it answers).
BAD = {
    "IPDILD": (IPDILD, [
        ({"power_floor": 0}, "power_floor=0 is not allowed; use a number > 0"),
        ({"power_floor": True}, "power_floor=True is not allowed; use a number > 0"),
        ({"power_floor": "1e-10"}, "power_floor='1e-10' is not allowed; use a number > 0"),
        ({"n_fft": 640.0}, "n_fft=640.0 is not allowed; use an integer >= 2"),
        ({"hop": 321}, "n_fft=640, hop=321 are not allowed; use an even n_fft, hop <= n_fft and an even n_fft - hop"),
    ]),
    "STFT": (STFT, [
        ({"n_fft": 0, "hop": 1}, "n_fft=0 is not allowed; use an integer >= 2"),
        ({"n_fft": 640.0, "hop": 320}, "n_fft=640.0 is not allowed; use an integer >= 2"),
        ({"n_fft": True, "hop": 1}, "n_fft=True is not allowed; use an integer >= 2"),
        ({"n_fft": "640", "hop": 320}, "n_fft='640' is not allowed; use an integer >= 2"),
        ({"n_fft": 640, "hop": NAN}, "hop=nan is not allowed; use an integer >= 1"),
        ({"n_fft": 640, "hop": 0}, "hop=0 is not allowed; use an integer >= 1"),
        ({"n_fft": 640, "hop": 642}, "n_fft=640, hop=642 are not allowed; use an even n_fft, hop <= n_fft and an "
                                     "even n_fft - hop"),
    ]),
    "SpectralConv": (SpectralConv, [
        ({"n_fft": 0, "hop": 1}, "n_fft=0 is not allowed; use an integer >= 2"),
        ({"n_fft": 640, "hop": INF}, "hop=inf is not allowed; use an integer >= 1"),
        ({"n_fft": 640, "hop": -1}, "hop=-1 is not allowed; use an integer >= 1"),
        ({"n_fft": 640, "hop": False}, "hop=False is not allowed; use an integer >= 1"),
    ]),
    "InterauralCues": (InterauralCues, [
        ({"power_floor": NAN}, "power_floor=nan is not allowed; use a number > 0"),
        ({"power_floor": -1}, "power_floor=-1 is not allowed; use a number > 0"),
        ({"power_floor": 0}, "power_floor=0 is not allowed; use a number > 0"),
        ({"power_floor": "1"}, "power_floor='1' is not allowed; use a number > 0"),
    ]),
    "BinauralCues": (BinauralCues, [
        ({"n_bands": 32.0}, "n_bands=32.0 is not allowed; use an integer >= 1"),
        ({"n_bands": True}, "n_bands=True is not allowed; use an integer >= 1"),
        ({"n_bands": 0}, "n_bands=0 is not allowed; use an integer >= 1"),
        ({"f_min": 0}, "f_min=0 is not allowed; use a number > 0"),
        ({"f_max": NAN}, "f_max=nan is not allowed; use a number > 0"),
        ({"max_lag_ms": 1e308}, "max_lag_ms=1e+308 is not allowed; use a number > 0 and <= 60000"),
        ({"window_ms": True}, "window_ms=True is not allowed; use a number > 0 and <= 60000"),
        ({"hop_ms": -10}, "hop_ms=-10 is not allowed; use a number > 0 and <= 60000"),
        ({"window_ms": 0.01}, "window_ms=0.01 is not allowed; use at least one sample, 0.0227 ms at fs=44100"),
        ({"ild_limit": INF}, "ild_limit=inf is not allowed; use a number > 0"),
        ({"ild_limit": "7"}, "ild_limit='7' is not allowed; use a number > 0"),
    ]),
    "GammatoneFilterbank": (lambda **kw: GammatoneFilterbank(**{"fs": 44100, **kw}), [
        ({"centres": [NAN]}, "centres=[nan] is not allowed; use a 1-D array of frequencies in (0, fs / 2 = 22050) Hz"),
        ({"centres": [0.0]}, "centres=[0.0] is not allowed; use a 1-D array of frequencies in (0, fs / 2 = 22050) Hz"),
        ({"centres": [30000.0]},
         "centres=[30000.0] is not allowed; use a 1-D array of frequencies in (0, fs / 2 = 22050) Hz"),
        ({"centres": []}, "centres=[] is not allowed; use a 1-D array of frequencies in (0, fs / 2 = 22050) Hz"),
        ({"centres": [[100.0]]},
         "centres=[[100.0]] is not allowed; use a 1-D array of frequencies in (0, fs / 2 = 22050) Hz"),
        ({"centres": "x"}, "centres='x' is not allowed; use a 1-D array of frequencies in (0, fs / 2 = 22050) Hz"),
        ({"centres": [True]},
         "centres=[True] is not allowed; use a 1-D array of frequencies in (0, fs / 2 = 22050) Hz"),
    ]),
    "gammatone_kernels": (lambda **kw: gammatone_kernels(**{"centres": CENTRES, "fs": 44100, **kw}), [
        ({"fs": 0}, "fs=0 is not allowed; use a number > 0"),
        ({"fs": NAN}, "fs=nan is not allowed; use a number > 0"),
        ({"fs": True}, "fs=True is not allowed; use a number > 0"),
        ({"floor_db": 0}, "floor_db=0 is not allowed; use a number >= -1000 and <= -1"),
        ({"floor_db": -INF}, "floor_db=-inf is not allowed; use a number >= -1000 and <= -1"),
    ]),
    "RunningCrossCorrelation": (lambda **kw: RunningCrossCorrelation(**{"fs": 44100, "max_lag": 44, "window": 441,
                                                                         "hop": 441, "ild_limit": 7.0, **kw}), [
        ({"fs": NAN}, "fs=nan is not allowed; give a positive integer rate in Hz such as 16000"),
        ({"max_lag": -1}, "max_lag=-1 is not allowed; use an integer >= 0"),
        ({"max_lag": 44.0}, "max_lag=44.0 is not allowed; use an integer >= 0"),
        ({"window": 0}, "window=0 is not allowed; use an integer >= 1"),
        ({"hop": True}, "hop=True is not allowed; use an integer >= 1"),
        ({"ild_limit": -7.0}, "ild_limit=-7.0 is not allowed; use a number > 0"),
    ]),
    "Cochleagram": (lambda **kw: Cochleagram(**{"signal_length": 4800, **kw}), [
        ({"n_filters": 39.0}, "n_filters=39.0 is not allowed; use an integer >= 1"),
        ({"n_filters": True}, "n_filters=True is not allowed; use an integer >= 1"),
        ({"signal_length": 4800.0}, "signal_length=4800.0 is not allowed; use an integer >= 1"),
        ({"pad": -600}, "pad=-600 is not allowed; use an integer >= 0"),
        ({"n_taps": 4097.0}, "n_taps=4097.0 is not allowed; use an integer >= 1"),
        ({"n_taps": 4096}, "n_taps=4096 is not allowed; give an odd positive number (linear phase, centred)"),
        ({"beta": NAN}, "beta=nan is not allowed; use a number >= 0"),
        ({"exponent": 0}, "exponent=0 is not allowed; use a number > 0"),
        ({"eps": "1e-7"}, "eps='1e-7' is not allowed; use a number > 0"),
        ({"downsample": "fir"}, "downsample='fir' is not allowed; use one of fft, conv"),
    ]),
    "ERBFilterbank": (lambda **kw: ERBFilterbank(**{"signal_length": 4800, **kw}), [
        ({"n_filters": NAN}, "n_filters=nan is not allowed; use an integer >= 1"),
        ({"n_filters": 0}, "n_filters=0 is not allowed; use an integer >= 1"),
        ({"f_min": NAN}, "band edges f_min=nan, f_max=20000.0 Hz are not allowed; need 0 < f_min < f_max <= "
                         "fs / 2 = 24000"),
        ({"f_max": "20000"}, "band edges f_min=30.0, f_max='20000' Hz are not allowed; need 0 < f_min < f_max <= "
                             "fs / 2 = 24000"),
        ({"pad": True}, "pad=True is not allowed; use an integer >= 0"),
    ]),
    "SincDownsample": (SincDownsample, [
        ({"n_taps": True}, "n_taps=True is not allowed; use an integer >= 1"),
        ({"beta": -1}, "beta=-1 is not allowed; use a number >= 0"),
        ({"method": "fir"}, "method='fir' is not allowed; use one of fft, conv"),
    ]),
    "PowerCompression": (PowerCompression, [
        ({"exponent": NAN}, "exponent=nan is not allowed; use a number > 0"),
        ({"exponent": True}, "exponent=True is not allowed; use a number > 0"),
        ({"eps": 0.0}, "eps=0.0 is not allowed; use a number > 0"),
    ]),
    "erb_cosine_filters": (lambda **kw: erb_cosine_filters(**{"n_fft": 4800, "fs": 48000, **kw}), [
        ({"n_fft": 0}, "n_fft=0 is not allowed; use an integer >= 1"),
        ({"n_fft": 4800.0}, "n_fft=4800.0 is not allowed; use an integer >= 1"),
        ({"fs": -1}, "fs=-1 is not allowed; use a number > 0"),
        ({"n_filters": 0}, "n_filters=0 is not allowed; use an integer >= 1"),
        ({"f_min": -1}, "band edges f_min=-1, f_max=20000.0 Hz are not allowed; need 0 < f_min < f_max <= "
                        "fs / 2 = 24000"),
    ]),
    "kaiser_lowpass": (lambda **kw: kaiser_lowpass(**{"cutoff": 4000.0, "fs": 48000, **kw}), [
        ({"cutoff": 0}, "cutoff=0 is not allowed; use a number > 0 and <= 24000"),
        ({"cutoff": NAN}, "cutoff=nan is not allowed; use a number > 0 and <= 24000"),
        ({"fs": INF}, "fs=inf is not allowed; use a number > 0"),
        ({"n_taps": 0}, "n_taps=0 is not allowed; use an integer >= 1"),
        ({"n_taps": 4097.0}, "n_taps=4097.0 is not allowed; use an integer >= 1"),
        ({"beta": -INF}, "beta=-inf is not allowed; use a number >= 0"),
    ]),
    "BinauralSpectrogram": (BinauralSpectrogram, [
        ({"n_fft": 256.0}, "n_fft=256.0 is not allowed; use an integer >= 2"),
        ({"n_fft": True}, "n_fft=True is not allowed; use an integer >= 2"),
        ({"hop": 128.0}, "hop=128.0 is not allowed; use an integer in [1, 256]"),
        ({"hop": 257}, "hop=257 is not allowed; use an integer in [1, 256]"),
        ({"amin": 0}, "amin=0 is not allowed; use a number > 0"),
        ({"window": NAN}, "window=nan is not allowed; give a scipy.signal.get_window spec such as ('tukey', 0.25) or "
                          "'hann'"),
        ({"window": True}, "window=True is not allowed; give a scipy.signal.get_window spec such as ('tukey', 0.25) "
                           "or 'hann'"),
        ({"detrend": 1}, "detrend=1 is not allowed; use True or False"),
        ({"standardize": np.True_}, "standardize=np.True_ is not allowed; use True or False"),
    ]),
    "FrameSTFT": (FrameSTFT, [
        ({"hop": 0}, "hop=0 is not allowed; use an integer in [1, 256]"),
        ({"detrend": "constant"}, "detrend='constant' is not allowed; use True or False"),
        ({"window": ("kaiser", INF)}, "window=('kaiser', inf) is not allowed; give a scipy.signal.get_window spec "
                                      "such as ('tukey', 0.25) or 'hann'"),
    ]),
    "stft_kernel": (lambda **kw: stft_kernel(**{"n_fft": 256, "fs": 16000, **kw}), [
        ({"n_fft": 0}, "n_fft=0 is not allowed; use an integer >= 2"),
        ({"n_fft": 256.0}, "n_fft=256.0 is not allowed; use an integer >= 2"),
        ({"detrend": None}, "detrend=None is not allowed; use True or False"),
        ({"window": -INF}, "window=-inf is not allowed; give a scipy.signal.get_window spec such as ('tukey', 0.25) "
                           "or 'hann'"),
    ]),
    "Decibel": (Decibel, [
        ({"amin": NAN}, "amin=nan is not allowed; use a number > 0"),
        ({"amin": -1}, "amin=-1 is not allowed; use a number > 0"),
        ({"amin": False}, "amin=False is not allowed; use a number > 0"),
    ]),
    "Standardize": (Standardize, [
        ({"eps": 0}, "eps=0 is not allowed; use a number > 0"),
        ({"eps": INF}, "eps=inf is not allowed; use a number > 0"),
        ({"eps": "1"}, "eps='1' is not allowed; use a number > 0"),
    ]),
}


@pytest.mark.parametrize("name", list(BAD))
def test_each_bad_setting_is_one_line_in_the_words_of_checks(name):
    """Every bad setting of every front end and building block is one line naming the value and what is allowed.

    review: three helpers disagreed (``IPDILD(n_fft=640.0)`` and ``BinauralCues(n_bands=32.0)`` refused,
    ``BinauralSpectrogram(n_fft=256.0)``, ``Cochleagram(signal_length=4800.0)`` accepted) in different words; the
    building blocks checked nothing (``STFT(n_fft=0)``, ``RunningCrossCorrelation(hop=0)``,
    ``ERBFilterbank(n_filters=-1)``, ``gammatone_kernels([nan], ...)`` were tracebacks, ``Decibel(amin=nan)``,
    ``Standardize(eps=0)``, ``InterauralCues(power_floor=-1)``, ``kaiser_lowpass(cutoff=nan, ...)`` gave NaN
    outputs, ``stft_kernel(detrend='no')`` detrended); ``BinauralCues(max_lag_ms=1e308)`` raised OverflowError."""
    build, table = BAD[name]
    assert [one_line(build, **options) for options, _ in table] == [says for _, says in table]


#: Per front end (:class:`IPDILD` followed the rule already): a builder of keyword arguments, the clip length, the
#: rate as a whole float and its counts as NumPy integers, and a count given as a whole float with the line that
#: refuses it.
WHOLE = {
    "BinauralCues": (BinauralCues, 22050, {"fs": 44100.0, "n_bands": np.int64(32)},
                     ({"n_bands": 32.0}, "n_bands=32.0 is not allowed; use an integer >= 1")),
    "Cochleagram": (lambda **kw: Cochleagram(**{"signal_length": np.int64(4800), **kw}), 4800,
                    {"fs": np.float64(48000), "out_fs": 8000.0, "n_filters": np.int64(39), "n_taps": np.int16(4097),
                     "pad": np.int64(0)},
                    ({"pad": 0.0}, "pad=0.0 is not allowed; use an integer >= 0")),
    "BinauralSpectrogram": (BinauralSpectrogram, 8000, {"fs": 16000.0, "n_fft": np.int64(256), "hop": np.int64(128)},
                            ({"n_fft": 256.0}, "n_fft=256.0 is not allowed; use an integer >= 2")),
}


@pytest.mark.parametrize("name", list(WHOLE))
def test_whole_floats_are_rates_not_counts(name):
    """A whole-valued float rate and NumPy integer counts build the front end of the int settings (same config,
    byte-identical output); a whole-valued float count is refused, as ``check_integer`` refuses it everywhere else.

    review: ``BinauralSpectrogram(n_fft=256.0)`` and ``Cochleagram(pad=0.0)`` were accepted while
    ``BinauralCues(n_bands=32.0)`` and ``IPDILD(hop=320.0)`` were refused, in other words."""
    build, n, given, (bad, says) = WHOLE[name]
    x = torch.randn(2, 2, n, generator=torch.Generator().manual_seed(8))
    plain, typed = build(**{key: int(value) for key, value in given.items()}), build(**given)
    assert typed.config == plain.config
    assert all(type(value) is not np.int64 for value in typed.config.values())
    assert torch.equal(typed(x), plain(x)) and torch.equal(typed(x.double()), plain(x.double()))
    assert one_line(build, **bad) == says


def test_frame_counts_take_integer_sample_counts():
    """``n_frames``, ``frame_times`` and ``response`` take a whole number of samples and refuse anything else in one
    line; a clip too short for a frame gives 0 frames (IPD/ILD, which its model reports) or is refused.

    review: ``IPDILD().n_frames(nan)`` returned nan and ``frame_times(inf)`` raised ValueError;
    ``BinauralCues().n_frames(inf)`` raised OverflowError, ``BinauralSpectrogram().n_frames(8000.5)`` returned 61;
    ``ERBFilterbank().response(0)`` divided by zero."""
    ipd, cues, spec = IPDILD(), BinauralCues(), BinauralSpectrogram()
    assert ipd.n_frames(np.int64(16000)) == 50 and ipd.n_frames(319) == 0 and ipd.frame_times(0).size == 0
    assert cues.n_frames(22050) == 50 and spec.n_frames(8000) == 61
    assert one_line(ipd.n_frames, NAN) == "n_samples=nan is not allowed; use an integer >= 0"
    assert one_line(ipd.frame_times, -1) == "n_samples=-1 is not allowed; use an integer >= 0"
    assert one_line(cues.n_frames, INF) == "n_samples=inf is not allowed; use an integer >= 0"
    assert one_line(cues.frame_times, 22050.0) == "n_samples=22050.0 is not allowed; use an integer >= 0"
    assert one_line(cues.correlator.n_frames, True) == "n_samples=True is not allowed; use an integer >= 0"
    assert one_line(cues.n_frames, 100) == "100 samples are shorter than one 10 ms window"
    assert one_line(spec.n_frames, 8000.5) == "n_samples=8000.5 is not allowed; use an integer >= 256"
    assert one_line(spec.frame_times, 255) == "n_samples=255 is not allowed; use an integer >= 256"
    assert one_line(ERBFilterbank(signal_length=4800).response, 0) == "length=0 is not allowed; use an integer >= 1"


def test_simulate_cue_scenes_checks_its_arguments_before_any_work(tmp_path):
    """A batch size that is no integer >= 1, a progress that is no bool or a spec that is no ``CueSceneSpec`` is one
    line, and nothing is written.

    review: ``batch_size=0`` raised ValueError (range() arg 3), ``2.5`` TypeError, ``True`` ran in batches of one;
    ``progress='no'`` showed progress; a string spec raised AttributeError."""
    from xai_loc.data.cue_scenes import CueSceneSpec
    from xai_loc.features.binaural_cues import simulate_cue_scenes

    spec = CueSceneSpec(per_utterance={"train": 1, "test": 1}, duration=0.05)
    for options, says in [({"batch_size": 0}, "batch_size=0 is not allowed; use an integer >= 1"),
                          ({"batch_size": 2.5}, "batch_size=2.5 is not allowed; use an integer >= 1"),
                          ({"batch_size": True}, "batch_size=True is not allowed; use an integer >= 1"),
                          ({"progress": "no"}, "progress='no' is not allowed; use True or False")]:
        assert one_line(simulate_cue_scenes, spec, "test", root=tmp_path, **options) == says
    assert one_line(simulate_cue_scenes, "cuenet", "test", root=tmp_path) == (
        "spec='cuenet' is not allowed; give a CueSceneSpec")
    assert list(tmp_path.iterdir()) == []
