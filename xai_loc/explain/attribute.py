"""One way to explain: :func:`explain` turns a model and windows into a labelled relevance array.

The relevance has the input's shape, dims ``(window, mic, time)``, and carries:

- coords along ``window``: ``source_id``, ``window_index``, ``speech_id`` (from a dataset),
  the true position ``source_x/y/z`` (m), the prediction ``prediction_x/y/z`` (m), the seed
  ``attr_output_x/y/z`` (see :mod:`~xai_loc.explain.targets`), the relevance total
  ``relevance_sum`` and ``explained``, what a complete attribution would sum to (see
  :mod:`~xai_loc.explain.methods`; for the ``'contrast'`` target it differs by method family:
  ``sum_k (f_k - r_k)`` for LRP, ``(f - r) . (f - f(baseline))`` for path methods); ``mic``: the
  input's labels (a dataset's or DataArray's, so a selection or reordering of microphones keeps them;
  ``0 .. n-1`` for a plain array), along it ``mic_x/y/z`` (m); ``time`` in seconds;
- attrs: ``units`` ('relevance'), model, model and checkpoint digests, method, composite and their
  parameters, target, T60, SNR, the dataset's ``dataset_digest`` (SHA-256 of its ``config``, as
  :attr:`xai_loc.data.SimulatedSplit.digest`), fs, software versions, and how much of the output the input accounts
  for: ``output_zero_input`` (the model's output on an all-zero window),
  ``input_dependence`` (sum over windows of ``|f(x) - f(0)|`` over sum of ``|f(x)|``) and
  ``relevance_fraction`` (sum of relevance over sum of ``explained``: for LRP, the share
  of the seeded relevance that reaches the input rather than the biases; NaN where that sum is no total: for
  targets whose seed is a difference, 'error' and 'contrast', whose components' sum may cancel
  (:attr:`~xai_loc.explain.targets.Target.cancels`), and where ``explained`` takes both signs across windows, as
  a baseline method's q(x) - q(baseline) may for any target).

Vectors are split into ``_x/_y/_z`` coords because a DataArray's coords may only use its
own dims; ``da.xai.source_position`` and friends (:mod:`~xai_loc.explain.accessor`) put
them back together.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from xai_loc.checks import check_integer, check_number, plain
from xai_loc.data.integrity import value_flags
from xai_loc.errors import InputError
from xai_loc.explain.composites import (
    check_coverage,
    check_operations,
    composite_defaults,
    lrp_start,
    make_composite,
)
from xai_loc.explain.levels import INPUT, Levels
from xai_loc.explain.methods import get_method
from xai_loc.explain.targets import REFERENCES, TARGETS, TRUTHS, Objective, bind, check_truth, get_target
from xai_loc.runtime import input_dtype, model_device

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["Explainer", "bind_target", "check_data_options", "check_finite_results", "check_finite_windows",
           "check_waveform_levels", "data_explainer_inputs", "dataset_inputs", "experiment_inputs", "explain",
           "explain_arrays", "input_coords", "lrp_start", "model_digest", "out_of_place", "placed", "relevance_array",
           "resolve_model", "result_coords", "summary_attrs"]

#: Vector quantities stored as three coords each, and the dim they run along.
VECTORS = {"source": "window", "mic": "mic", "prediction": "window", "attr_output": "window"}
AXES = ("x", "y", "z")
DEFAULT_FS = 16000.0
#: Windows read at a time by :func:`check_finite_windows`.
FINITE_STEP = 32
#: Dtypes NumPy cannot hold, and the dtype that holds their every value (bfloat16 is float32 cut short).
HOST_DTYPES = {torch.bfloat16: torch.float32}
#: The dtype to explain a model of a half-precision dtype in where its results overflow (float16 ends at 65504).
WIDER_DTYPES = {torch.float16: torch.float32, torch.bfloat16: torch.float32}
def bind_target(model: nn.Module, target: str, options: dict[str, Any] | None = None) -> Objective:
    """Target ``target`` bound to ``model``'s output kind (factorized class logits: the azimuth block)."""
    grid = getattr(model, "direction_grid", None)
    block = grid.n_azimuths if getattr(model, "factorized_classes", False) else None
    return bind(target, getattr(model, "output_kind", "position"), options, block)


def model_digest(model: nn.Module) -> str:
    """Short sha256 of a model's state dict (names, dtypes, shapes and values)."""
    sha = hashlib.sha256()
    for key, value in model.state_dict().items():
        value = value.detach().cpu().contiguous()
        sha.update(f"{key}:{value.dtype}:{tuple(value.shape)}".encode())
        sha.update(value.numpy().tobytes() if value.dtype != torch.bfloat16 else value.float().numpy().tobytes())
    return sha.hexdigest()[:16]


