"""Binaural RIRs, room presets, labels, synthetic sounds and scene mixing (known answers)."""
import math

import numpy as np
import pytest
import torch
import xarray as xr

from xai_loc.acoustics.binaural import (
    N_LABELS,
    ROOMS,
    SOUNDS,
    Listener,
    anechoic_rirs,
    binaural_rirs,
    diffuse_noise,
    direction_to_label,
    label_to_direction,
    load_room,
    render_scene,
    sound_set,
    spatialize,
    study_grid,
    synthesize,
)
from xai_loc.acoustics.hrtf import HRTFSet
from xai_loc.acoustics.room import ShoeBox
from xai_loc.errors import InputError

FS = 48000
C = 343.0


@pytest.fixture(scope="module")
def hrtf():
    return HRTFSet.kemar().resample(FS)


def test_anechoic_direct_path_scale_and_integer_delay(hrtf):
    d = C * 196 / FS  # exactly 196 samples of travel
    # an exact claim, checked in float64: in float32 the FFT convolution alone is off by ~1e-7
    # of the peak (about one float32 ulp, CPU-dependent), the size of any tolerance tight enough
    # to mean something; float64 FFT rounding is ~1e-14 of the peak
    brir = anechoic_rirs([90.0, 200.0], [0.0, 20.0], d, hrtf, fs=FS, c=C, interp="nearest", dtype=torch.float64)
    for k, (az, el) in enumerate([(90.0, 0.0), (200.0, 20.0)]):
        expected = hrtf.nearest(az, el) / (4 * math.pi * d)
        got = brir[k].numpy()
        np.testing.assert_allclose(got[:, 196:196 + hrtf.n_taps], expected, rtol=0,
                                   atol=1e-12 * np.abs(expected).max())
        assert np.abs(got[:, :196]).max() < 1e-12 * np.abs(expected).max()


def test_anechoic_fractional_delay_from_phase(hrtf):
    d = 1.4  # 195.92 samples
    n = 1024
    brir = anechoic_rirs(30.0, 10.0, d, hrtf, fs=FS, c=C, n_samples=n, interp="nearest")[0].double().numpy()
    h = hrtf.nearest(30.0, 10.0)
    f = np.fft.rfftfreq(4096, 1 / FS)
    band = (f > 300) & (f < 8000)
    ratio = np.fft.rfft(brir[0], 4096)[band] / np.fft.rfft(h[0], 4096)[band]
    # the ratio is a pure delay d / c at gain 1 / (4 pi d)
    np.testing.assert_allclose(np.abs(ratio), 1 / (4 * math.pi * d), rtol=2e-3)
    residual = ratio * np.exp(2j * np.pi * f[band] * 196 / FS)  # remove a whole 196 samples
    tau = 196 - np.angle(residual) / (2 * np.pi * f[band]) * FS
    np.testing.assert_allclose(tau, d / C * FS, atol=0.01)


def test_room_direct_path_equals_anechoic_and_reflections_come_later(hrtf):
    preset = load_room("booth")
    room = preset.room(FS)
    head = preset.head()
    src = preset.sources(60.0, 10.0)
    # float64: an exact claim (the same arrival through two code paths), so the tolerance is
    # float64 FFT rounding (~1e-14 of the peak) rather than float32's (~1e-7)
    f64 = {"dtype": torch.float64}
    direct = binaural_rirs(room, head, src, preset.t60, hrtf, t_max=0.05, max_order=0, **f64)[0].numpy()
    free = anechoic_rirs(60.0, 10.0, 1.4, hrtf, fs=FS, c=room.c, n_samples=direct.shape[1], **f64)[0].numpy()
    np.testing.assert_allclose(direct, free, rtol=0, atol=1e-12 * np.abs(free).max())
    first = binaural_rirs(room, head, src, preset.t60, hrtf, t_max=0.05, max_order=1, **f64)[0].numpy()
    refl = first - direct
    # earliest first-order image: mirror the source in each of the six walls
    s, p = src[0], np.asarray(head.position)
    dists = []
    for axis in range(3):
        for wall in (0.0, room.size[axis]):
            img = s.copy()
            img[axis] = 2 * wall - img[axis]
            dists.append(np.linalg.norm(img - p))
    earliest = int(min(dists) / room.c * FS + hrtf.onset().min() - 8)
    assert np.sum(refl[:, :earliest] ** 2) < 1e-5 * np.sum(refl ** 2)  # only the HRIR's faint lead-in
    assert np.abs(refl[:, earliest:earliest + 100]).max() > 0.05 * np.abs(direct).max()
    beta = room.reflection_coefficient(preset.t60)
    assert beta < 1


