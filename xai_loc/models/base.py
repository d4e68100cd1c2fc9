"""The localizer contract: front end, body, head, output decoder and levels of relevance.

Every family's model class subclasses :class:`Localizer`, which states what the explanation
pipeline may rely on::

    waveform [batch, channels, samples] --front_end--> representation --body--> features --head--> output
    forward(x) == head(body(front_end(x)))          decode(output) -> {named quantity: tensor}

``front_end`` turns the waveform into the family's representation (``nn.Identity`` for the
end-to-end models; a cochleagram, IPD/ILD maps, cue maps or spectrograms for the binaural
ones). :attr:`Localizer.levels` lists where relevance can be read, ``"waveform"`` first, and
:meth:`Localizer.level_module` names the module whose output is each level's representation.
:meth:`Localizer.decode` maps a raw output to named quantities through the decoder of the
model's *output kind* (:data:`DECODERS`), one decoder per kind, not per family.

Defaults, for a plug-in localizer that defines only ``forward``: ``front_end`` is
``nn.Identity()``, ``body`` runs the model's ``forward`` and ``head`` is ``nn.Identity()``,
and the only level is ``"waveform"``. A class that keeps these defaults must not register
submodules under the names ``front_end``, ``body`` or ``head``, which belong to the contract.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from xai_loc.checks import is_integer
from xai_loc.errors import InputError

if TYPE_CHECKING:
    from xai_loc.acoustics.directions import DirectionGrid

__all__ = ["DECODERS", "OUTPUT_KINDS", "Chain", "Localizer", "check_positive_int", "register_decoder"]


def check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer (Python or NumPy, not a bool) of at least ``minimum``, else
    one line (:class:`InputError`) naming ``name`` and what is allowed; the one integer check of the models."""
    if not is_integer(value) or value < minimum:
        allowed = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise InputError(f"{name}={value!r} is not allowed; use {allowed}")
    return int(value)


# -- output kinds and their decoders ----------------------------------------------------------------

#: Decoder of each output kind: ``decoder(model, output) -> {name: tensor [batch]}`` (``"position"``:
#: ``[batch, 3]``). Filled by :func:`register_decoder`; its keys are the output kinds.
DECODERS: dict[str, Callable[[Localizer, torch.Tensor], dict[str, torch.Tensor]]] = {}


def register_decoder(kind: str) -> Callable[[Callable], Callable]:
    """Decorator registering the decoder of output kind ``kind`` in :data:`DECODERS`."""
    def decorator(decoder: Callable) -> Callable:
        if kind in DECODERS:
            raise ValueError(f"output kind {kind!r} already has a decoder")
        DECODERS[kind] = decoder
        return decoder

    return decorator


@register_decoder("position")
def _position(model: Localizer, output: torch.Tensor) -> dict[str, torch.Tensor]:
    """Source position (x, y, z) in metres, ``[batch, 3]``."""
    return {"position": output}


@register_decoder("azimuth")
def _azimuth(model: Localizer, output: torch.Tensor) -> dict[str, torch.Tensor]:
    """Azimuth in degrees (the model's convention) from one output column."""
    return {"azimuth": output[:, 0]}


@register_decoder("azimuth_elevation")
def _azimuth_elevation(model: Localizer, output: torch.Tensor) -> dict[str, torch.Tensor]:
    """Azimuth and elevation in degrees from two output columns."""
    return {"azimuth": output[:, 0], "elevation": output[:, 1]}


@register_decoder("direction_classes")
def _direction_classes(model: Localizer, output: torch.Tensor) -> dict[str, torch.Tensor]:
    """Most likely class of :attr:`Localizer.direction_grid` and its azimuth and elevation (degrees).

    Logits are one per grid class, or (``factorized_classes``) one block per azimuth followed by
    one block per elevation, each read by its own arg-max.
    """
    grid = model.direction_grid
    if model.factorized_classes:
        azimuth, elevation = output[:, :grid.n_azimuths].argmax(1), output[:, grid.n_azimuths:].argmax(1)
        label = elevation * grid.n_azimuths + azimuth
    else:
        label = output.argmax(1)
        azimuth, elevation = label % grid.n_azimuths, label // grid.n_azimuths
    dtype = output.dtype if output.is_floating_point() else torch.float64
    values = {axis: torch.tensor(getattr(grid, axis), dtype=dtype, device=output.device)
              for axis in ("azimuths", "elevations")}
    return {"class": label, "azimuth": values["azimuths"][azimuth], "elevation": values["elevations"][elevation]}


@register_decoder("cos_sin")
def _cos_sin(model: Localizer, output: torch.Tensor) -> dict[str, torch.Tensor]:
    """Azimuth in degrees, ``[0, 360)``, of ``[cos az, sin az]`` vectors (differentiable)."""
    return {"azimuth": torch.remainder(torch.rad2deg(torch.atan2(output[:, 1], output[:, 0])), 360.0)}


#: What a localizer's output can be: a source position (x, y, z) in metres, an azimuth in
#: degrees, (azimuth, elevation) angles, logits of direction classes over a grid, or
#: ``[cos az, sin az]`` vectors. The multichannel experiments (perturbation in metres, TDOA,
#: SRP) take position localizers.
OUTPUT_KINDS = tuple(DECODERS)


