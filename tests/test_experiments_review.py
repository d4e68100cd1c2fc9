"""Review findings on the experiment runners: sanity's seed and bootstrap count, impossible cue bands, Python-API
arguments that ended in tracebacks or silently wrong numbers (seeds, batch sizes, source counts, an empty model set,
GCC lag windows and interpolation, the SRP grid step), and the zero-lag baseline of the TDOA probe."""
import numpy as np
import pytest
import torch
from helpers import noise_windows
from torch import nn

from xai_loc.errors import InputError
from xai_loc.experiments import baselines, cues, sanity, tdoa_probe
from xai_loc.experiments.gcc import correlation_time, gcc_phat, tdoa
from xai_loc.experiments.perturbation import run_perturbation
from xai_loc.experiments.srp import plane_grid
from xai_loc.experiments.tdoa_probe import fast_correlation_time, fast_tdoa, run_tdoa


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from xai_loc.data.scene import paper_scene
    from xai_loc.data.store import simulate_dataset

    return simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=tmp_path_factory.mktemp("data"), n_sources=1,
                            progress=False)


def _loccnn() -> nn.Module:
    from xai_loc.models import build_model

    torch.manual_seed(0)
    return build_model("loccnn").eval()


def _message(text: str) -> str:
    return text.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")


# 1 -- sanity: seed and n_boot refused before the store is opened --------------------------------------------------


@pytest.mark.parametrize(("name", "value", "least"), [("seed", -1, 0), ("seed", 1.5, 0), ("seed", True, 0),
                                                      ("n_boot", 0, 1), ("n_boot", -5, 1), ("n_boot", 2.5, 1)])
def test_sanity_refuses_a_bad_seed_or_bootstrap_count_first(monkeypatch, name, value, least):
    """Was: seed=-1 ran the whole cascade and failed in the bootstrap; n_boot=0 gave NaN intervals silently."""
    def opened(*args, **kwargs):
        raise AssertionError("store opened before the arguments were checked")

    monkeypatch.setattr(sanity, "scored_set", opened)
    with pytest.raises(InputError, match=_message(f"{name}={value!r} is not allowed; use an integer >= {least}")):
        sanity.run_sanity({"m": nn.Linear(4, 3)}, "never-opened.zarr", methods=["saliency"], **{name: value})


# 2 -- cue bands: one check for every caller -------------------------------------------------------------------------


@pytest.mark.parametrize("band", [(3000, 100), (1000, 30000), (-500, 1000), (500, 500), (100, 200, 300),
                                  (np.nan, 1000)])
def test_natural_cues_refuses_an_impossible_band(band):
    """Was: ITD NaN and ILD 0 dB, numbers that looked measured."""
    with pytest.raises(InputError, match=r"Hz is not allowed at fs=48000 Hz; need 0 <= low < high <= fs/2"):
        cues.natural_cues(band)
    with pytest.raises(InputError, match=r"Hz is not allowed at fs=48000 Hz"):
        cues.band_noise(band, 480, 48000, np.random.default_rng(0))


def test_a_band_given_by_its_edges_is_the_named_band():
    named, given = cues.natural_cues("low", lateral=[-30.0, 0.0, 45.0]), cues.natural_cues(
        (500, 2000), lateral=[-30.0, 0.0, 45.0])
    for key in ("itd", "ild"):
        np.testing.assert_array_equal(given[key], named[key])
    assert 200 < named["itd"][2] < 600 and named["ild"][2] > 0  # left of the midline: left leads and is louder
    with pytest.raises(InputError, match=r"band \(4000\.0, 16000\.0\) Hz is not allowed at fs=16000 Hz"):
        cues.natural_cues("high", fs=16000)  # above Nyquist at 16 kHz: refused as band_noise refuses it


# 3 -- Python-API arguments ------------------------------------------------------------------------------------------


class _Head(nn.Module):
    """Logits over the 72 azimuths of a waveform model; the probes must refuse their arguments before calling it."""

    head_name, fs, n_samples = "azimuth", 48000, 480

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("the model was called before the arguments were checked")


@pytest.mark.parametrize(("name", "value", "least"), [("seed", -1, 0), ("seed", 1.5, 0), ("seed", True, 0),
                                                      ("batch_size", 0, 1), ("batch_size", 1.5, 1)])
@pytest.mark.parametrize("probe", [cues.duplex_probe, cues.duplex_relevance])
def test_duplex_probes_refuse_a_bad_seed_or_batch_size_first(monkeypatch, probe, name, value, least):
    """Was: seed -1 or 1.5 and duplex_probe's batch_size 0 ended in NumPy or range() tracebacks."""
    def rendered(*args, **kwargs):
        raise AssertionError("stimuli rendered before the arguments were checked")

    monkeypatch.setattr(cues, "_lateral_brirs", rendered)
    with pytest.raises(InputError, match=_message(f"{name}={value!r} is not allowed; use an integer >= {least}")):
        probe(_Head(), bands="low", azimuths=(0.0,), n_tokens=1, **{name: value})


@pytest.mark.parametrize(("options", "says"), [
    ({"seed": -1}, "seed=-1 is not allowed; use an integer >= 0"),  # was: accepted, although perturb refuses it
    ({"seed": 1.5}, "seed=1.5 is not allowed; use an integer >= 0"),  # was: accepted and recorded as 1
    ({"srp_max_windows": 2.5}, "srp_max_windows=2.5 is not allowed; use an integer >= 1"),  # was: TypeError
    ({"srp_max_windows": 0}, "srp_max_windows=0 is not allowed; use an integer >= 1"),
])
def test_run_tdoa_refuses_a_bad_seed_or_srp_window_count(options, says):
    with pytest.raises(InputError, match=_message(says)):
        run_tdoa({}, noise_windows(4), pairs="7-8", **options)


