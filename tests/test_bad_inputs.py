"""An adversarial corpus of bad inputs, run through the CLI: every case ends with exit code 2,
one line on stderr (click's own usage errors too), no traceback, and no new or changed files.

The corpus is a table: add a row for every bad input a user reports. The workspace is shared
(module scope) and holds small real artefacts: a checkpoint, a binaural checkpoint, a tiny
relevance store, text files posing as checkpoints and results, scene files. A read-only file
system is imitated by making ``os.access`` refuse writes below ``ro/`` (the tests run as root
on CI machines, where permission bits do not stop writes).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from xai_loc.cli import main
from xai_loc.errors import InputError

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"

BAD_TOML = {
    "size-abc": 'name = "bad"\n[room]\nsize = "abc"\n[array]\npositions = [[1.0, 1.0, 1.0]]\n'
                '[sources]\npositions = [[2.0, 2.0, 1.0]]\n',
    "n-four": 'name = "bad"\n[room]\nsize = [5.0, 4.0, 3.0]\n[array]\n'
              'linear = { n = "four", spacing = 0.1, center = [2.5, 2.0, 1.2] }\n'
              '[sources]\npositions = [[1.0, 1.0, 1.5]]\n',
    "axis-5": 'name = "bad"\n[room]\nsize = [5.0, 4.0, 3.0]\n[array]\n'
              'linear = { n = 4, spacing = 0.1, center = [2.5, 2.0, 1.2], axis = 5 }\n'
              '[sources]\npositions = [[1.0, 1.0, 1.5]]\n',
    "window-big": 'name = "bad"\nwindow = "big"\n[room]\nsize = [5.0, 4.0, 3.0]\n[array]\n'
                  'positions = [[1.0, 1.0, 1.0]]\n[sources]\npositions = [[2.0, 2.0, 1.0]]\n',
    "sources-abc": 'name = "bad"\n[room]\nsize = [5.0, 4.0, 3.0]\n[array]\npositions = [[1.0, 1.0, 1.0]]\n'
                   '[sources]\npositions = "abc"\n',
    "name-absolute": 'name = "/absolute/elsewhere"\n[room]\nsize = [5.0, 4.0, 3.0]\n[array]\n'
                     'positions = [[1.0, 1.0, 1.0]]\n[sources]\npositions = [[2.0, 2.0, 1.0]]\n',
    "name-dotdot": 'name = "../../x"\n[room]\nsize = [5.0, 4.0, 3.0]\n[array]\n'
                   'positions = [[1.0, 1.0, 1.0]]\n[sources]\npositions = [[2.0, 2.0, 1.0]]\n',
    **{f"splits-{case}": 'name = "bad"\n[room]\nsize = [5.0, 4.0, 3.0]\n[array]\npositions = [[1.0, 1.0, 1.0]]\n'
                         f'[sources]\npositions = [[2.0, 2.0, 1.0], [3.0, 2.0, 1.0]]\n[splits]\n{text}\n'
       for case, text in {"shared": "train = [0, 1]\ntest = [1]", "repeated": "train = [0, 0]\ntest = [1]",
                          "inf": "test = [inf]", "nan": "test = [nan]", "empty-test": "train = [0, 1]\ntest = []"
                          }.items()},
    "window-huge": 'name = "bad"\nwindow = 1' + "0" * 400 + '\n[room]\nsize = [5.0, 4.0, 3.0]\n[array]\n'
                   'positions = [[1.0, 1.0, 1.0]]\n[sources]\npositions = [[2.0, 2.0, 1.0]]\n',
    "c-huge": 'name = "bad"\n[room]\nsize = [5.0, 4.0, 3.0]\nc = 1e12\n[array]\n'
              'positions = [[1.0, 1.0, 1.0]]\n[sources]\npositions = [[2.0, 2.0, 1.0]]\n',
    "source-at-mic": 'name = "bad"\n[room]\nsize = [5.0, 4.0, 3.0]\n[array]\n'
                     'positions = [[1.0, 1.0, 1.0]]\n[sources]\npositions = [[1.0, 1.0, 1.0]]\n',
}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """The shared workspace with its artefacts."""
    import torch
    import xarray as xr
    from safetensors.torch import save_file

    from xai_loc.models import build_model, save_checkpoint
    from xai_loc.models.checkpoint import CARD_KEY

    root = tmp_path_factory.mktemp("corpus")
    (root / "afile").write_text("not a folder\n")
    (root / "ro").mkdir()
    (root / "emptydir").mkdir()
    (root / "text.pth").write_text("hello, I am not a checkpoint\n")
    (root / "text.safetensors").write_text("hello, I am not a checkpoint either\n")
    torch.manual_seed(0)
    ckpt = save_checkpoint(build_model("loccnn"), root / "loccnn.safetensors",
                           {"condition": {"t60": 0.15, "snr": 25.0}})
    # NaN weights: saving refuses them, so write the file the way a foreign tool would
    from safetensors import safe_open
    with safe_open(str(ckpt), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["fc2.bias"][0] = float("nan")
    save_file(tensors, str(root / "nan.safetensors"), metadata={CARD_KEY: meta[CARD_KEY]})
    # a card without its condition (written by another tool), and a model of other windows than the paper's
    card = json.loads(meta[CARD_KEY])
    del card["condition"], card["card_sha256"]  # another tool's card: no digest of ours
    (root / "nocond").mkdir()
    save_file({k: v for k, v in tensors.items()}, str(root / "nocond" / "x.safetensors"),
              metadata={CARD_KEY: json.dumps(card)})
    save_checkpoint(build_model("loccnn", n_mics=2, n_samples=1024), root / "small.safetensors",
                    {"condition": {"t60": 0.15, "snr": 25.0}})
    import soundfile as sf
    sf.write(root / "ears.wav", np.random.default_rng(0).standard_normal((8000, 2)) * 0.1, 16000)
    results = root / "results"
    (results / "text").mkdir(parents=True)
    (results / "text" / "perturbation.nc").write_text("not netCDF\n")
    xr.Dataset({"mae_mean": ("p", np.arange(4.0))}).to_netcdf(root / "whole.nc", engine="h5netcdf")
    blob = (root / "whole.nc").read_bytes()
    (results / "truncated").mkdir()
    (results / "truncated" / "perturbation.nc").write_bytes(blob[: len(blob) // 2])
    for name, text in BAD_TOML.items():
        (root / f"{name}.toml").write_text(text)
    _damaged_scene_stores(root / "scenes")
    # a tiny relevance store, for listen
    runner = CliRunner()
    out = runner.invoke(main, ["--threads", "1", "explain", "--checkpoint", str(ckpt), "--sources", "1",
                               "--data", str(root / "data"), "--batch-size", "8", "--option", "first_rule=flat"])
    assert out.exit_code == 0, out.output
    (root / "relevance").symlink_to(out.output.strip().splitlines()[-1])
    return root


#: (case id, arguments; ``{ws}`` is the workspace, ``{pre}`` the shipped checkpoints; environment).
CASES = [
    # paths below a file, on a read-only file system, or named by the environment
    ("simulate-data-below-file", ["simulate", "--t60", "0.3", "--snr", "10", "--data", "{ws}/afile/x"], {}),
    ("simulate-out-alias-ro", ["simulate", "--t60", "0.3", "--snr", "10", "--out", "{ws}/ro/x"], {}),
    ("simulate-env-below-file", ["simulate", "--t60", "0.3", "--snr", "10"], {"XAI_LOC_DATA": "{ws}/afile/d"}),
    ("train-data-ro", ["train", "--model", "loccnn", "--t60", "0.3", "--snr", "10", "--data", "{ws}/ro"], {}),
    ("train-out-below-file", ["train", "--model", "loccnn", "--t60", "0.3", "--snr", "10",
                              "--out", "{ws}/afile/m.safetensors"], {}),
    ("explain-data-below-file", ["explain", "--checkpoint", "{ws}/loccnn.safetensors", "--data", "{ws}/afile/d"], {}),
    ("explain-out-ro", ["explain", "--checkpoint", "{ws}/loccnn.safetensors", "--out", "{ws}/ro/r.zarr"], {}),
    # a pseudo file system where permission bits allow writing (as root) but nothing can be created
    ("simulate-data-proc", ["simulate", "--t60", "0.3", "--snr", "10", "--sources", "1", "--data", "/proc/d"], {}),
    ("perturb-out-sys", ["perturb", "--checkpoint", "{ws}/loccnn.safetensors", "--out", "/sys/xai-loc-r"], {}),
    ("tfcnn-probe-other-family", ["binaural", "tfcnn", "probe", "--checkpoint", "{pre}/bast_default.safetensors",
                                  "--data", "{ws}/tf"], {}),
    ("cuenet-probe-other-family", ["binaural", "cuenet", "probe", "--checkpoint", "{pre}/tfcnn_default.safetensors",
                                   "--data", "{ws}/cn"], {}),
    ("explain-out-dot", ["explain", "--checkpoint", "{ws}/loccnn.safetensors", "--out", "."], {}),
    ("explain-out-empty", ["explain", "--checkpoint", "{ws}/loccnn.safetensors", "--out", ""], {}),
    ("explain-out-user-folder", ["explain", "--checkpoint", "{ws}/loccnn.safetensors", "--out", "{ws}/results"], {}),
    ("perturb-out-below-file", ["perturb", "--checkpoint", "{ws}/loccnn.safetensors", "--out", "{ws}/afile/r"], {}),
    ("perturb-data-ro", ["perturb", "--checkpoint", "{ws}/loccnn.safetensors", "--data", "{ws}/ro/d"], {}),
    ("tdoa-out-ro", ["tdoa", "--checkpoint", "{ws}/loccnn.safetensors", "--out", "{ws}/ro/r"], {}),
    ("listen-out-below-file", ["listen", "{ws}/relevance", "--out", "{ws}/afile/w"], {}),
    ("figures-below-file", ["figures", "{ws}/afile"], {}),
    ("reproduce-out-ro", ["reproduce", "--quick", "--out", "{ws}/ro/r"], {}),
    ("reproduce-out-in-store", ["reproduce", "--quick", "--out", "{ws}/relevance/r"], {}),
    ("reproduce-data-below-file", ["reproduce", "--quick", "--data", "{ws}/afile/d"], {}),
    ("import-out-below-file", ["models", "import", "--arch", "loccnn", "--t60", "0.6", "--snr", "10",
                               "--out", "{ws}/afile/x.safetensors", "{ws}/text.pth"], {}),
    ("evaluate-json-ro", ["evaluate", "{ws}/loccnn.safetensors", "--json", "{ws}/ro/e.json"], {}),
    ("binaural-simulate-data-ro", ["binaural", "simulate", "--data", "{ws}/ro"], {}),
    ("binaural-train-out-below-file", ["binaural", "train", "--out", "{ws}/afile/c.safetensors"], {}),
    ("binaural-cues-out-ro", ["binaural", "cues", "--out", "{ws}/ro/c"], {}),
    ("tfcnn-train-data-below-file", ["binaural", "tfcnn", "train", "--data", "{ws}/afile/d"], {}),
    ("tfcnn-probe-out-ro", ["binaural", "tfcnn", "probe", "--out", "{ws}/ro/p"], {}),
    ("cuenet-train-data-ro", ["binaural", "cuenet", "train", "--data", "{ws}/ro"], {}),
    ("cuenet-probe-out-below-file", ["binaural", "cuenet", "probe", "--out", "{ws}/afile/p"], {}),
    ("bast-train-out-ro", ["binaural", "bast", "train", "--out", "{ws}/ro/b.safetensors"], {}),
    ("bast-table-out-below-file", ["binaural", "bast", "table", "--out", "{ws}/afile/t"], {}),
    ("bast-explain-out-ro", ["binaural", "bast", "explain", "--out", "{ws}/ro/e"], {}),
    ("binaural-explain-out-ro", ["binaural", "explain", "{pre}/cochcnn_default.safetensors", "{ws}/afile",
                                 "--out", "{ws}/ro/e"], {}),
    # devices, seeds, counts, threads
    ("train-cuda", ["train", "--model", "loccnn", "--t60", "0.3", "--snr", "10", "--device", "cuda"], {}),
    ("reproduce-cuda", ["reproduce", "--quick", "--device", "cuda"], {}),
    ("explain-device-word", ["explain", "--checkpoint", "{ws}/loccnn.safetensors", "--device", "cuda:x"], {}),
    ("simulate-seed-negative", ["simulate", "--t60", "0.3", "--snr", "10", "--seed", "-1"], {}),
    ("perturb-seed-negative", ["perturb", "--checkpoint", "{ws}/loccnn.safetensors", "--seed", "-1"], {}),
    ("binaural-simulate-seed-word", ["binaural", "simulate", "--seed", "one"], {}),
    ("binaural-simulate-test-fraction-1", ["binaural", "simulate", "--test-fraction", "1"], {}),
    ("binaural-simulate-no-room", ["binaural", "simulate", "--rooms", ","], {}),
    ("cues-batch-size-0", ["binaural", "cues", "--batch-size", "0"], {}),
    ("cuenet-examples-0", ["binaural", "cuenet", "probe", "--examples", "0"], {}),
    ("bast-heads-0", ["binaural", "bast", "train", "--heads", "0"], {}),
    ("bast-steps-0", ["binaural", "bast", "explain", "--steps", "0"], {}),
    ("ig-steps-0", ["explain", "--checkpoint", "{ws}/loccnn.safetensors", "--method", "integrated_gradients",
                    "--option", "n_steps=0"], {}),
    ("threads-huge", ["--threads", "65536", "info"], {}),
    ("threads-zero", ["--threads", "0", "info"], {}),
    ("threads-env-word", ["info"], {"XAI_LOC_THREADS": "many"}),
    ("threads-underscore-env-word", ["info"], {"XAI_LOC_THREADS": "1_6"}),
    ("keep-memory-env-word", ["info"], {"XAI_LOC_KEEP_MEMORY": "yes"}),
    ("sources-zero", ["simulate", "--t60", "0.3", "--snr", "10", "--sources", "0"], {}),
    ("epochs-negative", ["binaural", "tfcnn", "train", "--epochs", "-2"], {}),
    ("lr-nan", ["train", "--model", "loccnn", "--t60", "0.3", "--snr", "10", "--lr", "nan"], {}),
    ("max-minutes-inf", ["binaural", "bast", "train", "--max-minutes", "inf"], {}),
    # conditions
    ("snr-huge", ["simulate", "--t60", "0.3", "--snr", "1e300"], {}),
    ("snr-very-negative", ["simulate", "--t60", "0.3", "--snr", "-1000"], {}),
    ("t60-negative", ["simulate", "--t60", "-1", "--snr", "10"], {}),
    ("t60-word", ["perturb", "--t60", "long", "--snr", "10"], {}),
    ("perturb-no-condition", ["perturb"], {}),
    # lists and choices
    ("modes-empty", ["perturb", "--checkpoint", "{ws}/loccnn.safetensors", "--modes", ""], {}),
    ("modes-comma", ["perturb", "--checkpoint", "{ws}/loccnn.safetensors", "--modes", ","], {}),
    ("modes-twice", ["perturb", "--checkpoint", "{ws}/loccnn.safetensors", "--modes", "random,random"], {}),
    ("modes-unknown", ["perturb", "--checkpoint", "{ws}/loccnn.safetensors", "--modes", "loudest"], {}),
    ("percentages-word", ["perturb", "--checkpoint", "{ws}/loccnn.safetensors", "--percentages", "ten"], {}),
    ("percentages-over-100", ["perturb", "--checkpoint", "{ws}/loccnn.safetensors", "--percentages", "0,120"], {}),
    ("percentages-no-zero", ["perturb", "--checkpoint", "{ws}/loccnn.safetensors", "--percentages", "10,20"], {}),
    ("faithfulness-method-unknown",
     ["faithfulness", "--checkpoint", "{ws}/loccnn.safetensors", "--methods", "magic"], {}),
    ("faithfulness-composite-unknown",
     ["faithfulness", "--checkpoint", "{ws}/loccnn.safetensors", "--methods", "lrp:nonesuch"], {}),
    ("faithfulness-methods-empty", ["faithfulness", "--checkpoint", "{ws}/loccnn.safetensors", "--methods", ","], {}),
    ("faithfulness-fill-unknown", ["faithfulness", "--checkpoint", "{ws}/loccnn.safetensors", "--fills", "mean"], {}),
    ("faithfulness-fills-empty", ["faithfulness", "--checkpoint", "{ws}/loccnn.safetensors", "--fills", ""], {}),
    ("sanity-method-unknown", ["sanity", "--checkpoint", "{ws}/loccnn.safetensors", "--methods", "magic"], {}),
    ("sanity-methods-empty", ["sanity", "--checkpoint", "{ws}/loccnn.safetensors", "--methods", ","], {}),
    ("components-method-unknown", ["components", "--checkpoint", "{ws}/loccnn.safetensors", "--methods", "magic"],
     {}),
    ("components-early-end-negative",
     ["components", "--checkpoint", "{ws}/loccnn.safetensors", "--early-end", "-0.01"], {}),
    ("report-damaged-nc", ["report", "{ws}/results/truncated", "--out", "{ws}/page.html"], {}),
    ("report-out-is-folder", ["report", "{ws}/results/text", "--out", "{ws}/ro"], {}),
    ("report-out-study-json", ["report", "{ws}/results/text", "--out", "{ws}/results/text/study.json"], {}),
    ("report-empty-folder", ["report", "{ws}/ro"], {}),
    ("percentages-zero-alone", ["perturb", "--checkpoint", "{ws}/loccnn.safetensors", "--percentages", "0"], {}),
    ("faithfulness-percentages-zero-alone",
     ["faithfulness", "--checkpoint", "{ws}/loccnn.safetensors", "--percentages", "0"], {}),
    ("faithfulness-percentages-no-zero",
     ["faithfulness", "--checkpoint", "{ws}/loccnn.safetensors", "--percentages", "10,20"], {}),
    ("listen-mic-99", ["listen", "{ws}/relevance", "--out", "{ws}/w", "--mics", "99"], {}),
    ("listen-mic-negative", ["listen", "{ws}/relevance", "--out", "{ws}/w", "--mics", "-1"], {}),
    ("listen-source-unknown", ["listen", "{ws}/relevance", "--out", "{ws}/w", "--sources", "9999"], {}),
    ("model-not-the-checkpoints", ["explain", "--model", "samplecnn", "--checkpoint", "{ws}/loccnn.safetensors"], {}),
    ("perturb-model-not-the-checkpoints",
     ["perturb", "--model", "samplecnn", "--checkpoint", "{ws}/loccnn.safetensors"], {}),
    ("composite-without-lrp", ["explain", "--checkpoint", "{ws}/loccnn.safetensors", "--method", "saliency",
                               "--composite", "epsilon"], {}),
    ("option-twice", ["explain", "--checkpoint", "{ws}/loccnn.safetensors", "--option", "epsilon=1e-6",
                      "--option", "epsilon=1e-3"], {}),
    ("listen-mic-twice", ["listen", "{ws}/relevance", "--out", "{ws}/w", "--mics", "0,0"], {}),
    ("composite-of-other-family", ["explain", "--checkpoint", "{ws}/loccnn.safetensors", "--composite", "cochcnn"], {}),
    ("audit-target-needs-truth", ["audit", "loccnn", "--target", "truth"], {}),
    ("audit-folder", ["audit", "{ws}/ro"], {}),
    ("audit-composite-of-other-family", ["audit", "{ws}/loccnn.safetensors", "--composite", "tfcnn"], {}),
    ("option-unknown", ["tdoa", "--checkpoint", "{ws}/loccnn.safetensors", "--option", "colour=red"], {}),
    ("tdoa-srp-windows-without-srp", ["tdoa", "--checkpoint", "{ws}/loccnn.safetensors", "--no-srp",
                                      "--srp-windows", "3"], {}),
    ("train-benchmark-deterministic", ["train", "--model", "loccnn", "--t60", "0.3", "--snr", "10", "--benchmark",
                                       "--data", "{ws}/d"], {}),
    ("occlusion-window-too-long", ["explain", "--checkpoint", "{ws}/loccnn.safetensors", "--method", "occlusion",
                                   "--option", "window=100000", "--sources", "1", "--data", "{ws}/d"], {}),
    ("option-malformed", ["explain", "--checkpoint", "{ws}/loccnn.safetensors", "--option", "epsilon"], {}),
    # files that are not what they claim
    ("import-text-pth", ["models", "import", "--arch", "loccnn", "--t60", "0.6", "--snr", "10", "{ws}/text.pth",
                         "--out", "{ws}/x.safetensors"], {}),
    ("import-xai-loc-checkpoint", ["models", "import", "--arch", "loccnn", "--t60", "0.6", "--snr", "10",
                                   "{ws}/loccnn.safetensors", "--out", "{ws}/x.safetensors"], {}),
    ("import-missing", ["models", "import", "--arch", "loccnn", "--t60", "0.6", "--snr", "10", "{ws}/none.pth"], {}),
    ("evaluate-text-checkpoint", ["evaluate", "{ws}/text.safetensors"], {}),
    ("evaluate-nan-weights", ["evaluate", "{ws}/nan.safetensors"], {}),
    ("explain-nan-weights", ["explain", "--checkpoint", "{ws}/nan.safetensors"], {}),
    ("evaluate-binaural-checkpoint", ["evaluate", "{pre}/cochcnn_default.safetensors"], {}),
    ("perturb-binaural-checkpoint", ["perturb", "--checkpoint", "{pre}/tfcnn_default.safetensors"], {}),
    ("binaural-explain-multichannel", ["binaural", "explain", "{ws}/loccnn.safetensors", "{ws}/afile"], {}),
    ("figures-text-nc", ["figures", "{ws}/results/text"], {}),
    ("figures-truncated-nc", ["figures", "{ws}/results/truncated"], {}),
    ("figures-empty-folder", ["figures", "{ws}/ro"], {}),
    ("listen-not-a-store", ["listen", "{ws}/ro", "--out", "{ws}/w"], {}),
    ("reproduce-pretrained-missing", ["reproduce", "--quick", "--pretrained", "{ws}/nowhere"], {}),
    ("reproduce-pretrained-empty", ["reproduce", "--quick", "--pretrained", "{ws}/emptydir"], {}),
    ("reproduce-skip-unknown", ["reproduce", "--quick", "--skip", "perturbation,nope"], {}),
    ("reproduce-skip-twice", ["reproduce", "--quick", "--skip", "sanity,sanity"], {}),
    ("models-list-dir-missing", ["models", "list", "--dir", "{ws}/nowhere"], {}),
    ("models-list-env-missing", ["models", "list"], {"XAI_LOC_PRETRAINED": "{ws}/nowhere"}),
    ("models-list-card-without-condition", ["models", "list", "--dir", "{ws}/nocond"], {}),
    ("bast-explain-option-unknown", ["binaural", "explain", "{pre}/bast_default.safetensors", "{ws}/ears.wav",
                                     "--option", "foo=1", "--out", "{ws}/e"], {}),
    ("bast-rollout-target", ["binaural", "explain", "{pre}/bast_default.safetensors", "{ws}/ears.wav",
                             "--method", "attention_rollout", "--target", "cos", "--out", "{ws}/e"], {}),
    # refused before any data is simulated or rendered
    ("train-out-suffix", ["train", "--model", "loccnn", "--t60", "0.3", "--snr", "10", "--sources", "1",
                          "--data", "{ws}/d", "--out", "{ws}/m.pt"], {}),
    ("train-init-other-shape", ["train", "--model", "loccnn", "--t60", "0.3", "--snr", "10", "--sources", "1",
                                "--data", "{ws}/d", "--init-from", "{ws}/small.safetensors"], {}),
    ("evaluate-other-shape", ["evaluate", "{ws}/small.safetensors", "--sources", "1", "--data", "{ws}/d"], {}),
    ("bast-train-out-suffix", ["binaural", "bast", "train", "--n-sounds", "10", "--data", "{ws}/d",
                               "--out", "{ws}/b.pt"], {}),
    ("bast-train-empty-split", ["binaural", "bast", "train", "--n-sounds", "2", "--epochs", "1",
                                "--data", "{ws}/d"], {}),
    # damaged scene stores (a chunk gone) of the binaural families
    ("tfcnn-probe-damaged-scene-store", ["binaural", "tfcnn", "probe", "--n-train", "1", "--test-per-azimuth", "1",
                                         "--data", "{ws}/scenes", "--out", "{ws}/res"], {}),
    ("bast-explain-damaged-scene-store", ["binaural", "bast", "explain", "--data", "{ws}/scenes", "--out", "{ws}/res"],
     {}),
    ("cuenet-probe-damaged-cue-store", ["binaural", "cuenet", "probe", "--train-per-utterance", "1",
                                        "--test-per-utterance", "1", "--data", "{ws}/scenes", "--out", "{ws}/res"], {}),
    # scenes: malformed fields and names that would leave the data root
    *[(f"scene-{name}", ["simulate", "--t60", "0.3", "--snr", "10", "--scene", f"{{ws}}/{name}.toml",
                         "--data", "{ws}/d"], {}) for name in BAD_TOML],
    ("scene-empty-name", ["simulate", "--t60", "0.3", "--snr", "10", "--scene", "", "--data", "{ws}/d"], {}),
    ("scene-missing-file", ["simulate", "--t60", "0.3", "--snr", "10", "--scene", "{ws}/no.toml"], {}),
    # click's own usage errors: a bad choice, a missing or unknown option, argument or command
    ("split-unknown", ["simulate", "--t60", "0.6", "--snr", "10", "--split", "bogus"], {}),
    ("convention-unknown", ["simulate", "--t60", "0.6", "--snr", "10", "--convention", "foo"], {}),
    ("snr-missing", ["simulate", "--t60", "0.6"], {}),
    ("option-no-such", ["simulate", "--t60", "0.6", "--snr", "10", "--colour", "red"], {}),
    ("command-no-such", ["simulat"], {}),
    ("subcommand-no-such", ["models", "lst"], {}),
    ("command-missing", ["--threads", "1"], {}),
    ("evaluate-checkpoint-missing-argument", ["evaluate"], {}),
    ("binaural-explain-wav-missing", ["binaural", "explain", "{pre}/cochcnn_default.safetensors", "{ws}/none.wav"],
     {}),
    # numbers written as the command line does not read them, and ranges the library decides
    ("snr-underscore", ["simulate", "--t60", "0.3", "--snr", "1_0"], {}),
    ("t60-other-digits", ["simulate", "--t60", "\u0660.3", "--snr", "10"], {}),
    ("early-end-underscore", ["components", "--checkpoint", "{ws}/loccnn.safetensors", "--early-end", "0_05"], {}),
    ("percentages-underscore", ["perturb", "--checkpoint", "{ws}/loccnn.safetensors", "--percentages", "0,1_0"], {}),
    ("train-batch-size-1", ["train", "--model", "loccnn", "--t60", "0.3", "--snr", "10", "--batch-size", "1"], {}),
    ("train-lr-factor-1", ["train", "--model", "loccnn", "--t60", "0.3", "--snr", "10", "--lr-factor", "1"], {}),
    # methods and fills named once; AttnLRP only where it explains a transformer
    ("faithfulness-methods-blank", ["faithfulness", "--checkpoint", "{ws}/loccnn.safetensors", "--methods", ""], {}),
    ("faithfulness-attn-lrp-on-loccnn",
     ["faithfulness", "--checkpoint", "{ws}/loccnn.safetensors", "--methods", "attn_lrp"], {}),
    ("sanity-attn-lrp-on-loccnn", ["sanity", "--checkpoint", "{ws}/loccnn.safetensors", "--methods", "attn_lrp"], {}),
    # empty paths, never read as the current folder
    ("evaluate-json-empty", ["evaluate", "{ws}/loccnn.safetensors", "--json", ""], {}),
    ("audit-empty", ["audit", ""], {}),
    ("figures-empty", ["figures", ""], {}),
    ("explain-checkpoint-empty", ["explain", "--checkpoint", ""], {}),
]


def _damaged_scene_stores(root: Path) -> None:
    """Finished scene stores with a chunk gone, where the binaural commands below look for their test split."""
    from xai_loc.data import bast_scenes, cue_scenes, ipd_ild_scenes
    from xai_loc.data.resumable import write_store

    stores = [(ipd_ild_scenes.SCENES, ipd_ild_scenes.scene_path(
                  root, ipd_ild_scenes.SceneSpec(name="tfcnn-n1-t1-s0", n_train=1, test_per_azimuth=1), "test")),
              (bast_scenes.BAST_SCENES, bast_scenes.scene_path(root, bast_scenes.BastSceneSpec(name="bast-120"),
                                                               "test")),  # the shipped model's data
              (cue_scenes.CUE_SCENES, cue_scenes.cue_store_path(root, cue_scenes.CueSceneSpec(
                  name="cuenet-1x1", per_utterance={"train": 1, "test": 1}), "test"))]
    for kind, path in stores:
        shape = (2, *(1,) * (len(kind.dims) - 1))
        write_store(path, kind, {"toy": 1}, shape=shape, coords={}, attrs={},
                    render=lambda items, kind=kind, shape=shape: {kind.variable: np.ones((len(items), *shape[1:]),
                                                                                         np.float32)})
        (path / kind.variable / ".".join("0" * len(kind.dims))).unlink()


def _snapshot(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every entry below ``root``: files by size and modification time, folders by presence (the
    output-folder check makes and removes an empty folder in them)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[str((Path(dirpath) / name).relative_to(root))] = None
        for name in filenames:
            st = (Path(dirpath) / name).lstat()
            out[str((Path(dirpath) / name).relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("case, args, env", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(ws, monkeypatch, case, args, env):
    real_access = os.access

    def access(path, mode, *a, **k):  # imitate a read-only file system below ws/ro
        if mode & os.W_OK and str(Path(path).absolute()).startswith(str(ws / "ro")):
            return False
        return real_access(path, mode, *a, **k)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.chdir(ws)
    monkeypatch.setenv("XAI_LOC_PRETRAINED", str(PRETRAINED))
    fill = {"ws": str(ws), "pre": str(PRETRAINED)}
    args = [a.format(**fill) for a in args]
    env = {k: v.format(**fill) for k, v in env.items()}
    before = _snapshot(ws)
    pinned = args[0] == "--threads" or "XAI_LOC_THREADS" in env
    result = CliRunner().invoke(main, args if pinned else ["--threads", "1", *args], env=env)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (case, result.output, result.exception)
    assert "Traceback" not in result.output
    assert result.stdout == "", (case, result.stdout)  # refused before any output, not after half of it
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr  # click's usage errors too
    if case.endswith(("-env-below-file", "-env-word")):  # the variable the user set is named, not the option
        assert lines[0].startswith(f"Error: {next(iter(env))}"), result.stderr
    assert _snapshot(ws) == before, f"{case} changed files"


def test_the_corpus_covers_every_command():
    """Every command of the CLI has at least one bad-input case."""
    import click

    def leaves(group, prefix=()):
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                yield from leaves(cmd, (*prefix, name))
            else:
                yield (*prefix, name)

    covered = {tuple(a for a in args if not a.startswith("-") and "{" not in a)[:3] for _, args, _ in CASES}
    missing = [" ".join(c) for c in leaves(main) if not any(cov[:len(c)] == c for cov in covered)]
    assert missing == [], missing


# --------------------------------------------------------------------------------------
# kill -9 and resume: the store is never read half-written, and the resumed one is byte-identical
# --------------------------------------------------------------------------------------

def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _kill_when(args: list[str], cwd: Path, ready) -> bool:
    """Run the CLI in a process and SIGKILL it as soon as ``ready()`` holds; whether it was killed."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", "from xai_loc.cli import main; main()", *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600  # a guard against a hang, not a speed limit
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    return proc.wait() == -signal.SIGKILL


