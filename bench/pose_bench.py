"""Pose benchmark on this machine's CPU; prints one JSON object.

    .venv/bin/python bench/pose_bench.py [--frames 48] [--width 854] [--height 480]

- pose_fps: MediaPipe PoseLandmarker (full model, VIDEO mode, warm) on a 480p video made of a slow pan
  across a real photo of a person (skimage's astronaut, scaled up): frames per second including decode.
- image_pose_ms: one still in IMAGE mode (warm), median.
- render_fps: OpenPose-style skeleton rendering at 480p (no detection).
- handler_fps: the generate_openpose handler end to end on the same video (decode, detect, render, H.264
  encode, keypoints JSON).
- interpolate_render_fps: pose interpolation + rendering (the different_perspective guide), frames per second.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
_pose_model = REPO.parent / "shared" / "models" / "pose" / "pose_landmarker_full.task"
if _pose_model.is_file():
    os.environ.setdefault("HEADLESS_POSE_MODEL", str(_pose_model))
os.environ.setdefault("GLOG_minloglevel", "2")


def make_video(path: Path, n: int, width: int, height: int) -> Path:
    import numpy as np
    import skimage.data
    from PIL import Image

    from source.media.video_io import write_video

    photo = skimage.data.astronaut()
    big = np.asarray(Image.fromarray(photo).resize((width + 4 * n, int((width + 4 * n) * 1.0)), Image.LANCZOS))
    top = max(0, (big.shape[0] - height) // 4)
    write_video((big[top:top + height, 4 * i:4 * i + width] for i in range(n)), path, fps=16)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--width", type=int, default=854)
    ap.add_argument("--height", type=int, default=480)
    args = ap.parse_args()

    from source.handler_registry import run_handler
    from source.media.pose import get_pose_detector, interpolate_poses
    from source.media.pose_render import draw_openpose
    from source.media.video_io import iter_frames, read_frames
    from source.storage import Storage
    from source.task_context import TaskContext

    out: dict = {"frames": args.frames, "size": f"{args.width}x{args.height}", "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = make_video(tmp / "in.mp4", args.frames, args.width, args.height)
        frames = read_frames(video)

        det = get_pose_detector(video=True)
        list(det.detect_video(frames[:4], fps=16))  # warm-up
        t0 = time.perf_counter()
        poses = list(det.detect_video(iter_frames(video), fps=16))
        dt = time.perf_counter() - t0
        out["pose_fps"] = round(len(poses) / dt, 2)
        out["pose_frames_with_person"] = sum(p is not None for p in poses)

        img_det = get_pose_detector(video=False)
        img_det.detect(frames[0])
        times = []
        for f in frames[:12]:
            t0 = time.perf_counter()
            img_det.detect(f)
            times.append((time.perf_counter() - t0) * 1000)
        out["image_pose_ms"] = round(statistics.median(times), 1)

        pose = next(p for p in poses if p is not None)
        draw_openpose(pose)
        reps = 200
        t0 = time.perf_counter()
        for _ in range(reps):
            draw_openpose(pose)
        out["render_fps"] = round(reps / (time.perf_counter() - t0), 1)

        other = next(p for p in reversed(poses) if p is not None)
        t0 = time.perf_counter()
        n = 81
        for p in interpolate_poses(pose, other, n, width=832, height=480):
            draw_openpose(p)
        out["interpolate_render_fps_832x480"] = round(n / (time.perf_counter() - t0), 1)

        storage = Storage(tmp / "files", input_roots=[tmp])
        ctx = TaskContext(task_id="bench", task_type="generate_openpose", attempt=1, worker_id="bench",
                          storage=storage)
        t0 = time.perf_counter()
        res = run_handler("generate_openpose", {"input_video_path": str(video)}, ctx)
        dt = time.perf_counter() - t0
        out["handler_fps"] = round(res.result["frames"] / dt, 2)
        out["handler_s"] = round(dt, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
