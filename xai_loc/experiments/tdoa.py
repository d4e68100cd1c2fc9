"""TDOA probing: do relevance signals carry the inter-microphone delay better than the signals?

Per window and microphone pair, GCC-PHAT delays are estimated from any set of signals
(microphone windows, relevance of a model, relevance of a randomized model) and compared
with the geometric delay; an estimate is an anomaly when its error exceeds half the
correlation time of the microphone signal (Champagne, Bedard & Stephenne, 1996). The
constant zero-lag estimator is always scored beside them: on a closely spaced pair the true
delays are within a couple of samples and can hide under the anomaly threshold.
"""
from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np

from xai_loc.errors import InputError
from xai_loc.experiments.gcc import correlation_time, tdoa

if TYPE_CHECKING:
    from xai_loc.experiments.gcc import Array


def _adjacent(n: int) -> list[tuple[int, int]]:
    return [(i, i + 1) for i in range(n - 1)]


def _spread(n: int) -> list[tuple[int, int]]:
    """One pair per spacing, centred on the array: (7, 8), (7, 9), (6, 9), ... (0, 15)."""
    centre = n // 2
    return [(centre - (k + 1) // 2, centre - (k + 1) // 2 + k) for k in range(1, n)]


#: Named pair sets; explicit pairs are written ``"7-8,0-15"``.
PAIR_SETS = {"adjacent": _adjacent, "spread": _spread, "all": lambda n: list(combinations(range(n), 2))}


def parse_pairs(spec: str, n_mics: int) -> list[tuple[int, int]]:
    """Microphone pairs from a name in :data:`PAIR_SETS` or a list like ``"7-8,0-15"``."""
    if spec in PAIR_SETS:
        return PAIR_SETS[spec](n_mics)
    pairs = []
    for item in spec.split(","):
        try:
            i, j = (int(v) for v in item.split("-"))
        except ValueError:
            raise InputError(f"pair {item!r} is not allowed; use I-J, or one of {', '.join(PAIR_SETS)}") from None
        if not (0 <= i < n_mics and 0 <= j < n_mics and i != j):
            raise InputError(f"pair {item!r} is not allowed; microphones are 0..{n_mics - 1} and must differ")
        if (i, j) in pairs or (j, i) in pairs:
            raise InputError(f"pair {item!r} is asked for twice (I-J and J-I are one pair); give each once")
        pairs.append((i, j))
    return pairs


def true_tdoa(sources: np.ndarray, mics: np.ndarray, pair: tuple[int, int], fs: float, c: float) -> np.ndarray:
    """Geometric delay of microphone ``j`` relative to ``i`` in samples, per source row ``(W,)``."""
    i, j = pair
    d_i = np.linalg.norm(sources - mics[i], axis=-1)
    d_j = np.linalg.norm(sources - mics[j], axis=-1)
    return (d_j - d_i) / c * fs


def pair_delays(signals: Array, pair: tuple[int, int], max_lag: float, interp: int = 16) -> Array:
    """GCC-PHAT delays ``(W,)`` of a pair in windows ``(W, M, T)`` (a tensor: on its device)."""
    i, j = pair
    return tdoa(signals[:, i], signals[:, j], max_lag=max_lag, interp=interp)


def score(estimates: np.ndarray, truth: np.ndarray, threshold: np.ndarray) -> dict[str, float]:
    """Percentage of anomalies (``|error| > threshold``) and MAE in samples of the others.

    A window without an estimate (NaN: the estimator's signal is silent there) is an anomaly; a
    window without a threshold (NaN: the microphone signal is silent) is not scored. NaN where
    no window is scored.
    """
    err = np.abs(np.asarray(estimates, dtype=float) - np.asarray(truth, dtype=float))
    err, threshold = np.broadcast_arrays(err, np.asarray(threshold, dtype=float))
    scored = np.isfinite(threshold)
    anomalous = ~(err[scored] <= threshold[scored])
    good = err[scored][~anomalous]
    return {"anomalies_percent": 100.0 * float(anomalous.mean()) if anomalous.size else float("nan"),
            "mae_samples": float(good.mean()) if good.size else float("nan")}


def anomaly_threshold(signals: Array, pair: tuple[int, int]) -> Array:
    """Half the correlation time of the pair's first microphone signal, per window (samples; a
    tensor: on its device)."""
    return 0.5 * correlation_time(signals[:, pair[0]])
