"""Labels shared by the figures, and the one way a figure reads a stored attribute it needs."""
from __future__ import annotations

import json
import math

from xai_loc.experiments.base import INPUT_NOUNS, input_noun, recorded_families

__all__ = ["INPUT_NOUNS", "SAMPLES", "MissingAttribute", "condition_title", "deleted_values", "input_noun",
           "recorded_families", "run_title", "stored_attr"]


class MissingAttribute(KeyError):
    """A stored result lacks an attribute a figure or table reads (reported as a damaged file by
    :func:`xai_loc.plots.redraw.unusable_result`)."""


def stored_attr(ds, key: str):
    """Attribute ``key`` of a stored result; :class:`MissingAttribute` where it has none."""
    try:
        return ds.attrs[key]
    except KeyError:
        raise MissingAttribute(f"attribute {key!r}") from None


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
    (``first_rule``) is not repeated as ``key=value``; the inputs are named by :func:`input_noun`."""
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
    return ", ".join(parts)
