"""The ITD/ILD/IC cue network (seed 002): per-cue 1-D conv branches fused by attention over cues.

Input: binaural waveforms ``[B, 2, n_samples]`` at 44.1 kHz (or, without the front end,
cue maps ``[B, 3 cues, 32 bands, frames]`` of
:class:`~xai_loc.features.binaural_cues.BinauralCues`: ITD ms, ILD dB, IC). Output: logits
over 72 azimuths (5 degree steps, label ``azimuth / 5``; SOFA convention, 90 = left).

Architecture (:class:`CueClassifier`, the part LRP explains)::

    cue map [B, 3, bands, frames]
      -> per cue c in (itd, ild, ic): branch_c = CueBranch (1-D convolutions over time,
         bands as channels): conv k5 -> BN -> ReLU -> conv k5 -> BN -> ReLU
         -> average over frames -> embedding e_c [B, channels]
      -> CueAttention: score_c = MLP(e_c) (shared), weights a = softmax over the 3 cues,
         fused = sum_c a_c e_c   (a Gate module for a_c * e_c, a zennit Sum for the sum)
      -> head: dense -> ReLU -> dropout -> 72 logits

:meth:`CueNet.attention` returns the weights ``a [B, 3]``; the softmax is an ``nn.Softmax``
module, so a forward hook on ``classifier.attention.softmax`` reads them too. Every
arithmetic operation is a registered module (the per-cue split and the stacking of the
embeddings only move data).

The default (``channels=64``, ``hidden=128``) has 119,369 parameters; one epoch over 4320
cached cue maps takes about 5 s on one CPU thread. :func:`train_cuenet` trains it on the
cached stores of :mod:`xai_loc.data.cue_scenes`.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from xai_loc.acoustics.directions import AZIMUTH_RING
from xai_loc.errors import InputError
from xai_loc.models.base import Chain, Localizer, check_positive_int
from xai_loc.models.evaluation import after_front_end, in_batches
from xai_loc.models.layers import Gate, Sum
from xai_loc.models.registry import register_model

__all__ = ["CueAttention", "CueBranch", "CueClassifier", "CueNet", "cue_metrics", "evaluate_cuenet", "train_cuenet"]


class CueBranch(nn.Sequential):
    """One cue's map ``[B, bands, frames]`` -> embedding ``[B, channels]``: two 1-D conv stages and a time average."""

    def __init__(self, bands: int, channels: int, kernel: int) -> None:
        pad = kernel // 2
        super().__init__(OrderedDict([
            ("conv1", nn.Conv1d(bands, channels, kernel, padding=pad)),
            ("bn1", nn.BatchNorm1d(channels)),
            ("relu1", nn.ReLU()),
            ("conv2", nn.Conv1d(channels, channels, kernel, padding=pad)),
            ("bn2", nn.BatchNorm1d(channels)),
            ("relu2", nn.ReLU()),
            ("pool", nn.AdaptiveAvgPool1d(1)),
            ("flatten", nn.Flatten()),
        ]))


class CueAttention(nn.Module):
    """Attention over cues: ``fused = sum_c softmax(score(e))_c e_c`` for embeddings ``e [B, cues, channels]``.

    ``score`` is a small MLP shared by the cues (dense -> tanh -> dense to one number).
    The product ``a_c e_c`` is a :class:`~xai_loc.models.layers.Gate` and the sum over cues a
    :class:`zennit.layer.Sum`, so LRP composites can hold the weights constant (relevance
    to the embeddings, none to the scores; see :mod:`xai_loc.experiments.cue_probe`).
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.score = nn.Sequential(OrderedDict([
            ("dense", nn.Linear(channels, hidden)), ("tanh", nn.Tanh()), ("out", nn.Linear(hidden, 1)),
            ("flatten", nn.Flatten())]))
        self.softmax = nn.Softmax(dim=1)
        self.gate = Gate()
        self.sum = Sum(dim=1)

    def weights(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Attention weights ``[B, cues]`` (each row sums to 1)."""
        return self.softmax(self.score(embeddings))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.sum(self.gate(embeddings, self.weights(embeddings)))


