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

import contextlib
import math
import numbers
import os
import pickle
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xai_loc.errors import InputError
from xai_loc.io import atomic_path
from xai_loc.models.base import Localizer
from xai_loc.models.checkpoint import file_digest, load_model, read_card, save_checkpoint
from xai_loc.models.evaluation import Evaluation, WindowSet, as_window_set, predict, prefetched
from xai_loc.models.registry import MODELS, build_model
from xai_loc.runtime import resolve_device

#: Adam learning rate per architecture when :attr:`TrainConfig.lr` is None (the paper's).
DEFAULT_LR: dict[str, float] = {"loccnn": 1e-3, "samplecnn": 1e-2}
#: :class:`TrainConfig` fields that may change when a run resumes; the others must match.
RUN_FIELDS = frozenset({"max_epochs", "max_minutes", "device", "eval_batch_size", "preload", "deadline",
                        "checkpoint_every_s", "save_state", "benchmark"})
#: Recipe fields added after version 1 of the training state, with the value that older states mean;
#: at that value they are left out of a run's identity, so that older states still resume.
LATER_RECIPE_FIELDS = {"draws_per_epoch": 1}
#: ``format`` and ``version`` of the training-state files.
STATE_FORMAT, STATE_VERSION = "xai-loc-train-state", 1
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


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


#: Field -> (test, what is allowed), applied by :class:`TrainConfig`.
CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "batch_size": (lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
    "lr": (lambda v: v is None or (_is_real(v) and v > 0), "None or a positive number"),
    "weight_decay": (lambda v: _is_real(v) and v >= 0, "a number >= 0"),
    "lr_factor": (lambda v: _is_real(v) and 0 < v < 1, "a number in (0, 1)"),
    "lr_patience": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "min_lr": (lambda v: _is_real(v) and v >= 0, "a number >= 0"),
    "early_stop_patience": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "max_epochs": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "max_minutes": (lambda v: v is None or (_is_real(v) and v > 0), "None or a positive number of minutes"),
    "seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "device": (lambda v: isinstance(v, str), "'cpu', 'cuda' or 'cuda:N'"),
    "eval_batch_size": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "preload": (lambda v: isinstance(v, bool), "True or False"),
    "deterministic": (lambda v: isinstance(v, bool), "True or False"),
    "draws_per_epoch": (lambda v: _is_int(v) and v >= 1, "a positive integer"),
    "deadline": (lambda v: v is None or (_is_real(v) and v > 0), "None or a time in seconds since the epoch"),
    "checkpoint_every_s": (lambda v: v is None or (_is_real(v) and v > 0), "None or a positive number of seconds"),
    "save_state": (lambda v: isinstance(v, bool), "True or False"),
    "benchmark": (lambda v: isinstance(v, bool), "True or False"),
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
        ReduceLROnPlateau on the validation loss: multiply the learning rate by
        ``lr_factor`` after ``lr_patience`` epochs without improvement.
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
        'cpu', 'cuda' or 'cuda:N'.
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

    def __post_init__(self) -> None:
        for f in fields(self):
            test, allowed = CHECKS[f.name]
            value = getattr(self, f.name)
            if not test(value):
                raise InputError(f"{f.name}={value!r} is not allowed; use {allowed}")

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
        return {k: v for k, v in self.to_dict(arch).items()
                if k not in RUN_FIELDS and not (k in LATER_RECIPE_FIELDS and LATER_RECIPE_FIELDS[k] == v)}

    def validations(self, paper_epochs: int) -> int:
        """Validations (epochs of :func:`train`) that span ``paper_epochs`` draws: ``ceil(paper_epochs / draws)``."""
        return math.ceil(paper_epochs / self.draws_per_epoch)


def state_path(out: str | Path) -> Path:
    """Where :func:`train` keeps the training state of checkpoint ``out``: ``<out>.state.pt``."""
    out = Path(out)
    return out.with_name(out.name + ".state.pt")


def _cuda_indices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global generators seeded by ``seed``, restoring them afterwards."""
    with torch.random.fork_rng(devices=_cuda_indices()):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _determinism(enabled: bool, device: torch.device, benchmark: bool = False) -> Iterator[None]:
    """Ask for deterministic kernels (warning where torch has none), or else for cuDNN's autotuner
    (``benchmark``), and restore the settings afterwards."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    if enabled:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    elif benchmark:
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]


