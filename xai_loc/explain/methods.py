"""Attribution methods by name: zennit's LRP and captum's gradient and perturbation methods.

Every method explains a batch of windows for a target bound to the model's output kind (an
:class:`~xai_loc.explain.targets.Objective` with per-window weights ``w``, see
:mod:`xai_loc.explain.targets`): LRP starts its backward pass with the target's seed; the
other methods explain the scalar ``q(f(x), w)``, ``w . f(x)`` for the linear targets
(captum's ``forward_func`` returns it). Each gives the relevance at every level asked for
(:class:`~xai_loc.explain.levels.Levels`) and reports what a complete attribution of its kind
would sum to (``explained``):

========================  =============================================================
method                    relevance should sum to
========================  =============================================================
lrp, attn_lrp             ``sum(seed)`` (less what biases absorb and stabilizers lose)
input_x_gradient          ``f . dq/df`` (exact for bias-free piecewise-linear models: then
                          ``x . dq/dx == f . dq/df``); this is ``q(f(x))`` for the linear
                          targets and the log-odds, not for a probability or an angle
                          (for the [cos, sin] azimuth it is 0: ``q`` does not change with ``|f|``)
integrated_gradients,     ``q(f(x)) - q(f(baseline))`` (completeness; for GradientShap
deeplift, gradient_shap   in expectation, with noise-free baselines)
saliency, occlusion       nothing in particular (reported as NaN)
========================  =============================================================

For the ``'contrast'`` target (``w = f(x) - r``) LRP's ``explained`` is ``sum_k (f_k - r_k)`` and
its relevance the prediction's heatmap rescaled per coordinate; the path methods' is
``(f(x) - r) . (f(x) - f(baseline))``, ``|f(x) - r|^2`` when the baseline's output is the
reference (see :mod:`~xai_loc.explain.targets`).

A level above the input is explained by LRP and AttnLRP in the same backward pass as the
input (its relevance read on the way); the captum methods explain it as their input (the
level's representation, put in place of the module's output), one call per level. A new
method is one :class:`Method` subclass registered with :func:`register_method`; it gets the
levels and the target from the :class:`~xai_loc.explain.attribute.Explainer` and so works for
every family and output kind.

A method may explain only some architectures (:meth:`Method.explains`: AttnLRP those of the families
without an LRP composite, BAST, and LRP the others (:func:`~xai_loc.explain.composites.composite_covers`) and
those a registered composite is written for (:func:`~xai_loc.explain.composites.written_for`); elsewhere AttnLRP's
rules give input x gradient under another name, and LRP's composites leave modules without a rule): the
:class:`~xai_loc.explain.attribute.Explainer`, which every explanation goes through, refuses it for the
others (:meth:`Method.check_model`), and :func:`methods_for` lists the methods of an architecture (the
command line's choices come from it).

Captum is imported when a captum method is first used.
"""
from __future__ import annotations

import functools
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from zennit.core import Composite

from xai_loc.checks import MAX_PATH_POINTS, check_choice, check_integer, check_number, is_integer
from xai_loc.errors import InputError
from xai_loc.explain._options import resolve
from xai_loc.explain.composites import check_finite, composite_covers, written_for
from xai_loc.explain.levels import INPUT, Levels
from xai_loc.explain.targets import Objective
from xai_loc.models.registry import MODELS

__all__ = ["METHODS", "BackwardMethod", "Method", "get_method", "methods_for", "output_times_gradient",
           "register_method"]

#: Per-window weights of the target from the (detached) outputs of a batch.
WeighFn = Callable[[torch.Tensor], torch.Tensor]

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
    if not isinstance(name, str) or name not in METHODS:
        raise InputError(f"unknown method {name!r}; allowed: {', '.join(METHODS)}")
    return METHODS[name]


def methods_for(arch: str) -> list[str]:
    """The registered methods that explain architecture ``arch`` (:meth:`Method.explains`), in registry order."""
    return [name for name, cls in METHODS.items() if cls.explains(arch)]


