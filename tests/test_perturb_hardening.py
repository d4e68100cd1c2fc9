"""Regression tests of the perturbation and faithfulness experiments' input handling: a float64 model
gets float64 deleted copies; the number of percentages, the deletion modes and the seed are refused
in one line before any model, store or simulation is touched."""
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from xai_loc.cli import main
from xai_loc.errors import InputError
from xai_loc.experiments import faithfulness, perturbation
from xai_loc.experiments.deletion_order import MAX_STEPS
from xai_loc.experiments.perturbation import check_percentages, deletion_predictions, run_perturbation

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"


def _linear(dtype: torch.dtype) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4 * 8, 3)).to(dtype).eval()


def test_a_float64_model_predicts_on_float64_copies_of_float32_windows():
    model = _linear(torch.float64)
    x = torch.randn(3, 4, 8)  # float32, as windows come from a store
    preds = deletion_predictions(model, x, (0, 25), ["energy"], batch_size=3)
    # by hand: the 8 samples of largest |x| per window zeroed (ties cannot occur in normal draws)
    flat = x.reshape(3, -1).clone()
    top = torch.argsort(flat.abs(), dim=1, descending=True, stable=True)[:, :8]
    zeroed = flat.scatter(1, top, 0.0).view_as(x)
    with torch.no_grad():
        expected = torch.stack([model(x.double()), model(zeroed.double())]).numpy()
    np.testing.assert_allclose(preds[0], expected, rtol=1e-12, atol=0)
    assert np.abs(expected[1] - expected[0]).max() > 1e-3  # the deletion changes the answer


def test_percentages_are_refused_beyond_the_steps_the_kernels_hold():
    assert len(check_percentages(np.linspace(0, 70, MAX_STEPS), from_zero=True)) == MAX_STEPS
    too_many = np.linspace(0, 70, MAX_STEPS + 1)
    with pytest.raises(InputError, match=f"^percentages: {MAX_STEPS + 1} deletion steps asked for; at most "
                                         f"{MAX_STEPS} are allowed$"):
        check_percentages(too_many)
    with pytest.raises(InputError, match="^--percentages: 256 deletion steps"):  # the CLI names its option
        check_percentages(too_many, from_zero=True, what="--percentages")


@pytest.mark.parametrize("command", ["perturb", "faithfulness"])
def test_cli_refuses_too_many_percentages_before_simulating(tmp_path, monkeypatch, command):
    import xai_loc.data.store

    def simulate(*args, **kwargs):
        raise AssertionError("simulated before the percentages were checked")

    monkeypatch.setattr(xai_loc.data.store, "simulate_dataset", simulate)
    monkeypatch.setenv("XAI_LOC_PRETRAINED", str(PRETRAINED))
    monkeypatch.chdir(tmp_path)
    many = ",".join(f"{p:g}" for p in np.linspace(0, 70, 300))
    result = CliRunner().invoke(main, ["--threads", "1", command, "--t60", "0.15", "--snr", "25", "--model",
                                       "loccnn", "--sources", "2", "--percentages", many, "--no-randomized",
                                       "--data", str(tmp_path / "data")])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --percentages: 300 deletion steps"), result.stderr
    assert f"at most {MAX_STEPS}" in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing under --data, no results folder


@pytest.fixture
def untouched_store(monkeypatch):
    """Any use of the store fails the test: arguments must be refused before it is opened."""
    def opened(*args, **kwargs):
        raise AssertionError("store opened before the arguments were checked")

    monkeypatch.setattr(perturbation, "scored_set", opened)
    monkeypatch.setattr(faithfulness, "scored_set", opened)
    return "store-that-is-never-opened.zarr"


@pytest.mark.parametrize(("modes", "message"), [((), "modes list is empty"),
                                                (("random", "random"), "modes 'random,random' names a mode twice"),
                                                (("loudest",), "modes 'loudest' is unknown; allowed: relevance")])
def test_run_perturbation_refuses_bad_modes_first(untouched_store, modes, message):
    with pytest.raises(InputError, match=message):
        run_perturbation({"m": _linear(torch.float32)}, untouched_store, percentages=(0, 10), modes=modes)


def test_deletion_predictions_refuse_bad_modes():
    x = torch.randn(2, 4, 8)
    for modes, message in [((), "modes list is empty"), (["energy", "energy"], "names a mode twice")]:
        with pytest.raises(InputError, match=message):
            deletion_predictions(_linear(torch.float32), x, (0, 10), modes)


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_seed_is_refused_first(untouched_store, seed):
    model = {"m": _linear(torch.float32)}
    expected = f"seed={seed!r} is not allowed; use an integer >= 0"
    with pytest.raises(InputError, match=expected.replace(".", r"\.")):
        faithfulness.run_faithfulness(model, untouched_store, methods=["saliency"], fills=["zero"], seed=seed)
    with pytest.raises(InputError, match=expected.replace(".", r"\.")):
        run_perturbation(model, untouched_store, percentages=(0, 10), seed=seed)


def test_fill_n_boot_and_single_names_are_checked_first(untouched_store):
    model = {"m": _linear(torch.float32)}
    with pytest.raises(InputError, match="fill 'bogus' is unknown; allowed: zero, noise"):
        run_perturbation(model, untouched_store, percentages=(0, 10), fill="bogus")
    with pytest.raises(InputError, match="n_boot=0 is not allowed; use an integer >= 1"):
        faithfulness.run_faithfulness(model, untouched_store, methods=["saliency"], fills=["zero"], n_boot=0)
    # one name is one name, not a sequence of letters
    with pytest.raises(InputError, match="modes 'loudest' is unknown"):
        run_perturbation(model, untouched_store, percentages=(0, 10), modes="loudest")
    with pytest.raises(InputError, match="fills 'zeros' is unknown"):
        faithfulness.run_faithfulness(model, untouched_store, methods=["saliency"], fills="zeros")
    assert faithfulness.check_fills("road") == ("road",)


def test_a_blank_name_is_named_not_called_an_empty_list():
    from xai_loc.experiments.perturbation import check_modes

    with pytest.raises(InputError, match="modes '' is unknown; allowed: relevance"):
        check_modes(["relevance", ""])
    with pytest.raises(InputError, match="fills '' is unknown"):
        faithfulness.check_fills(["zero", " "])
