"""LRP composites of the binaural cue-map localizers: the IPD/ILD TF-CNN and the ITD/ILD/IC cue network.

Registered in :data:`~xai_loc.explain.composites.COMPOSITES` on import of
:mod:`xai_loc.explain`:

``'tfcnn'``
    :class:`~xai_loc.models.tfcnn.TFCNN` from its output to the waveform: dense layers
    Epsilon, convolutions Gamma (or Epsilon), BatchNorms merged into the convolution before
    them, ReLUs Pass; the interaural-cue stage gets :class:`CueEnergyShare` and the STFT
    (linear, bias-free) Epsilon (``front_epsilon``; 0: LRP-0). With ``conv_rule='epsilon'`` and zero biases the chain
    conserves relevance down to the samples.
``'cuenet'``
    :class:`~xai_loc.models.cuenet.CueNet` from its logits to the cue map: ``first_rule``
    on the first convolution of each cue branch (``'zbox'`` with the cue's physical range as
    the box, ``'epsilon'`` or ``'flat'``), other convolutions ``conv_rule``, dense layers
    Epsilon, BatchNorms merged; the attention weights held constant like a gate
    (:class:`~xai_loc.explain.rules.GateRule`), so relevance goes to the cue branches and
    none into the attention scorer. See :mod:`xai_loc.experiments.cue_probe`.

The rules ``first_rule`` and ``conv_rule`` select are those of
:data:`~xai_loc.explain.composites.NAMED_RULES`, the registry every composite draws from.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from zennit.composites import LayerMapComposite, NameLayerMapComposite, layer_map_base
from zennit.core import Composite, Hook
from zennit.rules import Pass
from zennit.types import Convolution

from xai_loc.checks import check_number
from xai_loc.explain.canonizers import MergeBatchNorm
from xai_loc.explain.composites import NAMED_RULES, _label, _stock_epsilon, check_rule, register_composite
from xai_loc.explain.rules import GateRule
from xai_loc.models.layers import Gate

__all__ = ["CUENET_CONV_RULES", "CUENET_FIRST_RULES", "CueEnergyShare", "TFCNN_CONV_RULES", "cue_bounds",
           "cuenet_composite", "tfcnn_composite"]

#: Rules of :data:`~xai_loc.explain.composites.NAMED_RULES` selectable for the TF-CNN's convolutions.
TFCNN_CONV_RULES = ("gamma", "epsilon")
#: Rules of :data:`~xai_loc.explain.composites.NAMED_RULES` selectable for the first convolution of each cue branch of
#: the cue network (``'zbox'``: the cue's physical range as the box), and for the others.
CUENET_FIRST_RULES = ("zbox", "epsilon", "flat")
CUENET_CONV_RULES = ("gamma", "epsilon")


class CueEnergyShare(Hook):
    """Relevance of the interaural-cue stage: each bin's (IPD + ILD) relevance to its four
    spectral coefficients ``(L re, L im, R re, R im)`` in proportion to ``x_k^2 / sum_j x_j^2``.

    A ``Pass``-type rule for a many-to-few map: IPD and ILD are scale-free ratios (and the IPD
    wraps), so gradient-based rules would sum to zero per bin; see
    :mod:`xai_loc.features.ipd_ild`. Relevance is conserved bin by bin, except in bins of
    exactly zero energy, where ``stabilizer`` (added to the bin energy) lets it vanish.
    """

    def __init__(self, stabilizer: float = 1e-30) -> None:
        super().__init__()
        self.stabilizer = stabilizer

    def copy(self) -> CueEnergyShare:
        """A fresh hook with the same stabilizer."""
        return type(self)(self.stabilizer)

    def forward(self, module: nn.Module, input: tuple, output: torch.Tensor) -> None:
        """Keep the spectra for the backward pass."""
        self.stored_tensors["input"] = input[0].detach()

    def backward(self, module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
        """Relevance of the spectra ``[B, 4, F, T]`` from that of the cues ``[B, 2, F, T]``."""
        spectra = self.stored_tensors["input"]
        energy = spectra * spectra
        share = energy / (energy.sum(dim=1, keepdim=True) + self.stabilizer)
        return (share * grad_output[0].sum(dim=1, keepdim=True),)


@register_composite("tfcnn", architectures=("tfcnn",))
def tfcnn_composite(model: nn.Module, *, conv_rule: str = "gamma", epsilon: float = 1e-6, gamma: float = 0.25,
                    stabilizer: float = 1e-6, front_epsilon: float | None = None) -> LayerMapComposite:
    """The TF-CNN from its output to the waveform (see the module docs).

    The STFT gets the Epsilon rule with its own ``front_epsilon`` (None: ``epsilon``), as the
    cochleagram CNN's front end: the default 1e-6 absorbs 3e-6 of the cue maps' relevance at a
    0.05 RMS input, 0.03 % at -40 dB and 2.8 % at -80 dB re that; ``front_epsilon=0`` (LRP-0)
    passes it on to the samples whole at any input level (the same total |relevance| at 0.05
    RMS). ``conv_rule='epsilon'`` with ``epsilon`` near 0 and zero biases is LRP-0 throughout:
    relevance is then conserved from the output to the IPD/ILD maps and on to the samples.
    """
    from xai_loc.features.ipd_ild import InterauralCues, SpectralConv

    check_rule("conv_rule", conv_rule, TFCNN_CONV_RULES, gamma=gamma)
    check_number("epsilon", epsilon)
    check_number("stabilizer", stabilizer, strict=True)
    if front_epsilon is not None:
        check_number("front_epsilon", front_epsilon)
    eps = _stock_epsilon(epsilon)
    conv = NAMED_RULES[conv_rule](epsilon=epsilon, gamma=gamma, stabilizer=stabilizer)
    layer_map = ([(SpectralConv, _stock_epsilon(epsilon if front_epsilon is None else front_epsilon)),
                  (InterauralCues, _label(CueEnergyShare(), "CueEnergyShare"))]
                 + layer_map_base(stabilizer) + [(Convolution, conv), (nn.Linear, eps)])
    return LayerMapComposite(layer_map=layer_map, canonizers=[MergeBatchNorm()])


def cue_bounds(cue_options: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Physical range of each cue of a front end's options: ITD ms, ILD dB, IC."""
    lag, clip = float(cue_options.get("max_lag_ms", 1.0)), float(cue_options.get("ild_limit", 7.0))
    return {"itd": (-lag, lag), "ild": (-clip, clip), "ic": (0.0, 1.0)}


