"""Attribution targets of every output kind: known answers on a linear localizer, kinds checked."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from xai_loc.errors import InputError
from xai_loc.explain import TARGETS, Explainer
from xai_loc.explain.targets import bind, targets_for
from xai_loc.models.base import OUTPUT_KINDS, Localizer

N_IN = 6


def linear_localizer(kind: str, weight: np.ndarray) -> Localizer:
    """A bias-free linear localizer ``f(x) = W x`` on one-channel windows of ``N_IN`` samples, in float64."""

    class Linear(Localizer):
        output_kind = kind

        def __init__(self) -> None:
            super().__init__(1, N_IN)
            self.body = nn.Flatten()
            self.head = nn.Linear(N_IN, len(weight), bias=False)

    model = Linear().double()
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(weight))
    return model


def explain_once(model, x, target, method="input_x_gradient", truth=None, **options):
    settings = {"composite": "epsilon", "epsilon": 1e-12} if method == "lrp" else {}
    with Explainer(model, target=target, method=method, **settings, **options) as explainer:
        return explainer.explain_batch(x, truth)


@pytest.fixture
def attn_lrp_anywhere(monkeypatch):
    """AttnLRP on the linear toys (it explains BAST's family only): its seed arithmetic against the analytic answer."""
    from xai_loc.explain.attn_lrp import AttnLRPMethod

    monkeypatch.setattr(AttnLRPMethod, "explains", classmethod(lambda cls, arch: True))


RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 1, N_IN))
W_CLASSES = RNG.standard_normal((4, N_IN))


def _logits():
    return X[:, 0] @ W_CLASSES.T


def test_every_target_declares_kinds_and_other_kinds_are_refused():
    assert set(targets_for("position")) == {"truth", "prediction", "x", "y", "z", "error", "contrast"}
    for name, target in TARGETS.items():
        assert target.description and target.kinds and set(target.kinds) <= set(OUTPUT_KINDS)
        for kind in set(OUTPUT_KINDS) - set(target.kinds):
            with pytest.raises(InputError, match=f"target {name!r} does not fit a model whose output is {kind!r}; "
                                                 f"allowed: {targets_for(kind)[0]}"):
                bind(name, kind)
    with pytest.raises(InputError, match="target 'class_logit' does not fit .* 'position'; allowed: truth, "):
        Explainer(linear_localizer("position", np.eye(3, N_IN)), target="class_logit")
    with pytest.raises(InputError, match="option 'clss' is not allowed for target 'class_logit'; allowed: cls"):
        bind("class_logit", "direction_classes", {"clss": 1})


@pytest.mark.parametrize("method", ["input_x_gradient", "lrp"])
def test_class_logit_of_a_linear_model_is_its_exact_contributions(method):
    model = linear_localizer("direction_classes", W_CLASSES)
    logits = _logits()
    chosen = logits.argmax(1)
    out = explain_once(model, X, "class_logit", method)
    contributions = W_CLASSES[chosen] * X[:, 0]  # z_c = sum_i W_ci x_i, term by term
    np.testing.assert_allclose(out["relevance"][:, 0], contributions, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out["relevance_sum"], logits[np.arange(2), chosen], rtol=1e-9)
    np.testing.assert_allclose(out["explained"], logits[np.arange(2), chosen], rtol=1e-9)
    given = explain_once(model, X, "class_logit", method, cls=2)
    np.testing.assert_allclose(given["relevance"][:, 0], W_CLASSES[2] * X[:, 0], rtol=1e-9, atol=1e-12)
    true = explain_once(model, X, "true_class_logit", method, truth=[3, 1])
    np.testing.assert_allclose(true["relevance"][:, 0], W_CLASSES[[3, 1]] * X[:, 0], rtol=1e-9, atol=1e-12)
    with pytest.raises(InputError, match="true class labels"):
        explain_once(model, X, "true_class_logit", method)


