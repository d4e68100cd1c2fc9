"""BAST, the binaural audio spectrogram transformer (Kuang, van der Heijden & Mehrkanoon 2022), configurable.

A model takes ear signals ``[B, 2, 8000]`` (0.5 s at 16 kHz; or, without its front end, the
standardized dB spectrograms ``[B, 2, 129, 61]`` of :mod:`xai_loc.features.spectrogram`) and
regresses the direction on the horizontal plane as ``[cos az, sin az]`` (azimuth as in SOFA:
counter-clockwise, 90 = left, so ``sin az > 0`` points left). Structure, after the authors' code::

    left  spectrogram -> patches -> + positions -> encoder L --\\
                                                                 integrate (ADD | SUB | CONCAT) -> encoder 3
    right spectrogram -> patches -> + positions -> encoder R --/      -> mean over tokens -> LayerNorm -> [cos, sin]

- Patches: 16 x 16 with overlap 10 (stride 6), the spectrogram reflection-padded at the low-
  frequency edge and the late end so the patches tile it: 20 x 9 = 180 patches of ``[129, 61]``.
  The embedding is a convolution (kernel 16, stride 6), shared by both ears, as are the
  learned position embeddings (as in the authors' code).
- Encoders: pre-norm transformer blocks ``x + MHA(LN(x))``, ``x + MLP(LN(x))`` (GELU). With
  ``share_weights=True`` ("SP") the left and right encoder are one module; ``False`` ("NSP")
  two. The third encoder works at the integrated width (twice the width for CONCAT).
- Integration (:data:`INTEGRATIONS`): the left minus right tokens (SUB), their sum (ADD) or
  their concatenation along the features (CONCAT).

Deviations from the seed, stated: no class token (the seed prepends one and then mean-pools
over all tokens, so it is one learned constant token; here the pool runs over the patch
tokens only, which keeps relevance and rollout on the spectrogram); a small default width
(64, depth 2, 4 heads of 16; the seed: 1024, depth 3, 16 heads of 64) so that a model
trains on one CPU thread in minutes; dropout 0 by default (seed 0.2).

Every operation of the forward pass is a registered module (``MatMul``, ``Scale``,
``Residual``, the integration, ``TokenMean``, ``nn.Softmax``, ``nn.GELU``, ``nn.LayerNorm``,
``nn.Linear``), so explanation rules (:mod:`xai_loc.explain.attn_lrp`) see every step.

**Symmetry.** With shared weights and ADD the network is exactly invariant to swapping the ears
(``f(swap(x)) == f(x)``): a source and its mirror image across the median plane give the same
answer, so left and right cannot be told apart; the published table shows this combination
failing. SUB makes the integrated tokens antisymmetric under the swap.

**Losses** (:data:`LOSSES`): ``MSE`` between outputs and ``[cos, sin]`` targets, ``AD`` the
angular distance ``arccos`` of the cosine between output and target (clamped to
``1 - 1e-6`` so the gradient stays finite; a floor of 0.08 degrees), and ``MIX = MSE + AD``.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from xai_loc.errors import InputError
from xai_loc.models.base import Chain, Localizer, check_positive_int
from xai_loc.models.registry import register_model

__all__ = [
    "BAST", "FP16_TOLERANCE", "FRONT_END_BATCH", "INTEGRATIONS", "LOSSES", "Attention", "EarConcat", "EarDifference",
    "EarSum", "Encoder", "EncoderBlock", "MatMul", "PatchEmbedding", "PositionEmbedding", "Residual", "Scale",
    "TokenMean", "angular_distance", "angles_to_targets", "evaluate_bast", "fit_bast", "patch_grid", "prepare_bast",
    "register_integration", "register_loss", "train_bast",
]


# -- operations as modules --------------------------------------------------------------------------


class MatMul(nn.Module):
    """``torch.matmul(a, b)`` as a module (a bilinear step that explanation rules must see)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b)


class Scale(nn.Module):
    """Multiplication by a fixed number."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = float(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


class Residual(nn.Module):
    """``skip + branch``: the residual connection of a transformer block."""

    def forward(self, skip: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        return skip + branch


class TokenMean(nn.Module):
    """Mean over the token axis: ``[B, N, D] -> [B, D]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


