"""Plug-in localizers: a throw-away package installed with pip registers a localizer through the
entry-point group ``xai_loc.localizers`` and works with models list, explain, audit, perturb
and tdoa, with no change to xai-loc (``docs/examples/xailoc-demo``, the README example)."""
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "xailoc-demo"

#: Runs inside a process that sees the installed plug-in: the CLI steps in one interpreter.
SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    from click.testing import CliRunner
    from xai_loc.cli import main
    from xai_loc.models import MODELS, build_model, load_model, save_checkpoint

    root, out = sys.argv[1], {}
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("demo_stftcnn", width=8), root + "/demo.safetensors",
                           {"condition": {"t60": 0.15, "snr": 25.0}})
    out["output_kind"] = MODELS["demo_stftcnn"].output_kind
    out["config"] = load_model(ckpt).config
    data = ["--data", root + "/data"]
    steps = {
        "list": ["models", "list"],
        "explain": ["explain", "--checkpoint", str(ckpt), "--sources", "1", "--composite", "epsilon", *data],
        "audit": ["audit", str(ckpt), "--composite", "epsilon"],
        "perturb": ["perturb", "--checkpoint", str(ckpt), "--sources", "1", "--composite", "epsilon",
                    "--percentages", "0,50", "--modes", "relevance,energy", "--no-randomized", *data,
                    "--out", root + "/res"],
        "tdoa": ["tdoa", "--checkpoint", str(ckpt), "--sources", "1", "--composite", "epsilon", "--no-srp",
                 "--no-randomized", "--pairs", "7-8", *data, "--out", root + "/res"],
    }
    for name, args in steps.items():
        result = CliRunner().invoke(main, ["--threads", "1", *args])
        out[name] = [result.exit_code, result.stdout]
    print(json.dumps(out))
''')


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The example installed from a copy (pip leaves build/ and egg-info beside what it builds)."""
    target = tmp_path_factory.mktemp("site")
    source = shutil.copytree(EXAMPLE, tmp_path_factory.mktemp("example") / EXAMPLE.name)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "--target", str(target), str(source)], check=True, capture_output=True)
    return target


def test_a_pip_installed_plugin_works_with_every_multichannel_command(installed, tmp_path):
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["output_kind"] == "position"
    assert out["config"] == {"n_mics": 16, "n_samples": 5120, "n_fft": 256, "width": 8}
    for step in ("list", "explain", "audit", "perturb", "tdoa"):
        assert out[step][0] == 0, (step, out[step][1])
    assert "demo_stftcnn" in out["list"][1]  # the architectures list and the checkpoint row
    assert "demo_stftcnn-" in out["explain"][1] and out["explain"][1].strip().endswith("truth.zarr")
    assert "AOPC" in out["perturb"][1] and (tmp_path / "res" / "perturbation.nc").exists()
    assert (tmp_path / "res" / "tdoa.nc").exists()


def test_without_the_plugin_its_checkpoint_is_refused_in_one_line(installed, tmp_path):
    import os

    make = ("import sys; from xai_loc.models import build_model, save_checkpoint; save_checkpoint("
            "build_model('demo_stftcnn', width=8), sys.argv[1], {'condition': {'t60': 0.15, 'snr': 25.0}})")
    env = {**os.environ, "PYTHONPATH": str(installed)}
    subprocess.run([sys.executable, "-c", make, str(tmp_path / "d.safetensors")], env=env, check=True)
    from click.testing import CliRunner

    from xai_loc.cli import main

    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "d.safetensors")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "names architecture 'demo_stftcnn'" in result.stderr and "xai_loc.localizers" in result.stderr
