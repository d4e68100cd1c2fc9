"""Argument parsing of the zoo scripts (run as ``python scripts/NAME.py``: this folder is first on the path): the
shared types of :mod:`xai_loc.script_args` and those of the paper scene's runs.

A bad value ends in one line, ``NAME.py: error: argument --OPTION: MESSAGE``, with exit status 2, before any work.
"""
from __future__ import annotations

from xai_loc.errors import InputError
from xai_loc.script_args import (
    Parser,
    checked,
    count,
    device_name,
    device_spelling,
    folder,
    integer,
    seconds,
    setting,
    threads,
)

__all__ = ["Parser", "condition", "count", "device_name", "device_spelling", "folder", "integer", "seconds", "setting",
           "sources", "threads"]


def _paper_condition(text: str) -> tuple[float, float]:
    """``T60:SNR`` (:func:`xai_loc.data.scene.parse_condition`) whose T60 the paper room allows (Sabine's minimum)."""
    from xai_loc.acoustics.room import check_t60
    from xai_loc.data.scene import paper_scene, parse_condition

    t60, snr = parse_condition(text)
    try:
        check_t60(t60, paper_scene().room)
    except InputError as err:
        raise InputError(f"condition {text!r}: {err}") from None
    return t60, snr


#: A condition of the paper scene, ``T60:SNR``.
condition = checked(_paper_condition)
#: Sources of each split of a training run: training needs at least 2 (:func:`xai_loc.models.training.train`).
sources = integer(2)
