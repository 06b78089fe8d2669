"""Seed-era users end to end through real worker processes (headless.py) on SQLite and PostgreSQL, tiny
models, real videos: the seed test generator's travel (3 images, 3 segments: the last continues freely),
the peer's 1-image 1-segment travel, `standard_wgp_task`, keys with no effect reported once (event and
result), and a different-perspective request with an unknown model failing before any child exists.
Plus the one geometry rule: "830x480" and 16 frames give the same recorded adjustment in every handler."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from source.media.video_io import probe_video
from source.store.task_store import TaskStore, parse_params
from source.task_context import child_task_id
from tests.worker_process import REPO, WorkerProcess, all_events

SAMPLES = REPO / "samples"


@pytest.fixture
def images(tmp_path) -> Path:
    d = tmp_path / "inputs"
    shutil.copytree(SAMPLES / "images", d)
    return d


def run_worker(db_url: str, tmp_path: Path, images: Path, tag: str = "w") -> WorkerProcess:
    w = WorkerProcess(db_url, tmp_path / "logs", "--exit-when-idle", "--poll-interval", "0.2", "--input-root",
                      str(images), "--output-dir", str(tmp_path / "outputs"), worker_id=tag)
    try:
        code = w.wait(600)
    finally:
        w.stop()
    assert code == 0, w.stderr_tail()
    return w


def output_file(db_url: str, location: str) -> Path:
    if db_url.startswith("sqlite"):
        return Path(db_url[len("sqlite:///"):]).parent / "public" / location
    return Path(location)


def seed_travel(images: Path, names: list[str], n: int, frames: list[int], overlaps: list[int]) -> dict:
    """The seed's orchestrator payload as its test generator built it (fades included: keys we do not use)."""
    fade = json.dumps({"low_point": 0.0, "high_point": 1.0, "curve_type": "ease_in_out", "duration_factor": 0.0})
    return {"orchestrator_details": {
        "input_image_paths_resolved": [str(images / f"{name}.png") for name in names],
        "num_new_segments_to_generate": n, "base_prompts_expanded": [f"prompt {i}" for i in range(n)],
        "negative_prompts_expanded": [""] * n, "segment_frames_expanded": frames,
        "frame_overlap_expanded": overlaps, "parsed_resolution_wh": "64x64", "model_name": "tiny-vace",
        "seed_base": 5, "steps": 2, "apply_causvid": False, "fps_helpers": 16,
        "fade_in_params_json_str": fade, "fade_out_params_json_str": fade,
    }}


def test_seed_travels_three_images_three_segments_and_one_image(db_url, tmp_path, images, tiny_models):
    store = TaskStore(db_url)
    three = store.add_task("travel_orchestrator", seed_travel(images, ["astronaut", "chelsea", "coffee"], 3,
                                                              [9, 9, 9], [2, 2, 2]))
    one = store.add_task("travel_orchestrator", seed_travel(images, ["rocket"], 1, [16], []))
    w = run_worker(db_url, tmp_path, images)

    row = store.get(three)
    assert row["status"] == "Complete", row["error_message"]
    assert probe_video(output_file(db_url, row["output_location"])).frames == 3 * 9 - 2 * 2
    last = parse_params(store.get(child_task_id(three, "seg-002"))["params"])
    assert last["start_image"].endswith("coffee.png") and last["end_image"] is None  # continues freely
    result = parse_params(row["result"])
    unused = ["orchestrator_details.fade_in_params_json_str", "orchestrator_details.fade_out_params_json_str"]
    assert result["ignored_keys"] == unused
    assert result["adjustments"] == {}  # 9 frames are 4n+1; the third overlap (no join after it) is unused
    logged = [e for e in all_events([w], "params_ignored") if e["task_id"] == three]
    assert [e["ignored_keys"] for e in logged] == [unused]  # once per task, by name

    row = store.get(one)
    assert row["status"] == "Complete", row["error_message"]
    assert probe_video(output_file(db_url, row["output_location"])).frames == 17
    result = parse_params(row["result"])
    assert result["adjustments"] == {"segment_frames_expanded[0]": [16, 17]}
    assert [c["task_type"] for c in store.list_tasks(parent_task_id=one)].count("travel_segment") == 1
    store.close()


def test_standard_wgp_task_and_dp_checked_before_spawning(db_url, tmp_path, images, tiny_models):
    store = TaskStore(db_url)
    plain = store.add_task("standard_wgp_task", {"model": "tiny-t2v", "prompt": "a red square", "frames": 8,
                                                 "resolution": "32x32", "steps": 2, "seed": 3,
                                                 "sliding_window_size": 81, "task_id": "seed-era-id"})
    dp = store.add_task("different_perspective_orchestrator", {
        "input_image_path": str(images / "astronaut.png"), "prompt": "side view", "model_name": "vace_14Bx",
        "t2i_model": "tiny-t2v", "resolution": "64x64"})
    w = run_worker(db_url, tmp_path, images)

    row = store.get(plain)
    assert row["status"] == "Complete", row["error_message"]
    result = parse_params(row["result"])
    assert result["frames"] == 9 and result["adjustments"]["video_length"] == [8, 9]
    assert result["ignored_keys"] == ["sliding_window_size"]
    assert [e["ignored_keys"] for e in all_events([w], "params_ignored") if e["task_id"] == plain] == [
        ["sliding_window_size"]]
    sidecar = json.loads(output_file(db_url, result["sidecar"]).read_text())
    assert sidecar["adjustments"] == result["adjustments"]

    row = store.get(dp)
    assert row["status"] == "Failed" and "vace_14Bx" in row["error_message"], row["error_message"]
    assert store.list_tasks(parent_task_id=dp) == []  # no child was spawned (the seed ran two first)
    claimed = [e["task_id"] for e in all_events([w], "task_claimed")]
    assert sorted(claimed) == sorted([plain, dp])
    store.close()
