"""``xai_loc.study.reproduce``: which experiments it runs, and how ``skip`` leaves them out.

The full quick study, every experiment included, is run end to end through the CLI in
``tests/test_cli.py::test_reproduce_quick_and_figures_redraw``.
"""
import pytest

from xai_loc.errors import InputError
from xai_loc.experiments.registry import EXPERIMENTS
from xai_loc.study import QUICK_METHODS, STUDY_EXPERIMENTS, reproduce, study_options


def test_the_study_runs_registered_experiments_and_quick_shrinks_only_the_suite():
    assert set(STUDY_EXPERIMENTS) <= set(EXPERIMENTS)
    full, quick = study_options(False), study_options(True)
    assert list(full) == list(quick) == list(STUDY_EXPERIMENTS)
    # a full run takes the experiments' own defaults
    assert full["faithfulness"] == full["sanity"] == full["components"] == full["perturbation"] == {}
    for name in ("faithfulness", "sanity", "components"):
        assert quick[name]["methods"] == QUICK_METHODS and quick[name]["n_boot"] < 1000
    assert quick["faithfulness"]["percentages"][0] == 0.0  # the unperturbed window, as the experiment requires


@pytest.mark.parametrize("skip, says", [(["faithfulness", "nope"], "skip 'nope' is not an experiment of the study; "
                                         "allowed: perturbation, tdoa, faithfulness, sanity, components"),
                                        (["sanity", "sanity"], "skip 'sanity,sanity' names an experiment twice")],
                         ids=["unknown", "twice"])
def test_bad_skip_is_one_line_before_any_work(tmp_path, skip, says):
    with pytest.raises(InputError) as err:
        reproduce(tmp_path / "rep", quick=True, data_root=tmp_path / "data", skip=skip)
    assert str(err.value).startswith(says) and "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())  # nothing simulated, nothing written


def test_skipping_every_experiment_leaves_localization_and_inspection(tmp_path, monkeypatch, zoo):
    monkeypatch.setattr("xai_loc.study.QUICK_SOURCES", 1)
    summary = reproduce(tmp_path / "rep", quick=True, data_root=tmp_path / "data", pretrained=zoo,
                        conditions=[(0.15, 25.0)], skip=list(STUDY_EXPERIMENTS), progress=False).read_text()
    assert "Quick run: 1 test sources per condition." in summary  # no suite settings: the suite did not run
    assert any(line.startswith("| 0.15 | 25 | loccnn |") for line in summary.splitlines())
    assert not any(f"### {title}" in summary for title in STUDY_EXPERIMENTS.values())
    cond = tmp_path / "rep" / "t60-0.15_snr-25"
    assert sorted(p.name for p in cond.iterdir()) == ["inspection_loccnn.pdf", "inspection_loccnn.png"]
    assert not (tmp_path / "rep" / "report.html").exists()  # no result to report


def test_a_damaged_checkpoint_is_one_line_and_leaves_an_earlier_record(tmp_path):
    """Review: the run's record (study.json) was written before the checkpoints were loaded, so a damaged one
    left a record behind, or replaced an earlier finished run's with an empty one."""
    zoo, out = tmp_path / "zoo", tmp_path / "rep"
    zoo.mkdir()
    (zoo / "loccnn_t60-0.6_snr-10.safetensors").write_bytes(b"garbage")
    out.mkdir()
    (out / "study.json").write_text('{"finished": true}')
    with pytest.raises(InputError) as err:
        reproduce(out, quick=True, data_root=tmp_path / "data", pretrained=zoo, conditions=[(0.6, 10.0)])
    assert "loccnn_t60-0.6_snr-10.safetensors" in str(err.value) and "\n" not in str(err.value)
    assert (out / "study.json").read_text() == '{"finished": true}' and not (tmp_path / "data").exists()
