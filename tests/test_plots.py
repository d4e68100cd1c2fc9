"""Figures: file names that keep a condition's dots, damaged results refused before drawing, TDOA pairs
pooled per distance, and the inspection figure's input checks."""
import shutil

import matplotlib
import numpy as np
import pytest
import xarray as xr

from xai_loc.errors import InputError

matplotlib.use("Agg")


def _perturbation(t60: float) -> xr.Dataset:
    pct = [0.0, 10.0, 50.0]
    curve = np.array([[[0.1, 0.2, 0.3], [0.1, 0.15, 0.2]]])
    return xr.Dataset({"mae_mean": (("model", "mode", "percentage"), curve + t60, {"units": "m"}),
                       "mae": (("model", "mode", "percentage", "xyz"), np.repeat((curve + t60)[..., None], 3, -1)),
                       "baseline_mae": ("xyz", [0.12, 0.14, 0.13]), "baseline_mae_mean": ((), 0.13),
                       "aopc": (("model", "mode"), [[0.1, 0.05]])},
                      coords={"model": ["loccnn"], "mode": ["relevance", "energy"], "percentage": pct,
                              "xyz": ["x", "y", "z"]},
                      attrs={"t60": t60, "snr": 10.0, "method": "lrp", "fill": "noise", "n_windows": 7})


def test_figure_names_keep_the_conditions_dots(tmp_path):
    from xai_loc.plots.perturbation import plot_perturbation

    first = plot_perturbation(_perturbation(0.6), tmp_path / "perturbation_t60-0.6_snr-10")
    second = plot_perturbation(_perturbation(0.4), tmp_path / "perturbation_t60-0.4_snr-15")
    assert [p.name for p in first + second] == ["perturbation_t60-0.6_snr-10.png", "perturbation_t60-0.6_snr-10.pdf",
                                                "perturbation_t60-0.4_snr-15.png", "perturbation_t60-0.4_snr-15.pdf"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in first + second)


def test_a_figure_pair_is_replaced_together_or_not_at_all(tmp_path):
    import matplotlib.pyplot as plt

    from xai_loc.io import save_figure_pair

    stem = tmp_path / "perturbation_t60-0.6_snr-10"
    for suffix in (".png", ".pdf"):
        stem.with_name(stem.name + suffix).write_bytes(b"old " + suffix.encode())
    fig = plt.figure()
    render = fig.savefig

    def pdf_fails(path, **kwargs):
        if str(path).endswith(".pdf"):
            raise OSError("no space left on device")
        render(path, **kwargs)

    fig.savefig = pdf_fails
    with pytest.raises(OSError):
        save_figure_pair(fig, stem)
    assert sorted(p.read_bytes() for p in tmp_path.iterdir()) == [b"old .pdf", b"old .png"]
    assert not plt.fignum_exists(fig.number)
    written = save_figure_pair(plt.figure(), stem)
    assert [p.read_bytes()[:4] for p in written] == [b"\x89PNG", b"%PDF"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)


def test_run_title_names_condition_method_and_fill():
    from xai_loc.plots.labels import run_title

    assert run_title(_perturbation(0.6)) == "T60 0.6 s, SNR 10 dB, lrp, noise fill, 7 windows"


def test_a_result_lacking_what_its_figure_needs_is_refused_before_any_figure(tmp_path, monkeypatch):
    from xai_loc.plots.redraw import draw, draw_result

    good = tmp_path / "good" / "perturbation.nc"
    good.parent.mkdir()
    _perturbation(0.6).to_netcdf(good, engine="h5netcdf")
    bad = tmp_path / "bad" / "perturbation.nc"
    bad.parent.mkdir()
    _perturbation(0.6).drop_vars("mae_mean").to_netcdf(bad, engine="h5netcdf")
    with pytest.raises(InputError, match="has no 'mae_mean'"):
        draw([good, bad])
    assert sorted(p.name for p in tmp_path.rglob("*.p*")) == []  # nothing drawn, the good file included
    # a file that passes the check but lacks a label its figure selects: one line, no figure
    from xai_loc.plots import redraw

    original, calls = redraw.DRAWERS["perturbation"], []

    def drawer(draw):
        return redraw.Drawer(lambda ds, path, stem: draw(ds, path), original.stems)

    monkeypatch.setitem(redraw.DRAWERS, "perturbation", drawer(lambda ds, path: ds.sel(mode="morf")))
    with pytest.raises(InputError, match="perturbation result .* cannot be drawn .*run 'xai-loc perturb'"):
        draw_result("perturbation", _perturbation(0.6), tmp_path / "odd" / "perturbation.nc")
    assert not (tmp_path / "odd").exists()
    # review: one result that cannot be drawn left the figures of the results drawn before it
    def first_draws_then_fails(ds, path):
        calls.append(path)
        return original(ds, path) if len(calls) == 1 else ds.sel(mode="morf")

    shutil.copy(good, bad)
    monkeypatch.setitem(redraw.DRAWERS, "perturbation", drawer(first_draws_then_fails))
    with pytest.raises(InputError, match="cannot be drawn"):
        draw([good, bad])
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.rglob("*.p*")) == [] and not list(tmp_path.rglob(".figures-*"))
    monkeypatch.setitem(redraw.DRAWERS, "perturbation", original)
    written = draw([good])
    assert written and all(p.parent == good.parent and p.is_file() for p in written)
    # a staging folder a killed run left behind (links to results) holds no results of its own
    leftover = good.parent / ".figures-x"
    leftover.mkdir()
    (leftover / "perturbation.nc").symlink_to(good)
    assert redraw.result_files(tmp_path, "perturbation.nc") == [bad, good]
    # a KeyError of the drawing code itself is a bug and surfaces as one, not as a damaged file
    monkeypatch.setitem(redraw.DRAWERS, "perturbation", drawer(lambda ds, path: {}["colour"]))
    with pytest.raises(KeyError, match="colour"):
        draw_result("perturbation", _perturbation(0.6), tmp_path / "odd" / "perturbation.nc")


