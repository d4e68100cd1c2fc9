"""Room-impulse-response backends, registered by name.

Every backend takes a simulation ``convention`` (:mod:`xai_loc.acoustics.conventions`;
default ``"gpurir"``) and returns responses under it: image sources of amplitude
``(sign beta)**n / (4 pi d)`` arriving at ``d / c`` with no global delay and no high-pass
filter, ``convention.rir_length(t_max, fs)`` samples long, as a float32 array ``(S, M, N)``
(:func:`simulate_rirs`; with ``as_tensor`` a tensor on the device, where the torch backend
leaves it: a GPU rendering never sees the responses on the host).

``torch``
    xai-loc's image-source simulator (:mod:`xai_loc.acoustics.ism`); CPU or CUDA; every
    convention.
``pyroomacoustics``
    The reference implementation, converted to xai-loc's amplitude and timing (its ``1 / d``
    amplitudes divided by ``4 pi``, its 40-sample filter delay removed, its high-pass off).
    Its reflections keep their sign (``+beta``), so it serves conventions with
    ``reflection_sign = +1`` only. Slow for long T60; used to validate the torch simulator.
``gpurir``
    gpuRIR itself (CUDA only, installed from its source repository), when importable, with the
    paper's settings (``activateLUT(True)``, ``activateMixedPrecision(False)``); conventions
    that describe gpuRIR only.

Each backend declares what its callers need to know of it (:class:`BackendTraits`, in
:data:`TRAITS`): whether it takes a seed, where its diffuse tail starts, which devices it
makes its responses on and how its arguments are checked without simulating (:func:`check_rirs`), so that
stores and the component split never test a backend's name.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from xai_loc.acoustics.conventions import get_convention
from xai_loc.acoustics.room import ShoeBox
from xai_loc.errors import InputError

RirBackend = Callable[..., "np.ndarray | torch.Tensor"]
BACKENDS: dict[str, RirBackend] = {}


def _no_tail(options: Mapping, t60: float) -> None:
    return None


def _no_check(room: ShoeBox, sources, mics, t60: float, **kwargs) -> None:
    return None


@dataclass(frozen=True)
class BackendTraits:
    """What callers of a backend need to know of it beyond its options.

    Attributes
    ----------
    seeded
        It takes a ``seed`` (of a diffuse tail): a store passes one per source.
    devices
        Torch device types it makes its responses on when asked through ``device``; empty: it
        chooses its own (gpuRIR: CUDA) and hands them back on the host.
    diffuse_start
        ``diffuse_start(options, t60)``: seconds at which the diffuse (statistical) tail of its
        responses starts under ``options``; None without one.
    check
        ``check(room, sources, mics, t60, **kwargs)`` (the backend's arguments): refuses in one line,
        computing no response, what the backend would refuse for these sources, so that a data set
        refuses a source before it simulates the first (:func:`check_rirs`); the default checks nothing.
    """

    seeded: bool = False
    devices: tuple[str, ...] = ("cpu",)
    diffuse_start: Callable[[Mapping, float], float | None] = _no_tail
    check: Callable[..., None] = _no_check


#: Traits of every registered backend, by name.
TRAITS: dict[str, BackendTraits] = {}


def register_backend(name: str, traits: BackendTraits | None = None) -> Callable[[RirBackend], RirBackend]:
    """Register an RIR backend ``f(room, sources, mics, t60, *, t_max, device, convention, **options)``
    returning the responses as an array or a tensor (see :func:`simulate_rirs`), with its ``traits``
    (default: no seed, no diffuse tail, the CPU only)."""

    def wrap(func: RirBackend) -> RirBackend:
        BACKENDS[name], TRAITS[name] = func, traits or BackendTraits()
        return func

    return wrap


def _ism_tail(options: Mapping, t60: float) -> float | None:
    from xai_loc.acoustics.ism import diffuse_start

    return diffuse_start(t60, options.get("mode", "ism"), options.get("t_diff"))


def _gpurir_tail(options: Mapping, t60: float) -> float | None:
    return None if options.get("t_diff") is None else float(options["t_diff"])


def _ism_check(room: ShoeBox, sources, mics, t60: float, **kwargs) -> None:
    from xai_loc.acoustics.ism import check_image_sources

    check_image_sources(room, sources, mics, t60, **kwargs)


@register_backend("torch", BackendTraits(seeded=True, devices=("cpu", "cuda"), diffuse_start=_ism_tail,
                                         check=_ism_check))
def torch_backend(room: ShoeBox, sources, mics, t60: float, *, t_max=None, device="cpu", convention=None,
                  **options) -> torch.Tensor:
    """xai-loc's image-source simulator; ``options`` go to :func:`~xai_loc.acoustics.ism.image_source_rirs`."""
    from xai_loc.acoustics.ism import image_source_rirs

    return image_source_rirs(room, sources, mics, t60, t_max=t_max, device=device, convention=convention, **options)


def _reference_check(backend: str, follows: Callable, refusal: str, room: ShoeBox, sources, mics, t60: float,
                     t_max=None, max_order=None, convention=None):
    """What a reference backend (pyroomacoustics, gpuRIR) refuses before it runs: a convention it cannot follow
    (``follows(conv)`` false; ``refusal`` says why, before the convention's name), the response's length and
    ``max_order``, and the geometry of every source; returns the convention, ``t60``, ``t_max``, ``max_order``, the
    checked sources and microphones."""
    from xai_loc.acoustics.ism import check_geometry, check_response

    conv = get_convention(convention)
    if not follows(conv):
        raise InputError(f"backend {backend!r} {refusal} {conv.name!r}; use backend 'torch' or convention {backend!r}")
    t60, t_max, max_order = check_response(room, t60, t_max, max_order)
    src, mic, _ = check_geometry(room, sources, mics, t_max)
    return conv, t60, t_max, max_order, src, mic


def _pyroomacoustics_check(room: ShoeBox, sources, mics, t60: float, *, t_max=None, device="cpu", convention=None,
                           max_order=None):
    """What :func:`pyroomacoustics_backend` refuses before pyroomacoustics runs (a device other than the CPU,
    :func:`_reference_check`, and more images than fit in memory: it lists every image of its reflection order, the
    Sabine one unless ``max_order``); returns what :func:`_reference_check` returns."""
    from xai_loc.acoustics.ism import MAX_IMAGES

    try:
        on_cpu = torch.device(device).type == "cpu"
    except (RuntimeError, TypeError):
        on_cpu = False
    if not on_cpu:
        raise InputError(f"backend 'pyroomacoustics' runs on the CPU only, not on device {device!r}")
    checked = _reference_check("pyroomacoustics", lambda conv: conv.reflection_sign == 1,
                               "keeps the sign of reflections and cannot follow convention", room, sources, mics,
                               t60, t_max, max_order, convention)
    import pyroomacoustics as pra

    order = checked[3] if checked[3] is not None else pra.inverse_sabine(checked[1], list(room.size), c=room.c)[1]
    count = (2 * order + 1) * (2 * order**2 + 2 * order + 3) / 3  # images of at most `order` reflections
    if count > MAX_IMAGES:
        raise InputError(f"backend 'pyroomacoustics' lists about {count:.2g} image sources per source at T60="
                         f"{checked[1]} s in room {room.size} (reflection order {order}); at most {MAX_IMAGES:.0e} "
                         "fit in memory: give a larger room, a shorter T60 or a max_order, or use backend 'torch'")
    return checked


@register_backend("pyroomacoustics", BackendTraits(devices=("cpu",), check=_pyroomacoustics_check))
def pyroomacoustics_backend(
    room: ShoeBox, sources, mics, t60: float, *, t_max=None, device="cpu", convention=None,
    max_order: int | None = None
) -> np.ndarray:
    """pyroomacoustics' image-source method, in xai-loc's amplitude and timing (``+beta`` conventions only)."""
    conv, t60, t_max, max_order, src, mic = _pyroomacoustics_check(room, sources, mics, t60, t_max=t_max, device=device,
                                                                   convention=convention, max_order=max_order)
    import pyroomacoustics as pra

    n_samples = conv.rir_length(t_max, room.fs)
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


#: Why backend ``gpurir`` refuses to run without its package.
_GPURIR_MISSING = "backend 'gpurir' needs the gpuRIR package (CUDA); install it or use 'torch'"


def _gpurir_check(room: ShoeBox, sources, mics, t60: float, *, t_max=None, device="cuda", convention=None,
                  t_diff=None):
    """What :func:`gpurir_backend` refuses before gpuRIR runs (gpuRIR itself asserts ``Tdiff <= Tmax``):
    :func:`_reference_check`, ``t_diff`` and a missing gpuRIR package (looked up, not imported: a store refuses it
    before its first source); returns the convention, ``t60``, ``t_max``, the checked sources and microphones."""
    from importlib.util import find_spec

    from xai_loc.acoustics.ism import check_t_diff

    def follows(conv) -> bool:
        return (conv.reflection_sign, conv.images, conv.length, conv.sub_sample) == (-1, "t2n", "even", "exact")

    conv, t60, t_max, _, src, mic = _reference_check("gpurir", follows, "simulates gpuRIR's own convention, not", room,
                                                     sources, mics, t60, t_max, convention=convention)
    if t_diff is not None:
        check_t_diff(t_diff, t_max)
    if find_spec("gpuRIR") is None:
        raise InputError(_GPURIR_MISSING)
    return conv, t60, t_max, src, mic


@register_backend("gpurir", BackendTraits(devices=(), diffuse_start=_gpurir_tail, check=_gpurir_check))
def gpurir_backend(room: ShoeBox, sources, mics, t60: float, *, t_max=None, device="cuda", convention=None,
                   t_diff=None) -> np.ndarray:
    """gpuRIR's image-source method (needs CUDA and the gpuRIR package), as the paper ran it."""
    conv, t60, t_max, src, mic = _gpurir_check(room, sources, mics, t60, t_max=t_max, convention=convention,
                                               t_diff=t_diff)
    try:
        import gpuRIR
    except ImportError:  # found by the check, yet not importable (no CUDA)
        raise InputError(_GPURIR_MISSING) from None
    for names, value in ((("activateLUT", "activate_lut"), True),
                         (("activateMixedPrecision", "activate_mixed_precision"), False)):
        setting = next((getattr(gpuRIR, n) for n in names if hasattr(gpuRIR, n)), None)
        if setting is not None:
            setting(value)
    beta = gpuRIR.beta_SabineEstimation(list(room.size), t60)
    n_img = gpuRIR.t2n(t_max, list(room.size), c=room.c)
    t_diff = t_max if t_diff is None else t_diff
    rirs = gpuRIR.simulateRIR(list(room.size), beta, src, mic, n_img, t_max, room.fs, Tdiff=t_diff, c=room.c)
    n_samples = conv.rir_length(t_max, room.fs)
    out = np.zeros((src.shape[0], mic.shape[0], n_samples), dtype=np.float32)
    out[..., : min(n_samples, rirs.shape[-1])] = rirs[..., :n_samples]
    return out


def _keywords(backend: str) -> tuple[list, bool]:
    """The keyword-only parameters of a registered backend and of the function it forwards its options to, and
    whether it takes other keywords still (a plug-in's ``**options`` that go elsewhere)."""
    import inspect

    from xai_loc.acoustics.ism import image_source_rirs

    funcs = [BACKENDS[backend]] + ([image_source_rirs] if backend == "torch" else [])
    params = [param for func in funcs for param in inspect.signature(func).parameters.values()]
    keywords = [param for param in params if param.kind is inspect.Parameter.KEYWORD_ONLY]
    return keywords, backend != "torch" and any(param.kind is inspect.Parameter.VAR_KEYWORD for param in params)


def option_defaults(backend: str) -> dict[str, object]:
    """Default value of every keyword option of a registered backend (those of the function it forwards to included).

    Used to compare option sets by meaning: ``{}`` and ``{'mode': 'ism'}`` ask the torch
    backend for the same thing. ``t_max``, ``device``, ``dtype`` and ``convention`` are not options.
    """
    import inspect

    return {param.name: param.default for param in _keywords(backend)[0] if param.default is not inspect.Parameter.empty
            and param.name not in ("t_max", "device", "dtype", "convention")}


def without_defaults(backend: str, options: Mapping, t60: float) -> dict:
    """``options`` of registered ``backend`` less those that ask it at ``t60`` for what it does without them: options
    at their defaults (:func:`option_defaults`; ``{}`` and ``{'mode': 'ism'}`` ask the torch backend for the same
    responses) and a ``t_diff`` where the others start the diffuse tail (:attr:`BackendTraits.diffuse_start`,
    computed as the backend computes it: ``t_diff=0.15`` at T60 0.6 s in hybrid mode is its default, T60 / 4)."""
    defaults = option_defaults(backend)
    kept = {k: v for k, v in options.items() if k not in defaults or defaults[k] != v}
    others = {k: v for k, v in kept.items() if k != "t_diff"}
    return others if "t_diff" in kept and kept["t_diff"] == TRAITS[backend].diffuse_start(others, t60) else kept


def check_options(backend: str, names, taken: tuple[str, ...] = ()) -> None:
    """Refuse an unknown backend, or an option name it does not take, in one line naming what is allowed
    (less ``taken``: the names a caller sets itself)."""
    if backend not in BACKENDS:
        raise InputError(f"RIR backend {backend!r} is unknown; allowed: {', '.join(BACKENDS)}")
    keywords, open_ended = _keywords(backend)
    allowed = [name for name in dict.fromkeys(param.name for param in keywords) if name not in taken]
    unknown = [name for name in names if name not in allowed]
    if unknown and not open_ended:
        raise InputError(f"RIR backend {backend!r} has no option {unknown[0]!r}; allowed: {', '.join(allowed)}")


def check_rirs(backend: str, room: ShoeBox, sources, mics, t60: float, **kwargs) -> None:
    """Refuse in one line, computing no response, what :func:`simulate_rirs` with these arguments would refuse
    where the backend's :attr:`BackendTraits.check` can tell (a hybrid ``t_diff`` too early for a source's
    distance, ...): cheap, so a data set checks all its sources at once before it simulates the first."""
    check_options(backend, kwargs)
    TRAITS[backend].check(room, sources, mics, t60, **kwargs)


def simulate_rirs(backend: str, room: ShoeBox, sources, mics, t60: float, *, as_tensor: bool = False,
                  **kwargs) -> np.ndarray | torch.Tensor:
    """Dispatch to a registered backend by name (see :data:`BACKENDS`).

    ``kwargs``: ``t_max``, ``device``, ``convention`` (default ``"gpurir"``) and the backend's
    options. Returns a float32 array ``(S, M, N)``; with ``as_tensor``, a float32 tensor on
    ``device`` (no copy through the host where the backend made it there).
    """
    check_options(backend, kwargs)
    rirs = BACKENDS[backend](room, sources, mics, t60, **kwargs)
    if as_tensor:
        return torch.as_tensor(rirs, dtype=torch.float32, device=kwargs.get("device", "cpu"))
    if isinstance(rirs, torch.Tensor):
        return rirs.cpu().numpy().astype(np.float32, copy=False)
    return rirs
