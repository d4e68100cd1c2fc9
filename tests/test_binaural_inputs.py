"""The binaural families' inputs: a store of one family is refused by another's, a probe runs on the
held-out split of the data its checkpoint's card records, a dataset's name follows its whole spec, a
recorded spec or scene-set name is checked in one line, and a command refuses a bad option before
anything is rendered."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from xai_loc.cli import main
from xai_loc.data import bast_scenes, binaural_store, cue_scenes, ipd_ild_scenes
from xai_loc.data.resumable import ResumableStore, write_store
from xai_loc.errors import InputError

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
#: The three kinds of stores of ear signals: the same array, (example, ear, time), in other conventions.
EAR_KINDS = (binaural_store.BINAURAL, ipd_ild_scenes.SCENES, bast_scenes.BAST_SCENES)


def _one_line(fn, *args, **kwargs) -> str:
    with pytest.raises(InputError) as err:
        fn(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


class _Stop(Exception):
    """Raised by a spy where the command would render."""


def _never(*args, **kwargs):
    raise AssertionError("rendered before the bad input was refused")


def _refused(tmp_path, monkeypatch, args: list[str]) -> str:
    """Run a command that must stop before rendering anything; its one-line error, without 'Error: '."""
    monkeypatch.setattr(ResumableStore, "open_or_resume", _never)  # every store is written through it
    monkeypatch.setattr(ipd_ild_scenes, "render_scenes", _never)  # plans every scene first
    monkeypatch.setattr("xai_loc.experiments.cues.run_duplex_probe", _never)  # runs before the behaviour's scenes
    monkeypatch.setenv("XAI_LOC_PRETRAINED", str(PRETRAINED))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--threads", "1", *args, "--data", str(tmp_path / "d")])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, (result.output, result.exception)
    assert list(tmp_path.iterdir()) == []
    return lines[0].removeprefix("Error: ")


# ------------------------------------------------------------------------------------ stores of other families
@pytest.mark.parametrize("written", EAR_KINDS, ids=lambda k: k.what)
def test_a_store_of_another_binaural_family_is_refused_naming_both(tmp_path, written):
    from xai_loc.explain.binaural import EAR_SIGNALS

    path = tmp_path / "test.zarr"
    write_store(path, written, {"toy": 1}, shape=(2, 2, 3), coords={}, attrs={},
                render=lambda items: {"waveforms": np.ones((len(items), 2, 3), np.float32)})
    for kind in EAR_KINDS:
        if kind is written:
            assert kind.open(path)["waveforms"].shape == (2, 2, 3) and kind.open_array(path).shape == (2, 2, 3)
            continue
        message = (f"{path} is a {written.format!r} store, not a {kind.what} ({kind.format!r}); "
                   f"give a {kind.what}, made by {kind.make}")
        assert _one_line(kind.open, path) == message
        assert _one_line(kind.open_array, path) == message
    assert EAR_SIGNALS.open(path)["waveforms"].shape == (2, 2, 3)  # any ear signals, whoever wrote them


def test_an_ipd_ild_store_keeps_its_config_and_is_no_binaural_store(tmp_path):
    """The reviewer's case: IPD/ILD scenes (azimuth positive = right) opened as a cochleagram CNN's binaural
    store (90 = left) came out mirrored."""
    from xai_loc.models import load_model
    from xai_loc.models.classifier_training import evaluate_directions

    spec = ipd_ild_scenes.SceneSpec(name="t", azimuths=(30.0, 60.0), n_train=1, test_per_azimuth=1,
                                    test_snrs=(30.0,), duration=0.25, fs=48000)
    path = ipd_ild_scenes.render_scenes(spec, tmp_path, progress=False, splits=("test",))["test"]
    # the recorded configuration (store version 2: stores of version 1 are refused, to be rendered again)
    assert json.loads(ipd_ild_scenes.open_scenes(path).attrs["config"]) == {
        "spec": spec.to_dict(), "split": "test", "format": "xai-loc-ipd-ild-scenes", "version": 2}
    assert _one_line(binaural_store.open_binaural, path).startswith(
        f"{path} is a 'xai-loc-ipd-ild-scenes' store, not a binaural store ('xai-loc-binaural')")
    assert _one_line(evaluate_directions, load_model(PRETRAINED / "cochcnn_default.safetensors"), path).startswith(
        f"{path} is a 'xai-loc-ipd-ild-scenes' store")


def test_a_damaged_binaural_store_names_the_command_that_rebuilds_it(tmp_path):
    kind, path = binaural_store.BINAURAL, tmp_path / "test.zarr"
    write_store(path, kind, {"toy": 1}, shape=(2, 2, 3), coords={}, attrs={},
                render=lambda items: {"waveforms": np.ones((len(items), 2, 3), np.float32)})
    (path / "waveforms" / "1.0.0").unlink()
    assert _one_line(binaural_store.open_binaural, path).endswith(
        "delete it and run simulate_binaural (or 'xai-loc binaural simulate') again to rebuild it")


# ------------------------------------------------------------------------------------ held-out data of a card
@pytest.mark.parametrize("args, option, card", [
    (["binaural", "cues", "--seed", "1"], "--seed 1", "seed 0"),
    (["binaural", "cues", "--n-sounds", "100"], "--n-sounds 100", "n-sounds 2200"),
    (["binaural", "cues", "--test-fraction", "0.3"], "--test-fraction 0.3", "test-fraction 0.2"),
    (["binaural", "tfcnn", "probe", "--seed", "1"], "--seed 1", "seed 0"),
    (["binaural", "cuenet", "probe", "--seed", "1"], "--seed 1", "seed 0"),
    (["binaural", "bast", "explain", "--seed", "1"], "--seed 1", "seed 0"),
    (["binaural", "bast", "explain", "--n-sounds", "10"], "--n-sounds 10", "n-sounds 120"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_an_option_that_moves_the_test_split_into_the_training_data_is_refused(tmp_path, monkeypatch, args, option,
                                                                                card):
    assert _refused(tmp_path, monkeypatch, args) == (
        f"{option} differs from the checkpoint's training {card}: its test split would overlap the training data; "
        "leave it out")


@pytest.fixture
def tfcnn_of_seed_3(tmp_path):
    """A TF-CNN checkpoint whose card records scenes of seed 3 (another held-out share of the utterances)."""
    from xai_loc.models import build_model, save_checkpoint

    spec = ipd_ild_scenes.SceneSpec(name="mine", n_train=40, seed=3)
    card = {"condition": {"rooms": ["anechoic"], "snr": [-10.0, 30.0]}, "dataset": {"train": {"spec": spec.to_dict()}}}
    return save_checkpoint(build_model("tfcnn"), tmp_path / "tf.safetensors", card), spec


def test_a_probe_renders_the_test_split_of_the_data_the_card_records(tmp_path, monkeypatch, tfcnn_of_seed_3):
    checkpoint, trained = tfcnn_of_seed_3
    asked = []

    def render_scenes(spec, *args, **kwargs):
        asked.append(spec)
        raise _Stop

    monkeypatch.setattr(ipd_ild_scenes, "render_scenes", render_scenes)

    def probe(*args):
        return CliRunner().invoke(main, ["--threads", "1", "binaural", "tfcnn", "probe", "--checkpoint",
                                         str(checkpoint), "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"),
                                         *args])

    assert isinstance(probe().exception, _Stop) and asked == [trained]  # the card's spec, its name included
    split = ipd_ild_scenes.utterance_split(trained, 300)
    assert isinstance(probe("--seed", "3", "--test-per-azimuth", "2").exception, _Stop)
    assert asked[-1] == replace(trained, test_per_azimuth=2, name="tfcnn-n40-t2-s3")  # rendered otherwise, same split
    result = probe("--seed", "0")  # the default seed names the scenes of seed 0, whose test split ...
    assert result.exit_code == 2 and result.stderr.strip() == (
        "Error: --seed 0 differs from the checkpoint's training seed 3: its test split would overlap the training "
        "data; leave it out")
    other = ipd_ild_scenes.utterance_split(replace(trained, seed=0), 300)["test"]
    assert np.intersect1d(other, split["train"]).size > 0  # ... would overlap its training utterances
    assert len(asked) == 2 and not (tmp_path / "d").exists()


# ------------------------------------------------------------------------------------ cochleagram dataset names
def test_the_cochleagram_data_are_named_by_their_whole_spec_and_default_to_the_shipped_models():
    from xai_loc.cli.binaural import COCHCNN_OPTIONS
    from xai_loc.models import read_card

    shipped = binaural_store.BinauralSpec.from_dict(
        read_card(PRETRAINED / "cochcnn_default.safetensors")["dataset"]["train"]["spec"])
    assert shipped.name == "cochcnn-anechoic-office-2200x4" and shipped.interp == "barycentric"
    assert binaural_store.cochcnn_spec() == shipped
    assert binaural_store.cochcnn_spec(rooms=("anechoic", "office"), n_sounds=2200, per_sound=4).name == shipped.name
    for command in ("simulate", "train", "cues"):  # the defaults of every command: the shipped model's data
        ctx = main.commands["binaural"].commands[command].make_context(command, [])
        assert COCHCNN_OPTIONS.of(ctx) == shipped
    changes = [{"seed": 1}, {"duration": 0.5}, {"snr": None}, {"snr": (5.0, 30.0)}, {"kinds": ("speech",)},
               {"test_fraction": 0.3}, {"interp": "bilinear"}, {"level_db": (0.0, 0.0)}]
    names = [binaural_store.cochcnn_spec(**change).name for change in changes]
    assert len(set(names)) == len(changes)
    assert all(n.startswith("cochcnn-anechoic-office-2200x4-") and len(n) == len(shipped.name) + 11 for n in names)
    # rooms and counts are spelled out: no digest where the rest is the default
    assert binaural_store.cochcnn_spec(rooms=("anechoic",), n_sounds=6, per_sound=2).name == "cochcnn-anechoic-6x2"


def test_datasets_of_two_seeds_live_side_by_side(tmp_path):
    runner = CliRunner()
    tiny = ["binaural", "simulate", "--rooms", "anechoic", "--kinds", "white_burst,click_train", "--n-sounds", "4",
            "--per-sound", "1", "--duration", "0.05", "--no-noise", "--test-fraction", "0.5", "--split", "test",
            "--data", str(tmp_path)]
    paths = []
    for seed in ("0", "1"):
        result = runner.invoke(main, ["--threads", "1", *tiny, "--seed", seed])
        assert result.exit_code == 0, result.output
        paths.append(Path(result.stdout.strip()))
    assert paths[0] != paths[1] and all(p.is_dir() for p in paths)
    specs = [binaural_store.BinauralSpec.from_dict(json.loads(binaural_store.open_binaural(p).attrs["spec"]))
             for p in paths]
    assert [s.seed for s in specs] == [0, 1] and [p.parent.name for p in paths] == [s.name for s in specs]


# ------------------------------------------------------------------------------------ refused before rendering
@pytest.mark.parametrize("args, says", [
    (["binaural", "train", "--layers", "bogus"], "layer preset 'bogus' is unknown; allowed: net1, small"),
    (["binaural", "train", "--layers", "net1", "--duration", "0.05"], "leave no output at stage"),
    (["binaural", "train", "--n-sounds", "2"],
     "split 'test' of 'cochcnn-anechoic-office-2x4' holds no sounds (n_sounds=2, test_fraction=0.2); raise n_sounds "
     "or change test_fraction"),
    (["binaural", "train", "--interp", "cubic"], "interp='cubic' is not allowed; use one of nearest, bilinear, "
                                                 "barycentric"),
    (["binaural", "tfcnn", "probe", "--snr", "3"], "--snr 3 is not allowed; give each once, some of the test SNRs "
                                                   "-6, 0, 6 dB"),
    (["binaural", "tfcnn", "probe", "--snr", "0", "--snr", "0"], "--snr 0 is not allowed; give each once"),
    (["binaural", "tfcnn", "probe", "--option", "foo=1"], "option 'foo' is not allowed for method 'lrp' with "
                                                          "composite 'tfcnn'"),
    (["binaural", "tfcnn", "train", "--n-train", "1000000000"], "--n-train 1000000000 is not allowed; use an integer "
                                                                "in [1, 100000]"),
    (["binaural", "tfcnn", "train", "--test-per-azimuth", "100000"], "--test-per-azimuth 100000 is not allowed"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_a_bad_option_is_refused_before_anything_is_rendered(tmp_path, monkeypatch, args, says):
    assert says in _refused(tmp_path, monkeypatch, args)


# ------------------------------------------------------------------------------------ recorded specs and names
@pytest.mark.parametrize("cls, record, says", [
    (binaural_store.BinauralSpec, {"bogus": 1}, "a BinauralSpec has no field 'bogus'; allowed: name, rooms, "),
    (binaural_store.BinauralSpec, {"snr": [5.0, 20.0, 40.0]}, "snr=(5.0, 20.0, 40.0) is not allowed; use (low, high)"),
    (binaural_store.BinauralSpec, {"rooms": 5}, "rooms=5 is not allowed; give room names"),
    (binaural_store.BinauralSpec, {"kinds": "speech"}, "kinds='speech' is not allowed; give sound kinds"),
    (binaural_store.BinauralSpec, {"interp": ["bilinear"]}, "interp=('bilinear',) is not allowed"),
    (bast_scenes.BastSceneSpec, {"digest": "abc"}, "a BastSceneSpec has no field 'digest'"),
    (bast_scenes.BastSceneSpec, {"azimuths": [0, "90"]}, "azimuths=(0, '90') is not allowed; give distinct degrees"),
    (bast_scenes.BastSceneSpec, {"snr": [20.0]}, "snr=(20.0,) is not allowed; use (low, high) dB"),
    (bast_scenes.BastSceneSpec, {"level_db": [1.0, 2.0, 3.0]}, "level_db=(1.0, 2.0, 3.0) is not allowed"),
    (ipd_ild_scenes.SceneSpec, {"train_snr": [-10.0, 0.0, 30.0]}, "train_snr=(-10.0, 0.0, 30.0) is not allowed"),
    (ipd_ild_scenes.SceneSpec, {"test_snrs": 6}, "test_snrs=6 is not allowed; give finite dB values"),
    (ipd_ild_scenes.SceneSpec, {"azimuths": "left"}, "azimuths='left' is not allowed"),
    (ipd_ild_scenes.SceneSpec, {"test_fraction": "0.2"}, "test_fraction='0.2' is not allowed; use a number in (0, 1)"),
    (ipd_ild_scenes.SceneSpec, {"duration": "1"}, "duration='1' s is not allowed"),
    (cue_scenes.CueSceneSpec, {"snr": [15.0, 25.0, 40.0]}, "snr=(15.0, 25.0, 40.0) is not allowed"),
    (cue_scenes.CueSceneSpec, {"per_utterance": [18, 12]}, "per_utterance=(18, 12) is not allowed"),
    (cue_scenes.CueSceneSpec, {"noise_kinds": 5}, "noise_kinds=5 is not allowed"),
    (cue_scenes.CueSceneSpec, {"front_end": [1]}, "front_end=(1,) is not allowed"),
    (cue_scenes.CueSceneSpec, {"fs": "44100"}, "fs='44100' is not allowed"),
    (cue_scenes.CueSceneSpec, ["cuenet"], "a CueSceneSpec record must be a mapping of its fields"),
])
def test_a_recorded_spec_that_cannot_be_is_one_line_naming_the_field(cls, record, says):
    assert _one_line(cls.from_dict, record).startswith(says)


@pytest.mark.parametrize("cls", [binaural_store.BinauralSpec, bast_scenes.BastSceneSpec, ipd_ild_scenes.SceneSpec,
                                 cue_scenes.CueSceneSpec], ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", ["../../escaped", "", "/abs", "a/b", ".hidden", 5])
def test_a_scene_set_name_that_would_leave_the_data_root_is_refused(cls, name):
    assert "is not allowed; use 1 to 100 letters, digits" in _one_line(cls, name=name)


@pytest.mark.parametrize("make, fraction, says", [
    (cue_scenes.CueSceneSpec, 0.001, "test_fraction=0.001 leaves a split without utterances"),
    (cue_scenes.CueSceneSpec, 0.999, "test_fraction=0.999 leaves a split without utterances"),
    (ipd_ild_scenes.SceneSpec, 0.999, "test_fraction=0.999 leaves the training split without utterances"),
])
def test_a_test_share_that_empties_a_split_is_refused(make, fraction, says):
    assert _one_line(make, test_fraction=fraction).startswith(says)


def test_the_extreme_test_shares_that_leave_each_split_an_utterance_pass():
    assert len(cue_scenes.CueSceneSpec(test_fraction=0.002).utterances("test")) == 1  # 0.6 of the 300, rounded
    assert len(cue_scenes.CueSceneSpec(test_fraction=0.998).utterances("train")) == 1
    assert ipd_ild_scenes.utterance_split(ipd_ild_scenes.SceneSpec(test_fraction=0.998), 300)["train"].size == 1


def test_tfcnn_scene_sets_of_other_fields_get_their_own_folder():
    """Review: a card's spec with another duration and the defaults, each with --test-per-azimuth 2, shared a name."""
    from xai_loc.cli.tfcnn import _tfcnn_spec
    from xai_loc.data.ipd_ild_scenes import SceneSpec

    assert _tfcnn_spec().name == "tfcnn-n8000-t10-s0"  # the shipped model's data keep their folder
    assert _tfcnn_spec(test_per_azimuth=2).name == "tfcnn-n8000-t2-s0"
    other = _tfcnn_spec(SceneSpec(name="mine", duration=0.5, test_snrs=(0.0,)), test_per_azimuth=2)
    assert other.name.startswith("tfcnn-n8000-t2-s0-") and len(other.name) == len("tfcnn-n8000-t2-s0-") + 10
