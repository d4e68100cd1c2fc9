"""Review of the relevance API: ``.xai.summary()`` over the windows selected, ``per_mic``'s description, explain() of
an in-memory split, units of relevance arrays, the ignored results folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
from helpers import noise_windows, small_model

from xai_loc.data import open_signals
from xai_loc.explain import explain, explain_store, open_relevance

ROOT = Path(__file__).resolve().parents[1]


def test_summary_counts_the_selected_windows_only():
    rel = explain(small_model(16, 512), noise_windows(6), batch_size=6)
    full = rel.xai.summary()
    assert f"reaching the input: {rel.attrs['relevance_fraction']:.3g} of" in full
    assert full.endswith(f"|f(x) - f(0)| / |f(x)| = {rel.attrs['input_dependence']:.3g}")
    part = rel.isel(window=[1, 4])
    fraction = float(part["relevance_sum"].sum() / part["explained"].sum())
    prediction = part.xai.prediction.values
    dependence = (np.linalg.norm(prediction - rel.attrs["output_zero_input"], axis=1).sum()
                  / np.linalg.norm(prediction, axis=1).sum())
    assert f"{fraction:.3g}" != f"{rel.attrs['relevance_fraction']:.3g}"  # the two windows differ from all six
    assert f"{dependence:.3g}" != f"{rel.attrs['input_dependence']:.3g}"
    summary = part.xai.summary()
    assert summary.startswith("relevance of 2 windows")
    assert f"reaching the input: {fraction:.3g} of" in summary
    assert summary.endswith(f"|f(x) - f(0)| / |f(x)| = {dependence:.3g}")


def test_per_mic_says_what_it_sums():
    rel = explain(small_model(16, 512), noise_windows(2), batch_size=2)
    assert rel.xai.per_mic().attrs["description"] == "relevance of each microphone in each window, summed over time"
    assert rel.xai.per_mic("abs").attrs["description"].startswith("|relevance| of each microphone")


def test_explain_of_an_in_memory_split_equals_explain_of_its_store(split_and_store):
    split, store = split_and_store
    model = small_model(4, 1024)
    from_split = explain(model, split, batch_size=64)
    from_store = explain(model, open_signals(store), batch_size=64)
    xr.testing.assert_identical(from_split, from_store)
    assert from_split.attrs["t60"] == 0.15 and from_split.attrs["snr"] == 25.0
    assert from_split.attrs["dataset_digest"] == split.digest
    assert list(from_split["source_id"].values[:2]) == [1, 1] and list(from_split["window_index"].values[:2]) == [0, 1]
    np.testing.assert_array_equal(from_split.xai.mic_position.values, split.mic_position)


def test_explain_and_a_relevance_store_carry_the_same_units(split_and_store, tmp_path):
    _, store = split_and_store
    model = small_model(4, 1024)
    ds = open_signals(store)
    rel = explain(model, ds.isel(window=[0, 1]))
    stored = open_relevance(explain_store(model, store, out=tmp_path / "rel.zarr", batch_size=64)).isel(window=[0, 1])
    assert rel.attrs["units"] == stored.attrs["units"] == "relevance"
    for name in ("source_x", "mic_y", "prediction_z"):
        assert rel[name].attrs["units"] == "m", name
    for name in ("source_x", "mic_y"):
        assert stored[name].attrs["units"] == "m", name


def test_the_results_folder_is_ignored_by_git():
    """The default results root, written wherever a command or notebook runs, is ignored as the data root is."""
    rules = (ROOT / ".gitignore").read_text().split()
    assert "xai-loc-results/" in rules and "xai-loc-data/" in rules
