"""One trainer for every localizer family: an epoch loop with the family's hooks, one resume format, one fp16 rule.

A family states what differs (:class:`Hooks`): which examples one draw visits, how a batch
is assembled (windows read from a store, cached front-end outputs), the model's training
forward pass and loss, and an optional validation that picks the kept model. Everything
else is shared by :class:`Trainer`:

- the random streams of an epoch (which examples, their order, dropout) come from
  ``(seed, epoch)`` alone, so a run interrupted and resumed from its state gives the same
  weights, bit for bit on the CPU, as an uninterrupted one;
- the state (model, optimizer, scheduler, best model, history; tensors and plain
  containers, readable with ``torch.load(weights_only=True)``) is written atomically after
  every epoch in one format (:data:`STATE_FORMAT`), and a run resumes only with the same
  identity (architecture, recipe, data) and never with fewer epochs than it has trained;
- the stop rules (:data:`STOP_RULES`): early stopping on the validation criterion, the
  planned epochs, a wall-clock budget per call and a hard deadline; a loss that is no longer
  finite stops the run as ``"diverged"`` once there is a model to keep (an error before);
- with a validation, the model of the lowest criterion is kept; without, the last one.

Why a module of its own: :mod:`xai_loc.models.training` is the multichannel family's
recipe (its config, data sets, card); the loop, state and storage rule here know no family,
and the binaural trainers import them without importing the multichannel recipe.

:func:`float16_check` is the one rule for storing weights in float16: score the model and its
float16-rounded copy, and store float16 only if no listed metric moves by more than its
tolerance.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import io
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xai_loc.data.spec import differing_fields
from xai_loc.errors import InputError
from xai_loc.io import check_file_path, write_bytes_atomic
from xai_loc.runtime import deterministic_algorithms, device_name

__all__ = ["STATE_FORMAT", "STATE_VERSION", "STOP_RULES", "Hooks", "Schedule", "Trainer", "Validation",
           "cached_batches", "check_held_out", "check_output", "check_resumable", "check_split", "check_storage",
           "content_digest", "determinism", "fit", "float16_check", "read_state", "save_trained", "seeded", "shuffled",
           "split_batches", "state_digest", "state_path"]

#: ``format`` and ``version`` of the training-state files of every family (version 2 adds the digest;
#: version 1 still resumes).
STATE_FORMAT, STATE_VERSION = "xai-loc-train-state", 2
#: Where a scheduler steps: after each validation (on the criterion), each epoch or each optimizer step.
SCHEDULER_STEPS = ("validation", "epoch", "step")


def state_path(out: str | Path) -> Path:
    """Where the training state of checkpoint ``out`` lives: ``<out>.state.pt``."""
    out = Path(out)
    return out.with_name(out.name + ".state.pt")


def _cuda_indices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global generators seeded by ``seed``, restoring them afterwards."""
    with torch.random.fork_rng(devices=_cuda_indices()):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def determinism(enabled: bool, device: torch.device, benchmark: bool = False) -> Iterator[None]:
    """Ask for deterministic kernels (warning where torch has none), or else for cuDNN's autotuner
    (``benchmark``), and restore the settings afterwards."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    with contextlib.ExitStack() as stack:
        if enabled:
            if device.type == "cuda":
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
            stack.enter_context(deterministic_algorithms())  # shared with the simulator's scatters
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        elif benchmark:
            torch.backends.cudnn.benchmark = True
        try:
            yield
        finally:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


#: Mixed-precision dtypes of the training forward pass (``autocast`` of a recipe).
AUTOCAST = {"bfloat16": torch.bfloat16}


def autocast_forward(model: nn.Module, dtype: str, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model``'s forward pass under ``torch.autocast`` in ``dtype`` (a key of :data:`AUTOCAST`),
    returning float32 so that the loss and its gradient start in float32; the weights stay float32."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=AUTOCAST[dtype]):
            out = model(x)
        return out.float()
    return forward


def split_batches(picks: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Split one draw's examples into batches (each sorted, for reading); a last batch of one
    example joins the one before (BatchNorm needs two)."""
    parts = [picks[s : s + batch_size] for s in range(0, len(picks), batch_size)]
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2:] = [np.concatenate(parts[-2:])]
    return [np.sort(p) for p in parts]


