"""generate_single_video(): one video from a prompt (+ images / control video), through a warm engine.

Read top to bottom, as diffusers' own pipelines are:
  1. resolve the request (source.generation.request: size, frames, presets, mode checks, seed; no I/O)
  2. load the inputs (source.generation.inputs: resolve, hash and decode files; LoRAs)
  3. look up the output cache (source.generation.cache)
  4. render with per-step progress (source.generation.engines: diffusers, or the Wan2GP adapter); a
     cancel request stops it before the next step and nothing is decoded or written
  5. encode H.264 at the requested fps and write the JSON sidecar (provenance: params, effective
     settings, adjustments, input hashes, model revision, library versions, timings)
  6. fill the cache
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from source.files import sha256_file
from source.generation import cache
from source.generation.engines import Rendered, get_engine
from source.generation.inputs import Inputs, load_inputs
from source.generation.model_catalog import load_catalog
from source.generation.request import GenerationParams, GenerationRequest, LoraParam, resolve_request
from source.settings import settings
from source.task_context import TaskContext

__all__ = ["generate_single_video", "GenerationParams", "GenerationResult", "LoraParam"]


@dataclass
class GenerationResult:
    video_path: Path
    sidecar_path: Path
    frames: int
    width: int
    height: int
    fps: float
    seed: int
    cache_hit: bool
    adjustments: dict = field(default_factory=dict)


def generate_single_video(ctx: TaskContext, params: GenerationParams | dict, *,
                          output_path: Path | None = None) -> GenerationResult:
    clock = _Clock()
    # 1. resolve the request
    request = resolve_request(GenerationParams.parse(params), load_catalog(), default_engine=settings().engine)
    engine = get_engine(request.engine)
    # 2. load the inputs
    inputs = load_inputs(ctx, request, decode=engine.decodes_inputs)
    clock.timings["inputs_s"] = inputs.seconds
    # 3. look up the cache
    output_path = Path(output_path or ctx.output_path(".mp4", stem="video"))
    revision = engine.revision(request.spec)
    key = cache.cache_key(request, inputs, revision)
    record = _provenance(ctx, request, inputs, engine.name, revision, key)
    clock.lap()
    hit = cache.lookup(ctx, key, output_path) if request.cacheable else None
    if hit is not None:
        clock.lap("cache_lookup_s")
        ctx.log("cache_hit", key=key, source=hit.location, seconds=round(clock.total(), 4))
        output = {"frames": hit.frames, "width": hit.width, "height": hit.height, "fps": request.fps}
        sidecar = _write_sidecar(output_path, record, clock, cache_hit=True, cached_from=hit.location, output=output)
        ctx.progress(1.0, "cache hit")
        return _result(request, output_path, sidecar, output, cache_hit=True)
    # 4. render
    ctx.progress(0.0, f"loading {request.spec.name}")
    loaded = engine.load(request.spec, ctx.log)
    clock.timings["load_s"] = loaded.seconds
    record["model"]["revision"] = loaded.revision
    ctx.check_cancelled()

    def on_step(k: int, n: int) -> None:
        ctx.progress(0.05 + 0.85 * k / max(n, 1), f"step {k} of {n}")

    on_step(0, request.steps)
    rendered = engine.render(request, inputs, on_step=on_step, is_cancelled=lambda: ctx.cancel_requested,
                             work_dir=lambda: ctx.work_dir, output_path=output_path)
    clock.timings.update(rendered.timings)
    record["loras"] += rendered.extra_loras
    ctx.check_cancelled()
    # 5. encode + sidecar
    output = _encode_or_probe(ctx, rendered, output_path, request.fps, clock)
    sidecar = _write_sidecar(output_path, record, clock, cache_hit=False, runtime=rendered.runtime, output=output)
    # 6. fill the cache
    if request.cacheable:
        cache.fill(ctx, key, output_path)
    ctx.progress(1.0, "done")
    return _result(request, output_path, sidecar, output, cache_hit=False)


class _Clock:
    """Step timings for the sidecar (seconds)."""

    def __init__(self) -> None:
        self.start = self.mark = time.perf_counter()
        self.timings: dict[str, float] = {}

    def lap(self, name: str | None = None) -> None:
        now = time.perf_counter()
        if name:
            self.timings[name] = now - self.mark
        self.mark = now

    def total(self) -> float:
        return time.perf_counter() - self.start


def _provenance(ctx: TaskContext, request: GenerationRequest, inputs: Inputs, engine: str, revision: str | None,
                key: str) -> dict[str, Any]:
    spec = request.spec
    return {
        "params": request.params.model_dump(mode="json"), "effective": request.effective(), "seed": request.seed,
        "adjustments": request.adjustments, "inputs": inputs.hashes,
        "loras": [{"ref": r.ref, "sha256": r.sha256, "multiplier": r.multiplier, "target": r.target}
                  for r in inputs.loras],
        "model": {"name": spec.name, "source": spec.source, "repo": spec.repo, "path": spec.path,
                  "revision": revision, "kind": spec.kind},
        "engine": engine, "cache_key": key, "task_id": ctx.task_id,
    }


def _encode_or_probe(ctx: TaskContext, rendered: Rendered, output_path: Path, fps: float,
                     clock: _Clock) -> dict[str, Any]:
    """Encode an engine's frames (or probe the video it wrote): the output's shape for the sidecar."""
    if rendered.frames is not None:
        ctx.progress(0.92, "encoding")
        clock.lap()
        _encode(rendered.frames, output_path, fps)
        clock.lap("encode_s")
        frames, height, width = (int(n) for n in rendered.frames.shape[:3])
    else:
        from source.media.video_io import probe_video

        info = probe_video(output_path)
        frames, width, height = info.frames, info.width, info.height
    return {"frames": frames, "width": width, "height": height, "fps": fps, "sha256": sha256_file(output_path)}


def _encode(frames: np.ndarray, path: Path, fps: float) -> None:
    from source.media.video_io import VideoWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    with VideoWriter(tmp, fps=fps) as writer:
        u8 = (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        for frame in u8:
            writer.write(frame)
    os.replace(tmp, path)


def _write_sidecar(output_path: Path, record: dict, clock: _Clock, **extra: Any) -> Path:
    """`<video>.json` beside the video, written atomically."""
    clock.timings["total_s"] = clock.total()
    data = dict(record, timings={k: round(v, 4) for k, v in clock.timings.items()}, versions=_versions(), **extra)
    path = output_path.with_suffix(".json")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
    return path


def _result(request: GenerationRequest, video: Path, sidecar: Path, output: dict, *,
            cache_hit: bool) -> GenerationResult:
    return GenerationResult(video, sidecar, output["frames"], output["width"], output["height"], request.fps,
                            request.seed, cache_hit, request.adjustments)


_versions_memo: dict | None = None


def _versions() -> dict:
    global _versions_memo
    if _versions_memo is None:
        from source.generation.engine import library_versions

        _versions_memo = library_versions()
    return _versions_memo