# -- the contract -------------------------------------------------------------------------------------


class Chain(nn.Module):
    """Run callables (modules, bound methods) in order, *without* registering them.

    The contract's ``body`` of a model whose layers are registered under their own names (the
    paper's state-dict keys) is a view over them: registering the layers a second time would
    duplicate state-dict keys and module names.
    """

    def __init__(self, *steps: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.steps = tuple(steps)  # a tuple is not registered: the owner keeps the modules

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step(x)
        return x


class _Forward(nn.Module):
    """The default ``body``: the owner's own ``forward`` (a plug-in that defines only ``forward``)."""

    def __init__(self, owner: Localizer) -> None:
        super().__init__()
        object.__setattr__(self, "owner", owner)  # not registered: no cycle in modules()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if type(self.owner).forward is Localizer.forward:
            raise TypeError(f"{type(self.owner).__name__} defines neither forward nor body; a localizer needs one")
        return self.owner.forward(x)


def _drop_front_end(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "front_end.")]:
        del state_dict[key]


def _restore_front_end(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                       missing_keys: list, unexpected_keys: list, error_msgs: list) -> None:
    for key, value in module.front_end.state_dict(prefix=prefix + "front_end.").items():
        state_dict.setdefault(key, value)


class Localizer(nn.Module):
    """A network mapping a multichannel waveform window to a source position or direction.

    Subclasses are registered with :func:`xai_loc.models.register_model`, which sets
    :attr:`arch_name` and :attr:`output_kind`; their constructor takes exactly the arguments
    in :attr:`config`, so that a checkpoint card can rebuild them.

    Attributes
    ----------
    front_end : nn.Module
        Waveform ``[batch, channels, samples]`` -> the family's representation.
    body, head : nn.Module
        ``forward(x) == head(body(front_end(x)))``. A layer registered under its own name is
        exposed here through :meth:`expose` (no second registration).
    levels : tuple of str
        Where relevance can be read: ``"waveform"`` (the input) first, then the names of
        attributes whose modules output a representation (``"front_end"``).
    direction_grid : DirectionGrid or None
        The classes of a ``"direction_classes"`` model.
    factorized_classes : bool
        Direction-class logits are an azimuth block followed by an elevation block instead of
        one logit per grid class.

    Parameters
    ----------
    n_mics
        Number of microphones or ears (input channels).
    n_samples
        Window length in samples.
    """

    arch_name: ClassVar[str] = ""
    #: What the output means, one of :data:`OUTPUT_KINDS` (set by ``register_model(..., output=...)``).
    output_kind: ClassVar[str] = "position"
    levels: ClassVar[tuple[str, ...]] = ("waveform",)
    direction_grid: DirectionGrid | None = None
    factorized_classes: bool = False

    def __init__(self, n_mics: int, n_samples: int) -> None:
        super().__init__()
        self.n_mics = check_positive_int("n_mics", n_mics)
        self.n_samples = check_positive_int("n_samples", n_samples)
        self.expose(front_end=nn.Identity(), body=_Forward(self), head=nn.Identity())

    def expose(self, **modules: nn.Module) -> None:
        """Set contract attributes (``front_end``, ``body``, ``head``) without registering the modules.

        Assigning a module in the ordinary way (``self.head = nn.Linear(...)``) registers it and
        replaces the exposed default.
        """
        for name, module in modules.items():
            object.__setattr__(self, name, module)

    def set_fixed_front_end(self, module: nn.Module) -> None:
        """Register ``module`` as the front end, its tensors fixed functions of the model's config.

        They are rebuilt by the constructor, so they stay out of state dicts (and checkpoints), and
        a state dict without them loads. A front end with trained parameters is assigned as
        ``self.front_end = module`` instead.
        """
        self.front_end = module
        self.register_state_dict_post_hook(_drop_front_end)
        self.register_load_state_dict_pre_hook(_restore_front_end)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs of waveform windows ``[batch, channels, samples]``: ``head(body(front_end(x)))``."""
        return self.head(self.body(self.front_end(x)))

    def level_module(self, level: str) -> nn.Module | None:
        """The module whose output is ``level``'s representation; None for ``"waveform"`` (the input).

        Raises
        ------
        InputError
            If the model does not declare ``level``.
        """
        if level not in self.levels:
            raise InputError(f"level {level!r} is not allowed for {self.arch_name or type(self).__name__}; "
                             f"allowed: {', '.join(self.levels)}")
        return None if level == "waveform" else getattr(self, level)

    def decode(self, output: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named quantities of raw outputs ``[batch, ...]`` through :data:`DECODERS` of :attr:`output_kind`.

        position: ``{"position"}``; azimuth: ``{"azimuth"}``; azimuth_elevation: ``{"azimuth",
        "elevation"}``; direction_classes: ``{"class", "azimuth", "elevation"}`` (from
        :attr:`direction_grid`); cos_sin: ``{"azimuth"}``. Angles are degrees in the model's
        azimuth convention.
        """
        return DECODERS[self.output_kind](self, output)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input window: ``(n_mics, n_samples)``."""
        return (self.n_mics, self.n_samples)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments, enough to rebuild the architecture."""
        return {"n_mics": self.n_mics, "n_samples": self.n_samples}
