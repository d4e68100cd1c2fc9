"""The IPD/ILD time-frequency CNN of Pang, Liu & Li (IEEE Access 2019), configurable.

Input: ear signals ``[B, 2, T]`` at 16 kHz (ear 0 = left), 1 s by default; the front end
(:class:`~xai_loc.features.ipd_ild.IPDILD`, registered as the ``front_end`` submodule) turns
them into IPD and ILD maps ``[B, 2, 321, 50]``. Without the front end (``front_end=False``)
the model takes those maps directly.

Network: stages ``conv 3x3, stride 2 (frequency and time), padding 1 -> BatchNorm -> ReLU``
(bias-free convolutions: BatchNorm supplies the shift), flatten, dense layers with ReLU
(1024 / 512 / 256 in the paper), then the head:

``"regression"``
    One output, the azimuth in degrees, trained with MSE (of ``azimuth / 90``); a
    prediction counts as correct within 5 degrees (the seed implementation's scoring).
``"multitask"``
    The paper's variant: class logits for azimuth (-90..90 in 5 degree steps, 37 classes)
    followed by elevation (-40..90 in 10 degree steps, the KEMAR grid, 14 classes) from one
    output layer, trained with the sum of the two cross-entropies; see :func:`split_logits`.

**Azimuth convention** (Pang et al.'s lateral azimuth): degrees from the front, positive
to the **right**, -90 (left) .. 90 (right). In SOFA terms (counter-clockwise, 90 = left)
``sofa = (-azimuth) mod 360`` (:func:`~xai_loc.acoustics.directions.to_sofa_azimuth`); a source
at +90 makes the right ear louder (positive ILD) and leading (positive IPD at low frequencies).

Presets of widths (:data:`PRESETS`); for the default 1 s input the four stages leave
``21 x 4`` positions:

``paper``
    Channels 32-64-128-256, dense 1024-512-256 (the brief fixes the dense sizes; the conv
    widths are our reading of "strided conv + BN"): 23,066,113 parameters with the
    regression head, 23,078,963 multitask (22.0 M of them in the first dense layer).
``small`` (default)
    Channels 16-32-64-64, dense 256-128-64: 1,478,273 parameters (regression; 1,481,523
    multitask), 2.8 MB as float16; one training step on a batch of 32 cached maps takes
    about 0.2 s on one thread of the 2-core reference CPU.

Every operation of ``forward`` is a registered module; the front end's fixed STFT kernels
are rebuilt from the config and kept out of state dicts and checkpoints.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from xai_loc.acoustics.directions import LATERAL_GRID
from xai_loc.checks import is_integer
from xai_loc.errors import InputError
from xai_loc.models.base import Localizer
from xai_loc.models.registry import register_model

__all__ = ["TFCNN", "PRESETS", "HEADS", "split_logits"]

#: Conv channels and dense units of the named widths.
PRESETS: dict[str, dict[str, tuple[int, ...]]] = {
    "paper": {"channels": (32, 64, 128, 256), "dense": (1024, 512, 256)},
    "small": {"channels": (16, 32, 64, 64), "dense": (256, 128, 64)},
}
#: Output heads: number of outputs. The multitask head's classes are the azimuths and the elevations of
#: :data:`~xai_loc.acoustics.directions.LATERAL_GRID` (degrees, positive = right; KEMAR's elevations -40..90).
HEADS: dict[str, int] = {"regression": 1, "multitask": LATERAL_GRID.n_azimuths + LATERAL_GRID.n_elevations}


def split_logits(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Azimuth logits ``[B, 37]`` and elevation logits ``[B, 14]`` of a multitask output."""
    return logits[:, :LATERAL_GRID.n_azimuths], logits[:, LATERAL_GRID.n_azimuths:]


def _ints(name: str, values: Any) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values or not all(
            is_integer(v) and v >= 1 for v in values):
        raise InputError(f"{name}={values!r} is not allowed; give a non-empty list of positive integers")
    return tuple(int(v) for v in values)


