"""The ``xai-loc`` command line: thin wrappers that parse, call one library function and report.

Heavy imports (torch, xarray, ...) happen inside the commands so that ``xai-loc --help``
answers at once. Every :class:`~xai_loc.errors.InputError` becomes one line on stderr and
exit code 2.
"""
from __future__ import annotations

import contextlib
import errno

import click

from xai_loc.cli_params import (
    SEED,
    SNR,
    T60,
    Device,
    InputDir,
    InputFile,
    Int,
    Number,
    OutDir,
    OutFile,
    check_out_dir,
    data_root_default,
)
from xai_loc.errors import InputError
from xai_loc.runtime import MAX_THREADS

#: A positive finite number (rates, budgets, durations).
POSITIVE = Number(0, open_low=True)

#: RIR backends and modes offered on the command line (kept in sync with the registries by a test).
BACKEND_CHOICES = ("torch", "pyroomacoustics", "gpurir")
RIR_MODE_CHOICES = ("ism", "hybrid")
CONVENTION_CHOICES = ("gpurir", "pyroomacoustics")
SPLIT_CHOICES = ("train", "val", "test", "all")
MODEL_CHOICES = ("loccnn", "samplecnn")
METHOD_CHOICES = ("lrp", "saliency", "input_x_gradient", "integrated_gradients", "deeplift", "gradient_shap",
                  "occlusion")
TARGET_CHOICES = ("truth", "prediction", "x", "y", "z", "error", "contrast")
FIRST_RULE_CHOICES = ("wsquare", "flat", "zplus", "epsilon", "gamma", "zbox")
COMPOSITE_CHOICES = ("paper", "paper-samplecnn-reversed-gate", "epsilon", "epsilon_plus_flat",
                     "epsilon_alpha2_beta1", "epsilon_gamma_box", "cochcnn", "tfcnn", "cuenet")


#: The simulation convention of every command that simulates.
_CONVENTION = click.option(
    "--convention", type=click.Choice(CONVENTION_CHOICES), default=None,
    help="Simulation convention of the data: gpurir (gpuRIR's, as the paper) or pyroomacoustics "
         "[default: the scene's; gpurir for the paper scene].")


#: File-system errors that come from the user's paths or machine, not from a bug: reported in
#: one line like an InputError (disk full, permissions, a path below a file, ...).
_USER_OS_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EISDIR,
                   errno.ENOENT, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP}


@contextlib.contextmanager
def _user_errors():
    """Turn user errors (InputError, the file-system errors above) into one line on stderr and exit code 2."""
    try:
        yield
    except InputError as err:
        message = " ".join(str(err).split())
    except OSError as err:
        if err.errno not in _USER_OS_ERRORS:
            raise
        where = f" {str(err.filename)!r}" if err.filename else ""
        message = f"cannot use{where}: {err.strerror or err}"
    else:
        return
    click.echo(f"Error: {message}", err=True)
    raise click.exceptions.Exit(2)


class _Group(click.Group):
    """A click group that reports user errors in one line with exit code 2 (its own options included)."""

    def make_context(self, info_name, args, parent=None, **extra):
        with _user_errors():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context):
        with _user_errors():
            return super().invoke(ctx)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="xai-loc")
@click.option("--threads", type=Int(1, MAX_THREADS), default=None, envvar="XAI_LOC_THREADS", show_envvar=True,
              help="torch CPU threads (default: torch's choice; 1 is often fastest on small shared machines).")
@click.pass_context
def main(ctx: click.Context, threads: int | None) -> None:
    """Explain what neural sound-source localizers listen to.

    \b
    Simulate the paper's data:   xai-loc simulate --t60 0.6 --snr 10 --split test
    Train on the paper's recipe: xai-loc train --model loccnn --t60 0.6 --snr 10
    Evaluate a checkpoint:       xai-loc evaluate pretrained/loccnn_t60-0.6_snr-10.safetensors
    Explain the test split:      xai-loc explain --model samplecnn --t60 0.6 --snr 10
    Perturbation curves:         xai-loc perturb --t60 0.6 --snr 10
    TDOA and SRP probes:         xai-loc tdoa --t60 0.6 --snr 10 --pairs spread
    Redraw figures:              xai-loc figures xai-loc-results
    The whole study:             xai-loc reproduce --quick
    Check a composite's cover:   xai-loc audit pretrained/samplecnn_t60-0.6_snr-10.safetensors
    Relevance as audio:          xai-loc listen RELEVANCE.zarr --out wavs/
    Shipped and known models:    xai-loc models list
    Import a paper checkpoint:   xai-loc models import --arch samplecnn --t60 0.6 --snr 10 FILE.pth
    Binaural cue probes:         xai-loc binaural cues
    Other binaural families:     xai-loc binaural tfcnn|cuenet|bast ...
    Explain a binaural model:    xai-loc binaural explain CHECKPOINT recording.wav
    Versions and devices:        xai-loc info
    """
    ctx.obj = {"threads": threads}


def _parse_options(items: tuple[str, ...]) -> dict:
    """``("epsilon=1e-6", "first_rule=flat")`` -> ``{"epsilon": 1e-06, "first_rule": "flat"}``."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InputError(f"option {item!r} is not allowed; write KEY=VALUE, e.g. epsilon=1e-6")
        for cast in (int, float):
            try:
                out[key] = cast(raw)
                break
            except ValueError:
                continue
        else:
            out[key] = raw
    return out


def _multichannel_card(checkpoint: str) -> dict:
    """The card of a checkpoint of a position localizer (multichannel families and plug-ins), or one line
    saying what it is instead."""
    from xai_loc.models import MODELS, read_card

    card = read_card(checkpoint)
    arch = card.get("architecture")
    if arch not in MODELS:
        raise InputError(f"checkpoint {checkpoint} is a {arch!r} model, which is not registered here "
                         f"(registered: {', '.join(sorted(MODELS))}; plug-ins join through the entry-point group "
                         "xai_loc.localizers)")
    if MODELS[arch].output_kind != "position":
        raise InputError(f"checkpoint {checkpoint} is a {arch} model ({MODELS[arch].output_kind} output); this "
                         "command takes localizers of source positions (binaural models: xai-loc binaural ...)")
    return card


def _condition(t60: float | None, snr: float | None, checkpoint: str | None) -> tuple[float, float]:
    """The condition to run: ``--t60``/``--snr``, else the checkpoint card's; warns when they differ."""
    if checkpoint is None:
        if t60 is None or snr is None:
            raise InputError("--t60 and --snr are needed to pick the shipped checkpoint and data "
                             "(or give --checkpoint, whose card has its condition)")
        return t60, snr
    trained = _multichannel_card(checkpoint).get("condition") or {}
    t60 = trained.get("t60") if t60 is None else t60
    snr = trained.get("snr") if snr is None else snr
    if t60 is None or snr is None:
        raise InputError(f"checkpoint {checkpoint} records no condition; give --t60 and --snr")
    if (trained.get("t60"), trained.get("snr")) != (t60, snr) and "t60" in trained:
        click.echo(f"warning: {checkpoint} was trained at T60 {trained['t60']:g} s, SNR {trained.get('snr'):g} dB; "
                   f"running it on T60 {t60:g} s, SNR {snr:g} dB", err=True)
    return float(t60), float(snr)


def _warn_convention(checkpoints, convention: str) -> None:
    """Warn (stderr) about each checkpoint trained on data of another simulation convention."""
    from xai_loc.models import read_card
    from xai_loc.models.zoo import convention_warning

    for path in checkpoints:
        warning = convention_warning(read_card(path), convention, str(path))
        if warning:
            click.echo(warning, err=True)


