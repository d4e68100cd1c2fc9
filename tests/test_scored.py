"""Scoring any family's store: the readers, truth and errors in each output kind's units, the ordering
sense of error targets, known answers of the faithfulness curves on constructed direction models, and
faithfulness and sanity end to end on binaural test stores."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner
from torch import nn

from xai_loc.errors import InputError
from xai_loc.experiments.faithfulness import curve_metrics, family_methods, ordering_curves
from xai_loc.experiments.sanity import other_truth
from xai_loc.experiments.scored import ERRORS, EXPLAINED, localization_error, scored_set

M, T = 2, 500
READ = [(0, 3), (1, 100), (0, 17), (1, 499), (0, 250)]  # the only samples the constructed models read
PERCENTAGES = (0, 10, 20, 30, 40, 50, 60, 70)


TINY_TFCNN = {"name": "tiny", "n_train": 2, "test_per_azimuth": 1, "test_snrs": (6.0,)}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Tiny finished test stores: TF-CNN scenes (ear signals, one per azimuth) and cue scenes (cue maps)."""
    from xai_loc.data.cue_scenes import CueSceneSpec
    from xai_loc.data.ipd_ild_scenes import SceneSpec, render_scenes
    from xai_loc.features.binaural_cues import simulate_cue_scenes

    root = tmp_path_factory.mktemp("scored")
    tfcnn = render_scenes(SceneSpec(**TINY_TFCNN), root, progress=False, splits=("test",))["test"]
    cues = simulate_cue_scenes(CueSceneSpec(name="tiny", per_utterance={"train": 1, "test": 1}), "test", root=root)
    return {"tfcnn": tfcnn, "cuenet": cues, "root": root}


def test_a_binaural_checkpoint_names_its_own_test_split(stores, tmp_path):
    from xai_loc.data.ipd_ild_scenes import SceneSpec
    from xai_loc.experiments.scored import family_test_store
    from xai_loc.models import build_model, save_checkpoint
    from xai_loc.models.zoo import shipped_checkpoint

    spec = SceneSpec(**TINY_TFCNN).to_dict()
    condition = {"condition": {"rooms": ["anechoic"], "snr": [-10.0, 30.0]}}
    ckpt = save_checkpoint(build_model("tfcnn"), tmp_path / "tfcnn.safetensors",
                           {**condition, "dataset": {"train": {"spec": spec}}})
    assert family_test_store(ckpt, stores["root"]) == stores["tfcnn"]  # the card's spec: the same store, reused
    bare = save_checkpoint(build_model("tfcnn"), tmp_path / "bare.safetensors", condition)
    with pytest.raises(InputError, match="records no data spec"):
        family_test_store(bare, stores["root"])
    with pytest.raises(InputError, match="simulated paper scene; give --t60 and --snr"):
        family_test_store(shipped_checkpoint("loccnn", 0.6, 10.0), stores["root"])


def test_readers_give_inputs_truth_and_units_of_each_store(stores):
    from xai_loc.models import build_model

    scenes = xr.open_zarr(stores["tfcnn"])
    full = scored_set(stores["tfcnn"])
    assert len(full) == scenes.sizes["example"] and full.reader.units == ("sound_key", "utterance")
    np.testing.assert_array_equal(full.sources, np.unique(scenes["utterance"].values))
    np.testing.assert_allclose(full.per_source.sum(0), 1.0)  # each unit counted once
    tfcnn = build_model("tfcnn")
    np.testing.assert_array_equal(full.truth(tfcnn), scenes["azimuth"].values)  # degrees, positive = right
    x = full.rows.batch(0, 3)
    np.testing.assert_array_equal(x.numpy(), scenes["waveforms"].values[:3])
    # --sources: a seeded spread of the units, nested in larger ones
    two, five = scored_set(stores["tfcnn"], 2), scored_set(stores["tfcnn"], 5)
    assert len(two.sources) == 2 and set(two.sources) <= set(five.sources)
    np.testing.assert_array_equal(two.rows.batch(0, len(two)).numpy(),
                                  scenes["waveforms"].values[np.isin(scenes["utterance"].values, two.sources)])
    # cue maps: the cue network without its front end takes them; labels of its 72-azimuth ring
    cues = scored_set(stores["cuenet"])
    store = xr.open_zarr(stores["cuenet"])
    cuenet = build_model("cuenet")
    from xai_loc.experiments.modelset import ModelSet

    adapted = cues.models(ModelSet({"cuenet": cuenet}))["cuenet"]
    assert tuple(adapted.input_shape) == tuple(store["cues"].shape[1:])
    np.testing.assert_array_equal(cues.truth(adapted), np.round(store["azimuth"].values / 5).astype(int))
    with pytest.raises(InputError, match="only cuenet models take"):
        cues.models(ModelSet({"tfcnn": tfcnn}))
    with pytest.raises(InputError, match="outputs source positions but the store holds directions"):
        full.truth(build_model("loccnn"))


