"""Nested top-k deletions as one small integer per sample: the step at which it is first deleted.

For deletion counts ``k_0 <= k_1 <= ...`` the deleted set at step ``j`` is the first ``k_j``
entries of a stable descending sort of a window's scores (ties by position: the earlier
sample goes first). The sets are nested, so each sample's *deletion step* describes all of
them: the sample is deleted at step ``j`` exactly when its step is ``<= j``.

The kernels are compiled with numba because numpy has neither a selection of several ranks
cheaper than a full sort nor a fused compare-and-copy. Here one radix pass over the
samples' order-preserving integer keys finds the 16-bit bin that holds every rank's
threshold, every sample outside those few bins gets its step from its bin alone, and only
the samples inside them are ranked exactly; each deleted copy is then one fused pass
(``benchmarks/bench_perturbation.py`` measures the whole deletion against the paper's
per-index loop).

On other devices (a GPU) the same steps are made with torch where the scores are
(:func:`torch_deletion_steps`, :func:`torch_random_deletion_steps`): one stable sort per row
of integer keys that order like the scores, ranks turned into steps by the counts, and
SplitMix64 in wrapping int64 arithmetic, byte-identical to the kernels. The experiments ask
for steps through :func:`deletion_steps_on` and :func:`random_deletion_steps_on`, which keep
the compiled kernels on the CPU, where a full sort costs about 100 times their three linear
passes (16 windows of 81 920 float32 samples on a 2-core machine: 170 ms against 1.7 ms).

:func:`stable_ranks` ranks whole rows (the Spearman correlations of the sanity checks) with
the same keys: a least-significant-digit radix sort, 16 bits per pass, gives the ranks of
numpy's stable argsort, which sorts floats by comparison (timsort): for rows of 81 920 samples
about 11 times the cost in float32 and 5 times in float64. Rows shorter than
:data:`RADIX_MIN_LENGTH` are ranked by that argsort, as each pass's 65 536 bins would cost more
than they save.
"""
from __future__ import annotations

import numba
import numpy as np
import torch

from xai_loc.errors import InputError

#: Bits of the key that choose a radix bin.
BIN_BITS = 16
_N_BINS = 1 << BIN_BITS
_BLOCK = 256
_N_BLOCKS = _N_BINS // _BLOCK

#: Rows at least this long are ranked by radix passes in :func:`stable_ranks`, shorter ones by numpy's stable
#: argsort (2-core machine: the radix ranks are 3.7x (float32) and 1.9x (float64) faster at 4096, slower at 1024).
RADIX_MIN_LENGTH = 4096

#: The most deletion steps one call handles (steps are stored as uint8; 255 means "never").
MAX_STEPS = 255

# SplitMix64 (Steele, Lea & Flood, 2014; the generator of Java's SplittableRandom)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))

# float dtype -> (unsigned view, sign bit, bit pattern of +inf)
_FLOAT_BITS = {
    np.dtype(np.float32): (np.uint32, np.uint32(1 << 31), np.uint32(0x7F800000)),
    np.dtype(np.float64): (np.uint64, np.uint64(1 << 63), np.uint64(0x7FF0000000000000)),
}


@numba.njit(cache=True, nogil=True)
def _order_keys(bits, form, keys):
    """Unsigned keys that order like the floats with bit patterns ``bits`` (-0.0 as +0.0).

    ``form`` is ``(sign bit, all-ones value, sign bit position, mask)`` in the unsigned type
    of ``bits`` (numba turns a mix of uint64 and int64 into float64); the bits are first
    and-ed with ``mask`` (all ones, or all but the sign bit to order by magnitude). With
    sign bit 0 the ``bits`` are keys already and are copied. A negative float has every bit
    flipped, a positive one its sign bit; branch-free, as the signs of relevance are
    unpredictable.
    """
    sign, ones, top, mask = form
    for i in range(bits.size):
        b = bits[i] & mask
        if b == sign:
            b = b ^ sign
        keys[i] = b ^ (sign | ((b & sign) >> top) * (ones ^ sign))


