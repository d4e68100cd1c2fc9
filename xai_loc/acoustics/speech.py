"""Speech corpora: the shipped espeak-ng corpus, any folder of audio files, CMU ARCTIC.

A :class:`SpeechCorpus` is a list of utterance ids plus a loader. ``load`` returns one
utterance as float32 samples at the corpus rate ``fs``, first channel only, peak-normalized
to ``max |x| = 1`` (the reference experiment peak-normalizes its CMU ARCTIC utterances;
Comanducci et al., EUSIPCO 2024). Corpora are registered by name in :data:`CORPORA`::

    corpus = load_corpus("shipped")             # 300 synthetic utterances, in the package
    corpus = load_corpus("folder", "my/wavs")   # every .wav/.flac/.ogg below a folder
    corpus = load_corpus("cmu_arctic", "data")  # CMU ARCTIC via pyroomacoustics
    x = corpus.load(0)                          # or corpus.load("esp000")

Files are read lazily: a folder is checked (exists, holds audio) when the corpus is built,
each file (readable and whole, finite, not silent, a rate that can be resampled) when it is loaded.
"""
from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from xai_loc.checks import check_fs, is_integer, is_real
from xai_loc.errors import InputError

#: File suffixes (lower case) that :meth:`SpeechCorpus.from_folder` picks up.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
#: Largest up or down factor of the reduced resampling ratio that we accept.
MAX_RESAMPLE_FACTOR = 1000
#: Folder of the shipped corpus (audio files plus ``index.json``).
SHIPPED_DIR = Path(__file__).resolve().parent / "corpus"
#: Every byte with its bits in reverse order (Ogg's CRC through zlib's reflected one).
_BITS_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


class RawAudio(NamedTuple):
    """What a loader returns: samples (``(n,)`` or ``(n, channels)``), their rate, a name.

    ``source`` names the utterance in error messages (typically its file path).
    """

    samples: np.ndarray
    fs: float
    source: str


Loader = Callable[[str], RawAudio]


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def resample_factors(fs_in: float, fs_out: int, source: str = "audio") -> tuple[int, int]:
    """Reduced ``(up, down)`` with ``fs_out / fs_in = up / down``.

    Raises
    ------
    InputError
        If ``fs_in`` is not positive and finite, or ``up`` or ``down`` exceeds
        :data:`MAX_RESAMPLE_FACTOR` (polyphase filtering would be slow and huge).
    """
    if not (is_real(fs_in) and fs_in > 0):
        raise InputError(
            f"{source} has sample rate {fs_in!r} Hz, which cannot be resampled; rates must be positive")
    ratio = Fraction(int(fs_out)) / Fraction(float(fs_in))
    up, down = ratio.numerator, ratio.denominator
    if up > MAX_RESAMPLE_FACTOR or down > MAX_RESAMPLE_FACTOR:
        raise InputError(
            f"{source} has sample rate {fs_in:g} Hz, which cannot be resampled to {fs_out} Hz: "
            f"the reduced ratio {up}/{down} has a factor above {MAX_RESAMPLE_FACTOR}; "
            f"convert the file to a common rate (e.g. 16000, 22050, 44100, 48000 Hz)")
    return up, down


def resample(x: np.ndarray, fs_in: float, fs_out: int, source: str = "audio") -> np.ndarray:
    """Resample the last axis of ``x`` from ``fs_in`` to ``fs_out`` (polyphase, float64).

    Uses ``scipy.signal.resample_poly`` with the reduced rational ratio; a no-op when the
    rates agree. See :func:`resample_factors` for the rates that are refused.
    """
    up, down = resample_factors(fs_in, fs_out, source)
    x = np.asarray(x, dtype=np.float64)
    if up == down:
        return x
    from scipy.signal import resample_poly

    return resample_poly(x, up, down, axis=-1)


