"""The root ``xai-loc`` group; every family's module adds its commands to it."""
from __future__ import annotations

import click

from xai_loc.cli._common import Group
from xai_loc.cli_params import Int
from xai_loc.runtime import MAX_THREADS


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="xai-loc")
@click.option("--threads", type=Int(1, MAX_THREADS), default=None, envvar="XAI_LOC_THREADS", show_envvar=True,
              help="torch CPU threads (default: torch's choice; 1 is often fastest on small shared machines).")
def main(threads: int | None) -> None:
    """Explain what neural sound-source localizers listen to.

    \b
    Simulate the paper's data:   xai-loc simulate --t60 0.6 --snr 10 --split test
    Train on the paper's recipe: xai-loc train --model loccnn --t60 0.6 --snr 10
    Evaluate a checkpoint:       xai-loc evaluate pretrained/loccnn_t60-0.6_snr-10.safetensors
    Explain the test split:      xai-loc explain --model samplecnn --t60 0.6 --snr 10
    Perturbation curves:         xai-loc perturb --t60 0.6 --snr 10
    Faithfulness of methods:     xai-loc faithfulness --t60 0.6 --snr 10 --sources 20
    Randomization sanity checks: xai-loc sanity --t60 0.6 --snr 10 --sources 20
    What relevance falls on:     xai-loc components --t60 0.6 --snr 10 --sources 20
    TDOA and SRP probes:         xai-loc tdoa --t60 0.6 --snr 10 --pairs spread
    Redraw figures:              xai-loc figures xai-loc-results
    The whole study:             xai-loc reproduce --quick
    The study as a web page:     xai-loc report xai-loc-results/reproduce
    Check a composite's cover:   xai-loc audit pretrained/samplecnn_t60-0.6_snr-10.safetensors
    Relevance as audio:          xai-loc listen RELEVANCE.zarr --out wavs/
    Shipped and known models:    xai-loc models list
    Import a paper checkpoint:   xai-loc models import --arch samplecnn --t60 0.6 --snr 10 FILE.pth
    Binaural cue probes:         xai-loc binaural cues
    Other binaural families:     xai-loc binaural tfcnn|cuenet|bast ...
    Explain a binaural model:    xai-loc binaural explain CHECKPOINT recording.wav
    Versions and devices:        xai-loc info

    \b
    Environment:
      XAI_LOC_DATA          data root of every --data [default: ./xai-loc-data]
      XAI_LOC_RESULTS       results root of every default --out [default: ./xai-loc-results]
      XAI_LOC_PRETRAINED    folder of the shipped checkpoints that --t60/--snr pick [default: pretrained/]
      XAI_LOC_THREADS       --threads
      XAI_LOC_KEEP_MEMORY   0: return freed memory to the system
    """
