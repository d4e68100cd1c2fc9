"""The shipped pretrained checkpoints and summaries of checkpoint folders."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from xai_loc.errors import InputError
from xai_loc.models.checkpoint import read_card
from xai_loc.models.families import family_of
from xai_loc.models.registry import MODELS

PRETRAINED_ENV = "XAI_LOC_PRETRAINED"

#: Test MAE per coordinate (metres) reported by Comanducci et al. (EUSIPCO 2024), by
#: architecture and (T60 s, SNR dB).
PAPER_MAE = {
    "loccnn": {(0.15, 25.0): 0.088, (0.3, 20.0): 0.103, (0.4, 15.0): 0.106, (0.6, 10.0): 0.110},
    "samplecnn": {(0.15, 25.0): 0.087, (0.3, 20.0): 0.097, (0.4, 15.0): 0.095, (0.6, 10.0): 0.111},
}


def same_condition(condition: tuple[float, float], other: tuple[float, float]) -> bool:
    """Whether two conditions ``(t60, snr)`` are the same: the same :func:`~xai_loc.data.store.condition_name`
    (``0.1 + 0.2`` or a float32 0.3 is 0.3; 0.2000001 is not 0.2)."""
    from xai_loc.data.store import condition_name

    return condition_name(*condition) == condition_name(*other)


def paper_mae(arch: str | None, t60: float, snr: float) -> float | None:
    """The paper's test MAE per coordinate for ``arch`` in condition (``t60``, ``snr``) (:func:`same_condition`),
    or None where the paper has none."""
    for condition, mae in PAPER_MAE.get(arch or "", {}).items():
        if same_condition((t60, snr), condition):
            return mae
    return None


#: Convention of checkpoints whose cards predate simulation conventions: xai-loc's simulator
#: then used +beta, 16-tap arrivals and a cut convolution, which the ``pyroomacoustics``
#: convention reproduces byte for byte.
LEGACY_CONVENTION = "pyroomacoustics"


def data_convention(card: dict) -> str | None:
    """The simulation convention of the data a checkpoint was trained on (None for binaural families).

    From the card's ``data_convention`` (imported and marked checkpoints) or its training
    data set's record; multichannel cards without either are :data:`LEGACY_CONVENTION`.
    """
    if "condition" not in card or "t60" not in (card.get("condition") or {}):
        return None
    train = (card.get("dataset") or {}).get("train") or {}
    return card.get("data_convention") or train.get("convention") or LEGACY_CONVENTION


def data_recording(card: dict) -> tuple[float | None, np.ndarray | None] | None:
    """Sample rate (Hz) and microphone positions ``(mic, xyz)`` (metres) of the data a checkpoint was trained on
    (None for binaural families).

    From the card's ``data_fs`` and ``data_mic_position`` (imported and shipped checkpoints) or its training data
    set's record (:func:`~xai_loc.models.checkpoint.read_card` refuses a rate that is not a positive number and
    positions that are not finite ``[x, y, z]`` rows). Either is None where the card records neither: cards written
    before these records may come from any scene, so their data are not checked.
    """
    if "condition" not in card or "t60" not in (card.get("condition") or {}):
        return None
    train = (card.get("dataset") or {}).get("train") or {}
    fs = card.get("data_fs") or train.get("fs")
    mics = card.get("data_mic_position") or train.get("mic_position")
    return (None if fs is None else float(fs)), (None if mics is None else np.asarray(mics, dtype=np.float64))


def convention_warning(card: dict, convention: str, name: str = "the model") -> str | None:
    """A one-line warning when a model meets data of another simulation convention, else None."""
    trained = data_convention(card)
    if trained is None or trained == convention:
        return None
    return (f"warning: {name} was trained on {trained}-convention data and runs on {convention}-convention data; "
            f"its errors and explanations reflect that mismatch (--convention {trained} matches its training)")


def pretrained_dir() -> Path:
    """Folder of the shipped checkpoints: ``$XAI_LOC_PRETRAINED`` (an empty one counts as unset) or
    ``pretrained/`` of the source tree."""
    return Path(os.environ.get(PRETRAINED_ENV) or Path(__file__).resolve().parents[2] / "pretrained")


#: Test metrics shown by :func:`list_checkpoints`, in this order when a card records them:
#: key -> (label, format, unit). Localizers of every family record some of these.
SUMMARY_METRICS: dict[str, tuple[str, str, str]] = {
    "mae": ("test MAE", ".3f", " m/coord"),
    "accuracy": ("accuracy", ".1%", ""),
    "top1": ("top-1", ".1%", ""),
    "top5": ("top-5", ".1%", ""),
    "accuracy_5": ("within 5 deg", ".1%", ""),
    "accuracy_10": ("within 10 deg", ".1%", ""),
    "mean_error": ("angular error", ".1f", " deg"),
    "azimuth_accuracy": ("azimuth accuracy", ".1%", ""),
    "azimuth_error": ("azimuth error", ".1f", " deg"),
    "elevation_error": ("elevation error", ".1f", " deg"),
    "front_back_rate": ("front-back", ".1%", ""),
}


def describe_condition(condition: dict) -> str:
    """``'T60 0.6 s, SNR 10 dB'`` (each number as :func:`~xai_loc.data.store.condition_number` writes it) or, for a
    mix of rooms, ``'rooms anechoic+office, SNR 5-40 dB'``."""
    if "rooms" in condition:
        snr = condition.get("snr")
        return f"rooms {'+'.join(condition['rooms'])}, " + (f"SNR {snr[0]:g} to {snr[1]:g} dB" if snr else "no noise")
    from xai_loc.data.store import condition_number

    return f"T60 {condition_number(condition['t60'])} s, SNR {condition_number(condition['snr'])} dB"


def describe_test_metrics(test: dict, arch: str) -> str:
    """The :data:`SUMMARY_METRICS` a card's test entry records (in the sense of the architecture's family,
    :attr:`~xai_loc.models.families.Family.metric_labels`; without units for an architecture this installation does
    not know: a TF-CNN's MAE is in degrees, a LocCNN's in metres), beside its baseline where there is one.

    ``test`` is a result entry (:func:`~xai_loc.models.checkpoint.result_entry`; :func:`read_card`
    upgrades older cards to it): the model's numbers under ``metrics``, the baseline's under
    ``baseline.metrics``.
    """
    metrics = test.get("metrics") or {}
    base = (test.get("baseline") or {}).get("metrics") or {}
    labels = {**SUMMARY_METRICS, **family_of(arch).metric_labels} if arch in MODELS else \
        {key: (label, fmt, "") for key, (label, fmt, _) in SUMMARY_METRICS.items()}
    parts = []
    for key, (label, fmt, unit) in labels.items():
        if isinstance(metrics.get(key), (int, float)):
            text = f"{label} {metrics[key]:{fmt}}{unit}"
            if isinstance(base.get(key), (int, float)):
                text += f" (baseline {base[key]:{fmt}})"
            parts.append(text)
    return ", ".join(parts) if parts else "test metrics not recorded"


def describe_training(training: dict, name: str | None = None) -> str:
    """``'16 epochs in 43 min on cpu (bfloat16 mixed precision), not converged, fine-tuned from X'`` from a
    card's training entry; ``name``: the checkpoint's file name. A parent recorded under that same name (the
    copy handed to the run bore it) is told by its condition and weights digest instead."""
    if not isinstance(training.get("epochs"), int):
        return ""
    parts = [f"{training['epochs']} epochs"]
    if isinstance(training.get("wall_seconds"), (int, float)):
        parts[0] += f" in {training['wall_seconds'] / 60:.0f} min" + (f" on {training['device']}"
                                                                      if training.get("device") else "")
    autocast = (training.get("config") or {}).get("autocast")
    if autocast:
        parts[0] += f" ({autocast} mixed precision)"
    if training.get("converged") is False:
        parts.append("not converged")
    if training.get("init_from"):
        init = training["init_from"]
        parent = init.get("condition") or {}
        if init.get("file") == name:
            digest = (f"weights {init['weights_sha256'][:8]}" if init.get("weights_sha256")
                      else f"file sha256 {init.get('sha256', '?')[:8]}")
            model = f"a {describe_condition(parent)} model" if parent else "an earlier model of that name"
            source = f"{model} ({digest})"
        else:
            source = init["file"] + (f" (trained on T60 {parent['t60']:g} s, SNR {parent['snr']:g} dB)"
                                     if {"t60", "snr"} <= parent.keys() else "")
        parts.append(f"fine-tuned from {source}"
                     + (" (no epoch beat it: its weights are kept)" if training.get("best_epoch") == 0 else ""))
    return ", ".join(parts)


def checkpoint_files(folder: str | Path) -> list[Path]:
    """The ``.safetensors`` files of ``folder``, sorted; hidden names are left out: the temporary files of atomic
    writes (``.<name>.<8 random characters>.tmp.safetensors``, :func:`~xai_loc.io.atomic_path`) that a killed run
    leaves behind."""
    return sorted(p for p in Path(folder).glob("*.safetensors") if not p.name.startswith("."))


def list_checkpoints(folder: str | Path) -> list[str]:
    """One line per xai-loc checkpoint in ``folder``: file, architecture, condition (and the simulation
    convention of its data), test metrics, training."""
    rows = []
    for path in checkpoint_files(folder):
        card = read_card(path)
        test = (card.get("metrics") or {}).get("test") or {}
        training = describe_training(card.get("training") or {}, path.name)
        convention = data_convention(card)
        condition = describe_condition(card.get("condition") or {}) + (f" ({convention} data)" if convention else "")
        rows.append(f"{path.name:40s} {card['architecture']:10s} {condition}, "
                    f"{describe_test_metrics(test, card['architecture'])}" + (f"; {training}" if training else ""))
    return rows


def checkpoint_name(arch: str, t60: float, snr: float) -> str:
    """File name of a zoo checkpoint, e.g. ``loccnn_t60-0.6_snr-10.safetensors``: the architecture and
    :func:`~xai_loc.data.store.condition_name` (two conditions never share one)."""
    from xai_loc.data.store import condition_name

    return f"{arch}_{condition_name(t60, snr)}.safetensors"


def shipped_path(arch: str, t60: float, snr: float, folder: str | Path | None = None) -> Path:
    """Where the shipped checkpoint of an architecture and condition is named to be (it may not exist): in ``folder``
    (default: :func:`pretrained_dir`) under :func:`checkpoint_name`."""
    return (Path(folder) if folder is not None else pretrained_dir()) / checkpoint_name(arch, t60, snr)


def shipped_checkpoint(arch: str, t60: float, snr: float, folder: str | Path | None = None) -> Path:
    """The shipped checkpoint of an architecture and condition (:func:`shipped_path`), or a one-line error listing
    what exists.

    A file is refused in one line unless its card holds that architecture and condition (:func:`same_condition`):
    one renamed or copied under another model's name is not run.
    """
    path = shipped_path(arch, t60, snr, folder)
    if not path.is_file():
        have = ", ".join(p.stem for p in checkpoint_files(path.parent)) or "none"
        where = f"{PRETRAINED_ENV}={path.parent}" if folder is None and os.environ.get(PRETRAINED_ENV) else path.parent
        raise InputError(f"no shipped checkpoint {path.name} in {where} (available: {have}); "
                         "pass --checkpoint or train one with 'xai-loc train'")
    card = read_card(path)
    held = card["condition"]  # read_card allows {t60, snr} or a mix of rooms
    if card["architecture"] != arch or not ("t60" in held and same_condition((held["t60"], held["snr"]), (t60, snr))):
        raise InputError(f"checkpoint {path} is named for {arch}, {describe_condition({'t60': t60, 'snr': snr})}, "
                         f"but its card holds {card['architecture']}, {describe_condition(held)}; give each checkpoint "
                         "the name of what it holds")
    return path
