"""Regression tests of reviewed acoustics bugs: geometry the simulator cannot draw is refused in one line
instead of giving silent zeros or NaN, the image grid stays within memory, rooms describe alike whatever
the number types, and every bad argument is a one-line error naming its value."""
import math
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from xai_loc.acoustics import ism
from xai_loc.acoustics.backends import simulate_rirs
from xai_loc.acoustics.directions import STUDY_GRID
from xai_loc.acoustics.ism import hann_sinc, image_source_rirs
from xai_loc.acoustics.render import add_white_noise, render_components, render_windows, reverberant_signals
from xai_loc.acoustics.room import ShoeBox, linear_array
from xai_loc.data.scene import Scene, paper_scene
from xai_loc.errors import InputError

PAPER = ShoeBox((3.6, 8.2, 2.4))
SRC = np.array([[1.7, 5.5, 1.3]])
MIC = np.array([[1.6, 7.0, 1.2]])  # 1.5067 m from SRC: the direct sound arrives at 70.28 samples
F64 = {"dtype": torch.float64}


def _speech_and_rirs():
    rng = np.random.default_rng(0)
    return rng.standard_normal(6000), rng.standard_normal((3, 800)) * np.exp(-np.arange(800) / 100.0)


# ------------------------------------------------------------------------------------------------
# Hybrid mode: a tail that would start before the direct sound has passed is refused
# ------------------------------------------------------------------------------------------------

def test_hybrid_tail_may_not_replace_the_direct_sound():
    big = ShoeBox((30.0, 30.0, 5.0))
    src, mic = [[1.0, 1.0, 1.5]], [[21.0, 21.0, 1.5]]  # 28.28 m: direct sound at 1319.37 samples
    # default t_diff = T60 / 4 = 1280 samples; the 128-tap filter reaches 65 samples past an arrival, so the
    # direct sound has passed at sample floor(1319.37) + 66 = 1385; the tail is fitted to 10 ms (160 samples)
    # from there, ending 65 samples before t_diff: t_diff >= (1385 + 160 + 65) / 16000 = 0.100625 s -> 0.1007 s
    with pytest.raises(InputError, match=r"t_diff=0\.08 s .* give t_diff >= 0\.1007 s") as err:
        image_source_rirs(big, src, mic, 0.32, mode="hybrid")
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match=r"t_diff=0\.1006 s"):  # below 0.100625 s: too few reflections
        image_source_rirs(big, src, mic, 0.32, mode="hybrid", t_diff=0.1006)
    hybrid = image_source_rirs(big, src, mic, 0.32, mode="hybrid", t_diff=0.1007, **F64)[0, 0]
    full = image_source_rirs(big, src, mic, 0.32, **F64)[0, 0]
    assert int(hybrid.abs().argmax()) == int(full.abs().argmax()) == 1319
    torch.testing.assert_close(hybrid[:1612], full[:1612], rtol=0, atol=1e-12 * float(full.abs().max()))


@pytest.mark.parametrize("convention, smallest", [("gpurir", 0.0226), ("pyroomacoustics", 0.0155)])
def test_smallest_t_diff_follows_the_conventions_filter(convention, smallest):
    # direct sound at 70.28 samples; half-widths w = 65 (gpurir) and 8 (16-tap table): passed at
    # floor(70.28) + w + 1, then 10 ms of reflections and the w samples the fit leaves out, up to 0.1 ms
    with pytest.raises(InputError, match=f"give t_diff >= {smallest} s"):
        image_source_rirs(PAPER, SRC, MIC, 0.15, mode="hybrid", t_diff=0.003, convention=convention)
    image_source_rirs(PAPER, SRC, MIC, 0.15, mode="hybrid", t_diff=smallest, convention=convention)


# ------------------------------------------------------------------------------------------------
# A direct path that arrives after the response ends is refused
# ------------------------------------------------------------------------------------------------

def test_direct_sound_after_t_max_is_refused_and_arrives_where_it_should_within_it():
    corridor = ShoeBox((100.0, 2.0, 2.0))
    src, mic = [[5.0, 1.0, 1.0]], [[55.0, 1.1, 1.0]]
    d = math.dist(src[0], mic[0])  # 50.0001 m: 0.14577 s, 2332.37 samples
    with pytest.raises(InputError, match=r"50 m from microphone 0: .* at 0\.145773 s, .* of at least 0\.1458 s"):
        image_source_rirs(corridor, src, mic, 0.1)
    with pytest.raises(InputError, match="t_max=0.12 s"):
        image_source_rirs(corridor, src, mic, 0.3, t_max=0.12)
    h = image_source_rirs(corridor, src, mic, 0.1, t_max=0.15, max_order=0, **F64)[0, 0].numpy()
    tau = d / corridor.c * corridor.fs
    expected = hann_sinc(np.arange(h.size) - tau, 128) / (4 * math.pi * d)
    np.testing.assert_allclose(h, expected, rtol=0, atol=1e-6 * expected.max())
    assert int(np.argmax(h)) == 2332


# ------------------------------------------------------------------------------------------------
# Image lists: bounded memory, and a request that cannot fit is refused up front
# ------------------------------------------------------------------------------------------------

