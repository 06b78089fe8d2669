"""Streaming cross-fade stitching of travel segments, plus RIFE fps upsampling and Lanczos upscaling.

Frame arithmetic. `overlaps[i]` is the number of frames segment i and segment i+1 share. Each join
replaces the last O frames of segment i and the first O frames of segment i+1 by O blended frames, so
the stitched video has exactly `sum(len_i) - sum(O_i)` frames (zero overlaps: plain concatenation).
Blend weights: for k = 1..O, `alpha_k = (1 - cos(pi * k / (O + 1))) / 2` and
`frame = (1 - alpha_k) * prev_tail[k-1] + alpha_k * next_head[k-1]`. The weights ease in and out, are
symmetric, and stay strictly inside (0, 1), so no blended frame duplicates a source frame; O = 1 gives
an even 50/50 mix. (The seed used k/O, whose last blended frame is the next segment's frame itself.)

Optional unsharp mask on blended frames: `frame += s * sin(pi * k / (O + 1)) * (frame - blur(frame))`
-- strongest mid-fade, where mixing two slightly different frames softens the picture most.

Streaming. Segments are decoded one frame at a time; only a deque of the last O frames of the current
segment (the part that will be blended with the next one) is held, so memory does not grow with the
video's length. fps upsampling (RIFE between consecutive output frames: (n-1)*m+1 frames) and spatial
upscaling run on the same stream before the encoder.

Speed. Frames stay as decoded yuv420p `av.VideoFrame`s and go to the encoder untouched unless something
must change them: only the frames of a join are converted to RGB (video_io.to_rgb: unbiased, so joins
do not step in brightness against their neighbours), blended (in place into the earlier segment's frame,
through two float32 scratch buffers reused for the whole stitch) and converted back. RIFE,
upscaling or a segment of another size or colour space switch those frames to RGB. Encoding runs on its own
thread (video_io.VideoWriter(threaded=True)), libx264 on all cores, or NVENC when a GPU encoder opens; the
codec used is in StitchResult.encoder.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from source.errors import InvalidInput
from source.media.images import resize_frame
from source.media.video_io import (
    Frame,
    VideoWriter,
    iter_frames,
    iter_video_frames,
    passthrough_ok,
    probe_video,
    to_rgb,
)

ProgressFn = Callable[[float, str], None]
MAX_FPS_MULTIPLIER = 8
SHARPEN_SIGMA = 2.0


@dataclass
class StitchResult:
    frames: int
    width: int
    height: int
    fps: float
    encoder: str = ""  # the H.264 encoder used (libx264, or h264_nvenc on a GPU)


def crossfade_weights(overlap: int) -> np.ndarray:
    """alpha_k for k = 1..overlap (weight of the *next* segment's frame)."""
    k = np.arange(1, overlap + 1, dtype=np.float64)
    return (1.0 - np.cos(np.pi * k / (overlap + 1))) / 2.0


def count_frames(path: Path) -> int:
    """Video frames of a file, counted from its packets (no decoding); InvalidInput if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"video not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InvalidInput(f"{path.name} has no video stream")
            stream = container.streams.video[0]
            return sum(1 for p in container.demux(stream) if p.size)
    except av.error.FFmpegError as exc:  # type: ignore[attr-defined]
        raise InvalidInput(f"{path.name} is not a readable video ({exc})") from None


def _sharpen(frame: np.ndarray, amount: float) -> np.ndarray:
    if amount <= 0:
        return frame
    f = frame.astype(np.float32)
    blur = cv2.GaussianBlur(f, (0, 0), SHARPEN_SIGMA)
    return np.clip(f + amount * (f - blur) + 0.5, 0, 255).astype(np.uint8)


class _Blender:
    """`(1 - alpha) * a + alpha * b + 0.5`, truncated to uint8 -- in float32, operation for operation as
    `a.astype(f32) * f32(1 - alpha) + b.astype(f32) * f32(alpha)` -- written into `a` (which the caller
    no longer needs), through two scratch buffers reused for every frame of the same size."""

    def __init__(self) -> None:
        self._acc: np.ndarray | None = None
        self._tmp: np.ndarray | None = None

    def __call__(self, a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
        if self._acc is None or self._acc.shape != a.shape:
            self._acc = np.empty(a.shape, np.float32)
            self._tmp = np.empty(a.shape, np.float32)
        np.multiply(a, np.float32(1.0 - alpha), out=self._acc, dtype=np.float32)
        np.multiply(b, np.float32(alpha), out=self._tmp, dtype=np.float32)
        self._acc += self._tmp
        self._acc += np.float32(0.5)
        out = a if a.flags.writeable else np.empty_like(a)  # e.g. a read-only view of a resized image
        np.copyto(out, self._acc, casting="unsafe")  # float -> uint8 truncates, as astype did
        return out


def _segment_frames(path: Path, size: tuple[int, int], rgb: bool) -> Iterator[Frame]:
    """A segment's frames at `size`: decoded frames the encoder can take as they are stay av.VideoFrames
    (unless `rgb`), the others become resized RGB arrays."""
    for frame in iter_video_frames(path):
        if not rgb and passthrough_ok(frame, size[0], size[1]):
            yield frame
        else:
            yield resize_frame(frame.to_ndarray(format="rgb24"), size)


def _crossfaded(segments: list[Path], overlaps: list[int], size: tuple[int, int], sharpen: float,
                rgb: bool = True) -> Iterator[Frame]:
    """The stitched stream; holds at most max(overlaps) frames. rgb: every frame an RGB array (for RIFE or
    a resize after); else unchanged frames stay decoded av.VideoFrames and blended ones are arrays."""
    blend = _Blender()
    tail: deque[Frame] = deque()  # the previous segment's last O frames, waiting for the blend
    for i, seg in enumerate(segments):
        o_in = overlaps[i - 1] if i > 0 else 0
        o_out = overlaps[i] if i < len(overlaps) else 0
        alphas = crossfade_weights(o_in)
        hold: deque[Frame] = deque()
        count = 0
        for frame in _segment_frames(seg, size, rgb):
            if count < o_in:
                k = count + 1
                # the tail frame was never yielded, so it is blended in place
                frame = blend(to_rgb(tail.popleft()), to_rgb(frame), float(alphas[count]))
                if sharpen > 0:
                    frame = _sharpen(frame, sharpen * math.sin(math.pi * k / (o_in + 1)))
            count += 1
            if o_out:
                hold.append(frame)
                if len(hold) > o_out:
                    yield hold.popleft()
            else:
                yield frame
        if count < o_in or count < o_out:
            raise InvalidInput(f"segment {i} ({seg.name}) has {count} frames, fewer than its overlap "
                               f"({max(o_in, o_out)})")
        tail = hold
    yield from tail  # empty: the last segment holds nothing back


class _RifeUpsampler:
    def __init__(self, multiplier: int) -> None:
        from source.media.rife import get_rife

        self.rife = get_rife()
        self.m = multiplier

    def __call__(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        prev = None
        for frame in frames:
            if prev is not None:
                for j in range(1, self.m):
                    yield self.rife.interpolate(prev, frame, j / self.m)
            yield frame
            prev = frame


def _check_multiplier(m: int) -> int:
    if isinstance(m, bool) or int(m) != m or not 1 <= int(m) <= MAX_FPS_MULTIPLIER:
        raise InvalidInput(f"fps_multiplier must be an integer from 1 to {MAX_FPS_MULTIPLIER} (usually 2 or 4), "
                           f"got {m!r}")
    return int(m)


def _check_size(size, what: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} must be (width, height), got {size!r}") from None
    if not (8 <= w <= 8192 and 8 <= h <= 8192):
        raise InvalidInput(f"{what} {w}x{h} is outside 8..8192 pixels")
    return w, h


def _write_stream(frames: Iterable[Frame], output: Path, fps: float, total: int,
                  progress: ProgressFn | None, label: str) -> tuple[int, str]:
    """Encode `frames` to `output` (via a temporary name, so a failure leaves nothing); (frames, encoder)."""
    output = Path(output)
    tmp = output.with_name(f".{output.stem}.part{output.suffix}")
    every = max(1, total // 50)
    try:
        with VideoWriter(tmp, fps=fps, encoder="auto", threaded=True) as writer:
            for frame in frames:
                writer.write(frame)
                if progress is not None and writer.count % every == 0:
                    progress(min(1.0, writer.count / max(total, 1)), f"{label} {writer.count}/{total} frames")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, output)
    if progress is not None:
        progress(1.0, f"{label} {writer.count} frames")
    return writer.count, writer.encoder or ""


def stitch_videos(segments: list[Path], overlaps: list[int], output: Path, *, fps: float,
                  size: tuple[int, int] | None = None,
                  sharpen: float = 0.0,
                  fps_multiplier: int = 1,
                  upscale_to: tuple[int, int] | None = None,
                  progress: ProgressFn | None = None) -> StitchResult:
    """Cross-fade `segments` into one H.264 video (see the module docstring for the arithmetic).

    size: (width, height) of the stitch; default the first segment's; other sizes are resized (Lanczos).
    fps_multiplier m: RIFE frames between consecutive output frames, (n-1)*m+1 frames at fps*m.
    upscale_to: (width, height) Lanczos resize of the final stream."""
    segments = [Path(s) for s in segments]
    overlaps = list(overlaps)
    if not segments:
        raise InvalidInput("nothing to stitch: no segments given")
    if len(overlaps) != len(segments) - 1:
        raise InvalidInput(f"{len(segments)} segments need {len(segments) - 1} overlaps, got {len(overlaps)}")
    if any(isinstance(o, bool) or int(o) != o or o < 0 for o in overlaps):
        raise InvalidInput(f"overlaps must be non-negative integers, got {overlaps}")
    overlaps = [int(o) for o in overlaps]
    if not fps or fps <= 0:
        raise InvalidInput(f"fps must be positive, got {fps}")
    m = _check_multiplier(fps_multiplier)
    lengths = [count_frames(s) for s in segments]  # also proves every segment is readable before any work
    for i, o in enumerate(overlaps):
        if o > lengths[i] or o > lengths[i + 1]:
            raise InvalidInput(f"overlap {i} is {o} frames but segment {i} has {lengths[i]} and segment {i + 1} "
                               f"has {lengths[i + 1]}")
    if size is None:
        info = probe_video(segments[0], count=False)
        size = (info.width, info.height)
    size = _check_size(size, "size")
    out_size = _check_size(upscale_to, "upscale_to") if upscale_to is not None else size

    n = sum(lengths) - sum(overlaps)
    total = (n - 1) * m + 1 if n > 0 else 0
    rgb = m > 1 or out_size != size  # RIFE and the upscale work on RGB arrays
    stream: Iterable[Frame] = _crossfaded(segments, overlaps, size, float(sharpen), rgb=rgb)
    if m > 1:
        stream = _RifeUpsampler(m)(stream)
    if out_size != size:
        stream = (resize_frame(f, out_size) for f in stream)
    written, encoder = _write_stream(stream, Path(output), fps * m, total, progress, "stitched")
    return StitchResult(frames=written, width=out_size[0], height=out_size[1], fps=fps * m, encoder=encoder)


def upsample_fps(src: Path, dst: Path, multiplier: int, fps: float) -> int:
    """RIFE temporal upsampling: `src` (played at `fps`) becomes (n-1)*m+1 frames at fps*m (same duration).
    Returns the frames written. `dst` may equal `src`."""
    m = _check_multiplier(multiplier)
    n = count_frames(src)
    stream = iter_video_frames(src) if m == 1 else _RifeUpsampler(m)(iter_frames(src))
    return _write_stream(stream, Path(dst), fps * m, (n - 1) * m + 1 if n else 0, None, "upsampled")[0]


def upscale_video(src: Path, dst: Path, size: tuple[int, int]) -> int:
    """Lanczos spatial resize of every frame of `src` to size=(width, height), keeping its fps."""
    size = _check_size(size, "size")
    info = probe_video(src, count=False)
    stream = (resize_frame(f, size) for f in iter_frames(src))
    return _write_stream(stream, Path(dst), info.fps or 16.0, info.frames or 0, None, "upscaled")[0]


__all__ = ["StitchResult", "stitch_videos", "upsample_fps", "upscale_video", "crossfade_weights", "count_frames"]
