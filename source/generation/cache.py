"""The output cache: a finished video is reused when everything that changes its pixels is the same.

The key hashes the engine, model (source and exact revision), every sampling setting, the seed, the input
files' and LoRAs' content hashes. Only explicit seeds are cached (request.cacheable). Entries live in the
task store (`ctx.cache_get` / `ctx.cache_put`, shared by every worker on the database) and point at a copy
under `<files dir>/.cache/`, so they outlive the task's scratch folder. The cache is an optimisation: a
failure to read or fill it is logged, never a task failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from source.errors import InvalidInput
from source.generation.inputs import Inputs
from source.generation.request import GenerationRequest
from source.task_context import TaskContext

CACHE_KEY_VERSION = "gen-v1"


@dataclass(frozen=True)
class CacheHit:
    location: str   # where the cached video lives (a storage location)
    frames: int
    width: int
    height: int


def cache_key(request: GenerationRequest, inputs: Inputs, revision: str | None) -> str:
    spec, preset = request.spec, request.preset
    payload = {
        "v": CACHE_KEY_VERSION, "engine": request.engine, "model": spec.source, "kind": request.kind,
        "revision": revision, "prompt": request.params.prompt, "negative_prompt": request.params.negative_prompt,
        "width": request.width, "height": request.height, "frames": request.frames, "steps": request.steps,
        "guidance": request.guidance, "guidance_2": request.guidance_2, "flow_shift": request.flow_shift,
        "fixed_sigmas": request.fixed_sigmas, "seed": request.seed, "fps": request.fps,
        "preset": request.preset_name,
        "preset_lora": [preset.repo, preset.filename, preset.filename_2, preset.multiplier] if preset else None,
        "inputs": inputs.digest(),
        "loras": [[r.sha256, r.multiplier, r.target] for r in inputs.loras],
        "max_sequence_length": spec.max_sequence_length, "boundary_ratio": spec.boundary_ratio,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def cached_file(ctx: TaskContext, key: str, kind: str) -> tuple[str, Path] | None:
    """(location, local file) recorded under `key` in the output cache shared through the database; None on
    a miss, a failed lookup or an entry whose file is gone (the cache is an optimisation: never an error).
    Every cached task type (generations, speech) looks up through here."""
    try:
        location = ctx.cache_get(key)
    except Exception as exc:  # noqa: BLE001 - the cache is an optimisation
        ctx.log("cache_get_failed", key=key, error=str(exc)[:300])
        return None
    if not location:
        return None
    try:
        return location, ctx.resolve_input(location, kind=kind)
    except InvalidInput:
        ctx.log("cache_stale", key=key, location=location)
        return None


def lookup(ctx: TaskContext, key: str, output_path: Path) -> CacheHit | None:
    """Copy a cached video to `output_path` and describe it; None on a miss or a stale entry."""
    found = cached_file(ctx, key, "cached video")
    if found is None:
        return None
    location, source = found
    from source.media.video_io import probe_video

    try:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        if source.resolve() != output_path.resolve():
            tmp = output_path.with_name(f".{output_path.name}.tmp")
            shutil.copyfile(source, tmp)
            os.replace(tmp, output_path)
        info = probe_video(output_path, count=False)
        if not info.frames:
            info = probe_video(output_path)
    except (OSError, InvalidInput) as exc:
        ctx.log("cache_stale", key=key, location=location, error=str(exc)[:200])
        return None
    return CacheHit(location, info.frames, info.width, info.height)


def fill(ctx: TaskContext, key: str, output_path: Path) -> None:
    """Keep a copy of a finished video and record it under `key`."""
    try:
        ctx.cache_put(key, ctx.location_for(keep_copy(ctx, key, output_path)))
    except Exception as exc:  # noqa: BLE001 - a cache write failure must not fail a finished video
        ctx.log("cache_put_failed", key=key, error=str(exc)[:300])


def keep_copy(ctx: TaskContext, key: str, output_path: Path) -> Path:
    """The cached copy lives under `<files dir>/.cache/`, so it outlives the task's scratch folder (callers
    that post-process, like travel segments, generate into one). A hard link costs no space; across
    file systems it is copied."""
    cached = ctx.storage.files_dir / ".cache" / f"{key}{output_path.suffix}"
    if cached.exists():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    try:
        os.link(output_path, tmp)
    except OSError:
        shutil.copyfile(output_path, tmp)
    os.replace(tmp, cached)
    return cached