def _check_explanation(models, method: str, composite: str, target: str, options: dict) -> None:
    """Refuse a bad method, composite, target or option before any data is simulated."""
    import numpy as np

    from xai_loc.explain import Explainer

    for model in models:
        Explainer(model, method=method, composite=composite, target=target, mean_input=np.zeros(1),
                  train_mean=np.zeros(3), **options)


def _checkpoint(arch: str, t60: float, snr: float, checkpoint: str | None) -> str:
    """An explicit checkpoint, or the shipped one of the architecture and condition."""
    from xai_loc.models.zoo import shipped_checkpoint

    return checkpoint if checkpoint else str(shipped_checkpoint(arch, t60, snr))


_OPTION_HELP = ("Method, composite or target option KEY=VALUE (repeatable), e.g. first_rule=flat, epsilon=1e-6, "
                "maxpool=smooth, n_steps=32, reference=zero.")


def _setup(ctx: click.Context) -> int:
    from xai_loc.runtime import configure_threads

    return configure_threads(ctx.obj["threads"])


@main.command()
@click.pass_context
def info(ctx: click.Context) -> None:
    """Print versions, torch threads and the available devices."""
    import torch

    from xai_loc.runtime import software_versions

    threads = _setup(ctx)
    for name, ver in software_versions().items():
        click.echo(f"{name:16s} {ver}")
    click.echo(f"{'threads':16s} {threads}")
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"
    click.echo(f"{'device':16s} cpu; cuda: {cuda}")


@main.command()
@click.option("--t60", type=T60, required=True, help="Reverberation time in seconds (Sabine).")
@click.option("--snr", type=SNR, required=True, help="SNR in dB relative to microphone 0.")
@click.option("--split", type=click.Choice(SPLIT_CHOICES), default="test", show_default=True,
              help="Which sources of the scene to simulate.")
@click.option("--sources", "n_sources", type=Int(1), default=None,
              help="Only N sources, a seeded spread over the split.")
@click.option("--scene", default="paper", show_default=True, help="Built-in scene name or a scene TOML file.")
@click.option("--data", "--out", "out", type=OutDir(), default=data_root_default, envvar="XAI_LOC_DATA",
              help="Data root (--out is an alias) [default: $XAI_LOC_DATA or ./xai-loc-data].")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="torch", show_default=True,
              help="RIR backend.")
@click.option("--mode", type=click.Choice(RIR_MODE_CHOICES), default="ism", show_default=True,
              help="torch backend: image sources up to T60 (ism) or up to T60/4 plus a diffuse tail (hybrid).")
@click.option("--speech", default=None, type=InputDir(),
              help="Folder of wav/flac/ogg speech to use instead of the shipped corpus.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of speech choice and noise.")
@click.option("--device", type=Device(), default="cpu", show_default=True, help="cpu, cuda or cuda:N (torch backend).")
@_CONVENTION
@click.pass_context
def simulate(ctx, t60, snr, split, n_sources, scene, out, backend, mode, speech, seed, device, convention) -> None:
    """Simulate microphone windows of a scene into a zarr store (resumable)."""
    from xai_loc.acoustics.speech import SpeechCorpus
    from xai_loc.data.scene import load_scene
    from xai_loc.data.store import simulate_dataset
    from xai_loc.runtime import resolve_device

    _setup(ctx)
    resolve_device(device)
    scn = load_scene(scene, convention=convention)
    corpus = SpeechCorpus.from_folder(speech, fs=scn.room.fs) if speech else None
    options = {"mode": mode} if backend == "torch" else {}
    path = simulate_dataset(scn, split, t60, snr, root=out, n_sources=n_sources, corpus=corpus, seed=seed,
                            backend=backend, device=device, rir_options=options, progress=True)
    click.echo(str(path))


@main.group()
def models() -> None:
    """Registered architectures and checkpoints (list, import)."""


@models.command("list")
@click.option("--dir", "directory", type=InputDir(), default=None,
              help="Folder of checkpoints [default: $XAI_LOC_PRETRAINED or the shipped pretrained/].")
def models_list(directory: str | None) -> None:
    """Show the registered architectures and the checkpoints with their conditions and test errors."""
    from xai_loc.models import MODELS, build_model
    from xai_loc.models.zoo import list_checkpoints, pretrained_dir

    click.echo("architectures:")
    for name in sorted(MODELS):
        model = build_model(name)
        n_params = sum(p.numel() for p in model.parameters())
        shape = " x ".join(str(v) for v in model.input_shape)
        click.echo(f"  {name:12s} {n_params:>10,d} parameters, input {shape} (default configuration)")
    folder = pretrained_dir() if directory is None else directory
    rows = list_checkpoints(folder)
    click.echo(f"checkpoints in {folder}:" if rows else f"checkpoints in {folder}: none")
    for row in rows:
        click.echo("  " + row)


@models.command("import")
@click.option("--arch", type=click.Choice(MODEL_CHOICES), required=True, help="Architecture of the file.")
@click.option("--t60", type=T60, required=True, help="T60 (s) the model was trained for.")
@click.option("--snr", type=SNR, required=True, help="SNR (dB) the model was trained for.")
@click.option("--out", type=OutFile(), default=None,
              help="Output checkpoint [default: FILE with suffix .safetensors].")
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


@main.command()
@click.option("--model", "arch", type=click.Choice(MODEL_CHOICES), required=True, help="Architecture.")
@click.option("--t60", type=T60, required=True, help="Reverberation time (s) of the training condition.")
@click.option("--snr", type=SNR, required=True, help="SNR (dB) of the training condition.")
@click.option("--scene", default="paper", show_default=True, help="Built-in scene name or a scene TOML file.")
@click.option("--data", type=OutDir(), default=data_root_default, envvar="XAI_LOC_DATA",
              help="Data root; train/val are simulated there if absent [default: $XAI_LOC_DATA or ./xai-loc-data].")
@click.option("--sources", "n_sources", type=Int(1), default=None,
              help="Only N sources of each split, a seeded spread over it.")
@click.option("--out", type=OutFile(), default=None,
              help="Checkpoint to write [default: <data>/runs/<scene>/<model>_t60-T_snr-S.safetensors].")
@click.option("--batch-size", type=Int(1), default=100, show_default=True)
@click.option("--lr", type=POSITIVE, default=None, help="Adam learning rate [default: 1e-3 LocCNN, 1e-2 SampleCNN].")
@click.option("--weight-decay", type=Number(0), default=0.0, show_default=True)
@click.option("--lr-factor", type=Number(0, 1, open_low=True), default=0.2, show_default=True,
              help="ReduceLROnPlateau factor.")