@pytest.mark.parametrize("moment", ["creation", "data"])
def test_simulate_killed_then_resumed_is_byte_identical(tmp_path, moment):
    args = ["--threads", "1", "simulate", "--t60", "0.15", "--snr", "20", "--sources", "3"]
    assert CliRunner().invoke(main, [*args, "--data", str(tmp_path / "ref")]).exit_code == 0
    reference = next((tmp_path / "ref").rglob("*.zarr"))
    run = tmp_path / "run"
    if moment == "creation":  # killed while the partial store is being laid out
        def ready():
            return any(run.rglob("*.zarr.partial"))
    else:  # killed after some windows are safely written
        def ready():
            return any('"windows_written": 0' not in p.read_text() for p in run.rglob("*.progress.json")
                       if p.stat().st_size)
    assert _kill_when([*args, "--data", str(run)], tmp_path, ready)
    assert not any(run.rglob("*.zarr"))  # nothing under the final name
    result = CliRunner().invoke(main, [*args, "--data", str(run)])
    assert result.exit_code == 0, result.output
    resumed = next(run.rglob("*.zarr"))
    assert _tree_bytes(resumed) == _tree_bytes(reference)
    assert not [p for p in run.rglob("*") if p.name.endswith((".lock", ".partial", ".progress.json"))]


