"""Review findings on front ends, checkpoints, devices, atomic writes, progress lines and evaluation inputs."""
import io
import json
import os
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import save_file

from xai_loc.errors import InputError
from xai_loc.features.cochleagram import Cochleagram, PowerCompression
from xai_loc.features.spectrogram import BinauralSpectrogram
from xai_loc.io import atomic_path, write_dataset_atomic, write_text_atomic
from xai_loc.models.checkpoint import CARD_KEY, build_configured, load_model
from xai_loc.models.evaluation import Evaluation, WindowSet, predict
from xai_loc.progress import tqdm
from xai_loc.runtime import resolve_device

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
NAN, INF = float("nan"), float("inf")


def _card_edited(name: str, front: str, options: dict, out: Path) -> Path:
    """A copy of a shipped checkpoint whose card's front-end config ``front`` has ``options`` changed."""
    with safe_open(str(PRETRAINED / f"{name}.safetensors"), "pt") as f:
        card = json.loads(f.metadata()[CARD_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    card["config"][front] = {**card["config"][front], **options}
    save_file(tensors, str(out), metadata={CARD_KEY: json.dumps(card)})
    return out


# -- 1: non-finite or non-numeric front-end settings ------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    ({"fs": NAN}, r"^fs=nan is not allowed; give a positive integer rate"),
    ({"n_fft": INF}, r"^n_fft=inf is not allowed"),
    ({"hop": NAN}, r"^hop=nan is not allowed"),
    ({"amin": "1e-14"}, r"^amin='1e-14' is not allowed"),
])
def test_spectrogram_settings_that_are_not_finite_numbers(options, message):
    with pytest.raises(InputError, match=message):
        BinauralSpectrogram(**options)


@pytest.mark.parametrize("options, message", [
    ({"n_filters": NAN}, r"^n_filters=nan is not allowed"),
    ({"fs": INF}, r"^fs=inf is not allowed; give a positive integer rate"),
    ({"out_fs": NAN}, r"^out_fs=nan is not allowed; give a positive integer rate"),
    ({"signal_length": NAN}, r"^signal_length=nan is not allowed; use an integer >= 1$"),
    ({"signal_length": 0}, r"^signal_length=0 is not allowed"),
    ({"f_min": "30"}, r"^band edges f_min='30'"),
    ({"exponent": "0.3"}, r"^exponent='0.3' is not allowed; use a number > 0$"),
])
def test_cochleagram_settings_that_are_not_finite_numbers(options, message):
    with pytest.raises(InputError, match=message):
        Cochleagram(**{"signal_length": 4800, **options})


def test_numpy_counts_and_a_whole_float_rate_build_the_same_front_end():
    """NumPy integer counts and a whole-float rate build the same front end; a count given as a float is refused as
    every count of the package is (checks.check_integer)."""
    x = torch.randn(1, 2, 4800, generator=torch.Generator().manual_seed(1))
    expected = Cochleagram(signal_length=4800)(x)
    assert torch.equal(Cochleagram(signal_length=np.int64(4800), n_taps=np.int64(4097), fs=48000.0)(x), expected)
    with pytest.raises(InputError, match=r"^signal_length=4800.0 is not allowed; use an integer >= 1$"):
        Cochleagram(signal_length=4800.0)


@pytest.mark.parametrize("name, front, options, message", [
    ("bast_default", "spectrogram", {"fs": NAN}, r"fs=nan is not allowed"),
    ("bast_default", "spectrogram", {"n_fft": 1e400}, r"n_fft=inf is not allowed"),
    ("cochcnn_default", "cochleagram", {"n_filters": NAN}, r"n_filters=nan is not allowed"),
    ("cochcnn_default", "cochleagram", {"eps": 0.0}, r"eps=0.0 is not allowed"),
])
def test_checkpoint_with_a_bad_front_end_config_fails_in_one_line(tmp_path, name, front, options, message):
    path = _card_edited(name, front, options, tmp_path / "edited.safetensors")
    with pytest.raises(InputError, match=rf"^checkpoint {path}: {message}"):
        load_model(path)


def test_cli_reports_a_nan_front_end_config(tmp_path):
    from scipy.io import wavfile

    from xai_loc.cli import main

    path = _card_edited("bast_default", "spectrogram", {"fs": NAN}, tmp_path / "fsnan.safetensors")
    wavfile.write(tmp_path / "s16.wav", 16000, np.zeros((8000, 2), dtype=np.float32))
    result = CliRunner().invoke(main, ["--threads", "1", "binaural", "explain", str(path), str(tmp_path / "s16.wav")])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: checkpoint {path}: fs=nan is not allowed; give a positive integer rate in Hz such as 16000")


def test_build_configured_names_the_config_for_a_failed_conversion():
    with mock.patch.dict("xai_loc.models.registry.MODELS",
                         {"cochcnn": mock.Mock(side_effect=OverflowError("cannot convert float infinity to integer"))}):
        with pytest.raises(InputError, match=r"^model_config holds a value cochcnn cannot use \(cannot convert float "
                                             r"infinity to integer\)$"):
            build_configured("cochcnn", {"dense": INF})


