"""Bad inputs of the binaural trainers and their metrics: one-line errors, before training, nothing written."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner
from safetensors.torch import save
from torch import nn

from xai_loc.cli import main
from xai_loc.errors import InputError
from xai_loc.models.checkpoint import CARD_KEY, load_model, read_card
from xai_loc.models.classifier_training import (
    FP16_TOLERANCE,
    ClassifierConfig,
    direction_metrics,
    score_logits,
    train_classifier,
)
from xai_loc.models.cuenet import CueNet, cue_metrics, train_cuenet
from xai_loc.models.tfcnn_training import TFCNNTrainConfig, azimuth_scores, train_tfcnn
from xai_loc.models.trainer import float16_check, state_path

NAN = float("nan")
TINY_COCHCNN = {"layers": ["c4 1x8", "p1x8", "c8 2x4", "p2x4"], "dense": 16, "head": "azimuth"}
TINY_TFCNN = {"channels": [4, 8], "dense": [16]}


def _binaural(n: int, n_samples: int, azimuth=None) -> xr.Dataset:
    """An in-memory binaural store (noise) of ``n`` examples at 48 kHz, azimuths on the 5-degree ring."""
    rng = np.random.default_rng(0)
    az = np.arange(n) % 72 * 5.0 if azimuth is None else np.asarray(azimuth, dtype=np.float64)
    return xr.Dataset({"waveforms": (("example", "ear", "time"), rng.standard_normal((n, 2, n_samples), np.float32)),
                       "azimuth": ("example", az), "elevation": ("example", np.zeros(n))},
                      coords={"example": np.arange(n)}, attrs={"fs": 48000})


def _scenes(n: int, n_samples: int = 16000, azimuth=None, first_utterance: int = 0) -> xr.Dataset:
    """An in-memory TF-CNN scene store (noise) of ``n`` examples at 16 kHz, utterances from ``first_utterance``."""
    rng = np.random.default_rng(1)
    az = np.resize([-90.0, 0.0, 90.0], n) if azimuth is None else np.asarray(azimuth, dtype=np.float64)
    return xr.Dataset({"waveforms": (("example", "ear", "time"), rng.standard_normal((n, 2, n_samples), np.float32)),
                       "azimuth": ("example", az), "elevation": ("example", np.zeros(n)),
                       "snr": ("example", np.zeros(n)), "utterance": ("example", first_utterance + np.arange(n))},
                      attrs={"fs": 16000, "spec": json.dumps({"train_snr": [0.0, 10.0]}), "spec_digest": "x"})


def _cue_store(n: int, azimuth=None) -> xr.Dataset:
    """A cached cue-scene store of random cue maps (the default front end's shape)."""
    from xai_loc.data.cue_scenes import CueSceneSpec
    from xai_loc.features.binaural_cues import BinauralCues

    spec = CueSceneSpec()
    az = np.arange(n) % 72 * 5.0 if azimuth is None else np.asarray(azimuth, dtype=np.float64)
    cues = np.random.default_rng(2).uniform(0, 1, (n, 3, 32, 50)).astype(np.float32)
    return xr.Dataset({"cues": (("example", "cue", "band", "frame"), cues)},
                      coords={"azimuth": ("example", az),
                              "utterance": ("example", np.resize(spec.utterances("train"), n))},
                      attrs={"spec": json.dumps(spec.to_dict()), "front_end": json.dumps(BinauralCues().config)})


# -- the float16 rule (finding 1) ------------------------------------------------------------------------------


def _fp16_case(head: str) -> tuple[nn.Module, xr.Dataset, torch.Tensor]:
    """A classifier whose float16 copy answers one of 100 examples with the neighbouring azimuth class."""
    net = nn.Linear(1, 72 if head == "azimuth" else 504)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.fill_(-100.0)
        net.weight[0, 0], net.bias[0] = 1.0004, 0.0  # azimuth 0; float16 rounds the weight to 1.0 ...
        net.weight[1, 0], net.bias[1] = 1.0, 0.0003  # ... and azimuth 5 wins the first example
        net.weight[2, 0], net.bias[2] = -10.0, 0.0  # azimuth 10: the other examples
    ds = xr.Dataset({"azimuth": ("example", np.array([0.0] + [10.0] * 99)), "elevation": ("example", np.zeros(100))},
                    coords={"example": np.arange(100)})
    return net, ds, torch.tensor([[1.0]] + [[-1.0]] * 99)


@pytest.mark.parametrize("head", ["azimuth", "azel"])
def test_float16_is_refused_when_the_class_accuracy_drops_for_either_head(head):
    net, ds, x = _fp16_case(head)

    def score(model: nn.Module) -> dict:
        with torch.no_grad():
            return score_logits(model(x).numpy(), ds, head).summary()

    stored, entry, record = float16_check(net, score, FP16_TOLERANCE)
    assert record["float32"]["azimuth_accuracy"] == 1.0 and record["float16"]["azimuth_accuracy"] == 0.99
    assert stored == "float32" and entry["metrics"]["azimuth_accuracy"] == 1.0
    # metrics a head does not answer (None) are not compared: no elevation for the azimuth head
    compared = {"accuracy", "azimuth_accuracy", "azimuth_error", "elevation_error"}
    assert set(record["change"]) == (compared if head == "azel" else {"azimuth_accuracy", "azimuth_error"})


# -- non-finite responses and targets (finding 2) ---------------------------------------------------------------


def test_direction_metrics_refuse_nan_and_check_shapes_first():
    with pytest.raises(InputError, match=r"^target azimuths of 1 example\(s\) hold NaN .* example 0\)"):
        direction_metrics([0.0] * 4, [NAN] * 4, [NAN, 0.0, 0.0, 0.0], [0.0] * 4)
    with pytest.raises(InputError, match="^response azimuths"):
        direction_metrics([0.0, np.inf], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0])
    with pytest.raises(InputError, match=r"^response elevations .*all NaN for an azimuth-only head"):
        direction_metrics([0.0, 5.0], [NAN, 0.0], [0.0, 5.0], [0.0, 0.0])
    with pytest.raises(InputError, match=r"^responses \(4,\) \(elevations \(3,\)\)"):
        direction_metrics([0] * 4, [0] * 3, [0] * 4, [0] * 4)
    # an azimuth-only head answers no elevation (all NaN): allowed, the elevation metrics are None
    metrics = direction_metrics([0.0, 5.0], [NAN, NAN], [0.0, 10.0], 0.0)
    assert metrics["azimuth_accuracy"] == 0.5 and metrics["accuracy"] is None and metrics["elevation_error"] is None


