"""Explanations of the BAST transformer: attention-aware LRP, Integrated Gradients, attention rollout.

**AttnLRP** (Achtibat et al., "AttnLRP: Attention-aware layer-wise relevance propagation for
transformers", ICML 2024), implemented as the ``lxt`` package does it: relevance is
``input x gradient`` of a backward pass whose local gradients are modified so that each step
follows its rule. :class:`AttnLRP` installs the modifications as forward hooks (removed on
exit, also after an error) that return an output of the same value with a different graph:

================================  ========================================================================
module                            rule
================================  ========================================================================
``nn.Linear``, ``nn.Conv2d``      epsilon: ``R_i = x_i sum_j w_ji R_j / (z_j + eps sign z_j)``; the bias
                                  and ``eps`` absorb relevance (``eps = 0``: LRP-0)
``nn.LayerNorm``, ``Standardize`` identity on the division by the standard deviation (detached),
                                  LRP-0 on the centring, epsilon on the affine part
``nn.Softmax``                    the softmax rule of AttnLRP (Prop. 3.1, a Taylor expansion at the input
                                  with a bias): ``R_in = x (R_out - s sum R_out)``; this is the plain
                                  gradient in ``input x gradient`` form. ``softmax='cp'`` instead holds
                                  the attention constant (CP-LRP, Ali et al. ICML 2022)
``MatMul`` (``q k^T``, ``A v``)   uniform rule (Prop. 3.3): half of the relevance to each factor (all to
                                  the other factor when one is constant)
``nn.GELU``, ``Decibel``          identity rule (Eq. 9): ``R_in = R_out``; a constant output where the
                                  input is zero (the decibel floor of digital silence) absorbs its share
                                  like a bias
``PowerSpectrum``                 uniform rule on ``re * re`` and ``im * im``
``PositionEmbedding``             an additive constant: absorbs its share like a bias
linear steps (STFT, padding,      gradient (LRP-0, exact: no bias)
residuals, integration, pooling)
================================  ========================================================================

Relevance is seeded with the output along a unit direction ``u`` (the regression output
``y = [cos, sin]``): ``R_out = y . u``. Every place where relevance leaves the network is
booked per example in a :class:`RelevanceLedger` (``bias``: biases, position embeddings and the
decibel floor,
``softmax``: the softmax rule's bias term, ``epsilon``: the stabilizers), so that
``sum(R_input) + sum(absorbed) == y . u`` holds to rounding; the tests check it in float64.

**Integrated Gradients** (Sundararajan et al. 2017, captum) on the network's input spectrogram
(the standardized dB spectrogram) from the all-zero baseline (a flat spectrogram at the
example's mean level with no interaural difference); captum's convergence delta measures
completeness.

**Attention rollout** (Abnar & Zuidema 2020): per encoder, head-averaged attention mixed with
the residual identity, ``0.5 A + 0.5 I`` (rows renormalized), multiplied over the blocks; the
mean-pooled output tokens of the third encoder are traced back through the integration
(half to each ear) and the ear encoders to the patches, and each patch's share is spread
evenly over its 16 x 16 pixels (overlaps add up, the padding folds back): a map on the
spectrogram summing to 1.

All methods return labelled ``xarray.DataArray`` objects with dims ``(example, ear,
frequency, time)`` (Hz, seconds), and provenance attrs.
"""
from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from xai_loc.checks import check_choice, check_number
from xai_loc.errors import InputError
from xai_loc.explain._options import option_defaults, resolve
from xai_loc.explain.composites import composite_covers
from xai_loc.explain.methods import BackwardMethod, methods_for, register_method
from xai_loc.explain.targets import TARGETS, bind, targets_for
from xai_loc.features.spectrogram import Decibel, PowerSpectrum, Standardize
from xai_loc.models.bast import BAST, MatMul, PositionEmbedding
from xai_loc.models.registry import MODELS

__all__ = ["AttnLRP", "AttnLRPMethod", "BAST_METHODS", "NAMED_TARGETS", "RelevanceLedger", "SOFTMAX_RULES",
           "SPECTROGRAM_ONLY", "attention_rollout", "attn_lrp", "bast_levels", "explain_bast", "integrated_gradients",
           "method_levels", "registry_target", "rollout_matrices", "target_directions"]