def test_a_folder_without_a_store_is_one_line(tmp_path):
    with pytest.raises(InputError, match="holds no dataset, ear-signal or cue-scene store"):
        scored_set(tmp_path)


def test_errors_in_each_kinds_units():
    class Kind(nn.Module):
        def __init__(self, kind):
            super().__init__()
            self.output_kind = kind

    pos = localization_error(Kind("position"), torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[1.0, 1.0, 1.0]]))
    assert pos.item() == pytest.approx(1.0)  # MAE per coordinate, m
    az = localization_error(Kind("azimuth"), torch.tensor([[179.0], [10.0]]), torch.tensor([-179.0, -20.0]))
    np.testing.assert_allclose(az.numpy(), [2.0, 30.0])  # wrapped, degrees
    cs = localization_error(Kind("cos_sin"), torch.tensor([[2.0, 0.0], [1.0, 1.0]]), torch.tensor([90.0, 45.0]))
    np.testing.assert_allclose(cs.numpy(), [90.0, 0.0], atol=1e-9)  # the angle between vectors, any length
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    lost = localization_error(Kind("direction_classes"), logits, torch.tensor([0, 2]))
    p = torch.softmax(logits.double(), 1)
    np.testing.assert_allclose(lost.numpy(), [1 - p[0, 0].item(), 2 / 3], rtol=1e-12)
    assert {e.units for e in ERRORS.values()} == {"m", "deg", "probability"}
    assert set(EXPLAINED) == set(ERRORS)


def test_other_truth_is_another_value_of_the_store():
    labels = np.array([0, 0, 3, 5, 5, 7])
    other = other_truth(labels, seed=1)
    assert np.all(other != labels) and set(other) <= set(labels)
    np.testing.assert_array_equal(other, other_truth(labels, seed=1))  # seeded
    rows = np.array([[10.0, 0.0], [10.0, 20.0], [30.0, 0.0]])
    assert not np.any(np.all(other_truth(rows, 0) == rows, axis=1))
    with pytest.raises(InputError, match="at least two true directions"):
        other_truth(np.zeros(4), 0)


def _read_weights(n_out: int, gen: torch.Generator) -> torch.Tensor:
    weight = torch.zeros(n_out, M * T)
    for m, t in READ:
        weight[:, m * T + t] = 1.0 + torch.rand(n_out, generator=gen)
    return weight


class SparseClassifier(nn.Module):
    """Logits ``W x`` of 6 direction classes, read from :data:`READ` only."""

    output_kind = "direction_classes"

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(_read_weights(6, torch.Generator().manual_seed(0)) * torch.arange(1.0, 7.0)[:, None])

    def forward(self, x):
        return x.flatten(1) @ self.weight.T


class SparseAzimuth(nn.Module):
    """An azimuth (degrees) ``w . x`` read from :data:`READ` only, 3 degrees per unit of input."""

    output_kind = "azimuth"

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.read = nn.Linear(M * T, 1, bias=False)  # a layer LRP has a rule for
        with torch.no_grad():
            self.read.weight.zero_()
            for m, t in READ:
                self.read.weight[0, m * T + t] = 3.0

    def forward(self, x):
        return self.read(self.flatten(x))


def _read_indicator() -> np.ndarray:
    out = np.zeros((M, T), np.float32)
    for m, t in READ:
        out[m, t] = 1.0
    return out