def differences(expected: dict[str, Any], found: dict[str, Any], defaults: dict[str, Any] | None = None) -> list[str]:
    """``key: <found> in the state, <expected> now`` for every (nested) value that differs.

    ``found`` (a state) is compared on the keys of ``expected`` and ``defaults``, nested dicts on the keys of
    both sides (a value the state records and this run leaves out differs too). ``defaults``, nested like
    ``expected``, is what a missing key stands for: the value of a field added later, that states written
    before it and runs leaving it out at that value mean.
    """
    defaults = defaults or {}
    return [f"{key}: {old!r} in the state, {value!r} now"
            for key, old, value in differing_fields(found, expected, defaults, [*expected, *defaults])]


def check_output(out: str | Path) -> Path:
    """``out`` as the path of a checkpoint to write, refused in one line before any work where its name does not
    end in ``.safetensors``, it is a folder, or its folder cannot be created or written
    (:func:`~xai_loc.cli_params.check_out_dir`: nothing is created)."""
    from xai_loc.cli_params import check_out_dir
    from xai_loc.models.checkpoint import checkpoint_path

    out = check_file_path(checkpoint_path(out))
    check_out_dir(out.parent, "checkpoint folder")
    return out


def check_split(attrs: dict[str, Any], allowed: tuple[str, ...], what: str) -> None:
    """Refuse (one line) data whose ``split`` attr, where it has one, is not one of ``allowed`` (e.g. the test
    split given as the training data); ``what`` names the data in the message."""
    split = attrs.get("split")
    if split is not None and split not in allowed:
        raise InputError(f"{what} records split={split!r}; use the {' or '.join(map(repr, allowed))} split")


def open_splits(opener: Callable[[Any], Any], train: Any, test: Any, train_splits: tuple[str, ...],
                test_splits: tuple[str, ...], what: str = "store", held_out: tuple[str, ...] = ()) -> tuple[Any, Any]:
    """The training and the held-out data (paths opened by ``opener``, opened datasets as they are; ``test`` may
    be None), each refused (:func:`check_split`) unless it records one of its allowed splits or none, and the
    held-out data refused where it is not held out (:func:`check_held_out` on the labels ``held_out``)."""
    train_ds, test_ds = (d if d is None or hasattr(d, "data_vars") else opener(d) for d in (train, test))
    check_split(train_ds.attrs, train_splits, f"the training {what}")
    if test_ds is not None:
        check_split(test_ds.attrs, test_splits, f"the test {what}")
        check_held_out(train_ds, test_ds, held_out, what)
    return train_ds, test_ds


def check_held_out(train: Any, test: Any, labels: tuple[str, ...] = (), what: str = "store") -> None:
    """Refuse (one line) test data that shares examples with the training data: a value of the first of
    ``labels`` (e.g. the sounds) that both record; where they do not both record one, test data that is the
    training data (the same recorded ``config``, or the same recorded ``spec_digest`` and ``split``). Metrics on it
    would be training-set metrics; disjoint selections of one store are held out."""
    label = next((name for name in labels if name in train.variables and name in test.variables), None)
    if label is not None:
        shared = np.intersect1d(np.asarray(train[label].values), np.asarray(test[label].values))
        if shared.size:
            raise InputError(f"the test {what} shares {shared.size} {label} value(s) with the training {what} (the "
                             f"first: {shared[0].item()!r}); train on the train split and test on the test split")
        return
    a, b = train.attrs, test.attrs
    same = [key for key in ("config", "spec_digest", "split") if a.get(key) is not None and a.get(key) == b.get(key)]
    if "config" in same or {"spec_digest", "split"} <= set(same):
        raise InputError(f"the test {what} is the training {what} (split {a.get('split')!r} of spec "
                         f"{a.get('spec_digest')}); score the model on held-out data (the test split)")


