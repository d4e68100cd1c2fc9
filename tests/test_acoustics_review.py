"""Regression tests of reviewed acoustics defects: the binaural hybrid tail fitted to reflections only, one set of
argument and geometry checks for every RIR backend, one-line errors from the binaural functions, gpuRIR's
unrounded 8 ms arrival window, SOFA files of several distances, and a t_max message that helps on the CLI."""
import math

import gpurir_reference as ref
import numpy as np
import pytest
import torch

from xai_loc.acoustics import binaural
from xai_loc.acoustics.backends import simulate_rirs
from xai_loc.acoustics.conventions import get_convention
from xai_loc.acoustics.hrtf import load_hrtf
from xai_loc.acoustics.ism import image_source_rirs
from xai_loc.acoustics.room import ShoeBox
from xai_loc.errors import InputError

PAPER = ShoeBox((3.6, 8.2, 2.4))
SRC = np.array([[1.7, 5.5, 1.3]])
MIC = np.array([[1.6, 7.0, 1.2]])
CORRIDOR = ShoeBox((100.0, 2.0, 2.0))
FAR_SRC, FAR_MIC = [[5.0, 1.0, 1.0]], [[55.0, 1.1, 1.0]]  # 50.0001 m: the direct sound arrives at 0.145773 s


def _one_line(func, *args, match, **kwargs):
    with pytest.raises(InputError, match=match) as err:
        func(*args, **kwargs)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def kemar16():
    return load_hrtf("kemar", fs=16000)


# ------------------------------------------------------------------------------------------------
# 1. A binaural hybrid tail is fitted to reflections, never to the HRIR-filtered direct sound
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fs, passed", [(16000, 259), (48000, 761)])
def test_smallest_binaural_t_diff_leaves_10_ms_of_reflections_after_the_direct_sound(fs, passed):
    # KEMAR at 1.4 m: the arrival at floor(1.4 / 343 fs), 8 sinc taps after it and the HRIR (186 / 558 taps)
    hrtf = load_hrtf("kemar", fs=fs)
    direct = binaural.ROOMS["office"].brirs([90.0, 0.0, 270.0], [0.0, 0.0, 60.0], hrtf, fs=fs, max_order=0,
                                            t_max=0.05, dtype=torch.float64).abs().amax(dim=(0, 1))
    assert float(direct[passed - 2]) > 1e-9 * float(direct.max())  # the bound is tight
    assert float(direct[passed:].max()) <= 1e-9 * float(direct.max())
    n_diff = math.ceil(binaural.min_t_diff(1.4, fs) * fs)  # was 0.004625 / 0.00425 s: the direct sound alone
    assert 0.01 * fs <= n_diff - 8 - passed < 0.01 * fs + 0.0001 * fs + 1  # the fit: 10 ms of reflections


def test_binaural_tail_at_the_smallest_t_diff_has_the_full_simulations_level(kemar16):
    office, t_diff = binaural.ROOMS["office"], binaural.min_t_diff(1.4, 16000)
    full = office.brirs([90.0, 0.0], [0.0, 0.0], kemar16, fs=16000, t_max=0.1, dtype=torch.float64)
    hybrid = office.brirs([90.0, 0.0], [0.0, 0.0], kemar16, fs=16000, t_max=0.1, t_diff=t_diff, dtype=torch.float64)
    n = math.ceil(t_diff * 16000)
    torch.testing.assert_close(hybrid[..., :n], full[..., :n], rtol=0, atol=1e-12)
    ratio = (hybrid[..., n:] ** 2).sum(-1) / (full[..., n:] ** 2).sum(-1)  # per source and ear
    assert bool(((ratio > 0.5) & (ratio < 2.0)).all()), ratio


def test_binaural_t_diff_that_fits_the_tail_to_the_direct_sound_is_refused(kemar16):
    # t_diff 10 ms was accepted and gave a tail twice as loud as the full simulation's
    _one_line(binaural.ROOMS["office"].brirs, [90.0], [0.0], kemar16, fs=16000, t_diff=0.01,
              match=r"t_diff=0\.01 s starts the diffuse tail too early: it is fitted to 10 ms of reflections after "
                    r"the direct sound 1\.4 m away \(its 186-tap HRIR included\); give t_diff >= 0\.0267 s")


