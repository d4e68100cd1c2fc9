"""The ``xai-loc`` command line: thin wrappers that parse, call one library function and report.

One module per family contributes its commands (:mod:`xai_loc.cli.multichannel`,
:mod:`~xai_loc.cli.binaural` with the cochleagram CNN, :mod:`~xai_loc.cli.tfcnn`,
:mod:`~xai_loc.cli.cuenet`, :mod:`~xai_loc.cli.bast`); shared option types, choices and
helpers live in :mod:`xai_loc.cli._common`. Heavy imports (torch, xarray, ...) happen inside
the commands so that ``xai-loc --help`` answers at once. Every
:class:`~xai_loc.errors.InputError` and every usage error of click's (a bad choice, a missing or unknown option,
argument or command) becomes one line on stderr and exit code 2.
"""
from __future__ import annotations

from xai_loc.cli._common import (
    BACKEND_CHOICES,
    COMPOSITE_CHOICES,
    CONVENTION_CHOICES,
    FIRST_RULE_CHOICES,
    METHOD_CHOICES,
    MODEL_CHOICES,
    RIR_MODE_CHOICES,
    SPLIT_CHOICES,
    TARGET_CHOICES,
)

__all__ = ["BACKEND_CHOICES", "COMPOSITE_CHOICES", "CONVENTION_CHOICES", "FIRST_RULE_CHOICES", "METHOD_CHOICES",
           "MODEL_CHOICES", "RIR_MODE_CHOICES", "SPLIT_CHOICES", "TARGET_CHOICES", "main"]

# every family's module registers its commands on the root group
from xai_loc.cli import bast, binaural, cuenet, multichannel, report, tfcnn  # noqa: E402, F401, I001
from xai_loc.cli.root import main  # noqa: E402
