"""Checkpoints: xai-loc's self-describing format and import of the paper's state dicts.

xai-loc's format is one ``.safetensors`` file. Its string metadata holds, under
:data:`CARD_KEY`, a JSON "card" from which :func:`load_model` rebuilds the model alone::

    {
      "format": "xai-loc-checkpoint", "format_version": 1,
      "architecture": "samplecnn",              # a name in xai_loc.models.MODELS
      "config": {"n_mics": 16, "n_samples": 5120},
      "condition": {"t60": 0.6, "snr": 10.0},   # seconds, dB (or, for models trained
                                                # on a mix: {"rooms": [...], "snr": [lo, hi]})
      "training": {...} | null,                 # recipe, seed, epochs, time ...
      "dataset": {...} | null,                  # e.g. {"digest": ...}
      "metrics": {"val": {...}, "test": {...}}, # each {"metrics": {...}, "baseline": {...}, ...}
      "storage": {...},                         # the float16 check, where one was made
      "source": {...},                          # only for imported files, with the paper's data:
      "data_convention": "gpurir", "data_fs": 16000, "data_mic_position": [[x, y, z], ...],
      "software": {"torch": ..., ...}, "created": "2024-05-01T12:00:00Z",
      "dtype": "float16",                       # dtype of the stored weights
      "weights_sha256": "9f2c...",              # of the tensors' bytes; checked by load_model
      "card_sha256": "4e1a..."                  # of the card's other fields; checked by read_card
    }

The paper's released checkpoints (Comanducci et al., EUSIPCO 2024) are plain PyTorch
state dicts; :func:`import_paper_checkpoint` converts one into xai-loc's format. They are
read with ``torch.load(weights_only=True)`` only: a file that needs arbitrary unpickling
is refused.

Every family writes its card through :func:`build_card`; each result entry (``metrics.val``,
``metrics.test``) holds the model's numbers under ``metrics`` and a trivial predictor's under
``baseline`` (:func:`result_entry`). Cards written before that schema (results flat or under
``all``, the baseline under ``chance``, a ``float16_check`` among the metrics) are upgraded
when read (:func:`upgrade_card`), so older files load unchanged on disk.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from xai_loc.checks import is_integer, is_real
from xai_loc.data.spec import short_repr
from xai_loc.errors import InputError
from xai_loc.io import atomic_path
from xai_loc.models.base import Localizer
from xai_loc.models.registry import MODELS, build_configured, build_model, first_line
from xai_loc.runtime import resolve_device, software_versions

#: Metadata key of the JSON card in an xai-loc ``.safetensors`` file.
CARD_KEY = "xai_loc_card"
#: Value of the card's ``format`` field.
FORMAT = "xai-loc-checkpoint"
#: Version of the card layout written by this module.
FORMAT_VERSION = 1
#: Weight dtypes a checkpoint may be stored in.
DTYPES = {"float32": torch.float32, "float16": torch.float16}
#: Keys under which training scripts commonly wrap a state dict.
WRAPPER_KEYS = ("state_dict", "model_state_dict")

PathLike = str | os.PathLike


def file_digest(path: PathLike) -> str:
    """Return the SHA-256 hex digest of a file's bytes (for provenance records)."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def card_digest(card: dict[str, Any]) -> str:
    """SHA-256 of a card's canonical JSON (keys sorted) without its ``card_sha256``: the digest
    :func:`save_checkpoint` records and :func:`read_card` checks (safetensors keeps no checksum of its header)."""
    canonical = json.dumps({k: v for k, v in card.items() if k != "card_sha256"}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _dtype_name(dtype: torch.dtype | str) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPES:
        raise InputError(f"checkpoint dtype {name!r} is not allowed; use one of {', '.join(DTYPES)}")
    return name


def _check_mixture(condition: dict[str, Any]) -> dict[str, Any]:
    """A condition of models trained on a mix of rooms: ``{'rooms': [names], 'snr': [low, high] dB or None}``."""
    rooms, snr = condition.get("rooms"), condition.get("snr")
    if set(condition) != {"rooms", "snr"} or not isinstance(rooms, list) or not rooms \
            or not all(isinstance(r, str) and r for r in rooms):
        raise InputError(f"card condition {condition!r} is not allowed; use {{'rooms': [room names], "
                         "'snr': [low, high] dB or None}")
    if snr is not None and (not isinstance(snr, list) or len(snr) != 2
                            or not all(is_real(v) for v in snr) or snr[0] > snr[1]):
        raise InputError(f"card condition snr={snr!r} is not allowed; use [low, high] dB or None (no background)")
    return {"rooms": list(rooms), "snr": None if snr is None else [float(v) for v in snr]}


def _check_condition(condition: Any) -> dict[str, Any]:
    if isinstance(condition, dict) and "rooms" in condition:
        return _check_mixture(condition)
    if not isinstance(condition, dict) or set(condition) != {"t60", "snr"}:
        raise InputError(f"card condition {condition!r} is not allowed; use {{'t60': seconds, 'snr': dB}} "
                         "(or {'rooms': [names], 'snr': [low, high]} for a mix of rooms)")
    t60, snr = condition["t60"], condition["snr"]
    if not is_real(t60) or t60 <= 0:
        raise InputError(f"t60={t60!r} is not allowed; use a positive number of seconds")
    if not is_real(snr):
        raise InputError(f"snr={snr!r} is not allowed; use a finite number of dB")
    return {"t60": float(t60), "snr": float(snr)}


def _abbreviate(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown}, ... (+{len(items) - limit} more)"


def _state_dict_problems(model: Localizer, state: dict[str, Any]) -> str | None:
    """Describe how ``state`` differs from ``model.state_dict()`` in keys and shapes, or None."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    not_tensors = [k for k in state if k in expected and not isinstance(state[k], torch.Tensor)]
    misshaped = [
        f"{k} {list(state[k].shape)} (expected {list(v.shape)})"
        for k, v in expected.items()
        if isinstance(state.get(k), torch.Tensor) and state[k].shape != v.shape
    ]
    mistyped = [  # float weights stored as integers (or counters as floats) would be converted silently
        f"{k} {str(state[k].dtype).removeprefix('torch.')} (expected {str(v.dtype).removeprefix('torch.')})"
        for k, v in expected.items()
        if isinstance(state.get(k), torch.Tensor) and state[k].is_floating_point() != v.is_floating_point()
    ]
    problems = [
        f"{label} {len(keys)}: {_abbreviate(keys)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected),
                            ("not tensors", not_tensors), ("mis-shaped", misshaped), ("mis-typed", mistyped))
        if keys
    ]
    return "; ".join(problems) or None


def result_entry(metrics: dict[str, Any], baseline: dict[str, Any] | None, kind: str,
                 **extra: Any) -> dict[str, Any]:
    """A card's result entry: the model's ``metrics`` beside the ``baseline`` of a trivial predictor.

    Parameters
    ----------
    metrics, baseline
        Flat dicts of numbers (the same keys); the baseline's may be None where none exists.
    kind
        What the baseline predicts (e.g. ``'uniform random class'``).
    extra
        Further entries (per-SNR tables, sizes, skill).
    """
    return {"metrics": metrics, "baseline": None if baseline is None else {"kind": kind, "metrics": baseline},
            **extra}


def build_card(*, condition: dict[str, Any], training: dict[str, Any], dataset: dict[str, Any],
               val: dict[str, Any] | None = None, test: dict[str, Any] | None = None,
               storage: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The card of a trained model, the same keys for every family.

    Parameters
    ----------
    condition
        ``{'t60', 'snr'}`` or ``{'rooms', 'snr'}`` of the training data.
    training
        The recipe and the run (:meth:`xai_loc.models.trainer.Trainer.record` and the family's config).
    dataset
        Provenance of the training (and validation, test) data.
    val, test
        Result entries (:func:`result_entry`), where scored.
    storage
        The float16 check (:func:`xai_loc.models.trainer.float16_check`), where made.
    extra
        Further top-level records (e.g. ``data_convention``).
    """
    metrics = {name: entry for name, entry in (("val", val), ("test", test)) if entry is not None}
    card = {"condition": condition, "training": training, "dataset": dataset, "metrics": metrics, **extra}
    if storage is not None:
        card["storage"] = storage
    return card


def _upgrade_entry(entry: Any) -> Any:
    """A result entry in the :func:`result_entry` layout (idempotent)."""
    if not isinstance(entry, dict) or "metrics" in entry:
        return entry
    entry = dict(entry)
    if "all" in entry:  # per-condition tables: {"all", "by_<x>", "baseline": {"kind", "all", ...}}
        metrics = entry.pop("all")
        baseline = entry.pop("baseline", None)
        if isinstance(baseline, dict) and "all" in baseline:
            baseline = {**{k: v for k, v in baseline.items() if k != "all"}, "metrics": baseline["all"]}
        return {"metrics": metrics, "baseline": baseline, **entry}
    chance = entry.pop("chance", None)
    return {"metrics": entry, "baseline": None if chance is None else {"kind": "chance", "metrics": chance}}


def upgrade_card(card: dict[str, Any]) -> dict[str, Any]:
    """A card in the current schema: result entries as :func:`result_entry` builds them, the float16
    check under ``storage``. Cards already in it come back equal."""
    metrics = dict(card.get("metrics") or {})
    check = metrics.pop("float16_check", None)
    card = {**card, "metrics": {k: _upgrade_entry(v) for k, v in metrics.items()}}
    if check is not None and "storage" not in card:
        card["storage"] = {d: {k: v.get(d) for k, v in check.items()} for d in ("float32", "float16")}
    storage = card.get("storage")
    if isinstance(storage, dict) and storage.get("dtype") is None:  # the stored dtype, where the record lacks it
        card["storage"] = {"dtype": card.get("dtype"), **{k: v for k, v in storage.items() if k != "dtype"}}
    return card


def save_checkpoint(
    model: Localizer,
    path: PathLike,
    card: dict[str, Any],
    dtype: torch.dtype | str = torch.float32,
) -> Path:
    """Write ``model`` and its card to one ``.safetensors`` file, atomically.

    Parameters
    ----------
    model
        A registered localizer; its architecture name and ``config`` go into the card.
    path
        Destination file; written aside in the same folder, then renamed over ``path``.
    card
        Provenance: ``condition`` ({'t60', 'snr'}, or {'rooms', 'snr'} for a model trained on
        a mix of rooms; required) and optionally ``training``,
        ``dataset``, ``metrics``, ``source``, ``software``, ``created``; must be JSON-able.
        ``architecture``, ``config`` and ``dtype`` are taken from ``model`` and ``dtype``; ``weights_sha256`` and
        ``card_sha256`` are recomputed (those of a card read from another file are replaced).
    dtype
        Storage dtype of floating-point tensors: float32 or float16.

    Returns
    -------
    Path
        ``path``.
    """
    if not model.arch_name or MODELS.get(model.arch_name) is not type(model):
        raise TypeError(f"{type(model).__name__} is not a registered model class")
    name = _dtype_name(dtype)
    full = {
        "training": None,
        "dataset": None,
        "metrics": {},
        "software": software_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **{k: v for k, v in card.items() if k != "card_sha256"},
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": model.arch_name,
        "config": model.config,
        "condition": _check_condition(card.get("condition")),
        "dtype": name,
    }
    metadata = {CARD_KEY: json.dumps(full, sort_keys=True)}

    tensors = {}
    for key, value in model.state_dict().items():
        value = value.detach().to("cpu")
        if value.is_floating_point():
            if not torch.isfinite(value).all():
                raise InputError(f"weight {key} holds NaN or inf; a checkpoint needs finite weights")
            value = value.to(DTYPES[name])
            if not torch.isfinite(value).all():
                raise InputError(f"weight {key} does not fit {name} (overflow); save as float32")
        tensors[key] = value.contiguous()

    # The tensors' bytes do not depend on the metadata (safetensors pads its header, not the data),
    # so their digest is taken from a first serialization (in memory) and recorded in the card.
    full["weights_sha256"] = _data_digest(io.BytesIO(save(tensors, metadata=metadata)))
    full["card_sha256"] = card_digest(json.loads(json.dumps(full)))  # of the card as read_card parses it
    blob = save(tensors, metadata={CARD_KEY: json.dumps(full, sort_keys=True)})
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(blob)
    return path


def weights_digest(path: PathLike) -> str:
    """SHA-256 of a checkpoint's tensor bytes, the ``weights_sha256`` of its card: unlike
    :func:`file_digest` it does not change when only the card does."""
    with open(path, "rb") as handle:
        return _data_digest(handle)


def _data_digest(handle: BinaryIO) -> str:
    """sha256 of a safetensors file's data section: every tensor's bytes, after the header."""
    head = handle.read(8)
    if len(head) < 8:
        return ""
    handle.seek(8 + struct.unpack("<Q", head)[0])
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def check_weights(path: PathLike, card: dict[str, Any]) -> None:
    """Refuse a checkpoint whose tensor bytes differ from the digest its card records (``weights_sha256``).

    Cards written before the digest existed record none and are not checked.
    """
    recorded = card.get("weights_sha256")
    if recorded is None:
        return
    if weights_digest(path) != recorded:
        raise InputError(f"checkpoint {path} is damaged: its weights do not match the sha256 its card records; "
                         "copy it again (or retrain it)")


def checkpoint_path(out: PathLike) -> Path:
    """``out`` as a path, refused (one line) unless it names a ``.safetensors`` file."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise InputError(f"checkpoint path {out} is not allowed; use a file name ending in .safetensors")
    return out


def _is_rate(value: Any) -> bool:
    return is_real(value) and value > 0


def _is_positions(value: Any) -> bool:
    return isinstance(value, list) and len(value) > 0 and all(
        isinstance(row, list) and len(row) == 3 and all(is_real(v) for v in row) for row in value)


_RATE = (_is_rate, "a positive number of Hz")
_POSITIONS = (_is_positions, "a list of finite [x, y, z] positions in metres, one per microphone")
#: Card values that readers take for numbers, by their keys into the card: ``(allowed(value), what is
#: allowed)``; :func:`read_card` refuses another value. The sample rate and microphone positions of the
#: training data are :func:`~xai_loc.models.zoo.data_recording`'s; the stored dtype is checked against the
#: tensors by :func:`load_model`.
CARD_VALUES: dict[tuple[str, ...], tuple[Any, str]] = {
    ("dtype",): (lambda value: isinstance(value, str) and value in DTYPES, f"one of {', '.join(DTYPES)}"),
    ("data_fs",): _RATE, ("dataset", "train", "fs"): _RATE,
    ("data_mic_position",): _POSITIONS, ("dataset", "train", "mic_position"): _POSITIONS,
}


def read_card(path: PathLike) -> dict[str, Any]:
    """Return the card of an xai-loc checkpoint.

    Raises
    ------
    InputError
        If the file is missing, not safetensors, or carries no valid xai-loc card, or a card that does not match
        the ``card_sha256`` it records (cards written before that digest record none and are not checked, as
        :func:`check_weights` does with ``weights_sha256``).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"checkpoint {path!r} is not allowed; give the path of a .safetensors file")
    path = Path(path)
    if path.is_dir():
        raise InputError(f"checkpoint {path} is a folder; give the path of a .safetensors file")
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise InputError(f"checkpoint {path} is not a safetensors file ({first_line(err)})") from None
    if CARD_KEY not in metadata:
        raise InputError(
            f"checkpoint {path} has no xai-loc card; convert the paper's .pth files with "
            "import_paper_checkpoint (xai-loc models import)"
        )
    try:
        card = json.loads(metadata[CARD_KEY])
    except json.JSONDecodeError as err:
        raise InputError(f"checkpoint {path} has a corrupt card ({err})") from None
    if isinstance(card, dict) and "card_sha256" in card and card["card_sha256"] != card_digest(card):
        raise InputError(f"checkpoint {path} is damaged: its card does not match the sha256 it records "
                         "(card_sha256); copy it again (or retrain it)")
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise InputError(f"checkpoint {path} has a card that is not in the {FORMAT} format")
    version = card.get("format_version")
    if not is_integer(version) or not 1 <= version <= FORMAT_VERSION:
        raise InputError(f"checkpoint {path} has card format version {short_repr(version, 40)}; allowed: an integer "
                         f"from 1 to {FORMAT_VERSION}, the newest this xai-loc reads")
    arch = card.get("architecture")
    if not isinstance(arch, str) or arch not in MODELS:
        raise InputError(
            f"checkpoint {path} names architecture {short_repr(arch, 40)}, which is not registered; "
            f"registered: {', '.join(sorted(MODELS))} (install the package that provides it: plug-ins join through "
            "the entry-point group xai_loc.localizers)"
        )
    if not isinstance(card.get("config"), dict):
        raise InputError(f"checkpoint {path} has no constructor config in its card")
    try:  # as save_checkpoint wrote it: every reader (models list, the study, the report) formats it
        _check_condition(card.get("condition"))
    except InputError as err:
        raise InputError(f"checkpoint {path} has a card whose {err}") from None
    for field, value in _card_records(card):
        if value is not None and not isinstance(value, dict):
            raise InputError(f"checkpoint {path} has a card whose {field} is {type(value).__name__} "
                             f"{short_repr(value, 40)}; a mapping (or none) is allowed")
    for keys, (allowed, what) in CARD_VALUES.items():
        value = card
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None and not allowed(value):
            raise InputError(f"checkpoint {path} has a card whose {'.'.join(keys)} is {short_repr(value, 40)}; "
                             f"{what} (or none) is allowed")
    return upgrade_card(card)


