"""A storyboard through a real worker on SQLite and PostgreSQL with the tiny I2V model: one cached generation
per clip, one compose render with a fade, a wipe, a text layer and an audio layer; submitting it again with
one motion prompt changed regenerates only that clip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import pytest

from source.store.task_store import TaskStore
from source.task_context import child_task_id
from tests.test_compose import tone
from tests.test_e2e_travel import output_file
from tests.worker_process import REPO, WorkerProcess


@pytest.fixture
def inputs(tmp_path) -> Path:
    d = tmp_path / "inputs"
    shutil.copytree(REPO / "samples" / "images", d)
    tone(d / "music.wav", 5.0)
    return d


def doc(inputs: Path, prompts=("a rocket lifts off", "a cat blinks", "steam rises")) -> dict:
    images = ["rocket.png", "chelsea.png", "coffee.png"]
    return {
        "projectId": "sb-test", "render": "final",
        "outputSettings": {"resolution": {"width": 64, "height": 64}, "fps": 8, "codec": "h264", "quality": "low"},
        "timeline": [
            {"clipId": f"c{i}", "sourceImage": str(inputs / img), "motionPrompt": prompts[i], "duration": 1.0,
             "model": "tiny-i2v",
             "transitionIn": [None, {"type": "fade", "duration": 0.25}, {"type": "wipe", "duration": 0.25}][i]}
            for i, img in enumerate(images)],
        "audioLayers": [{"file": str(inputs / "music.wav"), "start": 0.0, "volume": 0.5, "fadeOut": 0.5}],
        "textLayers": [{"content": "Launch", "start": 0.0, "duration": 1.0, "x": 32, "y": 32, "fontSize": 10}],
    }


def run(db_url, tmp_path, inputs, tag):
    w = WorkerProcess(db_url, tmp_path / "logs", "--exit-when-idle", "--poll-interval", "0.2", "--input-root",
                      str(inputs), "--output-dir", str(tmp_path / "outputs"), worker_id=tag)
    assert w.wait(300) == 0, w.stderr_tail()


def result(row) -> dict:
    return row["result"] if isinstance(row["result"], dict) else json.loads(row["result"])


def test_storyboard_renders_and_regenerates_only_the_changed_clip(db_url, tmp_path, inputs, tiny_models):
    store = TaskStore(db_url)
    first = store.add_task("storyboard", doc(inputs))
    run(db_url, tmp_path, inputs, "a")
    row = store.get(first)
    assert row["status"] == "Complete", row["error_message"]
    with av.open(str(output_file(store, db_url, row["output_location"]))) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        frames = sum(1 for _ in c.decode(video=0))
        assert (v.width, v.height) == (64, 64)
        audio_s = float(a.duration * a.time_base)
    assert frames == 3 * 8 - 2 * 2  # the transitions overlap the clips
    assert abs(audio_s - frames / 8) < 0.05
    gens = [store.get(child_task_id(first, f"clip-{i:03d}")) for i in range(3)]
    assert all(g["status"] == "Complete" and result(g)["cache_hit"] is False for g in gens)

    second = store.add_task("storyboard", doc(inputs, ("a rocket lifts off", "a cat yawns", "steam rises")))
    run(db_url, tmp_path, inputs, "b")
    assert store.get(second)["status"] == "Complete"
    hits = [result(store.get(child_task_id(second, f"clip-{i:03d}")))["cache_hit"] for i in range(3)]
    assert hits == [True, False, True]
    store.close()


def test_corrupt_clip_fails_alone_and_retry_completes(sqlite_url, tmp_path, inputs, tiny_models):
    store = TaskStore(sqlite_url)
    good = (inputs / "chelsea.png").read_bytes()
    (inputs / "chelsea.png").write_bytes(b"not a png")
    sb = store.add_task("storyboard", doc(inputs))
    run(sqlite_url, tmp_path, inputs, "a")
    clips = [child_task_id(sb, f"clip-{i:03d}") for i in range(3)]
    render_id = child_task_id(sb, "render")
    # the store ends an orchestrator's still-queued children when one fails: clip 2 is Cancelled, not run
    assert [store.get(c)["status"] for c in clips] == ["Complete", "Failed", "Cancelled"]
    assert "chelsea.png" in store.get(clips[1])["error_message"]
    assert store.get(render_id)["status"] == "Failed" and store.get(sb)["status"] == "Failed"
    (inputs / "chelsea.png").write_bytes(good)
    assert set(store.retry(clips[1])) == {clips[1], clips[2], render_id}
    run(sqlite_url, tmp_path, inputs, "b")
    assert store.get(sb)["status"] == "Complete"
    assert result(store.get(clips[0]))["cache_hit"] is False  # not redone: still the first run's result
    store.close()


def test_preview_runs_before_a_queued_final(sqlite_url, tmp_path, inputs, tiny_models):
    store = TaskStore(sqlite_url)
    one_clip = lambda render: {**doc(inputs), "render": render, "timeline": doc(inputs)["timeline"][:1],  # noqa: E731
                               "textLayers": [], "audioLayers": []}
    final = store.add_task("storyboard", one_clip("final"))
    preview = store.add_task("storyboard", one_clip("preview"))
    run(sqlite_url, tmp_path, inputs, "a")
    assert store.get(final)["status"] == store.get(preview)["status"] == "Complete"
    final_clip = store.get(child_task_id(final, "clip-000"))
    preview_render = store.get(child_task_id(preview, "render"))
    assert preview_render["priority"] > final_clip["priority"]
    assert str(preview_render["generation_processed_at"]) <= str(final_clip["generation_started_at"])
    store.close()
