"""The one trainer (known-answer fits, resume, stop rules), the float16 rule and the card schema (upgrade on read)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import xai_loc.models.trainer as trainer
from xai_loc.errors import InputError
from xai_loc.models.checkpoint import build_card, read_card, result_entry, upgrade_card
from xai_loc.models.trainer import Hooks, Schedule, Trainer, Validation, cached_batches, fit, float16_check, shuffled
from xai_loc.models.zoo import describe_test_metrics

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"

#: y = 2 x - 1 on 16 points of [-1, 1]: a line a linear model fits exactly.
X = torch.linspace(-1, 1, 16)[:, None]
Y = 2 * X - 1


def line_hooks(model: nn.Module, validate: bool = False) -> Hooks:
    def validation() -> Validation:
        with torch.no_grad():
            mse = float(nn.functional.mse_loss(model(X), Y))
        return Validation(mse, {"val_loss": mse}, lambda: {"metrics": {"mse": mse}, "baseline": None})

    return Hooks(picks=shuffled(16), assemble=cached_batches(lambda: X, Y, torch.device("cpu")), forward=model,
                 loss=nn.functional.mse_loss, validate=validation if validate else None,
                 series=("val_loss",) if validate else ())


def line_model() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(1, 1)


def test_fit_recovers_a_known_line_and_keeps_the_last_model():
    model = line_model()
    run = fit(model, torch.optim.Adam(model.parameters(), lr=0.05), line_hooks(model), Schedule(4, 300), progress=False)
    assert (run.stopped, run.paper_epochs, run.steps) == ("max_epochs", 300, 300 * 4)
    assert model.weight.item() == pytest.approx(2.0, abs=1e-3) and model.bias.item() == pytest.approx(-1.0, abs=1e-3)
    assert run.history["train_loss"][-1] < 1e-5 < run.history["train_loss"][0]
    record = run.record()
    assert record["epochs"] == 300 and record["device"] == "cpu" and record["seed"] == 0


def test_interrupted_fit_resumes_to_the_same_weights(tmp_path, monkeypatch):
    def run(epochs: int, name: str) -> Trainer:
        model = line_model()
        return fit(model, torch.optim.SGD(model.parameters(), lr=0.1), line_hooks(model, validate=True),
                   Schedule(4, epochs, seed=3), progress=False, state_file=tmp_path / name, identity={"arch": "line"})

    straight = run(5, "straight.pt")
    save = Trainer.save

    def killed_after_two(self):
        save(self)
        if self.epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        run(5, "resumed.pt")
    monkeypatch.undo()
    resumed = run(5, "resumed.pt")
    assert resumed.resumed and all(resumed.history[k] == straight.history[k] for k in straight.history
                                   if k != "seconds")
    assert all(torch.equal(a, b) for a, b in zip(straight.model.state_dict().values(),
                                                 resumed.model.state_dict().values(), strict=True))
    state = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert (state["format"], state["version"], state["arch"], state["epoch"]) == (
        trainer.STATE_FORMAT, trainer.STATE_VERSION, "line", 5)
    with pytest.raises(InputError, match="arch: 'line' in the state, 'curve' now"):
        model = line_model()
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), line_hooks(model), Schedule(4, 5),
                identity={"arch": "curve"}, state_file=tmp_path / "resumed.pt")
    # review: torch.load checks no CRC, so a changed byte of a weight resumed silently; the digest catches it
    state["model"][next(iter(state["model"]))].view(-1)[0] += 1.0
    torch.save(state, tmp_path / "damaged.pt")
    with pytest.raises(InputError, match="damaged.pt is damaged"):
        model = line_model()
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), line_hooks(model), Schedule(4, 5),
                identity={"arch": "line"}, state_file=tmp_path / "damaged.pt")


def test_every_call_of_a_spent_time_budget_still_runs_one_epoch(tmp_path):
    """A resumed run whose epochs outlast ``max_minutes`` advances one epoch per call (review 16, item 4)."""
    import time

    epochs = []
    for _ in range(3):
        model = line_model()
        run = fit(model, torch.optim.SGD(model.parameters(), lr=0.1), line_hooks(model),
                  Schedule(4, 10, max_minutes=1.0), progress=False, started=time.monotonic() - 3600.0,
                  state_file=tmp_path / "budget.pt")
        epochs.append((run.epoch, run.stopped))
    assert epochs == [(1, "time_budget"), (2, "time_budget"), (3, "time_budget")]


def test_validation_keeps_the_best_model_and_stops_early():
    model = line_model()
    # a learning rate so large that SGD diverges slowly: the first epochs are the best
    run = fit(model, torch.optim.SGD(model.parameters(), lr=1.2), line_hooks(model, validate=True),
              Schedule(16, 100, early_stop_patience=3), progress=False)
    losses = run.history["val_loss"]
    assert run.stopped == "early_stopping" and run.epoch == run.best_epoch + 3
    assert run.best_val_loss == min(losses) == losses[run.best_epoch - 1]
    with torch.no_grad():  # the kept model is the best one, loaded back
        assert float(nn.functional.mse_loss(model(X), Y)) == pytest.approx(run.best_val_loss, rel=1e-6)


def test_a_run_that_diverges_keeps_its_best_model_and_says_why():
    model = line_model()
    # SGD at lr 40 on this line explodes to inf within a few epochs; the first validation is finite
    run = fit(model, torch.optim.SGD(model.parameters(), lr=40.0), line_hooks(model, validate=True),
              Schedule(16, 100), progress=False)
    assert run.stopped == "diverged" and run.diverged.startswith(f"training diverged in epoch {run.epoch + 1} ")
    assert all(np.isfinite(run.history["val_loss"])) and len(run.history["val_loss"]) == run.epoch
    assert run.best_val_loss == min(run.history["val_loss"])
    with torch.no_grad():  # the kept model is the best finite one, loaded back
        assert float(nn.functional.mse_loss(model(X), Y)) == pytest.approx(run.best_val_loss, rel=1e-6)
    # with nothing to keep yet (a first epoch that is not finite), divergence is an error naming the learning rate
    model = line_model()
    with torch.no_grad():
        model.weight.fill_(float("inf"))
    with pytest.raises(InputError, match=r"training diverged in epoch 1 .*lower the learning rate \(lr=0.1\)"):
        fit(model, torch.optim.SGD(model.parameters(), lr=0.1), line_hooks(model), Schedule(16, 100), progress=False)


def test_scheduler_steps_where_asked():
    for where, expected in (("epoch", 0.1 * 0.5 ** 3), ("step", 0.1 * 0.5 ** 12)):
        model = line_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5)
        fit(model, optimizer, line_hooks(model), Schedule(4, 3), scheduler=scheduler, scheduler_step=where,
            progress=False)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)
    with pytest.raises(InputError, match="scheduler_step='batch' is not allowed"):
        model = line_model()
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), line_hooks(model), Schedule(4, 3),
                scheduler_step="batch")


# -- the float16 rule ------------------------------------------------------------------------------

class Gain(nn.Module):
    """Multiplies by one weight; scored by that weight, so float16 rounding moves the score by a known amount."""

    def __init__(self, gain: float) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor([gain], dtype=torch.float32))


def gain_score(model: Gain) -> dict:
    return result_entry({"gain": float(model.gain.detach()), "n": 1}, {"gain": 0.0}, "zero")


def test_float16_rule_stores_half_only_within_tolerance():
    # 1 + 2^-12 is exact in float32; float16 (11 significant bits) rounds it to 1: a change of 2^-12
    model = Gain(1.0 + 2.0 ** -12)
    stored, entry, record = float16_check(model, gain_score, {"gain": 2.0 ** -11})
    assert stored == "float16" and entry["metrics"]["gain"] == 1.0 and record["change"] == {"gain": 2.0 ** -12}
    stored, entry, record = float16_check(model, gain_score, {"gain": 2.0 ** -13})
    assert (stored, record["within_tolerance"]) == ("float32", False) and entry["metrics"]["gain"] == 1.0 + 2.0 ** -12
    assert record["float16"] == {"gain": 1.0} and record["float32"] == {"gain": 1.0 + 2.0 ** -12}
    # a tolerance on a metric the entry does not have compares nothing: no evidence, so float32 (review 16, item 11)
    stored, _, record = float16_check(model, gain_score, {"accuracy": 1.0})
    assert (stored, record["within_tolerance"], record["change"]) == ("float32", False, {})
    # a forced dtype is stored whatever the scores, and the check is still recorded
    stored, _, record = float16_check(model, gain_score, {"gain": 2.0 ** -13}, dtype="float16")
    assert stored == "float16" and record["dtype"] == "float16" and not record["within_tolerance"]
    assert model.gain.item() == 1.0 + 2.0 ** -12  # the model itself is not rounded
    with pytest.raises(InputError, match="dtype='bfloat16' is not allowed"):
        float16_check(model, gain_score, {}, dtype="bfloat16")


# -- the card schema ---------------------------------------------------------------------------------

def test_build_card_has_one_layout():
    entry = result_entry({"mae": 0.1}, {"mae": 0.2}, "centroid", n_windows=4)
    card = build_card(condition={"t60": 0.6, "snr": 10.0}, training={"epochs": 1}, dataset={}, test=entry)
    assert card == {"condition": {"t60": 0.6, "snr": 10.0}, "training": {"epochs": 1}, "dataset": {},
                    "metrics": {"test": {"metrics": {"mae": 0.1}, "n_windows": 4,
                                         "baseline": {"kind": "centroid", "metrics": {"mae": 0.2}}}}}
    assert upgrade_card(card) == card


LEGACY = {
    "per-condition tables": (
        {"all": {"mae": 6.0}, "by_snr": {"0": {"mae": 6.0}},
         "baseline": {"kind": "always 0 degrees", "all": {"mae": 40.0}, "by_snr": {"0": {"mae": 40.0}}}},
        {"metrics": {"mae": 6.0}, "by_snr": {"0": {"mae": 6.0}},
         "baseline": {"kind": "always 0 degrees", "metrics": {"mae": 40.0}, "by_snr": {"0": {"mae": 40.0}}}}),
    "chance": ({"top1": 0.5, "n": 8, "chance": {"top1": 0.125}},
               {"metrics": {"top1": 0.5, "n": 8}, "baseline": {"kind": "chance", "metrics": {"top1": 0.125}}}),
    "flat": ({"mean_error": 15.0, "n": 8}, {"metrics": {"mean_error": 15.0, "n": 8}, "baseline": None}),
}


@pytest.mark.parametrize("layout", LEGACY)
def test_old_result_entries_are_upgraded_on_read(layout):
    old, new = LEGACY[layout]
    card = upgrade_card({"dtype": "float16", "metrics": {"test": old}})
    assert card["metrics"]["test"] == new and upgrade_card(card) == card
    assert describe_test_metrics(card["metrics"]["test"], "cochcnn") == describe_test_metrics(new, "cochcnn")


def test_old_float16_check_moves_to_storage():
    card = upgrade_card({"dtype": "float16", "metrics": {"test": {"metrics": {}}, "float16_check": {
        "top1": {"float32": 0.67, "float16": 0.66}}}})
    assert card["storage"] == {"dtype": "float16", "float32": {"top1": 0.67}, "float16": {"top1": 0.66}}
    assert set(card["metrics"]) == {"test"}
    # a storage record without its dtype takes the card's (review 16, item 12)
    card = upgrade_card({"dtype": "float32", "metrics": {}, "storage": {"float32": {"top1": 0.67}}})
    assert card["storage"] == {"dtype": "float32", "float32": {"top1": 0.67}} and upgrade_card(card) == card


@pytest.mark.skipif(not any(PRETRAINED.glob("*.safetensors")), reason="no shipped checkpoints")
def test_shipped_cards_read_in_the_current_schema_without_rewriting():
    for path in sorted(PRETRAINED.glob("*.safetensors")):
        before = hashlib.sha256(path.read_bytes()).hexdigest()
        test = read_card(path)["metrics"]["test"]
        assert set(test) >= {"metrics", "baseline"} and isinstance(test["metrics"], dict), path.name
        assert test["baseline"] is None or isinstance(test["baseline"]["metrics"], dict), path.name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    text = describe_test_metrics(read_card(PRETRAINED / "cuenet_default.safetensors")["metrics"]["test"], "cuenet")
    assert text.startswith("top-1 ") and "(baseline 1.4%)" in text  # 1/72 guessed at random


def test_a_front_end_cache_is_built_before_the_clock_starts(monkeypatch):
    """Review: the cache was built in the first epoch, so max_minutes and the epoch times counted it."""
    clock = {"now": 0.0}
    monkeypatch.setattr(trainer.time, "monotonic", lambda: clock["now"])
    n, x, y = 40, torch.randn(40, 8), torch.randint(0, 3, (40,))

    def features():
        clock["now"] += 300.0  # five minutes of caching
        return x.numpy().astype(np.float16)

    model = nn.Linear(8, 3)
    hooks = trainer.Hooks(picks=trainer.shuffled(n), assemble=trainer.cached_batches(features, y, torch.device("cpu")),
                          forward=model, loss=nn.functional.cross_entropy)
    run = trainer.fit(model, torch.optim.Adam(model.parameters()), hooks,
                      trainer.Schedule(16, 5, 0, max_minutes=1.0), progress=False)
    assert run.epoch == 5 and run.stopped == "max_epochs"  # the budget was not spent on the cache
    assert run.history["seconds"] == [0.0] * 5 and run.seconds == 0.0
