#!/usr/bin/env python
"""Generate the default speech corpus shipped with xai-loc (offline, with espeak-ng).

The corpus replaces CMU ARCTIC where no corpus can be downloaded: a few hundred distinct
English sentences (our own, written below or composed deterministically from the word
lists below), spoken by the espeak-ng formant synthesizer with several voices, voice
variants, speeds and pitches. Each utterance is resampled from espeak-ng's 22.05 kHz to
16 kHz (``scipy.signal.resample_poly``, 320/441), trimmed of leading and trailing silence,
peak-normalized and stored as Ogg/Vorbis next to an ``index.json`` and a ``README.md``.

Only this script needs espeak-ng (``apt-get install espeak-ng``); its output is committed,
so users and CI never run it. Same espeak-ng version + same seed = same audio.

Usage::

    python scripts/make_speech_corpus.py [--out xai_loc/acoustics/corpus] [--n 300]
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from xai_loc.io import umask
from xai_loc.script_args import Parser, count

FS = 16000
ESPEAK_FS = 22050
UP, DOWN = 320, 441  # 22050 Hz * 320 / 441 = 16000 Hz
SEED = 20240901
PEAK = 0.9  # stored peak; the loader re-normalizes to 1 after decoding
VORBIS_COMPRESSION = 0.95  # soundfile compression_level (0 = best quality, 1 = smallest)
MIN_S, MAX_S = 1.8, 3.6  # target duration after trimming, seconds
SPEED_RANGE = (120, 200)  # words per minute, espeak-ng -s
PITCH_RANGE = (25, 75)  # espeak-ng -p, 0..99

# espeak-ng's own (non-MBROLA) English voices, as listed by `espeak-ng --voices=en`.
VOICES = [
    "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
    "en-gb-x-gbcwmd", "en-029", "en-us-nyc",
]
# Voice variants (espeak-ng-data/voices/!v): male and female timbres.
VARIANTS = ["", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5"]

# Hand-written sentences (ours, no external source).
SENTENCES = [
    "The kettle whistled while we argued about the map.",
    "Please hand me the blue folder on the top shelf.",
    "A cold wind pushed the boats against the old pier.",
    "Nobody expected the bakery to open before six.",
    "She measured the distance twice and wrote it down.",
    "The train to the coast leaves from platform nine.",
    "Turn left at the church and follow the narrow lane.",
    "Our neighbour keeps three goats and a noisy goose.",
    "The microphone picked up every step in the hallway.",
    "He painted the fence green to match the garden gate.",
    "Warm bread and fresh butter make a fine breakfast.",
    "The library closes early on the first Friday of June.",
    "Seven ducks crossed the road in a perfect line.",
    "I found the missing key inside my winter boot.",
    "The storm knocked out power across the whole valley.",
    "Could you repeat the last number a little slower?",
    "The orchestra tuned up while the lights went down.",
    "A thin layer of frost covered the parked cars.",
    "We counted forty two stairs to the lighthouse lamp.",
    "The engineer checked each valve before the test.",
    "Lemon juice removes the stain if you act quickly.",
    "The children built a tower of sand near the water.",
    "His watch stopped at exactly a quarter past four.",
    "The market sells apples, pears and yellow plums.",
    "Move the speaker closer to the centre of the room.",
    "Every echo tells us something about the walls.",
    "The fox slipped under the hedge without a sound.",
    "My sister plays the cello in a small quartet.",
    "The river rose quickly after three days of rain.",
    "Write your name clearly at the top of the page.",
    "A pale moon hung low over the quiet harbour.",
    "The new bridge will carry trains and bicycles.",
    "Dry leaves rattled along the empty pavement.",
    "The doctor asked him to breathe in slowly.",
    "Thick smoke drifted from the chimney of the inn.",
    "The parrot learned to whistle the national anthem.",
    "We should leave before the traffic gets worse.",
    "The chef sliced the onions with a heavy knife.",
    "Bright sparks flew from the grinding wheel.",
    "The museum guard yawned behind his newspaper.",
    "Check the battery before you start the recording.",
    "A sudden laugh broke the silence in the hall.",
    "The puppy chewed a hole in the new sofa.",
    "Fresh snow makes the forest strangely quiet.",
    "The pilot announced a short delay due to fog.",
    "Our team finished the puzzle in under an hour.",
    "The farmer sold his tractor to a young couple.",
    "Hot soup tastes better on a rainy evening.",
    "The clock in the tower chimes every half hour.",
    "Her voice carried clearly across the courtyard.",
    "The glass jar cracked when the water boiled.",
    "Gentle waves washed the pebbles smooth and round.",
    "The postman left a parcel by the back door.",
    "Nine students signed up for the evening class.",
    "The cat watched the birds from the windowsill.",
    "Keep the receipt in case the shoes do not fit.",
    "A tall ladder leaned against the apple tree.",
    "The bus driver waited for the old man to sit.",
    "Loud music drifted up from the street below.",
    "The recipe calls for two eggs and a pinch of salt.",
    "We watched the sunset from the top of the hill.",
    "The violin sounded sweeter in the stone chapel.",
    "His jacket was soaked after the long walk home.",
    "The printer jammed halfway through the report.",
    "Small fish darted between the rocks in the pool.",
    "The judge listened carefully to both witnesses.",
    "Fold the letter twice and seal the envelope.",
    "The garden smelled of roses after the shower.",
    "A quiet room makes the experiment much easier.",
    "The horse jumped the ditch and kept on running.",
    "They sailed north for three weeks without rest.",
    "The bell rang twice, and the shop went silent.",
    "Wooden chairs scraped across the tiled floor.",
    "The robot vacuum got stuck under the bed again.",
    "Grandmother knitted a scarf for every cousin.",
    "The lecture began with a question about sound.",
    "Heavy trucks rumbled past the school all morning.",
    "She tapped the table to count out the rhythm.",
    "The owl called softly from the dark pine trees.",
    "Ice cream melts fast in the afternoon sun.",
    "The referee blew the whistle to end the match.",
    "Old photographs were stacked in a shoe box.",
    "The boat drifted slowly toward the far shore.",
    "Please switch off your phone during the concert.",
    "A narrow path winds down to the hidden beach.",
    "The baker dusted the loaves with white flour.",
    "Thunder rolled over the hills late at night.",
    "He whispered the answer so nobody else would hear.",
    "The compass needle swung and pointed north.",
    "A row of lanterns lit the edge of the canal.",
    "The crowd cheered when the runner crossed the line.",
    "Sharp pencils make the drawing much neater.",
    "The elevator stopped between the third and fourth floor.",
    "Rain drummed on the metal roof of the shed.",
    "The tailor pinned the hem of the long grey coat.",
    "Bees hummed busily among the lavender bushes.",
    "The captain ordered the crew to lower the sails.",
    "A faint hum came from the refrigerator at night.",
    "The actors bowed as the curtain slowly fell.",
    "We planted tulips along the edge of the lawn.",
]

# Word lists for composed sentences (deterministic, see compose_sentences).
SUBJECTS = [
    "the old sailor", "my younger brother", "a tired student", "the village doctor",
    "our new neighbour", "the quiet librarian", "a clever engineer", "the head gardener",
    "the night watchman", "a young violinist", "the bus driver", "the hotel manager",
    "a famous painter", "the school nurse", "the football coach", "a curious child",
    "the busy waiter", "my grandfather", "the ship's cook", "a careful pilot",
    "the radio host", "an elderly farmer", "the museum guide", "a nervous actor",
]
VERBS = [
    "carried", "dropped", "repaired", "painted", "found", "hid", "polished", "borrowed",
    "wrapped", "cleaned", "sold", "opened", "measured", "counted", "weighed", "lifted",
    "returned", "washed", "packed", "folded",
]
ADJECTIVES = [
    "heavy", "broken", "wooden", "silver", "dusty", "shiny", "ancient", "tiny", "bright",
    "crooked", "leather", "rusty", "golden", "striped", "fragile", "enormous",
]
OBJECTS = [
    "suitcase", "lantern", "ladder", "clock", "bucket", "trumpet", "basket", "mirror",
    "bicycle", "kettle", "umbrella", "hammer", "drum", "teapot", "chair", "telescope",
    "wagon", "violin", "shovel", "barrel",
]
PLACES = [
    "near the harbour", "behind the station", "in the attic", "beside the river",
    "under the bridge", "at the market", "in the cellar", "on the balcony",
    "inside the barn", "by the fountain", "across the square", "in the garden shed",
    "at the bus stop", "on the hillside", "next to the bakery", "in the workshop",
]
TIMES = [
    "before breakfast", "after the storm", "late last night", "on Sunday morning",
    "during the concert", "at noon", "early in spring", "just before midnight",
    "after lunch", "on a windy afternoon", "in the summer holidays", "at dawn",
]
QUESTION_WORDS = ["why", "when", "where", "how"]
NUMBERS = [
    "three", "seven", "eleven", "twelve", "fifteen", "twenty", "thirty one", "forty",
    "sixty five", "eighty", "ninety nine", "a hundred",
]
DISTANCES = ["metres", "miles", "kilometres", "steps", "laps", "blocks"]
ITEMS = ["pages", "boxes", "coins", "apples", "bottles", "tickets", "chairs", "letters"]


def compose_sentences(n: int, rng: random.Random, exclude: set[str]) -> list[str]:
    """Compose ``n`` distinct sentences from the word lists above, in a fixed order."""

    def cap(s: str) -> str:
        return s[0].upper() + s[1:]

    templates = [
        lambda: f"{cap(rng.choice(SUBJECTS))} {rng.choice(VERBS)} the {rng.choice(ADJECTIVES)} "
        f"{rng.choice(OBJECTS)} {rng.choice(PLACES)}.",
        lambda: f"{cap(rng.choice(TIMES))}, {rng.choice(SUBJECTS)} {rng.choice(VERBS)} a "
        f"{rng.choice(ADJECTIVES)} {rng.choice(OBJECTS)}.",
        lambda: f"{cap(rng.choice(QUESTION_WORDS))} did {rng.choice(SUBJECTS)} leave the "
        f"{rng.choice(OBJECTS)} {rng.choice(PLACES)}?",
        lambda: f"{cap(rng.choice(SUBJECTS))} walked {rng.choice(NUMBERS)} "
        f"{rng.choice(DISTANCES)} {rng.choice(TIMES)}.",
        lambda: f"Nobody knew that {rng.choice(SUBJECTS)} kept a {rng.choice(ADJECTIVES)} "
        f"{rng.choice(OBJECTS)} {rng.choice(PLACES)}.",
        lambda: "{} and {} met {} {}.".format(
            *(cap(s) if k == 0 else s for k, s in enumerate(rng.sample(SUBJECTS, 2))),
            rng.choice(PLACES), rng.choice(TIMES)),
        lambda: f"{cap(rng.choice(SUBJECTS))} counted {rng.choice(NUMBERS)} "
        f"{rng.choice(ITEMS)} {rng.choice(PLACES)}.",
    ]
    out: list[str] = []
    seen = set(exclude)
    while len(out) < n:
        s = templates[len(out) % len(templates)]()
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def espeak_version() -> str:
    """The ``espeak-ng --version`` line, or exit with a hint when espeak-ng is missing."""
    if shutil.which("espeak-ng") is None:
        sys.exit("espeak-ng not found; install it (apt-get install espeak-ng) to rebuild the corpus")
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.split(" Data at:")[0].strip()


def synthesize(text: str, voice: str, speed: int, pitch: int, tmp: Path) -> np.ndarray:
    """Speak ``text`` with espeak-ng and return float64 samples at 22.05 kHz."""
    wav = tmp / "utt.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text],
        check=True, capture_output=True,
    )
    x, fs = sf.read(wav, dtype="float64")
    if fs != ESPEAK_FS:
        raise RuntimeError(f"espeak-ng wrote {fs} Hz, expected {ESPEAK_FS} Hz")
    return x


def trim_silence(x: np.ndarray, fs: int, threshold_db: float = -45.0, pad_s: float = 0.02) -> np.ndarray:
    """Cut leading/trailing frames (10 ms) whose RMS is ``threshold_db`` below the loudest frame."""
    hop = int(0.01 * fs)
    n_frames = len(x) // hop
    rms = np.sqrt(np.mean(x[: n_frames * hop].reshape(n_frames, hop) ** 2, axis=1))
    active = np.flatnonzero(rms > rms.max() * 10 ** (threshold_db / 20))
    pad = int(pad_s * fs)
    start = max(active[0] * hop - pad, 0)
    stop = min((active[-1] + 1) * hop + pad, len(x))
    return x[start:stop]


def render(text: str, voice: str, speed: int, pitch: int, tmp: Path) -> tuple[np.ndarray, int]:
    """Synthesize at 16 kHz, trimmed; adjust the speed (at most 3 times) into MIN_S..MAX_S."""
    for _ in range(4):
        y = trim_silence(resample_poly(synthesize(text, voice, speed, pitch, tmp), UP, DOWN), FS)
        dur = len(y) / FS
        if MIN_S <= dur <= MAX_S:
            break
        target = MAX_S - 0.3 if dur > MAX_S else MIN_S + 0.3
        new = int(np.clip(round(speed * dur / target), *SPEED_RANGE))
        if new == speed:
            break
        speed = new
    return y, speed


README = """\
# Default speech corpus of xai-loc