def resolve_model(model: nn.Module | str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Return the model (loading a checkpoint path) and its provenance attrs."""
    from xai_loc.models import file_digest, load_model, read_card

    info: dict[str, Any] = {}
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        card = read_card(path)
        model = load_model(path)
        info.update(checkpoint=path.name, checkpoint_digest=file_digest(path),
                    model_condition=json.dumps(card.get("condition")))
    if not isinstance(model, nn.Module):
        raise InputError(f"model {model!r} is neither a torch module nor a checkpoint path")
    name = getattr(model, "arch_name", "") or type(model).__name__
    config = getattr(model, "config", None)
    info.update(model=name, model_digest=model_digest(model))
    if config is not None:
        info["model_config"] = json.dumps(config, sort_keys=True)
    return model, info


@contextlib.contextmanager
def placed(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """Eval mode on ``device`` for the block; the original device (its first parameter's or buffer's, else the
    CPU) and mode afterwards."""
    original = model_device(model, torch.device("cpu"))
    training = model.training
    try:
        yield model.to(device).eval()
    finally:
        model.to(original).train(training)


@contextlib.contextmanager
def out_of_place(model: nn.Module) -> Iterator[nn.Module]:
    """In-place activations (``nn.ReLU(inplace=True)`` and the like) computing out of place for the block:
    the same outputs, but the tensors a rule saves for its backward pass are not overwritten."""
    switched = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    try:
        for module in switched:
            module.inplace = False
        yield model
    finally:
        for module in switched:
            module.inplace = True


def allowed_options(method: str, composite: str | None, targets: Sequence[str]) -> list[str]:
    """The option names that ``method`` (with ``composite``, where the method uses one) and ``targets`` take, as
    :class:`Explainer` reads them; the command line checks ``--option`` against the same list."""
    method_cls = get_method(method)
    names = set(method_cls.OPTIONS)
    if method_cls.uses_composite and composite is not None:
        names.update(composite_defaults(composite))
    for name in targets:
        target = get_target(name)
        names.update(target.options)
        names.update(["reference"] if target.needs_reference else [])
    return sorted(names)


def _reference_param(value: Any) -> str | list[float]:
    if isinstance(value, str):
        if value not in REFERENCES:
            raise InputError(f"reference={value!r} is not allowed; use one of {', '.join(REFERENCES)} or (x, y, z)")
        return value
    try:
        position = [float(v) for v in value]
    except (TypeError, ValueError):
        position = []
    if len(position) != 3 or not all(np.isfinite(position)):
        raise InputError(f"reference={value!r} is not allowed; use one of {', '.join(REFERENCES)} or (x, y, z)")
    return position


class Explainer:
    """A model, method, composite and target set up to explain batches of windows.

    Use as a context manager: inside, the model is in eval mode on ``device`` with the
    method's hooks registered; afterwards it is as it was. :func:`explain` and
    :func:`~xai_loc.explain.store.explain_store` are built on it, and so is every family's
    explanation (:mod:`xai_loc.explain.binaural`): the same code for every output kind,
    method and level.

    Parameters
    ----------
    model
        A localizer or a checkpoint path.
    target, method, composite
        Registered names (:data:`~xai_loc.explain.TARGETS`, :data:`~xai_loc.explain.METHODS`,
        :data:`~xai_loc.explain.COMPOSITES`); the composite applies to LRP only. The method must
        explain the model's architecture (:meth:`~xai_loc.explain.methods.Method.explains`: AttnLRP
        only BAST's family), the target accept its output kind (``output_kind``, default ``'position'``).
    levels
        Where relevance is read (:class:`~xai_loc.explain.levels.Levels`): level names the
        model declares (``'waveform'``, ``'front_end'`` ...) or submodule names; default
        the input only.
    batch_size
        Most windows per forward pass (methods that perturb or interpolate split further).
    device
        'cpu', 'cuda' or 'cuda:N'.
    mean_input
        The mean window ``[mics, samples]`` of the data (for ``'mean'`` references and
        baselines), or an array that broadcasts to the model's ``input_shape`` (a constant).
    train_mean
        The training set's mean source position (for ``reference='train-mean'``).
    **options
        Options of the method, the composite and the target (``reference`` of
        ``'contrast'``: 'zero', 'mean', 'train-mean' or (x, y, z); default 'zero';
        ``cls``, ``versus`` of the class targets).
    """

    def __init__(self, model: nn.Module | str | os.PathLike, *, target: str = "truth", method: str = "lrp",
                 composite: str = "paper", batch_size: int = 32, device: str = "cpu",
                 mean_input: np.ndarray | torch.Tensor | None = None, train_mean: np.ndarray | None = None,
                 levels: str | tuple[str, ...] | None = None, **options: Any) -> None:
        from xai_loc import __version__
        from xai_loc.runtime import resolve_device, software_versions

        self.model, info = resolve_model(model)
        self.target = get_target(target)
        self.output_kind = getattr(self.model, "output_kind", "position")
        self.method_cls = get_method(method)
        self.method_cls.check_model(info["model"])
        self.levels = Levels(self.model, levels)
        self.batch_size = check_integer("batch_size", batch_size, minimum=1)
        self.device = resolve_device(str(device))

        options = dict(options)
        target_params = {k: options.pop(k) for k in list(options) if k in self.target.options}
        self.objective = bind_target(self.model, target, target_params)
        if self.target.needs_reference:
            target_params["reference"] = _reference_param(options.pop("reference", "zero"))
        method_options = {k: options.pop(k) for k in list(options) if k in self.method_cls.OPTIONS}
        self.method_params = self.method_cls.resolve(method_options)
        if getattr(self.model, "input_shape", None) is not None:
            self.method_cls.check_shape(self.method_params, tuple(self.model.input_shape))
        self.composite_name = composite if self.method_cls.uses_composite else "none"
        if self.method_cls.uses_composite:
            allowed = composite_defaults(composite)
            composite_options = {k: options.pop(k) for k in list(options) if k in allowed}
            self.composite, self.composite_params = make_composite(composite, self.model, **composite_options)
        else:
            self.composite, self.composite_params = None, {}
        if options:
            allowed = allowed_options(method, composite, [target])
            raise InputError(f"option {sorted(options)[0]!r} is not allowed for method {method!r}"
                             + (f" with composite {composite!r}" if self.composite is not None else "")
                             + f" and target {target!r}; allowed: {', '.join(allowed) or 'none'}")
        name = info["model"]
        if self.method_cls.uses_composite and self.levels.input == INPUT and lrp_start(self.model):
            raise InputError(f"level {INPUT!r} is not allowed for method {method!r} on {name}: no LRP rule covers its "
                             "front end; allowed: 'front_end' first, or a submodule after it")
        first = self.levels.modules.get(self.levels.input)  # modules below the first level read are never crossed
        self._skip = next((n for n, m in self.model.named_modules() if m is first), "")
        if self.composite is not None:
            check_coverage(composite, self.model, self.composite, skip=self._skip)
        why = self.method_cls.FLOAT16_REFUSED
        if why and next(self.model.parameters(), torch.empty(0)).dtype == torch.float16:
            raise InputError(f"a float16 model is not allowed for method {method!r}: {why}; explain model.float() "
                             "(the same weights in float32; bfloat16 keeps float32's range at 8 bits of precision)")
        self._operations_checked = self.composite is None  # by the first forward pass (check_operations)
        self.target_params = target_params
        reference = target_params.get("reference")
        if reference == "train-mean" and train_mean is None:
            raise InputError("reference='train-mean' needs data whose scene has a train split; "
                             "give the position as reference=(x, y, z)")
        if "mean" in (reference, self.method_params.get("baseline")) and mean_input is None:
            raise InputError("a 'mean' reference or baseline needs the mean window of the data")
        shape = getattr(self.model, "input_shape", None)
        self.mean_input = None if mean_input is None else torch.as_tensor(
            _numbers("mean_input", mean_input, None if shape is None else tuple(shape), finite=True, broadcast=True))
        self.train_mean = None if train_mean is None else _numbers("train_mean", train_mean, (3,), finite=True)
        self.attrs: dict[str, Any] = {
            **info,
            "method": method,
            "method_params": json.dumps(self.method_params, sort_keys=True),
            "composite": self.composite_name,
            "composite_params": json.dumps(self.composite_params, sort_keys=True),
            "target": target,
            "target_params": json.dumps(target_params, sort_keys=True),
            "target_description": self.target.description,
            "xai_loc_version": __version__,
            "software": json.dumps(software_versions(), sort_keys=True),
        }
        if self.levels.names != (INPUT,):
            self.attrs["levels"] = list(self.levels.names)
        self._active = False
        if shape and not self._operations_checked:  # refused here, before a caller simulates or reads any data
            with placed(self.model, self.device), out_of_place(self.model):
                self._checked(lambda: self._output_on(torch.zeros(1, *shape)))

    def provenance(self, **extras: Any) -> dict[str, Any]:
        """Attrs of a family's labelled relevance: :attr:`attrs` (model, method, composite and target with their
        parameters, versions) with the family's ``extras``; the level names as JSON (netCDF takes no lists of
        strings)."""
        attrs = {**self.attrs, **extras}
        if "levels" in attrs:
            attrs["levels"] = json.dumps(list(attrs["levels"]))
        return attrs

    @property
    def sense(self) -> int:
        """+1 or -1: relevance times this ranks first what speaks for the explained answer (the target's
        :attr:`~xai_loc.explain.targets.Target.sense`; +1 for unsigned relevance, saliency's ``abs``)."""
        return 1 if self.method_params.get("abs", False) else self.target.sense

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model computes in (inputs are cast to it)."""
        return input_dtype(self.model, torch.get_default_dtype())

    def __enter__(self) -> Explainer:
        self._stack = contextlib.ExitStack()
        try:
            self._stack.enter_context(placed(self.model, self.device))
            self._stack.enter_context(out_of_place(self.model))
            shape = getattr(self.model, "input_shape", None)
            self.zero_output = self._checked(lambda: self._output_on(torch.zeros(1, *shape))) if shape else None
            self.reference = self._reference()
            mean = None if self.mean_input is None else self.mean_input.to(self.device, self.dtype)
            method = self.method_cls(self.model, self.method_params, objective=self.objective, levels=self.levels,
                                     batch_size=self.batch_size, composite=self.composite, mean_input=mean)
            self._method = self._stack.enter_context(method)
        except BaseException:
            self._stack.close()
            raise
        self._active = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._active = False
        self._stack.close()

    def _checked(self, run: Callable[[], Any]) -> Any:
        """``run()``, a forward pass of the model; the first of a composite's checked for torch operations that its
        rules cannot see (:func:`~xai_loc.explain.composites.check_operations`)."""
        if self._operations_checked:
            return run()
        result = check_operations(self.composite_name, self.model, run, self._skip)
        self._operations_checked = True
        return result

    def _output_on(self, window: torch.Tensor | None) -> np.ndarray | None:
        if window is None:
            return None
        with torch.no_grad():
            return self.model(window.to(self.device, self.dtype)).double().cpu().numpy()[0]

    def _reference(self) -> torch.Tensor | None:
        """The contrast target's reference output, on the model's device."""
        reference = self.target_params.get("reference")
        if reference is None:
            return None
        if reference == "zero":
            if self.zero_output is None:
                raise InputError("reference='zero' needs a model with an input_shape; give reference=(x, y, z)")
            value = self.zero_output
        elif reference == "mean":
            value = self._output_on(self.mean_input[None])
        elif reference == "train-mean":
            value = self.train_mean
        else:
            value = np.asarray(reference)
        self.attrs["reference_output"] = [float(v) for v in value]
        return torch.as_tensor(value, dtype=self.dtype, device=self.device)

    def explain_batch(self, windows: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor | None = None,
                      index: np.ndarray | torch.Tensor | None = None, to_host: bool = True) -> dict[str, Any]:
        """Explain windows ``[B, mics, samples]`` (true values for targets that need them: positions
        ``[B, 3]``, class labels ``[B]`` or directions in degrees, see :mod:`~xai_loc.explain.targets`).

        ``index`` is each window's position in the whole set (default ``0..B-1``).
        Returns numpy arrays: ``relevance`` (at the first level; [B, mics, samples] for the
        waveform), ``prediction`` and ``attr_output`` [B, outputs], ``relevance_sum`` and
        ``explained`` [B]; ``levels``: level name -> relevance; ``absorbed``: kind -> [B],
        for methods that book what leaves the network (AttnLRP). ``to_host=False``: the same
        as tensors on the explainer's device (for probes that go on computing there).
        A window whose output or relevance comes out NaN or infinite (a float16 model that overflows) is refused
        in one line naming it (:func:`check_finite_results`), its output before the method's work.
        """
        if not self._active:
            raise InputError("Explainer.explain_batch outside its with block is not allowed (the model is not set "
                             "up for the method); use Explainer inside a with block")
        if torch.is_inference_mode_enabled():
            raise InputError("explaining inside torch.inference_mode() is not allowed (it turns autograd off); "
                             "call it outside (torch.no_grad() is fine)")
        # contiguous: a reversed selection (negative strides) is no tensor
        x = torch.as_tensor(np.ascontiguousarray(windows) if not isinstance(windows, torch.Tensor) else windows)
        if x.is_complex() or x.dtype == torch.bool:
            raise InputError(f"windows of dtype {x.dtype} are not allowed; use real numbers")
        shape = getattr(self.model, "input_shape", None)
        if shape is not None and tuple(x.shape[1:]) != tuple(shape):
            raise InputError(f"windows of shape {tuple(x.shape)} are not allowed; the model takes (n, "
                             f"{', '.join(map(str, shape))})")
        x = x.detach().to(self.device, self.dtype)  # detached: the methods make their own leaves, never the caller's
        index = torch.arange(x.shape[0]) if index is None else _window_labels(index, x.shape[0])
        labels = index.tolist()
        check_finite_windows(x, labels, step=max(1, len(x)))
        if self.target.needs_truth:
            if truth is None:
                raise InputError(f"target {self.target.name!r} needs the true {TRUTHS[self.output_kind]}")
            dtype = torch.long if self.output_kind == "direction_classes" else self.dtype
            truth = check_truth(truth, self.output_kind, x.shape[0]).to(self.device, dtype)
        reference = self.reference

        def weigh(output: torch.Tensor) -> torch.Tensor:  # every method weighs the output before its own work
            check_finite_results({"output": output}, labels, self.dtype)
            return self.objective.weights(output, truth, reference)

        def give(value: torch.Tensor) -> np.ndarray | torch.Tensor:
            value = value.detach()
            return value.to(HOST_DTYPES.get(value.dtype, value.dtype)).cpu().numpy() if to_host else value

        if not self._operations_checked:  # a model without an input_shape: checked on its first window
            self._checked(lambda: self._output_on(x[:1]))
        out = self._method.attribute(x, weigh, index)
        relevance = out["relevance"]
        # a window's float64 sum is finite exactly where its relevance is (no sum of float32 or narrower values
        # overflows float64): the first level is checked on its sum, at no cost, the others (if read) value by value
        total = relevance.flatten(1).double().sum(1)
        check_finite_results({f"relevance at level {name!r}": total if value is relevance else value
                              for name, value in out["levels"].items()}, labels, self.dtype)
        result = {
            "relevance": give(relevance),
            "prediction": give(out["output"]),
            "attr_output": give(out["seed"]),
            "relevance_sum": give(total),
            "explained": give(out["explained"].double()),
            "levels": {name: give(value) for name, value in out["levels"].items()},
        }
        if "absorbed" in out:
            result["absorbed"] = {kind: give(value.double()) for kind, value in out["absorbed"].items()}
        return result


def _window_labels(index: np.ndarray | torch.Tensor, n: int) -> torch.Tensor:
    """``index`` as a tensor if it holds one integer label per window of ``n``; else :class:`InputError`."""
    try:
        array = np.asarray(index.cpu() if isinstance(index, torch.Tensor) else index)
    except ValueError:  # a ragged sequence
        array = np.asarray(None)
    if array.shape != (n,) or not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"index of shape {array.shape} and dtype {array.dtype} is not allowed; use a 1-D array of "
                         f"{n} integers, one label per window")
    return torch.as_tensor(array)


def summary_attrs(prediction: np.ndarray | None, relevance_sum: np.ndarray, explained: np.ndarray,
                  zero_output: np.ndarray | None, target: str | None = None) -> dict[str, Any]:
    """How much of the output the input accounts for, over all windows (see module docs); ``prediction`` is
    read only with ``zero_output``. ``relevance_fraction`` is NaN where ``sum(explained)`` is no total to take a
    share of: for a ``target`` whose seed may cancel within a window
    (:attr:`~xai_loc.explain.targets.Target.cancels`), and where ``explained`` takes both signs across windows (a
    method's difference from its baseline, q(x) - q(baseline), for any target)."""
    attrs: dict[str, Any] = {}
    explained = np.asarray(explained)
    cancels = (target in TARGETS and TARGETS[target].cancels) or bool((explained > 0).any() and (explained < 0).any())
    explained_total = float(np.sum(explained)) if np.all(np.isfinite(explained)) and not cancels else float("nan")
    attrs["relevance_fraction"] = float(np.sum(relevance_sum)) / explained_total if explained_total else float("nan")
    if zero_output is not None:
        attrs["output_zero_input"] = [float(v) for v in zero_output]
        prediction = np.asarray(prediction, dtype=np.float64)  # as stored in the prediction_x/y/z coords
        norm = float(np.linalg.norm(prediction, axis=-1).sum())
        attrs["input_dependence"] = float(np.linalg.norm(prediction - zero_output, axis=-1).sum()) / norm \
            if norm else float("nan")
    return attrs


def _split_vector(name: str, values: np.ndarray | None, units: str | None = None) -> dict[str, tuple]:
    if values is None:
        return {}
    values = np.asarray(values, dtype=np.float64)
    extra = ({"units": units},) if units else ()
    return {f"{name}_{axis}": (VECTORS[name], values[:, k], *extra) for k, axis in enumerate(AXES)}


def _as_windows(windows: Any) -> np.ndarray | torch.Tensor:
    if isinstance(windows, torch.Tensor):
        array = windows.detach()
        if array.is_complex() or array.dtype == torch.bool:
            raise InputError(f"windows of dtype {array.dtype} are not allowed; use real numbers")
    else:
        try:
            array = np.asarray(windows)
        except (TypeError, ValueError):
            raise InputError(f"windows of type {type(windows).__name__} are not allowed; "
                             "use a tensor, an array [window, mic, time] or a dataset from open_signals") from None
        if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
            raise InputError(f"windows of dtype {array.dtype} are not allowed; use real numbers")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise InputError(f"windows of shape {tuple(array.shape)} are not allowed; use [window, mic, time]")
    return array


def _array(what: str, value: Any) -> np.ndarray:
    """``value`` as a NumPy array, or one line naming it (ragged nesting, objects numpy cannot hold)."""
    try:
        return np.asarray(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} of type {type(value).__name__} that are not an array are not allowed; use an "
                         "array with one row per example") from None


def _numbers(name: str, value: Any, shape: tuple[int, ...] | None, finite: bool = False,
             broadcast: bool = False) -> np.ndarray:
    """``value`` as a float64 array of ``shape`` (None: any shape; with ``broadcast``, a value that broadcasts to
    ``shape`` is expanded to it), all finite if ``finite``, or one line naming it."""
    want = "an array of numbers" if shape is None else f"[{', '.join(map(str, shape))}]"
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} of type {type(value).__name__} that are not an array of numbers are not allowed; "
                         f"use {want} numbers") from None
    if shape is not None and broadcast and array.shape != shape:
        try:
            array = np.broadcast_to(array, shape).copy()
        except ValueError:
            pass
    if shape is not None and array.shape != shape:
        raise InputError(f"{name} of shape {array.shape} are not allowed; use {want}")
    if finite and not np.isfinite(array).all():
        raise InputError(f"{name} holds NaN or infinite values; use {want} finite numbers")
    return array


