"""A narrated video end to end through a real worker process, on SQLite and PostgreSQL: espeak-ng speech
tasks (one per caption, cached by content), then one compose render. Checks the real MP4: audio length,
captions visible exactly while spoken, and a visible Ken Burns zoom."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from source.store.task_store import TaskStore
from source.task_context import child_task_id
from tests.test_compose import tone
from tests.test_e2e_travel import output_file
from tests.worker_process import REPO, WorkerProcess

SAMPLES = REPO / "samples" / "images"
GREEN = "#00FF00"  # caption colour that no sample image has in the lower band (the band darkens it further)


@pytest.fixture
def images(tmp_path) -> Path:
    d = tmp_path / "inputs"
    shutil.copytree(SAMPLES, d)
    return d


def run_worker(db_url: str, tmp_path: Path, images: Path, tag: str = "w") -> WorkerProcess:
    w = WorkerProcess(db_url, tmp_path / "logs", "--exit-when-idle", "--poll-interval", "0.2", "--input-root",
                      str(images), "--output-dir", str(tmp_path / "outputs"), worker_id=tag)
    assert w.wait(300) == 0, w.stderr_tail()
    return w


def decode(path: Path) -> tuple[list[np.ndarray], float, float | None]:
    frames = []
    with av.open(str(path)) as c:
        fps = float(c.streams.video[0].average_rate)
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
        a = c.streams.audio[0] if c.streams.audio else None
        audio = float(a.duration * a.time_base) if a is not None and a.duration else None
    return frames, fps, audio


def caption_pixels(frame: np.ndarray) -> int:
    h = frame.shape[0]
    band = frame[int(h * 0.6):].astype(int)
    green = (band[..., 1] > 170) & (band[..., 0] < 110) & (band[..., 2] < 110)
    return int(green.sum())


def zoomed(frame: np.ndarray, z: float, fx: float, fy: float) -> np.ndarray:
    h, w = frame.shape[:2]
    cw, ch = w / z, h / z
    x = min(max(0.0, fx * w - cw / 2), w - cw)
    y = min(max(0.0, fy * h - ch / 2), h - ch)
    im = Image.fromarray(frame).resize((w, h), Image.BICUBIC, box=(x, y, x + cw, y + ch))
    return np.asarray(im)


def test_three_part_portrait_narrated_video(db_url, tmp_path, images):
    store = TaskStore(db_url)
    params = {
        "parts": [
            {"image": str(images / "astronaut.png"), "captions": ["Meet the astronaut.", "She trains every day."]},
            {"image": str(images / "rocket.png"), "captions": ["The rocket waits on the pad."]},
            {"image": str(images / "coffee.png"), "captions": ["Meet the astronaut."]},  # cached speech
        ],
        "engine": "espeak", "voice": "en-us", "speaking_rate": 1.3, "layout": "180x320", "fps": 12,
        "transition": "fade through black", "transition_duration": 0.5, "caption_gap": 0.4,
        "caption_style": {"size": 18, "colour": GREEN, "margin": 20},  # the rest (band, outline...) by default
        "background_music": {"source": str(tone(images / "music.wav", 20.0)), "volume": 0.3},
        "output": {"quality": "low", "speed": "fast"},
    }
    orch = store.add_task("narrated_video", params)
    run_worker(db_url, tmp_path, images)
    row = store.get(orch)
    assert row["status"] == "Complete", row["error_message"]
    children = store.list_tasks(parent_task_id=orch)
    assert sorted(c["task_type"] for c in children) == ["compose"] + ["speech"] * 4
    speech = [store.get(child_task_id(orch, k)) for k in
              ("speech-000-000", "speech-000-001", "speech-001-000", "speech-002-000")]
    records = [r["result"] if isinstance(r["result"], dict) else json.loads(r["result"]) for r in speech]
    assert [r["cache_hit"] for r in records] == [False, False, False, True]
    assert all(r["timing_method"] == "alignment" and r["words"] for r in records)
    durations = [r["duration"] for r in records]

    video = output_file(store, db_url, row["output_location"])
    frames, fps, audio = decode(video)
    assert fps == 12 and frames[0].shape == (320, 180, 3)
    # audio = the narrations + the gap inside part 0 + (parts + 1) transitions
    expected = sum(durations) + 0.4 + 4 * 0.5
    assert audio is not None and abs(audio - expected) < 0.1, (audio, expected)
    assert abs(len(frames) / fps - expected) < 1.5 / fps
    assert video.with_suffix(".json").is_file()
    compose = store.get(child_task_id(orch, "compose"))
    result = compose["result"] if isinstance(compose["result"], dict) else json.loads(compose["result"])
    poster = output_file(store, db_url, result["poster"])
    assert Image.open(poster).size == (180, 320)

    # captions: present in the lower band while spoken, absent before, between and after
    caps = result["captions"]
    assert len(caps) == 4
    for c in caps:
        mid = int((c["shown_from"] + c["shown_to"]) / 2 * fps)
        assert caption_pixels(frames[mid]) > 40, (c, caption_pixels(frames[mid]))
    quiet = [0.5 * caps[0]["shown_from"]]
    quiet += [(a["shown_to"] + b["shown_from"]) / 2 for a, b in zip(caps, caps[1:])]
    quiet.append((caps[-1]["shown_to"] + len(frames) / fps) / 2)
    for t in quiet:
        assert caption_pixels(frames[int(t * fps)]) < 5, (t, caption_pixels(frames[int(t * fps)]))

    # Ken Burns: the first part zooms in 1.0 -> 1.15 (eased) toward (0.56, 0.45)
    n0 = int(round(result["part_durations"][0] * fps))
    last = n0 - 1 - int(round(0.5 * fps))  # before the transition starts
    p = last / (n0 - 1)
    e = p * p * (3 - 2 * p)
    z, fx, fy = 1 + 0.15 * e, 0.5 + 0.06 * e, 0.5 - 0.05 * e
    top = slice(0, int(320 * 0.55))  # above any caption
    a, b = frames[0][top].astype(float), frames[last][top].astype(float)
    as_zoomed = zoomed(frames[0], z, fx, fy)[top].astype(float)
    plain_err, zoom_err = np.abs(b - a).mean(), np.abs(b - as_zoomed).mean()
    assert plain_err > 4 and zoom_err < 0.6 * plain_err, (plain_err, zoom_err)
    store.close()


def test_bad_image_fails_the_orchestrator_with_a_clear_error(sqlite_url, tmp_path, images):
    store = TaskStore(sqlite_url)
    (images / "broken.png").write_bytes(b"not an image")
    orch = store.add_task("narrated_video", {"parts": [{"image": str(images / "broken.png"), "captions": ["Hi."]}],
                                             "engine": "espeak"})
    styled = store.add_task("narrated_video", {"parts": [{"image": str(images / "rocket.png"), "captions": ["Hi."]}],
                                               "engine": "espeak", "caption_style": {"colour": "not a colour"}})
    run_worker(sqlite_url, tmp_path, images)
    row = store.get(orch)
    assert row["status"] == "Failed" and "broken.png" in row["error_message"]
    assert store.list_tasks(parent_task_id=orch) == []
    row = store.get(styled)
    assert row["status"] == "Failed" and "colour" in row["error_message"]
    store.close()


def test_cancelling_a_render_stops_ffmpeg_and_leaves_no_partial_file(sqlite_url, tmp_path, images):
    import time

    import psutil

    from tests.worker_process import wait_until

    store = TaskStore(sqlite_url)
    timeline = {"width": 320, "height": 180, "fps": 24,
                "clips": [{"kind": "image", "source": str(images / "rocket.png"), "duration": 600, "ken_burns": {}}]}
    tid = store.add_task("compose", {"timeline": timeline})
    w = WorkerProcess(sqlite_url, tmp_path / "logs", "--exit-when-idle", "--poll-interval", "0.2", "--input-root",
                      str(images), "--output-dir", str(tmp_path / "outputs"), worker_id="c0")
    w.wait_for_event("compose_render_start", timeout=60)
    wait_until(lambda: any(p.name().startswith("ffmpeg") for p in psutil.Process(w.proc.pid).children(True)),
               timeout=30, what="ffmpeg running")
    time.sleep(1.0)
    store.request_cancel(tid)
    assert w.wait(60) == 0, w.stderr_tail()
    assert store.get(tid)["status"] == "Cancelled"
    assert not [p for p in tmp_path.rglob("*.mp4")], "a partial video was left behind"
    assert not [p for p in psutil.process_iter(["name", "cmdline"])
                if (p.info["name"] or "").startswith("ffmpeg") and str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    store.close()
