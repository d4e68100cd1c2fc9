"""LocCNN: the end-to-end localizer of Vera-Diaz et al. (Sensors 2018), as used by
Comanducci, Antonacci and Sarti (EUSIPCO 2024)."""
from __future__ import annotations

from torch import nn

from xai_loc.errors import InputError
from xai_loc.models.base import Chain, Localizer
from xai_loc.models.registry import register_model

#: Max-pool sizes after conv1, conv3 and conv4.
POOLS = (7, 5, 5)


@register_model("loccnn")
class LocCNN(Localizer):
    """Five 'same'-padded 1-D convolutions and two dense layers regressing (x, y, z).

    conv1 n_mics->96 k7, ReLU, maxpool 7; conv2 96->96 k7, ReLU; conv3 96->128 k5, ReLU,
    maxpool 5; conv4 128->128 k5, ReLU, maxpool 5; conv5 128->128 k3, ReLU; flatten;
    fc1 ->500, ReLU, dropout 0.5; fc2 500->3. 2,126,355 parameters for 16 microphones and
    5120 samples (flatten size 128 x 29 = 3712).

    Submodule names follow the paper's code, so its state dicts load strictly. The paper
    applies ``Dropout1d`` to the ``[batch, 500]`` features, which drops whole examples;
    here the dropout that was meant, element-wise :class:`torch.nn.Dropout`, is used. The
    difference only matters in training.

    Contract: no front end (the input is the waveform); ``body`` runs conv1 .. dr1 (500 features),
    ``head`` is fc2. Maps windows ``[batch, n_mics, n_samples]`` to positions ``[batch, 3]``.

    Parameters
    ----------
    n_mics
        Number of microphones (input channels).
    n_samples
        Window length in samples; at least 175 (the three max-pools divide it by 175).
    """

    def __init__(self, n_mics: int = 16, n_samples: int = 5120) -> None:
        super().__init__(n_mics, n_samples)
        length = n_samples
        for pool in POOLS:
            length //= pool
        if length < 1:
            raise InputError(
                f"n_samples={n_samples} is too short for loccnn; use at least {7 * 5 * 5} samples"
            )
        self.conv1 = nn.Conv1d(n_mics, 96, kernel_size=7, padding=3)
        self.conv2 = nn.Conv1d(96, 96, kernel_size=7, padding=3)
        self.conv3 = nn.Conv1d(96, 128, kernel_size=5, padding=2)
        self.conv4 = nn.Conv1d(128, 128, kernel_size=5, padding=2)
        self.conv5 = nn.Conv1d(128, 128, kernel_size=3, padding=1)
        self.pool1 = nn.MaxPool1d(POOLS[0])
        self.pool2 = nn.MaxPool1d(POOLS[1])
        self.pool3 = nn.MaxPool1d(POOLS[2])
        self.activation1 = nn.ReLU()
        self.activation2 = nn.ReLU()
        self.activation3 = nn.ReLU()
        self.activation4 = nn.ReLU()
        self.activation5 = nn.ReLU()
        self.activation6 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(128 * length, 500)
        self.dr1 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(500, 3)
        self.expose(body=Chain(self.conv1, self.activation1, self.pool1, self.conv2, self.activation2, self.conv3,
                               self.activation3, self.pool2, self.conv4, self.activation4, self.pool3, self.conv5,
                               self.activation5, self.flatten, self.fc1, self.activation6, self.dr1),
                    head=self.fc2)
