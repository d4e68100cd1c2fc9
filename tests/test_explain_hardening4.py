"""Explanation hardening, round 4: torch operations LRP cannot see, microphone labels, NaN windows up front, the
accessor on one window, bfloat16 models and the reversed gate of a signal-rank gate."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import xarray as xr
from helpers import T, noise_windows, one_line, small_model
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import LayerMapComposite

from xai_loc.explain import Explainer, audit, explain, write_wavs
from xai_loc.explain.rules import GateRule
from xai_loc.models.layers import Gate


class FunctionalResidual(nn.Module):
    """``h + relu(c2(h))`` with the sum outside any module: no LRP rule sees it."""

    input_shape = (2, 64)

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(2, 4, 3, padding=1, bias=False)
        self.c2 = nn.Conv1d(4, 4, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.flat = nn.Flatten()
        self.fc = nn.Linear(256, 3, bias=False)

    def forward(self, x):
        h = self.relu(self.c1(x))
        h = h + self.relu(self.c2(h))
        return self.fc(self.flat(h))


class Shapeless(FunctionalResidual):
    """The same without an ``input_shape``: checked on the first window explained."""

    input_shape = None


ADD_OUTSIDE = ("composite 'epsilon' is not allowed for {}: add is called in the model.forward() outside any module "
               "(1 such operation(s)), where no LRP rule's hook sees it and relevance would be silently wrong; do it "
               "in a module (e.g. zennit.layer.Sum for a sum) or use a gradient method (xai-loc audit lists every "
               "operation)")


def test_lrp_refuses_what_the_audit_flags_as_invisible_to_hooks():
    """The functional add sends 200 % of the output into the input (audit's conservation table); explain refuses it
    where the audit flags it, before a batch is explained; gradient methods, which need no hooks, still run."""
    torch.manual_seed(0)
    model = FunctionalResidual().double()
    report = audit(model, "epsilon", epsilon=1e-12, stabilizer=1e-12)
    assert report.flagged_functional == [("", "add")]
    assert report.input_sum / report.seed_sum == pytest.approx(2.0, rel=1e-9)
    x = torch.randn(2, 2, 64, dtype=torch.float64)
    message = one_line(explain, model, x, target="prediction", composite="epsilon", epsilon=1e-12, stabilizer=1e-12)
    assert message == ADD_OUTSIDE.format("FunctionalResidual")
    ours = explain(model, x, target="prediction", method="input_x_gradient")
    np.testing.assert_allclose(ours.values.sum(axis=(1, 2)), ours["relevance_sum"].values, rtol=1e-12)


def test_lrp_checks_a_model_without_input_shape_on_its_first_window():
    torch.manual_seed(0)
    model = Shapeless().double()
    with Explainer(model, target="prediction", composite="epsilon") as explainer:
        message = one_line(explainer.explain_batch, torch.randn(1, 2, 64, dtype=torch.float64))
    assert message == ADD_OUTSIDE.format("Shapeless")


def test_explain_keeps_the_microphone_labels_of_a_dataset_and_a_dataarray():
    ds = noise_windows(3)
    model = small_model(16, T)
    reversed_ = ds.isel(mic=np.arange(16)[::-1])  # a copy; a slice is a view of negative strides
    plain = explain(model, reversed_["signals"].values, target="prediction")
    np.testing.assert_array_equal(plain["mic"].values, np.arange(16))
    for windows in (reversed_, reversed_["signals"], ds.isel(mic=slice(None, None, -1))):
        relevance = explain(model, windows, target="prediction")
        np.testing.assert_array_equal(relevance["mic"].values, np.arange(16)[::-1])
        np.testing.assert_array_equal(relevance.values, plain.values)
    np.testing.assert_array_equal(explain(model, reversed_, target="prediction")["mic_x"].values,
                                  ds["mic_position"].values[::-1, 0])
    one = explain(model, reversed_["signals"].isel(window=2), target="prediction")  # one window, (mic, time)
    assert one["window"].values.tolist() == [2] and one["mic"].values.tolist() == list(range(15, -1, -1))


def test_write_wavs_pairs_relevance_and_signals_by_microphone_label(tmp_path):
    ds = noise_windows(2)
    relevance = explain(small_model(16, T), ds.isel(mic=np.arange(16)[::-1]), target="prediction")
    write_wavs(relevance, ds, tmp_path, subtype="FLOAT")
    audio, _ = sf.read(tmp_path / "window-00000_microphones.wav", dtype="float64")
    signals = ds["signals"].values[0].T  # (time, mic)
    np.testing.assert_allclose(audio, signals[:, ::-1] * (0.99 / np.abs(signals).max()), rtol=1e-6, atol=1e-7)
    other = relevance.assign_coords(mic=np.arange(16) + 20)
    message = one_line(write_wavs, other, ds, tmp_path / "other")
    assert message == ("microphone 20 of the relevance is not among the signals' microphones; give the signals the "
                       "relevance explains")
    assert not (tmp_path / "other").exists()


def test_a_nan_window_is_refused_before_any_window_is_explained(tmp_path):
    ds = noise_windows(4).assign_coords(window=[10, 11, 12, 13])
    ds["signals"][3, 5, 7] = np.nan
    model = small_model(16, T)
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    try:
        message = one_line(explain, model, ds, target="prediction", batch_size=1)
        plain = one_line(explain, model, ds["signals"].values, target="prediction")
    finally:
        handle.remove()
    assert message == "window 13 holds NaN or infinite samples; clean the audio first or leave that window out"
    assert plain == "window 3 holds NaN or infinite samples; clean the audio first or leave that window out"
    assert calls == []
    # a lazily read store is checked batch by batch as it is read (no second read of the whole store): the same
    # line, naming the window by its label
    ds.to_zarr(tmp_path / "lazy.zarr")
    lazy = xr.open_zarr(tmp_path / "lazy.zarr")
    assert one_line(explain, model, lazy, target="prediction", batch_size=2) == message
    with Explainer(model, target="prediction") as explainer:
        assert one_line(explainer.explain_batch, ds["signals"].values[2:], None, [7, 8]) == (
            "window 8 holds NaN or infinite samples; clean the audio first or leave that window out")


def test_the_finiteness_check_reads_a_few_windows_at_a_time():
    from xai_loc.explain.attribute import check_finite_windows

    class Reads:
        def __init__(self, data):
            self.data, self.sizes = data, []

        def __len__(self):
            return len(self.data)

        def __getitem__(self, key):
            self.sizes.append(len(self.data[key]))
            return self.data[key]

    windows = Reads(np.zeros((10, 2, 3)))
    check_finite_windows(windows, list(range(10)), step=4)
    assert windows.sizes == [4, 4, 2]


def test_the_accessor_on_one_window():
    relevance = explain(small_model(16, T), noise_windows(3), target="prediction")
    one, kept = relevance.isel(window=1), relevance.isel(window=[1])
    assert one.xai.summary().splitlines()[0] == ("relevance of 1 window: model loccnn, method lrp, composite paper, "
                                                 "target prediction")
    assert one.xai.summary().splitlines()[1:] == kept.xai.summary().splitlines()[1:]
    np.testing.assert_array_equal(one.xai.as_audio(), kept.xai.as_audio())
    np.testing.assert_array_equal(one.xai.as_audio(mics=[3, 0]), kept.xai.as_audio(mics=[3, 0]))
    assert one.xai.as_audio().shape == (T, 16)


def test_a_bfloat16_model_is_explained_in_its_own_precision():
    """bfloat16 keeps float32's exponent range, so its relevance is float32's up to its 8-bit mantissa: returned
    exactly, as float32, and close to the float64 relevance of the same (rounded) weights."""
    ds = noise_windows(3)
    model = small_model(16, T).to(torch.bfloat16)
    ours = explain(model, ds, target="prediction", batch_size=2)
    with Explainer(model, target="prediction") as explainer:
        tensor = explainer.explain_batch(ds["signals"].values, to_host=False)["relevance"]
    assert tensor.dtype == torch.bfloat16 and ours.dtype == np.float32
    np.testing.assert_array_equal(ours.values, tensor.float().numpy())
    np.testing.assert_allclose(ours["relevance_sum"].values, ours.values.astype(np.float64).sum(axis=(1, 2)),
                               rtol=1e-12)
    reference = explain(model.double(), ds, target="prediction")
    assert np.corrcoef(ours.values.ravel(), reference.values.ravel())[0, 1] > 0.98


class SignalRankGate(nn.Module):
    """``x * mean_t(x)``, the gate ``[B, C, 1]`` (``keep``) or ``[B, C]``."""

    def __init__(self, keep: bool) -> None:
        super().__init__()
        self.keep = keep
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.gate = Gate()

    def forward(self, x):
        s = self.pool(x)
        return self.gate(x, s if self.keep else s[..., 0])


def test_reversed_gate_sums_the_relevance_over_the_gates_broadcast_axes():
    """All of y's relevance goes to the gate, summed over time (T per channel), for a gate ``[B, C, 1]`` as for
    ``[B, C]``; the mean pool hands each sample 1/T of it: exactly 1 per sample for a seed of ones."""
    x = torch.rand(2, 3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for keep in (True, False):
        with Gradient(SignalRankGate(keep), LayerMapComposite([(Gate, GateRule("gate"))])) as attributor:
            _, relevance = attributor(x, torch.ones(2, 3, 8, dtype=torch.float64))
        torch.testing.assert_close(relevance, torch.ones_like(x), rtol=1e-12, atol=0)


def test_lrp_refuses_a_float16_model_whose_relevance_underflows():
    from xai_loc.models import load_model

    model = load_model(Path(__file__).resolve().parents[1] / "pretrained" / "samplecnn_t60-0.6_snr-10.safetensors")
    x = 0.01 * np.random.default_rng(0).standard_normal((2, 16, 5120)).astype(np.float32)
    full = explain(model, x, target="prediction", method="lrp")
    # the same weights in float16 kept about a tenth of the relevance (0.0039 of 0.041 here): refused instead
    assert one_line(explain, model.half(), x.astype(np.float16), target="prediction", method="lrp") == (
        "a float16 model is not allowed for method 'lrp': LRP relevance underflows in float16; explain model.float() "
        "(the same weights in float32; bfloat16 keeps float32's range at 8 bits of precision)")
    again = explain(model.float(), x, target="prediction", method="lrp")
    np.testing.assert_array_equal(again.values, full.values)
    # gradient methods have no such underflow: input x gradient of the float16 model is within 1 % of float32's
    half = explain(model.half(), x.astype(np.float16), target="prediction", method="input_x_gradient")
    ref = explain(model.float(), x, target="prediction", method="input_x_gradient")
    np.testing.assert_allclose(np.abs(half.values.astype(np.float64)).sum(), np.abs(ref.values).sum(), rtol=0.01)
