"""Simulation conventions: the ``gpurir`` simulator against a plain float64 transcription of gpuRIR's
formula, the reflection sign, lengths, the CPU/CUDA paths, and rendering (convolution, noise, windows)."""
import math

import gpurir_reference as ref
import numpy as np
import pytest
import torch
from scipy.signal import fftconvolve

from xai_loc.acoustics import ism
from xai_loc.acoustics.conventions import (
    CONVENTIONS,
    DEFAULT_CONVENTION,
    Convention,
    get_convention,
    register_convention,
    rir_length,
)
from xai_loc.acoustics.ism import image_source_rirs
from xai_loc.acoustics.render import add_white_noise, cut_windows, render_windows, reverberant_signals, window_count
from xai_loc.acoustics.room import ShoeBox, linear_array
from xai_loc.errors import InputError

PAPER = ShoeBox((3.6, 8.2, 2.4), fs=16000, c=343.0)
PAPER_MICS = linear_array(16, 0.15, (1.7, 7.0, 1.2))
PAPER_SRC = np.array([1.6875, 5.4375, 1.31])  # a test-split grid point
SMALL = ShoeBox((3.1, 2.6, 2.3), fs=16000, c=343.0)
SMALL_MICS = np.array([[0.4, 0.5, 1.1], [2.7, 2.1, 0.3], [1.55, 1.3, 2.0]])  # no common axis
SMALL_SRCS = np.array([[1.0, 1.9, 1.6], [2.2, 0.7, 0.9]])
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _direct_peak(room, src, mics):
    """Amplitude of the strongest direct path, 1 / (4 pi d_min)."""
    return 1.0 / (4 * math.pi * np.linalg.norm(np.asarray(mics) - src, axis=1).min())


@pytest.fixture(scope="module")
def small_reference():
    return [ref.rirs(SMALL.size, src, SMALL_MICS, 0.2) for src in SMALL_SRCS]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_small_room_matches_the_plain_gpurir_formula(dtype, small_reference):
    for src, expected in zip(SMALL_SRCS, small_reference, strict=True):
        ours = image_source_rirs(SMALL, src, SMALL_MICS, 0.2, dtype=dtype)[0].numpy()
        assert ours.shape == expected.shape and ours.dtype == (np.float64 if dtype == torch.float64 else np.float32)
        assert np.abs(ours - expected).max() <= 1e-4 * _direct_peak(SMALL, src, SMALL_MICS)


def test_paper_room_at_t60_015_matches_the_plain_gpurir_formula():
    expected = ref.rirs(PAPER.size, PAPER_SRC, PAPER_MICS, 0.15)
    peak = _direct_peak(PAPER, PAPER_SRC, PAPER_MICS)
    for dtype in (torch.float64, torch.float32):
        ours = image_source_rirs(PAPER, PAPER_SRC, PAPER_MICS, 0.15, dtype=dtype)[0].numpy()
        assert ours.shape == (16, 2400)
        assert np.abs(ours - expected).max() <= 1e-4 * peak
    # the reference is not trivially close: the first reflections alone are a third of the peak
    assert np.abs(expected).max() > 0.5 * peak


def test_reflection_order_limit_matches_the_formula():
    expected = ref.rirs(SMALL.size, SMALL_SRCS[0], SMALL_MICS, 0.2, max_order=2)
    ours = image_source_rirs(SMALL, SMALL_SRCS[0], SMALL_MICS, 0.2, max_order=2, dtype=torch.float64)[0].numpy()
    assert np.abs(ours - expected).max() <= 1e-4 * _direct_peak(SMALL, SMALL_SRCS[0], SMALL_MICS)


def _first_order_images(room, s):
    lx, ly, lz = room.size
    return [(-s[0], s[1], s[2]), (2 * lx - s[0], s[1], s[2]), (s[0], -s[1], s[2]),
            (s[0], 2 * ly - s[1], s[2]), (s[0], s[1], -s[2]), (s[0], s[1], 2 * lz - s[2])]


