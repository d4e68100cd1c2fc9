"""The cochleagram localizer of Francl & McDermott (Nature Human Behaviour 2022), configurable.

A network of this family takes binaural waveforms ``[B, 2 ears, T]`` at 48 kHz (or, without
its front end, cochleagrams ``[B, 2, 39 bands, frames]``) and returns class logits over
directions: 504 = 72 azimuths x 7 elevations (``head="azel"``, label
``(elevation / 10) * 72 + azimuth / 5``) or 72 azimuths (``head="azimuth"``, label
``azimuth / 5``). Azimuth follows SOFA: 90 = left, 270 = right.

The convolutional part is a *layer list* in the paper's notation::

    "c32 1x8"   convolution, 32 channels, kernel 1 (frequency) x 8 (time)
    "p2x4"      max-pool 2 (frequency) x 4 (time), stride = size, attached to the conv before

Every conv starts a stage ``[pad] -> conv -> [max-pool] -> ReLU -> BatchNorm`` (BatchNorm
after the ReLU, as published): zero padding in frequency only ("same" along frequency,
the extra row at the bottom for even kernel heights, done by a :class:`FrequencyPad`
module), valid convolutions and pools along time. The head is
``flatten -> dense 512 -> ReLU -> BatchNorm -> dropout 0.5 -> logits``.

Named layer lists (:data:`LAYER_PRESETS`):

``net1``
    The published network 1 (1 s input, [2, 39, 8000]): 53,953,752 trainable parameters
    with this construction (49.8 M of them in the first dense layer), 53,956,632 with the
    BatchNorm running statistics counted as TensorFlow/Keras counts them; the paper reports
    53.96 M.
``small`` (default)
    Sized to train on one CPU thread in minutes: 0.25 s input (12000 samples at 48 kHz,
    [2, 39, 2000] cochleagram frames, i.e. the same 8 kHz frame rate, which keeps the
    sub-millisecond interaural timing), channels 8-16-32-64 and early pooling in time:
    3,543,648 parameters (3.2 M of them in the dense layer) and 66 M multiply-adds per
    example, against 50 G for net 1 on its 1 s input. One training step (batch 16) takes
    about 0.35 s on one thread of the 2-core reference CPU.

The front end (:class:`~xai_loc.features.cochleagram.Cochleagram`, registered as the
``front_end`` submodule) has no trainable parameters; its fixed low-pass kernel is rebuilt
from the config and kept out of state dicts and checkpoints.
"""
from __future__ import annotations

import inspect
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from xai_loc.acoustics.directions import AZIMUTH_RING, STUDY_GRID, DirectionGrid
from xai_loc.errors import InputError
from xai_loc.models.base import Localizer, check_positive_int
from xai_loc.models.registry import register_model

__all__ = [
    "CochleagramCNN", "FrequencyPad", "HEAD_GRIDS", "HEADS", "LAYER_PRESETS", "PRESET_SAMPLES", "parse_layers",
]

#: Published network 1 (Francl & McDermott 2022) and our CPU-sized default.
LAYER_PRESETS: dict[str, tuple[str, ...]] = {
    "net1": ("c32 1x8", "c32 1x64", "c32 1x64", "p1x8", "c64 2x4", "p2x4", "c128 3x8", "c128 3x32", "p1x4",
             "c256 3x4", "c256 3x8", "p1x2"),
    "small": ("c8 1x16", "p1x8", "c16 2x8", "p2x4", "c32 3x8", "p1x2", "c64 3x4", "p2x2"),
}
#: Input length in samples (48 kHz) that goes with each preset: 1 s and 0.25 s.
PRESET_SAMPLES: dict[str, int] = {"net1": 48000, "small": 12000}
#: Output heads: the direction grid of their classes (504 azimuth x elevation classes, 72 azimuths).
HEAD_GRIDS: dict[str, DirectionGrid] = {"azel": STUDY_GRID, "azimuth": AZIMUTH_RING}
#: Output heads: number of classes.
HEADS: dict[str, int] = {head: grid.size for head, grid in HEAD_GRIDS.items()}

_CONV = re.compile(r"^c(\d+)\s+(\d+)x(\d+)$")
_POOL = re.compile(r"^p(\d+)x(\d+)$")