class CueClassifier(nn.Module):
    """Cue map ``[B, 3, bands, frames]`` -> logits ``[B, n_classes]`` (branches, attention, head)."""

    def __init__(self, bands: int, channels: int, kernel: int, hidden: int, dropout: float,
                 cues: tuple[str, ...]) -> None:
        super().__init__()
        self.cues = cues
        self.branches = nn.ModuleDict({c: CueBranch(bands, channels, kernel) for c in cues})
        self.attention = CueAttention(channels, hidden)
        self.head = nn.Sequential(OrderedDict([
            ("dense", nn.Linear(channels, hidden)), ("relu", nn.ReLU()), ("dropout", nn.Dropout(dropout)),
            ("logits", nn.Linear(hidden, AZIMUTH_RING.size))]))

    def embeddings(self, cues: torch.Tensor) -> torch.Tensor:
        """Branch outputs ``[B, cues, channels]``."""
        return torch.stack([self.branches[c](cues[:, k]) for k, c in enumerate(self.cues)], dim=1)

    def forward(self, cues: torch.Tensor) -> torch.Tensor:
        return self.head(self.attention(self.embeddings(cues)))


@register_model("cuenet", output="direction_classes")
class CueNet(Localizer):
    """ITD/ILD/IC cue network classifying 72 azimuths; see the module docs.

    Contract: ``front_end`` the cue maps (``nn.Identity`` with ``front_end=False``), ``body`` the
    branches and the attention (fused embedding ``[B, channels]``), ``head`` ``classifier.head``;
    levels ``waveform`` and ``front_end``; ``direction_grid`` the 72-azimuth ring.

    Parameters
    ----------
    n_samples
        Waveform length per ear at the front end's rate (22050: 0.5 s at 44.1 kHz).
    front_end
        Include :class:`~xai_loc.features.binaural_cues.BinauralCues` (inputs are waveforms);
        False: inputs are cue maps.
    cues
        Options of the front end (its defaults: 32 bands from 80 Hz, +-1 ms, 10 ms frames).
    channels, kernel
        Channels and kernel length (frames) of the branch convolutions.
    hidden
        Units of the attention scorer and of the head's dense layer.
    dropout
        Dropout before the logits.
    """

    task: ClassVar[str] = "direction-classification"
    #: Output head (72 azimuths at elevation 0), for code shared with the cochleagram CNN.
    head_name: ClassVar[str] = "azimuth"
    n_classes: ClassVar[int] = AZIMUTH_RING.size
    levels: ClassVar[tuple[str, ...]] = ("waveform", "front_end")
    #: Azimuth classes (72, 5 degree steps, elevation 0; SOFA convention).
    direction_grid = AZIMUTH_RING

    def __init__(self, n_samples: int = 22050, front_end: bool = True, cues: dict[str, Any] | None = None,
                 channels: int = 64, kernel: int = 5, hidden: int = 128, dropout: float = 0.3) -> None:
        from xai_loc.features.binaural_cues import CUES, BinauralCues

        super().__init__(2, check_positive_int("n_samples", n_samples, 16))
        if not isinstance(front_end, bool):
            raise InputError(f"front_end={front_end!r} is not allowed; use True or False")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise InputError(f"dropout={dropout!r} is not allowed; use a number in [0, 1)")
        if cues is not None and not isinstance(cues, Mapping):
            raise InputError(f"cues={cues!r} is not allowed; give a dict of BinauralCues options")
        extractor = BinauralCues(**dict(cues or {}))
        self.cue_options = extractor.config
        self.fs, self.n_bands = extractor.fs, extractor.n_bands
        self.n_frames = extractor.n_frames(self.n_samples)
        self._centres = extractor.centre_frequencies
        self.with_front_end = front_end
        self.channels, self.kernel = check_positive_int("channels", channels), check_positive_int("kernel", kernel)
        self.hidden, self.dropout_p = check_positive_int("hidden", hidden), float(dropout)
        if front_end:
            self.set_fixed_front_end(extractor)
        self.classifier = CueClassifier(self.n_bands, self.channels, self.kernel, self.hidden, self.dropout_p, CUES)
        self.expose(body=Chain(self.classifier.embeddings, self.classifier.attention), head=self.classifier.head)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {"n_samples": self.n_samples, "front_end": self.with_front_end, "cues": dict(self.cue_options),
                "channels": self.channels, "kernel": self.kernel, "hidden": self.hidden, "dropout": self.dropout_p}

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One input: ``(2, n_samples)`` with the front end, ``(3, bands, frames)`` without."""
        return (2, self.n_samples) if self.with_front_end else self.cue_shape

    @property
    def cue_shape(self) -> tuple[int, int, int]:
        """The classifier's input: ``(3 cues, bands, frames)``."""
        return (3, self.n_bands, self.n_frames)

    @property
    def centre_frequencies(self) -> np.ndarray:
        """Centre frequency of each band in Hz."""
        return self._centres.copy()

    def attention(self, cues: torch.Tensor) -> torch.Tensor:
        """Attention weights ``[B, 3]`` (itd, ild, ic) of cue maps."""
        return self.classifier.attention.weights(self.classifier.embeddings(cues))


