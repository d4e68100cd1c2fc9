"""Training and evaluation of direction classifiers (the cochleagram CNN) on binaural stores.

The multichannel recipe (:mod:`xai_loc.models.training`) regresses positions; this one
classifies directions as Francl & McDermott (2022) did: cross-entropy over the 504
azimuth x elevation classes (or 72 azimuths), Adam (lr 1e-3), batches of 16.

Training runs the CNN on cochleagrams computed once per call (the front end has no
trainable parameters), held in memory as float16 (about 0.3 MB per 0.25 s example). After
every epoch the full state goes atomically to ``<out>.state.pt``; calling
:func:`train_classifier` again with the same ``out`` continues from there, and the random
streams of an epoch (order, dropout) come from ``(seed, epoch)`` alone, so an interrupted
run ends with the same weights as an uninterrupted one. No split is used for model
selection: the last epoch's model is kept and scored once on the held-out sounds. The loop,
the state and the float16 rule are every family's (:mod:`xai_loc.models.trainer`).

Evaluation (:func:`evaluate_directions`, :func:`direction_metrics`) reports, beside a
uniformly guessing baseline:

- ``accuracy``: exact class; ``azimuth_accuracy``: azimuth class right;
- ``azimuth_error``: mean absolute azimuth error in degrees, wrapped to [0, 180];
- ``elevation_error``: mean absolute elevation error in degrees;
- ``front_back_rate``: share of front-back confusions (:func:`front_back_confusions`)
  among targets off the interaural axis, and ``azimuth_error_folded``, the azimuth error
  once confused responses are mirrored back (az -> 180 - az);
- ``lateral_error``: error of the lateral angle ``asin(sin az cos el)``, blind to
  front-back confusions; ``great_circle_error``.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from xai_loc.acoustics.directions import DirectionGrid
from xai_loc.checks import is_integer, is_real, plain
from xai_loc.errors import InputError
from xai_loc.runtime import resolve_device

__all__ = [
    "CHECKS", "ClassifierConfig", "DirectionEvaluation", "azimuth_error", "check_finite", "check_settings",
    "direction_metrics", "evaluate_directions", "front_back_confusions", "lateral_angle", "mirror_front_back",
    "predict_logits", "score_logits", "share_within", "soft_targets", "train_classifier", "wrap_degrees",
    "cochleagram_cache", "feature_cache",
]

#: Fields of :class:`ClassifierConfig` that may change when a run resumes.
RUN_FIELDS = frozenset({"epochs", "max_minutes", "device", "eval_batch_size"})
#: Largest change of a test metric (either way: accuracies as shares, errors in degrees) that still lets
#: ``dtype='auto'`` store float16 weights; metrics a head does not answer (None) are not compared.
FP16_TOLERANCE = {"accuracy": 0.002, "azimuth_accuracy": 0.002, "azimuth_error": 0.25, "elevation_error": 0.25}
RECIPE = {"loss": "cross-entropy over direction classes", "optimizer": "Adam",
          "sampling": "every training example once per epoch, shuffled", "kept": "the last epoch's model",
          "inputs": "cochleagrams computed once by the model's front end, cached as float16",
          "targets": "one-hot, or Gaussian over great-circle distance with label_sigma degrees"}


# -- metrics ---------------------------------------------------------------------------------------


def wrap_degrees(x) -> np.ndarray:
    """Angles in degrees wrapped to ``[-180, 180)``."""
    return np.mod(np.asarray(x, dtype=np.float64) + 180.0, 360.0) - 180.0


def azimuth_error(pred, true) -> np.ndarray:
    """Absolute azimuth difference in degrees, wrapped to ``[0, 180]``."""
    return np.abs(wrap_degrees(np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64)))


#: Slack of the accuracies within N degrees (``accuracy_5``, ``accuracy_10`` of the TF-CNN and BAST): an error of
#: N degrees computed in floating point (``|256.1 - 251.1|`` is 5.000000000000028) counts as within.
WITHIN_SLACK = 1e-9


def share_within(err, degrees: float) -> float:
    """Share of absolute errors ``err`` (degrees) within ``degrees``, inclusive up to :data:`WITHIN_SLACK`."""
    return float(np.mean(np.asarray(err, dtype=np.float64) <= degrees + WITHIN_SLACK))


def mirror_front_back(azimuth) -> np.ndarray:
    """Mirror image across the interaural axis: ``az -> 180 - az`` (degrees, in ``[0, 360)``)."""
    return np.mod(180.0 - np.asarray(azimuth, dtype=np.float64), 360.0)


def lateral_angle(azimuth, elevation=0.0) -> np.ndarray:
    """Lateral angle ``asin(sin az cos el)`` in degrees (90 = left), the same for front and back."""
    az, el = np.deg2rad(np.asarray(azimuth, dtype=np.float64)), np.deg2rad(np.asarray(elevation, dtype=np.float64))
    return np.rad2deg(np.arcsin(np.clip(np.sin(az) * np.cos(el), -1.0, 1.0)))


def front_back_confusions(pred_az, true_az) -> tuple[np.ndarray, np.ndarray]:
    """Front-back confusions of azimuth responses.

    A response is a confusion when target and response lie in opposite front/back
    hemifields (``cos az`` of opposite signs) and the response mirrored across the
    interaural axis (``180 - az``) is closer to the target than the response itself.
    Targets on the interaural axis (90, 270 degrees) cannot be confused and are not
    eligible; responses on it are never confusions.

    Returns
    -------
    confused, eligible
        Boolean arrays of the inputs' broadcast shape.
    """
    pred, true = np.broadcast_arrays(np.asarray(pred_az, dtype=np.float64), np.asarray(true_az, dtype=np.float64))
    cos_t, cos_p = np.cos(np.deg2rad(true)), np.cos(np.deg2rad(pred))
    eligible = np.abs(cos_t) > 1e-9
    opposite = cos_t * cos_p < -1e-18
    closer = azimuth_error(mirror_front_back(pred), true) < azimuth_error(pred, true)
    return eligible & opposite & closer, eligible


def check_finite(name: str, values, allowed: str = "give finite numbers") -> None:
    """Refuse (one line naming ``name`` and ``allowed``) an array or tensor holding NaN or infinity; the message
    counts the examples (along the first axis) that do."""
    bad = ~torch.isfinite(values) if isinstance(values, torch.Tensor) else ~np.isfinite(values)
    if bad.any():
        rows = bad.reshape(len(bad), -1).any(1)
        rows = np.flatnonzero(rows.cpu().numpy() if isinstance(rows, torch.Tensor) else rows)
        raise InputError(f"{name} of {rows.size} example(s) hold NaN or infinite values (the first: example "
                         f"{rows[0]}); {allowed}")


def direction_metrics(pred_az, pred_el, true_az, true_el) -> dict[str, float | int | None]:
    """Localization metrics of direction responses (degrees; see the module docs).

    ``pred_el`` may be all NaN (an azimuth-only head): elevation and exact-class metrics are
    then None. Elevations may be one number for all examples; any other NaN or infinity is refused.
    """
    pred_az, pred_el, true_az, true_el = (np.asarray(v, dtype=np.float64) for v in (pred_az, pred_el, true_az, true_el))
    if (pred_az.shape != true_az.shape or pred_az.ndim != 1 or pred_az.size == 0
            or any(v.ndim and v.shape != pred_az.shape for v in (pred_el, true_el))):
        raise InputError(f"responses {pred_az.shape} (elevations {pred_el.shape}) and targets {true_az.shape} "
                         f"(elevations {true_el.shape}) are not allowed; give equal non-empty 1-D arrays of degrees "
                         "(elevations may be one number)")
    pred_el, true_el = (np.broadcast_to(v, pred_az.shape) for v in (pred_el, true_el))
    for name, values in (("response azimuths", pred_az), ("target azimuths", true_az),
                         ("target elevations", true_el)):
        check_finite(name, values)
    has_el = not np.isnan(pred_el).all()  # all NaN: an azimuth-only head
    if has_el:
        check_finite("response elevations", pred_el, "give finite numbers (or all NaN for an azimuth-only head)")
    az_err = azimuth_error(pred_az, true_az)
    confused, eligible = front_back_confusions(pred_az, true_az)
    folded = np.where(confused, mirror_front_back(pred_az), pred_az)
    el_for_lat = pred_el if has_el else np.zeros_like(pred_az)
    lat_err = np.abs(lateral_angle(pred_az, el_for_lat) - lateral_angle(true_az, true_el if has_el else 0.0))
    az_right = az_err < 1e-6
    out: dict[str, float | int | None] = {
        "n": int(pred_az.size),
        "azimuth_accuracy": float(az_right.mean()),
        "azimuth_error": float(az_err.mean()),
        "azimuth_rmse": float(np.sqrt(np.mean(az_err ** 2))),
        "front_back_rate": float(confused[eligible].mean()) if eligible.any() else None,
        "n_front_back_eligible": int(eligible.sum()),
        "azimuth_error_folded": float(azimuth_error(folded, true_az).mean()),
        "lateral_error": float(lat_err.mean()),
        "accuracy": None, "elevation_error": None, "elevation_rmse": None, "great_circle_error": None,
    }
    if has_el:
        from xai_loc.acoustics.hrtf import great_circle

        el_err = np.abs(pred_el - true_el)
        out.update(accuracy=float((az_right & (el_err < 1e-6)).mean()), elevation_error=float(el_err.mean()),
                   elevation_rmse=float(np.sqrt(np.mean(el_err ** 2))),
                   great_circle_error=float(great_circle(pred_az, pred_el, true_az, true_el).mean()))
    return out


# -- prediction and evaluation -------------------------------------------------------------------


def _cochleagram(model: nn.Module) -> nn.Module:
    """The model's cochleagram front end, built from its options when the model has none."""
    if getattr(model, "with_front_end", True):
        return model.front_end
    from xai_loc.features.cochleagram import Cochleagram

    return Cochleagram(**model.cochleagram_options)


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of waveforms; models without their front end get the cochleagram first."""
    if getattr(model, "with_front_end", True) is False:
        x = _cochleagram(model).to(x.device)(x)
    return model(x)


def predict_logits(model: nn.Module, waveforms, batch_size: int = 32, device: str | torch.device = "cpu",
                   progress: bool = False) -> np.ndarray:
    """Logits ``(n, n_classes)`` float32 of waveforms ``(n, 2, T)`` (array, tensor or DataArray)."""
    from xai_loc.progress import tqdm

    device = device if isinstance(device, torch.device) else resolve_device(str(device))
    if hasattr(waveforms, "dims") and hasattr(waveforms, "values"):
        waveforms = waveforms.values
    n = len(waveforms)
    was_training = model.training
    model.to(device).eval()
    out = []
    try:
        with torch.inference_mode():
            for s in tqdm(range(0, n, batch_size), disable=not progress, desc="predict", unit="batch", leave=False):
                x = torch.as_tensor(np.asarray(waveforms[s:s + batch_size]), dtype=torch.float32, device=device)
                if not torch.isfinite(x).all():
                    raise InputError(f"waveforms {s}..{s + len(x) - 1} hold NaN or infinite samples")
                out.append(_forward(model, x).float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, getattr(model, "n_classes", 0)), np.float32)


@dataclass(frozen=True, eq=False)
class DirectionEvaluation:
    """A model's responses on a binaural store, scored beside a uniformly guessing baseline.

    Attributes
    ----------
    responses
        ``xarray.Dataset`` along ``example``: ``target_azimuth``, ``target_elevation``,
        ``response_azimuth``, ``response_elevation`` (degrees), ``label``,
        ``response_label``, ``p_target`` (softmax probability of the true class) and the
        store's room, sound and SNR labels; attrs carry the metrics as JSON.
    metrics
        :func:`direction_metrics` of the model, plus ``by_room``.
    baseline
        The same metrics of uniform random guesses (seeded) on the same targets.
    """

    responses: Any
    metrics: dict[str, Any]
    baseline: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """JSON-able: metrics, baseline and provenance."""
        return {"metrics": self.metrics, "baseline": {"kind": "uniform random class", "metrics": self.baseline},
                "dataset": json.loads(self.responses.attrs.get("dataset", "{}"))}


def evaluate_directions(model: nn.Module, store, *, batch_size: int = 32, device: str = "cpu",
                        progress: bool = False, seed: int = 0) -> DirectionEvaluation:
    """Score a direction classifier on every example of a binaural store.

    Parameters
    ----------
    model
        A :class:`~xai_loc.models.cochleagram_cnn.CochleagramCNN` (or any module with
        ``head_name`` whose logits follow that head's label order).
    store
        Path of a binaural store (:func:`xai_loc.data.binaural_store.simulate_binaural`) or
        the opened ``xarray.Dataset``.
    """
    import xarray as xr

    from xai_loc.data.binaural_store import open_binaural
    from xai_loc.models.cochleagram_cnn import HEADS

    ds = open_binaural(store) if not isinstance(store, xr.Dataset) else store
    head = getattr(model, "head_name", "azel")
    if head not in HEADS:
        raise InputError(f"model head {head!r} is unknown; allowed: {', '.join(HEADS)}")
    _check_input(model, ds)
    logits = predict_logits(model, ds["waveforms"], batch_size, device, progress)
    path = str(store) if not isinstance(store, xr.Dataset) else None
    return score_logits(logits, ds, head, seed=seed, path=path,
                        model=getattr(model, "arch_name", "") or type(model).__name__)


def score_logits(logits: np.ndarray, ds, head: str = "azel", *, seed: int = 0, path: str | None = None,
                 model: str = "") -> DirectionEvaluation:
    """:class:`DirectionEvaluation` of logits ``(n, n_classes)`` against the labels of a binaural dataset."""
    import xarray as xr

    from xai_loc.models.cochleagram_cnn import HEAD_GRIDS, HEADS

    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape != (ds.sizes["example"], HEADS[head]):
        raise InputError(f"logits of shape {logits.shape} do not fit {ds.sizes['example']} examples and head "
                         f"{head!r} ({HEADS[head]} classes)")
    grid = HEAD_GRIDS[head]
    grid_az, grid_el = grid.directions()
    if grid.n_elevations == 1:  # an azimuth-only head answers no elevation: no elevation metrics
        grid_el = np.full(grid.size, np.nan)
    pred = logits.argmax(axis=1)
    true_az, true_el = ds["azimuth"].values.astype(np.float64), ds["elevation"].values.astype(np.float64)
    true_label = _grid_labels(grid, true_az, true_el)
    shifted = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    metrics: dict[str, Any] = direction_metrics(grid_az[pred], grid_el[pred], true_az, true_el)
    rooms = ds["room"].values.astype(str) if "room" in ds.variables else np.full(true_az.size, "?")
    metrics["by_room"] = {str(r): direction_metrics(grid_az[pred][rooms == r], grid_el[pred][rooms == r],
                                                    true_az[rooms == r], true_el[rooms == r])
                          for r in np.unique(rooms)}
    guess = np.random.default_rng(seed).integers(HEADS[head], size=true_az.size)
    baseline = direction_metrics(grid_az[guess], grid_el[guess], true_az, true_el)
    keep = [v for v in ("room", "t60", "snr", "level_db", "sound_kind", "sound_key") if v in ds.variables]
    info = {"path": path, "spec_digest": ds.attrs.get("spec_digest"), "split": ds.attrs.get("split"),
            "n_examples": int(true_az.size)}
    responses = xr.Dataset(
        {"response_azimuth": ("example", grid_az[pred], {"units": "degree"}),
         "response_elevation": ("example", grid_el[pred], {"units": "degree"}),
         "response_label": ("example", pred.astype(np.int64)),
         "p_target": ("example", prob[np.arange(pred.size), true_label])},
        coords={"example": ds["example"].values, "target_azimuth": ("example", true_az, {"units": "degree"}),
                "target_elevation": ("example", true_el, {"units": "degree"}), "label": ("example", true_label),
                **{v: ("example", ds[v].values) for v in keep}},
        attrs={"head": head, "metrics": json.dumps(metrics), "baseline": json.dumps(baseline),
               "dataset": json.dumps(info), "model": model,
               "convention": "azimuth counter-clockwise from the front, 90 = left (SOFA)"})
    return DirectionEvaluation(responses, metrics, baseline)


def _check_input(model: nn.Module, ds) -> None:
    n_samples = int(ds.sizes["time"])
    expected = getattr(model, "n_samples", None)
    if expected is not None and expected != n_samples:
        raise InputError(f"the model takes {expected} samples per ear but the store holds {n_samples}; "
                         "render the store with a matching duration")
    fs = ds.attrs.get("fs")
    model_fs = getattr(model, "fs", None)
    if fs is not None and model_fs is not None and int(fs) != int(model_fs):
        raise InputError(f"the store is at fs={fs} Hz but the model expects {model_fs} Hz")


# -- training ---------------------------------------------------------------------------------------


#: Training settings by name: (test, what is allowed), checked by :func:`check_settings` for every binaural family.
CHECKS = {
    "epochs": (lambda v: is_integer(v) and v >= 1, "a positive integer"),
    "batch_size": (lambda v: is_integer(v) and v >= 2, "an integer >= 2"),
    "lr": (lambda v: is_real(v) and v > 0,
           "a positive number"),
    "seed": (lambda v: is_integer(v) and v >= 0, "an integer >= 0"),
    "max_minutes": (lambda v: v is None or (is_real(v) and v > 0),
                    "None or a positive number of minutes"),
    "device": (lambda v: isinstance(v, str), "'cpu', 'cuda' or 'cuda:N'"),
    "eval_batch_size": (lambda v: is_integer(v) and v >= 1, "a positive integer"),
    "label_sigma": (lambda v: is_real(v) and 0 <= v <= 90,
                    "a number of degrees in [0, 90]"),
}


def check_settings(**settings: Any) -> dict[str, Any]:
    """Refuse (one line) the first training setting that :data:`CHECKS` does not allow (types first, no bools);
    return the settings with NumPy numbers as the Python numbers they hold (cards and states are JSON)."""
    for name, value in settings.items():
        test, allowed = CHECKS[name]
        if not test(value):
            raise InputError(f"{name}={value!r} is not allowed; use {allowed}")
    return {name: plain(value) for name, value in settings.items()}


def set_checked(config: Any) -> None:
    """Check every field of a frozen dataclass ``config`` (:func:`check_settings`) and store the plain values."""
    for name, value in check_settings(**{f.name: getattr(config, f.name) for f in fields(config)}).items():
        object.__setattr__(config, name, value)


@dataclass(frozen=True)
class ClassifierConfig:
    """Recipe (Francl & McDermott 2022: Adam 1e-3, batches of 16) and run settings.

    ``label_sigma`` (degrees) replaces the one-hot targets of the cross-entropy by a
    Gaussian of the great-circle distance to the true direction over the class grid
    (:func:`soft_targets`); 0, the paper's loss, keeps them one-hot. Spreading the target
    over neighbouring directions tells a model trained on few examples per class (our CPU
    default: about ten) that nearby directions are alike.

    ``epochs`` (never below the epochs already trained), ``max_minutes``, ``device`` and
    ``eval_batch_size`` may change when a run resumes; the other fields may not.
    ``max_minutes`` is the budget of the epochs of one call (cochleagram caching and the
    final evaluation are not counted): it stops at the epoch boundary before an epoch that
    would overrun it (the state is kept, so a later call with a larger ``epochs`` or budget
    continues). For reproducible results fix ``epochs`` and use the budget as a safety net only.
    """

    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    seed: int = 0
    max_minutes: float | None = None
    device: str = "cpu"
    eval_batch_size: int = 32
    label_sigma: float = 0.0

    def __post_init__(self) -> None:
        set_checked(self)

    def recipe(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in RUN_FIELDS}


def feature_cache(features, waveforms, shape: tuple[int, ...], batch_size: int = 16, progress: bool = True,
                  desc: str = "front end") -> np.ndarray:
    """A fixed front end's output for every example, float16 ``(n, *shape)``.

    Parameters
    ----------
    features
        Maps waveforms ``[B, 2, T]`` (float32 tensor) to ``[B, *shape]``, e.g. ``model.cochleagram``.
    waveforms
        ``(n, 2, T)`` array or DataArray.
    """
    from xai_loc.progress import tqdm

    n = len(waveforms)  # a (lazy) DataArray is read batch by batch, never whole
    out = np.empty((n, *shape), dtype=np.float16)
    with torch.inference_mode():
        for s in tqdm(range(0, n, batch_size), disable=not progress, desc=desc, unit="batch", leave=False):
            x = torch.as_tensor(np.asarray(waveforms[s:s + batch_size]), dtype=torch.float32)
            if not torch.isfinite(x).all():
                raise InputError(f"waveforms {s}..{s + len(x) - 1} hold NaN or infinite samples")
            out[s:s + len(x)] = features(x).numpy().astype(np.float16)
    return out


def cochleagram_cache(model: nn.Module, waveforms, batch_size: int = 16, progress: bool = True) -> np.ndarray:
    """The cochleagram of every example, float16 ``(n, 2, bands, frames)``."""
    return feature_cache(_cochleagram(model), waveforms, model.cochleagram_shape, batch_size, progress, "cochleagrams")


def soft_targets(head: str, sigma: float) -> torch.Tensor:
    """Target distributions ``(n_classes, n_classes)``: row ``c`` is proportional to
    ``exp(-d^2 / (2 sigma^2))`` of the great-circle distance ``d`` (degrees) from class ``c``'s
    direction (azimuth distance for the ``'azimuth'`` head); one-hot for ``sigma = 0``."""
    from xai_loc.acoustics.hrtf import great_circle
    from xai_loc.models.cochleagram_cnn import HEAD_GRIDS

    az, el = HEAD_GRIDS[head].directions()
    if sigma == 0:
        return torch.eye(az.size)
    if head == "azimuth":
        d = azimuth_error(az[:, None], az[None, :])
    else:
        d = great_circle(az[:, None], el[:, None], az[None, :], el[None, :])
    w = np.exp(-0.5 * (d / sigma) ** 2)
    return torch.as_tensor(w / w.sum(axis=1, keepdims=True), dtype=torch.float32)


def _grid_labels(grid: DirectionGrid, azimuth, elevation) -> np.ndarray:
    """Class labels of grid directions (degrees); a one-elevation grid (an azimuth head) ignores the elevation."""
    return grid.label(azimuth, elevation if grid.n_elevations > 1 else None)


def train_classifier(train_store, out: str | Path, *, model_config: dict[str, Any] | None = None,
                     config: ClassifierConfig | None = None, test_store=None, dtype: str = "auto",
                     progress: bool = True) -> Path:
    """Train a cochleagram CNN on a binaural store; resume if ``out`` has a saved state.

    Parameters
    ----------
    train_store
        A binaural store path (or opened dataset) of the training split (``'train'`` or ``'all'``
        where it records its split).
    out
        The ``.safetensors`` checkpoint to write; the state lives in ``<out>.state.pt``.
    model_config
        Constructor arguments of ``'cochcnn'`` (default: the small preset, 504 classes);
        ``n_samples`` defaults to the store's example length.
    config
        Recipe and run settings.
    test_store
        Held-out store (``'test'`` or ``'all'`` where it records its split); its metrics go into the card.
        Refused where it is the training store or holds any of its sounds (``sound_key``, as an ``'all'`` store
        beside a store of the same spec does; :func:`~xai_loc.models.trainer.check_held_out`).
    dtype
        Storage of the weights: ``'float32'``, ``'float16'`` or ``'auto'`` (float16 if it
        changes the test accuracies by at most 0.2 points and the azimuth and elevation errors
        by at most 0.25 degrees, see :data:`FP16_TOLERANCE`; float32 without a test store).
    progress
        Show progress bars.

    Returns
    -------
    Path
        ``out``, with the card: condition (rooms and SNR range of the training store),
        recipe, history, timing, test metrics beside the guessing baseline, and the
        float16 check.
    """
    from xai_loc.data.binaural_store import BinauralSpec, open_binaural
    from xai_loc.models.checkpoint import build_configured
    from xai_loc.models.evaluation import after_front_end, in_batches
    from xai_loc.models.trainer import (
        Hooks,
        Schedule,
        cached_batches,
        check_output,
        check_storage,
        content_digest,
        determinism,
        fit,
        open_splits,
        save_trained,
        seeded,
        shuffled,
        state_path,
    )

    config = ClassifierConfig() if config is None else config
    out = check_output(out)
    check_storage(dtype)
    device = resolve_device(config.device)
    train_ds, test_ds = open_splits(open_binaural, train_store, test_store, ("train", "all"), ("test", "all"),
                                    held_out=("sound_key", "sound_id"))
    model_config = {"n_samples": int(train_ds.sizes["time"]), **(model_config or {})}
    with seeded(config.seed):
        model = build_configured("cochcnn", model_config)
    _check_input(model, train_ds)
    labels = _grid_labels(model.direction_grid, train_ds["azimuth"].values, train_ds["elevation"].values)
    if test_ds is not None:  # before training, not after it: the test store fits the model and its targets the grid
        _check_input(model, test_ds)
        _grid_labels(model.direction_grid, test_ds["azimuth"].values, test_ds["elevation"].values)
    if labels.size < 2:
        raise InputError(f"the training store holds {labels.size} example(s); training needs at least 2")
    spec = BinauralSpec.from_dict(json.loads(train_ds.attrs["spec"])) if "spec" in train_ds.attrs else None
    rows = soft_targets(model.head_name, float(config.label_sigma)).to(device)
    # the store's config (split included) pins it; without one, its labels and shape
    data = train_ds.attrs.get("config") or content_digest(
        train_ds["waveforms"].shape, azimuth=train_ds["azimuth"].values, elevation=train_ds["elevation"].values,
        split=str(train_ds.attrs.get("split")))
    cpu_copy = copy.deepcopy(model)  # the fixed front end runs on the CPU, once
    hooks = Hooks(picks=shuffled(labels.size), forward=after_front_end(model),
                  assemble=cached_batches(lambda: cochleagram_cache(cpu_copy, train_ds["waveforms"], progress=progress),
                                          torch.as_tensor(labels), device),
                  loss=lambda logits, y: nn.functional.cross_entropy(logits, rows[y]))
    model.to(device)
    with determinism(True, device):
        trainer = fit(model, torch.optim.Adam(model.parameters(), lr=config.lr), hooks,
                      Schedule(config.batch_size, config.epochs, config.seed, max_minutes=config.max_minutes),
                      progress=progress, desc="train cochcnn", state_file=state_path(out),
                      identity={"arch": "cochcnn", "model_config": model.config, "recipe": config.recipe(),
                                "dataset": data})
    model = model.cpu().eval()
    score = None
    dataset = {"train": {"spec": spec.to_dict() if spec else None, "split": train_ds.attrs.get("split"),
                         "n_examples": int(labels.size)}}
    if test_ds is not None:
        test_cache = cochleagram_cache(model, test_ds["waveforms"], progress=progress)

        def score(net: nn.Module) -> dict[str, Any]:
            logits = in_batches(after_front_end(net), test_cache, config.eval_batch_size).numpy()
            return score_logits(logits, test_ds, model.head_name, model="cochcnn").summary()

        dataset["test"] = {"split": test_ds.attrs.get("split"), "n_examples": int(test_ds.sizes["example"]),
                           "spec_digest": test_ds.attrs.get("spec_digest")}
    return save_trained(model, out, condition={"rooms": list(spec.rooms) if spec else ["unknown"],
                                               "snr": None if spec is None or spec.snr is None else list(spec.snr)},
                        training={**trainer.record(), "config": asdict(config), "recipe": RECIPE},
                        dataset=dataset, score=score, tolerance=FP16_TOLERANCE, dtype=dtype)


def train_on_spec(spec, out: str | Path, *, root: str | Path | None = None, model_config: dict[str, Any] | None = None,
                  config: ClassifierConfig | None = None, dtype: str = "auto", progress: bool = True) -> Path:
    """Render the train and test splits of a binaural dataset where absent, then train on them.

    Parameters
    ----------
    spec
        A :class:`~xai_loc.data.binaural_store.BinauralSpec`; its held-out sounds (the test
        split, when ``spec.test_fraction > 0``) score the model into its card.
    out, model_config, config, dtype, progress
        As for :func:`train_classifier`.
    root
        Data root of the stores.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    InputError
        Before anything is rendered: for an ``out`` or ``dtype`` that is not allowed, a model
        configuration that is not allowed or does not fit the spec's duration, or a split that holds
        no sounds.
    """
    from xai_loc.data.binaural_store import simulate_binaural
    from xai_loc.models.checkpoint import build_configured
    from xai_loc.models.trainer import check_output, check_storage, seeded

    config = ClassifierConfig() if config is None else config
    out = check_output(out)
    check_storage(dtype)
    with seeded(config.seed):  # the global generators are left as they were
        build_configured("cochcnn", {"n_samples": spec.n_samples, **(model_config or {})})
    splits = ("train", "test") if spec.test_fraction > 0 else ("train",)
    for split in splits:
        spec.sound_ids(split)
    train_store = simulate_binaural(spec, "train", root=root, device=config.device, progress=progress)
    test_store = (simulate_binaural(spec, "test", root=root, device=config.device, progress=progress)
                  if "test" in splits else None)
    return train_classifier(train_store, out, model_config=model_config, config=config, test_store=test_store,
                            dtype=dtype, progress=progress)