# -- 2: CUDA indices in other scripts ------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cuda:²", "cuda:١", "cuda:01", "cuda:", "cuda:-1"])
def test_cuda_index_must_be_plain_ascii_digits(device):
    with mock.patch("torch.cuda.is_available", return_value=True), \
            mock.patch("torch.cuda.device_count", return_value=2):
        with pytest.raises(InputError, match=rf"^unknown device '{device}'; allowed: cpu, cuda, cuda:N$"):
            resolve_device(device)
        assert resolve_device("cuda:1") == torch.device("cuda", 1)
        assert resolve_device("cuda") == torch.device("cuda")
        with pytest.raises(InputError, match=r"^device 'cuda:2' does not exist"):
            resolve_device("cuda:2")


# -- 3 to 5: atomic writes --------------------------------------------------------------------------------


def test_any_legal_file_name_is_written(tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    for name in ("a" * (limit - 4) + ".txt", "é" * ((limit - 4) // 2) + ".txt", "a." + "b" * (limit - 2)):
        assert len(os.fsencode(name)) > limit - 2
        assert write_text_atomic(tmp_path / name, name).read_text() == name
    ds = xr.Dataset({"v": ("i", np.arange(3.0))})
    nc = write_dataset_atomic(ds, tmp_path / ("c" * (limit - 3) + ".nc"))
    assert xr.open_dataset(nc, engine="h5netcdf")["v"].values.tolist() == [0.0, 1.0, 2.0]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    with pytest.raises(InputError, match=rf"its name is {limit + 1} bytes long; this file system allows at most "
                                         rf"{limit}$"):
        write_text_atomic(tmp_path / "new" / ("a" * (limit + 1)), "x")
    assert not (tmp_path / "new").exists()


def test_replacing_a_file_keeps_its_mode(tmp_path):
    mask = os.umask(0o022)
    try:
        kept = tmp_path / "private.json"
        kept.write_text("old")
        kept.chmod(0o600)
        write_text_atomic(kept, "new")
        assert (kept.read_text(), kept.stat().st_mode & 0o777) == ("new", 0o600)
        fresh = write_text_atomic(tmp_path / "fresh.json", "new")
        assert fresh.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(mask)


def test_failed_write_removes_the_folders_it_created(tmp_path):
    (tmp_path / "kept").mkdir()
    for target in (tmp_path / "new1" / "new2" / "c.txt", tmp_path / "kept" / "new" / "c.txt"):
        with pytest.raises(KeyboardInterrupt):
            with atomic_path(target) as tmp:
                Path(tmp).write_text("partial")
                raise KeyboardInterrupt
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["kept"]
    # a created folder that something else wrote into meanwhile stays, with that file
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "shared" / "c.txt"):
            (tmp_path / "shared" / "other.txt").write_text("theirs")
            raise RuntimeError("boom")
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["other.txt"]


# -- 6: progress lines in logs ----------------------------------------------------------------------------


def test_log_bar_ends_with_a_final_line_even_when_not_left():
    log = io.StringIO()
    for _ in tqdm(range(3), desc="work", file=log, leave=False):
        pass
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("work:   0%") and lines[1].startswith("work: 100%")
    assert "3/3" in lines[1]


def test_log_of_nested_bars_is_the_outer_bars_lines_only():
    """A training-like loop (an outer epoch bar with a postfix, a passing batch bar per epoch) writes the outer
    bar's start and end lines to a log, no line per epoch and no cursor-movement codes."""
    log = io.StringIO()
    outer = tqdm(total=50, desc="train", file=log)
    for epoch in range(50):
        for _ in tqdm(range(4), desc=f"epoch {epoch}", file=log, leave=False):
            pass
        outer.set_postfix(loss=f"{1 / (epoch + 1):.3g}", refresh=False)
        outer.update(1)
    outer.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("train:   0%") and lines[1].startswith("train: 100%"), lines
    assert "\x1b" not in log.getvalue()


def test_predict_logs_its_end(capsys):
    model = load_model(PRETRAINED / "loccnn_t60-0.15_snr-25.safetensors")
    ds = _dataset(np.array([[1.7, 5.5, 1.2], [1.8, 5.4, 1.3]]))
    predict(model, ds, batch_size=1, progress=True, desc="evaluate")
    assert "evaluate: 100%" in capsys.readouterr().err


# -- 7: front-end input shapes ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape, message", [
    ((2, 8000), r"^ear signals of shape \(2, 8000\) are not allowed; give \[batch, 2 ears, samples\]$"),
    ((1, 3, 8000), r"^ear signals of shape \(1, 3, 8000\) are not allowed"),
    ((1, 2, 255), r"^255 samples are too few; give at least n_fft=256$"),
])
def test_spectrogram_refuses_inputs_it_cannot_frame(shape, message):
    front = BinauralSpectrogram()
    with pytest.raises(InputError, match=message):
        front(torch.zeros(shape))
    assert front(torch.randn(1, 2, 256)).shape == (1, 2, 129, 1)


