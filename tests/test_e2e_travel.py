"""Travel between images end to end through real worker processes, on SQLite and PostgreSQL, with tiny
models and real video files: seed and canonical payloads, chained order, independent parallelism, a failing
segment, retry, and regenerating one segment."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from source.media.video_io import probe_video
from source.store.task_store import TaskStore, parse_params
from source.task_context import child_task_id
from tests.worker_process import REPO, WorkerProcess, all_events

SAMPLES = REPO / "samples"


def payload(name: str, images_dir: Path) -> tuple[str, dict]:
    data = json.loads((SAMPLES / "payloads" / name).read_text())
    params = data["params"]
    details = params.get("orchestrator_details", params)
    key = "input_image_paths_resolved" if "orchestrator_details" in params else "images"
    details[key] = [str(images_dir / Path(p).name) for p in details[key]]
    return data["task_type"], params


@pytest.fixture
def images(tmp_path) -> Path:
    d = tmp_path / "inputs"
    shutil.copytree(SAMPLES / "images", d)
    return d


def run_workers(db_url: str, tmp_path: Path, images: Path, n: int = 1, *extra: str, tag: str = "w") -> list[WorkerProcess]:
    args = ["--exit-when-idle", "--poll-interval", "0.2", "--input-root", str(images),
            "--output-dir", str(tmp_path / "outputs"), *extra]
    workers = [WorkerProcess(db_url, tmp_path / "logs", *args, worker_id=f"{tag}{i}") for i in range(n)]
    for w in workers:
        assert w.wait(300) == 0, w.stderr_tail()
    return workers


def output_file(store: TaskStore, db_url: str, location: str) -> Path:
    if db_url.startswith("sqlite"):
        return Path(db_url[len("sqlite:///"):]).parent / "public" / location
    return Path(location)


def ts(e: dict) -> float:
    return datetime.strptime(e["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()


@pytest.mark.parametrize("name,frames", [("travel_seed_format.json", 9 + 13 - 2), ("travel_canonical.json", 20)])
def test_chained_travel_through_the_queue(db_url, tmp_path, images, tiny_models, name, frames):
    store = TaskStore(db_url)
    task_type, params = payload(name, images)
    orch = store.add_task(task_type, params)
    workers = run_workers(db_url, tmp_path, images)
    row = store.get(orch)
    assert row["status"] == "Complete", row["error_message"]
    video = output_file(store, db_url, row["output_location"])
    info = probe_video(video)
    assert (info.frames, info.width, info.height) == (frames, 64, 64)
    children = store.list_tasks(parent_task_id=orch)
    assert sorted(c["task_type"] for c in children) == ["travel_segment", "travel_segment", "travel_stitch"]
    assert all(c["status"] == "Complete" for c in children)
    # chained: segment 1 started only after segment 0 finished
    seg0, seg1 = (store.get(child_task_id(orch, k)) for k in ("seg-000", "seg-001"))
    assert str(seg1["generation_started_at"]) >= str(seg0["generation_processed_at"])
    claimed = [e["task_id"] for e in all_events(workers, "task_claimed")]
    assert len(claimed) == len(set(claimed)) == 4, "orchestrator + 2 segments + stitch, each once"
    store.close()


def test_independent_segments_run_in_parallel_on_two_workers(db_url, tmp_path, images, tiny_models):
    store = TaskStore(db_url)
    task_type, params = payload("travel_independent.json", images)
    params["frames"] = 13  # long enough that two segments surely overlap in time
    orch = store.add_task(task_type, params)
    workers = run_workers(db_url, tmp_path, images, 2)
    row = store.get(orch)
    assert row["status"] == "Complete", row["error_message"]
    info = probe_video(output_file(store, db_url, row["output_location"]))
    assert info.frames == 3 * 13 - 2 * 1
    segments = {c["id"] for c in store.list_tasks(parent_task_id=orch) if c["task_type"] == "travel_segment"}
    spans = {}
    for w in workers:
        for e in w.events():
            if e.get("task_id") in segments and e["event"] in ("task_claimed", "task_completed"):
                spans.setdefault(e["task_id"], {})[e["event"]] = (ts(e), w.worker_id)
    assert len({s["task_claimed"][1] for s in spans.values()}) == 2, "both workers ran segments"
    intervals = sorted((s["task_claimed"][0], s["task_completed"][0]) for s in spans.values())
    assert any(b_start < a_end for (a_start, a_end), (b_start, _) in zip(intervals, intervals[1:])), \
        f"segments never overlapped in time: {intervals}"
    store.close()


def test_failing_segment_fails_stitch_and_orchestrator_then_retry_finishes(db_url, tmp_path, images, tiny_models):
    store = TaskStore(db_url)
    task_type, params = payload("travel_canonical.json", images)
    orch = store.add_task(task_type, params)
    run_workers(db_url, tmp_path, images, 1, "--max-tasks", "1", tag="orch")  # only the orchestrator
    original = (images / "coffee.png").read_bytes()
    (images / "coffee.png").write_bytes(b"this is not a png")  # the last anchor breaks before segment 1 runs
    run_workers(db_url, tmp_path, images, 1, tag="a")
    seg1, stitch = child_task_id(orch, "seg-001"), child_task_id(orch, "stitch")
    assert store.get(child_task_id(orch, "seg-000"))["status"] == "Complete"
    seg_row = store.get(seg1)
    assert seg_row["status"] == "Failed" and "coffee.png" in seg_row["error_message"]
    stitch_row, orch_row = store.get(stitch), store.get(orch)
    assert stitch_row["status"] == "Failed" and seg1 in stitch_row["error_message"]
    assert orch_row["status"] == "Failed" and seg1 in orch_row["error_message"]
    assert store.count_by_status().get("Queued", 0) == 0
    # fix the input and retry the failed segment: the DAG continues, Complete work is not redone
    (images / "coffee.png").write_bytes(original)
    assert set(store.retry(seg1)) == {seg1, stitch}
    workers = run_workers(db_url, tmp_path, images, 1, tag="b")
    assert store.get(orch)["status"] == "Complete"
    claimed = {e["task_id"] for e in all_events(workers, "task_claimed")}
    assert claimed == {seg1, stitch}
    store.close()


def test_regenerate_one_segment_reruns_it_and_the_stitch_only(db_url, tmp_path, images, tiny_models):
    store = TaskStore(db_url)
    task_type, params = payload("travel_canonical.json", images)
    orch = store.add_task(task_type, params)
    run_workers(db_url, tmp_path, images, 1, tag="a")
    first = store.get(orch)
    assert first["status"] == "Complete"
    seg1 = child_task_id(orch, "seg-001")
    old_segment = store.get(seg1)["output_location"]
    requeued = store.regenerate(seg1, {"prompt": "a cat turns into a red sun", "seed": 99})
    assert set(requeued) == {seg1, child_task_id(orch, "stitch")}
    workers = run_workers(db_url, tmp_path, images, 1, tag="b")
    assert {e["task_id"] for e in all_events(workers, "task_claimed")} == set(requeued)
    row = store.get(orch)
    assert row["status"] == "Complete"
    new_segment = store.get(seg1)["output_location"]
    assert new_segment != old_segment
    assert parse_params(store.get(seg1)["params"])["seed"] == 99
    assert probe_video(output_file(store, db_url, row["output_location"])).frames == 20
    store.close()
