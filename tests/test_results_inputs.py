"""Stored results and relevance stores that are not what they should be: one line naming the user's file
(``report`` and ``figures`` exit 2 and write nothing), and a relevance store reached through a link."""
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from xai_loc.cli import main
from xai_loc.errors import InputError


def _refused(args: list[str]) -> str:
    """The one line a command exits 2 with."""
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1, result.output
    return result.output


def _result(folder: Path, name: str, ds: xr.Dataset) -> Path:
    folder.mkdir(parents=True)
    ds.to_netcdf(folder / name, engine="h5netcdf")
    return folder / name


def _nothing_written(folder: Path, name: str) -> None:
    assert [p.name for p in folder.iterdir()] == [name]  # no figure, no report, no staging folder


def _refused_by_report_and_figures(result: Path) -> list[str]:
    """The lines ``report`` and ``figures`` refuse the folder of ``result`` with; neither writes anything."""
    says = [_refused([command, str(result.parent)]) for command in ("report", "figures")]
    _nothing_written(result.parent, result.name)
    return says


def test_a_components_result_lacking_what_its_tables_read_is_one_line(tmp_path):
    """Review: a file with the required variables only, or without ``linear_split_exact``, crashed the report."""
    shares = {k: (("x",), [1.0]) for k in ("share", "share_ci", "energy_share", "reference_share",
                                            "reference_share_ci", "linear_split_exact", "energy_share_ci")}
    foreign = _result(tmp_path / "foreign", "components.nc", xr.Dataset(shares))
    says = _refused(["report", str(foreign.parent)])
    assert (f"component shares result {foreign} is not what it should be (its 'share' has dims (x), expected (model, "
            "method, ordering, split, component))") in says
    assert says.rstrip().endswith("run 'xai-loc components' to rebuild it")
    _nothing_written(foreign.parent, "components.nc")
    older = _result(tmp_path / "older", "components.nc", xr.Dataset(shares).drop_vars("linear_split_exact"))
    for says in _refused_by_report_and_figures(older):
        assert f"{older} is not what it should be (it has no 'linear_split_exact')" in says


@pytest.mark.parametrize("attrs, says", [({"t60": "abc", "snr": 10.0}, "t60='abc'"),
                                         ({"t60": 0.6, "snr": "x"}, "snr='x'")])
def test_a_condition_that_is_not_a_number_is_one_line(tmp_path, attrs, says):
    duplex = _result(tmp_path / "d", "duplex.nc",
                     xr.Dataset({"itd_weight": ("band", [1.0]), "ild_weight": ("band", [1.0])}, attrs=attrs))
    assert _refused_by_report_and_figures(duplex) == 2 * [
        f"Error: duplex probe result {duplex} records {says}, not a number; run 'xai-loc binaural cues' to "
        "rebuild it\n"]


def test_a_damaged_hofman_attribute_is_one_line(tmp_path):
    az = np.array([0.0, 90.0, 180.0])
    responses = _result(tmp_path / "r", "responses.nc", xr.Dataset(
        {k: ("example", az) for k in ("response_azimuth", "response_elevation", "target_azimuth", "target_elevation")},
        attrs={"hofman": "{not json"}))
    assert _refused_by_report_and_figures(responses) == 2 * [
        f"Error: binaural responses {responses} cannot be drawn (attribute 'hofman' is not JSON); run "
        "'xai-loc binaural cues' to rebuild it\n"]


def test_a_result_that_cannot_be_drawn_is_named_as_the_user_knows_it(tmp_path):
    """Review: the message named the temporary copy that report and figures draw from, not the user's file."""
    duplex = _result(tmp_path / "d", "duplex.nc",
                     xr.Dataset({"itd_weight": ("band", [1.0]), "ild_weight": ("band", [1.0])}))
    for says in _refused_by_report_and_figures(duplex):
        assert says.startswith(f"Error: duplex probe result {duplex} cannot be drawn (missing: No variable named "
                               "'itd_offset'")


def test_a_relevance_store_is_read_through_a_link(tmp_path):
    """Review: the dataset's path is recorded relative to the store's real folder, but was read against the
    link's; ``listen`` failed."""
    from test_explain import fake_dataset, randomized

    from xai_loc.explain import explain_store, open_explained_signals
    from xai_loc.models import LocCNN

    data, _ = fake_dataset(tmp_path / "data" / "test.zarr")
    store = explain_store(randomized(LocCNN(4, 350)).float(), data, progress=False)
    link = tmp_path / "elsewhere" / "relevance.zarr"
    link.parent.mkdir()
    link.symlink_to(store)
    signals = open_explained_signals(link)
    assert signals["signals"].shape == (6, 4, 350)
    result = CliRunner().invoke(main, ["listen", str(link), "--out", str(tmp_path / "wav"), "--sources", "2"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "wav").iterdir()) == ["listen.json", "source-0002_microphones.wav",
                                                                    "source-0002_relevance.wav"]
    data.rename(tmp_path / "data" / "moved.zarr")
    with pytest.raises(InputError, match=re.escape(f"dataset {data}, which relevance store {link} explains, does not "
                                                   "exist; ")):
        open_explained_signals(link)
