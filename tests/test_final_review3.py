"""Final review of the hardening round: fast_tdoa pairs one signal with many, a folder of results without figures
is named in one line, the report shows small 2-D results, float16 windows are recorded in the relevance."""
from __future__ import annotations

import numpy as np
import xarray as xr
from helpers import small_model

from xai_loc.experiments.gcc import tdoa
from xai_loc.experiments.tdoa_probe import fast_tdoa
from xai_loc.explain import explain


def test_fast_tdoa_pairs_one_signal_with_each_of_many_as_tdoa_does():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 512))
    y = np.roll(x[0], 3)
    got = fast_tdoa(x, y, max_lag=10)
    np.testing.assert_array_equal(got, tdoa(x, y, max_lag=10))
    assert got[0] == 3.0


def test_the_report_shows_a_small_2d_result_as_a_table():
    from xai_loc.report.collect import _dataset_tables

    ds = xr.Dataset({"mean_error": (("sharing", "integration"), [[1.5, 2.25], [3.0, 4.125]])},
                    coords={"sharing": ["shared", "own"], "integration": ["add", "mix"]})
    (table,) = _dataset_tables(ds)
    assert table.startswith("<p>mean_error (sharing x integration)</p>")
    assert all(f">{v}<" in table for v in ("1.5", "2.25", "3", "4.125", "shared", "mix"))


def test_explaining_float16_windows_records_their_dtype(split_and_store):
    import torch

    split, _ = split_and_store
    model = small_model(4, 1024)
    full = explain(model, split, batch_size=64)
    half = explain(model, split.to_dataset().assign(signals=lambda d: d["signals"].astype(np.float16)),
                   batch_size=64)
    assert "storage_dtype" not in full.attrs and half.attrs["storage_dtype"] == "float16"
    assert half.attrs["dataset_digest"] == full.attrs["dataset_digest"] == split.digest
    assert torch.is_tensor(split.signals)


def test_option_values_and_conditions_are_read_as_ascii_numbers():
    from helpers import one_line

    from xai_loc.cli._common import parse_options
    from xai_loc.data.scene import parse_condition

    assert parse_options(("gamma=0_25", "epsilon=1e-6", "reference=1.5,2,1", "n=10", "m=١٠")) == {
        "gamma": "0_25", "epsilon": 1e-6, "reference": (1.5, 2.0, 1.0), "n": 10, "m": "١٠"}  # text: refused later
    assert parse_condition("0.6:10") == (0.6, 10.0)
    assert one_line(parse_condition, "0.1_5:2_5") == "condition '0.1_5:2_5' is not T60:SNR, e.g. 0.6:10"