@pytest.mark.parametrize("method", ["input_x_gradient", "lrp"])
def test_contrastive_class_is_the_difference_of_two_logits(method):
    model = linear_localizer("direction_classes", W_CLASSES)
    logits = _logits()
    order = np.argsort(-logits, axis=1)
    out = explain_once(model, X, "class_contrast", method)
    expected = (W_CLASSES[order[:, 0]] - W_CLASSES[order[:, 1]]) * X[:, 0]  # against the runner-up
    np.testing.assert_allclose(out["relevance"][:, 0], expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out["relevance_sum"], logits[[0, 1], order[:, 0]] - logits[[0, 1], order[:, 1]],
                               rtol=1e-9)
    versus = explain_once(model, X, "class_contrast", method, versus=0)
    np.testing.assert_allclose(versus["relevance"][:, 0], (W_CLASSES[order[:, 0]] - W_CLASSES[0]) * X[:, 0],
                               rtol=1e-9, atol=1e-12)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_class_probability_is_explained_by_gradients_and_refused_by_lrp(attn_lrp_anywhere):
    model = linear_localizer("direction_classes", W_CLASSES)
    logits = _logits()
    p = _softmax(logits)
    c = logits.argmax(1)
    pc = p[np.arange(2), c]
    # d p_c / d x = p_c (W_c - sum_k p_k W_k); on a bias-free linear model x . grad = f . dq/df
    grad = pc[:, None] * (W_CLASSES[c] - p @ W_CLASSES)
    out = explain_once(model, X, "class_probability")
    np.testing.assert_allclose(out["relevance"][:, 0], X[:, 0] * grad, rtol=1e-9, atol=1e-14)
    euler = pc * (logits[np.arange(2), c] - (p * logits).sum(1))  # f . dp_c/df, not p_c
    np.testing.assert_allclose(out["explained"], euler, rtol=1e-9)
    np.testing.assert_allclose(out["relevance_sum"], euler, rtol=1e-9)
    true = explain_once(model, X, "true_class_probability", truth=[1, 1])
    np.testing.assert_allclose(true["explained"], p[:, 1] * (logits[:, 1] - (p * logits).sum(1)), rtol=1e-9)
    for method in ("lrp", "attn_lrp"):  # a probability is no sum of logit relevances (review 16, item 2)
        with pytest.raises(InputError, match=f"target 'class_probability' is not allowed for method '{method}'.*"
                                             "use target 'class_log_odds'"):
            explain_once(model, X, "class_probability", method)
    with pytest.raises(InputError, match="use target 'true_class_log_odds'"):
        explain_once(model, X, "true_class_probability", "lrp", truth=[1, 1])


@pytest.mark.parametrize("method", ["input_x_gradient", "lrp", "attn_lrp"])
def test_class_log_odds_seeds_the_soft_minimum_of_the_other_logits(method, attn_lrp_anywhere):
    model = linear_localizer("direction_classes", W_CLASSES)
    logits = _logits()
    c = logits.argmax(1)
    others = np.where(np.eye(4)[c] > 0, -np.inf, logits)
    s = _softmax(others)  # 0 on c
    w = np.eye(4)[c] - s
    out = explain_once(model, X, "class_log_odds", method, **({"epsilon": 0.0} if method == "attn_lrp" else {}))
    # every method: relevance x (W_c - sum_k s_k W_k), summing to z_c - sum_k s_k z_k
    np.testing.assert_allclose(out["relevance"][:, 0], X[:, 0] * (w @ W_CLASSES), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out["relevance_sum"], (w * logits).sum(1), rtol=1e-9)
    np.testing.assert_allclose(out["explained"], (w * logits).sum(1), rtol=1e-9)
    np.testing.assert_allclose(out["attr_output"], w * logits, rtol=1e-9, atol=1e-14)
    # the gap to the log-odds is the entropy of s
    p = _softmax(logits)[np.arange(2), c]
    entropy = -(s * np.log(np.where(s > 0, s, 1.0))).sum(1)
    np.testing.assert_allclose((w * logits).sum(1) - entropy, np.log(p / (1 - p)), rtol=1e-9)


