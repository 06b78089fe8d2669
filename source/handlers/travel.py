"""Travel between images: the orchestrator, one task per segment, and the stitch.

Task types:
- `travel_orchestrator` (the seed's payload, `params.orchestrator_details`) and `travel_between_images`
  (the canonical payload): validate everything (including that every image is readable), then enqueue
  one `travel_segment` child per segment and one `travel_stitch` child that completes the orchestrator.
  The plan's adjustments (resolution, frame counts, ...) travel to the stitch, whose result (and so the
  orchestrator's) records them.
  Child ids are deterministic (`child_task_id(orchestrator id, "seg-000" ... / "stitch")`).
  - chained mode (VACE, the seed's): segment i waits for segment i-1 and continues from its last frames;
  - independent mode (first-last-frame models): every segment only needs its two anchor images, so the
    segments run in parallel on any number of workers.
- `travel_segment`: generate one segment (guide + mask for chained VACE, start + end image otherwise),
  colour-match it toward its anchors (default on), check its frame count against the plan. A last segment
  without an end image continues freely: its guide ends in grey (generated) frames, an I2V model gets its
  start image only (the planner refuses FLF2V models there), colour matching pulls toward the start alone.
- `travel_stitch`: cross-fade the segments (and the continued video first, if any) into the final video,
  optionally at a higher fps (RIFE) and upscaled; check the final frame count against the plan.

Children carry everything they need in their own params (no reading of the orchestrator row).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from source.errors import InvalidInput, TaskError
from source.handler_registry import register
from source.media.images import load_image_rgb, resize_frame, save_png
from source.task_context import ChildTask, HandlerResult, TaskContext, child_task_id
from source.travel_plan import (
    Mode,
    SeedTravelParams,
    TravelParams,
    TravelPlan,
    check_model,
    parse_resolution,
    plan_travel,
)
from source.video_geometry import format_resolution

SEGMENT_TYPE = "travel_segment"
STITCH_TYPE = "travel_stitch"
STITCH_KEY = "stitch"


class FrameCountMismatch(TaskError):
    """A produced video does not have the planned number of frames."""


# ----------------------------------------------------------------------------------------- child params
class TravelSegmentParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    orchestrator_task_id: str | None = None
    run_id: str | None = None
    segment_index: int = Field(ge=0)
    num_segments: int = Field(1, ge=1)
    mode: Mode = "chained"
    model: str
    prompt: str = ""
    negative_prompt: str = ""
    resolution: str
    frames: int = Field(ge=2)
    overlap_prev: int = Field(0, ge=0)
    seed: int = -1
    fps: float = Field(16.0, gt=0)
    start_image: str | None = None           # None: start from the last frame of continue_from_video
    end_image: str | None = None             # None: the last segment continues freely
    continue_from_video: str | None = None   # only on the first segment of a continuation
    predecessor_task_id: str | None = None   # chained: the previous segment's task
    image_refs: list[str] = Field(default_factory=list)
    generation: dict[str, Any] = Field(default_factory=dict)
    colour_match: bool = True
    guide_adjustments: dict[str, float] = Field(default_factory=dict)
    keep_intermediates: bool = False

    @model_validator(mode="before")
    @classmethod
    def _not_seed_era(cls, data: Any) -> Any:
        if isinstance(data, dict) and "full_orchestrator_payload" in data and "model" not in data:
            raise ValueError("this is a seed-era travel_segment row (it reads its predecessor from the old "
                             "queue); it cannot be resumed: submit its travel_orchestrator again")
        return data


class TravelStitchParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    orchestrator_task_id: str | None = None
    run_id: str | None = None
    segment_task_ids: list[str] = Field(min_length=1)
    continue_from_video: str | None = None
    lengths: list[int]                       # planned frames of every piece (continued video first)
    overlaps: list[int]                      # one per join
    resolution: str
    fps: float = Field(16.0, gt=0)
    sharpen: float = Field(0.0, ge=0)
    fps_multiplier: int = Field(1, ge=1, le=8)
    upscale_to: str | None = None
    expected_frames: int = Field(ge=1)       # after fps upsampling
    keep_intermediates: bool = False
    adjustments: dict[str, Any] = Field(default_factory=dict)  # the plan's changes to the request, recorded

    @model_validator(mode="before")
    @classmethod
    def _not_seed_era(cls, data: Any) -> Any:
        if isinstance(data, dict) and "full_orchestrator_payload" in data and "segment_task_ids" not in data:
            raise ValueError("this is a seed-era travel_stitch row (it searched the old queue for its "
                             "segments); it cannot be resumed: submit its travel_orchestrator again")
        return data


# ----------------------------------------------------------------------------------------- orchestrator
def _count_frames(path: Path) -> int:
    try:
        from source.media.stitch import count_frames
    except ImportError:  # pragma: no cover - stitch module missing
        from source.media.video_io import probe_video

        return probe_video(path, count=True).frames
    return count_frames(path)


def _check_inputs(plan: TravelPlan, ctx: TaskContext) -> None:
    """Every image must resolve (inside an allowed folder or a bounded download) and decode."""
    problems: list[str] = []
    refs: dict[str, str] = {}
    for i, ref in enumerate(plan.images):
        refs.setdefault(ref, f"image {i}")
    for seg in plan.segments:
        for ref in seg.image_refs:
            refs.setdefault(ref, f"reference image of segment {seg.index}")
    for ref, what in refs.items():
        try:
            load_image_rgb(ctx.resolve_input(ref, kind=what))
        except InvalidInput as exc:
            problems.append(f"{what} ({ref}): {exc}")
    if problems:
        raise InvalidInput("travel inputs are not usable: " + "; ".join(problems))


def make_plan(params: TravelParams | SeedTravelParams, ctx: TaskContext) -> TravelPlan:
    """The plan, with the continued video's real frame count and every input checked."""
    details = params.orchestrator_details if isinstance(params, SeedTravelParams) else params
    video_ref = (details.continue_from_video_resolved_path if isinstance(params, SeedTravelParams)
                 else details.continue_from_video)
    continue_frames = None
    if video_ref:
        continue_frames = _count_frames(ctx.resolve_input(video_ref, kind="video to continue"))
    plan = plan_travel(params, continue_frames=continue_frames, run_id=ctx.task_id)
    check_model(plan.model)
    _check_inputs(plan, ctx)
    return plan


