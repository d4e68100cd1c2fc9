"""A small CNN on the complex STFT of every microphone, regressing the source (x, y, z).

The shape many localization networks share (a time-frequency front end whose real and
imaginary parts are input channels, convolutions over microphones x frequency x time, a
dense head), written to xai-loc's localizer contract: ``front_end`` (waveform -> STFT),
``body`` and ``head`` are modules with ``forward(x) == head(body(front_end(x)))`` (the base
class's ``forward``), and ``levels`` says relevance can be read at the waveform and at the
STFT. Every operation is a module and the STFT is a fixed-kernel convolution, so
attribution hooks see everything and relevance reaches the waveform.
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from xai_loc.models.base import Localizer


class STFT(nn.Module):
    """Windows ``[batch, mics, samples]`` -> ``[batch, mics x (re, im), bins, frames]`` (Hann, hop ``n_fft / 2``)."""

    def __init__(self, n_mics: int, n_fft: int) -> None:
        super().__init__()
        self.n_mics, bins = n_mics, n_fft // 2 + 1
        t, f = torch.arange(n_fft), torch.arange(bins)[:, None]
        phase = 2 * math.pi * f * t / n_fft
        kernel = torch.cat([torch.cos(phase), -torch.sin(phase)]) * torch.hann_window(n_fft, periodic=True)
        self.conv = nn.Conv1d(1, 2 * bins, n_fft, stride=n_fft // 2, bias=False)
        self.conv.weight.data.copy_(kernel[:, None, :])
        self.conv.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        spec = self.conv(x.reshape(batch * self.n_mics, 1, x.shape[-1]))  # (batch * mic, 2 * bin, frame)
        return spec.reshape(batch, 2 * self.n_mics, spec.shape[1] // 2, spec.shape[2])


class STFTCNN(Localizer):
    """STFT (Hann, ``n_fft``, hop ``n_fft / 2``; real and imaginary parts) -> conv 3x3 -> ReLU
    -> mean over frequency and time -> dense (x, y, z)."""

    output_kind = "position"
    levels: ClassVar[tuple[str, ...]] = ("waveform", "front_end")

    def __init__(self, n_mics: int = 16, n_samples: int = 5120, n_fft: int = 256, width: int = 32) -> None:
        super().__init__(n_mics, n_samples)
        self.n_fft, self.width = n_fft, width
        self.front_end = STFT(n_mics, n_fft)
        self.body = nn.Sequential(nn.Conv2d(2 * n_mics, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten())
        self.head = nn.Linear(width, 3)

    @property
    def config(self) -> dict[str, int]:
        return {**super().config, "n_fft": self.n_fft, "width": self.width}
