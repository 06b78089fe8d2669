"""LAB mean/std (Reinhard) colour matching of frames and of travel segments."""

from __future__ import annotations

import cv2
import numpy as np
from skimage import data

from source.media.colour_match import colour_match_video, lab_stats, match_colour
from source.media.video_io import probe_video, read_frames, write_video


def tint(img: np.ndarray, rgb_gain=(0.7, 0.85, 1.3)) -> np.ndarray:
    return np.clip(img.astype(np.float32) * np.array(rgb_gain, np.float32), 0, 255).astype(np.uint8)


def small(img: np.ndarray, size=(96, 64)) -> np.ndarray:
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def test_match_colour_moves_stats_to_reference():
    ref = small(data.chelsea())
    frame = tint(ref)
    out = match_colour(frame, ref)
    m_ref, s_ref = lab_stats(ref)
    m_in, _ = lab_stats(frame)
    m_out, s_out = lab_stats(out)
    assert np.abs(m_out - m_ref).max() < 2.0 < np.abs(m_in - m_ref).max()
    assert np.allclose(s_out, s_ref, rtol=0.15, atol=1.0)
    assert np.array_equal(match_colour(frame, ref, strength=0.0), frame)
    half = lab_stats(match_colour(frame, ref, strength=0.5))[0]
    assert np.all(np.abs(half - m_ref) <= np.abs(m_in - m_ref) + 0.5)


def test_colour_match_video_pulls_segment_toward_anchors(tmp_path):
    start = small(data.chelsea())
    end = small(data.coffee())
    n = 9
    # a "generated" segment: cross-dissolve of the anchors, but with a strong blue cast
    frames = [tint(((1 - t) * start.astype(np.float32) + t * end).astype(np.uint8))
              for t in np.linspace(0, 1, n)]
    write_video(frames, tmp_path / "seg.mp4", fps=16)
    written = colour_match_video(tmp_path / "seg.mp4", tmp_path / "cm.mp4", start, end, fps=16)
    assert written == n == probe_video(tmp_path / "cm.mp4").frames
    before, after = read_frames(tmp_path / "seg.mp4"), read_frames(tmp_path / "cm.mp4")

    def mean_rgb(a):
        return a.reshape(-1, 3).mean(axis=0)

    for i, ref in ((0, start), (n - 1, end)):
        err_before = np.abs(mean_rgb(before[i]) - mean_rgb(ref)).sum()
        err_after = np.abs(mean_rgb(after[i]) - mean_rgb(ref)).sum()
        assert err_after < 0.35 * err_before, (i, err_before, err_after)
    # blue cast removed throughout: blue-minus-red of every frame drops
    for b, a in zip(before, after):
        assert (mean_rgb(a)[2] - mean_rgb(a)[0]) < (mean_rgb(b)[2] - mean_rgb(b)[0]) - 10


def test_colour_match_video_in_place_with_start_only(tmp_path):
    ref = small(data.astronaut())
    write_video([tint(ref)] * 4, tmp_path / "seg.mp4", fps=12)
    assert colour_match_video(tmp_path / "seg.mp4", tmp_path / "seg.mp4", ref, None, fps=12) == 4
    out = read_frames(tmp_path / "seg.mp4")
    assert len(out) == 4
    err_before = np.abs(lab_stats(tint(ref))[0] - lab_stats(ref)[0]).max()
    err_after = np.abs(lab_stats(out[-1])[0] - lab_stats(ref)[0]).max()
    assert err_after < 0.25 * err_before, (err_before, err_after)  # (gamut clipping + H.264 chroma)