def content_digest(shape: Iterable[int], **labels: Any) -> str:
    """``'content:'`` and the SHA-256 of data's shape and labels (each by name, with its dtype and shape): what
    pins data that records no configuration in a run's identity, without reading its signals."""
    digest = hashlib.sha256(repr(tuple(int(v) for v in shape)).encode())
    for name in sorted(labels):
        values = np.asarray(labels[name])
        values = np.ascontiguousarray(values.astype(str) if values.dtype == object else values)
        digest.update(f"{name}{values.dtype.str}{values.shape}".encode())
        digest.update(values.tobytes())
    return "content:" + digest.hexdigest()


@dataclass(frozen=True)
class Validation:
    """One validation of the current model.

    Attributes
    ----------
    criterion
        Lower is better; picks the kept model, drives early stopping and a plateau scheduler.
    series
        Values appended to the history (e.g. ``{"val_loss": ..., "val_mae": ...}``).
    summary
        Computes the card entry of the model when it is kept.
    """

    criterion: float
    series: dict[str, float]
    summary: Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class Hooks:
    """What a family brings to :class:`Trainer`.

    Attributes
    ----------
    picks
        ``picks(rng) -> indices``: the examples of one draw (a paper epoch), in random order.
    assemble
        ``assemble(batches) -> iterator of (inputs, targets)`` on the training device, one per
        batch of indices (reads a store, gathers a cache). It may carry a ``warm()`` attribute:
        one-off work (:func:`cached_batches`' cache) that :meth:`Trainer.fit` runs before its
        clock starts, when an epoch is left, so that no time budget or epoch time counts it.
    forward
        The model's training pass from assembled inputs to outputs.
    loss
        ``loss(outputs, targets) -> scalar``.
    validate
        ``validate() -> Validation`` of the current model; None keeps the last epoch's model.
    series
        Names of the history series :attr:`validate` fills.
    """

    picks: Callable[[np.random.Generator], np.ndarray]
    assemble: Callable[[list[np.ndarray]], Iterable[tuple[torch.Tensor, torch.Tensor]]]
    forward: Callable[[torch.Tensor], torch.Tensor]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    validate: Callable[[], Validation] | None = None
    series: tuple[str, ...] = ()


@dataclass(frozen=True)
class Schedule:
    """How long and in which steps a run goes (every family's config maps onto this).

    Attributes
    ----------
    batch_size
        Examples per optimizer step.
    max_epochs
        Paper epochs (draws) in all.
    seed
        Seeds the draws, batch order and dropout of each epoch with ``(seed, epoch)``.
    draws_per_epoch
        Draws between two validations ("super-epochs"; patiences and ``max_epochs`` count draws).
    early_stop_patience
        Stop after this many draws without a lower criterion (only with a validation); None: never.
    max_minutes
        Budget of one call: no epoch starts that would overrun it (the first always runs).
    deadline
        ``time.time()`` by which training ends; a running epoch is dropped at the next step once it
        has passed (never before there is a model to keep).
    checkpoint_every_s
        Write the kept model during the run, at most this often, when it changed.
    """

    batch_size: int
    max_epochs: int
    seed: int = 0
    draws_per_epoch: int = 1
    early_stop_patience: int | None = None
    max_minutes: float | None = None
    deadline: float | None = None
    checkpoint_every_s: float | None = None

    def validations(self, paper_epochs: int) -> int:
        """Epochs of the trainer (validations) that span ``paper_epochs`` draws."""
        return math.ceil(paper_epochs / self.draws_per_epoch)


class _DeadlineReached(Exception):
    """Raised between two steps once :attr:`Schedule.deadline` has passed."""


class _Diverged(Exception):
    """Raised by an epoch whose loss is not finite once there is an earlier model to keep."""


def _now() -> float:
    """The clock of :attr:`Schedule.deadline` (``time.time()``)."""
    return time.time()


