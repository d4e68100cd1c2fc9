"""Simulation in blocks of sources on a device (issue 18): the torch rendering against NumPy's.

Off the CPU, ``simulate`` makes a block of sources' responses on the device and renders them
there (:func:`~xai_loc.acoustics.render.render_windows_batch`); on the CPU it renders source by
source in NumPy. The block path runs on CPU tensors too, so these tests force it on the CPU
(``store.renders_on_host`` patched) and compare it with the NumPy path on the same responses: the
windows agree to the rounding of float64 FFTs, far below float32's resolution.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import xai_loc.data.store as store
from xai_loc.acoustics.render import render_windows, render_windows_batch
from xai_loc.acoustics.speech import SpeechCorpus
from xai_loc.data.scene import paper_scene
from xai_loc.errors import InputError

T60, SNR = 0.15, 20.0


def _close(got: np.ndarray, ref: np.ndarray) -> None:
    """Equal up to a few float32 roundings of each window's peak (FFT libraries differ between CPUs)."""
    assert got.shape == ref.shape and got.dtype == ref.dtype == np.float32
    peak = np.abs(ref).max(axis=tuple(range(1, ref.ndim)), keepdims=True)
    assert np.all(np.abs(got - ref) <= 4e-7 * peak)


@pytest.mark.parametrize("convention", ["gpurir", "pyroomacoustics"])
def test_batch_rendering_equals_the_numpy_rendering(convention):
    rng = np.random.default_rng(3)
    speeches = [rng.standard_normal(n) for n in (5000, 3700, 6100)]  # lengths differ within a block
    rirs = (rng.standard_normal((3, 4, 800)) * np.exp(-np.arange(800) / 100.0)).astype(np.float32)
    got = render_windows_batch(convention, speeches, torch.from_numpy(rirs), SNR,
                               [np.random.default_rng([0, b, 1]) for b in range(3)], 512)
    for b, (speech, h) in enumerate(zip(speeches, rirs, strict=True)):
        ref = render_windows(convention, speech, h, SNR, np.random.default_rng([0, b, 1]), 512)
        assert isinstance(got[b], torch.Tensor) and got[b].dtype == torch.float32
        _close(got[b].numpy(), ref)
    alone = render_windows_batch(convention, speeches[1:2], torch.from_numpy(rirs[1:2]), SNR,
                                 [np.random.default_rng([0, 1, 1])], 512)
    assert torch.equal(alone[0], got[1])  # a source's windows do not depend on the sources rendered with it


def test_scatters_off_the_cpu_run_in_torchs_deterministic_mode_and_restore_it():
    from xai_loc.acoustics.ism import _in_fixed_order

    assert not torch.are_deterministic_algorithms_enabled()
    with _in_fixed_order(torch.device("meta")):  # any device but the CPU
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert not torch.are_deterministic_algorithms_enabled()
    with _in_fixed_order(torch.device("cpu")):  # the CPU's scatter is sequential: nothing switched
        assert not torch.are_deterministic_algorithms_enabled()


def test_deterministic_mode_holds_while_any_thread_asks_and_is_restored_after_the_last():
    """Two threads' blocks overlap (A enters, B enters, A leaves, B leaves): the mode stays on until B leaves,
    then goes back to what it was; a mode that was on already is left alone."""
    import threading

    from xai_loc.runtime import deterministic_algorithms

    entered, a_left, seen = threading.Event(), threading.Event(), []

    def a():
        with deterministic_algorithms():
            entered.set()
            b_inside.wait()
        a_left.set()

    def b():
        entered.wait()
        with deterministic_algorithms():
            b_inside.set()
            a_left.wait()
            seen.append(torch.are_deterministic_algorithms_enabled())  # A has left, B is inside

    b_inside = threading.Event()
    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert seen == [True] and not torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)  # strict, set by the user
    try:
        with deterministic_algorithms():
            assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.fixture(scope="module")
def corpus():
    return SpeechCorpus.shipped()


@pytest.fixture(scope="module")
def host_store(tmp_path_factory, corpus):
    return store.simulate_dataset(paper_scene(), "test", T60, SNR, root=tmp_path_factory.mktemp("host"),
                                  n_sources=3, corpus=corpus, progress=False)


@pytest.fixture
def blocks(monkeypatch):
    """The block path on the CPU, two sources a block (three sources: a full block and a short one)."""
    monkeypatch.setattr(store, "renders_on_host", lambda device: False)
    monkeypatch.setattr(store, "DEVICE_SOURCES", 2)