def test_class_log_odds_is_complete_for_integrated_gradients():
    model = linear_localizer("direction_classes", W_CLASSES)
    logits = _logits()
    c = logits.argmax(1)
    p = _softmax(logits)[np.arange(2), c]
    out = explain_once(model, X, "class_log_odds", "integrated_gradients", n_steps=64)
    # q(x) - q(0): at x = 0 all logits are 0, the log-odds log(1 / 3)
    expected = np.log(p / (1 - p)) - np.log(1.0 / 3.0)
    np.testing.assert_allclose(out["explained"], expected, rtol=1e-9)
    np.testing.assert_allclose(out["relevance_sum"], expected, rtol=1e-6)
    true = explain_once(model, X, "true_class_log_odds", "lrp", truth=[2, 0])
    s = _softmax(np.where(np.eye(4)[[2, 0]] > 0, -np.inf, logits))
    np.testing.assert_allclose(true["relevance_sum"], logits[[0, 1], [2, 0]] - (s * logits).sum(1), rtol=1e-9)


def test_class_contrast_against_the_predicted_class_is_refused():
    model = linear_localizer("direction_classes", W_CLASSES)
    top = int(_logits()[0].argmax())
    with pytest.raises(InputError, match=f"versus={top} is not allowed: it is the predicted class of window"):
        explain_once(model, X, "class_contrast", versus=top)


def test_angle_targets_of_angle_outputs():
    w = RNG.standard_normal((2, N_IN))
    model = linear_localizer("azimuth_elevation", w)
    f = X[:, 0] @ w.T
    az = explain_once(model, X, "azimuth")
    np.testing.assert_allclose(az["relevance"][:, 0], w[0] * X[:, 0], rtol=1e-9, atol=1e-12)
    el = explain_once(model, X, "elevation", "lrp")
    np.testing.assert_allclose(el["relevance"][:, 0], w[1] * X[:, 0], rtol=1e-9, atol=1e-12)
    one = linear_localizer("azimuth", w[:1])
    truth = f[:, 0] + 370.0  # f - t wraps to -10 degrees
    err = explain_once(one, X, "angular_error", truth=truth)
    np.testing.assert_allclose(err["explained"], -f[:, 0], rtol=1e-9)  # f . dq/df, what x . dq/dx sums to
    np.testing.assert_allclose(err["relevance_sum"], -f[:, 0], rtol=1e-9)
    np.testing.assert_allclose(err["relevance"][:, 0], -w[0] * X[:, 0], rtol=1e-9, atol=1e-12)  # d|f - t + 360|/df = -1
    lrp = explain_once(one, X, "angular_error", "lrp", truth=truth)
    np.testing.assert_allclose(lrp["attr_output"][:, 0], 10.0, rtol=1e-9)


def test_great_circle_and_vector_angle_errors(attn_lrp_anywhere):
    # outputs set by the weights: f = (90, 0) degrees for x = e_0
    x = np.zeros((1, 1, N_IN))
    x[0, 0, 0] = 1.0
    model = linear_localizer("azimuth_elevation", np.array([[90.0] + [0] * (N_IN - 1), [0.0] * N_IN]))
    out = explain_once(model, x, "angular_error", "lrp", truth=[[0.0, 90.0]])  # to the zenith: 90 degrees
    np.testing.assert_allclose(out["explained"], 90.0, rtol=1e-9)
    cos_sin = linear_localizer("cos_sin", np.array([[2.0] + [0] * (N_IN - 1), [2.0] + [0] * (N_IN - 1)]))
    err = explain_once(cos_sin, x, "angular_error", "attn_lrp", truth=[0.0], epsilon=0.0)
    np.testing.assert_allclose(err["explained"], 45.0, rtol=1e-9)  # [2, 2] is 45 degrees from azimuth 0
    np.testing.assert_allclose(err["relevance_sum"], 45.0, rtol=1e-9)
    az = explain_once(cos_sin, x, "azimuth", "lrp")
    np.testing.assert_allclose(az["attr_output"], [[22.5, 22.5]], rtol=1e-9)