# ------------------------------------------------------------------------------------------------
# 2. The pyroomacoustics backend checks what the torch backend checks
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("room, src, mic, kwargs, match", [
    (PAPER, MIC, MIC, {}, r"0 m from microphone 0 .* at least 0\.001 m"),  # was: 1.5e6 at sample 0
    (CORRIDOR, FAR_SRC, FAR_MIC, {}, r"arrives at 0\.145773 s, not before t_max=0\.1 s"),  # was: all zeros
    (PAPER, SRC, MIC, {"t_max": float("nan")}, "t_max=nan s is not allowed"),  # was: a ValueError
    (PAPER, SRC, MIC, {"max_order": -1}, "max_order=-1 is not allowed"),  # was: a ValueError in pyroomacoustics
    (PAPER, SRC, np.zeros((0, 3)), {}, r"microphone positions of shape \(0, 3\)"),
])
def test_the_pyroomacoustics_backend_refuses_what_the_torch_backend_refuses(room, src, mic, kwargs, match):
    pytest.importorskip("pyroomacoustics")
    for backend in ("torch", "pyroomacoustics"):
        _one_line(simulate_rirs, backend, room, src, mic, 0.1, convention="pyroomacoustics", match=match, **kwargs)


# ------------------------------------------------------------------------------------------------
# 3. Bad arguments of the binaural functions are one-line errors
# ------------------------------------------------------------------------------------------------

BOOTH = binaural.ROOMS["booth"]


@pytest.mark.parametrize("kwargs, match", [
    ({"max_order": "a"}, "max_order='a' is not allowed"),
    ({"max_order": float("nan")}, "max_order=nan is not allowed"),
    ({"t_max": "a"}, "t_max='a' s is not allowed"),
    ({"t_diff": "a"}, r"t_diff='a' s is not allowed; give a value in \(0, t_max=0\.2\]"),
    ({"device": "tpu"}, "unknown device 'tpu'; allowed: cpu, cuda, cuda:N"),
    ({"seed": -1}, "seed=-1 is not allowed"),
])
def test_binaural_rirs_refuse_bad_options_in_one_line(kwargs, match, kemar16):
    room, head, src = BOOTH.room(16000), BOOTH.head(), BOOTH.sources([90.0], [0.0])
    _one_line(binaural.binaural_rirs, room, head, src, 0.2, kemar16, match=match, **kwargs)


@pytest.mark.parametrize("call, match", [
    (lambda h: binaural.synthesize("pink_burst", 16000, float("nan")), "duration=nan s is not allowed"),
    (lambda h: binaural.synthesize("pink_burst", 16000, 0.1, seed=-1), "seed=-1 is not allowed"),
    (lambda h: binaural.Listener((1.0, 1.0, 1.0), yaw="a"), "listener yaw='a' is not allowed"),
    (lambda h: binaural.Listener(("a", 1.0, 1.0)), "listener position .* is not allowed"),
    (lambda h: binaural.anechoic_rirs([0.0], [0.0], hrtf=h, fs=16000, c="a"), "c='a' is not allowed"),
    (lambda h: binaural.anechoic_rirs([0.0], [0.0], hrtf=h, fs=16000, device="tpu"), "unknown device 'tpu'"),
    (lambda h: binaural.diffuse_noise(0, h, np.random.default_rng(0)), "n_samples=0 is not allowed"),
    (lambda h: binaural.spatialized_noise(0, np.zeros((1, 2, 8)), np.random.default_rng(0), 16000),
     "n_samples=0 is not allowed"),
    (lambda h: binaural.render_binaural(np.ones(800), 90.0, 0.0, room=None, hrtf=h, fs=16000, t_diff=0.05),
     r"option t_diff=0\.05 is not allowed in free field \(room=None\); allowed: c, n_samples, interp"),
    (lambda h: binaural.render_binaural(np.ones(800), 90.0, 0.0, room="booth", hrtf=h, fs=16000, c=340.0),
     r"option c=340\.0 is not allowed in room 'booth'; allowed: distance, t_max, max_order, t_diff"),
])
def test_binaural_functions_refuse_bad_arguments_in_one_line(call, match, kemar16):
    _one_line(call, kemar16, match=match)


def test_render_binaural_passes_the_options_its_responses_take(kemar16):
    # the direct path alone in the booth is the free-field response of the same direction and distance
    sound = binaural.synthesize("click_train", 16000, 0.05)
    free = binaural.render_binaural(sound, 90.0, 0.0, room=None, hrtf=kemar16, fs=16000, n_samples=400)
    direct = binaural.render_binaural(sound, 90.0, 0.0, room="booth", hrtf=kemar16, fs=16000, max_order=0)
    np.testing.assert_allclose(direct, free, rtol=0, atol=1e-6 * np.abs(free).max())


