"""Labels shared by the figures."""
from __future__ import annotations

__all__ = ["run_title"]


def run_title(ds) -> str:
    """The condition and settings a result was computed under, from its attrs, e.g.
    ``"T60 0.6 s, SNR 10 dB, lrp, zero fill, 2737 windows"``."""
    attrs = ds.attrs
    parts = []
    if "t60" in attrs:
        parts.append(f"T60 {float(attrs['t60']):g} s")
    if "snr" in attrs:
        parts.append(f"SNR {float(attrs['snr']):g} dB")
    if attrs.get("method"):
        parts.append(str(attrs["method"]))
    rule = attrs.get("first_rule")
    if rule and rule != "default":
        parts.append(f"first rule {rule}")
    if attrs.get("fill"):
        parts.append(f"{attrs['fill']} fill")
    if "window" in ds.sizes:
        parts.append(f"{ds.sizes['window']} windows")
    elif "n_windows" in attrs:
        parts.append(f"{int(attrs['n_windows'])} windows")
    return ", ".join(parts)
