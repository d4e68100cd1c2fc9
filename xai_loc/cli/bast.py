"""``binaural bast``: the BAST transformer (train, table, explain)."""
from __future__ import annotations

import click

from xai_loc.checks import MAX_PATH_POINTS
from xai_loc.cli._common import (
    DATA_ROOT,
    POSITIVE,
    SCENE_SEED,
    family_checkpoint,
    results_out_option,
    setup,
    with_options,
)
from xai_loc.cli.binaural import MAX_SOUNDS, SceneOptions, binaural, given_only
from xai_loc.cli_params import (
    MAX_BATCH,
    InputFile,
    Int,
    OutFile,
)
from xai_loc.runtime import parse_number


@binaural.group("bast")
def binaural_bast() -> None:
    """BAST binaural spectrogram transformer (Kuang et al.): train, table, explain.

    \b
    Train:   xai-loc --threads 1 binaural bast train    (defaults recreate pretrained/bast_default)
    Table:   xai-loc binaural bast table      (integration x weight sharing, angular error, relevance by ear)
    Explain: xai-loc binaural bast explain    (AttnLRP, Integrated Gradients, attention rollout)
    """


#: Options of BAST's scene set (:class:`~xai_loc.data.bast_scenes.BastSceneSpec`).
_bast_scene_options = with_options(
    click.option("--n-sounds", type=Int(1, MAX_SOUNDS), default=120, show_default=True,
                 help=f"Distinct sounds, each rendered at the 36 azimuths (64 kB each on disk); 20 % held out for "
                      f"test; at most {MAX_SOUNDS}."),
    SCENE_SEED,
    DATA_ROOT,
)


def _bast_spec(base=None, *, n_sounds=None, seed=None):
    from dataclasses import replace

    from xai_loc.data.bast_scenes import BastSceneSpec

    return replace(base or BastSceneSpec(), **given_only(n_sounds=n_sounds, seed=seed)).named()


#: BAST's scene options: the sounds and the seed pick the held-out sounds.
BAST_OPTIONS = SceneOptions("bast", _bast_spec, ("n_sounds", "seed"))


@binaural_bast.command("train")
@_bast_scene_options
@click.option("--integration", type=click.Choice(("ADD", "SUB", "CONCAT")), default="SUB", show_default=True,
              help="How the ears' tokens are joined: left + right, left - right or both side by side (ADD with "
                   "--share-weights cannot tell left from right).")
@click.option("--share-weights", is_flag=True, help="One encoder for both ears (SP); default separate (NSP).")
@click.option("--loss", type=click.Choice(("MSE", "AD", "MIX")), default="MIX", show_default=True,
              help="Loss on the output [cos, sin]: MSE, AD (angular distance) or MIX (MSE + AD).")
@click.option("--epochs", type=Int(1), default=18, show_default=True,
              help="Passes over the training scenes (also sets the cosine learning-rate decay).")
@click.option("--batch-size", type=Int(1, MAX_BATCH), default=32, show_default=True, help="Scenes per optimizer step.")
@click.option("--lr", type=POSITIVE, default=1e-3, show_default=True,
              help="Adam learning rate at the start of its cosine decay.")
@click.option("--dim", type=Int(1), default=64, show_default=True, help="Token width.")
@click.option("--depth", type=Int(1), default=2, show_default=True, help="Blocks per encoder.")
@click.option("--heads", type=Int(1), default=4, show_default=True,
              help="Attention heads per block, each --dim / --heads wide (--dim must be a multiple).")
@click.option("--max-minutes", type=POSITIVE, default=15.0, show_default=True,
              help="Wall-clock budget of the epochs (minutes): no epoch starts that would overrun it.")
@click.option("--out", type=OutFile(".safetensors"), default=None,
              help="Checkpoint [default: <data>/runs/bast_<variant>_s<seed>.safetensors].")