def check_finite_windows(windows: Any, labels: Sequence[Any], step: int = FINITE_STEP) -> None:
    """Refuse windows ``[window, mic, time]`` (an array, a tensor or a DataArray, read ``step`` windows at a time so
    that a lazily loaded store never sits in memory whole) with a NaN or infinite sample, naming the first such
    window by its label in ``labels``."""
    for start in range(0, len(windows), step):
        block = windows[start:start + step]
        if isinstance(block, torch.Tensor):
            finite = torch.isfinite(block).flatten(1).all(1).cpu().numpy()
        else:
            block = np.asarray(getattr(block, "values", block))
            finite = np.isfinite(block).reshape(len(block), -1).all(1)
        if not finite.all():
            bad = labels[start + int(np.argmin(finite))]
            raise InputError(f"window {plain(bad)!r} holds NaN or infinite samples; clean the audio first or leave "
                             "that window out")


def check_finite_results(results: dict[str, torch.Tensor], labels: Sequence[Any], dtype: torch.dtype) -> None:
    """Refuse results of a batch (what -> tensor ``[B, ...]``) that hold a NaN or infinity, naming the first such
    window by its label in ``labels``, the model's ``dtype`` and the dtype to explain in (:data:`WIDER_DTYPES`). The
    flags are computed where the values are (:func:`~xai_loc.data.integrity.value_flags`) and copied once."""
    bad = torch.stack([value_flags(value)[0] for value in results.values()]).cpu().numpy()  # [result, window]
    if bad.any():
        window, which = np.argwhere(bad.T)[0]
        name, wider = str(dtype).removeprefix("torch."), WIDER_DTYPES.get(dtype)
        fix = (f"explain the same weights in {str(wider).removeprefix('torch.')} (model.to({wider}))" if wider
               else "check the model's weights and operations, and the window")
        raise InputError(f"window {plain(labels[window])!r} came out with NaN or infinite {list(results)[which]} "
                         f"from a {name} model; {fix}")


