"""Image-source room impulse responses (CPU or CUDA), under a named simulation convention.

The default convention, ``"gpurir"``, is gpuRIR's (Diaz-Guerra et al., 2021), which the
paper's models were trained on: an image source after ``n`` reflections contributes
``(-beta)**n / (4 pi d)`` at ``d / c`` with no global delay, drawn as a sinc under an 8 ms
Hann window, images on gpuRIR's ``t2n`` grid, ``ceil(t_max fs)`` samples rounded up to even.
:mod:`xai_loc.acoustics.conventions` lists every choice and the ``"pyroomacoustics"``
convention (xai-loc's earlier simulator, kept byte for byte).

Why our own code: pyroomacoustics needs ~6 s per source for 16 microphones at T60 = 0.6 s
(half a million image sources per microphone), and gpuRIR needs CUDA and a compiler.

How the ``"exact"`` arrival filter stays cheap with 128 taps. Every image of a microphone
arrives at ``tau = k + f`` samples (``k`` the nearest integer, ``|f| <= 1/2``) and adds
``a K(t - tau)`` to the response, ``K`` the Hann-windowed sinc. As a function of ``f`` on
``[-1/2, 1/2]``, each tap ``K(j - f)`` is smooth enough that 8 Chebyshev polynomials
reproduce it to about 1e-6 (:data:`CHEB_TERMS`): ``K(j - f) = sum_r B_r[j] T_r(2 f)``. So an
image costs 8 additions into 8 sequences at its integer sample ``k`` (a compiled loop on the
CPU, ``index_add_`` on CUDA), and the response is ``sum_r B_r * s_r``: 8 FFT convolutions
per microphone, whatever the number of images. The work is proportional to the images and
not to the taps.

Two modes:

``"ism"`` (default)
    Image sources up to ``t_max`` (the paper's set-up: ``t_max = T60``). Exact within the
    image-source model; cost grows with ``(c t_max)**3 / V``.
``"hybrid"``
    Image sources up to ``t_diff``, then Gaussian noise under an exponential envelope that
    decays 60 dB per T60 (gpuRIR's diffuse-tail idea), carrying at each microphone the energy of the image
    sources it replaces (:func:`_late_energy`). gpuRIR fits the level to the response before ``t_diff`` instead;
    in a shoebox the image sources' energy is no Sabine exponential (strong first reflections after the direct
    sound, then flutter between the farthest walls: every 48 ms in the paper room), and such a fit held 0.19-5.0x
    the late energy it replaced (paper room, T60 0.15 and 0.6 s, 36 sources, ``t_diff`` from its smallest to
    T60 / 4, per microphone); the tail now holds 0.65-1.6x of it (90 % within 0.83-1.2x), what is left being
    interference between arrivals. Under ``+beta`` (convention ``"pyroomacoustics"``) all reflections also add up
    to a slow offset below 20 Hz that a white tail does not carry (pyroomacoustics high-passes it away). Much faster
    for long T60, but the late reflections lose their exact geometry (inter-microphone coherence of the tail is zero).
"""
from __future__ import annotations

import contextlib
import functools
import math
import threading
from typing import NamedTuple

import numpy as np
import torch

from xai_loc.acoustics.conventions import Convention, get_convention
from xai_loc.acoustics.room import MAX_T60, ShoeBox, SourceError, check_t60, source_at, source_mic_distances
from xai_loc.checks import is_integer, is_real
from xai_loc.errors import InputError
from xai_loc.runtime import deterministic_algorithms, resolve_device

#: Taps on each side of the fractional-delay sinc of the ``"lut64"`` filter (16 taps in all).
FD_HALF_WIDTH = 8
#: Sub-sample phases of the ``"lut64"`` sinc look-up table.
LUT_PHASES = 64
#: Chebyshev terms of the ``"exact"`` filter (fixed: the compiled loop is unrolled for 8).
CHEB_TERMS = 8
#: Image-source modes.
MODES = ("ism", "hybrid")
#: Bound on images x microphones processed at once (memory stays below ~0.5 GB).
_CHUNK = 4_000_000
#: Most images one source may list (every path but the compiled CPU loop holds them all: ~90 bytes each on
#: the CPU, so ~4.5 GB); the ``"reach"`` set of the paper room reaches it near T60 = 2.7 s.
MAX_IMAGES = 50_000_000
#: Most images x microphones of one source the compiled CPU loop (``"exact"`` filter) may visit: it holds no image
#: list, but visits about 1e8 pairs a second on one core (measured: a 0.25 m room at T60 0.3 s, 3e8 pairs, 2.1 s;
#: the paper room's 16 microphones at T60 1.2 s, 6.7e7 pairs, 0.7 s), so the bound takes about 17 minutes. The
#: paper room at T60 10 s (3.9e10 pairs) stays below it; a 1 cm room at T60 0.3 s (4.6e12) would run for half a day.
MAX_CPU_PAIRS = 100_000_000_000
#: Precisions of the responses.
DTYPES = (torch.float32, torch.float64)
#: A reflection order no image reaches: a larger ``max_order`` keeps every image, as None does.
_ANY_ORDER = np.iinfo(np.int64).max // 4
#: Shortest stretch of reflections, in seconds, a hybrid response draws as image sources after the latest direct
#: sound (a binaural one fits its diffuse tail to them; gpuRIR fits its tail to the last 10 ms before Tdiff).
TAIL_FIT_S = 0.01


# ----------------------------------------------------------------------------------------
# Argument checks shared by the backends
# ----------------------------------------------------------------------------------------

def check_dtype(dtype) -> torch.dtype:
    """``dtype`` if it is one of :data:`DTYPES`; a one-line :class:`InputError` otherwise."""
    if dtype not in DTYPES:
        raise InputError(f"dtype={dtype!r} is not allowed; allowed: {', '.join(map(str, DTYPES))}")
    return dtype


