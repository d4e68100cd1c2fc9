"""Labels shared by the figures, and the one way a figure reads a stored attribute it needs."""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from xai_loc.experiments.base import INPUT_NOUNS, input_noun, recorded_families

__all__ = ["ATTRIBUTE_KINDS", "INPUT_NOUNS", "SAMPLES", "MissingAttribute", "condition_title", "deleted_values",
           "input_noun", "literal", "misread_attribute", "recorded_families", "run_title", "stored_attr"]


class MissingAttribute(KeyError):
    """A stored result lacks an attribute a figure or table reads (reported as a damaged file by
    :func:`xai_loc.plots.redraw.unusable_result`)."""


def literal(value) -> str:
    """``str(value)`` as a figure shows it, character for character: every ``$`` escaped, so that matplotlib's
    mathtext does not read a stored name (a checkpoint ``loccnn_$x$``) as TeX. Every name or label a figure takes
    from a stored result goes through it once. A name starting with ``_``, which matplotlib leaves out of legends,
    gets a zero-width space before it (drawn as nothing)."""
    text = str(value).replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text


def stored_attr(ds, key: str):
    """Attribute ``key`` of a stored result; :class:`MissingAttribute` where it has none."""
    try:
        return ds.attrs[key]
    except KeyError:
        raise MissingAttribute(f"attribute {key!r}") from None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _whole_number(value: Any) -> bool:
    return _number(value) and math.isfinite(value) and value == int(value)


def _json_object(value: Any, each: type | None = None) -> bool:
    """Whether ``value`` is JSON text of an object (whose every value is an ``each``, where given)."""
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        return False
    return isinstance(parsed, dict) and (each is None or all(isinstance(v, each) for v in parsed.values()))


#: What each stored attribute that a figure or table converts must be: name -> (what, check). The condition
#: (``t60``, ``snr``) is checked when a result is opened (:func:`xai_loc.plots.redraw.recorded_condition`).
ATTRIBUTE_KINDS = {
    **dict.fromkeys(("n_windows", "n_sources", "srp_windows", "interp"), ("a whole number", _whole_number)),
    **dict.fromkeys(("fs", "c", "srp_step", "srp_z", "early_end_s", "duplex_split_hz"), ("a number", _number)),
    **dict.fromkeys(("explain_options", "composite_params", "metrics", "baseline", "hofman"),
                    ("a JSON object", _json_object)),
    "models": ("a JSON object of one object per model", lambda value: _json_object(value, dict)),
}


def misread_attribute(attrs: Mapping[str, Any]) -> str | None:
    """Why a figure or table could not read a result's attributes: ``"attribute 'n_windows' is '27 windows', not a
    whole number"`` for the first one of another kind than :data:`ATTRIBUTE_KINDS` says; None where all are."""
    from xai_loc.data.spec import short_repr

    for key, (what, check) in ATTRIBUTE_KINDS.items():
        if key in attrs and not check(attrs[key]):
            return f"attribute {key!r} is {short_repr(attrs[key])}, not {what}"
    return None


def condition_title(attrs) -> str:
    """``"T60 0.6 s, SNR 10 dB"`` from a result's attrs: each part only where it is recorded as a finite number
    (a binaural or user store records none, or NaN)."""
    parts = []
    for key, label, unit in (("t60", "T60", "s"), ("snr", "SNR", "dB")):
        try:
            value = float(attrs[key])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(value):
            parts.append(f"{label} {value:g} {unit}")
    return ", ".join(parts)


#: What the deleted values of a result are called where its store records no kind (windows and ear signals).
SAMPLES = "samples"


def deleted_values(attrs) -> str:
    """What the values that a deletion result deletes are called: the ``values`` of the store kind it scored
    (:attr:`~xai_loc.data.resumable.StoreKind.values`: ``'cue values'`` of a cue-scene store), found by the
    ``format`` tag its ``data_config`` records among the kinds the experiments read
    (:data:`~xai_loc.experiments.scored.READERS`); :data:`SAMPLES` where it records no kind of theirs."""
    try:
        config = json.loads(attrs.get("data_config") or "{}")
    except (TypeError, ValueError):
        config = {}
    tag = config.get("format") if isinstance(config, dict) else None
    if not isinstance(tag, str):  # the multichannel dataset stores record none: nothing to look up
        return SAMPLES
    from xai_loc.experiments.scored import READERS

    kinds = [reader.kind() for reader in READERS.values()]
    return next((kind.values for kind in kinds if kind.format == tag), SAMPLES)


def run_title(ds) -> str:
    """The condition and settings a result was computed under, from its attrs, e.g.
    ``"T60 0.6 s, SNR 10 dB, lrp, composite paper, target truth, zero fill, 2737 windows"``: the method, the
    composite, the explained target and the explain options given (a contrast target's ``reference`` among them),
    so that two explanations of one model never share a title. An option the title names from its own attribute
    (``first_rule``) is not repeated as ``key=value``; the inputs are named by :func:`input_noun`. Drawn as
    written (:func:`literal`)."""
    attrs = ds.attrs
    parts = [condition_title(attrs)] if condition_title(attrs) else []
    if attrs.get("method"):
        parts.append(str(attrs["method"]))
    if isinstance(attrs.get("composite"), str) and attrs["composite"] not in ("", "none"):
        parts.append(f"composite {attrs['composite']}")
    named_rule = attrs.get("first_rule") not in (None, "", "default")
    if named_rule:
        parts.append(f"first rule {attrs['first_rule']}")
    if attrs.get("target"):
        parts.append(f"target {attrs['target']}")
    options = json.loads(attrs["explain_options"]) if isinstance(attrs.get("explain_options"), str) else {}
    parts += [f"{key}={value}" for key, value in sorted(options.items()) if not (key == "first_rule" and named_rule)] \
        if isinstance(options, dict) else []
    if attrs.get("fill"):
        parts.append(f"{attrs['fill']} fill")
    if "window" in ds.sizes:
        parts.append(f"{ds.sizes['window']} {input_noun(attrs)}")
    elif "n_windows" in attrs:
        parts.append(f"{int(attrs['n_windows'])} {input_noun(attrs)}")
    return literal(", ".join(parts))