@register_model("tfcnn", output="azimuth")
class TFCNN(Localizer):
    """Pang et al.'s IPD/ILD TF-CNN; see the module docs.

    Contract: ``front_end`` the IPD/ILD maps (``nn.Identity`` with ``front_end=False``), ``body``
    the conv stages (``features``), ``head`` flatten .. output; levels ``waveform`` and
    ``front_end``. Output kind ``azimuth`` (degrees, positive = right) for the regression head;
    the multitask head is ``direction_classes`` over :data:`~xai_loc.acoustics.directions.LATERAL_GRID`
    with factorized logits (azimuth block, then elevation block).

    Parameters
    ----------
    width
        ``'small'`` or ``'paper'`` (:data:`PRESETS`); ``channels`` and ``dense`` override it.
    head
        ``'regression'`` (azimuth in degrees) or ``'multitask'`` (azimuth and elevation classes).
    n_samples
        Input length at ``features['fs']`` (16000: 1 s).
    front_end
        Include the IPD/ILD front end (inputs are waveforms); False: inputs are feature maps.
    features
        Options of :class:`~xai_loc.features.ipd_ild.IPDILD` (default: the paper's).
    channels, dense
        Conv channels per stage and dense units per layer (default: the preset's).
    dropout
        Dropout after each dense ReLU (0).
    """

    task: ClassVar[str] = "azimuth-regression"
    levels: ClassVar[tuple[str, ...]] = ("waveform", "front_end")

    def __init__(self, width: str = "small", head: str = "regression", n_samples: int = 16000, front_end: bool = True,
                 features: dict[str, Any] | None = None, channels: Sequence[int] | None = None,
                 dense: Sequence[int] | None = None, dropout: float = 0.0) -> None:
        from xai_loc.features.ipd_ild import IPDILD

        if width not in PRESETS:
            raise InputError(f"width={width!r} is not allowed; use one of {', '.join(PRESETS)}")
        if head not in HEADS:
            raise InputError(f"head={head!r} is not allowed; use one of {', '.join(HEADS)}")
        if not isinstance(front_end, bool):
            raise InputError(f"front_end={front_end!r} is not allowed; use True or False")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise InputError(f"dropout={dropout!r} is not allowed; use a number in [0, 1)")
        super().__init__(2, n_samples)
        self.width, self.head_name, self.dropout_p = width, head, float(dropout)
        if head == "multitask":
            self.output_kind, self.direction_grid, self.factorized_classes = "direction_classes", LATERAL_GRID, True
        self.channels = _ints("channels", PRESETS[width]["channels"] if channels is None else channels)
        self.dense_units = _ints("dense", PRESETS[width]["dense"] if dense is None else dense)
        self.with_front_end = front_end
        fe = IPDILD(**(features or {}))
        self.feature_options = fe.config
        self.fs, self.n_bins, self.n_frames = fe.fs, fe.n_bins, fe.n_frames(self.n_samples)
        self._frequencies, self._frame_times = fe.frequencies, fe.frame_times(self.n_samples)
        if self.n_frames < 1:
            raise InputError(f"n_samples={n_samples} gives no frame; use at least {fe.hop} samples")
        if front_end:
            self.set_fixed_front_end(fe)

        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in, size = 2, (self.n_bins, self.n_frames)
        for i, c in enumerate(self.channels, start=1):
            layers[f"conv{i}"] = nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False)
            layers[f"bn{i}"] = nn.BatchNorm2d(c)
            layers[f"relu{i}"] = nn.ReLU()
            c_in, size = c, ((size[0] + 1) // 2, (size[1] + 1) // 2)
        self.features = nn.Sequential(layers)
        self.feature_shape = (c_in, *size)
        head: OrderedDict[str, nn.Module] = OrderedDict([("flatten", nn.Flatten())])
        n_in = c_in * size[0] * size[1]
        for i, units in enumerate(self.dense_units, start=1):
            head[f"dense{i}"] = nn.Linear(n_in, units)
            head[f"relu{i}"] = nn.ReLU()
            if self.dropout_p > 0:
                head[f"dropout{i}"] = nn.Dropout(self.dropout_p)
            n_in = units
        head["output"] = nn.Linear(n_in, HEADS[self.head_name])
        self.n_outputs = HEADS[self.head_name]
        self.head = nn.Sequential(head)
        self.expose(body=self.features)

    # -- description ---------------------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (widths resolved), enough to rebuild the architecture."""
        return {"width": self.width, "head": self.head_name, "n_samples": self.n_samples,
                "front_end": self.with_front_end, "features": dict(self.feature_options),
                "channels": list(self.channels), "dense": list(self.dense_units), "dropout": self.dropout_p}

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One input: ``(2, n_samples)`` with the front end, ``(2, n_bins, n_frames)`` without."""
        return (2, self.n_samples) if self.with_front_end else self.cue_shape

    @property
    def cue_shape(self) -> tuple[int, int, int]:
        """The CNN's input: ``(2 (IPD, ILD), n_bins, n_frames)``."""
        return (2, self.n_bins, self.n_frames)

    @property
    def frequencies(self) -> np.ndarray:
        """Bin frequencies in Hz."""
        return self._frequencies.copy()

    @property
    def frame_times(self) -> np.ndarray:
        """Frame centres in seconds."""
        return self._frame_times.copy()

    def n_parameters(self) -> int:
        """Trainable parameters (the front end has none)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
