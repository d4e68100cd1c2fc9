"""Regression tests of the session of 2026-12-07 (evening): the signals of a dataset alone (``ds["signals"]``) name
their data, so that ``write_wavs`` refuses another condition's microphones of the same windows; ``explain`` records
the sample rate of the windows' time coord."""
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line, small_model

WINDOW = 1024


@pytest.fixture(scope="module")
def two_conditions(tmp_path_factory):
    """One test source of a tiny 4-microphone scene at (0.15 s, 25 dB) and at (0.6 s, 10 dB): the same windows (same
    ``source_id`` and ``window_index``), other data; the LRP relevance of the first by a small LocCNN."""
    from xai_loc.acoustics.room import ShoeBox, linear_array
    from xai_loc.data import Scene, simulate_dataset
    from xai_loc.explain import explain_store

    root = tmp_path_factory.mktemp("two-conditions")
    scene = Scene("tinyone", ShoeBox((4.0, 5.0, 3.0)), linear_array(4, 0.1, (2.0, 4.0, 1.2)),
                  np.array([[1.0, 1.5, 1.2]]), {"test": [0]}, window=WINDOW)
    dry = simulate_dataset(scene, "test", 0.15, 25.0, root=root, progress=False)
    wet = simulate_dataset(scene, "test", 0.6, 10.0, root=root, progress=False)
    relevance = explain_store(small_model(4, WINDOW), dry, root / "r.zarr", batch_size=64, progress=False)
    return dry, wet, relevance, scene


def test_write_wavs_refuses_another_conditions_signals_alone(two_conditions, tmp_path):
    """The signals of a dataset alone carry its digest (attr ``dataset_digest``), so write_wavs refuses the
    microphones of another condition of the same windows before the folder is made, and the explained ones pass.
    review: ``open_signals(wet)["signals"]`` had no dataset attrs and the same window labels: the relevance of the
    (0.15 s, 25 dB) data was written beside the (0.6 s, 10 dB) microphones under the same name."""
    from xai_loc.data.store import config_digest, data_digest, open_signals
    from xai_loc.explain import open_relevance, write_wavs

    dry, wet, store, _ = two_conditions
    relevance = open_relevance(store)
    other = open_signals(wet)
    assert data_digest(other["signals"]) == config_digest(other.attrs) == data_digest(other)
    assert data_digest(other["signals"].isel(window=[0])) == config_digest(other.attrs)  # a selection keeps it
    folder = tmp_path / "wavs"
    assert one_line(write_wavs, relevance, other["signals"], folder) == (
        f"the signals are of other data (dataset_digest {config_digest(other.attrs)[:16]!r}) than the relevance "
        f"explains ({relevance.attrs['dataset_digest'][:16]!r}); give the signals it explains (open_explained_signals)")
    assert not folder.exists()
    written = write_wavs(relevance, open_signals(dry)["signals"], folder)
    assert [p.name for p in written] == ["source-0000_relevance.wav", "source-0000_microphones.wav"]


def test_an_in_memory_splits_signals_name_the_same_data_as_its_store(two_conditions, tmp_path):
    """``SimulatedSplit.to_dataset()["signals"]`` carries the digest of the store of the same arguments; relevance
    explained from bare signals records none (xarray keeps the attr through arithmetic, so it would name altered
    windows as the stored data); a subset of the signals is one line in write_wavs, digest or not.
    review: write_wavs of a digest-carrying subset was a KeyError traceback inside xarray."""
    import torch

    from xai_loc.data.store import data_digest, open_signals, simulate_windows
    from xai_loc.explain import explain, open_relevance, write_wavs

    dry, _, store, scene = two_conditions
    stored = open_signals(dry)
    split = simulate_windows(scene, "test", 0.15, 25.0, progress=False)
    assert data_digest(split.to_dataset()["signals"]) == data_digest(stored) == split.digest
    torch.manual_seed(0)
    altered = explain(small_model(4, WINDOW), stored["signals"] * 2, target="prediction", batch_size=64)
    assert data_digest(stored["signals"] * 2) == split.digest and "dataset_digest" not in altered.attrs
    relevance = open_relevance(store)
    n = stored.sizes["window"]
    assert one_line(write_wavs, relevance, stored["signals"].isel(window=slice(0, n - 1)), tmp_path / "w") == (
        f"window {n - 1} of the relevance is not among the signals' windows; give the signals the relevance "
        "explains (open_explained_signals)")
    assert not (tmp_path / "w").exists()