def build_children(plan: TravelPlan, orchestrator_id: str) -> list[ChildTask]:
    children: list[ChildTask] = []
    n = plan.num_segments
    res = format_resolution(plan.resolution)
    for seg in plan.segments:
        predecessor = plan.segments[seg.index - 1].key if (plan.mode == "chained" and seg.index > 0) else None
        params: dict[str, Any] = {
            "orchestrator_task_id": orchestrator_id, "run_id": plan.run_id, "segment_index": seg.index,
            "num_segments": n, "mode": plan.mode, "model": plan.model, "prompt": seg.prompt,
            "negative_prompt": seg.negative_prompt, "resolution": res, "frames": seg.frames,
            "overlap_prev": seg.overlap_prev, "seed": seg.seed, "fps": plan.fps,
            "start_image": seg.start_image, "end_image": seg.end_image,
            "continue_from_video": plan.continue_from_video if (seg.index == 0 and plan.continue_from_video)
            else None,
            "predecessor_task_id": child_task_id(orchestrator_id, predecessor) if predecessor else None,
            "image_refs": list(seg.image_refs), "generation": dict(plan.generation),
            "colour_match": plan.colour_match, "keep_intermediates": plan.keep_intermediates,
        }
        if plan.mode == "chained" and plan.guide_adjustments:
            params["guide_adjustments"] = dict(plan.guide_adjustments)
        children.append(ChildTask(key=seg.key, task_type=SEGMENT_TYPE, params=params,
                                  depends_on=[predecessor] if predecessor else []))
    stitch_params = {
        "orchestrator_task_id": orchestrator_id, "run_id": plan.run_id,
        "segment_task_ids": [child_task_id(orchestrator_id, s.key) for s in plan.segments],
        "continue_from_video": plan.continue_from_video, "lengths": plan.lengths, "overlaps": plan.overlaps,
        "resolution": res, "fps": plan.fps, "sharpen": plan.sharpen, "fps_multiplier": plan.fps_multiplier,
        "upscale_to": format_resolution(plan.upscale_to) if plan.upscale_to else None,
        "expected_frames": plan.expected_output_frames, "keep_intermediates": plan.keep_intermediates,
        "adjustments": dict(plan.adjustments),
    }
    children.append(ChildTask(key=STITCH_KEY, task_type=STITCH_TYPE, params=stitch_params,
                              depends_on=[s.key for s in plan.segments], completes_parent=True))
    return children


