"""HRTF sets: the shipped KEMAR file, SOFA reading, direction lookup, interpolation, resampling."""
import re

import numpy as np
import pytest

from xai_loc.acoustics.hrtf import HRTF_SETS, HRTFSet, great_circle, load_hrtf, unit_vectors
from xai_loc.errors import InputError


@pytest.fixture(scope="module")
def kemar():
    return HRTFSet.kemar()


def _lag(ref: np.ndarray, sig: np.ndarray) -> int:
    """Samples by which ``sig`` lags ``ref`` (peak of their cross-correlation)."""
    xc = np.correlate(sig, ref, mode="full")
    return int(np.argmax(xc)) - (ref.size - 1)


def test_kemar_loads(kemar):
    assert kemar.hrirs.shape == (710, 2, 512)
    assert kemar.fs == 44100
    assert kemar.elevation.min() == -40 and kemar.elevation.max() == 90
    assert np.all((kemar.azimuth >= 0) & (kemar.azimuth < 360))
    assert np.allclose(kemar.directions[:, 2], 1.4)
    assert sorted(np.unique(kemar.elevation)) == list(range(-40, 100, 10))
    assert int(np.sum(kemar.elevation == 0)) == 72
    assert "Gardner" in kemar.attrs["references"] and "cited" in kemar.attrs["license"]
    assert set(HRTF_SETS) >= {"kemar", "sofa"}


def test_nearest_is_exact_on_grid(kemar):
    idx = kemar.nearest_index(kemar.azimuth, kemar.elevation)
    np.testing.assert_array_equal(idx, np.arange(710))
    # azimuth wraps; at the pole the azimuth does not matter
    assert kemar.nearest_index(360.0 + 45.0, 0.0) == kemar.nearest_index(45.0, 0.0)
    assert kemar.elevation[kemar.nearest_index(123.0, 90.0)] == 90
    # off-grid queries go to the closest measured direction
    i = kemar.nearest_index(91.0, 1.0)
    assert (kemar.azimuth[i], kemar.elevation[i]) == (90.0, 0.0)
    np.testing.assert_array_equal(kemar.nearest(91.0, 1.0), kemar.hrirs[i])
    # below the lowest ring: clamped to it
    assert kemar.elevation[kemar.nearest_index(10.0, -70.0)] == -40


def test_interpolation_exact_at_grid_points(kemar):
    np.testing.assert_allclose(kemar.interpolate(kemar.azimuth, kemar.elevation), kemar.hrirs, rtol=0, atol=1e-12)


def test_barycentric_weights_reproduce_the_direction(kemar):
    rng = np.random.default_rng(1)
    az = rng.uniform(0, 360, 2000)
    el = rng.uniform(-40, 90, 2000)
    idx, w = kemar.weights(az, el, method="barycentric")
    assert idx.shape == w.shape == (2000, 3)
    assert np.all(w >= 0)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    # the weighted vertices point along the query (the ray crosses that triangle)
    p = np.einsum("qk,qkc->qc", w, unit_vectors(kemar.azimuth, kemar.elevation)[idx])
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    cos = np.sum(p * unit_vectors(az, el), axis=1)
    assert np.rad2deg(np.arccos(np.clip(cos.min(), -1, 1))) < 1e-3
    # every triangle is local: its vertices lie within 15 degrees of the query
    assert great_circle(az[:, None], el[:, None], kemar.azimuth[idx], kemar.elevation[idx]).max() < 15
    # halfway between two horizontal neighbours: their mean
    mid = kemar.interpolate(2.5, 0.0, method="barycentric")
    np.testing.assert_allclose(mid, 0.5 * (kemar.nearest(0.0, 0.0) + kemar.nearest(5.0, 0.0)), atol=1e-6)


