"""Room-impulse-response backends, registered by name.

Every backend returns responses in xai-loc's convention (gpuRIR's): image sources of
amplitude ``beta**n / (4 pi d)`` arriving at ``d / c`` with no global delay and no high-pass
filter, ``ceil(t_max * fs)`` samples long, as a float32 array ``(S, M, N)``.

``torch``
    xai-loc's vectorized image-source simulator (:mod:`xai_loc.acoustics.ism`); CPU or CUDA.
``pyroomacoustics``
    The reference implementation, converted to the convention above (its ``1 / d``
    amplitudes divided by ``4 pi``, its 40-sample filter delay removed, its high-pass off).
    Slow for long T60; used to validate the torch simulator.
``gpurir``
    gpuRIR (CUDA only, installed from its source repository), when importable.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from xai_loc.acoustics.room import ShoeBox, check_t60
from xai_loc.errors import InputError

RirBackend = Callable[..., np.ndarray]
BACKENDS: dict[str, RirBackend] = {}


def register_backend(name: str) -> Callable[[RirBackend], RirBackend]:
    """Register an RIR backend ``f(room, sources, mics, t60, *, t_max, device, **options)``."""

    def wrap(func: RirBackend) -> RirBackend:
        BACKENDS[name] = func
        return func

    return wrap


@register_backend("torch")
def torch_backend(room: ShoeBox, sources, mics, t60: float, *, t_max=None, device="cpu", **options) -> np.ndarray:
    """xai-loc's image-source simulator; ``options`` go to :func:`~xai_loc.acoustics.ism.image_source_rirs`."""
    from xai_loc.acoustics.ism import image_source_rirs

    rirs = image_source_rirs(room, sources, mics, t60, t_max=t_max, device=device, **options)
    return rirs.cpu().numpy().astype(np.float32, copy=False)


@register_backend("pyroomacoustics")
def pyroomacoustics_backend(
    room: ShoeBox, sources, mics, t60: float, *, t_max=None, device="cpu", max_order: int | None = None
) -> np.ndarray:
    """pyroomacoustics' image-source method, in xai-loc's amplitude and timing convention."""
    import pyroomacoustics as pra

    if device != "cpu":
        raise InputError(f"backend 'pyroomacoustics' runs on the CPU only, not on device {device!r}")
    t60 = check_t60(t60, room)
    src = room.check_inside(sources, "source")
    mic = room.check_inside(mics, "microphone")
    t_max = t60 if t_max is None else float(t_max)
    n_samples = int(math.ceil(t_max * room.fs))
    e_absorption, sabine_order = pra.inverse_sabine(t60, list(room.size), c=room.c)
    order = sabine_order if max_order is None else max_order
    out = np.zeros((src.shape[0], mic.shape[0], n_samples), dtype=np.float32)
    hpf = pra.constants.get("rir_hpf_enable")
    delay = pra.constants.get("frac_delay_length") // 2
    pra.constants.set("rir_hpf_enable", False)
    try:
        for i, s in enumerate(src):
            sim = pra.ShoeBox(list(room.size), fs=room.fs, materials=pra.Material(e_absorption),
                              max_order=order, air_absorption=False, use_rand_ism=False)
            sim.set_sound_speed(room.c)
            sim.add_source(s)
            sim.add_microphone_array(mic.T)
            sim.compute_rir()
            for m in range(mic.shape[0]):
                h = np.asarray(sim.rir[m][0][delay : delay + n_samples]) / (4.0 * math.pi)
                out[i, m, : h.size] = h
    finally:
        pra.constants.set("rir_hpf_enable", hpf)
    return out


@register_backend("gpurir")
def gpurir_backend(room: ShoeBox, sources, mics, t60: float, *, t_max=None, device="cuda", t_diff=None) -> np.ndarray:
    """gpuRIR's image-source method (needs CUDA and the gpuRIR package)."""
    try:
        import gpuRIR
    except ImportError:
        raise InputError("backend 'gpurir' needs the gpuRIR package (CUDA); install it or use 'torch'") from None
    t60 = check_t60(t60, room)
    src = room.check_inside(sources, "source")
    mic = room.check_inside(mics, "microphone")
    t_max = t60 if t_max is None else float(t_max)
    beta = gpuRIR.beta_SabineEstimation(list(room.size), t60)
    n_img = gpuRIR.t2n(t_max, list(room.size), c=room.c)
    t_diff = t_max if t_diff is None else t_diff
    rirs = gpuRIR.simulateRIR(list(room.size), beta, src, mic, n_img, t_max, room.fs, Tdiff=t_diff, c=room.c)
    n_samples = int(math.ceil(t_max * room.fs))
    out = np.zeros((src.shape[0], mic.shape[0], n_samples), dtype=np.float32)
    out[..., : min(n_samples, rirs.shape[-1])] = rirs[..., :n_samples]
    return out


def option_defaults(backend: str) -> dict[str, object]:
    """Default value of every keyword option of a registered backend (those of the function it forwards to included).

    Used to compare option sets by meaning: ``{}`` and ``{'mode': 'ism'}`` ask the torch
    backend for the same thing.
    """
    import inspect

    from xai_loc.acoustics.ism import image_source_rirs

    funcs = [BACKENDS[backend]] + ([image_source_rirs] if backend == "torch" else [])
    return {name: param.default for func in funcs for name, param in inspect.signature(func).parameters.items()
            if param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is not inspect.Parameter.empty
            and name not in ("t_max", "device", "dtype")}


def simulate_rirs(backend: str, room: ShoeBox, sources, mics, t60: float, **kwargs) -> np.ndarray:
    """Dispatch to a registered backend by name (see :data:`BACKENDS`)."""
    if backend not in BACKENDS:
        raise InputError(f"RIR backend {backend!r} is unknown; allowed: {', '.join(BACKENDS)}")
    return BACKENDS[backend](room, sources, mics, t60, **kwargs)