# ------------------------------------------------------------------------------------------------
# 4. The gpurir convention's arrival window is 8 ms wide, not rounded to whole samples
#    (gpuRIR rounds it: 176 at 22.05 kHz)
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fs, width", [(16000, 128.0), (22050, 176.4), (44100, 352.8), (48000, 384.0)])
def test_gpurir_window_width_is_8_ms_unrounded(fs, width):
    assert get_convention("gpurir").taps(fs) == pytest.approx(width, rel=1e-12)


@pytest.mark.parametrize("fs", [22050, 44100])
def test_gpurir_convention_matches_the_plain_formula_at_rates_of_fractional_windows(fs):
    # rounding the window (176 / 353 taps) moved every tap by up to 1.3e-5 / 2e-6 of the peak
    room = ShoeBox((3.1, 2.6, 2.3), fs=fs)
    mics = np.array([[0.4, 0.5, 1.1], [2.7, 2.1, 0.3], [1.55, 1.3, 2.0]])
    src = np.array([1.0, 1.9, 1.6])
    expected = ref.rirs(room.size, src, mics, 0.2, fs=fs, t_max=0.05)
    ours = image_source_rirs(room, src, mics, 0.2, t_max=0.05, dtype=torch.float64)[0].numpy()
    peak = 1.0 / (4 * math.pi * np.linalg.norm(mics - src, axis=1).min())
    assert np.abs(ours - expected).max() <= 1e-6 * peak  # measured: 4e-7 (the Chebyshev fit of the kernel)


# ------------------------------------------------------------------------------------------------
# 5. A SOFA file of several distances loads through load_hrtf
# ------------------------------------------------------------------------------------------------

def test_load_hrtf_picks_one_distance_of_a_sofa_file(tmp_path):
    sofar = pytest.importorskip("sofar")
    az = np.array([0.0, 90.0, 180.0, 270.0] * 2)
    radius = np.repeat([1.0, 2.0], 4)
    ir = np.random.default_rng(0).standard_normal((8, 2, 16))
    sofa = sofar.Sofa("SimpleFreeFieldHRIR")
    sofa.Data_IR = ir
    sofa.Data_SamplingRate = 32000
    sofa.SourcePosition = np.stack([az, np.zeros(8), radius], axis=1)
    path = tmp_path / "two_radii.sofa"
    sofar.write_sofa(str(path), sofa)
    _one_line(load_hrtf, "sofa", path, match=r"several distances \(1, 2 m\); choose one with distance=")
    far = load_hrtf("sofa", path, distance=2.0)  # was: a TypeError (no such argument)
    np.testing.assert_array_equal(far.directions[:, 2], 2.0)
    np.testing.assert_array_equal(far.hrirs, ir[4:])
    assert far.nearest_index(90.0, 0.0) == 1
    _one_line(load_hrtf, "sofa", path, distance="a", match=r"distance='a' is not allowed; give positive metres")
    _one_line(load_hrtf, "kemar", distance=1.4, match="HRTF set 'kemar' takes no distance")


# ------------------------------------------------------------------------------------------------
# 6. A direct sound after t_max: the message also helps where only the T60 can be set (the CLI)
# ------------------------------------------------------------------------------------------------

def test_direct_sound_after_t_max_names_the_t60_and_the_distance():
    _one_line(image_source_rirs, CORRIDOR, FAR_SRC, FAR_MIC, 0.1,
              match=r"not before t_max=0\.1 s; give t_max, or the T60 it defaults to, of at least 0\.1458 s, "
                    r"or move the source closer")


def test_render_binaural_in_a_room_takes_the_source_distance():
    """Final review: the options check refused ``distance``, which a room's BRIRs take (it moves the sources)."""
    sound = binaural.synthesize("click_train", 16000, 0.05, seed=1)
    near = binaural.render_binaural(sound, 90.0, 0.0, room="booth", fs=16000)
    far = binaural.render_binaural(sound, 90.0, 0.0, room="booth", fs=16000, distance=2.0)
    assert far.shape == near.shape and np.abs(far).max() < 0.9 * np.abs(near).max()  # farther: quieter
