"""`edit_video` (seed: `edit_video_orchestrator`): keep some portions of a video and regenerate others.

Params: `video` (path, URL or {"task_id": ...}), `portions_to_regenerate` [{start_frame, end_frame
(exclusive), prompt}, ...], `prompt` (for portions without their own), `context_frames` (default 8) and
the generation options of travel. Portions out of range or overlapping each other are refused at once,
naming them. The keepers (the stretches between portions) are cut as they are; each portion becomes one
`join_clips_segment` child (independent, parallel) generated with its neighbouring keepers' frames as
context, exactly as long as the portion; a `join_clips_stitch` child puts keepers and regenerated
portions together (the video's length exactly, its audio carried through) and completes the orchestrator.
The frame arithmetic is `plan_edit` in `source/editing_plan.py`.
"""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from source.editing_plan import DEFAULT_CONTEXT, plan_edit
from source.errors import InvalidInput
from source.handler_registry import register
from source.handlers.join_clips import (
    GenerationOptions,
    build_children,
    check_vace_model,
    normalise_clip,
    output_geometry,
    probe_clips,
)
from source.task_context import HandlerResult, TaskContext


class Portion(BaseModel):
    model_config = ConfigDict(extra="allow")

    start_frame: int
    end_frame: int
    prompt: str | None = None


class EditVideoParams(GenerationOptions):
    video: Any = Field(validation_alias=AliasChoices("video", "video_path", "source_video"))
    portions_to_regenerate: list[Portion] = Field(validation_alias=AliasChoices("portions_to_regenerate",
                                                                               "portions"))
    prompt: str = ""
    context_frames: int = Field(DEFAULT_CONTEXT, validation_alias=AliasChoices("context_frames",
                                                                                "context_frame_count"))


@register("edit_video", "edit_video_orchestrator", params_model=EditVideoParams)
def handle_edit_video(p: EditVideoParams, ctx: TaskContext) -> HandlerResult:
    clips = [normalise_clip(p.video, "video")]
    check_vace_model(p.model)
    clip_frames, size, fps, _ = probe_clips(ctx, clips)
    portions = [(q.start_frame, q.end_frame, q.prompt if q.prompt is not None else p.prompt)
                for q in p.portions_to_regenerate]
    try:
        plan = plan_edit(clip_frames[0], portions, context=p.context_frames, seed=p.seed)
    except InvalidInput as exc:
        raise InvalidInput(f"portions_to_regenerate: {exc}") from None
    out_size, gen_size, fps = output_geometry(p, size, fps, plan.adjustments)
    ctx.log("edit_planned", frames=clip_frames[0], portions=len(plan.bridges), adjustments=plan.adjustments)
    children = build_children(plan, clips, clip_frames, p, orchestrator_id=ctx.task_id, out_size=out_size,
                              gen_size=gen_size, fps=fps, name="edited")
    return HandlerResult(children=children, result={
        "portions": len(plan.bridges), "frames": clip_frames[0], "expected_frames": plan.expected_frames,
        "plan": plan.as_dict()})
