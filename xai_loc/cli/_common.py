"""Shared pieces of the command line: choices, option sets, one-line user errors and the helpers that
resolve conditions, checkpoints and options. Light imports only (``--help`` must not import torch)."""
from __future__ import annotations

import contextlib
import errno
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import click
from click.core import ParameterSource

from xai_loc.cli_params import (
    MAX_BATCH,
    SEED,
    SNR,
    T60,
    DataRoot,
    Device,
    InputDir,
    InputFile,
    Int,
    Number,
    OutDir,
    data_root_default,
    option_name,
    parse_number,
    results_root_default,
)
from xai_loc.cluster import MAX_WORKERS
from xai_loc.errors import InputError
from xai_loc.runtime import parse_int

#: A positive finite number (rates, budgets, durations).
POSITIVE = Number(0, open_low=True)

#: RIR backends and modes offered on the command line (kept in sync with the registries by a test).
BACKEND_CHOICES = ("torch", "pyroomacoustics", "gpurir")
RIR_MODE_CHOICES = ("ism", "hybrid")
CONVENTION_CHOICES = ("gpurir", "pyroomacoustics")
SPLIT_CHOICES = ("train", "val", "test", "all")
#: The built-in names that ``--help`` lists for the registries (a test keeps them in sync); a value is checked
#: against the registry itself (:class:`RegistryChoice`), so plug-ins are taken too.
MODEL_CHOICES = ("loccnn", "samplecnn")
METHOD_CHOICES = ("lrp", "saliency", "input_x_gradient", "integrated_gradients", "deeplift", "gradient_shap",
                  "occlusion")
TARGET_CHOICES = ("truth", "prediction", "x", "y", "z", "error", "contrast")
#: Every registered target (the commands that score any family's store), by output kind.
ANY_TARGET_CHOICES = (*TARGET_CHOICES, "class_logit", "true_class_logit", "class_contrast", "class_probability",
                      "true_class_probability", "class_log_odds", "true_class_log_odds", "direction", "true_direction",
                      "azimuth", "elevation", "toward_truth", "angular_error")
FIRST_RULE_CHOICES = ("wsquare", "flat", "zplus", "epsilon", "gamma", "zbox")
COMPOSITE_CHOICES = ("paper", "paper-samplecnn-reversed-gate", "epsilon", "epsilon_plus_flat",
                     "epsilon_alpha2_beta1", "epsilon_gamma_box", "cochcnn", "tfcnn", "cuenet")


class RegistryChoice(click.Choice):
    """A choice of registered names: ``--help`` lists ``shown`` (the built-in names, without importing the
    registry, so that help stays light); a value is checked against ``registered()``, imported on use, so that
    plug-ins registered through entry points are taken too. ``extra``: names beside the registry's (``all``)."""

    def __init__(self, shown: Sequence[str], registered: Callable[[], Iterable[str]], extra: Sequence[str] = ()):
        super().__init__((*shown, *extra))
        self.registered, self.extra = registered, tuple(extra)

    def convert(self, value, param, ctx):
        allowed = (*self.registered(), *self.extra)
        if value in allowed:
            return value
        raise InputError(f"{option_name(param, ctx, value)} {value!r} is not allowed; use one of {', '.join(allowed)}")