def state_digest(state: Any) -> str:
    """SHA-256 of a training state's contents (tensor bytes, dtypes and shapes, keys, plain values), in an
    order that does not depend on how the dicts were built."""
    digest = hashlib.sha256()

    def walk(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous().reshape(-1)
            digest.update(f"T{t.dtype}{tuple(obj.shape)}".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, dict):
            digest.update(b"{")
            for key in sorted(obj, key=repr):
                digest.update(repr(key).encode())
                walk(obj[key])
            digest.update(b"}")
        elif isinstance(obj, (list, tuple)):
            digest.update(b"[")
            for value in obj:
                walk(value)
            digest.update(b"]")
        else:
            digest.update(repr(obj).encode())

    walk(state)
    return digest.hexdigest()


def read_state(path: Path) -> dict[str, Any]:
    """The training state in ``path``, refused (one line) where it is unreadable, not a training state, of a
    version this xai-loc does not read, or damaged (its contents do not match their digest)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the weights-only unpickler fails with many types on damaged bytes
        raise InputError(f"training state {path} is unreadable ({type(err).__name__}); remove it to start "
                         "afresh") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise InputError(f"{path} is not an xai-loc training state; remove it or write to another out")
    if state.get("version") not in (1, STATE_VERSION):
        raise InputError(f"training state {path} is of version {state.get('version')!r}, this xai-loc reads "
                         f"versions 1 and {STATE_VERSION}; remove it to start afresh")
    # torch.load checks no CRC, so a changed byte would load: version 2 carries a digest (version 1,
    # written before it, resumes unchecked)
    if state["version"] == STATE_VERSION and state.pop("sha256", None) != state_digest(state):
        raise InputError(f"training state {path} is damaged (its contents do not match their digest); remove "
                         "it to start afresh")
    return state


def _check_identity(path: Path, state: dict[str, Any], identity: dict[str, Any],
                    defaults: dict[str, Any] | None = None) -> None:
    found = differences(identity, state, defaults)
    if found:
        raise InputError(f"{path} belongs to another training run ({'; '.join(found)}); "
                         "remove it or write to another out")


def check_resumable(state_file: Path, identity: dict[str, Any], defaults: dict[str, Any] | None = None) -> None:
    """Refuse (one line), before any work, a saved state in ``state_file`` (where there is one) that the
    :class:`Trainer` of a run with ``identity`` would refuse: the same reading and comparison, on the keys of
    ``identity`` (and ``defaults``) only, so that a part of a run's identity (its architecture and recipe, before
    the data that complete it exist) is checked alone."""
    if state_file.exists():
        _check_identity(state_file, read_state(state_file), identity, defaults)


@dataclass
class Trainer:
    """Model, optimizer, scheduler and bookkeeping of one training run (any family).

    Parameters
    ----------
    model, optimizer
        The model (on its training device) and its optimizer.
    hooks, schedule
        The family's parts and the run's length.
    scheduler, scheduler_step
        Optional learning-rate scheduler and when it steps (:data:`SCHEDULER_STEPS`).
    identity
        What a resumed run must match (architecture, recipe, data digests); stored in the state.
    defaults
        What identity keys that a state lacks stand for (nested like :attr:`identity`; :func:`differences`):
        fields added after states were written, or left out of the identity at their usual value.
    state_file
        The resumable state (read if it exists); None: no state.
    save_state
        Write the state after every epoch.
    extra
        Records kept in the state beside the identity (e.g. an init checkpoint's provenance).
    writer
        Called to write the kept model when :attr:`Schedule.checkpoint_every_s` is due.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    hooks: Hooks
    schedule: Schedule
    scheduler: Any = None
    scheduler_step: str = "validation"
    identity: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    state_file: Path | None = None
    save_state: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    writer: Callable[[], Any] | None = None

    def __post_init__(self) -> None:
        if self.scheduler_step not in SCHEDULER_STEPS:
            raise InputError(f"scheduler_step={self.scheduler_step!r} is not allowed; use one of "
                             f"{', '.join(SCHEDULER_STEPS)}")
        self.device = next(self.model.parameters()).device
        picks = self.hooks.picks(np.random.default_rng(0))
        if len(picks) == 0:
            raise InputError("the training data hold 0 examples; training needs at least 1")
        self.batches_per_draw = len(split_batches(picks, self.schedule.batch_size))
        self.epoch, self.best_epoch, self.best_val_loss = 0, 0, math.inf
        self.best_model: dict[str, torch.Tensor] = {}
        self.best_summary: dict[str, Any] = {}
        self.history: dict[str, list] = {k: [] for k in ("train_loss", *self.hooks.series, "lr", "seconds", "draws",
                                                         "steps")}
        self.seconds = 0.0
        self.stopped: str | None = None
        self.diverged: str | None = None  # the message of the epoch that diverged (its weights are not kept)
        self.call_start_epoch = 0  # self.epoch when fit() was last called
        self.dropped_steps: int | None = None  # steps of an epoch cut short by the deadline (discarded)
        self.written: tuple[int, float] | None = None  # (best epoch, time) of the last model written
        self.resumed = self.state_file is not None and self.state_file.exists()
        if self.resumed:
            self._load()

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
            "scheduler": {} if self.scheduler is None else self.scheduler.state_dict(),
            "best": {"epoch": self.best_epoch, "val_loss": self.best_val_loss, "model": self.best_model,
                     "summary": self.best_summary},
            "history": self.history, "seconds": self.seconds, **self.extra,
        }

    def save(self) -> None:
        """Write the state atomically (aside, then rename), with the digest of its contents; serialized in memory
        first, so that a full disk is a plain ``OSError`` naming the file, not a failure inside ``torch.save``."""
        state = self._state()
        state["sha256"] = state_digest(state)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_bytes_atomic(self.state_file, buffer.getvalue())

    def _load(self) -> None:
        path = self.state_file
        state = read_state(path)
        _check_identity(path, state, self.identity, self.defaults)
        history = state["history"]
        n = len(history["train_loss"])  # states written before draws and steps were recorded
        history.setdefault("draws", [1] * n)
        history.setdefault("steps", [self.batches_per_draw] * n)
        trained = int(sum(history["draws"]))
        if trained > self.schedule.max_epochs:  # else the card would plan fewer epochs than it records
            raise InputError(f"{self.schedule.max_epochs} planned epochs are fewer than the {trained} epochs already "
                             f"trained in {path}; plan at least {trained} (epochs, or max_epochs of the multichannel "
                             "recipe)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        best = state["best"]
        self.epoch, self.best_epoch, self.best_val_loss = state["epoch"], best["epoch"], best["val_loss"]
        self.best_model, self.best_summary = best["model"], best["summary"]
        self.history, self.seconds = history, state["seconds"]
        self.extra = {k: state.get(k) or v for k, v in self.extra.items()}

    # -- training ---------------------------------------------------------------------------------
    def keep_start(self) -> Validation:
        """Validate the starting weights; they compete for the kept model as epoch 0."""
        validation = self.hooks.validate()
        self._keep_if_best(0, validation)
        return validation

    def _may_stop_early(self) -> bool:
        """Whether a deadline may cut an epoch short: only once there is a model to keep."""
        return bool(self.best_model)

    def _train_epoch(self, rng: np.random.Generator, draws: int, progress: bool) -> tuple[float, int]:
        """``draws`` draws of steps; returns the mean training loss and the number of steps."""
        from xai_loc.progress import tqdm

        size = self.schedule.batch_size
        parts = [part for _ in range(draws) for part in split_batches(self.hooks.picks(rng), size)]
        self.model.train()
        total = torch.zeros((), dtype=torch.float64, device=self.device)  # summed on the device: no sync per step
        deadline = self.schedule.deadline if self._may_stop_early() else None
        with seeded(int(rng.integers(2**63))):  # dropout
            for step, (x, target) in enumerate(tqdm(self.hooks.assemble(parts), total=len(parts),
                                                    disable=not progress, desc=f"epoch {self.epoch + 1}",
                                                    unit="batch", leave=False)):
                if deadline is not None and _now() > deadline:
                    self.dropped_steps = step
                    raise _DeadlineReached
                self.optimizer.zero_grad(set_to_none=True)
                loss = self.hooks.loss(self.hooks.forward(x), target)
                loss.backward()
                self.optimizer.step()
                if self.scheduler_step == "step":
                    self.scheduler.step()
                total += loss.detach().double() * x.shape[0]
        return float(total) / sum(len(p) for p in parts), len(parts)

    def run_epoch(self, progress: bool) -> None:
        """Train one (super-)epoch, validate, step the scheduler, keep the model, save the state."""
        start = time.monotonic()
        epoch = self.epoch + 1
        lr = self.optimizer.param_groups[0]["lr"]
        draws = min(self.schedule.draws_per_epoch, self.schedule.max_epochs - self.paper_epochs)
        train_loss, steps = self._train_epoch(np.random.default_rng([self.schedule.seed, epoch]), draws, progress)
        validation = None if self.hooks.validate is None else self.hooks.validate()
        criterion = 0.0 if validation is None else validation.criterion
        if not (math.isfinite(train_loss) and math.isfinite(criterion)):
            message = (f"training diverged in epoch {epoch} (train loss {train_loss}, validation {criterion}); "
                       f"lower the learning rate (lr={lr:g})")
            # with a model to keep, the run stops and keeps it (its card says why); else nothing is worth writing
            raise (_Diverged if self.best_model else InputError)(message)
        if self.scheduler is not None and self.scheduler_step == "validation":
            self.scheduler.step(criterion)
        elif self.scheduler is not None and self.scheduler_step == "epoch":
            self.scheduler.step()
        self._keep_if_best(epoch, validation)
        self.epoch = epoch
        series = {} if validation is None else validation.series
        for key, value in {"train_loss": train_loss, **series, "lr": lr, "seconds": time.monotonic() - start,
                           "draws": draws, "steps": steps}.items():
            self.history[key].append(int(value) if key in ("draws", "steps") else float(value))
        self.seconds += self.history["seconds"][-1]
        if self.save_state and self.state_file is not None:
            self.save()

    def _keep_if_best(self, epoch: int, validation: Validation | None) -> None:
        """Keep the current weights if they validate best yet (without a validation: always)."""
        if validation is None or validation.criterion < self.best_val_loss:
            self.best_epoch = epoch
            if validation is not None:
                self.best_val_loss, self.best_summary = validation.criterion, validation.summary()
            # a copy where the weights are (no transfer to the host during training)
            self.best_model = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def stop_reason(self, elapsed: float) -> str | None:
        """The first rule of :data:`STOP_RULES` that holds, or None to go on."""
        return next((name for name, rule in STOP_RULES.items() if rule(self, elapsed)), None)

    def _write_due(self) -> bool:
        every = self.schedule.checkpoint_every_s
        if every is None or self.writer is None or not self.best_model:
            return False
        if self.written is None:
            return True
        best, when = self.written
        return best != self.best_epoch and time.monotonic() - when >= every

    def fit(self, progress: bool = True, started: float | None = None, desc: str = "train") -> nn.Module:
        """Run epochs until a stop rule holds (or the deadline cuts one short); load and return the kept model.

        ``started`` (``time.monotonic()``) is when the budget of ``max_minutes`` began (default: now).
        """
        from xai_loc.progress import tqdm

        warm = getattr(self.hooks.assemble, "warm", None)
        tic = time.monotonic()
        if warm is not None and self.stop_reason(0.0) is None:
            warm()
        started = time.monotonic() if started is None else started + time.monotonic() - tic
        self.call_start_epoch = self.epoch  # the first epoch of every call runs, whatever the budget
        bar = tqdm(total=self.schedule.validations(self.schedule.max_epochs), initial=self.epoch,
                   disable=not progress, desc=desc, unit="epoch")
        while (reason := self.stop_reason(time.monotonic() - started)) is None:
            try:
                self.run_epoch(progress)
            except _DeadlineReached:
                reason = "deadline"
                break
            except _Diverged as err:
                reason, self.diverged = "diverged", str(err)
                break
            # shown with the update, which keeps the bar's interval (a refresh here would write a log line per epoch)
            bar.set_postfix(train=f"{self.history['train_loss'][-1]:.4g}", best=self.best_epoch,
                            lr=f"{self.history['lr'][-1]:.2g}", refresh=False,
                            **{k: f"{self.history[k][-1]:.4g}" for k in self.hooks.series})
            bar.update(1)
            if self._write_due():
                self.write()
        bar.close()
        self.stopped = reason
        if self.best_model:
            self.model.load_state_dict(self.best_model)
        return self.model

    def write(self) -> Any:
        """Write the kept model with :attr:`writer`; remember when."""
        result = self.writer()
        self.written = (self.best_epoch, time.monotonic())
        return result

    def record(self) -> dict[str, Any]:
        """The run for a card's ``training`` entry: epochs, steps, stop rule, history, timing."""
        return {"seed": self.schedule.seed, "epochs": self.paper_epochs, "validations": self.epoch,
                "steps": self.steps, "stopped": self.stopped, "wall_seconds": self.seconds,
                "seconds_per_epoch": self.seconds / max(1, self.paper_epochs), "history": self.history,
                "threads": torch.get_num_threads(), "device": device_name(self.device)}


def _over_budget(run: Trainer, elapsed: float) -> bool:
    """Whether the next epoch would end after ``max_minutes`` of this call (estimated from the
    mean epoch); never before the first epoch of a call, so that a resumed run always advances."""
    if run.schedule.max_minutes is None or run.epoch <= run.call_start_epoch:
        return False
    return elapsed + float(np.mean(run.history["seconds"])) > 60.0 * run.schedule.max_minutes


def _past_deadline(run: Trainer, elapsed: float) -> bool:
    """Whether the next epoch would end after the deadline (estimated from the last three); never
    before the first epoch of a run that has no model to keep yet."""
    if run.schedule.deadline is None or not run._may_stop_early():
        return False
    recent = run.history["seconds"][-3:]
    return _now() + (float(np.mean(recent)) if recent else 0.0) > run.schedule.deadline


def _early_stop(run: Trainer, elapsed: float) -> bool:
    patience = run.schedule.early_stop_patience
    return (run.hooks.validate is not None and patience is not None
            and run.epoch - run.best_epoch >= run.schedule.validations(patience))


#: Stop rules, checked before every epoch in this order; the name is recorded in the card.
STOP_RULES: dict[str, Callable[[Trainer, float], bool]] = {
    "early_stopping": _early_stop,
    "max_epochs": lambda run, elapsed: run.paper_epochs >= run.schedule.max_epochs,
    "time_budget": _over_budget,
    "deadline": _past_deadline,
}


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, hooks: Hooks, schedule: Schedule, *,
        progress: bool = True, started: float | None = None, desc: str = "train", **settings: Any) -> Trainer:
    """Build a :class:`Trainer` (``settings``: its further fields), resume it from its state, run it.

    Returns
    -------
    Trainer
        After the run, with the kept model loaded into ``model``.
    """
    trainer = Trainer(model, optimizer, hooks, schedule, **settings)
    trainer.fit(progress, started, desc)
    return trainer


