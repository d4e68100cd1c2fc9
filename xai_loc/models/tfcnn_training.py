"""Training and evaluation of the IPD/ILD TF-CNN (:mod:`xai_loc.models.tfcnn`) on scene files.

Recipe: IPD/ILD maps computed once by the model's front end and cached as float16 (64 kB per
1 s example); Adam with a cosine-annealed learning rate over the planned epochs, batches of
32; every training example once per epoch, shuffled by ``(seed, epoch)``. Loss: MSE of
``azimuth / 90`` (regression head) or the sum of the azimuth and elevation cross-entropies
(multitask head). The last epoch's model is kept and scored once on the held-out test set.
After each epoch the state goes atomically to ``<out>.state.pt``; calling
:func:`train_tfcnn` again with the same arguments continues from there with the same numbers
(the shared loop, state and float16 rule of :mod:`xai_loc.models.trainer`).

Scores (:func:`azimuth_scores`) per test SNR and overall: ``accuracy_5`` and ``accuracy_10``
(share of responses within 5 and 10 degrees, inclusive up to float rounding,
:func:`~xai_loc.models.classifier_training.share_within`: the seed implementation counts a
regression output within 5 degrees as correct), ``mae`` (mean absolute error, degrees) and
``rmse``, beside the constant baseline that always answers 0 degrees (straight ahead).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xai_loc.errors import InputError
from xai_loc.models.classifier_training import check_finite, feature_cache, set_checked, share_within
from xai_loc.models.evaluation import after_front_end, in_batches

__all__ = ["TFCNNTrainConfig", "azimuth_scores", "cue_cache", "train_tfcnn"]

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
        set_checked(self)


# -- scores ---------------------------------------------------------------------------------------


def _scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    err = np.abs(pred - true)
    return {"n": int(err.size), "accuracy_5": share_within(err, 5.0), "accuracy_10": share_within(err, 10.0),
            "mae": float(err.mean()),
            "rmse": float(np.sqrt(np.mean(err ** 2)))}


def azimuth_scores(pred, true, snr) -> dict[str, Any]:
    """Scores of azimuth responses (degrees) overall and per SNR, with the 0-degree baseline.

    Returns ``{"all": {...}, "by_snr": {"-6": {...}, ...}, "baseline": {same, for always 0}}``.
    """
    pred, true, snr = (np.asarray(v, dtype=np.float64) for v in (pred, true, snr))
    if pred.shape != true.shape or pred.shape != snr.shape or pred.ndim != 1 or pred.size == 0:
        raise InputError(f"responses {pred.shape}, targets {true.shape} and SNRs {snr.shape} are not allowed; "
                         "give equal non-empty 1-D arrays")
    for name, values in (("responses", pred), ("targets", true), ("SNRs", snr)):
        check_finite(name, values)

    def table(p: np.ndarray) -> dict[str, Any]:
        return {"all": _scores(p, true), "by_snr": {f"{s:g}": _scores(p[snr == s], true[snr == s])
                                                    for s in np.unique(snr)}}

    return {**table(pred), "baseline": {"kind": "always 0 degrees", **table(np.zeros_like(true))}}


# -- prediction -------------------------------------------------------------------------------------


def _front_end(model: nn.Module) -> nn.Module:
    """The model's IPD/ILD front end, built from its options when the model has none (``front_end=False``)."""
    if model.with_front_end:
        return model.front_end
    from xai_loc.features.ipd_ild import IPDILD

    return IPDILD(**model.feature_options)


def cue_cache(model: nn.Module, waveforms, batch_size: int = 32, progress: bool = False) -> np.ndarray:
    """IPD/ILD maps of every example, float16 ``(n, 2, n_bins, n_frames)`` (by the model's front end, or one
    built from its options for a model without it)."""
    return feature_cache(_front_end(model), waveforms, model.cue_shape, batch_size, progress, "IPD/ILD")


def _check_input(model: nn.Module, ds) -> None:
    if int(ds.sizes["time"]) != model.n_samples or int(ds.attrs.get("fs", model.fs)) != model.fs:
        raise InputError(f"the scenes hold {ds.sizes['time']} samples at {ds.attrs.get('fs')} Hz but the model "
                         f"takes {model.n_samples} at {model.fs} Hz")
    for name in ("azimuth", "elevation", "snr"):
        check_finite(f"the scenes' {name} values", ds[name].values)


# -- training -----------------------------------------------------------------------------------------


def _targets(model: nn.Module, azimuth: np.ndarray, elevation: np.ndarray) -> torch.Tensor:
    from xai_loc.acoustics.directions import LATERAL_GRID

    if model.head_name == "regression":
        return torch.as_tensor(azimuth / 90.0, dtype=torch.float32)[:, None]
    el, az = np.divmod(LATERAL_GRID.nearest(azimuth, elevation), LATERAL_GRID.n_azimuths)
    return torch.as_tensor(np.stack([az, el], 1), dtype=torch.long)


