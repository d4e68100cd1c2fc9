"""Compiled loops of :mod:`xai_loc.acoustics.ism` (imported on first use: numba is slow to import).

``accumulate`` adds the images of one source to 8 Chebyshev sequences per microphone (see
the ``"exact"`` filter in :mod:`xai_loc.acoustics.ism`); ``mix`` sums their spectra weighted by
the basis kernels' spectra. Both are compiled once per installation (``cache=True``).
"""
import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def accumulate(mics, xc, xg, xh, yc, yg, yh, zc, zg, zh, reach2, scale, max_order, n_k, buf, tmp):  # pragma: no cover
    """Add every image of one source to the Chebyshev sequences ``buf (M, >= n_k, 8)``.

    ``xc/xg/xh``: image coordinates, signed gains ``(s beta)**hits`` and hit counts along x
    (likewise y, and z sorted by coordinate). Images farther than ``sqrt(reach2)`` from a
    microphone are skipped: the z images of an (x, y) pair within reach form one run of
    ``zc``. The first loop over a run is vectorizable; the second scatters.
    """
    inv4pi = 1.0 / (4.0 * math.pi)
    z_hits_max = zh.max() if zh.size else 0
    for m in range(mics.shape[0]):
        mx, my, mz = mics[m, 0], mics[m, 1], mics[m, 2]
        for a in range(xc.size):
            dx = xc[a] - mx
            dx2 = dx * dx
            if dx2 > reach2:
                continue
            for b in range(yc.size):
                dy = yc[b] - my
                dxy2 = dx2 + dy * dy
                if dxy2 > reach2:
                    continue
                gain = xg[a] * yg[b] * inv4pi
                left = max_order - xh[a] - yh[b]
                if left < 0:
                    continue
                half = math.sqrt(reach2 - dxy2)
                lo = np.searchsorted(zc, mz - half)
                hi = np.searchsorted(zc, mz + half, side="right")
                n = hi - lo
                every = left >= z_hits_max  # no image of this column exceeds the reflection budget
                for i in range(n):
                    dz = zc[lo + i] - mz
                    d = math.sqrt(dxy2 + dz * dz)
                    tau = d * scale + 0.5
                    kf = math.floor(tau)
                    tmp[0, i] = kf
                    tmp[1, i] = 2.0 * (tau - kf) - 1.0
                    tmp[2, i] = gain * zg[lo + i] / d if every or zh[lo + i] <= left else 0.0
                for i in range(n):
                    k = int(tmp[0, i])
                    if k >= n_k:
                        continue
                    u = tmp[1, i]
                    t0 = tmp[2, i]
                    u2 = 2.0 * u
                    t1 = t0 * u
                    t2 = u2 * t1 - t0
                    t3 = u2 * t2 - t1
                    t4 = u2 * t3 - t2
                    t5 = u2 * t4 - t3
                    t6 = u2 * t5 - t4
                    t7 = u2 * t6 - t5
                    buf[m, k, 0] += t0
                    buf[m, k, 1] += t1
                    buf[m, k, 2] += t2
                    buf[m, k, 3] += t3
                    buf[m, k, 4] += t4
                    buf[m, k, 5] += t5
                    buf[m, k, 6] += t6
                    buf[m, k, 7] += t7


@numba.njit(cache=True, nogil=True, fastmath=True)
def mix(spectra, kernels, out):  # pragma: no cover
    """``out[m, f] = sum_r spectra[m, f, r] kernels[f, r]`` (the 8 convolutions, summed, in frequency)."""
    for m in range(spectra.shape[0]):
        for f in range(spectra.shape[1]):
            acc = spectra[m, f, 0] * kernels[f, 0]
            for r in range(1, spectra.shape[2]):
                acc += spectra[m, f, r] * kernels[f, r]
            out[m, f] = acc