class PassedAs(click.Option):
    """An option whose value the command passes to the library as keyword ``passed_as`` (``--probe-seed``: the
    probe's ``seed``): :func:`command_options` refuses an ``--option`` of that name as set by this flag."""

    def __init__(self, *args, passed_as: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.passed_as = passed_as


def position_models() -> list[str]:
    """Registered localizers of source positions (the multichannel families and position plug-ins)."""
    from xai_loc.models import MODELS

    return [name for name, cls in MODELS.items() if cls.output_kind == "position"]


def position_methods() -> list[str]:
    """Registered attribution methods offered for localizers of source positions: those that explain one of them
    (:func:`~xai_loc.explain.methods.methods_for`; not AttnLRP, which explains BAST)."""
    from xai_loc.explain.methods import METHODS, methods_for

    offered = {name for arch in position_models() for name in methods_for(arch)}
    return [name for name in METHODS if name in offered]


def _composites() -> list[str]:
    from xai_loc.explain import COMPOSITES

    return list(COMPOSITES)


def _position_targets() -> list[str]:
    from xai_loc.explain.targets import targets_for

    return targets_for("position")


def _any_targets() -> list[str]:
    from xai_loc.explain.targets import TARGETS

    return list(TARGETS)


MODEL = RegistryChoice(MODEL_CHOICES, position_models)
METHOD = RegistryChoice(METHOD_CHOICES, position_methods)
COMPOSITE = RegistryChoice(COMPOSITE_CHOICES, _composites)
POSITION_TARGET = RegistryChoice(TARGET_CHOICES, _position_targets)
ANY_TARGET = RegistryChoice(ANY_TARGET_CHOICES, _any_targets)


def device_option(purpose: str = ""):
    """``--device`` (cpu, cuda or cuda:N, checked against the machine); ``purpose`` adds what runs there."""
    return click.option("--device", type=Device(), default="cpu", show_default=True,
                        help=f"cpu, cuda or cuda:N{f' ({purpose})' if purpose else ''}.")


def data_option(purpose: str = "", *aliases: str, read_only: bool = False):
    """``--data`` (and ``aliases``): the data root, ``$XAI_LOC_DATA`` or ``./xai-loc-data``; ``purpose`` says what
    is kept there; ``read_only``: an existing root needs no write access (:class:`DataRoot`)."""
    said = f"; {purpose}" if purpose else ""
    return click.option("--data", *aliases, "data", type=DataRoot() if read_only else OutDir(),
                        default=data_root_default, envvar="XAI_LOC_DATA",
                        help=f"Data root{said} [default: $XAI_LOC_DATA or ./xai-loc-data].")


def results_out_option(folder: str, help: str = ""):
    """``--out`` defaulting to ``folder`` under the results root (:func:`~xai_loc.cli_params.results_root_default`,
    read when the command runs)."""
    return click.option("--out", type=OutDir(), default=lambda: str(Path(results_root_default(), folder)),
                        show_default=f"$XAI_LOC_RESULTS/{folder} or ./xai-loc-results/{folder}", help=help or None)


def sources_option(of: str = "the split", minimum: int = 1):
    """``--sources N``: a seeded spread of ``N`` sources over ``of``, ``N >= minimum`` (what the command needs)."""
    return click.option("--sources", "n_sources", type=Int(minimum), default=None,
                        help=f"Only N sources, a seeded spread over {of} (N >= its size: all).")


#: The variable naming the folder of the shipped checkpoints (:data:`xai_loc.models.zoo.PRETRAINED_ENV`, which
#: imports torch; a test keeps them equal).
PRETRAINED_ENV = "XAI_LOC_PRETRAINED"


def pretrained_option(*names: str, help: str = "Checkpoint folder"):  # noqa: A002 - click's word
    """A checkpoint folder option (``names``), ``$XAI_LOC_PRETRAINED`` or the shipped ``pretrained/``."""
    return click.option(*names, type=InputDir(), default=None, envvar=PRETRAINED_ENV, show_envvar=True,
                        help=f"{help} [default: ${PRETRAINED_ENV} or the shipped pretrained/].")


#: The simulation convention of every command that simulates.
CONVENTION_OPTION = click.option(
    "--convention", type=click.Choice(CONVENTION_CHOICES), default=None,
    help="Simulation convention of the data: gpurir (gpuRIR's, as the paper) or pyroomacoustics "
         "[default: the scene's; gpurir for the paper scene].")


#: File-system errors that come from the user's paths or machine, not from a bug: reported in
#: one line like an InputError (disk full, permissions, a path below a file, ...).
USER_OS_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EISDIR,
                   errno.ENOENT, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP}


#: The usage error that click >= 8.2 raises to print a group's help when no command is given (8.1 prints it itself).
NO_ARGS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


#: Where a command records its ``--batch-size`` for the message about a GPU out of memory (click's ``ctx.meta``
#: is shared by a command's context and its group's).
BATCH_SIZE_KEY = "xai_loc.batch_size"


