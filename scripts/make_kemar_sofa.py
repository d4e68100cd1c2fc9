"""Convert the MIT KEMAR HRIRs shipped inside ``slab`` to the SOFA file in xai-loc's package data.

Run once, by a maintainer, in a scratch environment (slab is *not* a dependency of xai-loc)::

    python -m venv --system-site-packages /tmp/slabenv
    /tmp/slabenv/bin/pip install slab            # slab 1.8.2 was used
    apt-get install libportaudio2                # slab imports sounddevice, which needs PortAudio
    /tmp/slabenv/bin/python scripts/make_kemar_sofa.py

What it does (Gardner & Martin, MIT Media Lab Perceptual Computing TR #280, 1994):

- reads ``slab.HRTF.kemar()`` (normal pinna, 710 directions, 44.1 kHz, 512 taps; slab keeps
  the left-ear normal-pinna responses mirrored to both ears, as in the SOFA conversion of
  the "normal pinna" set);
- snaps the azimuths, which slab stores as float16, to the nominal measurement grid
  ``k * 360 / n`` of each elevation ring (differences <= 0.11 degree, at +-40 degrees only),
  and the distance (float16 1.4004) to the nominal 1.4 m;
- writes a ``SimpleFreeFieldHRIR`` SOFA file with zlib level 9 (sofar stores float64; the
  values are 16-bit integers / 32768, so the byte-shuffled data compress to about 0.8 MB);
- checks the written file against slab's data and prints its size.

Directions follow SOFA: azimuth counter-clockwise from the front (90 = left), elevation up,
distance 1.4 m; receiver 0 is the left ear.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from xai_loc.errors import InputError
from xai_loc.io import atomic_path, check_file_path
from xai_loc.script_args import Parser, checked

OUT = Path(__file__).resolve().parents[1] / "xai_loc" / "acoustics" / "hrtf_data" / "mit_kemar_normal_pinna.sofa"

LICENSE = (
    "MIT KEMAR HRTF data: Copyright 1994 by the MIT Media Laboratory. It is provided free with "
    "no restrictions on use, provided the authors are cited when the data is used in any "
    "research or commercial application. Cite: B. Gardner and K. Martin, HRTF Measurements of "
    "a KEMAR Dummy-Head Microphone, MIT Media Lab Perceptual Computing Technical Report #280, 1994."
)


def kemar_from_slab() -> tuple[np.ndarray, np.ndarray, float]:
    """``(hrirs (710, 2, 512) float64, directions (710, 3) float64, fs)`` from slab."""
    import slab

    hrtf = slab.HRTF.kemar()
    hrirs = np.stack([f.data for f in hrtf.data]).transpose(0, 2, 1).astype(np.float64)
    pos = np.asarray(hrtf.sources.vertical_polar, dtype=np.float64)
    az = pos[:, 0].copy()
    for el in np.unique(pos[:, 1]):
        ring = pos[:, 1] == el
        step = 360.0 / ring.sum()
        k = np.round(az[ring] / step)
        if not np.array_equal(np.sort(k), np.arange(ring.sum())) or np.abs(az[ring] - k * step).max() > 0.15:
            raise SystemExit(f"unexpected azimuth grid at elevation {el}")
        az[ring] = k * step
    pos[:, 0] = az
    if np.abs(pos[:, 2] - 1.4).max() > 0.01:
        raise SystemExit("unexpected source distance")
    pos[:, 2] = 1.4  # float16 in slab (1.4004); nominal 1.4 m
    return hrirs, pos, float(hrtf.samplerate)


def sofa_file(text: str) -> Path:
    """A SOFA file to write: its name ends in ``.sofa`` (sofar would append it), it is no folder."""
    path = check_file_path(text)
    if path.suffix != ".sofa":
        raise InputError(f"{text!r} is not allowed; use a file name ending in .sofa")
    return path


def main() -> None:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=checked(sofa_file), default=str(OUT))
    args = parser.parse_args()
    missing = [name for name in ("slab", "sofar") if importlib.util.find_spec(name) is None]
    if missing:
        parser.error(f"{' and '.join(missing)} cannot be imported; run this script where slab and sofar are "
                     "installed (a scratch environment: see its docstring)")

    import sofar

    hrirs, pos, fs = kemar_from_slab()
    assert hrirs.shape == (710, 2, 512) and fs == 44100.0
    scaled = hrirs * 32768.0
    assert np.array_equal(scaled, np.round(scaled)), "expected 16-bit data"

    sofa = sofar.Sofa("SimpleFreeFieldHRIR")
    sofa.GLOBAL_Title = "MIT KEMAR, normal pinna"
    sofa.GLOBAL_DatabaseName = "MIT KEMAR"
    sofa.GLOBAL_ListenerShortName = "KEMAR"
    sofa.GLOBAL_AuthorContact = "Bill Gardner and Keith Martin, MIT Media Lab"
    sofa.GLOBAL_Organization = "MIT Media Lab Machine Listening Group"
    sofa.GLOBAL_License = LICENSE
    sofa.GLOBAL_References = (
        "B. Gardner and K. Martin (1994), HRTF Measurements of a KEMAR Dummy-Head Microphone, "
        "MIT Media Lab Perceptual Computing Technical Report #280; "
        "https://sound.media.mit.edu/resources/KEMAR.html")
    sofa.GLOBAL_Comment = (
        "Converted for xai-loc by scripts/make_kemar_sofa.py from slab.HRTF.kemar() (slab 1.8.2): "
        "left-ear normal-pinna responses mirrored to both ears; azimuths snapped to k*360/n per "
        "elevation ring; 512 taps after the first 200 samples of the measurement (as distributed by MIT).")
    sofa.GLOBAL_History = "Measured 1994 in MIT's anechoic chamber, loudspeaker at 1.4 m, MLS, 44.1 kHz."
    sofa.GLOBAL_Origin = "slab package data (mit_kemar_normal_pinna.bz2)"
    sofa.Data_IR = hrirs
    sofa.Data_SamplingRate = fs
    sofa.Data_Delay = np.zeros((1, 2))
    sofa.SourcePosition = pos
    sofa.ReceiverPosition = np.array([[0.0, 0.09, 0.0], [0.0, -0.09, 0.0]])[:, :, None]
    sofa.verify()
    with atomic_path(args.out) as tmp:  # read back before it is put in place; a failure leaves nothing
        sofar.write_sofa(str(tmp), sofa, compression=9)
        back = sofar.read_sofa(str(tmp), verbose=False)
        np.testing.assert_array_equal(np.asarray(back.Data_IR, dtype=np.float64), hrirs)
        np.testing.assert_array_equal(back.SourcePosition, pos)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
