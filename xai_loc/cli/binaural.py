"""The ``binaural`` group: HRTF scenes and the cochleagram CNN (simulate, train, cues) and ``binaural explain`` for
every binaural family; the other families add their subgroups (tfcnn, cuenet, bast)."""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from xai_loc.cli._common import (
    COMPOSITE,
    DATA_ROOT,
    POSITIVE,
    PassedAs,
    command_options,
    device_option,
    family_checkpoint,
    family_composite,
    parse_options,
    publish_results,
    results_out_option,
    setup,
    with_options,
)
from xai_loc.cli.root import main
from xai_loc.cli_params import (
    MAX_BATCH,
    SEED,
    SNR,
    InputFile,
    Int,
    Number,
    OutFile,
    option_name,
)
from xai_loc.errors import InputError


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


@dataclass(frozen=True)
class SceneOptions:
    """A family's scene options: how they make its data spec, and which of them pick its held-out data.

    Parameters
    ----------
    family
        The family (:data:`~xai_loc.models.families.FAMILIES`) whose checkpoints record the spec and whose
        renderer makes its stores.
    build
        ``build(base=None, **options) -> spec``: ``base`` (default: the family's default data) with
        the options that are not None applied, named as the family names its data.
    split
        The options (each also a field of the spec) that decide which sounds or utterances are
        held out for the test split.
    """

    family: str
    build: Callable[..., Any]
    split: tuple[str, ...]

    def names(self) -> list[str]:
        """The options ``build`` takes."""
        return [name for name in inspect.signature(self.build).parameters if name != "base"]

    def of(self, ctx: click.Context) -> Any:
        """The spec of the command's scene options (their defaults included)."""
        return self.build(**{name: ctx.params[name] for name in self.names()})

    def held_out(self, ctx: click.Context, checkpoint: str) -> Any:
        """The spec whose test split the command runs ``checkpoint`` on.

        Where the checkpoint's card records its data spec, that spec with the scene options given
        on the command line applied (the card's spec itself where they change nothing); else
        :meth:`of`.

        Raises
        ------
        InputError
            For an option of :attr:`split` given with another value than the card's: the test
            split of other data would overlap the checkpoint's training data; for a spec whose
            examples are not the checkpoint's input (samples per ear and rate, e.g. another
            ``--duration``): nothing could be run on them.
        """
        from xai_loc.models import read_card
        from xai_loc.models.families import FAMILIES

        flags = {param.name: param.opts[0] for param in ctx.command.params}
        base = FAMILIES[self.family].recorded_spec(read_card(checkpoint))
        if base is None:  # a card without its data spec
            return _fitting(self.of(ctx), checkpoint, flags)
        given = {name: ctx.params[name] for name in self.names()
                 if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)}
        for name in self.split:
            if name in given and _fields(self.build(base, **{name: given[name]})) != _fields(base):
                raise InputError(f"{flags[name]} {_shown(given[name])} differs from the checkpoint's training "
                                 f"{flags[name].lstrip('-')} {_shown(getattr(base, name))}: its test split would "
                                 "overlap the training data; leave it out")
        spec = self.build(base, **given)
        return _fitting(base if _fields(spec) == _fields(base) else spec, checkpoint, flags)

    def test_store(self, spec, root, **options) -> Path:
        """The store of the test split of ``spec`` (:meth:`held_out`) under ``root``, rendered where absent by the
        family's renderer (:meth:`~xai_loc.models.families.Family.render`; ``options``: cochcnn's ``device``)."""
        from xai_loc.models.families import FAMILIES

        return FAMILIES[self.family].render(spec, "test", root=root, progress=True, **options)


def _fitting(spec, checkpoint: str, flags: dict[str, str]):
    """``spec``, refused in one line where its examples are not the input of the model of ``checkpoint`` (samples
    per ear and rate); ``flags``: the command's flags by parameter name, for the hint."""
    from xai_loc.models import load_model

    if getattr(spec, "n_samples", None) is None:  # a spec of spectrogram scenes (BAST) fixes its length itself
        return spec
    model = load_model(checkpoint)
    takes = getattr(model, "n_samples", None), getattr(model, "fs", None)
    if None not in takes and (spec.n_samples, spec.fs) != takes:
        hint = f"; give {flags['duration']} {model.n_samples / model.fs:g} or leave it out" if "duration" in flags \
            else ""
        raise InputError(f"the data hold {spec.n_samples} samples per ear at {spec.fs} Hz "
                         f"({spec.n_samples / spec.fs:g} s), but checkpoint {checkpoint} takes {model.n_samples} at "
                         f"{model.fs} Hz{hint}")
    return spec


