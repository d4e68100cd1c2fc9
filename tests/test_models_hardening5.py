"""Review findings on the model zoo's descriptions."""
from __future__ import annotations

from xai_loc.models.checkpoint import read_card
from xai_loc.models.zoo import describe_test_metrics, pretrained_dir


def test_test_metrics_read_in_the_sense_of_the_architecture():
    """Review: without an architecture, the TF-CNN's azimuth error in degrees was printed as 'test MAE 6.661
    m/coord' (two notebooks called it so); the architecture is now required, and one this installation does not
    know gets no unit."""
    card = read_card(pretrained_dir() / "tfcnn_default.safetensors")
    test = card["metrics"]["test"]
    assert describe_test_metrics(test, card["architecture"]).startswith("azimuth MAE 6.7 deg (baseline 46.2)")
    assert describe_test_metrics(test, "not_installed").startswith("test MAE 6.661 (baseline 46.216)")
    loccnn = read_card(pretrained_dir() / "loccnn_t60-0.6_snr-10.safetensors")
    assert describe_test_metrics(loccnn["metrics"]["test"], "loccnn").startswith("test MAE 0.106 m/coord")