def test_tdoa_pairs_at_one_distance_are_pooled():
    from xai_loc.plots.tdoa import _by_distance

    dist, values, pooled = _by_distance(np.array([0.3, 0.15, 0.15, 0.45]), np.array([1.0, 2.0, 4.0, np.nan]))
    np.testing.assert_array_equal(dist, [0.15, 0.3, 0.45])
    np.testing.assert_array_equal(values, [3.0, 1.0, np.nan])
    assert pooled
    assert not _by_distance(np.array([0.3, 0.15]), np.array([1.0, 2.0]))[2]


def test_faithfulness_figure_draws_the_randomized_model(tmp_path, monkeypatch):
    import matplotlib.axes

    from xai_loc.plots.faithfulness import plot_faithfulness

    dims = ("model", "method", "ordering", "fill", "mode", "percentage")
    shape = (1, 2, 3, 1, 3, 2)
    curve = np.arange(np.prod(shape), dtype=float).reshape(shape)
    ds = xr.Dataset({"curve": (dims, curve)}, coords={
        "model": ["loccnn"], "method": ["lrp", "saliency"], "ordering": ["relevance", "randomized", "random"],
        "fill": ["zero"], "mode": ["morf", "lerf", "insertion"], "percentage": [0.0, 50.0]})
    labels = []
    original = matplotlib.axes.Axes.plot

    def plot(self, *args, **kwargs):
        labels.append(kwargs.get("label"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    plot_faithfulness(ds, tmp_path / "faithfulness")
    assert {"lrp, randomized model", "saliency, randomized model", "random order"} <= set(labels)
    labels.clear()
    plot_faithfulness(ds.sel(ordering=["relevance"]), tmp_path / "only")  # no baselines stored: none drawn
    assert set(labels) == {"lrp", "saliency", None}


def test_hofman_text_falls_back_to_azimuth_accuracy():
    from xai_loc.plots.hofman import _accuracy_line

    def fmt(v):
        return "n/a" if v is None else f"{v:.3g}"

    assert _accuracy_line({"accuracy": None, "azimuth_accuracy": 0.5}, {"azimuth_accuracy": 0.1}, fmt) \
        == "azimuth accuracy 0.5 (chance 0.1)"
    assert _accuracy_line({"accuracy": 0.7}, {"accuracy": 0.2}, fmt) == "accuracy 0.7 (chance 0.2)"


def test_inspection_refuses_what_it_cannot_draw(tmp_path):
    from xai_loc.plots.inspection import plot_inspection

    rng = np.random.default_rng(0)
    coords = {"window": [3, 4], "mic": [0, 1], "time": np.arange(64) / 16000.0,
              "source_x": ("window", [1.0, 1.2]), "source_y": ("window", [2.0, 2.0]),
              "source_z": ("window", [1.5, 1.5]), "mic_x": ("mic", [0.0, 0.15]), "mic_y": ("mic", [0.0, 0.0]),
              "mic_z": ("mic", [1.0, 1.0])}
    signals = xr.DataArray(rng.standard_normal((2, 2, 64)), dims=("window", "mic", "time"), coords=coords,
                           attrs={"fs": 16000.0})
    relevance = signals.copy(data=rng.standard_normal((2, 2, 64)))
    # a bare signals array: true delays from the relevance's source and microphone positions
    paths = plot_inspection(signals, relevance, tmp_path / "ok", windows=[4], pair=(0, 1))
    assert [p.name for p in paths] == ["ok.png", "ok.pdf"]
    with pytest.raises(InputError, match="window 4 is not in relevance"):
        plot_inspection(signals, relevance.sel(window=[3]), tmp_path / "a", windows=[4], pair=(0, 1))
    with pytest.raises(InputError, match=r"time_range \(1.0, 2.0\) s selects no sample"):
        plot_inspection(signals, relevance, tmp_path / "b", windows=[4], pair=(0, 1), time_range=(1.0, 2.0))
    signals.attrs.clear()
    relevance.attrs.clear()
    with pytest.raises(InputError, match="sampling rate"):
        plot_inspection(signals, relevance, tmp_path / "c", windows=[4], pair=(0, 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.pdf", "ok.png"]


def test_a_deep_cascade_keeps_a_readable_sanity_figure(tmp_path, monkeypatch):
    from xai_loc.plots import sanity

    stages = ["original", *[f"blocks.{k}.attn" for k in range(52)]]
    sim = np.linspace(1.0, 0.0, len(stages))[None, None, :, None] * np.ones((1, 1, 1, 2))
    ds = xr.Dataset({"similarity": (("model", "method", "stage", "metric"), sim),
                     "similarity_ci": (("model", "method", "stage", "metric", "bound"),
                                       np.stack([sim - 0.1, sim + 0.1], axis=-1))},
                    coords={"model": ["bast"], "method": ["lrp"], "stage": stages, "metric": ["spearman", "pearson"]})
    drawn = {}
    monkeypatch.setattr(sanity, "save_figure_pair", lambda fig, stem: drawn.setdefault("fig", fig))
    sanity.plot_sanity(ds, tmp_path / "sanity")
    fig = drawn["fig"]
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert len(labels) <= sanity._MAX_TICKS + 1 and labels[0] == "original" and labels[-1] == "blocks.51.attn"
    assert fig.get_size_inches()[0] <= 0.45 * sanity._MAX_TICKS + 4.0
