"""SRP-PHAT finds a simulated anechoic source on the plane grid."""
import numpy as np

from xai_loc.acoustics.ism import image_source_rirs
from xai_loc.data.scene import paper_scene
from xai_loc.experiments.srp import plane_grid, srp_localize


def test_srp_peak_at_the_source():
    scene = paper_scene()
    src = np.array([[1.62, 5.41, 1.25], [2.1, 4.9, 1.25]])
    rirs = image_source_rirs(scene.room, src, scene.mics, 0.3, max_order=0).numpy()
    rng = np.random.default_rng(0)
    s = rng.standard_normal(5120 + 400)
    x = np.stack([[np.convolve(s, h)[400 : 400 + 5120] for h in r] for r in rirs])
    grid = plane_grid((0.825, 2.575), (4.5, 6.5), 1.25, 0.05)
    est = srp_localize(x, scene.mics, grid, scene.room.fs, scene.room.c)
    np.testing.assert_allclose(est[:, 0], src[:, 0], atol=0.05)  # bearing along the array: sharp
    np.testing.assert_allclose(est[:, 1], src[:, 1], atol=0.15)  # range from a linear array: coarser
    x[0, 1:] = 0.0  # signal on one microphone only: no pair correlates, the map is flat and has no peak
    est = srp_localize(x, scene.mics, grid, scene.room.fs, scene.room.c)
    assert np.isnan(est[0]).all() and np.isfinite(est[1]).all()


def test_plane_grid_spans_its_ranges_evenly():
    grid = plane_grid((1.2, 2.2), (5.0, 5.97), 1.25, 0.05)
    gx, gy = np.unique(grid[:, 0]), np.unique(grid[:, 1])
    assert (gx[0], gx[-1], gy[0], gy[-1]) == (1.2, 2.2, 5.0, 5.97)  # no point past the ends
    assert gx.size == 21 and gy.size == 21  # 0.97 m needs 20 steps of at most 0.05
    assert np.all(np.diff(gx) <= 0.05 + 1e-12) and np.all(np.diff(gy) <= 0.05 + 1e-12)
    np.testing.assert_allclose(np.diff(gy), 0.97 / 20)
    np.testing.assert_allclose(grid.mean(axis=0), [1.7, 5.485, 1.25])  # symmetric about the centre
