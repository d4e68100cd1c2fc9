"""Scenes: the paper's grid order and split (against scikit-learn, recorded), the convention a scene
carries, and every malformed scene file or name refused with one line."""
import json
from pathlib import Path

import numpy as np
import pytest

from xai_loc.data.scene import Scene, load_scene, paper_scene, train_test_split_ids
from xai_loc.errors import InputError

#: Recorded once with scikit-learn 1.9.1 running the paper's params.py geometry (then uninstalled):
#: train_test_split(test_size=0.2, random_state=5000) over the grid order of params.py.
SKLEARN = json.loads((Path(__file__).parent / "data" / "paper_split_sklearn.json").read_text())

GOOD = {
    "name": '"lab"',
    "window": "1024",
    "room": "[room]\nsize = [5.0, 4.0, 3.0]\n",
    "array": "[array]\nlinear = { n = 4, spacing = 0.1, center = [2.5, 3.5, 1.2], axis = 0 }\n",
    "sources": "[sources]\npositions = [[1.0, 1.0, 1.5], [2.0, 1.5, 1.5], [3.0, 1.0, 1.5], [4.0, 1.0, 1.5]]\n",
    "splits": "[splits]\ntest = [0, 1]\ntrain = [2]\nval = [3]\n",
}


def _toml(tmp_path, filename="lab.toml", **changes):
    parts = {**GOOD, **changes}
    text = "".join(f"{key} = {parts[key]}\n" for key in ("name", "window", "convention") if parts.get(key))
    text += "".join(parts[key] for key in ("room", "array", "sources", "splits") if parts.get(key))
    path = tmp_path / filename
    path.write_text(text)
    return path


def test_paper_grid_is_in_the_order_of_params_py():
    scene = paper_scene()
    np.testing.assert_allclose(scene.sources[:3], SKLEARN["first_positions"])  # x varies fastest, heights in order
    np.testing.assert_allclose(scene.sources[SKLEARN["test"][:3]], SKLEARN["test_positions_first3"])
    assert np.all(np.diff(scene.sources[:65, 0]) > 0) and np.all(scene.sources[:65, 1] == 4.5)


def test_paper_split_is_scikit_learns():
    scene = paper_scene()
    assert scene.splits["test"].tolist() == SKLEARN["test"]
    assert scene.splits["train"].tolist() == sorted(SKLEARN["train"])
    assert scene.splits["val"].tolist() == sorted(SKLEARN["val"])
    # the stand-in itself, element by element in scikit-learn's order
    rest = np.setdiff1d(np.arange(65 * 65), SKLEARN["test"])
    train, val = train_test_split_ids(rest, test_size=0.2, random_state=5000)
    assert train.tolist() == SKLEARN["train"] and val.tolist() == SKLEARN["val"]
    assert (len(train), len(val)) == (3152, 788)


def test_train_test_split_sizes_round_the_test_part_up():
    train, test = train_test_split_ids(np.arange(11), test_size=0.2, random_state=0)
    assert (len(train), len(test)) == (8, 3)  # ceil(2.2) = 3
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(11))


def test_convention_is_part_of_the_scene_and_its_digest(tmp_path):
    gp, pra = paper_scene(), paper_scene("pyroomacoustics")
    assert gp.convention == "gpurir" and pra.convention == "pyroomacoustics"
    assert gp.digest() != pra.digest() and gp.to_dict()["convention"] == "gpurir"
    assert gp.with_convention("pyroomacoustics").digest() == pra.digest()
    assert load_scene("paper", convention="pyroomacoustics").digest() == pra.digest()
    scene = load_scene(_toml(tmp_path, convention='"pyroomacoustics"'))
    assert scene.convention == "pyroomacoustics" and scene.window == 1024 and scene.mics.shape == (4, 3)
    assert load_scene(_toml(tmp_path)).convention == "gpurir"
    with pytest.raises(InputError, match="convention 'odeon' is unknown; allowed: gpurir, pyroomacoustics"):
        load_scene("paper", convention="odeon")


