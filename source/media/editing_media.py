"""Media for video editing: bridge guides, frame-range assembly with the clips' audio, lossless splicing.

- `write_bridge_guide`: the guide and mask of one VACE bridge: context frames before (kept, mask black),
  mid-grey frames to generate (mask white), context frames after (kept).
- `assemble`: the final video of a join / edit, streamed: pieces (frame ranges of source clips or of
  bridges) are decoded one frame at a time (in a prefetch thread, a few frames ahead) and encoded once
  (H.264, frame threads); decoded YUV 4:2:0 frames of the right size go to the encoder without an RGB
  round trip. Audio is carried through: each clip piece brings the audio under its frames, a bridge piece
  brings silence of its duration; sample boundaries are computed from the cumulative frame count, so audio
  never drifts from the picture. The AAC track is encoded in a thread beside the video, then both are
  muxed without re-encoding. Memory does not grow with the length of the video.
- `splice_lossless` (inpaint_frames): frames outside [start, end) are handed to the encoder exactly as
  the decoder produced them (same pixel format, no colour conversion) and encoded losslessly: libx264 with
  qp=0 for 8-bit YUV 4:2:0/4:2:2/4:4:4 sources (MP4), FFV1 (Matroska) otherwise. Decoding the output gives
  those frames bit for bit. Audio packets are copied unchanged.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from source.errors import InvalidInput
from source.media.images import resize_frame
from source.media.travel_guide import GENERATE, GREY, KEEP
from source.media.video_io import VideoWriter, iter_frames

ProgressFn = Callable[[float, str], None]
AUDIO_RATE = 48000
AUDIO_LAYOUT = "stereo"
X264_LOSSLESS_FORMATS = ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p")


# ----------------------------------------------------------------------------------------- reading
def read_range(path: Path, start: int, end: int, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """Frames [start, end) of a video as RGB (resized to size=(w, h) when given); decodes up to `end`."""
    out: list[np.ndarray] = []
    if end <= start:
        return out
    for i, frame in enumerate(iter_frames(path)):
        if i >= end:
            break
        if i >= start:
            out.append(resize_frame(frame, size) if size else frame)
    if len(out) != end - start:
        raise InvalidInput(f"{Path(path).name} has fewer frames than needed: frames [{start}, {end}) were "
                           f"asked for, {start + len(out)} exist")
    return out


def has_audio(path: Path) -> bool:
    try:
        with av.open(str(path)) as c:
            return bool(c.streams.audio)
    except av.error.FFmpegError:  # type: ignore[attr-defined]
        return False


# ----------------------------------------------------------------------------------------- guide
def write_bridge_guide(guide_path: Path, mask_path: Path, *, before: Sequence[np.ndarray], gap: int,
                       after: Sequence[np.ndarray], size: tuple[int, int], fps: float) -> int:
    """Guide + mask of len(before) + gap + len(after) frames at size=(w, h); returns the frame count."""
    if gap < 1:
        raise ValueError(f"a bridge needs at least one frame to generate, got gap={gap}")
    width, height = size
    grey = np.full((height, width, 3), GREY, dtype=np.uint8)
    black = np.full((height, width, 3), KEEP, dtype=np.uint8)
    white = np.full((height, width, 3), GENERATE, dtype=np.uint8)
    # lossless-ish settings: these videos are inputs to the model, not for people
    with VideoWriter(guide_path, fps=fps, crf=10) as guide, VideoWriter(mask_path, fps=fps, crf=0) as mask:
        for frame in before:
            guide.write(resize_frame(frame, size))
            mask.write(black)
        for _ in range(gap):
            guide.write(grey)
            mask.write(white)
        for frame in after:
            guide.write(resize_frame(frame, size))
            mask.write(black)
    return guide.count


# ----------------------------------------------------------------------------------------- assembly
@dataclass(frozen=True)
class Source:
    """Frames [start, end) of `path`; `audio` says whether that piece's own audio is used (else silence)."""

    path: Path
    start: int
    end: int
    audio: bool


