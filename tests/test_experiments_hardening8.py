"""SRP-PHAT gives no position for a window holding a NaN or an infinity and refuses a geometry that gives no map;
the experiments' results require the variables their tables read (every version wrote them)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from helpers import FS, MICS, T, never, one_line, perturbation_result, refused, run_cli

from xai_loc.experiments import srp
from xai_loc.experiments.registry import EXPERIMENTS
from xai_loc.experiments.srp import peak_index, plane_grid, srp_localize, srp_phat_map

C = 343.0
GRID = plane_grid((1.45, 1.95), (5.25, 5.75), 1.2, 0.05)


# -- 1: a map holding a NaN or an infinity has no peak -------------------------------------------------------------
@pytest.mark.parametrize("as_tensor", [False, True])
def test_a_window_holding_nan_or_inf_has_no_srp_position(as_tensor):
    """NaN position for the windows holding a NaN or an infinity, numpy and torch alike; the clean window keeps
    its own estimate. Review: the all-NaN map passed the flat test and its arg-max, the grid's first point
    (1.45, 5.25, 1.2), came back as a position."""
    x = np.random.default_rng(0).standard_normal((3, 16, T))
    x[0, 3, 10], x[1, 5, 7] = np.nan, np.inf
    given = torch.from_numpy(x) if as_tensor else x
    maps = srp_phat_map(given, MICS, GRID, FS, C)
    assert bool(np.isnan(np.asarray(maps[:2])).all()) and bool(np.isfinite(np.asarray(maps[2])).all())
    est = srp_localize(given, MICS, GRID, FS, C)
    assert np.isnan(est[:2]).all()
    np.testing.assert_array_equal(est[2], srp_localize(x[2:], MICS, GRID, FS, C)[0])
    assert np.isfinite(est[2]).all() and not np.array_equal(est[2], GRID[0])


def test_peak_index_gives_no_peak_for_a_map_with_an_infinity():
    """-1 for a map holding +inf, -inf or NaN at one point, the peak's index otherwise. Review: the first three maps
    gave indices 1, 0 and 3 (the +inf point, the grid's first point, the NaN point)."""
    maps = np.zeros((4, 5))
    maps[0, 1], maps[1, 2], maps[2, 3], maps[3, 4] = np.inf, -np.inf, np.nan, 1.0
    assert peak_index(maps).tolist() == [-1, -1, -1, 4]
    assert peak_index(torch.from_numpy(maps)).tolist() == [-1, -1, -1, 4]


# -- 2: a geometry that gives no map is refused before any work ---------------------------------------------------
_X = np.zeros((2, 16, T))
_NAN_MIC = np.where(np.arange(16)[:, None] == 2, np.nan, MICS)


@pytest.mark.parametrize("args, says", [
    # was: channels 0-7 used silently
    ((_X, MICS[:8], GRID, FS, C), "signals of shape (2, 16, 512) hold 16 microphones, mics 8 positions; give one "
                                  "position (a row of mics) per microphone (the signals' second axis)"),
    # was: ValueError: zero-size array to reduction operation maximum which has no identity
    ((_X, MICS, np.zeros((0, 3)), FS, C), "grid of shape (0, 3) is not allowed; give candidate points as a NumPy "
                                          "array (N, 3) of metres, N >= 1"),
    ((_X, MICS, GRID[:, :2], FS, C), "grid of shape (121, 2) is not allowed; give candidate points as a NumPy "
                                     "array (N, 3) of metres, N >= 1"),
    ((_X[:, :1], MICS[:1], GRID, FS, C), "mics of shape (1, 3) is not allowed; give microphone positions as a NumPy "
                                         "array (N, 3) of metres, N >= 2"),
    ((_X, _NAN_MIC, GRID, FS, C), "mics of shape (16, 3) holds NaN or infinite values; give finite microphone "
                                  "positions in metres"),
    ((_X[0], MICS, GRID, FS, C), "signals of shape (16, 512) are not allowed; give windows (W, M mics, T samples)"),
    # was: max_lag=nan is not allowed (c and fs not named)
    ((_X, MICS, GRID, FS, 0.0), "c=0.0 is not allowed; use a number > 0"),
    ((_X, MICS, GRID, np.nan, C), "fs=nan is not allowed; use a number > 0"),
    # was: refused inside the loop, after the geometry's work; batch 0: ValueError: range() arg 3 must not be zero
    ((_X, MICS, GRID, FS, C, 0), "interp=0 is not allowed; use an integer >= 1"),
    ((_X, MICS, GRID, FS, C, 8, 0), "batch=0 is not allowed; use an integer >= 1"),
])
def test_a_geometry_that_gives_no_map_is_refused_in_one_line(monkeypatch, args, says):
    """One line naming the value and what is allowed, before any correlation is computed. Review: a mic count that
    did not match was used silently, an empty grid was a traceback, c=0 named max_lag=nan, interp and batch were
    refused (or crashed) only inside the loop."""
    monkeypatch.setattr(srp, "gcc_phat", never("gcc_phat"))
    options = dict(zip(("interp", "batch"), args[5:], strict=False))
    assert one_line(srp_phat_map, *args[:5], **options) == says
    assert one_line(srp_localize, *args[:5], **options) == says


def test_a_valid_geometry_gives_the_same_map_from_lists():
    """Positions and windows given as lists give the map of the arrays (the checked, converted positions are used).
    Review: lists raised AttributeError ('list' object has no attribute 'shape')."""
    x = np.random.default_rng(1).standard_normal((2, 16, T))
    ref = srp_phat_map(x, MICS, GRID, FS, C)
    np.testing.assert_array_equal(srp_phat_map(x.tolist(), MICS.tolist(), GRID.tolist(), FS, C), ref)
    np.testing.assert_array_equal(srp_localize(x, MICS.tolist(), GRID.tolist(), FS, C),
                                  GRID[np.argmax(ref, axis=-1)])


# -- 3: the variables the tables read are required -----------------------------------------------------------------
_CHECKS = ["spearman_randomized", "pearson_randomized", "emprt", "spearman_targets", "pearson_targets"]


def _with_ci(value: np.ndarray) -> np.ndarray:
    return np.stack([value - 0.01, value + 0.01], axis=-1)


def _sanity() -> xr.Dataset:
    sim = np.array([1.0, 0.2])[None, None, :, None] * np.ones((1, 1, 2, 2))
    score = np.array([[[0.3, 0.4, 0.5, 0.6, 0.7]]])
    return xr.Dataset({"similarity": (("model", "method", "stage", "metric"), sim),
                       "similarity_ci": (("model", "method", "stage", "metric", "bound"), _with_ci(sim)),
                       "score": (("model", "method", "check"), score),
                       "score_ci": (("model", "method", "check", "bound"), _with_ci(score))},
                      coords={"model": ["m"], "method": ["saliency"], "stage": ["original", "top"],
                              "metric": ["spearman", "pearson"], "check": _CHECKS, "bound": ["low", "high"]},
                      attrs={"n_windows": 4, "n_sources": 2})


def _faithfulness() -> xr.Dataset:
    dims = ("model", "method", "ordering", "fill")
    score = np.array([0.11, 0.22, 0.33]).reshape(1, 1, 1, 1, 3)
    return xr.Dataset({"score": ((*dims, "metric"), score), "score_ci": ((*dims, "metric", "bound"), _with_ci(score)),
                       "curve": ((*dims, "mode", "percentage"), np.zeros((1, 1, 1, 1, 3, 2))),
                       "completeness": (("model", "method", "stat"), [[[0.5, 0.25]]]),
                       "unperturbed_error": (("model",), [0.1])},
                      coords={"model": ["m"], "method": ["saliency"], "ordering": ["relevance"], "fill": ["zero"],
                              "metric": ["aopc", "srg", "insertion_auc"], "bound": ["low", "high"],
                              "mode": ["morf", "lerf", "insertion"], "percentage": [0.0, 50.0],
                              "stat": ["mean_abs", "relative"]},
                      attrs={"n_windows": 4, "n_sources": 2, "units": "m"})


def _components() -> xr.Dataset:
    share = np.full((1, 1, 1, 1, 4), 0.25)
    energy = np.array([0.4, 0.3, 0.2, 0.1])
    return xr.Dataset({"share": (("model", "method", "ordering", "split", "component"), share),
                       "share_ci": (("model", "method", "ordering", "split", "component", "bound"), _with_ci(share)),
                       "energy_share": (("component",), energy), "energy_share_ci": (("component", "bound"),
                                                                                    _with_ci(energy)),
                       "reference_share": (("split", "component"), share[0, 0, 0]),
                       "reference_share_ci": (("split", "component", "bound"), _with_ci(share[0, 0, 0])),
                       "linear_split_exact": (("method",), [True])},
                      coords={"model": ["m"], "method": ["saliency"], "ordering": ["relevance"], "split": ["power"],
                              "component": ["direct", "early", "late", "noise"], "bound": ["low", "high"]},
                      attrs={"n_windows": 4, "n_sources": 2, "early_end_s": 0.05})


#: Per experiment: a complete result, the variable its table reads that the declaration made optional, and a row of
#: its markdown table built from that variable.
_TABLED = {
    "perturbation": (perturbation_result, "aopc", "| relevance | 0.100 | 0.200 | 0.300 | 0.1000 |"),
    "sanity": (_sanity, "score_ci", "| saliency | 0.300 [0.290, 0.310] | 0.400 [0.390, 0.410] | 0.500 [0.490, 0.510] "
                                    "| 0.600 [0.590, 0.610] | 0.700 [0.690, 0.710] |"),
    "faithfulness": (_faithfulness, "score_ci", "| saliency | 0.1100 [0.1000, 0.1200] | 0.2200 [0.2100, 0.2300] | "
                                                "0.3300 [0.3200, 0.3400] | 0.5 (0.25) |"),
    "components": (_components, "energy_share_ci", "| energy share (signal) | 0.400 [0.390, 0.410] | "
                                                    "0.300 [0.290, 0.310] | 0.200 [0.190, 0.210] | "
                                                    "0.100 [0.090, 0.110] |"),
}


@pytest.mark.parametrize("name, var", [(name, var) for name, (_, var, _) in _TABLED.items()]
                         + [("faithfulness", "completeness")])
def test_a_result_without_what_its_table_reads_is_refused_on_open(name, var, tmp_path):
    """Every version of the experiment wrote the variable (git history), so a file without it is not the result:
    Result.open refuses it in its one line, and a complete file opens and tabulates. Review: it was declared
    optional, opened, and ``report`` said "cannot be tabulated (missing: No variable named 'aopc'. Variables on the
    dataset include [..." with a cut repr."""
    exp = EXPERIMENTS[name]
    build, _, row = _TABLED[name]
    complete = exp.write(build(), tmp_path / "complete")["result"]
    assert row in exp.tables(exp.open(complete))["markdown"].splitlines()
    lacking = exp.write(build().drop_vars(var), tmp_path / "lacking", tables={"markdown": "x"})["result"]
    says = (f"{exp.what} {lacking} is not what it should be (it has no {var!r}); run 'xai-loc {exp.command}' to "
            "rebuild it")
    assert one_line(exp.open, lacking) == says
    if name == "perturbation":  # the review's command
        assert refused(run_cli(["report", str(lacking.parent)])) == f"Error: {says}\n"