def test_explain_takes_the_sample_rate_of_the_windows_time_coord_and_refuses_another(tmp_path):
    """Relevance of windows with a time coord records their rate (and write_wavs writes it), and an ``fs`` the time
    coord contradicts is refused in one line. review: a DataArray of 8 kHz windows was recorded as 16 kHz (its wav
    files played at double speed), and fs=8000 beside a 16 kHz time coord was recorded as given."""
    import soundfile as sf
    import torch
    import xarray as xr

    from xai_loc.explain import explain, write_wavs
    from xai_loc.models import LocCNN

    torch.manual_seed(0)
    model = LocCNN(2, 175).eval()
    x = np.random.default_rng(0).standard_normal((2, 2, 175)).astype("float32")
    slow = xr.DataArray(x, dims=("window", "mic", "time"), coords={"time": np.arange(175) / 8000.0})
    relevance = explain(model, slow, target="prediction")
    assert relevance.attrs["fs"] == 8000.0
    np.testing.assert_array_equal(relevance["time"].values, slow["time"].values)
    assert sf.info(str(write_wavs(relevance, None, tmp_path / "wavs")[0])).samplerate == 8000
    assert one_line(explain, model, slow, target="prediction", fs=16000) == (
        "fs 16000 does not match the windows' time coord (8000 samples per second); give fs=8000 or windows whose "
        "time coord steps by 1/fs seconds")
    assert explain(model, slow, target="prediction", fs=8000).attrs["fs"] == 8000.0
    assert explain(model, x, target="prediction", fs=8000).attrs["fs"] == 8000.0  # no time coord: fs as given
    assert explain(model, x, target="prediction").attrs["fs"] == 16000.0
    # a coord of float32 seconds gives the whole rate; coords in samples or milliseconds give none
    single = xr.DataArray(x, dims=("window", "mic", "time"), coords={"time": (np.arange(175) / 8000).astype("f4")})
    assert explain(model, single, target="prediction").attrs["fs"] == 8000.0
    for time, units in [(np.arange(175), None), (np.arange(175) / 16.0, None), (np.arange(175) / 8000, "ms")]:
        other = slow.assign_coords(time=("time", time, {} if units is None else {"units": units}))
        assert explain(model, other, target="prediction").attrs["fs"] == 16000.0
        assert explain(model, other, target="prediction", fs=8000).attrs["fs"] == 8000.0