@click.option("--lr-patience", type=Int(0), default=100, show_default=True, help="ReduceLROnPlateau patience (epochs).")
@click.option("--min-lr", type=Number(0), default=0.0, show_default=True)
@click.option("--early-stop-patience", type=Int(0), default=200, show_default=True)
@click.option("--max-epochs", type=Int(1), default=5000, show_default=True)
@click.option("--max-minutes", type=POSITIVE, default=None, help="Wall-clock budget; rerun to continue.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seeds weights, window draws and dropout.")
@click.option("--device", type=Device(), default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--eval-batch-size", type=Int(1), default=100, show_default=True)
@click.option("--preload/--no-preload", default=False, show_default=True, help="Hold train/val in RAM.")
@click.option("--deterministic/--no-deterministic", default=True, show_default=True)
@click.option("--init-from", type=InputFile(), default=None,
              help="Start from this checkpoint's weights (same architecture; fine-tuning) instead of a seeded "
              "initialization.")
@_CONVENTION
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
    from xai_loc.data.store import condition_name, default_root, simulate_dataset
    from xai_loc.models import TrainConfig
    from xai_loc.models import train as train_model

    _setup(ctx)
    scn = load_scene(scene, convention=convention)
    root = Path(data) if data else default_root()
    config = TrainConfig(**knobs)
    sim_device = config.device if config.device.startswith("cuda") else "cpu"
    stores = {split: simulate_dataset(scn, split, t60, snr, root=root, n_sources=n_sources, device=sim_device,
                                      progress=True) for split in ("train", "val")}
    out = Path(out) if out else root / "runs" / scn.name / f"{arch}_{condition_name(t60, snr)}.safetensors"
    path = train_model(arch, stores["train"], stores["val"], out, config, progress=True,
                       init_from=init_from)
    click.echo(str(path))


@main.command()
@click.argument("checkpoint", type=InputFile())
@click.option("--split", type=click.Choice(SPLIT_CHOICES), default="test", show_default=True)
@click.option("--t60", type=T60, default=None, help="Condition to evaluate on [default: the checkpoint's].")
@click.option("--snr", type=SNR, default=None, help="Condition to evaluate on [default: the checkpoint's].")
@click.option("--scene", default="paper", show_default=True, help="Built-in scene name or a scene TOML file.")
@click.option("--data", type=OutDir(), default=data_root_default, envvar="XAI_LOC_DATA",
              help="Data root; the split is simulated there if absent [default: $XAI_LOC_DATA or ./xai-loc-data].")
@click.option("--sources", "n_sources", type=Int(1), default=None,
              help="Only N sources, a seeded spread over the split.")
@click.option("--json", "json_out", type=OutFile(), default=None,
              help="Also write the report with the per-source table as JSON.")
@click.option("--batch-size", type=Int(1), default=100, show_default=True)
@click.option("--device", type=Device(), default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@_CONVENTION
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

    _setup(ctx)
    t60, snr = _condition(t60, snr, checkpoint)
    load_model(checkpoint)  # a damaged or foreign checkpoint is refused before any data is simulated
    scn = load_scene(scene, convention=convention)
    _warn_convention([checkpoint], scn.convention)
    store = simulate_dataset(scn, split, t60, snr, root=data, n_sources=n_sources, progress=True)
    result = evaluate_checkpoint(checkpoint, store, batch_size=batch_size, device=device,
                                 progress=True)
    click.echo(result.to_text())
    if json_out:
        write_text_atomic(json_out, json.dumps(result.to_dict(), indent=2))


@main.command()
@click.option("--model", "arch", type=click.Choice(MODEL_CHOICES), default="samplecnn", show_default=True)
@click.option("--t60", type=T60, default=None,
              help="Condition: selects the shipped checkpoint and the data [default with --checkpoint: its card's].")
@click.option("--snr", type=SNR, default=None,
              help="Condition: selects the shipped checkpoint and the data [default with --checkpoint: its card's].")
@click.option("--checkpoint", type=InputFile(), default=None, help="Any xai-loc checkpoint.")
@click.option("--method", type=click.Choice(METHOD_CHOICES), default="lrp", show_default=True)
@click.option("--composite", type=click.Choice(COMPOSITE_CHOICES), default="paper", show_default=True,
              help="LRP composite (method lrp only).")
@click.option("--target", type=click.Choice(TARGET_CHOICES), default="truth", show_default=True,
              help="truth: seed = true (x, y, z), the paper's choice; prediction; x|y|z: one coordinate; "
                   "error: prediction - truth; contrast: prediction - reference prediction.")
@click.option("--option", "options", multiple=True, help=_OPTION_HELP)
@click.option("--split", type=click.Choice(SPLIT_CHOICES), default="test", show_default=True)
@click.option("--sources", "n_sources", type=Int(1), default=None,
              help="Only N sources, a seeded spread over the split.")
@click.option("--scene", default="paper", show_default=True)
@click.option("--data", type=OutDir(), default=data_root_default, envvar="XAI_LOC_DATA",
              help="Data root; the split is simulated there if absent [default: $XAI_LOC_DATA or ./xai-loc-data].")
@click.option("--out", type=OutDir(), default=None,
              help="Relevance store [default: next to the data, <split>.relevance/<arch>-<digest>-<method>-...zarr].")
@click.option("--batch-size", type=Int(1), default=32, show_default=True)
@click.option("--device", type=Device(), default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@_CONVENTION
@click.pass_context
def explain(ctx, arch, t60, snr, checkpoint, method, composite, target, options, split, n_sources, scene, data, out,
            batch_size, device, convention) -> None:
    """Explain every window of a split into a chunked relevance store (resumable).

    Relevance has the input's shape (window, mic, time) with source and microphone
    coordinates and provenance attrs; read it back with xarray.open_zarr. A store only ever
    holds one model, method, composite, target and option set.
    """
    from xai_loc.data.scene import load_scene
    from xai_loc.data.store import simulate_dataset
    from xai_loc.explain import explain_store

    _setup(ctx)
    t60, snr = _condition(t60, snr, checkpoint)
    model = _checkpoint(arch, t60, snr, checkpoint)
    _check_explanation([model], method, composite, target, _parse_options(options))
    scn = load_scene(scene, convention=convention)
    _warn_convention([model], scn.convention)
    store = simulate_dataset(scn, split, t60, snr, root=data, n_sources=n_sources, device=device, progress=True)
    path = explain_store(model, store, out, method=method, target=target, composite=composite,
                         batch_size=batch_size, device=device, progress=True,
                         **_parse_options(options))
    click.echo(str(path))


@main.command()
@click.argument("model")
@click.option("--composite", type=click.Choice(COMPOSITE_CHOICES), default="paper", show_default=True)
@click.option("--option", "options", multiple=True, help=_OPTION_HELP)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the random probe input.")
@click.pass_context
def audit(ctx, model, composite, options, seed) -> None:
    """List each module of MODEL with its LRP rule, functional operations that hooks cannot see,
    and per-layer relevance conservation for one input.

    MODEL is a checkpoint file or an architecture name (untrained weights). Exits with 1
    when the composite leaves a layer uncovered or forward() uses hidden operations.
    """
    from pathlib import Path

    from xai_loc.explain import audit as run_audit
    from xai_loc.models import build_model

    _setup(ctx)
    target = model if Path(model).exists() else build_model(model)
    report = run_audit(target, composite, seed=seed, **_parse_options(options))
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

    def ids(text):
        try:
            return None if text is None else [int(v) for v in text.split(",")]
        except ValueError:
            raise InputError(f"{text!r} is not a comma-separated list of integers") from None

    rel = open_relevance(relevance)
    paths = write_wavs(rel, open_explained_signals(relevance), out, sources=ids(sources), mics=ids(mics))
    click.echo(f"{len(paths)} files in {out}")


def _with_options(*options):
    """A decorator applying click ``options`` so that ``--help`` lists them in the given order."""
    def decorator(command):
        for option in reversed(options):
            command = option(command)
        return command

    return decorator


#: Options every binaural scene set takes.
_SCENE_SEED = click.option("--seed", type=SEED, default=0, show_default=True, help="Seeds the scenes and the training.")
_DATA_ROOT = click.option("--data", type=OutDir(), default=data_root_default, envvar="XAI_LOC_DATA",
                          help="Data root [default: $XAI_LOC_DATA or ./xai-loc-data].")


#: The options perturb and tdoa share: condition, models, relevance method, data and output.
_experiment_options = _with_options(
    click.option("--t60", type=T60, default=None,
                 help="Condition: shipped checkpoints and data [default with --checkpoint: its card's]."),
    click.option("--snr", type=SNR, default=None,
                 help="Condition: shipped checkpoints and data [default with --checkpoint: its card's]."),
    click.option("--model", "arch", type=click.Choice((*MODEL_CHOICES, "all")), default="all",
                 show_default=True),
    click.option("--checkpoint", type=InputFile(), default=None,
                 help="Any xai-loc checkpoint."),
    click.option("--method", type=click.Choice(METHOD_CHOICES), default="lrp", show_default=True),
    click.option("--composite", type=click.Choice(COMPOSITE_CHOICES), default="paper", show_default=True),
    click.option("--target", type=click.Choice(TARGET_CHOICES), default="truth", show_default=True),
    click.option("--option", "options", multiple=True, help=_OPTION_HELP),
    click.option("--randomized/--no-randomized", default=True, show_default=True,
                 help="Also score the relevance of a randomized copy of each model (sanity baseline)."),
    click.option("--sources", "n_sources", type=Int(1), default=None,
                 help="Only N test sources, a seeded spread over the split."),
    click.option("--seed", type=SEED, default=0, show_default=True),
    click.option("--data", type=OutDir(), default=data_root_default, envvar="XAI_LOC_DATA",
                 help="Data root; the test split is simulated there if absent "
                      "[default: $XAI_LOC_DATA or ./xai-loc-data]."),
    click.option("--out", type=OutDir(), default=None,
                 help="Results folder [default: xai-loc-results/t60-T_snr-S]."),
    click.option("--batch-size", type=Int(1), default=16, show_default=True),
    click.option("--device", type=Device(), default="cpu", show_default=True, help="cpu, cuda or cuda:N."),
    _CONVENTION,
)


def _csv(text: str, cast=str, what: str = "list") -> list:
    """``"a,b"`` -> ``["a", "b"]``; empty items are skipped, an empty list is an error."""
    try:
        values = [cast(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"{what} {text!r} is not a comma-separated list of {cast.__name__} values") from None
    if not values:
        raise InputError(f"{what} {text!r} is empty; give at least one comma-separated value")
    return values


def _models_for(arch: str, t60: float, snr: float, checkpoint: str | None) -> dict[str, str]:
    """``{name: checkpoint}`` for --model loccnn|samplecnn|all (shipped ones) or --checkpoint."""
    from xai_loc.models.zoo import checkpoint_name as checkpoint_file

    if checkpoint:
        from pathlib import Path

        stem = Path(checkpoint).stem
        name = _multichannel_card(checkpoint)["architecture"]
        return {stem if stem.startswith(name) else f"{name}-{stem}": checkpoint}
    if arch != "all":
        return {arch: _checkpoint(arch, t60, snr, None)}
    from xai_loc.models.zoo import pretrained_dir

    found = {a: str(p) for a in MODEL_CHOICES if (p := pretrained_dir() / checkpoint_file(a, t60, snr)).is_file()}
    return found or {MODEL_CHOICES[0]: _checkpoint(MODEL_CHOICES[0], t60, snr, None)}  # the latter raises


@main.command()
@_experiment_options
@click.option("--percentages", default="0,10,20,30,40,50,60,70", show_default=True)
@click.option("--modes", default="relevance,energy,random", show_default=True,
              help="Deletion orderings: relevance (signed, descending), energy (|x|), random (seeded).")
@click.option("--fill", type=click.Choice(("zero", "noise")), default="zero", show_default=True,
              help="Value of deleted samples: zero (the paper) or noise at the window's level.")
@click.pass_context
def perturb(ctx, t60, snr, arch, checkpoint, method, composite, target, options, percentages, modes, fill,
            randomized, n_sources, seed, data, out, batch_size, device, convention) -> None:
    """Deletion curves: zero the top-P % of each window's samples, ranked by relevance,
    amplitude or at random, and report the localization error (the paper's experiment).

    Writes perturbation.nc (dims model, mode, percentage; the same run gives the same bytes),
    a paper-style figure (PNG, PDF), a markdown table with AOPC and perturbation.timing.json
    (seconds per model); the constant-predictor error is shown beside them.
    The first run on a machine compiles the deletion kernels (about 20 s, then cached).
    """
    import json
    from pathlib import Path

    from xai_loc.data.scene import paper_scene
    from xai_loc.data.store import condition_name, simulate_dataset
    from xai_loc.experiments.perturbation import FILLS, MODES, check_percentages, run_perturbation
    from xai_loc.io import write_dataset_atomic, write_text_atomic
    from xai_loc.plots.perturbation import perturbation_table, plot_perturbation

    _setup(ctx)
    pcts = check_percentages(_csv(percentages, float, "--percentages"))
    modes = _csv(modes, what="--modes")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise InputError(f"--modes {unknown[0]!r} is unknown; allowed: {', '.join(MODES)}")
    if len(set(modes)) < len(modes):
        raise InputError(f"--modes {','.join(modes)!r} names a mode twice; give each once")
    if fill not in FILLS:
        raise InputError(f"--fill {fill!r} is unknown; allowed: {', '.join(FILLS)}")
    t60, snr = _condition(t60, snr, checkpoint)
    models = _models_for(arch, t60, snr, checkpoint)
    folder = Path(check_out_dir(out or Path("xai-loc-results") / condition_name(t60, snr), "--out"))
    _check_explanation(models.values(), method, composite, target, _parse_options(options))
    scene = paper_scene(convention or "gpurir")
    _warn_convention(models.values(), scene.convention)
    store = simulate_dataset(scene, "test", t60, snr, root=data, n_sources=n_sources, device=device,
                             progress=True)
    timing: dict = {}
    result = run_perturbation(models, store, percentages=pcts, modes=modes, timing=timing,
                              method=method, composite=composite, target=target, fill=fill,
                              randomized_baseline=randomized, seed=seed, batch_size=batch_size, device=device,
                              progress=True, **_parse_options(options))
    write_dataset_atomic(result, folder / "perturbation.nc")
    write_text_atomic(folder / "perturbation.timing.json", json.dumps(timing, indent=2, sort_keys=True))
    plot_perturbation(result, folder / "perturbation")
    table = perturbation_table(result)
    write_text_atomic(folder / "perturbation.md", table)
    click.echo(table)
    click.echo(f"results in {folder}")


@main.command()
@_experiment_options
@click.option("--pairs", default="spread", show_default=True,
              help="Microphone pairs: spread (one per spacing, 0.15 to 2.25 m), adjacent, all, or I-J,I-J.")
@click.option("--first-rule", type=click.Choice(FIRST_RULE_CHOICES), default=None,
              help="LRP rule of the first layer [default: the composite's, WSquare for 'paper'].")
@click.option("--srp/--no-srp", default=True, show_default=True,
              help="Also compare SRP-PHAT maps of signals and relevance over the source plane.")
@click.option("--srp-windows", type=Int(1), default=None, help="Only the first N windows for SRP (it is costly).")
@click.pass_context
def tdoa(ctx, t60, snr, arch, checkpoint, pairs, first_rule, method, composite, target, options, randomized, srp,
         srp_windows, n_sources, seed, data, out, batch_size, device, convention) -> None:
    """GCC-PHAT delays from microphone signals vs relevance signals, per microphone pair.

    Reports % anomalies (error above half the correlation time) and MAE in samples of the
    rest, per estimator and pair distance, always beside a constant zero-lag estimator and
    the relevance of randomized models; writes tdoa.nc, tables (markdown, CSV, LaTeX) and
    figures, plus the SRP-PHAT map errors of signals vs relevance.
    """
    from pathlib import Path

    from xai_loc.data.scene import paper_scene
    from xai_loc.data.store import condition_name, simulate_dataset
    from xai_loc.experiments.tdoa import parse_pairs
    from xai_loc.experiments.tdoa_probe import explain_models, run_tdoa, tdoa_tables, write_tdoa_results
    from xai_loc.plots.tdoa import plot_srp, plot_tdoa

    _setup(ctx)
    scene = paper_scene(convention or "gpurir")
    parse_pairs(pairs, scene.mics.shape[0])
    t60, snr = _condition(t60, snr, checkpoint)
    models = _models_for(arch, t60, snr, checkpoint)
    folder = Path(check_out_dir(out or Path("xai-loc-results") / condition_name(t60, snr), "--out"))
    _check_explanation(models.values(), method, composite, target,
                       {**_parse_options(options), **({"first_rule": first_rule} if first_rule else {})})
    _warn_convention(models.values(), scene.convention)
    store = simulate_dataset(scene, "test", t60, snr, root=data, n_sources=n_sources, device=device,
                             progress=True)
    opts = _parse_options(options)
    common = {"method": method, "composite": composite, "target": target, "first_rule": first_rule,
              "randomized_baseline": randomized, "seed": seed, "batch_size": batch_size, "device": device,
              "progress": True}
    relevance = explain_models(models, store, **common, **opts)
    result = run_tdoa(models, store, pairs=pairs, relevance=relevance, srp=srp, srp_max_windows=srp_windows,
                      **common, **opts)
    write_tdoa_results(result, folder)
    plot_tdoa(result, folder / "tdoa")
    if srp:
        plot_srp(result, folder / "srp")
    click.echo(tdoa_tables(result)["markdown"])
    click.echo(f"results in {folder}")


@main.command()
@click.argument("results", type=InputDir())
def figures(results) -> None:
    """Redraw every figure below RESULTS from the stored results (perturbation.nc, tdoa.nc and the binaural
    probes' duplex.nc, responses.nc, band_profile.nc, cue_reliance.nc), no recomputation."""
    from xai_loc.plots.redraw import redraw

    for path in redraw(results):
        click.echo(str(path))


@main.command()
@click.option("--quick", is_flag=True, help="A handful of test sources per condition (minutes, not hours).")
@click.option("--out", type=OutDir(), default="xai-loc-results/reproduce", show_default=True)
@click.option("--data", type=OutDir(), default=data_root_default, envvar="XAI_LOC_DATA",
              help="Data root [default: $XAI_LOC_DATA or ./xai-loc-data].")
@click.option("--pretrained", type=InputDir(), default=None,
              help="Checkpoint folder [default: the shipped pretrained/].")
@click.option("--batch-size", type=Int(1), default=16, show_default=True)
@click.option("--device", type=Device(), default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@_CONVENTION
@click.pass_context
def reproduce(ctx, quick, out, data, pretrained, batch_size, device, convention) -> None:
    """The whole study for the paper's four conditions and both models: data, localization
    error beside the paper's, relevance, perturbation curves, TDOA table, SRP maps, figures
    and summary.md. Conditions without a shipped checkpoint are listed as missing."""
    from xai_loc.study import reproduce as run

    _setup(ctx)
    click.echo(str(run(out, quick=quick, data_root=data, pretrained=pretrained, batch_size=batch_size,
                       device=device, progress=True, convention=convention or "gpurir")))


@main.group()
def binaural() -> None:
    """Binaural localizers: HRTF scenes, four model families, their explanations and cue probes.

    \b
    Cochleagram CNN (Francl & McDermott):
      Render scenes:        xai-loc binaural simulate --rooms anechoic,office --n-sounds 2200
      Train a localizer:    xai-loc binaural train --epochs 5
      Cues and behaviour:   xai-loc binaural cues --out xai-loc-results/binaural
    Other families, each with its own scenes, training and probe:
      IPD/ILD TF-CNN:       xai-loc binaural tfcnn train|probe
      ITD/ILD/IC cue net:   xai-loc binaural cuenet train|probe
      BAST transformer:     xai-loc binaural bast train|table|explain
    """


#: Options that define a binaural dataset (:class:`~xai_loc.data.binaural_store.BinauralSpec`).
_binaural_spec_options = _with_options(
    click.option("--rooms", default="anechoic,office", show_default=True,
                 help="Comma-separated room presets (anechoic, office, ...); each example picks one."),
    click.option("--kinds", default=None,
                 help="Comma-separated sound kinds (speech and the synthetic kinds) [default: all of them]."),
    click.option("--n-sounds", type=Int(1), default=2200, show_default=True, help="Distinct sounds."),
    click.option("--per-sound", type=Int(1), default=4, show_default=True,
                 help="Renderings of each sound, each at its own direction, room and SNR."),
    click.option("--duration", type=POSITIVE, default=0.25, show_default=True, help="Example length (s)."),
    click.option("--snr", type=SNR, nargs=2, default=(5.0, 40.0), show_default=True,
                 help="Range (dB) of the diffuse background's SNR."),
    click.option("--no-noise", is_flag=True, help="No background noise."),
    click.option("--test-fraction", type=Number(0, 1, open_low=True), default=0.2, show_default=True,
                 help="Share of the distinct sounds held out for the test split."),
    click.option("--seed", type=SEED, default=0, show_default=True, help="Seeds the split and every rendering."),
    click.option("--data", type=OutDir(), default=data_root_default, envvar="XAI_LOC_DATA",
                 help="Data root [default: $XAI_LOC_DATA or ./xai-loc-data]."),
)


def _binaural_spec(rooms, kinds, n_sounds, per_sound, duration, snr, no_noise, test_fraction, seed):
    from xai_loc.data.binaural_store import BinauralSpec, cochcnn_dataset_name

    rooms = tuple(r.strip() for r in rooms.split(",") if r.strip())
    extra = {} if kinds is None else {"kinds": tuple(k.strip() for k in kinds.split(",") if k.strip())}
    return BinauralSpec(name=cochcnn_dataset_name(rooms, n_sounds, per_sound), rooms=rooms, n_sounds=n_sounds,
                        per_sound=per_sound, duration=duration, snr=None if no_noise else snr,
                        test_fraction=test_fraction, seed=seed, **extra)


@binaural.command("simulate")
@_binaural_spec_options
@click.option("--split", type=click.Choice(("train", "test", "all")), default="all", show_default=True,
              help="train and test hold distinct sounds; all: both in one store.")
@click.option("--device", type=Device(), default="cpu", show_default=True,
              help="cpu, cuda or cuda:N (room simulation).")
@click.pass_context
def binaural_simulate(ctx, rooms, kinds, n_sounds, per_sound, duration, snr, no_noise, test_fraction, seed, data,
                      split, device) -> None:
    """Render a binaural dataset (KEMAR head in the room presets, natural sounds, diffuse noise)
    into a resumable zarr store; prints its path."""
    from xai_loc.data.binaural_store import simulate_binaural

    _setup(ctx)
    spec = _binaural_spec(rooms, kinds, n_sounds, per_sound, duration, snr, no_noise, test_fraction, seed)
    click.echo(str(simulate_binaural(spec, split, root=data, device=device, progress=True)))


@binaural.command("train")
@_binaural_spec_options
@click.option("--out", type=OutFile(), default=None,
              help="Checkpoint [default: <data>/runs/cochcnn_<dataset>.safetensors]; rerun to resume.")
@click.option("--layers", default="small", show_default=True, help="Layer preset of the cochleagram CNN (small, net1).")
@click.option("--head", type=click.Choice(("azel", "azimuth")), default="azel", show_default=True,
              help="504 azimuth x elevation classes or 72 azimuths.")
@click.option("--epochs", type=Int(1), default=5, show_default=True)
@click.option("--batch-size", type=Int(1), default=16, show_default=True)
@click.option("--lr", type=POSITIVE, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--label-sigma", type=Number(0), default=10.0, show_default=True,
              help="Spread the cross-entropy target over neighbouring directions (degrees; 0: one-hot, the paper's).")
@click.option("--max-minutes", type=POSITIVE, default=None, help="Budget of the epochs; rerun to continue.")
@click.option("--dtype", type=click.Choice(("auto", "float32", "float16")), default="auto", show_default=True,
              help="Weight storage; auto keeps float16 where the test metrics do not move.")
@click.option("--device", type=Device(), default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.pass_context
def binaural_train(ctx, rooms, kinds, n_sounds, per_sound, duration, snr, no_noise, test_fraction, seed, data, out,
                   layers, head, epochs, batch_size, lr, label_sigma, max_minutes, dtype, device) -> None:
    """Train the cochleagram localizer on a binaural dataset (rendered first where absent) and
    score it on the held-out sounds. The defaults recreate pretrained/cochcnn_default."""
    from pathlib import Path

    from xai_loc.data.store import default_root
    from xai_loc.models.checkpoint import read_card
    from xai_loc.models.classifier_training import ClassifierConfig, train_on_spec
    from xai_loc.models.zoo import describe_test_metrics

    _setup(ctx)
    spec = _binaural_spec(rooms, kinds, n_sounds, per_sound, duration, snr, no_noise, test_fraction, seed)
    config = ClassifierConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, max_minutes=max_minutes,
                              device=device, label_sigma=label_sigma)
    out = Path(out) if out else Path(data or default_root()) / "runs" / f"cochcnn_{spec.name}.safetensors"
    path = train_on_spec(spec, out, root=data, model_config={"layers": layers, "head": head}, config=config,
                         dtype=dtype, progress=True)
    card = read_card(path)
    click.echo(f"{path}: {card['training']['epochs']} epochs, "
               f"{describe_test_metrics((card.get('metrics') or {}).get('test') or {})}")


@binaural.command("cues")
@_binaural_spec_options
@click.option("--checkpoint", type=InputFile(), default=None,
              help="A cochleagram CNN checkpoint [default: the shipped pretrained/cochcnn_default.safetensors].")
@click.option("--out", type=OutDir(), default="xai-loc-results/binaural", show_default=True)
@click.option("--relevance/--no-relevance", default=True, show_default=True,
              help="Also the relevance view: mass per band and ear, left/right relevance lag against the ITD.")
@click.option("--behaviour/--no-behaviour", default=True, show_default=True,
              help="Also the Hofman figure and confusion statistics on the dataset's held-out sounds.")
@click.option("--tokens", type=Int(1), default=4, show_default=True, help="Noise tokens per stimulus condition.")
@click.option("--response", type=click.Choice(("argmax", "mean")), default="argmax", show_default=True,
              help="Model answer: the arg-max direction or the probability-weighted mean lateral angle.")
@click.option("--option", "options", multiple=True,
              help="LRP composite option KEY=VALUE (repeatable), e.g. conv_rule=epsilon, gamma=0.5.")
@click.option("--batch-size", type=Int(1), default=16, show_default=True)
@click.option("--device", type=Device(), default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.pass_context
def binaural_cues(ctx, rooms, kinds, n_sounds, per_sound, duration, snr, no_noise, test_fraction, seed, data,
                  checkpoint, out, relevance, behaviour, tokens, response, options, batch_size, device) -> None:
    """Duplex-theory cue probe (ITD and ILD weights per band, Macpherson & Middlebrooks 2002)
    and its relevance view, plus the Hofman-style behaviour on held-out scenes: writes
    duplex.nc, cue_relevance.nc, cues.png, responses.nc and hofman.png under OUT."""
    from xai_loc.data.binaural_store import simulate_binaural
    from xai_loc.experiments.cues import run_behaviour, run_duplex_probe
    from xai_loc.models.zoo import pretrained_dir
    from xai_loc.plots.redraw import draw

    _setup(ctx)
    model = checkpoint or str(pretrained_dir() / "cochcnn_default.safetensors")
    spec = _binaural_spec(rooms, kinds, n_sounds, per_sound, duration, snr, no_noise, test_fraction, seed)
    store = simulate_binaural(spec, "test", root=data, device=device, progress=True) \
        if behaviour else None
    progress = True
    paths = list(run_duplex_probe(model, out, relevance=relevance, n_tokens=tokens, response=response,
                                  batch_size=batch_size, device=device, seed=seed, progress=progress,
                                  **_parse_options(options)).values())
    if store is not None:
        paths += run_behaviour(model, store, out, batch_size=batch_size, device=device, progress=progress).values()
    paths += draw(paths)
    for path in paths:
        click.echo(str(path))


@binaural.group("tfcnn")
def binaural_tfcnn() -> None:
    """IPD/ILD time-frequency CNN (Pang et al. 2019): train, probe.

    \b
    Train:   xai-loc --threads 1 binaural tfcnn train   (defaults recreate pretrained/tfcnn_default)
    Probe:   xai-loc binaural tfcnn probe     (relevance on the IPD vs ILD channel per band)
    """


#: Options of the TF-CNN's scene set (:class:`~xai_loc.data.ipd_ild_scenes.SceneSpec`).
_tfcnn_scene_options = _with_options(
    click.option("--n-train", type=Int(1), default=8000, show_default=True,
                 help="Training scenes (SNR uniform in -10..30 dB)."),
    click.option("--test-per-azimuth", type=Int(1), default=10, show_default=True,
                 help="Test scenes per azimuth at each test SNR (-6, 0, 6 dB), held-out utterances."),
    _SCENE_SEED,
    _DATA_ROOT,
)


def _tfcnn_spec(n_train, test_per_azimuth, seed):
    from xai_loc.data.ipd_ild_scenes import SceneSpec

    return SceneSpec(name=f"tfcnn-n{n_train}-t{test_per_azimuth}-s{seed}", n_train=n_train,
                     test_per_azimuth=test_per_azimuth, seed=seed)


@binaural_tfcnn.command("train")
@_tfcnn_scene_options
@click.option("--out", type=OutFile(), default=None,
              help="Checkpoint [default: <data>/runs/tfcnn_<scenes>.safetensors]; rerun to resume.")
@click.option("--width", type=click.Choice(("small", "paper")), default="small", show_default=True)
@click.option("--head", type=click.Choice(("regression", "multitask")), default="regression", show_default=True,
              help="Azimuth regression (-90..90, MSE) or azimuth x elevation classification.")
@click.option("--epochs", type=Int(1), default=15, show_default=True)
@click.option("--batch-size", type=Int(1), default=32, show_default=True)
@click.option("--lr", type=POSITIVE, default=1e-3, show_default=True)
@click.option("--max-minutes", type=POSITIVE, default=None, help="Budget of the epochs; rerun to continue.")
@click.pass_context
def binaural_tfcnn_train(ctx, n_train, test_per_azimuth, seed, data, out, width, head, epochs, batch_size, lr,
                         max_minutes) -> None:
    """Render the KEMAR speech-in-noise scenes (if absent) and train the TF-CNN; the card holds
    accuracy within 5 and 10 degrees per test SNR."""
    from pathlib import Path

    from xai_loc.data.ipd_ild_scenes import render_scenes
    from xai_loc.data.store import default_root
    from xai_loc.models.tfcnn_training import TFCNNTrainConfig, train_tfcnn

    _setup(ctx)
    spec = _tfcnn_spec(n_train, test_per_azimuth, seed)
    config = TFCNNTrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, max_minutes=max_minutes)
    paths = render_scenes(spec, data, progress=True)
    out = Path(out) if out else Path(data or default_root()) / "runs" / f"tfcnn_{spec.name}.safetensors"
    path = train_tfcnn(paths["train"], out, test_scenes=paths["test"], model_config={"width": width, "head": head},
                       config=config, progress=True)
    click.echo(str(path))


@binaural_tfcnn.command("probe")
@_tfcnn_scene_options
@click.option("--checkpoint", type=InputFile(), default=None,
              help="A TF-CNN checkpoint [default: the shipped pretrained/tfcnn_default.safetensors].")
@click.option("--snr", "snrs", type=SNR, multiple=True, help="Test SNR(s) to probe [default: all of them].")
@click.option("--examples", type=Int(1), default=96, show_default=True, help="Examples per SNR (seeded draw).")
@click.option("--option", "options", multiple=True, help="Composite option KEY=VALUE, e.g. conv_rule=epsilon.")
@click.option("--out", type=OutDir(), default="xai-loc-results/tfcnn", show_default=True)
@click.pass_context
def binaural_tfcnn_probe(ctx, n_train, test_per_azimuth, seed, data, checkpoint, snrs, examples, options, out) -> None:
    """Relevance on the IPD vs the ILD channel per octave band at each test SNR (duplex theory:
    IPD below ~1.5 kHz, ILD above); writes band_profile.nc and band_profile.png."""
    from xai_loc.data.ipd_ild_scenes import render_scenes
    from xai_loc.experiments.ipd_ild_probe import run_ipd_ild_probe
    from xai_loc.models.zoo import pretrained_dir
    from xai_loc.plots.redraw import draw

    _setup(ctx)
    spec = _tfcnn_spec(n_train, test_per_azimuth, seed)
    scenes = render_scenes(spec, data, progress=True, splits=("test",))["test"]
    model = checkpoint or str(pretrained_dir() / "tfcnn_default.safetensors")
    paths = list(run_ipd_ild_probe(model, scenes, out, snrs=snrs or None, n_examples=examples, seed=seed,
                                   **_parse_options(options)).values())
    for path in paths + draw(paths):
        click.echo(str(path))


@binaural.group("cuenet")
def binaural_cuenet() -> None:
    """ITD/ILD/IC cue network (per-cue branches fused by attention): train, probe.

    \b
    Train:   xai-loc --threads 1 binaural cuenet train  (defaults recreate pretrained/cuenet_default)
    Probe:   xai-loc binaural cuenet probe    (relevance per cue and band, attention, ablation)
    """


#: Options of the cue network's scene set (:class:`~xai_loc.data.cue_scenes.CueSceneSpec`).
_cue_scene_options = _with_options(
    click.option("--train-per-utterance", type=Int(1), default=18, show_default=True,
                 help="Training scenes per utterance (240 training utterances)."),
    click.option("--test-per-utterance", type=Int(1), default=12, show_default=True,
                 help="Test scenes per utterance (60 held-out utterances)."),
    _SCENE_SEED,
    _DATA_ROOT,
)


def _cue_spec(train_per_utterance, test_per_utterance, seed):
    from xai_loc.data.cue_scenes import CueSceneSpec

    counts = {"train": train_per_utterance, "test": test_per_utterance}
    name = "cuenet" if counts == {"train": 18, "test": 12} else f"cuenet-{train_per_utterance}x{test_per_utterance}"
    return CueSceneSpec(name=name, per_utterance=counts, seed=seed)


@binaural_cuenet.command("train")
@_cue_scene_options
@click.option("--out", type=OutFile(), default=None,
              help="Checkpoint [default: <data>/runs/<scenes>_s<seed>.safetensors].")
@click.option("--epochs", type=Int(1), default=100, show_default=True)
@click.option("--batch-size", type=Int(1), default=32, show_default=True)
@click.option("--lr", type=POSITIVE, default=1e-3, show_default=True)
@click.option("--label-sigma", type=Number(0), default=0.0, show_default=True,
              help="Spread the cross-entropy target over neighbouring azimuths (degrees; 0: one-hot).")
@click.option("--max-minutes", type=POSITIVE, default=15.0, show_default=True, help="Budget of the epochs.")
@click.pass_context
def binaural_cuenet_train(ctx, train_per_utterance, test_per_utterance, seed, data, out, epochs, batch_size, lr,
                          label_sigma, max_minutes) -> None:
    """Render the speech-plus-two-noises scenes and cache their cue maps (if absent), train the
    cue network and score it on held-out utterances (top-1, top-5, azimuth error)."""
    from pathlib import Path

    from xai_loc.data.store import default_root
    from xai_loc.features.binaural_cues import simulate_cue_scenes
    from xai_loc.models.classifier_training import ClassifierConfig
    from xai_loc.models.cuenet import train_cuenet

    _setup(ctx)
    spec = _cue_spec(train_per_utterance, test_per_utterance, seed)
    config = ClassifierConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, max_minutes=max_minutes,
                              label_sigma=label_sigma)
    test = simulate_cue_scenes(spec, "test", root=data, progress=True)
    train = simulate_cue_scenes(spec, "train", root=data, progress=True)
    out = Path(out) if out else Path(data or default_root()) / "runs" / f"{spec.name}_s{seed}.safetensors"
    click.echo(str(train_cuenet(train, out, test_store=test, config=config, progress=True)))


@binaural_cuenet.command("probe")
@_cue_scene_options
@click.option("--checkpoint", type=InputFile(), default=None,
              help="A cue-network checkpoint [default: the shipped pretrained/cuenet_default.safetensors].")
@click.option("--examples", type=Int(1), default=None,
              help="Explain only the first N test scenes [default: all]; the ablation always scores all of them.")
@click.option("--ablation", type=click.Choice(("permute", "mean")), default="permute", show_default=True,
              help="How the rule-free check destroys one cue: shuffled across scenes, or its mean.")
@click.option("--option", "options", multiple=True,
              help="Composite option KEY=VALUE, e.g. first_rule=epsilon, conv_rule=epsilon.")
@click.option("--out", type=OutDir(), default="xai-loc-results/cuenet", show_default=True)
@click.pass_context
def binaural_cuenet_probe(ctx, train_per_utterance, test_per_utterance, seed, data, checkpoint, examples, ablation,
                          options, out) -> None:
    """LRP relevance per cue (ITD, ILD, IC) and band with the attention weights, and the cue
    ablation, on the held-out scenes; writes cue_relevance.nc, cue_reliance.nc,
    cue_ablation.nc and cue_probe.png."""
    from xai_loc.experiments.cue_probe import run_cue_probe
    from xai_loc.features.binaural_cues import simulate_cue_scenes
    from xai_loc.models.zoo import pretrained_dir
    from xai_loc.plots.redraw import draw

    _setup(ctx)
    test = simulate_cue_scenes(_cue_spec(train_per_utterance, test_per_utterance, seed), "test", root=data,
                               progress=True)
    model = checkpoint or str(pretrained_dir() / "cuenet_default.safetensors")
    result = run_cue_probe(model, test, out, max_examples=examples, ablation=ablation, **_parse_options(options))
    paths = list(result["paths"].values())
    for path in paths + draw(paths):
        click.echo(str(path))


@binaural.group("bast")
def binaural_bast() -> None:
    """BAST binaural spectrogram transformer (Kuang et al.): train, table, explain.

    \b
    Train:   xai-loc --threads 1 binaural bast train    (defaults recreate pretrained/bast_default)
    Table:   xai-loc binaural bast table      (integration x weight sharing, angular error, relevance by ear)
    Explain: xai-loc binaural bast explain    (AttnLRP, Integrated Gradients, attention rollout)
    """


#: Options of BAST's scene set (:class:`~xai_loc.data.bast_scenes.BastSceneSpec`).
_bast_scene_options = _with_options(
    click.option("--n-sounds", type=Int(1), default=120, show_default=True,
                 help="Distinct sounds, each rendered at the 36 azimuths; 20 % held out for test."),
    _SCENE_SEED,
    _DATA_ROOT,
)


def _bast_spec(n_sounds, seed):
    from xai_loc.data.bast_scenes import BastSceneSpec

    return BastSceneSpec(name=f"bast-{n_sounds}" if seed == 0 else f"bast-{n_sounds}-s{seed}", n_sounds=n_sounds,
                         seed=seed)


@binaural_bast.command("train")
@_bast_scene_options
@click.option("--integration", type=click.Choice(("ADD", "SUB", "CONCAT")), default="SUB", show_default=True)
@click.option("--share-weights", is_flag=True, help="One encoder for both ears (SP); default separate (NSP).")
@click.option("--loss", type=click.Choice(("MSE", "AD", "MIX")), default="MIX", show_default=True)
@click.option("--epochs", type=Int(1), default=18, show_default=True)
@click.option("--batch-size", type=Int(1), default=32, show_default=True)
@click.option("--lr", type=POSITIVE, default=1e-3, show_default=True)
@click.option("--dim", type=Int(1), default=64, show_default=True, help="Token width.")
@click.option("--depth", type=Int(1), default=2, show_default=True, help="Blocks per encoder.")
@click.option("--heads", type=Int(1), default=4, show_default=True)
@click.option("--max-minutes", type=POSITIVE, default=15.0, show_default=True, help="CPU-time budget of the epochs.")
@click.option("--out", type=OutFile(), default=None,
              help="Checkpoint [default: <data>/runs/bast_<variant>.safetensors].")
@click.pass_context
def binaural_bast_train(ctx, n_sounds, seed, data, integration, share_weights, loss, epochs, batch_size, lr, dim, depth,
                        heads, max_minutes, out) -> None:
    """Render the KEMAR scenes (if absent), train one BAST variant and score it on held-out sounds
    (mean angular error, within 5 and 10 degrees, front-back confusions)."""
    from pathlib import Path

    from xai_loc.data.store import default_root
    from xai_loc.models.bast import fit_bast
    from xai_loc.models.zoo import describe_test_metrics

    _setup(ctx)
    variant = f"{'SP' if share_weights else 'NSP'}-{integration}-{loss}"
    out = Path(out) if out else Path(data or default_root()) / "runs" / f"bast_{variant}_s{seed}.safetensors"
    path, card = fit_bast(_bast_spec(n_sounds, seed), out, root=data, integration=integration,
                          share_weights=share_weights, loss=loss, epochs=epochs, batch_size=batch_size, lr=lr,
                          dim=dim, depth=depth, heads=heads, seed=seed, max_minutes=max_minutes,
                          progress=True)
    click.echo(f"{path}: {describe_test_metrics(card['metrics']['test'], 'bast')}")


@binaural_bast.command("table")
@_bast_scene_options
@click.option("--loss", type=click.Choice(("MSE", "AD", "MIX")), default="MIX", show_default=True)
@click.option("--epochs", type=Int(1), default=8, show_default=True)
@click.option("--out", type=OutDir(), default="xai-loc-results/bast", show_default=True)
@click.pass_context
def binaural_bast_table(ctx, n_sounds, seed, data, loss, epochs, out) -> None:
    """Train and score the six integration (ADD, SUB, CONCAT) x weight-sharing (SP, NSP) variants
    and explain mirror-image scenes with AttnLRP; writes bast_table.nc and bast_table.md.
    Shared weights with ADD are exactly ear-swap symmetric and cannot tell left from right."""
    from xai_loc.experiments.bast_table import markdown_table, run_bast_table

    _setup(ctx)
    table = run_bast_table(out, spec=_bast_spec(n_sounds, seed), root=data, loss=loss, epochs=epochs, seed=seed,
                           progress=True)
    click.echo(markdown_table(table))


@binaural_bast.command("explain")
@_bast_scene_options
@click.option("--checkpoint", type=InputFile(), default=None,
              help="A BAST checkpoint [default: the shipped pretrained/bast_default.safetensors].")
@click.option("--target", default="sin", show_default=True,
              help="Output explained: sin (lateral component), cos, prediction, truth or an azimuth in degrees.")
@click.option("--steps", type=Int(1), default=32, show_default=True, help="Integrated Gradients steps.")
@click.option("--out", type=OutDir(), default="xai-loc-results/bast", show_default=True)
@click.pass_context
def binaural_bast_explain(ctx, n_sounds, seed, data, checkpoint, target, steps, out) -> None:
    """Relevance of mirror-image test scenes (a sound at a and at 360 - a) by AttnLRP, Integrated
    Gradients and attention rollout, per ear and frequency; writes relevance_view.nc."""
    from pathlib import Path

    from xai_loc.data.bast_scenes import load_bast_scenes
    from xai_loc.experiments.bast_table import mirror_relevance
    from xai_loc.io import write_dataset_atomic
    from xai_loc.models.zoo import pretrained_dir

    _setup(ctx)
    scenes = load_bast_scenes(_bast_spec(n_sounds, seed), "test", root=data, progress=True)
    model = checkpoint or str(pretrained_dir() / "bast_default.safetensors")
    try:
        target = float(target)
    except ValueError:
        pass
    view = mirror_relevance(model, scenes, target=target, n_steps=steps)
    click.echo(str(write_dataset_atomic(view, Path(out) / "relevance_view.nc")))


@binaural.command("explain")
@click.argument("checkpoint", type=InputFile())
@click.argument("inputs", type=click.Path(exists=True))
@click.option("--method", default=None, help="BAST only: attn_lrp (default), integrated_gradients, attention_rollout.")
@click.option("--target", default=None,
              help="Explained output: cochcnn and cuenet: prediction (default) or a class index; bast: prediction, "
                   "sin, cos or an azimuth in degrees; tfcnn explains its azimuth output (no target).")
@click.option("--option", "options", multiple=True, help="Composite option KEY=VALUE, e.g. conv_rule=epsilon.")
@click.option("--examples", type=Int(1), default=None, help="Only the first N examples (windows) of INPUTS.")
@click.option("--out", type=OutDir(), default="xai-loc-results/binaural-relevance",
              show_default=True)
@click.pass_context
def binaural_explain(ctx, checkpoint, inputs, method, target, options, examples, out) -> None:
    """Explain any binaural localizer (cochcnn, tfcnn, cuenet, bast) on INPUTS: a stereo sound
    file at the model's rate (cut into windows of its input length) or a store with
    waveforms (example, ear, time). Writes one netCDF file of labelled relevance per level
    (waveform, cochleagram, cues or spectrogram) with provenance attrs."""
    from xai_loc.explain.binaural import EXPLAINERS, explain_ears, read_ear_signals, write_ear_relevance
    from xai_loc.models import load_model, read_card

    _setup(ctx)
    arch = read_card(checkpoint).get("architecture")
    if arch not in EXPLAINERS:
        raise InputError(f"checkpoint {checkpoint} is a {arch} model; binaural explain takes {', '.join(EXPLAINERS)} "
                         "(multichannel models: xai-loc explain)")
    model = load_model(checkpoint)
    waveforms = read_ear_signals(inputs, model.fs, model.n_samples)[:examples]
    extra = _parse_options(options)
    if method is not None:
        extra["method"] = method
    if target is not None:
        extra["target"] = _parse_options((f"target={target}",))["target"]
    for path in write_ear_relevance(explain_ears(checkpoint, waveforms, **extra), out):
        click.echo(str(path))