def test_run_perturbation_refuses_a_fractional_source_count_and_an_empty_model_set(store):
    model = {"loccnn": _loccnn()}
    # was: accepted here (all of the store's one source), a TypeError of slice indices on a larger store
    with pytest.raises(InputError, match=_message("n_sources=1.5 is not allowed; use an integer >= 1")):
        run_perturbation(model, store, percentages=(0, 10), n_sources=1.5)
    with pytest.raises(InputError, match="models list is empty; give at least one model"):  # was: IndexError
        run_perturbation({}, store, percentages=(0, 10))
    with pytest.raises(InputError, match="models list is empty; give at least one model"):  # was: ValueError of max()
        sanity.run_sanity({}, store, methods=["saliency"], n_boot=5)


def _delayed_pair(delay: int = 3) -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(1).standard_normal(300)
    return x[delay:delay + 256], x[:256]  # the second lags the first by ``delay`` samples


@pytest.mark.parametrize("max_lag", [-1, -0.5, np.nan, np.inf, "5", True])
def test_a_delay_estimate_refuses_a_lag_window_that_holds_no_lag(max_lag):
    """Was: an argmax of an empty sequence (gcc tdoa), and -1.25 samples from fast_tdoa: a number that looked
    measured."""
    x1, x2 = _delayed_pair()
    for estimate in (tdoa, fast_tdoa):
        with pytest.raises(InputError, match=_message(f"max_lag={max_lag!r} is not allowed; use a finite number "
                                                      "of samples >= 0")):
            estimate(x1, x2, max_lag=max_lag)


@pytest.mark.parametrize("max_lag", [np.nan, np.inf, "5", True])
def test_gcc_phat_refuses_a_lag_window_that_is_no_number(max_lag):
    """Was: NaN kept no lag, silently (a negative window keeps none by design: tests/test_gcc.py)."""
    x1, x2 = _delayed_pair()
    with pytest.raises(InputError, match=_message(f"max_lag={max_lag!r} is not allowed; use a finite number of "
                                                  "samples (None: every lag)")):
        gcc_phat(x1, x2, max_lag=max_lag)


@pytest.mark.parametrize("interp", [0, -2, 1.5])
def test_gcc_refuses_an_interpolation_that_is_not_a_positive_integer(interp):
    """Was: an FFT error (0), a TypeError (1.5), or fast_tdoa silently at int(1.5) = 1 and fast_correlation_time NaN."""
    x1, x2 = _delayed_pair()
    says = _message(f"interp={interp!r} is not allowed; use an integer >= 1")
    for estimate in (tdoa, gcc_phat, fast_tdoa):
        with pytest.raises(InputError, match=says):
            estimate(x1, x2, max_lag=5, interp=interp)
    for estimate in (correlation_time, fast_correlation_time):
        with pytest.raises(InputError, match=says):
            estimate(x1, interp=interp)


def test_gcc_still_finds_a_known_delay_at_the_edges_of_what_is_allowed():
    x1, x2 = _delayed_pair(3)
    assert tdoa(x1, x2, max_lag=5, interp=1) == 3.0
    assert fast_tdoa(x1, x2, max_lag=np.float64(5.0), interp=np.int64(16))[0] == pytest.approx(3.0, abs=1 / 16)
    lags, cc = gcc_phat(x1, x2, max_lag=0, interp=4)  # a window of one lag: lag 0 alone
    assert lags.tolist() == [0.0] and cc.shape == (1,)


@pytest.mark.parametrize("step", [0, -0.1, np.nan, np.inf, "0.1"])
def test_plane_grid_refuses_a_step_that_is_not_a_positive_distance(step):
    """Was: ZeroDivisionError (0) or an empty grid (negative)."""
    with pytest.raises(InputError, match=_message(f"step={step!r} is not allowed; use a finite number of metres > 0")):
        plane_grid((0.0, 1.0), (0.0, 0.5), 1.2, step)


def test_plane_grid_of_a_valid_step():
    grid = plane_grid((0.0, 1.0), (0.0, 0.5), 1.2, 0.5)
    np.testing.assert_array_equal(grid, [[0, 0, 1.2], [0, 0.5, 1.2], [0.5, 0, 1.2], [0.5, 0.5, 1.2], [1, 0, 1.2],
                                         [1, 0.5, 1.2]])


# 4 -- the zero-lag baseline of the TDOA probe is baselines.zero_lag --------------------------------------------------


def test_the_zero_lag_row_is_the_baseline_estimator(monkeypatch):
    """Was: an unused torch function beside a row left at np.zeros."""
    assert tdoa_probe.zero_lag is baselines.zero_lag
    zero = baselines.zero_lag(3)
    assert isinstance(zero, np.ndarray) and zero.dtype == np.float64 and zero.tolist() == [0.0, 0.0, 0.0]
    out = run_tdoa({}, noise_windows(4), pairs="7-8,0-15", srp=False)
    row = out["delay"].sel(estimator="zero-lag").values
    assert row.shape == (2, 4) and (row == 0).all()
    truth, threshold = out["truth"].values, out["threshold"].values
    np.testing.assert_array_equal(out["anomalies_percent"].sel(estimator="zero-lag").values,
                                  100 * np.mean(np.abs(truth) > threshold, axis=1))
