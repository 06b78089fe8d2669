"""`inpaint_frames`: regenerate frames [start_frame, end_frame) of one video so they flow from the frames
before into the frames after.

Params: `video` (path, URL or {"task_id": ...}; the seed's `video_path` / `input_video_task_id` too),
`start_frame`, `end_frame` (exclusive), `prompt`, `context_frames` (default 8, on both sides) and the
generation options of travel (model: VACE, steps, guidance, LoRAs, speed presets, seed, resolution).

One VACE generation covers the range plus its context (kept by the mask), 4n+1 frames long: the context,
never the range, is adjusted to make it so (`source/editing_plan.py`, recorded in the result). Only the
range's frames of the generation are used. Everything outside the range is bit-identical to the input
after decoding: the input's decoded frames go to a lossless encoder unchanged (libx264 qp=0 in MP4 for
8-bit YUV sources, FFV1 in Matroska otherwise; `source/media/editing_media.py`), and the audio packets
are copied.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import AliasChoices, Field, model_validator

from source.editing_plan import DEFAULT_CONTEXT, plan_inpaint
from source.errors import InvalidInput
from source.handler_registry import register
from source.handlers.join_clips import (
    FrameCountMismatch,
    GenerationOptions,
    check_vace_model,
    count_clip_frames,
    generate_bridge,
    normalise_clip,
    output_geometry,
    resolve_clip,
    short_hash,
)
from source.task_context import HandlerResult, TaskContext


class InpaintFramesParams(GenerationOptions):
    video: Any = Field(None, validation_alias=AliasChoices("video", "video_path", "input_video"))
    input_video_task_id: str | None = None
    start_frame: int = Field(validation_alias=AliasChoices("start_frame", "inpaint_start_frame"))
    end_frame: int = Field(validation_alias=AliasChoices("end_frame", "inpaint_end_frame"))
    prompt: str = ""
    context_frames: int = Field(DEFAULT_CONTEXT, validation_alias=AliasChoices("context_frames",
                                                                                "context_frame_count"))

    @model_validator(mode="after")
    def _one_video(self) -> InpaintFramesParams:
        if (self.video is None) == (self.input_video_task_id is None):
            raise ValueError("give exactly one of video (path, URL or {\"task_id\": ...}) and input_video_task_id")
        return self


@register("inpaint_frames", params_model=InpaintFramesParams)
def handle_inpaint_frames(p: InpaintFramesParams, ctx: TaskContext) -> HandlerResult:
    from source.media.editing_media import (
        lossless_container,
        read_range,
        splice_lossless,
    )
    from source.media.video_io import probe_video

    ref = normalise_clip({"task_id": p.input_video_task_id} if p.input_video_task_id else p.video, "video")
    check_vace_model(p.model)
    path = resolve_clip(ctx, ref, "video")
    total = count_clip_frames(path, "video")
    adjustments: dict[str, Any] = {}
    window = plan_inpaint(total, p.start_frame, p.end_frame, context=p.context_frames, adjustments=adjustments)
    info = probe_video(path, count=False)
    out_size, gen_size, fps = output_geometry(p, (info.width, info.height), info.fps or 16.0, adjustments)
    if (info.width, info.height) != out_size:
        raise InvalidInput(f"inpaint_frames keeps the video's own size {info.width}x{info.height}; drop "
                           f"resolution (the generation runs at {gen_size[0]}x{gen_size[1]} and is resized)")
    label = f"frames [{p.start_frame}, {p.end_frame})"
    ctx.progress(0.0, f"{label}: reading context")
    before = read_range(path, window.start - window.before, window.start, gen_size)
    after = read_range(path, window.end, window.end + window.after, gen_size)
    ctx.progress(0.05, f"{label}: generating")
    work = ctx.work_dir
    generated = generate_bridge(ctx, before=before, gap=window.end - window.start, after=after, model=p.model,
                                prompt=p.prompt, negative_prompt=p.negative_prompt, size=gen_size, fps=fps,
                                seed=p.seed, generation=p.generation(), output_path=work / "generated.mp4",
                                label=label)
    new = read_range(generated.video_path, window.before, window.before + (window.end - window.start))
    _codec, suffix = lossless_container(path)
    salt = p.seed if p.seed >= 0 else uuid.uuid4().hex
    final = ctx.output_path(suffix, stem=f"inpainted-{short_hash(p.model_dump(), str(path), salt)}")
    ctx.progress(0.9, f"{label}: splicing")
    spliced = splice_lossless(path, p.start_frame, p.end_frame, new, final)
    got = count_clip_frames(final, "the inpainted video")
    if got != total or spliced["frames"] != total:
        final.unlink(missing_ok=True)
        raise FrameCountMismatch(f"the inpainted video has {got} frames, the input has {total}")
    ctx.progress(1.0, f"{label}: done")
    return HandlerResult(output_location=ctx.location_for(final), result={
        "frames": total, "start_frame": p.start_frame, "end_frame": p.end_frame,
        "context_before": window.before, "context_after": window.after, "generation_frames": window.frames,
        "width": info.width, "height": info.height, "fps": fps, "seed": generated.seed,
        "lossless": spliced["lossless"], "adjustments": adjustments})
