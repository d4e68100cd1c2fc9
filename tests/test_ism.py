"""Known-answer physics of the torch image-source simulator under the ``pyroomacoustics`` convention,
checked against pyroomacoustics itself (the ``gpurir`` convention: tests/test_conventions.py)."""
import math

import numpy as np
import pyroomacoustics as pra
import pytest
import torch

from xai_loc.acoustics.backends import BACKENDS, simulate_rirs
from xai_loc.acoustics.ism import image_source_rirs
from xai_loc.acoustics.room import ShoeBox, linear_array
from xai_loc.errors import InputError

ROOM = ShoeBox((3.6, 8.2, 2.4), fs=16000, c=343.0)
MICS = linear_array(16, 0.15, (1.7, 7.0, 1.2))
SRC = np.array([[1.23, 5.41, 1.31]])


def _pulse_time_and_area(h: np.ndarray, tau: float, search: float = 3.0):
    """Peak time (band-limited interpolation) and area of one pulse expected near ``tau``."""
    centre = int(round(tau))
    t = np.arange(max(0, centre - 12), centre + 13)
    grid = np.arange(tau - search, tau + search, 0.005)
    interp = np.sinc(grid[:, None] - t[None, :]) @ h[t]
    peak = grid[np.argmax(np.abs(interp))]
    return float(peak), float(h[centre - 8 : centre + 9].sum())


PRA = "pyroomacoustics"


def _rir_pair(t60, max_order):
    ours = simulate_rirs("torch", ROOM, SRC, MICS, t60, max_order=max_order, dtype=torch.float64, convention=PRA)[0]
    ref = simulate_rirs("pyroomacoustics", ROOM, SRC, MICS, t60, max_order=max_order, convention=PRA)[0]
    return ours.astype(np.float64), ref.astype(np.float64)


def test_direct_path_arrival_and_amplitude_match_geometry_and_pyroomacoustics():
    ours, ref = _rir_pair(0.15, 0)
    dist = np.linalg.norm(MICS - SRC, axis=1)
    tau = dist / ROOM.c * ROOM.fs
    for m in range(len(MICS)):
        t_ours, a_ours = _pulse_time_and_area(ours[m], tau[m])
        t_ref, a_ref = _pulse_time_and_area(ref[m], tau[m])
        assert abs(t_ours - tau[m]) < 0.1 and abs(t_ref - t_ours) < 1.0
        expected = 1.0 / (4 * math.pi * dist[m])
        assert a_ours == pytest.approx(expected, rel=0.01)
        assert a_ref == pytest.approx(expected, rel=0.01)


def test_first_order_reflections_arrive_where_the_walls_put_them():
    o1, r1 = _rir_pair(0.15, 1)
    o0, r0 = _rir_pair(0.15, 0)
    ours, ref = o1 - o0, r1 - r0
    lx, ly, lz = ROOM.size
    s = SRC[0]
    images = [(-s[0], s[1], s[2]), (2 * lx - s[0], s[1], s[2]), (s[0], -s[1], s[2]),
              (s[0], 2 * ly - s[1], s[2]), (s[0], s[1], -s[2]), (s[0], s[1], 2 * lz - s[2])]
    checked = 0
    for m in (0, 7, 15):
        taus = [np.linalg.norm(MICS[m] - np.array(im)) / ROOM.c * ROOM.fs for im in images]
        for k, tau in enumerate(taus):
            if min(abs(tau - t) for j, t in enumerate(taus) if j != k) < 10:
                continue  # overlapping pulses: no clean centroid
            t_ours, _ = _pulse_time_and_area(ours[m], tau)
            t_ref, _ = _pulse_time_and_area(ref[m], tau)
            assert abs(t_ours - tau) < 1.0 and abs(t_ref - tau) < 1.0
            checked += 1
    assert checked >= 9


def test_energy_decay_t60_matches_pyroomacoustics_within_10_percent():
    ours, ref = _rir_pair(0.3, None)
    for m in (0, 8):
        t_ours = pra.experimental.measure_rt60(ours[m], ROOM.fs, decay_db=20)
        t_ref = pra.experimental.measure_rt60(ref[m], ROOM.fs, decay_db=20)
        assert t_ours == pytest.approx(t_ref, rel=0.10)


def test_responses_agree_sample_by_sample_with_pyroomacoustics():
    ours, ref = _rir_pair(0.15, 3)
    # Different sinc windows (16 vs 81 taps) leave a small residual only.
    assert np.abs(ours - ref).max() < 0.1 * np.abs(ref).max()