@click.pass_context
def binaural_bast_train(ctx, n_sounds, seed, data, integration, share_weights, loss, epochs, batch_size, lr, dim, depth,
                        heads, max_minutes, out) -> None:
    """Render the KEMAR scenes (if absent), train one BAST variant and score it on held-out sounds
    (mean angular error, within 5 and 10 degrees, front-back confusions)."""
    from pathlib import Path

    from xai_loc.models.bast import fit_bast
    from xai_loc.models.zoo import describe_test_metrics

    setup(ctx)
    variant = f"{'SP' if share_weights else 'NSP'}-{integration}-{loss}"
    out = Path(out) if out else Path(data) / "runs" / f"bast_{variant}_s{seed}.safetensors"
    path, card = fit_bast(BAST_OPTIONS.of(ctx), out, root=data, integration=integration,
                          share_weights=share_weights, loss=loss, epochs=epochs, batch_size=batch_size, lr=lr,
                          dim=dim, depth=depth, heads=heads, seed=seed, max_minutes=max_minutes,
                          progress=True)
    click.echo(f"{path}: {describe_test_metrics(card['metrics']['test'], 'bast')}")


@binaural_bast.command("table")
@_bast_scene_options
@click.option("--loss", type=click.Choice(("MSE", "AD", "MIX")), default="MIX", show_default=True,
              help="Loss of the six models on the output [cos, sin]: MSE, AD (angular distance) or MIX (MSE + AD).")
@click.option("--epochs", type=Int(1), default=8, show_default=True,
              help="Passes over the training scenes of each of the six models.")
@results_out_option("bast", "Results folder of bast_table.nc and bast_table.md.")
@click.pass_context
def binaural_bast_table(ctx, n_sounds, seed, data, loss, epochs, out) -> None:
    """Train and score the six integration (ADD, SUB, CONCAT) x weight-sharing (SP, NSP) variants
    and explain mirror-image scenes with AttnLRP; writes bast_table.nc and bast_table.md.
    Shared weights with ADD are exactly ear-swap symmetric and cannot tell left from right."""
    from xai_loc.experiments.bast_table import markdown_table, run_bast_table

    setup(ctx)
    table = run_bast_table(out, spec=BAST_OPTIONS.of(ctx), root=data, loss=loss, epochs=epochs, seed=seed,
                           progress=True)
    click.echo(markdown_table(table))


@binaural_bast.command("explain")
@_bast_scene_options
@click.option("--checkpoint", type=InputFile(), default=None,
              help="A BAST checkpoint [default: the shipped pretrained/bast_default.safetensors].")
@click.option("--target", default="sin", show_default=True,
              help="Output explained: sin (lateral component), cos, prediction, truth, an azimuth in degrees, or "
                   "direction, true_direction, azimuth, angular_error.")
@click.option("--steps", type=Int(1, MAX_PATH_POINTS), default=32, show_default=True,
              help="Integrated Gradients steps.")
@results_out_option("bast", "Results folder of relevance_view.nc.")
@click.pass_context
def binaural_bast_explain(ctx, n_sounds, seed, data, checkpoint, target, steps, out) -> None:
    """Relevance of mirror-image test scenes (a sound at a and at 360 - a) by AttnLRP, Integrated
    Gradients and attention rollout, per ear and frequency; writes relevance_view.nc. The scenes
    are the test split of the data the checkpoint's card records (--n-sounds and --seed may not
    differ from the card's)."""
    from pathlib import Path

    from xai_loc.data.bast_scenes import BAST_SCENES
    from xai_loc.experiments.bast_table import mirror_relevance
    from xai_loc.explain.attn_lrp import registry_target
    from xai_loc.io import write_dataset_atomic

    setup(ctx)
    model = family_checkpoint(checkpoint, "bast")  # before rendering
    try:
        target = parse_number(target)
    except ValueError:
        pass
    registry_target(target)  # a bad target fails before the scenes are rendered
    scenes = BAST_SCENES.open(BAST_OPTIONS.test_store(BAST_OPTIONS.held_out(ctx, model), data)).load()
    view = mirror_relevance(model, scenes, target=target, n_steps=steps)
    click.echo(str(write_dataset_atomic(view, Path(out) / "relevance_view.nc")))
