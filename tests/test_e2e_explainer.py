"""Explainer videos through real worker processes on SQLite and PostgreSQL: a Markdown file with a title, a
list and a code block -> one scene each plus an outro (espeak-ng speech, Pillow slides, one compose render),
a timing report that agrees with the decoded video, and a worker killed with -9 mid-assembly: the restarted
worker re-runs only the assembly (speech and slide rows keep attempt 1 and their files)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import av
import numpy as np
import psutil
import pytest
from PIL import Image

from source.compose.explainer import Scene, draw_slide, scenes_from_markdown
from source.store.task_store import TaskStore
from source.task_context import child_task_id
from tests.test_e2e_travel import output_file
from tests.worker_process import WorkerProcess

DOC = """# Deploying the worker

A short tour of the headless worker.

## What you need

- Python 3.11
- ffmpeg
- a database

## Start it

Run this to start a worker.

```bash
python headless.py --db tasks.db
```
"""


@pytest.fixture
def inputs(tmp_path) -> Path:
    d = tmp_path / "inputs"
    d.mkdir()
    (d / "guide.md").write_text(DOC)
    return d


def worker(db_url: str, tmp_path: Path, inputs: Path, tag: str, *extra: str) -> WorkerProcess:
    return WorkerProcess(db_url, tmp_path / "logs", "--poll-interval", "0.2", "--input-root", str(inputs),
                         "--output-dir", str(tmp_path / "outputs"), *extra, worker_id=tag)


def result_of(row: dict) -> dict:
    return row["result"] if isinstance(row["result"], dict) else json.loads(row["result"])


def blocks(frame: np.ndarray, n: int = 6) -> np.ndarray:
    """Means over n x n blocks: what a slide shows survives, the encoder's noise around thin text does not."""
    h, w = frame.shape[0] // n * n, frame.shape[1] // n * n
    b = frame[:h, :w].astype(float).reshape(h // n, n, w // n, n, -1).mean(axis=(1, 3))
    return b - b.mean(axis=(0, 1))  # and without the small colour-matrix offset of the YUV round trip


def params(inputs: Path, **over) -> dict:
    return {"document": str(inputs / "guide.md"), "engine": "espeak", "voice": "en-us", "speaking_rate": 1.6,
            "layout": "192x108", "fps": 12, "min_scene_seconds": 1.5, "crossfade": 0.5, "lead": 0.4, "tail": 0.4,
            "accent_color": "#00C0FF", "output": {"quality": "high", "speed": "fast"}, **over}


def test_markdown_scenes_are_one_per_block_plus_outro():
    scenes = scenes_from_markdown(DOC)
    assert [s.scene_type for s in scenes] == ["title", "list", "command", "outro"]
    assert scenes[1].items == ["Python 3.11", "ffmpeg", "a database"] and scenes[1].title == "What you need"
    assert scenes[2].code == "python headless.py --db tasks.db" and scenes[2].language == "bash"
    assert "Run this to start a worker." in scenes[2].narration and not scenes[3].narration
    with pytest.raises(ValueError):
        Scene(scene_type="list", narration="no items")


def test_explainer_from_markdown_end_to_end(db_url, tmp_path, inputs):
    store = TaskStore(db_url)
    orch = store.add_task("explainer_video", params(inputs))
    w = worker(db_url, tmp_path, inputs, "w", "--exit-when-idle")
    assert w.wait(300) == 0, w.stderr_tail()
    row = store.get(orch)
    assert row["status"] == "Complete", row["error_message"]
    # the assembly completes the orchestrator with its record (the timing report included)
    plan = result_of(row)
    assert [s["scene_type"] for s in plan["timing"]["scenes"]] == ["title", "list", "command", "outro"]
    kids = store.list_tasks(parent_task_id=orch)
    assert sorted(k["task_type"] for k in kids) == ["compose"] + ["explainer_slide"] * 4 + ["speech"] * 3

    compose = result_of(store.get(child_task_id(orch, "assemble")))
    video = output_file(store, db_url, row["output_location"])
    report_path = output_file(store, db_url, compose["timing_report"])
    assert report_path.parent == video.parent  # beside the video
    report = json.loads(report_path.read_text())
    with av.open(str(video)) as c:
        vs = c.streams.video[0]
        fps = float(vs.average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        a = c.streams.audio[0]
        audio = float(a.duration * a.time_base)
    assert fps == 12 and frames[0].shape == (108, 192, 3)
    assert len(frames) == report["total_frames"]
    assert abs(len(frames) / fps - report["duration"]) < 1e-3
    assert abs(audio - report["duration"]) < 0.15, (audio, report["duration"])

    scenes = report["scenes"]
    assert [s["scene_type"] for s in scenes] == ["title", "list", "command", "outro"]
    speech = {s: result_of(store.get(child_task_id(orch, f"speech-{s:03d}"))) for s in range(3)}
    for i, s in enumerate(scenes):
        spoken = speech[i]["duration"] if i in speech else 0.0
        expected = max(1.5, 0.4 + spoken + 0.4) if spoken else 1.5
        assert abs(s["duration"] - expected) <= 0.5 / fps + 1e-6, (i, s, expected)
        if i:  # cross-fades overlap consecutive scenes by exactly the fade
            assert abs(scenes[i - 1]["end"] - s["start"] - 0.5) < 1e-6
        if i in speech:
            assert abs(s["narration_start"] - (s["start"] + 0.4)) < 1e-6
            assert s["narration_duration"] == pytest.approx(spoken, abs=1e-3)
    assert abs(scenes[-1]["end"] - report["duration"]) < 1e-6

    # the video shows each scene's slide where the report says, and blends during each cross-fade
    slides = [blocks(np.asarray(Image.open(output_file(store, db_url,
                                                      store.get(s["slide_task_id"])["output_location"]))))
              for s in scenes]
    for i, s in enumerate(scenes):
        shown = blocks(frames[s["start_frame"] + s["frames"] // 2])
        err = np.abs(shown - slides[i]).mean()
        others = min(np.abs(shown - slides[j]).mean() for j in range(4) if j != i)
        assert err < 1.5 and others > 3 * err, (i, err, others)
    blend = blocks(frames[scenes[1]["start_frame"] + int(0.25 * fps)])  # inside the first cross-fade
    assert np.abs(blend - slides[0]).mean() > 1 and np.abs(blend - slides[1]).mean() > 1
    store.close()


def test_killed_mid_assembly_reruns_only_the_assembly(db_url, tmp_path, inputs):
    store = TaskStore(db_url)
    # long scenes so the render is still running when the worker is killed
    orch = store.add_task("explainer_video", params(inputs, min_scene_seconds=40))
    a = worker(db_url, tmp_path, inputs, "A", "--lease-seconds", "2")
    assemble = child_task_id(orch, "assemble")
    try:
        a.wait_for_event("compose_render_start", timeout=240)
        a.kill9()
    finally:
        a.stop()
    assert store.get(assemble)["status"] == "In Progress"
    stages = [k for k in store.list_tasks(parent_task_id=orch) if k["id"] != assemble]
    assert len(stages) == 7 and all(k["status"] == "Complete" for k in stages)
    files = {k["id"]: output_file(store, db_url, k["output_location"]) for k in stages}
    stamps = {tid: (p.stat().st_mtime_ns, p.read_bytes()) for tid, p in files.items()}
    time.sleep(0.1)

    b = worker(db_url, tmp_path, inputs, "B", "--exit-when-idle")
    try:
        assert b.wait(300) == 0, b.stderr_tail()
    finally:
        b.stop()
    assert store.get(orch)["status"] == "Complete", store.get(orch)["error_message"]
    row = store.get(assemble)
    assert row["status"] == "Complete" and row["attempts"] == 2 and row["worker_id"] == "B"
    for k in stages:
        now = store.get(k["id"])
        assert now["attempts"] == 1 and now["status"] == "Complete", now
        assert (files[k["id"]].stat().st_mtime_ns, files[k["id"]].read_bytes()) == stamps[k["id"]]
    claimed_by_b = {e["task_id"] for e in b.events("task_claimed")}
    assert claimed_by_b == {assemble}
    report = json.loads(output_file(store, db_url, result_of(row)["timing_report"]).read_text())
    with av.open(str(output_file(store, db_url, row["output_location"]))) as c:
        assert c.streams.video[0].frames == report["total_frames"]
    # the killed worker's ffmpeg did not live on (its progress pipe broke), so it wrote nothing after B
    assert not [p for p in psutil.process_iter(["name", "cmdline"])
                if (p.info["name"] or "").startswith("ffmpeg") and str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    store.close()


def test_scenes_with_an_image_and_a_voice_per_scene(sqlite_url, tmp_path, inputs):
    Image.new("RGB", (96, 64), (220, 20, 20)).save(inputs / "red.png")
    (inputs / "pics.md").write_text("# Pictures\n\n![A red square](" + str(inputs / "red.png") + ")\n")
    parsed = scenes_from_markdown((inputs / "pics.md").read_text())
    assert [s.scene_type for s in parsed] == ["image", "outro"]  # the heading's one scene is its image
    assert parsed[0].title == "A red square" and parsed[0].narration == "Pictures. A red square."
    store = TaskStore(sqlite_url)
    scenes = [{"scene_type": "title", "title": "Colours", "narration": "Colours.", "voice": "en-gb"},
              {"scene_type": "image", "image": str(inputs / "red.png"), "title": "Red", "narration": "Red."},
              {"scene_type": "outro"}]
    orch = store.add_task("explainer_video", {**params(inputs), "document": None, "scenes": scenes})
    pics = store.add_task("explainer_video", params(inputs, document=str(inputs / "pics.md")))
    w = worker(sqlite_url, tmp_path, inputs, "w", "--exit-when-idle")
    assert w.wait(300) == 0, w.stderr_tail()
    assert store.get(orch)["status"] == "Complete", store.get(orch)["error_message"]
    assert store.get(pics)["status"] == "Complete", store.get(pics)["error_message"]
    voices = [result_of(store.get(child_task_id(orch, f"speech-{i:03d}")))["voice"] for i in range(2)]
    assert voices == ["en-gb", "en-us"]
    report = result_of(store.get(orch))["timing"]
    assert [s["scene_type"] for s in report["scenes"]] == ["title", "image", "outro"]
    assert report["scenes"][2]["speech_task_id"] is None and report["scenes"][2]["duration"] == 1.5
    slide = np.asarray(Image.open(output_file(store, sqlite_url,
                                              store.get(report["scenes"][1]["slide_task_id"])["output_location"])))
    red = (slide[..., 0] > 200) & (slide[..., 1] < 40) & (slide[..., 2] < 40)
    assert red.sum() > 0.1 * red.size  # the picture is on its slide
    store.close()


def test_bad_inputs_fail_the_orchestrator_clearly(sqlite_url, tmp_path, inputs):
    store = TaskStore(sqlite_url)
    (inputs / "binary.md").write_bytes(b"\xff\xfe\x00garbage")
    bad_doc = store.add_task("explainer_video", params(inputs, document=str(inputs / "binary.md")))
    outside = store.add_task("explainer_video", params(inputs, document="/etc/passwd"))
    bad_image = store.add_task("explainer_video", {
        "scenes": [{"scene_type": "image", "image": str(inputs / "missing.png"), "narration": "Look."}],
        "engine": "espeak"})
    w = worker(sqlite_url, tmp_path, inputs, "w", "--exit-when-idle")
    assert w.wait(120) == 0, w.stderr_tail()
    assert "UTF-8" in store.get(bad_doc)["error_message"]
    assert store.get(outside)["status"] == "Failed"
    row = store.get(bad_image)
    assert row["status"] == "Failed" and "scenes[0]" in row["error_message"]
    assert store.list_tasks(parent_task_id=bad_image) == []
    store.close()


def test_slides_draw_every_scene_type(tmp_path):
    pic = Image.new("RGB", (64, 48), (200, 30, 30))
    for scene in [Scene(scene_type="title", title="Hello", subtitle="world"),
                  Scene(scene_type="list", title="Items", items=["one", "two " * 40]),
                  Scene(scene_type="command", code="\n".join(f"echo {i}" for i in range(100))),
                  Scene(scene_type="image", image="x.png", title="A red box"),
                  Scene(scene_type="outro")]:
        im = draw_slide(scene, 320, 180, "#00C0FF", pic if scene.scene_type == "image" else None)
        arr = np.asarray(im)
        assert im.size == (320, 180)
        assert (arr[-1] == [0, 192, 255]).all()  # the accent line
        assert (arr.max(axis=2) > 200).sum() > 50, scene.scene_type  # something legible was drawn
