"""`generate_depth`: a depth map (PNG for an image, MP4 for a video) at the input's size.

Input keys as for generate_openpose. `depth_model`: a catalog name (source.media.depth.DEPTH_MODELS,
default Depth Anything V2 small; "tiny-depth" for tests). Maps are greyscale 0-255 (near = bright),
normalised per frame, written as RGB.
"""

from __future__ import annotations

from pydantic import Field

from source.errors import InvalidInput
from source.handler_registry import register
from source.handlers.openpose import VisualInputParams, resolve_visual_input
from source.task_context import HandlerResult, TaskContext


class DepthParams(VisualInputParams):
    depth_model: str | None = None
    batch_size: int = Field(4, ge=1, le=64)
    fps: float | None = Field(None, gt=0, le=240)


@register("generate_depth", "depth", params_model=DepthParams)
def handle_generate_depth(params: DepthParams, ctx: TaskContext) -> HandlerResult:
    from source.media.depth import canonical_depth_model, get_depth_estimator

    model_name = canonical_depth_model(params.depth_model)  # a bad name fails before any file work
    path, kind = resolve_visual_input(params, ctx)
    if kind == "image":
        from source.media.images import load_image_rgb, save_png

        frame = load_image_rgb(path)
        ctx.progress(0.05, f"loading depth model {model_name}")
        estimator = get_depth_estimator(model_name)
        ctx.progress(0.3, "estimating depth")
        out = save_png(estimator.depth_map(frame), ctx.output_path(".png", stem="depth"))
        h, w = frame.shape[:2]
        n_frames, fps = 1, None
    else:
        from source.media.video_io import VideoWriter, iter_frames, probe_video

        info = probe_video(path, count=False)
        fps = params.fps or info.fps or 16.0
        total = info.frames or 0
        ctx.progress(0.0, f"loading depth model {model_name}")
        estimator = get_depth_estimator(model_name)
        out = ctx.output_path(".mp4", stem="depth")
        w = h = 0
        with VideoWriter(out, fps=fps) as writer:
            for i, dmap in enumerate(estimator.depth_maps(iter_frames(path), batch_size=params.batch_size)):
                h, w = dmap.shape[:2]
                writer.write(dmap)
                if total:
                    ctx.progress(min(0.99, (i + 1) / total), f"frame {i + 1} of {total}")
                else:
                    ctx.check_cancelled()
        n_frames = writer.count
        if n_frames == 0:
            out.unlink(missing_ok=True)
            raise InvalidInput(f"{path.name} has no decodable frames")
    ctx.progress(1.0, "done")
    result = {"kind": kind, "width": w, "height": h, "frames": n_frames, "depth_model": model_name,
              "depth_model_source": estimator.source}
    if fps:
        result["fps"] = fps
    return HandlerResult(output_location=ctx.location_for(out), result=result)
