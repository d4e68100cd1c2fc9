"""Regression tests of the review of figures and the report: outputs checked first, one saver, damaged results."""
from __future__ import annotations

import os

import numpy as np
import pytest
import xarray as xr
from helpers import perturbation_result

from xai_loc.errors import InputError
from xai_loc.io import write_dataset_atomic

ESTIMATORS = ["signals", "loccnn", "loccnn-randomized", "zero-lag"]


def _perturbation(**attrs) -> xr.Dataset:
    return perturbation_result(**attrs)


def _tdoa(**attrs) -> xr.Dataset:
    rng = np.random.default_rng(0)
    e, p, w = len(ESTIMATORS), 2, 3
    return xr.Dataset(
        {"delay": (("estimator", "pair", "window"), rng.normal(size=(e, p, w))),
         "truth": (("pair", "window"), rng.normal(size=(p, w))),
         "threshold": (("pair", "window"), [[1.0, 2.0, np.nan], [3.0, 5.0, 4.0]]),
         "anomalies_percent": (("estimator", "pair"), rng.uniform(0, 100, (e, p))),
         "mae_samples": (("estimator", "pair"), rng.uniform(0, 2, (e, p))),
         "srp_error": (("srp_estimator", "srp_metric"), rng.uniform(0, 1, (2, 3)))},
        coords={"estimator": ESTIMATORS, "pair": ["7-8", "6-9"], "pair_distance": ("pair", [0.15, 0.45]),
                "max_lag": ("pair", [10.0, 24.0]), "window": [0, 1, 2], "srp_estimator": ["signals", "constant"],
                "srp_metric": ["x", "y", "euclidean"]},
        attrs={"t60": 0.6, "snr": 10.0, "method": "lrp", "srp_windows": 2, "fs": 16000.0, "c": 343.0, "interp": 16,
               "lag_margin": 3.0, **attrs})


def _sanity() -> xr.Dataset:
    sim = np.linspace(1.0, 0.0, 3)[None, None, :, None] * np.ones((1, 1, 1, 2))
    return xr.Dataset({"similarity": (("model", "method", "stage", "metric"), sim),
                       "similarity_ci": (("model", "method", "stage", "metric", "bound"),
                                         np.stack([sim - 0.1, sim + 0.1], axis=-1))},
                      coords={"model": ["loccnn"], "method": ["lrp"], "stage": ["original", "fc2", "fc1"],
                              "metric": ["spearman", "pearson"], "bound": ["low", "high"]},
                      attrs={"t60": 0.6, "snr": 10.0, "target": "truth"})


def _components() -> xr.Dataset:
    share = np.full((1, 1, 1, 1, 4), 0.25)
    ci = np.stack([share - 0.05, share + 0.1], -1)
    return xr.Dataset({"share": (("model", "method", "ordering", "split", "component"), share),
                       "share_ci": (("model", "method", "ordering", "split", "component", "bound"), ci),
                       "reference_share": (("split", "component"), share[0, 0, 0]),
                       "reference_share_ci": (("split", "component", "bound"), ci[0, 0, 0])},
                      coords={"model": ["loccnn"], "method": ["lrp"], "ordering": ["relevance"], "split": ["time"],
                              "component": ["direct", "early", "late", "noise"], "bound": ["low", "high"]},
                      attrs={"t60": 0.6, "snr": 10.0})


# 1 -------------------------------------------------------------------------------------------------------------
def test_an_experiment_with_a_folder_in_place_of_its_figure_stops_before_the_run(monkeypatch, tmp_path):
    from xai_loc.experiments.registry import EXPERIMENTS
    from xai_loc.study import run_experiment

    ran = []
    monkeypatch.setattr(EXPERIMENTS["perturbation"], "run", lambda *a, **k: ran.append(1))
    (tmp_path / "perturbation.pdf").mkdir()
    with pytest.raises(InputError, match=r"perturbation\.pdf.*is a folder"):
        run_experiment("perturbation", {}, "data", tmp_path)
    assert not ran and [p.name for p in tmp_path.iterdir()] == ["perturbation.pdf"]


