"""Front ends after review: integer samples refused, empty batches, flag types, float64 accuracy, documented levels."""
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from scipy import signal

import xai_loc.features
from xai_loc.errors import InputError
from xai_loc.features.binaural_cues import BinauralCues, GammatoneFilterbank, gammatone_kernels
from xai_loc.features.cochleagram import Cochleagram, erb_cosine_filters, kaiser_lowpass
from xai_loc.features.ipd_ild import IPDILD
from xai_loc.features.spectrogram import BinauralSpectrogram
from xai_loc.models import load_model

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"

#: Each front end with a clip length it accepts.
FRONT_ENDS = {"cochleagram": (lambda: Cochleagram(signal_length=4800), 4800), "ipd_ild": (IPDILD, 1600),
              "spectrogram": (BinauralSpectrogram, 8000), "binaural_cues": (BinauralCues, 2205)}


# -- 1: integer samples -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FRONT_ENDS)
@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.bool])
def test_integer_waveforms_are_refused_in_one_line(name, dtype):
    make, n = FRONT_ENDS[name]
    front = make()
    pcm = (torch.randn(1, 2, n, generator=torch.Generator().manual_seed(1)) * 3000).to(dtype)
    with pytest.raises(InputError, match=rf"^waveforms of dtype {dtype} are not allowed; give floating-point samples "
                                         r"such as float32 or float64$"):
        front(pcm)
    assert torch.isfinite(front(pcm.float())).all()  # the same samples as floats are fine


def test_a_shipped_model_refuses_int16_pcm():
    model = load_model(PRETRAINED / "cochcnn_default.safetensors")
    pcm = (torch.randn(1, *model.input_shape, generator=torch.Generator().manual_seed(2)) * 3000).to(torch.int16)
    with pytest.raises(InputError, match=r"^waveforms of dtype torch\.int16 are not allowed"):
        model(pcm)


def test_shape_checks_are_shared():
    for name in ("ipd_ild", "spectrogram", "binaural_cues"):
        make, n = FRONT_ENDS[name]
        with pytest.raises(InputError, match=rf"^ear signals of shape \(1, 3, {n}\) are not allowed; give \[batch, "
                                             r"2 ears, samples\]$"):
            make()(torch.zeros(1, 3, n))
    assert xai_loc.features.__all__ == ["check_waveforms", "in_float32"]  # the unused front-end registry is gone


# -- 2: empty batches ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FRONT_ENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_empty_batch_gives_an_empty_output(name, dtype):
    make, n = FRONT_ENDS[name]
    front = make()
    one = front(torch.zeros(1, 2, n, dtype=dtype))
    empty = front(torch.zeros(0, 2, n, dtype=dtype))
    assert empty.shape == (0, *one.shape[1:]) and empty.dtype == one.dtype == dtype


def test_an_empty_cochleagram_batch_keeps_its_leading_dims():
    coch = Cochleagram(signal_length=4800)
    assert coch(torch.zeros(3, 0, 4801)).shape == (3, 0, 39, 801)  # ceil(4801 / 6) frames
    assert coch(torch.zeros(3, 2, 4801)).shape == (3, 2, 39, 801)


# -- 3: spectrogram options ---------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [{"detrend": "linear"}, {"detrend": 0}, {"standardize": 1},
                                     {"standardize": np.True_}, {"detrend": None}])
def test_spectrogram_flags_must_be_bools(options):
    (name, value), = options.items()
    with pytest.raises(InputError, match=rf"^{name}=.* is not allowed; use True or False$"):
        BinauralSpectrogram(**options)


def test_spectrogram_flags_still_switch_their_steps():
    x = torch.randn(1, 2, 8000, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) + 2.0
    plain = BinauralSpectrogram(detrend=False, standardize=False)
    assert plain.config["detrend"] is False and plain.config["standardize"] is False
    # without detrending the offset stays in the DC bin; standardized output has zero mean
    dc_kept, dc_removed = plain(x)[0, :, 0].mean(), BinauralSpectrogram(standardize=False)(x)[0, :, 0].mean()
    assert dc_kept > dc_removed + 20
    assert abs(float(BinauralSpectrogram()(x).mean())) < 1e-12


@pytest.mark.parametrize("window", [np.hanning(256), list(np.hanning(256)), np.ones((100, 1))])
def test_a_window_of_samples_is_refused_in_one_line(window):
    with pytest.raises(InputError) as raised:
        BinauralSpectrogram(window=window)
    message = str(raised.value)
    assert "\n" not in message and len(message) < 400, message  # shortened by reprlib
    assert message.startswith("window=") and message.endswith("give a scipy.signal.get_window spec such as "
                                                              "('tukey', 0.25) or 'hann'")


# -- 4: float64 accuracy ------------------------------------------------------------------------------------


