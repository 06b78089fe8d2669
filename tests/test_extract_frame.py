"""extract_frame: positive, negative and out-of-range indexes, by path and by task output."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from source.media.video_io import write_video
from source.task_context import InvalidInput
from tests.test_pose_handler import Ctx


@pytest.fixture
def env(tmp_path) -> Ctx:
    return Ctx(tmp_path)


@pytest.fixture
def video(tmp_path):
    """7 frames of 96x64 whose brightness encodes the frame index."""
    path = tmp_path / "v.mp4"
    write_video([np.full((64, 96, 3), 20 + 30 * i, np.uint8) for i in range(7)], path, fps=8)
    return path


def _level(env, res) -> int:
    img = np.asarray(Image.open(env.path(res.output_location)))
    assert img.shape == (64, 96, 3)
    return int(round((img.mean() - 20) / 30))


@pytest.mark.parametrize("index, expected", [(0, 0), (3, 3), (6, 6), (-1, 6), (-7, 0), (-2, 5)])
def test_frame_indexes(env, video, index, expected):
    res, _ = env.run("extract_frame", {"input_video_path": str(video), "frame_index": index})
    assert _level(env, res) == expected
    assert res.result["frame_index"] == expected and res.result["requested_index"] == index
    if index < 0:
        assert res.result["frames"] == 7


def test_from_task_output_default_index(env, video):
    env.outputs["gen"] = str(video)
    res, _ = env.run("extract_frame", {"input_video_task_id": "gen"})
    assert _level(env, res) == 0


@pytest.mark.parametrize("index", [7, 100, -8])
def test_out_of_range(env, video, index):
    with pytest.raises(InvalidInput, match=rf"frame_index {index} is out of range: v.mp4 has 7 frames \(valid: -7..6\)"):
        env.run("extract_frame", {"input_video_path": str(video), "frame_index": index})


def test_bad_inputs(env, tmp_path):
    with pytest.raises(InvalidInput, match="no input"):
        env.run("extract_frame", {})
    with pytest.raises(InvalidInput, match="has no output"):
        env.run("extract_frame", {"input_video_task_id": "missing"})
    with pytest.raises(InvalidInput, match="not found"):
        env.run("extract_frame", {"input_video_path": str(tmp_path / "nope.mp4")})
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"junk" * 100)
    with pytest.raises(InvalidInput, match="not a readable video"):
        env.run("extract_frame", {"input_video_path": str(junk), "frame_index": -1})
    with pytest.raises(InvalidInput, match="frame_index"):
        env.run("extract_frame", {"input_video_path": "x.mp4", "frame_index": "last"})