# 2 -------------------------------------------------------------------------------------------------------------
def test_figures_check_every_figure_path_first_and_name_the_users_file(tmp_path):
    from xai_loc.plots.redraw import draw

    result = write_dataset_atomic(_perturbation(), tmp_path / "perturbation.nc")
    (tmp_path / "perturbation.pdf").mkdir()
    with pytest.raises(InputError) as err:
        draw([result])
    assert str(tmp_path / "perturbation.pdf") in str(err.value) and ".figures-" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["perturbation.nc", "perturbation.pdf"]


# 3 -------------------------------------------------------------------------------------------------------------
def test_a_redrawn_figure_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    from xai_loc.plots.redraw import draw

    result = write_dataset_atomic(_perturbation(), tmp_path / "perturbation.nc")
    written = draw([result])
    os.chmod(written[0], 0o640)
    draw([result])
    assert os.stat(written[0]).st_mode & 0o777 == 0o640


# 4 -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("ds", "message"), [
    (_perturbation().drop_vars("baseline_mae"), "has no 'baseline_mae'"),
    (_perturbation().isel(model=[]), "'model' dimension is empty"),
])
def test_a_result_without_what_it_is_read_for_is_refused_at_open(tmp_path, ds, message):
    from xai_loc.plots.redraw import draw

    path = write_dataset_atomic(ds, tmp_path / "perturbation.nc")
    with pytest.raises(InputError, match=message):
        draw([path])


def test_damaged_attributes_are_one_line_in_figures_and_report(tmp_path):
    from xai_loc.plots.redraw import draw
    from xai_loc.report.collect import ResultEntry, Section, localization_rows

    tdoa = _tdoa()
    del tdoa.attrs["srp_windows"]
    path = write_dataset_atomic(tdoa, tmp_path / "tdoa.nc")
    with pytest.raises(InputError, match=r"TDOA result .*tdoa\.nc cannot be drawn .*'srp_windows'"):
        draw([path])
    entries = {"tdoa": ResultEntry("tdoa", path, tdoa, "tdoa"),
               "perturbation": ResultEntry("perturbation", tmp_path / "perturbation.nc",
                                           _perturbation(models="{oops"), "perturb")}
    for name in entries:
        section = Section(tmp_path, "", {name: entries[name]}, {}, True, [])
        with pytest.raises(InputError, match="cannot be tabulated"):
            localization_rows(section)