def test_cochleagram_refuses_empty_waveforms():
    coch = Cochleagram(signal_length=4800)
    for x in (torch.zeros(1, 2, 0), torch.tensor(0.0)):
        with pytest.raises(InputError, match=r"^waveforms of shape \((1, 2, 0)?\) are not allowed; give \[\.\.\., "
                                             r"samples\] with at least one sample$"):
            coch(x)
    assert coch(torch.randn(1, 2, 1)).shape == (1, 2, 39, 1)


# -- 8: source positions, report conditions, compression guard ----------------------------------------------


def _dataset(positions: np.ndarray) -> xr.Dataset:
    signals = np.random.default_rng(0).standard_normal((len(positions), 16, 5120)).astype(np.float32) * 0.01
    return xr.Dataset({"signals": (("window", "mic", "time"), signals),
                       "source_position": (("window", "xyz"), positions),
                       "source_id": ("window", np.arange(len(positions)))},
                      attrs={"split": "test", "t60": 0.15, "snr": 25.0})


@pytest.mark.parametrize("bad", [NAN, INF])
def test_positions_must_be_finite(bad):
    positions = np.array([[1.7, 5.5, 1.2], [1.8, 5.4, 1.3]])
    positions[1, 2] = bad
    with pytest.raises(InputError, match=rf"^the dataset: window 1 has the source position \[1.8, 5.4, {bad}\]; "
                                         r"positions must be finite \(metres\)$"):
        WindowSet(_dataset(positions))
    split = SimpleNamespace(signals=torch.zeros(2, 16, 5120), attrs={"split": "train"}, source_position=positions,
                            source_id=np.array([0, 1]))
    with pytest.raises(InputError, match=r"^the in-memory train windows: window 1 has the source position"):
        WindowSet(split)


@pytest.mark.parametrize("attrs, header", [
    ({"t60": 0.3, "snr": None}, "Localization on test (T60 0.3 s): 1 sources, 1 windows"),
    ({"t60": None, "snr": 10.0}, "Localization on test (SNR 10 dB): 1 sources, 1 windows"),
    ({"t60": 0.3, "snr": 10.0}, "Localization on test (T60 0.3 s, SNR 10 dB): 1 sources, 1 windows"),
    ({}, "Localization on test: 1 sources, 1 windows"),
])
def test_report_names_the_conditions_it_has(attrs, header):
    result = Evaluation(np.array([[1.0, 2.0, 3.0]]), np.array([[1.5, 2.0, 3.0]]), np.array([0]), np.array([0]),
                        attrs={"split": "test", **attrs})
    text = result.to_text()
    assert text.splitlines()[0] == header
    assert "model                   0.5000  0.0000  0.0000  0.1667  0.5000" in text


@pytest.mark.parametrize("eps", [0.0, -1e-7, NAN, INF, "1e-7"])
def test_compression_guard_must_be_positive_and_finite(eps):
    with pytest.raises(InputError, match=rf"^eps={eps!r} is not allowed; use a number > 0$"):
        PowerCompression(eps=eps)
    with pytest.raises(InputError, match=r"^eps="):
        Cochleagram(signal_length=4800, eps=eps)


def test_compression_gradient_at_zero_is_bounded():
    x = torch.tensor([0.0, 1.0], requires_grad=True)
    PowerCompression(0.3, 1e-7)(x).sum().backward()
    assert x.grad.tolist() == pytest.approx([0.3 * 1e-7 ** -0.7, 0.3], rel=1e-5)


def test_an_experiments_files_are_written_all_or_none(tmp_path, monkeypatch):
    """A failure writing any of a result's files (here the timings) leaves the earlier run's files as they were,
    and a folder the write made is removed again."""
    from xai_loc.experiments.registry import EXPERIMENTS

    exp = EXPERIMENTS["perturbation"]
    ds = xr.Dataset({"mae_mean": (("model", "mode", "percentage"), np.zeros((1, 1, 2)))},
                    coords={"model": ["m"], "mode": ["relevance"], "percentage": [0.0, 10.0]})
    tables = {kind: f"{kind} table" for kind in exp.table_files}
    before = exp.write(ds, tmp_path / "res", tables=tables, timing={"s": 1})
    saved = {p: p.read_bytes() for p in before.values()}
    real = Path.write_text

    def full_disk(self, text, *args, **kwargs):
        if "timing" in self.name:
            raise OSError(28, "No space left on device")
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError):
        exp.write(ds.assign(mae_mean=ds["mae_mean"] + 1), tmp_path / "res", tables=tables, timing={"s": 2})
    assert {p: p.read_bytes() for p in before.values()} == saved
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == sorted(p.name for p in before.values())
    with pytest.raises(OSError):
        exp.write(ds, tmp_path / "new" / "res", tables=tables, timing={"s": 2})
    assert not (tmp_path / "new").exists()