def test_bilinear_is_local_exact_and_mirror_symmetric(kemar):
    rng = np.random.default_rng(2)
    az, el = rng.uniform(0, 360, 3000), rng.uniform(-90, 90, 3000)
    idx, w = kemar.weights(az, el)  # the default
    assert idx.shape == w.shape == (3000, 4) and np.all(w >= 0)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    # the two rings around the elevation (the lowest for a floor reflection below -40), neighbours on each
    clamped = np.clip(el, -40, 90)
    used = w > 0
    assert np.all(np.abs(kemar.elevation[idx] - clamped[:, None])[used] <= 10 + 1e-9)
    assert great_circle(az[:, None], clamped[:, None], kemar.azimuth[idx], kemar.elevation[idx])[used].max() < 15
    # KEMAR's set is left-right symmetric: the left ear at az is the right ear at -az, also off the grid and
    # below it (the barycentric cap triangles mix azimuths up to 200 degrees apart there)
    left, right = kemar.interpolate(az, el), kemar.interpolate(-az, el)
    np.testing.assert_allclose(left[:, 0], right[:, 1], rtol=0, atol=1e-12 * np.abs(left).max())
    floor = kemar.interpolate(0.0, -63.4)  # a floor reflection straight ahead: no interaural difference
    np.testing.assert_allclose(floor[0], floor[1], rtol=0, atol=1e-12)
    below = kemar.interpolate(90.0, -63.4)
    np.testing.assert_array_equal(below, kemar.nearest(90.0, -40.0))
    # linear in azimuth on a ring, then in elevation between rings
    np.testing.assert_allclose(kemar.interpolate(2.5, 0.0), 0.5 * (kemar.nearest(0.0, 0.0) + kemar.nearest(5.0, 0.0)),
                               atol=1e-12)
    quarter = 0.75 * kemar.nearest(0.0, 0.0) + 0.25 * kemar.nearest(0.0, 10.0)
    np.testing.assert_allclose(kemar.interpolate(0.0, 2.5), quarter, atol=1e-12)
    # the pole ring of one direction: every azimuth at 85 degrees mixes the 80 degree ring with the pole
    assert kemar.elevation[kemar.weights(123.0, 85.0)[0]][2] == 90


def test_itd_and_ild_signs(kemar):
    left = kemar.nearest(90.0, 0.0)
    right = kemar.nearest(270.0, 0.0)
    lag_left = _lag(left[0], left[1])  # right ear relative to left ear
    lag_right = _lag(right[0], right[1])
    # 90 = left: the left ear hears it first, by about 0.6-0.8 ms (27-35 samples at 44.1 kHz)
    assert 20 <= lag_left <= 40
    assert -40 <= lag_right <= -20
    assert np.sum(left[0] ** 2) > 4 * np.sum(left[1] ** 2)
    front = kemar.nearest(0.0, 0.0)
    assert abs(_lag(front[0], front[1])) <= 1


def test_resample_length_and_gain(kemar):
    h48 = kemar.resample(48000)
    assert h48.fs == 48000
    assert h48.n_taps == int(np.ceil(512 * 48000 / 44100))
    assert kemar.resample(44100) is kemar
    h16 = kemar.resample(16000)
    assert h16.n_taps == int(np.ceil(512 * 16000 / 44100))

    def gain(h: np.ndarray, fs: int, f: float) -> float:
        return float(np.abs(np.sum(h * np.exp(-2j * np.pi * f * np.arange(h.size) / fs))))

    i = kemar.nearest_index(30.0, 0.0)
    for f in (500.0, 1000.0, 4000.0):
        ref = gain(kemar.hrirs[i, 0], 44100, f)
        assert gain(h48.hrirs[i, 0], 48000, f) == pytest.approx(ref, rel=0.02)
        assert gain(h16.hrirs[i, 0], 16000, f) == pytest.approx(ref, rel=0.02)


def test_impossible_directions_raise(kemar):
    with pytest.raises(InputError, match="elevation"):
        kemar.nearest(0.0, 95.0)
    with pytest.raises(InputError, match="not allowed"):
        kemar.interpolate(float("nan"), 0.0)
    with pytest.raises(InputError, match="interpolation"):
        kemar.weights(0.0, 0.0, method="cubic")