def out_of_memory_message(batch_size: int | None) -> str:
    """What to do about a GPU out of memory at ``batch_size`` (None: the command has no batch size)."""
    if batch_size is None:
        return "GPU out of memory; free GPU memory (other processes?) or use --device cpu"
    if batch_size <= 1:
        return "GPU out of memory at --batch-size 1; use a GPU with more free memory or --device cpu"
    return f"GPU out of memory at --batch-size {batch_size}; lower it (e.g. --batch-size {batch_size // 2})"


def _gpu_out_of_memory(err: BaseException) -> bool:
    torch = sys.modules.get("torch")  # not imported: not a torch error (and --help stays light)
    return torch is not None and isinstance(err, torch.cuda.OutOfMemoryError)


def _sound_file_message(err: BaseException) -> str | None:
    """One line for soundfile's libsndfile error (a sound file that cannot be written or read: a full disk says
    only "System error."), naming the file soundfile had open where its message does not; None for other errors."""
    sf = sys.modules.get("soundfile")  # not imported: not a soundfile error (it may not be installed)
    if sf is None or not isinstance(err, sf.LibsndfileError):
        return None
    names = [frame.f_locals["self"].name for frame, _ in traceback.walk_tb(err.__traceback__)
             if isinstance(frame.f_locals.get("self"), sf.SoundFile)]
    where = f" {str(names[-1])!r}" if names and not err.prefix else ""
    return f"sound file{where}: {err}"


@contextlib.contextmanager
def user_errors(meta: dict | None = None):
    """Turn user errors (InputError, click's usage errors, the file-system errors above, soundfile's errors, a GPU
    out of memory, here or on a dask worker) into one line on stderr and exit code 2; ``meta`` is the click context's,
    holding the batch size. A group called without a command still prints its help."""
    try:
        yield
    except InputError as err:
        message = str(err)
    except click.UsageError as err:  # a bad choice, a missing or unknown option, argument or command
        if isinstance(err, NO_ARGS_HELP):
            raise
        message = err.format_message()
    except OSError as err:
        if err.errno not in USER_OS_ERRORS:
            raise
        where = f" {str(err.filename)!r}" if err.filename else ""
        message = f"cannot use{where}: {err.strerror or err}"
    except RuntimeError as err:
        message = _sound_file_message(err)
        if message is None:
            if not _gpu_out_of_memory(err):
                raise
            message = out_of_memory_message((meta or {}).get(BATCH_SIZE_KEY))
    else:
        return
    message = " ".join(message.split())  # one line, whatever the error's text holds (HDF5's: newlines)
    if "zarr" in sys.modules:  # a damaged chunk may have stopped a batch of reads midway
        from xai_loc.data.integrity import settle_reads

        settle_reads()
    click.echo(f"Error: {message}", err=True)
    raise click.exceptions.Exit(2)


class Command(click.Command):
    """A command that sets the process up for CPU work (:func:`~xai_loc.runtime.configure_cpu`: the root's
    ``--threads`` or ``XAI_LOC_THREADS``, freed memory kept) once its own options are read, so that every
    command runs with them and ``--help`` imports no torch."""

    def invoke(self, ctx: click.Context):
        from xai_loc.runtime import configure_cpu

        configure_cpu(ctx.find_root().params.get("threads"))
        return super().invoke(ctx)


def _terminated(signum, frame):
    """SIGTERM's handler in the command line: end as ``sys.exit`` would, with the shell's code for it."""
    raise SystemExit(128 + signum)


class Group(click.Group):
    """A click group that reports user errors in one line with exit code 2 (its own options, click's usage errors
    and its commands' parsing included: :func:`user_errors`); its commands are :class:`Command`, its sub-groups of
    this class."""

    command_class = Command
    group_class = type

    def main(self, *args, **kwargs):
        """Run the command line; SIGTERM raises ``SystemExit`` (exit code 143) in it, so that what a killed
        command was writing is cleaned up as after an error (temporary files of atomic writes removed)."""
        if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
            return super().main(*args, **kwargs)
        previous = signal.signal(signal.SIGTERM, _terminated)
        try:
            return super().main(*args, **kwargs)
        finally:
            if previous is not None:  # None: a handler not set from Python, which cannot be restored
                signal.signal(signal.SIGTERM, previous)

    def make_context(self, info_name, args, parent=None, **extra):
        with user_errors():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context):
        with user_errors(ctx.meta):
            return super().invoke(ctx)


