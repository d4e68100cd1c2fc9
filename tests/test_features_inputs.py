"""Front-end inputs at the edges: IPD at the phase wrap, float64 waveforms, malformed window specs."""
import math

import numpy as np
import pytest
import torch

from xai_loc.errors import InputError
from xai_loc.features.ipd_ild import IPDILD, SafeAngle
from xai_loc.features.spectrogram import BinauralSpectrogram, stft_kernel


def test_polarity_inversion_gives_ipd_pi_not_minus_pi():
    # R = -L: R conj(L) = -|L|^2 is real and negative in every bin; its imaginary part is a signed zero
    # (-0.0 at DC and elsewhere), where atan2 gives -pi, outside the documented (-pi, pi]
    x = torch.randn(4, 2, 16000, generator=torch.Generator().manual_seed(7))
    x[:, 1] = -x[:, 0]
    for dtype in (torch.float32, torch.float64):
        fe = IPDILD().to(dtype)
        ipd = fe(x.to(dtype))[:, 0]
        assert torch.all(ipd == torch.tensor(math.pi, dtype=dtype))
    # the shift leaves the (floored) gradient alone: d angle / d imag = real / (real^2 + imag^2 + floor)
    imag = torch.tensor([-0.0, 0.0, 0.5], dtype=torch.float64, requires_grad=True)
    real = torch.tensor([-2.0, -2.0, -2.0], dtype=torch.float64, requires_grad=True)
    angle = SafeAngle.apply(imag, real, 1e-20)
    torch.testing.assert_close(angle[:2], torch.full((2,), math.pi, dtype=torch.float64), rtol=0, atol=0)
    assert angle[2].item() == pytest.approx(math.pi - math.atan(0.25))
    angle.sum().backward()
    torch.testing.assert_close(imag.grad, torch.tensor([-0.5, -0.5, -2.0 / 4.25], dtype=torch.float64))


def test_float64_waveforms_through_a_float32_ipd_ild_front_end():
    fe = IPDILD()  # float32 kernels, cast to the input's dtype
    x = torch.randn(2, 2, 16000, generator=torch.Generator().manual_seed(8))
    spectra64, spectra32 = fe.spectra(x.double()), fe.spectra(x)
    assert spectra64.dtype == torch.float64
    # |X| reaches ~50: float32 sums of 640 products are good to a few 1e-6 of that
    torch.testing.assert_close(spectra64.float(), spectra32, rtol=0, atol=1e-4)
    out64, out32 = fe(x.double()), fe(x)
    assert out64.dtype == torch.float64 and out64.shape == out32.shape == (2, 2, 321, 50)
    # the cues agree where both ears are loud (99 % of the bins; ILD in dB) and, up to the wrap, everywhere (IPD)
    power = spectra32[:, 0::2] ** 2 + spectra32[:, 1::2] ** 2
    loud = (power > 1.0).all(dim=1)
    assert loud.float().mean() > 0.95
    torch.testing.assert_close(out64[:, 1].float()[loud], out32[:, 1][loud], rtol=0, atol=1e-3)
    turn = torch.remainder(out64[:, 0] - out32[:, 0].double() + math.pi, 2 * math.pi) - math.pi
    assert turn.abs().max() < 1e-3


@pytest.mark.parametrize("window", ["foo", ("foo", 1.0), ("kaiser",), ()])
def test_unknown_windows_raise(window):
    with pytest.raises(InputError, match=r"window=.* is not allowed; give a scipy.signal.get_window spec"):
        BinauralSpectrogram(window=window)
    with pytest.raises(InputError, match="not allowed"):
        stft_kernel(256, 16000, window)
    assert np.isfinite(stft_kernel(256, 16000, "hann")).all()
