"""One registry of the rules that composite options select (first_rule, conv_rule, maxpool), every composite drawing
from it: the choices of each composite come from ``NAMED_RULES``, refusals name the value and what is allowed, and
the relevance of every composite and choice is what it was before the registries were merged."""
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_line
from zennit.rules import Pass

from xai_loc.explain import COMPOSITES, Explainer
from xai_loc.explain.composites import (
    COCHCNN_CONV_RULES,
    FIRST_RULES,
    MAXPOOL_RULES,
    NAMED_RULES,
    RULE_OPTIONS,
    _label,
    _stock_epsilon,
    composite_defaults,
    make_composite,
    module_rules,
)
from xai_loc.explain.cue_composites import CUENET_CONV_RULES, CUENET_FIRST_RULES, TFCNN_CONV_RULES
from xai_loc.explain.cuenet import on_cue_maps
from xai_loc.models import build_model, load_model

#: Small configurations (those of tests/test_pipeline.py).
TINY = {"loccnn": {"n_mics": 4, "n_samples": 175}, "samplecnn": {"n_mics": 4, "n_samples": 729},
        "cochcnn": {"layers": ["c4 1x8", "p1x8", "c8 2x4", "p2x4"], "n_samples": 4800, "dense": 16},
        "tfcnn": {"channels": [4, 8], "dense": [16], "n_samples": 1600},
        "cuenet": {"channels": 8, "hidden": 16, "n_samples": 2205}}
#: The model each composite is tried on, and the target it explains.
ON = {"paper": "loccnn", "paper-samplecnn-reversed-gate": "samplecnn", "epsilon": "samplecnn",
      "epsilon_plus_flat": "loccnn", "epsilon_alpha2_beta1": "loccnn", "epsilon_gamma_box": "loccnn",
      "cochcnn": "cochcnn", "tfcnn": "tfcnn", "cuenet": "cuenet"}
TARGET = {"cochcnn": "class_logit", "tfcnn": "azimuth", "cuenet": "class_logit"}


def tiny(arch: str, dtype=torch.float64):
    torch.manual_seed(0)
    model = build_model(arch, **TINY[arch]).to(dtype).eval()
    return on_cue_maps(model) if arch == "cuenet" else model


