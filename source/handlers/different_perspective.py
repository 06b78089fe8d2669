"""`different_perspective_orchestrator` (alias `different_perspective`) and its final step `dp_final_gen`.

Re-poses the person (or re-shapes the scene) of `input_image_path` to match a generated image of `prompt`:

    input_pose|input_depth : generate_openpose|generate_depth of the input image
    t2i                    : single_image of the prompt (model `t2i_model`)
    target_pose|target_depth (after t2i): pose/depth of the generated image
    final (after 1 and 3)  : dp_final_gen -- a guide video moving from the input's pose to the target's
                             (interpolated skeletons) or from depth map to depth map (RIFE), then a VACE
                             generation with that guide, the input image as reference and (by default) the
                             input image kept as frame 0; the last frame is the result PNG. It completes the
                             orchestrator.

With `target_image_path` (a picture of the wanted perspective, e.g. a reference pose photo) the t2i step is
skipped and the target pose/depth is taken from that picture.

Child ids are deterministic (child_task_id(orchestrator id, key)), so re-running the orchestrator never
duplicates them. Everything the orchestrator can check (models, images, depth model, resolution, frames) is
checked before any child is inserted, so a bad request fails alone instead of after running some children.
Resolution and frame count follow source.video_geometry (nearest multiples of 16; 4*floor(n/4)+1 frames,
16 -> 17); the adjustments are handed to the final step, whose result (the orchestrator's) records them.
The seed's key spellings are translated by source.seed_payloads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from source.errors import InvalidInput
from source.handler_registry import register
from source.local_files import LOCAL_FILE
from source.task_context import ChildTask, HandlerResult, TaskContext, child_task_id
from source.video_geometry import format_resolution, model_resolution, resolution_for_aspect, wan_frame_count

DEFAULT_AREA = 832 * 480
MIN_FRAMES = 5  # the guide moves from one pose to another: a start, an end and frames between


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")

    input_image_path: Annotated[str, LOCAL_FILE]
    prompt: str = " "
    negative_prompt: str = ""
    perspective_type: Literal["pose", "depth"] = "pose"
    model_name: str = "vace_14B"
    resolution: str | None = None
    seed: int = -1
    use_causvid_lora: bool = False
    use_lighti2x_lora: bool = False
    steps: int | None = Field(None, ge=1, le=200)
    fps_helpers: float = Field(16, gt=0, le=240)
    use_mask_for_first_frame: bool = True
    depth_model: str | None = None

    @field_validator("perspective_type", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v


class DifferentPerspectiveParams(_Common):
    t2i_model: str = "t2v"
    # A picture of the wanted perspective (e.g. a reference pose photo): used instead of generating one.
    target_image_path: Annotated[str | None, LOCAL_FILE] = None
    output_video_frames: int = Field(16, ge=MIN_FRAMES, le=1025)


def _keys(perspective: str) -> tuple[str, str]:
    return (f"input_{perspective}", f"target_{perspective}")


@register("different_perspective_orchestrator", "different_perspective", params_model=DifferentPerspectiveParams)
def handle_different_perspective(params: DifferentPerspectiveParams, ctx: TaskContext) -> HandlerResult:
    from source.media.images import load_image_rgb
    from source.travel_plan import check_model

    # models first: an unknown one used to spawn three children (and run two) before failing
    check_model(params.model_name, what="model_name", kinds=("vace",),
                hint="the final step generates from a pose/depth guide video, which needs a VACE model")
    if not params.target_image_path:
        check_model(params.t2i_model, what="t2i_model", kinds=("t2v", "t2v22", "vace", "ti2v"),
                    hint="the target image is generated from the prompt alone (or give target_image_path)")
    if params.perspective_type == "depth":
        from source.media.depth import canonical_depth_model

        canonical_depth_model(params.depth_model)  # an unknown depth model fails now, not three tasks later
    # Validate the input now (readable image, sane size); children resolve it again themselves.
    image = load_image_rgb(ctx.resolve_input(params.input_image_path, kind="input image"))
    if params.target_image_path:
        load_image_rgb(ctx.resolve_input(params.target_image_path, kind="target image"))
    h, w = image.shape[:2]
    adjustments: dict[str, Any] = {}
    size = (model_resolution(params.resolution, adjustments) if params.resolution
            else resolution_for_aspect(w, h, DEFAULT_AREA))
    resolution = format_resolution(size)
    frames = wan_frame_count(params.output_video_frames, adjustments, what="output_video_frames",
                             minimum=MIN_FRAMES)
    kind = params.perspective_type
    guide_type = "generate_openpose" if kind == "pose" else "generate_depth"
    input_key, target_key = _keys(kind)

    def guide_params(**inp) -> dict:
        p = dict(inp)
        if kind == "depth" and params.depth_model:
            p["depth_model"] = params.depth_model
        return p

    speed = {"use_causvid_lora": params.use_causvid_lora, "use_lighti2x_lora": params.use_lighti2x_lora}
    if params.steps is not None:
        speed["steps"] = params.steps
    t2i = {"prompt": params.prompt, "negative_prompt": params.negative_prompt, "model": params.t2i_model,
           "resolution": resolution, "seed": params.seed, **speed}
    final = {
        "input_image_path": params.input_image_path, "prompt": params.prompt,
        "negative_prompt": params.negative_prompt, "perspective_type": kind, "model_name": params.model_name,
        "resolution": resolution, "seed": params.seed + 1 if params.seed >= 0 else -1,
        "video_frames": frames, "fps_helpers": params.fps_helpers,
        "use_mask_for_first_frame": params.use_mask_for_first_frame,
        "input_guide_task_id": child_task_id(ctx.task_id, input_key),
        "target_guide_task_id": child_task_id(ctx.task_id, target_key),
        "target_image_task_id": None if params.target_image_path else child_task_id(ctx.task_id, "t2i"),
        "orchestrator_task_id": ctx.task_id, "adjustments": adjustments, **speed,
    }
    if params.depth_model:
        final["depth_model"] = params.depth_model
    if params.target_image_path:
        target_children = [ChildTask(target_key, guide_type, guide_params(input_image_path=params.target_image_path))]
    else:
        target_children = [
            ChildTask("t2i", "single_image", t2i),
            ChildTask(target_key, guide_type, guide_params(input_image_task_id=child_task_id(ctx.task_id, "t2i")),
                      depends_on=["t2i"]),
        ]
    children = [
        ChildTask(input_key, guide_type, guide_params(input_image_path=params.input_image_path)),
        *target_children,
        ChildTask("final", "dp_final_gen", final, depends_on=[input_key, target_key], completes_parent=True),
    ]
    return HandlerResult(children=children, result={
        "perspective_type": kind, "resolution": resolution, "video_frames": frames, "adjustments": adjustments,
        "children": {c.key: child_task_id(ctx.task_id, c.key) for c in children},
    })


# ----------------------------------------------------------------------------- final step
class DpFinalGenParams(_Common):
    input_guide_task_id: str
    target_guide_task_id: str
    target_image_task_id: str | None = None
    video_frames: int = Field(17, ge=MIN_FRAMES, le=1025)
    orchestrator_task_id: str | None = None
    adjustments: dict[str, Any] = Field(default_factory=dict)  # the orchestrator's, recorded in the result


def _fit(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Cover and centre-crop, the way the generation bridge fits images (no stretching)."""
    from PIL import Image, ImageOps

    if frame.shape[1] == width and frame.shape[0] == height:
        return frame
    return np.array(ImageOps.fit(Image.fromarray(frame), (width, height), method=Image.LANCZOS,
                                   centering=(0.5, 0.5)), dtype=np.uint8)


