"""Relevance at every level of a localizer, by one mechanism: forward hooks on the level modules.

A localizer declares where relevance can be read (:attr:`~xai_loc.models.base.Localizer.levels`:
``"waveform"``, the input, then e.g. ``"front_end"``) and which module outputs each level's
representation (:meth:`~xai_loc.models.base.Localizer.level_module`). A level may also be the
qualified name of any submodule (``"classifier.branches.itd"``), as captum's layer methods allow.

:class:`Levels` puts forward hooks on those modules for one forward pass and hands their output
tensors back, so that one backward pass gives the relevance at each of them:

- *read*: the hook keeps the module's output; ``torch.autograd.grad`` of the output seed with
  respect to it is LRP's relevance there (zennit's rules pass relevance as the gradient), and
  ``output x gradient`` that of AttnLRP;
- *replace*: the lowest level asked for becomes the method's input: the hook returns a tensor
  the method controls in place of the module's output (the contract's front end is skipped
  instead: ``forward == head(body(front_end(x)))``). So a method that perturbs or
  interpolates its input (integrated gradients, occlusion ...) explains any level with the
  same call, as captum's layer attributions do.

A level's module must run exactly once per forward pass (BAST's patch embedding runs once per
ear, a shared encoder twice: neither has one representation); the hooks count the calls and
raise :class:`~xai_loc.errors.InputError` otherwise. What is read is the module's own output,
and the pass goes on with a copy, so an in-place operation after it (``ReLU(inplace=True)``)
changes neither the value read nor its gradient.

With only ``"waveform"`` asked for there are no hooks at all: the fast path of the multichannel
models is the plain forward and backward.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from xai_loc.errors import InputError

__all__ = ["INPUT", "Levels"]

#: The input level: what the model is called with.
INPUT = "waveform"


def _module(model: nn.Module, level: str) -> nn.Module:
    declared = tuple(getattr(model, "levels", (INPUT,)))
    if level in declared:
        return model.level_module(level)
    try:
        return model.get_submodule(level)
    except AttributeError:
        name = getattr(model, "arch_name", "") or type(model).__name__
        raise InputError(f"level {level!r} is not allowed for {name}; allowed: {', '.join(declared)} "
                         "or the qualified name of a submodule") from None


class Levels:
    """The levels one explanation reads on one model.

    Parameters
    ----------
    model
        The localizer.
    names
        Level names, declared (:attr:`Localizer.levels`) or submodule names; default
        ``("waveform",)``. They are ordered as the model declares them, submodules last; the
        first is the method's input.
    """

    def __init__(self, model: nn.Module, names: str | Sequence[str] | None = None) -> None:
        names = (INPUT,) if names is None else (names,) if isinstance(names, str) else names
        if not isinstance(names, Sequence) or not all(isinstance(name, str) for name in names):
            raise InputError(f"levels={names!r} is not allowed; use a level name or a sequence of them, e.g. "
                             "('waveform', 'front_end')")
        names = tuple(names)
        if not names:
            raise InputError("levels=() is not allowed; give at least one level, e.g. 'waveform'")
        declared = tuple(getattr(model, "levels", (INPUT,)))
        self.modules = {name: _module(model, name) for name in names if name != INPUT}
        rank = {name: k for k, name in enumerate(declared)}
        self.names = tuple(sorted(dict.fromkeys(names), key=lambda n: rank.get(n, len(rank))))
        self.model = model

    @property
    def input(self) -> str:
        """The method's input level (the first)."""
        return self.names[0]

    @property
    def read(self) -> tuple[str, ...]:
        """Levels read on the way (the others)."""
        return self.names[1:]

    def _front_end(self, level: str) -> bool:
        """Whether ``level`` is the contract's front end: then ``output == head(body(representation))``."""
        return self.modules[level] is getattr(self.model, "front_end", None) and hasattr(self.model, "body")

    @contextlib.contextmanager
    def _hooked(self, level: str, swap: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
        """A forward hook on ``level``'s module that puts ``swap(output)`` in place of its output.

        Raises
        ------
        InputError
            After the block, unless the module ran exactly once: a module that runs several
            times per forward pass (once per ear, a shared encoder) has no one representation.
        """
        calls = 0

        def hook(module, args, output):
            nonlocal calls
            calls += 1
            return swap(output)

        handle = self.modules[level].register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()
        if calls != 1:
            runs = "does not run" if calls == 0 else f"runs {calls} times"
            raise InputError(f"level {level!r} {runs} per forward pass; choose a module that runs once")

    def representation(self, x: torch.Tensor, level: str | None = None) -> torch.Tensor:
        """The representation of windows ``x`` at ``level`` (default: the input level), detached."""
        level = self.input if level is None else level
        if level == INPUT:
            return x.detach()
        with torch.no_grad():
            if self._front_end(level):
                return self.model.front_end(x).detach()
            captured: dict[str, torch.Tensor] = {}

            def keep(output: torch.Tensor) -> torch.Tensor:
                captured[level] = output.clone()  # kept apart from in-place operations after the module
                return output

            with self._hooked(level, keep):
                self.model(x)
        return captured[level]

    def at(self, level: str, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The model's output for windows ``x`` when ``level`` holds ``a``.

        ``a`` may stack ``k`` copies of ``x``'s batch (captum stacks path points and
        perturbations that way); the front end (of the contract) is skipped, another module's
        output is replaced by a hook.
        """
        if level == INPUT:
            return self.model(a)
        if self._front_end(level):
            return self.model.head(self.model.body(a))
        with self._hooked(level, lambda output: a.clone()):  # a clone: in-place ops after it leave a alone
            return self.model(x.repeat(a.shape[0] // x.shape[0], *([1] * (x.ndim - 1))))

    def order(self, x: torch.Tensor) -> tuple[str, ...]:
        """The levels in the order the model runs their modules on windows ``x`` (the waveform first)."""
        ran: list[str] = []
        handles = [module.register_forward_hook(lambda *_, name=name: ran.append(name))
                   for name, module in self.modules.items()]
        try:
            with torch.no_grad():
                self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        return tuple(dict.fromkeys([INPUT, *ran] if INPUT in self.names else ran))

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One differentiable forward pass: the output and the tensors of every level, in :attr:`names` order.

        The input level's tensor is a leaf; the others are the level modules' outputs, kept by
        forward hooks for the pass.
        """
        inp = self.representation(x).requires_grad_(True)
        captured: dict[str, torch.Tensor] = {}

        def keep(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
            def swap(output: torch.Tensor) -> torch.Tensor:
                captured[name] = output
                return output.clone()  # the pass goes on with a copy: an in-place op after it leaves the level intact
            return swap

        with contextlib.ExitStack() as stack:
            for name in self.read:
                stack.enter_context(self._hooked(name, keep(name)))
            output = self.at(self.input, x, inp)
        return output, [inp, *(captured[name] for name in self.read)]