def _train_batches(picks: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Split the epoch's windows into batches (each sorted, for reading); a last batch of one
    window joins the one before (BatchNorm needs two)."""
    parts = [picks[s : s + batch_size] for s in range(0, len(picks), batch_size)]
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2:] = [np.concatenate(parts[-2:])]
    return [np.sort(p) for p in parts]


def _check_stores(train_set: WindowSet, val_set: WindowSet) -> None:
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


def _differences(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """``key: <found> in the state, <expected> now`` for every (nested) value that differs."""
    out = []
    for key, value in expected.items():
        old = found.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            out += [f"{key}.{d}" for d in _differences(value, old)]
        elif value != old:
            out.append(f"{key}: {old!r} in the state, {value!r} now")
    return out


def _device_name(device: torch.device) -> str:
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


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


class _DeadlineReached(Exception):
    """Raised between two steps once :attr:`TrainConfig.deadline` has passed."""


def _now() -> float:
    """The clock of :attr:`TrainConfig.deadline` (``time.time()``)."""
    return time.time()


#: The paper's recipe as :class:`TrainConfig` fields (lr per architecture: :data:`DEFAULT_LR`).
PAPER_RECIPE = {"batch_size": 100, "weight_decay": 0.0, "lr_factor": 0.2, "lr_patience": 100, "min_lr": 0.0,
                "early_stop_patience": 200, "draws_per_epoch": 1}


class _Run:
    """Model, optimizer, scheduler and bookkeeping of one training run."""

    def __init__(self, arch: str, train_set: WindowSet, val_set: WindowSet, config: TrainConfig,
                 device: torch.device, state_file: Path, init_from: Path | None = None,
                 out: Path | None = None, full_log: bool = False, notes: tuple[str, ...] = ()) -> None:
        self.arch, self.train_set, self.val_set, self.config = arch, train_set, val_set, config
        self.device, self.state_file, self.out = device, state_file, out
        self.full_log, self.notes = full_log, tuple(notes)
        with _seeded(config.seed):
            self.model: Localizer = build_model(arch, n_mics=train_set.n_mics, n_samples=train_set.n_samples)
        self.init = None if init_from is None else _initialize(self.model, init_from)
        for windows in (train_set, val_set):
            windows.check_model(self.model)
        self.model.to(device)
        # the fused kernel (one launch for all parameters) on CUDA; torch's default elsewhere
        self.fused = device.type == "cuda"
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate(arch),
                                          weight_decay=config.weight_decay, **({"fused": True} if self.fused else {}))
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=config.lr_factor, patience=config.validations(config.lr_patience),
            min_lr=config.min_lr)
        self.identity = {"arch": arch, "model_config": self.model.config, "recipe": config.recipe(arch),
                         "datasets": {"train": train_set.digest, "val": val_set.digest},
                         "init": None if self.init is None else self.init["sha256"]}
        self.groups = train_set.windows_by_source()
        self.batches_per_draw = len(_train_batches(np.arange(len(self.groups[1])), config.batch_size))
        self.epoch, self.best_epoch, self.best_val_loss = 0, 0, math.inf
        self.best_model: dict[str, torch.Tensor] = {}
        self.best_summary: dict[str, Any] = {}
        self.history: dict[str, list[float]] = {k: [] for k in HISTORY}
        self.seconds = 0.0
        self.stopped: str | None = None
        self.dropped_steps: int | None = None  # steps of a super-epoch cut short by the deadline (discarded)
        self.written: tuple[int, float] | None = None  # (best epoch, time) of the last checkpoint written
        if state_file.exists():
            self._load()
        elif self.init is not None:  # the starting weights compete for best-val as epoch 0
            evaluation = self._validate(progress=False)
            self.init["val_loss"] = evaluation.metrics["mse"]
            self._keep_if_best(0, evaluation)

    @property
    def paper_epochs(self) -> int:
        """Draws (the paper's epochs) trained so far."""
        return int(sum(self.history["draws"]))

    @property
    def steps(self) -> int:
        """Optimizer steps of the completed epochs."""
        return int(sum(self.history["steps"]))

    # -- state ------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT, "version": STATE_VERSION, **self.identity, "epoch": self.epoch,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "best": {"epoch": self.best_epoch, "val_loss": self.best_val_loss, "model": self.best_model,
                     "summary": self.best_summary},
            "history": self.history, "seconds": self.seconds, "init_record": self.init,
        }

    def save(self) -> None:
        """Write the state atomically (aside, then rename)."""
        with atomic_path(self.state_file) as tmp:
            torch.save(self._state(), tmp)

    def _load(self) -> None:
        path = self.state_file
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
            raise InputError(f"training state {path} is unreadable ({type(err).__name__}); remove it to start "
                             "afresh") from None
        if not isinstance(state, dict) or (state.get("format"), state.get("version")) != (STATE_FORMAT,
                                                                                           STATE_VERSION):
            raise InputError(f"{path} is not an xai-loc training state (version {STATE_VERSION})")
        differences = _differences(self.identity, state)
        if differences:
            raise InputError(f"{path} belongs to another training run ({'; '.join(differences)}); "
                             "remove it or write to another out")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        best = state["best"]
        self.epoch, self.best_epoch, self.best_val_loss = state["epoch"], best["epoch"], best["val_loss"]
        self.best_model, self.best_summary = best["model"], best["summary"]
        self.history, self.seconds = state["history"], state["seconds"]
        n = len(self.history["train_loss"])  # states written before draws and steps were recorded
        self.history.setdefault("draws", [1] * n)
        self.history.setdefault("steps", [self.batches_per_draw] * n)
        self.init = state.get("init_record") or self.init  # keeps the init's epoch-0 validation loss

    # -- training ---------------------------------------------------------------------------------
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

    def _may_stop_early(self) -> bool:
        """Whether a deadline may cut an epoch short: only once there is a model to keep."""
        return bool(self.best_model)

    def _train_epoch(self, rng: np.random.Generator, draws: int, progress: bool) -> tuple[float, int]:
        """``draws`` paper epochs of steps; returns the mean training loss and the number of steps."""
        from xai_loc.progress import tqdm

        parts = [part for _ in range(draws) for part in _train_batches(self._epoch_picks(rng), self.config.batch_size)]
        self.model.train()
        total = torch.zeros((), dtype=torch.float64, device=self.device)  # summed on the device: no sync per step
        deadline = self.config.deadline if self._may_stop_early() else None
        with _seeded(int(rng.integers(2**63))):  # dropout
            for step, (x, target) in enumerate(tqdm(self._batches(parts), total=len(parts), disable=not progress,
                                                    desc=f"epoch {self.epoch + 1}", unit="batch", leave=False)):
                if deadline is not None and _now() > deadline:
                    self.dropped_steps = step
                    raise _DeadlineReached
                self.optimizer.zero_grad(set_to_none=True)
                loss = nn.functional.mse_loss(self.model(x), target)
                loss.backward()
                self.optimizer.step()
                total += loss.detach().double() * x.shape[0]
        return float(total) / sum(len(p) for p in parts), len(parts)

    def run_epoch(self, progress: bool) -> None:
        """Train one (super-)epoch, validate on every window, step the scheduler, keep the best, save the state."""
        start = time.monotonic()
        epoch = self.epoch + 1
        lr = self.optimizer.param_groups[0]["lr"]
        draws = min(self.config.draws_per_epoch, self.config.max_epochs - self.paper_epochs)
        train_loss, steps = self._train_epoch(np.random.default_rng([self.config.seed, epoch]), draws, progress)
        evaluation = self._validate(progress)
        metrics = evaluation.metrics
        if not (math.isfinite(train_loss) and math.isfinite(metrics["mse"])):
            raise InputError(f"training diverged in epoch {epoch} (train loss {train_loss}, val loss "
                             f"{metrics['mse']}); lower the learning rate (lr={lr:g})")
        self.scheduler.step(metrics["mse"])
        self._keep_if_best(epoch, evaluation)
        self.epoch = epoch
        for key, value in zip(HISTORY, (train_loss, metrics["mse"], metrics["mae"], lr,
                                        time.monotonic() - start, draws, steps), strict=True):
            self.history[key].append(int(value) if key in ("draws", "steps") else float(value))
        self.seconds += self.history["seconds"][-1]
        if self.config.save_state:
            self.save()

    def _validate(self, progress: bool) -> Evaluation:
        """The current model on every validation window."""
        val = self.val_set
        pred = predict(self.model, val, self.config.eval_batch_size, self.device, progress, desc="validate")
        return Evaluation(pred, val.positions, val.source_id, val.window_index)

    def _keep_if_best(self, epoch: int, evaluation: Evaluation) -> None:
        """Keep the current weights as the best model if their validation loss is the lowest yet."""
        if evaluation.metrics["mse"] < self.best_val_loss:
            self.best_epoch, self.best_val_loss = epoch, evaluation.metrics["mse"]
            # a copy where the weights are (no transfer to the host during training)
            self.best_model = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.best_summary = evaluation.summary()

    def stop_reason(self, elapsed: float) -> str | None:
        """The first rule of :data:`STOP_RULES` that holds, or None to go on."""
        return next((name for name, rule in STOP_RULES.items() if rule(self, elapsed)), None)

    def _write_due(self) -> bool:
        every = self.config.checkpoint_every_s
        if every is None or self.out is None or not self.best_model:
            return False
        if self.written is None:
            return True
        best, when = self.written
        return best != self.best_epoch and time.monotonic() - when >= every

    def fit(self, progress: bool, started: float) -> None:
        """Run epochs until a stop rule holds (or the deadline cuts one short)."""
        from xai_loc.progress import tqdm

        bar = tqdm(total=self.config.validations(self.config.max_epochs), initial=self.epoch, disable=not progress,
                   desc=f"train {self.arch}", unit="epoch")
        while (reason := self.stop_reason(time.monotonic() - started)) is None:
            try:
                self.run_epoch(progress)
            except _DeadlineReached:
                reason = "deadline"
                break
            bar.update(1)
            bar.set_postfix(train=f"{self.history['train_loss'][-1]:.4g}", val=f"{self.history['val_loss'][-1]:.4g}",
                            mae=f"{self.history['val_mae'][-1]:.4f}", best=self.best_epoch,
                            lr=f"{self.history['lr'][-1]:.2g}")
            if self._write_due():
                self.write_checkpoint(self.out)
        bar.close()
        self.stopped = reason

    # -- result -----------------------------------------------------------------------------------
    def deviations(self) -> list[str]:
        """How this run departs from the paper's recipe (brief, section 2), one sentence each."""
        c, out = self.config, []
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
        if self.stopped not in (None, "early_stopping"):
            out.append(f"stopped by {self.stopped} after {self.paper_epochs} paper epochs, before early stopping "
                       "(not converged in the paper's sense)")
        for split, data in (("training", self.train_set), ("validation", self.val_set)):
            if data.tensor is not None and data.tensor.dtype != torch.float32:
                out.append(f"{split} windows held in {str(data.tensor.dtype).removeprefix('torch.')} on "
                           f"{data.tensor.device} (rounding about -66 dB of the signal) and computed in float32")
        if self.init is not None:
            out.append(f"started from checkpoint {self.init['file']} instead of a seeded initialization")
        return out

    def implementation(self) -> dict[str, Any]:
        """Settings that change the rounding, not the recipe."""
        cuda = self.device.type == "cuda"
        return {"optimizer": "Adam (fused)" if self.fused else "Adam", "deterministic": self.config.deterministic,
                "cudnn_benchmark": bool(cuda and self.config.benchmark and not self.config.deterministic),
                "tf32": {"matmul": bool(cuda and torch.backends.cuda.matmul.allow_tf32),
                         "cudnn": bool(cuda and torch.backends.cudnn.allow_tf32)},
                "data": "GPU-resident tensor, batches by index_select" if self.train_set.tensor is not None
                        and self.train_set.tensor.device.type == "cuda" else
                        ("in-memory tensor" if self.train_set.tensor is not None else "dataset store")}

    def card(self, full_log: bool = False, notes: tuple[str, ...] = ()) -> dict[str, Any]:
        """The checkpoint card of the best model (``full_log``: every epoch's losses and seconds too)."""
        h = self.history
        paper = np.cumsum(h["draws"]).astype(int)
        best_paper = int(paper[self.best_epoch - 1]) if self.best_epoch > 0 else 0
        training = {
            "config": self.config.to_dict(self.arch), "recipe": RECIPE, "seed": self.config.seed,
            "epochs": self.paper_epochs, "best_epoch": best_paper, "validations": self.epoch,
            "best_validation": self.best_epoch, "draws_per_epoch": self.config.draws_per_epoch,
            "steps": self.steps, "stopped": self.stopped,
            "converged": self.stopped == "early_stopping", "best_val_loss": self.best_val_loss,
            "final": {k: h[k][-1] for k in ("train_loss", "val_loss", "lr")} if h["train_loss"] else None,
            "history": _history_summary(h, self.best_epoch), "wall_seconds": self.seconds,
            "seconds_per_epoch": self.seconds / max(1, self.paper_epochs), "device": _device_name(self.device),
            "threads": torch.get_num_threads(), "implementation": self.implementation(),
            "deviations": self.deviations() + list(notes),
        }
        if self.dropped_steps is not None:
            training["dropped_steps"] = self.dropped_steps
        if full_log:
            training["log"] = {"epoch": list(range(1, self.epoch + 1)), "paper_epoch": paper.tolist(),
                               **{k: list(h[k]) for k in HISTORY}}
        if self.init is not None:
            training["init_from"] = self.init
        return {"condition": self.train_set.condition, "training": training,
                "dataset": {"train": self.train_set.describe(), "val": self.val_set.describe()},
                "metrics": {"val": self.best_summary}}

    def write_checkpoint(self, out: Path) -> Path:
        """Save the best model with its card at ``out`` (with the log and notes given to :func:`train`)."""
        model = build_model(self.arch, **self.model.config)
        model.load_state_dict(self.best_model)
        path = save_checkpoint(model, out, self.card(self.full_log, self.notes))
        self.written = (self.best_epoch, time.monotonic())
        return path