@pytest.mark.parametrize("change, match", [
    ({"room": '[room]\nsize = "abc"\n'}, r"room.size = 'abc' is not allowed; give three positive numbers"),
    ({"room": "[room]\nsize = ['a', 'b', 'c']\n"}, r"room.size = \['a', 'b', 'c'\] is not allowed"),
    ({"room": "[room]\nsize = [5.0, 0.0, 3.0]\n"}, r"room.size = \[5.0, 0.0, 3.0\] is not allowed; give three pos"),
    ({"room": "[room]\nsize = [5.0, -4.0, 3.0]\n"}, r"room.size = \[5.0, -4.0, 3.0\] is not allowed"),
    ({"room": "[room]\nsize = [5.0, 4.0]\n"}, r"room.size = \[5.0, 4.0\] is not allowed"),
    ({"room": "[room]\nsize = [5.0, 4.0, 3.0]\nfs = 0\n"}, r"room.fs = 0 is not allowed; give a positive integer"),
    ({"room": "[room]\nsize = [5.0, 4.0, 3.0]\nfs = 16000.5\n"}, r"room.fs = 16000.5 is not allowed"),
    ({"room": "[room]\nsize = [5.0, 4.0, 3.0]\nc = 'fast'\n"}, r"room.c = 'fast' is not allowed"),
    ({"room": "[room]\nsize = [5.0, 4.0, 3.0]\nc = -343.0\n"}, r"room.c = -343.0 is not allowed"),
    ({"array": "[array]\nlinear = { n = 'four', spacing = 0.1, center = [2.5, 3.5, 1.2] }\n"},
     r"array.linear.n = 'four' is not allowed; give a positive integer number of microphones"),
    ({"array": "[array]\nlinear = { n = 0, spacing = 0.1, center = [2.5, 3.5, 1.2] }\n"}, r"array.linear.n = 0"),
    ({"array": "[array]\nlinear = { n = 2.5, spacing = 0.1, center = [2.5, 3.5, 1.2] }\n"}, r"array.linear.n = 2.5"),
    ({"array": "[array]\nlinear = { n = true, spacing = 0.1, center = [2.5, 3.5, 1.2] }\n"},
     r"array.linear.n = True"),
    ({"array": "[array]\nlinear = { n = 4, spacing = -0.1, center = [2.5, 3.5, 1.2] }\n"},
     r"array.linear.spacing = -0.1 is not allowed; give a positive spacing"),
    ({"array": "[array]\nlinear = { n = 4, spacing = 0.1, center = [2.5, 3.5, 1.2], axis = 5 }\n"},
     r"array.linear.axis = 5 is not allowed; allowed: 0 \(x\), 1 \(y\), 2 \(z\)"),
    ({"array": "[array]\nlinear = { n = 4, spacing = 0.1, center = 'middle' }\n"}, r"array.linear.center = 'middle'"),
    ({"array": "[array]\nlinear = { n = 4, spacing = 0.1 }\n"}, r"lacks array.linear.center"),
    ({"array": "[array]\npositions = 'abc'\n"}, r"array.positions = 'abc' is not allowed; give a non-empty list"),
    ({"array": "[array]\npositions = [[1.0, 1.0]]\n"}, r"array.positions = \[1.0, 1.0\] is not allowed"),
    ({"array": "[array]\n"}, r"needs exactly one of 'linear' and 'positions'"),
    ({"array": "[array]\nlinear = { n = 4, spacing = 0.1, center = [9.0, 3.5, 1.2] }\n"}, r"outside the room"),
    ({"window": '"big"'}, r"window = 'big' is not allowed; give a positive integer number of samples"),
    ({"window": "0"}, r"window = 0 is not allowed"),
    ({"window": "-5"}, r"window = -5 is not allowed"),
    ({"window": "10.5"}, r"window = 10.5 is not allowed"),
    ({"sources": '[sources]\npositions = "abc"\n'}, r"sources.positions = 'abc' is not allowed; give a non-empty list"),
    ({"sources": "[sources]\npositions = []\n"}, r"sources.positions = \[\] is not allowed"),
    ({"sources": "[sources]\npositions = [[1.0, 'x', 1.0]]\n"}, r"sources.positions = \[1.0, 'x', 1.0\]"),
    ({"sources": "[sources]\n"}, r"lacks sources.positions"),
    ({"convention": '"odeon"'}, r"convention = 'odeon' is not allowed; allowed: gpurir, pyroomacoustics"),
    ({"convention": "3"}, r"convention = 3 is not allowed"),
    ({"splits": "[splits]\ntest = [0, 9]\n"},
     r"splits.test = \[0, 9\] is not allowed; give a list of source ids in 0..3"),
    ({"splits": "[splits]\ntest = 'all'\n"}, r"splits.test = 'all' is not allowed"),
    ({"splits": "[splits]\nfractions = [0.5, 0.5]\n"}, r"splits.fractions = \[0.5, 0.5\] is not allowed"),
    ({"splits": "[splits]\nfractions = [0.5, 0.3, 0.2]\nseed = 'x'\n"}, r"splits.seed = 'x' is not allowed"),
    ({"splits": "[splits]\ntest = [0]\nseed = 1\n"}, r"either id lists"),
    ({"room": "[room]\nsize = [5.0, 4.0, 3.0]\nheight = 2\n"}, r"\[room\] has the unknown entry 'height'"),
    ({"room": ""}, r"lacks the table \[room\]"),
    ({"room": "room = 5\n"}, r"room = 5 is not allowed; give a table"),
    ({"room": "[room]\nsize = [5.0, 4.0, 3.0]\nc = 1e12\n"}, r"c=1000000000000.0 is not allowed; use a speed of sound"),
])
def test_malformed_scene_file_is_one_line_naming_the_field(tmp_path, change, match):
    path = _toml(tmp_path, **change)
    with pytest.raises(InputError, match=match) as err:
        load_scene(path)
    assert "\n" not in str(err.value) and "lab.toml" in str(err.value)