#: Arguments that commands pass to the library beside the ``--option`` values (never an option of a method,
#: composite or target): an ``--option`` of one of these names is refused in one line.
SET_BY_COMMAND = ("model", "models", "data", "out_dir", "mean_input", "train_mean", "progress", "client", "timing",
                  "provenance", "relevance", "randomized_baseline", "randomized_seed", "n_tokens", "n_examples",
                  "max_examples")
ITSELF = "the command itself"


def parse_options(items: tuple[str, ...], reserved: Mapping[str, str] | None = None) -> dict:
    """``("epsilon=1e-6", "first_rule=flat", "abs=false", "reference=1.5,2,1")`` ->
    ``{"epsilon": 1e-06, "first_rule": "flat", "abs": False, "reference": (1.5, 2.0, 1.0)}``: numbers,
    ``true``/``false`` (any case) as booleans, comma-separated numbers as a tuple, anything else as text.
    ``reserved``: keys the command sets itself -> how (its flag), refused in one line."""
    reserved = reserved or {}
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InputError(f"option {item!r} is not allowed; write KEY=VALUE, e.g. epsilon=1e-6")
        if key in reserved:
            how = reserved[key]
            raise InputError(f"option {key!r} is set by {how}; {'leave it out' if how == ITSELF else 'use that'}")
        if key in out:
            raise InputError(f"option {key!r} is given twice; give each --option once")
        out[key] = _option_value(raw)
    return out


def option_names(method: str | None, composite: str | None = None, targets: Sequence[str] = ()) -> list[str] | None:
    """The options ``method`` (with ``composite``, where it uses one) and ``targets`` take
    (:func:`~xai_loc.explain.attribute.allowed_options`); None for a method outside
    :data:`~xai_loc.explain.METHODS` (BAST's own methods check their options themselves)."""
    from xai_loc.explain import METHODS
    from xai_loc.explain.attribute import allowed_options

    return allowed_options(method, composite, targets) if method in METHODS else None


def command_options(ctx: click.Context, method: str | None = "lrp", composite: str | None = None,
                    targets: Sequence[str] = (), allow: Sequence[str] = ()) -> dict:
    """The command's ``--option`` values (:func:`parse_options`), refusing the names of its own parameters and
    the library keywords its :class:`PassedAs` flags set (as set by that flag), :data:`SET_BY_COMMAND` but those
    in ``allow``, and every name that ``method``, ``composite`` and ``targets`` do not take (:func:`option_names`),
    before the library is called: a name that the library passes itself (``levels``, ``truth`` ...) would collide
    there."""
    reserved = dict.fromkeys(SET_BY_COMMAND, ITSELF)
    reserved.update({param.name: param.opts[0] if isinstance(param, click.Option) else param.human_readable_name
                     for param in ctx.command.params if param.name != "options"})
    reserved.update({param.passed_as: param.opts[0] for param in ctx.command.params if isinstance(param, PassedAs)})
    options = parse_options(ctx.params["options"], {k: v for k, v in reserved.items() if k not in allow})
    allowed = option_names(method, composite, targets)
    unknown = sorted(set(options) - set(options if allowed is None else allowed))
    if unknown:
        from xai_loc.explain import METHODS

        used = f" with composite {composite!r}" if composite is not None and METHODS[method].uses_composite else ""
        said = f" and target {targets[0]!r}" if len(targets) == 1 else " and the model's targets" if targets else ""
        raise InputError(f"option {unknown[0]!r} is not allowed for method {method!r}{used}{said}; "
                         f"allowed: {', '.join(allowed) or 'none'}")
    return options


def _option_value(raw: str):
    """One ``--option`` value as :func:`parse_options` reads it."""
    if raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    for cast in (parse_int, parse_number):  # ASCII digits: '0_25' stays text, refused by the option's check
        try:
            return cast(raw)
        except ValueError:
            continue
    parts = raw.strip("()[] ").split(",")
    if len(parts) > 1:
        try:
            return tuple(parse_number(part) for part in parts)
        except ValueError:
            pass
    return raw


def position_card(checkpoint: str) -> dict:
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