def test_the_image_grid_is_reduced_in_slabs():
    # 700 m around one microphone: 39 million grid cells (310 MB as float64), one image of order 0
    code = textwrap.dedent("""
        import resource, numpy as np
        from xai_loc.acoustics.ism import _images
        from xai_loc.acoustics.room import ShoeBox
        room, src, mic = ShoeBox((3.6, 8.2, 2.4)), np.array([1.7, 5.5, 1.3]), np.array([[1.6, 7.0, 1.2]])
        _images(room, src, mic, 50.0, 0)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        pos, order = _images(room, src, mic, 700.0, 0)
        print(pos.shape[0], int(order[0]), (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    n_images, order, grown_mb = (int(v) for v in out)
    assert (n_images, order) == (1, 0)
    assert grown_mb < 300  # the whole grid at once: 460-660 MB; in slabs of 4e6 cells: ~125 MB


def test_more_images_than_fit_are_refused_up_front_by_a_close_estimate():
    # T60 = 10 s: 4/3 pi (3430 m)^3 / 70.8 m^3 = 2.4e9 images, ~200 GB
    with pytest.raises(InputError, match=r"T60=10\.0 s .* about 2\.4e\+09 image sources .* at most 5e\+07") as err:
        image_source_rirs(PAPER, SRC, MIC, 10.0, convention="pyroomacoustics")
    assert "\n" not in str(err.value)
    image_source_rirs(PAPER, SRC, MIC, 10.0, t_max=0.05, convention="pyroomacoustics")  # fewer images fit
    mics = linear_array(16, 0.15, (1.7, 7.0, 1.2))
    reach = PAPER.c * 0.6  # the "reach" set at T60 = 0.6 s
    exact = ism._images(PAPER, SRC[0], mics, reach, None)[0].shape[0]
    assert ism._image_count(PAPER, mics, reach, None) == pytest.approx(exact, rel=0.01)
    assert ism._image_count(PAPER, mics, reach, 2) == 25  # points of |a| + |b| + |c| <= 2
    assert ism._images(PAPER, SRC[0], mics, reach, 2)[0].shape[0] == 25


# ------------------------------------------------------------------------------------------------
# A source on a microphone
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("convention", ["gpurir", "pyroomacoustics"])
def test_a_source_on_a_microphone_is_refused_and_one_2_mm_away_is_finite(convention):
    with pytest.raises(InputError, match=r"0 m from microphone 0 .* at least 0\.001 m"):
        image_source_rirs(PAPER, MIC, MIC, 0.15, convention=convention)
    near = image_source_rirs(PAPER, MIC + [0.002, 0.0, 0.0], MIC, 0.15, convention=convention, **F64)[0, 0]
    assert bool(torch.isfinite(near).all())
    tau = 0.002 / PAPER.c * PAPER.fs  # the direct sound 0.09 samples after sample 0, no reflection near it
    assert float(near[0]) == pytest.approx(hann_sinc(-tau, 128) / (4 * math.pi * 0.002), rel=2e-3)


# ------------------------------------------------------------------------------------------------
# Components: the sampling rate and the tail start decide the early/late cut, so they are checked
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [({"fs": float("nan")}, "fs=nan"), ({"fs": -16000}, "fs=-16000"),
                                           ({"late_start": float("nan")}, "late_start=nan"),
                                           ({"late_start": -1.0}, "late_start=-1.0")])
def test_components_refuse_a_cut_that_would_move_early_energy(kwargs, match):
    speech, rirs = _speech_and_rirs()
    direct = np.where(np.arange(800) == 10, rirs, 0.0)
    args = {"fs": 16000, "late_start": None, **kwargs}
    parts = render_components("gpurir", speech, rirs, direct, np.full(3, 10.0), 10.0, np.random.default_rng(1),
                              1000, 16000, late_start=400.0)
    early = reverberant_signals(speech / np.abs(speech).max(), np.where(np.arange(800) < 400, rirs - direct, 0.0),
                                full=True)
    np.testing.assert_allclose(parts[1], early[:, :6000].reshape(3, 6, 1000).transpose(1, 0, 2), atol=1e-12)
    with pytest.raises(InputError, match=match):
        render_components("gpurir", speech, rirs, direct, np.full(3, 10.0), 10.0, np.random.default_rng(1), 1000,
                          **args)


# ------------------------------------------------------------------------------------------------
# Rooms describe alike whatever the number types
# ------------------------------------------------------------------------------------------------

def test_rate_and_speed_of_sound_are_one_type_each():
    digests = set()
    for fs, c in [(16000, 343.0), (16000.0, 343), (np.int64(16000), np.float32(343.0)), (np.float64(16000), 343.0)]:
        room = ShoeBox((3.6, 8.2, 2.4), fs=fs, c=c)
        assert type(room.fs) is int and type(room.c) is float
        digests.add(Scene("x", room, [[1.0, 7.0, 1.2]], [[1.7, 5.5, 1.3]], {"test": [0]}).digest())
    assert digests == {"9aaf63b7b9ae3f94"}  # the digest of the integer rate and float speed, as before
    assert paper_scene().digest() == "55c5aec614ecf430"
    assert paper_scene("pyroomacoustics").digest() == "cf8a3a13f627f499"


# ------------------------------------------------------------------------------------------------
# Directions that are not finite have no class
# ------------------------------------------------------------------------------------------------

def test_non_finite_directions_and_labels_are_refused():
    assert STUDY_GRID.nearest(359.0, 4.9) == 0 and STUDY_GRID.nearest(3.0, 64.0) == 6 * 72 + 1
    for azimuth, elevation in [(np.nan, 0.0), (np.inf, 10.0), (10.0, -np.inf)]:
        with pytest.raises(InputError, match="is not finite"):
            STUDY_GRID.nearest([5.0, azimuth], [0.0, elevation])
    for label in (1e20, np.inf, -np.inf):
        with pytest.raises(InputError, match=re.escape(f"label {label:g} is not allowed; give integers in 0..503")):
            STUDY_GRID.directions([3, label])


# ------------------------------------------------------------------------------------------------
# One-line errors naming the value
# ------------------------------------------------------------------------------------------------

def _ism(**kwargs):
    return lambda: image_source_rirs(PAPER, SRC, MIC, 0.15, **kwargs)


def _render(**kwargs):
    speech, rirs = _speech_and_rirs()
    args = {"speech": speech, "rirs": rirs, "window": 1000, **kwargs}
    return lambda: render_windows("gpurir", args["speech"], args["rirs"], 10.0, np.random.default_rng(0),
                                  args["window"])


def _components(delays):
    speech, rirs = _speech_and_rirs()
    return lambda: render_components("gpurir", speech, rirs, rirs, delays, 10.0, np.random.default_rng(0), 1000,
                                     16000)


@pytest.mark.parametrize("call, names", [
    (_render(window=None), "window=None"),
    (_render(window=float("nan")), "window=nan"),
    (_render(window="abc"), "window='abc'"),
    (_ism(max_order=float("nan")), "max_order=nan"),
    (_ism(t_max="abc"), "t_max='abc'"),
    (_ism(mode="hybrid", t_diff="x"), "t_diff='x'"),
    (_ism(mode="hybrid", seed=-1), "seed=-1"),
    (_ism(dtype=torch.int64), "dtype=torch.int64"),
    (_ism(dtype=torch.bfloat16, convention="pyroomacoustics"), "dtype=torch.bfloat16"),
    (lambda: image_source_rirs(PAPER, SRC, np.zeros((0, 3)), 0.15), "shape (0, 3)"),
    (_render(rirs=np.zeros((0, 800))), "rirs of shape (0, 800)"),
    (lambda: add_white_noise(np.ones((3, 10)), 10.0, np.random.default_rng(0), ref_mic=5), "ref_mic=5"),
    (_render(speech="abc"), "speech 'abc'"),
    (_render(speech=np.ones((2, 100))), "speech of shape (2, 100)"),
    (_components(np.array([np.nan, 1.0, 1.0])), "direct_delays array([nan,"),
    (lambda: simulate_rirs("pyroomacoustics", PAPER, SRC, MIC, 0.15, convention="pyroomacoustics", mode="hybrid"),
     "no option 'mode'"),
    (lambda: ShoeBox((3.0, 4.0, 5.0), c="343"), "c='343'"),
    (lambda: ShoeBox(3.0), "room size 3.0"),
    (lambda: ShoeBox((3.0, 4.0, 5.0), fs=True), "fs=True"),
    (lambda: linear_array(2.5, 0.1, (1.0, 1.0, 1.0)), "n_mics=2.5"),
    (lambda: linear_array(4, 0.1, (1.0, 1.0, 1.0), axis=3), "axis=3"),
    (lambda: linear_array(4, 0.1, (1.0, 1.0)), "centre (1.0, 1.0)"),
    (lambda: linear_array(4, float("nan"), (1.0, 1.0, 1.0)), "spacing=nan"),
])
def test_bad_argument_is_a_one_line_error_naming_it(call, names):
    with pytest.raises(InputError) as err:
        call()
    assert names in str(err.value) and "\n" not in str(err.value)


def test_pyroomacoustics_backend_accepts_a_cpu_device_object():
    args = (PAPER, SRC, MIC, 0.15)
    on_object = simulate_rirs("pyroomacoustics", *args, convention="pyroomacoustics", device=torch.device("cpu"),
                              max_order=0)
    np.testing.assert_array_equal(on_object, simulate_rirs("pyroomacoustics", *args, convention="pyroomacoustics",
                                                           max_order=0))


def test_linear_array_takes_a_row_centre_and_names_bad_ones_in_one_line():
    np.testing.assert_array_equal(linear_array(2, 0.1, np.array([[1.0, 2.0, 1.0]])),
                                  [[0.95, 2.0, 1.0], [1.05, 2.0, 1.0]])
    for centre in (np.arange(30.0), np.zeros((2, 3))):
        with pytest.raises(InputError, match="array centre array") as err:
            linear_array(4, 0.1, centre)
        assert "\n" not in str(err.value)