@pytest.mark.parametrize("seed", [2**53 + 1, 2**63 - 1])
def test_a_split_seed_beyond_the_floats_integers_is_taken_as_it_is(tmp_path, seed):
    from xai_loc.data.scene import random_split

    path = _toml(tmp_path, splits=f"[splits]\nfractions = [0.5, 0.25, 0.25]\nseed = {seed}\n")
    splits = load_scene(path).splits
    expected = random_split(4, [0.5, 0.25, 0.25], seed)
    assert all(np.array_equal(splits[k], expected[k]) for k in ("train", "val", "test"))


def test_unknown_top_level_entry_is_refused(tmp_path):
    path = _toml(tmp_path)
    path.write_text('convetion = "gpurir"\n' + path.read_text())
    with pytest.raises(InputError, match="unknown entry 'convetion'; allowed: name, window, convention"):
        load_scene(path)


@pytest.mark.parametrize("name", ["/absolute/elsewhere", "../../x", "", "a/b", "a..b", "..", ".hidden", "a b",
                                  "x" * 101, "C:\\\\evil", "tab\\t"])
def test_scene_names_that_would_leave_the_data_root_are_refused(tmp_path, name):
    path = _toml(tmp_path, name=json.dumps(name))
    with pytest.raises(InputError, match="name .* is not allowed; use 1 to 100 letters, digits") as err:
        load_scene(path)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="is not allowed"):
        Scene(name, paper_scene().room, paper_scene().mics, paper_scene().sources[:2])


@pytest.mark.parametrize("name", ["lab", "lab-2", "a.b", "A_1", "x" * 100])
def test_good_scene_names_pass(tmp_path, name):
    assert load_scene(_toml(tmp_path, name=json.dumps(name))).name == name


def test_name_from_the_file_name_is_validated_too(tmp_path):
    assert load_scene(_toml(tmp_path, filename="room-1.toml", name=None)).name == "room-1"
    with pytest.raises(InputError, match="the scene name \\(from the file name\\) 'my room' is not allowed"):
        load_scene(_toml(tmp_path, filename="my room.toml", name=None))


def test_load_scene_refuses_empty_missing_and_foreign_paths(tmp_path):
    for bad, match in [("", "scene '' is empty"), ("   ", "is empty"),
                       (str(tmp_path / "nowhere.toml"), "does not exist"),
                       ("nowhere", "neither a built-in"),
                       (str(tmp_path), "is a folder")]:
        with pytest.raises(InputError, match=match) as err:
            load_scene(bad)
        assert "\n" not in str(err.value)
    (tmp_path / "bad.toml").write_text("name = \n[room")
    with pytest.raises(InputError, match="is not valid TOML") as err:
        load_scene(tmp_path / "bad.toml")
    assert "\n" not in str(err.value)


def test_random_split_cuts_at_the_cumulative_shares():
    from xai_loc.data.scene import random_split

    for n, fractions, sizes in [(5, [0.5, 0.5, 0.0], (2, 3, 0)), (10, [0.8, 0.1, 0.1], (8, 1, 1)),
                                (7, [0.0, 0.0, 1.0], (0, 0, 7)), (3, [1 / 3, 1 / 3, 1 / 3], (1, 1, 1))]:
        split = random_split(n, fractions, seed=4)
        assert tuple(split[k].size for k in ("train", "val", "test")) == sizes
        assert sorted(np.concatenate(list(split.values())).tolist()) == list(range(n))  # each id once