@pytest.mark.parametrize("convention, sign, rel", [("gpurir", -1, 0.02), ("pyroomacoustics", 1, 0.1)])
def test_first_order_reflections_have_the_conventions_polarity(convention, sign, rel):
    """Each first-order image arrives as one pulse of sign ``sign`` and size beta / (4 pi d).

    (The 16-tap window of the pyroomacoustics convention rounds the pulse's top off by ~6 %.)
    """
    one = image_source_rirs(PAPER, PAPER_SRC, PAPER_MICS, 0.3, max_order=1, convention=convention,
                            dtype=torch.float64)[0].numpy()
    zero = image_source_rirs(PAPER, PAPER_SRC, PAPER_MICS, 0.3, max_order=0, convention=convention,
                             dtype=torch.float64)[0].numpy()
    reflections = one - zero
    beta = get_convention(convention).reflection_coefficient(PAPER, 0.3)
    checked = 0
    for m in (0, 5, 15):
        taus = [np.linalg.norm(PAPER_MICS[m] - np.array(im)) / PAPER.c * PAPER.fs
                for im in _first_order_images(PAPER, PAPER_SRC)]
        for k, tau in enumerate(taus):
            if min(abs(tau - t) for j, t in enumerate(taus) if j != k) < 20:
                continue  # overlapping pulses
            # band-limited interpolation of the pulse around tau: its extremum has the arrival's sign
            n = np.arange(int(tau) - 40, int(tau) + 41)
            grid = np.arange(tau - 1, tau + 1, 0.01)
            pulse = np.sinc(grid[:, None] - n[None, :]) @ reflections[m, n]
            value = pulse[np.argmax(np.abs(pulse))]
            expected = sign * beta / (4 * math.pi * tau * PAPER.c / PAPER.fs)
            assert np.sign(value) == sign
            assert value == pytest.approx(expected, rel=rel)
            checked += 1
    assert checked >= 9


def test_rir_length_follows_the_convention():
    # gpuRIR: ceil(Tmax fs) in single precision, rounded up to even
    assert rir_length("gpurir", 0.15, 16000) == 2400 and rir_length("gpurir", 0.6, 16000) == 9600
    assert rir_length("gpurir", 0.10006, 16000) == 1602  # ceil(1600.96) = 1601 -> 1602
    assert rir_length("pyroomacoustics", 0.10006, 16000) == 1601
    assert rir_length(None, 0.2, 16000, t_max=0.05) == 800
    out = image_source_rirs(SMALL, SMALL_SRCS[0], SMALL_MICS, 0.2, t_max=0.10006)
    assert out.shape == (1, 3, 1602)
    assert image_source_rirs(SMALL, SMALL_SRCS[0], SMALL_MICS, 0.2, t_max=0.10006,
                             convention="pyroomacoustics").shape == (1, 3, 1601)


def test_gpurir_sabine_uses_its_constant():
    beta = get_convention("gpurir").reflection_coefficient(PAPER, 0.4)
    assert beta == pytest.approx(ref.sabine_beta(PAPER.size, 0.4), rel=1e-12)
    assert get_convention("pyroomacoustics").reflection_coefficient(PAPER, 0.4) == PAPER.reflection_coefficient(0.4)
    # the constant is gpuRIR's for c = 343 m/s: under water (c = 1480) it scales, so the room still has
    # the asked T60 (0.161 V / S T60 alone gave beta 0.914, a 0.14 s room, for 0.6 s), and a short T60
    # the room allows is not clamped to an anechoic room
    water = ShoeBox(PAPER.size, fs=16000, c=1480.0)
    for t60 in (0.6, 0.05):
        alpha = 1.0 - get_convention("gpurir").reflection_coefficient(water, t60) ** 2
        assert water.min_t60() / alpha == pytest.approx(t60, rel=1e-3)


