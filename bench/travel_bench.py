"""Travel post-processing benchmark; prints one JSON object.

    .venv/bin/python bench/travel_bench.py            # full run (a few minutes on 2 CPU cores)
    .venv/bin/python bench/travel_bench.py --quick    # smaller sizes, for a smoke check

Parts:
- stitch_throughput: our streaming cross-fade stitch vs ffmpeg's `xfade` filter cross-fading the same
  segments (imageio-ffmpeg's binary, libx264 with the same crf/preset), in one run, alternating for
  --repeats rounds; frames/s, CPU seconds, output bytes and the per-round ratio (median reported).
- stitch_memory: peak memory of stitching 1 minute vs 10 minutes of 16 fps video (81-frame segments,
  12-frame overlaps) at a SMALL frame size (default 128x96, so the 10-minute inputs are quick to make);
  each stitch runs in a fresh subprocess that reports its max RSS and tracemalloc's peak.
- rife: RIFE pairs/s at 480x832 on this machine's CPU (and on CUDA when one is present).
- travel_wall_time: a 3-segment tiny travel through real worker processes with 1 and 2 workers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
if (SHARED / "models/rife/flownet.pkl").is_file():
    os.environ.setdefault("HEADLESS_RIFE_WEIGHTS", str(SHARED / "models/rife/flownet.pkl"))

import numpy as np

from source.media.video_io import write_video


def _moving_texture(width: int, height: int, n: int, seed: int):
    """A textured pan (so H.264 has real work and the blend touches real pixels)."""
    rng = np.random.default_rng(seed)
    tile = (rng.random((height // 8 + 1, width // 8 + 1, 3)) * 255).astype(np.uint8)
    tex = np.repeat(np.repeat(tile, 8, 0), 8, 1)[:height, :width]
    for k in range(n):
        yield np.roll(tex, 3 * k, axis=1)


def _photo_pan(width: int, height: int, n: int, index: int):
    """A slow pan over one of the sample photos: natural content, like a generated travel segment."""
    from PIL import Image

    name = ("astronaut", "chelsea", "coffee", "rocket")[index % 4]
    img = Image.open(REPO / "samples" / "images" / f"{name}.png").convert("RGB")
    big = np.asarray(img.resize((width + 2 * n + 8, height + 8), Image.LANCZOS))
    for k in range(n):
        yield big[4:4 + height, 2 * k:2 * k + width]


def make_segments(folder: Path, count: int, length: int, size: tuple[int, int], fps: float = 16,
                  content: str = "texture") -> list[Path]:
    source = _moving_texture if content == "texture" else _photo_pan
    paths = []
    for i in range(count):
        p = folder / f"seg{i:03d}.mp4"
        write_video(source(size[0], size[1], length, i), p, fps=fps)
        paths.append(p)
    return paths


# -- stitch throughput vs ffmpeg xfade ----------------------------------------------------------------------

def ffmpeg_xfade(segments: list[Path], lengths: list[int], overlaps: list[int], fps: float, out: Path) -> None:
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    args = [exe, "-y", "-loglevel", "error"]
    for s in segments:
        args += ["-i", str(s)]
    chains, label, elapsed = [], "[0:v]", lengths[0]
    for i, o in enumerate(overlaps):
        offset = (elapsed - o) / fps
        nxt = f"[x{i}]"
        # xfade needs a duration > 0; zero overlaps would be a concat filter instead
        chains.append(f"{label}[{i + 1}:v]xfade=transition=fade:duration={o / fps:.6f}:offset={offset:.6f}{nxt}")
        label, elapsed = nxt, elapsed - o + lengths[i + 1]
    args += ["-filter_complex", ";".join(chains), "-map", label, "-c:v", "libx264", "-preset", "veryfast",
             "-crf", "18", "-pix_fmt", "yuv420p", "-r", str(fps), str(out)]
    subprocess.run(args, check=True)


def _timed(fn) -> tuple[float, float]:
    """(wall s, CPU s of this process's threads plus waited-for children) of fn()."""
    import resource

    def cpu():
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    c0, t0 = cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu() - c0


def bench_stitch_throughput(work: Path, n_segments: int, length: int, overlap: int, size: tuple[int, int],
                            repeats: int = 5, content: str = "texture") -> dict:
    """Ours and ffmpeg alternately (which goes first flips each round), so load from other processes on a
    shared machine hits both alike; the ratio is taken per round and its median reported."""
    from source.media.stitch import count_frames, stitch_videos

    segs = make_segments(work, n_segments, length, size, content=content)
    overlaps = [overlap] * (n_segments - 1)
    expected = n_segments * length - sum(overlaps)
    res = {}

    def ours():
        res["r"] = stitch_videos(segs, overlaps, work / "ours.mp4", fps=16)

    def ffmpeg():
        ffmpeg_xfade(segs, [length] * n_segments, overlaps, 16, work / "ffmpeg.mp4")

    rounds = []
    for i in range(repeats):
        if i % 2:
            (ff_s, ff_cpu), (ours_s, ours_cpu) = _timed(ffmpeg), _timed(ours)
        else:
            (ours_s, ours_cpu), (ff_s, ff_cpu) = _timed(ours), _timed(ffmpeg)
        rounds.append({"ours_s": ours_s, "ffmpeg_s": ff_s, "ours_cpu_s": ours_cpu, "ffmpeg_cpu_s": ff_cpu})
    frames, ff_frames = res["r"].frames, count_frames(work / "ffmpeg.mp4")
    ratios = sorted((frames / r["ours_s"]) / (ff_frames / r["ffmpeg_s"]) for r in rounds)

    def med(key: str) -> float:
        return float(np.median([r[key] for r in rounds]))

    return {
        "segments": n_segments, "segment_frames": length, "overlap": overlap, "size": f"{size[0]}x{size[1]}",
        "content": content, "output_frames": frames, "expected_frames": expected, "ffmpeg_output_frames": ff_frames,
        "encoder": getattr(res["r"], "encoder", "libx264"), "rounds": repeats,
        "ours_s_median": round(med("ours_s"), 3), "ffmpeg_xfade_s_median": round(med("ffmpeg_s"), 3),
        "ours_fps_median": round(frames / med("ours_s"), 1), "ffmpeg_fps_median": round(ff_frames / med("ffmpeg_s"), 1),
        "ratio_ours_over_ffmpeg_median": round(float(np.median(ratios)), 3),
        "ratio_ours_over_ffmpeg_per_round": [round(r, 3) for r in ratios],
        "cpu_s_median": {"ours": round(med("ours_cpu_s"), 3), "ffmpeg": round(med("ffmpeg_cpu_s"), 3)},
        "cpu_ratio_ffmpeg_over_ours": round(med("ffmpeg_cpu_s") / med("ours_cpu_s"), 3),
        "output_bytes": {"ours": (work / "ours.mp4").stat().st_size, "ffmpeg": (work / "ffmpeg.mp4").stat().st_size},
        "note": "both decode the same H.264 segments and encode H.264 crf 18 (libx264 veryfast unless a GPU "
                "encoder opened for ours); ffmpeg's xfade is a linear fade, ours a cosine ease; ratio > 1: ours "
                "is faster; per-round ratios are sorted",
    }


# -- stitch memory: 1 minute vs 10 minutes --------------------------------------------------------------------

_CHILD = r"""
import json, sys, tracemalloc
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from source.media.stitch import stitch_videos

def vm(key):  # kB from /proc (VmHWM is this process's own high-water mark; ru_maxrss survives exec)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
segs = [Path(p) for p in json.loads(sys.argv[2])]
overlap = int(sys.argv[3])
rss_imports = vm("VmRSS")
tracemalloc.start()
res = stitch_videos(segs, [overlap] * (len(segs) - 1), Path(sys.argv[4]), fps=16)
_, peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
print(json.dumps({"frames": res.frames, "rss_peak_mb": vm("VmHWM"), "rss_after_imports_mb": rss_imports,
                  "tracemalloc_peak_mb": peak / 2**20}))
"""


def bench_stitch_memory(work: Path, minutes: list[float], size: tuple[int, int], seg_len: int = 81,
                        overlap: int = 12) -> dict:
    out = {"frame_size": f"{size[0]}x{size[1]} (small frames on purpose)", "segment_frames": seg_len,
           "overlap": overlap, "fps": 16}
    # one set of segment files, re-used (a 10-minute run lists the same files many times)
    pool = make_segments(work, 8, seg_len, size)
    for m in minutes:
        target = int(m * 60 * 16)
        n_segs = max(1, -(-(target - overlap) // (seg_len - overlap)))
        segs = [str(pool[i % len(pool)]) for i in range(n_segs)]
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(REPO), json.dumps(segs), str(overlap),
                               str(work / f"mem_{m}.mp4")], check=True, capture_output=True, text=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        r["seconds"] = round(time.perf_counter() - t0, 2)
        r["segments"] = n_segs
        r["video_minutes"] = round(r["frames"] / 16 / 60, 2)
        r["decoded_bytes_if_held_mb"] = round(r["frames"] * size[0] * size[1] * 3 / 2**20, 1)
        out[f"{m:g}_min"] = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()}
    return out


# -- RIFE ------------------------------------------------------------------------------------------------------

def bench_rife(pairs: int, size: tuple[int, int]) -> dict:
    import torch
    from PIL import Image
    from skimage import data

    from source.media.rife import RifeInterpolator

    w, h = size
    img = np.asarray(Image.fromarray(data.astronaut()).resize((w + 64, h + 64), Image.LANCZOS))
    a, mid, b = img[16:16 + h, 16:16 + w], img[16:16 + h, 24:24 + w], img[16:16 + h, 32:32 + w]

    def psnr(x, y):
        x, y = x[16:-16, 16:-16].astype(np.float64), y[16:-16, 16:-16].astype(np.float64)
        return float(10 * np.log10(255.0**2 / np.mean((x - y) ** 2)))

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    out = {"size": f"{w}x{h}", "torch_threads": torch.get_num_threads()}
    for dev in devices:
        t0 = time.perf_counter()
        r = RifeInterpolator.load(device=dev)
        load_s = time.perf_counter() - t0
        r.interpolate(a, b)  # warm-up
        times = []
        for _ in range(pairs):
            t0 = time.perf_counter()
            y = r.interpolate(a, b)  # returns a numpy frame, so CUDA work is finished
            times.append(time.perf_counter() - t0)
        per = float(np.median(times))
        blend = ((a.astype(np.float32) + b) / 2 + 0.5).astype(np.uint8)
        out[dev] = {"load_s": round(load_s, 2), "s_per_pair_median": round(per, 3),
                    "s_per_pair_min": round(min(times), 3), "pairs_per_s": round(1 / per, 2),
                    "psnr_vs_true_middle_db": round(psnr(y, mid), 1), "psnr_plain_blend_db": round(psnr(blend, mid), 1)}
    return out


# -- travel through the real queue ------------------------------------------------------------------------------

def travel_wall_time(workers: int, mode: str) -> dict:
    """Wall time of a 3-segment tiny travel through `workers` real worker processes on one SQLite database:
    workers are started (idle) first, then the orchestrator is queued; timed until it is Complete. Each
    worker's first generation includes importing torch/diffusers and loading the tiny model."""
    from source.store.task_store import TaskStore
    from tests.worker_process import WorkerProcess

    repo = Path(__file__).resolve().parent.parent
    images = [str(repo / "samples" / "images" / n) for n in ("astronaut.png", "chelsea.png", "coffee.png",
                                                             "rocket.png")]
    if mode == "chained":
        params = {"images": images, "prompt": "a smooth morph", "frames": 13, "overlap": 4, "resolution": "64x64",
                  "model": "tiny-vace", "mode": "chained", "seed": 1, "steps": 2}
    else:
        params = {"images": images, "prompt": "a smooth morph", "frames": 13, "overlap": 1, "resolution": "64x64",
                  "model": "tiny-flf2v", "mode": "independent", "seed": 1, "steps": 2}
    with tempfile.TemporaryDirectory(prefix="travel_wall_") as tmp:
        url = f"sqlite:///{Path(tmp) / 'tasks.db'}"
        store = TaskStore(url)
        procs = [WorkerProcess(url, Path(tmp) / "logs", "--poll-interval", "0.2", worker_id=f"w{i}")
                 for i in range(workers)]
        for p in procs:
            p.wait_for_event("worker_started")
        t0 = time.perf_counter()
        orch = store.add_task("travel_between_images", params)
        while store.get(orch)["status"] not in ("Complete", "Failed", "Cancelled"):
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        row = store.get(orch)
        for p in procs:
            p.stop()
        store.close()
    return {"workers": workers, "mode": mode, "segments": 3, "status": row["status"], "wall_s": round(wall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke check, not a measurement")
    ap.add_argument("--skip", nargs="*", default=[], choices=["throughput", "memory", "rife", "travel"])
    ap.add_argument("--repeats", type=int, default=0, help="stitch throughput rounds (default 5, --quick 2)")
    args = ap.parse_args()
    q = args.quick
    result: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    with tempfile.TemporaryDirectory(prefix="travel_bench_") as tmp:
        work = Path(tmp)
        if "throughput" not in args.skip:
            (work / "tp").mkdir()
            # two contents: the random-tile pan (the original measurement) and photo pans. On the tiles,
            # libx264's adaptive B-frame choice flips on tiny differences in the join frames and the rest of
            # the video can cost 1.4x the bits either way (b-adapt=0 removes it), so one content alone misleads
            for content in ("texture", "photo"):
                (work / f"tp_{content}").mkdir()
                key = "stitch_throughput" + ("" if content == "texture" else "_photo")
                result[key] = bench_stitch_throughput(
                    work / f"tp_{content}", 3, 33 if q else 81, 8 if q else 12, (256, 160) if q else (832, 480),
                    repeats=args.repeats or (2 if q else 5), content=content)
        if "memory" not in args.skip:
            (work / "mem").mkdir()
            result["stitch_memory"] = bench_stitch_memory(work / "mem", [0.1, 1] if q else [1, 10], (128, 96))
        if "rife" not in args.skip:
            result["rife"] = bench_rife(1 if q else 5, (832, 480))
        if "travel" not in args.skip:
            result["travel_wall_time"] = {f"{mode}_{n}_worker{'s' if n > 1 else ''}": travel_wall_time(n, mode)
                                          for mode in ("chained", "independent") for n in (1, 2)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
