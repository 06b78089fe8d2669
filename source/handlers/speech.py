"""`speech` (child task): text -> WAV with the chosen engine and voice, plus a JSON sidecar beside it
(`<same name>.json`: duration, speech start/end, word and sentence timings, engine, voice).

Outputs are cached by content hash (engine, its version, voice, rate, language, text) in the shared output
cache, like generations: the same line spoken twice is synthesized once. The result column holds the
same record as the sidecar; a compose task reads the sidecar through ctx.output_of().
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from source.handler_registry import register
from source.speech.engines import get_engine
from source.speech.timings import timings, wav_info
from source.task_context import HandlerResult, InvalidInput, TaskContext

CACHE_VERSION = 1


class SpeechParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=5000)
    engine: str = "auto"
    voice: str | None = None
    speaking_rate: float = Field(1.0, ge=0.25, le=4.0)
    language: str = Field("en", pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})?$")
    use_cache: bool = True
    orchestrator_task_id: str | None = None  # informational: the task that asked for it

    @field_validator("text")
    @classmethod
    def _has_words(cls, v: str) -> str:
        if not v.strip() or "\x00" in v:
            raise ValueError("text must contain something to say")
        return v.strip()


def sidecar_of(wav: Path) -> Path:
    """Where a speech WAV's timing record lives (one home for the convention)."""
    return wav.with_suffix(".json")


def read_speech(wav: Path) -> dict:
    """The timing record of a finished speech output, with a clear error when it is missing."""
    side = sidecar_of(wav)
    try:
        record = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        raise InvalidInput(f"speech output {wav.name} has no readable timing record ({side.name})") from None
    if not isinstance(record, dict) or not isinstance(record.get("duration"), (int, float)):
        raise InvalidInput(f"speech timing record {side.name} has no duration")
    return record


def _atomic_json(path: Path, record: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)


def _copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _from_cache(ctx: TaskContext, key: str, wav: Path) -> dict | None:
    from source.generation.cache import cached_file

    found = cached_file(ctx, key, "cached speech")
    if found is None:
        return None
    location, cached = found
    try:
        record = read_speech(cached)
        wav_info(cached)
        _copy(cached, wav)
    except (InvalidInput, OSError) as exc:
        ctx.log("cache_stale", key=key, location=location, error=str(exc)[:200])
        return None
    return record


@register("speech", params_model=SpeechParams)
def handle_speech(p: SpeechParams, ctx: TaskContext) -> HandlerResult:
    from source.generation.cache import keep_copy as _keep_for_cache

    t0 = time.perf_counter()
    engine = get_engine(p.engine)
    voice = engine.check_voice(p.voice)
    version = engine.version()
    key = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "engine": engine.name, "version": version,
                                     "voice": voice, "rate": round(p.speaking_rate, 4), "language": p.language,
                                     "text": p.text}, sort_keys=True).encode()).hexdigest()
    wav = ctx.output_path(".wav")
    wav.parent.mkdir(parents=True, exist_ok=True)
    record = _from_cache(ctx, key, wav) if p.use_cache else None
    if record is not None:
        record = dict(record, cache_hit=True, seconds=round(time.perf_counter() - t0, 4))
        _atomic_json(sidecar_of(wav), record)
        ctx.log("cache_hit", key=key)
        ctx.progress(1.0, "cache hit")
        return HandlerResult(output_location=ctx.location_for(wav), result=record)

    ctx.progress(0.05, f"speaking with {engine.name}")
    partial = ctx.work_dir / "speech.wav"
    partial.parent.mkdir(parents=True, exist_ok=True)
    synth = engine.synthesize(p.text, voice, p.speaking_rate, partial)
    ctx.check_cancelled()
    record = timings(p.text, partial, synth.words, p.language)
    seconds = time.perf_counter() - t0
    record.update({"text": p.text, "engine": engine.name, "engine_version": version, "voice": voice,
                   "speaking_rate": p.speaking_rate, "language": p.language, "cache_key": key, "cache_hit": False,
                   "seconds": round(seconds, 4),
                   "real_time_factor": round(record["duration"] / seconds, 2) if seconds > 0 else None})
    os.replace(partial, wav)
    _atomic_json(sidecar_of(wav), record)
    if p.use_cache:
        try:
            # the sidecar is kept under the same key, so a cache hit finds both
            _keep_for_cache(ctx, key, sidecar_of(wav))
            ctx.cache_put(key, ctx.location_for(_keep_for_cache(ctx, key, wav)))
        except Exception as exc:  # noqa: BLE001 - a cache write failure must not fail finished speech
            ctx.log("cache_put_failed", key=key, error=str(exc)[:300])
    ctx.progress(1.0, "done")
    return HandlerResult(output_location=ctx.location_for(wav), result=record)