def cached_batches(features: Callable[[], np.ndarray | torch.Tensor], targets: torch.Tensor,
                   device: torch.device) -> Callable[[list[np.ndarray]], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """An :attr:`Hooks.assemble` over a fixed front end's outputs and the examples' targets.

    ``features()`` returns every example's front-end output (a float16 array or a tensor); it
    is called once, by :meth:`Trainer.fit` before its clock starts (``assemble.warm``) or else at
    the first batch, so a resumed run with no epoch left computes nothing.
    """
    cache = functools.cache(features)

    def assemble(parts: list[np.ndarray]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        data = cache()
        for idx in parts:
            x = data[torch.as_tensor(idx)].float() if isinstance(data, torch.Tensor) else \
                torch.from_numpy(data[idx].astype(np.float32))
            yield x.to(device), targets[torch.as_tensor(idx)].to(device)

    assemble.warm = cache
    return assemble


def shuffled(n: int) -> Callable[[np.random.Generator], np.ndarray]:
    """An :attr:`Hooks.picks` that visits every one of ``n`` examples once per draw, in random order."""
    return lambda rng: rng.permutation(n)


# -- storage ----------------------------------------------------------------------------------------

#: Storage dtypes a checkpoint may be asked for; ``'auto'`` applies :func:`float16_check`.
STORAGE = ("auto", "float32", "float16")


def check_storage(dtype: str) -> str:
    """``dtype`` if it is one of :data:`STORAGE`, else one line naming it and the allowed ones."""
    if dtype not in STORAGE:
        raise InputError(f"dtype={dtype!r} is not allowed; use {', '.join(map(repr, STORAGE[:-1]))} or "
                         f"{STORAGE[-1]!r}")
    return dtype


def float16_check(model: nn.Module, score: Callable[[nn.Module], dict[str, Any]], tolerance: dict[str, float],
                  dtype: str = "auto") -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Decide whether ``model`` may be stored in float16: no metric of ``tolerance`` may move by more than its value,
    and at least one of them must have been compared (scored by both models).

    Parameters
    ----------
    model
        The trained model (float32).
    score
        ``score(model) -> entry`` with the metrics under ``entry["metrics"]`` (the card's test
        entry, :func:`~xai_loc.models.checkpoint.result_entry`).
    tolerance
        Metric -> largest absolute change allowed (metrics the entry records as None are skipped).
    dtype
        ``'auto'`` (the rule decides), ``'float32'`` or ``'float16'`` (forced; still scored).

    Returns
    -------
    stored, entry, record
        The storage dtype, the entry of the model as stored, and the card's ``storage`` record
        (both scores of the compared metrics, their changes, the tolerance, the verdict).
    """
    check_storage(dtype)
    half = copy.deepcopy(model)
    half.load_state_dict({k: (v.half().float() if v.is_floating_point() else v)
                          for k, v in model.state_dict().items()})
    entries = {"float32": score(model.eval())}
    try:
        entries["float16"] = score(half.eval())
    except InputError as err:  # a weight beyond float16's range (65504) predicts inf: nothing to compare
        if dtype == "float16":
            raise
        entries["float16"] = {"metrics": {}, "refused": str(err)}
    m32, m16 = (entries[k]["metrics"] for k in ("float32", "float16"))
    compared = [k for k in tolerance if isinstance(m32.get(k), (int, float)) and isinstance(m16.get(k), (int, float))]
    change = {k: abs(float(m16[k]) - float(m32[k])) for k in compared}
    within = bool(compared) and all(change[k] <= tolerance[k] for k in compared)  # nothing compared: no evidence
    stored = ("float16" if within else "float32") if dtype == "auto" else dtype
    record = {"dtype": stored,
              "rule": "float16 when no metric moves by more than its tolerance (at least one compared)",
              "tolerance": dict(tolerance), "within_tolerance": within, "change": change,
              **{name: {k: entries[name]["metrics"][k] for k in compared} for name in entries}}
    if "refused" in entries["float16"]:
        record["float16_refused"] = entries["float16"]["refused"]
    return stored, entries[stored], record


def save_trained(model: nn.Module, out: str | Path, *, condition: dict[str, Any], training: dict[str, Any],
                 dataset: dict[str, Any], score: Callable[[nn.Module], dict[str, Any]] | None = None,
                 tolerance: dict[str, float] | None = None, dtype: str = "auto") -> Path:
    """Store a trained model of any family with its card: scored and stored by :func:`float16_check` where
    there is a ``score``, else in ``dtype`` (float32 for ``'auto'``: no evidence for float16).

    Parameters
    ----------
    model
        The trained model (float32, in eval mode).
    out
        The checkpoint's path.
    condition, training, dataset
        The card's entries (:func:`~xai_loc.models.checkpoint.build_card`); ``training`` gets
        ``stored_dtype``.
    score, tolerance, dtype
        As for :func:`float16_check`.

    Returns
    -------
    Path
        ``out``.
    """
    from xai_loc.models.checkpoint import build_card, save_checkpoint

    check_storage(dtype)
    stored, test, storage = ("float32" if dtype == "auto" else dtype), None, None
    if score is not None:
        stored, test, storage = float16_check(model, score, tolerance, dtype)
    card = build_card(condition=condition, training={**training, "stored_dtype": stored}, dataset=dataset,
                      test=test, storage=storage)
    return save_checkpoint(model, out, card, dtype=stored)