def test_cue_and_tfcnn_scores_refuse_nan_targets():
    logits = np.zeros((2, 72))
    logits[:, 0] = 1.0  # both answer azimuth 0, the class a NaN target would be rounded to
    with pytest.raises(InputError, match="^target azimuths"):
        cue_metrics(logits, [NAN, 0.0])
    with pytest.raises(InputError, match="^logits"):
        cue_metrics(np.full((2, 72), NAN), [0.0, 0.0])
    with pytest.raises(InputError, match="^targets"):
        azimuth_scores([0.0, 5.0], [NAN, 5.0], [0.0, 0.0])
    with pytest.raises(InputError, match="^SNRs"):
        azimuth_scores([0.0, 5.0], [0.0, 5.0], [0.0, NAN])


def test_trainers_refuse_nan_azimuths_before_training(tmp_path):
    with pytest.raises(InputError, match="^the store's azimuths of 1 example"):
        train_cuenet(_cue_store(8, [NAN] + [0.0] * 7), tmp_path / "c.safetensors", progress=False,
                     model_config={"channels": 4, "hidden": 8}, config=ClassifierConfig(epochs=1))
    with pytest.raises(InputError, match="^the scenes' azimuth values of 1 example"):
        train_tfcnn(_scenes(3), tmp_path / "t.safetensors",
                    test_scenes=_scenes(3, azimuth=[0.0, NAN, 0.0], first_utterance=3), progress=False,
                    model_config=TINY_TFCNN, config=TFCNNTrainConfig(epochs=1, batch_size=3))
    assert not list(tmp_path.iterdir())


# -- resuming with fewer epochs (finding 3) ----------------------------------------------------------------------


def test_resuming_with_fewer_epochs_than_trained_is_refused(tmp_path):
    out = tmp_path / "m.safetensors"
    small = {"channels": 4, "hidden": 8}
    train_cuenet(_cue_store(16), out, model_config=small, config=ClassifierConfig(epochs=2, batch_size=8))
    before = out.read_bytes(), state_path(out).read_bytes()
    with pytest.raises(InputError, match=rf"^1 planned epochs are fewer than the 2 epochs already trained in "
                                         rf"{re.escape(str(state_path(out)))}; plan at least 2 "):
        train_cuenet(_cue_store(16), out, model_config=small, config=ClassifierConfig(epochs=1, batch_size=8))
    assert (out.read_bytes(), state_path(out).read_bytes()) == before
    training = read_card(out)["training"]
    assert training["epochs"] == training["config"]["epochs"] == 2


# -- cards with records of the wrong type (finding 4) -------------------------------------------------------------


