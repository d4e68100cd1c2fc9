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
RUN_FIELDS = frozenset({"max_epochs", "max_minutes", "device", "eval_batch_size", "preload"})
#: ``format`` and ``version`` of the training-state files.
STATE_FORMAT, STATE_VERSION = "xai-loc-train-state", 1
#: Per-epoch series kept in the training state.
HISTORY = ("train_loss", "val_loss", "val_mae", "lr", "seconds")
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

    ``max_epochs``, ``max_minutes``, ``device``, ``eval_batch_size`` and ``preload``
    (:data:`RUN_FIELDS`) may change when a run is resumed; the other fields may not.
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
        """The fields that decide the result (all but :data:`RUN_FIELDS`), lr resolved."""
        return {k: v for k, v in self.to_dict(arch).items() if k not in RUN_FIELDS}


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
def _determinism(enabled: bool, device: torch.device) -> Iterator[None]:
    """Ask for deterministic kernels (warning where torch has none) and restore the settings afterwards."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    if enabled:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
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


def _history_summary(history: dict[str, list[float]], best_epoch: int) -> dict[str, list]:
    """At most :data:`CARD_HISTORY_POINTS` evenly spread epochs (first, best and last included;
    a best epoch 0, the init checkpoint of a fine-tuning run, has no training epoch to list)."""
    n = len(history["train_loss"])
    spread = np.linspace(0, n - 1, min(n, CARD_HISTORY_POINTS)).round().astype(int)
    keep = np.unique(np.append(spread, best_epoch - 1) if best_epoch > 0 else spread)
    return {"epoch": (keep + 1).tolist(), **{k: [history[k][i] for i in keep] for k in HISTORY if k != "seconds"}}


class _Run:
    """Model, optimizer, scheduler and bookkeeping of one training run."""

    def __init__(self, arch: str, train_set: WindowSet, val_set: WindowSet, config: TrainConfig,
                 device: torch.device, state_file: Path, init_from: Path | None = None) -> None:
        self.arch, self.train_set, self.val_set, self.config = arch, train_set, val_set, config
        self.device, self.state_file = device, state_file
        with _seeded(config.seed):
            self.model: Localizer = build_model(arch, n_mics=train_set.n_mics, n_samples=train_set.n_samples)
        self.init = None if init_from is None else _initialize(self.model, init_from)
        for windows in (train_set, val_set):
            windows.check_model(self.model)
        self.model.to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate(arch),
                                          weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience, min_lr=config.min_lr)
        self.identity = {"arch": arch, "model_config": self.model.config, "recipe": config.recipe(arch),
                         "datasets": {"train": train_set.digest, "val": val_set.digest},
                         "init": None if self.init is None else self.init["sha256"]}
        self.groups = train_set.windows_by_source()
        self.epoch, self.best_epoch, self.best_val_loss = 0, 0, math.inf
        self.best_model: dict[str, torch.Tensor] = {}
        self.best_summary: dict[str, Any] = {}
        self.history: dict[str, list[float]] = {k: [] for k in HISTORY}
        self.seconds = 0.0
        self.stopped: str | None = None
        if state_file.exists():
            self._load()
        elif self.init is not None:  # the starting weights compete for best-val as epoch 0
            evaluation = self._validate(progress=False)
            self.init["val_loss"] = evaluation.metrics["mse"]
            self._keep_if_best(0, evaluation)

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
        self.init = state.get("init_record") or self.init  # keeps the init's epoch-0 validation loss

    # -- training ---------------------------------------------------------------------------------
    def _epoch_picks(self, rng: np.random.Generator) -> np.ndarray:
        """One random window per training source, in random order."""
        order, starts, counts = self.groups
        return rng.permutation(order[starts + rng.integers(counts)])

    def _train_epoch(self, rng: np.random.Generator, progress: bool) -> float:
        from xai_loc.progress import tqdm

        picks = self._epoch_picks(rng)
        parts = _train_batches(picks, self.config.batch_size)
        self.model.train()
        total = 0.0
        with _seeded(int(rng.integers(2**63))):  # dropout
            for idx, x in tqdm(zip(parts, prefetched(self.train_set.read, parts), strict=True), total=len(parts),
                               disable=not progress, desc=f"epoch {self.epoch + 1}", unit="batch", leave=False):
                target = torch.from_numpy(self.train_set.positions[idx]).float().to(self.device)
                self.optimizer.zero_grad(set_to_none=True)
                loss = nn.functional.mse_loss(self.model(torch.from_numpy(x).to(self.device)), target)
                loss.backward()
                self.optimizer.step()
                total += loss.item() * len(idx)
        return total / len(picks)

    def run_epoch(self, progress: bool) -> None:
        """Train one epoch, validate on every window, step the scheduler, keep the best, save the state."""
        start = time.monotonic()
        epoch = self.epoch + 1
        lr = self.optimizer.param_groups[0]["lr"]
        train_loss = self._train_epoch(np.random.default_rng([self.config.seed, epoch]), progress)
        evaluation = self._validate(progress)
        metrics = evaluation.metrics
        if not (math.isfinite(train_loss) and math.isfinite(metrics["mse"])):
            raise InputError(f"training diverged in epoch {epoch} (train loss {train_loss}, val loss "
                             f"{metrics['mse']}); lower the learning rate (lr={lr:g})")
        self.scheduler.step(metrics["mse"])
        self._keep_if_best(epoch, evaluation)
        self.epoch = epoch
        for key, value in zip(HISTORY, (train_loss, metrics["mse"], metrics["mae"], lr,
                                        time.monotonic() - start), strict=True):
            self.history[key].append(float(value))
        self.seconds += self.history["seconds"][-1]
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
            self.best_model = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
            self.best_summary = evaluation.summary()

    def stop_reason(self, elapsed: float) -> str | None:
        """The first rule of :data:`STOP_RULES` that holds, or None to go on."""
        return next((name for name, rule in STOP_RULES.items() if rule(self, elapsed)), None)

    def fit(self, progress: bool, started: float) -> None:
        """Run epochs until a stop rule holds."""
        from xai_loc.progress import tqdm

        bar = tqdm(total=self.config.max_epochs, initial=self.epoch, disable=not progress,
                   desc=f"train {self.arch}", unit="epoch")
        while (reason := self.stop_reason(time.monotonic() - started)) is None:
            self.run_epoch(progress)
            bar.update(1)
            bar.set_postfix(train=f"{self.history['train_loss'][-1]:.4g}", val=f"{self.history['val_loss'][-1]:.4g}",
                            mae=f"{self.history['val_mae'][-1]:.4f}", best=self.best_epoch,
                            lr=f"{self.history['lr'][-1]:.2g}")
        bar.close()
        self.stopped = reason

    # -- result -----------------------------------------------------------------------------------
    def card(self) -> dict[str, Any]:
        """The checkpoint card of the best model."""
        h = self.history
        training = {
            "config": self.config.to_dict(self.arch), "recipe": RECIPE, "seed": self.config.seed,
            "epochs": self.epoch, "best_epoch": self.best_epoch, "stopped": self.stopped,
            "converged": self.stopped == "early_stopping", "best_val_loss": self.best_val_loss,
            "final": {k: h[k][-1] for k in ("train_loss", "val_loss", "lr")},
            "history": _history_summary(h, self.best_epoch), "wall_seconds": self.seconds,
            "seconds_per_epoch": float(np.mean(h["seconds"])), "device": _device_name(self.device),
            "threads": torch.get_num_threads(),
        }
        if self.init is not None:
            training["init_from"] = self.init
        return {"condition": self.train_set.condition, "training": training,
                "dataset": {"train": self.train_set.describe(), "val": self.val_set.describe()},
                "metrics": {"val": self.best_summary}}

    def write_checkpoint(self, out: Path) -> Path:
        """Save the best model with its card at ``out``."""
        model = build_model(self.arch, **self.model.config)
        model.load_state_dict(self.best_model)
        return save_checkpoint(model, out, self.card())


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


#: Stop rules, checked before every epoch in this order; the name is recorded in the card.
STOP_RULES: dict[str, Callable[[_Run, float], bool]] = {
    "early_stopping": lambda run, elapsed: run.epoch - run.best_epoch >= run.config.early_stop_patience,
    "max_epochs": lambda run, elapsed: run.epoch >= run.config.max_epochs,
    "time_budget": _over_budget,
}


def train(arch: str, train_store, val_store, out: str | Path, config: TrainConfig | None = None,
          progress: bool = True, init_from: str | Path | None = None) -> Path:
    """Train a registered localizer on a dataset store; resume if ``out`` has a saved state.

    Parameters
    ----------
    arch
        Registered architecture name ('loccnn', 'samplecnn'); built for the stores'
        microphone count and window length.
    train_store, val_store
        Dataset stores of one condition (paths, ``xarray.Dataset`` or
        :class:`~xai_loc.models.evaluation.WindowSet`), e.g. from
        :func:`xai_loc.data.simulate_dataset`.
    out
        The ``.safetensors`` checkpoint to write; the training state lives beside it in
        ``<out>.state.pt`` (:func:`state_path`).
    config
        Recipe and run settings (default: the paper's recipe on the CPU).
    progress
        Show progress bars (epochs, with train/val loss; batches).
    init_from
        An xai-loc checkpoint of the same architecture and shape whose weights start the run
        instead of a seeded initialization (fine-tuning); recorded in the card. A resumed run
        must give the same file.

    Returns
    -------
    Path
        ``out``, holding the best-validation model with its card. It is written when a stop
        rule ends the call (early stopping, ``max_epochs`` or the ``max_minutes`` budget);
        the card's ``training.stopped`` says which.

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
    with _determinism(config.deterministic, device):
        run = _Run(arch, train_set, val_set, config, device, state_path(out),
                   None if init_from is None else Path(init_from))
        run.fit(progress, started)
    return run.write_checkpoint(out)