def _wav_frames(path: Path) -> tuple[int, int] | None:
    """Sample frames that a RIFF/WAVE file's header declares and that its data chunk holds.

    None for other files, for the sizes of a stream written without seeking back (0 or ``0xFFFFFFFF``) and for
    headers too damaged to tell (soundfile then says what is wrong).
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:] != b"WAVE":
            return None
        order, size, block = "<" if head[:4] == b"RIFF" else ">", path.stat().st_size, 0
        while len(chunk := f.read(8)) == 8:
            name, n = chunk[:4], struct.unpack(order + "I", chunk[4:])[0]
            start = f.tell()
            if name == b"fmt " and len(fmt := f.read(14)) == 14:
                block = struct.unpack(order + "H", fmt[12:])[0]  # nBlockAlign: bytes per sample frame
            elif name == b"data":
                if block == 0 or n in (0, 0xFFFFFFFF):
                    return None
                return n // block, min(n, size - start) // block
            f.seek(start + n + n % 2)  # chunks are padded to an even size
    return None


def _ogg_crc(page: bytes) -> int:
    """Ogg's page checksum (CRC-32, polynomial 0x04C11DB7, not reflected, initial value 0; RFC 3533) of ``page``
    with its checksum field zeroed, through zlib's reflected CRC-32 of the bit-reversed bytes."""
    crc = zlib.crc32(page.translate(_BITS_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{crc:032b}"[::-1], 2)


def _ogg_damage(path: Path) -> str:
    """Why an Ogg file is not one whole logical stream ('' if it is): every page from the first byte on in place
    (capture pattern, checksum, each stream's page numbers without a gap) up to the end-of-stream page of every
    stream begun (anything after is ignored, unless it begins another stream: a chained file, of which libsndfile
    reads the first). libsndfile decodes a cut file, or one with a damaged page, as a shorter one without a word
    (RFC 3533 pages; our own scan: no library checks them)."""
    data = path.read_bytes()
    pos, open_streams, pages, begun = 0, {}, 0, False
    while pos < len(data):
        if data[pos:pos + 4] != b"OggS" or pos + 27 > len(data):
            break
        n_lacing = data[pos + 26]
        end = pos + 27 + n_lacing + sum(data[pos + 27 : pos + 27 + n_lacing])
        if end > len(data) or pos + 27 + n_lacing > len(data):
            break
        page = bytearray(data[pos:end])
        crc, page[22:26] = struct.unpack("<I", page[22:26])[0], bytes(4)
        if _ogg_crc(bytes(page)) != crc:
            return f"the Ogg page at byte {pos} fails its checksum"
        flags, (serial, number) = page[5], struct.unpack("<II", page[14:22])
        if flags & 0x02:  # beginning of a stream
            if begun and not open_streams:
                return "it chains a second Ogg stream after the first, which is read alone"
            open_streams[serial], begun = number, True
        elif serial not in open_streams or number != open_streams[serial] + 1:
            return f"the Ogg page at byte {pos} does not follow its stream's previous page"
        open_streams[serial] = number
        if flags & 0x04:  # end of a stream
            del open_streams[serial]
        pages, pos = pages + 1, end
        if begun and not open_streams and data[pos:pos + 4] != b"OggS":
            return ""  # every stream ended; trailing bytes (a tag, padding) are not audio
    if begun and not open_streams:
        return ""
    return f"its Ogg pages end at byte {pos} of {len(data)} before the end of the stream" if pages else \
        "it holds no Ogg page at its start"


def read_sound(path: str | Path) -> tuple[np.ndarray, int]:
    """Samples ``(n, channels)`` (float64) and rate in Hz of a sound file (anything soundfile reads).

    Raises
    ------
    InputError
        If the file cannot be read, or is cut or damaged where libsndfile would read it as a shorter file without a
        word: a WAV file whose header declares more sample frames than it holds, an Ogg file that is not one whole
        logical stream (:func:`_ogg_damage`).
    """
    import soundfile as sf

    path = Path(path)
    try:
        frames = _wav_frames(path)
        with sf.SoundFile(str(path)) as f:
            data = f.read(dtype="float64", always_2d=True)
            fs, ogg = f.samplerate, f.format == "OGG"
        damage = _ogg_damage(path) if ogg else ""
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError) as err:
        raise InputError(f"cannot read sound file {path}: {_one_line(err)}; give a valid wav, flac or ogg file"
                         ) from None
    if frames is not None and frames[1] < frames[0]:
        raise InputError(f"{path} is truncated: its header declares {frames[0]} frames, the file holds {frames[1]}")
    if damage:
        raise InputError(f"{path} is truncated or damaged: {damage}")
    return data, fs


class _SoundFileLoader:
    """Reads ``paths[uid]`` with :func:`read_sound` (picklable, unlike a closure)."""

    def __init__(self, paths: Mapping[str, Path]) -> None:
        self.paths = dict(paths)

    def __call__(self, uid: str) -> RawAudio:
        path = self.paths[uid]
        return RawAudio(*read_sound(path), str(path))


class _ArrayLoader:
    """Serves utterances held in memory: ``items[uid] = (samples, fs, source)``."""

    def __init__(self, items: Mapping[str, tuple[np.ndarray, float, str]]) -> None:
        self.items = dict(items)

    def __call__(self, uid: str) -> RawAudio:
        return RawAudio(*self.items[uid])


def _prepare(raw: RawAudio | tuple, fs: int) -> np.ndarray:
    """Validate raw loader output; return the first channel at ``fs``, peak 1, float32."""
    samples, fs_in, source = raw
    x = np.asarray(samples)
    if x.ndim == 2:
        x = x[:, 0]
    if x.ndim != 1:
        raise InputError(
            f"{source} has samples of shape {np.shape(samples)}; use (n,) or (n, channels) audio")
    if x.size == 0:
        raise InputError(f"{source} has no samples; use a non-empty audio file")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise InputError(f"{source} has samples of dtype {x.dtype}; use real-valued audio")
    x = x.astype(np.float64, copy=False)
    if not np.all(np.isfinite(x)):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise InputError(f"{source} contains {bad} NaN or infinite samples; audio must be finite")
    if not np.any(x):
        raise InputError(f"{source} is all zeros (silent); use audio with a non-zero signal")
    y = resample(x, fs_in, fs, source)
    y = y / np.max(np.abs(y))
    return y.astype(np.float32)


class SpeechCorpus:
    """Utterance ids, a loader and a target rate; loads peak-normalized mono speech.

    Build one with :meth:`shipped`, :meth:`from_folder` or :meth:`cmu_arctic`, by name with
    :func:`load_corpus`, or directly from your own ids and loader.

    Parameters
    ----------
    ids
        Utterance ids, unique, in corpus order.
    loader
        ``loader(uid) -> RawAudio(samples, fs, source)``: samples ``(n,)`` or
        ``(n, channels)`` (first channel is used) at rate ``fs``; ``source`` names the
        utterance in error messages. Should be picklable to use the corpus in worker
        processes.
    fs
        Rate of the audio that :meth:`load` returns, in Hz.
    texts
        Transcripts by id, where known.
    name
        Short name shown in ``repr``.
    fingerprint
        What identifies the audio itself where the name does not (a folder's files by relative path
        and content); dataset stores record it instead of the name.
    cache_size
        How many decoded utterances to keep in memory (least recently used are dropped);
        ``None`` keeps all, ``0`` none.

    Examples
    --------
    >>> corpus = SpeechCorpus.shipped()
    >>> x = corpus.load("esp000")   # float32, 16 kHz, max |x| == 1
    """

    def __init__(
        self,
        ids: Sequence[str],
        loader: Loader,
        fs: int = 16000,
        texts: Mapping[str, str] | None = None,
        name: str = "custom",
        cache_size: int | None = 0,
        fingerprint: str | None = None,
    ) -> None:
        self._ids = tuple(str(i) for i in ids)
        self._index = {uid: k for k, uid in enumerate(self._ids)}
        if len(self._index) != len(self._ids):
            dup = next(uid for k, uid in enumerate(self._ids) if self._index[uid] != k)
            raise InputError(f"utterance id {dup!r} appears more than once; ids must be unique")
        self._loader = loader
        self.fs = check_fs(fs)
        self._texts = dict(texts or {})
        self.name, self.fingerprint = name, fingerprint
        if cache_size is not None and (isinstance(cache_size, bool) or int(cache_size) != cache_size
                                       or cache_size < 0):
            raise InputError(f"cache_size={cache_size!r} is not allowed; use None (all), 0 (off) or a positive int")
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    # -- constructors -----------------------------------------------------------------------

    @classmethod
    def shipped(cls, fs: int = 16000, cache_size: int | None = None) -> SpeechCorpus:
        """The corpus in the package: 300 distinct English sentences by espeak-ng, 16 kHz.

        Synthetic formant speech, several voices, speeds and pitches; see
        ``xai_loc/acoustics/corpus/README.md`` and ``scripts/make_speech_corpus.py``.
        Decoded utterances are cached (about 60 MB at 16 kHz when all are loaded).
        """
        fs = check_fs(fs)
        index_file = SHIPPED_DIR / "index.json"
        if not index_file.is_file():
            raise InputError(
                f"shipped speech corpus index {index_file} is missing; reinstall xai-loc with its package data")
        index = json.loads(index_file.read_text(encoding="utf-8"))
        entries = index["utterances"]
        corpus_fs = int(index["fs"])
        resample_factors(corpus_fs, fs, "the shipped corpus")  # refuse a bad fs now
        paths = {e["id"]: SHIPPED_DIR / e["file"] for e in entries}
        texts = {e["id"]: e["text"] for e in entries}
        return cls(list(paths), _SoundFileLoader(paths), fs=fs, texts=texts, name="shipped",
                   cache_size=cache_size)

    @classmethod
    def from_folder(cls, path: str | Path, fs: int = 16000, cache_size: int | None = 0) -> SpeechCorpus:
        """Every ``.wav``/``.flac``/``.ogg`` file below ``path`` (recursive, sorted).

        Ids are the paths relative to ``path`` (``"spk1/a01.wav"``). Files at other rates are
        resampled to ``fs``; multichannel files contribute their first channel.

        Raises
        ------
        InputError
            If ``path`` is not a folder or holds no audio files (now), or a file is
            unreadable, non-finite, silent or at a rate that cannot be resampled (on load).
        """
        fs = check_fs(fs)
        root = Path(path).expanduser()
        if not root.exists():
            raise InputError(f"speech folder {str(root)!r} does not exist; give a folder of .wav/.flac/.ogg files")
        if not root.is_dir():
            raise InputError(f"speech folder {str(root)!r} is not a folder; give a folder of .wav/.flac/.ogg files")
        files = sorted(
            (p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()),
            key=lambda p: p.relative_to(root).as_posix(),
        )
        if not files:
            raise InputError(
                f"speech folder {str(root)!r} holds no audio files; allowed suffixes: {', '.join(AUDIO_SUFFIXES)}")
        paths = {p.relative_to(root).as_posix(): p for p in files}
        # the files' names and bytes, not the folder's path or the files' times, identify the audio: an edited
        # file changes it; the same folder named by another path, or copied to another machine, does not
        # (hashing reads the corpus once per command: about a second per GB, next to minutes of simulation)
        digest = hashlib.sha256()
        for key, p in paths.items():
            with open(p, "rb") as f:
                digest.update(json.dumps([key, hashlib.file_digest(f, "sha256").hexdigest()]).encode())
        fingerprint = "folder:" + digest.hexdigest()[:16]
        return cls(list(paths), _SoundFileLoader(paths), fs=fs, name=f"folder:{root}", cache_size=cache_size,
                   fingerprint=fingerprint)

    @classmethod
    def cmu_arctic(
        cls,
        path: str | Path,
        fs: int = 16000,
        speakers: str | Sequence[str] | None = None,
        cache_size: int | None = 0,
    ) -> SpeechCorpus:
        """CMU ARCTIC from ``path`` (holding ``cmu_us_<speaker>_arctic`` folders), no download.

        Uses ``pyroomacoustics.datasets.CMUArcticCorpus``, which reads every wav file of
        the chosen speakers when it is built (about 130 MB of int16 per speaker). Ids are
        ``"<speaker>_<tag>"`` (``"bdl_a0001"``); texts are the prompts.

        Parameters
        ----------
        speakers
            Speaker codes (``"bdl"``, ``"slt"``, ...); ``None`` takes every speaker folder
            found under ``path``.
        """
        fs = check_fs(fs)
        from pyroomacoustics.datasets.cmu_arctic import (
            CMUArcticCorpus,
            cmu_arctic_speakers,
        )

        root = Path(path).expanduser()
        if not root.is_dir():
            raise InputError(
                f"CMU ARCTIC folder {str(root)!r} does not exist; give the folder holding cmu_us_<speaker>_arctic")
        known = sorted(cmu_arctic_speakers)
        if speakers is None:
            speakers = [s for s in known if (root / f"cmu_us_{s}_arctic").is_dir()]
            if not speakers:
                raise InputError(
                    f"CMU ARCTIC folder {str(root)!r} holds no cmu_us_<speaker>_arctic folder; "
                    f"speakers: {', '.join(known)}")
        elif isinstance(speakers, str):
            speakers = [speakers]
        speakers = list(speakers)
        for s in speakers:
            if s not in cmu_arctic_speakers:
                raise InputError(f"unknown CMU ARCTIC speaker {s!r}; allowed: {', '.join(known)}")
            if not (root / f"cmu_us_{s}_arctic" / "etc" / "txt.done.data").is_file():
                raise InputError(
                    f"CMU ARCTIC speaker {s!r} not found: {root / f'cmu_us_{s}_arctic'} lacks etc/txt.done.data")
        try:
            arctic = CMUArcticCorpus(basedir=str(root), download=False, build=True, speaker=speakers)
        except (OSError, ValueError, IndexError) as err:
            raise InputError(f"cannot read CMU ARCTIC from {str(root)!r}: {_one_line(err)}") from None
        items: dict[str, tuple[np.ndarray, float, str]] = {}
        texts: dict[str, str] = {}
        for sentence in arctic.sentences:
            uid = f"{sentence.meta.speaker}_{sentence.meta.tag}"
            items[uid] = (sentence.data, sentence.fs, f"CMU ARCTIC {uid}")
            texts[uid] = sentence.meta.text
        ids = sorted(items)
        return cls(ids, _ArrayLoader(items), fs=fs, texts=texts, name=f"cmu_arctic:{','.join(speakers)}",
                   cache_size=cache_size)

    # -- access -----------------------------------------------------------------------------

    @property
    def ids(self) -> tuple[str, ...]:
        """Utterance ids in corpus order."""
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __repr__(self) -> str:
        return f"SpeechCorpus(name={self.name!r}, n={len(self)}, fs={self.fs})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()  # decoded audio is cheap to rebuild, costly to pickle
        return state

    def resolve(self, i_or_id: int | str) -> str:
        """The id of utterance ``i_or_id`` (an index, negative from the end, or an id)."""
        if isinstance(i_or_id, str):
            if i_or_id not in self._index:
                raise InputError(
                    f"utterance {i_or_id!r} is not in corpus {self.name!r} of {len(self)} utterances; "
                    f"use one of its ids (e.g. {self._ids[0]!r}) or an index")
            return i_or_id
        if is_integer(i_or_id):
            n = len(self)
            if not -n <= i_or_id < n:
                raise InputError(f"utterance index {i_or_id} is out of range; allowed: 0..{n - 1}")
            return self._ids[int(i_or_id)]
        raise InputError(f"utterance {i_or_id!r} is not allowed; use an int index or a str id")

    def text(self, i_or_id: int | str) -> str | None:
        """The transcript of an utterance, or ``None`` when the corpus has none."""
        return self._texts.get(self.resolve(i_or_id))

    def load(self, i_or_id: int | str) -> np.ndarray:
        """One utterance: float32 ``(n,)`` at :attr:`fs`, first channel, ``max |x| == 1``.

        Raises
        ------
        InputError
            If the id/index is unknown, or the audio is unreadable, has NaN/inf samples, is
            all zeros or has a rate that cannot be resampled to :attr:`fs`.
        """
        uid = self.resolve(i_or_id)
        cached = self._cache.get(uid)
        if cached is not None:
            self._cache.move_to_end(uid)
            return cached.copy()
        x = _prepare(self._loader(uid), self.fs)
        if self.cache_size is None or self.cache_size > 0:
            self._cache[uid] = x
            if self.cache_size is not None and len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return x.copy()
        return x


#: Corpus constructors by name; :func:`load_corpus` and the CLI's choices come from here.
CORPORA: dict[str, Callable[..., SpeechCorpus]] = {
    "shipped": SpeechCorpus.shipped,
    "folder": SpeechCorpus.from_folder,
    "cmu_arctic": SpeechCorpus.cmu_arctic,
}


def load_corpus(name: str = "shipped", path: str | Path | None = None, fs: int = 16000) -> SpeechCorpus:
    """Build the registered corpus ``name`` (see :data:`CORPORA`) at rate ``fs``.

    ``"shipped"`` takes no ``path``; ``"folder"`` and ``"cmu_arctic"`` need one.
    """
    if name not in CORPORA:
        raise InputError(f"unknown speech corpus {name!r}; allowed: {', '.join(CORPORA)}")
    if name == "shipped":
        if path is not None:
            raise InputError(
                f"speech corpus 'shipped' takes no path (got {str(path)!r}); use 'folder' for your own files")
        return CORPORA[name](fs=fs)
    if path is None:
        raise InputError(f"speech corpus {name!r} needs a path; give the folder that holds it")
    return CORPORA[name](path, fs=fs)