def test_a_mirror_symmetric_room_gives_both_ears_the_same_response(hrtf):
    # listener on the room's symmetry plane facing +x, source straight ahead: every image (the floor's
    # at -63 degrees, below KEMAR's lowest ring, included) reaches both ears alike
    room = ShoeBox((4.0, 4.0, 3.0), fs=FS)
    head = Listener((1.0, 2.0, 1.4))
    f64 = {"dtype": torch.float64, "t_max": 0.03, "max_order": 1}
    brir = binaural_rirs(room, head, [[3.0, 2.0, 1.4]], 0.3, hrtf, **f64)[0].numpy()
    np.testing.assert_allclose(brir[0], brir[1], rtol=0, atol=1e-9 * np.abs(brir).max())
    old = binaural_rirs(room, head, [[3.0, 2.0, 1.4]], 0.3, hrtf, interp="barycentric", **f64)[0].numpy()
    assert np.abs(old[0] - old[1]).max() > 0.1 * np.abs(old).max()  # what the cap triangles did


def test_level_difference_sign_for_lateral_sources(hrtf):
    preset = load_room("booth")
    brirs = preset.brirs([90.0, 270.0], [0.0, 0.0], hrtf, fs=FS, t_max=0.08).double().numpy()
    direct = slice(0, 400)  # direct sound: 196 samples of travel plus the HRIR
    left, right = (np.sum(b[:, direct] ** 2, axis=1) for b in brirs)
    assert 10 * np.log10(left[0] / left[1]) > 6  # 90 = left: louder at the left ear
    assert 10 * np.log10(right[1] / right[0]) > 6
    assert np.isfinite(brirs).all()


def test_listener_yaw_and_positions():
    head = Listener((2.0, 3.0, 1.4), yaw=90.0)  # facing +y
    pos = head.source_positions(0.0, 0.0, 1.4)
    np.testing.assert_allclose(pos, [[2.0, 4.4, 1.4]], atol=1e-12)
    pos = head.source_positions(90.0, 30.0, 2.0)  # left of +y is -x
    np.testing.assert_allclose(pos[0, 0], 2.0 - 2.0 * math.cos(math.radians(30)), atol=1e-12)
    az, el, dist = head.direction_of(head.source_positions([10.0, 275.0], [0.0, 60.0], [1.0, 1.4]))
    np.testing.assert_allclose(az, [10.0, 275.0], atol=1e-9)
    np.testing.assert_allclose(el, [0.0, 60.0], atol=1e-9)
    np.testing.assert_allclose(dist, [1.0, 1.4], atol=1e-12)


def test_presets_hold_the_study_grid():
    az, el = study_grid()
    assert az.size == N_LABELS == 504
    assert len(ROOMS) == 5
    for preset in ROOMS.values():
        pts = preset.sources(az, el)  # raises if a source leaves the room
        assert pts.shape == (504, 3)
        assert preset.listener[2] == 1.4
        assert preset.room().min_t60() < preset.t60
    with pytest.raises(InputError, match="unknown room preset"):
        load_room("cathedral")


def test_label_round_trip():
    labels = np.arange(N_LABELS)
    az, el = label_to_direction(labels)
    np.testing.assert_array_equal(direction_to_label(az, el), labels)
    assert direction_to_label(90.0, 0.0) == 18
    assert direction_to_label(0.0, 60.0) == 432
    assert direction_to_label(355.0, 60.0) == 503
    assert label_to_direction(73) == (5.0, 10.0)
    for bad in [(2.0, 0.0), (0.0, 70.0), (360.0, 0.0), (0.0, -10.0)]:
        with pytest.raises(InputError, match="has no label"):
            direction_to_label(*bad)
    with pytest.raises(InputError):
        label_to_direction(504)


def test_one_direction_grid_type_serves_every_family():
    from xai_loc.acoustics.directions import AZIMUTH_RING, LATERAL_GRID, STUDY_GRID
    from xai_loc.models import build_model
    from xai_loc.models.classifier_training import score_logits
    from xai_loc.models.cochleagram_cnn import HEAD_GRIDS

    assert (STUDY_GRID.size, AZIMUTH_RING.size, LATERAL_GRID.n_azimuths, LATERAL_GRID.n_elevations) == (504, 72, 37, 14)
    # nearest class: azimuths wrap on the full circle, clamp on the lateral half-plane
    np.testing.assert_array_equal(AZIMUTH_RING.nearest([357.6, 2.4, -5.0, 182.0]), [0, 0, 71, 36])
    np.testing.assert_array_equal(STUDY_GRID.nearest(359.0, 64.0), 6 * 72)
    np.testing.assert_array_equal(LATERAL_GRID.nearest([-200.0, 92.0], [0.0, 100.0]), [4 * 37, 13 * 37 + 36])
    with pytest.raises(InputError, match="has no label"):
        AZIMUTH_RING.label(357.6)
    with pytest.raises(InputError, match="give the elevation"):
        STUDY_GRID.label(0.0)
    # the families read their classes from the grids
    assert HEAD_GRIDS == {"azel": STUDY_GRID, "azimuth": AZIMUTH_RING}
    # the azimuth head labels by azimuth alone and answers no elevation, so it is scored on azimuth only
    truth = xr.Dataset({"azimuth": ("example", [0.0, 355.0]), "elevation": ("example", [30.0, 0.0])},
                       coords={"example": [0, 1]})
    scored = score_logits(np.eye(72)[[0, 70]], truth, "azimuth")
    np.testing.assert_array_equal(scored.responses["label"], [0, 71])
    assert np.isnan(scored.responses["response_elevation"]).all() and scored.metrics["elevation_error"] is None
    assert scored.metrics["azimuth_error"] == pytest.approx(2.5)
    logits = np.eye(72)[[3, 70]]
    np.testing.assert_array_equal(build_model("cuenet").decode(torch.as_tensor(logits))["azimuth"], [15.0, 350.0])
    multitask = build_model("tfcnn", head="multitask")
    decoded = multitask.decode(torch.as_tensor(np.concatenate([np.eye(37)[[0]], np.eye(14)[[13]]], axis=1)))
    assert (float(decoded["azimuth"][0]), float(decoded["elevation"][0])) == (-90.0, 90.0)