def family_composite(arch: str) -> str | None:
    """The LRP composite registered for the family of architecture ``arch`` (None: the family has none)."""
    from xai_loc.models.families import family_of

    return family_of(arch).composite


def family_checkpoint(checkpoint: str | None, arch: str) -> str:
    """``checkpoint``, or the shipped ``<arch>_default`` one, checked to hold an ``arch`` model before any
    scene is rendered (one line naming what it holds instead)."""
    from xai_loc.models import read_card
    from xai_loc.models.zoo import pretrained_dir

    if checkpoint is None:
        return str(pretrained_dir() / f"{arch}_default.safetensors")
    held = read_card(checkpoint).get("architecture")
    if held != arch:
        raise InputError(f"checkpoint {checkpoint} is a {held!r} model; this command takes a {arch!r} checkpoint")
    return checkpoint


def resolve_condition(t60: float | None, snr: float | None, checkpoint: str | None) -> tuple[float, float]:
    """The condition to run: ``--t60``/``--snr``, else the checkpoint card's; warns when they differ."""
    if checkpoint is None:
        if t60 is None or snr is None:
            raise InputError("--t60 and --snr are needed to pick the shipped checkpoint and data "
                             "(or give --checkpoint, whose card has its condition)")
        return t60, snr
    trained = position_card(checkpoint).get("condition") or {}
    t60 = trained.get("t60") if t60 is None else t60
    snr = trained.get("snr") if snr is None else snr
    if t60 is None or snr is None:
        raise InputError(f"checkpoint {checkpoint} records no condition; give --t60 and --snr")
    warn_condition(checkpoint, trained, t60, snr)
    return float(t60), float(snr)


def warn_condition(checkpoint: str, trained: dict, t60: float, snr: float) -> None:
    """Warn (stderr) where ``checkpoint``, trained in the card's ``trained`` condition, runs on another one."""
    if "t60" in trained and (trained.get("t60"), trained.get("snr")) != (t60, snr):
        click.echo(f"warning: {checkpoint} was trained at T60 {trained['t60']:g} s, SNR {trained.get('snr'):g} dB; "
                   f"running it on T60 {t60:g} s, SNR {snr:g} dB", err=True)


def _cards(models) -> list[tuple[str, dict]]:
    """``(path, card)`` of each checkpoint of ``models``: a :class:`~xai_loc.experiments.modelset.ModelSet`
    (its cards; modules have none) or checkpoint paths."""
    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.models import read_card

    if isinstance(models, ModelSet):
        return [(str(models.path(name)), models.card(name)) for name in models if models.card(name) is not None]
    return [(str(path), read_card(path)) for path in models]


def warn_convention(models, convention: str) -> None:
    """Warn (stderr) about each checkpoint trained on data of another simulation convention.

    ``models``: a :class:`~xai_loc.experiments.modelset.ModelSet` (its cards) or checkpoint paths.
    """
    from xai_loc.models.zoo import convention_warning

    for where, card in _cards(models):
        warning = convention_warning(card, convention, where)
        if warning:
            click.echo(warning, err=True)


def check_recordings(models, fs: float | None, mics, where: str) -> None:
    """Refuse (one line) data of ``where`` sampled at ``fs`` (Hz) by microphones at ``mics`` ``(mic, xyz)`` unless
    every checkpoint of ``models`` (as :func:`warn_convention` takes them) was trained on such data
    (:func:`~xai_loc.models.evaluation.check_recording`); before any data is simulated."""
    from xai_loc.models.evaluation import check_recording

    for path, card in _cards(models):
        check_recording(card, fs, mics, where, f"checkpoint {path}")


def check_explanation(models, method: str, composite: str, target: str | None, options: dict) -> None:
    """Refuse a bad method, composite, target or option before any data is simulated.

    ``models``: a :class:`~xai_loc.experiments.modelset.ModelSet`, or a mapping or list of checkpoint
    paths or modules (loaded here). ``target`` None: each model's default
    (:data:`~xai_loc.experiments.scored.EXPLAINED`).
    """
    import numpy as np

    from xai_loc.experiments.modelset import ModelSet
    from xai_loc.experiments.scored import default_target

    models = ModelSet.of(models)
    for name in models:
        models.explainer(name, method=method, composite=composite, target=target or default_target(models[name]),
                         mean_input=np.zeros(1), train_mean=np.zeros(3), **options)


