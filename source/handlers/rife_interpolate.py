"""`rife_interpolate_images`: a video of RIFE frames morphing from one image to another.

Params (the seed's names): `input_image_path1`, `input_image_path2` (paths or URLs, resolved through the
context, so they must lie in an allowed input root or be downloadable), `frames` (2..MAX_FRAMES: every
frame is predicted directly at its own t, nothing is repeated), `resolution` ("WxH", 16..4096 per side;
default the first image's size; odd sides are floored to even for H.264), `fps` (default 16, at most 240).
`output_path` and `output_dir` are accepted for compatibility and ignored: the file goes to the task's own
output path.

Caps, so that no row can hold a worker until its time limit: at most MAX_FRAMES (1000) frames, and at
most MAX_TOTAL_PIXELS (frames x width x height: 1000 frames of 1920x1080) in all. Error messages quote
at most a short excerpt of an offending value.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from source.errors import InvalidInput
from source.handler_registry import register
from source.local_files import LOCAL_FILE
from source.media.images import load_image_rgb
from source.media.video_io import VideoWriter
from source.task_context import HandlerResult, TaskContext
from source.video_geometry import format_resolution, parse_resolution

MAX_FRAMES = 1000
MAX_TOTAL_PIXELS = 1000 * 1920 * 1080
_MAX_REF_CHARS = 4096  # a path or URL longer than this is not one


class RifeInterpolateParams(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input_image_path1: Annotated[str, LOCAL_FILE] = Field(min_length=1, max_length=_MAX_REF_CHARS)
    input_image_path2: Annotated[str, LOCAL_FILE] = Field(min_length=1, max_length=_MAX_REF_CHARS)
    frames: int = Field(ge=2, le=MAX_FRAMES)
    resolution: str | None = None
    fps: float = Field(16.0, gt=0, le=240)
    output_path: str | None = None  # accepted, ignored (the seed required it and ignored it too)
    output_dir: str | None = None   # accepted, ignored

    @field_validator("resolution")
    @classmethod
    def _check_resolution(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        # the one parser (source.video_geometry); no rounding to 16: RIFE is not a Wan model
        try:
            return format_resolution(parse_resolution(v))
        except InvalidInput as exc:
            raise ValueError(str(exc)) from None


@register("rife_interpolate_images", params_model=RifeInterpolateParams)
def handle_rife_interpolate(params: RifeInterpolateParams, ctx: TaskContext) -> HandlerResult:
    from source.media.rife import get_rife  # torch is imported only when such a task runs

    path1 = ctx.resolve_input(params.input_image_path1, kind="input_image_path1")
    path2 = ctx.resolve_input(params.input_image_path2, kind="input_image_path2")
    if params.resolution:
        w, h = (int(v) for v in params.resolution.split("x"))
    else:
        h, w = load_image_rgb(path1).shape[:2]
    w, h = w - w % 2, h - h % 2  # H.264 (yuv420p) needs even sides
    if params.frames * w * h > MAX_TOTAL_PIXELS:
        raise InvalidInput(f"{params.frames} frames of {w}x{h} exceed the cap of {MAX_TOTAL_PIXELS} pixels in all "
                           f"(e.g. {MAX_TOTAL_PIXELS // (w * h)} frames at this size)")
    first = load_image_rgb(path1, (w, h))
    second = load_image_rgb(path2, (w, h))
    ctx.progress(0.02, "loading RIFE")
    rife = get_rife()
    n = params.frames
    out = ctx.output_path(".mp4", stem="rife")
    tmp = ctx.work_dir / "rife.mp4"
    with VideoWriter(tmp, fps=params.fps) as writer:
        for i, frame in enumerate(rife.transition(first, second, n)):
            writer.write(frame)
            ctx.progress(0.05 + 0.93 * (i + 1) / n, f"frame {i + 1}/{n}")
    if writer.count != n:  # pragma: no cover - defensive
        raise InvalidInput(f"wrote {writer.count} frames, expected {n}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.replace(out)
    ctx.progress(1.0, "done")
    return HandlerResult(output_location=ctx.location_for(out),
                         result={"frames": n, "width": w, "height": h, "fps": params.fps})