#: Binaural integrations by name: a module class ``f(left, right)`` and the width factor of its output.
INTEGRATIONS: dict[str, tuple[type[nn.Module], int]] = {}


def register_integration(name: str, width: int) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator registering a binaural integration ``module(left, right)`` of ``width`` x the token width."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        INTEGRATIONS[name] = (cls, width)
        return cls

    return wrap


@register_integration("ADD", 1)
class EarSum(nn.Module):
    """``left + right`` (symmetric under the ear swap)."""

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return left + right


@register_integration("SUB", 1)
class EarDifference(nn.Module):
    """``left - right`` (antisymmetric under the ear swap)."""

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return left - right


@register_integration("CONCAT", 2)
class EarConcat(nn.Module):
    """``[left, right]`` along the features."""

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return torch.cat([left, right], dim=-1)


# -- patches ------------------------------------------------------------------------------------------


def patch_grid(size: tuple[int, int], patch: int, overlap: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Patches per axis and the padding that makes them tile ``size`` (frequency, time), as the seed.

    Returns
    -------
    counts, padding
        ``(n_freq, n_time)`` patches and ``(pad_freq, pad_time)`` rows/columns added.
    """
    stride = patch - overlap
    if not 0 <= overlap < patch:
        raise InputError(f"patch_overlap={overlap} is not allowed; use 0 <= overlap < patch_size={patch}")
    counts = tuple(max(1, math.ceil((n - patch) / stride) + 1) for n in size)
    padding = tuple((c - 1) * stride + patch - n for c, n in zip(counts, size, strict=True))
    if min(padding) < 0 or max(p - n for p, n in zip(padding, size, strict=True)) >= 0:
        raise InputError(f"a spectrogram of {size} is too small for {patch} x {patch} patches")
    return counts, padding  # type: ignore[return-value]


class PatchEmbedding(nn.Module):
    """``[B, 1, F, T] -> [B, N, dim]``: reflection padding (low frequencies, late frames), then a
    convolution with kernel ``patch`` and stride ``patch - overlap`` (a linear map of each patch)."""

    def __init__(self, size: tuple[int, int], patch: int, overlap: int, dim: int, bias: bool = True) -> None:
        super().__init__()
        (self.n_freq, self.n_time), (pad_f, pad_t) = patch_grid(size, patch, overlap)
        self.size, self.patch, self.overlap = tuple(size), int(patch), int(overlap)
        self.pad = nn.ReflectionPad2d((0, pad_t, pad_f, 0))  # (left, right, top, bottom) as the seed
        self.proj = nn.Conv2d(1, dim, patch, stride=patch - overlap, bias=bias)

    @property
    def n_patches(self) -> int:
        return self.n_freq * self.n_time

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pad(x)).flatten(2).transpose(1, 2)


class PositionEmbedding(nn.Module):
    """Adds a learned embedding per token position, ``[B, N, D] + [1, N, D]``."""

    def __init__(self, n_tokens: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, n_tokens, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal draws of standard deviation 0.02 (the initialization, and what a randomized copy gets)."""
        with torch.no_grad():
            self.weight.normal_(0.0, 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight


# -- transformer ------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention with every step a module: ``to_q/to_k/to_v`` (no bias, as the seed),
    ``scores = scale(qk(q, k^T))``, ``attend`` (softmax over keys), ``av(attention, v)``, ``to_out``."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = int(heads), int(dim_head)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.qk = MatMul()
        self.scale = Scale(dim_head ** -0.5)
        self.attend = nn.Softmax(dim=-1)
        self.av = MatMul()
        self.to_out = nn.Linear(inner, dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, self.dim_head).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.to_q(x)), self._split(self.to_k(x)), self._split(self.to_v(x))
        attention = self.attend(self.scale(self.qk(q, k.transpose(-1, -2))))
        out = self.av(attention, v).transpose(1, 2).flatten(2)
        return self.dropout(self.to_out(out))


class EncoderBlock(nn.Module):
    """Pre-norm block: ``x + attention(LN(x))``, then ``x + MLP(LN(x))`` with a GELU MLP."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float = 0.0,
                 bias: bool = True) -> None:
        super().__init__()
        self.norm_attention = nn.LayerNorm(dim, bias=bias)
        self.attention = Attention(dim, heads, dim_head, dropout, bias)
        self.add_attention = Residual()
        self.norm_mlp = nn.LayerNorm(dim, bias=bias)
        self.mlp = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(dim, mlp_dim, bias=bias)), ("act", nn.GELU()), ("drop1", nn.Dropout(dropout)),
            ("fc2", nn.Linear(mlp_dim, dim, bias=bias)), ("drop2", nn.Dropout(dropout)),
        ]))
        self.add_mlp = Residual()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.add_attention(x, self.attention(self.norm_attention(x)))
        return self.add_mlp(x, self.mlp(self.norm_mlp(x)))


class Encoder(nn.Module):
    """A stack of ``depth`` :class:`EncoderBlock` (no final norm, as the seed)."""

    def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int, dropout: float = 0.0,
                 bias: bool = True) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, dim_head, mlp_dim, dropout, bias)
                                      for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


# -- the model ----------------------------------------------------------------------------------------


@register_model("bast", output="cos_sin")
class BAST(Localizer):
    """Binaural audio spectrogram transformer regressing ``[cos az, sin az]``; see the module docs.

    Contract: ``front_end`` the per-ear dB spectrograms (``nn.Identity`` with ``front_end=False``),
    ``body`` patches .. encoders .. ``head_norm`` (pooled tokens ``[B, width]``), ``head`` the
    output layer; levels ``waveform`` and ``front_end``.

    Parameters
    ----------
    integration
        ``'SUB'``, ``'ADD'`` or ``'CONCAT'`` (:data:`INTEGRATIONS`).
    share_weights
        One encoder for both ears ("SP") or two ("NSP").
    n_samples
        Clip length at ``spectrogram['fs']`` (8000: 0.5 s at 16 kHz, 61 frames).
    front_end
        Include the spectrogram front end (inputs are waveforms ``[B, 2, n_samples]``); False:
        inputs are spectrograms ``[B, 2, bins, frames]``.
    spectrogram
        Options of :class:`~xai_loc.features.spectrogram.BinauralSpectrogram` (default: the seed's).
    dim, depth, heads, dim_head, mlp_dim
        Token width, blocks per encoder, attention heads, width per head, MLP width.
    patch_size, patch_overlap
        16 and 10 (stride 6), as published.
    dropout
        Dropout in the encoders (0).
    bias
        Biases in the dense layers, the patch embedding and the LayerNorms (False gives a model whose
        only additive constants are the position embeddings: relevance bookkeeping tests use it).
    """

    task: ClassVar[str] = "azimuth-regression"
    levels: ClassVar[tuple[str, ...]] = ("waveform", "front_end")

    def __init__(self, integration: str = "SUB", share_weights: bool = False, n_samples: int = 8000,
                 front_end: bool = True, spectrogram: dict[str, Any] | None = None, dim: int = 64, depth: int = 2,
                 heads: int = 4, dim_head: int = 16, mlp_dim: int = 128, patch_size: int = 16,
                 patch_overlap: int = 10, dropout: float = 0.0, bias: bool = True) -> None:
        from xai_loc.features.spectrogram import BinauralSpectrogram

        super().__init__(2, check_positive_int("n_samples", n_samples))
        if integration not in INTEGRATIONS:
            raise InputError(f"integration={integration!r} is not allowed; use one of {', '.join(INTEGRATIONS)}")
        for name, value in (("share_weights", share_weights), ("front_end", front_end), ("bias", bias)):
            if not isinstance(value, bool):
                raise InputError(f"{name}={value!r} is not allowed; use True or False")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise InputError(f"dropout={dropout!r} is not allowed; use a number in [0, 1)")
        dim, depth, heads, dim_head, mlp_dim, patch_size = (
            check_positive_int(name, value) for name, value in (("dim", dim), ("depth", depth), ("heads", heads),
                                                                ("dim_head", dim_head), ("mlp_dim", mlp_dim),
                                                                ("patch_size", patch_size)))
        patch_overlap = int(patch_overlap)

        spec = BinauralSpectrogram(**(spectrogram or {}))
        self.spectrogram_options = dict(spec.config)
        self.fs = spec.fs
        self.frequencies, self.frame_times = spec.frequencies, spec.frame_times(self.n_samples)
        self.spectrogram_shape = (2, spec.n_bins, spec.n_frames(self.n_samples))
        self.with_front_end = front_end
        if front_end:
            self.set_fixed_front_end(spec)
        self.integration, self.share_weights = integration, share_weights
        self.dim, self.depth, self.heads, self.dim_head, self.mlp_dim = dim, depth, heads, dim_head, mlp_dim
        self.patch_size, self.patch_overlap, self.dropout_p, self.bias = patch_size, patch_overlap, float(dropout), bias

        self.patches = PatchEmbedding(self.spectrogram_shape[1:], patch_size, patch_overlap, dim, bias)
        self.positions = PositionEmbedding(self.patches.n_patches, dim)
        encoder = dict(depth=depth, heads=heads, dim_head=dim_head, mlp_dim=mlp_dim, dropout=dropout, bias=bias)
        self.encoder_left = Encoder(dim, **encoder)
        if not share_weights:
            self.encoder_right = Encoder(dim, **encoder)
        integrate_cls, width = INTEGRATIONS[integration]
        self.integrate = integrate_cls()
        self.encoder_joint = Encoder(dim * width, **encoder)
        self.pool = TokenMean()
        self.head_norm = nn.LayerNorm(dim * width, bias=bias)
        self.head = nn.Linear(dim * width, 2, bias=bias)
        self.expose(body=Chain(self.encode, self.encoder_joint, self.pool, self.head_norm))

    # -- description ---------------------------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments, enough to rebuild the architecture."""
        return {"integration": self.integration, "share_weights": self.share_weights, "n_samples": self.n_samples,
                "front_end": self.with_front_end, "spectrogram": dict(self.spectrogram_options), "dim": self.dim,
                "depth": self.depth, "heads": self.heads, "dim_head": self.dim_head, "mlp_dim": self.mlp_dim,
                "patch_size": self.patch_size, "patch_overlap": self.patch_overlap, "dropout": self.dropout_p,
                "bias": self.bias}

    @property
    def variant(self) -> str:
        """Short name such as ``'NSP-SUB'``."""
        return f"{'SP' if self.share_weights else 'NSP'}-{self.integration}"

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One input: ``(2, n_samples)`` with the front end, ``(2, bins, frames)`` without."""
        return (2, self.n_samples) if self.with_front_end else self.spectrogram_shape

    @property
    def encoder_right_or_shared(self) -> Encoder:
        """The encoder of the right ear (the left one when weights are shared)."""
        return self.encoder_left if self.share_weights else self.encoder_right

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # -- forward --------------------------------------------------------------------------------------

    def embed(self, spectrogram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``[B, N, dim]`` of the left and the right ear's spectrogram ``[B, 2, F, T]``."""
        left = self.positions(self.patches(spectrogram[:, 0:1]))
        right = self.positions(self.patches(spectrogram[:, 1:2]))
        return left, right

    def encode(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """Integrated tokens of both ears' encoders for spectrograms ``[B, 2, F, T]``."""
        left, right = self.embed(spectrogram)
        return self.integrate(self.encoder_left(left), self.encoder_right_or_shared(right))


# -- targets, losses, metrics -------------------------------------------------------------------------


def angles_to_targets(azimuth) -> torch.Tensor:
    """``[cos az, sin az]`` float32 targets ``[n, 2]`` of azimuths in degrees."""
    az = np.deg2rad(np.asarray(azimuth, dtype=np.float64))
    return torch.as_tensor(np.stack([np.cos(az), np.sin(az)], axis=-1), dtype=torch.float32)


#: Largest cosine the angular distance sees: ``arccos`` has an infinite slope at 1.
AD_CLAMP = 1.0 - 1e-6


def angular_distance(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean angle in radians between output and target vectors ``[n, 2]``: ``arccos`` of their cosine,
    clamped to ``+-(1 - 1e-6)`` (finite gradient)."""
    cosine = nn.functional.cosine_similarity(outputs, targets, dim=1, eps=1e-12)
    return torch.arccos(cosine.clamp(-AD_CLAMP, AD_CLAMP)).mean()


def _mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(outputs, targets)


def _mix(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return _mse(outputs, targets) + angular_distance(outputs, targets)


#: Training losses by name, ``loss(outputs [n, 2], targets [n, 2]) -> scalar``.
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {}


def register_loss(name: str, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Register a loss ``loss(outputs, targets) -> scalar`` under ``name``."""
    LOSSES[name] = loss


register_loss("MSE", _mse)
register_loss("AD", angular_distance)
register_loss("MIX", _mix)


def evaluate_bast(model: BAST, spectrograms: torch.Tensor, azimuth, batch_size: int = 64) -> dict[str, float]:
    """Angular error of a model on spectrograms ``[n, 2, F, T]`` with true azimuths (degrees).

    Returns ``mean_error`` (degrees, wrapped to [0, 180]), ``median_error``, ``accuracy_5`` and
    ``accuracy_10`` (share within 5 and 10 degrees, inclusive up to float rounding:
    :func:`~xai_loc.models.classifier_training.share_within`), ``lateral_sign_error`` (share of off-axis
    targets answered in the other left/right hemifield or on the median plane), ``front_back_rate`` (front-back
    confusions among targets off the interaural axis) with ``mean_error_folded`` (the mean error
    once confused answers are mirrored back) and ``n``.
    """
    from xai_loc.models.evaluation import after_front_end, in_batches

    spectrograms, azimuth = _check_examples(model, spectrograms, azimuth)
    was_training = model.training
    model.eval()
    try:
        outputs = in_batches(after_front_end(model), spectrograms, batch_size)
    finally:
        model.train(was_training)
    return _azimuth_scores(model.decode(outputs.double())["azimuth"].numpy(), azimuth)


def _check_examples(model: BAST, spectrograms, azimuth) -> tuple[torch.Tensor, np.ndarray]:
    """Spectrograms ``[n, *model.spectrogram_shape]`` (n >= 1) as a tensor and one finite azimuth (degrees) each
    as float64, or a one-line :class:`InputError` (:func:`train_bast` and :func:`evaluate_bast` take no waveforms:
    the front end runs once, before them)."""
    from xai_loc.models.classifier_training import check_finite

    x = torch.as_tensor(spectrograms)
    if not x.is_floating_point():  # the training targets take the spectrograms' dtype
        raise InputError(f"spectrograms of dtype {x.dtype} are not allowed; give floating-point values (dB)")
    expected = tuple(model.spectrogram_shape)
    if x.ndim != 1 + len(expected) or tuple(x.shape[1:]) != expected or len(x) == 0:
        raise InputError(f"spectrograms of shape {tuple(x.shape)} are not allowed; give (n >= 1, "
                         f"{', '.join(map(str, expected))}): the model's front end of the ear signals")
    try:
        az = np.asarray(azimuth, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"azimuth={azimuth!r} is not allowed; give one azimuth (degrees) per spectrogram") from None
    if az.shape != (len(x),):
        raise InputError(f"{len(x)} spectrograms and azimuths of shape {az.shape} are not allowed; give one azimuth "
                         "(degrees) each")
    check_finite("azimuths", az)
    check_finite("spectrograms", x)
    return x, az


def _azimuth_scores(pred: np.ndarray, azimuth) -> dict[str, float]:
    """:func:`evaluate_bast`'s metrics of predicted azimuths (degrees)."""
    from xai_loc.models.classifier_training import (
        azimuth_error,
        front_back_confusions,
        mirror_front_back,
        share_within,
    )

    true = np.asarray(azimuth, dtype=np.float64)
    err = azimuth_error(pred, true)
    # the side: +1 left, -1 right, 0 on the median plane (within 1e-9: sin 180 deg is 1.2e-16, not left)
    side_t, side_p = (np.sign(s) * (np.abs(s) > 1e-9) for s in np.sin(np.deg2rad([true, pred])))
    lateral = side_t != 0
    confused, eligible = front_back_confusions(pred, true)
    folded = azimuth_error(np.where(confused, mirror_front_back(pred), pred), true)
    return {"mean_error": float(err.mean()), "median_error": float(np.median(err)),
            # None where no target qualifies: undefined, not a perfect 0 (as in direction_metrics)
            "front_back_rate": float(confused[eligible].mean()) if eligible.any() else None,
            "mean_error_folded": float(folded.mean()),
            "accuracy_5": share_within(err, 5.0), "accuracy_10": share_within(err, 10.0),
            "lateral_sign_error": float(np.mean(side_p[lateral] != side_t[lateral])) if lateral.any() else None,
            "n": int(true.size)}


def _check_recipe(loss: str, epochs: int, batch_size: int, lr: float, seed: int,
                  max_minutes: float | None) -> tuple[int, int, float, int, float | None]:
    """Refuse (one line) a training setting of :func:`train_bast` that is not allowed; return ``epochs``,
    ``batch_size``, ``lr``, ``seed`` and ``max_minutes`` as Python numbers (they go into JSON cards)."""
    from xai_loc.models.classifier_training import check_settings

    if loss not in LOSSES:
        raise InputError(f"loss={loss!r} is not allowed; use one of {', '.join(LOSSES)}")
    batch_size = check_positive_int("batch_size", batch_size)  # no BatchNorm: a batch of one is allowed
    checked = check_settings(epochs=epochs, lr=lr, seed=seed, max_minutes=max_minutes)
    return checked["epochs"], batch_size, checked["lr"], checked["seed"], checked["max_minutes"]


def train_bast(model: BAST, spectrograms: torch.Tensor, azimuth, *, loss: str = "MIX", epochs: int = 10,
               batch_size: int = 32, lr: float = 1e-3, seed: int = 0, max_minutes: float | None = None,
               progress: bool = False, state_file: Path | None = None, dataset: Any = None) -> dict[str, Any]:
    """Train a model in place on spectrograms ``[n, 2, F, T]`` (the front end has no parameters).

    Adam with a cosine learning-rate decay over the planned steps; each epoch visits every
    example once in an order drawn from ``(seed, epoch)`` (the shared loop,
    :func:`xai_loc.models.trainer.fit`). ``max_minutes`` bounds the wall-clock time: no epoch
    starts that would overrun it. Spectrograms of another shape than the model's, azimuths not one per
    spectrogram and either holding NaN or infinity are refused.
    With a ``state_file`` the run saves its state there after every epoch and resumes from it, refused
    unless the model, the recipe and ``dataset`` (what pins the data, e.g. the scene spec's digest) match.

    Returns
    -------
    dict
        The recipe and ``epochs`` run, ``wall_seconds`` (of every call of a resumed run), ``cpu_seconds`` (of
        this call), ``loss_history`` (mean loss per epoch).
    """
    from xai_loc.models.evaluation import after_front_end
    from xai_loc.models.trainer import Hooks, Schedule, cached_batches, fit, shuffled, split_batches

    epochs, batch_size, lr, seed, max_minutes = _check_recipe(loss, epochs, batch_size, lr, seed, max_minutes)
    spectrograms, azimuth = _check_examples(model, spectrograms, azimuth)
    targets = angles_to_targets(azimuth).to(spectrograms.device, spectrograms.dtype)
    n = len(spectrograms)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * len(split_batches(np.arange(n), batch_size))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1.0 + math.cos(math.pi * s / steps)))
    device = next(model.parameters()).device
    hooks = Hooks(picks=shuffled(n), assemble=cached_batches(lambda: spectrograms, targets, device),
                  forward=after_front_end(model), loss=LOSSES[loss])
    cpu_start = time.process_time()
    recipe = {"loss": loss, "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}
    run = fit(model, optimizer, hooks, Schedule(batch_size, epochs, seed, max_minutes=max_minutes),
              scheduler=schedule, scheduler_step="step", progress=progress, desc=f"train {model.variant}",
              state_file=state_file, identity={"arch": "bast", "model_config": model.config, "recipe": recipe,
                                               "dataset": dataset})
    model.eval()
    return {"loss": loss, "optimizer": "Adam", "lr": lr, "schedule": "cosine decay to 0 over the steps",
            "batch_size": batch_size, "epochs_planned": epochs, "cpu_seconds": time.process_time() - cpu_start,
            **run.record(), "loss_history": run.history["train_loss"]}


#: Ear signals per batch of the front end (spectrograms are computed once, before training).
FRONT_END_BATCH = 256
#: Largest change float16 storage may make to the test metrics of a trained BAST (else float32 is kept).
FP16_TOLERANCE = {"mean_error": 0.25, "accuracy_5": 0.002, "accuracy_10": 0.002}


def prepare_bast(spec, options: dict[str, Any], *, loss: str, epochs: int, batch_size: int, lr: float, seed: int,
                 max_minutes: float | None = None, root=None, progress: bool = False):
    """Check a BAST run, then render (or reuse) its scenes and compute their spectrograms.

    The recipe (:func:`train_bast`'s settings), the model ``options`` (by building the model, seeded
    by ``seed``) and both splits of ``spec`` (each must hold sounds) are checked before anything is
    rendered.

    Returns
    -------
    model, train_set, test_set, train_x, test_x
        The model (with its front end), both splits and their spectrograms ``[n, 2, F, T]``.
    """
    from xai_loc.data.bast_scenes import SPLITS, load_bast_scenes
    from xai_loc.models.evaluation import in_batches
    from xai_loc.models.trainer import seeded

    epochs, batch_size, lr, seed, max_minutes = _check_recipe(loss, epochs, batch_size, lr, seed, max_minutes)
    with seeded(seed):
        model = BAST(**options)
    for split in SPLITS:  # both hold sounds, before either is rendered
        spec.sound_ids(split)
    train_set, test_set = (load_bast_scenes(spec, split, root=root, progress=progress) for split in SPLITS)
    spectrograms = [in_batches(model.front_end, s.waveforms.values, FRONT_END_BATCH) for s in (train_set, test_set)]
    return model, train_set, test_set, *spectrograms


def fit_bast(spec, out, *, root=None, integration: str = "SUB", share_weights: bool = False, loss: str = "MIX",
             epochs: int = 18, batch_size: int = 32, lr: float = 1e-3, dim: int = 64, depth: int = 2, heads: int = 4,
             seed: int = 0, max_minutes: float | None = 15.0, progress: bool = False):
    """Render (or reuse) a scene set, train one BAST variant on it, score it on the held-out sounds, save it.

    Every argument, ``out`` and both splits are checked before anything is rendered
    (:func:`prepare_bast`). The state goes to ``<out>.state.pt`` after every epoch; calling again with
    the same arguments continues from there (e.g. after the ``max_minutes`` budget stopped a call).

    Parameters
    ----------
    spec
        A :class:`~xai_loc.data.bast_scenes.BastSceneSpec`.
    out
        The ``.safetensors`` checkpoint; float16 when that moves no test metric by more than
        :data:`FP16_TOLERANCE`, else float32. The card holds the recipe, CPU minutes (of the last
        call) and metrics.
    root
        Data root of the scenes.
    integration, share_weights, dim, depth, heads
        The variant (``mlp_dim = 2 dim``, ``dim_head = dim / heads``: ``dim`` a multiple of ``heads``).
    loss, epochs, batch_size, lr, seed, max_minutes
        The recipe of :func:`train_bast`.

    Returns
    -------
    pathlib.Path, dict
        ``out`` and its card.
    """
    from xai_loc.models.checkpoint import read_card, result_entry
    from xai_loc.models.trainer import check_output, save_trained, state_path

    out = check_output(out)
    dim, heads = check_positive_int("dim", dim), check_positive_int("heads", heads)
    if dim % heads:
        raise InputError(f"dim={dim} and heads={heads} are not allowed; use a dim that is a multiple of heads "
                         "(each head is dim / heads wide)")
    options = {"integration": integration, "share_weights": share_weights, "dim": dim, "depth": depth,
               "heads": heads, "dim_head": dim // heads, "mlp_dim": 2 * dim}
    model, train_set, test_set, train_x, test_x = prepare_bast(
        spec, options, loss=loss, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, max_minutes=max_minutes,
        root=root, progress=progress)
    training = train_bast(model, train_x, train_set.azimuth.values, loss=loss, epochs=epochs, batch_size=batch_size,
                          lr=lr, seed=seed, max_minutes=max_minutes, progress=progress, state_file=state_path(out),
                          dataset=spec.digest())
    truth = test_set.azimuth.values
    baseline = _azimuth_scores(np.zeros(len(truth)), truth)  # always 0 degrees
    out = save_trained(
        model, out, condition={"rooms": ["anechoic"], "snr": None if spec.snr is None else list(spec.snr)},
        training={**training, "cpu_minutes": training["cpu_seconds"] / 60.0, "n_train": len(train_x),
                  "variant": model.variant},
        dataset={"kind": "bast-scenes", "spec": spec.to_dict(), "digest": spec.digest()},
        score=lambda net: result_entry(evaluate_bast(net, test_x, truth), baseline, "always 0 degrees"),
        tolerance=FP16_TOLERANCE)
    return out, read_card(out)