def _wants_mean(options: dict[str, Any]) -> bool:
    return any(isinstance(options.get(k), str) and options[k] == "mean" for k in ("reference", "baseline"))


def data_explainer_inputs(d: dict[str, Any], options: Mapping[str, Any], mean_input: Any = None) -> dict[str, Any]:
    """The :class:`Explainer` arguments that come from the data, as every explanation of a dataset's windows
    takes them.

    Parameters
    ----------
    d
        The data (:func:`dataset_inputs`; ``signals`` a labelled ``(window, mic, time)`` array or a plain one).
    options
        The method, composite and target options: the mean window is made only where ``baseline='mean'`` or
        ``reference='mean'`` asks for it (refused for one window: the mean of one window is that window).
    mean_input
        The window ``[mic, time]`` to use as the mean one (checked), else the mean of the data's windows.

    Returns
    -------
    dict
        ``mean_input`` and ``train_mean`` (the mean position of the training sources of the data's scene, or None).
    """
    signals = d["signals"]
    if mean_input is not None:
        mean_input = _numbers("mean_input", mean_input, tuple(signals.shape[1:]), finite=True)
    elif _wants_mean(options):
        if signals.shape[0] < 2:  # nothing between the window and its baseline
            raise InputError("a 'mean' baseline or reference of 1 window is not allowed (it is that window); "
                             "give at least 2 windows or mean_input=[mic, time]")
        mean_input = signals.mean("window").values if hasattr(signals, "dims") else np.asarray(signals).mean(axis=0)
    return {"mean_input": mean_input, "train_mean": d["train_mean"]}