def _orchestrate(params: TravelParams | SeedTravelParams, ctx: TaskContext) -> HandlerResult:
    plan = make_plan(params, ctx)
    ctx.log("travel_planned", mode=plan.mode, model=plan.model, segments=plan.num_segments,
            lengths=plan.lengths, overlaps=plan.overlaps, expected_frames=plan.expected_output_frames,
            adjustments=plan.adjustments, source_format=plan.source_format)
    return HandlerResult(children=build_children(plan, ctx.task_id),
                         result={"segments": plan.num_segments, "mode": plan.mode,
                                 "expected_frames": plan.expected_output_frames, "adjustments": plan.adjustments})


@register("travel_orchestrator", params_model=SeedTravelParams)
def handle_travel_orchestrator(params: SeedTravelParams, ctx: TaskContext) -> HandlerResult:
    return _orchestrate(params, ctx)


@register("travel_between_images", params_model=TravelParams)
def handle_travel_between_images(params: TravelParams, ctx: TaskContext) -> HandlerResult:
    return _orchestrate(params, ctx)


# ----------------------------------------------------------------------------------------- segment
def _short_hash(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def _last_frame(video: Path) -> np.ndarray:
    from source.media.travel_guide import last_frames

    return last_frames(video, 1)[0]


def _check_frames(what: str, got: int, planned: int) -> None:
    if got != planned:
        raise FrameCountMismatch(f"{what} has {got} frames but the plan needs {planned}; the stitch would be "
                                 f"misaligned, so the segment is not accepted")


@register(SEGMENT_TYPE, params_model=TravelSegmentParams)
def handle_travel_segment(p: TravelSegmentParams, ctx: TaskContext) -> HandlerResult:
    from source.generation.bridge import GenerationParams, generate_single_video

    size = parse_resolution(p.resolution)
    work = ctx.work_dir
    label = f"segment {p.segment_index + 1}/{p.num_segments}"

    # what this segment continues from: the previous segment's output, or the video being continued
    previous: Path | None = None
    previous_location: str | None = None
    if p.predecessor_task_id:
        previous = ctx.output_of(p.predecessor_task_id)
        previous_location = str(previous)
    elif p.continue_from_video:
        previous = ctx.resolve_input(p.continue_from_video, kind="video to continue")
        previous_location = p.continue_from_video
    if p.start_image is None and previous is None:
        raise InvalidInput("travel_segment needs start_image, or continue_from_video / predecessor_task_id")

    end_ref = load_image_rgb(ctx.resolve_input(p.end_image, kind="end image"), size) if p.end_image else None
    if p.start_image is not None:
        start_ref = load_image_rgb(ctx.resolve_input(p.start_image, kind="start image"), size)
    else:
        start_ref = resize_frame(_last_frame(previous), size)

    gen: dict[str, Any] = {k: v for k, v in p.generation.items() if v is not None}
    gen.update(model=p.model, prompt=p.prompt, negative_prompt=p.negative_prompt, resolution=p.resolution,
               video_length=p.frames, seed=p.seed, fps=p.fps)
    ctx.progress(0.0, f"{label}: preparing")
    if p.mode == "chained":
        from source.media.travel_guide import write_guide_and_mask

        overlap = p.overlap_prev if previous is not None else 0
        guide, mask = work / "guide.mp4", work / "mask.mp4"
        write_guide_and_mask(guide, mask, frames=p.frames, size=size, fps=p.fps, previous_video=previous,
                             overlap=overlap, start_image=start_ref if overlap == 0 else None, end_image=end_ref,
                             adjustments=p.guide_adjustments or None)
        gen.update(video_guide=str(guide), video_mask=str(mask))
        if p.image_refs:
            gen["image_refs"] = list(p.image_refs)
    else:
        if p.start_image is not None:
            gen["image_start"] = p.start_image
        else:
            gen["image_start"] = str(save_png(start_ref, work / "start_from_video.png"))
        if p.end_image:
            gen["image_end"] = p.end_image

    # a new name whenever the params or the input video change, so a stale file never masks a new one
    # (a random seed gives a new picture every run, so it gets a new name every run too)
    salt = p.seed if p.seed >= 0 else uuid.uuid4().hex
    stem = f"segment{p.segment_index:03d}-{_short_hash(p.model_dump(), previous_location, salt)}"
    final = ctx.output_path(".mp4", stem=stem)
    # without colour matching the generator writes the final file itself (and its sidecar JSON beside it)
    generated = generate_single_video(ctx, GenerationParams.parse(gen),
                                      output_path=work / "generated.mp4" if p.colour_match else final)
    if generated.frames != p.frames and not p.colour_match:
        final.unlink(missing_ok=True)  # never leave a wrong-length file where a segment output is expected
    _check_frames(f"the generated video of {label}", generated.frames, p.frames)

    if p.colour_match:
        ctx.progress(0.95, f"{label}: colour matching")
        from source.media.colour_match import colour_match_video

        # no end image (a freely continuing last segment): matched toward the start image throughout
        written = colour_match_video(Path(generated.video_path), final, start_ref, end_ref, p.fps)
        _check_frames(f"the colour-matched video of {label}", written, p.frames)
    elif Path(generated.video_path).resolve() != final.resolve():
        shutil.copyfile(generated.video_path, final)
    ctx.progress(1.0, f"{label}: done")
    return HandlerResult(output_location=ctx.location_for(final), result={
        "frames": p.frames, "width": generated.width, "height": generated.height, "fps": p.fps,
        "segment_index": p.segment_index, "seed": generated.seed, "cache_hit": generated.cache_hit,
        "colour_matched": p.colour_match, "keep_intermediates": p.keep_intermediates,
    })


# ----------------------------------------------------------------------------------------- stitch
@register(STITCH_TYPE, params_model=TravelStitchParams)
def handle_travel_stitch(p: TravelStitchParams, ctx: TaskContext) -> HandlerResult:
    from source.media.stitch import count_frames, stitch_videos

    pieces: list[Path] = []
    if p.continue_from_video:
        pieces.append(ctx.resolve_input(p.continue_from_video, kind="video to continue"))
    pieces += [ctx.output_of(tid) for tid in p.segment_task_ids]
    if len(p.lengths) != len(pieces) or len(p.overlaps) != len(pieces) - 1:
        raise InvalidInput(f"travel_stitch params disagree: {len(pieces)} videos, {len(p.lengths)} lengths, "
                           f"{len(p.overlaps)} overlaps (need one overlap per join)")
    # validate every artefact before any work (the seed stitched whatever it found)
    for i, (path, planned) in enumerate(zip(pieces, p.lengths)):
        got = count_frames(path)
        what = "the continued video" if (p.continue_from_video and i == 0) else \
            f"segment {i - (1 if p.continue_from_video else 0)} ({path.name})"
        _check_frames(what, got, planned)
    size = parse_resolution(p.resolution)
    upscale = parse_resolution(p.upscale_to, what="upscale_to") if p.upscale_to else None
    stem = f"travel-{_short_hash(p.model_dump(), [str(x) for x in pieces])}"
    final = ctx.output_path(".mp4", stem=stem)
    result = stitch_videos(pieces, p.overlaps, final, fps=p.fps, size=size, sharpen=p.sharpen,
                           fps_multiplier=p.fps_multiplier, upscale_to=upscale,
                           progress=lambda f, m: ctx.progress(f, m))
    _check_frames("the stitched video", result.frames, p.expected_frames)
    ctx.log("video_encoder", encoder=result.encoder)  # libx264, or h264_nvenc where a GPU encoder opened
    return HandlerResult(output_location=ctx.location_for(final), result={
        "frames": result.frames, "width": result.width, "height": result.height, "fps": result.fps,
        "segments": len(p.segment_task_ids), "keep_intermediates": p.keep_intermediates,
        "adjustments": dict(p.adjustments),
        "encoder": result.encoder,
    })
