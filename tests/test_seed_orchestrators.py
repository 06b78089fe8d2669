"""Seed-era orchestrators in a migrated database: the seed's SQLite mode left travel orchestrators
In Progress with their stitch Complete. A real worker start migrates the database: a finished travel is
completed with its stitch's output, an unfinished or childless one is failed saying how to resubmit (its
unfinished children too), nothing is generated again, and --exit-when-idle exits promptly. Both backends."""

from __future__ import annotations

import json
import time

import sqlalchemy as sa

from source.store.connection import normalise_db_url
from source.store.task_store import TaskStore
from tests.test_queue_store import SEED_DDL_POSTGRES, SEED_DDL_SQLITE
from tests.worker_process import WorkerProcess


def orchestrator(run_id: str) -> str:
    return json.dumps({"orchestrator_details": {
        "run_id": run_id, "input_image_paths_resolved": ["a.png", "b.png", "c.png"],
        "num_new_segments_to_generate": 2, "segment_frames_expanded": [9, 9], "frame_overlap_expanded": [2],
        "parsed_resolution_wh": "64x64", "model_name": "tiny-vace"}})


def child(orchestrator_id: str | None, run_id: str, index: int | None = None) -> str:
    params = {"orchestrator_run_id": run_id, "full_orchestrator_payload": {"run_id": run_id}}
    if orchestrator_id:
        params["orchestrator_task_id_ref"] = orchestrator_id
    if index is not None:
        params["segment_index"] = index
    return json.dumps(params)


ROWS = [  # id, task_type, params, status, dependant_on, output_location
    # A finished travel: segments and stitch Complete, the orchestrator left In Progress by the seed.
    ("done", "travel_orchestrator", orchestrator("run-done"), "In Progress", None, None),
    ("done-s0", "travel_segment", child("done", "run-done", 0), "Complete", None, "files/run-done_seg00.mp4"),
    ("done-s1", "travel_segment", child("done", "run-done", 1), "Complete", "done-s0", "files/run-done_seg01.mp4"),
    ("done-st", "travel_stitch", child("done", "run-done"), "Complete", "done-s1", "files/run-done_final.mp4"),
    # Finished too, its stitch linked only by the run id (older seed payloads).
    ("byrun", "travel_orchestrator", orchestrator("run-r"), "In Progress", None, None),
    ("byrun-st", "travel_stitch", child(None, "run-r"), "Complete", None, "files/run-r_final.mp4"),
    # Unfinished: the second segment and the stitch still queued.
    ("half", "travel_orchestrator", orchestrator("run-half"), "In Progress", None, None),
    ("half-s0", "travel_segment", child("half", "run-half", 0), "Complete", None, "files/run-half_seg00.mp4"),
    ("half-s1", "travel_segment", child("half", "run-half", 1), "Queued", "half-s0", None),
    ("half-st", "travel_stitch", child("half", "run-half"), "Queued", "half-s1", None),
    # No children at all (the seed died while inserting them).
    ("bare", "travel_orchestrator", orchestrator("run-bare"), "In Progress", None, None),
    # A plain task that is still to run.
    ("plain", "noop", "{}", "Queued", None, None),
]


def make_seed_db(url: str) -> None:
    engine = sa.create_engine(normalise_db_url(url))
    sqlite = url.startswith("sqlite")
    with engine.begin() as conn:
        conn.execute(sa.text(SEED_DDL_SQLITE if sqlite else SEED_DDL_POSTGRES))
        created = "'2025-07-01T10:00:00.000000Z'" if sqlite else "CAST('2025-07-01T10:00:00Z' AS timestamptz)"
        for r in ROWS:
            conn.execute(sa.text("INSERT INTO tasks (id, task_type, params, status, dependant_on, output_location,"
                                 f" created_at, project_id) VALUES (:id, :t, :p, :s, :d, :o, {created}, 'p')"),
                         dict(zip(["id", "t", "p", "s", "d", "o"], r)))
    engine.dispose()


def test_a_worker_start_ends_seed_era_orchestrators_and_exits_when_idle(db_url, tmp_path):
    make_seed_db(db_url)
    started = time.monotonic()
    w = WorkerProcess(db_url, tmp_path / "logs", "--poll-interval", "0.2", "--exit-when-idle",
                      "--output-dir", str(tmp_path / "out"), worker_id="W")
    try:
        assert w.wait(60) == 0, w.stderr_tail()
    finally:
        w.stop()
    assert time.monotonic() - started < 30  # promptly: nothing left to wait on

    store = TaskStore(db_url)
    try:
        done, byrun = store.get("done"), store.get("byrun")
        assert (done["status"], done["output_location"]) == ("Complete", "files/run-done_final.mp4")
        assert (byrun["status"], byrun["output_location"]) == ("Complete", "files/run-r_final.mp4")
        for task_id in ("half", "bare"):
            row = store.get(task_id)
            assert row["status"] == "Failed", row
            assert "seed-era" in row["error_message"] and f"add_task.py retry {task_id}" in row["error_message"]
        for task_id in ("half-s1", "half-st"):  # never run: failed, pointing at the orchestrator
            row = store.get(task_id)
            assert row["status"] == "Failed" and "retry half" in row["error_message"], row
            assert row["attempts"] == 0
        assert store.get("half-s0")["status"] == "Complete" and store.get("plain")["status"] == "Complete"
        claimed = {e["task_id"] for e in w.events("task_claimed")}
        assert claimed == {"plain"}, claimed  # nothing of the seed's travels was generated again

        # Another worker start changes nothing.
        w2 = WorkerProcess(db_url, tmp_path / "logs2", "--poll-interval", "0.2", "--exit-when-idle",
                           "--output-dir", str(tmp_path / "out"), worker_id="W2")
        assert w2.wait(60) == 0, w2.stderr_tail()
        assert not w2.events("task_claimed")
        assert [store.get(r[0])["status"] for r in ROWS] == [
            "Complete", "Complete", "Complete", "Complete", "Complete", "Complete", "Failed", "Complete", "Failed",
            "Failed", "Failed", "Complete"]
        # The advice works: retry re-queues the orchestrator alone (its seed children are not ours to redo).
        assert store.retry("half") == ["half"] and store.get("half")["status"] == "Queued"
    finally:
        store.close()