def _piece_frames(src: Source, size: tuple[int, int]) -> Iterator[np.ndarray | av.VideoFrame]:
    """The piece's frames: decoded YUV 4:2:0 frames of the right size go to the encoder as they are (a
    round trip through RGB would subsample the chroma twice and cost ~3 dB); others as resized RGB."""
    got = 0
    container = av.open(str(src.path))
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i >= src.end:
                break
            if i >= src.start:
                got += 1
                if (frame.width, frame.height) == size and frame.format.name == "yuv420p":
                    yield frame
                else:
                    yield resize_frame(frame.to_ndarray(format="rgb24"), size)
    finally:
        container.close()
    if got != src.end - src.start:
        raise InvalidInput(f"{src.path.name} ended after {src.start + got} frames; frames [{src.start}, "
                           f"{src.end}) were planned")


def _encode_stream(frames: Iterable[np.ndarray | av.VideoFrame], path: Path, *, fps: float,
                   size: tuple[int, int], crf: int, progress: ProgressFn | None, total: int) -> int:
    """H.264 yuv420p at size=(w, h) (even sides) from RGB arrays or decoded frames; returns the count."""
    rate = Fraction(fps).limit_denominator(1001)
    every = max(1, total // 50)
    count = 0
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        options = {"crf": str(crf), "preset": "veryfast"}
        if size[0] * size[1] < 64 * 64 + 1:
            options["x264-params"] = "mbtree=0"  # deterministic on tiny frames (see video_io.VideoWriter)
        stream.options = options
        # frame threads: about 2x the slice threads PyAV asks for by default (measured, bench/join_bench.py)
        stream.codec_context.thread_type = "FRAME"
        time_base = Fraction(1, 1) / rate
        for item in frames:
            if isinstance(item, np.ndarray):
                item = av.VideoFrame.from_ndarray(np.ascontiguousarray(item), format="rgb24")
            item.pts = count
            item.time_base = time_base
            item.pict_type = av.video.frame.PictureType.NONE
            for packet in stream.encode(item):
                out.mux(packet)
            count += 1
            if progress is not None and count % every == 0:
                progress(0.95 * count / max(total, 1), f"stitched {count}/{total} frames")
        for packet in stream.encode(None):
            out.mux(packet)
    return count


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


def _prefetch(items: Iterable, depth: int = 8) -> Iterator:
    """Run `items` (decoding) in a thread, `depth` items ahead of the consumer (encoding), so the two
    overlap. Errors are re-raised in the consumer; a consumer that stops early stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(x) -> bool:
        while not stop.is_set():
            try:
                q.put(x, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for x in items:
                if not put(x):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(_Failure(exc))

    worker = threading.Thread(target=run, name="assemble-decode", daemon=True)
    worker.start()
    try:
        while True:
            x = q.get()
            if x is _DONE:
                return
            if isinstance(x, _Failure):
                raise x.exc
            yield x
    finally:
        stop.set()
        worker.join(timeout=10)


def assemble(sources: Sequence[Source], output: Path, *, fps: float, size: tuple[int, int],
             crf: int = 12, progress: ProgressFn | None = None) -> int:
    """Concatenate the pieces into `output` (H.264, + AAC when any audio piece has audio); returns frames.
    crf 12: the clips go through exactly one more encode, which keeps them above 40 dB PSNR even on
    small, detailed frames. The audio track is encoded in a second thread while the video encodes (both
    encoders release the GIL), then the two are muxed without re-encoding."""
    output = Path(output)
    size = (size[0] - size[0] % 2, size[1] - size[1] % 2)  # yuv420p needs even sides
    total = sum(s.end - s.start for s in sources)
    video_tmp = output.with_name(f".{output.stem}.video.part.mp4")
    audio_tmp = output.with_name(f".{output.stem}.audio.part.m4a")
    try:
        audio_job = None
        pool = ThreadPoolExecutor(max_workers=1)
        try:
            if any(s.audio and has_audio(s.path) for s in sources):
                audio_job = pool.submit(_encode_audio, sources, audio_tmp, fps)
            stream = _prefetch(f for src in sources for f in _piece_frames(src, size))
            written = _encode_stream(stream, video_tmp, fps=fps, size=size, crf=crf, progress=progress,
                                     total=total)
            if audio_job is not None:
                audio_job.result()  # re-raises the audio thread's error, if any
        finally:
            pool.shutdown(wait=True)
        if audio_job is not None:
            _mux(video_tmp, audio_tmp, output)
        else:
            os.replace(video_tmp, output)
    finally:
        video_tmp.unlink(missing_ok=True)
        audio_tmp.unlink(missing_ok=True)
    return written


def _silence(samples: int) -> Iterator[np.ndarray]:
    for k in range(0, samples, AUDIO_RATE):
        yield np.zeros((2, min(AUDIO_RATE, samples - k)), dtype=np.float32)


def _audio_chunks(path: Path, first: int, samples: int) -> Iterator[np.ndarray]:
    """Exactly `samples` samples (fltp stereo at AUDIO_RATE) of path's audio from sample `first`, in chunks
    (never the whole piece in memory); silence where the file has no audio."""
    emitted = 0
    if samples <= 0:
        return
    try:
        container = av.open(str(path))
    except av.error.FFmpegError:  # type: ignore[attr-defined]
        yield from _silence(samples)
        return
    with container:
        if container.streams.audio:
            resampler = av.AudioResampler(format="fltp", layout=AUDIO_LAYOUT, rate=AUDIO_RATE)
            pos = None
            for frame in container.decode(container.streams.audio[0]):
                if pos is None:  # where the stream starts (the first frame's time)
                    start_t = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
                    pos = round(start_t * AUDIO_RATE)
                for rf in resampler.resample(frame):
                    data = rf.to_ndarray().reshape(2, -1)
                    lo = pos - first
                    hi = lo + data.shape[1]
                    pos += data.shape[1]
                    if hi <= emitted:
                        continue
                    if lo > emitted:  # the stream starts late or has a hole: silence up to it
                        gap = min(lo, samples) - emitted
                        yield from _silence(gap)
                        emitted += gap
                    if emitted >= samples:
                        break
                    a, b = emitted - lo, min(hi, samples) - lo
                    yield data[:, a:b]
                    emitted += b - a
                if emitted >= samples:
                    break
    yield from _silence(samples - emitted)


def _encode_audio(sources: Sequence[Source], path: Path, fps: float) -> None:
    """The AAC track of the assembled video: each piece's own audio under its frames, or silence."""
    with av.open(str(path), mode="w", format="mp4") as out:
        a_out = out.add_stream("aac", rate=AUDIO_RATE, layout=AUDIO_LAYOUT)
        frames_so_far = 0
        written = 0
        for src in sources:
            n = src.end - src.start
            # boundaries from the cumulative frame count: no rounding drift across many pieces
            end_sample = round((frames_so_far + n) * AUDIO_RATE / fps)
            count = end_sample - written
            chunks = _audio_chunks(src.path, round(src.start * AUDIO_RATE / fps), count) if src.audio \
                else _silence(count)
            for chunk in chunks:
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout=AUDIO_LAYOUT)
                af.sample_rate = AUDIO_RATE
                af.pts = written
                af.time_base = Fraction(1, AUDIO_RATE)
                written += chunk.shape[1]
                for packet in a_out.encode(af):
                    out.mux(packet)
            written = end_sample
            frames_so_far += n
        for packet in a_out.encode(None):
            out.mux(packet)