def test_block_store_equals_the_source_by_source_store(host_store, tmp_path, corpus, blocks):
    path = store.simulate_dataset(paper_scene(), "test", T60, SNR, root=tmp_path, n_sources=3, corpus=corpus,
                                  progress=False)
    host, block = store.open_signals(host_store), store.open_signals(path)
    for name in ("source_id", "window_index", "speech_id", "source_position"):
        np.testing.assert_array_equal(block[name].values, host[name].values)
    assert len(np.unique(host["source_id"].values)) == 3
    _close(block["signals"].values, host["signals"].values)

    split = store.simulate_windows(paper_scene(), "test", T60, SNR, n_sources=3, corpus=corpus, progress=False,
                                   workers=2)
    np.testing.assert_array_equal(split.signals.numpy(), block["signals"].values)  # the same path, bit for bit


def test_block_store_resumes_after_a_kill_without_loss_or_doubling(host_store, tmp_path, corpus, blocks,
                                                                   monkeypatch):
    real = store.render_windows_batch
    calls = []

    def dying(*args, **kwargs):
        calls.append(len(args[1]))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the second block: the first block's windows are on disk
        return real(*args, **kwargs)

    monkeypatch.setattr(store, "render_windows_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        store.simulate_dataset(paper_scene(), "test", T60, SNR, root=tmp_path, n_sources=3, corpus=corpus,
                               progress=False)
    path = store.simulate_dataset(paper_scene(), "test", T60, SNR, root=tmp_path, n_sources=3, corpus=corpus,
                                  progress=False)
    assert calls == [2, 1, 1]  # the finished block is not rendered again
    _close(store.open_signals(path)["signals"].values, store.open_signals(host_store)["signals"].values)


def test_block_windows_with_nan_or_silence_are_refused_naming_window_and_source(corpus, blocks, monkeypatch):
    real = store.render_windows_batch

    def spoiled(value):
        def render(*args, **kwargs):
            out = real(*args, **kwargs)
            out[-1][1] = value  # the second window of the block's last source
            return out
        return render

    first = store._job(paper_scene(), "test", T60, SNR, 3, corpus, 0, "torch", None).planned().plan.first_window
    for value, what in ((float("nan"), "came out with NaN or infinite samples"), (0.0, "came out all zero")):
        monkeypatch.setattr(store, "render_windows_batch", spoiled(value))
        with pytest.raises(InputError) as err:
            store.simulate_windows(paper_scene(), "test", T60, SNR, n_sources=3, corpus=corpus, progress=False)
        bad = int(first[1]) + 1  # blocks of two: the first block's last source is the second
        sid = int(store.subset_ids(paper_scene().splits["test"], 3)[1])
        assert str(err.value).startswith(f"in-memory test split (t60-{T60:g}_snr-{SNR:g}): window {bad} {what}")
        assert f"source {sid} got utterance" in str(err.value)


def test_components_on_the_device_path_equal_the_numpy_ones(host_store, monkeypatch):
    """``store_components`` and the components experiment, rendered and shared out with torch (forced
    on the CPU), against NumPy: the parts to float64 rounding, the shares to 1e-12."""
    from torch import nn

    from xai_loc.data import components as data_components
    from xai_loc.data.components import store_components
    from xai_loc.experiments.components import run_components

    ds = store.open_signals(host_store)
    sid = int(ds["source_id"].values[0])
    windows = ds.isel(window=np.flatnonzero(ds["source_id"].values == sid)).compute()
    shape = ds["signals"].shape[1:]
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), 3, bias=False))
    options = {"methods": ["input_x_gradient"], "target": "x", "n_sources": 1, "n_boot": 20, "batch_size": 4}
    ref_parts = store_components(windows, [sid])
    ref = run_components({"linear": model}, host_store, **options)

    monkeypatch.setattr(data_components, "renders_on_host", lambda device: False)
    parts = store_components(windows, [sid], to_host=False)
    assert isinstance(parts, torch.Tensor) and parts.dtype == torch.float64
    np.testing.assert_array_equal(store_components(windows, [sid]), parts.numpy())  # to_host: NumPy
    np.testing.assert_allclose(parts.numpy(), ref_parts, rtol=0, atol=1e-12 * np.abs(ref_parts).max())
    got = run_components({"linear": model}, host_store, **options)
    assert np.isfinite(ref["share"]).any()
    for name in ("share", "contribution", "energy_share", "reference_share"):
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-12, atol=1e-12)