#: Softmax treatments: AttnLRP's rule, or constant attention (CP-LRP).
SOFTMAX_RULES = ("attnlrp", "cp")


def _per_example(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).sum(dim=1)


class RelevanceLedger:
    """Relevance absorbed per example and kind (``bias``, ``softmax``, ``epsilon``) during a backward pass."""

    def __init__(self) -> None:
        self.absorbed: dict[str, torch.Tensor] = {}

    def add(self, kind: str, values: torch.Tensor) -> None:
        values = values.detach().double()
        self.absorbed[kind] = self.absorbed[kind] + values if kind in self.absorbed else values

    def total(self, n: int) -> torch.Tensor:
        """Sum over kinds, ``[n]`` float64 (zeros when nothing was absorbed)."""
        out = torch.zeros(n, dtype=torch.float64)
        for values in self.absorbed.values():
            out = out + values.cpu()
        return out

    def clear(self) -> None:
        self.absorbed.clear()


def _half_gradient(x: torch.Tensor) -> torch.Tensor:
    """``x`` in value (exactly), half of the gradient in the backward pass."""
    half = x * 0.5
    return half + half.detach()


class AttnLRP:
    """Context manager turning the backward pass of a BAST model into AttnLRP (see the module docs).

    Parameters
    ----------
    model
        A :class:`~xai_loc.models.bast.BAST` (or any module built of the same parts).
    epsilon
        Stabilizer of the epsilon rule (0: LRP-0).
    softmax
        ``'attnlrp'`` (the AttnLRP softmax rule) or ``'cp'`` (constant attention).

    Examples
    --------
    >>> with AttnLRP(model) as lrp:
    ...     x.requires_grad_(True)
    ...     y = model(x)
    ...     y.backward(u)                      # R_out = y . u
    ...     relevance = x * x.grad             # sum(relevance) + lrp.ledger.total(n) == (y * u).sum(1)
    """

    def __init__(self, model: nn.Module, *, epsilon: float = 1e-6, softmax: str = "attnlrp") -> None:
        if softmax not in SOFTMAX_RULES:
            raise InputError(f"softmax={softmax!r} is not allowed; use one of {', '.join(SOFTMAX_RULES)}")
        self.model, self.epsilon, self.softmax = model, check_number("epsilon", epsilon), softmax
        self.ledger = RelevanceLedger()
        self._handles: list[Any] = []

    @property
    def params(self) -> dict[str, Any]:
        """Rule parameters, for provenance."""
        return {"epsilon": self.epsilon, "softmax": self.softmax, "layernorm": "identity on 1/std",
                "matmul": "uniform (1/2 each)", "gelu": "identity", "decibel": "identity",
                "power": "uniform", "linear": "epsilon"}

    # -- rules ---------------------------------------------------------------------------------------

    def _stabilize(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` in value; the gradient reaching ``z`` scaled by ``z / (z + eps sign z)``; the rest booked."""
        if self.epsilon == 0.0:
            return z
        sign = torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
        keep = (z / (z + self.epsilon * sign)).detach()
        out = z * keep + (z * (1.0 - keep)).detach()
        if out.requires_grad:
            out.register_hook(lambda g: self.ledger.add("epsilon", _per_example(g * z.detach() * (1.0 - keep))))
        return out

    def _book_bias(self, z: torch.Tensor, bias: torch.Tensor | None, shape: tuple[int, ...]) -> None:
        if bias is not None and z.requires_grad:
            b = bias.detach().reshape(shape)
            z.register_hook(lambda g: self.ledger.add("bias", _per_example(g * b)))

    def _linear(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        shape = (-1, 1, 1) if isinstance(module, nn.Conv2d) else (-1,)
        self._book_bias(output, module.bias, shape)
        return self._stabilize(output)

    def _layer_norm(self, module: nn.LayerNorm, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        dims = tuple(range(-len(module.normalized_shape), 0))
        centred = x - x.mean(dim=dims, keepdim=True)
        std = centred.square().mean(dim=dims, keepdim=True).add(module.eps).sqrt().detach()
        y = centred / std
        if module.weight is not None:
            y = y * module.weight
        if module.bias is not None:
            y = y + module.bias
            self._book_bias(y, module.bias, tuple(module.normalized_shape))
        return self._stabilize(y)

    def _standardize(self, module: Standardize, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        dims = tuple(range(1, x.ndim))
        centred = x - x.mean(dim=dims, keepdim=True)
        return centred / centred.square().mean(dim=dims, keepdim=True).add(module.eps).sqrt().detach()

    def _identity(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        # The output keeps its exact value; only the part proportional to the input carries relevance.
        # Where the input is zero (or the ratio overflows) the output is a constant (the decibel floor
        # 10 log10(amin) of digital silence): it leaves the network like a bias and is booked as one.
        x = inputs[0]
        with torch.no_grad():
            ratio = output / torch.where(x != 0, x, torch.ones_like(x))
            ratio = torch.where((x != 0) & torch.isfinite(ratio), ratio, torch.zeros_like(ratio))
        lin = x * ratio
        rest = (output - lin).detach()
        out = lin + rest
        if out.requires_grad and bool((rest != 0).any()):
            out.register_hook(lambda g: self.ledger.add("bias", _per_example(g * rest)))
        return out

    def _softmax(self, module: nn.Softmax, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if self.softmax == "cp":
            return output.detach()
        x = inputs[0]
        if output.requires_grad:
            pending: dict[str, torch.Tensor] = {}
            output.register_hook(lambda g: pending.__setitem__("out", _per_example(g * output.detach())))
            x.register_hook(lambda g: self.ledger.add("softmax", pending.pop("out") - _per_example(g * x.detach())))
        return output

    @staticmethod
    def _matmul(module: MatMul, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        a, b = inputs
        if not (a.requires_grad and b.requires_grad):
            return output
        return torch.matmul(_half_gradient(a), _half_gradient(b))

    @staticmethod
    def _power(module: PowerSpectrum, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        return (x * x.detach()).sum(dim=-3)

    def _position(self, module: PositionEmbedding, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        self._book_bias(output, module.weight[0], tuple(module.weight.shape[1:]))
        return output

    def _rules(self) -> list[tuple[type[nn.Module], Callable]]:
        return [(nn.Linear, self._linear), (nn.Conv2d, self._linear), (nn.LayerNorm, self._layer_norm),
                (Standardize, self._standardize), (nn.GELU, self._identity), (Decibel, self._identity),
                (nn.Softmax, self._softmax), (MatMul, self._matmul), (PowerSpectrum, self._power),
                (PositionEmbedding, self._position)]

    # -- lifetime ------------------------------------------------------------------------------------

    def __enter__(self) -> AttnLRP:
        rules = self._rules()
        try:
            for module in self.model.modules():
                for kind, rule in rules:
                    if isinstance(module, kind):
                        self._handles.append(module.register_forward_hook(rule))
                        break
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


# -- the method -----------------------------------------------------------------------------------------


@register_method("attn_lrp")
class AttnLRPMethod(BackwardMethod):
    """AttnLRP (Achtibat et al. 2024) through the pipeline: :class:`AttnLRP`'s rules on the model,
    relevance ``representation x modified gradient`` at every level read, started (as LRP is)
    from the target's seed: the output's gradient is ``seed / output``, so that ``output x
    gradient`` there is the seed and relevance sums to ``sum(seed)`` less what is absorbed; the
    relevance that leaves the network booked per kind (``absorbed``). It explains the architectures
    of families without an LRP composite (:attr:`~xai_loc.models.families.Family.composite` None:
    BAST, whose attention its rules are for); modules without a rule pass the plain gradient, so
    on another family it would be input x gradient under another name, and it is refused there."""

    OPTIONS = {"epsilon": 1e-6, "softmax": "attnlrp"}

    @classmethod
    def explains(cls, arch):
        """Registered architectures that LRP composites do not cover
        (:func:`~xai_loc.explain.composites.composite_covers`: BAST's family, and plug-ins that subclass BAST)."""
        return arch in MODELS and not composite_covers(arch)

    @classmethod
    def check(cls, params):
        check_number("epsilon", params["epsilon"])
        check_choice("softmax", params["softmax"], SOFTMAX_RULES)

    def __enter__(self) -> AttnLRPMethod:
        self.rules = AttnLRP(self.model, epsilon=self.params["epsilon"], softmax=self.params["softmax"]).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.rules.__exit__(*exc)

    def attribute(self, x, weigh, index):
        self.rules.ledger.clear()
        return super().attribute(x, weigh, index)

    def backward(self, output, weights, seed, tensors):
        # output x gradient at the output is the seed: the gradient there is seed / output (0 where the
        # output is 0), so a target whose value does not change with |f| (an angle) is explained too
        output_grad = torch.where(output == 0, 0.0, seed / torch.where(output == 0, 1.0, output.detach()))
        return torch.autograd.grad((output,), tensors, grad_outputs=(output_grad,), allow_unused=True)

    def relevance(self, tensor, grad):
        return tensor.detach() * grad

    def explained(self, output, weights, seed):
        """``sum(seed)``: what ``output x gradient`` at the output sums to (``q`` for a linear target)."""
        return seed.sum(-1)

    def extras(self):
        return {"absorbed": dict(self.rules.ledger.absorbed)}


# -- targets and inputs -------------------------------------------------------------------------------

#: Names of BAST targets beside the registered targets of ``cos_sin`` outputs (:func:`registry_target`).
NAMED_TARGETS = ("prediction", "truth", "cos", "sin")


def registry_target(target: str | float) -> tuple[str, dict[str, Any]]:
    """The registered target (:mod:`xai_loc.explain.targets`) and options of a BAST target.

    ``'prediction'``: along the predicted direction; ``'truth'``: along the true azimuth;
    ``'cos'`` / ``'sin'``: one component (``'sin'``: towards the left); a number: along that
    azimuth in degrees; a registered target of ``cos_sin`` outputs (``'direction'``,
    ``'true_direction'``, ``'azimuth'``, ``'angular_error'`` ...): itself.
    """
    if target == "prediction":
        return "direction", {}
    if target == "truth":
        return "true_direction", {}
    if target in ("cos", "sin"):
        return "direction", {"azimuth": 0.0 if target == "cos" else 90.0}
    if isinstance(target, (int, float)) and not isinstance(target, bool) and np.isfinite(target):
        return "direction", {"azimuth": float(target)}
    if isinstance(target, str) and target in targets_for("cos_sin"):
        return target, {}
    raise InputError(f"target={target!r} is not allowed; use {', '.join(map(repr, NAMED_TARGETS))}, an azimuth in "
                     f"degrees or one of {', '.join(targets_for('cos_sin'))}")


def _truth_needed(name: str, target, azimuth, n: int | None = None) -> None:
    """Refuse a target that needs the true azimuths (``'truth'``, ``'angular_error'`` ...) without one per example
    (``n``: as many as that, where known)."""
    if TARGETS[name].needs_truth and (azimuth is None or n is not None and len(np.atleast_1d(azimuth)) != n):
        raise InputError(f"target={target!r} needs one azimuth (degrees) per example")


def target_directions(outputs: torch.Tensor, target: str | float, azimuth=None) -> torch.Tensor:
    """Unit vectors ``u`` ``[n, 2]`` along which the outputs ``[n, 2]`` are explained (see :func:`registry_target`;
    for ``'azimuth'`` the predicted direction, for ``'angular_error'`` the true one)."""
    name, options = registry_target(target)
    _truth_needed(name, target, azimuth, outputs.shape[0])
    truth = None if azimuth is None else torch.as_tensor(np.asarray(azimuth, dtype=np.float64))
    return bind(name, "cos_sin", options).weights(outputs, truth)


def _inputs(model: BAST, x) -> torch.Tensor:
    if hasattr(x, "dims") and hasattr(x, "values"):
        x = x.values
    x = torch.as_tensor(np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x))
    expected = model.input_shape
    if x.ndim != 1 + len(expected) or tuple(x.shape[1:]) != tuple(expected):
        raise InputError(f"inputs of shape {tuple(x.shape)} are not allowed; the model takes "
                         f"(n, {', '.join(map(str, expected))})")
    if not torch.isfinite(x).all():
        raise InputError("inputs hold NaN or infinite values")
    first = next(model.parameters())
    return x.to(first.device, first.dtype)


def _coords(model: BAST, n: int, example=None) -> dict[str, Any]:
    return {"example": ("example", np.arange(n) if example is None else np.asarray(example)),
            "ear": ("ear", np.array(["left", "right"])),
            "frequency": ("frequency", model.frequencies, {"units": "Hz"}),
            "time": ("time", model.frame_times, {"units": "s"})}


def _provenance(model, base: dict[str, Any], target, params: dict[str, Any]) -> dict[str, Any]:
    """``base`` (an explainer's :meth:`~xai_loc.explain.Explainer.provenance`) with BAST's own attrs."""
    return {**base, "rule_params": json.dumps(params, sort_keys=True), "target": str(target),
            "variant": model.variant, "fs": model.fs}


def _explain(model, inputs, target, azimuth, levels, batch_size, **settings):
    from xai_loc.explain.attribute import explain_arrays

    name, options = registry_target(target)
    _truth_needed(name, target, azimuth)
    truth = np.asarray(azimuth, dtype=np.float64) if TARGETS[name].needs_truth else None
    return explain_arrays(model, inputs, truth=truth, batch_size=batch_size, target=name, levels=levels,
                          **options, **settings)


# -- methods ------------------------------------------------------------------------------------------


def _ear_levels(model: BAST, out: dict[str, Any], levels: tuple[str, ...], attrs: dict[str, Any],
                per_example: dict[str, Any], example=None) -> dict[str, Any]:
    """Label relevance of :func:`~xai_loc.explain.attribute.explain_arrays` at ``levels`` (the waveform and,
    with a front end, the spectrogram): ``'spectrogram'`` and ``'waveform'`` DataArrays."""
    import xarray as xr

    spec = out["levels"][levels[-1]].astype(np.float64)
    n = len(spec)
    coords = _coords(model, n, example)
    result = {"spectrogram": xr.DataArray(
        spec, dims=("example", "ear", "frequency", "time"), name="relevance", attrs={**attrs, "level": "spectrogram"},
        coords={**coords, **per_example, "relevance_sum": ("example", spec.reshape(n, -1).sum(1))})}
    if model.with_front_end:
        wave = out["levels"]["waveform"].astype(np.float64)
        result["waveform"] = xr.DataArray(
            wave, dims=("example", "ear", "time"), name="relevance", attrs={**attrs, "level": "waveform"},
            coords={"example": coords["example"], "ear": coords["ear"], **per_example,
                    "time": ("time", np.arange(model.n_samples) / model.fs, {"units": "s"}),
                    "relevance_sum": ("example", wave.reshape(n, -1).sum(1))})
    return result


def _predicted(model: BAST, out: dict[str, Any]) -> np.ndarray:
    return model.decode(torch.as_tensor(np.asarray(out["prediction"]), dtype=torch.float64))["azimuth"].numpy()


def attn_lrp(model, inputs, *, target: str | float = "prediction", azimuth=None, epsilon: float = 1e-6,
             softmax: str = "attnlrp", batch_size: int = 16, example=None, progress: bool = False) -> dict[str, Any]:
    """AttnLRP relevance of a BAST model on the spectrogram (and on the waveform, with a front end).

    Parameters
    ----------
    model
        A :class:`~xai_loc.models.bast.BAST` or a checkpoint path.
    inputs
        ``(n, 2, n_samples)`` ear signals (``(n, 2, F, T)`` spectrograms for a model without front end).
    target
        See :func:`registry_target`; ``azimuth`` (degrees) for ``'truth'``.
    epsilon, softmax
        Rule parameters (:class:`AttnLRP`).
    progress
        Show a progress bar.

    Returns
    -------
    dict
        ``'spectrogram'``: DataArray ``(example, ear, frequency, time)``; ``'waveform'``
        ``(example, ear, time)`` when the model has its front end. Per-example coords: ``output``
        (the explained value ``y . u``), ``azimuth_pred``, ``relevance_sum``, ``absorbed_<kind>``.
    """
    from xai_loc.explain.attribute import resolve_model

    model, info = resolve_model(model)
    levels = ("waveform", "front_end") if model.with_front_end else ("waveform",)
    explainer, out = _explain(model, inputs, target, azimuth, levels, batch_size, method="attn_lrp",
                              epsilon=epsilon, softmax=softmax, progress=progress)
    absorbed = {f"absorbed_{k}": ("example", v) for k, v in out["absorbed"].items()}
    per_example = {"output": ("example", out["explained"]),
                   "azimuth_pred": ("example", _predicted(model, out), {"units": "degree"}),
                   **absorbed}
    attrs = _provenance(model, explainer.provenance(**info), target,
                        AttnLRP(model, epsilon=epsilon, softmax=softmax).params)
    return _ear_levels(model, out, levels, attrs, per_example, example)


def method_levels(model, inputs, *, method: str, target: str | float = "prediction", azimuth=None,
                  batch_size: int = 16, example=None, **options: Any) -> dict[str, Any]:
    """Relevance of a BAST model by any registered method (:data:`~xai_loc.explain.METHODS`: saliency, input x
    gradient, DeepLift, GradientShap, occlusion ...) at the waveform and, with a front end, the spectrogram.

    Parameters
    ----------
    model, inputs, target, azimuth
        As for :func:`attn_lrp`.
    method
        A registered method name; ``options`` are its options.

    Returns
    -------
    dict
        ``'spectrogram'`` and (with the front end) ``'waveform'`` as :func:`attn_lrp` gives them; per-example
        coords ``output`` (the explained value ``y . u``), ``explained`` (what the method's relevance should
        sum to, NaN where nothing in particular), ``azimuth_pred``, ``relevance_sum``.
    """
    from xai_loc.explain.attribute import resolve_model

    model, info = resolve_model(model)
    levels = ("waveform", "front_end") if model.with_front_end else ("waveform",)
    explainer, out = _explain(model, inputs, target, azimuth, levels, batch_size, method=method, **options)
    per_example = {"output": ("example", out["attr_output"].astype(np.float64).sum(1)),
                   "explained": ("example", out["explained"]),
                   "azimuth_pred": ("example", _predicted(model, out), {"units": "degree"})}
    attrs = _provenance(model, explainer.provenance(**info), target, explainer.method_params)
    return _ear_levels(model, out, levels, attrs, per_example, example)


def integrated_gradients(model, inputs, *, target: str | float = "prediction", azimuth=None, n_steps: int = 64,
                         batch_size: int = 8, example=None, progress: bool = False):
    """Integrated Gradients (captum) on the input spectrogram, from the all-zero spectrogram.

    Returns
    -------
    xarray.DataArray
        ``(example, ear, frequency, time)`` with per-example coords ``output`` (``F(x) = y . u``),
        ``baseline_output`` (``F(0)``), ``attribution_sum`` and ``delta`` (the convergence
        delta: ``attribution_sum - (F(x) - F(0))``).
    """
    import xarray as xr

    from xai_loc.explain.attribute import resolve_model

    model, info = resolve_model(model)
    level = "front_end" if model.with_front_end else "waveform"
    explainer, out = _explain(model, inputs, target, azimuth, (level,), batch_size,
                              method="integrated_gradients", n_steps=n_steps, progress=progress)
    attr = out["relevance"].astype(np.float64)
    n = len(attr)
    output = out["attr_output"].astype(np.float64).sum(1)  # the seed f * u sums to F(x) = y . u
    total = attr.reshape(n, -1).sum(1)
    attrs = _provenance(model, explainer.provenance(**info), target,
                        {"n_steps": n_steps, "baseline": "zeros (standardized spectrogram)",
                         "method": "gausslegendre"})
    return xr.DataArray(attr, dims=("example", "ear", "frequency", "time"), name="attribution",
                        attrs={**attrs, "level": "spectrogram"},
                        coords={**_coords(model, n, example), "output": ("example", output),
                                "baseline_output": ("example", output - out["explained"]),
                                "attribution_sum": ("example", total),
                                "delta": ("example", total - out["explained"])})


def rollout_matrices(attention: list[torch.Tensor]) -> torch.Tensor:
    """Attention rollout ``[B, N, N]`` of one encoder from its blocks' attention ``[B, heads, N, N]``.

    ``prod_l (0.5 mean_heads(A_l) + 0.5 I)`` (rows renormalized), last block leftmost
    (Abnar & Zuidema 2020): row ``i`` is the share of each input token in output token ``i``.
    """
    rollout = None
    for a in attention:
        mixed = 0.5 * a.mean(dim=1) + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed if rollout is None else mixed @ rollout
    return rollout


@contextlib.contextmanager
def _recording(model: BAST) -> Iterator[list[list[torch.Tensor]]]:
    """Attention maps per encoder call (left, right, joint) of the forward passes in the block."""
    calls: list[list[torch.Tensor]] = []
    handles = []
    encoders = {id(m): m for m in (model.encoder_left, model.encoder_right_or_shared, model.encoder_joint)}
    for encoder in encoders.values():
        handles.append(encoder.register_forward_pre_hook(lambda module, args: calls.append([])))
    for module in model.modules():
        if isinstance(module, nn.Softmax):
            handles.append(module.register_forward_hook(lambda m, args, out: calls[-1].append(out.detach())))
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def _patches_to_pixels(model: BAST, weights: torch.Tensor) -> torch.Tensor:
    """Spread patch weights ``[B, n_freq * n_time]`` evenly over their pixels -> ``[B, F, T]`` (sums kept)."""
    emb = model.patches
    f, t = model.spectrogram_shape[1:]
    pad_t, pad_f = emb.pad.padding[1], emb.pad.padding[2]
    k, stride = emb.patch, emb.patch - emb.overlap
    cols = (weights / (k * k))[:, None, :].expand(-1, k * k, -1)
    padded = F.fold(cols, (f + pad_f, t + pad_t), kernel_size=k, stride=stride)
    probe = torch.zeros(weights.shape[0], 1, f, t, dtype=weights.dtype, device=weights.device, requires_grad=True)
    with torch.enable_grad():
        (pixels,) = torch.autograd.grad(emb.pad(probe), probe, grad_outputs=padded)  # adjoint of the padding
    return pixels[:, 0]


def attention_rollout(model, inputs, *, batch_size: int = 16, example=None, progress: bool = False) -> dict[str, Any]:
    """Attention rollout of a BAST model mapped to the spectrogram (see the module docs).

    Returns
    -------
    dict
        ``'spectrogram'``: DataArray ``(example, ear, frequency, time)`` summing to 1 per example;
        ``'patches'``: ``(example, ear, patch)`` the same shares per patch; ``'matrices'``:
        ``(example, encoder, query, key)`` the rollout of each encoder (``left``, ``right``,
        ``joint``), rows summing to 1.
    """
    import xarray as xr

    from xai_loc.explain.attribute import resolve_model
    from xai_loc.progress import tqdm

    model, info = resolve_model(model)
    x_all = _inputs(model, inputs)
    training = model.training
    model.eval()
    maps, patch_parts, matrix_parts = [], [], []
    try:
        with torch.no_grad(), _recording(model) as calls, \
                tqdm(total=len(x_all), disable=not progress, desc="explain attention_rollout", unit="ex") as bar:
            for s in range(0, len(x_all), batch_size):
                calls.clear()
                model(x_all[s:s + batch_size])
                left, right, joint = (rollout_matrices(c) for c in calls)
                pooled = joint.mean(dim=1)  # the mean over output tokens
                ears = torch.stack([0.5 * (pooled[:, None, :] @ left)[:, 0], 0.5 * (pooled[:, None, :] @ right)[:, 0]],
                                   dim=1)  # [B, 2, N]
                maps.append(torch.stack([_patches_to_pixels(model, ears[:, e]) for e in range(2)], dim=1))
                patch_parts.append(ears)
                matrix_parts.append(torch.stack([left, right, joint], dim=1))
                bar.update(len(ears))
    finally:
        model.train(training)
    spec = torch.cat(maps).double().cpu().numpy()
    n = len(spec)
    from xai_loc import __version__

    attrs = _provenance(model, {**info, "method": "attention_rollout", "xai_loc_version": __version__}, "none",
                        {"residual": 0.5, "heads": "mean", "integration": "half to each ear"})
    coords = _coords(model, n, example)
    return {
        "spectrogram": xr.DataArray(spec, dims=("example", "ear", "frequency", "time"), name="rollout",
                                    coords=coords, attrs={**attrs, "level": "spectrogram"}),
        "patches": xr.DataArray(torch.cat(patch_parts).double().cpu().numpy(), dims=("example", "ear", "patch"),
                                name="rollout", coords={"example": coords["example"], "ear": coords["ear"]},
                                attrs={**attrs, "level": "patches", "patch_grid": [model.patches.n_freq,
                                                                                   model.patches.n_time]}),
        "matrices": xr.DataArray(torch.cat(matrix_parts).double().cpu().numpy(),
                                 dims=("example", "encoder", "query", "key"), name="rollout",
                                 coords={"example": coords["example"], "encoder": ["left", "right", "joint"]},
                                 attrs={**attrs, "level": "tokens"}),
    }


# the level wrappers keep their method's signature (functools.wraps): explain_bast checks options against it
@functools.wraps(integrated_gradients)
def _integrated_gradients_levels(model, inputs, **options: Any) -> dict[str, Any]:
    return {"spectrogram": integrated_gradients(model, inputs, **options)}


@functools.wraps(attention_rollout)
def _rollout_levels(model, inputs, **options: Any) -> dict[str, Any]:
    return {"spectrogram": attention_rollout(model, inputs, **options)["spectrogram"]}


#: Explanation methods of BAST by name: ``method(model, inputs, **options)`` -> ``{level: DataArray}``
#: (``'spectrogram'`` ``(example, ear, frequency, time)``; AttnLRP also ``'waveform'`` with a front end).
BAST_METHODS: dict[str, Callable[..., dict[str, Any]]] = {
    "attn_lrp": attn_lrp, "integrated_gradients": _integrated_gradients_levels, "attention_rollout": _rollout_levels}

#: The methods of :data:`BAST_METHODS` that reach the spectrogram alone (any other method, through a front end, the
#: waveform too).
SPECTROGRAM_ONLY = ("integrated_gradients", "attention_rollout")


def bast_levels(model, method: str = "attn_lrp") -> tuple[str, ...]:
    """The levels :func:`explain_bast` returns for ``model`` (a BAST or a checkpoint path) by ``method``."""
    from xai_loc.explain.attribute import resolve_model

    front_end = resolve_model(model)[0].with_front_end and method not in SPECTROGRAM_ONLY
    return ("spectrogram", "waveform") if front_end else ("spectrogram",)


def explain_bast(model, inputs, method: str = "attn_lrp", **options: Any) -> dict[str, Any]:
    """Relevance of a BAST model by a method of :data:`BAST_METHODS` or any other registered method
    (:func:`method_levels`), at every level the method reaches.

    Parameters
    ----------
    model
        A :class:`~xai_loc.models.bast.BAST` or a checkpoint path.
    inputs
        ``(n, 2, n_samples)`` ear signals (spectrograms for a model without front end).
    method
        ``'attn_lrp'`` (:func:`attn_lrp`: ``'spectrogram'`` and, with the front end,
        ``'waveform'``), ``'integrated_gradients'`` or ``'attention_rollout'`` (``'spectrogram'``);
        another registered method (``'saliency'``, ``'occlusion'`` ...): both levels, by :func:`method_levels`.
    options
        Options of the method (``target``, ``azimuth``, ``epsilon``, ``n_steps`` ...).
    """
    from xai_loc.explain.methods import METHODS

    if isinstance(method, str) and method in BAST_METHODS:
        resolve(option_defaults(BAST_METHODS[method]), options, f"bast method {method!r}")  # unknown names: one line
        return BAST_METHODS[method](model, inputs, **options)
    if isinstance(method, str) and method in METHODS:
        return method_levels(model, inputs, method=method, **options)
    raise InputError(f"method={method!r} is not allowed for bast; use one of "
                     f"{', '.join(dict.fromkeys([*BAST_METHODS, *methods_for('bast')]))}")