def parse_layers(layers: Sequence[str]) -> list[dict[str, Any]]:
    """Parse a layer list into stages ``{"channels", "kernel": (f, t), "pool": (f, t) | None}``.

    Raises
    ------
    InputError
        For a token that is neither ``c<channels> <f>x<t>`` nor ``p<f>x<t>``, a list that does
        not start with a convolution, or two pools in a row.
    """
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise InputError(f"layers={layers!r} is not allowed; give a preset name ({', '.join(LAYER_PRESETS)}) "
                         f"or a list such as ['c32 1x8', 'p1x4', ...]")
    stages: list[dict[str, Any]] = []
    for token in layers:
        text = " ".join(str(token).split())
        conv, pool = _CONV.match(text), _POOL.match(text)
        if conv and min(int(g) for g in conv.groups()) > 0:
            stages.append({"channels": int(conv[1]), "kernel": (int(conv[2]), int(conv[3])), "pool": None})
        elif pool and min(int(g) for g in pool.groups()) > 0:
            if not stages or stages[-1]["pool"] is not None:
                raise InputError(f"layer {token!r} is not allowed here; a pool must follow a convolution")
            stages[-1]["pool"] = (int(pool[1]), int(pool[2]))
        else:
            raise InputError(f"layer {token!r} is not allowed; write 'c<channels> <freq>x<time>' "
                             f"(e.g. 'c32 1x8') or 'p<freq>x<time>' (e.g. 'p2x4')")
    return stages


