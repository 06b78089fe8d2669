"""`compose` (child task): render a declarative timeline (source/compose/timeline.py) in one pass to an MP4
(+ AAC when there is audio) and a PNG poster; the result and a JSON sidecar beside the video record the
render (frames, duration, encoder, adjustments, caption timings).

Params carry either a ready `timeline`, or a `narrated` layout (source/compose/narrated.py) that becomes a
timeline here, once its speech tasks' durations and word timings can be read from their outputs.
Source references are paths/URLs (resolved as untrusted input) or `task:<id>` (another task's output).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from source.compose.narrated import NarratedLayout, build_timeline
from source.compose.render import render, write_sidecar
from source.compose.timeline import Timeline
from source.handler_registry import register
from source.task_context import HandlerResult, InvalidInput, TaskContext

TASK_REF = "task:"


class ComposeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeline: Timeline | None = None
    narrated: NarratedLayout | None = None
    orchestrator_task_id: str | None = None

    @model_validator(mode="after")
    def _one(self) -> ComposeParams:
        if (self.timeline is None) == (self.narrated is None):
            raise ValueError("give exactly one of `timeline` or `narrated`")
        return self


def resolver(ctx: TaskContext):
    """ref -> local path: `task:<id>` is that task's output, anything else untrusted input."""
    def resolve(ref: str, what: str) -> Path:
        if ref.startswith(TASK_REF):
            return ctx.output_of(ref[len(TASK_REF):].strip())
        return ctx.resolve_input(ref, kind=what)
    return resolve


def _narrated_timeline(layout: NarratedLayout, ctx: TaskContext) -> tuple[Timeline, dict]:
    from source.handlers.speech import read_speech

    speech: dict[str, tuple[str, dict]] = {}
    for part in layout.parts:
        for cap in part.captions:
            if cap.speech_task_id not in speech:
                wav = ctx.output_of(cap.speech_task_id)
                speech[cap.speech_task_id] = (TASK_REF + cap.speech_task_id, read_speech(wav))
    return build_timeline(layout, speech)


@register("compose", params_model=ComposeParams)
def handle_compose(p: ComposeParams, ctx: TaskContext) -> HandlerResult:
    report: dict = {}
    if p.narrated is not None:
        timeline, report = _narrated_timeline(p.narrated, ctx)
    else:
        timeline = p.timeline
    assert timeline is not None
    video = ctx.output_path(".mp4")
    poster = ctx.output_path(".png", stem="poster")
    video.parent.mkdir(parents=True, exist_ok=True)
    ctx.progress(0.0, f"rendering {timeline.total_frames} frames")
    result = render(timeline, output=video, poster=poster, work=ctx.work_dir / "compose", resolve=resolver(ctx),
                    progress=lambda f: ctx.progress(f, "rendering"), log=ctx.log)
    record = result.to_json()
    record.update({"video": ctx.location_for(video), "poster": ctx.location_for(poster), **report})
    write_sidecar(video.with_suffix(".json"), record)
    if result.adjustments:
        ctx.log("compose_adjusted", adjustments=result.adjustments)
    ctx.progress(1.0, "done")
    return HandlerResult(output_location=ctx.location_for(video), result=record)


def check_source(ref: str, what: str, ctx: TaskContext) -> str | None:
    """Fail early (in an orchestrator) on an unusable source; returns a task id to depend on for `task:` refs."""
    if ref.startswith(TASK_REF):
        tid = ref[len(TASK_REF):].strip()
        if not tid:
            raise InvalidInput(f"{what}: empty task reference")
        return tid
    ctx.resolve_input(ref, kind=what)
    return None
