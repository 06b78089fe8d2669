"""Render a Timeline in one pass: one ffmpeg filtergraph (the `imageio-ffmpeg` build: libass, zoompan,
xfade, x264/x265/vpx/svt-av1, NVENC) -> MP4 with an AAC track when there is audio, plus a PNG poster
frame from the same pass.

Why ffmpeg and not frames through Python: the graph streams (memory stays flat in the video's length),
runs multi-threaded C filters, and keeps every pixel out of the interpreter. Python only prepares inputs
(untrusted stills are decoded and cover-fitted by Pillow, so ffmpeg never parses a hostile image), writes
the graph and the ASS script into the task's work folder, and follows `-progress` to report progress and
honour cancellation.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from PIL import Image

from source.compose.captions import build_ass, fonts_dir
from source.compose.timeline import AudioLayer, ColourClip, ImageClip, KenBurns, Timeline, VideoClip
from source.media.images import load_image_rgb
from source.task_context import InvalidInput, TaskError, TransientError

# Ken Burns stills are prepared at this multiple of the output size: zoompan crops on whole pixels, so a
# finer grid makes slow zooms/pans smooth instead of stepping.
KEN_BURNS_OVERSAMPLE = 2.0
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+@-]+$")
_XFADE = {"crossfade": "fade", "fade": "fade", "dissolve": "dissolve", "fade_black": "fadeblack"}
_EASING = {
    "linear": "P",
    "ease_in": "P*P",
    "ease_out": "(1-(1-P)*(1-P))",
    "ease_in_out": "(P*P*(3-2*P))",
}


class RenderError(TaskError):
    """ffmpeg could not render the timeline (the message carries its last lines)."""


@dataclass
class RenderResult:
    video: Path
    poster: Path
    frames: int
    duration: float
    width: int
    height: int
    fps: float
    codec: str
    encoder: str
    has_audio: bool
    audio_duration: float | None
    seconds: float
    adjustments: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        d = asdict(self)
        d["video"], d["poster"] = str(self.video), str(self.poster)
        return d


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


# ------------------------------------------------------------------------------------------ encoders
_QUALITY = {  # CRF-like values per encoder family, low -> ultra
    "libx264": (28, 23, 19, 16), "libx265": (32, 28, 24, 20), "libvpx-vp9": (40, 33, 28, 24),
    "libsvtav1": (42, 35, 29, 23), "libaom-av1": (42, 35, 29, 23), "nvenc": (30, 24, 20, 17),
}
_LEVELS = ("low", "medium", "high", "ultra")
_CPU = {"h264": "libx264", "h265": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1"}
_GPU = {"h264": "h264_nvenc", "h265": "hevc_nvenc", "av1": "av1_nvenc"}
_probe_cache: dict[str, bool] = {}
_probe_lock = threading.Lock()


def _encoder_listed(name: str) -> bool:
    key = "listed:" + name
    with _probe_lock:
        if key not in _probe_cache:
            out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True,
                                 timeout=30).stdout
            _probe_cache[key] = any(line.split()[1:2] == [name] for line in out.splitlines() if line.strip())
        return _probe_cache[key]


def encoder_opens(name: str) -> bool:
    """Whether `name` really encodes here (NVENC is compiled in everywhere but needs a GPU and driver)."""
    if not _encoder_listed(name):
        return False
    with _probe_lock:
        if name not in _probe_cache:
            try:
                r = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                                    "color=s=256x256:r=1:d=1", "-frames:v", "1", "-c:v", name, "-f", "null", "-"],
                                   capture_output=True, timeout=30)
                _probe_cache[name] = r.returncode == 0
            except (subprocess.TimeoutExpired, OSError):
                _probe_cache[name] = False
        return _probe_cache[name]


def pick_encoder(codec: str, mode: str) -> str:
    if mode in ("auto", "gpu") and codec in _GPU and encoder_opens(_GPU[codec]):
        return _GPU[codec]
    name = _CPU[codec]
    if codec == "av1" and not _encoder_listed(name):
        name = "libaom-av1"
    if not _encoder_listed(name):
        raise InvalidInput(f"no {codec} encoder in this ffmpeg build")
    return name


def encoder_args(encoder: str, out) -> list[str]:
    q = _LEVELS.index(out.quality)
    speed = ("fast", "balanced", "slow").index(out.speed)
    family = "nvenc" if encoder.endswith("_nvenc") else encoder
    crf = _QUALITY[family][q]
    args = ["-c:v", encoder]
    if family == "nvenc":
        args += ["-preset", ("p1", "p4", "p6")[speed], "-rc", "vbr"]
        args += ["-b:v", out.bitrate] if out.bitrate else ["-cq", str(crf), "-b:v", "0"]
    elif family in ("libx264", "libx265"):
        args += ["-preset", ("veryfast", "fast", "slow")[speed]]
        args += ["-b:v", out.bitrate, "-maxrate", out.bitrate, "-bufsize", out.bitrate] if out.bitrate \
            else ["-crf", str(crf)]
        if family == "libx265":
            args += ["-tag:v", "hvc1", "-x265-params", "log-level=error"]
    elif family == "libvpx-vp9":
        args += ["-deadline", "realtime" if speed == 0 else "good", "-cpu-used", ("8", "4", "2")[speed],
                 "-row-mt", "1"]
        args += ["-b:v", out.bitrate] if out.bitrate else ["-crf", str(crf), "-b:v", "0"]
    elif family == "libsvtav1":
        args += ["-preset", ("10", "8", "5")[speed]]
        args += ["-b:v", out.bitrate] if out.bitrate else ["-crf", str(crf)]
    else:  # libaom-av1
        args += ["-cpu-used", ("8", "6", "4")[speed], "-row-mt", "1"]
        args += ["-b:v", out.bitrate] if out.bitrate else ["-crf", str(crf), "-b:v", "0"]
    return args + ["-pix_fmt", "yuv420p"]


# ------------------------------------------------------------------------------------------ inputs
def _graph_path(path: Path, spare: Path) -> str:
    """A path to write inside the filtergraph text (the ASS script, the fonts folder). Filtergraph quoting has
    two nested levels; rather than escape, a path with any special character is copied under `spare`, a
    fresh temp folder whose name is plain."""
    if _SAFE_PATH.match(str(path)):
        return str(path)
    target = spare / f"p{len(list(spare.iterdir()))}{path.suffix}"
    if path.is_dir():
        shutil.copytree(path, target)
    else:
        shutil.copyfile(path, target)
    return str(target)


def _fit_image(src: Path, size: tuple[int, int], fit: str, background: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    rgb = load_image_rgb(src)  # InvalidInput with a clear message for anything that is not an image
    im = Image.fromarray(rgb)
    w, h = size
    if fit == "cover":
        scale = max(w / im.width, h / im.height)
        rw, rh = max(w, round(im.width * scale)), max(h, round(im.height * scale))
        im = im.resize((rw, rh), Image.LANCZOS)
        left, top = (rw - w) // 2, (rh - h) // 2
        return im.crop((left, top, left + w, top + h))
    scale = min(w / im.width, h / im.height)
    rw, rh = max(1, round(im.width * scale)), max(1, round(im.height * scale))
    canvas = Image.new("RGB", (w, h), background)
    canvas.paste(im.resize((rw, rh), Image.LANCZOS), ((w - rw) // 2, (h - rh) // 2))
    return canvas


def _media_duration(path: Path, kind: str) -> float:
    """Duration in seconds of a video/audio file, with InvalidInput when it cannot be opened."""
    import av

    try:
        with av.open(str(path)) as c:
            streams = c.streams.video if kind == "video" else c.streams.audio
            if not streams:
                raise InvalidInput(f"{path.name} has no {kind} stream")
            s = streams[0]
            if s.duration is not None and s.time_base is not None:
                return float(s.duration * s.time_base)
            if c.duration is not None:
                return c.duration / 1_000_000
    except InvalidInput:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder complaint means the file is unusable
        raise InvalidInput(f"{path.name} is not a readable {kind} file ({type(exc).__name__})") from None
    raise InvalidInput(f"{path.name}: cannot tell its duration")


def _rate(fps: float) -> str:
    f = Fraction(fps).limit_denominator(1001)
    return f"{f.numerator}/{f.denominator}"


# ------------------------------------------------------------------------------------------ the graph
@dataclass
class _Plan:
    args: list[str]
    graph: list[str]
    n_inputs: int = 0
    adjustments: list[str] = field(default_factory=list)
    cleanup: list[Path] = field(default_factory=list)  # temp folders to remove after the render

    def add_input(self, *args: str) -> int:
        self.args += list(args)
        self.n_inputs += 1
        return self.n_inputs - 1


def _ken_burns_filter(kb: KenBurns, n: int, w: int, h: int, rate: str) -> str:
    p = f"(on/{max(1, n - 1)})"
    e = _EASING[kb.easing].replace("P", p)
    z = f"({kb.start_zoom}+({kb.end_zoom - kb.start_zoom})*{e})"
    fx = f"({kb.start_x}+({kb.end_x - kb.start_x})*{e})"
    fy = f"({kb.start_y}+({kb.end_y - kb.start_y})*{e})"
    # the focus point is centred where possible, clamped so the crop never leaves the picture
    x = f"max(0,min(iw-iw/zoom,{fx}*iw-iw/zoom/2))"
    y = f"max(0,min(ih-ih/zoom,{fy}*ih-ih/zoom/2))"
    return f"zoompan=z='{z}':x='{x}':y='{y}':d={n}:s={w}x{h}:fps={rate}"


def _visual_clip(plan: _Plan, tl: Timeline, i: int, clip, n: int, resolve, work: Path) -> str:
    w, h, rate = tl.width, tl.height, _rate(tl.fps)
    label = f"c{i}"
    if isinstance(clip, ColourClip):
        chain = f"color=c=0x{clip.colour.lstrip('#')[:6]}:s={w}x{h}:r={rate}:d={n / tl.fps + 1:.6f}"
    elif isinstance(clip, ImageClip):
        src = resolve(clip.source, f"clips[{i}] image")
        if clip.ken_burns is not None:
            big = (int(w * KEN_BURNS_OVERSAMPLE) // 2 * 2, int(h * KEN_BURNS_OVERSAMPLE) // 2 * 2)
            still = work / f"still_{i:04d}.bmp"
            _fit_image(src, big, clip.fit).save(still)
            k = plan.add_input("-framerate", rate, "-i", "file:" + str(still))
            chain = f"[{k}:v]{_ken_burns_filter(clip.ken_burns, n, w, h, rate)}"
        else:
            still = work / f"still_{i:04d}.bmp"
            _fit_image(src, (w, h), clip.fit).save(still)
            k = plan.add_input("-loop", "1", "-framerate", rate, "-i", "file:" + str(still))
            chain = f"[{k}:v]null"
    else:
        assert isinstance(clip, VideoClip)
        src = resolve(clip.source, f"clips[{i}] video")
        length = _media_duration(src, "video") - clip.trim_start
        if length <= 0:
            raise InvalidInput(f"clips[{i}]: trim_start {clip.trim_start}s is past the end of the video")
        if length + 0.5 / tl.fps < n / tl.fps:
            plan.adjustments.append(f"clips[{i}]: the video lasts {length:.2f}s, its last frame is held to "
                                    f"{n / tl.fps:.2f}s")
        link = plan.add_input(*(["-ss", f"{clip.trim_start:.6f}"] if clip.trim_start else []), "-i",
                              "file:" + str(src))  # file: so no name is read as a protocol
        fit = (f"scale={w}:{h}:force_original_aspect_ratio=increase:flags=bicubic,crop={w}:{h}"
               if clip.fit == "cover" else
               f"scale={w}:{h}:force_original_aspect_ratio=decrease:flags=bicubic,pad={w}:{h}:(ow-iw)/2:(oh-ih)/2")
        chain = (f"[{link}:v]fps={rate},{fit},tpad=stop_mode=clone:stop_duration={n / tl.fps + 1:.6f}")
    plan.graph.append(f"{chain},trim=end_frame={n},setpts=PTS-STARTPTS,setsar=1,format=yuv420p,"
                      f"settb=AVTB[{label}]")
    return label


def _audio_layers(plan: _Plan, tl: Timeline, resolve) -> str | None:
    if not tl.audio:
        return None
    total = tl.duration
    spans: list[tuple[float, float]] = []
    prepared: list[tuple[int, AudioLayer, float, Path]] = []
    for i, layer in enumerate(tl.audio):
        src = resolve(layer.source, f"audio[{i}]")
        available = _media_duration(src, "audio") - layer.trim_start
        if available <= 0:
            raise InvalidInput(f"audio[{i}]: trim_start {layer.trim_start}s is past the end of the file")
        length = min(available, layer.duration or available, max(0.0, total - layer.start))
        if layer.duration and layer.duration > available + 0.05:
            plan.adjustments.append(f"audio[{i}]: asked for {layer.duration:.2f}s, the file has {available:.2f}s")
        if length <= 0:
            plan.adjustments.append(f"audio[{i}] starts after the video ends; left out")
            continue
        if layer.role == "speech":
            spans.append((layer.start, layer.start + length))
        prepared.append((i, layer, length, src))
    duck = _duck_expression(spans, tl) if tl.ducking.enabled and spans else None
    labels = []
    for i, layer, length, src in prepared:
        k = plan.add_input("-i", "file:" + str(src))  # file: so no name is read as a protocol
        chain = (f"[{k}:a]aresample=48000,aformat=sample_fmts=fltp:channel_layouts=stereo,"
                 f"atrim=start={layer.trim_start:.6f}:duration={length:.6f},asetpts=PTS-STARTPTS,"
                 f"volume={layer.volume:.4f}")
        if layer.fade_in > 0:
            chain += f",afade=t=in:st=0:d={min(layer.fade_in, length):.4f}"
        if layer.fade_out > 0:
            fo = min(layer.fade_out, length)
            chain += f",afade=t=out:st={length - fo:.4f}:d={fo:.4f}"
        if layer.start > 0:
            chain += f",adelay=delays={int(round(layer.start * 1000))}:all=1"
        if layer.role == "music" and duck:
            chain += f",volume=volume='{duck}':eval=frame"
        plan.graph.append(f"{chain}[a{i}]")
        labels.append(f"[a{i}]")
    if not labels:
        return None
    mix = "".join(labels) + (f"amix=inputs={len(labels)}:normalize=0:duration=longest," if len(labels) > 1 else
                             "anull,")
    plan.graph.append(f"{mix}apad=whole_dur={total:.6f},atrim=end={total:.6f}[aout]")
    return "[aout]"


def _duck_expression(spans: list[tuple[float, float]], tl: Timeline) -> str:
    """Gain over time for music: 1, ramping down to `gain` around every (merged) speech span."""
    r = max(tl.ducking.ramp, 0.01)
    merged: list[list[float]] = []
    for a, b in sorted(spans):
        if merged and a - merged[-1][1] < 2 * r:  # ramps would overlap: one dip, not two
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    bumps = "+".join(f"clip((t-{a - r:.4f})/{r:.4f},0,1)*clip(({b + r:.4f}-t)/{r:.4f},0,1)" for a, b in merged)
    return f"1-{1 - tl.ducking.gain:.4f}*({bumps})"


def build_plan(tl: Timeline, resolve: Callable[[str, str], Path], work: Path) -> tuple[_Plan, str, str | None, int]:
    """Inputs and filtergraph for the timeline: returns (plan, video label, audio label, poster frame index)."""
    plan = _Plan(args=[], graph=[])
    frames = tl.clip_frames()
    overlaps = tl.transition_frames()
    starts = tl.clip_start_frames()
    labels = [_visual_clip(plan, tl, i, c, frames[i], resolve, work) for i, c in enumerate(tl.clips)]
    acc = labels[0]
    for i in range(1, len(labels)):
        t = tl.clips[i].transition_in
        out = f"x{i}"
        if overlaps[i] == 0:
            plan.graph.append(f"[{acc}][{labels[i]}]concat=n=2:v=1:a=0[{out}]")
        else:
            kind = f"wipe{t.direction}" if t.type == "wipe" else _XFADE[t.type]
            plan.graph.append(f"[{acc}][{labels[i]}]xfade=transition={kind}:duration={overlaps[i] / tl.fps:.6f}:"
                              f"offset={starts[i] / tl.fps:.6f}[{out}]")
        acc = out
    total = tl.total_frames
    post = [f"trim=end_frame={total}"]
    if tl.fade_in > 0:
        post.append(f"fade=t=in:st=0:d={tl.fade_in:.4f}")
    if tl.fade_out > 0:
        post.append(f"fade=t=out:st={max(0.0, tl.duration - tl.fade_out):.4f}:d={tl.fade_out:.4f}")
    subs = build_ass(tl)
    if subs is not None:
        ass_path = work / "text.ass"
        subs.save(str(ass_path))
        spare = Path(tempfile.mkdtemp(prefix="compose-"))
        plan.cleanup.append(spare)
        post.append(f"ass=filename={_graph_path(ass_path, spare)}:fontsdir={_graph_path(fonts_dir(), spare)}")
    if tl.output.poster_time is not None:
        poster = min(total - 1, tl.frames(tl.output.poster_time))
    else:
        poster = min(total - 1, frames[0] // 2)
    post.append("format=yuv420p[vout]")
    plan.graph.append(f"[{acc}]" + ",".join(post))
    audio = _audio_layers(plan, tl, resolve)
    return plan, "[vout]", audio, poster


def render(tl: Timeline, *, output: Path, poster: Path, work: Path, resolve: Callable[[str, str], Path],
           progress: Callable[[float], None] | None = None, log: Callable[..., None] | None = None) -> RenderResult:
    """Render `tl` to `output` (MP4) and `poster` (PNG). `resolve(ref, what)` turns a source reference into a
    local path (raising InvalidInput); `progress(fraction)` may raise TaskCancelled to stop the render."""
    log = log or (lambda event, **f: None)
    t0 = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    plan, vlabel, alabel, poster_frame = build_plan(tl, resolve, work)
    tmp_video = output.with_name(f".{output.stem}.partial{output.suffix}")
    tmp_poster = poster.with_name(f".{poster.stem}.partial{poster.suffix}")
    try:
        encoder = pick_encoder(tl.output.codec, tl.output.encoder)
        if tl.output.encoder == "gpu" and not encoder.endswith("_nvenc"):
            plan.adjustments.append(f"no working GPU encoder for {tl.output.codec}; encoded with {encoder}")
        script = work / "graph.txt"
        script.write_text(";\n".join(plan.graph) + "\n")
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-progress", "pipe:1",
               "-nostats", *plan.args, "-/filter_complex", str(script), "-map", vlabel,
               *encoder_args(encoder, tl.output), "-r", _rate(tl.fps)]
        if alabel:
            cmd += ["-map", alabel, "-c:a", "aac", "-b:a", tl.output.audio_bitrate, "-ar", "48000"]
        cmd += ["-movflags", "+faststart", "-f", "mp4", str(tmp_video)]
        log("compose_render_start", frames=tl.total_frames, size=f"{tl.width}x{tl.height}", encoder=encoder,
            inputs=plan.n_inputs, graph_chars=sum(len(g) for g in plan.graph))
        _run_ffmpeg(cmd, tl.total_frames, work / "ffmpeg.log", progress)
        # The poster is decoded from the finished video, not taken from a second output of the render: ffmpeg
        # keeps its outputs in step, so a poster output still waiting for its frame makes it hold every frame
        # rendered before it (memory then grows with the video's length).
        _run_ffmpeg([ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", "-ss",
                     f"{poster_frame / tl.fps:.6f}", "-i", "file:" + str(tmp_video), "-frames:v", "1", "-update", "1",
                     "-f", "image2", "-c:v", "png", str(tmp_poster)], 1, work / "poster.log", None)
        frames, has_audio, audio_dur = _probe_output(tmp_video)
        if frames is not None and frames != tl.total_frames:
            raise RenderError(f"rendered {frames} frames, the timeline has {tl.total_frames}")
        os.replace(tmp_video, output)
        os.replace(tmp_poster, poster)
    finally:
        for leftover in (tmp_video, tmp_poster):
            leftover.unlink(missing_ok=True)
        for folder in plan.cleanup:
            shutil.rmtree(folder, ignore_errors=True)
    seconds = time.perf_counter() - t0
    return RenderResult(output, poster, tl.total_frames, tl.duration, tl.width, tl.height, tl.fps,
                        tl.output.codec, encoder, has_audio, audio_dur, round(seconds, 3), plan.adjustments)


def _run_ffmpeg(cmd: list[str], total_frames: int, log_path: Path, progress) -> None:
    with open(log_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        try:
            assert proc.stdout is not None
            last = 0.0
            for raw in proc.stdout:
                line = raw.decode(errors="replace").strip()
                if line.startswith("frame=") and progress is not None:
                    try:
                        done = int(line[6:])
                    except ValueError:
                        continue
                    now = time.monotonic()
                    if now - last > 0.5:
                        last = now
                        progress(min(0.99, done / max(1, total_frames)))
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if rc < 0:  # killed by a signal (e.g. the kernel's OOM killer): worth another try later
        raise TransientError(f"ffmpeg was killed by signal {-rc}")
    if rc != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-6:]
        raise RenderError(f"ffmpeg failed (exit {rc}): " + " | ".join(tail)[-1500:])


def _probe_output(path: Path) -> tuple[int | None, bool, float | None]:
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = v.frames or None
        if c.streams.audio:
            a = c.streams.audio[0]
            dur = float(a.duration * a.time_base) if a.duration is not None else None
            return frames, True, dur
    return frames, False, None


def write_sidecar(path: Path, record: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, path)

