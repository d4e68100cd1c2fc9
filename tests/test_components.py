"""Relevance shares on the simulator's components: the rendering adds up, known answers on constructed
models, the store's windows rendered again, and the command end to end."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

from xai_loc.acoustics.backends import simulate_rirs
from xai_loc.acoustics.render import COMPONENTS, render_components, render_windows
from xai_loc.acoustics.room import ShoeBox
from xai_loc.errors import InputError
from xai_loc.experiments.components import component_shares, energy_shares

ROOM = ShoeBox((8.0, 6.0, 4.0))
SOURCE = np.array([4.0, 3.0, 2.0])
MICS = np.array([[4.5, 3.0, 2.0], [4.0, 3.6, 2.0]])
WINDOW = 512


def _responses(convention: str = "gpurir"):
    full = simulate_rirs("torch", ROOM, SOURCE[None], MICS, 0.3, convention=convention)[0]
    direct = simulate_rirs("torch", ROOM, SOURCE[None], MICS, 0.3, convention=convention, max_order=0)[0]
    delays = np.linalg.norm(MICS - SOURCE, axis=1) / ROOM.c * ROOM.fs
    return full, direct, delays


@pytest.mark.parametrize("convention", ["gpurir", "pyroomacoustics"])
def test_components_add_up_to_the_rendered_windows(convention):
    full, direct, delays = _responses(convention)
    speech = np.random.default_rng(0).standard_normal(6000)
    windows = render_windows(convention, speech, full, 10.0, np.random.default_rng(7), WINDOW)
    parts = render_components(convention, speech, full, direct, delays, 10.0, np.random.default_rng(7), WINDOW,
                              ROOM.fs)
    assert parts.shape == (len(COMPONENTS), *windows.shape) and parts.dtype == np.float64
    # the parts add up in float64 in another grouping than the window's sum: at most one float32 rounding apart
    np.testing.assert_allclose(parts.sum(0), windows, rtol=0, atol=2.0**-24 * np.abs(windows).max())
    # the direct part is the utterance through the direct path alone; the noise has the draw's level
    only_direct = render_components(convention, speech, direct, direct, delays, 200.0, np.random.default_rng(7),
                                    WINDOW, ROOM.fs)
    np.testing.assert_allclose(only_direct[0], parts[0], rtol=0, atol=1e-12)
    assert np.abs(only_direct[1:3]).max() < 1e-12  # a response without reflections has no early or late part


def test_early_part_ends_at_the_gate():
    full, direct, delays = _responses()
    click = np.zeros(4 * WINDOW)
    click[0] = 1.0
    parts = render_components("gpurir", click, full, direct, delays, 200.0, np.random.default_rng(0), 4 * WINDOW,
                              ROOM.fs, early_end=0.02)
    gate = delays + 0.02 * ROOM.fs
    for m in range(MICS.shape[0]):
        early, late = parts[1, 0, m], parts[2, 0, m]
        assert np.abs(early[int(np.ceil(gate[m])) + 1:]).max() < 1e-12  # FFT rounding only
        assert np.abs(late[: int(np.floor(gate[m]))]).max() < 1e-12
        assert np.abs(late).max() > 0 and np.abs(early).max() > 0


def test_a_model_that_reads_only_the_direct_sound_gets_all_the_share_there():
    """Known answer: a click, and a linear model reading only the samples where the direct arrival
    lies (the first reflection comes 10 ms later): gradient x input relevance R = w * x falls on
    the direct sound, in both splits; reading the samples after it, on the early reflections."""
    full, direct, delays = _responses()
    click = np.zeros(3 * WINDOW)
    click[0] = 1.0
    parts = render_components("gpurir", click, full, direct, delays, 60.0, np.random.default_rng(0), WINDOW,
                              ROOM.fs)
    weight = np.zeros(parts.shape[1:])
    weight[0, :, :90] = np.random.default_rng(1).uniform(0.5, 1.5, (MICS.shape[0], 90))
    relevance = weight * parts.sum(0)
    share, contribution = component_shares(relevance[:1], parts[:, :1])
    assert share[:, 0, 0].min() > 0.99  # both splits
    np.testing.assert_allclose(contribution[:, 0].sum(), 1.0, rtol=1e-12)
    assert contribution[0, 0] > 0.99
    # the same model reading only the samples after the direct arrival gets none there
    late_weight = np.zeros_like(weight)
    late_weight[0, :, 200:] = 1.0
    share, _ = component_shares((late_weight * parts.sum(0))[:1], parts[:, :1])
    assert share[:, 0, 0].max() < 0.01 and share[:, 1, 0].min() > 0.9


def test_linear_split_gives_each_components_own_output_for_a_linear_model():
    full, direct, delays = _responses()
    speech = np.random.default_rng(2).standard_normal(5000)
    parts = render_components("gpurir", speech, full, direct, delays, 5.0, np.random.default_rng(3), WINDOW, ROOM.fs)
    weight = np.random.default_rng(4).standard_normal(parts.shape[2:])
    relevance = weight * parts.sum(0)  # gradient x input of f(x) = <w, x>
    share, contribution = component_shares(relevance, parts)
    own = (weight * parts).sum((2, 3))  # f(x_c), window by window
    np.testing.assert_allclose(contribution, own / own.sum(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(share.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(energy_shares(parts).sum(0), 1.0, rtol=1e-12)


def test_relevance_that_cancels_has_no_contribution_ratio():
    parts = np.ones((2, 2, 1, 8))
    relevance = np.array([[[1.0, -1.0] * 4], [[1.0, -(1.0 - 1e-9)] * 4]])  # sums to 0 and to 4e-9 of 8
    _, contribution = component_shares(relevance, parts)
    assert np.isnan(contribution).all()  # no window's ratio is read from rounding noise
    _, contribution = component_shares(np.abs(relevance), parts)
    np.testing.assert_allclose(contribution, 0.5)  # each of two equal components: half


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    from xai_loc.data.scene import paper_scene
    from xai_loc.data.store import simulate_dataset

    return simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=tmp_path_factory.mktemp("components-data"),
                            n_sources=2)


@pytest.fixture(scope="module")
def store(store_path):
    from xai_loc.data.store import open_signals

    return open_signals(store_path)


def test_store_windows_are_rendered_again_exactly_and_a_foreign_corpus_is_refused(store):
    from xai_loc.acoustics.speech import SpeechCorpus
    from xai_loc.data.components import store_components

    sources = np.unique(store["source_id"].values)
    parts = store_components(store, sources)
    np.testing.assert_array_equal(parts.sum(0).astype(np.float32), store["signals"].values)
    other = SpeechCorpus.shipped()
    other.name = "another corpus"
    with pytest.raises(InputError, match="another corpus"):
        store_components(store, sources[:1], corpus=other)
    tampered = store.copy()
    tampered.attrs = {**store.attrs, "snr": 3.0}
    with pytest.raises(InputError, match="differ from the stored"):
        store_components(tampered, sources[:1])


def test_scene_of_checks_the_stored_description_against_its_recorded_digest(store):
    """A store written before rooms kept one type for fs and c (``c=343`` digested as an int) stays readable;
    a description changed after the store was written is refused."""
    import json

    from xai_loc.data.components import scene_of
    from xai_loc.data.spec import spec_digest

    spec, config = json.loads(store.attrs["scene"]), json.loads(store.attrs["config"])
    assert scene_of(store).digest() == config["scene_digest"]
    old = store.copy()
    spec_old = {**spec, "room": {**spec["room"], "c": 343}}  # as the earlier version wrote c=343
    old.attrs = {**store.attrs, "scene": json.dumps(spec_old),
                 "config": json.dumps({**config, "scene_digest": spec_digest(spec_old)})}
    assert spec_digest(spec_old) != config["scene_digest"]
    assert scene_of(old).room.c == 343.0
    tampered = store.copy()
    tampered.attrs = {**store.attrs, "scene": json.dumps({**spec, "room": {**spec["room"], "c": 340.0}})}
    with pytest.raises(InputError, match="scene attributes do not match its digest"):
        scene_of(tampered)


def test_components_command_end_to_end_and_figures_redraw(tmp_path):
    from xai_loc.cli import main
    from xai_loc.models import build_model, save_checkpoint

    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("loccnn"), tmp_path / "loccnn.safetensors",
                           {"condition": {"t60": 0.15, "snr": 25.0}})
    out = tmp_path / "res"
    runner = CliRunner()
    args = ["--threads", "1", "components", "--checkpoint", str(ckpt), "--sources", "1", "--methods",
            "input_x_gradient,saliency", "--batch-size", "8", "--data", str(tmp_path / "data"), "--out", str(out)]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "model-free reference" in result.output and "not x * gradient: n/a" in result.output
    ds = xr.open_dataset(out / "components.nc")
    assert ds["share"].dims == ("model", "method", "ordering", "split", "component")
    assert list(ds["component"].values) == list(COMPONENTS)
    np.testing.assert_allclose(ds["share"].sel(split="power").sum("component").values, 1.0, rtol=1e-9)
    np.testing.assert_allclose(ds["share"].sel({"split": "linear", "method": "input_x_gradient"}).sum("component"), 1.0,
                               rtol=1e-9)
    assert np.isnan(ds["share"].sel({"split": "linear", "method": "saliency"})).all()  # R / x is no gradient there
    np.testing.assert_allclose(ds["reference_share"].sum("component").values, 1.0, rtol=1e-9)
    np.testing.assert_allclose(ds["energy_share"].sum().item(), 1.0, rtol=1e-9)
    for name in ("components.md", "components.tex", "components.png", "components.pdf"):
        assert (out / name).stat().st_size > 100
    assert "explain_seconds" in (out / "components.timing.json").read_text()
    ds.close()
    (out / "components.png").unlink()
    result = runner.invoke(main, ["figures", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "components.png").exists()
    bad = runner.invoke(main, [*args[:-2], "--out", str(tmp_path / "bad"), "--early-end", "-1"])
    assert bad.exit_code == 2 and "--early-end" in bad.output and not (tmp_path / "bad").exists()


def test_linear_split_is_exact_only_for_input_times_gradient_methods():
    from xai_loc.experiments.components import linear_split_exact

    assert linear_split_exact("input_x_gradient", "none") and linear_split_exact("integrated_gradients", "none")
    assert not linear_split_exact("saliency", "none") and not linear_split_exact("occlusion", "none")
    assert not linear_split_exact("lrp", "paper", {"first_rule": "wsquare"})
    assert linear_split_exact("lrp", "paper", {"first_rule": "epsilon"})
    assert not linear_split_exact("lrp", "epsilon_plus_flat", {}) and linear_split_exact("lrp", "epsilon", {})


def test_a_diffuse_tail_counts_as_late_reverberation():
    full, direct, delays = _responses()
    click = np.zeros(4 * WINDOW)
    click[0] = 1.0
    parts = render_components("gpurir", click, full, direct, delays, 200.0, np.random.default_rng(0), 4 * WINDOW,
                              ROOM.fs, late_start=300.0)
    assert np.abs(parts[1, 0, :, 302:]).max() < 1e-12 and np.abs(parts[2, 0, :, 302:]).max() > 0


def test_contributions_through_the_explainer_equal_each_components_own_output(store, store_path):
    """Known answer through the whole experiment: for f(x) = <w, x>, gradient x input of the target x
    splits linearly into <w, x_c>, window by window."""
    from torch import nn

    from xai_loc.data.components import store_components
    from xai_loc.experiments.components import run_components

    shape = store["signals"].shape[1:]
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), 3, bias=False)).double()
    ds = run_components({"linear": model.float()}, store_path, methods=["input_x_gradient"], target="x",
                        randomized_baseline=False, n_sources=1, n_boot=50)
    source = int(ds["source"].values[0])
    parts = store_components(store.isel(window=np.flatnonzero(store["source_id"].values == source)), [source])
    weight = model[1].weight.detach().double().numpy()[0].reshape(shape)
    own = (weight * parts).sum((2, 3))  # (component, window)
    expected = (own / own.sum(0)).mean(1)
    found = ds["contribution"].sel({"model": "linear", "method": "input_x_gradient", "ordering": "relevance"})
    np.testing.assert_allclose(found.values, expected, rtol=1e-3, atol=1e-4)


def test_a_plain_store_is_read_without_dask():
    """The GPU machine has no dask: components reads a store's rows without it (xai_loc.cluster.load_here)."""
    code = ("import sys; sys.modules['dask'] = None  # import dask fails from here on\n"
            "import numpy as np, xarray as xr\n"
            "from xai_loc.cluster import load_here\n"
            "ds = xr.Dataset({'s': (('w', 't'), np.arange(6.0).reshape(2, 3))}, coords={'source_id': ('w', [1, 2])})\n"
            "print(load_here(ds.isel(w=[1]))['s'].values.tolist(), load_here(ds['source_id']).values.tolist())")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[[3.0, 4.0, 5.0]] [1, 2]"
