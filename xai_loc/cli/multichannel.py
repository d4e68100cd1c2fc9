"""Commands of the end-to-end multichannel localizers: simulate, models, train, evaluate, explain, audit, listen,
perturb, faithfulness, sanity, tdoa, figures, reproduce, info."""
from __future__ import annotations

import click
from click.core import ParameterSource

from xai_loc.cli._common import (
    ANY_TARGET,
    BACKEND_CHOICES,
    COMPOSITE,
    CONVENTION_OPTION,
    EXPLANATION_OPTIONS,
    FIRST_RULE_CHOICES,
    MODEL,
    POSITIVE,
    RIR_MODE_CHOICES,
    SPLIT_CHOICES,
    check_explanation,
    check_recordings,
    checkpoint_for,
    cluster_options,
    command_options,
    components_options,
    condition_options,
    csv_list,
    data_option,
    device_option,
    experiment_options,
    models_for,
    named_checkpoint,
    position_methods,
    pretrained_option,
    resolve_condition,
    results_out_option,
    sanity_options,
    setup,
    sources_option,
    suite_options,
    warn_condition,
    warn_convention,
    with_options,
)
from xai_loc.cli.root import main
from xai_loc.cli_params import (
    MAX_BATCH,
    SEED,
    SNR,
    T60,
    InputDir,
    InputFile,
    Int,
    Number,
    OutDir,
    OutFile,
    StoreOut,
    check_out_dir,
    naming,
    option_name,
    parse_number,
    results_root_default,
)
from xai_loc.errors import InputError
from xai_loc.runtime import parse_int


@main.command()
@click.pass_context
def info(ctx: click.Context) -> None:
    """Print versions, torch threads, whether freed memory is kept for reuse and the available devices."""
    import torch

    from xai_loc.runtime import keep_freed_memory, software_versions

    setup(ctx)
    for name, ver in software_versions().items():
        click.echo(f"{name:16s} {ver}")
    click.echo(f"{'threads':16s} {torch.get_num_threads()}")
    kept = "kept for reuse" if keep_freed_memory() else "returned to the system (XAI_LOC_KEEP_MEMORY=0 or not glibc)"
    click.echo(f"{'freed memory':16s} {kept}")
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"
    click.echo(f"{'device':16s} cpu; cuda: {cuda}")


@main.command()
@click.option("--t60", type=T60, required=True, help="Reverberation time in seconds (Sabine).")
@click.option("--snr", type=SNR, required=True, help="SNR in dB relative to microphone 0.")
@click.option("--split", type=click.Choice(SPLIT_CHOICES), default="test", show_default=True,
              help="Which sources of the scene to simulate ('all': one store of every source, read by evaluate and "
                   "explain --split all; train and the experiments read their own splits' stores).")
@sources_option()
@click.option("--scene", default="paper", show_default=True, help="Built-in scene name or a scene TOML file.")
@data_option("--out is an alias", "--out")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="torch", show_default=True,
              help="RIR backend.")
@click.option("--mode", type=click.Choice(RIR_MODE_CHOICES), default="ism", show_default=True,
              help="torch backend: image sources up to T60 (ism) or up to T60/4 plus a diffuse tail (hybrid).")
@click.option("--t-diff", type=POSITIVE, default=None, metavar="SECONDS",
              help="Where the image sources end and a diffuse tail starts: --mode hybrid [default: T60/4], or "
                   "gpuRIR's Tdiff with --backend gpurir [default: none].")
@click.option("--speech", default=None, type=InputDir(),
              help="Folder of wav/flac/ogg speech to use instead of the shipped corpus.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of speech choice and noise.")
@device_option("torch backend")
@CONVENTION_OPTION
@cluster_options
@click.pass_context
def simulate(ctx, t60, snr, split, n_sources, scene, data, backend, mode, t_diff, speech, seed, device, convention,
             scheduler, workers) -> None:
    """Simulate microphone windows of a scene into a zarr store (resumable; sources spread over a dask cluster
    with --scheduler or --workers; with --device cuda, 16 sources at a time are rendered on the GPU)."""
    from xai_loc.acoustics.backends import option_defaults
    from xai_loc.acoustics.speech import SpeechCorpus
    from xai_loc.cluster import cluster
    from xai_loc.data.scene import load_scene
    from xai_loc.data.store import check_simulation, simulate_dataset
    from xai_loc.runtime import resolve_device

    setup(ctx)
    resolve_device(device)
    scn = load_scene(scene, convention=convention)
    corpus = SpeechCorpus.from_folder(speech, fs=scn.room.fs) if speech else None
    if backend != "torch" and ctx.get_parameter_source("mode") is not ParameterSource.DEFAULT:
        raise InputError(f"--mode {mode} is not allowed with --backend {backend}; it chooses the torch backend's "
                         "response model (use --backend torch, or leave --mode out)")
    if t_diff is not None and ("t_diff" not in option_defaults(backend) or backend == "torch" and mode != "hybrid"):
        with_what = f"--mode {mode}" if backend == "torch" else f"--backend {backend}"
        raise InputError(f"--t-diff {t_diff:g} is not allowed with {with_what}, which has no diffuse tail; use "
                         "--backend torch --mode hybrid, or --backend gpurir")
    options = {"mode": mode} if backend == "torch" else {}
    if t_diff is not None:  # the store leaves out a t_diff at its default (T60/4 in hybrid mode) and reuses its data
        options["t_diff"] = t_diff
    check_simulation(scn, split, t60, snr, n_sources=n_sources, corpus=corpus, seed=seed, backend=backend,
                     device=device, rir_options=options)  # before a cluster starts
    with cluster(scheduler, workers) as client:
        path = simulate_dataset(scn, split, t60, snr, root=data, n_sources=n_sources, corpus=corpus, seed=seed,
                                backend=backend, device=device, rir_options=options, progress=True, client=client)
    click.echo(str(path))


