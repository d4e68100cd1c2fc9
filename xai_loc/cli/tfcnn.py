"""``binaural tfcnn``: the IPD/ILD TF-CNN (train, probe)."""
from __future__ import annotations

import click

from xai_loc.cli._common import (
    DATA_ROOT,
    POSITIVE,
    SCENE_SEED,
    command_options,
    family_checkpoint,
    family_composite,
    publish_results,
    results_out_option,
    setup,
    with_options,
)
from xai_loc.cli.binaural import SceneOptions, binaural, given_only, probe_seed_option
from xai_loc.cli_params import (
    MAX_BATCH,
    SNR,
    InputFile,
    Int,
    OutFile,
)


@binaural.group("tfcnn")
def binaural_tfcnn() -> None:
    """IPD/ILD time-frequency CNN (Pang et al., 2019): train, probe.

    \b
    Train:   xai-loc --threads 1 binaural tfcnn train   (defaults recreate pretrained/tfcnn_default)
    Probe:   xai-loc binaural tfcnn probe     (relevance on the IPD vs ILD channel per band)
    """


#: Most training scenes and test scenes per azimuth and SNR: 12.8 GB and 14 GB of default 1 s scenes (128 kB each).
MAX_TRAIN, MAX_TEST_PER_AZIMUTH = 100_000, 1000

#: Options of the TF-CNN's scene set (:class:`~xai_loc.data.ipd_ild_scenes.SceneSpec`).
_tfcnn_scene_options = with_options(
    click.option("--n-train", type=Int(1, MAX_TRAIN), default=8000, show_default=True,
                 help=f"Training scenes (SNR uniform in -10..30 dB), at most {MAX_TRAIN} (128 kB each on disk)."),
    click.option("--test-per-azimuth", type=Int(1, MAX_TEST_PER_AZIMUTH), default=10, show_default=True,
                 help="Test scenes per azimuth at each test SNR (-6, 0, 6 dB), held-out utterances; at most "
                      f"{MAX_TEST_PER_AZIMUTH} (each one is 37 x 3 scenes of 128 kB)."),
    SCENE_SEED,
    DATA_ROOT,
)


def _tfcnn_spec(base=None, *, n_train=None, test_per_azimuth=None, seed=None):
    from dataclasses import replace

    from xai_loc.data.ipd_ild_scenes import SceneSpec
    from xai_loc.data.spec import spec_digest

    spec = replace(base or SceneSpec(), **given_only(n_train=n_train, test_per_azimuth=test_per_azimuth, seed=seed))
    name = f"tfcnn-n{spec.n_train}-t{spec.test_per_azimuth}-s{spec.seed}"
    shown = ("name", "n_train", "test_per_azimuth", "seed")  # the other fields of a card's spec get a digest
    other = {k: v for k, v in spec.to_dict().items() if k not in shown}
    default = {k: v for k, v in SceneSpec().to_dict().items() if k not in shown}
    return replace(spec, name=name if other == default else f"{name}-{spec_digest(other, 10)}")


#: The TF-CNN's scene options: the seed picks the held-out utterances.
TFCNN_OPTIONS = SceneOptions("tfcnn", _tfcnn_spec, ("seed",))


@binaural_tfcnn.command("train")
@_tfcnn_scene_options
@click.option("--out", type=OutFile(".safetensors"), default=None,
              help="Checkpoint [default: <data>/runs/tfcnn_<scenes>.safetensors]; rerun to resume.")
@click.option("--width", type=click.Choice(("small", "paper")), default="small", show_default=True,
              help="Layer widths: small (conv channels 16-32-64-64, dense 256-128-64) or paper (32-64-128-256, "
                   "dense 1024-512-256).")
@click.option("--head", type=click.Choice(("regression", "multitask")), default="regression", show_default=True,
              help="Azimuth regression (-90..90, MSE) or azimuth x elevation classification.")
@click.option("--epochs", type=Int(1), default=15, show_default=True,
              help="Passes over the training scenes (also sets the cosine learning-rate decay).")