def inputs(model, seed: int, dtype=torch.float64) -> torch.Tensor:
    scale = 0.3 if model.arch_name == "cuenet" else 0.05
    x = scale * torch.randn(1, *model.input_shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (x.abs() if model.arch_name == "cuenet" else x).to(dtype)


def relevance(model, composite: str, seed: int = 1, **options) -> np.ndarray:
    target = TARGET.get(model.arch_name, "prediction")
    with Explainer(model, target=target, composite=composite, **options) as explainer:
        return np.asarray(explainer.explain_batch(inputs(model, seed, next(model.parameters()).dtype))["relevance"])


def rule_labels(composite: str, model, **options) -> set[str]:
    built, _ = make_composite(composite, model, **options)
    built.register(model)
    try:
        return set(module_rules(model, built)[1].values())
    finally:
        built.remove()


#: (composite, option, the names it allows); 'paper' is the paper composites' own max-pool default.
CHOICES = ([("paper", "first_rule", FIRST_RULES), ("paper-samplecnn-reversed-gate", "first_rule", FIRST_RULES),
            ("paper", "maxpool", MAXPOOL_RULES)]
           + [(name, "maxpool", MAXPOOL_RULES[1:]) for name in ("epsilon", "epsilon_plus_flat", "epsilon_alpha2_beta1",
                                                                "epsilon_gamma_box", "cochcnn")]
           + [("cochcnn", "conv_rule", COCHCNN_CONV_RULES), ("tfcnn", "conv_rule", TFCNN_CONV_RULES),
              ("cuenet", "first_rule", CUENET_FIRST_RULES), ("cuenet", "conv_rule", CUENET_CONV_RULES)])


@pytest.mark.parametrize("composite, option, allowed", CHOICES, ids=[f"{c}-{o}" for c, o, _ in CHOICES])
def test_every_choice_of_every_composite_is_built_by_the_one_registry(monkeypatch, composite, option, allowed):
    """Replacing a named rule in NAMED_RULES changes it in every composite that allows the name."""
    model = tiny(ON[composite])
    for name in allowed:
        rule = {"paper": "norm"}.get(name, name)  # the paper's max-pool rule on LocCNN is Norm
        assert rule in NAMED_RULES
        handed = []

        def marked(rule=rule, handed=handed, **options):
            handed.append(options)
            return _label(Pass(), f"marked {rule}")

        monkeypatch.setitem(NAMED_RULES, rule, marked)
        assert f"marked {rule}" in rule_labels(composite, model, **{option: name}), (composite, option, name)
        assert all("stabilizer" in options for options in handed) and handed  # given the composite's options
        monkeypatch.undo()


def test_options_only_one_rule_reads_have_the_same_default_in_every_composite():
    checked = 0
    for name in COMPOSITES:
        defaults = composite_defaults(name)
        for own in RULE_OPTIONS.values():
            for key, default in own.items():
                if key in defaults:
                    assert defaults[key] == default, (name, key)
                    checked += 1
    assert checked >= 19  # gamma in 6 built-in composites, low and high in 3, maxpool_power in 7


def test_refusals_name_the_value_and_what_is_allowed():
    loccnn = tiny("loccnn")
    assert one_line(make_composite, "paper", loccnn, first_rule="flat", low=-1.0) == (
        "low=-1.0 is not allowed with first_rule='flat': no rule uses it; use first_rule='zbox' or leave it out")
    assert one_line(make_composite, "paper", loccnn, first_rule="zbox", high=2.0) == (
        "high=2.0 without low is not allowed; give both low and high for the box rule, or neither (per-window bounds)")
    assert one_line(make_composite, "epsilon_gamma_box", loccnn, low=-2.0) == (
        "low=-2.0 without high is not allowed; give both low and high for the box rule, or neither (per-window bounds)")
    assert one_line(make_composite, "paper", loccnn, first_rule="box") == (
        "first_rule='box' is not allowed; use one of wsquare, flat, zplus, epsilon, gamma, zbox")
    assert one_line(make_composite, "epsilon", loccnn, maxpool="paper") == (
        "maxpool='paper' is not allowed; use one of wta, norm, smooth")
    assert one_line(make_composite, "paper", loccnn, maxpool_power=2.0) == (
        "maxpool_power=2.0 is not allowed with maxpool='paper': no rule uses it; use maxpool='smooth' or leave it out")
    for arch, allowed in (("cochcnn", "gamma, epsilon, zplus"), ("tfcnn", "gamma, epsilon"),
                          ("cuenet", "gamma, epsilon")):
        model = tiny(arch)
        assert one_line(make_composite, arch, model, conv_rule="flat") == (
            f"conv_rule='flat' is not allowed; use one of {allowed}")
        assert one_line(make_composite, arch, model, conv_rule="epsilon", gamma=0.5) == (
            "gamma=0.5 is not allowed with conv_rule='epsilon': no rule uses it; use conv_rule='gamma' or leave it out")
    assert one_line(make_composite, "cuenet", tiny("cuenet"), first_rule="wsquare") == (
        "first_rule='wsquare' is not allowed; use one of zbox, epsilon, flat")


#: Relevance (sum, sum of magnitudes) of every composite and choice on the float64 tiny models, as computed before
#: the registries were merged.
PINNED = {
    ('paper', 'loccnn', ()): (-0.0010137991038542914, 0.0010354484865907861),
    ('paper', 'loccnn', (('first_rule', 'wsquare'),)): (-0.0010137991038542914, 0.0010354484865907861),
    ('paper', 'loccnn', (('first_rule', 'flat'),)): (-0.0010625811218555733, 0.0010827194565262521),
    ('paper', 'loccnn', (('first_rule', 'zplus'),)): (-0.00047717029268090134, 0.0004859207899402246),
    ('paper', 'loccnn', (('first_rule', 'epsilon'),)): (-0.0003717901100942821, 0.00042730548582612385),
    ('paper', 'loccnn', (('first_rule', 'gamma'),)): (-0.0003912759257217914, 0.0004204813855714527),
    ('paper', 'loccnn', (('first_rule', 'zbox'),)): (-0.0010625788881911142, 0.001085212918999056),
    ('paper', 'loccnn', (('first_rule', 'zbox'), ('high', 0.5), ('low', -0.5))):
        (-0.0010625803858411872, 0.0010839602339033387),
    ('paper', 'loccnn', (('maxpool', 'wta'),)): (-0.0010138616832300025, 0.0010355135687181267),
    ('paper', 'loccnn', (('maxpool', 'smooth'), ('maxpool_power', 2.0))):
        (-0.0007641874798077217, 0.0007641874798077217),
    ('paper', 'loccnn', (('first_rule', 'gamma'), ('gamma', 0.5))): (-0.0007330964094647222, 0.0007353709810792127),
    ('paper', 'loccnn', (('epsilon', 0.0), ('first_rule', 'epsilon'))): (-0.0003717806208526535, 0.0004273122606119656),
    ('paper', 'samplecnn', ()): (1.9980103204195303e-05, 2.007627629369346e-05),
    ('paper', 'samplecnn', (('first_rule', 'flat'), ('maxpool', 'norm'))):
        (2.267401506656723e-05, 2.277069382907773e-05),
    ('paper-samplecnn-reversed-gate', 'samplecnn', ()): (1.918085623691483e-06, 2.020904736868626e-06),
    ('paper-samplecnn-reversed-gate', 'samplecnn', (('first_rule', 'zbox'),)):
        (2.169810745182344e-06, 2.2831972183192394e-06),
    ('epsilon', 'samplecnn', ()): (5.111123182181593e-06, 0.00025484272123048383),
    ('epsilon', 'loccnn', (('epsilon', 0.0), ('maxpool', 'norm'))): (0.00028953247986876875, 0.002844301598411061),
    ('epsilon_plus_flat', 'loccnn', ()): (-0.005164935482728727, 0.005164935482728727),
    ('epsilon_plus_flat', 'samplecnn', (('maxpool', 'smooth'),)): (0.0016689344443353278, 0.0016689344443353278),
    ('epsilon_alpha2_beta1', 'loccnn', ()): (-0.00014437079623040214, 0.0007803393123930407),
    ('epsilon_gamma_box', 'loccnn', ()): (-0.0010626444453760932, 0.0010852808524149371),
    ('epsilon_gamma_box', 'loccnn', (('high', 0.5), ('low', -0.5), ('maxpool', 'norm'))):
        (-0.0010625803858411872, 0.0010839602339033387),
    ('cochcnn', 'cochcnn', ()): (0.00205972344092829, 0.46619954018202026),
    ('cochcnn', 'cochcnn', (('front_epsilon', 0.0),)): (0.002048970476974458, 1.2629017442055717),
    ('cochcnn', 'cochcnn', (('conv_rule', 'epsilon'),)): (-4.12083493426885e-05, 1.0766252054394037),
    ('cochcnn', 'cochcnn', (('conv_rule', 'zplus'),)): (0.008607264895107408, 0.12329950794718109),
    ('cochcnn', 'cochcnn', (('gamma', 0.5), ('maxpool', 'norm'))): (0.00359566411814927, 0.3133071039954241),
    ('cochcnn', 'cochcnn', (('maxpool', 'smooth'), ('maxpool_power', 2.0))):
        (0.0006546361854424394, 0.09958234536361815),
    ('tfcnn', 'tfcnn', ()): (-0.06383603697977064, 2.3722699325251253),
    ('tfcnn', 'tfcnn', (('front_epsilon', 0.0),)): (-0.06383600458345273, 2.372276451984715),
    ('tfcnn', 'tfcnn', (('conv_rule', 'epsilon'),)): (-0.06383583975939572, 3.5322600159396718),
    ('tfcnn', 'tfcnn', (('conv_rule', 'epsilon'), ('epsilon', 0.0))): (-0.06383647690548419, 3.532327611494444),
    ('tfcnn', 'tfcnn', (('gamma', 0.5),)): (-0.06383607598947295, 2.1054593430995285),
    ('cuenet', 'cuenet', (('conv_rule', 'gamma'), ('first_rule', 'zbox'))):
        (0.003657208675062651, 0.006930513970168114),
    ('cuenet', 'cuenet', (('conv_rule', 'epsilon'), ('first_rule', 'zbox'))):
        (0.0021895555750432298, 0.007249423574111626),
    ('cuenet', 'cuenet', (('conv_rule', 'gamma'), ('first_rule', 'epsilon'))):
        (0.0014605395381843073, 0.04121828526408505),
    ('cuenet', 'cuenet', (('conv_rule', 'epsilon'), ('first_rule', 'epsilon'))):
        (-0.00010428740698681556, 0.049922642933853324),
    ('cuenet', 'cuenet', (('conv_rule', 'gamma'), ('first_rule', 'flat'))):
        (0.0036572089213477536, 0.005994933667160355),
    ('cuenet', 'cuenet', (('conv_rule', 'epsilon'), ('first_rule', 'flat'))):
        (0.0021895553967253003, 0.006084632670114554),
    ('cuenet', 'cuenet', (('gamma', 0.5),)): (0.004286496167991514, 0.006777899157574917),
}


@pytest.mark.parametrize("composite, arch, options", list(PINNED), ids=[f"{c}-{a}-{dict(o)}" for c, a, o in PINNED])
def test_relevance_of_every_composite_and_choice_is_unchanged(composite, arch, options):
    rel = relevance(tiny(arch), composite, **dict(options))
    np.testing.assert_allclose([rel.sum(), np.abs(rel).sum()], PINNED[composite, arch, options], rtol=1e-9)


@pytest.mark.parametrize("arch, options", [
    ("tfcnn", {"conv_rule": "epsilon"}), ("cuenet", {"first_rule": "epsilon", "conv_rule": "epsilon"}),
    ("cuenet", {"first_rule": "epsilon", "conv_rule": "epsilon", "epsilon": 0.0})])
@pytest.mark.parametrize("model_kind", ["tiny-float64", "tiny-float32", "shipped"])
def test_cue_composites_epsilon_choice_is_zennits_epsilon_bit_for_bit(monkeypatch, arch, options, model_kind):
    """The cue composites' 'epsilon' choice is now the registry's (one autograd node per module); it gives the
    relevance of zennit's own Epsilon hook, which they used before, exactly."""
    if model_kind == "shipped":
        model = load_model(Path(__file__).parents[1] / "pretrained" / f"{arch}_default.safetensors")
        model = on_cue_maps(model) if arch == "cuenet" else model
    else:
        model = tiny(arch, torch.float64 if model_kind == "tiny-float64" else torch.float32)
    ours = relevance(model, arch, **options)
    monkeypatch.setitem(NAMED_RULES, "epsilon", lambda *, epsilon, **_: _stock_epsilon(epsilon))
    theirs = relevance(model, arch, **options)
    np.testing.assert_array_equal(ours, theirs)