{n} English utterances ({minutes:.1f} minutes), one Ogg/Vorbis file each, 16 kHz mono,
trimmed of leading/trailing silence, peak-normalized. `index.json` lists id, text, voice,
speed, pitch, n_samples, fs and file of each utterance.

How it was made: `python scripts/make_speech_corpus.py` (seed {seed}) with {version}.
The sentences are our own: {n_hand} written by hand in that script, the others composed
from its word lists. Voices are espeak-ng's own English voices ({n_voices}) with its voice
variants (`+m1`..`+m7`, `+f1`..`+f5`), speeds {smin}-{smax} words per minute and pitches
{pmin}-{pmax}. espeak-ng writes 22.05 kHz; we resample to 16 kHz with
`scipy.signal.resample_poly(x, 320, 441)` and store Vorbis at `compression_level`
{comp} (about 32 kbit/s; Vorbis keeps the 4-8 kHz band that
Opus at the same size attenuates by about 4 dB).

This is synthetic formant speech: it stands in for CMU ARCTIC (which the reference
experiment used) where no corpus can be downloaded. Load real speech with
`SpeechCorpus.cmu_arctic(path)` or `SpeechCorpus.from_folder(path)`.

Licence: the sentences and this audio are released with xai-loc under its MIT licence.
espeak-ng (GPL-3.0) is only the tool that produced the audio; its output is not covered by
the GPL.
"""


def main(argv: list[str] | None = None) -> int:
    """Build the corpus into ``--out``: every file is made in a staging folder beside it, and ``--out`` is
    replaced only once all of them are written (a failed espeak call or Ctrl-C leaves it as it was)."""
    ap = Parser(description=__doc__.split("\n")[0])
    default_out = Path(__file__).resolve().parents[1] / "xai_loc" / "acoustics" / "corpus"
    ap.add_argument("--out", type=Path, default=default_out)
    ap.add_argument("--n", type=count, default=300, help="number of utterances")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)

    out: Path = args.out
    if out.exists() and not out.is_dir():
        ap.error(f"argument --out: {str(out)!r} is a file, not a folder")
    if out.is_dir() and any(p.name not in ("index.json", "README.md") and not p.name.startswith("esp")
                            for p in out.iterdir()):
        ap.error(f"argument --out: {str(out)!r} holds files of no corpus; give an empty folder or a corpus")
    version = espeak_version()
    rng = random.Random(args.seed)
    texts = list(SENTENCES[: args.n])
    texts += compose_sentences(args.n - len(texts), rng, set(texts))
    assert len(set(texts)) == len(texts) == args.n

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-", suffix=".partial"))
    try:
        entries = []
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir)
            for i, text in enumerate(texts):
                voice = VOICES[i % len(VOICES)]
                variant = rng.choice(VARIANTS)
                full_voice = f"{voice}+{variant}" if variant else voice
                speed = rng.randint(135, 185)
                pitch = rng.randint(*PITCH_RANGE)
                y, speed = render(text, full_voice, speed, pitch, tmp)
                y = PEAK * y / np.max(np.abs(y))
                uid = f"esp{i:03d}"
                fname = f"{uid}.ogg"
                sf.write(staging / fname, y.astype(np.float32), FS, format="OGG", subtype="VORBIS",
                         compression_level=VORBIS_COMPRESSION)
                decoded = sf.info(staging / fname)
                entries.append({
                    "id": uid, "text": text, "voice": full_voice, "speed": speed, "pitch": pitch,
                    "n_samples": int(decoded.frames), "fs": FS, "file": fname,
                })
                print(f"{uid} {len(y) / FS:4.2f} s  {full_voice:22s} s={speed} p={pitch}  {text}")

        index = {
            "name": "xai-loc default speech corpus",
            "generator": f"scripts/make_speech_corpus.py, {version}",
            "seed": args.seed,
            "fs": FS,
            "format": "OGG/VORBIS",
            "utterances": entries,
        }
        (staging / "index.json").write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
        total_s = sum(e["n_samples"] for e in entries) / FS
        (staging / "README.md").write_text(README.format(
            n=len(entries), minutes=total_s / 60, seed=args.seed, version=version,
            n_hand=min(len(SENTENCES), args.n), n_voices=len(VOICES),
            smin=min(e["speed"] for e in entries), smax=max(e["speed"] for e in entries),
            pmin=min(e["pitch"] for e in entries), pmax=max(e["pitch"] for e in entries),
            comp=VORBIS_COMPRESSION,
        ), encoding="utf-8")
        os.chmod(staging, 0o777 & ~umask())  # mkdtemp makes it 0700; a package folder is readable
        for path in staging.iterdir():
            os.chmod(path, 0o666 & ~umask())
        old = out.with_name(f".{out.name}.old") if out.exists() else None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        try:
            os.replace(staging, out)  # the new corpus appears whole
        except BaseException:
            if old is not None:
                os.replace(old, out)  # the old one back where it was
            raise
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    durs = [e["n_samples"] / FS for e in entries]
    print(f"{len(entries)} utterances, {total_s:.0f} s, duration {min(durs):.2f}-{max(durs):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