@pytest.mark.parametrize("convention, half", [("pyroomacoustics", 8), ("gpurir", 65)])
def test_hybrid_tail_keeps_the_decay_rate_and_is_seeded(convention, half):
    def run(**kw):
        return image_source_rirs(ROOM, SRC, MICS, 0.4, dtype=torch.float64, convention=convention, **kw)[0].numpy()

    ism, hyb = run(), run(mode="hybrid", seed=3)
    again, other = run(mode="hybrid", seed=3), run(mode="hybrid", seed=4)
    n_diff = int(math.ceil(0.1 * ROOM.fs))
    np.testing.assert_array_equal(hyb, again)
    assert not np.array_equal(hyb[:, n_diff:], other[:, n_diff:])
    np.testing.assert_allclose(hyb[:, : n_diff - half], ism[:, : n_diff - half], atol=1e-12)
    # The diffuse tail decays at the nominal T60: 60 dB per 0.4 s.
    tail = hyb[0, n_diff:] ** 2
    n_half = tail.size // 2
    drop_db = 10 * np.log10(tail[:n_half].mean() / tail[n_half:].mean())
    assert drop_db == pytest.approx(60 * (n_half / ROOM.fs) / 0.4, rel=0.1)
    # Its level joins the image-source part: equal energy over the 20 ms before t_diff, above 20 Hz (under +beta
    # the image sources add up to an offset below it that a white tail does not carry)
    spectrum = np.fft.rfft(ism[0])
    spectrum[np.fft.rfftfreq(ism.shape[1], 1 / ROOM.fs) < 20] = 0
    above = np.fft.irfft(spectrum, ism.shape[1])
    before = slice(n_diff - half - 320, n_diff - half)
    fitted = tail[:320].mean() * 10 ** (60 * 160 / ROOM.fs / 0.4 / 10)
    assert fitted == pytest.approx((above[before] ** 2).mean(), rel=0.6)


@pytest.mark.parametrize("convention", ["pyroomacoustics", "gpurir"])
def test_result_does_not_depend_on_thread_count(convention):
    torch.set_num_threads(2)
    try:
        two = image_source_rirs(ROOM, SRC, MICS, 0.3, convention=convention)
    finally:
        torch.set_num_threads(1)
    one = image_source_rirs(ROOM, SRC, MICS, 0.3, convention=convention)
    assert torch.equal(one, two)


def test_sabine_reflection_coefficient_and_bounds():
    beta = ROOM.reflection_coefficient(0.6)
    alpha = 24 * math.log(10) * ROOM.volume / (ROOM.c * ROOM.surface * 0.6)
    assert beta == pytest.approx(math.sqrt(1 - alpha))
    e_abs, _ = pra.inverse_sabine(0.6, list(ROOM.size), c=ROOM.c)
    assert 1 - beta**2 == pytest.approx(e_abs, rel=1e-6)
    with pytest.raises(InputError, match="too short"):
        ROOM.reflection_coefficient(0.01)


@pytest.mark.parametrize("kwargs, match", [
    ({"t60": 0.0}, "T60=0.0"),
    ({"t60": 50.0}, "T60=50.0"),
    ({"t60": float("nan")}, "T60=nan"),
    ({"sources": np.array([[4.0, 1.0, 1.0]])}, "outside the room"),
    ({"mics": np.array([[1.0, 1.0, -0.1]])}, "outside the room"),
    ({"mode": "fast"}, "allowed: ism, hybrid"),
    ({"convention": "odeon"}, "allowed: gpurir, pyroomacoustics"),
    ({"max_order": -1}, "max_order=-1"),
    ({"t_max": -0.1}, "t_max=-0.1"),
])
def test_bad_simulation_input_is_a_one_line_error(kwargs, match):
    args = {"sources": SRC, "mics": MICS, "t60": 0.3, **kwargs}
    t60 = args.pop("t60")
    with pytest.raises(InputError, match=match) as err:
        image_source_rirs(ROOM, args.pop("sources"), args.pop("mics"), t60, **args)
    assert "\n" not in str(err.value)


def test_unknown_backend_is_refused():
    with pytest.raises(InputError, match="allowed: torch"):
        simulate_rirs("odeon", ROOM, SRC, MICS, 0.3)
    assert {"torch", "pyroomacoustics", "gpurir"} <= set(BACKENDS)


def test_backends_refuse_conventions_they_cannot_follow():
    # pyroomacoustics keeps +beta: it cannot draw gpuRIR's (-beta)^n
    with pytest.raises(InputError, match="cannot follow convention 'gpurir'") as err:
        simulate_rirs("pyroomacoustics", ROOM, SRC, MICS, 0.3)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="gpuRIR's own convention"):
        simulate_rirs("gpurir", ROOM, SRC, MICS, 0.3, convention="pyroomacoustics")