@click.option("--batch-size", type=Int(2, MAX_BATCH), default=32, show_default=True,
              help="IPD/ILD maps per optimizer step, at least 2.")
@click.option("--lr", type=POSITIVE, default=1e-3, show_default=True,
              help="Adam learning rate at the start of its cosine decay.")
@click.option("--max-minutes", type=POSITIVE, default=None,
              help="Wall-clock budget of the epochs (minutes); rerun to continue.")
@click.pass_context
def binaural_tfcnn_train(ctx, n_train, test_per_azimuth, seed, data, out, width, head, epochs, batch_size, lr,
                         max_minutes) -> None:
    """Render the KEMAR speech-in-noise scenes (if absent) and train the TF-CNN; the card holds
    accuracy within 5 and 10 degrees per test SNR."""
    from pathlib import Path

    from xai_loc.data.ipd_ild_scenes import render_scenes
    from xai_loc.models.tfcnn_training import TFCNNTrainConfig, train_tfcnn

    setup(ctx)
    spec = TFCNN_OPTIONS.of(ctx)
    config = TFCNNTrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, max_minutes=max_minutes)
    paths = render_scenes(spec, data, progress=True)
    out = Path(out) if out else Path(data) / "runs" / f"tfcnn_{spec.name}.safetensors"
    path = train_tfcnn(paths["train"], out, test_scenes=paths["test"], model_config={"width": width, "head": head},
                       config=config, progress=True)
    click.echo(str(path))


@binaural_tfcnn.command("probe")
@_tfcnn_scene_options
@click.option("--checkpoint", type=InputFile(), default=None,
              help="A TF-CNN checkpoint [default: the shipped pretrained/tfcnn_default.safetensors].")
@click.option("--snr", "snrs", type=SNR, multiple=True, help="Test SNR(s) to probe [default: all of them].")
@click.option("--examples", type=Int(1), default=96, show_default=True,
              help="Examples per SNR, a draw seeded by --probe-seed.")
@probe_seed_option("the --examples draw")
@click.option("--option", "options", multiple=True, help="Composite option KEY=VALUE, e.g. conv_rule=epsilon.")
@results_out_option("tfcnn", "Results folder of band_profile.nc and band_profile.png/.pdf.")
@click.pass_context
def binaural_tfcnn_probe(ctx, n_train, test_per_azimuth, seed, data, checkpoint, snrs, examples, probe_seed, options,
                         out) -> None:
    """Relevance on the IPD vs the ILD channel per octave band at each test SNR (duplex theory:
    IPD below ~1.5 kHz, ILD above); writes band_profile.nc and band_profile.png/.pdf under OUT, all
    or none. The scenes are the test split of the data the checkpoint's card records (--seed may not
    differ from the card's; --probe-seed seeds the draw of the examples)."""
    import numpy as np

    from xai_loc.experiments.ipd_ild_probe import check_snrs, run_ipd_ild_probe
    from xai_loc.explain.tfcnn import explain_tfcnn

    setup(ctx)
    model = family_checkpoint(checkpoint, "tfcnn")  # before rendering
    spec = TFCNN_OPTIONS.held_out(ctx, model)
    check_snrs(snrs, spec.test_snrs, "--snr")  # before the scenes are rendered
    options = command_options(ctx, composite=family_composite("tfcnn"))
    # one noise example with the options: a bad one fails before the scenes are rendered
    explain_tfcnn(model, np.random.default_rng(0).standard_normal((1, 2, spec.n_samples)).astype(np.float32) * 0.05,
                  **options)

    def probe(staging):
        scenes = TFCNN_OPTIONS.test_store(spec, data)
        return run_ipd_ild_probe(model, scenes, staging, snrs=snrs or None, n_examples=examples, seed=probe_seed,
                                 **options).values()

    for path in publish_results(out, {"band_profile.nc": True}, probe):
        click.echo(str(path))