def checkpoint_for(arch: str, t60: float, snr: float, checkpoint: str | None) -> str:
    """An explicit checkpoint, or the shipped one of the architecture and condition."""
    from xai_loc.models.zoo import shipped_checkpoint

    return checkpoint if checkpoint else str(shipped_checkpoint(arch, t60, snr))


OPTION_HELP = ("Method, composite or target option KEY=VALUE (repeatable), e.g. first_rule=flat, epsilon=1e-6, "
                "maxpool=smooth, n_steps=32, abs=false, reference=zero or reference=1.5,5.5,1.2 (x, y, z).")


#: Commands that keep TF32 on cuda: training trades the last bits for speed and records the setting in its card.
TF32_COMMANDS = frozenset({"train"})


def setup(ctx: click.Context) -> None:
    """Record the command's --batch-size for the message about a GPU out of memory; check --model against
    --checkpoint and --composite against --method; turn TF32 off for a command on cuda other than
    :data:`TF32_COMMANDS`. (Threads and memory are set for every command by :class:`Command`.)"""
    from xai_loc.runtime import full_float32

    ctx.meta[BATCH_SIZE_KEY] = ctx.params.get("batch_size")
    arch, checkpoint = ctx.params.get("arch"), ctx.params.get("checkpoint")
    if checkpoint and arch not in (None, "all") and ctx.get_parameter_source("arch") is not ParameterSource.DEFAULT:
        from xai_loc.models import read_card

        held = read_card(checkpoint).get("architecture")
        if held != arch:
            raise InputError(f"--model {arch} does not match --checkpoint {checkpoint}, a {held!r} model; "
                             "leave --model out with --checkpoint")
    method = ctx.params.get("method")
    if method not in (None, "lrp") and "composite" in ctx.params and \
            ctx.get_parameter_source("composite") is not ParameterSource.DEFAULT:
        raise InputError(f"--composite {ctx.params['composite']} is not allowed with --method {method}; "
                         "composites are LRP's (--method lrp)")
    if ctx.command.name not in TF32_COMMANDS:  # so that cuda results match the CPU's within the documented tolerances
        full_float32(str(ctx.params.get("device") or "cpu"))


def publish_results(out: str | Path, writes: Mapping[str, bool], run: Callable[[Path], Iterable[Path]]) -> list[Path]:
    """Run a command's experiment so that its result files and their figures reach ``out`` all or none.

    Parameters
    ----------
    out
        The results folder (``--out``).
    writes
        File name -> whether the run writes it (True) or removes an earlier run's (False: a part the run leaves
        out, which would be drawn and reported beside the new results); a registered result's figures
        (:data:`~xai_loc.plots.redraw.DRAWERS`) go with it.
    run
        ``run(staging)`` does the work, writing the result files into the folder ``staging``; returns them.

    Returns
    -------
    list of pathlib.Path
        The files written into ``out``, results first.

    Every path is checked (:func:`~xai_loc.io.check_file_path`) before ``run`` is called; the results are drawn
    beside each other in ``staging`` (never beside an earlier run's files) and only then put in place together
    (:func:`~xai_loc.io.write_files_atomic`), so a failure anywhere leaves ``out`` as it was.
    """
    import shutil
    import tempfile
    from functools import partial

    from xai_loc.experiments.registry import result_for_file
    from xai_loc.io import check_file_path, write_files_atomic
    from xai_loc.plots.redraw import DRAWERS, draw

    out = Path(out)
    files = {}
    for name, written in writes.items():
        result = result_for_file(name)
        files.update(dict.fromkeys((out / name, *(DRAWERS[result.name].files(out) if result else ())), written))
    for path, written in files.items():
        if written:
            check_file_path(path)
        elif path.is_dir():
            raise InputError(f"cannot remove an earlier run's {path.name} from --out: {str(path)!r} is a folder; "
                             "remove it or choose another --out")
    with tempfile.TemporaryDirectory(prefix="xai-loc-results-") as staging:
        staged = list(run(Path(staging)))
        staged += draw(staged)  # drawn beside the staged results only: an earlier run's files are not drawn in
        published = write_files_atomic({out / path.name: partial(shutil.copyfile, path) for path in staged})
    for path, written in files.items():
        if not written:
            path.unlink(missing_ok=True)
    return published


