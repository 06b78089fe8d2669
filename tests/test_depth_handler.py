"""generate_depth with the tiny random-weight depth model: maps at the input's size (image and video)."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from PIL import Image

from source.media.depth import DEPTH_MODELS, canonical_depth_model, normalize_depth
from source.media.images import save_png
from source.media.video_io import probe_video, read_frames, write_video
from source.task_context import InvalidInput
from tests.test_pose_handler import Ctx


@pytest.fixture
def env(tmp_path) -> Ctx:
    return Ctx(tmp_path)


def test_image_depth_has_input_size(env, tmp_path):
    src = save_png(skimage.data.astronaut()[:300, :420], tmp_path / "a.png")
    res, _ = env.run("generate_depth", {"input_image_path": str(src), "depth_model": "tiny-depth"})
    out = env.path(res.output_location)
    img = np.asarray(Image.open(out))
    assert out.suffix == ".png" and img.shape == (300, 420, 3)
    assert (img[:, :, 0] == img[:, :, 1]).all() and (img[:, :, 1] == img[:, :, 2]).all()  # greyscale as RGB
    assert img.min() == 0 and img.max() == 255  # normalised to the full range
    assert res.result["depth_model"] == "tiny-depth" and (res.result["width"], res.result["height"]) == (420, 300)


def test_video_depth_has_input_size_and_length(env, tmp_path):
    a = skimage.data.astronaut()
    src = tmp_path / "pan.mp4"
    write_video([a[:240, 8 * i:8 * i + 320] for i in range(5)], src, fps=8)
    res, _ = env.run("generate_depth", {"input_video_path": str(src), "depth_model": "tiny-depth",
                                        "batch_size": 2})
    info = probe_video(env.path(res.output_location))
    assert (info.frames, info.width, info.height) == (5, 320, 240)
    assert res.result["frames"] == 5 and res.result["kind"] == "video"
    assert all(f.max() > 128 for f in read_frames(env.path(res.output_location)))


def test_depth_from_task_output(env, tmp_path):
    env.outputs["up"] = str(save_png(skimage.data.coffee(), tmp_path / "c.png"))
    res, _ = env.run("depth", {"input_image_task_id": "up", "depth_model": "tiny_depth"})
    assert (res.result["width"], res.result["height"]) == (600, 400)


def test_unknown_model_and_bad_input(env, tmp_path):
    src = save_png(skimage.data.coffee(), tmp_path / "c.png")
    with pytest.raises(InvalidInput, match="unknown depth_model 'nope'"):
        env.run("generate_depth", {"input_image_path": str(src), "depth_model": "nope"})
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope" * 50)
    with pytest.raises(InvalidInput, match="not a readable image"):
        env.run("generate_depth", {"input_image_path": str(bad), "depth_model": "tiny-depth"})
    with pytest.raises(InvalidInput, match="smaller than"):
        env.run("generate_depth", {"input_image_path": str(save_png(np.zeros((4, 4, 3), np.uint8), tmp_path / "t.png")),
                                   "depth_model": "tiny-depth"})


def test_catalog_names():
    assert canonical_depth_model(None) == "depth-anything-v2-small"
    assert canonical_depth_model("Intel/dpt-hybrid-midas") == "dpt-hybrid"
    assert canonical_depth_model("DPT-Large") == "dpt-large"
    assert set(DEPTH_MODELS) >= {"depth-anything-v2-small", "dpt-hybrid", "dpt-large", "tiny-depth"}
    flat = normalize_depth(np.ones((5, 7)))
    assert flat.shape == (5, 7, 3) and flat.max() == 0
