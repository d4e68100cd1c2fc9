"""The ``xai-loc`` command line: thin wrappers that parse, call one library function and report.

Heavy imports (torch, xarray, ...) happen inside the commands so that ``xai-loc --help``
answers at once. Every :class:`~xai_loc.errors.InputError` becomes one line on stderr and
exit code 2.
"""
from __future__ import annotations

import sys

import click

from xai_loc.errors import InputError

#: RIR backends and modes offered on the command line (kept in sync with the registries by a test).
BACKEND_CHOICES = ("torch", "pyroomacoustics", "gpurir")
RIR_MODE_CHOICES = ("ism", "hybrid")
SPLIT_CHOICES = ("train", "val", "test", "all")


class _Group(click.Group):
    """A click group that reports user errors in one line with exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except InputError as err:
            click.echo(f"Error: {err}", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="xai-loc")
@click.option("--threads", type=int, default=None, envvar="XAI_LOC_THREADS", show_envvar=True,
              help="torch CPU threads (default: torch's choice; 1 is often fastest on small shared machines).")
@click.pass_context
def main(ctx: click.Context, threads: int | None) -> None:
    """Explain what neural sound-source localizers listen to.

    \b
    Simulate the paper's data:   xai-loc simulate --t60 0.6 --snr 10 --split test
    Versions and devices:        xai-loc info
    """
    ctx.obj = {"threads": threads}


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
@click.option("--t60", type=float, required=True, help="Reverberation time in seconds (Sabine).")
@click.option("--snr", type=float, required=True, help="SNR in dB relative to microphone 0.")
@click.option("--split", type=click.Choice(SPLIT_CHOICES), default="test", show_default=True,
              help="Which sources of the scene to simulate.")
@click.option("--sources", "n_sources", type=int, default=None, help="Only the first N sources of the split.")
@click.option("--scene", default="paper", show_default=True, help="Built-in scene name or a scene TOML file.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Data root [default: $XAI_LOC_DATA or ./xai-loc-data].")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="torch", show_default=True,
              help="RIR backend.")
@click.option("--mode", type=click.Choice(RIR_MODE_CHOICES), default="ism", show_default=True,
              help="torch backend: image sources up to T60 (ism) or up to T60/4 plus a diffuse tail (hybrid).")
@click.option("--speech", default=None, type=click.Path(file_okay=False),
              help="Folder of wav/flac/ogg speech to use instead of the shipped corpus.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of speech choice and noise.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N (torch backend).")
@click.pass_context
def simulate(ctx, t60, snr, split, n_sources, scene, out, backend, mode, speech, seed, device) -> None:
    """Simulate microphone windows of a scene into a zarr store (resumable)."""
    from xai_loc.acoustics.speech import SpeechCorpus
    from xai_loc.data.scene import load_scene
    from xai_loc.data.store import simulate_dataset
    from xai_loc.runtime import resolve_device

    _setup(ctx)
    resolve_device(device)
    scn = load_scene(scene)
    corpus = SpeechCorpus.from_folder(speech, fs=scn.room.fs) if speech else None
    options = {"mode": mode} if backend == "torch" else {}
    path = simulate_dataset(scn, split, t60, snr, root=out, n_sources=n_sources, corpus=corpus, seed=seed,
                            backend=backend, device=device, rir_options=options, progress=sys.stderr.isatty())
    click.echo(str(path))
