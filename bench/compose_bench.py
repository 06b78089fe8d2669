"""Compositor and speech benchmark; prints one JSON object.

    .venv/bin/python bench/compose_bench.py [--seconds 4] [--memory-minutes 1,10] [--memory-size 320x180]

Parts:
- compositor: frames/s of source.compose.render for a narrated-style timeline (3 stills with Ken Burns,
  cross-fades, captions with gradient bands, one audio track) at 1280x720 and 1920x1080, against the same
  outputs made by hand-written ffmpeg commands (one graph: scale/crop, zoompan, xfade, libass, x264 with the
  same settings; then the poster frame) run in the same bench. ratio = reference time / compositor time
  (target >= 0.8); ffmpeg_video_only_s is the reference without its poster.
- speech: real-time factor (seconds of audio per second of wall time) of espeak-ng and piper (when
  installed): the first call (piper: helper start + voice load) and a warm call, alone and with alignment.
- memory: peak resident memory of the render (ffmpeg child + this process) for 1 vs 10 minutes of output,
  each in a fresh process. At a small frame size by default, so 10 minutes fit in a bench run; memory of a
  streaming graph depends on the frame size, not the length, and this measures the "not the length" part.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

IMAGES = REPO / "samples" / "images"
STILLS = ["astronaut.png", "rocket.png", "coffee.png"]


def _tone(path: Path, seconds: float) -> Path:
    import numpy as np

    rate = 22050
    t = np.arange(int(seconds * rate)) / rate
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes((np.sin(2 * np.pi * 330 * t) * 8000).astype("<i2").tobytes())
    return path


def _timeline(width: int, height: int, seconds: float, audio: Path, fps: float = 24.0):
    from source.compose.timeline import Timeline

    per = seconds / 3 + 0.5 * 2 / 3  # three clips overlapping by 0.5 s make `seconds`
    clips = [{"kind": "image", "source": str(IMAGES / name), "duration": per, "ken_burns": {},
              "transition_in": {"type": "crossfade", "duration": 0.5} if i else {"type": "cut"}}
             for i, name in enumerate(STILLS)]
    caps = [{"text": f"Caption number {i + 1}, spoken now.", "start": i * seconds / 3 + 0.3,
             "end": (i + 1) * seconds / 3 - 0.3} for i in range(3)]
    return Timeline.model_validate({"width": width, "height": height, "fps": fps, "clips": clips, "captions": caps,
                                    "caption_style": {"size": height // 18, "band": True},
                                    "audio": [{"source": str(audio), "role": "speech"}],
                                    "output": {"quality": "medium", "speed": "fast"}})


def _render(tl, work: Path):
    from source.compose.render import render

    return render(tl, output=work / "out.mp4", poster=work / "poster.png", work=work / "w",
                  resolve=lambda ref, what: Path(ref))


def _reference_cmd(tl, work: Path, audio: Path) -> list[str]:
    """The same video as one hand-written ffmpeg command (the graph a person would write)."""
    from source.compose.captions import build_ass, fonts_dir
    from source.compose.render import _ken_burns_filter, encoder_args, ffmpeg_exe

    w, h, fps = tl.width, tl.height, int(tl.fps)
    ass = work / "ref.ass"
    build_ass(tl).save(str(ass))
    frames, starts = tl.clip_frames(), tl.clip_start_frames()
    args, graph = [], []
    for i, clip in enumerate(tl.clips):
        args += ["-i", str(IMAGES / STILLS[i])]
        graph.append(f"[{i}:v]scale={2 * w}:{2 * h}:force_original_aspect_ratio=increase:flags=lanczos,"
                     f"crop={2 * w}:{2 * h},{_ken_burns_filter(clip.ken_burns, frames[i], w, h, f'{fps}/1')},"
                     f"format=yuv420p,settb=AVTB[c{i}]")
    graph.append(f"[c0][c1]xfade=transition=fade:duration=0.5:offset={starts[1] / fps:.6f}[x1]")
    graph.append(f"[x1][c2]xfade=transition=fade:duration=0.5:offset={starts[2] / fps:.6f},"
                 f"ass=filename={ass}:fontsdir={fonts_dir()}[v]")
    graph.append(f"[3:a]aresample=48000,apad=whole_dur={tl.duration:.6f},atrim=end={tl.duration:.6f}[a]")
    return [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args, "-i", str(audio), "-filter_complex",
            ";".join(graph), "-map", "[v]", *encoder_args("libx264", tl.output), "-map", "[a]", "-c:a", "aac",
            "-b:a", "160k", "-movflags", "+faststart", str(work / "ref.mp4")]


def _poster_cmd(tl, video: Path, png: Path) -> list[str]:
    from source.compose.render import ffmpeg_exe

    t = tl.clip_frames()[0] // 2 / tl.fps
    return [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-ss", f"{t:.6f}", "-i", str(video),
            "-frames:v", "1", "-update", "1", str(png)]


def bench_compositor(seconds: float) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        audio = _tone(work / "speech.wav", seconds)
        for w, h in ((1280, 720), (1920, 1080)):
            tl = _timeline(w, h, seconds, audio)
            t0 = time.perf_counter()
            subprocess.run(_reference_cmd(tl, work, audio), check=True)
            ref_video = time.perf_counter() - t0
            subprocess.run(_poster_cmd(tl, work / "ref.mp4", work / "ref.png"), check=True)
            ref = time.perf_counter() - t0
            t0 = time.perf_counter()
            res = _render(tl, work)
            ours = time.perf_counter() - t0
            out[f"{w}x{h}"] = {"frames": tl.total_frames, "compositor_s": round(ours, 2),
                               "compositor_fps": round(tl.total_frames / ours, 1), "ffmpeg_s": round(ref, 2),
                               "ffmpeg_fps": round(tl.total_frames / ref, 1), "ratio": round(ref / ours, 3),
                               "ffmpeg_video_only_s": round(ref_video, 2),
                               "encoder": res.encoder}
    return out


def bench_speech() -> dict:
    from source.speech.engines import get_engine
    from source.speech.timings import align_words, wav_info

    text = ("The video is made in one pass. Speech comes first, then the captions follow "
            "the words exactly, and the music steps back while someone is talking.")
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name in ("espeak", "piper"):
            try:
                engine = get_engine(name)
            except Exception as exc:  # noqa: BLE001 - an engine missing here is reported, not fatal
                out[name] = {"skipped": str(exc)}
                continue
            wav = Path(d) / f"{name}.wav"
            t0 = time.perf_counter()
            engine.synthesize(text, engine.check_voice(None), 1.0, wav)
            cold = time.perf_counter() - t0  # includes starting a helper process and loading the voice
            t0 = time.perf_counter()
            engine.synthesize(text, engine.check_voice(None), 1.0, wav)
            synth = time.perf_counter() - t0
            align_words("warm up", wav)  # the decoder loads once per process
            t0 = time.perf_counter()
            words = align_words(text, wav)
            align = time.perf_counter() - t0
            dur = wav_info(wav)[0]
            out[name] = {"audio_s": round(dur, 2), "first_call_s": round(cold, 3),
                         "rtf_first_call": round(dur / cold, 1), "synth_s": round(synth, 3),
                         "rtf": round(dur / synth, 1),
                         "align_s": round(align, 3), "rtf_with_alignment": round(dur / (synth + align), 1),
                         "aligned_words": len(words or [])}
    return out


def _memory_child(minutes: float, size: str) -> dict:
    w, h = (int(v) for v in size.split("x"))
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        audio = _tone(work / "speech.wav", 30.0)
        tl = _timeline(w, h, minutes * 60, audio)
        t0 = time.perf_counter()
        _render(tl, work)
        took = time.perf_counter() - t0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"minutes": minutes, "frames": tl.total_frames, "seconds": round(took, 1),
            "peak_ffmpeg_mb": round(kids, 1), "peak_python_mb": round(own, 1)}


def bench_memory(minutes: list[float], size: str) -> dict:
    runs = []
    for m in minutes:
        r = subprocess.run([sys.executable, __file__, "--memory-child", str(m), "--memory-size", size],
                           capture_output=True, text=True, check=True)
        runs.append(json.loads(r.stdout))
    first, last = runs[0]["peak_ffmpeg_mb"], runs[-1]["peak_ffmpeg_mb"]
    return {"size": size, "runs": runs, "ffmpeg_peak_growth": round(last / first, 3) if first else None}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--memory-minutes", default="1,10")
    ap.add_argument("--memory-size", default="320x180")
    ap.add_argument("--memory-child", type=float, default=None)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: compositor,speech,memory")
    args = ap.parse_args()
    if args.memory_child is not None:
        print(json.dumps(_memory_child(args.memory_child, args.memory_size)))
        return 0
    skip = set(filter(None, args.skip.split(",")))
    result: dict = {"bench": "compose"}
    if "compositor" not in skip:
        result["compositor"] = bench_compositor(args.seconds)
    if "speech" not in skip:
        result["speech"] = bench_speech()
    if "memory" not in skip:
        result["memory"] = bench_memory([float(m) for m in args.memory_minutes.split(",")], args.memory_size)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
