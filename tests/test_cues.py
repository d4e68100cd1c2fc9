"""Binaural cue probes: stimuli, natural cues, the ITD/ILD probe on a known model, relevance, behaviour."""
import json

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

from xai_loc.errors import InputError
from xai_loc.experiments.cues import (
    band_noise,
    behaviour_statistics,
    duplex_probe,
    duplex_relevance,
    impose_ild,
    impose_itd,
    interaural_lag,
    natural_cues,
    run_behaviour,
)

FS = 48000


class ITDReader(nn.Module):
    """A hand-made 'model': answers the azimuth ``k * ITD`` (degrees per microsecond) on the
    72-azimuth grid, where ITD is the interaural lag of its input (positive: left leads)."""

    head_name = "azimuth"

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        itd = interaural_lag(x.detach().cpu().numpy(), FS)
        label = np.mod(np.round(self.k * itd / 5.0).astype(int), 72)
        return 10.0 * nn.functional.one_hot(torch.as_tensor(label), 72).float()


def test_imposed_itd_and_ild_come_back():
    rng = np.random.default_rng(0)
    x = np.stack([band_noise("wide", 4800, FS, rng)] * 2)
    assert interaural_lag(impose_itd(x, 250.0, FS), FS) == pytest.approx(250.0, abs=2.0)
    assert interaural_lag(impose_itd(x, -120.0, FS), FS) == pytest.approx(-120.0, abs=2.0)
    y = impose_ild(x, 6.0)
    assert 10 * np.log10(np.sum(y[0] ** 2) / np.sum(y[1] ** 2)) == pytest.approx(6.0)
    batch = impose_itd(np.stack([x] * 3)[:, None], np.array([[0.0, 100.0, 200.0, 300.0]]), FS)
    assert batch.shape == (3, 4, 2, 4800)
    np.testing.assert_allclose(interaural_lag(batch, FS)[0], [0, 100, 200, 300], atol=2.0)
    high = np.stack([band_noise("high", 4800, FS, rng)] * 2)
    assert interaural_lag(impose_itd(high, 400.0, FS), FS, envelope=True) == pytest.approx(400.0, abs=10.0)


def test_kemar_cues_follow_the_duplex_pattern():
    low, high = natural_cues("low"), natural_cues("high")
    at = {v: i for i, v in enumerate(low["lateral"])}
    assert 550 < low["itd"][at[90.0]] < 900 and low["itd"][at[-90.0]] < -550
    assert abs(low["itd"][at[0.0]]) < 30
    assert np.all(np.diff(low["itd"][at[-60.0]:at[60.0] + 1]) > 0)  # monotonic in front
    # head shadow grows with frequency: larger ILDs (and ILD gradients) in the high band
    for angle in (15.0, 30.0, 45.0, 60.0):
        assert high["ild"][at[angle]] > low["ild"][at[angle]] + 2.0 > 2.0
    np.testing.assert_allclose(high["ild"], -high["ild"][::-1], atol=1e-6)  # the shipped KEMAR set is symmetric


def test_duplex_probe_returns_the_known_itd_weight():
    k = 0.1  # degrees per microsecond
    probe = duplex_probe(ITDReader(k), bands=("low", "high"), azimuths=(-30.0, 0.0, 30.0), n_tokens=2,
                         fs=FS, n_samples=4800)
    assert probe["response_itd"].dims == ("band", "azimuth", "itd_offset", "token")
    np.testing.assert_allclose(probe["itd_slope"].values, k, rtol=0.05)
    np.testing.assert_allclose(probe["ild_slope"].values, 0.0, atol=1e-9)
    # weight = response shift per us x natural us per degree
    grad = probe["natural_itd_gradient"]
    assert float(grad.min()) > 4.0  # KEMAR: several us per degree near the midline
    np.testing.assert_allclose(probe["itd_weight"].values,
                               (probe["itd_slope_by_azimuth"] * grad).mean("azimuth").values)
    assert probe.attrs["head"] == "azimuth" and probe["itd_offset"].attrs["units"] == "us"
    with pytest.raises(InputError, match="including 0"):
        duplex_probe(ITDReader(k), itd_offsets=(100.0, 200.0), fs=FS, n_samples=4800)

    from xai_loc.plots.hofman import plot_cues

    plot_cues(probe).savefig("/dev/null", format="png")


