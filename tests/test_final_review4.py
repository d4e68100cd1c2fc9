"""Final review of the session of 2026-12-07 (afternoon): the LRP operation check passes what LRP gets right
(gradient-exact functional operations), refuses before any data is read, and AttnLRP follows BAST's subclasses."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import one_line
from torch import nn

from xai_loc.explain import Explainer, audit, explain


class Modules(nn.Module):
    """Conv -> pad -> ReLU -> mean pool -> linear, every operation a module."""

    input_shape = (4, 64)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 3, 5, bias=False)
        self.pad = nn.ConstantPad1d(2, 0.0)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(3, 3, bias=False)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.relu(self.pad(self.conv(x))))))


class FunctionalRelu(Modules):
    def forward(self, x):
        return self.fc(self.flat(self.pool(F.relu(self.pad(self.conv(x))))))


class FunctionalPad(Modules):
    def forward(self, x):
        return self.fc(self.flat(self.pool(self.relu(F.pad(self.conv(x), (2, 2))))))


class AsksLength(Modules):
    def forward(self, x):
        assert len(x) >= 1
        return super().forward(x)


class FunctionalAdd(Modules):
    def forward(self, x):
        h = self.pad(self.conv(x))
        return self.fc(self.flat(self.pool(self.relu(h + h))))


@pytest.mark.parametrize("variant", [FunctionalRelu, FunctionalPad, AsksLength])
def test_gradient_exact_operations_outside_modules_are_explained_as_their_modules(variant):
    """Review: F.relu, F.pad and len() in forward() were refused, though LRP's relevance of them was bit-identical
    to the all-modules model's (ReLU gets Pass, padding the gradient, len describes the data)."""
    torch.manual_seed(0)
    reference = Modules().double()
    model = variant().double()
    model.load_state_dict(reference.state_dict())
    x = torch.randn(2, 4, 64, dtype=torch.float64)
    for composite in ("epsilon", "paper"):
        ours = explain(model, x, target="prediction", composite=composite)
        theirs = explain(reference, x, target="prediction", composite=composite)
        np.testing.assert_array_equal(ours.values, theirs.values)
    assert audit(model, "epsilon").flagged_functional == []


def test_an_operation_hooks_cannot_see_is_refused_when_the_explainer_is_made():
    """Review: the check ran when the explainer was entered, so the command line's pre-flight (which makes explainers
    without entering them) let a test split be simulated first; a model with an input_shape is refused when made."""
    torch.manual_seed(0)
    says = one_line(Explainer, FunctionalAdd().double(), target="prediction", composite="epsilon")
    assert says.startswith("composite 'epsilon' is not allowed for FunctionalAdd: add is called in the "
                           "model.forward() outside any module")


def test_attn_lrp_explains_a_plug_in_subclass_of_bast(monkeypatch):
    """Review: a BAST variant registered under another name joins the generic family and was refused AttnLRP (its
    relevance was BAST's AttnLRP before)."""
    from xai_loc.explain.attn_lrp import AttnLRPMethod
    from xai_loc.models.bast import BAST
    from xai_loc.models.registry import MODELS

    class MyBAST(BAST):
        pass

    from xai_loc.models import families

    monkeypatch.setattr(families, "FAMILIES", dict(families.FAMILIES))  # the plug-in joins a family of this test only
    monkeypatch.setitem(MODELS, "mybast", MyBAST)
    assert AttnLRPMethod.explains("mybast") and AttnLRPMethod.explains("bast")
    assert not AttnLRPMethod.explains("loccnn") and not AttnLRPMethod.explains("cochcnn")


def test_models_list_leaves_out_a_plug_in_removed_from_the_registry(monkeypatch):
    """CI: a plug-in registered for one test joined its generic family (through methods_for's look at every
    architecture) and `models list` failed with KeyError once the test had removed it from MODELS."""
    from xai_loc.models import LocCNN, families
    from xai_loc.models.families import family_of, family_rows
    from xai_loc.models.registry import MODELS

    monkeypatch.setattr(families, "FAMILIES", dict(families.FAMILIES))  # the plug-in joins a family of this test only
    with monkeypatch.context() as patch:
        patch.setitem(MODELS, "gone_plugin", type("Gone", (LocCNN,), {"arch_name": "gone_plugin"}))
        assert family_of("gone_plugin").name == "generic-position"
        assert any(row.startswith("  gone_plugin ") for row in family_rows())
    rows = family_rows()
    assert not any("gone_plugin" in row for row in rows)
    assert any(row.startswith("  loccnn ") for row in rows)
