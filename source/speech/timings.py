"""When each word and sentence of a synthesized WAV is spoken.

In order of preference: the engine's own timings; forced alignment of the known text with `pocketsphinx`
(its bundled US English model, so English only); else sentences spread over the speech by character count
(`method: "sentences"`). Captions use `speech_start`/`speech_end` (first/last word) to show exactly while
something is being said.
"""

from __future__ import annotations

import re
import subprocess
import threading
import wave
from pathlib import Path

from source.task_context import InvalidInput
from source.warm import Warm

_WORD_RE = re.compile(r"[A-Za-z']+")
_SENTENCE_RE = re.compile(r"[^.!?]+[.!?]*")


def wav_info(path: Path) -> tuple[float, int]:
    """(duration seconds, sample rate) of a PCM WAV."""
    try:
        with wave.open(str(path), "rb") as w:
            rate = w.getframerate()
            return w.getnframes() / float(rate), rate
    except (wave.Error, EOFError, OSError) as exc:
        raise InvalidInput(f"{path.name} is not a readable WAV ({exc})") from None


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_RE.findall(text) if s.strip()] or [text.strip()]


def _pcm16k(path: Path) -> bytes:
    from source.compose.render import ffmpeg_exe

    return subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-ac", "1", "-ar", "16000", "-f", "s16le",
                           "-"], capture_output=True, check=True, timeout=120).stdout


_decoders: Warm = Warm(lambda _: None)  # made by _decoder (it needs pocketsphinx's Decoder class)
_ALIGN_LOCK = threading.Lock()  # one alignment at a time: the decoder holds per-utterance state


def _decoder(factory):
    """One decoder per process: loading the model and dictionary costs more than aligning a sentence."""
    # wide beams: with the default ones alignment of synthetic voices often finds no path at all
    return _decoders.get(make=lambda: factory(samprate=16000, bestpath=False, loglevel="FATAL", beam=1e-100,
                                              wbeam=1e-80, pbeam=1e-100))


def align_words(text: str, wav: Path, language: str = "en") -> list[dict] | None:
    """Word timings by forced alignment, or None when it cannot be done (not English, pocketsphinx missing,
    a word outside its dictionary, or the alignment fails)."""
    if not language.lower().startswith("en"):
        return None
    try:
        from pocketsphinx import Decoder
    except ImportError:
        return None
    words = [w.lower().strip("'") for w in _WORD_RE.findall(text)]
    words = [w for w in words if w]
    if not words:
        return None
    with _ALIGN_LOCK:
        return _align(Decoder, words, wav)


def _align(Decoder, words: list[str], wav: Path) -> list[dict] | None:
    try:
        decoder = _decoder(Decoder)
        if any(decoder.lookup_word(w) is None for w in words):
            return None  # an unknown word would make the whole alignment fail
        decoder.set_align_text(" ".join(words))
        decoder.start_utt()
        decoder.process_raw(_pcm16k(wav), full_utt=True)
        decoder.end_utt()
        frate = float(decoder.config["frate"])
        segments = decoder.seg()
        if segments is None:
            return None
        out = [{"word": seg.word, "start": round(seg.start_frame / frate, 3),
                "end": round((seg.end_frame + 1) / frate, 3)}
               for seg in segments if seg.word not in ("<s>", "</s>", "<sil>") and not seg.word.startswith("[")]
    except Exception:  # noqa: BLE001 - alignment is a refinement; sentence timings remain
        return None
    return out if len(out) == len(words) else None


def speech_span(wav: Path, threshold: float = 0.02) -> tuple[float, float]:
    """(first, last) second where the WAV is louder than `threshold` of full scale (trims silence)."""
    import numpy as np

    with wave.open(str(wav), "rb") as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        data = w.readframes(w.getnframes())
    if width != 2 or not data:
        return 0.0, len(data) / max(1, rate * width * channels)
    samples = np.frombuffer(data, dtype="<i2").reshape(-1, channels).max(axis=1)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold * 32767)
    if loud.size == 0:
        return 0.0, 0.0
    return loud[0] / rate, (loud[-1] + 1) / rate


def timings(text: str, wav: Path, engine_words: list[dict] | None, language: str) -> dict:
    """The timing record stored beside the WAV."""
    duration, rate = wav_info(wav)
    words, method = engine_words, "engine"
    if not words:
        words, method = align_words(text, wav, language), "alignment"
    start, end = speech_span(wav)
    if words:
        start, end = min(start, words[0]["start"]), max(end, words[-1]["end"])
        end = min(end, duration)
    else:
        method = "sentences"
    # sentences: from the words where known, else spread over the voiced span by character count
    parts = sentences(text)
    sent = []
    if words:
        i = 0
        for s in parts:
            n = len([w for w in _WORD_RE.findall(s) if w.strip("'")])
            chunk = words[i:i + n] if n else []
            if chunk:
                sent.append({"text": s, "start": chunk[0]["start"], "end": chunk[-1]["end"]})
            i += n
    if not sent:
        total_chars = sum(len(s) for s in parts) or 1
        pos = start
        for s in parts:
            length = (end - start) * len(s) / total_chars
            sent.append({"text": s, "start": round(pos, 3), "end": round(pos + length, 3)})
            pos += length
    return {"duration": round(duration, 4), "sample_rate": rate, "speech_start": round(start, 3),
            "speech_end": round(end, 3), "timing_method": method, "words": words or [], "sentences": sent}