def test_sounds_are_deterministic_and_normalized():
    for kind in SOUNDS:
        a = synthesize(kind, 16000, 0.25, seed=3)
        assert a.dtype == np.float32 and a.shape == (4000,)
        assert np.isfinite(a).all() and np.max(np.abs(a)) == pytest.approx(1.0)
        np.testing.assert_array_equal(a, synthesize(kind, 16000, 0.25, seed=3))
        assert not np.array_equal(a, synthesize(kind, 16000, 0.25, seed=4))
    sounds = sound_set(16000, 0.1, per_kind=2)
    assert len(sounds) == 2 * len(SOUNDS)
    with pytest.raises(InputError, match="unknown sound kind"):
        synthesize("speech")


def test_scene_mixing_at_snr(hrtf):
    rng = np.random.default_rng(0)
    brir = anechoic_rirs(45.0, 0.0, 1.4, hrtf, fs=FS)[0]
    target = spatialize(synthesize("pink_burst", FS, 0.2, seed=1), brir)
    assert target.shape == (2, 9600)
    noise = diffuse_noise(target.shape[1], hrtf, rng, n_directions=8)
    ild = 10 * np.log10(np.mean(noise[0] ** 2) / np.mean(noise[1] ** 2))
    assert abs(ild) < 3  # no lateral bias in the background
    mix = render_scene(target, noise, snr=10.0)
    added = mix - target
    assert 10 * np.log10(np.mean(target ** 2) / np.mean(added ** 2)) == pytest.approx(10.0, abs=1e-9)
    np.testing.assert_array_equal(render_scene(target), target)
    with pytest.raises(InputError, match="needs an SNR"):
        render_scene(target, noise)
    with pytest.raises(InputError, match="all zeros"):
        render_scene(target, np.zeros_like(target), snr=0.0)


def test_bad_geometry_raises(hrtf):
    room = ShoeBox((4.0, 4.0, 3.0), fs=FS)
    with pytest.raises(InputError, match="outside the room"):
        binaural_rirs(room, Listener((5.0, 1.0, 1.4)), [[1.0, 1.0, 1.0]], 0.3, hrtf)
    with pytest.raises(InputError, match="max_order"):
        binaural_rirs(room, Listener((2.0, 2.0, 1.4)), [[1.0, 1.0, 1.0]], 0.3, hrtf, max_order=-1)
    with pytest.raises(InputError, match="elevation"):
        anechoic_rirs(0.0, 100.0, 1.4, hrtf, fs=FS)


def test_hybrid_tail_is_finite_and_decays(hrtf):
    preset = load_room("booth")
    brir = preset.brirs([0.0], [0.0], hrtf, fs=FS, t_diff=0.03, seed=1)[0].double().numpy()
    assert brir.shape == (2, int(math.ceil(preset.t60 * FS)))
    assert np.isfinite(brir).all()
    early = np.mean(brir[:, 2000:4000] ** 2)
    late = np.mean(brir[:, 7000:9000] ** 2)
    assert late < early * 10 ** (-2.0)  # 5000 samples at T60 0.2 s: -31 dB expected
    again = preset.brirs([0.0], [0.0], hrtf, fs=FS, t_diff=0.03, seed=1)[0].double().numpy()
    np.testing.assert_array_equal(brir, again)
    assert torch.is_tensor(preset.brirs([0.0], [0.0], hrtf, fs=FS, t_max=0.01))


def test_render_binaural_one_call(hrtf):
    from xai_loc.acoustics.binaural import render_binaural

    sound = synthesize("click_train", FS, 0.1, seed=2)
    dry = render_binaural(sound, 90.0, 0.0, room=None, hrtf=hrtf)
    assert dry.shape == (2, 4800) and np.sum(dry[0] ** 2) > np.sum(dry[1] ** 2)
    kw = dict(room="booth", hrtf=hrtf, snr=5.0, background="spatialized", n_noise=2, seed=4, t_max=0.02)
    a = render_binaural(sound, 270.0, 10.0, **kw)
    np.testing.assert_array_equal(a, render_binaural(sound, 270.0, 10.0, **kw))
    target = render_binaural(sound, 270.0, 10.0, room="booth", hrtf=hrtf, t_max=0.02)
    assert 10 * np.log10(np.mean(target ** 2) / np.mean((a - target) ** 2)) == pytest.approx(5.0, abs=1e-9)
    with pytest.raises(InputError, match="background"):
        render_binaural(sound, 0.0, 0.0, room=None, hrtf=hrtf, snr=5.0, background="babble")
