"""Streaming video reading and H.264 writing with PyAV: frames are uint8 RGB arrays of shape (H, W, 3).

Frames flow one at a time, so memory does not grow with a video's length.

Speed. `VideoWriter(threaded=True)` hands frames to an encoder thread through a small bounded queue, so the
caller's decoding and blending overlap with colour conversion and encoding (PyAV releases the GIL in
swscale, the encoder and the muxer). libx264 runs frame threads on every core (PyAV's default, slice
threads, is slower here and makes files ~1.7x larger). A writer also accepts decoded `av.VideoFrame`s:
yuv420p frames in the colours the RGB path assumes go to the encoder without an RGB round trip
(`passthrough_ok`). `encoder="auto"` takes h264_nvenc when PyAV lists it AND it opens (a GPU is present),
else libx264; `$HEADLESS_VIDEO_ENCODER=libx264` forces the CPU. The choice is in `writer.encoder` and
`writer.encoder_note`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.frame import PictureType

from source.errors import InvalidInput
from source.settings import settings

log = logging.getLogger("headless.media")

CPU_ENCODER = "libx264"
GPU_ENCODER = "h264_nvenc"
ENCODER_ENV = "HEADLESS_VIDEO_ENCODER"  # auto (default) | libx264 | h264_nvenc
# av.VideoFrame.colorspace values whose yuv the RGB path reads as BT.601 (what the writer encodes with), so a
# decoded frame with one of them can skip RGB: unspecified, BT.470BG, SMPTE 170M
_BT601_LIKE = {2, 5, 6}
_STOP = object()

Frame = np.ndarray | av.VideoFrame  # what VideoWriter.write takes


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    width: int
    height: int
    fps: float


def _encoder_options(codec: str, crf: int, preset: str, width: int, height: int) -> dict[str, str]:
    if codec == GPU_ENCODER:
        # constant-quality VBR (cq ~ crf; b=0 lifts the bitrate cap); p4 is NVENC's middle preset
        return {"preset": "p4", "rc": "vbr", "cq": str(max(1, min(51, crf))), "b": "0"}
    options = {"crf": str(crf), "preset": preset}
    if width * height < 64 * 64:
        # libx264's macroblock-tree lookahead is not deterministic on frames of a few macroblocks (e.g.
        # 32x32: the same frames encoded twice decode differently); it buys nothing at such sizes.
        options["x264-params"] = "mbtree=0"
    return options


@lru_cache(maxsize=32)
def _open_failure(codec: str, width: int, height: int) -> str | None:
    """Why `codec` cannot encode width x height yuv420p here (None: it opened). Cached per process: on a
    machine without a GPU, NVENC fails fast and the same way every time."""
    if codec not in av.codecs_available:
        return f"{codec} is not in PyAV's codec list"
    try:
        ctx = av.CodecContext.create(codec, "w")
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
        ctx.time_base, ctx.framerate = Fraction(1, 16), Fraction(16)
        ctx.options = _encoder_options(codec, 18, "veryfast", width, height)
        ctx.open()
    except (av.error.FFmpegError, ValueError, OSError) as exc:  # type: ignore[attr-defined]
        return f"{codec} did not open: {exc}"
    return None


def choose_encoder(width: int, height: int, prefer: str = "auto") -> tuple[str, str]:
    """(codec, note). prefer: auto -> h264_nvenc when listed and it opens at this size, else libx264;
    a codec name -> that codec (libx264 when it cannot open, with the reason in the note)."""
    if prefer == "auto":
        prefer = settings().video_encoder
        if prefer not in ("auto", CPU_ENCODER, GPU_ENCODER):
            # operator configuration, not task input: a typo must not fail every video, so say so and go on
            log.warning("$%s=%r is not auto, %s or %s; using auto", ENCODER_ENV, prefer, CPU_ENCODER, GPU_ENCODER)
            prefer = "auto"
    if prefer == CPU_ENCODER:
        return CPU_ENCODER, "libx264 requested"
    if prefer not in ("auto", GPU_ENCODER):
        raise ValueError(f"unknown video encoder {prefer!r}: use auto, {CPU_ENCODER} or {GPU_ENCODER}")
    failure = _open_failure(GPU_ENCODER, width, height)
    if failure is None:
        return GPU_ENCODER, "GPU encoder opened"
    return CPU_ENCODER, f"CPU fallback: {failure}"


def passthrough_ok(frame: av.VideoFrame, width: int, height: int) -> bool:
    """Whether a decoded frame can go to the encoder as it is: yuv420p at the output size, with colours the
    RGB path would read as BT.601 -- so passed-through and RGB-processed frames of one video match."""
    return (frame.format.name == "yuv420p" and frame.width == width and frame.height == height
            and width % 2 == 0 and height % 2 == 0 and frame.colorspace in _BT601_LIKE)


def to_rgb(frame: Frame) -> np.ndarray:
    """A frame as a fresh (H, W, 3) uint8 RGB array (arrays are returned as they are).

    Frames that could pass through (`passthrough_ok`) are converted with OpenCV's BT.601 I420 conversion:
    3x faster than swscale's default here and unbiased -- swscale's default yuv->rgb darkens luma by about
    one level, which would show as a step where blended join frames meet passed-through ones."""
    if isinstance(frame, np.ndarray):
        return frame
    if passthrough_ok(frame, frame.width, frame.height):
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2RGB_I420)
    return frame.to_ndarray(format="rgb24")


class VideoWriter:
    """`with VideoWriter(path, fps=16) as w: w.write(frame)`; size is taken from the first frame
    (H.264 with yuv420p needs even sides, so odd sizes are padded by one pixel).

    write() takes uint8/float RGB arrays or decoded av.VideoFrames (see `passthrough_ok`).
    threaded: encode on a background thread behind a queue of `queue_frames` frames (memory stays flat).
    encoder: libx264 (default), auto or h264_nvenc (see `choose_encoder`)."""

    def __init__(self, path: Path | str, fps: float = 16, *, crf: int = 18, preset: str = "veryfast",
                 encoder: str = CPU_ENCODER, threaded: bool = False, queue_frames: int = 8) -> None:
        self.path = Path(path)
        self.fps = fps
        self.crf = crf
        self.preset = preset
        self.count = 0
        self.encoder_request = encoder
        self.encoder: str | None = None  # the codec used, known once the first frame arrives
        self.encoder_note = ""
        self.threaded = threaded
        self._container = None
        self._stream = None
        self._size: tuple[int, int] | None = None
        self._queue: queue.Queue | None = queue.Queue(maxsize=max(1, queue_frames)) if threaded else None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._discard = False  # set by abort(): queued frames are dropped, not encoded

    def __enter__(self) -> VideoWriter:
        return self

    def _open(self, height: int, width: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        w, h = width + (width % 2), height + (height % 2)
        self.encoder, self.encoder_note = choose_encoder(w, h, self.encoder_request)
        if self.encoder_request != CPU_ENCODER:
            log.info("video encoder %s for %s (%s)", self.encoder, self.path.name, self.encoder_note)
        self._container = av.open(str(self.path), mode="w")
        rate = Fraction(self.fps).limit_denominator(1001)
        self._stream = self._container.add_stream(self.encoder, rate=rate)
        self._time_base = 1 / rate
        self._stream.width, self._stream.height = w, h
        self._stream.pix_fmt = "yuv420p"
        if self.encoder == CPU_ENCODER:
            # frame threads on all cores, as the ffmpeg CLI does (thread_count 0 = x264's auto)
            self._stream.codec_context.thread_type = "FRAME"
            self._stream.codec_context.thread_count = 0
        self._stream.options = _encoder_options(self.encoder, self.crf, self.preset, w, h)
        self._size = (height, width)
        if self.threaded:
            self._thread = threading.Thread(target=self._encode_loop, name=f"encode-{self.path.name}",
                                            daemon=True)
            self._thread.start()

    def write(self, frame: Frame) -> None:
        if self._error is not None:
            raise self._error
        if isinstance(frame, av.VideoFrame):
            shape = (frame.height, frame.width)
            if self._container is None:
                self._open(*shape)
            if shape != self._size or not passthrough_ok(frame, self._size[1], self._size[0]):
                frame = frame.to_ndarray(format="rgb24")  # checked (and padded) as an array below
            else:
                # a decoded frame carries its source's picture type, which x264 would obey (forcing I/P/B
                # where the source had them); its timestamp is replaced below
                frame.pict_type = PictureType.NONE
                frame.duration = 0  # as for frames made from arrays: the muxer derives it from the rate
        if not isinstance(frame, av.VideoFrame):
            frame = as_uint8_rgb(frame)
            if self._container is None:
                self._open(frame.shape[0], frame.shape[1])
            if frame.shape[:2] != self._size:
                raise ValueError(f"frame size {frame.shape[1]}x{frame.shape[0]} differs from the video's "
                                 f"{self._size[1]}x{self._size[0]}")
            if frame.shape[0] % 2 or frame.shape[1] % 2:
                frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
            # from_ndarray copies, so the caller may reuse its array at once; the yuv conversion happens in
            # encode() (on the encoder thread when threaded)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        # explicit timestamps: PyAV's default (the encoder's frame counter) lags behind with frame threads,
        # and decoded frames carry their own segment's times
        frame.pts = self.count
        frame.time_base = self._time_base
        if self._queue is not None:
            self._put(frame)
        else:
            self._encode(frame)
        self.count += 1

    def _encode(self, frame: av.VideoFrame | None) -> None:
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def _put(self, item) -> None:
        while True:
            if self._error is not None and item is not _STOP:
                raise self._error
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                if self._thread is None or not self._thread.is_alive():
                    raise RuntimeError("the video encoder thread stopped") from self._error

    def _encode_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None or self._discard:
                continue  # keep draining so the writer never blocks; write() raises the error
            try:
                self._encode(item)
            except BaseException as exc:  # noqa: BLE001 -- handed to the writing thread
                self._error = exc

    def _stop_thread(self) -> None:
        if self._thread is not None:
            self._put(_STOP)
            self._thread.join()
            self._thread = None

    def close(self) -> None:
        if self._container is None:
            return
        try:
            self._stop_thread()
            if self._error is not None:
                raise self._error
            self._encode(None)  # flush the encoder's delayed frames
        finally:
            self._container.close()
            self._container = None

    def abort(self) -> None:
        """Stop without flushing (the file is removed by __exit__)."""
        if self._container is None:
            return
        self._discard = True
        try:
            self._stop_thread()
        finally:
            self._container.close()
            self._container = None

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            try:
                self.abort()
            finally:
                self.path.unlink(missing_ok=True)
            return
        try:
            self.close()
        except BaseException:
            self.path.unlink(missing_ok=True)
            raise


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


def iter_video_frames(path: Path | str) -> Iterator[av.VideoFrame]:
    """Decode frames one by one as PyAV frames (usually yuv420p): for streams that pass most frames
    straight to a VideoWriter and convert only the few they change."""
    container = _open_for_reading(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yield from container.decode(stream)
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
