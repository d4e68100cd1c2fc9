"""Attribution methods by name: zennit's LRP and captum's gradient and perturbation methods.

Every method explains a batch of windows for a per-window *seed* ``w`` in output space (see
:mod:`xai_loc.explain.targets`): LRP starts its backward pass with relevance ``w``; the
other methods explain the scalar ``w . f(x)`` (captum's ``forward_func`` returns it). Each
also reports what a complete attribution of its kind would sum to (``explained``):

========================  =============================================================
method                    relevance should sum to
========================  =============================================================
lrp                       ``sum(w)`` (less what biases absorb and stabilizers lose)
input_x_gradient          ``w . f(x)`` (exact for bias-free piecewise-linear models)
integrated_gradients,     ``w . (f(x) - f(baseline))`` (completeness; for GradientShap
deeplift, gradient_shap   in expectation, with noise-free baselines)
saliency, occlusion       nothing in particular (reported as NaN)
========================  =============================================================

Captum is imported when a captum method is first used.
"""
from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn
from zennit.attribution import Gradient
from zennit.core import Composite

from xai_loc.errors import InputError
from xai_loc.explain._options import check_choice, check_number, resolve

__all__ = ["METHODS", "Method", "get_method", "register_method"]

SeedFn = Callable[[torch.Tensor], torch.Tensor]

