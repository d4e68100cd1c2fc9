"""TDOA probe pieces: pairs, geometric delays, scoring; a simulated source gives its delay back."""
import numpy as np
import pytest

from xai_loc.acoustics.ism import image_source_rirs
from xai_loc.acoustics.room import ShoeBox, linear_array
from xai_loc.errors import InputError
from xai_loc.experiments.tdoa import anomaly_threshold, pair_delays, parse_pairs, score, true_tdoa


def test_pair_sets():
    assert parse_pairs("7-8", 16) == [(7, 8)]
    assert parse_pairs("adjacent", 16)[:2] == [(0, 1), (1, 2)] and len(parse_pairs("adjacent", 16)) == 15
    spread = parse_pairs("spread", 16)
    assert spread[0] == (7, 8) and spread[-1] == (0, 15) and [j - i for i, j in spread] == list(range(1, 16))
    assert len(parse_pairs("all", 16)) == 120
    with pytest.raises(InputError, match="0..15"):
        parse_pairs("7-16", 16)
    with pytest.raises(InputError, match="use I-J"):
        parse_pairs("seven", 16)
    with pytest.raises(InputError, match="^pair '8-7' is asked for twice"):
        parse_pairs("7-8,0-15,8-7", 16)


def test_anechoic_simulated_delay_comes_back_from_the_signals():
    room = ShoeBox((6.0, 6.0, 3.0))
    mics = linear_array(16, 0.15, (3.0, 4.5, 1.2))
    src = np.array([[1.3, 2.0, 1.4]])
    rirs = image_source_rirs(room, src, mics, 0.3, max_order=0).numpy()[0]
    rng = np.random.default_rng(0)
    s = rng.standard_normal(5120 + 400)
    x = np.stack([np.convolve(s, h)[400 : 400 + 5120] for h in rirs])[None]
    for pair in [(7, 8), (0, 15)]:
        truth = true_tdoa(src, mics, pair, room.fs, room.c)
        est = pair_delays(x, pair, max_lag=120)
        assert est == pytest.approx(truth, abs=0.1)
        assert score(est, truth, anomaly_threshold(x, pair))["anomalies_percent"] == 0.0


def test_score_counts_anomalies_and_mae_of_the_rest():
    out = score(np.array([0.0, 1.0, 5.0, -0.5]), np.zeros(4), np.full(4, 2.0))
    assert out == {"anomalies_percent": 25.0, "mae_samples": pytest.approx(0.5)}


def test_score_counts_a_missing_estimate_as_an_anomaly_and_leaves_out_unscored_windows():
    # window 2 has no estimate (a silent relevance), window 3 no threshold (a silent microphone signal)
    out = score(np.array([0.0, 1.0, np.nan, 9.0]), np.zeros(4), np.array([2.0, 2.0, 2.0, np.nan]))
    assert out == {"anomalies_percent": pytest.approx(100 / 3), "mae_samples": pytest.approx(0.5)}
    out = score(np.zeros(2), np.zeros(2), np.full(2, np.nan))
    assert np.isnan(out["anomalies_percent"]) and np.isnan(out["mae_samples"])