class FrequencyPad(nn.Module):
    """Pad the frequency axis (``dim=-2``) of ``[B, C, F, T]`` with ``top`` and ``bottom`` rows.

    The rows hold zeros, or per channel the values of the buffer ``fill`` when it is set:
    the BatchNorm canonizer (:class:`xai_loc.explain.canonizers.FoldBatchNormForward`)
    uses it to keep a folded model exact at the borders. ``fill`` is never saved.
    """

    def __init__(self, top: int, bottom: int) -> None:
        super().__init__()
        self.top, self.bottom = int(top), int(bottom)
        self.register_buffer("fill", None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fill is None:
            return F.pad(x, (0, 0, self.top, self.bottom))
        rows = self.fill.to(x.dtype).view(1, -1, 1, 1)
        parts = [rows.expand(x.shape[0], -1, self.top, x.shape[-1]), x,
                 rows.expand(x.shape[0], -1, self.bottom, x.shape[-1])]
        return torch.cat(parts, dim=-2)

    def extra_repr(self) -> str:
        return f"top={self.top}, bottom={self.bottom}"


@register_model("cochcnn", output="direction_classes")
class CochleagramCNN(Localizer):
    """Francl-McDermott cochleagram CNN classifying directions; see the module docs.

    Contract: ``front_end`` the cochleagram (``nn.Identity`` with ``front_end=False``, whose
    inputs are cochleagrams), ``body`` the conv stages (``features``), ``head`` flatten .. logits;
    levels ``waveform`` and ``front_end``; ``direction_grid`` the head's grid (:data:`HEAD_GRIDS`).

    Parameters
    ----------
    layers
        A preset name (:data:`LAYER_PRESETS`: ``'small'``, ``'net1'``) or a layer list.
        The config (and so the checkpoint card) keeps the resolved list.
    head
        ``'azel'`` (504 azimuth x elevation classes) or ``'azimuth'`` (72 classes).
    n_samples
        Waveform length at ``cochleagram['fs']``; default: the preset's
        (:data:`PRESET_SAMPLES`), 12000 for a custom list.
    front_end
        Include the cochleagram front end (inputs are waveforms ``[B, 2, n_samples]``);
        False: inputs are cochleagrams ``[B, 2, n_filters, frames]``.
    cochleagram
        Options of :class:`~xai_loc.features.cochleagram.Cochleagram` (default: the
        paper's, 48 kHz -> 39 bands at 8 kHz); ``signal_length`` is set to ``n_samples``.
    dense
        Units of the dense layer (512).
    dropout
        Dropout probability before the logits (0.5).
    """

    #: What the outputs are (multichannel localizers regress positions instead).
    task: ClassVar[str] = "direction-classification"
    levels: ClassVar[tuple[str, ...]] = ("waveform", "front_end")

    def __init__(self, layers: str | Sequence[str] = "small", head: str = "azel", n_samples: int | None = None,
                 front_end: bool = True, cochleagram: dict[str, Any] | None = None, dense: int = 512,
                 dropout: float = 0.5) -> None:
        from xai_loc.features.cochleagram import Cochleagram

        preset = layers if isinstance(layers, str) else None
        if preset is not None:
            if preset not in LAYER_PRESETS:
                raise InputError(f"layer preset {preset!r} is unknown; allowed: {', '.join(LAYER_PRESETS)}")
            layers = LAYER_PRESETS[preset]
        if n_samples is None:
            n_samples = PRESET_SAMPLES.get(preset or "", 12000)
        super().__init__(2, check_positive_int("n_samples", n_samples, 16))
        if head not in HEADS:
            raise InputError(f"head={head!r} is not allowed; use one of {', '.join(HEADS)}")
        if not isinstance(front_end, bool):
            raise InputError(f"front_end={front_end!r} is not allowed; use True or False")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise InputError(f"dropout={dropout!r} is not allowed; use a number in [0, 1)")
        self.layers = [" ".join(str(t).split()) for t in layers]
        self.stages = parse_layers(self.layers)
        self.head_name, self.n_classes = head, HEADS[head]
        self.direction_grid = HEAD_GRIDS[head]
        self.dense_units, self.dropout_p = check_positive_int("dense", dense), float(dropout)
        self.with_front_end = front_end

        allowed = list(inspect.signature(Cochleagram).parameters)  # signal_length too (saved configs record
        # it), though n_samples always sets it below
        if cochleagram is not None and not isinstance(cochleagram, Mapping):
            raise InputError(f"cochleagram={cochleagram!r} is not allowed; give a dict of Cochleagram options")
        unknown = [key for key in cochleagram or {} if key not in allowed]
        if unknown:
            raise InputError(f"cochleagram option {unknown[0]!r} is unknown; allowed: {', '.join(allowed)}")
        options = dict(cochleagram or {})
        options["signal_length"] = self.n_samples
        coch = Cochleagram(**options)
        self.cochleagram_options = dict(coch.config)
        self.n_bands = coch.config["n_filters"]
        self.n_frames = -(-self.n_samples * coch.out_fs // coch.fs)
        self._centres = coch.centre_frequencies
        self.fs, self.frame_rate = coch.fs, coch.out_fs
        if front_end:
            self.set_fixed_front_end(coch)

        features: OrderedDict[str, nn.Module] = OrderedDict()
        channels, size = 2, (self.n_bands, self.n_frames)
        self.stage_shapes: list[tuple[int, int, int]] = []
        for i, stage in enumerate(self.stages, start=1):
            (kf, kt), pool = stage["kernel"], stage["pool"]
            if kf > 1:
                features[f"pad{i}"] = FrequencyPad((kf - 1) // 2, kf - 1 - (kf - 1) // 2)
            features[f"conv{i}"] = nn.Conv2d(channels, stage["channels"], (kf, kt))
            size = (size[0], size[1] - kt + 1)
            if pool is not None:
                features[f"pool{i}"] = nn.MaxPool2d(pool)
                size = (size[0] // pool[0], size[1] // pool[1])
            if min(size) < 1:
                raise InputError(f"layers {self.layers} leave no output at stage {i} for an input of "
                                 f"{self.n_bands} bands x {self.n_frames} frames; use a longer input or fewer pools")
            features[f"relu{i}"] = nn.ReLU()
            features[f"bn{i}"] = nn.BatchNorm2d(stage["channels"])
            channels = stage["channels"]
            self.stage_shapes.append((channels, *size))
        self.features = nn.Sequential(features)
        n_flat = channels * size[0] * size[1]
        self.head = nn.Sequential(OrderedDict([
            ("flatten", nn.Flatten()),
            ("dense", nn.Linear(n_flat, self.dense_units)),
            ("relu", nn.ReLU()),
            ("bn", nn.BatchNorm1d(self.dense_units)),
            ("dropout", nn.Dropout(self.dropout_p)),
            ("logits", nn.Linear(self.dense_units, self.n_classes)),
        ]))
        self.expose(body=self.features)

    # -- description ---------------------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (layer list resolved), enough to rebuild the architecture."""
        return {"layers": list(self.layers), "head": self.head_name, "n_samples": self.n_samples,
                "front_end": self.with_front_end, "cochleagram": dict(self.cochleagram_options),
                "dense": self.dense_units, "dropout": self.dropout_p}

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One input: ``(2, n_samples)`` with the front end, ``(2, n_bands, n_frames)`` without."""
        return (2, self.n_samples) if self.with_front_end else (2, self.n_bands, self.n_frames)

    @property
    def cochleagram_shape(self) -> tuple[int, int, int]:
        """The CNN's input: ``(2 ears, n_bands, n_frames)``."""
        return (2, self.n_bands, self.n_frames)

    @property
    def centre_frequencies(self) -> np.ndarray:
        """Centre frequency of each band in Hz."""
        return self._centres.copy()

    def n_parameters(self, trainable: bool = True) -> int:
        """Number of parameters; ``trainable=False`` adds the BatchNorm running statistics
        (as TensorFlow/Keras counts them)."""
        n = sum(p.numel() for p in self.parameters() if p.requires_grad)
        if not trainable:
            n += sum(m.running_mean.numel() + m.running_var.numel() for m in self.modules()
                     if isinstance(m, nn.modules.batchnorm._BatchNorm))
        return n

    def describe(self) -> list[str]:
        """One line per stage: layer tokens and output shape ``channels x freq x time``."""
        lines, k = [], 0
        for i, stage in enumerate(self.stages, start=1):
            c, f, t = self.stage_shapes[i - 1]
            tokens = self.layers[k:k + (2 if stage["pool"] else 1)]
            k += len(tokens)
            lines.append(f"stage {i}: {' + '.join(tokens):22s} -> {c} x {f} x {t}")
        n_flat = self.head.dense.in_features
        lines.append(f"head: flatten {n_flat} -> dense {self.dense_units} -> {self.n_classes} classes")
        return lines