# -- reproduce reads the stores it reuses in full before it writes below out -----------------------------------------
def _damage(store, variable: str) -> str:
    """Flip a byte in the middle of the first chunk of ``variable`` (its size unchanged); the chunk's key."""
    chunk = sorted((store / variable).glob("[0-9]*"))[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    return f"{variable}/{chunk.name}"


@pytest.fixture()
def study_inputs(zoo, tmp_path, monkeypatch):
    """A one-source test store of a quick run, an output folder holding an earlier run's page, and the run."""
    from xai_loc.data import simulate_dataset
    from xai_loc.data.scene import paper_scene
    from xai_loc.study import reproduce

    monkeypatch.setattr("xai_loc.study.QUICK_SOURCES", 1)
    store = simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=tmp_path / "data", n_sources=1, progress=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.html").write_text("the earlier run's page")

    def run():
        reproduce(tmp_path / "out", quick=True, data_root=tmp_path / "data", pretrained=zoo,
                  conditions=[(0.15, 25.0)], skip=("faithfulness", "sanity", "components"), progress=False)

    return store, run


def test_reproduce_refuses_a_damaged_test_store_before_writing_below_out(study_inputs, monkeypatch):
    """A damaged test store that the run reuses is one line before anything is written below out: the earlier run's
    page stays. review: the store was read when its condition's turn came, after the earlier run's record had been
    replaced by an empty one and its report.html deleted."""
    from helpers import never

    store, run = study_inputs
    key = _damage(store, "signals")
    monkeypatch.setattr("xai_loc.study._evaluate", never("evaluating a model"))
    says = one_line(run)
    assert says.startswith(f"dataset store {store} is damaged: chunk {key} does not match its checksum")
    assert [p.name for p in (store.parents[3] / "out").iterdir()] == ["report.html"]


def test_reproduce_refuses_a_damaged_relevance_store_it_reuses_before_any_work(study_inputs, zoo, monkeypatch):
    """A damaged relevance store that the run would reuse (the TDOA experiment's) is one line before any work, naming
    reproduce as what rebuilds it. review: it was found inside the TDOA experiment, after the models were evaluated,
    with advice to run 'xai-loc explain'."""
    from helpers import never

    from xai_loc.experiments.tdoa_probe import explain_models

    store, run = study_inputs
    explain_models({"loccnn": zoo / "loccnn_t60-0.15_snr-25.safetensors"}, store, randomized_baseline=False,
                   progress=False)
    relevance = next((store.parent / f"{store.stem}.relevance").iterdir())
    key = _damage(relevance, "relevance")
    monkeypatch.setattr("xai_loc.study._evaluate", never("evaluating a model"))
    assert one_line(run) == (f"relevance store {relevance} is damaged: chunk {key} does not match its checksum; "
                             "delete it and run 'xai-loc reproduce' again to rebuild it")
    assert [p.name for p in (store.parents[3] / "out").iterdir()] == ["report.html"]


def test_write_cue_scenes_checks_its_batch_size_and_progress_before_any_work(tmp_path):
    """``write_cue_scenes`` (the store writer under ``simulate_cue_scenes``) refuses a batch size that is no integer
    >= 1 and a progress that is no bool in one line, and writes nothing. review: ``batch_size=0`` was a ValueError
    traceback (range() arg 3) there."""
    from xai_loc.data.cue_scenes import CueSceneSpec, write_cue_scenes
    from xai_loc.features.binaural_cues import BinauralCues

    spec = CueSceneSpec(per_utterance={"train": 1, "test": 1}, duration=0.05)
    front_end = BinauralCues(**{"fs": spec.fs, **spec.front_end})
    assert one_line(write_cue_scenes, spec, "test", front_end, root=tmp_path, batch_size=0) == (
        "batch_size=0 is not allowed; use an integer >= 1")
    assert one_line(write_cue_scenes, spec, "test", front_end, root=tmp_path, progress="no") == (
        "progress='no' is not allowed; use True or False")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, says", [
    (["perturb", "--percentages", "0,10,"], "--percentages '0,10,' has an empty item; give values separated by "
                                            "single commas"),
    (["perturb", "--modes", "random,,relevance"], "--modes 'random,,relevance' has an empty item; give values "
                                                  "separated by single commas"),
    (["faithfulness", "--fills", "zero,"], "--fills 'zero,' has an empty item; give values separated by single "
                                           "commas"),
])
def test_a_comma_list_with_an_empty_item_is_refused_as_pairs_and_mics_refuse_one(args, says, tmp_path):
    """An empty item of a comma list (a value left out?) is one line, exit 2, before any work, as ``--pairs`` and
    ``--mics`` refuse one. review: ``--percentages 0,10,`` ran as ``0,10``."""
    from helpers import refused, run_cli

    assert refused(run_cli([*args, "--data", str(tmp_path / "data")])) == f"Error: {says}\n"
    assert not (tmp_path / "data").exists()


def test_a_checkpoint_that_is_a_device_or_a_pipe_is_named_as_such(tmp_path):
    """``/dev/null`` or a FIFO given as a checkpoint is one line saying it is no regular file (exit 2), without
    waiting on the pipe. review: both were said not to exist."""
    import os

    from helpers import refused, run_cli

    from xai_loc.models.checkpoint import load_paper_model, read_card

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path in (Path("/dev/null"), fifo):
        said = f"checkpoint {path} is not a regular file; give the path of a .safetensors file"
        assert one_line(read_card, path) == said
        assert refused(run_cli(["evaluate", str(path)])) == f"Error: {said}\n"
    assert one_line(load_paper_model, fifo, "loccnn") == (
        f"checkpoint {fifo} is not a regular file; give the path of a .safetensors file")


def test_a_stored_name_starting_with_an_underscore_keeps_its_legend_entry():
    """A model or method named ``_x`` is in the legend, drawn as ``_x``. review: matplotlib left every label starting
    with ``_`` out of legends, so such a model's curve had no entry."""
    import matplotlib.pyplot as plt

    from xai_loc.plots.labels import literal

    fig, ax = plt.subplots()
    try:
        ax.plot([0, 1], [0, 1], label=literal("_x"))
        ax.plot([0, 1], [1, 0], label=literal("lrp $x$"))
        shown = [t.get_text() for t in ax.legend().get_texts()]
    finally:
        plt.close(fig)
    assert shown == ["\u200b_x", r"lrp \$x\$"] and shown[0].lstrip("\u200b") == "_x"
