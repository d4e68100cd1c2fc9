"""Cochleagram CNN: layer lists, shapes, checkpoints, training, metrics, BN canonizer, relevance."""
import json

import numpy as np
import pytest
import torch

from xai_loc.errors import InputError
from xai_loc.explain.canonizers import IDENTITY_EPS, FoldBatchNormForward
from xai_loc.models import CochleagramCNN, build_model, load_model, read_card, save_checkpoint
from xai_loc.models.classifier_training import (
    ClassifierConfig,
    direction_metrics,
    front_back_confusions,
    soft_targets,
    train_classifier,
)
from xai_loc.models.cochleagram_cnn import LAYER_PRESETS, FrequencyPad
from xai_loc.models.evaluation import after_front_end

MIXTURE = {"condition": {"rooms": ["anechoic", "office"], "snr": [5, 40]}}
#: A very small network for 0.1 s inputs (800 frames), used where only mechanics matter.
TINY = ["c4 1x8", "p1x8", "c8 2x4", "p2x4"]


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BatchNorm statistics and affine parameters (negative scales included); eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(0.3 * torch.randn(n, generator=gen))
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                module.weight.copy_(torch.randn(n, generator=gen))
                module.bias.copy_(0.3 * torch.randn(n, generator=gen))
    return model.eval()


def test_net1_is_the_published_list_with_its_parameter_count():
    model = build_model("cochcnn", layers="net1", front_end=False)
    assert model.n_samples == 48000 and model.input_shape == (2, 39, 8000)
    assert [s["channels"] for s in model.stages] == [32, 32, 32, 64, 128, 128, 256, 256]
    assert model.stage_shapes[-1] == (256, 19, 20)
    assert model.head.dense.in_features == 256 * 19 * 20
    # 53.96 M in the paper: trainable parameters plus BatchNorm running statistics (Keras' count)
    assert model.n_parameters() == 53_953_752
    assert model.n_parameters(trainable=False) == 53_956_632
    assert round(model.n_parameters(trainable=False) / 1e6, 2) == 53.96


def test_small_default_forward_shapes_and_heads():
    model = build_model("cochcnn").eval()
    assert model.config["layers"] == list(LAYER_PRESETS["small"])
    assert model.input_shape == (2, 12000) and model.cochleagram_shape == (2, 39, 2000)
    assert 2e6 < model.n_parameters() < 5e6
    x = torch.randn(3, 2, 12000) * 0.05
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (3, 504)
        # the trainers run the model past its front end on cached cochleagrams
        assert torch.allclose(after_front_end(model)(model.front_end(x)), logits)
    names = [n for n, _ in model.named_children()]
    assert names == ["front_end", "features", "head"]
    assert isinstance(model.features.pad2, FrequencyPad) and not hasattr(model.features, "pad1")
    az_model = build_model("cochcnn", layers=TINY, head="azimuth", n_samples=4800, front_end=False)
    assert az_model(torch.rand(2, 2, 39, 800)).shape == (2, 72)
    decoded = az_model.decode(torch.eye(72)[[18, 54]])
    assert decoded["azimuth"].tolist() == [90.0, 270.0] and decoded["elevation"].tolist() == [0.0, 0.0]
    with pytest.raises(InputError, match="'q8 1x2' is not allowed"):
        build_model("cochcnn", layers=["q8 1x2"])
    with pytest.raises(InputError, match="a pool must follow a convolution"):
        build_model("cochcnn", layers=["p1x2", "c8 1x2"])
    with pytest.raises(InputError, match="leave no output"):
        build_model("cochcnn", layers=TINY, n_samples=240)
    with pytest.raises(InputError, match="head='both'"):
        build_model("cochcnn", head="both")


def test_checkpoint_round_trip_rebuilds_from_the_card(tmp_path):
    torch.manual_seed(0)
    model = randomized(build_model("cochcnn", layers=TINY, head="azimuth", n_samples=4800, dense=64))
    assert not any(k.startswith("front_end.") for k in model.state_dict())  # fixed, rebuilt from the config
    path = save_checkpoint(model, tmp_path / "c.safetensors", MIXTURE)
    card = read_card(path)
    assert card["architecture"] == "cochcnn" and card["config"] == json.loads(json.dumps(model.config))
    assert card["condition"] == {"rooms": ["anechoic", "office"], "snr": [5.0, 40.0]}
    loaded = load_model(path)
    assert isinstance(loaded, CochleagramCNN) and loaded.config == model.config
    x = torch.randn(2, 2, 4800) * 0.05
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with pytest.raises(InputError, match="card condition"):
        save_checkpoint(model, tmp_path / "d.safetensors", {"condition": {"rooms": [], "snr": None}})