def check_data_options(options: dict[str, Any]) -> None:
    """Refuse ``train_mean`` among the options of :func:`explain`,
    :func:`~xai_loc.explain.store.explain_store` or an experiment that explains a dataset: the data gives it."""
    if "train_mean" in options:
        raise InputError("option 'train_mean' is not allowed: the training set's mean position comes from the data's "
                         "scene; give reference=(x, y, z) for another position")


def experiment_inputs(d: dict[str, Any], options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any],
                                                                              dict[str, Any]]:
    """What an experiment that explains a dataset's windows passes on: ``(inputs, options, recorded)`` —
    :func:`data_explainer_inputs` of ``d`` (a caller's ``mean_input`` among ``options`` checked there), the
    other options, and the options as its result records them: a caller's mean window by the first 16 hex digits of
    the SHA-256 of the window used (as a relevance store records it), not as an array. ``train_mean`` is refused
    (:func:`check_data_options`)."""
    check_data_options(dict(options))
    rest = {k: v for k, v in options.items() if k != "mean_input"}
    inputs = data_explainer_inputs(d, rest, options.get("mean_input"))
    if options.get("mean_input") is None or not _wants_mean(rest):  # a window no option reads changes nothing
        return inputs, rest, rest
    return inputs, rest, {**rest, "mean_input": hashlib.sha256(inputs["mean_input"].tobytes()).hexdigest()[:16]}


