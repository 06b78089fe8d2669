"""Guide and mask videos of a chained (VACE) travel segment, read back from the written files."""

from __future__ import annotations

import numpy as np
import pytest

from source.media.travel_guide import adjust_overlap_frame, last_frames, write_guide_and_mask
from source.media.video_io import probe_video, read_frames, write_video
from source.task_context import InvalidInput

W, H = 64, 48


def solid(value, w=W, h=H):
    return np.full((h, w, 3), value, dtype=np.uint8)


def colour(rgb, w=W, h=H):
    return np.tile(np.array(rgb, dtype=np.uint8), (h, w, 1))


def close(a, b, tol=6.0):
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean()) <= tol


@pytest.fixture
def previous_video(tmp_path):
    """12 frames, each a distinct flat colour, at a different size than the segment (resize is exercised)."""
    frames = [colour((20 * i, 255 - 20 * i, 100), w=96, h=64) for i in range(12)]
    path = tmp_path / "prev.mp4"
    write_video(frames, path, fps=16, crf=0)
    return path, frames


def test_first_segment_from_scratch(tmp_path):
    start, end = colour((250, 10, 10)), colour((10, 10, 250))
    layout = write_guide_and_mask(tmp_path / "g.mp4", tmp_path / "m.mp4", frames=9, size=(W, H), fps=16,
                                  start_image=start, end_image=end)
    assert layout.kept == [0, 8] and layout.from_previous == 0
    guide, mask = read_frames(tmp_path / "g.mp4"), read_frames(tmp_path / "m.mp4")
    assert len(guide) == len(mask) == 9
    assert guide[0].shape == (H, W, 3)
    assert close(guide[0], start) and close(guide[8], end)
    for i in range(1, 8):
        assert close(guide[i], solid(128), tol=2), f"frame {i} should be mid grey"
    assert mask[0].max() <= 8 and mask[8].max() <= 8  # black: keep
    for i in range(1, 8):
        assert mask[i].min() >= 247  # white: generate


def test_continuing_segment_takes_last_frames_of_previous(tmp_path, previous_video):
    prev, prev_frames = previous_video
    end = colour((0, 200, 0))
    layout = write_guide_and_mask(tmp_path / "g.mp4", tmp_path / "m.mp4", frames=13, size=(W, H), fps=16,
                                  previous_video=prev, overlap=4, start_image=colour((255, 0, 0)), end_image=end)
    assert layout.kept == [0, 1, 2, 3, 12] and layout.from_previous == 4
    guide, mask = read_frames(tmp_path / "g.mp4"), read_frames(tmp_path / "m.mp4")
    assert len(guide) == len(mask) == 13 == probe_video(tmp_path / "g.mp4").frames
    for k in range(4):  # frames 0..3 = previous frames 8..11, resized to 64x48
        expected = prev_frames[8 + k][:H, :W]
        assert close(guide[k], expected), f"guide frame {k}"
        assert mask[k].max() <= 8
    for i in range(4, 12):
        assert close(guide[i], solid(128), tol=2) and mask[i].min() >= 247
    assert close(guide[12], end) and mask[12].max() <= 8


def test_guide_adjustments_apply_to_reused_frames_only(tmp_path, previous_video):
    prev, _ = previous_video
    end = colour((0, 200, 0))
    write_guide_and_mask(tmp_path / "g.mp4", tmp_path / "m.mp4", frames=9, size=(W, H), fps=16,
                         previous_video=prev, overlap=2, end_image=end, adjustments={"strength": -1.0})
    guide = read_frames(tmp_path / "g.mp4")
    assert close(guide[0], solid(128), tol=2) and close(guide[1], solid(128), tol=2)  # fully toned to grey
    assert close(guide[8], end)


def test_adjust_overlap_frame():
    f = colour((200, 100, 50))
    assert adjust_overlap_frame(f) is f
    grey = adjust_overlap_frame(f, desaturate=1.0)
    assert np.ptp(grey[0, 0].astype(int)) <= 1
    brighter = adjust_overlap_frame(f, brightness=0.2)
    assert brighter[0, 0, 1] == 120


def test_previous_too_short_is_a_clear_error(tmp_path, previous_video):
    prev, _ = previous_video
    with pytest.raises(InvalidInput, match="has only 12 frames; the segment needs its last 20"):
        last_frames(prev, 20)
    with pytest.raises(ValueError):
        write_guide_and_mask(tmp_path / "g.mp4", tmp_path / "m.mp4", frames=9, size=(W, H), fps=16,
                             previous_video=prev, overlap=9, end_image=solid(0))
