"""``report``: the study as one self-contained web page."""
from __future__ import annotations

import click

from xai_loc.cli.root import main
from xai_loc.cli_params import InputDir, Int, OutFile


@main.command()
@click.argument("results", type=InputDir())
@click.option("--out", type=OutFile(".html"), default=None,
              help="The HTML file, named *.html [default: RESULTS/report.html].")
@click.option("--windows", type=Int(1, 64), default=4, show_default=True,
              help="Windows per model in the window explorer, 1 to 64 (each carries its audio inline).")
def report(results, out, windows) -> None:
    """Write RESULTS as one web page: localization error beside its baselines, perturbation,
    faithfulness, sanity, component and TDOA tables and figures, binaural probes, provenance, and a window
    explorer to see and hear relevance. Read from the stored results; nothing is recomputed. In a
    reproduce folder, what its last run (study.json) did not write is marked."""
    from xai_loc.report import write_report

    click.echo(str(write_report(results, out, n_windows=windows)))