def test_gpurir_image_grid_is_t2n():
    assert ism.t2n(0.6, PAPER.size, 343.0) == [115, 51, 172]
    coords, hits = ism._grid_axis(1.23, 3.6, 5)  # k = -2..2
    np.testing.assert_allclose(coords, [-7.2 + 1.23, -7.2 + 7.2 - 1.23, 1.23, 7.2 - 1.23, 7.2 + 1.23])
    assert hits.tolist() == [2, 1, 0, 1, 2]


def test_torch_path_equals_the_compiled_path():
    """The CUDA code path, run on the CPU, gives the compiled loop's result."""
    conv = get_convention("gpurir")
    for t60, max_order in ((0.15, None), (0.25, 3)):
        n = conv.rir_length(t60, PAPER.fs)
        beta = -conv.reflection_coefficient(PAPER, t60)
        reach, _ = ism._exact_reach(n, 128, PAPER)
        axes = ism._axes(conv, PAPER, PAPER_SRC, PAPER_MICS, reach, t60)
        fast = ism._exact_cpu(PAPER, PAPER_SRC, PAPER_MICS, beta, n, 128, axes, max_order, torch.float64).numpy()
        plain = ism._exact_torch(PAPER, PAPER_SRC, torch.as_tensor(PAPER_MICS), beta, n, 128, axes, max_order,
                                 torch.device("cpu"), torch.float64).numpy()
        assert np.abs(fast - plain).max() <= 1e-9 * np.abs(fast).max()


@requires_cuda
def test_cuda_matches_cpu():
    cpu = image_source_rirs(PAPER, PAPER_SRC, PAPER_MICS, 0.3)[0].numpy()
    gpu = image_source_rirs(PAPER, PAPER_SRC, PAPER_MICS, 0.3, device="cuda")[0].cpu().numpy()
    assert np.abs(gpu - cpu).max() <= 1e-4 * _direct_peak(PAPER, PAPER_SRC, PAPER_MICS)


@requires_cuda
def test_gpurir_itself_agrees_within_its_lookup_table_error():
    """gpuRIR's table interpolates the 8 ms Hann-sinc linearly every 1/16 sample (up to 1.6e-3 of an arrival)."""
    pytest.importorskip("gpuRIR")
    from xai_loc.acoustics.backends import simulate_rirs

    theirs = simulate_rirs("gpurir", PAPER, PAPER_SRC[None], PAPER_MICS, 0.3)[0]
    ours = simulate_rirs("torch", PAPER, PAPER_SRC[None], PAPER_MICS, 0.3)[0]
    assert theirs.shape == ours.shape
    assert np.abs(theirs - ours).max() <= 5e-3 * _direct_peak(PAPER, PAPER_SRC, PAPER_MICS)


def test_registry_and_its_errors():
    assert DEFAULT_CONVENTION == "gpurir" and {"gpurir", "pyroomacoustics"} <= set(CONVENTIONS)
    gp = get_convention("gpurir")
    assert (gp.reflection_sign, gp.taps(16000), gp.images, gp.length, gp.convolution) == (-1, 128, "t2n", "even",
                                                                                          "full")
    pra = get_convention("pyroomacoustics")
    assert (pra.reflection_sign, pra.taps(16000), pra.images, pra.length, pra.convolution) == (1, 16, "reach", "ceil",
                                                                                              "cut")
    assert get_convention(gp) is gp and get_convention(None) is gp
    with pytest.raises(InputError, match="allowed: gpurir, pyroomacoustics") as err:
        get_convention("pra")
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="already registered"):
        register_convention(gp)
    with pytest.raises(InputError, match="reflection_sign"):
        Convention("x", 0, 8e-3, None, "exact", "t2n", "even", 0.161, "full", True)
    with pytest.raises(InputError, match="exactly one"):
        Convention("x", 1, 8e-3, 16, "exact", "t2n", "even", 0.161, "full", True)
    for bad in (0.0, 0.2):  # a constant above 24 ln(10) / 343 would ask walls for alpha > 1
        with pytest.raises(InputError, match=rf"sabine_constant={bad}; allowed: \(0, 0.16111\]"):
            Convention("x", 1, 8e-3, None, "exact", "t2n", "even", bad, "full", True)


