"""Simulation conventions: how an image-source simulator turns a room into microphone signals.

Two simulators of one room give audibly the same responses and yet different numbers: the
sign of a wall reflection, the filter that draws an arrival between samples, where the
response stops, and how the speech is convolved and cut into windows. A localizer trained on
one set of choices meets a shifted input distribution under another (a SampleCNN trained on
gpuRIR data loses most of its range accuracy when only the reflection sign is flipped), so
every choice is named here and recorded with the data.

``gpurir`` (default)
    gpuRIR (Diaz-Guerra et al., 2021; ``src/gpuRIR_cuda.cu``) as the paper's
    ``generate_data.py`` ran it (``activateLUT(True)``, ``activateMixedPrecision(False)``,
    ``Tmax = Tdiff = T60``, ``nb_img = t2n(Tmax, room)``):

    - every wall reflection coefficient is negated (``calcAmpTau_kernel``:
      ``beta[0] = -beta_x1; ...``), so an image after ``n`` reflections has amplitude
      ``(-beta)**n / (4 pi d)``;
    - it arrives at ``d / c`` with no global offset, drawn as ``sinc(t - tau)`` under a Hann
      window ``0.5 (1 + cos(2 pi (t - tau) / Tw))`` for ``|t - tau| < Tw / 2``, ``Tw = 8 ms``.
      gpuRIR rounds ``Tw`` to whole samples (``cuda_rirGenerator``: ``Tw = (int) round(8e-3f * Fs)``, in the
      look-up-table and the plain kernel; 176 at 22.05 kHz); we keep ``0.008 fs`` unrounded (176.4), as its
      mixed-precision kernel and its versions before the look-up table do. The two kernels differ by at most
      1.3e-5 of an arrival at 22.05 kHz (2.6e-5 at 11.025 kHz, 1.6e-6 at 44.1 kHz), not at all where
      ``0.008 fs`` is whole (128 at 16 kHz, the paper's rate). gpuRIR's look-up table samples its kernel every
      1/16 sample and interpolates linearly (up to ~0.2 % of an arrival, far more than that gap); we evaluate the
      kernel itself (within 1e-6 of an arrival);
    - the images are gpuRIR's grid: ``ceil(2 Tmax c / L)`` per axis (``t2n``), mirror index
      ``k = n - N // 2`` giving cell ``ceil(k / 2)`` and parity ``|k mod 2|``;
    - ``nSamples = ceil(Tmax fs)`` rounded up to even;
    - ``beta = sqrt(1 - 0.161 V / (S T60))`` (``beta_SabineEstimation``, uniform walls);
    - the peak-normalized utterance is convolved over its full length (utterance + RIR - 1),
      white Gaussian noise of power ``mean(|mic 0|**2) / 10**(SNR / 10)`` is added over that
      whole signal, and windows are cut from sample 0 (the incomplete tail dropped).

``pyroomacoustics``
    xai-loc's convention before gpuRIR's was adopted, kept so that old data sets can be
    rebuilt byte for byte: pyroomacoustics' sign (``beta**n / (4 pi d)``), a 16-tap Hann-windowed
    sinc on a 64-phase look-up table, every image that arrives before ``t_max``,
    ``ceil(t_max fs)`` samples, ``beta`` from ``24 ln(10) V / (c S T60)``, and the convolution
    cut to the utterance length (noise and windows over that). Real pyroomacoustics also
    scales by ``1 / d`` instead of ``1 / (4 pi d)``, delays by 40 samples and high-passes; the
    ``pyroomacoustics`` backend undoes those three.

Register another with :func:`register_convention`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction

from xai_loc.errors import InputError

#: Sabine's constant of gpuRIR's ``beta_SabineEstimation`` (s/m), ``24 ln(10) / c`` rounded for
#: gpuRIR's speed of sound :data:`GPURIR_C`; ``None`` in a convention means ``24 ln(10) / c``.
GPURIR_SABINE, GPURIR_C = 0.161, 343.0
#: Choices of each enumerated field.
IMAGE_SETS = ("t2n", "reach")
LENGTH_RULES = ("even", "ceil")
CONVOLUTIONS = ("full", "cut")
SUB_SAMPLE = ("exact", "lut64")


@dataclass(frozen=True)
class Convention:
    """One set of simulation choices (see the module docstring for the two built in).

    Parameters
    ----------
    name
        Registry name; recorded in scenes, store attrs and digests.
    reflection_sign
        ``-1``: an image after ``n`` reflections has amplitude ``(-beta)**n / (4 pi d)``
        (gpuRIR); ``+1``: ``beta**n / (4 pi d)`` (pyroomacoustics).
    window_s
        Total width in seconds of the Hann window under each arrival's sinc, ``window_s * fs``
        samples, not rounded (gpuRIR rounds it; see the module docstring). Give this or ``window_taps``.
    window_taps
        The same width as a fixed number of samples, whatever ``fs``.
    sub_sample
        ``"exact"``: each arrival's fractional delay is drawn exactly (to about 1e-6 of its
        amplitude); ``"lut64"``: the arrival snaps to the nearest of 64 sub-sample phases
        (xai-loc's earlier simulator; at most 1/128 sample off in float64, while in float32 about 4 % of
        images land one phase off, up to about 0.01 samples).
    images
        ``"t2n"``: gpuRIR's grid of ``ceil(2 t_max c / L)`` mirror indices per axis;
        ``"reach"``: every image that arrives before ``t_max``.
    length
        RIR length rule: ``"even"`` (``ceil(t_max fs)`` rounded up to even) or ``"ceil"``
        (:func:`ceil_samples`).
    sabine_constant
        ``alpha = sabine_constant * (343 / c) * V / (S T60)`` (the constant is the one for c = 343
        m/s); ``None`` means ``24 ln(10) / c``.
    convolution
        ``"full"``: speech convolved over ``len(speech) + len(rir) - 1`` samples, noise and
        windows over all of it; ``"cut"``: the convolution cut to ``len(speech)``.
    peak_normalize
        Divide the utterance by its peak before convolving.
    description
        One line for listings.
    """

    name: str
    reflection_sign: int
    window_s: float | None
    window_taps: int | None
    sub_sample: str
    images: str
    length: str
    sabine_constant: float | None
    convolution: str
    peak_normalize: bool
    description: str = ""

    def __post_init__(self) -> None:
        if self.reflection_sign not in (-1, 1):
            raise InputError(f"convention {self.name!r}: reflection_sign={self.reflection_sign!r}; allowed: -1, 1")
        if (self.window_s is None) == (self.window_taps is None):
            raise InputError(f"convention {self.name!r}: give exactly one of window_s and window_taps")
        for field, value, allowed in (("sub_sample", self.sub_sample, SUB_SAMPLE), ("images", self.images, IMAGE_SETS),
                                      ("length", self.length, LENGTH_RULES),
                                      ("convolution", self.convolution, CONVOLUTIONS)):
            if value not in allowed:
                raise InputError(f"convention {self.name!r}: {field}={value!r}; allowed: {', '.join(allowed)}")
        exact = 24.0 * math.log(10.0) / GPURIR_C  # a larger constant would ask walls for alpha > 1
        if self.sabine_constant is not None and not 0.0 < self.sabine_constant <= exact:
            raise InputError(f"convention {self.name!r}: sabine_constant={self.sabine_constant!r}; allowed: "
                             f"(0, {exact:.5f}] (24 ln(10) / 343 m/s at most)")

    def taps(self, fs: int) -> float:
        """Width of the arrival filter's Hann window in samples: ``window_taps``, or ``window_s * fs`` not rounded
        (176.4 at 22.05 kHz, where gpuRIR rounds ``Tw = 8e-3 * Fs`` to 176: see the module docstring)."""
        taps = self.window_taps if self.window_taps is not None else self.window_s * fs
        if taps < 2:
            raise InputError(f"convention {self.name!r} gives a {taps:g}-tap arrival filter at fs={fs}; need >= 2")
        return taps

    def rir_length(self, t_max: float, fs: int) -> int:
        """Samples of a response of ``t_max`` seconds.

        ``"even"`` computes ``ceil(Tmax * Fs)`` in single precision, as gpuRIR's C++ does,
        then rounds up to even; ``"ceil"`` is :func:`ceil_samples`.
        """
        if self.length == "even":
            import numpy as np

            n = int(math.ceil(float(np.float32(t_max) * np.float32(fs))))
            return n + n % 2
        return ceil_samples(t_max, fs)

    def reflection_coefficient(self, room, t60: float) -> float:
        """Wall reflection coefficient ``beta`` (before the sign) for ``t60`` in ``room`` (Sabine)."""
        from xai_loc.acoustics.room import check_t60

        t60 = check_t60(t60, room)
        if self.sabine_constant is None:
            return room.reflection_coefficient(t60)
        # the rounded constant holds for gpuRIR's speed of sound; another c (a room of other air, or
        # water) scales it, which keeps alpha < 1 wherever check_t60 allows the T60
        alpha = self.sabine_constant * (GPURIR_C / room.c) * room.volume / (room.surface * t60)
        return math.sqrt(1.0 - alpha)

    def to_dict(self) -> dict:
        """Every field, JSON-able (for store attrs and provenance)."""
        return asdict(self)


def ceil_samples(seconds: float, fs: int) -> int:
    """``ceil(seconds * fs)`` computed exactly for the decimal ``seconds`` is written as (its shortest repr):
    0.55 s at 48 kHz is 26400 samples, where the float product ``0.55 * 48000`` rounds up to 26401."""
    return int(math.ceil(Fraction(repr(float(seconds))) * Fraction(float(fs))))


#: Registered conventions by name.
CONVENTIONS: dict[str, Convention] = {}
#: The convention of the paper scene and of the simulator when none is named.
DEFAULT_CONVENTION = "gpurir"


def register_convention(convention: Convention) -> Convention:
    """Add a convention to :data:`CONVENTIONS` (its name must be new)."""
    if convention.name in CONVENTIONS:
        raise InputError(f"convention {convention.name!r} is already registered")
    CONVENTIONS[convention.name] = convention
    return convention


def get_convention(convention: str | Convention | None = None) -> Convention:
    """The registered convention of that name (``None``: :data:`DEFAULT_CONVENTION`); a Convention passes through."""
    if isinstance(convention, Convention):
        return convention
    name = DEFAULT_CONVENTION if convention is None else convention
    if not isinstance(name, str) or name not in CONVENTIONS:
        raise InputError(f"convention {name!r} is unknown; allowed: {', '.join(CONVENTIONS)}")
    return CONVENTIONS[name]


register_convention(Convention(
    name="gpurir", reflection_sign=-1, window_s=8e-3, window_taps=None, sub_sample="exact", images="t2n",
    length="even", sabine_constant=GPURIR_SABINE, convolution="full", peak_normalize=True,
    description="gpuRIR as the paper ran it: (-beta)^n, 8 ms Hann-windowed sinc, t2n image grid, even length, "
                "full convolution"))
register_convention(Convention(
    name="pyroomacoustics", reflection_sign=1, window_s=None, window_taps=16, sub_sample="lut64", images="reach",
    length="ceil", sabine_constant=None, convolution="cut", peak_normalize=False,
    description="xai-loc before gpuRIR's conventions: +beta^n, 16-tap sinc on a 64-phase table, convolution cut "
                "to the utterance"))


def rir_length(convention: str | Convention | None, t60: float, fs: int, t_max: float | None = None) -> int:
    """Samples of the responses a simulation under ``convention`` returns (``t_max`` defaults to ``t60``)."""
    return get_convention(convention).rir_length(t60 if t_max is None else t_max, fs)
