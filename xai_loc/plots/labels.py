"""Labels shared by the figures, and the one way a figure reads a stored attribute it needs."""
from __future__ import annotations

import json
import math

__all__ = ["MissingAttribute", "condition_title", "run_title", "stored_attr"]


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


def run_title(ds) -> str:
    """The condition and settings a result was computed under, from its attrs, e.g.
    ``"T60 0.6 s, SNR 10 dB, lrp, composite paper, target truth, zero fill, 2737 windows"``: the method, the
    composite, the explained target and the explain options given (a contrast target's ``reference`` among them),
    so that two explanations of one model never share a title."""
    attrs = ds.attrs
    parts = [condition_title(attrs)] if condition_title(attrs) else []
    if attrs.get("method"):
        parts.append(str(attrs["method"]))
    if isinstance(attrs.get("composite"), str) and attrs["composite"] not in ("", "none"):
        parts.append(f"composite {attrs['composite']}")
    rule = attrs.get("first_rule")
    if rule and rule != "default":
        parts.append(f"first rule {rule}")
    if attrs.get("target"):
        parts.append(f"target {attrs['target']}")
    options = json.loads(attrs["explain_options"]) if isinstance(attrs.get("explain_options"), str) else {}
    parts += [f"{key}={value}" for key, value in sorted(options.items())] if isinstance(options, dict) else []
    if attrs.get("fill"):
        parts.append(f"{attrs['fill']} fill")
    if "window" in ds.sizes:
        parts.append(f"{ds.sizes['window']} windows")
    elif "n_windows" in attrs:
        parts.append(f"{int(attrs['n_windows'])} windows")
    return ", ".join(parts)