def with_options(*options):
    """A decorator applying click ``options`` so that ``--help`` lists them in the given order."""
    def decorator(command):
        for option in reversed(options):
            command = option(command)
        return command

    return decorator


#: Options every binaural scene set takes.
SCENE_SEED = click.option("--seed", type=SEED, default=0, show_default=True,
                          help="Seeds the scenes (the held-out sounds or utterances, every rendering) and, for train, "
                               "the training.")
DATA_ROOT = data_option()


class SchedulerAddress(click.ParamType):
    """A dask scheduler address ``SCHEME://HOST:PORT`` (:func:`xai_loc.cluster.check_scheduler`)."""

    name = "address"

    def convert(self, value, param, ctx):
        from xai_loc.cluster import check_scheduler

        return check_scheduler(value, param.opts[0] if param is not None else "scheduler")


#: Where the work of simulate, explain, perturb, faithfulness, sanity and components runs: here, on a running dask
#: scheduler, or on a local dask cluster (:mod:`xai_loc.cluster`).
cluster_options = with_options(
    click.option("--scheduler", type=SchedulerAddress(), default=None,
                 help="Spread the work over the workers of this running dask scheduler, e.g. tcp://10.0.0.5:8786 "
                      "(they must see the same paths); the result is that of one process run with --threads 1. "
                      "With --device cuda this process needs the GPU too.",
                 metavar="ADDRESS"),
    click.option("--workers", type=Int(1, MAX_WORKERS), default=None,
                 help="Spread the work over a local dask cluster of N worker processes (one thread each).",
                 metavar="N"),
)


def condition_options(every: bool = True) -> tuple:
    """Which models: the condition (shipped checkpoints) or one checkpoint; ``--model all`` (the default) where
    ``every``, else one architecture (SampleCNN by default)."""
    condition = "Condition: shipped checkpoints and data [default with --checkpoint: its card's]."
    plugins = "registered plug-in localizers too"
    model = click.option("--model", "arch", type=RegistryChoice(MODEL_CHOICES, position_models, ("all",)),
                         default="all", show_default=True,
                         help=f"Architecture ({plugins}); all: each one with a shipped checkpoint of the condition.") \
        if every else click.option("--model", "arch", type=MODEL, default="samplecnn", show_default=True,
                                   help=f"Architecture ({plugins}).")
    return (click.option("--t60", type=T60, default=None, help=condition),
            click.option("--snr", type=SNR, default=None, help=condition),
            model,
            click.option("--checkpoint", type=InputFile(), default=None, help="Any xai-loc checkpoint."))


CONDITION_OPTIONS = condition_options()
TARGET_OPTION = click.option(
    "--target", type=POSITION_TARGET, default="truth", show_default=True,
    help="truth: seed = true (x, y, z), the paper's choice; prediction; x|y|z: one coordinate; error: prediction - "
         "truth; contrast: prediction - reference prediction.")
RANDOMIZED_OPTION = click.option(
    "--randomized/--no-randomized", default=True, show_default=True,
    help="Also score the relevance of a randomized copy of each model (sanity baseline).")
#: How relevance is computed: one method, its composite and options.
EXPLANATION_OPTIONS = (
    click.option("--method", type=METHOD, default="lrp", show_default=True,
                 help="Attribution method: lrp (zennit, with --composite) or a gradient or perturbation method of "
                      "captum."),
    click.option("--composite", type=COMPOSITE, default="paper", show_default=True,
                 help="LRP composite (method lrp only)."),
    TARGET_OPTION,
    click.option("--option", "options", multiple=True, help=OPTION_HELP),
)
#: Data, output, seed and device of an experiment on the test split.
RUN_OPTIONS = (
    sources_option("the test split"),
    click.option("--seed", type=SEED, default=0, show_default=True,
                 help="Seeds the run's draws: random orderings, noise fills, randomized model copies, bootstrap "
                      "intervals and the method's own (gradient_shap); not the test split's data."),
    data_option("the test split is simulated there if absent", read_only=True),
    click.option("--out", type=OutDir(), default=None,
                 help="Results folder [default: RESULTS/t60-T_snr-S; with --checkpoint RESULTS/MODEL/t60-T_snr-S, "
                      "MODEL its name; RESULTS is $XAI_LOC_RESULTS or ./xai-loc-results]."),
    click.option("--batch-size", type=Int(1, MAX_BATCH), default=16, show_default=True,
                 help="Windows per explanation and forward pass."),
    device_option(),
    CONVENTION_OPTION,
)

