"""Training and evaluation of the IPD/ILD TF-CNN (:mod:`xai_loc.models.tfcnn`) on scene files.

Recipe: IPD/ILD maps computed once by the model's front end and cached as float16 (64 kB per
1 s example); Adam with a cosine-annealed learning rate over the planned epochs, batches of
32; every training example once per epoch, shuffled by ``(seed, epoch)``. Loss: MSE of
``azimuth / 90`` (regression head) or the sum of the azimuth and elevation cross-entropies
(multitask head). The last epoch's model is kept and scored once on the held-out test set.
After each epoch the state goes atomically to ``<out>.state.pt``; calling
:func:`train_tfcnn` again with the same arguments continues from there with the same numbers.

Scores (:func:`azimuth_scores`) per test SNR and overall: ``accuracy_5`` and ``accuracy_10``
(share of responses within 5 and 10 degrees, inclusive: the seed implementation counts a
regression output within 5 degrees as correct), ``mae`` (mean absolute error, degrees) and
``rmse``, beside the constant baseline that always answers 0 degrees (straight ahead).
"""
from __future__ import annotations

import json
import math
import pickle
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xai_loc.errors import InputError
from xai_loc.models.classifier_training import feature_cache

__all__ = ["TFCNNTrainConfig", "azimuth_scores", "cue_cache", "train_tfcnn"]

#: Training-state ``format`` and ``version``.
STATE_FORMAT, STATE_VERSION = "xai-loc-tfcnn-state", 1
#: Largest drop of ``accuracy_5`` and rise of ``mae`` (degrees) that let ``dtype='auto'`` store float16.
FP16_TOLERANCE = {"accuracy_5": 0.002, "mae": 0.1}
RECIPE = {"loss": "MSE of azimuth/90 (regression) or azimuth + elevation cross-entropy (multitask)",
          "optimizer": "Adam, cosine-annealed learning rate over the planned epochs",
          "sampling": "every training example once per epoch, shuffled", "kept": "the last epoch's model",
          "inputs": "IPD/ILD maps computed once by the model's front end, cached as float16"}


@dataclass(frozen=True)
class TFCNNTrainConfig:
    """Recipe and run settings (``max_minutes`` bounds the epochs of one call; the state is kept)."""

    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "seed" else 1):
                raise InputError(f"{name}={v!r} is not allowed; use a positive integer")
        if self.batch_size < 2:
            raise InputError(f"batch_size={self.batch_size!r} is not allowed; use at least 2 (BatchNorm)")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"lr={self.lr!r} is not allowed; use a positive number")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise InputError(f"max_minutes={self.max_minutes!r} is not allowed; use None or a positive number")


# -- scores ---------------------------------------------------------------------------------------


def _scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    err = np.abs(pred - true)
    return {"n": int(err.size), "accuracy_5": float(np.mean(err <= 5.0 + 1e-9)),
            "accuracy_10": float(np.mean(err <= 10.0 + 1e-9)), "mae": float(err.mean()),
            "rmse": float(np.sqrt(np.mean(err ** 2)))}


def azimuth_scores(pred, true, snr) -> dict[str, Any]:
    """Scores of azimuth responses (degrees) overall and per SNR, with the 0-degree baseline.

    Returns ``{"all": {...}, "by_snr": {"-6": {...}, ...}, "baseline": {same, for always 0}}``.
    """
    pred, true, snr = (np.asarray(v, dtype=np.float64) for v in (pred, true, snr))
    if pred.shape != true.shape or pred.shape != snr.shape or pred.ndim != 1 or pred.size == 0:
        raise InputError(f"responses {pred.shape}, targets {true.shape} and SNRs {snr.shape} are not allowed; "
                         "give equal non-empty 1-D arrays")

    def table(p: np.ndarray) -> dict[str, Any]:
        return {"all": _scores(p, true), "by_snr": {f"{s:g}": _scores(p[snr == s], true[snr == s])
                                                    for s in np.unique(snr)}}

    return {**table(pred), "baseline": {"kind": "always 0 degrees", **table(np.zeros_like(true))}}


# -- prediction -------------------------------------------------------------------------------------


def cue_cache(model: nn.Module, waveforms, batch_size: int = 32, progress: bool = False) -> np.ndarray:
    """IPD/ILD maps of every example, float16 ``(n, 2, n_bins, n_frames)``."""
    return feature_cache(model.cues, waveforms, model.cue_shape, batch_size, progress, "IPD/ILD")


