"""generate_openpose: image -> skeleton PNG + keypoints JSON, video -> MP4 of the same length, no-person
outcomes, task-output inputs, and clear failures for bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from source.handler_registry import run_handler
from source.media.images import save_png
from source.media.video_io import probe_video, read_frames, write_video
from source.storage import Storage
from source.task_context import InvalidInput, TaskContext


class Ctx:
    def __init__(self, root: Path):
        self.root = root
        self.storage = Storage(root / "files", input_roots=[root])
        self.outputs: dict[str, str] = {}
        self.n = 0

    def __call__(self, task_type: str, task_id: str | None = None) -> TaskContext:
        self.n += 1
        return TaskContext(task_id=task_id or f"t{self.n}", task_type=task_type, attempt=1, worker_id="test",
                           storage=self.storage, task_output=self.outputs.get)

    def run(self, task_type: str, params: dict, task_id: str | None = None):
        ctx = self(task_type, task_id)
        res = run_handler(task_type, params, ctx)
        if res.output_location:
            self.outputs[ctx.task_id] = res.output_location
        return res, ctx

    def path(self, location: str) -> Path:
        return self.storage.resolve_input(location)


@pytest.fixture
def env(tmp_path) -> Ctx:
    return Ctx(tmp_path)


def astronaut_video(path: Path, n: int = 6) -> Path:
    """A short real video: a slow pan across the astronaut photo."""
    img = skimage.data.astronaut()
    frames = [img[20:20 + 400, 8 * i:8 * i + 400] for i in range(n)]
    write_video(frames, path, fps=8)
    return path


def test_image_gives_skeleton_png_and_keypoints(env, tmp_path):
    src = save_png(skimage.data.astronaut(), tmp_path / "astronaut.png")
    res, ctx = env.run("generate_openpose", {"input_image_path": str(src)})
    out = env.path(res.output_location)
    assert out.suffix == ".png" and out.is_file()
    img = np.asarray(Image.open(out))
    assert img.shape == (512, 512, 3) and img.max() > 0 and (img.sum(axis=2) == 0).mean() > 0.8
    assert res.result["kind"] == "image" and res.result["frames_with_person"] == 1
    side = out.with_suffix(".json")
    data = json.loads(side.read_text())
    assert data == res.result["keypoints"]
    kp = data["frames"][0]["people"][0]["pose_keypoints_2d"]
    assert len(kp) == 54 and kp[2] > 0.5  # nose found
    assert env.path(res.result["keypoints_location"]) == side


def test_seed_style_input_path_and_task_output(env, tmp_path):
    src = save_png(skimage.data.astronaut(), tmp_path / "a.png")
    env.outputs["upstream"] = str(src)
    res, _ = env.run("generate_openpose", {"input_image_task_id": "upstream"})
    assert res.result["kind"] == "image" and res.result["frames_with_person"] == 1
    res2, _ = env.run("openpose", {"input_path": str(src)})
    assert res2.result["kind"] == "image"


def test_no_person_fails_clearly_or_renders_black(env, tmp_path):
    src = save_png(skimage.data.coffee(), tmp_path / "coffee.png")
    with pytest.raises(InvalidInput, match="no person found.*allow_no_person"):
        env.run("generate_openpose", {"input_image_path": str(src)})
    res, _ = env.run("generate_openpose", {"input_image_path": str(src), "allow_no_person": True})
    img = np.asarray(Image.open(env.path(res.output_location)))
    assert img.shape == (400, 600, 3) and img.max() == 0
    assert res.result["frames_with_person"] == 0
    assert res.result["keypoints"]["frames"][0]["people"] == []


def test_video_gives_mp4_with_same_frame_count(env, tmp_path):
    src = astronaut_video(tmp_path / "pan.mp4", n=6)
    res, _ = env.run("generate_openpose", {"input_video_path": str(src)})
    out = env.path(res.output_location)
    assert out.suffix == ".mp4"
    info = probe_video(out)
    assert (info.frames, info.width, info.height) == (6, 400, 400)
    assert res.result["frames"] == 6 and res.result["frames_with_person"] == 6
    assert len(json.loads(out.with_suffix(".json").read_text())["frames"]) == 6
    assert all(f.max() > 0 for f in read_frames(out))
    # The same video by seed-style input_path is recognised as a video.
    res2, _ = env.run("generate_openpose", {"input_path": str(src)})
    assert res2.result["kind"] == "video" and res2.result["frames"] == 6


def test_video_without_person(env, tmp_path):
    coffee = skimage.data.coffee()
    src = tmp_path / "coffee.mp4"
    write_video([coffee[:, i * 4:i * 4 + 400] for i in range(3)], src, fps=8)
    with pytest.raises(InvalidInput, match="no person found in any of the 3 frames"):
        env.run("generate_openpose", {"input_video_path": str(src)})
    res, _ = env.run("generate_openpose", {"input_video_path": str(src), "allow_no_person": True})
    assert probe_video(env.path(res.output_location)).frames == 3


@pytest.mark.parametrize("case, match", [
    ("missing", "not found"),
    ("not_image", "not a readable image"),
    ("tiny", "smaller than"),
    ("huge", "larger than"),
    ("outside", "outside the allowed input folders"),
    ("none", "no input"),
    ("two", "more than one input"),
    ("bad_task", "has no output"),
])
def test_bad_inputs_fail_clearly(env, tmp_path, case, match):
    if case == "missing":
        params = {"input_image_path": str(tmp_path / "nope.png")}
    elif case == "not_image":
        p = tmp_path / "x.png"
        p.write_bytes(b"this is not a picture" * 10)
        params = {"input_image_path": str(p)}
    elif case == "tiny":
        params = {"input_image_path": str(save_png(np.zeros((4, 4, 3), np.uint8), tmp_path / "tiny.png"))}
    elif case == "huge":
        p = tmp_path / "huge.png"
        Image.new("L", (9000, 9000)).save(p)  # 81 Mpx, over the 67 Mpx limit; compresses to ~100 KB
        params = {"input_image_path": str(p)}
    elif case == "outside":
        params = {"input_image_path": "/etc/passwd"}
    elif case == "none":
        params = {}
    elif case == "two":
        params = {"input_image_path": "a.png", "input_video_path": "b.mp4"}
    else:
        params = {"input_image_task_id": "no-such-task"}
    with pytest.raises(InvalidInput, match=match):
        env.run("generate_openpose", params)


def test_not_a_video_fails_clearly(env, tmp_path):
    p = tmp_path / "fake.mp4"
    p.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(InvalidInput, match="not a readable video"):
        env.run("generate_openpose", {"input_video_path": str(p)})