@pytest.mark.parametrize("fields, field", [
    ({"metrics": "oops"}, "metrics"),
    ({"metrics": {"float16_check": [1, 2]}}, "metrics.float16_check"),
    ({"metrics": {"float16_check": {"mae": 3}}}, "metrics.float16_check.mae"),
    ({"metrics": {"test": 5}}, "metrics.test"),
    ({"metrics": {"test": {"metrics": {}, "baseline": {"metrics": [1]}}}}, "metrics.test.baseline.metrics"),
    ({"training": "oops"}, "training"),
    ({"training": {"epochs": 3, "config": "x"}}, "training.config"),
    ({"dataset": 1}, "dataset"),
    ({"storage": [1]}, "storage"),
])
def test_models_list_refuses_card_records_of_the_wrong_type(tmp_path, fields, field):
    card = {"format": "xai-loc-checkpoint", "format_version": 1, "architecture": "loccnn",
            "config": {"n_mics": 16, "n_samples": 5120}, "condition": {"t60": 0.6, "snr": 10.0}, **fields}
    path = tmp_path / "a.safetensors"
    path.write_bytes(save({"w": torch.zeros(1)}, metadata={CARD_KEY: json.dumps(card)}))
    result = CliRunner().invoke(main, ["models", "list", "--dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: checkpoint {path} has a card whose {field} is "), lines
    with pytest.raises(InputError, match="a mapping"):
        load_model(path)


# -- model configurations (finding 5) ------------------------------------------------------------------------------


def test_cue_network_refuses_cues_that_are_not_a_mapping(tmp_path):
    with pytest.raises(InputError, match=r"^cues=\['a'\] is not allowed; give a dict"):
        CueNet(cues=["a"])
    card = {"format": "xai-loc-checkpoint", "format_version": 1, "architecture": "cuenet",
            "config": {"n_samples": 22050, "cues": ["a"]}, "condition": {"rooms": ["anechoic"], "snr": None}}
    path = tmp_path / "c.safetensors"
    path.write_bytes(save({"w": torch.zeros(1)}, metadata={CARD_KEY: json.dumps(card)}))
    with pytest.raises(InputError, match=rf"^checkpoint {re.escape(str(path))}: cues=\['a'\]"):
        load_model(path)


def test_trainers_refuse_unknown_model_config_keys_in_one_line(tmp_path):
    with pytest.raises(InputError, match=r"^model_config does not fit cuenet \(.*'chanels'\)$"):
        train_cuenet(_cue_store(8), tmp_path / "c.safetensors", model_config={"chanels": 8})
    with pytest.raises(InputError, match=r"^model_config does not fit tfcnn \(.*'bogus'\)$"):
        train_tfcnn(_scenes(2), tmp_path / "t.safetensors", model_config={"bogus": 1}, progress=False)
    with pytest.raises(InputError, match=r"^model_config does not fit cochcnn \(.*'bogus'\)$"):
        train_classifier(_binaural(2, 4800), tmp_path / "k.safetensors", model_config={"bogus": 1}, progress=False)
    with pytest.raises(InputError, match="^model_config: channels=0 is not allowed"):
        train_cuenet(_cue_store(8), tmp_path / "c.safetensors", model_config={"channels": 0})
    assert not list(tmp_path.iterdir())


# -- the TF-CNN's settings (finding 6) -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, allowed", [
    ({"max_minutes": "5"}, "None or a positive number of minutes"),
    ({"max_minutes": True}, "None or a positive number of minutes"),
    ({"lr": True}, "a positive number"),
    ({"seed": -1}, "an integer >= 0"),
    ({"batch_size": 1}, "an integer >= 2"),
])
def test_tfcnn_config_refuses_what_the_classifier_config_refuses(bad, allowed):
    (name, value), = bad.items()
    message = rf"^{name}={value!r} is not allowed; use {allowed}$"
    for config in (TFCNNTrainConfig, ClassifierConfig):
        with pytest.raises(InputError, match=message):
            config(**bad)


# -- a mismatched test store (finding 9) ----------------------------------------------------------------------------


def test_a_test_store_that_does_not_fit_is_refused_before_training(tmp_path):
    with pytest.raises(InputError, match="^the scenes hold 8000 samples"):
        train_tfcnn(_scenes(3), tmp_path / "t.safetensors", test_scenes=_scenes(3, n_samples=8000, first_utterance=3),
                    progress=False, model_config=TINY_TFCNN, config=TFCNNTrainConfig(epochs=1, batch_size=3))
    with pytest.raises(InputError, match="^the model takes 4800 samples per ear but the store holds 2400"):
        train_classifier(_binaural(4, 4800), tmp_path / "k.safetensors", test_store=_binaural(2, 2400),
                         model_config=TINY_COCHCNN, config=ClassifierConfig(epochs=1, batch_size=2), progress=False)
    with pytest.raises(InputError, match=r"^direction \(azimuth=3\.0"):  # a test target off the class grid
        train_classifier(_binaural(4, 4800), tmp_path / "k.safetensors", test_store=_binaural(2, 4800, [0.0, 3.0]),
                         model_config=TINY_COCHCNN, config=ClassifierConfig(epochs=1, batch_size=2), progress=False)
    assert not list(tmp_path.iterdir())  # no training state: nothing was trained
