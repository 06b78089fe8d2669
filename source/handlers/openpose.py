"""`generate_openpose`: OpenPose-style skeleton of an image (PNG) or a video (MP4), plus keypoints JSON.

Input (one of): `input_image_path`, `input_video_path`, `input_path` (image or video, by content),
`input_image_task_id` / `input_video_task_id` / `input_task_id` (another task's output).
`allow_no_person` (false): when no person is found, fail with a clear message, or (true) write a black render.
The keypoints (OpenPose JSON layout, one entry per frame) are in the result and in a `.json` file next to
the output (same name), which `dp_final_gen` reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from source.errors import InvalidInput
from source.handler_registry import register
from source.local_files import LOCAL_FILE
from source.task_context import HandlerResult, TaskContext

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v", ".gif"}


class VisualInputParams(BaseModel):
    """The input keys shared by the pose and depth handlers (the seed's names kept)."""

    model_config = ConfigDict(extra="allow")

    input_image_path: Annotated[str | None, LOCAL_FILE] = None
    input_video_path: Annotated[str | None, LOCAL_FILE] = None
    input_path: Annotated[str | None, LOCAL_FILE] = None
    input_image_task_id: str | None = None
    input_video_task_id: str | None = None
    input_task_id: str | None = None


def _kind_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    # Unknown suffix (e.g. a download without one): an image if PIL can identify it, else a video.
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):
            return "image"
    except (UnidentifiedImageError, OSError):
        return "video"


def resolve_visual_input(params: VisualInputParams, ctx: TaskContext) -> tuple[Path, str]:
    """(local path, "image" | "video") for whichever input key is set; exactly one must be."""
    given = {k: v for k, v in (("input_image_path", params.input_image_path),
                               ("input_video_path", params.input_video_path),
                               ("input_path", params.input_path),
                               ("input_image_task_id", params.input_image_task_id),
                               ("input_video_task_id", params.input_video_task_id),
                               ("input_task_id", params.input_task_id)) if v}
    if not given:
        raise InvalidInput("no input: set input_image_path, input_video_path, input_path, "
                           "input_image_task_id or input_video_task_id")
    if len(given) > 1:
        raise InvalidInput(f"more than one input given ({', '.join(given)}); set exactly one")
    key, ref = next(iter(given.items()))
    if key.endswith("_task_id"):
        path = ctx.output_of(ref)
    else:
        path = ctx.resolve_input(ref, kind=key.replace("_path", "").replace("_", " "))
    if key.startswith("input_image"):
        return path, "image"
    if key.startswith("input_video"):
        return path, "video"
    return path, _kind_of(path)


class OpenposeParams(VisualInputParams):
    allow_no_person: bool = False
    min_confidence: float = Field(0.3, ge=0.0, le=1.0)
    fps: float | None = Field(None, gt=0, le=240)


def _no_person(where: str) -> InvalidInput:
    return InvalidInput(f"no person found in {where}; a pose needs a visible person "
                        "(set allow_no_person: true to get an empty black render instead)")


@register("generate_openpose", "openpose", params_model=OpenposeParams)
def handle_generate_openpose(params: OpenposeParams, ctx: TaskContext) -> HandlerResult:
    from source.media.pose import empty_frame_json, get_pose_detector
    from source.media.pose_render import draw_openpose

    path, kind = resolve_visual_input(params, ctx)
    if kind == "image":
        from source.media.images import load_image_rgb, save_png

        frame = load_image_rgb(path)
        ctx.progress(0.1, "detecting pose")
        h, w = frame.shape[:2]
        pose = get_pose_detector(video=False).detect(frame, params.min_confidence)
        if pose is None and not params.allow_no_person:
            raise _no_person(f"the image {path.name}")
        out = save_png(draw_openpose(pose, w, h, min_confidence=params.min_confidence),
                       ctx.output_path(".png", stem="openpose"))
        frames_json = [pose.to_openpose_json() if pose else empty_frame_json(w, h)]
        people_frames = int(pose is not None)
        n_frames, fps = 1, None
    else:
        from source.media.video_io import VideoWriter, iter_frames, probe_video

        info = probe_video(path, count=False)
        fps = params.fps or info.fps or 16.0
        total = info.frames or 0
        out = ctx.output_path(".mp4", stem="openpose")
        detector = get_pose_detector(video=True)
        frames_json, people_frames = [], 0
        with VideoWriter(out, fps=fps) as writer:
            for i, (frame, pose) in enumerate(_with_poses(iter_frames(path), detector, fps, params.min_confidence)):
                h, w = frame.shape[:2]
                writer.write(draw_openpose(pose, w, h, min_confidence=params.min_confidence))
                frames_json.append(pose.to_openpose_json() if pose else empty_frame_json(w, h))
                people_frames += int(pose is not None)
                if total:
                    ctx.progress(min(0.99, (i + 1) / total), f"frame {i + 1} of {total}")
                elif i % 8 == 0:
                    ctx.check_cancelled()
        n_frames = writer.count
        if n_frames == 0:
            out.unlink(missing_ok=True)
            raise InvalidInput(f"{path.name} has no decodable frames")
        if people_frames == 0 and not params.allow_no_person:
            out.unlink(missing_ok=True)
            raise _no_person(f"any of the {n_frames} frames of {path.name}")
        w, h = frames_json[0]["canvas_width"], frames_json[0]["canvas_height"]

    keypoints = {"format": "openpose-body-18", "keypoint_names": _names(), "frames": frames_json}
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(keypoints))
    ctx.progress(1.0, "done")
    result = {
        "kind": kind, "width": w, "height": h, "frames": n_frames, "frames_with_person": people_frames,
        "keypoints_location": ctx.location_for(json_path), "keypoints": keypoints,
    }
    if fps:
        result["fps"] = fps
    return HandlerResult(output_location=ctx.location_for(out), result=result)


def _with_poses(frames, detector, fps, min_confidence):
    """Pairs (frame, pose) while streaming (the detector consumes the frames one by one)."""
    current: list = []

    def tap():
        for f in frames:
            current.append(f)
            yield f

    for pose in detector.detect_video(tap(), fps=fps, min_confidence=min_confidence):
        yield current.pop(), pose


def _names() -> list[str]:
    from source.media.pose import OPENPOSE_KEYPOINTS

    return list(OPENPOSE_KEYPOINTS)


def load_keypoints_for_output(output_path: Path) -> dict:
    """The keypoints JSON a generate_openpose task wrote beside its output."""
    json_path = Path(output_path).with_suffix(".json")
    if not json_path.is_file():
        raise InvalidInput(f"no pose keypoints beside {Path(output_path).name} (expected {json_path.name})")
    try:
        return json.loads(json_path.read_text())
    except ValueError as exc:
        raise InvalidInput(f"pose keypoints {json_path.name} are not valid JSON: {exc}") from None