@numba.njit(cache=True, nogil=True)
def _radix_ranks(keys, shifts, mask, ranks):
    """Per row of ``keys`` (``(W, N)`` unsigned), the rank of each entry in a stable ascending sort, into
    ``ranks`` (float64): one counting pass per shift of ``shifts`` (least significant digit first)."""
    n = keys.shape[1]
    order = np.empty(n, np.int64)
    scratch = np.empty(n, np.int64)
    starts = np.empty(int(mask) + 1, np.int64)
    for w in range(keys.shape[0]):
        row = keys[w]
        for i in range(n):
            order[i] = i
        for shift in shifts:
            starts[:] = 0
            for i in range(n):
                starts[(row[i] >> shift) & mask] += 1
            total = 0
            for d in range(starts.size):
                count = starts[d]
                starts[d] = total
                total += count
            for i in range(n):  # stable: entries of one digit keep the order of the previous pass
                j = order[i]
                d = (row[j] >> shift) & mask
                scratch[starts[d]] = j
                starts[d] += 1
            order, scratch = scratch, order
        for r in range(n):
            ranks[w, order[r]] = r


@numba.njit(cache=True, nogil=True)
def _splitmix64(seed, start, out):
    """SplitMix64 outputs ``start + 1``, ``start + 2``, ... of ``seed`` (counter-based, so vectorized)."""
    for i in range(out.size):
        z = seed + np.uint64(start + i + 1) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX[0]
        z = (z ^ (z >> np.uint64(27))) * _MIX[1]
        out[i] = z ^ (z >> np.uint64(31))