class CueReader(nn.Module):
    """An ideal listener of one cue: reads the low band's ITD or ILD of its input and answers the
    frontal lateral angle at which KEMAR has that cue, as a posterior peaked there on the 72 azimuths."""

    head_name = "azimuth"

    def __init__(self, cue: str) -> None:
        from xai_loc.models.classifier_training import lateral_angle
        from xai_loc.models.cochleagram_cnn import HEAD_GRIDS

        super().__init__()
        natural = natural_cues("low", fs=FS)
        rising = np.abs(natural["lateral"]) <= (90.0 if cue == "itd" else 60.0)  # where the cue grows with the angle
        assert np.all(np.diff(natural[cue][rising]) > 0)
        self.cue, self.curve = cue, (natural[cue][rising], natural["lateral"][rising])
        self.classes = lateral_angle(*HEAD_GRIDS["azimuth"].directions())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().double().numpy()
        if self.cue == "itd":
            value = interaural_lag(x, FS)
        else:
            energy = (x**2).sum(-1)
            value = 10.0 * np.log10(energy[:, 0] / energy[:, 1])
        lateral = np.interp(value, *self.curve)
        return torch.as_tensor(-(((self.classes[None] - lateral[:, None]) / 3.0) ** 2))


@pytest.mark.parametrize("cue", ["itd", "ild"])
def test_an_ideal_listener_of_one_cue_gets_its_weight(cue):
    """Calibration of the weights: about 1 for the cue an ideal listener reads, 0 for the other. For
    ILD it is 0.85, not 1: KEMAR's ILD is not linear over the +-10 dB offsets while its gradient is
    taken locally (README, binaural cues)."""
    probe = duplex_probe(CueReader(cue), bands=("low",), n_tokens=1, response="mean", fs=FS, n_samples=4800)
    weight, other = (float(probe[f"{c}_weight"].sel(band="low")) for c in (cue, "ild" if cue == "itd" else "itd"))
    assert abs(other) < 0.01
    assert 0.95 < weight < 1.05 if cue == "itd" else 0.8 < weight < 0.9


def _tiny_model(n_samples: int = 4800):
    from xai_loc.models import build_model

    torch.manual_seed(0)
    model = build_model("cochcnn", layers=["c4 1x8", "p1x8", "c8 2x4", "p2x4"], n_samples=n_samples, dense=32)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                m.running_var.uniform_(0.5, 1.5)
                m.running_mean.normal_(0.0, 0.2)
    return model.eval()


def test_duplex_relevance_mass_and_lags():
    view = duplex_relevance(_tiny_model(), bands=("low",), azimuths=(0.0, 30.0), itd_offsets=(-300.0, 0.0, 300.0))
    assert view.sizes["stimulus"] == 6 and view["relevance_mass"].dims == ("stimulus", "ear", "frequency")
    # shares of |relevance| (a signed total can be negative or ~0 and flip or blow up a map): non-negative,
    # summing to 1 to float64 rounding over 78 terms
    assert view["relevance_mass"].dtype == np.float64 and (view["relevance_mass"].values >= 0).all()
    np.testing.assert_allclose(view["relevance_mass"].sum(("ear", "frequency")).values, 1.0, rtol=0, atol=1e-13)
    assert view["band_mass"].dims == ("band", "ear", "frequency") and view["frequency"].attrs["units"] == "Hz"
    offsets = view["itd_offset"].values
    itd = view["stimulus_itd"].values
    assert np.all(np.diff(itd[:3]) > 250) and np.all(offsets[:3] == [-300, 0, 300])  # the imposed ITD is measured
    assert np.isfinite(view["relevance_lag"].values).all() and np.isfinite(view["lag_slope"].values).all()