@register_composite("cuenet", architectures=("cuenet",))
def cuenet_composite(model: nn.Module, *, first_rule: str = "zbox", conv_rule: str = "gamma", epsilon: float = 1e-6,
                     gamma: float = 0.25, stabilizer: float = 1e-6) -> Composite:
    """The cue network (or its ``classifier``) from logits to the cue map; see the module docs.

    Register it on the module it was built for: names of the branch convolutions are taken
    relative to ``model``.
    """
    from xai_loc.models.cuenet import CueBranch

    check_rule("first_rule", first_rule, CUENET_FIRST_RULES)
    check_rule("conv_rule", conv_rule, CUENET_CONV_RULES, gamma=gamma)
    check_number("epsilon", epsilon)
    check_number("stabilizer", stabilizer, strict=True)
    options = {"epsilon": epsilon, "gamma": gamma, "stabilizer": stabilizer}
    bounds = cue_bounds(getattr(model, "cue_options", None) or {})
    name_map = []
    for name, module in model.named_modules():
        if isinstance(module, CueBranch):
            low, high = bounds[name.rsplit(".", 1)[-1]]
            name_map.append(([f"{name}.conv1"], NAMED_RULES[first_rule](**options, low=low, high=high)))
    dense = _stock_epsilon(epsilon)
    conv = NAMED_RULES[conv_rule](**options)
    held = _label(Pass(), "Pass (attention held constant: no relevance reaches it)")
    layer_map = ([(Gate, _label(GateRule(to="signal"), "GateRule(to=signal)")), (nn.Softmax, held)]
                 + layer_map_base(stabilizer)
                 + [(Convolution, conv), (nn.Linear, dense)])
    return NameLayerMapComposite(name_map=name_map, layer_map=layer_map, canonizers=[MergeBatchNorm()])