def _localize_cached(model: nn.Module, cache: np.ndarray, batch_size: int = 64) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([model.localize(torch.from_numpy(cache[s:s + batch_size].astype(np.float32))).numpy()
                               for s in range(0, len(cache), batch_size)])


def _check_input(model: nn.Module, ds) -> None:
    if int(ds.sizes["time"]) != model.n_samples or int(ds.attrs.get("fs", model.fs)) != model.fs:
        raise InputError(f"the scenes hold {ds.sizes['time']} samples at {ds.attrs.get('fs')} Hz but the model "
                         f"takes {model.n_samples} at {model.fs} Hz")


# -- training -----------------------------------------------------------------------------------------


def _targets(model: nn.Module, azimuth: np.ndarray, elevation: np.ndarray) -> torch.Tensor:
    from xai_loc.acoustics.directions import LATERAL_GRID

    if model.head_name == "regression":
        return torch.as_tensor(azimuth / 90.0, dtype=torch.float32)[:, None]
    el, az = np.divmod(LATERAL_GRID.nearest(azimuth, elevation), LATERAL_GRID.n_azimuths)
    return torch.as_tensor(np.stack([az, el], 1), dtype=torch.long)


def _loss(model: nn.Module, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from xai_loc.models.tfcnn import split_logits

    if model.head_name == "regression":
        return nn.functional.mse_loss(outputs / 90.0, target)
    az, el = split_logits(outputs)
    return nn.functional.cross_entropy(az, target[:, 0]) + nn.functional.cross_entropy(el, target[:, 1])


def train_tfcnn(train_scenes, out: str | Path, *, test_scenes=None, model_config: dict[str, Any] | None = None,
                config: TFCNNTrainConfig | None = None, dtype: str = "auto", progress: bool = True) -> Path:
    """Train a TF-CNN on a scene file and write its checkpoint; resume if ``out`` has a saved state.

    Parameters
    ----------
    train_scenes, test_scenes
        Scene files (:func:`xai_loc.data.ipd_ild_scenes.render_scenes`) or opened datasets.
    out
        The ``.safetensors`` checkpoint; the state lives in ``<out>.state.pt``.
    model_config
        Constructor arguments of ``'tfcnn'`` (default: small width, regression head).
    dtype
        ``'float32'``, ``'float16'`` or ``'auto'`` (float16 when it changes the test scores by
        at most :data:`FP16_TOLERANCE`; float32 without a test set).

    Returns
    -------
    Path
        ``out``; its card holds the condition, recipe, history, timing and test scores.
    """
    import xarray as xr

    from xai_loc.data.ipd_ild_scenes import open_scenes
    from xai_loc.models.checkpoint import save_checkpoint
    from xai_loc.models.classifier_training import _save_atomic, over_budget
    from xai_loc.models.tfcnn import TFCNN
    from xai_loc.models.training import _determinism, _device_name, _seeded, state_path
    from xai_loc.progress import tqdm

    config = TFCNNTrainConfig() if config is None else config
    out = Path(out)
    if out.suffix != ".safetensors":
        raise InputError(f"checkpoint path {out} is not allowed; use a file name ending in .safetensors")
    if dtype not in ("auto", "float32", "float16"):
        raise InputError(f"dtype={dtype!r} is not allowed; use 'auto', 'float32' or 'float16'")
    train_ds = train_scenes if isinstance(train_scenes, xr.Dataset) else open_scenes(train_scenes)
    test_ds = None if test_scenes is None else (
        test_scenes if isinstance(test_scenes, xr.Dataset) else open_scenes(test_scenes))
    with _seeded(config.seed):
        model = TFCNN(**(model_config or {}))
    _check_input(model, train_ds)
    spec = json.loads(train_ds.attrs["spec"])
    identity = {"model_config": model.config, "recipe": asdict(config) | {"max_minutes": None},
                "dataset": train_ds.attrs.get("spec_digest")}
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    epoch, history = 0, {"train_loss": [], "lr": [], "seconds": []}
    state_file = state_path(out)
    if state_file.exists():
        try:
            state = torch.load(state_file, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
            raise InputError(f"training state {state_file} is unreadable ({type(err).__name__}); remove it") from None
        if not isinstance(state, dict) or (state.get("format"), state.get("version")) != (STATE_FORMAT,
                                                                                           STATE_VERSION):
            raise InputError(f"{state_file} is not an xai-loc TF-CNN training state")
        if state.get("identity") != json.loads(json.dumps(identity)):
            raise InputError(f"{state_file} belongs to another training run; remove it or write to another out")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        epoch, history = state["epoch"], state["history"]

    targets = _targets(model, train_ds["azimuth"].values, train_ds["elevation"].values)
    n = len(targets)
    stopped = "epochs"
    device = torch.device("cpu")
    with _determinism(True, device):
        cache = cue_cache(model, train_ds["waveforms"], progress=progress) if epoch < config.epochs else None
        started = time.monotonic()
        while epoch < config.epochs:
            if over_budget(started, history["seconds"], config.max_minutes):
                stopped = "time_budget"
                break
            t0 = time.monotonic()
            rng = np.random.default_rng([config.seed, epoch + 1])
            order = rng.permutation(n)
            parts = [order[s:s + config.batch_size] for s in range(0, n, config.batch_size)]
            if len(parts) > 1 and len(parts[-1]) == 1:
                parts[-2:] = [np.concatenate(parts[-2:])]
            model.train()
            total = 0.0
            with _seeded(int(rng.integers(2**63))):
                for idx in tqdm(parts, disable=not progress, desc=f"epoch {epoch + 1}", unit="batch", leave=False):
                    idx = np.sort(idx)
                    optimizer.zero_grad(set_to_none=True)
                    loss = _loss(model, model.localize(torch.from_numpy(cache[idx].astype(np.float32))), targets[idx])
                    loss.backward()
                    optimizer.step()
                    total += loss.item() * len(idx)
            if not math.isfinite(total):
                raise InputError(f"training diverged in epoch {epoch + 1}; lower the learning rate (lr={config.lr:g})")
            history["lr"].append(optimizer.param_groups[0]["lr"])
            scheduler.step()
            epoch += 1
            history["train_loss"].append(total / n)
            history["seconds"].append(time.monotonic() - t0)
            _save_atomic({"format": STATE_FORMAT, "version": STATE_VERSION, "identity": identity, "epoch": epoch,
                         "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "history": history}, state_file)
        del cache

    model.eval()
    card: dict[str, Any] = {
        "condition": {"rooms": ["anechoic"], "snr": list(spec["train_snr"])},
        "training": {"config": asdict(config), "recipe": RECIPE, "seed": config.seed, "epochs": epoch,
                     "stopped": stopped, "history": history, "wall_seconds": float(sum(history["seconds"])),
                     "device": _device_name(device), "threads": torch.get_num_threads()},
        "dataset": {"train": {"spec": spec, "spec_digest": train_ds.attrs.get("spec_digest"), "n_examples": n}},
        "metrics": {},
    }
    store_dtype = "float32" if dtype == "auto" else dtype
    if test_ds is not None:
        _check_input(model, test_ds)
        test_cache = cue_cache(model, test_ds["waveforms"], progress=progress)
        half = TFCNN(**model.config).eval()
        half.load_state_dict({k: (v.half().float() if v.is_floating_point() else v)
                              for k, v in model.state_dict().items()})
        truth, snr = test_ds["azimuth"].values, test_ds["snr"].values
        scored = {name: azimuth_scores(net.directions(_localize_cached(net, test_cache))[0], truth, snr)
                  for name, net in (("float32", model), ("float16", half))}
        m32, m16 = scored["float32"]["all"], scored["float16"]["all"]
        ok = m32["accuracy_5"] - m16["accuracy_5"] <= FP16_TOLERANCE["accuracy_5"] and \
            m16["mae"] - m32["mae"] <= FP16_TOLERANCE["mae"]
        if dtype == "auto":
            store_dtype = "float16" if ok else "float32"
        card["dataset"]["test"] = {"spec_digest": test_ds.attrs.get("spec_digest"),
                                   "n_examples": int(test_ds.sizes["example"]),
                                   "utterances_disjoint": not set(np.unique(test_ds["utterance"].values))
                                   & set(np.unique(train_ds["utterance"].values))}
        card["metrics"]["test"] = scored[store_dtype]
        card["metrics"]["float16_check"] = {k: {"float32": m32[k], "float16": m16[k]} for k in ("accuracy_5", "mae")}
    card["training"]["stored_dtype"] = store_dtype
    return save_checkpoint(model, out, card, dtype=store_dtype)