@pytest.mark.parametrize("deaf", [0, 1])
def test_duplex_view_through_lrp_of_a_network_deaf_in_one_ear(deaf):
    """Known answer through the real pipeline (front end, cochleagram CNN, LRP): with the first
    convolution's weights of one ear zeroed, that ear's cochleagram and waveform get no relevance
    at all, the other ear all of it, and no interaural lag of the relevance exists (NaN, not the
    window's edge that an all-zero correlation's arg-max would give)."""
    model = _tiny_model()
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        first.weight[:, deaf] = 0.0
    view = duplex_relevance(model, bands=("low", "high"), azimuths=(0.0, 30.0), itd_offsets=(-300.0, 0.0, 300.0))
    by_ear = view["relevance_mass"].sum("frequency").values
    np.testing.assert_array_equal(by_ear[:, deaf], 0.0)
    np.testing.assert_allclose(by_ear[:, 1 - deaf], 1.0, rtol=0, atol=1e-13)
    assert np.isnan(view["relevance_lag"].values).all() and np.isnan(view["lag_slope"].values).all()
    assert np.isfinite(view["stimulus_itd"].values).all() and (view["lag_slope_n"].values == 0).all()


def test_interaural_lag_of_a_silent_ear_is_nan():
    rng = np.random.default_rng(0)
    x = impose_itd(np.stack([rng.standard_normal(4800)] * 2), np.array([200.0, 0.0, 0.0]), FS)
    x[1, 0] = 0.0
    x[2] = 0.0
    assert interaural_lag(x[0], FS) == pytest.approx(200.0, abs=2.0)
    for envelope in (False, True):
        assert np.isnan(interaural_lag(x[1:], FS, envelope=envelope)).all()


@pytest.mark.parametrize("swap, slope, one_eared", [(False, 1.0, False), (True, -1.0, False), (False, 1.0, True)])
def test_duplex_view_measures_the_lag_the_relevance_carries(monkeypatch, swap, slope, one_eared):
    """A stand-in explainer whose waveform relevance is the stimulus itself (or its ears swapped): the
    relevance lag must follow the imposed ITD with slope 1 (or -1), on fine structure in the low band
    and on the envelope in the high band; with the right ear's relevance zeroed for every other
    stimulus, those have no lag and the slope is fitted over the rest."""
    import xai_loc.explain.cochcnn

    model = _tiny_model()
    n_freq = len(model.centre_frequencies)

    def relevance_is_the_input(net, waveforms, **_):
        wave = np.asarray(waveforms, dtype=np.float64)[:, ::-1] if swap else np.array(waveforms, np.float64)
        if one_eared:
            wave[1::2, 1] = 0.0
        coch = np.ones((len(wave), 2, n_freq, 4))
        return {"waveform": xr.DataArray(wave, dims=("example", "ear", "time"), attrs={"model": "stand-in"}),
                "cochleagram": xr.DataArray(coch, dims=("example", "ear", "frequency", "frame"))}

    monkeypatch.setattr(xai_loc.explain.cochcnn, "explain_cochcnn", relevance_is_the_input)
    view = duplex_relevance(model, bands=("low", "high"), azimuths=(0.0, 30.0),
                            itd_offsets=(-300.0, -150.0, 0.0, 150.0, 300.0))
    np.testing.assert_allclose(view["lag_slope"].values, [slope, slope], atol=0.05)
    np.testing.assert_allclose(view["lag_slope_r"].values, [slope, slope], atol=0.01)
    lag, itd = view["relevance_lag"].values, view["stimulus_itd"].values
    kept = np.arange(len(lag)) % 2 == 0 if one_eared else np.ones(len(lag), bool)
    assert np.isnan(lag[~kept]).all() and list(view["lag_slope_n"].values) == [kept[:10].sum(), kept[10:].sum()]
    np.testing.assert_allclose(lag[kept], (-itd if swap else itd)[kept], atol=25.0)  # about one sample at 48 kHz
    assert view.attrs["model"] == "stand-in" and np.all(view["relevance_mass"].values == 1 / (2 * n_freq))


def test_probe_tokens_follow_the_band_not_its_place_in_the_list():
    from xai_loc.experiments.cues import duplex_probe

    kw = {"azimuths": (0.0, 30.0), "n_tokens": 1, "response": "mean"}
    alone = duplex_probe(_tiny_model(), bands=("wide",), **kw)
    second = duplex_probe(_tiny_model(), bands=("low", "wide"), **kw)
    np.testing.assert_array_equal(alone["response_itd"].sel(band="wide").values,
                                  second["response_itd"].sel(band="wide").values)