def check_response(room: ShoeBox, t60, t_max=None, max_order=None) -> tuple[float, float, int | None]:
    """Checked ``(t60, t_max, max_order)`` of a response in ``room``: ``t_max`` (default ``t60``) a positive
    duration of at most :data:`~xai_loc.acoustics.room.MAX_T60` seconds, ``max_order`` None or a non-negative
    integer (one no image reaches is None); a one-line :class:`InputError` otherwise."""
    t60 = check_t60(t60, room)
    if t_max is not None and not (is_real(t_max) and 0 < t_max <= MAX_T60):
        raise InputError(f"t_max={t_max!r} s is not allowed; give a positive duration of at most {MAX_T60:g} s")
    if max_order is not None and not (is_real(max_order) and int(max_order) == max_order and max_order >= 0):
        raise InputError(f"max_order={max_order!r} is not allowed; use a non-negative integer")
    unlimited = max_order is None or int(max_order) >= _ANY_ORDER
    return t60, t60 if t_max is None else float(t_max), None if unlimited else int(max_order)


def check_geometry(room: ShoeBox, sources, mics, t_max: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked source and microphone positions ``(S, 3)``, ``(M, 3)`` and their distances ``(S, M)`` in metres.

    Raises
    ------
    InputError
        If a position lies outside the room or there is no microphone; a
        :class:`~xai_loc.acoustics.room.SourceError` (naming the source's row and position) if a source lies
        within :data:`~xai_loc.acoustics.room.MIN_SOURCE_MIC_DISTANCE` of a microphone or its direct sound
        arrives at or after ``t_max`` (the response would hold none of it).
    """
    src = room.check_inside(sources, "source")
    mic = room.check_inside(mics, "microphone")
    if mic.shape[0] == 0:
        raise InputError("microphone positions of shape (0, 3) are not allowed; give at least one microphone")
    gap = source_mic_distances(src, mic)
    far = float(gap.max()) if gap.size else 0.0
    if far / room.c >= t_max:
        k, m = np.unravel_index(int(np.argmax(gap)), gap.shape)
        raise SourceError(f"{source_at(src, k)} is {far:.4g} m from microphone {m}: its direct sound arrives at "
                          f"{far / room.c:.6g} s, not before t_max={t_max} s; give t_max, or the T60 it defaults to, "
                          f"of at least {math.ceil(far / room.c * 1e4) / 1e4:g} s, or move the source closer", k)
    return src, mic, gap


# ----------------------------------------------------------------------------------------
# Image enumeration
# ----------------------------------------------------------------------------------------

def _axis_images(src: float, length: float, lo: float, hi: float, reach: float):
    """Image coordinates, wall-hit counts and distance lower bounds along one axis.

    Mirror index ``n`` and parity ``p`` give the coordinate ``(1 - 2p) src + 2 n L`` after
    ``|n - p| + |n|`` reflections (Allen & Berkley, 1979). ``lo``/``hi`` bound the
    receivers on this axis; images farther than ``reach`` from that interval are dropped.
    """
    n_max = int(math.ceil(reach / (2.0 * length))) + 1
    n = np.arange(-n_max, n_max + 1)
    coords = np.concatenate([src + 2.0 * n * length, -src + 2.0 * n * length])
    hits = np.concatenate([2 * np.abs(n), np.abs(n - 1) + np.abs(n)])
    gap = np.maximum(0.0, np.maximum(lo - coords, coords - hi))
    keep = gap <= reach
    return coords[keep], hits[keep], gap[keep]


def t2n(t_max: float, size, c: float) -> list[int]:
    """gpuRIR's ``t2n``: mirror indices per axis, ``ceil(2 t_max c / L)``."""
    return [int(n) for n in np.ceil(2.0 * t_max / (np.asarray(size, dtype=np.float64) / c))]


def _grid_axis(src: float, length: float, n_img: int):
    """gpuRIR's images along one axis: coordinates and wall-hit counts.

    Thread ``n`` of ``calcAmpTau_kernel`` takes ``k = n - N / 2`` (integer division), cell
    ``ceil(k / 2)`` and parity ``|k mod 2|``; the image lies at ``2 cell L + (1 - 2 parity) src``
    after ``|cell - parity| + |cell|`` reflections.
    """
    k = np.arange(n_img) - n_img // 2
    cell = -((-k) // 2)
    parity = np.abs(k) % 2
    return cell * 2.0 * length + (1 - 2 * parity) * src, np.abs(cell - parity) + np.abs(cell)


def _axes(conv: Convention, room: ShoeBox, src: np.ndarray, mics: np.ndarray, reach: float, t_max: float):
    """Per-axis image coordinates and hit counts of one source under a convention's image set."""
    if conv.images == "t2n":
        counts = t2n(t_max, room.size, room.c)
        return [_grid_axis(src[a], room.size[a], counts[a]) for a in range(3)]
    return [_axis_images(src[a], room.size[a], mics[:, a].min(), mics[:, a].max(), reach)[:2] for a in range(3)]


def _images(room: ShoeBox, src: np.ndarray, mics: np.ndarray, reach: float, max_order: int | None, axes=None,
            device: torch.device | None = None):
    """All image positions ``(K, 3)`` and reflection orders ``(K,)`` that can arrive within ``reach``.

    NumPy arrays; with ``device``, tensors made there (the per-axis lists go over, the ``K``
    images never pass through the host). The grid of per-axis candidates is reduced in torch
    either way, in slabs along x of at most ``_CHUNK`` cells (the whole grid can be far larger
    than the images kept): the same float64 operations as NumPy's, in the same order, so the
    images are the same bits.
    """
    lo, hi = mics.min(axis=0), mics.max(axis=0)
    if axes is None:
        axes = [_axis_images(src[a], room.size[a], lo[a], hi[a], reach)[:2] for a in range(3)]
    on = torch.device("cpu") if device is None else device
    (cx, hx), (cy, hy), (cz, hz) = ((torch.as_tensor(c, dtype=torch.float64, device=on),
                                     torch.as_tensor(h, dtype=torch.int64, device=on)) for c, h in axes)
    gx, gy, gz = ((torch.maximum(low - c, c - high)).clamp(min=0.0)
                  for c, low, high in zip((cx, cy, cz), lo.tolist(), hi.tolist(), strict=True))
    rows = max(1, _CHUNK // max(1, cy.numel() * cz.numel()))
    found = []
    for x0 in range(0, cx.numel(), rows):
        gap2 = gx[x0 : x0 + rows, None, None] ** 2 + gy[None, :, None] ** 2 + gz[None, None, :] ** 2
        keep = gap2 <= reach**2
        if max_order is not None:
            keep &= hx[x0 : x0 + rows, None, None] + hy[None, :, None] + hz[None, None, :] <= max_order
        ix, iy, iz = torch.nonzero(keep, as_tuple=True)
        ix += x0
        found.append((torch.stack([cx[ix], cy[iy], cz[iz]], dim=1), hx[ix] + hy[iy] + hz[iz]))
    if not any(orders.numel() for _, orders in found):  # not even the direct sound arrives within reach
        nearest = float(np.linalg.norm(mics - src, axis=1).min())
        raise InputError(f"a response of {reach / room.c:.6g} s holds no arrival: the direct sound takes "
                         f"{nearest / room.c:.6g} s; give t_max (and t_diff) of at least that")
    pos, order = (torch.cat(parts) for parts in zip(*found, strict=True))
    return (pos.numpy(), order.numpy()) if device is None else (pos, order)


def _image_count(room: ShoeBox, mics: np.ndarray, reach: float, max_order: int | None) -> float:
    """About how many images :func:`_images` lists: one per room volume in the microphones' bounding box
    grown by ``reach`` (Steiner's formula), and no more than the images of at most ``max_order``
    reflections (two per hit count and axis: the lattice points of an octahedron)."""
    a, b, c = mics.max(axis=0) - mics.min(axis=0)
    grown = (a * b * c + 2.0 * (a * b + b * c + c * a) * reach + math.pi * (a + b + c) * reach**2
             + 4.0 / 3.0 * math.pi * reach**3)
    count = grown / room.volume
    if max_order is not None:
        count = min(count, (2 * max_order + 1) * (2 * max_order**2 + 2 * max_order + 3) / 3)
    return count


@contextlib.contextmanager
def _in_fixed_order(device: torch.device):
    """``index_add_`` on ``device`` in a fixed order inside the block, so that a response is the same bits
    from run to run.

    On CUDA ``index_add_`` sums with atomic adds whose order changes between runs (images of one
    microphone share slots); torch's deterministic mode sorts the indices first
    (:func:`~xai_loc.runtime.deterministic_algorithms`, shared with training). The CPU's scatter
    is sequential already.
    """
    if device.type == "cpu":
        yield
        return
    with deterministic_algorithms():
        yield


# ----------------------------------------------------------------------------------------
# The "lut64" filter: xai-loc's earlier simulator, unchanged
# ----------------------------------------------------------------------------------------

def _filter_bank(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Windowed-sinc look-up table ``(LUT_PHASES, 2 W)``.

    Entry ``[q, j]`` is the tap of an arrival at sub-sample phase ``q / LUT_PHASES`` on the
    output sample ``j - W + 1`` samples after the arrival's integer sample.
    """
    w, p = FD_HALF_WIDTH, LUT_PHASES
    x = (torch.arange(2 * w, dtype=torch.float64) - w + 1)[None, :] - torch.arange(p, dtype=torch.float64)[:, None] / p
    taps = torch.sinc(x) * 0.5 * (1.0 + torch.cos(math.pi * x / w))
    return taps.to(device=device, dtype=dtype)


def _scatter_ism(
    room: ShoeBox,
    src: np.ndarray,
    mics: torch.Tensor,
    beta: float,
    n_samples: int,
    max_order: int | None,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Image-source response ``(M, n_samples)`` of one source, arrivals before ``n_samples``.

    Each arrival goes to the nearest of ``LUT_PHASES`` sub-sample slots, so a single scatter and one strided
    convolution with the sinc table replace per-image filter evaluation. The delay error is at most
    ``1 / (2 LUT_PHASES)`` samples in float64; in float32 the distances are rounded first, and about 4 % of the
    images land in a neighbouring slot, up to about 0.01 samples off (paper room, 16 microphones, T60 0.6 s).
    ``beta`` carries the sign.
    """
    reach = room.c * n_samples / room.fs
    pos, order = _images(room, src, mics.cpu().numpy(), reach, max_order, device=device)
    pos = pos.to(dtype)
    gain = torch.pow(torch.tensor(beta, device=device, dtype=dtype), order.to(dtype))
    gain /= 4.0 * math.pi
    n_mics, p, w = mics.shape[0], LUT_PHASES, FD_HALF_WIDTH
    width = (n_samples + 2 * w) * p
    limit = n_samples * p  # slots from here on arrive at or after t_max
    buf = torch.zeros(n_mics * width, device=device, dtype=dtype)
    scale = room.fs * p / room.c
    per_chunk = max(1, _CHUNK // max(1, pos.shape[0]))
    with _in_fixed_order(device):
        for m0 in range(0, n_mics, per_chunk):
            mic = mics[m0 : m0 + per_chunk]
            dist = torch.cdist(mic, pos, compute_mode="donot_use_mm_for_euclid_dist")  # (m, K)
            slot = torch.mul(dist, scale).add_(0.5).long()
            amp = torch.div(gain, dist).masked_fill_(slot >= limit, 0.0)
            offset = torch.arange(m0, m0 + mic.shape[0], device=device)[:, None] * width + w * p
            buf.index_add_(0, slot.clamp_(max=limit).add_(offset).view(-1), amp.view(-1))
    # Sinc filtering as one matrix product (slot phases x taps), then a sum along the
    # diagonals: arrival slot u contributes tap j to output sample u - 2 W + 1 + j.
    taps = buf.view(n_mics, n_samples + 2 * w, p) @ _filter_bank(device, dtype)
    out = taps[:, 2 * w - 1 : 2 * w - 1 + n_samples, 0].clone()
    for j in range(1, 2 * w):
        out += taps[:, 2 * w - 1 - j : 2 * w - 1 - j + n_samples, j]
    return out


# ----------------------------------------------------------------------------------------
# The "exact" filter: Chebyshev expansion of the fractional delay, FFT convolution
# ----------------------------------------------------------------------------------------

def hann_sinc(x: np.ndarray, taps: float) -> np.ndarray:
    """gpuRIR's arrival kernel: ``0.5 (1 + cos(2 pi x / Tw)) sinc(x)`` for ``|x| < Tw / 2``, else 0 (``Tw = taps``,
    the window width in samples, not necessarily whole)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.abs(x) < taps / 2.0, 0.5 * (1.0 + np.cos(2.0 * np.pi * x / taps)) * np.sinc(x), 0.0)


def _half_width(taps: float) -> int:
    """Largest ``|j|`` of a tap ``K(j - f)``, ``|f| <= 1/2``, that can be non-zero (``taps``: the window width)."""
    return math.floor(taps / 2) + 1


@functools.lru_cache(maxsize=8)
def _chebyshev_basis(taps: float) -> np.ndarray:
    """``B (CHEB_TERMS, 2 W + 1)``: ``K(j - u / 2) = sum_r B[r, j + W] T_r(u)`` for ``u`` in ``[-1, 1]``.

    Interpolation at the Chebyshev nodes (near the best polynomial approximation); for the
    128-tap kernel the largest error over ``u`` and ``j`` is below 1e-6.
    """
    w = _half_width(taps)
    nodes = np.cos(np.pi * (np.arange(CHEB_TERMS) + 0.5) / CHEB_TERMS)
    vander = np.polynomial.chebyshev.chebvander(nodes, CHEB_TERMS - 1)
    j = np.arange(-w, w + 1)
    return np.linalg.solve(vander, hann_sinc(j[None, :] - nodes[:, None] / 2.0, taps))


@functools.lru_cache(maxsize=32)
def _kernel_spectra(taps: float, n_fft: int, double: bool, transposed: bool = False) -> np.ndarray:
    """Real FFTs ``(CHEB_TERMS, n_fft // 2 + 1)`` of the basis kernels, zero-padded to ``n_fft`` (or transposed)."""
    from scipy import fft as sfft

    basis = _chebyshev_basis(taps)
    padded = np.zeros((CHEB_TERMS, n_fft))
    padded[:, : basis.shape[1]] = basis
    spectra = sfft.rfft(padded if double else padded.astype(np.float32), axis=1)
    return np.ascontiguousarray(spectra.T) if transposed else spectra


def _fft_length(n_samples: int, taps: float) -> int:
    from scipy import fft as sfft

    return sfft.next_fast_len(n_samples + 2 * _half_width(taps), real=True)


def _exact_reach(n_samples: int, taps: float, room: ShoeBox) -> tuple[float, int]:
    """Distance beyond which an image adds nothing to the first ``n_samples``, and the slots it may occupy."""
    # An arrival at tau touches t in (tau - Tw/2, tau + Tw/2); t <= n_samples - 1.
    tau_max = n_samples - 1 + taps / 2.0
    return tau_max * room.c / room.fs, n_samples + _half_width(taps)


#: Per-thread work arrays of :func:`_exact_cpu`, kept between calls: zeroing fresh pages of a
#: few MB per source costs more than the FFTs themselves at T60 = 0.15 s.
_WORK = threading.local()


def _workspace(n_mics: int, n_fft: int, double: bool) -> dict:
    key = (n_mics, n_fft, double)
    work = getattr(_WORK, "arrays", None)
    if work is None or work["key"] != key:
        work = {"key": key, "buf": np.zeros((n_mics, n_fft, CHEB_TERMS)),
                "mixed": np.zeros((n_mics, n_fft // 2 + 1), dtype=np.complex128 if double else np.complex64)}
        if not double:
            work["buf32"] = np.zeros((n_mics, n_fft, CHEB_TERMS), dtype=np.float32)
        _WORK.arrays = work
    return work


def _exact_cpu(room, src, mics, signed_beta, n_samples, taps, axes, max_order, dtype):
    """One source, ``"exact"`` filter, compiled loop + scipy FFTs: ``(M, n_samples)`` tensor."""
    from scipy import fft as sfft

    from xai_loc.acoustics._ism_kernels import accumulate, mix

    reach, n_k = _exact_reach(n_samples, taps, room)
    (xc, xh), (yc, yh), (zc, zh) = axes
    order = np.argsort(zc, kind="stable")
    zc, zh = zc[order], zh[order]
    gains = [signed_beta ** h.astype(np.float64) for h in (xh, yh, zh)]
    n_fft = _fft_length(n_samples, taps)  # >= n_k: the FFT needs no padding copy
    work = _workspace(mics.shape[0], n_fft, dtype == torch.float64)
    work["buf"].fill(0.0)
    accumulate(np.ascontiguousarray(mics, dtype=np.float64), np.ascontiguousarray(xc, dtype=np.float64), gains[0],
                xh.astype(np.int64), np.ascontiguousarray(yc, dtype=np.float64), gains[1], yh.astype(np.int64),
                np.ascontiguousarray(zc, dtype=np.float64), gains[2], zh.astype(np.int64), reach * reach,
                room.fs / room.c, _ANY_ORDER if max_order is None else int(max_order), n_k,
                work["buf"], np.empty((3, max(1, zc.size))))
    if "buf32" in work:  # float32 output: single-precision FFTs (error ~1e-7 of the peak)
        buf = work["buf32"]
        np.copyto(buf, work["buf"])
    else:
        buf = work["buf"]
    spectra = sfft.rfft(buf, axis=1)  # (M, F, R)
    mix(spectra, _kernel_spectra(taps, n_fft, buf.dtype == np.float64, transposed=True), work["mixed"])
    w = _half_width(taps)
    return torch.from_numpy(sfft.irfft(work["mixed"], n=n_fft, axis=1)[:, w : w + n_samples])


def _exact_torch(room, src, mics, signed_beta, n_samples, taps, axes, max_order, device, dtype):
    """The same computation in torch (CUDA, or CPU for cross-checks): ``(M, n_samples)`` tensor.

    Geometry in float64, scattering with ``index_add_`` in ``dtype``.
    """
    reach, n_k = _exact_reach(n_samples, taps, room)
    mics64 = mics.to(torch.float64)
    pos, order = _images(room, src, mics64.cpu().numpy(), reach, max_order, axes=axes, device=device)
    gain = torch.as_tensor(signed_beta, dtype=torch.float64, device=device) ** order / (4.0 * math.pi)
    n_mics = mics.shape[0]
    buf = torch.zeros(n_mics * n_k, CHEB_TERMS, device=device, dtype=dtype)
    scale = room.fs / room.c
    per_chunk = max(1, _CHUNK // 4 // max(1, pos.shape[0]))  # 8 terms per image: a quarter of the pairs
    with _in_fixed_order(device):
        for m0 in range(0, n_mics, per_chunk):
            mic = mics64[m0 : m0 + per_chunk].to(device)
            dist = torch.cdist(mic, pos, compute_mode="donot_use_mm_for_euclid_dist")  # (m, K)
            tau = dist * scale + 0.5
            kf = torch.floor(tau)
            u = 2.0 * (tau - kf) - 1.0
            amp = gain / dist
            slot = kf.long()
            keep = slot < n_k
            slot = (slot + torch.arange(m0, m0 + mic.shape[0], device=device)[:, None] * n_k)[keep]
            u, amp = u[keep], amp[keep]
            terms = [amp, amp * u]
            for _ in range(2, CHEB_TERMS):
                terms.append(2.0 * u * terms[-1] - terms[-2])
            buf.index_add_(0, slot, torch.stack(terms, dim=1).to(dtype))
            del dist, tau, kf, terms
    n_fft = _fft_length(n_samples, taps)
    double = dtype == torch.float64
    spectra = torch.fft.rfft(buf.view(n_mics, n_k, CHEB_TERMS).transpose(1, 2), n=n_fft, dim=2)  # (M, R, F)
    kernel = torch.as_tensor(_kernel_spectra(taps, n_fft, double), device=device)
    mixed = (spectra * kernel[None]).sum(dim=1)
    w = _half_width(taps)
    return torch.fft.irfft(mixed, n=n_fft, dim=1)[:, w : w + n_samples]


# ----------------------------------------------------------------------------------------
# Diffuse tail and the public entry point
# ----------------------------------------------------------------------------------------

def _diffuse_tail(
    rir: torch.Tensor, n_diff: int, t60: float, fs: int, generator: torch.Generator, guard: int = FD_HALF_WIDTH,
    start: int = 0, energy: np.ndarray | None = None,
) -> torch.Tensor:
    """Replace samples from ``n_diff`` on by noise (drawn in float32, the same numbers whatever ``rir``'s dtype)
    under a Sabine envelope, 60 dB per T60.

    The tail of row ``m`` carries ``energy[m]`` in all (:func:`_late_energy`: the image sources' it replaces). Without
    ``energy``, its level is fitted to the second half of ``rir[:, :n_diff]``, from ``start`` on at the earliest (where
    the direct sound has passed), less ``guard`` samples before ``n_diff`` (the half-width of the arrival filter).
    """
    n_samples = rir.shape[1]
    t = torch.arange(n_samples, device=rir.device, dtype=rir.dtype)
    envelope = torch.pow(torch.tensor(10.0, device=rir.device, dtype=rir.dtype), -6.0 * t / (t60 * fs))
    if energy is None:
        first = max(n_diff // 2, start)
        fit = slice(first, max(first + 1, n_diff - guard))
        level = (rir[:, fit] ** 2).sum(dim=1, keepdim=True) / envelope[fit].sum()
    else:
        level = torch.as_tensor(energy, device=rir.device, dtype=rir.dtype)[:, None] / envelope[n_diff:].sum()
    # torch draws other numbers in float64 than in float32 from the same generator
    noise = torch.randn(rir.shape[0], n_samples - n_diff, generator=generator, dtype=torch.float32)
    out = rir.clone()
    out[:, n_diff:] = noise.to(device=rir.device, dtype=rir.dtype) * torch.sqrt(level * envelope[n_diff:])
    return out


#: Sub-shells (geometric in squared distance) over which :func:`_late_energy` takes ``1 / d**2`` as constant.
_SHELLS = 32
#: Bins per sample of path length in which :func:`_late_energy` counts the images of two axes.
_BINS_PER_SAMPLE = 4
#: Pairs of images of two axes that :func:`_late_energy` bins at once (about 50 bytes each).
_PAIRS_PER_BLOCK = 1 << 20


def _coherent_axis(coord: np.ndarray, hits: np.ndarray, at, signed_beta: float, distance: float, samples: float,
                   budgeted: bool = False):
    """One axis of the images seen from each coordinate of ``at``: the viewpoint's index, squared offset, energy and
    hit count of each image, flat.

    Two images that differ on this axis only, by neighbouring offsets ``u < v``, arrive ``L = (v - u) v / d`` samples
    apart at distance ``d`` (``samples`` per metre; ``d`` taken as ``distance``). Within a sample of each other they
    interfere: their cross term ``a b sinc(L)``, amplitudes ``a = signed_beta**h`` (the correlation of two
    band-limited arrivals), is added to the energy ``a**2`` of each; farther apart, cross terms average out over the
    tail. An image and its mirror image in a wall next to it cancel under ``-beta``; mirror-symmetric geometry (a
    source at the height of microphones at mid-height) makes images of equal hits coincide, and the image-source
    response then holds twice their energy. A cross term exists only where both images do: ``budgeted`` (a hit budget
    ``max_order`` applies), the share of the less reflected image of a pair is listed apart under the other's hit
    count, so that both shares count only where the more reflected image is within the budget.
    """
    offset = np.abs(coord[None, :] - np.asarray(at, dtype=np.float64).reshape(-1, 1))
    order = np.argsort(offset, axis=-1, kind="stable")
    offset = np.take_along_axis(offset, order, -1)
    hits = np.take_along_axis(np.broadcast_to(hits, offset.shape), order, -1)
    amp = abs(signed_beta) ** hits.astype(np.float64)  # the sign apart: a power of a negative base is slow
    amp[hits % 2 == 1] *= math.copysign(1.0, signed_beta)
    lag = np.diff(offset) * np.minimum(1.0, offset[:, 1:] / distance) * samples
    cross = np.where(lag < 1.0, amp[:, 1:] * amp[:, :-1] * np.sinc(lag), 0.0)
    first, second = hits[:, :-1], hits[:, 1:]
    energy = amp * amp
    energy[:, :-1] += np.where(second <= first, cross, 0.0) if budgeted else cross
    energy[:, 1:] += np.where(first <= second, cross, 0.0) if budgeted else cross
    view, col = np.nonzero((cross != 0.0) & (first != second) & budgeted)  # pairs (col, col + 1) of unequal hits
    less = col + (second[view, col] < first[view, col])
    return (np.concatenate([np.repeat(np.arange(offset.shape[0]), offset.shape[1]), view]),
            np.concatenate([offset.ravel() ** 2, offset[view, less] ** 2]),
            np.concatenate([energy.ravel(), cross[view, col]]),
            np.concatenate([hits.ravel(), np.maximum(first, second)[view, col]]))


def _pair_blocks(q1, g1, h1, q2, g2, h2, reach: float, most: float):
    """The pairs of an image of axis 1 and one of axis 2 within ``most`` hits, in blocks of rows of axis 1 (nearest
    first) and about :data:`_PAIRS_PER_BLOCK` pairs: squared distance, energy and hit count of each, flat. Images of
    axis 2 beyond ``reach**2`` squared distance from a block's nearest row are left out, and so are rows beyond it."""
    o1, o2 = np.argsort(q1), np.argsort(q2)
    q1, g1, h1, q2, g2, h2 = q1[o1], g1[o1], h1[o1], q2[o2], g2[o2], h2[o2]
    count = np.searchsorted(q2, reach - q1, side="right")  # row i pairs with the first count[i] of axis 2
    r0 = 0
    while r0 < q1.size and count[r0]:
        n = count[r0]  # the most of the block's rows (count falls)
        r1 = min(q1.size, r0 + max(1, _PAIRS_PER_BLOCK // n))
        q = (q1[r0:r1, None] + q2[None, :n]).ravel()
        g = (g1[r0:r1, None] * g2[None, :n]).ravel()
        h = (h1[r0:r1, None] + h2[None, :n]).ravel()
        if h1[r0:r1].max() + h2[:n].max() > most:
            keep = h <= most
            q, g, h = q[keep], g[keep], h[keep]
        yield q, g, h
        r0 = r1


def _late_energy(room: ShoeBox, axes, mics: np.ndarray, signed_beta: float, n_from: int, n_to: int,
                 max_order: int | None, t60: float) -> np.ndarray:
    """Energy ``(M,)`` the images of one source (per-axis coordinates and hit counts ``axes``) bring to each
    microphone between samples ``n_from`` and ``n_to``: ``beta**(2 n) / (4 pi d)**2`` summed over the images of at
    most ``max_order`` reflections arriving then (the arrival filter's energy, 0.95-1, left out), with the cross terms
    of images that differ on one axis only (:func:`_coherent_axis`, reflection coefficient ``signed_beta`` with the
    convention's sign, at the mean distance of the energy of a tail that decays 60 dB per ``t60`` from ``n_from``).

    The images are the product of the three axes' lists. Pairs from two axes (shared by the microphones that share
    those coordinates) are counted, weighted, in bins of :data:`_BINS_PER_SAMPLE` per sample of their distance and
    cumulated, block by block (:func:`_pair_blocks`), and through the hit budgets of the third axis's images in
    increasing order; each image of the third axis looks them up at the bounds of :data:`_SHELLS` sub-shells, in
    each of which ``1 / d**2`` is taken as its mean over a uniform density of images. Within 4 % of the same sum
    taken image by image (the paper room, T60 0.15-0.6 s, any ``max_order``); cross terms that outweigh the images'
    energy leave none (0).
    """
    samples = room.fs / room.c
    near, far = n_from / samples, n_to / samples
    middle = near + room.c * t60 / (6.0 * math.log(10.0))  # the energy's mean arrival under a Sabine decay
    bounds = near**2 * (far / near) ** (2.0 * np.arange(_SHELLS + 1) / _SHELLS)
    lo, hi = bounds[:-1], bounds[1:]
    mean_inverse = 3.0 * (np.sqrt(hi) - np.sqrt(lo)) / (hi**1.5 - lo**1.5)
    step, top = _BINS_PER_SAMPLE * samples, math.ceil(_BINS_PER_SAMPLE * n_to) + 1  # top: the pairs out of reach
    outer = max(range(3), key=lambda a: (np.unique(mics[:, a]).size, axes[a][0].size))
    inner = [a for a in range(3) if a != outer]
    budgeted = max_order is not None
    owner, qo, go, ho = _coherent_axis(*axes[outer], mics[:, outer], signed_beta, middle, samples, budgeted)
    shared, members = np.unique(mics[:, inner], axis=0, return_inverse=True)
    energy = np.zeros(mics.shape[0])
    for key, at in enumerate(shared):
        (_, q1, g1, h1), (_, q2, g2, h2) = (_coherent_axis(*axes[a], at[j], signed_beta, middle, samples, budgeted)
                                            for j, a in enumerate(inner))
        mine = np.flatnonzero(members.ravel()[owner] == key)
        # hit budgets clipped to the most two axes' pairs hold; none below 0
        most = h1.max() + h2.max()
        budget = np.full(mine.size, most) if max_order is None else np.minimum(most, max_order - ho[mine])
        mine, budget = mine[budget >= 0], budget[budget >= 0]
        levels, which = np.unique(budget, return_inverse=True)
        if not levels.size:
            continue
        groups = [slice(None)] if levels.size == 1 else [which == level for level in range(levels.size)]
        # the bin of the pairs each image of the third axis counts up to, at every bound: (images, bounds)
        upto = np.ceil(np.sqrt(np.maximum(bounds[None, :] - qo[mine, None], 0.0)) * step)
        upto = np.minimum(top, upto).astype(np.int64)
        weight = np.zeros(mine.size)  # of the pairs each image of the third axis counts, 1 / d**2 per sub-shell
        for q, g, h in _pair_blocks(q1, g1, h1, q2, g2, h2, far**2, levels[-1]):
            slot = np.minimum(top, np.ceil(np.sqrt(q) * step)).astype(np.int64)
            if levels.size > 1:  # by hits, in the bins that hold pairs
                by_hits = np.argsort(h, kind="stable")
                cells, slot = np.unique(slot, return_inverse=True)
                ends = np.searchsorted(h[by_hits], levels, side="right")
            else:
                by_hits, cells, ends = None, None, np.array([h.size])
            counts = np.zeros(top + 1 if cells is None else cells.size)
            for level, (start, end) in enumerate(zip(np.r_[0, ends[:-1]], ends, strict=True)):
                if level == 0 or end > start:
                    added = slice(None) if by_hits is None else by_hits[start:end]
                    counts += np.bincount(slot[added], g[added], minlength=counts.size)
                    total = np.concatenate([[0.0], np.cumsum(counts)])
                part = groups[level]
                place = upto[part] if cells is None else np.searchsorted(cells, upto[part])
                weight[part] += np.diff(total[place], axis=1) @ mean_inverse
        energy += np.bincount(owner[mine], go[mine] * weight, minlength=energy.size)
    return np.maximum(energy, 0.0) / (16.0 * math.pi**2)


def _direct_passed(distance: float, fs: int, c: float, after: int) -> int:
    """First sample after the direct sound of a source ``distance`` metres away: ``after`` samples past the
    arrival's sample (its arrival filter's reach, and a binaural response's HRIR)."""
    return math.floor(distance / c * fs) + after


def _smallest_t_diff(passed: int, guard: int, fs: int) -> float:
    """Smallest ``t_diff`` (seconds, rounded up to 0.1 ms) that leaves :data:`TAIL_FIT_S` of reflections from
    sample ``passed`` on and ``guard`` samples more (an arrival filter's half-width, which a fitted tail leaves out:
    :func:`_diffuse_tail`)."""
    return math.ceil((passed + guard) / fs * 1e4 + TAIL_FIT_S * 1e4) / 1e4


def diffuse_start(t60: float, mode: str = "ism", t_diff: float | None = None) -> float | None:
    """Seconds at which the responses of ``mode`` turn into a diffuse tail: ``t_diff`` in ``"hybrid"`` mode
    (default ``t60 / 4``, 15 dB of Sabine decay, gpuRIR's usual choice); None (no tail) in ``"ism"`` mode."""
    if mode != "hybrid":
        return None
    return t60 / 4.0 if t_diff is None else t_diff


def _either(choices: list[str]) -> str:
    """``'a, b or c'``."""
    return " or ".join([", ".join(choices[:-1]), choices[-1]] if len(choices) > 1 else choices)


class _Request(NamedTuple):
    """The checked arguments of :func:`image_source_rirs` and what follows from them."""

    conv: Convention
    t60: float
    t_max: float
    max_order: int | None
    device: torch.device
    dtype: torch.dtype
    src: np.ndarray
    mic: np.ndarray
    gap: np.ndarray  # (S, M) metres
    n_samples: int
    taps: float
    half: int  # samples an arrival's filter reaches past its sample
    n_ism: int  # samples of image sources (all of them but a hybrid response's diffuse tail)


def check_t_diff(t_diff, t_max: float) -> float:
    """``t_diff``, the start of a diffuse tail in seconds, if it lies in ``(0, t_max]``; one line otherwise."""
    if not (is_real(t_diff) and 0 < t_diff <= t_max):
        raise InputError(f"t_diff={t_diff!r} s is not allowed; give a value in (0, t_max={t_max}] (t_max is T60 "
                         "unless given; --t-diff on the command line)")
    return t_diff


def _hybrid_samples(room: ShoeBox, far: float, t60: float, t_max: float, t_diff, n_samples: int, half: int) -> int:
    """Samples of image sources in a hybrid response whose farthest direct path is ``far`` metres long, ``t_diff``
    (None: the default) checked to leave :data:`TAIL_FIT_S` of reflections after that direct sound."""
    start = check_t_diff(diffuse_start(t60, "hybrid", t_diff), t_max)
    n_ism = min(n_samples, int(math.ceil(float(start) * room.fs)) + half)
    # an arrival at tau samples reaches, through its filter, at most half samples past floor(tau)
    smallest = _smallest_t_diff(_direct_passed(far, room.fs, room.c, half + 1), half, room.fs)
    if n_ism < n_samples and start < smallest:
        given = f"t_diff={start} s" + (" (the default, T60/4)" if t_diff is None else "")
        allowed = (f"give t_diff >= {smallest:g} s (--t-diff)" if smallest <= t_max else
                   f"responses of t_max={t_max} s are too short for a diffuse tail: use mode 'ism'")
        raise InputError(f"{given} at T60={t60} s starts the diffuse tail too early: it must leave "
                         f"{TAIL_FIT_S * 1e3:g} ms of image-source reflections after the direct sound {far:.4g} m "
                         f"away; {allowed}")
    return n_ism


def _request(room: ShoeBox, sources, mics, t60, *, t_max, mode, t_diff, max_order, seed, convention, device,
             dtype) -> _Request:
    """The arguments of :func:`image_source_rirs` checked (every refusal it documents), no response computed."""
    conv = get_convention(convention)
    t60, t_max, max_order = check_response(room, t60, t_max, max_order)
    if mode not in MODES:
        raise InputError(f"RIR mode {mode!r} is unknown; allowed: {', '.join(MODES)}")
    if mode != "hybrid" and t_diff is not None:
        raise InputError(f"t_diff={t_diff!r} s is not allowed in mode {mode!r}, which has no diffuse tail; use mode "
                         "'hybrid' (--mode hybrid) or leave t_diff out")
    if not is_integer(seed) or seed < 0:
        raise InputError(f"seed={seed!r} is not allowed; use a non-negative integer")
    dtype, device = check_dtype(dtype), resolve_device(device)
    src, mic, gap = check_geometry(room, sources, mics, t_max)
    n_samples = conv.rir_length(t_max, room.fs)
    exact = conv.sub_sample == "exact"
    taps = conv.taps(room.fs)
    half = _half_width(taps) if exact else FD_HALF_WIDTH
    n_ism = n_samples
    if mode == "hybrid":
        far = float(gap.max()) if gap.size else 0.0
        n_ism = _hybrid_samples(room, far, t60, t_max, t_diff, n_samples, half)
    reach = _exact_reach(n_ism, taps, room)[0] if exact else room.c * n_ism / room.fs
    count = _image_count(room, mic, reach, max_order)
    pairs = count * mic.shape[0]
    # what shortens the image-source part: t_diff in hybrid mode, else t_max, hybrid mode or a max_order
    fixes = ["a shorter t_diff", "a max_order"] if mode == "hybrid" else \
        ["a shorter T60 or t_max", "a max_order", "mode 'hybrid'"]
    if exact and device.type == "cpu":  # the compiled loop streams the images: bounded by time, not memory
        if pairs > MAX_CPU_PAIRS:
            raise InputError(f"T60={t60} s with t_max={t_max} s in room {room.size} needs about {count:.2g} image "
                             f"sources x {mic.shape[0]} microphone(s) = {pairs:.2g} per source; at most "
                             f"{MAX_CPU_PAIRS:.0e} run on the CPU (about 17 min per source): give "
                             f"{_either(['a larger room', *fixes])}")
    elif count > MAX_IMAGES:  # every other path lists the images of a source at once
        streamed = ["(on the CPU) convention 'gpurir'"] if pairs <= MAX_CPU_PAIRS else []
        raise InputError(f"T60={t60} s with t_max={t_max} s needs about {count:.2g} image sources per source "
                         f"in convention {conv.name!r}; at most {MAX_IMAGES:.0e} fit in memory: give "
                         f"{_either([*fixes, *streamed])}")
    return _Request(conv, t60, t_max, max_order, device, dtype, src, mic, gap, n_samples, taps, half, n_ism)


def check_image_sources(
    room: ShoeBox,
    sources: np.ndarray,
    mics: np.ndarray,
    t60: float,
    *,
    t_max: float | None = None,
    mode: str = "ism",
    t_diff: float | None = None,
    max_order: int | None = None,
    seed: int = 0,
    convention: str | Convention | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> None:
    """Refuse, in one line, what :func:`image_source_rirs` refuses for the same arguments, computing no response.

    Cheap (the geometry only): a data set checks every source of a split at once before it simulates the first,
    so that a source that would be refused (a ``t_diff`` too early for its distance) is refused before any work.
    Raises the :class:`InputError` :func:`image_source_rirs` would raise.
    """
    _request(room, sources, mics, t60, t_max=t_max, mode=mode, t_diff=t_diff, max_order=max_order, seed=seed,
             convention=convention, device=device, dtype=dtype)


def image_source_rirs(
    room: ShoeBox,
    sources: np.ndarray,
    mics: np.ndarray,
    t60: float,
    *,
    t_max: float | None = None,
    mode: str = "ism",
    t_diff: float | None = None,
    max_order: int | None = None,
    seed: int = 0,
    convention: str | Convention | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Room impulse responses from every source to every microphone.

    Parameters
    ----------
    room
        The shoebox room (size, ``fs``, ``c``).
    sources, mics
        Positions ``(S, 3)`` and ``(M, 3)`` in metres, strictly inside the room.
    t60
        Reverberation time in seconds; wall reflection coefficients follow from Sabine.
    t_max
        Length of the responses in seconds (default ``t60``, as in the paper), at most
        :data:`~xai_loc.acoustics.room.MAX_T60`.
    mode
        ``"ism"`` or ``"hybrid"`` (see the module docstring).
    t_diff
        Hybrid mode only (refused in ``"ism"`` mode): end of the image-source part (default: 15 dB of Sabine
        decay, ``t60 / 4``, gpuRIR's usual choice), leaving at least :data:`TAIL_FIT_S` of image-source
        reflections after each source's latest direct sound (arrival filter included). The tail carries at each
        microphone the energy of the images arriving after ``t_diff`` (:func:`_late_energy`).
    max_order
        Highest reflection order kept (``None``: all images of the convention's set).
    seed
        Seed of the diffuse tail (hybrid mode), a non-negative integer. Source ``i`` of the call
        draws its tail from ``SeedSequence([seed, i])``, in float32 whatever ``dtype`` (a float64 response has the
        float32 one's tail): the same source at another index in ``sources`` gets another tail.
    convention
        Simulation convention, a name from :data:`~xai_loc.acoustics.conventions.CONVENTIONS`
        or a :class:`~xai_loc.acoustics.conventions.Convention` (default ``"gpurir"``).
    device, dtype
        Where and in which precision (:data:`DTYPES`) to compute. On the CPU the ``"exact"``
        filter runs a compiled loop (the first call compiles it, once per installation).

    Returns
    -------
    torch.Tensor
        ``(S, M, convention.rir_length(t_max, fs))``; image sources have amplitude
        ``(sign beta)**n / (4 pi d)`` and arrive at ``d / c`` seconds.

    Raises
    ------
    InputError
        For a bad argument (a ``t_diff`` in ``"ism"`` mode among them); a source within
        :data:`~xai_loc.acoustics.room.MIN_SOURCE_MIC_DISTANCE` of a microphone; a direct path that arrives at or
        after ``t_max`` (a :class:`~xai_loc.acoustics.room.SourceError`, naming the source's row in ``sources``); a
        ``t_diff`` that leaves less than :data:`TAIL_FIT_S` of reflections after the latest direct sound; more than
        :data:`MAX_IMAGES` images to list per source, or on the CPU's ``"exact"`` path more than :data:`MAX_CPU_PAIRS`
        images x microphones (:func:`check_image_sources` refuses the same without computing a response).
    """
    conv, t60, t_max, max_order, device, dtype, src, mic, gap, n_samples, taps, half, n_ism = _request(
        room, sources, mics, t60, t_max=t_max, mode=mode, t_diff=t_diff, max_order=max_order, seed=seed,
        convention=convention, device=device, dtype=dtype)
    signed_beta = conv.reflection_sign * conv.reflection_coefficient(room, t60)
    exact = conv.sub_sample == "exact"
    mic_t = torch.as_tensor(mic, device=device, dtype=dtype)
    out = torch.zeros(src.shape[0], mic.shape[0], n_samples, device=device, dtype=dtype)
    for i, s in enumerate(src):
        if not exact:
            rir = _scatter_ism(room, s, mic_t, signed_beta, n_ism, max_order, device, dtype)
        else:
            reach, _ = _exact_reach(n_ism, taps, room)
            axes = _axes(conv, room, s, mic, reach, t_max)
            if device.type == "cpu":
                rir = _exact_cpu(room, s, mic, signed_beta, n_ism, taps, axes, max_order, dtype)
            else:
                rir = _exact_torch(room, s, torch.as_tensor(mic, dtype=torch.float64), signed_beta, n_ism, taps,
                                   axes, max_order, device, dtype)
        out[i, :, :n_ism] = rir
        if mode == "hybrid" and n_ism < n_samples:
            gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))
            n_diff = n_ism - half
            late = _axes(conv, room, s, mic, room.c * n_samples / room.fs, t_max)
            out[i] = _diffuse_tail(out[i], n_diff, t60, room.fs, gen, energy=_late_energy(
                room, late, mic, signed_beta, n_diff, n_samples, max_order, t60))
    return out
