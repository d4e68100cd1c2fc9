"""SampleCNN localizer: residual squeeze-excitation blocks on raw waveforms (after Sundar
et al., ICASSP 2020), as used by Comanducci, Antonacci and Sarti (EUSIPCO 2024)."""
from __future__ import annotations

import torch
from torch import nn

from xai_loc.errors import InputError
from xai_loc.models.base import Chain, Localizer
from xai_loc.models.layers import Gate, Sum
from xai_loc.models.registry import register_model

#: Max-pool size after the first block and after each of the five ReSE blocks.
POOL = 3
#: Number of max-pools of size :data:`POOL` along the time axis.
N_POOLS = 6


class BasicBlock(nn.Module):
    """Convolution k3 (padding 1), BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm1d(out_channels)
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``relu(bn(conv(x)))``."""
        return self.activation(self.bn(self.conv(x)))


class SEBlock(nn.Module):
    """Squeeze-excitation gate: mean over time, dense, ReLU, dense, sigmoid.

    Returns the gate ``s`` of shape ``[batch, channels]``; the product with the signal is
    done by the enclosing block's :class:`~xai_loc.models.layers.Gate`.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.globalAvgPooling = nn.AdaptiveAvgPool1d(1)
        self.flatten = nn.Flatten()
        self.dense1 = nn.Linear(channels, channels)
        self.activation1 = nn.ReLU()
        self.dense2 = nn.Linear(channels, channels)
        self.activation2 = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[batch, channels, time]`` to the gate ``[batch, channels]`` in (0, 1)."""
        s = self.activation1(self.dense1(self.flatten(self.globalAvgPooling(x))))
        return self.activation2(self.dense2(s))


class ReSEBlock(nn.Module):
    """Residual squeeze-excitation block ("ReSE-2").

    BasicBlock, channel dropout 0.2, conv1 k3, bn1, then ``y = x + x * s`` with ``s`` from
    the SEBlock, ReLU and max-pool 3. The product is the ``gate`` module and the sum the
    ``residual`` module (:class:`zennit.layer.Sum` over a stacked axis), so attribution
    hooks and canonizers see both.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.BasicBlock = BasicBlock(in_channels, out_channels)
        self.dropout = nn.Dropout1d(0.2)
        self.conv1 = nn.Conv1d(out_channels, out_channels, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.SEBlock = SEBlock(out_channels)
        self.gate = Gate()
        self.residual = Sum(dim=-1)
        self.activation = nn.ReLU()
        self.pool1 = nn.MaxPool1d(POOL)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``[batch, in_channels, time]`` to ``[batch, out_channels, time // 3]``."""
        x = self.bn1(self.conv1(self.dropout(self.BasicBlock(x))))
        x = self.residual(torch.stack([x, self.gate(x, self.SEBlock(x))], dim=-1))
        return self.pool1(self.activation(x))


@register_model("samplecnn")
class SampleCNN(Localizer):
    """SampleCNN localizer regressing (x, y, z) from a raw multichannel window.

    BasicBlock1 (conv n_mics->64 k3, BatchNorm, ReLU), maxpool 3; ReSE1 (64->128) and
    ReSE2..ReSE5 (128->128), each ending in maxpool 3; average pool over the remaining
    time axis (7 samples for 5120-sample windows); dense1 128->256, bn1, ReLU, dropout 0.5,
    output_dense 256->3. 673,475 parameters for 16 microphones.

    Submodule names follow the paper's code, so its state dicts (106 tensors) load strictly;
    the parameter-free ``ReSE*.gate`` and ``ReSE*.residual`` add no keys. The paper applies
    ``Dropout1d`` to the ``[batch, 256]`` features before ``output_dense``, which drops
    whole examples; here the dropout that was meant, element-wise
    :class:`torch.nn.Dropout`, is used. Inside the ReSE blocks ``Dropout1d`` acts on
    ``[batch, channels, time]`` and drops channels, as in the paper. The differences only
    matter in training.

    Contract: no front end; ``body`` runs BasicBlock1 .. dr1 (256 features), ``head`` is
    output_dense. Maps windows ``[batch, n_mics, n_samples]`` to positions ``[batch, 3]``.

    Parameters
    ----------
    n_mics
        Number of microphones (input channels).
    n_samples
        Window length in samples; at least 3**6 = 729 so that the six max-pools of 3
        leave one sample. The final average pool spans what they leave.
    """

    def __init__(self, n_mics: int = 16, n_samples: int = 5120) -> None:
        super().__init__(n_mics, n_samples)
        length = n_samples
        for _ in range(N_POOLS):
            length //= POOL
        if length < 1:
            raise InputError(
                f"n_samples={n_samples} is too short for samplecnn; use at least {POOL ** N_POOLS} samples"
            )
        self.BasicBlock1 = BasicBlock(n_mics, 64)
        self.pool1 = nn.MaxPool1d(POOL)
        self.ReSE1 = ReSEBlock(64, 128)
        self.ReSE2 = ReSEBlock(128, 128)
        self.ReSE3 = ReSEBlock(128, 128)
        self.ReSE4 = ReSEBlock(128, 128)
        self.ReSE5 = ReSEBlock(128, 128)
        self.Avgpool1 = nn.AvgPool1d(length)
        self.flatten = nn.Flatten()
        self.dense1 = nn.Linear(128, 256)
        self.bn1 = nn.BatchNorm1d(256)
        self.activation1 = nn.ReLU()
        self.dr1 = nn.Dropout(0.5)
        self.output_dense = nn.Linear(256, 3)
        self.expose(body=Chain(self.BasicBlock1, self.pool1, self.ReSE1, self.ReSE2, self.ReSE3, self.ReSE4,
                               self.ReSE5, self.Avgpool1, self.flatten, self.dense1, self.bn1, self.activation1,
                               self.dr1),
                    head=self.output_dense)
