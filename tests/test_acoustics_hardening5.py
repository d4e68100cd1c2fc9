"""Fifth acoustics review: a float64 hybrid response had another diffuse tail than the float32 one (torch draws other
numbers per dtype); a store's "direct sound after t_max" named the source's row in the split, not its id in the
scene, and gave no position; the pyroomacoustics backend checked nothing before the first source; a tiny room passed
every check and then ran for hours on the CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import one_line

from xai_loc.acoustics import ism
from xai_loc.acoustics.backends import TRAITS, check_rirs
from xai_loc.acoustics.room import ShoeBox, linear_array
from xai_loc.data import simulate_dataset
from xai_loc.data.scene import load_scene, paper_scene

PAPER = ShoeBox((3.6, 8.2, 2.4))
MICS4 = linear_array(4, 0.15, (1.7, 7.0, 1.2))
#: A 30 m corridor whose test split holds sources 0 and 2; source 2 is 29 m from microphone 0 (0.0845 s).
CORRIDOR = """name = "far"
window = 1024
convention = "pyroomacoustics"
[room]
size = [30.0, 1.0, 1.0]
[array]
positions = [[0.5, 0.5, 0.5], [0.6, 0.5, 0.5]]
[sources]
positions = [[1.5, 0.5, 0.6], [2.5, 0.5, 0.6], [29.5, 0.5, 0.6]]
[splits]
test = [0, 2]
train = [1]
"""
FAR_SAYS = ("source 2 at (29.5, 0.5, 0.6) m is 29 m from microphone 0: its direct sound arrives at 0.0845486 s, "
            "not before t_max=0.05 s; give t_max, or the T60 it defaults to, of at least 0.0846 s, or move the source "
            "closer")


@pytest.fixture
def no_response(monkeypatch):
    """Simulating a source's responses fails the test: a refusal must come before the first source."""
    def simulate(*args, **kwargs):
        raise AssertionError("a source was simulated before the split was refused")

    monkeypatch.setattr("xai_loc.data.store.source_rirs", simulate)


@pytest.fixture
def corridor(tmp_path):
    path = tmp_path / "far.toml"
    path.write_text(CORRIDOR)
    return load_scene(path)


def test_a_float64_hybrid_response_has_the_float32_tail():
    # was: the float64 tail drawn from other numbers, max difference ~15 times the tail's rms
    src = np.array([[1.6, 5.4, 1.25], [1.8, 5.6, 1.1]])
    r32, r64 = (ism.image_source_rirs(PAPER, src, MICS4, 0.3, mode="hybrid", seed=4, dtype=dt).double().numpy()
                for dt in (torch.float32, torch.float64))
    n_diff = round(0.3 / 4 * 16000)  # T60 / 4: the diffuse tail's first sample
    tail32, tail64 = r32[..., n_diff:], r64[..., n_diff:]
    rms = np.sqrt((tail64**2).mean())
    assert np.abs(tail32 - tail64).max() / rms < 1e-5
    assert np.abs(r32 - r64).max() / np.abs(r64).max() < 1e-6


def test_a_source_heard_after_t_max_is_named_by_its_row_and_position():
    from xai_loc.acoustics.room import SourceError

    src = np.array([[1.5, 0.5, 0.6], [29.5, 0.5, 0.6]])
    with pytest.raises(SourceError) as err:
        ism.check_geometry(ShoeBox((30.0, 1.0, 1.0)), src, [[0.5, 0.5, 0.5], [0.6, 0.5, 0.5]], 0.05)
    assert str(err.value).startswith("source 1 at (29.5, 0.5, 0.6) m is 29 m from microphone 0: its direct sound")
    assert str(err.value.naming([0, 2])) == FAR_SAYS


@pytest.mark.parametrize("backend", ["torch", "pyroomacoustics"])
def test_a_store_names_the_scene_id_of_a_source_heard_after_t_max(tmp_path, corridor, no_response, backend):
    # was: "source 1 is 29 m from microphone 0 ..." (its row in the split); pyroomacoustics: source 0 simulated first
    says = one_line(simulate_dataset, corridor, "test", 0.05, 10.0, root=tmp_path / "data", backend=backend,
                    progress=False)
    assert says == FAR_SAYS
    assert not (tmp_path / "data").exists()


def test_the_pyroomacoustics_backend_checks_its_convention_before_the_first_source(tmp_path, no_response):
    # was: 'simulate --backend pyroomacoustics' on the paper scene showed progress before this line
    says = one_line(simulate_dataset, paper_scene(), "test", 0.3, 10.0, root=tmp_path, n_sources=2,
                    backend="pyroomacoustics", progress=False)
    assert says == ("backend 'pyroomacoustics' keeps the sign of reflections and cannot follow convention 'gpurir'; "
                    "use backend 'torch' or convention 'pyroomacoustics'")
    assert list(tmp_path.iterdir()) == []


