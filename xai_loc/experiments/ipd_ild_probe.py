"""Which interaural cue, at which frequencies, does the IPD/ILD TF-CNN rely on? (duplex probe)

Duplex theory (Rayleigh 1907; Macpherson & Middlebrooks 2002) expects phase differences to
carry azimuth below about 1.5 kHz, where the IPD does not yet wrap within the head's delay
range, and level differences above it, where the head shadows. This module measures where
LRP relevance of a TF-CNN (:mod:`xai_loc.models.tfcnn`) lands on its input maps
``[2 (IPD, ILD), 321 bins, frames]``:

- :func:`~xai_loc.explain.tfcnn.explain_tfcnn`: relevance of the output on the IPD/ILD maps,
  dims ``(example, channel, frequency, frame)``, and on the ear signals, ``(example, ear, time)``;
- :func:`band_profile`: relevance per channel and band (octaves by default), dims
  ``(channel, band)``: signed ``relevance``, absolute ``mass`` and ``share`` (mass over the
  total mass of both channels), with the share of each channel's mass below 1.5 kHz (``share_below_split``);
- :func:`ipd_ild_probe`: both on the examples of a scene file, with provenance;
- :func:`run_ipd_ild_probe`: the probe at each test SNR, written as ``band_profile.nc``
  (drawn by :func:`xai_loc.plots.band_profile.draw_band_profile`).

The rules (composite ``'tfcnn'``) and the output seed are those of :mod:`xai_loc.explain.tfcnn`;
``mass`` is sign-free. Gamma does not conserve relevance (on the shipped model the maps hold
7-13 % of the output, median).

Measured on the shipped model (``pretrained/tfcnn_default.safetensors``, 96 held-out scenes
per SNR, Gamma): the ILD channel takes about 68 % of the relevance mass at every SNR (62 %
with Epsilon); relevance per bin peaks at 250-1000 Hz for both cues (where the speech has
its energy); the IPD's fraction of each band's mass is highest at 250-2000 Hz (0.35-0.41)
and lower above 2 kHz (0.28-0.29); 44 % of the IPD mass but 35-38 % of the ILD mass lies
below 1.5 kHz. So the duplex pattern shows only as a tilt: the model leans on ILD at low
frequencies too.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xai_loc.checks import is_integer
from xai_loc.errors import InputError
from xai_loc.experiments.cues import DUPLEX_SPLIT_HZ
from xai_loc.explain.tfcnn import explain_tfcnn

__all__ = ["OCTAVE_EDGES", "band_profile", "check_snrs", "ipd_ild_probe", "run_ipd_ild_probe"]

#: Octave band edges in Hz over the 16 kHz STFT's 0-8 kHz (the first band takes DC, the last Nyquist).
OCTAVE_EDGES = (0.0, 125.0, 250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)


def band_profile(cues, edges: Sequence[float] = OCTAVE_EDGES):
    """Relevance per channel and frequency band, summed over examples and frames.

    Parameters
    ----------
    cues
        Relevance on the IPD/ILD maps, DataArray ``(example, channel, frequency, frame)``
        (:func:`explain_tfcnn`), or one example without ``example``.
    edges
        Increasing band edges in Hz; a bin belongs to ``[low, high)``, the last band also
        takes its top edge. Bins outside the edges are an error.

    Returns
    -------
    xarray.Dataset
        Dims ``(channel, band)``: ``relevance`` (signed sum), ``mass`` (sum of absolute
        values), ``share`` (mass over the mass of both channels in all bands), ``ipd_fraction``
        (along ``band``: IPD mass over IPD + ILD mass); coords ``band_low``, ``band_high``,
        ``band_centre`` (geometric; arithmetic for a band from 0 Hz) and ``n_bins`` (STFT bins
        in the band: octaves hold more bins as they rise, so ``mass / n_bins`` compares
        densities); ``share_below_split`` (along ``channel``: the share of the channel's mass
        below :data:`DUPLEX_SPLIT_HZ`, which falls inside an octave band), ``total_relevance``
        and ``total_mass``: variables, so that they survive stacking profiles along ``snr``.
        attrs: the input's provenance and the ``edges``.
    """
    import xarray as xr

    edges = np.asarray(edges, dtype=np.float64)
    freq = cues["frequency"].values
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise InputError(f"band edges {edges.tolist()} are not allowed; give at least two increasing frequencies")
    if freq.min() < edges[0] or freq.max() > edges[-1]:
        raise InputError(f"band edges {edges[0]:g}..{edges[-1]:g} Hz do not cover the bins "
                         f"({freq.min():g}..{freq.max():g} Hz)")
    band = np.clip(np.searchsorted(edges, freq, side="right") - 1, 0, edges.size - 2)
    summed = cues.sum(dim=[d for d in cues.dims if d not in ("channel", "frequency")])
    absolute = abs(cues).sum(dim=[d for d in cues.dims if d not in ("channel", "frequency")])
    n_bands = edges.size - 1
    relevance = np.stack([summed.values[:, band == b].sum(axis=1) for b in range(n_bands)], axis=1)
    mass = np.stack([absolute.values[:, band == b].sum(axis=1) for b in range(n_bands)], axis=1)
    total_mass = float(mass.sum())
    low, high = edges[:-1], edges[1:]
    centre = np.where(low > 0, np.sqrt(np.maximum(low, 1e-300) * high), (low + high) / 2)
    channels = [str(c) for c in cues["channel"].values]
    below = freq < DUPLEX_SPLIT_HZ
    channel_mass = absolute.values.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share_below = np.where(channel_mass > 0, absolute.values[:, below].sum(axis=1) / channel_mass, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        ipd_fraction = mass[channels.index("ipd")] / mass.sum(axis=0)
    attrs = {k: v for k, v in cues.attrs.items() if k != "level"}
    attrs.update(level="IPD/ILD maps, summed over examples and frames", edges_hz=json.dumps(edges.tolist()),
                 n_examples=int(cues.sizes.get("example", 1)), duplex_split_hz=DUPLEX_SPLIT_HZ)
    return xr.Dataset(
        {"relevance": (("channel", "band"), relevance),
         "mass": (("channel", "band"), mass),
         "share": (("channel", "band"), mass / total_mass if total_mass else np.zeros_like(mass)),
         "ipd_fraction": ("band", ipd_fraction),
         "share_below_split": ("channel", share_below, {"units": "share of the channel's |relevance|",
                                                        "split_hz": DUPLEX_SPLIT_HZ}),
         "total_relevance": ((), float(relevance.sum())), "total_mass": ((), total_mass)},
        coords={"channel": channels, "band": np.arange(n_bands),
                "n_bins": ("band", np.bincount(band, minlength=n_bands)), "band_low": ("band", low, {"units": "Hz"}),
                "band_high": ("band", high, {"units": "Hz"}), "band_centre": ("band", centre, {"units": "Hz"})},
        attrs=attrs)


def check_snrs(snrs: Sequence[float], available: Sequence[float], flag: str = "snrs") -> list[float]:
    """``snrs`` as floats, each once and each one of the scenes' ``available`` SNRs (compared as
    :func:`ipd_ild_probe` picks examples, ``np.isclose``); a one-line :class:`InputError` naming ``flag``
    otherwise."""
    values = [float(v) for v in snrs]
    for i, snr in enumerate(values):
        if not np.isclose(available, snr).any() or np.isclose(values[:i], snr).any():
            raise InputError(f"{flag} {snr:g} is not allowed; give each once, some of the test SNRs "
                             f"{', '.join(f'{v:g}' for v in available)} dB")
    return values


def ipd_ild_probe(model, scenes, *, n_examples: int | None = 64, snr: float | None = None, seed: int = 0,
                  edges: Sequence[float] = OCTAVE_EDGES, batch_size: int = 8, **options: Any) -> dict[str, Any]:
    """Duplex probe of a TF-CNN on the examples of a scene file.

    Parameters
    ----------
    model
        A TF-CNN or checkpoint path.
    scenes
        A scene file (:func:`xai_loc.data.ipd_ild_scenes.render_scenes`) or opened dataset.
    n_examples
        Examples drawn (seeded, without replacement) after the SNR filter; None: all.
    snr
        Keep examples at this SNR only (dB); None: all.
    options
        Options of the ``'tfcnn'`` composite.

    Returns
    -------
    dict
        ``'profile'``: :func:`band_profile` (with ``snr`` and the scene digest in attrs),
        ``'cues'`` and ``'waveform'``: the relevance of :func:`explain_tfcnn`, examples
        labelled by their scene index with ``azimuth`` and ``snr`` coords.
    """
    import xarray as xr

    from xai_loc.data.ipd_ild_scenes import open_scenes

    ds = scenes if isinstance(scenes, xr.Dataset) else open_scenes(scenes)
    index = np.arange(ds.sizes["example"])
    if snr is not None:
        index = index[np.isclose(ds["snr"].values, float(snr))]
        if index.size == 0:
            raise InputError(f"snr={snr!r} dB is not in the scenes; available: "
                             f"{', '.join(f'{s:g}' for s in np.unique(ds['snr'].values))}")
    if n_examples is not None:
        if not (is_integer(n_examples) and n_examples >= 1):
            raise InputError(f"n_examples={n_examples!r} is not allowed; use a positive integer or None")
        pick = np.random.default_rng(seed).choice(index.size, size=min(n_examples, index.size), replace=False)
        index = np.sort(index[pick])
    waveforms = ds["waveforms"].isel(example=index).values
    out = explain_tfcnn(model, waveforms, batch_size=batch_size, example=index, **options)
    labels = {"azimuth": ("example", ds["azimuth"].values[index],
                          {"units": "degree", "convention": "positive = right"}),
              "snr": ("example", ds["snr"].values[index], {"units": "dB"})}
    out = {k: v.assign_coords(labels) for k, v in out.items()}
    profile = band_profile(out["cues"], edges)
    profile.attrs.update(snr="all" if snr is None else float(snr), scenes_digest=ds.attrs.get("spec_digest", ""),
                         scenes_split=ds.attrs.get("split", ""), sampling_seed=seed)
    return {"profile": profile, **out}


def run_ipd_ild_probe(model, scenes, out_dir: str | Path, *, snrs: Sequence[float] | None = None,
                      n_examples: int | None = 96, seed: int = 0, batch_size: int = 8,
                      **options: Any) -> dict[str, Path]:
    """The duplex probe at each test SNR, written to ``out_dir``.

    Writes ``band_profile.nc`` (:func:`band_profile` per SNR along a ``snr`` dim, with
    ``n_examples (snr)``; provenance in attrs) atomically; :mod:`xai_loc.plots.band_profile`
    draws it. ``snrs`` (at least one) defaults to every SNR of the scenes; ``options`` go to the
    ``'tfcnn'`` composite.
    """
    import xarray as xr

    from xai_loc.data.ipd_ild_scenes import open_scenes
    from xai_loc.explain.attribute import resolve_model
    from xai_loc.io import write_dataset_atomic

    if snrs is not None and len(snrs) == 0:
        raise InputError("snrs=[] is not allowed; give at least one test SNR, or None for all")
    model, info = resolve_model(model)
    ds = scenes if isinstance(scenes, xr.Dataset) else open_scenes(scenes)
    available = np.unique(ds["snr"].values)
    snrs = check_snrs(available if snrs is None else snrs, available)
    profiles = [ipd_ild_probe(model, ds, n_examples=n_examples, snr=snr, seed=seed, batch_size=batch_size,
                              **options)["profile"] for snr in snrs]
    profile = xr.concat(profiles, dim=xr.DataArray(snrs, dims="snr", attrs={"units": "dB"}),
                        combine_attrs="drop_conflicts")
    profile["n_examples"] = ("snr", [int(part.attrs["n_examples"]) for part in profiles])
    profile.attrs.update({k: v for k, v in info.items() if isinstance(v, str)})
    return {"profile": write_dataset_atomic(profile, Path(out_dir) / "band_profile.nc")}
