"""Streaming video reading and H.264 writing with PyAV: frames are uint8 RGB arrays of shape (H, W, 3).

Frames flow one at a time, so memory does not grow with a video's length.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np

from source.errors import InvalidInput


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    width: int
    height: int
    fps: float


class VideoWriter:
    """`with VideoWriter(path, fps=16) as w: w.write(frame)`; size is taken from the first frame
    (H.264 with yuv420p needs even sides, so odd sizes are padded by one pixel)."""

    def __init__(self, path: Path | str, fps: float = 16, *, crf: int = 18, preset: str = "veryfast") -> None:
        self.path = Path(path)
        self.fps = fps
        self.crf = crf
        self.preset = preset
        self.count = 0
        self._container = None
        self._stream = None
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> "VideoWriter":
        return self

    def _open(self, height: int, width: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        rate = Fraction(self.fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width = width + (width % 2)
        self._stream.height = height + (height % 2)
        self._stream.pix_fmt = "yuv420p"
        options = {"crf": str(self.crf), "preset": self.preset}
        if self._stream.width * self._stream.height < 64 * 64:
            # libx264's macroblock-tree lookahead is not deterministic on frames of a few macroblocks (e.g.
            # 32x32: the same frames encoded twice decode differently); it buys nothing at such sizes.
            options["x264-params"] = "mbtree=0"
        self._stream.options = options
        self._size = (height, width)

    def write(self, frame: np.ndarray) -> None:
        frame = as_uint8_rgb(frame)
        if self._container is None:
            self._open(frame.shape[0], frame.shape[1])
        if frame.shape[:2] != self._size:
            raise ValueError(f"frame size {frame.shape[1]}x{frame.shape[0]} differs from the video's "
                             f"{self._size[1]}x{self._size[0]}")
        if frame.shape[0] % 2 or frame.shape[1] % 2:
            frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.count += 1

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()
        if exc_type is not None:
            self.path.unlink(missing_ok=True)


def as_uint8_rgb(frame: np.ndarray) -> np.ndarray:
    """Accept uint8 RGB, float RGB in [0, 1], or greyscale; return uint8 (H, W, 3)."""
    a = np.asarray(frame)
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) frame, got shape {a.shape}")
    return a[:, :, :3]


def write_video(frames: Iterable[np.ndarray], path: Path | str, fps: float = 16, **kw) -> int:
    """Write frames to an MP4; returns the frame count."""
    with VideoWriter(path, fps=fps, **kw) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.count


def _open_for_reading(path: Path | str):
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"video not found: {path}")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:  # type: ignore[attr-defined]
        raise InvalidInput(f"{path.name} is not a readable video ({exc})") from None
    if not container.streams.video:
        container.close()
        raise InvalidInput(f"{path.name} has no video stream")
    return container


def iter_frames(path: Path | str) -> Iterator[np.ndarray]:
    """Decode frames one by one as uint8 RGB."""
    container = _open_for_reading(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")
    finally:
        container.close()


def read_frames(path: Path | str) -> list[np.ndarray]:
    """All frames in memory: only for short videos (guides, tests)."""
    return list(iter_frames(path))


def probe_video(path: Path | str, *, count: bool = True) -> VideoInfo:
    """Size, fps and frame count. The count is decoded exactly when `count` (container metadata lies)."""
    container = _open_for_reading(path)
    try:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 0.0
        width, height = stream.codec_context.width, stream.codec_context.height
        if count:
            n = sum(1 for _ in container.decode(stream))
        else:
            n = stream.frames
        return VideoInfo(frames=n, width=width, height=height, fps=fps)
    finally:
        container.close()