def _card_records(card: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """``(field, value)`` of the card records that readers take for mappings (in either layout of
    :func:`upgrade_card`), each yielded before its contents are read: a caller that stops at a value
    that is not a mapping never reads into it."""
    for key in ("training", "dataset", "metrics", "storage"):
        yield key, card.get(key)
    yield "training.config", (card.get("training") or {}).get("config")
    yield "dataset.train", (card.get("dataset") or {}).get("train")
    for name, entry in (card.get("metrics") or {}).items():
        yield f"metrics.{name}", entry
        for key, value in (entry or {}).items():
            if name == "float16_check" or key in ("metrics", "baseline", "all", "chance"):
                yield f"metrics.{name}.{key}", value
            if key == "baseline":
                for inner in ("metrics", "all"):
                    yield f"metrics.{name}.baseline.{inner}", (value or {}).get(inner)


def load_model(path: PathLike, device: str | torch.device = "cpu") -> Localizer:
    """Rebuild a model from an xai-loc checkpoint alone.

    Parameters
    ----------
    path
        An xai-loc ``.safetensors`` checkpoint.
    device
        'cpu', 'cuda' or 'cuda:N'.

    Returns
    -------
    Localizer
        The model in eval mode with float32 weights, on ``device``.
    """
    device = resolve_device(str(device))
    card = read_card(path)
    model = build_configured(card["architecture"], card["config"], f"checkpoint {path}")
    check_weights(path, card)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as err:
        raise InputError(f"checkpoint {path} has unreadable weights ({first_line(err)})") from None
    problems = _state_dict_problems(model, state)
    if problems:
        raise InputError(f"checkpoint {path} does not match {card['architecture']}: {problems}")
    _check_values(state, path, card.get("dtype"))
    model.load_state_dict(state, strict=True)  # copies into the float32 parameters
    return model.to(device).eval()


def _check_values(state: dict[str, torch.Tensor], path: PathLike, dtype: str | None = None) -> None:
    """Refuse weights with NaN or infinity and negative BatchNorm running variances: such a model's outputs
    (NaN) and relevance are meaningless. ``dtype``: the stored dtype a card records (None: not checked); a
    floating tensor of another dtype is refused, since ``weights_sha256`` covers the tensors' bytes but not the
    dtype they are read as."""
    for key, value in state.items():
        if dtype is not None and value.is_floating_point() and value.dtype != DTYPES[dtype]:
            raise InputError(f"checkpoint {path} stores {key} as {str(value.dtype).removeprefix('torch.')} but its "
                             f"card records {dtype} weights; copy it again (or retrain it)")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise InputError(f"checkpoint {path} has non-finite weights in {key} (NaN or inf); it cannot be used")
        if key.endswith("running_var") and value.is_floating_point() and (value < 0).any():
            raise InputError(f"checkpoint {path} has negative BatchNorm variances in {key} (smallest "
                             f"{value.min().item():g}); variances must be >= 0, it cannot be used")


def _check_file(path: Path) -> None:
    """One line where ``path`` is no regular file: missing, or a device, a pipe or a socket (read as a
    checkpoint, ``/dev/null`` was said not to exist)."""
    if not path.exists():
        raise InputError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise InputError(f"checkpoint {path} is not a regular file; give the path of a .safetensors file")


def _read_paper_state_dict(src: Path) -> dict[str, Any]:
    _check_file(src)
    try:  # an xai-loc checkpoint would be taken for a state dict and lose its card
        with safe_open(str(src), framework="pt") as f:
            carded = CARD_KEY in (f.metadata() or {})
    except (SafetensorError, OSError):
        carded = False
    if carded:
        raise InputError(f"{src} is already an xai-loc checkpoint (it has a card); use it as it is, not through "
                         "import")
    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found and not found.group(1).startswith("torch."):
            raise InputError(
                f"refused {src}: it needs unpickling of arbitrary objects ({found.group(1)}); "
                "only plain state dicts of tensors are accepted"
            ) from None
        raise InputError(f"checkpoint {src} is not a PyTorch state dict or is corrupt") from None
    except Exception as err:  # the weights-only unpickler fails with many types on foreign bytes
        raise InputError(f"checkpoint {src} is not a PyTorch state dict or is corrupt ({first_line(err)})") from None
    if isinstance(state, dict):
        for key in WRAPPER_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise InputError(f"checkpoint {src} holds a {type(state).__name__}, not a state dict")
    return state


def load_paper_model(src: PathLike, arch: str, n_mics: int = 16, n_samples: int = 5120) -> Localizer:
    """Load one of the paper's state-dict files into a fresh model, strictly.

    Parameters
    ----------
    src
        A ``.pth`` file: a state dict, or a dict wrapping one under 'state_dict' or
        'model_state_dict'. Read with ``torch.load(weights_only=True)``.
    arch
        Registered architecture name ('loccnn' or 'samplecnn').
    n_mics, n_samples
        Constructor arguments; the paper's files are for 16 microphones, 5120 samples.

    Returns
    -------
    Localizer
        The model in eval mode, float32, on the CPU.
    """
    src = Path(src)
    model = build_model(arch, n_mics=n_mics, n_samples=n_samples)
    state = _read_paper_state_dict(src)
    problems = _state_dict_problems(model, state)
    if problems:
        raise InputError(f"checkpoint {src} does not fit {arch}: {problems}")
    _check_values(state, src)
    model.load_state_dict(state, strict=True)
    return model.float().eval()


def import_paper_checkpoint(
    src: PathLike,
    arch: str,
    t60: float,
    snr: float,
    dst: PathLike | None = None,
    *,
    n_mics: int = 16,
    n_samples: int = 5120,
) -> Path:
    """Convert one of the paper's state-dict files into an xai-loc checkpoint.

    Parameters
    ----------
    src
        The paper's ``.pth`` file (see :func:`load_paper_model`).
    arch
        Registered architecture name ('loccnn' or 'samplecnn').
    t60, snr
        The condition the model was trained for, in seconds and dB.
    dst
        Output file; defaults to ``src`` with the suffix ``.safetensors``.
    n_mics, n_samples
        Constructor arguments of the model.

    Returns
    -------
    Path
        The written checkpoint. Its card records the source file's name and SHA-256, and the paper's data:
        its simulation convention, sample rate and, for a model of the paper's 16 microphones, their positions
        (:func:`~xai_loc.models.zoo.data_recording`).

    Raises
    ------
    InputError
        Where ``dst`` (or its default) is ``src`` itself: the source file is never overwritten.
    """
    from xai_loc.data.scene import paper_scene

    src = Path(src)
    dst = src.with_suffix(".safetensors") if dst is None else Path(dst)
    if dst.exists() and src.exists() and dst.samefile(src):
        raise InputError(f"output {str(dst)!r} would overwrite the source file {str(src)!r}; give another output")
    condition = _check_condition({"t60": t60, "snr": snr})
    model = load_paper_model(src, arch, n_mics=n_mics, n_samples=n_samples)
    scene = paper_scene()
    card = {
        "condition": condition,
        "data_convention": "gpurir",  # the paper simulated its data with gpuRIR
        "data_fs": scene.room.fs,  # at 16 kHz; with the paper's array only where the model takes its microphones
        **({"data_mic_position": scene.mics.tolist()} if n_mics == len(scene.mics) else {}),
        "source": {"kind": "paper-state-dict", "file": src.name, "sha256": file_digest(src)},
    }
    return save_checkpoint(model, dst, card)