#: The options perturb and tdoa share: condition, models, relevance method, data and output.
experiment_options = with_options(*CONDITION_OPTIONS, *EXPLANATION_OPTIONS, RANDOMIZED_OPTION, *RUN_OPTIONS)

#: Any family's test store, scored instead of the simulated paper scene (faithfulness, sanity).
STORE_OPTIONS = (
    click.option("--store", type=InputDir(), default=None,
                 help="Score this finished test store instead of simulating the paper scene's test split: any "
                      "family's (dataset, binaural, TF-CNN, BAST or cue-scene store), with a --checkpoint of that "
                      "family (a dataset store alone: the shipped models of the condition it records); --convention "
                      "does not apply; results in RESULTS/MODEL/STORE unless --out is given [default with "
                      "a binaural --checkpoint: its own held-out test split, rendered whole under --data from the "
                      "spec its card records]."),
    click.option("--target", type=ANY_TARGET, default=None,
                 help="What is explained [default: what speaks for the right answer: truth (positions), "
                      "true_class_log_odds (classes), true_direction ([cos, sin]), toward_truth (azimuths)]."),
)
#: The options of components: those of perturb less the one method (it takes --methods).
components_options = with_options(*CONDITION_OPTIONS, TARGET_OPTION, RANDOMIZED_OPTION, *RUN_OPTIONS)
#: The options of the faithfulness suite: any family's store, --methods instead of one method.
suite_options = with_options(*CONDITION_OPTIONS, *STORE_OPTIONS, RANDOMIZED_OPTION, *RUN_OPTIONS)
#: The options of sanity: no --randomized (the randomization is the check itself).
sanity_options = with_options(*CONDITION_OPTIONS, *STORE_OPTIONS, *RUN_OPTIONS)


def csv_list(text: str, cast=str, what: str = "list") -> list:
    """``"a,b"`` -> ``["a", "b"]``; an empty list or an empty item (``"0,10,"``: a value left out?) is an error, as
    ``--pairs`` and ``--mics`` refuse one. ``float`` items are read as :func:`~xai_loc.cli_params.parse_number`
    reads them (ASCII digits, no underscores)."""
    read = parse_number if cast is float else cast
    items = [v.strip() for v in text.split(",")]
    if not any(items):
        raise InputError(f"{what} {text!r} is empty; give at least one comma-separated value")
    if not all(items):
        raise InputError(f"{what} {text!r} has an empty item; give values separated by single commas")
    try:
        return [read(v) for v in items]
    except ValueError:
        raise InputError(f"{what} {text!r} is not a comma-separated list of {cast.__name__} values") from None


def named_checkpoint(checkpoint: str, card: dict) -> dict[str, str]:
    """``{name: checkpoint}``: the file's stem, prefixed with the card's architecture unless it starts with it."""
    stem, arch = Path(checkpoint).stem, card["architecture"]
    return {stem if stem.startswith(arch) else f"{arch}-{stem}": checkpoint}


def models_for(arch: str, t60: float, snr: float, checkpoint: str | None) -> dict[str, str]:
    """``{name: checkpoint}`` for --model loccnn|samplecnn|all (shipped ones) or --checkpoint."""
    from xai_loc.models.zoo import checkpoint_name as checkpoint_file

    if checkpoint:
        return named_checkpoint(checkpoint, position_card(checkpoint))
    if arch != "all":
        return {arch: checkpoint_for(arch, t60, snr, None)}
    from xai_loc.models.zoo import pretrained_dir

    archs = position_models()
    found = {a: str(p) for a in archs if (p := pretrained_dir() / checkpoint_file(a, t60, snr)).is_file()}
    return found or {archs[0]: checkpoint_for(archs[0], t60, snr, None)}  # the latter raises