# -- training and evaluation ------------------------------------------------------------------------


def cue_metrics(logits: np.ndarray, azimuth: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Top-1 / Top-5 accuracy, azimuth error and front-back confusions of logits ``(n, 72)``, beside chance.

    Uses :func:`~xai_loc.models.classifier_training.direction_metrics` (azimuth error wrapped
    to [0, 180] degrees; front-back rate among targets off the interaural axis).
    """
    from xai_loc.models.classifier_training import check_finite, direction_metrics

    logits, azimuth = np.asarray(logits, dtype=np.float64), np.asarray(azimuth, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] != AZIMUTH_RING.size:
        raise InputError(f"logits of shape {logits.shape} are not allowed; give (examples, {AZIMUTH_RING.size})")
    check_finite("logits", logits)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    grid, n_classes = AZIMUTH_RING.azimuths, AZIMUTH_RING.size
    zeros = np.zeros_like(azimuth)
    model = direction_metrics(grid[top5[:, 0]], zeros, azimuth, zeros)  # refuses targets that are not finite
    label = AZIMUTH_RING.nearest(azimuth)
    guess = np.random.default_rng(seed).integers(n_classes, size=azimuth.size)
    chance = direction_metrics(grid[guess], zeros, azimuth, zeros)
    keys = ("n", "azimuth_error", "azimuth_rmse", "front_back_rate", "azimuth_error_folded", "lateral_error")
    return {"top1": float((top5[:, 0] == label).mean()), "top5": float((top5 == label[:, None]).any(1).mean()),
            **{k: model[k] for k in keys},
            "chance": {"top1": 1 / n_classes, "top5": 5 / n_classes, **{k: chance[k] for k in keys if k != "n"}}}


def evaluate_cuenet(model: CueNet, store) -> dict[str, Any]:
    """:func:`cue_metrics` of a model on every example of a cue-scene store (path or dataset)."""
    from xai_loc.data.cue_scenes import open_cue_scenes

    ds = store if hasattr(store, "data_vars") else open_cue_scenes(store)
    _check_store(model, ds)
    was = model.training
    model.eval()
    try:
        logits = in_batches(after_front_end(model), ds["cues"].values, 256).numpy()
        return cue_metrics(logits, ds["azimuth"].values)
    finally:
        model.train(was)


def _check_store(model: CueNet, ds) -> None:
    from xai_loc.models.classifier_training import check_finite

    check_finite("the store's azimuths", ds["azimuth"].values)
    if tuple(ds["cues"].shape[1:]) != model.cue_shape:
        raise InputError(f"the store's cue maps are {tuple(ds['cues'].shape[1:])} but the model takes "
                         f"{model.cue_shape}; render the store with the model's front end and duration")
    if json.loads(ds.attrs["front_end"]) != model.cue_options:
        raise InputError("the store's front-end options differ from the model's; render it with the same options")


def train_cuenet(train_store, out: str | Path, *, test_store=None, model_config: dict[str, Any] | None = None,
                 config=None, progress: bool = False) -> Path:
    """Train a cue network on a cached cue-scene store and write its checkpoint with a card.

    The recipe is :class:`~xai_loc.models.classifier_training.ClassifierConfig`'s (Adam,
    cross-entropy against one-hot targets, or Gaussian targets over azimuth distance with
    ``label_sigma`` degrees, every example once per epoch in a seeded order); the last
    epoch's model is kept and scored once on ``test_store``. The random streams of an epoch
    come from ``(seed, epoch)``, so the same arguments give the same weights (CPU); like every
    family's run (:mod:`xai_loc.models.trainer`) it resumes from ``<out>.state.pt``. The stores must be
    the ``'train'`` and ``'test'`` split where they record one, and share no utterance; ``out`` is checked before
    anything is read.

    Returns
    -------
    Path
        ``out``: float16 weights if they change no test metric noticeably
        (:data:`~xai_loc.models.classifier_training.FP16_TOLERANCE`), else float32; the card
        holds condition, spec of the data, recipe, history, training minutes and test metrics.
    """
    from xai_loc.data.cue_scenes import CueSceneSpec, open_cue_scenes
    from xai_loc.models.checkpoint import build_configured, result_entry
    from xai_loc.models.classifier_training import FP16_TOLERANCE, ClassifierConfig, soft_targets
    from xai_loc.models.trainer import (
        Hooks,
        Schedule,
        cached_batches,
        check_output,
        content_digest,
        determinism,
        fit,
        open_splits,
        save_trained,
        seeded,
        shuffled,
        state_path,
    )

    config = ClassifierConfig() if config is None else config
    out = check_output(out)
    train_ds, test_ds = open_splits(open_cue_scenes, train_store, test_store, ("train",), ("test",),
                                    held_out=("utterance",))
    if config.device != "cpu":  # minutes on one CPU thread: no device code path to keep
        raise InputError(f"device={config.device!r} is not allowed for the cue network; it trains on 'cpu'")
    spec = CueSceneSpec.from_dict(json.loads(train_ds.attrs["spec"]))
    model_config = {"n_samples": spec.n_samples, "front_end": True, "cues": json.loads(train_ds.attrs["front_end"]),
                    **(model_config or {})}
    with seeded(config.seed):
        model = build_configured("cuenet", model_config)
    _check_store(model, train_ds)
    if test_ds is not None:
        _check_store(model, test_ds)
    labels = torch.as_tensor(model.direction_grid.nearest(train_ds["azimuth"].values))
    # a rendered store is its spec's split; a store without a config is pinned by its labels and shape
    data = spec.to_dict() if "config" in train_ds.attrs else content_digest(
        train_ds["cues"].shape, azimuth=train_ds["azimuth"].values, utterance=train_ds["utterance"].values)
    rows = soft_targets("azimuth", float(config.label_sigma))
    hooks = Hooks(picks=shuffled(labels.numel()), forward=after_front_end(model),
                  assemble=cached_batches(lambda: train_ds["cues"].values.astype(np.float32), labels,
                                          torch.device("cpu")),
                  loss=lambda logits, y: nn.functional.cross_entropy(logits, rows[y]))
    with determinism(True, torch.device("cpu")):
        trainer = fit(model, torch.optim.Adam(model.parameters(), lr=config.lr), hooks,
                      Schedule(config.batch_size, config.epochs, config.seed, max_minutes=config.max_minutes),
                      progress=progress, desc="train cuenet", state_file=state_path(out),
                      identity={"arch": "cuenet", "model_config": model.config, "recipe": config.recipe(),
                                "dataset": data, "split": train_ds.attrs.get("split")},
                      defaults={"split": "train"})  # states written before the split was recorded
    model.eval()
    score = None
    dataset = {"spec": spec.to_dict(), "train": {"n_examples": int(labels.numel()),
                                                 "n_utterances": int(np.unique(train_ds["utterance"]).size)}}
    if test_ds is not None:
        def score(net: nn.Module) -> dict[str, Any]:
            metrics = evaluate_cuenet(net, test_ds)
            return result_entry(metrics, metrics.pop("chance"), "uniform random azimuth")

        dataset["test"] = {"n_examples": int(test_ds.sizes["example"]),
                           "n_utterances": int(np.unique(test_ds["utterance"]).size), "utterances_shared_with_train": 0}
    record = trainer.record()
    training = {**record, "config": asdict(config), "minutes": record["wall_seconds"] / 60,
                "recipe": {"loss": "cross-entropy over 72 azimuths", "optimizer": "Adam",
                           "inputs": "cue maps cached by xai_loc.data.cue_scenes (front end fixed)",
                           "kept": "the last epoch's model"}}
    tolerance = {"top1": FP16_TOLERANCE["accuracy"], "azimuth_error": FP16_TOLERANCE["azimuth_error"]}
    return save_trained(model, out, condition={"rooms": ["anechoic"], "snr": list(spec.snr)}, training=training,
                        dataset=dataset, score=score, tolerance=tolerance)
