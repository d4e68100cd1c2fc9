"""The paper preset, user scenes, and dataset stores: counts, determinism, resume, bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import xai_loc.data.store as store
from xai_loc.acoustics.conventions import rir_length
from xai_loc.acoustics.speech import SpeechCorpus
from xai_loc.data.scene import Scene, load_scene, paper_scene
from xai_loc.errors import InputError


@pytest.fixture(scope="module")
def corpus():
    return SpeechCorpus.shipped()


def test_paper_preset_counts_and_geometry():
    scene = paper_scene()
    assert scene.sources.shape == (65 * 65, 3)
    assert {k: len(v) for k, v in scene.splits.items()} == {"train": 3152, "val": 788, "test": 285}
    ids = np.concatenate(list(scene.splits.values()))
    assert len(np.unique(ids)) == 4225
    test = scene.sources[scene.splits["test"]]
    assert np.all((test[:, 0] > 1.45) & (test[:, 0] < 1.95) & (test[:, 1] > 5.25) & (test[:, 1] < 5.75))
    np.testing.assert_allclose(scene.mics[[0, -1], 0], [0.575, 2.825])
    assert np.all(scene.mics[:, 1] == 7.0) and np.all(scene.mics[:, 2] == 1.2)
    np.testing.assert_allclose(np.diff(scene.mics[:, 0]), 0.15)
    assert scene.sources[:, 0].min() == pytest.approx(0.825) and scene.sources[:, 0].max() == pytest.approx(2.575)
    assert 1.0 <= scene.sources[:, 2].min() and scene.sources[:, 2].max() <= 1.5
    assert paper_scene().digest() == scene.digest()


def test_scene_from_toml(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text(
        'name = "lab"\nwindow = 1024\n[room]\nsize = [5.0, 4.0, 3.0]\n'
        '[array]\nlinear = { n = 4, spacing = 0.1, center = [2.5, 3.5, 1.2], axis = 0 }\n'
        '[sources]\npositions = [[1.0, 1.0, 1.5], [2.0, 1.5, 1.5], [3.0, 1.0, 1.5], [4.0, 1.0, 1.5]]\n'
        '[splits]\ntest = [0, 1]\ntrain = [2]\nval = [3]\n')
    scene = load_scene(path)
    assert scene.name == "lab" and scene.window == 1024 and scene.mics.shape == (4, 3)
    assert scene.source_ids("test").tolist() == [0, 1]
    path.write_text(path.read_text().replace("4.0, 1.0, 1.5", "6.0, 1.0, 1.5"))
    with pytest.raises(InputError, match="outside the room"):
        load_scene(path)
    with pytest.raises(InputError, match="neither a built-in"):
        load_scene("nowhere")


def test_asking_for_at_least_the_whole_split_is_the_split(tmp_path, corpus):
    path = tmp_path / "lab.toml"
    path.write_text(
        'name = "lab"\nwindow = 1024\n[room]\nsize = [5.0, 4.0, 3.0]\n'
        '[array]\nlinear = { n = 2, spacing = 0.1, center = [2.5, 3.5, 1.2], axis = 0 }\n'
        '[sources]\npositions = [[1.0, 1.0, 1.5], [2.0, 1.5, 1.5], [3.0, 1.0, 1.5]]\n'
        '[splits]\ntest = [0, 1]\ntrain = [2]\nval = []\n')
    scene = load_scene(path)
    sim = {"root": tmp_path / "d", "corpus": corpus, "progress": False}
    one = store.simulate_dataset(scene, "test", 0.15, 25.0, n_sources=1, **sim)
    whole = store.simulate_dataset(scene, "test", 0.15, 25.0, n_sources=5, **sim)
    assert one.name == "test-n1.zarr" and whole.name == "test.zarr"  # not test-n2 nor test-n5
    assert store.simulate_dataset(scene, "test", 0.15, 25.0, n_sources=2, **sim) == whole
    assert store.simulate_dataset(scene, "test", 0.15, 25.0, **sim) == whole
    assert set(store.open_signals(whole).source_id.values.tolist()) == {0, 1}
    assert sorted(p.name for p in whole.parent.iterdir()) == ["test-n1.zarr", "test.zarr"]


def _simulate(root, **kw):
    args = {"split": "test", "t60": 0.15, "snr": 20.0, "root": root, "n_sources": 3, "progress": False}
    args.update(kw)
    return store.simulate_dataset(paper_scene(), args.pop("split"), args.pop("t60"), args.pop("snr"), **args)


def test_source_subsets_are_a_seeded_spread_that_nests():
    test = paper_scene().splits["test"]
    small, large = store.subset_ids(test, 20), store.subset_ids(test, 60)
    assert np.array_equal(small, store.subset_ids(test, 20)) and np.all(np.diff(small) > 0)
    assert set(small) <= set(large) and set(small) <= set(test.tolist())
    # spread over the whole 0.5 x 0.5 m square, not a strip of the grid's first rows
    xy = paper_scene().sources[small, :2]
    all_xy = paper_scene().sources[test, :2]
    for k in range(2):
        lo, hi = np.quantile(all_xy[:, k], [0.25, 0.75])
        assert (xy[:, k] < lo).any() and (xy[:, k] > hi).any()
    assert np.array_equal(store.subset_ids(test, 10_000), test)


def test_store_content_noise_level_and_labels(tmp_path, corpus):
    path = _simulate(tmp_path, corpus=corpus)
    ds = store.open_signals(path)
    assert path.name == "test-n3.zarr" and not path.with_name(path.name + ".partial").exists()
    assert ds.signals.dims == ("window", "mic", "time") and ds.sizes["mic"] == 16 and ds.sizes["time"] == 5120
    scene = paper_scene()
    ids = store.subset_ids(scene.splits["test"], 3)
    assert set(ds.source_id.values.tolist()) == set(ids.tolist())
    for sid in ids:
        sel = ds.source_id.values == sid
        np.testing.assert_allclose(ds.source_position.values[sel], np.repeat(scene.sources[[sid]], sel.sum(), 0))
        assert ds.window_index.values[sel].tolist() == list(range(sel.sum()))
        n_rir = rir_length("gpurir", 0.15, 16000)  # the full convolution: utterance + RIR - 1 samples
        n_expected = (len(corpus.load(str(ds.speech_id.values[sel][0]))) + n_rir - 1) // 5120
        assert sel.sum() == n_expected
    attrs = json.loads(ds.attrs["config"])
    assert attrs["t60"] == 0.15 and attrs["snr"] == 20.0 and ds.attrs["xai_loc_version"]
    assert json.loads(ds.attrs["rendered_on"]) == ["cpu"]
    np.testing.assert_allclose(ds.mic_position.values, scene.mics)


def test_same_seed_same_bytes_other_seed_other_noise(tmp_path, corpus):
    a = store.open_signals(_simulate(tmp_path / "a", corpus=corpus)).signals.values
    b = store.open_signals(_simulate(tmp_path / "b", corpus=corpus)).signals.values
    c = store.open_signals(_simulate(tmp_path / "c", corpus=corpus, seed=1)).signals.values
    assert np.array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def _interrupted(root, corpus, at: int, monkeypatch):
    """Simulate the 3-source test split into ``root``, interrupted as source number ``at`` is rendered;
    return the real renderer (the patched one stays in place)."""
    real = store._render_source
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "_render_source", dying)
    with pytest.raises(KeyboardInterrupt):
        _simulate(root, corpus=corpus)
    return real


def test_resume_after_interruption_gives_identical_store(tmp_path, corpus, monkeypatch):
    ref_ds = store.open_signals(_simulate(tmp_path / "ref", corpus=corpus))
    reference, ref_ids = ref_ds.signals.values, ref_ds.source_id.values
    real = _interrupted(tmp_path / "run", corpus, 3, monkeypatch)
    final = store.dataset_path(tmp_path / "run", paper_scene(), 0.15, 20.0, "test", 3)
    assert not final.exists()  # never reads as complete
    assert final.with_name(final.name + ".partial").exists()
    written = json.loads(final.with_name(final.name + ".progress.json").read_text())["windows_written"]
    first_two = store.subset_ids(paper_scene().splits["test"], 3)[:2]
    assert written == int(np.isin(ref_ids, first_two).sum())  # both finished sources, nothing more
    with pytest.raises(InputError, match="unfinished"):
        store.open_signals(final.with_name(final.name + ".partial"))
    monkeypatch.setattr(store, "_render_source", real)
    rendered = []
    monkeypatch.setattr(store, "_render_source", lambda *a, **k: rendered.append(a[1]) or real(*a, **k))
    resumed = store.open_signals(_simulate(tmp_path / "run", corpus=corpus)).signals.values
    assert np.array_equal(resumed, reference)
    assert len(rendered) < 3  # finished sources were not redone


def test_a_store_resumed_on_another_device_says_so(tmp_path, corpus, monkeypatch):
    import xai_loc.runtime

    monkeypatch.setattr(store, "_render_source", _interrupted(tmp_path, corpus, 2, monkeypatch))
    # the resumed part is rendered on the CPU still; only the device's name is another
    monkeypatch.setattr(xai_loc.runtime, "device_name", lambda device, index=True: "cuda (Test GPU)")
    with pytest.warns(UserWarning, match=r"begun on cpu with cuda \(Test GPU\).*not bit for bit"):
        path = _simulate(tmp_path, corpus=corpus)
    ds = store.open_signals(path)
    assert json.loads(ds.attrs["rendered_on"]) == ["cpu", "cuda (Test GPU)"]
    from xai_loc.models.evaluation import WindowSet

    assert WindowSet(path).describe()["rendered_on"] == ["cpu", "cuda (Test GPU)"]


def test_existing_store_with_other_config_is_refused(tmp_path, corpus):
    path = _simulate(tmp_path, corpus=corpus, rir_options={"mode": "ism"})
    # the same data asked for with the default spelled out or left out is the same store
    assert _simulate(tmp_path, corpus=corpus) == path
    with pytest.raises(InputError, match="different configuration"):
        _simulate(tmp_path, corpus=corpus, seed=5)
    with pytest.raises(InputError, match="different configuration"):
        _simulate(tmp_path, corpus=corpus, rir_options={"mode": "hybrid"})


@pytest.mark.parametrize("kw, match", [
    ({"t60": -1.0}, "T60=-1.0"),
    ({"snr": float("inf")}, "SNR=inf"),
    ({"split": "dev"}, "allowed: train, val, test, all"),
    ({"backend": "odeon"}, "allowed: torch"),
    ({"n_sources": 0}, "sources=0"),
])
def test_bad_input_writes_nothing(tmp_path, kw, match, corpus):
    with pytest.raises(InputError, match=match):
        _simulate(tmp_path, corpus=corpus, **kw)
    assert not any(tmp_path.iterdir())


def test_user_scene_with_other_window_and_array(tmp_path, corpus):
    from xai_loc.acoustics.room import ShoeBox

    scene = Scene("small", ShoeBox((4.0, 5.0, 3.0)), np.array([[1.0, 4.0, 1.2], [1.2, 4.0, 1.2], [1.4, 4.0, 1.2]]),
                  np.array([[2.0, 2.0, 1.5], [3.0, 2.5, 1.5]]), {"test": [0, 1]}, window=2048)
    path = store.simulate_dataset(scene, "test", 0.2, 30.0, root=tmp_path, corpus=corpus, progress=False)
    ds = xr.open_zarr(path)
    assert ds.signals.shape[1:] == (3, 2048) and np.isfinite(ds.signals.values).all()
    assert path.parent.name == "t60-0.2_snr-30"


def test_white_noise_is_at_the_snr_of_microphone_zero():
    from xai_loc.acoustics.render import add_white_noise, cut_windows

    rng = np.random.default_rng(0)
    clean = np.stack([np.sin(np.arange(200_000) * 0.01) * g for g in (1.0, 0.3, 2.0)])
    noisy = add_white_noise(clean, 10.0, rng)
    noise = noisy - clean
    assert 10 * np.log10(np.mean(clean[0] ** 2) / np.mean(noise**2)) == pytest.approx(10.0, abs=0.05)
    assert np.mean(noise[1] ** 2) == pytest.approx(np.mean(noise[2] ** 2), rel=0.02)  # same level on every mic
    win = cut_windows(noisy, 5120)
    assert win.shape == (200_000 // 5120, 3, 5120)
    np.testing.assert_array_equal(win[2, 1], noisy[1, 2 * 5120 : 3 * 5120])


def test_exact_zeros_are_not_read_back_as_missing(tmp_path, corpus):
    """Regression: a fill value of 0 made xarray mask every exact 0.0 sample as NaN."""
    import zarr

    path = _simulate(tmp_path, corpus=corpus, n_sources=1)
    zarr.open_group(path, mode="a", zarr_format=2)["signals"][0, 0, :10] = 0.0
    values = xr.open_zarr(path).signals.isel(window=0, mic=0).values
    assert np.all(values[:10] == 0.0) and np.isfinite(values).all()


def test_two_processes_asking_for_one_store_both_get_it_whole(tmp_path):
    """The second process waits for the first's writer lock, then reuses the finished store."""
    code = (
        "import sys; from xai_loc.data import store; from xai_loc.data.scene import paper_scene; "
        "print(store.simulate_dataset(paper_scene(), 'test', 0.15, 20.0, root=sys.argv[1], n_sources=2, "
        "progress=False))"
    )
    env = {**os.environ, "XAI_LOC_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    paths = {out.strip() for out, _ in results}
    assert len(paths) == 1
    path = Path(paths.pop())
    assert not np.isnan(store.open_signals(path).signals.values).any()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no partial, progress or lock left