def test_explain_killed_then_resumed_is_byte_identical(ws, tmp_path):
    ckpt = ws / "loccnn.safetensors"
    args = ["--threads", "1", "explain", "--checkpoint", str(ckpt), "--sources", "2", "--batch-size", "2"]
    data = tmp_path / "data"
    ref = CliRunner().invoke(main, [*args, "--data", str(data), "--out", str(tmp_path / "ref.zarr")])
    assert ref.exit_code == 0, ref.output
    out = tmp_path / "run.zarr"

    def ready():
        progress = tmp_path / "run.zarr.progress.json"
        return progress.exists() and progress.stat().st_size and '"windows_written": 0' not in progress.read_text()

    assert _kill_when([*args, "--data", str(data), "--out", str(out)], tmp_path, ready)
    assert not out.exists()
    result = CliRunner().invoke(main, [*args, "--data", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert _tree_bytes(out) == _tree_bytes(tmp_path / "ref.zarr")


def test_output_folder_check_makes_and_removes_an_entry(tmp_path, monkeypatch):
    import errno
    import tempfile

    from xai_loc.cli_params import check_out_dir

    (tmp_path / "kept").mkdir()
    assert check_out_dir(tmp_path / "kept" / "new" / "deeper", "--out") == tmp_path / "kept" / "new" / "deeper"
    assert list((tmp_path / "kept").iterdir()) == []  # the probe is gone, nothing made

    def refuse(*args, **kwargs):  # what /proc or a read-only mount answers, whoever the user is
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(InputError) as err:
        check_out_dir(tmp_path / "kept" / "new", "--out")
    assert str(err.value) == (f"--out {str(tmp_path / 'kept' / 'new')!r} is not writable: nothing can be created "
                              f"in {str(tmp_path / 'kept')!r} ({os.strerror(errno.EROFS)}); choose another folder")


def test_an_atomic_write_onto_a_folder_is_one_line_naming_it(tmp_path):
    """Review: a summary.md or report.html that was a folder failed late, naming a temporary file."""
    from xai_loc.io import write_text_atomic

    (tmp_path / "summary.md").mkdir()
    with pytest.raises(InputError) as err:
        write_text_atomic(tmp_path / "summary.md", "text")
    assert str(err.value) == (f"cannot write the file {str(tmp_path / 'summary.md')!r}: it is a folder; remove it "
                              "or choose another path")
    assert [p.name for p in tmp_path.iterdir()] == ["summary.md"] and not any((tmp_path / "summary.md").iterdir())


def test_one_number_test_for_the_whole_package():
    """``checks`` decides for every input check which values are numbers: no bools, no NaN/inf, no overflow."""
    from fractions import Fraction

    from xai_loc.checks import is_integer, is_real
    numbers = [3, np.int64(3), 2.5, np.float32(2.5), Fraction(1, 3)]
    not_numbers = [True, np.bool_(True), float("nan"), -math.inf, np.float32("inf"), 10 ** 400, "3", None, [1]]
    assert [is_real(v) for v in numbers] == [True] * 5
    assert [is_real(v) for v in not_numbers] == [False] * len(not_numbers)
    assert [is_integer(v) for v in (3, np.int64(3), np.uint8(0), 10 ** 400)] == [True] * 4
    assert [is_integer(v) for v in (True, np.bool_(False), 3.0, np.float64(3), "3")] == [False] * 5
