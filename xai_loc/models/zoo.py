"""The shipped pretrained checkpoints and summaries of checkpoint folders."""
from __future__ import annotations

import os
from pathlib import Path

from xai_loc.errors import InputError
from xai_loc.models.checkpoint import read_card

PRETRAINED_ENV = "XAI_LOC_PRETRAINED"

#: Test MAE per coordinate (metres) reported by Comanducci et al. (EUSIPCO 2024), by
#: architecture and (T60 s, SNR dB).
PAPER_MAE = {
    "loccnn": {(0.15, 25.0): 0.088, (0.3, 20.0): 0.103, (0.4, 15.0): 0.106, (0.6, 10.0): 0.110},
    "samplecnn": {(0.15, 25.0): 0.087, (0.3, 20.0): 0.097, (0.4, 15.0): 0.095, (0.6, 10.0): 0.111},
}


def pretrained_dir() -> Path:
    """Folder of the shipped checkpoints: ``$XAI_LOC_PRETRAINED`` or ``pretrained/`` of the source tree."""
    return Path(os.environ.get(PRETRAINED_ENV, Path(__file__).resolve().parents[2] / "pretrained"))


def list_checkpoints(folder: str | Path) -> list[str]:
    """One line per xai-loc checkpoint in ``folder``: file, architecture, condition, test error."""
    rows = []
    for path in sorted(Path(folder).glob("*.safetensors")):
        card = read_card(path)
        cond = card.get("condition") or {}
        test = (card.get("metrics") or {}).get("test") or {}
        mae = (test.get("metrics") or {}).get("mae")
        base = ((test.get("baseline") or {}).get("metrics") or {}).get("mae")
        err = (f"test MAE {mae:.3f} m/coord (constant baseline {base:.3f})" if mae is not None and base is not None
               else "test MAE not recorded")
        rows.append(f"{path.name:40s} {card['architecture']:10s} T60 {cond.get('t60')} s, "
                    f"SNR {cond.get('snr')} dB, {err}")
    return rows


def checkpoint_name(arch: str, t60: float, snr: float) -> str:
    """File name of a zoo checkpoint, e.g. ``loccnn_t60-0.6_snr-10.safetensors``."""
    return f"{arch}_t60-{float(t60):g}_snr-{float(snr):g}.safetensors"


def shipped_checkpoint(arch: str, t60: float, snr: float, folder: str | Path | None = None) -> Path:
    """The shipped checkpoint of an architecture and condition, or a one-line error listing what exists."""
    folder = Path(folder) if folder is not None else pretrained_dir()
    path = folder / checkpoint_name(arch, t60, snr)
    if not path.is_file():
        have = ", ".join(sorted(p.stem for p in folder.glob("*.safetensors"))) or "none"
        raise InputError(f"no shipped checkpoint {path.name} in {folder} (available: {have}); "
                         "pass --checkpoint or train one with 'xai-loc train'")
    return path