def check_waveform_levels(explainer: Explainer, caller: str, only: bool = False) -> None:
    """Refuse levels that ``caller``, which labels waveform relevance ``(window, mic, time)``, cannot label: a first
    level other than the waveform, or (``only``) any level besides it."""
    if explainer.levels.input != INPUT or (only and explainer.levels.names != (INPUT,)):
        fix = "leave levels out" if only else "put 'waveform' first"
        raise InputError(f"levels={explainer.levels.names!r} are not allowed in {caller}, which labels waveform "
                         f"relevance (window, mic, time); {fix}, or use explain_arrays")


def _labelled_windows(windows: xr.DataArray) -> xr.DataArray:
    """A DataArray of windows with dims ``(window, mic, time)`` in that order (one window ``(mic, time)`` as a window
    of one, its scalar coords such as ``window`` and ``source_id`` along that window), or one line for other dims."""
    if set(windows.dims) == {"window", "mic", "time"}:
        return windows.transpose("window", "mic", "time")
    if set(windows.dims) == {"mic", "time"}:
        one = windows.transpose("mic", "time").expand_dims("window")
        return one.assign_coords({name: ("window", np.atleast_1d(coord.values)) for name, coord in one.coords.items()
                                  if coord.ndim == 0})
    raise InputError(f"windows with dims {windows.dims} are not allowed; use dims (window, mic, time) in any order, "
                     "(mic, time) or a plain array")


def sample_rate(fs: Any, time: xr.DataArray | np.ndarray | None) -> float:
    """The sample rate of windows: ``fs`` (None: the rate of their ``time`` coord where it is in seconds, else
    16 kHz), refused in one line where a time coord in seconds steps at another rate (relevance written as audio
    would play at the wrong speed). A coord is in seconds where its ``units`` attr says ``'s'``, or, without one,
    where it steps at a rate of 1 kHz to 1 MHz (a coord in samples or milliseconds does not)."""
    implied = _seconds_rate(time)
    if fs is None:
        return implied if implied is not None else DEFAULT_FS
    rate = check_number("fs", fs, strict=True)
    if implied is not None and not math.isclose(rate, implied, rel_tol=1e-6):
        raise InputError(f"fs {plain(fs)!r} does not match the windows' time coord ({implied:.6g} samples per "
                         f"second); give fs={implied:.6g} or windows whose time coord steps by 1/fs seconds")
    return rate


def _seconds_rate(time: xr.DataArray | np.ndarray | None) -> float | None:
    """The rate of a time coord in seconds (:func:`sample_rate`), a whole number where it is one within float32
    rounding; None for no coord, one of other units, or one of fewer than two numeric points."""
    units = getattr(time, "attrs", {}).get("units")
    values = None if time is None else np.asarray(time)
    if values is None or values.size < 2 or not np.issubdtype(values.dtype, np.number) or units not in (None, "s"):
        return None
    span = float(values[-1]) - float(values[0])
    rate = (values.size - 1) / span if span > 0 else None
    if rate is None or (units is None and not 1e3 <= rate <= 1e6):
        return None
    return float(round(rate)) if math.isclose(rate, round(rate), rel_tol=1e-6) else rate


def dataset_inputs(ds) -> dict[str, Any]:
    """Windows, positions, coords and attrs of a dataset from ``open_signals``."""
    if "signals" not in ds:
        raise InputError("the dataset has no 'signals' variable; open one with xai_loc.data.open_signals")
    signals = ds["signals"]
    if signals.dims != ("window", "mic", "time"):
        raise InputError(f"signals with dims {signals.dims} are not allowed; use (window, mic, time)")
    coords: dict[str, tuple] = {"window": ("window", ds["window"].values)}
    if "mic" in ds.coords:  # the input's labels, which a selection or reordering of microphones keeps
        coords["mic"] = ("mic", ds["mic"].values)
    for name in ("source_id", "window_index", "speech_id"):
        if name in ds.coords:
            coords[name] = ("window", ds[name].values)
    from xai_loc.data.store import config_digest

    attrs = {k: ds.attrs[k] for k in ("t60", "snr") if k in ds.attrs}
    # the digest of the store (SimulatedSplit.digest: the same); not that of bare signals (data_digest), which
    # xarray keeps through arithmetic on them: it would name altered windows as the stored data
    if config_digest(ds.attrs) is not None:
        attrs["dataset_digest"] = config_digest(ds.attrs)
    if signals.dtype != np.float32:  # windows rounded otherwise than the store's (an in-memory float16 split)
        attrs["storage_dtype"] = str(signals.dtype)
    time = ds["time"] if "time" in ds.coords else None  # with its units (sample_rate)
    fs = sample_rate(ds.attrs.get("fs"), time)
    positions = ds["source_position"].values if "source_position" in ds else None
    mics = ds["mic_position"].values if "mic_position" in ds else None
    train_mean = None
    if "scene" in ds.attrs:
        scene = json.loads(ds.attrs["scene"])
        train = scene.get("splits", {}).get("train")
        if train:
            train_mean = np.asarray(scene["sources"], dtype=np.float64)[np.asarray(train)].mean(axis=0)
    return {"signals": signals, "positions": positions, "mics": mics, "coords": coords, "attrs": attrs,
            "fs": fs, "time": time, "train_mean": train_mean}


