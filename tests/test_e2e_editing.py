"""Video editing end to end through real worker processes, on SQLite and PostgreSQL, with the tiny VACE
model and real videos made from the sample images: joins (2, 3 and looped clips, with and without
`replace`, parallel bridges, audio carried through, regenerating one join), inpaint_frames (frames outside
the range bit-identical), edit_video (two portions), and bad input refused at once."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import av
import numpy as np
import pytest

from source.media.images import load_image_rgb
from source.media.video_io import read_frames, write_video
from source.store.task_store import TaskStore
from source.task_context import child_task_id
from tests.worker_process import REPO, WorkerProcess, all_events

SAMPLES = REPO / "samples" / "images"
EDIT = {"model": "tiny-vace", "steps": 2, "seed": 3}


def make_clip(path: Path, a: str, b: str, frames: int, *, tone: float | None = None) -> Path:
    """A real 64x64 clip: image a dissolving into image b while drifting; optionally a sine tone track."""
    ia, ib = (load_image_rgb(SAMPLES / n, (64, 64)) for n in (a, b))
    seq = [np.roll((ia * (1 - t) + ib * t).astype(np.uint8), int(t * 6), axis=1)
           for t in np.linspace(0, 1, frames)]
    write_video(seq, path if tone is None else path.with_suffix(".silent.mp4"), fps=16)
    if tone is not None:
        src = path.with_suffix(".silent.mp4")
        with av.open(str(src)) as vin, av.open(str(path), "w") as out:
            vs = out.add_stream_from_template(vin.streams.video[0])
            au = out.add_stream("aac", rate=48000, layout="stereo")
            for p in vin.demux(vin.streams.video[0]):
                if p.dts is not None:
                    p.stream = vs
                    out.mux(p)
            t = np.arange(int(48000 * frames / 16)) / 48000
            x = (0.3 * np.sin(2 * np.pi * tone * t)).astype(np.float32)
            data = np.stack([x, x])
            for k in range(0, data.shape[1], 1024):
                f = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, k:k + 1024]), format="fltp",
                                               layout="stereo")
                f.sample_rate, f.pts = 48000, k
                for p in au.encode(f):
                    out.mux(p)
            for p in au.encode(None):
                out.mux(p)
        src.unlink()
    return path


@pytest.fixture
def inputs(tmp_path) -> Path:
    d = tmp_path / "inputs"
    d.mkdir()
    return d


def run_workers(db_url: str, tmp_path: Path, inputs: Path, n: int = 1, tag: str = "w",
                extra: tuple[str, ...] = ()) -> list[WorkerProcess]:
    args = ["--exit-when-idle", "--poll-interval", "0.2", "--input-root", str(inputs),
            "--output-dir", str(tmp_path / "outputs"), *extra]
    workers = [WorkerProcess(db_url, tmp_path / "logs", *args, worker_id=f"{tag}{i}") for i in range(n)]
    for w in workers:
        assert w.wait(400) == 0, w.stderr_tail()
    return workers


def output_file(db_url: str, location: str) -> Path:
    if db_url.startswith("sqlite"):
        return Path(db_url[len("sqlite:///"):]).parent / "public" / location
    return Path(location)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def audio_of(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        assert c.streams.audio, f"{path.name} has no audio"
        return np.concatenate([f.to_ndarray().reshape(f.to_ndarray().shape[0], -1)[:1]
                               for f in c.decode(audio=0)], axis=1)[0]


def ts(e: dict) -> float:
    return datetime.strptime(e["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


def complete(store: TaskStore, task_id: str) -> dict:
    row = store.get(task_id)
    assert row["status"] == "Complete", row["error_message"]
    return row


def test_join_three_clips_bridges_run_in_parallel_and_keep_clips_and_audio(db_url, tmp_path, inputs, tiny_models):
    clips = [make_clip(inputs / "c0.mp4", "astronaut.png", "chelsea.png", 12, tone=440.0),
             make_clip(inputs / "c1.mp4", "chelsea.png", "coffee.png", 12),
             make_clip(inputs / "c2.mp4", "coffee.png", "rocket.png", 12, tone=660.0)]
    store = TaskStore(db_url)
    orch = store.add_task("join_clips", {**EDIT, "clips": [str(c) for c in clips], "context_frames": 4,
                                         "gap_frames": 5, "prompt": ["a cat", "a cup"]})
    workers = run_workers(db_url, tmp_path, inputs, 2)
    row = complete(store, orch)
    out = output_file(db_url, row["output_location"])
    frames = read_frames(out)
    assert len(frames) == 3 * 12 + 2 * 5  # sum(clips) - 0 replaced + sum(gaps)
    # the clips' frames are all there, in place, after one encode
    for k, start in enumerate((0, 17, 34)):
        src = read_frames(clips[k])
        worst = min(psnr(src[i], frames[start + i]) for i in range(12))
        assert worst > 40, f"clip {k} frames changed (worst PSNR {worst:.1f} dB)"
    # audio: clip 0's tone, silence under the first bridge and under the silent clip 1, clip 2's tone
    audio = audio_of(out)
    def sec(f: int) -> int:
        return int(f / 16 * 48000)

    assert len(audio) >= sec(46) - 2048
    assert np.abs(audio[sec(1):sec(11)]).max() > 0.1
    assert np.abs(audio[sec(12) + 1500:sec(34) - 1500]).max() < 0.02
    assert np.abs(audio[sec(35):sec(45)]).max() > 0.1
    # the two bridges ran on both workers at the same time
    bridges = {child_task_id(orch, k) for k in ("join-000", "join-001")}
    spans = {}
    for w in workers:
        for e in w.events():
            if e.get("task_id") in bridges and e["event"] in ("task_claimed", "task_completed"):
                spans.setdefault(e["task_id"], {})[e["event"]] = (ts(e), w.worker_id)
    assert len({s["task_claimed"][1] for s in spans.values()}) == 2, "both workers ran bridges"
    (_, a1), (b0, _) = sorted((s["task_claimed"][0], s["task_completed"][0]) for s in spans.values())
    assert b0 < a1, "the bridges never overlapped in time"
    store.close()


def test_two_clip_joins_replace_loop_task_output_then_regenerate_one_join(db_url, tmp_path, inputs, tiny_models):
    clips = [str(make_clip(inputs / "c0.mp4", "astronaut.png", "chelsea.png", 12)),
             str(make_clip(inputs / "c1.mp4", "coffee.png", "rocket.png", 12))]
    store = TaskStore(db_url)
    common = {**EDIT, "clips": clips, "context_frames": 2, "gap_frames": 5}
    replaced = store.add_task("join_clips", {**common, "replace": True})
    looped = store.add_task("join_clips_orchestrator", {**common, "loop_first_clip": True, "prompt": "x"})
    # another task's output as a clip: the replace join's result joined to clip 0
    chained = store.add_task("join_clips", {**common, "clips": [{"task_id": replaced}, clips[0]]},
                             depends_on=[replaced])
    run_workers(db_url, tmp_path, inputs, 1, tag="a")
    assert len(read_frames(output_file(db_url, complete(store, chained)["output_location"]))) == 24 + 12 + 5
    out = output_file(db_url, complete(store, replaced)["output_location"])
    frames = read_frames(out)
    assert len(frames) == 24 - 5 + 5
    src0 = read_frames(clips[0])
    assert min(psnr(src0[i], frames[i]) for i in range(12 - 2)) > 40  # the last 2 of clip 0 were replaced
    row = complete(store, looped)
    assert len(read_frames(output_file(db_url, row["output_location"]))) == 24 + 2 * 5
    # regenerate the looping join only: it and the stitch run again, nothing else
    join1, stitch = child_task_id(looped, "join-001"), child_task_id(looped, "stitch")
    old = store.get(join1)["output_location"]
    assert set(store.regenerate(join1, {"prompt": "a red sun", "seed": 99})) == {join1, stitch}
    workers = run_workers(db_url, tmp_path, inputs, 1, tag="b")
    assert {e["task_id"] for e in all_events(workers, "task_claimed")} == {join1, stitch}
    row = complete(store, looped)
    assert store.get(join1)["output_location"] != old
    assert len(read_frames(output_file(db_url, row["output_location"]))) == 34
    store.close()


def test_failed_join_fails_the_orchestrator_naming_it_and_retry_resumes(db_url, tmp_path, inputs, tiny_models):
    clips = [make_clip(inputs / "c0.mp4", "astronaut.png", "chelsea.png", 12),
             make_clip(inputs / "c1.mp4", "coffee.png", "rocket.png", 12)]
    store = TaskStore(db_url)
    orch = store.add_task("join_clips", {**EDIT, "clips": [str(c) for c in clips], "context_frames": 2,
                                         "gap_frames": 5})
    run_workers(db_url, tmp_path, inputs, 1, tag="orch", extra=("--max-tasks", "1"))  # only the orchestrator
    original = clips[1].read_bytes()
    clips[1].write_bytes(b"not a video any more")  # the clip breaks before its join runs
    run_workers(db_url, tmp_path, inputs, 1, tag="a")
    join, stitch = child_task_id(orch, "join-000"), child_task_id(orch, "stitch")
    row = store.get(join)
    assert row["status"] == "Failed" and "c1.mp4" in row["error_message"]
    assert store.get(stitch)["status"] == "Failed" and join in store.get(stitch)["error_message"]
    assert store.get(orch)["status"] == "Failed" and join in store.get(orch)["error_message"]
    clips[1].write_bytes(original)
    assert set(store.retry(join)) == {join, stitch}
    workers = run_workers(db_url, tmp_path, inputs, 1, tag="b")
    assert {e["task_id"] for e in all_events(workers, "task_claimed")} == {join, stitch}
    assert len(read_frames(output_file(db_url, complete(store, orch)["output_location"]))) == 29
    store.close()


def test_inpaint_frames_changes_only_the_range(db_url, tmp_path, inputs, tiny_models):
    clip = make_clip(inputs / "v.mp4", "astronaut.png", "rocket.png", 20, tone=440.0)
    store = TaskStore(db_url)
    task = store.add_task("inpaint_frames", {**EDIT, "video": str(clip), "start_frame": 6, "end_frame": 11,
                                             "context_frames": 3, "prompt": "a flash"})
    run_workers(db_url, tmp_path, inputs, 1)
    row = complete(store, task)
    out = output_file(db_url, row["output_location"])
    src, got = read_frames(clip), read_frames(out)
    assert len(got) == len(src) == 20
    for i in [*range(6), *range(11, 20)]:
        assert np.array_equal(src[i], got[i]), f"frame {i} outside the range changed"
    assert all(np.abs(src[i].astype(int) - got[i]).mean() > 5 for i in range(6, 11)), "the range was not replaced"
    assert np.abs(audio_of(out)).max() > 0.1  # the audio came along
    store.close()


def test_edit_video_two_portions_keeps_length_and_keepers(db_url, tmp_path, inputs, tiny_models):
    clip = make_clip(inputs / "v.mp4", "chelsea.png", "coffee.png", 24)
    store = TaskStore(db_url)
    task = store.add_task("edit_video", {**EDIT, "video": str(clip), "context_frames": 3, "prompt": "steam",
                                         "portions_to_regenerate": [{"start_frame": 14, "end_frame": 19},
                                                                    {"start_frame": 3, "end_frame": 6,
                                                                     "prompt": "a cat"}]})
    run_workers(db_url, tmp_path, inputs, 1)
    row = complete(store, task)
    src, got = read_frames(clip), read_frames(output_file(db_url, row["output_location"]))
    assert len(got) == 24
    keepers = [*range(3), *range(6, 14), *range(19, 24)]
    assert min(psnr(src[i], got[i]) for i in keepers) > 40
    assert all(psnr(src[i], got[i]) < 30 for i in [*range(3, 6), *range(14, 19)])
    kids = store.list_tasks(parent_task_id=task)
    assert sorted(k["task_type"] for k in kids) == ["join_clips_segment"] * 2 + ["join_clips_stitch"]
    store.close()


def test_bad_input_fails_at_once_naming_the_problem(db_url, tmp_path, inputs, tiny_models):
    long_clip = str(make_clip(inputs / "long.mp4", "astronaut.png", "chelsea.png", 12))
    short_clip = str(make_clip(inputs / "short.mp4", "coffee.png", "rocket.png", 3))
    store = TaskStore(db_url)
    cases = {
        store.add_task("join_clips", {**EDIT, "clips": [long_clip]}): "at least 2 clips",
        store.add_task("join_clips", {**EDIT, "clips": [long_clip, short_clip], "context_frames": 4,
                                      "gap_frames": 5}): "clip 1 has 3 frames, fewer than its context",
        store.add_task("inpaint_frames", {**EDIT, "video": long_clip, "start_frame": 8, "end_frame": 20}):
            "runs past the end of the video (12 frames",
        store.add_task("edit_video", {**EDIT, "video": long_clip, "portions_to_regenerate": [
            {"start_frame": 2, "end_frame": 6}, {"start_frame": 5, "end_frame": 9}]}):
            "portion 0 [2, 6) and portion 1 [5, 9) overlap",
        store.add_task("join_clips", {**EDIT, "model": "tiny-t2v", "clips": [long_clip, long_clip]}):
            "needs a VACE model",
    }
    run_workers(db_url, tmp_path, inputs, 1)
    for task, message in cases.items():
        row = store.get(task)
        assert row["status"] == "Failed" and message in row["error_message"], (message, row["error_message"])
        assert row["attempts"] == 1, "bad input is not retried"
        assert not store.list_tasks(parent_task_id=task), "nothing was queued for bad input"
    store.close()
