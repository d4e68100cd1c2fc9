"""Cochleagram front end: filter design, tone placement, shapes, downsampling, gradients."""
import numpy as np
import pytest
import torch
from torch import nn

from xai_loc.errors import InputError
from xai_loc.features.cochleagram import (
    Cochleagram,
    SincDownsample,
    erb_cosine_filters,
    erb_to_freq,
    freq_to_erb,
    kaiser_lowpass,
)


@pytest.fixture(scope="module")
def coch():
    return Cochleagram()


def test_centre_frequencies_on_the_erb_scale(coch):
    cf = coch.centre_frequencies
    assert cf.shape == (39,)
    # the module keeps the design's float64 centres in a float32 buffer: one rounding each
    _, design = erb_cosine_filters(48000, 48000)
    np.testing.assert_allclose(cf, design, rtol=2.0**-24, atol=0)
    # equal ERB steps is an exact claim, checked on the float64 design (on the float32 buffer the
    # rounding alone moves a step of ~1.03 Cams by up to 2 * 9.265 * 2**-24 = 1.1e-6)
    steps = np.diff(freq_to_erb(design))
    np.testing.assert_allclose(steps, steps[0], rtol=1e-12)
    # the band edges sit one spacing outside the outer centres, at 30 Hz and 20 kHz
    assert erb_to_freq(freq_to_erb(cf[0]) - steps[0]) == pytest.approx(30.0, rel=1e-4)
    assert erb_to_freq(freq_to_erb(cf[-1]) + steps[0]) == pytest.approx(20000.0, rel=1e-4)
    f = np.array([30.0, 1000.0, 20000.0])
    np.testing.assert_allclose(erb_to_freq(freq_to_erb(f)), f)
    assert freq_to_erb(1000.0) == pytest.approx(9.265 * np.log(1 + 1000 / (24.7 * 9.265)))


def test_squared_responses_sum_to_one_in_the_passband():
    filters, cf = erb_cosine_filters(48000, 48000)
    freqs = np.fft.rfftfreq(48000, 1 / 48000)
    power = np.sum(filters ** 2, axis=0)
    inside = (freqs >= cf[0]) & (freqs <= cf[-1])
    # quadrature neighbours: flat within 1e-9 between the first and last centre frequency
    np.testing.assert_allclose(power[inside], 1.0, atol=1e-9)
    assert np.all(power <= 1.0 + 1e-9)
    assert np.all(power[(freqs <= 30.0) | (freqs >= 20000.0)] < 1e-20)
    # each filter peaks at 1 at its centre and spans two ERB spacings
    assert np.all(filters.max(axis=1) <= 1.0) and np.all(filters.max(axis=1) > 0.99)


def test_pure_tone_lands_in_the_nearest_channel(coch):
    t = torch.arange(48000, dtype=torch.float32) / 48000
    for f0 in (1000.0, 4000.0):
        x = torch.sin(2 * np.pi * f0 * t).expand(1, 2, -1)
        out = coch(x)
        channel = out.mean(dim=-1)[0].argmax(dim=-1)
        assert channel.tolist() == [int(np.argmin(np.abs(coch.centre_frequencies - f0)))] * 2


def test_output_shape_and_modules(coch):
    x = torch.randn(2, 2, 48000) * 0.1
    out = coch(x)
    assert out.shape == (2, 2, 39, 8000)
    assert torch.all(out >= 0) and torch.isfinite(out).all()
    names = dict(coch.named_children())
    assert list(names) == ["filterbank", "rectify", "downsample", "rectify_envelope", "compress"]
    assert isinstance(names["downsample"], nn.Conv1d) and isinstance(names["rectify"], nn.ReLU)
    assert not any(p.requires_grad for p in coch.parameters())
    small = Cochleagram(n_filters=20, f_max=7000.0, fs=16000, out_fs=4000, signal_length=16000, n_taps=1025)
    assert small(torch.randn(3, 8000)).shape == (3, 20, 2000)


