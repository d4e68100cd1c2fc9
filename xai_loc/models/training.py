"""Training of the end-to-end localizers with the paper's recipe: resumable and deterministic.

Recipe (Comanducci et al., EUSIPCO 2024; brief section 2, the defaults of
:class:`TrainConfig`): MSE on the source position (x, y, z) in metres; each epoch draws
one random window per training source; batches of 100; Adam (lr 1e-3 for LocCNN, 1e-2
for SampleCNN, :data:`DEFAULT_LR`); ReduceLROnPlateau (factor 0.2, patience 100) and early
stopping (patience 200) on the loss over every validation window; the model of the best
validation epoch is kept.

:func:`train` writes an xai-loc checkpoint (:func:`~xai_loc.models.save_checkpoint`)
whose card records the condition, the configuration, the datasets' digests, the loss
history and the validation metrics beside the centroid baseline. After every epoch the
full training state goes atomically to ``<out>.state.pt`` (tensors and plain containers,
readable with ``torch.load(weights_only=True)``); calling :func:`train` again with the
same ``out`` continues from there. The random streams of an epoch (window draws, batch
order, dropout) are derived from ``(seed, epoch)`` alone, so an interrupted and resumed
run gives the same weights, bit for bit on the CPU, as an uninterrupted one.

GPU-resident data and long runs (used by ``scripts/gpu_zoo.py``): the training and
validation sets may be in-memory splits (:func:`xai_loc.data.simulate_windows`) whose window
tensor lives on the training device; batches are then gathered there with ``index_select``
and the loss is summed on the device (one host synchronisation per validation, none per
step). :attr:`TrainConfig.draws_per_epoch` makes an epoch of :func:`train` a "super-epoch"
of several of the paper's draws (one random window per source each) between validations;
the plateau and early-stopping patiences and ``max_epochs`` stay in paper epochs (draws)
and are converted to validations. A hard :attr:`TrainConfig.deadline` ends training at the
next step once it has passed (the unfinished super-epoch is dropped), and
:attr:`TrainConfig.checkpoint_every_s` writes the best-validation checkpoint during the run.
On CUDA Adam runs its fused kernel, and :attr:`TrainConfig.benchmark` lets cuDNN pick its
fastest convolutions. Cards record the device, paper epochs, validations, steps, wall time,
the data's convention and storage, and every deviation from the paper's recipe.

A run may start from the weights of another checkpoint of the same architecture and shape
(``init_from``: fine-tuning to a new condition); those weights are validated first and
compete for best-val as epoch 0, the card records that checkpoint's file digest, condition
and validation loss, and a resumed run must name the same one.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xai_loc.checks import MAX_BATCH, is_integer, is_real, plain
from xai_loc.data.spec import differing_fields, omit_later
from xai_loc.errors import InputError
from xai_loc.models.base import Localizer
from xai_loc.models.checkpoint import (
    build_card,
    file_digest,
    load_model,
    read_card,
    save_checkpoint,
    weights_digest,
)
from xai_loc.models.evaluation import Evaluation, WindowSet, as_window_set, moved_microphone, predict, prefetched
from xai_loc.models.registry import MODELS, build_model
from xai_loc.models.trainer import (
    AUTOCAST,
    Hooks,
    Schedule,
    Trainer,
    Validation,
    autocast_forward,
    check_output,
    check_resumable,
    check_split,
    determinism,
    seeded,
    state_path,
)
from xai_loc.runtime import resolve_device

#: Adam learning rate per architecture when :attr:`TrainConfig.lr` is None (the paper's).
DEFAULT_LR: dict[str, float] = {"loccnn": 1e-3, "samplecnn": 1e-2}
#: :class:`TrainConfig` fields that may change when a run resumes; the others must match.
RUN_FIELDS = frozenset({"max_epochs", "max_minutes", "device", "eval_batch_size", "preload", "deadline",
                        "checkpoint_every_s", "save_state", "benchmark"})
#: Recipe fields added after version 1 of the training state, with the value that older states mean; at that
#: value :func:`~xai_loc.data.spec.omit_later` leaves them out of a run's identity, so that older states still resume,
#: and a state or run that leaves one out is compared as having it (:func:`~xai_loc.models.trainer.differences`).
LATER_RECIPE_FIELDS = {"draws_per_epoch": 1, "autocast": None}
#: Per-epoch series kept in the training state.
HISTORY = ("train_loss", "val_loss", "val_mae", "lr", "seconds", "draws", "steps")
#: Most epochs listed in a checkpoint card's loss history (the state keeps all).
CARD_HISTORY_POINTS = 100
#: Fixed parts of the recipe, recorded in the card.
RECIPE = {
    "loss": "MSE of (x, y, z) in metres", "optimizer": "Adam",
    "scheduler": "ReduceLROnPlateau on the validation loss", "early_stopping": "on the validation loss",
    "sampling": "one random window per training source per epoch; every validation window",
    "kept": "the model of the epoch with the lowest validation loss",
}


#: Field -> (test, what is allowed), applied by :class:`TrainConfig` and, read from the command line, by ``xai-loc
#: train``'s options.
CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "batch_size": (lambda v: is_integer(v) and 2 <= v <= MAX_BATCH, f"an integer in [2, {MAX_BATCH}]"),
    "lr": (lambda v: v is None or (is_real(v) and v > 0), "None or a positive number"),
    "weight_decay": (lambda v: is_real(v) and v >= 0, "a number >= 0"),
    "lr_factor": (lambda v: is_real(v) and 0 < v < 1, "a number in (0, 1)"),
    "lr_patience": (lambda v: is_integer(v) and v >= 0, "an integer >= 0"),
    "min_lr": (lambda v: is_real(v) and v >= 0, "a number >= 0"),
    "early_stop_patience": (lambda v: is_integer(v) and v >= 1, "a positive integer"),
    "max_epochs": (lambda v: is_integer(v) and v >= 1, "a positive integer"),
    "max_minutes": (lambda v: v is None or (is_real(v) and v > 0), "None or a positive number of minutes"),
    "seed": (lambda v: is_integer(v) and v >= 0, "an integer >= 0"),
    # a device this machine lacks or a name torch would not take: resolve_device's own line
    "device": (lambda v: isinstance(v, str) and resolve_device(v) is not None, "'cpu', 'cuda' or 'cuda:N'"),
    "eval_batch_size": (lambda v: is_integer(v) and 1 <= v <= MAX_BATCH, f"an integer in [1, {MAX_BATCH}]"),
    "preload": (lambda v: isinstance(v, bool), "True or False"),
    "deterministic": (lambda v: isinstance(v, bool), "True or False"),
    "draws_per_epoch": (lambda v: is_integer(v) and v >= 1, "a positive integer"),
    "deadline": (lambda v: v is None or (is_real(v) and v > 0), "None or a time in seconds since the epoch"),
    "checkpoint_every_s": (lambda v: v is None or (is_real(v) and v > 0), "None or a positive number of seconds"),
    "save_state": (lambda v: isinstance(v, bool), "True or False"),
    "benchmark": (lambda v: isinstance(v, bool), "True or False"),
    "autocast": (lambda v: v is None or v in AUTOCAST, f"None or {' or '.join(map(repr, AUTOCAST))}"),
}


@dataclass(frozen=True)
class TrainConfig:
    """Training recipe (defaults: the paper's) and run settings.

    Parameters
    ----------
    batch_size
        Windows per optimizer step.
    lr
        Adam learning rate; None takes :data:`DEFAULT_LR` of the architecture.
    weight_decay
        Adam's L2 penalty.
    lr_factor, lr_patience
        ReduceLROnPlateau on the validation loss (torch's, with its default threshold; the brief
        names no other): multiply the learning rate by ``lr_factor`` when more than ``lr_patience`` epochs
        passed without an improvement of more than 1e-4 of the best loss (relative); early
        stopping and the kept model count any lower loss as an improvement.
    min_lr
        Lower bound of the learning rate.
    early_stop_patience
        Stop after this many epochs without a lower validation loss.
    max_epochs
        Stop after this many epochs in all (early stopping usually ends training first).
    max_minutes
        Wall-clock budget of one call of :func:`train`: it stops at the epoch boundary
        before an epoch that would overrun it (the first epoch of a run always runs),
        with the state saved for a later call. None: no budget.
    seed
        Seeds the initial weights, the window draws, the batch order and dropout.
    device
        'cpu', 'cuda' or 'cuda:N', present on this machine (:func:`~xai_loc.runtime.resolve_device`, when the
        configuration is made).
    eval_batch_size
        Windows per forward pass during validation.
    preload
        Hold both stores in memory (RAM) instead of reading windows on demand.
    deterministic
        Use torch's deterministic kernels where it has them (matters on CUDA; CPU
        training is deterministic regardless).
    draws_per_epoch
        Paper epochs (draws of one random window per training source) per epoch of
        :func:`train`, i.e. between validations ("super-epochs"; 1: the paper's schedule).
        ``lr_patience``, ``early_stop_patience`` and ``max_epochs`` count paper epochs and
        are converted (``ceil(patience / draws_per_epoch)`` validations; the last super-epoch
        is cut to ``max_epochs``).
    deadline
        Wall-clock time (``time.time()``, seconds since the epoch) by which training ends:
        no super-epoch starts that would not finish before it, and a running one is dropped at
        the next step once it has passed (the first epoch of a run without an init checkpoint
        always completes, so that there is a model to keep). None: no deadline.
    checkpoint_every_s
        Also write the best-validation checkpoint during the run, at most this often (seconds),
        when a better model was found. None: only at the end.
    save_state
        Keep the resumable training state beside the checkpoint (``<out>.state.pt``).
    benchmark
        Let cuDNN time and pick its fastest convolution algorithms (``cudnn.benchmark``; only
        when ``deterministic`` is False).
    autocast
        Mixed precision of the training steps: 'bfloat16' runs the forward pass under
        ``torch.autocast`` (float32 weights, optimizer and loss; validation stays float32).
        2x per step measured on an AVX512-BF16 CPU; slower where the CPU or GPU has no
        bfloat16 units. None: float32 throughout (the paper's).

    ``max_epochs``, ``max_minutes``, ``device``, ``eval_batch_size``, ``preload``, ``deadline``,
    ``checkpoint_every_s``, ``save_state`` and ``benchmark`` (:data:`RUN_FIELDS`) may change when
    a run is resumed; the other fields may not.
    """

    batch_size: int = 100
    lr: float | None = None
    weight_decay: float = 0.0
    lr_factor: float = 0.2
    lr_patience: int = 100
    min_lr: float = 0.0
    early_stop_patience: int = 200
    max_epochs: int = 5000
    max_minutes: float | None = None
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 100
    preload: bool = False
    deterministic: bool = True
    draws_per_epoch: int = 1
    deadline: float | None = None
    checkpoint_every_s: float | None = None
    save_state: bool = True
    benchmark: bool = False
    autocast: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            test, allowed = CHECKS[f.name]
            value = getattr(self, f.name)
            if not test(value):
                raise InputError(f"{f.name}={value!r} is not allowed; use {allowed}")
            object.__setattr__(self, f.name, plain(value))  # NumPy numbers as Python ones: cards are JSON

    def learning_rate(self, arch: str) -> float:
        """The Adam learning rate for ``arch``: :attr:`lr`, or the architecture's default."""
        if self.lr is not None:
            return float(self.lr)
        if arch not in DEFAULT_LR:
            raise InputError(f"architecture {arch!r} has no default learning rate; give lr "
                             f"(defaults exist for {', '.join(sorted(DEFAULT_LR))})")
        return DEFAULT_LR[arch]

    def to_dict(self, arch: str) -> dict[str, Any]:
        """All fields, with the learning rate resolved for ``arch`` (JSON-able)."""
        return {**asdict(self), "lr": self.learning_rate(arch)}

    def recipe(self, arch: str) -> dict[str, Any]:
        """The fields that decide the result (all but :data:`RUN_FIELDS`), lr resolved
        (:data:`LATER_RECIPE_FIELDS` at their old meaning left out)."""
        return omit_later({k: v for k, v in self.to_dict(arch).items() if k not in RUN_FIELDS}, LATER_RECIPE_FIELDS)

    def validations(self, paper_epochs: int) -> int:
        """Validations (epochs of :func:`train`) that span ``paper_epochs`` draws: ``ceil(paper_epochs / draws)``."""
        return math.ceil(paper_epochs / self.draws_per_epoch)


#: What the training and the validation data must share where both record it (microphone positions too, within
#: :data:`~xai_loc.models.evaluation.MIC_TOLERANCE`): key of :meth:`WindowSet.describe` -> what the message calls it.
RECORDING = {"fs": "sample rate (Hz)", "convention": "simulation convention"}


def _check_stores(train_set: WindowSet, val_set: WindowSet) -> None:
    check_split(train_set.attrs, ("train",), f"the training data ({train_set.name})")
    check_split(val_set.attrs, ("val",), f"the validation data ({val_set.name})")
    if train_set.identity == val_set.identity:
        raise InputError(f"the training and validation data are the same ({train_set.name}); validate on held-out "
                         "sources (the val split)")
    if train_set.n_sources < 2:
        raise InputError(f"{train_set.name} holds {train_set.n_sources} source(s); training needs at least 2")
    if (train_set.n_mics, train_set.n_samples) != (val_set.n_mics, val_set.n_samples):
        raise InputError(
            f"training store {train_set.name} has {train_set.n_mics} mics x {train_set.n_samples} samples but "
            f"validation store {val_set.name} has {val_set.n_mics} mics x {val_set.n_samples} samples")
    if None in train_set.condition.values():
        raise InputError(f"{train_set.name} lacks the t60/snr attrs; the checkpoint card needs the condition")
    if train_set.condition != val_set.condition:
        raise InputError(f"training store {train_set.name} is condition {train_set.condition} but "
                         f"validation store {val_set.name} is {val_set.condition}; use stores of one condition")
    # validation on data of another recording would pick the kept model by it: refused where both record it
    records = train_set.describe(), val_set.describe()
    for key, what in RECORDING.items():
        ours, theirs = (record[key] for record in records)
        if ours is not None and theirs is not None and ours != theirs:
            raise InputError(f"training store {train_set.name} has {what} {ours!r} but validation store "
                             f"{val_set.name} has {theirs!r}; use stores of one scene")
    if train_set.mic_position is not None and val_set.mic_position is not None:
        i = moved_microphone(train_set.mic_position, val_set.mic_position)
        if i is not None:
            at = [", ".join(f"{v:g}" for v in data.mic_position[i]) for data in (train_set, val_set)]
            raise InputError(f"training store {train_set.name} has microphone {i} at ({at[0]}) m but validation "
                             f"store {val_set.name} has it at ({at[1]}) m; use stores of one array")


#: Per-epoch series listed in a checkpoint card's history.
CARD_SERIES = ("train_loss", "val_loss", "val_mae", "lr")


def _history_summary(history: dict[str, list[float]], best_epoch: int,
                     points: int | None = CARD_HISTORY_POINTS) -> dict[str, list]:
    """At most ``points`` evenly spread epochs (first, best and last included; a best epoch 0, the
    init checkpoint of a fine-tuning run, has no training epoch to list); ``paper_epoch`` counts draws."""
    n = len(history["train_loss"])
    spread = np.linspace(0, n - 1, n if points is None else min(n, points)).round().astype(int)
    keep = np.unique(np.append(spread, best_epoch - 1) if best_epoch > 0 else spread)
    paper = np.cumsum(history["draws"]).astype(int)
    return {"epoch": (keep + 1).tolist(), "paper_epoch": paper[keep].tolist(),
            **{k: [history[k][i] for i in keep] for k in CARD_SERIES}}


#: How an architecture departs from the paper's network in training, for the card's ``training.deviations``.
ARCH_DEVIATIONS: dict[str, str] = {
    "loccnn": "dropout after fc1 element-wise (torch.nn.Dropout) instead of the paper's Dropout1d on the "
              "[batch, 500] features, which drops whole examples",
    "samplecnn": "dropout after dense1 element-wise (torch.nn.Dropout) instead of the paper's Dropout1d on the "
                 "[batch, 256] features, which drops whole examples",
}
#: The paper's recipe as :class:`TrainConfig` fields (lr per architecture: :data:`DEFAULT_LR`).
PAPER_RECIPE = {"batch_size": 100, "weight_decay": 0.0, "lr_factor": 0.2, "lr_patience": 100, "min_lr": 0.0,
                "early_stop_patience": 200, "draws_per_epoch": 1}


#: What identity keys of a training state stand for where the state lacks them (the ``defaults`` of
#: :class:`~xai_loc.models.trainer.Trainer`).
STATE_DEFAULTS = {"recipe": LATER_RECIPE_FIELDS}


def _run_identity(arch: str, model: Localizer, config: TrainConfig, init: str | None,
                  datasets: dict[str, str] | None = None) -> dict[str, Any]:
    """What a resumed run of ``arch`` must match: architecture, constructor arguments of ``model``, recipe, the file
    digest of the init checkpoint (None: a seeded initialization) and, once they are open, the ``datasets``
    (:func:`_data_identity`)."""
    identity = {"arch": arch, "model_config": model.config, "recipe": config.recipe(arch), "init": init}
    return identity if datasets is None else {**identity, "datasets": datasets}


def _data_identity(train_set: WindowSet, val_set: WindowSet) -> dict[str, str]:
    """The ``datasets`` of a run's identity: :attr:`WindowSet.identity` of its training and validation data."""
    return {"train": train_set.identity, "val": val_set.identity}


def _card_identity(card: dict[str, Any], datasets: dict[str, str] | None = None) -> dict[str, Any]:
    """The :func:`_run_identity` of the run that wrote a checkpoint's ``card``; given a run's ``datasets``, with
    the data digests the card records (``dataset.train.digest``, ``dataset.val.digest``), the run's own standing in
    where it records none (data without a configuration, whose identity no card records)."""
    training = card.get("training") or {}
    config = training.get("config") or {}
    identity = {"arch": card.get("architecture"), "model_config": card.get("config"),
                "recipe": omit_later({k: v for k, v in config.items() if k not in RUN_FIELDS}, LATER_RECIPE_FIELDS),
                "init": (training.get("init_from") or {}).get("sha256")}
    if datasets is None:
        return identity
    records = card.get("dataset") or {}
    recorded = {split: records[split].get("digest") for split in datasets if isinstance(records.get(split), dict)}
    return {**identity, "datasets": {split: recorded.get(split) or value for split, value in datasets.items()}}


def _check_replaced(out: Path, identity: dict[str, Any]) -> None:
    """Refuse (one line) to replace an existing ``out`` that has no saved state (one is checked by
    :func:`~xai_loc.models.trainer.check_resumable`) unless it is a checkpoint that a run of ``identity`` wrote:
    the same architecture, model configuration, recipe and init checkpoint and, where ``identity`` holds them, the
    same datasets where its card records their digests, as a state is compared."""
    if not out.exists() or state_path(out).exists():
        return
    try:
        card = read_card(out)
    except InputError:
        raise InputError(f"{out} exists and is not an xai-loc checkpoint; remove it or write to another out") from None
    found = [f"{key}: {old!r} in it, {value!r} now" for key, old, value in
             differing_fields(_card_identity(card, identity.get("datasets")), identity, STATE_DEFAULTS,
                              [*identity, *STATE_DEFAULTS])]
    if found:
        raise InputError(f"{out} is a checkpoint of another training run ({'; '.join(found)}); remove it or write "
                         "to another out")


class _Run:
    """The multichannel family's part of a run: hooks (window draws, batches, validation) and the card."""

    def __init__(self, arch: str, train_set: WindowSet, val_set: WindowSet, config: TrainConfig,
                 device: torch.device, state_file: Path, init_from: Path | None = None,
                 out: Path | None = None, full_log: bool = False, notes: tuple[str, ...] = ()) -> None:
        self.arch, self.train_set, self.val_set, self.config = arch, train_set, val_set, config
        self.device, self.out, self.full_log, self.notes = device, out, full_log, tuple(notes)
        with seeded(config.seed):
            model: Localizer = build_model(arch, n_mics=train_set.n_mics, n_samples=train_set.n_samples)
        init = None if init_from is None else _initialize(model, init_from, train_set)
        for windows in (train_set, val_set):
            windows.check_model(model)
        model.to(device)
        # the fused kernel (one launch for all parameters) on CUDA; torch's default elsewhere
        fused = {"fused": True} if device.type == "cuda" else {}
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate(arch),
                                     weight_decay=config.weight_decay, **fused)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.lr_factor, patience=config.validations(config.lr_patience),
            min_lr=config.min_lr)
        self.groups = train_set.windows_by_source()
        hooks = Hooks(picks=self._epoch_picks, assemble=self._batches,
                      forward=model if config.autocast is None else autocast_forward(model, config.autocast, device),
                      loss=nn.functional.mse_loss, validate=self._validate, series=("val_loss", "val_mae"))
        schedule = Schedule(batch_size=config.batch_size, max_epochs=config.max_epochs, seed=config.seed,
                            draws_per_epoch=config.draws_per_epoch, early_stop_patience=config.early_stop_patience,
                            max_minutes=config.max_minutes, deadline=config.deadline,
                            checkpoint_every_s=config.checkpoint_every_s)
        identity = _run_identity(arch, model, config, None if init is None else init["sha256"],
                                 _data_identity(train_set, val_set))
        self.trainer = Trainer(model, optimizer, hooks, schedule, scheduler=scheduler, identity=identity,
                               defaults=STATE_DEFAULTS, state_file=state_file,
                               save_state=config.save_state, extra={"init_record": init},
                               writer=None if out is None else lambda: self.write_checkpoint(out))
        if init is not None and not self.trainer.resumed:  # the starting weights compete as epoch 0
            init["val_loss"] = self.trainer.keep_start().criterion

    @property
    def init(self) -> dict[str, Any] | None:
        """Provenance of the init checkpoint (with its epoch-0 validation loss), or None."""
        return self.trainer.extra["init_record"]

    # -- hooks ------------------------------------------------------------------------------------
    def _epoch_picks(self, rng: np.random.Generator) -> np.ndarray:
        """One random window per training source, in random order."""
        order, starts, counts = self.groups
        return rng.permutation(order[starts + rng.integers(counts)])

    def _batches(self, parts: list[np.ndarray]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(windows, targets)`` of each batch on the training device.

        In-memory windows are gathered on their device (all indices of the epoch copied there
        once); stores are read in a background thread.
        """
        data = self.train_set
        if data.tensor is not None:
            flat = torch.from_numpy(np.concatenate(parts)).to(data.tensor.device)
            ends = np.cumsum([len(p) for p in parts])
            for start, end in zip(np.concatenate([[0], ends[:-1]]), ends, strict=True):
                yield data.take(flat[int(start) : int(end)], self.device)
            return
        for idx, x in zip(parts, prefetched(data.read, parts), strict=True):
            yield torch.from_numpy(x).to(self.device), torch.from_numpy(data.positions[idx]).float().to(self.device)

    def _validate(self) -> Validation:
        """The current model on every validation window; the criterion is the MSE."""
        val = self.val_set
        pred = predict(self.trainer.model, val, self.config.eval_batch_size, self.device, False, desc="validate")
        evaluation = Evaluation(pred, val.positions, val.source_id, val.window_index)
        metrics = evaluation.metrics
        return Validation(metrics["mse"], {"val_loss": metrics["mse"], "val_mae": metrics["mae"]},
                          evaluation.summary)

    # -- result -----------------------------------------------------------------------------------
    def deviations(self) -> list[str]:
        """How this run departs from the paper's recipe (brief, section 2), one sentence each."""
        c, run, out = self.config, self.trainer, []
        paper = {**PAPER_RECIPE, "lr": DEFAULT_LR.get(self.arch)}
        mine = c.to_dict(self.arch)
        changed = [f"{k} {mine[k]!r} (paper {v!r})" for k, v in paper.items() if k != "draws_per_epoch"
                   and v is not None and mine[k] != v]
        if changed:
            out.append("recipe: " + ", ".join(changed))
        if c.draws_per_epoch > 1:
            out.append(f"validation every {c.draws_per_epoch} paper epochs (super-epochs) instead of every epoch: "
                       f"plateau patience {c.lr_patience} and early-stopping patience {c.early_stop_patience} paper "
                       f"epochs counted as {c.validations(c.lr_patience)} and "
                       f"{c.validations(c.early_stop_patience)} validations, the best model chosen among validated "
                       "super-epochs")
        short = [i + 1 for i, d in enumerate(run.history["draws"][:-1]) if d < c.draws_per_epoch]
        if short:  # resumable runs match an uninterrupted one only where every boundary lines up
            out.append(f"super-epoch {', '.join(map(str, short))} drew fewer than {c.draws_per_epoch} paper epochs "
                       "(an earlier call's max_epochs cut it short and the run was then extended): validations "
                       "fall at other paper epochs than in one uninterrupted run")
        if run.diverged is not None:
            out.append(f"{run.diverged}: stopped there, the best model validated before it is kept")
        if run.stopped not in (None, "early_stopping"):
            out.append(f"stopped by {run.stopped} after {run.paper_epochs} paper epochs, before early stopping "
                       "(not converged in the paper's sense)")
        for split, data in (("training", self.train_set), ("validation", self.val_set)):
            if data.tensor is not None and data.tensor.dtype != torch.float32:
                computed = "float32" if c.autocast is None or split == "validation" else c.autocast
                out.append(f"{split} windows held in {str(data.tensor.dtype).removeprefix('torch.')} on "
                           f"{data.tensor.device} (rounding about -66 dB of the signal) and computed in {computed}")
        if c.autocast is not None:
            out.append(f"training steps in {c.autocast} mixed precision (torch.autocast: convolutions and matrix "
                       "products rounded to it; weights, optimizer, loss and validation in float32)")
        if self.init is not None:
            out.append(f"started from checkpoint {self.init['file']} instead of a seeded initialization")
        if self.arch in ARCH_DEVIATIONS:
            out.append(ARCH_DEVIATIONS[self.arch])
        return out

    def implementation(self) -> dict[str, Any]:
        """Settings that change the rounding, not the recipe."""
        cuda = self.device.type == "cuda"
        # what the optimizer holds: a resumed state brings its own param groups (a CPU state is not fused)
        fused = bool(self.trainer.optimizer.param_groups[0].get("fused"))
        return {"optimizer": "Adam (fused)" if fused else "Adam", "deterministic": self.config.deterministic,
                "cudnn_benchmark": bool(cuda and self.config.benchmark and not self.config.deterministic),
                "tf32": {"matmul": bool(cuda and torch.backends.cuda.matmul.allow_tf32),
                         "cudnn": bool(cuda and torch.backends.cudnn.allow_tf32)},
                "data": "GPU-resident tensor, batches by index_select" if self.train_set.tensor is not None
                        and self.train_set.tensor.device.type == "cuda" else
                        ("in-memory tensor" if self.train_set.tensor is not None else "dataset store")}

    def card(self) -> dict[str, Any]:
        """The checkpoint card of the kept model (``full_log``: every epoch's losses and seconds too)."""
        run = self.trainer
        h = run.history
        paper = np.cumsum(h["draws"]).astype(int)
        best_paper = int(paper[run.best_epoch - 1]) if run.best_epoch > 0 else 0
        training = {
            **run.record(), "config": self.config.to_dict(self.arch), "recipe": RECIPE, "best_epoch": best_paper,
            "best_validation": run.best_epoch, "draws_per_epoch": self.config.draws_per_epoch,
            "converged": run.stopped == "early_stopping", "best_val_loss": run.best_val_loss,
            # ``lr``: the last epoch's rate; ``next_lr``: after the scheduler's last step (where a run continues)
            "final": {**{k: h[k][-1] for k in ("train_loss", "val_loss", "lr")},
                      "next_lr": run.optimizer.param_groups[0]["lr"]} if h["train_loss"] else None,
            "history": _history_summary(h, run.best_epoch), "implementation": self.implementation(),
            "deviations": self.deviations() + list(self.notes),
        }
        if run.dropped_steps is not None:
            training["dropped_steps"] = run.dropped_steps
        if self.full_log:
            training["log"] = {"epoch": list(range(1, run.epoch + 1)), "paper_epoch": paper.tolist(),
                               **{k: list(h[k]) for k in HISTORY}}
        if self.init is not None:
            training["init_from"] = self.init
        return build_card(condition=self.train_set.condition, training=training,
                          dataset={"train": self.train_set.describe(), "val": self.val_set.describe()},
                          val=run.best_summary)

    def write_checkpoint(self, out: Path) -> Path:
        """Save the kept model with its card at ``out``."""
        model = build_model(self.arch, **self.trainer.model.config)
        model.load_state_dict(self.trainer.best_model)
        return save_checkpoint(model, out, self.card())


def check_training(arch: str, out: str | Path, shape: tuple[int, int] | None = None,
                   init_from: str | Path | None = None, config: TrainConfig | None = None,
                   datasets: dict[str, str] | None = None) -> None:
    """What :func:`train` refuses about its arguments, checked before any data is read: the CLI
    calls it with the scene's window ``shape`` (microphones, samples) and the ``config`` before simulating
    the data (hours at the paper's size).

    Raises :class:`~xai_loc.errors.InputError` for an ``out`` not ending in ``.safetensors`` or whose
    folder cannot be written (:func:`~xai_loc.models.trainer.check_output`), an unregistered
    architecture, windows it cannot take, an ``init_from`` checkpoint that is ``out`` itself (the run
    would overwrite its own parent) or of another architecture or shape, and (given ``shape`` and ``config``)
    a saved state of ``out`` of another architecture, model configuration, recipe or init checkpoint
    (:func:`~xai_loc.models.trainer.check_resumable`), and, where ``out`` has no saved state, an existing ``out``
    that is not a checkpoint of such a run (:func:`_check_replaced`). The data are compared too once :func:`train`
    has opened them and passes their ``datasets`` (:func:`_data_identity`).
    """
    check_output(out)
    if init_from is not None and Path(init_from).resolve() == Path(out).resolve():
        raise InputError(f"init_from {init_from} is the checkpoint this run writes (out); fine-tune from a copy or "
                         "write to another out")
    if arch not in MODELS:
        raise InputError(f"unknown model architecture {arch!r}; allowed: {', '.join(sorted(MODELS))}")
    if shape is None:
        return
    model = build_model(arch, n_mics=shape[0], n_samples=shape[1])
    if init_from is not None:
        _init_source(model, Path(init_from))
    if config is not None:
        identity = _run_identity(arch, model, config, None if init_from is None else file_digest(init_from),
                                 datasets)
        check_resumable(state_path(out), identity, STATE_DEFAULTS)
        _check_replaced(Path(out), identity)


def _init_source(model: Localizer, path: Path) -> Localizer:
    """The model of checkpoint ``path``, refused unless it is ``model``'s architecture with its arguments."""
    source = load_model(path)
    if (source.arch_name, source.config) != (model.arch_name, model.config):
        raise InputError(f"init checkpoint {path} holds {source.arch_name} {source.config}; this run trains "
                         f"{model.arch_name} {model.config}")
    return source


def _initialize(model: Localizer, path: Path, data: WindowSet) -> dict[str, Any]:
    """Copy the weights of checkpoint ``path`` into ``model``; return its provenance for the card.

    The checkpoint must hold the same architecture with the same constructor arguments, trained on data of the
    sample rate and microphone array of the training ``data`` (:meth:`WindowSet.check_card`).
    """
    source = _init_source(model, path)
    card = read_card(path)
    data.check_card(card, f"init checkpoint {path}")
    model.load_state_dict({k: v.float() for k, v in source.state_dict().items()})
    training = card.get("training") or {}
    # the file's digest changes with its card; the weights' digest names the parent's weights for good
    record = {"file": Path(path).name, "sha256": file_digest(path), "weights_sha256": weights_digest(path),
              "condition": card.get("condition"), "epochs": training.get("epochs")}
    if training.get("init_from"):
        record["init_from"] = training["init_from"]  # the parent's own parent, and so on: the whole lineage
    return record


def train(arch: str, train_store, val_store, out: str | Path, config: TrainConfig | None = None,
          progress: bool = True, init_from: str | Path | None = None, *, notes: tuple[str, ...] | list[str] = (),
          full_log: bool = False) -> Path:
    """Train a registered localizer on a dataset store; resume if ``out`` has a saved state.

    Parameters
    ----------
    arch
        Registered architecture name ('loccnn', 'samplecnn'); built for the stores'
        microphone count and window length.
    train_store, val_store
        Dataset stores of one condition (paths, ``xarray.Dataset``, in-memory splits from
        :func:`xai_loc.data.simulate_windows` or
        :class:`~xai_loc.models.evaluation.WindowSet`), e.g. from
        :func:`xai_loc.data.simulate_dataset`. In-memory splits on the training device are
        trained on where they are.
    out
        The ``.safetensors`` checkpoint to write; the training state lives beside it in
        ``<out>.state.pt`` (:func:`state_path`) unless ``config.save_state`` is False.
    config
        Recipe and run settings (default: the paper's recipe on the CPU).
    progress
        Show progress bars (epochs, with train/val loss; batches).
    init_from
        An xai-loc checkpoint of the same architecture and shape whose weights start the run
        instead of a seeded initialization (fine-tuning); recorded in the card. A resumed run
        must give the same file.
    notes
        Further departures from the paper's recipe (e.g. of the data) for the card's
        ``training.deviations``, after those the run knows itself.
    full_log
        Also record every epoch's losses, learning rate, seconds, draws and steps in the card
        (``training.log``; the ``history`` lists at most :data:`CARD_HISTORY_POINTS` epochs).

    Returns
    -------
    Path
        ``out``, holding the best-validation model with its card. It is written when a stop
        rule ends the call (early stopping, ``max_epochs``, the ``max_minutes`` budget or the
        ``deadline``), and during the run if ``config.checkpoint_every_s`` is set; the card's
        ``training.stopped`` says which (None in a checkpoint written during the run).

    Raises
    ------
    InputError
        Bad configuration or stores (a training store that records another split than 'train', a
        validation store that records another than 'val', the same data as both, shapes that differ,
        too few sources), an ``out`` whose folder cannot be written or an ``init_from`` that is ``out``
        (both before any data is read), a saved state of another architecture, recipe
        (:data:`LATER_RECIPE_FIELDS` included), dataset (a store without a config is told by its labels:
        :attr:`WindowSet.identity`) or init checkpoint, an existing ``out`` without a saved state that such a run
        wrote (its data compared where its card records their digests), an init checkpoint of another architecture or
        shape or trained on data of another sample rate or microphone array, or a diverging loss.
    """
    started = time.monotonic()
    config = TrainConfig() if config is None else config
    out = Path(out)
    check_training(arch, out, init_from=init_from)  # the init checkpoint's shape is checked once the data is open
    config.learning_rate(arch)  # an architecture without a default lr fails before any reading
    device = resolve_device(config.device)
    train_set, val_set = (as_window_set(s, config.preload) for s in (train_store, val_store))
    _check_stores(train_set, val_set)
    check_training(arch, out, (train_set.n_mics, train_set.n_samples), init_from, config,  # state and out, now shaped
                   _data_identity(train_set, val_set))
    with determinism(config.deterministic, device, config.benchmark):
        run = _Run(arch, train_set, val_set, config, device, state_path(out),
                   None if init_from is None else Path(init_from), out=out, full_log=full_log, notes=tuple(notes))
        run.trainer.fit(progress, started, desc=f"train {arch}")
    return run.write_checkpoint(out)
