"""Joining clips with generated bridges: the `join_clips` orchestrator, its `join_clips_segment` children
and the final `join_clips_stitch` (also used by `edit_video`).

- `join_clips` (seed: `join_clips_orchestrator`): `clips` (2+ videos: paths, URLs, or {"task_id": ...} for
  another task's output), `prompt` (one, or one per join), `context_frames` (default 8), `gap_frames`
  (default: the seed's 53 adjusted so the generation is 4n+1), `replace`, `loop`, `model` (VACE) and the
  generation options of travel (steps, guidance, flow shift, LoRAs, speed presets, seed: join j uses
  seed + j). Every clip is read and counted before anything is queued; the frame arithmetic is in
  `source/editing_plan.py`. One `join_clips_segment` child per join (independent: they run in parallel
  on any number of workers), then a stitch child that waits for all of them and completes the orchestrator.
- `join_clips_segment`: one VACE generation: context frames of the clip before (kept), `gap` new frames,
  context frames of the clip after (kept); its output is the whole generated video, checked to be exactly
  the planned length.
- `join_clips_stitch`: the final video from its planned pieces (clip bodies and the bridges' generated
  frames), checked frame by frame count against the plan, with the clips' audio carried through and
  silence under generated frames.

Children carry everything they need in their own params; their ids are deterministic
(`child_task_id(orchestrator id, "join-000" ... / "stitch")`), so `retry` and `regenerate` of one join
redo only it and the stitch.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from source.editing_plan import (
    DEFAULT_CONTEXT,
    MAX_CLIPS,
    BridgePlan,
    EditPlan,
    piece_dict,
    piece_from_dict,
    plan_join,
)
from source.errors import InvalidInput, TaskError
from source.handler_registry import register
from source.task_context import ChildTask, HandlerResult, TaskContext, child_task_id
from source.video_geometry import format_resolution, model_resolution, parse_resolution

SEGMENT_TYPE = "join_clips_segment"
STITCH_TYPE = "join_clips_stitch"
STITCH_KEY = "stitch"
DEFAULT_MODEL = "vace_14B"
DEFAULT_SEED = 12345  # travel's default seed base


class FrameCountMismatch(TaskError):
    """A produced or given video does not have the planned number of frames."""


# ----------------------------------------------------------------------------------------- clip refs
ClipRef = str | dict[str, Any]


def normalise_clip(ref: Any, what: str) -> dict[str, str]:
    """A clip reference -> {"task_id": id} or {"path": path-or-URL}. Accepts a string, or a dict with
    task_id / path / url / video / video_path (the seed's clip_list entries carry `url`)."""
    if isinstance(ref, str) and ref.strip():
        return {"path": ref.strip()}
    if isinstance(ref, dict):
        if isinstance(ref.get("task_id"), str) and ref["task_id"].strip():
            return {"task_id": ref["task_id"].strip()}
        for key in ("path", "url", "video", "video_path"):
            if isinstance(ref.get(key), str) and ref[key].strip():
                return {"path": ref[key].strip()}
    raise InvalidInput(f"{what} must be a path, a URL or {{\"task_id\": ...}}, got {str(ref)[:80]!r}")


def resolve_clip(ctx: TaskContext, ref: dict[str, str], what: str) -> Path:
    if "task_id" in ref:
        return ctx.output_of(ref["task_id"])
    return ctx.resolve_input(ref["path"], kind=what)


def count_clip_frames(path: Path, what: str) -> int:
    from source.media.stitch import count_frames

    try:
        return count_frames(path)
    except InvalidInput as exc:
        raise InvalidInput(f"{what}: {exc}") from None


def short_hash(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def check_vace_model(model: str) -> None:
    """Fail the orchestrator at once for a model that is unknown or not VACE (the Wan2GP engine knows model
    types our catalog does not, so there only the name is checked)."""
    from source.settings import settings

    if settings().engine == "wan2gp":
        if "vace" not in model.lower():
            raise InvalidInput(f"model {model!r} is not a VACE model; video editing needs one (e.g. vace_14B)")
        return
    from source.generation.model_catalog import load_catalog

    spec = load_catalog().resolve(model)  # InvalidInput naming the known models
    if spec.kind != "vace":
        raise InvalidInput(f"model {model!r} is a {spec.kind} model; video editing needs a VACE model "
                           f"(e.g. vace_14B)")


# ----------------------------------------------------------------------------------------- params
class GenerationOptions(BaseModel):
    """What joins and edits share with travel: model, seeds, resolution and sampling options."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model: str = DEFAULT_MODEL
    negative_prompt: str = ""
    resolution: str | list[int] | None = None   # default: the first clip's size
    fps: float | None = Field(None, gt=0, le=240)  # default: the first clip's fps
    seed: int = DEFAULT_SEED                   # join / portion j uses seed + j; -1: random
    steps: int | None = Field(None, ge=1, le=200, validation_alias=AliasChoices("steps", "num_inference_steps"))
    guidance_scale: float | None = Field(None, ge=0, le=50)
    flow_shift: float | None = Field(None, gt=0, le=100)
    loras: list[dict[str, Any]] | None = None
    use_causvid_lora: bool = False
    use_lighti2x_lora: bool = Field(False, validation_alias=AliasChoices("use_lighti2x_lora", "use_lightx2v_lora"))
    audio: bool = True
    context_frames: int | list[int] = Field(DEFAULT_CONTEXT, validation_alias=AliasChoices(
        "context_frames", "context_frame_count"))

    @model_validator(mode="before")
    @classmethod
    def _seed_payload(cls, data: Any) -> Any:
        """The seed's orchestrators nest their settings in `orchestrator_details`: flattened, top level wins."""
        if isinstance(data, dict) and isinstance(data.get("orchestrator_details"), dict):
            top = {k: v for k, v in data.items() if k != "orchestrator_details"}
            data = {**data["orchestrator_details"], **top}
        return data

    @field_validator("model")
    @classmethod
    def _model_nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("model must not be empty")
        return v.strip()

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int) -> int:
        if v < -1 or v >= 2 ** 62:
            raise ValueError("seed must be -1 (random) or a non-negative integer")
        return v

    def generation(self) -> dict[str, Any]:
        return {k: v for k, v in {
            "num_inference_steps": self.steps, "guidance_scale": self.guidance_scale,
            "flow_shift": self.flow_shift, "loras": self.loras, "use_causvid_lora": self.use_causvid_lora,
            "use_lighti2x_lora": self.use_lighti2x_lora,
        }.items() if v is not None}


class JoinClipsParams(GenerationOptions):
    clips: list[Any] = Field(validation_alias=AliasChoices("clips", "clip_list"))
    prompt: str | list[str] = Field("", validation_alias=AliasChoices("prompt", "prompts"))
    gap_frames: int | None | list[int | None] = Field(None, validation_alias=AliasChoices(
        "gap_frames", "gap_frame_count"))
    replace: bool = Field(False, validation_alias=AliasChoices("replace", "replace_mode"))
    loop: bool = Field(False, validation_alias=AliasChoices("loop", "loop_first_clip"))


class ContextRange(BaseModel):
    """Frames [start, end) of a clip (a path, URL or {"task_id": ...}) used as context."""

    clip: Any
    start: int = Field(ge=0)
    end: int = Field(ge=0)


class JoinSegmentParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    orchestrator_task_id: str | None = None
    index: int = Field(ge=0)
    before: ContextRange | None = None   # context frames before the seam
    after: ContextRange | None = None
    gap: int = Field(ge=1)
    model: str
    prompt: str = ""
    negative_prompt: str = ""
    resolution: str
    fps: float = Field(gt=0)
    seed: int = -1
    generation: dict[str, Any] = Field(default_factory=dict)


class JoinStitchParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    orchestrator_task_id: str | None = None
    clips: list[dict[str, str]] = Field(min_length=1)
    clip_frames: list[int]
    bridge_task_ids: list[str]
    bridge_frames: list[int]
    pieces: list[dict[str, Any]] = Field(min_length=1)
    expected_frames: int = Field(ge=1)
    resolution: str
    fps: float = Field(gt=0)
    audio: bool = True
    name: str = Field("joined", pattern=r"^[a-z]{1,20}$")  # the output file's stem


# ----------------------------------------------------------------------------------------- orchestrators
def probe_clips(ctx: TaskContext, clips: list[dict[str, str]]
                ) -> tuple[list[int], tuple[int, int], float, list[float]]:
    """Every clip's exact frame count and fps (all clips are checked before anything is queued), plus the
    first clip's size and fps."""
    from source.media.video_io import probe_video

    counts: list[int] = []
    rates: list[float] = []
    problems: list[str] = []
    first = None
    for i, ref in enumerate(clips):
        what = f"clip {i} ({ref.get('path') or 'output of task ' + ref.get('task_id', '?')})"
        try:
            path = resolve_clip(ctx, ref, what)
            counts.append(count_clip_frames(path, what))
            info = probe_video(path, count=False)
            first = first or info
            rates.append(info.fps or 16.0)
        except InvalidInput as exc:
            problems.append(str(exc) if str(exc).startswith("clip") else f"{what}: {exc}")
            counts.append(0)
            rates.append(0.0)
    if problems:
        raise InvalidInput("clips are not usable: " + "; ".join(problems))
    return counts, (first.width, first.height), first.fps or 16.0, rates


def record_fps_changes(rates: list[float], fps: float, adjustments: dict[str, Any]) -> None:
    """Clips are joined frame by frame at one fps: a clip with another rate plays faster or slower (say so)."""
    for i, r in enumerate(rates):
        if abs(r - fps) > 0.01:
            adjustments[f"fps of clip {i}"] = [round(r, 3), round(fps, 3)]


def output_geometry(opts: GenerationOptions, first_size: tuple[int, int], first_fps: float,
                    adjustments: dict[str, Any]) -> tuple[tuple[int, int], tuple[int, int], float]:
    """(output size, generation size, fps): the output keeps the first clip's size unless `resolution` is
    given; the generation renders at the model size nearest to it (multiples of 16)."""
    out_size = parse_resolution(opts.resolution) if opts.resolution is not None else first_size
    gen_size = model_resolution(out_size, adjustments, what="generation resolution")
    if opts.resolution is not None:
        out_size = gen_size
    return out_size, gen_size, float(opts.fps or first_fps)


def _range_param(r, clips: list[dict[str, str]]) -> dict[str, Any] | None:
    return None if r is None else {"clip": clips[r.clip], "start": r.start, "end": r.end}


def build_children(plan: EditPlan, clips: list[dict[str, str]], clip_frames: list[int],
                   opts: GenerationOptions, *, orchestrator_id: str, out_size: tuple[int, int],
                   gen_size: tuple[int, int], fps: float, name: str) -> list[ChildTask]:
    """One segment child per bridge and the stitch child (which completes the orchestrator)."""
    children: list[ChildTask] = []
    generation = opts.generation()
    for b in plan.bridges:
        children.append(ChildTask(key=b.key, task_type=SEGMENT_TYPE, params={
            "orchestrator_task_id": orchestrator_id, "index": b.index,
            "before": _range_param(b.before, clips), "after": _range_param(b.after, clips), "gap": b.gap,
            "model": opts.model, "prompt": b.prompt, "negative_prompt": opts.negative_prompt,
            "resolution": format_resolution(gen_size), "fps": fps, "seed": b.seed, "generation": generation,
        }))
    children.append(ChildTask(key=STITCH_KEY, task_type=STITCH_TYPE, params={
        "orchestrator_task_id": orchestrator_id, "clips": clips, "clip_frames": clip_frames,
        "bridge_task_ids": [child_task_id(orchestrator_id, b.key) for b in plan.bridges],
        "bridge_frames": [b.generation_frames for b in plan.bridges],
        "pieces": [piece_dict(p) for p in plan.pieces], "expected_frames": plan.expected_frames,
        "resolution": format_resolution(out_size), "fps": fps, "audio": opts.audio, "name": name,
    }, depends_on=[b.key for b in plan.bridges], completes_parent=True))
    return children


@register("join_clips", "join_clips_orchestrator", params_model=JoinClipsParams)
def handle_join_clips(p: JoinClipsParams, ctx: TaskContext) -> HandlerResult:
    if not 2 <= len(p.clips) <= MAX_CLIPS:
        raise InvalidInput(f"join_clips needs at least 2 clips to join (and at most {MAX_CLIPS}), got {len(p.clips)}")
    clips = [normalise_clip(c, f"clip {i}") for i, c in enumerate(p.clips)]
    check_vace_model(p.model)
    clip_frames, first_size, first_fps, rates = probe_clips(ctx, clips)
    plan = plan_join(clip_frames, context=p.context_frames, gap=p.gap_frames, replace=p.replace, loop=p.loop,
                     prompts=p.prompt, seed=p.seed)
    out_size, gen_size, fps = output_geometry(p, first_size, first_fps, plan.adjustments)
    record_fps_changes(rates, fps, plan.adjustments)
    ctx.log("join_planned", clips=len(clips), clip_frames=clip_frames, joins=len(plan.bridges),
            expected_frames=plan.expected_frames, adjustments=plan.adjustments)
    children = build_children(plan, clips, clip_frames, p, orchestrator_id=ctx.task_id, out_size=out_size,
                              gen_size=gen_size, fps=fps, name="joined")
    return HandlerResult(children=children, result={
        "joins": len(plan.bridges), "clip_frames": clip_frames, "expected_frames": plan.expected_frames,
        "replace": p.replace, "loop": p.loop, "plan": plan.as_dict()})


# ----------------------------------------------------------------------------------------- segment
def _context_frames(ctx: TaskContext, r: ContextRange | None, size: tuple[int, int], what: str):
    from source.media.editing_media import read_range

    if r is None:
        return []
    path = resolve_clip(ctx, normalise_clip(r.clip, what), what)
    return read_range(path, r.start, r.end, size)


def generate_bridge(ctx: TaskContext, *, before: list, gap: int, after: list, model: str, prompt: str,
                    negative_prompt: str, size: tuple[int, int], fps: float, seed: int,
                    generation: dict[str, Any], output_path: Path, label: str):
    """One VACE generation of len(before) + gap + len(after) frames (context kept by the mask), checked to
    be exactly that long. Shared by joins, edits and inpainting."""
    from source.generation.bridge import GenerationParams, generate_single_video
    from source.media.editing_media import write_bridge_guide

    work = ctx.work_dir
    guide, mask = work / "guide.mp4", work / "mask.mp4"
    frames = write_bridge_guide(guide, mask, before=before, gap=gap, after=after, size=size, fps=fps)
    gen: dict[str, Any] = {k: v for k, v in generation.items() if v is not None}
    gen.update(model=model, prompt=prompt, negative_prompt=negative_prompt, resolution=format_resolution(size),
               video_length=frames, seed=seed, fps=fps, video_guide=str(guide), video_mask=str(mask))
    try:
        params = GenerationParams.model_validate(gen)
    except ValidationError as exc:  # pydantic's message names the bad field
        raise InvalidInput(f"generation options of {label}: {exc}") from None
    result = generate_single_video(ctx, params, output_path=output_path)
    if result.frames != frames:
        Path(output_path).unlink(missing_ok=True)  # never leave a wrong-length file where output is expected
        raise FrameCountMismatch(f"{label} generated {result.frames} frames, the plan needs {frames} "
                                 f"({len(before)} context + {gap} new + {len(after)} context)")
    return result


@register(SEGMENT_TYPE, params_model=JoinSegmentParams)
def handle_join_segment(p: JoinSegmentParams, ctx: TaskContext) -> HandlerResult:
    size = parse_resolution(p.resolution)
    label = f"join {p.index}"
    ctx.progress(0.0, f"{label}: reading context")
    before = _context_frames(ctx, p.before, size, f"context before {label}")
    after = _context_frames(ctx, p.after, size, f"context after {label}")
    # a new name whenever the params change, so a stale file never masks a new one (a random seed gives a
    # new picture every run, so it gets a new name every run too)
    salt = p.seed if p.seed >= 0 else uuid.uuid4().hex
    final = ctx.output_path(".mp4", stem=f"bridge{p.index:03d}-{short_hash(p.model_dump(), salt)}")
    result = generate_bridge(ctx, before=before, gap=p.gap, after=after, model=p.model, prompt=p.prompt,
                             negative_prompt=p.negative_prompt, size=size, fps=p.fps, seed=p.seed,
                             generation=p.generation, output_path=final, label=label)
    ctx.progress(1.0, f"{label}: done")
    return HandlerResult(output_location=ctx.location_for(final), result={
        "frames": result.frames, "context_before": len(before), "gap": p.gap, "context_after": len(after),
        "width": result.width, "height": result.height, "fps": p.fps, "seed": result.seed,
        "cache_hit": result.cache_hit, "adjustments": result.adjustments})


# ----------------------------------------------------------------------------------------- stitch
@register(STITCH_TYPE, params_model=JoinStitchParams)
def handle_join_stitch(p: JoinStitchParams, ctx: TaskContext) -> HandlerResult:
    from source.media.editing_media import Source, assemble

    if len(p.clip_frames) != len(p.clips) or len(p.bridge_frames) != len(p.bridge_task_ids):
        raise InvalidInput(f"join_clips_stitch params disagree: {len(p.clips)} clips with {len(p.clip_frames)} "
                           f"counts, {len(p.bridge_task_ids)} bridges with {len(p.bridge_frames)} counts")
    clip_paths = [resolve_clip(ctx, normalise_clip(c, f"clip {i}"), f"clip {i}") for i, c in enumerate(p.clips)]
    bridge_paths = [ctx.output_of(t) for t in p.bridge_task_ids]
    # every input is checked against the plan before any work (a clip changed since planning, or a bridge
    # of the wrong length, would shift everything after it)
    for i, (path, planned) in enumerate(zip(clip_paths, p.clip_frames)):
        got = count_clip_frames(path, f"clip {i}")
        if got != planned:
            raise FrameCountMismatch(f"clip {i} ({path.name}) has {got} frames now but {planned} when the join "
                                     f"was planned; queue the join again")
    for j, (path, planned) in enumerate(zip(bridge_paths, p.bridge_frames)):
        got = count_clip_frames(path, f"bridge {j}")
        if got != planned:
            raise FrameCountMismatch(f"bridge {j} (task {p.bridge_task_ids[j]}) has {got} frames, the plan "
                                     f"needs {planned}")
    pieces = [piece_from_dict(d) for d in p.pieces]
    sources = []
    for piece in pieces:
        paths, counts = (clip_paths, p.clip_frames) if piece.kind == "clip" else (bridge_paths, p.bridge_frames)
        if piece.index >= len(paths) or piece.end > counts[piece.index]:
            raise InvalidInput(f"stitch piece {piece_dict(piece)} is outside its video")
        sources.append(Source(paths[piece.index], piece.start, piece.end, audio=piece.kind == "clip"))
    if sum(s.end - s.start for s in sources) != p.expected_frames:
        raise InvalidInput(f"stitch pieces add up to {sum(s.end - s.start for s in sources)} frames, the plan "
                           f"says {p.expected_frames}")
    size = parse_resolution(p.resolution)
    stem = f"{p.name}-{short_hash(p.model_dump(), [str(x) for x in clip_paths + bridge_paths])}"
    final = ctx.output_path(".mp4", stem=stem)
    if not p.audio:
        sources = [Source(s.path, s.start, s.end, audio=False) for s in sources]
    written = assemble(sources, final, fps=p.fps, size=size, progress=lambda f, m: ctx.progress(f, m))
    from source.media.stitch import count_frames

    got = count_frames(final)
    if written != p.expected_frames or got != p.expected_frames:
        final.unlink(missing_ok=True)
        raise FrameCountMismatch(f"the stitched video has {got} frames, the plan needs {p.expected_frames}")
    from source.media.editing_media import has_audio

    ctx.progress(1.0, "stitched")
    return HandlerResult(output_location=ctx.location_for(final), result={
        "frames": got, "width": size[0], "height": size[1], "fps": p.fps, "bridges": len(bridge_paths),
        "clips": len(clip_paths), "audio": has_audio(final)})


__all__ = [
    "BridgePlan",
    "GenerationOptions",
    "build_children",
    "check_vace_model",
    "generate_bridge",
    "normalise_clip",
    "output_geometry",
    "probe_clips",
    "resolve_clip",
]