@numba.njit(cache=True, nogil=True)
def _steps(bits, form, seed, first_row, randomize, finite_bins, counts, shift, steps):
    """Fill ``steps (W, N)`` from the scores' bit patterns and nondecreasing ``counts (m,)``.

    Each row's keys are made in a buffer that stays in cache: from ``bits`` (W, N) with
    :func:`_order_keys` and ``form``, or, if ``randomize``, as SplitMix64 of ``seed`` (row
    ``w`` continuing at output ``(first_row + w) * N``; ``bits`` unused). Finite values have keys in the
    radix bins ``finite_bins[0]`` to ``finite_bins[1]``; returns False, leaving ``steps``
    undefined, if a key falls outside them (infinite or NaN).
    """
    n_rows, n = steps.shape
    m = counts.size
    hist = np.zeros(_N_BINS, np.int32)
    block = np.zeros(_N_BLOCKS, np.int64)  # samples per block of bins
    table = np.empty(_N_BINS, np.int16)  # bin -> step, or -(slot + 1) for a bin holding a threshold
    bound = np.empty(m, np.int64)  # bin of each rank's threshold (_N_BINS: deletes nothing)
    above = np.empty(m, np.int64)  # samples in the bins above it
    slot = np.empty(m, np.int64)
    threshold = np.zeros(m, bits.dtype)
    ties_needed = np.zeros(m, np.int64)
    ties_seen = np.zeros(m, np.int64)
    offsets = np.zeros(m + 1, np.int64)
    cand_keys = np.empty(n, bits.dtype)
    cand_pos = np.empty(n, np.int64)
    row = np.empty(n, bits.dtype)
    for w in range(n_rows):
        if randomize:
            _splitmix64(seed, (first_row + w) * n, row)
        else:
            _order_keys(bits[w], form, row)
        out = steps[w]
        hist[:] = 0
        for i in range(n):
            hist[row[i] >> shift] += 1
        if hist[: finite_bins[0]].any() or hist[finite_bins[1] + 1 :].any():
            return False
        for c in range(_N_BLOCKS):
            block[c] = hist[c * _BLOCK : (c + 1) * _BLOCK].sum()
        b = _N_BINS - 1
        count_above = 0  # samples in the bins above b
        for j in range(m):
            bound[j] = _N_BINS
            if counts[j] == 0:
                continue
            while count_above + hist[b] < counts[j]:  # walk down, a whole block at a time where it can
                if b % _BLOCK == _BLOCK - 1 and count_above + block[b // _BLOCK] < counts[j]:
                    count_above += block[b // _BLOCK]
                    b -= _BLOCK
                else:
                    count_above += hist[b]
                    b -= 1
            bound[j] = b
            above[j] = count_above
        # a bin wholly above rank j's threshold bin is deleted from step j on (bounds never increase)
        start = _N_BINS
        for j in range(m):
            if bound[j] < start:
                table[bound[j] + 1 : start] = j
                start = bound[j] + 1
        table[:start] = m
        n_slots = 0
        for j in range(m):  # one slot of candidates per distinct threshold bin
            if bound[j] == _N_BINS:
                continue
            if n_slots and bound[j] == bound[j - 1]:
                slot[j] = n_slots - 1
                continue
            table[bound[j]] = -(n_slots + 1)
            slot[j] = n_slots
            offsets[n_slots + 1] = offsets[n_slots] + hist[bound[j]]
            n_slots += 1
        filled = offsets[:n_slots].copy()
        for i in range(n):  # steps outside threshold bins; collect the rest in position order
            key = row[i]
            t = table[key >> shift]
            if t >= 0:
                out[i] = t
            else:
                s = -t - 1
                cand_keys[filled[s]] = key
                cand_pos[filled[s]] = i
                filled[s] += 1
        for j in range(m):  # exact threshold and number of tied samples to take, per rank
            if bound[j] == _N_BINS:
                continue
            cand = cand_keys[offsets[slot[j]] : offsets[slot[j] + 1]]
            rank = cand.size - (counts[j] - above[j])
            threshold[j] = np.partition(cand, rank)[rank]
            greater = 0
            for v in cand:
                greater += v > threshold[j]
            ties_needed[j] = counts[j] - above[j] - greater
            ties_seen[j] = 0
        for j0 in range(m):
            if bound[j0] == _N_BINS or (j0 and bound[j0] == bound[j0 - 1]):
                continue
            b = bound[j0]
            for q in range(offsets[slot[j0]], offsets[slot[j0] + 1]):
                v = cand_keys[q]
                step = m
                for j in range(m - 1, -1, -1):  # the smallest deleting step wins; count ties at every step
                    if bound[j] > b:
                        continue
                    if bound[j] < b or v > threshold[j]:
                        step = j
                    elif v == threshold[j]:
                        if ties_seen[j] < ties_needed[j]:
                            step = j
                        ties_seen[j] += 1
                out[cand_pos[q]] = step
    return True


# The copies multiply by the 0/1 keep flag: numba leaves a per-sample select unvectorized
# (about 7x slower here), and x * 1 + fill * 0 is exact for finite values.
@numba.njit(cache=True, nogil=True)
def _zeroed_copy(x, steps, step, out):
    for i in range(out.size):
        out[i] = x[i] * (steps[i] > step)


@numba.njit(cache=True, nogil=True)
def _filled_copy(x, steps, step, fill, out):
    for i in range(out.size):
        keep = steps[i] > step
        out[i] = x[i] * keep + fill[i] * (1 - keep)


def check_step_count(n_steps: int, what: str = "deletion counts") -> None:
    """Refuse more than :data:`MAX_STEPS` deletion steps; ``what`` names the values that give them."""
    if n_steps > MAX_STEPS:
        raise InputError(f"{what}: {n_steps} deletion steps asked for; at most {MAX_STEPS} are allowed")


def _checked_counts(counts, n: int) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.int64)
    check_step_count(counts.size)
    if np.any(np.diff(counts) < 0) or np.any(counts < 0) or np.any(counts > n):
        raise InputError(f"deletion counts {counts.tolist()} must be nondecreasing within [0, {n}]")
    return counts


def deletion_steps(scores: np.ndarray, counts, magnitude: bool = False) -> np.ndarray:
    """The step at which each sample is first deleted, for nested top-``k`` deletions.

    Parameters
    ----------
    scores
        ``(W, N)`` deletion priorities, float or unsigned integer; per row, the highest go
        first and ties go by position.
    counts
        Nondecreasing numbers of samples deleted at each step, each in ``[0, N]``.
    magnitude
        Rank float scores by their absolute value (without making ``abs(scores)``).

    Returns
    -------
    numpy.ndarray
        ``(W, N)`` uint8: sample ``i`` of row ``w`` is deleted at step ``j`` iff
        ``steps[w, i] <= j``; ``len(counts)`` means never.
    """
    scores = np.ascontiguousarray(scores)
    if scores.ndim != 2:
        raise InputError(f"deletion scores must be (windows, samples), got shape {scores.shape}")
    counts = _checked_counts(counts, scores.shape[1])
    if scores.dtype.kind == "u":
        bits = scores.astype(np.uint32) if scores.itemsize < 4 else scores
        sign, finite_bins = bits.dtype.type(0), (0, _N_BINS - 1)
    else:
        if scores.dtype not in _FLOAT_BITS:
            scores = scores.astype(np.float64)
        unsigned, sign, infinity = _FLOAT_BITS[scores.dtype]
        bits = scores.view(unsigned)
        # the bins of -inf and +inf (sign and exponent lie within the bin bits): finite values fall between
        shift = 8 * scores.itemsize - BIN_BITS
        finite_bins = (int(~(infinity | sign)) >> shift) + 1, (int(infinity | sign) >> shift) - 1
    unsigned = bits.dtype.type
    ones = unsigned(np.iinfo(bits.dtype).max)
    form = (sign, ones, unsigned(8 * bits.itemsize - 1), ones ^ sign if magnitude else ones)
    return _run(bits, form, 0, 0, False, finite_bins, counts, np.empty(bits.shape, np.uint8))


def stable_ranks(a: np.ndarray) -> np.ndarray:
    """Ordinal ranks along the last axis: where each entry lands in a stable ascending sort.

    The same numbers as inverting ``np.argsort(a, axis=-1, kind="stable")``: ties (and -0.0
    against +0.0) go by position, NaN (of either sign) last. Float32 keys take two radix
    passes; other dtypes are ranked as their float64 values, in four. Rows shorter than
    :data:`RADIX_MIN_LENGTH` are ranked by that argsort.

    Returns
    -------
    numpy.ndarray
        float64, the shape of ``a``; each row a permutation of ``0 .. N - 1``.
    """
    a = np.asarray(a)
    if a.dtype not in _FLOAT_BITS:
        a = a.astype(np.float64)
    rows = np.ascontiguousarray(a.reshape(int(np.prod(a.shape[:-1])), a.shape[-1]) if a.ndim else a.reshape(1, 1))
    ranks = np.empty(rows.shape, np.float64)
    if rows.shape[1] < RADIX_MIN_LENGTH:
        order = np.argsort(rows, axis=-1, kind="stable")
        np.put_along_axis(ranks, order, np.broadcast_to(np.arange(rows.shape[1], dtype=np.float64), rows.shape), -1)
        return ranks.reshape(a.shape)
    unsigned, sign, _ = _FLOAT_BITS[rows.dtype]
    ones = unsigned(np.iinfo(unsigned).max)
    keys = np.empty(rows.shape, unsigned)
    _order_keys(rows.view(unsigned).reshape(-1), (sign, ones, unsigned(8 * rows.itemsize - 1), ones),
                keys.reshape(-1))
    keys[np.isnan(rows)] = ones  # one key above +inf's for every NaN: numpy sorts them last, by position
    _radix_ranks(keys, np.arange(0, 8 * rows.itemsize, 16).astype(unsigned), unsigned(0xFFFF), ranks)
    return ranks.reshape(a.shape)


def random_deletion_steps(n_rows: int, n: int, counts, seed: int, first_row: int = 0) -> np.ndarray:
    """Deletion steps of a seeded uniform random order: each step deletes a uniform ``k``-subset.

    Equal to rows ``first_row`` to ``first_row + n_rows`` of :func:`deletion_steps` of
    :func:`random_keys` ``((first_row + n_rows, n), seed)``, without storing the keys: a row's
    order depends on its index in the whole set alone, not on how the set is split into batches.
    """
    counts = _checked_counts(counts, n)
    no_scores = np.empty((0, 0), np.uint64)  # the kernel makes the keys
    ones = np.uint64(2**64 - 1)
    form = (np.uint64(0), ones, np.uint64(63), ones)
    if first_row < 0:
        raise InputError(f"first_row {first_row} is not allowed; give an index >= 0")
    return _run(no_scores, form, seed, first_row, True, (0, _N_BINS - 1), counts, np.empty((n_rows, n), np.uint8))


def _run(bits, form, seed: int, first_row: int, randomize: bool, finite_bins, counts, steps) -> np.ndarray:
    shift = bits.dtype.type(8 * bits.itemsize - BIN_BITS)
    if not _steps(bits, form, np.uint64(seed % 2**64), first_row, randomize, finite_bins, counts, shift, steps):
        raise InputError("deletion scores hold NaN or infinite values")
    return steps


def random_keys(shape, seed: int, start: int = 0) -> np.ndarray:
    """Uniform 64-bit keys (uint64) from ``seed``, SplitMix64 outputs ``start + 1`` on: the top ``k``
    of a row are a uniform ``k``-subset.

    SplitMix64 (counter-based, passes BigCrush; one vectorized pass): numpy's generators
    take about 3.5 ns per 64-bit value here, the largest single cost of a random deletion.
    Ties, which go by position, have a chance of about 1e-10 per row of 81920.
    """
    if start < 0:
        raise InputError(f"start {start} is not allowed; give an output index >= 0")
    keys = np.empty(shape, dtype=np.uint64)
    _splitmix64(np.uint64(seed % 2**64), start, keys.reshape(-1))
    return keys


def _same_size(**arrays: np.ndarray) -> None:
    # the compiled copies index every array by the window's position, unchecked
    sizes = {name: a.size for name, a in arrays.items()}
    if len(set(sizes.values())) > 1:
        raise InputError(f"deletion steps, windows and fills must have one size each; got {sizes}")


def zeroed_copy(x: np.ndarray, steps: np.ndarray, step: int, out: np.ndarray) -> np.ndarray:
    """``x`` with the samples deleted by step ``step`` set to zero, written to C-contiguous ``out``."""
    _same_size(windows=x, steps=steps, out=out)
    _zeroed_copy(x.reshape(-1), steps.reshape(-1), step, out.reshape(-1))
    return out


def filled_copy(x: np.ndarray, steps: np.ndarray, step: int, fill: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``x`` with the samples deleted by step ``step`` taken from ``fill``, written to C-contiguous ``out``."""
    _same_size(windows=x, steps=steps, fill=fill, out=out)
    _filled_copy(x.reshape(-1), steps.reshape(-1), step, fill.reshape(-1), out.reshape(-1))
    return out


# ---------------------------------------------------------------------------------------------- torch, any device
_INT64_MIN = -(2**63)


def _signed64(value: int) -> int:
    """The int64 with the bits of unsigned 64-bit ``value``."""
    value %= 2**64
    return value - 2**64 if value >= 2**63 else value


def _shr(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 ``z`` (arithmetic shift, sign copies masked off)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _descending_keys(scores: torch.Tensor, magnitude: bool) -> torch.Tensor:
    """Signed integer keys whose ascending stable sort is the scores' descending one (ties by position).

    Dtypes as :func:`deletion_steps` takes them: unsigned integers as they are (uint64 with its sign
    bit flipped, to order as unsigned), float32 and float64 by their bits, anything else as float64.
    A float's bits, with -0.0 made +0.0, order like it once a negative one has all bits but its sign
    flipped; ``~`` then reverses the order exactly (``~k = -k - 1``).
    """
    if scores.dtype == torch.uint64:
        return ~(scores.view(torch.int64) ^ _INT64_MIN)
    if scores.dtype in (torch.uint8, torch.uint16, torch.uint32):
        return ~scores.to(torch.int64)
    if scores.dtype not in (torch.float32, torch.float64):
        scores = scores.to(torch.float64)
    if not bool(torch.isfinite(scores).all()):
        raise InputError("deletion scores hold NaN or infinite values")
    bits = scores.view(torch.int32 if scores.dtype == torch.float32 else torch.int64)
    info = torch.iinfo(bits.dtype)
    if magnitude:
        bits = bits & info.max
    bits = torch.where(bits == info.min, 0, bits)  # -0.0 ranks as +0.0
    return ~torch.where(bits < 0, bits ^ info.max, bits)


def _steps_of_keys(keys: torch.Tensor, counts: np.ndarray) -> torch.Tensor:
    """Steps ``(W, N)`` uint8 from keys whose ascending stable sort per row is the deletion order."""
    n_rows, n = keys.shape
    order = torch.sort(keys, dim=1, stable=True).indices
    bounds = torch.as_tensor(counts, device=keys.device)
    # rank r is deleted from the first step j with counts[j] > r on: the number of counts <= r
    by_rank = torch.searchsorted(bounds, torch.arange(n, device=keys.device), right=True).to(torch.uint8)
    steps = torch.empty((n_rows, n), dtype=torch.uint8, device=keys.device)
    return steps.scatter_(1, order, by_rank.expand(n_rows, n))


def torch_deletion_steps(scores: torch.Tensor, counts, magnitude: bool = False) -> torch.Tensor:
    """:func:`deletion_steps` with torch, on the device of ``scores``: the same bytes, as a uint8 tensor.

    Takes the same ``(W, N)`` scores (float or unsigned integer tensors), counts and
    ``magnitude``, and refuses the same inputs with the same messages.
    """
    if scores.ndim != 2:
        raise InputError(f"deletion scores must be (windows, samples), got shape {tuple(scores.shape)}")
    counts = _checked_counts(counts, scores.shape[1])
    return _steps_of_keys(_descending_keys(scores.detach(), magnitude), counts)


def torch_random_deletion_steps(n_rows: int, n: int, counts, seed: int,
                                device: str | torch.device = "cpu", first_row: int = 0) -> torch.Tensor:
    """:func:`random_deletion_steps` with torch, on ``device``: the same bytes, as a uint8 tensor.

    SplitMix64 in int64, whose wrapping sums and products have the bits of the uint64 ones.
    """
    counts = _checked_counts(counts, n)
    if first_row < 0:
        raise InputError(f"first_row {first_row} is not allowed; give an index >= 0")
    z = torch.arange(first_row * n + 1, (first_row + n_rows) * n + 1, dtype=torch.int64, device=device)
    z = z * _signed64(int(_GOLDEN))
    z = z + _signed64(seed)
    z = (z ^ _shr(z, 30)) * _signed64(int(_MIX[0]))
    z = (z ^ _shr(z, 27)) * _signed64(int(_MIX[1]))
    z = z ^ _shr(z, 31)
    return _steps_of_keys(~(z ^ _INT64_MIN).view(n_rows, n), counts)


def deletion_steps_on(scores: torch.Tensor, counts, magnitude: bool = False) -> np.ndarray | torch.Tensor:
    """Deletion steps of ``scores (W, N)``, where their deleted copies are made: the scores' device.

    On the CPU, the compiled kernels' numpy array (:func:`deletion_steps`; their radix pass beats
    a sort there, and the CPU copy kernels take it); elsewhere a uint8 tensor on that device
    (:func:`torch_deletion_steps`), with no host round trip. The same bytes either way.
    """
    if scores.device.type == "cpu":
        return deletion_steps(scores.detach().numpy(), counts, magnitude)
    return torch_deletion_steps(scores, counts, magnitude)


def random_deletion_steps_on(device: str | torch.device, n_rows: int, n: int, counts,
                             seed: int, first_row: int = 0) -> np.ndarray | torch.Tensor:
    """:func:`random_deletion_steps` where the copies are made, as :func:`deletion_steps_on` chooses."""
    if torch.device(device).type == "cpu":
        return random_deletion_steps(n_rows, n, counts, seed, first_row)
    return torch_random_deletion_steps(n_rows, n, counts, seed, device, first_row)