def _initialize(model: Localizer, path: Path) -> dict[str, Any]:
    """Copy the weights of checkpoint ``path`` into ``model``; return its provenance for the card.

    The checkpoint must hold the same architecture with the same constructor arguments.
    """
    source = load_model(path)
    if (source.arch_name, source.config) != (model.arch_name, model.config):
        raise InputError(f"init checkpoint {path} holds {source.arch_name} {source.config}; this run trains "
                         f"{model.arch_name} {model.config}")
    model.load_state_dict({k: v.float() for k, v in source.state_dict().items()})
    card = read_card(path)
    return {"file": Path(path).name, "sha256": file_digest(path), "condition": card.get("condition"),
            "epochs": card.get("training", {}).get("epochs")}


def _over_budget(run: _Run, elapsed: float) -> bool:
    if run.config.max_minutes is None or run.epoch == 0:
        return False
    return elapsed + float(np.mean(run.history["seconds"])) > 60.0 * run.config.max_minutes


def _past_deadline(run: _Run, elapsed: float) -> bool:
    """Whether the next epoch would end after the deadline (estimated from the last three); never
    before the first epoch of a run that has no model to keep yet."""
    if run.config.deadline is None or not run._may_stop_early():
        return False
    recent = run.history["seconds"][-3:]
    return _now() + (float(np.mean(recent)) if recent else 0.0) > run.config.deadline


