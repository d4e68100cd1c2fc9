"""Review of a walk through README (2026-12-07): what the evaluation JSON says its baseline is."""
from __future__ import annotations

import numpy as np

from xai_loc.models.evaluation import Evaluation


def test_evaluation_json_names_the_centroid_of_the_scored_sources():
    # review: a --sources subset's JSON said "centroid of the split's source positions" beside the centroid of
    # the 3 sources scored; the text report said the latter. Both say so now, with that centroid.
    targets = np.array([[1.0, 5.0, 1.0], [1.0, 5.0, 1.0], [2.0, 6.0, 1.5], [3.0, 5.0, 1.2]])
    ev = Evaluation(predictions=targets + 0.1, targets=targets, source_id=np.array([4, 4, 9, 11]),
                    window_index=np.array([0, 1, 0, 0]))
    baseline = ev.summary()["baseline"]
    assert baseline["kind"] == "centroid of the scored sources' positions (fitted on their own labels)"
    np.testing.assert_allclose(baseline["position"], [2.0, 16 / 3, 3.7 / 3])  # each source once, not per window
    assert "the centroid of the 3 sources" in ev.to_text()
