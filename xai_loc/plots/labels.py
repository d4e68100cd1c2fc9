"""Labels shared by the figures, and the one way a figure reads a stored attribute it needs."""
from __future__ import annotations

import contextlib
import json
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xai_loc.models.families import Family

__all__ = ["INPUT_NOUNS", "SAMPLES", "MissingAttribute", "condition_title", "deleted_values", "input_noun",
           "recorded_families", "run_title", "stored_attr"]

#: What a result's inputs are called, by the output kind of the models it records
#: (:attr:`~xai_loc.models.families.Family.output_kind`); "inputs" for the other kinds (a binaural sound, a BAST
#: spectrogram).
INPUT_NOUNS = {"position": "windows"}


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


def recorded_families(attrs) -> list[Family]:
    """The :class:`~xai_loc.models.families.Family` of each architecture among the models a result records (its
    ``models`` attribute, JSON: name -> ``{"model": architecture, ...}``), without repeats; empty where it records
    none, or none this installation knows (a damaged attribute is refused where a table reads it)."""
    from xai_loc.errors import InputError
    from xai_loc.models.families import family_of

    try:
        models = json.loads(attrs.get("models", "{}"))
    except (TypeError, ValueError):
        return []
    families = {}
    for info in models.values() if isinstance(models, dict) else ():
        if isinstance(info, dict) and isinstance(info.get("model"), str):
            with contextlib.suppress(InputError):  # an architecture this installation does not know
                family = family_of(info["model"])
                families.setdefault(family.name, family)
    return list(families.values())


def input_noun(attrs) -> str:
    """What the inputs of a result are called (:data:`INPUT_NOUNS`): "windows" for the multichannel localizers'
    windows (and where the result records no model), "inputs" where a recorded model's output is of another kind."""
    nouns = {INPUT_NOUNS.get(family.output_kind, "inputs") for family in recorded_families(attrs)}
    return "inputs" if "inputs" in nouns else "windows"


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
