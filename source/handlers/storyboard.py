"""`storyboard` (orchestrator): a storyboard document (v1.2, source/compose/storyboard.py) -> one cached
image-to-video generation per clip + one `compose` render that depends on them and completes the storyboard.

- Each clip's generation is a `generate` child (the bridge: output cache by content), with the clip's motion
  prompt, source image, model (default `i2v`), seed (default: derived from project and clip id, so an
  unchanged clip is a cache hit when the storyboard is submitted again) and enough frames for its duration
  at the output fps (4k+1, the Wan constraint; the render trims the extra frames).
- A clip that already has a `sourceFile` is not generated again.
- `render: preview` runs at high priority (before queued finals) at a 720p cap with the fast preset.
- A clip whose generation fails fails only itself and the render (the DAG's failure propagation); retrying
  that clip re-runs it and then the render.
Not here yet: the live per-clip state document (`add_task.py status ID --json`), which needs the store.
"""

from __future__ import annotations

import hashlib
from typing import Any

from source.compose.storyboard import Storyboard, render_size, storyboard_timeline
from source.handler_registry import register
from source.handlers.compose import TASK_REF, check_source
from source.task_context import ChildTask, HandlerResult, InvalidInput, TaskContext, child_task_id

PREVIEW_PRIORITY_BOOST = 10


def generation_frames(duration: float, fps: float) -> int:
    """At least duration*fps frames, rounded up to the 4k+1 counts Wan generates."""
    need = max(1, int(round(duration * fps)))
    return 4 * -(-(need - 1) // 4) + 1


def default_seed(project_id: str, clip_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{project_id}/{clip_id}".encode()).digest()[:4], "big")


def clip_key(index: int) -> str:
    return f"clip-{index:03d}"


@register("storyboard", params_model=Storyboard)
def handle_storyboard(doc: Storyboard, ctx: TaskContext) -> HandlerResult:
    ids = [c.clipId for c in doc.timeline]
    if len(set(ids)) != len(ids):
        raise InvalidInput("storyboard clipIds must be unique")
    external: list[str] = []
    for i, a in enumerate(doc.audioLayers):
        dep = check_source(a.file, f"audioLayers[{i}].file", ctx)
        if dep:
            external.append(dep)
    w, h = render_size(doc)
    fps = doc.outputSettings.fps
    priority = ctx.priority + (PREVIEW_PRIORITY_BOOST if doc.render == "preview" else 0)
    children: list[ChildTask] = []
    sources: dict[str, str] = {}
    plan: list[dict[str, Any]] = []
    for i, clip in enumerate(doc.timeline):
        if clip.sourceFile:
            dep = check_source(clip.sourceFile, f"timeline[{i}].sourceFile", ctx)
            if dep:
                external.append(dep)
            plan.append({"clipId": clip.clipId, "generated": False})
            continue
        key = clip_key(i)
        seed = clip.seed if clip.seed is not None else default_seed(doc.projectId, clip.clipId)
        children.append(ChildTask(key=key, task_type="generate", priority=priority, params={
            "model": clip.model or "i2v", "prompt": clip.motionPrompt, "image_start": clip.sourceImage,
            "resolution": f"{w}x{h}", "video_length": generation_frames(clip.duration, fps), "seed": seed,
            "fps": fps, "storyboard_project": doc.projectId, "clip_id": clip.clipId}))
        job = child_task_id(ctx.task_id, key)
        sources[clip.clipId] = TASK_REF + job
        plan.append({"clipId": clip.clipId, "generated": True, "jobId": job, "seed": seed})
    try:
        timeline = storyboard_timeline(doc, sources, still_fallback=False)
    except ValueError as exc:  # e.g. a transition longer than the clips it joins
        raise InvalidInput(f"storyboard cannot be rendered: {exc}") from None
    children.append(ChildTask(key="render", task_type="compose", priority=priority, completes_parent=True,
                              params={"timeline": timeline.model_dump(), "orchestrator_task_id": ctx.task_id},
                              depends_on=[c.key for c in children] + sorted(set(external))))
    ctx.log("storyboard_planned", project=doc.projectId, clips=len(doc.timeline), render=doc.render,
            size=f"{w}x{h}", frames=timeline.total_frames)
    return HandlerResult(children=children, result={"projectId": doc.projectId, "render": doc.render,
                                                    "size": f"{w}x{h}", "frames": timeline.total_frames,
                                                    "clips": plan})
