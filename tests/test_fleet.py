"""Scheduling for a GPU fleet, through real worker processes on real SQLite and PostgreSQL: model
affinity and its cut-off, pause/resume, prioritize, per-project running limits, idempotent inserts
(also from 10 processes at once) and start_by deadlines."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import sqlalchemy as sa

from source.store.task_store import TaskStore
from tests.worker_process import REPO, WorkerProcess, all_events

FAST = ["--poll-interval", "0.2", "--retry-base-seconds", "0.2"]


def start(db_url, tmp_path, name, *args) -> WorkerProcess:
    return WorkerProcess(db_url, tmp_path / "logs", *FAST, *args, worker_id=name)


def cli(db_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "add_task.py"), "--db", db_url, *args], cwd=str(REPO),
                          capture_output=True, text=True, timeout=120)


def claimed_ids(worker: WorkerProcess) -> list[str]:
    return [e["task_id"] for e in worker.events("task_claimed")]


def test_model_column_from_insert_path_and_direct_sql(store):
    """The catalog resolves aliases and case on both paths; orchestrators and noop count as any model."""
    a = store.add_task("generate", {"model": "VACE_14B"})
    b = store.add_task("i2v", {})  # the task type's default model
    c = store.add_task("travel_orchestrator", {})
    ts = "'2025-01-01T00:00:00.000000Z'" if store.is_sqlite else "now()"
    with store.begin() as conn:
        conn.execute(sa.text("INSERT INTO tasks (id, task_type, params, created_at) VALUES"
                             f" ('d1', 'wgp', '{{\"model_name\": \"vace_14B\"}}', {ts}),"
                             f" ('d2', 'noop', '{{\"model\": \"tiny-t2v\"}}', {ts}),"
                             f" ('d3', 'generate', '{{\"model\": \"my-own-model\"}}', {ts})"))
    models = {t: store.get(t)["model"] for t in (a, b, c, "d1", "d2", "d3")}
    assert models == {a: "wan2.1-vace-14b", b: "wan2.1-i2v-14b-480p", c: None, "d1": "wan2.1-vace-14b",
                      "d2": None, "d3": "my-own-model"}


def test_affinity_prefers_the_held_model_and_the_cutoff_hands_out_the_old_task(db_url, tmp_path):
    store = TaskStore(db_url)
    # Both fail fast with InvalidInput (no generation runs): only the order of claims matters here.
    old = store.add_task("generate", {"model": "tiny-i2v", "prompt": "x"})  # needs an image: fails
    time.sleep(0.05)
    held = store.add_task("generate", {"model": "tiny-t2v", "prompt": "x", "image_start": "a.png"})
    w1 = start(db_url, tmp_path, "w1", "--preload-model", "tiny-t2v", "--max-tasks", "1")
    try:
        assert w1.wait(180) == 0, w1.stderr_tail()
    finally:
        w1.stop()
    assert claimed_ids(w1) == [held], "the held model's task goes before an older one of another model"
    assert [e["model"] for e in w1.events("model_loaded")] == ["tiny-t2v"]
    with store.read() as conn:
        assert conn.execute(sa.text("SELECT model FROM workers WHERE id = 'w1'")).scalar() == "tiny-t2v"
    assert store.get(old)["status"] == "Queued"
    # The old task has now waited past a 1 s cut-off: strict order resumes for it.
    newer = store.add_task("generate", {"model": "tiny-t2v", "prompt": "x", "image_start": "a.png"})
    time.sleep(1.2)
    w2 = start(db_url, tmp_path, "w2", "--preload-model", "tiny-t2v", "--affinity-max-wait", "1", "--max-tasks", "1")
    try:
        assert w2.wait(180) == 0, w2.stderr_tail()
    finally:
        w2.stop()
    assert claimed_ids(w2) == [old]
    assert store.get(newer)["status"] == "Queued"
    store.close()


def test_a_paused_type_is_not_claimed_by_any_of_three_workers_until_resumed(db_url, tmp_path):
    store = TaskStore(db_url)
    assert cli(db_url, "pause", "--type", "noop").returncode == 0
    ids = store.add_tasks([dict(task_type="noop", params={}) for _ in range(6)])
    listing = cli(db_url, "list")
    assert listing.returncode == 0 and "paused: type noop in every project" in listing.stdout
    workers = [start(db_url, tmp_path, f"w{i}", "--exit-when-idle") for i in range(3)]
    try:
        for w in workers:  # each has polled several times
            w.wait_for_event("worker_started", timeout=60)
        time.sleep(1.5)
        assert all_events(workers, "task_claimed") == []
        assert store.count_by_status() == {"Queued": 6}
        assert cli(db_url, "resume", "--type", "noop").returncode == 0
        for w in workers:
            assert w.wait(60) == 0, w.stderr_tail()
    finally:
        for w in workers:
            w.stop()
    assert sorted(e["task_id"] for e in all_events(workers, "task_completed")) == sorted(ids)
    store.close()


def test_pause_by_project_and_prioritize_change_what_runs_next(db_url, tmp_path):
    store = TaskStore(db_url)
    first, second, third = store.add_tasks([dict(task_type="noop", params={}) for _ in range(3)])
    other = store.add_task("noop", {}, project_id="p2", priority=100)
    store.pause(project_id="p2")
    result = cli(db_url, "prioritize", third, "5")
    assert result.returncode == 0, result.stderr
    assert cli(db_url, "prioritize", "no-such-task", "5").returncode == 2
    w = start(db_url, tmp_path, "w", "--max-tasks", "2")
    try:
        assert w.wait(60) == 0, w.stderr_tail()
    finally:
        w.stop()
    assert claimed_ids(w) == [third, first]  # the paused project's higher priority task waits
    assert store.get(other)["status"] == "Queued" and store.get(second)["status"] == "Queued"
    store.close()


def test_a_project_at_its_limit_never_runs_more_than_the_limit(db_url, tmp_path):
    store = TaskStore(db_url)
    assert cli(db_url, "limit", "busy", "2").returncode == 0
    busy = store.add_tasks([dict(task_type="noop", params={"seconds": 0.4}, project_id="busy") for _ in range(8)])
    calm = store.add_tasks([dict(task_type="noop", params={"seconds": 0.1}, project_id="calm") for _ in range(3)])
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(len(store.list_tasks(status="In Progress", project_id="busy")))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    workers = [start(db_url, tmp_path, f"w{i}", "--exit-when-idle") for i in range(3)]
    try:
        for w in workers:
            assert w.wait(120) == 0, w.stderr_tail()
    finally:
        stop.set()
        sampler.join()
        for w in workers:
            w.stop()
    assert store.count_by_status() == {"Complete": len(busy) + len(calm)}
    assert samples and max(samples) <= 2, max(samples)
    assert max(samples) == 2, "the limit is a limit, not a serialisation"
    # while `busy` was at its limit the third worker ran `calm` tasks (they were queued after all of busy's)
    calm_started = min(store.get(t)["generation_started_at"] for t in calm)
    busy_ended = max(store.get(t)["generation_processed_at"] for t in busy)
    assert calm_started < busy_ended
    store.close()


def test_an_idempotency_key_inserted_twice_and_from_10_processes_gives_one_task(db_url, tmp_path):
    store = TaskStore(db_url)
    first = store.add_task("noop", {}, project_id="app", idempotency_key="order-1")
    assert store.add_task("noop", {"other": 1}, project_id="app", idempotency_key="order-1") == first
    assert store.add_task("noop", {}, project_id="other-app", idempotency_key="order-1") != first
    procs = [subprocess.Popen([sys.executable, str(REPO / "add_task.py"), "--db", db_url, "--type", "noop",
                               "--params", "{}", "--project-id", "app", "--idempotency-key", "order-2"],
                              cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(10)]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    printed = {out.strip() for out, _ in outputs}
    assert len(printed) == 1
    with store.read() as conn:
        n = conn.execute(sa.text("SELECT COUNT(*) FROM tasks WHERE idempotency_key = 'order-2'")).scalar()
    assert n == 1
    with pytest.raises(sa.exc.IntegrityError):  # direct SQL gets the unique violation
        with store.begin() as conn:
            conn.execute(sa.text("INSERT INTO tasks (id, task_type, params, project_id, idempotency_key, created_at)"
                                 " VALUES ('dup', 'noop', '{}', 'app', 'order-2', "
                                 + ("'2025-01-01T00:00:00.000000Z'" if store.is_sqlite else "now()") + ")"))
    store.close()


def test_an_expired_task_fails_and_its_dependants_fail_naming_it(db_url, tmp_path):
    store = TaskStore(db_url)
    store.pause(task_type="noop")  # nobody claims it in time
    late = store.add_task("noop", {}, start_within=0.3)
    child = store.add_task("noop", {}, depends_on=[late])
    on_time = store.add_task("noop", {}, start_within=3600)
    time.sleep(0.6)
    store.resume(task_type="noop")
    w = start(db_url, tmp_path, "w", "--exit-when-idle")
    try:
        assert w.wait(60) == 0, w.stderr_tail()
    finally:
        w.stop()
    row = store.get(late)
    assert row["status"] == "Failed" and "expired before it started" in row["error_message"]
    child_row = store.get(child)
    assert child_row["status"] == "Failed" and late in child_row["error_message"]
    assert "expired before it started" in child_row["error_message"]
    assert store.get(on_time)["status"] == "Complete"
    assert late not in claimed_ids(w)
    store.close()


def test_preload_of_an_unknown_model_stops_the_worker_at_start(sqlite_url, tmp_path):
    store = TaskStore(sqlite_url)
    task = store.add_task("noop", {})
    w = start(sqlite_url, tmp_path, "w", "--preload-model", "no-such-model", "--exit-when-idle")
    try:
        assert w.wait(60) == 2
    finally:
        w.stop()
    stopped = w.events("worker_stopped")
    assert stopped and stopped[0]["reason"] == "preload failed" and "no-such-model" in stopped[0]["error"]
    assert store.get(task)["status"] == "Queued"
    store.close()


def test_a_schema_3_database_is_migrated_in_place(db_url):
    """A database from before fleet scheduling (no model/idempotency/start_by columns, no fleet tables,
    no workers.model, schema version 3) gains them when a worker opens it; no row is lost."""
    store = TaskStore(db_url)
    queued = store.add_task("generate", {"model": "vace_14B"})
    store.register_worker("old-worker", "h", 1, "v")
    store.close()
    engine = sa.create_engine(TaskStore(db_url).url)  # a plain engine: no migration on this side
    with engine.begin() as conn:
        if db_url.startswith("sqlite"):
            conn.exec_driver_sql("DROP TRIGGER headless_tasks_model")
        else:
            conn.exec_driver_sql("DROP TRIGGER headless_tasks_model ON tasks")
        for index in ("idx_tasks_ready_model", "idx_tasks_running_project", "idx_tasks_start_by",
                      "idx_tasks_idempotency"):
            conn.exec_driver_sql(f"DROP INDEX {index}")
        for column in ("model", "idempotency_key", "start_by"):
            conn.exec_driver_sql(f"ALTER TABLE tasks DROP COLUMN {column}")
        conn.exec_driver_sql("ALTER TABLE workers DROP COLUMN model")
        for table in ("paused_scopes", "project_limits", "model_names"):
            conn.exec_driver_sql(f"DROP TABLE {table}")
        conn.exec_driver_sql("UPDATE headless_schema SET version = 3")
    engine.dispose()
    store = TaskStore(db_url)
    assert store.get(queued)["status"] == "Queued" and store.get(queued)["model"] is None  # "any" until re-queued
    assert store.add_task("generate", {"model": "vace_14B"}, idempotency_key="k") == store.add_task(
        "generate", {}, idempotency_key="k")
    store.worker_model("old-worker", "wan2.1-vace-14b")
    assert store.claim("w", 30, model="wan2.1-vace-14b").id == queued
    store.close()