def _cochleagram_reference(x: np.ndarray, fs=48000, out_fs=8000, exponent=0.3) -> np.ndarray:
    """The cochleagram in float64 numpy: FFT filtering, ReLU, direct strided low-pass, ReLU, power."""
    n = x.shape[-1]
    filters, _ = erb_cosine_filters(n, fs)
    bands = np.maximum(np.fft.irfft(np.fft.rfft(x)[..., None, :] * filters, n=n), 0.0)
    h = kaiser_lowpass(out_fs / 2, fs)
    half, factor = (h.size - 1) // 2, fs // out_fs
    padded = np.pad(bands, [(0, 0)] * (bands.ndim - 1) + [(half, half)])
    frames = sliding_window_view(padded, h.size, axis=-1)[..., ::factor, :]  # output m centred on sample m * factor
    return np.maximum(frames @ h, 0.0) ** exponent


@pytest.mark.parametrize("method", ["fft", "conv"])
def test_float64_cochleagram_has_float64_accuracy(method):
    x = np.random.default_rng(4).standard_normal((1, 2, 1200)) * 0.1
    reference = _cochleagram_reference(x) ** (1 / 0.3)  # compared as envelopes: x ** 0.3 magnifies rounding near 0
    coch = Cochleagram(signal_length=1200, downsample=method)
    for module in (coch, Cochleagram(signal_length=1200, downsample=method).double()):
        envelope = module(torch.from_numpy(x)).numpy() ** (1 / 0.3)
        # float64 sums of ~5000 products: a few 1e-16 of the peak; the float32 kernels were off by ~1e-8
        np.testing.assert_allclose(envelope, reference, rtol=0, atol=1e-10 * reference.max())
    # float32 inputs still get the float32 roundings of the same designs (the outputs of before)
    filters, _ = erb_cosine_filters(1200, 48000)
    assert torch.equal(coch.filterbank.response(1200, dtype=torch.float32), torch.as_tensor(filters).float())
    lowpass = torch.as_tensor(kaiser_lowpass(4000.0, 48000)).float().view(1, 1, -1)
    assert torch.equal(coch.downsample.kernel(torch.float32), lowpass) and torch.equal(coch.downsample.weight, lowpass)
    assert "downsample.design" not in coch.state_dict() and "downsample.weight" in coch.state_dict()


def test_a_modified_lowpass_weight_is_used_in_float64_too():
    # LRP rules swap in modified weights: the float64 path must compute with them, not with the design
    down = Cochleagram(signal_length=4800).downsample
    x = torch.randn(2, 4800, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        down.weight.mul_(2.0)
    assert torch.equal(down.kernel(torch.float64), down.weight.double())
    # the doubled float32 weight, not the doubled design (they differ by ~1e-8 of the output)
    expected = torch.nn.functional.conv1d(x[:, None], down.weight.double(), stride=6, padding=2048)[:, 0]
    torch.testing.assert_close(down(x), expected, rtol=0, atol=1e-12 * float(expected.abs().max()))


def test_float64_gammatone_filterbank_has_float64_accuracy():
    centres = [80.0, 500.0, 2000.0, 8000.0]
    bank = GammatoneFilterbank(44100, centres)
    x = np.random.default_rng(6).standard_normal((1, 2, 3000))
    kernels = gammatone_kernels(centres, 44100)
    start = (kernels.shape[-1] - 1) // 2
    reference = np.stack([[[np.convolve(ear, k)[start:start + x.shape[-1]] for k in kernels] for ear in clip]
                          for clip in x])
    out = bank(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, reference, rtol=0, atol=1e-10 * np.abs(reference).max())
    assert torch.equal(bank.kernels.float(), torch.as_tensor(kernels).float())


# -- 6: the documented level dependence of the BAST spectrogram ---------------------------------------------


def test_level_dependence_is_as_documented():
    # 200 examples of each noise at RMS 0.0158 and 0.158 (float64); the module docs give 1000
    rng = np.random.default_rng(7)
    front = BinauralSpectrogram().double()
    sos = signal.butter(4, 3000, fs=16000, output="sos")
    white = rng.standard_normal((200, 2, 8000))
    low = signal.sosfilt(sos, rng.standard_normal((200, 2, 10000)), axis=-1)[..., 2000:]
    changes = {}
    for name, x in (("white", white), ("lowpass", low)):
        x = x / np.sqrt(np.mean(x ** 2, axis=-1, keepdims=True))
        quiet, loud = (front(torch.from_numpy(x * rms)).numpy() for rms in (0.0158, 0.158))
        changes[name] = np.abs(loud - quiet).reshape(len(x), -1)
    white, low = changes["white"], changes["lowpass"]
    # white noise: almost every value within 0.02, but most examples have a weak bin that moves much more
    assert np.mean(white > 0.02) < 1e-3 and np.mean(white.max(1) > 0.02) > 0.7 and white.max() > 1.0
    # low-passed noise: up to about 0.4, a third of the values by more than 0.1
    assert 0.38 < low.max() < 0.42 and 0.3 < np.mean(low > 0.1) < 0.4