def test_front_back_confusions_and_metrics_on_a_hand_made_case():
    true_az = np.array([30.0, 30.0, 0.0, 90.0, 330.0, 150.0])
    resp_az = np.array([150.0, 40.0, 180.0, 90.0, 200.0, 30.0])
    confused, eligible = front_back_confusions(resp_az, true_az)
    assert confused.tolist() == [True, False, True, False, True, True]
    assert eligible.tolist() == [True, True, True, False, True, True]
    true_el = np.array([0.0, 10.0, 20.0, 30.0, 40.0, 60.0])
    resp_el = np.array([0.0, 10.0, 40.0, 30.0, 40.0, 50.0])
    m = direction_metrics(resp_az, resp_el, true_az, true_el)
    assert m["front_back_rate"] == pytest.approx(4 / 5)
    assert m["azimuth_error"] == pytest.approx((120 + 10 + 180 + 0 + 130 + 120) / 6)
    assert m["azimuth_error_folded"] == pytest.approx((0 + 10 + 0 + 0 + 10 + 0) / 6)
    assert m["elevation_error"] == pytest.approx(5.0)
    assert m["accuracy"] == pytest.approx(1 / 6) and m["azimuth_accuracy"] == pytest.approx(1 / 6)
    # a front-back confusion keeps the lateral angle
    assert direction_metrics([150.0], [0.0], [30.0], [0.0])["lateral_error"] == pytest.approx(0.0, abs=1e-9)
    azimuth_only = direction_metrics(resp_az, np.nan, true_az, true_el)
    assert azimuth_only["accuracy"] is None and azimuth_only["elevation_error"] is None
    rows = soft_targets("azel", 10.0)
    # rows are normalized in float64, then each entry is rounded once to float32: summed in
    # float64 a row is 1 within 2**-24 (a float32 sum of 504 terms could be off by ~504 * 2**-24)
    assert rows.shape == (504, 504) and rows.dtype == torch.float32
    torch.testing.assert_close(rows.double().sum(1), torch.ones(504, dtype=torch.float64), rtol=0,
                               atol=2.0**-24 + 1e-12)
    assert torch.equal(soft_targets("azimuth", 0.0), torch.eye(72))


@pytest.fixture(scope="module")
def tiny_stores(tmp_path_factory):
    from xai_loc.data.binaural_store import BinauralSpec, simulate_binaural

    root = tmp_path_factory.mktemp("binaural")
    spec = BinauralSpec(name="tiny", rooms=("anechoic",), kinds=("white_burst", "click_train", "pink_burst"),
                        n_sounds=9, per_sound=2, test_fraction=0.34, duration=0.1, snr=None)
    return spec, {split: simulate_binaural(spec, split, root=root, progress=False) for split in ("train", "test")}


def test_binaural_store_splits_by_sound(tiny_stores):
    from xai_loc.data.binaural_store import open_binaural, render_examples

    spec, stores = tiny_stores
    train, test = open_binaural(stores["train"]), open_binaural(stores["test"])
    assert train["waveforms"].dims == ("example", "ear", "time") and train.sizes["time"] == 4800
    assert not set(train["sound_key"].values) & set(test["sound_key"].values)
    assert train.sizes["example"] + test.sizes["example"] == 18
    assert set(np.unique(train["room"].values)) == {"anechoic"}
    waves, cols = render_examples(spec, spec.sound_ids("test")[:1])
    np.testing.assert_array_equal(waves, test["waveforms"].values[:2])
    np.testing.assert_array_equal(cols["label"], test["label"].values[:2])


def test_training_lowers_the_loss_and_resumes(tiny_stores, tmp_path):
    _, stores = tiny_stores
    out = tmp_path / "m.safetensors"
    config = ClassifierConfig(epochs=6, batch_size=4, lr=3e-3)
    model_config = {"layers": TINY, "dense": 32, "head": "azimuth"}
    train_classifier(stores["train"], out, model_config=model_config, config=config, progress=False)
    loss = read_card(out)["training"]["history"]["train_loss"]
    assert len(loss) == 6 and loss[-1] < loss[0]
    # resuming continues from the saved state; the card carries the held-out metrics
    more = ClassifierConfig(epochs=7, batch_size=4, lr=3e-3)
    train_classifier(stores["train"], out, model_config=model_config, config=more, test_store=stores["test"],
                     progress=False, dtype="float32")
    card = read_card(out)
    assert card["training"]["epochs"] == 7 and card["training"]["history"]["train_loss"][:6] == loss
    test = card["metrics"]["test"]
    assert test["metrics"]["n"] == 6 and "front_back_rate" in test["metrics"] and "baseline" in test
    assert card["condition"] == {"rooms": ["anechoic"], "snr": None}
    assert isinstance(load_model(out), CochleagramCNN)


