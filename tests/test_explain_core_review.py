"""Regression tests of a review of the explanation core: the relevance store, the BatchNorm canonizer, explain()'s
labelled windows, write_wavs and audit (one test per finding)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
import xarray as xr
from helpers import one_line, run_cli, tree
from test_explain import fake_dataset, randomized
from torch import nn

from xai_loc.data import open_signals
from xai_loc.errors import InputError
from xai_loc.explain import Explainer, audit, explain, explain_store, make_composite, open_relevance, write_wavs
from xai_loc.explain.canonizers import FoldBatchNormForward
from xai_loc.explain.composites import module_rules
from xai_loc.explain.store import stored_relevance
from xai_loc.models import LocCNN


@pytest.fixture()
def dataset(tmp_path):
    path, _ = fake_dataset(tmp_path / "test.zarr")
    return path


@pytest.fixture()
def loccnn() -> nn.Module:
    return randomized(LocCNN(4, 350)).float()


# -- 1: a relevance store holds waveform relevance only ------------------------------------------------

@pytest.mark.parametrize("levels", [("conv1",), ("waveform", "conv1")])
def test_explain_store_refuses_levels_besides_the_waveform(dataset, loccnn, levels):
    message = one_line(explain_store, loccnn, dataset, levels=levels, progress=False)
    assert message == (f"levels={levels!r} are not allowed in explain_store(), which labels waveform relevance "
                       "(window, mic, time); leave levels out, or use explain_arrays")
    assert not dataset.with_name("test.relevance").exists()  # nothing written


# -- 2: a reference given as an array ------------------------------------------------------------------

def test_explain_store_takes_a_reference_position_as_an_array(dataset, loccnn):
    reference = np.array([1.7, 5.5, 1.2])
    stored = open_relevance(explain_store(loccnn, dataset, target="contrast", reference=reference, progress=False))
    assert stored.attrs["reference_output"] == pytest.approx(list(reference))
    # the contrast seed is prediction - reference, window by window
    seed, prediction = stored.xai.vector("attr_output").values, stored.xai.prediction.values
    np.testing.assert_allclose(seed, prediction - reference, rtol=1e-6, atol=1e-6)
    expected = explain(loccnn, open_signals(dataset), target="contrast", reference=list(reference))
    np.testing.assert_allclose(stored.values, expected.values, rtol=1e-5, atol=1e-6 * np.abs(expected.values).max())


# -- 3: mean_input and train_mean ----------------------------------------------------------------------

def test_explain_store_mean_input_wins_over_the_store_mean_and_is_recorded(dataset):
    model = randomized(LocCNN(4, 350))  # float64: f(x0) alone and in a batch agree to rounding
    first = open_signals(dataset)["signals"].values[0].astype(np.float64)
    path = explain_store(model, dataset, target="contrast", reference="mean", mean_input=first, progress=False)
    stored = open_relevance(path)
    # the reference is window 0 itself: its seed f(x0) - f(x0) is 0, and so is its relevance
    prediction = stored.xai.prediction.values
    np.testing.assert_allclose(stored.attrs["reference_output"], prediction[0], rtol=1e-12)
    np.testing.assert_allclose(stored.xai.vector("attr_output").values[0], 0, atol=1e-12 * np.abs(prediction).max())
    assert np.abs(stored.values[0]).max() <= 1e-9 * np.abs(stored.values[1:]).max()
    expected = explain(model, open_signals(dataset), target="contrast", reference="mean", mean_input=first)
    np.testing.assert_allclose(stored.values, expected.values, rtol=1e-5, atol=1e-6 * np.abs(expected.values).max())
    assert json.loads(stored.attrs["config"])["mean_input"]  # so a store of the windows' own mean is never mixed
    assert "other mean window (mean_input)" in one_line(explain_store, model, dataset, target="contrast",
                                                        reference="mean", progress=False)
    assert stored_relevance(dataset, Explainer(model, target="contrast", reference="mean",
                                               mean_input=np.zeros((4, 350)))) is None


@pytest.mark.parametrize("call", [explain_store, explain])
def test_train_mean_is_not_an_option(dataset, loccnn, call):
    data = dataset if call is explain_store else open_signals(dataset)
    assert one_line(call, loccnn, data, target="contrast", reference="train-mean", train_mean=np.zeros(3)) == (
        "option 'train_mean' is not allowed: the training set's mean position comes from the data's scene; give "
        "reference=(x, y, z) for another position")


# -- 4: a BatchNorm before a zero-padded convolution is not folded -------------------------------------

def _bn_then_conv(**conv) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.BatchNorm1d(3), nn.Conv1d(3, 4, 3, **conv),
                        nn.Flatten()).double().eval()
    bn = net[2]
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.3, 1.3)
        bn.weight.normal_()
        bn.bias.normal_()
    return net


@pytest.mark.parametrize(("conv", "folded"), [
    ({"padding": 1}, False), ({"padding": "same"}, False), ({"padding": 0}, True),
    ({"padding": 1, "padding_mode": "reflect"}, True), ({"padding": 1, "padding_mode": "replicate"}, True),
    ({"padding": 1, "padding_mode": "circular"}, True),
])
def test_fold_batchnorm_forward_keeps_the_output_or_leaves_the_batchnorm(conv, folded):
    net = _bn_then_conv(**conv)
    x = torch.randn(2, 2, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = net(x)
        instances = FoldBatchNormForward().apply(net)
        assert len(instances) == int(folded)
        torch.testing.assert_close(net(x), reference, rtol=1e-12, atol=1e-12)
        for instance in instances:
            instance.remove()


def test_a_batchnorm_before_a_zero_padded_convolution_gets_no_rule():
    net = _bn_then_conv(padding=1)
    composite, _ = make_composite("cochcnn", net)
    composite.register(net)
    try:
        rows, _ = module_rules(net, composite)
    finally:
        composite.remove()
    assert [row.name for row in rows if row.problem] == ["2"]  # audit flags it
    with pytest.raises(InputError, match=r"^composite 'cochcnn' is not allowed .* \(2 \(BatchNorm1d\): NO RULE"):
        Explainer(net, target="prediction", composite="cochcnn")


# -- 5: a labelled array is read by its dims, not by position -------------------------------------------

def test_explain_reads_windows_by_their_dims(dataset):
    loccnn = randomized(LocCNN(4, 350))  # float64: one window alone and in a batch agree to rounding
    signals = open_signals(dataset)["signals"].isel(window=slice(0, 4)).load()  # 4 windows of 4 mics
    expected = explain(loccnn, signals, target="prediction", method="saliency")
    swapped = explain(loccnn, signals.transpose("mic", "window", "time"), target="prediction", method="saliency")
    np.testing.assert_array_equal(swapped.values, expected.values)
    assert list(swapped["source_id"].values) == [0, 0, 1, 1]
    one = explain(loccnn, signals.isel(window=2).transpose("time", "mic"), target="prediction", method="saliency")
    np.testing.assert_allclose(one.values[0], expected.values[2], rtol=1e-12, atol=1e-15)
    for dims in [("w", "mic", "time"), ("dim_0", "dim_1", "dim_2")]:
        renamed = xr.DataArray(signals.values, dims=dims)
        assert one_line(explain, loccnn, renamed, target="prediction") == (
            f"windows with dims {dims} are not allowed; use dims (window, mic, time) in any order, (mic, time) or a "
            "plain array")


# -- 6: write_wavs(sources=...) of relevance without source ids -------------------------------------------

def test_write_wavs_refuses_window_positions_that_do_not_exist(tmp_path, loccnn):
    windows = 0.01 * np.random.default_rng(0).standard_normal((3, 4, 350))
    rel = explain(loccnn, windows, target="prediction", method="saliency")
    for sources, shown in [([99], "99"), (np.array([-1]), "-1"), ([1.0], "1.0"), (["a"], "'a'"), ([0, 3], "3")]:
        assert one_line(write_wavs, rel, None, tmp_path / "wav", sources=sources) == (
            f"window {shown} does not exist; the relevance has no source_id coords, so sources are window positions: "
            "give integers in [0, 2]")
    assert not (tmp_path / "wav").exists()
    files = write_wavs(rel, None, tmp_path / "wav", sources=np.array([2]), mics=[1])
    assert [f.name for f in files] == ["window-00002_relevance.wav"]
    audio, _ = sf.read(files[0])
    expected = rel.values[2, 1]
    np.testing.assert_allclose(audio, expected / np.abs(expected).max() * 0.99, atol=1e-4)  # PCM_16


# -- 7: audit's true position ---------------------------------------------------------------------------

def test_audit_checks_the_true_position(loccnn):
    model = loccnn.double()
    assert one_line(audit, model, target="truth", positions=(1.0, 2.0)) == (
        "true source positions of shape (1, 2) are not allowed; use [1, 3]")
    assert one_line(audit, model, target="truth", positions=(1.0, np.nan, 2.0)) == (
        "the true source positions hold NaN or infinite values; give finite values for every example")
    # LRP seeds the true coordinates: their sum is the relevance put in
    assert audit(model, target="truth", positions=(1.5, 5.25, 1.25)).seed_sum == 8.0
    assert audit(model, target="truth", positions=torch.tensor([1.5, 5.25, 1.25])).seed_sum == 8.0


def test_nothing_of_a_refused_store_is_written(dataset, loccnn):
    before = tree(dataset.parent)
    one_line(explain_store, loccnn, dataset, target="contrast", reference="mean", mean_input=np.zeros((4, 10)),
             progress=False)
    assert tree(dataset.parent) == before


def test_audit_of_an_architecture_draws_its_untrained_weights_from_the_seed():
    """``xai-loc audit ARCH --seed N`` drew the weights from torch's unseeded generator: other numbers each run."""
    runs = [run_cli(["audit", "loccnn", "--seed", str(seed)]) for seed in (3, 3, 4)]
    assert all(run.exit_code in (0, 1) for run in runs), [run.output for run in runs]
    assert runs[0].stdout == runs[1].stdout
    assert runs[0].stdout != runs[2].stdout
    before = torch.random.get_rng_state()
    run_cli(["audit", "loccnn", "--seed", "3"])
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's generator is left alone
