"""The BAST integration x weight-sharing table, and the relevance view of why shared weights with ADD fail.

Kuang et al. (2022) trained BAST with each binaural integration (ADD, SUB, CONCAT), with and
without weight sharing between the ear encoders (SP / NSP), and found that SP with ADD fails:
the network is then symmetric in the two ears, ``f(left, right) == f(right, left)``, so a
source and its mirror image across the median plane (azimuth ``a`` and ``360 - a``, whose ear
signals are nearly swapped for a nearly symmetric head) get the same answer.
:func:`run_bast_table` trains the six combinations on our KEMAR scenes
(:mod:`xai_loc.data.bast_scenes`) with one recipe, scores them on the held-out sounds
(angular error, accuracy within 5 and 10 degrees, share of lateral targets answered in the
wrong hemifield) and explains each with AttnLRP (:mod:`xai_loc.explain.attn_lrp`).

**Relevance view.** The lateral output ``sin az`` (positive: left) is explained for
mirror pairs of test scenes (the same sound at ``a`` and ``360 - a``, ``a`` in
:data:`PROBE_AZIMUTHS`); its relevance is summed per ear, ``R_L`` and ``R_R``, and
``R_L + R_R`` (plus what biases absorb) is the output. A model that tells left from right
must flip the sign of ``R_L + R_R`` between the two members of a pair. For SP-ADD the
relevance of a swapped input is the swapped relevance, so the pair's per-ear sums merely
trade places and their total cannot flip: ``mirror_contrast``, the mean over pairs of
``(R_L + R_R)(left source) - (R_L + R_R)(right source)``, stays near 0, and the ears'
relevance ``ear_balance = (R_L - R_R) / (|R_L| + |R_R|)`` is mirrored between the
hemifields without changing the answer. :func:`mirror_relevance` shows the same pairs for one
trained model through every method of :data:`~xai_loc.explain.attn_lrp.BAST_METHODS`, per ear
and frequency.

**Budget.** The default recipe (width 32, one block per encoder, 2 heads, MIX loss, 8 epochs
over 3456 training scenes, batches of 32) trains each combination in 1.4-1.9 CPU minutes on one
thread of the reference CPU; the whole table, spectrograms and relevance view included, took
9.9 CPU minutes. The models are far smaller and shorter trained than the published ones, so
absolute errors are larger (front-back confusions dominate them); the comparison between the
combinations is the point.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xai_loc import __version__
from xai_loc.errors import InputError
from xai_loc.experiments.base import markdown_row
from xai_loc.experiments.cues import DUPLEX_SPLIT_HZ

__all__ = ["DUPLEX_SPLIT_HZ", "PROBE_AZIMUTHS", "TABLE_MODEL", "markdown_table", "mirror_pairs", "mirror_relevance",
           "relevance_by_ear", "run_bast_table"]

#: Model options of the table (small: the six trainings fit about 10 CPU minutes).
TABLE_MODEL: dict[str, Any] = {"dim": 32, "depth": 1, "heads": 2, "dim_head": 16, "mlp_dim": 64}
#: Left-hemifield azimuths of the relevance view (their mirrors ``360 - a`` are on the right).
PROBE_AZIMUTHS = (30.0, 60.0, 90.0, 120.0, 150.0)
SHARING = ("SP", "NSP")
INTEGRATION_ORDER = ("ADD", "SUB", "CONCAT")
METRICS = ("mean_error", "median_error", "accuracy_5", "accuracy_10", "lateral_sign_error", "front_back_rate",
           "mean_error_folded")


def mirror_pairs(azimuth, sound_id, azimuths=PROBE_AZIMUTHS, sounds_per_kind: int = 1,
                 sound_kind=None) -> np.ndarray:
    """Indices ``(n_pairs, 2)`` of test scenes: the same sound at ``a`` (left) and ``360 - a`` (right).

    Takes ``sounds_per_kind`` sounds of each kind (all sounds when ``sound_kind`` is None).
    """
    azimuth, sound_id = np.asarray(azimuth, dtype=np.float64), np.asarray(sound_id)
    kinds = np.asarray(sound_kind) if sound_kind is not None else np.zeros(sound_id.size, dtype=str)
    chosen = []
    for kind in dict.fromkeys(kinds.tolist()):
        chosen.extend(list(dict.fromkeys(sound_id[kinds == kind].tolist()))[:sounds_per_kind])
    pairs = []
    for sid in chosen:
        for a in azimuths:
            left = np.flatnonzero((sound_id == sid) & np.isclose(azimuth, a))
            right = np.flatnonzero((sound_id == sid) & np.isclose(azimuth, np.mod(360.0 - a, 360.0)))
            if left.size and right.size:
                pairs.append((left[0], right[0]))
    if not pairs:
        raise InputError(f"no mirror pairs at azimuths {list(azimuths)} in these scenes")
    return np.asarray(pairs, dtype=np.int64)


def ear_balance(left, right) -> np.ndarray:
    """``(L - R) / (|L| + |R|)`` of left- and right-ear relevance: +1 all left, -1 all right (0 where both are 0)."""
    left, right = np.asarray(left), np.asarray(right)
    return (left - right) / np.maximum(np.abs(left) + np.abs(right), 1e-30)


def relevance_by_ear(relevance) -> dict[str, np.ndarray]:
    """Per-example relevance sums of the left and right ear, and their :func:`ear_balance`."""
    left = relevance.sel(ear="left").sum(("frequency", "time")).values
    right = relevance.sel(ear="right").sum(("frequency", "time")).values
    return {"left": left, "right": right, "balance": ear_balance(left, right)}


def markdown_table(ds, metric: str = "mean_error") -> str:
    """A markdown table of ``metric`` (rows: weight sharing, columns: integration)."""
    lines = [markdown_row(["", *map(str, ds.integration.values)]), "|---" * (ds.sizes["integration"] + 1) + "|"]
    for sharing in ds.sharing.values:
        cells = [f"{float(ds[metric].sel(sharing=sharing, integration=i)):.2f}" for i in ds.integration.values]
        lines.append(markdown_row([str(sharing), *cells]))
    return "\n".join(lines)


def run_bast_table(out_dir: str | Path, *, spec=None, root: str | Path | None = None,
                   model_options: dict[str, Any] | None = None, loss: str = "MIX", epochs: int = 8,
                   batch_size: int = 32, lr: float = 1e-3, seed: int = 0, sounds_per_kind: int = 1,
                   progress: bool = False):
    """Train, score and explain the six BAST combinations; write ``bast_table.nc`` and ``bast_table.md``.

    Parameters
    ----------
    out_dir
        Folder of the results (written atomically).
    spec
        A :class:`~xai_loc.data.bast_scenes.BastSceneSpec` (default: 120 sounds, as the shipped model).
    root
        Data root of the scenes.
    model_options
        BAST options shared by the six models (default :data:`TABLE_MODEL`).
    loss, epochs, batch_size, lr, seed
        The training recipe (:func:`xai_loc.models.bast.train_bast`); it, ``model_options`` and both
        splits of ``spec`` are checked before anything is rendered (:func:`~xai_loc.models.bast.prepare_bast`).
    sounds_per_kind
        Sounds of each kind in the relevance view's mirror pairs.

    Returns
    -------
    xarray.Dataset
        Metrics per ``(sharing, integration)`` (:func:`~xai_loc.models.bast.evaluate_bast`); ``output_sin``,
        ``relevance_left``, ``relevance_right`` per ``(sharing, integration, pair, side)``;
        ``train_cpu_minutes``;
        ``mirror_contrast`` and ``ear_balance_left_sources`` / ``..._right_sources``.
    """
    import xarray as xr

    from xai_loc.cli_params import check_out_dir
    from xai_loc.data.bast_scenes import BastSceneSpec
    from xai_loc.explain.attn_lrp import explain_bast
    from xai_loc.io import write_files_atomic
    from xai_loc.models.bast import BAST, evaluate_bast, prepare_bast, train_bast
    from xai_loc.models.trainer import seeded

    out_dir = check_out_dir(out_dir, "output folder")  # before hours of rendering and training
    spec = spec or BastSceneSpec(n_sounds=120).named()
    options = dict(TABLE_MODEL if model_options is None else model_options)
    _, train_set, test_set, train_x, test_x = prepare_bast(spec, options, loss=loss, epochs=epochs,
                                                           batch_size=batch_size, lr=lr, seed=seed, root=root,
                                                           progress=progress)
    pairs = mirror_pairs(test_set.azimuth.values, test_set.sound_id.values, sounds_per_kind=sounds_per_kind,
                         sound_kind=test_set.sound_kind.values)
    probe = test_x[torch.from_numpy(pairs.reshape(-1))]

    shape = (len(SHARING), len(INTEGRATION_ORDER))
    metrics = {m: np.full(shape, np.nan) for m in METRICS}
    minutes = np.full(shape, np.nan)
    rel = {k: np.full((*shape, len(pairs), 2), np.nan) for k in ("left", "right", "output")}
    for i, sharing in enumerate(SHARING):
        for j, integration in enumerate(INTEGRATION_ORDER):
            with seeded(seed):
                model = BAST(integration=integration, share_weights=sharing == "SP", front_end=False, **options)
            info = train_bast(model, train_x, train_set.azimuth.values, loss=loss, epochs=epochs,
                              batch_size=batch_size, lr=lr, seed=seed, progress=progress)
            minutes[i, j] = info["cpu_seconds"] / 60.0
            scores = evaluate_bast(model, test_x, test_set.azimuth.values)
            for m in METRICS:
                metrics[m][i, j] = np.nan if scores[m] is None else scores[m]
            lrp = explain_bast(model, probe, "attn_lrp", target="sin")["spectrogram"]
            by_ear = relevance_by_ear(lrp)
            rel["left"][i, j] = by_ear["left"].reshape(len(pairs), 2)
            rel["right"][i, j] = by_ear["right"].reshape(len(pairs), 2)
            rel["output"][i, j] = lrp.output.values.reshape(len(pairs), 2)

    total = rel["left"] + rel["right"]
    balance = ear_balance(rel["left"], rel["right"])
    dims, pdims = ("sharing", "integration"), ("sharing", "integration", "pair", "side")
    ds = xr.Dataset(
        {
            **{m: (dims, metrics[m], {"units": "degree" if m.startswith(("mean", "median")) else "1"})
               for m in METRICS},
            "train_cpu_minutes": (dims, minutes, {"units": "min", "description": "CPU time of the training"}),
            "output_sin": (pdims, rel["output"], {"description": "lateral output sin az (positive: left)"}),
            "relevance_left": (pdims, rel["left"], {"description": "AttnLRP relevance of sin az on the left ear"}),
            "relevance_right": (pdims, rel["right"], {"description": "AttnLRP relevance of sin az on the right ear"}),
            "mirror_contrast": (dims, (total[..., 0] - total[..., 1]).mean(axis=-1),
                                {"description": "mean over mirror pairs of (R_L + R_R)(left source) - "
                                                "(R_L + R_R)(right source); near 0: left and right not told apart"}),
            "ear_balance_left_sources": (dims, balance[..., 0].mean(axis=-1),
                                         {"description": "(R_L - R_R) / (|R_L| + |R_R|), sources on the left"}),
            "ear_balance_right_sources": (dims, balance[..., 1].mean(axis=-1),
                                          {"description": "(R_L - R_R) / (|R_L| + |R_R|), sources on the right"}),
        },
        coords={"sharing": list(SHARING), "integration": list(INTEGRATION_ORDER), "pair": np.arange(len(pairs)),
                "side": ["left", "right"],
                "pair_azimuth": (("pair", "side"), test_set.azimuth.values[pairs], {"units": "degree"}),
                "pair_sound": ("pair", test_set.sound_key.values[pairs[:, 0]])},
        attrs={"experiment": "BAST integration x weight sharing (Kuang et al. 2022)", "loss": loss,
               "epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
               "model_options": json.dumps(options, sort_keys=True), "scenes": json.dumps(spec.to_dict()),
               "scenes_digest": spec.digest(), "n_train": len(train_x), "n_test": len(test_x),
               "threads": torch.get_num_threads(), "explanation": "AttnLRP (epsilon 1e-6), target sin az",
               "xai_loc_version": __version__},
    )
    text = ["# BAST: integration x weight sharing", "",
            f"{len(train_x)} training scenes, {len(test_x)} test scenes of held-out sounds; loss {loss}, {epochs} "
            f"epochs; model {options}.", "", "Mean angular error (degrees):", "", markdown_table(ds), "",
            "Accuracy within 10 degrees:", "", markdown_table(ds, "accuracy_10"), "",
            "Lateral targets answered in the other hemifield or on the median plane (share):", "",
            markdown_table(ds, "lateral_sign_error"),
            "", "Front-back confusions (share):", "", markdown_table(ds, "front_back_rate"),
            "", "Mirror contrast of the lateral output's relevance (near 0: left/right not told apart):", "",
            markdown_table(ds, "mirror_contrast"), "", "Training CPU minutes:", "",
            markdown_table(ds, "train_cpu_minutes"),
            ""]
    write_files_atomic({out_dir / "bast_table.nc": ds, out_dir / "bast_table.md": "\n".join(text)})
    return ds


def mirror_relevance(model, scenes, *, target: str | float = "sin", sounds_per_kind: int = 1, n_steps: int = 32):
    """Where one model's explanations of mirror-pair scenes lie: per ear and frequency, three methods.

    Parameters
    ----------
    model
        A BAST model with its front end, or a checkpoint path.
    scenes
        A test split of :mod:`xai_loc.data.bast_scenes` (``waveforms``, ``azimuth``, ``sound_id``,
        ``sound_kind``).
    target
        Output explained by AttnLRP and Integrated Gradients (``'sin'``: the lateral component).

    Returns
    -------
    xarray.Dataset
        ``mass (explainer, pair, side, ear, frequency)``: relevance summed over time (rollout: its
        share); ``ear_balance (explainer, side)``: mean ``(L - R) / (|L| + |R|)`` over pairs (the
        rollout's is 0 by construction: the integration sends half of every token to each ear);
        ``low_share (explainer)``: share of ``|mass|`` below :data:`DUPLEX_SPLIT_HZ`;
        ``output (pair, side)`` the explained output.
    """
    import xarray as xr

    from xai_loc.explain.attn_lrp import explain_bast
    from xai_loc.explain.attribute import resolve_model

    model, info = resolve_model(model)
    pairs = mirror_pairs(scenes.azimuth.values, scenes.sound_id.values, sounds_per_kind=sounds_per_kind,
                         sound_kind=scenes.sound_kind.values)
    x = scenes.waveforms.values[pairs.reshape(-1)]
    azimuth = scenes.azimuth.values[pairs.reshape(-1)]
    options = {"attn_lrp": {"target": target, "azimuth": azimuth},
               "integrated_gradients": {"target": target, "azimuth": azimuth, "n_steps": n_steps},
               "attention_rollout": {}}
    maps = {method: explain_bast(model, x, method, **kwargs)["spectrogram"] for method, kwargs in options.items()}
    shape = (len(pairs), 2, 2, -1)
    mass = np.stack([m.sum("time").values.reshape(shape) for m in maps.values()])
    by_ear = mass.sum(axis=-1)
    balance = ear_balance(by_ear[..., 0], by_ear[..., 1])
    freq = maps["attn_lrp"].frequency.values
    low = np.abs(mass[..., freq < DUPLEX_SPLIT_HZ]).sum(axis=(1, 2, 3, 4)) / np.abs(mass).sum(axis=(1, 2, 3, 4))
    return xr.Dataset(
        {"mass": (("explainer", "pair", "side", "ear", "frequency"), mass),
         "ear_balance": (("explainer", "side"), balance.mean(axis=1), {"description": "(L - R) / (|L| + |R|)"}),
         "low_share": ("explainer", low, {"description": f"share of |relevance| below {DUPLEX_SPLIT_HZ:g} Hz"}),
         "output": (("pair", "side"), maps["attn_lrp"].output.values.reshape(len(pairs), 2))},
        coords={"explainer": list(maps), "pair": np.arange(len(pairs)), "side": ["left", "right"],
                "ear": ["left", "right"], "frequency": ("frequency", freq, {"units": "Hz"}),
                "pair_azimuth": (("pair", "side"), scenes.azimuth.values[pairs], {"units": "degree"})},
        attrs={**{k: v for k, v in info.items() if isinstance(v, str)}, "target": str(target),
               "probe": "relevance view of mirror pairs (BAST)", "xai_loc_version": __version__,
               "integrated_gradients_steps": int(n_steps)},
    )
