"""`extract_frame`: one frame of a video as a PNG at the video's own resolution.

Params: `input_video_task_id` (another task's output) or `input_video_path` (path/URL), `frame_index`
(default 0; negative counts from the end, -1 = last). Frames are decoded one at a time; for a negative
index the frame count is probed first, so the video is never held in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict

from source.errors import InvalidInput
from source.handler_registry import register
from source.local_files import LOCAL_FILE
from source.task_context import HandlerResult, TaskContext


class ExtractFrameParams(BaseModel):
    model_config = ConfigDict(extra="allow")

    input_video_task_id: str | None = None
    input_video_path: Annotated[str | None, LOCAL_FILE] = None
    input_path: Annotated[str | None, LOCAL_FILE] = None
    frame_index: int = 0


def count_frames(path: Path) -> int:
    """The exact frame count (packets are demuxed and decoded, one at a time)."""
    from source.media.video_io import probe_video

    return probe_video(path, count=True).frames


def read_frame(path: Path, index: int):
    """(frame, resolved index, total or None). Negative indexes probe the count first."""
    from source.media.video_io import iter_frames

    total = None
    if index < 0:
        total = count_frames(path)
        if -index > total:
            raise InvalidInput(f"frame_index {index} is out of range: {path.name} has {total} frames "
                               f"(valid: {-total}..{total - 1})")
        index = total + index
    seen = 0
    for frame in iter_frames(path):
        if seen == index:
            return frame, index, total
        seen += 1
    n = total if total is not None else seen
    raise InvalidInput(f"frame_index {index} is out of range: {path.name} has {n} frames"
                       + (f" (valid: {-n}..{n - 1})" if n else ""))


@register("extract_frame", params_model=ExtractFrameParams)
def handle_extract_frame(params: ExtractFrameParams, ctx: TaskContext) -> HandlerResult:
    from source.media.images import save_png

    given = [k for k in ("input_video_task_id", "input_video_path", "input_path") if getattr(params, k)]
    if not given:
        raise InvalidInput("no input: set input_video_task_id or input_video_path")
    if len(given) > 1:
        raise InvalidInput(f"more than one input given ({', '.join(given)}); set exactly one")
    if params.input_video_task_id:
        path = ctx.output_of(params.input_video_task_id)
    else:
        path = ctx.resolve_input(params.input_video_path or params.input_path, kind="input video")
    frame, index, total = read_frame(path, params.frame_index)
    out = save_png(frame, ctx.output_path(".png", stem=f"frame_{index}"))
    ctx.progress(1.0, "done")
    result = {"frame_index": index, "requested_index": params.frame_index,
              "width": int(frame.shape[1]), "height": int(frame.shape[0])}
    if total is not None:
        result["frames"] = total
    return HandlerResult(output_location=ctx.location_for(out), result=result)