#: Stop rules, checked before every epoch in this order; the name is recorded in the card.
STOP_RULES: dict[str, Callable[[_Run, float], bool]] = {
    "early_stopping": lambda run, elapsed: run.epoch - run.best_epoch >= run.config.validations(
        run.config.early_stop_patience),
    "max_epochs": lambda run, elapsed: run.paper_epochs >= run.config.max_epochs,
    "time_budget": _over_budget,
    "deadline": _past_deadline,
}


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
        Bad configuration or stores (shapes that differ, too few sources), a saved state of
        another architecture, recipe, dataset or init checkpoint, an init checkpoint of another
        architecture or shape, or a diverging loss.
    """
    started = time.monotonic()
    config = TrainConfig() if config is None else config
    out = Path(out)
    if out.suffix != ".safetensors":
        raise InputError(f"checkpoint path {out} is not allowed; use a file name ending in .safetensors")
    if arch not in MODELS:
        raise InputError(f"unknown model architecture {arch!r}; allowed: {', '.join(sorted(MODELS))}")
    config.learning_rate(arch)  # an architecture without a default lr fails before any reading
    device = resolve_device(config.device)
    train_set, val_set = (as_window_set(s, config.preload) for s in (train_store, val_store))
    _check_stores(train_set, val_set)
    with _determinism(config.deterministic, device, config.benchmark):
        run = _Run(arch, train_set, val_set, config, device, state_path(out),
                   None if init_from is None else Path(init_from), out=out, full_log=full_log, notes=tuple(notes))
        run.fit(progress, started)
    return run.write_checkpoint(out)