def test_a_classifiers_curves_are_the_true_class_probability_lost():
    model = SparseClassifier()
    gen = torch.Generator().manual_seed(1)
    x = 0.5 + torch.rand(16, M, T, generator=gen)
    truth = torch.full((16,), 5)  # the class with the largest weights: the model is right and confident
    exact = np.broadcast_to(_read_indicator(), x.shape)
    curves = ordering_curves(model, x, truth, exact, PERCENTAGES, "zero", seed=0)
    p0 = torch.softmax(model(x).double(), 1)[:, 5].detach().numpy()
    np.testing.assert_allclose(curves[:2, 0], np.broadcast_to(1 - p0, (2, 16)), rtol=1e-9)
    # MoRF deletes every read sample at once: all logits 0, p = 1/6; LeRF never reaches them
    np.testing.assert_allclose(curves[0, 1:], 5 / 6, rtol=1e-9)
    np.testing.assert_allclose(curves[1], np.broadcast_to(1 - p0, curves[1].shape), rtol=1e-9)
    # insertion starts from the fill everywhere (p = 1/6) and is exact once the read samples are back
    np.testing.assert_allclose(curves[2, 0], 5 / 6, rtol=1e-9)
    np.testing.assert_allclose(curves[2, 1:], np.broadcast_to(1 - p0, (7, 16)), rtol=1e-9)
    aopc, srg, insertion = curve_metrics(curves.mean(-1))
    assert srg == pytest.approx((5 / 6 - (1 - p0.mean())) * 7 / 8, rel=1e-9) and srg > 0.5
    assert insertion == pytest.approx((5 / 6 + 7 * (1 - p0.mean())) / 8, rel=1e-9)


def test_an_error_target_is_read_with_the_opposite_sign():
    """Relevance for ``angular_error`` grows with the error: its evidence for the answer is negative relevance,
    so the faithfulness orderings rank ``-R`` (the target's sense) and get a positive SRG."""
    from xai_loc.explain import Explainer

    model = SparseAzimuth()
    gen = torch.Generator().manual_seed(2)
    x = 1.0 + 0.2 * torch.rand(12, M, T, generator=gen)  # azimuth 15..18 degrees
    truth = (model(x).detach()[:, 0] - 10.0).double()  # 10 degrees below the prediction: error 10
    with Explainer(model, method="input_x_gradient", target="angular_error") as explainer:
        out = explainer.explain_batch(x, truth.numpy())
        sense = explainer.sense
    assert sense == -1
    with Explainer(model, method="saliency", target="angular_error") as explainer:
        assert explainer.sense == 1  # |gradient| has no sign to flip
    relevance = out["relevance"]
    # d|f - t|/dx = w where f > t: every read sample adds error (relevance w x > 0, summing to f)
    assert np.all(relevance >= 0)
    np.testing.assert_allclose(relevance.reshape(12, -1).sum(1), model(x).detach()[:, 0].numpy(), rtol=1e-5)
    curves = ordering_curves(model, x, truth, relevance * sense, PERCENTAGES, "zero", seed=0)
    # MoRF keeps the read samples (they speak against the answer: ranked last); LeRF deletes them first,
    # which brings the azimuth to 0, closer to the truth (5..8 degrees)
    np.testing.assert_allclose(curves[0], 10.0, rtol=1e-5)
    np.testing.assert_allclose(curves[1, 1:], np.broadcast_to(truth.numpy(), (7, 12)), rtol=1e-5)
    _, srg, _ = curve_metrics(curves.mean(-1))
    assert srg > 2.0
    _, srg_unsigned, _ = curve_metrics(ordering_curves(model, x, truth, relevance, PERCENTAGES, "zero",
                                                       seed=0).mean(-1))
    assert srg_unsigned == pytest.approx(-srg, rel=1e-6)


@pytest.mark.parametrize("method", ["lrp", "input_x_gradient"])
def test_toward_truth_flips_with_the_side_of_the_truth(method):
    """The default target of azimuth models: relevance speaks for the truth on either side of the prediction
    (LRP included: its angular-error seed is positive on both sides, this one is not)."""
    from xai_loc.explain import Explainer

    model = SparseAzimuth()
    x = 1.0 + 0.2 * torch.rand(4, M, T, generator=torch.Generator().manual_seed(3))
    f = model(x).detach()[:, 0].double()
    maps = {}
    for side in (-10.0, 10.0):
        with Explainer(model, method=method, composite="epsilon", target="toward_truth") as explainer:
            out = explainer.explain_batch(x, (f + side).numpy())
        maps[side] = out["relevance"].reshape(4, -1)
        np.testing.assert_allclose(out["explained"], np.sign(side) * f.numpy(), rtol=1e-6)  # q = sign(t - f) f
    np.testing.assert_allclose(maps[10.0], -maps[-10.0], rtol=1e-6)
    assert np.all(maps[10.0].sum(1) > 0)  # the read samples move the azimuth up, toward a truth above it


