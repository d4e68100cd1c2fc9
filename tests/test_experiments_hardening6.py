"""Regression tests of the experiments (hardening 6): relevance of other data handed to the TDOA probe, the data's
mean window and training mean in perturbation and TDOA explanations, the bootstrap count of the components
experiment, and deletion curves of float16 / bfloat16 windows."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import never, one_line, small_model

from xai_loc.experiments.perturbation import deletion_predictions, run_perturbation
from xai_loc.experiments.tdoa_probe import run_tdoa
from xai_loc.explain import TARGETS, Explainer, explain
from xai_loc.explain.store import explain_store, open_relevance

WINDOW = 1024
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: ranks and copies on the GPU")
#: Windows the TDOA runs score.
N_TDOA = 4


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """One test source of a tiny scene with a training split, at SNR 25 dB and (other data, the same window labels
    and sources) at 20 dB."""
    from xai_loc.acoustics.room import ShoeBox, linear_array
    from xai_loc.data import Scene, simulate_dataset

    sources = np.array([[1.0, 1.5, 1.2], [2.5, 2.0, 1.3]])
    scene = Scene("tinyh6", ShoeBox((4.0, 5.0, 3.0)), linear_array(4, 0.1, (2.0, 4.0, 1.2)), sources,
                  {"train": [0], "test": [1]}, window=WINDOW)
    root = tmp_path_factory.mktemp("h6-data")
    return [simulate_dataset(scene, "test", 0.15, snr, root=root, progress=False) for snr in (25.0, 20.0)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from xai_loc.models import save_checkpoint

    return save_checkpoint(small_model(4, WINDOW), tmp_path_factory.mktemp("h6-model") / "loccnn.safetensors",
                           {"condition": {"t60": 0.15, "snr": 25.0}})


def _tdoa(checkpoint, store, **kw):
    return run_tdoa({"loccnn": checkpoint}, store, pairs="0-1,0-3", randomized_baseline=False, srp=False,
                    max_windows=N_TDOA, batch_size=4, **kw)


# ---------------------------------------------------------------------------------------------- 1. given relevance
def test_tdoa_refuses_relevance_of_other_data(stores, checkpoint):
    from xai_loc.data import open_signals

    ours, other = (open_signals(s) for s in stores)
    right = explain(checkpoint, ours.isel(window=slice(0, N_TDOA)))
    # its own relevance is taken and gives the delays of the relevance explained in the run
    given = _tdoa(checkpoint, stores[0], relevance={"loccnn": right})
    made = _tdoa(checkpoint, stores[0])
    assert given.attrs["models"] != made.attrs["models"]  # one given, one explained
    np.testing.assert_array_equal(given["delay"].sel(estimator="loccnn").values,
                                  made["delay"].sel(estimator="loccnn").values)
    # relevance of the 20 dB store: the same window labels and sources, other data
    wrong = explain(checkpoint, other.isel(window=slice(0, N_TDOA)))
    digest, theirs = right.attrs["dataset_digest"], wrong.attrs["dataset_digest"]
    assert digest != theirs
    assert one_line(_tdoa, checkpoint, stores[0], relevance={"loccnn": wrong}) == (
        f"relevance 'loccnn' was computed on other data (dataset_digest {theirs!r}, this data's is {digest!r}); "
        "explain this data")
    # an extra estimator is checked alike
    assert "was computed on other data" in one_line(_tdoa, checkpoint, stores[0], relevance={"extra": wrong})
    # windows 10..13 of this data relabelled 0..3: the digest agrees, the windows do not
    shifted = explain(checkpoint, ours.isel(window=slice(10, 10 + N_TDOA))).assign_coords(window=np.arange(N_TDOA))
    assert one_line(_tdoa, checkpoint, stores[0], relevance={"loccnn": shifted}) == (
        "relevance 'loccnn' has window_index 10 at window 0, where the data has 0; explain this data")
    other_source = right.assign_coords(source_id=("window", right["source_id"].values + 1))
    assert one_line(_tdoa, checkpoint, stores[0], relevance={"loccnn": other_source}) == (
        "relevance 'loccnn' has source_id 2 at window 0, where the data has 1; explain this data")


# ---------------------------------------------------------------------------------------------- 2. data inputs
MEAN_OPTIONS = [{"target": "contrast", "reference": "mean"}, {"target": "contrast", "reference": "train-mean"},
                {"method": "integrated_gradients", "baseline": "mean", "n_steps": 4}]


@pytest.mark.parametrize("options", MEAN_OPTIONS, ids=["reference=mean", "reference=train-mean", "baseline=mean"])
def test_perturbation_takes_the_data_mean_and_train_mean(stores, checkpoint, options, monkeypatch):
    from xai_loc.data import open_signals

    ds = open_signals(stores[0])
    windows = torch.from_numpy(ds["signals"].values)
    truth = ds["source_position"].values
    # the relevance store of the same explanation, made beside the data: the run reads it and explains nothing
    stored = open_relevance(explain_store(checkpoint, stores[0], progress=False, **options))
    assert TARGETS[options.get("target", "truth")].sense == 1  # the relevance ranks as it is
    monkeypatch.setattr(Explainer, "explain_batch", never("explaining"))
    result = run_perturbation({"loccnn": checkpoint}, stores[0], percentages=(0, 20, 50), modes=("relevance",),
                              randomized_baseline=False, batch_size=64, **options)
    preds = deletion_predictions(small_model(4, WINDOW), windows, (0, 20, 50), ["relevance"],
                                 relevance=torch.from_numpy(stored.values), batch_size=64)
    mae = np.abs(preds[0] - truth).mean(axis=(1, 2))
    np.testing.assert_allclose(result["mae_mean"].sel(model="loccnn", mode="relevance").values, mae, rtol=1e-12)
    assert mae[2] != mae[0]


@pytest.mark.parametrize("options", MEAN_OPTIONS[::2], ids=["reference=mean", "baseline=mean"])
def test_tdoa_explains_with_the_mean_window_of_the_data(stores, checkpoint, options):
    made = _tdoa(checkpoint, stores[0], **options)
    stored = open_relevance(explain_store(checkpoint, stores[0], progress=False, **options))
    given = _tdoa(checkpoint, stores[0], relevance={"loccnn": stored}, **options)
    np.testing.assert_array_equal(made["delay"].sel(estimator="loccnn").values,
                                  given["delay"].sel(estimator="loccnn").values)



def test_a_callers_mean_window_is_the_one_explained_and_recorded(stores, checkpoint):
    """Review: a caller's ``mean_input`` bypassed the shared inputs: perturbation then read the relevance store of
    the windows' mean beside the data (its "relevance" curve was another explanation's) and recorded the window as
    a truncated array repr; it is explained with, never read from a store, and recorded by its digest."""
    import hashlib
    import json

    from xai_loc.data import open_signals

    options = MEAN_OPTIONS[2]
    explain_store(checkpoint, stores[0], progress=False, **options)  # the windows' mean, beside the data
    own = np.full((4, WINDOW), 0.01, np.float32)
    kw = dict(percentages=(0, 20, 50), modes=("relevance",), randomized_baseline=False, batch_size=64, **options)
    result = run_perturbation({"loccnn": checkpoint}, stores[0], mean_input=own, **kw)
    ds = open_signals(stores[0])
    relevance = explain(checkpoint, ds, mean_input=own, **options).values
    preds = deletion_predictions(small_model(4, WINDOW), torch.from_numpy(ds["signals"].values), (0, 20, 50),
                                 ["relevance"], relevance=torch.from_numpy(relevance), batch_size=64)
    mae = np.abs(preds[0] - ds["source_position"].values).mean(axis=(1, 2))
    np.testing.assert_allclose(result["mae_mean"].sel(model="loccnn", mode="relevance").values, mae, rtol=1e-12)
    windows_mean = run_perturbation({"loccnn": checkpoint}, stores[0], **kw)
    assert not np.array_equal(result["mae_mean"].values, windows_mean["mae_mean"].values)
    digest = hashlib.sha256(own.astype(np.float64).tobytes()).hexdigest()[:16]
    assert json.loads(result.attrs["explain_options"])["mean_input"] == digest
    assert json.loads(_tdoa(checkpoint, stores[0], mean_input=own, **options).attrs["explain_options"])[
        "mean_input"] == digest
    # review: a window that no option reads changes nothing: not recorded (a store of the same explanation is read)
    from xai_loc.explain.attribute import dataset_inputs, experiment_inputs

    _, rest, recorded = experiment_inputs(dataset_inputs(ds), {"method": "saliency", "mean_input": own})
    assert rest == recorded == {"method": "saliency"}


@pytest.mark.parametrize("run", [run_perturbation, _tdoa])
def test_an_experiment_refuses_a_train_mean_option_as_explain_store_does(stores, checkpoint, run):
    """Review: ``train_mean=`` was refused by explain_store but taken by perturbation and TDOA (recorded, and
    perturbation then read the store of the data's training mean)."""
    models = checkpoint if run is _tdoa else {"loccnn": checkpoint}
    assert one_line(run, models, stores[0], target="contrast", reference="train-mean", train_mean=[9.0, 9.0, 9.0]) \
        == ("option 'train_mean' is not allowed: the training set's mean position comes from the data's scene; give "
            "reference=(x, y, z) for another position")

# ---------------------------------------------------------------------------------------------- 3. n_boot
@pytest.mark.parametrize("n_boot", [0, -1, 2.5, True])
def test_components_refuses_a_bad_bootstrap_count_before_any_work(stores, n_boot, monkeypatch):
    from xai_loc.experiments.components import run_components
    from xai_loc.experiments.modelset import ModelSet

    monkeypatch.setattr(ModelSet, "of", never("loading the models"))
    assert one_line(run_components, {"loccnn": "absent.safetensors"}, stores[0], methods=["saliency"],
                    n_boot=n_boot) == f"n_boot={n_boot!r} is not allowed; use an integer >= 1"


# ---------------------------------------------------------------------------------------------- 4. float16 windows
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=requires_cuda)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("fill", ["zero", "noise"])
def test_deletion_of_narrow_float_windows_is_that_of_their_float32_values(dtype, fill, device):
    model = small_model(4, 175).to(device)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 4, 175, generator=g).to(device, dtype)
    rel = torch.randn(5, 4, 175, generator=g).to(device, dtype)
    modes = ["relevance", "energy", "random"]
    narrow = deletion_predictions(model, x, (0, 30, 60), modes, relevance=rel, fill=fill, seed=2, batch_size=2)
    wide = deletion_predictions(model, x.float(), (0, 30, 60), modes, relevance=rel.float(), fill=fill, seed=2,
                                batch_size=2)
    np.testing.assert_array_equal(narrow, wide)
    with torch.no_grad():  # nothing deleted: the model's predictions of the float32 values, batch by batch
        plain = torch.cat([model(b) for b in x.float().split(2)]).double().cpu().numpy()
    np.testing.assert_array_equal(narrow[:, 0], np.broadcast_to(plain, (3, 5, 3)))
    assert (np.abs(narrow[:, 2] - narrow[:, 0]).max(axis=(1, 2)) > 1e-6).all()  # every mode deleted something
