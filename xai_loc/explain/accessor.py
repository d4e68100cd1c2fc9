"""The ``.xai`` accessor: common views of a relevance DataArray.

Registered on import of :mod:`xai_loc.explain`::

    rel = explain(model, ds)                 # or open_relevance(path)
    rel.xai.per_mic()                        # (window, mic) summed relevance
    rel.xai.source(12)                       # the windows of source 12
    audio = rel.xai.source(12).xai.as_audio()  # (samples, mics), peak-normalized
    rel.xai.source_position                  # (window, xyz) from source_x/y/z
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from xai_loc.checks import check_number
from xai_loc.errors import InputError
from xai_loc.explain.attribute import summary_attrs

__all__ = ["RelevanceAccessor"]

#: per_mic's reductions and what each sums.
REDUCTIONS = {"sum": "relevance", "abs": "|relevance|", "positive": "positive relevance",
              "negative": "negative relevance"}


@xr.register_dataarray_accessor("xai")
class RelevanceAccessor:
    """Views of relevance ``(window, mic, time)`` as returned by :func:`~xai_loc.explain.explain`, or of one window
    ``(mic, time)``."""

    def __init__(self, da: xr.DataArray) -> None:
        self._da = da

    @property
    def _windows(self) -> xr.DataArray:
        """The relevance with a ``window`` dim (one window ``(mic, time)``, e.g. from ``isel(window=0)``, as a
        window of one)."""
        return self._da if "window" in self._da.dims else self._da.expand_dims("window")

    def vector(self, name: str) -> xr.DataArray:
        """Join the coords ``<name>_x/_y/_z`` into one ``(dim, xyz)`` array.

        ``name`` is 'source' (true position), 'mic', 'prediction' or 'attr_output'.
        """
        keys = [f"{name}_{axis}" for axis in "xyz"]
        missing = [k for k in keys if k not in self._da.coords]
        if missing:
            raise InputError(f"relevance has no coord {missing[0]!r}; the {name} vector is not known")
        parts = [self._da.coords[k].reset_coords(drop=True) for k in keys]
        return xr.concat(parts, dim="xyz").assign_coords(xyz=["x", "y", "z"]).transpose(..., "xyz").rename(name)

    @property
    def source_position(self) -> xr.DataArray:
        """True source positions ``(window, xyz)`` in metres."""
        return self.vector("source")

    @property
    def mic_position(self) -> xr.DataArray:
        """Microphone positions ``(mic, xyz)`` in metres."""
        return self.vector("mic")

    @property
    def prediction(self) -> xr.DataArray:
        """The model's predictions ``(window, xyz)``."""
        return self.vector("prediction")

    def per_mic(self, reduce: str = "sum") -> xr.DataArray:
        """Relevance per window and microphone, summed over time.

        ``reduce``: 'sum' (signed), 'abs' (of absolute values), 'positive' or 'negative'
        (of the positive or negative parts only).
        """
        if reduce not in REDUCTIONS:
            raise InputError(f"reduce={reduce!r} is not allowed; use one of {', '.join(REDUCTIONS)}")
        da = self._da
        if reduce == "abs":
            da = abs(da)
        elif reduce == "positive":
            da = da.clip(min=0)
        elif reduce == "negative":
            da = da.clip(max=0)
        total = da.sum("time", keep_attrs=True)
        total.attrs["description"] = f"{REDUCTIONS[reduce]} of each microphone in each window, summed over time"
        return total

    def source(self, source_id: int) -> xr.DataArray:
        """The windows of one source, in the order of their ``window_index``."""
        if "source_id" not in self._da.coords:
            raise InputError("relevance has no source_id coord; it was not computed from a dataset")
        selected = self._da.isel(window=np.flatnonzero(self._da["source_id"].values == source_id))
        if selected.sizes["window"] == 0:
            ids = np.unique(self._da["source_id"].values)
            shown = ", ".join(str(i) for i in ids[:10]) + (", ..." if ids.size > 10 else "")
            raise InputError(f"source {source_id} has no windows here; sources: {shown}")
        if "window_index" in selected.coords:
            selected = selected.isel(window=np.argsort(selected["window_index"].values, kind="stable"))
        return selected

    def check_mics(self, mics) -> np.ndarray:
        """Microphone indices as an array, or one line naming the first that does not exist."""
        picked = np.atleast_1d(np.asarray(mics))
        n = self._da.sizes.get("mic", 0)
        if picked.size == 0:
            raise InputError(f"no microphones selected; give indices in [0, {n - 1}]")
        bad = [int(m) for m in picked if not 0 <= m < n] if picked.dtype.kind in "iu" else list(picked)
        if bad:
            raise InputError(f"microphone {bad[0]} does not exist; give indices in [0, {n - 1}]")
        twice = next((int(m) for i, m in enumerate(picked) if m in picked[:i]), None)
        if twice is not None:
            raise InputError(f"microphone {twice} is asked for twice; give each once")
        return picked

    def as_audio(self, mics=None, peak: float = 0.99) -> np.ndarray:
        """The relevance as audio: windows joined along time, ``(samples, mics)`` float32.

        Parameters
        ----------
        mics
            Microphones to keep, by position ``0 .. n-1`` along ``mic`` (whatever its labels; default all).
        peak
            Absolute peak after normalization, in [0, 1] (the file's maximum; sign kept); 0
            keeps the raw values.
        """
        peak = check_number("peak", peak, maximum=1.0)
        da = self._windows if mics is None else self._windows.isel(mic=self.check_mics(mics))
        audio = np.asarray(da.transpose("window", "time", "mic").values, dtype=np.float64)
        audio = audio.reshape(-1, audio.shape[-1])
        top = np.abs(audio).max() if audio.size else 0.0
        if peak and top > 0:
            audio = audio * (peak / top)
        return audio.astype(np.float32)

    def summary(self) -> str:
        """A few lines: method, target, relevance totals and how much the input matters, over the windows here
        (from their ``relevance_sum``, ``explained`` and ``prediction_x/y/z``, as
        :func:`~xai_loc.explain.attribute.summary_attrs` computes the attrs over every window explained)."""
        a, coords = self._da.attrs, self._da.coords
        n = self._windows.sizes["window"]
        lines = [f"relevance of {n} window{'s' * (n != 1)}: model {a.get('model')}, "
                 f"method {a.get('method')}, composite {a.get('composite')}, target {a.get('target')}"]
        if "relevance_sum" in coords and "explained" in coords:  # the windows here, not every window explained
            zero = a.get("output_zero_input") if all(f"prediction_{k}" in coords for k in "xyz") else None
            a = {**a, **summary_attrs(None if zero is None else self.prediction.values, coords["relevance_sum"].values,
                                      coords["explained"].values, None if zero is None else np.asarray(zero),
                                      a.get("target"))}
        if "relevance_fraction" in a and np.isfinite(a["relevance_fraction"]):
            lines.append(f"relevance reaching the input: {a['relevance_fraction']:.3g} of what a complete "
                         "attribution would carry")
        if "input_dependence" in a:
            zero = ", ".join(f"{v:.3f}" for v in a.get("output_zero_input", []))
            lines.append(f"output on an all-zero window: ({zero}); |f(x) - f(0)| / |f(x)| = "
                         f"{a['input_dependence']:.3g}")
        return "\n".join(lines)