def test_a_model_of_another_family_is_refused_by_the_store(stores):
    from xai_loc.experiments.faithfulness import run_faithfulness
    from xai_loc.models.zoo import pretrained_dir

    with pytest.raises(InputError, match=r"takes inputs of shape \(2, 22050\), but the store holds \(2, 16000\)"):
        run_faithfulness({"cuenet": str(pretrained_dir() / "cuenet_default.safetensors")}, stores["tfcnn"],
                         methods=["saliency"], n_sources=1)


def test_family_methods_take_the_family_composite():
    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.models import build_model

    def labels(arch):
        return [f"{m}:{c}" for m, c in family_methods(ModelSet({arch: build_model(arch)}), ["lrp:paper", "saliency"])]

    assert labels("loccnn") == ["lrp:paper", "saliency:none"]
    assert labels("tfcnn") == ["lrp:tfcnn", "saliency:none"]
    assert labels("bast") == ["attn_lrp:none", "saliency:none"]
    both = ModelSet({"bast": build_model("bast")})
    assert family_methods(both, ["lrp:paper", "lrp:epsilon_plus_flat", "saliency"]) == [
        ("attn_lrp", "none"), ("saliency", "none")]  # no LRP composite through a transformer
    mixed = ModelSet({"a": build_model("tfcnn"), "b": build_model("cuenet")})
    assert family_methods(mixed, ["lrp:paper"]) == [("lrp", "paper")]  # families disagree: as given


def test_faithfulness_and_sanity_commands_score_binaural_stores(stores, tmp_path):
    from xai_loc.cli import main
    from xai_loc.models.zoo import pretrained_dir

    runner = CliRunner()
    out = tmp_path / "faith"
    result = runner.invoke(main, ["--threads", "1", "faithfulness", "--store", str(stores["tfcnn"]),
                                  "--checkpoint", str(pretrained_dir() / "tfcnn_default.safetensors"),
                                  "--sources", "3", "--methods", "saliency,lrp:tfcnn", "--fills", "zero",
                                  "--percentages", "0,40", "--no-randomized", "--t60", "0.6", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "they do not apply to the store" in result.stderr  # --t60 chooses the paper scene's split only
    assert "angular error in deg" in result.output and "AOPC deg" in result.output
    ds = xr.open_dataset(out / "faithfulness.nc")
    assert ds.attrs["units"] == "deg" and ds.attrs["target"] == "toward_truth" and ds.sizes["source"] == 3
    assert np.isfinite(ds["score"].values).all() and 0 <= float(ds["unperturbed_error"][0]) <= 180
    out = tmp_path / "sanity"
    result = runner.invoke(main, ["--threads", "1", "sanity", "--store", str(stores["cuenet"]),
                                  "--checkpoint", str(pretrained_dir() / "cuenet_default.safetensors"),
                                  "--sources", "3", "--methods", "saliency", "--out", str(out)])
    assert result.exit_code == 0, result.output
    ds = xr.open_dataset(out / "sanity.nc")
    assert ds.attrs["target"] == "true_class_log_odds" and '"truth", "other"' in ds.attrs["random_targets"]
    assert np.isfinite(ds["score"].values).all()
    # a binaural checkpoint on the paper scene's dataset store is one line, exit 2
    result = runner.invoke(main, ["faithfulness", "--store", str(stores["cuenet"]), "--checkpoint",
                                  str(pretrained_dir() / "tfcnn_default.safetensors"), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "only cuenet models take" in result.output
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())
    assert math.isfinite(float(ds["score"].sel({"check": "emprt"}).mean()))


def test_a_dataset_store_alone_is_scored_by_the_shipped_models_of_its_condition(stores, tmp_path):
    from xai_loc.cli import main
    from xai_loc.data.scene import paper_scene
    from xai_loc.data.store import simulate_dataset

    store = simulate_dataset(paper_scene(), "test", 0.15, 25.0, root=tmp_path, n_sources=1, progress=False)
    runner = CliRunner()
    result = runner.invoke(main, ["--threads", "1", "sanity", "--store", str(store), "--model", "loccnn",
                                  "--methods", "saliency", "--convention", "pyroomacoustics", "--out",
                                  str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "--convention chooses how the paper scene's test split is simulated; it does not apply" in result.stderr
    ds = xr.open_dataset(tmp_path / "s" / "sanity.nc")
    assert list(ds["model"].values) == ["loccnn"] and np.isfinite(ds["score"].values).all()
    result = runner.invoke(main, ["sanity", "--store", str(stores["cuenet"]), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "records no T60 and SNR (not a dataset store); give the --checkpoint" in \
        result.output
