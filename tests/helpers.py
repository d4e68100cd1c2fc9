"""Helpers shared by test modules (imported as ``helpers``: pytest puts this folder on ``sys.path``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from xai_loc.errors import InputError

#: The paper's rate, speed of sound, a short window, and its 16-microphone array.
FS, C, T = 16000.0, 343.0, 512
MICS = np.stack([0.575 + 0.15 * np.arange(16), np.full(16, 7.0), np.full(16, 1.2)], axis=1)


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` by its relative name, with its bytes."""
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def one_line(fn, *args, **kwargs) -> str:
    """The message of the :class:`InputError` that ``fn(*args, **kwargs)`` raises, checked to be one line."""
    with pytest.raises(InputError) as err:
        fn(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


def run_cli(args, **kwargs):
    """``xai-loc --threads 1 ARGS`` in this process."""
    from xai_loc.cli import main

    return CliRunner().invoke(main, ["--threads", "1", *args], **kwargs)


def refused(result, *says) -> str:
    """Exit code 2 (no traceback) with one line on stderr holding every one of ``says``; that line."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.stderr.count("\n") == 1, result.stderr
    for text in says:
        assert text in result.stderr, result.stderr
    return result.stderr


def noise_windows(n: int) -> xr.Dataset:
    """``n`` windows of independent noise on the paper's 16 microphones, sources on a small square."""
    rng = np.random.default_rng(5)
    positions = np.stack([np.linspace(1.5, 1.9, n), np.linspace(5.3, 5.7, n), np.full(n, 1.2)], axis=1)
    return xr.Dataset({"signals": (("window", "mic", "time"), rng.standard_normal((n, 16, T)))},
                      coords={"window": np.arange(n), "mic": np.arange(16), "time": np.arange(T) / FS,
                              "xyz": ["x", "y", "z"], "mic_position": (("mic", "xyz"), MICS),
                              "source_position": (("window", "xyz"), positions)},
                      attrs={"fs": FS, "c": C, "t60": 0.15, "snr": 25.0})


def tf32_flags() -> tuple[bool, bool]:
    """TF32 of matrix products and of cuDNN convolutions: (allowed, allowed) (the ``tf32_on`` fixture allows both
    for a test)."""
    import torch

    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def dies_in_the_second_block(monkeypatch, owner, name: str = "render", error: type[BaseException] = RuntimeError
                             ) -> list:
    """Make ``owner.name(self, items, ...)`` raise ``error('killed')`` on its second call (a run killed in its
    second block; ``KeyboardInterrupt`` as a signal would); returns the list of the items it is called with
    (``monkeypatch`` undoes it)."""
    real, calls = getattr(owner, name), []

    def dies(self, items, *args, **kwargs):
        calls.append(items)
        if len(calls) == 2:
            raise error("killed")
        return real(self, items, *args, **kwargs)

    monkeypatch.setattr(owner, name, dies)
    return calls


def perturbation_result(**attrs) -> xr.Dataset:
    """A small perturbation result of one LocCNN (two modes, three percentages) recording ``attrs`` (T60 0.6 s, SNR
    10 dB unless given)."""
    curve = np.array([[[0.1, 0.2, 0.3], [0.1, 0.15, 0.2]]])
    return xr.Dataset({"mae_mean": (("model", "mode", "percentage"), curve), "aopc": (("model", "mode"), [[0.1, 0.05]]),
                       "mae": (("model", "mode", "percentage", "xyz"), np.repeat(curve[..., None], 3, -1)),
                       "baseline_mae": ("xyz", [0.12, 0.14, 0.13]), "baseline_mae_mean": ((), 0.13)},
                      coords={"model": ["loccnn"], "mode": ["relevance", "energy"], "percentage": [0.0, 10.0, 50.0],
                              "xyz": ["x", "y", "z"]},
                      attrs={"t60": 0.6, "snr": 10.0, "method": "lrp", "fill": "zero", "n_windows": 7,
                             "n_sources": 2, "models": "{}", **attrs})


def small_model(n_mics: int, n_time: int):
    """A LocCNN of seeded random weights in eval mode (no training needed to explain it)."""
    import torch

    from xai_loc.models import LocCNN

    torch.manual_seed(3)
    return LocCNN(n_mics, n_time).eval()


#: A small configuration of every registered architecture (a new one must add its own; tests/test_pipeline.py checks).
TINY = {
    "loccnn": {"n_mics": 4, "n_samples": 175},
    "samplecnn": {"n_mics": 4, "n_samples": 729},
    "cochcnn": {"layers": ["c4 1x8", "p1x8", "c8 2x4", "p2x4"], "n_samples": 4800, "dense": 16},
    "tfcnn": {"channels": [4, 8], "dense": [16], "n_samples": 1600},
    "cuenet": {"channels": 8, "hidden": 16, "n_samples": 2205},
    "bast": {"dim": 16, "depth": 1, "heads": 2, "dim_head": 8, "mlp_dim": 32, "n_samples": 4000},
}


def never(what: str):
    """A stand-in for ``what`` that fails the test if it is called."""
    def work(*args, **kwargs):
        raise AssertionError(f"{what} ran before the refusal")

    return work