def test_an_interrupted_run_ends_with_the_same_weights(tiny_stores, tmp_path):
    _, stores = tiny_stores
    model_config = {"layers": TINY, "dense": 16}
    for name, plan in (("straight", (2,)), ("resumed", (1, 2))):
        for epochs in plan:
            train_classifier(stores["train"], tmp_path / f"{name}.safetensors", model_config=model_config,
                             config=ClassifierConfig(epochs=epochs, batch_size=4), progress=False, dtype="float32")
    a, b = (load_model(tmp_path / f"{n}.safetensors").state_dict() for n in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fold_batchnorm_forward_is_exact_and_reversible():
    torch.manual_seed(1)
    model = randomized(build_model("cochcnn", front_end=False)).double()
    x = torch.rand(2, 2, 39, 2000, dtype=torch.float64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        reference = model(x)
        instances = FoldBatchNormForward().apply(model)
        assert len(instances) == 5  # four stages and the head
        folded = model(x)
        bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        assert all(torch.all(m.weight == 1) and m.eps == IDENTITY_EPS for m in bns)
        assert model.features.pad2.fill is not None
        for instance in instances[::-1]:
            instance.remove()
    torch.testing.assert_close(folded, reference, rtol=1e-12, atol=1e-12)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.fill is None for m in model.modules() if isinstance(m, FrequencyPad))
    model.features.bn3.weight.data[0] = 0.0  # the third BatchNorm fails: the two folded before it are restored
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(InputError, match="zero scale"):
        FoldBatchNormForward().apply(model)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.fill is None for m in model.modules() if isinstance(m, FrequencyPad))
    assert all(m.eps != IDENTITY_EPS for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))


def test_relevance_reaches_the_waveform_with_labelled_dims():
    from xai_loc.explain.cochcnn import explain_cochcnn

    torch.manual_seed(2)
    model = randomized(build_model("cochcnn", layers=TINY, n_samples=4800, dense=32))
    x = torch.randn(2, 2, 4800) * 0.05
    rel = explain_cochcnn(model, x)
    wave, coch = rel["waveform"], rel["cochleagram"]
    assert wave.dims == ("example", "ear", "time") and wave.shape == (2, 2, 4800)
    assert coch.dims == ("example", "ear", "frequency", "time") and coch.shape == (2, 2, 39, 800)
    np.testing.assert_allclose(coch["frequency"].values, model.centre_frequencies)
    assert coch["frequency"].attrs["units"] == "Hz" and 40 < coch["frequency"].values[0] < 60
    assert list(wave["ear"].values) == ["left", "right"] and wave.attrs["composite"] == "cochcnn"
    assert np.isfinite(wave.values).all() and np.abs(wave.values).sum(axis=(0, 2)).min() > 0
    # the front end conserves relevance up to its stabilizers: the same total on the cochleagram
    # and the waveform, relative to the relevance's absolute mass
    scale = np.abs(coch.values).sum(axis=(1, 2, 3))
    assert np.all(np.abs(wave["relevance_sum"].values - coch["relevance_sum"].values) < 1e-2 * scale)
    # other seeds: a given class, the true labels
    assert explain_cochcnn(model, x, target=7)["waveform"]["target_class"].values.tolist() == [7, 7]
    truth = explain_cochcnn(model, x, target="truth", labels=[3, 400])
    assert truth["cochleagram"]["target_class"].values.tolist() == [3, 400]
    with pytest.raises(InputError, match="one label per example"):
        explain_cochcnn(model, x, target="truth")


def test_lrp_conserves_the_logit_down_to_the_waveform_in_float64():
    """Without biases (and BatchNorm shifts), LRP-epsilon passes the whole logit to the waveform."""
    from xai_loc.explain.cochcnn import explain_cochcnn

    torch.manual_seed(3)
    model = randomized(build_model("cochcnn", layers=TINY, n_samples=4800, dense=32))
    with torch.no_grad():
        for module in model.modules():
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.zero_()
    model = model.double()
    x = torch.randn(2, 2, 4800, dtype=torch.float64) * 0.05
    rel = explain_cochcnn(model, x, conv_rule="epsilon", epsilon=1e-12, stabilizer=1e-12)
    np.testing.assert_allclose(rel["waveform"]["relevance_sum"].values, rel["waveform"]["logit"].values, rtol=1e-6)
