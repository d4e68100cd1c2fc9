"""A small CNN on the complex STFT of every microphone, regressing the source (x, y, z).

The shape many localization networks share (a time-frequency front end whose real and
imaginary parts are input channels, convolutions over microphones x frequency x time, a
dense head) in 50 lines. Every operation is a module and the STFT is a fixed-kernel
convolution, so attribution hooks see everything and relevance reaches the waveform.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from xai_loc.models.base import Localizer


class STFTCNN(Localizer):
    """STFT (Hann, ``n_fft``, hop ``n_fft / 2``; real and imaginary parts) -> conv 3x3 -> ReLU
    -> mean over frequency and time -> dense (x, y, z)."""

    output_kind = "position"

    def __init__(self, n_mics: int = 16, n_samples: int = 5120, n_fft: int = 256, width: int = 32) -> None:
        super().__init__(n_mics, n_samples)
        self.n_fft, self.width = n_fft, width
        bins = n_fft // 2 + 1
        t, f = torch.arange(n_fft), torch.arange(bins)[:, None]
        phase = 2 * math.pi * f * t / n_fft
        kernel = torch.cat([torch.cos(phase), -torch.sin(phase)]) * torch.hann_window(n_fft, periodic=True)
        self.stft = nn.Conv1d(1, 2 * bins, n_fft, stride=n_fft // 2, bias=False)
        self.stft.weight.data.copy_(kernel[:, None, :])
        self.stft.weight.requires_grad_(False)
        self.conv = nn.Conv2d(2 * n_mics, width, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.head = nn.Linear(width, 3)

    @property
    def config(self) -> dict[str, int]:
        return {**super().config, "n_fft": self.n_fft, "width": self.width}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        spec = self.stft(x.reshape(batch * self.n_mics, 1, self.n_samples))  # (batch * mic, 2 * bin, frame)
        spec = spec.reshape(batch, 2 * self.n_mics, spec.shape[1] // 2, spec.shape[2])  # (batch, mic x re|im, ...)
        return self.head(self.flatten(self.pool(self.relu(self.conv(spec)))))
