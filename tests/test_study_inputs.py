"""``xai_loc.study.reproduce`` refuses what would go wrong late (checkpoints whose cards disagree with their
names, an output folder it cannot use) in one line before any work, and never leaves an earlier run's
page beside a newer record; the record (``study.json``) is read strictly and named without following links."""
import json

import pytest

from xai_loc.errors import InputError
from xai_loc.study import STUDY_EXPERIMENTS, reproduce

CONDITION = "t60-0.15_snr-25"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A LocCNN checkpoint under its right name, and folders holding models under names they do not match."""
    import torch

    from xai_loc.models import build_model, save_checkpoint

    root = tmp_path_factory.mktemp("zoo")
    torch.manual_seed(1)
    save_checkpoint(build_model("loccnn"), root / "right" / f"loccnn_{CONDITION}.safetensors",
                    {"condition": {"t60": 0.15, "snr": 25.0}})
    save_checkpoint(build_model("samplecnn"), root / "other-arch" / f"loccnn_{CONDITION}.safetensors",
                    {"condition": {"t60": 0.6, "snr": 10.0}})
    save_checkpoint(build_model("loccnn"), root / "other-condition" / f"loccnn_{CONDITION}.safetensors",
                    {"condition": {"t60": 0.6, "snr": 10.0}})
    return root


def _refused(out, zoo_folder, tmp_path) -> str:
    with pytest.raises(InputError) as err:
        reproduce(out, quick=True, data_root=tmp_path / "data", pretrained=zoo_folder, conditions=[(0.15, 25.0)],
                  progress=False)
    assert "\n" not in str(err.value) and not (tmp_path / "data").exists()
    return str(err.value)


@pytest.mark.usefixtures("no_simulation")
@pytest.mark.parametrize("folder, holds", [("other-arch", "holds samplecnn, T60 0.6 s, SNR 10 dB"),
                                           ("other-condition", "holds loccnn, T60 0.6 s, SNR 10 dB")])
def test_a_checkpoint_is_used_only_when_its_card_holds_what_its_name_says(zoo, tmp_path, folder, holds):
    """Review: a SampleCNN of (0.6 s, 10 dB) linked as loccnn_t60-0.15_snr-25 was reported as LocCNN (0.15 s,
    25 dB) beside the paper's number."""
    says = _refused(tmp_path / "rep", zoo / folder, tmp_path)
    assert says.startswith(f"checkpoint {zoo / folder / f'loccnn_{CONDITION}.safetensors'} is named for loccnn, "
                           "T60 0.15 s, SNR 25 dB, but its card " + holds)
    assert not (tmp_path / "rep").exists()


@pytest.mark.usefixtures("no_simulation")
@pytest.mark.parametrize("case, says", [
    ("condition-file", f"condition folder '{{out}}/{CONDITION}' is not allowed: '{{out}}/{CONDITION}' is a file"),
    ("condition-link", f"condition folder '{{out}}/{CONDITION}' is a link, which the report does not follow"),
    ("summary-folder", "cannot write the file '{out}/summary.md': it is a folder"),
    ("report-folder", "cannot write the file '{out}/report.html': it is a folder"),
])
def test_an_output_it_cannot_use_is_one_line_before_any_work_and_keeps_the_earlier_record(zoo, tmp_path, case,
                                                                                         says):
    """Review: a condition folder that is a file failed after the work and replaced the earlier record; a summary.md
    or report.html that is a folder failed at the end naming a temporary file; a linked condition folder was
    not followed by the report, which then found no results after a whole run."""
    out = tmp_path / "rep"
    out.mkdir()
    (out / "study.json").write_text('{"finished": true}')
    if case == "condition-file":
        (out / CONDITION).write_text("a file")
    elif case == "condition-link":
        (tmp_path / "elsewhere").mkdir()
        (out / CONDITION).symlink_to(tmp_path / "elsewhere")
    else:
        (out / {"summary-folder": "summary.md", "report-folder": "report.html"}[case]).mkdir()
    assert _refused(out, zoo / "right", tmp_path).startswith(says.format(out=out))
    assert (out / "study.json").read_text() == '{"finished": true}'