# ----------------------------------------------------------------------------------------
# Rendering: convolution, noise, windows
# ----------------------------------------------------------------------------------------

def _speech_and_rirs(n_speech=12_345, n_rir=2400, n_mics=3):
    rng = np.random.default_rng(7)
    speech = rng.standard_normal(n_speech) * np.hanning(n_speech) * 0.3
    rirs = rng.standard_normal((n_mics, n_rir)) * np.exp(-np.arange(n_rir) / 300.0)
    return speech, rirs


def test_gpurir_rendering_is_the_papers():
    speech, rirs = _speech_and_rirs()
    window, snr = 1000, 12.0
    out = render_windows("gpurir", speech, rirs, snr, np.random.default_rng(3), window)
    # full convolution: (T + N - 1) // window windows, cut from sample 0
    n_full = speech.size + rirs.shape[1] - 1
    assert out.shape == (n_full // window, 3, window) and out.dtype == np.float32
    assert window_count("gpurir", speech.size, rirs.shape[1], window) == out.shape[0] == 14
    clean = fftconvolve((speech / np.abs(speech).max())[None], rirs, axes=1)  # peak-normalized utterance
    assert clean.shape[1] == n_full
    # the noise: one standard_normal draw over the whole convolved signal, at the power of mic 0 over it
    sigma = math.sqrt(np.mean(clean[0] ** 2) / 10 ** (snr / 10))
    expected = clean + sigma * np.random.default_rng(3).standard_normal(clean.shape)
    np.testing.assert_allclose(out, cut_windows(expected, window), rtol=1e-5, atol=1e-6 * np.abs(clean).max())
    # peak normalization: the level of the dry utterance does not matter
    again = render_windows("gpurir", 5.0 * speech, rirs, snr, np.random.default_rng(3), window)
    np.testing.assert_allclose(again, out, rtol=1e-5, atol=1e-6)


def test_pyroomacoustics_rendering_is_xai_locs_earlier_chain():
    speech, rirs = _speech_and_rirs()
    out = render_windows("pyroomacoustics", speech, rirs, 20.0, np.random.default_rng(5), 1000)
    old = cut_windows(add_white_noise(reverberant_signals(speech, rirs), 20.0, np.random.default_rng(5)), 1000)
    # the same chain; the noise is added in another grouping, so at most one float32 rounding apart
    np.testing.assert_allclose(out, old, rtol=0, atol=2.0**-24 * np.abs(old).max())
    assert out.dtype == np.float32
    assert out.shape[0] == window_count("pyroomacoustics", speech.size, rirs.shape[1], 1000) == 12


def test_window_counts_and_bad_rendering_input():
    assert window_count("gpurir", 5120, 2400, 5120) == 1 and window_count("gpurir", 2721, 2400, 5120) == 1
    assert window_count("gpurir", 2720, 2400, 5120) == 0 and window_count("pyroomacoustics", 5119, 2400, 5120) == 0
    speech, rirs = _speech_and_rirs(n_speech=500)
    assert render_windows("gpurir", speech, rirs, 10.0, np.random.default_rng(0), 5120).shape == (0, 3, 5120)
    for args, match in [(("gpurir", np.zeros(100), rirs, 10.0), "silent"),
                        (("gpurir", speech, rirs[0], 10.0), "rirs of shape"),
                        (("gpurir", speech[None], rirs, 10.0), "1-D"),
                        (("gpurir", speech, rirs, float("nan")), "SNR=nan"),
                        (("other", speech, rirs, 10.0), "allowed: gpurir")]:
        with pytest.raises(InputError, match=match):
            render_windows(*args, np.random.default_rng(0), 100)
    with pytest.raises(InputError, match="window=0"):
        window_count("gpurir", 100, 10, 0)
