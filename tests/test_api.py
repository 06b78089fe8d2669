"""The HTTP API through a real server process (serve.py, uvicorn) and a real worker, on SQLite and
PostgreSQL: keys, idempotent create, validation, pages, cancel, retry, events, workers, output ranges."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import httpx
import pytest

from source.storage import Storage
from source.store.task_store import TaskStore
from tests.api_server import REPO, ApiServer, make_key
from tests.worker_process import WorkerProcess, wait_until


@pytest.fixture
def server(db_url, tmp_path):
    s = ApiServer(db_url, tmp_path / "serve.log")
    yield s
    s.stop()


def read_events(client: httpx.Client, task_id: str, last_event_id: str | None = None) -> list[dict]:
    """Every SSE event of a task's stream until the server closes it."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    events, current = [], {}
    with client.stream("GET", f"/v1/tasks/{task_id}/events", headers=headers, timeout=60) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if "event" in current:
                    current["at"] = time.monotonic()
                    events.append(current)
                current = {}
            elif not line.startswith(":") and ":" in line:
                field, _, value = line.partition(":")
                current[field] = value.lstrip(" ")
    return events


def test_tasks_through_the_api_with_a_real_worker(db_url, server, tmp_path):
    key_a, key_b = make_key(db_url, "A"), make_key(db_url, "B")
    a, b, anonymous = server.client(key_a), server.client(key_b), server.client()

    assert anonymous.get("/v1/tasks").status_code == 401
    assert server.client("hk_nope.wrong").get("/v1/tasks").status_code == 401
    assert anonymous.get("/health").json()["ok"] is True
    assert "/v1/tasks/{task_id}/events" in anonymous.get("/openapi.json").json()["paths"]

    # Validation is the worker's: the 422 names the field.
    bad = a.post("/v1/tasks", json={"task_type": "noop", "params": {"seconds": -1}})
    assert bad.status_code == 422 and "seconds" in json.dumps(bad.json()), bad.text
    unknown = a.post("/v1/tasks", json={"task_type": "no_such_type", "params": {}})
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["body", "task_type"]

    # Idempotent create: the same key returns the same task; another request under that key is refused.
    first = a.post("/v1/tasks", json={"task_type": "noop", "params": {"seconds": 3}}, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 201, first.text
    again = a.post("/v1/tasks", json={"task_type": "noop", "params": {"seconds": 3}}, headers={"Idempotency-Key": "k1"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    clash = a.post("/v1/tasks", json={"task_type": "noop", "params": {"seconds": 4}}, headers={"Idempotency-Key": "k1"})
    assert clash.status_code == 409
    # The same Idempotency-Key in another project is another task.
    other = b.post("/v1/tasks", json={"task_type": "noop", "params": {"seconds": 3}}, headers={"Idempotency-Key": "k1"})
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    put = a.put("/v1/tasks/client-id-1", json={"task_type": "noop", "params": {"fail": "bad input on purpose"}})
    assert put.status_code == 201 and put.json()["id"] == "client-id-1"
    assert a.put("/v1/tasks/client-id-1", json={"task_type": "noop",
                                                "params": {"fail": "bad input on purpose"}}).status_code == 200

    # A key sees only its project's tasks.
    long_id = first.json()["id"]
    assert b.get(f"/v1/tasks/{long_id}").status_code == 404
    assert b.post(f"/v1/tasks/{long_id}/cancel").status_code == 404
    assert {t["id"] for t in b.get("/v1/tasks").json()["tasks"]} == {other.json()["id"]}
    hidden_parent = b.post("/v1/tasks", json={"task_type": "noop", "params": {}, "depends_on": [long_id]})
    assert hidden_parent.status_code == 422 and hidden_parent.json()["detail"][0]["loc"] == ["body", "depends_on"]

    # Pages: newest first, every task once.
    for i in range(5):
        assert a.post("/v1/tasks", json={"task_type": "noop", "params": {"i": i}}).status_code == 201
    seen, cursor = [], None
    while True:
        page = a.get("/v1/tasks", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [t["id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 7
    assert seen[-1] == long_id and seen[-2] == "client-id-1"
    assert a.get("/v1/tasks", params={"cursor": "garbage"}).status_code == 422

    # Cancel a queued task: it ends at once.
    doomed = a.post("/v1/tasks", json={"task_type": "noop", "params": {"seconds": 60}, "priority": -5}).json()["id"]
    cancelled = a.post(f"/v1/tasks/{doomed}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "Cancelled"

    worker = WorkerProcess(db_url, tmp_path / "logs", "--poll-interval", "0.2", worker_id="W1")
    try:
        events = read_events(a, long_id)
        kinds = [e["event"] for e in events]
        assert kinds[-1] == "end" and json.loads(events[-1]["data"])["status"] == "Complete", kinds
        assert "state" in kinds and "progress" in kinds, kinds
        progress = [e for e in events if e["event"] == "progress"]
        gaps = [later["at"] - earlier["at"] for earlier, later in zip(progress, progress[1:])]
        assert all(gap >= 0.35 for gap in gaps), gaps  # throttled to <= 2 per second (server side: 0.5 s)
        # Resuming from the last event sends only the end again (the client's cue to close).
        assert [e["event"] for e in read_events(a, long_id, events[-1]["id"])] == ["end"]

        done = a.get(f"/v1/tasks/{long_id}").json()
        assert done["attempts"] == 1 and done["progress"] == 1 and done["timings"]["finished_at"]
        assert done["result"]["slept_s"] >= 3 and done["children"] == []

        wait_until(lambda: a.get("/v1/tasks/client-id-1").json()["status"] == "Failed", 30, "the failing task")
        failed = a.get("/v1/tasks/client-id-1").json()
        assert "bad input on purpose" in failed["error"]
        retried = a.post("/v1/tasks/client-id-1/retry")
        assert retried.status_code == 200 and retried.json()["requeued"] == ["client-id-1"]
        assert a.post(f"/v1/tasks/{long_id}/retry").status_code == 409  # Complete: nothing to retry
        wait_until(lambda: a.get("/v1/tasks/client-id-1").json()["status"] == "Failed", 30, "the retried task")

        workers = a.get("/v1/workers").json()["workers"]
        assert [w["id"] for w in workers] == ["W1"] and workers[0]["current_task_id"] is None
    finally:
        worker.stop()

    metrics = anonymous.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert 'headless_tasks{status="Complete"} 7.0' in metrics.text
    assert 'headless_api_requests_total{code="201",method="POST",route="/v1/tasks"} 8.0' in metrics.text
    assert long_id not in metrics.text  # routes are templates: no task ids as label values

    key_id = key_a[len("hk_"):].split(".")[0]
    revoke = subprocess.run([sys.executable, str(REPO / "add_task.py"), "keys", "revoke", key_id, "--db", db_url],
                            capture_output=True, text=True, timeout=60)
    assert revoke.returncode == 0, revoke.stderr
    assert a.get("/v1/tasks").status_code == 401


def test_output_file_with_ranges_and_only_from_the_output_folder(db_url, server, tmp_path):
    key = make_key(db_url, "P")
    client = server.client(key)
    store, storage = TaskStore(db_url), Storage.for_database(db_url, outputs_dir=REPO / "outputs")
    try:
        good = client.post("/v1/tasks", json={"task_type": "noop", "params": {}}).json()["id"]
        evil = client.post("/v1/tasks", json={"task_type": "noop", "params": {"x": 1}}).json()["id"]
        path = storage.output_path(good, ".bin")
        path.write_bytes(bytes(range(256)) * 4)
        for task_id, location in ((good, storage.location_for(path)), (evil, "/etc/passwd")):
            claim = store.claim("T", 30)
            claim = claim if claim.id == task_id else (store.hand_back(claim), store.claim("T", 30))[1]
            assert store.complete(claim, location, None)
        assert client.get(f"/v1/tasks/{good}").json()["output_url"] == f"/v1/tasks/{good}/output"
        whole = client.get(f"/v1/tasks/{good}/output")
        assert whole.status_code == 200 and whole.content == path.read_bytes()
        part = client.get(f"/v1/tasks/{good}/output", headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == bytes(range(10, 20))
        assert client.get(f"/v1/tasks/{evil}/output").status_code == 404  # a path the row names is not served
    finally:
        path.unlink(missing_ok=True)
        store.close()


def test_no_auth_is_refused_off_loopback(sqlite_url):
    out = subprocess.run([sys.executable, str(REPO / "serve.py"), "--db", sqlite_url, "--no-auth", "--host",
                          "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "loopback" in out.stderr


def test_events_resume_from_last_event_id_without_repeats(db_url, server):
    """A client that reconnects with the id of the last event it saw gets only what changed since."""
    client = server.client(make_key(db_url, "R"))
    store = TaskStore(db_url)
    try:
        task_id = client.post("/v1/tasks", json={"task_type": "noop", "params": {}}).json()["id"]
        claim = store.claim("T", 60)
        assert claim.id == task_id and store.heartbeat(claim, 60, 0.25, "a quarter")[0]
        with client.stream("GET", f"/v1/tasks/{task_id}/events") as response:
            first_id, first = None, None
            for line in response.iter_lines():
                if line.startswith("id:"):
                    first_id = line[3:].strip()
                if line.startswith("data:"):
                    first = json.loads(line[5:])
                    break
        assert first["status"] == "In Progress" and first["progress"] == 0.25

        def finish_later() -> None:
            time.sleep(1.5)
            store.heartbeat(claim, 60, 0.75, "three quarters")
            time.sleep(0.8)
            store.complete(claim, None)
        threading.Thread(target=finish_later).start()
        resumed = read_events(client, task_id, first_id)
        assert [e["event"] for e in resumed] == ["progress", "end"], resumed
        assert json.loads(resumed[0]["data"])["progress"] == 0.75
    finally:
        store.close()