def explain(
    model: nn.Module | str | os.PathLike,
    windows: Any,
    target: str = "truth",
    method: str = "lrp",
    composite: str = "paper",
    positions: Any = None,
    batch_size: int = 32,
    device: str = "cpu",
    progress: bool = False,
    *,
    fs: float | None = None,
    mic_positions: Any = None,
    mean_input: Any = None,
    **options: Any,
) -> xr.DataArray:
    """Explain windows with one method, composite and target; relevance as a labelled array.

    Parameters
    ----------
    model
        A localizer, or the path of an xai-loc checkpoint (its digest is recorded).
    windows
        A tensor or array ``[window, mic, time]`` (or one ``[mic, time]`` window), or a
        dataset from :func:`xai_loc.data.open_signals` (or a selection of it), whose
        coords, positions, T60, SNR, fs and digest are used; an in-memory split from
        :func:`xai_loc.data.simulate_windows` gives the same as the store of its arguments (float16
        windows: other relevance, their ``storage_dtype`` recorded); a
        ``signals`` DataArray (dims ``(window, mic, time)`` in any order) lends its window, mic
        and time coords.
    target
        A name in :data:`~xai_loc.explain.TARGETS`: 'truth' (the paper's), 'prediction',
        'x', 'y', 'z', 'error', 'contrast'.
    method
        A name in :data:`~xai_loc.explain.METHODS`: 'lrp', 'integrated_gradients',
        'saliency', 'input_x_gradient', 'deeplift', 'gradient_shap', 'occlusion'.
    composite
        For LRP, a name in :data:`~xai_loc.explain.COMPOSITES` ('paper', ...).
    positions
        True source positions ``[window, 3]`` in metres (default: the dataset's).
    batch_size
        Most windows per forward pass.
    device
        'cpu', 'cuda' or 'cuda:N'; the model is moved there for the call and back after.
    progress
        Show a progress bar.
    fs
        Sample rate in Hz (default: the dataset's ``fs``, else the rate of the windows' ``time`` coord, else 16 kHz);
        one that the windows' ``time`` coord contradicts is refused.
    mic_positions
        Microphone positions ``[mic, 3]`` for tensor input.
    mean_input
        The window ``[mic, time]`` that ``baseline='mean'`` and ``reference='mean'`` use. Default:
        the mean of the windows passed here, so the result depends on them, and it needs at
        least 2 (:func:`~xai_loc.explain.store.explain_store` uses the mean of its store's windows).
    **options
        Options of the method (e.g. ``n_steps``, ``window``), the composite (e.g.
        ``first_rule``, ``epsilon``, ``gamma``, ``maxpool``) and the target
        (``reference``); ``levels`` must start with ``'waveform'`` (the array labelled here).

    Returns
    -------
    xarray.DataArray
        ``relevance (window, mic, time)`` with the coords and attrs of the module docs.

    Raises
    ------
    InputError
        For a model whose output is not a position (use :func:`explain_arrays`); for a window with a NaN or
        infinite sample, naming the first by its label: windows in memory before any is explained, a lazily
        loaded dataset batch by batch as it is read.

    Notes
    -----
    Random draws (``gradient_shap``) are seeded by each window's label: a dataset's (or
    DataArray's) ``window`` coord, or for a plain array its position ``0 .. n-1``, so a window
    of a plain array draws differently alone than at another position in a batch.
    """
    import xarray as xr

    from xai_loc.data.store import SimulatedSplit
    from xai_loc.progress import tqdm

    check_data_options(options)
    if isinstance(windows, SimulatedSplit):
        windows = windows.to_dataset()
    if isinstance(windows, xr.DataArray):
        windows = _labelled_windows(windows).to_dataset(name="signals")
    if isinstance(windows, xr.Dataset):
        data = dataset_inputs(windows)
        source = data["signals"]
        n, n_mics, n_time = source.shape
    else:
        source = _as_windows(windows)
        n, n_mics, n_time = source.shape
        data = {"positions": None, "mics": None, "coords": {"window": ("window", np.arange(n))}, "attrs": {},
                "fs": DEFAULT_FS, "time": None, "train_mean": None}
    if n == 0:
        raise InputError("no windows to explain; give at least one")
    # windows in memory are checked here, before any is explained; a lazily read store is checked batch by batch
    # as it is read (a pass of its own would read and decompress it twice: 4-8 % of a CPU run, more on a GPU)
    if getattr(getattr(source, "variable", None), "_in_memory", True):
        check_finite_windows(source, data["coords"]["window"][1])
    positions = data["positions"] if positions is None else _numbers("positions", positions, (n, 3))
    if positions is not None and not np.isfinite(positions).all():  # the truth's targets would be NaN
        raise InputError("positions hold NaN or infinite values; give x, y, z in metres for every window")
    mics = data["mics"] if mic_positions is None else _numbers("mic_positions", mic_positions, (n_mics, 3))
    fs = data["fs"] if fs is None else sample_rate(fs, data["time"])

    inputs = data_explainer_inputs({**data, "signals": source}, options, mean_input)
    explainer = Explainer(model, target=target, method=method, composite=composite, batch_size=batch_size,
                          device=device, **inputs, **options)
    if explainer.output_kind != "position":
        raise InputError(f"explain() labels positions (prediction_x/y/z); this model outputs "
                         f"{explainer.output_kind!r}: use xai_loc.explain.explain_arrays for it")
    check_waveform_levels(explainer, "explain()")
    shape = getattr(explainer.model, "input_shape", None)
    if shape is not None and tuple(shape) != (n_mics, n_time):
        raise InputError(f"windows of {n_mics} mics x {n_time} samples do not fit the model; "
                         f"it takes {shape[0]} x {shape[1]}")

    # a window's random draws (gradient_shap) are seeded by its label, as in a relevance store: the same
    # window gives the same relevance in whatever selection it is explained
    labels = np.asarray(data["coords"]["window"][1])
    labels = labels.astype(np.int64) if np.issubdtype(labels.dtype, np.integer) else np.arange(n)
    parts: dict[str, list[np.ndarray]] = {}
    with explainer, tqdm(total=n, disable=not progress, desc=f"explain {method}", unit="win") as bar:
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            batch = source[start:stop]
            batch = batch.values if isinstance(batch, xr.DataArray) else batch
            truth = None if positions is None else positions[start:stop]
            out = explainer.explain_batch(batch, truth, labels[start:stop])
            for key in ("relevance", "prediction", "attr_output", "relevance_sum", "explained"):
                parts.setdefault(key, []).append(out[key])
            bar.update(stop - start)
    result = {key: np.concatenate(value) for key, value in parts.items()}
    return relevance_array(result, explainer, data, positions, mics, fs, n_time)


