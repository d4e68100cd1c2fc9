"""Regression tests of reviewed acoustics defects: a hybrid tail fitted to reflections after every direct sound,
one-line errors for noise, silence, devices, lengths, orders, dtypes, rates, sound kinds and small checks, and
response lengths that are ``ceil(t_max fs)`` of the decimal ``t_max``."""
import numpy as np
import pytest
import torch
from helpers import one_line

from xai_loc.acoustics import binaural
from xai_loc.acoustics.conventions import rir_length
from xai_loc.acoustics.hrtf import load_hrtf
from xai_loc.acoustics.ism import image_source_rirs
from xai_loc.acoustics.render import add_white_noise, render_windows, window_count
from xai_loc.acoustics.room import ShoeBox, check_snr, check_t60
from xai_loc.acoustics.speech import resample_factors

PAPER = ShoeBox((3.6, 8.2, 2.4))
MIC = [[1.7, 7.9, 1.2]]
FAR = [[1.7, 1.2, 1.3]]  # 6.7007 m from MIC: the direct sound arrives at 312.57 samples
F64 = {"dtype": torch.float64}


# ------------------------------------------------------------------------------------------------
# 1. The hybrid tail is fitted after the latest direct sound, to at least 10 ms of reflections
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("convention", ["gpurir", "pyroomacoustics"])
def test_hybrid_tail_of_a_response_without_reflections_is_silent(convention):
    # t_diff 0.038 s = 608 samples: the fit used to start at 608 // 2 = 304, before the direct sound
    direct = image_source_rirs(PAPER, FAR, MIC, 0.15, max_order=0, convention=convention, **F64)[0, 0]
    hybrid = image_source_rirs(PAPER, FAR, MIC, 0.15, max_order=0, mode="hybrid", t_diff=0.038,
                               convention=convention, **F64)[0, 0]
    torch.testing.assert_close(hybrid[:608], direct[:608], rtol=0, atol=1e-12)
    assert float((hybrid[608:] ** 2).sum()) <= 1e-24 * float((direct ** 2).sum())  # was 0.2: fitted to the direct sound


def test_hybrid_refuses_a_t_diff_that_leaves_less_than_10_ms_of_reflections():
    # gpurir's filter reaches 65 samples: passed at 312 + 66 = 378, + 160 samples of reflections + 65 more
    # = 603 samples: 0.0376875 s -> 0.0377 s; the default T60 / 4 = 0.0375 s is short of it
    says = one_line(image_source_rirs, PAPER, FAR, MIC, 0.15, mode="hybrid")
    assert says == ("t_diff=0.0375 s (the default, T60/4) at T60=0.15 s starts the diffuse tail too early: it must "
                    "leave 10 ms of image-source reflections after the direct sound 6.701 m away; give t_diff >= "
                    "0.0377 s (--t-diff)")
    assert image_source_rirs(PAPER, FAR, MIC, 0.15, mode="hybrid", t_diff=0.0377).shape == (1, 1, 2400)


# ------------------------------------------------------------------------------------------------
# 2, 3, 9. Rendering: 1-D noise, silent speech, the noise generator, window counts
# ------------------------------------------------------------------------------------------------

def test_white_noise_needs_mics_by_samples():
    assert one_line(add_white_noise, np.ones(100), 10.0, np.random.default_rng(0)) == \
        "signals of shape (100,) are not allowed; give (mics, samples)"


def test_silent_speech_is_refused_under_every_convention():
    rirs = np.random.default_rng(0).standard_normal((2, 50))
    for convention in ("gpurir", "pyroomacoustics"):  # pyroomacoustics rendered silent windows
        assert "speech is silent" in one_line(render_windows, convention, np.zeros(500), rirs, 10.0,
                                              np.random.default_rng(0), 100)


def test_render_windows_needs_a_numpy_generator():
    rirs = np.random.default_rng(0).standard_normal((2, 50))
    assert one_line(render_windows, "gpurir", np.ones(500), rirs, 10.0, None, 100) == \
        "rng=None is not allowed; give a numpy.random.Generator (numpy.random.default_rng(seed))"


def test_window_count_refuses_negative_lengths():
    assert one_line(window_count, "gpurir", -5, 10, 3) == "n_speech=-5 is not allowed; use an integer >= 1"
    assert one_line(window_count, "pyroomacoustics", 10, -1, 3) == "n_rir=-1 is not allowed; use an integer >= 1"