# 5 -------------------------------------------------------------------------------------------------------------
def test_a_duplex_run_without_the_view_removes_an_earlier_view(monkeypatch, tmp_path):
    import xai_loc.experiments.cues as cues
    import xai_loc.explain.attribute as attribute

    monkeypatch.setattr(attribute, "resolve_model", lambda model: (model, {}))
    monkeypatch.setattr(cues, "duplex_probe", lambda *a, **k: xr.Dataset({"itd_weight": ("band", [1.0])}))
    write_dataset_atomic(xr.Dataset({"lag_slope": ("band", [1.0])}), tmp_path / "duplex_relevance.nc")
    cues.run_duplex_probe(None, tmp_path, relevance=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["duplex.nc"]


def test_a_duplex_view_of_other_probe_settings_is_not_drawn(monkeypatch, tmp_path):
    import xai_loc.plots.hofman as hofman
    from xai_loc.plots.redraw import DRAWERS

    def probe(tokens):
        return xr.Dataset({"itd_weight": ("band", [1.0])}, coords={"band": ["low"], "token": np.arange(tokens)},
                          attrs={"seed": 0, "model_digest": "abc"})

    view = xr.Dataset({"lag_slope": ("band", [1.0])}, coords={"band": ["low"], "token": ("stimulus", [0, 1, 0, 1])},
                      attrs={"seed": 0, "model_digest": "abc"})
    write_dataset_atomic(view, tmp_path / "duplex_relevance.nc")
    drawn = []
    monkeypatch.setattr(hofman, "draw_duplex", lambda ds, stem, view: drawn.append(view) or [])
    DRAWERS["duplex"](probe(2), tmp_path / "duplex.nc")
    DRAWERS["duplex"](probe(4), tmp_path / "duplex.nc")
    assert drawn[0] is not None and drawn[1] is None


# 6 -------------------------------------------------------------------------------------------------------------
def test_a_condition_folder_is_reported_with_its_runs_record(monkeypatch, tmp_path):
    from xai_loc.report import collect
    from xai_loc.report.collect import collect_sections
    from xai_loc.report.study_run import StudyRun

    monkeypatch.setattr(collect, "_figures", lambda name, ds, path: {})

    record = StudyRun(tmp_path, {"quick": True, "conditions": ["c"], "skipped": [], "missing_checkpoints": []})
    written = write_dataset_atomic(_perturbation(), tmp_path / "c" / "perturbation.nc")
    record.add(written)
    record.finish()
    responses = xr.Dataset({k: ("example", [0.0]) for k in ("response_azimuth", "response_elevation",
                                                             "target_azimuth", "target_elevation")})
    write_dataset_atomic(responses, tmp_path / "c" / "responses.nc")  # another command's
    entries = collect_sections(tmp_path / "c")[0].entries
    assert (entries["perturbation"].status, entries["responses"].status) == ("current", "earlier")


def test_a_folder_is_not_reported_with_an_unrelated_or_damaged_record_above_it(monkeypatch, tmp_path):
    from xai_loc.report import collect
    from xai_loc.report.collect import collect_sections
    from xai_loc.report.study_run import StudyRun, find_study_run

    monkeypatch.setattr(collect, "_figures", lambda name, ds, path: {})
    record = StudyRun(tmp_path / "run", {"quick": True, "conditions": ["c"], "skipped": [],
                                         "missing_checkpoints": []})
    record.add(write_dataset_atomic(_perturbation(), tmp_path / "run" / "c" / "perturbation.nc"))
    record.finish()
    write_dataset_atomic(_perturbation(), tmp_path / "run" / "mine" / "perturbation.nc")  # not of that run
    assert find_study_run(tmp_path / "run" / "mine") == ((tmp_path / "run" / "mine").absolute(), None)
    assert collect_sections(tmp_path / "run" / "mine")[0].entries["perturbation"].status is None
    write_dataset_atomic(_perturbation(), tmp_path / "other" / "sub" / "perturbation.nc")
    (tmp_path / "other" / "study.json").write_text("{broken")
    assert find_study_run(tmp_path / "other" / "sub")[1] is None  # not this folder's record to refuse


# 7 -------------------------------------------------------------------------------------------------------------
def test_a_result_without_a_condition_has_no_nan_in_its_titles(tmp_path):
    from xai_loc.plots.labels import run_title
    from xai_loc.report.collect import ResultEntry, _title

    ds = _sanity().assign_attrs(t60=float("nan"), snr=float("nan"))
    assert "nan" not in run_title(ds)
    folder = tmp_path / "store"
    assert _title(folder, tmp_path, {"sanity": ResultEntry("sanity", folder / "sanity.nc", ds, "sanity")}) == "store"


# 8 -------------------------------------------------------------------------------------------------------------
def test_titles_say_which_explanation_was_scored_and_every_figure_carries_one(captured_figure, tmp_path):
    from xai_loc.plots import sanity
    from xai_loc.plots.labels import run_title

    truth = _perturbation(composite="paper", target="truth", explain_options="{}")
    contrast = _perturbation(composite="paper", target="contrast", explain_options='{"reference": "zero"}')
    assert run_title(truth) != run_title(contrast)
    assert "target contrast" in run_title(contrast) and "reference=zero" in run_title(contrast)
    drawn = captured_figure(sanity)
    sanity.plot_sanity(_sanity(), tmp_path / "sanity")
    assert drawn["fig"]._suptitle.get_text().startswith("T60 0.6 s, SNR 10 dB")


# 9 -------------------------------------------------------------------------------------------------------------
def test_the_explorer_takes_its_gcc_settings_and_delays_from_tdoa_nc():
    from xai_loc.plots.labels import MissingAttribute
    from xai_loc.report.explorer import GccSettings

    settings = GccSettings.of(_tdoa())
    assert (settings.fs, settings.interp, settings.max_lag) == (16000.0, 16, {"7-8": 10.0, "6-9": 24.0})
    assert settings.stored_delay("loccnn", "6-9", 2) == round(float(_tdoa()["delay"][1, 1, 2]), 3)
    assert settings.stored_delay("other", "6-9", 2) is None
    tdoa = _tdoa()
    del tdoa.attrs["fs"]
    with pytest.raises(MissingAttribute):
        GccSettings.of(tdoa)


# 10 ------------------------------------------------------------------------------------------------------------
def test_every_drawer_declares_its_figures_and_binaural_ones_are_png_and_pdf(monkeypatch, tmp_path):
    import matplotlib.pyplot as plt

    import xai_loc.plots.hofman as hofman
    from xai_loc.plots.redraw import DRAWERS, NO_FIGURE

    assert all(drawer.stems or drawer is NO_FIGURE for drawer in DRAWERS.values())
    monkeypatch.setattr(hofman, "plot_cues", lambda probe, view: plt.figure())
    written = DRAWERS["duplex"](xr.Dataset({"itd_weight": ("band", [1.0])}), tmp_path / "duplex.nc")
    assert written == DRAWERS["duplex"].files(tmp_path) == [tmp_path / "cues.png", tmp_path / "cues.pdf"]
    assert all(p.is_file() for p in written)


# 11 ------------------------------------------------------------------------------------------------------------
def test_the_no_results_hint_names_every_command_of_the_registry(tmp_path):
    from xai_loc.experiments.registry import RESULTS
    from xai_loc.plots.redraw import redraw
    from xai_loc.report.collect import collect_sections

    for call in (redraw, collect_sections):
        with pytest.raises(InputError) as err:
            call(tmp_path)
        assert all(r.command in str(err.value) for r in RESULTS.values())


# 12 ------------------------------------------------------------------------------------------------------------
def test_transposed_results_draw_as_the_original(captured_figure, tmp_path):
    from xai_loc.plots import components, sanity, tdoa

    for module, plot, ds in ((tdoa, tdoa.plot_tdoa, _tdoa()), (sanity, sanity.plot_sanity, _sanity()),
                             (components, components.plot_components, _components())):
        lines = []
        for flipped in (ds, ds.transpose(*list(ds.dims)[::-1])):
            drawn = captured_figure(module)
            plot(flipped, tmp_path / "x")
            ax = drawn["fig"].axes[-1 if module is tdoa else 0]
            lines.append([np.asarray(line.get_ydata(), float).tolist() for line in ax.lines]
                         + [[patch.get_height() for patch in ax.patches]])
        assert lines[0] == lines[1], module.__name__


def test_tables_of_transposed_results_equal_the_originals():
    """The TDOA and component tables read labelled arrays by name, not by the order the file stores them in."""
    from xai_loc.experiments.components import components_latex, components_table
    from xai_loc.experiments.tdoa_probe import tdoa_tables

    comps = _components()
    rng = np.random.default_rng(1)
    share = rng.uniform(0, 0.5, comps["share"].shape)
    comps["share"] = comps["share"].copy(data=share)
    comps["share_ci"] = comps["share_ci"].copy(data=np.stack([share - 0.05, share + 0.1], -1))
    comps["energy_share"] = ("component", [0.4, 0.3, 0.2, 0.1])
    comps["energy_share_ci"] = (("component", "bound"), [[0.3, 0.5], [0.2, 0.4], [0.1, 0.3], [0.0, 0.2]])
    comps["linear_split_exact"] = ("method", [True])
    comps.attrs.update(n_sources=2, n_windows=7, early_end_s=0.05)
    for ds, tables in ((_tdoa(), lambda d: tdoa_tables(d)),
                       (comps, lambda d: {"markdown": components_table(d), "latex": components_latex(d)})):
        flipped = ds.copy()
        for name in ds.data_vars:
            flipped[name] = ds[name].transpose(*ds[name].dims[::-1])
        assert tables(flipped) == tables(ds)