def _pose_of(path: Path, what: str):
    from source.handlers.openpose import load_keypoints_for_output
    from source.media.pose import Pose

    data = load_keypoints_for_output(path)
    frames = data.get("frames") or []
    pose = Pose.from_openpose_json(frames[0]) if frames else None
    if pose is None:
        raise InvalidInput(f"no person in the {what} pose ({path.name}); a pose guide needs a person in both images")
    return pose


def pose_guide_frames(input_pose_out: Path, target_pose_out: Path, n: int, width: int, height: int):
    from source.media.pose_render import interpolated_skeleton_frames

    a = _pose_of(input_pose_out, "input image's")
    b = _pose_of(target_pose_out, "generated image's")
    return interpolated_skeleton_frames(a, b, n, width=width, height=height)


def depth_guide_frames(input_depth_out: Path, target_depth_out: Path, n: int, width: int, height: int):
    from source.media.images import load_image_rgb
    from source.media.rife import get_rife

    a = _fit(load_image_rgb(input_depth_out), width, height)
    b = _fit(load_image_rgb(target_depth_out), width, height)
    return get_rife().transition(a, b, n)


@register("dp_final_gen", params_model=DpFinalGenParams)
def handle_dp_final_gen(params: DpFinalGenParams, ctx: TaskContext) -> HandlerResult:
    from source.generation.bridge import GenerationParams, generate_single_video
    from source.media.images import load_image_rgb, save_png
    from source.media.video_io import VideoWriter, iter_frames

    adjustments: dict[str, Any] = dict(params.adjustments)
    width, height = model_resolution(params.resolution or "832x480", adjustments)
    n = wan_frame_count(params.video_frames, adjustments, what="video_frames", minimum=MIN_FRAMES)
    input_path = ctx.resolve_input(params.input_image_path, kind="input image")
    image = _fit(load_image_rgb(input_path), width, height)
    a_out = ctx.output_of(params.input_guide_task_id)
    b_out = ctx.output_of(params.target_guide_task_id)
    ctx.progress(0.02, f"building the {params.perspective_type} guide ({n} frames)")
    if params.perspective_type == "pose":
        guide = pose_guide_frames(a_out, b_out, n, width, height)
    else:
        guide = depth_guide_frames(a_out, b_out, n, width, height)

    guide_path = ctx.output_path(".mp4", stem="dp_guide")
    with VideoWriter(guide_path, fps=params.fps_helpers) as writer:
        for i, frame in enumerate(guide):
            if i == 0 and params.use_mask_for_first_frame:
                frame = image  # frame 0 is the real input image, kept by the mask
            writer.write(frame)
            ctx.check_cancelled()
    gen_params: dict[str, Any] = {
        "model": params.model_name, "prompt": params.prompt, "negative_prompt": params.negative_prompt,
        "resolution": f"{width}x{height}", "video_length": n, "seed": params.seed,
        "video_guide": str(guide_path), "image_refs": [str(input_path)], "fps": params.fps_helpers,
        "use_causvid_lora": params.use_causvid_lora, "use_lighti2x_lora": params.use_lighti2x_lora,
    }
    if params.steps is not None:
        gen_params["num_inference_steps"] = params.steps
    if params.use_mask_for_first_frame:
        mask_path = ctx.work_dir / "dp_mask.mp4"
        black = np.zeros((height, width, 3), np.uint8)
        white = np.full((height, width, 3), 255, np.uint8)
        with VideoWriter(mask_path, fps=params.fps_helpers) as writer:
            for i in range(n):
                writer.write(black if i == 0 else white)  # black = keep, white = generate
        gen_params["video_mask"] = str(mask_path)

    gen = generate_single_video(ctx, GenerationParams.parse(gen_params),
                                output_path=ctx.output_path(".mp4", stem="dp_video"))
    last = None
    for last in iter_frames(gen.video_path):  # noqa: B007 - keeps the last frame
        pass
    if last is None:
        raise RuntimeError(f"the generated video {gen.video_path.name} has no frames")
    last = last[: gen.height, : gen.width]
    out = save_png(last, ctx.output_path(".png", stem="final_posed_image"))
    ctx.progress(1.0, "done")
    return HandlerResult(output_location=ctx.location_for(out), result={
        "perspective_type": params.perspective_type, "width": int(last.shape[1]), "height": int(last.shape[0]),
        "video_location": ctx.location_for(gen.video_path), "guide_location": ctx.location_for(guide_path),
        "video_frames": gen.frames, "seed": gen.seed, "model": params.model_name, "cache_hit": gen.cache_hit,
        "adjustments": {**adjustments, **gen.adjustments},
    })