# ------------------------------------------------------------------------------------------------
# 4, 5, 6. Devices, lengths, orders and dtypes of the simulators
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device, says", [
    ("xpu", "unknown device 'xpu'; allowed: cpu, cuda, cuda:N"),
    ("meta", "unknown device 'meta'; allowed: cpu, cuda, cuda:N"),
    pytest.param("cuda", "device 'cuda' requested but CUDA is not available to this process; use 'cpu'",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")),
])
def test_unknown_or_missing_devices_are_refused_in_one_line(device, says):
    assert one_line(image_source_rirs, PAPER, FAR, MIC, 0.15, device=device) == says
    assert one_line(binaural.anechoic_rirs, [0.0], [0.0], fs=16000, device=device) == says


def test_t_max_is_bounded_and_an_order_no_image_reaches_keeps_every_image():
    assert one_line(image_source_rirs, PAPER, FAR, MIC, 0.15, t_max=1e6) == \
        "t_max=1000000.0 s is not allowed; give a positive duration of at most 10 s"
    every = image_source_rirs(PAPER, FAR, MIC, 0.15)
    for order in (1e30, 2**70):
        assert torch.equal(image_source_rirs(PAPER, FAR, MIC, 0.15, max_order=order), every)
    office = binaural.ROOMS["office"]
    hrtf = load_hrtf("kemar", fs=16000)
    torch.testing.assert_close(office.brirs([30.0], [0.0], hrtf, fs=16000, t_max=0.02, max_order=1e30),
                               office.brirs([30.0], [0.0], hrtf, fs=16000, t_max=0.02), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.int64])
def test_anechoic_rirs_refuse_a_dtype_the_simulators_do_not_take(dtype):
    assert one_line(binaural.anechoic_rirs, [0.0], [0.0], fs=16000, dtype=dtype) == \
        f"dtype={dtype} is not allowed; allowed: torch.float32, torch.float64"


# ------------------------------------------------------------------------------------------------
# 7, 8. Resampling factors of NumPy rates; sounds a rate cannot hold
# ------------------------------------------------------------------------------------------------

def test_resample_factors_take_numpy_rates_and_return_ints():
    assert resample_factors(np.float32(44100.0), 16000) == (160, 441)
    factors = resample_factors(np.int64(44100), np.int64(16000))
    assert factors == (160, 441) and all(type(f) is int for f in factors)


@pytest.mark.parametrize("kind, fs, least", [("tone_complex", 2000, 2223), ("am_noise", 100, 500)])
def test_sound_kinds_refuse_rates_that_cannot_hold_them(kind, fs, least):
    assert one_line(binaural.synthesize, kind, fs, 0.25) == \
        f"sound kind {kind!r} cannot be made at fs={fs} Hz; give fs >= {least} Hz"
    for seed in range(20):  # tone_complex at 2000 Hz was silent for some seeds
        assert float(np.abs(binaural.synthesize(kind, least, 0.25, seed=seed)).max()) == 1.0


# ------------------------------------------------------------------------------------------------
# 9. Small checks: booleans as T60 or SNR, direction subsets, levels, complex positions
# ------------------------------------------------------------------------------------------------

def test_booleans_are_no_t60_or_snr():
    assert one_line(check_t60, True) == "T60=True is not a number; give seconds in (0, 10.0]"
    assert one_line(check_snr, np.bool_(False)) == "SNR=np.False_ is not a number; give dB in [-60, 200]"


@pytest.mark.parametrize("index", [[1000], [], [-1], [0.0]])
def test_hrtf_subset_refuses_directions_it_does_not_have(index):
    assert one_line(load_hrtf("kemar").subset, index).endswith(
        "give direction numbers in 0..709 or a boolean mask of 710, picking at least one")


def test_scale_to_level_checks_the_level():
    assert one_line(binaural.scale_to_level, np.ones((2, 100)), float("nan")).startswith("level_db=nan is not allowed")


def test_complex_positions_are_refused():
    assert "are not an (n, 3) array of real numbers in metres" in one_line(PAPER.check_inside, [[1.0 + 1j, 2.0, 1.0]])


# ------------------------------------------------------------------------------------------------
# 10. "ceil" lengths are ceil(t_max fs) of the decimal t_max
# ------------------------------------------------------------------------------------------------

def test_ceil_lengths_are_exact_for_decimal_durations():
    assert rir_length("pyroomacoustics", 0.55, 48000) == 26400  # 0.55 * 48000 = 26400.000000000004
    assert rir_length("pyroomacoustics", 0.5500001, 48000) == 26401
    assert rir_length("gpurir", 0.55, 48000) == 26400  # gpuRIR's float32 rule, then even
    brir = binaural.ROOMS["booth"].brirs([0.0], [0.0], fs=48000, t_max=0.55, max_order=0)
    assert brir.shape == (1, 2, 26400)
