"""A long-lived piper helper process: `python -m source.speech.piper_process`.

piper-tts is GPL, so the worker never imports it: this module runs in its own process and is the only code
that does. It keeps each voice loaded (loading a voice costs more than speaking a sentence) and answers
one JSON request per stdin line with one JSON line on stdout:

    {"text": "...", "model": "/path/voice.onnx", "length_scale": 1.0, "wav": "/path/out.wav"}
    -> {"ok": true} | {"ok": false, "error": "..."}
"""

from __future__ import annotations

import json
import sys
import wave


def main() -> int:
    from piper import PiperVoice
    from piper.config import SynthesisConfig

    voices: dict[str, PiperVoice] = {}
    out = sys.stdout
    sys.stdout = sys.stderr  # anything the library prints must not corrupt the reply channel
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            model = str(req["model"])
            voice = voices.get(model)
            if voice is None:
                voice = voices[model] = PiperVoice.load(model)
            with wave.open(str(req["wav"]), "wb") as wf:
                voice.synthesize_wav(str(req["text"]), wf,
                                     syn_config=SynthesisConfig(length_scale=float(req.get("length_scale", 1.0))))
            reply = {"ok": True}
        except Exception as exc:  # noqa: BLE001 - every failure is reported to the caller, who decides
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
