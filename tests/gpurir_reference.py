"""gpuRIR's image-source formula, written slowly and plainly in float64 (a test reference).

Follows ``src/gpuRIR_cuda.cu`` of gpuRIR (Diaz-Guerra et al., 2021) line by line, without any
of the speed-ups of :mod:`xai_loc.acoustics.ism`:

- ``beta_SabineEstimation`` with uniform walls: ``beta = sqrt(1 - 0.161 V / (S T60))``;
- ``t2n``: ``N_d = ceil(2 Tmax c / L_d)`` mirror indices per axis;
- ``calcAmpTau_kernel``: thread ``n_d`` in ``0..N_d-1`` takes ``k = n_d - N_d / 2`` (integer
  division), cell ``ceil(k / 2)``, parity ``|k % 2|``; the image lies at
  ``2 cell L_d + (1 - 2 parity) src_d``; every wall coefficient is negated
  (``beta[0] = -beta_x1``), so the amplitude is ``prod_d (-beta)**(|cell - parity| + |cell|)
  / (4 pi dist)`` and the delay ``tau = dist / c * fs`` samples;
- ``image_sample``: sample ``t`` gets ``amp * 0.5 (1 + cos(2 pi (t - tau) / Tw)) * sinc(t - tau)``
  where ``|t - tau| < Tw / 2``, ``Tw = 8 ms * fs`` samples; gpuRIR rounds it (``cuda_rirGenerator``:
  ``Tw = (int) round(8e-3f * Fs)``, 176 at 22.05 kHz), this reference keeps ``0.008 fs`` unrounded as xai-loc
  does (176.4; at most 1.3e-5 of an arrival apart at 22.05 kHz, identical at 16 kHz);
- ``nSamples = ceil(Tmax fs)``, plus one if odd.
"""
import math

import numpy as np


def sabine_beta(size, t60):
    lx, ly, lz = size
    volume = lx * ly * lz
    surface = 2 * (lx * ly + lx * lz + ly * lz)
    return math.sqrt(1 - 0.161 * volume / (surface * t60))


def n_samples(t_max, fs):
    n = math.ceil(np.float32(t_max) * np.float32(fs))
    return int(n + n % 2)


def image_sources(size, src, t_max, c, beta, max_order=None):
    """Every image of gpuRIR's grid: positions ``(K, 3)`` and signed gains ``(K,)`` (amplitude times 4 pi dist)."""
    counts = [math.ceil(2 * t_max * c / length) for length in size]
    axes = []  # per axis: (coordinate, wall hits) of each thread index n
    for d in range(3):
        coords, hits = [], []
        for n in range(counts[d]):
            k = n - counts[d] // 2
            cell = math.ceil(k / 2)
            parity = abs(k) % 2
            coords.append(cell * 2 * size[d] + (1 - 2 * parity) * src[d])
            hits.append(abs(cell - parity) + abs(cell))
        axes.append((np.array(coords), np.array(hits)))
    # every combination (nx, ny, nz) of the three axes
    (cx, hx), (cy, hy), (cz, hz) = axes
    ix, iy, iz = (a.ravel() for a in np.meshgrid(np.arange(counts[0]), np.arange(counts[1]), np.arange(counts[2]),
                                                 indexing="ij"))
    positions = np.stack([cx[ix], cy[iy], cz[iz]], axis=1)
    order = hx[ix] + hy[iy] + hz[iz]
    gains = (-beta) ** order  # each wall coefficient negated: prod_d (-beta)^hits_d
    keep = np.ones(order.size, dtype=bool) if max_order is None else order <= max_order
    return positions[keep], gains[keep]


def rirs(size, src, mics, t60, fs=16000, c=343.0, t_max=None, max_order=None):
    """Responses ``(M, nSamples)`` from ``src`` to each microphone, in float64."""
    t_max = t60 if t_max is None else t_max
    beta = sabine_beta(size, t60)
    n = n_samples(t_max, fs)
    tw = 8e-3 * fs
    positions, gains = image_sources(size, src, t_max, c, beta, max_order)
    out = np.zeros((len(mics), n))
    for m, mic in enumerate(mics):
        dist = np.sqrt(((positions - np.asarray(mic)) ** 2).sum(axis=1))
        amp = gains / (4 * math.pi * dist)
        tau = dist / c * fs
        near = tau < n - 1 + tw / 2  # later arrivals touch no sample of the response
        amp, tau = amp[near], tau[near]
        # every sample t within Tw / 2 of an arrival, one row per image
        reach = math.floor(tw / 2) + 1
        t = np.floor(tau)[:, None] + np.arange(-reach, reach + 1)[None, :]
        x = t - tau[:, None]
        inside = (np.abs(x) < tw / 2) & (t >= 0) & (t < n)
        value = amp[:, None] * 0.5 * (1 + np.cos(2 * math.pi * x / tw)) * np.sinc(x)
        np.add.at(out[m], t[inside].astype(int), value[inside])
    return out