def test_duplex_options_are_checked_before_anything_is_written(tmp_path):
    from xai_loc.errors import InputError
    from xai_loc.experiments.cues import run_duplex_probe

    with pytest.raises(InputError, match="bogus"):
        run_duplex_probe(_tiny_model(), tmp_path / "a", n_tokens=1, bogus=1)
    with pytest.raises(InputError, match="only applies to the relevance view"):
        run_duplex_probe(_tiny_model(), tmp_path / "b", relevance=False, n_tokens=1, gamma=0.5)
    assert not list(tmp_path.rglob("*.nc"))


def test_behaviour_statistics_and_hofman_figure(tmp_path):
    from xai_loc.plots.hofman import plot_hofman

    az = np.repeat(np.arange(0.0, 360.0, 30.0), 7 * 2)
    el = np.tile(np.repeat(np.arange(0.0, 70.0, 10.0), 2), 12)
    resp_el = 0.5 * el + 10.0
    resp_az = np.where(az == 30.0, 150.0, az)  # one target always front-back confused
    ds = xr.Dataset({"response_azimuth": ("example", resp_az), "response_elevation": ("example", resp_el)},
                    coords={"target_azimuth": ("example", az), "target_elevation": ("example", el)},
                    attrs={"metrics": json.dumps({}), "baseline": json.dumps({})})
    stats = behaviour_statistics(ds)
    assert stats["elevation_gain"] == pytest.approx(0.5) and stats["elevation_bias"] == pytest.approx(10.0)
    assert stats["azimuth_rmse_folded"] == pytest.approx(0.0, abs=1e-9) and stats["azimuth_rmse"] > 0
    assert stats["front_back_rate"] == pytest.approx(14 / (az.size - 2 * 14))  # 90 and 270 are not eligible
    assert stats["azimuth_variability"] == pytest.approx(0.0, abs=1e-4)
    assert sum(stats["grid"]["count"]) == az.size and len(stats["grid"]["count"]) == 12 * 7
    plot_hofman(ds, stats).savefig(tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 10_000


def test_run_behaviour_writes_responses_and_figure(tmp_path):
    from xai_loc.data.binaural_store import BinauralSpec, simulate_binaural

    spec = BinauralSpec(name="b", rooms=("anechoic",), kinds=("white_burst",), n_sounds=4, per_sound=2,
                        test_fraction=0.5, duration=0.1, snr=None)
    store = simulate_binaural(spec, "test", root=tmp_path, progress=False)
    paths = run_behaviour(_tiny_model(), store, tmp_path / "out")
    responses = xr.open_dataset(paths["responses"])
    assert responses.sizes["example"] == 4 and "hofman" in responses.attrs and set(paths) == {"responses"}
    from xai_loc.plots.redraw import draw

    # drawn from the stored file alone
    assert draw(paths.values()) == [tmp_path / "out" / "hofman.png", tmp_path / "out" / "hofman.pdf"]
    assert (tmp_path / "out" / "hofman.png").stat().st_size > 10_000
    assert set(json.loads(responses.attrs["metrics"])) >= {"accuracy", "azimuth_error", "front_back_rate"}


def test_mirror_targets_share_a_laterality_group():
    """Review: asin(sin 340 deg) is 19.999999999999993, so 340 deg was grouped near the median plane and its
    mirror 20 deg as intermediate; over the 72 cue-scene azimuths every group holds as many left as right."""
    from xai_loc.experiments.cue_probe import reliance_table

    az = np.arange(0.0, 360.0, 5.0)
    side = np.sign(np.round(np.sin(np.deg2rad(az)), 9))  # +1 left, -1 right, 0 on the median plane
    n = az.size
    relevance = xr.Dataset({"relevance": (("example", "cue", "band"), np.ones((n, 3, 2))),
                            "fusion_relevance": (("example", "cue"), np.ones((n, 3))),
                            "attention": (("example", "cue"), np.stack([side > 0, side < 0, side == 0], 1) * 1.0),
                            "logit": ("example", np.full(n, 6.0))},
                           coords={"azimuth": ("example", az), "cue": ["itd", "ild", "ic"],
                                   "frequency": ("band", [500.0, 4000.0])})
    table = reliance_table(relevance)
    # |lateral| 0-15 (0 and 180 once each), 20-45, 50-90 (90 and 270 once each)
    assert table["n_by_laterality"].values.tolist() == [2 + 3 * 4, 6 * 4, 8 * 4 + 2]
    left, right, median = table["attention_by_laterality"].values.T  # the share of each side in the group
    np.testing.assert_array_equal(left, right)
    np.testing.assert_allclose(median, [2 / 14, 0.0, 0.0])


def test_hofman_bins_take_half_open_ranges():
    """Review: np.round (half to even) gave the 30-degree bins of a 5-degree target grid 7, 5, 7, 5 ... targets."""
    az = np.arange(0.0, 360.0, 5.0)
    zeros = np.zeros_like(az)
    ds = xr.Dataset({"response_azimuth": ("example", az), "response_elevation": ("example", zeros)},
                    coords={"target_azimuth": ("example", az), "target_elevation": ("example", zeros)})
    grid = behaviour_statistics(ds)["grid"]
    assert grid["azimuth_bin"] == np.arange(0.0, 360.0, 30.0).tolist() and grid["count"] == [6] * 12
    # [c - 15, c + 15): 345 .. 10 around 0 (wrapped from 360), 15 .. 40 around 30
    assert grid["target_azimuth"][:2] == [pytest.approx(357.5), pytest.approx(27.5)]


def test_interaural_lag_needs_a_window_of_at_least_one_lag_step():
    """Review: a window under half a lag step (or negative) searched the whole correlation: max_lag=1e-6 gave
    200.5 us, -1e-3 gave 341534 us."""
    rng = np.random.default_rng(0)
    x = impose_itd(np.stack([rng.standard_normal(4800)] * 2), 200.0, FS)
    step = 1e6 / (8 * FS)  # microseconds
    for bad in (1e-6, 0.5 * step * 1e-6, 0.0, -1e-3, float("nan")):
        with pytest.raises(InputError, match=rf"^max_lag={bad!r} is not allowed; use more than 1.302e-06 s "):
            interaural_lag(x, FS, max_lag=bad)
    assert np.isnan(interaural_lag(x, FS, max_lag=0.6 * step * 1e-6))  # 200 us lies beyond the +-1 step window
    assert interaural_lag(x, FS, max_lag=300e-6) == pytest.approx(200.0, abs=2.0)


def test_ipd_ild_probe_refuses_an_snr_given_twice(tmp_path):
    from xai_loc.experiments.ipd_ild_probe import run_ipd_ild_probe
    from xai_loc.models import build_model

    model = build_model("tfcnn")
    waveforms = np.random.default_rng(0).standard_normal((4, 2, model.n_samples)).astype(np.float32)
    scenes = xr.Dataset({"waveforms": (("example", "ear", "time"), waveforms)},
                        coords={"azimuth": ("example", [0.0, 30.0, 0.0, 30.0]),
                                "snr": ("example", [0.0, 0.0, 10.0, 10.0])})
    for snrs, says in (([0, 0], "0"), ([10, 0, 10 + 1e-12], "10"), ([5], "5")):  # 10 + 1e-12: the same examples
        with pytest.raises(InputError, match=f"^snrs {says} is not allowed; give each once, some of the test SNRs "
                                             "0, 10 dB$"):
            run_ipd_ild_probe(model, scenes, tmp_path / "out", snrs=snrs)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bands, frames", [(16, 50), (32, 7)])
def test_cue_ablation_refuses_maps_the_model_does_not_take(bands, frames):
    """Review: 16 bands raised a torch RuntimeError and 7 frames were scored, where cue_relevance refuses both."""
    from xai_loc.experiments.cue_probe import cue_ablation
    from xai_loc.features.binaural_cues import BinauralCues
    from xai_loc.models import build_model

    model = build_model("cuenet", channels=4, hidden=8)
    assert model.cue_shape == (3, 32, 50)
    store = xr.Dataset({"cues": (("example", "cue", "band", "frame"), np.ones((4, 3, bands, frames), np.float32))},
                       coords={"azimuth": ("example", [0.0, 90.0, 180.0, 270.0])},
                       attrs={"front_end": json.dumps(BinauralCues().config)})
    with pytest.raises(InputError, match=rf"^the store's cue maps are \(3, {bands}, {frames}\) but the model takes "
                                         r"\(3, 32, 50\)"):
        cue_ablation(model, store)