#: name -> :class:`Method` subclass.
METHODS: dict[str, type[Method]] = {}


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator registering a :class:`Method` subclass under ``name``."""
    def decorator(cls: type[Method]) -> type[Method]:
        if name in METHODS:
            raise ValueError(f"method name {name!r} is already registered")
        cls.name = name
        METHODS[name] = cls
        return cls

    return decorator


def get_method(name: str) -> type[Method]:
    """The registered method class ``name``; :class:`InputError` if unknown."""
    if name not in METHODS:
        raise InputError(f"unknown method {name!r}; allowed: {', '.join(METHODS)}")
    return METHODS[name]


class Method(ABC):
    """An attribution method bound to a model for the duration of a ``with`` block.

    Parameters
    ----------
    model
        The localizer (eval mode, on the device of the inputs).
    params
        The method's options (:attr:`OPTIONS` keys), already resolved.
    batch_size
        Most windows (or perturbed copies of windows) per forward pass.
    composite
        The zennit composite, for methods with :attr:`uses_composite`.
    mean_input
        The mean window ``[mics, samples]``, for ``baseline='mean'``.
    """

    name: ClassVar[str] = ""
    #: Whether the method takes an LRP composite.
    uses_composite: ClassVar[bool] = False
    #: Options with their defaults.
    OPTIONS: ClassVar[dict[str, Any]] = {}

    def __init__(self, model: nn.Module, params: dict[str, Any], *, batch_size: int = 32,
                 composite: Composite | None = None, mean_input: torch.Tensor | None = None) -> None:
        self.model = model
        self.params = params
        self.batch_size = batch_size
        self.composite = composite
        self.mean_input = mean_input

    @classmethod
    def resolve(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Validate ``options`` against :attr:`OPTIONS`; return all options with defaults."""
        params = resolve(cls.OPTIONS, options, f"method {cls.name!r}")
        cls.check(params)
        return params

    @classmethod
    def check(cls, params: dict[str, Any]) -> None:
        """Raise :class:`InputError` for an option value that is not allowed."""
        if "baseline" in params:
            _check_baseline(params)

    def __enter__(self) -> Method:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @abstractmethod
    def attribute(self, x: torch.Tensor, seed_fn: SeedFn, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Explain a batch.

        Parameters
        ----------
        x
            Windows ``[B, mics, samples]``.
        seed_fn
            Maps the model's output ``[B, 3]`` to the seed ``[B, 3]``.
        index
            Position of each window in the whole set explained (seeds random methods per
            window, so results do not depend on batching).

        Returns
        -------
        dict
            ``output`` [B, 3], ``seed`` [B, 3], ``relevance`` [B, mics, samples] and
            ``explained`` [B] (NaN where the method has no completeness property).
        """


@register_method("lrp")
class LRP(Method):
    """Layer-wise relevance propagation: zennit's ``Gradient`` attributor with a composite
    (Bach et al. 2015; Montavon et al. 2019). Relevance sums to ``sum(seed)`` less what
    biases absorb."""

    uses_composite = True

    def __enter__(self) -> LRP:
        if self.composite is None:
            raise InputError("method 'lrp' needs a composite")
        self.attributor = Gradient(self.model, self.composite)
        self.attributor.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.attributor.__exit__(*exc)

    def attribute(self, x, seed_fn, index):
        seeds = []

        def attr_output(output: torch.Tensor) -> torch.Tensor:
            seeds.append(seed_fn(output.detach()))
            return seeds[-1]

        output, relevance = self.attributor(x, attr_output)
        seed = seeds[-1]
        return {"output": output.detach(), "seed": seed, "relevance": relevance.detach(), "explained": seed.sum(-1)}


class _Seeded(nn.Module):
    """``w . model(x)``: the scalar per window that captum's methods explain."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
        return (self.model(x) * seed).sum(-1)


def _check_baseline(params: dict[str, Any]) -> None:
    value = params["baseline"]
    if isinstance(value, str):
        check_choice("baseline", value, ("zero", "mean"))
    else:
        check_number("baseline", value, minimum=-float("inf"))


class _CaptumMethod(Method):
    """Base of the captum methods: forward once for the seed, then call captum."""

    #: What the attributions should sum to: 'output', 'baseline' or None.
    completeness: ClassVar[str | None] = None

    def __enter__(self) -> _CaptumMethod:
        self.seeded = _Seeded(self.model)
        self._baseline_output: torch.Tensor | None = None
        return self

    def baseline(self, x: torch.Tensor) -> torch.Tensor:
        """The baseline windows for ``x``: zero, the mean window or a constant."""
        value = self.params["baseline"]
        if value == "mean":
            if self.mean_input is None:
                raise InputError("baseline='mean' needs the mean window of the data")
            return self.mean_input.to(x).expand_as(x).contiguous()
        return torch.full_like(x, 0.0 if value == "zero" else float(value))

    def attribute(self, x, seed_fn, index):
        with torch.no_grad():
            output = self.model(x)
        seed = seed_fn(output)
        relevance = self.captum(x.detach().requires_grad_(), seed, index).detach()
        if self.completeness == "output":
            explained = (seed * output).sum(-1)
        elif self.completeness == "baseline":
            if self._baseline_output is None:
                with torch.no_grad():
                    self._baseline_output = self.model(self.baseline(x[:1]))
            explained = (seed * (output - self._baseline_output)).sum(-1)
        else:
            explained = torch.full(output.shape[:1], float("nan"), dtype=output.dtype, device=output.device)
        return {"output": output, "seed": seed, "relevance": relevance, "explained": explained}

    @abstractmethod
    def captum(self, x: torch.Tensor, seed: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The captum attribution of ``seed . f(x)``."""


@register_method("saliency")
class Saliency(_CaptumMethod):
    """Gradient of ``w . f(x)`` (Simonyan et al. 2014); its absolute value if ``abs``."""

    OPTIONS = {"abs": True}

    @classmethod
    def check(cls, params):
        if not isinstance(params["abs"], bool):
            raise InputError(f"abs={params['abs']!r} is not allowed; use True or False")

    def captum(self, x, seed, index):
        from captum.attr import Saliency as CaptumSaliency

        return CaptumSaliency(self.seeded).attribute(x, additional_forward_args=(seed,), abs=self.params["abs"])


@register_method("input_x_gradient")
class InputXGradient(_CaptumMethod):
    """Input times the gradient of ``w . f(x)`` (Shrikumar et al. 2016)."""

    completeness = "output"

    def captum(self, x, seed, index):
        from captum.attr import InputXGradient as CaptumInputXGradient

        return CaptumInputXGradient(self.seeded).attribute(x, additional_forward_args=(seed,))


@register_method("integrated_gradients")
class IntegratedGradients(_CaptumMethod):
    """Integrated gradients from a baseline (Sundararajan et al. 2017), ``n_steps``
    Gauss-Legendre points, at most ``batch_size`` windows per pass."""

    completeness = "baseline"
    OPTIONS = {"n_steps": 50, "baseline": "zero"}

    @classmethod
    def check(cls, params):
        if isinstance(params["n_steps"], bool) or not isinstance(params["n_steps"], int) or params["n_steps"] < 1:
            raise InputError(f"n_steps={params['n_steps']!r} is not allowed; use a positive integer")
        super().check(params)

    def captum(self, x, seed, index):
        from captum.attr import IntegratedGradients as CaptumIG

        return CaptumIG(self.seeded).attribute(
            x, baselines=self.baseline(x), additional_forward_args=(seed,), n_steps=self.params["n_steps"],
            internal_batch_size=self.batch_size)


@register_method("deeplift")
class DeepLift(_CaptumMethod):
    """DeepLift with the rescale rule (Shrikumar et al. 2017) from a baseline. The
    squeeze-excitation product is not one of its rules, so on SampleCNN its sums miss
    ``w . (f(x) - f(baseline))`` by more."""

    completeness = "baseline"
    OPTIONS = {"baseline": "zero"}

    def captum(self, x, seed, index):
        from captum.attr import DeepLift as CaptumDeepLift

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Setting forward, backward hooks", category=UserWarning)
            return CaptumDeepLift(self.seeded).attribute(x, baselines=self.baseline(x), additional_forward_args=(seed,))


@register_method("gradient_shap")
class GradientShap(_CaptumMethod):
    """GradientShap (Lundberg & Lee 2017): expected gradients x (input - baseline) over
    ``n_samples`` random points between the baseline and the input, with Gaussian noise of
    standard deviation ``stdevs`` on the input. Each window draws from its own generator
    seeded by ``(seed, window position)``, so results do not depend on batching."""

    completeness = "baseline"
    OPTIONS = {"n_samples": 20, "stdevs": 0.0, "baseline": "zero", "seed": 0}

    @classmethod
    def check(cls, params):
        for name, least in (("n_samples", 1), ("seed", 0)):
            value = params[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise InputError(f"{name}={value!r} is not allowed; use an integer >= {least}")
        check_number("stdevs", params["stdevs"])
        super().check(params)

    def captum(self, x, seed, index):
        from captum.attr import GradientShap as CaptumGradientShap

        shap = CaptumGradientShap(self.seeded)
        devices = [x.device] if x.device.type == "cuda" else []
        out = []
        for i in range(x.shape[0]):
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.params["seed"] * 1_000_003 + int(index[i]))
                out.append(shap.attribute(x[i:i + 1], baselines=self.baseline(x[:1]),
                                          additional_forward_args=(seed[i:i + 1],),
                                          n_samples=self.params["n_samples"], stdevs=self.params["stdevs"]))
        return torch.cat(out)


@register_method("occlusion")
class Occlusion(_CaptumMethod):
    """Occlusion (Zeiler & Fergus 2014): the change of ``w . f(x)`` when ``window`` samples of
    one microphone are replaced by the baseline, sliding by ``stride`` samples over time and
    over the microphones; each sample gets the mean change over the patches covering it.
    At most ``batch_size`` perturbed windows per forward pass."""

    OPTIONS = {"window": 256, "stride": 256, "baseline": "zero"}

    @classmethod
    def check(cls, params):
        for name in ("window", "stride"):
            value = params[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name}={value!r} is not allowed; use a positive number of samples")
        super().check(params)

    def captum(self, x, seed, index):
        from captum.attr import Occlusion as CaptumOcclusion

        if self.params["window"] > x.shape[-1]:
            raise InputError(f"window={self.params['window']} is not allowed; use at most {x.shape[-1]} samples")
        return CaptumOcclusion(self.seeded).attribute(
            x, sliding_window_shapes=(1, self.params["window"]), strides=(1, self.params["stride"]),
            baselines=self.baseline(x), additional_forward_args=(seed,),
            perturbations_per_eval=max(1, self.batch_size // x.shape[0]))
