"""``binaural cuenet``: the ITD/ILD/IC cue network (train, probe)."""
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
    InputFile,
    Int,
    Number,
    OutFile,
)


@binaural.group("cuenet")
def binaural_cuenet() -> None:
    """ITD/ILD/IC cue network (per-cue branches fused by attention): train, probe.

    \b
    Train:   xai-loc --threads 1 binaural cuenet train  (defaults recreate pretrained/cuenet_default)
    Probe:   xai-loc binaural cuenet probe    (relevance per cue and band, attention, ablation)
    """


#: Most scenes per utterance (:data:`xai_loc.data.cue_scenes.MAX_PER_UTTERANCE`, whose module imports torch; a test
#: keeps them equal).
MAX_PER_UTTERANCE = 1000

#: Options of the cue network's scene set (:class:`~xai_loc.data.cue_scenes.CueSceneSpec`).
_cue_scene_options = with_options(
    click.option("--train-per-utterance", type=Int(1, MAX_PER_UTTERANCE), default=18, show_default=True,
                 help=f"Training scenes per utterance (240 training utterances), at most {MAX_PER_UTTERANCE}."),
    click.option("--test-per-utterance", type=Int(1, MAX_PER_UTTERANCE), default=12, show_default=True,
                 help=f"Test scenes per utterance (60 held-out utterances), at most {MAX_PER_UTTERANCE}."),
    SCENE_SEED,
    DATA_ROOT,
)


def _cue_spec(base=None, *, train_per_utterance=None, test_per_utterance=None, seed=None):
    from dataclasses import replace

    from xai_loc.data.cue_scenes import CueSceneSpec

    base = base or CueSceneSpec()
    counts = {**base.per_utterance, **given_only(train=train_per_utterance, test=test_per_utterance)}
    name = "cuenet" if counts == CueSceneSpec().per_utterance else f"cuenet-{counts['train']}x{counts['test']}"
    return replace(base, name=name, per_utterance=counts, **given_only(seed=seed))


#: The cue network's scene options: the seed picks the held-out utterances.
CUENET_OPTIONS = SceneOptions("cuenet", _cue_spec, ("seed",))


@binaural_cuenet.command("train")
@_cue_scene_options
@click.option("--out", type=OutFile(".safetensors"), default=None,
              help="Checkpoint [default: <data>/runs/<scenes>_s<seed>.safetensors].")
@click.option("--epochs", type=Int(1), default=100, show_default=True, help="Passes over the training scenes.")
@click.option("--batch-size", type=Int(2, MAX_BATCH), default=32, show_default=True,
              help="Cue maps per optimizer step, at least 2.")
@click.option("--lr", type=POSITIVE, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--label-sigma", type=Number(0), default=0.0, show_default=True,
              help="Spread the cross-entropy target over neighbouring azimuths (degrees; 0: one-hot).")
@click.option("--max-minutes", type=POSITIVE, default=15.0, show_default=True,
              help="Wall-clock budget of the epochs (minutes).")
@click.pass_context
def binaural_cuenet_train(ctx, train_per_utterance, test_per_utterance, seed, data, out, epochs, batch_size, lr,
                          label_sigma, max_minutes) -> None:
    """Render the speech-plus-two-noises scenes and cache their cue maps (if absent), train the
    cue network and score it on held-out utterances (top-1, top-5, azimuth error)."""
    from pathlib import Path

    from xai_loc.features.binaural_cues import simulate_cue_scenes
    from xai_loc.models.classifier_training import ClassifierConfig
    from xai_loc.models.cuenet import train_cuenet

    setup(ctx)
    spec = CUENET_OPTIONS.of(ctx)
    config = ClassifierConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, max_minutes=max_minutes,
                              label_sigma=label_sigma)
    test = simulate_cue_scenes(spec, "test", root=data, progress=True)
    train = simulate_cue_scenes(spec, "train", root=data, progress=True)
    out = Path(out) if out else Path(data) / "runs" / f"{spec.name}_s{seed}.safetensors"
    click.echo(str(train_cuenet(train, out, test_store=test, config=config, progress=True)))


@binaural_cuenet.command("probe")
@_cue_scene_options
@click.option("--checkpoint", type=InputFile(), default=None,
              help="A cue-network checkpoint [default: the shipped pretrained/cuenet_default.safetensors].")
@click.option("--examples", type=Int(1), default=None,
              help="Explain only N test scenes, a draw seeded by --probe-seed [default: all]; the ablation always "
                   "scores all of them.")
@probe_seed_option("the --examples draw and the ablation's permutation")
@click.option("--ablation", type=click.Choice(("permute", "mean")), default="permute", show_default=True,
              help="How the rule-free check destroys one cue: shuffled across scenes, or its mean.")
@click.option("--option", "options", multiple=True,
              help="Composite option KEY=VALUE, e.g. first_rule=epsilon, conv_rule=epsilon.")
@results_out_option("cuenet", "Results folder of cue_relevance.nc, cue_reliance.nc, cue_ablation.nc and "
                              "cue_probe.png/.pdf.")
@click.pass_context
def binaural_cuenet_probe(ctx, train_per_utterance, test_per_utterance, seed, data, checkpoint, examples,
                          probe_seed, ablation, options, out) -> None:
    """LRP relevance per cue (ITD, ILD, IC) and band with the attention weights, and the cue
    ablation, on the held-out scenes (the test split of the data the checkpoint's card records;
    --seed may not differ from the card's; --probe-seed seeds the probe's own draws); writes
    cue_relevance.nc, cue_reliance.nc, cue_ablation.nc and cue_probe.png/.pdf under OUT, all or none."""
    import numpy as np

    from xai_loc.experiments.cue_probe import run_cue_probe
    from xai_loc.explain.attribute import resolve_model
    from xai_loc.explain.cuenet import cue_relevance

    setup(ctx)
    model = family_checkpoint(checkpoint, "cuenet")  # before rendering
    spec = CUENET_OPTIONS.held_out(ctx, model)
    options = command_options(ctx, composite=family_composite("cuenet"))
    # one all-zero cue map with the options: a bad one fails before the scenes are rendered
    net = resolve_model(model)[0]
    cue_relevance(net, np.zeros((1, *net.cue_shape), np.float32), **options)

    def probe(staging):
        test = CUENET_OPTIONS.test_store(spec, data)
        return run_cue_probe(model, test, staging, max_examples=examples, ablation=ablation, seed=probe_seed,
                             **options)["paths"].values()

    writes = dict.fromkeys(("cue_relevance.nc", "cue_reliance.nc", "cue_ablation.nc"), True)
    for path in publish_results(out, writes, probe):
        click.echo(str(path))