class Method(ABC):
    """An attribution method bound to a model for the duration of a ``with`` block.

    Parameters
    ----------
    model
        The localizer (eval mode, on the device of the inputs).
    params
        The method's options (:attr:`OPTIONS` keys), already resolved.
    objective
        The target bound to the model's output kind.
    levels
        Where relevance is read (default: the input only).
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
    #: Why the method does not explain an architecture that :meth:`explains` refuses ('': the refusal names the
    #: architectures it explains).
    REFUSED_BECAUSE: ClassVar[str] = ""
    #: Why the method cannot explain a float16 model, whatever its inputs ('': it can; a window that overflows is
    #: refused by itself, see :func:`~xai_loc.explain.attribute.check_finite_results`).
    FLOAT16_REFUSED: ClassVar[str] = ""

    def __init__(self, model: nn.Module, params: dict[str, Any], *, objective: Objective,
                 levels: Levels | None = None, batch_size: int = 32, composite: Composite | None = None,
                 mean_input: torch.Tensor | None = None) -> None:
        self.model = model
        self.params = params
        self.objective = objective
        self.levels = Levels(model) if levels is None else levels
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

    @classmethod
    def explains(cls, arch: str) -> bool:
        """Whether the method explains models of architecture ``arch`` (a name of
        :data:`~xai_loc.models.MODELS`, or the class name of an unregistered module); every one by default."""
        return True

    @classmethod
    def check_model(cls, arch: str) -> None:
        """Raise :class:`InputError` for a model of architecture ``arch`` that the method does not explain
        (:meth:`explains`), naming the architectures it does and the methods that explain ``arch``."""
        if not cls.explains(arch):
            own = [name for name in MODELS if cls.explains(name)]
            why = cls.REFUSED_BECAUSE or f"it explains {', '.join(own) or 'no registered architecture'}"
            raise InputError(f"method {cls.name!r} is not allowed for {arch} ({why}); allowed for {arch}: "
                             f"{', '.join(methods_for(arch))}")

    @classmethod
    def check_shape(cls, params: dict[str, Any], input_shape: tuple[int, ...]) -> None:
        """Raise :class:`InputError` for an option value that inputs of ``input_shape`` (one example's)
        cannot take; called where the model declares its input shape, before any data is read. Every
        shape fits by default."""
        return None

    def __enter__(self) -> Method:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @abstractmethod
    def attribute(self, x: torch.Tensor, weigh: WeighFn, index: torch.Tensor) -> dict[str, Any]:
        """Explain a batch.

        Parameters
        ----------
        x
            Windows ``[B, mics, samples]``.
        weigh
            Maps the model's output ``[B, K]`` to the target's weights ``[B, K]``.
        index
            Position of each window in the whole set explained (seeds random methods per
            window, so results do not depend on batching).

        Returns
        -------
        dict
            ``output`` [B, K], ``seed`` [B, K] (the target's output relevance), ``levels``
            (level name -> relevance with that level's shape), ``relevance`` (that of the
            first level) and ``explained`` [B] (NaN where the method has no completeness
            property); optionally ``absorbed`` (kind -> [B]), relevance that left the network.
        """


class BackwardMethod(Method):
    """Base of the methods that read every level in one modified backward pass (LRP, AttnLRP).

    They start from the target's seed, so they refuse a target whose value is not a sum of output
    relevances (a probability: :attr:`~xai_loc.explain.targets.Target.lrp_instead` names the target to use).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        target = self.objective.target
        if target.lrp_instead is not None:
            raise InputError(f"target {target.name!r} is not allowed for method {self.name!r}: LRP cannot start "
                             f"from a probability; use target {target.lrp_instead!r} (its log-odds) or a gradient "
                             "method")

    def attribute(self, x, weigh, index):
        with torch.enable_grad():  # the modified backward pass needs autograd, also inside torch.no_grad()
            output, tensors = self.levels.run(x)
            weights = weigh(output.detach())
            seed = self.objective.seed(output, weights)
            grads = self.backward(output, weights, seed, tensors)
        unused = [name for name, grad in zip(self.levels.read, grads[1:], strict=True) if grad is None]
        if unused:
            raise InputError(f"level {unused[0]!r} is not computed from level {self.levels.input!r}, the method's "
                             f"input (the first level); the model runs them in the order {self.levels.order(x)}: "
                             "give first a level that the others follow")
        levels = {name: self.relevance(t, g).detach()
                  for name, t, g in zip(self.levels.names, tensors, grads, strict=True)}
        return {"output": output.detach(), "seed": seed, "levels": levels, "relevance": levels[self.levels.input],
                "explained": self.explained(output.detach(), weights, seed), **self.extras()}

    @abstractmethod
    def backward(self, output: torch.Tensor, weights: torch.Tensor, seed: torch.Tensor,
                 tensors: list[torch.Tensor]) -> tuple[torch.Tensor | None, ...]:
        """Gradients of the output with respect to the level tensors (None for a tensor the output
        does not depend on)."""

    @abstractmethod
    def relevance(self, tensor: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Relevance at a level from its tensor and gradient."""

    @abstractmethod
    def explained(self, output: torch.Tensor, weights: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
        """What the relevance should sum to, per window."""

    def extras(self) -> dict[str, Any]:
        """Further per-window results (none)."""
        return {}


@register_method("lrp")
class LRP(BackwardMethod):
    """Layer-wise relevance propagation: zennit's rules from a composite (Bach et al. 2015;
    Montavon et al. 2019); the gradient of the seeded output is the relevance, at the input
    and at every level read. Relevance sums to ``sum(seed)`` less what biases absorb. It explains the
    architectures that the shipped composites cover (:func:`~xai_loc.explain.composites.composite_covers`: not
    BAST's) and those a registered composite is written for (:func:`~xai_loc.explain.composites.written_for`)."""

    uses_composite = True
    REFUSED_BECAUSE = ("its modules would get no LRP rule: its family declares no LRP composite and none is registered "
                       "for it (xai_loc.explain.register_composite)")
    # float16's 5 exponent bits: a SampleCNN's relevance kept a tenth of its sum
    FLOAT16_REFUSED = "LRP relevance underflows in float16"

    @classmethod
    def explains(cls, arch):
        return composite_covers(arch) or bool(written_for(arch))

    def __enter__(self) -> LRP:
        if self.composite is None:
            raise InputError("method 'lrp' needs a composite")
        try:
            self.composite.register(self.model)
        except BaseException:
            self.composite.remove()  # a registration that failed part way: unmerge and unhook what it did
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.composite.remove()

    def backward(self, output, weights, seed, tensors):
        return torch.autograd.grad((output,), tensors, grad_outputs=(seed,), allow_unused=True)

    def relevance(self, tensor, grad):
        return grad

    def explained(self, output, weights, seed):
        return seed.sum(-1)


def output_times_gradient(objective: Objective, output: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``f . dq/df`` per window: what ``x . dq/dx`` sums to on a bias-free piecewise-linear model (``q`` if linear)."""
    out = output.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(objective.scalar(out, weights).sum(), out)
    return (out.detach() * grad).sum(-1)


class _Objective(nn.Module):
    """``q(model(x), w)`` with ``level`` holding the module input: the scalar per window that captum explains."""

    def __init__(self, levels: Levels, objective: Objective, level: str, x: torch.Tensor) -> None:
        super().__init__()
        self.model = levels.model
        self.levels, self.objective, self.level, self.x = levels, objective, level, x

    def window(self, i: int) -> _Objective:
        """The same for window ``i`` of the batch alone."""
        return _Objective(self.levels, self.objective, self.level, self.x[i:i + 1])

    def forward(self, a: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        # in the model's dtype: captum's GradientShap draws its path points in float32 (a float16 model refused them)
        return self.objective.scalar(self.levels.at(self.level, self.x, a.to(self.x.dtype)), weights)


def _check_baseline(params: dict[str, Any]) -> None:
    value = params["baseline"]
    if isinstance(value, str):
        check_choice("baseline", value, ("zero", "mean"))
    else:
        check_finite("baseline", value)


class _CaptumMethod(Method):
    """Base of the captum methods: forward once for the weights, then call captum per level."""

    #: What the attributions should sum to: 'output', 'baseline' or None.
    completeness: ClassVar[str | None] = None

    def __enter__(self) -> _CaptumMethod:
        self._baseline_output: torch.Tensor | None = None
        return self

    def baseline(self, a: torch.Tensor, level: str = INPUT) -> torch.Tensor:
        """The baseline for ``a`` at ``level``: zero, (the representation of) the mean window or a constant."""
        value = self.params["baseline"]
        if value == "mean":
            if self.mean_input is None:
                raise InputError("baseline='mean' needs the mean window of the data")
            mean = self.levels.representation(self.mean_input.to(a)[None], level)
            return mean.expand_as(a).contiguous()
        return torch.full_like(a, 0.0 if value == "zero" else float(value))

    def baseline_output(self, x: torch.Tensor) -> torch.Tensor:
        """The output when the input level holds its baseline (what path methods start from), for windows ``x``.

        At the waveform it is one output for every window (computed once); at another level
        the rest of the model still sees ``x`` where it does not go through the level.
        """
        level = self.levels.input
        if level == INPUT and self._baseline_output is not None:
            return self._baseline_output
        x = x[:1] if level == INPUT else x
        with torch.no_grad():
            output = self.levels.at(level, x, self.baseline(self.levels.representation(x, level), level))
        if level == INPUT:
            self._baseline_output = output
        return output

    def attribute(self, x, weigh, index):
        with torch.no_grad():
            output = self.model(x)
        weights = weigh(output)
        levels = {}
        for level in self.levels.names:
            a = self.levels.representation(x, level)
            seeded = _Objective(self.levels, self.objective, level, x)
            levels[level] = self.captum(seeded, a.requires_grad_(), weights, index, level).detach()
        if self.completeness == "output":
            explained = output_times_gradient(self.objective, output, weights)
        elif self.completeness == "baseline":
            explained = self.objective.difference(output, self.baseline_output(x), weights)
        else:
            explained = torch.full(output.shape[:1], float("nan"), dtype=output.dtype, device=output.device)
        return {"output": output, "seed": self.objective.seed(output, weights), "levels": levels,
                "relevance": levels[self.levels.input], "explained": explained}

    @abstractmethod
    def captum(self, seeded: nn.Module, a: torch.Tensor, weights: torch.Tensor, index: torch.Tensor,
               level: str) -> torch.Tensor:
        """The captum attribution of ``seeded(a, weights)`` with respect to ``a``, the representation at ``level``."""


@register_method("saliency")
class Saliency(_CaptumMethod):
    """Gradient of the target ``q`` (Simonyan et al. 2014); its absolute value if ``abs``."""

    OPTIONS = {"abs": True}

    @classmethod
    def check(cls, params):
        if not isinstance(params["abs"], bool):
            raise InputError(f"abs={params['abs']!r} is not allowed; use True or False")

    def captum(self, seeded, a, weights, index, level):
        from captum.attr import Saliency as CaptumSaliency

        return CaptumSaliency(seeded).attribute(a, additional_forward_args=(weights,), abs=self.params["abs"])


@register_method("input_x_gradient")
class InputXGradient(_CaptumMethod):
    """Input times the gradient of the target ``q`` (Shrikumar et al. 2016); sums to ``f . dq/df``
    on a bias-free piecewise-linear model, which is ``q`` only for a linear target."""

    completeness = "output"

    def captum(self, seeded, a, weights, index, level):
        from captum.attr import InputXGradient as CaptumInputXGradient

        return CaptumInputXGradient(seeded).attribute(a, additional_forward_args=(weights,))


@register_method("integrated_gradients")
class IntegratedGradients(_CaptumMethod):
    """Integrated gradients from a baseline (Sundararajan et al. 2017), ``n_steps``
    Gauss-Legendre points, at most ``batch_size`` windows per pass."""

    completeness = "baseline"
    OPTIONS = {"n_steps": 50, "baseline": "zero"}

    @classmethod
    def check(cls, params):
        check_integer("n_steps", params["n_steps"], minimum=1, maximum=MAX_PATH_POINTS)
        super().check(params)

    def captum(self, seeded, a, weights, index, level):
        from captum.attr import IntegratedGradients as CaptumIG

        return CaptumIG(seeded).attribute(
            a, baselines=self.baseline(a, level), additional_forward_args=(weights,), n_steps=self.params["n_steps"],
            internal_batch_size=self.batch_size)


@register_method("deeplift")
class DeepLift(_CaptumMethod):
    """DeepLift with the rescale rule (Shrikumar et al. 2017) from a baseline. Its sums reach
    ``w . (f(x) - f(baseline))`` only on networks of layers captum has complete rules for: its
    max-pool rule is not complete (on LocCNN the sums miss by up to about 10 %), and the
    squeeze-excitation product is not one of its rules (on SampleCNN they miss by more)."""

    completeness = "baseline"
    OPTIONS = {"baseline": "zero"}
    FLOAT16_REFUSED = ("captum's DeepLift divides by input differences wherever they are below 1e-10, which is 0 in "
                       "float16 (NaN wherever a unit's input equals its baseline value: on real waveforms, in every "
                       "window)")

    def captum(self, seeded, a, weights, index, level):
        from captum.attr import DeepLift as CaptumDeepLift

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Setting forward, backward hooks", category=UserWarning)
            return CaptumDeepLift(seeded).attribute(a, baselines=self.baseline(a, level),
                                                    additional_forward_args=(weights,))


@register_method("gradient_shap")
class GradientShap(_CaptumMethod):
    """GradientShap (Lundberg & Lee 2017): expected gradients x (input - baseline) over
    ``n_samples`` random points between the baseline and the input, with Gaussian noise of
    standard deviation ``stdevs`` on the input. Each window draws from its own generators
    (torch's and numpy's, which captum uses for the path points) seeded by ``(seed, window
    label)``, so results repeat and do not depend on batching. The label is the dataset's
    ``window`` coord in :func:`~xai_loc.explain.explain` and in stores (a window's relevance is the
    same alone or in any selection); plain arrays, and :func:`~xai_loc.explain.explain_arrays`, are
    labelled by position ``0 .. n-1``, so there a window draws differently at another position:
    pass a DataArray or Dataset with ``window`` labels for draws that follow the window. At most
    ``batch_size`` path points per forward pass, with the draws of one pass (captum's ``GradientShap``)."""

    completeness = "baseline"
    OPTIONS = {"n_samples": 20, "stdevs": 0.0, "baseline": "zero", "seed": 0}
    #: A window's seed is ``seed * SEED_STEP + label`` modulo 2**64 (torch takes seeds below 2**64); ``seed`` is at
    #: most :attr:`MAX_SEED`, so that labels below 2**32 never wrap (larger labels do, and still explain).
    SEED_STEP = 1_000_003
    MAX_SEED = (2**64 - 2**32) // SEED_STEP

    @classmethod
    def check(cls, params):
        check_integer("n_samples", params["n_samples"], minimum=1, maximum=MAX_PATH_POINTS)
        check_integer("seed", params["seed"], minimum=0, maximum=cls.MAX_SEED)
        check_number("stdevs", params["stdevs"])
        super().check(params)

    def captum(self, seeded, a, weights, index, level):
        # captum's GradientShap runs all n_samples path points in one forward pass (its memory grows with
        # n_samples); it is a NoiseTunnel over InputBaselineXGradient, which we build as it does (captum 0.9) to
        # pass nt_samples_batch_size. numpy's uniform path coefficients are drawn in sequence, so they do not depend
        # on the chunks; the noise is drawn first for all points (_drawn_noise_tunnel), as one pass draws it.
        from captum.attr import NoiseTunnel
        from captum.attr._core.gradient_shap import InputBaselineXGradient

        devices = [a.device] if a.device.type == "cuda" else []
        stdevs = float(self.params["stdevs"])  # captum takes a float only (stdevs=1: an AssertionError)
        out = []
        numpy_state = np.random.get_state()  # captum draws the path points from numpy's global generator
        try:
            for i in range(a.shape[0]):
                seed = (self.params["seed"] * self.SEED_STEP + int(index[i])) % 2**64  # any label: torch's range
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(seed)
                    np.random.seed(seed % 2**32)
                    method = InputBaselineXGradient(seeded.window(i))
                    tunnel = (_drawn_noise_tunnel()(method, a[i:i + 1], stdevs, self.params["n_samples"]) if stdevs
                              else NoiseTunnel(method))  # no noise: captum's draws of zeros take no memory
                    out.append(tunnel.attribute(
                        a[i:i + 1], nt_type="smoothgrad", nt_samples=self.params["n_samples"],
                        nt_samples_batch_size=self.batch_size, stdevs=stdevs,
                        draw_baseline_from_distrib=True, baselines=self.baseline(a[:1], level),
                        additional_forward_args=(weights[i:i + 1],)))
        finally:
            np.random.set_state(numpy_state)
        return torch.cat(out)


@functools.cache
def _drawn_noise_tunnel():
    """:class:`captum.attr.NoiseTunnel` whose noise for all ``n_samples`` points of one window is drawn first, by the
    call that draws it in one pass, and then added chunk by chunk. captum draws it per chunk, and torch's normal
    fills blocks of 16 and redraws the last one of a tensor whose size is not a multiple of 16, so noise drawn per
    chunk would depend on the chunks (up to 27 % of a 3 x 509 window's relevance moved). Costs one window's memory
    per point, far less than the points' forward pass of one pass."""
    from captum.attr import NoiseTunnel

    class DrawnNoiseTunnel(NoiseTunnel):
        def __init__(self, method, window: torch.Tensor, stdev: float, n_samples: int) -> None:
            super().__init__(method)
            size = (n_samples, *window.shape[1:])  # captum's draw for all points of one window (a view of its std)
            self.noise = torch.normal(0, torch.tensor(stdev, device=window.device).expand(size))
            self.used = 0

        def _add_noise_to_input(self, input, stdev, nt_samples_partition):  # captum's static method, per chunk
            take = input.shape[0] * nt_samples_partition
            noise, self.used = self.noise[self.used:self.used + take], self.used + take
            return input.repeat_interleave(nt_samples_partition, dim=0) + noise

    return DrawnNoiseTunnel


@register_method("occlusion")
class Occlusion(_CaptumMethod):
    """Occlusion (Zeiler & Fergus 2014): the change of ``q`` when ``window`` samples of one
    microphone are replaced by the baseline, sliding by ``stride`` samples over time and over
    the microphones; each sample gets the mean change over the patches covering it. At
    another level the patch spans the same share of its last (time) axis and one row of
    every other axis. At most ``batch_size`` perturbed windows per forward pass. ``window``
    None (default): 256 samples, at most a tenth of the input's last axis (a cue map of 50
    frames gets 5); ``stride`` None: the window, and never more (samples between windows would
    never be occluded). captum averages the patches in float32, so the relevance of a float64
    model carries float32 rounding (about 1e-7 relative)."""

    OPTIONS = {"window": None, "stride": None, "baseline": "zero"}
    #: The default patch length in samples, and the largest share of the input's last axis it may span.
    WINDOW, WINDOW_SHARE = 256, 10

    @classmethod
    def check(cls, params):
        for name in ("window", "stride"):
            value = params[name]
            if value is not None and not (is_integer(value) and value >= 1):
                raise InputError(f"{name}={value!r} is not allowed; use a positive number of samples or None")
        super().check(params)

    @classmethod
    def patch(cls, params: dict[str, Any], n_time: int) -> tuple[int, int]:
        """The occlusion window and stride in samples for inputs of ``n_time`` samples (defaults resolved)."""
        window = params["window"] or min(cls.WINDOW, max(1, n_time // cls.WINDOW_SHARE))
        return window, params["stride"] or window

    @classmethod
    def check_shape(cls, params, input_shape):
        if params["window"] is not None and params["window"] > input_shape[-1]:
            raise InputError(f"window={params['window']} is not allowed; use at most {input_shape[-1]} samples")
        patch, step = cls.patch(params, input_shape[-1])
        if step > patch:  # captum refuses it: samples between the windows would never be occluded
            raise InputError(f"stride={step} is not allowed with an occlusion window of {patch} samples; use a "
                             f"stride of at most {patch}")

    def captum(self, seeded, a, weights, index, level):
        from captum.attr import Occlusion as CaptumOcclusion

        n_time = seeded.x.shape[-1]
        self.check_shape(self.params, seeded.x.shape[1:])  # a model without input_shape: checked here
        patch, step = self.patch(self.params, n_time)
        # another level: the same share of its last (time) axis, one row of every other axis at a time
        window, stride = (max(1, round(v * a.shape[-1] / n_time)) for v in (patch, step))
        ones = (1,) * (a.ndim - 2)
        return CaptumOcclusion(seeded).attribute(
            a, sliding_window_shapes=(*ones, window), strides=(*ones, stride),
            baselines=self.baseline(a, level), additional_forward_args=(weights,),
            perturbations_per_eval=max(1, self.batch_size // a.shape[0]))
