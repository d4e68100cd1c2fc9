"""Regression tests of a review of the notebook API: ``xl.explain`` turning into the subpackage once it was imported
another way, ``write_wavs`` pairing relevance with signals of other data by window label, ``explain --out`` of other
data refused only after simulating, a dataset store as ``explain --out`` called relevance of other weights, and
``explain_store`` with a batch larger than the data."""
import json
import shutil
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
from helpers import never, one_line, refused, run_cli, small_model

WINDOW = 1024


@pytest.fixture(scope="module")
def two_stores(tmp_path_factory):
    """Stores of a tiny 4-microphone scene: ``a`` its test source (0) at (0.15 s, 25 dB), ``b`` its train source (1)
    at (0.6 s, 10 dB); ``relevance`` the LRP store of ``a`` by a small LocCNN (``model``)."""
    from xai_loc.acoustics.room import ShoeBox, linear_array
    from xai_loc.data import Scene, simulate_dataset
    from xai_loc.explain import explain_store

    root = tmp_path_factory.mktemp("two-stores")
    sources = np.array([[1.0, 1.5, 1.2], [2.5, 2.0, 1.3]])
    scene = Scene("tinypair", ShoeBox((4.0, 5.0, 3.0)), linear_array(4, 0.1, (2.0, 4.0, 1.2)), sources,
                  {"test": [0], "train": [1]}, window=WINDOW)
    a = simulate_dataset(scene, "test", 0.15, 25.0, root=root, progress=False)
    b = simulate_dataset(scene, "train", 0.6, 10.0, root=root, progress=False)
    model = small_model(4, WINDOW)
    relevance = explain_store(model, a, root / "a-relevance.zarr", batch_size=64, progress=False)
    return types.SimpleNamespace(a=a, b=b, model=model, relevance=relevance, root=root)


# ------------------------------------------------------------------------------- 1: xl.explain, whatever came first
SUBPACKAGE_FIRST = """
    import torch
    import xai_loc.explain.store  # the subpackage imported first binds xai_loc.explain
    import xai_loc as xl
    from xai_loc.explain.attribute import explain
    from xai_loc.models import LocCNN
    torch.manual_seed(3)
    model, x = LocCNN(4, 175).eval(), torch.randn(2, 4, 175)
    ours, theirs = xl.explain(model, x, target="prediction"), explain(model, x, target="prediction")
    print(float(abs(ours.values - theirs.values).max()), float(abs(ours.values).max()) > 0)
"""
FUNCTION_FIRST = """
    import xai_loc as xl
    first = xl.explain
    import xai_loc.explain as sub  # after the lazy name was looked up
    print(sub.explain_store.__name__, sub is xl.explain is first, callable(first))
"""


@pytest.mark.parametrize("script, prints", [(SUBPACKAGE_FIRST, "0.0 True"),
                                            (FUNCTION_FIRST, "explain_store True True")],
                         ids=["subpackage-first", "function-first"])
def test_xl_explain_is_the_function_and_the_subpackage_whatever_was_imported_first(script, prints):
    """review: after any import of xai_loc.explain.* (xl.write_wavs, xl.open_relevance ...) xl.explain was the
    subpackage, and xl.explain(...) a TypeError ('module' object is not callable); after xl.explain, 'import
    xai_loc.explain as sub' gave the function (no sub.explain_store). Now the subpackage is callable as
    xai_loc.explain.attribute.explain, the same relevance, in either order (a fresh process controls the order)."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == prints


# ------------------------------------------------------------------------------- 2: write_wavs of other data
def test_write_wavs_refuses_signals_of_other_data(two_stores, tmp_path):
    """review: write_wavs paired relevance and signals by window label only: the relevance of the (0.15 s, 25 dB)
    store of source 0 was written beside the microphones of the (0.6 s, 10 dB) store of source 1 under source 0's
    name. Now signals of other data are refused, by dataset_digest where both record one, else by the source_id of
    the first window paired, before the folder is made."""
    from xai_loc.data.store import config_digest, open_signals
    from xai_loc.explain import open_relevance, write_wavs

    relevance = open_relevance(two_stores.relevance)
    other = open_signals(two_stores.b)
    folder = tmp_path / "wavs"
    said = one_line(write_wavs, relevance, other, folder)
    assert said == (f"the signals are of other data (dataset_digest {config_digest(other.attrs)[:16]!r}) than the "
                    f"relevance explains ({relevance.attrs['dataset_digest'][:16]!r}); give the signals it explains "
                    "(open_explained_signals)")
    # the signals alone carry the dataset's digest (test_review8); stripped of it, the labels of the windows tell
    bare = other["signals"].copy()
    bare.attrs = {}
    assert one_line(write_wavs, relevance, bare, folder) == (
        "window 0 is source_id 0 in the relevance but 1 in the signals; give the signals the relevance explains "
        "(open_explained_signals)")
    assert not folder.exists()
    # the data it explains passes
    written = write_wavs(relevance, open_signals(two_stores.a)["signals"], folder)
    assert [p.name for p in written] == ["source-0000_relevance.wav", "source-0000_microphones.wav"]


# ------------------------------------------------------------------------------- 3 and 4: explain --out
@pytest.fixture(scope="module")
def one_source(zoo, tmp_path_factory):
    """The relevance store of one simulated test source of (0.15 s, 25 dB) by the zoo's LocCNN, and its data root."""
    from xai_loc.data.scene import paper_scene
    from xai_loc.data.store import simulate_dataset
    from xai_loc.explain import explain_store

    base = tmp_path_factory.mktemp("one-source")
    checkpoint = str(zoo / "loccnn_t60-0.15_snr-25.safetensors")
    store = simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=base / "data", n_sources=1, progress=False)
    out = explain_store(checkpoint, store, base / "r.zarr", progress=False)
    return types.SimpleNamespace(checkpoint=checkpoint, root=base / "data", store=store, out=out, base=base)