@main.group()
def models() -> None:
    """Registered architectures and checkpoints (list, import)."""


@models.command("list")
@pretrained_option("--dir", "directory", help="Folder of checkpoints")
def models_list(directory: str | None) -> None:
    """Show the localizer families with their architectures, and the checkpoints with their conditions
    and test errors."""
    from xai_loc.models.families import family_rows
    from xai_loc.models.zoo import list_checkpoints, pretrained_dir

    folder = pretrained_dir() if directory is None else directory
    rows = list_checkpoints(folder)  # first, so that a bad card stops the command before anything is printed
    click.echo("architectures by family (default configurations):")
    for row in family_rows():
        click.echo("  " + row)
    click.echo(f"checkpoints in {folder}:" if rows else f"checkpoints in {folder}: none")
    for row in rows:
        click.echo("  " + row)


@models.command("import")
@click.option("--arch", type=MODEL, required=True, help="Architecture of the file.")
@click.option("--t60", type=T60, required=True, help="T60 (s) the model was trained for.")
@click.option("--snr", type=SNR, required=True, help="SNR (dB) the model was trained for.")
@click.option("--out", type=OutFile(".safetensors"), default=None,
              help="Output checkpoint, never FILE itself [default: FILE with suffix .safetensors].")
@click.argument("file", type=InputFile())
def models_import(arch: str, t60: float, snr: float, out: str | None, file: str) -> None:
    """Convert one of the paper's released state dicts (FILE.pth) into an xai-loc checkpoint.

    Keys and shapes are checked strictly; files that need arbitrary unpickling are refused.
    Prints the tensor count, the condition and a sanity forward pass on one noise window.
    """
    import torch

    from xai_loc.models import import_paper_checkpoint, load_model

    path = import_paper_checkpoint(file, arch, t60, snr, out)
    model = load_model(path)
    window = 0.01 * torch.randn(1, *model.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pred = model(window)[0].tolist()
    click.echo(f"{path}: {arch}, {len(model.state_dict())} tensors, trained at T60 {t60:g} s, SNR {snr:g} dB; "
               f"one noise window -> ({', '.join(f'{v:.3f}' for v in pred)}) m")


class Recipe(click.ParamType):
    """A number of :class:`~xai_loc.models.training.TrainConfig` (an ``integer`` or any number), allowed by the
    field's entry of :data:`~xai_loc.models.training.CHECKS` (imported on use), so that ``train`` allows what the
    library allows and says so in the same words."""

    def __init__(self, field: str, integer: bool = False):
        self.field, self.integer = field, integer
        self.name = "integer" if integer else "number"

    def convert(self, value, param, ctx):
        from xai_loc.models.training import CHECKS

        test, allowed = CHECKS[self.field]
        what = option_name(param, ctx, value)
        try:
            number = (parse_int if self.integer else parse_number)(str(value))
        except ValueError:
            raise InputError(f"{what} {value!r} is not {'an' if self.integer else 'a'} {self.name}; "
                             f"use {allowed}") from None
        if not test(number):
            raise InputError(f"{what} {value} is not allowed; use {allowed}")
        return number


@main.command()
@click.option("--model", "arch", type=MODEL, required=True, help="Architecture.")
@click.option("--t60", type=T60, required=True, help="Reverberation time (s) of the training condition.")
@click.option("--snr", type=SNR, required=True, help="SNR (dB) of the training condition.")
@click.option("--scene", default="paper", show_default=True, help="Built-in scene name or a scene TOML file.")
@data_option("train/val are simulated there if absent")
@sources_option("each split", minimum=2)  # training needs two sources: refused before anything is simulated
@click.option("--out", type=OutFile(".safetensors"), default=None,
              help="Checkpoint to write [default: <data>/runs/<scene>/<model>_t60-T_snr-S.safetensors].")
@click.option("--batch-size", type=Recipe("batch_size", integer=True), default=100, show_default=True,
              help="Windows per optimizer step, at least 2.")
@click.option("--lr", type=POSITIVE, default=None, help="Adam learning rate [default: 1e-3 LocCNN, 1e-2 SampleCNN].")
@click.option("--weight-decay", type=Recipe("weight_decay"), default=0.0, show_default=True,
              help="Adam's L2 penalty, >= 0.")
@click.option("--lr-factor", type=Recipe("lr_factor"), default=0.2, show_default=True,
              help="ReduceLROnPlateau factor.")
@click.option("--lr-patience", type=Recipe("lr_patience", integer=True), default=100, show_default=True,
              help="ReduceLROnPlateau patience (epochs).")
@click.option("--min-lr", type=Recipe("min_lr"), default=0.0, show_default=True,
              help="Lower bound of the learning rate that ReduceLROnPlateau lowers, >= 0.")
@click.option("--early-stop-patience", type=Recipe("early_stop_patience", integer=True), default=200,
              show_default=True, help="Stop after this many epochs without a lower validation loss.")
@click.option("--max-epochs", type=Recipe("max_epochs", integer=True), default=5000, show_default=True,
              help="Stop after this many epochs in all (early stopping usually ends training first).")
@click.option("--max-minutes", type=POSITIVE, default=None, help="Wall-clock budget (minutes); rerun to continue.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seeds weights, window draws and dropout.")
@device_option()
@click.option("--eval-batch-size", type=Recipe("eval_batch_size", integer=True), default=100, show_default=True,
              help="Windows per forward pass during validation.")
@click.option("--preload/--no-preload", default=False, show_default=True, help="Hold train/val in RAM.")
@click.option("--deterministic/--no-deterministic", default=True, show_default=True,
              help="Use torch's deterministic kernels where it has them (matters on CUDA; CPU training is "
                   "deterministic regardless).")
@click.option("--draws-per-epoch", type=Recipe("draws_per_epoch", integer=True), default=1, show_default=True,
              help="Paper epochs (one random window per source each) between validations; patiences stay in paper "
                   "epochs (1: the paper's schedule).")
@click.option("--deadline", type=POSITIVE, default=None,
              help="Wall-clock end of training as a UNIX time (seconds); for scripts that share one deadline.")
@click.option("--checkpoint-every-s", type=POSITIVE, default=None,
              help="Also write the best checkpoint during the run, at most this often (seconds).")
@click.option("--save-state/--no-save-state", default=True, show_default=True,
              help="Keep the resumable training state beside the checkpoint.")
@click.option("--benchmark/--no-benchmark", default=False, show_default=True,
              help="Let cuDNN pick its fastest kernels (with --no-deterministic).")
@click.option("--autocast", type=click.Choice(["bfloat16"]), default=None,
              help="Mixed-precision training steps (float32 weights, loss and validation); 2x measured on an "
                   "AVX512-BF16 CPU, slower without bfloat16 units [default: float32, the paper's].")
@click.option("--init-from", type=InputFile(), default=None,
              help="Start from this checkpoint's weights (same architecture; fine-tuning) instead of a seeded "
              "initialization.")
@CONVENTION_OPTION
@click.pass_context
def train(ctx, arch, t60, snr, scene, data, n_sources, out, init_from, convention, **knobs) -> None:
    """Train a localizer on the simulated train/val splits of one condition (resumable).

    The paper's recipe is the default: MSE on metres, one random window per source per
    epoch, Adam, ReduceLROnPlateau(0.2, 100), early stopping after 200 epochs, best-val
    checkpoint. Rerunning the same command continues an interrupted run. --init-from
    fine-tunes a trained model (e.g. a shipped one of another condition); the card records it.
    """
    from pathlib import Path

    from xai_loc.data.scene import load_scene
    from xai_loc.data.store import condition_name, simulate_dataset
    from xai_loc.models import TrainConfig, check_training
    from xai_loc.models import train as train_model

    setup(ctx)
    if knobs.get("benchmark") and knobs.get("deterministic"):  # determinism would turn it off without a word
        raise InputError("--benchmark is not allowed with --deterministic (the default); add --no-deterministic")
    scn = load_scene(scene, convention=convention)
    root = Path(data)
    config = TrainConfig(**knobs)
    out = Path(out) if out else root / "runs" / scn.name / f"{arch}_{condition_name(t60, snr)}.safetensors"
    # before hours of simulation; a saved state of another run too (its data are compared once simulated)
    check_training(arch, out, (len(scn.mics), scn.window), init_from, config)
    if init_from is not None:
        check_recordings([init_from], scn.room.fs, scn.mics, f"scene {scn.name!r}")
    sim_device = config.device if config.device.startswith("cuda") else "cpu"
    stores = {split: simulate_dataset(scn, split, t60, snr, root=root, n_sources=n_sources, device=sim_device,
                                      progress=True) for split in ("train", "val")}
    path = train_model(arch, stores["train"], stores["val"], out, config, progress=True,
                       init_from=init_from)
    click.echo(str(path))


@main.command()
@click.argument("checkpoint", type=InputFile())
@click.option("--split", type=click.Choice(SPLIT_CHOICES), default="test", show_default=True,
              help="Sources of the scene to score (all: every source).")
@click.option("--t60", type=T60, default=None, help="Condition to evaluate on [default: the checkpoint's].")
@click.option("--snr", type=SNR, default=None, help="Condition to evaluate on [default: the checkpoint's].")
@click.option("--scene", default="paper", show_default=True, help="Built-in scene name or a scene TOML file.")
@data_option("the split is simulated there if absent", read_only=True)
@sources_option()
@click.option("--json", "json_out", type=OutFile(), default=None,
              help="Also write the report with the per-source table as JSON.")
@click.option("--batch-size", type=Int(1, MAX_BATCH), default=100, show_default=True, help="Windows per forward pass.")
@device_option()
@CONVENTION_OPTION
@click.pass_context
def evaluate(ctx, checkpoint, split, t60, snr, scene, data, n_sources, json_out, batch_size, device,
             convention) -> None:
    """Localization error of CHECKPOINT over every window of a split, beside the constant baseline.

    Reports the paper's metric (mean absolute error per coordinate, metres, and its mean),
    the mean Euclidean error and a per-source table.
    """
    import json

    from xai_loc.data.scene import load_scene
    from xai_loc.data.store import simulate_dataset
    from xai_loc.io import write_text_atomic
    from xai_loc.models import evaluate_checkpoint, load_model
    from xai_loc.models.evaluation import check_window_shape

    setup(ctx)
    t60, snr = resolve_condition(t60, snr, checkpoint)
    model = load_model(checkpoint)  # a damaged or foreign checkpoint is refused before any data is simulated
    scn = load_scene(scene, convention=convention)
    check_window_shape(model, (len(scn.mics), scn.window), f"scene {scn.name!r}")  # before any simulation
    check_recordings([checkpoint], scn.room.fs, scn.mics, f"scene {scn.name!r}")
    warn_convention([checkpoint], scn.convention)
    store = simulate_dataset(scn, split, t60, snr, root=data, n_sources=n_sources, progress=True)
    result = evaluate_checkpoint(checkpoint, store, batch_size=batch_size, device=device, progress=True,
                                 model=model)
    click.echo(result.to_text())
    if json_out:
        write_text_atomic(json_out, json.dumps(result.to_dict(), indent=2))


@main.command()
@with_options(*condition_options(every=False), *EXPLANATION_OPTIONS)
@click.option("--split", type=click.Choice(SPLIT_CHOICES), default="test", show_default=True,
              help="Sources of the scene to explain (all: every source).")
@sources_option()
@click.option("--scene", default="paper", show_default=True, help="Built-in scene name or a scene TOML file.")
@data_option("the split is simulated there if absent", read_only=True)
@click.option("--out", type=StoreOut(), default=None,
              help="Relevance store [default: next to the data, <split>.relevance/<arch>-<digest>-<method>-...zarr].")
@click.option("--batch-size", type=Int(1, MAX_BATCH), default=32, show_default=True,
              help="Most windows per forward pass (methods that perturb or interpolate split further).")
@device_option()
@CONVENTION_OPTION
@cluster_options
@click.pass_context
def explain(ctx, t60, snr, arch, checkpoint, method, composite, target, options, split, n_sources, scene, data, out,
            batch_size, device, convention, scheduler, workers) -> None:
    """Explain every window of a split into a chunked relevance store (resumable).

    Relevance has the input's shape (window, mic, time) with source and microphone
    coordinates and provenance attrs; read it back with xarray.open_zarr. A store only ever
    holds one model, method, composite, target and option set. --scheduler or --workers
    spread the blocks over a dask cluster; this process writes them (the bytes of a --threads 1 run).
    """
    from xai_loc.cluster import cluster
    from xai_loc.data.scene import load_scene
    from xai_loc.data.store import simulate_dataset
    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.explain import explain_store

    setup(ctx)
    t60, snr = resolve_condition(t60, snr, checkpoint)
    models = ModelSet({arch: checkpoint_for(arch, t60, snr, checkpoint)})
    opts = command_options(ctx, method, composite, (target,))
    check_explanation(models, method, composite, target, opts)
    scn = load_scene(scene, convention=convention)
    check_recordings(models, scn.room.fs, scn.mics, f"scene {scn.name!r}")
    if out is not None:
        planned = {"scene": scn, "split": split, "t60": t60, "snr": snr, "root": data, "n_sources": n_sources,
                   "device": device}
        _check_relevance_out(out, models, arch, planned, method=method, composite=composite, target=target, **opts)
    warn_convention(models, scn.convention)
    with cluster(scheduler, workers) as client:
        store = simulate_dataset(scn, split, t60, snr, root=data, n_sources=n_sources, device=device, progress=True,
                                 client=client)
        path = explain_store(models[arch], store, out, method=method, target=target, composite=composite,
                             batch_size=batch_size, device=device, progress=True, provenance=models.provenance(arch),
                             client=client, **opts)
    click.echo(str(path))


def _check_relevance_out(out, models, name: str, planned: dict, **explanation) -> None:
    """Refuse ``--out``, a finished store of other relevance (another model, explanation or data: the data that
    :func:`~xai_loc.explain.store.planned_data_digest` of ``planned`` names) or no relevance store, before any data
    is simulated (:func:`~xai_loc.explain.store.check_relevance_out`)."""
    from pathlib import Path

    import numpy as np

    from xai_loc.explain.store import check_relevance_out, planned_data_digest

    attrs = models.explainer(name, mean_input=np.zeros(1), train_mean=np.zeros(3), **explanation).attrs
    # the data's identity only where a store stands there to compare with (it reads the utterances)
    data = planned_data_digest(**planned) if Path(out).is_dir() and any(Path(out).iterdir()) else None
    try:
        check_relevance_out(out, attrs, data)
    except InputError as err:
        raise InputError(f"--out {err}") from None


@main.command()
@click.argument("model")
@click.option("--composite", type=COMPOSITE, default=None,
              help="LRP composite [default: the one registered for MODEL's family, as 'xai-loc models list' shows "
                   "it: paper (loccnn, samplecnn), cochcnn, tfcnn, cuenet; a family without one (bast) needs it].")
@click.option("--option", "options", multiple=True, help="Composite option KEY=VALUE (repeatable), e.g. "
              "first_rule=flat, epsilon=1e-6, maxpool=smooth.")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Seed of the random probe input and of an architecture's untrained weights.")
@click.option("--target", type=ANY_TARGET, default=None,
              help="What is explained [default: the model's own output: prediction (positions), class_logit "
                   "(classes), direction ([cos, sin]), azimuth (azimuths)]; targets that need the truth do not apply.")
@click.pass_context
def audit(ctx, model, composite, options, seed, target) -> None:
    """List each module of MODEL with its LRP rule, functional operations that hooks cannot see,
    and per-layer relevance conservation for one input.

    MODEL is a checkpoint file or an architecture name (untrained weights drawn from --seed). Exits with 1
    when the composite leaves a layer uncovered, forward() uses hidden operations or a
    parameter-free layer loses more than 0.1 % of its relevance (padded rows that a folded
    BatchNorm fills absorb it like a bias: no problem; an epsilon stabilizer can lose that
    much of an untrained model's tiny relevance: try --option epsilon=1e-9).
    """
    from pathlib import Path

    from xai_loc.explain import audit as run_audit
    from xai_loc.models import build_model, read_card
    from xai_loc.models.families import family_of
    from xai_loc.models.trainer import seeded

    setup(ctx)
    if model == "":  # it would name the current folder
        raise InputError("MODEL '' is not allowed; give a checkpoint file or an architecture name")
    path = Path(model)
    checkpoint = path.exists() or path.suffix == ".safetensors" or path.name != model
    arch = read_card(path)["architecture"] if checkpoint else model  # a missing file: one line saying so
    family = family_of(arch)
    if composite is None and family.composite is None:
        raise InputError(f"MODEL {model} is a {arch!r} model, whose family {family.name!r} registers no LRP composite "
                         "(xai-loc models list); give --composite to audit one on it")
    composite = composite or family.composite
    if checkpoint:
        subject = model
    else:
        with seeded(seed):  # the same command gives the same numbers
            subject = build_model(model)
    report = run_audit(subject, composite, target=target, seed=seed, **command_options(ctx, composite=composite))
    click.echo(report.render())
    if report.problems:
        ctx.exit(1)


@main.command()
@click.argument("relevance", type=InputDir())
@click.option("--out", type=OutDir(), required=True, help="Folder for the wav files.")
@click.option("--sources", default=None, help="Comma-separated source ids [default: all].")
@click.option("--mics", default=None, help="Comma-separated microphone indices [default: all].")
def listen(relevance, out, sources, mics) -> None:
    """Write relevance signals as wav files next to the microphone signals, normalized per file."""
    from xai_loc.explain import open_explained_signals, open_relevance, write_wavs
    from xai_loc.runtime import parse_int

    def ids(text, what):
        try:
            return None if text is None else [parse_int(v) for v in text.split(",")]
        except ValueError:
            raise InputError(f"{what} {text!r} is not allowed; give a comma-separated list of integers") from None

    chosen = {"sources": ids(sources, "--sources"), "mics": ids(mics, "--mics")}
    rel = open_relevance(relevance)
    paths = write_wavs(rel, open_explained_signals(relevance), out, **chosen)
    click.echo(f"{len(paths)} files in {out}")


def _store_models(arch, t60, snr, checkpoint, store) -> dict[str, str]:
    """The models scored on a given test store: ``--checkpoint`` of any family, else the shipped multichannel
    ones of the condition (``--t60``/``--snr``, else the one the dataset store records; each trained in another
    condition than the store's is warned about, as evaluate and explain do)."""
    from xai_loc.models import read_card

    if checkpoint is not None:
        return named_checkpoint(checkpoint, read_card(checkpoint))
    attrs = _store_group(store).attrs
    held = attrs.get("t60"), attrs.get("snr")
    if t60 is None and snr is None:
        t60, snr = held
        if t60 is None or snr is None:
            raise InputError(f"store {store} records no T60 and SNR (not a dataset store); give the --checkpoint "
                             "of the model to score on it")
    checkpoints = models_for(arch, *resolve_condition(t60, snr, None), None)
    if None not in held:
        for path in checkpoints.values():
            warn_condition(path, read_card(path).get("condition") or {}, float(held[0]), float(held[1]))
    return checkpoints


def _store_group(store):
    """The root zarr group of a given test store, verified (one line for a damaged or foreign one)."""
    from xai_loc.data.integrity import open_zarr_group

    return open_zarr_group(store, what="test store", hint="rebuild it with the command that wrote it "
                           "('xai-loc simulate', ...)")


#: The experiments that score any family's test store (``--store``) and a binaural ``--checkpoint`` on its own
#: held-out split; the others take localizers of source positions only.
STORE_EXPERIMENTS = ("faithfulness", "sanity")


def _own_test_split(checkpoint) -> bool:
    """Whether ``--checkpoint`` (without ``--store``) is scored on its own held-out test split: a localizer of
    another output than positions (a binaural family, :func:`~xai_loc.experiments.scored.family_test_store`)."""
    if checkpoint is None:
        return False
    from xai_loc.models import MODELS, read_card

    arch = read_card(checkpoint).get("architecture")
    return arch in MODELS and MODELS[arch].output_kind != "position"


def _store_name(store) -> str:
    """The results folder's name for a given test store: its folder's name and its own."""
    from pathlib import Path

    return f"{Path(store).parent.name}-{Path(store).stem}"


def _run_on_test_split(experiment: str, *, t60, snr, arch, checkpoint, target, n_sources, seed, data,
                       out, batch_size, device, convention, randomized=None, method=None, composite=None,
                       options: dict | None = None, explanations=None, scheduler=None, workers=None, store=None,
                       corpus=None, **run_options) -> None:
    """The shared part of perturb, faithfulness, sanity, components and tdoa: condition, models (loaded once),
    explanation options checked, output and cluster checked, test split simulated (or rendered), then the
    registered experiment run, written, drawn and its table printed.

    ``options``: the parsed ``--option`` values. ``explanations``: the (method, composite) pairs to check when
    the experiment takes several (and no ``method``/``composite`` of its own); an empty list: the family's
    defaults (:func:`~xai_loc.experiments.faithfulness.family_methods`). ``scheduler``/``workers``: the dask
    cluster that simulates and runs the experiment (:func:`xai_loc.cluster.cluster`), reached before
    anything is written. ``store``: a finished test store of any family, scored instead of the
    simulated paper scene (``--checkpoint`` names the model); without one, a binaural ``--checkpoint`` is
    scored on its own held-out test split, rendered whole under ``--data`` once everything else is checked
    (the experiment then takes ``--sources`` of it). ``corpus``: the speech the test split is simulated from
    (default: the shipped corpus), passed on to the experiment (components renders it again)."""
    from pathlib import Path

    from xai_loc.cluster import cluster
    from xai_loc.data.scene import paper_scene
    from xai_loc.data.store import condition_name, simulate_dataset
    from xai_loc.experiments.faithfulness import family_methods, method_label
    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.study import check_outputs, run_experiment

    own = store is None and experiment in STORE_EXPERIMENTS and _own_test_split(checkpoint)
    if store is None and not own:
        t60, snr = resolve_condition(t60, snr, checkpoint)
        checkpoints = models_for(arch, t60, snr, checkpoint)
        default_out = Path(results_root_default(), *([next(iter(checkpoints))] if checkpoint else []),
                           condition_name(t60, snr))
    else:  # a given store is cut to --sources by the experiment (a simulated one has that many)
        where = f"the store {store}" if store else f"the held-out test split of {checkpoint}"
        if checkpoint is not None and any(v is not None for v in (t60, snr, convention)):
            click.echo("warning: --t60, --snr and --convention choose the paper scene's test split; they do not "
                       f"apply to {where}", err=True)
        elif convention is not None:  # without --checkpoint, --t60 and --snr choose the shipped models
            click.echo(f"warning: --convention chooses how the paper scene's test split is simulated; it does not "
                       f"apply to {where}", err=True)
        checkpoints = _store_models(arch, t60, snr, checkpoint, store)
        default_out = Path(results_root_default(), next(iter(checkpoints)), *([_store_name(store)] if store else []))
        run_options["n_sources"] = n_sources
    folder = Path(check_out_dir(out or default_out, "--out"))  # an own split's name is added once it is rendered
    if not own or out is not None:  # the folder written into (else named after the split: run_experiment checks)
        check_outputs(experiment, folder)
    models = ModelSet(checkpoints)
    opts = options or {}
    if explanations == []:
        explanations = family_methods(models, run_options.pop("methods"))
    for m, c in explanations or [(method, composite)]:
        check_explanation(models, m, c, target, opts)
    if explanations is None:
        run_options.update(method=method, composite=composite)
    else:
        run_options["methods"] = [method_label(m, c) for m, c in explanations]
    if randomized is not None:  # sanity has no --randomized: randomization is its check
        run_options["randomized_baseline"] = randomized
    if store is None and not own:
        scene = paper_scene(convention or "gpurir")
        check_recordings(models, scene.room.fs, scene.mics, "the paper scene")
        warn_convention(models, scene.convention)
    elif store is not None and (Path(store) / "signals").is_dir():  # a dataset store: its rate and array
        group = _store_group(store)
        mics = group["mic_position"][:] if "mic_position" in group else None
        check_recordings(models, group.attrs.get("fs"), mics, f"store {store}")
    with cluster(scheduler, workers) as client:
        if own:
            from xai_loc.experiments.scored import family_test_store

            store = family_test_store(checkpoint, data, progress=True)
            if out is None:
                folder = Path(check_out_dir(folder / _store_name(store), "--out"))
        elif store is None:
            store = simulate_dataset(scene, "test", t60, snr, root=data, n_sources=n_sources, device=device,
                                     corpus=corpus, progress=True, client=client)
        if corpus is not None:
            run_options["corpus"] = corpus
        if client is not None:  # only the experiments with --scheduler/--workers take a client
            run_options["client"] = client
        run = run_experiment(experiment, models, store, folder, target=target, seed=seed, batch_size=batch_size,
                             device=device, progress=True, **run_options, **opts)
    click.echo(run.tables["markdown"])
    click.echo(f"results in {folder}")


@main.command()
@experiment_options
@cluster_options
@click.option("--percentages", default="0,10,20,30,40,50,60,70", show_default=True,
              help="Percent of each window deleted, increasing, starting at 0 (the unperturbed window).")
@click.option("--modes", default="relevance,energy,random", show_default=True,
              help="Deletion orderings: relevance (signed, descending; for an error target, what lowers the "
                   "error first), energy (|x|), random (seeded).")
@click.option("--fill", default="zero", show_default=True, metavar="NAME",
              help="Value of deleted samples: zero (the paper) or noise at the window's level.")
@click.pass_context
def perturb(ctx, percentages, modes, fill, **common) -> None:
    """Deletion curves: zero the top-P % of each window's samples, ranked by relevance,
    amplitude or at random, and report the localization error (the paper's experiment).

    Writes perturbation.nc (dims model, mode, percentage; the same run gives the same bytes),
    a paper-style figure (PNG, PDF), a markdown table with AOPC and perturbation.timing.json
    (seconds per model); the constant-predictor error is shown beside them.
    The first run on a machine compiles the deletion kernels (about 20 s, then cached).
    --scheduler or --workers spread the window batches over a dask cluster (the bytes of a --threads 1 run).
    """
    from xai_loc.experiments.perturbation import check_fill, check_modes, check_percentages

    setup(ctx)
    pcts = check_percentages(csv_list(percentages, float, "--percentages"), from_zero=True, what="--percentages")
    modes = check_modes(csv_list(modes, what="--modes"), "--modes")
    common["options"] = command_options(ctx, common["method"], common["composite"], (common["target"],))
    _run_on_test_split("perturbation", percentages=pcts, modes=modes, fill=check_fill(fill, "--fill"), **common)


#: What --methods of faithfulness and sanity default to, in words (the list depends on the model's family).
FAMILY_METHODS_HELP = ("Attribution methods, LRP as lrp:COMPOSITE [default: lrp:COMPOSITE of the model's family "
                       "(paper for the multichannel models; attn_lrp for BAST), lrp:epsilon_plus_flat where it "
                       "gives every module a rule (not on the binaural families), integrated_gradients, "
                       "input_x_gradient, saliency")


@main.command()
@suite_options
@cluster_options
@click.option("--methods", default=None, help=FAMILY_METHODS_HELP + ", occlusion].")
@click.option("--fills", default="zero,noise,road", show_default=True,
              help="Values of deleted samples: zero, noise at the window's level, road (1-D noisy linear "
                   "imputation from the temporal neighbours, Rong et al. 2022).")
@click.option("--percentages", default="0,10,20,30,40,50,60,70", show_default=True,
              help="Percent of each window deleted (inserted, for insertion), comma-separated, increasing, from 0 "
                   "to 100, starting at 0.")
@click.pass_context
def faithfulness(ctx, methods, fills, percentages, **common) -> None:
    """Faithfulness of attribution methods: MoRF and LeRF deletion and insertion curves per method and fill.

    Reports AOPC, the symmetric relevance gain (area between the LeRF and MoRF curves) and
    the insertion AUC in the model's own units (metres; degrees for azimuth models; the
    probability of the true direction class lost for classifiers), beside the relevance of
    randomized models and a random ordering, with bootstrap 95 % intervals over sources; the
    completeness residual per method; and how much the method ranking changes between fills
    (Kendall tau). Writes faithfulness.nc, faithfulness.md and .tex, a figure and
    faithfulness.timing.json. A binaural --checkpoint alone scores its own held-out test
    split (rendered whole under --data from its card's spec, once every option is checked;
    --sources then takes that many of its examples); --store scores any finished store of
    the model's family. --scheduler or --workers spread the window batches over a dask
    cluster (the bytes of a --threads 1 run).
    """
    from xai_loc.experiments.faithfulness import DEFAULT_METHODS, FAITHFULNESS_FILLS
    from xai_loc.experiments.perturbation import check_names, check_percentages

    setup(ctx)
    specs = _method_specs(methods, DEFAULT_METHODS, not _own_test_split(common["checkpoint"]))
    fill_names = check_names(csv_list(fills, what="--fills"), FAITHFULNESS_FILLS, "--fills", "fill")
    pcts = check_percentages(csv_list(percentages, float, "--percentages"), from_zero=True, what="--percentages")
    _run_on_test_split("faithfulness", fills=fill_names, percentages=pcts, **specs, **common)


def _method_specs(methods: str | None, defaults, positions: bool = True) -> dict:
    """``--methods`` parsed: ``explanations`` (method, composite) pairs, or an empty list with the
    ``methods`` to adapt to the model's family (:func:`~xai_loc.experiments.faithfulness.family_methods`).
    ``positions``: the models localize source positions, which take the methods ``explain --method`` takes
    (:func:`~xai_loc.cli._common.position_methods`)."""
    from xai_loc.experiments.faithfulness import parse_methods
    from xai_loc.explain import METHODS

    if methods is None:
        return {"explanations": [], "methods": defaults}
    specs = csv_list(methods, what="--methods")
    allowed = position_methods() if positions else list(METHODS)
    with naming("--methods"):
        for method in (spec.partition(":")[0] for spec in specs):
            if method not in allowed:
                why = "unknown" if method not in METHODS else "for transformers, not localizers of source positions"
                raise InputError(f"method {method!r} is {why}; allowed: {', '.join(allowed)} (LRP as lrp:COMPOSITE)")
        return {"explanations": parse_methods(specs)}


@main.command()
@sanity_options
@cluster_options
@click.option("--methods", default=None, help=FAMILY_METHODS_HELP + "].")
@click.pass_context
def sanity(ctx, methods, **common) -> None:
    """Randomization sanity checks of attribution methods (Adebayo et al., 2018; Hedstroem et al., 2024).

    Re-initializes each model's layers from the top down, one more per stage, and reports
    the similarity of each stage's relevance to the original (Spearman of |R|, Pearson of R)
    and its complexity (entropy of |R|/sum|R|); eMPRT (the relative rise in explanation
    complexity from the original to the fully randomized model, as Quantus computes it);
    and the similarity of the maps for other targets (x, y and z for positions; the truth
    and another true direction for direction models); with bootstrap 95 % intervals over
    sources. Writes sanity.nc, sanity.md and .tex, a figure and sanity.timing.json.
    A binaural --checkpoint alone is checked on its own held-out test split (rendered whole,
    once every option is checked; --sources then takes that many of its examples); --store checks
    any finished store of the model's family.
    --scheduler or --workers spread the input batches over a dask cluster (the bytes of a --threads 1 run).
    """
    from xai_loc.experiments.sanity import DEFAULT_METHODS

    setup(ctx)
    _run_on_test_split("sanity", **_method_specs(methods, DEFAULT_METHODS, not _own_test_split(common["checkpoint"])),
                       **common)


@main.command()
@components_options
@cluster_options
@click.option("--methods", default="lrp:paper,lrp:epsilon_plus_flat,integrated_gradients,input_x_gradient,saliency",
              show_default=True, help="Attribution methods, LRP as lrp:COMPOSITE.")
@click.option("--early-end", type=Number(0.0, 1.0), default=0.05, show_default=True,
              help="End of the early reflections after each microphone's direct arrival, in seconds.")
@click.option("--speech", default=None, type=InputDir(),
              help="Folder of wav/flac/ogg speech the test split is (or was) simulated from, as given to 'xai-loc "
                   "simulate --speech' [default: the shipped corpus].")
@click.pass_context
def components(ctx, methods, early_end, speech, **common) -> None:
    """What the relevance falls on: direct sound, early reflections, late reverberation or sensor noise.

    Renders every test window again as the sum of its four components (from the store's own
    responses and noise draw, checked to add up to the stored window) and splits each sample's
    relevance over them: linearly (R x_c / x, the exact contribution for x * gradient methods)
    and by power (R x_c^2 / sum x_c'^2). Reports each method's share of |relevance| per
    component beside the model-free reference of the same split (R = x, |R| = const) and the
    randomized model's shares (the components' energy shares are stored too), with
    bootstrap 95 % intervals over sources. Writes components.nc, .md, .tex, a figure and
    components.timing.json. --scheduler or --workers spread the sources over a dask cluster
    (the bytes of a --threads 1 run). A test split simulated from your own speech (--speech) is rendered
    again from that folder.
    """
    from xai_loc.acoustics.speech import SpeechCorpus
    from xai_loc.data.scene import paper_scene

    setup(ctx)
    corpus = SpeechCorpus.from_folder(speech, fs=paper_scene().room.fs) if speech else None
    _run_on_test_split("components", early_end=early_end, corpus=corpus, **_method_specs(methods, None), **common)


@main.command()
@experiment_options
@click.option("--pairs", default="spread", show_default=True,
              help="Microphone pairs: spread (one per spacing, 0.15 to 2.25 m), adjacent, all, or I-J,I-J.")
@click.option("--first-rule", type=click.Choice(FIRST_RULE_CHOICES), default=None,
              help="LRP rule of the first layer, as --option first_rule=RULE [default: the composite's, WSquare "
                   "for 'paper'].")
@click.option("--srp/--no-srp", default=True, show_default=True,
              help="Also compare SRP-PHAT maps of signals and relevance over the source plane.")
@click.option("--srp-windows", type=Int(1), default=None, help="SRP on N windows only, evenly spaced (it is costly).")
@click.pass_context
def tdoa(ctx, pairs, first_rule, srp, srp_windows, **common) -> None:
    """GCC-PHAT delays from microphone signals vs relevance signals, per microphone pair.

    Reports % anomalies (error above half the correlation time) and MAE in samples of the
    rest, per estimator and pair distance, always beside a constant zero-lag estimator and
    the relevance of randomized models; writes tdoa.nc, tables (markdown, CSV, LaTeX) and
    figures, plus the SRP-PHAT map errors of signals vs relevance (without SRP, the srp.* files
    of an earlier run in the folder are removed).
    """
    from xai_loc.data.scene import paper_scene
    from xai_loc.experiments.tdoa import parse_pairs

    setup(ctx)
    if srp_windows is not None and not srp:
        raise InputError(f"--srp-windows {srp_windows} is not allowed with --no-srp; drop one of them")
    parse_pairs(pairs, paper_scene(common["convention"] or "gpurir").mics.shape[0])
    options = command_options(ctx, common["method"], common["composite"], (common["target"],), allow=("first_rule",))
    if first_rule is not None:
        if options.setdefault("first_rule", first_rule) != first_rule:
            raise InputError(f"--first-rule {first_rule} and --option first_rule={options['first_rule']} differ; "
                             "give one of them")
    common["options"] = options
    _run_on_test_split("tdoa", pairs=pairs, srp=srp, srp_max_windows=srp_windows, **common)


@main.command()
@click.argument("results", type=InputDir())
def figures(results) -> None:
    """Redraw every figure below RESULTS from the stored results (perturbation.nc, faithfulness.nc, sanity.nc,
    components.nc, tdoa.nc and the binaural probes' duplex.nc, responses.nc, band_profile.nc, cue_reliance.nc), no
    recomputation."""
    from xai_loc.plots.redraw import redraw

    for path in redraw(results):
        click.echo(str(path))


@main.command()
@click.option("--quick", is_flag=True,
              help="A handful of test sources per condition and a small faithfulness/sanity/components suite "
                   "(about 20 CPU minutes for the four conditions; minutes with --skip sanity).")
@results_out_option("reproduce", "Study folder: one sub-folder of results per condition, summary.md, "
                                 "report.html and study.json.")
@data_option("the test data is simulated there if absent", read_only=True)
@pretrained_option("--pretrained", help="Checkpoint folder, the checkpoints under the shipped names")
@click.option("--batch-size", type=Int(1, MAX_BATCH), default=16, show_default=True,
              help="Windows per forward and explanation pass of every experiment.")
@device_option()
@click.option("--skip", default="", metavar="NAMES",
              help="Experiments to leave out, comma-separated: perturbation, tdoa, faithfulness, sanity, components.")
@CONVENTION_OPTION
@click.pass_context
def reproduce(ctx, quick, out, data, pretrained, batch_size, device, skip, convention) -> None:
    """The whole study for the paper's four conditions and both models: data, localization
    error beside the paper's, relevance, perturbation curves, TDOA table, SRP maps, the
    faithfulness suite, the sanity checks, the relevance shares on the simulator's components,
    figures, summary.md and report.html. Conditions without a shipped checkpoint are listed as missing.
    study.json records what the run wrote: the report marks what an earlier run left in OUT."""
    from xai_loc.study import check_skip
    from xai_loc.study import reproduce as run

    setup(ctx)
    skip = check_skip(csv_list(skip, what="--skip"), what="--skip") if skip else ()
    click.echo(str(run(out, quick=quick, data_root=data, pretrained=pretrained, batch_size=batch_size,
                       device=device, progress=True, convention=convention or "gpurir", skip=skip)))