def test_azimuth_of_cos_sin_outputs_has_the_analytic_gradient(attn_lrp_anywhere):
    w = RNG.standard_normal((2, N_IN))
    model = linear_localizer("cos_sin", w)
    c, s = (X[:, 0] @ w.T).T
    out = explain_once(model, X, "azimuth")
    grad = (180.0 / math.pi) * (-s[:, None] * w[0] + c[:, None] * w[1]) / (c * c + s * s)[:, None]
    np.testing.assert_allclose(out["relevance"][:, 0], X[:, 0] * grad, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out["relevance_sum"], 0.0, atol=1e-9)  # an angle is scale-free (Euler)
    np.testing.assert_allclose(out["explained"], 0.0, atol=1e-9)  # f . dq/df: what x . dq/dx sums to
    # AttnLRP starts from the seed, the azimuth shared by cos and sin (review 16, item 3): not 0
    attn = explain_once(model, X, "azimuth", "attn_lrp", epsilon=0.0)
    seed = np.degrees(np.arctan2(s, c))[:, None] * np.stack([c * c, s * s], 1) / (c * c + s * s)[:, None]
    np.testing.assert_allclose(attn["attr_output"], seed, rtol=1e-9)
    np.testing.assert_allclose(attn["relevance"][:, 0], X[:, 0] * ((seed / np.stack([c, s], 1)) @ w), rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_allclose(attn["relevance_sum"], np.degrees(np.arctan2(s, c)), rtol=1e-9)
    np.testing.assert_allclose(attn["explained"], np.degrees(np.arctan2(s, c)), rtol=1e-9)
    along = explain_once(model, X, "direction", azimuth=90.0)  # the sin component
    np.testing.assert_allclose(along["relevance"][:, 0], w[1] * X[:, 0], rtol=1e-9, atol=1e-12)
    true = explain_once(model, X, "true_direction", "lrp", truth=[0.0, 180.0])
    np.testing.assert_allclose(true["relevance_sum"], [c[0], -c[1]], rtol=1e-9)


def test_great_circle_error_is_accurate_in_float32_near_zero():
    objective = bind("angular_error", "azimuth_elevation")
    truth = torch.tensor([[30.0, 10.0]])
    for error in (2.0**-10, 2.0**-7, 0.25, 90.0):  # exact in float32
        f = torch.tensor([[30.0 + error, 10.0]])
        q = objective.scalar(f, objective.weights(f, truth))
        # the great circle between two points of one parallel at elevation e, azimuths d apart
        e, d = math.radians(10.0), math.radians(error)
        expected = math.degrees(2 * math.asin(math.cos(e) * math.sin(d / 2)))
        assert q.item() == pytest.approx(expected, rel=1e-4)  # arccos(u . v) in float32 gave 0 below 0.02 degrees


def test_cos_sin_azimuth_is_the_signed_angle_from_zero():
    """What the 'azimuth' target explains on [cos, sin] outputs: sources across 180 degrees flip sign."""
    objective = bind("azimuth", "cos_sin")
    for degrees, expected in ((179.0, 179.0), (181.0, -179.0), (0.5, 0.5), (-0.5, -0.5), (270.0, -90.0)):
        f = torch.tensor([[math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]], dtype=torch.float64)
        w = objective.weights(f)
        assert objective.scalar(f, w).item() == pytest.approx(expected, abs=1e-9)
        assert objective.seed(f, w).sum().item() == pytest.approx(expected, abs=1e-9)