def _mux(video: Path, audio: Path, output: Path) -> None:
    """Video and audio packets into one MP4, without re-encoding."""
    part = output.with_name(f".{output.stem}.part{output.suffix}")
    try:
        with av.open(str(video)) as vin, av.open(str(audio)) as ain, av.open(str(part), mode="w") as out:
            pairs = [(vin, vin.streams.video[0]), (ain, ain.streams.audio[0])]
            outs = [out.add_stream_from_template(s) for _, s in pairs]
            for (container, stream), target in zip(pairs, outs):
                for packet in container.demux(stream):
                    if packet.dts is None:
                        continue
                    packet.stream = target
                    out.mux(packet)
        os.replace(part, output)
    finally:
        part.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------- lossless splice
def lossless_container(path: Path) -> tuple[str, str]:
    """(codec, file suffix) of the lossless re-encode of `path`'s video: libx264 qp=0 in MP4 when its pixel
    format allows, FFV1 in Matroska otherwise."""
    with av.open(str(path)) as c:
        pix = c.streams.video[0].codec_context.pix_fmt or ""
    return ("libx264", ".mp4") if pix in X264_LOSSLESS_FORMATS else ("ffv1", ".mkv")


def splice_lossless(src: Path, start: int, end: int, new_frames: Iterable[np.ndarray], output: Path,
                    progress: ProgressFn | None = None) -> dict:
    """`src` with frames [start, end) replaced by `new_frames` (RGB, resized to the video's size); every
    other frame decodes bit-identical to the input's. Returns {frames, codec, pix_fmt}."""
    output = Path(output)
    part = output.with_name(f".{output.stem}.part{output.suffix}")
    replacements = iter(new_frames)
    try:
        with av.open(str(src)) as cin, av.open(str(part), mode="w") as out:
            vin = cin.streams.video[0]
            vin.thread_type = "AUTO"
            ctx_in = vin.codec_context
            pix, width, height = ctx_in.pix_fmt, ctx_in.width, ctx_in.height
            codec = "libx264" if pix in X264_LOSSLESS_FORMATS else "ffv1"
            rate = vin.average_rate or vin.guessed_rate or Fraction(16)
            vout = out.add_stream(codec, rate=rate)
            vout.width, vout.height, vout.pix_fmt = width, height, pix
            vout.codec_context.time_base = Fraction(1, 1) / Fraction(rate)
            for attr in ("color_range", "colorspace", "color_primaries", "color_trc"):
                try:
                    setattr(vout.codec_context, attr, getattr(ctx_in, attr))
                except (AttributeError, TypeError, ValueError):
                    pass  # not settable in this PyAV: the defaults match what our writers produce
            vout.options = {"qp": "0", "preset": "veryfast"} if codec == "libx264" else {"level": "3"}
            audio_in = list(cin.streams.audio)[:1]  # the first audio track is carried (as everywhere else)
            audio_out = [out.add_stream_from_template(a) for a in audio_in]
            total = vin.frames or 0
            i = 0
            for frame in cin.decode(vin):
                if start <= i < end:
                    try:
                        rgb = next(replacements)
                    except StopIteration:
                        raise InvalidInput(f"only {i - start} new frames for the range [{start}, {end})") from None
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(resize_frame(rgb, (width, height))),
                                                       format="rgb24").reformat(format=pix)
                frame.pts = i
                frame.time_base = vout.codec_context.time_base
                frame.pict_type = av.video.frame.PictureType.NONE
                for packet in vout.encode(frame):
                    out.mux(packet)
                i += 1
                if progress is not None and total and i % max(1, total // 20) == 0:
                    progress(i / total, f"spliced {i}/{total} frames")
            for packet in vout.encode(None):
                out.mux(packet)
            if i < end:
                raise InvalidInput(f"{Path(src).name} has {i} frames; the range [{start}, {end}) runs past its end")
            if audio_in:  # the audio is unchanged: copy its packets
                with av.open(str(src)) as ain:
                    for packet in ain.demux(ain.streams.audio[0]):
                        if packet.dts is None:
                            continue
                        packet.stream = audio_out[0]
                        out.mux(packet)
        os.replace(part, output)
    finally:
        part.unlink(missing_ok=True)
    how = f"libx264 qp=0 {pix} (MP4)" if codec == "libx264" else f"FFV1 {pix} (Matroska)"
    return {"frames": i, "codec": codec, "pix_fmt": pix, "lossless": how}