def explain_arrays(model: nn.Module | str | os.PathLike, inputs: Any, *, truth: Any = None, batch_size: int = 32,
                   what: str = "inputs", progress: bool = False, **settings: Any) -> tuple[Explainer, dict[str, Any]]:
    """Explain inputs of any localizer with any method, target and levels; plain arrays back.

    The one path of every family's explanation (:mod:`xai_loc.explain.binaural`): the labelled
    arrays are the family's business, the numbers come from here.

    Parameters
    ----------
    model
        A localizer or a checkpoint path.
    inputs
        ``[n, *model.input_shape]`` (array, tensor or DataArray).
    truth
        True values of the targets that need them (see :mod:`~xai_loc.explain.targets`).
    batch_size
        Most inputs per batch.
    what
        What the inputs are called in error messages.
    progress
        Show a progress bar (examples explained).
    **settings
        :class:`Explainer` arguments: ``target``, ``method``, ``composite``, ``levels``,
        ``device`` and the options.

    Returns
    -------
    Explainer, dict
        The explainer (its ``attrs`` are the provenance) and the results of
        :meth:`Explainer.explain_batch`, concatenated over batches (``absorbed`` kinds missing
        from a batch count 0 there).
    """
    explainer = Explainer(model, batch_size=batch_size, **settings)
    if hasattr(inputs, "dims") and hasattr(inputs, "values"):
        inputs = inputs.values
    x = _array(what, inputs.detach().cpu() if isinstance(inputs, torch.Tensor) else inputs)
    if x.dtype.kind not in "iuf":
        raise InputError(f"{what} of dtype {x.dtype} are not allowed; use real numbers")
    shape = tuple(getattr(explainer.model, "input_shape", x.shape[1:]))
    if x.ndim != 1 + len(shape) or tuple(x.shape[1:]) != shape:
        raise InputError(f"{what} of shape {x.shape} are not allowed; "
                         f"the model takes (n, {', '.join(map(str, shape))})")
    if not np.isfinite(x).all():
        raise InputError(f"{what} hold NaN or infinite values")
    if len(x) == 0:
        raise InputError(f"no {what} to explain; give at least one")
    truth = None if truth is None else _array("true values", truth)
    if truth is not None and (truth.ndim == 0 or len(truth) != len(x)):
        given = f"{len(truth)} true values" if truth.ndim else f"one true value {truth.item()!r}"
        raise InputError(f"{given} do not fit {len(x)} {what}; give one per example")
    if truth is not None and truth.dtype.kind in "fc" and not np.isfinite(truth).all():
        raise InputError("the true values hold NaN or infinite values; give one finite value per example")
    from xai_loc.progress import tqdm

    n = len(x)
    batches = []
    with explainer, tqdm(total=n, disable=not progress, desc=f"explain {explainer.method_cls.name}",
                         unit="ex") as bar:
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            batches.append(explainer.explain_batch(x[start:stop], None if truth is None else truth[start:stop],
                                                   np.arange(start, stop)))
            bar.update(stop - start)
    result: dict[str, Any] = {key: np.concatenate([b[key] for b in batches]) for key in
                              ("relevance", "prediction", "attr_output", "relevance_sum", "explained")}
    result["levels"] = {name: np.concatenate([b["levels"][name] for b in batches]) for name in explainer.levels.names}
    kinds = sorted({kind for b in batches for kind in b.get("absorbed", {})})
    result["absorbed"] = {kind: np.concatenate([b.get("absorbed", {}).get(kind, np.zeros(len(b["explained"])))
                                                for b in batches]) for kind in kinds}
    return explainer, result


def input_coords(data: dict[str, Any], positions: np.ndarray | None, mics: np.ndarray | None, fs: float,
                 n_mics: int, n_time: int) -> dict[str, tuple]:
    """Coords that describe the input: window labels, true positions, microphones (the input's labels, else
    ``0 .. n_mics - 1``), time."""
    time = np.asarray(data["time"]) if data["time"] is not None else np.arange(n_time) / fs
    coords = dict(data["coords"])
    mic = coords.pop("mic", ("mic", np.arange(n_mics)))
    return {
        **coords,
        **_split_vector("source", positions, "m"),
        "mic": mic,
        **_split_vector("mic", mics, "m"),
        "time": ("time", time, {"units": "s"}),
    }


def result_coords(result: dict[str, np.ndarray]) -> dict[str, tuple]:
    """Per-window coords of :meth:`Explainer.explain_batch` results (prediction in metres, seed, totals)."""
    return {
        **_split_vector("prediction", result["prediction"], "m"),
        **_split_vector("attr_output", result["attr_output"]),
        "relevance_sum": ("window", result["relevance_sum"]),
        "explained": ("window", result["explained"]),
    }


def relevance_array(result: dict[str, np.ndarray], explainer: Explainer, data: dict[str, Any],
                    positions: np.ndarray | None, mics: np.ndarray | None, fs: float, n_time: int) -> xr.DataArray:
    """Assemble :meth:`Explainer.explain_batch` outputs into the relevance DataArray."""
    import xarray as xr

    n_mics = result["relevance"].shape[1]
    coords = {**input_coords(data, positions, mics, fs, n_mics, n_time), **result_coords(result)}
    attrs = {"units": "relevance", **explainer.attrs, **data["attrs"], "fs": fs,
             **summary_attrs(result["prediction"], result["relevance_sum"], result["explained"],
                             explainer.zero_output, explainer.attrs["target"]),
             "description": "relevance of each input sample (xai_loc.explain)"}
    return xr.DataArray(result["relevance"], dims=("window", "mic", "time"), coords=coords, attrs=attrs,
                        name="relevance")