def test_a_run_removes_the_earlier_page_and_names_the_checkpoint_folder_it_searched(zoo, tmp_path, monkeypatch):
    """Review: a run that wrote no report (every experiment skipped, or stopped part way) left the earlier run's
    report.html beside its newer study.json; the summary said "No shipped checkpoint" of a --pretrained folder."""
    out = tmp_path / "rep"
    out.mkdir()
    (out / "report.html").write_text("<p>an earlier run's page</p>")
    monkeypatch.setattr("xai_loc.study.QUICK_SOURCES", 1)
    summary = reproduce(out, quick=True, data_root=tmp_path / "data", pretrained=zoo / "right",
                        conditions=[(0.15, 25.0)], skip=list(STUDY_EXPERIMENTS), progress=False).read_text()
    assert not (out / "report.html").exists()  # the folder holds no results: no page
    assert f"No checkpoint in {zoo / 'right'} for: samplecnn (0.15 s, 25 dB)." in summary


def test_a_run_stopped_part_way_leaves_no_earlier_page(zoo, tmp_path, monkeypatch):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "report.html").write_text("<p>an earlier run's page</p>")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    def run():
        with pytest.raises(KeyboardInterrupt):
            reproduce(out, quick=True, data_root=tmp_path / "data", pretrained=zoo / "right",
                      conditions=[(0.15, 25.0)], progress=False)

    monkeypatch.setattr("xai_loc.study.QUICK_SOURCES", 1)
    # stopped while its test data are simulated, before it writes below out: the earlier page stands
    with monkeypatch.context() as patch:
        patch.setattr("xai_loc.data.store.simulate_dataset", interrupted)
        run()
    assert [p.name for p in out.iterdir()] == ["report.html"]
    # stopped part way through its work below out: no page of an earlier run beside an unfinished record
    monkeypatch.setattr("xai_loc.study._evaluate", interrupted)
    run()
    assert not (out / "report.html").exists() and not json.loads((out / "study.json").read_text())["finished"]


SETTINGS = {"quick": True, "skipped": [], "conditions": [CONDITION], "missing_checkpoints": []}


@pytest.mark.parametrize("settings", [{"conditions": [0.15]}, {"conditions": CONDITION}, {"skipped": None},
                                      {"missing_checkpoints": [["loccnn"]]}, {"quick": "yes"}, {"quick": None}],
                         ids=["condition-number", "conditions-text", "skipped-null", "missing-nested", "quick-text",
                              "quick-null"])
def test_a_record_with_settings_of_the_wrong_types_is_damaged(tmp_path, settings):
    """Review: {"settings": {"conditions": [0.15], ...}} passed the check and the report raised a TypeError."""
    from xai_loc.report.study_run import StudyRun, read_study_run

    record = json.loads(StudyRun(tmp_path, SETTINGS).finish().read_text())
    assert read_study_run(tmp_path) == record
    (tmp_path / "study.json").write_text(json.dumps({**record, "settings": {**SETTINGS, **settings}}))
    with pytest.raises(InputError, match=r"study\.json is damaged \(not an xai-loc study record"):
        read_study_run(tmp_path)


def test_a_result_linked_from_outside_the_folder_is_named_where_it_lies(tmp_path):
    """Review: a result file linked from outside the results folder made the report fail with a ValueError."""
    from xai_loc.report.study_run import StudyRun, file_status, read_study_run

    root, outside = tmp_path / "rep", tmp_path / "elsewhere.nc"
    (root / CONDITION).mkdir(parents=True)
    outside.write_bytes(b"a result")
    (root / CONDITION / "tdoa.nc").symlink_to(outside)
    (root / CONDITION / "perturbation.nc").write_bytes(b"written by the run")
    run = StudyRun(root, SETTINGS)
    run.add([root / CONDITION / "perturbation.nc", tmp_path / "data.zarr"])  # a store elsewhere is not recorded
    run.finish()
    record = read_study_run(root)
    assert list(record["files"]) == [f"{CONDITION}/perturbation.nc"]
    assert file_status(record, root, root / CONDITION / "tdoa.nc") == "earlier"
    assert file_status(record, root, root / CONDITION / "perturbation.nc") == "current"
    run.add(root / CONDITION / "tdoa.nc")  # recorded by its name in the folder, with the content it leads to
    assert file_status(read_study_run(root), root, root / CONDITION / "tdoa.nc") == "current"
