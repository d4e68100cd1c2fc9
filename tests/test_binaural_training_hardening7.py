"""Binaural training review, round 7: held-out utterances of the TF-CNN and cue network; BAST stores of a seed.

1. ``train_tfcnn`` refuses a test set that shares utterances with its training set (one line, before training), as
   the cue network does, both through ``open_splits(..., held_out=("utterance",))``; disjoint sets still train.
2. ``scripts/train_bast.py --seed N`` and ``xai-loc binaural bast train --seed N`` name the scene store alike
   (:meth:`~xai_loc.data.bast_scenes.BastSceneSpec.named`), so each reuses the other's.
"""
from __future__ import annotations

import json

import numpy as np
import xarray as xr
from helpers import never, one_line, run_cli, tree
from test_scripts_hardening import run_here

from xai_loc.models.checkpoint import read_card

#: Three azimuths, 0.1 s scenes: 24 training and 3 test scenes (seed 0's training utterances hold utterance 10, the
#: first utterance of seed 3's test split).
TINY_SCENES = dict(azimuths=(-90.0, 0.0, 90.0), n_train=24, test_per_azimuth=1, test_snrs=(0.0,), duration=0.1)
TINY_TFCNN = {"channels": [4, 8], "dense": [16], "n_samples": 1600}


# --------------------------------------------------------------------- 1: test sets that share training utterances
def test_tfcnn_refuses_a_test_set_with_training_utterances_before_training(tmp_path, monkeypatch):
    """Review: a seed-0 training split and a seed-3 test split (utterance 10 in both) trained and wrote the result
    as held-out test metrics, recording only ``utterances_disjoint: False``. Now it is refused in one line before
    training, nothing written; the test split of the same spec still trains and is scored."""
    import xai_loc.models.trainer as trainer
    from xai_loc.data.ipd_ild_scenes import SceneSpec, render_split
    from xai_loc.models.tfcnn_training import TFCNNTrainConfig, train_tfcnn

    spec = SceneSpec(name="tiny", **TINY_SCENES)
    train = render_split(spec, "train")
    other = render_split(SceneSpec(name="tiny", seed=3, **TINY_SCENES), "test")
    assert np.intersect1d(train["utterance"].values, other["utterance"].values).tolist() == [10]
    config = TFCNNTrainConfig(epochs=1, batch_size=8)
    with monkeypatch.context() as m:
        m.setattr(trainer, "fit", never("training"))
        said = one_line(train_tfcnn, train, tmp_path / "t.safetensors", test_scenes=other, model_config=TINY_TFCNN,
                        config=config, dtype="float32", progress=False)
    assert said == ("the test scene store shares 1 utterance value(s) with the training scene store (the first: 10); "
                    "train on the train split and test on the test split")
    assert list(tmp_path.iterdir()) == []
    out = train_tfcnn(train, tmp_path / "t.safetensors", test_scenes=render_split(spec, "test"),
                      model_config=TINY_TFCNN, config=config, dtype="float32", progress=False)
    card = read_card(out)
    assert card["dataset"]["test"]["utterances_disjoint"] is True and card["metrics"]["test"]["metrics"]["n"] == 3


def _cue_store(utterances: np.ndarray, n: int, seed: int) -> xr.Dataset:
    """A cached cue-scene store of ``n`` random cue maps on the utterances (cycled), azimuths 0, 5, ..."""
    from xai_loc.data.cue_scenes import CueSceneSpec
    from xai_loc.features.binaural_cues import BinauralCues

    cues = np.random.default_rng(seed).uniform(0, 1, (n, 3, 32, 50)).astype(np.float32)
    return xr.Dataset({"cues": (("example", "cue", "band", "frame"), cues)},
                      coords={"azimuth": ("example", np.arange(n) % 72 * 5.0),
                              "utterance": ("example", np.resize(utterances, n))},
                      attrs={"spec": json.dumps(CueSceneSpec().to_dict()),
                             "front_end": json.dumps(BinauralCues().config)})