def test_foreign_and_corrupt_files_raise(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        HRTFSet.from_sofa(tmp_path / "missing.sofa")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match="ending in .sofa"):
        HRTFSet.from_sofa(text)
    corrupt = tmp_path / "corrupt.sofa"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(InputError, match="not a readable SOFA file") as err:
        HRTFSet.from_sofa(corrupt)
    assert "\n" not in str(err.value)
    import netCDF4

    foreign = tmp_path / "foreign.sofa"
    with netCDF4.Dataset(foreign, "w") as ds:
        ds.createDimension("x", 3)
        ds.createVariable("data", "f8", ("x",))[:] = [1.0, 2.0, 3.0]
    with pytest.raises(InputError):
        HRTFSet.from_sofa(foreign)
    with pytest.raises(InputError, match="unknown HRTF set"):
        load_hrtf("cipic")
    with pytest.raises(InputError, match="needs a path"):
        load_hrtf("sofa")


def test_sofa_round_trip_with_cartesian_positions_and_delay(tmp_path):
    import sofar

    rng = np.random.default_rng(0)
    az = np.array([0.0, 90.0, 180.0, 270.0, 0.0, 45.0])
    el = np.array([0.0, 0.0, 0.0, 0.0, 90.0, -60.0])
    ir = rng.standard_normal((6, 2, 16))
    sofa = sofar.Sofa("SimpleFreeFieldHRIR")
    sofa.Data_IR = ir
    sofa.Data_SamplingRate = 32000
    sofa.Data_Delay = np.array([[2.0, 0.0]])
    sofa.SourcePosition = unit_vectors(az, el) * 2.0
    sofa.SourcePosition_Type = "cartesian"
    sofa.SourcePosition_Units = "metre"
    path = tmp_path / "tiny.sofa"
    sofar.write_sofa(str(path), sofa)
    hrtf = load_hrtf("sofa", path)
    assert hrtf.fs == 32000 and hrtf.n_taps == 18 and hrtf.name == "tiny"
    np.testing.assert_allclose(hrtf.azimuth, np.mod(az, 360), atol=1e-9)
    np.testing.assert_allclose(hrtf.elevation, el, atol=1e-9)
    np.testing.assert_allclose(hrtf.directions[:, 2], 2.0)
    np.testing.assert_allclose(hrtf.hrirs[:, 0, 2:], ir[:, 0])  # Data.Delay applied to the left ear
    np.testing.assert_allclose(hrtf.hrirs[:, 1, :16], ir[:, 1])
    np.testing.assert_allclose(hrtf.interpolate(az, el), hrtf.hrirs, atol=1e-12)


