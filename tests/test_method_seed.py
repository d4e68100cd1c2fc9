"""An experiment's seed seeds the attribution method's own draws (GradientShap's), recorded with the result.

Before, ``perturb``, ``tdoa``, ``faithfulness``, ``sanity`` and ``components`` refused ``--option seed=N`` as
"set by --seed", yet their ``seed`` never reached the method: GradientShap drew with seed 0 whatever the run's seed.
"""
import json
import shutil

import numpy as np
import pytest
from helpers import one_line, small_model

from xai_loc.explain import Explainer


@pytest.fixture
def store(split_and_store, tmp_path):
    """A copy of the tiny store (tdoa writes relevance stores beside it)."""
    _, path = split_and_store
    return shutil.copytree(path, tmp_path / path.name)


@pytest.fixture
def explained(monkeypatch):
    """Every ``explain_batch`` call: (the method's seed, the relevance)."""
    real, calls = Explainer.explain_batch, []

    def kept(self, windows, truth=None, index=None, **kwargs):
        out = real(self, windows, truth, index, **kwargs)
        relevance = out["relevance"]
        calls.append((self.method_params.get("seed"), np.asarray(getattr(relevance, "cpu", lambda: relevance)())))
        return out

    monkeypatch.setattr(Explainer, "explain_batch", kept)
    return calls


def _relevance(model, seed, windows, truth, index):
    """GradientShap relevance (2 samples) of ``windows`` with the method's own ``seed`` option."""
    with Explainer(model, method="gradient_shap", n_samples=2, seed=seed) as ex:
        return ex.explain_batch(windows, truth, index)["relevance"]


def test_perturbation_seed_draws_gradient_shap_and_is_recorded(store, explained):
    from xai_loc.data.store import open_signals
    from xai_loc.experiments.perturbation import run_perturbation

    model = small_model(4, 1024)
    ds = open_signals(store)
    windows, truth = ds["signals"].values, ds["source_position"].values
    index = np.arange(windows.shape[0])
    results = {}
    for seed in (0, 1):
        explained.clear()
        results[seed] = run_perturbation({"m": model}, store, percentages=(0, 50), modes=("relevance",),
                                         method="gradient_shap", randomized_baseline=False, n_samples=2, seed=seed)
        assert {s for s, _ in explained} == {seed}
        used = np.concatenate([rel for _, rel in explained])
        np.testing.assert_allclose(used, _relevance(model, seed, windows, truth, index), rtol=1e-5, atol=1e-7)
    assert not np.allclose(_relevance(model, 0, windows, truth, index), _relevance(model, 1, windows, truth, index))
    # the default records what it recorded before; another seed is recorded with the options
    assert results[0].attrs["explain_options"] == '{"n_samples": 2}'
    assert results[1].attrs["explain_options"] == '{"n_samples": 2, "seed": 1}'
    assert results[1].attrs["seed"] == 1


def test_tdoa_seed_draws_gradient_shap_in_its_relevance_stores_and_is_recorded(store, explained):
    """The registered experiment (the command's path) explains into relevance stores first."""
    from xai_loc.experiments.registry import EXPERIMENTS
    from xai_loc.explain.store import open_relevance

    model = small_model(4, 1024)
    ds = EXPERIMENTS["tdoa"].run({"m": model}, store, method="gradient_shap", n_samples=2, seed=3, pairs="0-1",
                                 srp=False)
    assert {s for s, _ in explained} == {3}
    assert ds.attrs["explain_options"] == '{"n_samples": 2, "seed": 3}'
    stores = sorted(store.parent.glob(f"{store.name.removesuffix('.zarr')}.relevance/*.zarr"))
    assert len(stores) == 2  # the model's and its randomized copy's, both named by the seed
    assert all("gradient_shap-n_samples=2,seed=3-truth" in path.name for path in stores)
    params = [json.loads(open_relevance(path).attrs["method_params"])["seed"] for path in stores]
    assert params == [3, 3]


@pytest.mark.parametrize("name", ["faithfulness", "sanity", "components"])
def test_the_suites_seed_draws_gradient_shap(name, store, explained):
    from xai_loc.experiments.registry import EXPERIMENTS

    options = {"faithfulness": {"fills": ("zero",), "percentages": (0, 50)}}.get(name, {})
    EXPERIMENTS[name].run({"m": small_model(4, 1024)}, store, methods=["gradient_shap"], seed=2, n_boot=5,
                          **options)
    seeds = [s for s, _ in explained]
    assert seeds and set(seeds) == {2}


def test_tdoa_refuses_a_bad_seed_before_explaining(store):
    from xai_loc.experiments.registry import EXPERIMENTS

    message = one_line(EXPERIMENTS["tdoa"].run, {"m": small_model(4, 1024)}, store, seed=-1, pairs="0-1", srp=False)
    assert message == "seed=-1 is not allowed; use an integer >= 0"
    assert not list(store.parent.glob("*.relevance"))


def test_methods_without_draws_take_no_seed_and_the_default_adds_none():
    from xai_loc.experiments.base import method_seed

    assert method_seed("gradient_shap", 4) == {"seed": 4}
    seed = method_seed("gradient_shap", np.int64(4))["seed"]
    assert seed == 4 and type(seed) is int  # recorded in explain_options as a JSON number
    assert method_seed("gradient_shap", 0) == {}
    assert method_seed("lrp", 4) == {} and method_seed("integrated_gradients", 4) == {}
    assert method_seed("occlusion", 4) == {} and method_seed(None, 4) == {}
