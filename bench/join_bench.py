"""Join-clips final stitch benchmark; prints one JSON object.

    .venv/bin/python bench/join_bench.py            # 3 clips of 81 frames at 832x480, 2 bridges of 69
    .venv/bin/python bench/join_bench.py --quick    # shorter clips, for a smoke check

The stitch alone, with pre-made bridge videos (no generation): the pieces planned by `plan_join`
(context 8, gap 53, no replace: 3*81 + 2*53 = 349 frames) assembled by `source.media.editing_media.assemble`
(the work of a `join_clips_stitch` task), once without and once with the clips' audio. Reference, in the
same run: ffmpeg (imageio-ffmpeg's binary) cutting the same frame ranges with `trim` and joining them with
`concat`, libx264 with the same crf and preset. Frames/s of each (best of --repeats rounds, interleaved) and
our/ffmpeg ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import av
import numpy as np

from source.editing_plan import plan_join
from source.media.editing_media import Source, assemble
from source.media.stitch import count_frames
from source.media.video_io import write_video

SIZE = (832, 480)
FPS = 16
CRF = 12


def _texture(width: int, height: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    tile = (rng.random((height // 8 + 1, width // 8 + 1, 3)) * 255).astype(np.uint8)
    tex = np.repeat(np.repeat(tile, 8, 0), 8, 1)[:height, :width]
    for k in range(n):
        yield np.roll(tex, 3 * k, axis=1)


def _add_tone(src: Path, dst: Path, seconds: float, freq: float) -> None:
    with av.open(str(src)) as vin, av.open(str(dst), "w") as out:
        vs = out.add_stream_from_template(vin.streams.video[0])
        au = out.add_stream("aac", rate=48000, layout="stereo")
        for p in vin.demux(vin.streams.video[0]):
            if p.dts is not None:
                p.stream = vs
                out.mux(p)
        t = np.arange(int(48000 * seconds)) / 48000
        x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        data = np.stack([x, x])
        for k in range(0, data.shape[1], 1024):
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, k:k + 1024]), format="fltp", layout="stereo")
            f.sample_rate, f.pts = 48000, k
            for p in au.encode(f):
                out.mux(p)
        for p in au.encode(None):
            out.mux(p)


def ffmpeg_reference(sources: list[Source], out: Path) -> None:
    import imageio_ffmpeg

    inputs: list[Path] = []
    for s in sources:
        if s.path not in inputs:
            inputs.append(s.path)
    args = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error"]
    for p in inputs:
        args += ["-i", str(p)]
    chains, labels = [], []
    for k, s in enumerate(sources):
        chains.append(f"[{inputs.index(s.path)}:v]trim=start_frame={s.start}:end_frame={s.end},"
                      f"setpts=PTS-STARTPTS[p{k}]")
        labels.append(f"[p{k}]")
    chains.append(f"{''.join(labels)}concat=n={len(sources)}:v=1:a=0[out]")
    args += ["-filter_complex", ";".join(chains), "-map", "[out]", "-c:v", "libx264", "-preset", "veryfast",
             "-crf", str(CRF), "-pix_fmt", "yuv420p", "-r", str(FPS), str(out)]
    subprocess.run(args, check=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    clip_len = 25 if args.quick else 81
    context, gap = (4, 13) if args.quick else (8, 53)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clips, clips_audio = [], []
        for i in range(3):
            p = work / f"clip{i}.mp4"
            write_video(_texture(*SIZE, clip_len, i), p, fps=FPS)
            clips.append(p)
            pa = work / f"clip{i}-audio.mp4"
            _add_tone(p, pa, clip_len / FPS, 330.0 * (i + 1))
            clips_audio.append(pa)
        plan = plan_join([clip_len] * 3, context=context, gap=gap)
        bridges = []
        for b in plan.bridges:
            p = work / f"bridge{b.index}.mp4"
            write_video(_texture(*SIZE, b.generation_frames, 10 + b.index), p, fps=FPS)
            bridges.append(p)

        def sources(clip_paths):
            return [Source(clip_paths[x.index] if x.kind == "clip" else bridges[x.index], x.start, x.end,
                           audio=x.kind == "clip") for x in plan.pieces]

        # best of `repeats` rounds, the contenders interleaved, so a busy machine hurts all of them alike
        runs: dict[str, list[float]] = {"ours": [], "ours_with_audio": [], "ffmpeg_trim_concat": []}
        for _ in range(args.repeats):
            for name, srcs in (("ours", sources(clips)), ("ours_with_audio", sources(clips_audio))):
                out = work / f"{name}.mp4"
                t0 = time.perf_counter()
                n = assemble(srcs, out, fps=FPS, size=SIZE, crf=CRF)
                runs[name].append(time.perf_counter() - t0)
                assert n == count_frames(out) == plan.expected_frames
            out = work / "ffmpeg.mp4"
            t0 = time.perf_counter()
            ffmpeg_reference(sources(clips), out)
            runs["ffmpeg_trim_concat"].append(time.perf_counter() - t0)
            assert count_frames(out) == plan.expected_frames
        results = {name: {"seconds": round(min(t), 3), "frames_per_s": round(plan.expected_frames / min(t), 1)}
                   for name, t in runs.items()}
        print(json.dumps({
            "bench": "join_clips_stitch", "size": f"{SIZE[0]}x{SIZE[1]}", "clips": 3, "clip_frames": clip_len,
            "bridges": len(bridges), "bridge_frames": plan.bridges[0].generation_frames,
            "output_frames": plan.expected_frames, "crf": CRF, **results,
            "ours_vs_ffmpeg": round(results["ours"]["frames_per_s"] / results["ffmpeg_trim_concat"]["frames_per_s"], 2),
        }, indent=2))


if __name__ == "__main__":
    main()