def _identity(ds) -> dict[str, Any]:
    """What pins a scene store in a run's identity: its spec digest (else the content of its labels) and split."""
    from xai_loc.models.trainer import content_digest

    labels = {v: ds[v].values for v in ("azimuth", "elevation", "snr", "utterance") if v in ds.variables}
    return {"dataset": ds.attrs.get("spec_digest") or content_digest(ds["waveforms"].shape, **labels),
            "split": ds.attrs.get("split")}


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
        Scene stores (:func:`xai_loc.data.ipd_ild_scenes.render_scenes`) or opened datasets: the
        ``'train'`` and the ``'test'`` split where they record one (others are refused); a test set that
        shares an utterance with the training set is refused before training.
    out
        The ``.safetensors`` checkpoint; the state lives in ``<out>.state.pt``.
    model_config
        Constructor arguments of ``'tfcnn'`` (default: small width, regression head); with
        ``front_end=False`` the IPD/ILD maps come from a front end built from its ``features``.
    dtype
        ``'float32'``, ``'float16'`` or ``'auto'`` (float16 when it changes the test scores by
        at most :data:`FP16_TOLERANCE`; float32 without a test set).

    Returns
    -------
    Path
        ``out``; its card holds the condition, recipe, history, timing and test scores.
    """
    from xai_loc.data.ipd_ild_scenes import open_scenes
    from xai_loc.models.checkpoint import build_configured, result_entry
    from xai_loc.models.trainer import (
        Hooks,
        Schedule,
        cached_batches,
        check_output,
        check_storage,
        determinism,
        fit,
        open_splits,
        save_trained,
        seeded,
        shuffled,
        state_path,
    )

    config = TFCNNTrainConfig() if config is None else config
    out = check_output(out)
    check_storage(dtype)
    train_ds, test_ds = open_splits(open_scenes, train_scenes, test_scenes, ("train",), ("test",), "scene store",
                                    held_out=("utterance",))
    with seeded(config.seed):
        model = build_configured("tfcnn", model_config or {})
    _check_input(model, train_ds)
    if test_ds is not None:  # before training, not after it
        _check_input(model, test_ds)
    spec = json.loads(train_ds.attrs["spec"])
    targets = _targets(model, train_ds["azimuth"].values, train_ds["elevation"].values)
    n = len(targets)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    hooks = Hooks(picks=shuffled(n), forward=after_front_end(model),
                  loss=lambda outputs, target: _loss(model, outputs, target),
                  assemble=cached_batches(lambda: cue_cache(model, train_ds["waveforms"], progress=progress), targets,
                                          torch.device("cpu")))
    with determinism(True, torch.device("cpu")):
        trainer = fit(model, optimizer, hooks, Schedule(config.batch_size, config.epochs, config.seed,
                                                        max_minutes=config.max_minutes),
                      scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs),
                      scheduler_step="epoch", progress=progress, desc="train tfcnn", state_file=state_path(out),
                      identity={"arch": "tfcnn", "model_config": model.config,
                                "recipe": asdict(config) | {"max_minutes": None}, **_identity(train_ds)},
                      defaults={"split": "train"})  # states written before the split was recorded
    model.eval()
    score = None
    dataset = {"train": {"spec": spec, "spec_digest": train_ds.attrs.get("spec_digest"), "n_examples": n}}
    if test_ds is not None:
        test_cache = cue_cache(model, test_ds["waveforms"], progress=progress)
        truth, snr = test_ds["azimuth"].values, test_ds["snr"].values

        def score(net: nn.Module) -> dict[str, Any]:
            azimuth = net.decode(in_batches(after_front_end(net), test_cache, 64))["azimuth"].numpy()
            scores = azimuth_scores(azimuth, truth, snr)
            base = scores["baseline"]
            entry = result_entry(scores["all"], base["all"], base["kind"], by_snr=scores["by_snr"])
            entry["baseline"]["by_snr"] = base["by_snr"]
            return entry

        dataset["test"] = {"spec_digest": test_ds.attrs.get("spec_digest"), "n_examples": int(test_ds.sizes["example"]),
                           # open_splits refused a test set sharing one: disjoint where both record utterances
                           "utterances_disjoint": all("utterance" in ds.variables for ds in (train_ds, test_ds))}
    return save_trained(model, out, condition={"rooms": ["anechoic"], "snr": list(spec["train_snr"])},
                        training={**trainer.record(), "config": asdict(config), "recipe": RECIPE},
                        dataset=dataset, score=score, tolerance=FP16_TOLERANCE, dtype=dtype)
