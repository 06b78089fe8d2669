"""Editing media on real files: the lossless splice (bit-identical frames outside the range, for H.264
sources and, through FFV1, for pixel formats libx264 cannot keep), audio carried unchanged, and the
assembly's audio timing (clip audio under clip frames, silence under bridge frames)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from source.errors import InvalidInput
from source.media.editing_media import (
    Source,
    assemble,
    lossless_container,
    splice_lossless,
)
from source.media.video_io import read_frames
from tests.test_e2e_editing import audio_of, make_clip


def packets(path: Path, kind: str) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(getattr(c.streams, kind)[0]) if p.size]


def test_splice_keeps_every_other_frame_and_the_audio_bit_for_bit(tmp_path):
    src = make_clip(tmp_path / "v.mp4", "astronaut.png", "rocket.png", 14, tone=330.0)
    new = [np.full((64, 64, 3), 200, np.uint8)] * 4
    info = splice_lossless(src, 5, 9, new, tmp_path / "out.mp4")
    assert info["lossless"] == "libx264 qp=0 yuv420p (MP4)" and info["frames"] == 14
    a, b = read_frames(src), read_frames(tmp_path / "out.mp4")
    assert len(b) == 14
    assert all(np.array_equal(a[i], b[i]) for i in [*range(5), *range(9, 14)])
    assert all(np.abs(b[i].astype(int) - 200).max() <= 3 for i in range(5, 9))
    assert packets(src, "audio") == packets(tmp_path / "out.mp4", "audio")


def test_splice_of_an_rgb_source_falls_back_to_ffv1(tmp_path):
    src = tmp_path / "rgb.mkv"
    rng = np.random.default_rng(1)
    frames = [(rng.random((32, 48, 3)) * 255).astype(np.uint8) for _ in range(8)]
    with av.open(str(src), "w") as out:
        s = out.add_stream("ffv1", rate=16)
        s.width, s.height, s.pix_fmt = 48, 32, "bgr0"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, 16)
            for p in s.encode(vf):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    assert lossless_container(src) == ("ffv1", ".mkv")
    info = splice_lossless(src, 2, 3, [np.zeros((32, 48, 3), np.uint8)], tmp_path / "out.mkv")
    assert info["codec"] == "ffv1"
    got = read_frames(tmp_path / "out.mkv")
    assert all(np.array_equal(frames[i], got[i]) for i in range(8) if i != 2)
    assert got[2].max() == 0


def test_assembly_audio_follows_the_pieces(tmp_path):
    loud = make_clip(tmp_path / "a.mp4", "astronaut.png", "chelsea.png", 16, tone=440.0)
    quiet = make_clip(tmp_path / "b.mp4", "coffee.png", "rocket.png", 16)
    out = tmp_path / "out.mp4"
    n = assemble([Source(loud, 0, 16, True), Source(quiet, 0, 8, False), Source(loud, 8, 16, True)], out,
                 fps=16, size=(64, 64))
    assert n == 32 == len(read_frames(out))
    audio = audio_of(out)
    s = 48000 // 16  # samples per frame
    assert np.abs(audio[s:15 * s]).max() > 0.2               # clip audio
    assert np.abs(audio[16 * s + 1500:24 * s - 1500]).max() < 0.01  # silence under the bridge-like piece
    assert np.abs(audio[25 * s:31 * s]).max() > 0.2
    # no audio at all: no audio track
    assemble([Source(quiet, 0, 16, True)], tmp_path / "silent.mp4", fps=16, size=(64, 64))
    with av.open(str(tmp_path / "silent.mp4")) as c:
        assert not c.streams.audio


def test_assembly_refuses_a_piece_past_the_end_of_its_video(tmp_path):
    clip = make_clip(tmp_path / "a.mp4", "astronaut.png", "chelsea.png", 6)
    with pytest.raises(InvalidInput, match=r"a.mp4 ended after 6 frames; frames \[2, 9\) were planned"):
        assemble([Source(clip, 0, 6, False), Source(clip, 2, 9, False)], tmp_path / "out.mp4", fps=16, size=(64, 64))
    assert not (tmp_path / "out.mp4").exists()
    assert not list(tmp_path.glob(".*part*")), "no temporary file is left behind"