def test_explain_refuses_an_out_store_of_other_data_before_simulating(one_source, monkeypatch, tmp_path):
    """review: 'explain --sources 2 --out r.zarr', r.zarr holding relevance of 1-source data, simulated the 2 sources
    and only then refused. Now the data's identity is known before simulating (from the simulation's config and
    window count) and the store is refused first; the data it explains passes."""
    from xai_loc.data.scene import paper_scene
    from xai_loc.explain import open_relevance

    args = ["explain", "--checkpoint", one_source.checkpoint, "--data", str(one_source.root), "--out",
            str(one_source.out)]
    with monkeypatch.context() as patched:
        patched.setattr("xai_loc.data.store.simulate_dataset", never("simulating data"))
        said = refused(run_cli([*args, "--sources", "2"]), f"--out {one_source.out} holds relevance of other data")
    from xai_loc.explain.store import planned_data_digest

    assert f"not {planned_data_digest(paper_scene(), 'test', 0.15, 25.0, n_sources=2, root=tmp_path)!r}" in said
    # planned from the arguments alone (nothing simulated there) it is what the store recorded
    recorded = json.loads(open_relevance(one_source.out).attrs["config"])["data"]
    assert planned_data_digest(paper_scene(), "test", 0.15, 25.0, root=tmp_path / "none", n_sources=1) == recorded
    assert not (tmp_path / "none").exists()
    result = run_cli([*args, "--sources", "1"])
    assert result.exit_code == 0 and result.stdout.strip() == str(one_source.out), (result.output, result.exception)


def test_explain_out_of_a_dataset_store_says_so(one_source, no_simulation, tmp_path):
    """review: 'explain --out <a dataset store>' said it 'holds relevance of other model weights (None, not
    'e8e3...')'. Now it says the store is a dataset store, not a relevance store, before any work; so does
    explain_store."""
    from xai_loc.explain import explain_store

    copy = tmp_path / "data.zarr"
    shutil.copytree(one_source.store, copy)
    result = run_cli(["explain", "--checkpoint", one_source.checkpoint, "--data", str(one_source.root), "--sources",
                      "1", "--out", str(copy)])
    assert refused(result).strip() == (f"Error: --out {copy} is a dataset store, not a relevance store; results are "
                                       "never mixed: choose another out")
    assert one_line(explain_store, one_source.checkpoint, one_source.store, copy, progress=False) == (
        f"{copy} is a dataset store, not a relevance store; results are never mixed: choose another out")


# ------------------------------------------------------------------------------- 5: a batch beyond the data
def test_explain_store_takes_a_batch_larger_than_the_data(two_stores, tmp_path):
    """review: explain_store(batch_size=2**70) ended in 'ValueError: Maximum allowed dimension exceeded' (a results
    chunk of batch_size windows). Now the block is clamped to the windows there are: the relevance of a
    batch that fits (to float32 rounding), the results in one chunk; a batch within the data keeps its chunks."""
    import zarr

    from xai_loc.explain import explain_store, open_relevance

    big = explain_store(two_stores.model, two_stores.a, tmp_path / "big.zarr", batch_size=2 ** 70, progress=False)
    small = explain_store(two_stores.model, two_stores.a, tmp_path / "small.zarr", batch_size=4, progress=False)
    n = open_relevance(big).sizes["window"]
    assert n > 4
    assert zarr.open_group(big, mode="r")["prediction_x"].chunks == (n,)
    assert zarr.open_group(small, mode="r")["prediction_x"].chunks == (4,)
    np.testing.assert_allclose(open_relevance(big).values, open_relevance(small).values, rtol=1e-4, atol=1e-8)