def test_h5py_reader_matches_sofar(kemar, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sofar", None)  # import sofar now raises ImportError
    plain = HRTFSet.kemar()
    np.testing.assert_array_equal(plain.hrirs, kemar.hrirs)
    np.testing.assert_array_equal(plain.directions, kemar.directions)
    assert plain.fs == kemar.fs and plain.attrs["license"] == kemar.attrs["license"]


def test_bilinear_counts_a_direction_listed_twice_once():
    # three rings of 8 and the pole listed twice (az 0 and az 360, as some SOFA files do): the pole ring
    # holds one direction, not two with a gap of 0 degrees between them (0 / 0 gave NaN weights)
    dirs = [(a, e, 1.0) for e in (-40, 0, 40) for a in range(0, 360, 45)] + [(0, 90, 1.0), (360, 90, 1.0)]
    hrtf = HRTFSet(np.random.default_rng(0).standard_normal((len(dirs), 2, 16)), np.array(dirs, float), 48000)
    idx, w = hrtf.weights(10.0, 60.0)
    assert np.all(np.isfinite(w)) and w.sum() == pytest.approx(1.0)
    # 60 degrees: 0.6 of the 40 degree ring (az 0 and 45, linear in azimuth), 0.4 of the pole (its first listing)
    ring = (35 / 45) * hrtf.hrirs[16] + (10 / 45) * hrtf.hrirs[17]
    np.testing.assert_allclose(hrtf.interpolate(10.0, 60.0), 0.6 * ring + 0.4 * hrtf.hrirs[24], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(hrtf.interpolate(123.0, 90.0), hrtf.hrirs[24])
    assert hrtf.nearest_index(123.0, 90.0) == 24


def _write_sofa(path, ir, receivers=None, receiver_type="cartesian", delay=None):
    """A small SimpleFreeFieldHRIR file: 4 horizontal directions, 32 kHz; ``receivers`` ``(2, 3)``."""
    import sofar

    sofa = sofar.Sofa("SimpleFreeFieldHRIR")
    sofa.Data_IR = ir
    sofa.Data_SamplingRate = 32000
    sofa.SourcePosition = np.array([[az, 0.0, 1.5] for az in (0.0, 90.0, 180.0, 270.0)])
    if receivers is not None:
        sofa.ReceiverPosition = np.asarray(receivers, dtype=float)[:, :, None]
        sofa.ReceiverPosition_Type = receiver_type
        sofa.ReceiverPosition_Units = "metre" if receiver_type == "cartesian" else "degree, degree, metre"
    if delay is not None:
        sofa.Data_Delay = delay
    sofar.write_sofa(str(path), sofa)
    return path


@pytest.mark.parametrize("reader", ["sofar", "h5py"])
def test_sofa_ears_follow_receiver_positions(tmp_path, monkeypatch, reader):
    import sys

    ir = np.random.default_rng(3).standard_normal((4, 2, 16))
    # written before sofar is hidden: the h5py reader must read the same files
    left_first = _write_sofa(tmp_path / "left_first.sofa", ir, [[0, 0.0875, 0], [0, -0.0875, 0]])
    # receiver 0 is the right ear (y < 0; SOFA's y points left), with the 2-sample delay of that ear
    right_first = _write_sofa(tmp_path / "right_first.sofa", ir, [[0, -0.0875, 0], [0, 0.0875, 0]],
                              delay=np.array([[2.0, 0.0]]))
    spherical = _write_sofa(tmp_path / "spherical.sofa", ir, [[270, 0, 0.0875], [90, 0, 0.0875]], "spherical")
    on_axis = _write_sofa(tmp_path / "on_axis.sofa", ir, [[0, 0, 0], [0, 0, 0]])
    same_side = _write_sofa(tmp_path / "same_side.sofa", ir, [[0, 0.0875, 0], [0.01, 0.0875, 0]])
    if reader == "h5py":
        monkeypatch.setitem(sys.modules, "sofar", None)
    np.testing.assert_array_equal(load_hrtf("sofa", left_first).hrirs, ir)
    np.testing.assert_array_equal(load_hrtf("sofa", on_axis).hrirs, ir)  # no sides given: receiver 0 is left
    np.testing.assert_array_equal(load_hrtf("sofa", spherical).hrirs, ir[:, ::-1])
    swapped = load_hrtf("sofa", right_first)
    assert swapped.n_taps == 18
    np.testing.assert_array_equal(swapped.hrirs[:, 0, :16], ir[:, 1])
    np.testing.assert_array_equal(swapped.hrirs[:, 1, 2:], ir[:, 0])  # the delay moved with its ear
    np.testing.assert_array_equal(swapped.hrirs[:, 1, :2], 0.0)
    with pytest.raises(InputError, match=r"receivers at y = 0.0875 and 0.0875 m; expected one left \(y > 0\)"):
        load_hrtf("sofa", same_side)


def test_sofa_delay_must_fit_the_measurements(tmp_path):
    import h5py

    ir = np.random.default_rng(4).standard_normal((4, 2, 16))
    delay = np.array([[0, 1], [2, 3], [0, 0], [1, 0]])
    hrtf = load_hrtf("sofa", _write_sofa(tmp_path / "per_measurement.sofa", ir, delay=delay))
    assert hrtf.n_taps == 19
    np.testing.assert_array_equal(hrtf.hrirs[1, 0, 2:18], ir[1, 0])
    np.testing.assert_array_equal(hrtf.hrirs[1, 1, 3:], ir[1, 1])
    for shape in [(3, 2), (1, 3), (4, 2, 1)]:
        path = _write_sofa(tmp_path / f"delay_{len(shape)}_{shape[0]}.sofa", ir)
        with h5py.File(path, "r+") as f:  # sofar refuses to write these: overwrite the variable
            del f["Data.Delay"]
            f.create_dataset("Data.Delay", data=np.ones(shape))
        allowed = r"allowed: \(1, 2\), \(4, 2\) or one value"
        with pytest.raises(InputError, match=rf"Data.Delay of shape {re.escape(str(shape))} .*; {allowed}"):
            load_hrtf("sofa", path)