def test_cuenet_refuses_shared_utterances_by_the_shared_held_out_check(tmp_path, monkeypatch):
    """Review: the cue network refused overlap with its own hand-written check ('2 utterance(s) are in both the
    training and the test store (e.g. esp012); ...') after building the model. Now the one held-out check of
    ``open_splits`` refuses it, before the model is built, with the trainers' common line; disjoint stores train."""
    import xai_loc.models.checkpoint as checkpoint
    from xai_loc.data.cue_scenes import CueSceneSpec
    from xai_loc.models.classifier_training import ClassifierConfig
    from xai_loc.models.cuenet import train_cuenet

    spec = CueSceneSpec()
    trained, held_out = np.array(spec.utterances("train")[:10]), np.array(spec.utterances("test")[:2])
    train = _cue_store(trained, 20, 0)
    config, small = ClassifierConfig(epochs=1, batch_size=10), {"channels": 8, "hidden": 16}
    with monkeypatch.context() as m:
        m.setattr(checkpoint, "build_configured", never("building the model"))
        said = one_line(train_cuenet, train, tmp_path / "c.safetensors", config=config, model_config=small,
                        test_store=_cue_store(np.concatenate([held_out, trained[-2:]]), 8, 1))
    assert trained[-2:].tolist() == ["esp012", "esp013"]
    assert said == ("the test store shares 2 utterance value(s) with the training store (the first: 'esp012'); "
                    "train on the train split and test on the test split")
    assert list(tmp_path.iterdir()) == []
    out = train_cuenet(train, tmp_path / "c.safetensors", test_store=_cue_store(held_out, 6, 1),
                       config=config, model_config=small)
    card = read_card(out)
    assert card["dataset"]["test"]["utterances_shared_with_train"] == 0
    assert card["metrics"]["test"]["metrics"]["n"] == 6


# ---------------------------------------------------------------------- 2: one name for BAST's stores of a seed
def test_bast_store_names_keep_seed_0_and_add_other_seeds():
    """Review: the script named the store 'bast-<n>' for every seed, the CLI 'bast-<n>-s<seed>' for seeds other
    than 0 (two diverged copies). One name now; seed 0's (the shipped model's data) is unchanged."""
    from xai_loc.data.bast_scenes import BastSceneSpec

    shipped = BastSceneSpec(n_sounds=120).named()
    assert (shipped.name, shipped.digest()) == ("bast-120", "813c11e64ee314c3")
    assert BastSceneSpec(n_sounds=5, seed=1).named().name == "bast-5-s1"


def test_train_bast_script_reuses_the_clis_store_of_a_seed(tmp_path):
    """Review: after 'xai-loc binaural bast train --seed 1' the script with '--seed 1' rendered a second store
    'bast-5' (and with a seed-0 'bast-5' there, was refused: 'holds scenes of another spec'). Now it reuses the
    CLI's 'bast-5-s1' byte for byte, and both cards record the same data."""
    data = tmp_path / "data"
    tiny = ["--n-sounds", "5", "--epochs", "1", "--dim", "16", "--heads", "2", "--depth", "1", "--seed", "1"]
    cli = run_cli(["binaural", "bast", "train", *tiny, "--data", str(data), "--out", str(tmp_path / "cli.safetensors")])
    assert cli.exit_code == 0, cli.output
    rendered = tree(data / "bast")
    assert sorted(p.name for p in (data / "bast").iterdir()) == ["bast-5-s1"]
    done = run_here("scripts/train_bast.py", *tiny, "--threads", "1", "--data-root", data,
                    "--out", tmp_path / "script.safetensors", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in (data / "bast").iterdir()) == ["bast-5-s1"]
    assert tree(data / "bast") == rendered
    cards = [read_card(tmp_path / f"{who}.safetensors")["dataset"] for who in ("cli", "script")]
    assert cards[0] == cards[1] and cards[0]["spec"]["name"] == "bast-5-s1"