def _fields(spec) -> dict[str, Any]:
    """A spec's fields but its name (what its data is, not where it is kept)."""
    return {k: v for k, v in spec.to_dict().items() if k != "name"}


def _shown(value) -> str:
    """An option's value as a user types it."""
    if isinstance(value, (tuple, list)):
        return ",".join(_shown(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def given_only(**options) -> dict[str, Any]:
    """The options that are not None."""
    return {name: value for name, value in options.items() if value is not None}


def probe_seed_option(draws: str):
    """``--probe-seed``: the seed of a probe's own ``draws`` (the probe's ``seed``), apart from ``--seed`` (the data:
    for a checkpoint the card's, or the probe would run on its training data)."""
    return click.option("--probe-seed", type=SEED, default=0, show_default=True, cls=PassedAs, passed_as="seed",
                        help=f"Seeds {draws}; any checkpoint takes any value (--seed picks the data).")


#: Most distinct sounds and renderings per sound of a dataset (:data:`xai_loc.data.binaural_store.MAX_SOUNDS` and
#: ``MAX_PER_SOUND``, whose module imports torch; a test keeps them equal).
MAX_SOUNDS, MAX_PER_SOUND = 10_000, 100


def _snr_range(ctx: click.Context, param: click.Parameter, value):
    """``--snr LOW HIGH`` (each checked by :data:`~xai_loc.cli_params.SNR`), refused in one line naming the flag
    and the values unless LOW <= HIGH."""
    from xai_loc.acoustics.room import SNR_RANGE

    if value is not None and not value[0] <= value[1]:
        raise InputError(f"{option_name(param, ctx, value)} {_shown(value[0])} {_shown(value[1])} is not allowed; "
                         f"give LOW HIGH dB with {SNR_RANGE[0]:g} <= LOW <= HIGH <= {SNR_RANGE[1]:g}")
    return value


#: Options that define a binaural dataset (:class:`~xai_loc.data.binaural_store.BinauralSpec`).
_binaural_spec_options = with_options(
    click.option("--rooms", default="anechoic,office", show_default=True,
                 help="Comma-separated room presets (anechoic, office, ...); each example picks one."),
    click.option("--kinds", default=None,
                 help="Comma-separated sound kinds (speech and the synthetic kinds) [default: all of them]."),
    click.option("--n-sounds", type=Int(1, MAX_SOUNDS), default=2200, show_default=True,
                 help=f"Distinct sounds, at most {MAX_SOUNDS}."),
    click.option("--per-sound", type=Int(1, MAX_PER_SOUND), default=4, show_default=True,
                 help="Renderings of each sound, each at its own direction, room and SNR; at most "
                      f"{MAX_PER_SOUND} (a rendering is 96 kB on disk at the default --duration)."),
    click.option("--duration", type=POSITIVE, default=0.25, show_default=True, help="Example length (s)."),
    click.option("--snr", type=SNR, nargs=2, default=(5.0, 40.0), show_default=True, callback=_snr_range,
                 help="Range (dB) of the diffuse background's SNR: LOW HIGH."),
    click.option("--no-noise", is_flag=True, help="No background noise."),
    click.option("--test-fraction", type=Number(0, 1, open_low=True, open_high=True), default=0.2, show_default=True,
                 help="Share of the distinct sounds held out for the test split."),
    click.option("--interp", default="barycentric", show_default=True,
                 help="HRIR interpolation of the image sources (nearest, bilinear or barycentric, the shipped "
                      "model's)."),
    click.option("--seed", type=SEED, default=0, show_default=True,
                 help="Seeds the split, every rendering and (train) the training."),
    DATA_ROOT,
)


def _listed(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(t.strip() for t in text.split(",") if t.strip())


def _binaural_spec(base=None, *, rooms=None, kinds=None, n_sounds=None, per_sound=None, duration=None, snr=None,
                   no_noise=False, test_fraction=None, interp=None, seed=None):
    from xai_loc.data.binaural_store import cochcnn_spec

    changes = given_only(rooms=_listed(rooms), kinds=_listed(kinds), n_sounds=n_sounds, per_sound=per_sound,
                         duration=duration, snr=snr, test_fraction=test_fraction, interp=interp, seed=seed)
    if no_noise:
        ctx = click.get_current_context(silent=True)
        if ctx is not None and ctx.get_parameter_source("snr") not in (None, ParameterSource.DEFAULT,
                                                                        ParameterSource.DEFAULT_MAP):
            raise InputError(f"--snr {_shown(snr)} is not allowed with --no-noise (no background to set the level "
                             "of); give one of them")
        changes["snr"] = None
    return cochcnn_spec(base, **changes)


#: The cochleagram CNN's scene options.
COCHCNN_OPTIONS = SceneOptions("cochcnn", _binaural_spec, ("kinds", "n_sounds", "test_fraction", "seed"))


@binaural.command("simulate")
@_binaural_spec_options
@click.option("--split", type=click.Choice(("train", "test", "all")), default="all", show_default=True,
              help="train and test hold distinct sounds; all: both in one store.")
@device_option("room simulation")
@click.pass_context
def binaural_simulate(ctx, rooms, kinds, n_sounds, per_sound, duration, snr, no_noise, test_fraction, interp, seed,
                      data, split, device) -> None:
    """Render a binaural dataset (KEMAR head in the room presets, natural sounds, diffuse noise)
    into a resumable zarr store under <data>/binaural/cochcnn-<rooms>-<n-sounds>x<per-sound>[-<digest of
    the other options where they are not the defaults>]; prints its path."""
    from xai_loc.data.binaural_store import simulate_binaural

    setup(ctx)
    spec = COCHCNN_OPTIONS.of(ctx)
    click.echo(str(simulate_binaural(spec, split, root=data, device=device, progress=True)))


@binaural.command("train")
@_binaural_spec_options
@click.option("--out", type=OutFile(".safetensors"), default=None,
              help="Checkpoint [default: <data>/runs/cochcnn_<dataset>.safetensors]; rerun to resume.")
@click.option("--layers", default="small", show_default=True, help="Layer preset of the cochleagram CNN (small, net1).")
@click.option("--head", type=click.Choice(("azel", "azimuth")), default="azel", show_default=True,
              help="504 azimuth x elevation classes or 72 azimuths.")
@click.option("--epochs", type=Int(1), default=5, show_default=True,
              help="Passes over the training split (a resumed run continues up to it).")
@click.option("--batch-size", type=Int(2, MAX_BATCH), default=16, show_default=True,
              help="Examples per optimizer step, at least 2.")
@click.option("--lr", type=POSITIVE, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--label-sigma", type=Number(0), default=10.0, show_default=True,
              help="Spread the cross-entropy target over neighbouring directions (degrees; 0: one-hot, the paper's).")
@click.option("--max-minutes", type=POSITIVE, default=None,
              help="Wall-clock budget of the epochs (minutes); rerun to continue.")
@click.option("--dtype", type=click.Choice(("auto", "float32", "float16")), default="auto", show_default=True,
              help="Weight storage; auto keeps float16 where the test metrics do not move.")
@device_option()
@click.pass_context
def binaural_train(ctx, rooms, kinds, n_sounds, per_sound, duration, snr, no_noise, test_fraction, interp, seed, data,
                   out, layers, head, epochs, batch_size, lr, label_sigma, max_minutes, dtype, device) -> None:
    """Train the cochleagram localizer on a binaural dataset (rendered first where absent) and
    score it on the held-out sounds. The defaults recreate pretrained/cochcnn_default."""
    from pathlib import Path

    from xai_loc.models.checkpoint import read_card
    from xai_loc.models.classifier_training import ClassifierConfig, train_on_spec
    from xai_loc.models.zoo import describe_test_metrics

    setup(ctx)
    spec = COCHCNN_OPTIONS.of(ctx)
    config = ClassifierConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, max_minutes=max_minutes,
                              device=device, label_sigma=label_sigma)
    out = Path(out) if out else Path(data) / "runs" / f"cochcnn_{spec.name}.safetensors"
    path = train_on_spec(spec, out, root=data, model_config={"layers": layers, "head": head}, config=config,
                         dtype=dtype, progress=True)
    card = read_card(path)
    click.echo(f"{path}: {card['training']['epochs']} epochs, "
               f"{describe_test_metrics((card.get('metrics') or {}).get('test') or {}, card['architecture'])}")


@binaural.command("cues")
@_binaural_spec_options
@click.option("--checkpoint", type=InputFile(), default=None,
              help="A cochleagram CNN checkpoint [default: the shipped pretrained/cochcnn_default.safetensors].")
@results_out_option("binaural", "Results folder of duplex.nc, duplex_relevance.nc, responses.nc and their figures.")
@click.option("--relevance/--no-relevance", default=True, show_default=True,
              help="Also the relevance view: mass per band and ear, left/right relevance lag against the ITD.")
@click.option("--behaviour/--no-behaviour", default=True, show_default=True,
              help="Also the Hofman figure and confusion statistics on the dataset's held-out sounds.")
@click.option("--tokens", type=Int(1), default=4, show_default=True, help="Noise tokens per stimulus condition.")
@probe_seed_option("the noise tokens of the duplex probe")
@click.option("--response", type=click.Choice(("argmax", "mean")), default="argmax", show_default=True,
              help="Model answer: the arg-max direction or the probability-weighted mean lateral angle.")
@click.option("--option", "options", multiple=True,
              help="LRP composite option KEY=VALUE (repeatable), e.g. conv_rule=epsilon, gamma=0.5.")
@click.option("--batch-size", type=Int(1, MAX_BATCH), default=16, show_default=True,
              help="Examples per forward pass (probe stimuli and held-out scenes).")
@device_option()
@click.pass_context
def binaural_cues(ctx, rooms, kinds, n_sounds, per_sound, duration, snr, no_noise, test_fraction, interp, seed, data,
                  checkpoint, out, relevance, behaviour, tokens, probe_seed, response, options, batch_size,
                  device) -> None:
    """Duplex-theory cue probe (ITD and ILD weights per band, Macpherson & Middlebrooks 2002)
    and its relevance view, plus the Hofman-style behaviour on held-out scenes: writes
    duplex.nc, duplex_relevance.nc, cues.png/.pdf, responses.nc and hofman.png/.pdf under OUT, all
    or none (what --no-relevance or --no-behaviour leaves out, an earlier run's file of it is removed).
    The held-out scenes are the test split of the data the checkpoint's card records (the other
    dataset options change how they are rendered; --kinds, --n-sounds, --test-fraction and --seed
    may not differ from the card's: another split would overlap the training data); with
    --no-behaviour the dataset options are refused (no scenes are rendered). --probe-seed seeds the
    probe's noise tokens."""
    from xai_loc.experiments.cues import run_behaviour, run_duplex_probe

    setup(ctx)
    if not behaviour:
        for param in ctx.command.params:
            if param.name in (*COCHCNN_OPTIONS.names(), "data") and \
                    ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE:
                given = param.opts[0] if param.is_flag else f"{param.opts[0]} {_shown(ctx.params[param.name])}"
                raise InputError(f"{given} is not allowed with --no-behaviour: the dataset options only pick and "
                                 "render the behaviour's held-out scenes; leave it out or drop --no-behaviour")
    model = family_checkpoint(checkpoint, "cochcnn")  # before rendering
    options = command_options(ctx, composite=family_composite("cochcnn"))
    if behaviour:
        spec = COCHCNN_OPTIONS.held_out(ctx, model)  # refuses examples the model does not take
        spec.sound_ids("test")  # refuses an empty split before the probe

    def probe(staging: Path) -> list[Path]:
        # the probe first: it checks the composite options' values before the behaviour's scenes are rendered
        staged = list(run_duplex_probe(model, staging, relevance=relevance, n_tokens=tokens, response=response,
                                       batch_size=batch_size, device=device, seed=probe_seed, progress=True,
                                       **options).values())
        if behaviour:
            store = COCHCNN_OPTIONS.test_store(spec, data, device=device)
            staged += run_behaviour(model, store, staging, batch_size=batch_size, device=device,
                                    progress=True).values()
        return staged

    # what --no-relevance or --no-behaviour leaves out, an earlier run's file of it is removed
    writes = {"duplex.nc": True, "duplex_relevance.nc": relevance, "responses.nc": behaviour}
    for path in publish_results(out, writes, probe):
        click.echo(str(path))


#: What ``--target`` each output kind takes: :func:`~xai_loc.explain.binaural.target_help` written out, so that
#: ``--help`` does not import torch (tests/test_review7.py keeps the two equal).
TARGET_HELP = (
    "direction_classes (cochcnn, cuenet): prediction, truth, a class index, class_logit, true_class_logit, "
    "class_contrast, class_probability (not with LRP: use class_log_odds), true_class_probability (not with LRP: use "
    "true_class_log_odds), class_log_odds, true_class_log_odds; azimuth (tfcnn): prediction, azimuth, toward_truth, "
    "angular_error; cos_sin (bast): prediction, truth, cos, sin, an azimuth in degrees, direction, true_direction, "
    "azimuth, angular_error")


@binaural.command("explain")
@click.argument("checkpoint", type=InputFile())
@click.argument("inputs", type=click.Path(exists=True))
@click.option("--method", default=None,
              help="Attribution method of xai_loc.explain.METHODS (lrp with the family's composite by default; "
                   "bast: attn_lrp by default, also attention_rollout and the gradient and perturbation methods).")
@click.option("--target", default=None,
              help="Explained output [default: prediction: the model's own answer], by the model's output kind "
                   f"(tfcnn --head multitask: direction_classes): {TARGET_HELP}.")
@click.option("--composite", type=COMPOSITE, default=None,
              help="LRP composite (method lrp) [default: the family's: cochcnn, tfcnn or cuenet].")
@click.option("--option", "options", multiple=True,
              help="Method, composite or target option KEY=VALUE (repeatable), e.g. conv_rule=epsilon, n_steps=32, "
                   "cls=12.")
@click.option("--examples", type=Int(1), default=None, help="Only the first N examples (windows) of INPUTS.")
@click.option("--batch-size", type=Int(1, MAX_BATCH), default=None,
              help="Most examples per pass [default: the family explainer's].")
@device_option("bast's attn_lrp, integrated_gradients and attention_rollout run on the CPU")
@results_out_option("binaural-relevance", "Results folder of the relevance files, one netCDF file per level.")
@click.pass_context
def binaural_explain(ctx, checkpoint, inputs, method, target, composite, options, examples, batch_size, device,
                     out) -> None:
    """Explain any binaural localizer (cochcnn, tfcnn, cuenet, bast) on INPUTS: a stereo sound
    file at the model's rate (cut into windows of its input length) or a store with
    waveforms (example, ear, time). Writes one netCDF file of labelled relevance per level
    (waveform, cochleagram, cues or spectrogram) with provenance attrs; an OUT holding another
    family's levels is refused before anything is explained. A target that explains against the
    truth (truth, toward_truth, angular_error ...) takes the true directions of a store."""
    from xai_loc.explain.binaural import (
        EAR_LEVELS,
        EXPLAINERS,
        binaural_target,
        check_out_folder,
        explain_ears,
        read_ear_examples,
        write_ear_relevance,
    )
    from xai_loc.explain.targets import TARGETS, targets_for
    from xai_loc.models import load_model, read_card

    setup(ctx)
    arch = read_card(checkpoint).get("architecture")
    if arch not in EXPLAINERS:
        raise InputError(f"checkpoint {checkpoint} is a {arch} model; binaural explain takes {', '.join(EXPLAINERS)} "
                         "(multichannel models: xai-loc explain)")
    model = load_model(checkpoint)
    own = family_composite(arch)
    # without --method, a family with no composite (bast) gets its own default method, which checks its options
    extra = command_options(ctx, method or ("lrp" if own else None), composite or own, targets_for(model.output_kind))
    if target is not None:
        extra["target"] = parse_options((f"target={target}",))["target"]
    # refused in one line before any work; 'truth', 'toward_truth' ... take the true directions of INPUTS
    needs_truth = target is not None and TARGETS[binaural_target(model, extra["target"])[0]].needs_truth
    check_out_folder(out, EAR_LEVELS[arch](model, method))  # another family's explanation there: before explaining
    waveforms, truth = read_ear_examples(inputs, model.fs, model.n_samples, truth=needs_truth)
    waveforms = waveforms[:examples]
    if method is not None:
        extra["method"] = method
    if composite is not None:
        extra["composite"] = composite
    if batch_size is not None:
        extra["batch_size"] = batch_size
    if device != "cpu":  # every explainer's default; BAST's own methods take no other (one line if asked)
        extra["device"] = device
    if needs_truth:
        if truth is None:
            raise InputError(f"INPUTS {inputs} holds no true directions; --target {target} needs a store with "
                             "azimuth (of the model's family)")
        given = sorted(truth.keys() & extra.keys())
        if given:
            raise InputError(f"option {given[0]!r} is set by INPUTS (its true directions); leave it out")
        extra.update({name: values[:examples] for name, values in truth.items()})
    for path in write_ear_relevance(explain_ears(checkpoint, waveforms, progress=True, **extra), out):
        click.echo(str(path))