def test_gradient_finite_at_zero_input(coch):
    x = torch.zeros(1, 2, 48000, requires_grad=True)
    out = coch(x)
    assert torch.all(out == 0)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    y = (torch.randn(1, 2, 4800) * 0.01).requires_grad_(True)
    coch(y).sum().backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_fft_downsampling_equals_strided_conv():
    x = torch.randn(3, 4800, dtype=torch.float64)
    fft = SincDownsample(48000, 8000, method="fft").double()
    conv = SincDownsample(48000, 8000, method="conv").double()
    a, b = fft(x), conv(x)
    assert a.shape == (3, 800)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_lowpass_response():
    h = kaiser_lowpass(4000.0, 48000, 4097, 5.0)
    assert h.size == 4097 and h.sum() == pytest.approx(1.0)
    # linear phase: symmetric taps; float64 sin/kaiser may differ by an ulp between mirrored
    # taps on some CPUs, so an absolute tolerance of a few float64 ulps of the peak
    np.testing.assert_allclose(h, h[::-1], rtol=0, atol=4 * np.finfo(np.float64).eps * np.abs(h).max())

    def gain(f: float) -> float:
        return float(np.abs(np.sum(h * np.exp(-2j * np.pi * f * np.arange(h.size) / 48000))))

    assert gain(3500.0) == pytest.approx(1.0, abs=1e-3)
    assert gain(4000.0) == pytest.approx(0.5, abs=0.02)
    assert gain(4500.0) < 1e-3


def test_double_precision_and_bad_parameters():
    coch = Cochleagram(signal_length=4800).double()
    out = coch(torch.randn(1, 2, 4800, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == (1, 2, 39, 800)
    with pytest.raises(InputError, match="ratio must be an integer"):
        Cochleagram(out_fs=7000)
    with pytest.raises(InputError, match="band edges"):
        Cochleagram(f_max=30000.0)
    with pytest.raises(InputError, match="n_filters"):
        Cochleagram(n_filters=0)


def test_float64_input_through_the_conv_downsampler():
    # float32 module, float64 input: the frozen low-pass is cast to the input (the FFT path already was)
    x = torch.randn(1, 2, 4800, generator=torch.Generator().manual_seed(5)) * 0.1
    for method in ("conv", "fft"):
        coch = Cochleagram(signal_length=4800, downsample=method)
        out = coch(x.double())
        assert out.dtype == torch.float64 and out.shape == (1, 2, 39, 800)
        # compared as envelopes (undoing the ** 0.3, which magnifies rounding near 0): they peak at ~0.04,
        # float32 rounding is ~1e-7 of that
        envelope64, envelope32 = out ** (1 / 0.3), coch(x).double() ** (1 / 0.3)
        torch.testing.assert_close(envelope64, envelope32, rtol=0, atol=1e-6)


@pytest.mark.parametrize("options, message", [
    ({"pad": -600}, r"pad=-600 is not allowed; use an integer >= 0"),
    ({"pad": 2.5}, r"pad=2.5 is not allowed"),
    ({"cutoff": 0.0}, r"cutoff=0.0 Hz is not allowed; give 0 < cutoff <= out_fs / 2 = 4000 Hz"),
    ({"cutoff": 4000.5}, r"cutoff=4000.5 Hz is not allowed"),
    ({"cutoff": float("nan")}, r"cutoff=nan Hz is not allowed"),
    ({"beta": float("nan")}, r"beta=nan is not allowed; use a number >= 0"),
    ({"beta": -1.0}, r"beta=-1.0 is not allowed"),
])
def test_bad_filter_settings_raise(options, message):
    with pytest.raises(InputError, match=message):
        Cochleagram(signal_length=4800, **options)


def test_filter_settings_at_their_limits():
    x = torch.randn(1, 4800, generator=torch.Generator().manual_seed(6))
    # pad 0 and 600 give the same 800 frames; cutoff at out_fs / 2 and a rectangular window (beta 0) are allowed
    assert Cochleagram(signal_length=4800, pad=600)(x).shape == Cochleagram(signal_length=4800)(x).shape == (1, 39, 800)
    edge = Cochleagram(signal_length=4800, cutoff=4000.0, beta=0.0)
    assert edge.downsample.cutoff == 4000.0 and edge.downsample.beta == 0.0
    np.testing.assert_allclose(edge.downsample.weight.numpy().ravel(), kaiser_lowpass(4000.0, 48000, 4097, 0.0),
                               rtol=1e-6, atol=1e-12)


def test_cochleagram_cnn_rejects_unknown_cochleagram_options():
    from xai_loc.models.cochleagram_cnn import CochleagramCNN

    with pytest.raises(InputError, match=r"cochleagram option 'foo' is unknown; allowed: n_filters, f_min, .*, eps$"):
        CochleagramCNN(cochleagram={"foo": 1})
    with pytest.raises(InputError, match=r"cochleagram=\['pad'\] is not allowed; give a dict of Cochleagram options"):
        CochleagramCNN(cochleagram=["pad"])
    with pytest.raises(InputError, match="pad=-100 is not allowed"):
        CochleagramCNN(cochleagram={"pad": -100})