def test_the_pyroomacoustics_check_refuses_what_the_backend_refuses():
    args = (PAPER, [[1.6, 5.4, 1.25]], MICS4, 0.3)
    kw = {"convention": "pyroomacoustics"}
    assert check_rirs("pyroomacoustics", *args, **kw) is None
    assert one_line(check_rirs, "pyroomacoustics", *args, device="cuda", **kw) == (
        "backend 'pyroomacoustics' runs on the CPU only, not on device 'cuda'")
    assert one_line(check_rirs, "pyroomacoustics", *args, max_order=-1, **kw) == (
        "max_order=-1 is not allowed; use a non-negative integer")
    assert one_line(check_rirs, "pyroomacoustics", PAPER, [[1.6, 9.0, 1.25]], MICS4, 0.3, **kw) == (
        "source at (1.6, 9.0, 1.25) m is outside the room (3.6, 8.2, 2.4); positions must lie strictly inside (0, L) "
        "on each axis")
    assert TRAITS["pyroomacoustics"].check is not TRAITS["gpurir"].check


def test_a_tiny_room_is_refused_before_the_cpu_loop(monkeypatch):
    # was: a 1 cm room passed every check, then listed ~4.7e12 images for half a day
    tiny = ShoeBox((0.01, 0.01, 0.01))
    args = (tiny, [[0.003] * 3], [[0.006] * 3], 0.3)
    says = ("T60=0.3 s with t_max=0.3 s in room (0.01, 0.01, 0.01) needs about 4.7e+12 image sources x 1 "
            "microphone(s) = 4.7e+12 per source; at most 1e+11 run on the CPU (about 17 min per source): give a larger "
            "room, a shorter T60 or t_max, a max_order or mode 'hybrid'")
    assert one_line(ism.check_image_sources, *args) == says
    assert one_line(check_rirs, "torch", *args) == says
    monkeypatch.setattr(ism, "_exact_cpu", lambda *a, **k: pytest.fail("the CPU loop ran before the refusal"))
    assert one_line(ism.image_source_rirs, *args) == says
    assert ism.check_image_sources(*args, max_order=20) is None  # 1.2e4 images of at most 20 reflections
    # the paper room's 16 microphones at the longest T60 (10 s): about 3.9e10 pairs, below the bound
    mics = linear_array(16, 0.15, (1.7, 7.0, 1.2))
    reach = ism._exact_reach(160_000, 128.0, PAPER)[0]  # 10 s at 16 kHz, gpuRIR's 128-tap window
    assert ism._image_count(PAPER, mics, reach, None) * 16 / ism.MAX_CPU_PAIRS == pytest.approx(0.39, abs=0.01)
    assert ism.check_image_sources(PAPER, [[1.6, 5.4, 1.25]], mics, 10.0) is None



def test_the_image_count_refusals_advise_only_what_helps():
    """Final review: in hybrid mode the CPU bound advised mode 'hybrid' and never named t_diff; the memory bound of
    the other paths sent to convention 'gpurir' on the CPU where the CPU bound then refused it."""
    room, src, mics = ShoeBox((1, 1, 1)), [[0.3] * 3], linear_array(16, 0.02, (0.5, 0.6, 0.5))
    says = one_line(ism.check_image_sources, room, src, mics, 4.0, mode="hybrid", t_diff=3.9)
    assert says.endswith("at most 1e+11 run on the CPU (about 17 min per source): give a larger room, a shorter "
                         "t_diff or a max_order"), says
    says = one_line(ism.check_image_sources, room, src, mics, 4.0, convention="pyroomacoustics")
    assert says.endswith("at most 5e+07 fit in memory: give a shorter T60 or t_max, a max_order or mode 'hybrid'"), says
    says = one_line(ism.check_image_sources, ShoeBox((4, 5, 3)), [[1.0] * 3], [[2.0] * 3], 3.0,
                    convention="pyroomacoustics")
    assert says.endswith("or (on the CPU) convention 'gpurir'"), says


def test_binaural_room_responses_refuse_more_images_than_fit_in_memory(monkeypatch):
    """Final review: binaural_rirs listed every image at once with no bound (a 1 m room at T60 1 s: ~1.7e8 images,
    about 15 GB), though README says the paths that list images refuse more than 5e7."""
    from xai_loc.acoustics.binaural import Listener, binaural_rirs

    monkeypatch.setattr(ism, "_images", lambda *a, **k: pytest.fail("images listed before the refusal"))
    says = one_line(binaural_rirs, ShoeBox((1, 1, 1), fs=16000), Listener(position=(0.6, 0.5, 0.5)),
                    [[0.2, 0.5, 0.5]], 1.0)
    assert "image sources per source; at most 5e+07 fit in memory: give a larger room" in says, says


def test_the_pyroomacoustics_backend_refuses_more_images_than_fit_in_memory():
    """Final review: its Sabine reflection order in a 5 cm room (2910) would list ~3e10 images per source; only the
    geometry and the convention were checked up front."""
    says = one_line(TRAITS["pyroomacoustics"].check, ShoeBox((0.05, 0.05, 0.05)), [[0.02] * 3], [[0.03, 0.02, 0.02]],
                    0.3, convention="pyroomacoustics")
    assert says == ("backend 'pyroomacoustics' lists about 3.3e+10 image sources per source at T60=0.3 s in room "
                    "(0.05, 0.05, 0.05) (reflection order 2910); at most 5e+07 fit in memory: give a larger room, a "
                    "shorter T60 or a max_order, or use backend 'torch'")
    scene = paper_scene()
    assert TRAITS["pyroomacoustics"].check(scene.room, scene.sources[:1], scene.mics, 1.9,
                                           convention="pyroomacoustics")[1] == 1.9
    assert "reflection order" in one_line(TRAITS["pyroomacoustics"].check, scene.room, scene.sources[:1], scene.mics,
                                          2.0, convention="pyroomacoustics")
